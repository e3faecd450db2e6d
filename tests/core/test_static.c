/* SPDX-License-Identifier: MIT */
/*
 * test_static.c — CTX_VAR_STATIC variables (ctxvar.h): what holds their
 * values does not hold them, and nothing else changes.
 *
 * What a wrong hold would show: a box or token that took a reference and
 * never gave it back keeps the variable alive after its owner's last
 * release, so the default is never released; one that gave back a
 * reference it never took ends the variable early, so the default is
 * released while the owner still holds it.  Every test here watches the
 * default's release for that (in every build; ASan and valgrind add the use
 * after free of the second case).  The misuse itself (releasing a static
 * variable that still has holders) is a death test in test_debug.c.
 */
#include "core_test.h"

#include <pthread.h>

static ctx_var_t *make_static(const char *name, val_t *def) {
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.default_value = def;
    o.has_default = def != NULL;
    o.ops = ops_release();
    o.flags = CTX_VAR_STATIC;
    ctx_var_t *var = NULL;
    ASSERT_RC(ctx_var_new(name, &o, &var), 0);
    return var;
}

/* ---- the same script on a counted and a static variable ---- */

typedef struct trace {
    int released[8]; /* released counters of the script's values, at the end */
    int checkpoints[6];
} trace_t;

static void *read_in(void *arg) {
    void *out = NULL;
    return ctx_var_get(arg, &out) == CTX_VALUE ? out : NULL;
}

static int released_total(val_t *v, int n) {
    int sum = 0;
    for (int i = 0; i < n; i++)
        sum += val_released(&v[i]);
    return sum;
}

/* Sets, tokens, copies, new_from, ctx_context_set, resets and releases in
 * a fixed order; records how many values had been released at each
 * checkpoint. */
static trace_t script(ctx_var_t *var) {
    trace_t t = {0};
    val_t v[8];
    for (int i = 0; i < 8; i++)
        val_init(&v[i], i);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ctx_token_t *first = NULL, *second = NULL;
    ASSERT_RC(ctx_var_set(var, &v[0], &first), 0); /* a token without an old value */
    ASSERT_RC(ctx_var_set(var, &v[1], &second), 0);
    EXPECT_GET(var, CTX_VALUE, &v[1]);
    ctx_context_t *copy = NULL;
    ASSERT_RC(ctx_context_copy(ctx, &copy), 0);
    ASSERT_RC(ctx_var_set(var, &v[2], NULL), 0); /* v[1] stays: the copy and the token hold it */
    t.checkpoints[0] = released_total(v, 8);
    ASSERT_RC(ctx_var_reset(var, second), 0);   /* back to v[0]; v[2] dies */
    EXPECT_GET(var, CTX_VALUE, &v[0]);
    t.checkpoints[1] = released_total(v, 8);
    ASSERT_RC(ctx_var_reset(var, first), 0);    /* no value; `second` holds v[0] */
    ctx_token_release(second);                  /* v[0] dies */
    ctx_token_release(first);
    t.checkpoints[2] = released_total(v, 8);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    /* A context built in one pass, and one changed while not entered. */
    ctx_context_t *built = NULL;
    void *vals[1] = {&v[3]};
    ASSERT_RC(ctx_context_new_from(&var, vals, 1, &built), 0);
    void *seen = NULL;
    ASSERT_RC(ctx_context_run(built, read_in, var, &seen), 0);
    assert_ptr_equal(seen, &v[3]);
    ASSERT_RC(ctx_context_set(copy, var, &v[4]), 0); /* v[1] dies */
    t.checkpoints[3] = released_total(v, 8);
    ctx_context_release(built);
    t.checkpoints[4] = released_total(v, 8);
    ctx_context_release(copy);
    ctx_context_release(ctx);
    t.checkpoints[5] = released_total(v, 8);
    for (int i = 0; i < 8; i++)
        t.released[i] = val_released(&v[i]);
    return t;
}

static void test_same_values_and_tokens_as_a_counted_variable(void **state) {
    (void)state;
    val_t def_counted, def_static;
    val_init(&def_counted, -1);
    val_init(&def_static, -1);
    ctx_var_t *counted = make_var("counted", &def_counted, 1, ops_release());
    ctx_var_t *fixed = make_static("static", &def_static);
    trace_t a = script(counted), b = script(fixed);
    assert_memory_equal(&a, &b, sizeof a);
    /* And the script means something: each value once, at its moment. */
    int want_released[8] = {1, 1, 1, 1, 1, 0, 0, 0};
    assert_memory_equal(a.released, want_released, sizeof want_released);
    int want_checkpoints[6] = {0, 1, 2, 3, 4, 5};
    assert_memory_equal(a.checkpoints, want_checkpoints, sizeof want_checkpoints);
    /* The holders are gone: the defaults are still the variables'. */
    assert_int_equal(val_released(&def_counted), 0);
    assert_int_equal(val_released(&def_static), 0);
    ctx_var_release(counted);
    ctx_var_release(fixed);
    assert_int_equal(val_released(&def_counted), 1);
    assert_int_equal(val_released(&def_static), 1);
}

/* ---- the variable's own life ---- */

static void test_dies_with_its_last_owner(void **state) {
    (void)state;
    val_t def, v;
    val_init(&def, 0);
    val_init(&v, 1);
    ctx_var_t *var = make_static("v", &def);
    /* Many values come and go: none may take or give the owner's reference. */
    for (int i = 0; i < 100; i++) {
        ctx_token_t *tok = NULL;
        ASSERT_RC(ctx_var_set(var, &v, &tok), 0);
        ctx_context_t *copy = NULL;
        ASSERT_RC(ctx_context_copy_current(&copy), 0);
        ASSERT_RC(ctx_var_reset(var, tok), 0);
        ctx_token_release(tok);
        ctx_context_release(copy);
        assert_int_equal(val_released(&def), 0);
    }
    assert_int_equal(val_released(&v), 100);
    /* Owners still count. */
    assert_ptr_equal(ctx_var_retain(var), var);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 0);
    EXPECT_GET(var, CTX_DEFAULT, &def);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 1);
}

/* A static variable released from inside a value's release operation,
 * right after the context holding its values: those values were dropped
 * first, so they are released first, then the variable ends. */
typedef struct chain {
    ctx_context_t *ctx;
    ctx_var_t *var;
    int order[3];
    int n;
} chain_t;

static chain_t g_chain;
static val_t g_held, g_def;

static void chain_release(void *value, void *user) {
    (void)value;
    (void)user;
    g_chain.order[g_chain.n++] = 1;
    ctx_context_release(g_chain.ctx); /* drops g_held: queued */
    ctx_var_release(g_chain.var);     /* queued after it */
}

static void held_release(void *value, void *user) {
    (void)user;
    if (value == &g_def)
        g_chain.order[g_chain.n++] = 3;
    else if (value == &g_held)
        g_chain.order[g_chain.n++] = 2;
}

static void test_released_inside_a_release_operation(void **state) {
    (void)state;
    val_init(&g_held, 0);
    val_init(&g_def, 0);
    g_chain = (chain_t){0};
    static const ctx_value_ops_t held_ops = {.size = sizeof(ctx_value_ops_t), .release = held_release};
    static const ctx_value_ops_t chain_ops = {.size = sizeof(ctx_value_ops_t), .release = chain_release};
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.default_value = &g_def;
    o.has_default = 1;
    o.ops = &held_ops;
    o.flags = CTX_VAR_STATIC;
    ASSERT_RC(ctx_var_new("held", &o, &g_chain.var), 0);
    ctx_var_t *outer = make_var("outer", NULL, 0, &chain_ops);
    ASSERT_RC(ctx_context_new(&g_chain.ctx), 0);
    ASSERT_RC(ctx_context_set(g_chain.ctx, g_chain.var, &g_held), 0);
    ctx_context_t *top = NULL;
    static int marker;
    ASSERT_RC(ctx_context_new(&top), 0);
    ASSERT_RC(ctx_context_set(top, outer, &marker), 0);
    ctx_context_release(top); /* chain_release runs */
    assert_int_equal(g_chain.n, 3);
    assert_int_equal(g_chain.order[0], 1);
    assert_int_equal(g_chain.order[1], 2);
    assert_int_equal(g_chain.order[2], 3);
    ctx_var_release(outer);
}

/* ---- options ---- */

static void test_flags_are_checked(void **state) {
    (void)state;
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    ctx_var_t *sentinel = (ctx_var_t *)&o, *var = sentinel;
    o.flags = 2;
    ASSERT_RC(ctx_var_new("v", &o, &var), CTX_EINVAL);
    assert_ptr_equal(var, sentinel);
    o.flags = CTX_VAR_STATIC | 0x80000000u;
    ASSERT_RC(ctx_var_new("v", &o, &var), CTX_EINVAL);
    assert_ptr_equal(var, sentinel);
}

/* Without the flag (CTX_STRUCT_INIT: flags 0) a variable is counted: one
 * released while a context holds its value lives until that context goes.
 * (1.0's layout has `flags`: a smaller size is CTX_EINVAL, as for every
 * growable struct.) */
static void test_without_the_flag_a_variable_is_counted(void **state) {
    (void)state;
    val_t def, v;
    val_init(&def, 0);
    val_init(&v, 1);
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.default_value = &def;
    o.has_default = 1;
    o.ops = ops_release();
    ctx_var_t *var = NULL;
    ASSERT_RC(ctx_var_new("counted", &o, &var), 0);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &v), 0);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 0); /* the value holds it */
    ctx_context_release(ctx);
    assert_int_equal(val_released(&v), 1);
    assert_int_equal(val_released(&def), 1);
}

/* ---- allocation failure ---- */

/* A failed set of a static variable leaves it as it was: with a hold
 * taken and not given back, the last release would leave the default. */
static void test_failed_sets_change_nothing(void **state) {
    (void)state;
    val_t def, v;
    val_init(&def, 0);
    val_init(&v, 1);
    ctx_var_t *var = make_static("v", &def);
    EXPECT_GET(var, CTX_DEFAULT, &def); /* the thread state exists */
    ctx_test_alloc_install();
    int failures = 0;
    for (long nth = 1; nth < 8; nth++) {
        ctx_token_t *tok = NULL;
        ctx_test_alloc_fail_nth(nth);
        int rc = ctx_var_set(var, &v, &tok);
        ctx_test_alloc_fail_nth(0);
        if (rc == 0) {
            ASSERT_RC(ctx_var_reset(var, tok), 0);
            ctx_token_release(tok);
            continue;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        failures++;
        EXPECT_GET(var, CTX_DEFAULT, &def);
    }
    ctx_test_alloc_uninstall();
    assert_true(failures >= 2); /* the token and the box */
    assert_int_equal(val_released(&def), 0);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 1);
}

/* ---- threads ---- */

static void *set_many(void *arg) {
    static val_t v; /* never released: ops_release counts only */
    for (int i = 0; i < 1000; i++) {
        ctx_token_t *tok = NULL;
        if (ctx_var_set(arg, &v, &tok) != 0 || ctx_var_reset(arg, tok) != 0)
            return (void *)1;
        ctx_token_release(tok);
    }
    ctx_thread_release();
    return NULL;
}

static void test_threads_share_it(void **state) {
    (void)state;
    val_t def;
    val_init(&def, 0);
    ctx_var_t *var = make_static("v", &def);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, set_many, var), 0);
    for (int i = 0; i < 2; i++) {
        void *r = NULL;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
    assert_int_equal(val_released(&def), 0);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 1);
}

/* The last holder of a static variable's value dropped on another thread
 * (a copy handed over and released there): the owner's release after the
 * join is the right one (under CTX_DEBUG: no abort, the holder count seen
 * at zero), and the value is released once, on that thread. */
static void *release_there(void *arg) {
    ctx_context_release(arg);
    ctx_thread_release();
    return NULL;
}

static void test_holders_dropped_on_another_thread(void **state) {
    (void)state;
    val_t def, v;
    val_init(&def, 0);
    val_init(&v, 1);
    ctx_var_t *var = make_static("v", &def);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &v), 0);
    ctx_context_t *copies[4];
    for (int i = 0; i < 4; i++)
        ASSERT_RC(ctx_context_copy(ctx, &copies[i]), 0);
    ctx_context_release(ctx);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, release_there, copies[i]), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(val_released(&v), 1);
    assert_int_equal(val_released(&def), 0);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_same_values_and_tokens_as_a_counted_variable),
        TEST(test_dies_with_its_last_owner),
        TEST(test_released_inside_a_release_operation),
        TEST(test_flags_are_checked),
        TEST(test_without_the_flag_a_variable_is_counted),
        TEST(test_failed_sets_change_nothing),
        TEST(test_threads_share_it),
        TEST(test_holders_dropped_on_another_thread),
    };
    return RUN_TESTS(tests);
}
