/* SPDX-License-Identifier: MIT */
/*
 * test_group.c — loop task groups (asyncio's TaskGroup):
 *   - the parent's next step comes once every child ended, with 0; children
 *     run in copies of the parent's context (its values, the group's scope)
 *     and their sets stay theirs;
 *   - the first failing child cancels its siblings (an hour's sleep ends at
 *     once with CTX_ECANCELLED), is the parent's outcome and the scope's
 *     cause; a stopped group takes no more children;
 *   - cancelling the parent's scope, or the parent itself
 *     (ctx_loop_task_cancel), cancels the children, and the parent wakes
 *     only after all of them ended (it checks in its step);
 *   - a group with no children, awaited, ends at once; releasing a group
 *     with children pending cancels them;
 *   - ctx_loop_task_group_new and _spawn under the failing allocator: every
 *     failure is CTX_ENOMEM and leaves nothing.
 * Sleeps are an hour long: a missing cancellation hangs the test until
 * ctest's timeout instead of passing.
 */
#include "loop_test.h"

#include <ctxvar/cancel.h>
#include <time.h>

#define HOUR_MS ((uint64_t)3600 * 1000)

static void nap(void) {
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

static int teardown(void **state) {
    for (int i = 0; i < 3000 && ctx_cancel_timer_release() == CTX_EBUSY; i++)
        nap();
    return release_thread(state);
}

static ctx_var_t *who;

/* ---- children ---- */

typedef struct child {
    int ret;        /* what it ends with after its first wait */
    uint64_t sleep; /* its first wait (ms) */
    int steps;
    int woke_with;
    long saw;       /* `who` in its context */
    int ended;
    atomic_int *asleep; /* counts the children that armed their first wait */
} child_t;

static int child_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    child_t *c = arg;
    if (c->steps++ == 0) {
        c->saw = get_int(who);
        set_int(who, 100); /* stays in the child's context */
        int r = ctx_loop_task_sleep(task, c->sleep);
        if (c->asleep)
            atomic_fetch_add(c->asleep, 1);
        return r;
    }
    c->woke_with = ctx_loop_task_awaited(task, NULL);
    c->ended = 1;
    return c->woke_with ? c->woke_with : c->ret;
}

/* ---- parents ---- */

enum { KIDS = 3 };

typedef struct parent {
    child_t kids[KIDS];
    int nkids;
    ctx_loop_task_group_t *group;
    int steps;
    int outcome;        /* ctx_loop_task_awaited after the group's end */
    int all_ended;      /* every child had ended when the parent woke */
    long saw_after;     /* `who` in the parent after the children's sets */
    int late_spawn;     /* ctx_loop_task_group_spawn after the end */
    atomic_int waiting; /* the parent awaits the group */
    ctx_loop_task_t *kid_tasks[KIDS];
} parent_t;

static int parent_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    parent_t *p = arg;
    if (p->steps++ == 0) {
        set_int(who, 7);
        ASSERT_RC(ctx_loop_task_group_new(task, &p->group), 0);
        for (int i = 0; i < p->nkids; i++)
            ASSERT_RC(ctx_loop_task_group_spawn(p->group, child_step, &p->kids[i], NULL,
                                                &p->kid_tasks[i]),
                      0);
        int r = ctx_loop_task_group_await(task, p->group);
        atomic_store(&p->waiting, 1);
        return r;
    }
    p->outcome = ctx_loop_task_awaited(task, NULL);
    p->all_ended = 1;
    for (int i = 0; i < p->nkids; i++)
        if (!ctx_loop_task_done(p->kid_tasks[i]))
            p->all_ended = 0;
    assert_int_equal(ctx_loop_task_group_pending(p->group), 0);
    p->saw_after = get_int(who);
    p->late_spawn = ctx_loop_task_group_spawn(p->group, child_step, &p->kids[0], NULL, NULL);
    return 0;
}

static void parent_done(parent_t *p) {
    for (int i = 0; i < p->nkids; i++)
        ctx_loop_task_release(p->kid_tasks[i]);
    ctx_loop_task_group_release(p->group);
}

static void test_all_children_succeed(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    parent_t p;
    memset(&p, 0, sizeof p);
    p.nkids = KIDS;
    for (int i = 0; i < KIDS; i++)
        p.kids[i].sleep = (uint64_t)i + 1;
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, parent_step, &p, NULL, &t), 0);
    run_loop(loop);
    assert_int_equal(p.steps, 2);
    ASSERT_RC(p.outcome, 0);
    assert_int_equal(p.all_ended, 1);
    assert_int_equal(p.saw_after, 7); /* the children's sets stayed theirs */
    ASSERT_RC(p.late_spawn, 0);       /* not stopped: still takes children */
    for (int i = 0; i < KIDS; i++) {
        assert_int_equal(p.kids[i].saw, 7); /* the parent's value */
        ASSERT_RC(p.kids[i].woke_with, 0);
        ASSERT_RC(ctx_loop_task_result(p.kid_tasks[i], NULL), 0);
    }
    run_loop(loop); /* the late child */
    ASSERT_RC(ctx_cancel_scope_error(ctx_loop_task_group_scope(p.group)), 0);
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0);
    parent_done(&p);
    ctx_loop_task_release(t);
    close_loop(loop);
}

static void test_first_failure_cancels_siblings(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    parent_t p;
    memset(&p, 0, sizeof p);
    p.nkids = KIDS;
    p.kids[0].sleep = 1;
    p.kids[0].ret = CTX_ECONNECTION; /* fails after 1 ms */
    p.kids[1].sleep = HOUR_MS;
    p.kids[2].sleep = HOUR_MS;
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, parent_step, &p, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(p.outcome, CTX_ECONNECTION);
    assert_int_equal(p.all_ended, 1);
    ASSERT_RC(ctx_loop_task_result(p.kid_tasks[0], NULL), CTX_ECONNECTION);
    for (int i = 1; i < KIDS; i++) {
        ASSERT_RC(p.kids[i].woke_with, CTX_ECANCELLED);
        ASSERT_RC(ctx_loop_task_result(p.kid_tasks[i], NULL), CTX_ECANCELLED);
    }
    ASSERT_RC(p.late_spawn, CTX_ECANCELLED); /* a stopped group */
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    ASSERT_RC(ctx_cancel_scope_cause(ctx_loop_task_group_scope(p.group), &cause),
              CTX_ECANCELLED);
    assert_int_equal(cause.code, CTX_ECONNECTION);
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0); /* the parent returned 0 */
    parent_done(&p);
    ctx_loop_task_release(t);
    close_loop(loop);
}

/* ---- the parent cancelled ---- */

typedef struct canceller {
    atomic_int *waiting; /* cancels once *waiting >= want */
    ctx_cancel_scope_t *scope;
    int want;
} canceller_t;

static void *cancel_when_waiting(void *arg) {
    canceller_t *c = arg;
    while (atomic_load(c->waiting) < c->want)
        nap();
    ASSERT_RC(ctx_cancel_scope_cancel(c->scope, NULL), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    return NULL;
}

/* Cancelling the parent's scope (from another thread) cancels the group:
 * every child wakes with CTX_ECANCELLED, and the parent after them. */
static void test_parent_scope_cancels_the_group(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_cancel_scope_t *scope = NULL;
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &scope, &tok), 0);
    parent_t p;
    memset(&p, 0, sizeof p);
    p.nkids = KIDS;
    atomic_int asleep = 0;
    for (int i = 0; i < KIDS; i++) {
        p.kids[i].sleep = HOUR_MS;
        p.kids[i].asleep = &asleep;
    }
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, parent_step, &p, NULL, &t), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    canceller_t c = {&asleep, scope, KIDS}; /* the parent awaits by then */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &c), 0);
    run_loop(loop);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(p.steps, 2);
    ASSERT_RC(p.outcome, CTX_ECANCELLED); /* its own scope's */
    assert_int_equal(p.all_ended, 1);     /* it waited for its children */
    for (int i = 0; i < KIDS; i++)
        ASSERT_RC(p.kids[i].woke_with, CTX_ECANCELLED);
    parent_done(&p);
    ctx_loop_task_release(t);
    ctx_cancel_scope_release(scope);
    close_loop(loop);
}

static void cancel_task_cb(void *arg) { assert_int_equal(ctx_loop_task_cancel(arg), 1); }

/* ctx_loop_task_cancel on a parent awaiting its group cancels the children;
 * the parent wakes once they ended and sees CTX_ECANCELLED. */
static void test_task_cancel_of_the_parent(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    parent_t p;
    memset(&p, 0, sizeof p);
    p.nkids = KIDS;
    atomic_int asleep = 0;
    for (int i = 0; i < KIDS; i++) {
        p.kids[i].sleep = HOUR_MS;
        p.kids[i].asleep = &asleep;
    }
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, parent_step, &p, NULL, &t), 0);
    while (atomic_load(&asleep) < KIDS)
        assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) >= 0);
    ASSERT_RC(ctx_loop_call_soon(loop, cancel_task_cb, t, NULL, NULL), 0);
    run_loop(loop);
    ASSERT_RC(p.outcome, CTX_ECANCELLED);
    assert_int_equal(p.all_ended, 1);
    for (int i = 0; i < KIDS; i++)
        ASSERT_RC(p.kids[i].woke_with, CTX_ECANCELLED);
    parent_done(&p);
    ctx_loop_task_release(t);
    close_loop(loop);
}

/* No children: the await ends at once.  Releasing a group whose children
 * are pending cancels them. */
static void test_empty_group_and_release(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    parent_t p;
    memset(&p, 0, sizeof p);
    ctx_loop_task_t *t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, parent_step, &p, NULL, &t), 0);
    run_loop(loop);
    assert_int_equal(p.steps, 2);
    ASSERT_RC(p.outcome, 0);
    run_loop(loop); /* the late child spawned by the parent's last step */
    parent_done(&p);
    ctx_loop_task_release(t);

    /* A group whose parent never awaits it, released with a child asleep. */
    ctx_loop_task_t *holder = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, child_step, &p.kids[1], NULL, &holder), 0);
    p.kids[1].sleep = HOUR_MS;
    ctx_loop_task_group_t *g = NULL;
    ASSERT_RC(ctx_loop_task_group_new(holder, &g), 0);
    child_t lone;
    memset(&lone, 0, sizeof lone);
    lone.sleep = HOUR_MS;
    ASSERT_RC(ctx_loop_task_group_spawn(g, child_step, &lone, NULL, NULL), 0);
    assert_int_equal(ctx_loop_task_group_pending(g), 1);
    assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) >= 0); /* both asleep */
    ctx_loop_task_group_release(g);
    ASSERT_RC(ctx_loop_task_cancel(holder), 1);
    run_loop(loop);
    ASSERT_RC(lone.woke_with, CTX_ECANCELLED);
    ctx_loop_task_release(holder);
    close_loop(loop);
}

/* ---- the failing allocator ---- */

typedef struct oom {
    long failures_new, failures_spawn;
    child_t kid;
} oom_t;

static int oom_parent(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    oom_t *o = arg;
    ctx_loop_task_group_t *g = NULL;
    for (long n = 1;; n++) {
        assert_true(n < 100);
        long live = ctx_test_alloc_live_blocks();
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_task_group_new(task, &g);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
        o->failures_new++;
    }
    for (long n = 1;; n++) {
        assert_true(n < 100);
        long live = ctx_test_alloc_live_blocks();
        ctx_loop_task_t *kid = NULL;
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_task_group_spawn(g, child_step, &o->kid, NULL, &kid);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            ctx_loop_task_release(kid);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_null(kid);
        assert_int_equal(ctx_loop_task_group_pending(g), 0);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
        o->failures_spawn++;
    }
    assert_int_equal(ctx_loop_task_group_pending(g), 1);
    ctx_loop_task_group_release(g); /* cancels the pending child */
    return 0;
}

static void test_allocation_failure(void **state) {
    (void)state;
    ctx_test_alloc_install();
    ctx_loop_t *loop = new_loop(NULL);
    set_int(who, 1);
    oom_t o;
    memset(&o, 0, sizeof o);
    o.kid.sleep = HOUR_MS;
    ASSERT_RC(ctx_loop_task_new(loop, oom_parent, &o, NULL, NULL), 0);
    run_loop(loop);
    print_message("ctx_loop_task_group_new: %ld failure points, _spawn: %ld\n", o.failures_new,
                  o.failures_spawn);
    assert_true(o.failures_new > 0);
    assert_true(o.failures_spawn > 0);
    assert_int_equal(o.kid.steps, 0); /* the release stopped it before it started */
    close_loop(loop);
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_uninstall();
}

static int group_setup(void **state) {
    (void)state;
    who = new_var("who");
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    ctx_var_release(who);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_all_children_succeed, teardown),
        cmocka_unit_test_teardown(test_first_failure_cancels_siblings, teardown),
        cmocka_unit_test_teardown(test_parent_scope_cancels_the_group, teardown),
        cmocka_unit_test_teardown(test_task_cancel_of_the_parent, teardown),
        cmocka_unit_test_teardown(test_empty_group_and_release, teardown),
        cmocka_unit_test_teardown(test_allocation_failure, teardown),
    };
    return cmocka_run_group_tests_name("loop: task groups", tests, group_setup, group_teardown);
}
