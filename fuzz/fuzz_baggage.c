/* SPDX-License-Identifier: MIT */
/* fuzz_baggage.c — ctx_wire_baggage_parse: no crash, no read past the limits;
 * decoded values are never longer than the input; every member kept
 * re-encodes (ctx_wire_baggage_append) to text that decodes to the same bytes
 * (decoded values are valid UTF-8, so a second decode changes nothing); and
 * the limits hold for the list as it would be sent on: appending every
 * member kept, in order, to one writer never exceeds 64 members or 8192
 * bytes (the limits apply to the header that is sent). */
#include <string.h>

#include "fuzz.h"

static char out[CTX_WIRE_BAGGAGE_MAX_BYTES * 3 + 64];

typedef struct state {
    size_t input;
    int members;
    ctx_wire_baggage_writer_t all; /* every member kept, re-sent */
} state_t;

static char all_buf[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];

typedef struct expect {
    const char *value;
    size_t len;
    int ok;
} expect_t;

static int compare(const ctx_wire_baggage_member_t *m, void *user) {
    expect_t *e = user;
    e->ok = m->value_len == e->len && memcmp(m->value, e->value, e->len) == 0;
    return 0;
}

static int check(const ctx_wire_baggage_member_t *m, void *user) {
    state_t *s = user;
    s->members++;
    FUZZ_CHECK(m->key_len > 0 && ctx_wire_baggage_key_valid(m->key, m->key_len));
    FUZZ_CHECK(m->value_len <= s->input);
    FUZZ_CHECK(m->value[m->value_len] == '\0');
    FUZZ_CHECK(ctx_wire_baggage_append(&s->all, m->key, m->key_len, m->value, m->value_len,
                                       m->properties, m->properties_len) == 0);
    ctx_wire_baggage_writer_t w;
    ctx_wire_baggage_writer_init(&w, out, sizeof out);
    int rc = ctx_wire_baggage_append(&w, m->key, m->key_len, m->value, m->value_len, m->properties,
                                m->properties_len);
    FUZZ_CHECK(rc == 0); /* it fitted in the whole list, so alone too */
    /* m->value stays valid: the nested parse decodes into its own frame */
    expect_t e = {m->value, m->value_len, 0};
    FUZZ_CHECK(ctx_wire_baggage_parse(out, w.len, compare, &e, NULL) == 1);
    FUZZ_CHECK(e.ok);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    state_t s = {size, 0, {0}};
    ctx_wire_baggage_writer_init(&s.all, all_buf, sizeof all_buf);
    ctx_wire_baggage_stats_t st = CTX_STRUCT_INIT(ctx_wire_baggage_stats_t);
    int n = ctx_wire_baggage_parse((const char *)data, size, check, &s, &st);
    FUZZ_CHECK(n == s.members);
    FUZZ_CHECK(n <= CTX_WIRE_BAGGAGE_MAX_MEMBERS);
    FUZZ_CHECK(s.all.members == (size_t)n && s.all.len <= CTX_WIRE_BAGGAGE_MAX_BYTES);
    if (st.truncated)
        FUZZ_CHECK(size > CTX_WIRE_BAGGAGE_MAX_INPUT);
    return 0;
}
