/* SPDX-License-Identifier: MIT */
/*
 * demo_wire.c — context across processes: the W3C codecs on the
 * specifications' own examples, a request's context turned into headers
 * and back (its deadline arriving as a cancellation scope), and one hop
 * over NATS with the request's context printed on the far side, then a
 * request with 100 ms to live to a slow service: both ends stop at the
 * deadline (a nats-server is started by the demo when the binary is
 * installed; the hop is skipped, with a line saying so, when it is not).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
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
#include <ctxvar/cancel.h>
#include <ctxvar/wire.h>
#if defined(CTX_HAVE_NATS)
#include <ctxvar/nats.h>
#endif

#include "demo.h"
#if defined(CTX_HAVE_NATS)
#include "nats_server.h"
#endif

static int checks_failed;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        printf("  %s ", (cond) ? "ok  " : "FAIL");                            \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
        if (!(cond))                                                           \
            checks_failed++;                                                   \
    } while (0)

/* ---- string values that cross the wire ---- */

static void str_release(void *v, void *user) {
    (void)user;
    free(v);
}
static int str_format(const void *v, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", (const char *)v);
}
static int str_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    char *s = strndup(text, len);
    if (!s)
        return CTX_ENOMEM;
    *out = s;
    return 0;
}
static const ctx_value_ops_t wire_str = {
    .size = sizeof(ctx_value_ops_t),
    .release = str_release, .format = str_format, .encode = str_format, .decode = str_decode};
static const ctx_value_ops_t local_str = {.size = sizeof(ctx_value_ops_t),.release = str_release, .format = str_format};

static ctx_wire_t *wire;
static ctx_var_t *request_id, *user, *served_by, *secret;

static void set(ctx_var_t *var, const char *text) {
    char *s = strdup(text);
    if (!s || ctx_var_set(var, s, NULL) != 0)
        abort();
}

static const char *get(ctx_context_t *ctx, ctx_var_t *var) {
    void *v = NULL;
    int rc = ctx ? ctx_context_get(ctx, var, &v) : ctx_var_get(var, &v);
    return rc == 0 && v ? v : "-";
}

static int print_header(const char *name, size_t nl, const char *value, size_t vl, void *user_arg) {
    (void)user_arg;
    printf("      %.*s: %.*s\n", (int)nl, name, (int)vl, value);
    return 0;
}

/* ---- 1. the codecs ---- */

static int print_member(const ctx_wire_baggage_member_t *m, void *arg) {
    (void)arg;
    printf("      %.*s = \"%s\"", (int)m->key_len, m->key, m->value);
    if (m->properties)
        printf("  (properties: %.*s)", (int)m->properties_len, m->properties);
    printf("\n");
    return 0;
}

static void codecs(void) {
    printf("\n  The W3C formats, on the specifications' examples:\n");
    static const char tp_text[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ctx_wire_traceparent_t tp, child;
    int rc = ctx_wire_traceparent_parse(tp_text, sizeof tp_text - 1, &tp);
    char buf[CTX_WIRE_TRACEPARENT_LEN + 1];
    ctx_wire_traceparent_child(&tp, &child);
    ctx_wire_traceparent_format(&child, buf, sizeof buf);
    printf("    traceparent %s\n    child for an outgoing call: %s\n", tp_text, buf);
    CHECK(rc == 0 && memcmp(child.trace_id, tp.trace_id, 16) == 0 && memcmp(child.parent_id, tp.parent_id, 8) != 0,
          "the child keeps the trace-id and gets a new parent-id");
    static const char *bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    CHECK(ctx_wire_traceparent_parse(bad, strlen(bad), &tp) == CTX_EPARSE, "uppercase hex is refused, as the spec says");
    static const char bag[] = "userId=Am%C3%A9lie,serverNode=DF%2028;region=eu, isProduction=false";
    printf("    baggage %s\n", bag);
    ctx_wire_baggage_stats_t st = CTX_STRUCT_INIT(ctx_wire_baggage_stats_t);
    int n = ctx_wire_baggage_parse(bag, sizeof bag - 1, print_member, NULL, &st);
    CHECK(n == 3 && st.malformed == 0, "three members, percent-decoded");
    int64_t ns = 0;
    ctx_wire_timeout_parse("1500m", 5, &ns);
    CHECK(ns == 1500000000, "grpc-timeout 1500m is %.1f s", (double)ns / 1e9);
}

/* ---- 2. in process: headers out and back ---- */

static void *headers_round_trip(void *arg) {
    (void)arg;
    set(request_id, "req-42");
    set(user, "amélie");
    set(secret, "never leaves the process");
    ctx_wire_trace_start(wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, NULL);
    ctx_wire_deadline_set(wire, NULL, 2000000000);
    ctx_wire_headers_t *h = NULL;
    ctx_wire_headers_new(&h);
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_wire_inject_report_t sent = CTX_STRUCT_INIT(ctx_wire_inject_report_t);
    int rc = ctx_wire_inject(wire, NULL, &c, 0, &sent);
    printf("    the request's headers:\n");
    c.iterate(c.self, print_header, NULL);
    char span[17] = "-";
    ctx_wire_traceparent_span_id(&sent.parent, span, sizeof span);
    printf("    the span id this call sent (for the log line): %s\n", span);
    ctx_context_t *far = NULL;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    rc |= ctx_wire_extract(wire, &c, 0, &far, &rep);
    char line[1024];
    ctx_context_format(far, line, sizeof line, NULL);
    printf("    decoded on the other side: %s\n", line);
    CHECK(rc == 0 && strcmp(get(far, user), "amélie") == 0 && strcmp(get(far, request_id), "req-42") == 0,
          "request and user arrive");
    CHECK(strcmp(get(far, secret), "-") == 0, "an unregistered variable stays home");
    ctx_cancel_scope_t *scope = NULL;
    int64_t left = -1;
    int has_scope = ctx_cancel_scope_get(far, &scope) == 0;
    if (has_scope)
        ctx_cancel_scope_remaining(scope, &left);
    CHECK(has_scope && left > 0 && left <= 2000000000 && ctx_cancel_scope_error(scope) == 0,
          "the deadline arrives as a cancellation scope with %.1f ms left: work run in that "
          "context stops when the caller's time is up", (double)left / 1e6);
    ctx_cancel_scope_release(scope);
    ctx_context_release(far);
    ctx_wire_headers_release(h);
    return NULL;
}

/* ---- 3. one hop over NATS ---- */

#if defined(CTX_HAVE_NATS)
static char far_user[64], far_trace[33];

static void far_side(ctx_nats_t *bridge, natsMsg *msg, void *arg) {
    (void)arg;
    char line[1024];
    ctx_context_format_current(line, sizeof line, NULL);
    printf("    far side (a libnats thread, another connection): %s\n", line);
    snprintf(far_user, sizeof far_user, "%s", get(NULL, user));
    ctx_wire_traceparent_t tp;
    if (ctx_wire_trace_get(wire, NULL, &tp, NULL, NULL) == 0)
        ctx_wire_traceparent_trace_id(&tp, far_trace, sizeof far_trace);
    set(served_by, "orders-service");
    ctx_nats_respond(bridge, msg, "accepted", 8);
}

/* A slow service: works until its caller's time is up. */
static int64_t slow_deadline, slow_woke;
static int slow_stopped = 1;

static void slow_side(ctx_nats_t *bridge, natsMsg *msg, void *arg) {
    (void)arg;
    ctx_wire_deadline_get(wire, NULL, &slow_deadline);
    slow_stopped = ctx_cancel_sleep(-1); /* the work: until the scope is cancelled */
    slow_woke = ctx_wire_now_ns();
    printf("    far side: stopped at its deadline (%s), %.3f ms after it\n", ctx_strerror(slow_stopped),
           (double)(slow_woke - slow_deadline) / 1e6);
    ctx_nats_respond(bridge, msg, "too late", 8); /* dropped: nobody waits */
}

typedef struct hop {
    ctx_nats_t *client;
    int rc;
    char back[1024];
    char trace[33];
} hop_t;

static void *request_over_nats(void *arg) {
    hop_t *hop = arg;
    set(request_id, "req-43");
    set(user, "amélie");
    ctx_wire_traceparent_t tp;
    ctx_wire_trace_start(wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, &tp);
    ctx_wire_traceparent_trace_id(&tp, hop->trace, sizeof hop->trace);
    ctx_wire_deadline_set(wire, NULL, 5000000000ll);
    natsMsg *reply = NULL;
    ctx_context_t *back = NULL;
    hop->rc = ctx_nats_request(hop->client, "demo.orders", "order #1", 8, 5000, &reply, &back);
    if (hop->rc == 0) {
        ctx_context_format(back, hop->back, sizeof hop->back, NULL);
        natsMsg_Destroy(reply);
        ctx_context_release(back);
    }
    return NULL;
}

/* A request with 100 ms to live, to the slow service. */
static void *request_in_time(void *arg) {
    hop_t *hop = arg;
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 100000000;
    ctx_token_t *tok;
    if (ctx_cancel_enter_child(&o, NULL, &tok) != 0)
        return NULL;
    natsMsg *reply = NULL;
    int64_t start = ctx_wire_now_ns();
    hop->rc = ctx_nats_request(hop->client, "demo.slow", "report", 6, 10000, &reply, NULL);
    printf("    client: %s after %.1f ms (its own timeout: 10 s)\n", ctx_strerror(hop->rc),
           (double)(ctx_wire_now_ns() - start) / 1e6);
    if (hop->rc == 0)
        natsMsg_Destroy(reply);
    ctx_cancel_exit(tok);
    return NULL;
}

static void nats_hop(void) {
    printf("\n  One hop over NATS:\n");
    const char *bin = ctx_example_nats_server_path();
    if (!bin) {
        printf("    skipped: nats-server is not installed (Debian: apt-get install nats-server)\n");
        return;
    }
    char url[64];
    pid_t server = ctx_example_nats_server_start(bin, url, sizeof url);
    if (server <= 0) {
        printf("    skipped: %s did not start on 127.0.0.1\n", bin);
        return;
    }
    printf("    started %s on %s\n", bin, url);
    natsConnection *client_nc = NULL, *service_nc = NULL;
    ctx_nats_t *client = NULL, *service = NULL;
    ctx_nats_sub_t *sub = NULL, *slow = NULL;
    int ok = ctx_nats_connect(url, &client_nc) == 0 && ctx_nats_connect(url, &service_nc) == 0 &&
             ctx_nats_new(client_nc, wire, &client) == 0 && ctx_nats_new(service_nc, wire, &service) == 0 &&
             ctx_nats_subscribe(service, "demo.orders", NULL, far_side, NULL, &sub) == 0 &&
             ctx_nats_subscribe(service, "demo.slow", NULL, slow_side, NULL, &slow) == 0 &&
             natsConnection_Flush(service_nc) == NATS_OK;
    CHECK(ok, "two connections and a subscription");
    if (ok) {
        hop_t hop = {client, -1, "", ""};
        ctx_context_t *ctx = NULL;
        ctx_context_new(&ctx);
        ctx_context_run(ctx, request_over_nats, &hop, NULL);
        ctx_context_release(ctx);
        printf("    the reply's context, back home: %s\n", hop.back);
        CHECK(hop.rc == 0, "the request was answered");
        CHECK(strcmp(far_user, "amélie") == 0 && strcmp(far_trace, hop.trace) == 0,
              "the far side ran in the request's context (user, trace %s)", hop.trace);
        CHECK(strstr(hop.back, "served_by=orders-service") != NULL, "the reply carried the far side's context back");
        printf("\n    A request with 100 ms to live, to a slow service:\n");
        hop_t late = {client, -1, "", ""};
        ctx_context_new(&ctx);
        ctx_context_run(ctx, request_in_time, &late, NULL);
        ctx_context_release(ctx);
        CHECK(late.rc == CTX_EDEADLINE, "the request ended at its deadline (CTX_EDEADLINE), not at its timeout");
        if (slow)
            ctx_nats_unsubscribe(slow); /* waits for the far side to finish */
        slow = NULL;
        CHECK(slow_stopped == CTX_EDEADLINE && slow_woke >= slow_deadline,
              "the far side, in a scope with the caller's time left, stopped at that deadline too");
    }
    if (slow)
        ctx_nats_unsubscribe(slow);
    if (sub)
        ctx_nats_unsubscribe(sub);
    ctx_nats_release(client);
    ctx_nats_release(service);
    if (client_nc)
        natsConnection_Destroy(client_nc);
    if (service_nc)
        natsConnection_Destroy(service_nc);
    ctx_example_nats_server_stop(server);
    nats_CloseAndWait(2000);
}
#endif

int ctx_demo_wire(void) {
    printf("\n== wire: context across processes ==\n");
    checks_failed = 0;
    ctx_var_options_t w = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &wire_str};
    ctx_var_options_t l = {.size = sizeof(ctx_var_options_t), .ops = &local_str};
    if (ctx_wire_new(&wire) || ctx_var_new("request_id", &w, &request_id) || ctx_var_new("user", &w, &user) ||
        ctx_var_new("served_by", &w, &served_by) || ctx_var_new("secret", &l, &secret) ||
        ctx_wire_register(wire, request_id, "request_id") || ctx_wire_register(wire, user, "user") ||
        ctx_wire_register(wire, served_by, "served_by")) {
        printf("  FAIL cannot set up the registry\n");
        return 1;
    }
    codecs();
    printf("\n  A request's context as headers, and back:\n");
    ctx_context_t *ctx = NULL;
    ctx_context_new(&ctx);
    ctx_context_run(ctx, headers_round_trip, NULL, NULL);
    ctx_context_release(ctx);
#if defined(CTX_HAVE_NATS)
    nats_hop();
#else
    printf("\n  One hop over NATS:\n    skipped: built without the nats module (Debian: libnats-dev)\n");
#endif
    ctx_var_release(request_id);
    ctx_var_release(user);
    ctx_var_release(served_by);
    ctx_var_release(secret);
    ctx_wire_release(wire);
    ctx_cancel_timer_release(); /* the deadlines' timer thread: idle now */
    return checks_failed;
}
