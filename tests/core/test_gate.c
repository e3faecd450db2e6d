/* SPDX-License-Identifier: MIT */
/*
 * test_gate.c — the owner of a context changes it without its lock until
 * another thread reads it (src/core/gate.c); these tests put readers on
 * other threads against an owner that sets and resets as fast as it can.
 *
 * Values are heap blocks that their release operation poisons and frees,
 * so a reader that walked a node while the owner changed it, or kept a box
 * the owner freed, reads freed memory (ASan, valgrind) or races with the
 * owner's writes (TSan), and a value seen through a copy must be intact.
 * Each round uses a fresh context, since the gate of a context closes for
 * good at its first read while entered elsewhere: the rounds give the
 * reader many first reads, each against an owner past an open gate.  The
 * owner exits and enters its context again every few changes, so readers
 * also meet a context with no owner that one enters meanwhile.
 *
 * Worker threads check with TCHECK (thread_checks.h).
 */
#include "core_test.h"
#include "thread_checks.h"

#include <pthread.h>
#include <sched.h>

/* ---- values that die loudly ---- */

#define MAGIC 0x5a17ca5eL

typedef struct hv {
    long magic;
    long payload;
} hv_t;

static atomic_long made, released;

static void hv_release(void *value, void *user) {
    (void)user;
    hv_t *v = value;
    if (v->magic != MAGIC)
        thread_fail(__FILE__, __LINE__, "a value released twice or corrupted");
    v->magic = 0;
    free(v);
    atomic_fetch_add(&released, 1);
}

static const ctx_value_ops_t hv_ops = {.size = sizeof(ctx_value_ops_t), .release = hv_release};

static hv_t *hv_new(long payload) {
    hv_t *v = malloc(sizeof *v);
    if (!v)
        abort();
    v->magic = MAGIC;
    v->payload = payload;
    atomic_fetch_add(&made, 1);
    return v;
}

static void start_counting(void) {
    reset_failures();
    atomic_store(&made, 0);
    atomic_store(&released, 0);
}

/* A variable whose values are hv_t blocks. */
static ctx_var_t *hv_var(const char *name) {
    ctx_var_options_t o = {.size = sizeof o, .ops = &hv_ops};
    ctx_var_t *var = NULL;
    ASSERT_RC(ctx_var_new(name, &o, &var), 0);
    return var;
}

/* The payload of `var`'s value in `ctx` (main thread, no one changing it). */
static long payload_in(ctx_context_t *ctx, ctx_var_t *var) {
    void *out = NULL;
    ASSERT_RC(ctx_context_get(ctx, var, &out), 0);
    return ((hv_t *)out)->payload;
}

/* Runs `first` and (if not NULL) `second` on threads of their own with
 * `arg`, joins both, and fails on any TCHECK they failed. */
static void two_threads(void *(*first)(void *), void *(*second)(void *), void *arg) {
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, first, arg), 0);
    if (second)
        assert_int_equal(pthread_create(&b, NULL, second, arg), 0);
    pthread_join(a, NULL);
    if (second)
        pthread_join(b, NULL);
    assert_no_thread_failures();
}

/* A value seen while a reference (a copy, an iteration) holds it. */
static int hv_ok(const void *value, long max) {
    const hv_t *v = value;
    return v && v->magic == MAGIC && v->payload >= 0 && v->payload <= max;
}

/* ---- one owner, one reader, a fresh context each round ---- */

typedef struct round {
    ctx_context_t *ctx; /* held by the main thread: the owner's changes go past the gate */
    ctx_var_t *a, *b;
    long changes;
    int reenter_every;  /* 0: the owner stays entered */
    atomic_int owner_done;
    atomic_long reads;
} round_t;

static void *owner(void *arg) {
    round_t *r = arg;
    TCHECK(ctx_context_enter(r->ctx) == 0);
    for (long i = 1; i <= r->changes; i++) {
        ctx_token_t *tok = NULL;
        TCHECK(ctx_var_set(r->a, hv_new(i), &tok) == 0);
        TCHECK(ctx_var_set(r->b, hv_new(i), NULL) == 0);
        void *out = NULL;
        TCHECK(ctx_var_get(r->a, &out) == CTX_VALUE && ((hv_t *)out)->payload == i);
        TCHECK(ctx_var_reset(r->a, tok) == 0);
        ctx_token_release(tok);
        TCHECK(ctx_var_get(r->a, &out) == CTX_VALUE && ((hv_t *)out)->payload == 0);
        if (r->reenter_every && i % r->reenter_every == 0) {
            TCHECK(ctx_context_exit(r->ctx) == 0);
            sched_yield();
            TCHECK(ctx_context_enter(r->ctx) == 0);
        }
    }
    TCHECK(ctx_context_exit(r->ctx) == 0);
    atomic_store(&r->owner_done, 1);
    return NULL;
}

static void read_once(round_t *r) {
    void *out = NULL;
    /* Borrowed: the owner may replace it at once, so it is only compared. */
    TCHECK(ctx_context_get(r->ctx, r->a, &out) == 0 && out != NULL);
    size_t len = ctx_context_length(r->ctx);
    TCHECK(len == 1 || len == 2);
    /* A copy holds its values: they must be intact. */
    ctx_context_t *copy = NULL;
    TCHECK(ctx_context_copy(r->ctx, &copy) == 0);
    if (copy) {
        TCHECK(ctx_context_get(copy, r->a, &out) == 0 && hv_ok(out, r->changes));
        if (ctx_context_get(copy, r->b, &out) == 0)
            TCHECK(hv_ok(out, r->changes));
        ctx_context_release(copy);
    }
    ctx_iter_t it;
    TCHECK(ctx_iter_init(&it, r->ctx) == 0);
    ctx_var_t *k;
    void *v;
    while (ctx_iter_next(&it, &k, &v))
        TCHECK((k == r->a || k == r->b) && hv_ok(v, r->changes));
    ctx_iter_clear(&it);
    atomic_fetch_add(&r->reads, 1);
}

static void *reader(void *arg) {
    round_t *r = arg;
    while (!atomic_load(&r->owner_done))
        read_once(r);
    read_once(r);
    return NULL;
}

static void run_rounds(int reenter_every) {
    start_counting();
    ctx_var_t *a = hv_var("a"), *b = hv_var("b");
    long rounds = test_scale("CTX_TEST_ITERATIONS", 200, 10);
    long reads = 0;
    for (long n = 0; n < rounds; n++) {
        round_t r = {.a = a, .b = b, .changes = 200, .reenter_every = reenter_every};
        atomic_init(&r.owner_done, 0);
        atomic_init(&r.reads, 0);
        ASSERT_RC(ctx_context_new(&r.ctx), 0);
        ASSERT_RC(ctx_context_set(r.ctx, a, hv_new(0)), 0);
        two_threads(reader, owner, &r);
        /* The resets put the first value back; b keeps the last set. */
        assert_int_equal(payload_in(r.ctx, a), 0);
        assert_int_equal(payload_in(r.ctx, b), r.changes);
        ctx_context_release(r.ctx);
        reads += atomic_load(&r.reads);
    }
    ctx_var_release(a);
    ctx_var_release(b);
    /* Every value made was released once, none twice (hv_release). */
    assert_int_equal(atomic_load(&released), atomic_load(&made));
    assert_true(reads >= rounds);
    assert_no_thread_failures();
}

/* The owner stays entered: each round's first read closes the gate while
 * the owner changes the context past it. */
static void test_reader_against_entered_owner(void **state) {
    (void)state;
    run_rounds(0);
}

/* The owner leaves and enters again every few changes: readers also find
 * the context with no owner, and an owner entering while they read. */
static void test_reader_against_reentering_owner(void **state) {
    (void)state;
    run_rounds(3);
}

/* ---- ctx_context_set goes through the same gate ---- */

typedef struct setter {
    ctx_context_t *ctx;
    ctx_var_t *a;
    long sets;
    atomic_int done;
} setter_t;

static void *set_loop(void *arg) {
    setter_t *s = arg;
    for (long i = 1; i <= s->sets; i++) {
        int rc = ctx_context_set(s->ctx, s->a, hv_new(i));
        TCHECK(rc == 0);
    }
    atomic_store(&s->done, 1);
    return NULL;
}

static void *copy_loop(void *arg) {
    setter_t *s = arg;
    long last = 0;
    while (!atomic_load(&s->done)) {
        ctx_context_t *copy = NULL;
        TCHECK(ctx_context_copy(s->ctx, &copy) == 0);
        void *out = NULL;
        TCHECK(ctx_context_get(copy, s->a, &out) == 0 && hv_ok(out, s->sets));
        /* One setter: the values it leaves only grow. */
        if (out) {
            TCHECK(((hv_t *)out)->payload >= last);
            last = ((hv_t *)out)->payload;
        }
        ctx_context_release(copy);
    }
    return NULL;
}

static void test_context_set_against_copies(void **state) {
    (void)state;
    start_counting();
    setter_t s = {.sets = test_scale("CTX_TEST_ITERATIONS", 20000, 20), .a = hv_var("a")};
    atomic_init(&s.done, 0);
    ASSERT_RC(ctx_context_new(&s.ctx), 0);
    ASSERT_RC(ctx_context_set(s.ctx, s.a, hv_new(0)), 0);
    two_threads(copy_loop, set_loop, &s);
    assert_int_equal(payload_in(s.ctx, s.a), s.sets);
    ctx_context_release(s.ctx);
    ctx_var_release(s.a);
    assert_int_equal(atomic_load(&released), atomic_load(&made));
}

/* ---- the owner reading its own context ---- */

/* The owner copies, iterates and reads its own entered context between its
 * changes (the reader path, in the owner's thread: no barrier, nothing to
 * wait for), while another thread reads it too. */
static void *self_reading_owner(void *arg) {
    round_t *r = arg;
    TCHECK(ctx_context_enter(r->ctx) == 0);
    for (long i = 1; i <= r->changes; i++) {
        TCHECK(ctx_var_set(r->b, hv_new(i), NULL) == 0);
        ctx_context_t *copy = NULL;
        TCHECK(ctx_context_copy(r->ctx, &copy) == 0);
        void *out = NULL;
        TCHECK(ctx_context_get(copy, r->b, &out) == 0 && ((hv_t *)out)->payload == i);
        ctx_context_release(copy);
        TCHECK(ctx_context_get(r->ctx, r->b, &out) == 0 && ((hv_t *)out)->payload == i);
        TCHECK(ctx_context_length(r->ctx) == 2);
    }
    TCHECK(ctx_context_exit(r->ctx) == 0);
    atomic_store(&r->owner_done, 1);
    return NULL;
}

static void test_owner_reads_itself(void **state) {
    (void)state;
    start_counting();
    ctx_var_t *a = hv_var("a"), *b = hv_var("b");
    long rounds = test_scale("CTX_TEST_ITERATIONS", 50, 10);
    for (long n = 0; n < rounds; n++) {
        round_t r = {.a = a, .b = b, .changes = 500};
        atomic_init(&r.owner_done, 0);
        atomic_init(&r.reads, 0);
        ASSERT_RC(ctx_context_new(&r.ctx), 0);
        ASSERT_RC(ctx_context_set(r.ctx, a, hv_new(0)), 0);
        ASSERT_RC(ctx_context_set(r.ctx, b, hv_new(0)), 0);
        /* Every other round, another reader too. */
        two_threads(self_reading_owner, n % 2 ? reader : NULL, &r);
        ctx_context_release(r.ctx);
    }
    ctx_var_release(a);
    ctx_var_release(b);
    assert_int_equal(atomic_load(&released), atomic_load(&made));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_reader_against_entered_owner),
        TEST(test_reader_against_reentering_owner),
        TEST(test_context_set_against_copies),
        TEST(test_owner_reads_itself),
    };
    return RUN_TESTS(tests);
}
