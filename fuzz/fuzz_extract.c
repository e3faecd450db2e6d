/* SPDX-License-Identifier: MIT */
/* fuzz_extract.c — ctx_wire_extract over whole header sets: the input is
 * lines "name: value" (up to CTX_WIRE_HEADERS_MAX_PAIRS of them); extract
 * must succeed (non-strict mode never fails but for memory), the context
 * must inject, and what it injects must pass a strict extract and give a
 * context of the same size (less a scope without a deadline, which is not
 * sent on).  A grpc-timeout that was used gives the
 * context a cancellation scope, and the time sent on is never more than
 * the time received. */
#include <string.h>

#include <ctxvar/cancel.h>

#include "fuzz.h"

static ctx_wire_t *wire;
static ctx_var_t *vars[3];

static void release_value(void *value, void *user) {
    (void)user;
    free(value);
}

static int encode(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const size_t *len = value;
    const char *text = (const char *)(len + 1);
    if (cap > 0) {
        size_t n = *len < cap - 1 ? *len : cap - 1;
        memcpy(buf, text, n);
        buf[n] = '\0';
    }
    return (int)*len;
}

static int decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    if (len > 0 && text[0] == '!')
        return CTX_EPARSE;
    size_t *v = malloc(sizeof *v + len + 1);
    if (!v)
        return CTX_ENOMEM;
    *v = len;
    memcpy(v + 1, text, len);
    ((char *)(v + 1))[len] = '\0';
    *out = v;
    return 0;
}

static const ctx_value_ops_t ops = {.size = sizeof(ctx_value_ops_t),.release = release_value, .encode = encode, .decode = decode};

static void init(void) {
    if (wire)
        return;
    static const char *keys[] = {"userId", "tenant", "k"};
    FUZZ_CHECK(ctx_wire_new(&wire) == 0);
    for (int i = 0; i < 3; i++) {
        ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &ops};
        FUZZ_CHECK(ctx_var_new(keys[i], &o, &vars[i]) == 0);
        FUZZ_CHECK(ctx_wire_register(wire, vars[i], keys[i]) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    ctx_wire_headers_t *h = NULL;
    FUZZ_CHECK(ctx_wire_headers_new(&h) == 0);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon) {
            const char *v = colon + 1;
            while (v < line_end && *v == ' ')
                v++;
            /* bad names or values are refused by the list, as a server would */
            ctx_wire_headers_add_n(h, p, (size_t)(colon - p), v, (size_t)(line_end - v));
        }
        p = nl ? nl + 1 : end;
    }
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    FUZZ_CHECK(ctx_wire_extract(wire, &c, 0, &ctx, &rep) == 0);
    FUZZ_CHECK(ctx_context_length(ctx) <= 5);
    ctx_wire_headers_t *out = NULL;
    FUZZ_CHECK(ctx_wire_headers_new(&out) == 0);
    ctx_wire_carrier_t oc = ctx_wire_headers_carrier(out);
    ctx_wire_inject_report_t sent = CTX_STRUCT_INIT(ctx_wire_inject_report_t);
    FUZZ_CHECK(ctx_wire_inject(wire, ctx, &oc, 0, &sent) >= 0);
    FUZZ_CHECK(sent.traceparent == (rep.traceparent == 1));
    if (sent.traceparent) { /* the report names what was sent; reserved flags zero */
        const char *tp = NULL;
        ctx_wire_traceparent_t back;
        FUZZ_CHECK(ctx_wire_headers_get(out, "traceparent", &tp, NULL) == 0);
        FUZZ_CHECK(ctx_wire_traceparent_parse(tp, strlen(tp), &back) == 0);
        FUZZ_CHECK(memcmp(&back, &sent.parent, sizeof back) == 0);
        FUZZ_CHECK((back.flags & ~CTX_WIRE_TRACE_FLAGS_KNOWN) == 0);
    }
    ctx_cancel_scope_t *scope = NULL;
    int has_scope = ctx_cancel_scope_get(ctx, &scope) == 0;
    FUZZ_CHECK(has_scope == (rep.deadline == 1));
    int has_deadline = 0;
    if (has_scope) {
        int64_t deadline, received = 0;
        has_deadline = ctx_cancel_scope_deadline(scope, &deadline) == 0;
        FUZZ_CHECK(sent.deadline == has_deadline);
        const char *t = NULL;
        FUZZ_CHECK(ctx_wire_headers_get(h, "grpc-timeout", &t, NULL) == 0);
        FUZZ_CHECK(ctx_wire_timeout_parse(t, strlen(t), &received) == 0);
        FUZZ_CHECK(!has_deadline || sent.timeout_ns <= received);
        ctx_cancel_scope_release(scope);
    }
    ctx_context_t *again = NULL;
    FUZZ_CHECK(ctx_wire_extract(wire, &oc, CTX_WIRE_STRICT, &again, NULL) == 0);
    /* A scope without a deadline (a grpc-timeout past the clock's end) is
     * not sent on: the next hop has no scope. */
    FUZZ_CHECK(ctx_context_length(again) ==
               ctx_context_length(ctx) - (size_t)(has_scope && !has_deadline));
    ctx_context_release(again);
    ctx_context_release(ctx);
    ctx_wire_headers_release(out);
    ctx_wire_headers_release(h);
    ctx_thread_release();
    return 0;
}
