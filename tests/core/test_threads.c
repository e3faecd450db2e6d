/* SPDX-License-Identifier: MIT */
/*
 * test_threads.c — the core across threads: a new thread starts in an empty
 * context; threads are isolated; tokens are bound to their context; a
 * context entered in one thread cannot be entered (nor set) in another but
 * can be read and copied there, and can be handed over once it exits; a
 * thread's context and values are released when it exits (1000 short-lived
 * threads); and an 8-thread stress test over shared snapshots, a context
 * held entered by one thread, and a context contended by all.
 *
 * Worker threads check with TCHECK (thread_checks.h).  Iterations are scaled down under valgrind and TSan.
 */
#include "core_test.h"
#include "thread_checks.h"

#include <pthread.h>
#include <sched.h>

static void start(pthread_t *t, void *(*fn)(void *), void *arg) {
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0)
        fail_msg("pthread_create: %d", rc);
}

/* ---- heap values with an atomic release count ---- */

static atomic_long heap_sets;
static atomic_long heap_releases;

static void heap_release(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&heap_releases, 1);
    free(value);
}

static const ctx_value_ops_t heap_ops = {.size = sizeof(ctx_value_ops_t),.release = heap_release};

static void *heap_value(int n) {
    int *p = malloc(sizeof *p);
    if (p)
        *p = n;
    return p;
}

/* Sets a fresh heap value (counted). */
static int heap_set(ctx_var_t *var, int n, ctx_token_t **token) {
    void *v = heap_value(n);
    int rc = ctx_var_set(var, v, token);
    if (rc == 0)
        atomic_fetch_add(&heap_sets, 1);
    else
        free(v);
    return rc;
}

/* ---- a new thread starts empty ---- */

typedef struct fresh {
    ctx_var_t *a, *b;
    void *b_default;
    void *a_mine;
} fresh_t;

static void *fresh_thread(void *arg) {
    fresh_t *f = arg;
    void *out = NULL;
    TCHECK(ctx_var_get(f->a, &out) == CTX_ENOTFOUND);
    TCHECK(ctx_var_get(f->b, &out) == CTX_DEFAULT && out == f->b_default);
    ctx_context_t *copy = NULL;
    TCHECK(ctx_context_copy_current(&copy) == 0);
    TCHECK(ctx_context_length(copy) == 0);
    ctx_context_release(copy);
    char buf[32] = "junk";
    size_t len = 9;
    TCHECK(ctx_context_format_current(buf, sizeof buf, &len) == 0 && len == 0 &&
           buf[0] == '\0');
    TCHECK(ctx_var_set(f->a, f->a_mine, NULL) == 0);
    TCHECK(ctx_var_get(f->a, &out) == CTX_VALUE && out == f->a_mine);
    return NULL;
}

static void test_new_thread_starts_empty(void **state) {
    (void)state;
    reset_failures();
    static int main_a, def, thread_a;
    ctx_var_t *a = make_var("a", NULL, 0, NULL);
    ctx_var_t *b = make_var("b", &def, 1, NULL);
    ASSERT_RC(ctx_var_set(a, &main_a, NULL), 0);
    ASSERT_RC(ctx_var_set(b, &main_a, NULL), 0);
    fresh_t f = {a, b, &def, &thread_a};
    pthread_t t;
    start(&t, fresh_thread, &f);
    pthread_join(t, NULL);
    assert_no_thread_failures();
    EXPECT_GET(a, CTX_VALUE, &main_a);
    EXPECT_GET(b, CTX_VALUE, &main_a);
    ctx_var_release(a);
    ctx_var_release(b);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- isolation under concurrency ---- */

enum { ISO_THREADS = 4 };

typedef struct iso {
    ctx_var_t *var;
    int id;
    long iterations;
    pthread_barrier_t *barrier;
} iso_t;

static void *iso_thread(void *arg) {
    iso_t *t = arg;
    static int marks[ISO_THREADS][2];
    pthread_barrier_wait(t->barrier);
    for (long i = 0; i < t->iterations; i++) {
        void *mine = &marks[t->id][i & 1];
        ctx_token_t *tok = NULL;
        TCHECK(ctx_var_set(t->var, mine, &tok) == 0);
        void *out = NULL;
        TCHECK(ctx_var_get(t->var, &out) == CTX_VALUE && out == mine);
        ctx_context_t *copy = NULL;
        TCHECK(ctx_context_copy_current(&copy) == 0);
        void *seen = NULL;
        TCHECK(ctx_context_get(copy, t->var, &seen) == 0 && seen == mine);
        ctx_context_release(copy);
        TCHECK(ctx_var_reset(t->var, tok) == 0);
        ctx_token_release(tok);
        TCHECK(ctx_var_get(t->var, &out) == CTX_ENOTFOUND);
    }
    return NULL;
}

static void test_threads_isolated(void **state) {
    (void)state;
    reset_failures();
    static int main_value;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, &main_value, NULL), 0);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, ISO_THREADS);
    iso_t t[ISO_THREADS];
    pthread_t th[ISO_THREADS];
    long n = test_scale("CTX_TEST_ITERATIONS", 20000, 20);
    for (int i = 0; i < ISO_THREADS; i++) {
        t[i] = (iso_t){var, i, n, &barrier};
        start(&th[i], iso_thread, &t[i]);
    }
    for (int i = 0; i < ISO_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    assert_no_thread_failures();
    EXPECT_GET(var, CTX_VALUE, &main_value);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- tokens are bound to their context ---- */

typedef struct tok_arg {
    ctx_var_t *var;
    ctx_token_t *foreign; /* made in the main thread */
    ctx_token_t *made;    /* made here, for the main thread to try */
    int foreign_rc;
    int foreign_used;
} tok_arg_t;

static void *token_thread(void *arg) {
    tok_arg_t *t = arg;
    static int here;
    t->foreign_rc = ctx_var_reset(t->var, t->foreign);
    t->foreign_used = ctx_token_used(t->foreign);
    TCHECK(ctx_var_set(t->var, &here, &t->made) == 0);
    return NULL;
}

static void test_token_other_thread(void **state) {
    (void)state;
    reset_failures();
    static int one;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    tok_arg_t t = {var, NULL, NULL, 0, -1};
    ASSERT_RC(ctx_var_set(var, &one, &t.foreign), 0);
    pthread_t th;
    start(&th, token_thread, &t);
    pthread_join(th, NULL);
    assert_no_thread_failures();
    ASSERT_RC(t.foreign_rc, CTX_ETOKENCTX);
    assert_int_equal(t.foreign_used, 0);
    /* The thread's token: its context died with the thread. */
    ASSERT_RC(ctx_var_reset(var, t.made), CTX_ETOKENCTX);
    EXPECT_GET(var, CTX_VALUE, &one);
    ASSERT_RC(ctx_var_reset(var, t.foreign), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL);
    ctx_token_release(t.foreign);
    ctx_token_release(t.made);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- a context entered in another thread ---- */

typedef struct other {
    ctx_context_t *ctx;
    ctx_var_t *var;
    void *expect; /* the value the context holds */
    void *set_to; /* for the hand-over thread */
    int fn_calls;
} other_t;

static void *count_fn(void *arg) {
    ((other_t *)arg)->fn_calls++;
    return NULL;
}

static void *probe_entered_elsewhere(void *arg) {
    other_t *o = arg;
    static int mine;
    TCHECK(ctx_context_is_entered(o->ctx) == 1);
    TCHECK(ctx_context_enter(o->ctx) == CTX_EENTERED);
    TCHECK(ctx_context_exit(o->ctx) == CTX_ENOTCURRENT);
    TCHECK(ctx_context_set(o->ctx, o->var, &mine) == CTX_EENTERED);
    TCHECK(ctx_context_run(o->ctx, count_fn, o, NULL) == CTX_EENTERED);
    TCHECK(o->fn_calls == 0);
    void *out = NULL;
    TCHECK(ctx_context_get(o->ctx, o->var, &out) == 0 && out == o->expect);
    ctx_context_t *copy = NULL;
    TCHECK(ctx_context_copy(o->ctx, &copy) == 0);
    TCHECK(ctx_context_get(copy, o->var, &out) == 0 && out == o->expect);
    /* The copy is this thread's to enter. */
    TCHECK(ctx_context_enter(copy) == 0);
    TCHECK(ctx_var_get(o->var, &out) == CTX_VALUE && out == o->expect);
    TCHECK(ctx_var_set(o->var, &mine, NULL) == 0);
    TCHECK(ctx_context_exit(copy) == 0);
    ctx_context_release(copy);
    /* This thread's own context is untouched by all that. */
    TCHECK(ctx_var_get(o->var, &out) == CTX_ENOTFOUND);
    return NULL;
}

static void *take_over(void *arg) {
    other_t *o = arg;
    void *out = NULL;
    TCHECK(ctx_context_enter(o->ctx) == 0);
    TCHECK(ctx_var_get(o->var, &out) == CTX_VALUE && out == o->expect);
    TCHECK(ctx_var_set(o->var, o->set_to, NULL) == 0);
    TCHECK(ctx_context_exit(o->ctx) == 0);
    return NULL;
}

static void test_context_entered_in_other_thread(void **state) {
    (void)state;
    reset_failures();
    static int in_x, handed;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_context_t *x;
    ASSERT_RC(ctx_context_new(&x), 0);
    ASSERT_RC(ctx_context_enter(x), 0);
    ASSERT_RC(ctx_var_set(var, &in_x, NULL), 0);
    other_t o = {x, var, &in_x, &handed, 0};
    pthread_t th;
    start(&th, probe_entered_elsewhere, &o);
    pthread_join(th, NULL);
    assert_no_thread_failures();
    /* Nothing the other thread did reached x. */
    EXPECT_GET(var, CTX_VALUE, &in_x);
    ASSERT_RC(ctx_context_exit(x), 0);

    /* Exited here, it can be entered there. */
    start(&th, take_over, &o);
    pthread_join(th, NULL);
    assert_no_thread_failures();
    EXPECT_CTX_GET(x, var, 0, &handed);
    assert_int_equal(ctx_context_is_entered(x), 0);
    ASSERT_RC(ctx_context_enter(x), 0);
    EXPECT_GET(var, CTX_VALUE, &handed);
    ASSERT_RC(ctx_context_exit(x), 0);

    ctx_context_release(x);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* A thread that ends with a context still entered: the exit releases the
 * thread's state, so the context is no longer entered and keeps what the
 * thread set in it. */
static void *enter_and_end(void *arg) {
    other_t *o = arg;
    TCHECK(ctx_context_enter(o->ctx) == 0);
    TCHECK(ctx_var_set(o->var, o->set_to, NULL) == 0);
    return NULL;
}

static void test_thread_ends_inside_context(void **state) {
    (void)state;
    reset_failures();
    static int left;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_context_t *x;
    ASSERT_RC(ctx_context_new(&x), 0);
    other_t o = {x, var, NULL, &left, 0};
    pthread_t th;
    start(&th, enter_and_end, &o);
    pthread_join(th, NULL);
    assert_no_thread_failures();
    assert_int_equal(ctx_context_is_entered(x), 0);
    EXPECT_CTX_GET(x, var, 0, &left);
    ASSERT_RC(ctx_context_enter(x), 0);
    EXPECT_GET(var, CTX_VALUE, &left);
    ASSERT_RC(ctx_context_exit(x), 0);
    ctx_context_release(x);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- thread exit releases the thread's context ---- */

enum { SHORT_BATCH = 8 };

typedef struct short_arg {
    ctx_var_t *var;
    ctx_var_t *other;
    int id;
    ctx_context_t *handed; /* a context this thread gives to main */
} short_arg_t;

static void *short_thread(void *arg) {
    short_arg_t *s = arg;
    switch (s->id % 4) {
    case 0: { /* only reads: no state needed */
        void *out;
        TCHECK(ctx_var_get(s->var, &out) == CTX_ENOTFOUND);
        break;
    }
    case 1: /* sets, some with tokens, leaves them in its context */
        for (int i = 0; i < 5; i++) {
            ctx_token_t *tok = NULL;
            TCHECK(heap_set(s->var, i, i % 2 ? &tok : NULL) == 0);
            ctx_token_release(tok);
        }
        TCHECK(heap_set(s->other, 0, NULL) == 0);
        break;
    case 2: { /* sets, resets, and hands a copy to main */
        ctx_token_t *tok = NULL;
        TCHECK(heap_set(s->var, 1, NULL) == 0);
        TCHECK(heap_set(s->var, 2, &tok) == 0);
        TCHECK(ctx_context_copy_current(&s->handed) == 0);
        TCHECK(ctx_var_reset(s->var, tok) == 0);
        ctx_token_release(tok);
        break;
    }
    case 3: { /* runs a context of its own and drops it */
        ctx_context_t *c = NULL;
        TCHECK(ctx_context_new(&c) == 0);
        TCHECK(ctx_context_enter(c) == 0);
        TCHECK(heap_set(s->var, 3, NULL) == 0);
        TCHECK(ctx_context_exit(c) == 0);
        ctx_context_release(c);
        TCHECK(heap_set(s->other, 4, NULL) == 0);
        break;
    }
    }
    return NULL;
}

static void test_many_short_threads(void **state) {
    (void)state;
    reset_failures();
    atomic_store(&heap_sets, 0);
    atomic_store(&heap_releases, 0);
    ctx_var_t *var = make_var("v", NULL, 0, &heap_ops);
    ctx_var_t *other = make_var("o", NULL, 0, &heap_ops);
    long n = test_scale("CTX_TEST_THREADS", 1000, 10);
    short_arg_t *args = calloc((size_t)n, sizeof *args);
    assert_non_null(args);
    for (long base = 0; base < n; base += SHORT_BATCH) {
        pthread_t th[SHORT_BATCH];
        long k = n - base < SHORT_BATCH ? n - base : SHORT_BATCH;
        for (long i = 0; i < k; i++) {
            args[base + i] = (short_arg_t){var, other, (int)(base + i), NULL};
            start(&th[i], short_thread, &args[base + i]);
        }
        for (long i = 0; i < k; i++)
            pthread_join(th[i], NULL);
    }
    assert_no_thread_failures();
    /* Every thread's context is gone; only the handed copies hold values
     * (one each: the value 2). */
    long handed = 0;
    for (long i = 0; i < n; i++)
        if (args[i].handed) {
            void *out = NULL;
            ASSERT_RC(ctx_context_get(args[i].handed, var, &out), 0);
            assert_int_equal(*(int *)out, 2);
            handed++;
        }
    assert_int_equal(handed, (n + 1) / 4);
    assert_int_equal(atomic_load(&heap_releases),
                     atomic_load(&heap_sets) - handed);
    for (long i = 0; i < n; i++)
        ctx_context_release(args[i].handed);
    assert_int_equal(atomic_load(&heap_releases), atomic_load(&heap_sets));
    free(args);
    ctx_var_release(var);
    ctx_var_release(other);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* A variable dropped by main while threads hold its values: its default goes
 * with the last thread. */
typedef struct hold {
    ctx_var_t *var;
    pthread_barrier_t *set_done;
    pthread_barrier_t *may_exit;
} hold_t;

static void *hold_thread(void *arg) {
    hold_t *h = arg;
    TCHECK(heap_set(h->var, 7, NULL) == 0);
    pthread_barrier_wait(h->set_done);
    pthread_barrier_wait(h->may_exit);
    void *out = NULL;
    TCHECK(ctx_var_get(h->var, &out) == CTX_VALUE && *(int *)out == 7);
    return NULL;
}

static void test_var_outlives_caller_in_threads(void **state) {
    (void)state;
    reset_failures();
    val_counters_reset();
    atomic_store(&heap_sets, 0);
    atomic_store(&heap_releases, 0);
    /* The default is a heap value too, so its release is counted. */
    void *heap_def = heap_value(-1);
    ctx_var_options_t options = {.size = sizeof(ctx_var_options_t), .default_value = heap_def, .has_default = 1, .ops = &heap_ops};
    ctx_var_t *var = NULL;
    ASSERT_RC(ctx_var_new("held", &options, &var), 0);
    pthread_barrier_t set_done, may_exit;
    pthread_barrier_init(&set_done, NULL, 3);
    pthread_barrier_init(&may_exit, NULL, 3);
    hold_t h = {var, &set_done, &may_exit};
    pthread_t th[2];
    start(&th[0], hold_thread, &h);
    start(&th[1], hold_thread, &h);
    pthread_barrier_wait(&set_done);
    ctx_var_release(var); /* main's reference */
    assert_int_equal(atomic_load(&heap_releases), 0);
    pthread_barrier_wait(&may_exit);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    pthread_barrier_destroy(&set_done);
    pthread_barrier_destroy(&may_exit);
    assert_no_thread_failures();
    /* Two values and the default. */
    assert_int_equal(atomic_load(&heap_releases), 3);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* ---- stress ---- */

enum { STRESS_THREADS = 8, SNAPSHOTS = 4, OWNER_VALUES = 16 };

typedef struct stress {
    ctx_var_t *a, *b, *d;
    ctx_context_t *snap[SNAPSHOTS];
    int sa[SNAPSHOTS], sb[SNAPSHOTS];
    ctx_context_t *held;  /* entered by the owner for the whole run */
    int held_initial;
    int owner_values[OWNER_VALUES];
    ctx_context_t *contested; /* entered by anyone, one at a time */
    atomic_int inside_contested;
    atomic_uintptr_t contested_last; /* value last set in `contested` */
    atomic_long contested_entries;
    atomic_long contested_refusals;
    atomic_long contested_sets; /* ctx_context_set calls that succeeded */
    int mine[STRESS_THREADS];
    long iterations;
    pthread_barrier_t barrier;
    atomic_int owner_ready;
} stress_t;

typedef struct worker {
    stress_t *s;
    int id;
    int snap;
} worker_t;

static int is_owner_value(stress_t *s, void *p) {
    if (p == &s->held_initial)
        return 1;
    for (int i = 0; i < OWNER_VALUES; i++)
        if (p == &s->owner_values[i])
            return 1;
    return 0;
}

static void *in_snapshot_copy(void *arg) {
    worker_t *w = arg;
    stress_t *s = w->s;
    int i = w->snap;
    void *out = NULL;
    TCHECK(ctx_var_get(s->a, &out) == CTX_VALUE && out == &s->sa[i]);
    TCHECK(ctx_var_get(s->b, &out) == CTX_VALUE && out == &s->sb[i]);
    TCHECK(ctx_var_set(s->a, &s->mine[w->id], NULL) == 0);
    TCHECK(ctx_var_get(s->a, &out) == CTX_VALUE && out == &s->mine[w->id]);
    ctx_token_t *tok = NULL;
    TCHECK(ctx_var_set(s->b, &s->mine[w->id], &tok) == 0);
    TCHECK(heap_set(s->d, w->id, NULL) == 0);
    ctx_context_t *inner = NULL;
    TCHECK(ctx_context_copy_current(&inner) == 0);
    TCHECK(ctx_context_get(inner, s->b, &out) == 0 && out == &s->mine[w->id]);
    ctx_context_release(inner);
    TCHECK(ctx_var_reset(s->b, tok) == 0);
    ctx_token_release(tok);
    TCHECK(ctx_var_get(s->b, &out) == CTX_VALUE && out == &s->sb[i]);
    return w;
}

static void check_snapshot(stress_t *s, int i) {
    void *out = NULL;
    TCHECK(ctx_context_get(s->snap[i], s->a, &out) == 0 && out == &s->sa[i]);
    TCHECK(ctx_context_get(s->snap[i], s->b, &out) == 0 && out == &s->sb[i]);
    TCHECK(ctx_context_length(s->snap[i]) == 2);
    ctx_iter_t it;
    TCHECK(ctx_iter_init(&it, s->snap[i]) == 0);
    ctx_var_t *k;
    void *v;
    int n = 0;
    while (ctx_iter_next(&it, &k, &v)) {
        n++;
        TCHECK((k == s->a && v == &s->sa[i]) || (k == s->b && v == &s->sb[i]));
    }
    ctx_iter_clear(&it);
    TCHECK(n == 2);
    char buf[256];
    size_t len = 0;
    TCHECK(ctx_context_format(s->snap[i], buf, sizeof buf, &len) == 0);
    TCHECK(strstr(buf, "a=") != NULL && strstr(buf, "b=") != NULL);
}

static void probe_held(stress_t *s, int id) {
    static int nope;
    void *out = NULL;
    TCHECK(ctx_context_is_entered(s->held) == 1);
    TCHECK(ctx_context_enter(s->held) == CTX_EENTERED);
    TCHECK(ctx_context_exit(s->held) == CTX_ENOTCURRENT);
    TCHECK(ctx_context_set(s->held, s->a, &nope) == CTX_EENTERED);
    TCHECK(ctx_context_get(s->held, s->a, &out) == 0 && is_owner_value(s, out));
    ctx_context_t *copy = NULL;
    TCHECK(ctx_context_copy(s->held, &copy) == 0);
    TCHECK(ctx_context_get(copy, s->a, &out) == 0 && is_owner_value(s, out));
    /* The copy is private: enter it, change it, drop it. */
    TCHECK(ctx_context_enter(copy) == 0);
    TCHECK(ctx_var_set(s->a, &s->mine[id], NULL) == 0);
    TCHECK(ctx_context_exit(copy) == 0);
    ctx_context_release(copy);
}

static void try_contested(stress_t *s, int id) {
    int rc = ctx_context_enter(s->contested);
    if (rc == CTX_EENTERED) {
        atomic_fetch_add(&s->contested_refusals, 1);
        /* ctx_context_set races with the enters: it must either succeed
         * while no one is inside or fail with CTX_EENTERED. */
        rc = ctx_context_set(s->contested, s->b, &s->mine[id]);
        TCHECK(rc == 0 || rc == CTX_EENTERED);
        if (rc == 0)
            atomic_fetch_add(&s->contested_sets, 1);
        return;
    }
    TCHECK(rc == 0);
    if (rc != 0)
        return;
    TCHECK(atomic_exchange(&s->inside_contested, 1) == 0);
    void *out = NULL;
    void *b_before = NULL, *b_after = NULL;
    int b_rc = ctx_var_get(s->b, &b_before);
    void *last = (void *)atomic_load(&s->contested_last);
    if (last)
        TCHECK(ctx_var_get(s->a, &out) == CTX_VALUE && out == last);
    else
        TCHECK(ctx_var_get(s->a, &out) == CTX_ENOTFOUND);
    TCHECK(ctx_var_set(s->a, &s->mine[id], NULL) == 0);
    atomic_store(&s->contested_last, (uintptr_t)&s->mine[id]);
    for (int k = 0; k < 8; k++) {
        sched_yield();
        /* No ctx_context_set may land while the context is entered. */
        TCHECK(ctx_var_get(s->b, &b_after) == b_rc && b_after == b_before);
    }
    atomic_fetch_add(&s->contested_entries, 1);
    atomic_store(&s->inside_contested, 0);
    TCHECK(ctx_context_exit(s->contested) == 0);
}

static void *stress_thread(void *arg) {
    worker_t *w = arg;
    stress_t *s = w->s;
    int owner = w->id == 0;
    if (owner) {
        TCHECK(ctx_context_enter(s->held) == 0);
        atomic_store(&s->owner_ready, 1);
    }
    pthread_barrier_wait(&s->barrier);
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, ctx_test_seed(0x57e55) + (uint64_t)w->id);
    for (long it = 0; it < s->iterations; it++) {
        int i = (int)ctx_test_rng_below(&rng, SNAPSHOTS);
        /* A copy of a shared snapshot, run into. */
        ctx_context_t *c = NULL;
        TCHECK(ctx_context_copy(s->snap[i], &c) == 0);
        worker_t local = {s, w->id, i};
        void *result = NULL;
        TCHECK(ctx_context_run(c, in_snapshot_copy, &local, &result) == 0);
        TCHECK(result == &local);
        void *out = NULL;
        TCHECK(ctx_context_get(c, s->a, &out) == 0 && out == &s->mine[w->id]);
        TCHECK(ctx_context_get(c, s->b, &out) == 0 && out == &s->sb[i]);
        ctx_context_release(c);
        /* The shared snapshots, read concurrently. */
        check_snapshot(s, (int)ctx_test_rng_below(&rng, SNAPSHOTS));
        /* The thread's own current context (the held one, for the owner). */
        if (owner) {
            int k = (int)ctx_test_rng_below(&rng, OWNER_VALUES);
            TCHECK(ctx_var_set(s->a, &s->owner_values[k], NULL) == 0);
            TCHECK(ctx_var_get(s->a, &out) == CTX_VALUE &&
                   out == &s->owner_values[k]);
        } else {
            TCHECK(ctx_var_set(s->a, &s->mine[w->id], NULL) == 0);
            TCHECK(ctx_var_get(s->a, &out) == CTX_VALUE &&
                   out == &s->mine[w->id]);
            probe_held(s, w->id);
        }
        try_contested(s, w->id);
    }
    pthread_barrier_wait(&s->barrier);
    if (owner)
        TCHECK(ctx_context_exit(s->held) == 0);
    return NULL;
}

static void test_stress(void **state) {
    (void)state;
    reset_failures();
    atomic_store(&heap_sets, 0);
    atomic_store(&heap_releases, 0);
    stress_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->a = make_var("a", NULL, 0, NULL);
    s->b = make_var("b", NULL, 0, NULL);
    s->d = make_var("d", NULL, 0, &heap_ops);
    for (int i = 0; i < SNAPSHOTS; i++) {
        ASSERT_RC(ctx_context_new(&s->snap[i]), 0);
        ASSERT_RC(ctx_context_set(s->snap[i], s->a, &s->sa[i]), 0);
        ASSERT_RC(ctx_context_set(s->snap[i], s->b, &s->sb[i]), 0);
    }
    ASSERT_RC(ctx_context_new(&s->held), 0);
    ASSERT_RC(ctx_context_set(s->held, s->a, &s->held_initial), 0);
    ASSERT_RC(ctx_context_new(&s->contested), 0);
    s->iterations = test_scale("CTX_TEST_ITERATIONS", 3000, 5);
    pthread_barrier_init(&s->barrier, NULL, STRESS_THREADS);
    pthread_t th[STRESS_THREADS];
    worker_t w[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        w[i] = (worker_t){s, i, 0};
        start(&th[i], stress_thread, &w[i]);
    }
    for (int i = 0; i < STRESS_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&s->barrier);
    assert_no_thread_failures();

    /* Snapshots unchanged; every contested entry was exclusive and counted;
     * the held context kept the owner's last value. */
    for (int i = 0; i < SNAPSHOTS; i++) {
        EXPECT_CTX_GET(s->snap[i], s->a, 0, &s->sa[i]);
        EXPECT_CTX_GET(s->snap[i], s->b, 0, &s->sb[i]);
    }
    printf("stress: %d threads x %ld iterations; contested context entered "
           "%ld times, refused %ld times; ctx_context_set on it succeeded "
           "%ld times\n",
           STRESS_THREADS, s->iterations, atomic_load(&s->contested_entries),
           atomic_load(&s->contested_refusals),
           atomic_load(&s->contested_sets));
    assert_true(atomic_load(&s->contested_entries) > 0);
    assert_int_equal(atomic_load(&s->contested_entries) +
                         atomic_load(&s->contested_refusals),
                     STRESS_THREADS * s->iterations);
    EXPECT_CTX_GET(s->contested, s->a, 0,
                   (void *)atomic_load(&s->contested_last));
    void *out = NULL;
    ASSERT_RC(ctx_context_get(s->held, s->a, &out), 0);
    assert_true(is_owner_value(s, out));
    assert_int_equal(ctx_context_is_entered(s->held), 0);
    assert_int_equal(ctx_context_is_entered(s->contested), 0);
    /* The copies were released: every heap value with them. */
    assert_int_equal(atomic_load(&heap_releases), atomic_load(&heap_sets));
    assert_int_equal(atomic_load(&heap_sets), STRESS_THREADS * s->iterations);

    for (int i = 0; i < SNAPSHOTS; i++)
        ctx_context_release(s->snap[i]);
    ctx_context_release(s->held);
    ctx_context_release(s->contested);
    ctx_var_release(s->a);
    ctx_var_release(s->b);
    ctx_var_release(s->d);
    free(s);
    ASSERT_RC(ctx_thread_release(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_new_thread_starts_empty),
        TEST(test_threads_isolated),
        TEST(test_token_other_thread),
        TEST(test_context_entered_in_other_thread),
        TEST(test_thread_ends_inside_context),
        TEST(test_many_short_threads),
        TEST(test_var_outlives_caller_in_threads),
        TEST(test_stress),
    };
    return RUN_TESTS(tests);
}
