/* SPDX-License-Identifier: MIT */
/*
 * test_reserve.c — the thread's reserve of references to its current map
 * (src/core/reserve.c) must be invisible.  Captures take references from
 * it and clears give them back, so after captures a thread holds spare
 * references to its current map; each test checks that they never keep a
 * value alive once the current map has moved on (set, reset, exit, thread
 * release), that a set still updates a map its context alone holds in
 * place, and that references taken from a reserve may be dropped anywhere.
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

static atomic_int releases;
static void count_release(void *value, void *user) {
    (void)value;
    (void)user;
    atomic_fetch_add(&releases, 1);
}
static const ctx_value_ops_t counted = {.size = sizeof(ctx_value_ops_t), .release = count_release};

static ctx_var_t *new_var(const char *name) {
    ctx_var_t *v;
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .ops = &counted};
    assert_int_equal(ctx_var_new(name, &o, &v), 0);
    return v;
}

/* More captures than one refill of the reserve takes, and more clears than
 * it keeps: every path of reserve.c runs. */
#define MANY 700

static ctx_capture_t caps[MANY];

static void capture_and_clear_many(void) {
    for (int i = 0; i < MANY; i++)
        ctx_capture_current(&caps[i]);
    for (int i = 0; i < MANY; i++)
        ctx_capture_clear(&caps[i]);
}

static void test_set_releases_the_old_value_at_once(void **state) {
    (void)state;
    ctx_var_t *v = new_var("v");
    atomic_store(&releases, 0);
    assert_int_equal(ctx_var_set(v, (void *)1, NULL), 0);
    capture_and_clear_many();
    assert_int_equal(atomic_load(&releases), 0);
    /* The map that held 1 is held by nothing now but the spares. */
    assert_int_equal(ctx_var_set(v, (void *)2, NULL), 0);
    assert_int_equal(atomic_load(&releases), 1);
    assert_int_equal(ctx_thread_release(), 0);
    assert_int_equal(atomic_load(&releases), 2);
    ctx_var_release(v);
}

static void test_reset_releases_the_set_value_at_once(void **state) {
    (void)state;
    ctx_var_t *v = new_var("v");
    atomic_store(&releases, 0);
    ctx_token_t *t;
    assert_int_equal(ctx_var_set(v, (void *)1, &t), 0);
    capture_and_clear_many();
    assert_int_equal(ctx_var_reset(v, t), 0);
    ctx_token_release(t);
    assert_int_equal(atomic_load(&releases), 1);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(v);
}

/* A set in a map its context alone holds changes it in place: one
 * allocation, the new value's box.  Spare references left by captures
 * must not make the map look shared (which would copy its path). */
static void test_set_after_captures_is_still_in_place(void **state) {
    (void)state;
    ctx_var_t *vars[16];
    for (int i = 0; i < 16; i++) {
        vars[i] = new_var("v");
        assert_int_equal(ctx_var_set(vars[i], (void *)(intptr_t)(i + 1), NULL), 0);
    }
    ctx_test_alloc_install();
    assert_int_equal(ctx_var_set(vars[3], (void *)100, NULL), 0); /* in place */
    long alone = ctx_test_alloc_attempts();
    capture_and_clear_many();
    long before = ctx_test_alloc_attempts();
    assert_int_equal(ctx_var_set(vars[3], (void *)101, NULL), 0);
    assert_int_equal(ctx_test_alloc_attempts() - before, alone);
    ctx_test_alloc_uninstall();
    assert_int_equal(ctx_thread_release(), 0);
    for (int i = 0; i < 16; i++)
        ctx_var_release(vars[i]);
}

static void *capture_many(void *arg) {
    (void)arg;
    for (int i = 0; i < MANY; i++)
        ctx_capture_current(&caps[i]);
    return NULL;
}

static void test_exit_releases_the_exited_context_at_once(void **state) {
    (void)state;
    ctx_var_t *v = new_var("v");
    atomic_store(&releases, 0);
    ctx_context_t *c;
    assert_int_equal(ctx_context_new(&c), 0);
    assert_int_equal(ctx_context_enter(c), 0);
    assert_int_equal(ctx_var_set(v, (void *)1, NULL), 0);
    capture_and_clear_many();
    assert_int_equal(ctx_context_exit(c), 0);
    ctx_context_release(c);
    assert_int_equal(atomic_load(&releases), 1);
    assert_int_equal(ctx_thread_release(), 0);
    ctx_var_release(v);
}

/* Captures made on one thread, cleared on another (references are
 * fungible), and a thread that leaves spares behind at its release. */
static void *clear_all(void *arg) {
    (void)arg;
    for (int i = 0; i < MANY; i++)
        ctx_capture_clear(&caps[i]);
    return NULL;
}

static void *capture_in_own_context(void *arg) {
    ctx_var_t *v = arg;
    ctx_var_set(v, (void *)7, NULL);
    capture_many(NULL);
    clear_all(NULL);
    capture_many(NULL); /* left for the main thread to clear */
    ctx_thread_release();
    return NULL;
}

static void test_references_cross_threads(void **state) {
    (void)state;
    ctx_var_t *v = new_var("v");
    atomic_store(&releases, 0);
    assert_int_equal(ctx_var_set(v, (void *)1, NULL), 0);
    capture_many(NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, clear_all, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&releases), 0);

    assert_int_equal(pthread_create(&th, NULL, capture_in_own_context, v), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&releases), 0); /* the captures hold 7 */
    for (int i = 0; i < MANY - 1; i++)
        ctx_capture_clear(&caps[i]);
    assert_int_equal(atomic_load(&releases), 0);
    ctx_capture_clear(&caps[MANY - 1]);
    assert_int_equal(atomic_load(&releases), 1);
    assert_int_equal(ctx_thread_release(), 0);
    assert_int_equal(atomic_load(&releases), 2);
    ctx_var_release(v);
}

/* Copies of the current context come from the reserve too. */
static void test_copies_of_the_current_context(void **state) {
    (void)state;
    ctx_var_t *v = new_var("v");
    atomic_store(&releases, 0);
    assert_int_equal(ctx_var_set(v, (void *)1, NULL), 0);
    ctx_context_t *copies[100];
    for (int i = 0; i < 100; i++)
        assert_int_equal(ctx_context_copy_current(&copies[i]), 0);
    assert_int_equal(ctx_var_set(v, (void *)2, NULL), 0);
    assert_int_equal(atomic_load(&releases), 0); /* the copies hold 1 */
    for (int i = 0; i < 100; i++) {
        void *out = NULL;
        assert_int_equal(ctx_context_get(copies[i], v, &out), 0);
        assert_ptr_equal(out, (void *)1);
        ctx_context_release(copies[i]);
    }
    assert_int_equal(atomic_load(&releases), 1);
    assert_int_equal(ctx_thread_release(), 0);
    assert_int_equal(atomic_load(&releases), 2);
    ctx_var_release(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_releases_the_old_value_at_once),
        cmocka_unit_test(test_reset_releases_the_set_value_at_once),
        cmocka_unit_test(test_set_after_captures_is_still_in_place),
        cmocka_unit_test(test_exit_releases_the_exited_context_at_once),
        cmocka_unit_test(test_references_cross_threads),
        cmocka_unit_test(test_copies_of_the_current_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
