/* SPDX-License-Identifier: MIT */
/*
 * test_locks.c — no user callback of the bus runs under one of its locks
 * (docs/api-rules.md), one test per path: a synchronous listener, the error
 * handler, a user_release (after unsubscribe, and at shutdown), an event's
 * data_release at the end of an asynchronous delivery, and a listener run
 * by a pool worker.
 *
 * Each callback holds a gate (gate_test.h) while another thread makes calls
 * on the same bus that take its locks — a global subscribe and unsubscribe
 * (the write lock), a publish (the snapshot lock), stats, wait_idle (the
 * idle lock) — which must all return while the callback still runs; then
 * the callback calls back into the same bus.
 */
#include "bus_test.h"

#include "../loop/gate_test.h"

static atomic_int quiet_calls;
static int quiet_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_fetch_add(&quiet_calls, 1);
    return 0;
}

typedef struct scene {
    ctx_bus_t *bus;
    gate_t gate;
    int back[4];
} scene_t;

/* The helper's calls: each lock of the bus, taken and let go. */
static void other_thread_calls(gate_t *g) {
    scene_t *s = g->object;
    ctx_bus_listener_t *l = NULL;
    g->rc[0] = ctx_bus_subscribe(s->bus, "other", quiet_listener, NULL, NULL, &l);
    g->rc[1] = ctx_bus_unsubscribe(l);
    ctx_bus_listener_release(l);
    g->rc[2] = publish_int(s->bus, "quiet", 1);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    g->rc[3] = ctx_bus_stats(s->bus, &st);
    g->rc[4] = ctx_bus_wait_idle(s->bus, 0);
}

static void expect_other_calls_returned(const scene_t *s, int idle_rc) {
    ASSERT_RC(s->gate.rc[0], 0);
    ASSERT_RC(s->gate.rc[1], 0);
    ASSERT_RC(s->gate.rc[2], 1); /* the quiet listener */
    ASSERT_RC(s->gate.rc[3], 0);
    ASSERT_RC(s->gate.rc[4], idle_rc);
}

/* The callback's own calls on the bus. */
static void call_back(scene_t *s) {
    ctx_bus_listener_t *l = NULL;
    s->back[0] = ctx_bus_subscribe(s->bus, "mine", quiet_listener, NULL, NULL, &l);
    s->back[1] = ctx_bus_unsubscribe(l);
    ctx_bus_listener_release(l);
    s->back[2] = publish_int(s->bus, "quiet", 2);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    s->back[3] = ctx_bus_stats(s->bus, &st);
}

static void expect_calls_back_returned(const scene_t *s) {
    ASSERT_RC(s->back[0], 0);
    ASSERT_RC(s->back[1], 0);
    ASSERT_RC(s->back[2], 1);
    ASSERT_RC(s->back[3], 0);
}

static void scene_open(scene_t *s, error_log_t *errors) {
    memset(s, 0, sizeof *s);
    s->bus = new_bus(errors);
    ctx_bus_listener_release(subscribe(s->bus, "quiet", quiet_listener, NULL, 0));
    atomic_store(&quiet_calls, 0);
}

/* ---- a synchronous listener ---- */

static int held_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    scene_t *s = user;
    gate_hold(&s->gate);
    call_back(s);
    return 0;
}

static void test_sync_listener(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s, NULL);
    ctx_bus_listener_release(subscribe(s.bus, "held", held_listener, &s, 0));
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    ASSERT_RC(publish_int(s.bus, "held", 1), 1);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s, 0);
    expect_calls_back_returned(&s);
    assert_int_equal(atomic_load(&quiet_calls), 2);
    ctx_bus_release(s.bus);
}

/* ---- the error handler ---- */

static int failing_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    return CTX_ECALLBACK;
}

static scene_t *handler_scene;

static void held_handler(ctx_bus_t *bus, ctx_bus_listener_t *listener, ctx_bus_event_t *event,
                         int code, void *user) {
    (void)bus;
    (void)listener;
    (void)event;
    (void)code;
    (void)user;
    gate_hold(&handler_scene->gate);
    call_back(handler_scene);
}

static void test_error_handler(void **state) {
    (void)state;
    scene_t s;
    memset(&s, 0, sizeof s);
    handler_scene = &s;
    ctx_bus_options_t o = CTX_STRUCT_INIT(ctx_bus_options_t);
    o.on_error = held_handler;
    ASSERT_RC(ctx_bus_new(&o, &s.bus), 0);
    ctx_bus_listener_release(subscribe(s.bus, "quiet", quiet_listener, NULL, 0));
    atomic_store(&quiet_calls, 0);
    ctx_bus_listener_release(subscribe(s.bus, "fails", failing_listener, NULL, 0));
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    ASSERT_RC(publish_int(s.bus, "fails", 1), 1);
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s, 0);
    expect_calls_back_returned(&s);
    ctx_bus_release(s.bus);
}

/* ---- user_release: after unsubscribe, and at shutdown ---- */

static scene_t *release_scene;

static void held_user_release(void *user) {
    (void)user;
    gate_hold(&release_scene->gate);
    call_back(release_scene);
}

static void test_user_release_after_unsubscribe(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s, NULL);
    release_scene = &s;
    ctx_bus_subscribe_options_t so = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    so.user_release = held_user_release;
    ctx_bus_listener_t *l = NULL;
    ASSERT_RC(ctx_bus_subscribe(s.bus, "x", quiet_listener, NULL, &so, &l), 0);
    ctx_bus_listener_release(l); /* the global list holds it now */
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    ASSERT_RC(ctx_bus_unsubscribe(l), 0); /* the list lets go: user_release holds */
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s, 0);
    expect_calls_back_returned(&s);
    ctx_bus_release(s.bus);
}

static void other_thread_while_shutting(gate_t *g) {
    scene_t *s = g->object;
    ctx_bus_listener_t *l = NULL;
    g->rc[0] = ctx_bus_subscribe(s->bus, "other", quiet_listener, NULL, NULL, &l);
    g->rc[1] = publish_int(s->bus, "quiet", 1);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    g->rc[2] = ctx_bus_stats(s->bus, &st);
    g->rc[3] = ctx_bus_wait_idle(s->bus, 0);
    g->rc[4] = ctx_bus_shutdown(s->bus);
}

static void test_user_release_at_shutdown(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s, NULL);
    release_scene = &s;
    ctx_bus_subscribe_options_t so = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    so.user_release = held_user_release;
    ASSERT_RC(ctx_bus_subscribe(s.bus, "x", quiet_listener, NULL, &so, NULL), 0);
    gate_start(&s.gate, other_thread_while_shutting, &s, NULL);
    ASSERT_RC(ctx_bus_shutdown(s.bus), 0); /* drops the list: user_release holds */
    gate_join(&s.gate);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    ASSERT_RC(s.gate.rc[0], CTX_ESHUTDOWN);
    ASSERT_RC(s.gate.rc[1], CTX_ESHUTDOWN);
    ASSERT_RC(s.gate.rc[2], 0);
    ASSERT_RC(s.gate.rc[3], 0);
    ASSERT_RC(s.gate.rc[4], 0);
    ASSERT_RC(s.back[0], CTX_ESHUTDOWN);
    ASSERT_RC(s.back[2], CTX_ESHUTDOWN);
    ASSERT_RC(s.back[3], 0);
    ctx_bus_release(s.bus);
}

/* ---- an event's data_release at the end of a pool delivery ---- */

static scene_t *data_scene;

static void held_data_release(void *data) {
    (void)data;
    gate_hold(&data_scene->gate);
    call_back(data_scene);
}

static ctx_pool_t *one_worker_pool(void) {
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    return pool;
}

/* Keeps the delivery going until the publisher has let go of the event,
 * so that the delivery's reference is the last. */
static atomic_int publisher_let_go;
static int wait_for_publisher(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    while (!atomic_load(&publisher_let_go))
        short_nap();
    return 0;
}

static void test_data_release_after_a_pool_delivery(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s, NULL);
    data_scene = &s;
    ctx_pool_t *pool = one_worker_pool();
    ctx_bus_listener_release(subscribe(s.bus, "async", wait_for_publisher, NULL, 0));
    ctx_bus_event_t *ev = NULL;
    ASSERT_RC(ctx_bus_event_new("async", NULL, held_data_release, &ev), 0);
    atomic_store(&publisher_let_go, 0);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    ASSERT_RC(ctx_bus_publish_pool(s.bus, ev, pool), 1);
    ctx_bus_event_release(ev); /* the delivery's is the last: on the worker */
    atomic_store(&publisher_let_go, 1);
    gate_join(&s.gate);
    ASSERT_RC(ctx_bus_wait_idle(s.bus, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s, CTX_ETIMEDOUT); /* the delivery was not over */
    expect_calls_back_returned(&s);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_bus_release(s.bus);
}

/* ---- a listener on a pool worker ---- */

static int held_async_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    scene_t *s = user;
    gate_hold(&s->gate);
    call_back(s);
    return 0;
}

static void test_async_listener(void **state) {
    (void)state;
    scene_t s;
    scene_open(&s, NULL);
    ctx_pool_t *pool = one_worker_pool();
    ctx_bus_listener_release(subscribe(s.bus, "async", held_async_listener, &s, 0));
    ctx_bus_event_t *ev = new_event("async", 1);
    gate_start(&s.gate, other_thread_calls, &s, NULL);
    ASSERT_RC(ctx_bus_publish_pool(s.bus, ev, pool), 1);
    ctx_bus_event_release(ev);
    gate_join(&s.gate);
    ASSERT_RC(ctx_bus_wait_idle(s.bus, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&s.gate.held), 1);
    expect_other_calls_returned(&s, CTX_ETIMEDOUT);
    expect_calls_back_returned(&s);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_bus_release(s.bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sync_listener, release_thread),
        cmocka_unit_test_teardown(test_error_handler, release_thread),
        cmocka_unit_test_teardown(test_user_release_after_unsubscribe, release_thread),
        cmocka_unit_test_teardown(test_user_release_at_shutdown, release_thread),
        cmocka_unit_test_teardown(test_data_release_after_a_pool_delivery, release_thread),
        cmocka_unit_test_teardown(test_async_listener, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
