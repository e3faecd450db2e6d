/* SPDX-License-Identifier: MIT */
/*
 * provider.h — the context provider's hooks in the core (internal; the
 * public side is include/ctxvar/host.h, the code provider.c).
 *
 * Each core function that uses "the calling thread's current context" starts
 * with one test, false unless a host installed a provider:
 *
 *     if (ctx__provider_installed()) {
 *         int r = ctx__provided_get(var, out);
 *         if (r != CTX__NOT_PROVIDED)
 *             return r;
 *     }
 *
 * and the ctx__provided_* function either does the whole operation on the
 * provided context or answers CTX__NOT_PROVIDED (a context entered through
 * ctxvar is current, or the provider has none for this thread), after which
 * the core goes on exactly as without a provider.  Functions that change the
 * thread's current context call ctx__provider_switched() afterwards.
 */
#ifndef CTX_CORE_PROVIDER_H
#define CTX_CORE_PROVIDER_H

#ifndef CTX_BUILD_CORE
#error "src/core headers are private to libctxvar: include <ctxvar.h> instead"
#endif

#include <ctxvar/host.h>
#include <stdatomic.h>

/* A result no ctx_* function returns: "do it the usual way". */
#define CTX__NOT_PROVIDED 0x7ffe

/* The installed provider (a copy in provider.c), NULL if none. */
extern _Atomic(const ctx_context_provider_t *) ctx__provider;

/* The hot path's test: one relaxed load. */
static inline int ctx__provider_installed(void) {
    return atomic_load_explicit(&ctx__provider, memory_order_relaxed) != NULL;
}

/* After a change of the calling thread's current context. */
static inline void ctx__provider_switched(void) {
    const ctx_context_provider_t *p = atomic_load_explicit(&ctx__provider, memory_order_acquire);
    if (p && p->switched)
        p->switched(p->user);
}

/* The operations on a provided context: CTX__NOT_PROVIDED, or the result of
 * the public function of the same name. */
int ctx__provided_get(const ctx_var_t *var, void **out);
int ctx__provided_set(ctx_var_t *var, void *value, ctx_token_t **token);
int ctx__provided_reset(ctx_var_t *var, ctx_token_t *token);
int ctx__provided_get_for_write(ctx_var_t *var, void **out);
int ctx__provided_copy(ctx_context_t **out);
int ctx__provided_format(char *buf, size_t cap, size_t *len);
/* ctx__context_init_copy_current for a provided context: 0, or
 * CTX__NOT_PROVIDED (nothing stored). */
int ctx__provided_init_copy(ctx_context_t *storage);
/* 1 if `token` was made in a provided context (then it has been released),
 * 0 if it is an ordinary token. */
int ctx__provided_token_release(ctx_token_t *token);

#endif /* CTX_CORE_PROVIDER_H */
