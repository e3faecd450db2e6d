/* A program outside the source tree: the wire.  A context with a trace is
 * written into headers and read back into a new context with the same
 * trace id. */
#include <stdio.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/wire.h>

int main(void) {
    ctx_wire_t *wire;
    ctx_wire_headers_t *headers;
    ctx_wire_traceparent_t started, received;
    ctx_context_t *decoded;
    const char *value;
    size_t len;
    if (ctx_wire_new(&wire) != 0 || ctx_wire_headers_new(&headers) != 0)
        return 1;
    ctx_wire_carrier_t carrier = ctx_wire_headers_carrier(headers);
    if (ctx_wire_trace_start(wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, &started) != 0 ||
        ctx_wire_inject(wire, NULL, &carrier, 0, NULL) != 0 ||
        ctx_wire_headers_get(headers, "traceparent", &value, &len) != 0 ||
        len != CTX_WIRE_TRACEPARENT_LEN)
        return 1;
    if (ctx_wire_extract(wire, &carrier, 0, &decoded, NULL) != 0 ||
        ctx_wire_trace_get(wire, decoded, &received, NULL, NULL) != 0 ||
        memcmp(received.trace_id, started.trace_id, sizeof started.trace_id) != 0)
        return 1;
    printf("wire ok: traceparent: %s\n", value);
    ctx_context_release(decoded);
    ctx_wire_headers_release(headers);
    ctx_wire_release(wire);
    ctx_thread_release();
    return 0;
}
