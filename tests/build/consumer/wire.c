/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: the wire.  A context with a trace and
 * a deadline is written into headers and read back into a new context with
 * the same trace id, whose deadline is a cancellation scope. */
#include <stdio.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/wire.h>

int main(void) {
    ctx_wire_t *wire;
    ctx_wire_headers_t *headers;
    ctx_wire_traceparent_t started, received;
    ctx_context_t *decoded;
    ctx_cancel_scope_t *scope;
    int64_t left;
    const char *value;
    size_t len;
    if (ctx_wire_new(&wire) != 0 || ctx_wire_headers_new(&headers) != 0)
        return 1;
    ctx_wire_carrier_t carrier = ctx_wire_headers_carrier(headers);
    if (ctx_wire_trace_start(wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, &started) != 0 ||
        ctx_wire_deadline_set(wire, NULL, 5000000000LL) != 0 ||
        ctx_wire_inject(wire, NULL, &carrier, 0, NULL) != 0 ||
        ctx_wire_headers_get(headers, "traceparent", &value, &len) != 0 ||
        len != CTX_WIRE_TRACEPARENT_LEN)
        return 1;
    if (ctx_wire_extract(wire, &carrier, 0, &decoded, NULL) != 0 ||
        ctx_wire_trace_get(wire, decoded, &received, NULL, NULL) != 0 ||
        memcmp(received.trace_id, started.trace_id, sizeof started.trace_id) != 0)
        return 1;
    if (ctx_cancel_scope_get(decoded, &scope) != 0 || ctx_cancel_scope_remaining(scope, &left) != 0 ||
        left <= 0 || left > 5000000000LL || ctx_cancel_scope_error(scope) != 0)
        return 1;
    ctx_cancel_scope_release(scope);
    printf("wire ok: traceparent: %s\n", value);
    ctx_context_release(decoded);
    ctx_wire_headers_release(headers);
    ctx_wire_release(wire);
    ctx_thread_release();
    ctx_cancel_timer_release();
    return 0;
}
