/* SPDX-License-Identifier: MIT */
/*
 * test_alloc_fail.c — out-of-memory fault injection over every function of
 * the cancel module that allocates (SQLite's *fault.test): for each, the
 * N-th allocation fails for N = 1, 2, ... until the call succeeds without
 * the failure firing.  Every failed call must return CTX_ENOMEM and change
 * nothing: the current scope, the timer's pending count, the scopes'
 * states, and the number of live blocks are as before.  The functions that
 * must not allocate at all (check, callbacks, waits, reads) are run under
 * an allocator that fails everything.
 *
 * The first test runs first on purpose: it covers the first use of the
 * module, which makes the library's variable.
 */
#include "cancel_test.h"

typedef struct shape {
    ctx_cancel_scope_t *current; /* ctx_cancel_scope_current, or NULL */
    int check;
    uint64_t pending;
    long blocks;
} shape_t;

static shape_t observe(void) {
    shape_t s = {NULL, ctx_cancel_check(), timers_pending(), ctx_test_alloc_live_blocks()};
    ctx_cancel_scope_current(&s.current);
    return s;
}

static void assert_same(const shape_t *a, const shape_t *b, long extra_blocks) {
    assert_ptr_equal(a->current, b->current);
    assert_int_equal(a->check, b->check);
    assert_int_equal(a->pending, b->pending);
    assert_int_equal(a->blocks + extra_blocks, b->blocks);
}

/* Runs `attempt` with the n-th allocation failing, n = 1, 2, ...: each
 * attempt is preceded by `pre`; a failure must be CTX_ENOMEM, and after
 * `norm` (what undoes lasting side effects that are not the call's result:
 * a thread's state, a started timer thread) the shape must be as before,
 * give or take `extra` blocks made once for good.  Stops at the first
 * success without a failure, which the caller keeps and undoes. */
static long swept; /* failed attempts of the last SWEEP */

#define SWEEP(pre, attempt, norm, extra)                                       \
    do {                                                                       \
        swept = 0;                                                             \
        for (long n_ = 1;; n_++) {                                             \
            assert_true(n_ < 1000);                                            \
            (void)(pre);                                                       \
            shape_t before_ = observe();                                       \
            ctx_test_alloc_fail_nth(n_);                                       \
            int rc_ = (attempt);                                               \
            int fired_ = ctx_test_alloc_fired();                               \
            ctx_test_alloc_fail_nth(0);                                        \
            if (!fired_) {                                                     \
                ASSERT_RC(rc_, 0);                                             \
                break;                                                         \
            }                                                                  \
            ASSERT_RC(rc_, CTX_ENOMEM);                                        \
            swept++;                                                           \
            (void)(norm);                                                      \
            shape_t after_ = observe();                                        \
            assert_same(&before_, &after_, (extra));                           \
        }                                                                      \
        print_message("%-60.60s %ld failures\n", #attempt, swept);            \
        assert_true(swept > 0); /* it does allocate: each failure was seen */  \
    } while (0)

static int setup(void **state) {
    (void)state;
    ctx_test_alloc_install();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    cancel_teardown();
    ctx_test_alloc_uninstall();
    return 0;
}

/* First use: the variable (one block, kept once made), a fresh thread's
 * state, the token, the box, the map node. */
static void test_first_enter(void **state) {
    (void)state;
    ASSERT_RC(ctx_thread_release(), 0);
    long base = ctx_test_alloc_live_blocks();
    ctx_token_t *tok = NULL;
    /* The variable is the first allocation of the first use: made for good
     * from the second attempt on. */
    SWEEP(ctx_thread_release(), ctx_cancel_enter(NULL, &tok), ctx_thread_release(), n_ == 2);
    ASSERT_RC(ctx_cancel_check(), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base + 1); /* the variable */
}

static void test_enter_and_enter_child(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL), *child = NULL, *cur;
    ctx_token_t *tok = NULL, *inner = NULL;
    /* On a thread whose state the call makes. */
    SWEEP(ctx_thread_release(), ctx_cancel_enter(s, &tok), ctx_thread_release(), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    SWEEP(ctx_thread_release(), ctx_cancel_enter_child(NULL, &child, &inner),
          ctx_thread_release(), 0);
    ASSERT_RC(ctx_cancel_exit(inner), 0);
    ctx_cancel_scope_release(child);
    /* Nested, on a thread that has its state. */
    SWEEP(0, ctx_cancel_enter(s, &tok), 0, 0);
    SWEEP(0, ctx_cancel_enter_child(NULL, &child, &inner), 0, 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), 0);
    assert_ptr_equal(cur, child);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED); /* a child of s */
    ASSERT_RC(ctx_cancel_exit(inner), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(child);
    ctx_cancel_scope_release(s);
}

/* A deadline from scratch: the heap, the timer thread's state (made before
 * the start returns), the scope. */
static void test_scope_new_with_deadline(void **state) {
    (void)state;
    ctx_cancel_scope_t *root = new_scope(NULL, NULL), *s = NULL;
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    /* The timer thread may have started before a later allocation failed. */
    SWEEP(ctx_cancel_timer_release(), ctx_cancel_scope_new(root, &o, &s),
          ctx_cancel_timer_release(), 0);
    assert_int_equal(timers_pending(), 1);
    ctx_cancel_scope_release(s);
    /* A full heap must grow: 64 pending, then one more. */
    ctx_cancel_scope_t *many[64];
    for (int i = 0; i < 64; i++)
        many[i] = new_scope(NULL, &o);
    SWEEP(0, ctx_cancel_scope_new(NULL, &o, &s), 0, 0);
    assert_int_equal(timers_pending(), 65);
    ctx_cancel_scope_release(s);
    for (int i = 0; i < 64; i++)
        ctx_cancel_scope_release(many[i]);
    /* Without a deadline, and with an inherited one. */
    SWEEP(0, ctx_cancel_scope_new(root, NULL, &s), 0, 0);
    ctx_cancel_scope_release(s);
    ctx_cancel_scope_t *timed = new_scope(NULL, &o);
    SWEEP(0, ctx_cancel_scope_new(timed, &o, &s), 0, 0);
    assert_int_equal(timers_pending(), 1);
    ctx_cancel_scope_release(s);
    ctx_cancel_scope_release(timed);
    ctx_cancel_scope_release(root);
}

static void test_contexts(void **state) {
    (void)state;
    ctx_context_t *src, *out = NULL;
    ASSERT_RC(ctx_context_new(&src), 0);
    ctx_cancel_scope_t *root = new_scope(NULL, NULL), *child = NULL;
    SWEEP(0, ctx_cancel_context_set(src, root), 0, 0);
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    SWEEP(0, ctx_cancel_context_new(src, &o, &out, &child), 0, 0);
    ASSERT_RC(ctx_cancel_scope_cancel(root, NULL), 0);
    ASSERT_RC(ctx_cancel_scope_error(child), CTX_ECANCELLED);
    ctx_context_release(out);
    ctx_cancel_scope_release(child);
    SWEEP(0, ctx_cancel_context_new(NULL, NULL, &out, NULL), 0, 0);
    ctx_context_release(out);
    SWEEP(0, ctx_cancel_context_detach(src, &out), 0, 0);
    ctx_cancel_scope_t *none;
    ASSERT_RC(ctx_cancel_scope_get(out, &none), CTX_ENOTFOUND);
    ctx_context_release(out);
    SWEEP(0, ctx_cancel_context_detach(NULL, &out), 0, 0);
    ctx_context_release(out);
    ctx_cancel_scope_release(root);
    ctx_context_release(src);
}

/* cancel on a thread that has no ctxvar state yet: making it may fail,
 * and then nothing is cancelled and no callback runs. */
typedef struct cancel_try {
    ctx_cancel_scope_t *scope;
    long n;
    int rc;
    int fired;
} cancel_try_t;

static void *try_cancel(void *arg) {
    cancel_try_t *t = arg;
    ctx_test_alloc_fail_nth(t->n);
    t->rc = ctx_cancel_scope_cancel(t->scope, NULL);
    t->fired = ctx_test_alloc_fired();
    ctx_test_alloc_fail_nth(0);
    ctx_thread_release();
    return NULL;
}

static void count(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

static void test_cancel_on_a_fresh_thread(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    atomic_int runs = 0;
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, count, &runs), 0);
    for (long n = 1;; n++) {
        assert_true(n < 100);
        cancel_try_t t = {s, n, 1, 0};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, try_cancel, &t), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        if (!t.fired) {
            ASSERT_RC(t.rc, 0);
            break;
        }
        ASSERT_RC(t.rc, CTX_ENOMEM);
        ASSERT_RC(ctx_cancel_scope_error(s), 0);
        assert_int_equal(atomic_load(&runs), 0);
    }
    assert_int_equal(atomic_load(&runs), 1);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(s);
}

/* What must never allocate (on a thread that has its state). */
static void test_calls_that_never_allocate(void **state) {
    (void)state;
    ctx_cancel_scope_t *s, *child = new_scope(NULL, NULL), *got = NULL;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    atomic_int runs = 0;
    ctx_cancel_callback_t a, b;
    int64_t t;
    ctx_cancel_cause_t c = cause_of(0, NULL);
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);

    long attempts = ctx_test_alloc_attempts();
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_cancel_check(), 0);
    ASSERT_RC(ctx_cancel_scope_current(&got), 0);
    ASSERT_RC(ctx_cancel_remaining(&t), CTX_ENOTFOUND);
    ASSERT_RC(ctx_cancel_scope_get(copy, &got), 0);
    ctx_cancel_scope_release(got);
    ASSERT_RC(ctx_cancel_capture_check(&cap), 0);
    ASSERT_RC(ctx_cancel_callback_init(&a, s, count, &runs), 0);
    ASSERT_RC(ctx_cancel_callback_init_wakeup(&b, s, count, &runs), 0);
    ASSERT_RC(ctx_cancel_scope_wait(s, MS), CTX_ETIMEDOUT);
    ASSERT_RC(ctx_cancel_sleep(MS), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0); /* runs both callbacks */
    ASSERT_RC(ctx_cancel_scope_cause(s, &c), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_scope_wait(s, -1), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_callback_clear(&a), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(ctx_cancel_callback_clear(&b), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(child, NULL), 0);
    ctx_cancel_scope_release(child);
    ctx_test_alloc_fail_all(0);
    assert_int_equal(ctx_test_alloc_attempts(), attempts);
    assert_int_equal(atomic_load(&runs), 2);

    ctx_capture_clear(&cap);
    ctx_context_release(copy);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_enter), /* first: the variable is made here */
        cmocka_unit_test(test_enter_and_enter_child),
        cmocka_unit_test(test_scope_new_with_deadline),
        cmocka_unit_test(test_contexts),
        cmocka_unit_test(test_cancel_on_a_fresh_thread),
        cmocka_unit_test(test_calls_that_never_allocate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
