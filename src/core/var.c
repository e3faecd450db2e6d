/* SPDX-License-Identifier: MIT */
/*
 * var.c — variables, value boxes, tokens: get, set, reset, get_for_write.
 *
 * A variable is a reference-counted record: id, hash, name, default, value
 * operations.  Its hash is its id (ids count up from 1), which spreads the
 * first 32 variables over the 32 positions of the root node, the next 992
 * over a second level, and so on: the densest tree a HAMT can have, and
 * iteration in creation order for small contexts.
 *
 * A set allocates a box (ctx__box_t: the variable and one share of the value)
 * and puts it in the current context's map with ctx__hamt_assoc_inplace, so a
 * context that nobody copied is changed in place; after a copy the first set
 * copies one path.  A token keeps the previous box and its variable alive (as
 * Python's Token does) and remembers its context by address *and* id (ids are
 * never reused), so it needs no reference to the context and a dead one's
 * address cannot pass for a live one; reset puts the box back (or removes the
 * variable).  Reference counts are
 * atomic and each costs several nanoseconds, so the set/reset path takes only
 * those it needs: a new box's creator hands its reference to the map
 * (ctx__hamt_put_inplace) instead of the map taking one of its own.  Every
 * operation allocates before it changes anything, so an allocation failure
 * changes nothing.
 *
 * No user code runs under a context's lock: a value replaced by set or
 * removed by reset is handed back by the map operation and released after
 * the lock is dropped and the cache has seen the change, so its release
 * operation may read or set the same variable in the same context.
 *
 * get is the hot path: one thread-local load, a cache line indexed by the
 * variable's id, two compares (core.h explains the epoch).  A miss walks the
 * map (no lock: only this thread changes its current context) and fills the
 * entry.
 *
 * get_for_write is the way out of the shallow-copy trap: the value may be
 * changed in place only when its box and every node above it are referenced
 * by this context alone (ctx__hamt_is_private); otherwise it is cloned and the
 * clone set, after which it is private until the next copy.
 */
#include <string.h>

#include "common/common.h"
#include "core/alloc.h"
#include "core/core.h"
#include "core/provider.h"

/* Variables count up from 1 on their own counter (creating one is rare), so
 * their ids, hence hashes, are dense: see the essay above. */
static atomic_uint_fast64_t next_var_id = 1;

/* ---- boxes ---- */

static void box_free(ctx__hamt_item_t *item, void *user) {
    (void)user;
    ctx__release_box((ctx__box_t *)item);
}

const ctx__hamt_ops_t ctx__box_ops = {NULL, box_free, NULL};

ctx__box_t *ctx__box_new(ctx_var_t *var, void *value) {
    ctx__box_t *box = ctx__malloc_small(sizeof *box);
    if (!box)
        return NULL;
    atomic_init(&box->item.refs, 1); /* the creator's, until a map takes it */
    box->item.hash = var->hash;
    box->item.key = ctx__var_hold(var);
    box->value = value;
    return box;
}

void ctx__box_discard(ctx__box_t *box) {
    ctx_var_t *var = ctx__box_var(box);
    ctx__free_small(box, sizeof *box);
    ctx__var_unhold(var);
}

/* ---- variables ---- */

int ctx_var_new(const char *name, const ctx_var_options_t *options, ctx_var_t **out) {
    if (!name || !out)
        return CTX_EINVAL;
    /* Both structs may come from an older or newer header (common.h). */
    ctx_var_options_t opts = CTX_STRUCT_INIT(ctx_var_options_t);
    ctx_value_ops_t ops = CTX_STRUCT_INIT(ctx_value_ops_t);
    if (options && ctx__struct_in(&opts, sizeof opts, options, sizeof(ctx_var_options_t)))
        return CTX_EINVAL;
    if (opts.ops && ctx__struct_in(&ops, sizeof ops, opts.ops, sizeof(ctx_value_ops_t)))
        return CTX_EINVAL;
    if (opts.flags & ~CTX_VAR_STATIC)
        return CTX_EINVAL;
    size_t len = strlen(name);
    size_t size = sizeof(ctx_var_t) + len + 1;
    ctx_var_t *var = ctx__malloc(size);
    if (!var)
        return CTX_ENOMEM;
    atomic_init(&var->refs, 1);
    var->id = atomic_fetch_add_explicit(&next_var_id, 1, memory_order_relaxed);
    var->hash = (uint32_t)var->id;
    var->has_default = opts.has_default != 0;
    var->counted = !(opts.flags & CTX_VAR_STATIC);
#if defined(CTX_DEBUG)
    atomic_init(&var->debug_holders, 0);
#endif
    var->default_value = var->has_default ? opts.default_value : NULL;
    var->ops = ops;
    var->size = size;
    CTX__DEBUG_BORN(var, CTX__KIND_VAR);
    memcpy(var->name, name, len + 1);
    *out = var;
    return 0;
}

ctx_var_t *ctx_var_retain(ctx_var_t *var) {
    if (var) {
        CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_retain");
        atomic_fetch_add_explicit(&var->refs, 1, memory_order_relaxed);
    }
    return var;
}

void ctx_var_release(ctx_var_t *var) {
    if (!var)
        return;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_release");
    /* A count of 1 is the caller's alone: the last release needs no atomic
     * write (as drop_ref in hamt.c). */
    if (atomic_load_explicit(&var->refs, memory_order_acquire) == 1 ||
        atomic_fetch_sub_explicit(&var->refs, 1, memory_order_acq_rel) == 1) {
        CTX__DEBUG_DIED(var, CTX__KIND_VAR);
        ctx__release_var(var);
    }
}

const char *ctx_var_name(const ctx_var_t *var) {
    if (!var)
        return NULL;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_name");
    return var->name;
}

const ctx_value_ops_t *ctx_var_ops(const ctx_var_t *var) {
    if (!var)
        return NULL;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_ops");
    return &var->ops;
}

void ctx__var_force_hash(ctx_var_t *var, uint32_t hash) { var->hash = hash; }

/* ---- get ---- */

static int get_default(const ctx_var_t *var, void **out) {
    if (!var->has_default)
        return CTX_ENOTFOUND;
    *out = var->default_value;
    return CTX_DEFAULT;
}

/* Not inlined: the hit path in ctx_var_get then needs no stack frame. */
__attribute__((noinline)) static int get_slow(ctx__tstate_t *ts, const ctx_var_t *var,
                                              void **out, ctx__cache_entry_t *e) {
    ctx__hamt_item_t *item;
    int status;
    void *value = NULL;
    if (ctx__hamt_find(&ts->current->map, var->hash, var, &ctx__box_ops, &item) == 1) {
        value = ((ctx__box_t *)item)->value;
        status = CTX_VALUE;
    } else {
        status = get_default(var, &value);
    }
    e->var_id = var->id;
    e->epoch = ts->epoch;
    e->value = value;
    e->status = status;
    if (status != CTX_ENOTFOUND)
        *out = value;
    return status;
}

/* From this thread's current context: the cache, else the map. */
static inline int get_own(const ctx_var_t *var, void **out) {
    ctx__tstate_t *ts = ctx__tls;
    if (!ts)
        return get_default(var, out);
    ctx__cache_entry_t *e = &ts->cache[var->id % CTX__CACHE_SIZE];
    if (e->var_id == var->id && e->epoch == ts->epoch) {
        int status = e->status; /* read before *out is written: it may alias */
        if (status != CTX_ENOTFOUND)
            *out = e->value;
        return status;
    }
    return get_slow(ts, var, out, e);
}

/* With a host's context installed (provider.c); out of line, so that the
 * usual path needs no stack frame. */
__attribute__((noinline)) static int get_provided(const ctx_var_t *var, void **out) {
    int r = ctx__provided_get(var, out);
    return r != CTX__NOT_PROVIDED ? r : get_own(var, out);
}

/* On a cache line of its own start: the hit path is a few dozen bytes of
 * code, and where the linker happened to put it moved get_hit_ns by a fifth
 * (2.2 against 2.6 ns, the same instructions at another address, after an
 * unrelated change elsewhere in the library). */
__attribute__((aligned(64))) int ctx_var_get(const ctx_var_t *var, void **out) {
    if (!var || !out)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_get");
    if (ctx__provider_installed())
        return get_provided(var, out);
    return get_own(var, out);
}

int ctx_var_get_or(const ctx_var_t *var, void *fallback, void **out) {
    if (var)
        CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_get_or");
    int r = ctx_var_get(var, out);
    if (r == CTX_VALUE || r == CTX_EINVAL)
        return r;
    *out = fallback;
    return CTX_DEFAULT;
}

/* ---- set, reset ---- */

/* After the current map changed to give `var` `value`: a new epoch, and the
 * entry for `var` filled, since it is likely read next. */
static void note_change(ctx__tstate_t *ts, const ctx_var_t *var, void *value, int status) {
    ctx__cache_entry_t *e = &ts->cache[var->id % CTX__CACHE_SIZE];
    e->var_id = var->id;
    e->epoch = ++ts->epoch;
    e->value = value;
    e->status = status;
}

int ctx_var_set(ctx_var_t *var, void *value, ctx_token_t **token) {
    if (!var)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_set");
    if (ctx__provider_installed()) { /* a host's context (provider.c) */
        int r = ctx__provided_set(var, value, token);
        if (r != CTX__NOT_PROVIDED)
            return r;
    }
    int err = 0;
    ctx__tstate_t *ts = ctx__tstate_get(&err);
    if (!ts)
        return err;
    ctx_context_t *ctx = ts->current;
    ctx_token_t *tok = NULL;
    if (token && !(tok = ctx__malloc_small(sizeof *tok)))
        return CTX_ENOMEM;
    ctx__box_t *box = ctx__box_new(var, value);
    if (!box) {
        ctx__free_small(tok, sizeof *tok);
        return CTX_ENOMEM;
    }

    ctx__hamt_item_t *old = NULL;
    ctx__reserve_drain(ts); /* before the map changes (reserve.c) */
    int locked = ctx__context_lock_owned(ctx);
    int r = ctx__hamt_put_inplace(&ctx->map, &box->item, &ctx__box_ops, &old);
    ctx__context_unlock_owned(ctx, locked);
    if (r) {
        ctx__free_small(tok, sizeof *tok);
        ctx__box_discard(box);
        return r;
    }
    note_change(ts, var, value, CTX_VALUE);
    if (tok) {
        tok->ctx = ctx;
        tok->ctx_id = ctx__context_id(ctx);
        /* The old box holds the variable already; only a token without one
         * needs a reference of its own. */
        tok->var = old ? var : ctx__var_hold(var);
        tok->old = (ctx__box_t *)old;
        atomic_init(&tok->used, 0);
        CTX__DEBUG_BORN(tok, CTX__KIND_TOKEN);
        *token = tok;
    } else if (old) {
        /* Last: its release operation may read or set the variable, and
         * must see the new value. */
        ctx__hamt_item_release(old, &ctx__box_ops);
    }
    return 0;
}

int ctx_var_reset(ctx_var_t *var, ctx_token_t *tok) {
    if (!var || !tok)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_reset");
    CTX__DEBUG_CHECK(tok, CTX__KIND_TOKEN, "ctx_var_reset");
    if (atomic_load_explicit(&tok->used, memory_order_relaxed))
        return CTX_ETOKENUSED;
    if (tok->var != var)
        return CTX_ETOKENVAR;
    if (ctx__provider_installed()) { /* a host's context (provider.c) */
        int r = ctx__provided_reset(var, tok);
        if (r != CTX__NOT_PROVIDED)
            return r;
    }
    /* The current context is alive, so its id may be read; ids are never
     * reused, so a dead context's address can't pass for it. */
    ctx__tstate_t *ts = ctx__tls;
    if (!ts || ts->current != tok->ctx || ts->current->id != tok->ctx_id)
        return CTX_ETOKENCTX;

    ctx_context_t *ctx = tok->ctx;
    ctx__hamt_item_t *gone = NULL;
    int r;
    if (tok->old)
        ctx__hamt_item_retain(&tok->old->item); /* the map's; the token keeps its own */
    ctx__reserve_drain(ts); /* before the map changes (reserve.c) */
    int locked = ctx__context_lock_owned(ctx);
    if (tok->old)
        r = ctx__hamt_put_inplace(&ctx->map, &tok->old->item, &ctx__box_ops, &gone);
    else
        r = ctx__hamt_take_inplace(&ctx->map, var->hash, var, &ctx__box_ops, &gone);
    ctx__context_unlock_owned(ctx, locked);
    if (r) {
        if (tok->old) /* never the last reference: the token holds one */
            ctx__hamt_item_release(&tok->old->item, &ctx__box_ops);
        return r;
    }
    atomic_store_explicit(&tok->used, 1, memory_order_relaxed);
    if (tok->old)
        note_change(ts, var, tok->old->value, CTX_VALUE);
    else
        note_change(ts, var, var->default_value,
                    var->has_default ? CTX_DEFAULT : CTX_ENOTFOUND);
    /* Released outside the lock and after the change is visible: its
     * release operation may use the variable and this context. */
    if (gone)
        ctx__hamt_item_release(gone, &ctx__box_ops);
    return 0;
}

/* ---- tokens ---- */

void ctx_token_release(ctx_token_t *tok) {
    if (!tok)
        return;
    CTX__DEBUG_CHECK(tok, CTX__KIND_TOKEN, "ctx_token_release");
    CTX__DEBUG_DIED(tok, CTX__KIND_TOKEN);
    if (!tok->ctx && ctx__provided_token_release(tok)) /* made in a host's context */
        return;
    if (tok->old)
        ctx__hamt_item_release(&tok->old->item, &ctx__box_ops);
    else
        ctx__var_unhold(tok->var);
    ctx__free_small(tok, sizeof *tok);
}

ctx_var_t *ctx_token_var(const ctx_token_t *tok) {
    if (!tok)
        return NULL;
    CTX__DEBUG_CHECK(tok, CTX__KIND_TOKEN, "ctx_token_var");
    return tok->var;
}

int ctx_token_old_value(const ctx_token_t *tok, void **out) {
    if (!tok || !out)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(tok, CTX__KIND_TOKEN, "ctx_token_old_value");
    if (!tok->old)
        return CTX_ENOTFOUND;
    *out = tok->old->value;
    return 0;
}

int ctx_token_used(const ctx_token_t *tok) {
    if (!tok)
        return 0;
    CTX__DEBUG_CHECK(tok, CTX__KIND_TOKEN, "ctx_token_used");
    return atomic_load_explicit(&tok->used, memory_order_relaxed);
}

/* ---- the way out of the shallow-copy trap ---- */

int ctx_var_get_for_write(ctx_var_t *var, void **out) {
    if (!var || !out)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_get_for_write");
    if (ctx__provider_installed()) { /* a host's context (provider.c) */
        int r = ctx__provided_get_for_write(var, out);
        if (r != CTX__NOT_PROVIDED)
            return r;
    }
    int err = 0;
    ctx__tstate_t *ts = ctx__tstate_get(&err);
    if (!ts)
        return err;
    /* Spare references would make the map look shared (reserve.c). */
    ctx__reserve_drain(ts);
    const ctx__hamt_t *map = &ts->current->map;
    ctx__hamt_item_t *item = NULL;
    const void *source;
    if (ctx__hamt_find(map, var->hash, var, &ctx__box_ops, &item) == 1) {
        if (ctx__hamt_is_private(map, var->hash, var, &ctx__box_ops) == 1) {
            *out = ((ctx__box_t *)item)->value;
            return 0;
        }
        source = ((ctx__box_t *)item)->value;
    } else if (var->has_default) {
        source = var->default_value;
    } else {
        return CTX_ENOTFOUND;
    }
    if (!var->ops.clone)
        return CTX_ENOCLONE;
    void *copy = NULL;
    int r = var->ops.clone(source, &copy, var->ops.user);
    if (r)
        return r < 0 ? r : CTX_ECALLBACK;
    r = ctx_var_set(var, copy, NULL);
    if (r) {
        if (var->ops.release)
            var->ops.release(copy, var->ops.user);
        return r;
    }
    *out = copy;
    return 0;
}
