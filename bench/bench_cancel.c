/* SPDX-License-Identifier: MIT */
/*
 * bench_cancel.c — the cancel module's figures (cancellation and
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
 * Contenders measured against each other (check and get) run in the same
 * rounds, interleaved, their order alternating; each figure is the median
 * of its rounds and the ratio is the ratio of the medians (bench.h).
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>

#include "bench.h"

#define SINK(x) __asm__ volatile("" : : "r"(x) : "memory")

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
    ctx_bench_samples_t check = {0}, get = {0};
    void *out = NULL;
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        if (r % 2)
            CTX_BENCH_TIME(&check, iters, SINK(ctx_cancel_check()));
        CTX_BENCH_TIME(&get, iters, ctx_var_get(vars[7], &out); SINK(out));
        if (r % 2 == 0)
            CTX_BENCH_TIME(&check, iters, SINK(ctx_cancel_check()));
    }
    ctx_cancel_exit(tok);
    ctx_context_exit(ctx);
    ctx_context_release(ctx);
    for (int i = 0; i < 16; i++)
        ctx_var_release(vars[i]);
    ctx_bench_put_samples(b, "cancel_check_ns", &check, CTX_BENCH_NO_GOAL,
                          "ctx_cancel_check with a scope current (16 variables)");
    ctx_bench_put_samples(b, "cancel_check_get_hit_ns", &get, CTX_BENCH_NO_GOAL,
                          "baseline, same rounds: ctx_var_get cache hit");
    ctx_bench_put_ratio(b, "cancel_check_ratio", &check, &get, CTX_BENCH_AT_MOST(1.5),
                        "cancel_check / get_hit");
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
    ctx_bench_samples_t plain = {0}, timed = {0};
    for (int r = 0; r < ctx_bench_rounds(b); r++) {
        CTX_BENCH_TIME(&plain, iters, ctx_cancel_scope_new(root, NULL, &s);
                       ctx_cancel_scope_cancel(s, NULL); ctx_cancel_scope_release(s));
        CTX_BENCH_TIME(&timed, iters, ctx_cancel_scope_new(root, &o, &s); ctx_cancel_scope_release(s));
    }
    ctx_cancel_scope_release(root);
    ctx_bench_put_samples(b, "cancel_scope_ns", &plain, CTX_BENCH_AT_MOST(100),
                          "child scope new + cancel + release");
    ctx_bench_put_samples(b, "deadline_scope_ns", &timed, CTX_BENCH_AT_MOST(200),
                          "child with a timeout, released before expiry");
}

static void bump(void *arg) { ++*(long *)arg; }

static void fanout_figure(ctx_bench_t *b) {
    enum { N = 1000 };
    static ctx_cancel_scope_t *kids[N];
    static ctx_cancel_callback_t cbs[N];
    ctx_bench_samples_t per = {0};
    long ran = 0;
    int rounds = ctx_bench_rounds(b);
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
        ctx_bench_sample(&per, (double)(ctx_bench_now_ns() - t0) / N);
        for (int i = 0; i < N; i++) {
            ctx_cancel_callback_clear(&cbs[i]);
            ctx_cancel_scope_release(kids[i]);
        }
        ctx_cancel_scope_release(root);
    }
    if (ran != (long)rounds * N)
        abort();
    ctx_bench_put_samples(b, "cancel_fanout_ns_1000", &per, CTX_BENCH_AT_MOST(100),
                          "cancel a parent of 1000 children, one callback each: ns per child");
}

void ctx_bench_cancel(ctx_bench_t *b) {
    int quick = ctx_bench_quick(b);
    check_figures(b, quick ? 200000 : 2000000);
    scope_figures(b, quick ? 20000 : 100000);
    fanout_figure(b);
    ctx_cancel_timer_release();
}
