/* SPDX-License-Identifier: MIT */
/*
 * bus_test.h — what the bus module's tests share (tests/bus/test_*.c):
 * cmocka, assertion macros that print error names, iteration scaling under
 * valgrind and TSan, a failure counter for checks made off the main thread,
 * a recording listener and error handler, events with counted data, and the
 * per-test teardown that releases the thread's ctxvar state.
 *
 * cmocka's assertions longjmp to the test's main thread, so code running on
 * pool workers, loop callbacks or helper threads checks with OFF_MAIN_CHECK
 * and the test asserts off_main_failures() == 0 on the main thread.
 */
#ifndef CTX_BUS_TEST_H
#define CTX_BUS_TEST_H

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

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
#include <time.h>

#include <ctxvar.h>
#include <ctxvar/bus.h>
#include <ctxvar/pool.h>

#include "../support/support.h"

#define SCALED(n, valgrind, tsan) CTX_SCALED(n, valgrind, tsan)

#include "ctx_test.h"

#define IV(n) ((void *)(intptr_t)(n))

/* ---- failures seen off the main thread ---- */

static atomic_int bus_test_off_main_failures;

#define OFF_MAIN_CHECK(cond)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            atomic_fetch_add(&bus_test_off_main_failures, 1);                  \
            fprintf(stderr, "%s:%d: off-main check failed: %s\n", __FILE__,    \
                    __LINE__, #cond);                                          \
        }                                                                      \
    } while (0)

static inline int off_main_failures(void) { return atomic_load(&bus_test_off_main_failures); }

/* ---- variables holding small integers ---- */

static inline ctx_var_t *new_var(const char *name) {
    ctx_var_t *v = NULL;
    ASSERT_RC(ctx_var_new(name, NULL, &v), 0);
    return v;
}

/* The int value of `var` in the current context, or -1 if it has none. */
static inline long get_int(const ctx_var_t *var) {
    void *v = NULL;
    return ctx_var_get(var, &v) == CTX_VALUE ? (long)(intptr_t)v : -1;
}

static inline void set_int(ctx_var_t *var, long n) { ASSERT_RC(ctx_var_set(var, IV(n), NULL), 0); }

/* ---- a recording listener ----
 * `user` is a recorder: every call appends (its tag, the event's data as an
 * int, the value of the recorder's variable in the calling context) to a
 * log, under a mutex (listeners may run on several threads at once). */

#define RECORD_MAX 4096

typedef struct record_entry {
    int tag;
    long data;
    long ctx_value;
} record_entry_t;

typedef struct recorder {
    pthread_mutex_t lock;
    ctx_var_t *var; /* may be NULL: ctx_value is then -1 */
    int tag;
    int fail_with; /* returned by the listener (0: success) */
    atomic_int calls;
    int count;
    record_entry_t entries[RECORD_MAX];
} recorder_t;

static inline void recorder_init(recorder_t *r, int tag, ctx_var_t *var) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->tag = tag;
    r->var = var;
    atomic_init(&r->calls, 0);
}

static inline void recorder_destroy(recorder_t *r) { pthread_mutex_destroy(&r->lock); }

static inline int recorder_count(recorder_t *r) {
    pthread_mutex_lock(&r->lock);
    int n = r->count;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static inline int record_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    recorder_t *r = user;
    atomic_fetch_add(&r->calls, 1);
    pthread_mutex_lock(&r->lock);
    if (r->count < RECORD_MAX) {
        record_entry_t *e = &r->entries[r->count++];
        e->tag = r->tag;
        e->data = (long)(intptr_t)ctx_bus_event_data(event);
        e->ctx_value = r->var ? get_int(r->var) : -1;
    }
    pthread_mutex_unlock(&r->lock);
    return r->fail_with;
}

/* A shared log of tags in call order (to check delivery order). */
typedef struct order_log {
    pthread_mutex_t lock;
    int n;
    int tags[64];
} order_log_t;

static inline void order_log_init(order_log_t *o) {
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->lock, NULL);
}

typedef struct order_user {
    order_log_t *log;
    int tag;
} order_user_t;

static inline int order_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    order_user_t *u = user;
    pthread_mutex_lock(&u->log->lock);
    if (u->log->n < 64)
        u->log->tags[u->log->n++] = u->tag;
    pthread_mutex_unlock(&u->log->lock);
    return 0;
}

/* ---- events with counted data ---- */

static atomic_int data_released;

static inline void count_release(void *data) {
    (void)data;
    atomic_fetch_add(&data_released, 1);
}

/* An event whose data is the integer n, counted in data_released when it
 * dies. */
static inline ctx_bus_event_t *new_event(const char *topic, long n) {
    ctx_bus_event_t *ev = NULL;
    ASSERT_RC(ctx_bus_event_new(topic, IV(n), count_release, &ev), 0);
    return ev;
}

/* Publishes one event synchronously and releases it; returns publish's
 * result. */
static inline int publish_int(ctx_bus_t *bus, const char *topic, long n) {
    ctx_bus_event_t *ev = new_event(topic, n);
    int r = ctx_bus_publish(bus, ev);
    ctx_bus_event_release(ev);
    return r;
}

/* ---- an error handler that records ---- */

typedef struct error_log {
    atomic_int count;
    atomic_int last_code;
    ctx_bus_listener_t *_Atomic last_listener;
} error_log_t;

static inline void record_error(ctx_bus_t *bus, ctx_bus_listener_t *listener,
                                ctx_bus_event_t *event, int code, void *user) {
    (void)bus;
    (void)event;
    error_log_t *log = user;
    atomic_store(&log->last_code, code);
    atomic_store(&log->last_listener, listener);
    atomic_fetch_add(&log->count, 1);
}

static inline ctx_bus_t *new_bus(error_log_t *errors) {
    ctx_bus_t *bus = NULL;
    ctx_bus_options_t o = {sizeof(ctx_bus_options_t), record_error, errors};
    if (errors)
        memset(errors, 0, sizeof *errors);
    ASSERT_RC(ctx_bus_new(errors ? &o : NULL, &bus), 0);
    return bus;
}

static inline ctx_bus_listener_t *subscribe(ctx_bus_t *bus, const char *pattern,
                                            ctx_bus_listener_fn fn, void *user, unsigned flags) {
    ctx_bus_subscribe_options_t o = {sizeof(ctx_bus_subscribe_options_t), flags, NULL};
    ctx_bus_listener_t *l = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, pattern, fn, user, &o, &l), 0);
    assert_non_null(l);
    return l;
}

/* ---- per-test cleanup ---- */

/* Every test leaves the main thread without ctxvar state, so valgrind and
 * the counting allocator see no leak. */
static inline int release_thread(void **state) {
    (void)state;
    int rc = ctx_thread_release();
    if (rc != 0) {
        fprintf(stderr, "teardown: ctx_thread_release: %s\n", ctx_error_name(rc));
        return -1;
    }
    return 0;
}

static inline void short_nap(void) {
    struct timespec ts = {0, 200000}; /* 0.2 ms */
    nanosleep(&ts, NULL);
}

#endif /* CTX_BUS_TEST_H */
