/* SPDX-License-Identifier: MIT */
/*
 * test_headers.c — the bridge's header-level calls over a real nats-server
 * on loopback (one process: the messages still go through the server):
 * ctx_nats_connection / ctx_nats_wire, the carrier over a natsMsg's
 * headers (iterate, set replacing other spellings, no get), ctx_nats_inject
 * writing traceparent / grpc-timeout / baggage that ctx_nats_extract turns
 * back into a context with the same values, ctx_nats_publish_msg
 * delivering a caller-made message whose callback runs in the sender's
 * context, and ctx_nats_sub_dropped counting a message whose context could
 * not be decoded under the failing allocator of tests/support (installed
 * for the whole run, armed only there).
 */
#include "nats_test.h"

#include "../support/support.h"

static struct {
    int ready;
    server_t server;
    vars_t v;
    natsConnection *nc;
    ctx_nats_t *b;
} G;

#define NEED_SERVER() NATS_NEED_SERVER(G.ready)

static int group_setup(void **state) {
    (void)state;
    if (!nats_server_path())
        return 0; /* every test skips */
    if (server_start(&G.server, 0) != 0)
        return -1;
    if (vars_init(&G.v) != 0 || ctx_nats_connect(G.server.url, &G.nc) != 0 ||
        ctx_nats_new(G.nc, G.v.wire, &G.b) != 0)
        return -1;
    G.ready = 1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    ctx_nats_release(G.b);
    if (G.nc)
        natsConnection_Destroy(G.nc);
    if (G.server.pid)
        server_stop(&G.server);
    if (G.v.wire)
        vars_done(&G.v);
    return release_thread_and_timer();
}

/* The value of header `name` (exact spelling) in msg, or NULL. */
static const char *hdr(natsMsg *msg, const char *name) {
    const char *v = NULL;
    return natsMsgHeader_Get(msg, name, &v) == NATS_OK ? v : NULL;
}

static natsMsg *new_msg(const char *subject) {
    natsMsg *m = NULL;
    assert_int_equal(natsMsg_Create(&m, subject, NULL, "x", 1), NATS_OK);
    return m;
}

/* ---- accessors ---- */

static void test_accessors(void **state) {
    (void)state;
    NEED_SERVER();
    assert_ptr_equal(ctx_nats_connection(G.b), G.nc);
    assert_ptr_equal(ctx_nats_wire(G.b), G.v.wire);
    assert_null(ctx_nats_connection(NULL));
    assert_null(ctx_nats_wire(NULL));
    /* a second bridge over the same connection reports its own registry */
    ctx_wire_t *w2;
    ASSERT_RC(ctx_wire_new(&w2), 0);
    ctx_nats_t *b2;
    ASSERT_RC(ctx_nats_new(G.nc, w2, &b2), 0);
    assert_ptr_equal(ctx_nats_connection(b2), G.nc);
    assert_ptr_equal(ctx_nats_wire(b2), w2);
    ctx_wire_release(w2); /* the bridge retains it */
    assert_ptr_equal(ctx_nats_wire(b2), w2);
    ctx_nats_release(b2);
}

/* ---- the carrier ---- */

typedef struct walk {
    int calls;
    char seen[256];
} walk_t;

static int record_pair(const char *name, size_t name_len, const char *value, size_t value_len, void *user) {
    walk_t *w = user;
    w->calls++;
    snprintf(w->seen + strlen(w->seen), sizeof w->seen - strlen(w->seen), "%.*s=%.*s;", (int)name_len, name,
             (int)value_len, value);
    return 0;
}

static int stop_at_second(const char *name, size_t name_len, const char *value, size_t value_len, void *user) {
    (void)name, (void)name_len, (void)value, (void)value_len;
    return ++((walk_t *)user)->calls == 2 ? CTX_ELIMIT : 0;
}

static void test_carrier(void **state) {
    (void)state;
    NEED_SERVER();
    natsMsg *m = new_msg("ctx.api.carrier");
    ctx_wire_carrier_t c = ctx_nats_carrier(m);
    assert_ptr_equal(c.self, m);
    assert_non_null(c.iterate);
    assert_non_null(c.set);
    assert_null(c.get);
    /* no headers yet: iterate calls nothing */
    walk_t w = {0, ""};
    ASSERT_RC(c.iterate(c.self, record_pair, &w), 0);
    assert_int_equal(w.calls, 0);
    const char *v = NULL;
    size_t n = 0;
    ASSERT_RC(ctx_wire_carrier_get(&c, "traceparent", &v, &n), CTX_ENOTFOUND);
    /* every value of every key, repeated ones included */
    assert_int_equal(natsMsgHeader_Add(m, "Traceparent", "old"), NATS_OK);
    assert_int_equal(natsMsgHeader_Add(m, "x-app", "1"), NATS_OK);
    assert_int_equal(natsMsgHeader_Add(m, "x-app", "2"), NATS_OK);
    ASSERT_RC(c.iterate(c.self, record_pair, &w), 0);
    assert_int_equal(w.calls, 3);
    assert_non_null(strstr(w.seen, "Traceparent=old;"));
    assert_non_null(strstr(w.seen, "x-app=1;x-app=2;"));
    /* a negative code from the callback stops the walk and comes back */
    walk_t s = {0, ""};
    ASSERT_RC(c.iterate(c.self, stop_at_second, &s), CTX_ELIMIT);
    assert_int_equal(s.calls, 2);
    /* get goes through iterate and ignores case */
    ASSERT_RC(ctx_wire_carrier_get(&c, "traceparent", &v, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "old", 3);
    /* set replaces the value under every spelling, and writes lowercase */
    assert_int_equal(natsMsgHeader_Add(m, "TRACEPARENT", "older"), NATS_OK);
    ASSERT_RC(c.set(c.self, "traceparent", "new-value", 3), 0);
    assert_null(hdr(m, "Traceparent"));
    assert_null(hdr(m, "TRACEPARENT"));
    assert_non_null(hdr(m, "traceparent"));
    assert_string_equal(hdr(m, "traceparent"), "new");
    /* other headers are untouched */
    const char **values = NULL;
    int count = 0;
    assert_int_equal(natsMsgHeader_Values(m, "x-app", &values, &count), NATS_OK);
    assert_int_equal(count, 2);
    free((void *)values);
    /* a long value (not on set's stack buffer) */
    char big[2000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ASSERT_RC(c.set(c.self, "baggage", big, strlen(big)), 0);
    assert_string_equal(hdr(m, "baggage"), big);
    natsMsg_Destroy(m);
}

/* ---- inject and extract ---- */

typedef struct sent {
    char trace[33];
    ctx_wire_traceparent_t parent;
    ctx_context_t *copy; /* the sender's context, for an explicit inject */
} sent_t;

static void *inject_current(void *arg) {
    natsMsg *m = ((void **)arg)[0];
    sent_t *s = ((void **)arg)[1];
    set_str(G.v.user, "alice");
    set_str(G.v.tenant, "acme");
    ASSERT_RC(ctx_wire_trace_start(G.v.wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, &s->parent), 0);
    ASSERT_RC(ctx_wire_deadline_set(G.v.wire, NULL, 60000000000ll), 0);
    trace_hex(G.v.wire, NULL, s->trace);
    ASSERT_RC(ctx_context_copy_current(&s->copy), 0);
    ASSERT_RC(ctx_nats_inject(G.b, NULL, m, NULL), 0);
    return NULL;
}

static void check_extracted(natsMsg *m, const sent_t *s) {
    ctx_context_t *got = NULL;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    ASSERT_RC(ctx_nats_extract(G.b, m, &got, &rep), 0);
    assert_non_null(got);
    assert_int_equal(rep.traceparent, 1);
    assert_int_equal(rep.deadline, 1);
    assert_int_equal(rep.baggage, 1);
    assert_int_equal(rep.baggage_used, 2);
    assert_string_equal(get_str(got, G.v.user), "alice");
    assert_string_equal(get_str(got, G.v.tenant), "acme");
    assert_string_equal(get_str(got, G.v.seq), "-"); /* never set: not sent */
    char hex[33];
    trace_hex(G.v.wire, got, hex);
    assert_string_equal(hex, s->trace);
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_trace_get(G.v.wire, got, &tp, NULL, NULL), 0);
    assert_memory_not_equal(tp.parent_id, s->parent.parent_id, 8); /* a child */
    assert_int_equal(tp.flags, CTX_WIRE_TRACE_FLAG_SAMPLED | CTX_WIRE_TRACE_FLAG_RANDOM);
    int64_t left = -1;
    ASSERT_RC(ctx_wire_deadline_remaining(G.v.wire, got, &left), 0);
    assert_true(left > 0 && left <= 60000000000ll);
    ctx_context_release(got);
}

static void test_inject_extract(void **state) {
    (void)state;
    NEED_SERVER();
    natsMsg *m = new_msg("ctx.api.inject");
    /* a stale header under another spelling is replaced, not duplicated */
    assert_int_equal(natsMsgHeader_Set(m, "Baggage", "user=mallory"), NATS_OK);
    sent_t s;
    memset(&s, 0, sizeof s);
    void *args[2] = {m, &s};
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, inject_current, args, NULL), 0);
    ctx_context_release(ctx);
    /* the headers are there, in the formats of wire.h */
    const char *tp = hdr(m, "traceparent");
    assert_non_null(tp);
    assert_int_equal(strlen(tp), CTX_WIRE_TRACEPARENT_LEN);
    assert_non_null(strstr(tp, s.trace));
    assert_non_null(hdr(m, "grpc-timeout"));
    const char *bag = hdr(m, "baggage");
    assert_non_null(bag);
    assert_non_null(strstr(bag, "user=alice"));
    assert_non_null(strstr(bag, "tenant=acme"));
    assert_null(hdr(m, "Baggage"));
    /* extracted here, outside the sender's context: the same values */
    assert_string_equal(get_str(NULL, G.v.user), "-");
    check_extracted(m, &s);
    natsMsg_Destroy(m);

    /* an explicit context (not the current one) is injected as well */
    natsMsg *m2 = new_msg("ctx.api.inject");
    ASSERT_RC(ctx_nats_inject(G.b, s.copy, m2, NULL), 0);
    check_extracted(m2, &s);
    natsMsg_Destroy(m2);
    ctx_context_release(s.copy);

    /* a message from an HTTP-style peer: names in another case */
    natsMsg *m3 = new_msg("ctx.api.inject");
    assert_int_equal(natsMsgHeader_Set(m3, "Traceparent",
                                       "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                     NATS_OK);
    assert_int_equal(natsMsgHeader_Set(m3, "BAGGAGE", "user=bob"), NATS_OK);
    ctx_context_t *got = NULL;
    ASSERT_RC(ctx_nats_extract(G.b, m3, &got, NULL), 0);
    assert_string_equal(get_str(got, G.v.user), "bob");
    char hex[33];
    trace_hex(G.v.wire, got, hex);
    assert_string_equal(hex, "0af7651916cd43dd8448eb211c80319c");
    ctx_context_release(got);
    natsMsg_Destroy(m3);

    /* no headers: an empty context */
    natsMsg *m4 = new_msg("ctx.api.inject");
    ASSERT_RC(ctx_nats_extract(G.b, m4, &got, NULL), 0);
    assert_int_equal(ctx_context_length(got), 0);
    ctx_context_release(got);
    /* the empty current context writes nothing */
    ASSERT_RC(ctx_nats_inject(G.b, NULL, m4, NULL), 0);
    const char **keys = NULL;
    int nkeys = -1;
    assert_int_equal(natsMsgHeader_Keys(m4, &keys, &nkeys), NATS_NOT_FOUND);
    free((void *)keys);

    /* NULLs */
    ASSERT_RC(ctx_nats_inject(NULL, NULL, m4, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_nats_inject(G.b, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_nats_extract(NULL, m4, &got, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_nats_extract(G.b, NULL, &got, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_nats_extract(G.b, m4, NULL, NULL), CTX_EINVAL);
    natsMsg_Destroy(m4);
}

/* ---- publish_msg: a caller-made message, delivered in its sender's context ---- */

static struct {
    pthread_mutex_t lock;
    int calls;
    char user[32], trace[33], app[16], data[16];
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_msg(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    pthread_mutex_lock(&R.lock);
    R.calls++;
    snprintf(R.user, sizeof R.user, "%s", get_str(NULL, G.v.user));
    trace_hex(ctx_nats_wire(b), NULL, R.trace);
    snprintf(R.app, sizeof R.app, "%s", hdr(msg, "x-app") ? hdr(msg, "x-app") : "-");
    payload(msg, R.data, sizeof R.data);
    pthread_mutex_unlock(&R.lock);
}

static void *publish_as_bob(void *arg) {
    natsMsg *m = arg;
    set_str(G.v.user, "bob");
    ASSERT_RC(ctx_wire_trace_start(G.v.wire, NULL, 0, NULL), 0);
    ASSERT_RC(ctx_nats_publish_msg(G.b, m), 0);
    char *trace = malloc(33);
    trace_hex(G.v.wire, NULL, trace);
    return trace;
}

static int wait_delivered(ctx_nats_sub_t *sub, uint64_t n) {
    for (int i = 0; i < 1000 * SLOW && sub_delivered(sub) < n; i++)
        sleep_ms(10);
    return sub_delivered(sub) == n;
}

static void test_publish_msg(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *sub;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.api.msg", NULL, on_msg, NULL, &sub), 0);
    natsConnection_Flush(G.nc);
    natsMsg *m;
    assert_int_equal(natsMsg_Create(&m, "ctx.api.msg", NULL, "hello", 5), NATS_OK);
    assert_int_equal(natsMsgHeader_Set(m, "x-app", "7"), NATS_OK);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    void *trace = NULL;
    ASSERT_RC(ctx_context_run(ctx, publish_as_bob, m, &trace), 0);
    ctx_context_release(ctx);
    /* the message stays the caller's, with the context added to it */
    assert_non_null(hdr(m, "traceparent"));
    assert_non_null(strstr(hdr(m, "baggage"), "user=bob"));
    assert_string_equal(hdr(m, "x-app"), "7");
    natsMsg_Destroy(m);
    assert_true(wait_delivered(sub, 1));
    pthread_mutex_lock(&R.lock);
    assert_int_equal(R.calls, 1);
    assert_string_equal(R.user, "bob"); /* the sender's context */
    assert_string_equal(R.trace, (char *)trace);
    assert_string_equal(R.app, "7"); /* the caller's own header kept */
    assert_string_equal(R.data, "hello");
    pthread_mutex_unlock(&R.lock);
    free(trace);

    /* sent from a context without values: the callback sees none (not
     * bob's, not the delivery thread's) */
    assert_int_equal(natsMsg_Create(&m, "ctx.api.msg", NULL, "plain", 5), NATS_OK);
    ASSERT_RC(ctx_nats_publish_msg(G.b, m), 0);
    natsMsg_Destroy(m);
    assert_true(wait_delivered(sub, 2));
    pthread_mutex_lock(&R.lock);
    assert_string_equal(R.user, "-");
    assert_string_equal(R.trace, "-");
    assert_string_equal(R.app, "-");
    assert_string_equal(R.data, "plain");
    pthread_mutex_unlock(&R.lock);
    assert_int_equal(sub_dropped(sub), 0);

    ASSERT_RC(ctx_nats_publish_msg(G.b, NULL), CTX_EINVAL);
    assert_int_equal(natsMsg_Create(&m, "ctx.api.msg", NULL, "x", 1), NATS_OK);
    ASSERT_RC(ctx_nats_publish_msg(NULL, m), CTX_EINVAL);
    natsMsg_Destroy(m);
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
}

/* ---- sub_dropped: no memory to decode a message's context ---- */

static int dropped_calls;

static void on_counted(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)msg, (void)user;
    __atomic_fetch_add(&dropped_calls, 1, __ATOMIC_SEQ_CST);
}

static void *inject_carol(void *arg) {
    set_str(G.v.user, "carol");
    ASSERT_RC(ctx_wire_trace_start(G.v.wire, NULL, 0, NULL), 0);
    ASSERT_RC(ctx_nats_inject(G.b, NULL, arg, NULL), 0);
    return NULL;
}

static void test_sub_dropped(void **state) {
    (void)state;
    NEED_SERVER();
    assert_int_equal(sub_dropped(NULL), 0);
    assert_int_equal(sub_delivered(NULL), 0);
    ctx_nats_sub_t *sub;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.api.drop", NULL, on_counted, NULL, &sub), 0);
    natsConnection_Flush(G.nc);
    /* the message and its headers are made first, with memory */
    natsMsg *m;
    assert_int_equal(natsMsg_Create(&m, "ctx.api.drop", NULL, "x", 1), NATS_OK);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, inject_carol, m, NULL), 0);
    ctx_context_release(ctx);
    /* then every ctxvar allocation fails (libnats allocates on its own);
     * the allocator was installed by main, before any thread existed */
    ctx_test_alloc_fail_nth(0); /* clears `fired` */
    ctx_test_alloc_fail_all(1);
    assert_int_equal(natsConnection_PublishMsg(G.nc, m), NATS_OK);
    for (int i = 0; i < 1000 * SLOW && sub_dropped(sub) == 0; i++)
        sleep_ms(10);
    ctx_test_alloc_fail_all(0);
    assert_true(ctx_test_alloc_fired());
    assert_int_equal(sub_dropped(sub), 1);
    assert_int_equal(sub_delivered(sub), 0);
    assert_int_equal(__atomic_load_n(&dropped_calls, __ATOMIC_SEQ_CST), 0);
    /* with memory again the same message is delivered, and the count stays */
    assert_int_equal(natsConnection_PublishMsg(G.nc, m), NATS_OK);
    natsMsg_Destroy(m);
    assert_true(wait_delivered(sub, 1));
    assert_int_equal(__atomic_load_n(&dropped_calls, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(sub_dropped(sub), 1);
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accessors),      cmocka_unit_test(test_carrier),
        cmocka_unit_test(test_inject_extract), cmocka_unit_test(test_publish_msg),
        cmocka_unit_test(test_sub_dropped),
    };
    /* The failing allocator (test_sub_dropped) is installed while no other
     * thread runs and removed once libnats' threads are gone: libnats ends
     * a subscription's delivery thread on its own time, and that thread's
     * exit frees its ctxvar state (ctx_set_allocator is not thread-safe). */
    ctx_test_alloc_install();
    int failed = cmocka_run_group_tests_name("nats_headers", tests, group_setup, group_teardown);
    nats_CloseAndWait(5000);
    ctx_test_alloc_uninstall();
    return failed;
}
