/* SPDX-License-Identifier: MIT */
/*
 * bind.c — bound callables: capture the current context now, call later.
 *
 * What it is for
 * --------------
 * Every C callback API (a timer, a signal handler thread, a library that
 * calls back from its own threads) loses the context of the code that
 * registered the callback.  ctx_pool_bound_new captures it (an O(1) copy) together
 * with the function and its argument; the bound callable can then be handed
 * to any such API, and each call runs the function in the captured context,
 * from any thread, any number of times.
 *
 *     ctx_pool_bound_t { refs | flags | fn | arg | arg_release | context }
 *                                                              │
 *     ctx_pool_bound_call ── default ──► copy(context) ─► run ─► release copy
 *                  └─ SHARED ───► run in context itself (one caller at a time)
 *
 * Invariants
 * ----------
 * - By default the captured context is never entered: every call works in a
 *   fresh copy, so concurrent calls cannot see each other's sets and the
 *   captured snapshot never changes.
 * - With CTX_POOL_BOUND_SHARED the captured context is entered by ctx_context_run;
 *   the core refuses to enter a context that is entered anywhere, so a
 *   concurrent or nested call fails with CTX_EENTERED and nothing is
 *   corrupted.
 * - The bound callable owns its context copy and (with arg_release) its arg;
 *   both go when the last reference is released.
 */
#include "pool_internal.h"

#include "common/common.h"
#include "core/alloc.h"

#include <stdatomic.h>
#include <string.h>

struct ctx_pool_bound {
    atomic_uint refs;
    unsigned flags;
    ctx_pool_bound_fn fn;
    void *arg;
    void (*arg_release)(void *arg);
    ctx_context_t *context;
    CTX__DEBUG_MEMBER /* CTX_DEBUG: live or released (common/debug.h) */
};

#define CTX__KIND_BOUND CTX__DEBUG_KIND(0x424f554eu, "bound callable", "already released")

int ctx_pool_bound_new(ctx_pool_bound_fn fn, void *arg, const ctx_pool_bound_options_t *options,
                 ctx_pool_bound_t **out) {
    if (!fn || !out)
        return CTX_EINVAL;
    ctx_pool_bound_options_t o = CTX_STRUCT_INIT(ctx_pool_bound_options_t);
    if (options &&
        ctx__struct_in(&o, sizeof o, options, CTX__SIZE_1_0(ctx_pool_bound_options_t, arg_release)))
        return CTX_EINVAL;
    unsigned flags = o.flags;
    if (flags & ~CTX_POOL_BOUND_SHARED)
        return CTX_EINVAL;
    ctx_pool_bound_t *b = ctx__malloc(sizeof *b);
    if (!b)
        return CTX_ENOMEM;
    memset(b, 0, sizeof *b);
    int rc = o.context ? ctx_context_copy(o.context, &b->context)
                       : ctx_context_copy_current(&b->context);
    if (rc != 0) {
        ctx__free(b, sizeof *b);
        return rc;
    }
    atomic_init(&b->refs, 1);
    b->flags = flags;
    b->fn = fn;
    b->arg = arg;
    b->arg_release = o.arg_release;
    CTX__DEBUG_BORN(b, CTX__KIND_BOUND);
    *out = b;
    return 0;
}

typedef struct bind_call {
    ctx_pool_bound_t *bound;
    void *call_arg;
} bind_call_t;

static void *bind_trampoline(void *p) {
    bind_call_t *c = p;
    return c->bound->fn(c->bound->arg, c->call_arg);
}

int ctx_pool_bound_call(ctx_pool_bound_t *bound, void *call_arg, void **result) {
    if (!bound)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(bound, CTX__KIND_BOUND, "ctx_pool_bound_call");
    bind_call_t call = {bound, call_arg};
    void *r = NULL;
    int rc;
    if (bound->flags & CTX_POOL_BOUND_SHARED) {
        rc = ctx_context_run(bound->context, bind_trampoline, &call, &r);
    } else {
        ctx_context_t *copy = NULL;
        rc = ctx_context_copy(bound->context, &copy);
        if (rc != 0)
            return rc;
        rc = ctx_context_run(copy, bind_trampoline, &call, &r);
        ctx_context_release(copy); /* run held its own while entered */
    }
    if (result && (rc == 0 || rc == CTX_ENOTCURRENT))
        *result = r;
    return rc;
}

void *ctx_pool_bound_trampoline(void *bound) {
    void *r = NULL;
    if (ctx_pool_bound_call(bound, NULL, &r) != 0)
        return NULL;
    return r;
}

void ctx_pool_bound_trampoline_void(void *bound) {
    (void)ctx_pool_bound_call(bound, NULL, NULL);
}

ctx_pool_bound_t *ctx_pool_bound_retain(ctx_pool_bound_t *bound) {
    if (bound) {
        CTX__DEBUG_CHECK(bound, CTX__KIND_BOUND, "ctx_pool_bound_retain");
        atomic_fetch_add_explicit(&bound->refs, 1, memory_order_relaxed);
    }
    return bound;
}

void ctx_pool_bound_release(ctx_pool_bound_t *bound) {
    if (!bound)
        return;
    CTX__DEBUG_CHECK(bound, CTX__KIND_BOUND, "ctx_pool_bound_release");
    if (atomic_fetch_sub_explicit(&bound->refs, 1, memory_order_acq_rel) != 1)
        return;
    CTX__DEBUG_DIED(bound, CTX__KIND_BOUND);
    ctx_context_release(bound->context);
    if (bound->arg_release)
        bound->arg_release(bound->arg);
    ctx__free(bound, sizeof *bound);
}
