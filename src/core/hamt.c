/* SPDX-License-Identifier: MIT */
/*
 * hamt.c — a persistent hash array mapped trie with an in-place fast path.
 *
 * What it is for
 * --------------
 * Every context is a box around one version of this map.  Copying a context
 * copies a pointer; setting a variable builds a new version that shares every
 * node it does not touch.  The same map, with Python's hashing plugged in,
 * backs the Python binding's `hamt` type.
 *
 * Shape
 * -----
 * A key's 32-bit hash is cut into fragments of 5 bits, low bits first; the
 * fragment at depth d selects one of 32 positions in a *bitmap node*:
 *
 *      hash = ...  10 | 00011 | 00101 | 01001      (shift 30, ..., 10, 5, 0)
 *                                         \__ position 9 in the root
 *
 *   root (bitmap 0b...1000000010)          slots are packed: slot i is the
 *    ├─ [1] item A                         popcount of the bits below the
 *    └─ [9] node (bitmap ...)  ─┐          position (no empty slots stored)
 *                               ├─ [5] item B
 *                               └─ [7] collision node (hash H): item C, item D
 *
 * Seven bitmap levels use all 32 bits (shifts 0, 5, ..., 25 take 5 bits, shift
 * 30 takes the last 2).  Keys whose whole hashes are equal share a *collision
 * node*: a plain array searched with the key equality hook.  A collision node
 * is created as soon as two equal-hash keys meet, at any depth; inserting a
 * key of another hash there splits it into a bitmap node.  The deepest tree is
 * therefore seven bitmap nodes and a collision node: CTX__HAMT_MAX_DEPTH = 8,
 * which is the size of every path stack below (the iterator's included).
 *
 * A slot is a tagged pointer: low bit 1 for a child node, 0 for an item.
 *
 * Invariants (ctx__hamt_check verifies all of them)
 *   - a bitmap node has popcount(bits) == count slots; a non-root bitmap node
 *     never holds a single item and nothing else (it collapses into its
 *     parent), but may hold a single child node (a chain on a shared prefix);
 *   - a collision node holds >= 2 items, all of hash == its `bits` field;
 *   - an item in a node at shift s agrees with the path on the low s bits;
 *   - the empty map has no root (root == NULL, count == 0), except while a
 *     map is being built in place: ctx__hamt_reserve gives an empty map a
 *     root with room for the items to come, which the next put fills.
 *
 * Ownership
 * ---------
 * Nodes and items have atomic reference counts.  A node holds one reference
 * per slot; a map value holds one reference to its root.  Copying a node
 * therefore retains each of its slots, and freeing one releases them.
 *
 * The pure operations (assoc, without) copy the path from the root to the
 * change and leave the old version intact.  They allocate first and wire
 * second, so a failure (no memory, a failing key equality) frees only what
 * was new and changes nothing.
 *
 * The in-place operations serve a map with a single owner, a context, where
 * most sets replace a value in a node nobody else can see.  A node is private
 * when its count is 1 and every node above it is private (the root's one
 * reference being the owner's): such nodes are changed in place, grown by
 * moving their slots into one twice as big, or collapsed by moving their
 * last item up, with no reference count touched.  The first shared node on the
 * path sends the operation to the pure version.  This is the argument of
 * Rust's Arc::make_mut: a count of 1 seen with acquire ordering means no other
 * thread holds or can obtain a reference.  The owner must keep readers of the
 * same map value out while it changes it (contexts use their lock).  An
 * empty map's first put makes its root in place with room for four items
 * (ctx__hamt_reserve makes room for more, for a caller that knows how many
 * will come).  ctx__hamt_build_flat goes further for a caller that has all
 * its items at once (a context built from n values): when the items' first
 * hash fragments are distinct — variables' hashes are their ids, so a few
 * variables made together always are — it allocates the root with exactly
 * n slots and writes each item into its final slot, the node a series of
 * puts would end with, without the walks, the moves of the slots and the
 * regrowth; otherwise it does nothing and the caller falls back on puts.
 * The same argument saves the last release of an item or node its locked
 * instruction (drop_ref).
 *
 * put_inplace and take_inplace never drop the last reference to an item:
 * they hand the replaced or removed item back, so that a context can release
 * it (which runs the variable's release operation, user code) after it has
 * unlocked.  put takes over the caller's reference to the new item, which
 * saves the set path an atomic increment; assoc_inplace and without_inplace
 * are the same operations with the usual retain/release.
 *
 * Functions: key_eq (identity, then the hook), node_* (allocation and copies),
 * pair (a subtree for two entries that met in one slot), assoc_node and
 * without_node (pure, recursive), put/take_inplace (iterative walks with a
 * path stack) and the assoc/without_inplace wrappers, the iterator, and
 * check/depth for tests.
 */
#include "core/hamt.h"

#include <ctxvar.h>
#include <string.h>

#include "core/alloc.h"

enum { KIND_BITMAP = 0, KIND_COLLISION = 1 };

struct ctx__hamt_node {
    atomic_uint refs;
    uint32_t bits;     /* bitmap, or the common hash of a collision node */
    uint32_t count;    /* slots in use */
    uint32_t cap_kind; /* capacity << 1 | kind */
    uintptr_t slot[];
};

typedef struct ctx__hamt_node node_t;
typedef ctx__hamt_item_t item_t;

#define MAX_SHIFT 30u
#define BITMAP_CAP 32u
/* The room a private node is given when it is made or first grown. */
#define FIRST_CAP 4u

/* ---- slots and reference counts ---- */

static inline int is_node(uintptr_t s) { return (int)(s & 1u); }
static inline node_t *as_node(uintptr_t s) { return (node_t *)(s & ~(uintptr_t)1); }
static inline item_t *as_item(uintptr_t s) { return (item_t *)s; }
static inline uintptr_t node_slot(node_t *n) { return (uintptr_t)n | 1u; }
static inline uintptr_t item_slot(item_t *i) { return (uintptr_t)i; }

static inline unsigned kind_of(const node_t *n) { return n->cap_kind & 1u; }
static inline uint32_t cap_of(const node_t *n) { return n->cap_kind >> 1; }
static inline unsigned frag(uint32_t hash, unsigned shift) { return (hash >> shift) & 31u; }
/* Without -mpopcnt, __builtin_popcount is a library call; this is not. */
static inline unsigned popcount(uint32_t x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    return (((x + (x >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24;
}
static inline size_t node_bytes(uint32_t cap) {
    return sizeof(node_t) + (size_t)cap * sizeof(uintptr_t);
}

static inline int unshared(const atomic_uint *refs) {
    return atomic_load_explicit(refs, memory_order_acquire) == 1;
}

/* Drops one reference; 1 if it was the last (the count is then 0).  The
 * last one needs no locked instruction: a count of 1 seen with acquire
 * ordering is the caller's own reference, and no one else can add one
 * (only a holder can), so a plain store ends it.  Most items and nodes die
 * that way (a context's release, a reset's replaced box). */
static inline int drop_ref(atomic_uint *refs) {
    if (unshared(refs)) {
        atomic_store_explicit(refs, 0, memory_order_relaxed);
        return 1;
    }
    return atomic_fetch_sub_explicit(refs, 1, memory_order_acq_rel) == 1;
}

void ctx__hamt_item_retain(item_t *item) {
    atomic_fetch_add_explicit(&item->refs, 1, memory_order_relaxed);
}

void ctx__hamt_item_release(item_t *item, const ctx__hamt_ops_t *ops) {
    if (drop_ref(&item->refs))
        ops->item_free(item, ops->user);
}

static void node_release(node_t *n, const ctx__hamt_ops_t *ops);

static void slot_retain(uintptr_t s) {
    if (is_node(s))
        atomic_fetch_add_explicit(&as_node(s)->refs, 1, memory_order_relaxed);
    else
        ctx__hamt_item_retain(as_item(s));
}

static void slot_release(uintptr_t s, const ctx__hamt_ops_t *ops) {
    if (is_node(s))
        node_release(as_node(s), ops);
    else
        ctx__hamt_item_release(as_item(s), ops);
}

/* Frees a node's memory only: its slots were moved elsewhere. */
static void node_free_shallow(node_t *n) { ctx__free_small(n, node_bytes(cap_of(n))); }

static void node_release(node_t *n, const ctx__hamt_ops_t *ops) {
    if (!drop_ref(&n->refs))
        return;
    for (uint32_t i = 0; i < n->count; i++)
        slot_release(n->slot[i], ops);
    node_free_shallow(n);
}

ctx__hamt_t ctx__hamt_retain(ctx__hamt_t map) {
    if (map.root)
        atomic_fetch_add_explicit(&map.root->refs, 1, memory_order_relaxed);
    return map;
}

void ctx__hamt_release(ctx__hamt_t map, const ctx__hamt_ops_t *ops) {
    if (map.root)
        node_release(map.root, ops);
}

ctx__hamt_t ctx__hamt_retain_n(ctx__hamt_t map, size_t n) {
    if (map.root)
        atomic_fetch_add_explicit(&map.root->refs, n, memory_order_relaxed);
    return map;
}

void ctx__hamt_release_n(ctx__hamt_t map, size_t n, const ctx__hamt_ops_t *ops) {
    if (!map.root || n == 0)
        return;
    /* The caller holds n references: n - 1 of them cannot be the last. */
    if (n > 1)
        atomic_fetch_sub_explicit(&map.root->refs, n - 1, memory_order_release);
    node_release(map.root, ops);
}

void ctx__hamt_drop_n(ctx__hamt_t map, size_t n) {
    if (map.root && n)
        atomic_fetch_sub_explicit(&map.root->refs, n, memory_order_release);
}

/* 1 equal, 0 different, CTX_EKEY if the hook failed. */
static int key_eq(const item_t *it, uint32_t hash, const void *key,
                  const ctx__hamt_ops_t *ops) {
    if (it->key == key)
        return 1;
    if (it->hash != hash || ops->eq == NULL)
        return 0;
    int r = ops->eq(it->key, key, ops->user);
    return r < 0 ? CTX_EKEY : (r != 0);
}

/* ---- node construction (refs = 1, slots to be filled by the caller) ---- */

static inline node_t *node_alloc(unsigned kind, uint32_t cap) {
    node_t *n = ctx__malloc_small(node_bytes(cap));
    if (!n)
        return NULL;
    atomic_init(&n->refs, 1);
    n->bits = 0;
    n->count = 0;
    n->cap_kind = cap << 1 | kind;
    return n;
}

/* A copy of `n` with `s` (owned by the caller, transferred on success)
 * inserted at slot `pos` and `bit` added; every other slot retained. */
static node_t *node_copy_insert(const node_t *n, uint32_t pos, uint32_t bit, uintptr_t s) {
    node_t *c = node_alloc(kind_of(n), n->count + 1);
    if (!c)
        return NULL;
    for (uint32_t i = 0; i < pos; i++)
        slot_retain(c->slot[i] = n->slot[i]);
    c->slot[pos] = s;
    for (uint32_t i = pos; i < n->count; i++)
        slot_retain(c->slot[i + 1] = n->slot[i]);
    c->bits = n->bits | bit;
    c->count = n->count + 1;
    return c;
}

/* A copy of `n` whose slot `pos` is `s` (transferred on success). */
static node_t *node_copy_replace(const node_t *n, uint32_t pos, uintptr_t s) {
    node_t *c = node_alloc(kind_of(n), n->count);
    if (!c)
        return NULL;
    for (uint32_t i = 0; i < n->count; i++)
        if (i != pos)
            slot_retain(c->slot[i] = n->slot[i]);
    c->slot[pos] = s;
    c->bits = n->bits;
    c->count = n->count;
    return c;
}

/* A copy of `n` without slot `pos` and `bit`. */
static node_t *node_copy_remove(const node_t *n, uint32_t pos, uint32_t bit) {
    node_t *c = node_alloc(kind_of(n), n->count - 1);
    if (!c)
        return NULL;
    uint32_t j = 0;
    for (uint32_t i = 0; i < n->count; i++)
        if (i != pos)
            slot_retain(c->slot[j++] = n->slot[i]);
    c->bits = n->bits & ~bit;
    c->count = n->count - 1;
    return c;
}

static uint32_t slot_hash(uintptr_t s) {
    return is_node(s) ? as_node(s)->bits /* collision node */ : as_item(s)->hash;
}

/*
 * The subtree, rooted at `shift`, holding `a` (an item, or a collision node
 * whose hash differs from b's) and item `b`, which met in one slot.  Both are
 * retained into it on success; on failure nothing is retained.
 */
static int pair(unsigned shift, uintptr_t a, item_t *b, node_t **out,
                const ctx__hamt_ops_t *ops) {
    uint32_t ha = slot_hash(a), hb = b->hash;
    node_t *c;
    if (ha == hb) {
        c = node_alloc(KIND_COLLISION, 2);
        if (!c)
            return CTX_ENOMEM;
        c->bits = ha;
        c->slot[0] = a;
        c->slot[1] = item_slot(b);
    } else {
        unsigned fa = frag(ha, shift), fb = frag(hb, shift);
        if (fa == fb) {
            node_t *sub;
            int r = pair(shift + 5, a, b, &sub, ops);
            if (r)
                return r;
            c = node_alloc(KIND_BITMAP, 1);
            if (!c) {
                node_release(sub, ops);
                return CTX_ENOMEM;
            }
            c->bits = 1u << fa;
            c->slot[0] = node_slot(sub);
            c->count = 1;
            *out = c;
            return 0;
        }
        c = node_alloc(KIND_BITMAP, 2);
        if (!c)
            return CTX_ENOMEM;
        c->bits = (1u << fa) | (1u << fb);
        c->slot[fa < fb ? 0 : 1] = a;
        c->slot[fa < fb ? 1 : 0] = item_slot(b);
    }
    c->count = 2;
    slot_retain(a);
    ctx__hamt_item_retain(b);
    *out = c;
    return 0;
}

/* ---- lookup ---- */

int ctx__hamt_find(const ctx__hamt_t *map, uint32_t hash, const void *key,
                   const ctx__hamt_ops_t *ops, item_t **out) {
    const node_t *n = map->root;
    unsigned shift = 0;
    while (n) {
        if (kind_of(n) == KIND_COLLISION) {
            if (n->bits != hash)
                return 0;
            for (uint32_t i = 0; i < n->count; i++) {
                int r = key_eq(as_item(n->slot[i]), hash, key, ops);
                if (r < 0)
                    return r;
                if (r) {
                    *out = as_item(n->slot[i]);
                    return 1;
                }
            }
            return 0;
        }
        uint32_t bit = 1u << frag(hash, shift);
        if (!(n->bits & bit))
            return 0;
        uintptr_t s = n->slot[popcount(n->bits & (bit - 1))];
        if (is_node(s)) {
            n = as_node(s);
            shift += 5;
            continue;
        }
        int r = key_eq(as_item(s), hash, key, ops);
        if (r <= 0)
            return r;
        *out = as_item(s);
        return 1;
    }
    return 0;
}

/* ---- pure insertion ---- */

static int assoc_node(const node_t *n, unsigned shift, item_t *it,
                      const ctx__hamt_ops_t *ops, node_t **out, int *added) {
    node_t *c;
    if (kind_of(n) == KIND_COLLISION) {
        if (it->hash != n->bits) {
            *added = 1;
            return pair(shift, node_slot((node_t *)n), it, out, ops);
        }
        for (uint32_t i = 0; i < n->count; i++) {
            int r = key_eq(as_item(n->slot[i]), it->hash, it->key, ops);
            if (r < 0)
                return r;
            if (r) {
                c = node_copy_replace(n, i, item_slot(it));
                if (!c)
                    return CTX_ENOMEM;
                ctx__hamt_item_retain(it);
                *added = 0;
                *out = c;
                return 0;
            }
        }
        c = node_copy_insert(n, n->count, 0, item_slot(it));
        if (!c)
            return CTX_ENOMEM;
        ctx__hamt_item_retain(it);
        *added = 1;
        *out = c;
        return 0;
    }

    uint32_t bit = 1u << frag(it->hash, shift);
    uint32_t pos = popcount(n->bits & (bit - 1));
    if (!(n->bits & bit)) {
        c = node_copy_insert(n, pos, bit, item_slot(it));
        if (!c)
            return CTX_ENOMEM;
        ctx__hamt_item_retain(it);
        *added = 1;
        *out = c;
        return 0;
    }
    uintptr_t s = n->slot[pos], repl;
    if (is_node(s)) {
        node_t *sub;
        int r = assoc_node(as_node(s), shift + 5, it, ops, &sub, added);
        if (r)
            return r;
        repl = node_slot(sub);
    } else {
        int r = key_eq(as_item(s), it->hash, it->key, ops);
        if (r < 0)
            return r;
        if (r) {
            ctx__hamt_item_retain(it);
            repl = item_slot(it);
            *added = 0;
        } else {
            node_t *sub;
            r = pair(shift + 5, s, it, &sub, ops);
            if (r)
                return r;
            repl = node_slot(sub);
            *added = 1;
        }
    }
    c = node_copy_replace(n, pos, repl);
    if (!c) {
        slot_release(repl, ops);
        return CTX_ENOMEM;
    }
    *out = c;
    return 0;
}

int ctx__hamt_assoc(const ctx__hamt_t *map, item_t *it, const ctx__hamt_ops_t *ops,
                    ctx__hamt_t *out) {
    node_t *c;
    if (map->root == NULL) {
        c = node_alloc(KIND_BITMAP, 1);
        if (!c)
            return CTX_ENOMEM;
        c->bits = 1u << frag(it->hash, 0);
        c->slot[0] = item_slot(it);
        c->count = 1;
        ctx__hamt_item_retain(it);
        *out = (ctx__hamt_t){c, 1};
        return 0;
    }
    int added = 0;
    int r = assoc_node(map->root, 0, it, ops, &c, &added);
    if (r)
        return r;
    *out = (ctx__hamt_t){c, map->count + (size_t)added};
    return 0;
}

/* ---- pure removal ---- */

enum { W_NODE, W_ITEM, W_EMPTY };

/* The node `n` without `key`: a new node, a single item to be inlined into
 * the parent (retained), or nothing (root only). */
static int without_node(const node_t *n, unsigned shift, uint32_t hash, const void *key,
                        const ctx__hamt_ops_t *ops, int is_root, int *kind,
                        uintptr_t *res) {
    node_t *c;
    if (kind_of(n) == KIND_COLLISION) {
        if (hash != n->bits)
            return CTX_ENOTFOUND;
        for (uint32_t i = 0; i < n->count; i++) {
            int r = key_eq(as_item(n->slot[i]), hash, key, ops);
            if (r < 0)
                return r;
            if (!r)
                continue;
            if (n->count == 2) {
                *res = n->slot[1 - i];
                slot_retain(*res);
                *kind = W_ITEM;
                return 0;
            }
            c = node_copy_remove(n, i, 0);
            if (!c)
                return CTX_ENOMEM;
            *res = node_slot(c);
            *kind = W_NODE;
            return 0;
        }
        return CTX_ENOTFOUND;
    }

    uint32_t bit = 1u << frag(hash, shift);
    if (!(n->bits & bit))
        return CTX_ENOTFOUND;
    uint32_t pos = popcount(n->bits & (bit - 1));
    uintptr_t s = n->slot[pos];
    if (is_node(s)) {
        int k;
        uintptr_t sub;
        int r = without_node(as_node(s), shift + 5, hash, key, ops, 0, &k, &sub);
        if (r)
            return r;
        if (k == W_ITEM && n->count == 1 && !is_root) {
            *res = sub; /* this chain node would hold one item: bubble it up */
            *kind = W_ITEM;
            return 0;
        }
        c = node_copy_replace(n, pos, sub);
        if (!c) {
            slot_release(sub, ops);
            return CTX_ENOMEM;
        }
        *res = node_slot(c);
        *kind = W_NODE;
        return 0;
    }
    int r = key_eq(as_item(s), hash, key, ops);
    if (r < 0)
        return r;
    if (!r)
        return CTX_ENOTFOUND;
    if (n->count == 1) {
        *kind = W_EMPTY;
        return 0;
    }
    if (n->count == 2 && !is_root && !is_node(n->slot[1 - pos])) {
        *res = n->slot[1 - pos];
        slot_retain(*res);
        *kind = W_ITEM;
        return 0;
    }
    c = node_copy_remove(n, pos, bit);
    if (!c)
        return CTX_ENOMEM;
    *res = node_slot(c);
    *kind = W_NODE;
    return 0;
}

int ctx__hamt_without(const ctx__hamt_t *map, uint32_t hash, const void *key,
                      const ctx__hamt_ops_t *ops, ctx__hamt_t *out) {
    if (map->root == NULL)
        return CTX_ENOTFOUND;
    int kind;
    uintptr_t res = 0;
    int r = without_node(map->root, 0, hash, key, ops, 1, &kind, &res);
    if (r)
        return r;
    *out = kind == W_EMPTY ? CTX__HAMT_EMPTY : (ctx__hamt_t){as_node(res), map->count - 1};
    return 0;
}

/* ---- in place, for a sole owner ---- */

/* A bigger home for private node `n` (slots moved, none retained): twice
 * the room, so a context that gets n variables one set at a time grows its
 * root log2(n) times. */
static node_t *node_grow(node_t *n) {
    uint32_t cap = n->count < FIRST_CAP ? FIRST_CAP : 2 * n->count;
    if (kind_of(n) == KIND_BITMAP && cap > BITMAP_CAP)
        cap = BITMAP_CAP;
    node_t *c = node_alloc(kind_of(n), cap);
    if (!c)
        return NULL;
    memcpy(c->slot, n->slot, n->count * sizeof(uintptr_t));
    c->bits = n->bits;
    c->count = n->count;
    return c;
}

/* Puts `s` at slot `pos` of private node `n` (grown first if full), which
 * the slot `*link` points to.  Returns 0 or CTX_ENOMEM (nothing changed). */
static int insert_private(node_t *n, uintptr_t *link, uint32_t pos, uint32_t bit,
                          uintptr_t s) {
    if (n->count == cap_of(n)) {
        node_t *c = node_grow(n);
        if (!c)
            return CTX_ENOMEM;
        node_free_shallow(n);
        n = c;
        *link = (uintptr_t)c | (*link & 1u);
    }
    if (pos < n->count) /* an append (ids in creation order) moves nothing */
        memmove(&n->slot[pos + 1], &n->slot[pos], (n->count - pos) * sizeof(uintptr_t));
    n->slot[pos] = s;
    n->bits |= bit;
    n->count++;
    return 0;
}

int ctx__hamt_reserve(ctx__hamt_t *map, size_t n) {
    if (map->root != NULL || n == 0)
        return 0;
    node_t *root = node_alloc(KIND_BITMAP, n < BITMAP_CAP ? (uint32_t)n : BITMAP_CAP);
    if (!root)
        return CTX_ENOMEM;
    map->root = root;
    return 0;
}

int ctx__hamt_build_flat(ctx__hamt_t *map, item_t *const *items, size_t n) {
    if (map->root != NULL || n == 0 || n > BITMAP_CAP)
        return CTX__HAMT_NOT_FLAT;
    if (n == 1) { /* the usual extract (a trace alone): no loop, no popcount */
        node_t *root = node_alloc(KIND_BITMAP, 1);
        if (!root)
            return CTX_ENOMEM;
        root->slot[0] = item_slot(items[0]);
        root->bits = 1u << frag(items[0]->hash, 0);
        root->count = 1;
        map->root = root;
        map->count = 1;
        return 0;
    }
    uint32_t bits = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bit = 1u << frag(items[i]->hash, 0);
        if (bits & bit)
            return CTX__HAMT_NOT_FLAT; /* two items would meet in one slot */
        bits |= bit;
    }
    node_t *root = node_alloc(KIND_BITMAP, (uint32_t)n);
    if (!root)
        return CTX_ENOMEM;
    for (size_t i = 0; i < n; i++) { /* slots in fragment order, as puts make them */
        uint32_t bit = 1u << frag(items[i]->hash, 0);
        root->slot[popcount(bits & (bit - 1))] = item_slot(items[i]);
    }
    root->bits = bits;
    root->count = (uint32_t)n;
    map->root = root;
    map->count = n;
    return 0;
}

/* Drops the reference a caller handed over with an item that the operation
 * ended up retaining on its own as well (it is never the last one). */
static void item_unref_extra(item_t *it) {
    atomic_fetch_sub_explicit(&it->refs, 1, memory_order_relaxed);
}

int ctx__hamt_put_inplace(ctx__hamt_t *map, item_t *it, const ctx__hamt_ops_t *ops,
                          item_t **replaced) {
    node_t *n = map->root;
    *replaced = NULL;
    if (n == NULL) /* nothing to share: make the root, with room to grow */
        return ctx__hamt_reserve(map, FIRST_CAP) ? CTX_ENOMEM
                                                 : ctx__hamt_put_inplace(map, it, ops, replaced);
    if (!unshared(&n->refs))
        goto pure;
    /* `link` is where the pointer to `n` lives: the map's root, tagged as a
     * node slot for uniformity, or the parent's slot.  The caller's reference
     * to `it` becomes the slot's. */
    uintptr_t root_link = node_slot(n);
    uintptr_t *link = &root_link;
    unsigned shift = 0;
    for (;;) {
        if (kind_of(n) == KIND_COLLISION) {
            if (it->hash != n->bits) {
                node_t *sub;
                int r = pair(shift, *link, it, &sub, ops);
                if (r)
                    return r;
                /* The collision node and `it` moved into `sub` (retained
                 * there): drop the references the old link and the caller
                 * held. */
                node_release(n, ops);
                item_unref_extra(it);
                *link = node_slot(sub);
                map->count++;
                break;
            }
            uint32_t i;
            for (i = 0; i < n->count; i++) {
                int r = key_eq(as_item(n->slot[i]), it->hash, it->key, ops);
                if (r < 0)
                    return r;
                if (r)
                    break;
            }
            if (i < n->count) {
                *replaced = as_item(n->slot[i]); /* the slot's reference */
                n->slot[i] = item_slot(it);
                break;
            }
            if (insert_private(n, link, n->count, 0, item_slot(it)))
                return CTX_ENOMEM;
            map->count++;
            break;
        }
        uint32_t bit = 1u << frag(it->hash, shift);
        uint32_t pos = popcount(n->bits & (bit - 1));
        if (!(n->bits & bit)) {
            if (insert_private(n, link, pos, bit, item_slot(it)))
                return CTX_ENOMEM;
            map->count++;
            break;
        }
        uintptr_t s = n->slot[pos];
        if (is_node(s)) {
            if (!unshared(&as_node(s)->refs))
                goto pure;
            link = &n->slot[pos];
            n = as_node(s);
            shift += 5;
            continue;
        }
        int r = key_eq(as_item(s), it->hash, it->key, ops);
        if (r < 0)
            return r;
        if (r) {
            *replaced = as_item(s); /* the slot's reference */
            n->slot[pos] = item_slot(it);
            break;
        }
        node_t *sub;
        r = pair(shift + 5, s, it, &sub, ops);
        if (r)
            return r;
        n->slot[pos] = node_slot(sub);
        slot_release(s, ops); /* now held by sub */
        item_unref_extra(it);
        map->count++;
        break;
    }
    map->root = as_node(root_link);
    return 0;

pure:;
    /* The path is shared: build the new version, then drop the old one.
     * Dropping it frees no item: every item of the old version is held by
     * the new one, by a shared node, or (the replaced one) retained here. */
    item_t *old = NULL;
    int r = ctx__hamt_find(map, it->hash, it->key, ops, &old);
    if (r < 0)
        return r;
    ctx__hamt_t nm;
    r = ctx__hamt_assoc(map, it, ops, &nm);
    if (r)
        return r;
    item_unref_extra(it); /* assoc took its own */
    if (old)
        ctx__hamt_item_retain(old); /* outlives the old map's nodes */
    ctx__hamt_release(*map, ops);
    *map = nm;
    *replaced = old;
    return 0;
}

int ctx__hamt_assoc_inplace(ctx__hamt_t *map, item_t *it, const ctx__hamt_ops_t *ops) {
    item_t *old;
    ctx__hamt_item_retain(it); /* the map's, handed over */
    int r = ctx__hamt_put_inplace(map, it, ops, &old);
    if (r)
        item_unref_extra(it);
    else if (old)
        ctx__hamt_item_release(old, ops);
    return r;
}

int ctx__hamt_take_inplace(ctx__hamt_t *map, uint32_t hash, const void *key,
                           const ctx__hamt_ops_t *ops, item_t **removed) {
    node_t *path[CTX__HAMT_MAX_DEPTH];
    uint32_t at[CTX__HAMT_MAX_DEPTH]; /* slot taken in path[d] */
    node_t *n = map->root;
    if (n == NULL)
        return CTX_ENOTFOUND;
    if (!unshared(&n->refs))
        goto pure;
    int d = 0;
    unsigned shift = 0;
    uint32_t pos, bit = 0;
    for (;;) {
        path[d] = n;
        if (kind_of(n) == KIND_COLLISION) {
            if (hash != n->bits)
                return CTX_ENOTFOUND;
            for (pos = 0; pos < n->count; pos++) {
                int r = key_eq(as_item(n->slot[pos]), hash, key, ops);
                if (r < 0)
                    return r;
                if (r)
                    break;
            }
            if (pos == n->count)
                return CTX_ENOTFOUND;
            break;
        }
        bit = 1u << frag(hash, shift);
        if (!(n->bits & bit))
            return CTX_ENOTFOUND;
        pos = popcount(n->bits & (bit - 1));
        uintptr_t s = n->slot[pos];
        if (is_node(s)) {
            if (!unshared(&as_node(s)->refs))
                goto pure;
            at[d++] = pos;
            n = as_node(s);
            shift += 5;
            continue;
        }
        int r = key_eq(as_item(s), hash, key, ops);
        if (r < 0)
            return r;
        if (!r)
            return CTX_ENOTFOUND;
        break;
    }

    uintptr_t gone = n->slot[pos];
    int collapse = d > 0 &&
                   (kind_of(n) == KIND_COLLISION ? n->count == 2
                                                 : n->count == 2 && !is_node(n->slot[1 - pos]));
    if (d == 0 && n->count == 1) {
        node_free_shallow(n); /* the empty map has no root */
        map->root = NULL;
    } else if (!collapse) {
        memmove(&n->slot[pos], &n->slot[pos + 1], (n->count - pos - 1) * sizeof(uintptr_t));
        n->count--;
        if (kind_of(n) == KIND_BITMAP)
            n->bits &= ~bit;
    } else {
        /* `n` would keep one item: move it up, past every chain node that
         * would then hold only it. */
        uintptr_t moved = n->slot[1 - pos];
        node_free_shallow(n);
        while (--d > 0 && path[d]->count == 1)
            node_free_shallow(path[d]);
        path[d]->slot[at[d]] = moved;
    }
    map->count--;
    *removed = as_item(gone); /* the slot's reference */
    return 0;

pure:;
    /* As in put: dropping the old version frees no item (the removed one is
     * held by a shared node, and retained here for the caller). */
    item_t *old = NULL;
    int r = ctx__hamt_find(map, hash, key, ops, &old);
    if (r <= 0)
        return r < 0 ? r : CTX_ENOTFOUND;
    ctx__hamt_t nm;
    r = ctx__hamt_without(map, hash, key, ops, &nm);
    if (r)
        return r;
    ctx__hamt_item_retain(old);
    ctx__hamt_release(*map, ops);
    *map = nm;
    *removed = old;
    return 0;
}

int ctx__hamt_without_inplace(ctx__hamt_t *map, uint32_t hash, const void *key,
                              const ctx__hamt_ops_t *ops) {
    item_t *gone;
    int r = ctx__hamt_take_inplace(map, hash, key, ops, &gone);
    if (r == 0)
        ctx__hamt_item_release(gone, ops);
    return r;
}

int ctx__hamt_is_private(const ctx__hamt_t *map, uint32_t hash, const void *key,
                         const ctx__hamt_ops_t *ops) {
    const node_t *n = map->root;
    unsigned shift = 0;
    int private_path = n != NULL && unshared(&n->refs);
    while (n) {
        uintptr_t s;
        if (kind_of(n) == KIND_COLLISION) {
            if (n->bits != hash)
                return CTX_ENOTFOUND;
            uint32_t i;
            for (i = 0; i < n->count; i++) {
                int r = key_eq(as_item(n->slot[i]), hash, key, ops);
                if (r < 0)
                    return r;
                if (r)
                    break;
            }
            if (i == n->count)
                return CTX_ENOTFOUND;
            s = n->slot[i];
        } else {
            uint32_t bit = 1u << frag(hash, shift);
            if (!(n->bits & bit))
                return CTX_ENOTFOUND;
            s = n->slot[popcount(n->bits & (bit - 1))];
            if (is_node(s)) {
                n = as_node(s);
                private_path = private_path && unshared(&n->refs);
                shift += 5;
                continue;
            }
            int r = key_eq(as_item(s), hash, key, ops);
            if (r < 0)
                return r;
            if (!r)
                return CTX_ENOTFOUND;
        }
        return private_path && unshared(&as_item(s)->refs);
    }
    return CTX_ENOTFOUND;
}

/* ---- iteration ---- */

void ctx__hamt_iter_init(ctx__hamt_iter_t *it, const ctx__hamt_t *map) {
    it->depth = map->root ? 0 : -1;
    it->node[0] = map->root;
    it->pos[0] = 0;
}

item_t *ctx__hamt_iter_next(ctx__hamt_iter_t *it) {
    while (it->depth >= 0) {
        const node_t *n = it->node[it->depth];
        uint32_t p = it->pos[it->depth];
        if (p >= n->count) {
            it->depth--;
            continue;
        }
        it->pos[it->depth] = p + 1;
        uintptr_t s = n->slot[p];
        if (is_node(s)) {
            it->depth++;
            it->node[it->depth] = as_node(s);
            it->pos[it->depth] = 0;
            continue;
        }
        return as_item(s);
    }
    return NULL;
}

/* ---- checks for tests ---- */

static int check_node(const node_t *n, unsigned shift, uint32_t prefix, int is_root,
                      size_t *items) {
    uint32_t mask = shift >= 32 ? 0xffffffffu : ((1u << shift) - 1);
    if (n->count > cap_of(n))
        return CTX_EINVAL;
    if (kind_of(n) == KIND_COLLISION) {
        if (is_root || n->count < 2 || (n->bits & mask) != prefix)
            return CTX_EINVAL;
        for (uint32_t i = 0; i < n->count; i++)
            if (is_node(n->slot[i]) || as_item(n->slot[i])->hash != n->bits)
                return CTX_EINVAL;
        *items += n->count;
        return 0;
    }
    if (shift > MAX_SHIFT || popcount(n->bits) != n->count)
        return CTX_EINVAL;
    if (n->count == 0 || (!is_root && n->count == 1 && !is_node(n->slot[0])))
        return CTX_EINVAL;
    uint32_t bits = n->bits;
    for (uint32_t i = 0; i < n->count; i++) {
        unsigned f = (unsigned)__builtin_ctz(bits);
        bits &= bits - 1;
        uintptr_t s = n->slot[i];
        uint32_t sub_prefix = prefix | (uint32_t)f << shift;
        if (is_node(s) && kind_of(as_node(s)) == KIND_BITMAP) {
            if (check_node(as_node(s), shift + 5, sub_prefix, 0, items))
                return CTX_EINVAL;
            continue;
        }
        uint32_t h = slot_hash(s);
        if ((h & mask) != prefix || frag(h, shift) != f)
            return CTX_EINVAL;
        if (is_node(s)) {
            if (check_node(as_node(s), shift + 5, sub_prefix, 0, items))
                return CTX_EINVAL;
        } else {
            (*items)++;
        }
    }
    return 0;
}

int ctx__hamt_check(const ctx__hamt_t *map) {
    if (map->root == NULL)
        return map->count == 0 ? 0 : CTX_EINVAL;
    size_t items = 0;
    if (check_node(map->root, 0, 0, 1, &items))
        return CTX_EINVAL;
    return items == map->count ? 0 : CTX_EINVAL;
}

static int depth_of(const node_t *n) {
    int best = 0;
    for (uint32_t i = 0; i < n->count; i++)
        if (is_node(n->slot[i])) {
            int d = depth_of(as_node(n->slot[i]));
            if (d > best)
                best = d;
        }
    return best + 1;
}

int ctx__hamt_depth(const ctx__hamt_t *map) {
    return map->root ? depth_of(map->root) : 0;
}
