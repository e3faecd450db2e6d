/* SPDX-License-Identifier: MIT */
/*
 * test_loop.c — asynchronous delivery on a ctx_loop_t (libuv): listeners run
 * on the loop thread, in a private copy of the context each publisher had
 * when it published, while other threads keep publishing; one thread's
 * events arrive in publish order; a closing loop drops what it has not run
 * and every event is still released once; a closed loop refuses.
 *
 * Built in every configuration; without the loop module (no libuv) its
 * tests are skipped.
 */
#include "bus_test.h"

#if defined(CTX_BUS_HAVE_LOOP)

#include <ctxvar/loop.h>

#define LOOP_PUBLISHERS 3

static ctx_var_t *request_var;
static ctx_bus_t *bus;
static ctx_loop_t *loop;
static pthread_t loop_thread;
static ctx_loop_future_t *all_done;
static atomic_int delivered;
static int expected_total;

/* Event data: publisher * SPAN + sequence number; the publisher's context
 * holds the same number when it publishes. */
#define SPAN 100000L

static int on_loop_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)user;
    long data = (long)(intptr_t)ctx_bus_event_data(event);
    OFF_MAIN_CHECK(pthread_equal(pthread_self(), loop_thread));
    OFF_MAIN_CHECK(ctx_loop_current() == loop);
    OFF_MAIN_CHECK(get_int(request_var) == data);
    if (atomic_fetch_add(&delivered, 1) + 1 == expected_total)
        OFF_MAIN_CHECK(ctx_loop_future_set_result(all_done, NULL) == 0);
    return 0;
}

static recorder_t scoped_recorders[LOOP_PUBLISHERS + 1];

static int events_per_publisher(void) { return SCALED(300, 15, 60); }

static void publish_series(long who) {
    for (long i = 0; i < events_per_publisher(); i++) {
        long value = who * SPAN + i;
        OFF_MAIN_CHECK(ctx_var_set(request_var, IV(value), NULL) == 0);
        ctx_bus_event_t *ev = NULL;
        OFF_MAIN_CHECK(ctx_bus_event_new("ui.progress", IV(value), count_release, &ev) == 0);
        OFF_MAIN_CHECK(ctx_bus_publish_loop(bus, ev, loop) == 2);
        ctx_bus_event_release(ev);
        /* Changed after the publish: the delivery does not see it. */
        OFF_MAIN_CHECK(ctx_var_set(request_var, IV(-1), NULL) == 0);
    }
}

static void *publisher_main(void *arg) {
    long who = (long)(intptr_t)arg;
    ctx_bus_subscribe_options_t o = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
    OFF_MAIN_CHECK(ctx_bus_subscribe(bus, "ui.*", record_listener, &scoped_recorders[who],
                                     &o, NULL) == 0);
    publish_series(who);
    ctx_thread_release();
    return NULL;
}

static void test_loop_delivery_carries_context(void **state) {
    (void)state;
    request_var = new_var("request");
    bus = new_bus(NULL);
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
    loop_thread = pthread_self();
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &all_done), 0);
    atomic_store(&delivered, 0);
    atomic_store(&data_released, 0);
    expected_total = (LOOP_PUBLISHERS + 1) * events_per_publisher();
    for (int k = 0; k <= LOOP_PUBLISHERS; k++)
        recorder_init(&scoped_recorders[k], k, request_var);

    ctx_bus_listener_t *g = subscribe(bus, "ui.*", on_loop_listener, NULL, 0);
    /* The loop thread publishes too (before the loop runs). */
    ctx_bus_listener_t *mine =
        subscribe(bus, "ui.*", record_listener, &scoped_recorders[0], CTX_BUS_SCOPED);
    publish_series(0);

    pthread_t t[LOOP_PUBLISHERS];
    for (int k = 1; k <= LOOP_PUBLISHERS; k++)
        pthread_create(&t[k - 1], NULL, publisher_main, IV(k));
    ASSERT_RC(ctx_loop_run_until_done(loop, all_done), 0);
    for (int k = 1; k <= LOOP_PUBLISHERS; k++)
        pthread_join(t[k - 1], NULL);
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);

    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(atomic_load(&delivered), expected_total);
    assert_int_equal(atomic_load(&data_released), expected_total);
    for (int k = 0; k <= LOOP_PUBLISHERS; k++) {
        recorder_t *r = &scoped_recorders[k];
        assert_int_equal(recorder_count(r), events_per_publisher());
        for (int i = 0; i < r->count; i++) {
            /* Its own publisher's events only, in publish order, each in the
             * context of its publish. */
            assert_int_equal(r->entries[i].data, k * SPAN + i);
            assert_int_equal(r->entries[i].ctx_value, k * SPAN + i);
        }
        recorder_destroy(r);
    }
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_accepted, (uint64_t)expected_total);
    assert_int_equal(st.async_pending, 0);
    assert_int_equal(st.async_dropped, 0);

    ctx_loop_future_release(all_done);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
    ctx_bus_listener_release(g);
    ctx_bus_listener_release(mine);
    ctx_bus_release(bus);
    ctx_var_release(request_var);
}

/* ---- closing ---- */

static int must_not_run(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    OFF_MAIN_CHECK(0);
    return 0;
}

static void test_loop_close_drops_and_releases(void **state) {
    (void)state;
    bus = new_bus(NULL);
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
    atomic_store(&data_released, 0);
    ctx_bus_listener_t *l = subscribe(bus, "t", must_not_run, NULL, CTX_BUS_SCOPED);
    int n = SCALED(50, 5, 20);
    for (int i = 0; i < n; i++) {
        ctx_bus_event_t *ev = new_event("t", i);
        ASSERT_RC(ctx_bus_publish_loop(bus, ev, loop), 1);
        ctx_bus_event_release(ev);
    }
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_pending, (uint64_t)n);
    assert_int_equal(atomic_load(&data_released), 0); /* the bus holds them */

    ASSERT_RC(ctx_loop_close(loop), 0); /* drops them unrun */
    assert_int_equal(atomic_load(&data_released), n);
    ASSERT_RC(ctx_bus_wait_idle(bus, 0), 0);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_pending, 0);
    assert_int_equal(st.async_dropped, (uint64_t)n);
    assert_int_equal(st.async_accepted, (uint64_t)n);

    /* A closed loop refuses: nothing kept, nothing counted. */
    ctx_bus_event_t *ev = new_event("t", 0);
    ASSERT_RC(ctx_bus_publish_loop(bus, ev, loop), CTX_ECLOSED);
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), n + 1);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_accepted, (uint64_t)n);
    assert_int_equal(st.async_pending, 0);

    assert_int_equal(off_main_failures(), 0);
    ctx_loop_release(loop);
    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
}

/* ---- waiting for idle from a delivery ---- */

static atomic_int wait_rc;

static int wait_inside(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_store(&wait_rc, ctx_bus_wait_idle(bus, 0));
    return 0;
}

static void test_wait_idle_inside_a_delivery(void **state) {
    (void)state;
    bus = new_bus(NULL);
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
    ctx_bus_listener_t *l = subscribe(bus, "t", wait_inside, NULL, 0);
    ctx_bus_event_t *ev = new_event("t", 0);
    ASSERT_RC(ctx_bus_publish_loop(bus, ev, loop), 1);
    ctx_bus_event_release(ev);
    ASSERT_RC(ctx_bus_wait_idle(bus, 1000000), CTX_ETIMEDOUT); /* not run yet */
    ASSERT_RC(ctx_loop_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(atomic_load(&wait_rc), CTX_EBUSY);
    ASSERT_RC(ctx_bus_wait_idle(bus, 0), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_loop_delivery_carries_context, release_thread),
        cmocka_unit_test_teardown(test_loop_close_drops_and_releases, release_thread),
        cmocka_unit_test_teardown(test_wait_idle_inside_a_delivery, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* no loop module */

static void test_loop_delivery_not_built(void **state) {
    (void)state;
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_delivery_not_built),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
