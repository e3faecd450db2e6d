/* SPDX-License-Identifier: MIT */
/*
 * test_context.c — contexts through the public API: new, copy (O(1),
 * independent), copy_current, copy_only, ctx_context_set, new_from (a context
 * built in one pass), run, enter/exit and
 * their errors, the thread's context release, the mapping view (get, contains,
 * length), iteration snapshots, the formatter, and exactly when values are
 * released as contexts and tokens are dropped.
 */
#include "core_test.h"

#include "core/core.h" /* ctx__var_force_hash, a context's map */

/* ---- new, copy, copy_current ---- */

static void test_new_is_empty(void **state) {
    (void)state;
    ctx_var_t *var = make_var("v", NULL, 1, NULL); /* default NULL */
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    assert_non_null(ctx);
    assert_int_equal(ctx_context_length(ctx), 0);
    ASSERT_RC(ctx_context_contains(ctx, var), 0);
    EXPECT_CTX_GET(ctx, var, CTX_ENOTFOUND, NULL);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    ctx_iter_t it;
    ASSERT_RC(ctx_iter_init(&it, ctx), 0);
    ctx_var_t *k = NULL;
    void *v = NULL;
    assert_int_equal(ctx_iter_next(&it, &k, &v), 0);
    ctx_iter_clear(&it);
    char buf[8] = "junk";
    size_t len = 99;
    ASSERT_RC(ctx_context_format(ctx, buf, sizeof buf, &len), 0);
    assert_string_equal(buf, "");
    assert_int_equal(len, 0);
    /* Two new contexts are distinct objects. */
    ctx_context_t *ctx2;
    ASSERT_RC(ctx_context_new(&ctx2), 0);
    assert_ptr_not_equal(ctx, ctx2);
    assert_ptr_equal(ctx_context_retain(ctx), ctx);
    ctx_context_release(ctx);
    ctx_context_release(ctx);
    ctx_context_release(ctx2);
    ctx_context_release(NULL);
    ctx_var_release(var);
}

static void test_copy_current_is_a_snapshot(void **state) {
    (void)state;
    static int a, b, c;
    ctx_var_t *x = make_var("x", NULL, 0, NULL);
    ctx_var_t *y = make_var("y", NULL, 0, NULL);

    /* With no thread state at all: an empty copy. */
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_context_t *empty;
    ASSERT_RC(ctx_context_copy_current(&empty), 0);
    assert_int_equal(ctx_context_length(empty), 0);

    ASSERT_RC(ctx_var_set(x, &a, NULL), 0);
    ctx_context_t *snap;
    ASSERT_RC(ctx_context_copy_current(&snap), 0);
    ASSERT_RC(ctx_var_set(x, &b, NULL), 0);
    ASSERT_RC(ctx_var_set(y, &c, NULL), 0);
    /* Later sets are invisible to the copy. */
    EXPECT_CTX_GET(snap, x, 0, &a);
    EXPECT_CTX_GET(snap, y, CTX_ENOTFOUND, NULL);
    assert_int_equal(ctx_context_length(snap), 1);
    EXPECT_GET(x, CTX_VALUE, &b);
    assert_int_equal(ctx_context_length(empty), 0);

    /* A copy of a copy; changes in either are invisible to the other. */
    ctx_context_t *snap2;
    ASSERT_RC(ctx_context_copy(snap, &snap2), 0);
    assert_ptr_not_equal(snap2, snap);
    ASSERT_RC(ctx_context_set(snap2, y, &b), 0);
    ASSERT_RC(ctx_context_set(snap, x, &c), 0);
    EXPECT_CTX_GET(snap, x, 0, &c);
    EXPECT_CTX_GET(snap, y, CTX_ENOTFOUND, NULL);
    EXPECT_CTX_GET(snap2, x, 0, &a);
    EXPECT_CTX_GET(snap2, y, 0, &b);
    /* And the thread's own context is untouched by both. */
    EXPECT_GET(x, CTX_VALUE, &b);
    EXPECT_GET(y, CTX_VALUE, &c);

    ctx_context_release(empty);
    ctx_context_release(snap);
    ctx_context_release(snap2);
    ctx_var_release(x);
    ctx_var_release(y);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* Copying costs the same whatever the context holds; a set in a big shared
 * context copies a path, not the map. */
static void test_copy_is_constant_time(void **state) {
    (void)state;
    enum { BIG = 2000 };
    static ctx_var_t *vars[BIG];
    static int vals[BIG];
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_install();
    ctx_var_t *one = make_var("one", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(one, &vals[0], NULL), 0);
    long before = ctx_test_alloc_attempts();
    ctx_context_t *small;
    ASSERT_RC(ctx_context_copy_current(&small), 0);
    long small_cost = ctx_test_alloc_attempts() - before;

    for (int i = 0; i < BIG; i++) {
        vars[i] = make_var("v", NULL, 0, NULL);
        ASSERT_RC(ctx_var_set(vars[i], &vals[i], NULL), 0);
    }
    before = ctx_test_alloc_attempts();
    ctx_context_t *big;
    ASSERT_RC(ctx_context_copy_current(&big), 0);
    long big_cost = ctx_test_alloc_attempts() - before;
    assert_int_equal(big_cost, small_cost);
    assert_true(big_cost <= 2);
    assert_int_equal(ctx_context_length(big), BIG + 1);

    /* A set now (map shared with `big`) copies at most one path. */
    static int other;
    before = ctx_test_alloc_attempts();
    ASSERT_RC(ctx_var_set(vars[BIG / 2], &other, NULL), 0);
    long set_cost = ctx_test_alloc_attempts() - before;
    assert_true(set_cost <= 12);
    EXPECT_CTX_GET(big, vars[BIG / 2], 0, &vals[BIG / 2]);
    EXPECT_GET(vars[BIG / 2], CTX_VALUE, &other);

    ctx_context_release(small);
    ctx_context_release(big);
    for (int i = 0; i < BIG; i++)
        ctx_var_release(vars[i]);
    ctx_var_release(one);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* ---- copy_only ---- */

static void test_copy_only(void **state) {
    (void)state;
    val_counters_reset();
    val_t va, vb, vc;
    val_init(&va, 1);
    val_init(&vb, 2);
    val_init(&vc, 3);
    val_t def;
    val_init(&def, 9);
    ctx_var_t *a = make_var("a", NULL, 0, ops_release());
    ctx_var_t *b = make_var("b", NULL, 0, ops_release());
    ctx_var_t *c = make_var("c", &def, 1, ops_release());
    ctx_var_t *unset = make_var("unset", &def, 1, ops_release());
    ctx_context_t *src;
    ASSERT_RC(ctx_context_new(&src), 0);
    ASSERT_RC(ctx_context_set(src, a, &va), 0);
    ASSERT_RC(ctx_context_set(src, b, &vb), 0);
    ASSERT_RC(ctx_context_set(src, c, &vc), 0);

    ctx_var_t *list[] = {a, c, unset, a};
    ctx_context_t *only;
    ASSERT_RC(ctx_context_copy_only(src, list, 4, &only), 0);
    assert_int_equal(ctx_context_length(only), 2);
    EXPECT_CTX_GET(only, a, 0, &va);
    EXPECT_CTX_GET(only, c, 0, &vc);
    EXPECT_CTX_GET(only, b, CTX_ENOTFOUND, NULL);
    /* The default is not a value: `unset` is not copied. */
    ASSERT_RC(ctx_context_contains(only, unset), 0);

    ctx_context_t *none;
    ASSERT_RC(ctx_context_copy_only(src, list, 0, &none), 0);
    assert_int_equal(ctx_context_length(none), 0);

    /* Values are shared, not copied: released once, with the last holder. */
    ctx_context_release(src);
    assert_int_equal(val_released(&vb), 1);
    assert_int_equal(val_released(&va), 0);
    assert_int_equal(val_released(&vc), 0);
    ctx_context_release(only);
    assert_int_equal(val_released(&va), 1);
    assert_int_equal(val_released(&vc), 1);
    ctx_context_release(none);
    ctx_var_release(a);
    ctx_var_release(b);
    ctx_var_release(c);
    ctx_var_release(unset);
    assert_int_equal(val_released(&def), 2);
}

/* ---- ctx_context_set ---- */

static void *context_set_in_run(void *arg) {
    void **io = arg; /* ctx, var, value */
    return (void *)(intptr_t)ctx_context_set(io[0], io[1], io[2]);
}

static void test_context_set(void **state) {
    (void)state;
    val_counters_reset();
    val_t v1, v2, v3;
    val_init(&v1, 1);
    val_init(&v2, 2);
    val_init(&v3, 3);
    ctx_var_t *var = make_var("v", NULL, 0, ops_release());
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &v1), 0);
    EXPECT_CTX_GET(ctx, var, 0, &v1);
    /* Not the thread's context. */
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ASSERT_RC(ctx_context_set(ctx, var, &v2), 0);
    assert_int_equal(val_released(&v1), 1);
    EXPECT_CTX_GET(ctx, var, 0, &v2);

    /* Entered (by enter or by run): EENTERED, the value stays the caller's. */
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &v3), CTX_EENTERED);
    EXPECT_GET(var, CTX_VALUE, &v2);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    void *io[3] = {ctx, var, &v3};
    void *result = NULL;
    ASSERT_RC(ctx_context_run(ctx, context_set_in_run, io, &result), 0);
    assert_int_equal((int)(intptr_t)result, CTX_EENTERED);
    assert_int_equal(val_released(&v3), 0);
    EXPECT_CTX_GET(ctx, var, 0, &v2);

    /* Not entered again: allowed. */
    ASSERT_RC(ctx_context_set(ctx, var, &v3), 0);
    assert_int_equal(val_released(&v2), 1);
    ctx_context_release(ctx);
    assert_int_equal(val_released(&v3), 1);
    ctx_var_release(var);
}

/* ---- new_from ---- */

enum { FROM_N = 100 };

/* Two contexts hold the same variables with the same values, in the same
 * iteration order (the map's shape depends on the hashes only). */
static void expect_same_walk(ctx_context_t *a, ctx_context_t *b) {
    ctx_iter_t ia, ib;
    ctx_var_t *va, *vb;
    void *xa, *xb;
    ASSERT_RC(ctx_iter_init(&ia, a), 0);
    ASSERT_RC(ctx_iter_init(&ib, b), 0);
    size_t n = 0;
    while (ctx_iter_next(&ia, &va, &xa)) {
        assert_int_equal(ctx_iter_next(&ib, &vb, &xb), 1);
        assert_ptr_equal(va, vb);
        assert_ptr_equal(xa, xb);
        n++;
    }
    assert_int_equal(ctx_iter_next(&ib, &vb, &xb), 0);
    assert_int_equal(n, ctx_context_length(a));
    ctx_iter_clear(&ia);
    ctx_iter_clear(&ib);
}

static void test_new_from(void **state) {
    (void)state;
    val_counters_reset();
    /* Enough variables for a root full of items and nodes below it. */
    ctx_var_t *vars[FROM_N];
    val_t vals[FROM_N];
    void *values[FROM_N];
    for (int i = 0; i < FROM_N; i++) {
        vars[i] = make_var("v", NULL, 0, ops_release());
        val_init(&vals[i], i);
        values[i] = i == 7 ? NULL : &vals[i]; /* a stored NULL is a value */
    }

    ctx_context_t *empty = NULL;
    ASSERT_RC(ctx_context_new_from(NULL, NULL, 0, &empty), 0);
    assert_int_equal(ctx_context_length(empty), 0);
    ctx_context_release(empty);

    for (int n = 1; n <= FROM_N; n += n < 8 ? 1 : 23) {
        ctx_context_t *built = NULL, *set = NULL;
        ASSERT_RC(ctx_context_new_from(vars, values, (size_t)n, &built), 0);
        assert_int_equal(ctx_context_is_entered(built), 0);
        assert_int_equal(ctx_context_length(built), n);
        for (int i = 0; i < FROM_N; i++)
            EXPECT_CTX_GET(built, vars[i], i < n ? 0 : CTX_ENOTFOUND, values[i]);
        /* The same context as new + n sets. */
        ASSERT_RC(ctx_context_new(&set), 0);
        for (int i = 0; i < n; i++)
            ASSERT_RC(ctx_context_set(set, vars[i], values[i]), 0);
        expect_same_walk(built, set);
        ctx_context_release(set); /* its own shares of the same values */
        assert_int_equal(atomic_load(&val_counters()->released), n);
        val_counters_reset();
        /* An ordinary context: entered, read and changed as any other. */
        ASSERT_RC(ctx_context_enter(built), 0);
        EXPECT_GET(vars[n - 1], CTX_VALUE, values[n - 1]);
        ctx_token_t *tok = NULL;
        ASSERT_RC(ctx_var_set(vars[0], &vals[1], &tok), 0);
        ASSERT_RC(ctx_var_reset(vars[0], tok), 0);
        ctx_token_release(tok);
        ASSERT_RC(ctx_context_exit(built), 0);
        /* Each value released once, with the context. */
        val_counters_reset();
        ctx_context_release(built);
        assert_int_equal(atomic_load(&val_counters()->released), n);
        for (int i = 0; i < FROM_N; i++)
            val_init(&vals[i], i);
        val_counters_reset();
    }
    for (int i = 0; i < FROM_N; i++)
        ctx_var_release(vars[i]);
}

static uint64_t xorshift(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The one-pass builder (a root written directly when the first hash
 * fragments differ, puts otherwise) against new + sets, for random lists
 * of variables whose hashes are forced to meet: in the root's fragment
 * (k * 32 + f), in full (a collision node), or not at all; lists of 1 to
 * 40 (the direct root is tried up to 32).  Both contexts must be sound
 * maps with the same walk, and every value released once. */
static void test_new_from_random_hashes(void **state) {
    (void)state;
    enum { POOL = 40 };
    ctx_var_t *vars[POOL];
    val_t vals[POOL];
    for (int i = 0; i < POOL; i++)
        vars[i] = make_var("h", NULL, 0, ops_release());
    uint64_t x = 0x2545F4914F6CDD1Dull;
#define NEXT() xorshift(&x)
    int flat_shapes = 0;
    int rounds = CTX_SCALED(600, 60, 60);
    for (int round = 0; round < rounds; round++) {
        ctx_var_t *list[POOL];
        void *values[POOL];
        int order[POOL];
        for (int i = 0; i < POOL; i++)
            order[i] = i;
        for (int i = POOL - 1; i > 0; i--) { /* a random order */
            int j = (int)(NEXT() % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        /* hashes: every fourth round, distinct root fragments for a list of
         * up to 32 (the direct root); otherwise from 4 fragments (often
         * meeting) to all 32, with a few full collisions */
        int flat_round = round % 4 == 0;
        unsigned spread = 4 + (unsigned)(NEXT() % 29);
        for (int p = 0; p < POOL; p++) {
            uint32_t h = (uint32_t)(NEXT() % 3) << 5;
            if (flat_round)
                h |= (uint32_t)p % 32;
            else if (NEXT() % 8 == 0)
                h = 7; /* full collisions */
            else
                h |= (uint32_t)(NEXT() % spread);
            ctx__var_force_hash(vars[order[p]], h);
        }
        int n = 1 + (int)(NEXT() % (flat_round ? 32 : POOL));
        uint32_t frags = 0;
        int distinct = 1;
        for (int i = 0; i < n; i++) {
            list[i] = vars[order[i]];
            val_init(&vals[i], i);
            values[i] = &vals[i];
            uint32_t bit = 1u << (list[i]->hash & 31);
            distinct = distinct && !(frags & bit);
            frags |= bit;
        }
        flat_shapes += distinct && n <= 32;
        val_counters_reset();
        ctx_context_t *built = NULL, *set = NULL;
        ASSERT_RC(ctx_context_new_from(list, values, (size_t)n, &built), 0);
        ASSERT_RC(ctx_context_new(&set), 0);
        for (int i = 0; i < n; i++)
            ASSERT_RC(ctx_context_set(set, list[i], values[i]), 0);
        assert_int_equal(ctx__hamt_check(&built->map), 0);
        assert_int_equal(built->map.count, (size_t)n);
        expect_same_walk(built, set);
        for (int i = 0; i < n; i++)
            EXPECT_CTX_GET(built, list[i], 0, values[i]);
        for (int i = n; i < POOL; i++)
            EXPECT_CTX_GET(built, vars[order[i]], CTX_ENOTFOUND, NULL);
        /* a variable listed twice, anywhere: refused, nothing released */
        if (n >= 2) {
            ctx_var_t *saved = list[n - 1];
            list[n - 1] = list[(int)(NEXT() % (uint64_t)(n - 1))];
            ctx_context_t *out = NULL;
            ASSERT_RC(ctx_context_new_from(list, values, (size_t)n, &out), CTX_EINVAL);
            assert_null(out);
            list[n - 1] = saved;
        }
        assert_int_equal(atomic_load(&val_counters()->released), 0);
        ctx_context_release(set);
        ctx_context_release(built);
        assert_int_equal(atomic_load(&val_counters()->released), 2 * n);
    }
#undef NEXT
    assert_true(flat_shapes >= (rounds + 3) / 4); /* the direct root was built */
    for (int i = 0; i < POOL; i++)
        ctx_var_release(vars[i]);
}

/* Bad arguments and a variable listed twice: CTX_EINVAL, nothing changed
 * (no value released, *out untouched, no block left behind). */
static void test_new_from_errors(void **state) {
    (void)state;
    val_counters_reset();
    ctx_var_t *vars[FROM_N + 1];
    val_t vals[FROM_N + 1];
    void *values[FROM_N + 1];
    for (int i = 0; i < FROM_N; i++) {
        vars[i] = make_var("v", NULL, 0, ops_release());
        val_init(&vals[i], i);
        values[i] = &vals[i];
    }
    ctx_context_t *sentinel = (ctx_context_t *)&vals[0], *out = sentinel;
    ASSERT_RC(ctx_context_new_from(vars, values, 1, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_new_from(NULL, values, 1, &out), CTX_EINVAL);
    ASSERT_RC(ctx_context_new_from(vars, NULL, 1, &out), CTX_EINVAL);
    ctx_var_t *with_null[2] = {vars[0], NULL};
    ASSERT_RC(ctx_context_new_from(with_null, values, 2, &out), CTX_EINVAL);

    ctx_test_alloc_install();
    long blocks = ctx_test_alloc_live_blocks();
    /* Listed twice: first with second, and a repeat late in a long list
     * (the first FROM_N are in the map when it is found). */
    ctx_var_t *twice[2] = {vars[3], vars[3]};
    ASSERT_RC(ctx_context_new_from(twice, values, 2, &out), CTX_EINVAL);
    vars[FROM_N] = vars[FROM_N / 2 + 1];
    val_init(&vals[FROM_N], FROM_N);
    values[FROM_N] = &vals[FROM_N];
    ASSERT_RC(ctx_context_new_from(vars, values, FROM_N + 1, &out), CTX_EINVAL);
    assert_ptr_equal(out, sentinel);
    assert_int_equal(atomic_load(&val_counters()->released), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), blocks);
    ctx_test_alloc_uninstall();

    /* The variables are still whole (the failed calls dropped the
     * references they took): a normal build works. */
    ASSERT_RC(ctx_context_new_from(vars, values, FROM_N, &out), 0);
    assert_int_equal(ctx_context_length(out), FROM_N);
    ctx_context_release(out);
    assert_int_equal(atomic_load(&val_counters()->released), FROM_N);
    for (int i = 0; i < FROM_N; i++)
        ctx_var_release(vars[i]);
}

/* ---- run ---- */

typedef struct run_probe {
    ctx_context_t *ctx;
    ctx_var_t *var;
    void *set_to;
    int calls;
    int saw_rc;
    void *saw;
    int entered;
    int release_rc;
} run_probe_t;

static void *probe_fn(void *arg) {
    run_probe_t *p = arg;
    p->calls++;
    p->entered = ctx_context_is_entered(p->ctx);
    /* The thread's state cannot go while run has a context entered. */
    p->release_rc = ctx_thread_release();
    p->saw = NULL;
    p->saw_rc = ctx_var_get(p->var, &p->saw);
    if (ctx_var_set(p->var, p->set_to, NULL) != 0)
        return NULL;
    return p;
}

static void test_run(void **state) {
    (void)state;
    static int outer, inside, later;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, &outer, NULL), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_copy_current(&ctx), 0);
    run_probe_t p = {ctx, var, &inside, 0, 0, NULL, 0, 0};
    void *result = NULL;
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, probe_fn, &p, &result), 0);
    assert_int_equal(p.calls, 1);
    assert_ptr_equal(result, &p);
    assert_int_equal(p.entered, 1);
    ASSERT_RC(p.release_rc, CTX_EBUSY);
    ASSERT_RC(p.saw_rc, CTX_VALUE);
    assert_ptr_equal(p.saw, &outer);
    /* The set landed in ctx and is invisible outside. */
    EXPECT_CTX_GET(ctx, var, 0, &inside);
    EXPECT_GET(var, CTX_VALUE, &outer);
    assert_int_equal(ctx_context_is_entered(ctx), 0);

    /* A second run sees what the first left; result may be NULL. */
    p.set_to = &later;
    ASSERT_RC(ctx_context_run(ctx, probe_fn, &p, NULL), 0);
    assert_ptr_equal(p.saw, &inside);
    EXPECT_CTX_GET(ctx, var, 0, &later);
    EXPECT_GET(var, CTX_VALUE, &outer);

    /* A new empty context: the variable has no value inside. */
    ctx_context_t *empty;
    ASSERT_RC(ctx_context_new(&empty), 0);
    p.ctx = empty;
    ASSERT_RC(ctx_context_run(empty, probe_fn, &p, NULL), 0);
    ASSERT_RC(p.saw_rc, CTX_ENOTFOUND);
    EXPECT_GET(var, CTX_VALUE, &outer);
    ctx_context_release(empty);

    ctx_context_release(ctx);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

typedef struct nested {
    ctx_context_t *self;
    ctx_context_t *other;
    ctx_var_t *var;
    int inner_calls;
    int same_rc;
    int other_rc;
    void *after_inner;
} nested_t;

static void *inner_fn(void *arg) {
    nested_t *n = arg;
    n->inner_calls++;
    static int deep;
    ctx_var_set(n->var, &deep, NULL);
    return NULL;
}

static void *outer_fn(void *arg) {
    nested_t *n = arg;
    static int mid;
    ctx_var_set(n->var, &mid, NULL);
    /* Running the context we are in: EENTERED (Python's RuntimeError), the
     * function is not called. */
    n->same_rc = ctx_context_run(n->self, inner_fn, n, NULL);
    /* Running another context nests. */
    n->other_rc = ctx_context_run(n->other, inner_fn, n, NULL);
    n->after_inner = NULL;
    ctx_var_get(n->var, &n->after_inner);
    return &mid;
}

static void test_run_nested(void **state) {
    (void)state;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_context_t *a, *b;
    ASSERT_RC(ctx_context_new(&a), 0);
    ASSERT_RC(ctx_context_new(&b), 0);
    nested_t n = {a, b, var, 0, 1, 1, NULL};
    void *mid = NULL;
    ASSERT_RC(ctx_context_run(a, outer_fn, &n, &mid), 0);
    ASSERT_RC(n.same_rc, CTX_EENTERED);
    ASSERT_RC(n.other_rc, 0);
    assert_int_equal(n.inner_calls, 1);
    assert_ptr_equal(n.after_inner, mid);
    EXPECT_CTX_GET(a, var, 0, mid);
    void *deep = NULL;
    ASSERT_RC(ctx_context_get(b, var, &deep), 0);
    assert_ptr_not_equal(deep, mid);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);

    /* Running a context entered with enter: EENTERED, fn not called. */
    ASSERT_RC(ctx_context_enter(b), 0);
    ASSERT_RC(ctx_context_run(b, inner_fn, &n, NULL), CTX_EENTERED);
    assert_int_equal(n.inner_calls, 1);
    ASSERT_RC(ctx_context_exit(b), 0);

    ctx_context_release(a);
    ctx_context_release(b);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

static void *enter_and_leave_it(void *arg) {
    ctx_context_t *other = arg;
    if (ctx_context_enter(other) != 0)
        return NULL;
    return other;
}

/* fn must exit what it entered; if not, run reports CTX_ENOTCURRENT and still
 * stores the result. */
static void test_run_unbalanced(void **state) {
    (void)state;
    ctx_context_t *a, *b;
    ASSERT_RC(ctx_context_new(&a), 0);
    ASSERT_RC(ctx_context_new(&b), 0);
    void *result = NULL;
    ASSERT_RC(ctx_context_run(a, enter_and_leave_it, b, &result),
              CTX_ENOTCURRENT);
    assert_ptr_equal(result, b);
    assert_int_equal(ctx_context_is_entered(b), 1);
    /* Clean up in order. */
    ASSERT_RC(ctx_thread_release(), CTX_EBUSY);
    ASSERT_RC(ctx_context_exit(b), 0);
    if (ctx_context_is_entered(a))
        ASSERT_RC(ctx_context_exit(a), 0);
    assert_int_equal(ctx_context_is_entered(a), 0);
    ctx_context_release(a);
    ctx_context_release(b);
    ASSERT_RC(ctx_thread_release(), 0);
}

typedef struct self_release {
    ctx_context_t *ctx;
    ctx_var_t *var;
    int get_rc;
    void *got;
} self_release_t;

static void *release_own_context(void *arg) {
    self_release_t *s = arg;
    static int x;
    ctx_context_release(s->ctx); /* the caller's only reference */
    ctx_var_set(s->var, &x, NULL);
    s->got = NULL;
    s->get_rc = ctx_var_get(s->var, &s->got);
    return &x;
}

/* "An entered context holds a reference of its own until it exits": that
 * includes a context entered by run, whose function may drop the caller's
 * reference (a callback that owns its context, as a pool task does). */
static void test_run_holds_reference(void **state) {
    (void)state;
    val_counters_reset();
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    self_release_t s = {ctx, var, -99, NULL};
    void *result = NULL;
    ASSERT_RC(ctx_context_run(ctx, release_own_context, &s, &result), 0);
    ASSERT_RC(s.get_rc, CTX_VALUE);
    assert_ptr_equal(s.got, result);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

static void *exit_own_run(void *arg) {
    ctx_context_t *self = arg;
    return (void *)(intptr_t)ctx_context_exit(self);
}

/* fn exits the context run entered: whatever the codes, no reference the
 * caller holds may be dropped, and the thread must end up usable. */
static void test_run_exit_inside(void **state) {
    (void)state;
    static int x;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_context_t *a;
    ASSERT_RC(ctx_context_new(&a), 0);
    void *inner = NULL;
    int rc = ctx_context_run(a, exit_own_run, a, &inner);
    assert_true(rc <= 0);
    if (ctx_context_is_entered(a))
        ASSERT_RC(ctx_context_exit(a), 0);
    /* The caller's reference is intact: a is still usable. */
    ASSERT_RC(ctx_context_set(a, var, &x), 0);
    EXPECT_CTX_GET(a, var, 0, &x);
    ASSERT_RC(ctx_context_enter(a), 0);
    EXPECT_GET(var, CTX_VALUE, &x);
    ASSERT_RC(ctx_context_exit(a), 0);
    ctx_context_release(a);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* fn drops the caller's reference, exits the context run entered (which
 * frees it), and enters a new context that the allocator puts at the same
 * address: run must see that the current context is not its entry
 * (CTX_ENOTCURRENT) and leave fn's context entered, as for any context fn
 * entered and did not exit. */
typedef struct replaced {
    ctx_context_t *old;
    ctx_context_t *fresh;
    ctx_var_t *var;
    int exit_rc;
} replaced_t;

static int replaced_marker;

static void *replace_own_context(void *arg) {
    replaced_t *r = arg;
    ctx_context_release(r->old);       /* the caller's reference */
    r->exit_rc = ctx_context_exit(r->old); /* and run's: freed */
    if (ctx_context_new(&r->fresh) == 0 && ctx_context_enter(r->fresh) == 0)
        ctx_var_set(r->var, &replaced_marker, NULL);
    return NULL;
}

static void test_run_detects_a_context_replaced_at_the_same_address(void **state) {
    (void)state;
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_install();
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, NULL, NULL), 0); /* in the thread's own context */
    ctx_test_alloc_reuse(1); /* a freed block is the next one of its size */
    replaced_t r = {NULL, NULL, var, -99};
    ASSERT_RC(ctx_context_new(&r.old), 0);
    ASSERT_RC(ctx_context_run(r.old, replace_own_context, &r, NULL), CTX_ENOTCURRENT);
    ASSERT_RC(r.exit_rc, 0);
    assert_non_null(r.fresh);
    assert_ptr_equal(r.fresh, r.old); /* the address was reused */
    /* fn's context stays entered and current. */
    assert_int_equal(ctx_context_is_entered(r.fresh), 1);
    EXPECT_GET(var, CTX_VALUE, &replaced_marker);
    ASSERT_RC(ctx_context_exit(r.fresh), 0);
    EXPECT_GET(var, CTX_VALUE, NULL);
    ctx_context_release(r.fresh);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

static void *exit_and_enter_again(void *arg) {
    ctx_context_t *ctx = arg;
    if (ctx_context_exit(ctx) == 0)
        ctx_context_enter(ctx);
    return NULL;
}

/* fn exits the context run entered and enters it again: the same object is
 * current, but through fn's entry, which run must leave alone. */
static void test_run_detects_a_context_entered_again(void **state) {
    (void)state;
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, exit_and_enter_again, ctx, NULL), CTX_ENOTCURRENT);
    assert_int_equal(ctx_context_is_entered(ctx), 1);
    ASSERT_RC(ctx_thread_release(), CTX_EBUSY);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    ctx_context_release(ctx);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- enter / exit ---- */

static void test_enter_exit(void **state) {
    (void)state;
    static int base_v, a_v, b_v;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, &base_v, NULL), 0);
    ctx_context_t *a, *b, *never;
    ASSERT_RC(ctx_context_new(&a), 0);
    ASSERT_RC(ctx_context_new(&b), 0);
    ASSERT_RC(ctx_context_new(&never), 0);

    ASSERT_RC(ctx_context_exit(never), CTX_ENOTENTERED);
    ASSERT_RC(ctx_context_enter(a), 0);
    assert_int_equal(ctx_context_is_entered(a), 1);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ASSERT_RC(ctx_var_set(var, &a_v, NULL), 0);
    /* Nested enter of the same context: EENTERED (not a hang). */
    ASSERT_RC(ctx_context_enter(a), CTX_EENTERED);
    EXPECT_GET(var, CTX_VALUE, &a_v);
    ASSERT_RC(ctx_context_enter(b), 0);
    ASSERT_RC(ctx_var_set(var, &b_v, NULL), 0);
    /* a is entered but not current. */
    ASSERT_RC(ctx_context_exit(a), CTX_ENOTCURRENT);
    ASSERT_RC(ctx_context_exit(never), CTX_ENOTENTERED);
    EXPECT_GET(var, CTX_VALUE, &b_v);
    assert_int_equal(ctx_context_is_entered(a), 1);
    /* Nothing can be released while contexts are entered. */
    ASSERT_RC(ctx_thread_release(), CTX_EBUSY);
    EXPECT_GET(var, CTX_VALUE, &b_v);
    ASSERT_RC(ctx_context_exit(b), 0);
    assert_int_equal(ctx_context_is_entered(b), 0);
    EXPECT_GET(var, CTX_VALUE, &a_v);
    ASSERT_RC(ctx_context_exit(b), CTX_ENOTENTERED);
    ASSERT_RC(ctx_context_exit(a), 0);
    EXPECT_GET(var, CTX_VALUE, &base_v);
    ASSERT_RC(ctx_context_exit(a), CTX_ENOTENTERED);
    EXPECT_CTX_GET(a, var, 0, &a_v);
    EXPECT_CTX_GET(b, var, 0, &b_v);

    /* A context can be entered again after it exits. */
    ASSERT_RC(ctx_context_enter(b), 0);
    EXPECT_GET(var, CTX_VALUE, &b_v);
    ASSERT_RC(ctx_context_exit(b), 0);

    ctx_context_release(a);
    ctx_context_release(b);
    ctx_context_release(never);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* Enter on a thread with no context yet: the base context is made, and the
 * state before the enter comes back at exit. */
static void test_enter_on_fresh_thread(void **state) {
    (void)state;
    static int x;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_context_t *a;
    ASSERT_RC(ctx_context_new(&a), 0);
    ASSERT_RC(ctx_context_set(a, var, &x), 0);
    ASSERT_RC(ctx_context_enter(a), 0);
    EXPECT_GET(var, CTX_VALUE, &x);
    ASSERT_RC(ctx_context_exit(a), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ctx_context_release(a);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* An entered context whose last outside reference is dropped lives until it
 * exits; its values go then. */
static void test_entered_context_outlives_release(void **state) {
    (void)state;
    val_counters_reset();
    val_t v;
    val_init(&v, 1);
    ctx_var_t *var = make_var("v", NULL, 0, ops_release());
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ctx_context_release(ctx);
    ASSERT_RC(ctx_var_set(var, &v, NULL), 0);
    EXPECT_GET(var, CTX_VALUE, &v);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    /* The copy still holds v. */
    assert_int_equal(val_released(&v), 0);
    ctx_context_release(copy);
    assert_int_equal(val_released(&v), 1);

    /* Without a copy: released at exit. */
    val_t w;
    val_init(&w, 2);
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ctx_context_release(ctx);
    ASSERT_RC(ctx_var_set(var, &w, NULL), 0);
    assert_int_equal(val_released(&w), 0);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    assert_int_equal(val_released(&w), 1);

    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- exact release timing ---- */

static void test_release_when_last_holder_dropped(void **state) {
    (void)state;
    val_counters_reset();
    val_t v, w, u;
    val_init(&v, 1);
    val_init(&w, 2);
    val_init(&u, 3);
    ctx_var_t *var = make_var("v", NULL, 0, ops_release());
    ctx_var_t *other = make_var("o", NULL, 0, ops_release());

    ASSERT_RC(ctx_var_set(var, &v, NULL), 0);
    ctx_context_t *c1, *c2, *c3, *c4;
    ASSERT_RC(ctx_context_copy_current(&c1), 0);
    ASSERT_RC(ctx_context_copy(c1, &c2), 0);
    ctx_var_t *list[] = {var};
    ASSERT_RC(ctx_context_copy_only(c2, list, 1, &c3), 0);
    ASSERT_RC(ctx_context_copy(c3, &c4), 0);
    /* Change the copies in other ways, so they no longer share a map. */
    ASSERT_RC(ctx_context_set(c2, other, &u), 0);
    ASSERT_RC(ctx_var_set(var, &w, NULL), 0);
    assert_int_equal(val_released(&v), 0);
    ctx_context_release(c1);
    assert_int_equal(val_released(&v), 0);
    ctx_context_release(c3);
    assert_int_equal(val_released(&v), 0);
    ctx_context_release(c2);
    assert_int_equal(val_released(&v), 0);
    assert_int_equal(val_released(&u), 1);
    ctx_context_release(c4);
    assert_int_equal(val_released(&v), 1);
    assert_int_equal(val_released(&w), 0);

    /* Tokens keep old values alive. */
    val_t t1v, t2v;
    val_init(&t1v, 4);
    val_init(&t2v, 5);
    ctx_token_t *t1, *t2;
    ASSERT_RC(ctx_var_set(var, &t1v, &t1), 0);
    assert_int_equal(val_released(&w), 0); /* t1's old value */
    ASSERT_RC(ctx_var_set(var, &t2v, &t2), 0);
    assert_int_equal(val_released(&t1v), 0); /* t2's old value */
    ctx_token_release(t1);
    assert_int_equal(val_released(&w), 1);
    assert_int_equal(val_released(&t1v), 0);
    ctx_token_release(t2);
    assert_int_equal(val_released(&t1v), 1);
    assert_int_equal(val_released(&t2v), 0);

    ctx_var_release(var);
    ctx_var_release(other);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&t2v), 1);
    assert_int_equal(atomic_load(&val_counters()->released), 5);
}

/* ---- mapping view and iteration ---- */

static void test_mapping_view(void **state) {
    (void)state;
    static int a, def;
    ctx_var_t *x = make_var("x", NULL, 0, NULL);
    ctx_var_t *y = make_var("y", &def, 1, NULL);
    ctx_var_t *z = make_var("z", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(x, &a, NULL), 0);
    ASSERT_RC(ctx_var_set(z, NULL, NULL), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_copy_current(&ctx), 0);
    assert_int_equal(ctx_context_length(ctx), 2);
    ASSERT_RC(ctx_context_contains(ctx, x), 1);
    ASSERT_RC(ctx_context_contains(ctx, y), 0);
    ASSERT_RC(ctx_context_contains(ctx, z), 1);
    EXPECT_CTX_GET(ctx, x, 0, &a);
    /* The default is not consulted by the mapping view. */
    EXPECT_CTX_GET(ctx, y, CTX_ENOTFOUND, NULL);
    EXPECT_CTX_GET(ctx, z, 0, NULL);
    ctx_context_release(ctx);
    ctx_var_release(x);
    ctx_var_release(y);
    ctx_var_release(z);
    ASSERT_RC(ctx_thread_release(), 0);
}

static void test_iteration(void **state) {
    (void)state;
    enum { N = 70 };
    static ctx_var_t *vars[N];
    static int vals[N];
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    for (int i = 0; i < N; i++) {
        vars[i] = make_var("v", NULL, 0, NULL);
        if (i % 3 != 2)
            ASSERT_RC(ctx_context_set(ctx, vars[i], &vals[i]), 0);
    }
    size_t expect = ctx_context_length(ctx);
    assert_int_equal(expect, N - N / 3);

    ctx_iter_t it;
    ASSERT_RC(ctx_iter_init(&it, ctx), 0);
    /* The snapshot is kept whatever happens to the context. */
    static int later;
    ASSERT_RC(ctx_context_set(ctx, vars[2], &later), 0);
    ASSERT_RC(ctx_context_set(ctx, vars[0], &later), 0);
    int seen[N] = {0};
    size_t count = 0;
    ctx_var_t *k;
    void *v;
    while (ctx_iter_next(&it, &k, &v)) {
        int idx = -1;
        for (int i = 0; i < N; i++)
            if (vars[i] == k)
                idx = i;
        assert_true(idx >= 0);
        assert_true(idx % 3 != 2);
        assert_ptr_equal(v, &vals[idx]);
        seen[idx]++;
        assert_true(count < N);
        count++;
    }
    assert_int_equal(count, expect);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], i % 3 != 2 ? 1 : 0);
    assert_int_equal(ctx_iter_next(&it, &k, &v), 0); /* stays at the end */
    ctx_iter_clear(&it);
    ctx_iter_clear(&it); /* safe twice */

    /* A new snapshot sees the changes; NULL out pointers are allowed. */
    ASSERT_RC(ctx_iter_init(&it, ctx), 0);
    count = 0;
    while (ctx_iter_next(&it, NULL, NULL))
        count++;
    ctx_iter_clear(&it);
    assert_int_equal(count, expect + 1);

    /* Order is stable for a given snapshot (two snapshots of one copy). */
    ctx_context_t *frozen;
    ASSERT_RC(ctx_context_copy(ctx, &frozen), 0);
    ctx_iter_t i1, i2;
    ASSERT_RC(ctx_iter_init(&i1, frozen), 0);
    ASSERT_RC(ctx_iter_init(&i2, frozen), 0);
    ctx_var_t *k1, *k2;
    void *v1;
    count = 0;
    for (;;) {
        int r1 = ctx_iter_next(&i1, &k1, &v1);
        int r2 = ctx_iter_next(&i2, &k2, NULL);
        assert_int_equal(r1, r2);
        if (!r1)
            break;
        assert_ptr_equal(k1, k2);
        (void)v1;
        count++;
    }
    assert_int_equal(count, expect + 1);
    ctx_iter_clear(&i1);
    ctx_iter_clear(&i2);

    /* The snapshot keeps its values alive after the context is dropped. */
    val_counters_reset();
    val_t held;
    val_init(&held, 5);
    ctx_var_t *rv = make_var("r", NULL, 0, ops_release());
    ctx_context_t *tmp;
    ASSERT_RC(ctx_context_new(&tmp), 0);
    ASSERT_RC(ctx_context_set(tmp, rv, &held), 0);
    ASSERT_RC(ctx_iter_init(&it, tmp), 0);
    ctx_context_release(tmp);
    assert_int_equal(val_released(&held), 0);
    assert_int_equal(ctx_iter_next(&it, &k, &v), 1);
    assert_ptr_equal(k, rv);
    assert_ptr_equal(v, &held);
    ctx_iter_clear(&it);
    assert_int_equal(val_released(&held), 1);
    ctx_var_release(rv);

    ctx_context_release(frozen);
    ctx_context_release(ctx);
    for (int i = 0; i < N; i++)
        ctx_var_release(vars[i]);
}

/* ---- formatter ---- */

/* The expected text, built from an iteration of `ctx`. */
static size_t expected_text(ctx_context_t *ctx, char *out, size_t cap) {
    ctx_iter_t it;
    ASSERT_RC(ctx_iter_init(&it, ctx), 0);
    size_t len = 0;
    out[0] = '\0';
    ctx_var_t *k;
    void *v;
    int first = 1;
    while (ctx_iter_next(&it, &k, &v)) {
        char item[64];
        /* Every variable here formats with val_format. */
        val_format(v, item, sizeof item, NULL);
        len += (size_t)snprintf(out + len, cap - len, "%s%s=%s",
                                first ? "" : " ", ctx_var_name(k), item);
        first = 0;
    }
    ctx_iter_clear(&it);
    return len;
}

static void test_format(void **state) {
    (void)state;
    val_counters_reset();
    val_t one, many;
    val_init(&one, 1);
    val_init(&many, -12345);
    ctx_var_t *a = make_var("alpha", NULL, 0, ops_format());
    ctx_var_t *b = make_var("b", NULL, 0, ops_format());
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, a, &one), 0);
    char buf[128];
    size_t len = 0;
    ASSERT_RC(ctx_context_format(ctx, buf, sizeof buf, &len), 0);
    assert_string_equal(buf, "alpha=1");
    assert_int_equal(len, 7);
    ASSERT_RC(ctx_context_set(ctx, b, &many), 0);
    ASSERT_RC(ctx_context_format(ctx, buf, sizeof buf, &len), 0);
    assert_true(strcmp(buf, "alpha=1 b=-12345") == 0 ||
                strcmp(buf, "b=-12345 alpha=1") == 0);
    char want[128];
    size_t want_len = expected_text(ctx, want, sizeof want);
    assert_string_equal(buf, want);
    assert_int_equal(len, want_len);
    assert_int_equal(len, 16);
    /* len may be NULL. */
    ASSERT_RC(ctx_context_format(ctx, buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, want);

    /* Truncation at every capacity: snprintf's rules. */
    for (size_t cap = 1; cap <= want_len; cap++) {
        char small[32];
        memset(small, 'Z', sizeof small);
        size_t need = 0;
        ASSERT_RC(ctx_context_format(ctx, small, cap, &need), CTX_ETRUNCATED);
        assert_int_equal(need, want_len);
        assert_int_equal(small[cap - 1], '\0');
        assert_int_equal(strlen(small), cap - 1);
        assert_memory_equal(small, want, cap - 1);
        assert_int_equal(small[cap], 'Z'); /* nothing written past cap */
    }
    char exact[17];
    ASSERT_RC(ctx_context_format(ctx, exact, sizeof exact, &len), 0);
    assert_string_equal(exact, want);

    /* A format error is returned as is. */
    atomic_store(&val_counters()->format_fail, CTX_ECALLBACK);
    ASSERT_RC(ctx_context_format(ctx, buf, sizeof buf, &len), CTX_ECALLBACK);
    atomic_store(&val_counters()->format_fail, 0);

    /* Without a format operation: the pointer is printed. */
    ctx_var_t *raw = make_var("raw", NULL, 0, NULL);
    ctx_context_t *rctx;
    ASSERT_RC(ctx_context_new(&rctx), 0);
    static int target;
    ASSERT_RC(ctx_context_set(rctx, raw, &target), 0);
    ASSERT_RC(ctx_context_format(rctx, buf, sizeof buf, &len), 0);
    assert_int_equal(strncmp(buf, "raw=", 4), 0);
    assert_true(strlen(buf) > 4);
    assert_int_equal(len, strlen(buf));
    char ptr[32];
    snprintf(ptr, sizeof ptr, "%p", (void *)&target);
    /* The pointer's digits appear in the text. */
    assert_non_null(strstr(buf, ptr + (strncmp(ptr, "0x", 2) == 0 ? 2 : 0)));

    /* format_current: the thread's context (empty when it has none). */
    ASSERT_RC(ctx_thread_release(), 0);
    len = 99;
    strcpy(buf, "junk");
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, &len), 0);
    assert_string_equal(buf, "");
    assert_int_equal(len, 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, &len), 0);
    assert_string_equal(buf, want);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    ASSERT_RC(ctx_var_set(a, &one, NULL), 0);
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, &len), 0);
    assert_string_equal(buf, "alpha=1");

    ctx_context_release(ctx);
    ctx_context_release(rctx);
    ctx_var_release(a);
    ctx_var_release(b);
    ctx_var_release(raw);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&one), 2);
    assert_int_equal(val_released(&many), 1);
}

/* The formatter and the iterator never allocate. */
static void test_view_never_allocates(void **state) {
    (void)state;
    static int x, y;
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_install();
    ctx_var_t *a = make_var("a", NULL, 0, NULL);
    ctx_var_t *b = make_var("b", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(a, &x, NULL), 0);
    ASSERT_RC(ctx_var_set(b, &y, NULL), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_copy_current(&ctx), 0);
    ctx_test_alloc_fail_all(1);
    long before = ctx_test_alloc_attempts();
    char buf[256];
    size_t len;
    ASSERT_RC(ctx_context_format(ctx, buf, sizeof buf, &len), 0);
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, &len), 0);
    ctx_iter_t it;
    ASSERT_RC(ctx_iter_init(&it, ctx), 0);
    int n = 0;
    while (ctx_iter_next(&it, NULL, NULL))
        n++;
    ctx_iter_clear(&it);
    assert_int_equal(n, 2);
    EXPECT_CTX_GET(ctx, a, 0, &x);
    ASSERT_RC(ctx_context_contains(ctx, b), 1);
    assert_int_equal(ctx_context_length(ctx), 2);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    assert_int_equal(ctx_test_alloc_attempts(), before);
    ctx_test_alloc_fail_all(0);
    ctx_context_release(ctx);
    ctx_var_release(a);
    ctx_var_release(b);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_new_is_empty),
        TEST(test_copy_current_is_a_snapshot),
        TEST(test_copy_is_constant_time),
        TEST(test_copy_only),
        TEST(test_context_set),
        TEST(test_new_from),
        TEST(test_new_from_errors),
        TEST(test_new_from_random_hashes),
        TEST(test_run),
        TEST(test_run_nested),
        TEST(test_run_holds_reference),
        TEST(test_run_unbalanced),
        TEST(test_run_exit_inside),
        TEST(test_run_detects_a_context_replaced_at_the_same_address),
        TEST(test_run_detects_a_context_entered_again),
        TEST(test_enter_exit),
        TEST(test_enter_on_fresh_thread),
        TEST(test_entered_context_outlives_release),
        TEST(test_release_when_last_holder_dropped),
        TEST(test_mapping_view),
        TEST(test_iteration),
        TEST(test_format),
        TEST(test_view_never_allocates),
    };
    return RUN_TESTS(tests);
}
