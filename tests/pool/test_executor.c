/* SPDX-License-Identifier: MIT */
/*
 * test_executor.c — the pool itself: creation and options, FIFO order, the
 * bounded queue (fail or wait when full), shutdown (drain or cancel, from
 * outside and from a task), submits after shutdown, stats, tasks that submit
 * tasks, and a task that breaks ctx_context_run's contract.
 */
#include "pool_test.h"

static int marks[4];
static atomic_int runs;
static atomic_int arg_releases;

static int task_count(void *arg, void **result) {
    (void)arg;
    (void)result;
    atomic_fetch_add(&runs, 1);
    return 0;
}

static void count_arg_release(void *arg) {
    (void)arg;
    atomic_fetch_add(&arg_releases, 1);
}

static void reset_counts(void) {
    atomic_store(&runs, 0);
    atomic_store(&arg_releases, 0);
}

static ctx_pool_t *new_pool(size_t threads, size_t capacity, ctx_pool_full_t full) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = {.size = sizeof(ctx_pool_options_t), .threads = threads, .queue_capacity = capacity,
                            .when_full = full};
    ASSERT_RC(ctx_pool_new(&o, &pool), 0);
    return pool;
}

/* ---------------------------------------------------------------------- */
/* Creation                                                                */
/* ---------------------------------------------------------------------- */

static void test_create_defaults_and_invalid(void **state) {
    (void)state;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(NULL, &pool), 0);
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_true(ctx_pool_default_threads() >= 1);
    assert_int_equal(st.threads, ctx_pool_default_threads());
    assert_int_equal(st.queued + st.running + st.submitted + st.completed, 0);
    ASSERT_RC(ctx_pool_release(pool), 0);

    ctx_pool_t *never = NULL;
    ASSERT_RC(ctx_pool_new(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 100000}, &never), CTX_EINVAL);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .propagation = (ctx_pool_propagation_t)9}, &never),
              CTX_EINVAL);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .when_full = (ctx_pool_full_t)5}, &never),
              CTX_EINVAL);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .propagation = CTX_POOL_PROPAGATE_CONTEXT}, &never),
              CTX_EINVAL);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .propagation = CTX_POOL_PROPAGATE_ALLOWLIST}, &never),
              CTX_EINVAL);
    assert_null(never);

    ASSERT_RC(ctx_pool_submit(NULL, task_count, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_shutdown(NULL, CTX_POOL_SHUTDOWN_DRAIN), CTX_EINVAL);
    ASSERT_RC(ctx_pool_release(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_stats(NULL, &st), CTX_EINVAL);

    pool = new_pool(1, 0, CTX_POOL_FULL_WAIT);
    ASSERT_RC(ctx_pool_submit(pool, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_shutdown(pool, (ctx_pool_shutdown_mode_t)3), CTX_EINVAL);
    ASSERT_RC(ctx_pool_stats(pool, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---------------------------------------------------------------------- */
/* Order                                                                   */
/* ---------------------------------------------------------------------- */

static int order_log[256];
static int order_len;

static int task_log_order(void *arg, void **result) {
    (void)result;
    order_log[order_len++] = (int)(intptr_t)arg; /* one worker: no race */
    return 0;
}

static void test_fifo(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1, 0, CTX_POOL_FULL_WAIT);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, NULL), 0);
    gate_await_arrivals(&gate, 1);
    order_len = 0;
    for (int i = 0; i < 256; i++)
        ASSERT_RC(ctx_pool_submit(pool, task_log_order, (void *)(intptr_t)i, NULL), 0);
    gate_open(&gate);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(order_len, 256);
    for (int i = 0; i < 256; i++)
        assert_int_equal(order_log[i], i);
    gate_destroy(&gate);
}

/* ---------------------------------------------------------------------- */
/* Bounded queue                                                           */
/* ---------------------------------------------------------------------- */

static void test_bounded_fail(void **state) {
    (void)state;
    reset_counts();
    ctx_pool_t *pool = new_pool(1, 2, CTX_POOL_FULL_FAIL);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, NULL), 0);
    gate_await_arrivals(&gate, 1); /* running: not in the queue */
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = count_arg_release};
    ctx_pool_future_t *a = NULL, *b = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_count, NULL, &o, &a), 0);
    ASSERT_RC(ctx_pool_submit_ex(pool, task_count, NULL, &o, &b), 0);
    ctx_pool_future_t *untouched = (ctx_pool_future_t *)&marks[0];
    ASSERT_RC(ctx_pool_submit_ex(pool, task_count, NULL, &o, &untouched), CTX_EFULL);
    assert_ptr_equal(untouched, (ctx_pool_future_t *)&marks[0]);
    ASSERT_RC(ctx_pool_submit(pool, task_count, NULL, NULL), CTX_EFULL);

    /* Cancelling a queued task frees its slot at once. */
    ASSERT_RC(ctx_pool_future_cancel(a), CTX_POOL_CANCEL_DONE);
    ASSERT_RC(ctx_pool_submit_ex(pool, task_count, NULL, &o, NULL), 0);

    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.submitted, 4);

    gate_open(&gate);
    ASSERT_RC(ctx_pool_release(pool), 0);
    /* The refused submits never ran, and their args were never released. */
    assert_int_equal(atomic_load(&runs), 2);
    assert_int_equal(atomic_load(&arg_releases), 3);
    ctx_pool_future_release(a);
    ctx_pool_future_release(b);
    gate_destroy(&gate);
}

typedef struct blocked_submit {
    ctx_pool_t *pool;
    atomic_int returned;
    int rc;
} blocked_submit_t;

static void *submit_may_block(void *arg) {
    blocked_submit_t *s = arg;
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = count_arg_release};
    s->rc = ctx_pool_submit_ex(s->pool, task_count, NULL, &o, NULL);
    atomic_store(&s->returned, 1);
    return NULL;
}

static void test_bounded_wait(void **state) {
    (void)state;
    reset_counts();
    ctx_pool_t *pool = new_pool(1, 1, CTX_POOL_FULL_WAIT);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, NULL), 0);
    gate_await_arrivals(&gate, 1);
    ASSERT_RC(ctx_pool_submit(pool, task_count, NULL, NULL), 0); /* fills it */

    blocked_submit_t s[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        s[i].pool = pool;
        atomic_init(&s[i].returned, 0);
        pthread_create(&t[i], NULL, submit_may_block, &s[i]);
    }
    /* They cannot return while the worker is held and the queue is full. */
    for (int i = 0; i < 20; i++)
        short_nap();
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&s[i].returned), 0);

    gate_open(&gate);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        ASSERT_RC(s[i].rc, 0);
    }
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(atomic_load(&runs), 4);
    assert_int_equal(atomic_load(&arg_releases), 3);
    gate_destroy(&gate);
}

/* Submitters waiting for room when the pool shuts down get CTX_ESHUTDOWN. */
static void *shutdown_cancel_thread(void *arg) {
    ctx_pool_shutdown(arg, CTX_POOL_SHUTDOWN_CANCEL);
    return NULL;
}

static void test_shutdown_wakes_blocked_submitters(void **state) {
    (void)state;
    reset_counts();
    ctx_pool_t *pool = new_pool(1, 1, CTX_POOL_FULL_WAIT);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, NULL), 0);
    gate_await_arrivals(&gate, 1);
    ctx_pool_future_t *queued = NULL;
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = count_arg_release};
    ASSERT_RC(ctx_pool_submit_ex(pool, task_count, NULL, &o, &queued), 0);

    blocked_submit_t s[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        s[i].pool = pool;
        atomic_init(&s[i].returned, 0);
        pthread_create(&t[i], NULL, submit_may_block, &s[i]);
    }
    pthread_t stopper;
    pthread_create(&stopper, NULL, shutdown_cancel_thread, pool);
    /* The blocked submits fail even though the worker is still held. */
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        ASSERT_RC(s[i].rc, CTX_ESHUTDOWN);
    }
    ASSERT_RC(ctx_pool_future_wait(queued, CTX_WAIT_FOREVER), 0);
    assert_int_equal(ctx_pool_future_state(queued), CTX_POOL_FUTURE_CANCELLED);
    gate_open(&gate);
    pthread_join(stopper, NULL);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(atomic_load(&runs), 0);
    assert_int_equal(atomic_load(&arg_releases), 1); /* the cancelled one */
    ctx_pool_future_release(queued);
    gate_destroy(&gate);
}

/* ---------------------------------------------------------------------- */
/* Shutdown                                                                */
/* ---------------------------------------------------------------------- */

static void *shutdown_drain_thread(void *arg) {
    ctx_pool_shutdown(arg, CTX_POOL_SHUTDOWN_DRAIN);
    return NULL;
}

static void shutdown_case(ctx_pool_shutdown_mode_t mode) {
    reset_counts();
    enum { N = 50 };
    ctx_pool_t *pool = new_pool(1, 0, CTX_POOL_FULL_WAIT);
    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *running = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, &running), 0);
    gate_await_arrivals(&gate, 1);
    ctx_pool_future_t *f[N];
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = count_arg_release};
    for (int i = 0; i < N; i++)
        ASSERT_RC(ctx_pool_submit_ex(pool, task_count, NULL, &o, &f[i]), 0);

    pthread_t stopper;
    pthread_create(&stopper, NULL,
                   mode == CTX_POOL_SHUTDOWN_DRAIN ? shutdown_drain_thread
                                              : shutdown_cancel_thread,
                   pool);
    /* Once shutdown has begun, submits fail and never run. */
    int rc;
    while ((rc = ctx_pool_submit_ex(pool, task_count, NULL, &o, NULL)) == 0)
        short_nap(); /* (accepted before the stop: counted below) */
    ASSERT_RC(rc, CTX_ESHUTDOWN);

    gate_open(&gate);
    pthread_join(stopper, NULL);
    /* Every task ended; none lost. */
    ASSERT_RC(ctx_pool_future_wait(running, 0), 0);
    assert_int_equal(ctx_pool_future_state(running), CTX_POOL_FUTURE_COMPLETED);
    for (int i = 0; i < N; i++) {
        ASSERT_RC(ctx_pool_future_wait(f[i], 0), 0);
        assert_int_equal(ctx_pool_future_state(f[i]),
                         mode == CTX_POOL_SHUTDOWN_DRAIN ? CTX_POOL_FUTURE_COMPLETED
                                                    : CTX_POOL_FUTURE_CANCELLED);
        ctx_pool_future_release(f[i]);
    }
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.completed + st.cancelled + st.failed, st.submitted);
    assert_int_equal((uint64_t)atomic_load(&arg_releases), st.submitted - 1);
    assert_int_equal((uint64_t)atomic_load(&runs), st.completed - 1);
    assert_true(st.rejected >= 1);
    /* A second shutdown (any mode) is harmless; so is a submit. */
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_CANCEL), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_count, NULL, NULL), CTX_ESHUTDOWN);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_pool_future_release(running);
    gate_destroy(&gate);
}

static void test_shutdown_drain(void **state) {
    (void)state;
    shutdown_case(CTX_POOL_SHUTDOWN_DRAIN);
    assert_true(atomic_load(&runs) >= 50); /* and any accepted before the stop */
}

static void test_shutdown_cancel(void **state) {
    (void)state;
    shutdown_case(CTX_POOL_SHUTDOWN_CANCEL);
    assert_int_equal(atomic_load(&runs), 0);
}

/* ---------------------------------------------------------------------- */
/* Tasks that use the pool                                                 */
/* ---------------------------------------------------------------------- */

static ctx_var_t *depth_var;
static ctx_pool_t *nest_pool;

/* Sets depth = arg, then (up to depth 3) submits a child and waits for it;
 * returns the deepest depth any descendant saw its parent's value + 1. */
static int task_nest(void *arg, void **result) {
    intptr_t depth = (intptr_t)arg;
    intptr_t inherited = (intptr_t)pool_get(depth_var, (void *)(intptr_t)-1);
    OFF_MAIN_CHECK(inherited == depth - 1);
    OFF_MAIN_CHECK(ctx_var_set(depth_var, (void *)depth, NULL) == 0);
    if (depth < 3) {
        ctx_pool_future_t *child = NULL;
        OFF_MAIN_CHECK(ctx_pool_submit(nest_pool, task_nest, (void *)(depth + 1), &child) == 0);
        /* Four workers: the child always finds one. */
        OFF_MAIN_CHECK(ctx_pool_future_wait(child, CTX_WAIT_FOREVER) == 0);
        void *r = NULL;
        OFF_MAIN_CHECK(ctx_pool_future_result(child, &r) == 0);
        *result = r;
        ctx_pool_future_release(child);
    } else {
        *result = (void *)depth;
    }
    OFF_MAIN_CHECK((intptr_t)pool_get(depth_var, NULL) == depth);
    return 0;
}

static void test_nested_submit(void **state) {
    (void)state;
    depth_var = pool_make_var("depth", NULL, 0);
    nest_pool = new_pool(4, 0, CTX_POOL_FULL_WAIT);
    ASSERT_RC(ctx_var_set(depth_var, (void *)(intptr_t)0, NULL), 0);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(nest_pool, task_nest, (void *)(intptr_t)1, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_future_result(f, &r), 0);
    assert_int_equal((intptr_t)r, 3);
    assert_int_equal((intptr_t)pool_get(depth_var, NULL), 0);
    ctx_pool_future_release(f);
    ASSERT_RC(ctx_pool_release(nest_pool), 0);
    assert_int_equal(off_main_failures(), 0);
    ctx_var_release(depth_var);
}

/* Shutdown from a task begins the shutdown and returns; destroy from a task
 * is refused. */
static int task_shutdown_self(void *arg, void **result) {
    ctx_pool_t *pool = arg;
    *result = (void *)(intptr_t)ctx_pool_release(pool);
    OFF_MAIN_CHECK(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN) == 0);
    OFF_MAIN_CHECK(ctx_pool_submit(pool, task_count, NULL, NULL) == CTX_ESHUTDOWN);
    return 0;
}

static void test_shutdown_from_task(void **state) {
    (void)state;
    reset_counts();
    ctx_pool_t *pool = new_pool(2, 0, CTX_POOL_FULL_WAIT);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_shutdown_self, pool, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_future_result(f, &r), 0);
    assert_int_equal((int)(intptr_t)r, CTX_EBUSY);
    ASSERT_RC(ctx_pool_submit(pool, task_count, NULL, NULL), CTX_ESHUTDOWN);
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0); /* waits */
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_pool_future_release(f);
    assert_int_equal(off_main_failures(), 0);
}

/* ---------------------------------------------------------------------- */
/* A task that leaves a context entered                                    */
/* ---------------------------------------------------------------------- */

static ctx_var_t *leak_var;

static int task_forget_exit(void *arg, void **result) {
    (void)arg;
    ctx_context_t *c = NULL;
    if (ctx_context_new(&c) != 0)
        return CTX_ENOMEM;
    ctx_context_set(c, leak_var, &marks[0]);
    ctx_context_enter(c); /* and never exit */
    ctx_context_release(c);
    *result = NULL;
    return 0;
}

static int task_read_leak(void *arg, void **result) {
    (void)arg;
    *result = pool_get(leak_var, NULL);
    return 0;
}

static void test_task_forgets_exit(void **state) {
    (void)state;
    leak_var = pool_make_var("leak", NULL, 0);
    ctx_pool_t *pool = new_pool(1, 0, CTX_POOL_FULL_WAIT);
    ctx_pool_future_t *bad = NULL, *next = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_forget_exit, NULL, &bad), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_read_leak, NULL, &next), 0);
    ASSERT_RC(ctx_pool_future_wait(bad, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_future_wait(next, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_future_result(bad, NULL), CTX_ENOTCURRENT);
    /* The next task on that worker still runs in its own context. */
    void *seen = &marks[1];
    ASSERT_RC(ctx_pool_future_result(next, &seen), 0);
    assert_null(seen);
    ctx_pool_future_release(bad);
    ctx_pool_future_release(next);
    ASSERT_RC(ctx_pool_release(pool), 0); /* the worker's exit frees it all */
    ctx_var_release(leak_var);
}

/* ---------------------------------------------------------------------- */
/* Stats                                                                   */
/* ---------------------------------------------------------------------- */

static void test_stats(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1, 0, CTX_POOL_FULL_WAIT);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, NULL), 0);
    gate_await_arrivals(&gate, 1);
    ctx_pool_future_t *waited = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_count, NULL, &waited), 0);
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.threads, 1);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.submitted, 2);
    short_nap(); /* so the queued task has waited a measurable time */
    gate_open(&gate);
    ASSERT_RC(ctx_pool_future_wait(waited, CTX_WAIT_FOREVER), 0);
    uint64_t w = 0;
    ASSERT_RC(ctx_pool_future_queue_wait(waited, &w), 0);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_true(st.max_queue_wait_ns >= w);
    assert_true(w > 0);
    assert_int_equal(st.completed, 2);
    ctx_pool_future_release(waited);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_create_defaults_and_invalid, pool_teardown),
        cmocka_unit_test_teardown(test_fifo, pool_teardown),
        cmocka_unit_test_teardown(test_bounded_fail, pool_teardown),
        cmocka_unit_test_teardown(test_bounded_wait, pool_teardown),
        cmocka_unit_test_teardown(test_shutdown_wakes_blocked_submitters, pool_teardown),
        cmocka_unit_test_teardown(test_shutdown_drain, pool_teardown),
        cmocka_unit_test_teardown(test_shutdown_cancel, pool_teardown),
        cmocka_unit_test_teardown(test_nested_submit, pool_teardown),
        cmocka_unit_test_teardown(test_shutdown_from_task, pool_teardown),
        cmocka_unit_test_teardown(test_task_forgets_exit, pool_teardown),
        cmocka_unit_test_teardown(test_stats, pool_teardown),
    };
    int failed = cmocka_run_group_tests_name("pool_executor", tests, NULL, NULL);
    ctx_thread_release();
    return failed || off_main_failures();
}
