/* SPDX-License-Identifier: MIT */
/*
 * server_ctx.c — the example server's request pipeline on ctxvar: the way a
 * libuv service would carry a request's context through its stages.
 *
 *   accept      the connection gets a context of its own: `conn` = the
 *               connection, captured in a ctx_loop_uv scope when reading
 *               starts
 *   read        on_read runs in that context (CTX_LOOP_UV_CALLBACK); each
 *               frame becomes a task (ctx_loop_task_new: a copy of the
 *               connection's context)
 *   task        its step sets `request` in the task's context (invisible to
 *               every other request of the connection) and schedules the
 *               timer stage with ctx_loop_call_later (a copy of the task's
 *               context, captured now)
 *   timer       offloads the work with ctx_loop_offload (uv_queue_work for a
 *               ctx_pool_t: the worker runs in a copy of the timer
 *               callback's context, the done callback in another copy of it,
 *               back on the loop)
 *   pool        computes the reply on a worker thread
 *   done        back on the loop thread: writes the reply
 *
 * Nothing is passed between stages but the request pointer each stage needs
 * anyway for its work; the stages *check* the context: the read callback
 * and the task read `conn`, the later stages `request` (which names its
 * connection), with ctx_var_get, and count a mismatch if it is not this
 * request's own (a context mixed up between requests, connections or
 * threads would show there).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include <ctxvar.h>
#include <ctxvar/loop.h>
#include <ctxvar/pool.h>

#include "server_internal.h"

typedef struct ctx_state {
    ctx_loop_t *loop;
    ctx_pool_t *pool;
    ctx_var_t *conn_var;
    ctx_var_t *request_var;
} ctx_state_t;

typedef struct request {
    ex_reply_t reply; /* first */
    ex_conn_t *conn;
    ex_server_t *server;
    uint64_t seq;
    uint64_t value;
    uint64_t result;
} request_t;

static ctx_state_t *state_of(const ex_server_t *s) { return s->state; }

/* ---- the check every stage makes ---- */

/* 1 if the current context is the request's: `request` is `req` (once the
 * task set it), or, before, `conn` is its connection. */
static int context_is(const ctx_state_t *st, const ex_conn_t *conn, const request_t *req) {
    void *v = NULL;
    if (req)
        return ctx_var_get(st->request_var, &v) == CTX_VALUE && v == req;
    return ctx_var_get(st->conn_var, &v) == CTX_VALUE && v == conn;
}

/* Loop thread. */
static void check(ex_server_t *s, const ex_conn_t *conn, const request_t *req) {
    s->reads++;
    s->mismatches += !context_is(state_of(s), conn, req);
}

/* A worker thread. */
static void check_on_worker(ex_server_t *s, const ex_conn_t *conn, const request_t *req) {
    atomic_fetch_add_explicit(&s->reads_pool, 1, memory_order_relaxed);
    if (!context_is(state_of(s), conn, req))
        atomic_fetch_add_explicit(&s->mismatches_pool, 1, memory_order_relaxed);
}

/* ---- the stages, in the order a request goes through them ---- */

static void request_free(ex_reply_t *reply) { free(reply); }

static void drop(request_t *req) {
    ex_conn_t *conn = req->conn;
    free(req);
    ex__conn_drop_request(conn);
}

/* done: loop thread, in a copy of the timer stage's context. */
static void on_done(void *arg, int rc, void *result) {
    (void)result;
    request_t *req = arg;
    check(req->server, req->conn, req);
    if (rc != 0) {
        drop(req);
        return;
    }
    ex__reply_send(&req->reply, req->conn, req->seq, req->result);
}

/* pool: a worker thread, in a copy of the timer stage's context. */
static int work(void *arg, void **result) {
    (void)result;
    request_t *req = arg;
    check_on_worker(req->server, req->conn, req);
    req->result = ex__work(req->value);
    return 0;
}

/* timer: loop thread, in a copy of the task's context. */
static void on_timer(void *arg) {
    request_t *req = arg;
    ctx_state_t *st = state_of(req->server);
    check(req->server, req->conn, req);
    if (ctx_loop_offload(st->loop, st->pool, work, req, on_done, NULL) != 0)
        drop(req);
}

/* task: loop thread, in the task's own context (a copy of the
 * connection's). */
static int request_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)task;
    (void)result;
    request_t *req = arg;
    ctx_state_t *st = state_of(req->server);
    check(req->server, req->conn, NULL);
    if (ctx_var_set(st->request_var, req, NULL) != 0 ||
        ctx_loop_call_later(st->loop, req->server->config.delay_ms, on_timer, req, NULL,
                            NULL) != 0) {
        drop(req);
        return 0;
    }
    return 0;
}

/* read: one frame, in the connection's context. */
static void request(ex_conn_t *conn, uint64_t seq, uint64_t value) {
    ex_server_t *s = conn->server;
    request_t *req = malloc(sizeof *req);
    if (!req) {
        ex__conn_drop_request(conn);
        return;
    }
    req->reply.done = request_free;
    req->conn = conn;
    req->server = s;
    req->seq = seq;
    req->value = value;
    req->result = 0;
    if (ctx_loop_task_new(state_of(s)->loop, request_step, req, NULL, NULL) != 0)
        drop(req);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    ex_conn_t *conn = (ex_conn_t *)stream;
    if (nread > 0)
        check(conn->server, conn, NULL);
    ex__conn_on_read(conn, nread);
}

CTX_LOOP_UV_CALLBACK(on_read_in_context, on_read, &((ex_conn_t *)stream)->scope,
                     (uv_stream_t * stream, ssize_t nread, const uv_buf_t *buf),
                     (stream, nread, buf))

/* accept: the connection's context, captured for its reads. */
static int start_reading(ex_conn_t *conn) {
    ctx_state_t *st = state_of(conn->server);
    ctx_context_t *context = NULL;
    int r = ctx_context_new(&context);
    if (r == 0)
        r = ctx_context_set(context, st->conn_var, conn);
    if (r == 0)
        r = ctx_context_enter(context);
    if (r == 0) {
        r = ctx_loop_uv_scope_capture(&conn->scope);
        ctx_context_exit(context);
    }
    ctx_context_release(context);
    if (r)
        return r;
    return uv_read_start((uv_stream_t *)&conn->tcp, ex__conn_alloc, on_read_in_context);
}

static void conn_closed(ex_conn_t *conn) { ctx_loop_uv_scope_release(&conn->scope); }

/* ---- the server's loop and pool ---- */

static int setup(ex_server_t *s) {
    ctx_state_t *st = calloc(1, sizeof *st);
    if (!st)
        return CTX_ENOMEM;
    int r = ctx_var_new("conn", NULL, &st->conn_var);
    if (r == 0)
        r = ctx_var_new("request", NULL, &st->request_var);
    if (r == 0)
        r = ctx_loop_new(NULL, &st->loop);
    if (r == 0) {
        ctx_pool_options_t options = CTX_STRUCT_INIT(ctx_pool_options_t);
        options.threads = (size_t)(s->config.threads > 0 ? s->config.threads : 4);
        r = ctx_pool_new(&options, &st->pool);
    }
    if (r) {
        if (st->loop) {
            ctx_loop_close(st->loop);
            ctx_loop_release(st->loop);
        }
        ctx_var_release(st->request_var);
        ctx_var_release(st->conn_var);
        free(st);
        return r;
    }
    s->state = st;
    s->uv = ctx_loop_uv(st->loop);
    return 0;
}

static int run(ex_server_t *s) {
    int r = ctx_loop_run(state_of(s)->loop, UV_RUN_DEFAULT);
    return r < 0 ? r : 0;
}

static void teardown(ex_server_t *s) {
    ctx_state_t *st = state_of(s);
    ctx_pool_release(st->pool);
    /* Handles of the server on the loop's own uv loop are closed: the loop
     * closes with them. */
    ctx_loop_close(st->loop);
    ctx_loop_release(st->loop);
    ctx_var_release(st->request_var);
    ctx_var_release(st->conn_var);
    free(st);
    ctx_thread_release();
}

const ex_pipeline_t ex__pipeline_ctx = {setup, start_reading, request, run, teardown, conn_closed};
