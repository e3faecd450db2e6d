/* SPDX-License-Identifier: MIT */
/*
 * test_api.c — the wire module's 1.0 API contracts (docs/api-rules.md):
 *
 *   headers      ctx_wire_headers_add / _set take C strings, the _n variants
 *                explicit lengths; both refuse the same inputs;
 *   growth       the carrier (an input struct) and both reports (output
 *                structs) follow the growth rule: smaller and larger
 *                structs, unknown tails, zero sizes;
 *   contexts     the trace and deadline setters take the context they act
 *                on: an extracted context is read and completed without
 *                being entered; an entered one is refused (CTX_EENTERED)
 *                and left as it was (its scope too);
 *   logs         the inject report names what was sent, and the span-id
 *                formatter prints the span id of that call;
 *   no lock      value operations and carrier callbacks run under no lock
 *                of this module: one that blocks does not block another
 *                thread's inject/extract on the same registry, and one may
 *                call back into the same registry.
 */
#include <pthread.h>

#include "wire_test.h"

static struct {
    ctx_wire_t *w;
    ctx_var_t *user, *tenant;
} fx;

static int setup(void **state) {
    (void)state;
    ASSERT_RC(ctx_wire_new(&fx.w), 0);
    fx.user = str_var("user");
    fx.tenant = str_var("tenant");
    ASSERT_RC(ctx_wire_register(fx.w, fx.user, "userId"), 0);
    ASSERT_RC(ctx_wire_register(fx.w, fx.tenant, "tenant"), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_thread_release();
    wire_timer_teardown();
    ctx_wire_release(fx.w);
    ctx_var_release(fx.user);
    ctx_var_release(fx.tenant);
    return 0;
}

#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/* ---- headers: C strings and explicit lengths ---- */

static void test_headers_add_set(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    ASSERT_RC(ctx_wire_headers_add(h, "x-a", "1"), 0);
    ASSERT_RC(ctx_wire_headers_add(h, "X-A", "2"), 0);
    ASSERT_RC(ctx_wire_headers_add_n(h, "x-bxxx", 3, "3yyy", 1), 0);
    assert_int_equal(ctx_wire_headers_count(h), 3);
    const char *name, *value;
    ASSERT_RC(ctx_wire_headers_at(h, 2, &name, &value), 0);
    assert_string_equal(name, "x-b");
    assert_string_equal(value, "3");
    /* set replaces every spelling, C string or not */
    ASSERT_RC(ctx_wire_headers_set(h, "x-a", "9"), 0);
    assert_int_equal(ctx_wire_headers_count(h), 2);
    assert_string_equal(header(h, "X-A"), "9");
    ASSERT_RC(ctx_wire_headers_set_n(h, "x-bzz", 3, "77zz", 2), 0);
    assert_string_equal(header(h, "x-b"), "77");
    assert_int_equal(ctx_wire_headers_count(h), 2);
    /* the same refusals, and nothing changes */
    ASSERT_RC(ctx_wire_headers_add(h, NULL, "v"), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add(h, "n", NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add(h, "bad name", "v"), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add(h, "n", "cr\rlf"), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_set(h, "n", "lf\n"), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_set(h, "", "v"), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add_n(h, "n", 1, "a\0b", 3), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_set_n(h, "n", 1, NULL, 1), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_set(NULL, "n", "v"), CTX_EINVAL);
    ASSERT_RC(ctx_wire_headers_add(h, "empty", ""), 0); /* an empty value is a value */
    assert_string_equal(header(h, "empty"), "");
    assert_int_equal(ctx_wire_headers_count(h), 3);
    ctx_wire_headers_release(h);
}

/* ctx_wire_name_equal compares eight bytes at a time: every byte pair, at
 * every position of a name longer than a word, against the definition. */
static int ref_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static void test_name_equal_every_byte(void **state) {
    (void)state;
    char a[12], b[12];
    for (int pos = 0; pos < 12; pos++) {
        for (int x = 0; x < 256; x++) {
            for (int y = 0; y < 256; y += (x % 7) + 1) { /* a thinned square: fast under valgrind */
                memcpy(a, "Traceparent!", 12);
                memcpy(b, "tRACEPARENT!", 12);
                a[pos] = (char)x;
                b[pos] = (char)y;
                int want = ref_lower(x) == ref_lower(y);
                if (ctx_wire_name_equal(a, 12, b, 12) != want)
                    fail_msg("bytes %02x / %02x at %d: got %d", x, y, pos, !want);
            }
        }
    }
    assert_true(ctx_wire_name_equal(S("GRPC-TIMEOUT"), S("grpc-timeout")));
    assert_false(ctx_wire_name_equal(S("grpc\rtimeout"), S("grpc-timeout")));
    assert_false(ctx_wire_name_equal(S("baggage"), S("baggag")));
}

/* ---- the growth rule ---- */

static int one_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    (void)self;
    return fn("baggage", 7, "userId=u", 8, user);
}

static int null_set(void *self, const char *name, const char *value, size_t value_len) {
    (void)self, (void)name, (void)value, (void)value_len;
    return 0;
}

static void test_carrier_growth(void **state) {
    (void)state;
    ctx_context_t *ctx = NULL;
    const char *v;
    size_t n;
    /* a newer caller's larger carrier: a zero tail is accepted */
    struct {
        ctx_wire_carrier_t c;
        void *later[2];
    } big = {{sizeof big, one_iterate, NULL, null_set, NULL}, {NULL, NULL}};
    ASSERT_RC(ctx_wire_extract(fx.w, &big.c, 0, &ctx, NULL), 0);
    assert_string_equal(get_str(ctx, fx.user), "u");
    ASSERT_RC(ctx_wire_inject(fx.w, ctx, &big.c, 0, NULL), 0);
    ASSERT_RC(ctx_wire_carrier_get(&big.c, "baggage", &v, &n), 0);
    ctx_context_release(ctx);
    /* ... a non-zero one is refused by every call, nothing done */
    big.later[1] = &big;
    ctx = NULL;
    ASSERT_RC(ctx_wire_extract(fx.w, &big.c, 0, &ctx, NULL), CTX_EINVAL);
    assert_null(ctx);
    ASSERT_RC(ctx_wire_inject(fx.w, NULL, &big.c, 0, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_wire_carrier_get(&big.c, "baggage", &v, &n), CTX_EINVAL);
    /* a size below the 1.0 layout (or none) is refused */
    ctx_wire_carrier_t c = {0, one_iterate, NULL, null_set, NULL};
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &ctx, NULL), CTX_EINVAL);
    c.size = sizeof c - sizeof(void *);
    ASSERT_RC(ctx_wire_inject(fx.w, NULL, &c, 0, NULL), CTX_EINVAL);
    c.size = sizeof c;
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &ctx, NULL), 0);
    ctx_context_release(ctx);
}

static void test_report_growth(void **state) {
    (void)state;
    ctx_wire_headers_t *h = headers();
    add_header(h, "traceparent", TP);
    add_header(h, "baggage", "userId=u,x=1");
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    /* an older, smaller report: written up to its size only (ASan watches
     * the end of the heap block) */
    struct {
        size_t size;
        int traceparent;
    } older = {sizeof older, 0};
    void *heap = malloc(sizeof older);
    memcpy(heap, &older, sizeof older);
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &ctx, heap), 0);
    memcpy(&older, heap, sizeof older);
    free(heap);
    assert_int_equal(older.size, sizeof older);
    assert_int_equal(older.traceparent, 1);
    /* a newer, larger one: its tail is left alone */
    struct {
        ctx_wire_extract_report_t r;
        int later;
    } newer = {CTX_STRUCT_INIT(ctx_wire_extract_report_t), 42};
    newer.r.size = sizeof newer;
    ctx_context_t *ctx2 = NULL;
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &ctx2, &newer.r), 0);
    assert_int_equal(newer.r.size, sizeof newer);
    assert_int_equal(newer.r.baggage_used, 1);
    assert_int_equal(newer.r.baggage_unknown, 1);
    assert_int_equal(newer.later, 42);
    /* no size: refused before anything is done */
    ctx_wire_extract_report_t zero = {0};
    ctx_context_t *none = NULL;
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &none, &zero), CTX_EINVAL);
    assert_null(none);
    /* the inject report, the same way */
    ctx_wire_headers_t *out = headers();
    ctx_wire_carrier_t oc = ctx_wire_headers_carrier(out);
    ctx_wire_inject_report_t izero = {0};
    ASSERT_RC(ctx_wire_inject(fx.w, ctx, &oc, 0, &izero), CTX_EINVAL);
    assert_int_equal(ctx_wire_headers_count(out), 0); /* nothing written */
    struct {
        size_t size;
        int traceparent;
    } iolder = {sizeof iolder, 0};
    heap = malloc(sizeof iolder);
    memcpy(heap, &iolder, sizeof iolder);
    ASSERT_RC(ctx_wire_inject(fx.w, ctx, &oc, 0, heap), 0);
    memcpy(&iolder, heap, sizeof iolder);
    free(heap);
    assert_int_equal(iolder.traceparent, 1);
    ctx_context_release(ctx);
    ctx_context_release(ctx2);
    ctx_wire_headers_release(out);
    ctx_wire_headers_release(h);
}

/* ---- explicit contexts ---- */

static void *entered_tries(void *arg) {
    ctx_context_t *self = arg;
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_traceparent_parse(S(TP), &tp), 0);
    ASSERT_RC(ctx_wire_trace_set(fx.w, self, &tp, NULL, 0), CTX_EENTERED);
    ASSERT_RC(ctx_wire_trace_start(fx.w, self, 0, NULL), CTX_EENTERED);
    ASSERT_RC(ctx_wire_deadline_set(fx.w, self, 1000), CTX_EENTERED);
    return NULL;
}

static void test_explicit_context(void **state) {
    (void)state;
    /* an extracted context, never entered */
    ctx_wire_headers_t *h = headers();
    add_header(h, "traceparent", TP);
    add_header(h, "tracestate", "congo=1");
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &ctx, NULL), 0);
    ctx_wire_traceparent_t tp;
    const char *ts;
    size_t tn;
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, &tp, &ts, &tn), 0);
    assert_string_equal(ts, "congo=1");
    ASSERT_RC(ctx_wire_deadline_get(fx.w, ctx, &(int64_t){0}), CTX_ENOTFOUND);
    /* completed in place: a deadline and a new tracestate */
    ASSERT_RC(ctx_wire_deadline_set(fx.w, ctx, 5000000000ll), 0);
    int64_t left = 0;
    ASSERT_RC(ctx_wire_deadline_remaining(fx.w, ctx, &left), 0);
    assert_true(left > 0 && left <= 5000000000ll);
    ASSERT_RC(ctx_wire_trace_set(fx.w, ctx, &tp, S("rojo=2,congo=1")), 0);
    ASSERT_RC(ctx_wire_trace_get(fx.w, ctx, NULL, &ts, &tn), 0);
    assert_string_equal(ts, "rojo=2,congo=1");
    /* the calling thread's own context saw none of it */
    ASSERT_RC(ctx_wire_trace_get(fx.w, NULL, NULL, NULL, NULL), CTX_ENOTFOUND);
    ASSERT_RC(ctx_wire_deadline_get(fx.w, NULL, &left), CTX_ENOTFOUND);
    /* a new trace in a fresh context */
    ctx_context_t *fresh;
    ASSERT_RC(ctx_context_new(&fresh), 0);
    ctx_wire_traceparent_t started;
    ASSERT_RC(ctx_wire_trace_start(fx.w, fresh, CTX_WIRE_TRACE_FLAG_SAMPLED, &started), 0);
    ASSERT_RC(ctx_wire_trace_get(fx.w, fresh, &tp, NULL, NULL), 0);
    assert_memory_equal(&tp, &started, sizeof tp);
    /* an entered context is refused, and left as it was */
    ASSERT_RC(ctx_context_run(fresh, entered_tries, fresh, NULL), 0);
    ASSERT_RC(ctx_wire_trace_get(fx.w, fresh, &tp, NULL, NULL), 0);
    assert_memory_equal(&tp, &started, sizeof tp);
    ASSERT_RC(ctx_wire_deadline_get(fx.w, fresh, &left), CTX_ENOTFOUND);
    ctx_cancel_scope_t *none;
    ASSERT_RC(ctx_cancel_scope_get(fresh, &none), CTX_ENOTFOUND); /* no scope made */
    ctx_context_release(fresh);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

/* ---- what inject sent, for logs ---- */

static void test_inject_report(void **state) {
    (void)state;
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_traceparent_parse(S("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff"), &tp), 0);
    ASSERT_RC(ctx_wire_trace_set(fx.w, ctx, &tp, S("congo=1")), 0);
    ASSERT_RC(ctx_wire_deadline_set(fx.w, ctx, 3000000000ll), 0);
    ASSERT_RC(ctx_context_set(ctx, fx.user, str_new(S("alice"))), 0);
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_wire_inject_report_t rep = CTX_STRUCT_INIT(ctx_wire_inject_report_t);
    ASSERT_RC(ctx_wire_inject(fx.w, ctx, &c, 0, &rep), 0);
    assert_int_equal(rep.traceparent, 1);
    assert_int_equal(rep.tracestate, 1);
    assert_int_equal(rep.deadline, 1);
    assert_true(rep.timeout_ns > 0 && rep.timeout_ns <= 3000000000ll);
    assert_int_equal(rep.baggage_members, 1);
    assert_int_equal(rep.baggage_left_out, 0);
    /* the span id in the report is the parent-id in the header */
    char span[17], trace[33];
    ASSERT_RC(ctx_wire_traceparent_span_id(&rep.parent, span, sizeof span), 16);
    ASSERT_RC(ctx_wire_traceparent_trace_id(&rep.parent, trace, sizeof trace), 32);
    const char *sent = header(h, "traceparent");
    assert_non_null(sent);
    assert_memory_equal(sent + 36, span, 16);
    assert_memory_equal(sent + 3, trace, 32);
    assert_string_not_equal(span, "b7ad6b7169203331"); /* a child's own span id */
    assert_string_equal(sent + 53, "03");             /* reserved flags zeroed */
    assert_int_equal(rep.parent.flags, 0x03);
    /* the same parent when asked, and an empty context reports nothing */
    ASSERT_RC(ctx_wire_inject(fx.w, ctx, &c, CTX_WIRE_SAME_PARENT, &rep), 0);
    ASSERT_RC(ctx_wire_traceparent_span_id(&rep.parent, span, sizeof span), 16);
    assert_string_equal(span, "b7ad6b7169203331");
    ctx_context_t *empty;
    ASSERT_RC(ctx_context_new(&empty), 0);
    ASSERT_RC(ctx_wire_inject(fx.w, empty, &c, 0, &rep), 0);
    assert_int_equal(rep.traceparent, 0);
    assert_int_equal(rep.deadline, 0);
    assert_int_equal(rep.baggage_members, 0);
    ctx_context_release(empty);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

/* ---- no user callback under a lock ---- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inside, go;
    int block_encode, block_decode;
} L = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void flag_set(int *f) {
    pthread_mutex_lock(&L.lock);
    *f = 1;
    pthread_cond_broadcast(&L.cond);
    pthread_mutex_unlock(&L.lock);
}

static void flag_wait(int *f) {
    pthread_mutex_lock(&L.lock);
    while (!*f)
        pthread_cond_wait(&L.cond, &L.lock);
    pthread_mutex_unlock(&L.lock);
}

static ctx_wire_t *reentrant_w;
static ctx_var_t *blocker;
static int reentered;

/* encode/decode that call back into the registry, then block until the
 * test thread has used the same registry */
static int blocking_encode(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    reentered = ctx_wire_inject(reentrant_w, NULL, &c, 0, NULL) >= 0;
    ctx_wire_headers_release(h);
    if (L.block_encode) {
        flag_set(&L.inside);
        flag_wait(&L.go);
    }
    return str_encode(value, buf, cap, NULL);
}

static int blocking_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    ctx_wire_headers_t *h = headers();
    add_header(h, "baggage", "userId=nested");
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *nested = NULL;
    reentered = ctx_wire_extract(reentrant_w, &c, 0, &nested, NULL) == 0 &&
                strcmp(get_str(nested, fx.user), "nested") == 0;
    ctx_context_release(nested);
    ctx_wire_headers_release(h);
    if (L.block_decode) {
        flag_set(&L.inside);
        flag_wait(&L.go);
    }
    return str_decode(text, len, out, NULL);
}

static const ctx_value_ops_t blocking_ops = {.size = sizeof(ctx_value_ops_t),
                                             .release = str_release,
                                             .encode = blocking_encode,
                                             .decode = blocking_decode};

static void *inject_blocking(void *arg) {
    (void)arg;
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, blocker, str_new(S("b"))), 0);
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_inject(reentrant_w, ctx, &c, 0, NULL), 0);
    assert_string_equal(header(h, "baggage"), "blk=b");
    ctx_wire_headers_release(h);
    ctx_context_release(ctx);
    ctx_thread_release();
    return NULL;
}

static void *extract_blocking(void *arg) {
    (void)arg;
    ctx_wire_headers_t *h = headers();
    add_header(h, "baggage", "blk=b");
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_wire_extract(reentrant_w, &c, 0, &ctx, NULL), 0);
    assert_string_equal(get_str(ctx, blocker), "b");
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
    ctx_thread_release();
    return NULL;
}

/* While the other thread sits in a value operation, this thread injects
 * and extracts with the same registry. */
static void use_registry_meanwhile(void) {
    ctx_wire_headers_t *h = headers();
    add_header(h, "traceparent", TP);
    add_header(h, "baggage", "userId=main");
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_wire_extract(reentrant_w, &c, 0, &ctx, NULL), 0);
    assert_string_equal(get_str(ctx, fx.user), "main");
    ctx_wire_headers_clear(h);
    ASSERT_RC(ctx_wire_inject(reentrant_w, ctx, &c, 0, NULL), 0);
    assert_non_null(header(h, "traceparent"));
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void run_blocked(void *(*fn)(void *), int *which) {
    L.inside = L.go = 0;
    *which = 1;
    reentered = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, NULL), 0);
    flag_wait(&L.inside);
    assert_true(reentered); /* the operation called back into the registry */
    use_registry_meanwhile();
    flag_set(&L.go);
    pthread_join(t, NULL);
    *which = 0;
}

static void test_value_ops_not_under_lock(void **state) {
    (void)state;
    ASSERT_RC(ctx_wire_new(&reentrant_w), 0);
    ctx_var_options_t o = {.size = sizeof o, .ops = &blocking_ops};
    ASSERT_RC(ctx_var_new("blk", &o, &blocker), 0);
    ASSERT_RC(ctx_wire_register(reentrant_w, blocker, "blk"), 0);
    ASSERT_RC(ctx_wire_register(reentrant_w, fx.user, "userId"), 0);
    run_blocked(inject_blocking, &L.block_encode);
    run_blocked(extract_blocking, &L.block_decode);
    ctx_wire_release(reentrant_w);
    ctx_var_release(blocker);
}

/* A carrier whose callbacks call back into the registry. */
static int nested_ok;

static int reentrant_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    nested_ok += ctx_wire_extract(fx.w, &c, 0, &ctx, NULL) == 0;
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
    return fn("baggage", 7, self, strlen(self), user);
}

static int reentrant_set(void *self, const char *name, const char *value, size_t value_len) {
    (void)self, (void)name, (void)value, (void)value_len;
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    nested_ok += ctx_wire_inject(fx.w, NULL, &c, 0, NULL) == 0;
    ctx_wire_headers_release(h);
    return 0;
}

static void test_carrier_callbacks_reenter(void **state) {
    (void)state;
    nested_ok = 0;
    ctx_wire_carrier_t c = {sizeof c, reentrant_iterate, NULL, reentrant_set, (void *)"userId=r"};
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_wire_extract(fx.w, &c, 0, &ctx, NULL), 0);
    assert_string_equal(get_str(ctx, fx.user), "r");
    ASSERT_RC(ctx_wire_inject(fx.w, ctx, &c, 0, NULL), 0);
    assert_int_equal(nested_ok, 2);
    ctx_context_release(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_add_set),
        cmocka_unit_test(test_name_equal_every_byte),
        cmocka_unit_test(test_carrier_growth),
        cmocka_unit_test(test_report_growth),
        cmocka_unit_test(test_explicit_context),
        cmocka_unit_test(test_inject_report),
        cmocka_unit_test(test_value_ops_not_under_lock),
        cmocka_unit_test(test_carrier_callbacks_reenter),
    };
    return cmocka_run_group_tests_name("wire_api", tests, setup, teardown);
}
