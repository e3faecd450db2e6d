/* SPDX-License-Identifier: MIT */
/*
 * test_pool.c — asynchronous delivery through a ctx_pool_t: every listener
 * runs in a private copy of the context the publisher had when it
 * published (whatever changed since, and whatever the pool's own policy),
 * several publishers at once keep their listeners apart, a one-worker pool
 * keeps publish order, and each event is released exactly once, after its
 * last listener returned.
 */
#include "bus_test.h"

static ctx_var_t *request_var;

/* ---- an event whose data checks its own release ---- */

typedef struct tracked {
    atomic_int listeners_done; /* listener calls that returned */
    int expected;              /* calls due before the release */
    atomic_int released;
} tracked_t;

static void tracked_release(void *data) {
    tracked_t *t = data;
    /* Released only after the last listener returned, and once. */
    OFF_MAIN_CHECK(atomic_load(&t->listeners_done) == t->expected);
    OFF_MAIN_CHECK(atomic_fetch_add(&t->released, 1) == 0);
}

/* A listener that checks the context it runs in against the event: the
 * data is a tracked_t followed by the request id the publisher had. */
typedef struct payload {
    tracked_t tracked;
    long request;
} payload_t;

static atomic_int context_checks;

/* The first listener of a delivery (user NULL) sees the publisher's value
 * and sets -7; the next one (user non-NULL) runs in the same copy and sees
 * -7; the publisher never does. */
static int check_context(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    payload_t *p = ctx_bus_event_data(event);
    OFF_MAIN_CHECK(get_int(request_var) == (user ? -7 : p->request));
    OFF_MAIN_CHECK(ctx_var_set(request_var, IV(-7), NULL) == 0);
    atomic_fetch_add(&context_checks, 1);
    atomic_fetch_add(&p->tracked.listeners_done, 1);
    return 0;
}

static void test_pool_delivery_carries_context(void **state) {
    (void)state;
    request_var = new_var("request");
    ctx_bus_t *bus = new_bus(NULL);
    ctx_pool_t *pools[2];
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    ASSERT_RC(ctx_pool_new(&po, &pools[0]), 0);
    po.propagation = CTX_POOL_PROPAGATE_NONE; /* the bus asks for COPY anyway */
    ASSERT_RC(ctx_pool_new(&po, &pools[1]), 0);
    atomic_store(&context_checks, 0);

    ctx_bus_listener_t *g = subscribe(bus, "job.*", check_context, NULL, 0);
    ctx_bus_listener_t *s = subscribe(bus, "job.*", check_context, IV(1), CTX_BUS_SCOPED);

    int n = SCALED(400, 20, 100);
    payload_t *payloads = calloc((size_t)n, sizeof *payloads);
    assert_non_null(payloads);
    for (int i = 0; i < n; i++) {
        payloads[i].request = i;
        payloads[i].tracked.expected = 2;
        set_int(request_var, i);
        ctx_bus_event_t *ev = NULL;
        ASSERT_RC(ctx_bus_event_new("job.step", &payloads[i], tracked_release, &ev), 0);
        ASSERT_RC(ctx_bus_publish_pool(bus, ev, pools[i % 2]), 2);
        ctx_bus_event_release(ev); /* the bus keeps its own */
        set_int(request_var, 100000 + i); /* later changes are not seen */
    }
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(atomic_load(&context_checks), 2 * n);
    for (int i = 0; i < n; i++)
        assert_int_equal(atomic_load(&payloads[i].tracked.released), 1);
    assert_int_equal(get_int(request_var), 100000 + n - 1); /* untouched */

    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_accepted, (uint64_t)n);
    assert_int_equal(st.async_pending, 0);
    assert_int_equal(st.async_dropped, 0);

    /* No listener matches: nothing is submitted, the event is untouched. */
    ctx_bus_event_t *ev = new_event("other", 0);
    atomic_store(&data_released, 0);
    ASSERT_RC(ctx_bus_publish_pool(bus, ev, pools[0]), 0);
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), 1);

    ASSERT_RC(ctx_pool_release(pools[0]), 0);
    ASSERT_RC(ctx_pool_release(pools[1]), 0);
    ctx_bus_listener_release(g);
    ctx_bus_listener_release(s);
    ctx_bus_release(bus);
    free(payloads);
    ctx_var_release(request_var);
}

/* ---- several publishers at once ---- */

#define PUBLISHERS 4

static ctx_bus_t *shared_bus;
static ctx_pool_t *shared_pool;
static recorder_t publisher_recorders[PUBLISHERS];

static void *publisher_main(void *arg) {
    long id = (long)(intptr_t)arg;
    OFF_MAIN_CHECK(ctx_var_set(request_var, IV(id), NULL) == 0);
    ctx_bus_subscribe_options_t o = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
    OFF_MAIN_CHECK(ctx_bus_subscribe(shared_bus, "tick", record_listener,
                                     &publisher_recorders[id], &o, NULL) == 0);
    int n = SCALED(300, 10, 60);
    for (int i = 0; i < n; i++) {
        ctx_bus_event_t *ev = NULL;
        OFF_MAIN_CHECK(ctx_bus_event_new("tick", IV(id), count_release, &ev) == 0);
        OFF_MAIN_CHECK(ctx_bus_publish_pool(shared_bus, ev, shared_pool) == 1);
        ctx_bus_event_release(ev);
    }
    ctx_thread_release();
    return NULL;
}

static void test_pool_publishers_stay_apart(void **state) {
    (void)state;
    request_var = new_var("request");
    shared_bus = new_bus(NULL);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 3;
    ASSERT_RC(ctx_pool_new(&po, &shared_pool), 0);
    atomic_store(&data_released, 0);
    for (int k = 0; k < PUBLISHERS; k++)
        recorder_init(&publisher_recorders[k], k, request_var);

    pthread_t t[PUBLISHERS];
    for (int k = 0; k < PUBLISHERS; k++)
        pthread_create(&t[k], NULL, publisher_main, IV(k));
    for (int k = 0; k < PUBLISHERS; k++)
        pthread_join(t[k], NULL);
    ASSERT_RC(ctx_bus_wait_idle(shared_bus, CTX_WAIT_FOREVER), 0);

    int n = SCALED(300, 10, 60);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(atomic_load(&data_released), PUBLISHERS * n);
    for (int k = 0; k < PUBLISHERS; k++) {
        recorder_t *r = &publisher_recorders[k];
        assert_int_equal(recorder_count(r), n);
        for (int i = 0; i < r->count; i++) {
            assert_int_equal(r->entries[i].data, k);
            assert_int_equal(r->entries[i].ctx_value, k);
        }
        recorder_destroy(r);
    }
    ASSERT_RC(ctx_pool_release(shared_pool), 0);
    ctx_bus_release(shared_bus);
    ctx_var_release(request_var);
}

/* ---- order on a one-worker pool ---- */

static int sequence_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    long *next = user;
    long got = (long)(intptr_t)ctx_bus_event_data(event);
    OFF_MAIN_CHECK(got == *next);
    *next = got + 1;
    return 0;
}

static void test_single_worker_keeps_order(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    long next_global = 0, next_scoped = 0;
    order_log_t log;
    order_log_init(&log);
    order_user_t first = {&log, 1}, second = {&log, 2}, third = {&log, 3};
    ctx_bus_listener_t *l[5];
    l[0] = subscribe(bus, "seq", order_listener, &first, CTX_BUS_SCOPED);
    l[1] = subscribe(bus, "seq", sequence_listener, &next_global, 0);
    l[2] = subscribe(bus, "seq", order_listener, &second, 0);
    l[3] = subscribe(bus, "seq", sequence_listener, &next_scoped, CTX_BUS_SCOPED);
    l[4] = subscribe(bus, "seq", order_listener, &third, CTX_BUS_SCOPED);
    int n = SCALED(500, 20, 100);
    for (int i = 0; i < n; i++) {
        ctx_bus_event_t *ev = NULL;
        ASSERT_RC(ctx_bus_event_new("seq", IV(i), NULL, &ev), 0);
        ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), 5);
        ctx_bus_event_release(ev);
    }
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(next_global, n);
    assert_int_equal(next_scoped, n);
    /* The first event's listeners ran in subscription order. */
    assert_true(log.n >= 3);
    assert_int_equal(log.tags[0], 1);
    assert_int_equal(log.tags[1], 2);
    assert_int_equal(log.tags[2], 3);
    ASSERT_RC(ctx_pool_release(pool), 0);
    for (int i = 0; i < 5; i++)
        ctx_bus_listener_release(l[i]);
    ctx_bus_release(bus);
    pthread_mutex_destroy(&log.lock);
}

/* ---- refusals ---- */

static void test_pool_refusals(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    recorder_t r;
    recorder_init(&r, 0, NULL);
    ctx_bus_listener_t *l = subscribe(bus, "t", record_listener, &r, 0);
    atomic_store(&data_released, 0);

    /* A pool that is shut down refuses: nothing delivered, nothing kept. */
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    ctx_bus_event_t *ev = new_event("t", 1);
    ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), CTX_ESHUTDOWN);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_accepted, 0);
    assert_int_equal(st.async_pending, 0);
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), 1);
    assert_int_equal(recorder_count(&r), 0);

    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
    recorder_destroy(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pool_delivery_carries_context, release_thread),
        cmocka_unit_test_teardown(test_pool_publishers_stay_apart, release_thread),
        cmocka_unit_test_teardown(test_single_worker_keeps_order, release_thread),
        cmocka_unit_test_teardown(test_pool_refusals, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
