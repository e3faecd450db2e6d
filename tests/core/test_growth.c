/* SPDX-License-Identifier: MIT */
/*
 * test_growth.c — the core's public structs can grow without breaking
 * programs built against an older or newer header (docs/api-rules.md).
 *
 * Input structs (ctx_var_options_t, ctx_value_ops_t, ctx_allocator_t): a
 * size below the 1.0 layout is CTX_EINVAL; a larger struct (a newer header)
 * is accepted when the bytes this library does not know are zero and
 * refused with CTX_EINVAL otherwise, changing nothing.  Caller-owned storage
 * (ctx_capture_t, ctx_iter_t): fixed sizes with spare room, and the library
 * never writes past them (guard bytes, and blocks of exactly that size for
 * ASan and valgrind).
 */
#include "core_test.h"

/* A struct of `type` followed by `extra` bytes, as a newer header would
 * make it (the test sets size to cover both). */
#define NEWER(type, extra)                                                     \
    struct {                                                                   \
        type known;                                                            \
        unsigned char tail[extra];                                             \
    }

static void test_var_options_sizes(void **state) {
    (void)state;
    static int def;
    ctx_var_t *var = NULL;
    ctx_var_options_t small = CTX_STRUCT_INIT(ctx_var_options_t);
    small.size = sizeof(ctx_var_options_t) - 1;
    ASSERT_RC(ctx_var_new("v", &small, &var), CTX_EINVAL);
    small.size = 0;
    ASSERT_RC(ctx_var_new("v", &small, &var), CTX_EINVAL);
    assert_null(var);

    NEWER(ctx_var_options_t, 16) big;
    memset(&big, 0, sizeof big);
    big.known.size = sizeof big;
    big.known.default_value = &def;
    big.known.has_default = 1;
    big.tail[9] = 1;
    ASSERT_RC(ctx_var_new("v", &big.known, &var), CTX_EINVAL);
    assert_null(var);
    big.tail[9] = 0;
    ASSERT_RC(ctx_var_new("v", &big.known, &var), 0);
    EXPECT_GET(var, CTX_DEFAULT, &def);
    ctx_var_release(var);
}

static void test_value_ops_sizes(void **state) {
    (void)state;
    val_counters_reset();
    val_t def;
    val_init(&def, 1);
    ctx_var_t *var = NULL;
    ctx_value_ops_t small = {.size = sizeof(ctx_value_ops_t) - sizeof(void *),
                             .release = val_release};
    ASSERT_RC(ctx_var_new("v", &(ctx_var_options_t){.size = sizeof(ctx_var_options_t),
                                                    .ops = &small},
                          &var),
              CTX_EINVAL);

    NEWER(ctx_value_ops_t, 24) big;
    memset(&big, 0, sizeof big);
    big.known.size = sizeof big;
    big.known.release = val_release;
    big.tail[23] = 0x80;
    ctx_var_options_t o = {.size = sizeof o, .default_value = &def, .has_default = 1,
                           .ops = &big.known};
    ASSERT_RC(ctx_var_new("v", &o, &var), CTX_EINVAL);
    assert_null(var);
    assert_int_equal(val_released(&def), 0); /* the default stays the caller's */
    big.tail[23] = 0;
    ASSERT_RC(ctx_var_new("v", &o, &var), 0);
    ctx_var_release(var);
    assert_int_equal(val_released(&def), 1); /* the ops were taken */
}

static void *plain_malloc(size_t size, void *user) {
    (void)user;
    return malloc(size);
}
static void plain_free(void *ptr, size_t size, void *user) {
    (void)size;
    (void)user;
    free(ptr);
}

static void test_allocator_sizes(void **state) {
    (void)state;
    ctx_allocator_t small = {sizeof(ctx_allocator_t) - 1, plain_malloc, plain_free, NULL};
    ASSERT_RC(ctx_set_allocator(&small), CTX_EINVAL);
    NEWER(ctx_allocator_t, 8) big;
    memset(&big, 0, sizeof big);
    big.known = (ctx_allocator_t){sizeof big, plain_malloc, plain_free, NULL};
    big.tail[0] = 7;
    ASSERT_RC(ctx_set_allocator(&big.known), CTX_EINVAL);
    big.tail[0] = 0;
    ASSERT_RC(ctx_set_allocator(&big.known), 0);
    ASSERT_RC(ctx_set_allocator(NULL), 0);
}

/* ---- caller-owned storage ---- */

enum { GUARD = 64, PATTERN = 0xA5 };

static void check_guard(const unsigned char *guard, const char *what) {
    for (int i = 0; i < GUARD; i++)
        if (guard[i] != PATTERN)
            fail_msg("%s: byte %d past the struct was written", what, i);
}

static void *set_in_capture(void *arg) {
    ctx_var_set(arg, "inside", NULL);
    return NULL;
}

/* The capture calls, on storage followed by guard bytes and on a heap block
 * of exactly sizeof(ctx_capture_t). */
static void exercise_capture(ctx_capture_t *cap, ctx_var_t *var, ctx_context_t *ctx) {
    ctx_capture_current(cap);
    ASSERT_RC(ctx_capture_run(cap, set_in_capture, var, NULL), 0);
    ctx_capture_clear(cap);
    ASSERT_RC(ctx_capture_copy(cap, ctx), 0);
    ASSERT_RC(ctx_capture_run(cap, set_in_capture, var, NULL), 0);
    ctx_capture_clear(cap);
}

static void test_capture_has_room_and_stays_inside(void **state) {
    (void)state;
    assert_int_equal(sizeof(ctx_capture_t), 96); /* fixed for 1.x (ctxvar.h) */
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, "outside", NULL), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);

    struct {
        ctx_capture_t cap;
        unsigned char guard[GUARD];
    } framed;
    memset(&framed, PATTERN, sizeof framed);
    exercise_capture(&framed.cap, var, ctx);
    check_guard(framed.guard, "ctx_capture_t");

    ctx_capture_t *exact = malloc(sizeof *exact);
    assert_non_null(exact);
    exercise_capture(exact, var, ctx);
    free(exact);

    ctx_context_release(ctx);
    ctx_var_release(var);
}

static void exercise_iter(ctx_iter_t *it, ctx_context_t *ctx) {
    ASSERT_RC(ctx_iter_init(it, ctx), 0);
    int n = 0;
    while (ctx_iter_next(it, NULL, NULL))
        n++;
    assert_int_equal(n, 40);
    ctx_iter_clear(it);
    ctx_iter_clear(it);
}

static void test_iter_has_room_and_stays_inside(void **state) {
    (void)state;
    assert_int_equal(sizeof(ctx_iter_t), 160); /* fixed for 1.x (ctxvar.h) */
    /* 40 variables: a root with a second level, so the walk goes deep. */
    ctx_var_t *vars[40];
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    for (int i = 0; i < 40; i++) {
        vars[i] = make_var("v", NULL, 0, NULL);
        ASSERT_RC(ctx_context_set(ctx, vars[i], NULL), 0);
    }
    struct {
        ctx_iter_t it;
        unsigned char guard[GUARD];
    } framed;
    memset(&framed, PATTERN, sizeof framed);
    exercise_iter(&framed.it, ctx);
    check_guard(framed.guard, "ctx_iter_t");
    ctx_iter_t *exact = malloc(sizeof *exact);
    assert_non_null(exact);
    exercise_iter(exact, ctx);
    free(exact);
    ctx_context_release(ctx);
    for (int i = 0; i < 40; i++)
        ctx_var_release(vars[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_var_options_sizes),
        TEST(test_value_ops_sizes),
        TEST(test_allocator_sizes),
        TEST(test_capture_has_room_and_stays_inside),
        TEST(test_iter_has_room_and_stays_inside),
    };
    return RUN_TESTS(tests);
}
