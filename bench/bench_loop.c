/* SPDX-License-Identifier: MIT */
/*
 * bench_loop.c — the loop module's figures (its JSON keys are a contract).
 *
 *   loop_call_soon_ns         schedule one callback with ctx_loop_call_soon
 *                             (no handle, no options: the scheduler's
 *                             values, 4 variables, kept as a snapshot, O(1))
 *                             and run it in a context of its own holding
 *                             them: a chain in which each callback
 *                             schedules the next, so every callback costs
 *                             one loop iteration, as in a real program
 *   loop_call_soon_raw_ns     baseline: the same chain with a raw libuv
 *                             callback scheduled the same way — a malloc'd
 *                             record in a FIFO drained by a uv_idle_t, which
 *                             is the mechanism ctx_loop_call_soon uses —
 *                             on the same uv loop, with no context at all
 *   loop_capture_ratio        loop_call_soon / loop_call_soon_raw (goal <= 1.2)
 *   loop_call_soon_batch_ns   the same, 1000 callbacks scheduled, then one
 *   loop_call_soon_batch_raw_ns  iteration runs them all: the loop's fixed
 *   loop_capture_batch_ratio  cost is shared, so this ratio shows the
 *                             capture's own cost (goal <= 1.5)
 *   loop_task_step_ns         one step of a task that yields: enter the
 *                             task's context, step, re-arm, exit
 *
 * The example server (examples/server: a real server), when the
 * bench is built with it (CTX_BENCH_HAVE_SERVER): the ctxvar build and the
 * raw libuv + uv_queue_work build of the same TCP server, each round in a
 * fresh process of its own (round.c), driven by a load generator in this
 * process (SERVER_CONNECTIONS connections on loopback, each with one
 * request in flight); the two builds alternate round by round (the
 * harness's rotation), SERVER_THREADS workers each.
 *   loop_server_rps                      requests per second, ctxvar build
 *   loop_server_raw_rps                  the same, raw build
 *   loop_server_vs_raw_ratio             ctxvar / raw, ratio of the medians
 *                                        (goal >= 0.95)
 *   loop_server_cpu_us_per_request       the server process's CPU (user +
 *                                        system, all its threads) per
 *                                        request answered, ctxvar build
 *   loop_server_raw_cpu_us_per_request   the same, raw build
 *   loop_server_cpu_ratio                ctxvar / raw CPU per request
 *   loop_server_mismatch_count           context reads of the ctxvar build
 *                                        that saw another request's values,
 *                                        over every round (goal: 0)
 *
 * Threads and malloc.  The raw baselines allocate a record per callback
 * with malloc (ctxvar's handles are recycled), and glibc's malloc is
 * about three times slower once the process has ever had a second thread
 * (it then takes its arena lock: 11 against 31 ns for a malloc and a free
 * of 24 bytes on the machine this was written on).  Which state the
 * figures were measured in therefore decided them: after the cancel or
 * pool sections had started threads, loop_capture_batch_ratio read 1.13,
 * alone 2.5.  So the figures above are measured first, before any section
 * starts a thread (main calls ctx_bench_loop_early): the baselines at
 * their fastest, the ratios at their least flattering.  The same rounds
 * once the process has had a thread — the state of any program with a
 * pool, and of libuv's threadpool users — give, for information:
 *   loop_call_soon_mt_ns, loop_call_soon_raw_mt_ns, loop_capture_mt_ratio,
 *   loop_call_soon_batch_mt_ns, loop_call_soon_batch_raw_mt_ns,
 *   loop_capture_batch_mt_ratio
 *
 * Each figure is the MEDIAN of ctx_bench_rounds() rounds (bench.h; it was
 * the best of 9 runs before the harness had rounds), the rounds of the
 * figures and of their baselines interleaved, so a noisy machine disturbs
 * both alike; the ratios are ratios of those medians.
 * Built only when the loop module is (CTX_HAVE_LOOP, set by
 * src/loop/CMakeLists.txt); otherwise the section is empty.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#if defined(CTX_HAVE_LOOP)

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h> /* glibc 2.32: __libc_single_threaded */
#define CTX_BENCH_HAVE_SINGLE_THREADED 1
#endif
#endif

#include <ctxvar.h>
#include <ctxvar/loop.h>

#define BATCH 1000

/* ---- the raw libuv baseline: a FIFO drained by an idle handle ---- */

typedef struct raw_rec {
    struct raw_rec *next;
    void (*fn)(void *arg);
    void *arg;
} raw_rec_t;

typedef struct raw_queue {
    uv_idle_t idle;
    raw_rec_t *head;
    raw_rec_t *tail;
} raw_queue_t;

static void raw_run(uv_idle_t *idle) {
    raw_queue_t *q = (raw_queue_t *)idle;
    raw_rec_t *r = q->head;
    q->head = q->tail = NULL;
    while (r) {
        raw_rec_t *next = r->next;
        r->fn(r->arg);
        free(r);
        r = next;
    }
    if (!q->head)
        uv_idle_stop(idle);
}

static void raw_call_soon(raw_queue_t *q, void (*fn)(void *), void *arg) {
    raw_rec_t *r = malloc(sizeof *r);
    if (!r)
        abort();
    r->fn = fn;
    r->arg = arg;
    r->next = NULL;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    uv_idle_start(&q->idle, raw_run);
}

/* ---- chains ---- */

typedef struct chain {
    ctx_loop_t *loop;
    raw_queue_t *raw;
    long left;
    long sink;
} chain_t;

static void raw_link(void *arg) {
    chain_t *c = arg;
    c->sink++;
    if (--c->left > 0)
        raw_call_soon(c->raw, raw_link, c);
}

static void ctx_link(void *arg) {
    chain_t *c = arg;
    c->sink++;
    if (--c->left > 0 && ctx_loop_call_soon(c->loop, ctx_link, c, NULL, NULL) != 0)
        abort();
}

static void noop(void *arg) { ((chain_t *)arg)->sink++; }

static double per_op(uint64_t t0, long n) { return (double)(ctx_bench_now_ns() - t0) / (double)n; }

static double chain_raw(chain_t *c, long n) {
    c->left = n;
    uint64_t t0 = ctx_bench_now_ns();
    raw_call_soon(c->raw, raw_link, c);
    uv_run(ctx_loop_uv(c->loop), UV_RUN_DEFAULT);
    return per_op(t0, n);
}

static double chain_ctx(chain_t *c, long n) {
    c->left = n;
    uint64_t t0 = ctx_bench_now_ns();
    if (ctx_loop_call_soon(c->loop, ctx_link, c, NULL, NULL) != 0)
        abort();
    ctx_loop_run(c->loop, UV_RUN_DEFAULT);
    return per_op(t0, n);
}

static double batch_raw(chain_t *c, long rounds) {
    uint64_t t0 = ctx_bench_now_ns();
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < BATCH; i++)
            raw_call_soon(c->raw, noop, c);
        uv_run(ctx_loop_uv(c->loop), UV_RUN_DEFAULT);
    }
    return per_op(t0, rounds * BATCH);
}

static double batch_ctx(chain_t *c, long rounds) {
    uint64_t t0 = ctx_bench_now_ns();
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < BATCH; i++)
            if (ctx_loop_call_soon(c->loop, noop, c, NULL, NULL) != 0)
                abort();
        ctx_loop_run(c->loop, UV_RUN_DEFAULT);
    }
    return per_op(t0, rounds * BATCH);
}

/* ---- a task that yields ---- */

typedef struct yielder {
    long left;
} yielder_t;

static int yield_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    yielder_t *y = arg;
    if (--y->left <= 0)
        return 0;
    return ctx_loop_task_yield(task);
}

static double task_steps(ctx_loop_t *loop, long n) {
    yielder_t y = {n};
    uint64_t t0 = ctx_bench_now_ns();
    if (ctx_loop_task_new(loop, yield_step, &y, NULL, NULL) != 0)
        abort();
    ctx_loop_run(loop, UV_RUN_DEFAULT);
    return per_op(t0, n);
}

/* ---- the example server against the raw libuv server ---- */

#if defined(CTX_BENCH_HAVE_SERVER)

#include <round.h>

#define SERVER_CONNECTIONS 200
#define SERVER_THREADS 2

typedef struct server_contender {
    ex_round_config_t config;
    ctx_bench_samples_t cpu; /* µs per request, one per round */
    uint64_t mismatches;
    uint64_t reads;
    int failures;
} server_contender_t;

static double server_round(void *arg) {
    server_contender_t *c = arg;
    ex_round_result_t got;
    if (ex_round_run(&c->config, &got) != 0 || got.client_errors || !got.responses) {
        c->failures++;
        return 0;
    }
    ctx_bench_sample(&c->cpu, got.cpu_us_per_request);
    c->mismatches += got.mismatches;
    c->reads += got.reads;
    return got.rps;
}

static void bench_server(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    unsigned warmup = quick ? 100 : 200, measure = quick ? 300 : 800;
    server_contender_t ctx = {{EX_SERVER_CTXVAR, SERVER_CONNECTIONS, SERVER_THREADS, 0, warmup,
                               measure},
                              {0},
                              0,
                              0,
                              0};
    server_contender_t raw = ctx;
    raw.config.kind = EX_SERVER_RAW;
    ctx_bench_contender_t c[2] = {{"server ctxvar", server_round, &ctx, {0}},
                                  {"server raw", server_round, &raw, {0}}};
    ctx_bench_interleave(b, c, 2);
    if (ctx.failures || raw.failures) {
        fprintf(stderr, "bench_loop: %d ctxvar and %d raw server rounds failed\n", ctx.failures,
                raw.failures);
        abort();
    }
    /* The warm-up round's CPU sample is not a round of the figure. */
    ctx_bench_samples_t ctx_cpu = {0}, raw_cpu = {0};
    for (int i = 1; i < ctx.cpu.n; i++)
        ctx_bench_sample(&ctx_cpu, ctx.cpu.v[i]);
    for (int i = 1; i < raw.cpu.n; i++)
        ctx_bench_sample(&raw_cpu, raw.cpu.v[i]);
    ctx_bench_put_samples(b, "loop_server_rps", &c[0].samples, CTX_BENCH_NO_GOAL,
                          "example server, ctxvar: requests/s (200 connections, loopback)");
    ctx_bench_put_samples(b, "loop_server_raw_rps", &c[1].samples, CTX_BENCH_NO_GOAL,
                          "the same server on raw libuv + uv_queue_work");
    ctx_bench_put_ratio(b, "loop_server_vs_raw_ratio", &c[0].samples, &c[1].samples,
                        CTX_BENCH_AT_LEAST(0.95), "requests/s, ctxvar / raw");
    ctx_bench_put_samples(b, "loop_server_cpu_us_per_request", &ctx_cpu, CTX_BENCH_NO_GOAL,
                          "server process CPU per request, ctxvar");
    ctx_bench_put_samples(b, "loop_server_raw_cpu_us_per_request", &raw_cpu, CTX_BENCH_NO_GOAL,
                          "server process CPU per request, raw");
    ctx_bench_put_ratio(b, "loop_server_cpu_ratio", &ctx_cpu, &raw_cpu, CTX_BENCH_NO_GOAL,
                        "CPU per request, ctxvar / raw");
    ctx_bench_put_goal(b, "loop_server_mismatch_count", (double)ctx.mismatches,
                       CTX_BENCH_AT_MOST(0), "context reads that saw another request's values");
}

#endif /* CTX_BENCH_HAVE_SERVER */

/* The chains, the batches and the task steps, in interleaved rounds. */
typedef struct loop_samples {
    ctx_bench_samples_t raw_chain, ctx_chain, raw_batch, ctx_batch, step;
    int single_threaded; /* measured before the process had a second thread */
} loop_samples_t;

static void measure(ctx_bench_t *b, loop_samples_t *out) {
    int quick = ctx_bench_quick(b);
    long chain_n = quick ? 10000 : 50000; /* per round */
    long rounds = quick ? 10 : 50;
    memset(out, 0, sizeof *out);
#if defined(CTX_BENCH_HAVE_SINGLE_THREADED)
    out->single_threaded = __libc_single_threaded;
#endif

    /* A request-sized context: 4 variables, current while scheduling. */
    ctx_var_t *vars[4];
    ctx_context_t *ctx;
    if (ctx_context_new(&ctx))
        abort();
    for (int i = 0; i < 4; i++)
        if (ctx_var_new("v", NULL, &vars[i]) ||
            ctx_context_set(ctx, vars[i], (void *)(intptr_t)(i + 1)))
            abort();
    if (ctx_context_enter(ctx))
        abort();

    ctx_loop_t *loop;
    if (ctx_loop_new(NULL, &loop))
        abort();
    raw_queue_t raw = {0};
    uv_idle_init(ctx_loop_uv(loop), &raw.idle);
    chain_t c = {loop, &raw, 0, 0};

    chain_raw(&c, chain_n / 10); /* warm up */
    chain_ctx(&c, chain_n / 10);
    for (int r = 0; r < ctx_bench_rounds(b); r++) { /* interleaved rounds */
        ctx_bench_sample(&out->raw_chain, chain_raw(&c, chain_n));
        ctx_bench_sample(&out->ctx_chain, chain_ctx(&c, chain_n));
        ctx_bench_sample(&out->raw_batch, batch_raw(&c, rounds));
        ctx_bench_sample(&out->ctx_batch, batch_ctx(&c, rounds));
        ctx_bench_sample(&out->step, task_steps(loop, chain_n));
    }

    uv_close((uv_handle_t *)&raw.idle, NULL);
    uv_run(ctx_loop_uv(loop), UV_RUN_NOWAIT);
    if (ctx_loop_close(loop))
        abort();
    ctx_loop_release(loop);
    ctx_context_exit(ctx);
    ctx_context_release(ctx);
    for (int i = 0; i < 4; i++)
        ctx_var_release(vars[i]);
}

/* The contract figures' rounds, taken by ctx_bench_loop_early. */
static loop_samples_t early;
static int early_done;

void ctx_bench_loop_early(ctx_bench_t *b) {
    measure(b, &early);
    early_done = 1;
}

static void *no_op_thread(void *arg) { return arg; }

/* Three figures of a comparison: ctxvar's samples, the raw baseline's and
 * their ratio (with `goal`).  names: key, what, for each of the three. */
static void put_comparison(ctx_bench_t *b, const char *const names[6],
                           const ctx_bench_samples_t *ctx, const ctx_bench_samples_t *raw,
                           ctx_bench_goal_t goal) {
    ctx_bench_put_samples(b, names[0], ctx, CTX_BENCH_NO_GOAL, names[1]);
    ctx_bench_put_samples(b, names[2], raw, CTX_BENCH_NO_GOAL, names[3]);
    ctx_bench_put_ratio(b, names[4], ctx, raw, goal, names[5]);
}

void ctx_bench_loop(ctx_bench_t *b) {
    loop_samples_t mt;
    if (!early_done) /* not called first: measured in whatever state this is */
        ctx_bench_loop_early(b);
    /* The same again once the process has had a second thread, as every
     * program with a pool (or libuv's threadpool) has: glibc's malloc then
     * takes its arena lock, which the raw baseline pays per callback. */
    pthread_t t;
    if (pthread_create(&t, NULL, no_op_thread, NULL) != 0 || pthread_join(t, NULL) != 0)
        abort();
    measure(b, &mt);
    if (!early.single_threaded)
        fprintf(stderr, "bench_loop: the contract figures were measured after a second thread "
                        "existed (run the loop section first): their raw baselines are slower\n");

    static const char *const chain[] = {
        "loop_call_soon_ns", "ctx_loop_call_soon + run in the captured context, one per loop iteration",
        "loop_call_soon_raw_ns", "baseline: raw libuv callback scheduled the same way (idle-drained FIFO)",
        "loop_capture_ratio", "loop_call_soon / raw"};
    static const char *const batch[] = {
        "loop_call_soon_batch_ns", "the same, 1000 scheduled then run in one iteration",
        "loop_call_soon_batch_raw_ns", "baseline of the batch",
        "loop_capture_batch_ratio", "batch / raw batch: the capture's own cost"};
    static const char *const chain_mt[] = {
        "loop_call_soon_mt_ns", "loop_call_soon_ns once the process has had a second thread",
        "loop_call_soon_raw_mt_ns", "its raw baseline (malloc takes its arena lock)",
        "loop_capture_mt_ratio", "loop_capture_ratio with a second thread"};
    static const char *const batch_mt[] = {
        "loop_call_soon_batch_mt_ns", "loop_call_soon_batch_ns once the process has had a second thread",
        "loop_call_soon_batch_raw_mt_ns", "its raw baseline (malloc takes its arena lock)",
        "loop_capture_batch_mt_ratio", "loop_capture_batch_ratio with a second thread"};
    put_comparison(b, chain, &early.ctx_chain, &early.raw_chain, CTX_BENCH_AT_MOST(1.2));
    put_comparison(b, batch, &early.ctx_batch, &early.raw_batch, CTX_BENCH_AT_MOST(1.5));
    ctx_bench_put_samples(b, "loop_task_step_ns", &early.step, CTX_BENCH_NO_GOAL,
                          "one step of a yielding task (enter, step, re-arm)");
    put_comparison(b, chain_mt, &mt.ctx_chain, &mt.raw_chain, CTX_BENCH_NO_GOAL);
    put_comparison(b, batch_mt, &mt.ctx_batch, &mt.raw_batch, CTX_BENCH_NO_GOAL);
#if defined(CTX_BENCH_HAVE_SERVER)
    bench_server(b);
#endif
}

#else /* no loop module in this build: no example server either */

void ctx_bench_loop_early(ctx_bench_t *b) { (void)b; }
void ctx_bench_loop(ctx_bench_t *b) { (void)b; }

#endif
