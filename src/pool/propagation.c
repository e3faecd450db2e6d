/* SPDX-License-Identifier: MIT */
/*
 * propagation.c — which context a pool task runs in (the propagation
 * policy).
 *
 * What it is for
 * --------------
 * Every task runs in a context of its own, made at submit time inside the
 * task's record (core/embed.c: no allocation, O(1)) and dropped when the
 * task returns.  What that context holds is the policy's choice:
 *
 *     policy      the task's context                   cost at submit
 *     ─────────   ──────────────────────────────────   ─────────────────────
 *     COPY        the submitter's current map           one reference on the
 *                 (the default)                         map's root
 *     NONE        an empty map                          nothing
 *     CONTEXT     the map of a given context            its lock, a reference
 *     ALLOWLIST   the listed variables the submitter    a copy (allocates)
 *                 has a value for
 *
 * A light task (queue.c: a fire-and-forget submit that needs no record)
 * carries only the map of that context, with its reference, in its queue
 * slot; the worker rebuilds the embedded context on its stack around it
 * (ctx__policy_capture_map, ctx__policy_context_of_map below).
 *
 * A pool resolves its policy once (ctx__policy_init: DEFAULT becomes COPY,
 * the context is retained, the allowlist copied and each variable
 * retained); a submit either borrows the pool's or, with submit options,
 * borrows the caller's for the duration of the call
 * (ctx__policy_for_submit).
 *
 * The one shared write of propagation
 * -----------------------------------
 * COPY costs an atomic increment of the reference count of the submitter's
 * map root at submit and a decrement on the worker when the task's context
 * is dropped: the only per-task write to memory that other threads also
 * write (every thread running in a copy of that context).  It is what
 * pool_propagation_ratio measures.  Three things keep it cheap: a light
 * task's map is retained by the push right after the queue lock's fence
 * (ctx__policy_borrow_map: one full fence less per submit); the worker
 * drops references by the batch (below), so the root's cache line stays
 * with the submitter; and n references go in one atomic operation
 * (ctx__hamt_release_n).  The alternatives were refused: keeping
 * the reference in the dead record for the submitter to reuse would delay
 * the release of values past the task's end, which the header promises
 * (values are released when no context refers to them any more).
 *
 * Invariants
 * ----------
 * - A failed make_context leaves nothing behind (f->has_context stays 0).
 * - A pool's policy objects live until ctx__policy_release
 *   (ctx_pool_release), after the workers have stopped.
 */
#include "pool_internal.h"

#include "core/alloc.h"

bool ctx__policy_valid_kind(ctx_pool_propagation_t p) {
    return p >= CTX_POOL_PROPAGATE_DEFAULT && p <= CTX_POOL_PROPAGATE_ALLOWLIST;
}

static bool valid_allowlist(ctx_var_t *const *vars, size_t n) {
    if (!vars)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!vars[i])
            return false;
    return true;
}

/* 0 if `kind` with these arguments is a usable policy, else CTX_EINVAL. */
static int check(ctx_pool_propagation_t kind, ctx_context_t *context, ctx_var_t *const *allowlist,
                 size_t allowlist_len) {
    if (!ctx__policy_valid_kind(kind))
        return CTX_EINVAL;
    if (kind == CTX_POOL_PROPAGATE_CONTEXT && !context)
        return CTX_EINVAL;
    if (kind == CTX_POOL_PROPAGATE_ALLOWLIST && !valid_allowlist(allowlist, allowlist_len))
        return CTX_EINVAL;
    return 0;
}

int ctx__policy_init(ctx__policy_t *out, ctx_pool_propagation_t kind, ctx_context_t *context,
                     ctx_var_t *const *allowlist, size_t allowlist_len) {
    if (kind == CTX_POOL_PROPAGATE_DEFAULT)
        kind = CTX_POOL_PROPAGATE_COPY;
    int rc = check(kind, context, allowlist, allowlist_len);
    if (rc != 0)
        return rc;
    *out = (ctx__policy_t){.kind = kind};
    if (kind == CTX_POOL_PROPAGATE_ALLOWLIST && allowlist_len > 0) {
        ctx_var_t **copy = ctx__malloc(allowlist_len * sizeof *copy);
        if (!copy)
            return CTX_ENOMEM;
        for (size_t i = 0; i < allowlist_len; i++)
            copy[i] = ctx_var_retain(allowlist[i]);
        out->allowlist = copy;
        out->allowlist_len = allowlist_len;
    }
    if (kind == CTX_POOL_PROPAGATE_CONTEXT)
        out->context = ctx_context_retain(context);
    return 0;
}

void ctx__policy_release(ctx__policy_t *policy) {
    ctx_context_release(policy->context);
    policy->context = NULL;
    ctx_var_t **vars = (ctx_var_t **)policy->allowlist;
    for (size_t i = 0; i < policy->allowlist_len; i++)
        ctx_var_release(vars[i]);
    if (vars)
        ctx__free(vars, policy->allowlist_len * sizeof *vars);
    policy->allowlist = NULL;
    policy->allowlist_len = 0;
}

int ctx__policy_for_submit(const ctx__policy_t *pool_policy, ctx_pool_propagation_t kind,
                           ctx_context_t *context, ctx_var_t *const *allowlist,
                           size_t allowlist_len, ctx__policy_t *out) {
    if (!ctx__policy_valid_kind(kind))
        return CTX_EINVAL;
    if (kind == CTX_POOL_PROPAGATE_DEFAULT) {
        *out = *pool_policy;
        return 0;
    }
    int rc = check(kind, context, allowlist, allowlist_len);
    if (rc != 0)
        return rc;
    *out = (ctx__policy_t){kind, context, allowlist, allowlist_len};
    return 0;
}

/* The submitter's current context, cut down to the allowlist, into the
 * record's storage. */
static int make_allowlisted(const ctx__policy_t *policy, ctx_context_t *storage) {
    ctx_context_t *current = NULL, *only = NULL;
    int rc = ctx_context_copy_current(&current);
    if (rc != 0)
        return rc;
    rc = ctx_context_copy_only(current, policy->allowlist, policy->allowlist_len, &only);
    ctx_context_release(current);
    if (rc != 0)
        return rc;
    ctx__context_init_copy(storage, only);
    ctx_context_release(only);
    return 0;
}

int ctx__policy_make_context(const ctx__policy_t *policy, ctx_pool_future_t *f) {
    ctx_context_t *storage = &f->context_storage;
    switch (policy->kind) {
    case CTX_POOL_PROPAGATE_NONE:
        ctx__context_init_empty(storage);
        break;
    case CTX_POOL_PROPAGATE_CONTEXT:
        ctx__context_init_copy(storage, policy->context);
        break;
    case CTX_POOL_PROPAGATE_ALLOWLIST: {
        int rc = make_allowlisted(policy, storage);
        if (rc != 0)
            return rc;
        break;
    }
    case CTX_POOL_PROPAGATE_COPY:
    default:
        ctx__context_init_copy_current(storage);
        break;
    }
    f->has_context = 1;
    return 0;
}

/* ---- light tasks: the map alone travels in the queue's slot ----
 * The core's embedded contexts (core/embed.c) hold their map by value; a
 * light task keeps just that map, with its reference, and the worker puts
 * it back into an embedded context on its own stack to run the task.  The
 * map moves between contexts without being retained or released again. */

bool ctx__policy_borrow_map(const ctx__policy_t *policy, ctx__hamt_t *out) {
    if (policy->kind != CTX_POOL_PROPAGATE_COPY)
        return false;
    /* The current context changes only in this thread: its map stays
     * valid until this thread runs other code. */
    ctx__tstate_t *ts = ctx__tls;
    *out = ts ? ts->current->map : CTX__HAMT_EMPTY;
    return true;
}

int ctx__policy_capture_map(const ctx__policy_t *policy, ctx__hamt_t *out) {
    if (policy->kind == CTX_POOL_PROPAGATE_COPY) {
        /* What ctx__context_init_copy_current takes, without the rest of a
         * context: the current context changes only in this thread. */
        ctx__tstate_t *ts = ctx__tls;
        *out = ts ? ctx__reserve_take(ts) : CTX__HAMT_EMPTY; /* reserve.c */
        return 0;
    }
    if (policy->kind == CTX_POOL_PROPAGATE_NONE) {
        *out = CTX__HAMT_EMPTY;
        return 0;
    }
    ctx_pool_future_t carrier; /* only its context storage is used */
    carrier.has_context = 0;
    int rc = ctx__policy_make_context(policy, &carrier);
    if (rc != 0)
        return rc;
    *out = carrier.context_storage.map;
    return 0;
}

void ctx__policy_context_of_map(ctx_context_t *storage, ctx__hamt_t map) {
    ctx__context_init_empty(storage); /* holds no reference */
    storage->map = map;
}

void ctx__policy_drop_map(ctx__hamt_t map) {
    ctx_context_t storage;
    ctx__policy_context_of_map(&storage, map);
    ctx__context_clear(&storage);
}

/* ---- dropping map references by the batch ----
 * The reference a light task holds on its map root was taken by the
 * submitter; dropping it on the worker is a write to the root's cache line
 * from another processor, and the submitter's next reference pulls the
 * line back: two transfers per task, the whole cost of propagation for an
 * empty task.  So a worker keeps what it owes per map (up to
 * CTX__POOL_MAP_DEBTS maps, up to CTX__POOL_MAP_DEBT_MAX references each)
 * and drops them together: when the entry is full, when a fifth map needs
 * an entry, and before it waits for work or exits.  The line then moves
 * once per batch, and the references dropped together are local
 * decrements.  A value captured by fire-and-forget tasks is therefore
 * released at the latest when the worker that ran the last of them goes
 * idle or has run CTX__POOL_MAP_DEBT_MAX more tasks of that context — not
 * necessarily the instant the task returns.  Tasks with a future drop their
 * context at once (their submitter can watch). */

#define CTX__POOL_MAP_DEBT_MAX 64

static void settle_one(ctx__map_debt_t *d) {
    ctx__hamt_release_n(d->map, d->count, &ctx__box_ops);
    d->count = 0;
    d->map = CTX__HAMT_EMPTY;
}

void ctx__policy_drop_map_later(ctx__map_debt_t *debts, ctx__hamt_t map) {
    if (!map.root)
        return; /* the empty map holds nothing */
    ctx__map_debt_t *free_entry = NULL;
    for (int i = 0; i < CTX__POOL_MAP_DEBTS; i++) {
        ctx__map_debt_t *d = &debts[i];
        if (d->count && d->map.root == map.root) {
            if (++d->count >= CTX__POOL_MAP_DEBT_MAX)
                settle_one(d);
            return;
        }
        if (!d->count && !free_entry)
            free_entry = d;
    }
    if (!free_entry) { /* a fifth map: settle the first entry for it */
        free_entry = &debts[0];
        settle_one(free_entry);
    }
    free_entry->map = map;
    free_entry->count = 1;
}

void ctx__policy_settle(ctx__map_debt_t *debts) {
    for (int i = 0; i < CTX__POOL_MAP_DEBTS; i++)
        if (debts[i].count)
            settle_one(&debts[i]);
}
