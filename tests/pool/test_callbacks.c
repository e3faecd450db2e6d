/* SPDX-License-Identifier: MIT */
/*
 * test_callbacks.c — no user callback runs under a pool lock (docs/api-rules.md), one test per path a callback can run on:
 *
 *   task function                      on a worker
 *   arg_release                        on the worker, after the task
 *   arg_release                        on a thread that cancels a queued task
 *   arg_release                        on a thread shutting down with CANCEL
 *   done-callback                      on the worker that ends the future
 *   done-callback                      on a thread that cancels the future
 *   result_release                     on the thread dropping the last reference
 *   a value's release (light task)     on a thread shutting down with CANCEL
 *
 * Each callback, while it runs, (1) calls back into the same pool and
 * future (stats, a submit, the future's result, another done-callback) and
 * records whether those calls did what they should, and (2) stays blocked
 * at a gate until the test thread has *probed* the pool: stats, a submit
 * with a future that stays queued (both workers are busy), a cancel of
 * that future and a wait for it — between them every lock the pool has (the
 * producers' and the consumers' queue locks, the idle lock, a future's wait
 * stripe).  If any of those locks were held around the callback, the probe
 * would block behind the gate forever and ctest's timeout would fail the
 * test; the assertions check that every call did its job.
 */
#include "pool_test.h"

typedef struct scene {
    ctx_pool_t *pool;
    gate_t hold;          /* keeps the callback (and the other worker) busy */
    atomic_int entered;   /* the callback is running */
    atomic_int reentry_ok; /* its calls back into the pool did their job */
    int expect_shutdown;  /* calls back see a pool that is shutting down */
    ctx_pool_future_t *own; /* the future the callback belongs to, if any */
} scene_t;

static scene_t scene;

static void scene_init(void) {
    memset(&scene, 0, sizeof scene);
    gate_init(&scene.hold);
    atomic_init(&scene.entered, 0);
    atomic_init(&scene.reentry_ok, 0);
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = 2;
    ASSERT_RC(ctx_pool_new(&o, &scene.pool), 0);
}

static void scene_end(void) {
    gate_open(&scene.hold);
    ASSERT_RC(ctx_pool_release(scene.pool), 0);
    gate_destroy(&scene.hold);
    assert_int_equal(off_main_failures(), 0);
}

/* What every callback does: calls back into the pool, then waits at the
 * gate until the test thread has probed. */
static void callback_body(void) {
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    int ok = ctx_pool_stats(scene.pool, &st) == 0 && st.threads == 2;
    int rc = ctx_pool_submit(scene.pool, task_nop, NULL, NULL);
    ok = ok && rc == (scene.expect_shutdown ? CTX_ESHUTDOWN : 0);
    atomic_store(&scene.reentry_ok, ok);
    atomic_store(&scene.entered, 1);
    gate_pass(&scene.hold);
}

static void await_entered(void) {
    while (!atomic_load(&scene.entered))
        short_nap();
}

/* The test thread's probe: every lock of the pool, while a callback is
 * held.  `shutting_down`: submits are refused by now. */
static void probe(int shutting_down) {
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(scene.pool, &st), 0);
    assert_int_equal(st.threads, 2);
    ctx_pool_future_t *f = NULL;
    if (shutting_down) {
        ASSERT_RC(ctx_pool_submit(scene.pool, task_nop, NULL, &f), CTX_ESHUTDOWN);
        return;
    }
    ASSERT_RC(ctx_pool_submit(scene.pool, task_nop, NULL, &f), 0);
    /* Both workers are busy (one in the callback or held, one held): it
     * stays queued. */
    assert_int_equal(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_DONE);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_CANCELLED);
    ctx_pool_future_release(f);
}

/* Keeps the other worker busy until the scene ends. */
static void hold_other_worker(void) {
    ASSERT_RC(ctx_pool_submit(scene.pool, task_gate, &scene.hold, NULL), 0);
}

static void *run_on_helper(void *fn) {
    ((void (*)(void))fn)();
    return NULL;
}

static pthread_t helper(void (*fn)(void)) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_on_helper, (void *)fn), 0);
    return t;
}

/* ---- the task function ---- */

static int slow_task(void *arg, void **result) {
    (void)arg;
    *result = NULL;
    callback_body();
    return 0;
}

static void test_task_function(void **state) {
    (void)state;
    scene_init();
    hold_other_worker();
    ASSERT_RC(ctx_pool_submit(scene.pool, slow_task, NULL, NULL), 0);
    await_entered();
    probe(0);
    assert_true(atomic_load(&scene.reentry_ok));
    scene_end();
}

/* ---- arg_release on the worker ---- */

static void slow_arg_release(void *arg) {
    (void)arg;
    callback_body();
}

static void test_arg_release_on_worker(void **state) {
    (void)state;
    scene_init();
    hold_other_worker();
    ctx_pool_submit_options_t o = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    o.arg_release = slow_arg_release;
    ASSERT_RC(ctx_pool_submit_ex(scene.pool, task_nop, NULL, &o, NULL), 0);
    await_entered();
    probe(0);
    assert_true(atomic_load(&scene.reentry_ok));
    scene_end();
}

/* ---- arg_release on a cancelling thread ---- */

static ctx_pool_future_t *to_cancel;

static void cancel_it(void) {
    OFF_MAIN_CHECK(ctx_pool_future_cancel(to_cancel) == CTX_POOL_CANCEL_DONE);
}

static void test_arg_release_on_cancel(void **state) {
    (void)state;
    scene_init();
    hold_other_worker();
    hold_other_worker(); /* both workers held: what follows stays queued */
    ctx_pool_submit_options_t o = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    o.arg_release = slow_arg_release;
    ASSERT_RC(ctx_pool_submit_ex(scene.pool, task_nop, NULL, &o, &to_cancel), 0);
    pthread_t t = helper(cancel_it);
    await_entered();
    probe(0);
    assert_true(atomic_load(&scene.reentry_ok));
    gate_open(&scene.hold);
    pthread_join(t, NULL);
    assert_int_equal(ctx_pool_future_state(to_cancel), CTX_POOL_FUTURE_CANCELLED);
    ctx_pool_future_release(to_cancel);
    scene_end();
}

/* ---- arg_release during a CANCEL shutdown ---- */

static void shut_down_cancelling(void) {
    OFF_MAIN_CHECK(ctx_pool_shutdown(scene.pool, CTX_POOL_SHUTDOWN_CANCEL) == 0);
}

static void test_arg_release_on_shutdown(void **state) {
    (void)state;
    scene_init();
    scene.expect_shutdown = 1;
    hold_other_worker();
    hold_other_worker();
    ctx_pool_submit_options_t o = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    o.arg_release = slow_arg_release;
    ASSERT_RC(ctx_pool_submit_ex(scene.pool, task_nop, NULL, &o, NULL), 0);
    pthread_t t = helper(shut_down_cancelling);
    await_entered();
    probe(1);
    assert_true(atomic_load(&scene.reentry_ok));
    gate_open(&scene.hold);
    pthread_join(t, NULL);
    scene_end();
}

/* ---- done-callbacks ---- */

static atomic_int nested_ran;

static void nested_callback(ctx_pool_future_t *f, void *user) {
    (void)f;
    (void)user;
    atomic_store(&nested_ran, 1);
}

static void slow_done_callback(ctx_pool_future_t *f, void *user) {
    (void)user;
    /* Back into the same future: it has ended; a callback added now runs
     * at once, here. */
    OFF_MAIN_CHECK(ctx_pool_future_done(f));
    OFF_MAIN_CHECK(ctx_pool_future_result(f, NULL) == 0 ||
                   ctx_pool_future_result(f, NULL) == CTX_ECANCELLED);
    OFF_MAIN_CHECK(ctx_pool_future_add_done_callback(f, nested_callback, NULL) == 0);
    OFF_MAIN_CHECK(atomic_load(&nested_ran));
    callback_body();
}

static void test_done_callback_on_worker(void **state) {
    (void)state;
    scene_init();
    atomic_store(&nested_ran, 0);
    hold_other_worker(); /* one worker held; the other runs f */
    ctx_pool_future_t *f = NULL;
    gate_t start;
    gate_init(&start);
    ASSERT_RC(ctx_pool_submit(scene.pool, task_gate, &start, &f), 0);
    ASSERT_RC(ctx_pool_future_add_done_callback(f, slow_done_callback, NULL), 0);
    gate_open(&start); /* f ends on the worker, which runs the callback */
    await_entered();
    probe(0);
    assert_true(atomic_load(&scene.reentry_ok));
    assert_true(atomic_load(&nested_ran));
    ctx_pool_future_release(f);
    scene_end();
    gate_destroy(&start);
}

static void test_done_callback_on_cancel(void **state) {
    (void)state;
    scene_init();
    atomic_store(&nested_ran, 0);
    hold_other_worker();
    hold_other_worker();
    ASSERT_RC(ctx_pool_submit(scene.pool, task_nop, NULL, &to_cancel), 0);
    ASSERT_RC(ctx_pool_future_add_done_callback(to_cancel, slow_done_callback, NULL), 0);
    pthread_t t = helper(cancel_it);
    await_entered();
    probe(0);
    assert_true(atomic_load(&scene.reentry_ok));
    assert_true(atomic_load(&nested_ran));
    gate_open(&scene.hold);
    pthread_join(t, NULL);
    ctx_pool_future_release(to_cancel);
    scene_end();
}

/* ---- result_release ---- */

static int result_task(void *arg, void **result) {
    *result = arg;
    return 0;
}

static void slow_result_release(void *result) {
    OFF_MAIN_CHECK(result == &scene);
    callback_body();
}

static ctx_pool_future_t *to_drop;

static void drop_it(void) { ctx_pool_future_release(to_drop); }

static void test_result_release(void **state) {
    (void)state;
    scene_init();
    ctx_pool_submit_options_t o = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    o.result_release = slow_result_release;
    ASSERT_RC(ctx_pool_submit_ex(scene.pool, result_task, &scene, &o, &to_drop), 0);
    ASSERT_RC(ctx_pool_future_wait(to_drop, CTX_WAIT_FOREVER), 0);
    hold_other_worker();
    hold_other_worker(); /* both workers held for the probe */
    pthread_t t = helper(drop_it); /* the last reference: result_release runs there */
    await_entered();
    probe(0);
    assert_true(atomic_load(&scene.reentry_ok));
    gate_open(&scene.hold);
    pthread_join(t, NULL);
    scene_end();
}

/* ---- a value's release, for a light task cancelled at shutdown ---- */

static void slow_value_release(void *value, void *user) {
    (void)value;
    (void)user;
    callback_body();
}

static void test_value_release_on_shutdown(void **state) {
    (void)state;
    scene_init();
    scene.expect_shutdown = 1;
    ctx_value_ops_t ops = CTX_STRUCT_INIT(ctx_value_ops_t);
    ops.release = slow_value_release;
    ctx_var_options_t vo = CTX_STRUCT_INIT(ctx_var_options_t);
    vo.ops = &ops;
    ctx_var_t *var = NULL;
    ASSERT_RC(ctx_var_new("value", &vo, &var), 0);
    /* A context of its own, whose only other holder is the queued task. */
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &scene), 0);
    hold_other_worker();
    hold_other_worker();
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ASSERT_RC(ctx_pool_submit(scene.pool, task_nop, NULL, NULL), 0); /* light: holds the map */
    ASSERT_RC(ctx_context_exit(ctx), 0);
    ctx_context_release(ctx); /* now the queued task holds the value alone */
    pthread_t t = helper(shut_down_cancelling); /* drops the task's map there */
    await_entered();
    probe(1);
    assert_true(atomic_load(&scene.reentry_ok));
    gate_open(&scene.hold);
    pthread_join(t, NULL);
    scene_end();
    ctx_var_release(var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_task_function, pool_teardown),
        cmocka_unit_test_teardown(test_arg_release_on_worker, pool_teardown),
        cmocka_unit_test_teardown(test_arg_release_on_cancel, pool_teardown),
        cmocka_unit_test_teardown(test_arg_release_on_shutdown, pool_teardown),
        cmocka_unit_test_teardown(test_done_callback_on_worker, pool_teardown),
        cmocka_unit_test_teardown(test_done_callback_on_cancel, pool_teardown),
        cmocka_unit_test_teardown(test_result_release, pool_teardown),
        cmocka_unit_test_teardown(test_value_release_on_shutdown, pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
