/* SPDX-License-Identifier: MIT */
/*
 * test_hamt.c — tests of the persistent HAMT behind every context
 * (src/core/hamt.h).
 *
 * How
 * ---
 * Items are `titem_t` records whose 32-bit hash each test chooses, so every
 * tree shape can be built on purpose: keys that differ only in the fragment
 * of one level (5 bits at shifts 0, 5, ..., 25; the top 2 bits at shift 30),
 * keys with equal hashes (collision nodes), and the deepest tree: seven bitmap
 * levels and a collision node, CTX__HAMT_MAX_DEPTH.  The key equality hook
 * counts its calls, records calls the contract forbids (identical keys or
 * different hashes), and can be told to fail for one key id; the item free
 * hook counts the frees of every item, so a test can say exactly when an item
 * must die.
 *
 * After each operation a map is compared in full with what it must hold
 * (verify_map): count, ctx__hamt_check, the depth bounds that follow from the
 * hashes (exact when no two keys share a hash), a lookup of every key and of
 * an absent key with the same hash, and an iteration that must yield every
 * item exactly once without allocating.
 *
 * What
 * ----
 *   basics and persistence     find/assoc/without, replacement, identity vs eq,
 *                              older versions intact after any later change;
 *   shapes                     keys differing only at level k = 0..6, full
 *                              bitmap nodes, chains collapsing on removal;
 *   collisions                 insert/find/replace/delete to one/split;
 *   the deepest tree           every insertion and every deletion order
 *                              (persistent, in place, in place on a copy);
 *   failing key equality       every operation returns eq's code and changes
 *                              nothing, in this map or any other version;
 *   in-place operations        on a sole owner, and on maps sharing their
 *                              root or subtrees (a change must never show
 *                              through a shared node); ctx__hamt_is_private;
 *   allocation failure         the n-th allocation fails for n = 1, 2, ...
 *                              for every mutating operation on small, 1000-
 *                              item, collision and deep maps: CTX_ENOMEM,
 *                              nothing changed, nothing leaked;
 *   item lifetimes             each item freed exactly once, when the last
 *                              version holding it goes, never before;
 *   model test                 random operations on several live versions
 *                              against a plain array model.
 *
 * Reproducing a model-test failure
 * --------------------------------
 * The model test prints its seed, the failing step and the operations that
 * led there.  Run it again with that seed and step count:
 *
 *     CTX_TEST_SEED=<seed> CTX_TEST_STEPS=<step+1> \
 *         CTX_TEST_FILTER=test_model_random_operations ./test_hamt
 *
 * CTX_TEST_STEPS sets the number of steps (default 150000; 10000 when built
 * with CTX_TEST_UNDER_VALGRIND, 30000 with CTX_TEST_UNDER_TSAN);
 * CTX_TEST_FILTER runs only the tests whose names match the pattern
 * (cmocka_set_test_filter).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>

#include "core/hamt.h"
#include "../support/support.h"

/* ======================================================================== */
/* Keys, items and the hooks                                                */
/* ======================================================================== */

typedef struct tkey {
    int id;
    uint32_t hash; /* a copy, so eq can tell when it is called wrongly */
} tkey_t;

typedef struct titem {
    ctx__hamt_item_t hdr; /* hdr.key points at `key` unless a test says so */
    tkey_t key;
    long value;
    int *freed;  /* incremented by the free hook; may be NULL */
    int idx;     /* index in a tracker (scenario engine), else -1 */
    long serial; /* model test: index into g.model_freed, else -1 */
} titem_t;

static struct {
    long eq_calls;
    long eq_bad;  /* calls the contract forbids */
    int fail_id;  /* eq fails when either key has this id; -1: never */
    int fail_code;
    long frees;
    long bad_frees; /* freed with a reference count other than 0 */
    unsigned char *model_freed;
} g;

static int test_eq(const void *a, const void *b, void *user) {
    const tkey_t *ka = a;
    const tkey_t *kb = b;
    g.eq_calls++;
    /* "Called only for keys with equal hashes that are not identical." */
    if (user != &g || a == b || ka->hash != kb->hash)
        g.eq_bad++;
    if (g.fail_id >= 0 && (ka->id == g.fail_id || kb->id == g.fail_id))
        return g.fail_code;
    return ka->id == kb->id;
}

static void test_item_free(ctx__hamt_item_t *item, void *user) {
    titem_t *t = (titem_t *)item;
    if (user != &g || atomic_load(&item->refs) != 0)
        g.bad_frees++;
    g.frees++;
    if (t->freed)
        (*t->freed)++;
    if (t->serial >= 0 && g.model_freed)
        g.model_freed[t->serial]++;
    free(t); /* a later use is an ASan / valgrind error */
}

static const ctx__hamt_ops_t OPS = {test_eq, test_item_free, &g};
/* No eq hook: keys are equal only when identical. */
static const ctx__hamt_ops_t OPS_IDENTITY = {NULL, test_item_free, &g};

/* What the failing hook returns, and what every operation must then return
 * ("every operation then returns CTX_EKEY"). */
#define EQ_HOOK_CODE CTX_ECALLBACK
#define EQ_FAIL_CODE CTX_EKEY

static titem_t *item_new(int id, uint32_t hash, long value, int *freed) {
    titem_t *t = malloc(sizeof *t);
    assert_non_null(t);
    atomic_init(&t->hdr.refs, 1u);
    t->hdr.hash = hash;
    t->key.id = id;
    t->key.hash = hash;
    t->hdr.key = &t->key;
    t->value = value;
    t->freed = freed;
    t->idx = -1;
    t->serial = -1;
    return t;
}

static void item_drop(titem_t *t) { ctx__hamt_item_release(&t->hdr, &OPS); }
static unsigned refs_of(const titem_t *t) { return atomic_load(&t->hdr.refs); }

/* Lookup with a fresh key object (never identical to a stored key). */
static int find_key(const ctx__hamt_t *m, int id, uint32_t hash, titem_t **out) {
    tkey_t k = {id, hash};
    ctx__hamt_item_t *it = NULL;
    int rc = ctx__hamt_find(m, hash, &k, &OPS, &it);
    if (out)
        *out = rc == 1 ? (titem_t *)it : NULL;
    return rc;
}

/* *m = *m + t (persistent assoc; the old version is released). */
static void put(ctx__hamt_t *m, titem_t *t) {
    ctx__hamt_t out;
    int rc = ctx__hamt_assoc(m, &t->hdr, &OPS, &out);
    if (rc != 0)
        fail_msg("assoc of key %d failed: %d (%s)", t->key.id, rc, ctx_error_name(rc));
    ctx__hamt_release(*m, &OPS);
    *m = out;
}

/* *m = *m - key (persistent without; the old version is released). */
static void del(ctx__hamt_t *m, int id, uint32_t hash) {
    tkey_t k = {id, hash};
    ctx__hamt_t out;
    int rc = ctx__hamt_without(m, hash, &k, &OPS, &out);
    if (rc != 0)
        fail_msg("without of key %d failed: %d (%s)", id, rc, ctx_error_name(rc));
    ctx__hamt_release(*m, &OPS);
    *m = out;
}

/* put_inplace with the map's reference taken first, as assoc_inplace does:
 * the item keeps the caller's reference, and the replaced one is handed
 * back (the oracle below counts references that way). */
static int swap_inplace(ctx__hamt_t *m, ctx__hamt_item_t *it, const ctx__hamt_ops_t *ops,
                        ctx__hamt_item_t **replaced) {
    ctx__hamt_item_retain(it);
    int rc = ctx__hamt_put_inplace(m, it, ops, replaced);
    if (rc)
        atomic_fetch_sub(&it->refs, 1); /* never the last: the caller holds one */
    return rc;
}

static void put_inplace(ctx__hamt_t *m, titem_t *t) {
    int rc = ctx__hamt_assoc_inplace(m, &t->hdr, &OPS);
    if (rc != 0)
        fail_msg("assoc_inplace of key %d failed: %d (%s)", t->key.id, rc,
                 ctx_error_name(rc));
}

static void del_inplace(ctx__hamt_t *m, int id, uint32_t hash) {
    tkey_t k = {id, hash};
    int rc = ctx__hamt_without_inplace(m, hash, &k, &OPS);
    if (rc != 0)
        fail_msg("without_inplace of key %d failed: %d (%s)", id, rc, ctx_error_name(rc));
}

#include "ctx_test.h"

/* ======================================================================== */
/* Expected contents and the full comparison                                */
/* ======================================================================== */

enum { EXPECT_MAX = 1100, ID_LIMIT = 4096, ABSENT_ID_OFFSET = 1000000 };

typedef struct entry {
    int id;
    uint32_t hash;
    titem_t *item;
    int idx; /* tracker index or -1 */
} entry_t;

typedef struct expect {
    int n;
    entry_t e[EXPECT_MAX];
} expect_t;

static expect_t *exp_new(void) {
    expect_t *x = calloc(1, sizeof *x);
    assert_non_null(x);
    return x;
}

static int exp_find(const expect_t *x, int id) {
    for (int i = 0; i < x->n; i++)
        if (x->e[i].id == id)
            return i;
    return -1;
}

/* Adds `t` or replaces the entry of its key id. */
static void exp_set(expect_t *x, titem_t *t) {
    int i = exp_find(x, t->key.id);
    if (i < 0) {
        assert_true(x->n < EXPECT_MAX);
        i = x->n++;
    }
    x->e[i] = (entry_t){t->key.id, t->hdr.hash, t, t->idx};
}

static void exp_del(expect_t *x, int id) {
    int i = exp_find(x, id);
    assert_true(i >= 0);
    x->e[i] = x->e[--x->n];
}

static void exp_copy(expect_t *dst, const expect_t *src) {
    dst->n = src->n;
    memcpy(dst->e, src->e, (size_t)src->n * sizeof src->e[0]);
}

/* ---- depth bounds from the hashes ---- */

static unsigned frag(uint32_t hash, int level) { return (hash >> (5 * level)) & 31u; }

/* Number of leading levels (0..7) on which two hashes agree. */
static int common_levels(uint32_t a, uint32_t b) {
    int l = 0;
    while (l < 7 && frag(a, l) == frag(b, l))
        l++;
    return l;
}

/* The hash read fragment by fragment, level 0 most significant: sorting by
 * it puts keys sharing the longest path prefixes next to each other. */
static uint64_t path_order(uint32_t h) {
    uint64_t r = 0;
    for (int l = 0; l < 7; l++)
        r = (r << 5) | frag(h, l);
    return r;
}

static int cmp_path(const void *a, const void *b) {
    uint64_t x = path_order(*(const uint32_t *)a);
    uint64_t y = path_order(*(const uint32_t *)b);
    return x < y ? -1 : x > y;
}

/*
 * The depth a sound HAMT must have for these hashes.  Without equal hashes
 * it is exact: a node exists at level L iff two keys share L fragments (a
 * non-root node never holds a single item), so depth = 1 + the longest
 * shared prefix.  Keys with equal hashes meet in a collision node that may
 * sit anywhere on their path (as soon as they meet, or at the bottom); it
 * lies at least one level below the deepest node that separates them from
 * another key, and never below CTX__HAMT_MAX_DEPTH.
 */
static void depth_bounds(const uint32_t *hashes, int n, int *lo, int *hi) {
    if (n <= 1) {
        *lo = *hi = n;
        return;
    }
    uint32_t *h = malloc((size_t)n * sizeof *h);
    assert_non_null(h);
    memcpy(h, hashes, (size_t)n * sizeof *h);
    qsort(h, (size_t)n, sizeof *h, cmp_path);
    int longest = 0; /* longest prefix shared by two different hashes */
    int group_lo = 1;
    int groups = 0;
    for (int i = 0; i + 1 < n; i++)
        if (h[i] != h[i + 1] && common_levels(h[i], h[i + 1]) > longest)
            longest = common_levels(h[i], h[i + 1]);
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && h[j] == h[i])
            j++;
        if (j - i >= 2) {
            int c = -1;
            groups = 1;
            if (i > 0 && common_levels(h[i - 1], h[i]) > c)
                c = common_levels(h[i - 1], h[i]);
            if (j < n && common_levels(h[i], h[j]) > c)
                c = common_levels(h[i], h[j]);
            if (c + 2 > group_lo)
                group_lo = c + 2;
        }
        i = j;
    }
    free(h);
    *lo = 1 + longest > group_lo ? 1 + longest : group_lo;
    *hi = groups ? CTX__HAMT_MAX_DEPTH : 1 + longest;
}

static void expect_depth_bounds(const expect_t *x, int *lo, int *hi) {
    uint32_t *h = malloc((size_t)(x->n + 1) * sizeof *h);
    assert_non_null(h);
    for (int i = 0; i < x->n; i++)
        h[i] = x->e[i].hash;
    depth_bounds(h, x->n, lo, hi);
    free(h);
}

/* ---- verify_map ---- */

#define VERIFY(m, x) verify_map((m), (x), __FILE__, __LINE__, "")
#define VERIFY_AT(m, x, where) verify_map((m), (x), __FILE__, __LINE__, (where))

#define VFAIL(fmt, ...)                                                        \
    fail_msg("%s:%d: %s%s" fmt, file, line, where, *where ? ": " : "", __VA_ARGS__)

static void verify_map(const ctx__hamt_t *m, const expect_t *x, const char *file,
                       int line, const char *where) {
    if (m->count != (size_t)x->n)
        VFAIL("count is %zu, expected %d", m->count, x->n);
    if ((m->root == NULL) != (x->n == 0))
        VFAIL("root is %s for a map of %d items (hamt.h: NULL for the empty map)",
              m->root ? "set" : "NULL", x->n);
    int rc = ctx__hamt_check(m);
    if (rc != 0)
        VFAIL("ctx__hamt_check returned %d (%s) on a map of %d items", rc,
              ctx_error_name(rc), x->n);
    int lo, hi;
    expect_depth_bounds(x, &lo, &hi);
    int depth = ctx__hamt_depth(m);
    if (depth < lo || depth > hi)
        VFAIL("depth is %d, expected %d..%d (%d items)", depth, lo, hi, x->n);

    for (int i = 0; i < x->n; i++) {
        titem_t *got = NULL;
        rc = find_key(m, x->e[i].id, x->e[i].hash, &got);
        if (rc != 1 || got != x->e[i].item)
            VFAIL("find of key %d (hash 0x%08x) returned %d, item %p, expected 1, %p",
                  x->e[i].id, (unsigned)x->e[i].hash, rc, (void *)got,
                  (void *)x->e[i].item);
        /* An absent key with the same hash: eq runs and says "no". */
        rc = find_key(m, x->e[i].id + ABSENT_ID_OFFSET, x->e[i].hash, NULL);
        if (rc != 0)
            VFAIL("find of absent key %d (hash 0x%08x) returned %d",
                  x->e[i].id + ABSENT_ID_OFFSET, (unsigned)x->e[i].hash, rc);
    }

    /* Iteration: every item exactly once, nothing else, no allocation. */
    short *pos = calloc(ID_LIMIT, sizeof *pos);
    unsigned char *seen = calloc((size_t)x->n + 1, 1);
    assert_non_null(pos);
    assert_non_null(seen);
    for (int i = 0; i < x->n; i++) {
        assert_true(x->e[i].id >= 0 && x->e[i].id < ID_LIMIT);
        pos[x->e[i].id] = (short)(i + 1);
    }
    long attempts = ctx_test_alloc_attempts();
    ctx__hamt_iter_t it;
    ctx__hamt_iter_init(&it, m);
    int n = 0;
    ctx__hamt_item_t *item;
    while ((item = ctx__hamt_iter_next(&it)) != NULL) {
        titem_t *t = (titem_t *)item;
        int id = t->key.id;
        if (++n > x->n)
            VFAIL("iteration yielded more than the %d items", x->n);
        if (id < 0 || id >= ID_LIMIT || pos[id] == 0 || x->e[pos[id] - 1].item != t)
            VFAIL("iteration yielded item %p (key %d), which the map must not hold",
                  (void *)t, id);
        if (seen[pos[id] - 1]++)
            VFAIL("iteration yielded the item of key %d (hash 0x%08x) twice", id,
                  (unsigned)t->hdr.hash);
    }
    if (n != x->n) {
        for (int i = 0; i < x->n; i++)
            if (!seen[i])
                VFAIL("iteration yielded %d of %d items: key %d (hash 0x%08x) missing", n,
                      x->n, x->e[i].id, (unsigned)x->e[i].hash);
    }
    if (ctx__hamt_iter_next(&it) != NULL)
        VFAIL("iterator yielded an item after reporting the end (%d items)", x->n);
    if (ctx_test_alloc_attempts() != attempts)
        VFAIL("iteration allocated %ld blocks", ctx_test_alloc_attempts() - attempts);
    free(pos);
    free(seen);
}

/* ======================================================================== */
/* Setup, teardown, shared checks                                           */
/* ======================================================================== */

static int setup(void **state) {
    (void)state;
    memset(&g, 0, sizeof g);
    g.fail_id = -1;
    g.fail_code = EQ_HOOK_CODE;
    ctx_test_alloc_install();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_test_alloc_fail_nth(0);
    ctx_test_alloc_fail_all(0);
    long live = ctx_test_alloc_live_blocks();
    ctx_test_alloc_uninstall();
    if (live != 0 || g.eq_bad != 0 || g.bad_frees != 0) {
        print_error("teardown: %ld blocks still allocated, %ld forbidden eq calls, "
                    "%ld items freed with references left\n",
                    live, g.eq_bad, g.bad_frees);
        return -1;
    }
    return 0;
}

/* At the end of each test: nothing leaked, no contract violation seen. */
static void assert_clean(void) {
    if (ctx_test_alloc_live_blocks() != 0)
        fail_msg("%ld blocks leaked", ctx_test_alloc_live_blocks());
    if (g.eq_bad != 0)
        fail_msg("eq was called %ld times for identical keys or different hashes", g.eq_bad);
    if (g.bad_frees != 0)
        fail_msg("%ld items were freed while still referenced", g.bad_frees);
}

static const ctx__hamt_item_t *const SENTINEL_ITEM = (const ctx__hamt_item_t *)&g;
static char sentinel_node;
#define SENTINEL_MAP ((ctx__hamt_t){(ctx__hamt_node_t *)(void *)&sentinel_node, 0xDEADu})
static int is_sentinel(ctx__hamt_t m) {
    return m.root == (ctx__hamt_node_t *)(void *)&sentinel_node && m.count == 0xDEADu;
}

/* A hash with a bijective mixer (distinct ids, distinct hashes). */
static uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* Lexicographic next permutation; 0 after the last. */
static int next_permutation(int *a, int n) {
    int i = n - 2;
    while (i >= 0 && a[i] >= a[i + 1])
        i--;
    if (i < 0)
        return 0;
    int j = n - 1;
    while (a[j] <= a[i])
        j--;
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
    for (int l = i + 1, r = n - 1; l < r; l++, r--) {
        t = a[l];
        a[l] = a[r];
        a[r] = t;
    }
    return 1;
}

/* ======================================================================== */
/* 1. Basics and persistence                                                */
/* ======================================================================== */

static void test_empty_map_finds_nothing(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    ctx__hamt_item_t *out = (ctx__hamt_item_t *)SENTINEL_ITEM;
    tkey_t k = {1, 0x1234};
    ASSERT_RC(ctx__hamt_find(&m, k.hash, &k, &OPS, &out), 0);
    assert_int_equal(m.count, 0);
    assert_int_equal(ctx__hamt_depth(&m), 0);
    ASSERT_RC(ctx__hamt_check(&m), 0);
    ctx__hamt_iter_t it;
    ctx__hamt_iter_init(&it, &m);
    assert_null(ctx__hamt_iter_next(&it));
    assert_null(ctx__hamt_iter_next(&it));

    ctx__hamt_t w = SENTINEL_MAP;
    ASSERT_RC(ctx__hamt_without(&m, k.hash, &k, &OPS, &w), CTX_ENOTFOUND);
    assert_true(is_sentinel(w));
    ASSERT_RC(ctx__hamt_without_inplace(&m, k.hash, &k, &OPS), CTX_ENOTFOUND);
    assert_null(m.root);
    ASSERT_RC(ctx__hamt_is_private(&m, k.hash, &k, &OPS), CTX_ENOTFOUND);

    ctx__hamt_t copy = ctx__hamt_retain(m);
    assert_int_equal(copy.count, 0);
    ctx__hamt_release(copy, &OPS);
    ctx__hamt_release(m, &OPS);
    assert_int_equal(g.eq_calls, 0);
    assert_clean();
}

static void test_assoc_then_find_returns_the_item(void **state) {
    (void)state;
    int freed[3] = {0};
    titem_t *a = item_new(1, 0x00000001, 10, &freed[0]);
    titem_t *b = item_new(2, 0x00000002, 20, &freed[1]);
    titem_t *c = item_new(3, 0x00000021, 30, &freed[2]); /* shares level 0 with a */
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();

    titem_t *list[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        ctx__hamt_t out;
        ASSERT_RC(ctx__hamt_assoc(&m, &list[i]->hdr, &OPS, &out), 0);
        /* the creator's reference plus the map's own */
        assert_int_equal(refs_of(list[i]), 2);
        ctx__hamt_release(m, &OPS);
        m = out;
        exp_set(x, list[i]);
        VERIFY(&m, x);
    }
    titem_t *got;
    ASSERT_RC(find_key(&m, 2, 0x00000002, &got), 1);
    assert_ptr_equal(got, b);
    assert_int_equal(got->value, 20);
    ASSERT_RC(find_key(&m, 4, 0x00000004, &got), 0);
    for (int i = 0; i < 3; i++)
        item_drop(list[i]);
    assert_int_equal(freed[0] + freed[1] + freed[2], 0);
    ctx__hamt_release(m, &OPS);
    assert_int_equal(freed[0] + freed[1] + freed[2], 3);
    free(x);
    assert_clean();
}

static void test_assoc_same_key_replaces_and_keeps_count(void **state) {
    (void)state;
    int freed[4] = {0};
    titem_t *a = item_new(1, 0x0000AAAA, 1, &freed[0]);
    titem_t *b = item_new(2, 0x0000BBBB, 2, &freed[1]);
    titem_t *a2 = item_new(1, 0x0000AAAA, 100, &freed[2]); /* same key as a */
    ctx__hamt_t v1 = CTX__HAMT_EMPTY;
    put(&v1, a);
    put(&v1, b);
    ctx__hamt_t v2;
    ASSERT_RC(ctx__hamt_assoc(&v1, &a2->hdr, &OPS, &v2), 0);
    assert_int_equal(v2.count, 2);
    titem_t *got;
    ASSERT_RC(find_key(&v2, 1, 0x0000AAAA, &got), 1);
    assert_ptr_equal(got, a2);
    assert_int_equal(got->value, 100);
    ASSERT_RC(find_key(&v1, 1, 0x0000AAAA, &got), 1);
    assert_ptr_equal(got, a); /* the old version keeps the old item */

    expect_t *x1 = exp_new(), *x2 = exp_new();
    exp_set(x1, a);
    exp_set(x1, b);
    exp_copy(x2, x1);
    exp_set(x2, a2);
    VERIFY(&v1, x1);
    VERIFY(&v2, x2);

    /* Replacing in place, too. */
    titem_t *a3 = item_new(1, 0x0000AAAA, 1000, &freed[3]);
    put_inplace(&v2, a3);
    assert_int_equal(v2.count, 2);
    exp_set(x2, a3);
    VERIFY(&v2, x2);
    VERIFY(&v1, x1);

    item_drop(a);
    item_drop(b);
    item_drop(a2);
    item_drop(a3);
    assert_int_equal(freed[2], 1); /* a2 was in v2 only, replaced by a3 */
    ctx__hamt_release(v2, &OPS);
    assert_int_equal(freed[0] + freed[1], 0);
    ctx__hamt_release(v1, &OPS);
    for (int i = 0; i < 4; i++)
        assert_int_equal(freed[i], 1);
    free(x1);
    free(x2);
    assert_clean();
}

static void test_identical_key_needs_no_eq(void **state) {
    (void)state;
    titem_t *a = item_new(1, 0x77, 1, NULL);
    titem_t *c = item_new(3, 0x78, 3, NULL);
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    put(&m, a);
    put(&m, c);
    item_drop(c);
    ctx__hamt_item_t *out = NULL;
    /* Alone with its hash, a is found by identity: eq never runs. */
    ASSERT_RC(ctx__hamt_find(&m, 0x77, &a->key, &OPS, &out), 1);
    assert_ptr_equal(out, &a->hdr);
    tkey_t ka = a->key;
    ASSERT_RC(ctx__hamt_is_private(&m, 0x77, &a->key, &OPS), 0);
    assert_int_equal(g.eq_calls, 0);
    ASSERT_RC(ctx__hamt_find(&m, 0x77, &ka, &OPS, &out), 1); /* a copy: eq */
    assert_int_equal(g.eq_calls, 1);

    titem_t *b = item_new(2, 0x77, 2, NULL); /* same hash: a collision */
    put(&m, b);
    ASSERT_RC(ctx__hamt_find(&m, 0x77, &a->key, &OPS, &out), 1);
    assert_ptr_equal(out, &a->hdr);
    ASSERT_RC(ctx__hamt_find(&m, 0x77, &b->key, &OPS, &out), 1);
    assert_ptr_equal(out, &b->hdr);
    /* An item whose key pointer is a's key replaces a. */
    titem_t *a2 = item_new(1, 0x77, 3, NULL);
    a2->hdr.key = &a->key;
    put(&m, a2);
    assert_int_equal(m.count, 3);
    ASSERT_RC(ctx__hamt_find(&m, 0x77, &a->key, &OPS, &out), 1);
    assert_ptr_equal(out, &a2->hdr);
    /* eq may compare a's key with b's; identical keys are never passed to
     * it (the hook counts that as a contract violation). */
    item_drop(a2);
    item_drop(b);
    ctx__hamt_release(m, &OPS);
    item_drop(a); /* a2's key lived in a: a must outlive the map */
    assert_clean();
}

static void test_eq_is_called_only_for_equal_hashes(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    for (int i = 0; i < 64; i++) {
        titem_t *t = item_new(i, mix32((uint32_t)i), i, NULL);
        put(&m, t);
        item_drop(t);
    }
    long calls = g.eq_calls;
    /* Absent keys of other hashes, some sharing long path prefixes. */
    for (int i = 0; i < 64; i++) {
        uint32_t h = mix32((uint32_t)i);
        ASSERT_RC(find_key(&m, 1000 + i, h ^ (1u << 30), NULL), 0);
        ASSERT_RC(find_key(&m, 2000 + i, h ^ (1u << 5), NULL), 0);
        ASSERT_RC(find_key(&m, 3000 + i, h ^ 1u, NULL), 0);
    }
    assert_int_equal(g.eq_calls, calls);
    /* Present keys: one comparison each. */
    for (int i = 0; i < 64; i++)
        ASSERT_RC(find_key(&m, i, mix32((uint32_t)i), NULL), 1);
    assert_int_equal(g.eq_calls, calls + 64);
    ctx__hamt_release(m, &OPS);
    assert_clean();
}

static void test_null_eq_means_identity(void **state) {
    (void)state;
    titem_t *a = item_new(1, 0x55, 1, NULL);
    titem_t *b = item_new(1, 0x55, 2, NULL); /* "equal" id, different key object */
    ctx__hamt_t m = CTX__HAMT_EMPTY, out;
    ASSERT_RC(ctx__hamt_assoc(&m, &a->hdr, &OPS_IDENTITY, &out), 0);
    m = out;
    ASSERT_RC(ctx__hamt_assoc_inplace(&m, &b->hdr, &OPS_IDENTITY), 0);
    assert_int_equal(m.count, 2);
    ASSERT_RC(ctx__hamt_check(&m), 0);
    ctx__hamt_item_t *got = NULL;
    ASSERT_RC(ctx__hamt_find(&m, 0x55, &a->key, &OPS_IDENTITY, &got), 1);
    assert_ptr_equal(got, &a->hdr);
    ASSERT_RC(ctx__hamt_find(&m, 0x55, &b->key, &OPS_IDENTITY, &got), 1);
    assert_ptr_equal(got, &b->hdr);
    tkey_t other = {1, 0x55};
    ASSERT_RC(ctx__hamt_find(&m, 0x55, &other, &OPS_IDENTITY, &got), 0);
    ASSERT_RC(ctx__hamt_without(&m, 0x55, &other, &OPS_IDENTITY, &out), CTX_ENOTFOUND);
    ASSERT_RC(ctx__hamt_without_inplace(&m, 0x55, &b->key, &OPS_IDENTITY), 0);
    assert_int_equal(m.count, 1);
    ASSERT_RC(ctx__hamt_find(&m, 0x55, &a->key, &OPS_IDENTITY, &got), 1);
    ASSERT_RC(ctx__hamt_check(&m), 0);
    assert_int_equal(g.eq_calls, 0);
    item_drop(a);
    item_drop(b);
    ctx__hamt_release(m, &OPS_IDENTITY);
    assert_clean();
}

static void test_without_present_removes_only_that_key(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    for (int i = 0; i < 40; i++) {
        titem_t *t = item_new(i, mix32((uint32_t)i) & 0x3FFu, i, NULL); /* crowded */
        put(&m, t);
        exp_set(x, t);
        item_drop(t);
    }
    VERIFY(&m, x);
    expect_t *y = exp_new();
    for (int i = 0; i < 40; i += 3) {
        ctx__hamt_t out = SENTINEL_MAP;
        uint32_t h = mix32((uint32_t)i) & 0x3FFu;
        tkey_t k = {i, h};
        ASSERT_RC(ctx__hamt_without(&m, h, &k, &OPS, &out), 0);
        exp_copy(y, x);
        exp_del(y, i);
        VERIFY(&out, y);
        VERIFY(&m, x); /* the source is untouched */
        ctx__hamt_release(m, &OPS);
        m = out;
        exp_copy(x, y);
    }
    ctx__hamt_release(m, &OPS);
    free(x);
    free(y);
    assert_clean();
}

static void test_without_absent_is_enotfound_and_leaves_out_untouched(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    uint32_t hashes[] = {0x10, 0x30, 0x10 ^ (1u << 30), 0x99, 0x99};
    for (int i = 0; i < 5; i++) {
        titem_t *t = item_new(i, hashes[i], i, NULL);
        put(&m, t);
        exp_set(x, t);
        item_drop(t);
    }
    struct {
        int id;
        uint32_t hash;
    } probes[] = {
        {50, 0x10},                /* same hash as key 0: eq says no */
        {51, 0x99},                /* same hash as a collision node */
        {52, 0x50},                /* same root slot as 0x10, other level 1 */
        {53, 0x10 ^ (2u << 30)},   /* down the deepest chain, empty slot */
        {54, 0x1F},                /* empty root slot */
        {55, 0x10 ^ (1u << 25)},   /* diverges one level above the bottom */
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        tkey_t k = {probes[i].id, probes[i].hash};
        ctx__hamt_t out = SENTINEL_MAP;
        long blocks = ctx_test_alloc_live_blocks();
        ASSERT_RC(ctx__hamt_without(&m, k.hash, &k, &OPS, &out), CTX_ENOTFOUND);
        assert_true(is_sentinel(out));
        ctx__hamt_t before = m;
        ASSERT_RC(ctx__hamt_without_inplace(&m, k.hash, &k, &OPS), CTX_ENOTFOUND);
        assert_ptr_equal(m.root, before.root);
        assert_int_equal(ctx_test_alloc_live_blocks(), blocks);
        VERIFY(&m, x);
    }
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

static void test_old_versions_survive_later_changes(void **state) {
    (void)state;
    enum { VERSIONS = 80, KEYS = 24 };
    ctx__hamt_t v[VERSIONS + 1];
    expect_t *x[VERSIONS + 1];
    uint32_t hash[KEYS];
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, 42);
    for (int k = 0; k < KEYS; k++) {
        /* clustered: collisions and long shared prefixes */
        uint32_t base = 0x2468ACE1u;
        int level = (int)ctx_test_rng_below(&rng, 7);
        uint32_t f = (uint32_t)ctx_test_rng_below(&rng, level == 6 ? 4 : 32);
        hash[k] = base ^ (f << (5 * level));
    }
    v[0] = CTX__HAMT_EMPTY;
    x[0] = exp_new();
    for (int i = 1; i <= VERSIONS; i++) {
        int from = (int)ctx_test_rng_below(&rng, (uint64_t)i);
        int k = (int)ctx_test_rng_below(&rng, KEYS);
        x[i] = exp_new();
        exp_copy(x[i], x[from]);
        if (exp_find(x[from], k) >= 0 && ctx_test_rng_below(&rng, 2)) {
            tkey_t key = {k, hash[k]};
            ASSERT_RC(ctx__hamt_without(&v[from], hash[k], &key, &OPS, &v[i]), 0);
            exp_del(x[i], k);
        } else {
            titem_t *t = item_new(k, hash[k], i, NULL);
            ASSERT_RC(ctx__hamt_assoc(&v[from], &t->hdr, &OPS, &v[i]), 0);
            exp_set(x[i], t);
            item_drop(t);
        }
        for (int j = 0; j <= i; j++) {
            char where[64];
            snprintf(where, sizeof where, "version %d after building version %d", j, i);
            VERIFY_AT(&v[j], x[j], where);
        }
    }
    for (int i = 0; i <= VERSIONS; i++) {
        ctx__hamt_release(v[i], &OPS);
        free(x[i]);
    }
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    assert_clean();
}

/* ======================================================================== */
/* 2. Forced-hash shapes                                                    */
/* ======================================================================== */

#define BASE_HASH 0x2F5A3C91u

static titem_t *add(ctx__hamt_t *m, expect_t *x, int id, uint32_t hash) {
    titem_t *t = item_new(id, hash, id, NULL);
    put(m, t);
    exp_set(x, t);
    item_drop(t);
    return t;
}

static void remove_key(ctx__hamt_t *m, expect_t *x, int id, uint32_t hash) {
    del(m, id, hash);
    exp_del(x, id);
}

static void test_keys_differing_only_at_level_k_nest_k_levels_deep(void **state) {
    (void)state;
    for (int k = 0; k <= 6; k++) {
        unsigned shift = 5u * (unsigned)k;
        uint32_t a = BASE_HASH;
        uint32_t b = a ^ (1u << shift);
        uint32_t c = a ^ (2u << shift);
        uint32_t absent = a ^ (3u << shift);
        char where[64];
        snprintf(where, sizeof where, "level %d (shift %u)", k, shift);
        ctx__hamt_t m = CTX__HAMT_EMPTY;
        expect_t *x = exp_new();

        add(&m, x, 1, a);
        VERIFY_AT(&m, x, where);
        assert_int_equal(ctx__hamt_depth(&m), 1);
        add(&m, x, 2, b);
        VERIFY_AT(&m, x, where);
        assert_int_equal(ctx__hamt_depth(&m), k + 1);
        add(&m, x, 3, c);
        VERIFY_AT(&m, x, where);
        assert_int_equal(ctx__hamt_depth(&m), k + 1);

        long calls = g.eq_calls;
        ASSERT_RC(find_key(&m, 4, absent, NULL), 0); /* same path, empty slot */
        assert_int_equal(g.eq_calls, calls);

        if (k > 0) {
            /* A key leaving the path one level higher: depth unchanged. */
            uint32_t d = a ^ (1u << (shift - 5));
            add(&m, x, 4, d);
            VERIFY_AT(&m, x, where);
            assert_int_equal(ctx__hamt_depth(&m), k + 1);
            remove_key(&m, x, 2, b);
            VERIFY_AT(&m, x, where);
            assert_int_equal(ctx__hamt_depth(&m), k + 1);
            remove_key(&m, x, 3, c);
            VERIFY_AT(&m, x, where);
            assert_int_equal(ctx__hamt_depth(&m), k); /* a and d split at k-1 */
            remove_key(&m, x, 4, d);
        } else {
            remove_key(&m, x, 2, b);
            remove_key(&m, x, 3, c);
        }
        VERIFY_AT(&m, x, where);
        assert_int_equal(ctx__hamt_depth(&m), 1);
        remove_key(&m, x, 1, a);
        VERIFY_AT(&m, x, where);
        assert_int_equal(ctx__hamt_depth(&m), 0);
        ctx__hamt_release(m, &OPS);
        free(x);
    }
    assert_clean();
}

static void test_removal_collapses_chain_back_to_root(void **state) {
    (void)state;
    for (int k = 0; k <= 6; k++) {
        for (int inplace = 0; inplace <= 1; inplace++) {
            uint32_t a = BASE_HASH, b = BASE_HASH ^ (1u << (5 * k));
            ctx__hamt_t m = CTX__HAMT_EMPTY;
            expect_t *x = exp_new();
            add(&m, x, 1, 0x00000003u); /* a bystander in another root slot
                                         * (BASE_HASH's is 17) */
            add(&m, x, 2, a);
            add(&m, x, 3, b);
            assert_int_equal(ctx__hamt_depth(&m), k + 1 > 1 ? k + 1 : 1);
            if (inplace) {
                del_inplace(&m, 3, b);
                exp_del(x, 3);
            } else {
                remove_key(&m, x, 3, b);
            }
            VERIFY(&m, x);
            assert_int_equal(ctx__hamt_depth(&m), 1); /* the chain is gone */
            ctx__hamt_release(m, &OPS);
            free(x);
        }
    }
    assert_clean();
}

static void test_full_bitmap_node_at_every_level(void **state) {
    (void)state;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, 7);
    for (int k = 0; k <= 6; k++) {
        int width = k == 6 ? 4 : 32;
        int order[32];
        for (int i = 0; i < width; i++)
            order[i] = i;
        for (int i = width - 1; i > 0; i--) {
            int j = (int)ctx_test_rng_below(&rng, (uint64_t)i + 1);
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        ctx__hamt_t m = CTX__HAMT_EMPTY;
        expect_t *x = exp_new();
        for (int i = 0; i < width; i++) {
            uint32_t f = (uint32_t)order[i];
            add(&m, x, order[i], BASE_HASH ^ (f << (5 * k)));
            VERIFY(&m, x);
        }
        assert_int_equal(ctx__hamt_depth(&m), k + 1);
        for (int i = 0; i < width; i++) {
            uint32_t f = (uint32_t)((order[i] * 7 + 3) % width);
            /* a different order for removal, by in-place removal */
            del_inplace(&m, (int)f, BASE_HASH ^ (f << (5 * k)));
            exp_del(x, (int)f);
            VERIFY(&m, x);
        }
        assert_int_equal(m.count, 0);
        ctx__hamt_release(m, &OPS);
        free(x);
    }
    assert_clean();
}

/* ======================================================================== */
/* 3. Collisions                                                            */
/* ======================================================================== */

#define COLL_HASH 0xDEADBEEFu

static void test_collision_insert_find_replace(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    add(&m, x, 100, COLL_HASH ^ 1u); /* a neighbour in another root slot */
    for (int i = 0; i < 6; i++) {
        add(&m, x, i, COLL_HASH);
        VERIFY(&m, x);
    }
    assert_int_equal(m.count, 7);
    /* Replace a middle one, persistently: the old version keeps its item. */
    titem_t *old;
    ASSERT_RC(find_key(&m, 3, COLL_HASH, &old), 1);
    expect_t *x_old = exp_new();
    exp_copy(x_old, x);
    ctx__hamt_t v1 = ctx__hamt_retain(m);
    add(&m, x, 3, COLL_HASH);
    assert_int_equal(m.count, 7);
    titem_t *now;
    ASSERT_RC(find_key(&m, 3, COLL_HASH, &now), 1);
    assert_ptr_not_equal(now, old);
    VERIFY(&m, x);
    VERIFY(&v1, x_old);
    ctx__hamt_release(v1, &OPS);
    ctx__hamt_release(m, &OPS);
    free(x);
    free(x_old);
    assert_clean();
}

static void test_collision_delete_down_to_one_collapses(void **state) {
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        /* 0: collisions alone; 1: with a root neighbour; 2: with a neighbour
         * that differs only in the top bits (forces the bottom level). */
        ctx__hamt_t m = CTX__HAMT_EMPTY;
        expect_t *x = exp_new();
        if (variant == 1)
            add(&m, x, 100, COLL_HASH ^ 1u);
        if (variant == 2)
            add(&m, x, 100, COLL_HASH ^ (1u << 31));
        for (int i = 0; i < 5; i++)
            add(&m, x, i, COLL_HASH);
        VERIFY(&m, x);
        if (variant == 2)
            assert_int_equal(ctx__hamt_depth(&m), CTX__HAMT_MAX_DEPTH);
        int order[5] = {2, 0, 4, 1, 3};
        for (int i = 0; i < 4; i++) {
            if (i % 2)
                remove_key(&m, x, order[i], COLL_HASH);
            else {
                del_inplace(&m, order[i], COLL_HASH);
                exp_del(x, order[i]);
            }
            VERIFY(&m, x); /* after the last: a single item, no collision node */
        }
        if (variant == 0)
            assert_int_equal(ctx__hamt_depth(&m), 1);
        else if (variant == 1)
            assert_int_equal(ctx__hamt_depth(&m), 1);
        else
            assert_int_equal(ctx__hamt_depth(&m), 7);
        ctx__hamt_release(m, &OPS);
        free(x);
    }
    assert_clean();
}

static void test_collision_node_splits_for_another_hash(void **state) {
    (void)state;
    for (int level = 0; level <= 6; level++) {
        ctx__hamt_t m = CTX__HAMT_EMPTY;
        expect_t *x = exp_new();
        for (int i = 0; i < 3; i++)
            add(&m, x, i, COLL_HASH);
        uint32_t other = COLL_HASH ^ (1u << (5 * level));
        add(&m, x, 10, other);
        VERIFY(&m, x);
        /* The collision node now sits below the level that separates it
         * from `other`. */
        assert_true(ctx__hamt_depth(&m) >= level + 2);
        if (level == 6)
            assert_int_equal(ctx__hamt_depth(&m), CTX__HAMT_MAX_DEPTH);
        remove_key(&m, x, 10, other);
        VERIFY(&m, x);
        remove_key(&m, x, 1, COLL_HASH);
        remove_key(&m, x, 0, COLL_HASH);
        VERIFY(&m, x);
        assert_int_equal(ctx__hamt_depth(&m), 1);
        ctx__hamt_release(m, &OPS);
        free(x);
    }
    assert_clean();
}

static void test_collision_items_iterate_once_each(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    /* Four collision nodes of 3, 4, 5, 6 items in one bitmap node. */
    int id = 0;
    for (int group = 0; group < 4; group++)
        for (int i = 0; i < 3 + group; i++)
            add(&m, x, id++, COLL_HASH ^ ((uint32_t)group << 10));
    VERIFY(&m, x);
    ctx__hamt_iter_t it;
    ctx__hamt_iter_init(&it, &m);
    int n = 0;
    while (ctx__hamt_iter_next(&it))
        n++;
    assert_int_equal(n, id);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

/* A hash function may give every key the same hash (a Python class with a
 * constant __hash__): a collision node of more than 255 items must still be
 * found, changed and iterated like any other. */
static void test_collision_node_of_300_items_iterates_once_each(void **state) {
    (void)state;
    enum { N = 300 };
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    for (int i = 0; i < N; i++) {
        titem_t *t = item_new(i, COLL_HASH, i, NULL);
        if (i % 2)
            put_inplace(&m, t);
        else
            put(&m, t);
        exp_set(x, t);
        item_drop(t);
    }
    assert_int_equal(m.count, N);
    ctx__hamt_iter_t it;
    ctx__hamt_iter_init(&it, &m);
    int n = 0;
    while (ctx__hamt_iter_next(&it) != NULL && n <= N)
        n++;
    if (n != N)
        fail_msg("a collision node of %d items iterated %s%d items", N, n > N ? "more than " : "",
                 n > N ? N : n);
    VERIFY(&m, x);
    for (int i = 0; i < N; i += 7) {
        del_inplace(&m, i, COLL_HASH);
        exp_del(x, i);
    }
    VERIFY(&m, x);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

/* ======================================================================== */
/* 4. The deepest tree                                                      */
/* ======================================================================== */

/* Hashes equal but for the top two bits: a chain of seven bitmap levels;
 * equal hashes among them: collision nodes at CTX__HAMT_MAX_DEPTH. */
#define DEEP_HASH 0x0ABCDEF1u
#define DEEP(top) (DEEP_HASH ^ ((uint32_t)(top) << 30))

static const struct {
    int id;
    uint32_t hash;
} DEEPEST[] = {
    {0, DEEP(0)}, {1, DEEP(0)}, {2, DEEP(0)}, {3, DEEP(1)}, {4, DEEP(1)}, {5, DEEP(2)},
};
enum { N_DEEPEST = 6 };

static void test_deepest_tree_reaches_max_depth(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    add(&m, x, 0, DEEP(0));
    add(&m, x, 3, DEEP(1));
    VERIFY(&m, x);
    assert_int_equal(ctx__hamt_depth(&m), 7); /* seven bitmap levels */
    add(&m, x, 1, DEEP(0));
    VERIFY(&m, x);
    assert_int_equal(ctx__hamt_depth(&m), CTX__HAMT_MAX_DEPTH);
    add(&m, x, 2, DEEP(0));
    add(&m, x, 4, DEEP(1));
    add(&m, x, 5, DEEP(2));
    add(&m, x, 6, DEEP(3));
    add(&m, x, 7, DEEP(3));
    VERIFY(&m, x);
    assert_int_equal(ctx__hamt_depth(&m), CTX__HAMT_MAX_DEPTH);
    titem_t *got;
    for (int i = 0; i < x->n; i++) {
        ASSERT_RC(find_key(&m, x->e[i].id, x->e[i].hash, &got), 1);
        assert_ptr_equal(got, x->e[i].item);
    }
    ASSERT_RC(find_key(&m, 50, DEEP(0), NULL), 0);
    ASSERT_RC(find_key(&m, 50, DEEP(2), NULL), 0);
    ASSERT_RC(find_key(&m, 50, DEEP(0) ^ (1u << 25), NULL), 0);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

static int iterate_count_distinct(const ctx__hamt_t *m, titem_t **seen, int cap) {
    ctx__hamt_iter_t it;
    ctx__hamt_iter_init(&it, m);
    int n = 0;
    ctx__hamt_item_t *item;
    while ((item = ctx__hamt_iter_next(&it)) != NULL) {
        for (int i = 0; i < n; i++)
            if (seen[i] == (titem_t *)item)
                fail_msg("item of key %d yielded twice", ((titem_t *)item)->key.id);
        if (n == cap)
            fail_msg("iteration yielded more than %d items", cap);
        seen[n++] = (titem_t *)item;
    }
    return n;
}

static void test_deepest_tree_iterates_every_item_once(void **state) {
    (void)state;
    /* Every bottom slot holds a collision node: four at depth 8, plus items
     * hanging off every level of the chain. */
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    int id = 0;
    for (int top = 0; top < 4; top++)
        for (int i = 0; i < 2 + top; i++)
            add(&m, x, id++, DEEP(top));
    for (int level = 0; level < 6; level++)
        add(&m, x, id++, DEEP_HASH ^ (1u << (5 * level)));
    VERIFY(&m, x);
    assert_int_equal(ctx__hamt_depth(&m), CTX__HAMT_MAX_DEPTH);
    titem_t *seen[64];
    assert_int_equal(iterate_count_distinct(&m, seen, 64), id);

    /* Two iterators over the same map, interleaved. */
    ctx__hamt_iter_t a, b;
    ctx__hamt_iter_init(&a, &m);
    ctx__hamt_iter_init(&b, &m);
    int na = 0, nb = 0;
    for (;;) { /* b runs twice as fast as a */
        int more = 0;
        if (ctx__hamt_iter_next(&a))
            na++, more = 1;
        for (int i = 0; i < 2; i++)
            if (ctx__hamt_iter_next(&b))
                nb++, more = 1;
        if (!more)
            break;
    }
    assert_int_equal(na, id);
    assert_int_equal(nb, id);

    /* Only the bottom: a map of nothing but one deep collision node and its
     * chain neighbour. */
    ctx__hamt_t small = CTX__HAMT_EMPTY;
    expect_t *y = exp_new();
    add(&small, y, 0, DEEP(2));
    add(&small, y, 1, DEEP(2));
    add(&small, y, 2, DEEP(3));
    VERIFY(&small, y);
    assert_int_equal(iterate_count_distinct(&small, seen, 64), 3);

    ctx__hamt_release(small, &OPS);
    ctx__hamt_release(m, &OPS);
    free(x);
    free(y);
    assert_clean();
}

static void test_deepest_tree_inserts_in_every_order(void **state) {
    (void)state;
    int perm[N_DEEPEST];
    for (int i = 0; i < N_DEEPEST; i++)
        perm[i] = i;
    expect_t *x = exp_new();
    int orders = 0;
    do {
        for (int inplace = 0; inplace <= 1; inplace++) {
            ctx__hamt_t m = CTX__HAMT_EMPTY;
            x->n = 0;
            for (int i = 0; i < N_DEEPEST; i++) {
                titem_t *t = item_new(DEEPEST[perm[i]].id, DEEPEST[perm[i]].hash, 0, NULL);
                if (inplace)
                    put_inplace(&m, t);
                else
                    put(&m, t);
                exp_set(x, t);
                item_drop(t);
                char where[96];
                snprintf(where, sizeof where, "order %d%d%d%d%d%d, %s, after %d inserts",
                         perm[0], perm[1], perm[2], perm[3], perm[4], perm[5],
                         inplace ? "in place" : "persistent", i + 1);
                VERIFY_AT(&m, x, where);
            }
            assert_int_equal(ctx__hamt_depth(&m), CTX__HAMT_MAX_DEPTH);
            ctx__hamt_release(m, &OPS);
        }
        orders++;
    } while (next_permutation(perm, N_DEEPEST));
    assert_int_equal(orders, 720);
    free(x);
    assert_clean();
}

static void test_deepest_tree_deletes_in_every_order(void **state) {
    (void)state;
    ctx__hamt_t full = CTX__HAMT_EMPTY;
    expect_t *xfull = exp_new();
    for (int i = 0; i < N_DEEPEST; i++)
        add(&full, xfull, DEEPEST[i].id, DEEPEST[i].hash);
    VERIFY(&full, xfull);

    int perm[N_DEEPEST];
    for (int i = 0; i < N_DEEPEST; i++)
        perm[i] = i;
    expect_t *x = exp_new();
    do {
        /* 0: persistent from the shared full map; 1: in place on a retained
         * copy of it (every node shared at first); 2: in place on a map of
         * its own. */
        for (int variant = 0; variant < 3; variant++) {
            ctx__hamt_t m;
            if (variant < 2) {
                m = ctx__hamt_retain(full);
                exp_copy(x, xfull);
            } else {
                m = CTX__HAMT_EMPTY;
                x->n = 0;
                for (int i = 0; i < N_DEEPEST; i++)
                    add(&m, x, DEEPEST[i].id, DEEPEST[i].hash);
            }
            for (int i = 0; i < N_DEEPEST; i++) {
                int id = DEEPEST[perm[i]].id;
                uint32_t hash = DEEPEST[perm[i]].hash;
                if (variant == 0)
                    remove_key(&m, x, id, hash);
                else {
                    del_inplace(&m, id, hash);
                    exp_del(x, id);
                }
                char where[96];
                snprintf(where, sizeof where, "order %d%d%d%d%d%d, variant %d, after %d deletes",
                         perm[0], perm[1], perm[2], perm[3], perm[4], perm[5], variant, i + 1);
                VERIFY_AT(&m, x, where);
                if (variant < 2)
                    VERIFY_AT(&full, xfull, where);
            }
            ctx__hamt_release(m, &OPS);
        }
    } while (next_permutation(perm, N_DEEPEST));
    ctx__hamt_release(full, &OPS);
    free(x);
    free(xfull);
    assert_clean();
}

/* ======================================================================== */
/* The scenario engine: one operation on one shape, checked in full          */
/* ======================================================================== */

typedef enum {
    OP_FIND,
    OP_ASSOC,
    OP_WITHOUT,
    OP_ASSOC_INPLACE,
    OP_WITHOUT_INPLACE,
    OP_IS_PRIVATE,
    OP_SWAP_INPLACE,
} op_t;
static const char *const OP_NAME[] = {"find",          "assoc",           "without",
                                      "assoc_inplace", "without_inplace", "is_private",
                                      "swap_inplace"};
static int op_mutates(op_t op) { return op != OP_FIND && op != OP_IS_PRIVATE; }
static int op_inplace(op_t op) {
    return op == OP_ASSOC_INPLACE || op == OP_WITHOUT_INPLACE || op == OP_SWAP_INPLACE;
}
static int op_assoc(op_t op) {
    return op == OP_ASSOC || op == OP_ASSOC_INPLACE || op == OP_SWAP_INPLACE;
}

typedef enum { SH_NONE, SH_ROOT, SH_SUBTREE } share_t;
static const char *const SHARE_NAME[] = {
    "sole owner", "root shared with a retained copy",
    "subtrees shared with another version (the map without its first key)"};

typedef struct keydef {
    int id;
    uint32_t hash;
} keydef_t;

typedef struct shape {
    const char *name;
    const keydef_t *keys;
    int n;
} shape_t;

typedef struct scenario {
    const shape_t *shape;
    op_t op;
    keydef_t target;
    share_t share;
    int fail_eq_id;      /* eq fails for this key id; -1: never */
    long fail_alloc_nth; /* this allocation of the call fails; 0: none */
} scenario_t;

typedef struct outcome {
    int rc;
    int fired;   /* the armed allocation failure happened */
    int eq_rule; /* 0: eq cannot fail, 1: may, 2: must */
} outcome_t;

enum { TRACK_MAX = 1200 };
typedef struct tracker {
    int n;
    int freed[TRACK_MAX];
} tracker_t;

static titem_t *track_item(tracker_t *tr, int id, uint32_t hash) {
    assert_true(tr->n < TRACK_MAX);
    titem_t *t = item_new(id, hash, tr->n, &tr->freed[tr->n]);
    t->idx = tr->n++;
    return t;
}

#define REQUIRE(cond)                                                          \
    do {                                                                       \
        if (!(cond))                                                           \
            fail_msg("%s:%d: [%s] requirement failed: %s", __FILE__, __LINE__, \
                     where, #cond);                                            \
    } while (0)
#define REQUIRE_RC(got, want)                                                  \
    do {                                                                       \
        int g_ = (got), w_ = (want);                                           \
        if (g_ != w_)                                                          \
            fail_msg("%s:%d: [%s] %s is %d (%s), expected %d (%s)", __FILE__,  \
                     __LINE__, where, #got, g_, ctx_error_name(g_), w_,        \
                     ctx_error_name(w_));                                      \
    } while (0)

/* Every tracked item is freed exactly when no live version holds it and no
 * creator reference is held. */
static void check_lifetimes(const tracker_t *tr, const expect_t *const *alive, int nalive,
                            int held_idx, int held_idx2, const char *where) {
    unsigned char *live = calloc((size_t)tr->n + 1, 1);
    assert_non_null(live);
    for (int v = 0; v < nalive; v++)
        for (int i = 0; i < alive[v]->n; i++)
            live[alive[v]->e[i].idx] = 1;
    if (held_idx >= 0)
        live[held_idx] = 1;
    if (held_idx2 >= 0)
        live[held_idx2] = 1;
    for (int i = 0; i < tr->n; i++)
        if (tr->freed[i] != (live[i] ? 0 : 1))
            fail_msg("[%s] item #%d was freed %d times, expected %d (%s)", where, i,
                     tr->freed[i], live[i] ? 0 : 1,
                     live[i] ? "a live version still holds it" : "nothing holds it");
    free(live);
}

static int eq_rule(const expect_t *x, keydef_t target, int fail_id) {
    if (fail_id < 0)
        return 0;
    int same = 0, fail_same = 0;
    for (int i = 0; i < x->n; i++)
        if (x->e[i].hash == target.hash) {
            same = 1;
            if (x->e[i].id == fail_id)
                fail_same = 1;
        }
    if (!same)
        return 0;         /* eq never runs */
    if (target.id == fail_id)
        return 2;         /* the first comparison fails */
    return fail_same;     /* fails if the failing key is compared */
}

static outcome_t run_scenario(const scenario_t *sc) {
    char where[320];
    snprintf(where, sizeof where,
             "shape %s, %s of key %d (hash 0x%08x), %s, eq fails for key %d, "
             "allocation %ld fails",
             sc->shape->name, OP_NAME[sc->op], sc->target.id, (unsigned)sc->target.hash,
             SHARE_NAME[sc->share], sc->fail_eq_id, sc->fail_alloc_nth);
    tracker_t *tr = calloc(1, sizeof *tr);
    expect_t *xm = exp_new(), *xo = exp_new(), *xr = exp_new();
    assert_non_null(tr);
    long base_blocks = ctx_test_alloc_live_blocks();

    /* Build the shape; every node is then referenced by `m` alone. */
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    for (int i = 0; i < sc->shape->n; i++) {
        titem_t *t = track_item(tr, sc->shape->keys[i].id, sc->shape->keys[i].hash);
        put(&m, t);
        exp_set(xm, t);
        item_drop(t);
    }
    VERIFY_AT(&m, xm, where);

    ctx__hamt_t other = CTX__HAMT_EMPTY;
    int have_other = sc->share != SH_NONE;
    keydef_t first = sc->shape->keys[0];
    if (sc->share == SH_ROOT) {
        other = ctx__hamt_retain(m);
        REQUIRE(other.root == m.root && other.count == m.count);
        exp_copy(xo, xm);
    } else if (sc->share == SH_SUBTREE) {
        tkey_t k0 = {first.id, first.hash};
        REQUIRE_RC(ctx__hamt_without(&m, first.hash, &k0, &OPS, &other), 0);
        exp_copy(xo, xm);
        exp_del(xo, first.id);
    }

    titem_t *item = NULL;
    int item_idx = -1;
    if (op_assoc(sc->op)) {
        item = track_item(tr, sc->target.id, sc->target.hash);
        item_idx = item->idx;
    }

    /* Snapshot. */
    unsigned *refs0 = calloc((size_t)xm->n + 1, sizeof *refs0);
    assert_non_null(refs0);
    for (int i = 0; i < xm->n; i++)
        refs0[i] = refs_of(xm->e[i].item);
    ctx__hamt_t before = m;
    int pos = exp_find(xm, sc->target.id);
    int present = pos >= 0;
    outcome_t oc = {0, 0, eq_rule(xm, sc->target, sc->fail_eq_id)};
    int expect_private = sc->share == SH_NONE ||
                         (sc->share == SH_SUBTREE && sc->target.id == first.id);
    tkey_t key = {sc->target.id, sc->target.hash};
    ctx__hamt_t out = SENTINEL_MAP;
    ctx__hamt_item_t *found = (ctx__hamt_item_t *)SENTINEL_ITEM;
    ctx__hamt_item_t *replaced = (ctx__hamt_item_t *)SENTINEL_ITEM;
    long blocks0 = ctx_test_alloc_live_blocks();

    /* The call. */
    g.fail_id = sc->fail_eq_id;
    g.fail_code = EQ_HOOK_CODE;
    if (sc->fail_alloc_nth)
        ctx_test_alloc_fail_nth(sc->fail_alloc_nth);
    switch (sc->op) {
    case OP_FIND:
        oc.rc = ctx__hamt_find(&m, key.hash, &key, &OPS, &found);
        break;
    case OP_ASSOC:
        oc.rc = ctx__hamt_assoc(&m, &item->hdr, &OPS, &out);
        break;
    case OP_WITHOUT:
        oc.rc = ctx__hamt_without(&m, key.hash, &key, &OPS, &out);
        break;
    case OP_ASSOC_INPLACE:
        oc.rc = ctx__hamt_assoc_inplace(&m, &item->hdr, &OPS);
        break;
    case OP_WITHOUT_INPLACE:
        oc.rc = ctx__hamt_without_inplace(&m, key.hash, &key, &OPS);
        break;
    case OP_IS_PRIVATE:
        oc.rc = ctx__hamt_is_private(&m, key.hash, &key, &OPS);
        break;
    case OP_SWAP_INPLACE:
        oc.rc = swap_inplace(&m, &item->hdr, &OPS, &replaced);
        break;
    }
    oc.fired = sc->fail_alloc_nth ? ctx_test_alloc_fired() : 0;
    ctx_test_alloc_fail_nth(0);
    g.fail_id = -1;

    /* Classify the result. */
    int changed = 0;
    if (sc->fail_eq_id >= 0 && oc.rc == EQ_FAIL_CODE) {
        if (oc.eq_rule == 0)
            fail_msg("[%s] returned eq's error, but eq could not fail here", where);
    } else if (oc.rc == CTX_ENOMEM) {
        if (!op_mutates(sc->op) || !sc->fail_alloc_nth || !oc.fired)
            fail_msg("[%s] returned CTX_ENOMEM without a failed allocation", where);
    } else {
        if (oc.eq_rule == 2)
            fail_msg("[%s] returned %d (%s): the failing eq's code was lost", where, oc.rc,
                     ctx_error_name(oc.rc));
        switch (sc->op) {
        case OP_FIND:
            if (present) {
                REQUIRE_RC(oc.rc, 1);
                REQUIRE(found == &xm->e[pos].item->hdr);
            } else {
                REQUIRE_RC(oc.rc, 0);
            }
            break;
        case OP_IS_PRIVATE:
            REQUIRE_RC(oc.rc, present ? expect_private : CTX_ENOTFOUND);
            break;
        case OP_ASSOC:
        case OP_ASSOC_INPLACE:
        case OP_SWAP_INPLACE:
            REQUIRE_RC(oc.rc, 0);
            exp_copy(xr, xm);
            exp_set(xr, item);
            changed = 1;
            if (sc->op == OP_SWAP_INPLACE) {
                if (present)
                    REQUIRE(replaced == &xm->e[pos].item->hdr);
                else
                    REQUIRE(replaced == NULL);
            }
            break;
        case OP_WITHOUT:
        case OP_WITHOUT_INPLACE:
            if (present) {
                REQUIRE_RC(oc.rc, 0);
                exp_copy(xr, xm);
                exp_del(xr, sc->target.id);
                changed = 1;
            } else {
                REQUIRE_RC(oc.rc, CTX_ENOTFOUND);
            }
            break;
        }
    }

    /* Check every version. */
    const expect_t *alive[3];
    int nalive = 0;
    if (!changed) {
        /* Failed, not found, or a lookup: nothing may have changed. */
        REQUIRE(m.root == before.root && m.count == before.count);
        REQUIRE(is_sentinel(out));
        VERIFY_AT(&m, xm, where);
        for (int i = 0; i < xm->n; i++)
            if (refs_of(xm->e[i].item) != refs0[i])
                fail_msg("[%s] the reference count of key %d's item went from %u to %u",
                         where, xm->e[i].id, refs0[i], refs_of(xm->e[i].item));
        if (item)
            REQUIRE(refs_of(item) == 1);
        /* swap_inplace may clear *replaced on error, nothing else */
        REQUIRE(replaced == SENTINEL_ITEM || replaced == NULL);
        if (ctx_test_alloc_live_blocks() != blocks0)
            fail_msg("[%s] %ld blocks leaked by a call that changed nothing", where,
                     ctx_test_alloc_live_blocks() - blocks0);
        alive[nalive++] = xm;
    } else if (!op_inplace(sc->op)) {
        REQUIRE(m.root == before.root && m.count == before.count);
        VERIFY_AT(&m, xm, where);
        VERIFY_AT(&out, xr, where);
        alive[nalive++] = xm;
        alive[nalive++] = xr;
    } else {
        VERIFY_AT(&m, xr, where);
        alive[nalive++] = xr;
    }
    if (changed && item)
        REQUIRE(refs_of(item) == 2); /* the creator's and one node's */
    if (have_other) {
        VERIFY_AT(&other, xo, where); /* never affected by what happened to m */
        alive[nalive++] = xo;
    }
    /* The replaced item handed back by swap_inplace is the caller's until
     * released. */
    int replaced_idx = -1;
    if (sc->op == OP_SWAP_INPLACE && changed && present)
        replaced_idx = xm->e[pos].idx;
    check_lifetimes(tr, alive, nalive, item_idx, replaced_idx, where);
    if (item) {
        item_drop(item);
        check_lifetimes(tr, alive, nalive, -1, replaced_idx, where);
    }
    if (replaced_idx >= 0) {
        ctx__hamt_item_release(replaced, &OPS);
        check_lifetimes(tr, alive, nalive, -1, -1, where);
    }

    /* Release everything: every item freed once, every block back. */
    if (changed && !op_inplace(sc->op))
        ctx__hamt_release(out, &OPS);
    if (have_other)
        ctx__hamt_release(other, &OPS);
    ctx__hamt_release(m, &OPS);
    check_lifetimes(tr, NULL, 0, -1, -1, where);
    if (ctx_test_alloc_live_blocks() != base_blocks)
        fail_msg("[%s] %ld blocks leaked", where, ctx_test_alloc_live_blocks() - base_blocks);
    free(refs0);
    free(tr);
    free(xm);
    free(xo);
    free(xr);
    return oc;
}

/* ---- shapes ---- */

static const keydef_t KEYS_SMALL[] = {{0, 0x11}, {1, 0x31}, {2, 0x03}};
static const shape_t SHAPE_SMALL = {"small", KEYS_SMALL, 3};

static const keydef_t KEYS_COLL[] = {
    {0, COLL_HASH}, {1, COLL_HASH}, {2, COLL_HASH}, {3, COLL_HASH}, {4, COLL_HASH ^ (1u << 25)}};
static const shape_t SHAPE_COLL = {"collisions", KEYS_COLL, 5};

static const keydef_t KEYS_PAIR[] = {{0, COLL_HASH}, {1, COLL_HASH}};
static const shape_t SHAPE_PAIR = {"collision pair", KEYS_PAIR, 2};

static const keydef_t KEYS_DEEP[] = {{3, DEEP(1)}, {0, DEEP(0)}, {1, DEEP(0)},
                                     {2, DEEP(0)}, {4, DEEP(2)}, {5, DEEP(1)}};
static const shape_t SHAPE_DEEP = {"deep chain", KEYS_DEEP, 6};

static const keydef_t KEYS_CHAIN[] = {{0, DEEP(0)}, {1, DEEP(1)}};
static const shape_t SHAPE_CHAIN = {"bare chain", KEYS_CHAIN, 2};

enum { BIG_N = 1000 };
static keydef_t KEYS_BIG[BIG_N];
static const shape_t SHAPE_BIG = {"1000 items", KEYS_BIG, BIG_N};

static void init_big_shape(void) {
    for (int i = 0; i < BIG_N; i++)
        KEYS_BIG[i] = (keydef_t){i, mix32((uint32_t)i)};
}

/* ======================================================================== */
/* 5. Failing key equality                                                  */
/* ======================================================================== */

/* Every operation `op`, on every shape with equal hashes, for every probe
 * (each present key, and an absent key with each present hash), with eq
 * failing for the probe and for each stored key, in every sharing mode.
 * run_scenario checks that a failure returns eq's code and changes nothing,
 * and that a success is right. */
static void eq_failure_matrix(op_t op) {
    const shape_t *shapes[] = {&SHAPE_SMALL, &SHAPE_COLL, &SHAPE_PAIR, &SHAPE_DEEP};
    long failures = 0, must = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape_t *sh = shapes[s];
        for (int p = 0; p < 2 * sh->n; p++) {
            keydef_t target = sh->keys[p % sh->n];
            if (p >= sh->n)
                target.id = 50 + p; /* absent, same hash as a stored key */
            for (int f = -1; f < sh->n; f++) {
                int fail_id = f < 0 ? target.id : sh->keys[f].id;
                for (int share = SH_NONE; share <= SH_SUBTREE; share++) {
                    scenario_t sc = {sh, op, target, (share_t)share, fail_id, 0};
                    outcome_t oc = run_scenario(&sc);
                    failures += oc.rc == EQ_FAIL_CODE;
                    must += oc.eq_rule == 2;
                }
            }
        }
    }
    assert_true(must > 0);
    assert_true(failures >= must);
    assert_clean();
}

static void test_eq_failure_in_find_is_reported(void **state) {
    (void)state;
    eq_failure_matrix(OP_FIND);
}

static void test_eq_failure_in_assoc_changes_nothing(void **state) {
    (void)state;
    eq_failure_matrix(OP_ASSOC);
}

static void test_eq_failure_in_without_changes_nothing(void **state) {
    (void)state;
    eq_failure_matrix(OP_WITHOUT);
}

static void test_eq_failure_in_assoc_inplace_changes_nothing(void **state) {
    (void)state;
    eq_failure_matrix(OP_ASSOC_INPLACE);
}

static void test_eq_failure_in_without_inplace_changes_nothing(void **state) {
    (void)state;
    eq_failure_matrix(OP_WITHOUT_INPLACE);
}

static void test_eq_failure_in_is_private_is_reported(void **state) {
    (void)state;
    eq_failure_matrix(OP_IS_PRIVATE);
}

static void test_eq_failure_in_swap_inplace_changes_nothing(void **state) {
    (void)state;
    eq_failure_matrix(OP_SWAP_INPLACE);
}

/* Whatever negative code the hook returns (here -1, the value of
 * CTX_ENOTFOUND, and CTX_ENOMEM), the operations report CTX_EKEY, so a
 * failing eq is never mistaken for "absent" or "out of memory". */
static void test_eq_hook_code_becomes_ekey(void **state) {
    (void)state;
    int codes[] = {-1, CTX_ENOMEM, -1234};
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    add(&m, x, 1, 0x42);
    add(&m, x, 2, 0x42);
    add(&m, x, 3, 0x43);
    titem_t *t = item_new(9, 0x42, 0, NULL);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        g.fail_id = 9;
        g.fail_code = codes[i];
        tkey_t k = {9, 0x42};
        ctx__hamt_t out = SENTINEL_MAP;
        ctx__hamt_item_t *got = NULL;
        ASSERT_RC(ctx__hamt_find(&m, 0x42, &k, &OPS, &got), CTX_EKEY);
        ASSERT_RC(ctx__hamt_without(&m, 0x42, &k, &OPS, &out), CTX_EKEY);
        ASSERT_RC(ctx__hamt_without_inplace(&m, 0x42, &k, &OPS), CTX_EKEY);
        ASSERT_RC(ctx__hamt_is_private(&m, 0x42, &k, &OPS), CTX_EKEY);
        ASSERT_RC(ctx__hamt_assoc(&m, &t->hdr, &OPS, &out), CTX_EKEY);
        ASSERT_RC(ctx__hamt_assoc_inplace(&m, &t->hdr, &OPS), CTX_EKEY);
        ASSERT_RC(swap_inplace(&m, &t->hdr, &OPS, &got), CTX_EKEY);
        assert_true(is_sentinel(out));
        g.fail_id = -1;
        VERIFY(&m, x);
    }
    g.fail_code = EQ_HOOK_CODE;
    item_drop(t);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

/* A failure deep in a collision node, after the path above it has been
 * walked (and, in place, possibly already made private). */
static void test_eq_failure_late_in_a_shared_collision_node(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    for (int i = 0; i < 6; i++)
        add(&m, x, i, DEEP(0));
    add(&m, x, 10, DEEP(1));
    titem_t *t = item_new(20, DEEP(0), 0, NULL);
    for (int shared = 0; shared <= 1; shared++)
    for (int fail = 0; fail < 6; fail++) {
        ctx__hamt_t copy = shared ? ctx__hamt_retain(m) : m;
        long blocks = ctx_test_alloc_live_blocks();
        g.fail_id = fail;
        ctx__hamt_t before = m;
        int rc = ctx__hamt_assoc_inplace(&m, &t->hdr, &OPS);
        ASSERT_RC(rc, EQ_FAIL_CODE); /* the new key meets every stored one */
        tkey_t k = {30, DEEP(0)};
        ASSERT_RC(ctx__hamt_without_inplace(&m, k.hash, &k, &OPS), EQ_FAIL_CODE);
        g.fail_id = -1;
        assert_ptr_equal(m.root, before.root);
        assert_int_equal(refs_of(t), 1);
        assert_int_equal(ctx_test_alloc_live_blocks(), blocks);
        VERIFY(&m, x);
        VERIFY(&copy, x);
        if (shared)
            ctx__hamt_release(copy, &OPS);
    }
    item_drop(t);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

/* ======================================================================== */
/* 6. In-place operations and is_private                                    */
/* ======================================================================== */

static void test_inplace_ops_on_sole_owner_build_the_right_map(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    for (int i = 0; i < 300; i++) {
        titem_t *t = item_new(i, mix32((uint32_t)i) & 0x7FFFu, i, NULL); /* some collide */
        put_inplace(&m, t);
        exp_set(x, t);
        item_drop(t);
        if (i % 50 == 49)
            VERIFY(&m, x);
    }
    for (int i = 0; i < 300; i += 3) {
        titem_t *t = item_new(i, mix32((uint32_t)i) & 0x7FFFu, -i, NULL);
        put_inplace(&m, t);
        exp_set(x, t);
        item_drop(t);
    }
    VERIFY(&m, x);
    for (int i = 0; i < 300; i += 2) {
        del_inplace(&m, i, mix32((uint32_t)i) & 0x7FFFu);
        exp_del(x, i);
        if (i % 50 == 0)
            VERIFY(&m, x);
    }
    VERIFY(&m, x);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

static void test_inplace_replace_in_private_node_reuses_it(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    for (int i = 0; i < 100; i++)
        add(&m, x, i, mix32((uint32_t)i));
    int freed = 0;
    for (int i = 0; i < 100; i += 7) {
        titem_t *t = item_new(i, mix32((uint32_t)i), 1, &freed);
        titem_t *old;
        ASSERT_RC(find_key(&m, i, mix32((uint32_t)i), &old), 1);
        int old_freed_before = (int)g.frees;
        ctx__hamt_node_t *root = m.root;
        long attempts = ctx_test_alloc_attempts();
        put_inplace(&m, t);
        /* A private path is changed where it is: no allocation, same root,
         * and the replaced item (held by this map alone) is freed now. */
        assert_int_equal(ctx_test_alloc_attempts(), attempts);
        assert_ptr_equal(m.root, root);
        assert_int_equal(g.frees, old_freed_before + 1);
        exp_set(x, t);
        item_drop(t);
    }
    VERIFY(&m, x);
    ctx__hamt_release(m, &OPS);
    free(x);
    assert_clean();
}

static void build_mixed(ctx__hamt_t *m, expect_t *x) {
    for (int i = 0; i < 48; i++)
        add(m, x, i, mix32((uint32_t)i));
    for (int i = 0; i < 4; i++)
        add(m, x, 100 + i, COLL_HASH);
    for (int i = 0; i < 3; i++)
        add(m, x, 200 + i, DEEP(0));
    add(m, x, 210, DEEP(1));
    add(m, x, 211, DEEP(2));
}

static void test_inplace_ops_never_show_through_a_retained_copy(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new(), *xc = exp_new();
    build_mixed(&m, x);
    ctx__hamt_t copy = ctx__hamt_retain(m);
    exp_copy(xc, x);
    /* Replace, remove and add in place, each at every kind of position:
     * the copy must keep its contents after each. */
    int ids[] = {0, 17, 100, 102, 200, 201, 210, 211, 47};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int p = exp_find(x, ids[i]);
        assert_true(p >= 0);
        uint32_t h = x->e[p].hash;
        titem_t *t = item_new(ids[i], h, 999, NULL);
        put_inplace(&m, t);
        exp_set(x, t);
        item_drop(t);
        VERIFY(&m, x);
        VERIFY(&copy, xc);
        del_inplace(&m, ids[i], h);
        exp_del(x, ids[i]);
        VERIFY(&m, x);
        VERIFY(&copy, xc);
        add(&m, x, 300 + (int)i, h); /* a new key on the same path */
        VERIFY(&copy, xc);
    }
    VERIFY(&m, x);
    /* And the other way: change the copy in place, the map stays. */
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int p = exp_find(xc, ids[i]);
        del_inplace(&copy, ids[i], xc->e[p].hash);
        exp_del(xc, ids[i]);
        VERIFY(&copy, xc);
        VERIFY(&m, x);
    }
    ctx__hamt_release(copy, &OPS);
    VERIFY(&m, x);
    ctx__hamt_release(m, &OPS);
    free(x);
    free(xc);
    assert_clean();
}

static void test_inplace_ops_never_show_through_shared_subtrees(void **state) {
    (void)state;
    ctx__hamt_t v1 = CTX__HAMT_EMPTY;
    expect_t *x1 = exp_new(), *x2 = exp_new();
    build_mixed(&v1, x1);
    /* v2 = v1 + one key: a new root, every subtree but one path shared. */
    ctx__hamt_t v2;
    titem_t *t = item_new(500, 0x12345678u, 0, NULL);
    ASSERT_RC(ctx__hamt_assoc(&v1, &t->hdr, &OPS, &v2), 0);
    item_drop(t);
    exp_copy(x2, x1);
    exp_set(x2, t);
    /* Change every key of v1 in place, then remove every key: v2 intact. */
    for (int i = 0; i < x2->n; i++) {
        if (x2->e[i].id == 500)
            continue;
        titem_t *r = item_new(x2->e[i].id, x2->e[i].hash, 7, NULL);
        put_inplace(&v1, r);
        exp_set(x1, r);
        item_drop(r);
        VERIFY(&v2, x2);
    }
    VERIFY(&v1, x1);
    while (x1->n > 0) {
        int id = x1->e[0].id;
        del_inplace(&v1, id, x1->e[0].hash);
        exp_del(x1, id);
        VERIFY(&v1, x1);
        VERIFY(&v2, x2);
    }
    /* And v2 in place while v1 (now empty) stays empty. */
    for (int i = 0; i < 10; i++) {
        int id = x2->e[0].id;
        del_inplace(&v2, id, x2->e[0].hash);
        exp_del(x2, id);
        VERIFY(&v2, x2);
        VERIFY(&v1, x1);
    }
    ctx__hamt_release(v1, &OPS);
    ctx__hamt_release(v2, &OPS);
    free(x1);
    free(x2);
    assert_clean();
}

static void test_is_private_follows_sharing(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    titem_t *a = item_new(1, DEEP(0), 0, NULL);
    titem_t *b = item_new(2, DEEP(1), 0, NULL);
    titem_t *c = item_new(3, 0x5u, 0, NULL);
    put_inplace(&m, a);
    put_inplace(&m, b);
    put_inplace(&m, c);
    /* The creator still holds each item: not private. */
    ASSERT_RC(ctx__hamt_is_private(&m, a->hdr.hash, &a->key, &OPS), 0);
    item_drop(a);
    item_drop(b);
    item_drop(c);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 1);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(1), &b->key, &OPS), 1);
    ASSERT_RC(ctx__hamt_is_private(&m, 0x5u, &c->key, &OPS), 1);
    tkey_t absent = {9, DEEP(0)};
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &absent, &OPS), CTX_ENOTFOUND);

    /* Retained elsewhere. */
    ctx__hamt_item_retain(&a->hdr);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 0);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(1), &b->key, &OPS), 1);
    item_drop(a);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 1);

    /* A retained copy of the map shares the root: nothing is private. */
    ctx__hamt_t copy = ctx__hamt_retain(m);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 0);
    ASSERT_RC(ctx__hamt_is_private(&m, 0x5u, &c->key, &OPS), 0);
    ASSERT_RC(ctx__hamt_is_private(&copy, DEEP(1), &b->key, &OPS), 0);
    /* A new key set in place into the map is the map's alone; the others
     * are still shared with the copy. */
    titem_t *d = item_new(4, 0x6u, 0, NULL);
    put_inplace(&m, d);
    item_drop(d);
    ASSERT_RC(ctx__hamt_is_private(&m, 0x6u, &d->key, &OPS), 1);
    ASSERT_RC(ctx__hamt_is_private(&m, 0x5u, &c->key, &OPS), 0);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 0);
    ctx__hamt_release(copy, &OPS);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 1);
    ASSERT_RC(ctx__hamt_is_private(&m, 0x5u, &c->key, &OPS), 1);

    /* A version sharing the deep subtree: the deep items are not private,
     * the root item is (when it is in a node the other version copied, the
     * copy holds it too, so it is not). */
    ctx__hamt_t v2;
    tkey_t kc = {3, 0x5u};
    ASSERT_RC(ctx__hamt_without(&m, 0x5u, &kc, &OPS, &v2), 0);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 0);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(1), &b->key, &OPS), 0);
    ASSERT_RC(ctx__hamt_is_private(&m, 0x5u, &c->key, &OPS), 1); /* only m has c */
    ctx__hamt_release(v2, &OPS);
    ASSERT_RC(ctx__hamt_is_private(&m, DEEP(0), &a->key, &OPS), 1);
    ctx__hamt_release(m, &OPS);
    assert_clean();
}

/* hamt.h: "root: NULL for the empty map"; ctx__hamt_depth: "0 for an empty
 * map".  An in-place removal of the last item must give that map. */
static void test_empty_map_after_inplace_removal_has_depth_0(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    titem_t *t = item_new(1, 0xABCu, 0, NULL);
    put_inplace(&m, t);
    item_drop(t);
    del_inplace(&m, 1, 0xABCu);
    assert_int_equal(m.count, 0);
    int depth = ctx__hamt_depth(&m);
    int has_root = m.root != NULL;
    ctx__hamt_release(m, &OPS);
    assert_clean();
    if (depth != 0 || has_root)
        fail_msg("after removing the last item in place: depth %d (expected 0), root %s "
                 "(hamt.h: NULL for the empty map)",
                 depth, has_root ? "not NULL" : "NULL");
}

static void test_swap_inplace_hands_back_the_replaced_item(void **state) {
    (void)state;
    int fa = 0, fb = 0, fc = 0;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    titem_t *a = item_new(1, DEEP(0), 0, &fa);
    ctx__hamt_item_t *replaced = (ctx__hamt_item_t *)SENTINEL_ITEM;
    ASSERT_RC(swap_inplace(&m, &a->hdr, &OPS, &replaced), 0);
    assert_null(replaced); /* a new key */
    item_drop(a);
    titem_t *b = item_new(1, DEEP(0), 1, &fb);
    ASSERT_RC(swap_inplace(&m, &b->hdr, &OPS, &replaced), 0);
    assert_ptr_equal(replaced, &a->hdr);
    assert_int_equal(fa, 0);           /* the map's reference is now ours */
    assert_int_equal(refs_of(a), 1);
    item_drop(b);
    ctx__hamt_item_release(replaced, &OPS);
    assert_int_equal(fa, 1);

    /* On a shared map the copy keeps the old item: releasing the handed
     * back reference does not free it. */
    expect_t *x = exp_new();
    add(&m, x, 2, DEEP(1));
    free(x);
    ctx__hamt_t copy = ctx__hamt_retain(m);
    titem_t *c = item_new(1, DEEP(0), 2, &fc);
    ASSERT_RC(swap_inplace(&m, &c->hdr, &OPS, &replaced), 0);
    assert_ptr_equal(replaced, &b->hdr);
    item_drop(c);
    ctx__hamt_item_release(replaced, &OPS);
    assert_int_equal(fb, 0);
    titem_t *got;
    ASSERT_RC(find_key(&copy, 1, DEEP(0), &got), 1);
    assert_ptr_equal(got, b);
    ASSERT_RC(find_key(&m, 1, DEEP(0), &got), 1);
    assert_ptr_equal(got, c);
    ctx__hamt_release(copy, &OPS);
    assert_int_equal(fb, 1);
    ctx__hamt_release(m, &OPS);
    assert_int_equal(fc, 1);
    assert_clean();
}

/* put_inplace takes over the caller's reference and take_inplace hands the
 * removed item back: neither ever drops the last reference to an item (a
 * context releases what they hand back after unlocking). */
static void test_put_and_take_inplace_free_no_item(void **state) {
    (void)state;
    int fa = 0, fb = 0, fc = 0, fd = 0;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    ctx__hamt_item_t *out = (ctx__hamt_item_t *)SENTINEL_ITEM;

    /* Into the empty map (the persistent path): the caller's reference is
     * the map's now. */
    titem_t *a = item_new(1, 0x21u, 0, &fa);
    ASSERT_RC(ctx__hamt_put_inplace(&m, &a->hdr, &OPS, &out), 0);
    assert_null(out);
    assert_int_equal(refs_of(a), 1);
    /* In place, same key: the old item comes back with the map's reference. */
    titem_t *b = item_new(1, 0x21u, 1, &fb);
    ASSERT_RC(ctx__hamt_put_inplace(&m, &b->hdr, &OPS, &out), 0);
    assert_ptr_equal(out, &a->hdr);
    assert_int_equal(fa, 0);
    assert_int_equal(refs_of(a), 1);
    assert_int_equal(refs_of(b), 1);
    ctx__hamt_item_release(out, &OPS);
    assert_int_equal(fa, 1);
    /* Two keys meeting in one slot (a new subtree) and a hash collision. */
    titem_t *c = item_new(2, 0x21u ^ (1u << 7), 2, &fc);
    ASSERT_RC(ctx__hamt_put_inplace(&m, &c->hdr, &OPS, &out), 0);
    assert_null(out);
    assert_int_equal(refs_of(c), 1);
    titem_t *d = item_new(3, 0x21u, 3, &fd);
    ASSERT_RC(ctx__hamt_put_inplace(&m, &d->hdr, &OPS, &out), 0);
    assert_null(out);
    assert_int_equal(refs_of(d), 1);
    assert_int_equal(m.count, 3);
    ASSERT_RC(ctx__hamt_check(&m), 0);

    /* A failed put leaves the map and the caller's reference alone (e meets
     * the collision node of b and d below the root: a new subtree). */
    int fe = 0;
    titem_t *e = item_new(4, 0x21u ^ (1u << 12), 4, &fe);
    ctx__hamt_t before = m;
    ctx_test_alloc_fail_nth(1);
    out = (ctx__hamt_item_t *)SENTINEL_ITEM;
    ASSERT_RC(ctx__hamt_put_inplace(&m, &e->hdr, &OPS, &out), CTX_ENOMEM);
    ctx_test_alloc_fail_nth(0);
    assert_true(m.root == before.root && m.count == 3);
    assert_int_equal(refs_of(e), 1);
    item_drop(e);
    assert_int_equal(fe, 1);

    /* take, in place: the removed item is handed back, not freed. */
    tkey_t kb = {1, 0x21u};
    ASSERT_RC(ctx__hamt_take_inplace(&m, kb.hash, &kb, &OPS, &out), 0);
    assert_ptr_equal(out, &b->hdr);
    assert_int_equal(fb, 0);
    assert_int_equal(refs_of(b), 1);
    ctx__hamt_item_release(out, &OPS);
    assert_int_equal(fb, 1);
    ASSERT_RC(ctx__hamt_check(&m), 0);
    out = (ctx__hamt_item_t *)SENTINEL_ITEM;
    ASSERT_RC(ctx__hamt_take_inplace(&m, kb.hash, &kb, &OPS, &out), CTX_ENOTFOUND);
    assert_ptr_equal(out, SENTINEL_ITEM);

    /* On a shared map (the persistent path) the copy keeps its reference and
     * the caller gets one of its own. */
    ctx__hamt_t copy = ctx__hamt_retain(m);
    tkey_t kc = {2, 0x21u ^ (1u << 7)};
    ASSERT_RC(ctx__hamt_take_inplace(&m, kc.hash, &kc, &OPS, &out), 0);
    assert_ptr_equal(out, &c->hdr);
    assert_int_equal(refs_of(c), 2);
    ctx__hamt_item_release(out, &OPS);
    assert_int_equal(fc, 0);
    assert_int_equal(m.count, 1);
    assert_int_equal(copy.count, 2);
    ASSERT_RC(find_key(&copy, 2, kc.hash, NULL), 1);
    ctx__hamt_release(copy, &OPS);
    assert_int_equal(fc, 1);
    ctx__hamt_release(m, &OPS);
    assert_int_equal(fd, 1);
    assert_clean();
}

/* ctx__hamt_reserve: the first puts of a map being built allocate nothing
 * (the root has room), and a reserved root that never got an item is
 * released like any other.  Without it, an empty map's first put makes a
 * root with room for four. */
static void test_reserve_makes_room_for_the_first_puts(void **state) {
    (void)state;
    enum { N = 20 };
    int freed[N] = {0};
    titem_t *items[N];
    ctx__hamt_item_t *out;

    ctx__hamt_t unused = CTX__HAMT_EMPTY;
    ASSERT_RC(ctx__hamt_reserve(&unused, N), 0);
    assert_non_null(unused.root);
    assert_int_equal(unused.count, 0);
    ASSERT_RC(ctx__hamt_reserve(&unused, 0), 0); /* has a root: nothing */
    ctx__hamt_release(unused, &OPS);
    ctx__hamt_t none = CTX__HAMT_EMPTY;
    ASSERT_RC(ctx__hamt_reserve(&none, 0), 0);
    assert_null(none.root);
    ctx_test_alloc_fail_nth(1);
    ASSERT_RC(ctx__hamt_reserve(&none, N), CTX_ENOMEM);
    ctx_test_alloc_fail_nth(0);
    assert_null(none.root);

    ctx__hamt_t m = CTX__HAMT_EMPTY;
    ASSERT_RC(ctx__hamt_reserve(&m, N), 0);
    long attempts = ctx_test_alloc_attempts();
    for (int i = 0; i < N; i++) { /* one root position each */
        items[i] = item_new(i, (uint32_t)i, i, &freed[i]);
        ASSERT_RC(ctx__hamt_put_inplace(&m, &items[i]->hdr, &OPS, &out), 0);
        assert_null(out);
    }
    assert_int_equal(ctx_test_alloc_attempts(), attempts);
    assert_int_equal(m.count, N);
    ASSERT_RC(ctx__hamt_check(&m), 0);
    ctx__hamt_release(m, &OPS);
    for (int i = 0; i < N; i++)
        assert_int_equal(freed[i], 1);

    /* No reserve: one allocation for the first put, none for the next three. */
    ctx__hamt_t s = CTX__HAMT_EMPTY;
    attempts = ctx_test_alloc_attempts();
    for (int i = 0; i < 4; i++) {
        freed[i] = 0;
        items[i] = item_new(i, (uint32_t)i, i, &freed[i]);
        ASSERT_RC(ctx__hamt_put_inplace(&s, &items[i]->hdr, &OPS, &out), 0);
    }
    assert_int_equal(ctx_test_alloc_attempts(), attempts + 1);
    ASSERT_RC(ctx__hamt_check(&s), 0);
    ctx__hamt_release(s, &OPS);
    for (int i = 0; i < 4; i++)
        assert_int_equal(freed[i], 1);
    assert_clean();
}

static void test_without_inplace_of_last_item_gives_empty_map(void **state) {
    (void)state;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    expect_t *x = exp_new();
    titem_t *t = item_new(1, 0xABCu, 0, NULL);
    put_inplace(&m, t);
    item_drop(t);
    del_inplace(&m, 1, 0xABCu);
    VERIFY(&m, x);
    ASSERT_RC(find_key(&m, 1, 0xABCu, NULL), 0);
    /* still usable */
    add(&m, x, 2, 0xABCu);
    put_inplace(&m, item_new(3, 0xABCu, 0, NULL)); /* leak guard below */
    {
        titem_t *got;
        ASSERT_RC(find_key(&m, 3, 0xABCu, &got), 1);
        exp_set(x, got);
        item_drop(got); /* the creator's reference */
    }
    VERIFY(&m, x);
    ctx__hamt_t copy = ctx__hamt_retain(m);
    del_inplace(&m, 2, 0xABCu);
    del_inplace(&m, 3, 0xABCu);
    expect_t *empty = exp_new();
    VERIFY(&m, empty);
    VERIFY(&copy, x);
    ctx__hamt_release(copy, &OPS);
    ctx__hamt_release(m, &OPS);
    free(x);
    free(empty);
    assert_clean();
}

/* ======================================================================== */
/* 7. Allocation failure                                                    */
/* ======================================================================== */

/* Fails the n-th allocation of one call for n = 1, 2, ... until the call
 * succeeds without a failure; returns the number of CTX_ENOMEM results. */
static long enomem_sweep(const shape_t *sh, op_t op, keydef_t target, share_t share) {
    long enomem = 0;
    for (long n = 1;; n++) {
        scenario_t sc = {sh, op, target, share, -1, n};
        outcome_t oc = run_scenario(&sc);
        if (oc.rc == CTX_ENOMEM)
            enomem++;
        else if (!oc.fired)
            break;
        if (n > 64)
            fail_msg("shape %s, %s of key %d: still failing after 64 allocations", sh->name,
                     OP_NAME[op], target.id);
    }
    return enomem;
}

static void enomem_all_ops(const shape_t *sh, const keydef_t *extra, int nextra) {
    /* Targets: stored keys (replace, remove) and new ones (add, absent). */
    keydef_t targets[16];
    int nt = 0;
    int step = sh->n > 8 ? sh->n / 4 : 1;
    for (int i = 0; i < sh->n && nt < 8; i += step)
        targets[nt++] = sh->keys[i];
    if (sh->n > 8)
        targets[nt++] = sh->keys[sh->n - 1];
    for (int i = 0; i < nextra; i++)
        targets[nt++] = extra[i];
    op_t ops[] = {OP_ASSOC, OP_WITHOUT, OP_ASSOC_INPLACE, OP_WITHOUT_INPLACE,
                  OP_SWAP_INPLACE};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        for (int t = 0; t < nt; t++) {
            for (int share = SH_NONE; share <= SH_SUBTREE; share++) {
                long enomem = enomem_sweep(sh, ops[o], targets[t], (share_t)share);
                /* A persistent assoc always builds at least a new root; an
                 * in-place change of a shared map must copy. */
                if (ops[o] == OP_ASSOC ||
                    ((ops[o] == OP_ASSOC_INPLACE || ops[o] == OP_SWAP_INPLACE) &&
                     share == SH_ROOT))
                    if (enomem == 0)
                        fail_msg("shape %s, %s of key %d (%s): never failed", sh->name,
                                 OP_NAME[ops[o]], targets[t].id, SHARE_NAME[share]);
            }
        }
    }
    assert_clean();
}

static void test_enomem_sweep_small_map(void **state) {
    (void)state;
    const keydef_t extra[] = {
        {10, 0x05},              /* a new root slot */
        {11, 0x411},             /* splits key 0's slot two levels down */
        {12, 0x03},              /* a new collision with key 2 */
        {13, 0x11 ^ (1u << 30)}, /* a chain to the bottom level */
    };
    enomem_all_ops(&SHAPE_SMALL, extra, 4);
}

static void test_enomem_sweep_1000_items(void **state) {
    (void)state;
    const keydef_t extra[] = {
        {1000, mix32(1000)},
        {1001, mix32(7)},               /* collides with key 7 */
        {1002, mix32(8) ^ (1u << 30)},  /* shares key 8's path to the bottom */
    };
    enomem_all_ops(&SHAPE_BIG, extra, 3);
}

static void test_enomem_sweep_collisions(void **state) {
    (void)state;
    const keydef_t extra[] = {
        {10, COLL_HASH},                /* grows the collision node */
        {11, COLL_HASH ^ (1u << 30)},   /* splits it at the bottom */
        {12, COLL_HASH ^ (1u << 25)},   /* a new collision with key 4 */
        {13, COLL_HASH ^ 1u},           /* another root slot */
    };
    enomem_all_ops(&SHAPE_COLL, extra, 4);
    const keydef_t extra2[] = {{10, COLL_HASH}, {11, COLL_HASH ^ (1u << 30)}};
    enomem_all_ops(&SHAPE_PAIR, extra2, 2);
}

static void test_enomem_sweep_deep_chain(void **state) {
    (void)state;
    const keydef_t extra[] = {
        {10, DEEP(0)},              /* grows a collision node at max depth */
        {11, DEEP(3)},              /* fills the last bottom slot */
        {12, DEEP(2)},              /* a new collision node at max depth */
        {13, DEEP(0) ^ (1u << 25)}, /* leaves the chain one level up */
        {14, DEEP(0) ^ 1u},         /* leaves it at the root */
    };
    enomem_all_ops(&SHAPE_DEEP, extra, 5);
    const keydef_t extra2[] = {{10, DEEP(0)}, {11, DEEP(2)}};
    enomem_all_ops(&SHAPE_CHAIN, extra2, 2);
}

/* ======================================================================== */
/* 9. Item lifetimes                                                        */
/* ======================================================================== */

static void test_item_freed_when_last_version_holding_it_goes(void **state) {
    (void)state;
    int fx = 0, fy = 0, fx2 = 0;
    titem_t *X = item_new(1, 0x100, 0, &fx);
    titem_t *Y = item_new(2, 0x200, 0, &fy);
    titem_t *X2 = item_new(1, 0x100, 1, &fx2);
    ctx__hamt_t v1 = CTX__HAMT_EMPTY, v2, v3, v4;
    put(&v1, X);
    item_drop(X);
    ASSERT_RC(ctx__hamt_assoc(&v1, &Y->hdr, &OPS, &v2), 0);
    item_drop(Y);
    tkey_t kx = {1, 0x100};
    ASSERT_RC(ctx__hamt_without(&v2, 0x100, &kx, &OPS, &v3), 0); /* {Y} */
    ASSERT_RC(ctx__hamt_assoc(&v2, &X2->hdr, &OPS, &v4), 0);     /* {X2, Y} */
    item_drop(X2);
    assert_int_equal(fx + fy + fx2, 0);

    ctx__hamt_release(v4, &OPS); /* X2 was only in v4 */
    assert_int_equal(fx2, 1);
    assert_int_equal(fx + fy, 0);
    ctx__hamt_release(v2, &OPS); /* X still in v1, Y in v3 */
    assert_int_equal(fx + fy, 0);
    ctx__hamt_release(v1, &OPS); /* X's last version */
    assert_int_equal(fx, 1);
    assert_int_equal(fy, 0);
    ctx__hamt_release(v3, &OPS);
    assert_int_equal(fy, 1);
    assert_int_equal(fx, 1);
    assert_int_equal(fx2, 1);
    assert_clean();
}

static void test_item_retained_outside_outlives_every_map(void **state) {
    (void)state;
    int f = 0;
    titem_t *X = item_new(1, 0x100, 0, &f);
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    put(&m, X); /* the creator keeps its reference */
    ctx__hamt_t c = ctx__hamt_retain(m);
    ctx__hamt_release(m, &OPS);
    ctx__hamt_release(c, &OPS);
    assert_int_equal(f, 0);
    assert_int_equal(refs_of(X), 1);
    item_drop(X);
    assert_int_equal(f, 1);
    assert_clean();
}

static void test_inplace_change_frees_dropped_item_at_once(void **state) {
    (void)state;
    int f1 = 0, f2 = 0, f3 = 0;
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    titem_t *a = item_new(1, COLL_HASH, 0, &f1);
    titem_t *b = item_new(2, COLL_HASH, 0, &f2);
    put_inplace(&m, a);
    put_inplace(&m, b);
    item_drop(a);
    item_drop(b);
    titem_t *a2 = item_new(1, COLL_HASH, 1, &f3);
    put_inplace(&m, a2); /* replaces a: a's last reference */
    item_drop(a2);
    assert_int_equal(f1, 1);
    del_inplace(&m, 2, COLL_HASH); /* b's last reference */
    assert_int_equal(f2, 1);
    assert_int_equal(f3, 0);
    /* Shared: the copy keeps a2 alive through an in-place removal. */
    ctx__hamt_t copy = ctx__hamt_retain(m);
    del_inplace(&m, 1, COLL_HASH);
    assert_int_equal(f3, 0);
    assert_int_equal(m.count, 0);
    ctx__hamt_release(copy, &OPS);
    assert_int_equal(f3, 1);
    ctx__hamt_release(m, &OPS);
    assert_int_equal(f1 + f2 + f3, 3);
    assert_clean();
}

static void test_shared_root_frees_nothing_until_last_release(void **state) {
    (void)state;
    int freed[20] = {0};
    ctx__hamt_t m = CTX__HAMT_EMPTY;
    for (int i = 0; i < 20; i++) {
        titem_t *t = item_new(i, (uint32_t)i * 0x01010101u, 0, &freed[i]);
        put(&m, t);
        item_drop(t);
    }
    ctx__hamt_t c1 = ctx__hamt_retain(m), c2 = ctx__hamt_retain(c1);
    ctx__hamt_release(m, &OPS);
    ctx__hamt_release(c1, &OPS);
    for (int i = 0; i < 20; i++)
        assert_int_equal(freed[i], 0);
    ctx__hamt_release(c2, &OPS);
    for (int i = 0; i < 20; i++)
        assert_int_equal(freed[i], 1);
    assert_clean();
}

/* ======================================================================== */
/* 8. Randomized model test                                                 */
/* ======================================================================== */

enum { M_KEYS = 40, M_SLOTS = 6, M_TRACE = 24 };

typedef struct mslot {
    int live;
    ctx__hamt_t map;
    long item[M_KEYS]; /* serial of the item the version holds, or -1 */
} mslot_t;

typedef struct model {
    ctx_test_rng_t rng;
    uint64_t seed;
    long step, steps;
    uint32_t hash[M_KEYS];
    mslot_t slot[M_SLOTS];
    titem_t **ptr; /* serial -> item (valid while referenced) */
    int *refs;     /* serial -> (slot, key) cells naming it */
    long nitems, cap;
    long private_seen, eq_failures, enomem_failures, max_depth_seen;
    char trace[M_TRACE][160];
} model_t;

static void model_fail(model_t *md, int line, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_error("model test: seed %llu, step %ld: %s (test_hamt.c:%d)\n",
                (unsigned long long)md->seed, md->step, msg, line);
    print_error("last operations (oldest first):\n");
    for (long s = md->step - M_TRACE + 1; s <= md->step; s++)
        if (s >= 0)
            print_error("  %s\n", md->trace[s % M_TRACE]);
    print_error("reproduce: CTX_TEST_SEED=%llu CTX_TEST_STEPS=%ld "
                "CTX_TEST_FILTER=test_model_random_operations ./test_hamt\n",
                (unsigned long long)md->seed, md->step + 1);
    fail_msg("model test failed: seed %llu, step %ld: %s", (unsigned long long)md->seed,
             md->step, msg);
}

#define MCHECK(md, cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            model_fail((md), __LINE__, "%s", #cond);                           \
    } while (0)
#define MCHECKF(md, cond, ...)                                                 \
    do {                                                                       \
        if (!(cond))                                                           \
            model_fail((md), __LINE__, __VA_ARGS__);                           \
    } while (0)

static uint64_t m_below(model_t *md, uint64_t n) { return ctx_test_rng_below(&md->rng, n); }

static titem_t *m_new_item(model_t *md, int k) {
    if (md->nitems == md->cap) {
        md->cap = md->cap ? md->cap * 2 : 1024;
        md->ptr = realloc(md->ptr, (size_t)md->cap * sizeof *md->ptr);
        md->refs = realloc(md->refs, (size_t)md->cap * sizeof *md->refs);
        g.model_freed = realloc(g.model_freed, (size_t)md->cap);
        assert_non_null(md->ptr);
        assert_non_null(md->refs);
        assert_non_null(g.model_freed);
    }
    long s = md->nitems++;
    titem_t *t = item_new(k, md->hash[k], md->step, NULL);
    t->serial = s;
    md->ptr[s] = t;
    md->refs[s] = 0;
    g.model_freed[s] = 0;
    return t;
}

/* An item is freed exactly when no version names it (creator refs dropped). */
static void m_check_item(model_t *md, long s) {
    if (s < 0)
        return;
    MCHECKF(md, g.model_freed[s] == (md->refs[s] == 0 ? 1 : 0),
            "item #%ld (key %d) freed %d times while %d version cells hold it", s,
            md->refs[s] == 0 ? -1 : md->ptr[s]->key.id, g.model_freed[s], md->refs[s]);
}

static void m_check_row(model_t *md, const long *row) {
    for (int k = 0; k < M_KEYS; k++)
        m_check_item(md, row[k]);
}

static void m_verify(model_t *md, int s) {
    mslot_t *sl = &md->slot[s];
    uint32_t h[M_KEYS];
    int n = 0;
    for (int k = 0; k < M_KEYS; k++)
        if (sl->item[k] >= 0)
            h[n++] = md->hash[k];
    MCHECKF(md, sl->map.count == (size_t)n, "slot %d: count %zu, model %d", s, sl->map.count, n);
    int rc = ctx__hamt_check(&sl->map);
    MCHECKF(md, rc == 0, "slot %d: ctx__hamt_check returned %d", s, rc);
    int lo, hi, depth = ctx__hamt_depth(&sl->map);
    depth_bounds(h, n, &lo, &hi);
    if (depth == CTX__HAMT_MAX_DEPTH)
        md->max_depth_seen++;
    MCHECKF(md, depth >= lo && depth <= hi, "slot %d: depth %d, expected %d..%d", s, depth, lo,
            hi);
    for (int k = 0; k < M_KEYS; k++) {
        titem_t *got = NULL;
        rc = find_key(&sl->map, k, md->hash[k], &got);
        if (sl->item[k] >= 0)
            MCHECKF(md, rc == 1 && got == md->ptr[sl->item[k]],
                    "slot %d: find of key %d returned %d, %p; expected item #%ld", s, k, rc,
                    (void *)got, sl->item[k]);
        else
            MCHECKF(md, rc == 0, "slot %d: find of absent key %d returned %d", s, k, rc);
    }
    unsigned char seen[M_KEYS] = {0};
    ctx__hamt_iter_t it;
    ctx__hamt_iter_init(&it, &sl->map);
    ctx__hamt_item_t *item;
    int count = 0;
    while ((item = ctx__hamt_iter_next(&it)) != NULL) {
        titem_t *t = (titem_t *)item;
        int k = t->key.id;
        MCHECKF(md, k >= 0 && k < M_KEYS && sl->item[k] >= 0 && md->ptr[sl->item[k]] == t,
                "slot %d: iteration yielded an item (key %d) the version does not hold", s, k);
        MCHECKF(md, !seen[k]++, "slot %d: iteration yielded key %d twice", s, k);
        MCHECKF(md, ++count <= n, "slot %d: iteration yielded more than %d items", s, n);
    }
    MCHECKF(md, count == n, "slot %d: iteration yielded %d of %d items", s, count, n);
    MCHECK(md, g.eq_bad == 0);
    MCHECK(md, g.bad_frees == 0);
}

static void m_verify_all(model_t *md) {
    for (int s = 0; s < M_SLOTS; s++)
        if (md->slot[s].live)
            m_verify(md, s);
}

static int m_pick_live(model_t *md) {
    int live[M_SLOTS], n = 0;
    for (int s = 0; s < M_SLOTS; s++)
        if (md->slot[s].live)
            live[n++] = s;
    if (n == 0) {
        md->slot[0].live = 1;
        md->slot[0].map = CTX__HAMT_EMPTY;
        for (int k = 0; k < M_KEYS; k++)
            md->slot[0].item[k] = -1;
        return 0;
    }
    return live[m_below(md, (uint64_t)n)];
}

/* Where a new version goes: over its source, into a free slot, or over any
 * slot (that version is released). */
static int m_pick_dst(model_t *md, int src, int allow_src) {
    int r = (int)m_below(md, 3);
    if (r == 0 && allow_src)
        return src;
    int free_[M_SLOTS], nf = 0;
    for (int s = 0; s < M_SLOTS; s++)
        if (!md->slot[s].live)
            free_[nf++] = s;
    if (nf && r == 1)
        return free_[m_below(md, (uint64_t)nf)];
    int d;
    do
        d = (int)m_below(md, M_SLOTS);
    while (!allow_src && d == src);
    return d;
}

/* Puts a new version into slot `dst`, releasing the version there. */
static void m_store(model_t *md, int dst, ctx__hamt_t map, const long *row) {
    mslot_t *sl = &md->slot[dst];
    int had = sl->live;
    ctx__hamt_t old = sl->map;
    long oldrow[M_KEYS];
    memcpy(oldrow, sl->item, sizeof oldrow);
    for (int k = 0; k < M_KEYS; k++)
        if (row[k] >= 0)
            md->refs[row[k]]++;
    sl->live = 1;
    sl->map = map;
    memcpy(sl->item, row, sizeof sl->item);
    if (had) {
        ctx__hamt_release(old, &OPS);
        for (int k = 0; k < M_KEYS; k++)
            if (oldrow[k] >= 0)
                md->refs[oldrow[k]]--;
        m_check_row(md, oldrow);
    }
}

static void m_release(model_t *md, int s) {
    mslot_t *sl = &md->slot[s];
    ctx__hamt_release(sl->map, &OPS);
    sl->live = 0;
    for (int k = 0; k < M_KEYS; k++)
        if (sl->item[k] >= 0)
            md->refs[sl->item[k]]--;
    m_check_row(md, sl->item);
}

static int m_eq_rule(model_t *md, int s, int k, int fail_id) {
    if (fail_id < 0)
        return 0;
    int same = 0, fail_same = 0;
    for (int j = 0; j < M_KEYS; j++)
        if (md->slot[s].item[j] >= 0 && md->hash[j] == md->hash[k]) {
            same = 1;
            fail_same |= j == fail_id;
        }
    if (!same)
        return 0;
    return k == fail_id ? 2 : fail_same;
}

/* A call that failed: was the error allowed? */
static void m_check_error(model_t *md, int rc, int rule, long nth, int fired, int mutating) {
    if (rc == EQ_FAIL_CODE) {
        MCHECKF(md, rule >= 1, "eq's error returned, but eq could not fail");
        md->eq_failures++;
    } else if (rc == CTX_ENOMEM) {
        MCHECKF(md, mutating && nth && fired, "CTX_ENOMEM without a failed allocation");
        md->enomem_failures++;
    } else {
        model_fail(md, __LINE__, "unexpected error %d (%s)", rc, ctx_error_name(rc));
    }
}

static void m_step(model_t *md) {
    int op = (int)m_below(md, 100);
    int s = m_pick_live(md);
    int k = (int)m_below(md, M_KEYS);
    int fail_id = m_below(md, 100) < 5 ? (int)m_below(md, M_KEYS) : -1;
    long nth = m_below(md, 100) < 5 ? 1 + (long)m_below(md, 4) : 0;
    mslot_t *sl = &md->slot[s];
    int rule = m_eq_rule(md, s, k, fail_id);
    int present = sl->item[k] >= 0;
    tkey_t key = {k, md->hash[k]};
    char *tr = md->trace[md->step % M_TRACE];
    snprintf(tr, sizeof md->trace[0],
             "step %ld: op %d on slot %d, key %d (hash 0x%08x, %s), eq fails for %d, "
             "allocation %ld fails",
             md->step, op, s, k, (unsigned)md->hash[k], present ? "present" : "absent",
             fail_id, nth);
    g.fail_code = EQ_HOOK_CODE;

    if (op < 33) {
        /* assoc: persistent (0..17) or in place (18..32; odd: swap) */
        int inplace = op >= 18;
        int swap = inplace && op % 2;
        titem_t *t = m_new_item(md, k);
        long serial = t->serial;
        ctx__hamt_t before = sl->map, out = SENTINEL_MAP;
        ctx__hamt_item_t *replaced = (ctx__hamt_item_t *)SENTINEL_ITEM;
        long blocks = ctx_test_alloc_live_blocks();
        g.fail_id = fail_id;
        if (nth)
            ctx_test_alloc_fail_nth(nth);
        int rc = swap      ? swap_inplace(&sl->map, &t->hdr, &OPS, &replaced)
                 : inplace ? ctx__hamt_assoc_inplace(&sl->map, &t->hdr, &OPS)
                           : ctx__hamt_assoc(&sl->map, &t->hdr, &OPS, &out);
        int fired = nth ? ctx_test_alloc_fired() : 0;
        ctx_test_alloc_fail_nth(0);
        g.fail_id = -1;
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": %s -> %d",
                 swap ? "swap_inplace" : inplace ? "assoc_inplace" : "assoc", rc);
        if (rc == 0) {
            MCHECK(md, rule != 2);
            MCHECKF(md, refs_of(t) == 2, "new item has %u references", refs_of(t));
            if (inplace) {
                long old = sl->item[k];
                if (swap)
                    MCHECKF(md, replaced == (old >= 0 ? &md->ptr[old]->hdr : NULL),
                            "swap_inplace handed back %p, expected item #%ld",
                            (void *)replaced, old);
                md->refs[serial]++;
                if (old >= 0)
                    md->refs[old]--;
                sl->item[k] = serial;
                item_drop(t);
                if (swap && old >= 0) {
                    MCHECKF(md, g.model_freed[old] == 0,
                            "the item swap_inplace handed back was freed");
                    ctx__hamt_item_release(replaced, &OPS);
                }
                m_check_item(md, old);
                m_check_item(md, serial);
                m_verify_all(md); /* nothing else may have changed */
            } else {
                MCHECK(md, sl->map.root == before.root && sl->map.count == before.count);
                long row[M_KEYS];
                memcpy(row, sl->item, sizeof row);
                row[k] = serial;
                int dst = m_pick_dst(md, s, 1);
                m_store(md, dst, out, row);
                item_drop(t);
                m_check_item(md, serial);
                m_verify(md, dst);
                if (dst != s)
                    m_verify(md, s);
            }
        } else {
            m_check_error(md, rc, rule, nth, fired, 1);
            MCHECK(md, sl->map.root == before.root && sl->map.count == before.count);
            MCHECK(md, is_sentinel(out));
            MCHECK(md, replaced == SENTINEL_ITEM || replaced == NULL);
            MCHECK(md, ctx_test_alloc_live_blocks() == blocks);
            MCHECKF(md, refs_of(t) == 1, "item of a failed assoc has %u references",
                    refs_of(t));
            item_drop(t);
            m_check_item(md, serial); /* freed: nothing names it */
            m_verify(md, s);
        }
    } else if (op < 55) {
        /* without: persistent (33..43) or in place (44..54) */
        int inplace = op >= 44;
        ctx__hamt_t before = sl->map, out = SENTINEL_MAP;
        long blocks = ctx_test_alloc_live_blocks();
        g.fail_id = fail_id;
        if (nth)
            ctx_test_alloc_fail_nth(nth);
        int rc = inplace ? ctx__hamt_without_inplace(&sl->map, key.hash, &key, &OPS)
                         : ctx__hamt_without(&sl->map, key.hash, &key, &OPS, &out);
        int fired = nth ? ctx_test_alloc_fired() : 0;
        ctx_test_alloc_fail_nth(0);
        g.fail_id = -1;
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": %s -> %d",
                 inplace ? "without_inplace" : "without", rc);
        if (rc == 0) {
            MCHECK(md, rule != 2);
            MCHECKF(md, present, "removed a key the version does not hold");
            long old = sl->item[k];
            if (inplace) {
                md->refs[old]--;
                sl->item[k] = -1;
                m_check_item(md, old);
                m_verify_all(md);
            } else {
                MCHECK(md, sl->map.root == before.root && sl->map.count == before.count);
                long row[M_KEYS];
                memcpy(row, sl->item, sizeof row);
                row[k] = -1;
                int dst = m_pick_dst(md, s, 1);
                m_store(md, dst, out, row);
                m_verify(md, dst);
                if (dst != s)
                    m_verify(md, s);
            }
        } else {
            if (rc == CTX_ENOTFOUND) {
                MCHECKF(md, !present, "CTX_ENOTFOUND for a present key");
                MCHECK(md, rule != 2);
            } else {
                m_check_error(md, rc, rule, nth, fired, 1);
            }
            MCHECK(md, sl->map.root == before.root && sl->map.count == before.count);
            MCHECK(md, is_sentinel(out));
            MCHECK(md, ctx_test_alloc_live_blocks() == blocks);
            m_verify(md, s);
        }
    } else if (op < 70) {
        /* find */
        ctx__hamt_item_t *got = (ctx__hamt_item_t *)SENTINEL_ITEM;
        g.fail_id = fail_id;
        int rc = ctx__hamt_find(&sl->map, key.hash, &key, &OPS, &got);
        g.fail_id = -1;
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": find -> %d", rc);
        if (rc < 0) {
            m_check_error(md, rc, rule, 0, 0, 0);
        } else {
            MCHECK(md, rule != 2);
            if (present)
                MCHECKF(md, rc == 1 && got == &md->ptr[sl->item[k]]->hdr,
                        "find returned %d, %p", rc, (void *)got);
            else
                MCHECKF(md, rc == 0, "find of an absent key returned %d", rc);
        }
    } else if (op < 77) {
        /* retain a version into another slot */
        int dst = m_pick_dst(md, s, 0);
        ctx__hamt_t copy = ctx__hamt_retain(sl->map);
        MCHECK(md, copy.root == sl->map.root && copy.count == sl->map.count);
        long row[M_KEYS];
        memcpy(row, sl->item, sizeof row);
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": retain into slot %d",
                 dst);
        m_store(md, dst, copy, row);
        m_verify(md, dst);
    } else if (op < 82) {
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": release");
        m_release(md, s);
    } else if (op < 90) {
        g.fail_id = fail_id;
        int rc = ctx__hamt_is_private(&sl->map, key.hash, &key, &OPS);
        g.fail_id = -1;
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": is_private -> %d", rc);
        if (rc == EQ_FAIL_CODE && fail_id >= 0) {
            m_check_error(md, rc, rule, 0, 0, 0);
        } else {
            MCHECK(md, rule != 2);
            if (!present) {
                MCHECKF(md, rc == CTX_ENOTFOUND, "is_private of an absent key returned %d", rc);
            } else {
                long serial = sl->item[k];
                MCHECKF(md, rc == 0 || rc == 1, "is_private returned %d", rc);
                if (md->refs[serial] > 1)
                    MCHECKF(md, rc == 0, "is_private says 1 for an item %d versions hold",
                            md->refs[serial]);
                if (rc == 1) {
                    MCHECKF(md, refs_of(md->ptr[serial]) == 1,
                            "is_private says 1 for an item with %u references",
                            refs_of(md->ptr[serial]));
                    md->private_seen++;
                }
            }
        }
    } else {
        snprintf(tr + strlen(tr), sizeof md->trace[0] - strlen(tr), ": verify all");
        m_verify_all(md);
    }
}

static long model_steps(void) {
    const char *env = getenv("CTX_TEST_STEPS");
    if (env && *env)
        return strtol(env, NULL, 0);
#if defined(CTX_TEST_UNDER_VALGRIND)
    return 10000;
#elif defined(CTX_TEST_UNDER_TSAN)
    return 30000;
#else
    return 150000;
#endif
}

static void m_make_hashes(model_t *md) {
    /* A deep chain with collisions at the bottom is always there. */
    uint32_t H = (uint32_t)ctx_test_rng_next(&md->rng);
    md->hash[0] = H;
    md->hash[1] = H;
    md->hash[2] = H ^ (1u << 30);
    md->hash[3] = H ^ (2u << 30);
    md->hash[4] = H ^ (1u << 30);
    for (int k = 5; k < M_KEYS; k++) {
        uint32_t base = md->hash[m_below(md, (uint64_t)k)];
        int r = (int)m_below(md, 100);
        if (r < 20) {
            md->hash[k] = base; /* a collision */
        } else if (r < 85) {
            /* the same path but one fragment, deep levels more likely */
            /* (one rng call per statement: the order must not depend on
             * the compiler) */
            uint64_t r1 = m_below(md, 7);
            uint64_t r2 = m_below(md, 7);
            int level = r1 > r2 ? (int)r1 : 6 - (int)m_below(md, 3);
            uint32_t f = 1 + (uint32_t)m_below(md, level == 6 ? 3 : 31);
            md->hash[k] = base ^ (f << (5 * level));
        } else {
            md->hash[k] = (uint32_t)ctx_test_rng_next(&md->rng);
        }
    }
}

static void test_model_random_operations(void **state) {
    (void)state;
    model_t *md = calloc(1, sizeof *md);
    assert_non_null(md);
    md->seed = ctx_test_seed(0xC0FFEE1234ull);
    md->steps = model_steps();
    ctx_test_rng_seed(&md->rng, md->seed);
    print_message("model test: seed %llu, %ld steps (CTX_TEST_SEED, CTX_TEST_STEPS)\n",
                  (unsigned long long)md->seed, md->steps);
    m_make_hashes(md);
    for (int s = 0; s < M_SLOTS; s++)
        for (int k = 0; k < M_KEYS; k++)
            md->slot[s].item[k] = -1;

    for (md->step = 0; md->step < md->steps; md->step++)
        m_step(md);

    md->step = md->steps;
    snprintf(md->trace[md->step % M_TRACE], sizeof md->trace[0], "end: verify and release all");
    m_verify_all(md);
    for (int s = 0; s < M_SLOTS; s++)
        if (md->slot[s].live)
            m_release(md, s);
    for (long s = 0; s < md->nitems; s++)
        MCHECKF(md, g.model_freed[s] == 1, "item #%ld freed %d times", s, g.model_freed[s]);
    MCHECKF(md, ctx_test_alloc_live_blocks() == 0, "%ld blocks leaked",
            ctx_test_alloc_live_blocks());
    print_message("model test: %ld items, %ld eq failures, %ld allocation failures, "
                  "%ld private items, %ld maps at the maximum depth\n",
                  md->nitems, md->eq_failures, md->enomem_failures, md->private_seen,
                  md->max_depth_seen);
    if (md->steps >= 10000) {
        /* The run exercised what it is meant to. */
        MCHECK(md, md->private_seen > 0);
        MCHECK(md, md->eq_failures > 0);
        MCHECK(md, md->enomem_failures > 0);
        MCHECK(md, md->max_depth_seen > 0);
    }
    free(md->ptr);
    free(md->refs);
    free(g.model_freed);
    g.model_freed = NULL;
    free(md);
    assert_clean();
}

/* ======================================================================== */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
    init_big_shape();
    const struct CMUnitTest tests[] = {
        /* 1. basics and persistence */
        T(test_empty_map_finds_nothing),
        T(test_assoc_then_find_returns_the_item),
        T(test_assoc_same_key_replaces_and_keeps_count),
        T(test_identical_key_needs_no_eq),
        T(test_eq_is_called_only_for_equal_hashes),
        T(test_null_eq_means_identity),
        T(test_without_present_removes_only_that_key),
        T(test_without_absent_is_enotfound_and_leaves_out_untouched),
        T(test_old_versions_survive_later_changes),
        /* 2. shapes */
        T(test_keys_differing_only_at_level_k_nest_k_levels_deep),
        T(test_removal_collapses_chain_back_to_root),
        T(test_full_bitmap_node_at_every_level),
        /* 3. collisions */
        T(test_collision_insert_find_replace),
        T(test_collision_delete_down_to_one_collapses),
        T(test_collision_node_splits_for_another_hash),
        T(test_collision_items_iterate_once_each),
        T(test_collision_node_of_300_items_iterates_once_each),
        /* 4. the deepest tree */
        T(test_deepest_tree_reaches_max_depth),
        T(test_deepest_tree_iterates_every_item_once),
        T(test_deepest_tree_inserts_in_every_order),
        T(test_deepest_tree_deletes_in_every_order),
        /* 5. failing key equality */
        T(test_eq_failure_in_find_is_reported),
        T(test_eq_failure_in_assoc_changes_nothing),
        T(test_eq_failure_in_without_changes_nothing),
        T(test_eq_failure_in_assoc_inplace_changes_nothing),
        T(test_eq_failure_in_without_inplace_changes_nothing),
        T(test_eq_failure_in_is_private_is_reported),
        T(test_eq_failure_in_swap_inplace_changes_nothing),
        T(test_eq_hook_code_becomes_ekey),
        T(test_eq_failure_late_in_a_shared_collision_node),
        /* 6. in place and is_private */
        T(test_inplace_ops_on_sole_owner_build_the_right_map),
        T(test_inplace_replace_in_private_node_reuses_it),
        T(test_inplace_ops_never_show_through_a_retained_copy),
        T(test_inplace_ops_never_show_through_shared_subtrees),
        T(test_is_private_follows_sharing),
        T(test_swap_inplace_hands_back_the_replaced_item),
        T(test_put_and_take_inplace_free_no_item),
        T(test_reserve_makes_room_for_the_first_puts),
        T(test_empty_map_after_inplace_removal_has_depth_0),
        T(test_without_inplace_of_last_item_gives_empty_map),
        /* 7. allocation failure */
        T(test_enomem_sweep_small_map),
        T(test_enomem_sweep_1000_items),
        T(test_enomem_sweep_collisions),
        T(test_enomem_sweep_deep_chain),
        /* 9. item lifetimes */
        T(test_item_freed_when_last_version_holding_it_goes),
        T(test_item_retained_outside_outlives_every_map),
        T(test_inplace_change_frees_dropped_item_at_once),
        T(test_shared_root_frees_nothing_until_last_release),
        /* 8. model */
        T(test_model_random_operations),
    };
    const char *filter = getenv("CTX_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests_name("hamt", tests, NULL, NULL);
}
