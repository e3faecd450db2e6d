/* SPDX-License-Identifier: MIT */
/*
 * test_threads.c — copies of a context in pool-like threads share its
 * scope.
 *
 * A "submitter" makes a scope current, then hands work to worker threads
 * the way a pool or a loop does — a ctx_capture_t per task, or a context
 * copy run with ctx_context_run — without depending on the pool's code.
 * Every worker must see the very scope the submitter made current, block in
 * ctx_cancel_sleep until the submitter cancels it, then see the same error
 * and cause; a worker's own enter/exit stays in its copy; a child scope a
 * worker makes inside its copy is cancelled with the submitter's.
 */
#include "cancel_test.h"

#define WORKERS 8

typedef struct task {
    ctx_capture_t capture;      /* the pool's way */
    ctx_context_t *copy;        /* or a plain copy */
    ctx_cancel_scope_t *seen;   /* ctx_cancel_scope_current in the worker */
    int sleep_rc;
    int check_rc;
    int cause_code;
    int own_child_err;
    int exit_rc;
    atomic_int *ready;
} task_t;

static void *task_body(void *arg) {
    task_t *t = arg;
    t->seen = NULL;
    ctx_cancel_scope_current(&t->seen);
    /* A scope of the worker's own, inside its copy. */
    ctx_cancel_scope_t *mine = NULL;
    ctx_token_t *tok = NULL;
    ctx_cancel_enter_child(NULL, &mine, &tok);
    atomic_fetch_add(t->ready, 1);
    t->sleep_rc = ctx_cancel_sleep(-1); /* until the submitter cancels */
    t->check_rc = ctx_cancel_check();
    t->own_child_err = ctx_cancel_scope_error(mine);
    ctx_cancel_cause_t c = cause_of(0, NULL);
    ctx_cancel_scope_cause(mine, &c);
    t->cause_code = c.code;
    t->exit_rc = ctx_cancel_exit(tok);
    ctx_cancel_scope_release(mine);
    return NULL;
}

static void *run_capture(void *arg) {
    task_t *t = arg;
    ctx_capture_run(&t->capture, task_body, t, NULL);
    ctx_thread_release();
    return NULL;
}

static void *run_copy(void *arg) {
    task_t *t = arg;
    ctx_context_run(t->copy, task_body, t, NULL);
    ctx_thread_release();
    return NULL;
}

static void test_copies_in_threads_share_the_scope(void **state) {
    (void)state;
    ctx_cancel_scope_t *s;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    static task_t tasks[WORKERS];
    atomic_int ready = 0;
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        memset(&tasks[i], 0, sizeof tasks[i]);
        tasks[i].ready = &ready;
        if (i % 2) {
            ctx_capture_current(&tasks[i].capture);
            assert_int_equal(pthread_create(&th[i], NULL, run_capture, &tasks[i]), 0);
        } else {
            ASSERT_RC(ctx_context_copy_current(&tasks[i].copy), 0);
            assert_int_equal(pthread_create(&th[i], NULL, run_copy, &tasks[i]), 0);
        }
    }
    /* Leaving the scope here changes nothing for the copies already made. */
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_cancel_check(), 0);
    for (int i = 0; i < 30000 && atomic_load(&ready) < WORKERS; i++)
        sleep_ns(MS);
    assert_int_equal(atomic_load(&ready), WORKERS);
    ctx_cancel_cause_t cause = cause_of(504, NULL);
    ASSERT_RC(ctx_cancel_scope_cancel(s, &cause), 0);
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < WORKERS; i++) {
        task_t *t = &tasks[i];
        assert_ptr_equal(t->seen, s);
        ASSERT_RC(t->sleep_rc, CTX_ECANCELLED);
        ASSERT_RC(t->check_rc, CTX_ECANCELLED);
        ASSERT_RC(t->own_child_err, CTX_ECANCELLED);
        assert_int_equal(t->cause_code, 504);
        ASSERT_RC(t->exit_rc, 0);
        if (i % 2)
            ctx_capture_clear(&t->capture);
        else
            ctx_context_release(t->copy);
    }
    ctx_cancel_scope_release(s);
}

/* A copy made while a scope is current, run on another thread after the
 * scope was cancelled, sees it cancelled at once (a pool task picked up
 * late); a capture of a detached context never does. */
static void *late_check(void *arg) {
    task_t *t = arg;
    t->check_rc = ctx_cancel_check();
    return NULL;
}

static void *run_capture_late(void *arg) {
    task_t *t = arg;
    ctx_capture_run(&t->capture, late_check, t, NULL);
    ctx_thread_release();
    return NULL;
}

static void test_late_tasks_see_the_cancellation(void **state) {
    (void)state;
    ctx_cancel_scope_t *s;
    ctx_token_t *tok, *dtok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    task_t in_scope = {0}, detached = {0};
    ctx_capture_current(&in_scope.capture);
    ASSERT_RC(ctx_cancel_enter(NULL, &dtok), 0);
    ctx_capture_current(&detached.capture);
    ASSERT_RC(ctx_cancel_exit(dtok), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    ASSERT_RC(ctx_cancel_capture_check(&in_scope.capture), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_capture_check(&detached.capture), 0);
    pthread_t a, b;
    in_scope.check_rc = detached.check_rc = 1;
    assert_int_equal(pthread_create(&a, NULL, run_capture_late, &in_scope), 0);
    assert_int_equal(pthread_create(&b, NULL, run_capture_late, &detached), 0);
    assert_int_equal(pthread_join(a, NULL), 0);
    assert_int_equal(pthread_join(b, NULL), 0);
    ASSERT_RC(in_scope.check_rc, CTX_ECANCELLED);
    ASSERT_RC(detached.check_rc, 0);
    ctx_capture_clear(&in_scope.capture);
    ctx_capture_clear(&detached.capture);
    ctx_cancel_scope_release(s);
}

static int teardown(void **state) {
    (void)state;
    cancel_teardown();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copies_in_threads_share_the_scope),
        cmocka_unit_test(test_late_tasks_see_the_cancellation),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
