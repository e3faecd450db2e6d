/* SPDX-License-Identifier: MIT */
/*
 * call.c — call_soon, call_later, call_at, call_soon_threadsafe, and the
 * handles they return (asyncio's Handle and TimerHandle).
 *
 * A handle is one allocation holding the record the loop queues, the
 * callback, its arg and arg_release, and the context captured at
 * scheduling: a ctx_capture_t inside the handle (ctx_capture_current: O(1),
 * no allocation of its own, the same map root shared) or the caller's
 * explicit context, retained.  The callback runs inside it with
 * ctx_capture_run_exclusive (only the loop thread reaches a handle while it
 * runs, so its entered flag needs no locked instruction) or
 * ctx_context_run; no second copy is made, because the
 * captured copy is already private to this one callback — exactly what asyncio does (Handle keeps
 * copy_context() and calls self._context.run).  An explicit context is run
 * as is, so sets made by the callback land in it, again as in asyncio.
 * Done-callbacks of futures (future.c) are handles too, with a different
 * function type.
 *
 * The common case needs none of that: a call whose caller asked for no
 * handle and set no option can be neither cancelled nor inspected, and runs
 * once.  It becomes a smaller record of its own (call_rec_t, below),
 * with the scheduler's values as a ctx_snapshot_t run in a context made for
 * that one run.  It shares the ready queue with every other record, so the
 * order of callbacks is the order of the calls, whichever record each is.
 *
 * State (atomic, one transition out of SCHEDULED):
 *
 *     SCHEDULED ──run──► RUNNING ──► DONE
 *         └──cancel / drop──► CANCELLED
 *
 * Cancellation scopes (ctxvar/cancel.h): when a call record (not a
 * done-callback) reaches the head of the ready queue, the scope of the
 * context it would run in is asked first; if it is cancelled, or its
 * deadline has passed, the handle goes to CANCELLED instead of RUNNING and
 * only its arg_release runs.  A captured context's scope is the one current
 * at scheduling (a cache probe then; the handle keeps a reference), so the
 * check is one atomic load (and a clock read for a scope with a deadline),
 * nothing for a callback without a scope; an explicit context's scope is
 * looked up when the callback is due (the context may change meanwhile).
 *
 * Cancelling releases the context and calls arg_release at once.  A
 * cancelled handle still in the ready queue or the inbox stays there until
 * the loop reaches it and only drops its reference; one in the timer heap
 * is taken out (O(log n)) so it frees its memory now.
 *
 * References: the place the record is in (ready queue, heap, inbox, a
 * future's list) holds one; a caller that asked for the handle holds
 * another, and then the handle also keeps the loop's memory alive, so
 * ctx_loop_handle_cancel on a released loop is still safe.  Fire-and-forget
 * handles (the common case, and the hot path) have no holder but the place
 * they are in: nobody can cancel them, so their state and count change on
 * one thread at a time and need no atomic read-modify-write; nor do they
 * touch the loop's reference count: they never outlive the loop's open
 * state (close drops them all).
 *
 * Recycling.  A handle that ran on the loop thread goes to the loop's
 * spare handles, and a handle made on the loop thread comes from there when
 * it can (loop_internal.h, "spares"): handles are too large for the
 * allocator's per-thread caches, and a loop that schedules as much as it
 * runs stops calling the allocator for them.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

/* ---- memory: the allocator, or the loop's spares on the loop thread ---- */

static ctx_loop_handle_t *handle_alloc(ctx_loop_t *loop, int on_loop, int *spare) {
    return ctx__loop_spare_take_from(&loop->spare_handles, on_loop, spare);
}

/* Frees `h` (whose context is gone); `on_loop`: on the loop thread. */
static void handle_free(ctx_loop_handle_t *h, int on_loop) {
    ctx_loop_t *loop = h->loop;
    int holds_loop = h->holds_loop;
    ctx__loop_spare_give(&loop->spare_handles, h, on_loop && !ctx__loop_closing(loop));
    if (holds_loop)
        ctx_loop_release(loop);
}

/* Drops the place's (or a holder's) reference; the last frees. */
static void handle_unref(ctx_loop_handle_t *h, int on_loop) {
    /* A handle nobody was given has one reference, the place's: no atomic. */
    if (h->holds_loop && atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
        return;
    handle_free(h, on_loop);
}

/* What a handle gives back once it ran or will never run. */
static void handle_finish(ctx_loop_handle_t *h) {
    if (h->context)
        ctx_context_release(h->context);
    else
        ctx_capture_clear(&h->capture);
    h->context = NULL;
    ctx_cancel_scope_release(h->scope);
    h->scope = NULL;
    if (h->arg_release)
        h->arg_release(h->arg);
    if (h->future) {
        ctx_loop_future_release(h->future);
        h->future = NULL;
    }
}

static void *call_trampoline(void *p) {
    ctx_loop_handle_t *h = p;
    if (h->fn)
        h->fn(h->arg);
    else
        h->done_fn(h->future, h->arg);
    return NULL;
}

/* 1 if a call record must not run because the scope of the context it
 * would run in is cancelled (or past its deadline).  Done-callbacks always
 * run: they report an outcome, they do not start work. */
static int scope_stops(ctx_loop_handle_t *h) {
    if (!h->fn)
        return 0;
    if (!h->context) /* a capture: its scope was taken with it */
        return h->scope && ctx__loop_scope_poll(h->scope) != 0;
    ctx_cancel_scope_t *scope = NULL; /* an explicit context's, as it is now */
    if (ctx_cancel_scope_get(h->context, &scope) != 0)
        return 0;
    int err = ctx__loop_scope_poll(scope);
    ctx_cancel_scope_release(scope);
    return err != 0;
}

/* The scope of the calling thread's current context, retained, or NULL: a
 * capture's or a snapshot's scope is the one current when it was taken (a
 * cache probe). */
static ctx_cancel_scope_t *scope_now(void) {
    ctx_cancel_scope_t *scope = NULL;
    return ctx_cancel_scope_current(&scope) == 0 ? ctx_cancel_scope_retain(scope) : NULL;
}

/* Tells the loop's error handler what a callback's run returned, if not 0. */
static void report_run(ctx_loop_t *loop, int r) {
    if (r == CTX_ENOTCURRENT) /* the core keeps the callback's own contexts entered */
        ctx__loop_report(loop, r, "a callback returned with a context of its own still entered");
    else if (r)
        ctx__loop_report(loop, r, "a callback could not enter its context and was skipped");
}

static void handle_run(ctx__loop_rec_t *rec) {
    ctx_loop_handle_t *h = CTX__CONTAINER(rec, ctx_loop_handle_t, rec);
    /* A callback whose scope is cancelled ends as if cancelled: it never
     * runs, its arg_release does. */
    int next = scope_stops(h) ? CTX__H_CANCELLED : CTX__H_RUNNING;
    /* Only a handle that was given out can have been cancelled; one nobody
     * holds changes state on this thread alone. */
    int expected = CTX__H_SCHEDULED;
    if (!h->holds_loop)
        atomic_store_explicit(&h->state, next, memory_order_relaxed);
    else if (!atomic_compare_exchange_strong_explicit(&h->state, &expected, next,
                                                      memory_order_acq_rel, memory_order_acquire)) {
        handle_unref(h, 1); /* cancelled: finished already */
        return;
    }
    if (next == CTX__H_CANCELLED) {
        handle_finish(h);
        handle_unref(h, 1);
        return;
    }
    report_run(h->loop, h->context ? ctx_context_run(h->context, call_trampoline, h, NULL)
                                   : ctx_capture_run_exclusive(&h->capture, call_trampoline, h, NULL));
    /* (A memory order that is not a constant compiles to the strongest:
     * spell each out.) */
    if (h->holds_loop)
        atomic_store_explicit(&h->state, CTX__H_DONE, memory_order_release);
    else
        atomic_store_explicit(&h->state, CTX__H_DONE, memory_order_relaxed);
    handle_finish(h);
    handle_unref(h, 1);
}

static void handle_drop(ctx__loop_rec_t *rec) {
    ctx_loop_handle_t *h = CTX__CONTAINER(rec, ctx_loop_handle_t, rec);
    int expected = CTX__H_SCHEDULED;
    if (atomic_compare_exchange_strong_explicit(&h->state, &expected, CTX__H_CANCELLED,
                                                memory_order_acq_rel, memory_order_acquire))
        handle_finish(h);
    else if (h->future) { /* a cancelled done-callback scheduled later */
        ctx_loop_future_release(h->future);
        h->future = NULL;
    }
    handle_unref(h, 0);
}

static void done_scheduled(ctx__loop_rec_t *rec, ctx_loop_future_t *future) {
    ctx_loop_handle_t *h = CTX__CONTAINER(rec, ctx_loop_handle_t, rec);
    h->future = ctx_loop_future_retain(future);
}

static const ctx__loop_rec_ops_t call_ops = {handle_run, handle_drop, NULL};
static const ctx__loop_rec_ops_t done_ops = {handle_run, handle_drop, done_scheduled};

ctx_loop_handle_t *ctx__loop_handle_new(ctx_loop_t *loop, int on_loop, ctx_loop_callback_fn fn,
                                        ctx_loop_future_done_fn done_fn, void *arg,
                                        const ctx_loop_call_options_t *options, int *err) {
    int spare;
    ctx_loop_handle_t *h = handle_alloc(loop, on_loop, &spare);
    if (!h) {
        *err = CTX_ENOMEM;
        return NULL;
    }
    h->spare = spare;
    ctx_context_t *context = NULL;
    ctx_cancel_scope_t *scope = NULL;
    if (options && options->context) {
        context = ctx_context_retain(options->context);
    } else {
        ctx_capture_current(&h->capture);
        if (fn)
            scope = scope_now();
    }
    h->scope = scope;
    h->rec.next = NULL;
    h->rec.ops = fn ? &call_ops : &done_ops;
    h->rec.when = h->rec.seq = 0;
    h->rec.heap_index = SIZE_MAX;
    h->loop = loop;
    h->holds_loop = 0;
    h->fn = fn;
    h->done_fn = done_fn;
    h->arg = arg;
    h->arg_release = options ? options->arg_release : NULL;
    h->context = context;
    h->future = NULL;
    h->when = 0;
    atomic_init(&h->refs, 1);
    atomic_init(&h->state, CTX__H_SCHEDULED);
    return h;
}

void ctx__loop_handle_discard(ctx_loop_handle_t *h) {
    if (h->context)
        ctx_context_release(h->context);
    else
        ctx_capture_clear(&h->capture);
    ctx_cancel_scope_release(h->scope);
    if (h->future)
        ctx_loop_future_release(h->future);
    ctx_loop_t *loop = h->loop;
    int holds_loop = h->holds_loop;
    ctx__loop_spare_undo(&loop->spare_handles, h, h->spare); /* as it was */
    if (holds_loop)
        ctx_loop_release(loop);
}

/* Hands a reference to the caller (before the record is scheduled). */
static void give_out(ctx_loop_handle_t *h, ctx_loop_handle_t **out) {
    if (!out)
        return;
    atomic_store_explicit(&h->refs, 2, memory_order_relaxed);
    h->holds_loop = 1;
    ctx_loop_retain(h->loop);
}

/* ---- fire-and-forget calls: the common case, a record of their own ---- */

/* ctx_loop_call_soon, call_later, call_at or call_soon_threadsafe without
 * a handle asked for, an explicit context or an arg_release: nobody can
 * cancel it or ask about it, so it needs none of a handle's state,
 * reference count or loop reference, nor a context of its own: its
 * callback runs once, in a copy nobody else can see, which is what a
 * snapshot's run is (ctxvar.h).  The record is the queue's record (the
 * timer heap's and the inbox's too), the callback, the snapshot and the
 * scope current at scheduling: 96 bytes where a handle is 232, which
 * matters when a loop has thousands waiting.  It ends in one of two ways:
 * run (its memory then goes back to the spares) or dropped by a closing
 * loop (on whichever thread drops it). */
typedef struct call_rec {
    ctx__loop_rec_t rec;
    ctx_loop_t *loop;
    ctx_loop_callback_fn fn;
    void *arg;
    ctx_cancel_scope_t *scope; /* the scope current at scheduling, or NULL */
    ctx_snapshot_t values;     /* the scheduler's values (emptied by the run) */
} call_rec_t;

size_t ctx__loop_call_size(void) { return sizeof(call_rec_t); }

/* Gives back the scope and the memory of a record whose snapshot is empty
 * (run, or cleared). */
static void call_rec_end(call_rec_t *c, int on_loop) {
    if (c->scope)
        ctx_cancel_scope_release(c->scope);
    ctx_loop_t *loop = c->loop;
    ctx__loop_spare_give(&loop->spare_calls, c, on_loop && !ctx__loop_closing(loop));
}

static void *call_rec_trampoline(void *p) {
    call_rec_t *c = p;
    c->fn(c->arg);
    return NULL;
}

static void call_rec_run(ctx__loop_rec_t *rec) {
    call_rec_t *c = CTX__CONTAINER(rec, call_rec_t, rec);
    /* A cancelled scope: the callback never runs (it has no arg_release). */
    if (!c->scope || ctx__loop_scope_poll(c->scope) == 0) {
        int r = ctx_snapshot_run(&c->values, call_rec_trampoline, c, NULL);
        if (r) /* full still if fn was not called; clearing an empty one is free */
            ctx_snapshot_clear(&c->values);
        report_run(c->loop, r);
    } else {
        ctx_snapshot_clear(&c->values);
    }
    call_rec_end(c, 1);
}

static void call_rec_drop(ctx__loop_rec_t *rec) {
    call_rec_t *c = CTX__CONTAINER(rec, call_rec_t, rec);
    ctx_snapshot_clear(&c->values);
    call_rec_end(c, 0);
}

static const ctx__loop_rec_ops_t call_rec_ops = {call_rec_run, call_rec_drop, NULL};

/* A fire-and-forget call of fn(arg) in the calling thread's context, not
 * yet placed: from the loop's spares on the loop thread (`on_loop`), else
 * from the allocator; *spare says which.  NULL: CTX_ENOMEM. */
static call_rec_t *call_rec_new(ctx_loop_t *loop, int on_loop, ctx_loop_callback_fn fn, void *arg,
                                int *spare) {
    call_rec_t *c = ctx__loop_spare_take_from(&loop->spare_calls, on_loop, spare);
    if (!c)
        return NULL;
    c->loop = loop;
    c->fn = fn;
    c->arg = arg;
    c->rec.ops = &call_rec_ops;
    ctx_snapshot_current(&c->values);
    c->scope = scope_now();
    return c;
}

/* Undoes call_rec_new for a call that failed: nothing changed. */
static void call_rec_discard(call_rec_t *c, int spare) {
    ctx_snapshot_clear(&c->values);
    ctx_cancel_scope_release(c->scope);
    ctx__loop_spare_undo(&c->loop->spare_calls, c, spare);
}

/* Loop thread, loop open: schedules a fire-and-forget call, now (`timed`
 * 0) or at `when` (timer heap).  0 or CTX_ENOMEM (nothing changed). */
static int call_rec_schedule(ctx_loop_t *loop, ctx_loop_callback_fn fn, void *arg, int timed,
                             uint64_t when) {
    int spare;
    call_rec_t *c = call_rec_new(loop, 1, fn, arg, &spare);
    if (!c)
        return CTX_ENOMEM;
    if (!timed) {
        ctx__loop_ready_push(loop, &c->rec);
        return 0;
    }
    int err = ctx__loop_timer_add(loop, &c->rec, when);
    if (err)
        call_rec_discard(c, spare);
    return err;
}

/* No handle asked for and no option set: a fire-and-forget call. */
static int fire_and_forget(const ctx_loop_call_options_t *options, ctx_loop_handle_t **handle) {
    return !handle && (!options || (!options->context && !options->arg_release));
}

int ctx_loop_call_soon(ctx_loop_t *loop, ctx_loop_callback_fn fn, void *arg,
                       const ctx_loop_call_options_t *options, ctx_loop_handle_t **handle) {
    if (!loop || !fn)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    ctx_loop_call_options_t local;
    int err = ctx__loop_call_options_in(options, &local, &options);
    if (err)
        return err;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    if (fire_and_forget(options, handle))
        return call_rec_schedule(loop, fn, arg, 0, 0);
    ctx_loop_handle_t *h = ctx__loop_handle_new(loop, 1, fn, NULL, arg, options, &err);
    if (!h)
        return err;
    if (handle) /* only a holder can ask (ctx_loop_handle_when) */
        h->when = uv_now(loop->uv);
    give_out(h, handle);
    ctx__loop_ready_push(loop, &h->rec);
    if (handle)
        *handle = h;
    return 0;
}

int ctx_loop_call_at(ctx_loop_t *loop, uint64_t when_ms, ctx_loop_callback_fn fn, void *arg,
                     const ctx_loop_call_options_t *options, ctx_loop_handle_t **handle) {
    if (!loop || !fn)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    ctx_loop_call_options_t local;
    int err = ctx__loop_call_options_in(options, &local, &options);
    if (err)
        return err;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    if (fire_and_forget(options, handle))
        return call_rec_schedule(loop, fn, arg, 1, when_ms);
    ctx_loop_handle_t *h = ctx__loop_handle_new(loop, 1, fn, NULL, arg, options, &err);
    if (!h)
        return err;
    h->when = when_ms;
    err = ctx__loop_timer_add(loop, &h->rec, when_ms);
    if (err) {
        ctx__loop_handle_discard(h);
        return err;
    }
    give_out(h, handle);
    if (handle)
        *handle = h;
    return 0;
}

int ctx_loop_call_later(ctx_loop_t *loop, uint64_t delay_ms, ctx_loop_callback_fn fn, void *arg,
                        const ctx_loop_call_options_t *options, ctx_loop_handle_t **handle) {
    if (!loop || !fn)
        return CTX_EINVAL;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    uint64_t now = uv_now(loop->uv);
    uint64_t when = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
    return ctx_loop_call_at(loop, when, fn, arg, options, handle);
}

int ctx_loop_call_soon_threadsafe(ctx_loop_t *loop, ctx_loop_callback_fn fn, void *arg,
                                  const ctx_loop_call_options_t *options,
                                  ctx_loop_handle_t **handle) {
    if (!loop || !fn)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (atomic_load_explicit(&loop->closing, memory_order_acquire))
        return CTX_ECLOSED;
    if (ctx__loop_on_thread(loop))
        return ctx_loop_call_soon(loop, fn, arg, options, handle);
    ctx_loop_call_options_t local;
    int err = ctx__loop_call_options_in(options, &local, &options);
    if (err)
        return err;
    if (fire_and_forget(options, handle)) {
        int spare;
        call_rec_t *c = call_rec_new(loop, 0, fn, arg, &spare);
        if (!c)
            return CTX_ENOMEM;
        err = ctx__loop_post(loop, &c->rec);
        if (err)
            call_rec_discard(c, spare);
        return err;
    }
    ctx_loop_handle_t *h = ctx__loop_handle_new(loop, 0, fn, NULL, arg, options, &err);
    if (!h)
        return err;
    give_out(h, handle);
    err = ctx__loop_post(loop, &h->rec);
    if (err) {
        ctx__loop_handle_discard(h);
        return err;
    }
    if (handle)
        *handle = h;
    return 0;
}

int ctx_loop_handle_cancel(ctx_loop_handle_t *h) {
    if (!h)
        return CTX_EINVAL;
    if (ctx__loop_forked(h->loop))
        return CTX_EFORKED;
    int expected = CTX__H_SCHEDULED;
    if (!atomic_compare_exchange_strong_explicit(&h->state, &expected, CTX__H_CANCELLED,
                                                 memory_order_acq_rel, memory_order_acquire))
        return 0;
    handle_finish(h);
    if (h->rec.heap_index != SIZE_MAX) { /* still in the timer heap: free it now */
        ctx__loop_timer_remove(h->loop, &h->rec);
        handle_unref(h, 1);
    }
    return 1;
}

int ctx_loop_handle_cancelled(const ctx_loop_handle_t *h) {
    return h && atomic_load_explicit(&h->state, memory_order_acquire) == CTX__H_CANCELLED;
}

uint64_t ctx_loop_handle_when(const ctx_loop_handle_t *h) { return h ? h->when : 0; }

ctx_loop_handle_t *ctx_loop_handle_retain(ctx_loop_handle_t *h) {
    if (h)
        atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

void ctx_loop_handle_release(ctx_loop_handle_t *h) {
    if (h)
        handle_unref(h, 0);
}
