/* SPDX-License-Identifier: MIT */
/*
 * w3c_service.c — a test service for the W3C Trace Context test suite
 * (test/ of the w3c/trace-context repository), written with the wire API
 * only: libmicrohttpd receives, libcurl calls out.
 *
 * The suite's protocol (test/README.md there): the harness POSTs a JSON
 * array to the service,
 *
 *     [ {"url": "http://127.0.0.1:7777/0", "arguments": [ ... ]}, ... ]
 *
 * and for each element the service POSTs `arguments` (as JSON) to `url`,
 * carrying the trace context it received.  What the suite checks is the
 * traceparent / tracestate of those calls.  This service:
 *
 *   1. ctx_wire_extract's the request headers into a new context (never
 *      entered: the explicit-context calls read and complete it);
 *   2. starts a trace in it (ctx_wire_trace_start with that context) when
 *      the request carried no valid traceparent — the suite's "restart";
 *   3. for each element, ctx_wire_inject's the context into the outgoing
 *      headers (a child traceparent: a new parent-id per call) and POSTs;
 *      the inject report's span id goes to the log line of the call.
 *
 * Usage: ctxvar_w3c_service [--port N]   (0, the default, picks a free
 * port; 127.0.0.1 only).  Prints "listening on http://127.0.0.1:PORT",
 * then one line per outgoing call ("call URL trace=… span=…"), and stops
 * on SIGINT or SIGTERM.  To run the suite against it (Python with
 * aiohttp):  SPEC_LEVEL=2 python test.py http://127.0.0.1:PORT/test
 * examples/http/test_w3c_service.py checks it without the suite.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include <ctxvar.h>
#include <ctxvar/wire.h>

#define MAX_BODY (1 << 20)
#define MAX_CALLS 64

static ctx_wire_t *wire;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- a little JSON: the harness's array of {url, arguments} ---- */

typedef struct call {
    char url[1024];
    const char *args; /* the raw JSON text of "arguments" */
    size_t args_len;
} call_t;

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A JSON string at p into out (ASCII escapes decoded, others as '?');
 * returns the position after it, or NULL. */
static const char *parse_string(const char *p, const char *end, char *out, size_t cap) {
    if (p >= end || *p != '"')
        return NULL;
    size_t n = 0;
    for (p++; p < end && *p != '"'; p++) {
        char c = *p;
        if (c == '\\') {
            if (++p >= end)
                return NULL;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u':
                if (end - p < 5)
                    return NULL;
                c = '?';
                p += 4;
                break;
            default: c = *p; break; /* " \ / */
            }
        }
        if (out && n + 1 < cap)
            out[n++] = c;
    }
    if (p >= end)
        return NULL;
    if (out && cap)
        out[n] = '\0';
    return p + 1;
}

/* Skips any JSON value; returns the position after it, or NULL. */
static const char *skip_value(const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end)
        return NULL;
    if (*p == '"')
        return parse_string(p, end, NULL, 0);
    if (*p == '[' || *p == '{') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = parse_string(p, end, NULL, 0);
                if (!p)
                    return NULL;
                continue;
            }
            if (*p == '[' || *p == '{')
                depth++;
            else if ((*p == ']' || *p == '}') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != ']' && *p != '}') /* number, true, false, null */
        p++;
    return p;
}

/* One {"url": ..., "arguments": ...} object. */
static const char *parse_call(const char *p, const char *end, call_t *c) {
    c->url[0] = '\0';
    c->args = "[]";
    c->args_len = 2;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = skip_ws(p + 1, end);
    while (p < end && *p != '}') {
        char key[32];
        p = parse_string(p, end, key, sizeof key);
        if (!p || (p = skip_ws(p, end)) >= end || *p != ':')
            return NULL;
        const char *v = skip_ws(p + 1, end);
        if (strcmp(key, "url") == 0) {
            p = parse_string(v, end, c->url, sizeof c->url);
        } else {
            p = skip_value(v, end);
            if (p && strcmp(key, "arguments") == 0) {
                c->args = v;
                c->args_len = (size_t)(p - v);
            }
        }
        if (!p)
            return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return p < end ? p + 1 : NULL;
}

/* The harness's array: up to MAX_CALLS calls; their count, or -1. */
static int parse_calls(const char *p, size_t len, call_t *calls) {
    const char *end = p + len;
    p = skip_ws(p, end);
    if (p >= end || *p != '[')
        return -1;
    int n = 0;
    p = skip_ws(p + 1, end);
    while (p < end && *p != ']') {
        if (n == MAX_CALLS || !(p = parse_call(p, end, &calls[n])))
            return -1;
        n++;
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return p < end ? n : -1;
}

/* ---- the outgoing calls ---- */

static size_t discard(char *ptr, size_t size, size_t n, void *user) {
    (void)ptr, (void)user;
    return size * n;
}

/* POSTs `c->args` to `c->url` with `ctx` in the headers. */
static void call_out(ctx_context_t *ctx, const call_t *c) {
    ctx_wire_headers_t *h = NULL;
    if (ctx_wire_headers_new(&h) != 0)
        return;
    ctx_wire_carrier_t carrier = ctx_wire_headers_carrier(h);
    ctx_wire_inject_report_t sent = CTX_STRUCT_INIT(ctx_wire_inject_report_t);
    struct curl_slist *list = curl_slist_append(NULL, "Content-Type: application/json");
    if (ctx_wire_inject(wire, ctx, &carrier, 0, &sent) >= 0) {
        for (size_t i = 0; i < ctx_wire_headers_count(h); i++) {
            const char *name, *value;
            ctx_wire_headers_at(h, i, &name, &value);
            char line[CTX_WIRE_TRACESTATE_MAX_LEN + 64];
            snprintf(line, sizeof line, "%s: %s", name, value);
            list = curl_slist_append(list, line);
        }
    }
    ctx_wire_headers_release(h);
    char trace[33] = "-", span[17] = "-";
    if (sent.traceparent) {
        ctx_wire_traceparent_trace_id(&sent.parent, trace, sizeof trace);
        ctx_wire_traceparent_span_id(&sent.parent, span, sizeof span);
    }
    CURL *curl = curl_easy_init();
    CURLcode cc = CURLE_FAILED_INIT;
    if (curl) {
        curl_easy_setopt(curl, CURLOPT_URL, c->url);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, c->args);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)c->args_len);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
        cc = curl_easy_perform(curl);
        curl_easy_cleanup(curl);
    }
    curl_slist_free_all(list);
    pthread_mutex_lock(&log_lock);
    printf("call %s trace=%s span=%s%s%s\n", c->url, trace, span, cc == CURLE_OK ? "" : " error=",
           cc == CURLE_OK ? "" : curl_easy_strerror(cc));
    fflush(stdout);
    pthread_mutex_unlock(&log_lock);
}

/* ---- the server ---- */

typedef struct request {
    char *body;
    size_t len;
    int too_big;
} request_t;

static enum MHD_Result on_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    /* a header the list refuses (over its limits) is left out */
    ctx_wire_headers_add(cls, key, value ? value : "");
    return MHD_YES;
}

static enum MHD_Result answer(struct MHD_Connection *connection, unsigned status, const char *text) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(connection, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The whole body has arrived: extract, restart the trace if needed, call. */
static enum MHD_Result serve(struct MHD_Connection *connection, request_t *r) {
    static call_t calls[MAX_CALLS]; /* one request at a time uses it: see serve_lock */
    static pthread_mutex_t serve_lock = PTHREAD_MUTEX_INITIALIZER;
    ctx_wire_headers_t *h = NULL;
    ctx_context_t *ctx = NULL;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    if (ctx_wire_headers_new(&h) != 0)
        return answer(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "no memory\n");
    MHD_get_connection_values(connection, MHD_HEADER_KIND, on_header, h);
    ctx_wire_carrier_t carrier = ctx_wire_headers_carrier(h);
    int rc = ctx_wire_extract(wire, &carrier, 0, &ctx, &rep);
    ctx_wire_headers_release(h);
    if (rc != 0)
        return answer(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot decode the context\n");
    if (rep.traceparent != 1) /* none, or invalid: a new trace (tracestate went with it) */
        ctx_wire_trace_start(wire, ctx, 0, NULL);
    pthread_mutex_lock(&serve_lock);
    int n = r->body ? parse_calls(r->body, r->len, calls) : 0;
    for (int i = 0; i < n; i++)
        call_out(ctx, &calls[i]);
    pthread_mutex_unlock(&serve_lock);
    ctx_context_release(ctx);
    return n < 0 ? answer(connection, MHD_HTTP_BAD_REQUEST, "bad JSON\n") : answer(connection, MHD_HTTP_OK, "ok\n");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)cls, (void)url, (void)version;
    if (strcmp(method, "POST") != 0)
        return answer(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "POST a JSON array\n");
    request_t *r = *con_cls;
    if (!r) { /* the headers: the body comes in the next calls */
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t k = *upload_data_size;
        if (r->len + k > MAX_BODY || r->too_big) {
            r->too_big = 1;
        } else {
            char *grown = realloc(r->body, r->len + k + 1);
            if (!grown)
                return MHD_NO;
            r->body = grown;
            memcpy(r->body + r->len, upload_data, k);
            r->len += k;
            r->body[r->len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->too_big)
        return answer(connection, 413, "too large\n");
    return serve(connection, r);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)connection, (void)toe;
    request_t *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
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
    if (ctx_wire_new(&wire) != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
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
    printf("listening on http://127.0.0.1:%d\n", info ? info->port : want_port);
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    MHD_stop_daemon(d);
    curl_global_cleanup();
    ctx_wire_release(wire);
    ctx_thread_release();
    printf("stopped\n");
    return 0;
}
