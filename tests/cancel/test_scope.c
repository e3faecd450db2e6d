/* SPDX-License-Identifier: MIT */
/*
 * test_scope.c — the semantics of Go's context tests (context_test.go),
 * re-expressed for scopes: parents cancel children and never the other way
 * round, the first cause wins and is read back (Cause), children of a
 * cancelled parent are born cancelled, deadlines only shrink and expire
 * with CTX_EDEADLINE, detaching keeps values but not cancellation; plus
 * where the scope lives in a context (enter/exit, copies, captures, the
 * formatter), the reference graph (released children unlink, long chains),
 * argument errors and the growth rule of every public struct.
 */
#include "cancel_test.h"

static ctx_var_t *request; /* a user variable, to see values survive */

static int setup(void **state) {
    (void)state;
    ASSERT_RC(ctx_var_new("request", NULL, &request), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_var_release(request);
    cancel_teardown();
    return 0;
}

/* ---- a scope alone ---- */

static void test_root_is_active(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    ASSERT_RC(ctx_cancel_scope_error(s), 0);
    int64_t t = 123;
    ASSERT_RC(ctx_cancel_scope_deadline(s, &t), CTX_ENOTFOUND);
    ASSERT_RC(ctx_cancel_scope_remaining(s, &t), CTX_ENOTFOUND);
    assert_int_equal(t, 123);
    ctx_cancel_cause_t c = cause_of(99, NULL);
    ASSERT_RC(ctx_cancel_scope_cause(s, &c), 0);
    assert_int_equal(c.code, 99); /* untouched while active */
    assert_ptr_equal(ctx_cancel_scope_retain(s), s);
    ctx_cancel_scope_release(s);
    ctx_cancel_scope_release(s);
}

/* Go: TestParentFinishesChild, TestCause (parent's cause reaches children). */
static void test_parent_cancels_descendants(void **state) {
    (void)state;
    counted_t data = {0};
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    ctx_cancel_scope_t *a = new_scope(root, NULL), *b = new_scope(root, NULL);
    ctx_cancel_scope_t *a1 = new_scope(a, NULL), *a2 = new_scope(a, NULL);
    ctx_cancel_scope_t *a11 = new_scope(a1, NULL);
    ctx_cancel_cause_t cause = cause_of(7, &data);
    ASSERT_RC(ctx_cancel_scope_cancel(root, &cause), 0);
    ctx_cancel_scope_t *all[] = {root, a, b, a1, a2, a11};
    for (size_t i = 0; i < 6; i++) {
        ASSERT_RC(ctx_cancel_scope_error(all[i]), CTX_ECANCELLED);
        ctx_cancel_cause_t got = cause_of(0, NULL);
        ASSERT_RC(ctx_cancel_scope_cause(all[i], &got), CTX_ECANCELLED);
        assert_int_equal(got.code, 7);
        assert_ptr_equal(got.data, &data);
        assert_null(got.release); /* the scope keeps the duty */
    }
    ASSERT_RC(ctx_cancel_scope_cancel(a11, NULL), CTX_CANCEL_ALREADY);
    ASSERT_RC(ctx_cancel_scope_cancel(root, NULL), CTX_CANCEL_ALREADY);
    /* The cause is released once, when the scope that took it is freed:
     * the children hold it (they hold their parents). */
    ctx_cancel_scope_release(root);
    assert_int_equal(atomic_load(&data.released), 0);
    for (size_t i = 1; i < 6; i++)
        ctx_cancel_scope_release(all[i]);
    assert_int_equal(atomic_load(&data.released), 1);
}

/* Go: TestChildFinishesFirst / TestWithCancel. */
static void test_child_never_cancels_parent(void **state) {
    (void)state;
    counted_t da = {0}, droot = {0};
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    ctx_cancel_scope_t *a = new_scope(root, NULL), *b = new_scope(root, NULL);
    ctx_cancel_scope_t *a1 = new_scope(a, NULL);
    ctx_cancel_cause_t ca = cause_of(1, &da), croot = cause_of(2, &droot);
    ASSERT_RC(ctx_cancel_scope_cancel(a, &ca), 0);
    ASSERT_RC(ctx_cancel_scope_error(root), 0);
    ASSERT_RC(ctx_cancel_scope_error(b), 0);
    ASSERT_RC(ctx_cancel_scope_error(a1), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_scope_cancel(root, &croot), 0);
    ASSERT_RC(ctx_cancel_scope_error(b), CTX_ECANCELLED);
    /* a kept the cause it was cancelled with first, and so did its child. */
    ctx_cancel_cause_t got = cause_of(0, NULL);
    ASSERT_RC(ctx_cancel_scope_cause(a1, &got), CTX_ECANCELLED);
    assert_int_equal(got.code, 1);
    ASSERT_RC(ctx_cancel_scope_cause(b, &got), CTX_ECANCELLED);
    assert_int_equal(got.code, 2);
    ctx_cancel_scope_release(a1);
    ctx_cancel_scope_release(a);
    assert_int_equal(atomic_load(&da.released), 1);
    ctx_cancel_scope_release(b);
    ctx_cancel_scope_release(root);
    assert_int_equal(atomic_load(&droot.released), 1);
}

static void test_first_cause_wins(void **state) {
    (void)state;
    counted_t first = {0}, second = {0};
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    ctx_cancel_cause_t c1 = cause_of(11, &first), c2 = cause_of(22, &second);
    ASSERT_RC(ctx_cancel_scope_cancel(s, &c1), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, &c2), CTX_CANCEL_ALREADY);
    ctx_cancel_cause_t got = cause_of(0, NULL);
    ASSERT_RC(ctx_cancel_scope_cause(s, &got), CTX_ECANCELLED);
    assert_int_equal(got.code, 11);
    assert_ptr_equal(got.data, &first);
    ctx_cancel_scope_release(s);
    assert_int_equal(atomic_load(&first.released), 1);
    assert_int_equal(atomic_load(&second.released), 0); /* never taken */
    /* A cancel without a cause reads back as {0, NULL}. */
    s = new_scope(NULL, NULL);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    got = cause_of(5, &first);
    ASSERT_RC(ctx_cancel_scope_cause(s, &got), CTX_ECANCELLED);
    assert_int_equal(got.code, 0);
    assert_null(got.data);
    ctx_cancel_scope_release(s);
}

/* Go: propagateCancel when the parent is done already. */
static void test_child_of_cancelled_parent_is_born_cancelled(void **state) {
    (void)state;
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    ctx_cancel_cause_t c = cause_of(3, NULL);
    ASSERT_RC(ctx_cancel_scope_cancel(root, &c), 0);
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    ctx_cancel_scope_t *child = new_scope(root, &o);
    ASSERT_RC(ctx_cancel_scope_error(child), CTX_ECANCELLED);
    ctx_cancel_cause_t got = cause_of(0, NULL);
    ASSERT_RC(ctx_cancel_scope_cause(child, &got), CTX_ECANCELLED);
    assert_int_equal(got.code, 3);
    assert_int_equal(timers_pending(), 0); /* born cancelled: no timer entry */
    ctx_cancel_scope_release(child);
    /* Of a parent whose deadline passed: CTX_EDEADLINE. */
    ctx_cancel_options_t past = timeout_opts(-1);
    ctx_cancel_scope_t *expired = new_scope(NULL, &past);
    ctx_cancel_scope_t *late = new_scope(expired, NULL);
    ASSERT_RC(ctx_cancel_scope_error(late), CTX_EDEADLINE);
    ctx_cancel_scope_release(late);
    ctx_cancel_scope_release(expired);
    ctx_cancel_scope_release(root);
}

/* Go: TestDeadline (a child's deadline is the earlier of its own and its
 * parent's), WithDeadline on a parent with an earlier deadline. */
static void test_deadlines_only_shrink(void **state) {
    (void)state;
    int64_t now = now_ns(), d;
    ctx_cancel_options_t o = deadline_opts(now + 3600 * 1000 * MS);
    ctx_cancel_scope_t *parent = new_scope(NULL, &o);
    assert_int_equal(timers_pending(), 1);
    o = deadline_opts(now + 7200 * 1000 * MS);
    ctx_cancel_scope_t *later = new_scope(parent, &o);
    ASSERT_RC(ctx_cancel_scope_deadline(later, &d), 0);
    assert_int_equal(d, now + 3600 * 1000 * MS);
    assert_int_equal(timers_pending(), 1); /* inherits: no entry of its own */
    o = deadline_opts(now + 600 * 1000 * MS);
    ctx_cancel_scope_t *earlier = new_scope(parent, &o);
    ASSERT_RC(ctx_cancel_scope_deadline(earlier, &d), 0);
    assert_int_equal(d, now + 600 * 1000 * MS);
    assert_int_equal(timers_pending(), 2);
    ctx_cancel_scope_t *grandchild = new_scope(earlier, NULL);
    ASSERT_RC(ctx_cancel_scope_deadline(grandchild, &d), 0);
    assert_int_equal(d, now + 600 * 1000 * MS);
    int64_t left = -1;
    ASSERT_RC(ctx_cancel_scope_remaining(grandchild, &left), 0);
    assert_true(left > 0 && left <= 600 * 1000 * MS);
    /* Both options set: the earlier wins. */
    o = deadline_opts(now + 900 * 1000 * MS);
    o.timeout_ns = 60 * 1000 * MS;
    ctx_cancel_scope_t *both = new_scope(NULL, &o);
    ASSERT_RC(ctx_cancel_scope_deadline(both, &d), 0);
    assert_true(d >= now + 60 * 1000 * MS && d < now + 900 * 1000 * MS);
    /* A timeout that overflows saturates to "never", not to a past time. */
    o = timeout_opts(INT64_MAX);
    ctx_cancel_scope_t *huge = new_scope(NULL, &o);
    ASSERT_RC(ctx_cancel_scope_error(huge), 0);
    ASSERT_RC(ctx_cancel_scope_deadline(huge, &d), CTX_ENOTFOUND);
    assert_int_equal(timers_pending(), 3);
    ctx_cancel_scope_t *all[] = {grandchild, earlier, later, parent, both, huge};
    for (size_t i = 0; i < 6; i++)
        ctx_cancel_scope_release(all[i]);
    assert_int_equal(timers_pending(), 0);
}

static void test_expired_at_birth(void **state) {
    (void)state;
    ctx_cancel_options_t o = timeout_opts(-5);
    ctx_cancel_scope_t *s = new_scope(NULL, &o);
    ASSERT_RC(ctx_cancel_scope_error(s), CTX_EDEADLINE);
    int64_t left = -1;
    ASSERT_RC(ctx_cancel_scope_remaining(s, &left), 0);
    assert_int_equal(left, 0);
    ctx_cancel_cause_t got = cause_of(9, NULL);
    ASSERT_RC(ctx_cancel_scope_cause(s, &got), CTX_EDEADLINE);
    assert_int_equal(got.code, 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), CTX_CANCEL_ALREADY);
    ctx_cancel_scope_release(s);
    o = deadline_opts(now_ns() - 1000);
    s = new_scope(NULL, &o);
    ASSERT_RC(ctx_cancel_scope_error(s), CTX_EDEADLINE);
    assert_int_equal(timers_pending(), 0);
    ctx_cancel_scope_release(s);
}

/* Go: TestDeadline/TestTimeout — expiry cancels with the deadline error,
 * children included, and the deadline's cause is {0, NULL}. */
static void test_deadline_expires(void **state) {
    (void)state;
    ctx_cancel_stats_t before = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    ASSERT_RC(ctx_cancel_stats(&before), 0);
    ctx_cancel_options_t o = timeout_opts(20 * MS);
    ctx_cancel_scope_t *s = new_scope(NULL, &o);
    ctx_cancel_scope_t *child = new_scope(s, NULL);
    ASSERT_RC(ctx_cancel_scope_wait(child, -1), CTX_EDEADLINE);
    ASSERT_RC(ctx_cancel_scope_error(s), CTX_EDEADLINE);
    ctx_cancel_cause_t got = cause_of(4, NULL);
    ASSERT_RC(ctx_cancel_scope_cause(child, &got), CTX_EDEADLINE);
    assert_int_equal(got.code, 0);
    assert_null(got.data);
    assert_int_equal(timers_pending(), 0);
    ctx_cancel_scope_release(child);
    ctx_cancel_scope_release(s);
}

/* A wait that reports CTX_EDEADLINE finds the scope cancelled, even when
 * the timer is still walking the parent's children (the waiter then
 * cancels its own scope: its deadline has passed).  A race: many rounds
 * with many children make the window likely, in the TSan run above all. */
static void test_deadline_wait_agrees_with_error(void **state) {
    (void)state;
    enum { ROUNDS = 100, CHILDREN = 64 };
    for (int r = 0; r < ROUNDS; r++) {
        ctx_cancel_options_t o = timeout_opts(MS / 2);
        ctx_cancel_scope_t *s = new_scope(NULL, &o);
        ctx_cancel_scope_t *kids[CHILDREN];
        for (int i = 0; i < CHILDREN; i++)
            kids[i] = new_scope(s, NULL);
        ctx_cancel_scope_t *last = kids[(r * 7) % CHILDREN];
        ASSERT_RC(ctx_cancel_scope_wait(last, -1), CTX_EDEADLINE);
        ASSERT_RC(ctx_cancel_scope_error(last), CTX_EDEADLINE);
        ctx_cancel_cause_t got = CTX_STRUCT_INIT(ctx_cancel_cause_t);
        ASSERT_RC(ctx_cancel_scope_cause(last, &got), CTX_EDEADLINE);
        assert_int_equal(got.code, 0);
        for (int i = 0; i < CHILDREN; i++)
            ctx_cancel_scope_release(kids[i]);
        ctx_cancel_scope_release(s);
    }
}

/* Go: TestCanceledTimeout — cancelled before the deadline: CTX_ECANCELLED,
 * and the timer entry is gone at once, not at release. */
static void test_cancel_before_deadline(void **state) {
    (void)state;
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    ctx_cancel_scope_t *s = new_scope(NULL, &o);
    ctx_cancel_scope_t *child = new_scope(s, &o); /* later than s's: inherits */
    o = timeout_opts(1800 * 1000 * MS);
    ctx_cancel_scope_t *own = new_scope(s, &o);
    assert_int_equal(timers_pending(), 2);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    assert_int_equal(timers_pending(), 0);
    ASSERT_RC(ctx_cancel_scope_error(own), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_scope_error(child), CTX_ECANCELLED);
    ctx_cancel_scope_release(own);
    ctx_cancel_scope_release(child);
    ctx_cancel_scope_release(s);
}

/* ---- the current context ---- */

static void *check_in(void *arg) {
    (void)arg;
    return (void *)(intptr_t)ctx_cancel_check();
}

static int check_in_context(ctx_context_t *ctx) {
    void *r = NULL;
    ASSERT_RC(ctx_context_run(ctx, check_in, NULL, &r), 0);
    return (int)(intptr_t)r;
}

static void test_enter_exit_and_copies(void **state) {
    (void)state;
    ctx_cancel_scope_t *cur = (ctx_cancel_scope_t *)1;
    ASSERT_RC(ctx_cancel_check(), 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), CTX_ENOTFOUND);
    assert_ptr_equal(cur, (ctx_cancel_scope_t *)1);
    ctx_context_t *before;
    ASSERT_RC(ctx_context_copy_current(&before), 0);

    ctx_cancel_scope_t *outer;
    ctx_token_t *t1;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &outer, &t1), 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), 0);
    assert_ptr_equal(cur, outer);
    ctx_context_t *copy;
    ASSERT_RC(ctx_context_copy_current(&copy), 0);

    ctx_cancel_scope_t *inner;
    ctx_token_t *t2;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &inner, &t2), 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), 0);
    assert_ptr_equal(cur, inner);
    ASSERT_RC(ctx_cancel_check(), 0);

    ASSERT_RC(ctx_cancel_scope_cancel(outer, NULL), 0);
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED); /* inner is outer's child */
    assert_int_equal(check_in_context(copy), CTX_ECANCELLED);
    assert_int_equal(check_in_context(before), 0); /* copied before: no scope */

    ASSERT_RC(ctx_cancel_exit(t2), 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), 0);
    assert_ptr_equal(cur, outer);
    ASSERT_RC(ctx_cancel_exit(t1), 0);
    ASSERT_RC(ctx_cancel_check(), 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), CTX_ENOTFOUND);
    assert_int_equal(check_in_context(copy), CTX_ECANCELLED); /* the copy keeps it */
    ctx_context_release(copy);
    ctx_context_release(before);
    ctx_cancel_scope_release(inner);
    ctx_cancel_scope_release(outer);
}

static void test_enter_given_scope_takes_a_reference(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter(s, &tok), 0);
    ctx_cancel_scope_release(s); /* the context holds its own */
    ctx_cancel_scope_t *cur;
    ASSERT_RC(ctx_cancel_scope_current(&cur), 0);
    assert_ptr_equal(cur, s);
    ASSERT_RC(ctx_cancel_scope_cancel(cur, NULL), 0);
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_cancel_check(), 0);
}

static void test_exit_refuses_foreign_tokens(void **state) {
    (void)state;
    ctx_token_t *user_tok, *tok;
    ASSERT_RC(ctx_var_set(request, (void *)1, &user_tok), 0);
    ASSERT_RC(ctx_cancel_enter_child(NULL, NULL, &tok), 0);
    ASSERT_RC(ctx_cancel_exit(user_tok), CTX_ETOKENVAR); /* not released */
    ASSERT_RC(ctx_var_reset(request, user_tok), 0);
    ctx_token_release(user_tok);
    /* Used in another context: refused, kept. */
    ctx_context_t *other;
    ASSERT_RC(ctx_context_new(&other), 0);
    ASSERT_RC(ctx_context_enter(other), 0);
    ASSERT_RC(ctx_cancel_exit(tok), CTX_ETOKENCTX);
    ASSERT_RC(ctx_context_exit(other), 0);
    ctx_context_release(other);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
}

/* Go: TestWithoutCancel — values stay, cancellation does not. */
static void test_detach_keeps_values_not_cancellation(void **state) {
    (void)state;
    ctx_token_t *vt, *tok;
    ASSERT_RC(ctx_var_set(request, (void *)42, &vt), 0);
    ctx_cancel_scope_t *s;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    ctx_context_t *detached, *copy;
    ASSERT_RC(ctx_cancel_context_detach(NULL, &detached), 0);
    ASSERT_RC(ctx_context_copy_current(&copy), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    void *v = NULL;
    ASSERT_RC(ctx_context_get(detached, request, &v), 0);
    assert_ptr_equal(v, (void *)42);
    assert_int_equal(check_in_context(detached), 0);
    ctx_cancel_scope_t *got = NULL;
    ASSERT_RC(ctx_cancel_scope_get(detached, &got), CTX_ENOTFOUND);
    /* Detaching a given context. */
    ctx_context_t *detached2;
    ASSERT_RC(ctx_cancel_context_detach(copy, &detached2), 0);
    assert_int_equal(check_in_context(copy), CTX_ECANCELLED);
    assert_int_equal(check_in_context(detached2), 0);
    ASSERT_RC(ctx_context_get(detached2, request, &v), 0);
    assert_ptr_equal(v, (void *)42);
    /* Detaching the current context, undoably. */
    ctx_token_t *dt;
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_enter(NULL, &dt), 0);
    ASSERT_RC(ctx_cancel_check(), 0);
    ASSERT_RC(ctx_var_get(request, &v), CTX_VALUE);
    assert_ptr_equal(v, (void *)42);
    ASSERT_RC(ctx_cancel_exit(dt), 0);
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED);
    /* Detaching a context that has no scope is a plain copy. */
    ctx_context_t *plain, *plain2;
    ASSERT_RC(ctx_context_new(&plain), 0);
    ASSERT_RC(ctx_cancel_context_detach(plain, &plain2), 0);
    assert_int_equal(ctx_context_length(plain2), 0);
    ctx_context_release(plain);
    ctx_context_release(plain2);

    ctx_context_release(detached);
    ctx_context_release(detached2);
    ctx_context_release(copy);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(s);
    ASSERT_RC(ctx_var_reset(request, vt), 0);
    ctx_token_release(vt);
}

static void test_context_new_and_set(void **state) {
    (void)state;
    ctx_context_t *src;
    ASSERT_RC(ctx_context_new(&src), 0);
    ASSERT_RC(ctx_context_set(src, request, (void *)5), 0);
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    ASSERT_RC(ctx_cancel_context_set(src, root), 0);
    ctx_cancel_scope_t *got;
    ASSERT_RC(ctx_cancel_scope_get(src, &got), 0);
    assert_ptr_equal(got, root);
    ctx_cancel_scope_release(got);

    ctx_context_t *derived;
    ctx_cancel_scope_t *child;
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    ASSERT_RC(ctx_cancel_context_new(src, &o, &derived, &child), 0);
    ASSERT_RC(ctx_cancel_scope_get(derived, &got), 0);
    assert_ptr_equal(got, child);
    ctx_cancel_scope_release(got);
    void *v = NULL;
    ASSERT_RC(ctx_context_get(derived, request, &v), 0);
    assert_ptr_equal(v, (void *)5);
    assert_int_equal(timers_pending(), 1);
    ASSERT_RC(ctx_cancel_scope_cancel(root, NULL), 0); /* the parent: reaches the child */
    assert_int_equal(check_in_context(derived), CTX_ECANCELLED);
    assert_int_equal(timers_pending(), 0);

    /* Of the current context (NULL src): a child of the current scope. */
    ctx_cancel_scope_t *cur_scope;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &cur_scope, &tok), 0);
    ctx_context_t *d2;
    ctx_cancel_scope_t *c2;
    ASSERT_RC(ctx_cancel_context_new(NULL, NULL, &d2, NULL), 0);
    ASSERT_RC(ctx_cancel_scope_get(d2, &c2), 0);
    assert_ptr_not_equal(c2, cur_scope);
    assert_int_equal(check_in_context(d2), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(cur_scope, NULL), 0);
    assert_int_equal(check_in_context(d2), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_exit(tok), 0);

    /* Setting into an entered context is refused; NULL removes the scope. */
    ASSERT_RC(ctx_context_enter(src), 0);
    ASSERT_RC(ctx_cancel_context_set(src, NULL), CTX_EENTERED);
    ASSERT_RC(ctx_context_exit(src), 0);
    ASSERT_RC(ctx_cancel_context_set(src, NULL), 0);
    ASSERT_RC(ctx_cancel_scope_get(src, &got), CTX_ENOTFOUND);

    ctx_cancel_scope_release(c2);
    ctx_cancel_scope_release(cur_scope);
    ctx_context_release(d2);
    ctx_cancel_scope_release(child);
    ctx_context_release(derived);
    ctx_cancel_scope_release(root);
    ctx_context_release(src);
}

static void test_captures(void **state) {
    (void)state;
    ctx_capture_t none;
    ctx_capture_current(&none);
    ASSERT_RC(ctx_cancel_capture_check(&none), 0);
    ctx_cancel_scope_t *got = NULL;
    ASSERT_RC(ctx_cancel_capture_scope(&none, &got), CTX_ENOTFOUND);
    ctx_capture_clear(&none);

    ctx_cancel_scope_t *s;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_cancel_capture_check(&cap), 0);
    ASSERT_RC(ctx_cancel_capture_scope(&cap, &got), 0);
    assert_ptr_equal(got, s);
    ctx_cancel_scope_release(got);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    ASSERT_RC(ctx_cancel_capture_check(&cap), CTX_ECANCELLED);
    void *r = NULL;
    ASSERT_RC(ctx_capture_run(&cap, check_in, NULL, &r), 0);
    assert_int_equal((int)(intptr_t)r, CTX_ECANCELLED);
    ctx_capture_clear(&cap);
    ctx_cancel_scope_release(s);
}

static void test_format_shows_the_scope(void **state) {
    (void)state;
    ctx_cancel_scope_t *s;
    ctx_token_t *tok;
    char buf[256];
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, NULL), 0);
    assert_non_null(strstr(buf, "ctxvar.cancel=active"));
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, NULL), 0);
    assert_non_null(strstr(buf, "ctxvar.cancel=cancelled"));
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(s);
    ctx_cancel_options_t o = timeout_opts(-1);
    ASSERT_RC(ctx_cancel_enter_child(&o, NULL, &tok), 0);
    ASSERT_RC(ctx_context_format_current(buf, sizeof buf, NULL), 0);
    assert_non_null(strstr(buf, "ctxvar.cancel=deadline exceeded"));
    ASSERT_RC(ctx_cancel_exit(tok), 0);
}

static void test_remaining_of_current(void **state) {
    (void)state;
    int64_t left = -1;
    ASSERT_RC(ctx_cancel_remaining(&left), CTX_ENOTFOUND);
    ctx_token_t *t1, *t2;
    ASSERT_RC(ctx_cancel_enter_child(NULL, NULL, &t1), 0);
    ASSERT_RC(ctx_cancel_remaining(&left), CTX_ENOTFOUND); /* a scope without deadline */
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    ASSERT_RC(ctx_cancel_enter_child(&o, NULL, &t2), 0);
    ASSERT_RC(ctx_cancel_remaining(&left), 0);
    assert_true(left > 0 && left <= 3600 * 1000 * MS);
    ASSERT_RC(ctx_cancel_exit(t2), 0);
    ASSERT_RC(ctx_cancel_exit(t1), 0);
    assert_int_equal(timers_pending(), 0); /* exit freed the scope and its entry */
}

/* ---- the reference graph ---- */

/* Children released before their parent is cancelled unlink themselves:
 * the parent holds nothing for them, and cancelling it later touches none
 * of their memory (ASan/valgrind would see it). */
static void test_released_children_unlink(void **state) {
    (void)state;
    ctx_test_alloc_install();
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    long base = ctx_test_alloc_live_blocks();
    enum { N = 1000 };
    static ctx_cancel_scope_t *kids[N];
    for (int i = 0; i < N; i++)
        kids[i] = new_scope(root, NULL);
    assert_int_equal(ctx_test_alloc_live_blocks(), base + N);
    for (int i = 0; i < N; i += 2) /* every other one: unlink from the middle */
        ctx_cancel_scope_release(kids[i]);
    for (int i = 1; i < N; i += 4) { /* cancelled, still held */
        ASSERT_RC(ctx_cancel_scope_cancel(kids[i], NULL), 0);
        ctx_cancel_scope_release(kids[i]);
        kids[i] = NULL;
    }
    assert_int_equal(ctx_test_alloc_live_blocks(), base + N / 4);
    ASSERT_RC(ctx_cancel_scope_cancel(root, NULL), 0);
    for (int i = 3; i < N; i += 4) {
        ASSERT_RC(ctx_cancel_scope_error(kids[i]), CTX_ECANCELLED);
        ctx_cancel_scope_release(kids[i]);
    }
    assert_int_equal(ctx_test_alloc_live_blocks(), base);
    ctx_cancel_scope_release(root);
    ctx_test_alloc_uninstall();
}

/* A chain of nested scopes: cancelling the root reaches the leaf and
 * freeing the chain from the leaf cascades, without recursion. */
static void test_long_chain(void **state) {
    (void)state;
    const int n = CTX_SCALED(100000, 10000, 20000);
    ctx_cancel_scope_t **chain = malloc(sizeof *chain * (size_t)n);
    assert_non_null(chain);
    chain[0] = new_scope(NULL, NULL);
    for (int i = 1; i < n; i++)
        chain[i] = new_scope(chain[i - 1], NULL);
    ASSERT_RC(ctx_cancel_scope_cancel(chain[0], NULL), 0);
    ASSERT_RC(ctx_cancel_scope_error(chain[n - 1]), CTX_ECANCELLED);
    for (int i = 0; i < n; i++) /* each held by its child now */
        ctx_cancel_scope_release(chain[i]);
    /* And an active chain released leaf-last. */
    chain[0] = new_scope(NULL, NULL);
    for (int i = 1; i < n; i++)
        chain[i] = new_scope(chain[i - 1], NULL);
    for (int i = 0; i < n; i++)
        ctx_cancel_scope_release(chain[i]);
    free(chain);
}

/* ---- errors and the growth rule ---- */

static void noop(void *arg) { (void)arg; }

static void test_argument_errors(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    ctx_cancel_cause_t c = cause_of(0, NULL);
    int64_t t;
    ctx_token_t *tok;
    ctx_context_t *ctx;
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_scope_new(NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_cancel(NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_error(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_cause(NULL, &c), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_cause(s, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_deadline(NULL, &t), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_deadline(s, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_remaining(NULL, &t), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_remaining(s, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_wait(NULL, 0), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_current(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_enter(s, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_enter_child(NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_exit(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_remaining(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_get(NULL, &s), CTX_EINVAL);
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_cancel_scope_get(ctx, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_context_set(NULL, s), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_context_new(ctx, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_context_detach(ctx, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_capture_check(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_capture_scope(NULL, &s), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_callback_init(NULL, s, noop, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_callback_init(&cb, NULL, noop, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_callback_init_wakeup(&cb, s, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_callback_clear(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_stats(NULL), CTX_EINVAL);
    ctx_cancel_scope_release(NULL);
    assert_null(ctx_cancel_scope_retain(NULL));
    ASSERT_RC(ctx_cancel_scope_error(s), 0); /* none of it touched s */
    ctx_context_release(ctx);
    (void)tok;
    ctx_cancel_scope_release(s);
}

/* Hides a pointer's provenance from the compiler, so that a short heap
 * block can be passed where a longer struct is declared. */
static void *hide(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

typedef struct {
    ctx_cancel_options_t o;
    char tail[16];
} big_options_t;

typedef struct {
    ctx_cancel_cause_t c;
    char tail[16];
} big_cause_t;

static void test_growth_rule(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = NULL;
    /* Options: too small, larger with a zero tail, larger with a non-zero one. */
    ctx_cancel_options_t small = CTX_STRUCT_INIT(ctx_cancel_options_t);
    small.size = sizeof(size_t);
    ASSERT_RC(ctx_cancel_scope_new(NULL, &small, &s), CTX_EINVAL);
    big_options_t big;
    memset(&big, 0, sizeof big);
    big.o.size = sizeof big;
    big.o.timeout_ns = 3600 * 1000 * MS;
    ASSERT_RC(ctx_cancel_scope_new(NULL, &big.o, &s), 0);
    int64_t d;
    ASSERT_RC(ctx_cancel_scope_deadline(s, &d), 0); /* the known member was read */
    big.tail[3] = 1;
    ctx_cancel_scope_t *refused = NULL;
    ASSERT_RC(ctx_cancel_scope_new(NULL, &big.o, &refused), CTX_EINVAL);
    assert_null(refused);
    ctx_token_t *tok = NULL;
    ASSERT_RC(ctx_cancel_enter_child(&big.o, NULL, &tok), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_check(), 0);

    /* Causes likewise. */
    big_cause_t bc;
    memset(&bc, 0, sizeof bc);
    bc.c.size = sizeof bc;
    bc.c.code = 8;
    bc.tail[0] = 1;
    ASSERT_RC(ctx_cancel_scope_cancel(s, &bc.c), CTX_EINVAL);
    ASSERT_RC(ctx_cancel_scope_error(s), 0); /* nothing changed */
    ctx_cancel_cause_t tiny = cause_of(1, NULL);
    tiny.size = 4;
    ASSERT_RC(ctx_cancel_scope_cancel(s, &tiny), CTX_EINVAL);
    bc.tail[0] = 0;
    ASSERT_RC(ctx_cancel_scope_cancel(s, &bc.c), 0);

    /* Outputs are written up to the caller's size and no further (ASan
     * checks the exact-size heap blocks). */
    size_t cause_small = offsetof(ctx_cancel_cause_t, code) + sizeof(int);
    unsigned char *buf = malloc(cause_small);
    assert_non_null(buf);
    memcpy(buf, &cause_small, sizeof cause_small);
    ASSERT_RC(ctx_cancel_scope_cause(s, hide(buf)), CTX_ECANCELLED);
    int code;
    memcpy(&code, buf + offsetof(ctx_cancel_cause_t, code), sizeof code);
    assert_int_equal(code, 8);
    free(buf);
    size_t stats_small = offsetof(ctx_cancel_stats_t, timers_pending) + sizeof(uint64_t);
    buf = malloc(stats_small);
    assert_non_null(buf);
    memset(buf, 0xff, stats_small);
    memcpy(buf, &stats_small, sizeof stats_small);
    ASSERT_RC(ctx_cancel_stats(hide(buf)), 0);
    size_t size;
    uint64_t pending;
    memcpy(&size, buf, sizeof size);
    memcpy(&pending, buf + offsetof(ctx_cancel_stats_t, timers_pending), sizeof pending);
    assert_int_equal(size, stats_small);
    assert_int_equal(pending, 0); /* s is cancelled: no entry */
    free(buf);
    ctx_cancel_stats_t bad = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    bad.size = 2;
    ASSERT_RC(ctx_cancel_stats(&bad), CTX_EINVAL);
    ctx_cancel_scope_release(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_is_active),
        cmocka_unit_test(test_parent_cancels_descendants),
        cmocka_unit_test(test_child_never_cancels_parent),
        cmocka_unit_test(test_first_cause_wins),
        cmocka_unit_test(test_child_of_cancelled_parent_is_born_cancelled),
        cmocka_unit_test(test_deadlines_only_shrink),
        cmocka_unit_test(test_expired_at_birth),
        cmocka_unit_test(test_deadline_expires),
        cmocka_unit_test(test_deadline_wait_agrees_with_error),
        cmocka_unit_test(test_cancel_before_deadline),
        cmocka_unit_test(test_enter_exit_and_copies),
        cmocka_unit_test(test_enter_given_scope_takes_a_reference),
        cmocka_unit_test(test_exit_refuses_foreign_tokens),
        cmocka_unit_test(test_detach_keeps_values_not_cancellation),
        cmocka_unit_test(test_context_new_and_set),
        cmocka_unit_test(test_captures),
        cmocka_unit_test(test_format_shows_the_scope),
        cmocka_unit_test(test_remaining_of_current),
        cmocka_unit_test(test_released_children_unlink),
        cmocka_unit_test(test_long_chain),
        cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_growth_rule),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
