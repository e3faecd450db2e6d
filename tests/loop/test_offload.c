/* SPDX-License-Identifier: MIT */
/*
 * test_offload.c — work offloaded from the loop to a ctx_pool_t (run under
 * TSan): a task's offloaded function runs on a worker in a copy of the
 * task's context, its sets stay there, the task resumes on the loop thread
 * with the result; many tasks interleave over a small pool while the loop
 * has nothing else to wait on; run_in_pool and wrap_future for plain code;
 * cancelling a task whose work is queued; errors; result ownership;
 * ctx_loop_offload (the work in the caller's context on a worker, the
 * callback in a private copy of it on the loop, arg_release after it, the
 * loop kept running meanwhile; work the pool drops; a loop that closes
 * first; errors and failing allocations).
 */
#include "loop_test.h"

#include <time.h>

static ctx_pool_t *new_pool(size_t threads) {
    ctx_pool_options_t opts = CTX_STRUCT_INIT(ctx_pool_options_t);
    opts.threads = threads;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&opts, &pool), 0);
    return pool;
}

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* ---- tasks offloading ---- */

typedef struct job {
    ctx_var_t *req;
    ctx_pool_t *pool;
    pthread_t loop_thread;
    atomic_int *wrong;
    long id;
    int state;
    int released;
} job_t;

static int work(void *arg, void **result) {
    job_t *j = arg;
    if (pthread_equal(pthread_self(), j->loop_thread) || get_int(j->req) != j->id)
        atomic_fetch_add(j->wrong, 1);
    set_int(j->req, -5); /* the worker's copy only */
    if (j->id % 8 == 0)
        nap_us(200);
    *result = IV(j->id * 2);
    return 0;
}

static void job_release(void *arg) { ((job_t *)arg)->released++; }

static int job_step(ctx_loop_task_t *task, void *arg, void **result) {
    job_t *j = arg;
    void *res = NULL;
    int rc = ctx_loop_task_awaited(task, &res);
    if (!pthread_equal(pthread_self(), j->loop_thread))
        atomic_fetch_add(j->wrong, 1);
    switch (j->state++) {
    case 0: {
        set_int(j->req, j->id);
        ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
        opts.arg_release = job_release;
        return ctx_loop_task_offload(task, j->pool, work, j, &opts);
    }
    case 1:
        if (rc != 0 || res != IV(j->id * 2) || get_int(j->req) != j->id)
            atomic_fetch_add(j->wrong, 1);
        set_int(j->req, j->id + 1000000); /* the second offload sees this */
        j->id += 1000000;
        return ctx_loop_task_offload(task, j->pool, work, j, NULL);
    default:
        if (rc != 0 || res != IV(j->id * 2) || get_int(j->req) != j->id)
            atomic_fetch_add(j->wrong, 1);
        *result = res;
        return 0;
    }
}

static void test_tasks_offload_in_their_context(void **state) {
    (void)state;
    int n = SCALED(400, 40, 100);
    ctx_var_t *req = new_var("request");
    ctx_pool_t *pool = new_pool(4);
    ctx_loop_t *loop = new_loop(NULL);
    atomic_int wrong = 0;
    job_t *jobs = calloc((size_t)n, sizeof *jobs);
    ctx_loop_task_t **tasks = calloc((size_t)n, sizeof *tasks);
    for (int i = 0; i < n; i++) {
        jobs[i] = (job_t){req, pool, pthread_self(), &wrong, i, 0, 0};
        ASSERT_RC(ctx_loop_task_new(loop, job_step, &jobs[i], NULL, &tasks[i]), 0);
    }
    /* Nothing but pool work to wait for, most of the time: the pending
     * tasks (and the offloads in flight) keep the loop from returning. */
    run_loop(loop);
    assert_int_equal(atomic_load(&wrong), 0);
    for (int i = 0; i < n; i++) {
        void *res;
        ASSERT_RC(ctx_loop_task_result(tasks[i], &res), 0);
        assert_ptr_equal(res, IV((i + 1000000) * 2));
        assert_int_equal(jobs[i].released, 1);
        assert_int_equal(ctx_get_int(ctx_loop_task_context(tasks[i]), req), i + 1000000);
        ctx_loop_task_release(tasks[i]);
    }
    assert_int_equal(get_int(req), -1);
    free(tasks);
    free(jobs);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(req);
}

/* ---- run_in_pool and wrap_future ---- */

typedef struct plain_job {
    ctx_var_t *var;
    long seen;
} plain_job_t;

static int plain_work(void *arg, void **result) {
    plain_job_t *p = arg;
    p->seen = get_int(p->var);
    *result = IV(p->seen + 1);
    return 0;
}

static int failing_work(void *arg, void **result) {
    (void)arg;
    (void)result;
    return CTX_ETIMEDOUT;
}

typedef struct on_loop {
    pthread_t loop_thread;
    int calls;
    int on_loop_thread;
    int rc;
    void *result;
} on_loop_t;

static void wrapped_done(ctx_loop_future_t *f, void *user) {
    on_loop_t *o = user;
    o->calls++;
    o->on_loop_thread = pthread_equal(pthread_self(), o->loop_thread);
    o->rc = ctx_loop_future_result(f, &o->result);
}

static void test_run_in_pool_and_wrap_future(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_pool_t *pool = new_pool(2);
    ctx_loop_t *loop = new_loop(NULL);
    set_int(x, 10);
    plain_job_t p = {x, 0};
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, plain_work, &p, NULL, &f), 0);
    set_int(x, 11);
    on_loop_t o = {pthread_self(), 0, 0, 0, NULL};
    ASSERT_RC(ctx_loop_future_add_done_callback(f, wrapped_done, &o, NULL), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, f), 0);
    run_loop(loop);
    assert_int_equal(p.seen, 10);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.on_loop_thread, 1);
    ASSERT_RC(o.rc, 0);
    assert_ptr_equal(o.result, IV(11));
    ctx_loop_future_release(f);

    /* A failing function: the loop future fails with its code. */
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, failing_work, NULL, NULL, &f), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, f), 0);
    ASSERT_RC(ctx_loop_future_result(f, NULL), CTX_ETIMEDOUT);
    ctx_loop_future_release(f);

    /* wrap_future over a future the caller submitted itself. */
    ctx_pool_future_t *pf;
    p.seen = 0;
    ASSERT_RC(ctx_pool_submit(pool, plain_work, &p, &pf), 0);
    ASSERT_RC(ctx_loop_wrap_future(loop, pf, &f), 0);
    ctx_pool_future_release(pf); /* the wrapper keeps it */
    ASSERT_RC(ctx_loop_run_until_done(loop, f), 0);
    void *res;
    ASSERT_RC(ctx_loop_future_result(f, &res), 0);
    assert_ptr_equal(res, IV(12));
    ctx_loop_future_release(f);
    /* ... and over one already done. */
    ASSERT_RC(ctx_pool_submit(pool, plain_work, &p, &pf), 0);
    ASSERT_RC(ctx_pool_future_wait(pf, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_loop_wrap_future(loop, pf, &f), 0);
    ctx_pool_future_release(pf);
    /* Done at once, or as soon as the worker that ended the pool future has
     * run its done-callbacks (the pool keeps their order): wait for it. */
    ASSERT_RC(ctx_loop_run_until_done(loop, f), 0);
    ASSERT_RC(ctx_loop_future_result(f, &res), 0);
    assert_ptr_equal(res, IV(12));
    run_loop(loop);
    ctx_loop_future_release(f);

    ASSERT_RC(ctx_loop_run_in_pool(NULL, pool, plain_work, &p, NULL, &f), CTX_EINVAL);
    ASSERT_RC(ctx_loop_run_in_pool(loop, NULL, plain_work, &p, NULL, &f), CTX_EINVAL);
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, NULL, &p, NULL, &f), CTX_EINVAL);
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, plain_work, &p, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_wrap_future(loop, NULL, &f), CTX_EINVAL);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(x);
}

/* ---- cancelling a task whose work waits in the pool's queue ---- */

static atomic_int gate;

static int blocker(void *arg, void **result) {
    (void)arg;
    (void)result;
    while (!atomic_load(&gate))
        nap_us(100);
    return 0;
}

static atomic_int queued_ran;
static int queued_work(void *arg, void **result) {
    (void)arg;
    (void)result;
    atomic_fetch_add(&queued_ran, 1);
    return 0;
}

typedef struct canceller {
    ctx_loop_t *loop;
    ctx_pool_t *pool;
    int state;
    int woke_with;
    int released;
} canceller_t;

static void canceller_release(void *arg) { ((canceller_t *)arg)->released++; }

static void cancel_task(void *arg) { ASSERT_RC(ctx_loop_task_cancel(arg), 1); }

static int canceller_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    canceller_t *c = arg;
    if (c->state++ == 0) {
        ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
        opts.arg_release = canceller_release;
        int rc = ctx_loop_task_offload(task, c->pool, queued_work, c, &opts);
        /* Cancelled on the next iteration, the work still queued. */
        ASSERT_RC(ctx_loop_call_soon(c->loop, cancel_task, task, NULL, NULL), 0);
        return rc;
    }
    c->woke_with = ctx_loop_task_awaited(task, NULL);
    return c->woke_with;
}

static void test_cancel_queued_offload(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    ctx_loop_t *loop = new_loop(NULL);
    atomic_store(&gate, 0);
    atomic_store(&queued_ran, 0);
    ctx_loop_future_t *block;
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, blocker, NULL, NULL, &block), 0);
    canceller_t c = {loop, pool, 0, 0, 0};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, canceller_step, &c, NULL, &t), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, ctx_loop_task_future(t)), 0);
    /* Woken at once, while the only worker is still blocked. */
    ASSERT_RC(c.woke_with, CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    assert_int_equal(c.released, 1); /* the pool dropped the queued work */
    assert_int_equal(ctx_loop_future_done(block), 0);
    atomic_store(&gate, 1);
    ASSERT_RC(ctx_loop_run_until_done(loop, block), 0);
    run_loop(loop);
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    assert_int_equal(atomic_load(&queued_ran), 0);
    ctx_loop_future_release(block);
    ctx_loop_task_release(t);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---- errors and result ownership ---- */

typedef struct misuse {
    ctx_pool_t *pool;
    int state;
    int rc[4];
    int released;
} misuse_t;

static void misuse_release(void *arg) { ((misuse_t *)arg)->released++; }

static int misuse_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    misuse_t *m = arg;
    ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    opts.arg_release = misuse_release;
    m->rc[0] = ctx_loop_task_offload(task, NULL, plain_work, m, &opts);
    m->rc[1] = ctx_loop_task_offload(task, m->pool, NULL, m, &opts);
    m->rc[2] = ctx_loop_task_offload(task, m->pool, plain_work, m, &opts); /* shut down */
    return m->rc[2];
}

static int malloc_work(void *arg, void **result) {
    (void)arg;
    *result = malloc(32);
    return 0;
}

typedef struct owner {
    int state;
    ctx_pool_t *pool;
} owner_t;

static int owner_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    owner_t *o = arg;
    if (o->state++ == 0) {
        ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
        opts.result_release = free;
        return ctx_loop_task_offload(task, o->pool, malloc_work, NULL, &opts);
    }
    void *res = NULL;
    ASSERT_RC(ctx_loop_task_awaited(task, &res), 0);
    assert_non_null(res); /* borrowed: the pool's future frees it */
    return 0;
}

static void test_offload_errors_and_result_release(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(1);
    ctx_loop_t *loop = new_loop(NULL);
    /* result_release: freed with the pool's future (valgrind checks). */
    owner_t owner = {0, pool};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, owner_step, &owner, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0);
    ctx_loop_task_release(t);

    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    misuse_t m = {pool, 0, {0}, 0};
    ASSERT_RC(ctx_loop_task_new(loop, misuse_step, &m, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(m.rc[0], CTX_EINVAL);
    ASSERT_RC(m.rc[1], CTX_EINVAL);
    ASSERT_RC(m.rc[2], CTX_ESHUTDOWN);
    assert_int_equal(m.released, 0); /* a failed offload keeps the arg the caller's */
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ESHUTDOWN);
    ASSERT_RC(ctx_loop_task_offload(t, pool, plain_work, NULL, NULL), CTX_EINVAL); /* not in a step */
    ctx_loop_task_release(t);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

/* ---- ctx_loop_offload: uv_queue_work with contexts ---- */

typedef struct item {
    ctx_var_t *var;
    pthread_t loop_thread;
    atomic_int *wrong;
    long id;
    int done;
    int released;
} item_t;

static int item_work(void *arg, void **result) {
    item_t *it = arg;
    if (pthread_equal(pthread_self(), it->loop_thread) || get_int(it->var) != it->id)
        atomic_fetch_add(it->wrong, 1);
    set_int(it->var, -7); /* the worker's copy only */
    *result = IV(it->id * 3);
    return it->id % 5 == 0 ? CTX_ETIMEDOUT : 0;
}

static void item_done(void *arg, int rc, void *result) {
    item_t *it = arg;
    int bad = !pthread_equal(pthread_self(), it->loop_thread) || it->released ||
              get_int(it->var) != it->id || /* the context of the call, not the worker's */
              rc != (it->id % 5 == 0 ? CTX_ETIMEDOUT : 0) || result != IV(it->id * 3);
    if (bad)
        atomic_fetch_add(it->wrong, 1);
    set_int(it->var, -9); /* a private copy: nobody else sees it */
    it->done++;
}

static void item_release(void *arg) {
    item_t *it = arg;
    if (it->done != 1) /* after done, once */
        atomic_fetch_add(it->wrong, 1);
    it->released++;
}

static void test_offload_round_trip(void **state) {
    (void)state;
    ctx_pool_t *pool = new_pool(2);
    ctx_loop_t *loop = new_loop(NULL);
    ctx_var_t *v = new_var("v");
    atomic_int wrong;
    atomic_init(&wrong, 0);
    int n = SCALED(300, 30, 60);
    item_t *items = calloc((size_t)n, sizeof *items);
    ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    opts.arg_release = item_release;
    for (int i = 0; i < n; i++) {
        items[i] = (item_t){v, pthread_self(), &wrong, i, 0, 0};
        set_int(v, i);
        ASSERT_RC(ctx_loop_offload(loop, pool, item_work, &items[i], item_done, &opts), 0);
    }
    set_int(v, -1); /* later changes are seen by nobody */
    run_loop(loop); /* returns once every piece of work came back */
    for (int i = 0; i < n; i++) {
        assert_int_equal(items[i].done, 1);
        assert_int_equal(items[i].released, 1);
    }
    assert_int_equal(atomic_load(&wrong), 0);
    assert_int_equal(get_int(v), -1);
    free(items);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(v);
}

typedef struct dropped {
    int done_rc;
    int done_calls;
    int released;
    int results_released;
} dropped_t;

static void dropped_done(void *arg, int rc, void *result) {
    dropped_t *d = arg;
    d->done_rc = rc;
    d->done_calls++;
    if (result)
        d->done_rc = 12345; /* work that never ran has no result */
}

static void dropped_release(void *arg) { ((dropped_t *)arg)->released++; }

static int result_work(void *arg, void **result) {
    (void)arg;
    *result = IV(1);
    return 0;
}

static atomic_int results_freed;
static void count_result(void *result) {
    (void)result;
    atomic_fetch_add(&results_freed, 1);
}

static void *shutdown_cancel(void *pool) {
    ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_CANCEL);
    return NULL;
}

static void test_offload_dropped_or_orphaned(void **state) {
    (void)state;
    /* The pool drops the work unrun: done sees CTX_ECANCELLED and no result. */
    ctx_pool_t *pool = new_pool(1);
    ctx_loop_t *loop = new_loop(NULL);
    atomic_store(&gate, 0);
    ctx_loop_future_t *block;
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, blocker, NULL, NULL, &block), 0);
    dropped_t d = {0, 0, 0, 0};
    ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    opts.arg_release = dropped_release;
    ASSERT_RC(ctx_loop_offload(loop, pool, result_work, &d, dropped_done, &opts), 0);
    pthread_t t; /* cancels the queued work, then waits for the blocked worker */
    assert_int_equal(pthread_create(&t, NULL, shutdown_cancel, pool), 0);
    for (long i = 0; d.done_calls == 0 && i < 600000; i++) {
        assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) >= 0);
        nap_us(100);
    }
    atomic_store(&gate, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, block), 0);
    run_loop(loop);
    assert_int_equal(d.done_calls, 1);
    ASSERT_RC(d.done_rc, CTX_ECANCELLED);
    assert_int_equal(d.released, 1);
    ctx_loop_future_release(block);
    close_loop(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);

    /* The loop closes before the work comes back: done is never called; the
     * work's arg and result are released on the thread that ends it. */
    pool = new_pool(1);
    loop = new_loop(NULL);
    atomic_store(&gate, 0);
    dropped_t o = {0, 0, 0, 0};
    atomic_store(&results_freed, 0);
    ASSERT_RC(ctx_loop_run_in_pool(loop, pool, blocker, NULL, NULL, &block), 0);
    opts.result_release = count_result;
    ASSERT_RC(ctx_loop_offload(loop, pool, result_work, &o, dropped_done, &opts), 0);
    ctx_loop_future_release(block);
    ASSERT_RC(ctx_loop_close(loop), 0);
    atomic_store(&gate, 1);
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0); /* waits for the work */
    assert_int_equal(o.done_calls, 0);
    assert_int_equal(o.released, 1);
    assert_int_equal(atomic_load(&results_freed), 1);
    ctx_loop_release(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
}

static int noop_work(void *arg, void **result) {
    (void)arg;
    (void)result;
    return 0;
}

static void never_done(void *arg, int rc, void *result) {
    (void)rc;
    (void)result;
    (*(int *)arg)++;
}

static void test_offload_errors(void **state) {
    (void)state;
    ctx_test_alloc_install(); /* before anything it will see freed */
    ctx_pool_t *pool = new_pool(1);
    ctx_loop_t *loop = new_loop(NULL);
    int calls = 0;
    ASSERT_RC(ctx_loop_offload(NULL, pool, noop_work, &calls, never_done, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_offload(loop, NULL, noop_work, &calls, never_done, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_offload(loop, pool, NULL, &calls, never_done, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_offload(loop, pool, noop_work, &calls, NULL, NULL), CTX_EINVAL);
    /* Every allocation failing in turn: nothing runs, nothing stays. */
    for (long n = 1;; n++) {
        long live = ctx_test_alloc_live_blocks();
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_offload(loop, pool, noop_work, &calls, never_done, NULL);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
    }
    run_loop(loop);
    assert_int_equal(calls, 1);
    /* A pool that refuses the work: nothing runs, arg stays the caller's. */
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    ctx_pool_submit_options_t opts = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    opts.arg_release = misuse_release;
    misuse_t m = {pool, 0, {0}, 0};
    ASSERT_RC(ctx_loop_offload(loop, pool, noop_work, &m, never_done, &opts), CTX_ESHUTDOWN);
    assert_int_equal(m.released, 0);
    run_loop(loop);
    assert_int_equal(calls, 1);
    ASSERT_RC(ctx_loop_close(loop), 0);
    ASSERT_RC(ctx_loop_offload(loop, pool, noop_work, &calls, never_done, NULL), CTX_ECLOSED);
    ctx_loop_release(loop);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_thread_release();
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_offload_round_trip, release_thread),
        cmocka_unit_test_teardown(test_offload_dropped_or_orphaned, release_thread),
        cmocka_unit_test_teardown(test_offload_errors, release_thread),
        cmocka_unit_test_teardown(test_tasks_offload_in_their_context, release_thread),
        cmocka_unit_test_teardown(test_run_in_pool_and_wrap_future, release_thread),
        cmocka_unit_test_teardown(test_cancel_queued_offload, release_thread),
        cmocka_unit_test_teardown(test_offload_errors_and_result_release, release_thread),
    };
    return cmocka_run_group_tests_name("loop: offloading", tests, NULL, NULL);
}
