/* SPDX-License-Identifier: MIT */
/*
 * core.h — the structures behind ctxvar.h, shared by var.c, context.c and
 * tstate.c (internal).
 *
 *   thread state (one per thread, ctx__tls)          context (refcounted)
 *   ┌──────────────────────────┐                      ┌──────────────────┐
 *   │ current ────────────────────────────────────▶ │ map: ctx__hamt_t │──▶ HAMT nodes,
 *   │ base (made at first use) │                      │ prev (while      │    shared by
 *   │ epoch                    │                      │  entered)        │    every copy
 *   │ cache[64]: var id,epoch, │                      │ entered, lock    │
 *   │            value, status │                      └──────────────────┘
 *   └──────────────────────────┘
 *
 * The map's items are *boxes*: one per successful set, holding the variable
 * (key, retained) and the value (one share, released when the box dies).
 *
 * Who may touch a context's map: the thread in which it is current (set,
 * reset, get_for_write change it, in place when its nodes are unshared),
 * past the context's gate, or under its lock once a reader on another
 * thread closed the gate (gate.c); any other thread only reads it under
 * that lock.  The owner skips both when no other thread can reach the
 * context at all (ctx__context_lock_owned).  The
 * owning thread's own reads (ctx_var_get) need no lock since no one else
 * writes.  A context that is not entered is changed only by
 * ctx_context_set, which marks it entered for the duration.
 *
 * The cache: ctx_var_get remembers (variable id, epoch) → (value, status) per
 * thread; the epoch changes whenever the current map changes or another
 * context becomes current, which invalidates every entry at once.  Variable
 * ids are never reused, so a dead variable's entry can never be mistaken for a
 * new one's.
 */
#ifndef CTX_CORE_CORE_H
#define CTX_CORE_CORE_H

/* Private to the core library (libctxvar: src/core and src/pool).  Other
 * modules use the public API (ctxvar.h); see docs/api-rules.md. */
#ifndef CTX_BUILD_CORE
#error "src/core headers are private to libctxvar: include <ctxvar.h> instead"
#endif

#include <ctxvar.h>
#include <stdatomic.h>

#include "common/common.h"
#include "common/debug.h"
#include "core/hamt.h"

/* CTX_DEBUG's kinds of core objects (common/debug.h).  A context in
 * caller-owned storage (a capture, a pool task's) is a "capture". */
#define CTX__KIND_CONTEXT CTX__DEBUG_KIND(0x43545854u, "context", "already released")
#define CTX__KIND_CAPTURE CTX__DEBUG_KIND(0x43415054u, "capture", "already cleared")
#define CTX__KIND_TOKEN CTX__DEBUG_KIND(0x544f4b4eu, "token", "already released")
#define CTX__KIND_VAR CTX__DEBUG_KIND(0x56415231u, "variable", "already released")

/* An entry of the per-thread queue of dead boxes and variables
 * (release.c). */
typedef struct ctx__dead {
    struct ctx__dead *next;
    ctx_var_t *var;
    void *value;
} ctx__dead_t;

struct ctx_var {
    atomic_size_t refs; /* its owners, and a counted variable's holders */
    uint64_t id; /* unique, never reused; the cache key */
    uint32_t hash;
    int has_default;
    int counted; /* 0: CTX_VAR_STATIC (ctx__var_hold) */
#if defined(CTX_DEBUG)
    atomic_size_t debug_holders; /* a static variable's holders */
#endif
    void *default_value;
    ctx_value_ops_t ops;
    size_t size; /* bytes allocated, name included */
    ctx__dead_t dead; /* its entry in the release queue once dead */
    CTX__DEBUG_MEMBER
    char name[];
};

/* What holds a value of a variable holds the variable: a value's box, and a
 * token that has no old box to do it.  A counted variable gets a reference
 * per holder (released with ctx_var_release, which may end it); a static
 * one (CTX_VAR_STATIC) nothing, which is its point: its owner keeps it
 * alive for them.  CTX_DEBUG counts a static variable's holders so that a
 * last release made while some remain aborts (var.c). */
static inline ctx_var_t *ctx__var_hold(ctx_var_t *var) {
    CTX__DEBUG_CHECK(var, CTX__KIND_VAR, "ctx_var_retain"); /* as a retain did */
    if (var->counted)
        atomic_fetch_add_explicit(&var->refs, 1, memory_order_relaxed);
#if defined(CTX_DEBUG)
    else
        atomic_fetch_add_explicit(&var->debug_holders, 1, memory_order_relaxed);
#endif
    return var;
}

static inline void ctx__var_unhold(ctx_var_t *var) {
    if (var->counted)
        ctx_var_release(var);
#if defined(CTX_DEBUG)
    else
        atomic_fetch_sub_explicit(&var->debug_holders, 1, memory_order_release);
#endif
}

typedef struct ctx__box {
    ctx__hamt_item_t item; /* key = the variable */
    void *value;
} ctx__box_t;

/* A context's `state` packs its reference count and its entered flag in one
 * word (CTX__REF per reference, plus CTX__ENTERED while entered), so that
 * entering a context and taking the reference it holds while entered is one
 * compare-and-swap, and leaving it and dropping that reference one
 * fetch-and-subtract: run costs two atomic operations, not four. */
#define CTX__ENTERED ((size_t)1)
#define CTX__REF ((size_t)2)

struct ctx_context {
    atomic_size_t state;
    uint64_t id; /* unique, never reused: tokens check it; 0 until the
                    first token needs it (ctx__context_id) */
    /* The lock word (gate.c): CTX__LOCK_HELD while a reader (or an owner
     * the gate sent to the lock) holds it, CTX__LOCK_SHUT once a reader on
     * another thread has looked while the context was entered.  0: the
     * owner changes the map without taking it, `writing` raised meanwhile. */
    atomic_int lock;
    unsigned char embedded; /* in caller-owned storage (embed.c): never freed here */
    atomic_uchar writing;
    ctx__hamt_t map;
    ctx_context_t *prev; /* the context current before this one's enter */
    /* While entered: the entering thread's epoch just after the enter.  A
     * thread's epochs only grow, so this tells one entry from any later one,
     * of the same context or of another made at the same address. */
    uint64_t entry;
    CTX__DEBUG_MEMBER
};

/* Sets the entered flag and adds `refs` * CTX__REF in one operation: 0, or
 * CTX_EENTERED if the flag was set already (nothing changed).  Always a
 * compare-and-swap (seq_cst: gate.c relies on it), even when the state
 * shows a single reference: the holder of that reference may share the
 * pointer with other threads (a context is borrowed, not retained, by
 * whoever its holder lets use it), so one reference does not mean one
 * thread. */
static inline int ctx__context_claim(ctx_context_t *ctx, size_t refs) {
    size_t s = atomic_load_explicit(&ctx->state, memory_order_relaxed);
    do {
        if (s & CTX__ENTERED)
            return CTX_EENTERED;
    } while (!atomic_compare_exchange_weak_explicit(&ctx->state, &s,
                                                    s + CTX__ENTERED + refs * CTX__REF,
                                                    memory_order_seq_cst, memory_order_relaxed));
    return 0;
}

/* Subtracts `amount` from the state (references and/or the entered flag)
 * and frees the context if nothing is left. */
void ctx__context_unref(ctx_context_t *ctx, size_t amount);

struct ctx_token {
    ctx_context_t *ctx; /* not retained: compared with ctx_id */
    uint64_t ctx_id;
    ctx_var_t *var; /* retained, by `old` when there is one */
    ctx__box_t *old;    /* retained; NULL: the variable had no value */
    atomic_int used;
    CTX__DEBUG_MEMBER
};

#define CTX__CACHE_SIZE 64

typedef struct ctx__cache_entry {
    uint64_t var_id;
    uint64_t epoch;
    void *value;
    int status;
} ctx__cache_entry_t;

typedef struct ctx__tstate {
    ctx_context_t *current;
    ctx_context_t *base;
    uint64_t epoch;
    ctx__cache_entry_t cache[CTX__CACHE_SIZE];
    /* Spare references to the current map's root (reserve.c). */
    ctx__hamt_node_t *reserve_root;
    size_t reserve_spare;
} ctx__tstate_t;

extern _Thread_local ctx__tstate_t *ctx__tls;

/* ---- the reserve of references to the current map (reserve.c) ---- */

/* Taking and giving references: core/reserve.h (inline fast paths). */
/* Drops every spare reference. */
void ctx__reserve_flush(ctx__tstate_t *ts);
/* After the current context or its map changed: no spares for a map that
 * is not the current one (reserve.c, "the invariant"). */
static inline void ctx__reserve_check(ctx__tstate_t *ts) {
    if (ts->reserve_spare && ts->current->map.root != ts->reserve_root)
        ctx__reserve_flush(ts);
}
/* Before a change of the current map: no spares (reserve.c). */
static inline void ctx__reserve_drain(ctx__tstate_t *ts) {
    if (ts->reserve_spare)
        ctx__reserve_flush(ts);
}

/* Makes the calling thread's state (ctx__tstate_get's slow path). */
ctx__tstate_t *ctx__tstate_make(int *err);

/* The calling thread's state, made (with an empty base context) on first
 * use.  NULL with *err = CTX_ENOMEM / CTX_ESYSTEM if it cannot be made.
 * Inline: every run, enter and set starts here, and after the first call
 * it is one thread-local load. */
static inline ctx__tstate_t *ctx__tstate_get(int *err) {
    ctx__tstate_t *ts = ctx__tls;
    if (__builtin_expect(ts != NULL, 1))
        return ts;
    return ctx__tstate_make(err);
}

/* The map operations of a context's map (boxes keyed by variable identity). */
extern const ctx__hamt_ops_t ctx__box_ops;

/* A new box holding `var` (retained) and `value`, refs = 1 (the creator's,
 * which ctx__hamt_put_inplace takes over); NULL if out of memory.
 * ctx__box_discard frees a box no map took (a failed set): the value is not
 * released. */
ctx__box_t *ctx__box_new(ctx_var_t *var, void *value);
void ctx__box_discard(ctx__box_t *box);

/* release.c: a box whose last reference was dropped (its value is released,
 * then its variable), and a variable whose last reference was dropped (its
 * default is released, then its memory freed).  Never recursive: see there. */
void ctx__release_box(ctx__box_t *box);
void ctx__release_var(ctx_var_t *var);

static inline ctx_var_t *ctx__box_var(const ctx__box_t *box) {
    return (ctx_var_t *)box->item.key;
}

/* The lock word's bits (gate.c). */
enum { CTX__LOCK_HELD = 1, CTX__LOCK_SHUT = 2 };

/* The lock word as a spinlock, held for a few hundred nanoseconds at most
 * (one map operation): sets HELD (waiting while another holder has it),
 * keeping SHUT, and returns the word as it was; ctx__context_unlock clears
 * HELD.  The owner's way to the lock; readers go through
 * ctx__context_lock. */
int ctx__context_lock_word(ctx_context_t *ctx);
static inline void ctx__context_unlock(ctx_context_t *ctx) {
    int w = atomic_load_explicit(&ctx->lock, memory_order_relaxed);
    atomic_store_explicit(&ctx->lock, w & CTX__LOCK_SHUT, memory_order_release);
}

/* The context's lock, as a reader takes it (gate.c): contended only when
 * another thread reads a context while its owner changes it.  Taking it
 * shuts the owner's gate for good when the context is entered in another
 * thread (one membarrier, once in the context's life).  Released with
 * ctx__context_unlock.  Inline: the common case, a context nobody holds,
 * shut or entered, is one compare-and-swap and one load. */
void ctx__context_lock_slow(ctx_context_t *ctx, int held);
static inline void ctx__context_lock(ctx_context_t *ctx) {
    int w = 0;
    if (atomic_compare_exchange_strong_explicit(&ctx->lock, &w, CTX__LOCK_HELD,
                                                memory_order_seq_cst, memory_order_relaxed)) {
        if (!(atomic_load_explicit(&ctx->state, memory_order_seq_cst) & CTX__ENTERED))
            return; /* no owner: one that enters from now on finds the lock held */
        ctx__context_lock_slow(ctx, 1);
        return;
    }
    ctx__context_lock_slow(ctx, 0);
}

/* Whether owners may pass gates at all in this process: CTX__GATES_OPEN
 * where it can make the other threads fence (membarrier), else
 * CTX__GATES_SHUT (owners always lock); 0 until decided, which every thread
 * state's making does first (ctx__gate_decide), so an owner that entered a
 * context reads the decision. */
enum { CTX__GATES_OPEN = 1, CTX__GATES_SHUT = 2 };
extern atomic_uchar ctx__gate_mode;
void ctx__gate_decide(void);

/* How the owner of `ctx` (the thread that entered it, or ctx_context_set,
 * which marks it entered for the change) begins a change of its map: 2,
 * past the open gate (a lock word of 0) with `writing` raised (gate.c); 1,
 * under the lock.  Give the result to ctx__context_unlock_owned. */
static inline int ctx__context_gate_pass(ctx_context_t *ctx) {
    atomic_store_explicit(&ctx->writing, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst); /* a reader's membarrier does the rest */
    if (atomic_load_explicit(&ctx->lock, memory_order_seq_cst) == 0 &&
        atomic_load_explicit(&ctx__gate_mode, memory_order_relaxed) == CTX__GATES_OPEN)
        return 2;
    atomic_store_explicit(&ctx->writing, 0, memory_order_release);
    (void)ctx__context_lock_word(ctx);
    return 1;
}

/* ctx__context_gate_pass for the thread in which `ctx` is current, which
 * may also skip it: 0 when the context's only reference is the one it holds
 * while entered (a thread's own base context, a pool task's context), since
 * then no other thread has a pointer to it and none can obtain one (only the
 * holder of a reference could hand one out).  Not for ctx_context_set: its
 * caller's one reference may be lent to readers on other threads. */
static inline int ctx__context_lock_owned(ctx_context_t *ctx) {
    if (atomic_load_explicit(&ctx->state, memory_order_acquire) == CTX__REF + CTX__ENTERED)
        return 0;
    return ctx__context_gate_pass(ctx);
}

static inline void ctx__context_unlock_owned(ctx_context_t *ctx, int locked) {
    if (locked == 2)
        atomic_store_explicit(&ctx->writing, 0, memory_order_release);
    else if (locked == 1)
        ctx__context_unlock(ctx);
}

/* A new empty context (one reference, not entered), or NULL. */
ctx_context_t *ctx__context_alloc(void);

/* A process-wide unique id (never 0, never reused) for contexts; taken from
 * a per-thread block so most calls touch no atomic.  (Variables have their
 * own dense counter, var.c.) */
uint64_t ctx__next_id(void);

/* The context's id, given when a token first needs it: most contexts (a
 * pool task's, a loop callback's) never make a token, and an id costs a
 * call.  Only the thread on which `ctx` is current calls this (a set makes
 * tokens in the current context; a reset reads the id only when its
 * token's context is current), so the write needs no lock.  A token's id is
 * never 0, so a context that has none yet refuses every token, as a new
 * context must. */
static inline uint64_t ctx__context_id(ctx_context_t *ctx) {
    if (!ctx->id)
        ctx->id = ctx__next_id();
    return ctx->id;
}

/* Tests only: gives `var` a chosen hash; call before any value is set. */
void ctx__var_force_hash(ctx_var_t *var, uint32_t hash);

/* ---- embed.c: contexts in caller-owned storage (the pool's task records) ----
 * `storage` is memory the caller owns (e.g. a member of its own record);
 * the core never frees it.  Between an init and ctx__context_clear it is a
 * context with one reference that must not be handed to ctx_context_release,
 * ctx_context_retain or ctx_context_run. */

/* An empty context in `storage`. */
void ctx__context_init_empty(ctx_context_t *storage);
/* A copy of the calling thread's current context (empty if the thread has
 * none yet) in `storage`: O(1), never fails. */
void ctx__context_init_copy_current(ctx_context_t *storage);
/* A copy of `src` (any context, any thread; not NULL) in `storage`. */
void ctx__context_init_copy(ctx_context_t *storage, ctx_context_t *src);
/* Releases the map of a context in storage that is not entered; the storage
 * may then be initialised again or dropped. */
void ctx__context_clear(ctx_context_t *ctx);
/* ctx_context_run for a context in storage, without touching its refs:
 * enters it, calls fn(arg), stores the return value in *result (if not
 * NULL) and leaves it.  Always returns with the context not entered and out
 * of the thread's chain: if fn left contexts it entered still entered, they
 * are relinked on top of the context current before the run and
 * CTX_ENOTCURRENT is returned (fn ran; *result is stored).  Other errors
 * (fn not called): CTX_EENTERED, CTX_ENOMEM / CTX_ESYSTEM (no thread state). */
int ctx__context_run_embedded(ctx_context_t *ctx, ctx_run_fn fn, void *arg, void **result);
/* ctx__context_run_embedded for storage no other thread can reach (a pool
 * worker's task context on its own stack): the same, without atomic
 * read-modify-writes of the entered flag. */
int ctx__context_run_private(ctx_context_t *ctx, ctx_run_fn fn, void *arg, void **result);

#endif /* CTX_CORE_CORE_H */
