/* SPDX-License-Identifier: MIT */
/*
 * bench_pool.c — the pool module's figures (issues 14 and the pool's own).
 *
 * Every figure is the MEDIAN of ctx_bench_rounds() rounds (>= 11), and the
 * contenders of a comparison run in the same rounds, interleaved, their order
 * rotated from round to round (bench.h); every ratio is a ratio of medians.
 * Before the harness had rounds, pool_task_ns, pool_task_off_ns,
 * pool_glib_task_ns and the ratios built on them were best-of figures, which
 * on a shared 2-processor machine picked different scheduling regimes for
 * different pools; they now mean the median.  The
 * *_median_ns keys are kept for compatibility and equal their figure;
 * *_best_ns keys give the best round, for information only.
 *
 * The throughput matrix
 * ---------------------
 * The workload, the same for every contender: a pool of 2 workers; S
 * submitter threads (S = 1 or 4) each submit N/S tasks as fast as they can;
 * each task does its work, then bumps a shared atomic counter, and the last
 * one stamps the time and posts a semaphore.  The figure is the wall time
 * from the first submitter leaving a start barrier to that stamp, divided by N:
 * submit-to-completion cost per task, in ns.  Pools and submitter threads
 * are created and destroyed outside the timed region, once per round.
 * Each submitter holds one variable in its context, so propagation has
 * something to carry.  Tasks are empty, or ("_spin") spin 200 iterations
 * of a compiler-opaque loop (about 240 ns on the 2-processor machine this was
 * written on) before finishing.
 *
 * Contenders:
 *   ctxvar       ctx_pool_submit, propagation on (CTX_POOL_PROPAGATE_COPY,
 *                the default): every task runs in a copy of its submitter's
 *                context
 *   ctxvar off   the same with CTX_POOL_PROPAGATE_NONE
 *   glib         GLib's GThreadPool (exclusive, 2 threads), g_thread_pool_push
 *   plain        a plain mutex + condition variable FIFO written below
 *                (malloc'd node per task, signal per push): what a C
 *                programmer writes in 60 lines
 *
 * Keys (S = s1 or s4; the _spin variants use the spinning task):
 *   pool_task_ns_S[_spin]         ctxvar, ns per task
 *   pool_task_off_ns_S[_spin]     ctxvar off
 *   pool_glib_task_ns_S[_spin]    GLib
 *   pool_plain_task_ns_S[_spin]   the plain queue
 *   pool_vs_glib_ratio_S[_spin]   pool_task_ns / pool_glib_task_ns  (goal <= 1.0)
 *   pool_vs_plain_ratio_S[_spin]  pool_task_ns / pool_plain_task_ns (goal <= 1.0)
 *   pool_propagation_ratio_S[_spin] ctxvar / ctxvar off (information)
 * and the historical keys, all for s1 with empty tasks:
 *   pool_task_ns, pool_task_off_ns, pool_glib_task_ns, pool_vs_glib_ratio
 *   pool_propagation_ratio        pool_task_ns / pool_task_off_ns (goal <= 1.05)
 *
 * Latency
 * -------
 * One submitter submits tasks one at a time with a pseudo-random sleep of 0
 * to 50 us between submits (timer slack 1 ns; the submitter gives its
 * processor away meanwhile, as a thread waiting for its next request does),
 * which covers both workers still polling and workers asleep; each task
 * records (start - submit) from a
 * timestamp taken just before the submit call.  Per round the p50 and p99
 * over its tasks; the figure is the median over rounds, ctxvar and GLib
 * interleaved:
 *   pool_latency_p50_ns, pool_latency_p99_ns            ctxvar
 *   pool_glib_latency_p50_ns, pool_glib_latency_p99_ns  GLib
 * On a 2-processor virtual machine these show mostly where the scheduler
 * puts the woken worker.  With tasks this sparse the workers are asleep at
 * a submit; one woken onto the submitter's processor starts as soon as the
 * submitter sleeps (2-3 us), one woken onto the other, idle, processor
 * waits for it to leave its idle state (20-28 us, the same as nanosleep's
 * own overshoot there).  The kernel wakes a thread where it last ran, so
 * which worker a submit wakes decides it: ctxvar wakes one that parked on
 * the submitter's processor (src/pool/queue.c).  Before it did (8852f85,
 * the newest parked worker), pool_latency_p50_ns read 21.8-30.1 us in 7
 * runs of --only pool (GLib 6.0-6.7 us in the 3 that printed it); with it,
 * 1.7-3.0 us in the 7 runs interleaved with those, the task throughput
 * unchanged.
 *
 * Groups
 * ------
 * One submitter (this thread, holding one variable) hands N empty tasks to
 * a pool of 2 workers, then waits for all of them, interleaved with the
 * same through plain fire-and-forget submits (waiting on the last task's
 * semaphore); ns per task, from the first submit to the end of the wait:
 *   pool_group_task_ns           ctx_pool_group_new, N ctx_pool_group_submit,
 *                                ctx_pool_group_wait (each task a record in
 *                                the group's scope)
 *   pool_group_submit_task_ns    N ctx_pool_submit (light tasks), in the
 *                                same rounds
 *   pool_group_ratio             the two (information)
 *
 * Others
 * ------
 *   pool_roundtrip_ns      submit one task, wait for its future, repeat
 *   bind_call_ns           ctx_pool_bound_call of an empty function (own copy)
 *   bind_call_shared_ns    the same with CTX_POOL_BOUND_SHARED (no copy)
 *
 * GLib (Debian's libglib2.0-dev) is used only here, when the build defines
 * CTX_BENCH_HAVE_GLIB (CMake does when pkg-config finds glib-2.0); without
 * it the GLib keys are not reported.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

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
#define MAX_SUBMITTERS 4
#define SPIN_ITERATIONS 200

/* ---------------------------------------------------------------------- */
/* The work and the finish line                                            */
/* ---------------------------------------------------------------------- */

static atomic_long finished;
static long target;
static sem_t all_done;
static uint64_t finish_ns; /* stamped by the last task, before it posts */
static int spin_tasks; /* the current round's tasks spin */

static void spin(void) {
    for (int i = 0; i < SPIN_ITERATIONS; i++)
        __asm__ volatile("" ::: "memory");
}

static void task_body(void) {
    if (spin_tasks)
        spin();
    if (atomic_fetch_add_explicit(&finished, 1, memory_order_acq_rel) + 1 == target) {
        finish_ns = ctx_bench_now_ns();
        sem_post(&all_done);
    }
}

static int ctx_task(void *arg, void **result) {
    (void)arg;
    (void)result;
    task_body();
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The plain queue: mutex + condition variable + malloc'd nodes            */
/* ---------------------------------------------------------------------- */

typedef struct plain_node {
    struct plain_node *next;
    void (*fn)(void *);
    void *arg;
} plain_node_t;

typedef struct plain_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    plain_node_t *head, *tail;
    int stop;
    pthread_t threads[WORKERS];
} plain_pool_t;

static void *plain_worker(void *p) {
    plain_pool_t *q = p;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cond, &q->lock);
        plain_node_t *n = q->head;
        if (!n)
            break;
        q->head = n->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->lock);
        n->fn(n->arg);
        free(n);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static plain_pool_t *plain_new(void) {
    plain_pool_t *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&q->threads[i], NULL, plain_worker, q) != 0)
            abort();
    return q;
}

static void plain_submit(plain_pool_t *q, void (*fn)(void *), void *arg) {
    plain_node_t *n = malloc(sizeof *n);
    if (!n)
        abort();
    n->next = NULL;
    n->fn = fn;
    n->arg = arg;
    pthread_mutex_lock(&q->lock);
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

static void plain_release(plain_pool_t *q) {
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    free(q);
}

static void plain_task(void *arg) {
    (void)arg;
    task_body();
}

/* ---------------------------------------------------------------------- */
/* GLib                                                                    */
/* ---------------------------------------------------------------------- */

#if HAVE_GLIB
static void glib_task(gpointer data, gpointer user) {
    (void)data;
    (void)user;
    task_body();
}

static GThreadPool *glib_new(GFunc fn) {
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(fn, NULL, WORKERS, TRUE, &err);
    if (!pool)
        abort();
    return pool;
}
#endif

/* ---------------------------------------------------------------------- */
/* One round of the matrix                                                 */
/* ---------------------------------------------------------------------- */

typedef enum kind { K_CTX, K_CTX_OFF, K_GLIB, K_PLAIN } kind_t;

typedef struct matrix_round {
    kind_t kind;
    int submitters;
    int spin;
    long n; /* tasks per round, all submitters together */
} matrix_round_t;

typedef struct submitter {
    const matrix_round_t *round;
    void *pool;
    long n;
    pthread_barrier_t *start;
    ctx_var_t *var;
    uint64_t started_ns; /* when it left the barrier */
} submitter_t;

static void *submitter_main(void *p) {
    submitter_t *s = p;
    static int request_id = 42;
    /* Something to propagate, in this thread's own context. */
    if (ctx_var_set(s->var, &request_id, NULL) != 0)
        abort();
    pthread_barrier_wait(s->start);
    s->started_ns = ctx_bench_now_ns();
    switch (s->round->kind) {
    case K_CTX:
    case K_CTX_OFF:
        for (long i = 0; i < s->n; i++)
            if (ctx_pool_submit(s->pool, ctx_task, NULL, NULL) != 0)
                abort();
        break;
    case K_PLAIN:
        for (long i = 0; i < s->n; i++)
            plain_submit(s->pool, plain_task, NULL);
        break;
    case K_GLIB:
#if HAVE_GLIB
    {
        static int token; /* GLib refuses NULL task data */
        for (long i = 0; i < s->n; i++)
            g_thread_pool_push(s->pool, &token, NULL);
    }
#endif
        break;
    }
    ctx_thread_release();
    return NULL;
}

static ctx_var_t *request_var;

static void *pool_new_of(kind_t kind) {
    ctx_pool_t *ctx_pool = NULL;
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = WORKERS;
    switch (kind) {
    case K_CTX:
    case K_CTX_OFF:
        o.propagation = kind == K_CTX ? CTX_POOL_PROPAGATE_COPY : CTX_POOL_PROPAGATE_NONE;
        if (ctx_pool_new(&o, &ctx_pool) != 0)
            abort();
        return ctx_pool;
    case K_PLAIN:
        return plain_new();
    case K_GLIB:
#if HAVE_GLIB
        return glib_new(glib_task);
#else
        abort();
#endif
    }
    return NULL;
}

static void pool_release_of(kind_t kind, void *pool) {
    switch (kind) {
    case K_CTX:
    case K_CTX_OFF:
        ctx_pool_release(pool);
        break;
    case K_PLAIN:
        plain_release(pool);
        break;
    case K_GLIB:
#if HAVE_GLIB
        g_thread_pool_free(pool, FALSE, TRUE);
#endif
        break;
    }
}

/* ns per task of one round. */
static double matrix_round(void *arg) {
    const matrix_round_t *r = arg;
    void *pool = pool_new_of(r->kind);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)r->submitters + 1);
    submitter_t subs[MAX_SUBMITTERS];
    pthread_t threads[MAX_SUBMITTERS];
    long per = r->n / r->submitters;
    atomic_store(&finished, 0);
    target = per * r->submitters;
    spin_tasks = r->spin;
    for (int i = 0; i < r->submitters; i++) {
        subs[i] = (submitter_t){r, pool, per, &start, request_var, 0};
        if (pthread_create(&threads[i], NULL, submitter_main, &subs[i]) != 0)
            abort();
    }
    pthread_barrier_wait(&start);
    sem_wait(&all_done);
    /* From the first submitter off the barrier to the last task's end (this
     * thread may be scheduled late on either side). */
    uint64_t t0 = UINT64_MAX;
    for (int i = 0; i < r->submitters; i++) {
        pthread_join(threads[i], NULL);
        if (subs[i].started_ns < t0)
            t0 = subs[i].started_ns;
    }
    uint64_t t1 = finish_ns;
    pthread_barrier_destroy(&start);
    pool_release_of(r->kind, pool);
    return (double)(t1 - t0) / (double)target;
}

typedef struct matrix_keys {
    const char *ctx, *off, *glib, *plain, *vs_glib, *vs_plain, *propagation;
} matrix_keys_t;

static void matrix(ctx_bench_t *b, int submitters, int spin_task, long n, const matrix_keys_t *k) {
    matrix_round_t rounds[4];
    const kind_t kinds[4] = {K_CTX, K_CTX_OFF, K_PLAIN, K_GLIB};
    static const char *const names[4] = {"ctxvar", "ctxvar off", "plain", "glib"};
    ctx_bench_contender_t c[4];
    int count = HAVE_GLIB ? 4 : 3;
    for (int i = 0; i < count; i++) {
        rounds[i] = (matrix_round_t){kinds[i], submitters, spin_task, n};
        c[i] = (ctx_bench_contender_t){names[i], matrix_round, &rounds[i], {0}};
    }
    ctx_bench_interleave(b, c, count);
    const ctx_bench_samples_t *on = &c[0].samples, *off = &c[1].samples, *plain = &c[2].samples;
    ctx_bench_put_samples(b, k->ctx, on, CTX_BENCH_NO_GOAL, "ctxvar pool, propagation on, ns per task");
    ctx_bench_put_samples(b, k->off, off, CTX_BENCH_NO_GOAL, "ctxvar pool, propagation off");
    ctx_bench_put_samples(b, k->plain, plain, CTX_BENCH_NO_GOAL, "plain mutex+condvar queue");
    ctx_bench_put_ratio(b, k->vs_plain, on, plain, CTX_BENCH_AT_MOST(1.0), "ctxvar / plain queue");
#if HAVE_GLIB
    const ctx_bench_samples_t *glib = &c[3].samples;
    ctx_bench_put_samples(b, k->glib, glib, CTX_BENCH_NO_GOAL, "GLib GThreadPool");
    ctx_bench_put_ratio(b, k->vs_glib, on, glib, CTX_BENCH_AT_MOST(1.0), "ctxvar / GLib");
#else
    (void)k->glib;
    (void)k->vs_glib;
#endif
    if (k->propagation)
        ctx_bench_put_ratio(b, k->propagation, on, off, CTX_BENCH_NO_GOAL,
                            "propagation on / off (information)");
}

/* The s1 empty-task matrix, which also carries the historical keys. */
static void matrix_s1_empty(ctx_bench_t *b, long n) {
    matrix_round_t rounds[4];
    const kind_t kinds[4] = {K_CTX, K_CTX_OFF, K_PLAIN, K_GLIB};
    static const char *const names[4] = {"ctxvar", "ctxvar off", "plain", "glib"};
    ctx_bench_contender_t c[4];
    int count = HAVE_GLIB ? 4 : 3;
    for (int i = 0; i < count; i++) {
        rounds[i] = (matrix_round_t){kinds[i], 1, 0, n};
        c[i] = (ctx_bench_contender_t){names[i], matrix_round, &rounds[i], {0}};
    }
    ctx_bench_interleave(b, c, count);
    const ctx_bench_samples_t *on = &c[0].samples, *off = &c[1].samples, *plain = &c[2].samples;
    ctx_bench_put_samples(b, "pool_task_ns", on, CTX_BENCH_NO_GOAL,
                          "1 submitter, empty tasks, 2 workers: ctxvar, propagation on, ns per task");
    ctx_bench_put_samples(b, "pool_task_off_ns", off, CTX_BENCH_NO_GOAL, "the same, propagation off");
    ctx_bench_put_ratio(b, "pool_propagation_ratio", on, off, CTX_BENCH_AT_MOST(1.05),
                        "pool_task_ns / pool_task_off_ns");
    ctx_bench_put_samples(b, "pool_plain_task_ns_s1", plain, CTX_BENCH_NO_GOAL,
                          "plain mutex+condvar queue");
    ctx_bench_put_ratio(b, "pool_vs_plain_ratio_s1", on, plain, CTX_BENCH_AT_MOST(1.0),
                        "ctxvar / plain queue");
#if HAVE_GLIB
    const ctx_bench_samples_t *glib = &c[3].samples;
    ctx_bench_put_samples(b, "pool_glib_task_ns", glib, CTX_BENCH_NO_GOAL, "GLib GThreadPool");
    ctx_bench_put_ratio(b, "pool_vs_glib_ratio_s1", on, glib, CTX_BENCH_AT_MOST(1.0), "ctxvar / GLib");
    ctx_bench_put_ratio(b, "pool_vs_glib_ratio", on, glib, CTX_BENCH_AT_MOST(1.0),
                        "= pool_vs_glib_ratio_s1 (historical key)");
    ctx_bench_put(b, "pool_glib_task_median_ns", ctx_bench_median(glib), "= pool_glib_task_ns");
    ctx_bench_put_best(b, "pool_glib_task_best_ns", glib, "best GLib round");
#else
    fprintf(stderr, "bench_pool: built without GLib (CTX_BENCH_HAVE_GLIB): "
                    "the GLib figures are not measured\n");
#endif
    ctx_bench_put(b, "pool_task_median_ns", ctx_bench_median(on), "= pool_task_ns");
    ctx_bench_put(b, "pool_task_off_median_ns", ctx_bench_median(off), "= pool_task_off_ns");
    ctx_bench_put_best(b, "pool_task_best_ns", on, "best round of pool_task_ns");
    ctx_bench_put_best(b, "pool_task_off_best_ns", off, "best round of pool_task_off_ns");
}

/* ---------------------------------------------------------------------- */
/* Latency                                                                 */
/* ---------------------------------------------------------------------- */

typedef struct stamp {
    uint64_t submitted;
    uint64_t latency;
} stamp_t;

static void stamp_task(void *arg) {
    stamp_t *s = arg;
    s->latency = ctx_bench_now_ns() - s->submitted;
    task_body();
}

static int ctx_stamp_task(void *arg, void **result) {
    (void)result;
    stamp_task(arg);
    return 0;
}

#if HAVE_GLIB
static void glib_stamp_task(gpointer data, gpointer user) {
    (void)user;
    stamp_task(data);
}
#endif

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One latency round of `kind` (K_CTX or K_GLIB): p50 and p99 in ns. */
static void latency_round(kind_t kind, stamp_t *stamps, long n, double *p50, double *p99) {
    void *pool;
#if HAVE_GLIB
    pool = kind == K_GLIB ? (void *)glib_new(glib_stamp_task) : pool_new_of(kind);
#else
    pool = pool_new_of(kind);
#endif
    atomic_store(&finished, 0);
    target = n;
    spin_tasks = 0;
    uint32_t rng = 12345; /* the same pauses for every contender */
    for (long i = 0; i < n; i++) {
        rng = rng * 1664525u + 1013904223u;
        struct timespec pause = {0, (long)((rng >> 8) % 50000)};
        nanosleep(&pause, NULL);
        stamps[i].submitted = ctx_bench_now_ns();
        if (kind == K_CTX) {
            if (ctx_pool_submit(pool, ctx_stamp_task, &stamps[i], NULL) != 0)
                abort();
        } else {
#if HAVE_GLIB
            g_thread_pool_push(pool, &stamps[i], NULL);
#endif
        }
    }
    sem_wait(&all_done);
    pool_release_of(kind, pool);
    uint64_t *lat = malloc(sizeof *lat * (size_t)n);
    if (!lat)
        abort();
    for (long i = 0; i < n; i++)
        lat[i] = stamps[i].latency;
    qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
    *p50 = (double)lat[n / 2];
    *p99 = (double)lat[(n * 99) / 100];
    free(lat);
}

static void latency(ctx_bench_t *b, long n) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* sleeps as short as asked */
    stamp_t *stamps = calloc((size_t)n, sizeof *stamps);
    if (!stamps)
        abort();
    ctx_bench_samples_t p50 = {0}, p99 = {0};
#if HAVE_GLIB
    ctx_bench_samples_t g50 = {0}, g99 = {0};
#endif
    double x, y;
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        /* interleaved, the order alternating */
        for (int k = 0; k < 2; k++) {
            if ((r + k) % 2 == 0) {
                latency_round(K_CTX, stamps, n, &x, &y);
                ctx_bench_sample(&p50, x);
                ctx_bench_sample(&p99, y);
            } else {
#if HAVE_GLIB
                latency_round(K_GLIB, stamps, n, &x, &y);
                ctx_bench_sample(&g50, x);
                ctx_bench_sample(&g99, y);
#endif
            }
        }
    }
    ctx_bench_put_samples(b, "pool_latency_p50_ns", &p50, CTX_BENCH_NO_GOAL,
                          "submit-to-start latency, median task, pauses of 0-50 us between submits");
    ctx_bench_put_samples(b, "pool_latency_p99_ns", &p99, CTX_BENCH_NO_GOAL, "the same, 99th percentile");
#if HAVE_GLIB
    ctx_bench_put_samples(b, "pool_glib_latency_p50_ns", &g50, CTX_BENCH_NO_GOAL,
                          "GLib GThreadPool, same workload, median task");
    ctx_bench_put_samples(b, "pool_glib_latency_p99_ns", &g99, CTX_BENCH_NO_GOAL,
                          "GLib, 99th percentile");
#endif
    free(stamps);
    prctl(PR_SET_TIMERSLACK, 0UL, 0, 0, 0); /* back to the default */
}

/* ---------------------------------------------------------------------- */
/* Groups                                                                  */
/* ---------------------------------------------------------------------- */

typedef struct group_round {
    int grouped;
    long n;
} group_round_t;

static double group_round(void *arg) {
    const group_round_t *r = arg;
    ctx_pool_t *pool = pool_new_of(K_CTX);
    atomic_store(&finished, 0);
    target = r->n;
    spin_tasks = 0;
    uint64_t t0 = ctx_bench_now_ns(), t1;
    if (r->grouped) {
        ctx_pool_group_t *g = NULL;
        if (ctx_pool_group_new(pool, NULL, &g) != 0)
            abort();
        for (long i = 0; i < r->n; i++)
            if (ctx_pool_group_submit(g, ctx_task, NULL, NULL, NULL) != 0)
                abort();
        if (ctx_pool_group_wait(g, CTX_WAIT_FOREVER) != 0)
            abort();
        t1 = ctx_bench_now_ns();
        ctx_pool_group_release(g);
    } else {
        for (long i = 0; i < r->n; i++)
            if (ctx_pool_submit(pool, ctx_task, NULL, NULL) != 0)
                abort();
        sem_wait(&all_done);
        t1 = ctx_bench_now_ns();
    }
    if (r->grouped)
        sem_wait(&all_done); /* the last task's post, taken outside the time */
    pool_release_of(K_CTX, pool);
    return (double)(t1 - t0) / (double)r->n;
}

static void groups(ctx_bench_t *b, long n) {
    static int request_id = 7;
    ctx_token_t *tok = NULL; /* something to propagate */
    if (ctx_var_set(request_var, &request_id, &tok) != 0)
        abort();
    group_round_t rounds[2] = {{1, n}, {0, n}};
    ctx_bench_contender_t c[2] = {{"group", group_round, &rounds[0], {0}},
                                  {"submit", group_round, &rounds[1], {0}}};
    ctx_bench_interleave(b, c, 2);
    ctx_bench_put_samples(b, "pool_group_task_ns", &c[0].samples, CTX_BENCH_NO_GOAL,
                          "a task through a pool group: group_submit + group_wait, ns per task");
    ctx_bench_put_samples(b, "pool_group_submit_task_ns", &c[1].samples, CTX_BENCH_NO_GOAL,
                          "the same tasks through plain ctx_pool_submit, same rounds");
    ctx_bench_put_ratio(b, "pool_group_ratio", &c[0].samples, &c[1].samples, CTX_BENCH_NO_GOAL,
                        "pool_group_task_ns / pool_group_submit_task_ns (information)");
    if (ctx_var_reset(request_var, tok) != 0)
        abort();
    ctx_token_release(tok);
}

/* ---------------------------------------------------------------------- */
/* Round trips and bound callables                                         */
/* ---------------------------------------------------------------------- */

static int nothing(void *arg, void **result) {
    (void)arg;
    (void)result;
    return 0;
}

static double roundtrip(long n) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = WORKERS;
    if (ctx_pool_new(&o, &pool) != 0)
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
    ctx_pool_bound_options_t o = CTX_STRUCT_INIT(ctx_pool_bound_options_t);
    o.flags = flags;
    if (ctx_pool_bound_new(bound_nothing, NULL, &o, &b) != 0)
        abort();
    for (int r = 0; r < ctx_bench_rounds(bench); r++)
        CTX_BENCH_TIME(out, n, if (ctx_pool_bound_call(b, NULL, NULL) != 0) abort());
    ctx_pool_bound_release(b);
}

void ctx_bench_pool(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    long n = quick ? 20000 : 200000; /* tasks per round */
    sem_init(&all_done, 0, 0);
    if (ctx_var_new("request", NULL, &request_var) != 0)
        abort();

    matrix_s1_empty(b, n);
    matrix(b, 4, 0, n,
           &(matrix_keys_t){"pool_task_ns_s4", "pool_task_off_ns_s4", "pool_glib_task_ns_s4",
                            "pool_plain_task_ns_s4", "pool_vs_glib_ratio_s4",
                            "pool_vs_plain_ratio_s4", "pool_propagation_ratio_s4"});
    matrix(b, 1, 1, n,
           &(matrix_keys_t){"pool_task_ns_s1_spin", "pool_task_off_ns_s1_spin",
                            "pool_glib_task_ns_s1_spin", "pool_plain_task_ns_s1_spin",
                            "pool_vs_glib_ratio_s1_spin", "pool_vs_plain_ratio_s1_spin",
                            "pool_propagation_ratio_s1_spin"});
    matrix(b, 4, 1, n,
           &(matrix_keys_t){"pool_task_ns_s4_spin", "pool_task_off_ns_s4_spin",
                            "pool_glib_task_ns_s4_spin", "pool_plain_task_ns_s4_spin",
                            "pool_vs_glib_ratio_s4_spin", "pool_vs_plain_ratio_s4_spin",
                            "pool_propagation_ratio_s4_spin"});
    latency(b, quick ? 300 : 1500);
    groups(b, quick ? 20000 : 100000);

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

    ctx_var_release(request_var);
    ctx_thread_release();
    sem_destroy(&all_done);
}
