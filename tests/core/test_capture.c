/* SPDX-License-Identifier: MIT */
/*
 * test_capture.c — ctx_capture_t: copy_context() + run in caller-owned
 * storage.  Each test checks one promise of the header: the capture is a
 * snapshot, runs see it and keep their own sets, a capture cannot be run
 * twice at once, capturing allocates nothing, clearing releases exactly what
 * only the capture held, and a run that leaves contexts entered still leaves
 * the capture.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include <cmocka.h>
#include <ctxvar.h>

#include "support.h"

static int releases;
static void count_release(void *value, void *user) {
    (void)value;
    (void)user;
    releases++;
}
static const ctx_value_ops_t counted = {.size = sizeof(ctx_value_ops_t),.release = count_release};

static ctx_var_t *new_var(const char *name) {
    ctx_var_t *v;
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .ops = &counted};
    assert_int_equal(ctx_var_new(name, &o, &v), 0);
    return v;
}

static void *value_of(ctx_var_t *v) {
    void *out = NULL;
    return ctx_var_get(v, &out) == CTX_VALUE ? out : NULL;
}

static ctx_var_t *g_var;

static void *read_var(void *arg) {
    (void)arg;
    return value_of(g_var);
}

static void *set_var(void *arg) {
    ctx_var_set(g_var, arg, NULL);
    return value_of(g_var);
}

static void test_capture_is_a_snapshot(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_var_set(g_var, (void *)1, NULL);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    ctx_var_set(g_var, (void *)2, NULL); /* after the capture: not in it */
    void *seen = NULL;
    assert_int_equal(ctx_capture_run(&cap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)1);
    assert_ptr_equal(value_of(g_var), (void *)2); /* the caller is untouched */
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static void test_sets_stay_in_the_capture(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_capture_t cap;
    ctx_capture_current(&cap); /* no thread state yet: an empty context */
    void *seen = NULL;
    assert_int_equal(ctx_capture_run(&cap, set_var, (void *)7, &seen), 0);
    assert_ptr_equal(seen, (void *)7);
    assert_null(value_of(g_var)); /* not in the caller's context */
    assert_int_equal(ctx_capture_run(&cap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)7); /* a later run sees it */
    int before = releases;
    ctx_capture_clear(&cap);
    assert_int_equal(releases, before + 1); /* only the capture held it */
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static ctx_capture_t *g_cap;

static void *run_again(void *arg) {
    (void)arg;
    return (void *)(intptr_t)ctx_capture_run(g_cap, read_var, NULL, NULL);
}

static void test_nested_run_is_eentered(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    g_cap = &cap;
    void *inner = NULL;
    assert_int_equal(ctx_capture_run(&cap, run_again, NULL, &inner), 0);
    assert_int_equal((int)(intptr_t)inner, CTX_EENTERED);
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

/* ctx_capture_run_exclusive: the same run as ctx_capture_run (the snapshot
 * is seen, sets stay in the capture, the caller's context is current
 * again afterwards), a nested run of the same capture is CTX_EENTERED, and
 * NULLs are CTX_EINVAL. */
static void *run_exclusive_again(void *arg) {
    (void)arg;
    return (void *)(intptr_t)ctx_capture_run_exclusive(g_cap, read_var, NULL, NULL);
}

static void test_run_exclusive(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_token_t *tok = NULL;
    assert_int_equal(ctx_var_set(g_var, (void *)1, &tok), 0);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    g_cap = &cap;
    assert_int_equal(ctx_var_set(g_var, (void *)2, NULL), 0); /* after the capture */
    void *seen = NULL;
    assert_int_equal(ctx_capture_run_exclusive(&cap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)1);
    assert_int_equal(ctx_capture_run_exclusive(&cap, set_var, (void *)3, &seen), 0);
    assert_ptr_equal(seen, (void *)3);
    assert_int_equal(ctx_capture_run_exclusive(&cap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)3); /* the set stayed in the capture */
    assert_ptr_equal(value_of(g_var), (void *)2);
    assert_int_equal(ctx_capture_run_exclusive(&cap, run_exclusive_again, NULL, &seen), 0);
    assert_int_equal((int)(intptr_t)seen, CTX_EENTERED);
    assert_int_equal(ctx_capture_run(&cap, read_var, NULL, &seen), 0); /* flag cleared */
    assert_int_equal(ctx_capture_run_exclusive(NULL, read_var, NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_capture_run_exclusive(&cap, NULL, NULL, NULL), CTX_EINVAL);
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_var_reset(g_var, tok), 0);
    ctx_token_release(tok);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

/* Two threads run the same capture over and over: at most one of them is
 * ever inside it (the other gets CTX_EENTERED), as the header promises. */
#define RACE_RUNS 200000
static atomic_int race_inside, race_overlaps;

static void *race_fn(void *arg) {
    (void)arg;
    if (atomic_exchange(&race_inside, 1))
        atomic_fetch_add(&race_overlaps, 1);
    atomic_store(&race_inside, 0);
    return NULL;
}

static void *race_runner(void *arg) {
    intptr_t ran = 0;
    for (int i = 0; i < RACE_RUNS; i++) {
        int rc = ctx_capture_run(arg, race_fn, NULL, NULL);
        if (rc == 0)
            ran++;
        else if (rc != CTX_EENTERED)
            return (void *)(intptr_t)rc; /* negative: fails the test */
    }
    ctx_thread_release();
    return (void *)ran;
}

static void test_concurrent_runs_exclude_each_other(void **state) {
    (void)state;
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    pthread_t t[2];
    void *ran[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_runner, &cap), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(t[i], &ran[i]), 0);
        if ((intptr_t)ran[i] < 0) /* one of them may lose every race: 0 */
            fail_msg("runner %d: %s", i, ctx_error_name((int)(intptr_t)ran[i]));
    }
    assert_true((intptr_t)ran[0] + (intptr_t)ran[1] > 0);
    assert_int_equal(atomic_load(&race_overlaps), 0);
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_thread_release(), 0);
}

static void test_copy_of_a_context(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_context_t *ctx;
    assert_int_equal(ctx_context_new(&ctx), 0);
    assert_int_equal(ctx_context_set(ctx, g_var, (void *)5), 0);
    ctx_capture_t cap;
    assert_int_equal(ctx_capture_copy(&cap, ctx), 0);
    void *seen = NULL;
    assert_int_equal(ctx_capture_run(&cap, set_var, (void *)6, &seen), 0);
    void *in_ctx = NULL;
    assert_int_equal(ctx_context_get(ctx, g_var, &in_ctx), 0);
    assert_ptr_equal(in_ctx, (void *)5); /* the source is untouched */
    assert_int_equal(ctx_capture_copy(NULL, ctx), CTX_EINVAL);
    assert_int_equal(ctx_capture_copy(&cap, NULL), CTX_EINVAL);
    assert_int_equal(ctx_capture_run(NULL, read_var, NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_capture_run(&cap, NULL, NULL, NULL), CTX_EINVAL);
    ctx_capture_current(NULL); /* ignored */
    ctx_capture_clear(NULL);   /* ignored */
    ctx_capture_clear(&cap);
    ctx_context_release(ctx);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static void test_capturing_allocates_nothing(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_var_set(g_var, (void *)1, NULL);
    ctx_test_alloc_install();
    ctx_test_alloc_fail_all(1);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    void *seen = NULL;
    assert_int_equal(ctx_capture_run(&cap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)1);
    ctx_capture_clear(&cap);
    ctx_test_alloc_fail_all(0);
    assert_int_equal(ctx_test_alloc_fired(), 0);
    ctx_test_alloc_uninstall();
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static ctx_context_t *g_left;

static void *enter_and_stay(void *arg) {
    (void)arg;
    ctx_context_enter(g_left);
    return NULL;
}

static void test_run_that_leaves_a_context_entered(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_var_set(g_var, (void *)1, NULL);
    assert_int_equal(ctx_context_new(&g_left), 0);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    assert_int_equal(ctx_capture_run(&cap, enter_and_stay, NULL, NULL), CTX_ENOTCURRENT);
    /* The capture was left; the context fn entered is still current. */
    assert_int_equal(ctx_context_is_entered(g_left), 1);
    assert_null(value_of(g_var));
    assert_int_equal(ctx_context_exit(g_left), 0);
    assert_ptr_equal(value_of(g_var), (void *)1); /* back where we started */
    assert_int_equal(ctx_capture_run(&cap, read_var, NULL, NULL), 0); /* reusable */
    ctx_capture_clear(&cap);
    ctx_context_release(g_left);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static void *thread_runs_capture(void *arg) {
    void *seen = NULL;
    int r = ctx_capture_run(arg, read_var, NULL, &seen);
    ctx_thread_release();
    return r ? NULL : seen;
}

static void test_run_on_another_thread(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_var_set(g_var, (void *)9, NULL);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    pthread_t th;
    void *seen = NULL;
    assert_int_equal(pthread_create(&th, NULL, thread_runs_capture, &cap), 0);
    assert_int_equal(pthread_join(th, &seen), 0);
    assert_ptr_equal(seen, (void *)9);
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static void *exit_and_stay(void *arg) {
    pthread_exit(arg);
    return NULL;
}

static void *thread_exits_inside_run(void *arg) {
    ctx_capture_run(arg, exit_and_stay, NULL, NULL);
    return NULL; /* not reached */
}

/* A thread that ends inside a capture's run: its exit leaves the capture but
 * never frees it (it is the caller's storage; ASan and valgrind would report
 * a free of memory that was never allocated). */
static void test_thread_exit_inside_a_run(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_var_set(g_var, (void *)3, NULL);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, thread_exits_inside_run, &cap), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    void *seen = NULL;
    assert_int_equal(ctx_capture_run(&cap, read_var, NULL, &seen), 0); /* left */
    assert_ptr_equal(seen, (void *)3);
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static ctx_context_t *g_ctx;

static void *exit_own_context(void *arg) {
    (void)arg;
    ctx_context_release(g_ctx); /* the caller's reference */
    return (void *)(intptr_t)ctx_context_exit(g_ctx); /* and its own */
}

/* fn may drop the caller's reference and even exit the context it runs in:
 * run must not touch the (now freed) context afterwards. */
static void test_run_whose_fn_exits_its_context(void **state) {
    (void)state;
    assert_int_equal(ctx_context_new(&g_ctx), 0);
    void *exit_result = (void *)1;
    assert_int_equal(ctx_context_run(g_ctx, exit_own_context, NULL, &exit_result),
                     CTX_ENOTCURRENT);
    assert_int_equal((int)(intptr_t)exit_result, 0);
    assert_int_equal(ctx_thread_release(), 0); /* nothing left entered */
}

/* ctx_malloc/ctx_free go through the installed allocator (with CTX_DEBUG,
 * each block carries a 16-byte size header in front). */
static void test_exported_allocator(void **state) {
    (void)state;
    ctx_test_alloc_install();
    void *p = ctx_malloc(40);
    assert_non_null(p);
    assert_int_equal(ctx_test_alloc_live_blocks(), 1);
#ifdef CTX_DEBUG
    assert_int_equal(ctx_test_alloc_live_bytes(), 40 + 16);
#else
    assert_int_equal(ctx_test_alloc_live_bytes(), 40);
#endif
    ctx_free(p, 40);
    ctx_free(NULL, 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_fail_nth(1);
    assert_null(ctx_malloc(8));
    assert_int_equal(ctx_test_alloc_fired(), 1);
    ctx_test_alloc_uninstall();
}

static int g_called;

static void *note_call(void *arg) {
    (void)arg;
    g_called = 1;
    return NULL;
}

static void *thread_runs_without_memory(void *arg) {
    ctx_test_alloc_fail_all(1);
    int r = ctx_capture_run(arg, note_call, NULL, NULL); /* no thread state yet */
    ctx_test_alloc_fail_all(0);
    ctx_thread_release();
    return (void *)(intptr_t)r;
}

/* A thread that has no state yet and cannot make one: CTX_ENOMEM, and fn is
 * never called. */
static void test_run_without_thread_state_memory(void **state) {
    (void)state;
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    ctx_test_alloc_install();
    g_called = 0;
    pthread_t th;
    void *r = NULL;
    assert_int_equal(pthread_create(&th, NULL, thread_runs_without_memory, &cap), 0);
    assert_int_equal(pthread_join(th, &r), 0);
    ctx_test_alloc_uninstall();
    assert_int_equal((int)(intptr_t)r, CTX_ENOMEM);
    assert_int_equal(g_called, 0);
    ctx_capture_clear(&cap);
    assert_int_equal(ctx_thread_release(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture_is_a_snapshot),
        cmocka_unit_test(test_sets_stay_in_the_capture),
        cmocka_unit_test(test_nested_run_is_eentered),
        cmocka_unit_test(test_copy_of_a_context),
        cmocka_unit_test(test_capturing_allocates_nothing),
        cmocka_unit_test(test_run_that_leaves_a_context_entered),
        cmocka_unit_test(test_run_on_another_thread),
        cmocka_unit_test(test_concurrent_runs_exclude_each_other),
        cmocka_unit_test(test_run_exclusive),
        cmocka_unit_test(test_thread_exit_inside_a_run),
        cmocka_unit_test(test_run_whose_fn_exits_its_context),
        cmocka_unit_test(test_exported_allocator),
        cmocka_unit_test(test_run_without_thread_state_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
