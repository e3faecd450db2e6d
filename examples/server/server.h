/* SPDX-License-Identifier: MIT */
/*
 * server.h — the example TCP server of the loop module, in two builds of
 * one program, and the load generator that drives them.
 *
 * The protocol is the smallest that still looks like a service: a client
 * sends 16-byte requests (a sequence number and a value, both uint64 in
 * host order) and reads 16-byte responses (the same sequence number and a
 * value computed from the request's on a worker thread).  Every request
 * goes through the stages a real handler goes through:
 *
 *   read callback ─► task ─► call_later timer ─► offload to a pool ─► write
 *    (loop thread)  (loop)      (loop)             (worker thread)    (loop)
 *
 *   EX_SERVER_CTXVAR  the stages are ctxvar's: the read callback runs in the
 *                     connection's context (ctx_loop_uv scope), the task is a
 *                     ctx_loop_task_t in a copy of it whose first step sets
 *                     the request variable, the timer is ctx_loop_call_later,
 *                     the offload ctx_loop_run_in_pool with a done-callback,
 *                     and every stage reads the connection and request
 *                     variables and counts a mismatch if it sees another
 *                     request's values (server_ctx.c);
 *   EX_SERVER_RAW     the same server on raw libuv: no task, a uv_timer_t
 *                     per request, uv_queue_work on libuv's own thread pool,
 *                     the request passed by pointer from stage to stage
 *                     (server_raw.c).
 *
 * Both share the TCP plumbing (server.c): accept, read and split frames,
 * write a response, close.  The load generator (loadgen.c) opens hundreds
 * of connections on loopback, each with one request in flight at a time
 * (a closed loop: send, wait for the response, send the next), and counts
 * the responses of a measured window.
 *
 * Functions return 0 or a negative libuv/ctxvar code, and print nothing.
 * ex_server_new and ex_load_run ignore SIGPIPE for the process (a write to
 * a connection the peer closed must fail, not kill), as libuv programs do.
 */
#ifndef CTX_EXAMPLE_SERVER_H
#define CTX_EXAMPLE_SERVER_H

#include <stdint.h>

/* One request or response on the wire. */
#define EX_FRAME_BYTES 16

typedef enum ex_server_kind { EX_SERVER_CTXVAR = 0, EX_SERVER_RAW = 1 } ex_server_kind_t;

typedef struct ex_server_config {
    ex_server_kind_t kind;
    /* A listening TCP socket to serve on (the server takes it), or -1: the
     * server binds 127.0.0.1:`port` itself (0: a free port). */
    int listen_fd;
    int port;
    /* Workers of the ctxvar pool; for EX_SERVER_RAW libuv's pool is sized
     * by UV_THREADPOOL_SIZE, which the caller sets before the first server
     * of the process runs (ex_server_set_uv_threads). */
    int threads;
    /* The timer stage's delay in milliseconds (0: due at once, still
     * through the timer). */
    unsigned delay_ms;
    /* A file descriptor (a pipe's read end) whose readability or EOF stops
     * the server, or -1 (then only ex_server_stop does). */
    int control_fd;
} ex_server_config_t;

typedef struct ex_server_stats {
    uint64_t connections; /* accepted */
    uint64_t requests;    /* responses written */
    uint64_t reads;       /* context reads (stages that checked their context) */
    uint64_t mismatches;  /* reads that saw another request's values, or none */
} ex_server_stats_t;

typedef struct ex_server ex_server_t;

/* Makes a server (listening, not yet serving).  *out is the caller's. */
int ex_server_new(const ex_server_config_t *config, ex_server_t **out);
/* The port it listens on. */
int ex_server_port(const ex_server_t *server);
/* Serves on the calling thread until stopped; returns once every request in
 * flight has been answered or dropped and every handle is closed. */
int ex_server_run(ex_server_t *server);
/* Stops a running server (any thread, async-signal-safe; also before it
 * runs, but not after ex_server_run returned). */
void ex_server_stop(ex_server_t *server);
/* The counters (after ex_server_run returned, or racy while it runs). */
void ex_server_stats(const ex_server_t *server, ex_server_stats_t *out);
/* Frees a server that is not running. */
void ex_server_free(ex_server_t *server);
/* Sets UV_THREADPOOL_SIZE for the raw server (before libuv's pool starts). */
void ex_server_set_uv_threads(int threads);

/* ---- the load generator ---- */

typedef struct ex_load_config {
    int port;               /* on 127.0.0.1 */
    int connections;
    unsigned warmup_ms;     /* run, not counted */
    unsigned measure_ms;    /* counted */
} ex_load_config_t;

typedef struct ex_load_result {
    uint64_t responses;     /* in the measured window */
    double seconds;         /* the window's actual length */
    double rps;             /* responses / seconds */
    uint64_t errors;        /* connections that failed or answers that did
                               not match their request */
    int connected;          /* connections established */
} ex_load_result_t;

/* Runs the load on the calling thread (a libuv loop of its own) and closes
 * every connection before returning. */
int ex_load_run(const ex_load_config_t *config, ex_load_result_t *out);

#endif /* CTX_EXAMPLE_SERVER_H */
