/* SPDX-License-Identifier: MIT */
/*
 * test_cancel_race.c — cancellation racing with the pool's workers (run it
 * under TSan: scripts/test.sh tsan):
 *   - submitter threads submit requests (a scope each, several tasks per
 *     request, with and without futures) while a canceller thread cancels
 *     random futures and random requests' scopes, and the workers take the
 *     tasks: every accepted task's arg_release runs exactly once, it runs
 *     at most once, and its future's outcome agrees with what happened
 *     (completed only if it ran and returned 0, never failed; cancelled
 *     without running only if its future or its scope was cancelled);
 *   - threads submitting to one group whose tasks fail at random: the
 *     group's result is the first failure, the one whose code is the
 *     cause of the group's cancellation.
 * The seed is printed (CTX_TEST_SEED reruns it).
 */
#include "pool_test.h"

#define SUBMITTERS 4
#define REQUESTS SCALED(400)
#define PER_REQUEST 4
#define TOTAL (SUBMITTERS * REQUESTS * PER_REQUEST)

typedef struct slot {
    atomic_int accepted;
    atomic_int ran;
    atomic_int released;
    atomic_int returned; /* what the task returned, if it ran */
    ctx_pool_future_t *future; /* set by its submitter before `ready` */
    atomic_int ready;
    int request;
} slot_t;

static slot_t *slots;
static _Atomic(ctx_cancel_scope_t *) *requests; /* retained while published */
static ctx_pool_t *race_pool;
static atomic_int submitters_done;
static atomic_int canceller_running;
static uint64_t seed;

static int race_task(void *arg, void **result) {
    (void)result;
    slot_t *s = arg;
    atomic_fetch_add(&s->ran, 1);
    if (s->request % 3 == 0) /* some give a canceller time to land */
        sched_yield();
    int c = ctx_cancel_check();
    atomic_store(&s->returned, c);
    return c;
}

static void race_release(void *arg) { atomic_fetch_add(&((slot_t *)arg)->released, 1); }

static void *submitter(void *arg) {
    int k = (int)(intptr_t)arg;
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.arg_release = race_release;
    while (!atomic_load(&canceller_running))
        sched_yield();
    for (int r = 0; r < REQUESTS; r++) {
        int req = k * REQUESTS + r;
        ctx_cancel_scope_t *scope = NULL;
        ctx_token_t *tok = NULL;
        OFF_MAIN_CHECK(ctx_cancel_enter_child(NULL, &scope, &tok) == 0);
        atomic_store(&requests[req], scope); /* the canceller may take it now */
        for (int t = 0; t < PER_REQUEST; t++) {
            slot_t *s = &slots[req * PER_REQUEST + t];
            s->request = req;
            ctx_pool_future_t *f = NULL;
            int rc = ctx_pool_submit_ex(race_pool, race_task, s, &so, t % 2 ? &f : NULL);
            OFF_MAIN_CHECK(rc == 0);
            atomic_store(&s->accepted, rc == 0);
            s->future = f;
            atomic_store(&s->ready, 1);
        }
        OFF_MAIN_CHECK(ctx_cancel_exit(tok) == 0);
        sched_yield(); /* the canceller's turn, on few processors */
    }
    atomic_fetch_add(&submitters_done, 1);
    return NULL;
}

static void *canceller(void *arg) {
    (void)arg;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, seed);
    atomic_store(&canceller_running, 1);
    while (atomic_load(&submitters_done) < SUBMITTERS) {
        uint64_t pick = ctx_test_rng_below(&rng, TOTAL);
        slot_t *s = &slots[pick];
        if (ctx_test_rng_below(&rng, 2) == 0) {
            if (atomic_load(&s->ready) && s->future)
                OFF_MAIN_CHECK(ctx_pool_future_cancel(s->future) >= 0);
        } else {
            ctx_cancel_scope_t *scope = atomic_load(&requests[pick / PER_REQUEST]);
            if (scope)
                OFF_MAIN_CHECK(ctx_cancel_scope_cancel(scope, NULL) >= 0);
        }
    }
    return NULL;
}

static void test_cancel_races_with_pickup(void **state) {
    (void)state;
    seed = ctx_test_seed((uint64_t)time(NULL));
    printf("cancel race: seed %llu (CTX_TEST_SEED), %d tasks\n", (unsigned long long)seed, TOTAL);
    slots = calloc(TOTAL, sizeof *slots);
    requests = calloc(SUBMITTERS * REQUESTS, sizeof *requests);
    assert_non_null(slots);
    assert_non_null(requests);
    atomic_store(&submitters_done, 0);
    atomic_store(&canceller_running, 0);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    ASSERT_RC(ctx_pool_new(&po, &race_pool), 0);

    ctx_pool_thread_t *th[SUBMITTERS + 1];
    ASSERT_RC(ctx_pool_thread_create(canceller, NULL, 0, &th[SUBMITTERS]), 0);
    for (int k = 0; k < SUBMITTERS; k++)
        ASSERT_RC(ctx_pool_thread_create(submitter, (void *)(intptr_t)k, 0, &th[k]), 0);
    for (int k = 0; k <= SUBMITTERS; k++)
        ASSERT_RC(ctx_pool_thread_join(th[k], NULL), 0);
    ASSERT_RC(ctx_pool_shutdown(race_pool, CTX_POOL_SHUTDOWN_DRAIN), 0);

    long ran = 0, skipped = 0, completed = 0, gave_up = 0;
    for (int i = 0; i < TOTAL; i++) {
        slot_t *s = &slots[i];
        assert_int_equal(atomic_load(&s->accepted), 1);
        assert_int_equal(atomic_load(&s->released), 1);
        int r = atomic_load(&s->ran);
        assert_true(r <= 1);
        ctx_cancel_scope_t *scope = atomic_load(&requests[s->request]);
        int scope_err = ctx_cancel_scope_error(scope);
        ran += r;
        if (!s->future) {
            skipped += !r;
            if (!r) /* a fire-and-forget task skipped: its scope was cancelled */
                assert_int_equal(scope_err, CTX_ECANCELLED);
            continue;
        }
        ctx_pool_future_state_t st = ctx_pool_future_state(s->future);
        assert_true(st == CTX_POOL_FUTURE_COMPLETED || st == CTX_POOL_FUTURE_CANCELLED);
        if (st == CTX_POOL_FUTURE_COMPLETED) {
            assert_int_equal(r, 1);
            assert_int_equal(atomic_load(&s->returned), 0);
            completed++;
        } else {
            ASSERT_RC(ctx_pool_future_result(s->future, NULL), CTX_ECANCELLED);
            if (r)
                assert_int_equal(atomic_load(&s->returned), CTX_ECANCELLED);
            else
                assert_true(ctx_pool_future_cancel_requested(s->future) ||
                            scope_err == CTX_ECANCELLED);
            gave_up += r;
            skipped += !r;
        }
        ctx_pool_future_release(s->future);
    }
    printf("cancel race: %ld ran (%ld completed with a future, %ld gave up), %ld never "
           "started\n",
           ran, completed, gave_up, skipped);
    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ASSERT_RC(ctx_pool_stats(race_pool, &st), 0);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.completed + st.cancelled, (uint64_t)TOTAL);
    assert_int_equal(off_main_failures(), 0);
    for (int r = 0; r < SUBMITTERS * REQUESTS; r++)
        ctx_cancel_scope_release(atomic_load(&requests[r]));
    ASSERT_RC(ctx_pool_release(race_pool), 0);
    free(slots);
    free(requests);
}

/* ---- a group failing from several threads at once ---- */

#define GROUP_THREADS 4
#define GROUP_TASKS SCALED(200)

static ctx_pool_group_t *race_group;

static int maybe_fail(void *arg, void **result) {
    (void)result;
    int code = (int)(intptr_t)arg;
    return code ? code : ctx_cancel_check();
}

static void *group_submitter(void *arg) {
    int k = (int)(intptr_t)arg;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, seed + (uint64_t)k);
    for (int i = 0; i < GROUP_TASKS; i++) {
        /* Failures with distinct codes: -1000 - (thread * tasks + i). */
        intptr_t code = ctx_test_rng_below(&rng, 8) == 0 ? -1000 - (k * GROUP_TASKS + i) : 0;
        int rc = ctx_pool_group_submit(race_group, maybe_fail, (void *)code, NULL, NULL);
        OFF_MAIN_CHECK(rc == 0 || rc == CTX_ECANCELLED); /* refused once stopped */
    }
    return NULL;
}

static void test_group_first_failure_races(void **state) {
    (void)state;
    seed = ctx_test_seed((uint64_t)time(NULL));
    printf("group race: seed %llu (CTX_TEST_SEED)\n", (unsigned long long)seed);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    ASSERT_RC(ctx_pool_new(&po, &race_pool), 0);
    for (int round = 0; round < SCALED(20); round++) {
        ASSERT_RC(ctx_pool_group_new(race_pool, NULL, &race_group), 0);
        ctx_pool_thread_t *th[GROUP_THREADS];
        for (int k = 0; k < GROUP_THREADS; k++)
            ASSERT_RC(ctx_pool_thread_create(group_submitter, (void *)(intptr_t)k, 0, &th[k]), 0);
        for (int k = 0; k < GROUP_THREADS; k++)
            ASSERT_RC(ctx_pool_thread_join(th[k], NULL), 0);
        int rc = ctx_pool_group_wait(race_group, CTX_WAIT_FOREVER);
        ctx_cancel_scope_t *scope = NULL;
        ASSERT_RC(ctx_pool_group_scope(race_group, &scope), 0);
        ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
        if (rc == 0) {
            ASSERT_RC(ctx_cancel_scope_error(scope), 0);
        } else {
            assert_true(rc <= -1000); /* a task's own code, not a sibling's ECANCELLED */
            ASSERT_RC(ctx_cancel_scope_cause(scope, &cause), CTX_ECANCELLED);
            assert_int_equal(cause.code, rc);
        }
        ctx_pool_group_release(race_group);
        seed += GROUP_THREADS;
    }
    assert_int_equal(off_main_failures(), 0);
    ASSERT_RC(ctx_pool_release(race_pool), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cancel_races_with_pickup, pool_teardown),
        cmocka_unit_test_teardown(test_group_first_failure_races, pool_teardown),
    };
    return cmocka_run_group_tests_name("pool: cancellation races", tests, NULL, NULL);
}
