/* SPDX-License-Identifier: MIT */
/*
 * round.c — one measured run of a server build: the server in a process of
 * its own, the load generator in the caller's.
 *
 *   caller                                 server process (fork)
 *   ──────────────────────────────────     ───────────────────────────────
 *   socket, bind 127.0.0.1:0, listen
 *   pipes: control, results
 *   fork ───────────────────────────────►  ex_server_new(listen fd,
 *   ex_load_run (warm-up, measure)           control fd) ; ex_server_run
 *   close control ──────── EOF ─────────►  stops, drains, writes its
 *   read results  ◄─────────────────────     counters ; _exit
 *   waitpid; getrusage(RUSAGE_CHILDREN) before and after: its CPU time
 *
 * A process per run gives each build a fresh allocator and thread pool, and
 * makes its CPU time exact (the children's rusage covers the loop thread and every
 * worker, and nothing of the load generator's).  CPU per request divides it
 * by the requests the server answered over its whole life (warm-up
 * included; start-up and teardown are a few milliseconds of it).
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "round.h"
#include "server_internal.h"

/* A listening socket on 127.0.0.1 and a free port, or -1. */
static int listen_socket(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4096) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The server process: serves until the control pipe closes. */
static void serve(const ex_round_config_t *rc, int listen_fd, int control_fd, int result_fd) {
    ex_server_stats_t stats;
    memset(&stats, 0, sizeof stats);
    if (rc->kind == EX_SERVER_RAW)
        ex_server_set_uv_threads(rc->threads);
    ex_server_config_t config = {rc->kind, listen_fd, 0, rc->threads, rc->delay_ms, control_fd};
    ex_server_t *server = NULL;
    int status = 1;
    if (ex_server_new(&config, &server) == 0) {
        if (ex_server_run(server) == 0)
            status = 0;
        ex_server_stats(server, &stats);
        ex_server_free(server);
    }
    write_all(result_fd, &stats, sizeof stats);
    _exit(status);
}

/* CPU seconds (user + system) of the children waited for so far. */
static double children_cpu(void) {
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    getrusage(RUSAGE_CHILDREN, &usage);
    return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
           (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
}

int ex_round_run(const ex_round_config_t *rc, ex_round_result_t *out) {
    memset(out, 0, sizeof *out);
    int port = 0;
    int listen_fd = listen_socket(&port);
    if (listen_fd < 0)
        return -1;
    int control[2], results[2];
    if (pipe(control) != 0) {
        close(listen_fd);
        return -1;
    }
    if (pipe(results) != 0) {
        close(listen_fd);
        close(control[0]);
        close(control[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(control[1]);
        close(results[0]);
        serve(rc, listen_fd, control[0], results[1]);
    }
    close(listen_fd);
    close(control[0]);
    close(results[1]);
    if (pid < 0) {
        close(control[1]);
        close(results[0]);
        return -1;
    }
    ex_load_config_t load = {port, rc->connections, rc->warmup_ms, rc->measure_ms};
    ex_load_result_t got;
    int r = ex_load_run(&load, &got);
    close(control[1]); /* the server stops */
    ex_server_stats_t stats;
    memset(&stats, 0, sizeof stats);
    if (read_all(results[0], &stats, sizeof stats) != 0)
        r = -1;
    close(results[0]);
    int status = 0;
    double before = children_cpu();
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        r = -1;
    double cpu = children_cpu() - before;
    out->rps = got.rps;
    out->responses = got.responses;
    out->client_errors = got.errors;
    out->connected = got.connected;
    out->server_requests = stats.requests;
    out->reads = stats.reads;
    out->mismatches = stats.mismatches;
    out->server_cpu_s = cpu;
    out->cpu_us_per_request = stats.requests ? cpu * 1e6 / (double)stats.requests : 0;
    return r;
}
