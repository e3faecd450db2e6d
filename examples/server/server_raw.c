/* SPDX-License-Identifier: MIT */
/*
 * server_raw.c — the example server's request pipeline on raw libuv: the
 * baseline the ctxvar build is measured against.  The same stages, written
 * the way a libuv program without ctxvar would write them:
 *
 *   read    each frame becomes a request record (one allocation holding its
 *           timer, work request and reply)
 *   timer   a uv_timer_t per request, started with the configured delay
 *   pool    uv_queue_work on libuv's thread pool (UV_THREADPOOL_SIZE)
 *   done    the after-work callback writes the reply; the timer is closed
 *           and the record freed once the write completed
 *
 * Every stage reads what it needs from the request record, which is passed
 * along by pointer (there is no context to read); the counters of reads are
 * kept as in the ctxvar build, so both do the same bookkeeping.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "server_internal.h"

typedef struct raw_request {
    ex_reply_t reply; /* first */
    uv_timer_t timer;
    uv_work_t work;
    ex_conn_t *conn;
    ex_server_t *server;
    uint64_t seq;
    uint64_t value;
    uint64_t result;
} raw_request_t;

static void on_timer_closed(uv_handle_t *handle) {
    free((raw_request_t *)handle->data);
}

/* After the write (or instead of it): the timer goes, then the record. */
static void request_done(ex_reply_t *reply) {
    raw_request_t *req = (raw_request_t *)reply;
    uv_close((uv_handle_t *)&req->timer, on_timer_closed);
}

static void after_work(uv_work_t *work, int status) {
    raw_request_t *req = work->data;
    req->server->reads++;
    if (status != 0) {
        ex_conn_t *conn = req->conn;
        request_done(&req->reply);
        ex__conn_drop_request(conn);
        return;
    }
    ex__reply_send(&req->reply, req->conn, req->seq, req->result);
}

static void do_work(uv_work_t *work) {
    raw_request_t *req = work->data;
    atomic_fetch_add_explicit(&req->server->reads_pool, 1, memory_order_relaxed);
    req->result = ex__work(req->value);
}

static void on_timer(uv_timer_t *timer) {
    raw_request_t *req = timer->data;
    req->server->reads++;
    req->work.data = req;
    if (uv_queue_work(req->server->uv, &req->work, do_work, after_work) != 0) {
        ex_conn_t *conn = req->conn;
        request_done(&req->reply);
        ex__conn_drop_request(conn);
    }
}

static void request(ex_conn_t *conn, uint64_t seq, uint64_t value) {
    ex_server_t *s = conn->server;
    raw_request_t *req = malloc(sizeof *req);
    if (!req) {
        ex__conn_drop_request(conn);
        return;
    }
    req->reply.done = request_done;
    req->conn = conn;
    req->server = s;
    req->seq = seq;
    req->value = value;
    req->result = 0;
    s->reads++;
    uv_timer_init(s->uv, &req->timer);
    req->timer.data = req;
    if (uv_timer_start(&req->timer, on_timer, s->config.delay_ms, 0) != 0) {
        request_done(&req->reply);
        ex__conn_drop_request(conn);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    ex_conn_t *conn = (ex_conn_t *)stream;
    if (nread > 0)
        conn->server->reads++;
    ex__conn_on_read(conn, nread);
}

static int start_reading(ex_conn_t *conn) {
    return uv_read_start((uv_stream_t *)&conn->tcp, ex__conn_alloc, on_read);
}

/* ---- the server's own uv loop ---- */

static int setup(ex_server_t *s) {
    uv_loop_t *uv = malloc(sizeof *uv);
    if (!uv)
        return UV_ENOMEM;
    int r = uv_loop_init(uv);
    if (r) {
        free(uv);
        return r;
    }
    s->state = uv;
    s->uv = uv;
    return 0;
}

static int run(ex_server_t *s) {
    uv_run(s->uv, UV_RUN_DEFAULT);
    return 0;
}

static void teardown(ex_server_t *s) {
    uv_loop_close(s->uv);
    free(s->uv);
}

const ex_pipeline_t ex__pipeline_raw = {setup, start_reading, request, run, teardown, NULL};
