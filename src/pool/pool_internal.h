/*
 * pool_internal.h — what the pool module's files share (internal, `ctx__`).
 *
 * The record below is at once the queued task and its future: submit makes
 * (or reuses) exactly one of them, the core's O(1) context copy lives in it
 * (core/embed.c), the queue links through it, the worker runs it, and the
 * user waits on it.  executor.c owns
 * the queue and the links; future.c owns the state machine, waiting and
 * done-callbacks; stack.c the optional captured call stack.
 *
 * States (f->state, atomic):
 *
 *     PENDING ──(worker pops it, pool lock)──► RUNNING ──► COMPLETED
 *        │                                        │    ──► FAILED
 *        │                                        └──────► CANCELLED (task
 *        │                                                 returned ECANCELLED)
 *        └──(cancel or shutdown-cancel, pool lock)──► CANCELLING ──► CANCELLED
 *
 * Every change out of PENDING happens under the pool lock, so "PENDING" and
 * "in the queue" (on the pool's lock-free `incoming` stack or linked in its
 * FIFO: executor.c) are the same fact.  The change to a final state is
 * made by exactly one thread (the worker, or whoever won CANCELLING) in
 * ctx__future_finish, and nothing but reads happens afterwards.
 */
#ifndef CTX_POOL_INTERNAL_H
#define CTX_POOL_INTERNAL_H

#include <ctxvar/pool.h>

#include "core/core.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum {
    CTX__F_PENDING = CTX_POOL_FUTURE_PENDING,
    CTX__F_RUNNING = CTX_POOL_FUTURE_RUNNING,
    CTX__F_COMPLETED = CTX_POOL_FUTURE_COMPLETED,
    CTX__F_FAILED = CTX_POOL_FUTURE_FAILED,
    CTX__F_CANCELLED = CTX_POOL_FUTURE_CANCELLED,
    CTX__F_CANCELLING = 5 /* taken out of the queue; being finished */
};

/* Frames kept when a submit captures its call stack. */
#define CTX__STACK_MAX 32

typedef struct ctx__done_cb {
    struct ctx__done_cb *next;
    ctx_pool_future_done_fn fn;
    void *user;
    ctx_context_t *context; /* private copy captured at add time */
} ctx__done_cb_t;

struct ctx_pool_future {
    /* Queue links: written by the submitter before it publishes the record
     * on the pool's `incoming` stack (`next` only), afterwards read and
     * written only under the pool lock. */
    struct ctx_pool_future *next;
    struct ctx_pool_future *prev;
    /* A record with a future (`pinned`) holds a pool reference until it is
     * freed, so a cancel through a future never touches a freed pool. */
    ctx_pool_t *pool;
    /* The task: written at submit, read by the one thread that runs or
     * cancels it. */
    ctx_pool_task_fn fn;
    void *arg;
    void (*arg_release)(void *arg);
    void (*result_release)(void *result);
    /* The task's private context until it ran: NULL, or &context_storage
     * (a context embedded in the record, core/embed.c, so that a task
     * costs no context allocation and no cross-thread free). */
    ctx_context_t *context;
    uint64_t submit_ticks; /* stamps: see clock.c */
    /* 0 until the task starts; written by the worker while others may read
     * it (ctx_pool_future_queue_wait on a running task), hence atomic. */
    _Atomic uint64_t start_ticks;
    /* The outcome: written before the final state is published. */
    void *result;
    int error;
    atomic_int state;
    atomic_int waiters;          /* threads blocked in ctx_pool_future_wait */
    atomic_int cancel_requested; /* the flag a running task may poll */
    atomic_uint refs;
    _Atomic(ctx__done_cb_t *) callbacks; /* LIFO; CTX__CB_DONE once ended */
    /* 1 if a future was handed out: the record then holds a pool reference
     * and may have waiters and callbacks; 0 for fire-and-forget. */
    int pinned;
    struct ctx_context context_storage;
    unsigned stack_depth;
    void *stack[]; /* stack_depth captured return addresses */
};

/* ---- future.c ---- */

/* A new record with one reference, state PENDING and room for
 * `stack_depth` frames, or NULL (out of memory). */
ctx_pool_future_t *ctx__future_alloc(unsigned stack_depth);

/* Makes `f` (memory of a record with no stack) a fresh record, as
 * ctx__future_alloc(0) would return it. */
void ctx__future_init(ctx_pool_future_t *f);

/* Drops one reference.  If it was the last and the record has no captured
 * stack, the record's result is released and its memory returned for
 * reuse (to be recycled or freed with ctx__future_free_memory); otherwise
 * behaves as ctx_pool_future_release and returns NULL. */
ctx_pool_future_t *ctx__future_release_keep(ctx_pool_future_t *f);

/* Frees the memory of a record returned by ctx__future_release_keep. */
void ctx__future_free_memory(ctx_pool_future_t *f);

/* Releases the record's embedded context if it holds one (f->context
 * becomes NULL).  The context must not be entered. */
void ctx__future_drop_context(ctx_pool_future_t *f);

/* Frees a record that was never handed to a queue (a failed submit),
 * releasing its context if it has one; never calls user code. */
void ctx__future_discard(ctx_pool_future_t *f);

/* Ends the future: stores the outcome, calls arg_release, publishes the
 * final `state`, wakes waiters and runs the done-callbacks.  Called exactly
 * once per record, by the thread that ran or cancelled the task, while the
 * pool's reference is still held.  f->context must already be released. */
void ctx__future_finish(ctx_pool_future_t *f, int state, int error, void *result);

/* ---- executor.c ---- */

/* Cancels `f` if it is still queued: 1 if it was (or another thread is
 * cancelling it), 0 if it had left the queue (look at the state again). */
int ctx__pool_cancel_pending(ctx_pool_future_t *f);

/* Drops one reference to the pool's memory (a record's, or the owner's). */
void ctx__pool_release(ctx_pool_t *pool);

/* The record of the task running on the calling thread, or NULL. */
ctx_pool_future_t *ctx__pool_current_task(void);

/* ---- clock.c ---- */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t ctx__pool_now_ns(void);
/* Chooses the kind of stamps; called by ctx_pool_new before any stamp. */
void ctx__pool_clock_init(void);
/* A stamp for queue waits (see clock.c: not necessarily nanoseconds). */
uint64_t ctx__pool_ticks(void);
/* Nanoseconds from a difference of stamps. */
uint64_t ctx__pool_ticks_to_ns(uint64_t ticks);
/* Nanoseconds from stamp `from` to stamp `to` (0 if `to` is not later). */
uint64_t ctx__pool_ticks_between(uint64_t from, uint64_t to);

/* ---- stack.c ---- */

/* Stores up to `max` return addresses of the calling thread's stack in
 * `frames`, leaving out the innermost `skip` (beyond this function's own
 * frame); returns how many were stored (0 where unsupported). */
size_t ctx__stack_capture(void **frames, size_t max, size_t skip);

#endif /* CTX_POOL_INTERNAL_H */
