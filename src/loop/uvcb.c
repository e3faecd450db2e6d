/* SPDX-License-Identifier: MIT */
/*
 * uvcb.c — libuv's own callbacks, run in the context captured when the
 * handle or request was armed.
 *
 * A libuv callback gets the handle (or request) and libuv's arguments, and
 * the handle's `data` belongs to the program, so the captured context needs
 * a home of its own.  The home is a ctx_loop_uv_scope_t — one pointer, holding a
 * private copy of the context current at arming time — embedded next to the
 * libuv struct: the wrappers below put it in a struct whose first member is
 * the libuv handle, so libuv's callback pointer converts back to the
 * wrapper, and the user's callback still receives the plain handle.
 *
 *   ctx_loop_uv_timer_t ┌───────────┐  uv_timer_start(&t->timer, timer_trampoline)
 *                  │ timer     │◄── libuv calls timer_trampoline(&t->timer)
 *                  │ scope_    │    → enter scope_, call cb_(&t->timer), exit
 *                  │ cb_       │
 *                  └───────────┘
 *
 * Any other type goes through CTX_LOOP_UV_CALLBACK (loop.h), which generates the
 * same trampoline for a callback signature the caller names, around
 * ctx_loop_uv_scope_enter / ctx_loop_uv_scope_exit.
 *
 * The handle owns its copy like a task owns its context: every firing runs
 * in it, so firings see what earlier firings set and the arming code sees
 * none of it.  Entering retains the context for as long as it is entered,
 * so a callback may release or re-capture its own scope (a timer restarted
 * from its callback) without pulling the context from under itself.
 *
 * When the context is dropped: a one-shot timer after its callback (unless
 * the callback armed it again), a repeating timer at stop or close, an async
 * handle at close, a work request after its after-work callback — which may
 * free the request, so the trampoline takes the context out first.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

/* ---- scopes ---- */

int ctx_loop_uv_scope_capture(ctx_loop_uv_scope_t *scope) {
    if (!scope)
        return CTX_EINVAL;
    ctx_context_t *context;
    int r = ctx_context_copy_current(&context);
    if (r)
        return r;
    ctx_context_release(scope->context_);
    scope->context_ = context;
    return 0;
}

ctx_context_t *ctx_loop_uv_scope_enter(ctx_loop_uv_scope_t *scope) {
    if (!scope || !scope->context_)
        return NULL;
    ctx_context_t *context = scope->context_;
    return ctx_context_enter(context) == 0 ? context : NULL;
}

void ctx_loop_uv_scope_exit(ctx_context_t *entered) {
    if (entered)
        ctx_context_exit(entered);
}

void ctx_loop_uv_scope_release(ctx_loop_uv_scope_t *scope) {
    if (!scope)
        return;
    ctx_context_release(scope->context_);
    scope->context_ = NULL;
}

/* ---- timers ---- */

static void timer_trampoline(uv_timer_t *handle) {
    ctx_loop_uv_timer_t *t = (ctx_loop_uv_timer_t *)handle;
    ctx_context_t *entered = ctx_loop_uv_scope_enter(&t->scope_);
    t->cb_(handle);
    ctx_loop_uv_scope_exit(entered);
    /* A one-shot timer is over unless its callback started it again. */
    if (!uv_is_active((uv_handle_t *)handle))
        ctx_loop_uv_scope_release(&t->scope_);
}

int ctx_loop_uv_timer_init(uv_loop_t *loop, ctx_loop_uv_timer_t *timer) {
    if (!loop || !timer)
        return CTX_EINVAL;
    timer->scope_.context_ = NULL;
    timer->cb_ = NULL;
    return ctx__loop_uv_error(uv_timer_init(loop, &timer->timer));
}

int ctx_loop_uv_timer_start(ctx_loop_uv_timer_t *timer, uv_timer_cb cb, uint64_t timeout,
                       uint64_t repeat) {
    if (!timer || !cb)
        return CTX_EINVAL;
    ctx_loop_uv_scope_t fresh = CTX_LOOP_UV_SCOPE_INIT;
    int r = ctx_loop_uv_scope_capture(&fresh);
    if (r)
        return r;
    ctx_loop_uv_scope_t old = timer->scope_;
    uv_timer_cb old_cb = timer->cb_;
    timer->scope_ = fresh;
    timer->cb_ = cb;
    r = uv_timer_start(&timer->timer, timer_trampoline, timeout, repeat);
    if (r) {
        timer->scope_ = old;
        timer->cb_ = old_cb;
        ctx_loop_uv_scope_release(&fresh);
        return ctx__loop_uv_error(r);
    }
    ctx_loop_uv_scope_release(&old);
    return 0;
}

int ctx_loop_uv_timer_stop(ctx_loop_uv_timer_t *timer) {
    if (!timer)
        return CTX_EINVAL;
    uv_timer_stop(&timer->timer);
    ctx_loop_uv_scope_release(&timer->scope_);
    return 0;
}

void ctx_loop_uv_timer_close(ctx_loop_uv_timer_t *timer, uv_close_cb close_cb) {
    if (!timer)
        return;
    ctx_loop_uv_scope_release(&timer->scope_);
    uv_close((uv_handle_t *)&timer->timer, close_cb);
}

/* ---- async handles ---- */

static void async_trampoline(uv_async_t *handle) {
    ctx_loop_uv_async_t *a = (ctx_loop_uv_async_t *)handle;
    ctx_context_t *entered = ctx_loop_uv_scope_enter(&a->scope_);
    a->cb_(handle);
    ctx_loop_uv_scope_exit(entered);
}

int ctx_loop_uv_async_init(uv_loop_t *loop, ctx_loop_uv_async_t *async, uv_async_cb cb) {
    if (!loop || !async || !cb)
        return CTX_EINVAL;
    async->scope_.context_ = NULL;
    async->cb_ = cb;
    int r = ctx_loop_uv_scope_capture(&async->scope_);
    if (r)
        return r;
    r = uv_async_init(loop, &async->async, async_trampoline);
    if (r) {
        ctx_loop_uv_scope_release(&async->scope_);
        return ctx__loop_uv_error(r);
    }
    return 0;
}

void ctx_loop_uv_async_close(ctx_loop_uv_async_t *async, uv_close_cb close_cb) {
    if (!async)
        return;
    ctx_loop_uv_scope_release(&async->scope_);
    uv_close((uv_handle_t *)&async->async, close_cb);
}

/* ---- work requests ---- */

static void work_trampoline(uv_work_t *req) {
    ctx_loop_uv_work_t *w = (ctx_loop_uv_work_t *)req;
    ctx_context_t *entered = ctx_loop_uv_scope_enter(&w->scope_);
    w->work_cb_(req);
    ctx_loop_uv_scope_exit(entered);
}

static void after_work_trampoline(uv_work_t *req, int status) {
    ctx_loop_uv_work_t *w = (ctx_loop_uv_work_t *)req;
    ctx_loop_uv_scope_t scope = w->scope_; /* after_cb may free the request */
    uv_after_work_cb after_cb = w->after_cb_;
    w->scope_.context_ = NULL;
    if (after_cb) {
        ctx_context_t *entered = ctx_loop_uv_scope_enter(&scope);
        after_cb(req, status);
        ctx_loop_uv_scope_exit(entered);
    }
    ctx_loop_uv_scope_release(&scope);
}

int ctx_loop_uv_queue_work(uv_loop_t *loop, ctx_loop_uv_work_t *work, uv_work_cb work_cb,
                      uv_after_work_cb after_cb) {
    if (!loop || !work || !work_cb)
        return CTX_EINVAL;
    work->scope_.context_ = NULL;
    work->work_cb_ = work_cb;
    work->after_cb_ = after_cb;
    int r = ctx_loop_uv_scope_capture(&work->scope_);
    if (r)
        return r;
    r = uv_queue_work(loop, &work->req, work_trampoline, after_work_trampoline);
    if (r) {
        ctx_loop_uv_scope_release(&work->scope_);
        return ctx__loop_uv_error(r);
    }
    return 0;
}
