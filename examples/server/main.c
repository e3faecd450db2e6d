/* SPDX-License-Identifier: MIT */
/*
 * main.c — ctxvar_server_example: the example TCP server of the loop module
 * (server.h) from the command line.
 *
 *   ctxvar_server_example serve [--raw] [--port N] [--threads N] [--delay MS]
 *       serves on 127.0.0.1 (port 0: a free one, printed) until SIGINT or
 *       SIGTERM, then prints its counters (the context mismatches among
 *       them: 0 unless something is wrong)
 *   ctxvar_server_example load --port N [--connections N] [--seconds S]
 *       drives a server on 127.0.0.1:N and prints requests per second
 *   ctxvar_server_example compare [--connections N] [--seconds S]
 *                                 [--rounds N] [--threads N] [--delay MS]
 *       the ctxvar and the raw libuv server, each in a process of its own,
 *       in alternating rounds: requests per second and server CPU per
 *       request of each, the median of each, and their ratio
 *
 * tests/loop/test_server.c runs both servers briefly in one process with
 * the load generator and checks that no stage saw a wrong context.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "round.h"
#include "server.h"

typedef struct args {
    int raw, port, threads, connections, rounds;
    unsigned delay_ms;
    double seconds;
} args_t;

static int parse(int argc, char **argv, args_t *a) {
    *a = (args_t){0, 0, 2, 200, 5, 0, 2.0};
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--raw") == 0) {
            a->raw = 1;
            continue;
        }
        if (!value)
            return -1;
        i++;
        if (strcmp(arg, "--port") == 0)
            a->port = atoi(value);
        else if (strcmp(arg, "--threads") == 0)
            a->threads = atoi(value);
        else if (strcmp(arg, "--connections") == 0)
            a->connections = atoi(value);
        else if (strcmp(arg, "--rounds") == 0)
            a->rounds = atoi(value);
        else if (strcmp(arg, "--delay") == 0)
            a->delay_ms = (unsigned)atoi(value);
        else if (strcmp(arg, "--seconds") == 0)
            a->seconds = atof(value);
        else
            return -1;
    }
    return 0;
}

static void print_stats(const char *name, const ex_server_stats_t *st) {
    printf("%s: %llu connections, %llu requests, %llu context reads, %llu mismatches\n", name,
           (unsigned long long)st->connections, (unsigned long long)st->requests,
           (unsigned long long)st->reads, (unsigned long long)st->mismatches);
}

/* ---- serve ---- */

static ex_server_t *signalled;

static void on_signal(int sig) {
    (void)sig;
    if (signalled)
        ex_server_stop(signalled); /* uv_async_send: async-signal-safe */
}

static int cmd_serve(const args_t *a) {
    if (a->raw)
        ex_server_set_uv_threads(a->threads);
    ex_server_config_t config = {a->raw ? EX_SERVER_RAW : EX_SERVER_CTXVAR, -1, a->port,
                                 a->threads, a->delay_ms, -1};
    ex_server_t *server = NULL;
    int r = ex_server_new(&config, &server);
    if (r) {
        fprintf(stderr, "cannot start the server: %d\n", r);
        return 1;
    }
    signalled = server;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("listening on 127.0.0.1:%d (%s)\n", ex_server_port(server), a->raw ? "raw libuv" : "ctxvar");
    fflush(stdout);
    ex_server_run(server);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signalled = NULL;
    ex_server_stats_t st;
    ex_server_stats(server, &st);
    print_stats(a->raw ? "raw" : "ctxvar", &st);
    ex_server_free(server);
    return st.mismatches == 0 ? 0 : 1;
}

/* ---- load ---- */

static int cmd_load(const args_t *a) {
    ex_load_config_t config = {a->port, a->connections, 300, (unsigned)(a->seconds * 1000)};
    ex_load_result_t got;
    if (ex_load_run(&config, &got) != 0)
        return 1;
    printf("%d connections: %.0f requests/s (%llu in %.2f s), %llu errors\n", got.connected,
           got.rps, (unsigned long long)got.responses, got.seconds,
           (unsigned long long)got.errors);
    return got.errors ? 1 : 0;
}

/* ---- compare ---- */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int cmd_compare(const args_t *a) {
    enum { MAX = 64 };
    int rounds = a->rounds < 1 ? 1 : a->rounds > MAX ? MAX : a->rounds;
    double rps[2][MAX], cpu[2][MAX];
    uint64_t mismatches = 0, errors = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            int kind = (r + k) % 2; /* alternate which goes first */
            ex_round_config_t config = {(ex_server_kind_t)kind, a->connections, a->threads,
                                        a->delay_ms, 300, (unsigned)(a->seconds * 1000)};
            ex_round_result_t got;
            if (ex_round_run(&config, &got) != 0) {
                fprintf(stderr, "round %d (%s) failed\n", r, kind ? "raw" : "ctxvar");
                return 1;
            }
            rps[kind][r] = got.rps;
            cpu[kind][r] = got.cpu_us_per_request;
            mismatches += got.mismatches;
            errors += got.client_errors;
            printf("round %2d %-6s %9.0f req/s  %6.2f us CPU/request  (%d connected)\n", r,
                   kind ? "raw" : "ctxvar", got.rps, got.cpu_us_per_request, got.connected);
            fflush(stdout);
        }
    }
    double rc = median(rps[0], rounds), rr = median(rps[1], rounds);
    printf("median: ctxvar %.0f req/s %.2f us/req, raw %.0f req/s %.2f us/req, ratio %.3f; "
           "%llu mismatches, %llu errors\n",
           rc, median(cpu[0], rounds), rr, median(cpu[1], rounds), rc / rr,
           (unsigned long long)mismatches, (unsigned long long)errors);
    return mismatches || errors ? 1 : 0;
}

int main(int argc, char **argv) {
    args_t a;
    if (argc < 2 || parse(argc, argv, &a) != 0) {
        fprintf(stderr, "usage: %s serve|load|compare [options] (see main.c)\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(&a);
    if (strcmp(argv[1], "load") == 0)
        return cmd_load(&a);
    if (strcmp(argv[1], "compare") == 0)
        return cmd_compare(&a);
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
