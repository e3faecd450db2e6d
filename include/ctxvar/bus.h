/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/bus.h — events with context (the bus module).
 *
 * A well-known agent framework keeps its event listeners in a context
 * variable, so a listener registered while handling a request is visible to
 * that request's code — until a web framework runs the next callback on a
 * worker thread, which starts in an empty context and sees no listener.  Its
 * users patched it with a decorator that copies the context into the worker.
 * This bus makes the right thing the default, on top of the core (contexts),
 * the pool (which carries contexts to workers) and the loop:
 *
 *   ctx_bus_t           a bus: global listeners, plus one context variable
 *                       of its own that holds the context-scoped ones.
 *   ctx_bus_listener_t  one subscription (a handle: unsubscribe it from any
 *                       thread, in any context).
 *   ctx_bus_event_t     a reference-counted event: a topic and a data
 *                       pointer, released exactly once, after the last
 *                       listener (and the last holder) is done with it.
 *
 * Listeners
 * ---------
 * A *global* listener receives every matching event published on the bus.
 * A *scoped* listener (CTX_BUS_SCOPED) is registered in the calling thread's
 * current context: it receives the events published from that context and
 * from every copy of it made afterwards (pool tasks, loop callbacks and
 * tasks, bound callables, inheriting threads), and never an event published
 * from any other context — another request's, a sibling pool task's, or the
 * context it was copied from.  It is exactly a context variable's
 * visibility: a subscribe is a `ctx_var_set` of the bus's listener list.
 * So a scoped listener subscribed inside a pool task or a loop callback is
 * visible only to that task's code (and copies made from it), and goes away
 * with the task's context.
 *
 * Topics
 * ------
 * An event's topic is a non-empty string without '*', by convention
 * dot-separated ("request.progress").  A listener's pattern is one of:
 *   "request.progress"  exactly that topic;
 *   "request.*"         every topic that starts with "request." — any depth
 *                       ("request.progress", "request.io.read"), but not
 *                       "request" itself.  '*' is allowed only as the whole
 *                       last segment, after a non-empty prefix;
 *   "*" or NULL         every event.
 * Matching is byte-wise and case-sensitive.
 *
 * Delivery and order
 * ------------------
 * One publish delivers to a *snapshot*: the listeners subscribed (globally,
 * and scoped in the publisher's current context) when the publish begins.
 * They are called one after another, on one thread, in the order they were
 * subscribed — global and scoped interleaved by the time of their
 * ctx_bus_subscribe call.  Before each call the listener is checked again:
 * one unsubscribed meanwhile (by an earlier listener, by itself on an
 * earlier event, by another thread) is skipped.  A listener subscribed
 * during a delivery receives the events published after its subscribe
 * returned, never the one being delivered.
 *
 *   ctx_bus_publish       synchronous: listeners run now, in the publisher's
 *                         thread and in its current context itself (a
 *                         listener's ctx_var_set is seen by the listeners
 *                         after it and by the publisher, as with any function
 *                         call; wrap the publish in ctx_context_run of a copy
 *                         to keep them apart).
 *   ctx_bus_publish_pool  asynchronous on a ctx_pool_t: one pool task per
 *                         publish runs the snapshot's listeners in a private
 *                         copy of the publisher's context taken at publish
 *                         (the bus asks for CTX_POOL_PROPAGATE_COPY whatever the
 *                         pool's policy).  Events of different publishes may
 *                         run concurrently and out of order on a pool with
 *                         several workers; a one-worker pool keeps them in
 *                         publish order.
 *   ctx_bus_publish_loop  asynchronous on a ctx_loop_t (ctxvar/loop.h): one
 *                         loop callback per publish, on the loop thread, in
 *                         a private copy of the publisher's context; events
 *                         published from one thread are delivered in publish
 *                         order.  Available when the bus library is built
 *                         with the loop module (CMake defines
 *                         CTX_BUS_HAVE_LOOP for users of ctxvar_bus_static).
 * In every case every listener of one delivery runs in the same context: the
 * publisher's (sync) or that delivery's private copy (async).
 *
 * Failures
 * --------
 * A listener returns 0, or a negative CTX_E* code to say it failed.  A
 * failure never stops the delivery: the next listener is called all the
 * same.  Each failure is counted (ctx_bus_stats: listener_failures) and
 * handed to the bus's error handler, right after the failing listener
 * returned, on its thread and in its context.
 *
 * Ownership (libuv's rule)
 * ------------------------
 * A call that fails never calls the function it was given, never calls a
 * release function it was given, and keeps nothing: `user`, `data` and the
 * event stay the caller's.  A successful subscribe takes `user` (released
 * with `user_release`, see ctx_bus_subscribe); a successful event_new takes
 * `data` (released with `data_release` when the event dies).  Publishing
 * borrows the event: an asynchronous publish keeps a reference of its own
 * until its last listener returned, so the publisher may release its
 * reference as soon as the call returns.
 *
 * Threads
 * -------
 *   | call                                  | may run concurrently with     |
 *   |---------------------------------------|-------------------------------|
 *   | publish, publish_pool, publish_loop   | anything, any thread          |
 *   | subscribe                             | anything, any thread          |
 *   | unsubscribe, listener retain/release  | anything, any thread, inside  |
 *   |                                       | a listener too                |
 *   | event new/retain/release/accessors    | anything, any thread          |
 *   | stats, shutdown, wait_idle            | anything (wait_idle not from  |
 *   |                                       | a delivery of the same bus)   |
 *   | release (the bus)                     | no other call through the     |
 *   |                                       | creator's pointer             |
 * Listeners may publish (nested, synchronously or not), subscribe and
 * unsubscribe.  A bus uses a mutex for subscribe/unsubscribe and no lock to
 * publish: a publish reads the global listeners without a lock and without
 * writing to memory that other publishers read, so publishers on many
 * threads do not slow each other down.
 *
 * Locks: no user function runs under a lock of the bus — listeners, the
 * error handler, user_release and data_release are called after every lock
 * is let go — so they may call any bus function on the same bus, and no
 * other thread's call waits for them.
 *
 * fork()
 * ------
 * The child of a fork() has a copy of every bus, with locks that threads
 * which do not exist in the child may have held, and asynchronous
 * deliveries queued on pool workers or loops that do not run there.  A bus
 * made before the fork is unusable in the child: publish (of every kind),
 * subscribe, unsubscribe, shutdown, stats and wait_idle return CTX_EFORKED
 * and call no listener (wait_idle does not wait for deliveries that can
 * never end), and ctx_bus_listener_visible says 0.  ctx_bus_release and
 * ctx_bus_listener_release return at once in the child, take no lock and
 * call no user_release: what the bus held at the fork stays allocated until
 * the child exits or execs.  Events belong to no bus and work as usual, as
 * do buses made in the child.
 *
 * Errors are the negative CTX_E* codes of ctxvar.h; see each function.
 */
#ifndef CTXVAR_BUS_H
#define CTXVAR_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "../ctxvar.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ctxvar_bus is a library of its own (over ctxvar, and ctxvar_loop when it
 * is built with the loop module). */
typedef struct ctx_bus ctx_bus_t;
typedef struct ctx_bus_listener ctx_bus_listener_t;
typedef struct ctx_bus_event ctx_bus_event_t;
/* The loop of ctxvar/loop.h (the same declaration; this header does not
 * include uv.h). */
typedef struct ctx_loop ctx_loop_t;

/* ---------------------------------------------------------------------- */
/* Events                                                                  */
/* ---------------------------------------------------------------------- */

/* Creates an event on `topic` (copied; non-empty, no '*') carrying `data`.
 * *out holds the caller's reference (ctx_bus_event_release).  When the last
 * reference goes, data_release(data) is called once (if data_release is not
 * NULL), on the thread that dropped it.  Any thread.
 * Errors (data stays the caller's, data_release is never called):
 * CTX_EINVAL (topic or out NULL), CTX_EPARSE (topic empty or containing
 * '*'), CTX_ENOMEM. */
CTX_EXPORT int ctx_bus_event_new(const char *topic, void *data,
                                     void (*data_release)(void *data),
                                     ctx_bus_event_t **out);

/* One more reference (for a listener that keeps the event beyond its call);
 * returns `event`.  Any thread. */
CTX_EXPORT ctx_bus_event_t *ctx_bus_event_retain(ctx_bus_event_t *event);

/* Drops a reference (NULL ignored); the last one releases the data and
 * frees the event.  Any thread. */
CTX_EXPORT void ctx_bus_event_release(ctx_bus_event_t *event);

/* The topic (borrowed; valid while the event lives).  NULL for NULL.  Any
 * thread. */
CTX_EXPORT const char *ctx_bus_event_topic(const ctx_bus_event_t *event);

/* The data pointer given at creation (NULL for NULL).  The bus never looks
 * into it; listeners on several threads may receive it at once.  Any
 * thread. */
CTX_EXPORT void *ctx_bus_event_data(const ctx_bus_event_t *event);

/* ---------------------------------------------------------------------- */
/* Buses                                                                   */
/* ---------------------------------------------------------------------- */

/* Called for each listener call that returned a negative code: the bus, the
 * listener and the event (borrowed for the call), the code.  Runs right
 * after the listener returned, on its thread, in its context.  It may call
 * any bus function but must not fail a test by longjmp (cmocka) off the
 * main thread. */
typedef void (*ctx_bus_error_fn)(ctx_bus_t *bus, ctx_bus_listener_t *listener,
                                 ctx_bus_event_t *event, int code, void *user);

/* Options of ctx_bus_new: NULL, or CTX_STRUCT_INIT(ctx_bus_options_t) and
 * the members wanted. */
typedef struct ctx_bus_options {
    size_t size; /* sizeof(ctx_bus_options_t): CTX_STRUCT_INIT */
    /* The error handler; NULL: one line on stderr per failure. */
    ctx_bus_error_fn on_error;
    void *error_user; /* passed to on_error */
} ctx_bus_options_t;

/* Creates a bus (`options` NULL: defaults).  The bus creates one context
 * variable of its own (named "ctx_bus.listeners") for its scoped listeners.
 * *out is the caller's (ctx_bus_release).  Any thread.
 * Errors: CTX_EINVAL (out NULL, options with a wrong size), CTX_ENOMEM,
 * CTX_ESYSTEM (a mutex or condition variable could not be made). */
CTX_EXPORT int ctx_bus_new(const ctx_bus_options_t *options, ctx_bus_t **out);

/* Stops the bus: every later publish of any kind fails with CTX_ESHUTDOWN
 * and delivers nothing, every later subscribe fails with CTX_ESHUTDOWN, and
 * the bus drops its global listener list (a global listener whose handle is
 * released can then go).  A delivery that began before — a synchronous one
 * running on another thread, or an asynchronous publish already accepted and
 * queued — is not interrupted and still delivers to its snapshot: an
 * accepted event is never lost.  Does not wait (ctx_bus_wait_idle does).
 * Calling it again is harmless.  Any thread, a listener too.
 * Returns 0, CTX_EINVAL (NULL) or CTX_EFORKED (see "fork()"). */
CTX_EXPORT int ctx_bus_shutdown(ctx_bus_t *bus);

/* Waits until no asynchronous delivery of the bus is queued or running (and
 * every one that ended has released its event), at most `timeout_ns`
 * nanoseconds (CTX_WAIT_FOREVER of ctxvar/pool.h: no limit; 0: just look).
 * Deliveries queued on a loop make progress only while that loop runs: do
 * not wait on the loop thread for them.  Any thread.
 * Returns 0 (idle), CTX_ETIMEDOUT, CTX_EBUSY (called from an asynchronous
 * delivery of this bus: it would wait for itself), CTX_EINVAL (NULL),
 * CTX_EFORKED (see "fork()": nothing is waited for). */
CTX_EXPORT int ctx_bus_wait_idle(ctx_bus_t *bus, int64_t timeout_ns);

/* Shuts the bus down (ctx_bus_shutdown) and drops the caller's reference.
 * The memory lives on while something still refers to it: a listener
 * handle, a scoped listener still held by some context, an asynchronous
 * delivery in flight (which still runs).  The bus's variable and its
 * listener lists are released with the last context holding them.  For an
 * orderly end: ctx_bus_shutdown, ctx_bus_wait_idle, ctx_bus_release.  NULL is
 * ignored.  Call it once, when no other thread uses the creator's pointer;
 * listener handles stay usable.  Never blocks for long (in a child of
 * fork(), never at all: see "fork()"). */
CTX_EXPORT void ctx_bus_release(ctx_bus_t *bus);

/* A snapshot of a bus's counters.  Set `size` before the call
 * (CTX_STRUCT_INIT(ctx_bus_stats_t)): the bus writes no further. */
typedef struct ctx_bus_stats {
    size_t size;                /* sizeof(ctx_bus_stats_t): CTX_STRUCT_INIT */
    size_t global_listeners;    /* global listeners subscribed now */
    uint64_t listener_failures; /* listener calls that returned an error */
    uint64_t rejected;          /* publishes refused by a shut-down bus */
    uint64_t async_accepted;    /* asynchronous publishes queued, ever */
    uint64_t async_pending;     /* of those, not yet finished */
    uint64_t async_dropped;     /* of those, dropped without running: the
                                   loop closed or the pool cancelled them
                                   first (their event is still released) */
} ctx_bus_stats_t;

/* Fills *out with the bus's counters now (each read atomically, not all at
 * one instant), at most out->size bytes of them.  Any thread.  Returns 0,
 * CTX_EINVAL (bus or out NULL, out->size smaller than a size_t),
 * CTX_EFORKED. */
CTX_EXPORT int ctx_bus_stats(ctx_bus_t *bus, ctx_bus_stats_t *out);

/* ---------------------------------------------------------------------- */
/* Listeners                                                               */
/* ---------------------------------------------------------------------- */

/* A listener.  `self` is its own handle (borrowed for the call: pass it to
 * ctx_bus_unsubscribe to stop receiving), `event` the event (borrowed:
 * ctx_bus_event_retain it to keep it), `user` as subscribed.  Returns 0, or
 * a negative code to report a failure (see "Failures"; a positive return is
 * taken as 0).  Runs as described in "Delivery and order". */
typedef int (*ctx_bus_listener_fn)(ctx_bus_listener_t *self, ctx_bus_event_t *event,
                                   void *user);

/* The listener is scoped to the current context (see "Listeners"); without
 * it the listener is global. */
#define CTX_BUS_SCOPED 1u

/* Options of ctx_bus_subscribe: NULL, or
 * CTX_STRUCT_INIT(ctx_bus_subscribe_options_t) and the members wanted. */
typedef struct ctx_bus_subscribe_options {
    size_t size;    /* sizeof(ctx_bus_subscribe_options_t): CTX_STRUCT_INIT */
    unsigned flags; /* CTX_BUS_* */
    /* Called once with `user` when nothing can call the listener any more:
     * it was unsubscribed (or, for a global listener, the bus shut down), its
     * handle was released, and no listener list still names it — the bus's
     * global list, a delivery in flight, or, for a scoped listener, a
     * context (or copy) it was visible in; those lists drop it when the
     * context dies or subscribes again.  On the thread that dropped the
     * last of these.  Never called if the subscribe fails. */
    void (*user_release)(void *user);
} ctx_bus_subscribe_options_t;

/* Subscribes fn(self, event, user) to the events whose topic matches
 * `pattern` (see "Topics"; copied).  `options` NULL: a global listener, no
 * user_release.  A scoped listener is set in the calling thread's current
 * context (which is created if the thread has none): it is visible there
 * and in the copies made from now on.  A scoped subscribe also drops, from
 * the current context's list, the scoped listeners unsubscribed since.
 * If `out` is not NULL, *out receives a handle (one reference, released with
 * ctx_bus_listener_release; releasing it does not unsubscribe); with NULL
 * the listener stays until the bus shuts down (global) or its contexts die
 * (scoped).  Any thread, a listener too (see "Delivery and order").
 * Errors (fn is never called, user_release neither; user stays the
 * caller's; *out untouched): CTX_EINVAL (bus or fn NULL, unknown flags,
 * options with a wrong size), CTX_EPARSE (a malformed pattern: see
 * "Topics"), CTX_ENOMEM, CTX_ESHUTDOWN (the bus is shut down),
 * CTX_EFORKED. */
CTX_EXPORT int ctx_bus_subscribe(ctx_bus_t *bus, const char *pattern,
                                     ctx_bus_listener_fn fn, void *user,
                                     const ctx_bus_subscribe_options_t *options,
                                     ctx_bus_listener_t **out);

/* Unsubscribes the listener, wherever it is visible: from any thread and any
 * context, in or out of a listener (itself included), before or after the
 * bus shut down.  No delivery that reaches it after this returns calls it.
 * A call already running on another thread is not waited for (this may be
 * called from inside it); user_release tells when the listener can no longer
 * run.  Never allocates memory it cannot do without: a global listener is
 * dropped from the bus's list at once (or, if memory is short, skipped until
 * the next change of the list); a scoped one is marked, skipped by every
 * delivery, and dropped from a context's list at that context's next scoped
 * subscribe or when the context dies.
 * Returns 0, CTX_ENOTFOUND (already unsubscribed), CTX_EINVAL (NULL),
 * CTX_EFORKED (a listener of a bus made before fork()). */
CTX_EXPORT int ctx_bus_unsubscribe(ctx_bus_listener_t *listener);

/* 1 if a publish made now from the calling thread's current context would
 * reach the listener (its topic permitting): it is subscribed, the bus is
 * running, and it is global or scoped in a list the current context holds.
 * 0 otherwise (also for NULL).  Any thread. */
CTX_EXPORT int ctx_bus_listener_visible(const ctx_bus_listener_t *listener);

/* The pattern as subscribed ("*" for every event).  Borrowed: valid while
 * the handle is held.  NULL for NULL.  Any thread. */
CTX_EXPORT const char *ctx_bus_listener_pattern(const ctx_bus_listener_t *listener);

/* One more reference to the handle; returns `listener`.  Any thread. */
CTX_EXPORT ctx_bus_listener_t *ctx_bus_listener_retain(ctx_bus_listener_t *listener);

/* Drops a reference to the handle (NULL ignored).  Does not unsubscribe.
 * Any thread. */
CTX_EXPORT void ctx_bus_listener_release(ctx_bus_listener_t *listener);

/* ---------------------------------------------------------------------- */
/* Publishing                                                              */
/* ---------------------------------------------------------------------- */

/* Delivers `event` synchronously (see "Delivery and order"): each listener
 * of the snapshot whose pattern matches runs now, on the calling thread, in
 * its current context, before this returns.  The event is borrowed for the
 * call.  Never allocates.  Any thread; nested publishes from listeners are
 * allowed.
 * Returns the number of listeners called (failed ones included; 0 if none
 * matched), or CTX_ESHUTDOWN (the bus is shut down: nothing delivered),
 * CTX_EINVAL (bus or event NULL), CTX_EFORKED (nothing delivered). */
CTX_EXPORT int ctx_bus_publish(ctx_bus_t *bus, ctx_bus_event_t *event);

/* Delivers `event` asynchronously on `pool`: takes the snapshot now and
 * submits one pool task (CTX_POOL_PROPAGATE_COPY: a private copy of the calling
 * thread's current context, captured now) that calls the matching
 * listeners.  The bus keeps a reference to the event until that task's last
 * listener returned (or until the pool drops the task unrun: pool shutdown
 * with CTX_POOL_SHUTDOWN_CANCEL; then no listener runs and async_dropped
 * counts it).  If no listener matches, nothing is submitted.  Any thread.
 * Returns the number of listeners that matched at publish (a listener
 * unsubscribed before its turn is then skipped), or (nothing delivered,
 * nothing kept):
 *   CTX_ESHUTDOWN  the bus is shut down, or the pool is;
 *   CTX_EFULL      the pool's bounded queue is full (and it fails when full);
 *   CTX_ENOMEM;
 *   CTX_EINVAL     bus, event or pool NULL;
 *   CTX_EFORKED    the bus (or the pool) was made before fork();
 *   and the pool's other submit errors, if it has more. */
CTX_EXPORT int ctx_bus_publish_pool(ctx_bus_t *bus, ctx_bus_event_t *event,
                                        ctx_pool_t *pool);

/* Delivers `event` asynchronously on `loop`: takes the snapshot now and
 * schedules one callback (ctx_loop_call_soon_threadsafe: a private copy of
 * the calling thread's current context, captured now) that calls the
 * matching listeners on the loop thread.  The bus keeps a reference to the
 * event until that callback's last listener returned (or the loop closed
 * first: then no listener runs and async_dropped counts it).  If no listener
 * matches, nothing is scheduled.  Any thread, the loop thread included.
 * Defined only when the bus library is built with the loop module
 * (CTX_BUS_HAVE_LOOP).
 * Returns the number of listeners that matched at publish, or (nothing
 * delivered, nothing kept): CTX_ESHUTDOWN (the bus is shut down),
 * CTX_ECLOSED (the loop is closed or closing), CTX_ENOMEM, CTX_EINVAL (bus,
 * event or loop NULL), CTX_EFORKED (the bus or the loop was made before
 * fork()). */
CTX_EXPORT int ctx_bus_publish_loop(ctx_bus_t *bus, ctx_bus_event_t *event,
                                        ctx_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_BUS_H */
