/* SPDX-License-Identifier: MIT */
/*
 * bench_wire.c — the wire module's figures (its JSON keys are a contract).
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
 *   baggage_decode_core_ns_8  the part of baggage_decode_ns_8 that is the
 *                          core's and the values' own: the 8 values made by
 *                          the same decode hook and put in a new context
 *                          with ctx_context_new_from, as ctx_wire_extract
 *                          does, the context released (measured in the
 *                          same rounds as baggage_decode_ns_8)
 *   baggage_decode_wire_ns_8  baggage_decode_ns_8 minus that: what the wire
 *                          layer itself adds (parse, key lookup, report)
 *   baggage_decode_static_ns_8  baggage_decode_ns_8 into 8 CTX_VAR_STATIC
 *                          variables (a second registry), interleaved with
 *   baggage_decode_counted_ns_8  the same into the counted variables of
 *                          baggage_decode_ns_8 (which keeps them)
 *   baggage_decode_static_vs_counted_ratio  the first / the second
 *   traceparent_extract_ns ctx_wire_extract of a carrier holding one
 *                          traceparent header into a new context, released
 *                          (carrier → context: what a server pays to join a
 *                          trace)
 *   traceparent_extract_core_ns  its core part: one value of the same
 *                          size allocated and put in a new context with
 *                          ctx_context_new_from, the context released
 *                          (same rounds; the variable is CTX_VAR_STATIC,
 *                          as the process's trace variable is)
 *   traceparent_extract_wire_ns  traceparent_extract_ns minus that
 *   otel_js_traceparent_extract_ns  OpenTelemetry JS's
 *                          W3CTraceContextPropagator.extract of the same
 *                          header (node, @opentelemetry/core), measured in
 *                          a node process driven round by round,
 *                          interleaved with traceparent_extract_ns
 *   traceparent_extract_vs_otel_js_ratio  the two: OpenTelemetry JS /
 *                          ctxvar (goal >= 10).  Needs node and the two
 *                          npm packages in $CTX_BENCH_OTEL_DIR/node_modules
 *                          (scripts/bench.sh installs them into
 *                          <build root>/otel-js); without them the two keys
 *                          are left out with a line on stderr.
 *   nats_roundtrip_ratio   request/reply through a local nats-server with
 *                          the context propagated both ways (ctx_nats_request
 *                          → subscription callback in the decoded context →
 *                          ctx_nats_respond) / the same request/reply with
 *                          plain libnats calls and no headers.  Goal <= 1.05.
 *   nats_roundtrip_ns, nats_roundtrip_plain_ns  the two round trips
 *   nats_roundtrip_headers_ns  plain libnats requests and replies carrying,
 *                          set by hand, the headers ctxvar sends here (a
 *                          traceparent with a new parent id per message,
 *                          the three baggage members, grpc-timeout)
 *   nats_roundtrip_headers_ratio  that / nats_roundtrip_plain_ns: what NATS
 *                          (libnats both ways, nats-server) charges for
 *                          the headers themselves
 *   nats_roundtrip_vs_headers_ratio  nats_roundtrip_ns /
 *                          nats_roundtrip_headers_ns: ctxvar's own share
 *
 * The NATS figures need nats-server (Debian: nats-server): the section
 * starts one on a free 127.0.0.1 port; without it they are left out with a
 * line on stderr.  The three variants run in ABCCBA batches per round
 * (with, plain, headers, headers, plain, with), so drift in the machine's
 * speed hits all alike.  All use the same two connections (client,
 * service) of ctx_nats_connect.
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

/* One header pair whose lengths are known, as a server's parsed request
 * headers are. */
typedef struct one_header {
    const char *name, *value;
    size_t name_len, value_len;
} one_header_t;

static int one_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    one_header_t *h = self;
    return fn(h->name, h->name_len, h->value, h->value_len, user);
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

/* ---- where baggage_decode_ns_8 goes: the core's part and the wire's ---- */

typedef struct decode_arg {
    ctx_wire_t *w;
    ctx_var_t **vars;
    const ctx_wire_carrier_t *in;
    long iters;
} decode_arg_t;

static double round_extract(void *arg) {
    decode_arg_t *a = arg;
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < a->iters; i++) {
        ctx_context_t *ctx = NULL;
        if (ctx_wire_extract(a->w, a->in, 0, &ctx, NULL) != 0)
            abort();
        ctx_context_release(ctx);
    }
    return (double)(ctx_bench_now_ns() - t0) / (double)a->iters;
}

/* The same values made by the same hook and put in a new context the way
 * ctx_wire_extract does (ctx_context_new_from), without the wire layer: the
 * floor the core and the values set. */
static double round_core_only(void *arg) {
    decode_arg_t *a = arg;
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < a->iters; i++) {
        ctx_context_t *ctx = NULL;
        void *v[8];
        for (int k = 0; k < 8; k++)
            if (str_decode(values[k], strlen(values[k]), &v[k], NULL))
                abort();
        if (ctx_context_new_from(a->vars, v, 8, &ctx) != 0)
            abort();
        ctx_context_release(ctx);
    }
    return (double)(ctx_bench_now_ns() - t0) / (double)a->iters;
}

static void decode_split(ctx_bench_t *b, ctx_wire_t *w, ctx_var_t **vars, const ctx_wire_carrier_t *in,
                         long iters) {
    decode_arg_t a = {w, vars, in, iters};
    ctx_bench_contender_t c[2] = {{"extract", round_extract, &a, {0}}, {"core", round_core_only, &a, {0}}};
    ctx_bench_interleave(b, c, 2);
    ctx_bench_put_samples(b, "baggage_decode_core_ns_8", &c[1].samples, CTX_BENCH_NO_GOAL,
                          "its core part: 8 values made, ctx_context_new_from, released");
    ctx_bench_put_difference(b, "baggage_decode_wire_ns_8", &c[0].samples, &c[1].samples,
                             CTX_BENCH_NO_GOAL, "its wire part: baggage_decode_ns_8 minus that");
}

/* ---- the same decode into CTX_VAR_STATIC variables ---- */

/* baggage_decode_ns_8 into a second registry whose 8 variables are static,
 * interleaved with the first (counted variables, as the contract figure). */
static void decode_static_figures(ctx_bench_t *b, ctx_wire_t *w, ctx_var_t **vars,
                                  const ctx_wire_carrier_t *in, long iters) {
    ctx_wire_t *ws;
    ctx_var_t *svars[8];
    if (ctx_wire_new(&ws))
        abort();
    for (int i = 0; i < 8; i++) {
        ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
        o.ops = &str_ops;
        o.flags = CTX_VAR_STATIC;
        if (ctx_var_new(keys[i], &o, &svars[i]) || ctx_wire_register(ws, svars[i], keys[i]))
            abort();
    }
    decode_arg_t counted = {w, vars, in, iters}, fixed = {ws, svars, in, iters};
    ctx_bench_contender_t c[2] = {{"counted", round_extract, &counted, {0}},
                                  {"static", round_extract, &fixed, {0}}};
    ctx_bench_interleave(b, c, 2);
    ctx_bench_put_samples(b, "baggage_decode_static_ns_8", &c[1].samples, CTX_BENCH_NO_GOAL,
                          "baggage_decode_ns_8 into CTX_VAR_STATIC variables");
    ctx_bench_put_samples(b, "baggage_decode_counted_ns_8", &c[0].samples, CTX_BENCH_NO_GOAL,
                          "baggage_decode_ns_8 again, in the same rounds as the static figure");
    ctx_bench_put_ratio(b, "baggage_decode_static_vs_counted_ratio", &c[1].samples, &c[0].samples,
                        CTX_BENCH_NO_GOAL, "static / counted variables, decode");
    ctx_wire_release(ws); /* drops its references first: no context is left */
    for (int i = 0; i < 8; i++)
        ctx_var_release(svars[i]);
}

/* ---- traceparent extract, against OpenTelemetry JS ---- */

static const char tp_header[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* The node side: reads a count per line, runs that many extracts of the
 * same header, answers with ns per extract. */
static const char otel_script[] =
    "const api = require('@opentelemetry/api');\n"
    "const { W3CTraceContextPropagator } = require('@opentelemetry/core');\n"
    "const p = new W3CTraceContextPropagator();\n"
    "const carrier = { traceparent: process.argv[1] };\n"
    "const getter = api.defaultTextMapGetter, root = api.ROOT_CONTEXT;\n"
    "let sink = 0;\n"
    "function run(n) {\n"
    "  const t0 = process.hrtime.bigint();\n"
    "  for (let i = 0; i < n; i++) if (p.extract(root, carrier, getter) !== root) sink++;\n"
    "  return Number(process.hrtime.bigint() - t0) / n;\n"
    "}\n"
    "if (!api.trace.getSpanContext(p.extract(root, carrier, getter))) process.exit(3);\n"
    "run(200000);\n"
    "require('readline').createInterface({ input: process.stdin }).on('line', (l) => {\n"
    "  process.stdout.write(run(parseInt(l, 10)).toFixed(3) + ' ' + (sink & 1) + '\\n');\n"
    "});\n";

typedef struct otel {
    pid_t pid;
    FILE *to, *from;
    long iters;
} otel_t;

/* Starts the node side; 0, or -1 (with a line on stderr) when node or the
 * packages are missing. */
static int otel_start(otel_t *o, long iters) {
    char dir[1024], modules[1100];
    const char *env = getenv("CTX_BENCH_OTEL_DIR");
    if (env && *env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else { /* <build root>/otel-js, next to this binary's build directory */
        char exe[900];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            return -1;
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        snprintf(dir, sizeof dir, "%s/../otel-js", exe);
    }
    snprintf(modules, sizeof modules, "%s/node_modules", dir);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/@opentelemetry/core/package.json", modules);
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "bench_wire: @opentelemetry/core not found in %s (scripts/bench.sh installs it "
                        "with npm): traceparent_extract_vs_otel_js_ratio skipped\n", modules);
        return -1;
    }
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    setenv("NODE_PATH", modules, 1);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char *argv[] = {(char *)"node", (char *)"-e", (char *)otel_script, (char *)tp_header, NULL};
    extern char **environ;
    int rc = posix_spawnp(&o->pid, "node", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        fprintf(stderr, "bench_wire: node not found: traceparent_extract_vs_otel_js_ratio skipped\n");
        return -1;
    }
    o->to = fdopen(in[1], "w");
    o->from = fdopen(out[0], "r");
    o->iters = iters;
    return o->to && o->from ? 0 : -1;
}

static double round_otel(void *arg) {
    otel_t *o = arg;
    char line[64];
    fprintf(o->to, "%ld\n", o->iters);
    fflush(o->to);
    if (!fgets(line, sizeof line, o->from))
        return -1;
    return strtod(line, NULL);
}

static void otel_stop(otel_t *o) {
    if (o->to)
        fclose(o->to); /* node ends at the end of its input */
    if (o->from)
        fclose(o->from);
    if (o->pid > 0)
        waitpid(o->pid, NULL, 0);
}

typedef struct tp_arg {
    ctx_wire_t *w;
    const ctx_wire_carrier_t *in;
    long iters;
    ctx_var_t *plain; /* for the core part: a variable whose values free() */
} tp_arg_t;

/* What the core and the allocator cost of it: the same context work
 * with a value of the trace's size, no header parsed. */
static double round_tp_core(void *arg) {
    tp_arg_t *a = arg;
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < a->iters; i++) {
        ctx_context_t *ctx = NULL;
        void *v = malloc(64);
        if (!v || ctx_context_new_from(&a->plain, &v, 1, &ctx) != 0)
            abort();
        ctx_context_release(ctx);
    }
    return (double)(ctx_bench_now_ns() - t0) / (double)a->iters;
}

static double round_tp_extract(void *arg) {
    tp_arg_t *a = arg;
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < a->iters; i++) {
        ctx_context_t *ctx = NULL;
        if (ctx_wire_extract(a->w, a->in, 0, &ctx, NULL) != 0)
            abort();
        ctx_context_release(ctx);
    }
    return (double)(ctx_bench_now_ns() - t0) / (double)a->iters;
}

static void bench_traceparent_extract(ctx_bench_t *b, ctx_wire_t *w, long iters) {
    one_header_t h = {"traceparent", tp_header, 11, sizeof tp_header - 1};
    ctx_wire_carrier_t in = {sizeof in, one_iterate, NULL, NULL, &h};
    ctx_context_t *check = NULL;
    if (ctx_wire_extract(w, &in, 0, &check, NULL) != 0 || ctx_wire_trace_get(w, check, NULL, NULL, NULL) != 0)
        abort();
    ctx_context_release(check);
    static const ctx_value_ops_t free_ops = {.size = sizeof(ctx_value_ops_t), .release = str_release};
    /* Static, as the trace variable is (ctx_wire_trace_var). */
    ctx_var_options_t po = {.size = sizeof po, .ops = &free_ops, .flags = CTX_VAR_STATIC};
    tp_arg_t a = {w, &in, iters, NULL};
    if (ctx_var_new("bench.plain", &po, &a.plain) != 0)
        abort();
    otel_t o = {0, NULL, NULL, 0};
    ctx_bench_contender_t c[3] = {{"ctxvar", round_tp_extract, &a, {0}},
                                  {"core", round_tp_core, &a, {0}},
                                  {"otel-js", round_otel, &o, {0}}};
    int with_otel = otel_start(&o, iters) == 0;
    ctx_bench_interleave(b, c, with_otel ? 3 : 2);
    ctx_bench_put_samples(b, "traceparent_extract_ns", &c[0].samples, CTX_BENCH_NO_GOAL,
                          "extract one traceparent header into a new context");
    ctx_bench_put_samples(b, "traceparent_extract_core_ns", &c[1].samples, CTX_BENCH_NO_GOAL,
                          "its core part: one value made, ctx_context_new_from, released");
    ctx_bench_put_difference(b, "traceparent_extract_wire_ns", &c[0].samples, &c[1].samples,
                             CTX_BENCH_NO_GOAL, "its wire part: traceparent_extract_ns minus that");
    if (with_otel && ctx_bench_median(&c[2].samples) > 0) {
        ctx_bench_put_samples(b, "otel_js_traceparent_extract_ns", &c[2].samples, CTX_BENCH_NO_GOAL,
                              "OpenTelemetry JS W3CTraceContextPropagator.extract, same header");
        ctx_bench_put_ratio(b, "traceparent_extract_vs_otel_js_ratio", &c[2].samples, &c[0].samples,
                            CTX_BENCH_AT_LEAST(10), "OpenTelemetry JS extract / ctxvar extract");
    } else if (with_otel) {
        fprintf(stderr, "bench_wire: the node side failed: traceparent_extract_vs_otel_js_ratio skipped\n");
    }
    otel_stop(&o);
    ctx_var_release(a.plain);
}

static void bench_codecs(ctx_bench_t *b) {
    long iters = ctx_bench_quick(b) ? 10000 : 150000; /* per round */
    ctx_bench_samples_t ns = {0};

    ctx_wire_traceparent_t tp;
    TIME_LOOP(ns, iters, {
        SINK(ctx_wire_traceparent_parse(tp_header, sizeof tp_header - 1, &tp));
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
    ctx_wire_carrier_t out = {sizeof(ctx_wire_carrier_t), NULL, NULL, sink_set, &sink};
    long enc_iters = iters / 4;
    TIME_LOOP(ns, enc_iters, { SINK(ctx_wire_inject(w, src, &out, 0, NULL)); });
    ctx_bench_put_samples(b, "baggage_encode_ns_8", &ns, CTX_BENCH_NO_GOAL,
                          "inject a context of 8 baggage members");

    char header[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    strcpy(header, sink.buf[(sink.n - 1) & 7]);
    one_header_t h = {"baggage", header, 7, strlen(header)};
    ctx_wire_carrier_t in = {sizeof(ctx_wire_carrier_t), one_iterate, NULL, NULL, &h};
    TIME_LOOP(ns, enc_iters, {
        ctx_context_t *ctx = NULL;
        if (ctx_wire_extract(w, &in, 0, &ctx, NULL) != 0)
            abort();
        ctx_context_release(ctx);
    });
    ctx_bench_put_samples(b, "baggage_decode_ns_8", &ns, CTX_BENCH_AT_MOST(400),
                          "extract 8 baggage members into a new context");
    decode_split(b, w, vars, &in, enc_iters);
    decode_static_figures(b, w, vars, &in, enc_iters);

    TIME_LOOP(ns, enc_iters, { SINK(ctx_wire_baggage_parse(header, strlen(header), NULL, NULL, NULL)); });
    ctx_bench_put_samples(b, "baggage_parse_ns_8", &ns, CTX_BENCH_AT_MOST(150),
                          "the baggage codec alone, 8 members");

    bench_traceparent_extract(b, w, enc_iters);

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

/* The headers a ctxvar request carries here (a traceparent with a new
 * parent id per message, the three baggage members, the time left), set by
 * hand: what NATS itself charges for carrying them. */
static void set_headers_by_hand(natsMsg *m) {
    static unsigned long long span = 1;
    char tp[64];
    snprintf(tp, sizeof tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-%016llx-03", span++);
    if (natsMsgHeader_Set(m, "traceparent", tp) != NATS_OK ||
        natsMsgHeader_Set(m, "baggage", "userId=alice,tenant=acme%20inc,region=eu-west-1") != NATS_OK ||
        natsMsgHeader_Set(m, "grpc-timeout", "3599999m") != NATS_OK)
        abort();
}

static void headers_responder(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *user) {
    (void)sub, (void)user;
    natsMsg *reply = NULL;
    if (natsMsg_Create(&reply, natsMsg_GetReply(msg), NULL, natsMsg_GetData(msg),
                       natsMsg_GetDataLength(msg)) != NATS_OK)
        abort();
    set_headers_by_hand(reply);
    natsConnection_PublishMsg(nc, reply);
    natsMsg_Destroy(reply);
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
    natsSubscription *psub = NULL, *hsub = NULL;
    if (ctx_nats_connect(url, &client) || ctx_nats_connect(url, &service) || ctx_wire_new(&w))
        abort();
    for (int i = 0; i < 3; i++) {
        ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &str_ops};
        if (ctx_var_new(keys[i], &o, &vars[i]) || ctx_wire_register(w, vars[i], keys[i]))
            abort();
    }
    if (ctx_nats_new(client, w, &cb) || ctx_nats_new(service, w, &sb) ||
        ctx_nats_subscribe(sb, "bench.ctx", NULL, ctx_responder, NULL, &csub) ||
        natsConnection_Subscribe(&psub, service, "bench.plain", plain_responder, NULL) != NATS_OK ||
        natsConnection_Subscribe(&hsub, service, "bench.headers", headers_responder, NULL) != NATS_OK)
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
    ctx_wire_trace_start(w, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, NULL);
    ctx_wire_deadline_set(w, NULL, 3600ll * 1000000000);

    static const char body[] = "ping";
    /* ABCCBA batches: with, plain, headers, headers, plain, with — drift
     * hits all three alike */
    enum { WITH, PLAIN, HEADERS };
    static const int order[6] = {WITH, PLAIN, HEADERS, HEADERS, PLAIN, WITH};
    int batch = ctx_bench_quick(b) ? 25 : 200, rounds = ctx_bench_rounds(b);
    ctx_bench_samples_t with_ns = {0}, plain_ns = {0}, headers_ns = {0};
    for (int r = -1; r < rounds; r++) { /* round -1 warms up */
        double ns[3] = {0, 0, 0};
        for (int part = 0; part < 6; part++) {
            uint64_t t0 = ctx_bench_now_ns();
            for (int i = 0; i < batch; i++) {
                natsMsg *reply = NULL, *m = NULL;
                int rc;
                switch (order[part]) {
                case WITH:
                    rc = ctx_nats_request(cb, "bench.ctx", body, 4, 5000, &reply, NULL);
                    break;
                case PLAIN:
                    rc = natsConnection_Request(&reply, client, "bench.plain", body, 4, 5000);
                    break;
                default:
                    rc = natsMsg_Create(&m, "bench.headers", NULL, body, 4);
                    if (rc == NATS_OK) {
                        set_headers_by_hand(m);
                        rc = natsConnection_RequestMsg(&reply, client, m, 5000);
                    }
                    natsMsg_Destroy(m);
                    break;
                }
                if (rc != 0)
                    abort();
                natsMsg_Destroy(reply);
            }
            ns[order[part]] += (double)(ctx_bench_now_ns() - t0) / batch / 2;
        }
        if (r < 0)
            continue;
        ctx_bench_sample(&with_ns, ns[WITH]);
        ctx_bench_sample(&plain_ns, ns[PLAIN]);
        ctx_bench_sample(&headers_ns, ns[HEADERS]);
    }
    ctx_bench_put_ratio(b, "nats_roundtrip_ratio", &with_ns, &plain_ns, CTX_BENCH_AT_MOST(1.05),
                        "NATS request/reply with context both ways / without");
    ctx_bench_put_samples(b, "nats_roundtrip_ns", &with_ns, CTX_BENCH_NO_GOAL,
                          "NATS request/reply with context propagation");
    ctx_bench_put_samples(b, "nats_roundtrip_plain_ns", &plain_ns, CTX_BENCH_NO_GOAL,
                          "the same with plain libnats, no headers");
    ctx_bench_put_samples(b, "nats_roundtrip_headers_ns", &headers_ns, CTX_BENCH_NO_GOAL,
                          "plain libnats with the same headers set by hand, both ways");
    ctx_bench_put_ratio(b, "nats_roundtrip_headers_ratio", &headers_ns, &plain_ns, CTX_BENCH_NO_GOAL,
                        "what NATS charges for the headers: by hand / none");
    ctx_bench_put_ratio(b, "nats_roundtrip_vs_headers_ratio", &with_ns, &headers_ns, CTX_BENCH_NO_GOAL,
                        "ctxvar's own share: with context / headers by hand");

    ctx_context_exit(ctx);
    ctx_context_release(ctx);
    ctx_nats_unsubscribe(csub);
    natsSubscription_Unsubscribe(psub);
    natsSubscription_Destroy(psub);
    natsSubscription_Unsubscribe(hsub);
    natsSubscription_Destroy(hsub);
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
