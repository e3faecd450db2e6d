/* SPDX-License-Identifier: MIT */
/*
 * http_service.c — a small HTTP service that runs every request inside the
 * context decoded from its headers and carries that context on the HTTP
 * calls it makes (libmicrohttpd serves, libcurl calls).
 *
 *   curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
 *        -H 'baggage: user=alice,tenant=acme' -H 'grpc-timeout: 5S' \
 *        http://127.0.0.1:PORT/hello
 *
 *   GET /hello       decodes the request's context (traceparent, tracestate,
 *                    baggage, grpc-timeout: ctx_wire_extract over the
 *                    request headers), runs the handler in it (starting a
 *                    trace if the caller sent none), and calls
 *                    GET /downstream on itself with the context injected
 *                    (a child traceparent, the same baggage, the time
 *                    left as grpc-timeout, and as curl's own timeout);
 *   GET /downstream  answers with what it received, decoded the same way.
 *
 * The deadline a caller sends (grpc-timeout) is the decoded context's
 * cancellation scope (ctxvar/cancel.h): once the caller's time is up,
 * ctx_cancel_check() says so and /hello skips its downstream call
 * ("downstream-skipped=EDEADLINE") instead of working for nobody.
 *
 * Both answers are one line of "key=value" words; /hello's is followed by
 * the downstream's.  Usage: ctxvar_http_example [--port N] (0, the default,
 * picks a free port).  Listens on 127.0.0.1 only, prints
 * "listening on http://127.0.0.1:PORT" when ready, and stops on SIGINT or
 * SIGTERM.  examples/http/test_http_example.sh drives it with curl.
 *
 * The request's context is entered with ctx_context_run on the connection's
 * thread (libmicrohttpd runs one thread per connection here), so a handler
 * deep in some library can read `user` with ctx_var_get and every outgoing
 * call made from it carries the request's context without being passed it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/wire.h>

/* ---- the variables that cross: plain heap strings ---- */

static void str_release(void *value, void *user) {
    (void)user;
    free(value);
}

static int str_encode(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", (const char *)value);
}

static int str_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    if (memchr(text, '\0', len))
        return CTX_EPARSE; /* no NULs in these strings */
    char *s = strndup(text, len);
    if (!s)
        return CTX_ENOMEM;
    *out = s;
    return 0;
}

static const ctx_value_ops_t str_ops = {.size = sizeof(ctx_value_ops_t),.release = str_release, .encode = str_encode, .decode = str_decode};

static ctx_wire_t *wire;
static ctx_var_t *user_var, *tenant_var;
static int port;

static const char *current(ctx_var_t *var) {
    void *v = NULL;
    return ctx_var_get(var, &v) == CTX_VALUE && v ? v : "-";
}

/* "trace=<id> parent=<parent-id> user=… tenant=… left_ms=…" of the current context */
static void describe(char *buf, size_t cap) {
    ctx_wire_traceparent_t tp;
    char trace[33] = "-", parent[17] = "-";
    if (ctx_wire_trace_get(wire, NULL, &tp, NULL, NULL) == 0) {
        ctx_wire_traceparent_trace_id(&tp, trace, sizeof trace);
        for (int i = 0; i < 8; i++)
            snprintf(parent + 2 * i, 3, "%02x", tp.parent_id[i]);
    }
    int64_t left = -1;
    long long left_ms = ctx_wire_deadline_remaining(wire, NULL, &left) == 0 ? (long long)(left / 1000000) : -1;
    snprintf(buf, cap, "trace=%s parent=%s user=%s tenant=%s left_ms=%lld", trace, parent, current(user_var),
             current(tenant_var), left_ms);
}

/* ---- the outgoing call, with the current context in its headers ---- */

typedef struct body {
    char data[4096];
    size_t len;
} body_t;

static size_t on_body(char *ptr, size_t size, size_t n, void *user) {
    body_t *b = user;
    size_t k = size * n;
    size_t room = sizeof b->data - 1 - b->len;
    memcpy(b->data + b->len, ptr, k < room ? k : room);
    b->len += k < room ? k : room;
    b->data[b->len] = '\0';
    return k;
}

static int call_downstream(char *out, size_t cap) {
    ctx_wire_headers_t *h = NULL;
    if (ctx_wire_headers_new(&h) != 0)
        return -1;
    ctx_wire_carrier_t carrier = ctx_wire_headers_carrier(h);
    int rc = ctx_wire_inject(wire, NULL, &carrier, 0, NULL);
    struct curl_slist *list = NULL;
    for (size_t i = 0; rc >= 0 && i < ctx_wire_headers_count(h); i++) {
        const char *name, *value;
        ctx_wire_headers_at(h, i, &name, &value);
        char line[CTX_WIRE_TRACESTATE_MAX_LEN + 64];
        snprintf(line, sizeof line, "%s: %s", name, value);
        list = curl_slist_append(list, line);
    }
    ctx_wire_headers_release(h);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/downstream", port);
    body_t body = {{0}, 0};
    CURL *curl = curl_easy_init();
    if (!curl) {
        curl_slist_free_all(list);
        return -1;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    int64_t left;
    long timeout_ms = 10000;
    if (ctx_wire_deadline_remaining(wire, NULL, &left) == 0)
        timeout_ms = left <= 0 ? 1 : (long)(left / 1000000 + 1);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    CURLcode cc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    curl_slist_free_all(list);
    if (cc != CURLE_OK) {
        snprintf(out, cap, "downstream-error=%s", curl_easy_strerror(cc));
        return -1;
    }
    snprintf(out, cap, "%s", body.data);
    return 0;
}

/* ---- the server ---- */

static enum MHD_Result on_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    ctx_wire_headers_t *h = cls;
    /* a header the list refuses (over its limits) is left out, as a
     * server drops what it cannot hold */
    ctx_wire_headers_add_n(h, key, strlen(key), value ? value : "", value ? strlen(value) : 0);
    return MHD_YES;
}

typedef struct request {
    const char *url;
    char reply[8192];
} request_t;

static void *handle(void *arg) {
    request_t *r = arg;
    char me[512];
    if (strcmp(r->url, "/downstream") == 0) {
        describe(me, sizeof me);
        snprintf(r->reply, sizeof r->reply, "downstream %s\n", me);
        return NULL;
    }
    /* /hello: a trace of our own if the caller sent none */
    if (ctx_wire_trace_get(wire, NULL, NULL, NULL, NULL) != 0)
        ctx_wire_trace_start(wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, NULL);
    describe(me, sizeof me);
    char down[4096];
    int err = ctx_cancel_check(); /* has the caller given up on us? */
    if (err != 0)
        snprintf(down, sizeof down, "downstream-skipped=%s\n", ctx_error_name(err));
    else
        call_downstream(down, sizeof down);
    snprintf(r->reply, sizeof r->reply, "hello %s\n%s", me, down);
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)cls, (void)version, (void)upload_data, (void)upload_data_size, (void)con_cls;
    if (strcmp(method, "GET") != 0 || (strcmp(url, "/hello") != 0 && strcmp(url, "/downstream") != 0)) {
        static const char nf[] = "not found\n";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(sizeof nf - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(connection, MHD_HTTP_NOT_FOUND, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    /* the request's headers → a new context, run the handler in it */
    ctx_wire_headers_t *h = NULL;
    ctx_context_t *ctx = NULL;
    static request_t failed = {NULL, "cannot decode the request's context\n"};
    request_t *r = calloc(1, sizeof *r);
    int ok = r && ctx_wire_headers_new(&h) == 0;
    if (ok) {
        MHD_get_connection_values(connection, MHD_HEADER_KIND, on_header, h);
        ctx_wire_carrier_t carrier = ctx_wire_headers_carrier(h);
        ok = ctx_wire_extract(wire, &carrier, 0, &ctx, NULL) == 0;
    }
    if (ok) {
        r->url = url;
        ok = ctx_context_run(ctx, handle, r, NULL) == 0;
    }
    const request_t *answer = ok ? r : &failed;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(answer->reply), (void *)answer->reply, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret = MHD_queue_response(connection, ok ? MHD_HTTP_OK : MHD_HTTP_INTERNAL_SERVER_ERROR, resp);
    MHD_destroy_response(resp);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
    free(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)connection, (void)con_cls, (void)toe;
    ctx_thread_release(); /* the connection thread's ctxvar state, if any */
}

int main(int argc, char **argv) {
    int want_port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            want_port = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--port N]\n", argv[0]);
            return 2;
        }
    }
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &str_ops};
    if (ctx_wire_new(&wire) != 0 || ctx_var_new("user", &o, &user_var) != 0 ||
        ctx_var_new("tenant", &o, &tenant_var) != 0 || ctx_wire_register(wire, user_var, "user") != 0 ||
        ctx_wire_register(wire, tenant_var, "tenant") != 0) {
        fprintf(stderr, "cannot set up the wire registry\n");
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;

    /* SIGINT / SIGTERM are waited for by the main thread only */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)want_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t)want_port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", want_port);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    port = info ? info->port : want_port;
    printf("listening on http://127.0.0.1:%d\n", port);
    fflush(stdout);

    int sig;
    sigwait(&stop, &sig);
    MHD_stop_daemon(d);
    curl_global_cleanup();
    ctx_cancel_timer_release(); /* the deadlines' timer thread, for leak checkers */
    ctx_var_release(user_var);
    ctx_var_release(tenant_var);
    ctx_wire_release(wire);
    ctx_thread_release();
    printf("stopped\n");
    return 0;
}
