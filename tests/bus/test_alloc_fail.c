/* SPDX-License-Identifier: MIT */
/*
 * test_alloc_fail.c — out-of-memory fault injection over every bus
 * operation that allocates (in the spirit of SQLite's *fault.test).
 *
 * For each operation the N-th allocation is made to fail for N = 1, 2, ...
 * until the operation succeeds without the failure firing.  Every failure
 * must return CTX_ENOMEM (or, for ctx_bus_unsubscribe, which never fails for
 * memory, succeed all the same) and change nothing a user can see: the set
 * of listeners a publish reaches is the same, no user_release or
 * data_release ran, no event is kept by the bus, no delivery is pending.
 * After the whole test everything is torn down and the counting allocator's
 * live block count is back to zero.  A synchronous publish must not
 * allocate at all: it is run with every allocation failing.
 *
 * Starting states: the thread with no ctxvar state at all ("fresh"), and
 * with a scoped list already in a context that a copy shares ("shared"),
 * so a scoped subscribe has to copy a path of the context's map.
 */
#include "bus_test.h"

#include <ctxvar/cancel.h>

#if defined(CTX_BUS_HAVE_LOOP)
#include <ctxvar/loop.h>
#endif

static int user_released;
static void note_user_release(void *user) {
    (void)user;
    user_released++;
}

static int nop_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    return 0;
}

/* A scoped subscribe made from inside a synchronous delivery (the path
 * that parks the replaced list, see src/bus/publish.c): the listener on
 * "inner" subscribes one on "other" and reports the subscribe's code. */
static int inner_rc;
static ctx_bus_listener_t *inner_new;

static int inner_subscriber(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    ctx_bus_subscribe_options_t so = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, note_user_release};
    inner_rc = ctx_bus_subscribe(user, "other", nop_listener, NULL, &so, &inner_new);
    return 0;
}

static ctx_bus_event_t *inner_event; /* made before the faults are armed */

static int publish_with_inner_subscribe(ctx_bus_t *bus) {
    inner_rc = 1;
    if (ctx_bus_publish(bus, inner_event) != 1) /* never allocates */
        return CTX_EINVAL;
    return inner_rc;
}

static int warm_up(void *arg, void **result) {
    (void)arg;
    (void)result;
    return 0;
}

/* How many listeners a synchronous publish on `topic` reaches from here. */
static int reach(ctx_bus_t *bus, const char *topic) {
    ctx_bus_event_t *ev = NULL;
    ASSERT_RC(ctx_bus_event_new(topic, NULL, NULL, &ev), 0);
    int n = ctx_bus_publish(bus, ev);
    ctx_bus_event_release(ev);
    return n;
}

/* Runs `attempt_expr` with the N-th allocation failing, N = 1, 2, ...,
 * until it succeeds with the failure not fired; `on_failure` verifies that
 * nothing changed after each failure; a failure must also leave no block
 * allocated behind (with `fresh_thread` set, the per-thread state the core
 * made for a thread that had none, which it keeps, is released first, so
 * each attempt starts from a thread without state).  Prints how many failure points the operation had (an
 * operation that never allocates is an error here). */
#define FAULT_LOOP(attempt_expr, rc_var, on_failure)                            \
    do {                                                                       \
        int fault_points = 0;                                                  \
        for (long nth_ = 1;; nth_++) {                                         \
            long live_ = ctx_test_alloc_live_blocks();                         \
            ctx_test_alloc_fail_nth(nth_);                                     \
            int rc_var = (attempt_expr);                                       \
            int fired_ = ctx_test_alloc_fired();                               \
            ctx_test_alloc_fail_nth(0);                                        \
            if (rc_var >= 0 && !fired_) {                                      \
                printf("  %-60.60s %d failure point(s)\n", #attempt_expr,      \
                       fault_points);                                          \
                if (fault_points == 0)                                         \
                    fail_msg("%s never allocated", #attempt_expr);             \
                break;                                                         \
            }                                                                  \
            if (rc_var >= 0)                                                   \
                fail_msg("%s succeeded although allocation %ld failed",         \
                         #attempt_expr, nth_);                                 \
            if (rc_var != CTX_ENOMEM)                                          \
                fail_msg("%s returned %s with allocation %ld failing",         \
                         #attempt_expr, ctx_error_name(rc_var), nth_);         \
            if (fresh_thread)                                                  \
                ASSERT_RC(ctx_thread_release(), 0);                            \
            if (ctx_test_alloc_live_blocks() != live_)                         \
                fail_msg("%s failed at allocation %ld but kept %ld block(s)",  \
                         #attempt_expr, nth_,                                  \
                         ctx_test_alloc_live_blocks() - live_);                \
            on_failure;                                                        \
            fault_points++;                                                    \
            if (nth_ > 200)                                                    \
                fail_msg("%s never succeeded", #attempt_expr);                 \
        }                                                                      \
    } while (0)

static int fresh_thread; /* see FAULT_LOOP */

static void run_faults(int fresh) {
    ctx_test_alloc_install();
    fresh_thread = 0;
    user_released = 0;
    atomic_store(&data_released, 0);

    /* ctx_bus_new. */
    ctx_bus_t *bus = NULL;
    FAULT_LOOP(ctx_bus_new(NULL, &bus), rc, assert_int_equal(ctx_test_alloc_live_blocks(), 0));
    assert_non_null(bus);

    ctx_context_t *sharer = NULL;
    ctx_bus_listener_t *base = NULL;
    if (!fresh) {
        base = subscribe(bus, "t", nop_listener, NULL, CTX_BUS_SCOPED);
        ASSERT_RC(ctx_context_copy_current(&sharer), 0);
    } else {
        ASSERT_RC(ctx_thread_release(), 0);
    }
    int before = fresh ? 0 : 1;

    /* Subscribe, global and scoped: a failure subscribes nothing and keeps
     * `user` (no user_release). */
    ctx_bus_subscribe_options_t go = {sizeof(ctx_bus_subscribe_options_t), 0, note_user_release};
    ctx_bus_subscribe_options_t so = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, note_user_release};
    ctx_bus_listener_t *g = NULL, *s = NULL;
    FAULT_LOOP(ctx_bus_subscribe(bus, "t", nop_listener, NULL, &go, &g), rc, {
        assert_null(g);
        assert_int_equal(user_released, 0);
        assert_int_equal(reach(bus, "t"), before);
    });
    before++;
    assert_int_equal(reach(bus, "t"), before);
    fresh_thread = fresh;
    FAULT_LOOP(ctx_bus_subscribe(bus, "t", nop_listener, NULL, &so, &s), rc, {
        assert_null(s);
        assert_int_equal(user_released, 0);
        assert_int_equal(reach(bus, "t"), before);
    });
    fresh_thread = 0;
    before++;
    assert_int_equal(reach(bus, "t"), before);
    if (sharer) { /* the copy still sees only what it had */
        ASSERT_RC(ctx_context_enter(sharer), 0);
        assert_int_equal(reach(bus, "t"), 2); /* base + g */
        ASSERT_RC(ctx_context_exit(sharer), 0);
    }

    /* A scoped subscribe from inside a synchronous delivery. */
    ctx_bus_listener_t *inner = subscribe(bus, "inner", inner_subscriber, bus, CTX_BUS_SCOPED);
    ASSERT_RC(ctx_bus_event_new("inner", NULL, NULL, &inner_event), 0);
    inner_new = NULL;
    FAULT_LOOP(publish_with_inner_subscribe(bus), rc, {
        assert_null(inner_new);
        assert_int_equal(user_released, 0);
        assert_int_equal(reach(bus, "other"), 0);
        assert_int_equal(reach(bus, "t"), before);
    });
    assert_non_null(inner_new);
    assert_int_equal(reach(bus, "other"), 1);
    ASSERT_RC(ctx_bus_unsubscribe(inner), 0);
    ctx_bus_listener_release(inner);
    ctx_bus_event_release(inner_event);

    /* A synchronous publish never allocates. */
    ctx_bus_event_t *ev = NULL;
    ASSERT_RC(ctx_bus_event_new("t", IV(1), count_release, &ev), 0);
    ctx_test_alloc_fail_all(1);
    assert_int_equal(ctx_bus_publish(bus, ev), before);
    ctx_test_alloc_fail_all(0);

    /* Event creation. */
    ctx_bus_event_t *ev2 = NULL;
    FAULT_LOOP(ctx_bus_event_new("t.other", IV(2), count_release, &ev2), rc, {
        assert_null(ev2);
        assert_int_equal(atomic_load(&data_released), 0);
    });
    ctx_bus_event_release(ev2);
    assert_int_equal(atomic_load(&data_released), 1);

    /* Pool publish: a failure delivers nothing, keeps nothing. */
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    /* Warm the worker up first (its per-thread state is made by its first
     * task), so every allocation counted below is the publisher's. */
    ctx_pool_future_t *warm = NULL;
    ASSERT_RC(ctx_pool_submit(pool, warm_up, NULL, &warm), 0);
    ASSERT_RC(ctx_pool_future_wait(warm, CTX_WAIT_FOREVER), 0);
    ctx_pool_future_release(warm);
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    FAULT_LOOP(ctx_bus_publish_pool(bus, ev, pool), rc, {
        ASSERT_RC(ctx_bus_stats(bus, &st), 0);
        assert_int_equal(st.async_pending, 0);
        assert_int_equal(st.async_accepted, 0);
    });
    ASSERT_RC(ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_release(pool), 0);

#if defined(CTX_BUS_HAVE_LOOP)
    /* Loop publish: the same. */
    ctx_loop_t *loop = NULL;
    ASSERT_RC(ctx_loop_new(NULL, &loop), 0);
    FAULT_LOOP(ctx_bus_publish_loop(bus, ev, loop), rc, {
        ASSERT_RC(ctx_bus_stats(bus, &st), 0);
        assert_int_equal(st.async_pending, 0);
        assert_int_equal(st.async_accepted, 1);
    });
    ASSERT_RC(ctx_loop_run(loop, UV_RUN_DEFAULT), 0);
    ASSERT_RC(ctx_bus_wait_idle(bus, 0), 0);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ctx_loop_release(loop);
#endif
    ctx_bus_event_release(ev);
    assert_int_equal(atomic_load(&data_released), 2); /* once each */

    /* Unsubscribe of a global listener with its list rebuild failing (the
     * new list would hold `keep`, so it needs memory): it succeeds, and the
     * listener is no longer called. */
    ctx_bus_listener_t *keep = subscribe(bus, "t", nop_listener, NULL, 0);
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_bus_unsubscribe(g), 0);
    ctx_test_alloc_fail_all(0);
    assert_int_equal(reach(bus, "t"), before); /* + keep - g */
    ASSERT_RC(ctx_bus_stats(bus, &st), 0);
    assert_int_equal(st.global_listeners, 1);
    ctx_bus_listener_release(g);
    assert_int_equal(user_released, 0); /* the bus's list still names it */
    /* The next change of the global list drops it. */
    ctx_bus_listener_t *g2 = subscribe(bus, "t", nop_listener, NULL, 0);
    assert_int_equal(user_released, 1);

    /* Teardown: every user released once, no block left. */
    ctx_bus_listener_release(g2);
    ctx_bus_listener_release(keep);
    ctx_bus_listener_release(s);
    ctx_bus_listener_release(base);
    ctx_bus_listener_release(inner_new);
    ctx_bus_release(bus);
    ctx_context_release(sharer);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(user_released, 3);
    assert_int_equal(off_main_failures(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

static void test_faults_fresh_thread(void **state) {
    (void)state;
    run_faults(1);
}

static void test_faults_shared_context(void **state) {
    (void)state;
    run_faults(0);
}

int main(void) {
    /* A pool task with a future runs in a cancellation scope of its own,
     * held by a variable the library makes at first use and keeps for the
     * process's life: made here, before any test counts live blocks. */
    ctx_token_t *tok = NULL;
    if (ctx_cancel_enter(NULL, &tok) != 0 || ctx_cancel_exit(tok) != 0 ||
        ctx_thread_release() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_faults_fresh_thread, release_thread),
        cmocka_unit_test_teardown(test_faults_shared_context, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
