/* SPDX-License-Identifier: MIT */
/*
 * test_clone.c — the shallow-copy trap and its way out.
 *
 * Values are shared between copies of a context, not copied: a mutable value
 * changed through one copy is changed in every copy (Python behaves the same;
 * the first test asserts the trap).  ctx_var_get_for_write with a `clone`
 * operation gives a private value: cloned exactly once on the first write
 * after a copy, returned as is while private, CTX_ENOCLONE without a clone
 * operation, and a default is cloned rather than modified.
 */
#include "core_test.h"

/* A small dict-like mutable value. */
typedef struct dict {
    val_t base; /* first: a dict is a val_t to the shared operations */
    int keys[4];
    int values[4];
    int n;
} dict_t;

static void dict_put(dict_t *d, int key, int value) {
    for (int i = 0; i < d->n; i++)
        if (d->keys[i] == key) {
            d->values[i] = value;
            return;
        }
    d->keys[d->n] = key;
    d->values[d->n++] = value;
}

static int dict_get(const dict_t *d, int key) {
    for (int i = 0; i < d->n; i++)
        if (d->keys[i] == key)
            return d->values[i];
    return -1;
}

static atomic_int dict_clones;
static atomic_int dict_releases;

static int dict_clone(const void *value, void **out, void *user) {
    (void)user;
    int fail = atomic_load(&val_counters()->clone_fail);
    if (fail)
        return fail;
    dict_t *copy = malloc(sizeof *copy);
    if (!copy)
        return CTX_ENOMEM;
    *copy = *(const dict_t *)value;
    val_init(&copy->base, ((const dict_t *)value)->base.payload);
    copy->base.heap = 1;
    atomic_fetch_add(&dict_clones, 1);
    *out = copy;
    return 0;
}

static void dict_release(void *value, void *user) {
    atomic_fetch_add(&dict_releases, 1);
    val_release(value, user);
}

static const ctx_value_ops_t dict_ops = {.size = sizeof(ctx_value_ops_t),.release = dict_release,
                                         .clone = dict_clone};
static const ctx_value_ops_t dict_ops_noclone = {.size = sizeof(ctx_value_ops_t),.release = dict_release};

static void dict_init(dict_t *d) {
    memset(d, 0, sizeof *d);
    val_init(&d->base, 0);
}

static void reset_counts(void) {
    val_counters_reset();
    atomic_store(&dict_clones, 0);
    atomic_store(&dict_releases, 0);
}

static void test_shallow_copy_trap(void **state) {
    (void)state;
    reset_counts();
    dict_t d;
    dict_init(&d);
    dict_put(&d, 1, 10);
    ctx_var_t *var = make_var("dict", NULL, 0, &dict_ops);
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);

    void *p = NULL;
    ASSERT_RC(ctx_var_get(var, &p), CTX_VALUE);
    assert_ptr_equal(p, &d);
    dict_put(p, 1, 11); /* mutate through the current context */
    void *q = NULL;
    ASSERT_RC(ctx_context_get(copy, var, &q), 0);
    assert_ptr_equal(q, &d);
    /* The trap: the copy sees the change. */
    assert_int_equal(dict_get(q, 1), 11);
    assert_int_equal(atomic_load(&dict_clones), 0);

    ctx_context_release(copy);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&d.base), 1);
}

static void test_get_for_write_clones_once(void **state) {
    (void)state;
    reset_counts();
    dict_t d;
    dict_init(&d);
    dict_put(&d, 1, 10);
    ctx_var_t *var = make_var("dict", NULL, 0, &dict_ops);
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);

    void *w = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_non_null(w);
    assert_ptr_not_equal(w, &d);
    assert_int_equal(atomic_load(&dict_clones), 1);
    assert_int_equal(dict_get(w, 1), 10);
    dict_put(w, 1, 12);
    dict_put(w, 2, 20);
    /* The current context now holds the clone; the copy the original. */
    EXPECT_GET(var, CTX_VALUE, w);
    EXPECT_CTX_GET(copy, var, 0, &d);
    assert_int_equal(dict_get(&d, 1), 10);
    assert_int_equal(dict_get(&d, 2), -1);
    /* The original is still held by the copy. */
    assert_int_equal(val_released(&d.base), 0);

    /* Second write: same pointer, no clone. */
    void *w2 = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w2), 0);
    assert_ptr_equal(w2, w);
    assert_int_equal(atomic_load(&dict_clones), 1);

    /* A new copy makes it shared again: the next write clones again. */
    ctx_context_t *copy2;
    ASSERT_RC(ctx_context_copy_current(&copy2), 0);
    void *w3 = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w3), 0);
    assert_ptr_not_equal(w3, w);
    assert_int_equal(atomic_load(&dict_clones), 2);
    assert_int_equal(dict_get(w3, 2), 20);
    dict_put(w3, 2, 21);
    EXPECT_CTX_GET(copy2, var, 0, w);
    assert_int_equal(dict_get(w, 2), 20);

    ctx_context_release(copy);
    assert_int_equal(val_released(&d.base), 1);
    int before = atomic_load(&dict_releases);
    ctx_context_release(copy2); /* frees the first clone */
    assert_int_equal(atomic_load(&dict_releases), before + 1);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    /* d, the first clone, the second clone. */
    assert_int_equal(atomic_load(&dict_releases), 3);
}

/* A private value (no copy ever taken, or every copy dropped) is returned as
 * is, without cloning. */
static void test_get_for_write_private(void **state) {
    (void)state;
    reset_counts();
    dict_t d;
    dict_init(&d);
    ctx_var_t *var = make_var("dict", NULL, 0, &dict_ops);
    ctx_var_t *noclone = make_var("noclone", NULL, 0, &dict_ops_noclone);
    dict_t e;
    dict_init(&e);
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ASSERT_RC(ctx_var_set(noclone, &e, NULL), 0);
    void *w = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_equal(w, &d);
    ASSERT_RC(ctx_var_get_for_write(noclone, &w), 0);
    assert_ptr_equal(w, &e);
    assert_int_equal(atomic_load(&dict_clones), 0);

    /* Copy, then drop the copy: private again. */
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    ctx_context_release(copy);
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_equal(w, &d);
    ASSERT_RC(ctx_var_get_for_write(noclone, &w), 0);
    assert_ptr_equal(w, &e);
    assert_int_equal(atomic_load(&dict_clones), 0);

    /* Values set with ctx_context_set in a fresh context, then entered. */
    ctx_context_t *fresh;
    dict_t f;
    dict_init(&f);
    ASSERT_RC(ctx_context_new(&fresh), 0);
    ASSERT_RC(ctx_context_set(fresh, var, &f), 0);
    ASSERT_RC(ctx_context_enter(fresh), 0);
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_equal(w, &f);
    ASSERT_RC(ctx_context_exit(fresh), 0);
    assert_int_equal(atomic_load(&dict_clones), 0);
    ctx_context_release(fresh);
    assert_int_equal(val_released(&f.base), 1);

    ctx_var_release(var);
    ctx_var_release(noclone);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&d.base), 1);
    assert_int_equal(val_released(&e.base), 1);
}

static void test_get_for_write_noclone(void **state) {
    (void)state;
    reset_counts();
    dict_t d;
    dict_init(&d);
    ctx_var_t *var = make_var("noclone", NULL, 0, &dict_ops_noclone);
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    void *w = &w;
    ASSERT_RC(ctx_var_get_for_write(var, &w), CTX_ENOCLONE);
    /* Nothing changed. */
    EXPECT_GET(var, CTX_VALUE, &d);
    EXPECT_CTX_GET(copy, var, 0, &d);
    assert_int_equal(val_released(&d.base), 0);
    ctx_context_release(copy);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&d.base), 1);
}

static void test_get_for_write_default(void **state) {
    (void)state;
    reset_counts();
    dict_t def;
    dict_init(&def);
    dict_put(&def, 7, 70);
    ctx_var_t *var = make_var("withdef", &def, 1, &dict_ops);
    ctx_var_t *noclone = make_var("noclone", &def, 1, &dict_ops_noclone);
    ctx_var_t *none = make_var("none", NULL, 0, &dict_ops);

    void *w = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_not_equal(w, &def);
    assert_int_equal(atomic_load(&dict_clones), 1);
    assert_int_equal(dict_get(w, 7), 70);
    dict_put(w, 7, 71);
    assert_int_equal(dict_get(&def, 7), 70);
    /* The clone is now the context's value. */
    EXPECT_GET(var, CTX_VALUE, w);
    void *again = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &again), 0);
    assert_ptr_equal(again, w);
    assert_int_equal(atomic_load(&dict_clones), 1);
    /* Another context still sees the default. */
    ctx_context_t *other;
    ASSERT_RC(ctx_context_new(&other), 0);
    ASSERT_RC(ctx_context_enter(other), 0);
    EXPECT_GET(var, CTX_DEFAULT, &def);
    ASSERT_RC(ctx_context_exit(other), 0);
    ctx_context_release(other);

    /* No clone operation: the default is never handed out for writing. */
    void *x = &x;
    ASSERT_RC(ctx_var_get_for_write(noclone, &x), CTX_ENOCLONE);
    EXPECT_GET(noclone, CTX_DEFAULT, &def);
    /* No value, no default. */
    ASSERT_RC(ctx_var_get_for_write(none, &x), CTX_ENOTFOUND);
    EXPECT_GET(none, CTX_ENOTFOUND, NULL);
    assert_int_equal(atomic_load(&dict_clones), 1);

    ctx_var_release(var);
    ctx_var_release(noclone);
    ctx_var_release(none);
    ASSERT_RC(ctx_thread_release(), 0);
    /* The clone, then the default once per variable. */
    assert_int_equal(val_released(&def.base), 2);
    assert_int_equal(atomic_load(&dict_releases), 3);
}

static void test_get_for_write_clone_fails(void **state) {
    (void)state;
    reset_counts();
    dict_t d, def;
    dict_init(&d);
    dict_init(&def);
    ctx_var_t *var = make_var("dict", &def, 1, &dict_ops);
    void *w = &w;
    atomic_store(&val_counters()->clone_fail, CTX_EPARSE);
    /* The clone's own code comes back; nothing changed. */
    ASSERT_RC(ctx_var_get_for_write(var, &w), CTX_EPARSE);
    EXPECT_GET(var, CTX_DEFAULT, &def);
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    ASSERT_RC(ctx_var_get_for_write(var, &w), CTX_EPARSE);
    EXPECT_GET(var, CTX_VALUE, &d);
    EXPECT_CTX_GET(copy, var, 0, &d);
    assert_int_equal(atomic_load(&dict_releases), 0);
    atomic_store(&val_counters()->clone_fail, 0);
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_not_equal(w, &d);
    ctx_context_release(copy);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&d.base), 1);
    assert_int_equal(val_released(&def.base), 1);
}

/* A token refers to the value it would restore: after a reset restored a
 * value, a token still holding it makes it shared. */
static void test_get_for_write_token_shares(void **state) {
    (void)state;
    reset_counts();
    dict_t d, e;
    dict_init(&d);
    dict_init(&e);
    ctx_var_t *var = make_var("dict", NULL, 0, &dict_ops);
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(var, &e, &t), 0);
    /* e is private: the token holds d, not e. */
    void *w = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_equal(w, &e);
    assert_int_equal(atomic_load(&dict_clones), 0);
    ASSERT_RC(ctx_var_reset(var, t), 0);
    EXPECT_GET(var, CTX_VALUE, &d);
    /* d is in the context and in the token (its old value). */
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_not_equal(w, &d);
    assert_int_equal(atomic_load(&dict_clones), 1);
    void *old = NULL;
    ASSERT_RC(ctx_token_old_value(t, &old), 0);
    assert_ptr_equal(old, &d);
    ctx_token_release(t);
    assert_int_equal(val_released(&d.base), 1);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&e.base), 1);
}

/* copy_only shares values too. */
static void test_get_for_write_after_copy_only(void **state) {
    (void)state;
    reset_counts();
    dict_t d;
    dict_init(&d);
    dict_put(&d, 1, 1);
    ctx_var_t *var = make_var("dict", NULL, 0, &dict_ops);
    ctx_var_t *other = make_var("other", NULL, 0, NULL);
    static int o;
    ASSERT_RC(ctx_var_set(var, &d, NULL), 0);
    ASSERT_RC(ctx_var_set(other, &o, NULL), 0);
    ctx_context_t *cur, *only;
    ASSERT_RC(ctx_context_copy_current(&cur), 0);
    ctx_var_t *list[] = {var};
    ASSERT_RC(ctx_context_copy_only(cur, list, 1, &only), 0);
    ctx_context_release(cur);
    /* Only `only` shares d with the thread's context now. */
    ASSERT_RC(ctx_context_enter(only), 0);
    void *w = NULL;
    ASSERT_RC(ctx_var_get_for_write(var, &w), 0);
    assert_ptr_not_equal(w, &d);
    dict_put(w, 1, 2);
    ASSERT_RC(ctx_context_exit(only), 0);
    EXPECT_GET(var, CTX_VALUE, &d);
    assert_int_equal(dict_get(&d, 1), 1);
    assert_int_equal(atomic_load(&dict_clones), 1);
    ctx_context_release(only);
    ctx_var_release(var);
    ctx_var_release(other);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&d.base), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_shallow_copy_trap),
        TEST(test_get_for_write_clones_once),
        TEST(test_get_for_write_private),
        TEST(test_get_for_write_noclone),
        TEST(test_get_for_write_default),
        TEST(test_get_for_write_clone_fails),
        TEST(test_get_for_write_token_shares),
        TEST(test_get_for_write_after_copy_only),
    };
    return RUN_TESTS(tests);
}
