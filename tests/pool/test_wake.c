/* SPDX-License-Identifier: MIT */
/*
 * test_wake.c — which parked worker a submit wakes (src/pool/queue.c,
 * "Sleeping and waking"): among the parked workers it looks at, the one
 * that parked on the submitting thread's processor.
 *
 * Two workers are pinned, one to each of two processors c0 and c1 (each
 * pins itself from a task), so where a task runs says which worker ran it.
 * Each attempt parks the c0 worker first and the c1 worker last, pins this
 * thread to c0, and submits a task that reports its processor.  The worker
 * that parked last is the c1 one, so waking the newest parked worker (the
 * policy before this one) runs the task on c1 every time; the pool must run
 * it on c0.  Parking is not observable, so each step waits for the worker
 * to finish polling and park (50 ms, longer at each new attempt); an
 * attempt where that was not enough (the c1 worker, still polling, takes
 * the task) is retried, up to 8 times: the old policy fails all 8.
 * A second test checks that the look is bounded to the 4 newest parked
 * workers and otherwise wakes the newest (6 workers, the one on c0 parked
 * first).  Both are skipped with fewer than two processors, or without
 * sched_getcpu.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "pool_test.h"

typedef struct hold {
    gate_t gate;
    int pin; /* the processor to pin the worker to, or -1 */
    atomic_int cpu;
    pthread_t thread; /* the worker that ran it (read after its future ended) */
} hold_t;

static int pin_self(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Pins the worker (if asked), notes its processor, waits at the gate. */
static int hold_task(void *arg, void **result) {
    hold_t *h = arg;
    (void)result;
    if (h->pin >= 0)
        OFF_MAIN_CHECK(pin_self(h->pin) == 0);
    atomic_store(&h->cpu, sched_getcpu());
    h->thread = pthread_self();
    gate_pass(&h->gate);
    return 0;
}

static int where_task(void *arg, void **result) {
    (void)arg;
    *result = (void *)(intptr_t)sched_getcpu();
    return 0;
}

static int who_task(void *arg, void **result) {
    *(pthread_t *)arg = pthread_self();
    *result = NULL;
    return 0;
}

static void nap_ms(long ms) {
    struct timespec t = {0, ms * 1000000L};
    nanosleep(&t, NULL);
}

/* Holds both workers (pinning them to c0 and c1 if pin), then lets the one
 * on `first` finish and park, then the other. */
static void park_in_order(ctx_pool_t *pool, int c0, int c1, int pin, int first, long nap) {
    hold_t h[2];
    ctx_pool_future_t *f[2];
    for (int i = 0; i < 2; i++) {
        gate_init(&h[i].gate);
        h[i].pin = pin ? (i == 0 ? c0 : c1) : -1;
        atomic_init(&h[i].cpu, -1);
    }
    /* Each holds a worker until its gate opens, so the two run on two
     * different workers. */
    for (int i = 0; i < 2; i++) {
        ASSERT_RC(ctx_pool_submit(pool, hold_task, &h[i], &f[i]), 0);
        gate_await_arrivals(&h[i].gate, 1);
    }
    int order[2] = {atomic_load(&h[0].cpu) == first ? 0 : 1, 0};
    order[1] = 1 - order[0];
    for (int k = 0; k < 2; k++) {
        int i = order[k];
        gate_open(&h[i].gate);
        ASSERT_RC(ctx_pool_future_wait(f[i], CTX_WAIT_FOREVER), 0);
        ctx_pool_future_release(f[i]);
        nap_ms(nap); /* polls for microseconds, then parks */
    }
    for (int i = 0; i < 2; i++)
        gate_destroy(&h[i].gate);
}

/* The thread's affinity in *mine and its first two processors in c[]: 1,
 * or 0 if there are fewer than two or sched_getcpu does not work. */
static int two_processors(cpu_set_t *mine, int c[2]) {
    assert_int_equal(sched_getaffinity(0, sizeof *mine, mine), 0);
    int n = 0;
    for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
        if (CPU_ISSET(i, mine))
            c[n++] = i;
    return n == 2 && sched_getcpu() >= 0;
}

static void test_wakes_the_worker_parked_on_this_processor(void **state) {
    (void)state;
    cpu_set_t mine;
    int c[2];
    if (!two_processors(&mine, c))
        skip();

    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    park_in_order(pool, c[0], c[1], 1, c[0], 50); /* pins the workers */

    int ran_on = -1;
    for (int attempt = 0; attempt < 8 && ran_on != c[0]; attempt++) {
        long nap = 50 * (attempt + 1);
        park_in_order(pool, c[0], c[1], 0, c[0], nap); /* c1's worker parks last */
        assert_int_equal(pin_self(c[0]), 0);
        ctx_pool_future_t *f = NULL;
        ASSERT_RC(ctx_pool_submit(pool, where_task, NULL, &f), 0);
        ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
        void *r = NULL;
        ASSERT_RC(ctx_pool_future_result(f, &r), 0);
        ctx_pool_future_release(f);
        ran_on = (int)(intptr_t)r;
        assert_int_equal(sched_setaffinity(0, sizeof mine, &mine), 0);
    }
    assert_int_equal(ran_on, c[0]);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(off_main_failures(), 0);
}

/* The look is bounded: with the 4 newest parked workers all elsewhere, the
 * newest is woken, not the first match further down (nor the 5th, which a
 * look that stopped at its bound once left in hand).  6 workers: one pinned
 * to c0, parked first (the oldest); five pinned to c1, parked after it in
 * order.  A submit from c0 must wake the newest of the five. */
static void test_looks_at_the_newest_four_only(void **state) {
    (void)state;
    cpu_set_t mine;
    int c[2];
    if (!two_processors(&mine, c))
        skip();
    enum { WORKERS = 6 };
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = WORKERS;
    ctx_pool_t *pool = NULL;
    ASSERT_RC(ctx_pool_new(&po, &pool), 0);
    /* A worker still polling when the submit comes takes the task itself:
     * that attempt proves nothing, and is made again (up to 3 times; the
     * bounded-look bug fails every one). */
    int newest_ran = 0;
    for (int attempt = 0; attempt < 3 && !newest_ran; attempt++) {
        hold_t h[WORKERS];
        ctx_pool_future_t *f[WORKERS];
        for (int i = 0; i < WORKERS; i++) { /* one task per worker, held */
            gate_init(&h[i].gate);
            h[i].pin = i == 0 ? c[0] : c[1];
            atomic_init(&h[i].cpu, -1);
            ASSERT_RC(ctx_pool_submit(pool, hold_task, &h[i], &f[i]), 0);
            gate_await_arrivals(&h[i].gate, 1);
        }
        for (int i = 0; i < WORKERS; i++) { /* parked in this order */
            gate_open(&h[i].gate);
            ASSERT_RC(ctx_pool_future_wait(f[i], CTX_WAIT_FOREVER), 0);
            ctx_pool_future_release(f[i]);
            nap_ms(50 * (attempt + 1));
        }
        assert_int_equal(pin_self(c[0]), 0);
        pthread_t ran = pthread_self();
        ctx_pool_future_t *g = NULL;
        ASSERT_RC(ctx_pool_submit(pool, who_task, &ran, &g), 0);
        ASSERT_RC(ctx_pool_future_wait(g, CTX_WAIT_FOREVER), 0);
        ctx_pool_future_release(g);
        assert_int_equal(sched_setaffinity(0, sizeof mine, &mine), 0);
        newest_ran = pthread_equal(ran, h[WORKERS - 1].thread);
        for (int i = 0; i < WORKERS; i++)
            gate_destroy(&h[i].gate);
    }
    assert_true(newest_ran);
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_int_equal(off_main_failures(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wakes_the_worker_parked_on_this_processor, pool_teardown),
        cmocka_unit_test_teardown(test_looks_at_the_newest_four_only, pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
