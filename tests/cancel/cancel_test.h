/* SPDX-License-Identifier: MIT */
/*
 * cancel_test.h — what the cancel module's tests share: cmocka, the public
 * headers, the failing allocator, and small helpers (options, a counted
 * cause, a bounded wait for a flag, a teardown that checks the timer
 * facility is empty and stops its thread).
 */
#ifndef CTX_CANCEL_TEST_H
#define CTX_CANCEL_TEST_H

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "ctx_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ctxvar/cancel.h>

#include "../support/support.h"

#define MS ((int64_t)1000000)

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static inline ctx_cancel_options_t timeout_opts(int64_t ns) {
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = ns;
    return o;
}

static inline ctx_cancel_options_t deadline_opts(int64_t at) {
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.deadline_ns = at;
    return o;
}

static inline ctx_cancel_scope_t *new_scope(ctx_cancel_scope_t *parent,
                                            const ctx_cancel_options_t *o) {
    ctx_cancel_scope_t *s = NULL;
    ASSERT_RC(ctx_cancel_scope_new(parent, o, &s), 0);
    assert_non_null(s);
    return s;
}

/* Waits (up to 30 s, polling) until *flag != 0; fails the test otherwise.
 * Never a timing assertion: only a bound against hanging. */
static inline void await_flag(atomic_int *flag) {
    for (int i = 0; i < 30000 && !atomic_load(flag); i++)
        sleep_ns(MS);
    assert_true(atomic_load(flag));
}

/* Ends a test: no deadline may be left in the timer, its thread is
 * stopped (so valgrind sees no thread), and the thread state is dropped. */
static inline void cancel_teardown(void) {
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    assert_int_equal(st.timers_pending, 0);
    ASSERT_RC(ctx_cancel_timer_release(), 0);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    assert_int_equal(st.thread_running, 0);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* A new root scope with a deadline `timeout` from now and `fn` registered
 * on it (a wake-up if `wakeup`) before the deadline passes: on a slow run
 * (valgrind, TSan, a busy machine) it may pass first, and fn then runs at
 * once on this thread; `reset` (may be NULL) undoes what that run did, and
 * it starts over with twice the timeout. */
static inline ctx_cancel_scope_t *scope_with_callback(int64_t timeout, ctx_cancel_callback_t *cb,
                                                      ctx_cancel_fn fn, void *arg, int wakeup,
                                                      void (*reset)(void *arg)) {
    for (int tries = 0; tries < 12; tries++, timeout *= 2) {
        ctx_cancel_options_t o = timeout_opts(timeout);
        ctx_cancel_scope_t *s = new_scope(NULL, &o);
        int rc = wakeup ? ctx_cancel_callback_init_wakeup(cb, s, fn, arg)
                        : ctx_cancel_callback_init(cb, s, fn, arg);
        if (rc == 0)
            return s;
        ASSERT_RC(rc, CTX_CANCEL_CALLBACK_RAN);
        ASSERT_RC(ctx_cancel_callback_clear(cb), CTX_CANCEL_CALLBACK_RAN);
        ctx_cancel_scope_release(s);
        if (reset)
            reset(arg);
    }
    fail_msg("scope_with_callback: the deadline always passed first");
    return NULL;
}

static inline uint64_t timers_pending(void) {
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    return st.timers_pending;
}

/* A cause whose data counts its releases. */
typedef struct counted {
    atomic_int released;
    int id;
} counted_t;

static inline void counted_release(void *data) { atomic_fetch_add(&((counted_t *)data)->released, 1); }

static inline ctx_cancel_cause_t cause_of(int code, counted_t *data) {
    ctx_cancel_cause_t c = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    c.code = code;
    c.data = data;
    c.release = data ? counted_release : NULL;
    return c;
}

#endif /* CTX_CANCEL_TEST_H */
