/* SPDX-License-Identifier: MIT */
/*
 * test_reclaim.c — the read side of the global listener lists
 * (src/bus/reclaim.c): publishers read the list without a lock or a
 * reference, and a replaced list is freed once no publisher can hold it.
 *
 *   churn: publisher threads (started and joined in waves, so that reader
 *     records come and go) publish while a writer subscribes and
 *     unsubscribes global listeners in a loop.  Every listener called
 *     checks that its record is alive (a magic word; ASan and valgrind see
 *     a call after its user_release freed it), that it was subscribed
 *     before the publish ended and not unsubscribed before the publish
 *     began (a logical clock stamped after each unsubscribe returned and
 *     before each publish).  Once every thread is joined, every listener
 *     unsubscribed and released has had its user_release — without
 *     releasing the bus: the last publisher to leave freed what it held.
 *   held by a running publish: a global listener unsubscribed (and its
 *     handle released) while a publish on another thread is blocked in a
 *     listener keeps its user_release until that publish returns; one of
 *     another bus is released at once.
 *   nested on two buses: a listener of bus A publishes on bus B, whose
 *     listener unsubscribes (and releases) a global listener of B that comes
 *     later in the same delivery: it is skipped, its user_release does not
 *     run while that delivery walks the list, and has run by the time the
 *     outermost publish returned.
 *   plans: a listener that unsubscribes a later listener of the same
 *     delivery (global and scoped, after the delivery plan is warm) keeps
 *     it from being called, and publish's count says so.
 *   shutdown while publishing: publishers racing a shutdown get the full
 *     count or CTX_ESHUTDOWN, nothing else, and every later publish is
 *     refused.
 */
#include "bus_test.h"

#define MAGIC 0x5eb5c1be

/* ---- churn ---- */

static atomic_ulong clock_now = 1; /* a logical clock */
static _Thread_local unsigned long publish_began;

typedef struct churn_rec {
    atomic_uint magic;
    unsigned long subscribe_began;   /* clock before ctx_bus_subscribe */
    atomic_ulong unsubscribe_done;   /* clock after ctx_bus_unsubscribe returned */
} churn_rec_t;

static atomic_int churn_released, churn_made;
static atomic_long churn_calls;

static void churn_release(void *user) {
    churn_rec_t *rec = user;
    OFF_MAIN_CHECK(atomic_load(&rec->magic) == MAGIC);
    atomic_store(&rec->magic, 0);
    free(rec);
    atomic_fetch_add(&churn_released, 1);
}

static int churn_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    churn_rec_t *rec = user;
    OFF_MAIN_CHECK(atomic_load(&rec->magic) == MAGIC);
    OFF_MAIN_CHECK(rec->subscribe_began != 0);
    unsigned long gone = atomic_load(&rec->unsubscribe_done);
    /* Unsubscribed before this publish began: must not be called. */
    OFF_MAIN_CHECK(gone == 0 || gone > publish_began);
    atomic_fetch_add(&churn_calls, 1);
    return 0;
}

static int steady_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    atomic_fetch_add((atomic_long *)user, 1);
    return 0;
}

typedef struct churn_args {
    ctx_bus_t *bus;
    ctx_bus_event_t *ev;
    int publishes;
    atomic_int *stop;
    atomic_long steady_calls;
} churn_args_t;

static void *churn_publisher(void *arg) {
    churn_args_t *a = arg;
    for (int i = 0; i < a->publishes && !atomic_load(a->stop); i++) {
        publish_began = atomic_fetch_add(&clock_now, 1) + 1;
        int n = ctx_bus_publish(a->bus, a->ev);
        OFF_MAIN_CHECK(n >= 1); /* the steady listener at least */
    }
    ctx_thread_release();
    return NULL;
}

static void *churn_writer(void *arg) {
    churn_args_t *a = arg;
    while (!atomic_load(a->stop)) {
        churn_rec_t *rec = malloc(sizeof *rec);
        OFF_MAIN_CHECK(rec != NULL);
        if (!rec)
            break;
        atomic_fetch_add(&churn_made, 1);
        atomic_init(&rec->magic, MAGIC);
        atomic_init(&rec->unsubscribe_done, 0);
        rec->subscribe_began = atomic_fetch_add(&clock_now, 1) + 1;
        ctx_bus_subscribe_options_t o = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
        o.user_release = churn_release;
        ctx_bus_listener_t *l = NULL;
        int rc = ctx_bus_subscribe(a->bus, "churn.*", churn_listener, rec, &o, &l);
        OFF_MAIN_CHECK(rc == 0);
        if (rc != 0) {
            free(rec);
            break;
        }
        sched_yield(); /* let some publishes see it */
        OFF_MAIN_CHECK(ctx_bus_unsubscribe(l) == 0);
        atomic_store(&rec->unsubscribe_done, atomic_fetch_add(&clock_now, 1) + 1);
        ctx_bus_listener_release(l);
    }
    ctx_thread_release();
    return NULL;
}

static void test_publishers_and_a_churning_writer(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    atomic_store(&churn_released, 0);
    atomic_store(&churn_made, 0);
    atomic_store(&churn_calls, 0);
    atomic_int stop = 0;
    churn_args_t a = {.bus = bus, .publishes = SCALED(20000, 300, 2000), .stop = &stop};
    atomic_init(&a.steady_calls, 0);
    ASSERT_RC(ctx_bus_subscribe(bus, "churn.*", steady_listener, &a.steady_calls, NULL, NULL), 0);
    a.ev = new_event("churn.tick", 0);

    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, churn_writer, &a), 0);
    int waves = SCALED(6, 2, 3);
    for (int w = 0; w < waves; w++) { /* reader records come and go */
        pthread_t pub[3];
        for (int i = 0; i < 3; i++)
            assert_int_equal(pthread_create(&pub[i], NULL, churn_publisher, &a), 0);
        for (int i = 0; i < 3; i++)
            assert_int_equal(pthread_join(pub[i], NULL), 0);
    }
    atomic_store(&stop, 1);
    assert_int_equal(pthread_join(writer, NULL), 0);
    assert_int_equal(off_main_failures(), 0);
    assert_true(atomic_load(&a.steady_calls) > 0);

    /* Everything the writer unsubscribed and released is gone already,
     * with the bus still running: nothing holds a retired list. */
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.global_listeners, 1);
    assert_true(atomic_load(&churn_made) > 0);
    assert_int_equal(atomic_load(&churn_released), atomic_load(&churn_made));
    ASSERT_RC(ctx_bus_publish(bus, a.ev), 1);
    ctx_bus_event_release(a.ev);
    ctx_bus_release(bus);
    assert_int_equal(off_main_failures(), 0);
}

/* ---- a publish in flight holds the list it read ---- */

static atomic_int blocker_entered, blocker_may_return, plain_released;

static int blocking_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_store(&blocker_entered, 1);
    while (!atomic_load(&blocker_may_return))
        sched_yield();
    return 0;
}

static int nop_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    return 0;
}

static void count_plain_release(void *user) {
    (void)user;
    atomic_fetch_add(&plain_released, 1);
}

static ctx_bus_listener_t *subscribe_released(ctx_bus_t *bus, const char *pattern,
                                              ctx_bus_listener_fn fn, unsigned flags) {
    ctx_bus_subscribe_options_t o = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    o.flags = flags;
    o.user_release = count_plain_release;
    ctx_bus_listener_t *l = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, pattern, fn, NULL, &o, &l), 0);
    return l;
}

typedef struct blocked_args {
    ctx_bus_t *bus;
    int expect;
} blocked_args_t;

static void *blocked_publisher(void *arg) {
    blocked_args_t *a = arg;
    ctx_bus_event_t *ev = NULL;
    /* A first publish registers the thread (its slow path). */
    OFF_MAIN_CHECK(ctx_bus_event_new("warm", NULL, NULL, &ev) == 0);
    OFF_MAIN_CHECK(ctx_bus_publish(a->bus, ev) == 0);
    ctx_bus_event_release(ev);
    OFF_MAIN_CHECK(ctx_bus_event_new("held", NULL, NULL, &ev) == 0);
    OFF_MAIN_CHECK(ctx_bus_publish(a->bus, ev) == a->expect);
    ctx_bus_event_release(ev);
    ctx_thread_release();
    return NULL;
}

static void test_a_running_publish_holds_its_list(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL), *other = new_bus(NULL);
    atomic_store(&blocker_entered, 0);
    atomic_store(&blocker_may_return, 0);
    atomic_store(&plain_released, 0);
    ASSERT_RC(ctx_bus_subscribe(bus, "held", blocking_listener, NULL, NULL, NULL), 0);
    ctx_bus_listener_t *victim = subscribe_released(bus, "held", nop_listener, 0);
    ctx_bus_listener_t *elsewhere = subscribe_released(other, "held", nop_listener, 0);

    blocked_args_t a = {bus, 1}; /* the victim goes before its turn */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocked_publisher, &a), 0);
    while (!atomic_load(&blocker_entered))
        sched_yield();
    /* The blocked publish read the list naming `victim`. */
    ASSERT_RC(ctx_bus_unsubscribe(victim), 0);
    ctx_bus_listener_release(victim);
    assert_int_equal(atomic_load(&plain_released), 0);
    /* Another bus's list is no business of that publish. */
    ASSERT_RC(ctx_bus_unsubscribe(elsewhere), 0);
    ctx_bus_listener_release(elsewhere);
    assert_int_equal(atomic_load(&plain_released), 1);

    atomic_store(&blocker_may_return, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* Its publish skipped the victim (unsubscribed before its turn), and on
     * leaving freed the list it was the last to hold. */
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(atomic_load(&plain_released), 2);
    ctx_bus_release(bus);
    ctx_bus_release(other);
}

/* ---- nested publishes on two buses ---- */

typedef struct nested {
    ctx_bus_t *inner;
    ctx_bus_listener_t *victim; /* a global listener of inner, after the unsubscriber */
    int armed;
    int released_inside;
    int inner_result;
} nested_t;

static int inner_unsubscriber(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    nested_t *n = user;
    if (n->armed && n->victim) {
        ctx_bus_unsubscribe(n->victim);
        ctx_bus_listener_release(n->victim);
        n->victim = NULL;
        /* The delivery running now still walks the list naming it. */
        n->released_inside = atomic_load(&plain_released);
    }
    return 0;
}

static int outer_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    nested_t *n = user;
    ctx_bus_event_t *ev = NULL;
    if (ctx_bus_event_new("inner", NULL, NULL, &ev) == 0) {
        n->inner_result = ctx_bus_publish(n->inner, ev);
        ctx_bus_event_release(ev);
    }
    return 0;
}

static void test_nested_publishes_on_two_buses(void **state) {
    (void)state;
    ctx_bus_t *outer = new_bus(NULL), *inner = new_bus(NULL);
    atomic_store(&plain_released, 0);
    nested_t n = {inner, NULL, 0, -1, -1};
    ASSERT_RC(ctx_bus_subscribe(outer, "outer", outer_listener, &n, NULL, NULL), 0);
    ASSERT_RC(ctx_bus_subscribe(inner, "inner", inner_unsubscriber, &n, NULL, NULL), 0);
    n.victim = subscribe_released(inner, "inner", nop_listener, 0);
    for (int i = 0; i < 2; i++) /* plans made for both */
        assert_int_equal(publish_int(inner, "inner", 0), 2);
    n.armed = 1;
    assert_int_equal(publish_int(outer, "outer", 1), 1);
    /* The victim was skipped, not freed under the inner delivery, and is
     * freed by the time the outermost publish returned. */
    assert_int_equal(n.inner_result, 1);
    assert_int_equal(n.released_inside, 0);
    assert_int_equal(atomic_load(&plain_released), 1);
    assert_int_equal(publish_int(inner, "inner", 2), 1);
    ctx_bus_release(outer);
    ctx_bus_release(inner);
}

/* ---- unsubscribes inside a planned delivery ---- */

typedef struct plan_victims {
    ctx_bus_listener_t *global, *scoped;
    int armed;
} plan_victims_t;

static atomic_int victim_calls;

static int victim_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_fetch_add(&victim_calls, 1);
    return 0;
}

static int killer_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    plan_victims_t *v = user;
    if (v->armed) {
        ctx_bus_unsubscribe(v->global);
        ctx_bus_unsubscribe(v->scoped);
    }
    return 0;
}

static void test_unsubscribe_inside_a_planned_delivery(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    atomic_store(&victim_calls, 0);
    plan_victims_t v = {NULL, NULL, 0};
    ASSERT_RC(ctx_bus_subscribe(bus, "p.*", killer_listener, &v, NULL, NULL), 0);
    ctx_bus_subscribe_options_t so = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    so.flags = CTX_BUS_SCOPED;
    ASSERT_RC(ctx_bus_subscribe(bus, "p.x", victim_listener, NULL, &so, &v.scoped), 0);
    ASSERT_RC(ctx_bus_subscribe(bus, "p.*", victim_listener, NULL, NULL, &v.global), 0);
    ctx_bus_event_t *ev = new_event("p.x", 0);
    for (int i = 0; i < 3; i++) /* the plan is made, then reused */
        ASSERT_RC(ctx_bus_publish(bus, ev), 3);
    assert_int_equal(atomic_load(&victim_calls), 6);
    v.armed = 1;
    ASSERT_RC(ctx_bus_publish(bus, ev), 1); /* the killer only */
    assert_int_equal(atomic_load(&victim_calls), 6);
    v.armed = 0;
    for (int i = 0; i < 3; i++)
        ASSERT_RC(ctx_bus_publish(bus, ev), 1);
    assert_int_equal(atomic_load(&victim_calls), 6);
    ctx_bus_event_release(ev);
    ctx_bus_listener_release(v.global);
    ctx_bus_listener_release(v.scoped);
    ctx_bus_release(bus);
}

/* ---- shutdown racing publishers ---- */

typedef struct racer {
    ctx_bus_t *bus;
    atomic_int *go;
    atomic_int *shut_seen;
} racer_t;

static void *shutdown_racer(void *arg) {
    racer_t *r = arg;
    ctx_bus_event_t *ev = NULL;
    OFF_MAIN_CHECK(ctx_bus_event_new("race", NULL, NULL, &ev) == 0);
    while (!atomic_load(r->go))
        sched_yield();
    for (;;) {
        int rc = ctx_bus_publish(r->bus, ev);
        OFF_MAIN_CHECK(rc == 2 || rc == CTX_ESHUTDOWN);
        if (rc == CTX_ESHUTDOWN) {
            /* Refused once: refused for good. */
            OFF_MAIN_CHECK(ctx_bus_publish(r->bus, ev) == CTX_ESHUTDOWN);
            atomic_fetch_add(r->shut_seen, 1);
            break;
        }
    }
    ctx_bus_event_release(ev);
    ctx_thread_release();
    return NULL;
}

static void test_shutdown_racing_publishers(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    atomic_store(&plain_released, 0);
    ctx_bus_listener_t *g = subscribe_released(bus, "race", nop_listener, 0);
    ctx_bus_listener_release(g); /* the bus's list holds it */
    ASSERT_RC(ctx_bus_subscribe(bus, "race", nop_listener, NULL, NULL, NULL), 0);
    atomic_int go = 0, shut_seen = 0;
    racer_t r = {bus, &go, &shut_seen};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, shutdown_racer, &r), 0);
    atomic_store(&go, 1);
    sched_yield();
    ASSERT_RC(ctx_bus_shutdown(bus), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(atomic_load(&shut_seen), 2);
    /* The racers are gone: the list shutdown dropped is freed. */
    assert_int_equal(atomic_load(&plain_released), 1);
    ctx_bus_release(bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_publishers_and_a_churning_writer, release_thread),
        cmocka_unit_test_teardown(test_a_running_publish_holds_its_list, release_thread),
        cmocka_unit_test_teardown(test_nested_publishes_on_two_buses, release_thread),
        cmocka_unit_test_teardown(test_unsubscribe_inside_a_planned_delivery, release_thread),
        cmocka_unit_test_teardown(test_shutdown_racing_publishers, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
