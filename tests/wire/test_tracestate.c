/* SPDX-License-Identifier: MIT */
/*
 * test_tracestate.c — W3C Trace Context `tracestate`: the specification's
 * examples, the Level 2 key grammar (every length bound, '@' anywhere), the
 * value grammar, 32 members, duplicates (the first kept), empty members and
 * OWS, several headers joined, normal form, lookup and the update rule;
 * and every tracestate case of the W3C test suite (test/test.py of
 * w3c/trace-context, STRICT_LEVEL 2) re-expressed on the codec.
 */
#include "wire_test.h"

static int count(const char *text) { return ctx_wire_tracestate_parse(text, strlen(text), NULL, NULL); }

static char *repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_spec_examples(void **state) {
    (void)state;
    assert_int_equal(count("congo=t61rcWkgMzE"), 1);
    assert_int_equal(count("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), 2);
    assert_int_equal(count("rojo=00f067aa0ba902b7"), 1);
    /* multi-tenant key */
    assert_int_equal(count("fw529a3039@dt=YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo"), 1);
    /* ... the update example of §3.5: congo moves to the front */
    char buf[CTX_WIRE_TRACESTATE_MAX_LEN + 1];
    size_t n;
    ASSERT_RC(ctx_wire_tracestate_put(S("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), "congo", "ucfJifl5GOE",
                                  buf, sizeof buf, &n),
              0);
    assert_string_equal(buf, "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7");
    assert_int_equal(n, strlen(buf));
}

static void test_keys(void **state) {
    (void)state;
    /* Level 2: key = ( lcalpha / DIGIT ) 0*255( keychar ), keychar with '@' */
    static const char *good[] = {"a", "z", "0", "9abc", "a0_-*/", "abc*def/ghi", "0tenant@sys",
                                 "tenant@s", "a@b", "t_-*/0@s_-*/0", "foo@", "foo@@bar",
                                 "foo@bar@baz", "tenant@0sys", "a@b@c", "a@"};
    static const char *bad[] = {"", "A", "Abc", "aBc", "_a", "-t@s", "*a", "/a", "@foo", "@",
                                "a.b", "a b", "a=b", "tenant@Sys", "te nant@s", "Tenant@s",
                                "a\x01", "a\x80"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!ctx_wire_tracestate_key_valid(good[i], strlen(good[i])))
            fail_msg("key '%s' should be valid", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ctx_wire_tracestate_key_valid(bad[i], strlen(bad[i])))
            fail_msg("key '%s' should be invalid", bad[i]);
    /* lengths: up to 256 characters, wherever the '@' is */
    char *k = repeat('k', 257);
    assert_true(ctx_wire_tracestate_key_valid(k, 256));
    assert_false(ctx_wire_tracestate_key_valid(k, 257));
    char mt[300];
    memset(mt, 't', 241); /* Level 1's longest multi-tenant key */
    mt[241] = '@';
    memset(mt + 242, 's', 15);
    assert_true(ctx_wire_tracestate_key_valid(mt, 256));
    assert_false(ctx_wire_tracestate_key_valid(mt, 257));
    memset(mt, 't', 242); /* a 242-character tenant: Level 1 refused it */
    mt[242] = '@';
    memset(mt + 243, 's', 3);
    assert_true(ctx_wire_tracestate_key_valid(mt, 246));
    /* a 15-character system: Level 1 refused it */
    assert_true(ctx_wire_tracestate_key_valid(S("t@vvvvvvvvvvvvvvv")));
    free(k);
}

static void test_values(void **state) {
    (void)state;
    assert_true(ctx_wire_tracestate_value_valid(S("x")));
    assert_true(ctx_wire_tracestate_value_valid(S(" leading space is a chr")));
    assert_true(ctx_wire_tracestate_value_valid(S("!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~")));
    assert_false(ctx_wire_tracestate_value_valid(S("")));
    assert_false(ctx_wire_tracestate_value_valid(S("trailing ")));
    assert_false(ctx_wire_tracestate_value_valid(S("a,b")));
    assert_false(ctx_wire_tracestate_value_valid(S("a=b")));
    assert_false(ctx_wire_tracestate_value_valid(S("tab\tinside")));
    assert_false(ctx_wire_tracestate_value_valid(S("del\x7f")));
    assert_false(ctx_wire_tracestate_value_valid(S("caf\xc3\xa9")));
    char *v = repeat('v', 257);
    assert_true(ctx_wire_tracestate_value_valid(v, 256));
    assert_false(ctx_wire_tracestate_value_valid(v, 257));
    free(v);
}

static void test_list_grammar(void **state) {
    (void)state;
    /* empty and whitespace-only members are allowed and not counted */
    assert_int_equal(count(""), 0);
    assert_int_equal(count("   "), 0);
    assert_int_equal(count(",,,"), 0);
    assert_int_equal(count("a=1 , ,\t,b=2,"), 2);
    assert_int_equal(count(" a=1\t"), 1);
    /* malformed members reject the whole list */
    ASSERT_RC(count("a=1,b"), CTX_EPARSE);
    ASSERT_RC(count("a=1,=2"), CTX_EPARSE);
    ASSERT_RC(count("a=1,B=2"), CTX_EPARSE);
    ASSERT_RC(count("a =1"), CTX_EPARSE);
    ASSERT_RC(count("a=1=2"), CTX_EPARSE);
    ASSERT_RC(count("a="), CTX_EPARSE);
    ASSERT_RC(count("a=1;b:2"), 1); /* ";" and ":" are value characters */
    ASSERT_RC(count("a=x=="), CTX_EPARSE); /* "=" is not (so no base64 padding) */
    /* a repeated key: only its first member is delivered, the list is kept */
    assert_int_equal(count("a=1,b=2,a=3"), 2);
    assert_int_equal(count("t@s=1,t@s=2"), 1);
    assert_int_equal(count("foo=1,foo=1"), 1);
    assert_int_equal(count("t@s=1,t@x=2,s=3"), 3);
    /* ... but still counts against the 32 members of the raw list */
}

static void test_32_members(void **state) {
    (void)state;
    char list[32 * 16 + 64] = "";
    for (int i = 0; i < 32; i++) {
        char m[16];
        snprintf(m, sizeof m, "%sk%d=v", i ? "," : "", i);
        strcat(list, m);
    }
    assert_int_equal(count(list), 32);
    char more[sizeof list + 16];
    snprintf(more, sizeof more, "%s,x=1", list);
    ASSERT_RC(count(more), CTX_ELIMIT);
    /* empty members do not count against the limit */
    snprintf(more, sizeof more, ",,%s,,", list);
    assert_int_equal(count(more), 32);
    /* putting a 33rd drops the rightmost */
    char buf[CTX_WIRE_TRACESTATE_MAX_LEN + 1];
    ASSERT_RC(ctx_wire_tracestate_put(list, strlen(list), "new", "1", buf, sizeof buf, NULL), 0);
    assert_int_equal(count(buf), 32);
    assert_memory_equal(buf, "new=1,k0=v,", 11);
    assert_null(strstr(buf, "k31=v"));
    assert_non_null(strstr(buf, "k30=v"));
    /* updating an existing key keeps 32 */
    ASSERT_RC(ctx_wire_tracestate_put(list, strlen(list), "k31", "w", buf, sizeof buf, NULL), 0);
    assert_int_equal(count(buf), 32);
    assert_memory_equal(buf, "k31=w,k0=v", 10);
}

static void test_input_limit(void **state) {
    (void)state;
    char *big = repeat(' ', CTX_WIRE_TRACESTATE_MAX_INPUT + 1);
    ASSERT_RC(ctx_wire_tracestate_parse(big, CTX_WIRE_TRACESTATE_MAX_INPUT, NULL, NULL), 0);
    ASSERT_RC(ctx_wire_tracestate_parse(big, CTX_WIRE_TRACESTATE_MAX_INPUT + 1, NULL, NULL), CTX_ELIMIT);
    free(big);
}

static void test_longest_list_normalises(void **state) {
    (void)state;
    /* 32 members of 256-char keys and values: the longest normal form */
    size_t cap = CTX_WIRE_TRACESTATE_MAX_LEN + 1;
    char *in = malloc(cap + 64);
    size_t w = 0;
    for (int i = 0; i < 32; i++) {
        if (i)
            in[w++] = ',';
        memset(in + w, 'k', 256);
        in[w] = (char)('a' + i % 26);
        in[w + 1] = (char)('a' + i / 26);
        w += 256;
        in[w++] = '=';
        memset(in + w, 'v', 256);
        w += 256;
    }
    assert_int_equal(w, CTX_WIRE_TRACESTATE_MAX_LEN);
    char *out = malloc(cap);
    size_t n = 0;
    ASSERT_RC(ctx_wire_tracestate_normalize(in, w, out, cap, &n), 0);
    assert_int_equal(n, w);
    assert_memory_equal(in, out, w);
    ASSERT_RC(ctx_wire_tracestate_normalize(in, w, out, cap - 1, &n), CTX_ETRUNCATED);
    assert_int_equal(out[0], '\0');
    free(in);
    free(out);
}

static void test_normalize(void **state) {
    (void)state;
    char buf[128];
    size_t n;
    ASSERT_RC(ctx_wire_tracestate_normalize(S(" , a=1 ,\tb=x y ,, c@d=3,"), buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "a=1,b=x y,c@d=3");
    assert_int_equal(n, 15);
    ASSERT_RC(ctx_wire_tracestate_normalize(S("a=1,b=2,a=3"), buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "a=1,b=2"); /* the first member of a key wins */
    ASSERT_RC(ctx_wire_tracestate_normalize(S("a=1,b=2"), buf, 5, &n), CTX_ETRUNCATED);
    ASSERT_RC(ctx_wire_tracestate_normalize(S(""), buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "");
}

static void test_get(void **state) {
    (void)state;
    const char *v;
    size_t n;
    ASSERT_RC(ctx_wire_tracestate_get(S("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), "congo", &v, &n), 0);
    assert_int_equal(n, 11);
    assert_memory_equal(v, "t61rcWkgMzE", 11);
    ASSERT_RC(ctx_wire_tracestate_get(S("rojo=1"), "roj", &v, &n), CTX_ENOTFOUND);
    ASSERT_RC(ctx_wire_tracestate_get(S("rojo=1,rojo=2"), "rojo", &v, &n), 0);
    assert_memory_equal(v, "1", n); /* the first member */
    ASSERT_RC(ctx_wire_tracestate_get(S("rojo=1"), NULL, &v, &n), CTX_EINVAL);
}

static void test_put(void **state) {
    (void)state;
    char buf[256];
    size_t n;
    ASSERT_RC(ctx_wire_tracestate_put(S(""), "a", "1", buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "a=1");
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1,b=2,c=3"), "b", "9", buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "b=9,a=1,c=3");
    /* delete */
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1,b=2,c=3"), "b", NULL, buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "a=1,c=3");
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1"), "zz", NULL, buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "a=1");
    /* bad key or value, bad list, small buffer */
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1"), "B", "1", buf, sizeof buf, &n), CTX_EINVAL);
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1"), "b", "x,y", buf, sizeof buf, &n), CTX_EINVAL);
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1"), "b", "", buf, sizeof buf, &n), CTX_EINVAL);
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1,=2"), "b", "1", buf, sizeof buf, &n), CTX_EPARSE);
    ASSERT_RC(ctx_wire_tracestate_put(S("a=1"), "b", "1", buf, 5, &n), CTX_ETRUNCATED);
    assert_string_equal(buf, "");
}

typedef struct seen {
    int calls;
    char keys[128];
} seen_t;

static int record(const char *key, size_t key_len, const char *value, size_t value_len, void *user) {
    seen_t *s = user;
    s->calls++;
    strncat(s->keys, key, key_len);
    strncat(s->keys, ":", 2);
    strncat(s->keys, value, value_len);
    strncat(s->keys, ";", 2);
    return s->calls == 3 ? 42 : 0;
}

/* As record, failing with CTX_ELIMIT at the second member. */
static int record_fail(const char *key, size_t key_len, const char *value, size_t value_len, void *user) {
    seen_t *s = user;
    int rc = record(key, key_len, value, value_len, user);
    return s->calls == 2 ? CTX_ELIMIT : rc;
}

static void test_callback(void **state) {
    (void)state;
    seen_t s = {0, ""};
    assert_int_equal(ctx_wire_tracestate_parse(S("a=1, b=2"), record, &s), 2);
    assert_string_equal(s.keys, "a:1;b:2;");
    /* a positive result stops the walk and is CTX_ECALLBACK, not a count */
    seen_t t = {0, ""};
    ASSERT_RC(ctx_wire_tracestate_parse(S("a=1,b=2,c=3,d=4"), record, &t), CTX_ECALLBACK);
    assert_int_equal(t.calls, 3);
    /* a negative one stops it and is returned as is */
    seen_t n = {0, ""};
    ASSERT_RC(ctx_wire_tracestate_parse(S("a=1,b=2,c=3,d=4"), record_fail, &n), CTX_ELIMIT);
    assert_int_equal(n.calls, 2);
    assert_string_equal(n.keys, "a:1;b:2;");
    /* an invalid list calls nothing */
    seen_t u = {0, ""};
    ASSERT_RC(ctx_wire_tracestate_parse(S("a=1,b=2,A=3"), record, &u), CTX_EPARSE);
    assert_int_equal(u.calls, 0);
    /* a repeated key is delivered once, with its first value */
    seen_t d = {0, ""};
    assert_int_equal(ctx_wire_tracestate_parse(S("a=1,b=2,a=3"), record, &d), 2);
    assert_string_equal(d.keys, "a:1;b:2;");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples), cmocka_unit_test(test_keys),
        cmocka_unit_test(test_values),        cmocka_unit_test(test_list_grammar),
        cmocka_unit_test(test_32_members),    cmocka_unit_test(test_input_limit),
        cmocka_unit_test(test_longest_list_normalises), cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_get),           cmocka_unit_test(test_put),
        cmocka_unit_test(test_callback),
    };
    return cmocka_run_group_tests_name("wire_tracestate", tests, NULL, NULL);
}
