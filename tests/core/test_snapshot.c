/* SPDX-License-Identifier: MIT */
/*
 * test_snapshot.c — ctx_snapshot_t: a context's values alone, run once in a
 * context of their own.  Each test checks one promise of the header: the
 * snapshot holds the values of the moment it was taken; a run sees them,
 * takes them over and drops every set it made; tokens made in a run are
 * refused afterwards, even by a later run at the same stack address; an
 * empty (all-zero) snapshot is harmless; taking, running and clearing
 * allocate nothing; a thread that cannot make its state leaves the
 * snapshot as it was; a run that leaves a context entered still ends.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <ctxvar.h>

#include "support.h"

static int releases;
static void count_release(void *value, void *user) {
    (void)value;
    (void)user;
    releases++;
}
static const ctx_value_ops_t counted = {.size = sizeof(ctx_value_ops_t), .release = count_release};

static ctx_var_t *g_var;

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

static void *read_var(void *arg) {
    (void)arg;
    return value_of(g_var);
}

static void *set_var(void *arg) {
    if (ctx_var_set(g_var, arg, NULL) != 0)
        return NULL;
    return value_of(g_var);
}

static int is_empty(const ctx_snapshot_t *s) {
    static const ctx_snapshot_t zero;
    return memcmp(s, &zero, sizeof zero) == 0;
}

/* The values of the moment it was taken, not later ones; the run takes
 * them over (the snapshot is empty afterwards) and the caller's context is
 * untouched. */
static void test_run_sees_the_values_taken(void **state) {
    (void)state;
    g_var = new_var("v");
    assert_int_equal(ctx_var_set(g_var, (void *)1, NULL), 0);
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap);
    assert_false(is_empty(&snap));
    assert_int_equal(ctx_var_set(g_var, (void *)2, NULL), 0); /* after: not in it */
    void *seen = NULL;
    assert_int_equal(ctx_snapshot_run(&snap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)1);
    assert_true(is_empty(&snap));
    assert_ptr_equal(value_of(g_var), (void *)2);
    /* Run again, it is empty: no value at all. */
    seen = (void *)99;
    assert_int_equal(ctx_snapshot_run(&snap, read_var, NULL, &seen), 0);
    assert_null(seen);
    ctx_snapshot_clear(&snap); /* empty: nothing happens */
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

/* A run's sets are its own: invisible to the caller, gone when it returns
 * (the value it set is released then), and the values the snapshot held
 * are released once the run is over if nobody else holds them. */
static void test_sets_end_with_the_run(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_context_t *ctx;
    assert_int_equal(ctx_context_new(&ctx), 0);
    assert_int_equal(ctx_context_enter(ctx), 0);
    assert_int_equal(ctx_var_set(g_var, (void *)1, NULL), 0);
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap);
    assert_int_equal(ctx_context_exit(ctx), 0);
    ctx_context_release(ctx); /* now only the snapshot holds value 1 */
    int before = releases;
    void *seen = NULL;
    assert_int_equal(ctx_snapshot_run(&snap, set_var, (void *)7, &seen), 0);
    assert_ptr_equal(seen, (void *)7);
    assert_int_equal(releases, before + 2); /* 7 with the run, 1 with the snapshot */
    assert_null(value_of(g_var));
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static ctx_token_t *g_token;

static void *set_and_keep_token(void *arg) {
    return (void *)(intptr_t)ctx_var_set(g_var, arg, &g_token);
}

static void *reset_kept_token(void *arg) {
    (void)arg;
    return (void *)(intptr_t)ctx_var_reset(g_var, g_token);
}

static void *reset_own_token(void *arg) {
    ctx_token_t *tok = NULL;
    if (ctx_var_set(g_var, arg, &tok) != 0)
        return (void *)(intptr_t)-1000;
    int r = ctx_var_reset(g_var, tok);
    ctx_token_release(tok);
    return (void *)(intptr_t)r;
}

/* Two runs from the same frame use the same stack address for their
 * context: the second must still refuse the first one's token, as a
 * different context (Python: ValueError). */
static void test_token_of_an_earlier_run_is_refused(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_snapshot_t a = {0}, b = {0};
    ctx_snapshot_current(&a);
    ctx_snapshot_current(&b);
    void *r = NULL;
    assert_int_equal(ctx_snapshot_run(&a, set_and_keep_token, (void *)1, &r), 0);
    assert_int_equal((int)(intptr_t)r, 0);
    assert_non_null(g_token);
    assert_int_equal(ctx_snapshot_run(&b, reset_kept_token, NULL, &r), 0);
    assert_int_equal((int)(intptr_t)r, CTX_ETOKENCTX);
    /* And in the caller's context as well. */
    assert_int_equal(ctx_var_reset(g_var, g_token), CTX_ETOKENCTX);
    ctx_token_release(g_token);
    /* A token made and used inside one run works. */
    ctx_snapshot_current(&a);
    assert_int_equal(ctx_snapshot_run(&a, reset_own_token, (void *)2, &r), 0);
    assert_int_equal((int)(intptr_t)r, 0);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

/* Clearing releases exactly what only the snapshot held; a second clear, an
 * all-zero snapshot and NULLs do nothing. */
static void test_clear(void **state) {
    (void)state;
    g_var = new_var("v");
    ctx_context_t *ctx;
    assert_int_equal(ctx_context_new(&ctx), 0);
    assert_int_equal(ctx_context_enter(ctx), 0);
    assert_int_equal(ctx_var_set(g_var, (void *)4, NULL), 0);
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap);
    assert_int_equal(ctx_context_exit(ctx), 0);
    int before = releases;
    ctx_context_release(ctx);
    assert_int_equal(releases, before); /* the snapshot still holds it */
    ctx_snapshot_clear(&snap);
    assert_int_equal(releases, before + 1);
    assert_true(is_empty(&snap));
    ctx_snapshot_clear(&snap);
    assert_int_equal(releases, before + 1);
    ctx_snapshot_clear(NULL);
    ctx_snapshot_current(NULL);
    assert_int_equal(ctx_snapshot_run(NULL, read_var, NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_snapshot_run(&snap, NULL, NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static void test_snapshots_allocate_nothing(void **state) {
    (void)state;
    g_var = new_var("v");
    assert_int_equal(ctx_var_set(g_var, (void *)1, NULL), 0);
    ctx_test_alloc_install();
    ctx_test_alloc_fail_all(1);
    ctx_snapshot_t a = {0}, b = {0};
    ctx_snapshot_current(&a);
    ctx_snapshot_current(&b);
    void *seen = NULL;
    assert_int_equal(ctx_snapshot_run(&a, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)1);
    ctx_snapshot_clear(&b);
    ctx_test_alloc_fail_all(0);
    assert_int_equal(ctx_test_alloc_fired(), 0);
    ctx_test_alloc_uninstall();
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static int g_called;

static void *note_call(void *arg) {
    (void)arg;
    g_called = 1;
    return NULL;
}

static void *thread_runs_without_memory(void *arg) {
    ctx_test_alloc_fail_all(1);
    int r = ctx_snapshot_run(arg, note_call, NULL, NULL); /* no thread state yet */
    ctx_test_alloc_fail_all(0);
    ctx_thread_release();
    return (void *)(intptr_t)r;
}

/* A thread with no state that cannot make one: CTX_ENOMEM, fn not called,
 * and the snapshot still holds its values (a later run sees them). */
static void test_failed_run_leaves_the_snapshot(void **state) {
    (void)state;
    g_var = new_var("v");
    assert_int_equal(ctx_var_set(g_var, (void *)5, NULL), 0);
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap);
    ctx_snapshot_t copy;
    memcpy(&copy, &snap, sizeof copy);
    ctx_test_alloc_install();
    g_called = 0;
    pthread_t th;
    void *r = NULL;
    assert_int_equal(pthread_create(&th, NULL, thread_runs_without_memory, &snap), 0);
    assert_int_equal(pthread_join(th, &r), 0);
    ctx_test_alloc_uninstall();
    assert_int_equal((int)(intptr_t)r, CTX_ENOMEM);
    assert_int_equal(g_called, 0);
    assert_memory_equal(&snap, &copy, sizeof copy);
    void *seen = NULL;
    assert_int_equal(ctx_snapshot_run(&snap, read_var, NULL, &seen), 0);
    assert_ptr_equal(seen, (void *)5);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static ctx_context_t *g_left;

static void *enter_and_stay(void *arg) {
    (void)arg;
    ctx_context_enter(g_left);
    return NULL;
}

/* fn leaves a context entered: CTX_ENOTCURRENT, that context stays current
 * above the caller's, and the run's own context is gone all the same. */
static void test_run_that_leaves_a_context_entered(void **state) {
    (void)state;
    g_var = new_var("v");
    assert_int_equal(ctx_var_set(g_var, (void *)1, NULL), 0);
    assert_int_equal(ctx_context_new(&g_left), 0);
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap);
    assert_int_equal(ctx_snapshot_run(&snap, enter_and_stay, NULL, NULL), CTX_ENOTCURRENT);
    assert_true(is_empty(&snap));
    assert_int_equal(ctx_context_is_entered(g_left), 1);
    assert_null(value_of(g_var));
    assert_int_equal(ctx_context_exit(g_left), 0);
    assert_ptr_equal(value_of(g_var), (void *)1);
    ctx_context_release(g_left);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

static void *thread_runs(void *arg) {
    void *seen = NULL;
    int r = ctx_snapshot_run(arg, read_var, NULL, &seen);
    ctx_thread_release();
    return r ? NULL : seen;
}

static void test_run_on_another_thread(void **state) {
    (void)state;
    g_var = new_var("v");
    assert_int_equal(ctx_var_set(g_var, (void *)9, NULL), 0);
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap);
    pthread_t th;
    void *seen = NULL;
    assert_int_equal(pthread_create(&th, NULL, thread_runs, &snap), 0);
    assert_int_equal(pthread_join(th, &seen), 0);
    assert_ptr_equal(seen, (void *)9);
    assert_true(is_empty(&snap));
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(g_var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_sees_the_values_taken),
        cmocka_unit_test(test_sets_end_with_the_run),
        cmocka_unit_test(test_token_of_an_earlier_run_is_refused),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_snapshots_allocate_nothing),
        cmocka_unit_test(test_failed_run_leaves_the_snapshot),
        cmocka_unit_test(test_run_that_leaves_a_context_entered),
        cmocka_unit_test(test_run_on_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
