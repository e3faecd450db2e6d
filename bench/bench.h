/* SPDX-License-Identifier: MIT */
/*
 * bench.h — the benchmark harness shared by every module's figures.
 *
 * One binary (ctxvar_bench) runs every module's section in order and prints a
 * table, or with --json one JSON object.  Its keys are a public
 * contract: keep them stable, add freely.  Units: nanoseconds unless the key
 * ends in _ratio (x), _bytes, _us or contains _us_per_ (microseconds), ends in
 * _rps (per second) or _count (a plain number).
 *
 * Methodology (the machine this runs on has 2 processors shared with other
 * people's builds, so one run of anything is at the mercy of the scheduler):
 *
 *  - A figure is measured in ROUNDS, never once.  ctx_bench_rounds(b) is at
 *    least 11 (21 by default, --rounds N to change it).
 *  - Contenders that are compared with each other are measured in the same
 *    rounds, interleaved: round 1 runs A then B, round 2 runs B then A, ...
 *    (ctx_bench_interleave rotates the order of any number of contenders),
 *    so a slow stretch of the machine hits every contender alike.
 *  - Each contender's figure is the MEDIAN of its rounds, with its p10 and
 *    p90 recorded next to it.  A comparison's figure is the RATIO OF THE
 *    MEDIANS (ctx_bench_put_ratio); its p10/p90 are those of the per-round
 *    ratios, which say how reproducible the comparison is.  Best-of values
 *    may be reported as extra keys (ctx_bench_put_best), never as the figure.
 *  - SPREAD of a figure = (p90 - p10) / |median| of its per-round values.
 *    The table flags a figure whose spread exceeds 30%: its median is not to
 *    be trusted to better than that; rerun when the machine is quieter, or
 *    with more rounds.
 *  - A figure may carry a GOAL: at most (<=) or at least (>=) a bound.  The
 *    table shows the goal and ✔ or ✘; --json carries the same under "_stats".
 *
 * Writing a section:
 *
 *     static double round_a(void *arg) { ...; return ns_per_op; }
 *     static double round_b(void *arg) { ...; return ns_per_op; }
 *
 *     ctx_bench_contender_t c[2] = {{"a", round_a, &state}, {"b", round_b, &state}};
 *     ctx_bench_interleave(b, c, 2);
 *     ctx_bench_put_samples(b, "a_ns", &c[0].samples, CTX_BENCH_NO_GOAL, "what a measures");
 *     ctx_bench_put_ratio(b, "a_vs_b_ratio", &c[0].samples, &c[1].samples,
 *                         CTX_BENCH_AT_MOST(1.0), "a / b");
 *
 * or, for tight inline loops, fill samples yourself, one per round:
 *
 *     ctx_bench_samples_t a = {0}, base = {0};
 *     for (int r = 0; r < ctx_bench_rounds(b); r++) {
 *         CTX_BENCH_TIME(&base, iters, SINK(baseline_op()));
 *         CTX_BENCH_TIME(&a, iters, SINK(op()));
 *     }
 */
#ifndef CTX_BENCH_H
#define CTX_BENCH_H

#include <stdint.h>

typedef struct ctx_bench ctx_bench_t;

/* ---- rounds and samples ---- */

/* The most rounds a figure can have (--rounds is clamped to it). */
#define CTX_BENCH_MAX_ROUNDS 64
/* The fewest (--rounds is clamped to it, --quick uses it). */
#define CTX_BENCH_MIN_ROUNDS 11

/* One value per round of one contender (e.g. ns per operation). */
typedef struct ctx_bench_samples {
    int n;
    double v[CTX_BENCH_MAX_ROUNDS];
} ctx_bench_samples_t;

/* Rounds every comparison runs: 11 with --quick, 21 by default, or --rounds. */
int ctx_bench_rounds(const ctx_bench_t *b);
/* 1 when --quick was given: sections use fewer iterations per round (a smoke
 * run; the figures are noisier). */
int ctx_bench_quick(const ctx_bench_t *b);
/* Monotonic clock in nanoseconds. */
uint64_t ctx_bench_now_ns(void);

/* Appends one round's value (ignored past CTX_BENCH_MAX_ROUNDS). */
void ctx_bench_sample(ctx_bench_samples_t *s, double value);
/* The q-quantile (0 <= q <= 1) of the samples, linearly interpolated between
 * the two nearest ranks; 0 when there is none. */
double ctx_bench_quantile(const ctx_bench_samples_t *s, double q);
double ctx_bench_median(const ctx_bench_samples_t *s);
/* The smallest sample (a best-of figure, for extra keys only). */
double ctx_bench_best(const ctx_bench_samples_t *s);

/* Times `iters` runs of `body` once and appends ns per run to `samples`. */
#define CTX_BENCH_TIME(samples, iters, body)                                          \
    do {                                                                              \
        uint64_t t0_ = ctx_bench_now_ns();                                            \
        for (long i_ = 0; i_ < (iters); i_++) {                                       \
            body;                                                                     \
        }                                                                             \
        ctx_bench_sample((samples), (double)(ctx_bench_now_ns() - t0_) / (double)(iters)); \
    } while (0)

/* ---- contenders measured in interleaved rounds ---- */

/* Measures one round of a contender and returns its value (ns per op, or
 * whatever the figure's unit is). */
typedef double (*ctx_bench_round_fn)(void *arg);

typedef struct ctx_bench_contender {
    const char *name;            /* for messages */
    ctx_bench_round_fn round;    /* one round */
    void *arg;                   /* passed to round */
    ctx_bench_samples_t samples; /* out: one value per round */
} ctx_bench_contender_t;

/* Runs one warm-up round of every contender (not recorded), then
 * ctx_bench_rounds(b) rounds; each round runs every contender once, the
 * order rotated by one from round to round (A B C, B C A, C A B, ...), so
 * no contender always runs first or always follows the same one.  Fills
 * each contender's samples (which it empties first). */
void ctx_bench_interleave(ctx_bench_t *b, ctx_bench_contender_t *c, int n);

/* ---- goals ---- */

typedef struct ctx_bench_goal {
    char op;      /* 0: none; '<': value <= bound; '>': value >= bound */
    double bound;
} ctx_bench_goal_t;

#define CTX_BENCH_NO_GOAL ((ctx_bench_goal_t){0, 0.0})
#define CTX_BENCH_AT_MOST(x) ((ctx_bench_goal_t){'<', (x)})
#define CTX_BENCH_AT_LEAST(x) ((ctx_bench_goal_t){'>', (x)})

/* ---- reporting figures ----
 * `key` is a JSON-safe identifier, `what` a short description for the table
 * (may be NULL).  Strings must outlive the run (use literals). */

/* A single value measured once (sizes, counts): no spread. */
void ctx_bench_put(ctx_bench_t *b, const char *key, double value, const char *what);
void ctx_bench_put_goal(ctx_bench_t *b, const char *key, double value, ctx_bench_goal_t goal,
                        const char *what);
/* The median of `s`, with its p10, p90 and spread. */
void ctx_bench_put_samples(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *s,
                           ctx_bench_goal_t goal, const char *what);
/* median(num) / median(den); p10, p90 and spread from the per-round ratios
 * num[r] / den[r] (the two must come from the same interleaved rounds). */
void ctx_bench_put_ratio(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *num,
                         const ctx_bench_samples_t *den, ctx_bench_goal_t goal, const char *what);
/* median(with) - median(without); p10, p90 and spread from the per-round
 * differences (a cost measured as "loop with the operation minus the same
 * loop without it"). */
void ctx_bench_put_difference(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *with,
                              const ctx_bench_samples_t *without, ctx_bench_goal_t goal,
                              const char *what);
/* An extra key: the best (smallest) round of `s`.  Never a goal. */
void ctx_bench_put_best(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *s,
                        const char *what);

/* ---- the sections, in the order they run; each module adds its own ---- */
void ctx_bench_core(ctx_bench_t *b);
void ctx_bench_cancel(ctx_bench_t *b);
void ctx_bench_pool(ctx_bench_t *b);
void ctx_bench_loop(ctx_bench_t *b);
/* The loop section's figures that compare with raw malloc'd callbacks,
 * measured while the process has had no second thread (main calls it
 * before any section when the loop section is selected; bench_loop.c says
 * why). */
void ctx_bench_loop_early(ctx_bench_t *b);
void ctx_bench_bus(ctx_bench_t *b);
void ctx_bench_wire(ctx_bench_t *b);
/* C++ (bench_grpc.cpp), built when the grpc module is (CTX_BENCH_GRPC). */
void ctx_bench_grpc(ctx_bench_t *b);

#endif
