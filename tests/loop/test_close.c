/* SPDX-License-Identifier: MIT */
/*
 * test_close.c — closing a loop with work still scheduled (run under
 * valgrind: nothing may leak): ready callbacks, timers, the threadsafe
 * inbox, tasks in every waiting state, futures with done-callbacks
 * (completed by another thread after the close), work offloaded to a pool;
 * every arg_release runs exactly once and no callback or step runs after the
 * close.  Threads racing call_soon_threadsafe against the close (run under
 * TSan).  The same over the caller's own uv loop.
 */
#include "loop_test.h"

#include <time.h>

static atomic_int released;
static atomic_int ran_after_close;
static atomic_int closed_flag;

static void count_release(void *arg) {
    (void)arg;
    atomic_fetch_add(&released, 1);
}

static atomic_int offload_released;
static void count_offload_release(void *arg) {
    (void)arg;
    atomic_fetch_add(&offload_released, 1);
}

static void must_not_run(void *arg) {
    (void)arg;
    if (atomic_load(&closed_flag))
        atomic_fetch_add(&ran_after_close, 1);
}

/* An arg_release that tries to schedule while the loop is closing. */
static ctx_loop_t *closing_loop;
static int reschedule_rc;
static void release_and_reschedule(void *arg) {
    count_release(arg);
    reschedule_rc = ctx_loop_call_soon(closing_loop, must_not_run, NULL, NULL, NULL);
}

static void done_must_not_run(ctx_loop_future_t *f, void *user) {
    (void)f;
    must_not_run(user);
}

/* ---- tasks in each waiting state ---- */

typedef struct waiter {
    ctx_loop_t *loop;
    ctx_pool_t *pool;
    ctx_loop_future_t *future;
    ctx_loop_task_t *other;
    int mode;
    int state;
} waiter_t;

static atomic_int gate;

static int blocked_work(void *arg, void **result) {
    (void)arg;
    (void)result;
    while (!atomic_load(&gate)) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int waiter_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    waiter_t *w = arg;
    if (w->state++ > 0) {
        must_not_run(NULL);
        return 0;
    }
    switch (w->mode) {
    case 0:
        return ctx_loop_task_sleep(task, 10000000);
    case 1:
        return ctx_loop_task_await(task, w->future);
    case 2:
        return ctx_loop_task_await(task, ctx_loop_task_future(w->other));
    case 3:
        return ctx_loop_task_yield(task);
    default: {
        ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
        opts.arg_release = count_offload_release;
        return ctx_loop_task_offload(task, w->pool, blocked_work, NULL, &opts);
    }
    }
}

static void *complete_later(void *arg) {
    /* After the close: the callbacks are dropped on this thread. */
    ASSERT_RC(ctx_loop_future_set_result(arg, NULL), 0);
    ctx_thread_release();
    return NULL;
}

static void *post_from_thread(void *arg) {
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, count_release};
    for (int i = 0; i < 5; i++)
        ASSERT_RC(ctx_loop_call_soon_threadsafe(arg, must_not_run, NULL, &opts, NULL), 0);
    ctx_thread_release();
    return NULL;
}

static void test_close_with_everything_pending(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_pool_t *pool;
    ctx_pool_options_t popts = CTX_STRUCT_INIT(ctx_pool_options_t);
    popts.threads = 1;
    ASSERT_RC(ctx_pool_new(&popts, &pool), 0);
    ctx_loop_t *loop = new_loop(NULL);
    atomic_store(&released, 0);
    atomic_store(&ran_after_close, 0);
    atomic_store(&closed_flag, 0);
    atomic_store(&gate, 0);
    atomic_store(&offload_released, 0);
    set_int(x, 1);
    ctx_loop_task_options_t topts = {sizeof(ctx_loop_task_options_t), NULL, count_release, NULL};

    /* Tasks: sleeping, awaiting a future, awaiting a task, yielding,
     * offloaded, and one never started. */
    ctx_loop_future_t *awaited;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &awaited), 0);
    waiter_t w[7];
    ctx_loop_task_t *t[7];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 6; i++) {
        w[i] = (waiter_t){loop, pool, awaited, NULL, i == 5 ? 0 : i, 0};
        if (i == 2)
            w[i].other = t[0];
        ASSERT_RC(ctx_loop_task_new(loop, waiter_step, &w[i], &topts, &t[i]), 0);
    }
    assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) > 0); /* each reaches its wait */
    ctx_context_t *explicit_ctx;
    ASSERT_RC(ctx_context_new(&explicit_ctx), 0);
    ctx_loop_task_options_t eopts = {sizeof(ctx_loop_task_options_t), explicit_ctx, count_release, NULL};
    w[6] = (waiter_t){loop, pool, awaited, NULL, 0, 0};
    ASSERT_RC(ctx_loop_task_new(loop, waiter_step, &w[6], &eopts, &t[6]), 0); /* never started */

    /* Callbacks: ready, timers (one held), done-callbacks. */
    ctx_loop_call_options_t copts = {sizeof(ctx_loop_call_options_t), NULL, count_release};
    ctx_loop_call_options_t ropts = {sizeof(ctx_loop_call_options_t), NULL, release_and_reschedule};
    ctx_loop_handle_t *held;
    closing_loop = loop;
    reschedule_rc = 0;
    ASSERT_RC(ctx_loop_call_soon(loop, must_not_run, NULL, &ropts, NULL), 0);
    ASSERT_RC(ctx_loop_call_soon(loop, must_not_run, NULL, &copts, &held), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 1000000, must_not_run, NULL, &copts, NULL), 0);
    ASSERT_RC(ctx_loop_call_at(loop, 0, must_not_run, NULL, &copts, NULL), 0);
    ctx_loop_future_t *later;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &later), 0);
    ASSERT_RC(ctx_loop_future_add_done_callback(later, done_must_not_run, NULL, &copts), 0);
    ASSERT_RC(ctx_loop_future_add_done_callback(later, done_must_not_run, NULL, &copts), 0);
    ASSERT_RC(ctx_loop_future_add_done_callback(ctx_loop_task_future(t[1]), done_must_not_run, NULL,
                                                &copts),
              0);
    /* The inbox, filled by another thread. */
    pthread_t poster;
    assert_int_equal(pthread_create(&poster, NULL, post_from_thread, loop), 0);
    pthread_join(poster, NULL);

    atomic_store(&closed_flag, 1);
    ASSERT_RC(ctx_loop_close(loop), 0);
    /* 7 tasks' args, 2 ready callbacks, 2 timers, t[1]'s done-callback
     * (t[1] ended, so it was scheduled, and dropped), 5 from the inbox.
     * `later`'s two callbacks wait in its list until it completes. */
    int expected = 7 + 2 + 2 + 1 + 5;
    assert_int_equal(atomic_load(&released), expected);
    ASSERT_RC(reschedule_rc, CTX_ECLOSED); /* scheduling while closing fails */
    for (int i = 0; i < 7; i++) {
        assert_int_equal(ctx_loop_task_done(t[i]), 1);
        ASSERT_RC(ctx_loop_task_result(t[i], NULL), CTX_ECANCELLED);
    }
    assert_int_equal(ctx_loop_future_state(awaited), CTX_LOOP_FUTURE_CANCELLED);
    assert_int_equal(ctx_loop_handle_cancelled(held), 1);
    assert_int_equal(ctx_loop_is_closed(loop), 1);

    /* A future completed by another thread after the close. */
    pthread_t completer;
    assert_int_equal(pthread_create(&completer, NULL, complete_later, later), 0);
    pthread_join(completer, NULL);
    assert_int_equal(atomic_load(&released), expected + 2);

    /* The offloaded work was cancelled if still queued, or finishes once
     * the gate opens: either way its arg comes back exactly once. */
    atomic_store(&gate, 1);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(atomic_load(&offload_released), 1);
    assert_int_equal(atomic_load(&released), expected + 2);
    assert_int_equal(atomic_load(&ran_after_close), 0);

    for (int i = 0; i < 7; i++)
        ctx_loop_task_release(t[i]);
    ctx_loop_handle_release(held);
    ctx_loop_future_release(later);
    ctx_loop_future_release(awaited);
    ctx_context_release(explicit_ctx);
    ctx_loop_release(loop);
    assert_int_equal(get_int(x), 1);
    ctx_var_release(x);
}

/* ---- threads racing the close ---- */

#define RACE_THREADS 4

typedef struct race {
    ctx_loop_t *loop;
    ctx_loop_future_t *enough;
    atomic_int accepted;
    atomic_int rejected;
    atomic_int ran;
    atomic_int freed;
    atomic_int plain_ran; /* fire-and-forget calls that ran */
    int target;
} race_t;

typedef struct race_arg {
    race_t *race;
} race_arg_t;

static void race_callback(void *arg) {
    race_arg_t *a = arg;
    if (atomic_fetch_add(&a->race->ran, 1) + 1 == a->race->target)
        ctx_loop_future_set_result(a->race->enough, NULL);
}

static void race_plain(void *arg) { atomic_fetch_add(&((race_t *)arg)->plain_ran, 1); }

static void race_release(void *arg) {
    race_arg_t *a = arg;
    atomic_fetch_add(&a->race->freed, 1);
    free(a);
}

static void *racer(void *arg) {
    race_t *r = arg;
    ctx_loop_t *loop = ctx_loop_retain(r->loop); /* the memory stays valid */
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, race_release};
    for (;;) {
        race_arg_t *a = malloc(sizeof *a);
        a->race = r;
        int rc = ctx_loop_call_soon_threadsafe(loop, race_callback, a, &opts, NULL);
        if (rc == CTX_ECLOSED) {
            free(a); /* still ours */
            atomic_fetch_add(&r->rejected, 1);
            break;
        }
        ASSERT_RC(rc, 0);
        atomic_fetch_add(&r->accepted, 1);
        /* A fire-and-forget call too: refused by the close or not, it
         * leaves nothing behind (ASan and valgrind check). */
        rc = ctx_loop_call_soon_threadsafe(loop, race_plain, r, NULL, NULL);
        if (rc != 0)
            ASSERT_RC(rc, CTX_ECLOSED);
    }
    ctx_loop_release(loop);
    ctx_thread_release();
    return NULL;
}

static void test_threads_racing_the_close(void **state) {
    (void)state;
    race_t r;
    memset(&r, 0, sizeof r);
    r.loop = new_loop(NULL);
    r.target = SCALED(5000, 300, 500);
    ASSERT_RC(ctx_loop_future_new(r.loop, NULL, &r.enough), 0);
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer, &r), 0);
    ASSERT_RC(ctx_loop_run_until_done(r.loop, r.enough), 0);
    ASSERT_RC(ctx_loop_close(r.loop), 0); /* the threads are still posting */
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&r.rejected), RACE_THREADS);
    assert_true(atomic_load(&r.ran) >= r.target);
    /* Every accepted callback gave its arg back exactly once: ran, or
     * dropped by the close. */
    assert_int_equal(atomic_load(&r.freed), atomic_load(&r.accepted));
    assert_true(atomic_load(&r.plain_ran) > 0);
    ctx_loop_future_release(r.enough);
    ctx_loop_release(r.loop);
}

/* ---- the caller's own uv loop ---- */

static int long_sleeper(ctx_loop_task_t *task, void *arg, void **result) {
    (void)arg;
    (void)result;
    return ctx_loop_task_sleep(task, 10000000);
}

static void test_close_over_a_user_loop(void **state) {
    (void)state;
    uv_loop_t uv;
    assert_int_equal(uv_loop_init(&uv), 0);
    ctx_loop_t *loop;
    ASSERT_RC(ctx_loop_new(&uv, &loop), 0);
    atomic_store(&released, 0);
    atomic_store(&closed_flag, 1);
    ctx_loop_call_options_t copts = {sizeof(ctx_loop_call_options_t), NULL, count_release};
    ctx_loop_task_options_t topts = {sizeof(ctx_loop_task_options_t), NULL, count_release, NULL};
    ASSERT_RC(ctx_loop_task_new(loop, long_sleeper, NULL, &topts, NULL), 0);
    assert_true(uv_run(&uv, UV_RUN_NOWAIT) > 0);
    ASSERT_RC(ctx_loop_call_later(loop, 1000000, must_not_run, NULL, &copts, NULL), 0);
    ASSERT_RC(ctx_loop_call_soon(loop, must_not_run, NULL, &copts, NULL), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop); /* its handles keep its memory until they close */
    assert_int_equal(atomic_load(&released), 3);
    assert_int_equal(uv_run(&uv, UV_RUN_NOWAIT), 0); /* the close callbacks */
    assert_int_equal(uv_loop_close(&uv), 0);
    assert_int_equal(atomic_load(&ran_after_close), 0);
}

/* Fire-and-forget calls (no options, no handle) waiting when the loop
 * closes, ready, in the timer heap or in the inbox: they never run, and the values they captured are released by
 * the close, not later (here they hold the only reference to one). */
static atomic_int values_released;
static void count_value_release(void *value, void *user) {
    (void)value;
    (void)user;
    atomic_fetch_add(&values_released, 1);
}

typedef struct poster {
    ctx_loop_t *loop;
    ctx_var_t *var;
} poster_t;

/* Posts two fire-and-forget calls in a context of its own holding a value,
 * then drops that context: the calls hold the value alone. */
static void *post_fire_and_forget(void *arg) {
    poster_t *p = arg;
    set_int(p->var, 2);
    for (int i = 0; i < 2; i++)
        ASSERT_RC(ctx_loop_call_soon_threadsafe(p->loop, must_not_run, NULL, NULL, NULL), 0);
    ctx_thread_release();
    return NULL;
}

static void test_close_drops_fire_and_forget_calls(void **state) {
    (void)state;
    static const ctx_value_ops_t ops = {.size = sizeof(ctx_value_ops_t), .release = count_value_release};
    ctx_var_options_t vo = {.size = sizeof(ctx_var_options_t), .ops = &ops};
    ctx_var_t *x = NULL;
    ASSERT_RC(ctx_var_new("x", &vo, &x), 0);
    ctx_loop_t *loop;
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
    atomic_store(&values_released, 0);
    atomic_store(&closed_flag, 1);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    set_int(x, 1);
    for (int i = 0; i < 3; i++)
        ASSERT_RC(ctx_loop_call_soon(loop, must_not_run, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 1000000, must_not_run, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_at(loop, 0, must_not_run, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    ctx_context_release(ctx); /* the calls hold the value now */
    poster_t p = {loop, x};
    pthread_t poster;
    assert_int_equal(pthread_create(&poster, NULL, post_fire_and_forget, &p), 0);
    pthread_join(poster, NULL);
    assert_int_equal(atomic_load(&values_released), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    assert_int_equal(atomic_load(&values_released), 2); /* ours and the poster's */
    assert_int_equal(atomic_load(&ran_after_close), 0);
    ctx_loop_release(loop);
    ctx_var_release(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_close_with_everything_pending, release_thread),
        cmocka_unit_test_teardown(test_close_drops_fire_and_forget_calls, release_thread),
        cmocka_unit_test_teardown(test_threads_racing_the_close, release_thread),
        cmocka_unit_test_teardown(test_close_over_a_user_loop, release_thread),
    };
    return cmocka_run_group_tests_name("loop: closing", tests, NULL, NULL);
}
