/* SPDX-License-Identifier: MIT */
/*
 * test_listeners.c — the bus on one thread and its copies: events, topics
 * and patterns, global and scoped visibility, delivery order, the context
 * listeners run in, unsubscribe by handle, user_release, stats, arguments.
 */
#include "bus_test.h"

static recorder_t rec_a, rec_b, rec_c;

static int setup_recorders(void **state) {
    (void)state;
    recorder_init(&rec_a, 1, NULL);
    recorder_init(&rec_b, 2, NULL);
    recorder_init(&rec_c, 3, NULL);
    atomic_store(&data_released, 0);
    return 0;
}

static int teardown_recorders(void **state) {
    recorder_destroy(&rec_a);
    recorder_destroy(&rec_b);
    recorder_destroy(&rec_c);
    return release_thread(state);
}

/* ---------------------------------------------------------------------- */
/* Events                                                                  */
/* ---------------------------------------------------------------------- */

static void test_event_lifecycle(void **state) {
    (void)state;
    ctx_bus_event_t *ev = NULL;
    ASSERT_RC(ctx_bus_event_new("request.progress", IV(7), count_release, &ev), 0);
    assert_string_equal(ctx_bus_event_topic(ev), "request.progress");
    assert_ptr_equal(ctx_bus_event_data(ev), IV(7));
    assert_ptr_equal(ctx_bus_event_retain(ev), ev);
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), 0);
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), 1); /* exactly once */

    /* No data_release: a plain pointer. */
    ASSERT_RC(ctx_bus_event_new("x", IV(1), NULL, &ev), 0);
    ctx_bus_event_release(ev);

    /* Bad topics: nothing made, nothing released. */
    ev = NULL;
    ASSERT_RC(ctx_bus_event_new(NULL, IV(1), count_release, &ev), CTX_EINVAL);
    ASSERT_RC(ctx_bus_event_new("", IV(1), count_release, &ev), CTX_EPARSE);
    ASSERT_RC(ctx_bus_event_new("a.*", IV(1), count_release, &ev), CTX_EPARSE);
    ASSERT_RC(ctx_bus_event_new("a*b", IV(1), count_release, &ev), CTX_EPARSE);
    ASSERT_RC(ctx_bus_event_new("a", IV(1), count_release, NULL), CTX_EINVAL);
    assert_null(ev);
    assert_int_equal(atomic_load(&data_released), 1);

    assert_null(ctx_bus_event_topic(NULL));
    assert_null(ctx_bus_event_data(NULL));
    assert_null(ctx_bus_event_retain(NULL));
    ctx_bus_event_release(NULL);
}

/* ---------------------------------------------------------------------- */
/* Topics                                                                  */
/* ---------------------------------------------------------------------- */

static void test_patterns(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    static const struct {
        const char *pattern;
        const char *topic;
        int match;
    } cases[] = {
        {"request.progress", "request.progress", 1},
        {"request.progress", "request.progres", 0},
        {"request.progress", "request.progress.x", 0},
        {"request.progress", "Request.progress", 0},
        {"request.*", "request.progress", 1},
        {"request.*", "request.io.read", 1},
        {"request.*", "request.", 0},
        {"request.*", "request", 0},
        {"request.*", "requests.x", 0},
        {"request.*", "xrequest.progress", 0},
        {"a.b.*", "a.b.c", 1},
        {"a.b.*", "a.bc", 0},
        {"*", "anything.at.all", 1},
        {NULL, "x", 1},
        {"x", "x", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        recorder_t *r = &rec_a;
        ctx_bus_listener_t *l = subscribe(bus, cases[i].pattern, record_listener, r, 0);
        assert_string_equal(ctx_bus_listener_pattern(l),
                            cases[i].pattern ? cases[i].pattern : "*");
        int before = atomic_load(&r->calls);
        int n = publish_int(bus, cases[i].topic, (long)i);
        if (n != cases[i].match || atomic_load(&r->calls) - before != cases[i].match)
            fail_msg("pattern \"%s\" on topic \"%s\": %d listener(s) called, expected %d",
                     cases[i].pattern ? cases[i].pattern : "(null)", cases[i].topic, n,
                     cases[i].match);
        ASSERT_RC(ctx_bus_unsubscribe(l), 0);
        ctx_bus_listener_release(l);
    }

    /* Malformed patterns are refused with their own code; nothing is kept. */
    static const char *const bad[] = {"", "a*", "*.b", "a.*.b", ".*", "**", "a.**", "a.b*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctx_bus_listener_t *l = NULL;
        int rc = ctx_bus_subscribe(bus, bad[i], record_listener, &rec_a, NULL, &l);
        if (rc != CTX_EPARSE)
            fail_msg("pattern \"%s\": %s, expected CTX_EPARSE", bad[i], ctx_error_name(rc));
        assert_null(l);
    }
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.global_listeners, 0);
    ctx_bus_release(bus);
}

/* ---------------------------------------------------------------------- */
/* Global and scoped                                                       */
/* ---------------------------------------------------------------------- */

static ctx_bus_t *run_bus;

static void *publish_in_context(void *arg) {
    return IV(publish_int(run_bus, "t", (long)(intptr_t)arg));
}

/* Runs publish_in_context in `ctx` and returns how many listeners it
 * reached. */
static int publish_from(ctx_context_t *ctx, long n) {
    void *r = NULL;
    ASSERT_RC(ctx_context_run(ctx, publish_in_context, IV(n), &r), 0);
    return (int)(intptr_t)r;
}

static void *publish_on_thread(void *arg) {
    void *r = publish_in_context(arg);
    ctx_thread_release();
    return r;
}

static void test_global_and_scoped_visibility(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    run_bus = bus;

    /* A context made before the scoped subscribe. */
    ctx_context_t *before = NULL;
    ASSERT_RC(ctx_context_copy_current(&before), 0);

    ctx_bus_listener_t *g = subscribe(bus, "t", record_listener, &rec_a, 0);
    ctx_bus_listener_t *s = subscribe(bus, "t", record_listener, &rec_b, CTX_BUS_SCOPED);

    ctx_context_t *after = NULL, *fresh = NULL;
    ASSERT_RC(ctx_context_copy_current(&after), 0);
    ASSERT_RC(ctx_context_new(&fresh), 0);

    /* Here (the subscribing context): both. */
    assert_int_equal(publish_int(bus, "t", 1), 2);
    assert_int_equal(ctx_bus_listener_visible(g), 1);
    assert_int_equal(ctx_bus_listener_visible(s), 1);
    /* A copy made afterwards: both. */
    assert_int_equal(publish_from(after, 2), 2);
    /* A copy made before, a fresh context, another thread: global only. */
    assert_int_equal(publish_from(before, 3), 1);
    assert_int_equal(publish_from(fresh, 4), 1);
    pthread_t t;
    void *r = NULL;
    pthread_create(&t, NULL, publish_on_thread, IV(5));
    pthread_join(t, &r);
    assert_int_equal((int)(intptr_t)r, 1);

    assert_int_equal(recorder_count(&rec_a), 5);
    assert_int_equal(recorder_count(&rec_b), 2);
    assert_int_equal(rec_b.entries[0].data, 1);
    assert_int_equal(rec_b.entries[1].data, 2);

    /* Visibility seen from inside other contexts. */
    ASSERT_RC(ctx_context_enter(before), 0);
    assert_int_equal(ctx_bus_listener_visible(s), 0);
    assert_int_equal(ctx_bus_listener_visible(g), 1);
    ASSERT_RC(ctx_context_exit(before), 0);

    /* Unsubscribing the scoped listener from a context where it is not
     * visible removes it everywhere. */
    ASSERT_RC(ctx_context_enter(fresh), 0);
    ASSERT_RC(ctx_bus_unsubscribe(s), 0);
    ASSERT_RC(ctx_bus_unsubscribe(s), CTX_ENOTFOUND);
    ASSERT_RC(ctx_context_exit(fresh), 0);
    assert_int_equal(publish_int(bus, "t", 6), 1);
    assert_int_equal(publish_from(after, 7), 1);
    assert_int_equal(ctx_bus_listener_visible(s), 0);
    assert_int_equal(recorder_count(&rec_b), 2);

    ctx_context_release(before);
    ctx_context_release(after);
    ctx_context_release(fresh);
    ctx_bus_listener_release(g);
    ctx_bus_listener_release(s);
    ctx_bus_release(bus);
}

/* A scoped subscribe inside a copy stays in the copy. */
static ctx_bus_t *nested_bus;
static ctx_bus_listener_t *nested_listener;

static void *subscribe_in_copy(void *arg) {
    (void)arg;
    nested_listener = subscribe(nested_bus, "t", record_listener, &rec_c, CTX_BUS_SCOPED);
    return IV(publish_int(nested_bus, "t", 10));
}

static void test_scoped_in_a_copy_stays_there(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    nested_bus = bus;
    run_bus = bus;
    ctx_bus_listener_t *outer = subscribe(bus, "t", record_listener, &rec_a, CTX_BUS_SCOPED);
    ctx_context_t *copy = NULL;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    void *r = NULL;
    ASSERT_RC(ctx_context_run(copy, subscribe_in_copy, NULL, &r), 0);
    assert_int_equal((int)(intptr_t)r, 2); /* outer (inherited) + inner */
    assert_int_equal(publish_int(bus, "t", 11), 1); /* the caller: outer only */
    assert_int_equal(publish_from(copy, 12), 2); /* the copy keeps both */
    assert_int_equal(recorder_count(&rec_c), 2);
    assert_int_equal(rec_c.entries[0].data, 10);
    assert_int_equal(rec_c.entries[1].data, 12);
    ctx_context_release(copy);
    ctx_bus_listener_release(nested_listener);
    ctx_bus_listener_release(outer);
    ctx_bus_release(bus);
}

/* ---------------------------------------------------------------------- */
/* Order                                                                   */
/* ---------------------------------------------------------------------- */

/* Listeners run in subscription order, global and scoped interleaved; a
 * copy's own scoped listeners come after what it inherited. */
static void test_delivery_order(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    order_log_t log;
    order_log_init(&log);
    order_user_t u[8];
    for (int i = 0; i < 8; i++)
        u[i] = (order_user_t){&log, i + 1};
    /* 1 g, 2 s, 3 s, 4 g, 5 g(prefix), 6 s(all), 7 g(other topic), 8 s */
    ctx_bus_listener_t *l[8];
    l[0] = subscribe(bus, "a.b", order_listener, &u[0], 0);
    l[1] = subscribe(bus, "a.b", order_listener, &u[1], CTX_BUS_SCOPED);
    l[2] = subscribe(bus, "a.*", order_listener, &u[2], CTX_BUS_SCOPED);
    l[3] = subscribe(bus, "a.b", order_listener, &u[3], 0);
    l[4] = subscribe(bus, "a.*", order_listener, &u[4], 0);
    l[5] = subscribe(bus, NULL, order_listener, &u[5], CTX_BUS_SCOPED);
    l[6] = subscribe(bus, "z", order_listener, &u[6], 0);
    l[7] = subscribe(bus, "a.b", order_listener, &u[7], CTX_BUS_SCOPED);
    assert_int_equal(publish_int(bus, "a.b", 0), 7);
    static const int want[] = {1, 2, 3, 4, 5, 6, 8};
    assert_int_equal(log.n, 7);
    assert_memory_equal(log.tags, want, sizeof want);

    /* After unsubscribing some and subscribing more, still by age. */
    ASSERT_RC(ctx_bus_unsubscribe(l[1]), 0);
    ASSERT_RC(ctx_bus_unsubscribe(l[3]), 0);
    order_user_t late = {&log, 9};
    ctx_bus_listener_t *l9 = subscribe(bus, "a.b", order_listener, &late, 0);
    log.n = 0;
    assert_int_equal(publish_int(bus, "a.b", 0), 6);
    static const int want2[] = {1, 3, 5, 6, 8, 9};
    assert_int_equal(log.n, 6);
    assert_memory_equal(log.tags, want2, sizeof want2);

    for (int i = 0; i < 8; i++)
        ctx_bus_listener_release(l[i]);
    ctx_bus_listener_release(l9);
    ctx_bus_release(bus);
    pthread_mutex_destroy(&log.lock);
}

/* ---------------------------------------------------------------------- */
/* Context of a synchronous delivery                                       */
/* ---------------------------------------------------------------------- */

static ctx_var_t *request_var;

typedef struct seen {
    long value;
    int calls;
} seen_t;

/* Records the request seen, then sets it to 99 (as a careless listener
 * would). */
static int read_then_set(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    seen_t *s = user;
    s->value = get_int(request_var);
    s->calls++;
    ctx_var_set(request_var, IV(99), NULL);
    return 0;
}

static void test_sync_runs_in_publishers_context(void **state) {
    (void)state;
    request_var = new_var("request");
    ctx_bus_t *bus = new_bus(NULL);
    seen_t first = {0, 0}, second = {0, 0};
    ctx_bus_listener_t *a = subscribe(bus, "t", read_then_set, &first, 0);
    ctx_bus_listener_t *b = subscribe(bus, "t", read_then_set, &second, CTX_BUS_SCOPED);
    set_int(request_var, 42);
    assert_int_equal(publish_int(bus, "t", 0), 2);
    assert_int_equal(first.value, 42);   /* the publisher's value */
    assert_int_equal(second.value, 99);  /* the listener before it set 99 ... */
    assert_int_equal(get_int(request_var), 99); /* ... in the publisher's context */

    /* Isolation is one ctx_context_run away: sets stay in the copy.  The
     * scoped listener also set its list in this context (a subscribe is a
     * set), so the copy still sees it. */
    set_int(request_var, 42);
    ctx_context_t *copy = NULL;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    run_bus = bus;
    assert_int_equal(publish_from(copy, 0), 2);
    assert_int_equal(first.value, 42);
    assert_int_equal(get_int(request_var), 42);
    ctx_context_release(copy);

    ctx_bus_listener_release(a);
    ctx_bus_listener_release(b);
    ctx_bus_release(bus);
    ctx_var_release(request_var);
}

/* A listener that publishes (nested): depth-limited by the event data. */
static int nested_publish(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    int *calls = user;
    (*calls)++;
    long depth = (long)(intptr_t)ctx_bus_event_data(event);
    if (depth < 3)
        publish_int(run_bus, "t", depth + 1);
    return 0;
}

static void test_nested_publish(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    run_bus = bus;
    int calls = 0;
    ctx_bus_listener_t *l = subscribe(bus, "t", nested_publish, &calls, CTX_BUS_SCOPED);
    assert_int_equal(publish_int(bus, "t", 0), 1);
    assert_int_equal(calls, 4);
    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
}

/* ---------------------------------------------------------------------- */
/* user_release, handles, pruning                                          */
/* ---------------------------------------------------------------------- */

static int user_released[4];

static void note_user_release(void *user) { user_released[(intptr_t)user]++; }

static int nop_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    return 0;
}

static void test_user_release(void **state) {
    (void)state;
    memset(user_released, 0, sizeof user_released);
    ctx_bus_t *bus = new_bus(NULL);
    ctx_bus_subscribe_options_t global = {sizeof(ctx_bus_subscribe_options_t), 0, note_user_release};
    ctx_bus_subscribe_options_t scoped = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, note_user_release};

    /* Global: unsubscribe, then release the handle. */
    ctx_bus_listener_t *g = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, "t", nop_listener, IV(0), &global, &g), 0);
    ASSERT_RC(ctx_bus_unsubscribe(g), 0);
    assert_int_equal(user_released[0], 0); /* the handle still names it */
    ctx_bus_listener_release(g);
    assert_int_equal(user_released[0], 1);

    /* Global without a handle: lives until shutdown. */
    ASSERT_RC(ctx_bus_subscribe(bus, "t", nop_listener, IV(1), &global, NULL), 0);

    /* Scoped in a copy: goes with the copy's context. */
    ctx_context_t *copy = NULL;
    ASSERT_RC(ctx_context_new(&copy), 0);
    ASSERT_RC(ctx_context_enter(copy), 0);
    ctx_bus_listener_t *s = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, "t", nop_listener, IV(2), &scoped, &s), 0);
    ASSERT_RC(ctx_context_exit(copy), 0);
    ctx_bus_listener_release(s);
    assert_int_equal(user_released[2], 0); /* still subscribed, in `copy` */
    ctx_context_release(copy);
    assert_int_equal(user_released[2], 1);

    /* Scoped here, unsubscribed: pruned by the next scoped subscribe here. */
    ASSERT_RC(ctx_bus_subscribe(bus, "t", nop_listener, IV(3), &scoped, &s), 0);
    ASSERT_RC(ctx_bus_unsubscribe(s), 0);
    ctx_bus_listener_release(s);
    assert_int_equal(user_released[3], 0);
    ctx_bus_listener_t *other = subscribe(bus, "t", nop_listener, NULL, CTX_BUS_SCOPED);
    assert_int_equal(user_released[3], 1);

    assert_int_equal(user_released[1], 0);
    ctx_bus_release(bus); /* drops the global list */
    assert_int_equal(user_released[1], 1);
    assert_int_equal(user_released[0], 1);
    assert_int_equal(user_released[2], 1);
    assert_int_equal(user_released[3], 1);
    /* Handles outlive the bus's creator reference. */
    ASSERT_RC(ctx_bus_unsubscribe(other), 0);
    assert_int_equal(ctx_bus_listener_visible(other), 0);
    ctx_bus_listener_release(other);
}

/* ---------------------------------------------------------------------- */
/* Stats and arguments                                                     */
/* ---------------------------------------------------------------------- */

static void test_stats_and_arguments(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    ctx_bus_listener_t *l = NULL;
    ctx_bus_subscribe_options_t bad_flags = {sizeof(ctx_bus_subscribe_options_t), 0x10, NULL};

    ASSERT_RC(ctx_bus_new(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_bus_subscribe(NULL, "t", nop_listener, NULL, NULL, &l), CTX_EINVAL);
    ASSERT_RC(ctx_bus_subscribe(bus, "t", NULL, NULL, NULL, &l), CTX_EINVAL);
    ASSERT_RC(ctx_bus_subscribe(bus, "t", nop_listener, NULL, &bad_flags, &l), CTX_EINVAL);
    assert_null(l);
    ASSERT_RC(ctx_bus_unsubscribe(NULL), CTX_EINVAL);
    assert_int_equal(ctx_bus_listener_visible(NULL), 0);
    assert_null(ctx_bus_listener_pattern(NULL));
    assert_null(ctx_bus_listener_retain(NULL));
    ctx_bus_listener_release(NULL);
    ctx_bus_event_t *ev = new_event("t", 0);
    ASSERT_RC(ctx_bus_publish(NULL, ev), CTX_EINVAL);
    ASSERT_RC(ctx_bus_publish(bus, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_bus_publish_pool(bus, ev, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_bus_publish_pool(NULL, ev, NULL), CTX_EINVAL);
#if defined(CTX_BUS_HAVE_LOOP)
    ASSERT_RC(ctx_bus_publish_loop(bus, ev, NULL), CTX_EINVAL);
#endif
    ASSERT_RC(ctx_bus_stats(NULL, &st), CTX_EINVAL);
    ASSERT_RC(ctx_bus_stats(bus, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_bus_shutdown(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_bus_wait_idle(NULL, 0), CTX_EINVAL);
    ctx_bus_release(NULL);

    /* No listener: nothing called, 0. */
    ASSERT_RC(ctx_bus_publish(bus, ev), 0);
    ASSERT_RC(ctx_bus_wait_idle(bus, 0), 0);

    ctx_bus_listener_t *a = subscribe(bus, "t", nop_listener, NULL, 0);
    ctx_bus_listener_t *b = subscribe(bus, "t", nop_listener, NULL, 0);
    ctx_bus_listener_t *c = subscribe(bus, "t", nop_listener, NULL, CTX_BUS_SCOPED);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.global_listeners, 2);
    assert_int_equal(st.listener_failures, 0);
    ASSERT_RC(ctx_bus_unsubscribe(a), 0);
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.global_listeners, 1);
    ASSERT_RC(ctx_bus_publish(bus, ev), 2);
    ctx_bus_event_release(ev);
    ctx_bus_listener_release(a);
    ctx_bus_listener_release(b);
    ctx_bus_listener_release(c);
    ctx_bus_release(bus);
}

/* The scoped list formats itself in a context dump. */
static void test_format_shows_scoped_listeners(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    ctx_bus_listener_t *a = subscribe(bus, "t", nop_listener, NULL, CTX_BUS_SCOPED);
    ctx_bus_listener_t *b = subscribe(bus, "u", nop_listener, NULL, CTX_BUS_SCOPED);
    char buf[256];
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, NULL), 0);
    assert_non_null(strstr(buf, "ctx_bus.listeners=<2 scoped listeners>"));
    ctx_bus_listener_release(a);
    ctx_bus_listener_release(b);
    ctx_bus_release(bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_event_lifecycle, setup_recorders, teardown_recorders),
        cmocka_unit_test_setup_teardown(test_patterns, setup_recorders, teardown_recorders),
        cmocka_unit_test_setup_teardown(test_global_and_scoped_visibility, setup_recorders,
                                        teardown_recorders),
        cmocka_unit_test_setup_teardown(test_scoped_in_a_copy_stays_there, setup_recorders,
                                        teardown_recorders),
        cmocka_unit_test_setup_teardown(test_delivery_order, setup_recorders, teardown_recorders),
        cmocka_unit_test_setup_teardown(test_sync_runs_in_publishers_context, setup_recorders,
                                        teardown_recorders),
        cmocka_unit_test_setup_teardown(test_nested_publish, setup_recorders, teardown_recorders),
        cmocka_unit_test_setup_teardown(test_user_release, setup_recorders, teardown_recorders),
        cmocka_unit_test_setup_teardown(test_stats_and_arguments, setup_recorders,
                                        teardown_recorders),
        cmocka_unit_test_setup_teardown(test_format_shows_scoped_listeners, setup_recorders,
                                        teardown_recorders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
