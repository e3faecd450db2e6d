/* SPDX-License-Identifier: MIT */
/*
 * bench_bus.c — the bus module's figures (an event bus with
 * context-scoped listeners).
 *
 * The contract figure, bus_publish_ns_8: one thread publishes one event
 * synchronously to 8 listeners — 4 global and 4 scoped in the publisher's
 * context, subscribed alternately, half on the exact topic and half on a
 * "prefix.*" pattern — each listener an empty function that bumps a
 * counter.  The event is made once and published again and again (events
 * are immutable; a publish borrows it), so the figure is the bus's own
 * cost: the global list read in a read section (src/bus/reclaim.c: stores
 * to the thread's own record, no lock, no reference), the scoped list (a
 * ctx_var_get cache hit, borrowed), the thread's delivery plan (the
 * in-order merge and the 8 matches, made once and reused while the lists,
 * the topic and the bus's unsubscribe count stay the same), 8 unsubscribe
 * checks and 8 indirect calls.  Each figure is the MEDIAN
 * of ctx_bench_rounds() timed rounds (bench.h); the synchronous figures and
 * their baseline are measured in the same interleaved rounds, and
 * bus_publish_vs_direct_ratio is the ratio of their medians.
 *
 *   bus_publish_ns_8            the contract figure (above)
 *   bus_direct_calls_ns_8       baseline: the same 8 listeners called
 *                               through a plain array of function pointers
 *                               (a static array: on the stack, its page
 *                               offset moved with ASLR and 4K aliasing with
 *                               the listeners' counter slowed this baseline
 *                               by up to 1.8x in some runs)
 *   bus_publish_vs_direct_ratio bus_publish_ns_8 / bus_direct_calls_ns_8
 *   bus_publish_ns_0            publish with no listener at all
 *   bus_publish_ns_8_2threads   bus_publish_ns_8 with two threads
 *                               publishing at once from copies of the same
 *                               context (shared lists, read by both:
 *                               the read side writes no shared line)
 *   bus_event_publish_release_ns_8  event_new + publish + release: the
 *                               cost with an event made per publish
 *   bus_publish_pool_ns_8       asynchronous through a 2-worker pool, per
 *                               event, first publish to wait_idle return
 *   bus_publish_loop_ns_8       asynchronous through a loop (when built
 *                               with the loop module), per event, published
 *                               from the loop thread then run
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <ctxvar.h>
#include <ctxvar/bus.h>
#include <ctxvar/pool.h>
#if defined(CTX_BUS_HAVE_LOOP)
#include <ctxvar/loop.h>
#endif

#include "bench.h"

#define LISTENERS 8

static _Thread_local unsigned long calls;
static atomic_ulong async_calls;

static int bench_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    calls++;
    return 0;
}

static int bench_async_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_fetch_add_explicit(&async_calls, 1, memory_order_relaxed);
    return 0;
}

static void check(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "bench_bus: %s: %s\n", what, ctx_error_name(rc));
        abort();
    }
}

/* 4 global + 4 scoped (in the current context), alternating, half exact,
 * half prefix. */
static void subscribe_eight(ctx_bus_t *bus, ctx_bus_listener_fn fn) {
    for (int i = 0; i < LISTENERS; i++) {
        ctx_bus_subscribe_options_t o = {sizeof(ctx_bus_subscribe_options_t), (i & 1) ? CTX_BUS_SCOPED : 0, NULL};
        check(ctx_bus_subscribe(bus, (i & 2) ? "bench.*" : "bench.tick", fn, NULL, &o, NULL),
              "subscribe");
    }
}

static double time_publishes(ctx_bus_t *bus, ctx_bus_event_t *ev, long n, int expect) {
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++)
        if (ctx_bus_publish(bus, ev) != expect)
            abort();
    return (double)(ctx_bench_now_ns() - t0) / (double)n;
}

/* The baseline: the same listeners, called from a plain array. */
static double time_direct(ctx_bus_event_t *ev, long n) {
    static ctx_bus_listener_fn fns[LISTENERS];
    for (int i = 0; i < LISTENERS; i++)
        fns[i] = bench_listener;
    ctx_bus_listener_fn *volatile table = fns; /* keep the calls indirect */
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++) {
        ctx_bus_listener_fn *t = table;
        for (int k = 0; k < LISTENERS; k++)
            t[k](NULL, ev, NULL);
    }
    return (double)(ctx_bench_now_ns() - t0) / (double)n;
}

static double time_event_per_publish(ctx_bus_t *bus, long n) {
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++) {
        ctx_bus_event_t *ev = NULL;
        if (ctx_bus_event_new("bench.tick", NULL, NULL, &ev) != 0 ||
            ctx_bus_publish(bus, ev) != LISTENERS)
            abort();
        ctx_bus_event_release(ev);
    }
    return (double)(ctx_bench_now_ns() - t0) / (double)n;
}

/* ---- two publishers at once ---- */

typedef struct contender {
    ctx_bus_t *bus;
    ctx_bus_event_t *ev;
    long n;
    double ns;
    pthread_barrier_t *start;
} contender_t;

static void *contend(void *arg) {
    contender_t *c = arg;
    pthread_barrier_wait(c->start);
    c->ns = time_publishes(c->bus, c->ev, c->n, LISTENERS);
    ctx_thread_release();
    return NULL;
}

static double time_two_threads(ctx_bus_t *bus, ctx_bus_event_t *ev, long n) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    contender_t c[2];
    ctx_pool_thread_t *t[2];
    for (int i = 0; i < 2; i++) {
        c[i] = (contender_t){bus, ev, n, 0, &start};
        /* Each thread starts in a copy of this context: the scoped list is
         * shared by both. */
        check(ctx_pool_thread_create(contend, &c[i], CTX_POOL_THREAD_INHERIT, &t[i]),
              "thread");
    }
    for (int i = 0; i < 2; i++)
        check(ctx_pool_thread_join(t[i], NULL), "join");
    pthread_barrier_destroy(&start);
    return (c[0].ns + c[1].ns) / 2;
}

/* ---- asynchronous ---- */

static double time_pool(ctx_bus_t *bus, ctx_bus_event_t *ev, long n) {
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = 2;
    ctx_pool_t *pool = NULL;
    check(ctx_pool_new(&o, &pool), "pool");
    atomic_store(&async_calls, 0);
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++)
        if (ctx_bus_publish_pool(bus, ev, pool) != LISTENERS)
            abort();
    check(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), "wait_idle");
    double ns = (double)(ctx_bench_now_ns() - t0) / (double)n;
    if (atomic_load(&async_calls) != (unsigned long)n * LISTENERS)
        abort();
    ctx_pool_release(pool);
    return ns;
}

#if defined(CTX_BUS_HAVE_LOOP)
static double time_loop(ctx_bus_t *bus, ctx_bus_event_t *ev, long n) {
    ctx_loop_t *loop = NULL;
    check(ctx_loop_new(NULL, &loop), "loop");
    atomic_store(&async_calls, 0);
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++)
        if (ctx_bus_publish_loop(bus, ev, loop) != LISTENERS)
            abort();
    check(ctx_loop_run(loop, UV_RUN_DEFAULT), "run");
    double ns = (double)(ctx_bench_now_ns() - t0) / (double)n;
    if (atomic_load(&async_calls) != (unsigned long)n * LISTENERS)
        abort();
    check(ctx_loop_close(loop), "close");
    ctx_loop_release(loop);
    return ns;
}
#endif

void ctx_bench_bus(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    long n = quick ? 50000 : 1000000; /* per round */

    /* Something else in the context, as a real request would have. */
    ctx_var_t *request = NULL;
    static int request_id = 42;
    check(ctx_var_new("request", NULL, &request), "var");
    check(ctx_var_set(request, &request_id, NULL), "set");

    ctx_bus_t *empty = NULL, *bus = NULL;
    check(ctx_bus_new(NULL, &empty), "bus");
    check(ctx_bus_new(NULL, &bus), "bus");
    subscribe_eight(bus, bench_listener);
    ctx_bus_event_t *ev = NULL;
    check(ctx_bus_event_new("bench.tick", NULL, NULL, &ev), "event");

    int runs = ctx_bench_rounds(b);
    ctx_bench_samples_t pub = {0}, direct = {0}, none = {0}, fresh = {0};
    time_publishes(bus, ev, n / 10, LISTENERS); /* warm up */
    for (int r = 0; r < runs; r++) { /* interleaved: drifts hit all alike */
        ctx_bench_sample(&pub, time_publishes(bus, ev, n, LISTENERS));
        ctx_bench_sample(&direct, time_direct(ev, n));
        ctx_bench_sample(&none, time_publishes(empty, ev, n, 0));
        ctx_bench_sample(&fresh, time_event_per_publish(bus, n / 4));
    }
    ctx_bench_put_samples(b, "bus_publish_ns_8", &pub, CTX_BENCH_NO_GOAL,
                          "sync publish to 8 listeners (4 global, 4 scoped)");
    ctx_bench_put_samples(b, "bus_direct_calls_ns_8", &direct, CTX_BENCH_NO_GOAL,
                          "baseline: the 8 listeners from a plain array");
    ctx_bench_put_ratio(b, "bus_publish_vs_direct_ratio", &pub, &direct, CTX_BENCH_AT_MOST(1.5),
                        "bus_publish_ns_8 / direct calls");
    ctx_bench_put_samples(b, "bus_publish_ns_0", &none, CTX_BENCH_NO_GOAL, "sync publish, no listener");
    ctx_bench_put_samples(b, "bus_event_publish_release_ns_8", &fresh, CTX_BENCH_NO_GOAL,
                          "event_new + publish to 8 + release");

    ctx_bench_samples_t two = {0};
    for (int r = 0; r < runs; r++)
        ctx_bench_sample(&two, time_two_threads(bus, ev, n / 4));
    ctx_bench_put_samples(b, "bus_publish_ns_8_2threads", &two, CTX_BENCH_NO_GOAL,
                          "bus_publish_ns_8, two threads at once (shared lists)");

    ctx_bus_t *async_bus = NULL;
    check(ctx_bus_new(NULL, &async_bus), "bus");
    subscribe_eight(async_bus, bench_async_listener);
    long an = quick ? 5000 : 40000;
    ctx_bench_samples_t pool = {0};
#if defined(CTX_BUS_HAVE_LOOP)
    ctx_bench_samples_t loop = {0};
#endif
    for (int r = 0; r < runs; r++) {
        ctx_bench_sample(&pool, time_pool(async_bus, ev, an));
#if defined(CTX_BUS_HAVE_LOOP)
        ctx_bench_sample(&loop, time_loop(async_bus, ev, an));
#endif
    }
    ctx_bench_put_samples(b, "bus_publish_pool_ns_8", &pool, CTX_BENCH_NO_GOAL,
                          "async publish via a 2-worker pool, per event, to idle");
#if defined(CTX_BUS_HAVE_LOOP)
    ctx_bench_put_samples(b, "bus_publish_loop_ns_8", &loop, CTX_BENCH_NO_GOAL,
                          "async publish via a loop, per event, publish then run");
#endif

    ctx_bus_event_release(ev);
    ctx_bus_release(async_bus);
    ctx_bus_release(bus);
    ctx_bus_release(empty);
    ctx_var_release(request);
    ctx_thread_release();
    if (calls == 0)
        abort(); /* (keeps the listeners' work observable) */
}
