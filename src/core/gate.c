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
 * (about a third of a set+reset of a static variable) to guard against
 * readers that most contexts never have.  So the owner goes through a gate
 * instead, and a reader closes it:
 *
 *     owner (every change)                reader (ctx__context_lock)
 *     writing = 1                         take the lock
 *     compiler barrier                    gate = READER            (seq_cst)
 *     gate == OPEN ?                      entered?                 (seq_cst)
 *       yes: change, writing = 0            no:  read; gate = OPEN; unlock
 *       no:  writing = 0, take the lock,    yes: gate = SHUT (for good)
 *            change, unlock                      membarrier()
 *                                                wait until writing == 0
 *                                                read; unlock
 *
 * Why it holds (Dekker's pattern, with the fence moved to the reader):
 *   - A context not entered has no owner.  A thread that enters it later
 *     does so with a compare-and-swap on its state, which the reader's load
 *     of the state precedes in the single order of seq_cst operations, so
 *     that thread's later load of the gate sees READER (or the OPEN the
 *     reader stored after reading, which it then synchronises with), and
 *     it takes the lock the reader holds.
 *   - A context entered elsewhere: membarrier(MEMBARRIER_CMD_PRIVATE_
 *     EXPEDITED) makes every running thread of the process execute a full
 *     barrier before it returns (a thread not running gets one when it is
 *     switched).  If the owner's barrier falls before its load of the gate,
 *     that load sees SHUT and it takes the lock; otherwise its store of
 *     `writing` is visible to the reader, which waits for the release store
 *     that ends the change (a few hundred nanoseconds, no user code).
 *   - A reader that is itself the owner (the context is entered in its own
 *     thread: current, or under the current one) cannot race with a change
 *     and only takes the lock.
 *   - Readers take the lock among themselves, so READER is only ever the
 *     lock holder's, and the unlock reopens what it set.
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

void ctx__context_lock(ctx_context_t *ctx) {
    ctx__gate_decide(); /* cheap once done; an owner past a gate decided before */
    ctx__spin_lock(&ctx->lock);
    if (atomic_load_explicit(&ctx__gate_mode, memory_order_relaxed) != CTX__GATES_OPEN ||
        atomic_load_explicit(&ctx->gate, memory_order_relaxed) == CTX__GATE_SHUT ||
        entered_here(ctx))
        return;
    atomic_store_explicit(&ctx->gate, CTX__GATE_READER, memory_order_seq_cst);
    if (!(atomic_load_explicit(&ctx->state, memory_order_seq_cst) & CTX__ENTERED))
        return; /* no owner: one that enters from now on sees READER */
    atomic_store_explicit(&ctx->gate, CTX__GATE_SHUT, memory_order_seq_cst);
    heavy_barrier();
    while (atomic_load_explicit(&ctx->writing, memory_order_acquire))
        sched_yield(); /* the owner may have been descheduled mid-change */
}

void ctx__context_unlock(ctx_context_t *ctx) {
    if (atomic_load_explicit(&ctx->gate, memory_order_relaxed) == CTX__GATE_READER)
        atomic_store_explicit(&ctx->gate, CTX__GATE_OPEN, memory_order_release);
    ctx__spin_unlock(&ctx->lock);
}
