/* SPDX-License-Identifier: MIT */
/*
 * test_cancel.c — the loop and cancellation scopes (ctxvar/cancel.h):
 *   - call_soon / call_later / call_at / call_soon_threadsafe callbacks
 *     (captured or explicit contexts) whose scope is cancelled when they
 *     become due never run: their arg_release does, their handle reports
 *     cancelled; siblings in other scopes and done-callbacks run;
 *   - a deadline that passed while the timer thread was held up (so nobody
 *     cancelled the scope yet) stops callbacks and unstarted tasks all the
 *     same: the loop reads the clock;
 *   - a task whose scope is cancelled sees the scope's error from
 *     ctx_loop_task_awaited at its next step; one that never ran ends
 *     CANCELLED with it, without a step;
 *   - a task sleeping or awaiting a future is woken when its scope is
 *     cancelled from another thread or by its deadline (the timer thread):
 *     sleeps are an hour long, so a missing wake-up hangs the test until
 *     ctest's timeout instead of passing; the awaited future is abandoned,
 *     not cancelled;
 *   - waiting again in a cancelled scope ends at once; a step that detaches
 *     (ctx_cancel_enter(NULL)) waits normally again (the task follows the
 *     scope its steps leave in its context);
 *   - many tasks woken while the loop runs (TSan), and a loop closed with a
 *     wake-up pending (leaks: ASan, valgrind).
 */
#include "loop_test.h"

#include <ctxvar/cancel.h>
#include <time.h>

#define MS ((int64_t)1000000)
#define HOUR_MS ((uint64_t)3600 * 1000)

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void nap(void) {
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

static int teardown(void **state) {
    for (int i = 0; i < 3000 && ctx_cancel_timer_release() == CTX_EBUSY; i++)
        nap(); /* a deadline still pending in a scope freed late */
    return release_thread(state);
}

static ctx_cancel_options_t timeout_opts(int64_t ns) {
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = ns;
    return o;
}

/* ---- callbacks that count ---- */

typedef struct counted {
    atomic_int ran;
    atomic_int released;
    atomic_llong ran_at; /* CLOCK_MONOTONIC ns */
} counted_t;

static void count_run(void *arg) {
    counted_t *c = arg;
    atomic_store(&c->ran_at, (long long)now_ns());
    atomic_fetch_add(&c->ran, 1);
}

static void count_release(void *arg) { atomic_fetch_add(&((counted_t *)arg)->released, 1); }

static ctx_loop_call_options_t counting(ctx_context_t *ctx) {
    ctx_loop_call_options_t o = CTX_STRUCT_INIT(ctx_loop_call_options_t);
    o.arg_release = count_release;
    o.context = ctx;
    return o;
}

static void done_count(ctx_loop_future_t *f, void *user) {
    (void)f;
    count_run(user);
}

typedef struct threadsafe_call {
    ctx_loop_t *loop;
    counted_t *c;
    ctx_cancel_scope_t *scope; /* the caller's scope: entered on the thread */
} threadsafe_call_t;

static void *call_from_thread(void *arg) {
    threadsafe_call_t *tc = arg;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter(tc->scope, &tok), 0);
    ctx_loop_call_options_t o = counting(NULL);
    ASSERT_RC(ctx_loop_call_soon_threadsafe(tc->loop, count_run, tc->c, &o, NULL), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    return NULL;
}

/* Callbacks scheduled in a scope that is cancelled before they are due
 * never run; the same kinds in a sibling scope, and done-callbacks in the
 * cancelled one, do. */
static void test_calls_in_a_cancelled_scope_do_not_run(void **state) {
    (void)state;
    enum { SOON, SOON_HELD, LATER, AT, EXPLICIT, THREADSAFE, N };
    ctx_loop_t *loop = new_loop(NULL);
    counted_t stopped[N], alive[N], done;
    memset(stopped, 0, sizeof stopped);
    memset(alive, 0, sizeof alive);
    memset(&done, 0, sizeof done);
    ctx_loop_future_t *fut = NULL;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &fut), 0);
    ctx_loop_handle_t *held[2] = {NULL, NULL};
    counted_t plain[2], plain_later[2]; /* fire-and-forget: no options, no handle */
    memset(plain, 0, sizeof plain);
    memset(plain_later, 0, sizeof plain_later);

    ctx_cancel_scope_t *scope[2] = {NULL, NULL}; /* [0] is cancelled */
    for (int k = 0; k < 2; k++) {
        counted_t *c = k == 0 ? stopped : alive;
        ctx_token_t *tok = NULL;
        ASSERT_RC(ctx_cancel_enter_child(NULL, &scope[k], &tok), 0);
        ASSERT_RC(ctx_loop_call_soon(loop, count_run, &plain[k], NULL, NULL), 0);
        ASSERT_RC(ctx_loop_call_later(loop, 2, count_run, &plain_later[k], NULL, NULL), 0);
        ctx_loop_call_options_t o = counting(NULL);
        ASSERT_RC(ctx_loop_call_soon(loop, count_run, &c[SOON], &o, NULL), 0);
        ASSERT_RC(ctx_loop_call_soon(loop, count_run, &c[SOON_HELD], &o, &held[k]), 0);
        ASSERT_RC(ctx_loop_call_later(loop, 2, count_run, &c[LATER], &o, NULL), 0);
        ASSERT_RC(ctx_loop_call_at(loop, ctx_loop_time(loop), count_run, &c[AT], &o, NULL), 0);
        ctx_context_t *ctx = NULL; /* an explicit context in the same scope */
        ASSERT_RC(ctx_context_copy_current(&ctx), 0);
        ctx_loop_call_options_t e = counting(ctx);
        ASSERT_RC(ctx_loop_call_soon(loop, count_run, &c[EXPLICIT], &e, NULL), 0);
        ctx_context_release(ctx);
        threadsafe_call_t tc = {loop, &c[THREADSAFE], scope[k]};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, call_from_thread, &tc), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        if (k == 0) {
            ctx_loop_call_options_t d = counting(NULL);
            ASSERT_RC(ctx_loop_future_add_done_callback(fut, done_count, &done, &d), 0);
        }
        ASSERT_RC(ctx_cancel_exit(tok), 0);
    }
    ASSERT_RC(ctx_cancel_scope_cancel(scope[0], NULL), 0);
    ASSERT_RC(ctx_loop_future_set_result(fut, NULL), 0);
    run_loop(loop);

    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&stopped[i].ran), 0);
        assert_int_equal(atomic_load(&stopped[i].released), 1);
        assert_int_equal(atomic_load(&alive[i].ran), 1);
        assert_int_equal(atomic_load(&alive[i].released), 1);
    }
    assert_int_equal(atomic_load(&plain[0].ran), 0);
    assert_int_equal(atomic_load(&plain[1].ran), 1);
    assert_int_equal(atomic_load(&plain_later[0].ran), 0);
    assert_int_equal(atomic_load(&plain_later[1].ran), 1);
    assert_int_equal(ctx_loop_handle_cancelled(held[0]), 1);
    assert_int_equal(ctx_loop_handle_cancelled(held[1]), 0);
    assert_int_equal(atomic_load(&done.ran), 1); /* a done-callback reports */
    assert_int_equal(atomic_load(&done.released), 1);
    for (int k = 0; k < 2; k++) {
        ctx_loop_handle_release(held[k]);
        ctx_cancel_scope_release(scope[k]);
    }
    ctx_loop_future_release(fut);
    close_loop(loop);
}

/* ---- a timer thread held up ---- */

typedef struct hold {
    atomic_int inside;
    atomic_int open;
    pthread_t main_thread;
    ctx_cancel_scope_t *scope;
    ctx_cancel_callback_t cb;
} hold_t;

static void hold_timer_thread(void *arg) {
    hold_t *h = arg;
    if (pthread_equal(pthread_self(), h->main_thread))
        return; /* ran at registration: that deadline came first */
    atomic_store(&h->inside, 1);
    while (!atomic_load(&h->open))
        nap();
}

/* Blocks the timer thread in a callback until hold_release. */
static void hold_timer(hold_t *h) {
    atomic_init(&h->inside, 0);
    atomic_init(&h->open, 0);
    h->main_thread = pthread_self();
    for (int64_t timeout = 5 * MS;; timeout *= 2) {
        ctx_cancel_options_t o = timeout_opts(timeout);
        ASSERT_RC(ctx_cancel_scope_new(NULL, &o, &h->scope), 0);
        int rc = ctx_cancel_callback_init_wakeup(&h->cb, h->scope, hold_timer_thread, h);
        if (rc == 0)
            break;
        ASSERT_RC(rc, CTX_CANCEL_CALLBACK_RAN);
        ASSERT_RC(ctx_cancel_callback_clear(&h->cb), CTX_CANCEL_CALLBACK_RAN);
        ctx_cancel_scope_release(h->scope);
    }
    while (!atomic_load(&h->inside))
        nap();
}

static void hold_release(hold_t *h) {
    atomic_store(&h->open, 1);
    ASSERT_RC(ctx_cancel_callback_clear(&h->cb), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(h->scope);
}

typedef struct stepper {
    int steps;
    int codes[8]; /* ctx_loop_task_awaited at each step */
    int64_t first_step_at;
    int released;
} stepper_t;

static void stepper_release(void *arg) { ((stepper_t *)arg)->released++; }

static int step_record(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    stepper_t *s = arg;
    if (s->steps == 0)
        s->first_step_at = now_ns();
    s->codes[s->steps++] = ctx_loop_task_awaited(task, NULL);
    return 0;
}

/* The deadline passes while the timer thread cannot fire it: the scope
 * still reports active, yet nothing of it starts on the loop. */
static void test_nothing_starts_after_the_deadline(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    hold_t hold;
    hold_timer(&hold);
    ctx_cancel_options_t o = timeout_opts(20 * MS);
    ctx_cancel_scope_t *scope = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(&o, &scope, &tok), 0);
    int64_t deadline = 0;
    ASSERT_RC(ctx_cancel_scope_deadline(scope, &deadline), 0);

    counted_t soon, later;
    memset(&soon, 0, sizeof soon);
    memset(&later, 0, sizeof later);
    ctx_loop_call_options_t co = counting(NULL);
    ASSERT_RC(ctx_loop_call_soon(loop, count_run, &soon, &co, NULL), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 1, count_run, &later, &co, NULL), 0);
    stepper_t st;
    memset(&st, 0, sizeof st);
    ctx_loop_task_options_t to = CTX_STRUCT_INIT(ctx_loop_task_options_t);
    to.arg_release = stepper_release;
    ctx_loop_task_t *task = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, step_record, &st, &to, &task), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);

    while (now_ns() <= deadline)
        nap();
    ASSERT_RC(ctx_cancel_scope_error(scope), 0); /* nobody cancelled it yet */
    run_loop(loop);
    assert_int_equal(atomic_load(&soon.ran), 0);
    assert_int_equal(atomic_load(&soon.released), 1);
    assert_int_equal(atomic_load(&later.ran), 0);
    assert_int_equal(atomic_load(&later.released), 1);
    assert_int_equal(st.steps, 0); /* never started */
    assert_int_equal(st.released, 1);
    assert_int_equal(ctx_loop_future_state(ctx_loop_task_future(task)), CTX_LOOP_FUTURE_CANCELLED);
    ASSERT_RC(ctx_loop_task_result(task, NULL), CTX_EDEADLINE);

    hold_release(&hold);
    ASSERT_RC(ctx_cancel_scope_wait(scope, -1), CTX_EDEADLINE);
    ctx_loop_task_release(task);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* ---- tasks ---- */

typedef struct sleeper {
    int steps;
    int codes[8];
    atomic_int waiting;        /* set once the first wait is armed */
    ctx_loop_future_t *await;  /* await this instead of sleeping, if set */
    int detach_at;             /* step that detaches (0: never) */
    ctx_token_t *detached;
    int64_t woke_at;
} sleeper_t;

/* Step 0 arms a wait (an hour's sleep, or `await`); each later step
 * records what it was woken with; it ends with that code, or, if it
 * detaches, waits once more (1 ms) outside the scope and ends with 0. */
static int step_sleeper(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    sleeper_t *s = arg;
    int code = ctx_loop_task_awaited(task, NULL);
    s->codes[s->steps++] = code;
    if (s->steps == 1) {
        int r = s->await ? ctx_loop_task_await(task, s->await) : ctx_loop_task_sleep(task, HOUR_MS);
        atomic_store(&s->waiting, 1);
        return r;
    }
    s->woke_at = now_ns();
    if (s->detach_at && s->steps == s->detach_at) {
        ASSERT_RC(ctx_cancel_enter(NULL, &s->detached), 0);
        return ctx_loop_task_sleep(task, 1);
    }
    if (s->detached) {
        ASSERT_RC(ctx_cancel_exit(s->detached), 0);
        s->detached = NULL;
        return code;
    }
    if (s->detach_at && s->steps < s->detach_at)
        return ctx_loop_task_sleep(task, HOUR_MS); /* again, still cancelled */
    return code;
}

typedef struct canceller {
    atomic_int *waiting; /* cancels once *waiting >= want */
    ctx_cancel_scope_t *scope;
    int want;
} canceller_t;

static void *cancel_when_waiting(void *arg) {
    canceller_t *c = arg;
    while (atomic_load(c->waiting) < c->want)
        nap();
    ASSERT_RC(ctx_cancel_scope_cancel(c->scope, NULL), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    return NULL;
}

/* A task made inside a scope; returns it (the caller's reference). */
static ctx_loop_task_t *task_in(ctx_loop_t *loop, ctx_cancel_scope_t *scope, sleeper_t *s) {
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter(scope, &tok), 0);
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, step_sleeper, s, NULL, &t), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    return t;
}

/* An hour's sleep ends when another thread cancels the scope: the next step
 * sees CTX_ECANCELLED and the task ends cancelled. */
static void test_sleep_wakes_on_cancel_from_another_thread(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_scope_new(NULL, NULL, &scope), 0);
    sleeper_t s;
    memset(&s, 0, sizeof s);
    ctx_loop_task_t *t = task_in(loop, scope, &s);
    canceller_t c = {&s.waiting, scope, 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &c), 0);
    run_loop(loop); /* returns once the task ended */
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.steps, 2);
    ASSERT_RC(s.codes[0], 0);
    ASSERT_RC(s.codes[1], CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    assert_int_equal(ctx_loop_future_state(ctx_loop_task_future(t)), CTX_LOOP_FUTURE_CANCELLED);
    ctx_loop_task_release(t);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* The deadline (fired by the timer thread) wakes an hour's sleep with
 * CTX_EDEADLINE, and the step that sees it starts after the deadline. */
static void test_sleep_wakes_at_the_deadline(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_cancel_options_t o = timeout_opts(10 * MS);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_scope_new(NULL, &o, &scope), 0);
    int64_t deadline = 0;
    ASSERT_RC(ctx_cancel_scope_deadline(scope, &deadline), 0);
    sleeper_t s;
    memset(&s, 0, sizeof s);
    ctx_loop_task_t *t = task_in(loop, scope, &s);
    run_loop(loop);
    /* 0: the deadline came before the first step (a slow machine) */
    assert_true(s.steps == 0 || s.steps == 2);
    if (s.steps == 2) {
        ASSERT_RC(s.codes[1], CTX_EDEADLINE);
        assert_true(s.woke_at >= deadline);
    }
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_EDEADLINE);
    assert_int_equal(ctx_loop_future_state(ctx_loop_task_future(t)), CTX_LOOP_FUTURE_CANCELLED);
    ctx_loop_task_release(t);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* A task awaiting a future (outside its scope) abandons it when the scope
 * is cancelled: the future stays pending and usable. */
static void test_await_abandons_the_future(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_loop_future_t *fut = NULL;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &fut), 0);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_scope_new(NULL, NULL, &scope), 0);
    sleeper_t s;
    memset(&s, 0, sizeof s);
    s.await = fut;
    ctx_loop_task_t *t = task_in(loop, scope, &s);
    canceller_t c = {&s.waiting, scope, 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &c), 0);
    run_loop(loop);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.steps, 2);
    ASSERT_RC(s.codes[1], CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    assert_int_equal(ctx_loop_future_state(fut), CTX_LOOP_FUTURE_PENDING); /* abandoned */
    counted_t done;
    memset(&done, 0, sizeof done);
    ASSERT_RC(ctx_loop_future_add_done_callback(fut, done_count, &done, NULL), 0);
    ASSERT_RC(ctx_loop_future_set_result(fut, IV(7)), 0);
    run_loop(loop);
    assert_int_equal(atomic_load(&done.ran), 1);
    ctx_loop_task_release(t);
    ctx_loop_future_release(fut);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* Waiting again in the cancelled scope ends at once (CTX_ECANCELLED
 * again); after the step detaches (ctx_cancel_enter(NULL)), a wait runs
 * its course (0), and the task completes. */
static void test_wait_again_and_detach(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_scope_new(NULL, NULL, &scope), 0);
    sleeper_t s;
    memset(&s, 0, sizeof s);
    s.detach_at = 3;
    ctx_loop_task_t *t = task_in(loop, scope, &s);
    canceller_t c = {&s.waiting, scope, 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &c), 0);
    run_loop(loop);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.steps, 4);
    ASSERT_RC(s.codes[0], 0);
    ASSERT_RC(s.codes[1], CTX_ECANCELLED); /* woken from the first hour */
    ASSERT_RC(s.codes[2], CTX_ECANCELLED); /* the second hour ended at once */
    ASSERT_RC(s.codes[3], 0);              /* detached: slept its 1 ms */
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0);
    ctx_loop_task_release(t);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* A task with an explicit context is governed by that context's scope. */
static void test_explicit_context_task(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_context_t *ctx = NULL;
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_context_new(NULL, NULL, &ctx, &scope), 0);
    sleeper_t s;
    memset(&s, 0, sizeof s);
    ctx_loop_task_options_t to = CTX_STRUCT_INIT(ctx_loop_task_options_t);
    to.context = ctx;
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, step_sleeper, &s, &to, &t), 0);
    canceller_t c = {&s.waiting, scope, 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &c), 0);
    run_loop(loop);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.steps, 2);
    ASSERT_RC(s.codes[1], CTX_ECANCELLED);
    ctx_loop_task_release(t);
    ctx_context_release(ctx);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* A task cancelled between two steps by a callback on the loop (the
 * callback's context has no scope) sees it at the next step; a step that
 * enters a child scope of its own is followed into it. */
typedef struct own_scope {
    int steps;
    int codes[4];
    ctx_cancel_scope_t *mine; /* entered by step 0 in the task's context */
} own_scope_t;

static int step_own_scope(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    own_scope_t *o = arg;
    o->codes[o->steps++] = ctx_loop_task_awaited(task, NULL);
    if (o->steps == 1) {
        ctx_token_t *tok = NULL; /* stays entered in the task's context */
        ASSERT_RC(ctx_cancel_enter_child(NULL, &o->mine, &tok), 0);
        ctx_token_release(tok);
        return ctx_loop_task_sleep(task, HOUR_MS);
    }
    return o->codes[o->steps - 1];
}

static void cancel_scope_cb(void *arg) { ASSERT_RC(ctx_cancel_scope_cancel(arg, NULL), 0); }

static void test_task_follows_a_scope_its_step_entered(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    own_scope_t o;
    memset(&o, 0, sizeof o);
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, step_own_scope, &o, NULL, &t), 0); /* no scope */
    assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) >= 0);                  /* step 0 */
    assert_int_equal(o.steps, 1);
    assert_non_null(o.mine);
    ASSERT_RC(ctx_loop_call_soon(loop, cancel_scope_cb, o.mine, NULL, NULL), 0);
    run_loop(loop);
    assert_int_equal(o.steps, 2);
    ASSERT_RC(o.codes[1], CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    ctx_loop_task_release(t);
    ctx_cancel_scope_release(o.mine);
    close_loop(loop);
}

/* Many tasks sleeping and yielding in one scope, cancelled from another
 * thread while the loop runs: every one ends, cancelled (TSan). */
typedef struct busy {
    atomic_int *started;
    int steps;
    int last;
} busy_t;

static int step_busy(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    busy_t *b = arg;
    int code = ctx_loop_task_awaited(task, NULL);
    if (b->steps++ == 0)
        atomic_fetch_add(b->started, 1);
    if (code) {
        b->last = code;
        return code;
    }
    return b->steps % 3 ? ctx_loop_task_sleep(task, (uint64_t)(b->steps % 5))
                        : ctx_loop_task_yield(task);
}

static void test_many_tasks_woken(void **state) {
    (void)state;
    enum { N = 200 };
    ctx_loop_t *loop = new_loop(NULL);
    ctx_cancel_scope_t *scope = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &scope, &tok), 0);
    atomic_int started = 0;
    busy_t b[N];
    memset(b, 0, sizeof b);
    for (int i = 0; i < N; i++) {
        b[i].started = &started;
        ASSERT_RC(ctx_loop_task_new(loop, step_busy, &b[i], NULL, NULL), 0);
    }
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    canceller_t c = {&started, scope, N}; /* every task has run a step */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &c), 0);
    run_loop(loop);
    assert_int_equal(pthread_join(th, NULL), 0);
    for (int i = 0; i < N; i++)
        ASSERT_RC(b[i].last, CTX_ECANCELLED);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

/* Cancelled on the loop thread while the loop is not running: the wake-up
 * waits in the ready queue; closing the loop drops it and ends the task
 * (nothing leaks). */
static void test_close_with_a_wake_up_pending(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_scope_new(NULL, NULL, &scope), 0);
    sleeper_t s;
    memset(&s, 0, sizeof s);
    ctx_loop_task_t *t = task_in(loop, scope, &s);
    assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) >= 0); /* asleep */
    assert_int_equal(s.steps, 1);
    ASSERT_RC(ctx_cancel_scope_cancel(scope, NULL), 0);
    close_loop(loop);
    assert_int_equal(s.steps, 1);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    ctx_loop_task_release(t);
    ctx_cancel_scope_release(scope);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_calls_in_a_cancelled_scope_do_not_run, teardown),
        cmocka_unit_test_teardown(test_nothing_starts_after_the_deadline, teardown),
        cmocka_unit_test_teardown(test_sleep_wakes_on_cancel_from_another_thread, teardown),
        cmocka_unit_test_teardown(test_sleep_wakes_at_the_deadline, teardown),
        cmocka_unit_test_teardown(test_await_abandons_the_future, teardown),
        cmocka_unit_test_teardown(test_wait_again_and_detach, teardown),
        cmocka_unit_test_teardown(test_explicit_context_task, teardown),
        cmocka_unit_test_teardown(test_task_follows_a_scope_its_step_entered, teardown),
        cmocka_unit_test_teardown(test_many_tasks_woken, teardown),
        cmocka_unit_test_teardown(test_close_with_a_wake_up_pending, teardown),
    };
    return cmocka_run_group_tests_name("loop: cancellation scopes", tests, NULL, NULL);
}
