/* SPDX-License-Identifier: MIT */
/*
 * context.c — where a context keeps its scope, and every call that reads or
 * changes it.
 *
 * The scope is the value of one context variable owned by the library
 * ("ctxvar.cancel", made on first use and kept for the life of the
 * process), whose release operation drops the context's reference to the
 * scope.  Everything a context does for values it therefore does for
 * scopes, with no new mechanism:
 *
 *   - copies (ctx_context_copy, captures, pool tasks, loop handles) share
 *     the scope, in O(1), because they share the map;
 *   - making a scope current is a ctx_var_set in the current context, and
 *     undoing it a ctx_var_reset with the token (ctx_cancel_enter/exit);
 *     other contexts, including copies made before, are unaffected;
 *   - detaching (Go's WithoutCancel) is a copy without that one entry;
 *   - a context that dies drops its reference with its map.
 *
 * The hot path, ctx_cancel_check, is ctx_var_get's cache probe written out
 * here (core.h's per-thread cache, keyed by variable id and epoch) plus one
 * atomic load of the scope's state: a cache hit never leaves this function.
 */
#include <stdio.h>
#include <time.h>

#include "cancel/cancel_internal.h"
#include "common/common.h"

_Atomic(ctx_var_t *) ctx__cancel_var_slot;

static void value_release(void *value, void *user) {
    (void)user;
    ctx_cancel_scope_release(value);
}

static int value_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    int err = value ? ctx_cancel_scope_error(value) : 0;
    const char *text = !value                   ? "none"
                       : err == 0               ? "active"
                       : err == CTX_EDEADLINE ? "deadline exceeded"
                                                : "cancelled";
    int64_t left;
    if (value && err == 0 && ctx_cancel_scope_remaining(value, &left) == 0)
        return snprintf(buf, cap, "%s, %.3fms left", text, (double)left / 1e6);
    return snprintf(buf, cap, "%s", text);
}

ctx_var_t *ctx__cancel_var(int *err) {
    static const ctx_value_ops_t ops = {.size = sizeof(ctx_value_ops_t),
                                        .release = value_release,
                                        .format = value_format};
    return ctx__process_var(&ctx__cancel_var_slot, "ctxvar.cancel", &ops, err);
}

/* The current context's scope (borrowed), or NULL. */
static inline ctx_cancel_scope_t *current_scope(void) { return ctx__cancel_current(); }

ctx_cancel_scope_t *ctx__cancel_context_scope(ctx_context_t *ctx) {
    ctx_var_t *var = ctx__cancel_var_peek();
    if (!var)
        return NULL;
    ctx__hamt_item_t *item;
    ctx_cancel_scope_t *scope = NULL;
    ctx__context_lock(ctx);
    if (ctx__hamt_find(&ctx->map, var->hash, var, &ctx__box_ops, &item) == 1)
        scope = ctx_cancel_scope_retain(((ctx__box_t *)item)->value);
    ctx__context_unlock(ctx);
    return scope;
}

ctx_cancel_scope_t *ctx__cancel_map_scope(const ctx__hamt_t *map) {
    ctx_var_t *var = ctx__cancel_var_peek();
    ctx__hamt_item_t *item;
    if (!var || ctx__hamt_find(map, var->hash, var, &ctx__box_ops, &item) != 1)
        return NULL;
    return ((ctx__box_t *)item)->value;
}

int ctx__cancel_context_put(ctx_context_t *ctx, ctx_cancel_scope_t *scope) {
    int err = 0;
    ctx_var_t *var = ctx__cancel_var(&err);
    if (!var)
        return err;
    ctx__box_t *box = ctx__box_new(var, scope);
    if (!box)
        return CTX_ENOMEM;
    ctx__hamt_item_t *old = NULL;
    int r = ctx__hamt_put_inplace(&ctx->map, &box->item, &ctx__box_ops, &old);
    if (r) {
        ctx__box_discard(box);
        return r;
    }
    ctx_cancel_scope_retain(scope); /* the box's share */
    if (old)
        ctx__hamt_item_release(old, &ctx__box_ops);
    return 0;
}

/* ---- the current context ---- */

int ctx_cancel_check(void) {
    ctx_cancel_scope_t *scope = current_scope();
    return scope ? atomic_load_explicit(&scope->state, memory_order_acquire) : 0;
}

int ctx_cancel_scope_current(ctx_cancel_scope_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_cancel_scope_t *scope = current_scope();
    if (!scope)
        return CTX_ENOTFOUND;
    *out = scope;
    return 0;
}

int ctx_cancel_enter(ctx_cancel_scope_t *scope, ctx_token_t **token) {
    if (!token)
        return CTX_EINVAL;
    int err = 0;
    ctx_var_t *var = ctx__cancel_var(&err);
    if (!var)
        return err;
    ctx_cancel_scope_retain(scope); /* the context's reference */
    int r = ctx_var_set(var, scope, token);
    if (r)
        ctx_cancel_scope_release(scope);
    return r;
}

int ctx_cancel_enter_child(const ctx_cancel_options_t *options, ctx_cancel_scope_t **scope,
                           ctx_token_t **token) {
    if (!token)
        return CTX_EINVAL;
    int err = 0;
    ctx_var_t *var = ctx__cancel_var(&err);
    if (!var)
        return err;
    ctx_cancel_scope_t *child;
    int r = ctx_cancel_scope_new(current_scope(), options, &child);
    if (r)
        return r;
    r = ctx_var_set(var, child, token); /* hands our reference to the context */
    if (r) {
        ctx_cancel_scope_release(child);
        return r;
    }
    if (scope)
        *scope = ctx_cancel_scope_retain(child);
    return 0;
}

int ctx_cancel_exit(ctx_token_t *token) {
    if (!token)
        return CTX_EINVAL;
    ctx_var_t *var = ctx__cancel_var_peek();
    if (!var)
        return CTX_ETOKENVAR;
    int r = ctx_var_reset(var, token);
    if (r)
        return r;
    ctx_token_release(token);
    return 0;
}

int ctx_cancel_remaining(int64_t *ns) {
    if (!ns)
        return CTX_EINVAL;
    ctx_cancel_scope_t *scope = current_scope();
    return scope ? ctx_cancel_scope_remaining(scope, ns) : CTX_ENOTFOUND;
}

static void sleep_plain(int64_t ns) {
    struct timespec left = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&left, &left) != 0)
        ;
}

int ctx_cancel_sleep(int64_t ns) {
    ctx_cancel_scope_t *scope = current_scope();
    if (!scope) {
        if (ns < 0)
            return CTX_EINVAL;
        sleep_plain(ns);
        return 0;
    }
    /* The scope stays alive: only this thread changes its current context. */
    int r = ctx_cancel_scope_wait(scope, ns);
    return r == CTX_ETIMEDOUT ? 0 : r;
}

/* ---- other contexts ---- */

int ctx_cancel_scope_get(ctx_context_t *ctx, ctx_cancel_scope_t **out) {
    if (!ctx || !out)
        return CTX_EINVAL;
    ctx_cancel_scope_t *scope = ctx__cancel_context_scope(ctx);
    if (!scope)
        return CTX_ENOTFOUND;
    *out = scope;
    return 0;
}

int ctx_cancel_context_set(ctx_context_t *ctx, ctx_cancel_scope_t *scope) {
    if (!ctx)
        return CTX_EINVAL;
    int err = 0;
    ctx_var_t *var = ctx__cancel_var(&err);
    if (!var)
        return err;
    ctx_cancel_scope_retain(scope);
    int r = ctx_context_set(ctx, var, scope);
    if (r)
        ctx_cancel_scope_release(scope);
    return r;
}

/* A copy of `src`, or of the current context if NULL. */
static int copy_of(ctx_context_t *src, ctx_context_t **out) {
    return src ? ctx_context_copy(src, out) : ctx_context_copy_current(out);
}

int ctx_cancel_context_new(ctx_context_t *src, const ctx_cancel_options_t *options,
                           ctx_context_t **out, ctx_cancel_scope_t **scope) {
    if (!out)
        return CTX_EINVAL;
    int err = 0;
    ctx_var_t *var = ctx__cancel_var(&err);
    if (!var)
        return err;
    ctx_cancel_scope_t *parent =
        src ? ctx__cancel_context_scope(src) : ctx_cancel_scope_retain(current_scope());
    ctx_context_t *ctx = NULL;
    ctx_cancel_scope_t *child = NULL;
    int r = copy_of(src, &ctx);
    if (r == 0)
        r = ctx_cancel_scope_new(parent, options, &child);
    ctx_cancel_scope_release(parent);
    if (r == 0 && (r = ctx_context_set(ctx, var, child)) != 0)
        ctx_cancel_scope_release(child);
    if (r) {
        ctx_context_release(ctx);
        return r;
    }
    if (scope)
        *scope = ctx_cancel_scope_retain(child);
    *out = ctx;
    return 0;
}

int ctx_cancel_context_detach(ctx_context_t *src, ctx_context_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_context_t *ctx;
    int r = copy_of(src, &ctx);
    if (r)
        return r;
    ctx_var_t *var = ctx__cancel_var_peek();
    /* The copy is ours alone: its map may be changed without its lock. */
    if (var && (r = ctx__hamt_without_inplace(&ctx->map, var->hash, var, &ctx__box_ops)) != 0 &&
        r != CTX_ENOTFOUND) {
        ctx_context_release(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

/* ---- captures ---- */

int ctx_cancel_capture_check(ctx_capture_t *capture) {
    if (!capture)
        return CTX_EINVAL;
    ctx_var_t *var = ctx__cancel_var_peek();
    if (!var)
        return 0;
    ctx_context_t *ctx = (ctx_context_t *)capture;
    ctx__hamt_item_t *item;
    int err = 0;
    ctx__context_lock(ctx);
    if (ctx__hamt_find(&ctx->map, var->hash, var, &ctx__box_ops, &item) == 1) {
        ctx_cancel_scope_t *scope = ((ctx__box_t *)item)->value;
        err = scope ? atomic_load_explicit(&scope->state, memory_order_acquire) : 0;
    }
    ctx__context_unlock(ctx);
    return err;
}

int ctx_cancel_capture_scope(ctx_capture_t *capture, ctx_cancel_scope_t **out) {
    if (!capture || !out)
        return CTX_EINVAL;
    return ctx_cancel_scope_get((ctx_context_t *)capture, out);
}
