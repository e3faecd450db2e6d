/* SPDX-License-Identifier: MIT */
/*
 * queue.c — the pool's queue and how its workers sleep and wake up.
 *
 * What it is for
 * --------------
 * Submitters hand tasks to a fixed set of workers, in FIFO order.  For short
 * tasks the queue *is* the cost of the pool: a task that does nothing must
 * cost a couple of hundred nanoseconds of processor time in all, on
 * whichever side, and no system call while work flows.  On the 2-processor
 * machines the benchmarks run on there are usually more runnable threads
 * than processors, so every cycle a worker spends waiting actively is taken
 * from a submitter; and when submitters run ahead of the workers the queue
 * grows past the caches, so every byte a queued task occupies is paid for
 * again in misses and page faults.
 *
 * Data structure: a two-lock queue of 32-byte slots in 4 KB segments
 * ------------------------------------------------------------------
 *
 *   head_segment/head_slot                      tail_segment/tail_slot
 *   (consumers, under `lock`)                   (producers, under `tail_lock`)
 *     │                                                  │
 *     ▼                                                  ▼
 *   [ next | s s s s ... s ] ─► [ next | s s s ... ] ─► [ next | s s s . . . ]
 *
 *   slot = { fn, arg, map }     a light task: nothing else is allocated
 *        = { ctx__slot_record, record }   a task with a future, a stamp or
 *                               options
 *
 * A submit writes its slot under `tail_lock`, `fn` last (release), and
 * bumps `published`; a worker takes the slot at the head under `lock` once
 * its `fn` is there (acquire) — reading the slot, not `published`, so that
 * the producers' line stays with the producers.  A segment's `next` is
 * stored before anything is published in the next segment.  Producers and
 * consumers never share a lock, each side's critical section is a handful
 * of instructions,
 * and a queued task occupies 32 bytes of a segment that is read
 * sequentially — where a linked list of task records would cost a record
 * (a few cache lines) per task.  Segments come from `spare_segment` (one
 * kept ready; a producer that finds none allocates one before taking the
 * lock, so the allocator never runs under a lock) and go back to it, or to
 * the allocator, when the consumers leave them.  The queue is exactly FIFO.
 *
 * Counting: `published` (tasks ever queued) and `removed` (tasks that left
 * PENDING in the queue: taken by a worker, or, for records, cancelled while
 * queued); queued = published - removed, exact under both locks and never
 * more than a few tasks off without them.  A cancelled record stays in its
 * slot: its state leaves PENDING under `lock` and `removed` counts it at
 * once; the worker that later takes the slot skips it and drops the queue's
 * reference.  A bounded pool checks its capacity against that count under
 * `tail_lock` and waits on `room` for a worker to take a task.
 *
 * Sleeping and waking
 * -------------------
 * A futex sleep and wake-up costs microseconds of processor time on both
 * sides, tens of times an empty task; a worker polling for work costs a
 * processor.  So:
 *   - a worker that finds nothing polls for about 5 microseconds
 *     (CTX__POOL_POLL_US; the pause count is measured, clock.c) if fewer
 *     than `max_spinners` workers are polling — one up to 8 workers, one
 *     per 8 beyond: enough to catch a stream of submits a few microseconds
 *     apart without a wake-up, few enough to leave the processors to the
 *     submitters — and if polling has paid lately (a credit per worker:
 *     sparse submits make it park at once, see should_poll) — then parks
 *     on its own semaphore;
 *   - a submit wakes one parked worker only if one is parked and none is
 *     polling (a poller will take the task), or a poller is but two tasks
 *     wait (it has not come for the first: it may have lost its processor
 *     to the scheduler, and a task must not wait a time slice for it); a
 *     worker that takes a task and sees more queued does the same, so a
 *     backlog gets every worker;
 *   - the parked worker to wake is the one that parked last (its caches
 *     are the warmest) — but for a submit whose task is the only one
 *     waiting, the newest of the CTX__POOL_WAKE_LOOK that parked last that
 *     parked on the processor the submitter runs on now (sched_getcpu,
 *     noted by each worker as it parks), if one did.  Exactly one is woken
 *     per decision.  Why the processor: the kernel tends to wake a
 *     thread where it last ran (seen with perf sched on the 2-processor
 *     virtual machine the benchmarks run on: a worker that last ran on the
 *     submitter's processor was woken there, one that ran on the idle one
 *     there).  A worker woken here starts the moment the submitter blocks
 *     and reads the task from this processor's cache; one woken on an idle
 *     processor waits for it to leave its idle state, which on that
 *     machine takes 20-28 us, against 2-3 us here.  With tasks tens of
 *     microseconds apart, the bench's pool_latency_p50_ns went from
 *     21.8-30.1 us to 1.7-3.0 us; the throughput figures did not move
 *     (bench/bench_pool.c).  A submitter with a backlog, or a worker
 *     waking another for the backlog, keeps its processor busy, so a worker
 *     woken there would wait for it: those take the newest.  The look is
 *     bounded, so a large idle pool costs no more per wake-up; it happens
 *     only when a worker is woken, never while work flows to pollers.
 * No wake-up is lost: a worker about to park pushes itself on the idle
 * stack, increments `idle_count`, then looks at `published` once more; a
 * submit publishes and then reads `idle_count` and `spinners`, all
 * sequentially consistent, so one of the two sees the other.  A poller
 * stops polling (decrements `spinners`) before it registers as idle, so a
 * submitter that saw it polling is ordered before its last look.
 *
 * What is shared, per task (fire-and-forget, work flowing)
 * --------------------------------------------------------
 *   submit:  one lock round on the producers' line (`tail_lock`,
 *            `published`: every submitter writes it); 32 bytes of the
 *            segment; a read of `idle_count` and `spinners` (written only
 *            when a worker parks, wakes or starts and stops polling).
 *   worker:  one lock round on the consumers' line (every worker writes
 *            it); reads the 32 bytes (and the next slot's `fn`, to know
 *            whether a backlog is waiting); `removed`.
 *   context: the map root's reference count: taken by the submitter (under
 *            `tail_lock`, right after its fence), dropped by the worker by
 *            the batch (propagation.c), so the line stays with the
 *            submitter.
 *   segments: one allocation or reuse per 127 tasks.
 * So a task writes three shared lines: the producers', the consumers', the
 * map root's.  On 16 or 64 processors those are the contention points:
 * submitters serialise on `tail_lock` and workers on `lock`, each for a few
 * dozen nanoseconds per task, which caps one pool at some tens of millions
 * of tasks per second whatever the processor count (a glibc adaptive mutex
 * spins briefly before it sleeps, so short contention costs no system
 * call).  Pools with dozens of workers fed by dozens of submitters would
 * want the queue sharded (one queue per group of workers, submitters spread
 * across them, idle workers taking from their neighbours); nothing in the
 * API stands in the way.  Parking and waking touch `idle_lock` only when a
 * worker parks or is woken, never per task while work flows; polling is
 * capped at one worker in 8 so that a large idle pool does not burn
 * processors.
 *
 * Invariants
 * ----------
 * - A slot is written once, under `tail_lock`, before `published` counts
 *   it, and read once, under `lock`, after; the segment it is in is freed
 *   or reused only once every slot of it was read.
 * - Every change of a queued record out of PENDING happens under `lock`:
 *   taken (→ RUNNING) or cancelled/shutdown (→ CANCELLING), each counted
 *   once in `removed`.
 * - `closed` is set under `tail_lock` and never cleared; nothing is
 *   published after it.  `stopping` is set under `lock` after `closed`; a
 *   worker exits when `stopping` is set and every published slot was taken,
 *   so DRAIN runs everything accepted.  With `cancel_all` (a CANCEL
 *   shutdown) workers take nothing more: the shutting-down thread takes
 *   every slot (ctx__queue_cancel_all).
 * - No user code runs under `tail_lock`, `lock` or `idle_lock`: maps of
 *   cancelled light tasks and skipped records are released, and cancelled
 *   records ended, after unlocking; segments are allocated before locking.
 * - Lock order: `tail_lock` before `lock` (only ctx__queue_close and
 *   ctx__queue_counts hold both); `idle_lock` is never held with another.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "pool_internal.h"

#include "common/common.h"
#include "core/alloc.h"

#include <errno.h>
#include <sched.h>


static uint64_t queued_now(ctx_pool_t *pool) {
    uint64_t in = atomic_load(&pool->published), out = atomic_load(&pool->removed);
    return in > out ? in - out : 0;
}

/* One more task left PENDING (`lock` held).  A bounded pool's room
 * waiters pair this store with their load (sequentially consistent: see
 * wait_for_room_locked); otherwise nobody waits on it going up. */
static void count_removed_locked(ctx_pool_t *pool) {
    uint64_t n = atomic_load_explicit(&pool->removed, memory_order_relaxed) + 1;
    if (pool->queue_capacity)
        atomic_store(&pool->removed, n);
    else
        atomic_store_explicit(&pool->removed, n, memory_order_release);
}

int ctx__slot_record(void *arg, void **result) {
    (void)arg;
    (void)result;
    return CTX_EINVAL; /* a marker, never called */
}

/* Every slot unpublished (fn NULL), no next segment. */
static void segment_clear(ctx__segment_t *s) {
    memset(s, 0, sizeof *s);
    atomic_init(&s->next, NULL);
    for (int i = 0; i < CTX__SEGMENT_SLOTS; i++)
        atomic_init(&s->slots[i].fn, NULL);
}

static ctx__segment_t *segment_new(void) {
    ctx__segment_t *s = ctx__malloc(sizeof *s);
    if (s)
        segment_clear(s);
    return s;
}

static void segment_free(ctx__segment_t *s) {
    if (s)
        ctx__free(s, sizeof *s);
}

/* Keeps `s` (no longer in the queue) as the spare segment, or frees it. */
static void segment_retire(ctx_pool_t *pool, ctx__segment_t *s) {
    segment_clear(s);
    segment_free(atomic_exchange(&pool->spare_segment, s));
}

/* ---------------------------------------------------------------------- */
/* Set-up                                                                  */
/* ---------------------------------------------------------------------- */

static int init_mutex(pthread_mutex_t *m) {
    /* Held for a few dozen instructions at a time: where glibc offers it, a
     * mutex that spins briefly before sleeping. */
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        return CTX_ESYSTEM;
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    (void)pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    int rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc == 0 ? 0 : CTX_ESYSTEM;
}

int ctx__queue_init(ctx_pool_t *pool) {
    ctx__segment_t *first = segment_new();
    if (!first)
        return CTX_ENOMEM;
    pool->tail_segment = pool->head_segment = first;
    pool->tail_slot = pool->head_slot = 0;
    atomic_init(&pool->spare_segment, NULL);
    size_t sems = 0;
    if (init_mutex(&pool->tail_lock) != 0)
        goto no_tail_lock;
    if (init_mutex(&pool->lock) != 0)
        goto no_lock;
    if (pthread_mutex_init(&pool->idle_lock, NULL) != 0)
        goto no_idle;
    if (pthread_cond_init(&pool->room, NULL) != 0)
        goto no_room;
    if (pthread_cond_init(&pool->exited, NULL) != 0)
        goto no_exited;
    for (; sems < pool->nthreads; sems++)
        if (sem_init(&pool->workers[sems].w.wake, 0, 0) != 0)
            goto no_sems;
    return 0;
no_sems:
    while (sems > 0)
        sem_destroy(&pool->workers[--sems].w.wake);
    pthread_cond_destroy(&pool->exited);
no_exited:
    pthread_cond_destroy(&pool->room);
no_room:
    pthread_mutex_destroy(&pool->idle_lock);
no_idle:
    pthread_mutex_destroy(&pool->lock);
no_lock:
    pthread_mutex_destroy(&pool->tail_lock);
no_tail_lock:
    segment_free(first);
    return CTX_ESYSTEM;
}

void ctx__queue_destroy(ctx_pool_t *pool) {
    for (size_t i = 0; i < pool->nthreads; i++)
        sem_destroy(&pool->workers[i].w.wake);
    pthread_cond_destroy(&pool->exited);
    pthread_cond_destroy(&pool->room);
    pthread_mutex_destroy(&pool->idle_lock);
    pthread_mutex_destroy(&pool->lock);
    pthread_mutex_destroy(&pool->tail_lock);
    /* Empty by now (every slot taken), so only the segments are left. */
    for (ctx__segment_t *s = pool->head_segment; s;) {
        ctx__segment_t *next = atomic_load_explicit(&s->next, memory_order_relaxed);
        segment_free(s);
        s = next;
    }
    segment_free(atomic_exchange(&pool->spare_segment, NULL));
    pool->head_segment = pool->tail_segment = NULL;
}

/* ---------------------------------------------------------------------- */
/* Parking and waking                                                      */
/* ---------------------------------------------------------------------- */

/* 1 if a worker has something to do: tasks queued, or the pool stopping.
 * Sequentially consistent loads: the last look of a worker about to park
 * (see the essay). */
static bool work_visible(ctx_pool_t *pool) {
    return queued_now(pool) > 0 || atomic_load(&pool->stopping);
}

/* How many of the newest parked workers a wake-up considers. */
#define CTX__POOL_WAKE_LOOK 4

/* The processor the calling thread runs on, or -1 if unknown. */
static int current_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

/* Wakes one parked worker: among the newest CTX__POOL_WAKE_LOOK, the newest
 * that parked on `cpu` (-1: no preference), else the newest. */
static void wake_one(ctx_pool_t *pool, int cpu) {
    pthread_mutex_lock(&pool->idle_lock);
    ctx__worker_t **link = &pool->idle_top; /* the newest, unless one matches */
    ctx__worker_t **l = &pool->idle_top;
    for (int i = 0; cpu >= 0 && *l && i < CTX__POOL_WAKE_LOOK; i++, l = &(*l)->w.idle_next)
        if ((*l)->w.cpu == cpu) {
            link = l;
            break;
        }
    ctx__worker_t *w = *link;
    if (w) {
        *link = w->w.idle_next;
        w->w.idle = false;
        atomic_fetch_sub(&pool->idle_count, 1);
    }
    pthread_mutex_unlock(&pool->idle_lock);
    if (w)
        sem_post(&w->w.wake);
}

static void wake_all(ctx_pool_t *pool) {
    pthread_mutex_lock(&pool->idle_lock);
    ctx__worker_t *w = pool->idle_top;
    pool->idle_top = NULL;
    for (ctx__worker_t *x = w; x; x = x->w.idle_next) {
        x->w.idle = false;
        atomic_fetch_sub(&pool->idle_count, 1);
    }
    pthread_mutex_unlock(&pool->idle_lock);
    while (w) {
        /* Read the link before the post: the worker may park again. */
        ctx__worker_t *next = w->w.idle_next;
        sem_post(&w->w.wake);
        w = next;
    }
}

/* Called after making work visible: wakes a parked worker unless none is
 * parked, or one is polling and at most one task waits (the poller will
 * take it).  A second waiting task means the poller has not come for the
 * first — the scheduler may have taken its processor for a whole time
 * slice — so a parked worker is woken rather than left waiting on it. */
static void maybe_wake(ctx_pool_t *pool, bool submitter) {
    if (atomic_load(&pool->idle_count) == 0)
        return;
    if (atomic_load(&pool->spinners) > 0 && queued_now(pool) < 2)
        return;
    /* A submitter whose task is the only one waiting prefers a worker
     * parked on its processor (see the essay).  One with a backlog behind
     * it, or a worker with a task of its own to run, keeps its processor
     * busy, and a worker woken there would wait for it: newest parked.
     * (queued_now reads the consumers' line: only on the way to a wake-up,
     * which costs a system call anyway.) */
    wake_one(pool, submitter && queued_now(pool) < 2 ? current_cpu() : -1);
}

static void sem_wait_uninterrupted(sem_t *sem) {
    while (sem_wait(sem) != 0 && errno == EINTR)
        ;
}

/* Takes `self` off the idle stack if it is still there: 1 if it was, 0 if
 * a waker took it (and posted, or is about to post, its semaphore). */
static bool unpark(ctx_pool_t *pool, ctx__worker_t *self) {
    pthread_mutex_lock(&pool->idle_lock);
    bool mine = self->w.idle;
    if (mine) {
        ctx__worker_t **link = &pool->idle_top;
        while (*link != self)
            link = &(*link)->w.idle_next;
        *link = self->w.idle_next;
        self->w.idle = false;
        atomic_fetch_sub(&pool->idle_count, 1);
    }
    pthread_mutex_unlock(&pool->idle_lock);
    return mine;
}

/* Polls for work (if fewer than max_spinners workers do), then parks until
 * woken.  Returns when there may be work; the caller looks. */
/* Polling pays when work comes in streams; when it comes a task at a
 * time, tens of microseconds apart, it only delays the worker's sleep and
 * (measured on 2-processor virtual machines) its next wake-up.  So each
 * worker keeps a credit: finding work while polling earns two, polling in
 * vain costs one, a worker without credit parks at once — but still polls
 * one time in CTX__POOL_POLL_PROBE, to notice when a stream starts. */
#define CTX__POOL_POLL_CREDIT_MAX 8
#define CTX__POOL_POLL_PROBE 16

static bool should_poll(ctx__worker_t *self) {
    return self->w.poll_credit > 0 || ++self->w.waits % CTX__POOL_POLL_PROBE == 0;
}

static void poll_paid(ctx__worker_t *self, bool found) {
    unsigned c = self->w.poll_credit;
    self->w.poll_credit = found ? (c + 2 > CTX__POOL_POLL_CREDIT_MAX ? CTX__POOL_POLL_CREDIT_MAX : c + 2)
                                : (c ? c - 1 : 0);
}

static void wait_for_work(ctx_pool_t *pool, ctx__worker_t *self) {
    ctx__policy_settle(self->w.debts); /* propagation.c: before going idle */
    unsigned n = atomic_load_explicit(&pool->spinners, memory_order_relaxed);
    if (n < pool->max_spinners && should_poll(self) &&
        atomic_compare_exchange_strong(&pool->spinners, &n, n + 1)) {
        bool found = false;
        for (unsigned i = 0; i < pool->polls && !found; i++) {
            ctx__cpu_relax();
            found = work_visible(pool);
        }
        atomic_fetch_sub(&pool->spinners, 1);
        poll_paid(self, found);
        if (found)
            return;
    }
    int cpu = current_cpu(); /* outside the lock: may be a system call */
    pthread_mutex_lock(&pool->idle_lock);
    self->w.cpu = cpu;
    self->w.idle = true;
    self->w.idle_next = pool->idle_top;
    pool->idle_top = self;
    atomic_fetch_add(&pool->idle_count, 1);
    pthread_mutex_unlock(&pool->idle_lock);
    /* The last look (pairs with maybe_wake after a push). */
    if (work_visible(pool) && unpark(pool, self))
        return;
    sem_wait_uninterrupted(&self->w.wake);
}

/* ---------------------------------------------------------------------- */
/* Push                                                                    */
/* ---------------------------------------------------------------------- */

/* Waits (or fails) until a bounded pool has room (tail_lock held): 0,
 * CTX_EFULL or CTX_ESHUTDOWN. */
static int wait_for_room_locked(ctx_pool_t *pool) {
    while (!pool->closed && queued_now(pool) >= pool->queue_capacity) {
        if (pool->when_full == CTX_POOL_FULL_FAIL)
            return CTX_EFULL;
        atomic_fetch_add(&pool->room_waiters, 1);
        /* Pairs with the worker's `removed` store then `room_waiters` load:
         * either it sees this waiter or this look sees its removal. */
        if (queued_now(pool) >= pool->queue_capacity && !pool->closed)
            pthread_cond_wait(&pool->room, &pool->tail_lock);
        atomic_fetch_sub(&pool->room_waiters, 1);
    }
    return pool->closed ? CTX_ESHUTDOWN : 0;
}

int ctx__queue_push(ctx_pool_t *pool, const ctx__slot_t *slot, bool retain_map) {
    for (;;) {
        /* A segment for the case this push fills the current one, made
         * before taking the lock (the allocator is user code). */
        if (!atomic_load_explicit(&pool->spare_segment, memory_order_relaxed)) {
            ctx__segment_t *s = segment_new();
            if (!s)
                return CTX_ENOMEM;
            ctx__segment_t *none = NULL;
            if (!atomic_compare_exchange_strong(&pool->spare_segment, &none, s))
                segment_free(s);
        }
        pthread_mutex_lock(&pool->tail_lock);
        int rc = pool->closed ? CTX_ESHUTDOWN : pool->queue_capacity ? wait_for_room_locked(pool) : 0;
        if (rc != 0) {
            pthread_mutex_unlock(&pool->tail_lock);
            return rc;
        }
        if (pool->tail_slot == CTX__SEGMENT_SLOTS) {
            ctx__segment_t *s = atomic_exchange(&pool->spare_segment, NULL);
            if (!s) { /* another producer took it: make another */
                pthread_mutex_unlock(&pool->tail_lock);
                continue;
            }
            atomic_store_explicit(&pool->tail_segment->next, s, memory_order_release);
            pool->tail_segment = s;
            pool->tail_slot = 0;
        }
        ctx__qslot_t *q = &pool->tail_segment->slots[pool->tail_slot++];
        q->arg = slot->arg;
        /* Right after the lock's fence, this one finds nothing to drain. */
        q->map = retain_map ? ctx__reserve_take_of(slot->map) : slot->map; /* core/reserve.c */
        atomic_store_explicit(&q->fn, slot->fn, memory_order_release); /* published */
        atomic_store(&pool->published, atomic_load_explicit(&pool->published, memory_order_relaxed) + 1);
        /* A submitter that found room may leave room for the next one too. */
        bool more_room = pool->queue_capacity && atomic_load(&pool->room_waiters) > 0 &&
                         queued_now(pool) < pool->queue_capacity;
        pthread_mutex_unlock(&pool->tail_lock);
        if (more_room)
            pthread_cond_signal(&pool->room);
        maybe_wake(pool, true);
        return 0;
    }
}

/* ---------------------------------------------------------------------- */
/* Take                                                                    */
/* ---------------------------------------------------------------------- */

/* Takes the oldest slot (`lock` held): 1 and *out, or 0 if none is
 * published.  A segment left behind goes onto *retired (linked through
 * `next`).  pool->backlog: whether the slot behind this one is published
 * too.  Only the slots are read, not `published`: the producers' line stays
 * with the producers. */
static bool take_slot_locked(ctx_pool_t *pool, ctx__slot_t *out, ctx__segment_t **retired) {
    if (pool->head_slot == CTX__SEGMENT_SLOTS) {
        ctx__segment_t *old = pool->head_segment;
        ctx__segment_t *next = atomic_load_explicit(&old->next, memory_order_acquire);
        if (!next)
            return false;
        pool->head_segment = next;
        pool->head_slot = 0;
        atomic_store_explicit(&old->next, *retired, memory_order_relaxed);
        *retired = old;
    }
    ctx__qslot_t *q = &pool->head_segment->slots[pool->head_slot];
    ctx_pool_task_fn fn = atomic_load_explicit(&q->fn, memory_order_acquire);
    if (!fn)
        return false;
    out->fn = fn;
    out->arg = q->arg;
    out->map = q->map;
    pool->head_slot++;
    pool->backlog = pool->head_slot < CTX__SEGMENT_SLOTS
                        ? atomic_load_explicit(&pool->head_segment->slots[pool->head_slot].fn,
                                               memory_order_relaxed) != NULL
                        : atomic_load_explicit(&pool->head_segment->next, memory_order_relaxed) != NULL;
    return true;
}

/* Takes the oldest task for `self` (`lock` held): a light task, or a
 * PENDING record made RUNNING.  Records cancelled while queued go onto
 * *skipped (through `link`), for the caller to release after unlocking. */
static bool take_task_locked(ctx_pool_t *pool, ctx__worker_t *self, ctx__slot_t *out,
                             ctx_pool_future_t **skipped, ctx__segment_t **retired) {
    if (pool->cancel_all)
        return false; /* a CANCEL shutdown takes what is left */
    while (take_slot_locked(pool, out, retired)) {
        ctx_pool_future_t *f = out->fn == ctx__slot_record ? out->arg : NULL;
        if (f && atomic_load_explicit(&f->state, memory_order_relaxed) != CTX__F_PENDING) {
            f->link = *skipped;
            *skipped = f;
            continue;
        }
        if (f)
            atomic_store_explicit(&f->state, CTX__F_RUNNING, memory_order_release);
        count_removed_locked(pool);
        atomic_store_explicit(&self->w.busy, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

/* Drops the queue's reference to cancelled records taken out of the queue
 * (`self`: the worker that took them, or NULL).  Their futures have ended
 * or are being ended by the thread that cancelled them, which holds a
 * reference of its own meanwhile; no user code runs here (a cancelled
 * record has no result to release). */
static void release_skipped(ctx_pool_t *pool, ctx__worker_t *self, ctx_pool_future_t *f) {
    while (f) {
        ctx_pool_future_t *next = f->link;
        ctx_pool_future_t *dead = ctx__future_release_keep(f);
        if (dead && self)
            ctx__recycle_give(pool, self, dead);
        else if (dead)
            ctx__future_free_memory(dead);
        f = next;
    }
}

static void retire_all(ctx_pool_t *pool, ctx__segment_t *s) {
    while (s) {
        ctx__segment_t *next = atomic_load_explicit(&s->next, memory_order_relaxed);
        segment_retire(pool, s);
        s = next;
    }
}

/* Signals a bounded pool's room after a task left the queue. */
static void room_freed(ctx_pool_t *pool) {
    if (pool->queue_capacity && atomic_load(&pool->room_waiters) > 0) {
        pthread_mutex_lock(&pool->tail_lock);
        pthread_cond_signal(&pool->room);
        pthread_mutex_unlock(&pool->tail_lock);
    }
}

bool ctx__queue_next(ctx_pool_t *pool, ctx__worker_t *self, ctx__slot_t *out) {
    for (;;) {
        ctx_pool_future_t *skipped = NULL;
        ctx__segment_t *retired = NULL;
        pthread_mutex_lock(&pool->lock);
        bool got = take_task_locked(pool, self, out, &skipped, &retired);
        bool backlog = got && pool->backlog;
        pthread_mutex_unlock(&pool->lock);
        release_skipped(pool, self, skipped);
        retire_all(pool, retired);
        if (got) {
            room_freed(pool);
            /* A backlog behind this task gets a parked worker. */
            if (backlog)
                maybe_wake(pool, false);
            return true;
        }
        if (atomic_load(&pool->stopping))
            return false;
        wait_for_work(pool, self);
    }
}

/* ---------------------------------------------------------------------- */
/* Cancel, close, counts                                                   */
/* ---------------------------------------------------------------------- */

int ctx__pool_cancel_pending(ctx_pool_future_t *f) {
    ctx_pool_t *pool = f->pool;
    pthread_mutex_lock(&pool->lock);
    int s = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (s != CTX__F_PENDING) {
        pthread_mutex_unlock(&pool->lock);
        return s == CTX__F_CANCELLING;
    }
    atomic_store_explicit(&f->state, CTX__F_CANCELLING, memory_order_relaxed);
    count_removed_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    room_freed(pool);
    /* Its slot keeps the queue's reference until a worker skips it or
     * shutdown takes it. */
    ctx__pool_finish_cancelled(pool, f);
    return 1;
}

bool ctx__queue_close(ctx_pool_t *pool, bool cancel) {
    pthread_mutex_lock(&pool->tail_lock);
    if (pool->closed) {
        pthread_mutex_unlock(&pool->tail_lock);
        return false; /* closed already: the first call decided */
    }
    pool->closed = true; /* every push from now on refuses */
    pthread_cond_broadcast(&pool->room);
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stopping, true);
    pool->cancel_all = cancel; /* workers take nothing more */
    pthread_mutex_unlock(&pool->lock);
    pthread_mutex_unlock(&pool->tail_lock);
    wake_all(pool);
    return true;
}

/* What ctx__queue_cancel_all does with one slot. */
typedef struct taken {
    ctx__slot_t slot;
    bool cancel; /* a task to end as cancelled (else a record already was) */
} taken_t;

void ctx__queue_cancel_all(ctx_pool_t *pool) {
    for (;;) {
        taken_t batch[64];
        size_t n = 0;
        ctx__segment_t *retired = NULL;
        pthread_mutex_lock(&pool->lock);
        while (n < 64 && take_slot_locked(pool, &batch[n].slot, &retired)) {
            ctx_pool_future_t *f = batch[n].slot.fn == ctx__slot_record ? batch[n].slot.arg : NULL;
            batch[n].cancel = !f || atomic_load_explicit(&f->state, memory_order_relaxed) == CTX__F_PENDING;
            if (batch[n].cancel) {
                if (f)
                    atomic_store_explicit(&f->state, CTX__F_CANCELLING, memory_order_relaxed);
                count_removed_locked(pool);
            }
            n++;
        }
        pthread_mutex_unlock(&pool->lock);
        retire_all(pool, retired);
        if (n == 0)
            return;
        /* Outside the locks: maps' values and arg_release may run user code. */
        for (size_t i = 0; i < n; i++) {
            ctx__slot_t *slot = &batch[i].slot;
            if (slot->fn != ctx__slot_record) {
                ctx__policy_drop_map(slot->map);
                atomic_fetch_add_explicit(&pool->cancelled, 1, memory_order_relaxed);
            } else if (batch[i].cancel) {
                ctx__pool_finish_cancelled(pool, slot->arg);
                ctx_pool_future_release(slot->arg); /* the queue's reference */
            } else {
                ctx_pool_future_t *f = slot->arg;
                f->link = NULL;
                release_skipped(pool, NULL, f);
            }
        }
    }
}

void ctx__queue_counts(ctx_pool_t *pool, size_t *queued, size_t *running, uint64_t *submitted) {
    pthread_mutex_lock(&pool->tail_lock);
    pthread_mutex_lock(&pool->lock);
    uint64_t in = atomic_load(&pool->published);
    uint64_t out = atomic_load_explicit(&pool->removed, memory_order_relaxed);
    *queued = in > out ? (size_t)(in - out) : 0;
    *submitted = in;
    size_t busy = 0;
    for (size_t i = 0; i < pool->nthreads; i++)
        busy += (size_t)atomic_load_explicit(&pool->workers[i].w.busy, memory_order_relaxed);
    *running = busy;
    pthread_mutex_unlock(&pool->lock);
    pthread_mutex_unlock(&pool->tail_lock);
}
