/* SPDX-License-Identifier: MIT */
/* fuzz_timeout.c — ctx_wire_timeout_parse: no crash, no overflow (UBSan);
 * a parsed timeout formats and parses back to no more than itself. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int64_t ns, back;
    if (ctx_wire_timeout_parse((const char *)data, size, &ns) != 0)
        return 0;
    FUZZ_CHECK(ns >= 0);
    char buf[CTX_WIRE_TIMEOUT_MAX_LEN + 1];
    int n = ctx_wire_timeout_format(ns, buf, sizeof buf);
    FUZZ_CHECK(n >= 2 && n <= CTX_WIRE_TIMEOUT_MAX_LEN);
    FUZZ_CHECK(ctx_wire_timeout_parse(buf, (size_t)n, &back) == 0);
    FUZZ_CHECK(back <= ns);
    return 0;
}
