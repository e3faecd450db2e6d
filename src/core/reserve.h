/* SPDX-License-Identifier: MIT */
/*
 * reserve.h — taking and giving references to the calling thread's current
 * map through its reserve (reserve.c explains the reserve and its
 * invariant).  The common case of each, a spare taken or given back, is
 * inline here: a few loads and a plain increment or decrement; everything
 * else (a refill, a full reserve, another map, a host provider) is
 * reserve.c's.
 */
#ifndef CTX_CORE_RESERVE_H
#define CTX_CORE_RESERVE_H

#include "core/core.h"
#include "core/provider.h"

#define CTX__RESERVE_BATCH 64  /* references taken per refill */
#define CTX__RESERVE_MAX 256   /* spares kept at most */

ctx__hamt_t ctx__reserve_take_slow(ctx__tstate_t *ts);
void ctx__reserve_give_slow(ctx__hamt_t map);

/* A new reference to ts->current's map, from the thread's reserve. */
static inline ctx__hamt_t ctx__reserve_take(ctx__tstate_t *ts) {
    ctx__hamt_t map = ts->current->map;
    if (ts->reserve_spare && map.root == ts->reserve_root && !ctx__provider_installed()) {
        ts->reserve_spare--; /* spare > 0: reserve_root is the current root */
        return map;
    }
    return ctx__reserve_take_slow(ts);
}

/* A new reference to `map`: from the calling thread's reserve when `map`
 * is its current map (a plain decrement), else ctx__hamt_retain. */
static inline ctx__hamt_t ctx__reserve_take_of(ctx__hamt_t map) {
    ctx__tstate_t *ts = ctx__tls;
    if (ts && map.root && map.root == ts->current->map.root)
        return ctx__reserve_take(ts);
    return ctx__hamt_retain(map);
}

/* Drops a reference to `map`: back into the calling thread's reserve when
 * `map` is its current map, else the ordinary way.  Any thread. */
static inline void ctx__reserve_give(ctx__hamt_t map) {
    ctx__tstate_t *ts = ctx__tls;
    /* reserve_root may name an old map while the reserve is empty: the
     * current root is compared too. */
    if (ts && map.root && map.root == ts->reserve_root && map.root == ts->current->map.root &&
        ts->reserve_spare < CTX__RESERVE_MAX && !ctx__provider_installed()) {
        ts->reserve_spare++;
        return;
    }
    ctx__reserve_give_slow(map);
}

#endif /* CTX_CORE_RESERVE_H */
