/*
 * bench_cancel.c — the cancel module's figures (issue 10: cancellation and
 * deadlines carried by the context).
 *
 *   cancel_check_ns        ctx_cancel_check with a scope current, in a
 *                          context of 16 variables (a cache hit + one load)
 *   cancel_check_get_hit_ns  baseline measured in the same rounds:
 *                          ctx_var_get of a variable of that context (hit)
 *   cancel_check_ratio     cancel_check_ns / that get_hit       (goal <= 1.5)
 *   cancel_scope_ns        child scope new + cancel + release    (goal <= 100)
 *   deadline_scope_ns      child with a 10 s timeout, released before it
 *                          expires (timer heap in and out)       (goal <= 200)
 *   cancel_fanout_ns_1000  cancel a parent of 1000 children that hold one
 *                          callback each: ns per child until every callback
 *                          ran (the callbacks run in their captured
 *                          contexts)                             (goal <= 100)
 *
 * Contenders measured against each other (check and get) run in
 * interleaved rounds; each figure is the median of its rounds, and the
 * ratio is the ratio of the medians, so that a burst of noise on the
 * shared machine hits both sides alike.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>

#include "bench.h"

#define ROUNDS 15
#define SINK(x) __asm__ volatile("" : : "r"(x) : "memory")

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare);
    return v[n / 2];
}

/* ns per iteration of `body` run `iters` times. */
#define TIME(result, iters, body)                                              \
    do {                                                                       \
        uint64_t t0_ = ctx_bench_now_ns();                                     \
        for (long i_ = 0; i_ < (iters); i_++) {                                \
            body;                                                              \
        }                                                                      \
        (result) = (double)(ctx_bench_now_ns() - t0_) / (double)(iters);       \
    } while (0)

static void check_figures(ctx_bench_t *b, long iters) {
    ctx_var_t *vars[16];
    ctx_context_t *ctx;
    if (ctx_context_new(&ctx))
        abort();
    for (int i = 0; i < 16; i++)
        if (ctx_var_new("v", NULL, &vars[i]) || ctx_context_set(ctx, vars[i], (void *)(intptr_t)(i + 1)))
            abort();
    ctx_context_enter(ctx);
    ctx_token_t *tok;
    if (ctx_cancel_enter_child(NULL, NULL, &tok))
        abort();
    double check[ROUNDS], get[ROUNDS];
    void *out = NULL;
    for (int r = 0; r < ROUNDS; r++) {
        TIME(get[r], iters, ctx_var_get(vars[7], &out); SINK(out));
        TIME(check[r], iters, SINK(ctx_cancel_check()));
    }
    ctx_cancel_exit(tok);
    ctx_context_exit(ctx);
    ctx_context_release(ctx);
    for (int i = 0; i < 16; i++)
        ctx_var_release(vars[i]);
    double c = median(check, ROUNDS), g = median(get, ROUNDS);
    ctx_bench_put(b, "cancel_check_ns", c, "ctx_cancel_check, scope current (median of rounds)");
    ctx_bench_put(b, "cancel_check_get_hit_ns", g, "baseline in the same rounds: ctx_var_get hit");
    ctx_bench_put(b, "cancel_check_ratio", c / g, "cancel_check / get_hit (goal <= 1.5)");
}

static void scope_figures(ctx_bench_t *b, long iters) {
    ctx_cancel_scope_t *root, *s;
    if (ctx_cancel_scope_new(NULL, NULL, &root))
        abort();
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = (int64_t)10 * 1000000000;
    /* Warm the timer thread up outside the timed region. */
    if (ctx_cancel_scope_new(root, &o, &s))
        abort();
    ctx_cancel_scope_release(s);
    double plain[ROUNDS], timed[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        TIME(plain[r], iters, ctx_cancel_scope_new(root, NULL, &s); ctx_cancel_scope_cancel(s, NULL);
             ctx_cancel_scope_release(s));
        TIME(timed[r], iters, ctx_cancel_scope_new(root, &o, &s); ctx_cancel_scope_release(s));
    }
    ctx_cancel_scope_release(root);
    ctx_bench_put(b, "cancel_scope_ns", median(plain, ROUNDS),
                  "child scope new + cancel + release (goal <= 100)");
    ctx_bench_put(b, "deadline_scope_ns", median(timed, ROUNDS),
                  "child with a timeout, released before expiry (goal <= 200)");
}

static void bump(void *arg) { ++*(long *)arg; }

static void fanout_figure(ctx_bench_t *b, int rounds) {
    enum { N = 1000 };
    static ctx_cancel_scope_t *kids[N];
    static ctx_cancel_callback_t cbs[N];
    double per[ROUNDS];
    long ran = 0;
    for (int r = 0; r < rounds; r++) {
        ctx_cancel_scope_t *root;
        if (ctx_cancel_scope_new(NULL, NULL, &root))
            abort();
        for (int i = 0; i < N; i++)
            if (ctx_cancel_scope_new(root, NULL, &kids[i]) ||
                ctx_cancel_callback_init(&cbs[i], kids[i], bump, &ran))
                abort();
        uint64_t t0 = ctx_bench_now_ns();
        ctx_cancel_scope_cancel(root, NULL);
        per[r] = (double)(ctx_bench_now_ns() - t0) / N;
        for (int i = 0; i < N; i++) {
            ctx_cancel_callback_clear(&cbs[i]);
            ctx_cancel_scope_release(kids[i]);
        }
        ctx_cancel_scope_release(root);
    }
    if (ran != (long)rounds * N)
        abort();
    ctx_bench_put(b, "cancel_fanout_ns_1000", median(per, rounds),
                  "cancel a parent of 1000 children with a callback each, per child (goal <= 100)");
}

void ctx_bench_cancel(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    check_figures(b, quick ? 200000 : 2000000);
    scope_figures(b, quick ? 20000 : 200000);
    fanout_figure(b, ROUNDS);
    ctx_cancel_timer_release();
}
