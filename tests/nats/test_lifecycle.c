/* SPDX-License-Identifier: MIT */
/*
 * test_lifecycle.c — the bridge's contracts around its edges, over a real
 * nats-server on loopback:
 *
 *   fork        a bridge (with a live subscription, bus routes and the
 *               reply subscription of requests with a scope) made
 *               before fork() answers every call in the child with
 *               CTX_EFORKED, its subscription and the bridge release there
 *               at once (no hang), the child's own contexts keep working,
 *               and the parent's bridge is untouched;
 *   errors      ctx_nats_connect to a closed port is CTX_ECONNECTION;
 *   growth      ctx_nats_sub_stats_t written no further than its size,
 *               ctx_nats_bus_codec_t read by the growth rule;
 *   no lock     a message callback that blocks does not block other
 *               threads' calls on the same bridge and subscription, and a
 *               callback may call back into them; the same for the bus
 *               codec's encode and decode.
 */
#include "nats_test.h"

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

static int counted;
static void on_count(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)msg, (void)user;
    __atomic_fetch_add(&counted, 1, __ATOMIC_SEQ_CST);
}

static int wait_count(ctx_nats_sub_t *sub, uint64_t n) {
    for (int i = 0; i < 1000 * SLOW && sub_delivered(sub) < n; i++)
        sleep_ms(10);
    return sub_delivered(sub) == n;
}

/* ---- fork ---- */

/* The child reports through a pipe: 0, or the number of the check that
 * failed.  Under valgrind it then kills itself: valgrind's leak check at the
 * child's exit would report everything the parent still holds (the bridge,
 * libnats' threads' memory) and change the exit status. */
static int child_report_fd = -1;

static void child_finish(int n) {
    ssize_t k = write(child_report_fd, &n, sizeof n);
    (void)k;
#if defined(CTX_TEST_UNDER_VALGRIND)
    raise(SIGKILL);
#endif
    _exit(n);
}

#define CHILD_CHECK(n, cond)                                                   \
    do {                                                                       \
        if (!(cond))                                                           \
            child_finish(n);                                                   \
    } while (0)

static void child_after_fork(ctx_nats_sub_t *sub, ctx_bus_t *bus, ctx_nats_sub_t *receive) {
    alarm(60); /* whatever happens, the child ends */
    natsMsg *m = NULL, *reply = NULL;
    ctx_context_t *ctx = NULL;
    ctx_nats_sub_t *s2 = NULL;
    CHILD_CHECK(10, ctx_nats_publish(G.b, "ctx.fork", "x", 1) == CTX_EFORKED);
    CHILD_CHECK(11, ctx_nats_request(G.b, "ctx.fork", "x", 1, 100, &reply, NULL) == CTX_EFORKED);
    CHILD_CHECK(12, reply == NULL);
    ctx_token_t *tok = NULL; /* a request with a scope: the bridge's own path */
    CHILD_CHECK(26, ctx_cancel_enter_child(NULL, NULL, &tok) == 0);
    CHILD_CHECK(27, ctx_nats_request(G.b, "ctx.fork", "x", 1, 100, &reply, NULL) == CTX_EFORKED);
    CHILD_CHECK(28, ctx_cancel_exit(tok) == 0);
    CHILD_CHECK(13, ctx_nats_subscribe(G.b, "ctx.fork", NULL, on_count, NULL, &s2) == CTX_EFORKED);
    CHILD_CHECK(14, natsMsg_Create(&m, "ctx.fork", "reply.to", "x", 1) == NATS_OK);
    CHILD_CHECK(15, ctx_nats_inject(G.b, NULL, m, NULL) == CTX_EFORKED);
    CHILD_CHECK(16, ctx_nats_extract(G.b, m, &ctx, NULL) == CTX_EFORKED && ctx == NULL);
    CHILD_CHECK(17, ctx_nats_publish_msg(G.b, m) == CTX_EFORKED);
    CHILD_CHECK(18, ctx_nats_respond(G.b, m, "x", 1) == CTX_EFORKED);
    CHILD_CHECK(19, ctx_nats_bus_forward(G.b, bus, "*", "fork", &bus_codec, NULL) == CTX_EFORKED);
    CHILD_CHECK(20, ctx_nats_bus_receive(G.b, bus, "fork", &bus_codec, &s2) == CTX_EFORKED);
    /* the child's own contexts keep working (they are plain memory) */
    CHILD_CHECK(21, set_str(G.v.user, "child") == 0 && strcmp(get_str(NULL, G.v.user), "child") == 0);
    CHILD_CHECK(22, ctx_wire_trace_start(G.v.wire, NULL, 0, NULL) == 0);
    /* the counts are readable, and ending things does not hang */
    CHILD_CHECK(23, sub_delivered(sub) == 1);
    CHILD_CHECK(24, ctx_nats_unsubscribe(sub) == 0);
    CHILD_CHECK(25, ctx_nats_unsubscribe(receive) == 0);
    ctx_nats_release(G.b);
    child_finish(0);
}

static void test_fork_with_live_bridge(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *sub, *receive;
    ctx_bus_t *bus;
    ASSERT_RC(ctx_bus_new(NULL, &bus), 0);
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.fork", NULL, on_count, NULL, &sub), 0);
    ASSERT_RC(ctx_nats_bus_receive(G.b, bus, "fork", &bus_codec, &receive), 0);
    ASSERT_RC(ctx_nats_bus_forward(G.b, bus, "*", "fork", &bus_codec, NULL), 0);
    assert_int_equal(natsConnection_Flush(G.nc), NATS_OK);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.fork", "x", 1), 0);
    assert_true(wait_count(sub, 1));
    /* a request with a scope gives the bridge its reply subscription, which
     * the child's release must leave to libnats (not touch it) */
    ctx_token_t *tok;
    natsMsg *reply = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, NULL, &tok), 0);
    ASSERT_RC(ctx_nats_request(G.b, "ctx.fork.nobody", "x", 1, 5000 * SLOW, &reply, NULL), CTX_ENOTFOUND);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    /* the child gets its own reference to release, as a real program would */
    ctx_nats_t *extra = NULL;
    ASSERT_RC(ctx_nats_new(G.nc, G.v.wire, &extra), 0);
    ctx_nats_t *parent_b = G.b;
    int report[2];
    assert_int_equal(pipe(report), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(report[0]);
        child_report_fd = report[1];
        ctx_nats_release(extra);
        child_after_fork(sub, bus, receive);
    }
    close(report[1]);
    int result = -1, status = -1;
    for (int i = 0; i < 6000 && waitpid(pid, &status, WNOHANG) == 0; i++)
        sleep_ms(10);
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        close(report[0]);
        fail_msg("the child hung");
    }
    if (read(report[0], &result, sizeof result) != (ssize_t)sizeof result)
        result = -1;
    close(report[0]);
    if (result != 0)
        fail_msg("the child's check %d failed (status %d)", result, status);
    /* the parent's bridge and subscription are untouched */
    assert_ptr_equal(G.b, parent_b);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.fork", "y", 1), 0);
    assert_true(wait_count(sub, 2));
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
    ASSERT_RC(ctx_nats_unsubscribe(receive), 0);
    ctx_nats_release(extra);
    ctx_bus_release(bus);
}

/* ---- errors that say what happened ---- */

static void test_connect_closed_port(void **state) {
    (void)state;
    int port = free_port(); /* nothing listens there now */
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    natsConnection *nc = NULL;
    ASSERT_RC(ctx_nats_connect(url, &nc), CTX_ECONNECTION);
    assert_null(nc);
    ASSERT_RC(ctx_nats_connect(NULL, &nc), CTX_EINVAL);
    ASSERT_RC(ctx_nats_connect(url, NULL), CTX_EINVAL);
}

/* ---- the growth rule ---- */

static void test_stats_growth(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *sub;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.growth", NULL, on_count, NULL, &sub), 0);
    assert_int_equal(natsConnection_Flush(G.nc), NATS_OK);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.growth", "x", 1), 0);
    assert_true(wait_count(sub, 1));
    /* an older, smaller struct: written up to its size only (ASan watches
     * the heap block's end) */
    struct {
        size_t size;
        uint64_t delivered;
    } older = {sizeof older, 0};
    void *heap = malloc(sizeof older);
    memcpy(heap, &older, sizeof older);
    ASSERT_RC(ctx_nats_sub_stats(sub, heap), 0);
    memcpy(&older, heap, sizeof older);
    free(heap);
    assert_int_equal(older.size, sizeof older);
    assert_int_equal(older.delivered, 1);
    /* a newer, larger one: its tail is left alone */
    struct {
        ctx_nats_sub_stats_t st;
        uint64_t later;
    } newer = {CTX_STRUCT_INIT(ctx_nats_sub_stats_t), 99};
    newer.st.size = sizeof newer;
    ASSERT_RC(ctx_nats_sub_stats(sub, &newer.st), 0);
    assert_int_equal(newer.st.size, sizeof newer);
    assert_int_equal(newer.st.delivered, 1);
    assert_int_equal(newer.later, 99);
    ctx_nats_sub_stats_t bad = {0};
    ASSERT_RC(ctx_nats_sub_stats(sub, &bad), CTX_EINVAL);
    ASSERT_RC(ctx_nats_sub_stats(NULL, &newer.st), CTX_EINVAL);
    ASSERT_RC(ctx_nats_sub_stats(sub, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
}

static void test_codec_growth(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_bus_t *bus;
    ASSERT_RC(ctx_bus_new(NULL, &bus), 0);
    struct {
        ctx_nats_bus_codec_t codec;
        void *later;
    } newer = {bus_codec, NULL};
    newer.codec.size = sizeof newer;
    ctx_nats_sub_t *sub = NULL;
    /* a larger struct whose unknown tail is zero: accepted */
    ASSERT_RC(ctx_nats_bus_receive(G.b, bus, "growth", &newer.codec, &sub), 0);
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
    /* ... with something in the tail: refused, nothing made */
    newer.later = &newer;
    sub = NULL;
    ASSERT_RC(ctx_nats_bus_receive(G.b, bus, "growth", &newer.codec, &sub), CTX_EINVAL);
    assert_null(sub);
    ASSERT_RC(ctx_nats_bus_forward(G.b, bus, "*", "growth", &newer.codec, NULL), CTX_EINVAL);
    /* a size below the 1.0 layout: refused */
    ctx_nats_bus_codec_t old = bus_codec;
    old.size = sizeof(size_t);
    ASSERT_RC(ctx_nats_bus_forward(G.b, bus, "*", "growth", &old, NULL), CTX_EINVAL);
    /* no codec at all still means "no data" */
    ASSERT_RC(ctx_nats_bus_receive(G.b, bus, "growth", NULL, &sub), 0);
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
    ctx_bus_release(bus);
}

/* ---- no user callback under a lock of this module ---- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int in_callback, release, reentered;
} B = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static ctx_nats_sub_t *blocking_sub;

static void wait_flag(int *flag) {
    pthread_mutex_lock(&B.lock);
    for (int i = 0; i < 1000 * SLOW && !*flag; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&B.cond, &B.lock, &ts);
    }
    pthread_mutex_unlock(&B.lock);
}

static void set_flag(int *flag) {
    pthread_mutex_lock(&B.lock);
    *flag = 1;
    pthread_cond_broadcast(&B.cond);
    pthread_mutex_unlock(&B.lock);
}

/* Calls back into the bridge and its own subscription, then blocks until
 * the test thread has used them too. */
static void on_blocking(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)msg, (void)user;
    ctx_nats_sub_t *other = NULL;
    int ok = ctx_nats_publish(b, "ctx.lock.side", "r", 1) == 0 &&
             sub_delivered(blocking_sub) == 0 && /* counted after the callback */
             ctx_nats_subscribe(b, "ctx.lock.other", NULL, on_count, NULL, &other) == 0 &&
             ctx_nats_unsubscribe(other) == 0 && ctx_nats_unsubscribe(blocking_sub) == CTX_EBUSY;
    pthread_mutex_lock(&B.lock);
    B.reentered = ok;
    pthread_mutex_unlock(&B.lock);
    set_flag(&B.in_callback);
    wait_flag(&B.release);
}

static void test_callback_not_under_lock(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *side;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.lock.side", NULL, on_count, NULL, &side), 0);
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.lock.block", NULL, on_blocking, NULL, &blocking_sub), 0);
    assert_int_equal(natsConnection_Flush(G.nc), NATS_OK);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.lock.block", "x", 1), 0);
    wait_flag(&B.in_callback);
    assert_true(B.in_callback);
    assert_true(B.reentered); /* the callback could call back in */
    /* while it blocks, this thread uses the same bridge and subscription */
    ctx_nats_sub_stats_t st = sub_stats(blocking_sub);
    assert_int_equal(st.delivered, 0);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.lock.side", "y", 1), 0);
    assert_true(wait_count(side, 2)); /* another subscription's callbacks run */
    ctx_nats_sub_t *more;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.lock.more", NULL, on_count, NULL, &more), 0);
    ASSERT_RC(ctx_nats_unsubscribe(more), 0);
    set_flag(&B.release);
    assert_true(wait_count(blocking_sub, 1));
    ASSERT_RC(ctx_nats_unsubscribe(blocking_sub), 0);
    ASSERT_RC(ctx_nats_unsubscribe(side), 0);
}

/* The bus codec: encode runs on the publishing thread, decode on the
 * delivery thread; both may call back into the bridge, and a decode that
 * blocks does not stop another thread publishing through the bridge. */
static struct {
    int encode_reentered, decode_reentered;
    int decode_in, decode_go;
} C;

static int codec_encode(const char *topic, const void *data, char *buf, size_t cap, void *user) {
    (void)topic, (void)user;
    ctx_nats_sub_stats_t st = CTX_STRUCT_INIT(ctx_nats_sub_stats_t);
    C.encode_reentered = ctx_nats_publish(G.b, "ctx.codec.side", "e", 1) == 0 &&
                         ctx_nats_sub_stats(blocking_sub, &st) == 0;
    return snprintf(buf, cap, "%s", (const char *)data);
}

static int codec_decode(const char *topic, const char *bytes, size_t len, void **data, void *user) {
    (void)topic, (void)user;
    C.decode_reentered = ctx_nats_publish(G.b, "ctx.codec.side", "d", 1) == 0;
    set_flag(&C.decode_in);
    wait_flag(&C.decode_go);
    return bus_decode(topic, bytes, len, data, NULL);
}

static int delivered_events;
static int on_event(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self, (void)event, (void)user;
    __atomic_fetch_add(&delivered_events, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void test_codec_not_under_lock(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_bus_codec_t codec = {.size = sizeof codec, .encode = codec_encode,
                                  .decode = codec_decode, .release = free};
    ctx_bus_t *out_bus, *in_bus;
    ASSERT_RC(ctx_bus_new(NULL, &out_bus), 0);
    ASSERT_RC(ctx_bus_new(NULL, &in_bus), 0);
    ctx_nats_sub_t *side, *receive;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.codec.side", NULL, on_count, NULL, &side), 0);
    blocking_sub = side;
    ASSERT_RC(ctx_bus_subscribe(in_bus, "*", on_event, NULL, NULL, NULL), 0);
    /* a second bridge receives, so the origin check does not skip it */
    ctx_nats_t *rb;
    ASSERT_RC(ctx_nats_new(G.nc, G.v.wire, &rb), 0);
    ASSERT_RC(ctx_nats_bus_receive(rb, in_bus, "codec", &codec, &receive), 0);
    ASSERT_RC(ctx_nats_bus_forward(G.b, out_bus, "*", "codec", &codec, NULL), 0);
    assert_int_equal(natsConnection_Flush(G.nc), NATS_OK);
    ctx_bus_event_t *ev;
    ASSERT_RC(ctx_bus_event_new("thing", strdup("payload"), free, &ev), 0);
    assert_true(ctx_bus_publish(out_bus, ev) >= 1);
    ctx_bus_event_release(ev);
    assert_true(C.encode_reentered);
    wait_flag(&C.decode_in);
    assert_true(C.decode_in);
    assert_true(C.decode_reentered);
    /* decode is blocked on the delivery thread: this thread still publishes */
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.codec.side", "t", 1), 0);
    set_flag(&C.decode_go);
    for (int i = 0; i < 1000 * SLOW && __atomic_load_n(&delivered_events, __ATOMIC_SEQ_CST) == 0; i++)
        sleep_ms(10);
    assert_int_equal(__atomic_load_n(&delivered_events, __ATOMIC_SEQ_CST), 1);
    assert_true(wait_count(side, 3));
    ASSERT_RC(ctx_nats_unsubscribe(receive), 0);
    ASSERT_RC(ctx_nats_unsubscribe(side), 0);
    ctx_nats_release(rb);
    ctx_bus_release(out_bus);
    ctx_bus_release(in_bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_closed_port), cmocka_unit_test(test_stats_growth),
        cmocka_unit_test(test_codec_growth),        cmocka_unit_test(test_callback_not_under_lock),
        cmocka_unit_test(test_codec_not_under_lock), cmocka_unit_test(test_fork_with_live_bridge),
    };
    int failed = cmocka_run_group_tests_name("nats_lifecycle", tests, group_setup, group_teardown);
    nats_CloseAndWait(5000);
    return failed;
}
