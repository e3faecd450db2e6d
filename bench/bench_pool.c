/*
 * bench_pool.c — the pool module's figures (issue: propagation across
 * threads).
 *
 * The workload, the same for every pool measured: one thread submits N empty
 * tasks to a pool of 2 workers; each task bumps an atomic counter and the
 * last one posts a semaphore; the figure is the wall time from the first
 * submit to that post, divided by N ("submit-to-completion cost per task").
 * The submitter holds one variable in its context, so propagation has
 * something to carry.  Pools are created and destroyed outside the timed
 * region.  Runs of the pools being compared are interleaved round by round
 * (ours with propagation, ours without, GLib; bench.h), and each figure is
 * the MEDIAN of its rounds; the ratios are ratios of medians.  (Before the
 * harness had rounds these keys were best-of figures, which on a shared
 * 2-processor machine picked different scheduling regimes for different
 * pools: issue 14.)  The *_median_ns keys are kept for compatibility and
 * now equal their figure; *_best_ns keys give the best rounds.
 *
 *   pool_task_ns            ours, propagation on (CTX_POOL_PROPAGATE_COPY)
 *   pool_task_off_ns        ours, propagation off (CTX_POOL_PROPAGATE_NONE)
 *   pool_propagation_ratio  on / off                       (goal <= 1.05)
 *   pool_glib_task_ns       GLib's GThreadPool, exclusive, 2 threads
 *   pool_vs_glib_ratio      pool_task_ns / pool_glib_task_ns (goal <= 1.0)
 *   pool_roundtrip_ns       submit one task, wait for its future, repeat
 *   bind_call_ns            ctx_pool_bound_call of an empty function (own copy)
 *   bind_call_shared_ns     the same with CTX_POOL_BOUND_SHARED (no copy)
 *
 * GLib (Debian's libglib2.0-dev) is used only here, when the build defines
 * CTX_BENCH_HAVE_GLIB (CMake does when pkg-config finds glib-2.0); without
 * it the two GLib keys are not reported.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <ctxvar.h>
#include <ctxvar/pool.h>

#include "bench.h"

#if defined(CTX_BENCH_HAVE_GLIB) || defined(CTX_HAVE_GLIB)
#include <glib.h>
#define HAVE_GLIB 1
#else
#define HAVE_GLIB 0
#endif

#define WORKERS 2

static atomic_long finished;
static long target;
static sem_t all_done;

static void task_finished(void) {
    if (atomic_fetch_add_explicit(&finished, 1, memory_order_acq_rel) + 1 == target)
        sem_post(&all_done);
}

static int empty_task(void *arg, void **result) {
    (void)arg;
    (void)result;
    task_finished();
    return 0;
}

static void start_run(long n) {
    atomic_store(&finished, 0);
    target = n;
}

/* ns per task for n tasks through a ctxvar pool with `policy`. */
static double run_ours(ctx_pool_propagation_t policy, long n) {
    ctx_pool_options_t o = {.threads = WORKERS, .propagation = policy};
    ctx_pool_t *pool = NULL;
    if (ctx_pool_new(&o, &pool) != 0)
        abort();
    start_run(n);
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++)
        if (ctx_pool_submit(pool, empty_task, NULL, NULL) != 0)
            abort();
    sem_wait(&all_done);
    uint64_t t1 = ctx_bench_now_ns();
    ctx_pool_release(pool);
    return (double)(t1 - t0) / (double)n;
}

#if HAVE_GLIB
static void glib_task(gpointer data, gpointer user) {
    (void)data;
    (void)user;
    task_finished();
}

static double run_glib(long n) {
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(glib_task, NULL, WORKERS, TRUE, &err);
    if (!pool)
        abort();
    static int token; /* GLib refuses NULL task data */
    start_run(n);
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++)
        g_thread_pool_push(pool, &token, NULL);
    sem_wait(&all_done);
    uint64_t t1 = ctx_bench_now_ns();
    g_thread_pool_free(pool, FALSE, TRUE);
    return (double)(t1 - t0) / (double)n;
}
#endif

static double round_on(void *arg) { return run_ours(CTX_POOL_PROPAGATE_COPY, *(long *)arg); }
static double round_off(void *arg) { return run_ours(CTX_POOL_PROPAGATE_NONE, *(long *)arg); }
#if HAVE_GLIB
static double round_glib(void *arg) { return run_glib(*(long *)arg); }
#endif

static int nothing(void *arg, void **result) {
    (void)arg;
    (void)result;
    return 0;
}

static double roundtrip(long n) {
    ctx_pool_t *pool = NULL;
    if (ctx_pool_new(&(ctx_pool_options_t){.threads = WORKERS}, &pool) != 0)
        abort();
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < n; i++) {
        ctx_pool_future_t *f = NULL;
        if (ctx_pool_submit(pool, nothing, NULL, &f) != 0 ||
            ctx_pool_future_wait(f, CTX_WAIT_FOREVER) != 0)
            abort();
        ctx_pool_future_release(f);
    }
    uint64_t t1 = ctx_bench_now_ns();
    ctx_pool_release(pool);
    return (double)(t1 - t0) / (double)n;
}

static void *bound_nothing(void *arg, void *call_arg) {
    (void)call_arg;
    return arg;
}

/* Rounds of n calls of a bound callable made with `flags`, into `out`. */
static void bind_calls(const ctx_bench_t *bench, unsigned flags, long n, ctx_bench_samples_t *out) {
    ctx_pool_bound_t *b = NULL;
    ctx_pool_bound_options_t o = {.flags = flags};
    if (ctx_pool_bound_new(bound_nothing, NULL, &o, &b) != 0)
        abort();
    for (int r = 0; r < ctx_bench_rounds(bench); r++)
        CTX_BENCH_TIME(out, n, if (ctx_pool_bound_call(b, NULL, NULL) != 0) abort());
    ctx_pool_bound_release(b);
}

void ctx_bench_pool(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    long n = quick ? 10000 : 50000; /* tasks per round */
    sem_init(&all_done, 0, 0);

    /* Something to propagate. */
    ctx_var_t *request = NULL;
    static int request_id = 42;
    if (ctx_var_new("request", NULL, &request) != 0 ||
        ctx_var_set(request, &request_id, NULL) != 0)
        abort();

    long args_n = n;
    ctx_bench_contender_t c[] = {
        {"ctxvar (propagation on)", round_on, &args_n, {0}},
        {"ctxvar (propagation off)", round_off, &args_n, {0}},
#if HAVE_GLIB
        {"GLib GThreadPool", round_glib, &args_n, {0}},
#endif
    };
    ctx_bench_interleave(b, c, (int)(sizeof c / sizeof c[0]));
    const ctx_bench_samples_t *on = &c[0].samples, *off = &c[1].samples;
    ctx_bench_put_samples(b, "pool_task_ns", on, CTX_BENCH_NO_GOAL,
                          "pool: submit-to-completion per empty task, propagation on, 2 workers");
    ctx_bench_put_samples(b, "pool_task_off_ns", off, CTX_BENCH_NO_GOAL, "the same, propagation off");
    ctx_bench_put_ratio(b, "pool_propagation_ratio", on, off, CTX_BENCH_AT_MOST(1.05),
                        "pool_task_ns / pool_task_off_ns");
#if HAVE_GLIB
    const ctx_bench_samples_t *glib = &c[2].samples;
    ctx_bench_put_samples(b, "pool_glib_task_ns", glib, CTX_BENCH_NO_GOAL,
                          "baseline: GLib GThreadPool, same workload");
    ctx_bench_put_ratio(b, "pool_vs_glib_ratio", on, glib, CTX_BENCH_AT_MOST(1.0),
                        "pool_task_ns / pool_glib_task_ns");
    ctx_bench_put(b, "pool_glib_task_median_ns", ctx_bench_median(glib), "= pool_glib_task_ns");
    ctx_bench_put_best(b, "pool_glib_task_best_ns", glib, "best GLib round");
#else
    fprintf(stderr, "bench_pool: built without GLib (CTX_BENCH_HAVE_GLIB): "
                    "pool_vs_glib_ratio not measured\n");
#endif
    ctx_bench_put(b, "pool_task_median_ns", ctx_bench_median(on), "= pool_task_ns");
    ctx_bench_put(b, "pool_task_off_median_ns", ctx_bench_median(off), "= pool_task_off_ns");
    ctx_bench_put_best(b, "pool_task_best_ns", on, "best round of pool_task_ns");
    ctx_bench_put_best(b, "pool_task_off_best_ns", off, "best round of pool_task_off_ns");
    ctx_bench_samples_t trip = {0}, call = {0}, shared = {0};
    for (int r = 0; r < ctx_bench_rounds(b); r++)
        ctx_bench_sample(&trip, roundtrip(quick ? 500 : 2000));
    ctx_bench_put_samples(b, "pool_roundtrip_ns", &trip, CTX_BENCH_NO_GOAL,
                          "pool: submit one task, wait for its future, one at a time");
    long calls = quick ? 50000 : 500000; /* per round */
    bind_calls(b, 0, calls, &call);
    bind_calls(b, CTX_POOL_BOUND_SHARED, calls, &shared);
    ctx_bench_put_samples(b, "bind_call_ns", &call, CTX_BENCH_NO_GOAL,
                          "ctx_pool_bound_call of an empty function (fresh copy per call)");
    ctx_bench_put_samples(b, "bind_call_shared_ns", &shared, CTX_BENCH_NO_GOAL,
                          "the same with CTX_POOL_BOUND_SHARED (one shared context)");

    ctx_var_release(request);
    ctx_thread_release();
    sem_destroy(&all_done);
}
