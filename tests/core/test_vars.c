/* SPDX-License-Identifier: MIT */
/*
 * test_vars.c — variables and tokens through the public API: get (value /
 * default / not found), set, reset and Python's token rules and errors, value
 * ownership (release exactly once per successful set), variable lifetime and
 * the default's release, the per-thread get cache, misuse (NULL arguments
 * change nothing) and the error strings.
 */
#include "core_test.h"

#include <limits.h>

/* ---- error vocabulary and version ---- */

static void test_error_strings(void **state) {
    (void)state;
    struct {
        int code;
        const char *name;
        const char *message;
    } table[] = {
#define ROW(name, value, message) {CTX_##name, #name, message},
        CTX_ERRNO_MAP(ROW)
#undef ROW
    };
    size_t n = sizeof table / sizeof table[0];
    assert_true(n >= 23);
    for (size_t i = 0; i < n; i++) {
        assert_true(table[i].code < 0);
        const char *msg = ctx_strerror(table[i].code);
        const char *name = ctx_error_name(table[i].code);
        assert_non_null(msg);
        assert_non_null(name);
        assert_string_equal(msg, table[i].message);
        assert_string_equal(name, table[i].name);
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(table[i].code, table[j].code);
            assert_string_not_equal(msg, ctx_strerror(table[j].code));
            assert_string_not_equal(name, ctx_error_name(table[j].code));
        }
    }
    int unknown[] = {-1000, 1000, 7, INT_MIN, INT_MAX, -29};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_string_equal(ctx_strerror(unknown[i]), "unknown error");
        assert_string_equal(ctx_error_name(unknown[i]), "UNKNOWN");
    }
}

static void test_version(void **state) {
    (void)state;
    assert_int_equal(ctx_version(), CTX_VERSION_HEX);
    assert_string_equal(ctx_version_string(), CTX_VERSION_STRING);
}

/* ---- creating variables ---- */

static void test_var_new_name_is_copied(void **state) {
    (void)state;
    char name[16];
    strcpy(name, "request_id");
    ctx_var_t *var = make_var(name, NULL, 0, NULL);
    strcpy(name, "XXXXXXXXXX");
    assert_string_equal(ctx_var_name(var), "request_id");

    /* NULL options: no default, no operations. */
    ctx_var_t *plain = NULL;
    ASSERT_RC(ctx_var_new("plain", NULL, &plain), 0);
    assert_non_null(plain);
    EXPECT_GET(plain, CTX_ENOTFOUND, NULL);
    assert_string_equal(ctx_var_name(plain), "plain");

    /* Names need not be unique: two variables, two identities. */
    ctx_var_t *twin = make_var("request_id", NULL, 0, NULL);
    assert_ptr_not_equal(twin, var);
    static int a;
    ASSERT_RC(ctx_var_set(var, &a, NULL), 0);
    EXPECT_GET(twin, CTX_ENOTFOUND, NULL);
    EXPECT_GET(var, CTX_VALUE, &a);

    /* Retain returns its argument; one release per reference. */
    assert_ptr_equal(ctx_var_retain(var), var);
    ctx_var_release(var);
    assert_string_equal(ctx_var_name(var), "request_id");

    ctx_var_release(NULL);
    ctx_var_release(plain);
    ctx_var_release(twin);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- get ---- */

static void test_get_three_ways(void **state) {
    (void)state;
    val_t d;
    val_init(&d, 42);
    ctx_var_t *nodef = make_var("nodef", NULL, 0, NULL);
    ctx_var_t *withdef = make_var("withdef", &d, 1, NULL);
    ctx_var_t *nulldef = make_var("nulldef", NULL, 1, NULL);
    /* has_default == 0: default_value is ignored. */
    ctx_var_t *ignored = make_var("ignored", &d, 0, NULL);

    EXPECT_GET(nodef, CTX_ENOTFOUND, NULL);
    EXPECT_GET(withdef, CTX_DEFAULT, &d);
    EXPECT_GET(nulldef, CTX_DEFAULT, NULL);
    EXPECT_GET(ignored, CTX_ENOTFOUND, NULL);
    assert_int_equal(CTX_VALUE, 0);
    assert_int_equal(CTX_DEFAULT, 1);

    /* A stored NULL is a value, not "unset". */
    ASSERT_RC(ctx_var_set(nodef, NULL, NULL), 0);
    EXPECT_GET(nodef, CTX_VALUE, NULL);
    ASSERT_RC(ctx_var_set(withdef, NULL, NULL), 0);
    EXPECT_GET(withdef, CTX_VALUE, NULL);
    val_t x;
    val_init(&x, 1);
    ASSERT_RC(ctx_var_set(nulldef, &x, NULL), 0);
    EXPECT_GET(nulldef, CTX_VALUE, &x);
    /* Others untouched. */
    EXPECT_GET(ignored, CTX_ENOTFOUND, NULL);

    ASSERT_RC(ctx_thread_release(), 0);
    /* A fresh thread context: back to defaults. */
    EXPECT_GET(nodef, CTX_ENOTFOUND, NULL);
    EXPECT_GET(withdef, CTX_DEFAULT, &d);
    EXPECT_GET(nulldef, CTX_DEFAULT, NULL);

    ctx_var_release(nodef);
    ctx_var_release(withdef);
    ctx_var_release(nulldef);
    ctx_var_release(ignored);
    ASSERT_RC(ctx_thread_release(), 0);
}

static void test_set_overwrite_releases_old(void **state) {
    (void)state;
    val_counters_reset();
    val_t a, b, c;
    val_init(&a, 1);
    val_init(&b, 2);
    val_init(&c, 3);
    ctx_var_t *var = make_var("v", NULL, 0, ops_release());

    ASSERT_RC(ctx_var_set(var, &a, NULL), 0);
    EXPECT_GET(var, CTX_VALUE, &a);
    assert_int_equal(val_released(&a), 0);
    /* No copy, no token: the old value has no holder left. */
    ASSERT_RC(ctx_var_set(var, &b, NULL), 0);
    EXPECT_GET(var, CTX_VALUE, &b);
    assert_int_equal(val_released(&a), 1);
    assert_int_equal(val_released(&b), 0);
    /* The same value set again: a second share, released separately. */
    ASSERT_RC(ctx_var_set(var, &b, NULL), 0);
    assert_int_equal(val_released(&b), 1);
    EXPECT_GET(var, CTX_VALUE, &b);
    ASSERT_RC(ctx_var_set(var, &c, NULL), 0);
    assert_int_equal(val_released(&b), 2);
    /* Setting NULL releases the old value (and NULL is a value). */
    ASSERT_RC(ctx_var_set(var, NULL, NULL), 0);
    assert_int_equal(val_released(&c), 1);
    EXPECT_GET(var, CTX_VALUE, NULL);

    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&a), 1);
    assert_int_equal(val_released(&b), 2);
    assert_int_equal(val_released(&c), 1);
    /* Exactly one release per successful set (5, one of them of NULL). */
    assert_int_equal(atomic_load(&val_counters()->released) -
                         atomic_load(&val_counters()->null_released),
                     4);
}

/* ---- set / reset / tokens ---- */

static void test_reset_restores(void **state) {
    (void)state;
    val_counters_reset();
    val_t a, b, d;
    val_init(&a, 1);
    val_init(&b, 2);
    val_init(&d, 9);
    ctx_var_t *var = make_var("v", &d, 1, ops_release());
    ctx_token_t *t1 = NULL, *t2 = NULL;

    EXPECT_GET(var, CTX_DEFAULT, &d);
    ASSERT_RC(ctx_var_set(var, &a, &t1), 0);
    assert_non_null(t1);
    ASSERT_RC(ctx_var_set(var, &b, &t2), 0);
    assert_non_null(t2);
    assert_ptr_not_equal(t1, t2);
    EXPECT_GET(var, CTX_VALUE, &b);

    /* Token accessors: var, old value (Token.MISSING), used. */
    assert_ptr_equal(ctx_token_var(t1), var);
    void *old = &old;
    ASSERT_RC(ctx_token_old_value(t1, &old), CTX_ENOTFOUND);
    ASSERT_RC(ctx_token_old_value(t2, &old), 0);
    assert_ptr_equal(old, &a);
    assert_int_equal(ctx_token_used(t1), 0);
    assert_int_equal(ctx_token_used(t2), 0);

    /* a was replaced by b in the context, but t2 (its old value) keeps it. */
    assert_int_equal(val_released(&a), 0);

    ASSERT_RC(ctx_var_reset(var, t2), 0);
    EXPECT_GET(var, CTX_VALUE, &a);
    assert_int_equal(ctx_token_used(t2), 1);
    assert_int_equal(ctx_token_used(t1), 0);
    /* b had no holder but the context. */
    assert_int_equal(val_released(&b), 1);
    /* Old value still readable after use (Python's Token.old_value). */
    ASSERT_RC(ctx_token_old_value(t2, &old), 0);
    assert_ptr_equal(old, &a);

    ASSERT_RC(ctx_var_reset(var, t1), 0);
    /* Back to "no value": the default shows through again. */
    EXPECT_GET(var, CTX_DEFAULT, &d);
    /* t2 still refers to a. */
    assert_int_equal(val_released(&a), 0);
    ctx_token_release(t2);
    assert_int_equal(val_released(&a), 1);
    ctx_token_release(t1);
    ctx_token_release(NULL);

    assert_int_equal(val_released(&d), 0);
    ctx_var_release(var);
    assert_int_equal(val_released(&d), 1);
    assert_int_equal(val_released(&a), 1);
    assert_int_equal(val_released(&b), 1);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* Python: reset restores token.old_value whatever happened in between. */
static void test_reset_out_of_order(void **state) {
    (void)state;
    static int one = 1, two = 2, three = 3;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_token_t *t1, *t2, *t3;
    ASSERT_RC(ctx_var_set(var, &one, &t1), 0);
    ASSERT_RC(ctx_var_set(var, &two, &t2), 0);
    ASSERT_RC(ctx_var_set(var, &three, &t3), 0);
    ASSERT_RC(ctx_var_reset(var, t1), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ASSERT_RC(ctx_var_reset(var, t3), 0);
    EXPECT_GET(var, CTX_VALUE, &two);
    ASSERT_RC(ctx_var_reset(var, t2), 0);
    EXPECT_GET(var, CTX_VALUE, &one);
    ctx_token_release(t1);
    ctx_token_release(t2);
    ctx_token_release(t3);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

static void *set_with_token(void *arg) {
    void **io = arg; /* io[0] var, io[1] value, io[2] token out */
    if (ctx_var_set(io[0], io[1], (ctx_token_t **)&io[2]) != 0)
        return NULL;
    return io[2];
}

static void *reset_token(void *arg) {
    void **io = arg; /* io[0] var, io[1] token */
    return (void *)(intptr_t)ctx_var_reset(io[0], io[1]);
}

static void test_reset_errors(void **state) {
    (void)state;
    static int one = 1, two = 2;
    ctx_var_t *a = make_var("a", NULL, 0, NULL);
    ctx_var_t *b = make_var("b", NULL, 0, NULL);
    ctx_token_t *ta, *tb;
    ASSERT_RC(ctx_var_set(a, &one, &ta), 0);
    ASSERT_RC(ctx_var_set(b, &two, &tb), 0);

    /* Another variable's token: ETOKENVAR, nothing changes, the token still
     * works with its own variable. */
    ASSERT_RC(ctx_var_reset(b, ta), CTX_ETOKENVAR);
    assert_int_equal(ctx_token_used(ta), 0);
    EXPECT_GET(a, CTX_VALUE, &one);
    EXPECT_GET(b, CTX_VALUE, &two);

    ASSERT_RC(ctx_var_reset(a, ta), 0);
    EXPECT_GET(a, CTX_ENOTFOUND, NULL);
    /* Second use: ETOKENUSED (Python's RuntimeError), nothing changes. */
    ASSERT_RC(ctx_var_set(a, &two, NULL), 0);
    ASSERT_RC(ctx_var_reset(a, ta), CTX_ETOKENUSED);
    EXPECT_GET(a, CTX_VALUE, &two);
    assert_int_equal(ctx_token_used(ta), 1);
    /* Python checks "used" before "other variable". */
    ASSERT_RC(ctx_var_reset(b, ta), CTX_ETOKENUSED);

    /* A token made inside ctx.run, reset outside: ETOKENCTX. */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    void *io[3] = {a, &one, NULL};
    void *result = NULL;
    ASSERT_RC(ctx_context_run(ctx, set_with_token, io, &result), 0);
    ctx_token_t *inner = result;
    assert_non_null(inner);
    EXPECT_CTX_GET(ctx, a, 0, &one);
    ASSERT_RC(ctx_var_reset(a, inner), CTX_ETOKENCTX);
    assert_int_equal(ctx_token_used(inner), 0);
    EXPECT_GET(a, CTX_VALUE, &two);
    EXPECT_CTX_GET(ctx, a, 0, &one);
    /* Python checks "other variable" before "other context". */
    ASSERT_RC(ctx_var_reset(b, inner), CTX_ETOKENVAR);
    /* ... and works in a later run of the same context. */
    void *io2[2] = {a, inner};
    ASSERT_RC(ctx_context_run(ctx, reset_token, io2, &result), 0);
    assert_int_equal((int)(intptr_t)result, 0);
    EXPECT_CTX_GET(ctx, a, CTX_ENOTFOUND, NULL);
    assert_int_equal(ctx_token_used(inner), 1);

    /* A token made outside, reset inside a run of a copy: ETOKENCTX (the copy
     * is another context, even with the same contents). */
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    io2[0] = b;
    io2[1] = tb;
    ASSERT_RC(ctx_context_run(copy, reset_token, io2, &result), 0);
    assert_int_equal((int)(intptr_t)result, CTX_ETOKENCTX);
    EXPECT_CTX_GET(copy, b, 0, &two);
    assert_int_equal(ctx_token_used(tb), 0);

    /* The thread's context released and remade: a different context. */
    ASSERT_RC(ctx_thread_release(), 0);
    ASSERT_RC(ctx_var_set(b, &one, NULL), 0);
    ASSERT_RC(ctx_var_reset(b, tb), CTX_ETOKENCTX);
    EXPECT_GET(b, CTX_VALUE, &one);
    assert_int_equal(ctx_token_used(tb), 0);

    ctx_token_release(ta);
    ctx_token_release(tb);
    ctx_token_release(inner);
    ctx_context_release(ctx);
    ctx_context_release(copy);
    ctx_var_release(a);
    ctx_var_release(b);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* A token made with a NULL old value: old value is NULL (not MISSING). */
static void test_token_old_value_null(void **state) {
    (void)state;
    static int one = 1;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_token_t *t0, *t1;
    ASSERT_RC(ctx_var_set(var, NULL, &t0), 0);
    ASSERT_RC(ctx_var_set(var, &one, &t1), 0);
    void *old = &old;
    ASSERT_RC(ctx_token_old_value(t1, &old), 0);
    assert_null(old);
    ASSERT_RC(ctx_var_reset(var, t1), 0);
    EXPECT_GET(var, CTX_VALUE, NULL);
    ASSERT_RC(ctx_var_reset(var, t0), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ctx_token_release(t0);
    ctx_token_release(t1);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- lifetimes: variables, defaults, tokens ---- */

static void test_var_lifetime_and_default_release(void **state) {
    (void)state;
    val_counters_reset();
    val_t d1, d2, v, w;
    val_init(&d1, 1);
    val_init(&d2, 2);
    val_init(&v, 3);
    val_init(&w, 4);

    /* No value anywhere: the default goes with the last reference. */
    ctx_var_t *lone = make_var("lone", &d1, 1, ops_release());
    ctx_var_retain(lone);
    ctx_var_release(lone);
    assert_int_equal(val_released(&d1), 0);
    ctx_var_release(lone);
    assert_int_equal(val_released(&d1), 1);

    /* A context holding a value keeps the variable (and its default) alive. */
    ctx_var_t *var = make_var("var", &d2, 1, ops_release());
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &v), 0);
    ASSERT_RC(ctx_var_set(var, &w, NULL), 0);
    ctx_var_release(var); /* the caller's reference */
    assert_int_equal(val_released(&d2), 0);
    /* Still usable through the contexts that hold it. */
    EXPECT_CTX_GET(ctx, var, 0, &v);
    EXPECT_GET(var, CTX_VALUE, &w);
    assert_string_equal(ctx_var_name(var), "var");
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&w), 1);
    assert_int_equal(val_released(&d2), 0);
    ctx_context_release(ctx);
    assert_int_equal(val_released(&v), 1);
    assert_int_equal(val_released(&d2), 1);
    assert_int_equal(atomic_load(&val_counters()->released), 4);
}

static void test_token_keeps_var_alive(void **state) {
    (void)state;
    val_counters_reset();
    val_t d, v;
    val_init(&d, 1);
    val_init(&v, 2);
    ctx_var_t *var = make_var("tokened", &d, 1, ops_release());
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(var, &v, &t), 0);
    ASSERT_RC(ctx_var_reset(var, t), 0);
    assert_int_equal(val_released(&v), 1);
    ctx_var_release(var);
    /* The token still names the variable. */
    assert_ptr_equal(ctx_token_var(t), var);
    assert_string_equal(ctx_var_name(ctx_token_var(t)), "tokened");
    assert_int_equal(val_released(&d), 0);
    ctx_token_release(t);
    assert_int_equal(val_released(&d), 1);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- misuse ---- */

static void *never_called(void *arg) {
    *(int *)arg += 1;
    return NULL;
}

static void test_einval_changes_nothing(void **state) {
    (void)state;
    val_counters_reset();
    val_t a, b;
    val_init(&a, 1);
    val_init(&b, 2);
    ctx_var_t *var = make_var("v", NULL, 0, ops_clone());
    ctx_token_t *tok;
    ASSERT_RC(ctx_var_set(var, &a, &tok), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_copy_current(&ctx), 0);
    void *out = &out;
    ctx_var_t *vout = NULL;
    ctx_context_t *cout = NULL;
    ctx_iter_t it;
    char buf[32];
    size_t len;
    int calls = 0;

    ASSERT_RC(ctx_var_new(NULL, NULL, &vout), CTX_EINVAL);
    ASSERT_RC(ctx_var_new("x", NULL, NULL), CTX_EINVAL);
    assert_null(vout);
    ASSERT_RC(ctx_var_get(NULL, &out), CTX_EINVAL);
    ASSERT_RC(ctx_var_get(var, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_set(NULL, &b, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_reset(NULL, tok), CTX_EINVAL);
    ASSERT_RC(ctx_var_reset(var, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_get_for_write(NULL, &out), CTX_EINVAL);
    ASSERT_RC(ctx_var_get_for_write(var, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_token_old_value(NULL, &out), CTX_EINVAL);
    ASSERT_RC(ctx_token_old_value(tok, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_new(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_copy_current(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_copy(NULL, &cout), CTX_EINVAL);
    ASSERT_RC(ctx_context_copy(ctx, NULL), CTX_EINVAL);
    ctx_var_t *list[2] = {var, NULL};
    ASSERT_RC(ctx_context_copy_only(NULL, list, 1, &cout), CTX_EINVAL);
    ASSERT_RC(ctx_context_copy_only(ctx, NULL, 1, &cout), CTX_EINVAL);
    ASSERT_RC(ctx_context_copy_only(ctx, list, 1, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_copy_only(ctx, list, 2, &cout), CTX_EINVAL);
    assert_null(cout);
    ASSERT_RC(ctx_context_set(NULL, var, &b), CTX_EINVAL);
    ASSERT_RC(ctx_context_set(ctx, NULL, &b), CTX_EINVAL);
    ASSERT_RC(ctx_context_enter(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_exit(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_run(NULL, never_called, &calls, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_run(ctx, NULL, &calls, NULL), CTX_EINVAL);
    assert_int_equal(calls, 0);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    ASSERT_RC(ctx_context_get(NULL, var, &out), CTX_EINVAL);
    ASSERT_RC(ctx_context_get(ctx, NULL, &out), CTX_EINVAL);
    ASSERT_RC(ctx_context_get(ctx, var, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_contains(NULL, var), CTX_EINVAL);
    ASSERT_RC(ctx_context_contains(ctx, NULL), CTX_EINVAL);
    assert_int_equal(ctx_context_length(NULL), 0);
    ASSERT_RC(ctx_iter_init(NULL, ctx), CTX_EINVAL);
    ASSERT_RC(ctx_iter_init(&it, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_format(NULL, buf, sizeof buf, &len), CTX_EINVAL);
    ASSERT_RC(ctx_context_format(ctx, NULL, sizeof buf, &len), CTX_EINVAL);
    ASSERT_RC(ctx_context_format_current(NULL, sizeof buf, &len), CTX_EINVAL);
    assert_ptr_equal(out, &out);
    ctx_allocator_t half = {sizeof(ctx_allocator_t), NULL, NULL, NULL};
    ASSERT_RC(ctx_set_allocator(&half), CTX_EINVAL);

    /* Nothing changed: values, token, context, ownership. */
    EXPECT_GET(var, CTX_VALUE, &a);
    EXPECT_CTX_GET(ctx, var, 0, &a);
    assert_int_equal(ctx_context_length(ctx), 1);
    assert_int_equal(ctx_token_used(tok), 0);
    assert_int_equal(val_released(&b), 0);
    assert_int_equal(val_released(&a), 0);
    assert_int_equal(atomic_load(&val_counters()->clone_calls), 0);
    /* The library still allocates fine (the allocator was not replaced). */
    ASSERT_RC(ctx_var_set(var, &b, NULL), 0);
    ASSERT_RC(ctx_var_reset(var, tok), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    assert_int_equal(val_released(&b), 1);

    ctx_token_release(tok);
    ctx_context_release(ctx);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(val_released(&a), 1);
}

/* ---- the per-thread get cache must never serve a stale value ---- */

static void *get_in(void *arg) {
    void *out = NULL;
    int rc = ctx_var_get(arg, &out);
    return rc == CTX_VALUE ? out : (void *)(intptr_t)-1;
}

static void test_get_cache_invalidation(void **state) {
    (void)state;
    static int x1, x2, x3, x4;
    ctx_var_t *var = make_var("cached", NULL, 0, NULL);
    ctx_var_t *other = make_var("other", NULL, 0, NULL);

    /* set / reset after a cached get. */
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(var, &x1, NULL), 0);
    EXPECT_GET(var, CTX_VALUE, &x1);
    EXPECT_GET(var, CTX_VALUE, &x1);
    ASSERT_RC(ctx_var_set(var, &x2, &t), 0);
    EXPECT_GET(var, CTX_VALUE, &x2);
    ASSERT_RC(ctx_var_set(other, &x3, NULL), 0);
    EXPECT_GET(var, CTX_VALUE, &x2);
    ASSERT_RC(ctx_var_reset(var, t), 0);
    EXPECT_GET(var, CTX_VALUE, &x1);
    ctx_token_release(t);

    /* Switching contexts: run, enter/exit. */
    ctx_context_t *c1;
    ASSERT_RC(ctx_context_new(&c1), 0);
    ASSERT_RC(ctx_context_set(c1, var, &x3), 0);
    void *r = NULL;
    ASSERT_RC(ctx_context_run(c1, get_in, var, &r), 0);
    assert_ptr_equal(r, &x3);
    EXPECT_GET(var, CTX_VALUE, &x1);
    ASSERT_RC(ctx_context_enter(c1), 0);
    EXPECT_GET(var, CTX_VALUE, &x3);
    ASSERT_RC(ctx_context_exit(c1), 0);
    EXPECT_GET(var, CTX_VALUE, &x1);
    /* ctx_context_set on a context that is not current, then enter it. */
    ASSERT_RC(ctx_context_set(c1, var, &x4), 0);
    ASSERT_RC(ctx_context_enter(c1), 0);
    EXPECT_GET(var, CTX_VALUE, &x4);
    ASSERT_RC(ctx_context_exit(c1), 0);

    /* A context freed and another made (likely at the same address). */
    ctx_context_release(c1);
    for (int i = 0; i < 4; i++) {
        ctx_context_t *c2;
        ASSERT_RC(ctx_context_new(&c2), 0);
        ASSERT_RC(ctx_context_enter(c2), 0);
        EXPECT_GET(var, CTX_ENOTFOUND, NULL);
        ASSERT_RC(ctx_var_set(var, &x2, NULL), 0);
        EXPECT_GET(var, CTX_VALUE, &x2);
        ASSERT_RC(ctx_context_exit(c2), 0);
        ctx_context_release(c2);
        EXPECT_GET(var, CTX_VALUE, &x1);
    }

    /* A variable freed and another made (likely at the same address). */
    for (int i = 0; i < 4; i++) {
        ctx_var_t *tmp = make_var("tmp", NULL, 0, NULL);
        ctx_context_t *c3;
        ASSERT_RC(ctx_context_new(&c3), 0);
        ASSERT_RC(ctx_context_enter(c3), 0);
        ASSERT_RC(ctx_var_set(tmp, &x3, NULL), 0);
        EXPECT_GET(tmp, CTX_VALUE, &x3);
        ASSERT_RC(ctx_context_exit(c3), 0);
        ctx_context_release(c3);
        ctx_var_release(tmp); /* dies: no context holds it */
        ctx_var_t *fresh = make_var("fresh", &x4, 1, NULL);
        EXPECT_GET(fresh, CTX_DEFAULT, &x4);
        ctx_var_t *fresh2 = make_var("fresh2", NULL, 0, NULL);
        EXPECT_GET(fresh2, CTX_ENOTFOUND, NULL);
        ctx_var_release(fresh);
        ctx_var_release(fresh2);
    }

    /* The thread's context released. */
    EXPECT_GET(var, CTX_VALUE, &x1);
    ASSERT_RC(ctx_thread_release(), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);

    ctx_var_release(var);
    ctx_var_release(other);
    ASSERT_RC(ctx_thread_release(), 0);
}

static void test_get_never_allocates(void **state) {
    (void)state;
    static int x;
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_install();
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_var_t *def = make_var("d", &x, 1, NULL);

    /* Without any thread state yet. */
    ctx_test_alloc_fail_all(1);
    long before = ctx_test_alloc_attempts();
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    EXPECT_GET(def, CTX_DEFAULT, &x);
    assert_int_equal(ctx_test_alloc_attempts(), before);
    ctx_test_alloc_fail_all(0);

    ASSERT_RC(ctx_var_set(var, &x, NULL), 0);
    ctx_test_alloc_fail_all(1);
    before = ctx_test_alloc_attempts();
    for (int i = 0; i < 1000; i++) {
        EXPECT_GET(var, CTX_VALUE, &x);
        EXPECT_GET(def, CTX_DEFAULT, &x);
    }
    assert_int_equal(ctx_test_alloc_attempts(), before);
    ctx_test_alloc_fail_all(0);

    ctx_var_release(var);
    ctx_var_release(def);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* Many variables in one context: values stay distinct, resets in any order. */
static void test_many_vars(void **state) {
    (void)state;
    enum { N = 300 };
    static ctx_var_t *vars[N];
    static ctx_token_t *toks[N];
    static val_t vals[N];
    val_counters_reset();
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", i);
        val_init(&vals[i], i);
        vars[i] = make_var(name, NULL, 0, ops_release());
        ASSERT_RC(ctx_var_set(vars[i], &vals[i], &toks[i]), 0);
        for (int j = 0; j <= i; j += 1 + i / 10)
            EXPECT_GET(vars[j], CTX_VALUE, &vals[j]);
    }
    ctx_context_t *snap;
    ASSERT_RC(ctx_context_copy_current(&snap), 0);
    assert_int_equal(ctx_context_length(snap), N);
    /* Reset the even ones, then the odd ones, in reverse. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = N - 1 - pass; i >= 0; i -= 2) {
            ASSERT_RC(ctx_var_reset(vars[i], toks[i]), 0);
            EXPECT_GET(vars[i], CTX_ENOTFOUND, NULL);
            if (i > 0)
                EXPECT_GET(vars[i - 1], pass == 0 ? CTX_VALUE : CTX_ENOTFOUND,
                           &vals[i - 1]);
        }
    for (int i = 0; i < N; i++) {
        EXPECT_GET(vars[i], CTX_ENOTFOUND, NULL);
        EXPECT_CTX_GET(snap, vars[i], 0, &vals[i]);
        assert_int_equal(val_released(&vals[i]), 0);
    }
    ctx_context_release(snap);
    for (int i = 0; i < N; i++) {
        assert_int_equal(val_released(&vals[i]), 1);
        ctx_token_release(toks[i]);
        ctx_var_release(vars[i]);
    }
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ctx_thread_release with no state, and twice. */
static void test_thread_release_idempotent(void **state) {
    (void)state;
    ASSERT_RC(ctx_thread_release(), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    static int x;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, &x, NULL), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* Python's var.get(default): the call's fallback beats the variable's own
 * default, a set value beats both, and lookup failure never surfaces. */
static void test_get_or(void **state) {
    (void)state;
    ctx_var_t *plain, *with_default;
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = (void *)100, .has_default = 1};
    assert_int_equal(ctx_var_new("plain", NULL, &plain), 0);
    assert_int_equal(ctx_var_new("with_default", &o, &with_default), 0);
    void *out = NULL;
    assert_int_equal(ctx_var_get_or(plain, (void *)7, &out), CTX_DEFAULT);
    assert_ptr_equal(out, (void *)7);
    assert_int_equal(ctx_var_get_or(with_default, (void *)7, &out), CTX_DEFAULT);
    assert_ptr_equal(out, (void *)7); /* the call's fallback, not 100 */
    assert_int_equal(ctx_var_set(with_default, NULL, NULL), 0);
    out = (void *)1;
    assert_int_equal(ctx_var_get_or(with_default, (void *)7, &out), CTX_VALUE);
    assert_null(out); /* a stored NULL is a value */
    assert_int_equal(ctx_var_get_or(NULL, (void *)7, &out), CTX_EINVAL);
    assert_int_equal(ctx_var_get_or(plain, (void *)7, NULL), CTX_EINVAL);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(plain);
    ctx_var_release(with_default);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_error_strings),
        TEST(test_version),
        TEST(test_var_new_name_is_copied),
        TEST(test_get_three_ways),
        TEST(test_set_overwrite_releases_old),
        TEST(test_reset_restores),
        TEST(test_reset_out_of_order),
        TEST(test_reset_errors),
        TEST(test_token_old_value_null),
        TEST(test_var_lifetime_and_default_release),
        TEST(test_token_keeps_var_alive),
        TEST(test_einval_changes_nothing),
        TEST(test_get_cache_invalidation),
        TEST(test_get_never_allocates),
        TEST(test_many_vars),
        TEST(test_thread_release_idempotent),
        TEST(test_get_or),
    };
    return RUN_TESTS(tests);
}
