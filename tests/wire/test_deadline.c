/* SPDX-License-Identifier: MIT */
/*
 * test_deadline.c — the wire's deadline is the cancellation scope's
 * (ctxvar/cancel.h):
 *
 *   extract   a grpc-timeout gives the new context a scope whose deadline
 *             lies between now + timeout read before and after the extract;
 *             code run in the context sees ctx_cancel_check() turn
 *             CTX_EDEADLINE, and never before the deadline (clock
 *             readings, not durations); the scope is a root (the remote
 *             caller's time): cancelling the extracting thread's scope
 *             leaves it alone; "0n" is born expired; a context released
 *             before its deadline leaves no timer entry;
 *   inject    sends the time left of the current scope, or of the given
 *             context's, never more than the scope had when the call
 *             began, nothing for a scope without a deadline, and the
 *             earlier deadline of nested scopes;
 *   one       ctx_wire_deadline_get / _remaining read what ctx_cancel_*
 *             read, and ctx_wire_deadline_set makes a child scope that the
 *             scope it replaced still cancels;
 *   shrink    ctx_wire_deadline_set with a later deadline keeps the earlier
 *             one (current and explicit contexts); <= 0 is born expired;
 *   memory    ctx_wire_deadline_set with each allocation failing in turn
 *             returns CTX_ENOMEM and leaves no scope and no timer entry.
 */
#include "wire_test.h"

#define MS 1000000ll

static ctx_wire_t *w;

static int setup(void **state) {
    (void)state;
    ASSERT_RC(ctx_wire_new(&w), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_thread_release();
    wire_timer_teardown();
    ctx_wire_release(w);
    return 0;
}

/* Extracts a context from one grpc-timeout header; *before / *after are
 * clock readings around the call. */
static ctx_context_t *extract_timeout(const char *value, int64_t *before, int64_t *after) {
    ctx_wire_headers_t *h = headers();
    add_header(h, "grpc-timeout", value);
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ctx_context_t *ctx = NULL;
    ctx_wire_extract_report_t rep = CTX_STRUCT_INIT(ctx_wire_extract_report_t);
    *before = ctx_wire_now_ns();
    ASSERT_RC(ctx_wire_extract(w, &c, 0, &ctx, &rep), 0);
    *after = ctx_wire_now_ns();
    assert_int_equal(rep.deadline, 1);
    ctx_wire_headers_release(h);
    return ctx;
}

static int64_t scope_deadline(ctx_context_t *ctx) {
    ctx_cancel_scope_t *s = NULL;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &s), 0);
    int64_t d = 0;
    ASSERT_RC(ctx_cancel_scope_deadline(s, &d), 0);
    ctx_cancel_scope_release(s);
    return d;
}

static uint64_t timers_pending(void) {
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    return st.timers_pending;
}

/* The header inject writes for ctx (NULL: current), into buf; the report. */
static int inject_timeout(ctx_context_t *ctx, char *buf, size_t cap, ctx_wire_inject_report_t *rep) {
    ctx_wire_headers_t *h = headers();
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    *rep = (ctx_wire_inject_report_t)CTX_STRUCT_INIT(ctx_wire_inject_report_t);
    ASSERT_RC(ctx_wire_inject(w, ctx, &c, 0, rep), 0);
    const char *t = header(h, "grpc-timeout");
    int found = t != NULL;
    snprintf(buf, cap, "%s", t ? t : "");
    ctx_wire_headers_release(h);
    return found;
}

/* ---- extract ---- */

typedef struct observed {
    int64_t deadline;    /* the scope's, read inside */
    int first;           /* ctx_cancel_check() at the start */
    int64_t first_at;    /* the clock just after that check */
    int slept;           /* ctx_cancel_sleep(-1) */
    int64_t woke_at;     /* the clock after it */
    int after;           /* ctx_cancel_check() then */
} observed_t;

static void *until_deadline(void *arg) {
    observed_t *o = arg;
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &o->deadline), 0);
    o->first = ctx_cancel_check();
    o->first_at = ctx_wire_now_ns();
    o->slept = ctx_cancel_sleep(-1); /* until the scope is cancelled */
    o->woke_at = ctx_wire_now_ns();
    o->after = ctx_cancel_check();
    return NULL;
}

static void test_extract_gives_a_scope_with_the_deadline(void **state) {
    (void)state;
    int64_t before, after;
    ctx_context_t *ctx = extract_timeout("5S", &before, &after);
    int64_t d = scope_deadline(ctx);
    assert_true(d >= before + 5000 * MS && d <= after + 5000 * MS);
    ctx_cancel_scope_t *s;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &s), 0);
    ASSERT_RC(ctx_cancel_scope_error(s), 0);
    ctx_cancel_scope_release(s);
    int64_t viewed;
    ASSERT_RC(ctx_wire_deadline_get(w, ctx, &viewed), 0); /* one deadline */
    assert_true(viewed == d);
    ctx_context_release(ctx);

    /* a short one: the code run in the context is stopped by it, and the
     * check never reports it before the clock has reached it */
    ctx = extract_timeout("150m", &before, &after);
    d = scope_deadline(ctx);
    observed_t o = {0};
    ASSERT_RC(ctx_context_run(ctx, until_deadline, &o, NULL), 0);
    assert_true(o.deadline == d);
    if (o.first != 0) { /* a slow run (valgrind) may start after it */
        ASSERT_RC(o.first, CTX_EDEADLINE);
        assert_true(o.first_at >= d);
    }
    ASSERT_RC(o.slept, CTX_EDEADLINE);
    assert_true(o.woke_at >= d); /* never early */
    ASSERT_RC(o.after, CTX_EDEADLINE);
    ctx_context_release(ctx);
}

static void test_extracted_scope_is_the_callers_time(void **state) {
    (void)state;
    /* the extracting thread works in a scope of its own */
    ctx_cancel_scope_t *mine;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &mine, &tok), 0);
    int64_t before, after;
    ctx_context_t *ctx = extract_timeout("1H", &before, &after);
    ctx_cancel_scope_t *theirs;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &theirs), 0);
    assert_ptr_not_equal(theirs, mine);
    ASSERT_RC(ctx_cancel_scope_cancel(mine, NULL), 0);
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_scope_error(theirs), 0); /* not a child of ours */
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(mine);
    ctx_cancel_scope_release(theirs);
    ctx_context_release(ctx);
}

static void *check_in(void *arg) {
    (void)arg;
    return (void *)(intptr_t)ctx_cancel_check();
}

static void test_zero_timeout_is_born_expired(void **state) {
    (void)state;
    int64_t before, after;
    ctx_context_t *ctx = extract_timeout("0n", &before, &after);
    void *r = NULL;
    ASSERT_RC(ctx_context_run(ctx, check_in, NULL, &r), 0);
    ASSERT_RC((int)(intptr_t)r, CTX_EDEADLINE);
    int64_t left = -1;
    ASSERT_RC(ctx_wire_deadline_remaining(w, ctx, &left), 0);
    assert_int_equal(left, 0);
    /* and it crosses on as 0n */
    char t[16];
    ctx_wire_inject_report_t rep;
    assert_true(inject_timeout(ctx, t, sizeof t, &rep));
    assert_string_equal(t, "0n");
    assert_int_equal(rep.timeout_ns, 0);
    ctx_context_release(ctx);
    /* no grpc-timeout: no scope at all */
    ctx_wire_headers_t *h = headers();
    add_header(h, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    ctx_wire_carrier_t c = ctx_wire_headers_carrier(h);
    ASSERT_RC(ctx_wire_extract(w, &c, 0, &ctx, NULL), 0);
    ctx_cancel_scope_t *s;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &s), CTX_ENOTFOUND);
    ctx_context_release(ctx);
    ctx_wire_headers_release(h);
}

static void test_released_early_leaves_no_timer(void **state) {
    (void)state;
    uint64_t base = timers_pending();
    enum { N = 100 };
    ctx_context_t *ctx[N];
    int64_t before, after;
    for (int i = 0; i < N; i++)
        ctx[i] = extract_timeout("1H", &before, &after);
    assert_int_equal(timers_pending(), base + N);
    for (int i = 0; i < N; i++)
        ctx_context_release(ctx[i]);
    assert_int_equal(timers_pending(), base);
}

/* ---- inject ---- */

static void test_inject_sends_the_scopes_time_left(void **state) {
    (void)state;
    char t[16];
    ctx_wire_inject_report_t rep;
    /* no scope, and a scope without a deadline: nothing */
    assert_false(inject_timeout(NULL, t, sizeof t, &rep));
    assert_int_equal(rep.deadline, 0);
    ctx_token_t *outer_tok, *inner_tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, NULL, &outer_tok), 0);
    assert_false(inject_timeout(NULL, t, sizeof t, &rep));

    /* the current scope's deadline, never more than it had */
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 60000 * MS;
    ctx_cancel_scope_t *scope;
    ASSERT_RC(ctx_cancel_enter_child(&o, &scope, &inner_tok), 0);
    int64_t left_before;
    ASSERT_RC(ctx_cancel_remaining(&left_before), 0);
    assert_true(inject_timeout(NULL, t, sizeof t, &rep));
    assert_int_equal(rep.deadline, 1);
    assert_true(rep.timeout_ns > 0 && rep.timeout_ns <= left_before);
    int64_t parsed;
    ASSERT_RC(ctx_wire_timeout_parse(t, strlen(t), &parsed), 0);
    assert_true(parsed == rep.timeout_ns);

    /* nested: a later inner deadline is the outer one */
    ctx_token_t *later_tok;
    o.timeout_ns = 3600000 * MS;
    ASSERT_RC(ctx_cancel_enter_child(&o, NULL, &later_tok), 0);
    ASSERT_RC(ctx_cancel_remaining(&left_before), 0);
    assert_true(left_before <= 60000 * MS);
    assert_true(inject_timeout(NULL, t, sizeof t, &rep));
    assert_true(rep.timeout_ns <= left_before);
    ASSERT_RC(ctx_cancel_exit(later_tok), 0);

    /* an explicit context: its scope, not the current one */
    ctx_context_t *other;
    o.timeout_ns = 2000 * MS;
    ASSERT_RC(ctx_cancel_context_new(NULL, &o, &other, NULL), 0);
    assert_true(inject_timeout(other, t, sizeof t, &rep));
    assert_true(rep.timeout_ns > 0 && rep.timeout_ns <= 2000 * MS);
    ASSERT_RC(ctx_cancel_exit(inner_tok), 0);
    ASSERT_RC(ctx_cancel_exit(outer_tok), 0);
    ASSERT_RC(ctx_wire_deadline_remaining(w, other, &left_before), 0); /* still its own */
    ctx_context_release(other);
    ctx_cancel_scope_release(scope);
    assert_false(inject_timeout(NULL, t, sizeof t, &rep)); /* back to none */
}

/* ---- one deadline ---- */

static void test_deadline_calls_are_views_of_the_scope(void **state) {
    (void)state;
    int64_t d, viewed, left;
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &d), CTX_ENOTFOUND);
    ASSERT_RC(ctx_wire_deadline_remaining(w, NULL, &left), CTX_ENOTFOUND);
    /* a scope made with the cancel API is what the wire reads */
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 10000 * MS;
    ctx_cancel_scope_t *outer, *cur;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(&o, &outer, &tok), 0);
    ASSERT_RC(ctx_cancel_scope_deadline(outer, &d), 0);
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &viewed), 0);
    assert_true(viewed == d);
    /* and what the wire sets is a scope: a child of the one current */
    ASSERT_RC(ctx_wire_deadline_set(w, NULL, 5000 * MS), 0);
    ASSERT_RC(ctx_cancel_scope_current(&cur), 0);
    assert_ptr_not_equal(cur, outer);
    ASSERT_RC(ctx_cancel_scope_deadline(cur, &d), 0);
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &viewed), 0);
    assert_true(viewed == d);
    ASSERT_RC(ctx_cancel_remaining(&left), 0);
    assert_true(left <= 5000 * MS);
    ASSERT_RC(ctx_cancel_scope_cancel(outer, NULL), 0);
    ASSERT_RC(ctx_cancel_check(), CTX_ECANCELLED); /* the outer one still rules */
    /* the token of the outer enter undoes both */
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &viewed), CTX_ENOTFOUND);
    ctx_cancel_scope_release(outer);
}

/* ---- deadlines only shrink ---- */

static void test_deadlines_only_shrink(void **state) {
    (void)state;
    int64_t d1, d2, d3;
    ASSERT_RC(ctx_wire_deadline_set(w, NULL, 1000 * MS), 0);
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &d1), 0);
    ASSERT_RC(ctx_wire_deadline_set(w, NULL, 60000 * MS), 0); /* later: ignored */
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &d2), 0);
    assert_true(d2 == d1);
    int64_t before = ctx_wire_now_ns();
    ASSERT_RC(ctx_wire_deadline_set(w, NULL, 100 * MS), 0); /* earlier: taken */
    ASSERT_RC(ctx_wire_deadline_get(w, NULL, &d3), 0);
    assert_true(d3 < d1 && d3 >= before + 100 * MS);

    /* the same on a context that is not entered */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_wire_deadline_set(w, ctx, 1000 * MS), 0);
    ASSERT_RC(ctx_wire_deadline_get(w, ctx, &d1), 0);
    ASSERT_RC(ctx_wire_deadline_set(w, ctx, 60000 * MS), 0);
    ASSERT_RC(ctx_wire_deadline_get(w, ctx, &d2), 0);
    assert_true(d2 == d1);
    /* the scope it replaced still cancels it */
    ctx_cancel_scope_t *first;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &first), 0);
    ASSERT_RC(ctx_wire_deadline_set(w, ctx, 30000 * MS), 0);
    ctx_cancel_scope_t *second;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &second), 0);
    assert_ptr_not_equal(first, second);
    ASSERT_RC(ctx_cancel_scope_cancel(first, NULL), 0);
    ASSERT_RC(ctx_cancel_scope_error(second), CTX_ECANCELLED);
    ctx_cancel_scope_release(first);
    ctx_cancel_scope_release(second);
    /* a new one under a cancelled scope is born with its parent's error */
    ASSERT_RC(ctx_wire_deadline_set(w, ctx, 0), 0);
    ctx_cancel_scope_t *expired;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &expired), 0);
    ASSERT_RC(ctx_cancel_scope_error(expired), CTX_ECANCELLED); /* its parent's cause wins */
    ctx_cancel_scope_release(expired);
    ctx_context_release(ctx);

    /* <= 0: born expired */
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_wire_deadline_set(w, ctx, -5), 0);
    ASSERT_RC(ctx_cancel_scope_get(ctx, &expired), 0);
    ASSERT_RC(ctx_cancel_scope_error(expired), CTX_EDEADLINE);
    ctx_cancel_scope_release(expired);
    ASSERT_RC(ctx_wire_deadline_set(NULL, ctx, 5), CTX_EINVAL);
    ctx_context_release(ctx);
}

/* ---- a failing allocation changes nothing ---- */

static void test_deadline_set_under_failing_allocator(void **state) {
    (void)state;
    ctx_token_t *tok; /* the cancel module's variable: made once, before counting */
    ASSERT_RC(ctx_cancel_enter(NULL, &tok), 0);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_context_t *other;
    ASSERT_RC(ctx_context_new(&other), 0);
    uint64_t base = timers_pending();
    ctx_test_alloc_install();
    ctx_context_t *targets[2] = {NULL, other}; /* the current context, another one */
    for (int t = 0; t < 2; t++) {
        long failures = 0;
        int done = 0;
        for (long n = 1; n < 200 && !done; n++) {
            ctx_test_alloc_fail_nth(n);
            int rc = ctx_wire_deadline_set(w, targets[t], 1000 * MS);
            int fired = ctx_test_alloc_fired();
            ctx_test_alloc_fail_nth(0);
            if (!fired) {
                ASSERT_RC(rc, 0);
                done = 1;
                break;
            }
            ASSERT_RC(rc, CTX_ENOMEM);
            failures++;
            int64_t d;
            ASSERT_RC(ctx_wire_deadline_get(w, targets[t], &d), CTX_ENOTFOUND); /* no scope */
            assert_int_equal(timers_pending(), base + (uint64_t)t);           /* no new entry */
        }
        assert_true(done);
        assert_true(failures > 0);
        int64_t d;
        ASSERT_RC(ctx_wire_deadline_get(w, targets[t], &d), 0);
        assert_int_equal(timers_pending(), base + 1 + (uint64_t)t);
    }
    ctx_test_alloc_uninstall();
    ctx_context_release(other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_extract_gives_a_scope_with_the_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extracted_scope_is_the_callers_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_timeout_is_born_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_early_leaves_no_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inject_sends_the_scopes_time_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_calls_are_views_of_the_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadlines_only_shrink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_set_under_failing_allocator, setup, teardown),
    };
    return cmocka_run_group_tests_name("wire_deadline", tests, NULL, NULL);
}
