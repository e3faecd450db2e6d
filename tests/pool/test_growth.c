/* SPDX-License-Identifier: MIT */
/*
 * test_growth.c — the pool's public structs follow the growth rule
 * (docs/api-rules.md): ctx_pool_options_t, ctx_pool_submit_options_t and
 * ctx_pool_bound_options_t are read with their caller's size, and
 * ctx_pool_stats_t is written no further than its caller's size.
 *
 * For each input struct, as a program built against another version of the
 * header would pass it:
 *   - larger, the unknown tail zero      → accepted, behaves as the defaults;
 *   - larger, the unknown tail non-zero  → CTX_EINVAL, nothing made or run;
 *   - smaller than the 1.0 layout        → CTX_EINVAL;
 *   - size 0 (a `{0}` initialiser)       → CTX_EINVAL.
 * For the stats: a struct cut short after `queued`, allocated exactly that
 * long so that AddressSanitizer catches a write past it; the members it has
 * are filled, its size is kept.
 */
#include "pool_test.h"

/* A caller's struct from a newer header: the 1.0 struct, then a member the
 * library does not know. */
#define NEWER(type)             \
    struct {                    \
        type known;             \
        uint64_t unknown;       \
    }

static int ran_task(void *arg, void **result) {
    atomic_fetch_add((atomic_int *)arg, 1);
    *result = NULL;
    return 0;
}

static void test_pool_options(void **state) {
    (void)state;
    ctx_pool_t *pool = (ctx_pool_t *)&pool;

    NEWER(ctx_pool_options_t) newer;
    memset(&newer, 0, sizeof newer);
    newer.known.size = sizeof newer;
    newer.known.threads = 1;
    newer.unknown = 7;
    ASSERT_RC(ctx_pool_new(&newer.known, &pool), CTX_EINVAL);
    assert_ptr_equal(pool, (ctx_pool_t *)&pool); /* untouched */

    newer.unknown = 0;
    ASSERT_RC(ctx_pool_new(&newer.known, &pool), 0);
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.threads, 1);
    ASSERT_RC(ctx_pool_release(pool), 0);

    ctx_pool_options_t older = CTX_STRUCT_INIT(ctx_pool_options_t);
    older.size = offsetof(ctx_pool_options_t, capture_stack); /* before 1.0's last member */
    pool = NULL;
    ASSERT_RC(ctx_pool_new(&older, &pool), CTX_EINVAL);
    assert_null(pool);

    ctx_pool_options_t zero = {0};
    ASSERT_RC(ctx_pool_new(&zero, &pool), CTX_EINVAL);
    assert_null(pool);
}

static void test_submit_options(void **state) {
    (void)state;
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    atomic_int ran;
    atomic_init(&ran, 0);

    NEWER(ctx_pool_submit_options_t) newer;
    memset(&newer, 0, sizeof newer);
    newer.known.size = sizeof newer;
    newer.unknown = 1;
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, ran_task, &ran, &newer.known, &f), CTX_EINVAL);
    assert_null(f);

    newer.unknown = 0;
    ASSERT_RC(ctx_pool_submit_ex(pool, ran_task, &ran, &newer.known, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_future_result(f, NULL), 0);
    ctx_pool_future_release(f);

    ctx_pool_submit_options_t older = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    older.size = sizeof(size_t);
    f = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, ran_task, &ran, &older, &f), CTX_EINVAL);
    ctx_pool_submit_options_t zero = {0};
    ASSERT_RC(ctx_pool_submit_ex(pool, ran_task, &ran, &zero, &f), CTX_EINVAL);
    assert_null(f);

    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(atomic_load(&ran), 1); /* only the accepted one */
}

static void *bound_fn(void *arg, void *call_arg) {
    (void)call_arg;
    return arg;
}

static void test_bound_options(void **state) {
    (void)state;
    NEWER(ctx_pool_bound_options_t) newer;
    memset(&newer, 0, sizeof newer);
    newer.known.size = sizeof newer;
    newer.unknown = 3;
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(bound_fn, &newer, &newer.known, &b), CTX_EINVAL);
    assert_null(b);

    newer.unknown = 0;
    ASSERT_RC(ctx_pool_bound_new(bound_fn, &newer, &newer.known, &b), 0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_bound_call(b, NULL, &r), 0);
    assert_ptr_equal(r, &newer);
    ctx_pool_bound_release(b);

    ctx_pool_bound_options_t older = CTX_STRUCT_INIT(ctx_pool_bound_options_t);
    older.size = offsetof(ctx_pool_bound_options_t, arg_release);
    b = NULL;
    ASSERT_RC(ctx_pool_bound_new(bound_fn, NULL, &older, &b), CTX_EINVAL);
    ctx_pool_bound_options_t zero = {0};
    ASSERT_RC(ctx_pool_bound_new(bound_fn, NULL, &zero, &b), CTX_EINVAL);
    assert_null(b);
}

static void test_stats_smaller(void **state) {
    (void)state;
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 3;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);

    /* An older caller's stats, ending after `queued`: exactly that long on
     * the heap, so a write past it is an ASan error. */
    size_t cut = offsetof(ctx_pool_stats_t, queued) + sizeof(size_t);
    unsigned char *buf = malloc(cut);
    assert_non_null(buf);
    memset(buf, 0xAB, cut);
    memcpy(buf, &cut, sizeof cut);
    ASSERT_RC(ctx_pool_stats(pool, (ctx_pool_stats_t *)buf), 0);
    size_t size, threads, queued;
    memcpy(&size, buf, sizeof size);
    memcpy(&threads, buf + offsetof(ctx_pool_stats_t, threads), sizeof threads);
    memcpy(&queued, buf + offsetof(ctx_pool_stats_t, queued), sizeof queued);
    assert_int_equal(size, cut); /* the caller's size is kept */
    assert_int_equal(threads, 3);
    assert_int_equal(queued, 0);
    free(buf);

    /* Too small to hold even its size. */
    unsigned char tiny[sizeof(size_t)] = {0};
    ASSERT_RC(ctx_pool_stats(pool, (ctx_pool_stats_t *)tiny), CTX_EINVAL);

    /* A newer caller's, larger: the library writes what it knows and leaves
     * the rest alone. */
    NEWER(ctx_pool_stats_t) newer;
    memset(&newer, 0, sizeof newer);
    newer.known.size = sizeof newer;
    newer.unknown = 0x5555;
    ASSERT_RC(ctx_pool_stats(pool, &newer.known), 0);
    assert_int_equal(newer.known.size, sizeof newer);
    assert_int_equal(newer.known.threads, 3);
    assert_int_equal(newer.unknown, 0x5555);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pool_options, pool_teardown),
        cmocka_unit_test_teardown(test_submit_options, pool_teardown),
        cmocka_unit_test_teardown(test_bound_options, pool_teardown),
        cmocka_unit_test_teardown(test_stats_smaller, pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
