/* SPDX-License-Identifier: MIT */
/*
 * test_debug.c — CTX_DEBUG (src/common/debug.h): double release and use
 * after release of contexts, tokens, captures and variables abort at once
 * with a message naming the call and the object, and so does ctx_free of a
 * block with a size other than the one ctx_malloc was given.
 *
 * Death tests: the object is made in this process, then a forked child
 * misuses it with its stderr on a pipe; the parent asserts that the child
 * died of SIGABRT and printed exactly the expected line (the object's
 * address is the same on both sides of fork).  Without CTX_DEBUG the tests
 * are skipped: misuse is then undefined behaviour, as the header says.
 */
#include "core_test.h"
#include "../support/death.h"

static char want[256];

static void *nothing(void *arg) { return arg; }

/* ---- contexts ---- */

static void release_twice(void *ctx) {
    ctx_context_release(ctx);
    ctx_context_release(ctx);
}

static void enter_after_release(void *ctx) {
    ctx_context_release(ctx);
    ctx_context_enter(ctx);
}

static void run_after_release(void *ctx) {
    ctx_context_release(ctx);
    ctx_context_run(ctx, nothing, NULL, NULL);
}

static void copy_after_release(void *ctx) {
    ctx_context_t *copy;
    ctx_context_release(ctx);
    ctx_context_copy(ctx, &copy);
}

static void test_context_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    snprintf(want, sizeof want, "ctxvar: ctx_context_release: context %p already released\n",
             (void *)ctx);
    expect_abort(release_twice, ctx, want);
    snprintf(want, sizeof want, "ctxvar: ctx_context_enter: context %p already released\n",
             (void *)ctx);
    expect_abort(enter_after_release, ctx, want);
    snprintf(want, sizeof want, "ctxvar: ctx_context_run: context %p already released\n",
             (void *)ctx);
    expect_abort(run_after_release, ctx, want);
    snprintf(want, sizeof want, "ctxvar: ctx_context_copy: context %p already released\n",
             (void *)ctx);
    expect_abort(copy_after_release, ctx, want);
    ctx_context_release(ctx); /* this process's is still live */
}

static void release_garbage(void *block) { ctx_context_release(block); }

static void test_not_a_context(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    uint64_t *block = calloc(16, sizeof *block);
    assert_non_null(block);
    snprintf(want, sizeof want,
             "ctxvar: ctx_context_release: context %p is not valid (never made, corrupted, "
             "or released and its memory reused)\n",
             (void *)block);
    expect_abort(release_garbage, block, want);
    free(block);
}

/* ---- tokens ---- */

static ctx_var_t *token_var;

static void token_release_twice(void *tok) {
    ctx_token_release(tok);
    ctx_token_release(tok);
}

static void reset_after_release(void *tok) {
    ctx_token_release(tok);
    ctx_var_reset(token_var, tok);
}

static void test_token_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    token_var = make_var("v", NULL, 0, NULL);
    ctx_token_t *tok;
    ASSERT_RC(ctx_var_set(token_var, NULL, &tok), 0);
    snprintf(want, sizeof want, "ctxvar: ctx_token_release: token %p already released\n",
             (void *)tok);
    expect_abort(token_release_twice, tok, want);
    snprintf(want, sizeof want, "ctxvar: ctx_var_reset: token %p already released\n",
             (void *)tok);
    expect_abort(reset_after_release, tok, want);
    ASSERT_RC(ctx_var_reset(token_var, tok), 0);
    ctx_token_release(tok);
    ctx_var_release(token_var);
}

/* ---- captures ---- */

static void clear_twice(void *cap) {
    ctx_capture_clear(cap);
    ctx_capture_clear(cap);
}

static void run_after_clear(void *cap) {
    ctx_capture_clear(cap);
    ctx_capture_run(cap, nothing, NULL, NULL);
}

static void capture_again(void *cap) { ctx_capture_current(cap); }

static void test_capture_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    snprintf(want, sizeof want, "ctxvar: ctx_capture_clear: capture %p already cleared\n",
             (void *)&cap);
    expect_abort(clear_twice, &cap, want);
    snprintf(want, sizeof want, "ctxvar: ctx_capture_run: capture %p already cleared\n",
             (void *)&cap);
    expect_abort(run_after_clear, &cap, want);
    snprintf(want, sizeof want,
             "ctxvar: ctx_capture_current: capture %p still holds a context: clear it "
             "before capturing into it again\n",
             (void *)&cap);
    expect_abort(capture_again, &cap, want);
    /* Used correctly: cleared once, then captured into again. */
    ctx_capture_clear(&cap);
    ctx_capture_current(&cap);
    ASSERT_RC(ctx_capture_run(&cap, nothing, NULL, NULL), 0);
    ctx_capture_clear(&cap);
}

/* ---- variables ---- */

static void var_release_twice(void *var) {
    ctx_var_release(var);
    ctx_var_release(var);
}

static void set_after_release(void *var) {
    ctx_var_release(var);
    ctx_var_set(var, NULL, NULL);
}

static void test_var_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    snprintf(want, sizeof want, "ctxvar: ctx_var_release: variable %p already released\n",
             (void *)var);
    expect_abort(var_release_twice, var, want);
    snprintf(want, sizeof want, "ctxvar: ctx_var_set: variable %p already released\n",
             (void *)var);
    expect_abort(set_after_release, var, want);
    ctx_var_release(var);
}

/* A static variable (CTX_VAR_STATIC) released while values or tokens still
 * hold it: its holders are not references, so this would free it under
 * them.  The count in the message is what holds it. */
static void release_var(void *var) { ctx_var_release(var); }

static void test_static_var_released_while_held(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.flags = CTX_VAR_STATIC;
    ctx_var_t *var = NULL;
    ASSERT_RC(ctx_var_new("static", &o, &var), 0);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, (void *)1), 0);
    snprintf(want, sizeof want,
             "ctxvar: ctx_var_release: variable %p is static and still held by 1 value or token\n",
             (void *)var);
    expect_abort(release_var, var, want);
    /* A value in the current context and a token without an old value. */
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_var_set(var, (void *)2, &tok), 0);
    snprintf(want, sizeof want,
             "ctxvar: ctx_var_release: variable %p is static and still held by 3 values or tokens\n",
             (void *)var);
    expect_abort(release_var, var, want);
    /* Once they are gone the release is the right one. */
    ASSERT_RC(ctx_var_reset(var, tok), 0);
    ctx_token_release(tok);
    ctx_context_release(ctx);
    ctx_var_release(var);
}

/* ---- ctx_free's size (the per-thread lists keep blocks by size, so a
 * wrong one would hand a later ctx_malloc a block too small) ---- */

static void free_with_larger_size(void *block) { ctx_free(block, 48); }
static void free_with_smaller_size(void *block) { ctx_free(block, 32); }

static void free_twice(void *block) {
    ctx_free(block, 40);
    ctx_free(block, 40);
}

static void test_free_size_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    void *block = ctx_malloc(40);
    assert_non_null(block);
    snprintf(want, sizeof want,
             "ctxvar: ctx_free: block %p freed with a size other than its ctx_malloc size\n", block);
    expect_abort(free_with_larger_size, block, want);
    expect_abort(free_with_smaller_size, block, want);
    snprintf(want, sizeof want, "ctxvar: ctx_free: block %p is not from ctx_malloc, or was freed already\n",
             block);
    expect_abort(free_twice, block, want);
    ctx_free(block, 40); /* the right size: no abort */
    /* A size the header cannot be added to fails cleanly. */
    assert_null(ctx_malloc(SIZE_MAX));
    assert_null(ctx_malloc(SIZE_MAX - 8));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_context_misuse), TEST(test_not_a_context), TEST(test_token_misuse),
        TEST(test_capture_misuse), TEST(test_var_misuse), TEST(test_static_var_released_while_held),
        TEST(test_free_size_misuse),
    };
    return RUN_TESTS(tests);
}
