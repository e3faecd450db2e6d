/* SPDX-License-Identifier: MIT */
/*
 * cancel_internal.h — the structures behind ctxvar/cancel.h, shared by
 * scope.c (scopes, the cancellation walk), callback.c (registrations and
 * waits), timer.c (the deadline heap and its thread) and context.c (where
 * the scope lives in a context).  Internal to libctxvar.
 *
 *   scope (refcounted)                         parent
 *   ┌─────────────────────────────┐  retained  ┌──────────┐
 *   │ refs, state, lock           │───────────▶│ children ─┼─▶ c1 ⇄ c2 ⇄ ...
 *   │ parent, pprev/next (in the  │            └──────────┘   (weak links,
 *   │   parent's children list)   │                            parent's lock)
 *   │ children ─▶ weak list       │
 *   │ callbacks ─▶ cb ⇄ cb ⇄ ...  │  (each cb holds a reference)
 *   │ deadline (effective), timer │◀── heap slot in the timer (weak)
 *   │ cause_from ─▶ self/ancestor │
 *   │ cause code, data, release   │
 *   └─────────────────────────────┘
 *
 * Locks: a scope's spinlock guards its state and cause, its children list
 * and every child's pprev/next, and its callbacks list.  No two scope locks
 * are ever held together; the timer's mutex is never held with a scope lock.
 */
#ifndef CTX_CANCEL_INTERNAL_H
#define CTX_CANCEL_INTERNAL_H

#ifndef CTX_BUILD_CORE
#error "src/cancel headers are private to libctxvar: include <ctxvar/cancel.h> instead"
#endif

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <stdatomic.h>

#include "common/common.h"
#include "core/core.h"

#define CTX__NO_DEADLINE INT64_MAX
#define CTX__NO_HEAP_SLOT SIZE_MAX

typedef struct ctx__cancel_cb ctx__cancel_cb_t;

struct ctx_cancel_scope {
    atomic_size_t refs;
    atomic_int state; /* 0 active, else CTX_ECANCELLED / CTX_EDEADLINE (once) */
    atomic_int lock;
    ctx_cancel_scope_t *parent; /* retained; NULL for a root */
    /* In the parent's children list (guarded by the PARENT's lock); pprev
     * is NULL when not linked. */
    ctx_cancel_scope_t **pprev;
    ctx_cancel_scope_t *next;
    ctx_cancel_scope_t *children;  /* weak: children unlink themselves */
    ctx__cancel_cb_t *callbacks;   /* pending registrations */
    int64_t deadline;              /* effective; CTX__NO_DEADLINE; immutable */
    int has_timer;                 /* made with a heap entry; immutable */
    size_t heap_slot;              /* timer mutex; CTX__NO_HEAP_SLOT if none */
    /* The scope whose cause applies: itself or an ancestor (alive as long as
     * this scope, which holds its parent).  Written before `state`. */
    const ctx_cancel_scope_t *cause_from;
    int cause_code;
    void *cause_data;
    void (*cause_release)(void *data);
    /* The canceller's own: its work list, and whether the scope had
     * children / callbacks when it was marked (after the mark the lists
     * can only shrink, so empty ones need no second look). */
    ctx_cancel_scope_t *work_next;
    int had_children;
    int had_callbacks;           /* callbacks left after `first_callback` */
    ctx__cancel_cb_t *first_callback; /* popped by the mark itself, to run */
};

/* ---- scope.c ---- */

/* Takes a reference if the scope is not already dying (refs > 0): 1 or 0.
 * The caller must know the memory is still there (it holds the lock that
 * a dying scope must take before it is freed). */
int ctx__cancel_scope_try_retain(ctx_cancel_scope_t *scope);

/* Cancels `scope` (and its subtree) with `err`; `cause` may be NULL.  The
 * calling thread must have its ctxvar state.  1 if this call cancelled it,
 * 0 if it was cancelled already. */
int ctx__cancel_tree(ctx_cancel_scope_t *scope, int err, const ctx_cancel_cause_t *cause);

/* If the deadline of `scope` has passed and it is still active, cancels the
 * scope that owns that deadline (itself or an ancestor) with CTX_EDEADLINE. */
void ctx__cancel_expire_due(ctx_cancel_scope_t *scope);

/* The spinlock of a scope. */
static inline void ctx__cancel_lock(ctx_cancel_scope_t *s) { ctx__spin_lock(&s->lock); }
static inline void ctx__cancel_unlock(ctx_cancel_scope_t *s) { ctx__spin_unlock(&s->lock); }

/* ---- callback.c ---- */

/* With the scope's lock held: takes the first registration out of the
 * list (it is RUNNING from now on: a clear waits for it), or NULL. */
ctx__cancel_cb_t *ctx__cancel_pop_callback(ctx_cancel_scope_t *scope);

/* Runs the registration the mark popped (if any), then, one at a time and
 * outside the scope's lock, every other one still registered on `scope`,
 * which is cancelled. */
void ctx__cancel_run_callbacks(ctx_cancel_scope_t *scope);

/* ---- timer.c ---- */

/* Puts `scope` (deadline set, not yet visible to other threads except
 * through the heap) in the timer heap, starting the thread if needed.
 * 0, CTX_ENOMEM or CTX_ESYSTEM (not added). */
int ctx__cancel_timer_add(ctx_cancel_scope_t *scope);
/* Removes the scope's heap entry if it still has one. */
void ctx__cancel_timer_remove(ctx_cancel_scope_t *scope);
/* After fork(): starts the thread again if deadlines are pending. */
void ctx__cancel_timer_ensure(void);
/* The mutex/condition pair on which ctx_cancel_callback_clear waits for a
 * callback running on another thread; part of the fork handlers. */
extern pthread_mutex_t ctx__cancel_wait_mutex;
extern pthread_cond_t ctx__cancel_wait_cond;

/* ---- context.c ---- */

/* The library's variable holding a context's scope (NULL until first use). */
extern _Atomic(ctx_var_t *) ctx__cancel_var_slot;

/* The library's variable holding a context's scope; made on first use.
 * NULL with *err = CTX_ENOMEM if it cannot be made. */
ctx_var_t *ctx__cancel_var(int *err);
/* The same without making it: NULL if no scope was ever made current. */
static inline ctx_var_t *ctx__cancel_var_peek(void) {
    return atomic_load_explicit(&ctx__cancel_var_slot, memory_order_acquire);
}
/* The scope of any context (its lock taken for the lookup), retained, or
 * NULL.  For contexts in caller-owned storage too (captures, pool tasks). */
ctx_cancel_scope_t *ctx__cancel_context_scope(ctx_context_t *ctx);

/* The calling thread's current scope, borrowed (valid until the thread
 * changes its current context), or NULL: ctx_cancel_check's probe, one
 * load when no scope was ever made current, else a per-thread cache hit
 * (ctx_var_get on a miss). */
static inline ctx_cancel_scope_t *ctx__cancel_current(void) {
    ctx_var_t *var = ctx__cancel_var_peek();
    ctx__tstate_t *ts = ctx__tls;
    if (!var || !ts)
        return NULL;
    const ctx__cache_entry_t *e = &ts->cache[var->id % CTX__CACHE_SIZE];
    if (e->var_id == var->id && e->epoch == ts->epoch)
        return e->status == CTX_VALUE ? e->value : NULL;
    void *value = NULL;
    return ctx_var_get(var, &value) == CTX_VALUE ? value : NULL;
}

/* ---- for the pool (the same library) ---- */

/* The scope held by `map`, borrowed (valid while the map holds it), or
 * NULL.  The map must not change meanwhile (a private task context's). */
ctx_cancel_scope_t *ctx__cancel_map_scope(const ctx__hamt_t *map);

/* Makes `scope` (retained; NULL: none) the scope of `ctx`, a context no
 * other thread can reach and that is not entered (an embedded task
 * context): no lock, no claim.  0 or CTX_ENOMEM (nothing changed). */
int ctx__cancel_context_put(ctx_context_t *ctx, ctx_cancel_scope_t *scope);

/* The scope's error, and, for an active scope whose deadline has passed
 * (the timer thread is late, or absent after fork()), the cancellation of
 * the scope that owns that deadline first, on this thread (which must have
 * its ctxvar state): so a scheduler about to start work never starts it
 * after the deadline.  0 while active. */
int ctx__cancel_scope_poll(ctx_cancel_scope_t *scope);

#endif /* CTX_CANCEL_INTERNAL_H */
