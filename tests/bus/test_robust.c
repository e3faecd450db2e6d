/* SPDX-License-Identifier: MIT */
/*
 * test_robust.c — the bus under stress and misuse: unsubscribe and
 * subscribe during a delivery, failing listeners, shutdown with events in
 * flight (drained, cancelled, from inside a listener), destroy with work
 * outstanding, concurrent subscribe/unsubscribe/publish from many threads,
 * and no leak anywhere (the counting allocator must end at zero live
 * blocks).
 */
#include "bus_test.h"

/* ---------------------------------------------------------------------- */
/* Unsubscribe and subscribe during a delivery                             */
/* ---------------------------------------------------------------------- */

typedef struct self_remover {
    int calls;
    ctx_bus_listener_t *victim; /* unsubscribed by this listener, or NULL */
    int remove_self;
} self_remover_t;

static int removing_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)event;
    self_remover_t *r = user;
    r->calls++;
    if (r->remove_self)
        ctx_bus_unsubscribe(self);
    if (r->victim) {
        ctx_bus_unsubscribe(r->victim);
        r->victim = NULL;
    }
    return 0;
}

static void test_unsubscribe_during_delivery(void **state) {
    (void)state;
    for (unsigned scope = 0; scope <= CTX_BUS_SCOPED; scope += CTX_BUS_SCOPED) {
        ctx_bus_t *bus = new_bus(NULL);
        self_remover_t once = {0, NULL, 1};   /* removes itself */
        self_remover_t killer = {0, NULL, 0}; /* removes `late` */
        self_remover_t late = {0, NULL, 0};   /* removed before its turn */
        self_remover_t early = {0, NULL, 0};  /* removed after its turn */
        self_remover_t last = {0, NULL, 0};   /* removes `early` */
        ctx_bus_listener_t *l_early = subscribe(bus, "t", removing_listener, &early, scope);
        ctx_bus_listener_t *l_once = subscribe(bus, "t", removing_listener, &once, scope);
        ctx_bus_listener_t *l_killer = subscribe(bus, "t", removing_listener, &killer, 0);
        ctx_bus_listener_t *l_late = subscribe(bus, "t", removing_listener, &late, scope);
        ctx_bus_listener_t *l_last = subscribe(bus, "t", removing_listener, &last, scope);
        killer.victim = l_late;
        last.victim = l_early;

        /* early, once (removes itself), killer (removes late), late skipped,
         * last (removes early, which already ran). */
        assert_int_equal(publish_int(bus, "t", 0), 4);
        assert_int_equal(early.calls, 1);
        assert_int_equal(once.calls, 1);
        assert_int_equal(killer.calls, 1);
        assert_int_equal(late.calls, 0);
        assert_int_equal(last.calls, 1);

        assert_int_equal(publish_int(bus, "t", 1), 2); /* killer, last */
        assert_int_equal(early.calls, 1);
        assert_int_equal(once.calls, 1);
        assert_int_equal(late.calls, 0);
        ASSERT_RC(ctx_bus_unsubscribe(l_once), CTX_ENOTFOUND);

        ctx_bus_listener_t *all[] = {l_early, l_once, l_killer, l_late, l_last};
        for (int i = 0; i < 5; i++)
            ctx_bus_listener_release(all[i]);
        ctx_bus_release(bus);
        ctx_thread_release();
    }
}

static ctx_bus_t *sub_bus;
static recorder_t rec_new_global, rec_new_scoped;
static ctx_bus_listener_t *new_global, *new_scoped;

static int subscribing_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)event;
    (void)user;
    if (!new_global) {
        ctx_bus_subscribe_options_t g = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
        ctx_bus_subscribe_options_t s = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
        OFF_MAIN_CHECK(ctx_bus_subscribe(sub_bus, "t", record_listener, &rec_new_global, &g,
                                         &new_global) == 0);
        OFF_MAIN_CHECK(ctx_bus_subscribe(sub_bus, "t", record_listener, &rec_new_scoped, &s,
                                         &new_scoped) == 0);
        ctx_bus_unsubscribe(self);
    }
    return 0;
}

static void test_subscribe_during_delivery(void **state) {
    (void)state;
    sub_bus = new_bus(NULL);
    recorder_init(&rec_new_global, 1, NULL);
    recorder_init(&rec_new_scoped, 2, NULL);
    new_global = new_scoped = NULL;
    ctx_bus_listener_t *l = subscribe(sub_bus, "t", subscribing_listener, NULL, CTX_BUS_SCOPED);
    /* The listeners subscribed during the delivery do not get its event... */
    assert_int_equal(publish_int(sub_bus, "t", 0), 1);
    assert_int_equal(recorder_count(&rec_new_global), 0);
    assert_int_equal(recorder_count(&rec_new_scoped), 0);
    /* ... but the next one (the scoped one landed in the publisher's
     * context: a synchronous listener runs there). */
    assert_int_equal(publish_int(sub_bus, "t", 1), 2);
    assert_int_equal(recorder_count(&rec_new_global), 1);
    assert_int_equal(recorder_count(&rec_new_scoped), 1);
    assert_int_equal(off_main_failures(), 0);
    ctx_bus_listener_release(l);
    ctx_bus_listener_release(new_global);
    ctx_bus_listener_release(new_scoped);
    ctx_bus_release(sub_bus);
    recorder_destroy(&rec_new_global);
    recorder_destroy(&rec_new_scoped);
}

/* A listener that, on the first event, subscribes many scoped listeners
 * from inside the delivery (each replacing the list the outer delivery
 * walks), publishing nested events and unsubscribing in between.  Every
 * replaced list must stay alive until the outermost delivery returns (ASan
 * and valgrind would see a use after free otherwise). */
#define STORM 12

static ctx_bus_t *storm_bus;
static recorder_t storm_rec;
static ctx_bus_listener_t *storm_listeners[STORM];
static int storm_outer_calls, storm_tail_calls;

static int storm_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)user;
    storm_outer_calls++;
    if ((long)(intptr_t)ctx_bus_event_data(event) != 0)
        return 0;
    int live = 0; /* storm listeners subscribed and not unsubscribed */
    for (int i = 0; i < STORM; i++) {
        ctx_bus_subscribe_options_t so = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
        OFF_MAIN_CHECK(ctx_bus_subscribe(storm_bus, "t", record_listener, &storm_rec, &so,
                                         &storm_listeners[i]) == 0);
        live++;
        if (i % 3 == 0) /* nested: walks the newest list */
            OFF_MAIN_CHECK(publish_int(storm_bus, "t", 1) == 2 + live);
        if (i % 4 == 1) {
            OFF_MAIN_CHECK(ctx_bus_unsubscribe(storm_listeners[i - 1]) == 0);
            live--;
        }
    }
    return 0;
}

/* Subscribed after storm_listener: still reached by the outer delivery,
 * which walks the list of before the storm. */
static int storm_tail(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    storm_tail_calls++;
    return 0;
}

static void test_subscribe_storm_during_delivery(void **state) {
    (void)state;
    ctx_test_alloc_install();
    storm_bus = new_bus(NULL);
    recorder_init(&storm_rec, 1, NULL);
    storm_outer_calls = storm_tail_calls = 0;
    ctx_bus_listener_t *l = subscribe(storm_bus, "t", storm_listener, NULL, CTX_BUS_SCOPED);
    ctx_bus_listener_t *tail = subscribe(storm_bus, "t", storm_tail, NULL, CTX_BUS_SCOPED);
    assert_int_equal(publish_int(storm_bus, "t", 0), 2);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(storm_tail_calls, 5); /* the outer delivery + 4 nested */
    /* Afterwards: storm_listener, storm_tail and the listeners still
     * subscribed (STORM minus those unsubscribed at i = 1, 5, 9). */
    int before = recorder_count(&storm_rec);
    assert_int_equal(publish_int(storm_bus, "t", 2), 2 + STORM - 3);
    assert_int_equal(recorder_count(&storm_rec) - before, STORM - 3);
    for (int i = 0; i < STORM; i++)
        ctx_bus_listener_release(storm_listeners[i]);
    ctx_bus_listener_release(l);
    ctx_bus_listener_release(tail);
    ctx_bus_release(storm_bus);
    recorder_destroy(&storm_rec);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* ---------------------------------------------------------------------- */
/* Failing listeners                                                       */
/* ---------------------------------------------------------------------- */

static void test_failing_listeners(void **state) {
    (void)state;
    error_log_t errors;
    ctx_bus_t *bus = new_bus(&errors);
    recorder_t a, b, c, d;
    recorder_init(&a, 1, NULL);
    recorder_init(&b, 2, NULL);
    recorder_init(&c, 3, NULL);
    recorder_init(&d, 4, NULL);
    b.fail_with = CTX_ECALLBACK;
    c.fail_with = 5; /* positive: taken as success */
    d.fail_with = CTX_ENOMEM;
    ctx_bus_listener_t *la = subscribe(bus, "t", record_listener, &a, 0);
    ctx_bus_listener_t *lb = subscribe(bus, "t", record_listener, &b, CTX_BUS_SCOPED);
    ctx_bus_listener_t *lc = subscribe(bus, "t", record_listener, &c, 0);
    ctx_bus_listener_t *ld = subscribe(bus, "t", record_listener, &d, CTX_BUS_SCOPED);

    assert_int_equal(publish_int(bus, "t", 0), 4); /* every one was called */
    assert_int_equal(recorder_count(&a), 1);
    assert_int_equal(recorder_count(&b), 1);
    assert_int_equal(recorder_count(&c), 1);
    assert_int_equal(recorder_count(&d), 1);
    assert_int_equal(atomic_load(&errors.count), 2);
    assert_int_equal(atomic_load(&errors.last_code), CTX_ENOMEM);
    assert_ptr_equal(atomic_load(&errors.last_listener), ld);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.listener_failures, 2);

    /* Asynchronously: reported on the worker, counted the same. */
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    int n = SCALED(50, 5, 20);
    for (int i = 0; i < n; i++) {
        ctx_bus_event_t *ev = new_event("t", i);
        ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), 4);
        ctx_bus_event_release(ev);
    }
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.listener_failures, 2 + 2 * (uint64_t)n);
    assert_int_equal(atomic_load(&errors.count), 2 + 2 * n);
    assert_int_equal(recorder_count(&a), 1 + n);
    assert_int_equal(recorder_count(&d), 1 + n);
    ASSERT_RC(ctx_pool_release(pool), 0);

    ctx_bus_listener_t *all[] = {la, lb, lc, ld};
    for (int i = 0; i < 4; i++)
        ctx_bus_listener_release(all[i]);
    ctx_bus_release(bus);
    recorder_destroy(&a);
    recorder_destroy(&b);
    recorder_destroy(&c);
    recorder_destroy(&d);
}

/* The default handler (no on_error) writes a line and the count goes on. */
static void test_default_error_handler(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    recorder_t r;
    recorder_init(&r, 1, NULL);
    r.fail_with = CTX_ECALLBACK;
    ctx_bus_listener_t *l = subscribe(bus, "t.*", record_listener, &r, 0);
    fprintf(stderr, "(one expected error line follows)\n");
    assert_int_equal(publish_int(bus, "t.x", 0), 1);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.listener_failures, 1);
    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
    recorder_destroy(&r);
}

/* ---------------------------------------------------------------------- */
/* Shutdown                                                                */
/* ---------------------------------------------------------------------- */

/* A gate a pool task waits at until the test opens it. */
typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
    atomic_int arrived;
} gate_t;

static void gate_init(gate_t *g) {
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = 0;
    atomic_init(&g->arrived, 0);
}

static void gate_destroy(gate_t *g) {
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
}

static int gate_task(void *arg, void **result) {
    (void)result;
    gate_t *g = arg;
    atomic_fetch_add(&g->arrived, 1);
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static void gate_open(gate_t *g) {
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void gate_await(gate_t *g) {
    while (atomic_load(&g->arrived) < 1)
        short_nap();
}

static void test_publish_after_shutdown(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    recorder_t r;
    recorder_init(&r, 1, NULL);
    ctx_bus_listener_t *g = subscribe(bus, "t", record_listener, &r, 0);
    ctx_bus_listener_t *s = subscribe(bus, "t", record_listener, &r, CTX_BUS_SCOPED);
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    atomic_store(&data_released, 0);

    ASSERT_RC(ctx_bus_shutdown(bus), 0);
    ASSERT_RC(ctx_bus_shutdown(bus), 0); /* again: harmless */
    ctx_bus_event_t *ev = new_event("t", 0);
    ASSERT_RC(ctx_bus_publish(bus, ev), CTX_ESHUTDOWN);
    ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), CTX_ESHUTDOWN);
    assert_int_equal(ctx_bus_listener_visible(g), 0);
    assert_int_equal(ctx_bus_listener_visible(s), 0);
    ctx_bus_listener_t *l = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, "t", record_listener, &r, NULL, &l), CTX_ESHUTDOWN);
    ctx_bus_subscribe_options_t so = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
    ASSERT_RC(ctx_bus_subscribe(bus, "t", record_listener, &r, &so, &l), CTX_ESHUTDOWN);
    assert_null(l);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), 1);
    assert_int_equal(recorder_count(&r), 0); /* nothing delivered */
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.rejected, 2);
    assert_int_equal(st.global_listeners, 0);
    assert_int_equal(st.async_accepted, 0);

    /* Handles still work after shutdown. */
    ASSERT_RC(ctx_bus_unsubscribe(g), 0);
    ASSERT_RC(ctx_bus_unsubscribe(s), 0);
    ctx_bus_listener_release(g);
    ctx_bus_listener_release(s);
    ctx_bus_release(bus);
    recorder_destroy(&r);
}

typedef struct opener_args {
    ctx_bus_t *bus;
    gate_t *gate;
    int n;
} opener_args_t;

static void *open_when_dropped(void *arg) {
    opener_args_t *a = arg;
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    do {
        short_nap();
        ctx_bus_stats(a->bus, &st);
    } while (st.async_dropped < (uint64_t)a->n);
    gate_open(a->gate);
    return NULL;
}

/* Events accepted before the shutdown are still delivered (drained);
 * events a pool cancels are dropped; either way each event is released
 * exactly once and nothing leaks. */
static void shutdown_with_events_in_flight(ctx_pool_shutdown_mode_t pool_mode) {
    ctx_test_alloc_install();
    ctx_bus_t *bus = new_bus(NULL);
    recorder_t r;
    recorder_init(&r, 1, NULL);
    ctx_bus_listener_t *g = subscribe(bus, "t", record_listener, &r, 0);
    ctx_bus_listener_t *s = subscribe(bus, "t", record_listener, &r, CTX_BUS_SCOPED);
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, gate_task, &gate, NULL), 0);
    gate_await(&gate); /* the only worker is held */
    atomic_store(&data_released, 0);

    int n = SCALED(100, 10, 30);
    for (int i = 0; i < n; i++) {
        ctx_bus_event_t *ev = new_event("t", i);
        ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), 2);
        ctx_bus_event_release(ev);
    }
    ASSERT_RC(ctx_bus_shutdown(bus), 0);
    ctx_bus_event_t *ev = new_event("t", -1);
    ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), CTX_ESHUTDOWN);
    ctx_bus_event_release(ev);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_pending, (uint64_t)n);
    assert_int_equal(atomic_load(&data_released), 1); /* only the refused one */
    ASSERT_RC(ctx_bus_wait_idle(bus, 0), CTX_ETIMEDOUT);

    if (pool_mode == CTX_POOL_SHUTDOWN_CANCEL) {
        /* The worker is still held, so every queued delivery is cancelled
         * (on this thread, inside the shutdown); a helper opens the gate
         * once they all were, so the shutdown's wait for the worker ends. */
        opener_args_t oa = {bus, &gate, n};
        pthread_t opener;
        pthread_create(&opener, NULL, open_when_dropped, &oa);
        ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_CANCEL), 0);
        pthread_join(opener, NULL);
    } else {
        gate_open(&gate);
    }
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&data_released), n + 1);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.async_pending, 0);
    assert_int_equal(st.async_accepted, (uint64_t)n);
    int delivered = recorder_count(&r);
    if (pool_mode == CTX_POOL_SHUTDOWN_DRAIN) {
        assert_int_equal(delivered, 2 * n);
        assert_int_equal(st.async_dropped, 0);
    } else {
        assert_int_equal(delivered, 0);
        assert_int_equal(st.async_dropped, (uint64_t)n);
    }
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_bus_listener_release(g);
    ctx_bus_listener_release(s);
    ctx_bus_release(bus);
    gate_destroy(&gate);
    recorder_destroy(&r);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

static void test_shutdown_drains_events_in_flight(void **state) {
    (void)state;
    shutdown_with_events_in_flight(CTX_POOL_SHUTDOWN_DRAIN);
}

static void test_pool_cancel_drops_events_in_flight(void **state) {
    (void)state;
    shutdown_with_events_in_flight(CTX_POOL_SHUTDOWN_CANCEL);
}

/* Destroy with deliveries still queued: they run later, and the last one
 * frees the bus. */
static void test_destroy_with_events_in_flight(void **state) {
    (void)state;
    ctx_test_alloc_install();
    ctx_bus_t *bus = new_bus(NULL);
    recorder_t r;
    recorder_init(&r, 1, NULL);
    ctx_bus_subscribe_options_t so = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
    ASSERT_RC(ctx_bus_subscribe(bus, "t", record_listener, &r, NULL, NULL), 0);
    ASSERT_RC(ctx_bus_subscribe(bus, "t", record_listener, &r, &so, NULL), 0);
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, gate_task, &gate, NULL), 0);
    gate_await(&gate);
    atomic_store(&data_released, 0);
    int n = SCALED(50, 5, 20);
    for (int i = 0; i < n; i++) {
        ctx_bus_event_t *ev = new_event("t", i);
        ASSERT_RC(ctx_bus_publish_pool(bus, ev, pool), 2);
        ctx_bus_event_release(ev);
    }
    ctx_bus_release(bus); /* deliveries hold the bus */
    ASSERT_RC(ctx_thread_release(), 0); /* and the scoped list goes here */
    gate_open(&gate);
    ASSERT_RC(ctx_pool_release(pool), 0); /* drains */
    assert_int_equal(recorder_count(&r), 2 * n);
    assert_int_equal(atomic_load(&data_released), n);
    gate_destroy(&gate);
    recorder_destroy(&r);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* Shutdown and destroy from inside a listener: the delivery in progress
 * finishes, later publishes fail. */
static ctx_bus_t *inner_bus;

static int shutting_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    int destroy = (int)(intptr_t)user;
    if (destroy)
        ctx_bus_release(inner_bus);
    else
        OFF_MAIN_CHECK(ctx_bus_shutdown(inner_bus) == 0);
    return 0;
}

static void test_shutdown_from_a_listener(void **state) {
    (void)state;
    for (int destroy = 0; destroy <= 1; destroy++) {
        ctx_test_alloc_install();
        inner_bus = new_bus(NULL);
        recorder_t r;
        recorder_init(&r, 1, NULL);
        ctx_bus_listener_t *a = subscribe(inner_bus, "t", shutting_listener, IV(destroy), 0);
        ctx_bus_listener_t *b = subscribe(inner_bus, "t", record_listener, &r, 0);
        ctx_bus_listener_t *c = subscribe(inner_bus, "t", record_listener, &r, CTX_BUS_SCOPED);
        assert_int_equal(publish_int(inner_bus, "t", 0), 3); /* not interrupted */
        assert_int_equal(recorder_count(&r), 2);
        if (!destroy) {
            assert_int_equal(publish_int(inner_bus, "t", 1), CTX_ESHUTDOWN);
            ctx_bus_release(inner_bus);
        }
        /* The handles keep the bus's memory; releasing them frees it (the
         * scoped list goes with the thread's context). */
        ASSERT_RC(ctx_bus_unsubscribe(c), 0);
        ctx_bus_listener_release(a);
        ctx_bus_listener_release(b);
        ctx_bus_listener_release(c);
        ASSERT_RC(ctx_thread_release(), 0);
        recorder_destroy(&r);
        assert_int_equal(off_main_failures(), 0);
        assert_int_equal(ctx_test_alloc_live_blocks(), 0);
        ctx_test_alloc_uninstall();
    }
}

/* ---------------------------------------------------------------------- */
/* Concurrency                                                             */
/* ---------------------------------------------------------------------- */

#define STRESS_THREADS 4

static ctx_bus_t *stress_bus;
static ctx_pool_t *stress_pool;
static ctx_var_t *stress_var;
static atomic_int stress_calls;

/* Runs in the publisher's context (sync) or a copy of it (pool): the value
 * of stress_var there is the publisher's id, which is also the data. */
static int stress_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    long owner = (long)(intptr_t)user;
    long data = (long)(intptr_t)ctx_bus_event_data(event);
    OFF_MAIN_CHECK(get_int(stress_var) == data);
    if (owner >= 0) /* scoped: only its own thread's events */
        OFF_MAIN_CHECK(owner == data);
    atomic_fetch_add(&stress_calls, 1);
    return 0;
}

static void *stress_main(void *arg) {
    long id = (long)(intptr_t)arg;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, ctx_test_seed(0x5eed) + (uint64_t)id);
    OFF_MAIN_CHECK(ctx_var_set(stress_var, IV(id), NULL) == 0);
    ctx_bus_listener_t *mine[8] = {0};
    int rounds = SCALED(2000, 60, 300);
    for (int i = 0; i < rounds; i++) {
        int slot = (int)ctx_test_rng_below(&rng, 8);
        switch (ctx_test_rng_below(&rng, 5)) {
        case 0: /* subscribe (or replace) a global or scoped listener */
            if (mine[slot]) {
                ctx_bus_unsubscribe(mine[slot]);
                ctx_bus_listener_release(mine[slot]);
                mine[slot] = NULL;
            }
            {
                int scoped = slot & 1;
                ctx_bus_subscribe_options_t o = {sizeof(ctx_bus_subscribe_options_t), scoped ? CTX_BUS_SCOPED : 0, NULL};
                OFF_MAIN_CHECK(ctx_bus_subscribe(stress_bus, slot < 4 ? "s.*" : "s.x",
                                                 stress_listener, IV(scoped ? id : -1), &o,
                                                 &mine[slot]) == 0);
            }
            break;
        case 1: /* unsubscribe */
            if (mine[slot])
                OFF_MAIN_CHECK(ctx_bus_unsubscribe(mine[slot]) == 0);
            if (mine[slot])
                ctx_bus_listener_release(mine[slot]);
            mine[slot] = NULL;
            break;
        case 2:
        case 3: { /* publish synchronously */
            ctx_bus_event_t *ev = NULL;
            OFF_MAIN_CHECK(ctx_bus_event_new("s.x", IV(id), count_release, &ev) == 0);
            OFF_MAIN_CHECK(ctx_bus_publish(stress_bus, ev) >= 0);
            ctx_bus_event_release(ev);
            break;
        }
        default: { /* publish on the pool */
            ctx_bus_event_t *ev = NULL;
            OFF_MAIN_CHECK(ctx_bus_event_new("s.x", IV(id), count_release, &ev) == 0);
            OFF_MAIN_CHECK(ctx_bus_publish_pool(stress_bus, ev, stress_pool) >= 0);
            ctx_bus_event_release(ev);
            break;
        }
        }
    }
    for (int k = 0; k < 8; k++)
        ctx_bus_listener_release(mine[k]); /* left subscribed: shutdown ends them */
    ctx_thread_release();
    return NULL;
}

static void test_concurrent_subscribe_unsubscribe_publish(void **state) {
    (void)state;
    ctx_test_alloc_install();
    stress_var = new_var("publisher");
    stress_bus = new_bus(NULL);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    ASSERT_RC(ctx_pool_new(&po, &stress_pool), 0);
    atomic_store(&stress_calls, 0);
    atomic_store(&data_released, 0);
    pthread_t t[STRESS_THREADS];
    for (int k = 0; k < STRESS_THREADS; k++)
        pthread_create(&t[k], NULL, stress_main, IV(k));
    for (int k = 0; k < STRESS_THREADS; k++)
        pthread_join(t[k], NULL);
    ASSERT_RC(ctx_bus_shutdown(stress_bus), 0);
    ASSERT_RC(ctx_bus_wait_idle(stress_bus, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_release(stress_pool), 0);
    ctx_bus_release(stress_bus);
    assert_int_equal(off_main_failures(), 0);
    printf("  (%d listener calls)\n", atomic_load(&stress_calls));
    ctx_var_release(stress_var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* A publish that starts after ctx_bus_unsubscribe returned never calls the
 * listener, while other threads publish and unsubscribe at the same time. */
static _Thread_local int publish_started_after_unsubscribe;
static atomic_int unsubscribed_flag;

static int must_not_follow_unsubscribe(ctx_bus_listener_t *self, ctx_bus_event_t *event,
                                       void *user) {
    (void)self;
    (void)event;
    (void)user;
    OFF_MAIN_CHECK(!publish_started_after_unsubscribe);
    return 0;
}

static void *racing_publisher(void *arg) {
    (void)arg;
    int n = SCALED(20000, 300, 2000);
    for (int i = 0; i < n; i++) {
        publish_started_after_unsubscribe = atomic_load(&unsubscribed_flag);
        ctx_bus_event_t *ev = NULL;
        OFF_MAIN_CHECK(ctx_bus_event_new("t", NULL, NULL, &ev) == 0);
        ctx_bus_publish(stress_bus, ev);
        ctx_bus_event_release(ev);
    }
    ctx_thread_release();
    return NULL;
}

static void test_unsubscribe_races_publish(void **state) {
    (void)state;
    stress_bus = new_bus(NULL);
    atomic_store(&unsubscribed_flag, 0);
    ctx_bus_listener_t *l = subscribe(stress_bus, "t", must_not_follow_unsubscribe, NULL, 0);
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        pthread_create(&t[k], NULL, racing_publisher, NULL);
    for (int i = 0; i < 20; i++)
        short_nap();
    ASSERT_RC(ctx_bus_unsubscribe(l), 0);
    atomic_store(&unsubscribed_flag, 1);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    assert_int_equal(off_main_failures(), 0);
    ctx_bus_listener_release(l);
    ctx_bus_release(stress_bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unsubscribe_during_delivery, release_thread),
        cmocka_unit_test_teardown(test_subscribe_during_delivery, release_thread),
        cmocka_unit_test_teardown(test_subscribe_storm_during_delivery, release_thread),
        cmocka_unit_test_teardown(test_failing_listeners, release_thread),
        cmocka_unit_test_teardown(test_default_error_handler, release_thread),
        cmocka_unit_test_teardown(test_publish_after_shutdown, release_thread),
        cmocka_unit_test_teardown(test_shutdown_drains_events_in_flight, release_thread),
        cmocka_unit_test_teardown(test_pool_cancel_drops_events_in_flight, release_thread),
        cmocka_unit_test_teardown(test_destroy_with_events_in_flight, release_thread),
        cmocka_unit_test_teardown(test_shutdown_from_a_listener, release_thread),
        cmocka_unit_test_teardown(test_concurrent_subscribe_unsubscribe_publish, release_thread),
        cmocka_unit_test_teardown(test_unsubscribe_races_publish, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
