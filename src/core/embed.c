/* SPDX-License-Identifier: MIT */
/*
 * embed.c — contexts in storage a caller owns (the pool's task records,
 * and the public ctx_capture_t that the loop and users build on).
 *
 * What it is for
 * --------------
 * A pool task runs in a context of its own that lives exactly as long as
 * the task: made at submit, entered once on a worker, dropped when the task
 * returns.  As a heap object that is one allocation on the submitting
 * thread and one free on a worker per task: a cross-thread free, which
 * starves the submitter's allocator cache and, for an empty task, was a
 * quarter of the time.  So the pool keeps the task's context *inside* its
 * task record (which it recycles) and uses these functions instead of
 * ctx_context_copy / ctx_context_run / ctx_context_release:
 *
 *     record { ... | struct ctx_context storage | ... }
 *                         │
 *     submit:  ctx__context_init_copy_current(&storage)   map retained, O(1)
 *     worker:  ctx__context_run_embedded(&storage, fn, arg, &r)
 *     worker:  ctx__context_clear(&storage)               map released
 *
 * Invariants
 * ----------
 * - Embedded storage is never freed by the core: its one reference stays (the
 *   storage owner's, nominal) from init to clear, and no function here
 *   changes it.  That is sound because no public function hands out a
 *   pointer to a context it did not get from its caller: the only way to
 *   reach the storage is through the thread's chain of entered contexts,
 *   which ctx_context_retain is never applied to (a copy of the current
 *   context copies its map, not the context).
 * - ctx__context_run_embedded always leaves the storage not entered and out
 *   of the thread's chain when it returns, even when the function left
 *   contexts of its own entered on top of it (it then unlinks the storage
 *   from under them and returns CTX_ENOTCURRENT; those contexts stay
 *   entered, now on top of what was current before the run, and the
 *   thread's exit releases them as usual).  So the storage can always be
 *   cleared and reused afterwards.
 * - Each init clears the id; the first token made in the storage gives it
 *   a fresh one (ctx__context_id), so a token made in an earlier use of the
 *   same storage is refused (CTX_ETOKENCTX) by a later one.
 *
 * Snapshots
 * ---------
 * A ctx_snapshot_t is a map reference alone (its first 16 bytes are the
 * map's; the rest, room for later versions, stays zero).
 * Running one needs a context only for the length of the run, so the run
 * makes it on its own stack: the storage takes over the snapshot's
 * reference (the snapshot is emptied first, so a function that reaches the
 * snapshot cannot drop that reference twice), is run like private storage
 * (no locked instruction: nothing else can reach it), and is cleared when
 * fn returns, releasing whatever fn set.  A later run at the same stack
 * address is a new context as far as tokens go: its id starts at 0.
 */
#include "core/core.h"
#include "core/provider.h"
#include "core/reserve.h"

#include <string.h>

static void init(ctx_context_t *ctx, ctx__hamt_t map) {
    atomic_init(&ctx->state, CTX__REF);
    ctx->id = 0; /* a fresh one when a token needs it (ctx__context_id) */
    atomic_init(&ctx->lock, 0);
    ctx->embedded = 1;
    atomic_init(&ctx->writing, 0);
    ctx->map = map;
    ctx->prev = NULL;
    ctx->entry = 0;
    CTX__DEBUG_BORN(ctx, CTX__KIND_CAPTURE);
}

void ctx__context_init_empty(ctx_context_t *storage) { init(storage, CTX__HAMT_EMPTY); }

void ctx__context_init_copy_current(ctx_context_t *storage) {
    if (ctx__provider_installed() && ctx__provided_init_copy(storage) == 0)
        return; /* a host's context (provider.c) */
    ctx__tstate_t *ts = ctx__tls;
    /* The current context changes only in this thread: no lock needed. */
    init(storage, ts ? ctx__reserve_take(ts) : CTX__HAMT_EMPTY);
}

void ctx__context_init_copy(ctx_context_t *storage, ctx_context_t *src) {
    ctx__context_lock(src);
    ctx__hamt_t map = ctx__hamt_retain(src->map);
    ctx__context_unlock(src);
    init(storage, map);
}

void ctx__context_clear(ctx_context_t *ctx) {
    CTX__DEBUG_DIED(ctx, CTX__KIND_CAPTURE);
    ctx__reserve_give(ctx->map);
    ctx->map = CTX__HAMT_EMPTY;
}

/* The entered flag of storage only the calling thread can reach: a plain
 * load and store, no read-modify-write (a locked instruction is a full
 * fence, and a pool worker runs one of these per task). */
static int claim_private(ctx_context_t *ctx) {
    size_t s = atomic_load_explicit(&ctx->state, memory_order_relaxed);
    if (s & CTX__ENTERED)
        return CTX_EENTERED;
    atomic_store_explicit(&ctx->state, s + CTX__ENTERED, memory_order_relaxed);
    return 0;
}

/* Inlined into each caller (GCC and clang), so that a run of private
 * storage loses the branches and locked instructions of shared storage. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int run_stored(ctx_context_t *ctx, ctx_run_fn fn, void *arg, void **result,
                             int private_storage) {
    int err = 0;
    ctx__tstate_t *ts = ctx__tstate_get(&err);
    if (!ts)
        return err;
    if (private_storage ? claim_private(ctx) : ctx__context_claim(ctx, 0))
        return CTX_EENTERED;
    ctx->prev = ts->current;
    ts->current = ctx;
    ctx->entry = ++ts->epoch;
    ctx__reserve_check(ts);
    ctx__provider_switched(); /* provider.c */

    void *res = fn(arg);
    if (result)
        *result = res;

    /* The thread state cannot have gone: ctx_thread_release refuses while a
     * context is entered.  Unlike ctx_context_run, the address is enough:
     * the storage is the caller's and cannot be freed or reused while it
     * runs, and fn cannot leave it (no public call reaches it: a nested run
     * of the same capture is CTX_EENTERED), so if it is current it is still
     * this entry. */
    ts = ctx__tls;
    int r = 0;
    if (ts->current == ctx) {
        ts->current = ctx->prev;
    } else {
        /* fn left contexts entered on top of this one: link the lowest of
         * them to what was current before the run. */
        ctx_context_t *above = ts->current;
        while (above->prev != ctx)
            above = above->prev;
        above->prev = ctx->prev;
        r = CTX_ENOTCURRENT;
    }
    ctx->prev = NULL;
    ts->epoch++;
    ctx__reserve_check(ts);
    if (private_storage)
        atomic_store_explicit(&ctx->state,
                              atomic_load_explicit(&ctx->state, memory_order_relaxed) - CTX__ENTERED,
                              memory_order_relaxed);
    else
        atomic_fetch_sub_explicit(&ctx->state, CTX__ENTERED, memory_order_release);
    ctx__provider_switched(); /* provider.c */
    return r;
}

int ctx__context_run_embedded(ctx_context_t *ctx, ctx_run_fn fn, void *arg, void **result) {
    return run_stored(ctx, fn, arg, result, 0);
}

int ctx__context_run_private(ctx_context_t *ctx, ctx_run_fn fn, void *arg, void **result) {
    return run_stored(ctx, fn, arg, result, 1);
}

/* ---- the public face: ctx_capture_t is storage for one context ---- */

/* ctxvar.h promises at most 64 of the 96 bytes are used in this version. */
_Static_assert(sizeof(ctx_capture_t) == 96, "ctx_capture_t is 96 bytes in 1.x");
_Static_assert(sizeof(ctx_context_t) <= 64, "a context fits the part of a capture in use");
_Static_assert(_Alignof(ctx_capture_t) >= _Alignof(ctx_context_t), "ctx_capture_t misaligned");

/* CTX_DEBUG: a capture that still holds a context must be cleared before it
 * captures again (else that context's values leak). */
static void check_not_live(ctx_context_t *storage, const char *call) {
#ifdef CTX_DEBUG
    if (CTX__DEBUG_IS_LIVE(storage, CTX__KIND_CAPTURE))
        ctx__debug_abort(call, "capture", storage,
                         "still holds a context: clear it before capturing into it again");
#else
    (void)storage;
    (void)call;
#endif
}

void ctx_capture_current(ctx_capture_t *capture) {
    if (!capture)
        return;
    check_not_live((ctx_context_t *)capture, "ctx_capture_current");
    ctx__context_init_copy_current((ctx_context_t *)capture);
}

int ctx_capture_copy(ctx_capture_t *capture, ctx_context_t *ctx) {
    if (!capture || !ctx)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(ctx, CTX__KIND_CONTEXT, "ctx_capture_copy");
    check_not_live((ctx_context_t *)capture, "ctx_capture_copy");
    ctx__context_init_copy((ctx_context_t *)capture, ctx);
    return 0;
}

int ctx_capture_run(ctx_capture_t *capture, ctx_run_fn fn, void *arg, void **result) {
    if (!capture || !fn)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK((ctx_context_t *)capture, CTX__KIND_CAPTURE, "ctx_capture_run");
    return ctx__context_run_embedded((ctx_context_t *)capture, fn, arg, result);
}

int ctx_capture_run_exclusive(ctx_capture_t *capture, ctx_run_fn fn, void *arg,
                              void **result) {
    if (!capture || !fn)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK((ctx_context_t *)capture, CTX__KIND_CAPTURE, "ctx_capture_run_exclusive");
    return ctx__context_run_private((ctx_context_t *)capture, fn, arg, result);
}

void ctx_capture_clear(ctx_capture_t *capture) {
    if (!capture)
        return;
    CTX__DEBUG_CHECK((ctx_context_t *)capture, CTX__KIND_CAPTURE, "ctx_capture_clear");
    ctx__context_clear((ctx_context_t *)capture);
}

/* ---- snapshots (ctxvar.h): a map reference, run in a context of its own ---- */

/* ctxvar.h: 24 bytes in 1.x, the map in the first 16, the rest zero. */
_Static_assert(sizeof(ctx_snapshot_t) == 24, "ctx_snapshot_t is 24 bytes in 1.x");
_Static_assert(sizeof(ctx__hamt_t) <= sizeof(ctx_snapshot_t), "a snapshot holds a map");

static ctx__hamt_t snapshot_map(const ctx_snapshot_t *snapshot) {
    ctx__hamt_t map;
    memcpy(&map, snapshot, sizeof map);
    return map;
}

void ctx_snapshot_current(ctx_snapshot_t *snapshot) {
    if (!snapshot)
        return;
    ctx__hamt_t map = CTX__HAMT_EMPTY;
    ctx_context_t provided;
    if (ctx__provider_installed() && ctx__provided_init_copy(&provided) == 0) {
        map = provided.map; /* a host's context (provider.c) */
        CTX__DEBUG_DIED(&provided, CTX__KIND_CAPTURE);
    } else if (ctx__tls) {
        map = ctx__reserve_take(ctx__tls);
    }
    memset(snapshot, 0, sizeof *snapshot);
    memcpy(snapshot, &map, sizeof map);
}

int ctx_snapshot_run(ctx_snapshot_t *snapshot, ctx_run_fn fn, void *arg, void **result) {
    if (!snapshot || !fn)
        return CTX_EINVAL;
    ctx_context_t ctx;
    init(&ctx, snapshot_map(snapshot));
    memset(snapshot, 0, sizeof *snapshot);
    int r = run_stored(&ctx, fn, arg, result, 1);
    if (r != 0 && r != CTX_ENOTCURRENT) {
        /* fn was not called (no thread state; CTX_EENTERED cannot happen:
         * nothing else knows this storage): the snapshot as it was. */
        memcpy(snapshot, &ctx.map, sizeof ctx.map);
        CTX__DEBUG_DIED(&ctx, CTX__KIND_CAPTURE);
        return r;
    }
    ctx__context_clear(&ctx);
    return r;
}

void ctx_snapshot_clear(ctx_snapshot_t *snapshot) {
    if (!snapshot)
        return;
    ctx__hamt_t map = snapshot_map(snapshot);
    if (!map.root)
        return;
    memset(snapshot, 0, sizeof *snapshot);
    ctx__reserve_give(map);
}
