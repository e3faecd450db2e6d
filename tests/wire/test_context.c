/* SPDX-License-Identifier: MIT */
/*
 * test_context.c — the registry, inject and extract: registration rules,
 * round trips (encode → decode → the same context), the child parent-id,
 * deadlines, which header is dropped for which bad input (and that nothing
 * else is), strict mode, several headers of one name, hostile sizes, the
 * failing allocator on every allocation of inject and extract, and
 * concurrent use of one registry.
 */
#include <pthread.h>

#include "wire_test.h"

typedef struct fixture {
    ctx_wire_t *w;
    ctx_var_t *user, *tenant, *request, *local;
} fixture_t;

static fixture_t fx;

static int setup(void **state) {
    (void)state;
    ASSERT_RC(ctx_wire_new(&fx.w), 0);
    fx.user = str_var("user");
    fx.tenant = str_var("tenant");
    fx.request = str_var("request");
    fx.local = str_var("local"); /* never registered: stays in the process */
    ASSERT_RC(ctx_wire_register(fx.w, fx.user, "userId"), 0);
    ASSERT_RC(ctx_wire_register(fx.w, fx.tenant, "tenant"), 0);
    ASSERT_RC(ctx_wire_register(fx.w, fx.request, "req"), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_thread_release();
    wire_timer_teardown(); /* no deadline left behind */
    ctx_wire_release(fx.w);
    ctx_var_release(fx.user);
    ctx_var_release(fx.tenant);
    ctx_var_release(fx.request);
    ctx_var_release(fx.local);
    return 0;
}

static ctx_context_t *extract(ctx_wire_headers_t *h, unsigned flags, ctx_wire_extract_report_t *rep, int want) {
    ctx_context_t *ctx = NULL;
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_extract(fx.w, &c, flags, &ctx, rep), want);
    return ctx;
}

static int inject(ctx_wire_headers_t *h, ctx_context_t *ctx, unsigned flags) {
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    return ctx_wire_inject(fx.w, ctx, &c, flags, NULL);
}

/* ---- registration ---- */

static void test_register_rules(void **state) {
    (void)state;
    ctx_wire_t *w;
    ASSERT_RC(ctx_wire_new(&w), 0);
    ctx_var_t *plain = NULL;
    ASSERT_RC(ctx_var_new("plain", NULL, &plain), 0);
    ctx_var_t *a = str_var("a"), *b = str_var("b");
    ASSERT_RC(ctx_wire_register(w, plain, "plain"), CTX_EINVAL); /* no encode/decode */
    ASSERT_RC(ctx_wire_register(w, plain, "bad key"), CTX_EINVAL); /* the ops come first */
    ASSERT_RC(ctx_wire_register(w, a, "bad key"), CTX_EPARSE);
    ASSERT_RC(ctx_wire_register(w, a, ""), CTX_EPARSE);
    ASSERT_RC(ctx_wire_register(w, a, "k,v"), CTX_EPARSE);
    ASSERT_RC(ctx_wire_register(w, a, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_register(NULL, a, "k"), CTX_EINVAL);
    char long_key[258];
    memset(long_key, 'k', 257);
    long_key[257] = '\0';
    ASSERT_RC(ctx_wire_register(w, a, long_key), CTX_EPARSE);
    long_key[256] = '\0'; /* 256 bytes: the longest key */
    ASSERT_RC(ctx_wire_register(w, b, long_key), 0);
    ASSERT_RC(ctx_wire_register(w, a, "k"), 0);
    ASSERT_RC(ctx_wire_register(w, a, "k2"), CTX_EEXIST); /* same variable */
    ASSERT_RC(ctx_wire_register(w, b, "k"), CTX_EEXIST);  /* same variable (b has long_key) */
    ctx_var_t *c2 = str_var("c2");
    ASSERT_RC(ctx_wire_register(w, c2, "k"), CTX_EEXIST); /* same key */
    ASSERT_RC(ctx_wire_register(w, c2, "K"), 0);          /* keys are case-sensitive */
    /* the limit */
    ctx_var_t *many[CTX_WIRE_MAX_VARS];
    for (int i = 0; i < CTX_WIRE_MAX_VARS; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", i);
        many[i] = str_var(name);
        ASSERT_RC(ctx_wire_register(w, many[i], name), i < CTX_WIRE_MAX_VARS - 3 ? 0 : CTX_ELIMIT);
    }
    /* after first use registration is closed */
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_trace_get(w, NULL, &tp, NULL, NULL), CTX_ENOTFOUND);
    ctx_wire_t *w2;
    ASSERT_RC(ctx_wire_new(&w2), 0);
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_inject(w2, NULL, &c, 0, NULL), 0);
    ASSERT_RC(ctx_wire_register(w2, b, "b"), CTX_ESEALED);
    ASSERT_RC(ctx_wire_register(w2, b, "bad key"), CTX_EPARSE); /* checked before sealing */
    ASSERT_RC(ctx_wire_register(w, many[0], "m0"), CTX_ESEALED); /* before "exists" */
    assert_non_null(ctx_wire_trace_var(w));
    assert_string_equal(ctx_var_name(ctx_wire_trace_var(w)), "ctx.trace");
    ctx_wire_headers_release(h);
    /* the registry keeps its variables alive */
    ctx_wire_retain(w);
    ctx_wire_release(w);
    for (int i = 0; i < CTX_WIRE_MAX_VARS; i++)
        ctx_var_release(many[i]);
    ctx_var_release(a);
    ctx_var_release(b);
    ctx_var_release(c2);
    ctx_var_release(plain);
    ctx_wire_release(w);
    ctx_wire_release(w2);
    ctx_wire_release(NULL);
}

/* ---- round trips ---- */

static void test_round_trip(void **state) {
    (void)state;
    set_str(fx.user, "Am\xc3\xa9lie Dupont");
    set_str(fx.tenant, "acme,inc;=%");
    set_str(fx.local, "secret");
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_trace_start(fx.w, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, &tp), 0);
    ctx_wire_traceparent_t with_state = tp;
    ASSERT_RC(ctx_wire_trace_set(fx.w, NULL, &with_state, S(" congo=t61rcWkgMzE ,, rojo=00f067aa0ba902b7")), 0);
    ASSERT_RC(ctx_wire_deadline_set(fx.w, NULL, 5000000000ll), 0);

    ctx_wire_headers_t *h = headers();
    ASSERT_RC(inject(h, NULL, 0), 0);
    assert_string_equal(header(h, "baggage"), "userId=Am%C3%A9lie%20Dupont,tenant=acme%2Cinc%3B=%25");
    assert_string_equal(header(h, "tracestate"), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    assert_non_null(header(h, "grpc-timeout"));
    ctx_wire_traceparent_t sent;
    ASSERT_RC(ctx_wire_traceparent_parse(header(h, "traceparent"), CTX_WIRE_TRACEPARENT_LEN, &sent), 0);
    assert_memory_equal(sent.trace_id, tp.trace_id, 16);
    assert_memory_not_equal(sent.parent_id, tp.parent_id, 8); /* a child */
    assert_int_equal(sent.flags, CTX_WIRE_TRACE_FLAG_SAMPLED | CTX_WIRE_TRACE_FLAG_RANDOM);
    assert_null(strstr(header(h, "baggage"), "secret"));

    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_context_t *ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.traceparent, 1);
    assert_int_equal(rep.tracestate, 1);
    assert_int_equal(rep.deadline, 1);
    assert_int_equal(rep.baggage_used, 2);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    assert_int_equal(ctx_context_length(ctx), 4); /* user, tenant, trace, scope */
    assert_string_equal(get_str(ctx, fx.user), "Am\xc3\xa9lie Dupont");
    assert_string_equal(get_str(ctx, fx.tenant), "acme,inc;=%");
    assert_null(get_str(ctx, fx.local));
    assert_null(get_str(ctx, fx.request));
    ctx_wire_traceparent_t got;
    const char *ts;
    size_t ts_len;
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, &got, &ts, &ts_len), 0);
    assert_memory_equal(&got, &sent, sizeof got);
    assert_string_equal(ts, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    int64_t mine, theirs;
    ASSERT_RC(ctx_wire_deadline_remaining(fx.w, NULL, &mine), 0);
    ASSERT_RC(ctx_wire_deadline_remaining(fx.w, ctx, &theirs), 0);
    assert_true(theirs <= 5000000000ll && theirs > 0);

    /* and again: the extracted context injects to the same baggage */
    ctx_wire_headers_t *h2 = headers();
    ASSERT_RC(inject(h2, ctx, CTX_WIRE_SAME_PARENT), 0);
    assert_string_equal(header(h2, "baggage"), header(h, "baggage"));
    assert_string_equal(header(h2, "traceparent"), header(h, "traceparent"));
    assert_string_equal(header(h2, "tracestate"), header(h, "tracestate"));
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
    ctx_wire_headers_release(h2);
}

static void *in_context(void *arg) {
    (void)arg;
    return (void *)get_str(NULL, fx.user);
}

static void test_extracted_context_runs(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    add_header(h, "Baggage", "userId=bob");
    ctx_context_t *ctx = extract(h, 0, NULL, 0);
    void *result = NULL;
    ASSERT_RC(ctx_context_run(ctx, in_context, NULL, &result), 0);
    assert_string_equal((const char *)result, "bob");
    assert_null(get_str(NULL, fx.user)); /* not in the caller's context */
    /* a log line shows everything */
    ctx_wire_headers_t *h2 = headers();
    add_header(h2, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    add_header(h2, "grpc-timeout", "1H");
    ctx_context_t *ctx2 = extract(h2, 0, NULL, 0);
    char line[256];
    ASSERT_RC(ctx_context_format(ctx2, line, sizeof line, NULL), 0);
    assert_non_null(strstr(line, "ctx.trace=00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_non_null(strstr(line, "ctxvar.cancel=active, ")); /* the deadline's scope */
    assert_non_null(strstr(line, "ms left"));
    ctx_context_release(ctx);
    ctx_context_release(ctx2);
    ctx_wire_headers_release(h);
    ctx_wire_headers_release(h2);
}

static void test_empty_context_injects_nothing(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    add_header(h, "other", "kept");
    ASSERT_RC(inject(h, NULL, 0), 0);
    assert_int_equal(ctx_wire_headers_count(h), 1);
    ctx_context_t *ctx = extract(h, 0, NULL, 0);
    assert_int_equal(ctx_context_length(ctx), 0);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void test_inject_replaces_existing_headers(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    add_header(h, "BAGGAGE", "stale=1");
    add_header(h, "Baggage", "stale=2");
    set_str(fx.request, "r1");
    ASSERT_RC(inject(h, NULL, 0), 0);
    assert_int_equal(ctx_wire_headers_count(h), 1);
    assert_string_equal(header(h, "baggage"), "req=r1");
    ctx_wire_headers_release(h);
}

/* ---- what is dropped ---- */

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_bad_traceparent_drops_tracestate(void **state) {
    (void)state;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_wire_headers_t *h = headers();
    add_header(h, "tracestate", "a=1");
    add_header(h, "traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
    add_header(h, "baggage", "userId=x");
    ctx_context_t *ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.traceparent, CTX_EPARSE);
    assert_int_equal(rep.tracestate, CTX_ENOTFOUND);
    assert_int_equal(rep.baggage_used, 1); /* baggage is independent */
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, NULL, NULL, NULL), CTX_ENOTFOUND);
    ctx_context_release(ctx);
    /* no traceparent at all: tracestate not examined */
    ctx_wire_headers_clear(h);
    add_header(h, "tracestate", "a=1");
    ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.traceparent, 0);
    assert_int_equal(rep.tracestate, CTX_ENOTFOUND);
    ctx_context_release(ctx);
    /* two traceparent headers: dropped */
    ctx_wire_headers_clear(h);
    add_header(h, "traceparent", TP);
    add_header(h, "Traceparent", TP);
    ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.traceparent, CTX_EPARSE);
    assert_int_equal(ctx_context_length(ctx), 0);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void test_bad_tracestate_keeps_traceparent(void **state) {
    (void)state;
    static const char *bad[] = {"@a=1", "A=1", "a=1,b", "a=x\ty", "a=1,=2", "a="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
        ctx_wire_headers_t *h = headers();
        add_header(h, "traceparent", TP);
        add_header(h, "tracestate", bad[i]);
        ctx_context_t *ctx = extract(h, 0, &rep, 0);
        assert_int_equal(rep.traceparent, 1);
        assert_int_equal(rep.tracestate, CTX_EPARSE);
        const char *ts;
        size_t n;
        ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, NULL, &ts, &n), 0);
        assert_int_equal(n, 0);
        ctx_context_release(ctx);
        ctx_wire_headers_release(h);
    }
}

static void test_tracestate_headers_join(void **state) {
    (void)state;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_wire_headers_t *h = headers();
    add_header(h, "tracestate", "a=1, b=2");
    add_header(h, "traceparent", TP);
    add_header(h, "TraceState", "");
    add_header(h, "tracestate", "c=3");
    ctx_context_t *ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.tracestate, 1);
    const char *ts;
    size_t n;
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, NULL, &ts, &n), 0);
    assert_string_equal(ts, "a=1,b=2,c=3");
    ctx_context_release(ctx);
    /* a key repeated across headers: its later member is dropped alone */
    add_header(h, "tracestate", "a=9,d=4");
    ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.tracestate, 1);
    assert_int_equal(rep.tracestate_duplicate, 1);
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, NULL, &ts, &n), 0);
    assert_string_equal(ts, "a=1,b=2,c=3,d=4");
    assert_int_equal(n, strlen(ts));
    ctx_context_release(ctx);
    /* ... and strict mode refuses it */
    ctx_context_t *none = NULL;
    ctx_wire_carrier_t hc = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_extract(fx.w, &hc, CTX_WIRE_STRICT, &none, &rep), CTX_EPARSE);
    assert_null(none);
    assert_int_equal(rep.tracestate_duplicate, 1);
    /* 33 members across headers: dropped with ELIMIT */
    ctx_wire_headers_clear(h);
    add_header(h, "traceparent", TP);
    for (int i = 0; i < 33; i++) {
        char m[16];
        snprintf(m, sizeof m, "k%d=v", i);
        add_header(h, "tracestate", m);
    }
    ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.tracestate, CTX_ELIMIT);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void test_baggage_drops(void **state) {
    (void)state;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_wire_headers_t *h = headers();
    add_header(h, "baggage", "userId=a, unknown=1, bad member, tenant=!refused");
    add_header(h, "Baggage", "userId=second, req=r%20 ;prop=1");
    ctx_context_t *ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.baggage, 1);
    assert_int_equal(rep.baggage_used, 2);
    assert_int_equal(rep.baggage_unknown, 1);
    assert_int_equal(rep.baggage_malformed, 1);
    assert_int_equal(rep.baggage_rejected, 1);
    assert_int_equal(rep.baggage_duplicate, 1);
    assert_string_equal(get_str(ctx, fx.user), "a"); /* the first wins */
    assert_string_equal(get_str(ctx, fx.request), "r ");
    assert_null(get_str(ctx, fx.tenant));
    ctx_context_release(ctx);
    /* strict mode fails on the same input, and leaks nothing */
    ctx = extract(h, CTX_WIRE_STRICT, &rep, CTX_EPARSE);
    assert_null(ctx);
    ctx_wire_headers_release(h);
}

/* The registry finds a member's variable through an index of the keys:
 * 64 keys that agree in length and in their first, middle and last bytes
 * (what the index hashes) all share one probe chain; each must still get
 * its own value, keys of the same hash that are not registered (or differ
 * only in case: keys are case-sensitive) must count as unknown, and header
 * names in any case must be recognised. */
static void test_baggage_key_index(void **state) {
    (void)state;
    ctx_wire_t *w = NULL;
    ASSERT_RC(ctx_wire_new(&w), 0);
    ctx_var_t *vars[CTX_WIRE_MAX_VARS];
    char keys[CTX_WIRE_MAX_VARS][8];
    static const char mids[] = "bcdefghi";
    for (int i = 0; i < CTX_WIRE_MAX_VARS; i++) {
        snprintf(keys[i], sizeof keys[i], "a%cm%cz", mids[i / 8], mids[i % 8]);
        vars[i] = str_var(keys[i]);
        ASSERT_RC(ctx_wire_register(w, vars[i], keys[i]), 0);
    }
    char list[CTX_WIRE_BAGGAGE_MAX_BYTES];
    size_t len = 0;
    /* 60 of them, the last registered first (64 members is the list's
     * limit), then 4 that are not registered: the same length, first,
     * middle and last bytes, or a registered key in another case */
    for (int i = CTX_WIRE_MAX_VARS - 1; i >= 4; i--)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s=v%d,", keys[i], i);
    len += (size_t)snprintf(list + len, sizeof list - len, "aXmYz=u,ajmbz=u,aBmCz=u,abmbZ=u");
    ctx_wire_headers_t *h = headers();
    add_header(h, "BAGGAGE", list);
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_wire_extract(w, &c, 0, &ctx, &rep), 0);
    assert_int_equal(rep.baggage_used, CTX_WIRE_MAX_VARS - 4);
    assert_int_equal(rep.baggage_unknown, 4);
    assert_int_equal(rep.baggage_over_limit, 0);
    for (int i = 0; i < CTX_WIRE_MAX_VARS; i++) {
        char want[8];
        snprintf(want, sizeof want, "v%d", i);
        if (i < 4)
            assert_null(get_str(ctx, vars[i]));
        else
            assert_string_equal(get_str(ctx, vars[i]), want);
    }
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
    /* names in mixed case, and a name of the right length that is another */
    h = headers();
    add_header(h, "TraceParent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    add_header(h, "bAgGaGe", "abmbz=x");
    add_header(h, "baggagf", "abmcz=y");
    c = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_extract(w, &c, 0, &ctx, &rep), 0);
    assert_int_equal(rep.traceparent, 1);
    assert_int_equal(rep.baggage_used, 1);
    assert_string_equal(get_str(ctx, vars[0]), "x");
    assert_null(get_str(ctx, vars[1]));
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
    ctx_wire_release(w);
    for (int i = 0; i < CTX_WIRE_MAX_VARS; i++)
        ctx_var_release(vars[i]);
}

/* Keys of every length from 1 to 40 (the compare of a key takes words of
 * 4 or 8 bytes from both ends for lengths 4 to 16): each found; and each
 * with one byte changed where the index's hash does not look, near the
 * start in one list and near the end in another (so that the compare has
 * to tell them apart with either word), unknown. */
static void test_baggage_key_lengths(void **state) {
    (void)state;
    enum { LONGEST = 40 };
    ctx_wire_t *w = NULL;
    ASSERT_RC(ctx_wire_new(&w), 0);
    ctx_var_t *vars[LONGEST + 1];
    char keys[LONGEST + 1][LONGEST + 1];
    char list[3][CTX_WIRE_BAGGAGE_MAX_BYTES];
    size_t len[3] = {0, 0, 0};
    for (int n = 1; n <= LONGEST; n++) {
        for (int j = 0; j < n; j++)
            keys[n][j] = (char)('a' + (j * 7 + n) % 26);
        keys[n][n] = '\0';
        vars[n] = str_var(keys[n]);
        ASSERT_RC(ctx_wire_register(w, vars[n], keys[n]), 0);
        len[0] += (size_t)snprintf(list[0] + len[0], sizeof list[0] - len[0], "%s%s=v%d", n > 1 ? "," : "",
                                   keys[n], n);
        /* positions 0, n / 2 and n - 1 are hashed: change 1 or n - 2
         * (the last byte when there is no other) */
        int at[2] = {n >= 4 && n / 2 != 1 ? 1 : n - 1, n > 4 ? n - 2 : n - 1};
        for (int v = 0; v < 2; v++) {
            char changed[LONGEST + 1];
            memcpy(changed, keys[n], (size_t)n + 1);
            changed[at[v]] = 'Z';
            len[1 + v] += (size_t)snprintf(list[1 + v] + len[1 + v], sizeof list[1 + v] - len[1 + v],
                                           "%s%s=u", n > 1 ? "," : "", changed);
        }
    }
    for (int l = 0; l < 3; l++) {
        ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
        ctx_context_t *ctx = NULL;
        ctx_wire_headers_t *h = headers();
        add_header(h, "baggage", list[l]);
        ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
        ASSERT_RC(ctx_wire_extract(w, &c, 0, &ctx, &rep), 0);
        assert_int_equal(rep.baggage_used, l == 0 ? LONGEST : 0);
        assert_int_equal(rep.baggage_unknown, l == 0 ? 0 : LONGEST);
        for (int n = 1; n <= LONGEST; n++) {
            char want[8];
            snprintf(want, sizeof want, "v%d", n);
            if (l == 0)
                assert_string_equal(get_str(ctx, vars[n]), want);
            else
                assert_null(get_str(ctx, vars[n]));
        }
        ctx_context_release(ctx);
        ctx_wire_headers_release(h);
    }
    ctx_wire_release(w);
    for (int n = 1; n <= LONGEST; n++)
        ctx_var_release(vars[n]);
}

static void test_deadline_drops(void **state) {
    (void)state;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_wire_headers_t *h = headers();
    add_header(h, "grpc-timeout", "10 S");
    ctx_context_t *ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.deadline, CTX_EPARSE);
    int64_t left;
    ASSERT_RC(ctx_wire_deadline_remaining(fx.w, ctx, &left), CTX_ENOTFOUND);
    ctx_context_release(ctx);
    ctx_wire_headers_clear(h);
    add_header(h, "grpc-timeout", "1S");
    add_header(h, "grpc-timeout", "2S");
    ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.deadline, CTX_EPARSE);
    ctx_context_release(ctx);
    ASSERT_RC(ctx_wire_extract(fx.w, &(ctx_wire_carrier_t){sizeof(ctx_wire_carrier_t), ctx_wire_headers_carrier(h).iterate, NULL,
                                                          NULL, h},
                               CTX_WIRE_STRICT, &ctx, NULL),
              CTX_EPARSE);
    /* an expired deadline crosses as 0n and stays expired */
    ctx_wire_headers_clear(h);
    ASSERT_RC(ctx_wire_deadline_set(fx.w, NULL, -1), 0);
    ASSERT_RC(inject(h, NULL, 0), 0);
    assert_string_equal(header(h, "grpc-timeout"), "0n");
    ctx = extract(h, 0, &rep, 0);
    ASSERT_RC(ctx_wire_deadline_remaining(fx.w, ctx, &left), 0);
    assert_int_equal(left, 0);
    ctx_cancel_scope_t *scope;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_error(scope), CTX_EDEADLINE); /* born expired */
    ctx_cancel_scope_release(scope);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void test_deadline_shrinks_per_hop(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    ASSERT_RC(ctx_wire_deadline_set(fx.w, NULL, 2000000000), 0);
    int64_t prev;
    ASSERT_RC(ctx_wire_deadline_remaining(fx.w, NULL, &prev), 0);
    ctx_context_t *ctx = NULL;
    for (int hop = 0; hop < 5; hop++) {
        ctx_wire_headers_clear(h);
        ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
        ASSERT_RC(ctx_wire_inject(fx.w, ctx, &c, 0, NULL), 0);
        ctx_context_t *next = extract(h, 0, NULL, 0);
        int64_t left;
        ASSERT_RC(ctx_wire_deadline_remaining(fx.w, next, &left), 0);
        assert_true(left <= prev);
        prev = left;
        ctx_context_release(ctx);
        ctx = next;
    }
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void test_strict_limits(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    char *big = malloc(9000);
    memcpy(big, "userId=", 7);
    memset(big + 7, 'x', 9000 - 8);
    big[8999] = '\0';
    add_header(h, "baggage", big);
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ctx_context_t *ctx = extract(h, 0, &rep, 0);
    assert_int_equal(rep.baggage_over_limit, 1);
    assert_int_equal(rep.baggage_truncated, 0); /* 9000 bytes: all examined */
    assert_int_equal(ctx_context_length(ctx), 0);
    ctx_context_release(ctx);
    extract(h, CTX_WIRE_STRICT, &rep, CTX_ELIMIT);
    /* a valid input passes strict */
    ctx_wire_headers_clear(h);
    add_header(h, "traceparent", TP);
    add_header(h, "tracestate", "a=1");
    add_header(h, "baggage", "userId=u,other=ignored");
    ctx = extract(h, CTX_WIRE_STRICT, &rep, 0);
    assert_int_equal(ctx_context_length(ctx), 2);
    ctx_context_release(ctx);
    free(big);
    ctx_wire_headers_release(h);
}

static void test_inject_limits_and_errors(void **state) {
    (void)state;
    /* values whose text is over the byte limit are left out and counted */
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = '\0';
    set_str(fx.user, big);
    set_str(fx.tenant, big);
    set_str(fx.request, "small");
    ctx_wire_headers_t *h = headers();
    ASSERT_RC(inject(h, NULL, 0), 1);
    const char *b = header(h, "baggage");
    assert_non_null(b);
    assert_true(strlen(b) <= CTX_WIRE_BAGGAGE_MAX_BYTES);
    assert_non_null(strstr(b, "req=small"));
    /* a value longer than the limit by itself */
    char *huge = malloc(10000);
    memset(huge, 'y', 9999);
    huge[9999] = '\0';
    set_str(fx.user, huge);
    ctx_wire_headers_clear(h);
    ASSERT_RC(inject(h, NULL, 0), 1);
    /* carriers without set, NULLs */
    ctx_wire_carrier_t noset = {sizeof(ctx_wire_carrier_t), ctx_wire_headers_carrier(h).iterate, NULL, NULL, h};
    ASSERT_RC(ctx_wire_inject(fx.w, NULL, &noset, 0, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_inject(NULL, NULL, &noset, 0, NULL), CTX_EINVAL);
    ctx_context_t *out = NULL;
    ctx_wire_carrier_t noiter = {sizeof(ctx_wire_carrier_t), NULL, NULL, NULL, h};
    ASSERT_RC(ctx_wire_extract(fx.w, &noiter, 0, &out, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_extract(fx.w, NULL, 0, &out, NULL), CTX_EINVAL);
    free(big);
    free(huge);
    ctx_wire_headers_release(h);
}

static int failing_encode(const void *value, char *buf, size_t cap, void *user) {
    (void)value, (void)buf, (void)cap, (void)user;
    return CTX_ECALLBACK;
}

static void test_encode_error_writes_nothing(void **state) {
    (void)state;
    ctx_wire_t *w;
    ASSERT_RC(ctx_wire_new(&w), 0);
    ctx_value_ops_t ops = str_ops;
    ops.encode = failing_encode;
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &ops};
    ctx_var_t *v;
    ASSERT_RC(ctx_var_new("failing", &o, &v), 0);
    ASSERT_RC(ctx_wire_register(w, v, "f"), 0);
    ASSERT_RC(ctx_wire_trace_start(w, NULL, 0, NULL), 0);
    set_str(v, "x");
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_inject(w, NULL, &c, 0, NULL), CTX_ECALLBACK);
    assert_int_equal(ctx_wire_headers_count(h), 0);
    ctx_wire_headers_release(h);
    ctx_thread_release();
    ctx_var_release(v);
    ctx_wire_release(w);
}

/* A carrier whose set returns a fixed result; iterate as the list's. */
static int set_result;
static int set_calls;

static int fixed_set(void *self, const char *name, const char *value, size_t value_len) {
    (void)self, (void)name, (void)value, (void)value_len;
    set_calls++;
    return set_result;
}

static int iterate_result;

static int fixed_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    /* delivers the list's headers, then returns a result of its own */
    ctx_wire_carrier_t inner = ctx_wire_headers_carrier(self);
    int rc = inner.iterate(inner.self, fn, user);
    return rc != 0 ? rc : iterate_result;
}

static void test_carrier_results_are_not_counts(void **state) {
    (void)state;
    set_str(fx.user, "u1");
    ASSERT_RC(ctx_wire_trace_start(fx.w, NULL, 0, NULL), 0);
    /* inject: a positive result of set is CTX_ECALLBACK, not a count of
     * members left out; a negative one is returned as is */
    ctx_wire_carrier_t c = {sizeof(ctx_wire_carrier_t), NULL, NULL, fixed_set, NULL};
    set_result = 2;
    set_calls = 0;
    ASSERT_RC(ctx_wire_inject(fx.w, NULL, &c, 0, NULL), CTX_ECALLBACK);
    assert_int_equal(set_calls, 1); /* stopped at the first header */
    set_result = CTX_ELIMIT;
    set_calls = 0;
    ASSERT_RC(ctx_wire_inject(fx.w, NULL, &c, 0, NULL), CTX_ELIMIT);
    assert_int_equal(set_calls, 1);
    set_result = 0;
    set_calls = 0;
    ASSERT_RC(ctx_wire_inject(fx.w, NULL, &c, 0, NULL), 0);
    assert_int_equal(set_calls, 2); /* traceparent, baggage */

    /* extract: a positive result of iterate is CTX_ECALLBACK, never
     * success; a negative one is returned as is; no context either way */
    ctx_wire_headers_t *h = headers();
    ASSERT_RC(inject(h, NULL, 0), 0);
    ctx_wire_carrier_t e = {sizeof(ctx_wire_carrier_t), fixed_iterate, NULL, NULL, h};
    ctx_context_t *out = NULL;
    iterate_result = 1;
    ASSERT_RC(ctx_wire_extract(fx.w, &e, 0, &out, NULL), CTX_ECALLBACK);
    assert_null(out);
    iterate_result = CTX_ESYSTEM;
    ASSERT_RC(ctx_wire_extract(fx.w, &e, 0, &out, NULL), CTX_ESYSTEM);
    assert_null(out);
    iterate_result = 0;
    ASSERT_RC(ctx_wire_extract(fx.w, &e, 0, &out, NULL), 0);
    assert_non_null(out);
    void *v = NULL;
    ASSERT_RC(ctx_context_get(out, fx.user, &v), 0);
    assert_string_equal(((str_value_t *)v)->text, "u1");
    ctx_context_release(out);
    ctx_wire_headers_release(h);
}

static void test_trace_set_rules(void **state) {
    (void)state;
    ctx_wire_traceparent_t zero;
    memset(&zero, 0, sizeof zero);
    ASSERT_RC(ctx_wire_trace_set(fx.w, NULL, &zero, NULL, 0), CTX_EINVAL);
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_traceparent_parse(S(TP), &tp), 0);
    ASSERT_RC(ctx_wire_trace_set(fx.w, NULL, &tp, S("Bad=1")), CTX_EPARSE);
    ASSERT_RC(ctx_wire_trace_set(fx.w, NULL, &tp, S("@a=1,a=2")), CTX_EPARSE);
    ASSERT_RC(ctx_wire_trace_get(fx.w, NULL, NULL, NULL, NULL), CTX_ENOTFOUND);
    ASSERT_RC(ctx_wire_trace_set(fx.w, NULL, &tp, NULL, 0), 0);
    const char *ts;
    size_t n;
    ASSERT_RC(ctx_wire_trace_get(fx.w, NULL, NULL, &ts, &n), 0);
    assert_string_equal(ts, "");
    ASSERT_RC(ctx_wire_trace_set(NULL, NULL, &tp, NULL, 0), CTX_EINVAL);
    int64_t d;
    ASSERT_RC(ctx_wire_deadline_get(fx.w, NULL, &d), CTX_ENOTFOUND);
    /* a timeout past the end of the clock is no deadline: nothing is sent */
    ASSERT_RC(ctx_wire_deadline_set(fx.w, NULL, INT64_MAX), 0);
    ASSERT_RC(ctx_wire_deadline_get(fx.w, NULL, &d), CTX_ENOTFOUND);
    ctx_wire_headers_t *h = headers();
    ASSERT_RC(inject(h, NULL, 0), 0);
    assert_null(header(h, "grpc-timeout"));
    /* a far one is sent in the coarsest unit that holds it in 8 digits */
    ASSERT_RC(ctx_wire_deadline_set(fx.w, NULL, INT64_MAX / 2), 0);
    ASSERT_RC(ctx_wire_deadline_get(fx.w, NULL, &d), 0);
    ASSERT_RC(inject(h, NULL, 0), 0);
    const char *t = header(h, "grpc-timeout");
    assert_int_equal(t[strlen(t) - 1], 'M');
    long long minutes = atoll(t), most = (INT64_MAX / 2) / 60000000000ll;
    assert_true(minutes <= most && minutes >= most - 1); /* rounded down */
    ctx_wire_headers_release(h);
}

/* ---- hostile input ---- */

static void test_hostile_headers(void **state) {
    (void)state;
    ctx_test_rng_t rng;
    uint64_t seed = ctx_test_seed(99);
    ctx_test_rng_seed(&rng, seed);
    static const char *names[] = {"traceparent", "tracestate", "baggage", "grpc-timeout", "x"};
    static const char alphabet[] = "abz09=,; \t%-@*/_AZ!\"\\\x01\x7f\xff";
    for (int round = 0; round < SCALED(2000, 100, 300); round++) {
        ctx_wire_headers_t *h = headers();
        int n = (int)ctx_test_rng_below(&rng, 8);
        for (int i = 0; i < n; i++) {
            char value[600];
            size_t len = ctx_test_rng_below(&rng, sizeof value);
            for (size_t j = 0; j < len; j++) {
                value[j] = alphabet[ctx_test_rng_below(&rng, sizeof alphabet - 1)];
                if (value[j] == '\x01' && ctx_test_rng_below(&rng, 2))
                    value[j] = ',';
            }
            const char *name = names[ctx_test_rng_below(&rng, 5)];
            if (strcmp(name, "traceparent") == 0 && ctx_test_rng_below(&rng, 2)) {
                memcpy(value, TP, sizeof TP - 1);
                len = sizeof TP - 1;
            }
            ctx_wire_headers_add_n(h, name, strlen(name), value, len);
        }
        ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
        ctx_context_t *ctx = NULL;
        ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
        int rc = ctx_wire_extract(fx.w, &c, 0, &ctx, &rep);
        if (rc != 0)
            fail_msg("extract failed with %d (seed %llu, round %d)", rc, (unsigned long long)seed, round);
        assert_true(ctx_context_length(ctx) <= 5);
        /* whatever came in goes out valid */
        ctx_wire_headers_t *out = headers();
        ctx_wire_carrier_t oc = ctx_wire_headers_carrier(out);
        assert_true(ctx_wire_inject(fx.w, ctx, &oc, 0, NULL) >= 0);
        ctx_context_t *again = NULL;
        ASSERT_RC(ctx_wire_extract(fx.w, &oc, CTX_WIRE_STRICT, &again, NULL), 0);
        assert_int_equal(ctx_context_length(again), ctx_context_length(ctx));
        ctx_context_release(again);
        ctx_context_release(ctx);
        ctx_wire_headers_release(out);
        ctx_wire_headers_release(h);
    }
}

/* ---- allocation failures ---- */

static void test_alloc_failures(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    add_header(h, "traceparent", TP);
    add_header(h, "tracestate", "a=1,b=2");
    add_header(h, "baggage", "userId=u,tenant=t,req=r");
    add_header(h, "grpc-timeout", "3S");
    /* the cancel module's variable is made once for good: before counting */
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter(NULL, &tok), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_thread_release();
    ctx_test_alloc_install();
    int succeeded = 0;
    for (long nth = 1; nth < 200 && !succeeded; nth++) {
        ctx_test_alloc_fail_nth(nth);
        ctx_context_t *ctx = NULL;
        ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
        int rc = ctx_wire_extract(fx.w, &c, 0, &ctx, NULL);
        if (rc == 0) {
            if (!ctx_test_alloc_fired()) {
                succeeded = 1;
                assert_int_equal(ctx_context_length(ctx), 5);
            }
            ctx_context_release(ctx);
        } else {
            ASSERT_RC(rc, CTX_ENOMEM);
            assert_null(ctx);
        }
        ctx_test_alloc_fail_nth(0);
        ctx_thread_release();
        wire_timer_teardown(); /* the heap and the timer thread's state */
        assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    }
    assert_true(succeeded);
    /* inject through a failing carrier */
    succeeded = 0;
    ctx_context_t *src = NULL;
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_test_alloc_uninstall();
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &src, NULL), 0);
    ctx_test_alloc_install();
    for (long nth = 1; nth < 200 && !succeeded; nth++) {
        ctx_wire_headers_t *out = NULL;
        ASSERT_RC(ctx_wire_headers_new(&out), 0);
        ctx_wire_carrier_t oc = ctx_wire_headers_carrier(out);
        ctx_test_alloc_fail_nth(nth);
        int rc = ctx_wire_inject(fx.w, src, &oc, 0, NULL);
        if (rc == 0 && !ctx_test_alloc_fired())
            succeeded = 1;
        else if (rc != 0)
            ASSERT_RC(rc, CTX_ENOMEM);
        ctx_test_alloc_fail_nth(0);
        ctx_wire_headers_release(out);
    }
    assert_true(succeeded);
    ctx_test_alloc_uninstall();
    ctx_context_release(src);
    ctx_wire_headers_release(h);
}

/* ---- threads ---- */

static void *worker(void *arg) {
    long id = (long)(intptr_t)arg;
    for (int i = 0; i < SCALED(500, 20, 50); i++) {
        char v[32];
        snprintf(v, sizeof v, "w%ld-%d", id, i);
        ctx_context_t *base = NULL;
        ctx_context_new(&base);
        ctx_context_set(base, fx.user, str_new(v, strlen(v)));
        ctx_wire_headers_t *h = NULL;
        ctx_wire_headers_new(&h);
        ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
        if (ctx_wire_inject(fx.w, base, &c, 0, NULL) != 0)
            return (void *)1;
        ctx_context_t *ctx = NULL;
        if (ctx_wire_extract(fx.w, &c, 0, &ctx, NULL) != 0)
            return (void *)2;
        const char *got = get_str(ctx, fx.user);
        int ok = got && strcmp(got, v) == 0;
        ctx_context_release(ctx);
        ctx_context_release(base);
        ctx_wire_headers_release(h);
        if (!ok)
            return (void *)3;
    }
    ctx_thread_release();
    return NULL;
}

static void test_threads_share_a_registry(void **state) {
    (void)state;
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
}

/* The trace is the request's, not a registry's: one extracted through a
 * registry is read and injected through another (a gRPC server's registry
 * and a NATS bridge's), and a context holding it outlives every registry
 * (the variable is the process's). */
static void test_registries_share_the_trace(void **state) {
    (void)state;
    static const char tp_text[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ctx_wire_t *other = NULL;
    ASSERT_RC(ctx_wire_new(&other), 0);
    assert_ptr_equal(ctx_wire_trace_var(other), ctx_wire_trace_var(fx.w));
    ctx_wire_headers_t *h = headers();
    add_header(h, "traceparent", tp_text);
    add_header(h, "tracestate", "rojo=00f067aa0ba902b7");
    ctx_context_t *ctx = extract(h, 0, NULL, 0);
    ctx_wire_headers_release(h);
    /* Read through the other registry. */
    ctx_wire_traceparent_t want, got;
    ASSERT_RC(ctx_wire_traceparent_parse(tp_text, sizeof tp_text - 1, &want), 0);
    const char *ts = NULL;
    size_t ts_len = 0;
    ASSERT_RC(ctx_wire_trace_get(other, ctx, &got, &ts, &ts_len), 0);
    assert_memory_equal(got.trace_id, want.trace_id, 16);
    assert_memory_equal(got.parent_id, want.parent_id, 8);
    assert_string_equal(ts, "rojo=00f067aa0ba902b7");
    /* Injected through it: a child of the same trace. */
    ctx_wire_headers_t *out = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(out);
    ASSERT_RC(ctx_wire_inject(other, ctx, &c, 0, NULL), 0);
    ctx_wire_traceparent_t sent;
    ASSERT_RC(ctx_wire_traceparent_parse(header(out, "traceparent"), CTX_WIRE_TRACEPARENT_LEN, &sent), 0);
    assert_memory_equal(sent.trace_id, want.trace_id, 16);
    assert_memory_not_equal(sent.parent_id, want.parent_id, 8);
    ctx_wire_headers_release(out);
    /* Both registries gone (the fixture's is dropped and made again): the
     * context still holds the trace, readable through a new registry. */
    ctx_wire_release(other);
    ctx_wire_t *saved = fx.w;
    ASSERT_RC(ctx_wire_new(&fx.w), 0);
    ctx_wire_release(saved);
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, &got, NULL, NULL), 0);
    assert_memory_equal(got.trace_id, want.trace_id, 16);
    char line[256];
    ASSERT_RC(ctx_context_format(ctx, line, sizeof line, NULL), 0);
    assert_non_null(strstr(line, "4bf92f3577b34da6a3ce929d0e0e4736"));
    ctx_context_release(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_rules),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extracted_context_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_context_injects_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inject_replaces_existing_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_traceparent_drops_tracestate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_tracestate_keeps_traceparent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tracestate_headers_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_baggage_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_baggage_key_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_baggage_key_lengths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_shrinks_per_hop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inject_limits_and_errors, setup, teardown),
        cmocka_unit_test(test_encode_error_writes_nothing),
        cmocka_unit_test_setup_teardown(test_carrier_results_are_not_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_set_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_share_a_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registries_share_the_trace, setup, teardown),
    };
    return cmocka_run_group_tests_name("wire_context", tests, NULL, NULL);
}
