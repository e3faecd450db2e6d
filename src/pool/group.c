/* SPDX-License-Identifier: MIT */
/*
 * group.c — pool groups: Go's errgroup on the pool.
 *
 * What it is for
 * --------------
 * A request fans out into several pool tasks and wants them as one piece
 * of work: wait for all of them, and if one fails, stop the others and
 * report that failure.  Go's errgroup.WithContext does it with a context
 * that the first error cancels; here the group owns a cancellation scope
 * (src/cancel), a child of the scope current where the group was made, and
 * every task of the group runs in a context whose scope is the group's (or
 * a child of it: a task with a future has its own, executor.c), so one
 * ctx_cancel_check() in a task sees the group stopping, its parent's
 * cancellation and its deadline alike; a task still queued when the group
 * stops never starts (the worker's check, executor.c).
 *
 *     ctx_pool_group_t ┌───────────────────────────┐
 *                      │ refs (users + 1 per task) │
 *                      │ scope ──▶ child of the    │◀── each task's context
 *                      │           creator's scope │    holds it (or a child)
 *                      │ pending (tasks not ended) │
 *                      │ error (the first failure) │
 *                      │ lock, cond, waiters       │
 *                      └───────────────────────────┘
 *
 * A task reports twice, from whichever thread ends it (the worker, or one
 * that cancelled it while it was queued), with no pool lock held:
 *   ending   before its future ends: a failure is stored if it is the
 *            first (compare-and-swap from 0) and then cancels the scope, so
 *            the siblings are stopping before anyone waiting for this
 *            task's future wakes up;
 *   ended    after its future ended (arg_release and done-callbacks have
 *            run): `pending` drops, and the last one wakes the waiters.
 * A failure is a task that failed, or that ended cancelled for any reason
 * but a ctx_pool_future_cancel of its own future (asyncio's TaskGroup does
 * not count a child cancelled on its own as the group's failure); so when
 * the group is cancelled (ctx_pool_group_cancel, its parent, its deadline)
 * the first task stopped by it records CTX_ECANCELLED or CTX_EDEADLINE, and
 * a failure that came first keeps its place (its compare-and-swap came
 * before the cancellation it caused).
 *
 * Contexts.  A task's context is its submitter's with the group's scope
 * put in: a copy of the map with one more entry, i.e. a new root node and
 * an entry of its own per task — two allocations, freed on a worker.  Most
 * groups are fed from one context (a request fanning out), so the group
 * keeps a one-entry cache, the *template*: the last submitter's map and
 * the same map with the group's scope put in.  A COPY submit from a context
 * whose map is that one takes a reference to the template and allocates
 * nothing; another map replaces the template.  The template keeps that
 * map's values alive until it is replaced or the group goes (the group's
 * tasks share them anyway).
 *
 * Waiting is ctx__pool_block (future.c): until `pending` is 0, the timeout,
 * or the waiter's own scope is cancelled — cancellable like every wait of
 * the pool.
 *
 * Invariants
 * ----------
 * - `pending` counts submitted tasks whose `ended` has not run; a submit
 *   counts its task before queueing it and uncounts it if the submit fails.
 * - `error` changes once, from 0.
 * - The group outlives its tasks: each holds a reference until `ended`.
 */
#include "pool_internal.h"

#include "common/common.h"
#include "core/alloc.h"
#include "core/provider.h"

#include <pthread.h>
#include <string.h>

struct ctx_pool_group {
    atomic_size_t refs;        /* users + tasks */
    atomic_size_t users;       /* the creator's and retained references */
    ctx_pool_t *pool;          /* a reference to its memory */
    ctx_cancel_scope_t *scope; /* the group's own */
    atomic_size_t pending;     /* tasks submitted and not ended */
    atomic_int error;          /* the first failure; 0 while none */
    atomic_int waiters;        /* threads in ctx_pool_group_wait */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int monotonic;
    /* The template (see "Contexts" above), under `template_lock`: the map
     * it was made from (retained, so that its address cannot be reused for
     * another map while it is the key) and that map with the group's scope
     * put in (retained). */
    atomic_int template_lock;
    ctx__hamt_t template_from;
    ctx__hamt_t template;
};

ctx_cancel_scope_t *ctx__group_scope(const ctx_pool_group_t *group) { return group->scope; }

static void group_free(ctx_pool_group_t *g) {
    ctx__hamt_release(g->template_from, &ctx__box_ops);
    ctx__hamt_release(g->template, &ctx__box_ops);
    ctx_cancel_scope_release(g->scope);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    ctx_pool_t *pool = g->pool;
    ctx__free(g, sizeof *g);
    ctx__pool_release(pool);
}

static void group_unref(ctx_pool_group_t *g) {
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
        group_free(g);
}

int ctx_pool_group_new(ctx_pool_t *pool, const ctx_cancel_options_t *options,
                       ctx_pool_group_t **out) {
    if (!pool || !out)
        return CTX_EINVAL;
    if (ctx__pool_forked(pool))
        return CTX_EFORKED;
    ctx_pool_group_t *g = ctx__malloc(sizeof *g);
    if (!g)
        return CTX_ENOMEM;
    memset(g, 0, sizeof *g);
    if (pthread_mutex_init(&g->lock, NULL) != 0) {
        ctx__free(g, sizeof *g);
        return CTX_ESYSTEM;
    }
    if (ctx__cond_init_monotonic(&g->cond, &g->monotonic) != 0) {
        pthread_mutex_destroy(&g->lock);
        ctx__free(g, sizeof *g);
        return CTX_ESYSTEM;
    }
    int rc = ctx_cancel_scope_new(ctx__cancel_current(), options, &g->scope);
    if (rc != 0) {
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->lock);
        ctx__free(g, sizeof *g);
        return rc;
    }
    atomic_init(&g->refs, 1);
    atomic_init(&g->users, 1);
    atomic_init(&g->pending, 0);
    atomic_init(&g->error, 0);
    atomic_init(&g->waiters, 0);
    atomic_init(&g->template_lock, 0);
    g->template_from = g->template = CTX__HAMT_EMPTY;
    ctx__pool_retain(pool);
    g->pool = pool;
    *out = g;
    return 0;
}

ctx_pool_group_t *ctx_pool_group_retain(ctx_pool_group_t *group) {
    if (group) {
        atomic_fetch_add_explicit(&group->users, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&group->refs, 1, memory_order_relaxed);
    }
    return group;
}

void ctx_pool_group_release(ctx_pool_group_t *group) {
    if (!group)
        return;
    /* The last user's: work nobody can wait for any more stops
     * (structured concurrency: nothing started for the group outlives it
     * unnoticed). */
    if (atomic_fetch_sub_explicit(&group->users, 1, memory_order_acq_rel) == 1 &&
        atomic_load(&group->pending) > 0)
        (void)ctx_cancel_scope_cancel(group->scope, NULL);
    group_unref(group);
}

int ctx_pool_group_submit(ctx_pool_group_t *group, ctx_pool_task_fn fn, void *arg,
                          const ctx_pool_submit_options_t *options, ctx_pool_future_t **out) {
    if (!group || !fn)
        return CTX_EINVAL;
    /* A stopped group takes nothing more (its tasks would never start). */
    int err = ctx__cancel_scope_poll(group->scope);
    if (err)
        return err;
    atomic_fetch_add(&group->pending, 1);
    atomic_fetch_add_explicit(&group->refs, 1, memory_order_relaxed); /* the task's */
    int rc = ctx__pool_submit(group->pool, fn, arg, options, out, group);
    if (rc != 0)
        ctx__group_task_ended(group); /* uncounted, waiters told */
    return rc;
}

int ctx__group_context(ctx_pool_group_t *g, ctx_context_t *storage) {
    ctx__tstate_t *ts = ctx__provider_installed() ? NULL : ctx__tls;
    const ctx__hamt_node_t *root = ts ? ts->current->map.root : NULL;
    if (ts) {
        ctx__spin_lock(&g->template_lock);
        if (g->template.root && g->template_from.root == root) {
            ctx__policy_context_of_map(storage, ctx__hamt_retain(g->template));
            ctx__spin_unlock(&g->template_lock);
            return 0;
        }
        ctx__spin_unlock(&g->template_lock);
    }
    /* A new template: the current map, and a copy with the scope in it. */
    ctx_context_t made;
    ctx__context_init_copy_current(&made);
    ctx__hamt_t from = ctx__hamt_retain(made.map);
    int rc = ctx__cancel_context_put(&made, g->scope);
    if (rc != 0) {
        ctx__hamt_release(from, &ctx__box_ops);
        ctx__context_clear(&made);
        return rc;
    }
    ctx__policy_context_of_map(storage, ctx__hamt_retain(made.map));
    if (!ts || from.root != root) { /* a host's context: not cached */
        ctx__hamt_release(from, &ctx__box_ops);
        ctx__context_clear(&made);
        return 0;
    }
    ctx__spin_lock(&g->template_lock);
    ctx__hamt_t old_from = g->template_from, old = g->template;
    g->template_from = from;
    g->template = made.map; /* the reference `made` held */
    ctx__spin_unlock(&g->template_lock);
    /* Outside the lock: releases may run values' release operations. */
    ctx__hamt_release(old_from, &ctx__box_ops);
    ctx__hamt_release(old, &ctx__box_ops);
    return 0;
}

void ctx__group_task_ending(ctx_pool_group_t *g, const ctx_pool_future_t *f, int state,
                            int error) {
    if (state == CTX__F_COMPLETED)
        return;
    if (state == CTX__F_CANCELLED && f->pinned &&
        atomic_load_explicit(&f->cancel_requested, memory_order_relaxed))
        return; /* cancelled through its own future: not the group's failure */
    int none = 0;
    if (!atomic_compare_exchange_strong(&g->error, &none, error))
        return; /* not the first */
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    cause.code = error;
    (void)ctx_cancel_scope_cancel(g->scope, &cause);
}

void ctx__group_task_ended(ctx_pool_group_t *g) {
    if (atomic_fetch_sub(&g->pending, 1) == 1 && atomic_load(&g->waiters) > 0) {
        pthread_mutex_lock(&g->lock);
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
    }
    group_unref(g);
}

static bool group_idle(void *g) {
    return atomic_load(&((ctx_pool_group_t *)g)->pending) == 0;
}

int ctx_pool_group_wait(ctx_pool_group_t *group, int64_t timeout_ns) {
    if (!group)
        return CTX_EINVAL;
    ctx_pool_future_t *self = ctx__pool_current_task();
    if (self && self->group == group)
        return CTX_EINVAL; /* it would wait for itself */
    if (!group_idle(group)) {
        if (ctx__pool_forked(group->pool))
            return CTX_EFORKED;
        ctx_cancel_scope_t *scope = ctx__cancel_current();
        int err = scope ? ctx__cancel_scope_poll(scope) : 0;
        if (err)
            return err;
        if (timeout_ns == 0)
            return CTX_ETIMEDOUT;
        pthread_mutex_lock(&group->lock);
        int rc = ctx__pool_block(&group->lock, &group->cond, group->monotonic, group_idle, group,
                                 &group->waiters, timeout_ns);
        pthread_mutex_unlock(&group->lock);
        if (rc != 0)
            return rc;
    }
    return atomic_load(&group->error);
}

int ctx_pool_group_cancel(ctx_pool_group_t *group) {
    if (!group)
        return CTX_EINVAL;
    return ctx_cancel_scope_cancel(group->scope, NULL);
}

int ctx_pool_group_scope(const ctx_pool_group_t *group, ctx_cancel_scope_t **out) {
    if (!group || !out)
        return CTX_EINVAL;
    *out = group->scope;
    return 0;
}
