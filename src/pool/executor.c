/* SPDX-License-Identifier: MIT */
/*
 * executor.c — the context-propagating thread pool: its public face and its
 * workers.
 *
 * What it is for
 * --------------
 * Python's ThreadPoolExecutor runs a task in whatever context the worker
 * thread happens to have: the submitter's values are lost, and a worker that
 * inherited its creator's context keeps those stale values pinned for its
 * whole life.  Here `submit` captures the submitter's context in O(1) (the
 * core's copy shares every map node) and the worker runs the task inside
 * that private copy, then drops it.  The copy lives inside the task's record
 * (core/embed.c: no context allocation, no cross-thread free), and is run
 * with ctx__context_run_private (no atomic read-modify-write: nobody else
 * can reach it).  The worker's own context is never the
 * current one while a task runs, so nothing can be left over from an
 * earlier task or from the thread that created the pool.
 *
 * The pool in four files
 * ----------------------
 *
 *   submit ─► record (recycle.c) ─► context (propagation.c) ─► queue (queue.c)
 *                                                                  │
 *   worker ◄─ ctx__queue_next (queue.c: pop, poll, park) ◄──────────┘
 *      └─► run_task: stamp, run in the context, drop it, count, end the
 *          future (future.c), hand the dead record back (recycle.c)
 *
 * This file: creation (validation, workers started and warmed up), submit
 * (build the record), the worker loop and run_task, shutdown, release,
 * stats.  The queue and the sleep/wake-up protocol are queue.c's; record
 * recycling recycle.c's; the propagation policy propagation.c's.
 *
 * Per-task work, fire-and-forget, propagation on, steady state (what the
 * benchmark's pool_task_ns measures, and what to keep short):
 *   submit:  a spare record off the thread's own list; initialise its
 *            first line; one reference on the submitter's map root; one CAS
 *            on the queue's tail; a read of the idle count.  One stamp in
 *            16 (clock.c).
 *   worker:  one lock round to pop; run in the embedded context; drop the
 *            map reference; bump a counter of its own; end the future
 *            (no atomics for a record nobody holds a future for); the dead
 *            record onto its own list.
 *
 * Lifetime: the pool's memory is reference counted: one reference for the
 * owner (dropped by ctx_pool_release) and one per record that someone holds
 * a future for (dropped when the record is freed).  So a future may be
 * cancelled or inspected after the pool was destroyed, and a cancel racing
 * with the end of the pool never locks a freed mutex.  A fire-and-forget
 * record (no future handed out) can only be touched by the workers and by
 * shutdown, which the owner's reference outlives, so it pins nothing.  The
 * threads, the policy context and the allowlist are released by
 * ctx_pool_release itself.
 *
 * Invariants
 * ----------
 * - Each accepted record is ended by ctx__future_finish exactly once: by the
 *   worker that popped it, or by the thread that took it out of the queue to
 *   cancel it (ctx_pool_future_cancel, or a CANCEL shutdown).
 * - Once shutdown has begun no record enters the queue; workers exit when
 *   nothing PENDING is left, so DRAIN runs everything and CANCEL has
 *   already taken everything.
 * - A failed submit has touched nothing the caller gave it: the record and
 *   the context copy are freed, fn and arg_release are never called.
 * - No user code runs with a pool lock held (queue.c).
 *
 * Worker notes: a task whose context cannot be entered (CTX_ENOMEM: the
 * worker thread had no ctxvar state yet and none could be made) never runs
 * and its future fails with that code.  A task that returns with a context
 * it entered still entered breaks ctx_context_run's contract: its future
 * fails with CTX_ENOTCURRENT (any result it stored is released).  The task's
 * own context is unlinked from under the abandoned ones (so its record can
 * be reused); later tasks on that worker still run in their own contexts
 * (entered on top); the abandoned contexts are released when the worker
 * exits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "pool_internal.h"

#include "common/common.h"
#include "core/alloc.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#define CTX__POOL_MAX_THREADS 4096

static _Thread_local ctx_pool_t *tls_pool;        /* the pool this thread works for */
static _Thread_local ctx_pool_future_t *tls_task; /* the task running right now */
static _Thread_local unsigned tls_submits;        /* picks the stamped tasks */

/* ---------------------------------------------------------------------- */
/* fork()                                                                  */
/* ---------------------------------------------------------------------- */

/* After fork() the child has one thread: a pool made before the fork has no
 * workers there, and its locks may be held by threads that do not exist.
 * Every pool remembers the fork generation it was made in; the child
 * handler bumps the generation, so the pool knows it is a parent's (one
 * relaxed load per call).  Such a pool answers every call that needs its
 * workers or its locks with CTX_EFORKED, and ctx_pool_release returns
 * without joining or freeing anything (the memory is the child's copy of
 * the parent's; it goes when the child exits).  The handler also makes the
 * futures' wait stripes fresh (future.c), so pools made in the child work. */
static atomic_uint fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int fork_watch_rc;

static void after_fork_child(void) {
    atomic_fetch_add_explicit(&fork_generation, 1, memory_order_relaxed);
    ctx__future_after_fork();
}

static void fork_install(void) {
    fork_watch_rc = pthread_atfork(NULL, NULL, after_fork_child) == 0 ? 0 : CTX_ESYSTEM;
}

int ctx__pool_fork_watch(void) {
    pthread_once(&fork_once, fork_install);
    return fork_watch_rc;
}

unsigned ctx__pool_fork_generation(void) {
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

bool ctx__pool_forked(const ctx_pool_t *pool) {
    return pool->generation != ctx__pool_fork_generation();
}

/* ---------------------------------------------------------------------- */
/* Small helpers                                                           */
/* ---------------------------------------------------------------------- */

ctx_pool_future_t *ctx__pool_current_task(void) { return tls_task; }

ctx_pool_t *ctx__pool_of_this_thread(void) { return tls_pool; }

int ctx_pool_task_cancelled(void) {
    /* One mechanism: ctx_pool_future_cancel cancels the task's scope. */
    return ctx_cancel_check() != 0;
}

size_t ctx_pool_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

/* Only the slot's own worker writes it: a relaxed load and store suffice. */
static void bump(atomic_uint_fast64_t *counter) {
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void record_max_wait(ctx__worker_t *self, uint64_t wait) {
    if (wait > atomic_load_explicit(&self->w.max_wait_ticks, memory_order_relaxed))
        atomic_store_explicit(&self->w.max_wait_ticks, wait, memory_order_relaxed);
}

static void pool_free(ctx_pool_t *pool) {
    ctx__recycle_pool_free(pool);
    ctx__queue_destroy(pool);
    ctx__free(pool->workers, pool->nthreads * sizeof *pool->workers);
    ctx__free(pool, sizeof *pool);
}

void ctx__pool_retain(ctx_pool_t *pool) {
    atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
}

void ctx__pool_release(ctx_pool_t *pool) {
    /* In a fork child the parent's pool is left alone (see fork() above). */
    if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) == 1 &&
        !ctx__pool_forked(pool))
        pool_free(pool);
}

/* Ends the future of `f` (its context already dropped), telling its
 * group, if any, before (a failure cancels the siblings first) and after
 * (one fewer pending). */
static void end_task(ctx_pool_future_t *f, int state, int error, void *result) {
    ctx_pool_group_t *group = f->group;
    if (group)
        ctx__group_task_ending(group, f, state, error);
    ctx__future_finish(f, state, error, result);
    if (group) {
        f->group = NULL;
        ctx__group_task_ended(group);
    }
}

/* Drops the task's context; a borrowed scope goes with it. */
static void drop_task_context(ctx_pool_future_t *f) {
    ctx__future_drop_context(f);
    if (!f->pinned)
        f->scope = NULL;
}

void ctx__pool_finish_cancelled(ctx_pool_t *pool, ctx_pool_future_t *f) {
    drop_task_context(f);
    atomic_fetch_add_explicit(&pool->cancelled, 1, memory_order_relaxed);
    end_task(f, CTX__F_CANCELLED, CTX_ECANCELLED, NULL);
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */
/* ---------------------------------------------------------------------- */

static void *task_trampoline(void *p) {
    ctx_pool_future_t *f = p;
    f->error = f->fn(f->arg, &f->result);
    return NULL;
}

/* The future's final state and error for a run that returned `rc` (the
 * task's own code is in f->error); drops a result that cannot stand. */
static int outcome(ctx_pool_future_t *f, int rc, int *error) {
    if (rc < 0 && rc != CTX_ENOTCURRENT) {
        *error = rc; /* never ran: the context could not be entered */
        f->result = NULL;
        return CTX__F_FAILED;
    }
    if (rc == CTX_ENOTCURRENT) {
        *error = rc;
        if (f->error == 0 && f->result && f->result_release)
            f->result_release(f->result);
        f->result = NULL;
        return CTX__F_FAILED;
    }
    if (f->error == 0) {
        *error = 0;
        return CTX__F_COMPLETED;
    }
    f->result = NULL;
    if (f->error == CTX_ECANCELLED || f->error == CTX_EDEADLINE) {
        *error = f->error; /* gave up: asked to, or out of time */
        return CTX__F_CANCELLED;
    }
    *error = f->error < 0 ? f->error : CTX_ECALLBACK;
    return CTX__F_FAILED;
}

/* Runs `f` and ends its future; returns its memory if it died here and can
 * be recycled, else NULL. */
static ctx_pool_future_t *run_task(ctx__worker_t *self, ctx_pool_future_t *f) {
    /* A task whose scope is cancelled, or whose deadline has passed, never
     * starts: it ends cancelled with the scope's error. */
    int cancelled = f->scope ? ctx__cancel_scope_poll(f->scope) : 0;
    if (cancelled) {
        drop_task_context(f);
        bump(&self->w.cancelled);
        end_task(f, CTX__F_CANCELLED, cancelled, NULL);
        return ctx__future_release_keep(f); /* the queue's reference */
    }
    if (f->timed) {
        uint64_t start = ctx__pool_ticks();
        atomic_store_explicit(&f->start_ticks, start ? start : 1, memory_order_relaxed);
        record_max_wait(self, start > f->submit_ticks ? start - f->submit_ticks : 0);
    }
    f->error = 0;
    f->result = NULL;
    tls_task = f;
    int rc = ctx__context_run_private(&f->context_storage, task_trampoline, f, NULL);
    tls_task = NULL;
    /* The embedded run leaves the context out of the thread's chain even if
     * the task left contexts of its own entered: it can go now. */
    drop_task_context(f);

    int error;
    int state = outcome(f, rc, &error);
    bump(state == CTX__F_COMPLETED ? &self->w.completed
         : state == CTX__F_FAILED  ? &self->w.failed
                                   : &self->w.cancelled);
    end_task(f, state, error, f->result);
    return ctx__future_release_keep(f); /* the queue's reference */
}

typedef struct light_call {
    ctx_pool_task_fn fn;
    void *arg;
    int error;
} light_call_t;

static void *light_trampoline(void *p) {
    light_call_t *c = p;
    void *result = NULL; /* nobody can read it: dropped */
    c->error = c->fn(c->arg, &result);
    return NULL;
}

/* Runs a light task (a fire-and-forget task without a record) in an
 * embedded context rebuilt from its map, and counts its outcome. */
static void run_light(ctx__worker_t *self, const ctx__slot_t *slot) {
    ctx_context_t ctx;
    ctx__policy_context_of_map(&ctx, slot->map);
    light_call_t call = {slot->fn, slot->arg, 0};
    int rc = ctx__context_run_private(&ctx, light_trampoline, &call, NULL);
    /* The context holds one map reference: the task's own if its sets
     * replaced the map (the core dropped the submitter's then), dropped
     * now; else the one the submitter took, dropped with others of the same
     * map (propagation.c). */
    if (ctx.map.root == slot->map.root)
        ctx__policy_drop_map_later(self->w.debts, ctx.map);
    else
        ctx__context_clear(&ctx);
    int error = rc < 0 ? rc : call.error;
    bump(error == 0                                            ? &self->w.completed
         : error == CTX_ECANCELLED || error == CTX_EDEADLINE ? &self->w.cancelled
                                                              : &self->w.failed);
}

/* Makes sure this thread has its ctxvar state before the first task, so
 * that entering a task's context does not have to allocate it then.  A
 * failure is harmless: the core tries again at the first task. */
static void warm_up(void) {
    ctx_context_t *c = NULL;
    if (ctx_context_new(&c) != 0)
        return;
    if (ctx_context_enter(c) == 0)
        (void)ctx_context_exit(c);
    ctx_context_release(c);
}

static void *worker_main(void *p) {
    ctx__worker_t *self = p;
    ctx_pool_t *pool = self->w.pool;
    tls_pool = pool;
#if defined(__GLIBC__)
    (void)pthread_setname_np(pthread_self(), "ctx-pool"); /* for top, gdb, perf */
#endif
    warm_up();
    pthread_mutex_lock(&pool->lock);
    if (++pool->warm_workers == pool->nthreads)
        pthread_cond_broadcast(&pool->exited); /* ctx_pool_new waits on it */
    pthread_mutex_unlock(&pool->lock);

    ctx__slot_t slot;
    while (ctx__queue_next(pool, self, &slot)) {
        if (slot.fn != ctx__slot_record) {
            run_light(self, &slot);
        } else {
            ctx_pool_future_t *dead = run_task(self, slot.arg);
            if (dead)
                ctx__recycle_give(pool, self, dead);
        }
        atomic_store_explicit(&self->w.busy, 0, memory_order_release);
    }
    ctx__policy_settle(self->w.debts);
    ctx__recycle_worker_exit(self);

    pthread_mutex_lock(&pool->lock);
    if (--pool->live_workers == 0)
        pthread_cond_broadcast(&pool->exited);
    pthread_mutex_unlock(&pool->lock);
    tls_pool = NULL;
    (void)ctx_thread_release();
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Creation                                                                */
/* ---------------------------------------------------------------------- */

/* Stops and joins the first `started` workers of a pool being created. */
static void abort_start(ctx_pool_t *pool, size_t started) {
    (void)ctx__queue_close(pool, false);
    for (size_t i = 0; i < started; i++)
        pthread_join(pool->workers[i].w.thread, NULL);
}

/* Starts the workers (they take no signals: those are the application's
 * business) and waits until each has its ctxvar state.  0 or CTX_ESYSTEM
 * (then none is left running). */
static int start_workers(ctx_pool_t *pool) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    size_t started = 0;
    pool->live_workers = pool->nthreads;
    for (; started < pool->nthreads; started++)
        if (pthread_create(&pool->workers[started].w.thread, NULL, worker_main,
                           &pool->workers[started]) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started < pool->nthreads) {
        pthread_mutex_lock(&pool->lock);
        pool->live_workers = started;
        pthread_mutex_unlock(&pool->lock);
        abort_start(pool, started);
        return CTX_ESYSTEM;
    }
    /* Ready means ready: every worker has its ctxvar state. */
    pthread_mutex_lock(&pool->lock);
    while (pool->warm_workers < pool->nthreads)
        pthread_cond_wait(&pool->exited, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

/* A zeroed pool for `o` with its worker slots, or NULL. */
static ctx_pool_t *pool_alloc(const ctx_pool_options_t *o) {
    ctx_pool_t *pool = ctx__malloc(sizeof *pool);
    if (!pool)
        return NULL;
    memset(pool, 0, sizeof *pool);
    pool->workers = ctx__malloc(o->threads * sizeof *pool->workers);
    if (!pool->workers) {
        ctx__free(pool, sizeof *pool);
        return NULL;
    }
    memset(pool->workers, 0, o->threads * sizeof *pool->workers);
    pool->nthreads = o->threads;
    pool->queue_capacity = o->queue_capacity;
    pool->when_full = o->when_full;
    pool->capture_stack = o->capture_stack != 0;
    pool->max_spinners = o->threads <= 8 ? 1 : (unsigned)(o->threads / 8);
    pool->polls = ctx__pool_pauses_for_us(CTX__POOL_POLL_US);
    pool->generation = ctx__pool_fork_generation();
    atomic_init(&pool->refs, 1);
    atomic_init(&pool->published, 0);
    atomic_init(&pool->room_waiters, 0);
    atomic_init(&pool->removed, 0);
    atomic_init(&pool->stopping, false);
    atomic_init(&pool->idle_count, 0);
    atomic_init(&pool->spinners, 0);
    atomic_init(&pool->cancelled, 0);
    atomic_init(&pool->rejected, 0);
    atomic_init(&pool->spare_lock, 0);
    atomic_init(&pool->spare_count, 0);
    for (size_t i = 0; i < o->threads; i++) {
        ctx__worker_t *w = &pool->workers[i];
        w->w.pool = pool;
        atomic_init(&w->w.completed, 0);
        atomic_init(&w->w.failed, 0);
        atomic_init(&w->w.cancelled, 0);
        atomic_init(&w->w.max_wait_ticks, 0);
        atomic_init(&w->w.busy, 0);
        w->w.poll_credit = 4;
    }
    return pool;
}

int ctx_pool_new(const ctx_pool_options_t *options, ctx_pool_t **out) {
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    if (!out)
        return CTX_EINVAL;
    if (options &&
        ctx__struct_in(&o, sizeof o, options, CTX__SIZE_1_0(ctx_pool_options_t, capture_stack)))
        return CTX_EINVAL;
    if (o.threads == 0)
        o.threads = ctx_pool_default_threads();
    if (o.threads > CTX__POOL_MAX_THREADS || !ctx__policy_valid_kind(o.propagation) ||
        (o.when_full != CTX_POOL_FULL_WAIT && o.when_full != CTX_POOL_FULL_FAIL))
        return CTX_EINVAL;

    int rc = ctx__pool_fork_watch();
    if (rc != 0)
        return rc;
    ctx__policy_t policy;
    rc = ctx__policy_init(&policy, o.propagation, o.context, o.allowlist, o.allowlist_len);
    if (rc != 0)
        return rc;
    ctx__pool_clock_init(); /* before pool_alloc: it measures the pause */
    ctx_pool_t *pool = pool_alloc(&o);
    if (!pool) {
        ctx__policy_release(&policy);
        return CTX_ENOMEM;
    }
    pool->policy = policy;
    rc = ctx__queue_init(pool);
    if (rc != 0) {
        ctx__policy_release(&pool->policy);
        ctx__free(pool->workers, pool->nthreads * sizeof *pool->workers);
        ctx__free(pool, sizeof *pool);
        return rc;
    }
    rc = start_workers(pool);
    if (rc != 0) {
        ctx__policy_release(&pool->policy);
        pool_free(pool);
        return rc;
    }
    *out = pool;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Submit                                                                  */
/* ---------------------------------------------------------------------- */

/* A fresh record for a submit (a spare when there is one), with room for
 * `depth` stack frames, or NULL. */
static ctx_pool_future_t *record_for_submit(ctx_pool_t *pool, size_t depth) {
    ctx_pool_future_t *f = depth == 0 ? ctx__recycle_take(pool) : NULL;
    if (f) {
        ctx__future_init(f);
        return f;
    }
    return ctx__future_alloc((unsigned)depth);
}

/* submit_light's answer when the captured map holds a cancellation scope:
 * the task needs a record (nothing was queued or kept). */
#define CTX__POOL_NEEDS_RECORD 1

/* A light task: the slot alone, no record (see queue.c). */
static int submit_light(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                        const ctx__policy_t *policy) {
    ctx__slot_t slot = {fn, arg, {NULL, 0}};
    int rc;
    bool borrowed = ctx__policy_borrow_map(policy, &slot.map);
    if (!borrowed && (rc = ctx__policy_capture_map(policy, &slot.map)) != 0)
        return rc;
    if (!borrowed && ctx__cancel_map_scope(&slot.map)) {
        ctx__policy_drop_map(slot.map);
        return CTX__POOL_NEEDS_RECORD;
    }
    /* A borrowed map is retained by the push itself, next to its lock
     * (queue.c): one full fence less per submit. */
    rc = ctx__queue_push(pool, &slot, borrowed);
    if (rc != 0) {
        atomic_fetch_add_explicit(&pool->rejected, rc != CTX_ENOMEM, memory_order_relaxed);
        if (!borrowed)
            ctx__policy_drop_map(slot.map);
    }
    return rc;
}

/* The task's scope, in a record whose context is made: for a task with a
 * future, its own scope, a child of its context's (or of its group's),
 * made now and put into its context (the record keeps a reference:
 * ctx_pool_future_cancel cancels it); otherwise the scope its context holds
 * (a group task's context gets the group's).  0 or CTX_ENOMEM (nothing
 * kept). */
static int task_scope(ctx_pool_future_t *f, ctx_pool_group_t *group, bool has_group_scope) {
    ctx_cancel_scope_t *parent =
        group ? ctx__group_scope(group) : ctx__cancel_map_scope(&f->context_storage.map);
    if (!f->pinned) {
        int rc = group && !has_group_scope ? ctx__cancel_context_put(&f->context_storage, parent) : 0;
        if (rc == 0)
            f->scope = parent; /* borrowed from the context */
        return rc;
    }
    ctx_cancel_scope_t *own;
    int rc = ctx_cancel_scope_new(parent, NULL, &own);
    if (rc != 0)
        return rc;
    rc = ctx__cancel_context_put(&f->context_storage, own);
    if (rc != 0) {
        ctx_cancel_scope_release(own);
        return rc;
    }
    f->scope = own; /* the record's reference */
    return 0;
}

/* A task that needs a record (see ctx__pool_submit). */
static int submit_record(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                         const ctx_pool_submit_options_t *options, const ctx__policy_t *policy,
                         void *const *frames, size_t depth, bool timed, ctx_pool_group_t *group,
                         ctx_pool_future_t **out) {
    ctx_pool_future_t *f = record_for_submit(pool, depth);
    if (!f)
        return CTX_ENOMEM;
    f->pinned = out != NULL;
    /* A group's COPY task: the submitter's context with the group's scope
     * already in it (group.c). */
    bool from_group = group && policy->kind == CTX_POOL_PROPAGATE_COPY;
    int rc = from_group ? ctx__group_context(group, &f->context_storage)
                        : ctx__policy_make_context(policy, f);
    f->has_context = rc == 0;
    if (rc == 0)
        rc = task_scope(f, group, from_group);
    if (rc != 0) {
        ctx__future_discard(f);
        return rc;
    }
    if (depth)
        memcpy(f->stack, frames, depth * sizeof *frames);
    f->fn = fn;
    f->arg = arg;
    if (options) {
        f->arg_release = options->arg_release;
        f->result_release = options->result_release;
    }
    f->pool = pool;
    f->group = group;
    if (out)
        atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    if (timed || out) {
        ctx__future_init_pinned(f); /* line 2: waiters, callbacks, stamps */
        f->timed = timed;
        if (timed)
            f->submit_ticks = ctx__pool_ticks();
    }

    if (out) /* only a record someone can cancel pins the pool (see above) */
        atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
    ctx__slot_t slot = {ctx__slot_record, f, {NULL, 0}};
    rc = ctx__queue_push(pool, &slot, false);
    if (rc != 0) {
        if (out)
            atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&pool->rejected, rc != CTX_ENOMEM, memory_order_relaxed);
        f->group = NULL; /* the caller undoes its count */
        ctx__future_discard(f);
        return rc;
    }
    if (out)
        *out = f;
    return 0;
}

/* 1 if a fire-and-forget task under `policy` would run in a context with a
 * cancellation scope, as far as the submitter can tell cheaply: then it
 * takes a record, whose scope a worker checks before running it.  For
 * CONTEXT and ALLOWLIST the light path looks at the map it captured. */
static bool submitter_scoped(const ctx__policy_t *policy) {
    return policy->kind == CTX_POOL_PROPAGATE_COPY && ctx__cancel_current() != NULL;
}

int ctx__pool_submit(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                     const ctx_pool_submit_options_t *user_options, ctx_pool_future_t **out,
                     ctx_pool_group_t *group) {
    if (!pool || !fn)
        return CTX_EINVAL;
    if (ctx__pool_forked(pool))
        return CTX_EFORKED;
    ctx_pool_submit_options_t copy, *options = NULL;
    if (user_options) {
        if (ctx__struct_in(&copy, sizeof copy, user_options,
                           CTX__SIZE_1_0(ctx_pool_submit_options_t, capture_stack)))
            return CTX_EINVAL;
        options = &copy;
    }
    ctx__policy_t policy = pool->policy;
    bool capture = pool->capture_stack;
    if (options) {
        int prc = ctx__policy_for_submit(&pool->policy, options->propagation, options->context,
                                         options->allowlist, options->allowlist_len, &policy);
        if (prc != 0)
            return prc;
        capture = capture || options->capture_stack;
    }
    /* Fire-and-forget with nothing that needs a record: a light task, but
     * for one in CTX__POOL_TIME_EVERY, which is stamped (clock.c), and one
     * whose context has a cancellation scope (a worker checks it). */
    bool timed = out || ++tls_submits % CTX__POOL_TIME_EVERY == 0;
    if (!timed && !capture && !group &&
        (!options || (!options->arg_release && !options->result_release)) &&
        !submitter_scoped(&policy)) {
        int rc = submit_light(pool, fn, arg, &policy);
        if (rc != CTX__POOL_NEEDS_RECORD)
            return rc;
    }
    /* The submitting stack, from the caller of the public submit call. */
    void *frames[CTX__STACK_MAX];
    size_t depth = capture ? ctx__stack_capture(frames, CTX__STACK_MAX, 2) : 0;
    return submit_record(pool, fn, arg, options, &policy, frames, depth, timed, group, out);
}

int ctx_pool_submit_ex(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                       const ctx_pool_submit_options_t *user_options, ctx_pool_future_t **out) {
    return ctx__pool_submit(pool, fn, arg, user_options, out, NULL);
}

int ctx_pool_submit(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg, ctx_pool_future_t **out) {
    return ctx_pool_submit_ex(pool, fn, arg, NULL, out);
}

/* ---------------------------------------------------------------------- */
/* Shutdown, release, stats                                                */
/* ---------------------------------------------------------------------- */

int ctx_pool_shutdown(ctx_pool_t *pool, ctx_pool_shutdown_mode_t mode) {
    if (!pool || (mode != CTX_POOL_SHUTDOWN_DRAIN && mode != CTX_POOL_SHUTDOWN_CANCEL))
        return CTX_EINVAL;
    if (ctx__pool_forked(pool))
        return CTX_EFORKED;
    if (ctx__queue_close(pool, mode == CTX_POOL_SHUTDOWN_CANCEL) && mode == CTX_POOL_SHUTDOWN_CANCEL)
        ctx__queue_cancel_all(pool);
    if (tls_pool == pool)
        return 0; /* a task of this pool: the workers end after it returns */
    pthread_mutex_lock(&pool->lock);
    while (pool->live_workers > 0)
        pthread_cond_wait(&pool->exited, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

int ctx_pool_release(ctx_pool_t *pool) {
    if (!pool)
        return CTX_EINVAL;
    if (tls_pool == pool)
        return CTX_EBUSY;
    if (ctx__pool_forked(pool)) {
        ctx__pool_release(pool); /* frees nothing: see fork() above */
        return 0;
    }
    (void)ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN);
    for (size_t i = 0; i < pool->nthreads; i++)
        pthread_join(pool->workers[i].w.thread, NULL);
    ctx__policy_release(&pool->policy);
    ctx__recycle_thread_free();
    ctx__pool_release(pool);
    return 0;
}

int ctx_pool_stats(ctx_pool_t *pool, ctx_pool_stats_t *user_out) {
    if (!pool || !user_out)
        return CTX_EINVAL;
    if (ctx__pool_forked(pool))
        return CTX_EFORKED;
    size_t user_size;
    memcpy(&user_size, user_out, sizeof user_size);
    if (user_size < sizeof(size_t))
        return CTX_EINVAL;
    ctx_pool_stats_t stats = CTX_STRUCT_INIT(ctx_pool_stats_t), *out = &stats;
    out->threads = pool->nthreads;
    ctx__queue_counts(pool, &out->queued, &out->running, &out->submitted);
    out->cancelled = atomic_load_explicit(&pool->cancelled, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&pool->rejected, memory_order_relaxed);
    uint64_t max_wait = 0;
    for (size_t i = 0; i < pool->nthreads; i++) {
        const ctx__worker_t *w = &pool->workers[i];
        out->completed += atomic_load_explicit(&w->w.completed, memory_order_relaxed);
        out->failed += atomic_load_explicit(&w->w.failed, memory_order_relaxed);
        out->cancelled += atomic_load_explicit(&w->w.cancelled, memory_order_relaxed);
        uint64_t wait = atomic_load_explicit(&w->w.max_wait_ticks, memory_order_relaxed);
        if (wait > max_wait)
            max_wait = wait;
    }
    out->max_queue_wait_ns = max_wait ? ctx__pool_ticks_to_ns(max_wait) : 0;
    return ctx__struct_out(user_out, &stats, sizeof stats);
}
