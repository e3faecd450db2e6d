/* SPDX-License-Identifier: MIT */
/*
 * offload.c — work handed to a pool from the loop: ctx_loop_wrap_future
 * (asyncio's wrap_future), ctx_loop_run_in_pool (run_in_executor, with the
 * context propagated), ctx_loop_task_offload (to_thread) and
 * ctx_loop_offload (uv_queue_work).
 *
 * A *wrapped* future is a loop future that follows a pool future and keeps
 * it alive (its result is borrowed from there):
 *
 *   wrap_t ┌──────────────────────┐
 *          │ future (first)       │ kind WRAP
 *          │ keep (a record)      │ first in the future's callback list:
 *          │                      │ when the future is done it runs on the
 *          │                      │ loop and drops the loop's keepalive
 *          │ pool_future          │ retained
 *          │ fn, arg, ran, rc ... │ run_in_pool's trampoline state
 *          └──────────────────────┘
 *
 * Two ways to learn the pool future's outcome:
 *
 *   wrap_future     ctx_pool_future_add_done_callback on the pool future: the
 *                   callback completes the loop future on whichever thread
 *                   ended the pool future (a worker, or a cancelling thread).
 *   run_in_pool     the pool runs our trampoline (which calls fn and keeps
 *                   its return) and our arg_release (which the pool calls
 *                   exactly once, after the trampoline returned or instead
 *                   of it when the task was cancelled while queued):
 *                   arg_release calls the caller's arg_release and completes
 *                   the loop future.  This way nothing can fail after the
 *                   submit succeeded (an add_done_callback could, with
 *                   CTX_ENOMEM, when fn is already on its way), and no extra
 *                   context copy is made for a callback.
 *
 * Either way the completion comes from another thread, so it goes through
 * the loop's inbox; the keepalive counted for the wrapped future keeps
 * uv_run from returning while the pool works.
 *
 * Cancelling the loop future (for a task: cancelling the task that awaits
 * it) cancels the pool future too: a queued fn never runs, a running one
 * sees ctx_pool_task_cancelled().  The loop future is cancelled at once; a late
 * completion from the pool then finds it done and changes nothing.
 *
 * Result ownership stays the pool's: with a result_release in the submit
 * options the result is freed when the pool future dies (the wrapped future
 * releases it when it dies); without one, the code that reads the result
 * owns it.
 *
 * ctx_loop_offload: the hand-off without futures
 * ----------------------------------------------
 * A wrapped future is the general tool, and it is not free: per piece of
 * work a pool future, a loop future, its keep-alive notice and a
 * done-callback handle, a dozen reference-count updates, two records run on
 * the loop.  A server that offloads one step per request only wants
 * libuv's uv_queue_work — work on a thread, then a callback on the loop —
 * with the contexts carried.  ctx_loop_offload is that, with one record
 * (from the loop's spares) making the round trip:
 *
 *   loop thread                  pool worker                  loop thread
 *   ──────────────────────────   ──────────────────────────   ─────────────────
 *   capture the context (O(1)) ─► fn(arg) in the pool's copy ─► (inbox, lock-free)
 *   keepalive +1, submit with     our arg_release: post the    done(arg, rc,
 *   no future (the pool's         record to the loop's inbox   result) in the
 *   allocation-free path)         (dropped there if the loop   capture; arg_release;
 *                                 closed)                      record → spares
 *
 * Nothing is shared with other records or futures, so the record needs no
 * reference count: the pool owns it from the submit until its arg_release,
 * then the inbox, then the loop thread.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/common.h"
#include "loop/loop_internal.h"

typedef struct wrap {
    ctx_loop_future_t future; /* first */
    ctx__loop_rec_t keep;
    int keep_held;            /* `keep` holds a reference to the future */
    ctx_pool_future_t *pool_future;
    ctx_pool_task_fn fn;
    void *arg;
    void (*arg_release)(void *arg);
    int ran;
    int rc;
    void *result;
    int spare;  /* the record came from the loop's spares */
    int failed; /* made by a call that then failed: put back as it was */
} wrap_t;

static wrap_t *wrap_of(ctx_loop_future_t *f) { return (wrap_t *)(void *)f; }


/* The caller's submit options (NULL: the defaults) read by the growth rule
 * (docs/api-rules.md): a struct from an older or newer header is accepted
 * as the pool would accept it.  0 or CTX_EINVAL. */
static int read_submit_options(const ctx_pool_submit_options_t *options,
                               ctx_pool_submit_options_t *out) {
    *out = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    if (options && ctx__struct_in(out, sizeof *out, options, sizeof(ctx_pool_submit_options_t)))
        return CTX_EINVAL;
    return 0;
}

/* ---- the keep-alive notice ---- */

static void keep_release(wrap_t *w) {
    if (w->keep_held) {
        w->keep_held = 0;
        ctx_loop_future_release(&w->future);
    }
}

static void keep_run(ctx__loop_rec_t *rec) {
    wrap_t *w = CTX__CONTAINER(rec, wrap_t, keep);
    ctx__loop_keepalive(w->future.loop, -1);
    keep_release(w);
}

static void keep_drop(ctx__loop_rec_t *rec) { keep_release(CTX__CONTAINER(rec, wrap_t, keep)); }

static void keep_scheduled(ctx__loop_rec_t *rec, ctx_loop_future_t *f) {
    wrap_t *w = CTX__CONTAINER(rec, wrap_t, keep);
    ctx_loop_future_retain(f);
    w->keep_held = 1;
}

static const ctx__loop_rec_ops_t keep_ops = {keep_run, keep_drop, keep_scheduled};

size_t ctx__loop_wrap_size(void) { return sizeof(wrap_t); }

/* A pending wrapped future with its keep-alive notice in place (the loop's
 * keepalive is not counted yet), or NULL.  Loop thread. */
static wrap_t *wrap_new(ctx_loop_t *loop) {
    int spare;
    wrap_t *w = ctx__loop_spare_take_from(&loop->spare_wraps, 1, &spare);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->spare = spare;
    ctx__loop_future_init(&w->future, loop, CTX__LF_WRAP, NULL);
    w->keep.ops = &keep_ops;
    w->keep.heap_index = SIZE_MAX;
    ctx__loop_list_push(&w->future.callbacks, &w->keep);
    return w;
}

void ctx__wrap_destroy(ctx_loop_future_t *f) {
    wrap_t *w = wrap_of(f);
    ctx_loop_t *loop = ctx__loop_future_finalize(f);
    ctx_pool_future_release(w->pool_future);
    if (w->failed)
        ctx__loop_spare_undo(&loop->spare_wraps, w, w->spare);
    else
        ctx__loop_spare_give(&loop->spare_wraps, w, ctx__loop_may_keep(loop));
    ctx_loop_release(loop);
}

void ctx__wrap_cancelled(ctx_loop_future_t *f) {
    wrap_t *w = wrap_of(f);
    if (w->pool_future)
        ctx_pool_future_cancel(w->pool_future);
}

/* Completes the wrapped future with a pool outcome (any thread). */
static void complete_with(wrap_t *w, int rc, void *result) {
    if (rc == 0)
        ctx__loop_future_complete(&w->future, CTX_LOOP_FUTURE_COMPLETED, 0, result);
    else if (rc == CTX_ECANCELLED)
        ctx__loop_future_complete(&w->future, CTX_LOOP_FUTURE_CANCELLED, CTX_ECANCELLED, NULL);
    else
        ctx__loop_future_complete(&w->future, CTX_LOOP_FUTURE_FAILED, rc, NULL);
}

/* ---- wrap_future ---- */

static void wrap_pool_done(ctx_pool_future_t *pool_future, void *user) {
    wrap_t *w = user;
    void *result = NULL;
    int rc = ctx_pool_future_result(pool_future, &result);
    complete_with(w, rc, result);
    ctx_loop_future_release(&w->future); /* the callback's */
}

int ctx_loop_wrap_future(ctx_loop_t *loop, ctx_pool_future_t *pool_future, ctx_loop_future_t **out) {
    if (!loop || !pool_future || !out)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    wrap_t *w = wrap_new(loop);
    if (!w)
        return CTX_ENOMEM;
    w->pool_future = ctx_pool_future_retain(pool_future);
    ctx_loop_future_retain(&w->future); /* for the pool's callback */
    ctx__loop_keepalive(loop, +1);
    int r = ctx_pool_future_add_done_callback(pool_future, wrap_pool_done, w);
    if (r) {
        ctx__loop_keepalive(loop, -1);
        w->failed = 1;
        ctx_loop_future_release(&w->future);
        ctx_loop_future_release(&w->future);
        return r;
    }
    *out = &w->future;
    return 0;
}

/* ---- run_in_pool ---- */

static int offload_trampoline(void *arg, void **result) {
    wrap_t *w = arg;
    w->ran = 1;
    w->rc = w->fn(w->arg, result);
    w->result = *result;
    return w->rc;
}

/* The pool is done with the task: it returned, or was cancelled unrun. */
static void offload_release(void *arg) {
    wrap_t *w = arg;
    if (w->arg_release)
        w->arg_release(w->arg);
    if (w->ran)
        complete_with(w, w->rc, w->rc == 0 ? w->result : NULL);
    else
        complete_with(w, CTX_ECANCELLED, NULL);
    ctx_loop_future_release(&w->future); /* the pool's */
}

int ctx_loop_run_in_pool(ctx_loop_t *loop, ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                         const ctx_pool_submit_options_t *options, ctx_loop_future_t **out) {
    if (!loop || !pool || !fn || !out)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    ctx_pool_submit_options_t submit;
    if (read_submit_options(options, &submit))
        return CTX_EINVAL;
    wrap_t *w = wrap_new(loop);
    if (!w)
        return CTX_ENOMEM;
    w->fn = fn;
    w->arg = arg;
    w->arg_release = submit.arg_release;
    submit.arg_release = offload_release;
    ctx_loop_future_retain(&w->future); /* the pool's, until offload_release */
    ctx__loop_keepalive(loop, +1);
    ctx_pool_future_t *pool_future = NULL;
    int r = ctx_pool_submit_ex(pool, offload_trampoline, w, &submit, &pool_future);
    if (r) {
        ctx__loop_keepalive(loop, -1);
        w->arg_release = NULL;
        w->failed = 1;
        ctx_loop_future_release(&w->future);
        ctx_loop_future_release(&w->future);
        return r;
    }
    w->pool_future = pool_future;
    *out = &w->future;
    return 0;
}

/* ---- to_thread ---- */

int ctx_loop_task_offload(ctx_loop_task_t *task, ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                     const ctx_pool_submit_options_t *options) {
    if (!pool || !fn || !ctx__task_can_arm(task))
        return CTX_EINVAL;
    ctx_loop_future_t *f = ctx_loop_task_future(task);
    ctx_pool_submit_options_t submit;
    if (read_submit_options(options, &submit))
        return CTX_EINVAL;
    if (submit.propagation == CTX_POOL_PROPAGATE_DEFAULT) {
        submit.propagation = CTX_POOL_PROPAGATE_CONTEXT;
        submit.context = ctx_loop_task_context(task);
    }
    ctx_loop_future_t *w;
    int r = ctx_loop_run_in_pool(f->loop, pool, fn, arg, &submit, &w);
    if (r)
        return r;
    r = ctx_loop_task_await(task, w); /* cannot fail: checked above */
    ctx_loop_future_release(w);
    return r;
}

/* ---- uv_queue_work: ctx_loop_offload ---- */

typedef struct offload {
    ctx__loop_rec_t rec; /* the way back, through the inbox */
    ctx_loop_t *loop;    /* retained */
    ctx_pool_task_fn fn;
    ctx_loop_offload_done_fn done;
    void *arg;
    void (*arg_release)(void *arg);
    void (*result_release)(void *result);
    void *result;
    int rc;
    int ran;
    ctx_capture_t capture; /* the context done runs in */
} offload_t;

size_t ctx__loop_offload_size(void) { return sizeof(offload_t); }

static void offload_free(offload_t *o, int on_loop) {
    ctx_loop_t *loop = o->loop;
    ctx_capture_clear(&o->capture);
    ctx__loop_spare_give(&loop->spare_offloads, o, on_loop && !ctx__loop_closing(loop));
    ctx_loop_release(loop);
}

static void *offload_done_trampoline(void *p) {
    offload_t *o = p;
    o->done(o->arg, o->rc, o->result);
    return NULL;
}

/* Loop thread: the work came back. */
static void offload_run(ctx__loop_rec_t *rec) {
    offload_t *o = CTX__CONTAINER(rec, offload_t, rec);
    ctx_loop_t *loop = o->loop;
    ctx__loop_keepalive(loop, -1);
    int r = ctx_capture_run_exclusive(&o->capture, offload_done_trampoline, o, NULL);
    if (r == CTX_ENOTCURRENT)
        ctx__loop_report(loop, r, "an offload's callback returned with a context of its own "
                                  "still entered");
    else if (r)
        ctx__loop_report(loop, r, "an offload's callback could not enter its context and was "
                                  "skipped");
    if (o->arg_release)
        o->arg_release(o->arg);
    offload_free(o, 1);
}

/* Any thread: the loop closed before the work came back. */
static void offload_drop(ctx__loop_rec_t *rec) {
    offload_t *o = CTX__CONTAINER(rec, offload_t, rec);
    if (o->ran && o->result_release)
        o->result_release(o->result);
    if (o->arg_release)
        o->arg_release(o->arg);
    offload_free(o, 0);
}

static const ctx__loop_rec_ops_t offload_ops = {offload_run, offload_drop, NULL};

/* A worker: the work itself. */
static int offload_work(void *arg, void **result) {
    (void)result; /* fire-and-forget: the pool keeps no result */
    offload_t *o = arg;
    o->ran = 1;
    o->rc = o->fn(o->arg, &o->result);
    return o->rc;
}

/* The pool is done with the work (it ran, or was dropped unrun): back to
 * the loop. */
static void offload_back(void *arg) {
    offload_t *o = arg;
    if (!o->ran) {
        o->rc = CTX_ECANCELLED;
        o->result = NULL;
    }
    if (ctx__loop_post(o->loop, &o->rec) != 0)
        offload_drop(&o->rec);
}

int ctx_loop_offload(ctx_loop_t *loop, ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                     ctx_loop_offload_done_fn done, const ctx_pool_submit_options_t *options) {
    if (!loop || !pool || !fn || !done)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    ctx_pool_submit_options_t submit;
    if (read_submit_options(options, &submit))
        return CTX_EINVAL;
    int spare;
    offload_t *o = ctx__loop_spare_take_from(&loop->spare_offloads, 1, &spare);
    if (!o)
        return CTX_ENOMEM;
    o->rec.next = NULL;
    o->rec.ops = &offload_ops;
    o->rec.heap_index = SIZE_MAX;
    o->loop = ctx_loop_retain(loop);
    o->fn = fn;
    o->done = done;
    o->arg = arg;
    o->arg_release = submit.arg_release;
    o->result_release = submit.result_release;
    o->result = NULL;
    o->rc = 0;
    o->ran = 0;
    ctx_capture_current(&o->capture);
    submit.arg_release = offload_back;
    submit.result_release = NULL;
    ctx__loop_keepalive(loop, +1);
    int r = ctx_pool_submit_ex(pool, offload_work, o, &submit, NULL);
    if (r) {
        ctx__loop_keepalive(loop, -1);
        ctx_capture_clear(&o->capture);
        ctx__loop_spare_undo(&loop->spare_offloads, o, spare);
        ctx_loop_release(loop);
        return r;
    }
    return 0;
}
