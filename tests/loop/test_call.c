/* SPDX-License-Identifier: MIT */
/*
 * test_call.c — scheduling callbacks: call_soon, call_later, call_at and
 * call_soon_threadsafe run each callback in the context captured when it was
 * scheduled (not the one current when it runs), their sets stay in that
 * copy, an explicit context is used as is; FIFO order, due-time order, the
 * next-iteration rule, cancellation and arg_release, the error codes, the
 * failing allocator on every scheduling call, and the drop-in use over the
 * caller's own uv loop.
 */
#include "loop_test.h"

/* ---- callbacks that record what they saw ---- */

typedef struct seen {
    ctx_var_t *var;
    long value;     /* get_int(var) inside the callback */
    long set_to;    /* if >= 0, the callback sets var to this */
    int calls;
    int order;      /* position in *clock when it ran */
    int *clock;
    ctx_loop_t *current_loop;
} seen_t;

static void record(void *arg) {
    seen_t *s = arg;
    s->calls++;
    s->value = get_int(s->var);
    if (s->set_to >= 0)
        set_int(s->var, s->set_to);
    if (s->clock)
        s->order = ++*s->clock;
    s->current_loop = ctx_loop_current();
}

static int released;
static void count_release(void *arg) {
    (void)arg;
    released++;
}

/* ---- contexts ---- */

static void test_call_soon_sees_the_scheduling_context(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    seen_t a = {x, 0, 99, 0, 0, NULL, NULL};
    set_int(x, 1);
    ASSERT_RC(ctx_loop_call_soon(loop, record, &a, NULL, NULL), 0);
    set_int(x, 2); /* the scheduler changes it after scheduling */
    assert_null(ctx_loop_current());
    run_loop(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.value, 1);
    assert_ptr_equal(a.current_loop, loop);
    assert_null(ctx_loop_current());
    /* The callback's set stayed in its copy. */
    assert_int_equal(get_int(x), 2);
    close_loop(loop);
    ctx_var_release(x);
}

static void test_call_later_sees_the_scheduling_context(void **state) {
    (void)state;
    ctx_var_t *x = new_var("request");
    ctx_loop_t *loop = new_loop(NULL);
    seen_t a = {x, 0, 7, 0, 0, NULL, NULL};
    seen_t b = {x, 0, -1, 0, 0, NULL, NULL};
    set_int(x, 100);
    ASSERT_RC(ctx_loop_call_later(loop, 5, record, &a, NULL, NULL), 0);
    set_int(x, 200);
    ASSERT_RC(ctx_loop_call_later(loop, 1, record, &b, NULL, NULL), 0);
    set_int(x, 300);
    run_loop(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(a.value, 100);
    assert_int_equal(b.value, 200);
    assert_int_equal(get_int(x), 300);
    close_loop(loop);
    ctx_var_release(x);
}

static void test_nothing_leaks_into_the_loop_thread(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    /* No value at all when scheduling: the callback sets one, and the
     * thread's own context must still have none afterwards. */
    seen_t a = {x, 0, 5, 0, 0, NULL, NULL};
    seen_t b = {x, 0, -1, 0, 0, NULL, NULL};
    ASSERT_RC(ctx_loop_call_soon(loop, record, &a, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_soon(loop, record, &b, NULL, NULL), 0);
    run_loop(loop);
    assert_int_equal(a.value, -1);
    assert_int_equal(b.value, -1); /* a's set is not b's */
    assert_int_equal(get_int(x), -1);
    close_loop(loop);
    ctx_var_release(x);
}

static void test_explicit_context_is_used_itself(void **state) {
    (void)state;
    reports_t reports;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(&reports);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, x, IV(5)), 0);
    set_int(x, 1);
    seen_t a = {x, 0, 6, 0, 0, NULL, NULL};
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), ctx, count_release};
    released = 0;
    ASSERT_RC(ctx_loop_call_soon(loop, record, &a, &opts, NULL), 0);
    run_loop(loop);
    assert_int_equal(a.value, 5);
    assert_int_equal(ctx_get_int(ctx, x), 6); /* the set landed in it */
    assert_int_equal(released, 1);
    assert_int_equal(get_int(x), 1);

    /* Entered when due: the callback is skipped, arg_release still runs,
     * the error handler hears of it. */
    seen_t b = {x, 0, -1, 0, 0, NULL, NULL};
    ASSERT_RC(ctx_loop_call_soon(loop, record, &b, &opts, NULL), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    run_loop(loop);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    assert_int_equal(b.calls, 0);
    assert_int_equal(released, 2);
    assert_int_equal(reports.count, 1);
    ASSERT_RC(reports.last_code, CTX_EENTERED);
    close_loop(loop);
    ctx_context_release(ctx);
    ctx_var_release(x);
}

/* ---- order ---- */

static void test_fifo_and_due_order(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    int clock = 0;
    seen_t s[6];
    for (int i = 0; i < 6; i++)
        s[i] = (seen_t){x, 0, -1, 0, 0, &clock, NULL};
    uint64_t now = ctx_loop_time(loop);
    ASSERT_RC(ctx_loop_call_at(loop, now + 20, record, &s[0], NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_at(loop, now + 10, record, &s[1], NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 10, record, &s[2], NULL, NULL), 0); /* same time, later */
    ASSERT_RC(ctx_loop_call_soon(loop, record, &s[3], NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_soon(loop, record, &s[4], NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_at(loop, 0, record, &s[5], NULL, NULL), 0); /* in the past */
    run_loop(loop);
    assert_int_equal(s[3].order, 1);
    assert_int_equal(s[4].order, 2);
    assert_int_equal(s[5].order, 3);
    assert_int_equal(s[1].order, 4);
    assert_int_equal(s[2].order, 5);
    assert_int_equal(s[0].order, 6);
    close_loop(loop);
    ctx_var_release(x);
}

typedef struct chain {
    ctx_loop_t *loop;
    int ran_first;
    int ran_second;
} chain_t;

static void second(void *arg) { ((chain_t *)arg)->ran_second = 1; }

static void first(void *arg) {
    chain_t *c = arg;
    c->ran_first = 1;
    ASSERT_RC(ctx_loop_call_soon(c->loop, second, c, NULL, NULL), 0);
}

static void test_callbacks_scheduled_by_callbacks_wait_an_iteration(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    chain_t c = {loop, 0, 0};
    ASSERT_RC(ctx_loop_call_soon(loop, first, &c, NULL, NULL), 0);
    assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) > 0);
    assert_int_equal(c.ran_first, 1);
    assert_int_equal(c.ran_second, 0);
    run_loop(loop);
    assert_int_equal(c.ran_second, 1);
    close_loop(loop);
}

/* ---- cancellation ---- */

static void test_cancel(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    seen_t a = {x, 0, -1, 0, 0, NULL, NULL}, b = a, c = a;
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, count_release};
    ctx_loop_handle_t *ha, *hb, *hc;
    released = 0;
    ASSERT_RC(ctx_loop_call_soon(loop, record, &a, &opts, &ha), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 1000000, record, &b, &opts, &hb), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 1, record, &c, &opts, &hc), 0);
    assert_int_equal(ctx_loop_handle_when(hb), ctx_loop_time(loop) + 1000000);
    assert_int_equal(ctx_loop_handle_cancelled(ha), 0);
    ASSERT_RC(ctx_loop_handle_cancel(ha), 1);
    ASSERT_RC(ctx_loop_handle_cancel(hb), 1);
    assert_int_equal(released, 2); /* at once */
    ASSERT_RC(ctx_loop_handle_cancel(ha), 0);
    assert_int_equal(ctx_loop_handle_cancelled(ha), 1);
    assert_int_equal(ctx_loop_handle_cancelled(hb), 1);
    /* The far timer was the only thing keeping the loop: run returns. */
    run_loop(loop);
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(released, 3);
    ASSERT_RC(ctx_loop_handle_cancel(hc), 0); /* too late */
    assert_int_equal(ctx_loop_handle_cancelled(hc), 0);
    assert_ptr_equal(ctx_loop_handle_retain(hc), hc);
    ctx_loop_handle_release(hc);
    ctx_loop_handle_release(ha);
    ctx_loop_handle_release(hb);
    ctx_loop_handle_release(hc);
    ctx_loop_handle_release(NULL);
    ASSERT_RC(ctx_loop_handle_cancel(NULL), CTX_EINVAL);
    close_loop(loop);
    ctx_var_release(x);
}

/* A handle outlives its loop's caller reference. */
static void test_handle_keeps_the_loop(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    chain_t c = {loop, 0, 0};
    ctx_loop_handle_t *h;
    ASSERT_RC(ctx_loop_call_later(loop, 50, second, &c, NULL, &h), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
    assert_int_equal(ctx_loop_handle_cancelled(h), 1); /* dropped by close */
    ASSERT_RC(ctx_loop_handle_cancel(h), 0);
    ctx_loop_handle_release(h);
    assert_int_equal(c.ran_second, 0);
}

/* ---- threadsafe ---- */

#define TS_THREADS 4

typedef struct ts_shared {
    ctx_loop_t *loop;
    ctx_var_t *who;
    ctx_var_t *seq;
    ctx_loop_future_t *all_done;
    int per_thread;
    int total;           /* loop thread only */
    int wrong;           /* loop thread only */
    long last_seq[TS_THREADS];
} ts_shared_t;

typedef struct ts_call {
    ts_shared_t *shared;
    int thread;
    int seq;
    int frees_itself; /* scheduled without options: no arg_release */
} ts_call_t;

static void ts_callback(void *arg) {
    ts_call_t *c = arg;
    ts_shared_t *s = c->shared;
    if (get_int(s->who) != c->thread || get_int(s->seq) != c->seq)
        s->wrong++;
    if (c->seq <= s->last_seq[c->thread])
        s->wrong++; /* per-thread order */
    s->last_seq[c->thread] = c->seq;
    if (++s->total == TS_THREADS * s->per_thread)
        ASSERT_RC(ctx_loop_future_set_result(s->all_done, NULL), 0);
    if (c->frees_itself)
        free(c);
}

static void free_call(void *arg) { free(arg); }

static void *ts_thread(void *arg) {
    ts_call_t *me = arg;
    ts_shared_t *s = me->shared;
    set_int(s->who, me->thread);
    for (int i = 0; i < s->per_thread; i++) {
        set_int(s->seq, i);
        ts_call_t *c = malloc(sizeof *c);
        /* Every other call fire-and-forget (a record of its own). */
        *c = (ts_call_t){s, me->thread, i, i % 2};
        ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, free_call};
        ASSERT_RC(ctx_loop_call_soon_threadsafe(s->loop, ts_callback, c, i % 2 ? NULL : &opts, NULL),
                  0);
    }
    ctx_thread_release();
    return NULL;
}

static void test_call_soon_threadsafe(void **state) {
    (void)state;
    ts_shared_t s = {0};
    s.loop = new_loop(NULL);
    s.who = new_var("who");
    s.seq = new_var("seq");
    s.per_thread = SCALED(2000, 200, 300);
    for (int i = 0; i < TS_THREADS; i++)
        s.last_seq[i] = -1;
    ASSERT_RC(ctx_loop_future_new(s.loop, NULL, &s.all_done), 0);
    pthread_t threads[TS_THREADS];
    ts_call_t me[TS_THREADS];
    for (int i = 0; i < TS_THREADS; i++) {
        me[i] = (ts_call_t){&s, i, 0, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, ts_thread, &me[i]), 0);
    }
    ASSERT_RC(ctx_loop_run_until_done(s.loop, s.all_done), 0);
    for (int i = 0; i < TS_THREADS; i++)
        pthread_join(threads[i], NULL);
    run_loop(s.loop);
    assert_int_equal(s.total, TS_THREADS * s.per_thread);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(get_int(s.who), -1);
    ctx_loop_future_release(s.all_done);
    close_loop(s.loop);
    ctx_var_release(s.who);
    ctx_var_release(s.seq);
}

/* ---- errors ---- */

static int never_calls;
static void never(void *arg) {
    (void)arg;
    never_calls++;
}
static void never_done(ctx_loop_future_t *f, void *user) {
    (void)f;
    never(user);
}
static int never_step(ctx_loop_task_t *t, void *arg, void **result) {
    (void)t;
    (void)result;
    never(arg);
    return 0;
}

static void test_errors(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ASSERT_RC(ctx_loop_new(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_call_soon(NULL, never, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_call_soon(loop, NULL, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_call_later(NULL, 1, never, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_call_at(loop, 1, NULL, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_call_soon_threadsafe(NULL, never, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_run(NULL, UV_RUN_DEFAULT), CTX_EINVAL);
    ASSERT_RC(ctx_loop_run(loop, (uv_run_mode)42), CTX_EINVAL);
    ASSERT_RC(ctx_loop_run_until_done(loop, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_stop(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_close(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_set_error_handler(NULL, NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_loop_is_closed(NULL), 1);
    assert_int_equal(ctx_loop_time(NULL), 0);
    assert_null(ctx_loop_uv(NULL));
    assert_non_null(ctx_loop_uv(loop));
    assert_int_equal(ctx_loop_is_closed(loop), 0);

    /* Closed: every scheduling call fails and nothing is ever called. */
    released = 0;
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, count_release};
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    assert_int_equal(ctx_loop_is_closed(loop), 1);
    ASSERT_RC(ctx_loop_close(loop), 0); /* again: harmless */
    ctx_loop_handle_t *h = NULL;
    ASSERT_RC(ctx_loop_call_soon(loop, never, NULL, &opts, &h), CTX_ECLOSED);
    ASSERT_RC(ctx_loop_call_later(loop, 1, never, NULL, &opts, &h), CTX_ECLOSED);
    ASSERT_RC(ctx_loop_call_at(loop, 1, never, NULL, &opts, &h), CTX_ECLOSED);
    ASSERT_RC(ctx_loop_call_soon_threadsafe(loop, never, NULL, &opts, &h), CTX_ECLOSED);
    assert_null(h);
    ctx_loop_future_t *g = NULL;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &g), CTX_ECLOSED);
    assert_null(g);
    ASSERT_RC(ctx_loop_future_add_done_callback(f, never_done, NULL, &opts), CTX_ECLOSED);
    ASSERT_RC(ctx_loop_task_new(loop, never_step, NULL, NULL, NULL), CTX_ECLOSED);
    ASSERT_RC(ctx_loop_run(loop, UV_RUN_DEFAULT), CTX_ECLOSED);
    ASSERT_RC(ctx_loop_run_until_done(loop, f), CTX_ECLOSED);
    assert_null(ctx_loop_uv(loop));
    /* Completing a future of a closed loop works; its callbacks are gone. */
    ASSERT_RC(ctx_loop_future_set_result(f, NULL), 0);
    assert_int_equal(never_calls, 0);
    assert_int_equal(released, 0);
    ctx_loop_future_release(f);
    ctx_loop_release(loop);
}

/* ctx_loop_close and nested runs from inside a callback. */
typedef struct inside {
    ctx_loop_t *loop;
    int close_rc, run_rc, until_rc;
} inside_t;

static void try_inside(void *arg) {
    inside_t *in = arg;
    in->close_rc = ctx_loop_close(in->loop);
    in->run_rc = ctx_loop_run(in->loop, UV_RUN_NOWAIT);
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_future_new(in->loop, NULL, &f), 0);
    in->until_rc = ctx_loop_run_until_done(in->loop, f);
    ctx_loop_future_release(f);
}

static void test_no_close_or_run_inside(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    inside_t in = {loop, 0, 0, 0};
    ASSERT_RC(ctx_loop_call_soon(loop, try_inside, &in, NULL, NULL), 0);
    run_loop(loop);
    ASSERT_RC(in.close_rc, CTX_EBUSY);
    ASSERT_RC(in.run_rc, CTX_EBUSY);
    ASSERT_RC(in.until_rc, CTX_EBUSY);
    assert_int_equal(ctx_loop_is_closed(loop), 0);
    close_loop(loop);
}

static void stop_it(void *arg) { ASSERT_RC(ctx_loop_stop(arg), 0); }

/* Stops the loop and schedules `second` for the next iteration. */
static void stop_and_chain(void *arg) {
    chain_t *c = arg;
    ASSERT_RC(ctx_loop_stop(c->loop), 0);
    ASSERT_RC(ctx_loop_call_soon(c->loop, second, c, NULL, NULL), 0);
}

static void test_stop(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    chain_t c = {loop, 0, 0};
    ASSERT_RC(ctx_loop_call_soon(loop, stop_and_chain, &c, NULL, NULL), 0);
    assert_true(ctx_loop_run(loop, UV_RUN_DEFAULT) > 0); /* stopped early */
    assert_int_equal(c.ran_second, 0);
    run_loop(loop);
    assert_int_equal(c.ran_second, 1);
    /* run_until_done reports a stop before the future is done. */
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    ASSERT_RC(ctx_loop_call_soon(loop, stop_it, loop, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, f), CTX_ENOTDONE);
    ctx_loop_future_release(f);
    close_loop(loop);
}

/* ---- the failing allocator ---- */

static void test_allocation_failure(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_test_alloc_install();
    ctx_loop_t *loop = NULL;
    /* ctx_loop_new: every failure leaves nothing behind. */
    for (long n = 1;; n++) {
        long live = ctx_test_alloc_live_blocks();
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_new(NULL, &loop);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
    }
    set_int(x, 3);
    seen_t s = {x, 0, -1, 0, 0, NULL, NULL};
    ctx_loop_call_options_t opts = {sizeof(ctx_loop_call_options_t), NULL, count_release};
    released = 0;
    int ok = 0;
    /* Each scheduling call, failed at every allocation it makes. */
    for (int which = 0; which < 8; which++) {
        for (long n = 1;; n++) {
            long live = ctx_test_alloc_live_blocks();
            ctx_loop_handle_t *h = NULL;
            ctx_loop_future_t *f = NULL;
            ctx_test_alloc_fail_nth(n);
            int r;
            switch (which) {
            case 0:
                r = ctx_loop_call_soon(loop, record, &s, &opts, &h);
                break;
            case 1:
                r = ctx_loop_call_later(loop, 1, record, &s, &opts, &h);
                break;
            case 2:
                r = ctx_loop_call_at(loop, 0, record, &s, &opts, NULL);
                break;
            case 3:
                r = ctx_loop_call_soon_threadsafe(loop, record, &s, &opts, &h);
                break;
            case 4: /* fire-and-forget: a record of its own */
                r = ctx_loop_call_soon(loop, record, &s, NULL, NULL);
                break;
            case 5: /* the same in the timer heap (which may grow) */
                r = ctx_loop_call_later(loop, 1, record, &s, NULL, NULL);
                break;
            case 6: /* and through the inbox (the loop has not run: not its thread) */
                r = ctx_loop_call_soon_threadsafe(loop, record, &s, NULL, NULL);
                break;
            default:
                r = ctx_loop_future_new(loop, NULL, &f);
                break;
            }
            int fired = ctx_test_alloc_fired();
            ctx_test_alloc_fail_nth(0);
            if (!fired) {
                ASSERT_RC(r, 0);
                ok++;
                ctx_loop_handle_release(h);
                ctx_loop_future_release(f);
                break;
            }
            ASSERT_RC(r, CTX_ENOMEM);
            assert_null(h);
            assert_null(f);
            assert_int_equal(ctx_test_alloc_live_blocks(), live);
            assert_int_equal(released, 0); /* no arg_release for a failed call */
        }
    }
    run_loop(loop);
    assert_int_equal(s.calls, 7);
    assert_int_equal(s.value, 3);
    assert_int_equal(released, 4); /* the fire-and-forget calls have none */
    close_loop(loop);
    ctx_thread_release();
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
    ctx_var_release(x);
}

/* A fire-and-forget call_later that needs the timer heap to grow, failed
 * at each allocation it makes: CTX_ENOMEM, nothing left behind (the record
 * goes back to the allocator), and it never runs. */
static void test_timer_heap_growth_failure(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_test_alloc_install();
    ctx_loop_t *loop = new_loop(NULL);
    set_int(x, 4);
    seen_t filled = {x, 0, -1, 0, 0, NULL, NULL};
    seen_t grown = {x, 0, -1, 0, 0, NULL, NULL};
    /* The heap starts with room for 16: fill it. */
    for (int i = 0; i < 16; i++)
        ASSERT_RC(ctx_loop_call_later(loop, 1, record, &filled, NULL, NULL), 0);
    int failures = 0;
    for (long n = 1;; n++) {
        long live = ctx_test_alloc_live_blocks();
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_call_later(loop, 1, record, &grown, NULL, NULL);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
        failures++;
    }
    assert_int_equal(failures, 2); /* the record, then the heap */
    run_loop(loop);
    assert_int_equal(filled.calls, 16);
    assert_int_equal(grown.calls, 1); /* the call that succeeded, once */
    assert_int_equal(grown.value, 4);
    close_loop(loop);
    ctx_thread_release();
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
    ctx_var_release(x);
}

/* Bursts larger than the spares a loop starts with (1024 records): the
 * loop keeps more after a burst that made it free some, so a program whose
 * every iteration schedules 3000 calls soon stops allocating records. */
static long burst_calls;
static void count_call(void *arg) {
    (void)arg;
    burst_calls++;
}

static void test_bursts_stop_allocating(void **state) {
    (void)state;
    enum { BURST = 3000, BURSTS = 8 };
    ctx_test_alloc_install();
    ctx_loop_t *loop = new_loop(NULL);
    burst_calls = 0;
    long made[BURSTS];
    for (int b = 0; b < BURSTS; b++) {
        long before = ctx_test_alloc_attempts();
        for (int i = 0; i < BURST; i++)
            ASSERT_RC(ctx_loop_call_soon(loop, count_call, NULL, NULL, NULL), 0);
        made[b] = ctx_test_alloc_attempts() - before;
        run_loop(loop);
    }
    assert_int_equal(burst_calls, (long)BURST * BURSTS);
    assert_true(made[0] >= BURST); /* the first burst: no spares yet */
    assert_true(made[1] > 0);      /* 1024 spares: the rest allocated */
    assert_int_equal(made[BURSTS - 1], 0);
    assert_int_equal(made[BURSTS - 2], 0);
    close_loop(loop);
    ctx_thread_release();
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* ---- over the caller's own uv loop ---- */

static int own_timer_fired;
static void own_timer(uv_timer_t *t) {
    (void)t;
    own_timer_fired++;
}

static void test_drop_in_over_a_user_loop(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    uv_loop_t uv;
    assert_int_equal(uv_loop_init(&uv), 0);
    uv_timer_t timer;
    uv_timer_init(&uv, &timer);
    uv_timer_start(&timer, own_timer, 2, 0);
    ctx_loop_t *loop;
    ASSERT_RC(ctx_loop_new(&uv, &loop), 0);
    assert_ptr_equal(ctx_loop_uv(loop), &uv);
    seen_t a = {x, 0, -1, 0, 0, NULL, NULL};
    set_int(x, 41);
    ASSERT_RC(ctx_loop_call_later(loop, 1, record, &a, NULL, NULL), 0);
    set_int(x, 42);
    /* The program's own uv_run drives both. */
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(own_timer_fired, 1);
    assert_int_equal(a.value, 41);
    /* Something still scheduled when the module closes. */
    ASSERT_RC(ctx_loop_call_later(loop, 100000, never, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&uv, UV_RUN_NOWAIT); /* the close callbacks */
    assert_int_equal(uv_loop_close(&uv), 0);
    assert_int_equal(never_calls, 0);
    ctx_var_release(x);
}

/* An owned uv loop with one of the caller's handles: close says EBUSY until
 * the caller closes it. */
static void test_owned_loop_with_a_user_handle(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    uv_timer_t timer;
    uv_timer_init(ctx_loop_uv(loop), &timer);
    ASSERT_RC(ctx_loop_close(loop), CTX_EBUSY);
    assert_int_equal(ctx_loop_is_closed(loop), 1);
    uv_close((uv_handle_t *)&timer, NULL);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
}

/* ---- a callback that leaves a context entered ---- */

typedef struct leaver {
    ctx_context_t *other;
    reports_t reports;
} leaver_t;

static void leave_entered(void *arg) {
    leaver_t *l = arg;
    ASSERT_RC(ctx_context_enter(l->other), 0); /* and never exits */
}

static void *leaver_thread(void *arg) {
    leaver_t *l = arg;
    ctx_loop_t *loop = new_loop(&l->reports);
    ASSERT_RC(ctx_loop_call_soon(loop, leave_entered, l, NULL, NULL), 0);
    run_loop(loop);
    close_loop(loop);
    return NULL; /* the thread's exit releases what is still entered */
}

static void test_callback_leaving_a_context_entered(void **state) {
    (void)state;
    leaver_t l;
    ASSERT_RC(ctx_context_new(&l.other), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, leaver_thread, &l), 0);
    pthread_join(t, NULL);
    assert_int_equal(l.reports.count, 1);
    ASSERT_RC(l.reports.last_code, CTX_ENOTCURRENT);
    ctx_context_release(l.other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_call_soon_sees_the_scheduling_context, release_thread),
        cmocka_unit_test_teardown(test_call_later_sees_the_scheduling_context, release_thread),
        cmocka_unit_test_teardown(test_nothing_leaks_into_the_loop_thread, release_thread),
        cmocka_unit_test_teardown(test_explicit_context_is_used_itself, release_thread),
        cmocka_unit_test_teardown(test_fifo_and_due_order, release_thread),
        cmocka_unit_test_teardown(test_callbacks_scheduled_by_callbacks_wait_an_iteration,
                                  release_thread),
        cmocka_unit_test_teardown(test_cancel, release_thread),
        cmocka_unit_test_teardown(test_handle_keeps_the_loop, release_thread),
        cmocka_unit_test_teardown(test_call_soon_threadsafe, release_thread),
        cmocka_unit_test_teardown(test_errors, release_thread),
        cmocka_unit_test_teardown(test_no_close_or_run_inside, release_thread),
        cmocka_unit_test_teardown(test_stop, release_thread),
        cmocka_unit_test_teardown(test_allocation_failure, release_thread),
        cmocka_unit_test_teardown(test_timer_heap_growth_failure, release_thread),
        cmocka_unit_test_teardown(test_bursts_stop_allocating, release_thread),
        cmocka_unit_test_teardown(test_drop_in_over_a_user_loop, release_thread),
        cmocka_unit_test_teardown(test_owned_loop_with_a_user_handle, release_thread),
        cmocka_unit_test_teardown(test_callback_leaving_a_context_entered, release_thread),
    };
    return cmocka_run_group_tests_name("loop: scheduling", tests, NULL, NULL);
}
