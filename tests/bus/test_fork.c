/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c — a bus made before fork() in the child (bus.h, "fork()").
 *
 * The parent has a bus with a global and a scoped listener, and an
 * asynchronous delivery in flight on a pool worker (blocked in its
 * listener) when it forks.  Asserts, in the child: every publish (sync,
 * pool, loop), subscribe, unsubscribe, shutdown, stats and wait_idle of the
 * parent's bus returns CTX_EFORKED and calls no listener; wait_idle does not
 * wait for the delivery whose worker the child does not have;
 * ctx_bus_listener_visible says 0; releasing the handles and the bus returns
 * (no lock taken, no user_release run); events and a bus made in the child
 * work.  In the parent: the delivery finishes and the bus goes on.
 *
 * Then a fork while another thread is inside a synchronous publish nested
 * in another (its reader record covers every bus): in the child, a bus
 * made there frees a listener as soon as it is unsubscribed and released
 * (the child's registry does not keep the thread it lacks); in the parent
 * the same waits for that publish to return.
 */
#include "bus_test.h"

#if defined(CTX_BUS_HAVE_LOOP)
#include <ctxvar/loop.h>
#endif

#include "../loop/fork_test.h"

static atomic_int listener_calls;
static atomic_int user_releases;
static atomic_int slow_entered;
static atomic_int slow_may_return;

static int count_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_fetch_add(&listener_calls, 1);
    return 0;
}

static int slow_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_store(&slow_entered, 1);
    while (!atomic_load(&slow_may_return))
        short_nap();
    return 0;
}

static void note_user_release(void *user) {
    (void)user;
    atomic_fetch_add(&user_releases, 1);
}

static ctx_bus_listener_t *subscribe_counted(ctx_bus_t *bus, const char *pattern,
                                             ctx_bus_listener_fn fn, unsigned flags) {
    ctx_bus_subscribe_options_t o = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    o.flags = flags;
    o.user_release = note_user_release;
    ctx_bus_listener_t *l = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, pattern, fn, NULL, &o, &l), 0);
    return l;
}

/* In the child: events and a bus of its own work. */
static void child_new_bus_works(void) {
    ctx_bus_t *fresh = NULL;
    CHILD_CHECK_RC(ctx_bus_new(NULL, &fresh), 0);
    CHILD_CHECK_RC(ctx_bus_subscribe(fresh, "a.*", count_listener, NULL, NULL, NULL), 0);
    ctx_bus_event_t *ev = NULL;
    CHILD_CHECK_RC(ctx_bus_event_new("a.b", NULL, NULL, &ev), 0);
    int before = atomic_load(&listener_calls);
    CHILD_CHECK_RC(ctx_bus_publish(fresh, ev), 1);
    CHILD_CHECK(atomic_load(&listener_calls) == before + 1);
    ctx_bus_event_release(ev);
    ctx_bus_release(fresh);
}

static void test_bus_made_before_fork_is_unusable_in_the_child(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    atomic_store(&listener_calls, 0);
    atomic_store(&user_releases, 0);
    atomic_store(&slow_entered, 0);
    atomic_store(&slow_may_return, 0);
    ctx_bus_listener_t *g = subscribe_counted(bus, "job.*", count_listener, 0);
    ctx_bus_listener_t *s = subscribe_counted(bus, "job.*", count_listener, CTX_BUS_SCOPED);
    ctx_bus_listener_t *slow = subscribe_counted(bus, "slow", slow_listener, 0);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    ctx_bus_event_t *ev = new_event("job.step", 1);
    ctx_bus_event_t *slow_ev = new_event("slow", 2);
    ASSERT_RC(ctx_bus_publish_pool(bus, slow_ev, pool), 1);
    while (!atomic_load(&slow_entered)) /* a delivery in flight at the fork */
        short_nap();
#if defined(CTX_BUS_HAVE_LOOP)
    ctx_loop_t *loop = NULL;
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
#endif

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        CHILD_CHECK_RC(ctx_bus_publish(bus, ev), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_bus_publish_pool(bus, ev, pool), CTX_EFORKED);
#if defined(CTX_BUS_HAVE_LOOP)
        CHILD_CHECK_RC(ctx_bus_publish_loop(bus, ev, loop), CTX_EFORKED);
#endif
        ctx_bus_listener_t *l = NULL;
        CHILD_CHECK_RC(ctx_bus_subscribe(bus, "x", count_listener, NULL, NULL, &l), CTX_EFORKED);
        ctx_bus_subscribe_options_t so = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
        so.flags = CTX_BUS_SCOPED;
        CHILD_CHECK_RC(ctx_bus_subscribe(bus, "x", count_listener, NULL, &so, &l), CTX_EFORKED);
        CHILD_CHECK(l == NULL);
        CHILD_CHECK_RC(ctx_bus_unsubscribe(g), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_bus_unsubscribe(s), CTX_EFORKED);
        ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
        CHILD_CHECK_RC(ctx_bus_stats(bus, &st), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_bus_wait_idle(bus, 0), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_bus_shutdown(bus), CTX_EFORKED);
        CHILD_CHECK(ctx_bus_listener_visible(g) == 0);
        CHILD_CHECK(ctx_bus_listener_visible(s) == 0);
        CHILD_CHECK(strcmp(ctx_bus_listener_pattern(g), "job.*") == 0);
        CHILD_CHECK(atomic_load(&listener_calls) == 0);
        /* Releases return, take no lock and run no user_release. */
        ctx_bus_listener_release(g);
        ctx_bus_listener_release(s);
        ctx_bus_listener_release(slow);
        ctx_bus_release(bus);
        CHILD_CHECK(atomic_load(&user_releases) == 0);
        ctx_bus_event_release(ev); /* events are not the bus's */
        ctx_bus_event_release(slow_ev);
        child_new_bus_works();
        child_exit();
    }
    assert_int_equal(wait_child(pid), 0);

    /* The parent's bus: the delivery in flight ends, the rest goes on. */
    atomic_store(&slow_may_return, 1);
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_bus_publish(bus, ev), 2);
    assert_int_equal(atomic_load(&listener_calls), 2);
    ctx_bus_event_release(ev);
    ctx_bus_event_release(slow_ev);
    ctx_bus_listener_release(g);
    ctx_bus_listener_release(s);
    ctx_bus_listener_release(slow);
    ctx_bus_release(bus);
    ASSERT_RC(ctx_pool_release(pool), 0);
#if defined(CTX_BUS_HAVE_LOOP)
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
#endif
}

/* ---- a fork while another thread is inside a publish ----
 * That thread's reader record (reclaim.c) says it may hold any bus's lists
 * (a publish nested in a publish on another bus).  The child does not have
 * the thread: a bus made there frees an unsubscribed listener at once. */

static atomic_int nested_entered, nested_may_return;
static ctx_bus_t *inner_bus;

static int blocking_inner(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    atomic_store(&nested_entered, 1);
    while (!atomic_load(&nested_may_return))
        short_nap();
    return 0;
}

static int publishing_outer(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)user;
    return ctx_bus_publish(inner_bus, event) == 1 ? 0 : CTX_EINVAL;
}

static void *nested_publisher(void *arg) {
    ctx_bus_t *outer = arg;
    ctx_bus_event_t *ev = NULL;
    if (ctx_bus_event_new("warm", NULL, NULL, &ev) == 0) { /* registers the thread */
        ctx_bus_publish(outer, ev);
        ctx_bus_event_release(ev);
    }
    if (ctx_bus_event_new("n", NULL, NULL, &ev) == 0) {
        ctx_bus_publish(outer, ev);
        ctx_bus_event_release(ev);
    }
    ctx_thread_release();
    return NULL;
}

static void test_fork_while_a_thread_publishes(void **state) {
    (void)state;
    ctx_bus_t *outer = new_bus(NULL);
    inner_bus = new_bus(NULL);
    atomic_store(&nested_entered, 0);
    atomic_store(&nested_may_return, 0);
    atomic_store(&user_releases, 0);
    ASSERT_RC(ctx_bus_subscribe(outer, "n", publishing_outer, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_bus_subscribe(inner_bus, "n", blocking_inner, NULL, NULL, NULL), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, nested_publisher, outer), 0);
    while (!atomic_load(&nested_entered))
        short_nap();

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ctx_bus_t *fresh = NULL;
        CHILD_CHECK_RC(ctx_bus_new(NULL, &fresh), 0);
        ctx_bus_listener_t *l = subscribe_counted(fresh, "c", count_listener, 0);
        ctx_bus_event_t *ev = NULL;
        CHILD_CHECK_RC(ctx_bus_event_new("c", NULL, NULL, &ev), 0);
        CHILD_CHECK_RC(ctx_bus_publish(fresh, ev), 1);
        CHILD_CHECK_RC(ctx_bus_unsubscribe(l), 0);
        ctx_bus_listener_release(l);
        CHILD_CHECK(atomic_load(&user_releases) == 1); /* nothing holds it */
        CHILD_CHECK_RC(ctx_bus_publish(fresh, ev), 0);
        ctx_bus_event_release(ev);
        ctx_bus_release(fresh);
        child_exit();
    }
    assert_int_equal(wait_child(pid), 0);

    /* The parent: the same, once the nested publish returned. */
    ctx_bus_listener_t *l = subscribe_counted(inner_bus, "c", count_listener, 0);
    ASSERT_RC(ctx_bus_unsubscribe(l), 0);
    ctx_bus_listener_release(l);
    assert_int_equal(atomic_load(&user_releases), 0); /* the blocked publish may hold it */
    atomic_store(&nested_may_return, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(atomic_load(&user_releases), 1);
    ctx_bus_release(outer);
    ctx_bus_release(inner_bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bus_made_before_fork_is_unusable_in_the_child,
                                  release_thread),
        cmocka_unit_test_teardown(test_fork_while_a_thread_publishes, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
