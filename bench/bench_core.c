/* SPDX-License-Identifier: MIT */
/*
 * bench_core.c — the core's figures (its JSON keys are a contract).
 *
 * Baselines first: a __thread read through a non-inlined function and
 * pthread_getspecific, the two things a C programmer would otherwise use.
 * Every figure is measured in ctx_bench_rounds() rounds of a tight loop, in
 * nanoseconds per operation, and is the MEDIAN of its rounds (bench.h; it
 * was the best of 5 runs before the harness had rounds).  Figures compared
 * with each other are measured in the same rounds, interleaved:
 * get_hit_ratio (get_hit / getspecific) and copy_flat_ratio are ratios of
 * medians; "after switch" and "after copy" figures are the difference of the
 * medians of a loop with the operation and the same loop without it.
 *
 * Building a context (what a decoder such as the wire layer's extract pays
 * per request), interleaved:
 *   context_new_set_ns_8   ctx_context_new, 8 x ctx_context_set, release
 *   context_new_from_ns_8  ctx_context_new_from of the same 8, release
 *   context_new_from_ratio_8  the second / the first (ratio of medians)
 * The values are plain pointers (no release operation), so the figures are
 * the core's own work.
 *
 * Static variables (CTX_VAR_STATIC), interleaved with counted ones:
 *   set_reset_static_ns_16    set_reset_ns_16 with static variables
 *   set_reset_counted_ns_16   the same with counted variables (the default,
 *                             as every other figure here), same rounds
 *   set_reset_static_vs_counted_ratio  the first / the second
 *   set_reset_2threads_counted_ns_16, set_reset_2threads_static_ns_16,
 *   set_reset_2threads_static_vs_counted_ratio
 *                             two threads at once, each in its own context,
 *                             the same 16 variables (a program's globals):
 *                             wall time per set+reset of one thread; a
 *                             counted variable's count is written by both
 * The contract figure set_reset_ns_16 keeps counted variables.
 *
 * The floor under run_noop_ns, interleaved with it:
 *   locked_pair_ns   the compare-and-swap and the fetch-sub that enter and
 *                    exit must do (the entered flag may be raced for by any
 *                    thread, so neither can be a plain store), alone
 *   run_noop_vs_locked_pair_ratio  run_noop_ns / locked_pair_ns
 * A locked instruction costs 18-40 cycles depending on the processor, so
 * run_noop_ns moves with it from machine to machine; the ratio says how
 * much of a run is the rest of its work.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <ctxvar.h>

#include "bench.h"

#define SINK(x) __asm__ volatile("" : : "r"(x) : "memory")

/* One figure alone: `body` timed in every round. */
#define TIME_ROUNDS(b, samples, iters, body)               \
    for (int r_ = 0; r_ < ctx_bench_rounds(b); r_++)       \
    CTX_BENCH_TIME((samples), (iters), body)

static __thread void *tls_slot;

__attribute__((noinline)) static void *tls_read(void) {
    __asm__ volatile("" : : : "memory");
    return tls_slot;
}

static void *noop(void *arg) { return arg; }

/* A context holding n fresh variables; *vars receives them (caller frees). */
static ctx_context_t *context_with(int n, ctx_var_t ***vars) {
    ctx_context_t *ctx;
    ctx_var_t **v = malloc(sizeof *v * (size_t)n);
    if (!v || ctx_context_new(&ctx))
        abort();
    for (int i = 0; i < n; i++) {
        if (ctx_var_new("v", NULL, &v[i]) || ctx_context_set(ctx, v[i], (void *)(intptr_t)(i + 1)))
            abort();
    }
    *vars = v;
    return ctx;
}

static void drop(ctx_context_t *ctx, ctx_var_t **vars, int n) {
    ctx_context_release(ctx);
    for (int i = 0; i < n; i++)
        ctx_var_release(vars[i]);
    free(vars);
}

/* ---- the counting allocator for snapshot_bytes ---- */
static long live_bytes, live_malloc_bytes;
static void *count_malloc(size_t size, void *user) {
    (void)user;
    void *p = malloc(size);
    if (p) {
        live_bytes += (long)size;
        live_malloc_bytes += (long)malloc_usable_size(p) + (long)sizeof(size_t);
    }
    return p;
}
static void count_free(void *p, size_t size, void *user) {
    (void)user;
    if (!p)
        return;
    live_bytes -= (long)size;
    live_malloc_bytes -= (long)malloc_usable_size(p) + (long)sizeof(size_t);
    free(p);
}

static void get_figures(ctx_bench_t *b, long iters) {
    ctx_bench_samples_t tls = {0}, spec = {0}, hit = {0};
    pthread_key_t key;
    pthread_key_create(&key, NULL);
    pthread_setspecific(key, &key);
    tls_slot = &key;

    ctx_var_t **vars;
    ctx_context_t *ctx = context_with(16, &vars);
    ctx_context_enter(ctx);
    void *out = NULL;
    for (int r = 0; r < ctx_bench_rounds(b); r++) { /* interleaved */
        CTX_BENCH_TIME(&tls, iters, SINK(tls_read()));
        CTX_BENCH_TIME(&spec, iters, SINK(pthread_getspecific(key)));
        CTX_BENCH_TIME(&hit, iters, ctx_var_get(vars[7], &out); SINK(out));
    }
    ctx_context_exit(ctx);
    drop(ctx, vars, 16);
    pthread_key_delete(key);

    ctx_bench_put_samples(b, "tls_read_ns", &tls, CTX_BENCH_NO_GOAL,
                          "baseline: read a __thread variable (non-inlined call)");
    ctx_bench_put_samples(b, "getspecific_ns", &spec, CTX_BENCH_NO_GOAL, "baseline: pthread_getspecific");
    ctx_bench_put_samples(b, "get_hit_ns", &hit, CTX_BENCH_NO_GOAL,
                          "ctx_var_get, repeated (per-thread cache hit)");
    /* Goal (was 1.5). */
    ctx_bench_put_ratio(b, "get_hit_ratio", &hit, &spec, CTX_BENCH_AT_MOST(1.0),
                        "get_hit / getspecific, ratio of medians");
}

static void switch_figures(ctx_bench_t *b, long iters, int n, const char *key) {
    ctx_var_t **vars;
    ctx_context_t *ctx = context_with(n, &vars);
    void *out = NULL;
    ctx_bench_samples_t with = {0}, without = {0};
    int k = 0;
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        CTX_BENCH_TIME(&without, iters, ctx_context_enter(ctx); ctx_context_exit(ctx));
        CTX_BENCH_TIME(&with, iters, ctx_context_enter(ctx); ctx_var_get(vars[k], &out); SINK(out);
                       ctx_context_exit(ctx); k = (k + 7) % n);
    }
    drop(ctx, vars, n);
    ctx_bench_put_difference(b, key, &with, &without, CTX_BENCH_NO_GOAL,
                             "first ctx_var_get after entering another context");
}

static void set_reset_figures(ctx_bench_t *b, long iters, int n, const char *key,
                              ctx_bench_goal_t goal) {
    ctx_var_t **vars;
    ctx_context_t *ctx = context_with(n, &vars);
    ctx_context_enter(ctx);
    ctx_token_t *tok = NULL;
    ctx_bench_samples_t ns = {0};
    int k = 0;
    TIME_ROUNDS(b, &ns, iters, ctx_var_set(vars[k], &tok, &tok); ctx_var_reset(vars[k], tok);
                ctx_token_release(tok); k = (k + 7) % n);
    ctx_context_exit(ctx);
    drop(ctx, vars, n);
    ctx_bench_put_samples(b, key, &ns, goal, "ctx_var_set with a token, then ctx_var_reset");
}

/* set_reset_ns_16 with CTX_VAR_STATIC variables, and the same with counted
 * ones (the default, as set_reset_ns_16) in the same interleaved rounds:
 * what a static variable saves (no reference per value). */
static void set_reset_static_figures(ctx_bench_t *b, long iters) {
    ctx_var_t *vars[2][16];
    ctx_context_t *ctx[2];
    for (int kind = 0; kind < 2; kind++) {
        ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
        o.flags = kind ? CTX_VAR_STATIC : 0;
        if (ctx_context_new(&ctx[kind]))
            abort();
        for (int i = 0; i < 16; i++)
            if (ctx_var_new("v", &o, &vars[kind][i]) ||
                ctx_context_set(ctx[kind], vars[kind][i], (void *)(intptr_t)(i + 1)))
                abort();
    }
    ctx_bench_samples_t ns[2] = {{0}, {0}};
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        for (int j = 0; j < 2; j++) {
            int kind = (r + j) & 1; /* the order alternates */
            ctx_var_t **v = vars[kind];
            ctx_token_t *tok = NULL;
            int k = 0;
            ctx_context_enter(ctx[kind]);
            CTX_BENCH_TIME(&ns[kind], iters, ctx_var_set(v[k], &tok, &tok); ctx_var_reset(v[k], tok);
                           ctx_token_release(tok); k = (k + 7) % 16);
            ctx_context_exit(ctx[kind]);
        }
    }
    for (int kind = 0; kind < 2; kind++) {
        ctx_context_release(ctx[kind]);
        for (int i = 0; i < 16; i++)
            ctx_var_release(vars[kind][i]);
    }
    ctx_bench_put_samples(b, "set_reset_static_ns_16", &ns[1], CTX_BENCH_NO_GOAL,
                          "set_reset_ns_16 with CTX_VAR_STATIC variables");
    ctx_bench_put_samples(b, "set_reset_counted_ns_16", &ns[0], CTX_BENCH_NO_GOAL,
                          "set_reset_ns_16 again, in the same rounds as the static figure");
    ctx_bench_put_ratio(b, "set_reset_static_vs_counted_ratio", &ns[1], &ns[0], CTX_BENCH_NO_GOAL,
                        "static / counted variables, set+reset");
}

/* Two threads at once, each in a context of its own, setting and
 * resetting the same 16 variables: a counted variable's reference count is
 * written by both (its cache line goes back and forth), a static one's by
 * neither.  Wall time of a round / iterations per thread. */
typedef struct shared_round {
    ctx_var_t **vars;
    long iters;
    pthread_barrier_t *start;
} shared_round_t;

static void *shared_worker(void *arg) {
    shared_round_t *r = arg;
    ctx_context_t *ctx = NULL;
    if (ctx_context_new(&ctx) || ctx_context_enter(ctx))
        abort();
    pthread_barrier_wait(r->start);
    int k = 0;
    for (long i = 0; i < r->iters; i++) {
        ctx_token_t *tok = NULL;
        if (ctx_var_set(r->vars[k], &tok, &tok) || ctx_var_reset(r->vars[k], tok))
            abort();
        ctx_token_release(tok);
        k = (k + 7) % 16;
    }
    ctx_context_exit(ctx);
    ctx_context_release(ctx);
    ctx_thread_release();
    return NULL;
}

static double shared_round(void *arg) {
    shared_round_t r = *(shared_round_t *)arg;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 3);
    r.start = &start;
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, shared_worker, &r) != 0)
            abort();
    pthread_barrier_wait(&start);
    uint64_t t0 = ctx_bench_now_ns();
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    double ns = (double)(ctx_bench_now_ns() - t0) / (double)r.iters;
    pthread_barrier_destroy(&start);
    return ns;
}

static void set_reset_shared_figures(ctx_bench_t *b, long iters) {
    ctx_var_t *vars[2][16];
    for (int kind = 0; kind < 2; kind++) {
        ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
        o.flags = kind ? CTX_VAR_STATIC : 0;
        for (int i = 0; i < 16; i++)
            if (ctx_var_new("v", &o, &vars[kind][i]))
                abort();
    }
    shared_round_t rounds[2] = {{vars[0], iters, NULL}, {vars[1], iters, NULL}};
    ctx_bench_contender_t c[2] = {{"counted", shared_round, &rounds[0], {0}},
                                  {"static", shared_round, &rounds[1], {0}}};
    ctx_bench_interleave(b, c, 2);
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < 16; i++)
            ctx_var_release(vars[kind][i]);
    ctx_bench_put_samples(b, "set_reset_2threads_counted_ns_16", &c[0].samples, CTX_BENCH_NO_GOAL,
                          "2 threads, own contexts, the same 16 counted variables: wall ns per "
                          "set+reset of one thread");
    ctx_bench_put_samples(b, "set_reset_2threads_static_ns_16", &c[1].samples, CTX_BENCH_NO_GOAL,
                          "the same with CTX_VAR_STATIC variables");
    ctx_bench_put_ratio(b, "set_reset_2threads_static_vs_counted_ratio", &c[1].samples,
                        &c[0].samples, CTX_BENCH_NO_GOAL, "static / counted, 2 threads");
}

/* The same in the thread's own context, which no other thread can reach:
 * the context's lock is skipped. */
static void set_reset_own_figure(ctx_bench_t *b, long iters) {
    ctx_var_t *vars[16];
    for (int i = 0; i < 16; i++)
        if (ctx_var_new("v", NULL, &vars[i]) || ctx_var_set(vars[i], (void *)(intptr_t)(i + 1), NULL))
            abort();
    ctx_token_t *tok = NULL;
    ctx_bench_samples_t ns = {0};
    int k = 0;
    TIME_ROUNDS(b, &ns, iters, ctx_var_set(vars[k], &tok, &tok); ctx_var_reset(vars[k], tok);
                ctx_token_release(tok); k = (k + 7) % 16);
    ctx_thread_release();
    for (int i = 0; i < 16; i++)
        ctx_var_release(vars[i]);
    ctx_bench_put_samples(b, "set_reset_own_ns_16", &ns, CTX_BENCH_NO_GOAL,
                          "set+reset in the thread's own context (no other thread can reach it)");
}

static void set_after_copy_figure(ctx_bench_t *b, long iters) {
    ctx_var_t **vars;
    ctx_context_t *ctx = context_with(16, &vars);
    ctx_context_enter(ctx);
    ctx_token_t *tok = NULL;
    ctx_context_t *copy;
    ctx_bench_samples_t with = {0}, without = {0};
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        CTX_BENCH_TIME(&without, iters, ctx_context_copy_current(&copy); ctx_context_release(copy));
        CTX_BENCH_TIME(&with, iters, ctx_context_copy_current(&copy); ctx_var_set(vars[3], &tok, &tok);
                       ctx_var_reset(vars[3], tok); ctx_token_release(tok); ctx_context_release(copy));
    }
    ctx_context_exit(ctx);
    drop(ctx, vars, 16);
    ctx_bench_put_difference(b, "set_reset_after_copy_ns_16", &with, &without, CTX_BENCH_NO_GOAL,
                             "set+reset when a copy shares the map (path copied)");
}

static void build_figures(ctx_bench_t *b, long iters) {
    ctx_var_t *vars[8];
    void *values[8];
    for (int i = 0; i < 8; i++) {
        if (ctx_var_new("b", NULL, &vars[i]))
            abort();
        values[i] = (void *)(intptr_t)(i + 1);
    }
    ctx_context_t *ctx;
    ctx_bench_samples_t sets = {0}, from = {0};
    for (int r = 0; r < ctx_bench_rounds(b); r++) { /* interleaved */
        CTX_BENCH_TIME(&sets, iters, {
            if (ctx_context_new(&ctx))
                abort();
            for (int k = 0; k < 8; k++)
                if (ctx_context_set(ctx, vars[k], values[k]))
                    abort();
            ctx_context_release(ctx);
        });
        CTX_BENCH_TIME(&from, iters, {
            if (ctx_context_new_from(vars, values, 8, &ctx))
                abort();
            ctx_context_release(ctx);
        });
    }
    for (int i = 0; i < 8; i++)
        ctx_var_release(vars[i]);
    ctx_bench_put_samples(b, "context_new_set_ns_8", &sets, CTX_BENCH_NO_GOAL,
                          "ctx_context_new + 8 ctx_context_set + release");
    ctx_bench_put_samples(b, "context_new_from_ns_8", &from, CTX_BENCH_NO_GOAL,
                          "ctx_context_new_from of the same 8 + release");
    ctx_bench_put_ratio(b, "context_new_from_ratio_8", &from, &sets, CTX_BENCH_NO_GOAL,
                        "context_new_from_ns_8 / context_new_set_ns_8");
}

static void copy_figures(ctx_bench_t *b, long iters) {
    ctx_bench_samples_t small = {0}, large = {0};
    ctx_var_t **small_vars, **large_vars;
    ctx_context_t *small_ctx = context_with(1, &small_vars);
    ctx_context_t *large_ctx = context_with(100000, &large_vars);
    ctx_context_t *copy;
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        ctx_context_enter(small_ctx);
        CTX_BENCH_TIME(&small, iters, ctx_context_copy_current(&copy); ctx_context_release(copy));
        ctx_context_exit(small_ctx);
        ctx_context_enter(large_ctx);
        CTX_BENCH_TIME(&large, iters, ctx_context_copy_current(&copy); ctx_context_release(copy));
        ctx_context_exit(large_ctx);
    }
    drop(small_ctx, small_vars, 1);
    drop(large_ctx, large_vars, 100000);
    ctx_bench_put_samples(b, "copy_ns_1", &small, CTX_BENCH_NO_GOAL,
                          "ctx_context_copy_current + release, 1 variable");
    ctx_bench_put_samples(b, "copy_ns_100000", &large, CTX_BENCH_NO_GOAL, "the same with 100000 variables");
    ctx_bench_put_ratio(b, "copy_flat_ratio", &large, &small, CTX_BENCH_AT_MOST(1.2),
                        "copy_ns_100000 / copy_ns_1");
}

/* The two locked instructions a run cannot do without, alone: the
 * compare-and-swap that sets a context's entered flag and takes a reference
 * (so that no other thread can enter it meanwhile, and the function may
 * drop the caller's reference), and the fetch-sub that gives both back.
 * The same code as the core's, on a word of its own. */
static _Atomic size_t locked_word = 8;

__attribute__((noinline)) static int locked_claim(void) {
    size_t s = atomic_load_explicit(&locked_word, memory_order_relaxed);
    do {
        if (s & 1)
            return 1;
    } while (!atomic_compare_exchange_weak_explicit(&locked_word, &s, s + 3, memory_order_acquire,
                                                    memory_order_relaxed));
    return 0;
}

__attribute__((noinline)) static void locked_unclaim(void) {
    if (atomic_fetch_sub_explicit(&locked_word, 3, memory_order_acq_rel) == 3)
        abort();
}

static void run_figure(ctx_bench_t *b, long iters) {
    ctx_var_t **vars;
    ctx_context_t *ctx = context_with(16, &vars), *copy;
    ctx_context_copy(ctx, &copy);
    ctx_bench_samples_t ns = {0}, locked = {0};
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        CTX_BENCH_TIME(&ns, iters, ctx_context_run(copy, noop, NULL, NULL));
        CTX_BENCH_TIME(&locked, iters, if (locked_claim()) abort(); locked_unclaim());
    }
    ctx_context_release(copy);
    drop(ctx, vars, 16);
    ctx_bench_put_samples(b, "run_noop_ns", &ns, CTX_BENCH_AT_MOST(20),
                          "ctx_context_run of an empty function");
    ctx_bench_put_samples(b, "locked_pair_ns", &locked, CTX_BENCH_NO_GOAL,
                          "baseline: the compare-and-swap and fetch-sub a run needs, alone");
    ctx_bench_put_ratio(b, "run_noop_vs_locked_pair_ratio", &ns, &locked, CTX_BENCH_NO_GOAL,
                        "run_noop_ns / locked_pair_ns: what a run costs over its two locked instructions");
}

static void snapshot_figure(ctx_bench_t *b) {
    enum { COPIES = 1000 };
    ctx_var_t **vars;
    ctx_context_t *ctx = context_with(16, &vars);
    static ctx_context_t *copies[COPIES];
    ctx_allocator_t counting = {sizeof(ctx_allocator_t), count_malloc, count_free, NULL};
    ctx_set_allocator(&counting);
    long before = live_bytes, before_malloc = live_malloc_bytes;
    for (int i = 0; i < COPIES; i++)
        ctx_context_copy(ctx, &copies[i]);
    long bytes = live_bytes - before, malloc_bytes = live_malloc_bytes - before_malloc;
    for (int i = 0; i < COPIES; i++)
        ctx_context_release(copies[i]);
    ctx_set_allocator(NULL);
    drop(ctx, vars, 16);
    ctx_bench_put_goal(b, "snapshot_bytes", (double)bytes / COPIES, CTX_BENCH_AT_MOST(64),
                       "bytes one more copy of a 16-variable context asks for");
    ctx_bench_put(b, "snapshot_malloc_bytes", (double)malloc_bytes / COPIES,
                  "the same with glibc's chunk overhead");
}

void ctx_bench_core(ctx_bench_t *b) {
    /* per round; the rounds (21 by default) make up for the old 5 repeats */
    long iters = ctx_bench_quick(b) ? 50000 : 1000000;
    get_figures(b, iters * 4);
    switch_figures(b, iters, 16, "get_after_switch_ns_16");
    switch_figures(b, iters, 1000, "get_after_switch_ns_1000");
    set_reset_figures(b, iters, 1, "set_reset_ns_1", CTX_BENCH_NO_GOAL);
    set_reset_figures(b, iters, 16, "set_reset_ns_16", CTX_BENCH_AT_MOST(30)); /* stretch goal */
    set_reset_figures(b, iters, 1000, "set_reset_ns_1000", CTX_BENCH_NO_GOAL);
    set_reset_static_figures(b, iters);
    set_reset_shared_figures(b, iters / 2);
    set_reset_own_figure(b, iters);
    set_after_copy_figure(b, iters);
    build_figures(b, iters / 4);
    copy_figures(b, iters);
    run_figure(b, iters);
    snapshot_figure(b);
    ctx_thread_release();
}
