/* SPDX-License-Identifier: MIT */
/*
 * provider.c — a host's own current context (include/ctxvar/host.h): the
 * Python binding makes the context of the running asyncio task current for
 * C code, with no notification of the switches asyncio makes.
 *
 * How the core asks
 * -----------------
 * Every core function that acts on "the calling thread's current context"
 * first tests one global (ctx__provider, provider.h); without a provider
 * that is all it costs.  With one, it calls the matching ctx__provided_*
 * function here, which looks at the thread first:
 *
 *     thread state             current context               who answers
 *     ─────────────────────    ───────────────────────────   ─────────────
 *     a context entered        that context                  the core, as
 *     through ctxvar                                         if no provider
 *     (ts->current != base)
 *     none entered, or no      provider->current(...)        this file
 *     state yet                (NULL: the thread's base,     (or the core,
 *                               as if no provider)            for NULL)
 *
 * so a pool task or a loop callback (a capture run) and any context C code
 * enters explicitly keep behaving exactly as in a program without a host;
 * only the bottom of the thread's stack is the host's.
 *
 * A provided context is immutable
 * -------------------------------
 * The host may share it in ways ctxvar cannot see (asyncio copies Python's
 * context for every callback, and the provided context travels along), so
 * the core never changes one: it reads it without its lock and without the
 * per-thread cache (whose epoch cannot see the host's switches), and every
 * change builds a new context and *publishes* it:
 *
 *     provided P ──copy (O(1): shares P's map)──▶ N ──set/remove one item──▶ N'
 *                                                  (path copied, P untouched)
 *     publish(N') ── the host now provides N' where it provided P
 *
 * Failure changes nothing: N' is built first; if publish fails, N' is
 * dropped without touching the value handed to set (the new box is kept
 * alive by the creator's reference across the release of N', then
 * discarded), and P was never changed.
 *
 * Tokens made in a provided context cannot name a ctxvar context (there is
 * a new one after every set), so they name the host's scope: a
 * provided_token_t is an ordinary token with `ctx` NULL (an ordinary token
 * always has one) followed by the provider and the scope handle.  Reset asks
 * the provider whether that scope is current.
 *
 * Copies and captures of a provided context (pool submits, loop calls,
 * ctx_context_copy_current) ask with CTX_PROVIDER_COPY, so the host knows
 * the values will be shared beyond the call.
 *
 * ctx_context_visit serves a host's garbage collector: it says which values
 * of a context nothing else keeps alive (the context's only reference, and a
 * private path in the map: ctx__hamt_is_private), so a host can count the
 * references its values hold as its own exactly when no copy shares them.
 *
 * Functions: ctx_set_context_provider, ctx_thread_has_entered,
 * ctx_context_visit, provided() (the table above), then one ctx__provided_*
 * per core operation.
 */
#include "common/common.h"
#include "core/alloc.h"
#include "core/core.h"
#include "core/provider.h"

_Atomic(const ctx_context_provider_t *) ctx__provider;

/* The installed copy: written only while no provider is installed. */
static ctx_context_provider_t installed;
static atomic_int install_lock;

typedef struct provided_token {
    struct ctx_token base; /* base.ctx == NULL marks a provided token */
    const ctx_context_provider_t *provider;
    void *scope;
} provided_token_t;

int ctx_set_context_provider(const ctx_context_provider_t *provider) {
    if (!provider) {
        atomic_store_explicit(&ctx__provider, NULL, memory_order_release);
        return 0;
    }
    ctx_context_provider_t copy;
    if (ctx__struct_in(&copy, sizeof copy, provider, sizeof(ctx_context_provider_t)) ||
        !copy.current || !copy.publish)
        return CTX_EINVAL;
    int tokens = (copy.scope_retain != NULL) + (copy.scope_is_current != NULL) +
                 (copy.scope_release != NULL);
    if (tokens != 0 && tokens != 3)
        return CTX_EINVAL;
    ctx__spin_lock(&install_lock);
    int r = CTX_EBUSY;
    if (!atomic_load_explicit(&ctx__provider, memory_order_acquire)) {
        installed = copy;
        atomic_store_explicit(&ctx__provider, &installed, memory_order_release);
        r = 0;
    }
    ctx__spin_unlock(&install_lock);
    return r;
}

int ctx_thread_has_entered(void) {
    ctx__tstate_t *ts = ctx__tls;
    return ts && ts->current != ts->base;
}

int ctx_context_visit(ctx_context_t *ctx, unsigned flags, ctx_context_visit_fn visit,
                      void *arg) {
    if (!ctx || !visit || (flags & ~CTX_VISIT_EXCLUSIVE))
        return CTX_EINVAL;
    /* Nobody changes `ctx` (the caller's promise): its map is walked without
     * a lock.  Reference counts only fall meanwhile, unless `ctx` itself is
     * shared: then nothing is exclusive. */
    int alone = (flags & CTX_VISIT_EXCLUSIVE) &&
                atomic_load_explicit(&ctx->state, memory_order_acquire) == CTX__REF;
    ctx__hamt_iter_t walk;
    ctx__hamt_iter_init(&walk, &ctx->map);
    ctx__hamt_item_t *item;
    while ((item = ctx__hamt_iter_next(&walk))) {
        ctx__box_t *box = (ctx__box_t *)item;
        int exclusive = alone && ctx__hamt_is_private(&ctx->map, item->hash, item->key,
                                                      &ctx__box_ops) == 1;
        int r = visit(ctx__box_var(box), box->value, exclusive, arg);
        if (r)
            return r;
    }
    return 0;
}

/* The calling thread's provided context (and its provider in *pp), or NULL
 * if a context entered through ctxvar is current or the provider has none. */
static ctx_context_t *provided(const ctx_context_provider_t **pp, ctx_provider_use_t use) {
    ctx__tstate_t *ts = ctx__tls;
    if (ts && ts->current != ts->base)
        return NULL;
    const ctx_context_provider_t *p = atomic_load_explicit(&ctx__provider, memory_order_acquire);
    if (!p)
        return NULL;
    *pp = p;
    return p->current(use, p->user);
}

/* ---- reads ---- */

int ctx__provided_get(const ctx_var_t *var, void **out) {
    const ctx_context_provider_t *p;
    ctx_context_t *ctx = provided(&p, CTX_PROVIDER_READ);
    if (!ctx)
        return CTX__NOT_PROVIDED;
    ctx__hamt_item_t *item;
    if (ctx__hamt_find(&ctx->map, var->hash, var, &ctx__box_ops, &item) == 1) {
        *out = ((ctx__box_t *)item)->value;
        return CTX_VALUE;
    }
    if (!var->has_default)
        return CTX_ENOTFOUND;
    *out = var->default_value;
    return CTX_DEFAULT;
}

int ctx__provided_copy(ctx_context_t **out) {
    const ctx_context_provider_t *p;
    ctx_context_t *from = provided(&p, CTX_PROVIDER_COPY);
    if (!from)
        return CTX__NOT_PROVIDED;
    ctx_context_t *ctx = ctx__context_alloc();
    if (!ctx)
        return CTX_ENOMEM;
    ctx->map = ctx__hamt_retain(from->map); /* immutable: no lock */
    *out = ctx;
    return 0;
}

int ctx__provided_init_copy(ctx_context_t *storage) {
    const ctx_context_provider_t *p;
    ctx_context_t *from = provided(&p, CTX_PROVIDER_COPY);
    if (!from)
        return CTX__NOT_PROVIDED;
    ctx__context_init_copy(storage, from);
    return 0;
}

int ctx__provided_format(char *buf, size_t cap, size_t *len) {
    const ctx_context_provider_t *p;
    ctx_context_t *from = provided(&p, CTX_PROVIDER_READ);
    if (!from)
        return CTX__NOT_PROVIDED;
    return ctx_context_format(from, buf, cap, len);
}

/* ---- changes: build, then publish ---- */

/* Publishes a copy of `from` in which `item` replaces the item of its key
 * (*replaced receives the item it displaced, with the reference the copy
 * held, or NULL), or, when `item` is NULL, without the item of `var`.  The
 * map takes its own reference to `item`.  0, or an error with nothing
 * changed (*replaced NULL). */
static int publish_change(const ctx_context_provider_t *p, ctx_context_t *from,
                          ctx__hamt_item_t *item, ctx_var_t *var,
                          ctx__hamt_item_t **replaced) {
    *replaced = NULL;
    ctx_context_t *next = ctx__context_alloc();
    if (!next)
        return CTX_ENOMEM;
    next->map = ctx__hamt_retain(from->map); /* shared until changed below */
    int r;
    if (item) {
        /* put takes over a reference: give it one of its own, so the
         * caller keeps its own either way. */
        ctx__hamt_item_retain(item);
        r = ctx__hamt_put_inplace(&next->map, item, &ctx__box_ops, replaced);
        if (r)
            ctx__hamt_item_release(item, &ctx__box_ops); /* the caller's remains */
    } else {
        r = ctx__hamt_without_inplace(&next->map, var->hash, var, &ctx__box_ops);
    }
    if (r == 0)
        r = p->publish(next, p->user);
    if (r) {
        /* Every item `next` shares is still held by `from`, and the caller
         * holds `item`: this release runs no value's release operation. */
        if (*replaced)
            ctx__hamt_item_release(*replaced, &ctx__box_ops);
        *replaced = NULL;
        ctx_context_release(next);
    }
    return r;
}

static int set_in(const ctx_context_provider_t *p, ctx_context_t *from, ctx_var_t *var,
                  void *value, ctx_token_t **token) {
    provided_token_t *tok = NULL;
    if (token) {
        if (!p->scope_retain)
            return CTX_EINVAL;
        if (!(tok = ctx__malloc(sizeof *tok)))
            return CTX_ENOMEM;
        if (!(tok->scope = p->scope_retain(p->user))) {
            ctx__free(tok, sizeof *tok);
            return CTX_ENOMEM;
        }
    }
    ctx__box_t *box = ctx__box_new(var, value);
    int r = box ? 0 : CTX_ENOMEM;
    ctx__hamt_item_t *old = NULL;
    if (box)
        r = publish_change(p, from, &box->item, var, &old);
    if (r) {
        if (box)
            ctx__box_discard(box); /* the value stays the caller's */
        if (tok) {
            p->scope_release(tok->scope, p->user);
            ctx__free(tok, sizeof *tok);
        }
        return r;
    }
    /* The published map holds the box now; drop the creator's reference. */
    ctx__hamt_item_release(&box->item, &ctx__box_ops);
    if (!tok) {
        if (old)
            ctx__hamt_item_release(old, &ctx__box_ops);
        return 0;
    }
    tok->base.ctx = NULL;
    tok->base.ctx_id = 0;
    /* As in ctx_var_set: the old box holds the variable already. */
    tok->base.var = old ? var : ctx__var_hold(var);
    tok->base.old = (ctx__box_t *)old;
    atomic_init(&tok->base.used, 0);
    tok->provider = p;
    CTX__DEBUG_BORN(&tok->base, CTX__KIND_TOKEN);
    *token = &tok->base;
    return 0;
}

int ctx__provided_set(ctx_var_t *var, void *value, ctx_token_t **token) {
    const ctx_context_provider_t *p;
    ctx_context_t *from = provided(&p, CTX_PROVIDER_READ);
    if (!from)
        return CTX__NOT_PROVIDED;
    return set_in(p, from, var, value, token);
}

int ctx__provided_reset(ctx_var_t *var, ctx_token_t *token) {
    const ctx_context_provider_t *p;
    if (token->ctx) {
        /* An ordinary token names a ctxvar context, which a provided one
         * never is. */
        return provided(&p, CTX_PROVIDER_READ) ? CTX_ETOKENCTX : CTX__NOT_PROVIDED;
    }
    provided_token_t *tok = (provided_token_t *)token;
    if (atomic_load_explicit(&token->used, memory_order_relaxed))
        return CTX_ETOKENUSED;
    if (token->var != var)
        return CTX_ETOKENVAR;
    ctx_context_t *from = provided(&p, CTX_PROVIDER_READ);
    if (!from || p != tok->provider || p->scope_is_current(tok->scope, p->user) != 1)
        return CTX_ETOKENCTX;
    ctx__hamt_item_t *gone = NULL;
    int r = publish_change(p, from, token->old ? &token->old->item : NULL, var, &gone);
    if (r)
        return r;
    if (gone) /* released outside any lock: it may run a release operation */
        ctx__hamt_item_release(gone, &ctx__box_ops);
    atomic_store_explicit(&token->used, 1, memory_order_relaxed);
    return 0;
}

int ctx__provided_token_release(ctx_token_t *token) {
    if (token->ctx)
        return 0;
    provided_token_t *tok = (provided_token_t *)token;
    tok->provider->scope_release(tok->scope, tok->provider->user);
    if (token->old)
        ctx__hamt_item_release(&token->old->item, &ctx__box_ops);
    else
        ctx__var_unhold(token->var);
    ctx__free(tok, sizeof *tok);
    return 1;
}

int ctx__provided_get_for_write(ctx_var_t *var, void **out) {
    const ctx_context_provider_t *p;
    ctx_context_t *from = provided(&p, CTX_PROVIDER_READ);
    if (!from)
        return CTX__NOT_PROVIDED;
    /* Never private: the host may have shared `from` anywhere. */
    ctx__hamt_item_t *item;
    const void *source;
    if (ctx__hamt_find(&from->map, var->hash, var, &ctx__box_ops, &item) == 1)
        source = ((ctx__box_t *)item)->value;
    else if (var->has_default)
        source = var->default_value;
    else
        return CTX_ENOTFOUND;
    if (!var->ops.clone)
        return CTX_ENOCLONE;
    void *copy = NULL;
    int r = var->ops.clone(source, &copy, var->ops.user);
    if (r)
        return r < 0 ? r : CTX_ECALLBACK;
    r = set_in(p, from, var, copy, NULL);
    if (r) {
        if (var->ops.release)
            var->ops.release(copy, var->ops.user);
        return r;
    }
    *out = copy;
    return 0;
}
