/* SPDX-License-Identifier: MIT */
/*
 * server_internal.h — what the server's files share: the connection, the
 * reply, and the pipeline each build of the server plugs into server.c.
 *
 *   server.c      listen, accept, read and split frames, write replies,
 *                 close, stop (both builds)
 *   server_ctx.c  the request pipeline on ctxvar's loop, tasks and pool
 *   server_raw.c  the same pipeline on raw libuv and uv_queue_work
 *
 * A connection is freed when its handle has closed and no request of it is
 * in flight (`refs`: one for the open handle, one per request); a reply to a
 * connection that closed meanwhile is dropped, not written.
 */
#ifndef CTX_EXAMPLE_SERVER_INTERNAL_H
#define CTX_EXAMPLE_SERVER_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <ctxvar/loop.h>

#include "server.h"

typedef struct ex_conn ex_conn_t;
typedef struct ex_reply ex_reply_t;

/* How one build runs requests. */
typedef struct ex_pipeline {
    /* Makes what the build needs; sets server->uv. */
    int (*setup)(ex_server_t *server);
    /* Starts reading an accepted connection (reads go to ex__conn_on_read). */
    int (*start_reading)(ex_conn_t *conn);
    /* One request read from `conn` (held for it: see ex__reply_send). */
    void (*request)(ex_conn_t *conn, uint64_t seq, uint64_t value);
    /* Runs the loop until every handle is closed and nothing is in flight. */
    int (*run)(ex_server_t *server);
    /* Releases what setup made (the loop is no longer running). */
    void (*teardown)(ex_server_t *server);
    /* Drops what start_reading captured, when the connection closes. */
    void (*conn_closed)(ex_conn_t *conn);
} ex_pipeline_t;

extern const ex_pipeline_t ex__pipeline_ctx;
extern const ex_pipeline_t ex__pipeline_raw;

struct ex_server {
    ex_server_config_t config;
    const ex_pipeline_t *pipeline;
    void *state;          /* the build's own (server_ctx.c / server_raw.c) */
    uv_loop_t *uv;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_poll_t control;
    int has_control;
    int stopping;
    int port;
    ex_conn_t *conns;     /* open connections (to close them at stop) */
    /* Counters: written by the loop thread, `reads_pool` and
     * `mismatches_pool` by workers. */
    uint64_t connections;
    uint64_t requests;
    uint64_t reads;
    uint64_t mismatches;
    atomic_uint_fast64_t reads_pool;
    atomic_uint_fast64_t mismatches_pool;
};

struct ex_conn {
    uv_tcp_t tcp; /* first: the handle converts back to the connection */
    ex_server_t *server;
    ex_conn_t *prev, *next;
    int refs;
    int closing;
    /* The ctxvar build's connection context (ctx_loop_uv scope). */
    ctx_loop_uv_scope_t scope;
    size_t have;
    unsigned char buf[64 * 1024];
};

/* A response on its way; embedded in each build's request. */
struct ex_reply {
    uv_write_t write;
    ex_conn_t *conn;
    void (*done)(ex_reply_t *reply); /* frees the request */
    unsigned char bytes[EX_FRAME_BYTES];
};

/* Splits what was read into frames and hands each to the pipeline; closes
 * the connection on EOF or error. */
void ex__conn_on_read(ex_conn_t *conn, ssize_t nread);
/* The alloc callback of every read: the connection's own buffer. */
void ex__conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
/* Takes a reference for a request. */
static inline void ex__conn_hold(ex_conn_t *conn) { conn->refs++; }
/* Writes the response of a request (or drops it if the connection closed),
 * then calls reply->done and lets go of the request's reference. */
void ex__reply_send(ex_reply_t *reply, ex_conn_t *conn, uint64_t seq, uint64_t result);
/* Drops a request that never got as far as a reply. */
void ex__conn_drop_request(ex_conn_t *conn);

/* The work done on a worker thread: a few rounds of a 64-bit mix. */
static inline uint64_t ex__work(uint64_t value) {
    for (int i = 0; i < 16; i++) {
        value += 0x9e3779b97f4a7c15u;
        value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9u;
        value = (value ^ (value >> 27)) * 0x94d049bb133111ebu;
        value ^= value >> 31;
    }
    return value;
}

#endif /* CTX_EXAMPLE_SERVER_INTERNAL_H */
