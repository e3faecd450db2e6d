/* SPDX-License-Identifier: MIT */
/*
 * test_baggage.c — W3C Baggage: the specification's examples, OWS, keys,
 * values, properties, percent-decoding (with U+FFFD for broken UTF-8) and
 * -encoding, which member a malformed input drops, the 64-member and
 * 8192-byte limits (exactly at and one past), hostile sizes, the writer and
 * its limits, and round trips.
 */
#include "wire_test.h"

typedef struct got {
    int n;
    char key[80][64];
    char value[80][256];
    size_t value_len[80];
    char props[80][128];
    size_t props_len[80];
} got_t;

static int collect(const ctx_wire_baggage_member_t *m, void *user) {
    got_t *g = user;
    if (g->n >= 80)
        return 0;
    snprintf(g->key[g->n], sizeof g->key[0], "%.*s", (int)m->key_len, m->key);
    size_t vn = m->value_len < 255 ? m->value_len : 255;
    memcpy(g->value[g->n], m->value, vn);
    g->value[g->n][vn] = '\0';
    g->value_len[g->n] = m->value_len;
    g->props_len[g->n] = m->properties_len;
    assert_int_equal(m->value[m->value_len], '\0');
    if (m->properties)
        snprintf(g->props[g->n], sizeof g->props[0], "%.*s", (int)m->properties_len, m->properties);
    else
        g->props[g->n][0] = '\0';
    g->n++;
    return 0;
}

static got_t g;
static ctx_wire_baggage_stats_t st;

static int parse(const char *text) {
    memset(&g, 0, sizeof g);
    st = CTX_STRUCT_INIT(ctx_wire_baggage_stats_t);
    return ctx_wire_baggage_parse(text, strlen(text), collect, &g, &st);
}

static void test_spec_examples(void **state) {
    (void)state;
    assert_int_equal(parse("userId=alice,serverNode=DF%2028,isProduction=false"), 3);
    assert_string_equal(g.key[0], "userId");
    assert_string_equal(g.value[0], "alice");
    assert_string_equal(g.key[1], "serverNode");
    assert_string_equal(g.value[1], "DF 28");
    assert_string_equal(g.value[2], "false");
    assert_int_equal(parse("userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false"), 3);
    assert_string_equal(g.value[0], "Am\xc3\xa9lie");
    assert_int_equal(
        parse("key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"), 3);
    assert_string_equal(g.key[0], "key1");
    assert_string_equal(g.value[0], "value1");
    assert_string_equal(g.props[0], "property1;property2");
    assert_string_equal(g.key[1], "key2");
    assert_string_equal(g.value[1], "value2");
    assert_string_equal(g.props[1], "");
    assert_string_equal(g.props[2], "propertyKey=propertyValue");
    assert_int_equal(st.malformed, 0);
}

static void test_whitespace(void **state) {
    (void)state;
    assert_int_equal(parse(" \tk1 \t= \tv1 \t, k2=v2\t;\tp1 = x ; p2 "), 2);
    assert_string_equal(g.value[0], "v1");
    assert_string_equal(g.props[1], "p1 = x ; p2");
    /* whitespace inside a value is not allowed: that member is dropped */
    assert_int_equal(parse("a=one two,b=2"), 1);
    assert_string_equal(g.key[0], "b");
    assert_int_equal(st.malformed, 1);
}

static void test_values(void **state) {
    (void)state;
    /* empty value is allowed by the grammar */
    assert_int_equal(parse("k="), 1);
    assert_int_equal(g.value_len[0], 0);
    /* '=' is a baggage-octet (%x3C-5B) */
    assert_int_equal(parse("k=="), 1);
    assert_string_equal(g.value[0], "=");
    /* every baggage-octet passes through */
    assert_int_equal(parse("k=!#$&'()*+-./0:<=>?@AZ[]^_`az{|}~"), 1);
    assert_string_equal(g.value[0], "!#$&'()*+-./0:<=>?@AZ[]^_`az{|}~");
    /* escapes, both cases of hex */
    assert_int_equal(parse("k=%41%2c%2C%3B%25%e2%82%ac"), 1);
    assert_string_equal(g.value[0], "A,,;%\xe2\x82\xac");
    /* %00 yields a NUL inside the value */
    assert_int_equal(parse("k=a%00b"), 1);
    assert_int_equal(g.value_len[0], 3);
    assert_memory_equal(g.value[0], "a\0b", 3);
}

/* Values of every length from 0 to 40 bytes, each byte different (a plain
 * value is copied in words of 8, 4 or 2 bytes from both ends up to 16
 * bytes), alone at the end of a heap block of exactly its size (ASan: no
 * read past the text) and in a list: delivered whole, NUL terminated. */
static void test_value_lengths(void **state) {
    (void)state;
    for (size_t len = 0; len <= 40; len++) {
        char value[41];
        for (size_t i = 0; i < len; i++)
            value[i] = (char)('A' + i % 26 + (i / 26) * 6); /* letters, then a-n */
        value[len] = '\0';
        size_t n = 2 + len;
        char *text = malloc(n);
        assert_non_null(text);
        memcpy(text, "k=", 2);
        memcpy(text + 2, value, len);
        memset(&g, 0, sizeof g);
        ASSERT_RC(ctx_wire_baggage_parse(text, n, collect, &g, NULL), 1);
        assert_int_equal(g.value_len[0], len);
        assert_string_equal(g.value[0], value);
        free(text);
        char list[128];
        snprintf(list, sizeof list, "a=1,k=%s,z=%s", value, value);
        ASSERT_RC(parse(list), 3);
        assert_string_equal(g.value[1], value);
        assert_string_equal(g.value[2], value);
        assert_int_equal(g.value_len[1], len);
    }
}

/* Keys and values of 1 to 13 bytes, the value with one "%41" escape at
 * each place or none, ended by each thing that can end them (the end of
 * the text, ',', OWS, ';' and a property, a byte that is no
 * baggage-octet): runs are read four bytes at a time and their end found
 * inside the four or in the bytes past the last four, so every length and
 * every place of the escape and of the end is its own case. */
static void test_runs_end_anywhere(void **state) {
    (void)state;
    static const char *const ends[] = {"", ",b=2", " ,b=2", ";p=1,b=2", "\"x,b=2"};
    for (size_t kl = 1; kl <= 13; kl++)
        for (size_t vl = 1; vl <= 13; vl++)
            for (size_t esc = 0; esc <= vl; esc++) /* esc == vl: no escape */
                for (size_t e = 0; e < sizeof ends / sizeof *ends; e++) {
                    char key[16], raw[32], want[16], text[80];
                    size_t r = 0;
                    for (size_t i = 0; i < kl; i++)
                        key[i] = (char)('a' + i);
                    key[kl] = '\0';
                    for (size_t i = 0; i < vl; i++) {
                        want[i] = i == esc ? 'A' : (char)('m' + i);
                        if (i == esc)
                            memcpy(raw + r, "%41", 3), r += 3;
                        else
                            raw[r++] = want[i];
                    }
                    want[vl] = raw[r] = '\0';
                    snprintf(text, sizeof text, "%s=%s%s", key, raw, ends[e]);
                    memset(&g, 0, sizeof g);
                    int rc = ctx_wire_baggage_parse(text, strlen(text), collect, &g, NULL);
                    if (e == 4) { /* the first member is malformed, alone */
                        ASSERT_RC(rc, 1);
                        assert_string_equal(g.key[0], "b");
                        continue;
                    }
                    ASSERT_RC(rc, e == 0 ? 1 : 2);
                    assert_string_equal(g.key[0], key);
                    assert_int_equal(g.value_len[0], vl);
                    assert_string_equal(g.value[0], want);
                    assert_int_equal(g.props_len[0], e == 3 ? 3 : 0);
                    /* the value cut inside its escape: the member is dropped */
                    for (size_t cut = 1; cut <= 2 && esc < vl; cut++) {
                        snprintf(text, sizeof text, "%s=%.*s%s", key, (int)(esc + cut), raw, ends[e]);
                        memset(&g, 0, sizeof g);
                        rc = ctx_wire_baggage_parse(text, strlen(text), collect, &g, NULL);
                        ASSERT_RC(rc, e == 0 ? 0 : 1);
                    }
                }
}

static void test_utf8_replacement(void **state) {
    (void)state;
#define FFFD "\xef\xbf\xbd"
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"k=%FF", FFFD},
        {"k=%C3", FFFD},                        /* truncated */
        {"k=%C3A", FFFD "A"},                   /* interrupted */
        {"k=%C0%80", FFFD FFFD},                /* overlong: C0 never starts */
        {"k=%E0%80%80", FFFD FFFD FFFD},        /* overlong 3-byte */
        {"k=%ED%A0%80", FFFD FFFD FFFD},        /* surrogate */
        {"k=%F4%90%80%80", FFFD FFFD FFFD FFFD}, /* past U+10FFFF */
        {"k=%E2%82", FFFD},                     /* maximal subpart: one */
        {"k=%E2%82x%AC", FFFD "x" FFFD},
        {"k=%F0%9F%98%80", "\xf0\x9f\x98\x80"}, /* valid 4-byte */
        {"k=%DF%BF", "\xdf\xbf"},
        {"k=%80", FFFD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(parse(cases[i].in), 1);
        if (strcmp(g.value[0], cases[i].out) != 0)
            fail_msg("%s decoded wrongly", cases[i].in);
    }
#undef FFFD
}

static void test_malformed_members_dropped_alone(void **state) {
    (void)state;
    static const char *bad[] = {
        "=v", "k", "k v=1", "k=\"q\"", "k=a\\b", "k=%", "k=%4", "k=%zz", "k=v;", "k=v;;p",
        "k=v; =x", "k=v;p=\"", "k=v;p=%", "k(=v", "k=v w", "k=v\x01", "k=caf\xc3\xa9", "",
        "  ", "k=v;p q",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "a=1,%s,b=2", bad[i]);
        int n = parse(text);
        if (n != 2 || st.malformed != 1)
            fail_msg("'%s': kept %d, malformed %zu", bad[i], n, st.malformed);
        assert_string_equal(g.key[0], "a");
        assert_string_equal(g.key[1], "b");
    }
    /* a header of only bad members keeps nothing and never fails */
    assert_int_equal(parse(",,,=,;,%"), 0);
    assert_int_equal(st.malformed, 6);
}

static char *list_of(int members, size_t *len) {
    char *s = malloc((size_t)members * 16 + 1);
    size_t w = 0;
    for (int i = 0; i < members; i++)
        w += (size_t)sprintf(s + w, "%sk%d=v", i ? "," : "", i);
    *len = w;
    return s;
}

static void test_member_limit(void **state) {
    (void)state;
    size_t len;
    char *s = list_of(64, &len);
    memset(&g, 0, sizeof g);
    st = CTX_STRUCT_INIT(ctx_wire_baggage_stats_t);
    assert_int_equal(ctx_wire_baggage_parse(s, len, collect, &g, &st), 64);
    assert_int_equal(st.over_limit, 0);
    free(s);
    s = list_of(70, &len);
    memset(&g, 0, sizeof g);
    assert_int_equal(ctx_wire_baggage_parse(s, len, collect, &g, &st), 64);
    assert_int_equal(st.over_limit, 6);
    assert_string_equal(g.key[63], "k63"); /* the first 64 are kept */
    free(s);
}

/* A list of exactly `total` bytes: "a=xxx...". */
static char *list_bytes(size_t total, const char *suffix) {
    size_t extra = strlen(suffix);
    char *s = malloc(total + extra + 1);
    memcpy(s, "a=", 2);
    memset(s + 2, 'x', total - 2);
    memcpy(s + total, suffix, extra + 1);
    return s;
}

static void test_byte_limit(void **state) {
    (void)state;
    char *s = list_bytes(8192, "");
    assert_int_equal(parse(s), 1);
    assert_int_equal(st.truncated, 0);
    free(s);
    /* one byte more: re-sent it would not fit, dropped */
    s = list_bytes(8193, "");
    assert_int_equal(parse(s), 0);
    assert_int_equal(st.over_limit, 1);
    assert_int_equal(st.truncated, 0);
    free(s);
    /* a member of exactly 8192 bytes, one more after it: that one is dropped */
    s = list_bytes(8192, ",b=1");
    assert_int_equal(parse(s), 1);
    assert_int_equal(st.over_limit, 1);
    assert_string_equal(g.key[0], "a");
    free(s);
    /* a small member, a big one, then one crossing the limit */
    s = list_bytes(8000, "");
    char *t = malloc(8300);
    snprintf(t, 8300, "b=1,%s", s);
    assert_int_equal(parse(t), 2);
    snprintf(t, 8300, "b=1,%s,c=%0200d", s, 0);
    assert_int_equal(parse(t), 2);
    assert_int_equal(st.over_limit, 1);
    assert_int_equal(st.truncated, 0);
    free(s);
    free(t);
}

/* The limits apply to the list as it would be sent on: input
 * whitespace, malformed members and escapes that re-encode shorter do not
 * count; a member that does not fit is dropped and later ones still may. */
static void test_limits_on_sent_form(void **state) {
    (void)state;
    /* `a=1` + 8190 spaces + `,b=2`: both kept */
    char *s = malloc(3 + 8190 + 4 + 1);
    memcpy(s, "a=1", 3);
    memset(s + 3, ' ', 8190);
    memcpy(s + 3 + 8190, ",b=2", 5);
    assert_int_equal(parse(s), 2);
    assert_string_equal(g.key[1], "b");
    assert_int_equal(st.over_limit, 0);
    free(s);
    /* whitespace around every member, 10 KiB of input for 7 bytes sent */
    s = malloc(12000);
    size_t w = 0;
    for (int i = 0; i < 3; i++) {
        memset(s + w, '\t', 3000);
        w += 3000;
        w += (size_t)sprintf(s + w, "%sk%d=v", i ? "," : "", i);
    }
    s[w] = '\0';
    assert_int_equal(parse(s), 3);
    free(s);
    /* malformed members in between cost nothing */
    s = malloc(9000);
    w = (size_t)sprintf(s, "a=1,");
    memset(s + w, 'x', 8500); /* "xxx…": no '=', malformed */
    w += 8500;
    strcpy(s + w, ",b=2");
    assert_int_equal(parse(s), 2);
    assert_int_equal(st.malformed, 1);
    free(s);
    /* 3000 escapes "%41" (9000 bytes) re-encode as 3000 "A": kept */
    s = malloc(9100);
    w = (size_t)sprintf(s, "k=");
    for (int i = 0; i < 3000; i++)
        w += (size_t)sprintf(s + w, "%%41");
    assert_int_equal(parse(s), 1);
    assert_int_equal(g.value_len[0], 3000);
    free(s);
    /* a value that re-encodes longer: 3000 spaces as "%20" need 9000 bytes */
    s = malloc(9200);
    w = (size_t)sprintf(s, "k=");
    for (int i = 0; i < 3000; i++)
        w += (size_t)sprintf(s + w, "%%20");
    assert_int_equal(parse(s), 0); /* sent on it would be 2 + 9000 bytes */
    assert_int_equal(st.over_limit, 1);
    free(s);
    /* greedy: a (8187 bytes) kept, b (101) does not fit, c (3) still does */
    s = malloc(8400);
    w = (size_t)sprintf(s, "a=");
    memset(s + w, 'x', 8185);
    w += 8185;
    w += (size_t)sprintf(s + w, ",b=%099d,c=1", 0);
    assert_int_equal(parse(s), 2);
    assert_string_equal(g.key[0], "a");
    assert_string_equal(g.key[1], "c");
    assert_int_equal(st.over_limit, 1);
    free(s);
    /* properties count as sent */
    s = malloc(8400);
    w = (size_t)sprintf(s, "a=1;");
    memset(s + w, 'p', 8188); /* 4 + 8188 = 8192: fits exactly */
    w += 8188;
    strcpy(s + w, ",b=2");
    assert_int_equal(parse(s), 1);
    assert_int_equal(g.props_len[0], 8188);
    assert_int_equal(st.over_limit, 1);
    free(s);
}

static void test_input_bound(void **state) {
    (void)state;
    /* past CTX_WIRE_BAGGAGE_MAX_INPUT bytes of input nothing is examined */
    size_t n = CTX_WIRE_BAGGAGE_MAX_INPUT + 100;
    char *s = malloc(n + 8);
    memcpy(s, "a=1,", 4);
    memset(s + 4, ' ', n - 4);
    strcpy(s + n, ",b=2");
    assert_int_equal(parse(s), 1);
    assert_int_equal(st.truncated, 1);
    assert_int_equal(st.over_limit, 0); /* the cut piece was only spaces */
    /* a member cut by the bound is dropped */
    memcpy(s + CTX_WIRE_BAGGAGE_MAX_INPUT - 2, "c=", 2);
    assert_int_equal(parse(s), 1);
    assert_int_equal(st.over_limit, 1);
    assert_int_equal(st.truncated, 1);
    /* one ending exactly at the bound, a comma after it: kept */
    memset(s + 4, ' ', n - 4);
    strcpy(s + n, ",b=2");
    memcpy(s + CTX_WIRE_BAGGAGE_MAX_INPUT - 3, "c=3,", 4);
    assert_int_equal(parse(s), 2);
    assert_string_equal(g.key[1], "c");
    assert_int_equal(st.truncated, 1);
    free(s);
}

static void test_hostile_size(void **state) {
    (void)state;
    /* 4 MiB of commas and members: only the first 64 KiB are looked at */
    size_t n = 4u << 20;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i += 4)
        memcpy(s + i, "k=v,", 4);
    memset(&g, 0, sizeof g);
    st = CTX_STRUCT_INIT(ctx_wire_baggage_stats_t);
    assert_int_equal(ctx_wire_baggage_parse(s, n, NULL, NULL, &st), 64);
    assert_true(st.over_limit > 0);
    assert_true(st.over_limit <= CTX_WIRE_BAGGAGE_MAX_INPUT / 4);
    assert_int_equal(st.truncated, 1);
    free(s);
}

/* The stats struct follows the growth rule: a smaller one is written only
 * as far as its size (ASan checks), a NULL-sized one is refused. */
static void test_stats_growth(void **state) {
    (void)state;
    struct {
        size_t size;
        size_t members;
    } small = {sizeof small, 0};
    unsigned char *heap = malloc(sizeof small); /* exactly: past it ASan stops */
    memcpy(heap, &small, sizeof small);
    assert_int_equal(ctx_wire_baggage_parse(S("a=1,b=2,,"), NULL, NULL, (ctx_wire_baggage_stats_t *)heap), 2);
    memcpy(&small, heap, sizeof small);
    assert_int_equal(small.size, sizeof small);
    assert_int_equal(small.members, 2);
    free(heap);
    ctx_wire_baggage_stats_t zero = {0};
    ASSERT_RC(ctx_wire_baggage_parse(S("a=1"), NULL, NULL, &zero), CTX_EINVAL);
    /* larger than this header's: the tail is left alone */
    struct {
        ctx_wire_baggage_stats_t st;
        size_t later;
    } big = {CTX_STRUCT_INIT(ctx_wire_baggage_stats_t), 77};
    big.st.size = sizeof big;
    assert_int_equal(ctx_wire_baggage_parse(S("a=1,,"), NULL, NULL, &big.st), 1);
    assert_int_equal(big.st.size, sizeof big);
    assert_int_equal(big.st.malformed, 2);
    assert_int_equal(big.later, 77);
}

static int stop_at_two(const ctx_wire_baggage_member_t *m, void *user) {
    (void)m;
    return ++*(int *)user == 2 ? 7 : 0;
}

static int fail_at_two(const ctx_wire_baggage_member_t *m, void *user) {
    (void)m;
    return ++*(int *)user == 2 ? CTX_ENOMEM : 0;
}

static void test_callback_stops(void **state) {
    (void)state;
    /* a positive result stops the walk and is CTX_ECALLBACK, not a count */
    int calls = 0;
    ctx_wire_baggage_stats_t stats = CTX_STRUCT_INIT(ctx_wire_baggage_stats_t);
    ASSERT_RC(ctx_wire_baggage_parse(S("a=1,b=2,c=3"), stop_at_two, &calls, &stats), CTX_ECALLBACK);
    assert_int_equal(calls, 2);
    assert_int_equal(stats.members, 2);
    /* a negative one stops it and is returned as is */
    calls = 0;
    ASSERT_RC(ctx_wire_baggage_parse(S("a=1,b=2,c=3"), fail_at_two, &calls, NULL), CTX_ENOMEM);
    assert_int_equal(calls, 2);
    assert_int_equal(ctx_wire_baggage_parse(NULL, 0, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_wire_baggage_parse(NULL, 1, NULL, NULL, NULL), CTX_EINVAL);
}

static void test_keys(void **state) {
    (void)state;
    assert_true(ctx_wire_baggage_key_valid(S("userId")));
    assert_true(ctx_wire_baggage_key_valid(S("!#$%&'*+-.^_`|~09AZaz")));
    assert_false(ctx_wire_baggage_key_valid(S("")));
    assert_false(ctx_wire_baggage_key_valid(S("a b")));
    assert_false(ctx_wire_baggage_key_valid(S("a=b")));
    assert_false(ctx_wire_baggage_key_valid(S("a,b")));
    assert_false(ctx_wire_baggage_key_valid(S("a;b")));
    assert_false(ctx_wire_baggage_key_valid(S("a\"")));
    assert_false(ctx_wire_baggage_key_valid(S("a(")));
}

static void test_percent_functions(void **state) {
    (void)state;
    char buf[64];
    size_t n;
    ASSERT_RC(ctx_wire_baggage_percent_encode(S("DF 28,%;\"\\\x7f\xc3\xa9"), buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "DF%2028%2C%25%3B%22%5C%7F%C3%A9");
    assert_int_equal(n, strlen(buf));
    ASSERT_RC(ctx_wire_baggage_percent_encode(S("  "), buf, 6, &n), CTX_ETRUNCATED);
    ASSERT_RC(ctx_wire_baggage_percent_encode(S("  "), buf, 7, &n), 0);
    ASSERT_RC(ctx_wire_baggage_percent_decode(S("DF%2028%2C%25%3B%22%5C%7F%C3%A9"), buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "DF 28,%;\"\\\x7f\xc3\xa9");
    ASSERT_RC(ctx_wire_baggage_percent_decode(S("a b"), buf, sizeof buf, &n), CTX_EPARSE);
    ASSERT_RC(ctx_wire_baggage_percent_decode(S("a%2"), buf, sizeof buf, &n), CTX_EPARSE);
    ASSERT_RC(ctx_wire_baggage_percent_decode(S("abc"), buf, 3, &n), CTX_ETRUNCATED);
    ASSERT_RC(ctx_wire_baggage_percent_decode(S("abc"), buf, 4, &n), 0);
    ASSERT_RC(ctx_wire_baggage_percent_decode(NULL, 1, buf, 4, &n), CTX_EINVAL);
}

static void test_writer(void **state) {
    (void)state;
    char buf[256];
    ctx_wire_baggage_writer_t w;
    ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
    assert_string_equal(buf, "");
    ASSERT_RC(ctx_wire_baggage_append(&w, S("userId"), S("alice"), NULL, 0), 0);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("serverNode"), S("DF 28"), S("region=eu;internal")), 0);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("empty"), "", 0, NULL, 0), 0);
    assert_string_equal(buf, "userId=alice,serverNode=DF%2028;region=eu;internal,empty=");
    /* errors append nothing */
    ASSERT_RC(ctx_wire_baggage_append(&w, S("bad key"), S("x"), NULL, 0), CTX_EINVAL);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("k"), S("x"), S(";;")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("k"), S("x"), S("p=\"")), CTX_EINVAL);
    ASSERT_RC(ctx_wire_baggage_append(NULL, S("k"), S("x"), NULL, 0), CTX_EINVAL);
    char small[8];
    ctx_wire_baggage_writer_init(&w, small, sizeof small);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("k"), S("12345"), NULL, 0), 0); /* "k=12345" = 7 + NUL */
    ASSERT_RC(ctx_wire_baggage_append(&w, S("k"), S("1"), NULL, 0), CTX_ETRUNCATED);
    assert_string_equal(small, "k=12345");
    /* the writer output parses back */
    assert_int_equal(parse("userId=alice,serverNode=DF%2028;region=eu;internal,empty="), 3);
}

static void test_writer_limits(void **state) {
    (void)state;
    static char buf[CTX_WIRE_BAGGAGE_MAX_BYTES * 2];
    ctx_wire_baggage_writer_t w;
    ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
    for (int i = 0; i < 64; i++) {
        char k[8];
        int kn = snprintf(k, sizeof k, "k%d", i);
        ASSERT_RC(ctx_wire_baggage_append(&w, k, (size_t)kn, S("v"), NULL, 0), 0);
    }
    ASSERT_RC(ctx_wire_baggage_append(&w, S("x"), S("v"), NULL, 0), CTX_ELIMIT);
    /* bytes: exactly 8192 fits, one more does not */
    static char big[CTX_WIRE_BAGGAGE_MAX_BYTES];
    memset(big, 'x', sizeof big);
    ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("a"), big, CTX_WIRE_BAGGAGE_MAX_BYTES - 1, NULL, 0), CTX_ELIMIT);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("a"), big, CTX_WIRE_BAGGAGE_MAX_BYTES - 2, NULL, 0), 0);
    assert_int_equal(w.len, CTX_WIRE_BAGGAGE_MAX_BYTES);
    assert_int_equal(parse(buf), 1);
    /* encoding counts: 2731 spaces are 8193 encoded bytes with "a=" */
    ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
    memset(big, ' ', sizeof big);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("a"), big, 2730, NULL, 0), 0);
    ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
    ASSERT_RC(ctx_wire_baggage_append(&w, S("a"), big, 2731, NULL, 0), CTX_ELIMIT);
}

static void test_round_trip(void **state) {
    (void)state;
    static const char *values[] = {
        "", "plain", "with space", "comma,semi;eq=pct%quote\"back\\", "tab\there",
        "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "%41 is not A", "\x01\x7f",
    };
    char buf[1024];
    ctx_wire_baggage_writer_t w;
    ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char k[8];
        int kn = snprintf(k, sizeof k, "k%zu", i);
        ASSERT_RC(ctx_wire_baggage_append(&w, k, (size_t)kn, values[i], strlen(values[i]), NULL, 0), 0);
    }
    assert_int_equal(parse(buf), (int)(sizeof values / sizeof values[0]));
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        assert_string_equal(g.value[i], values[i]);
    /* random valid-UTF-8 values survive */
    ctx_test_rng_t rng;
    uint64_t seed = ctx_test_seed(12345);
    ctx_test_rng_seed(&rng, seed);
    for (int round = 0; round < SCALED(500, 50, 100); round++) {
        char v[64];
        size_t vn = ctx_test_rng_below(&rng, sizeof v);
        for (size_t j = 0; j < vn; j++)
            v[j] = (char)(ctx_test_rng_below(&rng, 127) + 1); /* ASCII 1..127 */
        ctx_wire_baggage_writer_init(&w, buf, sizeof buf);
        ASSERT_RC(ctx_wire_baggage_append(&w, S("r"), v, vn, NULL, 0), 0);
        assert_int_equal(parse(buf), 1);
        if (g.value_len[0] != vn || memcmp(g.value[0], v, vn) != 0)
            fail_msg("round trip failed (seed %llu, round %d)", (unsigned long long)seed, round);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_utf8_replacement),
        cmocka_unit_test(test_malformed_members_dropped_alone),
        cmocka_unit_test(test_member_limit),
        cmocka_unit_test(test_byte_limit),
        cmocka_unit_test(test_limits_on_sent_form),
        cmocka_unit_test(test_input_bound),
        cmocka_unit_test(test_hostile_size),
        cmocka_unit_test(test_stats_growth),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_percent_functions),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_writer_limits),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_value_lengths),
        cmocka_unit_test(test_runs_end_anywhere),
    };
    return cmocka_run_group_tests_name("wire_baggage", tests, NULL, NULL);
}
