/* SPDX-License-Identifier: MIT */
/*
 * round.h — one measured run of a server build against the load generator,
 * the server in a process of its own (round.c).  Used by the example's
 * `compare` command and by ctxvar_bench (loop_server_* figures).
 */
#ifndef CTX_EXAMPLE_ROUND_H
#define CTX_EXAMPLE_ROUND_H

#include <stdint.h>

#include "server.h"

typedef struct ex_round_config {
    ex_server_kind_t kind;
    int connections;
    int threads;         /* pool workers (ctxvar) / UV_THREADPOOL_SIZE (raw) */
    unsigned delay_ms;   /* the timer stage's delay */
    unsigned warmup_ms;
    unsigned measure_ms;
} ex_round_config_t;

typedef struct ex_round_result {
    double rps;                /* responses per second in the measured window */
    uint64_t responses;        /* in the window */
    uint64_t client_errors;
    int connected;
    uint64_t server_requests;  /* over the server's life */
    uint64_t reads;            /* context reads of the server */
    uint64_t mismatches;       /* of those, wrong */
    double server_cpu_s;       /* user + system CPU of the server process */
    double cpu_us_per_request; /* server_cpu_s / server_requests, in µs */
} ex_round_result_t;

/* Forks a server of `config->kind`, drives it, stops it.  0, or -1 when
 * something failed (a socket, fork, or the server process). */
int ex_round_run(const ex_round_config_t *config, ex_round_result_t *out);

#endif /* CTX_EXAMPLE_ROUND_H */
