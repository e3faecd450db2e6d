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
 * region.  Runs of the pools being compared are interleaved (ours with
 * propagation, ours without, GLib), many short rounds, and each figure is
 * the best of its runs, like the core's figures: on a shared 2-processor
 * machine three busy threads are at the mercy of every other process, and
 * the best of many interleaved rounds is what each pool can do when it gets
 * the processors, with the same number of chances for each.  The medians
 * are reported too (*_median_ns), to show the spread.
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double best(const double *v, int n) {
    double b = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < b)
            b = v[i];
    return b;
}

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

static double bind_calls(unsigned flags, long n) {
    ctx_pool_bound_t *b = NULL;
    ctx_pool_bound_options_t o = {.flags = flags};
    if (ctx_pool_bound_new(bound_nothing, NULL, &o, &b) != 0)
        abort();
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t t0 = ctx_bench_now_ns();
        for (long i = 0; i < n; i++)
            if (ctx_pool_bound_call(b, NULL, NULL) != 0)
                abort();
        double ns = (double)(ctx_bench_now_ns() - t0) / (double)n;
        if (ns < best)
            best = ns;
    }
    ctx_pool_bound_release(b);
    return best;
}

void ctx_bench_pool(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    long n = quick ? 10000 : 50000;
    enum { MAX_RUNS = 21 };
    int runs = quick ? 5 : MAX_RUNS;
    sem_init(&all_done, 0, 0);

    /* Something to propagate. */
    ctx_var_t *request = NULL;
    static int request_id = 42;
    if (ctx_var_new("request", NULL, &request) != 0 ||
        ctx_var_set(request, &request_id, NULL) != 0)
        abort();

    double on[MAX_RUNS], off[MAX_RUNS];
#if HAVE_GLIB
    double glib[MAX_RUNS];
    run_glib(n / 4); /* warm up GLib's allocator and threads */
#endif
    run_ours(CTX_POOL_PROPAGATE_COPY, n / 4);
    for (int r = 0; r < runs; r++) {
        on[r] = run_ours(CTX_POOL_PROPAGATE_COPY, n);
        off[r] = run_ours(CTX_POOL_PROPAGATE_NONE, n);
#if HAVE_GLIB
        glib[r] = run_glib(n);
#endif
    }
    double on_ns = best(on, runs), off_ns = best(off, runs);
    ctx_bench_put(b, "pool_task_ns", on_ns,
                  "pool: submit-to-completion per empty task, propagation on, 2 workers");
    ctx_bench_put(b, "pool_task_off_ns", off_ns, "the same, propagation off");
    ctx_bench_put(b, "pool_propagation_ratio", on_ns / off_ns,
                  "pool_task_ns / pool_task_off_ns (goal <= 1.05)");
#if HAVE_GLIB
    double glib_ns = best(glib, runs);
    ctx_bench_put(b, "pool_glib_task_ns", glib_ns,
                  "baseline: GLib GThreadPool, same workload");
    ctx_bench_put(b, "pool_vs_glib_ratio", on_ns / glib_ns,
                  "pool_task_ns / pool_glib_task_ns (goal <= 1.0)");
    ctx_bench_put(b, "pool_glib_task_median_ns", median(glib, runs),
                  "median of the GLib runs (spread)");
#else
    fprintf(stderr, "bench_pool: built without GLib (CTX_BENCH_HAVE_GLIB): "
                    "pool_vs_glib_ratio not measured\n");
#endif
    ctx_bench_put(b, "pool_task_median_ns", median(on, runs),
                  "median of the pool_task_ns runs (spread)");
    ctx_bench_put(b, "pool_task_off_median_ns", median(off, runs),
                  "median of the pool_task_off_ns runs (spread)");
    ctx_bench_put(b, "pool_roundtrip_ns", roundtrip(quick ? 2000 : 20000),
                  "pool: submit one task, wait for its future, one at a time");
    long calls = quick ? 200000 : 2000000;
    ctx_bench_put(b, "bind_call_ns", bind_calls(0, calls),
                  "ctx_pool_bound_call of an empty function (fresh copy per call)");
    ctx_bench_put(b, "bind_call_shared_ns", bind_calls(CTX_POOL_BOUND_SHARED, calls),
                  "the same with CTX_POOL_BOUND_SHARED (one shared context)");

    ctx_var_release(request);
    ctx_thread_release();
    sem_destroy(&all_done);
}
