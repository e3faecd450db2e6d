/*
 * bench.h — the benchmark harness shared by every module's figures.
 *
 * One binary (ctxvar_bench) runs every module's section in order and prints a
 * table, or with --json one JSON object.  A section measures its figures and
 * their baselines in the same run and reports each with ctx_bench_put.
 * Keys named in the issues are a contract: keep them stable, add freely.
 * Units: nanoseconds unless the key ends in _ratio or _bytes.
 */
#ifndef CTX_BENCH_H
#define CTX_BENCH_H

#include <stdint.h>

typedef struct ctx_bench ctx_bench_t;

/* Records figure `key` (a JSON-safe identifier) with `value`; `what` is a short
 * human description for the table (may be NULL). */
void ctx_bench_put(ctx_bench_t *b, const char *key, double value, const char *what);
/* 1 when --quick was given: sections use fewer iterations (for smoke runs). */
int ctx_bench_quick(const ctx_bench_t *b);
/* Monotonic clock in nanoseconds. */
uint64_t ctx_bench_now_ns(void);

/* The sections, in the order they run.  Each module adds its own here. */
void ctx_bench_core(ctx_bench_t *b);
void ctx_bench_cancel(ctx_bench_t *b);
void ctx_bench_pool(ctx_bench_t *b);
void ctx_bench_loop(ctx_bench_t *b);
void ctx_bench_bus(ctx_bench_t *b);
void ctx_bench_wire(ctx_bench_t *b);

#endif
