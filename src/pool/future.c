/* SPDX-License-Identifier: MIT */
/*
 * future.c — the outcome of a submitted task: wait, result, cancel,
 * done-callbacks, reference counting.
 *
 * What it is for
 * --------------
 * A future is the record executor.c queued (pool_internal.h): the same
 * allocation carries the task and, later, its outcome.  This file is the
 * state machine's second half: how a record ends (ctx__future_finish), how
 * threads wait for that, and what runs when it happens.
 *
 * Waiting without a lock per future
 * ---------------------------------
 * Most futures are never waited on (fire-and-forget, or already done when
 * looked at), so a record carries no mutex or condition variable.  Waiters
 * park on one of a fixed set of striped (mutex, condvar) pairs chosen by the
 * record's address, the way a parking lot works:
 *
 *     stripes[0..63]:  { mutex, cond(CLOCK_MONOTONIC) }
 *                            ▲
 *     waiter:  lock stripe(f); f->waiters++; while (!done(f)) cond_wait;
 *     ender:   f->state = final; if (f->waiters) { lock stripe(f); broadcast }
 *
 * The ender's store of the state and load of `waiters`, and the waiter's
 * increment and load of the state, are sequentially consistent: either the
 * ender sees the waiter (and broadcasts under the stripe lock, which the
 * waiter holds until it sleeps) or the waiter sees the final state and does
 * not sleep.  An ender with no waiters touches no lock at all.  A waiter
 * polls the state briefly before it parks (short tasks end within that).
 *
 * Done-callbacks
 * --------------
 * A lock-free LIFO stack of nodes, each with the private copy of the context
 * that was current when it was added.  Ending the future swaps the stack for
 * the sentinel CTX__CB_DONE and runs the nodes oldest first; an add that
 * finds the sentinel, or finds the state already final, runs its callback at
 * once.  Nodes are only pushed, and taken all at once, so there is no ABA.
 *
 *     f->callbacks ─► [cb3] ─► [cb2] ─► [cb1] ─► NULL   (then CTX__CB_DONE)
 *
 * Invariants
 * ----------
 * - The outcome (result, error) and arg_release happen before the final
 *   state is published (release/seq_cst), and readers load the state with
 *   acquire before reading the outcome.
 * - ctx__future_finish runs once per record while the pool still holds its
 *   reference, so the record outlives every waiter and callback it wakes.
 * - Every added callback runs exactly once: by the ender if it was on the
 *   stack when the ender swapped it, otherwise by the adder.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "pool_internal.h"

#include "common/common.h"
#include "core/alloc.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------- */
/* Records                                                                 */
/* ---------------------------------------------------------------------- */

static ctx__done_cb_t cb_done_sentinel;
#define CTX__CB_DONE (&cb_done_sentinel)

/* Records start on a cache line (pool_internal.h: lines 0 and 1 are all a
 * fire-and-forget task touches), so the allocation has room to align. */
#define CTX__LINE 64

static size_t record_size(size_t depth) {
    return sizeof(struct ctx_pool_future) + depth * sizeof(void *) + CTX__LINE - 1;
}

void ctx__future_init(ctx_pool_future_t *f) {
    f->link = NULL;
    f->fn = NULL;
    f->arg = NULL;
    f->arg_release = NULL;
    f->result = NULL;
    atomic_init(&f->state, CTX__F_PENDING);
    atomic_init(&f->refs, 1);
    f->error = 0;
    f->pinned = 0;
    f->timed = 0;
    f->has_context = 0;
    f->scope = NULL;
    f->result_release = NULL;
    f->pool = NULL;
    f->group = NULL;
    CTX__DEBUG_BORN(f, CTX__KIND_FUTURE);
}

void ctx__future_init_pinned(ctx_pool_future_t *f) {
    atomic_init(&f->cancel_requested, 0);
    f->submit_ticks = 0;
    atomic_init(&f->start_ticks, 0);
    atomic_init(&f->waiters, 0);
    atomic_init(&f->callbacks, NULL);
}

ctx_pool_future_t *ctx__future_alloc(unsigned stack_depth) {
    void *block = ctx__malloc(record_size(stack_depth));
    if (!block)
        return NULL;
    ctx_pool_future_t *f =
        (ctx_pool_future_t *)(((uintptr_t)block + CTX__LINE - 1) & ~(uintptr_t)(CTX__LINE - 1));
    ctx__future_init(f);
    ctx__future_init_pinned(f);
    f->block = block;
    f->stack_depth = stack_depth;
    f->has_stack = stack_depth != 0;
    return f;
}

static void record_free(ctx_pool_future_t *f) {
    CTX__DEBUG_DIED(f, CTX__KIND_FUTURE);
    ctx__free(f->block, record_size(f->stack_depth));
}

void ctx__future_drop_context(ctx_pool_future_t *f) {
    if (f->has_context) {
        ctx__context_clear(&f->context_storage);
        f->has_context = 0;
    }
}

/* Drops the record's own reference to the task's scope (a record with a
 * future holds one; see pool_internal.h). */
static void drop_scope(ctx_pool_future_t *f) {
    if (f->pinned && f->scope) {
        ctx_cancel_scope_release(f->scope);
        f->scope = NULL;
    }
}

void ctx__future_discard(ctx_pool_future_t *f) {
    ctx__future_drop_context(f);
    drop_scope(f);
    record_free(f);
}

/* Releases what a dead record owns (its result, its scope, its pool
 * reference) and returns the pool it referenced, if any. */
static ctx_pool_t *future_clear(ctx_pool_future_t *f) {
    if (atomic_load_explicit(&f->state, memory_order_acquire) == CTX__F_COMPLETED &&
        f->result_release && f->result)
        f->result_release(f->result);
    drop_scope(f);
    return f->pinned ? f->pool : NULL;
}

static void future_free(ctx_pool_future_t *f) {
    ctx_pool_t *pool = future_clear(f);
    record_free(f);
    if (pool)
        ctx__pool_release(pool);
}

ctx_pool_future_t *ctx__future_release_keep(ctx_pool_future_t *f) {
    /* A fire-and-forget record has one reference, the queue's, and no other
     * thread can reach it: no atomic read-modify-write needed. */
    if (f->pinned && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return NULL;
#ifdef CTX_DEBUG
    /* No recycling: a freed record is what lets AddressSanitizer's
     * quarantine and the debug word catch a use after release. */
    future_free(f);
    return NULL;
#else
    if (f->has_stack) {
        future_free(f);
        return NULL;
    }
    ctx_pool_t *pool = future_clear(f);
    if (pool)
        ctx__pool_release(pool);
    return f;
#endif
}

void ctx__future_free_memory(ctx_pool_future_t *f) { record_free(f); }

ctx_pool_future_t *ctx_pool_future_retain(ctx_pool_future_t *future) {
    if (future) {
        CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_retain");
        atomic_fetch_add_explicit(&future->refs, 1, memory_order_relaxed);
    }
    return future;
}

void ctx_pool_future_release(ctx_pool_future_t *future) {
    if (!future)
        return;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_release");
    if (atomic_fetch_sub_explicit(&future->refs, 1, memory_order_acq_rel) == 1)
        future_free(future);
}

/* ---------------------------------------------------------------------- */
/* States                                                                  */
/* ---------------------------------------------------------------------- */

static int is_final(int s) {
    return s == CTX__F_COMPLETED || s == CTX__F_FAILED || s == CTX__F_CANCELLED;
}

ctx_pool_future_state_t ctx_pool_future_state(const ctx_pool_future_t *future) {
    if (!future)
        return CTX_POOL_FUTURE_PENDING;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_state");
    int s = atomic_load_explicit(&future->state, memory_order_acquire);
    return s == CTX__F_CANCELLING ? CTX_POOL_FUTURE_PENDING : (ctx_pool_future_state_t)s;
}

int ctx_pool_future_done(const ctx_pool_future_t *future) {
    if (!future)
        return 0;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_done");
    return is_final(atomic_load_explicit(&future->state, memory_order_acquire));
}

int ctx_pool_future_result(const ctx_pool_future_t *future, void **result) {
    if (!future)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_result");
    int s = atomic_load_explicit(&future->state, memory_order_acquire);
    switch (s) {
    case CTX__F_COMPLETED:
        if (result)
            *result = future->result;
        return 0;
    case CTX__F_FAILED:
        return future->error;
    case CTX__F_CANCELLED:
        return future->error; /* CTX_ECANCELLED or CTX_EDEADLINE */
    default:
        return CTX_ENOTDONE;
    }
}

int ctx_pool_future_cancel_requested(const ctx_pool_future_t *future) {
    if (!future)
        return 0;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_cancel_requested");
    return atomic_load_explicit(&future->cancel_requested, memory_order_relaxed);
}

int ctx_pool_future_queue_wait(const ctx_pool_future_t *future, uint64_t *ns) {
    if (!future || !ns)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_queue_wait");
    uint64_t start = atomic_load_explicit(&future->start_ticks, memory_order_relaxed);
    if (start == 0)
        return CTX_ENOTFOUND; /* pending, or cancelled before it started */
    *ns = ctx__pool_ticks_between(future->submit_ticks, start);
    return 0;
}

int ctx_pool_future_cancel(ctx_pool_future_t *future) {
    if (!future)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_cancel");
    int s0 = atomic_load_explicit(&future->state, memory_order_acquire);
    if (is_final(s0))
        return CTX_POOL_CANCEL_TOO_LATE;
    if (ctx__pool_forked(future->pool))
        return CTX_EFORKED; /* its pool's locks are the parent's */
    /* Cancelling the scope runs its callbacks in captured contexts, which
     * needs this thread's state: made before anything changes. */
    int err = 0;
    if (!ctx__tstate_get(&err))
        return err;
    atomic_store_explicit(&future->cancel_requested, 1, memory_order_relaxed);
    int status;
    for (;;) {
        int s = atomic_load_explicit(&future->state, memory_order_acquire);
        if (is_final(s))
            return CTX_POOL_CANCEL_TOO_LATE;
        if (s == CTX__F_CANCELLING) {
            status = CTX_POOL_CANCEL_DONE;
            break;
        }
        if (s == CTX__F_RUNNING) {
            status = CTX_POOL_CANCEL_RUNNING;
            break;
        }
        if (ctx__pool_cancel_pending(future)) {
            status = CTX_POOL_CANCEL_DONE;
            break;
        }
        /* It left the queue meanwhile: look again. */
    }
    /* The task's own scope (made at submit, held by the record as long as
     * the future): a running task sees ctx_cancel_check() fail, and so
     * does everything it started in copies of its context. */
    (void)ctx_cancel_scope_cancel(future->scope, NULL);
    return status;
}

/* ---------------------------------------------------------------------- */
/* Waiting                                                                 */
/* ---------------------------------------------------------------------- */

#define CTX__STRIPES 64

static struct stripe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
} stripes[CTX__STRIPES];
static pthread_once_t stripes_once = PTHREAD_ONCE_INIT;
static int stripes_monotonic; /* cond uses CLOCK_MONOTONIC */

static atomic_bool stripes_ready;

static void stripes_init(void) {
    for (int i = 0; i < CTX__STRIPES; i++) {
        pthread_mutex_init(&stripes[i].lock, NULL);
        ctx__cond_init_monotonic(&stripes[i].cond, &stripes_monotonic);
    }
    atomic_store(&stripes_ready, true);
}

void ctx__future_after_fork(void) {
    /* A parent thread may have held a stripe's lock or waited on its
     * condition: in the child, whose only thread is this one, both are
     * made anew (destroying them could wait for threads that are gone). */
    if (!atomic_load(&stripes_ready))
        return;
    for (int i = 0; i < CTX__STRIPES; i++) {
        memset(&stripes[i], 0, sizeof stripes[i]);
        pthread_mutex_init(&stripes[i].lock, NULL);
        ctx__cond_init_monotonic(&stripes[i].cond, &stripes_monotonic);
    }
}

static struct stripe *stripe_of(const ctx_pool_future_t *f) {
    uintptr_t a = (uintptr_t)f;
    a ^= a >> 7;
    a ^= a >> 13;
    return &stripes[a % CTX__STRIPES];
}


/* Polls before parking: a short task on a pool whose worker is polling
 * for work ends within a microsecond or two, and catching that here saves
 * a futex sleep and the ender's wake-up call. */
#ifndef CTX__WAIT_SPINS
#define CTX__WAIT_SPINS 256
#endif

static bool future_ended(void *f) {
    return is_final(atomic_load(&((ctx_pool_future_t *)f)->state));
}

int ctx_pool_future_wait(ctx_pool_future_t *future, int64_t timeout_ns) {
    if (!future)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_wait");
    if (is_final(atomic_load_explicit(&future->state, memory_order_acquire)))
        return 0;
    if (future == ctx__pool_current_task())
        return CTX_EINVAL;
    if (ctx__pool_forked(future->pool))
        return CTX_EFORKED; /* no worker will ever end it here */
    /* The waiter's own scope: a cancelled one ends the wait at once. */
    ctx_cancel_scope_t *scope = ctx__cancel_current();
    int err = scope ? ctx__cancel_scope_poll(scope) : 0;
    if (err)
        return err;
    if (timeout_ns == 0)
        return CTX_ETIMEDOUT;
    for (int i = 0; i < CTX__WAIT_SPINS; i++) {
        ctx__cpu_relax();
        if (is_final(atomic_load_explicit(&future->state, memory_order_acquire)))
            return 0;
    }

    pthread_once(&stripes_once, stripes_init);
    struct stripe *st = stripe_of(future);
    pthread_mutex_lock(&st->lock);
    int rc = ctx__pool_block(&st->lock, &st->cond, stripes_monotonic, future_ended, future,
                             &future->waiters, timeout_ns);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* ---- blocking, with the waiter's scope watched ---- */

typedef struct wake_target {
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
} wake_target_t;

/* The wake-up registered on the waiter's scope (runs on the cancelling
 * thread, never with `lock` held by it). */
static void wake_waiters(void *arg) {
    wake_target_t *w = arg;
    pthread_mutex_lock(w->lock);
    pthread_cond_broadcast(w->cond);
    pthread_mutex_unlock(w->lock);
}

static int64_t later_by(int64_t now, int64_t ns) {
    return ns < 0 || now > INT64_MAX - ns ? INT64_MAX : now + ns;
}

int ctx__pool_block(pthread_mutex_t *lock, pthread_cond_t *cond, int monotonic,
                    bool (*done)(void *arg), void *arg, atomic_int *waiters,
                    int64_t timeout_ns) {
    int64_t until = later_by(ctx__monotonic_ns(), timeout_ns); /* INT64_MAX: none */
    /* Borrowed: this thread's context cannot change while it sleeps. */
    ctx_cancel_scope_t *scope = ctx__cancel_current();
    int64_t limit = scope && scope->deadline < until ? scope->deadline : until;
    wake_target_t target = {lock, cond};
    ctx_cancel_callback_t cb;
    if (scope) {
        /* Registered without `lock`: on a scope cancelled meanwhile the
         * wake-up runs at once, here, and takes it. */
        pthread_mutex_unlock(lock);
        (void)ctx_cancel_callback_init_wakeup(&cb, scope, wake_waiters, &target);
        pthread_mutex_lock(lock);
    }
    if (waiters)
        atomic_fetch_add(waiters, 1);
    int rc = 0;
    bool expired = false;
    for (;;) {
        if (done(arg))
            break;
        if (scope && (rc = ctx_cancel_scope_error(scope)) != 0)
            break;
        if (limit == INT64_MAX) {
            pthread_cond_wait(cond, lock);
            continue;
        }
        int64_t now = ctx__monotonic_ns();
        if (now >= limit) {
            expired = true;
            break;
        }
        struct timespec ts;
        ctx__cond_deadline(monotonic, limit - now, &ts);
        pthread_cond_timedwait(cond, lock, &ts);
    }
    if (waiters)
        atomic_fetch_sub(waiters, 1);
    if (!scope && !expired)
        return 0; /* done */
    /* Outside `lock`: a clear waits for a wake-up running on another
     * thread, and an expired deadline cancels its scope here (callbacks). */
    pthread_mutex_unlock(lock);
    if (scope)
        (void)ctx_cancel_callback_clear(&cb);
    if (expired && !done(arg)) {
        /* The scope's deadline (which the poll enforces) or the timeout. */
        rc = scope ? ctx__cancel_scope_poll(scope) : 0;
        if (rc == 0)
            rc = CTX_ETIMEDOUT;
    }
    pthread_mutex_lock(lock);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Ending a future, done-callbacks                                         */
/* ---------------------------------------------------------------------- */

typedef struct cb_call {
    ctx__done_cb_t *cb;
    ctx_pool_future_t *future;
} cb_call_t;

static void *cb_trampoline(void *p) {
    cb_call_t *c = p;
    c->cb->fn(c->future, c->cb->user);
    return NULL;
}

/* Runs one callback in its context and frees the node. */
static void run_callback(ctx_pool_future_t *f, ctx__done_cb_t *cb) {
    cb_call_t call = {cb, f};
    int rc = ctx_context_run(cb->context, cb_trampoline, &call, NULL);
    if (rc < 0 && rc != CTX_ENOTCURRENT) {
        /* The context could not be entered (this thread had no ctxvar state
         * and no memory for it).  A callback is never lost: it runs outside
         * any entered context, where variables read their defaults. */
        cb->fn(f, cb->user);
    }
    ctx_context_release(cb->context);
    ctx__free(cb, sizeof *cb);
}

void ctx__future_finish(ctx_pool_future_t *f, int state, int error, void *result) {
    f->result = state == CTX__F_COMPLETED ? result : NULL;
    f->error = error;
    if (f->arg_release) {
        f->arg_release(f->arg);
        f->arg_release = NULL;
    }
    if (!f->pinned) {
        /* Fire-and-forget: no handle exists, so no one can wait or have
         * added a callback; the state is for the record's own bookkeeping. */
        atomic_store_explicit(&f->state, state, memory_order_relaxed);
        return;
    }
    atomic_store(&f->state, state);
    if (atomic_load(&f->waiters) > 0) {
        /* The lock and unlock order the state's store before any waiter's
         * check under the lock (a waiter that checked before is asleep on
         * the condition variable by the time the lock is free); the
         * broadcast comes after, so a woken waiter does not block at once
         * on a lock this thread still holds (glibc does not hand the mutex
         * over).  The stripes' condition variables live for the process. */
        struct stripe *st = stripe_of(f);
        pthread_mutex_lock(&st->lock);
        pthread_mutex_unlock(&st->lock);
        pthread_cond_broadcast(&st->cond);
    }

    ctx__done_cb_t *list = atomic_exchange_explicit(&f->callbacks, CTX__CB_DONE,
                                                    memory_order_acq_rel);
    /* The stack is newest first: reverse it to run in the order added. */
    ctx__done_cb_t *ordered = list;
    CTX__LIST_REVERSE(ctx__done_cb_t, ordered, next);
    while (ordered) {
        ctx__done_cb_t *next = ordered->next;
        run_callback(f, ordered);
        ordered = next;
    }
}

int ctx_pool_future_add_done_callback(ctx_pool_future_t *future, ctx_pool_future_done_fn fn,
                                 void *user) {
    if (!future || !fn)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_add_done_callback");
    if (!is_final(atomic_load_explicit(&future->state, memory_order_acquire)) &&
        ctx__pool_forked(future->pool))
        return CTX_EFORKED; /* it would never run */
    ctx__done_cb_t *cb = ctx__malloc(sizeof *cb);
    if (!cb)
        return CTX_ENOMEM;
    int rc = ctx_context_copy_current(&cb->context);
    if (rc != 0) {
        ctx__free(cb, sizeof *cb);
        return rc;
    }
    cb->fn = fn;
    cb->user = user;

    ctx__done_cb_t *head =
        atomic_load_explicit(&future->callbacks, memory_order_acquire);
    /* Only the completer's exchange decides: a callback pushed before it is
     * run by the completer after every earlier one (order kept even when the
     * state is already final); one that finds CTX__CB_DONE runs here. */
    for (;;) {
        if (head == CTX__CB_DONE)
            break;
        cb->next = head;
        if (atomic_compare_exchange_weak_explicit(&future->callbacks, &head, cb,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return 0;
    }
    run_callback(future, cb); /* already ended: at once, in the caller */
    return 0;
}
