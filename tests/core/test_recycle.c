/* SPDX-License-Identifier: MIT */
/*
 * test_recycle.c — the small blocks each thread keeps for reuse
 * (src/core/alloc.c, "Recycling") are all given back: at thread exit, also
 * when the thread exits inside contexts and without ever having had a
 * thread state (a thread that only builds and drops contexts), and on
 * ctx_thread_release; an installed allocator sees every allocation even
 * while blocks are kept; and blocks freed on another thread are reused
 * safely (a producer/consumer pair under TSan).
 *
 * Recycling is on in the plain and TSan builds only (it would hide a use
 * after free from ASan and valgrind), so the byte counts below are
 * glibc's: mallinfo2's bytes in use, over every arena, before and after.
 * Where that is not available (or a sanitizer replaces malloc) the counts
 * read 0 and the checks hold trivially; the other assertions hold
 * everywhere.
 */
#include "core_test.h"

#include <pthread.h>
#include <sched.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
static long bytes_in_use(void) { return (long)mallinfo2().uordblks; }
#else
static long bytes_in_use(void) { return 0; }
#endif

/* A thread that exits gives glibc's per-thread cache back too, so there
 * the bytes in use come back to what they were, give or take a block.  The
 * main thread keeps glibc's cache (up to 7 chunks of each size, counted as
 * in use): about 5 KiB once all ten sizes were used.  A leak of the lists
 * is 32 blocks of each size, over 19 KiB. */
#define SLACK 256
#define SLACK_MAIN 8192

enum { ROUNDS = 20, VARS = 10, ALIVE = 40 };

static ctx_var_t *vars[VARS];

/* Allocates and frees every kind of small block, more of each than a
 * thread keeps: contexts built in one pass (roots of 1 to 10 slots: every
 * size from 24 to 96 bytes), copies changed with ctx_context_set, set and
 * reset with tokens, ctx_malloc's blocks of every size kept and of one
 * that is not. */
static void churn(void) {
    static val_t vals[VARS];
    void *values[VARS];
    for (int i = 0; i < VARS; i++)
        values[i] = &vals[i];
    ctx_context_t *alive[VARS][ALIVE];
    for (int r = 0; r < ROUNDS; r++) {
        for (int n = 1; n <= VARS; n++)
            for (int k = 0; k < ALIVE; k++)
                if (ctx_context_new_from(vars, values, (size_t)n, &alive[n - 1][k]) != 0)
                    abort();
        ctx_context_t *copy = NULL;
        if (ctx_context_copy(alive[5][0], &copy) != 0 || ctx_context_set(copy, vars[1], NULL) != 0)
            abort();
        if (ctx_context_enter(alive[5][1]) != 0)
            abort();
        ctx_token_t *tok = NULL;
        if (ctx_var_set(vars[2], NULL, &tok) != 0 || ctx_var_reset(vars[2], tok) != 0)
            abort();
        ctx_token_release(tok);
        /* ctx_malloc's blocks of every kept size (24 to 96), and of 97 */
        void *blocks[11][ALIVE];
        for (int z = 0; z < 11; z++)
            for (int k = 0; k < ALIVE; k++)
                if (!(blocks[z][k] = ctx_malloc(24 + 8 * (size_t)z - (z == 10) * 7)))
                    abort();
        for (int z = 0; z < 11; z++)
            for (int k = 0; k < ALIVE; k++)
                ctx_free(blocks[z][k], 24 + 8 * (size_t)z - (z == 10) * 7);
        if (ctx_context_exit(alive[5][1]) != 0)
            abort();
        ctx_context_release(copy);
        for (int n = 0; n < VARS; n++)
            for (int k = 0; k < ALIVE; k++)
                ctx_context_release(alive[n][k]);
    }
}

static void *churn_thread(void *arg) {
    (void)arg;
    churn();
    return NULL;
}

/* Builds and drops contexts without ever making a thread state. */
static void *stateless_thread(void *arg) {
    (void)arg;
    static val_t v;
    for (int r = 0; r < ROUNDS * ALIVE; r++) {
        ctx_context_t *ctx;
        void *value = &v;
        if (ctx_context_new_from(vars, &value, 1, &ctx) != 0)
            abort();
        ctx_context_release(ctx);
    }
    return NULL;
}

/* Exits with a context still entered: the thread state's destructor
 * releases it after the recycling key's may already have run. */
static void *exit_inside_thread(void *arg) {
    ctx_context_t *ctx = arg;
    churn();
    if (ctx_context_enter(ctx) != 0)
        abort();
    ctx_context_release(ctx); /* the entry's reference is the last one */
    return NULL;
}

static void run_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

static int setup(void **state) {
    (void)state;
    for (int i = 0; i < VARS; i++)
        vars[i] = make_var("r", NULL, 0, NULL);
    /* Whatever a first thread makes once per process (keys, arenas). */
    run_thread(churn_thread, NULL);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < VARS; i++)
        ctx_var_release(vars[i]);
    return ctx_thread_release() == 0 ? 0 : -1;
}

static void test_thread_exit_gives_blocks_back(void **state) {
    (void)state;
    long before = bytes_in_use();
    run_thread(churn_thread, NULL);
    run_thread(stateless_thread, NULL);
    long after = bytes_in_use();
    assert_true(after - before < SLACK);
}

static void test_exit_inside_a_context_gives_blocks_back(void **state) {
    (void)state;
    static val_t v;
    void *value = &v;
    long before = bytes_in_use();
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new_from(vars, &value, 1, &ctx), 0);
    run_thread(exit_inside_thread, ctx);
    long after = bytes_in_use();
    assert_true(after - before < SLACK);
}

static void test_thread_release_gives_blocks_back(void **state) {
    (void)state;
    ASSERT_RC(ctx_thread_release(), 0);
    long before = bytes_in_use();
    churn();
    ASSERT_RC(ctx_thread_release(), 0);
    long after = bytes_in_use();
    assert_true(after - before < SLACK_MAIN);
}

/* Blocks kept from the default allocator are never handed to a caller of
 * an installed one: its count of allocations sees every set. */
static void test_installed_allocator_sees_every_allocation(void **state) {
    (void)state;
    churn(); /* this thread now keeps blocks */
    ctx_test_alloc_install();
    long attempts = ctx_test_alloc_attempts();
    ctx_context_t *ctx;
    static val_t v;
    void *value = &v;
    ASSERT_RC(ctx_context_new_from(vars, &value, 1, &ctx), 0);
    /* The context, its root and one box. */
    assert_int_equal(ctx_test_alloc_attempts() - attempts, 3);
    ctx_context_release(ctx);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_fail_nth(1);
    ctx = NULL;
    ASSERT_RC(ctx_context_new_from(vars, &value, 1, &ctx), CTX_ENOMEM);
    assert_null(ctx);
    ctx_test_alloc_uninstall();
}

/* One thread makes contexts, another drops them: each block is freed on
 * the thread that did not allocate it, kept there, and reused there. */
enum { HANDOFF = 2000 };
static ctx_context_t *_Atomic slot;

static void *consumer(void *arg) {
    (void)arg;
    for (int i = 0; i < HANDOFF; i++) {
        ctx_context_t *ctx;
        while (!(ctx = atomic_exchange(&slot, NULL)))
            sched_yield();
        void *out = NULL;
        if (ctx_context_get(ctx, vars[0], &out) != 0 || out != (void *)(intptr_t)(i + 1))
            abort();
        ctx_context_release(ctx);
        /* and its own, from the blocks it keeps */
        ctx_context_t *mine;
        if (ctx_context_new_from(vars, (void *[]){out}, 1, &mine) != 0)
            abort();
        ctx_context_release(mine);
    }
    return NULL;
}

static void test_blocks_freed_on_another_thread(void **state) {
    (void)state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, consumer, NULL), 0);
    for (int i = 0; i < HANDOFF; i++) {
        ctx_context_t *ctx;
        void *value = (void *)(intptr_t)(i + 1);
        ASSERT_RC(ctx_context_new_from(vars, &value, 1, &ctx), 0);
        ctx_context_t *expected = NULL;
        while (!atomic_compare_exchange_weak(&slot, &expected, ctx)) {
            expected = NULL;
            sched_yield();
        }
    }
    assert_int_equal(pthread_join(t, NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_thread_exit_gives_blocks_back),
        TEST(test_exit_inside_a_context_gives_blocks_back),
        TEST(test_thread_release_gives_blocks_back),
        TEST(test_installed_allocator_sees_every_allocation),
        TEST(test_blocks_freed_on_another_thread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
