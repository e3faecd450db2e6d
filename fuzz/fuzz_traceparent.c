/* fuzz_traceparent.c — ctx_wire_traceparent_parse: no crash; what parses
 * formats (as version 00) to text that parses to the same ids and flags. */
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ctx_wire_traceparent_t tp, back;
    if (ctx_wire_traceparent_parse((const char *)data, size, &tp) != 0)
        return 0;
    char buf[CTX_WIRE_TRACEPARENT_LEN + 1];
    FUZZ_CHECK(ctx_wire_traceparent_format(&tp, buf, sizeof buf) == CTX_WIRE_TRACEPARENT_LEN);
    FUZZ_CHECK(ctx_wire_traceparent_parse(buf, CTX_WIRE_TRACEPARENT_LEN, &back) == 0);
    FUZZ_CHECK(back.version == 0);
    FUZZ_CHECK(memcmp(back.trace_id, tp.trace_id, 16) == 0);
    FUZZ_CHECK(memcmp(back.parent_id, tp.parent_id, 8) == 0);
    FUZZ_CHECK(back.flags == tp.flags);
    ctx_wire_traceparent_t child;
    FUZZ_CHECK(ctx_wire_traceparent_child(&tp, &child) == 0);
    FUZZ_CHECK(memcmp(child.trace_id, tp.trace_id, 16) == 0);
    return 0;
}
