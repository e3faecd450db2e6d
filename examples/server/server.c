/* SPDX-License-Identifier: MIT */
/*
 * server.c — the TCP plumbing both builds of the example server share:
 * listening, accepting, reading 16-byte frames, writing replies, closing
 * connections and stopping.  What happens to a request between its frame
 * and its reply is the pipeline's (server_ctx.c, server_raw.c).
 *
 *   listener ──accept──► conn ──read──► frames ──► pipeline->request
 *                          ▲                              │
 *                          └──────── ex__reply_send ◄─────┘
 *
 * Stopping (ex_server_stop from any thread, or the control descriptor
 * becoming readable): the listener, the control watcher and every
 * connection are closed; requests still in flight finish their stages and
 * their replies are dropped; ex_server_run returns when the loop has
 * nothing left.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* ---- connections ---- */

static void conn_unref(ex_conn_t *conn) {
    if (--conn->refs == 0)
        free(conn);
}

static void on_conn_closed(uv_handle_t *handle) { conn_unref((ex_conn_t *)handle); }

static void conn_close(ex_conn_t *conn) {
    if (conn->closing)
        return;
    conn->closing = 1;
    ex_server_t *s = conn->server;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        s->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    if (s->pipeline->conn_closed)
        s->pipeline->conn_closed(conn);
    uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
}

void ex__conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    ex_conn_t *conn = (ex_conn_t *)handle;
    buf->base = (char *)conn->buf + conn->have;
    buf->len = sizeof conn->buf - conn->have;
}

void ex__conn_on_read(ex_conn_t *conn, ssize_t nread) {
    if (nread < 0) {
        conn_close(conn);
        return;
    }
    conn->have += (size_t)nread;
    size_t at = 0;
    while (conn->have - at >= EX_FRAME_BYTES && !conn->closing) {
        uint64_t seq, value;
        memcpy(&seq, conn->buf + at, 8);
        memcpy(&value, conn->buf + at + 8, 8);
        at += EX_FRAME_BYTES;
        ex__conn_hold(conn);
        conn->server->pipeline->request(conn, seq, value);
    }
    conn->have -= at;
    if (conn->have && at)
        memmove(conn->buf, conn->buf + at, conn->have);
}

void ex__conn_drop_request(ex_conn_t *conn) { conn_unref(conn); }

/* ---- replies ---- */

static void on_written(uv_write_t *write, int status) {
    ex_reply_t *reply = (ex_reply_t *)write;
    ex_conn_t *conn = reply->conn;
    if (status == 0)
        conn->server->requests++;
    else
        conn_close(conn);
    reply->done(reply);
    conn_unref(conn);
}

void ex__reply_send(ex_reply_t *reply, ex_conn_t *conn, uint64_t seq, uint64_t result) {
    reply->conn = conn;
    if (conn->closing) {
        reply->done(reply);
        conn_unref(conn);
        return;
    }
    memcpy(reply->bytes, &seq, 8);
    memcpy(reply->bytes + 8, &result, 8);
    uv_buf_t buf = uv_buf_init((char *)reply->bytes, EX_FRAME_BYTES);
    if (uv_write(&reply->write, (uv_stream_t *)&conn->tcp, &buf, 1, on_written) != 0) {
        conn_close(conn);
        reply->done(reply);
        conn_unref(conn);
    }
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *listener, int status) {
    ex_server_t *s = listener->data;
    if (status < 0 || s->stopping)
        return;
    ex_conn_t *conn = calloc(1, sizeof *conn);
    if (!conn)
        return;
    conn->server = s;
    conn->refs = 1;
    uv_tcp_init(s->uv, &conn->tcp);
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        conn->closing = 1;
        uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    conn->next = s->conns;
    if (conn->next)
        conn->next->prev = conn;
    s->conns = conn;
    s->connections++;
    if (s->pipeline->start_reading(conn) != 0)
        conn_close(conn);
}

/* ---- stopping ---- */

static void begin_stop(ex_server_t *s) {
    if (s->stopping)
        return;
    s->stopping = 1;
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
    if (s->has_control)
        uv_close((uv_handle_t *)&s->control, NULL);
    while (s->conns)
        conn_close(s->conns);
}

static void on_stop(uv_async_t *async) { begin_stop(async->data); }

static void on_control(uv_poll_t *poll, int status, int events) {
    (void)status;
    (void)events;
    begin_stop(poll->data);
}

/* ---- the server ---- */

static int listen_on(ex_server_t *s) {
    int r = uv_tcp_init(s->uv, &s->listener);
    if (r)
        return r;
    s->listener.data = s;
    if (s->config.listen_fd >= 0) {
        r = uv_tcp_open(&s->listener, s->config.listen_fd);
    } else {
        struct sockaddr_in addr;
        uv_ip4_addr("127.0.0.1", s->config.port, &addr);
        r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    }
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection);
    struct sockaddr_storage name;
    int len = sizeof name;
    if (r == 0)
        r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len);
    if (r == 0)
        s->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
    return r;
}

int ex_server_new(const ex_server_config_t *config, ex_server_t **out) {
    signal(SIGPIPE, SIG_IGN);
    ex_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return UV_ENOMEM;
    s->config = *config;
    s->pipeline = config->kind == EX_SERVER_RAW ? &ex__pipeline_raw : &ex__pipeline_ctx;
    int r = s->pipeline->setup(s);
    if (r) {
        free(s);
        return r;
    }
    /* Handles made here are closed by the stop (begin_stop), so a failure
     * below stops the server before it is freed. */
    uv_async_init(s->uv, &s->stop_async, on_stop);
    s->stop_async.data = s;
    r = listen_on(s);
    if (r == 0 && config->control_fd >= 0) {
        r = uv_poll_init(s->uv, &s->control, config->control_fd);
        if (r == 0) {
            s->has_control = 1;
            s->control.data = s;
            r = uv_poll_start(&s->control, UV_READABLE | UV_DISCONNECT, on_control);
        }
    }
    if (r) {
        begin_stop(s);
        s->pipeline->run(s);
        s->pipeline->teardown(s);
        free(s);
        return r;
    }
    *out = s;
    return 0;
}

int ex_server_port(const ex_server_t *server) { return server->port; }

int ex_server_run(ex_server_t *server) { return server->pipeline->run(server); }

void ex_server_stop(ex_server_t *server) { uv_async_send(&server->stop_async); }

void ex_server_stats(const ex_server_t *s, ex_server_stats_t *out) {
    out->connections = s->connections;
    out->requests = s->requests;
    out->reads = s->reads + atomic_load(&s->reads_pool);
    out->mismatches = s->mismatches + atomic_load(&s->mismatches_pool);
}

void ex_server_free(ex_server_t *server) {
    if (!server)
        return;
    server->pipeline->teardown(server);
    free(server);
}

void ex_server_set_uv_threads(int threads) {
    char text[16];
    snprintf(text, sizeof text, "%d", threads > 0 ? threads : 4);
    setenv("UV_THREADPOOL_SIZE", text, 1);
}
