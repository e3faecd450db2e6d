/* SPDX-License-Identifier: MIT */
/*
 * reserve.c — references to the current map, taken by the batch.
 *
 * Why
 * ---
 * Every capture of the current context (ctx_capture_current, a pool
 * submit, a loop callback, ctx_context_copy_current) takes a reference to
 * the current map's root, and every clear of a capture drops one.  Each is
 * an atomic read-modify-write, a locked instruction: for a loop that
 * schedules a thousand callbacks in one context and runs them, two of
 * those per callback are a third of what the context costs it.
 *
 * What
 * ----
 * A thread keeps a reserve of spare references to the root of its current
 * map (ctx__tstate_t.reserve_root / reserve_spare).  A capture takes one
 * from the reserve with a plain decrement, refilling it with
 * CTX__RESERVE_BATCH references in one atomic add when it is empty; a clear
 * on the same thread of a capture of that same root gives its reference
 * back with a plain increment (up to CTX__RESERVE_MAX; the clear that finds
 * the reserve full drops its reference and the spares above
 * CTX__RESERVE_BATCH in one atomic subtract).  References are
 * fungible: one taken from the reserve may be dropped anywhere, by any
 * thread, the ordinary way.
 *
 * The invariant that keeps it invisible
 * -------------------------------------
 * Spare references exist only while the map they point to is the calling
 * thread's current map:
 *
 *     reserve_spare > 0  ⇒  reserve_root == ts->current->map.root
 *
 * The current context holds that map, so the spares never keep it — or a
 * value in it — alive longer than it would live anyway: when the current
 * map stops being that one (a set or reset changes it, an enter or exit
 * changes the current context, the thread releases its state), the
 * reserve is flushed at once, dropping all spares in one atomic subtract,
 * and a value no one else holds is released right then, as without the
 * reserve.  set and reset flush *before* they change the map, for a second
 * reason: a map whose root has spare references looks shared, and the
 * in-place update a set makes on a map its context alone holds would
 * become a path copy.
 *
 * A host provider (host.h) owns the current context when installed: the
 * reserve is then not used, and every reference is taken and dropped the
 * ordinary way.
 *
 * Many cores
 * ----------
 * The reserve is per thread and touched only by its thread; the root's
 * count is written once per CTX__RESERVE_BATCH captures instead of once
 * per capture, so with many threads capturing the same context (say, 64
 * request handlers copying a shared configuration context) the root's
 * cache line moves once per batch per thread.  Drops on other threads
 * (pool workers) are batched by the pool itself (propagation.c).
 */
#include "core/reserve.h"

void ctx__reserve_flush(ctx__tstate_t *ts) {
    size_t n = ts->reserve_spare;
    ctx__hamt_t map = {ts->reserve_root, 0};
    ts->reserve_spare = 0;
    ts->reserve_root = NULL;
    ctx__hamt_release_n(map, n, &ctx__box_ops);
}

/* Makes `root` the reserve's map.  By the invariant a reserve for another
 * map holds no spares; the flush keeps even a broken invariant from
 * leaking them. */
static void reserve_for(ctx__tstate_t *ts, ctx__hamt_node_t *root) {
    if (ts->reserve_root != root) {
        ctx__reserve_flush(ts);
        ts->reserve_root = root;
    }
}

ctx__hamt_t ctx__reserve_take_slow(ctx__tstate_t *ts) {
    ctx__hamt_t map = ts->current->map;
    if (!map.root || ctx__provider_installed())
        return ctx__hamt_retain(map);
    reserve_for(ts, map.root);
    if (ts->reserve_spare == 0) {
        ctx__hamt_retain_n(map, CTX__RESERVE_BATCH);
        ts->reserve_spare = CTX__RESERVE_BATCH;
    }
    ts->reserve_spare--;
    return map;
}

void ctx__reserve_give_slow(ctx__hamt_t map) {
    ctx__tstate_t *ts = ctx__tls;
    if (ts && map.root && map.root == ts->current->map.root && !ctx__provider_installed()) {
        reserve_for(ts, map.root);
        if (ts->reserve_spare < CTX__RESERVE_MAX) {
            ts->reserve_spare++;
            return;
        }
        /* Full: this reference and the spares above a batch go back in one
         * subtract.  The current context holds the map, so none of them is
         * the last. */
        ctx__hamt_drop_n(map, 1 + CTX__RESERVE_MAX - CTX__RESERVE_BATCH);
        ts->reserve_spare = CTX__RESERVE_BATCH;
        return;
    }
    ctx__hamt_release(map, &ctx__box_ops);
}
