/* SPDX-License-Identifier: MIT */
/*
 * test_timeout.c — grpc-timeout: every unit, the 8-digit bound, what is
 * not the grammar, saturation, formatting in the finest unit that fits,
 * rounding down, and round trips.
 */
#include "wire_test.h"

static int parse(const char *text, int64_t *ns) { return ctx_wire_timeout_parse(text, strlen(text), ns); }

static void test_units(void **state) {
    (void)state;
    int64_t ns;
    ASSERT_RC(parse("1H", &ns), 0);
    assert_true(ns == 3600ll * 1000000000);
    ASSERT_RC(parse("2M", &ns), 0);
    assert_true(ns == 120ll * 1000000000);
    ASSERT_RC(parse("3S", &ns), 0);
    assert_true(ns == 3000000000ll);
    ASSERT_RC(parse("4m", &ns), 0);
    assert_true(ns == 4000000);
    ASSERT_RC(parse("5u", &ns), 0);
    assert_true(ns == 5000);
    ASSERT_RC(parse("6n", &ns), 0);
    assert_true(ns == 6);
    ASSERT_RC(parse("99999999S", &ns), 0);
    assert_true(ns == 99999999ll * 1000000000);
    ASSERT_RC(parse("00000001m", &ns), 0);
    assert_true(ns == 1000000);
    ASSERT_RC(parse("0n", &ns), 0); /* what grpc-go sends when expired */
    assert_true(ns == 0);
    ASSERT_RC(parse(" 7m\t", &ns), 0);
    assert_true(ns == 7000000);
}

static void test_invalid(void **state) {
    (void)state;
    static const char *bad[] = {"", "S", "1", "123456789S", "1s", "1h", "1x", "-1S", "+1S", "1 S",
                                "1.5S", "1SS", "S1", "0x1S", "１S", "1\0S"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ns = -42;
        if (parse(bad[i], &ns) != CTX_EPARSE)
            fail_msg("'%s' should not parse", bad[i]);
        assert_true(ns == -42);
    }
    int64_t ns;
    ASSERT_RC(ctx_wire_timeout_parse(S("1\0S"), &ns), CTX_EPARSE);
    ASSERT_RC(ctx_wire_timeout_parse(NULL, 2, &ns), CTX_EINVAL);
    ASSERT_RC(ctx_wire_timeout_parse(S("1S"), NULL), CTX_EINVAL);
}

static void test_saturation(void **state) {
    (void)state;
    int64_t ns;
    ASSERT_RC(parse("99999999H", &ns), 0);
    assert_true(ns == INT64_MAX);
    ASSERT_RC(parse("99999999M", &ns), 0);
    assert_true(ns == 99999999ll * 60 * 1000000000);
    ASSERT_RC(parse("2562048H", &ns), 0); /* just past INT64_MAX ns */
    assert_true(ns == INT64_MAX);
}

static void check_format(int64_t ns, const char *want) {
    char buf[16];
    int n = ctx_wire_timeout_format(ns, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(want));
    if (strcmp(buf, want) != 0)
        fail_msg("%lld formatted as %s, expected %s", (long long)ns, buf, want);
}

static void test_format(void **state) {
    (void)state;
    check_format(0, "0n");
    check_format(-5, "0n");
    check_format(INT64_MIN, "0n");
    check_format(1, "1n");
    check_format(99999999, "99999999n");
    check_format(100000000, "100000u");
    check_format(100000999, "100000u"); /* rounded down */
    check_format(1500000000, "1500000u");
    check_format(99999999999ll, "99999999u");
    check_format(100000000000ll, "100000m");
    check_format(99999999ll * 1000000, "99999999m");
    check_format(99999999ll * 1000000000, "99999999S");
    check_format(100000000ll * 1000000000, "1666666M");
    check_format(INT64_MAX, "2562047H");
    char buf[16];
    ASSERT_RC(ctx_wire_timeout_format(1, buf, 2), CTX_ETRUNCATED);
    ASSERT_RC(ctx_wire_timeout_format(1, buf, 3), 2);
    ASSERT_RC(ctx_wire_timeout_format(1, NULL, 3), CTX_EINVAL);
}

static void test_round_trip_never_grows(void **state) {
    (void)state;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, ctx_test_seed(77));
    for (int i = 0; i < SCALED(100000, 5000, 20000); i++) {
        int64_t ns = (int64_t)(ctx_test_rng_next(&rng) >> (ctx_test_rng_below(&rng, 63) + 1));
        char buf[16];
        int n = ctx_wire_timeout_format(ns, buf, sizeof buf);
        assert_true(n >= 2 && n <= CTX_WIRE_TIMEOUT_MAX_LEN);
        int64_t back;
        ASSERT_RC(ctx_wire_timeout_parse(buf, (size_t)n, &back), 0);
        assert_true(back <= ns);
        /* lost less than one unit; a unit is chosen when the value needs
         * more than 8 digits in the next finer one (units step by 1000 or
         * 60), so it is at most 1/10^5 of the value */
        assert_true(ns - back <= ns / 100000 + 1);
    }
}

static void test_now(void **state) {
    (void)state;
    int64_t a = ctx_wire_now_ns(), b = ctx_wire_now_ns();
    assert_true(a > 0 && b >= a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),  cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_saturation), cmocka_unit_test(test_format),
        cmocka_unit_test(test_round_trip_never_grows), cmocka_unit_test(test_now),
    };
    return cmocka_run_group_tests_name("wire_timeout", tests, NULL, NULL);
}
