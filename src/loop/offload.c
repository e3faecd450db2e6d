/*
 * offload.c — pool futures on the loop: ctx_loop_wrap_future (asyncio's
 * wrap_future), ctx_loop_run_in_pool (run_in_executor, with the context
 * propagated) and ctx_loop_task_offload (to_thread).
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
 */
#define _POSIX_C_SOURCE 200809L
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
} wrap_t;

static wrap_t *wrap_of(ctx_loop_future_t *f) { return (wrap_t *)(void *)f; }

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

/* A pending wrapped future with its keep-alive notice in place (the loop's
 * keepalive is not counted yet), or NULL. */
static wrap_t *wrap_new(ctx_loop_t *loop) {
    wrap_t *w = ctx__loop_calloc(sizeof *w);
    if (!w)
        return NULL;
    ctx__loop_future_init(&w->future, loop, CTX__LF_WRAP, NULL);
    w->keep.ops = &keep_ops;
    w->keep.heap_index = SIZE_MAX;
    ctx__loop_list_push(&w->future.callbacks, &w->keep);
    return w;
}

void ctx__wrap_destroy(ctx_loop_future_t *f) {
    wrap_t *w = wrap_of(f);
    ctx__loop_future_finalize(f);
    ctx_pool_future_release(w->pool_future);
    ctx__loop_free(w, sizeof *w);
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
    wrap_t *w = wrap_new(loop);
    if (!w)
        return CTX_ENOMEM;
    ctx_pool_submit_options_t submit = options ? *options : (ctx_pool_submit_options_t){0};
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
    ctx_pool_submit_options_t submit = options ? *options : (ctx_pool_submit_options_t){0};
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
