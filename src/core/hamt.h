/* SPDX-License-Identifier: MIT */
/*
 * hamt.h — the persistent map under every context (internal, `ctx__` prefix).
 *
 * A hash array mapped trie of *items*.  An item is a caller-allocated,
 * reference-counted record that starts with `ctx__hamt_item_t`: its 32-bit
 * hash, its key, and whatever the caller appends (a context stores a value
 * box; the Python binding a key/value pair of objects).  The map holds one
 * reference per item per node that contains it; the caller's `item_free`
 * runs when the last reference is dropped.
 *
 * A map value (`ctx__hamt_t`) is a root node plus a count.  It is persistent:
 * ctx__hamt_assoc / ctx__hamt_without build a new map that shares every node
 * they do not touch, leaving the old one valid.  ctx__hamt_*_inplace are the
 * fast path for a map with a single owner (a context): nodes whose reference
 * count is 1 on a path that is itself unshared are changed in place.
 *
 * Keys are compared by identity first, then by `ops->eq` (if not NULL), which
 * may fail: every operation then returns CTX_EKEY.  Every operation that
 * fails changes nothing.
 *
 * Thread-safety: nodes and items are immutable once shared and their reference
 * counts are atomic, so maps sharing nodes may be used from different threads
 * at once.  One ctx__hamt_t value must not be read while another thread
 * changes it in place (contexts guard theirs with a lock).
 */
#ifndef CTX_CORE_HAMT_H
#define CTX_CORE_HAMT_H

/* Private to the core library (libctxvar: src/core and src/pool).  Other
 * modules use the public API (ctxvar.h); see docs/api-rules.md. */
#ifndef CTX_BUILD_CORE
#error "src/core headers are private to libctxvar: include <ctxvar.h> instead"
#endif

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ctx__hamt_item {
    atomic_uint refs;
    uint32_t hash;
    const void *key;
} ctx__hamt_item_t;

typedef struct ctx__hamt_ops {
    /* 1 if the keys are equal, 0 if not, a negative code if comparing failed.
     * NULL: keys are equal only when identical. Called only for keys with
     * equal hashes that are not identical. */
    int (*eq)(const void *a, const void *b, void *user);
    /* Frees an item whose last reference was dropped. Required. */
    void (*item_free)(ctx__hamt_item_t *item, void *user);
    void *user;
} ctx__hamt_ops_t;

typedef struct ctx__hamt_node ctx__hamt_node_t;

typedef struct ctx__hamt {
    ctx__hamt_node_t *root; /* NULL for the empty map */
    size_t count;
} ctx__hamt_t;

#define CTX__HAMT_EMPTY ((ctx__hamt_t){NULL, 0})
/* Depth bound: 7 bitmap levels (5+5+5+5+5+5+2 hash bits), then a collision
 * node. */
#define CTX__HAMT_MAX_DEPTH 8

/* Item references. */
void ctx__hamt_item_retain(ctx__hamt_item_t *item);
void ctx__hamt_item_release(ctx__hamt_item_t *item, const ctx__hamt_ops_t *ops);

/* A new reference to the same map value (O(1)); returns it. */
ctx__hamt_t ctx__hamt_retain(ctx__hamt_t map);
/* Drops a map's reference to its root (the map becomes invalid). */
void ctx__hamt_release(ctx__hamt_t map, const ctx__hamt_ops_t *ops);
/* n new references at once (one atomic add); returns the map. */
ctx__hamt_t ctx__hamt_retain_n(ctx__hamt_t map, size_t n);
/* Drops `n` references to the same map at once (one atomic operation for
 * n - 1 of them): what n calls of ctx__hamt_release would do. */
void ctx__hamt_release_n(ctx__hamt_t map, size_t n, const ctx__hamt_ops_t *ops);
/* Drops n references that the caller knows are not the last (another is
 * held meanwhile): one atomic subtract, nothing freed. */
void ctx__hamt_drop_n(ctx__hamt_t map, size_t n);

/* Looks up the item with `key` (of hash `hash`): 1 and *out (borrowed), 0 if
 * absent, or CTX_EKEY if eq failed. */
int ctx__hamt_find(const ctx__hamt_t *map, uint32_t hash, const void *key,
                   const ctx__hamt_ops_t *ops, ctx__hamt_item_t **out);

/* *out = `map` with `item` added (replacing the item with an equal key).
 * `map` is unchanged and still owned by the caller; *out is a new map value
 * the caller owns.  The map takes its own reference to `item` on success.
 * Errors: CTX_ENOMEM, CTX_EKEY. */
int ctx__hamt_assoc(const ctx__hamt_t *map, ctx__hamt_item_t *item,
                    const ctx__hamt_ops_t *ops, ctx__hamt_t *out);

/* *out = `map` without the item of `key`.  0 on success; CTX_ENOTFOUND if
 * there is none (*out untouched); CTX_ENOMEM; CTX_EKEY. */
int ctx__hamt_without(const ctx__hamt_t *map, uint32_t hash, const void *key,
                      const ctx__hamt_ops_t *ops, ctx__hamt_t *out);

/* The same operations on a map the caller owns exclusively, replacing *map:
 * unshared nodes are reused in place, shared ones copied.  On error *map is
 * unchanged.  The caller must hold the only reference to `*map` (other maps
 * may share its nodes), and keep readers of *map out meanwhile. */
int ctx__hamt_assoc_inplace(ctx__hamt_t *map, ctx__hamt_item_t *item,
                            const ctx__hamt_ops_t *ops);
int ctx__hamt_without_inplace(ctx__hamt_t *map, uint32_t hash, const void *key,
                              const ctx__hamt_ops_t *ops);

/* The in-place operations for a caller that must not let an item die in
 * them (a context holds its lock while it changes its map, and an item's
 * death runs user code): neither drops the last reference to any item.
 *
 * put: adds `item`, taking over the caller's reference to it on success (on
 * error the caller keeps it), and hands the item it replaced, with the
 * reference the map held, to *replaced (NULL if the key was new).
 * take: removes the item of `key` and hands it, with the reference the map
 * held, to *removed; CTX_ENOTFOUND if there is none.
 * The caller releases what it was handed, typically after unlocking. */
int ctx__hamt_put_inplace(ctx__hamt_t *map, ctx__hamt_item_t *item,
                          const ctx__hamt_ops_t *ops, ctx__hamt_item_t **replaced);
int ctx__hamt_take_inplace(ctx__hamt_t *map, uint32_t hash, const void *key,
                           const ctx__hamt_ops_t *ops, ctx__hamt_item_t **removed);

/* Makes the root of an empty map that the caller owns exclusively, with room
 * for min(n, 32) items, so that the first n in-place puts need not grow it
 * (n = 0, or a map that has a root: nothing to do).  Until the first put the
 * map is valid for the in-place operations, iteration and release only
 * (ctx__hamt_check refuses a root without items).  0 or CTX_ENOMEM
 * (nothing changed). */
int ctx__hamt_reserve(ctx__hamt_t *map, size_t n);

/* Builds an empty map that the caller owns exclusively from `n` items of
 * distinct keys (2 <= n <= 32 is where it helps) in one allocation, when
 * their hashes' first 5-bit fragments are all distinct: a root node with
 * every item in its slot, the caller's reference to each taken over.
 * Returns 0; CTX__HAMT_NOT_FLAT if two fragments are equal (or n is 0 or
 * above 32, or the map has a root): nothing done, the caller puts the
 * items one at a time; or CTX_ENOMEM (nothing changed). */
#define CTX__HAMT_NOT_FLAT 1
int ctx__hamt_build_flat(ctx__hamt_t *map, ctx__hamt_item_t *const *items, size_t n);

/* 1 if the item of `key` and every node on the path to it is referenced
 * only by `map` (so the item may be modified in place), 0 if not, CTX_ENOTFOUND
 * if absent, or CTX_EKEY. */
int ctx__hamt_is_private(const ctx__hamt_t *map, uint32_t hash,
                         const void *key, const ctx__hamt_ops_t *ops);

/* Allocation-free iteration over a map value the caller keeps alive. */
typedef struct ctx__hamt_iter {
    const ctx__hamt_node_t *node[CTX__HAMT_MAX_DEPTH];
    uint32_t pos[CTX__HAMT_MAX_DEPTH];
    int depth;
} ctx__hamt_iter_t;

void ctx__hamt_iter_init(ctx__hamt_iter_t *it, const ctx__hamt_t *map);
/* The next item (borrowed), or NULL at the end. */
ctx__hamt_item_t *ctx__hamt_iter_next(ctx__hamt_iter_t *it);

/* Debugging/tests: checks every structural invariant (bitmaps, counts,
 * hashes on their path, no single-item non-root node, collision nodes only
 * for equal hashes).  0 if sound, CTX_EINVAL otherwise. */
int ctx__hamt_check(const ctx__hamt_t *map);
/* Depth of the deepest node (0 for an empty map, 1 for a root alone). */
int ctx__hamt_depth(const ctx__hamt_t *map);

#endif /* CTX_CORE_HAMT_H */
