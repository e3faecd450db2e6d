/* SPDX-License-Identifier: MIT */
/*
 * test_traceparent.c — W3C Trace Context `traceparent`: the specification's
 * examples, every field rule (length, separators, lowercase hex, all-zero
 * ids, version ff), the future-version rules of §3.2.4, formatting, new
 * traces and children, and the trace-id helper; every byte value at every
 * position, and random ids, against a plain reference decoder (the parser
 * decodes sixteen digits at a time: this executable is also built with
 * CTX_WIRE_HEX=2 and 3, the SWAR and table versions, from the same source).
 */
#include "wire_test.h"

static const uint8_t spec_trace[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                       0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
static const uint8_t spec_parent[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};

static int parse(const char *text, ctx_wire_traceparent_t *out) {
    return ctx_wire_traceparent_parse(text, strlen(text), out);
}

static void test_spec_examples(void **state) {
    (void)state;
    ctx_wire_traceparent_t tp;
    /* §3.2.2.5 example: sampled */
    ASSERT_RC(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp), 0);
    assert_int_equal(tp.version, 0);
    assert_memory_equal(tp.trace_id, spec_trace, 16);
    assert_memory_equal(tp.parent_id, spec_parent, 8);
    assert_int_equal(tp.flags, CTX_WIRE_TRACE_FLAG_SAMPLED);
    /* not sampled */
    ASSERT_RC(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &tp), 0);
    assert_int_equal(tp.flags, 0);
    /* the other example of the specification */
    ASSERT_RC(parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", &tp), 0);
    char buf[CTX_WIRE_TRACEPARENT_LEN + 1];
    ASSERT_RC(ctx_wire_traceparent_format(&tp, buf, sizeof buf), CTX_WIRE_TRACEPARENT_LEN);
    assert_string_equal(buf, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
}

static void test_whitespace_around_value(void **state) {
    (void)state;
    ctx_wire_traceparent_t tp;
    ASSERT_RC(parse("  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t", &tp), 0);
    /* whitespace inside is not allowed */
    ASSERT_RC(parse("00-4bf92f3577b34da6a3ce929d0e0e4736 -00f067aa0ba902b7-01", &tp), CTX_EPARSE);
}

static void test_invalid_values(void **state) {
    (void)state;
    static const char *bad[] = {
        "",
        "00",
        /* one short, one long */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        /* version 00 with a fifth field */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
        /* uppercase hex anywhere (HEXDIGLC) */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* non-hex */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* all-zero ids (§3.2.2.3, §3.2.2.4) */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* version ff is invalid (§3.2.2.1) */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* separators */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        /* fields of the wrong width */
        "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
        "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        /* two headers joined with a comma */
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,"
         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctx_wire_traceparent_t tp;
        memset(&tp, 0xAB, sizeof tp);
        int rc = parse(bad[i], &tp);
        if (rc != CTX_EPARSE)
            fail_msg("'%s' parsed with %d", bad[i], rc);
        assert_int_equal(tp.version, 0xAB); /* untouched */
    }
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_traceparent_parse(NULL, 3, &tp), CTX_EINVAL);
    ASSERT_RC(ctx_wire_traceparent_parse("x", 1, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_traceparent_parse(NULL, 0, &tp), CTX_EPARSE);
}

/* The reference: a lowercase hex digit's value, or -1. */
static int ref_digit(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The reference parse of a 55-byte version-00-shaped header, digit by
 * digit: 0 and *out, or CTX_EPARSE. */
static int ref_parse(const char *t, ctx_wire_traceparent_t *out) {
    uint8_t b[27];
    static const int field_start[4] = {0, 3, 36, 53}, field_bytes[4] = {1, 16, 8, 1};
    if (t[2] != '-' || t[35] != '-' || t[52] != '-')
        return CTX_EPARSE;
    int k = 0;
    for (int f = 0; f < 4; f++)
        for (int i = 0; i < field_bytes[f]; i++, k++) {
            int hi = ref_digit((unsigned char)t[field_start[f] + 2 * i]);
            int lo = ref_digit((unsigned char)t[field_start[f] + 2 * i + 1]);
            if (hi < 0 || lo < 0)
                return CTX_EPARSE;
            b[k] = (uint8_t)(hi << 4 | lo);
        }
    uint8_t trace_any = 0, parent_any = 0;
    for (int i = 0; i < 16; i++)
        trace_any |= b[1 + i];
    for (int i = 0; i < 8; i++)
        parent_any |= b[17 + i];
    if (b[0] == 0xff || !trace_any || !parent_any)
        return CTX_EPARSE;
    out->version = b[0];
    memcpy(out->trace_id, b + 1, 16);
    memcpy(out->parent_id, b + 17, 8);
    out->flags = b[25];
    return 0;
}

/* Parses a 55-byte header copied into a heap block of exactly 55 bytes
 * (ASan: no read past it), checks the result against the reference, and
 * that a failure left *out untouched. */
static void check_against_reference(const char *text) {
    char *copy = malloc(CTX_WIRE_TRACEPARENT_LEN);
    assert_non_null(copy);
    memcpy(copy, text, CTX_WIRE_TRACEPARENT_LEN);
    ctx_wire_traceparent_t got, want, untouched;
    memset(&got, 0xAB, sizeof got);
    memset(&untouched, 0xAB, sizeof untouched);
    int rc = ctx_wire_traceparent_parse(copy, CTX_WIRE_TRACEPARENT_LEN, &got);
    int ref = ref_parse(copy, &want);
    /* OWS at either end is trimmed: the result is then too short */
    if (copy[0] == ' ' || copy[0] == '\t' || copy[54] == ' ' || copy[54] == '\t')
        ref = CTX_EPARSE;
    if (rc != ref)
        fail_msg("'%.55s': %d, the reference %d", copy, rc, ref);
    if (rc == 0)
        assert_memory_equal(&got, &want, sizeof got);
    else
        assert_memory_equal(&got, &untouched, sizeof got);
    free(copy);
}

static void test_every_byte_at_every_position(void **state) {
    (void)state;
    static const char base[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char text[CTX_WIRE_TRACEPARENT_LEN];
    int accepted = 0;
    for (int pos = 0; pos < CTX_WIRE_TRACEPARENT_LEN; pos++)
        for (int c = 0; c < 256; c++) {
            memcpy(text, base, sizeof text);
            text[pos] = (char)c;
            check_against_reference(text);
            ctx_wire_traceparent_t tp;
            accepted += ctx_wire_traceparent_parse(text, sizeof text, &tp) == 0;
        }
    /* each of the 52 digit positions accepts exactly the 16 lowercase
     * digits (one change cannot make version ff or an all-zero id), each
     * of the 3 dashes only '-' */
    assert_int_equal(accepted, 52 * 16 + 3);
}

static void test_random_ids_against_reference(void **state) {
    (void)state;
    static const char digits[] = "0123456789abcdefABCDEFgz-";
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char text[CTX_WIRE_TRACEPARENT_LEN];
    for (int round = 0; round < SCALED(20000, 2000, 2000); round++) {
        memcpy(text, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", sizeof text);
        for (int i = 0; i < CTX_WIRE_TRACEPARENT_LEN; i++) {
            if (i == 2 || i == 35 || i == 52)
                continue;
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* mostly lowercase digits; now and then an invalid one */
            text[i] = digits[(x >> 8) % 64 < 62 ? (x >> 16) % 16 : 16 + (x >> 16) % 9];
            if ((x >> 40) % 16 == 0) /* and ids with runs of zeros */
                text[i] = '0';
        }
        check_against_reference(text);
    }
    /* all zeros in one id or the other, one digit at a time away from it */
    memcpy(text, "00-00000000000000000000000000000000-0000000000000000-01", sizeof text);
    check_against_reference(text);
    for (int i = 3; i < 52; i++) {
        if (i == 35)
            continue;
        char save = text[i];
        text[i] = '1';
        check_against_reference(text);
        text[i] = save;
    }
}

static void test_future_versions(void **state) {
    (void)state;
    ctx_wire_traceparent_t tp;
    /* a higher version with exactly the four fields */
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp), 0);
    assert_int_equal(tp.version, 0xcc);
    assert_memory_equal(tp.trace_id, spec_trace, 16);
    assert_int_equal(tp.flags, 1);
    /* ... with more fields after a dash: parsed, extra ignored */
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future", &tp), 0);
    assert_memory_equal(tp.parent_id, spec_parent, 8);
    ASSERT_RC(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-", &tp), 0);
    assert_int_equal(tp.flags, 9);
    /* ... but the flags must be followed by the end or a dash */
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what", &tp), CTX_EPARSE);
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", &tp), CTX_EPARSE);
    /* ... shorter than 55 is never parsed */
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", &tp), CTX_EPARSE);
    /* ... and the field rules still hold */
    ASSERT_RC(parse("cc-00000000000000000000000000000000-00f067aa0ba902b7-01", &tp), CTX_EPARSE);
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-XY-z", &tp), CTX_EPARSE);
    ASSERT_RC(parse("fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp), 0);
    ASSERT_RC(parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", &tp), CTX_EPARSE);
    /* sent on as version 00 */
    char buf[64];
    ASSERT_RC(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", &tp), 0);
    ASSERT_RC(ctx_wire_traceparent_format(&tp, buf, sizeof buf), CTX_WIRE_TRACEPARENT_LEN);
    assert_string_equal(buf, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

static void test_flags(void **state) {
    (void)state;
    ctx_wire_traceparent_t tp, child;
    char buf[64];
    /* reserved flag bits are kept as received but written as zero (Level 2:
     * "Vendors MUST set those to zero"); sampled and random are kept */
    ASSERT_RC(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &tp), 0);
    assert_int_equal(tp.flags, 0xff);
    ASSERT_RC(ctx_wire_traceparent_format(&tp, buf, sizeof buf), CTX_WIRE_TRACEPARENT_LEN);
    assert_string_equal(buf + 53, "03");
    ASSERT_RC(ctx_wire_traceparent_child(&tp, &child), 0);
    assert_int_equal(child.flags, 0x03);
    static const struct {
        const char *in, *out;
    } cases[] = {{"00", "00"}, {"01", "01"}, {"02", "02"}, {"03", "03"},
                 {"04", "00"}, {"05", "01"}, {"fe", "02"}, {"80", "00"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char in[64];
        snprintf(in, sizeof in, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-%s", cases[i].in);
        ASSERT_RC(parse(in, &tp), 0);
        ASSERT_RC(ctx_wire_traceparent_format(&tp, buf, sizeof buf), CTX_WIRE_TRACEPARENT_LEN);
        if (strcmp(buf + 53, cases[i].out) != 0)
            fail_msg("flags %s sent as %s, want %s", cases[i].in, buf + 53, cases[i].out);
    }
}

static void test_span_id(void **state) {
    (void)state;
    ctx_wire_traceparent_t tp;
    char buf[32];
    ASSERT_RC(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp), 0);
    memset(buf, 'x', sizeof buf);
    ASSERT_RC(ctx_wire_traceparent_span_id(&tp, buf, 16), CTX_ETRUNCATED);
    assert_int_equal(buf[0], 'x');
    ASSERT_RC(ctx_wire_traceparent_span_id(&tp, buf, 17), 16);
    assert_string_equal(buf, "00f067aa0ba902b7");
    ASSERT_RC(ctx_wire_traceparent_span_id(NULL, buf, 17), CTX_EINVAL);
    ASSERT_RC(ctx_wire_traceparent_span_id(&tp, NULL, 17), CTX_EINVAL);
}

static void test_format_errors(void **state) {
    (void)state;
    ctx_wire_traceparent_t tp;
    char buf[64];
    ASSERT_RC(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp), 0);
    memset(buf, 'x', sizeof buf);
    ASSERT_RC(ctx_wire_traceparent_format(&tp, buf, 55), CTX_ETRUNCATED);
    assert_int_equal(buf[0], 'x');
    ASSERT_RC(ctx_wire_traceparent_format(&tp, buf, 56), CTX_WIRE_TRACEPARENT_LEN);
    ASSERT_RC(ctx_wire_traceparent_format(NULL, buf, 56), CTX_EINVAL);
    ctx_wire_traceparent_t zero;
    memset(&zero, 0, sizeof zero);
    ASSERT_RC(ctx_wire_traceparent_format(&zero, buf, sizeof buf), CTX_EINVAL);
    ASSERT_RC(ctx_wire_traceparent_trace_id(&tp, buf, 32), CTX_ETRUNCATED);
    ASSERT_RC(ctx_wire_traceparent_trace_id(&tp, buf, 33), 32);
    assert_string_equal(buf, "4bf92f3577b34da6a3ce929d0e0e4736");
}

static void test_new_and_child(void **state) {
    (void)state;
    ctx_wire_traceparent_t a, b, c;
    char buf[64];
    ASSERT_RC(ctx_wire_traceparent_new(CTX_WIRE_TRACE_FLAG_SAMPLED, &a), 0);
    ASSERT_RC(ctx_wire_traceparent_new(0, &b), 0);
    assert_memory_not_equal(a.trace_id, b.trace_id, 16);
    /* a new trace-id is random: Level 2's random flag is set */
    assert_int_equal(a.flags, CTX_WIRE_TRACE_FLAG_SAMPLED | CTX_WIRE_TRACE_FLAG_RANDOM);
    assert_int_equal(b.flags, CTX_WIRE_TRACE_FLAG_RANDOM);
    /* a new trace formats and parses back identically */
    ASSERT_RC(ctx_wire_traceparent_format(&a, buf, sizeof buf), CTX_WIRE_TRACEPARENT_LEN);
    ASSERT_RC(parse(buf, &c), 0);
    assert_memory_equal(&a, &c, sizeof a);
    /* a child: same trace, same flags, new parent-id */
    ASSERT_RC(ctx_wire_traceparent_child(&a, &c), 0);
    assert_memory_equal(c.trace_id, a.trace_id, 16);
    assert_memory_not_equal(c.parent_id, a.parent_id, 8);
    assert_int_equal(c.flags, a.flags);
    assert_int_equal(c.version, 0);
    /* in place */
    ctx_wire_traceparent_t d = c;
    ASSERT_RC(ctx_wire_traceparent_child(&d, &d), 0);
    assert_memory_equal(d.trace_id, a.trace_id, 16);
    assert_memory_not_equal(d.parent_id, c.parent_id, 8);
    ASSERT_RC(ctx_wire_traceparent_new(0, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_traceparent_child(NULL, &d), CTX_EINVAL);
}

static void test_many_ids_distinct(void **state) {
    (void)state;
    /* 1000 parent-ids: no zero, no repeat of the previous one */
    ctx_wire_traceparent_t a, prev;
    ASSERT_RC(ctx_wire_traceparent_new(0, &prev), 0);
    for (int i = 0; i < 1000; i++) {
        ASSERT_RC(ctx_wire_traceparent_child(&prev, &a), 0);
        uint8_t zero[8] = {0};
        assert_memory_not_equal(a.parent_id, zero, 8);
        assert_memory_not_equal(a.parent_id, prev.parent_id, 8);
        prev = a;
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),     cmocka_unit_test(test_whitespace_around_value),
        cmocka_unit_test(test_invalid_values),    cmocka_unit_test(test_future_versions),
        cmocka_unit_test(test_flags), cmocka_unit_test(test_span_id),        cmocka_unit_test(test_format_errors),
        cmocka_unit_test(test_new_and_child),     cmocka_unit_test(test_many_ids_distinct),
        cmocka_unit_test(test_every_byte_at_every_position),
        cmocka_unit_test(test_random_ids_against_reference),
    };
    return cmocka_run_group_tests_name("wire_traceparent", tests, NULL, NULL);
}
