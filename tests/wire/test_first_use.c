/* SPDX-License-Identifier: MIT */
/*
 * test_first_use.c — the first ctx_wire_new of a process makes the
 * process's trace variable (src/common/common.h, ctx__process_var).  A
 * process of its own, so that the first call here is the first call of the
 * process: each of its allocations fails in turn, and every failure is
 * CTX_ENOMEM with nothing left behind, until one succeeds; later registries
 * share the variable that one made.
 */
#include "wire_test.h"

static void test_first_registry_under_failing_allocations(void **state) {
    (void)state;
    ctx_test_alloc_install();
    ctx_wire_t *w = NULL;
    int failures = 0;
    for (long n = 1;; n++) {
        long live = ctx_test_alloc_live_blocks();
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_wire_new(&w);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            break;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_null(w);
        if (failures == 0) /* the variable itself: nothing made */
            assert_int_equal(ctx_test_alloc_live_blocks(), live);
        failures++;
    }
    /* The variable (its allocation), then the registry, at least. */
    assert_true(failures >= 2);
    ctx_var_t *trace = ctx_wire_trace_var(w);
    assert_non_null(trace);
    assert_string_equal(ctx_var_name(trace), "ctx.trace");
    /* A later registry, even one whose own allocation fails, shares it. */
    ctx_wire_t *w2 = NULL;
    ctx_test_alloc_fail_nth(1);
    ASSERT_RC(ctx_wire_new(&w2), CTX_ENOMEM);
    ctx_test_alloc_fail_nth(0);
    ASSERT_RC(ctx_wire_new(&w2), 0);
    assert_ptr_equal(ctx_wire_trace_var(w2), trace);
    ctx_wire_release(w2);
    ctx_wire_release(w);
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_registry_under_failing_allocations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
