/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c — a loop made before fork() in the child (loop.h, "fork()").
 *
 * Asserts, in the child: every call that would schedule, run, complete or
 * cancel something on the parent's loop, its futures, tasks and handles
 * returns CTX_EFORKED and runs nothing (a callback scheduled before the fork
 * never runs there); the calls that only read answer from the state at the
 * fork; releasing every one of them returns (nothing hangs, whether the
 * loop was idle or running on a thread that the child does not have); a
 * loop made in the child works; a child forked from inside a callback
 * returns out of the loop's dispatch without running the rest of the
 * iteration's callbacks.  In the parent: the loop goes on as if nothing
 * happened.
 */
#include "loop_test.h"

#include "fork_test.h"

static atomic_int calls;
static void count_call(void *arg) {
    (void)arg;
    atomic_fetch_add(&calls, 1);
}
static void count_done(ctx_loop_future_t *f, void *user) {
    (void)f;
    (void)user;
    atomic_fetch_add(&calls, 1);
}
static int steps;
static int one_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)task;
    (void)arg;
    (void)result;
    steps++;
    return 0;
}

static int nothing(void *arg, void **result) {
    (void)arg;
    (void)result;
    return 0;
}

static int offloaded(void *arg, void **result) {
    (void)arg;
    (void)result;
    atomic_fetch_add(&calls, 1);
    return 0;
}
static void offload_done(void *arg, int rc, void *result) {
    (void)arg;
    (void)rc;
    (void)result;
    atomic_fetch_add(&calls, 1);
}

/* In the child: a loop of its own works. */
static void child_new_loop_works(void) {
    ctx_loop_t *fresh = NULL;
    CHILD_CHECK_RC(ctx_loop_new(NULL, &fresh), 0);
    int before = atomic_load(&calls);
    CHILD_CHECK_RC(ctx_loop_call_soon(fresh, count_call, NULL, NULL, NULL), 0);
    CHILD_CHECK_RC(ctx_loop_run(fresh, UV_RUN_DEFAULT), 0);
    CHILD_CHECK(atomic_load(&calls) == before + 1);
    CHILD_CHECK_RC(ctx_loop_close(fresh), 0);
    ctx_loop_release(fresh);
}

static void test_loop_made_before_fork_is_unusable_in_the_child(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    ctx_loop_future_t *f = NULL, *done = NULL;
    ctx_loop_task_t *t = NULL;
    ctx_loop_handle_t *h = NULL;
    atomic_store(&calls, 0);
    steps = 0;
    ASSERT_RC(ctx_loop_call_soon(loop, count_call, NULL, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_later(loop, 100000, count_call, NULL, NULL, &h), 0);
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &done), 0);
    ASSERT_RC(ctx_loop_future_set_result(done, IV(5)), 0);
    ASSERT_RC(ctx_loop_task_new(loop, one_step, NULL, NULL, &t), 0);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    /* A task run to the end: the worker has finished starting (a thread
     * still starting holds the sanitizer runtime's locks, which the child,
     * that allocates, could then wait for forever). */
    ctx_pool_future_t *started = NULL;
    ASSERT_RC(ctx_pool_submit(pool, nothing, NULL, &started), 0);
    ASSERT_RC(ctx_pool_future_wait(started, CTX_WAIT_FOREVER), 0);
    ctx_pool_future_release(started);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ctx_loop_call_options_t o = CTX_STRUCT_INIT(ctx_loop_call_options_t);
        CHILD_CHECK_RC(ctx_loop_call_soon(loop, count_call, NULL, NULL, NULL), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_call_soon(loop, count_call, NULL, &o, NULL), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_call_later(loop, 0, count_call, NULL, NULL, NULL), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_call_at(loop, 0, count_call, NULL, NULL, NULL), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_call_soon_threadsafe(loop, count_call, NULL, NULL, NULL),
                       CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_run(loop, UV_RUN_DEFAULT), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_run(loop, UV_RUN_NOWAIT), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_run_until_done(loop, f), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_stop(loop), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_set_error_handler(loop, NULL, NULL), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_close(loop), CTX_EFORKED);
        ctx_loop_future_t *nf = NULL;
        CHILD_CHECK_RC(ctx_loop_future_new(loop, NULL, &nf), CTX_EFORKED);
        CHILD_CHECK(nf == NULL);
        CHILD_CHECK_RC(ctx_loop_future_set_result(f, IV(1)), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_future_set_error(f, CTX_ETIMEDOUT), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_future_cancel(f), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_future_add_done_callback(f, count_done, NULL, NULL), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_future_add_done_callback(done, count_done, NULL, NULL),
                       CTX_EFORKED);
        ctx_loop_task_t *nt = NULL;
        CHILD_CHECK_RC(ctx_loop_task_new(loop, one_step, NULL, NULL, &nt), CTX_EFORKED);
        CHILD_CHECK(nt == NULL);
        CHILD_CHECK_RC(ctx_loop_task_cancel(t), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_future_cancel(ctx_loop_task_future(t)), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_handle_cancel(h), CTX_EFORKED);
        ctx_loop_future_t *w = NULL;
        CHILD_CHECK_RC(ctx_loop_run_in_pool(loop, pool, offloaded, NULL, NULL, &w), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_offload(loop, pool, offloaded, NULL, offload_done, NULL),
                       CTX_EFORKED);
        /* Reads answer from the state at the fork. */
        CHILD_CHECK(ctx_loop_future_done(f) == 0);
        void *res = NULL;
        CHILD_CHECK_RC(ctx_loop_future_result(done, &res), 0);
        CHILD_CHECK(res == IV(5));
        CHILD_CHECK(ctx_loop_task_done(t) == 0);
        CHILD_CHECK(ctx_loop_handle_cancelled(h) == 0);
        CHILD_CHECK(ctx_loop_is_closed(loop) == 0);
        /* Nothing of the parent's ran here. */
        CHILD_CHECK(atomic_load(&calls) == 0);
        CHILD_CHECK(steps == 0);
        /* Releasing everything returns. */
        ctx_loop_handle_release(h);
        ctx_loop_task_release(t);
        ctx_loop_future_release(done);
        ctx_loop_future_release(f);
        ctx_loop_release(loop);
        child_new_loop_works();
        child_exit();
    }
    assert_int_equal(wait_child(pid), 0);

    /* The parent's loop is untouched. */
    ASSERT_RC(ctx_loop_handle_cancel(h), 1);
    ASSERT_RC(ctx_loop_future_cancel(f), 1);
    run_loop(loop);
    assert_int_equal(atomic_load(&calls), 1);
    assert_int_equal(steps, 1);
    assert_int_equal(ctx_loop_task_done(t), 1);
    ctx_loop_handle_release(h);
    ctx_loop_task_release(t);
    ctx_loop_future_release(done);
    ctx_loop_future_release(f);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---- the loop running on another thread at the fork ---- */

typedef struct runner {
    ctx_loop_t *loop;
    ctx_loop_future_t *future;
    atomic_int running;
    int rc;
} runner_t;

static void mark_running(void *arg) { atomic_store(&((runner_t *)arg)->running, 1); }

static void *run_until(void *arg) {
    runner_t *r = arg;
    r->rc = ctx_loop_run_until_done(r->loop, r->future);
    ctx_thread_release();
    return NULL;
}

static void test_fork_while_the_loop_runs_on_another_thread(void **state) {
    (void)state;
    runner_t r;
    memset(&r, 0, sizeof r);
    r.loop = new_loop(NULL);
    ASSERT_RC(ctx_loop_future_new(r.loop, NULL, &r.future), 0);
    ASSERT_RC(ctx_loop_call_soon(r.loop, mark_running, &r, NULL, NULL), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, run_until, &r), 0);
    while (!atomic_load(&r.running))
        sched_yield();

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The loop thread does not exist here; its loop must not be
         * waited for. */
        CHILD_CHECK_RC(ctx_loop_call_soon_threadsafe(r.loop, count_call, NULL, NULL, NULL),
                       CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_future_set_result(r.future, IV(1)), CTX_EFORKED);
        CHILD_CHECK_RC(ctx_loop_close(r.loop), CTX_EFORKED);
        ctx_loop_future_release(r.future);
        ctx_loop_release(r.loop);
        child_exit();
    }
    assert_int_equal(wait_child(pid), 0);

    ASSERT_RC(ctx_loop_future_set_result(r.future, IV(1)), 0); /* the parent's loop wakes */
    assert_int_equal(pthread_join(thread, NULL), 0);
    ASSERT_RC(r.rc, 0);
    ctx_loop_future_release(r.future);
    close_loop(r.loop);
}

/* ---- fork from inside a callback ---- */

static pid_t forked_pid;
static int in_child;

static void fork_here(void *arg) {
    ctx_loop_t *loop = arg;
    forked_pid = fork();
    if (forked_pid == 0) {
        in_child = 1;
        CHILD_CHECK_RC(ctx_loop_call_soon(loop, count_call, NULL, NULL, NULL), CTX_EFORKED);
    }
}

static void test_fork_inside_a_callback(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    atomic_store(&calls, 0);
    in_child = 0;
    ASSERT_RC(ctx_loop_call_soon(loop, fork_here, loop, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_call_soon(loop, count_call, NULL, NULL, NULL), 0);
    int rc = ctx_loop_run(loop, UV_RUN_DEFAULT);
    if (in_child) {
        /* Back out of the dispatch: the callback after the fork did not run
         * here, and the run returned instead of spinning. */
        CHILD_CHECK(rc >= 0);
        CHILD_CHECK(atomic_load(&calls) == 0);
        ctx_loop_release(loop);
        child_exit();
    }
    ASSERT_RC(rc, 0);
    assert_true(forked_pid > 0);
    assert_int_equal(wait_child(forked_pid), 0);
    assert_int_equal(atomic_load(&calls), 1); /* the parent's ran */
    close_loop(loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_loop_made_before_fork_is_unusable_in_the_child,
                                  release_thread),
        cmocka_unit_test_teardown(test_fork_while_the_loop_runs_on_another_thread,
                                  release_thread),
        cmocka_unit_test_teardown(test_fork_inside_a_callback, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
