/* SPDX-License-Identifier: MIT */
/* fuzz_tracestate.c — ctx_wire_tracestate_parse / normalize / get / put: no
 * crash; a valid list normalises to a valid list with as many members;
 * every member can be looked up; put keeps the list valid and within 32. */
#include <string.h>

#include "fuzz.h"

static char norm[CTX_WIRE_TRACESTATE_MAX_LEN + 1];
static char put[CTX_WIRE_TRACESTATE_MAX_LEN + 1];

typedef struct first {
    char key[CTX_WIRE_TRACESTATE_MAX_KEY + 1];
    int have;
} first_t;

static int take_first(const char *key, size_t key_len, const char *value, size_t value_len,
                      void *user) {
    (void)value;
    first_t *f = user;
    FUZZ_CHECK(key_len >= 1 && key_len <= CTX_WIRE_TRACESTATE_MAX_KEY);
    FUZZ_CHECK(value_len >= 1 && value_len <= CTX_WIRE_TRACESTATE_MAX_VALUE);
    if (!f->have) {
        memcpy(f->key, key, key_len);
        f->key[key_len] = '\0';
        f->have = 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    first_t first = {{0}, 0};
    int n = ctx_wire_tracestate_parse(text, size, take_first, &first);
    size_t len = 0;
    int rc = ctx_wire_tracestate_normalize(text, size, norm, sizeof norm, &len);
    if (n < 0) {
        FUZZ_CHECK(rc == n);
        return 0;
    }
    FUZZ_CHECK(n <= CTX_WIRE_TRACESTATE_MAX_MEMBERS);
    FUZZ_CHECK(rc == 0 && len <= CTX_WIRE_TRACESTATE_MAX_LEN && strlen(norm) == len);
    FUZZ_CHECK(ctx_wire_tracestate_parse(norm, len, NULL, NULL) == n);
    if (first.have) {
        const char *v;
        size_t vn;
        FUZZ_CHECK(ctx_wire_tracestate_get(norm, len, first.key, &v, &vn) == 0);
    }
    size_t plen;
    FUZZ_CHECK(ctx_wire_tracestate_put(norm, len, "fuzz@vendor", "v", put, sizeof put, &plen) == 0);
    int m = ctx_wire_tracestate_parse(put, plen, NULL, NULL);
    FUZZ_CHECK(m >= 1 && m <= CTX_WIRE_TRACESTATE_MAX_MEMBERS);
    return 0;
}
