/* SPDX-License-Identifier: MIT */
/*
 * test_locks.c — no user callback of the loop module runs under one of its
 * locks (docs/api-rules.md), one test per path: a scheduled callback, an
 * arg_release (run and dropped at close), a future's done-callback, a task
 * step, a result_release, the error handler, the arg_release of work
 * offloaded to a pool (on the worker), and the callback of ctx_loop_offload.
 *
 * Each callback holds a gate (gate_test.h) while another thread makes
 * any-thread calls on the same loop and future — handing a callback over
 * through the inbox, completing the future, adding done-callbacks — which
 * must all return (and say what they should) while the callback is still
 * running; then the callback calls back into the same loop, future or task.
 */
#include "loop_test.h"

#include "gate_test.h"

static atomic_int noops;
static void noop(void *arg) {
    (void)arg;
    atomic_fetch_add(&noops, 1);
}
static void noop_done(ctx_loop_future_t *f, void *user) {
    (void)f;
    (void)user;
    atomic_fetch_add(&noops, 1);
}

typedef struct scene {
    ctx_loop_t *loop;
    ctx_loop_future_t *future; /* pending, with a done-callback */
    gate_t gate;
    int back[4]; /* what the callback's own calls returned */
} scene_t;

/* The helper's calls: hand a callback over, complete the future (whose
 * done-callback goes through the inbox), add one more done-callback. */
static void other_thread_calls(gate_t *g) {
    scene_t *s = g->object;
    g->rc[0] = ctx_loop_call_soon_threadsafe(s->loop, noop, NULL, NULL, NULL);
    g->rc[1] = ctx_loop_future_set_result(s->future, IV(1));
    g->rc[2] = ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL);
    g->rc[3] = ctx_loop_is_closed(s->loop);
}

static void expect_other_calls_returned(const scene_t *s) {
    ASSERT_RC(s->gate.rc[0], 0);
    ASSERT_RC(s->gate.rc[1], 0);
    ASSERT_RC(s->gate.rc[2], 0);
    ASSERT_RC(s->gate.rc[3], 0);
}

static void scene_open(scene_t *s) {
    memset(s, 0, sizeof *s);
    s->loop = new_loop(NULL);
    ASSERT_RC(ctx_loop_future_new(s->loop, NULL, &s->future), 0);
    ASSERT_RC(ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL), 0);
    atomic_store(&noops, 0);
}

static void scene_close(scene_t *s) {
    ctx_loop_future_release(s->future);
    close_loop(s->loop);
}

/* ---- a scheduled callback ---- */

static void held_callback(void *arg) {
    scene_t *s = arg;
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_call_soon(s->loop, noop, NULL, NULL, NULL);
    s->back[1] = ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL);
    s->back[2] = ctx_loop_call_later(s->loop, 0, noop, NULL, NULL, NULL);
}

static void test_callback(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    ASSERT_RC(ctx_loop_call_soon(s.loop, held_callback, &s, NULL, NULL), 0);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    assert_int_equal(atomic_load(&s.gate.timeouts), 0);
    expect_other_calls_returned(&s);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    ASSERT_RC(s.back[2], 0);
    /* threadsafe noop, 3 done-callbacks, call_soon, call_later */
    assert_int_equal(atomic_load(&noops), 6);
    scene_close(&s);
}

/* ---- arg_release: after the callback, and when close drops it ---- */

static scene_t *release_scene;

static void held_release(void *arg) {
    (void)arg;
    scene_t *s = release_scene;
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_call_soon(s->loop, noop, NULL, NULL, NULL);
    s->back[1] = ctx_loop_is_closed(s->loop);
}

static void test_arg_release_after_the_callback(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    release_scene = &s;
    ctx_loop_call_options_t o = CTX_STRUCT_INIT(ctx_loop_call_options_t);
    o.arg_release = held_release;
    ASSERT_RC(ctx_loop_call_soon(s.loop, noop, NULL, &o, NULL), 0);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    assert_int_equal(atomic_load(&noops), 5); /* the callback, threadsafe, 2 done, call_soon */
    scene_close(&s);
}

/* At close the loop is closing: the helper's calls are refused at once
 * (none waits for the running arg_release), and so are the callback's. */
static void other_thread_calls_closing(gate_t *g) {
    scene_t *s = g->object;
    g->rc[0] = ctx_loop_call_soon_threadsafe(s->loop, noop, NULL, NULL, NULL);
    g->rc[1] = ctx_loop_future_set_result(s->future, IV(1)); /* its callback is dropped */
    g->rc[2] = ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL);
    g->rc[3] = ctx_loop_is_closed(s->loop);
}

static void test_arg_release_dropped_at_close(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    release_scene = &s;
    ctx_loop_call_options_t o = CTX_STRUCT_INIT(ctx_loop_call_options_t);
    o.arg_release = held_release;
    ASSERT_RC(ctx_loop_call_soon(s.loop, noop, NULL, &o, NULL), 0);
    gate_start(&s.gate, other_thread_calls_closing, &s, NULL);
    ASSERT_RC(ctx_loop_close(s.loop), 0); /* drops the callback: arg_release holds */
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    ASSERT_RC(s.gate.rc[0], CTX_ECLOSED);
    ASSERT_RC(s.gate.rc[1], 0);
    ASSERT_RC(s.gate.rc[2], CTX_ECLOSED);
    ASSERT_RC(s.gate.rc[3], 1);
    ASSERT_RC(s.back[0], CTX_ECLOSED);
    ASSERT_RC(s.back[1], 1);
    assert_int_equal(atomic_load(&noops), 0); /* nothing ran */
    ctx_loop_future_release(s.future);
    ctx_loop_release(s.loop);
}

/* ---- a done-callback ---- */

static void held_done(ctx_loop_future_t *f, void *user) {
    scene_t *s = user;
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_future_add_done_callback(f, noop_done, NULL, NULL);
    s->back[1] = ctx_loop_future_cancel(f); /* done already: 0 */
    s->back[2] = ctx_loop_call_soon(s->loop, noop, NULL, NULL, NULL);
}

static void other_thread_on_done_future(gate_t *g) {
    scene_t *s = g->object;
    g->rc[0] = ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL);
    g->rc[1] = ctx_loop_future_set_result(s->future, IV(2)); /* done already */
    g->rc[2] = ctx_loop_call_soon_threadsafe(s->loop, noop, NULL, NULL, NULL);
}

static void test_done_callback(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    ASSERT_RC(ctx_loop_future_add_done_callback(s.future, held_done, &s, NULL), 0);
    ASSERT_RC(ctx_loop_future_set_result(s.future, IV(1)), 0);
    gate_start(&s.gate, other_thread_on_done_future, &s, NULL);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    ASSERT_RC(s.gate.rc[0], 0);
    ASSERT_RC(s.gate.rc[1], CTX_EINVAL);
    ASSERT_RC(s.gate.rc[2], 0);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    ASSERT_RC(s.back[2], 0);
    /* first done-callback, helper's done + threadsafe, callback's done + call_soon */
    assert_int_equal(atomic_load(&noops), 5);
    scene_close(&s);
}

/* ---- a task step ---- */

typedef struct held_task {
    scene_t *s;
    int step;
} held_task_t;

static int held_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    held_task_t *h = arg;
    if (h->step++ == 0) {
        gate_hold(&h->s->gate);
        h->s->back[0] = ctx_loop_future_add_done_callback(ctx_loop_task_future(task), noop_done,
                                                          NULL, NULL);
        h->s->back[1] = ctx_loop_call_soon(h->s->loop, noop, NULL, NULL, NULL);
        return ctx_loop_task_await(task, h->s->future);
    }
    return ctx_loop_task_awaited(task, NULL);
}

static void test_task_step(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    held_task_t h = {&s, 0};
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(s.loop, held_step, &h, NULL, &t), 0);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    assert_int_equal(h.step, 2);
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0);
    /* threadsafe, 2 done-callbacks on the future, the task's, call_soon */
    assert_int_equal(atomic_load(&noops), 5);
    ctx_loop_task_release(t);
    scene_close(&s);
}

/* ---- a result_release, on the thread dropping the last reference ---- */

static void held_result_release(void *result) {
    scene_t *s = result;
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_call_soon_threadsafe(s->loop, noop, NULL, NULL, NULL);
    s->back[1] = ctx_loop_future_set_result(s->future, IV(3));
}

static void other_thread_besides(gate_t *g) {
    scene_t *s = g->object;
    ctx_loop_future_t *f = NULL;
    g->rc[0] = ctx_loop_future_new(s->loop, NULL, &f);
    g->rc[1] = ctx_loop_future_set_result(f, IV(1));
    ctx_loop_future_release(f);
    g->rc[2] = ctx_loop_call_soon_threadsafe(s->loop, noop, NULL, NULL, NULL);
}

static void test_result_release(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    ctx_loop_future_options_t o = CTX_STRUCT_INIT(ctx_loop_future_options_t);
    o.result_release = held_result_release;
    ctx_loop_future_t *f = NULL;
    ASSERT_RC(ctx_loop_future_new(s.loop, &o, &f), 0);
    ASSERT_RC(ctx_loop_future_set_result(f, &s), 0);
    gate_start(&s.gate, other_thread_besides, &s, NULL);
    ctx_loop_future_release(f); /* the last reference: result_release holds */
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    ASSERT_RC(s.gate.rc[0], 0);
    ASSERT_RC(s.gate.rc[1], 0);
    ASSERT_RC(s.gate.rc[2], 0);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    run_loop(s.loop);
    assert_int_equal(atomic_load(&noops), 3); /* 2 threadsafe + the done-callback */
    scene_close(&s);
}

/* ---- the error handler ---- */

static ctx_context_t *left_entered;

static void held_handler(ctx_loop_t *loop, int code, const char *what, void *user) {
    (void)what;
    scene_t *s = user;
    assert_int_equal(code, CTX_ENOTCURRENT); /* loop thread: cmocka may fail here */
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_call_soon(loop, noop, NULL, NULL, NULL);
    s->back[1] = ctx_loop_set_error_handler(loop, NULL, NULL); /* back to the default */
}

/* A callback that leaves a context entered: the loop reports it. */
static void leave_entered(void *arg) {
    (void)arg;
    ASSERT_RC(ctx_context_new(&left_entered), 0);
    ASSERT_RC(ctx_context_enter(left_entered), 0);
}

static void test_error_handler(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    ASSERT_RC(ctx_loop_set_error_handler(s.loop, held_handler, &s), 0);
    ASSERT_RC(ctx_loop_call_soon(s.loop, leave_entered, NULL, NULL, NULL), 0);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    assert_true(ctx_loop_run(s.loop, UV_RUN_NOWAIT) >= 0);
    ASSERT_RC(ctx_context_exit(left_entered), 0);
    ctx_context_release(left_entered);
    reports_t quiet;
    memset(&quiet, 0, sizeof quiet);
    ASSERT_RC(ctx_loop_set_error_handler(s.loop, record_report, &quiet), 0);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    assert_int_equal(atomic_load(&noops), 4); /* threadsafe, 2 done-callbacks, call_soon */
    scene_close(&s);
}

/* ---- the arg_release of work offloaded to a pool (on the worker) ---- */

static int offloaded(void *arg, void **result) {
    (void)arg;
    *result = IV(9);
    return 0;
}

static void held_pool_release(void *arg) {
    scene_t *s = arg;
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_call_soon_threadsafe(s->loop, noop, NULL, NULL, NULL);
    s->back[1] = ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL);
}

static void test_offload_arg_release(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.arg_release = held_pool_release;
    ctx_loop_future_t *w = NULL;
    gate_start(&s.gate, other_thread_calls, &s, NULL); /* before the worker may hold it */
    ASSERT_RC(ctx_loop_run_in_pool(s.loop, pool, offloaded, &s, &so, &w), 0);
    ASSERT_RC(ctx_loop_run_until_done(s.loop, w), 0);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    void *res = NULL;
    ASSERT_RC(ctx_loop_future_result(w, &res), 0);
    assert_ptr_equal(res, IV(9));
    assert_int_equal(atomic_load(&noops), 5);
    ctx_loop_future_release(w);
    ASSERT_RC(ctx_pool_release(pool), 0);
    scene_close(&s);
}

/* ---- the callback of ctx_loop_offload ---- */

static int quick_work(void *arg, void **result) {
    (void)arg;
    *result = IV(4);
    return 0;
}

static void held_offload_done(void *arg, int rc, void *result) {
    scene_t *s = arg;
    (void)rc;
    (void)result;
    gate_hold(&s->gate);
    s->back[0] = ctx_loop_call_soon(s->loop, noop, NULL, NULL, NULL);
    s->back[1] = ctx_loop_future_add_done_callback(s->future, noop_done, NULL, NULL);
}

static void test_offload_done(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    ASSERT_RC(ctx_loop_offload(s.loop, pool, quick_work, &s, held_offload_done, NULL), 0);
    run_loop(s.loop);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s);
    ASSERT_RC(s.back[0], 0);
    ASSERT_RC(s.back[1], 0);
    assert_int_equal(atomic_load(&noops), 5); /* threadsafe, 3 done-callbacks, call_soon */
    ASSERT_RC(ctx_pool_release(pool), 0);
    scene_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_callback, release_thread),
        cmocka_unit_test_teardown(test_arg_release_after_the_callback, release_thread),
        cmocka_unit_test_teardown(test_arg_release_dropped_at_close, release_thread),
        cmocka_unit_test_teardown(test_done_callback, release_thread),
        cmocka_unit_test_teardown(test_task_step, release_thread),
        cmocka_unit_test_teardown(test_result_release, release_thread),
        cmocka_unit_test_teardown(test_error_handler, release_thread),
        cmocka_unit_test_teardown(test_offload_arg_release, release_thread),
        cmocka_unit_test_teardown(test_offload_done, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
