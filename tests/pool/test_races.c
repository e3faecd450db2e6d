/* SPDX-License-Identifier: MIT */
/*
 * test_races.c — the pool under fire, and out of memory.
 *
 * Races: 8 submitting threads × 100k tasks (scaled down under valgrind and
 * TSan), each thread with its own request value that every task checks,
 * cancelling random earlier tasks as it goes, while the main thread shuts
 * the pool down in the middle.  Afterwards every task is accounted for:
 *
 *   accepted  → its arg was released exactly once, its future ended in one
 *               of completed / failed / cancelled, and the pool's counters
 *               add up to exactly what the tasks themselves recorded;
 *   refused   → (CTX_ESHUTDOWN) it never ran and its arg was never released;
 *   cancelled by its submitter (CTX_POOL_CANCEL_DONE) → it never ran;
 *   cancelled once a worker had taken it (CTX_POOL_CANCEL_RUNNING) → it
 *               may not run either (the worker finds its scope cancelled
 *               before it starts it), which DRAIN allows for no other task;
 *
 * no task saw another submitter's value, and no memory is left.  Three
 * shapes: unbounded + DRAIN, unbounded + CANCEL, bounded (submitters block)
 * + CANCEL.  The seed is printed; CTX_TEST_SEED replays it.
 *
 * Out of memory: every allocation a submit makes (record, context copy,
 * allowlist copy, stack capture) is failed in turn, for every policy; the
 * task must not run, its arg must stay the caller's, nothing may leak.  The
 * same for ctx_pool_new and ctx_pool_future_add_done_callback.
 */
#include "pool_test.h"
#include <sched.h>

#define SUBMITTERS 8
#define PER_SUBMITTER SCALED(100000)
#define RING 64

enum { OUT_NONE = 0, OUT_COMPLETED = 1, OUT_GAVE_UP = 2 };

typedef struct slot {
    atomic_uchar accepted;
    atomic_uchar ran;
    atomic_uchar outcome;
    atomic_uchar released;
    atomic_uchar cancelled_by_submitter;
    atomic_uchar cancelled_while_taken; /* the cancel said RUNNING */
} slot_t;

static slot_t *slots;
static int submitter_ids[SUBMITTERS];
static ctx_var_t *submitter_var;
static ctx_pool_t *race_pool;
static atomic_long accepted_total;
static atomic_long refused_total;
static atomic_long wrong_context;
static atomic_int shutdown_returned;
static atomic_int late_runs;
static uint64_t race_seed;

static int race_task(void *arg, void **result) {
    slot_t *s = arg;
    size_t index = (size_t)(s - slots);
    void *want = &submitter_ids[index / (size_t)PER_SUBMITTER];
    if (pool_get(submitter_var, NULL) != want)
        atomic_fetch_add(&wrong_context, 1);
    atomic_fetch_add(&s->ran, 1);
    *result = NULL;
    if (ctx_pool_task_cancelled()) {
        atomic_store(&s->outcome, OUT_GAVE_UP);
        return CTX_ECANCELLED;
    }
    atomic_store(&s->outcome, OUT_COMPLETED);
    return 0;
}

static void race_arg_release(void *arg) {
    slot_t *s = arg;
    atomic_fetch_add(&s->released, 1);
}

static int late_task(void *arg, void **result) {
    (void)arg;
    (void)result;
    atomic_fetch_add(&late_runs, 1);
    return 0;
}

static void late_arg_release(void *arg) {
    (void)arg;
    atomic_fetch_add(&late_runs, 1);
}

/* The ring keeps the last RING futures; a future leaving it must have ended
 * consistently with what its task recorded, once it has ended. */
static void check_and_release(ctx_pool_future_t *f, slot_t *s) {
    if (ctx_pool_future_done(f)) {
        int st = ctx_pool_future_state(f);
        int out = atomic_load(&s->outcome);
        OFF_MAIN_CHECK(atomic_load(&s->released) == 1);
        if (st == CTX_POOL_FUTURE_COMPLETED)
            OFF_MAIN_CHECK(out == OUT_COMPLETED);
        else if (st == CTX_POOL_FUTURE_CANCELLED)
            OFF_MAIN_CHECK(out == OUT_GAVE_UP || atomic_load(&s->ran) == 0);
        else
            OFF_MAIN_CHECK(!"a race task cannot fail");
    }
    ctx_pool_future_release(f);
}

static void *submitter_main(void *arg) {
    int k = (int)(intptr_t)arg;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, race_seed + (uint64_t)k * 7919u);
    OFF_MAIN_CHECK(ctx_var_set(submitter_var, &submitter_ids[k], NULL) == 0);
    ctx_pool_future_t *ring[RING] = {NULL};
    slot_t *ring_slot[RING] = {NULL};
    ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = race_arg_release};
    for (int i = 0; i < PER_SUBMITTER; i++) {
        slot_t *s = &slots[(size_t)k * (size_t)PER_SUBMITTER + (size_t)i];
        ctx_pool_future_t *f = NULL;
        int rc = ctx_pool_submit_ex(race_pool, race_task, s, &o, &f);
        if (rc != 0) {
            OFF_MAIN_CHECK(rc == CTX_ESHUTDOWN);
            atomic_fetch_add(&refused_total, 1);
            continue;
        }
        atomic_store(&s->accepted, 1);
        atomic_fetch_add(&accepted_total, 1);
        int at = i % RING;
        if (ring[at])
            check_and_release(ring[at], ring_slot[at]);
        ring[at] = f;
        ring_slot[at] = s;
        if (ctx_test_rng_below(&rng, 8) == 0) {
            int victim = (int)ctx_test_rng_below(&rng, RING);
            int how = ring[victim] ? ctx_pool_future_cancel(ring[victim]) : -1;
            if (how == CTX_POOL_CANCEL_DONE)
                atomic_store(&ring_slot[victim]->cancelled_by_submitter, 1);
            else if (how == CTX_POOL_CANCEL_RUNNING)
                atomic_store(&ring_slot[victim]->cancelled_while_taken, 1);
        }
    }
    for (int at = 0; at < RING; at++) {
        if (!ring[at])
            continue;
        OFF_MAIN_CHECK(ctx_pool_future_wait(ring[at], CTX_WAIT_FOREVER) == 0);
        check_and_release(ring[at], ring_slot[at]);
    }
    /* Once shutdown has returned, a submit is refused for sure: never runs,
     * arg never released, future untouched. */
    while (!atomic_load(&shutdown_returned))
        short_nap();
    ctx_pool_submit_options_t late = {.size = sizeof(ctx_pool_submit_options_t), .arg_release = late_arg_release};
    ctx_pool_future_t *f = NULL;
    OFF_MAIN_CHECK(ctx_pool_submit_ex(race_pool, late_task, NULL, &late, &f) ==
                   CTX_ESHUTDOWN);
    OFF_MAIN_CHECK(f == NULL);
    return NULL;
}

static void race_case(size_t capacity, ctx_pool_shutdown_mode_t mode) {
    race_seed = ctx_test_seed((uint64_t)time(NULL));
    printf("race: seed %llu (CTX_TEST_SEED), %d x %d tasks, capacity %zu, %s\n",
           (unsigned long long)race_seed, SUBMITTERS, PER_SUBMITTER, capacity,
           mode == CTX_POOL_SHUTDOWN_DRAIN ? "drain" : "cancel");
    size_t total = (size_t)SUBMITTERS * (size_t)PER_SUBMITTER;
    slots = calloc(total, sizeof *slots);
    assert_non_null(slots);
    atomic_store(&accepted_total, 0);
    atomic_store(&refused_total, 0);
    atomic_store(&wrong_context, 0);
    atomic_store(&shutdown_returned, 0);
    atomic_store(&late_runs, 0);

    pool_test_make_cancel_var();
    ctx_test_alloc_install();
    long base_blocks = ctx_test_alloc_live_blocks();
    submitter_var = pool_make_var("submitter", NULL, 0);
    ctx_pool_options_t po = {.size = sizeof(ctx_pool_options_t), .threads = 2, .queue_capacity = capacity};
    ASSERT_RC(ctx_pool_new(&po, &race_pool), 0);

    ctx_pool_thread_t *threads[SUBMITTERS];
    for (int k = 0; k < SUBMITTERS; k++)
        ASSERT_RC(ctx_pool_thread_create(submitter_main, (void *)(intptr_t)k, 0, &threads[k]), 0);
    /* Shut down in the middle. */
    while ((size_t)atomic_load(&accepted_total) < total / 2)
        short_nap();
    ASSERT_RC(ctx_pool_shutdown(race_pool, mode), 0);
    atomic_store(&shutdown_returned, 1);
    for (int k = 0; k < SUBMITTERS; k++)
        ASSERT_RC(ctx_pool_thread_join(threads[k], NULL), 0);

    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(race_pool, &st), 0);
    uint64_t accepted = 0, refused = 0, completed = 0, gave_up = 0, never_ran = 0;
    uint64_t cancelled_by_submitters = 0, unstarted_while_taken = 0;
    for (size_t i = 0; i < total; i++) {
        slot_t *s = &slots[i];
        int ran = atomic_load(&s->ran);
        int released = atomic_load(&s->released);
        if (!atomic_load(&s->accepted)) {
            refused++;
            assert_int_equal(ran, 0);
            assert_int_equal(released, 0);
            continue;
        }
        accepted++;
        assert_int_equal(released, 1);
        assert_true(ran <= 1);
        if (atomic_load(&s->cancelled_by_submitter)) {
            assert_int_equal(ran, 0);
            cancelled_by_submitters++;
        }
        if (!ran && atomic_load(&s->cancelled_while_taken))
            unstarted_while_taken++;
        if (!ran)
            never_ran++;
        else if (atomic_load(&s->outcome) == OUT_COMPLETED)
            completed++;
        else
            gave_up++;
    }
    printf("race: accepted %llu, refused %llu, completed %llu, cancelled %llu "
           "(%llu before running), max queue wait %.3f ms\n",
           (unsigned long long)accepted, (unsigned long long)refused,
           (unsigned long long)completed, (unsigned long long)(never_ran + gave_up),
           (unsigned long long)never_ran, st.max_queue_wait_ns / 1e6);
    assert_int_equal(accepted, (uint64_t)atomic_load(&accepted_total));
    assert_int_equal(refused, (uint64_t)atomic_load(&refused_total));
    assert_int_equal(st.submitted, accepted);
    assert_int_equal(st.rejected, refused + SUBMITTERS); /* + the late ones */
    assert_int_equal(atomic_load(&late_runs), 0);
    assert_int_equal(st.completed, completed);
    assert_int_equal(st.cancelled, never_ran + gave_up);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 0);
    /* DRAIN runs everything that was queued: only the tasks their
     * submitters cancelled never ran.  CANCEL may add queued ones. */
    if (mode == CTX_POOL_SHUTDOWN_DRAIN)
        assert_int_equal(never_ran, cancelled_by_submitters + unstarted_while_taken);
    else
        assert_true(never_ran >= cancelled_by_submitters);
    assert_int_equal(atomic_load(&wrong_context), 0);
    assert_int_equal(off_main_failures(), 0);

    ASSERT_RC(ctx_pool_release(race_pool), 0);
    ctx_var_release(submitter_var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base_blocks);
    ctx_test_alloc_uninstall();
    free(slots);
}

static void test_race_unbounded_drain(void **state) {
    (void)state;
    race_case(0, CTX_POOL_SHUTDOWN_DRAIN);
}

static void test_race_unbounded_cancel(void **state) {
    (void)state;
    race_case(0, CTX_POOL_SHUTDOWN_CANCEL);
}

static void test_race_bounded_cancel(void **state) {
    (void)state;
    race_case(256, CTX_POOL_SHUTDOWN_CANCEL);
}

/* ---------------------------------------------------------------------- */
/* Out of memory                                                           */
/* ---------------------------------------------------------------------- */

static atomic_int oom_runs;
static atomic_int oom_releases;
static int oom_marks[2];

static int oom_task(void *arg, void **result) {
    (void)arg;
    (void)result;
    atomic_fetch_add(&oom_runs, 1);
    return 0;
}

static void oom_arg_release(void *arg) {
    (void)arg;
    atomic_fetch_add(&oom_releases, 1);
}

static void oom_callback(ctx_pool_future_t *f, void *user) {
    (void)f;
    atomic_fetch_add((atomic_int *)user, 1);
}

static void test_submit_out_of_memory(void **state) {
    (void)state;
    ctx_test_alloc_install();
    long base_blocks = ctx_test_alloc_live_blocks();
    ctx_var_t *a = pool_make_var("a", NULL, 0);
    ctx_var_t *b = pool_make_var("b", NULL, 0);
    ASSERT_RC(ctx_var_set(a, &oom_marks[0], NULL), 0);
    ASSERT_RC(ctx_var_set(b, &oom_marks[1], NULL), 0);
    ctx_context_t *given = NULL;
    ASSERT_RC(ctx_context_copy_current(&given), 0);
    ctx_var_t *allow[] = {a};

    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2}, &pool), 0);
    const ctx_pool_propagation_t policies[] = {CTX_POOL_PROPAGATE_COPY, CTX_POOL_PROPAGATE_NONE,
                                          CTX_POOL_PROPAGATE_CONTEXT,
                                          CTX_POOL_PROPAGATE_ALLOWLIST};
    int failures_seen = 0;
    for (int p = 0; p < 4; p++) {
        for (int capture = 0; capture < 2; capture++) {
            ctx_pool_submit_options_t o = {.size = sizeof(ctx_pool_submit_options_t), .propagation = policies[p],
                                      .context = given,
                                      .allowlist = allow,
                                      .allowlist_len = 1,
                                      .arg_release = oom_arg_release,
                                      .capture_stack = capture};
            for (long n = 1;; n++) {
                atomic_store(&oom_runs, 0);
                atomic_store(&oom_releases, 0);
                ctx_pool_future_t *f = (ctx_pool_future_t *)&oom_marks[0];
                ctx_test_alloc_fail_nth(n);
                int rc = ctx_pool_submit_ex(pool, oom_task, &oom_marks[1], &o, &f);
                int fired = ctx_test_alloc_fired();
                ctx_test_alloc_fail_nth(0);
                if (rc == 0) {
                    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
                    ASSERT_RC(ctx_pool_future_result(f, NULL), 0);
                    assert_int_equal(atomic_load(&oom_runs), 1);
                    assert_int_equal(atomic_load(&oom_releases), 1);
                    ctx_pool_future_release(f);
                    assert_false(fired); /* submit allocates, workers do not */
                    break;
                }
                failures_seen++;
                ASSERT_RC(rc, CTX_ENOMEM);
                assert_ptr_equal(f, (ctx_pool_future_t *)&oom_marks[0]); /* untouched */
                /* Never ran, arg never released: it is still the caller's. */
                assert_int_equal(atomic_load(&oom_runs), 0);
                assert_int_equal(atomic_load(&oom_releases), 0);
            }
        }
    }
    assert_true(failures_seen >= 8);

    /* add_done_callback: ENOMEM means the callback is never called. */
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, oom_task, NULL, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    for (long n = 1;; n++) {
        atomic_int called;
        atomic_init(&called, 0);
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_pool_future_add_done_callback(f, oom_callback, &called);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            /* The future has ended, but its ending thread may still be
             * running the callbacks; one added in that race runs there
             * (pool.h), so wait for it rather than expect it done. */
            for (int spins = 0; atomic_load(&called) == 0 && spins < 10000000; spins++)
                sched_yield();
            assert_int_equal(atomic_load(&called), 1);
            break;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_int_equal(atomic_load(&called), 0);
    }
    ctx_pool_future_release(f);
    ASSERT_RC(ctx_pool_release(pool), 0);

    /* ctx_pool_new: each of its allocations fails in turn.  (A failure that
     * lands in a worker's warm-up is harmless and the pool is created.) */
    for (long n = 1;; n++) {
        ctx_pool_t *p = NULL;
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_pool_new(&(ctx_pool_options_t){.size = sizeof(ctx_pool_options_t), .threads = 2,
                                                    .propagation = CTX_POOL_PROPAGATE_ALLOWLIST,
                                                    .allowlist = allow,
                                                    .allowlist_len = 1},
                              &p);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (rc == 0) {
            ASSERT_RC(ctx_pool_submit(p, oom_task, NULL, NULL), 0);
            ASSERT_RC(ctx_pool_release(p), 0);
            if (!fired)
                break;
            continue;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_null(p);
    }

    ctx_context_release(given);
    ctx_var_release(a);
    ctx_var_release(b);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base_blocks);
    ctx_test_alloc_uninstall();
}

/* Fire-and-forget submits allocate nothing but, once per 127 tasks, a
 * queue segment: every submit is tried first with the next allocation
 * failing.  A refused one (CTX_ENOMEM) must not run, must leave nothing
 * behind, and is tried again without failures; every accepted one runs
 * exactly once; no memory is left. */
static atomic_int light_runs;

static int light_task(void *arg, void **result) {
    (void)arg;
    (void)result;
    atomic_fetch_add(&light_runs, 1);
    return 0;
}

static void test_light_submit_out_of_memory(void **state) {
    (void)state;
    ctx_test_alloc_install();
    long base_blocks = ctx_test_alloc_live_blocks();
    ctx_var_t *v = pool_make_var("v", NULL, 0);
    ASSERT_RC(ctx_var_set(v, &light_runs, NULL), 0); /* something to carry */
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 1;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    gate_t gate;
    gate_init(&gate);
    ASSERT_RC(ctx_pool_submit(pool, task_gate, &gate, NULL), 0);
    gate_await_arrivals(&gate, 1); /* what follows stays queued */
    atomic_store(&light_runs, 0);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 400; i++) {
        ctx_test_alloc_fail_nth(1);
        int rc = ctx_pool_submit(pool, light_task, NULL, NULL);
        ctx_test_alloc_fail_nth(0);
        if (rc == CTX_ENOMEM) {
            refused++;
            assert_int_equal(atomic_load(&light_runs), 0); /* held: nothing ran */
            rc = ctx_pool_submit(pool, light_task, NULL, NULL);
        }
        ASSERT_RC(rc, 0);
        accepted++;
    }
    assert_true(refused >= 2); /* 400 tasks need new segments */
    gate_open(&gate);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(atomic_load(&light_runs), accepted);
    gate_destroy(&gate);
    ctx_var_release(v);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base_blocks);
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_light_submit_out_of_memory, pool_teardown),
        cmocka_unit_test_teardown(test_race_unbounded_drain, pool_teardown),
        cmocka_unit_test_teardown(test_race_unbounded_cancel, pool_teardown),
        cmocka_unit_test_teardown(test_race_bounded_cancel, pool_teardown),
        cmocka_unit_test_teardown(test_submit_out_of_memory, pool_teardown),
    };
    int failed = cmocka_run_group_tests_name("pool_races", tests, NULL, NULL);
    ctx_thread_release();
    return failed || off_main_failures();
}
