/* SPDX-License-Identifier: MIT */
/*
 * gate.c — how the owner of a context changes it without taking its lock,
 * and what a reader on another thread does first.
 *
 * The thread in which a context is current is the only one that changes its
 * map, and it changes unshared nodes in place.  Other threads may read the
 * same context at any time (ctx_context_get, length, copy, iteration, a
 * cancellation check), so a change and a read must not overlap.  The lock
 * did that, and cost the owner two locked instructions per ctx_var_set
 * (a quarter of a set+reset of a static variable) to guard against
 * readers that most contexts never have.  So the owner goes through a gate
 * instead, and a reader shuts it.  The gate is the lock word itself: the
 * owner passes while the word is 0 (nobody holds the lock, nobody shut
 * it); a reader takes the lock with a compare-and-swap that keeps the SHUT
 * bit:
 *
 *     owner (every change)                reader (ctx__context_lock)
 *     writing = 1                         lock word |= HELD      (CAS, seq_cst)
 *     compiler barrier                    entered?               (seq_cst)
 *     lock word == 0 ?       (seq_cst)      no:  read; unlock
 *       yes: change, writing = 0            yes: lock word = HELD|SHUT, for good
 *       no:  writing = 0, take the lock,         membarrier()
 *            change, unlock                      wait until writing == 0
 *                                                read; unlock (SHUT stays)
 *
 * Why it holds (Dekker's pattern, with the fence moved to the reader):
 *   - A context not entered has no owner.  A thread that enters it later
 *     does so with a compare-and-swap on its state (ctx__context_claim,
 *     seq_cst), which follows the reader's compare-and-swap of the lock
 *     word in the single order of seq_cst operations (the reader's load of
 *     the state, after its own, saw no owner), so that thread's later load
 *     of the lock word sees HELD (or the word the reader's unlock stored,
 *     which it then synchronises with), and it takes the lock.  This case
 *     costs a reader one load more than the lock always did; it is inline
 *     (ctx__context_lock in core.h), this file has the rest.
 *   - A context entered elsewhere: membarrier(MEMBARRIER_CMD_PRIVATE_
 *     EXPEDITED) makes every running thread of the process execute a full
 *     barrier before it returns (a thread not running gets one when it is
 *     switched).  If the owner's barrier falls before its load of the lock
 *     word, that load sees it non-zero and the owner takes the lock;
 *     otherwise its store of `writing` is visible to the reader, which
 *     waits for the release store that ends the change (a few hundred
 *     nanoseconds, no user code).
 *   - A reader that is itself the owner (the context is entered in its own
 *     thread: current, or under the current one) cannot race with a change
 *     and only takes the lock.
 * SHUT is for good: once a context was read while entered elsewhere, its
 * owner takes the lock for every change, as it always did, and later
 * readers need no barrier.  So a context costs at most one membarrier in
 * its life (a system call that interrupts each core running a thread of
 * the process: microseconds, tens of them on 64 cores), and only if it is
 * read while entered in another thread, which few programs do.
 *
 * Where membarrier cannot be registered (another system, an old kernel, a
 * sandbox refusing the call), the process's gates are all shut
 * (ctx__gate_mode, decided before a thread's state is made, hence before
 * any owner changes anything): owners always lock, readers only lock.
 * Once registered, the command does not fail; should it, the reader falls
 * back to MEMBARRIER_CMD_GLOBAL, and if that fails too the process aborts
 * with a message (reading on could mean reading a node while it changes).
 * A fork() child is a new process, not registered: the child handler
 * registers it again or, failing that, shuts every gate (the child then
 * has one thread, in no change).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/membarrier.h"
#include "core/core.h"

atomic_uchar ctx__gate_mode;

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The child has one thread, in no change: switching is safe. */
static void after_fork_child(void) {
    if (!ctx__membarrier_register())
        atomic_store_explicit(&ctx__gate_mode, CTX__GATES_SHUT, memory_order_relaxed);
}

static void decide(void) {
    int open = ctx__membarrier_register();
    if (open && pthread_atfork(NULL, NULL, after_fork_child) != 0)
        open = 0; /* a child could not register again: never open */
    atomic_store_explicit(&ctx__gate_mode, open ? CTX__GATES_OPEN : CTX__GATES_SHUT,
                          memory_order_relaxed);
}

void ctx__gate_decide(void) { pthread_once(&once, decide); }

/* Every running thread of the process has executed a full barrier. */
static void heavy_barrier(void) {
    if (ctx__membarrier() == 0)
        return;
    fputs("ctxvar: membarrier failed after it was registered: a context's owner may be "
          "changing it\n",
          stderr);
    abort();
}

/* Whether `ctx` is entered in the calling thread (current, or under it). */
static int entered_here(const ctx_context_t *ctx) {
    const ctx__tstate_t *ts = ctx__tls;
    for (const ctx_context_t *c = ts ? ts->current : NULL; c; c = c->prev)
        if (c == ctx)
            return 1;
    return 0;
}

int ctx__context_lock_word(ctx_context_t *ctx) {
    int w = 0; /* the likeliest: a context nobody shut and nobody holds */
    while (!atomic_compare_exchange_weak_explicit(&ctx->lock, &w, w | CTX__LOCK_HELD,
                                                  memory_order_seq_cst, memory_order_relaxed)) {
        while (w & CTX__LOCK_HELD) {
            sched_yield(); /* the holder may be descheduled */
            w = atomic_load_explicit(&ctx->lock, memory_order_relaxed);
        }
    }
    return w;
}

void ctx__context_lock_slow(ctx_context_t *ctx, int held) {
    if (!held) {
        int w = ctx__context_lock_word(ctx);
        /* No owner past the gate now, nor from now on while this is held: */
        if ((w & CTX__LOCK_SHUT) ||
            !(atomic_load_explicit(&ctx->state, memory_order_seq_cst) & CTX__ENTERED))
            return;
    }
    if (entered_here(ctx))
        return;
    ctx__gate_decide(); /* an owner past a gate decided before it entered */
    if (atomic_load_explicit(&ctx__gate_mode, memory_order_relaxed) != CTX__GATES_OPEN)
        return;
    atomic_store_explicit(&ctx->lock, CTX__LOCK_HELD | CTX__LOCK_SHUT, memory_order_relaxed);
    heavy_barrier();
    while (atomic_load_explicit(&ctx->writing, memory_order_acquire))
        sched_yield(); /* the owner may have been descheduled mid-change */
}
