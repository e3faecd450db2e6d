/* SPDX-License-Identifier: MIT */
/*
 * core_test.h — what the core's public-API tests share (tests/core/test_*.c,
 * except test_hamt.c): cmocka, a few assertion macros that print error names,
 * a tracked value type whose operations count every call, and helpers to make
 * variables and to scale work under valgrind and TSan.
 *
 * Values in these tests are `val_t` objects the test owns (on its stack or
 * static); the library only counts them through the operations below, so a
 * test can assert exactly when and how often each operation ran.
 */
#ifndef CTX_CORE_TEST_H
#define CTX_CORE_TEST_H

/* pthread barriers and other POSIX calls under -std=c11. */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

/* cmocka needs these before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>

#include "../support/support.h"

/* ---- assertions ---- */

#include "ctx_test.h"

/* ctx_var_get(var) must return `want_rc`; for CTX_VALUE/CTX_DEFAULT the value
 * must be `want_ptr`; for CTX_ENOTFOUND *out must be untouched. */
#define EXPECT_GET(var, want_rc, want_ptr)                                     \
    do {                                                                       \
        static char untouched_;                                                \
        void *out_ = &untouched_;                                              \
        ASSERT_RC(ctx_var_get((var), &out_), (want_rc));                       \
        if ((want_rc) >= 0)                                                    \
            assert_ptr_equal(out_, (want_ptr));                                \
        else                                                                   \
            assert_ptr_equal(out_, &untouched_);                               \
    } while (0)

/* ctx_context_get(ctx, var) must return `want_rc` (0 or CTX_ENOTFOUND) and,
 * for 0, the value `want_ptr`. */
#define EXPECT_CTX_GET(ctx, var, want_rc, want_ptr)                            \
    do {                                                                       \
        void *out_ = NULL;                                                     \
        ASSERT_RC(ctx_context_get((ctx), (var), &out_), (want_rc));            \
        if ((want_rc) == 0)                                                    \
            assert_ptr_equal(out_, (want_ptr));                                \
    } while (0)

/* ---- tracked values ---- */

typedef struct val {
    int payload;       /* what format prints and clone copies */
    atomic_int released; /* calls of the release operation for this value */
    atomic_int cloned;   /* clones made from this value */
    int heap;          /* made by val_clone: freed by val_free_clones */
} val_t;

typedef struct val_counters {
    atomic_long released;      /* release calls, all values (NULL included) */
    atomic_long null_released; /* release calls with a NULL value */
    atomic_long clones;        /* successful clone calls */
    atomic_long clone_calls;   /* clone calls, failed ones included */
    atomic_int clone_fail;     /* non-zero: clone returns this code */
    atomic_int format_fail;    /* non-zero: format returns this code */
} val_counters_t;

static inline val_counters_t *val_counters(void) {
    static val_counters_t counters;
    return &counters;
}

static inline void val_counters_reset(void) {
    val_counters_t *c = val_counters();
    atomic_store(&c->released, 0);
    atomic_store(&c->null_released, 0);
    atomic_store(&c->clones, 0);
    atomic_store(&c->clone_calls, 0);
    atomic_store(&c->clone_fail, 0);
    atomic_store(&c->format_fail, 0);
}

static inline void val_init(val_t *v, int payload) {
    v->payload = payload;
    atomic_init(&v->released, 0);
    atomic_init(&v->cloned, 0);
    v->heap = 0;
}

static inline int val_released(val_t *v) { return atomic_load(&v->released); }

static inline void val_release(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&val_counters()->released, 1);
    if (value == NULL) {
        atomic_fetch_add(&val_counters()->null_released, 1);
        return;
    }
    val_t *v = value;
    atomic_fetch_add(&v->released, 1);
    /* A clone is owned by the library: its single share frees it.  A second
     * release would be a use after free that ASan/valgrind report. */
    if (v->heap)
        free(v);
}

static inline int val_format(const void *value, char *buf, size_t cap,
                             void *user) {
    (void)user;
    int fail = atomic_load(&val_counters()->format_fail);
    if (fail)
        return fail;
    if (value == NULL)
        return snprintf(buf, cap, "null");
    return snprintf(buf, cap, "%d", ((const val_t *)value)->payload);
}

/* Clones are heap values (released = freed).  Their payload is the source's;
 * the source's `cloned` counter goes up. */
static inline int val_clone(const void *value, void **out, void *user) {
    (void)user;
    val_counters_t *c = val_counters();
    atomic_fetch_add(&c->clone_calls, 1);
    int fail = atomic_load(&c->clone_fail);
    if (fail)
        return fail;
    val_t *copy = malloc(sizeof *copy);
    if (copy == NULL)
        return CTX_ENOMEM;
    val_init(copy, value ? ((const val_t *)value)->payload : 0);
    copy->heap = 1;
    if (value)
        atomic_fetch_add(&((val_t *)value)->cloned, 1);
    atomic_fetch_add(&c->clones, 1);
    *out = copy;
    return 0;
}

/* Operation sets. */
static inline const ctx_value_ops_t *ops_release(void) {
    static const ctx_value_ops_t ops = {.size = sizeof(ctx_value_ops_t),.release = val_release};
    return &ops;
}
static inline const ctx_value_ops_t *ops_format(void) {
    static const ctx_value_ops_t ops = {.size = sizeof(ctx_value_ops_t),.release = val_release,
                                        .format = val_format};
    return &ops;
}
static inline const ctx_value_ops_t *ops_clone(void) {
    static const ctx_value_ops_t ops = {
        .size = sizeof(ctx_value_ops_t),
        .release = val_release, .format = val_format, .clone = val_clone};
    return &ops;
}

/* ---- variables ---- */

/* A new variable; `has_default` selects whether `def` is its default. */
static inline ctx_var_t *make_var(const char *name, void *def, int has_default,
                                  const ctx_value_ops_t *ops) {
    ctx_var_options_t options = {.size = sizeof(ctx_var_options_t), .default_value = def, .has_default = has_default, .ops = ops};
    ctx_var_t *var = NULL;
    int rc = ctx_var_new(name, &options, &var);
    if (rc != 0 || var == NULL)
        fail_msg("ctx_var_new(%s) failed: %s", name, ctx_error_name(rc));
    return var;
}

/* ---- per-test cleanup ---- */

/* cmocka teardown: the main thread's state must be releasable (no context
 * left entered) and is released so valgrind sees no leak. */
static inline int teardown_thread(void **state) {
    (void)state;
    int rc = ctx_thread_release();
    if (rc != 0) {
        fprintf(stderr, "teardown: ctx_thread_release: %s\n",
                ctx_error_name(rc));
        return -1;
    }
    return 0;
}

#define TEST(fn) cmocka_unit_test_teardown(fn, teardown_thread)

/* CTX_TEST_FILTER / CTX_TEST_SKIP (glob patterns on test names) select tests,
 * for running one test under a debugger or valgrind. */
static inline void apply_test_filters(void) {
    const char *only = getenv("CTX_TEST_FILTER");
    const char *skip = getenv("CTX_TEST_SKIP");
    if (only && *only)
        cmocka_set_test_filter(only);
    if (skip && *skip)
        cmocka_set_skip_filter(skip);
}

#define RUN_TESTS(tests)                                                       \
    (apply_test_filters(), cmocka_run_group_tests(tests, NULL, NULL))

/* ---- scaling ---- */

/* `normal` iterations, divided by `slow_divisor` under valgrind or TSan
 * (compile with -DCTX_TEST_UNDER_VALGRIND / -DCTX_TEST_UNDER_TSAN, or run
 * with CTX_TEST_UNDER_VALGRIND set in the environment); the environment
 * variable `env` (if set) overrides both. */
static inline long test_scale(const char *env, long normal, long slow_divisor) {
    const char *s = env ? getenv(env) : NULL;
    if (s && *s)
        return strtol(s, NULL, 0);
    long n = normal;
#if defined(CTX_TEST_UNDER_VALGRIND) || defined(CTX_TEST_UNDER_TSAN)
    n /= slow_divisor;
#else
    const char *vg = getenv("CTX_TEST_UNDER_VALGRIND");
    if (vg && *vg)
        n /= slow_divisor;
#endif
    return n > 0 ? n : 1;
}

#endif /* CTX_CORE_TEST_H */
