/* SPDX-License-Identifier: MIT */
/*
 * test_group.c — pool groups (Go's errgroup): every task awaited; the
 * first failure cancels the siblings (queued ones never start, running ones
 * see ctx_cancel_check() fail) and is the group's result; cancelling the
 * group, its parent or its deadline stop it likewise; a task cancelled
 * through its own future is not a failure; waiting is cancellable by the
 * waiter's own scope; releasing an unwaited group stops it; every new
 * function under the failing allocator.
 *
 * Tasks wait at gates or for the check itself: no timing assumptions.
 */
#include "pool_test.h"

#define MS ((int64_t)1000000)

static ctx_pool_t *new_pool(size_t threads) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = threads;
    ASSERT_RC(ctx_pool_new(&o, &pool), 0);
    return pool;
}

static ctx_pool_group_t *new_group(ctx_pool_t *pool, const ctx_cancel_options_t *o) {
    ctx_pool_group_t *g = NULL;
    ASSERT_RC(ctx_pool_group_new(pool, o, &g), 0);
    assert_non_null(g);
    return g;
}

static int group_teardown(void **state) {
    (void)state;
    for (int i = 0; i < 3000 && ctx_cancel_timer_release() == CTX_EBUSY; i++)
        short_nap();
    return pool_teardown(state);
}

/* ---- tasks ---- */

typedef struct probe {
    atomic_int started;
    atomic_int saw;      /* ctx_cancel_check() when it stopped */
    atomic_int released; /* arg_release calls */
    int ret;             /* what it returns when it does not wait */
    atomic_int *wait_for; /* start only once *wait_for != 0 (NULL: at once) */
} probe_t;

static void probe_release(void *arg) { atomic_fetch_add(&((probe_t *)arg)->released, 1); }

/* Waits (bounded only against hanging) until the check fails; returns it. */
static int await_check(void) {
    for (long i = 0; i < 300000; i++) {
        int c = ctx_cancel_check();
        if (c)
            return c;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void await_flag(atomic_int *flag) {
    while (!atomic_load(flag))
        short_nap();
}

/* Runs until its scope is cancelled, and gives up with what the check
 * says. */
static int task_until_cancelled(void *arg, void **result) {
    (void)result;
    probe_t *p = arg;
    atomic_store(&p->started, 1);
    int c = await_check();
    atomic_store(&p->saw, c);
    return c;
}

/* Returns p->ret (once *p->wait_for is set). */
static int task_return(void *arg, void **result) {
    (void)result;
    probe_t *p = arg;
    if (p->wait_for)
        await_flag(p->wait_for);
    atomic_store(&p->started, 1);
    atomic_store(&p->saw, ctx_cancel_check());
    return p->ret;
}

static ctx_pool_submit_options_t with_release(void) {
    ctx_pool_submit_options_t o = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    o.arg_release = probe_release;
    return o;
}

/* ---------------------------------------------------------------------- */

static void test_all_succeed(void **state) {
    (void)state;
    enum { N = 20 };
    ctx_pool_t *pool = new_pool(2);
    ctx_pool_group_t *g = new_group(pool, NULL);
    ASSERT_RC(ctx_pool_group_wait(g, 0), 0); /* nothing submitted yet */
    probe_t p[N];
    memset(p, 0, sizeof p);
    ctx_pool_submit_options_t so = with_release();
    ctx_pool_future_t *f[N];
    for (int i = 0; i < N; i++)
        ASSERT_RC(ctx_pool_group_submit(g, task_return, &p[i], &so, i % 3 ? NULL : &f[i]), 0);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), 0);
    /* Every task ended (arg_release ran) before the wait returned. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&p[i].started), 1);
        assert_int_equal(atomic_load(&p[i].released), 1);
        assert_int_equal(atomic_load(&p[i].saw), 0);
        if (i % 3 == 0) {
            assert_int_equal(ctx_pool_future_done(f[i]), 1);
            ctx_pool_future_release(f[i]);
        }
    }
    ASSERT_RC(ctx_pool_group_wait(g, 0), 0); /* again: the same */
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_pool_group_scope(g, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_error(scope), 0);
    ctx_pool_group_release(g); /* nothing pending: nothing cancelled */
    ASSERT_RC(ctx_pool_release(pool), 0);
}

static void test_first_failure_cancels_siblings(void **state) {
    (void)state;
    enum { QUEUED = 8 };
    ctx_pool_t *pool = new_pool(2);
    ctx_pool_group_t *g = new_group(pool, NULL);
    probe_t a, b, q[QUEUED];
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(q, 0, sizeof q);
    atomic_int go = 0;
    b.ret = CTX_ECONNECTION;
    b.wait_for = &go; /* fails once its sibling runs and the rest is queued */
    ctx_pool_submit_options_t so = with_release();
    ctx_pool_future_t *fa = NULL;
    ASSERT_RC(ctx_pool_group_submit(g, task_until_cancelled, &a, &so, &fa), 0);
    ASSERT_RC(ctx_pool_group_submit(g, task_return, &b, &so, NULL), 0);
    for (int i = 0; i < QUEUED; i++) /* behind both workers */
        ASSERT_RC(ctx_pool_group_submit(g, task_return, &q[i], &so, NULL), 0);
    await_flag(&a.started);
    atomic_store(&go, 1);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECONNECTION);

    assert_int_equal(atomic_load(&a.saw), CTX_ECANCELLED); /* stopped by the failure */
    assert_int_equal(ctx_pool_future_state(fa), CTX_POOL_FUTURE_CANCELLED);
    ASSERT_RC(ctx_pool_future_result(fa, NULL), CTX_ECANCELLED);
    assert_int_equal(atomic_load(&a.released), 1);
    assert_int_equal(atomic_load(&b.released), 1);
    /* Queued behind the failure: each worker took them only after it
     * ended its task, i.e. after the failure stopped the group. */
    for (int i = 0; i < QUEUED; i++) {
        assert_int_equal(atomic_load(&q[i].released), 1);
        assert_int_equal(atomic_load(&q[i].started), 0);
    }
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_pool_group_scope(g, &scope), 0);
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    ASSERT_RC(ctx_cancel_scope_cause(scope, &cause), CTX_ECANCELLED);
    assert_int_equal(cause.code, CTX_ECONNECTION);
    /* A stopped group takes nothing more; arg stays the caller's. */
    probe_t late;
    memset(&late, 0, sizeof late);
    ASSERT_RC(ctx_pool_group_submit(g, task_return, &late, &so, NULL), CTX_ECANCELLED);
    assert_int_equal(atomic_load(&late.released), 0);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECONNECTION); /* unchanged */

    ctx_pool_future_release(fa);
    ctx_pool_group_release(g);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* The queued siblings of a failure never start: one worker, the failing
 * task first. */
static void test_queued_siblings_never_start(void **state) {
    (void)state;
    enum { QUEUED = 8 };
    ctx_pool_t *pool = new_pool(1);
    ctx_pool_group_t *g = new_group(pool, NULL);
    probe_t bad, q[QUEUED];
    memset(&bad, 0, sizeof bad);
    memset(q, 0, sizeof q);
    bad.ret = CTX_ECALLBACK;
    atomic_int go = 0;
    bad.wait_for = &go;
    ctx_pool_submit_options_t so = with_release();
    ASSERT_RC(ctx_pool_group_submit(g, task_return, &bad, &so, NULL), 0);
    ctx_pool_future_t *f[QUEUED];
    for (int i = 0; i < QUEUED; i++)
        ASSERT_RC(ctx_pool_group_submit(g, task_return, &q[i], &so, i % 2 ? &f[i] : NULL), 0);
    atomic_store(&go, 1);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECALLBACK);
    for (int i = 0; i < QUEUED; i++) {
        assert_int_equal(atomic_load(&q[i].started), 0);
        assert_int_equal(atomic_load(&q[i].released), 1);
        if (i % 2) {
            assert_int_equal(ctx_pool_future_state(f[i]), CTX_POOL_FUTURE_CANCELLED);
            ASSERT_RC(ctx_pool_future_result(f[i], NULL), CTX_ECANCELLED);
            ctx_pool_future_release(f[i]);
        }
    }
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(pool, &st), 0);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.cancelled, QUEUED);
    ctx_pool_group_release(g);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* Cancelling the group, or its parent, or its deadline passing: the first
 * task stopped makes the result. */
static void test_cancel_parent_and_deadline(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    /* ctx_pool_group_cancel */
    ctx_pool_group_t *g = new_group(pool, NULL);
    probe_t p[2];
    memset(p, 0, sizeof p);
    for (int i = 0; i < 2; i++)
        ASSERT_RC(ctx_pool_group_submit(g, task_until_cancelled, &p[i], NULL, NULL), 0);
    await_flag(&p[0].started);
    ASSERT_RC(ctx_pool_group_cancel(g), 0);
    ASSERT_RC(ctx_pool_group_cancel(g), CTX_CANCEL_ALREADY);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECANCELLED);
    for (int i = 0; i < 2; i++)
        assert_true(atomic_load(&p[i].saw) == CTX_ECANCELLED || !atomic_load(&p[i].started));
    ctx_pool_group_release(g);

    /* The parent: the group is a child of the scope current at its making. */
    ctx_cancel_scope_t *parent = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &parent, &tok), 0);
    g = new_group(pool, NULL);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    memset(p, 0, sizeof p);
    ASSERT_RC(ctx_pool_group_submit(g, task_until_cancelled, &p[0], NULL, NULL), 0);
    await_flag(&p[0].started);
    ASSERT_RC(ctx_cancel_scope_cancel(parent, NULL), 0);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECANCELLED);
    assert_int_equal(atomic_load(&p[0].saw), CTX_ECANCELLED);
    ctx_pool_group_release(g);
    ctx_cancel_scope_release(parent);

    /* The group's own deadline. */
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 20 * MS;
    g = new_group(pool, &o);
    memset(p, 0, sizeof p);
    int rc = ctx_pool_group_submit(g, task_until_cancelled, &p[0], NULL, NULL);
    if (rc == 0) /* (a slow machine may be past the deadline already) */
        ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_EDEADLINE);
    else
        ASSERT_RC(rc, CTX_EDEADLINE);
    assert_true(atomic_load(&p[0].saw) == CTX_EDEADLINE || !atomic_load(&p[0].started));
    ctx_pool_group_release(g);

    /* Options breaking the growth rule. */
    struct {
        ctx_cancel_options_t o;
        char tail[8];
    } big;
    memset(&big, 0, sizeof big);
    big.o.size = sizeof big;
    big.tail[3] = 1;
    ctx_pool_group_t *none = NULL;
    ASSERT_RC(ctx_pool_group_new(pool, &big.o, &none), CTX_EINVAL);
    assert_null(none);
    ASSERT_RC(ctx_pool_group_new(NULL, NULL, &none), CTX_EINVAL);
    ASSERT_RC(ctx_pool_group_new(pool, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_group_submit(NULL, task_nop, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_group_wait(NULL, 0), CTX_EINVAL);
    ASSERT_RC(ctx_pool_group_cancel(NULL), CTX_EINVAL);
    ctx_cancel_scope_t *s = NULL;
    ASSERT_RC(ctx_pool_group_scope(NULL, &s), CTX_EINVAL);
    ctx_pool_group_release(NULL);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* A task cancelled through its own future is not the group's failure. */
static void test_own_future_cancel_is_not_a_failure(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    ctx_pool_group_t *g = new_group(pool, NULL);
    probe_t spin, ok;
    memset(&spin, 0, sizeof spin);
    memset(&ok, 0, sizeof ok);
    atomic_int go = 0;
    ok.wait_for = &go;
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_group_submit(g, task_until_cancelled, &spin, NULL, &f), 0);
    ASSERT_RC(ctx_pool_group_submit(g, task_return, &ok, NULL, NULL), 0);
    await_flag(&spin.started);
    ASSERT_RC(ctx_pool_future_cancel(f), CTX_POOL_CANCEL_RUNNING);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    atomic_store(&go, 1);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), 0);
    assert_int_equal(atomic_load(&spin.saw), CTX_ECANCELLED);
    assert_int_equal(atomic_load(&ok.saw), 0); /* the sibling was not stopped */
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_pool_group_scope(g, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_error(scope), 0);
    ctx_pool_future_release(f);
    ctx_pool_group_release(g);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---- waiting is cancellable ---- */

typedef struct later {
    ctx_cancel_scope_t *scope;
    gate_t *go;
} later_t;

static void *cancel_later(void *arg) {
    later_t *l = arg;
    gate_pass(l->go);
    short_nap();
    OFF_MAIN_CHECK(ctx_cancel_scope_cancel(l->scope, NULL) == 0);
    return NULL;
}

static void test_wait_is_cancellable(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    gate_t held, go;
    gate_init(&held);
    gate_init(&go);
    ctx_pool_group_t *g = new_group(pool, NULL); /* outside the waiter's scope */
    ASSERT_RC(ctx_pool_group_submit(g, task_gate, &held, NULL, NULL), 0);
    gate_await_arrivals(&held, 1);

    ctx_cancel_scope_t *mine = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &mine, &tok), 0);
    later_t l = {mine, &go};
    ctx_pool_thread_t *th = NULL;
    ASSERT_RC(ctx_pool_thread_create(cancel_later, &l, 0, &th), 0);
    gate_open(&go);
    /* Only the waiter's cancellation can end this: the task is held. */
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECANCELLED);
    ASSERT_RC(ctx_pool_thread_join(th, NULL), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_pool_group_scope(g, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_error(scope), 0); /* the group goes on */
    ASSERT_RC(ctx_pool_group_wait(g, 1 * MS), CTX_ETIMEDOUT);
    gate_open(&held);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), 0);
    ctx_pool_group_release(g);

    /* A group made in the waiter's scope stops with it. */
    ASSERT_RC(ctx_cancel_enter_child(NULL, &scope, &tok), 0);
    g = new_group(pool, NULL);
    probe_t p;
    memset(&p, 0, sizeof p);
    ASSERT_RC(ctx_pool_group_submit(g, task_until_cancelled, &p, NULL, NULL), 0);
    await_flag(&p.started);
    ASSERT_RC(ctx_cancel_scope_cancel(scope, NULL), 0);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECANCELLED); /* the waiter's */
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), CTX_ECANCELLED); /* the group's */
    assert_int_equal(atomic_load(&p.saw), CTX_ECANCELLED);
    ctx_pool_group_release(g);
    ctx_cancel_scope_release(scope);

    assert_int_equal(off_main_failures(), 0);
    ctx_cancel_scope_release(mine);
    ASSERT_RC(ctx_pool_release(pool), 0);
    gate_destroy(&held);
    gate_destroy(&go);
}

/* ---- releasing, siblings added by tasks, a task waiting for its group ---- */

static void test_release_without_wait_stops_the_group(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    ctx_pool_group_t *g = new_group(pool, NULL);
    probe_t p;
    memset(&p, 0, sizeof p);
    ASSERT_RC(ctx_pool_group_submit(g, task_until_cancelled, &p, NULL, NULL), 0);
    await_flag(&p.started);
    ctx_pool_group_t *second = ctx_pool_group_retain(g);
    ctx_pool_group_release(g); /* another user remains: nothing stops */
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_pool_group_scope(second, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_error(scope), 0);
    ctx_pool_group_release(second); /* the last: the pending task stops */
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    assert_int_equal(atomic_load(&p.saw), CTX_ECANCELLED);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

typedef struct spawner {
    ctx_pool_group_t *group;
    probe_t child;
    atomic_int self_wait;
} spawner_t;

static int task_spawn(void *arg, void **result) {
    (void)result;
    spawner_t *s = arg;
    atomic_store(&s->self_wait, ctx_pool_group_wait(s->group, 0));
    OFF_MAIN_CHECK(ctx_pool_group_submit(s->group, task_return, &s->child, NULL, NULL) == 0);
    return 0;
}

static void test_tasks_add_siblings(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    ctx_pool_group_t *g = new_group(pool, NULL);
    spawner_t s;
    memset(&s, 0, sizeof s);
    s.group = g;
    ASSERT_RC(ctx_pool_group_submit(g, task_spawn, &s, NULL, NULL), 0);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), 0);
    /* The sibling was counted before its parent ended: waited for too. */
    assert_int_equal(atomic_load(&s.child.started), 1);
    assert_int_equal(atomic_load(&s.self_wait), CTX_EINVAL);
    assert_int_equal(off_main_failures(), 0);
    ctx_pool_group_release(g);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---- the failing allocator ---- */

static void test_group_out_of_memory(void **state) {
    (void)state;
    pool_test_make_cancel_var();
    ctx_test_alloc_install();
    long base = ctx_test_alloc_live_blocks();
    ctx_pool_t *pool = new_pool(1);
    ctx_pool_future_t *warm = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_nop, NULL, &warm), 0);
    ASSERT_RC(ctx_pool_future_wait(warm, CTX_WAIT_FOREVER), 0);
    ctx_pool_future_release(warm);

    /* ctx_pool_group_new */
    ctx_pool_group_t *g = NULL;
    long failures = 0;
    for (long n = 1;; n++) {
        assert_true(n < 100);
        long live = pool_test_settled_blocks();
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_pool_group_new(pool, NULL, &g);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            break;
        }
        failures++;
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_null(g);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
    }
    print_message("ctx_pool_group_new: %ld failure points\n", failures);
    assert_true(failures > 0);

    /* ctx_pool_group_submit, without and with a future */
    probe_t p;
    memset(&p, 0, sizeof p);
    ctx_pool_submit_options_t so = with_release();
    for (int with_future = 0; with_future < 2; with_future++) {
        failures = 0;
        for (long n = 1;; n++) {
            assert_true(n < 100);
            long live = pool_test_settled_blocks();
            ctx_pool_future_t *f = NULL;
            ctx_test_alloc_fail_nth(n);
            int rc = ctx_pool_group_submit(g, task_return, &p, &so, with_future ? &f : NULL);
            int fired = ctx_test_alloc_fired();
            ctx_test_alloc_fail_nth(0);
            if (!fired) {
                ASSERT_RC(rc, 0);
                ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), 0);
                ctx_pool_future_release(f);
                break;
            }
            failures++;
            ASSERT_RC(rc, CTX_ENOMEM);
            assert_null(f);
            assert_int_equal(ctx_test_alloc_live_blocks(), live);
            assert_int_equal(atomic_load(&p.released), with_future);
            ASSERT_RC(ctx_pool_group_wait(g, 0), 0); /* nothing counted */
        }
        print_message("ctx_pool_group_submit%s: %ld failure points\n",
                      with_future ? " with a future" : "", failures);
        assert_true(failures > 0);
        assert_int_equal(atomic_load(&p.released), with_future + 1);
    }
    /* Waiting, cancelling, reading the scope allocate nothing (once this
     * thread has its ctxvar state, which a set makes). */
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter(NULL, &tok), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_pool_group_wait(g, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_group_cancel(g), 0);
    ctx_cancel_scope_t *scope = NULL;
    ASSERT_RC(ctx_pool_group_scope(g, &scope), 0);
    ctx_test_alloc_fail_all(0);
    ctx_pool_group_release(g);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base);
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_group_out_of_memory, group_teardown),
        cmocka_unit_test_teardown(test_all_succeed, group_teardown),
        cmocka_unit_test_teardown(test_first_failure_cancels_siblings, group_teardown),
        cmocka_unit_test_teardown(test_queued_siblings_never_start, group_teardown),
        cmocka_unit_test_teardown(test_cancel_parent_and_deadline, group_teardown),
        cmocka_unit_test_teardown(test_own_future_cancel_is_not_a_failure, group_teardown),
        cmocka_unit_test_teardown(test_wait_is_cancellable, group_teardown),
        cmocka_unit_test_teardown(test_release_without_wait_stops_the_group, group_teardown),
        cmocka_unit_test_teardown(test_tasks_add_siblings, group_teardown),
    };
    return cmocka_run_group_tests_name("pool: groups", tests, NULL, NULL);
}
