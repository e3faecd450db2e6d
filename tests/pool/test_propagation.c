/* SPDX-License-Identifier: MIT */
/*
 * test_propagation.c — which context a pool task runs in.
 *
 * The scenarios users reported: the evaluation library (two queries in a row,
 * each fanning feedback functions out to a pool, and the stale-worker bug it
 * hit), the pipeline runner (a logger in a variable, propagation switched
 * off), worker reuse, siblings, the submitter, the pool's creator, and every
 * policy: COPY, NONE, CONTEXT, ALLOWLIST, per pool and per submit.
 */
#include "pool_test.h"

#include <semaphore.h>

/* ---------------------------------------------------------------------- */
/* The evaluation-library scenario                                         */
/* ---------------------------------------------------------------------- */

#define FEEDBACKS 8

static int query_ids[2] = {1, 2};
static ctx_var_t *request_var;

typedef struct feedback {
    void *seen; /* the request value the feedback function saw */
} feedback_t;

static int feedback_fn(void *arg, void **result) {
    feedback_t *fb = arg;
    fb->seen = pool_get(request_var, NULL);
    *result = fb->seen;
    return 0;
}

/* Runs two queries in a row on `pool`: each sets the request variable and
 * fans FEEDBACKS functions out; returns how many functions saw their own
 * query's value. */
static int run_two_queries(ctx_pool_t *pool, feedback_t seen[2][FEEDBACKS]) {
    int right = 0;
    for (int q = 0; q < 2; q++) {
        ctx_token_t *token = NULL;
        ASSERT_RC(ctx_var_set(request_var, &query_ids[q], &token), 0);
        ctx_pool_future_t *futures[FEEDBACKS];
        for (int i = 0; i < FEEDBACKS; i++) {
            seen[q][i].seen = NULL;
            ASSERT_RC(ctx_pool_submit(pool, feedback_fn, &seen[q][i], &futures[i]), 0);
        }
        for (int i = 0; i < FEEDBACKS; i++) {
            ASSERT_RC(ctx_pool_future_wait(futures[i], CTX_WAIT_FOREVER), 0);
            ASSERT_RC(ctx_pool_future_result(futures[i], NULL), 0);
            ctx_pool_future_release(futures[i]);
            right += seen[q][i].seen == &query_ids[q];
        }
        ASSERT_RC(ctx_var_reset(request_var, token), 0);
        ctx_token_release(token);
    }
    return right;
}

static void test_eval_two_queries(void **state) {
    (void)state;
    request_var = pool_make_var("request", NULL, 0);
    feedback_t seen[2][FEEDBACKS];

    /* Propagation on (the default): every function sees its own query. */
    ctx_pool_options_t on = {.size = sizeof(ctx_pool_options_t), .threads = 2};
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&on, &pool), 0);
    for (int round = 0; round < SCALED(50); round++)
        assert_int_equal(run_two_queries(pool, seen), 2 * FEEDBACKS);
    ASSERT_RC(ctx_pool_release(pool), 0);

    /* Propagation off: what goes wrong is that no function sees its query
     * (they run in an empty context; the request is lost). */
    ctx_pool_options_t off = {.size = sizeof(ctx_pool_options_t), .threads = 2, .propagation = CTX_POOL_PROPAGATE_NONE};
    ASSERT_RC(ctx_pool_new(&off, &pool), 0);
    assert_int_equal(run_two_queries(pool, seen), 0);
    for (int q = 0; q < 2; q++)
        for (int i = 0; i < FEEDBACKS; i++)
            assert_null(seen[q][i].seen);
    ASSERT_RC(ctx_pool_release(pool), 0);

    ctx_var_release(request_var);
}

/* The bug the evaluation library actually hit: a worker created lazily
 * during the first query inherits that query's context and keeps it, so the
 * second query's functions see the first query.  Reproduced with a
 * hand-made worker (ctx_pool_thread_create with CTX_POOL_THREAD_INHERIT, which is
 * what "inherit whatever context the creator had" means), then the same two
 * queries through a ctxvar pool, which gets both right. */
typedef struct naive_worker {
    sem_t go[2];
    sem_t done[2];
    feedback_t *batches[2];
} naive_worker_t;

static void *naive_worker_main(void *arg) {
    naive_worker_t *w = arg;
    for (int q = 0; q < 2; q++) {
        sem_wait(&w->go[q]);
        for (int i = 0; i < FEEDBACKS; i++) {
            void *unused;
            feedback_fn(&w->batches[q][i], &unused); /* no propagation */
        }
        sem_post(&w->done[q]);
    }
    return NULL;
}

static void test_eval_stale_lazy_worker(void **state) {
    (void)state;
    request_var = pool_make_var("request", NULL, 0);
    feedback_t seen[2][FEEDBACKS];
    naive_worker_t w;
    ctx_pool_thread_t *thread = NULL;
    for (int q = 0; q < 2; q++) {
        sem_init(&w.go[q], 0, 0);
        sem_init(&w.done[q], 0, 0);
        w.batches[q] = seen[q];
    }
    for (int q = 0; q < 2; q++) {
        ctx_token_t *token = NULL;
        ASSERT_RC(ctx_var_set(request_var, &query_ids[q], &token), 0);
        if (q == 0) /* lazily created during the first query */
            ASSERT_RC(ctx_pool_thread_create(naive_worker_main, &w, CTX_POOL_THREAD_INHERIT,
                                        &thread), 0);
        sem_post(&w.go[q]);
        sem_wait(&w.done[q]);
        ASSERT_RC(ctx_var_reset(request_var, token), 0);
        ctx_token_release(token);
    }
    ASSERT_RC(ctx_pool_thread_join(thread, NULL), 0);
    for (int i = 0; i < FEEDBACKS; i++) {
        assert_ptr_equal(seen[0][i].seen, &query_ids[0]);
        assert_ptr_equal(seen[1][i].seen, &query_ids[0]); /* the bug */
    }
    for (int q = 0; q < 2; q++) {
        sem_destroy(&w.go[q]);
        sem_destroy(&w.done[q]);
    }

    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 1}, &pool), 0);
    assert_int_equal(run_two_queries(pool, seen), 2 * FEEDBACKS);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(request_var);
}

/* ---------------------------------------------------------------------- */
/* The pipeline-runner scenario                                            */
/* ---------------------------------------------------------------------- */

static ctx_var_t *logger_var;
static const char root_logger[] = "root";
static const char stage_logger[] = "pipeline.stage-3";

static int log_step(void *arg, void **result) {
    (void)arg;
    *result = pool_get(logger_var, NULL);
    return 0;
}

static const void *logger_seen(ctx_pool_t *pool,
                               const ctx_pool_submit_options_t *options) {
    ctx_pool_future_t *f = NULL;
    void *seen = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, log_step, NULL, options, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_future_result(f, &seen), 0);
    ctx_pool_future_release(f);
    return seen;
}

static void test_pipeline_logger(void **state) {
    (void)state;
    logger_var = pool_make_var("logger", (void *)root_logger, 1);
    ctx_token_t *token = NULL;
    ASSERT_RC(ctx_var_set(logger_var, (void *)stage_logger, &token), 0);

    ctx_pool_t *on = NULL, *off = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2}, &on), 0);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){
                               .size = sizeof(ctx_pool_options_t), .threads = 2, .propagation = CTX_POOL_PROPAGATE_NONE},
                           &off),
              0);
    for (int i = 0; i < SCALED(100); i++) {
        assert_ptr_equal(logger_seen(on, NULL), stage_logger);
        /* Off for the whole pool: the tasks see the default logger. */
        assert_ptr_equal(logger_seen(off, NULL), root_logger);
        /* Off for one submit on a propagating pool. */
        ctx_pool_submit_options_t opt_out = {.size = sizeof(ctx_pool_submit_options_t), .propagation = CTX_POOL_PROPAGATE_NONE};
        assert_ptr_equal(logger_seen(on, &opt_out), root_logger);
        /* And back on for one submit on a non-propagating pool. */
        ctx_pool_submit_options_t opt_in = {.size = sizeof(ctx_pool_submit_options_t), .propagation = CTX_POOL_PROPAGATE_COPY};
        assert_ptr_equal(logger_seen(off, &opt_in), stage_logger);
    }
    ASSERT_RC(ctx_pool_release(on), 0);
    ASSERT_RC(ctx_pool_release(off), 0);
    ASSERT_RC(ctx_var_reset(logger_var, token), 0);
    ctx_token_release(token);
    ctx_var_release(logger_var);
}

/* ---------------------------------------------------------------------- */
/* Isolation: next task, siblings, submitter, creator                      */
/* ---------------------------------------------------------------------- */

static ctx_var_t *scratch_var;
static int marks[4];

/* Records what scratch_var held on entry, then sets it to arg. */
static int set_scratch(void *arg, void **result) {
    *result = pool_get(scratch_var, NULL);
    return ctx_var_set(scratch_var, arg, NULL);
}

static void test_worker_reuse(void **state) {
    (void)state;
    scratch_var = pool_make_var("scratch", NULL, 0);
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 1}, &pool), 0);
    ctx_pool_t *none = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){
                               .size = sizeof(ctx_pool_options_t), .threads = 1, .propagation = CTX_POOL_PROPAGATE_NONE},
                           &none),
              0);
    for (int i = 0; i < SCALED(1000); i++) {
        ctx_pool_t *p = i % 2 ? pool : none;
        ctx_pool_future_t *f = NULL;
        void *seen = &marks[3];
        /* One worker: every task runs on the same thread, right after the
         * previous one, which set the variable. */
        ASSERT_RC(ctx_pool_submit(p, set_scratch, &marks[i % 3], &f), 0);
        ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
        ASSERT_RC(ctx_pool_future_result(f, &seen), 0);
        assert_null(seen);
        ctx_pool_future_release(f);
    }
    /* The submitter never saw any of it. */
    assert_null(pool_get(scratch_var, NULL));
    ASSERT_RC(ctx_pool_release(pool), 0);
    ASSERT_RC(ctx_pool_release(none), 0);
    ctx_var_release(scratch_var);
}

/* Siblings: each task sets the variable to its own mark, meets the others at
 * a barrier (so they overlap on both workers), and reads it back. */
static pthread_barrier_t sibling_barrier;

static int sibling(void *arg, void **result) {
    OFF_MAIN_CHECK(ctx_var_set(scratch_var, arg, NULL) == 0);
    pthread_barrier_wait(&sibling_barrier);
    *result = pool_get(scratch_var, NULL);
    return 0;
}

static void test_siblings_and_submitter_isolated(void **state) {
    (void)state;
    scratch_var = pool_make_var("scratch", NULL, 0);
    ASSERT_RC(ctx_var_set(scratch_var, &marks[3], NULL), 0);
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2}, &pool), 0);
    pthread_barrier_init(&sibling_barrier, NULL, 2);
    for (int round = 0; round < SCALED(200); round++) {
        ctx_pool_future_t *a = NULL, *b = NULL;
        void *ra = NULL, *rb = NULL;
        ASSERT_RC(ctx_pool_submit(pool, sibling, &marks[0], &a), 0);
        ASSERT_RC(ctx_pool_submit(pool, sibling, &marks[1], &b), 0);
        ASSERT_RC(ctx_pool_future_wait(a, CTX_WAIT_FOREVER), 0);
        ASSERT_RC(ctx_pool_future_wait(b, CTX_WAIT_FOREVER), 0);
        ASSERT_RC(ctx_pool_future_result(a, &ra), 0);
        ASSERT_RC(ctx_pool_future_result(b, &rb), 0);
        assert_ptr_equal(ra, &marks[0]);
        assert_ptr_equal(rb, &marks[1]);
        ctx_pool_future_release(a);
        ctx_pool_future_release(b);
        assert_ptr_equal(pool_get(scratch_var, NULL), &marks[3]);
    }
    pthread_barrier_destroy(&sibling_barrier);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(scratch_var);
}

static int read_scratch(void *arg, void **result) {
    (void)arg;
    *result = pool_get(scratch_var, NULL);
    return 0;
}

static void *submit_read_scratch(void *arg) {
    ctx_pool_t *pool = arg;
    ctx_pool_future_t *f = NULL;
    void *seen = &marks[3];
    if (ctx_pool_submit(pool, read_scratch, NULL, &f) != 0)
        return &marks[3];
    ctx_pool_future_wait(f, CTX_WAIT_FOREVER);
    ctx_pool_future_result(f, &seen);
    ctx_pool_future_release(f);
    return seen;
}

/* The pool's creator had a value set: workers do not inherit it. */
static void test_creator_context_not_pinned(void **state) {
    (void)state;
    scratch_var = pool_make_var("scratch", NULL, 0);
    ctx_token_t *token = NULL;
    ASSERT_RC(ctx_var_set(scratch_var, &marks[0], &token), 0);
    ctx_pool_t *copy = NULL, *none = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2}, &copy), 0);
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){
                               .size = sizeof(ctx_pool_options_t), .threads = 2, .propagation = CTX_POOL_PROPAGATE_NONE},
                           &none),
              0);
    ASSERT_RC(ctx_var_reset(scratch_var, token), 0);
    ctx_token_release(token);

    /* Submitted from a thread with an empty context: nothing of the creator. */
    ctx_pool_thread_t *t = NULL;
    void *seen = &marks[3];
    ASSERT_RC(ctx_pool_thread_create(submit_read_scratch, copy, 0, &t), 0);
    ASSERT_RC(ctx_pool_thread_join(t, &seen), 0);
    assert_null(seen);
    /* Opt-out pool, submitted by the creator while it holds a value again. */
    ASSERT_RC(ctx_var_set(scratch_var, &marks[1], NULL), 0);
    assert_null(submit_read_scratch(none));
    /* And the propagating pool sees the submitter's current value, not the
     * one the creator held at creation. */
    assert_ptr_equal(submit_read_scratch(copy), &marks[1]);

    ASSERT_RC(ctx_pool_release(copy), 0);
    ASSERT_RC(ctx_pool_release(none), 0);
    ctx_var_release(scratch_var);
}

/* ---------------------------------------------------------------------- */
/* Explicit context and allowlists                                         */
/* ---------------------------------------------------------------------- */

static ctx_var_t *var_a, *var_b;

typedef struct pair_seen {
    void *a;
    void *b;
} pair_seen_t;

static int read_pair(void *arg, void **result) {
    pair_seen_t *p = arg;
    p->a = pool_get(var_a, NULL);
    p->b = pool_get(var_b, NULL);
    /* and try to leak a change back */
    ctx_var_set(var_a, &marks[3], NULL);
    *result = NULL;
    return 0;
}

static pair_seen_t run_pair(ctx_pool_t *pool, const ctx_pool_submit_options_t *o) {
    pair_seen_t p = {NULL, NULL};
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit_ex(pool, read_pair, &p, o, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_future_result(f, NULL), 0);
    ctx_pool_future_release(f);
    return p;
}

static void test_explicit_context(void **state) {
    (void)state;
    var_a = pool_make_var("a", NULL, 0);
    var_b = pool_make_var("b", NULL, 0);
    ctx_context_t *given = NULL;
    ASSERT_RC(ctx_context_new(&given), 0);
    ASSERT_RC(ctx_context_set(given, var_a, &marks[0]), 0);
    ASSERT_RC(ctx_var_set(var_b, &marks[1], NULL), 0); /* submitter's own */

    /* Per pool. */
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2,
                                                 .propagation = CTX_POOL_PROPAGATE_CONTEXT,
                                                 .context = given},
                           &pool),
              0);
    pair_seen_t p = run_pair(pool, NULL);
    assert_ptr_equal(p.a, &marks[0]);
    assert_null(p.b);
    /* Per submit, on a pool that otherwise propagates. */
    ctx_pool_t *copy = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2}, &copy), 0);
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .propagation = CTX_POOL_PROPAGATE_CONTEXT, .context = given};
    p = run_pair(copy, &o);
    assert_ptr_equal(p.a, &marks[0]);
    assert_null(p.b);
    p = run_pair(copy, NULL);
    assert_null(p.a);
    assert_ptr_equal(p.b, &marks[1]);

    /* The task's set went to its own copy: the given context is unchanged
     * and was never entered (so it can be used by both pools at once). */
    void *v = NULL;
    ASSERT_RC(ctx_context_get(given, var_a, &v), 0);
    assert_ptr_equal(v, &marks[0]);
    assert_int_equal(ctx_context_is_entered(given), 0);

    /* Bad options: nothing runs. */
    ctx_pool_submit_options_t bad = {.size = sizeof(ctx_pool_submit_options_t), .propagation = CTX_POOL_PROPAGATE_CONTEXT};
    ctx_pool_future_t *f = (ctx_pool_future_t *)&marks[0];
    ASSERT_RC(ctx_pool_submit_ex(copy, read_pair, NULL, &bad, &f), CTX_EINVAL);
    assert_ptr_equal(f, (ctx_pool_future_t *)&marks[0]);
    bad.propagation = (ctx_pool_propagation_t)42;
    ASSERT_RC(ctx_pool_submit_ex(copy, read_pair, NULL, &bad, &f), CTX_EINVAL);

    ASSERT_RC(ctx_pool_release(pool), 0);
    ASSERT_RC(ctx_pool_release(copy), 0);
    ctx_context_release(given);
    ctx_var_release(var_a);
    ctx_var_release(var_b);
}

static void test_allowlist(void **state) {
    (void)state;
    var_a = pool_make_var("a", NULL, 0);
    var_b = pool_make_var("b", NULL, 0);
    ctx_var_t *unset = pool_make_var("unset", NULL, 0);
    ASSERT_RC(ctx_var_set(var_a, &marks[0], NULL), 0);
    ASSERT_RC(ctx_var_set(var_b, &marks[1], NULL), 0);

    ctx_var_t *only_a[] = {var_a, unset};
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2,
                                                 .propagation = CTX_POOL_PROPAGATE_ALLOWLIST,
                                                 .allowlist = only_a,
                                                 .allowlist_len = 2},
                           &pool),
              0);
    /* The pool keeps its own references: releasing ours changes nothing. */
    ctx_var_release(unset);
    pair_seen_t p = run_pair(pool, NULL);
    assert_ptr_equal(p.a, &marks[0]);
    assert_null(p.b);

    ctx_var_t *only_b[] = {var_b};
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .propagation = CTX_POOL_PROPAGATE_ALLOWLIST,
                              .allowlist = only_b,
                              .allowlist_len = 1};
    p = run_pair(pool, &o);
    assert_null(p.a);
    assert_ptr_equal(p.b, &marks[1]);
    /* An empty allowlist is an empty context. */
    o.allowlist_len = 0;
    p = run_pair(pool, &o);
    assert_null(p.a);
    assert_null(p.b);

    /* The task's attempt to set `a` did not reach the submitter. */
    assert_ptr_equal(pool_get(var_a, NULL), &marks[0]);

    ctx_var_t *with_null[] = {var_a, NULL};
    o.allowlist = with_null;
    o.allowlist_len = 2;
    ASSERT_RC(ctx_pool_submit_ex(pool, read_pair, NULL, &o, NULL), CTX_EINVAL);
    ctx_pool_t *bad = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .propagation = CTX_POOL_PROPAGATE_ALLOWLIST,
                                                 .allowlist = with_null,
                                                 .allowlist_len = 2},
                           &bad),
              CTX_EINVAL);
    assert_null(bad);

    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(var_a);
    ctx_var_release(var_b);
}

/* ---------------------------------------------------------------------- */
/* A task's values are dropped when it returns                             */
/* ---------------------------------------------------------------------- */

static atomic_int released_values;

static void count_release(void *value, void *user) {
    (void)value;
    (void)user;
    atomic_fetch_add(&released_values, 1);
}

static int set_owned(void *arg, void **result) {
    (void)result;
    return ctx_var_set(arg, &marks[2], NULL);
}

static void test_task_values_released_when_done(void **state) {
    (void)state;
    static const ctx_value_ops_t ops = {.size = sizeof(ctx_value_ops_t),.release = count_release};
    ctx_var_options_t vo = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &ops};
    ctx_var_t *owned = NULL;
    ASSERT_RC(ctx_var_new("owned", &vo, &owned), 0);
    atomic_store(&released_values, 0);
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2}, &pool), 0);
    for (int i = 1; i <= SCALED(100); i++) {
        ctx_pool_future_t *f = NULL;
        ASSERT_RC(ctx_pool_submit(pool, set_owned, owned, &f), 0);
        ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
        /* Once the future is done, the task's context is gone. */
        assert_int_equal(atomic_load(&released_values), i);
        ctx_pool_future_release(f);
    }
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(owned);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_eval_two_queries, pool_teardown),
        cmocka_unit_test_teardown(test_eval_stale_lazy_worker, pool_teardown),
        cmocka_unit_test_teardown(test_pipeline_logger, pool_teardown),
        cmocka_unit_test_teardown(test_worker_reuse, pool_teardown),
        cmocka_unit_test_teardown(test_siblings_and_submitter_isolated, pool_teardown),
        cmocka_unit_test_teardown(test_creator_context_not_pinned, pool_teardown),
        cmocka_unit_test_teardown(test_explicit_context, pool_teardown),
        cmocka_unit_test_teardown(test_allowlist, pool_teardown),
        cmocka_unit_test_teardown(test_task_values_released_when_done, pool_teardown),
    };
    int failed = cmocka_run_group_tests_name("pool_propagation", tests, NULL, NULL);
    ctx_thread_release();
    return failed || off_main_failures();
}
