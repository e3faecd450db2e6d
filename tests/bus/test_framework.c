/* SPDX-License-Identifier: MIT */
/*
 * test_framework.c — an agent framework's listeners in a context variable, in C.
 *
 * An agent framework keeps its event listeners in a context variable; a web
 * framework runs the next callback of a request on a worker thread, which
 * starts in an empty context, and the listener registered by the request is
 * gone.  Here:
 *
 *   - a "framework worker": one long-lived thread that runs callbacks posted
 *     by every request, interleaved (what a web framework's executor does);
 *     it starts in an empty context and never gets one of its own;
 *   - a ctx_pool_t;
 *   - several requests at once, each on its own thread: it sets its request
 *     id, registers a scoped listener for "progress.*", publishes from the
 *     handler itself, hands a *bound* callback to the framework worker and a
 *     task to the pool, both of which publish progress events.
 *
 * Every request's listener must receive exactly its own request's events —
 * from the handler, the framework worker and the pool — each delivered in
 * that request's context, and never one published by another request's
 * code.  A callback posted to the worker *without* binding (the bug the
 * framework's users patched by hand) publishes into an empty context: no
 * scoped listener receives it, only the global audit listener does.
 */
#include "bus_test.h"

#define REQUESTS 6
#define EVENTS_PER_CHANNEL SCALED(40, 4, 10)

static ctx_var_t *request_var;
static ctx_bus_t *bus;
static ctx_pool_t *pool;

/* ---- the framework worker: a queue of plain callbacks ---- */

typedef struct job {
    void (*fn)(void *);
    void *arg;
} job_t;

#define QUEUE_CAP 1024

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job_t jobs[QUEUE_CAP];
    size_t head, tail;
    int stop;
} worker_queue;

static void worker_post(void (*fn)(void *), void *arg) {
    pthread_mutex_lock(&worker_queue.lock);
    while (worker_queue.tail - worker_queue.head == QUEUE_CAP)
        pthread_cond_wait(&worker_queue.cond, &worker_queue.lock);
    worker_queue.jobs[worker_queue.tail++ % QUEUE_CAP] = (job_t){fn, arg};
    pthread_cond_broadcast(&worker_queue.cond);
    pthread_mutex_unlock(&worker_queue.lock);
}

static void *worker_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&worker_queue.lock);
        while (worker_queue.head == worker_queue.tail && !worker_queue.stop)
            pthread_cond_wait(&worker_queue.cond, &worker_queue.lock);
        if (worker_queue.head == worker_queue.tail) {
            pthread_mutex_unlock(&worker_queue.lock);
            break;
        }
        job_t job = worker_queue.jobs[worker_queue.head++ % QUEUE_CAP];
        pthread_cond_broadcast(&worker_queue.cond);
        pthread_mutex_unlock(&worker_queue.lock);
        job.fn(job.arg);
    }
    ctx_thread_release();
    return NULL;
}

/* ---- what a request's code publishes ---- */

/* Publishes "progress.<channel>" carrying the request id the publishing
 * code believes it serves (its context's), or -1 in an empty context. */
static void publish_progress(const char *channel, long id) {
    char topic[64];
    snprintf(topic, sizeof topic, "progress.%s", channel);
    ctx_bus_event_t *ev = NULL;
    OFF_MAIN_CHECK(ctx_bus_event_new(topic, IV(id), count_release, &ev) == 0);
    OFF_MAIN_CHECK(ctx_bus_publish(bus, ev) >= 0);
    ctx_bus_event_release(ev);
}

/* The callback a request hands to the framework worker, bound. */
static void *bound_step(void *arg, void *call_arg) {
    (void)call_arg;
    long expected = (long)(intptr_t)arg;
    OFF_MAIN_CHECK(get_int(request_var) == expected);
    publish_progress("worker", get_int(request_var));
    return NULL;
}

/* The same callback handed over unbound: runs in the worker's empty
 * context. */
static atomic_int unbound_ran;

static void unbound_step(void *arg) {
    (void)arg;
    OFF_MAIN_CHECK(get_int(request_var) == -1);
    publish_progress("orphan", get_int(request_var));
    atomic_fetch_add(&unbound_ran, 1);
}

static int pool_step(void *arg, void **result) {
    (void)result;
    OFF_MAIN_CHECK(get_int(request_var) == (long)(intptr_t)arg);
    publish_progress("pool", get_int(request_var));
    return 0;
}

static void release_bound(void *bound) { ctx_pool_bound_release(bound); }

/* ---- requests ---- */

static recorder_t listeners[REQUESTS];
static atomic_int listener_released[REQUESTS];

static void on_listener_release(void *user) {
    recorder_t *r = user;
    atomic_fetch_add(&listener_released[r->tag], 1);
}

static void *request_main(void *arg) {
    long id = (long)(intptr_t)arg;
    OFF_MAIN_CHECK(ctx_var_set(request_var, IV(id), NULL) == 0);

    ctx_bus_subscribe_options_t scoped = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, on_listener_release};
    OFF_MAIN_CHECK(ctx_bus_subscribe(bus, "progress.*", record_listener, &listeners[id],
                                     &scoped, NULL) == 0);

    /* Bind once, call many times from the framework's worker. */
    ctx_pool_bound_t *bound = NULL;
    OFF_MAIN_CHECK(ctx_pool_bound_new(bound_step, IV(id), NULL, &bound) == 0);
    int n = EVENTS_PER_CHANNEL;
    for (int i = 0; i < n; i++) {
        publish_progress("handler", id);
        worker_post(ctx_pool_bound_trampoline_void, bound);
        ctx_pool_future_t *f = NULL;
        OFF_MAIN_CHECK(ctx_pool_submit(pool, pool_step, IV(id), &f) == 0);
        ctx_pool_future_release(f);
        if (i % 8 == 0)
            worker_post(unbound_step, NULL);
    }
    /* The bound callable is released by the worker after the last call:
     * post its release behind the calls. */
    worker_post(release_bound, bound);
    ctx_thread_release(); /* the request ends: its context goes */
    return NULL;
}

/* ---- the global audit ---- */

static atomic_int audit_events;
static atomic_int audit_orphans;

static int audit_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)user;
    atomic_fetch_add(&audit_events, 1);
    if (strcmp(ctx_bus_event_topic(event), "progress.orphan") == 0)
        atomic_fetch_add(&audit_orphans, 1);
    return 0;
}

static void test_framework_scenario(void **state) {
    (void)state;
    request_var = new_var("request_id");
    bus = new_bus(NULL);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 3;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    pthread_mutex_init(&worker_queue.lock, NULL);
    pthread_cond_init(&worker_queue.cond, NULL);
    worker_queue.head = worker_queue.tail = 0;
    worker_queue.stop = 0;
    atomic_store(&unbound_ran, 0);
    atomic_store(&audit_events, 0);
    atomic_store(&audit_orphans, 0);
    atomic_store(&data_released, 0);

    ctx_bus_listener_t *audit = subscribe(bus, "progress.*", audit_listener, NULL, 0);
    for (int k = 0; k < REQUESTS; k++) {
        recorder_init(&listeners[k], k, request_var);
        atomic_store(&listener_released[k], 0);
    }

    pthread_t worker, requests[REQUESTS];
    assert_int_equal(pthread_create(&worker, NULL, worker_main, NULL), 0);
    for (int k = 0; k < REQUESTS; k++)
        assert_int_equal(pthread_create(&requests[k], NULL, request_main, IV(k)), 0);
    for (int k = 0; k < REQUESTS; k++)
        pthread_join(requests[k], NULL);
    pthread_mutex_lock(&worker_queue.lock);
    worker_queue.stop = 1;
    pthread_cond_broadcast(&worker_queue.cond);
    pthread_mutex_unlock(&worker_queue.lock);
    pthread_join(worker, NULL);
    ASSERT_RC(ctx_pool_release(pool), 0); /* drains: every pool step ran */

    int n = EVENTS_PER_CHANNEL;
    int orphans = REQUESTS * ((n + 7) / 8);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(atomic_load(&unbound_ran), orphans);
    for (int k = 0; k < REQUESTS; k++) {
        recorder_t *r = &listeners[k];
        /* n from each channel: a publish reaches a listener at most once. */
        assert_int_equal(recorder_count(r), 3 * n);
        for (int i = 0; i < r->count; i++) {
            /* Only this request's events, each in this request's context. */
            if (r->entries[i].data != k || r->entries[i].ctx_value != k)
                fail_msg("request %d's listener saw data %ld in context %ld", k,
                         r->entries[i].data, r->entries[i].ctx_value);
        }
        /* Every context holding the listener is gone: released once. */
        assert_int_equal(atomic_load(&listener_released[k]), 1);
    }
    /* The audit saw everything, the orphans included; no scoped listener
     * saw an orphan (checked above: data -1 would have failed). */
    assert_int_equal(atomic_load(&audit_events), REQUESTS * 3 * n + orphans);
    assert_int_equal(atomic_load(&audit_orphans), orphans);
    assert_int_equal(atomic_load(&data_released), REQUESTS * 3 * n + orphans);

    ctx_bus_listener_release(audit);
    ctx_bus_release(bus);
    for (int k = 0; k < REQUESTS; k++)
        recorder_destroy(&listeners[k]);
    pthread_mutex_destroy(&worker_queue.lock);
    pthread_cond_destroy(&worker_queue.cond);
    ctx_var_release(request_var);
}

/* The same handler code with a thread that inherits its creator's context
 * (ctx_pool_thread_create with CTX_POOL_THREAD_INHERIT), and with a bound callable
 * called from a plain pthread: both reach the request's listener. */
static void *inheriting_thread(void *arg) {
    publish_progress("thread", (long)(intptr_t)arg);
    return NULL;
}

static void test_thread_helpers_carry_listeners(void **state) {
    (void)state;
    request_var = new_var("request_id");
    bus = new_bus(NULL);
    recorder_t *r = &listeners[0];
    recorder_init(r, 0, request_var);
    set_int(request_var, 5);
    ctx_bus_listener_t *l = subscribe(bus, "progress.*", record_listener, r, CTX_BUS_SCOPED);

    ctx_pool_thread_t *t = NULL;
    ASSERT_RC(ctx_pool_thread_create(inheriting_thread, IV(5), CTX_POOL_THREAD_INHERIT, &t), 0);
    ASSERT_RC(ctx_pool_thread_join(t, NULL), 0);
    /* Without INHERIT: an empty context, no scoped listener. */
    ASSERT_RC(ctx_pool_thread_create(inheriting_thread, IV(-1), 0, &t), 0);
    ASSERT_RC(ctx_pool_thread_join(t, NULL), 0);

    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(bound_step, IV(5), NULL, &b), 0);
    pthread_t plain;
    pthread_create(&plain, NULL, ctx_pool_bound_trampoline, b);
    pthread_join(plain, NULL);
    ctx_pool_bound_release(b);

    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(recorder_count(r), 2);
    assert_int_equal(r->entries[0].data, 5);
    assert_int_equal(r->entries[0].ctx_value, 5);
    assert_int_equal(r->entries[1].data, 5);
    assert_int_equal(r->entries[1].ctx_value, 5);

    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
    recorder_destroy(r);
    ctx_var_release(request_var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_framework_scenario, release_thread),
        cmocka_unit_test_teardown(test_thread_helpers_carry_listeners, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
