/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/host.h — hosting ctxvar inside a runtime that has a current
 * context of its own (part of the core library, libctxvar).
 *
 * Why
 * ---
 * An interpreter or a coroutine scheduler may switch "what is current" many
 * times per thread without telling anyone: Python's asyncio enters a
 * different `contextvars.Context` for every task step and every callback.
 * C code called from there must see the values of the task it runs for,
 * not a per-thread context that the scheduler never switched.  Before
 * Python 3.14 there is no hook that reports those switches, so the host
 * does the opposite: it *answers* when ctxvar asks.  A host installs a
 * context provider; whenever ctxvar needs the calling thread's current
 * context and the thread has not entered one through ctxvar itself, it asks
 * the provider, which returns the context that belongs to what the host
 * considers current (the Python binding keeps it in a hidden
 * `contextvars.ContextVar`, so every switch asyncio makes switches it too).
 *
 * Which context is current
 * ------------------------
 * While a provider is installed, a thread's current context is, in order:
 *
 *   1. the context it entered last through ctxvar (ctx_context_enter,
 *      ctx_context_run, ctx_capture_run: pool tasks, loop callbacks), while
 *      it stays entered;
 *   2. otherwise the provider's context for the thread (`current` returns
 *      it; NULL means "none here": a thread the host does not know, or one
 *      that cannot reach the host's state just now);
 *   3. otherwise the thread's own base context, as without a provider.
 *
 * A provided context is read-only for the core: it never enters it, never
 * changes its map and reads it without its lock, so the host must not
 * change it while it is provided (the binding never changes a context once
 * it has handed it out).  What the core does with it:
 *
 *   ctx_var_get, ctx_var_get_or       look the variable up in it (without
 *                                     the per-thread cache);
 *   ctx_var_set, ctx_var_reset,       build a new context (a copy of the
 *   ctx_var_get_for_write             provided one, O(1), with the change)
 *                                     and hand it to `publish`, which makes
 *                                     it the provided context from then on;
 *                                     get_for_write therefore clones every
 *                                     time it is called;
 *   ctx_context_copy_current,         copy its map (`current` is called with
 *   ctx_capture_current (so pool      CTX_PROVIDER_COPY: the map will be
 *   submits and loop calls)           shared beyond the call);
 *   ctx_context_format_current        format it.
 *
 * Tokens made by a set in a provided context name the host's *scope* (the
 * host's own context object, through `scope_retain`), not a ctxvar
 * context: a reset with one succeeds where `scope_is_current` says the
 * scope is current, and fails with CTX_ETOKENCTX elsewhere (including
 * inside a context entered through ctxvar).  Tokens made in a context
 * entered through ctxvar keep their usual rule.
 *
 * The provider's functions are called without any ctxvar lock held, on the
 * thread whose context is asked for; they must not call back into ctxvar
 * for the calling thread's current context (ctx_var_get/set and friends),
 * but may use the ctx_context_* functions on contexts they hold.
 *
 * Threads: ctx_set_context_provider may be called while other threads use
 * the library, once per process (or again after removing it, when no
 * thread can still be inside a call of the removed provider).  The other
 * functions here are for any thread.
 */
#ifndef CTXVAR_HOST_H
#define CTXVAR_HOST_H

#include <ctxvar.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why the core asks for the provided context. */
typedef enum ctx_provider_use {
    /* A lookup or a set: the context is read during the call only. */
    CTX_PROVIDER_READ = 0,
    /* A copy or a capture: the core keeps a reference to the context's map
     * (its values) after the call, possibly on other threads. */
    CTX_PROVIDER_COPY = 1
} ctx_provider_use_t;

/* What a host hands to ctx_set_context_provider: the functions through
 * which the core reads and changes the host's current context. */
typedef struct ctx_context_provider {
    size_t size; /* sizeof(ctx_context_provider_t): see "Growable structs" */
    /* The calling thread's provided context (borrowed: it must stay valid
     * and unchanged until the host switches away from it, which it cannot
     * do during the ctxvar call that asked), or NULL for none.  Required. */
    ctx_context_t *(*current)(ctx_provider_use_t use, void *user);
    /* Makes `ctx` the calling thread's provided context from now on, in
     * place of the one `current` returned during this call (`ctx` is a new
     * context: a copy of that one with one change).  On success the host
     * owns the caller's reference to `ctx` (release it with
     * ctx_context_release when it is no longer provided anywhere) and must
     * never change it.  Returns 0 or a negative CTX_E* code (then nothing
     * changed and `ctx` stays the caller's).  Required. */
    int (*publish)(ctx_context_t *ctx, void *user);
    /* Tokens (optional as a group: without them, ctx_var_set with a token
     * in a provided context fails with CTX_EINVAL).  scope_retain returns a
     * new handle naming the caller's current scope, or NULL if it cannot
     * (CTX_ENOMEM); scope_is_current returns 1 if `scope` names the
     * caller's current scope, else 0; scope_release drops a handle, on any
     * thread (ctx_token_release may run anywhere). */
    void *(*scope_retain)(void *user);
    int (*scope_is_current)(void *scope, void *user); /* see scope_retain */
    void (*scope_release)(void *scope, void *user);   /* see scope_retain */
    /* Optional: called after ctxvar changed the calling thread's current
     * context (an enter, an exit, a run, a capture run), so that a host
     * caching lookups keyed on its own context can tell that a context
     * entered through ctxvar now comes first, or no longer does.  May run
     * on any thread, often (every pool task): keep it cheap. */
    void (*switched)(void *user);
    void *user; /* passed to each function */
} ctx_context_provider_t;

/* Installs `provider` (copied), or removes the installed one (NULL).
 * Returns 0, CTX_EBUSY (another provider is installed: remove it first),
 * CTX_EINVAL (`current` or `publish` NULL, the token functions only partly
 * given, or `size` breaking the growth rule).  Any thread (see above). */
CTX_EXPORT int ctx_set_context_provider(const ctx_context_provider_t *provider);

/* What ctx_context_visit calls for each value: `exclusive` says whether
 * nothing but the visited context keeps the value's share alive.  Return 0
 * to go on, anything else to stop. */
typedef int (*ctx_context_visit_fn)(ctx_var_t *var, void *value, int exclusive, void *arg);

/* ctx_context_visit's flags. */
#define CTX_VISIT_EXCLUSIVE 1u /* compute `exclusive` (else it is always 0) */

/* For a host that stores its own objects as values (and its garbage
 * collector): calls visit(var, value, exclusive, arg) for each variable that
 * has a value in `ctx`, in iteration order, until a call returns non-zero
 * (then returns that).  With CTX_VISIT_EXCLUSIVE in `flags`, `exclusive` is
 * 1 when nothing but `ctx` keeps that value's share alive (no other
 * reference to `ctx`, and no other context, copy, capture, iterator or
 * token shares the value or any map node above it), so the share goes when
 * `ctx` is released; else 0 (without the flag: always 0, and cheaper).
 * `ctx` must not change during the call (not entered anywhere, no
 * ctx_context_set); other threads may copy it or drop their copies
 * meanwhile, which can make a 0 stale, never a 1.  Takes no lock, never
 * allocates, calls `visit` with no lock held.  Returns 0, visit's non-zero
 * result, or CTX_EINVAL (NULL argument, unknown flag).  Any thread. */
CTX_EXPORT int ctx_context_visit(ctx_context_t *ctx, unsigned flags, ctx_context_visit_fn visit,
                                  void *arg);

/* 1 if the calling thread's current context is one it entered through
 * ctxvar (ctx_context_enter, ctx_context_run, ctx_capture_run) and has not
 * left, 0 if it is the thread's base context or the provider's (or the
 * thread has no ctxvar state yet).  Never allocates.  Any thread. */
CTX_EXPORT int ctx_thread_has_entered(void);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_HOST_H */
