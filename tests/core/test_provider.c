/* SPDX-License-Identifier: MIT */
/*
 * test_provider.c — a host's current context (ctxvar/host.h).
 *
 * The host here is a toy scheduler: a *scope* is one of its tasks, holding
 * the context the host provides while that task runs; "switching tasks" is
 * assigning the thread's current scope, which ctxvar is never told about
 * (as asyncio never tells the Python binding).  Each test checks one
 * promise of the header: lookups follow the switches, sets publish a new
 * context and leave the provided one unchanged, tokens are bound to scopes,
 * a context entered through ctxvar comes first, copies and captures (and so
 * pool tasks) take the provided context, publish failures and allocation
 * failures change nothing, and threads do not see each other's scopes.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <string.h>

#include <ctxvar/host.h>
#include <ctxvar/pool.h>

#include "core_test.h"

/* ---- the toy host ---- */

typedef struct scope {
    ctx_context_t *ctx; /* provided while the scope is current (owned) */
    int retained;       /* handles out (scope_retain - scope_release) */
} scope_t;

static _Thread_local scope_t *current_scope;
static _Thread_local long switches;
static atomic_long copies, reads, publishes;
static atomic_int publish_fail; /* non-zero: publish fails with this code */

static ctx_context_t *host_current(ctx_provider_use_t use, void *user) {
    (void)user;
    if (!current_scope)
        return NULL;
    atomic_fetch_add(use == CTX_PROVIDER_COPY ? &copies : &reads, 1);
    return current_scope->ctx;
}

static int host_publish(ctx_context_t *ctx, void *user) {
    (void)user;
    int fail = atomic_load(&publish_fail);
    if (fail)
        return fail;
    ctx_context_release(current_scope->ctx);
    current_scope->ctx = ctx;
    atomic_fetch_add(&publishes, 1);
    return 0;
}

static void *host_scope_retain(void *user) {
    (void)user;
    current_scope->retained++;
    return current_scope;
}

static int host_scope_is_current(void *scope, void *user) {
    (void)user;
    return scope == current_scope;
}

static void host_scope_release(void *scope, void *user) {
    (void)user;
    ((scope_t *)scope)->retained--;
}

static void host_switched(void *user) {
    (void)user;
    switches++;
}

static const ctx_context_provider_t host = {
    .size = sizeof(ctx_context_provider_t),
    .current = host_current,
    .publish = host_publish,
    .scope_retain = host_scope_retain,
    .scope_is_current = host_scope_is_current,
    .scope_release = host_scope_release,
    .switched = host_switched,
};

static void scope_init(scope_t *s) {
    ASSERT_RC(ctx_context_new(&s->ctx), 0);
    s->retained = 0;
}

static void scope_clear(scope_t *s) {
    assert_int_equal(s->retained, 0);
    ctx_context_release(s->ctx);
    s->ctx = NULL;
}

static int setup_host(void **state) {
    (void)state;
    val_counters_reset();
    atomic_store(&copies, 0);
    atomic_store(&reads, 0);
    atomic_store(&publishes, 0);
    atomic_store(&publish_fail, 0);
    current_scope = NULL;
    switches = 0;
    return ctx_set_context_provider(&host) == 0 ? 0 : -1;
}

static int teardown_host(void **state) {
    current_scope = NULL;
    ctx_set_context_provider(NULL);
    return teardown_thread(state);
}

#define HOST_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup_host, teardown_host)

static void *get_value(ctx_var_t *var) {
    void *out = NULL;
    return ctx_var_get(var, &out) == CTX_VALUE ? out : NULL;
}

/* ---- installation ---- */

static void test_install_rules(void **state) {
    (void)state;
    ctx_context_provider_t p = host;
    p.current = NULL;
    ASSERT_RC(ctx_set_context_provider(&p), CTX_EINVAL);
    p = host;
    p.publish = NULL;
    ASSERT_RC(ctx_set_context_provider(&p), CTX_EINVAL);
    p = host;
    p.scope_release = NULL; /* token functions: all or none */
    ASSERT_RC(ctx_set_context_provider(&p), CTX_EINVAL);
    p = host;
    p.size = sizeof(size_t); /* older than the first layout */
    ASSERT_RC(ctx_set_context_provider(&p), CTX_EINVAL);

    /* A newer caller's struct: accepted if what we do not know is zero. */
    struct {
        ctx_context_provider_t p;
        void *later;
    } bigger = {host, NULL};
    bigger.p.size = sizeof bigger;
    ASSERT_RC(ctx_set_context_provider(&bigger.p), 0);
    ASSERT_RC(ctx_set_context_provider(&host), CTX_EBUSY); /* one at a time */
    ASSERT_RC(ctx_set_context_provider(NULL), 0);
    bigger.later = &bigger;
    ASSERT_RC(ctx_set_context_provider(&bigger.p), CTX_EINVAL);
    ASSERT_RC(ctx_set_context_provider(&host), 0);
    ASSERT_RC(ctx_set_context_provider(NULL), 0);
    ASSERT_RC(ctx_set_context_provider(NULL), 0);
}

static void *report_entered(void *arg) {
    (void)arg;
    return (void *)(intptr_t)ctx_thread_has_entered();
}

static void test_thread_has_entered(void **state) {
    (void)state;
    assert_int_equal(ctx_thread_has_entered(), 0);
    ctx_context_t *c;
    ASSERT_RC(ctx_context_new(&c), 0);
    void *inside = NULL;
    ASSERT_RC(ctx_context_run(c, report_entered, NULL, &inside), 0);
    assert_int_equal((intptr_t)inside, 1);
    assert_int_equal(ctx_thread_has_entered(), 0);
    ctx_context_release(c);
}

/* ---- reads and writes follow the host's switches ---- */

static void test_get_follows_switches(void **state) {
    (void)state;
    ctx_var_t *v = make_var("v", (void *)7, 1, NULL);
    scope_t a, b;
    scope_init(&a);
    scope_init(&b);
    val_t one, two;
    val_init(&one, 1);
    val_init(&two, 2);
    ASSERT_RC(ctx_context_set(a.ctx, v, &one), 0);
    ASSERT_RC(ctx_context_set(b.ctx, v, &two), 0);

    /* No scope: the thread's own context, as without a provider. */
    EXPECT_GET(v, CTX_DEFAULT, (void *)7);
    current_scope = &a;
    EXPECT_GET(v, CTX_VALUE, &one);
    current_scope = &b; /* the host switched: nobody told ctxvar */
    EXPECT_GET(v, CTX_VALUE, &two);
    current_scope = &a;
    void *out = NULL;
    ASSERT_RC(ctx_var_get_or(v, &two, &out), CTX_VALUE);
    assert_ptr_equal(out, &one);
    assert_int_equal(atomic_load(&reads), 3); /* one question per lookup, none without a scope */

    current_scope = NULL;
    scope_clear(&a);
    scope_clear(&b);
    ctx_var_release(v);
}

static void test_set_publishes_a_new_context(void **state) {
    (void)state;
    ctx_var_t *v = make_var("v", NULL, 0, ops_release());
    ctx_var_t *w = make_var("w", NULL, 0, ops_release());
    scope_t a, b;
    scope_init(&a);
    scope_init(&b);
    val_t one, two, other;
    val_init(&one, 1);
    val_init(&two, 2);
    val_init(&other, 3);

    current_scope = &a;
    ASSERT_RC(ctx_var_set(v, &one, NULL), 0);
    ctx_context_t *first = ctx_context_retain(a.ctx);
    ASSERT_RC(ctx_var_set(v, &two, NULL), 0);
    ASSERT_RC(ctx_var_set(w, &other, NULL), 0);
    assert_int_equal(atomic_load(&publishes), 3);
    /* The context the host provided before is unchanged. */
    EXPECT_CTX_GET(first, v, 0, &one);
    EXPECT_CTX_GET(first, w, CTX_ENOTFOUND, NULL);
    EXPECT_GET(v, CTX_VALUE, &two);
    EXPECT_GET(w, CTX_VALUE, &other);
    current_scope = &b;
    EXPECT_GET(v, CTX_ENOTFOUND, NULL);
    current_scope = NULL;
    EXPECT_GET(v, CTX_ENOTFOUND, NULL);

    /* Each share is released once, when no context holds it. */
    assert_int_equal(val_released(&one), 0);
    ctx_context_release(first);
    assert_int_equal(val_released(&one), 1);
    scope_clear(&a);
    scope_clear(&b);
    assert_int_equal(val_released(&two), 1);
    assert_int_equal(val_released(&other), 1);
    ctx_var_release(v);
    ctx_var_release(w);
}

/* ---- tokens are bound to the host's scope ---- */

static void test_tokens_name_the_scope(void **state) {
    (void)state;
    ctx_var_t *v = make_var("v", NULL, 0, ops_release());
    ctx_var_t *w = make_var("w", NULL, 0, NULL);
    scope_t a, b;
    scope_init(&a);
    scope_init(&b);
    val_t one, two;
    val_init(&one, 1);
    val_init(&two, 2);

    current_scope = &a;
    ctx_token_t *t1, *t2;
    ASSERT_RC(ctx_var_set(v, &one, &t1), 0); /* no value before */
    ASSERT_RC(ctx_var_set(v, &two, &t2), 0); /* before: one */
    assert_int_equal(a.retained, 2);
    assert_ptr_equal(ctx_token_var(t2), v);
    void *old = NULL;
    ASSERT_RC(ctx_token_old_value(t2, &old), 0);
    assert_ptr_equal(old, &one);
    ASSERT_RC(ctx_token_old_value(t1, &old), CTX_ENOTFOUND);

    ASSERT_RC(ctx_var_reset(w, t2), CTX_ETOKENVAR);
    current_scope = &b;
    ASSERT_RC(ctx_var_reset(v, t2), CTX_ETOKENCTX);
    current_scope = &a;
    ASSERT_RC(ctx_var_reset(v, t2), 0);
    EXPECT_GET(v, CTX_VALUE, &one);
    ASSERT_RC(ctx_var_reset(v, t2), CTX_ETOKENUSED);
    assert_int_equal(ctx_token_used(t2), 1);
    ASSERT_RC(ctx_var_reset(v, t1), 0);
    EXPECT_GET(v, CTX_ENOTFOUND, NULL);

    /* Inside a context entered through ctxvar the scope is not current. */
    ctx_token_t *t3;
    ASSERT_RC(ctx_var_set(v, &two, &t3), 0);
    ctx_context_t *c;
    ASSERT_RC(ctx_context_new(&c), 0);
    ASSERT_RC(ctx_context_enter(c), 0);
    ASSERT_RC(ctx_var_reset(v, t3), CTX_ETOKENCTX);
    /* ... and a token made there is an ordinary one, refused outside. */
    ctx_token_t *t4;
    ASSERT_RC(ctx_var_set(v, &one, &t4), 0);
    ASSERT_RC(ctx_context_exit(c), 0);
    ASSERT_RC(ctx_var_reset(v, t4), CTX_ETOKENCTX);
    ASSERT_RC(ctx_var_reset(v, t3), 0);

    ctx_token_release(t1);
    ctx_token_release(t2);
    ctx_token_release(t3);
    ctx_token_release(t4);
    assert_int_equal(a.retained, 0);
    ctx_context_release(c);
    current_scope = NULL;
    scope_clear(&a);
    scope_clear(&b);
    ctx_var_release(v);
    ctx_var_release(w);
}

static const ctx_context_provider_t host_without_tokens = {
    .size = sizeof(ctx_context_provider_t),
    .current = host_current,
    .publish = host_publish,
};

static void test_tokens_need_scopes(void **state) {
    (void)state;
    ctx_set_context_provider(NULL);
    ASSERT_RC(ctx_set_context_provider(&host_without_tokens), 0);
    ctx_var_t *v = make_var("v", NULL, 0, NULL);
    scope_t a;
    scope_init(&a);
    current_scope = &a;
    ctx_token_t *t = NULL;
    ASSERT_RC(ctx_var_set(v, (void *)1, &t), CTX_EINVAL);
    assert_null(t);
    EXPECT_GET(v, CTX_ENOTFOUND, NULL); /* failure changed nothing */
    ASSERT_RC(ctx_var_set(v, (void *)1, NULL), 0);
    EXPECT_GET(v, CTX_VALUE, (void *)1);
    current_scope = NULL;
    scope_clear(&a);
    ctx_var_release(v);
}

/* ---- a context entered through ctxvar comes first ---- */

static ctx_var_t *g_var;

static void *read_and_set(void *arg) {
    void *seen = get_value(g_var);
    ctx_var_set(g_var, arg, NULL);
    return seen;
}

static void test_entered_context_comes_first(void **state) {
    (void)state;
    g_var = make_var("v", NULL, 0, NULL);
    scope_t a;
    scope_init(&a);
    ASSERT_RC(ctx_context_set(a.ctx, g_var, (void *)1), 0);
    ctx_context_t *c;
    ASSERT_RC(ctx_context_new(&c), 0);
    ASSERT_RC(ctx_context_set(c, g_var, (void *)9), 0);

    current_scope = &a;
    long before = switches;
    void *seen = NULL;
    ASSERT_RC(ctx_context_run(c, read_and_set, (void *)10, &seen), 0);
    assert_ptr_equal(seen, (void *)9);
    assert_int_equal(switches - before, 2); /* in and out */
    EXPECT_CTX_GET(c, g_var, 0, (void *)10); /* the set landed in c */
    assert_ptr_equal(get_value(g_var), (void *)1);
    assert_int_equal(atomic_load(&publishes), 0);

    /* A capture run is announced as well. */
    ctx_capture_t cap;
    ctx_capture_current(&cap); /* of the provided context */
    before = switches;
    ASSERT_RC(ctx_capture_run(&cap, read_and_set, (void *)11, &seen), 0);
    assert_int_equal(switches - before, 2);
    assert_ptr_equal(seen, (void *)1);
    assert_ptr_equal(get_value(g_var), (void *)1); /* the capture kept its set */
    ctx_capture_clear(&cap);

    /* So is a snapshot's run, which sees the provided values too. */
    ctx_snapshot_t snap = {0};
    ctx_snapshot_current(&snap); /* of the provided context */
    before = switches;
    seen = NULL;
    ASSERT_RC(ctx_snapshot_run(&snap, read_and_set, (void *)12, &seen), 0);
    assert_int_equal(switches - before, 2);
    assert_ptr_equal(seen, (void *)1);
    assert_ptr_equal(get_value(g_var), (void *)1); /* the run's set ended with it */
    assert_int_equal(atomic_load(&publishes), 0);

    current_scope = NULL;
    ctx_context_release(c);
    scope_clear(&a);
    ctx_var_release(g_var);
}

/* ---- copies, captures and pool tasks take the provided context ---- */

static int pool_task(void *arg, void **result) {
    *result = get_value(g_var);
    ctx_var_set(g_var, arg, NULL); /* in the task's own copy */
    return 0;
}

static void test_copies_take_the_provided_context(void **state) {
    (void)state;
    g_var = make_var("v", NULL, 0, NULL);
    scope_t a;
    scope_init(&a);
    current_scope = &a;
    ASSERT_RC(ctx_var_set(g_var, (void *)1, NULL), 0);

    ctx_context_t *copy;
    long before = atomic_load(&copies);
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    assert_int_equal(atomic_load(&copies) - before, 1);
    EXPECT_CTX_GET(copy, g_var, 0, (void *)1);
    ASSERT_RC(ctx_var_set(g_var, (void *)2, NULL), 0);
    EXPECT_CTX_GET(copy, g_var, 0, (void *)1); /* a snapshot */
    ctx_context_release(copy);

    ctx_pool_t *pool;
    ctx_pool_options_t options = CTX_STRUCT_INIT(ctx_pool_options_t);
    options.threads = 2;
    ASSERT_RC(ctx_pool_new(&options, &pool), 0);
    for (int i = 0; i < 8; i++) {
        ctx_pool_future_t *future;
        ASSERT_RC(ctx_pool_submit(pool, pool_task, (void *)(intptr_t)(100 + i), &future), 0);
        ASSERT_RC(ctx_pool_future_wait(future, -1), 0);
        void *result = NULL;
        ASSERT_RC(ctx_pool_future_result(future, &result), 0);
        assert_ptr_equal(result, (void *)2); /* the submitter's, each time */
        ctx_pool_future_release(future);
    }
    ASSERT_RC(ctx_pool_release(pool), 0);
    assert_ptr_equal(get_value(g_var), (void *)2);

    current_scope = NULL;
    scope_clear(&a);
    ctx_var_release(g_var);
}

static void test_get_for_write_and_format(void **state) {
    (void)state;
    val_t five;
    val_init(&five, 5);
    ctx_var_t *v = make_var("v", NULL, 0, ops_clone());
    ctx_var_t *d = make_var("d", &five, 1, ops_clone());
    scope_t a;
    scope_init(&a);
    current_scope = &a;
    void *out = NULL;
    ASSERT_RC(ctx_var_get_for_write(v, &out), CTX_ENOTFOUND);

    val_t one;
    val_init(&one, 1);
    ASSERT_RC(ctx_var_set(v, &one, NULL), 0);
    ctx_context_t *before = ctx_context_retain(a.ctx);
    ASSERT_RC(ctx_var_get_for_write(v, &out), 0);
    assert_ptr_not_equal(out, &one);
    assert_int_equal(((val_t *)out)->payload, 1);
    EXPECT_GET(v, CTX_VALUE, out);
    EXPECT_CTX_GET(before, v, 0, &one); /* the provided context is untouched */
    void *again = NULL;
    ASSERT_RC(ctx_var_get_for_write(v, &again), 0); /* never private: clones again */
    assert_ptr_not_equal(again, out);
    ASSERT_RC(ctx_var_get_for_write(d, &out), 0); /* the default is cloned */
    assert_int_equal(((val_t *)out)->payload, 5);
    assert_int_equal(atomic_load(&five.cloned), 1);

    char buf[64];
    size_t len = 0;
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, &len), 0);
    assert_string_equal(buf, "v=1 d=5");
    current_scope = NULL;
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, &len), 0);
    assert_string_equal(buf, "");

    ctx_context_release(before);
    scope_clear(&a);
    ctx_var_release(v);
    ctx_var_release(d);
}

/* ---- failure changes nothing ---- */

static void test_publish_failure_changes_nothing(void **state) {
    (void)state;
    ctx_var_t *v = make_var("v", NULL, 0, ops_clone());
    scope_t a;
    scope_init(&a);
    current_scope = &a;
    val_t one, two;
    val_init(&one, 1);
    val_init(&two, 2);
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(v, &one, &t), 0);
    ctx_context_t *provided = a.ctx;

    atomic_store(&publish_fail, CTX_ENOMEM);
    ctx_token_t *t2 = NULL;
    ASSERT_RC(ctx_var_set(v, &two, &t2), CTX_ENOMEM);
    assert_null(t2);
    assert_int_equal(val_released(&two), 0); /* still the caller's */
    assert_int_equal(a.retained, 1);
    ASSERT_RC(ctx_var_reset(v, t), CTX_ENOMEM);
    assert_int_equal(ctx_token_used(t), 0);
    void *out = NULL;
    ASSERT_RC(ctx_var_get_for_write(v, &out), CTX_ENOMEM);
    assert_int_equal(atomic_load(&val_counters()->clones), 1);
    assert_int_equal(atomic_load(&val_counters()->released), 1); /* the clone only */
    assert_ptr_equal(a.ctx, provided);
    EXPECT_GET(v, CTX_VALUE, &one);

    atomic_store(&publish_fail, 0);
    ASSERT_RC(ctx_var_reset(v, t), 0); /* the token still works */
    EXPECT_GET(v, CTX_ENOTFOUND, NULL);
    ctx_token_release(t);
    current_scope = NULL;
    scope_clear(&a);
    assert_int_equal(val_released(&one), 1);
    ctx_var_release(v);
}

static void test_allocation_failures(void **state) {
    (void)state;
    ctx_test_alloc_install(); /* before anything the loop may free */
    ctx_var_t *v = make_var("v", NULL, 0, ops_release());
    ctx_var_t *others[40];
    scope_t a;
    scope_init(&a);
    for (int i = 0; i < 40; i++) {
        others[i] = make_var("o", NULL, 0, NULL);
        ASSERT_RC(ctx_context_set(a.ctx, others[i], (void *)(intptr_t)(i + 1)), 0);
    }
    current_scope = &a;
    val_t one;
    val_init(&one, 1);
    long live = ctx_test_alloc_live_blocks();
    int failures = 0;
    for (long n = 1; n < 40; n++) {
        ctx_context_t *before = ctx_context_retain(a.ctx);
        ctx_test_alloc_fail_nth(n);
        ctx_token_t *t = NULL;
        int rc = ctx_var_set(v, &one, &t);
        int rc2 = rc == 0 ? ctx_var_reset(v, t) : 0;
        ctx_test_alloc_fail_nth(0);
        if (rc) {
            ASSERT_RC(rc, CTX_ENOMEM);
            assert_ptr_equal(a.ctx, before);
            assert_null(t);
            failures++;
        } else if (rc2) {
            ASSERT_RC(rc2, CTX_ENOMEM);
            EXPECT_GET(v, CTX_VALUE, &one);
            ASSERT_RC(ctx_var_reset(v, t), 0);
            failures++;
        }
        EXPECT_GET(v, CTX_ENOTFOUND, NULL);
        EXPECT_GET(others[39], CTX_VALUE, (void *)40);
        ctx_token_release(t);
        ctx_context_release(before);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
    }
    assert_true(failures >= 3);
    current_scope = NULL;
    scope_clear(&a);
    ctx_var_release(v);
    for (int i = 0; i < 40; i++)
        ctx_var_release(others[i]);
    ctx_thread_release();
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

/* ---- what a host's garbage collector asks ---- */

typedef struct {
    int n;
    void *values[8];
    int exclusive[8];
} seen_t;

static int record_visit(ctx_var_t *var, void *value, int exclusive, void *arg) {
    (void)var;
    seen_t *seen = arg;
    seen->values[seen->n] = value;
    seen->exclusive[seen->n++] = exclusive;
    return seen->n == 8;
}

static seen_t visit_all(ctx_context_t *ctx) {
    seen_t seen = {0};
    ASSERT_RC(ctx_context_visit(ctx, CTX_VISIT_EXCLUSIVE, record_visit, &seen), 0);
    return seen;
}

static void test_visit_reports_exclusive_values(void **state) {
    (void)state;
    ctx_var_t *a = make_var("a", NULL, 0, NULL), *b = make_var("b", NULL, 0, NULL);
    ctx_context_t *ctx, *copy;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    seen_t seen = visit_all(ctx);
    assert_int_equal(seen.n, 0);
    ASSERT_RC(ctx_context_set(ctx, a, (void *)1), 0);
    ASSERT_RC(ctx_context_set(ctx, b, (void *)2), 0);
    seen = visit_all(ctx);
    assert_int_equal(seen.n, 2);
    assert_ptr_equal(seen.values[0], (void *)1);
    assert_ptr_equal(seen.values[1], (void *)2);
    assert_true(seen.exclusive[0] && seen.exclusive[1]);

    /* A copy shares everything; a set in it shares what it did not replace. */
    ASSERT_RC(ctx_context_copy(ctx, &copy), 0);
    seen = visit_all(ctx);
    assert_true(!seen.exclusive[0] && !seen.exclusive[1]);
    ASSERT_RC(ctx_context_set(copy, b, (void *)3), 0);
    seen = visit_all(ctx);
    assert_int_equal(seen.exclusive[0], 0); /* a: shared with the copy */
    assert_int_equal(seen.exclusive[1], 1); /* b: the copy has its own */
    ctx_context_release(copy);
    seen = visit_all(ctx);
    assert_true(seen.exclusive[0] && seen.exclusive[1]);

    /* Another reference to the context itself: nothing is exclusive. */
    ctx_context_retain(ctx);
    seen = visit_all(ctx);
    assert_true(!seen.exclusive[0] && !seen.exclusive[1]);
    ctx_context_release(ctx);

    /* A capture and a token share a value too. */
    ctx_capture_t cap;
    ASSERT_RC(ctx_capture_copy(&cap, ctx), 0);
    seen = visit_all(ctx);
    assert_true(!seen.exclusive[0] && !seen.exclusive[1]);
    ctx_capture_clear(&cap);

    /* Without the flag nothing is said to be exclusive. */
    seen.n = 0;
    ASSERT_RC(ctx_context_visit(ctx, 0, record_visit, &seen), 0);
    assert_int_equal(seen.n, 2);
    assert_true(!seen.exclusive[0] && !seen.exclusive[1]);

    /* visit stops at a non-zero result and returns it. */
    seen.n = 7;
    ASSERT_RC(ctx_context_visit(ctx, 0, record_visit, &seen), 1);
    assert_int_equal(seen.n, 8);
    ASSERT_RC(ctx_context_visit(NULL, 0, record_visit, &seen), CTX_EINVAL);
    ASSERT_RC(ctx_context_visit(ctx, 0, NULL, &seen), CTX_EINVAL);
    ASSERT_RC(ctx_context_visit(ctx, 2, record_visit, &seen), CTX_EINVAL);
    ctx_context_release(ctx);
    ctx_var_release(a);
    ctx_var_release(b);
}

/* ---- threads each have their own scope ---- */

typedef struct worker {
    ctx_var_t *var;
    pthread_barrier_t *barrier;
    int id;
    int errors;
} worker_t;

static void *worker_main(void *arg) {
    worker_t *w = arg;
    scope_t mine[2];
    scope_init(&mine[0]);
    scope_init(&mine[1]);
    pthread_barrier_wait(w->barrier);
    long rounds = CTX_SCALED(2000, 200, 200);
    for (long i = 0; i < rounds; i++) {
        for (int s = 0; s < 2; s++) {
            current_scope = &mine[s];
            intptr_t want = (intptr_t)(w->id * 1000000 + s * 100000 + i);
            ctx_token_t *t;
            if (ctx_var_set(w->var, (void *)want, &t) != 0)
                w->errors++;
            if (get_value(w->var) != (void *)want)
                w->errors++;
            if (i % 3 == 0 && ctx_var_reset(w->var, t) != 0)
                w->errors++;
            ctx_token_release(t);
        }
    }
    current_scope = NULL;
    scope_clear(&mine[0]);
    scope_clear(&mine[1]);
    ctx_thread_release();
    return NULL;
}

static void test_threads_keep_their_scopes(void **state) {
    (void)state;
    enum { N = 4 };
    ctx_var_t *v = make_var("v", NULL, 0, NULL);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, N);
    pthread_t threads[N];
    worker_t workers[N];
    for (int i = 0; i < N; i++) {
        workers[i] = (worker_t){v, &barrier, i + 1, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(workers[i].errors, 0);
    }
    pthread_barrier_destroy(&barrier);
    ctx_var_release(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_install_rules),
        TEST(test_thread_has_entered),
        HOST_TEST(test_get_follows_switches),
        HOST_TEST(test_set_publishes_a_new_context),
        HOST_TEST(test_tokens_name_the_scope),
        HOST_TEST(test_tokens_need_scopes),
        HOST_TEST(test_entered_context_comes_first),
        HOST_TEST(test_copies_take_the_provided_context),
        HOST_TEST(test_get_for_write_and_format),
        HOST_TEST(test_publish_failure_changes_nothing),
        HOST_TEST(test_allocation_failures),
        TEST(test_visit_reports_exclusive_values),
        HOST_TEST(test_threads_keep_their_scopes),
    };
    return RUN_TESTS(tests);
}
