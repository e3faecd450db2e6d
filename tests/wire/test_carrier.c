/* SPDX-License-Identifier: MIT */
/*
 * test_carrier.c — the carrier helpers and the header list: case-insensitive
 * names, order, set replacing every spelling, the limits, bad names and
 * values, a carrier with only `iterate`, and the failing allocator on every
 * call (a failed call leaves the list unchanged).
 */
#include "wire_test.h"

static void test_name_equal(void **state) {
    (void)state;
    assert_true(ctx_wire_name_equal(S("traceparent"), S("TraceParent")));
    assert_true(ctx_wire_name_equal(S("grpc-timeout"), S("GRPC-TIMEOUT")));
    assert_true(ctx_wire_name_equal(NULL, 0, NULL, 0));
    assert_false(ctx_wire_name_equal(S("baggage"), S("baggages")));
    assert_false(ctx_wire_name_equal(S("a-b"), S("a_b")));
    assert_false(ctx_wire_name_equal(S("\xe9"), S("\xc9"))); /* ASCII only */
}

static void test_list_basics(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    assert_int_equal(ctx_wire_headers_count(h), 0);
    add_header(h, "Content-Type", "text/plain");
    add_header(h, "Baggage", "a=1");
    add_header(h, "baggage", "b=2");
    assert_int_equal(ctx_wire_headers_count(h), 3);
    assert_string_equal(header(h, "BAGGAGE"), "a=1");
    assert_string_equal(header(h, "content-type"), "text/plain");
    assert_null(header(h, "traceparent"));
    const char *n, *v;
    ASSERT_RC(ctx_wire_headers_at(h, 2, &n, &v), 0);
    assert_string_equal(n, "baggage");
    assert_string_equal(v, "b=2");
    ASSERT_RC(ctx_wire_headers_at(h, 3, &n, &v), CTX_ENOTFOUND);
    /* set replaces every spelling and appends */
    ASSERT_RC(ctx_wire_headers_set_n(h, "baggage", strlen("baggage"), S("c=3")), 0);
    assert_int_equal(ctx_wire_headers_count(h), 2);
    assert_string_equal(header(h, "Baggage"), "c=3");
    ASSERT_RC(ctx_wire_headers_at(h, 0, &n, &v), 0);
    assert_string_equal(n, "Content-Type");
    /* empty values are values */
    ASSERT_RC(ctx_wire_headers_set_n(h, "x-empty", strlen("x-empty"), "", 0), 0);
    assert_string_equal(header(h, "X-Empty"), "");
    ctx_wire_headers_clear(h);
    assert_int_equal(ctx_wire_headers_count(h), 0);
    ctx_wire_headers_release(h);
    ctx_wire_headers_release(NULL);
    assert_int_equal(ctx_wire_headers_count(NULL), 0);
}

static void test_list_rejects(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    ASSERT_RC(ctx_wire_headers_add_n(h, S("bad name"), S("v")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(h, S(""), S("v")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(h, S("name:"), S("v")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(h, S("n"), S("a\r\nInjected: 1")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(h, S("n"), S("a\0b")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(h, S("n"), NULL, 1), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_set_n(h, "n", strlen("n"), S("a\nb")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(NULL, S("n"), S("v")), CTX_EINVAL);
    assert_int_equal(ctx_wire_headers_count(h), 0);
    ctx_wire_headers_release(h);
}

static void test_list_limits(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    for (int i = 0; i < CTX_WIRE_HEADERS_MAX_PAIRS; i++)
        add_header(h, "x", "v");
    ASSERT_RC(ctx_wire_headers_add_n(h, S("x"), S("v")), CTX_ELIMIT);
    /* set of a name that removes pairs makes room */
    ASSERT_RC(ctx_wire_headers_set_n(h, "x", strlen("x"), S("only")), 0);
    assert_int_equal(ctx_wire_headers_count(h), 1);
    ctx_wire_headers_clear(h);
    static char big[CTX_WIRE_HEADERS_MAX_BYTES];
    memset(big, 'v', sizeof big);
    ASSERT_RC(ctx_wire_headers_add_n(h, S("b"), big, sizeof big - 1), 0);
    ASSERT_RC(ctx_wire_headers_add_n(h, S("c"), S("")), CTX_ELIMIT);
    ASSERT_RC(ctx_wire_headers_set_n(h, "b", strlen("b"), big, sizeof big - 1), 0);
    ASSERT_RC(ctx_wire_headers_set_n(h, "b", strlen("b"), big, sizeof big), CTX_ELIMIT);
    assert_int_equal(ctx_wire_headers_count(h), 1);
    ctx_wire_headers_release(h);
}

/* A carrier with only iterate (and set) over a list. */
static int only_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    ctx_wire_carrier_t inner = ctx_wire_headers_carrier(self);
    return inner.iterate(inner.self, fn, user);
}

static void test_carrier_get(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    add_header(h, "A", "1");
    add_header(h, "b", "2");
    add_header(h, "B", "3");
    ctx_wire_carrier_t c = {sizeof(ctx_wire_carrier_t), only_iterate, NULL, NULL, h};
    const char *v;
    size_t n;
    ASSERT_RC(ctx_wire_carrier_get(&c, "b", &v, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(v, "2", 1);
    ASSERT_RC(ctx_wire_carrier_get(&c, "z", &v, &n), CTX_ENOTFOUND);
    ctx_wire_carrier_t full = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_carrier_get(&full, "a", &v, &n), 0);
    assert_string_equal(v, "1");
    ctx_wire_carrier_t none = {sizeof(ctx_wire_carrier_t), NULL, NULL, NULL, h};
    ASSERT_RC(ctx_wire_carrier_get(&none, "a", &v, &n), CTX_EINVAL);
    ASSERT_RC(ctx_wire_carrier_get(NULL, "a", &v, &n), CTX_EINVAL);
    ctx_wire_headers_release(h);
}

/* Carriers that misbehave: get / iterate returning a positive value, or a
 * negative code of their own. */
static int positive_get(void *self, const char *name, const char **value, size_t *value_len) {
    (void)self, (void)name, (void)value, (void)value_len;
    return 1;
}

static int failing_get(void *self, const char *name, const char **value, size_t *value_len) {
    (void)self, (void)name, (void)value, (void)value_len;
    return CTX_ESYSTEM;
}

static int positive_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    (void)self, (void)fn, (void)user;
    return 3; /* without calling fn: nothing was found */
}

static int failing_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    (void)self, (void)fn, (void)user;
    return CTX_ESYSTEM;
}

static void test_carrier_get_callback_results(void **state) {
    (void)state;
    const char *v = "untouched";
    size_t n = 99;
    ctx_wire_carrier_t pg = {sizeof(ctx_wire_carrier_t), NULL, positive_get, NULL, NULL};
    ASSERT_RC(ctx_wire_carrier_get(&pg, "a", &v, &n), CTX_ECALLBACK);
    ctx_wire_carrier_t fg = {sizeof(ctx_wire_carrier_t), NULL, failing_get, NULL, NULL};
    ASSERT_RC(ctx_wire_carrier_get(&fg, "a", &v, &n), CTX_ESYSTEM);
    ctx_wire_carrier_t pi = {sizeof(ctx_wire_carrier_t), positive_iterate, NULL, NULL, NULL};
    ASSERT_RC(ctx_wire_carrier_get(&pi, "a", &v, &n), CTX_ECALLBACK);
    ctx_wire_carrier_t fi = {sizeof(ctx_wire_carrier_t), failing_iterate, NULL, NULL, NULL};
    ASSERT_RC(ctx_wire_carrier_get(&fi, "a", &v, &n), CTX_ESYSTEM);
    assert_string_equal(v, "untouched");
    assert_int_equal(n, 99);
    /* the search through iterate still finds the first of several */
    ctx_wire_headers_t *h = headers();
    add_header(h, "X", "1");
    add_header(h, "x", "2");
    ctx_wire_carrier_t it = {sizeof(ctx_wire_carrier_t), only_iterate, NULL, NULL, h};
    ASSERT_RC(ctx_wire_carrier_get(&it, "x", &v, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(v, "1", 1);
    ctx_wire_headers_release(h);
}

static void test_alloc_failures(void **state) {
    (void)state;
    ctx_test_alloc_install();
    for (long nth = 1; nth < 40; nth++) {
        ctx_wire_headers_t *h = NULL;
        ctx_test_alloc_fail_nth(nth);
        int rc = ctx_wire_headers_new(&h);
        if (rc != 0) {
            ASSERT_RC(rc, CTX_ENOMEM);
            continue;
        }
        size_t expect = 0;
        for (int i = 0; i < 12; i++) {
            char name[8];
            snprintf(name, sizeof name, "h%d", i % 5);
            size_t before = ctx_wire_headers_count(h);
            rc = (i % 3 == 2) ? ctx_wire_headers_set_n(h, name, strlen(name), S("s"))
                              : ctx_wire_headers_add_n(h, name, strlen(name), S("a"));
            if (rc != 0) {
                ASSERT_RC(rc, CTX_ENOMEM);
                assert_int_equal(ctx_wire_headers_count(h), before);
            } else {
                expect = ctx_wire_headers_count(h);
            }
        }
        assert_int_equal(ctx_wire_headers_count(h), expect);
        ctx_wire_headers_release(h);
        assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    }
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_equal),   cmocka_unit_test(test_list_basics),
        cmocka_unit_test(test_list_rejects), cmocka_unit_test(test_list_limits),
        cmocka_unit_test(test_carrier_get),  cmocka_unit_test(test_carrier_get_callback_results),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests_name("wire_carrier", tests, NULL, NULL);
}
