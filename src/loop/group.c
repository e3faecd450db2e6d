/* SPDX-License-Identifier: MIT */
/*
 * group.c — task groups (asyncio's TaskGroup, trio's nursery): a parent
 * task spawns children and waits for all of them; the first failure
 * cancels the others and is the outcome.
 *
 * A group is one allocation plus a cancellation scope and a plain loop
 * future:
 *
 *   scope    a child of the parent task's scope at creation (a root if
 *            it has none).  Every child runs in a copy of the parent's
 *            context with this scope set (ctx_cancel_context_set), so the
 *            loop's own rules stop it (task.c: the scope's error at its
 *            next step, its sleep or awaited future abandoned at once).
 *            Cancelling the parent's scope cancels it as a descendant.
 *   done     completed once the parent awaits the group and no child is
 *            pending: with the first failure, or 0.  The parent awaits it
 *            through ctx__task_await_group, which tells task.c that this
 *            wait must not be abandoned on the parent's cancellation (the
 *            parent waits for its children, which stop by the same scope)
 *            and that ctx_loop_task_cancel on the parent cancels the
 *            children rather than `done`.
 *
 * Accounting happens on the loop thread only: a child is counted in
 * `pending` when spawned and reports once, from task.c's end_task (after
 * its own future completed), with its state.  FAILED is a failure;
 * CANCELLED (CTX_ECANCELLED, CTX_EDEADLINE) is what the group's own
 * cancellation produces and never counts as one.  The first failure is
 * kept and cancels the scope with the failure's code as its cause.
 *
 * References: the creator holds one, each pending child one (taken over by
 * the task at spawn, dropped when it ends), a parent awaiting the group
 * one.  The group holds the parent task, the loop, the scope and `done`.
 * Every reference is dropped on the loop thread, except that a closing
 * loop may end children anywhere its drops run; the count is atomic.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

struct ctx_loop_task_group {
    atomic_uint refs;
    ctx_loop_t *loop;          /* retained */
    ctx_loop_task_t *parent;   /* retained */
    ctx_cancel_scope_t *scope; /* retained */
    ctx_loop_future_t *done;   /* ours */
    size_t pending;            /* children not ended */
    int error;                 /* the first failure, 0 if none */
    int awaited;               /* the parent awaits `done` */
    int released;              /* the creator let go */
};

void ctx__task_group_retain(ctx_loop_task_group_t *g) {
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void ctx__task_group_unref(ctx_loop_task_group_t *g) {
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    ctx_loop_t *loop = g->loop;
    ctx_loop_future_release(g->done);
    ctx_cancel_scope_release(g->scope);
    ctx_loop_task_release(g->parent);
    ctx__loop_free(g, sizeof *g);
    ctx_loop_release(loop);
}

/* Completes `done` once the parent awaits and nobody is pending. */
static void maybe_finish(ctx_loop_task_group_t *g) {
    if (!g->awaited || g->pending || ctx_loop_future_done(g->done))
        return;
    if (g->error)
        (void)ctx_loop_future_set_error(g->done, g->error);
    else
        (void)ctx_loop_future_set_result(g->done, NULL);
}

void ctx__task_group_child_ended(ctx_loop_task_group_t *g, int state, int error) {
    g->pending--;
    if (state == CTX_LOOP_FUTURE_FAILED && g->error == 0) {
        g->error = error;
        ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
        cause.code = error;
        (void)ctx_cancel_scope_cancel(g->scope, &cause); /* siblings stop */
    }
    maybe_finish(g);
    ctx__task_group_unref(g); /* the child's */
}

void ctx__task_group_cancel_children(ctx_loop_task_group_t *g) {
    (void)ctx_cancel_scope_cancel(g->scope, NULL);
}

int ctx_loop_task_group_new(ctx_loop_task_t *parent, ctx_loop_task_group_t **out) {
    if (!parent || !out)
        return CTX_EINVAL;
    ctx_loop_future_t *pf = ctx_loop_task_future(parent);
    ctx_loop_t *loop = ctx_loop_future_loop(pf);
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (ctx_loop_future_done(pf))
        return CTX_EINVAL;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    ctx_loop_task_group_t *g = ctx__loop_calloc(sizeof *g);
    if (!g)
        return CTX_ENOMEM;
    ctx_cancel_scope_t *parent_scope = NULL; /* the parent's context's, now */
    if (ctx_cancel_scope_get(ctx_loop_task_context(parent), &parent_scope) != 0)
        parent_scope = NULL;
    int r = ctx_cancel_scope_new(parent_scope, NULL, &g->scope);
    ctx_cancel_scope_release(parent_scope);
    if (r == 0) {
        r = ctx_loop_future_new(loop, NULL, &g->done);
        if (r != 0)
            ctx_cancel_scope_release(g->scope);
    }
    if (r != 0) {
        ctx__loop_free(g, sizeof *g);
        return r;
    }
    atomic_init(&g->refs, 1);
    g->loop = ctx_loop_retain(loop);
    g->parent = ctx_loop_task_retain(parent);
    *out = g;
    return 0;
}

/* The child's context: a copy of `src` with the group's scope.  0 or the
 * error (nothing kept). */
static int child_context(ctx_loop_task_group_t *g, ctx_context_t *src, ctx_context_t **out) {
    ctx_context_t *ctx = NULL;
    int r = ctx_context_copy(src, &ctx);
    if (r != 0)
        return r;
    r = ctx_cancel_context_set(ctx, g->scope);
    if (r != 0) {
        ctx_context_release(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

int ctx_loop_task_group_spawn(ctx_loop_task_group_t *g, ctx_loop_task_step_fn step, void *arg,
                              const ctx_loop_task_options_t *options, ctx_loop_task_t **out) {
    if (!g || !step)
        return CTX_EINVAL;
    if (ctx__loop_forked(g->loop))
        return CTX_EFORKED;
    ctx_loop_task_options_t o = CTX_STRUCT_INIT(ctx_loop_task_options_t);
    if (options && ctx__struct_in(&o, sizeof o, options, CTX__LOOP_TASK_OPTIONS_V1) != 0)
        return CTX_EINVAL;
    int err = ctx_cancel_scope_error(g->scope);
    if (err)
        return err; /* a stopped group takes no more children */
    if (ctx__loop_closing(g->loop))
        return CTX_ECLOSED;
    ctx_context_t *ctx = NULL;
    err = child_context(g, o.context ? o.context : ctx_loop_task_context(g->parent), &ctx);
    if (err)
        return err;
    o.context = ctx;
    ctx__task_group_retain(g); /* the child's, if it is made */
    err = ctx__task_new(g->loop, step, arg, &o, g, out);
    ctx_context_release(ctx); /* the task holds it, or it goes */
    if (err) {
        ctx__task_group_unref(g);
        return err;
    }
    g->pending++;
    return 0;
}

int ctx_loop_task_group_await(ctx_loop_task_t *parent, ctx_loop_task_group_t *g) {
    if (!parent || !g)
        return CTX_EINVAL;
    if (ctx__loop_forked(g->loop))
        return CTX_EFORKED;
    if (parent != g->parent)
        return CTX_EINVAL;
    int r = ctx__task_await_group(parent, g->done, g);
    if (r != CTX_LOOP_TASK_WAIT)
        return r;
    g->awaited = 1;
    maybe_finish(g); /* nobody pending: the parent's next step comes at once */
    return r;
}

int ctx_loop_task_group_cancel(ctx_loop_task_group_t *g) {
    if (!g)
        return CTX_EINVAL;
    return ctx_cancel_scope_cancel(g->scope, NULL);
}

ctx_cancel_scope_t *ctx_loop_task_group_scope(const ctx_loop_task_group_t *g) {
    return g ? g->scope : NULL;
}

size_t ctx_loop_task_group_pending(const ctx_loop_task_group_t *g) { return g ? g->pending : 0; }

void ctx_loop_task_group_release(ctx_loop_task_group_t *g) {
    if (!g)
        return;
    if (!g->released) {
        g->released = 1;
        if (g->pending)
            (void)ctx_cancel_scope_cancel(g->scope, NULL);
    }
    ctx__task_group_unref(g);
}
