/* SPDX-License-Identifier: MIT */
/*
 * callback.c — callbacks on cancellation (Go's AfterFunc, .NET's Register),
 * and the waits built on them.
 *
 * A registration lives in storage the caller owns (ctx_cancel_callback_t):
 * no allocation, so a scheduler can keep one in each task record.  While
 * registered it sits in its scope's doubly linked `callbacks` list (guarded
 * by the scope's lock) and holds a reference to the scope; a normal
 * registration also holds a copy of the registering context's map (the
 * O(1) capture of ctx_capture_current), a wake-up registration does not.
 *
 * The state word of a registration:
 *
 *     PENDING ──pop by the canceller (scope lock)──▶ RUNNING ──▶ DONE
 *        │                                               (| WAITED: a clear
 *        └──clear (scope lock)──▶ STOPPED                  on another thread
 *                                                          sleeps for DONE)
 *
 * Exactly once: the canceller pops registrations one at a time under the
 * scope's lock (the first one already while it marks the scope cancelled),
 * and clear unlinks a PENDING one under the same lock, so each is either
 * popped (and run) or stopped, never both.  The canceller
 * runs it outside the lock.  Popping one per lock hold (rather than taking
 * the whole list) is what lets a callback clear a sibling registration of
 * the same scope that has not run yet: it is still PENDING, so it stops.
 *
 * Clearing a registration that is RUNNING on another thread waits for DONE
 * (the storage must not be reused while the canceller still touches it):
 * one process-wide mutex and condition variable, used only on that rare
 * path, with the WAITED bit telling the runner to broadcast.  Clearing from
 * inside the callback itself cannot wait for itself: each running callback
 * has a frame on its thread's stack, linked from a thread-local, and clear
 * finds its registration there, marks the frame and returns RUNNING; the
 * runner then never touches the storage again, so the callback may free it.
 * The captured map is moved out of the storage into a context on the
 * runner's stack before the callback runs, for the same reason.
 */
#include <errno.h>

#include "cancel/cancel_internal.h"
#include "common/common.h"

enum {
    CB_PENDING = 1,
    CB_RUNNING = 2,
    CB_DONE = 3,
    CB_STOPPED = 4,
    CB_WAITED = 8 /* flag: a clear is waiting for DONE */
};

struct ctx__cancel_cb {
    ctx__cancel_cb_t *next;
    ctx__cancel_cb_t **pprev;
    ctx_cancel_scope_t *scope; /* retained; NULL once cleared or if it ran at init */
    ctx_cancel_fn fn;
    void *arg;
    ctx__hamt_t map; /* the registering context's map; empty for wake-ups */
    atomic_int state;
    int wakeup;
};

_Static_assert(sizeof(ctx__cancel_cb_t) <= sizeof(ctx_cancel_callback_t),
               "ctx_cancel_callback_t too small");
_Static_assert(_Alignof(ctx_cancel_callback_t) >= _Alignof(ctx__cancel_cb_t),
               "ctx_cancel_callback_t misaligned");

pthread_mutex_t ctx__cancel_wait_mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t ctx__cancel_wait_cond = PTHREAD_COND_INITIALIZER;

/* A callback running on this thread (innermost first). */
typedef struct frame {
    ctx__cancel_cb_t *cb;
    ctx_cancel_fn fn;
    void *arg;
    int cleared; /* clear was called from inside: do not touch cb again */
    struct frame *prev;
} frame_t;

static _Thread_local frame_t *running;

static frame_t *find_frame(const ctx__cancel_cb_t *cb) {
    for (frame_t *f = running; f; f = f->prev)
        if (f->cb == cb)
            return f;
    return NULL;
}

static void *trampoline(void *arg) {
    frame_t *f = arg;
    f->fn(f->arg);
    return NULL;
}

/* Marks `cb` DONE and wakes a clear waiting for it. */
static void finish(ctx__cancel_cb_t *cb) {
    int old = atomic_exchange_explicit(&cb->state, CB_DONE, memory_order_acq_rel);
    if (old & CB_WAITED) {
        pthread_mutex_lock(&ctx__cancel_wait_mutex);
        pthread_cond_broadcast(&ctx__cancel_wait_cond);
        pthread_mutex_unlock(&ctx__cancel_wait_mutex);
    }
}

/* Runs a popped (RUNNING) registration: in a context on this stack that
 * takes over the captured map, or, for a wake-up, in the current context. */
static void run_one(ctx__cancel_cb_t *cb) {
    frame_t f = {cb, cb->fn, cb->arg, 0, running};
    running = &f;
    if (cb->wakeup) {
        f.fn(f.arg);
    } else {
        ctx_context_t local;
        ctx__context_init_empty(&local);
        local.map = cb->map;
        cb->map = CTX__HAMT_EMPTY;
        int r = ctx__context_run_embedded(&local, trampoline, &f, NULL);
        if (r && r != CTX_ENOTCURRENT)
            f.fn(f.arg); /* no thread state (callers make it first): never lose a call */
        ctx__context_clear(&local);
    }
    running = f.prev;
    if (!f.cleared)
        finish(cb);
}

ctx__cancel_cb_t *ctx__cancel_pop_callback(ctx_cancel_scope_t *s) {
    ctx__cancel_cb_t *cb = s->callbacks;
    if (!cb)
        return NULL;
    s->callbacks = cb->next;
    if (cb->next)
        cb->next->pprev = &s->callbacks;
    cb->pprev = NULL;
    atomic_store_explicit(&cb->state, CB_RUNNING, memory_order_relaxed);
    return cb;
}

void ctx__cancel_run_callbacks(ctx_cancel_scope_t *s) {
    if (s->first_callback) {
        ctx__cancel_cb_t *first = s->first_callback;
        s->first_callback = NULL;
        run_one(first);
    }
    /* The list only shrinks now (the scope is cancelled): stop when it is
     * empty, without a last look. */
    for (int more = s->had_callbacks; more;) {
        ctx__cancel_lock(s);
        ctx__cancel_cb_t *cb = ctx__cancel_pop_callback(s);
        more = s->callbacks != NULL;
        ctx__cancel_unlock(s);
        if (!cb)
            return;
        run_one(cb);
    }
}

static int init(ctx_cancel_callback_t *storage, ctx_cancel_scope_t *scope, ctx_cancel_fn fn,
                void *arg, int wakeup) {
    if (!storage || !scope || !fn)
        return CTX_EINVAL;
    ctx__cancel_cb_t *cb = (ctx__cancel_cb_t *)storage;
    cb->next = NULL;
    cb->pprev = NULL;
    cb->scope = NULL;
    cb->fn = fn;
    cb->arg = arg;
    cb->map = CTX__HAMT_EMPTY;
    cb->wakeup = wakeup;
    ctx__cancel_lock(scope);
    if (!atomic_load_explicit(&scope->state, memory_order_relaxed)) {
        /* The current context changes only in this thread: no lock. */
        ctx__tstate_t *ts = ctx__tls;
        if (!wakeup && ts)
            cb->map = ctx__hamt_retain(ts->current->map);
        cb->scope = ctx_cancel_scope_retain(scope);
        atomic_init(&cb->state, CB_PENDING);
        cb->next = scope->callbacks;
        if (cb->next)
            cb->next->pprev = &cb->next;
        scope->callbacks = cb;
        cb->pprev = &scope->callbacks;
        ctx__cancel_unlock(scope);
        return 0;
    }
    ctx__cancel_unlock(scope);
    /* Already cancelled: run now, here, in the current context. */
    atomic_init(&cb->state, CB_RUNNING);
    frame_t f = {cb, fn, arg, 0, running};
    running = &f;
    fn(arg);
    running = f.prev;
    if (!f.cleared)
        atomic_store_explicit(&cb->state, CB_DONE, memory_order_relaxed);
    return CTX_CANCEL_CALLBACK_RAN;
}

int ctx_cancel_callback_init(ctx_cancel_callback_t *cb, ctx_cancel_scope_t *scope,
                             ctx_cancel_fn fn, void *arg) {
    return init(cb, scope, fn, arg, 0);
}

int ctx_cancel_callback_init_wakeup(ctx_cancel_callback_t *cb, ctx_cancel_scope_t *scope,
                                    ctx_cancel_fn fn, void *arg) {
    return init(cb, scope, fn, arg, 1);
}

/* Sleeps until the registration, RUNNING on another thread, is DONE. */
static void wait_done(ctx__cancel_cb_t *cb) {
    pthread_mutex_lock(&ctx__cancel_wait_mutex);
    for (;;) {
        int s = atomic_load_explicit(&cb->state, memory_order_acquire);
        if ((s & ~CB_WAITED) == CB_DONE)
            break;
        if (!(s & CB_WAITED) &&
            !atomic_compare_exchange_strong_explicit(&cb->state, &s, s | CB_WAITED,
                                                     memory_order_acq_rel, memory_order_acquire))
            continue;
        pthread_cond_wait(&ctx__cancel_wait_cond, &ctx__cancel_wait_mutex);
    }
    pthread_mutex_unlock(&ctx__cancel_wait_mutex);
}

int ctx_cancel_callback_clear(ctx_cancel_callback_t *storage) {
    if (!storage)
        return CTX_EINVAL;
    ctx__cancel_cb_t *cb = (ctx__cancel_cb_t *)storage;
    ctx_cancel_scope_t *scope = cb->scope;
    frame_t *f;
    if (!scope) { /* it ran at init (or was cleared already) */
        if ((f = find_frame(cb))) {
            f->cleared = 1;
            return CTX_CANCEL_CALLBACK_RUNNING;
        }
        return CTX_CANCEL_CALLBACK_RAN;
    }
    ctx__cancel_lock(scope);
    int pending = atomic_load_explicit(&cb->state, memory_order_relaxed) == CB_PENDING;
    if (pending) {
        *cb->pprev = cb->next;
        if (cb->next)
            cb->next->pprev = cb->pprev;
        cb->pprev = NULL;
        cb->next = NULL;
        atomic_store_explicit(&cb->state, CB_STOPPED, memory_order_relaxed);
    }
    ctx__cancel_unlock(scope);
    cb->scope = NULL;
    int status;
    if (pending) {
        status = CTX_CANCEL_CALLBACK_STOPPED;
    } else if ((f = find_frame(cb))) {
        f->cleared = 1; /* the runner holds its own reference to the scope */
        status = CTX_CANCEL_CALLBACK_RUNNING;
    } else {
        wait_done(cb);
        status = CTX_CANCEL_CALLBACK_RAN;
    }
    /* Outside every lock: these may run value release operations. */
    ctx__hamt_release(cb->map, &ctx__box_ops);
    cb->map = CTX__HAMT_EMPTY;
    ctx_cancel_scope_release(scope);
    return status;
}

/* ---- waits ---- */

typedef struct waiter {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int monotonic;
    int woken;
} waiter_t;

static void waiter_wake(void *arg) {
    waiter_t *w = arg;
    pthread_mutex_lock(&w->mutex);
    w->woken = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

/* Sleeps on `w` until woken or `until` (CTX__NO_DEADLINE: no limit). */
static void waiter_sleep(waiter_t *w, int64_t until) {
    pthread_mutex_lock(&w->mutex);
    while (!w->woken) {
        if (until == CTX__NO_DEADLINE) {
            pthread_cond_wait(&w->cond, &w->mutex);
            continue;
        }
        int64_t left = until - ctx__monotonic_ns();
        if (left <= 0)
            break;
        struct timespec ts;
        ctx__cond_deadline(w->monotonic, left, &ts);
        pthread_cond_timedwait(&w->cond, &w->mutex, &ts);
    }
    pthread_mutex_unlock(&w->mutex);
}

/* What a wait on `s` that did not see a cancellation returns. */
static int wait_outcome(ctx_cancel_scope_t *s) {
    int err = ctx_cancel_scope_error(s);
    if (err || s->deadline > ctx__monotonic_ns())
        return err ? err : CTX_ETIMEDOUT;
    int unused = 0;
    if (ctx__tstate_get(&unused))
        ctx__cancel_expire_due(s);
    err = ctx_cancel_scope_error(s);
    return err ? err : CTX_EDEADLINE;
}

int ctx_cancel_scope_wait(ctx_cancel_scope_t *scope, int64_t timeout_ns) {
    if (!scope)
        return CTX_EINVAL;
    int64_t now = ctx__monotonic_ns();
    if (ctx_cancel_scope_error(scope) || scope->deadline <= now || timeout_ns == 0)
        return wait_outcome(scope);
    ctx__cancel_timer_ensure();
    int64_t until = CTX__NO_DEADLINE;
    if (timeout_ns > 0)
        until = now > INT64_MAX - timeout_ns ? CTX__NO_DEADLINE - 1 : now + timeout_ns;
    if (scope->deadline < until)
        until = scope->deadline;

    waiter_t w = {.woken = 0};
    if (pthread_mutex_init(&w.mutex, NULL))
        return CTX_ESYSTEM;
    if (ctx__cond_init_monotonic(&w.cond, &w.monotonic)) {
        pthread_mutex_destroy(&w.mutex);
        return CTX_ESYSTEM;
    }
    ctx_cancel_callback_t cb;
    if (ctx_cancel_callback_init_wakeup(&cb, scope, waiter_wake, &w) == 0)
        waiter_sleep(&w, until);
    ctx_cancel_callback_clear(&cb);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mutex);
    return wait_outcome(scope);
}
