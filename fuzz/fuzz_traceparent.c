/* SPDX-License-Identifier: MIT */
/* fuzz_traceparent.c — ctx_wire_traceparent_parse: no crash; it agrees with
 * a plain byte-by-byte reference parser written from the grammar (the
 * library decodes eight digits at a time); what parses formats (as version
 * 00, reserved flag bits zeroed) to text that parses to the same ids. */
#include <string.h>

#include "fuzz.h"

static int ref_hex(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int ref_field(const char *t, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int hi = ref_hex((unsigned char)t[2 * i]), lo = ref_hex((unsigned char)t[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi * 16 + lo);
    }
    return 0;
}

static int ref_nonzero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 1;
    return 0;
}

/* The grammar of wire.h, one byte at a time. */
static int ref_parse(const char *t, size_t n, ctx_wire_traceparent_t *out) {
    while (n && (*t == ' ' || *t == '\t'))
        t++, n--;
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n < 55 || t[2] != '-' || t[35] != '-' || t[52] != '-')
        return -1;
    if (ref_field(t, &out->version, 1) || out->version == 0xff)
        return -1;
    if (out->version == 0 ? n != 55 : (n > 55 && t[55] != '-'))
        return -1;
    if (ref_field(t + 3, out->trace_id, 16) || ref_field(t + 36, out->parent_id, 8) ||
        ref_field(t + 53, &out->flags, 1))
        return -1;
    return ref_nonzero(out->trace_id, 16) && ref_nonzero(out->parent_id, 8) ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ctx_wire_traceparent_t tp, back, ref;
    int rc = ctx_wire_traceparent_parse((const char *)data, size, &tp);
    int want = ref_parse((const char *)data, size, &ref);
    FUZZ_CHECK((rc == 0) == (want == 0));
    if (rc != 0)
        return 0;
    FUZZ_CHECK(memcmp(&tp, &ref, sizeof tp) == 0);
    char buf[CTX_WIRE_TRACEPARENT_LEN + 1];
    FUZZ_CHECK(ctx_wire_traceparent_format(&tp, buf, sizeof buf) == CTX_WIRE_TRACEPARENT_LEN);
    FUZZ_CHECK(ctx_wire_traceparent_parse(buf, CTX_WIRE_TRACEPARENT_LEN, &back) == 0);
    FUZZ_CHECK(back.version == 0);
    FUZZ_CHECK(memcmp(back.trace_id, tp.trace_id, 16) == 0);
    FUZZ_CHECK(memcmp(back.parent_id, tp.parent_id, 8) == 0);
    FUZZ_CHECK(back.flags == (tp.flags & CTX_WIRE_TRACE_FLAGS_KNOWN));
    ctx_wire_traceparent_t child;
    FUZZ_CHECK(ctx_wire_traceparent_child(&tp, &child) == 0);
    FUZZ_CHECK(memcmp(child.trace_id, tp.trace_id, 16) == 0);
    FUZZ_CHECK(child.flags == (tp.flags & CTX_WIRE_TRACE_FLAGS_KNOWN));
    return 0;
}
