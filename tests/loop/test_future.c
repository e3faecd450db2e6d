/* SPDX-License-Identifier: MIT */
/*
 * test_future.c — loop futures: the state machine and its error codes,
 * result ownership, done-callbacks (in the context captured when each was
 * added, in order, on the loop and never inside the completing call), a
 * future dying with callbacks still pending, and completion from other
 * threads (run under TSan): many threads complete futures that tasks and
 * done-callbacks wait on, while adding callbacks of their own.
 */
#include "loop_test.h"

static int results_released;
static void release_result(void *result) {
    (void)result;
    results_released++;
}

static void test_states_and_errors(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_loop_future_options_t opts = {sizeof(ctx_loop_future_options_t), release_result};
    ctx_loop_future_t *f, *g, *h;
    results_released = 0;
    ASSERT_RC(ctx_loop_future_new(loop, &opts, &f), 0);
    assert_ptr_equal(ctx_loop_future_loop(f), loop);
    assert_int_equal(ctx_loop_future_state(f), CTX_LOOP_FUTURE_PENDING);
    assert_int_equal(ctx_loop_future_done(f), 0);
    ASSERT_RC(ctx_loop_future_result(f, NULL), CTX_ENOTDONE);
    ASSERT_RC(ctx_loop_future_set_result(f, IV(1)), 0);
    ASSERT_RC(ctx_loop_future_set_result(f, IV(2)), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_set_error(f, CTX_EINVAL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_cancel(f), 0);
    void *res = NULL;
    ASSERT_RC(ctx_loop_future_result(f, &res), 0);
    assert_ptr_equal(res, IV(1));
    assert_int_equal(ctx_loop_future_state(f), CTX_LOOP_FUTURE_COMPLETED);

    ASSERT_RC(ctx_loop_future_new(loop, &opts, &g), 0);
    ASSERT_RC(ctx_loop_future_set_error(g, 0), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_set_error(g, 5), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_set_error(g, CTX_ETIMEDOUT), 0);
    ASSERT_RC(ctx_loop_future_result(g, &res), CTX_ETIMEDOUT);
    assert_int_equal(ctx_loop_future_state(g), CTX_LOOP_FUTURE_FAILED);

    ASSERT_RC(ctx_loop_future_new(loop, &opts, &h), 0);
    ASSERT_RC(ctx_loop_future_cancel(h), 1);
    ASSERT_RC(ctx_loop_future_cancel(h), 0);
    ASSERT_RC(ctx_loop_future_set_result(h, IV(3)), CTX_ECANCELLED); /* stays ours */
    ASSERT_RC(ctx_loop_future_set_error(h, CTX_ETIMEDOUT), CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_future_result(h, NULL), CTX_ECANCELLED);
    assert_int_equal(ctx_loop_future_state(h), CTX_LOOP_FUTURE_CANCELLED);

    ctx_loop_future_t *k;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &k), 0);
    ASSERT_RC(ctx_loop_future_set_error(k, CTX_ECANCELLED), 0); /* = cancel */
    assert_int_equal(ctx_loop_future_state(k), CTX_LOOP_FUTURE_CANCELLED);
    ctx_loop_future_release(k);

    /* NULLs. */
    ASSERT_RC(ctx_loop_future_new(NULL, NULL, &k), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_new(loop, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_set_result(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_set_error(NULL, CTX_EINVAL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_cancel(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_result(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_add_done_callback(NULL, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_add_done_callback(f, NULL, NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_loop_future_state(NULL), CTX_LOOP_FUTURE_PENDING);
    assert_null(ctx_loop_future_loop(NULL));
    ctx_loop_future_release(NULL);

    /* Only a completed future's result is released, once, at the end. */
    assert_ptr_equal(ctx_loop_future_retain(f), f);
    ctx_loop_future_release(f);
    assert_int_equal(results_released, 0);
    ctx_loop_future_release(f);
    ctx_loop_future_release(g);
    ctx_loop_future_release(h);
    assert_int_equal(results_released, 1);
    close_loop(loop);
}

/* ---- done-callbacks ---- */

typedef struct cb_seen {
    ctx_var_t *var;
    int *clock;
    int order;
    long value;
    void *result;
    int rc;
    int released;
} cb_seen_t;

static void on_done(ctx_loop_future_t *f, void *user) {
    cb_seen_t *s = user;
    s->order = ++*s->clock;
    s->value = get_int(s->var);
    s->rc = ctx_loop_future_result(f, &s->result);
    set_int(s->var, 1000 + s->order); /* stays in the callback's copy */
}

static void seen_release(void *user) { ((cb_seen_t *)user)->released++; }

static void test_done_callbacks(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    int clock = 0;
    cb_seen_t a = {x, &clock, 0, 0, NULL, 0, 0}, b = a, c = a, d = a;
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, seen_release};
    set_int(x, 1);
    ASSERT_RC(ctx_loop_future_add_done_callback(f, on_done, &a, &opts), 0);
    set_int(x, 2);
    ASSERT_RC(ctx_loop_future_add_done_callback(f, on_done, &b, &opts), 0);
    /* An explicit context, used as is. */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, x, IV(30)), 0);
    ctx_loop_call_options_t in_ctx = {sizeof(ctx_loop_call_options_t), ctx, seen_release};
    ASSERT_RC(ctx_loop_future_add_done_callback(f, on_done, &c, &in_ctx), 0);
    set_int(x, 3);
    ASSERT_RC(ctx_loop_future_set_result(f, IV(9)), 0);
    assert_int_equal(clock, 0); /* never inside set_result */
    /* Added after the future is done: scheduled, still not run here. */
    ASSERT_RC(ctx_loop_future_add_done_callback(f, on_done, &d, &opts), 0);
    assert_int_equal(clock, 0);
    ctx_loop_future_release(f); /* the callbacks keep it alive */
    run_loop(loop);
    assert_int_equal(a.order, 1);
    assert_int_equal(b.order, 2);
    assert_int_equal(c.order, 3);
    assert_int_equal(d.order, 4);
    assert_int_equal(a.value, 1);
    assert_int_equal(b.value, 2);
    assert_int_equal(c.value, 30);
    assert_int_equal(d.value, 3);
    assert_ptr_equal(a.result, IV(9));
    assert_ptr_equal(d.result, IV(9));
    assert_int_equal(a.released + b.released + c.released + d.released, 4);
    assert_int_equal(ctx_get_int(ctx, x), 1003); /* c's set landed in ctx */
    assert_int_equal(get_int(x), 3);
    ctx_context_release(ctx);
    close_loop(loop);
    ctx_var_release(x);
}

static void test_pending_future_dies_with_callbacks(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    int clock = 0;
    cb_seen_t a = {x, &clock, 0, 0, NULL, 0, 0};
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, seen_release};
    ASSERT_RC(ctx_loop_future_add_done_callback(f, on_done, &a, &opts), 0);
    ctx_loop_future_release(f); /* never completed */
    assert_int_equal(a.released, 1);
    run_loop(loop);
    assert_int_equal(clock, 0);
    close_loop(loop);
    ctx_var_release(x);
}

/* ---- completion from other threads ---- */

#define XT_THREADS 4

typedef struct xt_shared {
    ctx_loop_t *loop;
    ctx_var_t *var;
    ctx_loop_future_t **futures; /* per_thread * XT_THREADS */
    int per_thread;
    pthread_barrier_t start;
    atomic_int callbacks_wrong;
    atomic_int callbacks_run;
} xt_shared_t;

typedef struct xt_thread {
    xt_shared_t *s;
    int index;
} xt_thread_t;

/* Added by a completing thread: runs on the loop in that thread's context. */
static void xt_thread_callback(ctx_loop_future_t *f, void *user) {
    xt_thread_t *me = user;
    if (!ctx_loop_future_done(f) || get_int(me->s->var) != 100 + me->index)
        atomic_fetch_add(&me->s->callbacks_wrong, 1);
    atomic_fetch_add(&me->s->callbacks_run, 1);
}

static void *xt_completer(void *arg) {
    xt_thread_t *me = arg;
    xt_shared_t *s = me->s;
    set_int(s->var, 100 + me->index);
    pthread_barrier_wait(&s->start);
    for (int i = 0; i < s->per_thread; i++) {
        ctx_loop_future_t *f = s->futures[me->index * s->per_thread + i];
        if (i % 2)
            ASSERT_RC(ctx_loop_future_add_done_callback(f, xt_thread_callback, me, NULL), 0);
        if (i % 7 == 3)
            ASSERT_RC(ctx_loop_future_set_error(f, CTX_ETIMEDOUT), 0);
        else
            ASSERT_RC(ctx_loop_future_set_result(f, IV(me->index * 100000 + i)), 0);
        if (i % 5 == 0) /* after completion: scheduled at once */
            ASSERT_RC(ctx_loop_future_add_done_callback(f, xt_thread_callback, me, NULL), 0);
    }
    ctx_thread_release();
    return NULL;
}

typedef struct xt_task {
    xt_shared_t *s;
    ctx_loop_future_t *f;
    long index;
    long expect;
    int fails;
    int state;
    int wrong;
} xt_task_t;

static int xt_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    xt_task_t *t = arg;
    if (t->state++ == 0) {
        set_int(t->s->var, t->index);
        return ctx_loop_task_await(task, t->f);
    }
    void *res = NULL;
    int rc = ctx_loop_task_awaited(task, &res);
    if (get_int(t->s->var) != t->index)
        t->wrong++;
    if (t->fails ? rc != CTX_ETIMEDOUT : (rc != 0 || res != IV(t->expect)))
        t->wrong++;
    return 0;
}

static void on_loop_done(ctx_loop_future_t *f, void *user) {
    (void)f;
    (*(int *)user)++;
}

static void test_completion_from_other_threads(void **state) {
    (void)state;
    xt_shared_t s;
    memset(&s, 0, sizeof s);
    s.loop = new_loop(NULL);
    s.var = new_var("v");
    s.per_thread = SCALED(500, 60, 100);
    int n = s.per_thread * XT_THREADS;
    s.futures = calloc((size_t)n, sizeof *s.futures);
    xt_task_t *tasks = calloc((size_t)n, sizeof *tasks);
    ctx_loop_task_t **handles = calloc((size_t)n, sizeof *handles);
    int loop_callbacks = 0;
    for (int i = 0; i < n; i++) {
        ASSERT_RC(ctx_loop_future_new(s.loop, NULL, &s.futures[i]), 0);
        int k = i % s.per_thread;
        tasks[i] = (xt_task_t){&s, s.futures[i], i, (i / s.per_thread) * 100000 + k,
                               k % 7 == 3, 0, 0};
        ASSERT_RC(ctx_loop_task_new(s.loop, xt_step, &tasks[i], NULL, &handles[i]), 0);
        ASSERT_RC(ctx_loop_future_add_done_callback(s.futures[i], on_loop_done, &loop_callbacks,
                                                    NULL),
                  0);
    }
    /* Let every task reach its await before the threads start. */
    assert_true(ctx_loop_run(s.loop, UV_RUN_NOWAIT) >= 0);
    pthread_barrier_init(&s.start, NULL, XT_THREADS + 1);
    pthread_t th[XT_THREADS];
    xt_thread_t me[XT_THREADS];
    for (int i = 0; i < XT_THREADS; i++) {
        me[i] = (xt_thread_t){&s, i};
        assert_int_equal(pthread_create(&th[i], NULL, xt_completer, &me[i]), 0);
    }
    pthread_barrier_wait(&s.start);
    /* The pending tasks keep the loop waiting for the other threads. */
    run_loop(s.loop);
    for (int i = 0; i < XT_THREADS; i++)
        pthread_join(th[i], NULL);
    run_loop(s.loop); /* callbacks added by the threads after the last task */
    pthread_barrier_destroy(&s.start);
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        wrong += tasks[i].wrong;
        assert_int_equal(ctx_loop_task_done(handles[i]), 1);
        ASSERT_RC(ctx_loop_task_result(handles[i], NULL), 0);
        ctx_loop_task_release(handles[i]);
        ctx_loop_future_release(s.futures[i]);
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(loop_callbacks, n);
    int expected_thread_callbacks = 0;
    for (int i = 0; i < s.per_thread; i++)
        expected_thread_callbacks += (i % 2) + (i % 5 == 0);
    assert_int_equal(atomic_load(&s.callbacks_run), expected_thread_callbacks * XT_THREADS);
    assert_int_equal(atomic_load(&s.callbacks_wrong), 0);
    assert_int_equal(get_int(s.var), -1);
    free(handles);
    free(tasks);
    free(s.futures);
    close_loop(s.loop);
    ctx_var_release(s.var);
}

/* ---- run_until_done, woken by a completion that hands nothing over ---- */

typedef struct completer {
    ctx_loop_future_t *future;
    int round;
} completer_t;

static void *complete_later(void *arg) {
    completer_t *c = arg;
    /* Sometimes at once, sometimes after the loop went to sleep in poll. */
    if (c->round % 2) {
        struct timespec nap = {0, 2000000};
        nanosleep(&nap, NULL);
    }
    ctx_loop_future_set_result(c->future, IV(c->round));
    return NULL;
}

static void test_run_until_done_wakes_for_another_thread(void **state) {
    (void)state;
    /* The future has no done-callback, nothing else is scheduled: only the
     * completing thread can wake the loop (this hung before it did). */
    ctx_loop_t *loop = new_loop(NULL);
    for (int round = 0; round < SCALED(40, 6, 10); round++) {
        completer_t c = {NULL, round};
        ASSERT_RC(ctx_loop_future_new(loop, NULL, &c.future), 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, complete_later, &c), 0);
        ASSERT_RC(ctx_loop_run_until_done(loop, c.future), 0);
        void *res = NULL;
        ASSERT_RC(ctx_loop_future_result(c.future, &res), 0);
        assert_ptr_equal(res, IV(round));
        pthread_join(t, NULL);
        ctx_loop_future_release(c.future);
    }
    close_loop(loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_run_until_done_wakes_for_another_thread, release_thread),
        cmocka_unit_test_teardown(test_states_and_errors, release_thread),
        cmocka_unit_test_teardown(test_done_callbacks, release_thread),
        cmocka_unit_test_teardown(test_pending_future_dies_with_callbacks, release_thread),
        cmocka_unit_test_teardown(test_completion_from_other_threads, release_thread),
    };
    return cmocka_run_group_tests_name("loop: futures", tests, NULL, NULL);
}
