/*
 * executor.c — the context-propagating thread pool.
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
 * with ctx__context_run_embedded.  The worker's own
 * context is never the current one while a task runs, so nothing can be
 * left over from an earlier task or from the thread that created the pool.
 *
 * Data structure
 * --------------
 *
 *   submitters ──CAS──► incoming: rec ─► rec ─► rec   (LIFO, lock-free)
 *   (unbounded pool)          │ drain_locked: take all, reverse
 *                             ▼
 *   submitters ──► [ lock | head ─► rec ⇄ rec ⇄ rec ◄─ tail ] ──► workers
 *   (bounded pool)    │                                         (fixed
 *                     ├─ cond `work`   : workers sleeping on an empty queue
 *                     ├─ cond `room`   : submitters waiting on a full queue
 *                     └─ cond `exited` : shutdown waiting for the workers
 *
 * A record (struct ctx_pool_future, pool_internal.h) is the task and its future
 * in one allocation; the queue is an intrusive doubly linked list through
 * the records, so queuing allocates nothing and a cancelled record is
 * unlinked in O(1) (it frees its slot in a bounded queue at once).
 *
 * A submit to an unbounded pool takes no lock: it pushes its record on
 * `incoming` with one compare-and-swap.  Whoever next holds the lock and
 * needs the queue (a worker that found the FIFO empty, a cancel, stats,
 * shutdown) moves the whole stack to the FIFO in submission order, counting
 * it as queued and submitted then; so everything read under the lock is
 * exact once drained.  Shutdown swaps `incoming` for the CTX__CLOSED mark
 * under the lock: a push either came before (and is queued by shutdown) or
 * sees the mark and is refused.  A bounded pool queues under the lock, as
 * admission against the capacity needs it.
 *
 * One mutex protects the FIFO, the counters of queued and running tasks and
 * the sleep bookkeeping.  The outcome counters (completed, failed, ...) and
 * the longest queue wait live in one slot per worker, written only by that
 * worker (no shared cache line per task); cancels and refusals made by other
 * threads go to two pool-wide atomics.
 *
 * Sleeping and waking (where the time of a short task goes)
 * ----------------------------------------------------------
 * A futex sleep and wake costs microseconds, tens of times an empty task, so
 * the pool avoids them while work flows:
 *   - a worker that finds the queue empty first *polls* for a few
 *     microseconds (CTX__POOL_SPINS pauses) on `incoming` and on `poke` (a
 *     counter bumped by bounded enqueues and shutdown), and sleeps on
 *     `work` only if nothing came;
 *   - a submit signals `work` only for tasks the pollers will not take
 *     (`queued` > `pollers`) and only when more workers sleep than have
 *     already been signalled (`sleepers` > `wakeups`), so a burst of
 *     submits to a busy pool makes no system calls; an unbounded submit
 *     even skips the lock unless `idle` (sleepers - wakeups, published
 *     under the lock) is non-zero;
 *   - the mutex is glibc's adaptive one where available (spins briefly on
 *     contention instead of sleeping at once).
 * No wake-up can be lost: a worker about to sleep publishes `idle` and then
 * looks at `incoming` once more, while a submit pushes and then reads
 * `idle` (all four sequentially consistent), so at least one of them sees
 * the other; a submit that sees a sleeper decides under the lock, which the
 * sleeper holds from its last look until it waits.  When `idle` reads 0
 * every sleeper has a signal on its way and will drain on waking.
 * Records are recycled rather than freed across threads (see "Record
 * recycling" below), and ctx_pool_future_wait polls before it parks too
 * (future.c).
 *
 * Lifetime: the pool's memory is reference counted: one reference for the
 * owner (dropped by ctx_pool_release) and one per record that someone holds
 * a future for (dropped when the record is freed).  So a future may be
 * cancelled or inspected after the pool was destroyed, and a cancel racing
 * with the end of the pool never locks a freed mutex.  A fire-and-forget
 * record (no future handed out) can only be touched by the workers and by
 * shutdown, which the owner's reference outlives, so it pins nothing.  The threads, the policy context and the allowlist
 * are released by ctx_pool_release itself.
 *
 * Invariants
 * ----------
 * - A record is in the queue (on `incoming` or in the FIFO) iff its state is
 *   PENDING; leaving it happens only from the FIFO, under the lock, together
 *   with the change of state (pop → RUNNING, cancel → CANCELLING): a cancel
 *   drains `incoming` first.
 * - Each accepted record is ended by ctx__future_finish exactly once: by the
 *   worker that popped it, or by the thread that took it out of the queue to
 *   cancel it (ctx_pool_future_cancel, or a CANCEL shutdown).
 * - Once `stopping` is set no record enters the queue (`incoming` holds
 *   CTX__CLOSED, and bounded submits check `stopping`); workers exit when it
 *   is set and the queue is empty, so DRAIN runs everything and CANCEL has
 *   already emptied the queue.
 * - A failed submit has touched nothing the caller gave it: the record and
 *   the context copy are freed, fn and arg_release are never called.
 * - No user code runs with the pool lock held.
 *
 * Which function does what
 * ------------------------
 * ctx_pool_new       validates, copies the policy, starts and warms workers.
 * ctx_pool_submit_ex builds the record and its context, then queues it
 *                    (enqueue: lock-free; enqueue_bounded: under the lock).
 * drain_locked       moves `incoming` to the FIFO.
 * worker_main        pop → run_task → pop ..., polls then sleeps when the
 *                    queue is empty, exits on stop + empty queue.
 * run_task           runs the task in its context and ends its future.
 * ctx_pool_shutdown  stops intake, cancels or drains, waits for the workers.
 * ctx_pool_release   shutdown + join + release of the policy objects.
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

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CTX__POOL_MAX_THREADS 4096
/* Polls of `poke` by a worker that found the queue empty, before it sleeps
 * on `work` (a few microseconds: long enough to catch a submitter that is
 * producing tasks, short enough not to matter on an idle pool). */
#ifndef CTX__POOL_SPINS
#define CTX__POOL_SPINS 512
#endif

/* One per worker, padded so that no two workers' counters share a cache
 * line: the outcome counters are bumped once per task, by that worker only
 * (ctx_pool_stats adds them up). */
typedef union ctx__worker {
    struct {
        ctx_pool_t *pool;
        pthread_t thread;
        atomic_uint_fast64_t completed;
        atomic_uint_fast64_t failed;
        atomic_uint_fast64_t cancelled;
        atomic_uint_fast64_t max_wait_ticks;
    } w;
    char pad[128];
} ctx__worker_t;

struct ctx_pool {
    /* Fixed at creation. */
    size_t nthreads;
    ctx__worker_t *workers;
    size_t queue_capacity; /* 0: unbounded */
    ctx_pool_full_t when_full;
    ctx_pool_propagation_t propagation; /* never DEFAULT */
    ctx_context_t *context;        /* CTX_POOL_PROPAGATE_CONTEXT */
    ctx_var_t **allowlist;         /* CTX_POOL_PROPAGATE_ALLOWLIST */
    size_t allowlist_len;
    int capture_stack;
    atomic_size_t refs;

    /* Submissions to an unbounded pool: a lock-free LIFO stack of records
     * (linked through `next`), pushed by submitters with one compare-and-
     * swap and moved to the FIFO below, in order, by whoever holds `lock`
     * (drain_locked).  CTX__CLOSED once shutdown has begun. */
    _Atomic(ctx_pool_future_t *) incoming;
    /* Workers asleep on `work` that no signal is on its way to
     * (sleepers - wakeups): published under `lock` by publish_idle_locked,
     * read without it by submitters deciding whether to wake one. */
    atomic_size_t idle;

    /* Under `lock`. */
    pthread_mutex_t lock;
    pthread_cond_t work;
    pthread_cond_t room;
    pthread_cond_t exited;
    ctx_pool_future_t *head;
    ctx_pool_future_t *tail;
    size_t queued;
    size_t running;
    size_t sleepers;     /* workers waiting on `work` */
    size_t wakeups;      /* signals sent to `work` not yet consumed */
    size_t pollers;      /* workers polling `poke` before they sleep */
    size_t room_waiters; /* submitters waiting on `room` */
    size_t live_workers; /* started and not yet exited */
    size_t warm_workers; /* finished their start-up */
    bool stopping;
    uint64_t submitted;
    /* Bumped (under the lock) at every enqueue of a bounded pool and at
     * shutdown, read without it by workers polling before they sleep (which
     * also watch `incoming`). */
    atomic_uint poke;
    /* Records of finished fire-and-forget tasks, for submitters to reuse: a
     * stack (linked through `next`) pushed by workers under `lock` and
     * taken whole, without the lock, by submitters.  free_count is its
     * length as the workers last counted it (reset when they find it
     * taken): a bound and a hint, not an exact figure. */
    _Atomic(ctx_pool_future_t *) free_records;
    atomic_size_t free_count;

    /* Bumped without the lock by threads that are not workers: cancels
     * (ctx_pool_future_cancel, a CANCEL shutdown) and refused submits. */
    atomic_uint_fast64_t cancelled;
    atomic_uint_fast64_t rejected;
};

static _Thread_local ctx_pool_t *tls_pool;    /* the pool this thread works for */
static _Thread_local ctx_pool_future_t *tls_task;  /* the task running right now */

/* ---------------------------------------------------------------------- */
/* Record recycling                                                        */
/* ---------------------------------------------------------------------- */

/* A record is allocated by the submitter and, fire-and-forget, dies on a
 * worker: with malloc, every task would be a cross-thread free, which
 * empties the submitter's allocator cache and makes the two sides meet at
 * the allocator's lock.  Instead a worker hands a dead record (no captured
 * stack) to its pool's free list under the pool lock it takes anyway (to
 * pick its next task), and a submitting thread keeps a private list of
 * spare records, refilled by taking the pool's whole free list with one
 * atomic exchange (no lock) when it runs dry and the free list holds at
 * least CTX__POOL_SPARE_BATCH records (so the submitter touches the list
 * once per batch, not once per task, when the workers keep up and the list
 * stays short; until then it allocates):
 *
 *   worker ── dead record ──► pool->free_records ──(exchange, take all)──► tls_spares
 *                                                                        │
 *   submit ◄──────────────────────── one per submit ◄────────────────────┘
 *
 * So a steady stream of tasks allocates no records at all, and the submit
 * path takes no lock.  Records are pool-agnostic memory; a thread's spares
 * are freed when the thread exits (a pthread key destructor) or when it
 * destroys a pool; a pool's free list when the pool is freed. */
#define CTX__POOL_FREE_MAX 256
#define CTX__POOL_SPARE_BATCH 32

static _Thread_local ctx_pool_future_t *tls_spares; /* linked through `next` */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static int spare_key_ok;

static void free_spares_of_this_thread(void) {
    while (tls_spares) {
        ctx_pool_future_t *f = tls_spares;
        tls_spares = f->next;
        ctx__future_free_memory(f);
    }
}

static void spare_destructor(void *unused) {
    (void)unused;
    free_spares_of_this_thread();
}

static void spare_key_init(void) {
    spare_key_ok = pthread_key_create(&spare_key, spare_destructor) == 0;
}

static _Thread_local bool tls_spare_armed; /* the key's destructor will run */

/* 1 if this thread may keep spares: its exit will free them. */
static bool spares_allowed(void) {
    if (!tls_spare_armed) {
        pthread_once(&spare_once, spare_key_init);
        if (!spare_key_ok || pthread_setspecific(spare_key, &tls_spares) != 0)
            return false;
        tls_spare_armed = true;
    }
    return true;
}

/* A spare record of this thread (refilled from the pool's free list when
 * it has none), or NULL. */
static ctx_pool_future_t *take_spare(ctx_pool_t *pool) {
    if (!tls_spares &&
        atomic_load_explicit(&pool->free_count, memory_order_relaxed) >=
            CTX__POOL_SPARE_BATCH &&
        spares_allowed())
        tls_spares = atomic_exchange_explicit(&pool->free_records, NULL,
                                              memory_order_acquire);
    ctx_pool_future_t *f = tls_spares;
    if (f)
        tls_spares = f->next;
    return f;
}

/* ---------------------------------------------------------------------- */
/* Small helpers                                                           */
/* ---------------------------------------------------------------------- */

ctx_pool_future_t *ctx__pool_current_task(void) { return tls_task; }

int ctx_pool_task_cancelled(void) {
    ctx_pool_future_t *f = tls_task;
    return f ? atomic_load_explicit(&f->cancel_requested, memory_order_relaxed)
             : 0;
}

size_t ctx_pool_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

static bool valid_policy(ctx_pool_propagation_t p) {
    return p >= CTX_POOL_PROPAGATE_DEFAULT && p <= CTX_POOL_PROPAGATE_ALLOWLIST;
}

static bool valid_allowlist(ctx_var_t *const *vars, size_t n) {
    if (n > 0 && !vars)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!vars[i])
            return false;
    return true;
}

/* The value of `incoming` once shutdown has begun: submits refuse. */
static ctx_pool_future_t closed_sentinel;
#define CTX__CLOSED (&closed_sentinel)

/* Publishes how many sleeping workers have no signal on its way (the lock
 * held; sequentially consistent: see worker_main and enqueue). */
static void publish_idle_locked(ctx_pool_t *pool) {
    atomic_store(&pool->idle,
                 pool->sleepers > pool->wakeups ? pool->sleepers - pool->wakeups : 0);
}

/* Appends `f` to the FIFO (the lock held). */
static void append_locked(ctx_pool_t *pool, ctx_pool_future_t *f) {
    f->prev = pool->tail;
    f->next = NULL;
    if (pool->tail)
        pool->tail->next = f;
    else
        pool->head = f;
    pool->tail = f;
    pool->queued++;
    pool->submitted++;
}

/* Appends a stack taken from `incoming` (newest first) to the FIFO, oldest
 * first (the lock held). */
static void append_stack_locked(ctx_pool_t *pool, ctx_pool_future_t *list) {
    ctx_pool_future_t *ordered = NULL;
    while (list) {
        ctx_pool_future_t *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered) {
        ctx_pool_future_t *next = ordered->next;
        append_locked(pool, ordered);
        ordered = next;
    }
}

/* Moves every record pushed on `incoming` to the FIFO (the lock held).
 * After shutdown began `incoming` is closed and was drained by
 * ctx_pool_shutdown: nothing to do. */
static void drain_locked(ctx_pool_t *pool) {
    if (pool->stopping ||
        !atomic_load_explicit(&pool->incoming, memory_order_relaxed))
        return;
    append_stack_locked(pool, atomic_exchange_explicit(&pool->incoming, NULL,
                                                       memory_order_acquire));
}

static void unlink_locked(ctx_pool_t *pool, ctx_pool_future_t *f) {
    if (f->prev)
        f->prev->next = f->next;
    else
        pool->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else
        pool->tail = f->prev;
    f->next = f->prev = NULL;
    pool->queued--;
}

/* Only the slot's own worker writes it: a relaxed load and store suffice. */
static void bump(atomic_uint_fast64_t *counter) {
    atomic_store_explicit(counter,
                          atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void record_max_wait(ctx__worker_t *self, uint64_t wait) {
    if (wait > atomic_load_explicit(&self->w.max_wait_ticks, memory_order_relaxed))
        atomic_store_explicit(&self->w.max_wait_ticks, wait, memory_order_relaxed);
}

static void pool_free(ctx_pool_t *pool) {
    ctx_pool_future_t *f = atomic_exchange_explicit(&pool->free_records, NULL,
                                               memory_order_acquire);
    while (f) {
        ctx_pool_future_t *next = f->next;
        ctx__future_free_memory(f);
        f = next;
    }
    atomic_store_explicit(&pool->free_count, 0, memory_order_relaxed);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->room);
    pthread_cond_destroy(&pool->exited);
    ctx__free(pool, sizeof *pool);
}

void ctx__pool_release(ctx_pool_t *pool) {
    if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) == 1)
        pool_free(pool);
}

/* Releases the policy objects (context, allowlist) and the thread array. */
static void release_policy(ctx_pool_t *pool) {
    ctx_context_release(pool->context);
    pool->context = NULL;
    for (size_t i = 0; i < pool->allowlist_len; i++)
        ctx_var_release(pool->allowlist[i]);
    if (pool->allowlist)
        ctx__free(pool->allowlist, pool->allowlist_len * sizeof *pool->allowlist);
    pool->allowlist = NULL;
    pool->allowlist_len = 0;
    if (pool->workers)
        ctx__free(pool->workers, pool->nthreads * sizeof *pool->workers);
    pool->workers = NULL;
}

/* Ends a record that was taken out of the queue without running. */
static void finish_cancelled(ctx_pool_t *pool, ctx_pool_future_t *f) {
    ctx__future_drop_context(f);
    atomic_fetch_add_explicit(&pool->cancelled, 1, memory_order_relaxed);
    ctx__future_finish(f, CTX__F_CANCELLED, CTX_ECANCELLED, NULL);
    ctx_pool_future_release(f); /* the queue's reference */
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */
/* ---------------------------------------------------------------------- */

static void *task_trampoline(void *p) {
    ctx_pool_future_t *f = p;
    f->error = f->fn(f->arg, &f->result);
    return NULL;
}

/* Runs `f` and ends its future; returns its memory if it died here and can
 * be recycled, else NULL. */
static ctx_pool_future_t *run_task(ctx__worker_t *self, ctx_pool_future_t *f) {
    uint64_t start = ctx__pool_ticks();
    atomic_store_explicit(&f->start_ticks, start ? start : 1, memory_order_relaxed);
    record_max_wait(self, start > f->submit_ticks ? start - f->submit_ticks : 0);

    f->error = 0;
    f->result = NULL;
    tls_task = f;
    int rc = ctx__context_run_embedded(f->context, task_trampoline, f, NULL);
    tls_task = NULL;
    /* The embedded run leaves the context out of the thread's chain even if
     * the task left contexts of its own entered: it can go now. */
    ctx__future_drop_context(f);

    int state;
    int error;
    if (rc < 0 && rc != CTX_ENOTCURRENT) {
        state = CTX__F_FAILED; /* never ran: the context could not be entered */
        error = rc;
        f->result = NULL;
    } else if (rc == CTX_ENOTCURRENT) {
        state = CTX__F_FAILED;
        error = rc;
        if (f->error == 0 && f->result && f->result_release)
            f->result_release(f->result);
        f->result = NULL;
    } else if (f->error == 0) {
        state = CTX__F_COMPLETED;
        error = 0;
    } else if (f->error == CTX_ECANCELLED) {
        state = CTX__F_CANCELLED;
        error = CTX_ECANCELLED;
        f->result = NULL;
    } else {
        state = CTX__F_FAILED;
        error = f->error < 0 ? f->error : CTX_ECALLBACK;
        f->result = NULL;
    }
    bump(state == CTX__F_COMPLETED ? &self->w.completed
         : state == CTX__F_FAILED  ? &self->w.failed
                                   : &self->w.cancelled);
    ctx__future_finish(f, state, error, f->result);
    return ctx__future_release_keep(f); /* the queue's reference */
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

/* Hands a record that died on this worker to the pool's free list (the
 * lock held: one pusher at a time, racing only with submitters that take
 * the whole list); returns it if the list is full (the caller frees it
 * after unlocking), else NULL. */
static ctx_pool_future_t *recycle_locked(ctx_pool_t *pool, ctx_pool_future_t *dead) {
    ctx_pool_future_t *top = atomic_load_explicit(&pool->free_records, memory_order_relaxed);
    size_t n;
    do {
        n = top ? atomic_load_explicit(&pool->free_count, memory_order_relaxed) : 0;
        if (n >= CTX__POOL_FREE_MAX)
            return dead;
        dead->next = top;
    } while (!atomic_compare_exchange_weak_explicit(&pool->free_records, &top, dead,
                                                    memory_order_release,
                                                    memory_order_relaxed));
    atomic_store_explicit(&pool->free_count, n + 1, memory_order_relaxed);
    return NULL;
}

static void *worker_main(void *p) {
    ctx__worker_t *self = p;
    ctx_pool_t *pool = self->w.pool;
    tls_pool = pool;
    warm_up();

    pthread_mutex_lock(&pool->lock);
    if (++pool->warm_workers == pool->nthreads)
        pthread_cond_broadcast(&pool->exited); /* ctx_pool_new waits on it */
    for (;;) {
        ctx_pool_future_t *f = pool->head;
        if (!f) {
            drain_locked(pool);
            f = pool->head;
        }
        if (!f) {
            if (pool->stopping)
                break;
            /* Poll a little before sleeping: a submitter in full flow has the
             * next task ready within a few hundred nanoseconds, and catching
             * it here saves both a futex wait and the submitter's wake-up. */
            unsigned seen = atomic_load_explicit(&pool->poke, memory_order_relaxed);
            pool->pollers++;
            pthread_mutex_unlock(&pool->lock);
            for (int i = 0; i < CTX__POOL_SPINS &&
                            !atomic_load_explicit(&pool->incoming, memory_order_relaxed) &&
                            atomic_load_explicit(&pool->poke, memory_order_relaxed) == seen;
                 i++)
                ctx__cpu_relax();
            pthread_mutex_lock(&pool->lock);
            pool->pollers--;
            drain_locked(pool);
            if (pool->head || pool->stopping)
                continue;
            /* Announce the sleep, then look at `incoming` once more: a
             * submitter pushes and then reads `idle` (both sequentially
             * consistent), so either it sees this worker and wakes it under
             * the lock, or this load sees its record. */
            pool->sleepers++;
            publish_idle_locked(pool);
            if (atomic_load(&pool->incoming)) {
                pool->sleepers--;
                publish_idle_locked(pool);
                continue;
            }
            pthread_cond_wait(&pool->work, &pool->lock);
            pool->sleepers--;
            if (pool->wakeups)
                pool->wakeups--;
            publish_idle_locked(pool);
            continue;
        }
        unlink_locked(pool, f);
        atomic_store_explicit(&f->state, CTX__F_RUNNING, memory_order_release);
        pool->running++;
        bool room = pool->room_waiters > 0;
        pthread_mutex_unlock(&pool->lock);
        if (room)
            pthread_cond_signal(&pool->room);

        ctx_pool_future_t *dead = run_task(self, f);

        pthread_mutex_lock(&pool->lock);
        pool->running--;
        if (dead && (dead = recycle_locked(pool, dead)) != NULL) {
            pthread_mutex_unlock(&pool->lock);
            ctx__future_free_memory(dead);
            pthread_mutex_lock(&pool->lock);
        }
    }
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
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    for (size_t i = 0; i < started; i++)
        pthread_join(pool->workers[i].w.thread, NULL);
}

static int init_sync(ctx_pool_t *pool) {
    /* The lock is held for a few dozen instructions at a time: where glibc
     * offers it, a mutex that spins briefly before sleeping avoids a futex
     * round trip whenever a worker and a submitter meet at it. */
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        return CTX_ESYSTEM;
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    (void)pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    int mrc = pthread_mutex_init(&pool->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (mrc != 0)
        return CTX_ESYSTEM;
    if (pthread_cond_init(&pool->work, NULL) != 0)
        goto no_work;
    if (pthread_cond_init(&pool->room, NULL) != 0)
        goto no_room;
    if (pthread_cond_init(&pool->exited, NULL) != 0)
        goto no_exited;
    return 0;
no_exited:
    pthread_cond_destroy(&pool->room);
no_room:
    pthread_cond_destroy(&pool->work);
no_work:
    pthread_mutex_destroy(&pool->lock);
    return CTX_ESYSTEM;
}

int ctx_pool_new(const ctx_pool_options_t *options, ctx_pool_t **out) {
    ctx_pool_options_t o;
    if (!out)
        return CTX_EINVAL;
    if (options)
        o = *options;
    else
        memset(&o, 0, sizeof o);
    if (o.threads == 0)
        o.threads = ctx_pool_default_threads();
    if (o.threads > CTX__POOL_MAX_THREADS || !valid_policy(o.propagation) ||
        (o.when_full != CTX_POOL_FULL_WAIT && o.when_full != CTX_POOL_FULL_FAIL))
        return CTX_EINVAL;
    if (o.propagation == CTX_POOL_PROPAGATE_DEFAULT)
        o.propagation = CTX_POOL_PROPAGATE_COPY;
    if (o.propagation == CTX_POOL_PROPAGATE_CONTEXT && !o.context)
        return CTX_EINVAL;
    if (o.propagation == CTX_POOL_PROPAGATE_ALLOWLIST &&
        (!o.allowlist || !valid_allowlist(o.allowlist, o.allowlist_len)))
        return CTX_EINVAL;

    ctx__pool_clock_init();
    ctx_pool_t *pool = ctx__malloc(sizeof *pool);
    if (!pool)
        return CTX_ENOMEM;
    memset(pool, 0, sizeof *pool);
    pool->nthreads = o.threads;
    pool->queue_capacity = o.queue_capacity;
    pool->when_full = o.when_full;
    pool->propagation = o.propagation;
    pool->capture_stack = o.capture_stack != 0;
    atomic_init(&pool->refs, 1);
    atomic_init(&pool->cancelled, 0);
    atomic_init(&pool->rejected, 0);
    atomic_init(&pool->poke, 0);
    atomic_init(&pool->incoming, NULL);
    atomic_init(&pool->idle, 0);
    atomic_init(&pool->free_count, 0);
    atomic_init(&pool->free_records, NULL);

    pool->workers = ctx__malloc(o.threads * sizeof *pool->workers);
    if (!pool->workers)
        goto no_memory;
    for (size_t i = 0; i < o.threads; i++) {
        memset(&pool->workers[i], 0, sizeof pool->workers[i]);
        pool->workers[i].w.pool = pool;
        atomic_init(&pool->workers[i].w.completed, 0);
        atomic_init(&pool->workers[i].w.failed, 0);
        atomic_init(&pool->workers[i].w.cancelled, 0);
        atomic_init(&pool->workers[i].w.max_wait_ticks, 0);
    }
    if (o.propagation == CTX_POOL_PROPAGATE_ALLOWLIST && o.allowlist_len > 0) {
        pool->allowlist = ctx__malloc(o.allowlist_len * sizeof *pool->allowlist);
        if (!pool->allowlist)
            goto no_memory;
        for (size_t i = 0; i < o.allowlist_len; i++)
            pool->allowlist[i] = ctx_var_retain(o.allowlist[i]);
        pool->allowlist_len = o.allowlist_len;
    }
    if (o.propagation == CTX_POOL_PROPAGATE_CONTEXT)
        pool->context = ctx_context_retain(o.context);

    int rc = init_sync(pool);
    if (rc != 0) {
        release_policy(pool);
        ctx__free(pool, sizeof *pool);
        return rc;
    }

    /* Workers take no signals: they are the application's business. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    size_t started = 0;
    pool->live_workers = o.threads;
    for (; started < o.threads; started++)
        if (pthread_create(&pool->workers[started].w.thread, NULL, worker_main,
                           &pool->workers[started]) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started < o.threads) {
        pthread_mutex_lock(&pool->lock);
        pool->live_workers = started;
        pthread_mutex_unlock(&pool->lock);
        abort_start(pool, started);
        release_policy(pool);
        pool_free(pool);
        return CTX_ESYSTEM;
    }

    /* Ready means ready: every worker has its ctxvar state. */
    pthread_mutex_lock(&pool->lock);
    while (pool->warm_workers < pool->nthreads)
        pthread_cond_wait(&pool->exited, &pool->lock);
    pthread_mutex_unlock(&pool->lock);

    *out = pool;
    return 0;

no_memory:
    release_policy(pool);
    ctx__free(pool, sizeof *pool);
    return CTX_ENOMEM;
}

/* ---------------------------------------------------------------------- */
/* Submit                                                                  */
/* ---------------------------------------------------------------------- */

/* Makes the task's private context for policy `p` in the record's
 * embedded storage (core/embed.c); f->context points to it on success. */
static int make_context(ctx_pool_propagation_t p, ctx_context_t *given,
                        ctx_var_t *const *allow, size_t nallow,
                        ctx_pool_future_t *f) {
    ctx_context_t *storage = &f->context_storage;
    switch (p) {
    case CTX_POOL_PROPAGATE_NONE:
        ctx__context_init_empty(storage);
        break;
    case CTX_POOL_PROPAGATE_CONTEXT:
        ctx__context_init_copy(storage, given);
        break;
    case CTX_POOL_PROPAGATE_ALLOWLIST: {
        ctx_context_t *current = NULL, *only = NULL;
        int rc = ctx_context_copy_current(&current);
        if (rc != 0)
            return rc;
        rc = ctx_context_copy_only(current, allow, nallow, &only);
        ctx_context_release(current);
        if (rc != 0)
            return rc;
        ctx__context_init_copy(storage, only);
        ctx_context_release(only);
        break;
    }
    case CTX_POOL_PROPAGATE_COPY:
    default:
        ctx__context_init_copy_current(storage);
        break;
    }
    f->context = storage;
    return 0;
}

/* Wakes a sleeping worker if the queue holds more tasks than the polling
 * workers will take (a poller re-checks the queue under the lock before it
 * sleeps, so it takes one of them, and waking a thread for that task would
 * only add a system call and a third thread racing for two processors), and
 * no signal is already on its way to each sleeper.  The lock held; returns
 * whether to signal `work` after unlocking. */
static bool wake_decision_locked(ctx_pool_t *pool) {
    bool wake = pool->queued > pool->pollers && pool->sleepers > pool->wakeups;
    if (wake) {
        pool->wakeups++;
        publish_idle_locked(pool);
    }
    return wake;
}

/* Queues `f` on an unbounded pool: one compare-and-swap on `incoming`, and
 * the lock only if a worker sleeps.  Returns 0 or CTX_ESHUTDOWN. */
static int enqueue(ctx_pool_t *pool, ctx_pool_future_t *f) {
    ctx_pool_future_t *top = atomic_load_explicit(&pool->incoming, memory_order_relaxed);
    do {
        if (top == CTX__CLOSED)
            return CTX_ESHUTDOWN;
        f->next = top;
    } while (!atomic_compare_exchange_weak_explicit(&pool->incoming, &top, f,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* Pairs with the sleeper's increment and re-check (worker_main). */
    if (atomic_load(&pool->idle) == 0)
        return 0;
    pthread_mutex_lock(&pool->lock);
    drain_locked(pool);
    bool wake = wake_decision_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    if (wake)
        pthread_cond_signal(&pool->work);
    return 0;
}

/* Queues `f` on a bounded pool, under the lock, waiting for room or failing
 * as the pool is configured.  Returns 0, CTX_EFULL or CTX_ESHUTDOWN. */
static int enqueue_bounded(ctx_pool_t *pool, ctx_pool_future_t *f) {
    pthread_mutex_lock(&pool->lock);
    int rc = 0;
    while (!pool->stopping && pool->queued >= pool->queue_capacity) {
        if (pool->when_full == CTX_POOL_FULL_FAIL) {
            rc = CTX_EFULL;
            break;
        }
        pool->room_waiters++;
        pthread_cond_wait(&pool->room, &pool->lock);
        pool->room_waiters--;
    }
    if (pool->stopping)
        rc = CTX_ESHUTDOWN;
    if (rc != 0) {
        pthread_mutex_unlock(&pool->lock);
        return rc;
    }
    append_locked(pool, f);
    atomic_store_explicit(&pool->poke,
                          atomic_load_explicit(&pool->poke, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    bool wake = wake_decision_locked(pool);
    /* A submitter that found room may leave room for the next one too. */
    bool more_room = pool->room_waiters > 0 && pool->queued < pool->queue_capacity;
    pthread_mutex_unlock(&pool->lock);
    if (wake)
        pthread_cond_signal(&pool->work);
    if (more_room)
        pthread_cond_signal(&pool->room);
    return 0;
}

int ctx_pool_submit_ex(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                       const ctx_pool_submit_options_t *options, ctx_pool_future_t **out) {
    if (!pool || !fn)
        return CTX_EINVAL;

    ctx_pool_propagation_t policy = pool->propagation;
    ctx_context_t *given = pool->context;
    ctx_var_t *const *allow = pool->allowlist;
    size_t nallow = pool->allowlist_len;
    bool capture = pool->capture_stack;
    if (options) {
        if (!valid_policy(options->propagation))
            return CTX_EINVAL;
        if (options->propagation != CTX_POOL_PROPAGATE_DEFAULT) {
            policy = options->propagation;
            given = options->context;
            allow = options->allowlist;
            nallow = options->allowlist_len;
            if (policy == CTX_POOL_PROPAGATE_CONTEXT && !given)
                return CTX_EINVAL;
            if (policy == CTX_POOL_PROPAGATE_ALLOWLIST &&
                (!allow || !valid_allowlist(allow, nallow)))
                return CTX_EINVAL;
        }
        capture = capture || options->capture_stack;
    }

    void *frames[CTX__STACK_MAX];
    size_t depth = capture ? ctx__stack_capture(frames, CTX__STACK_MAX, 1) : 0;
    ctx_pool_future_t *f;
    if (depth == 0 && (f = take_spare(pool)) != NULL) {
        ctx__future_init(f);
    } else {
        f = ctx__future_alloc((unsigned)depth);
        if (!f)
            return CTX_ENOMEM;
    }
    int rc = make_context(policy, given, allow, nallow, f);
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
    f->pinned = out != NULL;
    if (out)
        atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    f->submit_ticks = ctx__pool_ticks();

    if (out) /* only a record someone can cancel pins the pool (see above) */
        atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
    int qrc = pool->queue_capacity ? enqueue_bounded(pool, f) : enqueue(pool, f);
    if (qrc != 0) {
        if (out)
            atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&pool->rejected, 1, memory_order_relaxed);
        ctx__future_discard(f);
        return qrc;
    }
    if (out)
        *out = f;
    return 0;
}

int ctx_pool_submit(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                    ctx_pool_future_t **out) {
    return ctx_pool_submit_ex(pool, fn, arg, NULL, out);
}

/* ---------------------------------------------------------------------- */
/* Cancel, shutdown, destroy, stats                                        */
/* ---------------------------------------------------------------------- */

int ctx__pool_cancel_pending(ctx_pool_future_t *f) {
    ctx_pool_t *pool = f->pool;
    pthread_mutex_lock(&pool->lock);
    drain_locked(pool); /* `f` may still be on `incoming` */
    int s = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (s != CTX__F_PENDING) {
        pthread_mutex_unlock(&pool->lock);
        return s == CTX__F_CANCELLING;
    }
    atomic_store_explicit(&f->state, CTX__F_CANCELLING, memory_order_relaxed);
    unlink_locked(pool, f);
    bool room = pool->room_waiters > 0;
    pthread_mutex_unlock(&pool->lock);
    if (room)
        pthread_cond_signal(&pool->room);
    finish_cancelled(pool, f);
    return 1;
}

int ctx_pool_shutdown(ctx_pool_t *pool, ctx_pool_shutdown_mode_t mode) {
    if (!pool || (mode != CTX_POOL_SHUTDOWN_DRAIN && mode != CTX_POOL_SHUTDOWN_CANCEL))
        return CTX_EINVAL;
    ctx_pool_future_t *cancelled = NULL;
    pthread_mutex_lock(&pool->lock);
    if (!pool->stopping) {
        /* Close intake: a submit's push either came before this exchange
         * (and is queued here) or sees CTX__CLOSED and is refused. */
        append_stack_locked(pool, atomic_exchange_explicit(&pool->incoming, CTX__CLOSED,
                                                           memory_order_acquire));
        pool->stopping = true;
        if (mode == CTX_POOL_SHUTDOWN_CANCEL) {
            cancelled = pool->head;
            for (ctx_pool_future_t *f = cancelled; f; f = f->next)
                atomic_store_explicit(&f->state, CTX__F_CANCELLING,
                                      memory_order_relaxed);
            pool->head = pool->tail = NULL;
            pool->queued = 0;
        }
        atomic_fetch_add_explicit(&pool->poke, 1, memory_order_relaxed);
        pthread_cond_broadcast(&pool->work);
        pthread_cond_broadcast(&pool->room);
    }
    pthread_mutex_unlock(&pool->lock);

    while (cancelled) {
        ctx_pool_future_t *next = cancelled->next;
        cancelled->next = cancelled->prev = NULL;
        finish_cancelled(pool, cancelled);
        cancelled = next;
    }

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
    (void)ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN);
    for (size_t i = 0; i < pool->nthreads; i++)
        pthread_join(pool->workers[i].w.thread, NULL);
    release_policy(pool);
    free_spares_of_this_thread();
    ctx__pool_release(pool);
    return 0;
}

int ctx_pool_stats(ctx_pool_t *pool, ctx_pool_stats_t *out) {
    if (!pool || !out)
        return CTX_EINVAL;
    memset(out, 0, sizeof *out);
    out->threads = pool->nthreads;
    pthread_mutex_lock(&pool->lock);
    drain_locked(pool);
    out->queued = pool->queued;
    out->running = pool->running;
    out->submitted = pool->submitted;
    pthread_mutex_unlock(&pool->lock);
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
    return 0;
}
