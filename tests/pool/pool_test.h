/* SPDX-License-Identifier: MIT */
/*
 * pool_test.h — what the pool module's tests share (tests/pool/test_*.c):
 * cmocka, assertion macros that print error names, a gate that holds tasks
 * until the test opens it (so tests order events without sleeping), a
 * per-thread failure counter for assertions made off the main thread, and
 * the scale factor for valgrind and TSan runs.
 *
 * cmocka's assertions longjmp to the test's main thread, so code running on
 * pool workers or helper threads records failures with OFF_MAIN_CHECK and the
 * test asserts off_main_failures() == 0 on the main thread.
 */
#ifndef CTX_POOL_TEST_H
#define CTX_POOL_TEST_H

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/pool.h>

#include "../support/support.h"

/* Work is divided by this under valgrind and TSan; every test asserts the
 * same properties at any scale. */
#if defined(CTX_TEST_UNDER_VALGRIND)
#define POOL_TEST_SCALE 50
#elif defined(CTX_TEST_UNDER_TSAN)
#define POOL_TEST_SCALE 10
#else
#define POOL_TEST_SCALE 1
#endif
#define SCALED(n) ((n) / POOL_TEST_SCALE > 0 ? (n) / POOL_TEST_SCALE : 1)

#include "ctx_test.h"

/* ---- failures seen off the main thread ---- */

static atomic_int pool_test_off_main_failures;

#define OFF_MAIN_CHECK(cond)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            atomic_fetch_add(&pool_test_off_main_failures, 1);                 \
            fprintf(stderr, "%s:%d: off-main check failed: %s\n", __FILE__,    \
                    __LINE__, #cond);                                          \
        }                                                                      \
    } while (0)

static inline int off_main_failures(void) {
    return atomic_load(&pool_test_off_main_failures);
}

/* ---- a gate: tasks wait at it until the test opens it ---- */

typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
    atomic_int arrived;
} gate_t;

static inline void gate_init(gate_t *g) {
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = 0;
    atomic_init(&g->arrived, 0);
}

static inline void gate_destroy(gate_t *g) {
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
}

static inline void gate_pass(gate_t *g) {
    atomic_fetch_add(&g->arrived, 1);
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static inline void gate_open(gate_t *g) {
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static inline void short_nap(void) {
    struct timespec ts = {0, 200000}; /* 0.2 ms */
    nanosleep(&ts, NULL);
}

/* The failing allocator's count of live blocks once the workers hold
 * still.  A worker finishes a task after its future became final (it drops
 * its record and the task's references then), so right after a wait the
 * count may still fall, on another thread; an allocation-failure sweep that
 * compares counts around one call reads them with this.  Waits until the
 * count holds for 5 naps in a row (bounded: a count that never settles
 * fails the test's comparison instead of hanging). */
static inline long pool_test_settled_blocks(void) {
    long last = ctx_test_alloc_live_blocks();
    for (int still = 0, i = 0; still < 5 && i < 10000; i++) {
        short_nap();
        long now = ctx_test_alloc_live_blocks();
        still = now == last ? still + 1 : 0;
        last = now;
    }
    return last;
}

/* Waits (without a deadline: ctest's timeout is the backstop) until `n`
 * threads have arrived at the gate. */
static inline void gate_await_arrivals(gate_t *g, int n) {
    while (atomic_load(&g->arrived) < n)
        short_nap();
}

/* A task that waits at the gate given as arg, then completes. */
static inline int task_gate(void *arg, void **result) {
    gate_pass(arg);
    *result = NULL;
    return 0;
}

/* A task that does nothing. */
static inline int task_nop(void *arg, void **result) {
    (void)arg;
    (void)result;
    return 0;
}

/* ---- the cancellation module's variable ----
 * A task with a future runs in a cancellation scope of its own (pool.h),
 * held by a context variable that the library makes at first use and keeps
 * for the life of the process.  Tests that count live blocks make it first,
 * before installing the counting allocator, so that it is not counted as a
 * block the test leaked (and drop the thread state made meanwhile). */
static inline void pool_test_make_cancel_var(void) {
    ctx_token_t *tok = NULL;
    if (ctx_cancel_enter(NULL, &tok) != 0 || ctx_cancel_exit(tok) != 0)
        fail_msg("pool_test_make_cancel_var: the cancellation variable could not be made");
    (void)ctx_thread_release(); /* the thread's state is the test's to count */
}

/* ---- per-test cleanup ---- */

/* The main thread's ctxvar state is released after every test, so valgrind
 * and the counting allocator see no leak. */
static inline int pool_teardown(void **state) {
    (void)state;
    int rc = ctx_thread_release();
    if (rc != 0) {
        fprintf(stderr, "teardown: ctx_thread_release: %s\n", ctx_error_name(rc));
        return -1;
    }
    return 0;
}

/* A variable holding plain pointers (no operations), optionally with a
 * default. */
static inline ctx_var_t *pool_make_var(const char *name, void *def,
                                       int has_default) {
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = def, .has_default = has_default, .ops = NULL};
    ctx_var_t *v = NULL;
    int rc = ctx_var_new(name, &o, &v);
    if (rc != 0)
        fail_msg("ctx_var_new(%s): %s", name, ctx_error_name(rc));
    return v;
}

/* The value `var` has in the calling thread's current context, or `none`. */
static inline void *pool_get(ctx_var_t *var, void *none) {
    void *v = NULL;
    return ctx_var_get(var, &v) >= 0 ? v : none;
}

#endif /* CTX_POOL_TEST_H */
