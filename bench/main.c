/*
 * main.c — runs every benchmark section and prints the figures.
 *
 *   ctxvar_bench            a table: key, value, what it measures
 *   ctxvar_bench --json     the same figures as one JSON object
 *   ctxvar_bench --quick    fewer iterations (a smoke run; figures are noisy)
 *
 * Each section measures its baselines in the same run as its figures, so
 * ratios compare like with like on whatever machine runs it.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_FIGURES 128

typedef struct figure {
    const char *key;
    double value;
    const char *what;
} figure_t;

struct ctx_bench {
    figure_t figures[MAX_FIGURES];
    int count;
    int quick;
};

void ctx_bench_put(ctx_bench_t *b, const char *key, double value, const char *what) {
    if (b->count < MAX_FIGURES)
        b->figures[b->count++] = (figure_t){key, value, what ? what : ""};
}

int ctx_bench_quick(const ctx_bench_t *b) { return b->quick; }

uint64_t ctx_bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int main(int argc, char **argv) {
    static ctx_bench_t bench;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--quick") == 0)
            bench.quick = 1;
        else {
            fprintf(stderr, "usage: %s [--json] [--quick]\n", argv[0]);
            return 2;
        }
    }
    ctx_bench_core(&bench);
    ctx_bench_cancel(&bench);
    ctx_bench_pool(&bench);
    ctx_bench_loop(&bench);
    ctx_bench_bus(&bench);
    ctx_bench_wire(&bench);

    if (json) {
        printf("{");
        for (int i = 0; i < bench.count; i++)
            printf("%s\n  \"%s\": %.3f", i ? "," : "", bench.figures[i].key, bench.figures[i].value);
        printf("\n}\n");
        return 0;
    }
    printf("%-28s %12s  %s\n", "figure", "value", "what");
    for (int i = 0; i < bench.count; i++) {
        const figure_t *f = &bench.figures[i];
        const char *unit = ends_with(f->key, "_ratio") ? "x" : ends_with(f->key, "_bytes") ? "B" : "ns";
        printf("%-28s %10.2f %-2s  %s\n", f->key, f->value, unit, f->what);
    }
    return 0;
}
