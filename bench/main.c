/* SPDX-License-Identifier: MIT */
/*
 * main.c — runs every benchmark section and prints the figures.
 *
 *   ctxvar_bench                 a table (below)
 *   ctxvar_bench --json          the same figures as one JSON object
 *   ctxvar_bench --quick         fewer iterations per round, 11 rounds
 *   ctxvar_bench --rounds N      N rounds per comparison (11..64; default 21)
 *   ctxvar_bench --only a,b      only the named sections (core, cancel, pool, loop,
 *                                bus, wire, grpc: the last when the grpc module
 *                                is built)
 *
 * How figures are measured (interleaved rounds, medians, ratio of medians,
 * spread) is explained in bench.h.
 *
 * The table: one line per figure — its key, its value (the median for a
 * measured figure, the ratio of medians for a comparison), the p10 and p90
 * of its per-round values, its spread ((p90 - p10) / |median|, flagged with
 * "!" above 30%), its goal with ✔ or ✘, and what it measures.  A summary
 * line counts the goals met and missed and the noisy figures.
 *
 * The JSON object: every figure's key with its value (a number), as before
 * this harness existed, plus one key "_stats" holding, per figure measured
 * in rounds or carrying a goal, {"p10", "p90", "spread", "rounds", "goal",
 * "ok"} ("goal" is a string such as "<= 1.05"; "ok" true/false; absent
 * members do not apply).
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_FIGURES 256
#define NOISY_SPREAD 0.30

typedef struct figure {
    const char *key;
    const char *what;
    double value;
    int rounds; /* 0: measured once (no p10/p90/spread) */
    double p10, p90, spread;
    ctx_bench_goal_t goal;
} figure_t;

struct ctx_bench {
    figure_t figures[MAX_FIGURES];
    int count;
    int quick;
    int rounds;
};

/* ---- samples ---- */

void ctx_bench_sample(ctx_bench_samples_t *s, double value) {
    if (s->n < CTX_BENCH_MAX_ROUNDS)
        s->v[s->n++] = value;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile_of(const double *v, int n, double q) {
    double sorted[CTX_BENCH_MAX_ROUNDS];
    if (n <= 0)
        return 0;
    memcpy(sorted, v, sizeof *v * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    double pos = q * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1)
        return sorted[n - 1];
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (pos - lo);
}

double ctx_bench_quantile(const ctx_bench_samples_t *s, double q) { return quantile_of(s->v, s->n, q); }

double ctx_bench_median(const ctx_bench_samples_t *s) { return quantile_of(s->v, s->n, 0.5); }

double ctx_bench_best(const ctx_bench_samples_t *s) {
    double best = s->n ? s->v[0] : 0;
    for (int i = 1; i < s->n; i++)
        if (s->v[i] < best)
            best = s->v[i];
    return best;
}

int ctx_bench_rounds(const ctx_bench_t *b) { return b->rounds; }

int ctx_bench_quick(const ctx_bench_t *b) { return b->quick; }

uint64_t ctx_bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ctx_bench_interleave(ctx_bench_t *b, ctx_bench_contender_t *c, int n) {
    for (int i = 0; i < n; i++) {
        c[i].samples.n = 0;
        (void)c[i].round(c[i].arg); /* warm-up: caches, allocator, threads */
    }
    for (int r = 0; r < b->rounds; r++)
        for (int k = 0; k < n; k++) {
            ctx_bench_contender_t *x = &c[(r + k) % n];
            ctx_bench_sample(&x->samples, x->round(x->arg));
        }
}

/* ---- figures ---- */

static figure_t *add(ctx_bench_t *b, const char *key, double value, ctx_bench_goal_t goal,
                     const char *what) {
    if (b->count >= MAX_FIGURES) {
        fprintf(stderr, "ctxvar_bench: more than %d figures, %s dropped\n", MAX_FIGURES, key);
        return NULL;
    }
    figure_t *f = &b->figures[b->count++];
    *f = (figure_t){.key = key, .what = what ? what : "", .value = value, .goal = goal};
    return f;
}

/* Records value with the p10/p90/spread of the per-round values v[0..n). */
static void add_rounds(ctx_bench_t *b, const char *key, double value, const double *v, int n,
                       ctx_bench_goal_t goal, const char *what) {
    figure_t *f = add(b, key, value, goal, what);
    if (!f || n <= 0)
        return;
    f->rounds = n;
    f->p10 = quantile_of(v, n, 0.10);
    f->p90 = quantile_of(v, n, 0.90);
    double mid = fabs(quantile_of(v, n, 0.5));
    f->spread = mid > 0 ? (f->p90 - f->p10) / mid : INFINITY;
}

void ctx_bench_put(ctx_bench_t *b, const char *key, double value, const char *what) {
    add(b, key, value, CTX_BENCH_NO_GOAL, what);
}

void ctx_bench_put_goal(ctx_bench_t *b, const char *key, double value, ctx_bench_goal_t goal,
                        const char *what) {
    add(b, key, value, goal, what);
}

void ctx_bench_put_samples(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *s,
                           ctx_bench_goal_t goal, const char *what) {
    add_rounds(b, key, ctx_bench_median(s), s->v, s->n, goal, what);
}

static int paired(const ctx_bench_samples_t *x, const ctx_bench_samples_t *y, const char *key) {
    if (x->n == y->n)
        return x->n;
    fprintf(stderr, "ctxvar_bench: %s compares %d rounds with %d\n", key, x->n, y->n);
    return x->n < y->n ? x->n : y->n;
}

void ctx_bench_put_ratio(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *num,
                         const ctx_bench_samples_t *den, ctx_bench_goal_t goal, const char *what) {
    double per_round[CTX_BENCH_MAX_ROUNDS];
    int n = paired(num, den, key);
    for (int i = 0; i < n; i++)
        per_round[i] = num->v[i] / den->v[i];
    add_rounds(b, key, ctx_bench_median(num) / ctx_bench_median(den), per_round, n, goal, what);
}

void ctx_bench_put_difference(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *with,
                              const ctx_bench_samples_t *without, ctx_bench_goal_t goal,
                              const char *what) {
    double per_round[CTX_BENCH_MAX_ROUNDS];
    int n = paired(with, without, key);
    for (int i = 0; i < n; i++)
        per_round[i] = with->v[i] - without->v[i];
    add_rounds(b, key, ctx_bench_median(with) - ctx_bench_median(without), per_round, n, goal,
               what);
}

void ctx_bench_put_best(ctx_bench_t *b, const char *key, const ctx_bench_samples_t *s,
                        const char *what) {
    add(b, key, ctx_bench_best(s), CTX_BENCH_NO_GOAL, what);
}

/* ---- output ---- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *unit_of(const char *key) {
    if (ends_with(key, "_ratio") || strstr(key, "_ratio_"))
        return "x";
    if (ends_with(key, "_bytes"))
        return "B";
    if (ends_with(key, "_us") || strstr(key, "_us_per_"))
        return "us";
    if (ends_with(key, "_rps"))
        return "/s";
    if (ends_with(key, "_count"))
        return "";
    return "ns";
}

/* 1 met, 0 missed, -1 no goal. */
static int goal_met(const figure_t *f) {
    if (!f->goal.op)
        return -1;
    return f->goal.op == '<' ? f->value <= f->goal.bound : f->value >= f->goal.bound;
}

static int noisy(const figure_t *f) { return f->rounds && !(f->spread <= NOISY_SPREAD); }

static void print_json(const ctx_bench_t *b) {
    printf("{");
    for (int i = 0; i < b->count; i++)
        printf("%s\n  \"%s\": %.3f", i ? "," : "", b->figures[i].key, b->figures[i].value);
    printf(",\n  \"_stats\": {");
    int first = 1;
    for (int i = 0; i < b->count; i++) {
        const figure_t *f = &b->figures[i];
        if (!f->rounds && !f->goal.op)
            continue;
        printf("%s\n    \"%s\": {", first ? "" : ",", f->key);
        first = 0;
        const char *sep = "";
        if (f->rounds) {
            printf("\"p10\": %.3f, \"p90\": %.3f, ", f->p10, f->p90);
            if (isfinite(f->spread))
                printf("\"spread\": %.3f, ", f->spread);
            else
                printf("\"spread\": null, ");
            printf("\"rounds\": %d", f->rounds);
            sep = ", ";
        }
        if (f->goal.op)
            printf("%s\"goal\": \"%s %g\", \"ok\": %s", sep, f->goal.op == '<' ? "<=" : ">=",
                   f->goal.bound, goal_met(f) ? "true" : "false");
        printf("}");
    }
    printf("\n  }\n}\n");
}

static void print_table(const ctx_bench_t *b) {
    int met = 0, missed = 0, noise = 0;
    printf("%-32s %12s %-2s %10s %10s %7s  %-12s %s\n", "figure", "value", "", "p10", "p90", "spread",
           "goal", "what");
    for (int i = 0; i < b->count; i++) {
        const figure_t *f = &b->figures[i];
        char p10[32] = "", p90[32] = "", spread[32] = "", goal[32] = "";
        if (f->rounds) {
            snprintf(p10, sizeof p10, "%.2f", f->p10);
            snprintf(p90, sizeof p90, "%.2f", f->p90);
            if (isfinite(f->spread) && f->spread < 100)
                snprintf(spread, sizeof spread, "%.0f%%%s", f->spread * 100, noisy(f) ? "!" : " ");
            else
                snprintf(spread, sizeof spread, "huge!");
            noise += noisy(f);
        }
        int ok = goal_met(f);
        if (ok >= 0) {
            snprintf(goal, sizeof goal, "%s %g %s", f->goal.op == '<' ? "<=" : ">=", f->goal.bound,
                     ok ? "\u2714" : "\u2718");
            met += ok;
            missed += !ok;
        }
        /* The check marks are 3 bytes, 1 column: pad by hand. */
        printf("%-32s %12.2f %-2s %10s %10s %7s  %-*s %s\n", f->key, f->value, unit_of(f->key), p10,
               p90, spread, ok >= 0 ? 14 : 12, goal, f->what);
    }
    printf("\ngoals: %d met \u2714, %d missed \u2718; %d figure%s with spread > %.0f%% (!): "
           "rerun those on a quieter machine or with --rounds 41\n",
           met, missed, noise, noise == 1 ? "" : "s", NOISY_SPREAD * 100);
}

/* ---- sections ---- */

typedef struct section {
    const char *name;
    void (*run)(ctx_bench_t *b);
} section_t;

static const section_t sections[] = {
    {"core", ctx_bench_core}, {"cancel", ctx_bench_cancel}, {"pool", ctx_bench_pool},
    {"loop", ctx_bench_loop}, {"bus", ctx_bench_bus},       {"wire", ctx_bench_wire},
#if defined(CTX_BENCH_GRPC)
    {"grpc", ctx_bench_grpc},
#endif
};
#define SECTIONS (int)(sizeof sections / sizeof sections[0])

/* 1 if `name` is in the comma-separated `list` (NULL: every section). */
static int selected(const char *list, const char *name) {
    if (!list)
        return 1;
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0)
            return 1;
        p += n + (end != NULL);
    }
    return 0;
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s [--json] [--quick] [--rounds N] [--only core,cancel,pool,loop,bus,wire,grpc]\n", argv0);
    return 2;
}

int main(int argc, char **argv) {
    static ctx_bench_t bench;
    int json = 0, rounds = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--quick") == 0)
            bench.quick = 1;
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else
            return usage(argv[0]);
    }
    if (!rounds)
        rounds = bench.quick ? CTX_BENCH_MIN_ROUNDS : 21;
    bench.rounds = rounds < CTX_BENCH_MIN_ROUNDS   ? CTX_BENCH_MIN_ROUNDS
                   : rounds > CTX_BENCH_MAX_ROUNDS ? CTX_BENCH_MAX_ROUNDS
                                                   : rounds;
    /* Before any section starts a thread: once a process has had a second
     * thread, glibc's malloc takes a lock, and the loop's raw baselines
     * (malloc'd records) slow down by half (bench_loop.c). */
    if (selected(only, "loop"))
        ctx_bench_loop_early(&bench);
    for (int i = 0; i < SECTIONS; i++)
        if (selected(only, sections[i].name))
            sections[i].run(&bench);
    if (json)
        print_json(&bench);
    else
        print_table(&bench);
    return 0;
}
