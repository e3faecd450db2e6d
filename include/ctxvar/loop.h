/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/loop.h — propagation through an event loop (the loop module).
 *
 * asyncio's context model, on libuv.  asyncio copies the current context when
 * a callback is scheduled (call_soon, call_later, call_at) and runs the
 * callback inside that copy; every Task owns a context, captured when it is
 * created and entered around each of its steps, so two tasks interleaving on
 * one thread never see each other's values.  This module gives a libuv
 * program the same, and drops into an existing program: a ctx_loop_t wraps
 * the program's own uv_loop_t (or one it creates).
 *
 *   ctx_loop_t         the scheduler over one uv_loop_t: a ready queue run
 *                      once per loop iteration, a timer heap, a thread-safe
 *                      inbox.  Built and linked as its own library,
 *                      ctxvar_loop, over ctxvar and libuv.
 *   ctx_loop_handle_t  one scheduled callback (call_soon/later/at), to cancel.
 *   ctx_loop_future_t  a result that will exist later (asyncio.Future): done-
 *                      callbacks run on the loop, completion from any thread.
 *   ctx_loop_task_t         a task (asyncio.Task): a step function driven on the
 *                      loop inside the task's own context; between steps it
 *                      waits on a future, a timer, another task or work
 *                      offloaded to a ctx_pool_t.
 *   ctx_uv_*           helpers that run a libuv handle's or request's own
 *                      callback in the context captured when it was armed.
 *
 * (Not to be confused with the pool's names: a pool "task" is a function
 * submitted to ctx_pool_submit (ctx_pool_task_fn, ctx_pool_task_cancelled); the
 * ctx_loop_task_t of this header is an asyncio-style task on a loop.)
 *
 * Contexts
 * --------
 *   call_soon / call_later / call_at / call_soon_threadsafe and future
 *     done-callbacks capture ctx_context_copy_current() when they are
 *     scheduled (O(1)) and run the callback inside that copy, which is
 *     private to the callback and dropped after it: exactly asyncio's
 *     Handle.  So a callback sees the values of the code that scheduled it
 *     as they were at that moment, even if that code changes them later, and
 *     its own sets go nowhere.  With an explicit `context` option the
 *     callback runs in that context itself (retained, not copied), so its
 *     sets land there (asyncio's `context=` argument).
 *   Tasks hold one context for their whole life: a copy of the creator's
 *     current context, or an explicit one (used as is).  Each step runs
 *     inside it (enter before, exit after), so a step sees what earlier
 *     steps of the same task set; nothing leaks into the loop's own context
 *     or other tasks.
 *   Work offloaded from a task (ctx_loop_task_offload) runs on the pool in a
 *     private copy of the task's context (asyncio's to_thread).
 *
 * Threads
 * -------
 * A loop is driven by one thread at a time, "the loop thread": the thread
 * that runs it (ctx_loop_run, or uv_run on its uv_loop_t).  Before the loop
 * first runs, the thread that created it plays that role.  Every function is
 * loop-thread-only unless its comment says "any thread".  The any-thread
 * functions (ctx_loop_call_soon_threadsafe, future completion, ...) work
 * from every thread, the loop thread included; called from another thread
 * they hand their work to the loop through a lock-free inbox and wake it
 * with a uv_async_t.  A loop may move to another thread only while no
 * thread runs it.
 *
 * Locks: the loop holds none while user code runs.  Callbacks, task steps,
 * done-callbacks, arg_release, result_release and the error handler are
 * called with no lock of the module held, so they may call any function
 * of the module, on the same loop, future or task, and another thread's
 * any-thread calls never wait for them.  (A future's state change and
 * callback list share a spinlock held for a few pointer moves; the inbox
 * takes no lock at all.)
 *
 * Ownership (libuv's rule)
 * ------------------------
 * A call that fails never runs the callback it was given and never calls its
 * `arg_release`: everything it was handed stays with the caller.  A
 * successful call takes `arg`; if an `arg_release` is given it is called
 * exactly once when the module is done with `arg` — after the callback ran,
 * or instead of it when the callback is cancelled or the loop closes first.
 * Objects (loops, handles, futures, tasks) are reference counted: each `out`
 * parameter hands the caller one reference, released with the type's
 * `_release`; passing NULL as `out` (where allowed) means the caller wants
 * none.
 *
 * Cancellation scopes (ctxvar/cancel.h)
 * -------------------------------------
 * The scope a context carries governs what the loop runs in it:
 *   - a ctx_loop_call_soon / _later / _at / _soon_threadsafe callback whose
 *     context's scope is cancelled when the callback is due — or whose
 *     deadline has passed by then, even if the timer thread has not
 *     cancelled it yet: the loop reads the clock — does not run: it ends
 *     as if cancelled (ctx_loop_handle_cancelled reports 1) and only its
 *     arg_release runs.  Future done-callbacks always run (they report an
 *     outcome rather than start work).
 *   - a task follows the scope of its own context (the creator's, or the
 *     explicit context's; a step that enters another scope in it, e.g. a
 *     child, is followed into it).  Once that scope is cancelled, every
 *     later step sees its error (CTX_ECANCELLED or CTX_EDEADLINE) from
 *     ctx_loop_task_awaited in place of the wait's outcome — asyncio's
 *     CancelledError at the await, level-triggered as in trio: a wait armed
 *     while the scope is cancelled ends at once.  A sleep or an awaited
 *     future is abandoned when the scope is cancelled (from any thread, or
 *     by its deadline): the task wakes on the loop at once; the awaited
 *     future itself is not cancelled (it may be shared; work started for
 *     the task in copies of its context stops by the same scope).  A task
 *     that has not run its first step ends CANCELLED with the scope's
 *     error without running it.  A step that must wait for cleanup work
 *     after its scope was cancelled enters another scope first
 *     (ctx_cancel_enter(NULL, ...) detaches; ctx_cancel_exit in a later
 *     step restores).  A task costs nothing more without a scope; with one
 *     it registers one wake-up callback on it for its life.
 *
 * Closing
 * -------
 * ctx_loop_close cancels everything still scheduled (callbacks are dropped
 * without running, their contexts released, their arg_release called),
 * ends every pending task cancelled, and closes the libuv handles the module
 * owns.  From then on every call that would schedule something on the loop
 * fails with CTX_ECLOSED and the callback is never called.
 *
 * fork()
 * ------
 * The child of a fork() has a copy of every loop but none of the threads
 * that ran them or handed them work, and a uv loop whose kernel state (the
 * epoll instance, the async descriptor) it shares with the parent: polling
 * it there would take the parent's events.  So a loop made before the fork
 * is unusable in the child: every call that would schedule, run, stop,
 * close, complete or cancel something on it, its futures, tasks or handles
 * returns CTX_EFORKED and does nothing; calls that only read
 * (ctx_loop_future_state / _done / _result, ctx_loop_task_done / _result,
 * ctx_loop_handle_cancelled / _when, ctx_loop_is_closed, ctx_loop_time)
 * answer from the state the fork copied.  Releasing them in the child never
 * blocks and takes no lock; what the loop held at the fork (scheduled
 * callbacks, tasks, its uv loop and libuv handles) stays allocated until
 * the child exits or execs, since freeing it would mean running the uv
 * loop.  A child that forked from inside a callback of the loop comes back
 * out of the loop's dispatch: no more of the loop's callbacks run there,
 * and the module's handles stop keeping the uv loop busy.  Loops made in
 * the child work as usual.  The ctx_loop_uv_* helpers wrap libuv handles
 * of the caller's and follow libuv's own rules (uv_loop_fork).
 *
 * Times are libuv's loop time: milliseconds, ctx_loop_time(), cached at the
 * start of each loop iteration (uv_now); as with uv_timer_start, a delay
 * counts from that cached time (uv_update_time refreshes it).
 *
 * uv.h needs POSIX declarations: compile users of this header with
 * _POSIX_C_SOURCE >= 200112L (or _GNU_SOURCE, or a gnu C dialect).
 *
 * Errors are the negative CTX_E* codes of ctxvar.h; see each function.
 * Failures of libuv itself ("libuv's (mapped)" below) map as follows:
 * UV_EINVAL → CTX_EINVAL, UV_ENOMEM → CTX_ENOMEM, UV_EBUSY → CTX_EBUSY,
 * UV_ECANCELED → CTX_ECANCELLED, UV_ETIMEDOUT → CTX_ETIMEDOUT, any other
 * libuv error → CTX_ESYSTEM.
 */
#ifndef CTXVAR_LOOP_H
#define CTXVAR_LOOP_H

#if defined(__STRICT_ANSI__) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE) &&  \
    !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#error "ctxvar/loop.h includes uv.h, which needs POSIX: #define _POSIX_C_SOURCE 200809L first"
#endif

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../ctxvar.h"
#include "cancel.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A loop, a scheduled callback, a future, a task (see the top of this file). */
typedef struct ctx_loop ctx_loop_t;
typedef struct ctx_loop_handle ctx_loop_handle_t;
typedef struct ctx_loop_future ctx_loop_future_t;
typedef struct ctx_loop_task ctx_loop_task_t;

/* ---------------------------------------------------------------------- */
/* Loops                                                                   */
/* ---------------------------------------------------------------------- */

/* Called on the loop thread when the loop cannot do what it was asked and
 * has no caller to tell:
 *   CTX_EENTERED     a callback's explicit context, or a task's, was
 *                    entered elsewhere when it became due (the callback is
 *                    skipped, its arg_release still called; the task fails);
 *   CTX_ENOMEM, CTX_ESYSTEM
 *                    the loop thread's ctxvar state could not be made on
 *                    first use (likewise);
 *   CTX_ENOTCURRENT  a callback or task step returned with a context of its
 *                    own still entered (a bug in it: the thread's current
 *                    context stays that one; the task fails);
 *   CTX_EINVAL       a task step returned CTX_LOOP_TASK_WAIT without arming a
 *                    wait, or an unknown status (the task fails).
 * `what` is a short static description.  The default handler writes one
 * line on stderr.  The handler runs with no lock held and may call any
 * function of the module. */
typedef void (*ctx_loop_error_fn)(ctx_loop_t *loop, int code, const char *what,
                                  void *user);

/* Creates a loop over `uv` (the caller's loop, initialised and not closed;
 * the caller keeps owning it and may go on using it for its own handles),
 * or, with `uv` NULL, over a uv_loop_t of its own.  The module adds four
 * handles to the uv loop (a check, an idle, a timer and an async handle);
 * they keep uv_run going only while the module has something to do (a
 * callback ready or due, a pending task, work offloaded to a pool in
 * flight).  Ready callbacks run in the check phase of each iteration, right
 * after poll, so what an I/O callback schedules runs in the same iteration.
 * The loop reuses the records of callbacks, tasks and offloads that ended
 * on its thread, keeping at most 1024 spares of each kind (freed by
 * ctx_loop_close).  *out holds the caller's reference.  Call on the thread
 * that will run the loop.
 * Errors: CTX_EINVAL (out NULL), CTX_ENOMEM, CTX_ESYSTEM (libuv could not
 * make its loop or handles).  Nothing is left behind on error. */
CTX_EXPORT int ctx_loop_new(uv_loop_t *uv, ctx_loop_t **out);

/* The uv_loop_t under the loop (for the caller's own handles).  Any thread;
 * valid until the loop is closed (if the loop owns it) or as long as the
 * caller keeps it (if it is the caller's). */
CTX_EXPORT uv_loop_t *ctx_loop_uv(const ctx_loop_t *loop);

/* uv_run on the loop (UV_RUN_DEFAULT, UV_RUN_ONCE or UV_RUN_NOWAIT), making
 * the calling thread the loop thread.  Returns uv_run's result (non-zero if
 * the uv loop still has active handles or requests), or CTX_EINVAL (NULL,
 * mode out of range), CTX_ECLOSED, CTX_EBUSY (the loop is already running,
 * or called from one of its callbacks: runs do not nest), CTX_EFORKED (a
 * loop made before fork(): see "fork()").  Equivalent to uv_run(ctx_loop_uv(loop), mode) except
 * that ctx_loop_stop and nesting are tracked. */
CTX_EXPORT int ctx_loop_run(ctx_loop_t *loop, uv_run_mode mode);

/* Runs the loop until `future` (or a task's future) is done: asyncio's
 * run_until_complete.  While it runs, the loop keeps waiting even when
 * nothing it knows of is pending (the future may be completed by another
 * thread, which then wakes it).  It returns after the loop iteration in which the future became
 * done; callbacks that the completion scheduled and that did not run in
 * that iteration run on the next run.  Returns 0 when the future is done
 * (its outcome is read with ctx_loop_future_result), CTX_ENOTDONE
 * (ctx_loop_stop was called first),
 * CTX_EINVAL (NULL, or a future of another loop), CTX_ECLOSED, CTX_EBUSY
 * (the loop is already running, or called from one of its callbacks),
 * CTX_EFORKED. */
CTX_EXPORT int ctx_loop_run_until_done(ctx_loop_t *loop,
                                            ctx_loop_future_t *future);

/* Makes the current ctx_loop_run / ctx_loop_run_until_done return after the
 * current loop iteration (uv_stop).  Callbacks already taken for this
 * iteration still run.  Returns 0, CTX_EINVAL or CTX_EFORKED.  Loop thread. */
CTX_EXPORT int ctx_loop_stop(ctx_loop_t *loop);

/* The loop time in milliseconds (uv_now): the clock of call_at.  Loop
 * thread.  0 for NULL or a closed loop that owned its uv loop. */
CTX_EXPORT uint64_t ctx_loop_time(const ctx_loop_t *loop);

/* Closes the loop (see "Closing" above): cancels every scheduled callback
 * (dropped unrun, contexts released, arg_release called, on this thread),
 * ends every pending task CANCELLED without running another step (its
 * arg_release runs; a future it awaited is cancelled, as asyncio.run does),
 * drops the threadsafe inbox, and closes the module's uv handles.  Later
 * scheduling calls fail with CTX_ECLOSED.
 * If the loop owns its uv_loop_t, the module's handles are closed and
 * uv_loop_close'd before it returns.  If the uv loop is the caller's, the
 * handles' close callbacks run during the caller's next uv_run, as for any
 * libuv handle: run the loop once more (uv_run(..., UV_RUN_NOWAIT)) before
 * uv_loop_close.
 * The ctx_loop_t itself stays valid (every call on it fails with
 * CTX_ECLOSED or reports "done") until its last reference is released.
 * Calling it again is harmless.  Loop thread; not from a callback running
 * on the loop.
 * Returns 0, CTX_EINVAL (NULL), CTX_EFORKED (a loop made before fork():
 * nothing was done), CTX_EBUSY (called while the loop runs: a callback,
 * task step or ctx_loop_run is in progress; nothing was done; or the loop's
 * own uv_loop_t still holds handles the caller added: the module is closed
 * but uv_loop_close failed; close them and call again). */
CTX_EXPORT int ctx_loop_close(ctx_loop_t *loop);

/* 1 once ctx_loop_close has begun, else 0 (1 for NULL).  Any thread. */
CTX_EXPORT int ctx_loop_is_closed(const ctx_loop_t *loop);

/* One more reference (for a thread that will call the any-thread functions
 * while another may release the loop); returns `loop`.  Any thread. */
CTX_EXPORT ctx_loop_t *ctx_loop_retain(ctx_loop_t *loop);

/* Drops a reference (NULL ignored); the memory is freed with the last one.
 * Futures, tasks and handles hold references of their own, so the memory
 * may outlive the caller's.  Close the loop first: the last reference of a
 * loop that was never closed cannot close it safely (it may be running on
 * another thread) and leaks it (in a child of fork(), that is the rule: see
 * "fork()").  Never blocks.  Any thread. */
CTX_EXPORT void ctx_loop_release(ctx_loop_t *loop);

/* The loop whose callback or task step is running on the calling thread
 * (asyncio.get_running_loop), or NULL.  Borrowed. */
CTX_EXPORT ctx_loop_t *ctx_loop_current(void);

/* Replaces the loop's error handler (see ctx_loop_error_fn); NULL restores
 * the default.  Returns 0, CTX_EINVAL or CTX_EFORKED.  Loop thread. */
CTX_EXPORT int ctx_loop_set_error_handler(ctx_loop_t *loop,
                                               ctx_loop_error_fn fn, void *user);

/* ---------------------------------------------------------------------- */
/* Scheduling callbacks                                                    */
/* ---------------------------------------------------------------------- */

/* A scheduled callback; runs on the loop thread. */
typedef void (*ctx_loop_callback_fn)(void *arg);

/* Options of the scheduling calls and of done-callbacks.  NULL, or
 * CTX_STRUCT_INIT(ctx_loop_call_options_t) with nothing else set: capture
 * the current context, no arg_release.  A struct with a wrong `size` (see
 * CTX_STRUCT_INIT in ctxvar.h) makes the call fail with CTX_EINVAL. */
typedef struct ctx_loop_call_options {
    size_t size; /* sizeof(ctx_loop_call_options_t): CTX_STRUCT_INIT */
    /* Run the callback in this context itself instead of a private copy of
     * the caller's current one: its sets land in it.  Retained until the
     * callback ran or was dropped.  If it is entered somewhere when the
     * callback becomes due, the callback is skipped (and its arg_release
     * called) and the error handler told (CTX_EENTERED). */
    ctx_context_t *context;
    /* Called once with `arg` when the loop is done with it: after the
     * callback returned, or instead of the callback (cancelled, loop
     * closed).  Not called if the scheduling call fails.  On the loop
     * thread, except when a loop that closed drops it (then on the thread
     * that dropped it, e.g. one completing a future). */
    void (*arg_release)(void *arg);
} ctx_loop_call_options_t;

/* Schedules fn(arg) to run on the next iteration of the loop, after the
 * callbacks already scheduled (FIFO; callbacks scheduled while the ready
 * callbacks run wait for the next iteration, as in asyncio), inside a copy
 * of the calling thread's current context taken now (or options->context).
 * If `handle` is not NULL, *handle receives a reference to cancel it with.
 * Costs one record (which captures the context: a ctx_capture_t, O(1)),
 * allocated, or reused from the loop's spares once callbacks have run.
 * If the scope of that context is cancelled (or past its deadline) when
 * the callback is due, fn does not run: the handle ends cancelled and
 * arg_release runs (see "Cancellation scopes" above).  Loop thread.
 * Errors (fn never runs; arg stays the caller's; *handle untouched):
 * CTX_EINVAL (loop or fn NULL, options with a wrong size), CTX_ENOMEM,
 * CTX_ECLOSED, CTX_EFORKED. */
CTX_EXPORT int ctx_loop_call_soon(ctx_loop_t *loop, ctx_loop_callback_fn fn,
                                       void *arg,
                                       const ctx_loop_call_options_t *options,
                                       ctx_loop_handle_t **handle);

/* As ctx_loop_call_soon, but fn runs `delay_ms` milliseconds of loop time
 * from now (at ctx_loop_time() + delay_ms).  Callbacks due at the same time
 * run in the order they were scheduled.  Loop thread.
 * Errors as ctx_loop_call_soon (CTX_ENOMEM also when the timer heap cannot
 * grow). */
CTX_EXPORT int ctx_loop_call_later(ctx_loop_t *loop, uint64_t delay_ms,
                                        ctx_loop_callback_fn fn, void *arg,
                                        const ctx_loop_call_options_t *options,
                                        ctx_loop_handle_t **handle);

/* As ctx_loop_call_later, at the absolute loop time `when_ms` (a time in
 * the past means "as soon as possible, with the due timers").  Loop thread.
 * Errors as ctx_loop_call_later. */
CTX_EXPORT int ctx_loop_call_at(ctx_loop_t *loop, uint64_t when_ms,
                                     ctx_loop_callback_fn fn, void *arg,
                                     const ctx_loop_call_options_t *options,
                                     ctx_loop_handle_t **handle);

/* ctx_loop_call_soon from any thread: captures the *calling* thread's
 * current context, queues the callback in the loop's inbox and wakes the
 * loop.  Callbacks from one thread run in the order they were scheduled.
 * The handle may be cancelled only on the loop thread.  Any thread.
 * Errors (fn never runs; arg stays the caller's): CTX_EINVAL, CTX_ENOMEM,
 * CTX_ECLOSED (also when the loop closes concurrently: then fn never runs
 * either), CTX_EFORKED. */
CTX_EXPORT int ctx_loop_call_soon_threadsafe(
    ctx_loop_t *loop, ctx_loop_callback_fn fn, void *arg,
    const ctx_loop_call_options_t *options, ctx_loop_handle_t **handle);

/* Cancels a scheduled callback: it will not run, its context is released
 * and its arg_release called now, on this thread.  Returns 1 if this call
 * cancelled it, 0 if it had already run, is running, was cancelled or was
 * dropped by a closing loop; CTX_EINVAL for NULL; CTX_EFORKED (a handle of
 * a loop made before fork()).  Loop thread. */
CTX_EXPORT int ctx_loop_handle_cancel(ctx_loop_handle_t *handle);

/* 1 if the callback was cancelled (or dropped by ctx_loop_close) and will
 * never run, else 0.  Any thread. */
CTX_EXPORT int ctx_loop_handle_cancelled(const ctx_loop_handle_t *handle);

/* The loop time at which a call_later/call_at callback is due; for
 * call_soon callbacks, the loop time when they were scheduled (0 for
 * call_soon_threadsafe from another thread, which cannot read the loop's
 * clock).  0 for NULL.  Any thread. */
CTX_EXPORT uint64_t ctx_loop_handle_when(const ctx_loop_handle_t *handle);

/* One more reference; returns `handle`.  Any thread. */
CTX_EXPORT ctx_loop_handle_t *ctx_loop_handle_retain(ctx_loop_handle_t *handle);

/* Drops a reference (NULL ignored).  Releasing a handle does not cancel the
 * callback.  Any thread. */
CTX_EXPORT void ctx_loop_handle_release(ctx_loop_handle_t *handle);

/* ---------------------------------------------------------------------- */
/* Futures                                                                 */
/* ---------------------------------------------------------------------- */

/* Where a future is in its life (ctx_loop_future_state). */
typedef enum ctx_loop_future_state {
    CTX_LOOP_FUTURE_PENDING = 0, /* not done yet */
    CTX_LOOP_FUTURE_COMPLETED = 1, /* has a result */
    CTX_LOOP_FUTURE_FAILED = 2,    /* has an error code */
    CTX_LOOP_FUTURE_CANCELLED = 3  /* cancelled */
} ctx_loop_future_state_t;

/* Options of ctx_loop_future_new: NULL, or
 * CTX_STRUCT_INIT(ctx_loop_future_options_t) and the members wanted. */
typedef struct ctx_loop_future_options {
    size_t size; /* sizeof(ctx_loop_future_options_t): CTX_STRUCT_INIT */
    /* Called once with the result of a completed future when the future is
     * destroyed (its last reference released, on that thread): the future
     * owns its result.  NULL: the result is a plain value it never frees. */
    void (*result_release)(void *result);
} ctx_loop_future_options_t;

/* Called on the loop thread when a future is done; `future` is borrowed. */
typedef void (*ctx_loop_future_done_fn)(ctx_loop_future_t *future, void *user);

/* Creates a pending future of `loop` (options NULL: defaults).  *out holds
 * the caller's reference.  Any thread.
 * Errors: CTX_EINVAL (loop or out NULL, options with a wrong size),
 * CTX_ENOMEM, CTX_ECLOSED, CTX_EFORKED. */
CTX_EXPORT int ctx_loop_future_new(ctx_loop_t *loop,
                                        const ctx_loop_future_options_t *options,
                                        ctx_loop_future_t **out);

/* One more reference; returns `future`.  Any thread. */
CTX_EXPORT ctx_loop_future_t *ctx_loop_future_retain(ctx_loop_future_t *future);

/* Drops a reference (NULL ignored).  The last one releases the result
 * (result_release) and drops done-callbacks that never ran (their
 * arg_release is called).  Releasing does not cancel.  Any thread. */
CTX_EXPORT void ctx_loop_future_release(ctx_loop_future_t *future);

/* The loop the future belongs to (borrowed).  Any thread. */
CTX_EXPORT ctx_loop_t *ctx_loop_future_loop(const ctx_loop_future_t *future);

/* Completes the future with `result` and schedules its done-callbacks on
 * the loop.  Any thread (from another thread the callbacks are handed over
 * through the inbox; this is how a pool worker completes a loop future).
 * Returns 0 (the future owns `result` now, see result_release), or
 * (nothing done; `result` stays the caller's):
 *   CTX_ECANCELLED  the future was cancelled first (a normal race);
 *   CTX_EINVAL      NULL, already done, or the future of a task (tasks end
 *                   by returning from their step);
 *   CTX_EFORKED     a future of a loop made before fork(). */
CTX_EXPORT int ctx_loop_future_set_result(ctx_loop_future_t *future,
                                               void *result);

/* Fails the future with `code` (negative; CTX_ECANCELLED cancels it) and
 * schedules its done-callbacks.  Any thread.  Returns 0, CTX_ECANCELLED,
 * CTX_EINVAL (as set_result; also for a code >= 0), CTX_EFORKED. */
CTX_EXPORT int ctx_loop_future_set_error(ctx_loop_future_t *future,
                                              int code);

/* Cancels the future if it is pending and schedules its done-callbacks.
 * For a task's future this is ctx_loop_task_cancel (loop thread only).  A future
 * made by ctx_loop_wrap_future / ctx_loop_run_in_pool also cancels the pool
 * future it follows.  Returns 1 if this call cancelled it (for a task: if
 * cancellation was requested), 0 if it was already done, CTX_EINVAL for
 * NULL, CTX_EFORKED.  Any thread (loop thread for a task's future). */
CTX_EXPORT int ctx_loop_future_cancel(ctx_loop_future_t *future);

/* The state now (PENDING for NULL).  Any thread. */
CTX_EXPORT ctx_loop_future_state_t ctx_loop_future_state(const ctx_loop_future_t *future);

/* 1 if the future is done (completed, failed or cancelled), else 0 (0 for
 * NULL).  Any thread. */
CTX_EXPORT int ctx_loop_future_done(const ctx_loop_future_t *future);

/* The outcome, without waiting: 0 and *result (if not NULL; borrowed from
 * the future), the error code of a failed future, CTX_ECANCELLED (or
 * CTX_EDEADLINE for a task ended by its scope's deadline), CTX_ENOTDONE,
 * or CTX_EINVAL (NULL).  Any thread. */
CTX_EXPORT int ctx_loop_future_result(const ctx_loop_future_t *future,
                                           void **result);

/* Registers fn(future, user) to run on the loop thread once the future is
 * done, inside a private copy of the context current now (or
 * options->context itself; options->arg_release receives `user`).
 * Callbacks are scheduled like ctx_loop_call_soon, in the order they were
 * added; if the future is already done, fn is scheduled at once (it still
 * runs later, on the loop, never inside this call).  Once done, the future
 * stays alive until its callbacks ran; a future whose last reference goes
 * while it is still pending drops them (their arg_release runs) rather than
 * being kept alive by them.  Any thread.
 * Errors (fn never runs; user stays the caller's): CTX_EINVAL (NULL,
 * options with a wrong size), CTX_ENOMEM, CTX_ECLOSED, CTX_EFORKED. */
CTX_EXPORT int ctx_loop_future_add_done_callback(
    ctx_loop_future_t *future, ctx_loop_future_done_fn fn, void *user,
    const ctx_loop_call_options_t *options);

/* ---------------------------------------------------------------------- */
/* Tasks                                                                   */
/* ---------------------------------------------------------------------- */

/* Returned by a step (and by the ctx_loop_task_await family) when the task has
 * armed a wait: the next step runs when the wait is over. */
#define CTX_LOOP_TASK_WAIT 1

/* One step of a task, called on the loop thread inside the task's context.
 * A coroutine written by hand: keep the position in `arg` (a state number)
 * and switch on it.  Returns
 *   CTX_LOOP_TASK_WAIT  after arming exactly one wait with ctx_loop_task_await,
 *                  ctx_loop_task_sleep, ctx_loop_task_yield or ctx_loop_task_offload (the
 *                  usual form is `return ctx_loop_task_sleep(task, 10);`);
 *   0              the task completed; *result (NULL on entry) is its
 *                  result;
 *   CTX_ECANCELLED or CTX_EDEADLINE: the task ends cancelled with that
 *                  code (what a step returns when its scope is cancelled);
 *   another negative code: the task failed with that code.
 * A step that returns CTX_LOOP_TASK_WAIT without arming a wait fails the task
 * with CTX_EINVAL (and tells the error handler); a step that arms a wait and
 * then ends the task abandons the wait harmlessly. */
typedef int (*ctx_loop_task_step_fn)(ctx_loop_task_t *task, void *arg, void **result);

/* Options of ctx_loop_task_new: NULL, or
 * CTX_STRUCT_INIT(ctx_loop_task_options_t) and the members wanted. */
typedef struct ctx_loop_task_options {
    size_t size; /* sizeof(ctx_loop_task_options_t): CTX_STRUCT_INIT */
    /* The task's context: NULL means a copy of the creator's current
     * context taken at creation; otherwise this context itself (retained),
     * which the task's sets then change (asyncio's create_task(context=)).
     * If it is entered elsewhere when a step is due, the task fails with
     * CTX_EENTERED. */
    ctx_context_t *context;
    /* Called once with `arg` on the loop thread when the task has ended
     * (after its last step, or when it ended without running one), before
     * its future is done.  Not called if ctx_loop_task_new fails. */
    void (*arg_release)(void *arg);
    /* The future owns the task's result: called with it when the future is
     * destroyed (see ctx_loop_future_options_t). */
    void (*result_release)(void *result);
} ctx_loop_task_options_t;

/* Creates a task running step(task, arg, &result) repeatedly, and schedules
 * its first step (asyncio's create_task).  The task keeps the loop running
 * until it ends.  It follows the cancellation scope of its context (see
 * "Cancellation scopes" at the top).  If `out` is not NULL, *out receives the caller's
 * reference.  Loop thread.
 * Errors (step never runs; arg stays the caller's): CTX_EINVAL (loop or
 * step NULL, options with a wrong size), CTX_ENOMEM, CTX_ECLOSED,
 * CTX_EFORKED. */
CTX_EXPORT int ctx_loop_task_new(ctx_loop_t *loop, ctx_loop_task_step_fn step, void *arg,
                                 const ctx_loop_task_options_t *options,
                                 ctx_loop_task_t **out);

/* One more reference; returns `task`.  Any thread. */
CTX_EXPORT ctx_loop_task_t *ctx_loop_task_retain(ctx_loop_task_t *task);

/* Drops a reference (NULL ignored).  A pending task keeps running: the loop
 * holds a reference of its own until the task ends.  Any thread. */
CTX_EXPORT void ctx_loop_task_release(ctx_loop_task_t *task);

/* The task as a future (borrowed; valid while the task is): wait for it
 * with ctx_loop_task_await or ctx_loop_run_until_done, add done-callbacks, read
 * its outcome.  Any thread. */
CTX_EXPORT ctx_loop_future_t *ctx_loop_task_future(ctx_loop_task_t *task);

/* The task's context (borrowed; valid while the task is).  Any thread. */
CTX_EXPORT ctx_context_t *ctx_loop_task_context(const ctx_loop_task_t *task);

/* The task whose step is running on the calling thread (asyncio's
 * current_task), or NULL.  Borrowed. */
CTX_EXPORT ctx_loop_task_t *ctx_loop_task_current(void);

/* Arms the wait of the running step: the next step runs once `future` (a
 * future of the same loop, or another task's future) is done.  Call from the
 * task's own step, at most once per step; return what it returns.  The
 * outcome is read in the next step with ctx_loop_task_awaited.
 * Returns CTX_LOOP_TASK_WAIT, or CTX_EINVAL (NULL; not called from this task's
 * running step; a wait is already armed; a future of another loop; the
 * task's own future), or CTX_EFORKED (a step that called fork(), in the
 * child).  Never allocates.  Loop thread: from the task's own
 * running step. */
CTX_EXPORT int ctx_loop_task_await(ctx_loop_task_t *task, ctx_loop_future_t *future);

/* Arms a timer: the next step runs `delay_ms` milliseconds of loop time
 * from now (asyncio.sleep).  Rules and returns as ctx_loop_task_await, plus
 * CTX_ENOMEM (the timer heap could not grow).  Loop thread: from the task's
 * own running step. */
CTX_EXPORT int ctx_loop_task_sleep(ctx_loop_task_t *task, uint64_t delay_ms);

/* The next step runs on the next loop iteration, after the callbacks ready
 * now (asyncio.sleep(0)).  Rules and returns as ctx_loop_task_await.  Loop
 * thread: from the task's own running step. */
CTX_EXPORT int ctx_loop_task_yield(ctx_loop_task_t *task);

/* Runs fn(arg, &result) on `pool`, in a private copy of the task's context
 * (asyncio.to_thread), and arms the wait for it: the next step runs on the
 * loop thread once fn returned, and reads fn's result or error with
 * ctx_loop_task_awaited.  `options` are the pool's submit options (NULL:
 * defaults); their DEFAULT propagation means "a copy of the task's
 * context" here, any other policy is honoured as ctx_pool_submit_ex does.
 * Its arg_release and result_release work as in ctx_pool_submit_ex: with a
 * result_release the result is freed when the pool's future is; without
 * one the step that reads it owns it.  Cancelling the task cancels the
 * pool future (a queued fn never runs; a running one sees
 * ctx_pool_task_cancelled()) and wakes the task at once with CTX_ECANCELLED.
 * Rules and returns as ctx_loop_task_await, plus the errors of
 * ctx_pool_submit_ex (CTX_ENOMEM, CTX_EFULL, CTX_ESHUTDOWN, ...: fn never
 * runs, arg stays the caller's). */
CTX_EXPORT int ctx_loop_task_offload(ctx_loop_task_t *task, ctx_pool_t *pool,
                                     ctx_pool_task_fn fn, void *arg,
                                     const ctx_pool_submit_options_t *options);

/* In a step, the outcome of the wait that ended before it:
 *   0 and *result (if not NULL): the awaited future/task completed with
 *     *result (borrowed: valid until this step returns or arms another
 *     wait), or the sleep/yield ended (*result NULL), or this is the first
 *     step;
 *   CTX_ECANCELLED: the awaited future was cancelled, or the task was asked
 *     to cancel (ctx_loop_task_cancel) since its last step: the step decides
 *     whether to end (return CTX_ECANCELLED) or to go on;
 *   CTX_ECANCELLED / CTX_EDEADLINE: the scope of the task's context is
 *     cancelled (or past its deadline), whatever the wait's outcome; this
 *     wins over the rest and comes at every step while the scope stays
 *     current in the task's context;
 *   the awaited future's error code;
 *   CTX_EINVAL: NULL, or not called from the task's running step.
 * Loop thread. */
CTX_EXPORT int ctx_loop_task_awaited(const ctx_loop_task_t *task, void **result);

/* Asks the task to cancel (asyncio's Task.cancel): if it waits on a future
 * or task, that one is cancelled (cancellation propagates, as in asyncio);
 * if it sleeps, the sleep ends now; either way its next step sees
 * CTX_ECANCELLED from ctx_loop_task_awaited.  A task that has not run its first
 * step ends CANCELLED without running it.  Returns 1 if the request was
 * made, 0 if the task is already done, CTX_EINVAL for NULL, CTX_EFORKED.
 * Loop thread (from another thread: ctx_loop_call_soon_threadsafe a
 * callback that calls it). */
CTX_EXPORT int ctx_loop_task_cancel(ctx_loop_task_t *task);

/* How many times cancellation was requested (asyncio's cancelling()).
 * 0 for NULL.  Any thread (racy outside the loop thread). */
CTX_EXPORT int ctx_loop_task_cancelling(const ctx_loop_task_t *task);

/* ctx_loop_future_result of the task's future (0 and the step's result,
 * the failure code, CTX_ECANCELLED or CTX_EDEADLINE for a task that ended
 * cancelled with it, CTX_ENOTDONE, CTX_EINVAL).  Any thread. */
CTX_EXPORT int ctx_loop_task_result(const ctx_loop_task_t *task, void **result);

/* 1 if the task has ended, else 0.  Any thread. */
CTX_EXPORT int ctx_loop_task_done(const ctx_loop_task_t *task);

/* ---------------------------------------------------------------------- */
/* Task groups (asyncio's TaskGroup)                                       */
/* ---------------------------------------------------------------------- */

/* A group of child tasks that a parent task waits for together: the "await
 * all" of the loop, with structured concurrency.
 *
 *     // in the parent's step:
 *     ctx_loop_task_group_new(task, &g);            // scope: a child of
 *     ctx_loop_task_group_spawn(g, fetch_a, a, NULL, NULL); // the parent's
 *     ctx_loop_task_group_spawn(g, fetch_b, b, NULL, NULL);
 *     return ctx_loop_task_group_await(task, g);
 *     // next step: ctx_loop_task_awaited(task, NULL) is 0 or the first
 *     // failure; then ctx_loop_task_group_release(g).
 *
 * The group has a cancellation scope, a child of the parent task's scope
 * (a root if it has none); each child runs in a copy of the parent's
 * context (or of options->context) with that scope, so it stops (see
 * "Cancellation scopes") when the scope is cancelled:
 *   - by the first child that FAILS (ends with a code other than 0,
 *     CTX_ECANCELLED or CTX_EDEADLINE): its code is the group's outcome and
 *     the scope's cause (cause.code); its siblings are cancelled;
 *   - by ctx_loop_task_group_cancel, by the parent's scope (a parent
 *     scope cancelled cancels the group), or by ctx_loop_task_cancel on the
 *     parent while it awaits the group;
 *   - by ctx_loop_task_group_release while children are still pending.
 * A parent awaiting the group wakes only once every child has ended, also
 * when it is cancelled itself (then its step sees the cancellation).
 * Loop thread for every function but ctx_loop_task_group_cancel. */
typedef struct ctx_loop_task_group ctx_loop_task_group_t;

/* Makes a group whose parent is `parent` (a pending task of the loop; the
 * group keeps a reference to it).  *out receives the caller's reference.
 * Errors: CTX_EINVAL (NULL, parent ended), CTX_ENOMEM, CTX_ESYSTEM (the
 * scope's timer), CTX_ECLOSED, CTX_EFORKED (nothing made). */
CTX_EXPORT int ctx_loop_task_group_new(ctx_loop_task_t *parent, ctx_loop_task_group_t **out);

/* Creates a child task of the group, as ctx_loop_task_new does, in a copy
 * of the parent's context (or of options->context) whose scope is the
 * group's.  The other options work as in ctx_loop_task_new.  *out (if not
 * NULL) receives a reference to the child.
 * Errors (step never runs; arg stays the caller's): CTX_EINVAL (NULL,
 * options with a wrong size), CTX_ECANCELLED / CTX_EDEADLINE (the group's
 * scope is cancelled: it takes no more children), CTX_ENOMEM, CTX_ECLOSED,
 * CTX_EFORKED. */
CTX_EXPORT int ctx_loop_task_group_spawn(ctx_loop_task_group_t *group,
                                         ctx_loop_task_step_fn step, void *arg,
                                         const ctx_loop_task_options_t *options,
                                         ctx_loop_task_t **out);

/* Arms the wait of the parent's running step for the end of every child
 * (children spawned meanwhile count too): the next step reads the outcome
 * with ctx_loop_task_awaited — 0 (every child ended without failing), the
 * first failure's code, or the parent's own cancellation.  Returns
 * CTX_LOOP_TASK_WAIT; CTX_EINVAL (NULL, `parent` is not the group's
 * parent, or the rules of ctx_loop_task_await are broken), CTX_EFORKED.
 * Loop thread: from the parent's running step. */
CTX_EXPORT int ctx_loop_task_group_await(ctx_loop_task_t *parent, ctx_loop_task_group_t *group);

/* Cancels the group's scope (every child stops; later spawns fail).
 * Returns 0, CTX_CANCEL_ALREADY, CTX_EINVAL, or ctx_cancel_scope_cancel's
 * errors.  Any thread (holding a reference). */
CTX_EXPORT int ctx_loop_task_group_cancel(ctx_loop_task_group_t *group);

/* The group's scope (borrowed: valid while the group is), or NULL. */
CTX_EXPORT ctx_cancel_scope_t *ctx_loop_task_group_scope(const ctx_loop_task_group_t *group);

/* The number of children that have not ended (0 for NULL).  Loop thread. */
CTX_EXPORT size_t ctx_loop_task_group_pending(const ctx_loop_task_group_t *group);

/* Drops the caller's reference (NULL ignored).  If children are still
 * pending, the group's scope is cancelled first (nothing started for the
 * group outlives it unnoticed); they end on the loop as usual.  Loop
 * thread. */
CTX_EXPORT void ctx_loop_task_group_release(ctx_loop_task_group_t *group);

/* ---------------------------------------------------------------------- */
/* Offloading to a pool without a task                                     */
/* ---------------------------------------------------------------------- */

/* A loop future that follows `pool_future` (asyncio's wrap_future): it is
 * completed on the loop with the pool future's outcome (result borrowed
 * from the pool future, which it keeps alive), and cancelling it cancels
 * the pool future.  Keeps the loop running until it is done.  Loop thread.
 * Errors: CTX_EINVAL, CTX_ENOMEM, CTX_ECLOSED, CTX_EFORKED, and those of
 * ctx_pool_future_add_done_callback. */
CTX_EXPORT int ctx_loop_wrap_future(ctx_loop_t *loop, ctx_pool_future_t *pool_future,
                                         ctx_loop_future_t **out);

/* ctx_pool_submit_ex(pool, fn, arg, options) followed by
 * ctx_loop_wrap_future: fn runs on the pool in the context chosen by
 * `options` (by default, as the pool is configured: a copy of the caller's
 * current context), and *out is a loop future of its outcome.  Loop thread.
 * Errors (fn never runs; arg stays the caller's): those of
 * ctx_pool_submit_ex, CTX_ENOMEM, CTX_ECLOSED, CTX_EFORKED (the loop was
 * made before fork()). */
CTX_EXPORT int ctx_loop_run_in_pool(ctx_loop_t *loop, ctx_pool_t *pool,
                                         ctx_pool_task_fn fn, void *arg,
                                         const ctx_pool_submit_options_t *options,
                                         ctx_loop_future_t **out);

/* Called on the loop thread once work handed over with ctx_loop_offload is
 * over: `rc` is what fn returned (CTX_ECANCELLED if the pool dropped the
 * work unrun: a pool shut down with CTX_POOL_SHUTDOWN_CANCEL), `result` what
 * fn stored (NULL if it did not run); the callback owns the result. */
typedef void (*ctx_loop_offload_done_fn)(void *arg, int rc, void *result);

/* uv_queue_work on a ctxvar pool, with contexts: runs fn(arg, &result) on
 * `pool` as ctx_pool_submit_ex would (`options`: the pool's submit options;
 * by default fn runs in a copy of the caller's current context), then
 * done(arg, rc, result) on the loop thread, in a private copy of the context
 * current at this call (as a ctx_loop_call_soon callback).  No future: one
 * record carries the work to the pool and back, and nothing can cancel it —
 * the lean hand-off for work whose outcome one callback consumes
 * (ctx_loop_run_in_pool makes a future instead).  The loop keeps running
 * while the work is out.  options->arg_release (if given) is called once
 * with `arg` after done returned, on the loop thread, or instead of done if
 * the loop closed before the work came back (then on the thread that ended
 * the work); options->result_release (if given) is called with fn's result
 * only in that case (done owns it otherwise).  Loop thread.
 * Errors (fn and done never run; arg stays the caller's): CTX_EINVAL (loop,
 * pool, fn or done NULL), CTX_ENOMEM, CTX_ECLOSED, CTX_EFORKED, and those
 * of ctx_pool_submit_ex. */
CTX_EXPORT int ctx_loop_offload(ctx_loop_t *loop, ctx_pool_t *pool, ctx_pool_task_fn fn,
                                void *arg, ctx_loop_offload_done_fn done,
                                const ctx_pool_submit_options_t *options);

/* ---------------------------------------------------------------------- */
/* libuv callbacks in the context captured when they were armed            */
/* ---------------------------------------------------------------------- */

/* A handle or request that carries a context owns a private copy of the
 * context current when it was armed, and its callback runs inside that copy
 * every time it fires (so, like a task's steps, later firings see what
 * earlier ones set; the code that armed it sees none of it).  The helpers
 * below leave handle->data to the caller and pass libuv's own callback
 * arguments through unchanged.  If the captured context cannot be entered
 * (it is already entered: a callback of the same handle nested in another),
 * the callback runs in whatever context is current. */

/* The generic building block: a captured context, embedded in whatever
 * struct goes with a handle or request.  Zero it (or CTX_LOOP_UV_SCOPE_INIT)
 * before first use. */
typedef struct ctx_loop_uv_scope {
    ctx_context_t *context_; /* private */
} ctx_loop_uv_scope_t;

/* An empty scope, for initialising one. */
#define CTX_LOOP_UV_SCOPE_INIT {NULL}

/* Captures a copy of the calling thread's current context into `scope`,
 * releasing what it held before: call it when arming the handle or
 * request.  Any thread.  Errors (scope unchanged): CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_loop_uv_scope_capture(ctx_loop_uv_scope_t *scope);

/* Enters the captured context: first thing in the callback.  Returns the
 * context entered, to hand to ctx_loop_uv_scope_exit (it stays valid even if the
 * callback releases or re-captures the scope), or NULL when nothing was
 * captured or it could not be entered (then exit is a no-op).  Thread: the
 * one running the callback (the loop thread, or a libuv pool thread for
 * a work callback). */
CTX_EXPORT ctx_context_t *ctx_loop_uv_scope_enter(ctx_loop_uv_scope_t *scope);

/* Leaves what ctx_loop_uv_scope_enter entered (NULL ignored): last thing in the
 * callback.  Thread: the one that entered it. */
CTX_EXPORT void ctx_loop_uv_scope_exit(ctx_context_t *entered);

/* Drops the captured context (when the handle is closed or the request is
 * done).  NULL or an empty scope is ignored.  Any thread. */
CTX_EXPORT void ctx_loop_uv_scope_release(ctx_loop_uv_scope_t *scope);

/* Defines `static void name params` that runs `callback args` inside the
 * context of the scope that `scope` (an expression over the parameters)
 * points to: a trampoline for any libuv callback type.  Example, a read
 * callback that runs in the context captured at uv_read_start:
 *
 *   typedef struct conn { uv_tcp_t tcp; ctx_loop_uv_scope_t scope; ... } conn_t;
 *   static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
 *   CTX_LOOP_UV_CALLBACK(on_read_in_context, on_read,
 *                   &((conn_t *)s)->scope,
 *                   (uv_stream_t *s, ssize_t n, const uv_buf_t *buf),
 *                   (s, n, buf))
 *   ...
 *   ctx_loop_uv_scope_capture(&conn->scope);
 *   uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read_in_context);
 *   ...
 *   ctx_loop_uv_scope_release(&conn->scope);   // when closing the handle
 */
#define CTX_LOOP_UV_CALLBACK(name, callback, scope, params, args)                   \
    static void name params {                                                  \
        ctx_context_t *ctx_loop_uv_entered_ = ctx_loop_uv_scope_enter(scope);           \
        callback args;                                                         \
        ctx_loop_uv_scope_exit(ctx_loop_uv_entered_);                                    \
    }

/* A uv_timer_t whose callback runs in the context captured by
 * ctx_loop_uv_timer_start.  `timer` is first: the callback receives &t->timer,
 * and (ctx_loop_uv_timer_t *)handle gets the wrapper back.  The caller allocates
 * it, as with libuv. */
typedef struct ctx_loop_uv_timer {
    uv_timer_t timer; /* the libuv timer */
    ctx_loop_uv_scope_t scope_; /* private */
    uv_timer_cb cb_;       /* private */
} ctx_loop_uv_timer_t;

/* uv_timer_init.  Loop thread.  Errors: CTX_EINVAL, libuv's (mapped, see "Errors" above). */
CTX_EXPORT int ctx_loop_uv_timer_init(uv_loop_t *loop, ctx_loop_uv_timer_t *timer);

/* Captures the current context and uv_timer_start's the timer with `cb`.
 * A timer started again re-captures.  A one-shot timer drops its context
 * after its callback unless the callback started it again; a repeating one
 * keeps it until ctx_loop_uv_timer_stop or ctx_loop_uv_timer_close.  Loop thread.
 * Errors (cb never runs): CTX_EINVAL, CTX_ENOMEM, libuv's (mapped, see "Errors" above). */
CTX_EXPORT int ctx_loop_uv_timer_start(ctx_loop_uv_timer_t *timer, uv_timer_cb cb,
                                       uint64_t timeout, uint64_t repeat);

/* uv_timer_stop, and drops the captured context.  Returns 0, CTX_EINVAL.
 * Loop thread. */
CTX_EXPORT int ctx_loop_uv_timer_stop(ctx_loop_uv_timer_t *timer);

/* Drops the captured context and uv_close's the timer (close_cb may be
 * NULL; the memory must stay valid until it ran, as with libuv).  Loop
 * thread. */
CTX_EXPORT void ctx_loop_uv_timer_close(ctx_loop_uv_timer_t *timer, uv_close_cb close_cb);

/* A uv_async_t whose callback runs in the context captured by
 * ctx_loop_uv_async_init (arming an async handle is initialising it; the threads
 * that call uv_async_send do not lend their context: their sends
 * coalesce).  uv_async_send(&a->async) as usual, from any thread. */
typedef struct ctx_loop_uv_async {
    uv_async_t async; /* the libuv async handle */
    ctx_loop_uv_scope_t scope_; /* private */
    uv_async_cb cb_;       /* private */
} ctx_loop_uv_async_t;

/* Captures the current context and uv_async_init's the handle with `cb`.
 * Loop thread.  Errors (nothing initialised): CTX_EINVAL, CTX_ENOMEM,
 * libuv's (mapped, see "Errors" above). */
CTX_EXPORT int ctx_loop_uv_async_init(uv_loop_t *loop, ctx_loop_uv_async_t *async,
                                      uv_async_cb cb);

/* Drops the captured context and uv_close's the handle (close_cb may be
 * NULL).  Loop thread. */
CTX_EXPORT void ctx_loop_uv_async_close(ctx_loop_uv_async_t *async, uv_close_cb close_cb);

/* A uv_work_t whose work callback (on libuv's thread pool) and after-work
 * callback (on the loop) both run in the context captured by
 * ctx_loop_uv_queue_work, one after the other: the after-work callback sees what
 * the work callback set. */
typedef struct ctx_loop_uv_work {
    uv_work_t req; /* the libuv work request */
    ctx_loop_uv_scope_t scope_;     /* private */
    uv_work_cb work_cb_;       /* private */
    uv_after_work_cb after_cb_; /* private */
} ctx_loop_uv_work_t;

/* Captures the current context and uv_queue_work's the request.  The
 * context is dropped after after_cb returns (after_cb may free the request,
 * as usual; it also runs, with UV_ECANCELED, for a request cancelled with
 * uv_cancel).  after_cb may be NULL.  Loop thread.
 * Errors (no callback runs): CTX_EINVAL, CTX_ENOMEM, libuv's (mapped, see "Errors" above). */
CTX_EXPORT int ctx_loop_uv_queue_work(uv_loop_t *loop, ctx_loop_uv_work_t *work,
                                      uv_work_cb work_cb, uv_after_work_cb after_cb);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_LOOP_H */
