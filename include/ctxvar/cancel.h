/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/cancel.h — cancellation and deadlines carried by the context (the
 * cancel module, part of libctxvar).
 *
 * Go's `context.WithCancel / WithDeadline / AfterFunc / Cause /
 * WithoutCancel`, .NET's linked CancellationTokens, trio's cancel scopes, on
 * ctxvar's contexts: a context carries at most one *cancellation scope*, and
 * every copy of the context (pool tasks, loop tasks, bound callables, bus
 * deliveries, NATS handlers, captures) carries the same one.  Code deep down
 * asks `ctx_cancel_check()` — about the cost of a ctx_var_get cache hit — and
 * stops when the request it works for was abandoned or ran out of time.
 *
 *   ctx_cancel_scope_t     a scope: active until cancelled, once, with a cause.
 *                          Reference counted.  A scope may have a parent:
 *                          cancelling a parent cancels every descendant;
 *                          cancelling a child never touches its parent.
 *   deadline               an absolute CLOCK_MONOTONIC time in nanoseconds (the
 *                          clock of ctx_wire_now_ns).  A child's deadline is
 *                          never later than its parent's; when it passes, the
 *                          scope is cancelled with CTX_EDEADLINE.  One timer
 *                          thread serves every scope (started at the first
 *                          deadline, gone when idle or at ctx_cancel_timer_release).
 *   ctx_cancel_callback_t  a callback registered on a scope (caller-owned
 *                          storage): runs exactly once when the scope is
 *                          cancelled, in the context it was registered in,
 *                          unless it is cleared first.
 *
 * Typical use:
 *
 *     ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
 *     o.timeout_ns = 50 * 1000000;           // this request: 50 ms
 *     ctx_token_t *tok;
 *     ctx_cancel_enter_child(&o, NULL, &tok); // a child of the current scope
 *     handle_request();                       // copies of the context made in
 *                                             // here (pool tasks, ...) carry it
 *     ctx_cancel_exit(tok);                   // the previous scope again
 *
 *     // deep down, on whatever thread runs a copy:
 *     if ((err = ctx_cancel_check()) != 0)    // CTX_ECANCELLED / CTX_EDEADLINE
 *         return err;                         // nobody wants the result now
 *
 * Where the scope lives: the value of a context variable private to the
 * library (so ctx_context_length, iteration and ctx_context_format see one
 * more entry, named "ctxvar.cancel", in a context that has a scope).  Making
 * a scope current is a `set` of that variable and is undone like one, with a
 * token (ctx_cancel_exit).  docs/design.md explains the whole design.
 *
 * Errors
 * ------
 * A scope cancelled by ctx_cancel_scope_cancel reports CTX_ECANCELLED; one
 * whose deadline passed reports CTX_EDEADLINE; a child cancelled because its
 * parent was reports what its parent reports (and the parent's cause).
 * Functions return 0 (or a documented non-negative status) or a negative
 * CTX_E* code; a call that fails changes nothing, and what it was handed
 * (a cause's data, a callback) stays the caller's; a callback given to a
 * failing call never runs.
 *
 * Threads
 * -------
 * Every function may be called from any thread unless its comment says
 * otherwise.  Functions "on the current context" act on the calling
 * thread's current context, as ctx_var_get/ctx_var_set do.
 *
 * | call                                   | may run concurrently with          |
 * |----------------------------------------|------------------------------------|
 * | ctx_cancel_check, _scope_error, _cause,| anything, on any scope             |
 * |   _deadline, _remaining                |                                    |
 * | ctx_cancel_scope_cancel                | anything, including itself on the  |
 * |                                        | same scope (the first cause wins)  |
 * | ctx_cancel_scope_new, _retain, _release| anything (a child of a scope being |
 * |                                        | cancelled is born cancelled)       |
 * | ctx_cancel_callback_init / _clear      | anything, but one callback storage |
 * |                                        | has one owner: init, then clear    |
 * |                                        | once, from one thread at a time    |
 *
 * Cancellation callbacks run on the thread that cancels (the timer thread
 * for an expired deadline), outside every library lock, after every scope
 * below the cancelled one that was still active reports cancelled.  Keep
 * them short — hand long work to a pool — since a slow one delays the
 * callbacks after it (and, on the timer thread, other deadlines).
 *
 * fork(): scopes are plain memory and keep working in the child.  The timer
 * thread does not exist in the child: deadlines pending at the fork keep
 * their place, and the thread is started again by the next call that adds a
 * deadline or waits (ctx_cancel_scope_wait, ctx_cancel_sleep; a wait also
 * enforces its own scope's deadline by itself).  As for contexts, a scope
 * that another thread was changing at the instant of the fork must not be
 * used in the child.
 */
#ifndef CTXVAR_CANCEL_H
#define CTXVAR_CANCEL_H

#include <stdint.h>

#include "../ctxvar.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A cancellation scope (opaque, reference counted: see the top of this
 * file). */
typedef struct ctx_cancel_scope ctx_cancel_scope_t;

/* ---------------------------------------------------------------------- */
/* Scopes                                                                  */
/* ---------------------------------------------------------------------- */

/* How a new scope is made.  Zero members mean "no deadline". */
typedef struct ctx_cancel_options {
    size_t size; /* sizeof(ctx_cancel_options_t): see "Growable structs" in ctxvar.h */
    /* An absolute deadline on CLOCK_MONOTONIC, in nanoseconds (the clock of
     * ctx_wire_now_ns); 0: none.  A time already passed makes a scope that
     * is born cancelled with CTX_EDEADLINE. */
    int64_t deadline_ns;
    /* A deadline relative to now, in nanoseconds; 0: none; a negative
     * value: already expired; one so large that now + timeout_ns overflows:
     * none.  With both set, the earlier wins. */
    int64_t timeout_ns;
} ctx_cancel_options_t;

/* A user's reason for cancelling (Go's Cause). */
typedef struct ctx_cancel_cause {
    size_t size; /* sizeof(ctx_cancel_cause_t) */
    int code;    /* any value the user chooses (an errno, an HTTP status, ...) */
    /* Any pointer; borrowed by readers (ctx_cancel_scope_cause) while the
     * scope lives. */
    void *data;
    /* NULL, or: if the cause is taken (the cancel returned 0),
     * release(data) runs once, when the scope is freed, on the thread that
     * drops its last reference. */
    void (*release)(void *data);
} ctx_cancel_cause_t;

/* ctx_cancel_scope_cancel's status when the scope was cancelled already (by
 * an earlier call, its parent or its deadline): this call's cause was not
 * taken and stays the caller's. */
#define CTX_CANCEL_ALREADY 1

/* Makes a scope, a child of `parent` (NULL: a root, cancelled only
 * explicitly or by its deadline).  Its deadline is the earliest of the
 * options' deadline_ns, now + timeout_ns and the parent's deadline.  If the
 * parent is already cancelled, the scope is born cancelled with the
 * parent's error and cause; else if its deadline has passed, it is born
 * cancelled with CTX_EDEADLINE.  A deadline earlier than the parent's puts
 * the scope in the timer facility (starting its thread if needed); the
 * entry goes when the scope is cancelled or freed.
 * The scope is not current anywhere (ctx_cancel_enter makes it current).
 * On success *out holds the caller's reference (ctx_cancel_scope_release).
 * The child holds a reference to its parent; the parent does not keep the
 * child alive: a child freed before its parent is cancelled unlinks itself.
 * Errors: CTX_EINVAL (out NULL; options breaking the growth rule),
 * CTX_ENOMEM, CTX_ESYSTEM (the timer thread could not be started). */
CTX_EXPORT int ctx_cancel_scope_new(ctx_cancel_scope_t *parent,
                                    const ctx_cancel_options_t *options,
                                    ctx_cancel_scope_t **out);

/* One more reference (for another owner); returns `scope`.  NULL is
 * returned as is. */
CTX_EXPORT ctx_cancel_scope_t *ctx_cancel_scope_retain(ctx_cancel_scope_t *scope);

/* Drops a reference (NULL ignored).  Contexts holding the scope, its
 * children and its registered callbacks each hold one, so releasing the
 * caller's reference neither cancels the scope nor stops anything; the last
 * release frees it (its timer entry goes, its cause's release runs, and its
 * parent loses a reference). */
CTX_EXPORT void ctx_cancel_scope_release(ctx_cancel_scope_t *scope);

/* Cancels `scope` and every descendant still active, with `cause` (NULL:
 * no cause).  Idempotent: the first cancellation wins (an explicit one, the
 * parent's or the deadline's) and later ones change nothing (they return
 * CTX_CANCEL_ALREADY at once, without waiting for the winner's callbacks).
 * When the winning call returns, every scope below reports cancelled and
 * every callback registered on them has run on this thread, in the context
 * each was registered in (in reverse order of registration per scope) —
 * except those of a descendant that another thread cancelled first, which
 * that thread runs.
 * The callbacks run outside every library lock, so they may call any
 * function of this module, on any scope.
 * Returns 0 (this call cancelled the scope and took the cause: its data's
 * `release` will run when the scope is freed), CTX_CANCEL_ALREADY (it was
 * cancelled already; the cause stays the caller's), CTX_EINVAL (scope NULL,
 * cause breaking the growth rule), CTX_ENOMEM / CTX_ESYSTEM (the calling
 * thread has no ctxvar state yet and none could be made: nothing changed).
 * The caller must hold a reference to the scope for the duration of the
 * call. */
CTX_EXPORT int ctx_cancel_scope_cancel(ctx_cancel_scope_t *scope,
                                       const ctx_cancel_cause_t *cause);

/* Go's Err: 0 while `scope` is active, CTX_ECANCELLED or CTX_EDEADLINE
 * once cancelled; CTX_EINVAL for NULL.  One atomic load. */
CTX_EXPORT int ctx_cancel_scope_error(const ctx_cancel_scope_t *scope);

/* Go's Cause: returns what ctx_cancel_scope_error returns, and if the
 * scope is cancelled writes its cause to *out (ctx_cancel_cause_t, written
 * up to out->size bytes): the cause given to the cancel that won, the
 * parent's cause for a scope cancelled with its parent, {code 0, data
 * NULL} for a deadline or a cancel without cause.  out->data is borrowed
 * (valid while the scope lives); out->release is always NULL (the scope
 * keeps the duty).  *out is untouched while the scope is active.
 * CTX_EINVAL for NULL arguments or out->size < sizeof(size_t). */
CTX_EXPORT int ctx_cancel_scope_cause(const ctx_cancel_scope_t *scope,
                                      ctx_cancel_cause_t *out);

/* The scope's deadline (absolute, CLOCK_MONOTONIC ns): 0 and *deadline_ns,
 * or CTX_ENOTFOUND (no deadline), CTX_EINVAL. */
CTX_EXPORT int ctx_cancel_scope_deadline(const ctx_cancel_scope_t *scope,
                                         int64_t *deadline_ns);

/* The time left until the scope's deadline, in nanoseconds (0 once it has
 * passed): 0 and *ns, or CTX_ENOTFOUND (no deadline), CTX_EINVAL.  A
 * deadline that passed does not mean the scope reports CTX_EDEADLINE yet:
 * the timer thread cancels it a moment later. */
CTX_EXPORT int ctx_cancel_scope_remaining(const ctx_cancel_scope_t *scope, int64_t *ns);

/* Blocks the calling thread until `scope` is cancelled or `timeout_ns`
 * nanoseconds have passed (negative: no limit; 0: just look).  Returns the
 * scope's error (CTX_ECANCELLED, CTX_EDEADLINE) if it is cancelled by the
 * end of the wait, else CTX_ETIMEDOUT; CTX_EINVAL (scope NULL), CTX_ESYSTEM
 * (a mutex or condition variable could not be made).  The wait ends at the
 * scope's deadline even if the timer thread is late or absent (after
 * fork()): the waiter then cancels the scope (the one that owns the
 * deadline: an ancestor if the deadline is inherited) itself.  Any thread
 * (in a callback of this very scope it returns at once: the scope is
 * cancelled before its callbacks run). */
CTX_EXPORT int ctx_cancel_scope_wait(ctx_cancel_scope_t *scope, int64_t timeout_ns);

/* ---------------------------------------------------------------------- */
/* The current context's scope                                             */
/* ---------------------------------------------------------------------- */

/* The hot path: 0 if the current context has no scope or its scope is
 * active, CTX_ECANCELLED or CTX_EDEADLINE if it is cancelled.  Costs about a
 * ctx_var_get cache hit plus one atomic load; never allocates, never fails. */
CTX_EXPORT int ctx_cancel_check(void);

/* The current context's scope, borrowed: 0 and *out, valid while the
 * current context holds it (until the next ctx_cancel_enter/exit in it, or
 * until it stops being current); CTX_ENOTFOUND if it has none (*out
 * untouched); CTX_EINVAL.  Take a reference (ctx_cancel_scope_retain) to
 * keep it longer. */
CTX_EXPORT int ctx_cancel_scope_current(ctx_cancel_scope_t **out);

/* Makes `scope` the current context's scope (the context takes a reference;
 * NULL: no scope, Go's WithoutCancel for the current context), visible in
 * copies made afterwards, invisible in other contexts.  *token receives a
 * token for ctx_cancel_exit, which restores the previous scope.
 * Errors: CTX_EINVAL (token NULL), CTX_ENOMEM, CTX_ESYSTEM (nothing
 * changed).  Calling thread's current context. */
CTX_EXPORT int ctx_cancel_enter(ctx_cancel_scope_t *scope, ctx_token_t **token);

/* A new child of the current context's scope (a root if it has none), made
 * with `options`, made current as ctx_cancel_enter does (the child is
 * always a child of the scope current at the call: an inner scope never
 * outlives the outer one's cancellation or deadline).  If `scope` is not
 * NULL, *scope receives a reference of the caller's own (to cancel it with;
 * release it).  *token is for ctx_cancel_exit.  Errors: CTX_EINVAL,
 * CTX_ENOMEM, CTX_ESYSTEM (nothing changed, no scope made). */
CTX_EXPORT int ctx_cancel_enter_child(const ctx_cancel_options_t *options,
                                      ctx_cancel_scope_t **scope, ctx_token_t **token);

/* Undoes the ctx_cancel_enter / ctx_cancel_enter_child that made `token`:
 * the previous scope (or none) is current again, and the token is released.
 * The scope that was entered is not cancelled (cancel it first to stop work
 * still running in copies); it is freed when nothing holds it any more.
 * Errors, as ctx_var_reset (the token is then NOT released): CTX_EINVAL,
 * CTX_ETOKENUSED, CTX_ETOKENVAR (not a token of this module),
 * CTX_ETOKENCTX (made in another context), CTX_ENOMEM.  Calling thread,
 * in the context that made the token. */
CTX_EXPORT int ctx_cancel_exit(ctx_token_t *token);

/* The time left until the current scope's deadline (0 once passed): 0 and
 * *ns, or CTX_ENOTFOUND (no scope, or no deadline), CTX_EINVAL.  What an
 * outgoing request should carry as its timeout. */
CTX_EXPORT int ctx_cancel_remaining(int64_t *ns);

/* Sleeps `ns` nanoseconds unless the current scope is cancelled first
 * (negative: until it is cancelled).  Returns 0 (slept the whole time),
 * CTX_ECANCELLED / CTX_EDEADLINE (woken by the cancellation), CTX_EINVAL (a
 * negative `ns` with no scope: it would sleep forever), CTX_ESYSTEM. */
CTX_EXPORT int ctx_cancel_sleep(int64_t ns);

/* ---------------------------------------------------------------------- */
/* Other contexts                                                          */
/* ---------------------------------------------------------------------- */

/* The scope of `ctx` (any context, entered anywhere or not): 0 and *out, a
 * new reference the caller releases; CTX_ENOTFOUND if it has none;
 * CTX_EINVAL. */
CTX_EXPORT int ctx_cancel_scope_get(ctx_context_t *ctx, ctx_cancel_scope_t **out);

/* Gives `ctx`, which must not be entered anywhere, the scope `scope` (the
 * context takes a reference; NULL: no scope): for building a context before
 * handing it to ctx_context_run, a pool or a loop (the wire layer's
 * extraction).  Errors: CTX_EENTERED, CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_cancel_context_set(ctx_context_t *ctx, ctx_cancel_scope_t *scope);

/* Go's WithCancel/WithDeadline as a new context: *out = a copy of `src`
 * (NULL: the current context) whose scope is a new child of src's scope (a
 * root if it has none), made with `options`.  If `scope` is not NULL,
 * *scope receives a reference of the caller's own to the child.  Errors:
 * CTX_EINVAL, CTX_ENOMEM, CTX_ESYSTEM (nothing made). */
CTX_EXPORT int ctx_cancel_context_new(ctx_context_t *src, const ctx_cancel_options_t *options,
                                      ctx_context_t **out, ctx_cancel_scope_t **scope);

/* Go's WithoutCancel: *out = a copy of `src` (NULL: the current context)
 * with every value and no scope, for cleanup work that must finish even
 * when the request was abandoned.  Errors: CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_cancel_context_detach(ctx_context_t *src, ctx_context_t **out);

/* For schedulers that keep work in captures (ctxvar.h): the error of the
 * captured context's scope (0: none or active; CTX_ECANCELLED,
 * CTX_EDEADLINE), as ctx_cancel_check would report it inside the capture's
 * run.  CTX_EINVAL for NULL.  The capture's owner, not while it runs. */
CTX_EXPORT int ctx_cancel_capture_check(ctx_capture_t *capture);

/* The scope of the captured context: 0 and *out (a new reference), or
 * CTX_ENOTFOUND, CTX_EINVAL.  The capture's owner, not while it runs. */
CTX_EXPORT int ctx_cancel_capture_scope(ctx_capture_t *capture, ctx_cancel_scope_t **out);

/* ---------------------------------------------------------------------- */
/* Callbacks on cancellation (Go's AfterFunc, .NET's Register)             */
/* ---------------------------------------------------------------------- */

/* A cancellation callback: `arg` is what was given at registration. */
typedef void (*ctx_cancel_fn)(void *arg);

/* Storage for one registration, owned by the caller (a member of its own
 * record, or a local): no allocation.  Filled by ctx_cancel_callback_init
 * (or _init_wakeup), emptied by ctx_cancel_callback_clear exactly once
 * before the storage is reused or dropped.  Never copied by value.  While
 * filled, it holds a reference to its scope. */
typedef struct ctx_cancel_callback {
    void *private_[12];
} ctx_cancel_callback_t;

/* What ctx_cancel_callback_clear found (and _init's status when the scope
 * was already cancelled). */
#define CTX_CANCEL_CALLBACK_STOPPED 0 /* removed before it ran: it never will */
#define CTX_CANCEL_CALLBACK_RAN 1     /* it ran (and has returned) */
#define CTX_CANCEL_CALLBACK_RUNNING 2 /* clear was called by the callback itself */

/* Registers fn(arg) to run once when `scope` is cancelled, in a private
 * copy of the context current now (captured like ctx_capture_current: O(1),
 * no allocation; its sets stay in the copy), on the thread that cancels,
 * outside every library lock; the callbacks of one scope run latest
 * registered first (as .NET's do).  If the scope is already cancelled, fn runs
 * at once on this thread, in the current context, before this returns, and
 * the status is CTX_CANCEL_CALLBACK_RAN; otherwise 0.  Either way call
 * ctx_cancel_callback_clear once later.  Errors (fn never runs, nothing is
 * kept): CTX_EINVAL (cb, scope or fn NULL). */
CTX_EXPORT int ctx_cancel_callback_init(ctx_cancel_callback_t *cb, ctx_cancel_scope_t *scope,
                                        ctx_cancel_fn fn, void *arg);

/* ctx_cancel_callback_init for wake-ups (a condition variable to signal, a
 * uv_async_t to send, a worker to wake): fn(arg) runs on the cancelling
 * thread in whatever context is current there, without capturing one, so
 * it must not depend on context variables.  Same statuses and errors. */
CTX_EXPORT int ctx_cancel_callback_init_wakeup(ctx_cancel_callback_t *cb,
                                               ctx_cancel_scope_t *scope, ctx_cancel_fn fn,
                                               void *arg);

/* Deregisters and empties `cb` (Go's stop, .NET's Dispose):
 *   CTX_CANCEL_CALLBACK_STOPPED  fn had not started: it never will;
 *   CTX_CANCEL_CALLBACK_RAN      fn has run: if it was running on another
 *                                thread, this waited for it to return;
 *   CTX_CANCEL_CALLBACK_RUNNING  called from inside fn (on the thread
 *                                running it): fn is still on the stack, but
 *                                the library no longer touches `cb`, so fn
 *                                may free the storage before returning.
 * Afterwards the storage holds nothing (the scope reference and captured
 * context are dropped) and may be reused.  CTX_EINVAL for NULL.  The
 * owner's thread; not twice for one init. */
CTX_EXPORT int ctx_cancel_callback_clear(ctx_cancel_callback_t *cb);

/* ---------------------------------------------------------------------- */
/* The timer facility                                                      */
/* ---------------------------------------------------------------------- */

/* The timer facility's counters (ctx_cancel_stats). */
typedef struct ctx_cancel_stats {
    size_t size;             /* sizeof(ctx_cancel_stats_t) */
    uint64_t timers_pending; /* scopes waiting for their deadline now */
    uint64_t timers_fired;   /* deadlines the timer thread fired (since the
                                process began; a wait that reaches its
                                scope's deadline first expires it itself) */
    uint64_t thread_starts;  /* times the timer thread was started */
    int thread_running;      /* 1 if the timer thread exists now */
} ctx_cancel_stats_t;

/* Reads the timer facility's counters into *out (written up to out->size
 * bytes).  Returns 0 or CTX_EINVAL (NULL, or out->size < sizeof(size_t)). */
CTX_EXPORT int ctx_cancel_stats(ctx_cancel_stats_t *out);

/* Stops the timer thread and frees the facility's memory now, instead of
 * when the thread has been idle for a second: for leak checkers at the end
 * of main (as ctx_thread_release).  The next deadline starts it again.
 * Returns 0 (also when it was not running), CTX_EBUSY (deadlines are
 * pending, or called on the timer thread itself: nothing changed).  Any
 * thread. */
CTX_EXPORT int ctx_cancel_timer_release(void);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_CANCEL_H */
