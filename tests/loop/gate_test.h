/* SPDX-License-Identifier: MIT */
/*
 * gate_test.h — "no user callback under a library lock" (docs/api-rules.md),
 * tested the same way for every path (tests/loop/test_locks.c,
 * tests/bus/test_locks.c).
 *
 * A user callback of the path under test calls gate_hold(): it says it has
 * entered and waits for the gate to open.  Meanwhile a helper thread
 * (gate_start) waits until the callback has entered, makes its calls on the
 * very object whose callback is running (`other`), records what they
 * returned, and opens the gate.  If the library held a lock around the
 * callback that one of those calls needs, the helper blocks, the gate never
 * opens, and gate_hold gives up after GATE_TIMEOUT_S seconds and reports
 * failure: a deadlock detector, not a timing assertion (the timeout only
 * bounds a test that would otherwise hang).  After the gate opened, the
 * callback makes calls of its own on the same object (calling back in).
 */
#ifndef CTX_GATE_TEST_H
#define CTX_GATE_TEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define GATE_TIMEOUT_S 60

typedef struct gate gate_t;
typedef void (*gate_fn)(gate_t *gate);

struct gate {
    atomic_int entered;
    atomic_int opened;
    atomic_int held;     /* gate_hold calls that saw the gate open */
    atomic_int timeouts; /* gate_hold calls that gave up */
    gate_fn other;       /* the helper's calls */
    void *object;        /* what they are made on */
    void *extra;
    int rc[8];           /* what they returned */
    pthread_t thread;
};

static inline void gate_nap(void) {
    struct timespec ts = {0, 200000}; /* 0.2 ms */
    nanosleep(&ts, NULL);
}

static inline void *gate_helper(void *arg) {
    gate_t *g = arg;
    long waited = 0;
    while (!atomic_load(&g->entered) && waited++ < GATE_TIMEOUT_S * 5000L)
        gate_nap();
    if (atomic_load(&g->entered))
        g->other(g);
    atomic_store(&g->opened, 1);
    return NULL;
}

/* Starts the helper, which makes `other`'s calls on `object` once the
 * callback under test is inside gate_hold. */
static inline void gate_start(gate_t *g, gate_fn other, void *object, void *extra) {
    atomic_init(&g->entered, 0);
    atomic_init(&g->opened, 0);
    atomic_init(&g->held, 0);
    atomic_init(&g->timeouts, 0);
    g->other = other;
    g->object = object;
    g->extra = extra;
    for (int i = 0; i < 8; i++)
        g->rc[i] = 1234; /* "not called" */
    pthread_create(&g->thread, NULL, gate_helper, g);
}

/* In the callback under test: waits until the helper has made its calls.
 * Returns 1 if it did, 0 if it timed out (blocked by a lock). */
static inline int gate_hold(gate_t *g) {
    atomic_store(&g->entered, 1);
    long waited = 0;
    while (!atomic_load(&g->opened) && waited++ < GATE_TIMEOUT_S * 5000L)
        gate_nap();
    int ok = atomic_load(&g->opened);
    atomic_fetch_add(ok ? &g->held : &g->timeouts, 1);
    return ok;
}

/* Joins the helper. */
static inline void gate_join(gate_t *g) { pthread_join(g->thread, NULL); }

#endif /* CTX_GATE_TEST_H */
