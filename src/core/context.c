/* SPDX-License-Identifier: MIT */
/*
 * context.c — contexts: copies, enter/exit/run, the mapping view, iteration
 * and the log formatter.
 *
 * A context (core.h) is a state word (reference count and entered flag), a
 * spinlock and one map value.  Copying takes the lock just long enough to retain the
 * source's root: O(1) whatever the context holds, and the copy costs one
 * small allocation (snapshot_bytes in the benchmark).
 *
 * enter claims the context with a compare-and-swap on the state word that
 * sets the entered flag and takes a reference in one step (so two threads can
 * never both enter it, and the loser gets CTX_EENTERED instead of waiting), links it in front of the thread's current context through `prev`,
 * and starts a new cache epoch, which it also stamps on the context
 * (`entry`).  exit undoes exactly that, and only for the current context.
 * run is enter, call, exit, holding a reference of its own meanwhile (the
 * function may drop the caller's).  Before its exit, run checks that the
 * current context is still its entry: the same address is not enough, since
 * the function may have exited the context (freeing it) and entered a new
 * one that the allocator put at the same address; the entry stamp differs.
 *
 * ctx_context_new_from builds a context from n values before anyone else
 * can see it: no claim and no lock (nothing can race with it).  Up to 32
 * values, the boxes are made first and, when the variables' hashes differ
 * in their first 5 bits (variables made together have consecutive ids,
 * which are their hashes), written straight into a root node of exactly n
 * slots (ctx__hamt_build_flat): one allocation and no walk for the map.
 * Otherwise (more values, hashes that meet, a variable listed twice) the
 * root is reserved once for all n and every box put in place.  A failure
 * takes the boxes already put back out (removal from a private map cannot
 * fail) and frees every box made without releasing a value.
 *
 * Readers of a context that may be current in another thread (the mapping
 * view, copies, iteration) hold its lock while they look, since its owner may
 * be changing unshared nodes in place; taking it closes the owner's way past
 * the lock (gate.c).  Iteration and the formatter retain a
 * snapshot of the root under the lock and then walk it unlocked.
 */
#define _POSIX_C_SOURCE 200809L
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "core/alloc.h"
#include "core/core.h"
#include "core/provider.h"
#include "core/reserve.h"

/* Inline here: a copy is little more than this (copy_ns_1). */
static inline ctx_context_t *context_alloc(void) {
    ctx_context_t *ctx = ctx__malloc_small(sizeof *ctx);
    if (!ctx)
        return NULL;
    atomic_init(&ctx->state, CTX__REF);
    ctx->id = 0; /* given by the first token (ctx__context_id) */
    atomic_init(&ctx->lock, 0);
    ctx->embedded = 0;
    atomic_init(&ctx->writing, 0);
    ctx->map = CTX__HAMT_EMPTY;
    ctx->prev = NULL;
    ctx->entry = 0;
    CTX__DEBUG_BORN(ctx, CTX__KIND_CONTEXT);
    return ctx;
}

ctx_context_t *ctx__context_alloc(void) { return context_alloc(); }

static ctx__hamt_t snapshot(ctx_context_t *ctx) {
    ctx__context_lock(ctx);
    ctx__hamt_t map = ctx__hamt_retain(ctx->map);
    ctx__context_unlock(ctx);
    return map;
}

int ctx_context_new(ctx_context_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_context_t *ctx = context_alloc();
    if (!ctx)
        return CTX_ENOMEM;
    *out = ctx;
    return 0;
}

int ctx_context_copy(ctx_context_t *src, ctx_context_t **out) {
    if (!src || !out)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(src, CTX__KIND_CONTEXT, "ctx_context_copy");
    ctx_context_t *ctx = context_alloc();
    if (!ctx)
        return CTX_ENOMEM;
    ctx->map = snapshot(src);
    *out = ctx;
    return 0;
}

int ctx_context_copy_current(ctx_context_t **out) {
    if (!out)
        return CTX_EINVAL;
    if (ctx__provider_installed()) { /* a host's context (provider.c) */
        int r = ctx__provided_copy(out);
        if (r != CTX__NOT_PROVIDED)
            return r;
    }
    ctx__tstate_t *ts = ctx__tls;
    if (!ts)
        return ctx_context_new(out);
    /* The current context changes only in this thread: no lock needed. */
    ctx_context_t *ctx = context_alloc();
    if (!ctx)
        return CTX_ENOMEM;
    ctx->map = ctx__reserve_take(ts);
    *out = ctx;
    return 0;
}

int ctx_context_copy_only(ctx_context_t *src, ctx_var_t *const *vars, size_t n,
                          ctx_context_t **out) {
    if (!src || !out || (n && !vars))
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(src, CTX__KIND_CONTEXT, "ctx_context_copy_only");
    for (size_t i = 0; i < n; i++) {
        if (!vars[i])
            return CTX_EINVAL;
        CTX__DEBUG_CHECK(vars[i], CTX__KIND_VAR, "ctx_context_copy_only");
    }
    ctx_context_t *ctx = context_alloc();
    if (!ctx)
        return CTX_ENOMEM;
    ctx__hamt_t from = snapshot(src);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        ctx__hamt_item_t *item;
        if (ctx__hamt_find(&from, vars[i]->hash, vars[i], &ctx__box_ops, &item) == 1)
            r = ctx__hamt_assoc_inplace(&ctx->map, item, &ctx__box_ops);
    }
    ctx__hamt_release(from, &ctx__box_ops);
    if (r) {
        ctx_context_release(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

ctx_context_t *ctx_context_retain(ctx_context_t *ctx) {
    if (ctx) {
        CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_retain");
        atomic_fetch_add_explicit(&ctx->state, CTX__REF, memory_order_relaxed);
    }
    return ctx;
}

void ctx__context_unref(ctx_context_t *ctx, size_t amount) {
    /* A state of exactly `amount` seen with acquire ordering is the caller's
     * alone (no one else holds a reference, so no one can add one): the
     * last release needs no atomic write (as drop_ref in hamt.c). */
    if (atomic_load_explicit(&ctx->state, memory_order_acquire) != amount &&
        atomic_fetch_sub_explicit(&ctx->state, amount, memory_order_acq_rel) != amount)
        return;
    CTX__DEBUG_DIED(ctx, CTX__KIND_CONTEXT);
    ctx__hamt_release(ctx->map, &ctx__box_ops);
    ctx__free_small(ctx, sizeof *ctx);
}

void ctx_context_release(ctx_context_t *ctx) {
    if (ctx) {
        CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_release");
        ctx__context_unref(ctx, CTX__REF);
    }
}

int ctx_context_set(ctx_context_t *ctx, ctx_var_t *var, void *value) {
    if (!ctx || !var)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_set");
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_context_set");
    if (ctx__context_claim(ctx, 0))
        return CTX_EENTERED;
    int r = CTX_ENOMEM;
    ctx__hamt_item_t *old = NULL;
    ctx__box_t *box = ctx__box_new(var, value);
    if (box) {
        int locked = ctx__context_gate_pass(ctx); /* entered now, by this call */
        r = ctx__hamt_put_inplace(&ctx->map, &box->item, &ctx__box_ops, &old);
        ctx__context_unlock_owned(ctx, locked);
        if (r)
            ctx__box_discard(box);
    }
    atomic_fetch_sub_explicit(&ctx->state, CTX__ENTERED, memory_order_release);
    /* The replaced value is released with no lock held and the context free
     * again, so its release operation may use the context (even set it). */
    if (old)
        ctx__hamt_item_release(old, &ctx__box_ops);
    return r;
}

/* ---- building a context in one pass ---- */

/* Takes vars[0..n) (distinct, all in the map) out of a map being built and
 * frees their boxes without releasing the values, which stay the caller's.
 * Cannot fail: removing from a private map changes nodes in place. */
static void unbuild(ctx__hamt_t *map, ctx_var_t *const *vars, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ctx__hamt_item_t *box = NULL;
        ctx__hamt_take_inplace(map, vars[i]->hash, vars[i], &ctx__box_ops, &box);
        ctx__box_discard((ctx__box_t *)box);
    }
}

/* Puts `box` in a map being built: 0, CTX_ENOMEM, or CTX_EINVAL if its
 * variable is in the map already (then the map is as it was, and the box
 * still the caller's).  No other reference to the map exists, so every
 * change is in place and the replaced box of a repeated variable can be
 * put back without allocating. */
static int build_put(ctx__hamt_t *map, ctx__box_t *box) {
    ctx__hamt_item_t *old = NULL;
    int r = ctx__hamt_put_inplace(map, &box->item, &ctx__box_ops, &old);
    if (r == 0 && old) { /* listed twice: put the first one back */
        ctx__hamt_item_t *mine = NULL;
        ctx__hamt_put_inplace(map, old, &ctx__box_ops, &mine);
        r = CTX_EINVAL;
    }
    return r;
}

/* The general build: a new box for each (vars[i], values[i]) put in turn
 * (boxes[i] when the caller made them already, else made here), into a
 * root reserved for all n.  On failure nothing is left in the map and
 * every box is freed without releasing a value. */
static int build_by_puts(ctx__hamt_t *map, ctx_var_t *const *vars, void *const *values, size_t n,
                         ctx__box_t **boxes) {
    int r = ctx__hamt_reserve(map, n);
    size_t i = 0;
    for (; r == 0 && i < n; i++) {
        ctx__box_t *box = boxes ? boxes[i] : ctx__box_new(vars[i], values[i]);
        if (!box) {
            r = CTX_ENOMEM;
            break;
        }
        if ((r = build_put(map, box)) != 0) {
            if (!boxes)
                ctx__box_discard(box);
            break;
        }
    }
    if (r) {
        unbuild(map, vars, i);
        for (; boxes && i < n; i++) /* made by the caller, not in the map */
            ctx__box_discard(boxes[i]);
    }
    return r;
}

/* Up to this many values, the boxes are made first and, if the variables'
 * hashes allow (ctx__hamt_build_flat), written straight into a root of
 * exactly n slots: one allocation for the map, no walk per value. */
#define FLAT_MAX 32

static int build(ctx__hamt_t *map, ctx_var_t *const *vars, void *const *values, size_t n) {
    if (n == 0 || n > FLAT_MAX)
        return build_by_puts(map, vars, values, n, NULL);
    ctx__box_t *boxes[FLAT_MAX];
    ctx__hamt_item_t *items[FLAT_MAX];
    for (size_t i = 0; i < n; i++) {
        if (!(boxes[i] = ctx__box_new(vars[i], values[i]))) {
            while (i > 0)
                ctx__box_discard(boxes[--i]);
            return CTX_ENOMEM;
        }
        items[i] = &boxes[i]->item;
    }
    int r = ctx__hamt_build_flat(map, items, n);
    if (r == CTX__HAMT_NOT_FLAT) /* two hashes meet in the root (or a repeat) */
        return build_by_puts(map, vars, values, n, boxes);
    if (r)
        for (size_t i = 0; i < n; i++)
            ctx__box_discard(boxes[i]);
    return r;
}

int ctx_context_new_from(ctx_var_t *const *vars, void *const *values, size_t n,
                         ctx_context_t **out) {
    if (!out || (n && (!vars || !values)))
        return CTX_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!vars[i])
            return CTX_EINVAL;
        CTX__DEBUG_CHECK(vars[i], CTX__KIND_VAR, "ctx_context_new_from");
    }
    ctx_context_t *ctx = context_alloc();
    if (!ctx)
        return CTX_ENOMEM;
    /* No one else has a pointer to ctx yet: no claim, no lock, every node
     * private. */
    int r = build(&ctx->map, vars, values, n);
    if (r) {
        ctx_context_release(ctx); /* holds no value: releases none */
        return r;
    }
    *out = ctx;
    return 0;
}

/* ---- enter, exit, run ---- */

/* Makes `ctx` current, with the reference it holds while entered. */
static int enter(ctx__tstate_t *ts, ctx_context_t *ctx) {
    if (ctx__context_claim(ctx, 1))
        return CTX_EENTERED;
    ctx->prev = ts->current;
    ts->current = ctx;
    ctx->entry = ++ts->epoch;
    ctx__reserve_check(ts);
    ctx__provider_switched(); /* provider.c */
    return 0;
}

/* Makes the previous context current again and drops the entered flag and
 * the reference that came with it (which may free `ctx`). */
static int leave(ctx__tstate_t *ts, ctx_context_t *ctx) {
    if (!(atomic_load_explicit(&ctx->state, memory_order_relaxed) & CTX__ENTERED) ||
        (ts && ctx == ts->base))
        return CTX_ENOTENTERED;
    if (!ts || ts->current != ctx)
        return CTX_ENOTCURRENT;
    ts->current = ctx->prev;
    ctx->prev = NULL;
    ts->epoch++;
    ctx__reserve_check(ts);
    ctx__context_unref(ctx, CTX__ENTERED + CTX__REF);
    ctx__provider_switched(); /* provider.c */
    return 0;
}

int ctx_context_enter(ctx_context_t *ctx) {
    if (!ctx)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_enter");
    int err = 0;
    ctx__tstate_t *ts = ctx__tstate_get(&err);
    if (!ts)
        return err;
    return enter(ts, ctx);
}

int ctx_context_exit(ctx_context_t *ctx) {
    if (!ctx)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_exit");
    return leave(ctx__tls, ctx);
}

int ctx_context_run(ctx_context_t *ctx, ctx_run_fn fn, void *arg, void **result) {
    if (!ctx || !fn)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_run");
    int err = 0;
    ctx__tstate_t *ts = ctx__tstate_get(&err);
    if (!ts)
        return err;
    int r = enter(ts, ctx); /* with a reference: fn may drop the caller's */
    if (r)
        return r;
    uint64_t entry = ctx->entry;
    void *res = fn(arg);
    if (result)
        *result = res;
    /* Compare the address before touching *ctx: if fn exited ctx itself, it
     * may be gone.  If the address is current, the context there is alive;
     * its entry stamp says whether it is still this entry, or fn exited ctx
     * and entered another context (or ctx again) that now sits there. */
    ts = ctx__tls;
    if (!ts || ts->current != ctx || ctx->entry != entry)
        return CTX_ENOTCURRENT; /* ctx stays entered (or fn exited it): exit drops it */
    return leave(ts, ctx);
}

int ctx_context_is_entered(const ctx_context_t *ctx) {
    if (!ctx)
        return 0;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_is_entered");
    return (int)(atomic_load_explicit(&ctx->state, memory_order_acquire) & CTX__ENTERED);
}

/* ---- mapping view ---- */

int ctx_context_get(ctx_context_t *ctx, const ctx_var_t *var, void **out) {
    if (!ctx || !var || !out)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_get");
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_context_get");
    ctx__hamt_item_t *item;
    ctx__context_lock(ctx);
    int found = ctx__hamt_find(&ctx->map, var->hash, var, &ctx__box_ops, &item);
    if (found == 1)
        *out = ((ctx__box_t *)item)->value;
    ctx__context_unlock(ctx);
    return found == 1 ? 0 : CTX_ENOTFOUND;
}

int ctx_context_contains(ctx_context_t *ctx, const ctx_var_t *var) {
    void *unused;
    if (!ctx || !var)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_contains");
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_context_contains");
    return ctx_context_get(ctx, var, &unused) == 0;
}

size_t ctx_context_length(ctx_context_t *ctx) {
    if (!ctx)
        return 0;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_length");
    ctx__context_lock(ctx);
    size_t n = ctx->map.count;
    ctx__context_unlock(ctx);
    return n;
}

/* ---- iteration ---- */

typedef struct iter_state {
    ctx__hamt_t snapshot;
    ctx__hamt_iter_t walk;
    int live;
} iter_state_t;

_Static_assert(sizeof(ctx_iter_t) == 160, "ctx_iter_t is 160 bytes in 1.x");
_Static_assert(sizeof(iter_state_t) <= 128, "ctx_iter_t: ctxvar.h promises 128 bytes in use");

int ctx_iter_init(ctx_iter_t *it, ctx_context_t *ctx) {
    if (!it || !ctx)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_iter_init");
    iter_state_t *st = (iter_state_t *)it;
    st->snapshot = snapshot(ctx);
    ctx__hamt_iter_init(&st->walk, &st->snapshot);
    st->live = 1;
    return 0;
}

int ctx_iter_next(ctx_iter_t *it, ctx_var_t **var, void **value) {
    iter_state_t *st = (iter_state_t *)it;
    if (!it || !st->live)
        return 0;
    ctx__box_t *box = (ctx__box_t *)ctx__hamt_iter_next(&st->walk);
    if (!box)
        return 0;
    if (var)
        *var = ctx__box_var(box);
    if (value)
        *value = box->value;
    return 1;
}

void ctx_iter_clear(ctx_iter_t *it) {
    iter_state_t *st = (iter_state_t *)it;
    if (!it || !st->live)
        return;
    ctx__hamt_release(st->snapshot, &ctx__box_ops);
    st->live = 0;
}

/* ---- formatter ---- */

/* Appends `len` bytes of text at logical position *pos (bytes beyond the
 * buffer are counted, not written). */
static void emit(char *buf, size_t cap, size_t *pos, const char *text, size_t len) {
    if (*pos < cap) {
        size_t room = cap - *pos - 1;
        memcpy(buf + *pos, text, len < room ? len : room);
    }
    *pos += len;
}

/* Formats one value in place at *pos, snprintf-style: with the variable's
 * format operation (whose negative code is passed on), or as a pointer. */
static int emit_value(char *buf, size_t cap, size_t *pos, const ctx_var_t *var,
                      const void *value) {
    if (!var->ops.format) {
        char text[2 + 2 * sizeof(void *) + 8];
        int len = snprintf(text, sizeof text, "%p", value);
        emit(buf, cap, pos, text, len > 0 ? (size_t)len : 0);
        return 0;
    }
    char scratch[1];
    char *at = *pos < cap ? buf + *pos : scratch;
    size_t room = *pos < cap ? cap - *pos : 0;
    int n = var->ops.format(value, room ? at : scratch, room, var->ops.user);
    if (n < 0)
        return n;
    *pos += (size_t)n;
    return 0;
}

int ctx_context_format(ctx_context_t *ctx, char *buf, size_t cap, size_t *len) {
    if (!ctx || (!buf && cap))
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_context_format");
    ctx_iter_t it;
    ctx_var_t *var;
    void *value;
    size_t pos = 0;
    int r = 0;
    ctx_iter_init(&it, ctx);
    for (int first = 1; r == 0 && ctx_iter_next(&it, &var, &value); first = 0) {
        if (!first)
            emit(buf, cap, &pos, " ", 1);
        emit(buf, cap, &pos, var->name, strlen(var->name));
        emit(buf, cap, &pos, "=", 1);
        r = emit_value(buf, cap, &pos, var, value);
    }
    ctx_iter_clear(&it);
    if (cap)
        buf[pos < cap ? pos : cap - 1] = '\0';
    if (r)
        return r;
    if (len)
        *len = pos;
    return pos < cap ? 0 : CTX_ETRUNCATED;
}

int ctx_context_format_current(char *buf, size_t cap, size_t *len) {
    if (ctx__provider_installed()) { /* a host's context (provider.c) */
        int r = ctx__provided_format(buf, cap, len);
        if (r != CTX__NOT_PROVIDED)
            return r;
    }
    ctx__tstate_t *ts = ctx__tls;
    if (ts)
        return ctx_context_format(ts->current, buf, cap, len);
    if (!buf && cap)
        return CTX_EINVAL;
    if (cap)
        buf[0] = '\0';
    if (len)
        *len = 0;
    return 0;
}
