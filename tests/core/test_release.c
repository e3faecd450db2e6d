/* SPDX-License-Identifier: MIT */
/*
 * test_release.c — when and where a variable's release operation runs.
 *
 * No lock is held: for each path that drops a value while the library
 * holds a context's lock (ctx_context_set replacing a value, a reset back
 * to "unset", ctx_var_set replacing a value), a release that waits for
 * another thread to read the same context finishes its wait (it would not
 * if the reader were blocked on the lock), and a release may call back into
 * the same context and sees the change that dropped its value.
 *
 * No recursion: chains in which each value's release drops the next holder
 * (contexts, tokens, variables' defaults, captures) release in constant
 * stack: a million-link context chain on the default stack, and each kind
 * of chain built on the main thread and released on a thread with a
 * 512 KiB stack.  The order of release calls is
 * the one ctxvar.h documents.
 */
#include "core_test.h"

#include <pthread.h>
#include <time.h>

/* ---- a release that waits for a reader ---- */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int releasing;    /* the release operation is running */
    int reader_done;  /* the reader finished its calls */
    int reader_first; /* the reader finished before the release gave up */
    ctx_context_t *ctx;
    size_t length_seen;
} gate_t;

static gate_t gate;

static void gate_init(ctx_context_t *ctx) {
    pthread_mutex_init(&gate.mu, NULL);
    pthread_cond_init(&gate.cv, NULL);
    gate.releasing = gate.reader_done = gate.reader_first = 0;
    gate.ctx = ctx;
    gate.length_seen = 0;
}

static void gate_destroy(void) {
    pthread_cond_destroy(&gate.cv);
    pthread_mutex_destroy(&gate.mu);
}

/* The release operation: announces itself, then waits (up to 30 s, so a
 * broken library fails the test instead of hanging it) for the reader. */
static void waiting_release(void *value, void *user) {
    (void)value;
    (void)user;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&gate.mu);
    gate.releasing = 1;
    pthread_cond_broadcast(&gate.cv);
    while (!gate.reader_done)
        if (pthread_cond_timedwait(&gate.cv, &gate.mu, &deadline) != 0)
            break;
    gate.reader_first = gate.reader_done;
    pthread_mutex_unlock(&gate.mu);
}

static const ctx_value_ops_t waiting_ops = {.size = sizeof(ctx_value_ops_t),
                                            .release = waiting_release};

/* Waits for the release to start, then reads the context it is released
 * from: every call here takes that context's lock. */
static void *reader(void *arg) {
    (void)arg;
    pthread_mutex_lock(&gate.mu);
    while (!gate.releasing)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
    size_t n = ctx_context_length(gate.ctx);
    ctx_context_t *copy = NULL;
    if (ctx_context_copy(gate.ctx, &copy) == 0)
        ctx_context_release(copy);
    pthread_mutex_lock(&gate.mu);
    gate.length_seen = n;
    gate.reader_done = 1;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
    return NULL;
}

static void start_reader(pthread_t *t) {
    int rc = pthread_create(t, NULL, reader, NULL);
    if (rc != 0)
        fail_msg("pthread_create: %d", rc);
}

static void test_context_set_releases_unlocked(void **state) {
    (void)state;
    static int first, second;
    ctx_var_t *var = make_var("v", NULL, 0, &waiting_ops);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &first), 0);
    gate_init(ctx);
    pthread_t t;
    start_reader(&t);
    ASSERT_RC(ctx_context_set(ctx, var, &second), 0); /* releases `first` */
    pthread_join(t, NULL);
    assert_true(gate.reader_first);
    assert_int_equal(gate.length_seen, 1);
    gate_destroy();
    gate_init(ctx); /* the last release must not wait for nobody */
    gate.reader_done = 1;
    ctx_context_release(ctx);
    ctx_var_release(var);
    gate_destroy();
}

static void test_reset_to_unset_releases_unlocked(void **state) {
    (void)state;
    static int value;
    ctx_var_t *var = make_var("v", NULL, 0, &waiting_ops);
    ctx_var_t *other = make_var("other", NULL, 0, NULL);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, other, &value), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ctx_token_t *tok;
    ASSERT_RC(ctx_var_set(var, &value, &tok), 0);
    gate_init(ctx);
    pthread_t t;
    start_reader(&t);
    ASSERT_RC(ctx_var_reset(var, tok), 0); /* back to unset: releases `value` */
    pthread_join(t, NULL);
    assert_true(gate.reader_first);
    assert_int_equal(gate.length_seen, 1);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    ctx_token_release(tok);
    ctx_context_release(ctx);
    ctx_var_release(var);
    ctx_var_release(other);
    gate_destroy();
}

static void test_var_set_releases_unlocked(void **state) {
    (void)state;
    static int first, second;
    ctx_var_t *var = make_var("v", NULL, 0, &waiting_ops);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ASSERT_RC(ctx_var_set(var, &first, NULL), 0);
    gate_init(ctx);
    pthread_t t;
    start_reader(&t);
    ASSERT_RC(ctx_var_set(var, &second, NULL), 0); /* releases `first` */
    pthread_join(t, NULL);
    assert_true(gate.reader_first);
    gate_destroy();
    gate_init(ctx);
    gate.reader_done = 1;
    ASSERT_RC(ctx_context_exit(ctx), 0);
    ctx_context_release(ctx);
    ctx_var_release(var);
    gate_destroy();
}

/* ---- a release that calls back into the same context ---- */

typedef struct reentry {
    ctx_context_t *ctx; /* for ctx_context_set: the context set */
    ctx_var_t *var;     /* the variable whose value is released */
    ctx_var_t *other;   /* set from inside the release */
    int calls;
    int get_rc;       /* what the release saw for `var` */
    void *got;
    int set_rc;       /* setting `other` from inside the release */
    size_t length;
} reentry_t;

static reentry_t re;
static int other_value;

/* ctx_context_set's release: reads and sets the context it came from. */
static void release_into_context(void *value, void *user) {
    (void)value;
    (void)user;
    re.calls++;
    if (!re.ctx)
        return;
    re.got = NULL;
    re.get_rc = ctx_context_get(re.ctx, re.var, &re.got);
    re.set_rc = ctx_context_set(re.ctx, re.other, &other_value);
    re.length = ctx_context_length(re.ctx);
}

/* The current context's release: reads and sets the variables. */
static void release_into_current(void *value, void *user) {
    (void)value;
    (void)user;
    re.calls++;
    if (!re.var)
        return;
    re.got = NULL;
    re.get_rc = ctx_var_get(re.var, &re.got);
    re.set_rc = ctx_var_set(re.other, &other_value, NULL);
}

static const ctx_value_ops_t into_context_ops = {.size = sizeof(ctx_value_ops_t),
                                                 .release = release_into_context};
static const ctx_value_ops_t into_current_ops = {.size = sizeof(ctx_value_ops_t),
                                                 .release = release_into_current};

static void test_release_calls_back_into_context_set(void **state) {
    (void)state;
    static int first, second;
    memset(&re, 0, sizeof re);
    re.var = make_var("v", NULL, 0, &into_context_ops);
    re.other = make_var("other", NULL, 0, NULL);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    re.ctx = ctx;
    ASSERT_RC(ctx_context_set(ctx, re.var, &first), 0);
    ASSERT_RC(ctx_context_set(ctx, re.var, &second), 0);
    assert_int_equal(re.calls, 1);
    ASSERT_RC(re.get_rc, 0);
    assert_ptr_equal(re.got, &second); /* the change is made before */
    ASSERT_RC(re.set_rc, 0);           /* the context is free again */
    assert_int_equal(re.length, 2);
    EXPECT_CTX_GET(ctx, re.other, 0, &other_value);
    re.ctx = NULL; /* the last release must not touch the dying context */
    ctx_context_release(ctx);
    assert_int_equal(re.calls, 2);
    ctx_var_release(re.other);
    ctx_var_release(re.var);
}

static void test_release_calls_back_into_reset(void **state) {
    (void)state;
    static int value, def;
    memset(&re, 0, sizeof re);
    ctx_var_t *var = re.var = make_var("v", &def, 1, &into_current_ops);
    re.other = make_var("other", NULL, 0, NULL);
    ctx_token_t *tok;
    ASSERT_RC(ctx_var_set(re.var, &value, &tok), 0);
    EXPECT_GET(re.var, CTX_VALUE, &value); /* cached */
    ASSERT_RC(ctx_var_reset(re.var, tok), 0);
    assert_int_equal(re.calls, 1);
    ASSERT_RC(re.get_rc, CTX_DEFAULT); /* not the value being released */
    assert_ptr_equal(re.got, &def);
    ASSERT_RC(re.set_rc, 0);
    EXPECT_GET(re.other, CTX_VALUE, &other_value);
    EXPECT_GET(re.var, CTX_DEFAULT, &def);
    ctx_token_release(tok);
    ctx_var_release(re.other);
    ASSERT_RC(ctx_thread_release(), 0);
    re.calls = 0;
    re.var = NULL; /* from now on the release only counts */
    ctx_var_release(var); /* its default: one more call */
    assert_int_equal(re.calls, 1);
}

static void test_release_calls_back_into_var_set(void **state) {
    (void)state;
    static int first, second;
    memset(&re, 0, sizeof re);
    re.var = make_var("v", NULL, 0, &into_current_ops);
    re.other = make_var("other", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(re.var, &first, NULL), 0);
    EXPECT_GET(re.var, CTX_VALUE, &first);
    ASSERT_RC(ctx_var_set(re.var, &second, NULL), 0);
    assert_int_equal(re.calls, 1);
    ASSERT_RC(re.get_rc, CTX_VALUE);
    assert_ptr_equal(re.got, &second);
    ASSERT_RC(re.set_rc, 0);
    EXPECT_GET(re.other, CTX_VALUE, &other_value);
    ctx_var_t *var = re.var;
    re.var = NULL; /* from now on the release only counts */
    ctx_var_release(re.other);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(re.calls, 2);
}

/* ---- chains ---- */

static atomic_long chain_released;

static void release_context(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&chain_released, 1);
    ctx_context_release(value);
}

static void release_token(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&chain_released, 1);
    ctx_token_release(value);
}

static void release_var(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&chain_released, 1);
    ctx_var_release(value);
}

static void release_capture(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&chain_released, 1);
    ctx_capture_clear(value);
    free(value);
}

static const ctx_value_ops_t context_link = {.size = sizeof(ctx_value_ops_t),
                                             .release = release_context};
static const ctx_value_ops_t token_link = {.size = sizeof(ctx_value_ops_t),
                                           .release = release_token};
static const ctx_value_ops_t var_link = {.size = sizeof(ctx_value_ops_t),
                                         .release = release_var};
static const ctx_value_ops_t capture_link = {.size = sizeof(ctx_value_ops_t),
                                             .release = release_capture};

/* n contexts, each holding the previous one as the value of `link`; the
 * last is returned (the caller's reference). */
static ctx_context_t *context_chain(ctx_var_t *link, long n) {
    ctx_context_t *head = NULL;
    for (long i = 0; i < n; i++) {
        ctx_context_t *c;
        ASSERT_RC(ctx_context_new(&c), 0);
        if (head)
            ASSERT_RC(ctx_context_set(c, link, head), 0);
        head = c;
    }
    return head;
}

/* A million links, released from the main thread's default stack. */
static void test_million_link_chain(void **state) {
    (void)state;
    long n = CTX_SCALED(1000000, 100000, 200000);
    ctx_var_t *link = make_var("link", NULL, 0, &context_link);
    ctx_context_t *head = context_chain(link, n);
    atomic_store(&chain_released, 0);
    ctx_context_release(head);
    assert_int_equal(atomic_load(&chain_released), n - 1);
    ctx_var_release(link);
}

/* Each chain is built on the main thread and released by release_chain on
 * a thread with a small stack. */
enum { CHAIN_CONTEXTS, CHAIN_TOKENS, CHAIN_VARIABLES, CHAIN_CAPTURES };

typedef struct chain {
    int kind;
    void *head;
    ctx_context_t *ctx; /* tokens: the context they were made in */
    long released;
} chain_t;

static void build_chain(chain_t *c, ctx_var_t *link, long n) {
    switch (c->kind) {
    case CHAIN_CONTEXTS:
        c->head = context_chain(link, n);
        break;
    case CHAIN_TOKENS: {
        /* set(link, T[k-1], &T[k]) in one context: T[k] holds the box of the
         * value T[k-2], so releasing a token releases the one two steps back
         * (and the context the other half). */
        ctx_token_t *prev = NULL, *tok = NULL;
        ASSERT_RC(ctx_context_new(&c->ctx), 0);
        ASSERT_RC(ctx_context_enter(c->ctx), 0);
        ASSERT_RC(ctx_var_set(link, NULL, &prev), 0); /* value 0 is NULL */
        for (long i = 1; i < n; i++) {
            ASSERT_RC(ctx_var_set(link, prev, &tok), 0);
            prev = tok;
        }
        ASSERT_RC(ctx_context_exit(c->ctx), 0);
        c->head = prev;
        break;
    }
    case CHAIN_VARIABLES: {
        /* Variable k's default is variable k-1 (the default is one share). */
        ctx_var_t *prev = make_var("v0", NULL, 0, NULL);
        for (long i = 1; i < n; i++)
            prev = make_var("v", prev, 1, &var_link);
        c->head = prev;
        break;
    }
    case CHAIN_CAPTURES: {
        /* Capture k holds a context whose value is capture k-1. */
        ctx_capture_t *prev = malloc(sizeof *prev);
        assert_non_null(prev);
        ctx_context_t *ctx;
        ASSERT_RC(ctx_context_new(&ctx), 0);
        ASSERT_RC(ctx_capture_copy(prev, ctx), 0);
        ctx_context_release(ctx);
        for (long i = 1; i < n; i++) {
            ASSERT_RC(ctx_context_new(&ctx), 0);
            ASSERT_RC(ctx_context_set(ctx, link, prev), 0);
            prev = malloc(sizeof *prev);
            assert_non_null(prev);
            ASSERT_RC(ctx_capture_copy(prev, ctx), 0);
            ctx_context_release(ctx);
        }
        c->head = prev;
        break;
    }
    }
}

static void *release_chain(void *arg) {
    chain_t *c = arg;
    atomic_store(&chain_released, 0);
    switch (c->kind) {
    case CHAIN_CONTEXTS:
        ctx_context_release(c->head);
        break;
    case CHAIN_TOKENS:
        ctx_token_release(c->head);
        ctx_context_release(c->ctx);
        break;
    case CHAIN_VARIABLES:
        ctx_var_release(c->head);
        break;
    case CHAIN_CAPTURES:
        ctx_capture_clear(c->head);
        free(c->head);
        break;
    }
    c->released = atomic_load(&chain_released);
    return NULL;
}

/* Builds a chain of n links and releases it on a thread whose stack is
 * 512 KiB: a recursion per link would need a hundred times that. */
static void chain_on_small_stack(int kind, const ctx_value_ops_t *ops, long expected) {
    long n = CTX_SCALED(200000, 20000, 50000);
    ctx_var_t *link = make_var("link", NULL, 0, ops);
    chain_t c = {kind, NULL, NULL, -1};
    build_chain(&c, link, n);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    ASSERT_RC(pthread_attr_setstacksize(&attr, 512 * 1024), 0);
    pthread_t t;
    ASSERT_RC(pthread_create(&t, &attr, release_chain, &c), 0);
    pthread_join(t, NULL);
    pthread_attr_destroy(&attr);
    assert_int_equal(c.released, n + expected);
    ctx_var_release(link);
}

static void test_context_chain_small_stack(void **state) {
    (void)state;
    chain_on_small_stack(CHAIN_CONTEXTS, &context_link, -1); /* n-1 values */
}

static void test_token_chain_small_stack(void **state) {
    (void)state;
    chain_on_small_stack(CHAIN_TOKENS, &token_link, 0); /* n values, NULL included */
}

static void test_variable_chain_small_stack(void **state) {
    (void)state;
    chain_on_small_stack(CHAIN_VARIABLES, &var_link, -1); /* n-1 defaults */
}

static void test_capture_chain_small_stack(void **state) {
    (void)state;
    chain_on_small_stack(CHAIN_CAPTURES, &capture_link, -1); /* n-1 values */
}

/* ---- order ---- */

static char order[64];

static void note(const char *what) { strncat(order, what, sizeof order - strlen(order) - 1); }

static ctx_context_t *inner_ctx;

static void release_outer(void *value, void *user) {
    (void)user;
    note(value); /* "a1(" or "a2" */
    if (strcmp(value, "a1(") == 0) {
        ctx_context_release(inner_ctx); /* drops b1 and b2 from inside */
        note(")");
    }
}

static void release_inner(void *value, void *user) {
    (void)user;
    note(value);
}

/* ctxvar.h: a release that drops other values does not release them from
 * inside; they are released right after it returns, in the order they were
 * dropped, before the library goes on. */
static void test_release_order(void **state) {
    (void)state;
    static const ctx_value_ops_t outer_ops = {.size = sizeof(ctx_value_ops_t),
                                              .release = release_outer};
    static const ctx_value_ops_t inner_ops = {.size = sizeof(ctx_value_ops_t),
                                              .release = release_inner};
    /* Variables made in this order iterate in this order (ctxvar.h). */
    ctx_var_t *a1 = make_var("a1", NULL, 0, &outer_ops);
    ctx_var_t *a2 = make_var("a2", NULL, 0, &outer_ops);
    ctx_var_t *b1 = make_var("b1", NULL, 0, &inner_ops);
    ctx_var_t *b2 = make_var("b2", NULL, 0, &inner_ops);
    ctx_context_t *outer;
    ASSERT_RC(ctx_context_new(&outer), 0);
    ASSERT_RC(ctx_context_new(&inner_ctx), 0);
    ASSERT_RC(ctx_context_set(inner_ctx, b1, "b1 "), 0);
    ASSERT_RC(ctx_context_set(inner_ctx, b2, "b2 "), 0);
    ASSERT_RC(ctx_context_set(outer, a1, "a1("), 0);
    ASSERT_RC(ctx_context_set(outer, a2, "a2"), 0);
    order[0] = '\0';
    ctx_context_release(outer);
    assert_string_equal(order, "a1()b1 b2 a2");
    ctx_var_release(a1);
    ctx_var_release(a2);
    ctx_var_release(b1);
    ctx_var_release(b2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_context_set_releases_unlocked),
        TEST(test_reset_to_unset_releases_unlocked),
        TEST(test_var_set_releases_unlocked),
        TEST(test_release_calls_back_into_context_set),
        TEST(test_release_calls_back_into_reset),
        TEST(test_release_calls_back_into_var_set),
        TEST(test_million_link_chain),
        TEST(test_context_chain_small_stack),
        TEST(test_token_chain_small_stack),
        TEST(test_variable_chain_small_stack),
        TEST(test_capture_chain_small_stack),
        TEST(test_release_order),
    };
    return RUN_TESTS(tests);
}
