/* SPDX-License-Identifier: MIT */
/*
 * test_race.c — 8 threads race cancels, registrations, clears, child
 * creation (some with deadlines that expire during the round) and
 * releases on one shared parent, round after round (run under TSan).
 *
 * Afterwards, for every registration: it ran at most once; clear said
 * STOPPED exactly when it never ran, RAN or RUNNING exactly when it ran
 * once.  Every child made before the parent's cancel returned reports
 * cancelled; no deadline is left in the timer; nothing leaks (ASan,
 * valgrind).
 */
#include "cancel_test.h"

#define THREADS 8
#define PER_THREAD 24

typedef struct reg {
    ctx_cancel_callback_t cb;
    atomic_int runs;
    int registered;
} reg_t;

typedef struct round {
    ctx_cancel_scope_t *parent;
    pthread_barrier_t start, cancelled;
    atomic_int failures;
    uint64_t seed;
} round_t;

typedef struct worker {
    round_t *round;
    int index;
    reg_t regs[2 * PER_THREAD];
    ctx_cancel_scope_t *kids[PER_THREAD];
} worker_t;

static void count_run(void *arg) { atomic_fetch_add(&((reg_t *)arg)->runs, 1); }

static void note_failure(round_t *r) { atomic_fetch_add(&r->failures, 1); }

/* Clears a registration and checks what clear says against what happened. */
static void check_clear(round_t *r, reg_t *g) {
    if (!g->registered)
        return;
    int st = ctx_cancel_callback_clear(&g->cb);
    int runs = atomic_load(&g->runs);
    if (st == CTX_CANCEL_CALLBACK_STOPPED ? runs != 0 : runs != 1)
        note_failure(r);
    g->registered = 0;
}

static void register_on(worker_t *w, int k, ctx_cancel_scope_t *scope, int wakeup) {
    reg_t *g = &w->regs[k];
    atomic_store(&g->runs, 0);
    int rc = wakeup ? ctx_cancel_callback_init_wakeup(&g->cb, scope, count_run, g)
                    : ctx_cancel_callback_init(&g->cb, scope, count_run, g);
    if (rc != 0 && rc != CTX_CANCEL_CALLBACK_RAN)
        note_failure(w->round);
    g->registered = 1;
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    round_t *r = w->round;
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, r->seed * 31 + (uint64_t)w->index + 1);
    pthread_barrier_wait(&r->start);
    for (int i = 0; i < PER_THREAD; i++) {
        ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
        uint64_t kind = ctx_test_rng_below(&rng, 4);
        if (kind == 0)
            o.timeout_ns = (int64_t)(ctx_test_rng_below(&rng, 3) + 1) * MS; /* expires now and then */
        else if (kind == 1)
            o.timeout_ns = 3600 * 1000 * MS;
        if (ctx_cancel_scope_new(r->parent, &o, &w->kids[i]) != 0) {
            note_failure(r);
            w->kids[i] = NULL;
            continue;
        }
        register_on(w, 2 * i, w->kids[i], (int)ctx_test_rng_below(&rng, 2));
        register_on(w, 2 * i + 1, r->parent, (int)ctx_test_rng_below(&rng, 2));
        switch (ctx_test_rng_below(&rng, 5)) {
        case 0:
            ctx_cancel_scope_cancel(w->kids[i], NULL);
            break;
        case 1:
            check_clear(r, &w->regs[2 * i]);
            break;
        case 2:
            check_clear(r, &w->regs[2 * i + 1]);
            break;
        case 3: /* a grandchild, dropped at once */
        {
            ctx_cancel_scope_t *g = NULL;
            if (ctx_cancel_scope_new(w->kids[i], NULL, &g) == 0)
                ctx_cancel_scope_release(g);
            break;
        }
        default:
            break;
        }
        if (w->index == 0 && i == PER_THREAD / 2)
            ctx_cancel_scope_cancel(r->parent, NULL);
        if (ctx_test_rng_below(&rng, 4) == 0) { /* released early, maybe while registered */
            check_clear(r, &w->regs[2 * i]);
            ctx_cancel_scope_release(w->kids[i]);
            w->kids[i] = NULL;
        }
    }
    pthread_barrier_wait(&r->cancelled); /* thread 0's cancel has returned */
    for (int i = 0; i < PER_THREAD; i++)
        if (w->kids[i] && ctx_cancel_scope_error(w->kids[i]) == 0)
            note_failure(r);
    for (int k = 0; k < 2 * PER_THREAD; k++)
        check_clear(r, &w->regs[k]);
    for (int i = 0; i < PER_THREAD; i++)
        ctx_cancel_scope_release(w->kids[i]);
    ctx_thread_release();
    return NULL;
}

static void test_cancel_races(void **state) {
    (void)state;
    const int rounds = CTX_SCALED(300, 15, 40);
    uint64_t seed = ctx_test_seed(0xace);
    print_message("seed %llu (CTX_TEST_SEED)\n", (unsigned long long)seed);
    static worker_t workers[THREADS];
    ctx_test_alloc_install();
    long base = ctx_test_alloc_live_blocks();
    for (int n = 0; n < rounds; n++) {
        round_t r = {.seed = seed + (uint64_t)n};
        atomic_init(&r.failures, 0);
        r.parent = new_scope(NULL, NULL);
        pthread_barrier_init(&r.start, NULL, THREADS);
        pthread_barrier_init(&r.cancelled, NULL, THREADS);
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++) {
            memset(&workers[i], 0, sizeof workers[i]);
            workers[i].round = &r;
            workers[i].index = i;
            assert_int_equal(pthread_create(&th[i], NULL, worker_main, &workers[i]), 0);
        }
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        pthread_barrier_destroy(&r.start);
        pthread_barrier_destroy(&r.cancelled);
        ASSERT_RC(ctx_cancel_scope_error(r.parent), CTX_ECANCELLED);
        ctx_cancel_scope_release(r.parent);
        if (atomic_load(&r.failures))
            fail_msg("round %d: %d failures (seed %llu)", n, atomic_load(&r.failures),
                     (unsigned long long)seed);
        assert_int_equal(timers_pending(), 0);
    }
    ASSERT_RC(ctx_cancel_timer_release(), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base);
    ctx_test_alloc_uninstall();
}

/* Many threads cancel the same scope at once, each with a cause: exactly
 * one wins, its cause is the one read back, the others keep theirs. */
typedef struct contender {
    ctx_cancel_scope_t *scope;
    pthread_barrier_t *go;
    counted_t data;
    int rc;
} contender_t;

static void *contend(void *arg) {
    contender_t *c = arg;
    ctx_cancel_cause_t cause = cause_of(c->data.id, &c->data);
    pthread_barrier_wait(c->go);
    c->rc = ctx_cancel_scope_cancel(c->scope, &cause);
    ctx_thread_release();
    return NULL;
}

static void test_concurrent_cancels_one_winner(void **state) {
    (void)state;
    const int rounds = CTX_SCALED(200, 10, 30);
    for (int n = 0; n < rounds; n++) {
        ctx_cancel_scope_t *s = new_scope(NULL, NULL);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, THREADS);
        contender_t c[THREADS];
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++) {
            c[i] = (contender_t){.scope = s, .go = &go};
            atomic_init(&c[i].data.released, 0);
            c[i].data.id = i + 1;
            assert_int_equal(pthread_create(&th[i], NULL, contend, &c[i]), 0);
        }
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        pthread_barrier_destroy(&go);
        int winner = -1;
        for (int i = 0; i < THREADS; i++) {
            if (c[i].rc == 0) {
                assert_int_equal(winner, -1);
                winner = i;
            } else {
                ASSERT_RC(c[i].rc, CTX_CANCEL_ALREADY);
            }
        }
        assert_true(winner >= 0);
        ctx_cancel_cause_t got = cause_of(0, NULL);
        ASSERT_RC(ctx_cancel_scope_cause(s, &got), CTX_ECANCELLED);
        assert_int_equal(got.code, winner + 1);
        ctx_cancel_scope_release(s);
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(atomic_load(&c[i].data.released), i == winner);
    }
}

static int teardown(void **state) {
    (void)state;
    cancel_teardown();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_races),
        cmocka_unit_test(test_concurrent_cancels_one_winner),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
