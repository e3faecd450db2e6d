/* SPDX-License-Identifier: MIT */
/*
 * test_w3c.c — the W3C Trace Context test suite (test/test.py of the
 * w3c/trace-context repository, SPEC_LEVEL=2, STRICT_LEVEL=2), re-expressed
 * on the wire API.
 *
 * The suite drives a service: it sends a request with some headers, the
 * service makes an outgoing call, and the suite checks the traceparent and
 * tracestate of that call.  `service` below is that service, written as a
 * user of ctxvar would write it (examples/http/w3c_service.c is the same
 * over HTTP): ctx_wire_extract the incoming headers; if no valid
 * traceparent came, start a trace; ctx_wire_inject the outgoing call.  Each
 * test mirrors one test of the suite, with the suite's own inputs and
 * assertions — among them the three that failed before Level 2 support
 * (test_tracestate_duplicated_keys, test_tracestate_key_illegal_vendor_
 * format, test_tracestate_key_length_limit) — plus Level 2's random flag
 * and the reserved flag bits.
 */
#include "wire_test.h"

static ctx_wire_t *w;

static int setup(void **state) {
    (void)state;
    ASSERT_RC(ctx_wire_new(&w), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_wire_release(w);
    ctx_thread_release();
    return 0;
}

#define HARNESS_TP "00-12345678901234567890123456789012-1234567890123456-00"

/* What the outgoing call carried. */
typedef struct outgoing {
    int traceparents;
    char traceparent[64];
    ctx_wire_traceparent_t tp;
    char tracestate[CTX_WIRE_TRACESTATE_MAX_LEN + 1];
} outgoing_t;

/* The service: headers in as name/value pairs (NULL-terminated), the
 * outgoing call's headers out. */
static outgoing_t service(const char *const *in) {
    ctx_wire_headers_t *h = headers();
    for (size_t i = 0; in[i]; i += 2)
        ASSERT_RC(ctx_wire_headers_add(h, in[i], in[i + 1]), 0);
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ASSERT_RC(ctx_wire_extract(w, &c, 0, &ctx, &rep), 0);
    if (rep.traceparent != 1)
        ASSERT_RC(ctx_wire_trace_start(w, ctx, 0, NULL), 0);
    ctx_wire_headers_t *out = headers();
    ctx_wire_carrier_t oc = ctx_wire_headers_carrier(out);
    ASSERT_RC(ctx_wire_inject(w, ctx, &oc, 0, NULL), 0);
    outgoing_t o;
    memset(&o, 0, sizeof o);
    for (size_t i = 0; i < ctx_wire_headers_count(out); i++) {
        const char *name, *value;
        ASSERT_RC(ctx_wire_headers_at(out, i, &name, &value), 0);
        if (ctx_wire_name_equal(name, strlen(name), S("traceparent"))) {
            o.traceparents++;
            snprintf(o.traceparent, sizeof o.traceparent, "%s", value);
        } else if (ctx_wire_name_equal(name, strlen(name), S("tracestate"))) {
            snprintf(o.tracestate, sizeof o.tracestate, "%s", value);
        }
    }
    /* the suite: exactly one traceparent, in its format */
    assert_int_equal(o.traceparents, 1);
    ASSERT_RC(ctx_wire_traceparent_parse(o.traceparent, strlen(o.traceparent), &o.tp), 0);
    ctx_context_release(ctx);
    ctx_wire_headers_release(out);
    ctx_wire_headers_release(h);
    return o;
}

static char *trace_id(const outgoing_t *o, char buf[33]) {
    ctx_wire_traceparent_trace_id(&o->tp, buf, 33);
    return buf;
}

/* The suite's Tracestate class, reduced: does the outgoing list hold key,
 * and with which value. */
static const char *ts_get(const outgoing_t *o, const char *key, char *buf, size_t cap) {
    const char *v;
    size_t n;
    if (ctx_wire_tracestate_get(o->tracestate, strlen(o->tracestate), key, &v, &n) != 0)
        return NULL;
    snprintf(buf, cap, "%.*s", (int)n, v);
    return buf;
}

#define ASSERT_TS(o, key, want)                                                                  \
    do {                                                                                         \
        char v_[300];                                                                            \
        const char *got_ = ts_get(&(o), (key), v_, sizeof v_);                                   \
        if (!got_ || strcmp(got_, (want)) != 0)                                                  \
            fail_msg("tracestate '%s': %s = %s, want %s", (o).tracestate, (key), got_ ? got_ : "(none)", \
                     (want));                                                                    \
    } while (0)

#define ASSERT_NO_TS(o, key)                                                                     \
    do {                                                                                         \
        char v_[300];                                                                            \
        if (ts_get(&(o), (key), v_, sizeof v_))                                                  \
            fail_msg("tracestate '%s' should not hold %s", (o).tracestate, (key));              \
    } while (0)

#define ASSERT_INHERITED(o)                                                                      \
    do {                                                                                         \
        char id_[33];                                                                            \
        assert_string_equal(trace_id(&(o), id_), "12345678901234567890123456789012");            \
    } while (0)

static void test_tracestate_duplicated_keys(void **state) {
    (void)state;
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1,foo=1", NULL});
    ASSERT_INHERITED(o);
    assert_non_null(strstr(o.tracestate, "foo=1"));
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1,foo=2", NULL});
    ASSERT_INHERITED(o);
    assert_true(strstr(o.tracestate, "foo=1") || strstr(o.tracestate, "foo=2"));
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", "foo=1", NULL});
    ASSERT_INHERITED(o);
    assert_non_null(strstr(o.tracestate, "foo=1"));
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", "foo=2", NULL});
    ASSERT_INHERITED(o);
    assert_true(strstr(o.tracestate, "foo=1") || strstr(o.tracestate, "foo=2"));
}

static void test_tracestate_key_illegal_vendor_format(void **state) {
    (void)state;
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo@=1,bar=2", NULL});
    ASSERT_TS(o, "foo@", "1");
    ASSERT_TS(o, "bar", "2");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "@foo=1,bar=2", NULL});
    ASSERT_NO_TS(o, "bar");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo@@bar=1,bar=2", NULL});
    ASSERT_TS(o, "foo@@bar", "1");
    ASSERT_TS(o, "bar", "2");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo@bar@baz=1,bar=2", NULL});
    ASSERT_TS(o, "foo@bar@baz", "1");
    ASSERT_TS(o, "bar", "2");
}

static void test_tracestate_key_length_limit(void **state) {
    (void)state;
    char key[300], member[310];
    memset(key, 'z', 256);
    key[256] = '\0';
    snprintf(member, sizeof member, "%s=1", key);
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", member, NULL});
    ASSERT_TS(o, "foo", "1");
    ASSERT_TS(o, key, "1");
    memset(key, 'z', 257);
    key[257] = '\0';
    snprintf(member, sizeof member, "%s=1", key);
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", member, NULL});
    ASSERT_NO_TS(o, "foo");
    memset(key, 't', 241); /* 't' * 241 + '@' + 'v' * 14 */
    key[241] = '@';
    memset(key + 242, 'v', 14);
    key[256] = '\0';
    snprintf(member, sizeof member, "%s=1", key);
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", member, NULL});
    ASSERT_TS(o, "foo", "1");
    ASSERT_TS(o, key, "1");
    memset(key, 't', 242); /* 't' * 242 + '@v' */
    strcpy(key + 242, "@v");
    snprintf(member, sizeof member, "%s=1", key);
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", member, NULL});
    ASSERT_TS(o, "foo", "1");
    ASSERT_TS(o, key, "1");
    strcpy(key, "t@vvvvvvvvvvvvvvv"); /* 't@' + 'v' * 15 */
    snprintf(member, sizeof member, "%s=1", key);
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1", "tracestate", member, NULL});
    ASSERT_TS(o, "foo", "1");
    ASSERT_TS(o, key, "1");
}

static void test_tracestate_key_illegal_characters(void **state) {
    (void)state;
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo =1", NULL});
    ASSERT_NO_TS(o, "foo ");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "FOO=1", NULL});
    ASSERT_NO_TS(o, "FOO");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo.bar=1", NULL});
    ASSERT_NO_TS(o, "foo.bar");
}

static void test_tracestate_value_illegal_characters(void **state) {
    (void)state;
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=bar=baz", NULL});
    ASSERT_NO_TS(o, "foo");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=,bar=3", NULL});
    ASSERT_NO_TS(o, "foo");
    ASSERT_NO_TS(o, "bar");
}

static void test_tracestate_member_count_limit(void **state) {
    (void)state;
    const char *h1 = "bar01=01,bar02=02,bar03=03,bar04=04,bar05=05,bar06=06,bar07=07,bar08=08,bar09=09,bar10=10";
    const char *h2 = "bar11=11,bar12=12,bar13=13,bar14=14,bar15=15,bar16=16,bar17=17,bar18=18,bar19=19,bar20=20";
    const char *h3 = "bar21=21,bar22=22,bar23=23,bar24=24,bar25=25,bar26=26,bar27=27,bar28=28,bar29=29,bar30=30";
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", h1, "tracestate", h2,
                                            "tracestate", h3, "tracestate", "bar31=31,bar32=32", NULL});
    ASSERT_TS(o, "bar01", "01");
    assert_int_equal(ctx_wire_tracestate_parse(o.tracestate, strlen(o.tracestate), NULL, NULL), 32);
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", h1, "tracestate", h2, "tracestate",
                                 h3, "tracestate", "bar31=31,bar32=32,bar33=33", NULL});
    ASSERT_NO_TS(o, "bar01");
}

static void test_tracestate_all_allowed_characters(void **state) {
    (void)state;
    const char *key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    const char *vkey = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/";
    char value[128];
    size_t n = 0;
    for (int c = 0x20; c <= 0x7e; c++)
        if (c != ',' && c != '=')
            value[n++] = (char)c;
    value[n] = '\0';
    char member[256];
    snprintf(member, sizeof member, "%s=%s", key, value);
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", member, NULL});
    ASSERT_TS(o, key, value);
    snprintf(member, sizeof member, "%s=%s", vkey, value);
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", member, NULL});
    ASSERT_TS(o, vkey, value);
}

static void test_tracestate_ows_and_empty(void **state) {
    (void)state;
    outgoing_t o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1 \t , \t bar=2, \t baz=3", NULL});
    ASSERT_TS(o, "foo", "1");
    ASSERT_TS(o, "bar", "2");
    ASSERT_TS(o, "baz", "3");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "\t foo=1 \t", NULL});
    ASSERT_TS(o, "foo", "1");
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "", NULL});
    ASSERT_INHERITED(o);
    assert_string_equal(o.tracestate, ""); /* not sent empty */
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "", "tracestate", "foo=1", NULL});
    ASSERT_TS(o, "foo", "1");
    o = service((const char *[]){"traceparent", HARNESS_TP, "TRACESTATE", "foo=1", NULL});
    ASSERT_TS(o, "foo", "1");
    /* several headers, different keys: combined in order */
    o = service((const char *[]){"traceparent", HARNESS_TP, "tracestate", "foo=1,bar=2", "tracestate",
                                 "rojo=1,congo=2", "tracestate", "baz=3", NULL});
    assert_string_equal(o.tracestate, "foo=1,bar=2,rojo=1,congo=2,baz=3");
}

static void test_traceparent_cases(void **state) {
    (void)state;
    char id[33];
    /* tracestate without traceparent is discarded; a new trace starts */
    outgoing_t o = service((const char *[]){"tracestate", "foo=1", NULL});
    assert_string_equal(o.tracestate, "");
    /* casing of the name */
    o = service((const char *[]){"TraceParent", HARNESS_TP, NULL});
    ASSERT_INHERITED(o);
    /* two traceparents: a new trace */
    o = service((const char *[]){"traceparent", HARNESS_TP, "traceparent",
                                 "00-12345678901234567890123456789011-1234567890123456-00", NULL});
    assert_string_not_equal(trace_id(&o, id), "12345678901234567890123456789012");
    assert_string_not_equal(trace_id(&o, id), "12345678901234567890123456789011");
    /* a higher version with more fields is understood; 0xff is not */
    o = service((const char *[]){"traceparent", "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like", NULL});
    ASSERT_INHERITED(o);
    assert_memory_equal(o.traceparent, "00-", 3); /* sent as the version known */
    o = service((const char *[]){"traceparent", "ff-12345678901234567890123456789012-1234567890123456-01", NULL});
    assert_string_not_equal(trace_id(&o, id), "12345678901234567890123456789012");
    /* illegal characters, lengths, all-zero ids: a new trace */
    static const char *bad[] = {
        "00-12345678901234567890123456789012-1234567890123456-.0",
        "00-12345678901234567890123456789012-1234567890123456-0",
        "00-12345678901234567890123456789012-1234567890123456-001",
        "00-00000000000000000000000000000000-1234567890123456-01",
        "00-12345678901234567890123456789012-0000000000000000-01",
        "00-1234567890123456789012345678901.-1234567890123456-01",
        "00-12345678901234567890123456789012-123456789012345.-01",
        "0x-12345678901234567890123456789012-1234567890123456-01",
        "000-12345678901234567890123456789012-1234567890123456-01",
        "00-ABCDEF78901234567890123456789012-1234567890123456-01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = service((const char *[]){"traceparent", bad[i], NULL});
        if (strncmp(trace_id(&o, id), bad[i] + 3, 32) == 0)
            fail_msg("'%s' was inherited", bad[i]);
    }
    /* OWS around the value */
    o = service((const char *[]){"traceparent", " \t" HARNESS_TP "\t ", NULL});
    ASSERT_INHERITED(o);
    /* each call gets its own parent-id */
    outgoing_t a = service((const char *[]){"traceparent", HARNESS_TP, NULL});
    outgoing_t b = service((const char *[]){"traceparent", HARNESS_TP, NULL});
    assert_memory_not_equal(a.tp.parent_id, b.tp.parent_id, 8);
    assert_string_not_equal(a.traceparent + 36, "1234567890123456");
}

static void test_level2_flags(void **state) {
    (void)state;
    /* test_propagates_random_flag */
    outgoing_t o = service((const char *[]){"traceparent", "00-12345678901234567890123456789012-1234567890123456-02", NULL});
    ASSERT_INHERITED(o);
    assert_string_not_equal(o.traceparent + 36, "1234567890123456-02");
    assert_true(o.tp.flags & CTX_WIRE_TRACE_FLAG_RANDOM);
    /* reserved bits are sent as zero; sampled and random are kept */
    o = service((const char *[]){"traceparent", "00-12345678901234567890123456789012-1234567890123456-ff", NULL});
    assert_string_equal(o.traceparent + 53, "03");
    o = service((const char *[]){"traceparent", "00-12345678901234567890123456789012-1234567890123456-09", NULL});
    assert_string_equal(o.traceparent + 53, "01");
    /* a trace started here has a random trace-id and says so */
    o = service((const char *[]){NULL});
    assert_true(o.tp.flags & CTX_WIRE_TRACE_FLAG_RANDOM);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tracestate_duplicated_keys),
        cmocka_unit_test(test_tracestate_key_illegal_vendor_format),
        cmocka_unit_test(test_tracestate_key_length_limit),
        cmocka_unit_test(test_tracestate_key_illegal_characters),
        cmocka_unit_test(test_tracestate_value_illegal_characters),
        cmocka_unit_test(test_tracestate_member_count_limit),
        cmocka_unit_test(test_tracestate_all_allowed_characters),
        cmocka_unit_test(test_tracestate_ows_and_empty),
        cmocka_unit_test(test_traceparent_cases),
        cmocka_unit_test(test_level2_flags),
    };
    return cmocka_run_group_tests_name("wire_w3c", tests, setup, teardown);
}
