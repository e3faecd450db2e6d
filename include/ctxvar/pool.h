/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/pool.h — propagation across threads (the pool module).
 *
 * Python's ThreadPoolExecutor.submit does not carry the caller's context into
 * the worker; projects patch it by hand (copy_context() at submit, ctx.run()
 * in the worker).  This module does it right by default:
 *
 *   ctx_pool_t     a fixed-size thread pool with a FIFO queue (optionally
 *                  bounded).  `submit` captures the submitter's current
 *                  context in O(1) and the task runs in a private copy of it.
 *   ctx_pool_future_t   the outcome of one submitted task: wait (with a timeout),
 *                  result or error, cancel, done-callbacks.
 *   ctx_pool_bound_t    a bound callable: capture the current context now, call
 *                  later from any thread, any number of times.  What you hand
 *                  to a C callback API.
 *   ctx_pool_thread_t   a thread that starts in an empty context, or in a copy of
 *                  its creator's.
 *   ctx_pool_group_t    a group of tasks (Go's errgroup): wait for all of them;
 *                  the first failure stops the others and is the group's
 *                  result.
 *
 * Propagation
 * -----------
 * Every task runs in a context of its own, made at submit time and dropped
 * when the task returns, so a task's `ctx_var_set`s never reach the
 * submitter, a sibling task, or the next task on the same worker; and no task
 * ever runs in a context left over from an earlier task or from the thread
 * that created the pool.  What that context holds is chosen per pool and per
 * submit (ctx_pool_propagation_t): a copy of the submitter's current context (the
 * default), nothing (opt-out), a copy of a given context, or only an
 * allowlist of variables from the submitter's context.
 *
 * A copy shares the submitter's values; they are released when no context
 * refers to them any more.  A task with a future drops its context when it
 * returns.  A fire-and-forget task's worker drops the reference it held on
 * the submitter's values together with others of the same context, at the
 * latest when it next waits for work or after 64 more tasks of that
 * context, so such values may outlive the task by that much (it saves two
 * cache-line transfers per task).  ctx_pool_release always drops them.
 *
 * Cancellation (ctxvar/cancel.h)
 * ------------------------------
 * A task's context carries the submitter's cancellation scope like any
 * value, so code in a task asks ctx_cancel_check() and stops when the work
 * it does was abandoned or ran out of time.  The pool acts on it too:
 *   - a task whose scope is cancelled (or whose deadline has passed) when
 *     a worker takes it never starts: its future ends CANCELLED with the
 *     scope's error, CTX_ECANCELLED or CTX_EDEADLINE (ctx_pool_future_result),
 *     its arg_release runs, ctx_pool_stats counts it cancelled;
 *   - a task with a future runs in a scope of its own, a child of the
 *     submitter's made at submit, which ctx_pool_future_cancel cancels: one
 *     check, ctx_cancel_check(), covers the task's own cancellation, the
 *     request's and its deadline (ctx_pool_task_cancelled is that check);
 *   - a task that returns CTX_ECANCELLED or CTX_EDEADLINE ends CANCELLED
 *     with that error;
 *   - waiting (ctx_pool_future_wait, ctx_pool_group_wait) ends as soon as
 *     the WAITER's own scope is cancelled or its deadline passes.
 * What it costs: a fire-and-forget task whose context has no scope pays one
 * load for this (no scope was ever made current) or one per-thread cache
 * probe; one with a scope takes a task record instead of a 32-byte queue
 * slot; a task with a future pays for its own scope at submit (a scope and
 * one more entry in its context: three allocations, freed with the future).
 *
 * Ownership (libuv's rule)
 * ------------------------
 * A call that fails never runs the callback it was given, and everything it
 * was handed (a task's `arg`, a callback's `user`) stays with the caller.  A
 * successful submit hands `arg` to the task; if the submit options name an
 * `arg_release`, the pool calls it exactly once when it is done with `arg`
 * (after the task returned, or when the task was cancelled before it ran).
 *
 * fork()
 * ------
 * After fork() the child has only the thread that forked.  A pool made
 * before the fork has no workers there and its locks may be held forever,
 * so in the child every call that needs its workers or its locks fails with
 * CTX_EFORKED: ctx_pool_submit, ctx_pool_submit_ex, ctx_pool_shutdown,
 * ctx_pool_stats, and, on a future of that pool that has not ended,
 * ctx_pool_future_wait, ctx_pool_future_cancel and
 * ctx_pool_future_add_done_callback (an ended future answers as usual).
 * ctx_pool_release of such a pool returns 0 at once: it joins nothing and
 * frees nothing (the memory is the child's copy of the parent's, and goes
 * when the child exits); its futures may be released as usual.
 * ctx_pool_thread_join of a thread started before the fork fails with
 * CTX_EFORKED (the handle is freed).  Pools, threads and bound callables
 * made in the child work normally, and the child's current context keeps
 * working (it is plain memory).  A task that calls fork() must not return
 * in the child (exec or _exit there): its worker does not exist.
 *
 * Debug builds
 * ------------
 * Built with -DCTX_DEBUG=ON, a future or a bound callable used after its
 * last reference was released, or released once too often, aborts at once
 * with a line naming the call and the object ("ctxvar:
 * ctx_pool_future_release: future 0x... already released"); such a build
 * also stops recycling task records, so that AddressSanitizer sees every
 * use after release.  Without it, such misuse is undefined behaviour.
 *
 * Errors are the negative CTX_E* codes of ctxvar.h; see each function.
 */
#ifndef CTXVAR_POOL_H
#define CTXVAR_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "../ctxvar.h"
#include "cancel.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A pool, a future, a bound callable, a thread (see the top of this file). */
typedef struct ctx_pool ctx_pool_t;
typedef struct ctx_pool_future ctx_pool_future_t;
typedef struct ctx_pool_bound ctx_pool_bound_t;
typedef struct ctx_pool_thread ctx_pool_thread_t;

/* A task.  Returns 0 and stores its result in *result (completed), or a
 * negative code (failed with that code; CTX_ECANCELLED or CTX_EDEADLINE —
 * what ctx_cancel_check() returns — means the task gave up because its
 * scope was cancelled: the future ends cancelled with that code).  *result
 * is NULL on entry.  Runs on a pool worker, in the task's own context. */
typedef int (*ctx_pool_task_fn)(void *arg, void **result);

/* ---------------------------------------------------------------------- */
/* Propagation policy                                                      */
/* ---------------------------------------------------------------------- */

/* What the context a task runs in holds (pool options, submit options). */
typedef enum ctx_pool_propagation {
    /* In pool options: CTX_POOL_PROPAGATE_COPY.  In submit options: whatever the
     * pool was configured with. */
    CTX_POOL_PROPAGATE_DEFAULT = 0,
    /* The task runs in a private copy of the submitter's current context,
     * captured at submit (O(1)). */
    CTX_POOL_PROPAGATE_COPY = 1,
    /* The task runs in a new empty context: variables read their defaults.
     * The opt-out, for isolation (or for a pool that does not care). */
    CTX_POOL_PROPAGATE_NONE = 2,
    /* The task runs in a private copy of an explicitly given context (taken
     * at submit; the given context is never entered, so it may be in use
     * elsewhere). */
    CTX_POOL_PROPAGATE_CONTEXT = 3,
    /* The task runs in a context holding only the listed variables that have
     * a value in the submitter's current context. */
    CTX_POOL_PROPAGATE_ALLOWLIST = 4
} ctx_pool_propagation_t;

/* ---------------------------------------------------------------------- */
/* Pools                                                                   */
/* ---------------------------------------------------------------------- */

/* What `submit` does when a bounded queue is full.  (A task that submits to
 * its own pool waits like any other submitter: if every worker does that at
 * once on a full queue, WAIT never returns; use FAIL for pools whose tasks
 * submit to them.) */
typedef enum ctx_pool_full {
    CTX_POOL_FULL_WAIT = 0, /* wait until a slot frees (or the pool shuts down) */
    CTX_POOL_FULL_FAIL = 1  /* fail at once with CTX_EFULL */
} ctx_pool_full_t;

/* Options, per-submit options, bound-callable options and stats follow the
 * growth rule of ctxvar.h: the first member is the struct's size, set by
 * CTX_STRUCT_INIT(type) (every other member zero: the defaults); the
 * library reads a smaller (older) struct's missing members as zero, refuses
 * a larger (newer) one whose unknown members are not all zero (CTX_EINVAL),
 * refuses a size below the 1.0 layout (CTX_EINVAL), and writes stats no
 * further than the caller's size.  A NULL options pointer means defaults. */
/* How ctx_pool_new makes a pool (a NULL pointer: every default). */
typedef struct ctx_pool_options {
    size_t size; /* sizeof(ctx_pool_options_t): CTX_STRUCT_INIT */
    /* Worker threads, started at creation and kept until shutdown.
     * 0: the number of online processors (ctx_pool_default_threads). */
    size_t threads;
    /* Most tasks waiting in the queue (not counting running ones); 0 means
     * unbounded. */
    size_t queue_capacity;
    ctx_pool_full_t when_full; /* what submit does when that queue is full */
    /* The pool's propagation policy (DEFAULT means COPY).  For CONTEXT,
     * `context` is retained by the pool until ctx_pool_release; for
     * ALLOWLIST, the `allowlist_len` variables of `allowlist` are copied and
     * retained.  Submit options may override the policy per task. */
    ctx_pool_propagation_t propagation;
    ctx_context_t *context;      /* for CTX_POOL_PROPAGATE_CONTEXT */
    ctx_var_t *const *allowlist; /* for CTX_POOL_PROPAGATE_ALLOWLIST */
    size_t allowlist_len;        /* the number of variables in allowlist */
    /* Non-zero: every submit records the submitting call stack in its
     * future (ctx_pool_future_stack), for debugging failed or slow tasks.  Costs
     * a few hundred nanoseconds per submit. */
    int capture_stack;
} ctx_pool_options_t;

/* Per-submit options (all members optional: a zeroed struct means "as the
 * pool is configured", exactly like ctx_pool_submit). */
typedef struct ctx_pool_submit_options {
    size_t size; /* sizeof(ctx_pool_submit_options_t): CTX_STRUCT_INIT */
    /* DEFAULT: the pool's policy.  CONTEXT uses `context` (borrowed for the
     * duration of the call: it is copied).  ALLOWLIST uses `allowlist`
     * (borrowed for the duration of the call). */
    ctx_pool_propagation_t propagation;
    ctx_context_t *context;      /* for CTX_POOL_PROPAGATE_CONTEXT */
    ctx_var_t *const *allowlist; /* for CTX_POOL_PROPAGATE_ALLOWLIST */
    size_t allowlist_len;        /* the number of variables in allowlist */
    /* Called exactly once with `arg` when the pool is done with it: on the
     * worker after the task returned, or on the thread that cancelled the
     * task before it ran.  Always before the future becomes done, so once
     * ctx_pool_future_wait returns the pool no longer touches `arg`.  Runs outside
     * the task's context.  Never called if the submit fails. */
    void (*arg_release)(void *arg);
    /* Called once with the result of a completed task when the future is
     * destroyed (last reference released): the future then owns the result.
     * NULL: the result is a plain value the future never frees. */
    void (*result_release)(void *result);
    /* Non-zero: capture the submitting call stack even if the pool does not. */
    int capture_stack;
} ctx_pool_submit_options_t;

/* How ctx_pool_shutdown treats tasks still waiting in the queue. */
typedef enum ctx_pool_shutdown_mode {
    CTX_POOL_SHUTDOWN_DRAIN = 0, /* run every queued task, then stop */
    CTX_POOL_SHUTDOWN_CANCEL = 1 /* cancel every queued task (they never run) */
} ctx_pool_shutdown_mode_t;

/* A snapshot of a pool's counters (queued, running and submitted are read
 * together under the pool lock; the others are per-worker counters added up,
 * each updated just before the future it counts becomes done, so after
 * ctx_pool_future_wait returns the task is counted). */
typedef struct ctx_pool_stats {
    size_t size;             /* set by the caller (CTX_STRUCT_INIT); kept */
    size_t threads;          /* workers the pool was created with */
    size_t queued;           /* tasks waiting in the queue now */
    size_t running;          /* tasks taken by a worker and not yet finished
                                (including their done-callbacks) */
    uint64_t submitted;      /* successful submits, ever */
    uint64_t completed;      /* futures ended COMPLETED */
    uint64_t failed;         /* futures ended FAILED */
    uint64_t cancelled;      /* futures ended CANCELLED */
    uint64_t rejected;       /* submits refused: CTX_EFULL or CTX_ESHUTDOWN */
    uint64_t max_queue_wait_ns; /* longest time a timed task waited in the
                                   queue: every task with a future is timed,
                                   and one fire-and-forget task in 16 (the
                                   clock costs more than an empty task) */
} ctx_pool_stats_t;

/* The number of online processors (at least 1): the default pool size.
 * Any thread. */
CTX_EXPORT size_t ctx_pool_default_threads(void);

/* Creates a pool and starts its workers.  `options` NULL: defaults (one
 * worker per processor, unbounded queue, propagation on, no stack capture).
 * On success *out is the caller's, to be destroyed with ctx_pool_release.
 * The workers start with no context of their own; tasks never run in it.
 * Any thread.
 * Errors: CTX_EINVAL (out NULL; options->size below the 1.0 layout, or a
 * larger struct whose members this library does not know are not all zero;
 * a propagation or when_full value out of range; CONTEXT without a context;
 * ALLOWLIST with a NULL list or a NULL variable in it; more than 4096
 * threads), CTX_ENOMEM, CTX_ESYSTEM (a worker, lock or semaphore could not
 * be made, or the fork handler could not be installed).
 * On error nothing is left running and nothing the caller passed is kept. */
CTX_EXPORT int ctx_pool_new(const ctx_pool_options_t *options,
                            ctx_pool_t **out);

/* Queues fn(arg) to run on a worker, in a context chosen by the pool's
 * policy (by default a private copy of the calling thread's current
 * context, captured now).  If `out` is not NULL, *out receives a future
 * (the caller owns one reference: ctx_pool_future_release); with NULL the task
 * runs fire-and-forget.  A fire-and-forget task costs 32 bytes of the queue
 * and no allocation of its own; a task with a future costs one record, with
 * the task's context inside it (a thread submitting a stream of tasks reuses
 * the records of finished ones: it keeps up to 32 spare records, about 8 KB,
 * freed when it exits or calls ctx_pool_release).
 * Any thread, including the pool's own tasks (but a task that waits for a
 * task queued behind it on a one-worker pool waits forever).
 * With a future, the task runs in a cancellation scope of its own, a child
 * of the submitter's (see "Cancellation" above).  A task submitted under a
 * cancelled scope is accepted and ends cancelled without running.
 * Errors (then fn never runs, `arg` stays the caller's, *out is untouched):
 *   CTX_EINVAL     pool or fn NULL;
 *   CTX_ENOMEM     no memory for the record, the context copy, the task's
 *                  scope or a new queue segment (4 KB, one per 127 tasks);
 *   CTX_EFULL      the bounded queue is full and the pool fails when full;
 *   CTX_ESHUTDOWN  ctx_pool_shutdown has begun (also for a submit that was
 *                  waiting for room when it began);
 *   CTX_EFORKED    the pool was made before the fork() this process is a
 *                  child of (see fork() above). */
CTX_EXPORT int ctx_pool_submit(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                               ctx_pool_future_t **out);

/* ctx_pool_submit with per-task options (NULL: as ctx_pool_submit).
 * Additional errors: CTX_EINVAL (options->size below the 1.0 layout, or a
 * larger struct whose unknown members are not all zero; a policy value out
 * of range; CONTEXT with a NULL context; ALLOWLIST with a NULL list or a
 * NULL variable).  On error neither fn nor arg_release is called. */
CTX_EXPORT int ctx_pool_submit_ex(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                                  const ctx_pool_submit_options_t *options,
                                  ctx_pool_future_t **out);

/* Stops the pool from accepting tasks (every later submit, and every submit
 * waiting for room, fails with CTX_ESHUTDOWN), then either lets the workers
 * run every queued task (DRAIN) or cancels every queued task (CANCEL: each
 * ends CANCELLED, its arg_release and done-callbacks run on the calling
 * thread).  Running tasks are never interrupted (their cancellation flag is
 * not set either: cancel their futures for that).  No accepted task is
 * lost: each ends completed, failed or cancelled.
 * Waits until every worker has finished, except when called from one of
 * this pool's own tasks: then it only begins the shutdown and returns.
 * Calling it again (any mode, any thread) is harmless: the first call's mode
 * wins, and the later call waits as the first one does.
 * Returns 0, or CTX_EINVAL (pool NULL or mode out of range), CTX_EFORKED
 * (see fork() above). */
CTX_EXPORT int ctx_pool_shutdown(ctx_pool_t *pool, ctx_pool_shutdown_mode_t mode);

/* Shuts the pool down (DRAIN, if no shutdown has begun), joins the workers
 * and drops the caller's reference.  Futures of the pool stay valid (each
 * keeps the pool's memory, not its threads, until released).  Call it once,
 * from a thread that is not one of the pool's workers, when no other thread
 * will call ctx_pool_submit on it any more.  In a fork() child, for a pool
 * made before the fork: returns 0 at once (see fork() above).
 * Returns 0, or CTX_EINVAL (NULL), CTX_EBUSY (called from one of this pool's
 * own tasks: nothing done). */
CTX_EXPORT int ctx_pool_release(ctx_pool_t *pool);

/* Fills *out with a snapshot of the pool's counters, up to out->size bytes
 * (set it with CTX_STRUCT_INIT; it is kept).  Any thread.
 * Errors (*out untouched): CTX_EINVAL (pool or out NULL, out->size smaller
 * than a size_t), CTX_EFORKED (see fork() above). */
CTX_EXPORT int ctx_pool_stats(ctx_pool_t *pool, ctx_pool_stats_t *out);

/* ---------------------------------------------------------------------- */
/* Futures                                                                 */
/* ---------------------------------------------------------------------- */

/* Where a future is in its life (ctx_pool_future_state). */
typedef enum ctx_pool_future_state {
    CTX_POOL_FUTURE_PENDING = 0,   /* queued, not started (or being cancelled) */
    CTX_POOL_FUTURE_RUNNING = 1,   /* a worker is running the task */
    CTX_POOL_FUTURE_COMPLETED = 2, /* the task returned 0; it has a result */
    CTX_POOL_FUTURE_FAILED = 3,    /* the task returned an error (or could not
                                 enter its context) */
    CTX_POOL_FUTURE_CANCELLED = 4  /* cancelled before it ran (its future, a shutdown,
                                 or its scope), or the task returned
                                 CTX_ECANCELLED / CTX_EDEADLINE */
} ctx_pool_future_state_t;

/* What ctx_pool_future_cancel did (non-negative statuses). */
#define CTX_POOL_CANCEL_DONE 0     /* the future is cancelled: the task never runs */
#define CTX_POOL_CANCEL_RUNNING 1  /* a worker took the task: its scope is
                                 cancelled; the future ends when the task
                                 returns (or at once, CANCELLED, if the
                                 worker had not started it yet: then it
                                 never starts) */
#define CTX_POOL_CANCEL_TOO_LATE 2 /* the future had already ended: nothing done */

/* Timeout meaning "wait as long as it takes". */
#define CTX_WAIT_FOREVER (-1)

/* Called when a future ends; `future` is borrowed for the call. */
typedef void (*ctx_pool_future_done_fn)(ctx_pool_future_t *future, void *user);

/* One more reference (for another owner); returns `future`.  Any thread. */
CTX_EXPORT ctx_pool_future_t *ctx_pool_future_retain(ctx_pool_future_t *future);

/* Drops a reference (NULL ignored).  Releasing a future does not cancel its
 * task; the task runs and its outcome is dropped.  On the last reference
 * the result is released (see result_release).  Any thread. */
CTX_EXPORT void ctx_pool_future_release(ctx_pool_future_t *future);

/* The state now (CTX_POOL_FUTURE_PENDING for NULL).  Any thread. */
CTX_EXPORT ctx_pool_future_state_t ctx_pool_future_state(const ctx_pool_future_t *future);

/* 1 if the future has ended (completed, failed or cancelled), else 0 (also
 * for NULL).  Any thread. */
CTX_EXPORT int ctx_pool_future_done(const ctx_pool_future_t *future);

/* Waits until the future ends, at most `timeout_ns` nanoseconds
 * (CTX_WAIT_FOREVER, or any negative value: no limit; 0: just look), or
 * until the calling thread's current cancellation scope is cancelled or
 * its deadline passes, whichever comes first (the wait then ends at once;
 * the task itself is left alone: cancel its future to stop it).  Any
 * thread, but a task must not wait for a task that can only run after it
 * on the same pool.
 * Returns 0 (ended; its arg_release has run), CTX_ETIMEDOUT,
 * CTX_ECANCELLED / CTX_EDEADLINE (the waiter's scope was cancelled, or its
 * deadline passed, before the future ended), CTX_EINVAL (NULL, or a task
 * waiting for its own future), CTX_EFORKED (not ended, and its pool was
 * made before the fork() this process is a child of). */
CTX_EXPORT int ctx_pool_future_wait(ctx_pool_future_t *future, int64_t timeout_ns);

/* The outcome, without waiting:
 *   0              completed; *result (if result not NULL) = the task's
 *                  result, borrowed from the future;
 *   the task's code the task failed (or CTX_ENOMEM / CTX_ENOTCURRENT: see
 *                  the worker notes in src/pool/executor.c);
 *   CTX_ECANCELLED cancelled (by its future, a shutdown, its scope, or the
 *                  task gave up);
 *   CTX_EDEADLINE  cancelled because its scope's deadline passed (before it
 *                  started, or the task returned CTX_EDEADLINE);
 *   CTX_ENOTDONE   not ended yet;
 *   CTX_EINVAL     future NULL.
 * Any thread. */
CTX_EXPORT int ctx_pool_future_result(const ctx_pool_future_t *future, void **result);

/* Asks the task not to run, or to stop, by cancelling the task's own
 * scope (made at submit: see "Cancellation" above), so that the task and
 * everything it started in copies of its context see ctx_cancel_check()
 * fail with CTX_ECANCELLED (the scope's cancellation callbacks run on this
 * thread, before this returns):
 *   CTX_POOL_CANCEL_DONE      it was pending: it is removed from the queue and
 *                        will never run; the future is cancelled, its
 *                        arg_release and done-callbacks have run on this
 *                        thread when the call returns (or are running on
 *                        another thread that cancelled it at the same time);
 *   CTX_POOL_CANCEL_RUNNING   a worker took it: its scope is cancelled; it ends
 *                        as the task decides, or, if the worker had not
 *                        called fn yet, never starts (CANCELLED, with
 *                        arg_release, as for CTX_POOL_CANCEL_DONE);
 *   CTX_POOL_CANCEL_TOO_LATE  it had already ended (nothing done).
 * Errors (nothing done): CTX_EINVAL (NULL), CTX_EFORKED (not ended, and its
 * pool was made before the fork() this process is a child of), CTX_ENOMEM /
 * CTX_ESYSTEM (the calling thread had no ctxvar state and none could be
 * made).  Any thread. */
CTX_EXPORT int ctx_pool_future_cancel(ctx_pool_future_t *future);

/* 1 if ctx_pool_future_cancel was called on the future, else 0.  Any thread. */
CTX_EXPORT int ctx_pool_future_cancel_requested(const ctx_pool_future_t *future);

/* ctx_cancel_check() != 0, kept for programs written before cancellation
 * scopes: 1 if the current context's scope is cancelled — for a task, its
 * future was cancelled, or the scope it inherited from its submitter was
 * (or its deadline passed) — else 0.  Cheap enough to poll in a loop (a
 * per-thread cache probe and a load).  Any thread. */
CTX_EXPORT int ctx_pool_task_cancelled(void);

/* Registers fn(future, user) to run once when the future ends, in a private
 * copy of the context current now (in the caller).  Callbacks run in the
 * order they were added, on the thread that ends the future (a worker, or a
 * thread that cancels it); if the future has already ended and its
 * callbacks have run, fn runs at once on the calling thread, before this
 * returns (racing with the end itself, it runs on the ending thread, after
 * the callbacks added before it).  A callback's sets stay in
 * its copy.  A callback must not release the future's last reference nor
 * wait for another future of a full pool.  Any thread.
 * Errors (fn is then never called; user stays the caller's): CTX_EINVAL
 * (future or fn NULL), CTX_ENOMEM, CTX_EFORKED (not ended, and its pool
 * was made before the fork() this process is a child of). */
CTX_EXPORT int ctx_pool_future_add_done_callback(ctx_pool_future_t *future,
                                            ctx_pool_future_done_fn fn, void *user);

/* The call stack captured when the task was submitted (see capture_stack):
 * 0 with *frames (borrowed, valid while the future lives) and *count return
 * addresses, innermost first, starting at the caller of the submit;
 * CTX_ENOTFOUND if none was captured; CTX_EINVAL (an argument NULL).  Any
 * thread. */
CTX_EXPORT int ctx_pool_future_stack(const ctx_pool_future_t *future,
                                void *const **frames, size_t *count);

/* Writes the captured stack as text, one frame per line ("#0 symbol+off
 * [addr]" where the platform can name it), into `buf` (NUL terminated, at
 * most `cap` bytes); *len (if not NULL) receives the full length.
 * Returns 0, CTX_ETRUNCATED (cap 0, or the text did not fit: *len says how
 * much is needed), CTX_ENOTFOUND (no stack), CTX_EINVAL (future NULL, or
 * buf NULL with cap > 0).
 * Symbol names need the program linked with -rdynamic.  Any thread. */
CTX_EXPORT int ctx_pool_future_format_stack(const ctx_pool_future_t *future, char *buf,
                                       size_t cap, size_t *len);

/* How long the task waited in the queue (submit to start), in nanoseconds:
 * 0 and *ns, or CTX_ENOTFOUND if it never started (pending or cancelled
 * before running), CTX_EINVAL (an argument NULL).  Any thread. */
CTX_EXPORT int ctx_pool_future_queue_wait(const ctx_pool_future_t *future, uint64_t *ns);

/* ---------------------------------------------------------------------- */
/* Groups (Go's errgroup)                                                  */
/* ---------------------------------------------------------------------- */

/* A group of tasks on one pool, with a cancellation scope of its own:
 *
 *     ctx_pool_group_t *g;
 *     ctx_pool_group_new(pool, NULL, &g);     // scope: a child of the current
 *     ctx_pool_group_submit(g, fetch_a, a, NULL, NULL);
 *     ctx_pool_group_submit(g, fetch_b, b, NULL, NULL);
 *     int rc = ctx_pool_group_wait(g, CTX_WAIT_FOREVER);  // 0 or the first
 *     ctx_pool_group_release(g);                           // failure
 *
 * Every task runs in a copy of its submitter's context (as the submit
 * options say) whose scope is the group's (a child of it for a task with a
 * future), so ctx_cancel_check() in a task fails once the group stops.  The
 * first task to fail — return a negative code, or end cancelled for any
 * reason but a ctx_pool_future_cancel of its own future — cancels the
 * group's scope with a cause whose code is that error: the siblings still
 * queued never start, the running ones see the check fail; that error is
 * the group's result.  Cancelling the group (ctx_pool_group_cancel), its
 * parent scope or its deadline stops it the same way: the first task it
 * stops makes the result CTX_ECANCELLED or CTX_EDEADLINE.  Reference
 * counted: the creator's reference, and one per task until it ended. */
typedef struct ctx_pool_group ctx_pool_group_t;

/* Makes a group of `pool` whose scope is a new child of the calling
 * thread's current scope (a root if it has none), made with `options`
 * (NULL: no deadline of its own; see ctx_cancel_options_t).  *out holds the
 * caller's reference.  Any thread.
 * Errors (nothing made): CTX_EINVAL (pool or out NULL, options breaking
 * the growth rule), CTX_ENOMEM, CTX_ESYSTEM (a lock could not be made, or
 * the timer thread could not be started for the deadline), CTX_EFORKED. */
CTX_EXPORT int ctx_pool_group_new(ctx_pool_t *pool, const ctx_cancel_options_t *options,
                                  ctx_pool_group_t **out);

/* ctx_pool_submit_ex for a task of the group: fn(arg) runs on the group's
 * pool, in a context chosen by `options` (NULL: as the pool is
 * configured) whose cancellation scope is the group's (a child of it, the
 * task's own, if `out` is not NULL: see ctx_pool_submit).  Any thread,
 * including the group's own tasks (that is how a task adds a sibling).
 * Errors (fn never runs, arg stays the caller's, *out untouched): those of
 * ctx_pool_submit_ex, and CTX_ECANCELLED / CTX_EDEADLINE (the group has
 * stopped: its scope is cancelled or its deadline passed). */
CTX_EXPORT int ctx_pool_group_submit(ctx_pool_group_t *group, ctx_pool_task_fn fn, void *arg,
                                     const ctx_pool_submit_options_t *options,
                                     ctx_pool_future_t **out);

/* Waits until every task submitted to the group so far has ended (their
 * arg_release and done-callbacks have run), at most `timeout_ns`
 * nanoseconds (negative: no limit; 0: just look), or until the calling
 * thread's own scope is cancelled or its deadline passes (the wait then
 * ends at once and the tasks go on, unless the group's scope is a
 * descendant of that scope, as it is when the group was made in this
 * context).  Returns the group's result once every task ended: 0 (none
 * failed), the first failure's code, or CTX_ECANCELLED / CTX_EDEADLINE
 * (the group was stopped by ctx_pool_group_cancel, its parent or its
 * deadline); or, before that: CTX_ETIMEDOUT, CTX_ECANCELLED /
 * CTX_EDEADLINE (the waiter's scope), CTX_EINVAL (NULL, or called by a
 * task of the group), CTX_EFORKED.  Any thread; may be called again. */
CTX_EXPORT int ctx_pool_group_wait(ctx_pool_group_t *group, int64_t timeout_ns);

/* Cancels the group's scope (its tasks see ctx_cancel_check() fail; those
 * not started never start).  Returns 0, CTX_CANCEL_ALREADY (it was
 * stopped already), CTX_EINVAL, CTX_ENOMEM / CTX_ESYSTEM (see
 * ctx_cancel_scope_cancel).  Any thread. */
CTX_EXPORT int ctx_pool_group_cancel(ctx_pool_group_t *group);

/* The group's scope, borrowed (valid while the group lives): to read its
 * error or cause, register callbacks, or cancel it with a cause of one's
 * own.  0, or CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_pool_group_scope(const ctx_pool_group_t *group, ctx_cancel_scope_t **out);

/* One more reference; returns `group`.  Any thread. */
CTX_EXPORT ctx_pool_group_t *ctx_pool_group_retain(ctx_pool_group_t *group);

/* Drops a reference (NULL ignored).  When the last reference of the
 * creator's and ctx_pool_group_retain's goes while tasks of the group are
 * still pending (nobody can wait for them any more), the group's scope is
 * cancelled, so that nothing started for it runs on unnoticed.  The memory
 * goes with the last task.  Any thread. */
CTX_EXPORT void ctx_pool_group_release(ctx_pool_group_t *group);

/* ---------------------------------------------------------------------- */
/* Bound callables                                                         */
/* ---------------------------------------------------------------------- */

/* The function a bound callable calls: `arg` given at bind time, `call_arg`
 * given at each call. */
typedef void *(*ctx_pool_bound_fn)(void *arg, void *call_arg);

/* Calls share one context (sets persist from call to call; concurrent or
 * nested calls fail with CTX_EENTERED) instead of each getting a fresh copy
 * of the captured one. */
#define CTX_POOL_BOUND_SHARED 1u

/* How ctx_pool_bound_new binds (a NULL pointer: every default). */
typedef struct ctx_pool_bound_options {
    size_t size;    /* sizeof(ctx_pool_bound_options_t): CTX_STRUCT_INIT */
    unsigned flags; /* CTX_POOL_BOUND_* */
    /* Bind to a copy of this context instead of the current one (borrowed
     * for the call). */
    ctx_context_t *context;
    /* Called once with `arg` when the bound callable is destroyed. */
    void (*arg_release)(void *arg);
} ctx_pool_bound_options_t;

/* Captures the calling thread's current context (O(1) copy; or a copy of
 * options->context) and binds fn and arg to it.  *out is the caller's
 * reference (ctx_pool_bound_release).  Any thread.
 * Errors (arg stays the caller's): CTX_EINVAL (fn or out NULL;
 * options->size below the 1.0 layout, or a larger struct whose unknown
 * members are not all zero; unknown flags), CTX_ENOMEM. */
CTX_EXPORT int ctx_pool_bound_new(ctx_pool_bound_fn fn, void *arg,
                            const ctx_pool_bound_options_t *options,
                            ctx_pool_bound_t **out);

/* Calls fn(arg, call_arg) in the captured context and stores its return
 * value in *result (if not NULL).  By default each call runs in its own
 * fresh copy of the captured context (its sets are dropped afterwards), so
 * any number of threads may call at once; with CTX_POOL_BOUND_SHARED every call
 * runs in the one captured context.  Any thread.
 * Errors (fn not called): CTX_EINVAL (bound NULL), CTX_ENOMEM (no memory
 * for the copy, or for the calling thread's ctxvar state), CTX_ESYSTEM (the
 * thread's ctxvar state could not be registered), CTX_EENTERED (shared, and
 * a call is already running: a concurrent or nested call).
 * CTX_ENOTCURRENT: fn ran but left a context entered. */
CTX_EXPORT int ctx_pool_bound_call(ctx_pool_bound_t *bound, void *call_arg,
                             void **result);

/* A ctx_run_fn-shaped trampoline for callback APIs that take
 * `void *(*)(void *)` plus a user pointer: pass it with the bound callable as
 * the user pointer.  Calls ctx_pool_bound_call(bound, NULL, &r) and returns r
 * (NULL if the call failed: the error itself is lost, use ctx_pool_bound_call to
 * see it).  Any thread; the caller of the API keeps its reference to the
 * bound callable for as long as the API may call it. */
CTX_EXPORT void *ctx_pool_bound_trampoline(void *bound);

/* The same for APIs whose callback is `void (*)(void *)`.  Any thread. */
CTX_EXPORT void ctx_pool_bound_trampoline_void(void *bound);

/* One more reference; returns `bound`.  Any thread. */
CTX_EXPORT ctx_pool_bound_t *ctx_pool_bound_retain(ctx_pool_bound_t *bound);

/* Drops a reference (NULL ignored); the last one releases the captured
 * context and calls arg_release.  Must not be the reference that a running
 * call depends on.  Any thread. */
CTX_EXPORT void ctx_pool_bound_release(ctx_pool_bound_t *bound);

/* ---------------------------------------------------------------------- */
/* Threads                                                                 */
/* ---------------------------------------------------------------------- */

/* The new thread runs in a copy of the creator's current context (taken at
 * creation) instead of an empty one. */
#define CTX_POOL_THREAD_INHERIT 1u

/* Starts a thread that calls fn(arg): by default in an empty context, with
 * CTX_POOL_THREAD_INHERIT in a private copy of the calling thread's current
 * context.  When fn returns, the thread's ctxvar state is released.
 * With `out` not NULL, *out is a handle to join (ctx_pool_thread_join, exactly
 * once); with NULL the thread is detached and cleans up after itself.
 * Any thread.
 * Errors (fn never runs; arg stays the caller's): CTX_EINVAL (fn NULL,
 * unknown flags), CTX_ENOMEM, CTX_ESYSTEM (pthread_create failed, or the
 * fork handler could not be installed). */
CTX_EXPORT int ctx_pool_thread_create(ctx_run_fn fn, void *arg, unsigned flags,
                                 ctx_pool_thread_t **out);

/* Waits for the thread to finish, stores fn's return value in *result (if
 * not NULL) and frees the handle.  Any thread but the one joined.
 * Returns 0; CTX_ENOMEM or CTX_ESYSTEM if, with CTX_POOL_THREAD_INHERIT, the
 * new thread could not enter its context (it could not make its ctxvar
 * state; fn did not run); CTX_ENOTCURRENT if fn left a context
 * entered; CTX_EINVAL (NULL); CTX_EFORKED (the thread was started before the
 * fork() this process is a child of: not joined, the handle is freed);
 * CTX_ESYSTEM (pthread_join failed; the handle is
 * still freed). */
CTX_EXPORT int ctx_pool_thread_join(ctx_pool_thread_t *thread, void **result);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_POOL_H */
