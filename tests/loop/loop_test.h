/* SPDX-License-Identifier: MIT */
/*
 * loop_test.h — what the loop module's tests share: cmocka, assertion
 * macros that print error names, int-valued variables, an error handler
 * that records instead of printing, and scaling of work under valgrind and
 * TSan.
 *
 * Values in these tests are small integers stored in the pointer
 * ((void *)(intptr_t)n): no value operations, nothing to release.
 */
#ifndef CTX_LOOP_TEST_H
#define CTX_LOOP_TEST_H

/* uv.h and pthreads under -std=c11. */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

/* cmocka needs these before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/loop.h>
#include <ctxvar/pool.h>

#include "../support/support.h"

#include "ctx_test.h"

#define SCALED(n, valgrind, tsan) CTX_SCALED(n, valgrind, tsan)

#define IV(n) ((void *)(intptr_t)(n))

static inline ctx_var_t *new_var(const char *name) {
    ctx_var_t *v = NULL;
    ASSERT_RC(ctx_var_new(name, NULL, &v), 0);
    return v;
}

/* The int value of `var` in the current context, or -1 if it has none. */
static inline long get_int(const ctx_var_t *var) {
    void *v = NULL;
    int r = ctx_var_get(var, &v);
    return r == CTX_VALUE ? (long)(intptr_t)v : -1;
}

/* The int value of `var` in `ctx` (not entered), or -1. */
static inline long ctx_get_int(ctx_context_t *ctx, const ctx_var_t *var) {
    void *v = NULL;
    return ctx_context_get(ctx, var, &v) == 0 ? (long)(intptr_t)v : -1;
}

static inline void set_int(ctx_var_t *var, long n) { ASSERT_RC(ctx_var_set(var, IV(n), NULL), 0); }

/* ---- an error handler that records ---- */

typedef struct reports {
    int count;
    int last_code;
} reports_t;

static inline void record_report(ctx_loop_t *loop, int code, const char *what, void *user) {
    (void)loop;
    (void)what;
    reports_t *r = user;
    r->count++;
    r->last_code = code;
}

/* ---- loops ---- */

/* A loop over a uv loop of its own, with the recording error handler. */
static inline ctx_loop_t *new_loop(reports_t *reports) {
    ctx_loop_t *loop = NULL;
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
    assert_non_null(loop);
    if (reports) {
        memset(reports, 0, sizeof *reports);
        ASSERT_RC(ctx_loop_set_error_handler(loop, record_report, reports), 0);
    }
    return loop;
}

static inline void close_loop(ctx_loop_t *loop) {
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
}

/* Runs until nothing is scheduled. */
static inline void run_loop(ctx_loop_t *loop) {
    ASSERT_RC(ctx_loop_run(loop, UV_RUN_DEFAULT), 0);
}

/* cmocka teardown: every test leaves the thread without ctxvar state. */
static inline int release_thread(void **state) {
    (void)state;
    return ctx_thread_release();
}

#endif /* CTX_LOOP_TEST_H */
