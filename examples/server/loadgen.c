/* SPDX-License-Identifier: MIT */
/*
 * loadgen.c — the load generator for the example server: many connections
 * on loopback, each a closed loop (send one request, wait for its
 * response, send the next), driven by one libuv loop on the calling thread.
 *
 *   connect all ──► warm-up (warmup_ms, not counted) ──► measure (measure_ms)
 *                                                           │
 *                                   close every connection ◄┘
 *
 * A response must carry the sequence number of the request in flight and
 * the value the server's work function computes from it (ex__work); any
 * other answer, a refused connection or a reset counts as an error.  The
 * figure is the responses received inside the measured window divided by
 * its length, timed with uv_hrtime.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

typedef struct load load_t;

typedef struct client {
    uv_tcp_t tcp; /* first */
    uv_connect_t connect;
    uv_write_t write;
    load_t *load;
    uint64_t seq;
    uint64_t value;
    size_t have;
    int open;
    unsigned char out[EX_FRAME_BYTES];
    unsigned char in[256];
} client_t;

struct load {
    uv_loop_t uv;
    uv_timer_t phase;
    client_t *clients;
    int count;
    int measuring;
    int stopping;
    uint64_t counted;
    uint64_t errors;
    uint64_t t0, t1;
    int connected;
    unsigned measure_ms;
};

static void client_close(client_t *c) {
    if (c->open) {
        c->open = 0;
        uv_close((uv_handle_t *)&c->tcp, NULL);
    }
}

static void on_sent(uv_write_t *write, int status) {
    client_t *c = write->data;
    if (status < 0 && !c->load->stopping) {
        c->load->errors++;
        client_close(c);
    }
}

static void send_next(client_t *c) {
    c->seq++;
    c->value = c->value * 6364136223846793005u + 1442695040888963407u;
    memcpy(c->out, &c->seq, 8);
    memcpy(c->out + 8, &c->value, 8);
    uv_buf_t buf = uv_buf_init((char *)c->out, EX_FRAME_BYTES);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_sent) != 0) {
        c->load->errors++;
        client_close(c);
    }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    client_t *c = (client_t *)handle;
    buf->base = (char *)c->in + c->have;
    buf->len = sizeof c->in - c->have;
}

static void on_response(client_t *c, const unsigned char *frame) {
    load_t *load = c->load;
    uint64_t seq, result;
    memcpy(&seq, frame, 8);
    memcpy(&result, frame + 8, 8);
    if (seq != c->seq || result != ex__work(c->value))
        load->errors++;
    if (load->measuring)
        load->counted++;
    if (!load->stopping)
        send_next(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    client_t *c = (client_t *)stream;
    if (nread < 0) {
        if (!c->load->stopping)
            c->load->errors++;
        client_close(c);
        return;
    }
    c->have += (size_t)nread;
    size_t at = 0;
    for (; c->have - at >= EX_FRAME_BYTES; at += EX_FRAME_BYTES)
        on_response(c, c->in + at);
    c->have -= at;
    if (c->have && at)
        memmove(c->in, c->in + at, c->have);
}

static void on_connected(uv_connect_t *connect, int status) {
    client_t *c = connect->data;
    if (status < 0) {
        if (!c->load->stopping)
            c->load->errors++;
        client_close(c);
        return;
    }
    c->load->connected++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        c->load->errors++;
        client_close(c);
        return;
    }
    send_next(c);
}

static void on_phase(uv_timer_t *timer) {
    load_t *load = timer->data;
    if (!load->measuring) {
        load->measuring = 1;
        load->counted = 0;
        load->t0 = uv_hrtime();
        uv_timer_start(&load->phase, on_phase, load->measure_ms, 0);
        return;
    }
    load->t1 = uv_hrtime();
    load->measuring = 0;
    load->stopping = 1;
    for (int i = 0; i < load->count; i++)
        client_close(&load->clients[i]);
    uv_close((uv_handle_t *)&load->phase, NULL);
}

int ex_load_run(const ex_load_config_t *config, ex_load_result_t *out) {
    memset(out, 0, sizeof *out);
    signal(SIGPIPE, SIG_IGN);
    load_t *load = calloc(1, sizeof *load);
    client_t *clients = calloc((size_t)config->connections, sizeof *clients);
    if (!load || !clients) {
        free(load);
        free(clients);
        return UV_ENOMEM;
    }
    int r = uv_loop_init(&load->uv);
    if (r) {
        free(load);
        free(clients);
        return r;
    }
    load->clients = clients;
    load->count = config->connections;
    load->measure_ms = config->measure_ms;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", config->port, &addr);
    for (int i = 0; i < load->count; i++) {
        client_t *c = &clients[i];
        c->load = load;
        c->value = (uint64_t)i * 0x9e3779b97f4a7c15u + 1;
        uv_tcp_init(&load->uv, &c->tcp);
        c->open = 1;
        c->connect.data = c;
        if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, on_connected)) {
            load->errors++;
            client_close(c);
        }
    }
    uv_timer_init(&load->uv, &load->phase);
    load->phase.data = load;
    uv_timer_start(&load->phase, on_phase, config->warmup_ms, 0);
    uv_run(&load->uv, UV_RUN_DEFAULT);
    uv_loop_close(&load->uv);

    out->responses = load->counted;
    out->seconds = (double)(load->t1 - load->t0) / 1e9;
    out->rps = out->seconds > 0 ? (double)load->counted / out->seconds : 0;
    out->errors = load->errors;
    out->connected = load->connected;
    free(clients);
    free(load);
    return 0;
}
