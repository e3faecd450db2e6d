/* SPDX-License-Identifier: MIT */
/*
 * reclaim.c — the read side of the bus's global listener lists: publishers
 * read `bus->global` without a lock and without a reference, and a list a
 * writer replaced is freed once no publisher can still be reading it
 * (epoch-based reclamation, in the manner of userspace RCU).
 *
 * Why.  Every synchronous publish reads the bus's global list, and every
 * global subscribe, unsubscribe and shutdown replaces it (lists are
 * immutable) and drops the old one.  Holding a reference for the length of
 * a publish costs atomic read-modify-writes on lines every publisher shares
 * (a spinlock and a reference count: three per publish, the bulk of the
 * bus's cost, and the lines bounce between cores when several threads
 * publish).  Here a publish writes only to its own thread's record.
 *
 * The pieces:
 *
 *   ctx__bus_rcu (one per process, read-mostly)
 *     epoch         64-bit, bumped by every retirement
 *     retired       lists retired and not yet freed (a hint for readers)
 *     retired_max   the newest retirement's epoch
 *   registry (under `lock`): every thread's reader record
 *     reader { epoch: 0 outside a publish, else the epoch read on entry;
 *              bus: the bus of the outermost publish, or CTX__BUS_ANY;
 *              depth: publishes nested on this thread }
 *   retired lists (under `lock`): each list with the epoch and the bus it
 *     was retired at (fields of the list itself: retiring never allocates)
 *
 * Reader (ctx__bus_read_enter/exit, inline in bus_internal.h; a
 * synchronous publish holds its section for its whole delivery, a snapshot
 * for an asynchronous one or the stats only while they retain or count), at
 * the outermost section of a thread: store bus, store epoch (the global
 * epoch read with acquire), then load `bus->global`; at the end store epoch
 * 0, then read `retired`.  Nested sections only count depth (one on
 * another bus widens the record to CTX__BUS_ANY, which blocks every bus's
 * reclamation until the outermost exit: conservative, and rare).  No lock,
 * no read-modify-write, no write to a line another reader reads; the
 * reader's state (FAST: membarrier is in use) picks the inline path, every
 * other state (not yet registered, FENCED, ANONYMOUS) the out-of-line one.
 *
 * Writer (ctx__bus_retire), after it swapped `bus->global` (release):
 *   1. under `lock`: epoch + 1 = E, stamp the old list with (E, bus),
 *      retired + 1, retired_max = E;
 *   2. a heavy barrier (below);
 *   3. under `lock`: queue the list, then scan (reclaim_locked): a queued
 *      list (E, bus) may go when no registered reader has
 *      0 < epoch < E with bus == that bus or CTX__BUS_ANY;
 *   4. after unlocking, drop the lists that may go (their release may run
 *      user_release: no lock is held).
 * A reader that read the epoch E or later also sees the new pointer (its
 * acquire load of the epoch synchronises with step 1, which follows the
 * swap); a reader with an older epoch may hold the old list and blocks it;
 * a reader whose record still reads 0 has not loaded the pointer yet, or
 * loaded it after the swap — that is what the barrier guarantees: a reader
 * stores its epoch then loads the pointer, a writer stores the pointer then
 * (after the barrier) loads the epochs, and one of the two sees the other's
 * store (Dekker's pattern).
 *
 * The barrier costs the writer, not the reader.  With Linux's
 * membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (registered when the first
 * bus is made) the writer makes every running thread of the process execute
 * a full barrier, so the reader's side needs only a compiler barrier.
 * Without it (another system, an old kernel, a sandbox refusing the call)
 * the reader executes a full fence after its stores (one per entry, one per
 * exit: still no shared write).  Should membarrier fail after it was
 * registered (it does not, short of a kernel bug), the writer keeps the
 * list for good: a leak rather than a use after free.
 *
 * Who frees.  The writer's own scan frees what no reader holds.  What a
 * reader held is freed when the last such reader leaves: a reader leaving
 * its outermost publish reads `retired` (a shared line that only writers
 * write) and, when something is queued that it might have blocked (its
 * epoch is older than retired_max), scans under `lock` (the same Dekker
 * argument, with `retired` written before the writer's barrier, makes sure
 * that the writer's scan or the reader's sees the other).  So a list goes
 * as soon as no publish that could have read it is running — what a
 * reference held by each publish gave before.
 *
 * Threads.  A thread registers its record (static thread-local storage:
 * no allocation) at its first publish, with a pthread key whose destructor
 * unregisters it when the thread exits.  If the key is missing (creating it
 * failed) or cannot be set, that thread's publishes count themselves in
 * `anonymous` instead, an atomic counter (read-modify-writes on a shared
 * line: slow, correct), and nothing is freed while one runs.
 *
 * With 16–64 publishing threads.  Publishers share no written line: each
 * writes its own record and reads the bus, the lists, the listener records
 * and ctx__bus_rcu, which stay in every core's cache in the shared state
 * until a writer changes them.  Publish cost does not grow with the number
 * of publishers.  A retirement costs the writer one membarrier (an
 * interrupt to each core running a thread of the process: tens of
 * microseconds on 64 cores), a walk of the registry (one record per thread
 * that ever published, a cache miss each) and one invalidation of the
 * ctx__bus_rcu line in every core; every reader whose publish began before
 * it then scans once at its end (the `lock` is taken by each such reader
 * once per retirement: with 64 publishers, up to 64 short scans queued
 * behind one mutex after each subscribe — subscriptions are expected to be
 * rare next to publishes).  A publish that takes long (a slow listener)
 * delays the reclamation of lists of its bus retired meanwhile, not of other
 * buses', and never delays a writer.
 *
 * fork().  The child keeps only the forking thread: the child handler
 * (bus.c) calls ctx__bus_rcu_after_fork, which re-creates the lock, keeps
 * only that thread's record, forgets the queued lists (they belong to buses
 * made before the fork, which free nothing in the child), and registers the
 * child for membarrier again (a new process is not registered; if that
 * fails the child uses fences — it has one thread, so switching is safe).
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "bus/bus_internal.h"
#include "common/membarrier.h"

_Alignas(64) ctx__bus_rcu_t ctx__bus_rcu;
_Thread_local ctx__bus_reader_t ctx__bus_reader;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ctx__bus_reader_t *registry;     /* under lock */
static ctx__bus_list_t *queued;         /* under lock: retired, past the barrier */
static pthread_key_t reader_key;
static int reader_key_ok;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* ---- the heavy barrier ---- */

/* 0 when every running thread of the process executed a full barrier. */
static int heavy_barrier(void) {
    atomic_thread_fence(memory_order_seq_cst);
    if (!ctx__bus_rcu.asymmetric)
        return 0; /* the readers fence themselves */
    return ctx__membarrier();
}

/* ---- registry and the readers' slow paths ---- */

static void reader_unregister(void *arg) {
    ctx__bus_reader_t *r = arg;
    pthread_mutex_lock(&lock);
    for (ctx__bus_reader_t **p = &registry; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    /* A publish from a later destructor of this thread counts itself as
     * anonymous.  A thread that exits inside a publish (pthread_exit from a
     * listener) never returns to it: it holds nothing from now on. */
    atomic_store_explicit(&r->epoch, 0, memory_order_release);
    r->state = CTX__BUS_READER_ANONYMOUS;
    r->depth = 0;
}

static void rcu_init(void) {
    reader_key_ok = pthread_key_create(&reader_key, reader_unregister) == 0;
    ctx__bus_rcu.asymmetric = ctx__membarrier_register();
    atomic_init(&ctx__bus_rcu.epoch, 1);
}

void ctx__bus_rcu_init(void) { pthread_once(&init_once, rcu_init); }

static void reader_register(ctx__bus_reader_t *r) {
    if (!reader_key_ok || pthread_setspecific(reader_key, r) != 0) {
        r->state = CTX__BUS_READER_ANONYMOUS;
        return;
    }
    pthread_mutex_lock(&lock);
    r->next = registry;
    registry = r;
    pthread_mutex_unlock(&lock);
    r->state = ctx__bus_rcu.asymmetric ? CTX__BUS_READER_FAST : CTX__BUS_READER_FENCED;
}

uint64_t ctx__bus_read_enter_slow(ctx__bus_reader_t *r, const ctx_bus_t *bus) {
    if (r->state == CTX__BUS_READER_NEW)
        reader_register(r);
    if (r->state == CTX__BUS_READER_ANONYMOUS) {
        atomic_fetch_add_explicit(&ctx__bus_rcu.anonymous, 1, memory_order_seq_cst);
        return 1; /* an outermost ticket (its value is not used) */
    }
    uint64_t e = atomic_load_explicit(&ctx__bus_rcu.epoch, memory_order_acquire);
    atomic_store_explicit(&r->bus, bus, memory_order_release);
    atomic_store_explicit(&r->epoch, e, memory_order_release);
    if (r->state == CTX__BUS_READER_FENCED)
        atomic_thread_fence(memory_order_seq_cst);
    else
        atomic_signal_fence(memory_order_seq_cst);
    return e; /* never 0: the epoch starts at 1 */
}

void ctx__bus_read_exit_slow(ctx__bus_reader_t *r) {
    uint64_t e = 0; /* anonymous: may have blocked anything */
    if (r->state == CTX__BUS_READER_ANONYMOUS) {
        atomic_fetch_sub_explicit(&ctx__bus_rcu.anonymous, 1, memory_order_seq_cst);
    } else {
        e = atomic_load_explicit(&r->epoch, memory_order_relaxed);
        atomic_store_explicit(&r->epoch, 0, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
    }
    if (atomic_load_explicit(&ctx__bus_rcu.retired, memory_order_relaxed) != 0)
        ctx__bus_read_exited(e);
}

void ctx__bus_read_widen(ctx__bus_reader_t *r) {
    if (r->state == CTX__BUS_READER_ANONYMOUS ||
        atomic_load_explicit(&r->bus, memory_order_relaxed) == CTX__BUS_ANY)
        return;
    atomic_store_explicit(&r->bus, CTX__BUS_ANY, memory_order_release);
    if (r->state == CTX__BUS_READER_FENCED)
        atomic_thread_fence(memory_order_seq_cst);
    else
        atomic_signal_fence(memory_order_seq_cst);
}

void ctx__bus_read_exited(uint64_t epoch) {
    /* A reader that entered at or after the newest retirement blocked none. */
    if (epoch < atomic_load_explicit(&ctx__bus_rcu.retired_max, memory_order_relaxed))
        ctx__bus_reclaim();
}

/* ---- reclamation ---- */

/* 1 if some reader may still hold a list of `bus` retired at `epoch`. */
static int held_locked(const ctx_bus_t *bus, uint64_t epoch) {
    if (atomic_load_explicit(&ctx__bus_rcu.anonymous, memory_order_acquire))
        return 1;
    for (ctx__bus_reader_t *r = registry; r; r = r->next) {
        uint64_t e = atomic_load_explicit(&r->epoch, memory_order_acquire);
        if (e == 0 || e >= epoch)
            continue;
        const ctx_bus_t *b = atomic_load_explicit(&r->bus, memory_order_acquire);
        if (b == bus || b == CTX__BUS_ANY)
            return 1;
    }
    return 0;
}

/* Unlinks the queued lists no reader holds; returns them, chained. */
static ctx__bus_list_t *reclaim_locked(void) {
    ctx__bus_list_t *free_list = NULL;
    size_t n = 0;
    for (ctx__bus_list_t **p = &queued; *p;) {
        ctx__bus_list_t *l = *p;
        if (held_locked(l->retired_bus, l->retired_epoch)) {
            p = &l->retired_next;
            continue;
        }
        *p = l->retired_next;
        l->retired_next = free_list;
        free_list = l;
        n++;
    }
    if (n)
        atomic_fetch_sub_explicit(&ctx__bus_rcu.retired, n, memory_order_relaxed);
    return free_list;
}

static void drop_all(ctx__bus_list_t *l) {
    while (l) {
        ctx__bus_list_t *next = l->retired_next;
        ctx__bus_list_release(l); /* may run user code: no lock held */
        l = next;
    }
}

void ctx__bus_reclaim(void) {
    pthread_mutex_lock(&lock);
    ctx__bus_list_t *done = reclaim_locked();
    pthread_mutex_unlock(&lock);
    drop_all(done);
}

void ctx__bus_retire(ctx_bus_t *bus, ctx__bus_list_t *list) {
    if (!list)
        return;
    pthread_mutex_lock(&lock);
    uint64_t e = atomic_load_explicit(&ctx__bus_rcu.epoch, memory_order_relaxed) + 1;
    atomic_store_explicit(&ctx__bus_rcu.epoch, e, memory_order_seq_cst);
    list->retired_epoch = e;
    list->retired_bus = bus;
    atomic_fetch_add_explicit(&ctx__bus_rcu.retired, 1, memory_order_seq_cst);
    atomic_store_explicit(&ctx__bus_rcu.retired_max, e, memory_order_seq_cst);
    pthread_mutex_unlock(&lock);
    if (heavy_barrier() != 0)
        return; /* no barrier to be had: never safe to free (kept for good) */
    pthread_mutex_lock(&lock);
    list->retired_next = queued;
    queued = list;
    ctx__bus_list_t *done = reclaim_locked();
    pthread_mutex_unlock(&lock);
    drop_all(done);
}

/* ---- fork ---- */

void ctx__bus_rcu_after_fork(void) {
    pthread_mutex_init(&lock, NULL);
    ctx__bus_reader_t *me = &ctx__bus_reader;
    registry = NULL;
    if (me->state == CTX__BUS_READER_FAST || me->state == CTX__BUS_READER_FENCED) {
        me->next = NULL;
        registry = me;
    }
    queued = NULL; /* of buses made before the fork: they stay allocated */
    atomic_store_explicit(&ctx__bus_rcu.retired, 0, memory_order_relaxed);
    atomic_store_explicit(&ctx__bus_rcu.anonymous, me->state == CTX__BUS_READER_ANONYMOUS && me->depth ? 1 : 0,
                          memory_order_relaxed);
    if (ctx__bus_rcu.asymmetric && !ctx__membarrier_register()) {
        ctx__bus_rcu.asymmetric = 0; /* the only thread: switching is safe */
        if (me->state == CTX__BUS_READER_FAST)
            me->state = CTX__BUS_READER_FENCED;
    }
}
