/* SPDX-License-Identifier: MIT */
/*
 * test_cancel.c — the pool and cancellation scopes (ctxvar/cancel.h):
 *   - a task whose scope is cancelled, or whose deadline has passed, when a
 *     worker takes it never starts (even while the timer thread is late:
 *     start times are recorded and compared with the deadline), ends
 *     CANCELLED with the scope's error, and its arg_release runs;
 *   - ctx_pool_future_cancel cancels the task's own scope: a running task
 *     sees ctx_cancel_check() fail, so does work it started, the
 *     submitter's scope does not;
 *   - ctx_pool_future_wait ends as soon as the WAITER's scope is cancelled
 *     (or its deadline passes), with the future still pending;
 *   - a task returning CTX_EDEADLINE ends cancelled with that error.
 *
 * Tasks are held at gates; the only clocks read are the ones the
 * assertions are about (start times against a deadline), never durations.
 */
#include "pool_test.h"

#define MS ((int64_t)1000000)

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static ctx_pool_t *new_pool(size_t threads) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = threads;
    ASSERT_RC(ctx_pool_new(&o, &pool), 0);
    return pool;
}

static ctx_cancel_options_t timeout_opts(int64_t ns) {
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = ns;
    return o;
}

/* Ends a test: the timer thread stopped (valgrind sees no thread), the
 * thread state dropped. */
static int cancel_pool_teardown(void **state) {
    (void)state;
    for (int i = 0; i < 3000 && ctx_cancel_timer_release() == CTX_EBUSY; i++)
        short_nap(); /* a deadline still pending in a freed-late scope */
    return pool_teardown(state);
}

/* ---- a task that records when it started ---- */

typedef struct stamped {
    atomic_llong started_at; /* CLOCK_MONOTONIC ns, 0: never ran */
    atomic_int released;     /* arg_release calls */
} stamped_t;

static int task_stamp(void *arg, void **result) {
    (void)result;
    stamped_t *s = arg;
    atomic_store(&s->started_at, (long long)now_ns());
    return 0;
}

static void stamped_release(void *arg) { atomic_fetch_add(&((stamped_t *)arg)->released, 1); }

/* ---- a timer thread held up: a callback on an earlier deadline blocks it ---- */

typedef struct hold {
    gate_t gate;
    atomic_int inside;
    pthread_t main_thread;
} hold_t;

static void hold_timer_thread(void *arg) {
    hold_t *h = arg;
    if (pthread_equal(pthread_self(), h->main_thread))
        return; /* ran at registration: the scope expired first */
    atomic_store(&h->inside, 1);
    gate_pass(&h->gate);
}

/* Holds the timer thread in a callback until gate_open(&h->gate); *scope
 * and *cb are the blocker's, for the caller to release and clear. */
static void hold_timer(hold_t *h, ctx_cancel_scope_t **scope, ctx_cancel_callback_t *cb) {
    gate_init(&h->gate);
    atomic_init(&h->inside, 0);
    h->main_thread = pthread_self();
    for (int64_t timeout = 5 * MS;; timeout *= 2) {
        ctx_cancel_options_t o = timeout_opts(timeout);
        ASSERT_RC(ctx_cancel_scope_new(NULL, &o, scope), 0);
        int rc = ctx_cancel_callback_init_wakeup(cb, *scope, hold_timer_thread, h);
        if (rc == 0)
            break;
        ASSERT_RC(rc, CTX_CANCEL_CALLBACK_RAN);
        ASSERT_RC(ctx_cancel_callback_clear(cb), CTX_CANCEL_CALLBACK_RAN);
        ctx_cancel_scope_release(*scope);
    }
    while (!atomic_load(&h->inside))
        short_nap();
}

/* A task under a scope whose deadline passed while the timer thread was
 * held up (so nothing cancelled the scope yet) must not start: the worker
 * reads the clock.  Tasks taken before the deadline ran, and started
 * before it. */
static void test_nothing_starts_after_the_deadline(void **state) {
    (void)state;
    enum { EARLY = 4, LATE = 16 };
    ctx_pool_t *pool = new_pool(1);
    hold_t hold;
    ctx_cancel_scope_t *blocker = NULL;
    ctx_cancel_callback_t hold_cb;
    hold_timer(&hold, &blocker, &hold_cb);

    /* The request, made once the timer thread is held. */
    ctx_cancel_options_t o = timeout_opts(100 * MS);
    ctx_cancel_scope_t *request = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(&o, &request, &tok), 0);
    int64_t deadline = 0;
    ASSERT_RC(ctx_cancel_scope_deadline(request, &deadline), 0);

    stamped_t early[EARLY], late[LATE];
    memset(early, 0, sizeof early);
    memset(late, 0, sizeof late);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.arg_release = stamped_release;
    ctx_pool_future_t *ef[EARLY];
    for (int i = 0; i < EARLY; i++)
        ASSERT_RC(ctx_pool_submit_ex(pool, task_stamp, &early[i], &so, &ef[i]), 0);
    for (int i = 0; i < EARLY; i++) /* (or the deadline passed: see below) */
        (void)ctx_pool_future_wait(ef[i], CTX_WAIT_FOREVER);

    /* The one worker held, with LATE tasks of the request queued behind. */
    gate_t g;
    gate_init(&g);
    ctx_context_t *bare = NULL;
    ASSERT_RC(ctx_cancel_context_detach(NULL, &bare), 0);
    ctx_pool_submit_options_t plain = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    plain.propagation = CTX_POOL_PROPAGATE_CONTEXT;
    plain.context = bare; /* the blocking task itself has no scope */
    ASSERT_RC(ctx_pool_submit_ex(pool, task_gate, &g, &plain, NULL), 0);
    gate_await_arrivals(&g, 1);
    ctx_pool_future_t *lf[LATE];
    for (int i = 0; i < LATE; i++) /* half with a future, half fire-and-forget */
        ASSERT_RC(ctx_pool_submit_ex(pool, task_stamp, &late[i], &so, i % 2 ? &lf[i] : NULL), 0);
    for (int i = 0; i < LATE; i += 2)
        lf[i] = NULL;
    ASSERT_RC(ctx_cancel_exit(tok), 0); /* this thread leaves the request */

    /* The deadline passes; the timer thread cannot fire it. */
    while (now_ns() <= deadline)
        short_nap();
    ASSERT_RC(ctx_cancel_scope_error(request), 0); /* nobody cancelled it yet */
    gate_open(&g);
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0); /* all ended */
    assert_int_equal(ctx_cancel_scope_error(request), CTX_EDEADLINE); /* the worker did it */

    /* The clock assertion: whatever started, started before the deadline;
     * the late tasks never started; each arg_release ran once. */
    for (int i = 0; i < EARLY; i++) {
        long long at = atomic_load(&early[i].started_at);
        assert_true(at == 0 || at < deadline);
        assert_int_equal(atomic_load(&early[i].released), 1);
    }
    for (int i = 0; i < LATE; i++) {
        assert_int_equal(atomic_load(&late[i].started_at), 0);
        assert_int_equal(atomic_load(&late[i].released), 1);
        if (!lf[i])
            continue;
        assert_int_equal(ctx_pool_future_state(lf[i]), CTX_POOL_FUTURE_CANCELLED);
        ASSERT_RC(ctx_pool_future_result(lf[i], NULL), CTX_EDEADLINE);
        uint64_t waited;
        ASSERT_RC(ctx_pool_future_queue_wait(lf[i], &waited), CTX_ENOTFOUND); /* never started */
    }
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_true(st.cancelled >= LATE);

    gate_open(&hold.gate);
    ASSERT_RC(ctx_cancel_callback_clear(&hold_cb), CTX_CANCEL_CALLBACK_RAN);
    for (int i = 0; i < EARLY; i++)
        ctx_pool_future_release(ef[i]);
    for (int i = 0; i < LATE; i++)
        ctx_pool_future_release(lf[i]);
    ctx_context_release(bare);
    ctx_cancel_scope_release(request);
    ctx_cancel_scope_release(blocker);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&g);
    gate_destroy(&hold.gate);
}

/* A task submitted in a scope cancelled (explicitly) while it waited in
 * the queue ends CANCELLED with CTX_ECANCELLED; its cause is readable from
 * inside nothing (it never ran), its arg_release ran; fire-and-forget tasks
 * and tasks with a future alike, under every propagation policy that
 * carries the scope. */
static void test_cancelled_while_queued(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    gate_t g;
    gate_init(&g);
    ctx_pool_future_t *blocker = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &g, &blocker), 0);
    gate_await_arrivals(&g, 1);

    ctx_context_t *req = NULL;
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_context_new(NULL, NULL, &req, &scope), 0);
    stamped_t s[5];
    memset(s, 0, sizeof s);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.arg_release = stamped_release;
    so.propagation = CTX_POOL_PROPAGATE_CONTEXT; /* the request's context */
    so.context = req;
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_stamp, &s[0], &so, &f), 0);
    ASSERT_RC(ctx_pool_submit_ex(pool, task_stamp, &s[1], &so, NULL), 0);
    ctx_pool_submit_options_t light = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    light.propagation = CTX_POOL_PROPAGATE_CONTEXT; /* no record needed but for the scope */
    light.context = req;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_stamp, &s[4], &light, NULL), 0);
    /* COPY from inside the request's context (the light path's check). */
    ctx_context_t *copy = NULL;
    ASSERT_RC(ctx_context_copy(req, &copy), 0);
    ASSERT_RC(ctx_context_enter(copy), 0);
    ASSERT_RC(ctx_pool_submit(pool, task_stamp, &s[2], NULL), 0);
    so.propagation = CTX_POOL_PROPAGATE_DEFAULT;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_stamp, &s[3], &so, NULL), 0);
    ASSERT_RC(ctx_context_exit(copy), 0);

    ASSERT_RC(ctx_cancel_scope_cancel(scope, NULL), 0);
    gate_open(&g);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_CANCELLED);
    ASSERT_RC(ctx_pool_future_result(f, NULL), CTX_ECANCELLED);
    for (int i = 0; i < 5; i++)
        assert_int_equal(atomic_load(&s[i].started_at), 0);
    assert_int_equal(atomic_load(&s[0].released), 1);
    assert_int_equal(atomic_load(&s[1].released), 1);
    assert_int_equal(atomic_load(&s[3].released), 1);
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.cancelled, 5);
    assert_int_equal(st.completed, 1); /* the blocker */

    ctx_pool_future_release(f);
    ctx_pool_future_release(blocker);
    ctx_context_release(copy);
    ctx_context_release(req);
    ctx_cancel_scope_release(scope);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&g);
}

/* ---- cancelling a running task through its future ---- */

typedef struct spinner {
    atomic_int started;
    atomic_int saw;        /* what ctx_cancel_check returned when it stopped */
    atomic_int compat;     /* ctx_pool_task_cancelled() then */
    atomic_int child_saw;  /* what a fire-and-forget task it submitted saw */
    ctx_pool_t *pool;
    gate_t child_gate;
} spinner_t;

/* Waits (bounded against hanging only) until the check fails. */
static int await_check(void) {
    for (long i = 0; i < 300000; i++) {
        int c = ctx_cancel_check();
        if (c)
            return c;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int child_task(void *arg, void **result) {
    (void)result;
    spinner_t *s = arg;
    gate_pass(&s->child_gate);
    atomic_store(&s->child_saw, ctx_cancel_check());
    return 0;
}

static int task_spin(void *arg, void **result) {
    (void)result;
    spinner_t *s = arg;
    if (s->pool) /* work it starts: a copy of its context */
        OFF_MAIN_CHECK(ctx_pool_submit(s->pool, child_task, s, NULL) == 0);
    atomic_store(&s->started, 1);
    int c = await_check();
    atomic_store(&s->saw, c);
    atomic_store(&s->compat, ctx_pool_task_cancelled());
    return c;
}

static void test_future_cancel_cancels_the_task_scope(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    /* The submitter has a scope: the task's own is a child of it. */
    ctx_cancel_scope_t *outer = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &outer, &tok), 0);
    spinner_t s;
    memset(&s, 0, sizeof s);
    s.pool = pool;
    gate_init(&s.child_gate);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_spin, &s, &f), 0);
    while (!atomic_load(&s.started))
        short_nap();
    gate_await_arrivals(&s.child_gate, 1);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_RUNNING);
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_RUNNING);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&s.saw), CTX_ECANCELLED);
    assert_int_equal(atomic_load(&s.compat), 1);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_CANCELLED);
    ASSERT_RC(ctx_pool_future_result(f, NULL), CTX_ECANCELLED);
    assert_int_equal(ctx_pool_future_cancel_requested(f), 1);
    /* The work it started sees the cancellation too; the submitter's scope
     * does not (a child never cancels its parent). */
    gate_open(&s.child_gate);
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    assert_int_equal(atomic_load(&s.child_saw), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_scope_error(outer), 0);
    ASSERT_RC(ctx_cancel_check(), 0);
    assert_int_equal(ctx_pool_task_cancelled(), 0);
    /* Too late now. */
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_TOO_LATE);

    ctx_pool_future_release(f);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(outer);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&s.child_gate);
}

/* Without any scope in the submitter's context the task still has its own
 * (a root): the check covers its future's cancellation.  And cancelling the
 * submitter's scope reaches the task through it. */
static void test_task_scope_without_and_with_a_parent(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    spinner_t a;
    memset(&a, 0, sizeof a);
    ctx_pool_future_t *fa = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_spin, &a, &fa), 0);
    while (!atomic_load(&a.started))
        short_nap();
    ASSERT_RC(ctx_pool_future_cancel(fa), CTX_POOL_CANCEL_RUNNING);
    ASSERT_RC(ctx_pool_future_wait(fa, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&a.saw), CTX_ECANCELLED);

    /* The parent's cancellation, with a cause, reaches the running task. */
    ctx_context_t *req = NULL;
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_cancel_context_new(NULL, NULL, &req, &scope), 0);
    spinner_t b;
    memset(&b, 0, sizeof b);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.propagation = CTX_POOL_PROPAGATE_CONTEXT;
    so.context = req;
    ctx_pool_future_t *fb = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_spin, &b, &so, &fb), 0);
    while (!atomic_load(&b.started))
        short_nap();
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    cause.code = 499;
    ASSERT_RC(ctx_cancel_scope_cancel(scope, &cause), 0);
    ASSERT_RC(ctx_pool_future_wait(fb, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&b.saw), CTX_ECANCELLED);
    assert_int_equal(ctx_pool_future_cancel_requested(fb), 0);
    assert_int_equal(ctx_pool_future_state(fb), CTX_POOL_FUTURE_CANCELLED);

    ctx_pool_future_release(fa);
    ctx_pool_future_release(fb);
    ctx_context_release(req);
    ctx_cancel_scope_release(scope);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* A task that runs out of time returns what the check says: the future
 * ends CANCELLED with CTX_EDEADLINE. */
static void test_task_gives_up_at_the_deadline(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    ctx_context_t *req = NULL;
    ctx_cancel_options_t o = timeout_opts(20 * MS);
    ASSERT_RC(ctx_cancel_context_new(NULL, &o, &req, NULL), 0);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.propagation = CTX_POOL_PROPAGATE_CONTEXT;
    so.context = req;
    spinner_t s;
    memset(&s, 0, sizeof s);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, task_spin, &s, &so, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    if (atomic_load(&s.started)) { /* else: too slow a machine, skipped at pickup */
        assert_int_equal(atomic_load(&s.saw), CTX_EDEADLINE);
    }
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_CANCELLED);
    ASSERT_RC(ctx_pool_future_result(f, NULL), CTX_EDEADLINE);
    ctx_pool_future_release(f);
    ctx_context_release(req);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---- the waiter's scope ---- */

typedef struct canceller {
    ctx_cancel_scope_t *scope;
    gate_t *go;
} canceller_t;

static void *cancel_later(void *arg) {
    canceller_t *c = arg;
    gate_pass(c->go);
    short_nap(); /* most likely after the wait began; either order is fine */
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    cause.code = 7;
    OFF_MAIN_CHECK(ctx_cancel_scope_cancel(c->scope, &cause) == 0);
    return NULL;
}

static void test_wait_wakes_on_the_waiters_scope(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    gate_t held, go;
    gate_init(&held);
    gate_init(&go);
    /* The task runs outside the waiter's scope: it goes on. */
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &held, &f), 0);
    gate_await_arrivals(&held, 1);

    ctx_cancel_scope_t *mine = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &mine, &tok), 0);
    canceller_t c = {mine, &go};
    ctx_pool_thread_t *th = NULL;
    ASSERT_RC(ctx_pool_thread_create(cancel_later, &c, 0, &th), 0);
    gate_open(&go);
    /* Only the cancellation can end this wait: the task is held. */
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), CTX_ECANCELLED);
    assert_int_equal(ctx_pool_future_done(f), 0);
    /* Again, at once. */
    ASSERT_RC(ctx_pool_future_wait(f, 0), CTX_ECANCELLED);
    ASSERT_RC(ctx_pool_thread_join(th, NULL), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);

    /* A deadline ends a wait with CTX_EDEADLINE, bounded by a longer
     * timeout of the call. */
    ctx_cancel_options_t o = timeout_opts(20 * MS);
    ctx_cancel_scope_t *timed = NULL;
    ASSERT_RC(ctx_cancel_enter_child(&o, &timed, &tok), 0);
    ASSERT_RC(ctx_pool_future_wait(f, 60 * 1000 * MS), CTX_EDEADLINE);
    assert_int_equal(ctx_pool_future_done(f), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    /* A shorter timeout of the call wins over the deadline. */
    o = timeout_opts(60 * 1000 * MS);
    ASSERT_RC(ctx_cancel_enter_child(&o, NULL, &tok), 0);
    ASSERT_RC(ctx_pool_future_wait(f, 1 * MS), CTX_ETIMEDOUT);
    ASSERT_RC(ctx_cancel_exit(tok), 0);

    /* Outside the scopes the wait ends with the task; a finished future
     * answers 0 even in a cancelled scope. */
    gate_open(&held);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_cancel_enter(mine, &tok), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    assert_int_equal(off_main_failures(), 0);

    ctx_pool_future_release(f);
    ctx_cancel_scope_release(mine);
    ctx_cancel_scope_release(timed);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&held);
    gate_destroy(&go);
}

/* ---- the failing allocator ---- */

/* A submit under a scope fails at every allocation in turn with
 * CTX_ENOMEM and leaves nothing: no block, no arg_release, nothing run; the
 * scope's children are as before (cancelling it afterwards reaches only
 * what was accepted). */
static void test_scoped_submit_out_of_memory(void **state) {
    (void)state;
    pool_test_make_cancel_var();
    /* Installed before the worker exists: it frees through the allocator
     * (the warm-up's scope) while this thread goes on. */
    ctx_test_alloc_install();
    ctx_pool_t *pool = new_pool(1);
    ctx_pool_future_t *warm = NULL; /* the worker's state, made before counting */
    ASSERT_RC(ctx_pool_submit(pool, task_nop, NULL, &warm), 0);
    ASSERT_RC(ctx_pool_future_wait(warm, CTX_WAIT_FOREVER), 0);
    ctx_pool_future_release(warm);
    ctx_cancel_scope_t *scope = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &scope, &tok), 0);
    stamped_t s;
    memset(&s, 0, sizeof s);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.arg_release = stamped_release;
    for (int with_future = 0; with_future < 2; with_future++) {
        long failures = 0;
        for (long n = 1;; n++) {
            assert_true(n < 100);
            long live = pool_test_settled_blocks();
            ctx_pool_future_t *f = NULL;
            ctx_test_alloc_fail_nth(n);
            int rc = ctx_pool_submit_ex(pool, task_stamp, &s, &so, with_future ? &f : NULL);
            int fired = ctx_test_alloc_fired();
            ctx_test_alloc_fail_nth(0);
            if (!fired) {
                ASSERT_RC(rc, 0);
                if (f) {
                    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
                    ctx_pool_future_release(f);
                }
                break;
            }
            failures++;
            ASSERT_RC(rc, CTX_ENOMEM);
            assert_null(f);
            assert_int_equal(atomic_load(&s.released), with_future);
            assert_int_equal(ctx_test_alloc_live_blocks(), live);
        }
        print_message("scoped submit%s: %ld failure points\n", with_future ? " with a future" : "",
                      failures);
        assert_true(failures > 0);
        ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
        assert_int_equal(atomic_load(&s.released), with_future + 1);
        if (!with_future) {
            ASSERT_RC(ctx_pool_release(pool), 0);
            pool = new_pool(1);
        }
    }
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(scope);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_uninstall();
}

/* ctx_pool_future_cancel allocates nothing once its thread has its ctxvar
 * state; a thread without one that cannot make it gets CTX_ENOMEM and
 * changes nothing. */
static void test_cancel_allocates_nothing(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    spinner_t s;
    memset(&s, 0, sizeof s);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_spin, &s, &f), 0);
    while (!atomic_load(&s.started))
        short_nap();
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_install();
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_ENOMEM);
    assert_int_equal(ctx_pool_future_cancel_requested(f), 0);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_RUNNING);
    ctx_test_alloc_fail_all(0);
    ctx_token_t *tok = NULL; /* a set: this thread's state, made now */
    ASSERT_RC(ctx_cancel_enter(NULL, &tok), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_RUNNING);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ctx_test_alloc_fail_all(0);
    ctx_test_alloc_uninstall();
    assert_int_equal(atomic_load(&s.saw), CTX_ECANCELLED);
    ctx_pool_future_release(f);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scoped_submit_out_of_memory, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_nothing_starts_after_the_deadline, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_cancelled_while_queued, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_future_cancel_cancels_the_task_scope, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_task_scope_without_and_with_a_parent, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_task_gives_up_at_the_deadline, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_wait_wakes_on_the_waiters_scope, cancel_pool_teardown),
        cmocka_unit_test_teardown(test_cancel_allocates_nothing, cancel_pool_teardown),
    };
    return cmocka_run_group_tests_name("pool: cancellation", tests, NULL, NULL);
}
