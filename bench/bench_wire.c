/*
 * bench_wire.c — the wire module's figures (issue: wire benchmark keys).
 *
 *   traceparent_parse_ns   ctx_wire_traceparent_parse of a valid header
 *   baggage_decode_ns_8    ctx_wire_extract of a baggage header of 8
 *                          members into a new context of 8 registered
 *                          variables (decode hooks, allocations and the
 *                          context's sets included: what a server pays per
 *                          request)
 *   baggage_encode_ns_8    ctx_wire_inject of a context holding those 8
 *                          values (encode hooks, percent-encoding) into a
 *                          carrier that copies into a fixed buffer
 *   baggage_parse_ns_8     the codec alone: ctx_wire_baggage_parse of that header
 *   nats_roundtrip_ratio   request/reply through a local nats-server with
 *                          the context propagated both ways (ctx_nats_request
 *                          → subscription callback in the decoded context →
 *                          ctx_nats_respond) / the same request/reply with
 *                          plain libnats calls and no headers.  Goal <= 1.05.
 *   nats_roundtrip_ns, nats_roundtrip_plain_ns  the two round trips
 *
 * The NATS figures need nats-server (Debian: nats-server): the section
 * starts one on a free 127.0.0.1 port; without it they are left out with a
 * line on stderr.  The ratio interleaves the two variants in ABBA batches
 * (with, plain, plain, with) and takes the median of the per-round ratios,
 * so drift in the machine's speed hits both alike.  Both variants use the
 * same two connections (client, service) of ctx_nats_connect.
 *
 * Every figure is the MEDIAN of ctx_bench_rounds() rounds (bench.h; the
 * codec figures were the best of 5 runs, nats_roundtrip_ratio the median of
 * per-round ratios, before the harness had rounds); nats_roundtrip_ratio is
 * the ratio of the two round trips' medians, and the two round-trip keys
 * are medians too.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ctxvar.h>
#include <ctxvar/wire.h>
#if defined(CTX_HAVE_NATS)
#include "nats_server.h"
#include <ctxvar/nats.h>
#endif

#include "bench.h"

#define SINK(x) __asm__ volatile("" : : "r"(x) : "memory")

/* `result` (a ctx_bench_samples_t) gets one sample per round of `body`. */
#define TIME_LOOP(result, iters, body)                 \
    do {                                               \
        (result).n = 0;                                \
        for (int r_ = 0; r_ < ctx_bench_rounds(b); r_++) \
            CTX_BENCH_TIME(&(result), (iters), body);  \
    } while (0)

/* ---- string values ---- */

typedef struct str {
    size_t len;
    char text[];
} str_t;

static void str_release(void *v, void *user) {
    (void)user;
    free(v);
}

static int str_encode(const void *v, char *buf, size_t cap, void *user) {
    (void)user;
    const str_t *s = v;
    if (s->len < cap) {
        memcpy(buf, s->text, s->len);
        buf[s->len] = '\0';
    }
    return (int)s->len;
}

static int str_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    str_t *s = malloc(sizeof *s + len + 1);
    if (!s)
        return CTX_ENOMEM;
    s->len = len;
    memcpy(s->text, text, len + 1);
    *out = s;
    return 0;
}

static const ctx_value_ops_t str_ops = {.size = sizeof(ctx_value_ops_t),.release = str_release, .encode = str_encode, .decode = str_decode};

static const char *const keys[8] = {"userId", "tenant", "region", "session", "plan", "locale", "device", "exp"};
static const char *const values[8] = {"alice", "acme inc", "eu-west-1", "9f8e7d6c5b4a", "premium",
                                      "fr-FR", "mobile", "checkout-v2"};

/* ---- carriers without allocation ---- */

typedef struct one_header {
    const char *name, *value;
} one_header_t;

static int one_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    one_header_t *h = self;
    return fn(h->name, strlen(h->name), h->value, strlen(h->value), user);
}

typedef struct sink {
    char buf[8][CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    int n;
} sink_t;

static int sink_set(void *self, const char *name, const char *value, size_t len) {
    (void)name;
    sink_t *s = self;
    memcpy(s->buf[s->n & 7], value, len);
    s->buf[s->n & 7][len] = '\0';
    s->n++;
    return 0;
}

static void bench_codecs(ctx_bench_t *b) {
    long iters = ctx_bench_quick(b) ? 10000 : 150000; /* per round */
    ctx_bench_samples_t ns = {0};

    static const char tp_text[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ctx_wire_traceparent_t tp;
    TIME_LOOP(ns, iters, {
        SINK(ctx_wire_traceparent_parse(tp_text, sizeof tp_text - 1, &tp));
        SINK(tp.flags);
    });
    ctx_bench_put_samples(b, "traceparent_parse_ns", &ns, CTX_BENCH_AT_MOST(25),
                          "parse one traceparent header");

    ctx_wire_t *w;
    ctx_var_t *vars[8];
    if (ctx_wire_new(&w))
        abort();
    for (int i = 0; i < 8; i++) {
        ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &str_ops};
        if (ctx_var_new(keys[i], &o, &vars[i]) || ctx_wire_register(w, vars[i], keys[i]))
            abort();
    }
    ctx_context_t *src;
    if (ctx_context_new(&src))
        abort();
    for (int i = 0; i < 8; i++) {
        void *v = NULL;
        if (str_decode(values[i], strlen(values[i]), &v, NULL) || ctx_context_set(src, vars[i], v))
            abort();
    }
    static sink_t sink;
    ctx_wire_carrier_t out = {NULL, NULL, sink_set, &sink};
    long enc_iters = iters / 4;
    TIME_LOOP(ns, enc_iters, { SINK(ctx_wire_inject(w, src, &out, 0)); });
    ctx_bench_put_samples(b, "baggage_encode_ns_8", &ns, CTX_BENCH_NO_GOAL,
                          "inject a context of 8 baggage members");

    char header[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    strcpy(header, sink.buf[(sink.n - 1) & 7]);
    one_header_t h = {"baggage", header};
    ctx_wire_carrier_t in = {one_iterate, NULL, NULL, &h};
    TIME_LOOP(ns, enc_iters, {
        ctx_context_t *ctx = NULL;
        if (ctx_wire_extract(w, &in, 0, &ctx, NULL) != 0)
            abort();
        ctx_context_release(ctx);
    });
    ctx_bench_put_samples(b, "baggage_decode_ns_8", &ns, CTX_BENCH_AT_MOST(400),
                          "extract 8 baggage members into a new context");

    TIME_LOOP(ns, enc_iters, { SINK(ctx_wire_baggage_parse(header, strlen(header), NULL, NULL, NULL)); });
    ctx_bench_put_samples(b, "baggage_parse_ns_8", &ns, CTX_BENCH_AT_MOST(150),
                          "the baggage codec alone, 8 members");

    ctx_context_release(src);
    for (int i = 0; i < 8; i++)
        ctx_var_release(vars[i]);
    ctx_wire_release(w);
}

#if defined(CTX_HAVE_NATS)

/* ---- the two responders ---- */

static void ctx_responder(ctx_nats_t *bridge, natsMsg *msg, void *user) {
    (void)user;
    ctx_nats_respond(bridge, msg, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
}

static void plain_responder(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *user) {
    (void)sub, (void)user;
    natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static void bench_nats(ctx_bench_t *b) {
    char url[64];
    const char *bin = ctx_example_nats_server_path();
    pid_t server = bin ? ctx_example_nats_server_start(bin, url, sizeof url) : -1;
    if (server <= 0) {
        fprintf(stderr, "bench_wire: nats-server not found or not starting (Debian: nats-server): "
                        "nats_roundtrip_ratio skipped\n");
        return;
    }
    natsConnection *client = NULL, *service = NULL;
    ctx_wire_t *w = NULL;
    ctx_var_t *vars[3];
    ctx_nats_t *cb = NULL, *sb = NULL;
    ctx_nats_sub_t *csub = NULL;
    natsSubscription *psub = NULL;
    if (ctx_nats_connect(url, &client) || ctx_nats_connect(url, &service) || ctx_wire_new(&w))
        abort();
    for (int i = 0; i < 3; i++) {
        ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &str_ops};
        if (ctx_var_new(keys[i], &o, &vars[i]) || ctx_wire_register(w, vars[i], keys[i]))
            abort();
    }
    if (ctx_nats_new(client, w, &cb) || ctx_nats_new(service, w, &sb) ||
        ctx_nats_subscribe(sb, "bench.ctx", NULL, ctx_responder, NULL, &csub) ||
        natsConnection_Subscribe(&psub, service, "bench.plain", plain_responder, NULL) != NATS_OK)
        abort();
    natsConnection_Flush(service);

    /* the request's context: a trace, three baggage members, a deadline */
    ctx_context_t *ctx;
    if (ctx_context_new(&ctx) || ctx_context_enter(ctx))
        abort();
    for (int i = 0; i < 3; i++) {
        void *v = NULL;
        if (str_decode(values[i], strlen(values[i]), &v, NULL) || ctx_var_set(vars[i], v, NULL))
            abort();
    }
    ctx_wire_trace_start(w, CTX_WIRE_TRACE_FLAG_SAMPLED, NULL);
    ctx_wire_deadline_set(w, 3600ll * 1000000000);

    static const char body[] = "ping";
    /* ABBA batches: with, plain, plain, with — drift hits both alike */
    int batch = ctx_bench_quick(b) ? 25 : 200, rounds = ctx_bench_rounds(b);
    ctx_bench_samples_t with_ns = {0}, plain_ns = {0};
    for (int r = -1; r < rounds; r++) { /* round -1 warms up */
        double with = 0, plain = 0;
        for (int part = 0; part < 4; part++) {
            int use_ctx = part == 0 || part == 3;
            uint64_t t0 = ctx_bench_now_ns();
            for (int i = 0; i < batch; i++) {
                natsMsg *reply = NULL;
                if (use_ctx ? ctx_nats_request(cb, "bench.ctx", body, 4, 5000, &reply, NULL) != 0
                            : natsConnection_Request(&reply, client, "bench.plain", body, 4, 5000) != NATS_OK)
                    abort();
                natsMsg_Destroy(reply);
            }
            double ns = (double)(ctx_bench_now_ns() - t0) / batch;
            if (use_ctx)
                with += ns / 2;
            else
                plain += ns / 2;
        }
        if (r < 0)
            continue;
        ctx_bench_sample(&with_ns, with);
        ctx_bench_sample(&plain_ns, plain);
    }
    ctx_bench_put_ratio(b, "nats_roundtrip_ratio", &with_ns, &plain_ns, CTX_BENCH_AT_MOST(1.05),
                        "NATS request/reply with context both ways / without");
    ctx_bench_put_samples(b, "nats_roundtrip_ns", &with_ns, CTX_BENCH_NO_GOAL,
                          "NATS request/reply with context propagation");
    ctx_bench_put_samples(b, "nats_roundtrip_plain_ns", &plain_ns, CTX_BENCH_NO_GOAL,
                          "the same with plain libnats, no headers");

    ctx_context_exit(ctx);
    ctx_context_release(ctx);
    ctx_nats_unsubscribe(csub);
    natsSubscription_Unsubscribe(psub);
    natsSubscription_Destroy(psub);
    ctx_nats_release(cb);
    ctx_nats_release(sb);
    natsConnection_Destroy(client);
    natsConnection_Destroy(service);
    for (int i = 0; i < 3; i++)
        ctx_var_release(vars[i]);
    ctx_wire_release(w);
    ctx_example_nats_server_stop(server);
}
#endif

void ctx_bench_wire(ctx_bench_t *b);

void ctx_bench_wire(ctx_bench_t *b) {
    bench_codecs(b);
#if defined(CTX_HAVE_NATS)
    bench_nats(b);
#else
    fprintf(stderr, "bench_wire: built without the nats module: nats_roundtrip_ratio skipped\n");
#endif
}
