/* SPDX-License-Identifier: MIT */
/*
 * test_future.c — futures: outcomes, waiting with a timeout, cancelling a
 * pending and a running task, done-callbacks and the context they run in,
 * reference counting, arg/result ownership, captured stacks.
 *
 * Tasks are held at a gate (pool_test.h) to make "pending" and "running"
 * deterministic; nothing here depends on how long anything takes.
 */
#include "pool_test.h"

#include <semaphore.h>

static int marks[4];

static int task_result(void *arg, void **result) {
    *result = arg;
    return 0;
}

static int task_fail(void *arg, void **result) {
    (void)result;
    return (int)(intptr_t)arg;
}

static ctx_pool_t *new_pool(size_t threads) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = {.size = sizeof(ctx_pool_options_t), .threads = threads};
    ASSERT_RC(ctx_pool_new(&o, &pool), 0);
    return pool;
}

/* ---------------------------------------------------------------------- */
/* Outcomes                                                                */
/* ---------------------------------------------------------------------- */

static void test_outcomes(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    ctx_pool_future_t *ok = NULL, *bad = NULL, *positive = NULL, *gave_up = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_result, &marks[0], &ok), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_fail, (void *)(intptr_t)CTX_ECALLBACK, &bad), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_fail, (void *)(intptr_t)7, &positive), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_fail, (void *)(intptr_t)CTX_ECANCELLED, &gave_up), 0);
    ctx_pool_future_t *all[] = {ok, bad, positive, gave_up};
    for (int i = 0; i < 4; i++) {
        ASSERT_RC(ctx_pool_future_wait(all[i], CTX_WAIT_FOREVER), 0);
        assert_int_equal(ctx_pool_future_done(all[i]), 1);
    }
    void *r = NULL;
    assert_int_equal(ctx_pool_future_state(ok), CTX_POOL_FUTURE_COMPLETED);
    ASSERT_RC(ctx_pool_future_result(ok, &r), 0);
    assert_ptr_equal(r, &marks[0]);
    assert_int_equal(ctx_pool_future_state(bad), CTX_POOL_FUTURE_FAILED);
    ASSERT_RC(ctx_pool_future_result(bad, &r), CTX_ECALLBACK);
    /* A positive return breaks the contract: failed, CTX_ECALLBACK. */
    assert_int_equal(ctx_pool_future_state(positive), CTX_POOL_FUTURE_FAILED);
    ASSERT_RC(ctx_pool_future_result(positive, NULL), CTX_ECALLBACK);
    assert_int_equal(ctx_pool_future_state(gave_up), CTX_POOL_FUTURE_CANCELLED);
    ASSERT_RC(ctx_pool_future_result(gave_up, NULL), CTX_ECANCELLED);

    uint64_t waited = 0;
    ASSERT_RC(ctx_pool_future_queue_wait(ok, &waited), 0);

    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.submitted, 4);

    for (int i = 0; i < 4; i++)
        ctx_pool_future_release(all[i]);
    ASSERT_RC(ctx_pool_release(pool), 0);

    /* NULL handling. */
    ASSERT_RC(ctx_pool_future_wait(NULL, 0), CTX_EINVAL);
    ASSERT_RC(ctx_pool_future_result(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_future_cancel(NULL), CTX_EINVAL);
    assert_int_equal(ctx_pool_future_done(NULL), 0);
    assert_int_equal(ctx_pool_future_state(NULL), CTX_POOL_FUTURE_PENDING);
    assert_null(ctx_pool_future_retain(NULL));
    ctx_pool_future_release(NULL);
}

/* ---------------------------------------------------------------------- */
/* Waiting                                                                 */
/* ---------------------------------------------------------------------- */

static void test_wait_timeout(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *running = NULL, *pending = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, &running), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_result, &marks[1], &pending), 0);
    gate_await_arrivals(&gate, 1);

    assert_int_equal(ctx_pool_future_state(running), CTX_POOL_FUTURE_RUNNING);
    assert_int_equal(ctx_pool_future_state(pending), CTX_POOL_FUTURE_PENDING);
    ASSERT_RC(ctx_pool_future_result(running, NULL), CTX_ENOTDONE);
    /* The gate is shut: these waits can only time out. */
    ASSERT_RC(ctx_pool_future_wait(running, 0), CTX_ETIMEDOUT);
    ASSERT_RC(ctx_pool_future_wait(running, 1000000), CTX_ETIMEDOUT);
    ASSERT_RC(ctx_pool_future_wait(pending, 2000000), CTX_ETIMEDOUT);
    uint64_t waited = 0;
    ASSERT_RC(ctx_pool_future_queue_wait(pending, &waited), CTX_ENOTFOUND);
    /* A running task's queue wait is known (read while its worker runs). */
    ASSERT_RC(ctx_pool_future_queue_wait(running, &waited), 0);
    ASSERT_RC(ctx_pool_future_queue_wait(NULL, &waited), CTX_EINVAL);

    gate_open(&gate);
    /* A long timeout returns as soon as the future ends. */
    ASSERT_RC(ctx_pool_future_wait(pending, 3600 * INT64_C(1000000000)), 0);
    ASSERT_RC(ctx_pool_future_wait(running, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_future_wait(running, 0), 0);

    ctx_pool_future_release(running);
    ctx_pool_future_release(pending);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
}

/* Several threads wait for one future. */
static void *waiter(void *arg) {
    ctx_pool_future_t *f = arg;
    OFF_MAIN_CHECK(ctx_pool_future_wait(f, CTX_WAIT_FOREVER) == 0);
    OFF_MAIN_CHECK(ctx_pool_future_done(f));
    return NULL;
}

static void test_many_waiters(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    for (int round = 0; round < SCALED(50); round++) {
        gate_t gate;
        gate_init(&gate);
        ctx_pool_future_t *f = NULL;
        ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, &f), 0);
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, waiter, f);
        gate_open(&gate);
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        ctx_pool_future_release(f);
        gate_destroy(&gate);
    }
    assert_int_equal(off_main_failures(), 0);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* A task cannot wait for its own future (it would never end). */
static _Atomic(ctx_pool_future_t *) self_future;

static int task_wait_self(void *arg, void **result) {
    gate_pass(arg);
    *result = (void *)(intptr_t)ctx_pool_future_wait(atomic_load(&self_future),
                                                CTX_WAIT_FOREVER);
    return 0;
}

static void test_wait_self(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_wait_self, &gate, &f), 0);
    atomic_store(&self_future, f);
    gate_open(&gate);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_future_result(f, &r), 0);
    assert_int_equal((int)(intptr_t)r, CTX_EINVAL);
    ctx_pool_future_release(f);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
}

/* ---------------------------------------------------------------------- */
/* Cancelling                                                              */
/* ---------------------------------------------------------------------- */

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

static void test_cancel_pending(void **state) {
    (void)state;
    atomic_store(&runs, 0);
    atomic_store(&arg_releases, 0);
    ctx_pool_t *pool = new_pool(1);
    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *blocker = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, &blocker), 0);
    gate_await_arrivals(&gate, 1);

    enum { N = 16 };
    ctx_pool_future_t *f[N];
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = count_arg_release};
    for (int i = 0; i < N; i++)
        ASSERT_RC(ctx_pool_submit_ex(pool, task_count, &marks[0], &o, &f[i]), 0);
    /* Cancel every other one; each ends at once, its arg released here. */
    for (int i = 0; i < N; i += 2) {
        ASSERT_RC(ctx_pool_future_cancel(f[i]), CTX_POOL_CANCEL_DONE);
        assert_int_equal(ctx_pool_future_state(f[i]), CTX_POOL_FUTURE_CANCELLED);
        assert_int_equal(ctx_pool_future_done(f[i]), 1);
        ASSERT_RC(ctx_pool_future_result(f[i], NULL), CTX_ECANCELLED);
        assert_int_equal(ctx_pool_future_cancel_requested(f[i]), 1);
        ASSERT_RC(ctx_pool_future_wait(f[i], 0), 0);
        ASSERT_RC(ctx_pool_future_cancel(f[i]), CTX_POOL_CANCEL_TOO_LATE);
    }
    assert_int_equal(atomic_load(&arg_releases), N / 2);
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.queued, N / 2); /* cancelled ones left the queue */
    assert_int_equal(st.cancelled, N / 2);

    gate_open(&gate);
    for (int i = 0; i < N; i++)
        ASSERT_RC(ctx_pool_future_wait(f[i], CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&runs), N / 2); /* the cancelled never ran */
    assert_int_equal(atomic_load(&arg_releases), N);
    for (int i = 1; i < N; i += 2) {
        assert_int_equal(ctx_pool_future_state(f[i]), CTX_POOL_FUTURE_COMPLETED);
        ASSERT_RC(ctx_pool_future_cancel(f[i]), CTX_POOL_CANCEL_TOO_LATE);
    }
    for (int i = 0; i < N; i++)
        ctx_pool_future_release(f[i]);
    ctx_pool_future_release(blocker);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
}

/* A running task polls its flag. */
static int task_poll_cancel(void *arg, void **result) {
    atomic_int *started = arg;
    atomic_store(started, 1);
    while (!ctx_pool_task_cancelled())
        sched_yield();
    *result = NULL;
    return CTX_ECANCELLED;
}

/* A running task that ignores its flag and completes. */
static int task_ignore_cancel(void *arg, void **result) {
    gate_pass(arg);
    *result = &marks[2];
    return 0;
}

static void test_cancel_running(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    atomic_int started;
    atomic_init(&started, 0);
    ctx_pool_future_t *polling = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_poll_cancel, &started, &polling), 0);
    while (!atomic_load(&started))
        short_nap();
    assert_int_equal(ctx_pool_future_cancel_requested(polling), 0);
    ASSERT_RC(ctx_pool_future_cancel(polling), CTX_POOL_CANCEL_RUNNING);
    ASSERT_RC(ctx_pool_future_wait(polling, CTX_WAIT_FOREVER), 0);
    assert_int_equal(ctx_pool_future_state(polling), CTX_POOL_FUTURE_CANCELLED);

    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *stubborn = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_ignore_cancel, &gate, &stubborn), 0);
    gate_await_arrivals(&gate, 1);
    ASSERT_RC(ctx_pool_future_cancel(stubborn), CTX_POOL_CANCEL_RUNNING);
    gate_open(&gate);
    ASSERT_RC(ctx_pool_future_wait(stubborn, CTX_WAIT_FOREVER), 0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_future_result(stubborn, &r), 0);
    assert_ptr_equal(r, &marks[2]);
    assert_int_equal(ctx_pool_future_cancel_requested(stubborn), 1);

    /* Outside a task the flag is always 0. */
    assert_int_equal(ctx_pool_task_cancelled(), 0);
    ctx_pool_future_release(polling);
    ctx_pool_future_release(stubborn);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
}

/* ---------------------------------------------------------------------- */
/* Done-callbacks                                                          */
/* ---------------------------------------------------------------------- */

static ctx_var_t *who_var;

typedef struct cb_log {
    pthread_mutex_t lock;
    int count;
    int order[8];
    void *seen[8];
    pthread_t thread[8];
    int state[8];
    sem_t done;
} cb_log_t;

static cb_log_t cblog;

static void cb_record(ctx_pool_future_t *f, void *user) {
    int id = (int)(intptr_t)user;
    pthread_mutex_lock(&cblog.lock);
    int i = cblog.count++;
    cblog.order[i] = id;
    cblog.seen[i] = pool_get(who_var, NULL);
    cblog.thread[i] = pthread_self();
    cblog.state[i] = ctx_pool_future_state(f);
    pthread_mutex_unlock(&cblog.lock);
    /* A callback's sets stay in its own copy. */
    ctx_var_set(who_var, &marks[3], NULL);
    sem_post(&cblog.done);
}

static void cblog_reset(void) {
    pthread_mutex_init(&cblog.lock, NULL);
    cblog.count = 0;
    sem_init(&cblog.done, 0, 0);
}

static void test_done_callbacks(void **state) {
    (void)state;
    who_var = pool_make_var("who", NULL, 0);
    cblog_reset();
    ctx_pool_t *pool = new_pool(1);
    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, &f), 0);

    /* Each callback runs in the context current when it was added. */
    ctx_token_t *t1 = NULL;
    ASSERT_RC(ctx_var_set(who_var, &marks[0], &t1), 0);
    ASSERT_RC(ctx_pool_future_add_done_callback(f, cb_record, (void *)1), 0);
    ASSERT_RC(ctx_var_set(who_var, &marks[1], NULL), 0);
    ASSERT_RC(ctx_pool_future_add_done_callback(f, cb_record, (void *)2), 0);
    ASSERT_RC(ctx_var_reset(who_var, t1), 0);
    ctx_token_release(t1);
    assert_int_equal(cblog.count, 0);

    gate_open(&gate);
    sem_wait(&cblog.done);
    sem_wait(&cblog.done);
    assert_int_equal(cblog.count, 2);
    assert_int_equal(cblog.order[0], 1); /* in the order added */
    assert_int_equal(cblog.order[1], 2);
    assert_ptr_equal(cblog.seen[0], &marks[0]);
    assert_ptr_equal(cblog.seen[1], &marks[1]);
    assert_int_equal(cblog.state[0], CTX_POOL_FUTURE_COMPLETED);
    /* Ran on the worker, not here. */
    assert_int_equal(pthread_equal(cblog.thread[0], pthread_self()), 0);

    /* Already done: runs at once, in the caller, in its current context,
     * and its set does not leak into the caller. */
    ASSERT_RC(ctx_var_set(who_var, &marks[2], NULL), 0);
    ASSERT_RC(ctx_pool_future_add_done_callback(f, cb_record, (void *)3), 0);
    assert_int_equal(cblog.count, 3);
    assert_int_equal(cblog.order[2], 3);
    assert_ptr_equal(cblog.seen[2], &marks[2]);
    assert_int_equal(pthread_equal(cblog.thread[2], pthread_self()), 1);
    assert_ptr_equal(pool_get(who_var, NULL), &marks[2]);

    ASSERT_RC(ctx_pool_future_add_done_callback(NULL, cb_record, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_future_add_done_callback(f, NULL, NULL), CTX_EINVAL);

    ctx_pool_future_release(f);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
    sem_destroy(&cblog.done);
    ctx_var_release(who_var);
}

/* Cancelling a pending task runs its callbacks on the cancelling thread. */
static void test_done_callbacks_on_cancel(void **state) {
    (void)state;
    who_var = pool_make_var("who", NULL, 0);
    cblog_reset();
    ctx_pool_t *pool = new_pool(1);
    gate_t gate;
    gate_init(&gate);
    ctx_pool_future_t *blocker = NULL, *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, &blocker), 0);
    gate_await_arrivals(&gate, 1);
    ASSERT_RC(ctx_pool_submit(pool, task_count, NULL, &f), 0);
    ASSERT_RC(ctx_var_set(who_var, &marks[1], NULL), 0);
    ASSERT_RC(ctx_pool_future_add_done_callback(f, cb_record, (void *)7), 0);
    ASSERT_RC(ctx_var_set(who_var, &marks[0], NULL), 0);
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_DONE);
    assert_int_equal(cblog.count, 1);
    assert_int_equal(cblog.state[0], CTX_POOL_FUTURE_CANCELLED);
    assert_ptr_equal(cblog.seen[0], &marks[1]);
    assert_int_equal(pthread_equal(cblog.thread[0], pthread_self()), 1);
    assert_ptr_equal(pool_get(who_var, NULL), &marks[0]);

    gate_open(&gate);
    ctx_pool_future_release(f);
    ctx_pool_future_release(blocker);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&gate);
    sem_destroy(&cblog.done);
    ctx_var_release(who_var);
}

/* ---------------------------------------------------------------------- */
/* Ownership and lifetime                                                  */
/* ---------------------------------------------------------------------- */

static atomic_int results_released;

static void count_result_release(void *result) {
    (void)result;
    atomic_fetch_add(&results_released, 1);
}

static void test_refcount_and_result_release(void **state) {
    (void)state;
    atomic_store(&results_released, 0);
    ctx_pool_t *pool = new_pool(2);
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .result_release = count_result_release};
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_result, &marks[0], &o, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    assert_ptr_equal(ctx_pool_future_retain(f), f);
    ctx_pool_future_release(f);
    assert_int_equal(atomic_load(&results_released), 0);
    /* The future outlives its pool. */
    ASSERT_RC(ctx_pool_release(pool), 0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_future_result(f, &r), 0);
    assert_ptr_equal(r, &marks[0]);
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_TOO_LATE);
    ctx_pool_future_release(f);
    assert_int_equal(atomic_load(&results_released), 1);

    /* Fire and forget: the result is released when the pool drops it; a
     * failed task's result is not the future's. */
    pool = new_pool(2);
    for (int i = 0; i < 10; i++)
        ASSERT_RC(ctx_pool_submit_ex(pool, task_result, &marks[1], &o, NULL), 0);
    ASSERT_RC(ctx_pool_submit_ex(pool, task_fail, (void *)(intptr_t)CTX_EKEY, &o, NULL), 0);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(atomic_load(&results_released), 11);
}

/* ---------------------------------------------------------------------- */
/* Captured call stacks                                                    */
/* ---------------------------------------------------------------------- */

__attribute__((noinline)) static int submit_from_here(ctx_pool_t *pool,
                                                      const ctx_pool_submit_options_t *o,
                                                      ctx_pool_future_t **f) {
    return ctx_pool_submit_ex(pool, task_nop, NULL, o, f);
}

static void test_stack_capture(void **state) {
    (void)state;
    ctx_pool_t *plain = new_pool(1);
    ctx_pool_t *capturing = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 1, .capture_stack = 1},
                           &capturing),
              0);
    ctx_pool_future_t *none = NULL, *pooled = NULL, *asked = NULL;
    ASSERT_RC(submit_from_here(plain, NULL, &none), 0);
    ASSERT_RC(submit_from_here(capturing, NULL, &pooled), 0);
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .capture_stack = 1};
    ASSERT_RC(submit_from_here(plain, &o, &asked), 0);

    void *const *frames = NULL;
    size_t n = 0;
    char buf[4096];
    size_t len = 0;
    ASSERT_RC(ctx_pool_future_stack(none, &frames, &n), CTX_ENOTFOUND);
    ASSERT_RC(ctx_pool_future_format_stack(none, buf, sizeof buf, &len), CTX_ENOTFOUND);
#if defined(__GLIBC__)
    ctx_pool_future_t *with[] = {pooled, asked};
    for (int i = 0; i < 2; i++) {
        ASSERT_RC(ctx_pool_future_stack(with[i], &frames, &n), 0);
        assert_true(n > 1 && n <= 32);
        assert_non_null(frames[0]);
        ASSERT_RC(ctx_pool_future_format_stack(with[i], buf, sizeof buf, &len), 0);
        assert_int_equal(strlen(buf), len);
        assert_non_null(strstr(buf, "#0 "));
        /* Too small a buffer: truncated, NUL terminated, full length told. */
        char small[8];
        size_t need = 0;
        ASSERT_RC(ctx_pool_future_format_stack(with[i], small, sizeof small, &need),
                  CTX_ETRUNCATED);
        assert_int_equal(need, len);
        assert_int_equal(strlen(small), sizeof small - 1);
    }
#endif
    ASSERT_RC(ctx_pool_future_stack(NULL, &frames, &n), CTX_EINVAL);
    ctx_pool_future_release(none);
    ctx_pool_future_release(pooled);
    ctx_pool_future_release(asked);
    ASSERT_RC(ctx_pool_release(plain), 0);
    ASSERT_RC(ctx_pool_release(capturing), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_outcomes, pool_teardown),
        cmocka_unit_test_teardown(test_wait_timeout, pool_teardown),
        cmocka_unit_test_teardown(test_many_waiters, pool_teardown),
        cmocka_unit_test_teardown(test_wait_self, pool_teardown),
        cmocka_unit_test_teardown(test_cancel_pending, pool_teardown),
        cmocka_unit_test_teardown(test_cancel_running, pool_teardown),
        cmocka_unit_test_teardown(test_done_callbacks, pool_teardown),
        cmocka_unit_test_teardown(test_done_callbacks_on_cancel, pool_teardown),
        cmocka_unit_test_teardown(test_refcount_and_result_release, pool_teardown),
        cmocka_unit_test_teardown(test_stack_capture, pool_teardown),
    };
    int failed = cmocka_run_group_tests_name("pool_future", tests, NULL, NULL);
    ctx_thread_release();
    return failed || off_main_failures();
}
