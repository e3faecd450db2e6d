/* SPDX-License-Identifier: MIT */
/*
 * test_debug.c — CTX_DEBUG (src/common/debug.h) for the pool's futures and
 * bound callables: a double release, or a use after release, aborts at once
 * with a line naming the call and the object.
 *
 * Death tests, as in tests/core/test_debug.c: the object is made in this
 * process, a forked child misuses it with its stderr on a pipe, and the
 * parent asserts that the child died of SIGABRT printing exactly the
 * expected line (the object's address is the same on both sides of fork).
 * A future is misused once nothing but the test holds it (its pool released
 * first, so the queue's reference is gone).  Without CTX_DEBUG the tests are
 * skipped: misuse is then undefined behaviour, as pool.h says.
 */
#include "pool_test.h"
#include "../support/death.h"

static char want[256];

/* A future that has ended and that only the caller holds. */
static ctx_pool_future_t *lone_future(void) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = 1;
    ASSERT_RC(ctx_pool_new(&o, &pool), 0);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_nop, NULL, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_release(pool), 0); /* the workers dropped the queue's reference */
    return f;
}

static void future_release_twice(void *f) {
    ctx_pool_future_release(f);
    ctx_pool_future_release(f);
}

static void future_wait_after_release(void *f) {
    ctx_pool_future_release(f);
    (void)ctx_pool_future_wait(f, 0);
}

static void future_callback(ctx_pool_future_t *f, void *user) {
    (void)f;
    (void)user;
}

static void future_callback_after_release(void *f) {
    ctx_pool_future_release(f);
    (void)ctx_pool_future_add_done_callback(f, future_callback, NULL);
}

static void test_future_double_release(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_pool_future_t *f = lone_future();
    snprintf(want, sizeof want, "ctxvar: ctx_pool_future_release: future %p already released",
             (void *)f);
    expect_abort(future_release_twice, f, want);
    ctx_pool_future_release(f);
}

static void test_future_use_after_release(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_pool_future_t *f = lone_future();
    snprintf(want, sizeof want, "ctxvar: ctx_pool_future_wait: future %p already released",
             (void *)f);
    expect_abort(future_wait_after_release, f, want);
    snprintf(want, sizeof want,
             "ctxvar: ctx_pool_future_add_done_callback: future %p already released", (void *)f);
    expect_abort(future_callback_after_release, f, want);
    ctx_pool_future_release(f);
}

static void *bound_fn(void *arg, void *call_arg) {
    (void)call_arg;
    return arg;
}

static void bound_release_twice(void *b) {
    ctx_pool_bound_release(b);
    ctx_pool_bound_release(b);
}

static void bound_call_after_release(void *b) {
    ctx_pool_bound_release(b);
    (void)ctx_pool_bound_call(b, NULL, NULL);
}

static void test_bound_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(bound_fn, NULL, NULL, &b), 0);
    snprintf(want, sizeof want,
             "ctxvar: ctx_pool_bound_release: bound callable %p already released", (void *)b);
    expect_abort(bound_release_twice, b, want);
    snprintf(want, sizeof want,
             "ctxvar: ctx_pool_bound_call: bound callable %p already released", (void *)b);
    expect_abort(bound_call_after_release, b, want);
    ctx_pool_bound_release(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_future_double_release, pool_teardown),
        cmocka_unit_test_teardown(test_future_use_after_release, pool_teardown),
        cmocka_unit_test_teardown(test_bound_misuse, pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
