/* SPDX-License-Identifier: MIT */
/*
 * test_task.c — tasks: the isolation example of asyncio's documentation
 * translated (two tasks set a variable, sleep, wake and read their own value
 * back), the same with a thousand tasks and random sleeps, a task's sets
 * staying in the task, awaiting tasks and futures, yield, cancellation in
 * every state (asyncio's propagation into an awaited task included), the
 * step protocol's errors, explicit contexts, and the failing allocator.
 */
#include "loop_test.h"

/* ---- asyncio's example, translated ----
 *
 *   client_addr_var = contextvars.ContextVar('client_addr')
 *
 *   def render_goodbye():
 *       client_addr = client_addr_var.get()
 *       return f'Good bye, client @ {client_addr}\r\n'.encode()
 *
 *   async def handle_request(addr, delay):
 *       client_addr_var.set(addr)
 *       await asyncio.sleep(delay)
 *       return render_goodbye()
 */

static ctx_var_t *client_addr_var;

static void render_goodbye(char *out, size_t cap) {
    void *addr = NULL;
    if (ctx_var_get(client_addr_var, &addr) == CTX_VALUE)
        snprintf(out, cap, "Good bye, client @ %s\r\n", (const char *)addr);
    else
        snprintf(out, cap, "Good bye, nobody\r\n");
}

typedef struct request {
    const char *addr;
    uint64_t delay_ms;
    int state;
    char reply[64];
    char *journal;       /* one letter per event, shared by both tasks */
} request_t;

static void note(request_t *r, char what) {
    size_t n = strlen(r->journal);
    r->journal[n] = what;
    r->journal[n + 1] = '\0';
}

static int handle_request(ctx_loop_task_t *task, void *arg, void **result) {
    request_t *r = arg;
    switch (r->state) {
    case 0:
        ASSERT_RC(ctx_var_set(client_addr_var, (void *)r->addr, NULL), 0);
        note(r, r->addr[0]);                   /* 'A' / 'B': set */
        r->state = 1;
        return ctx_loop_task_sleep(task, r->delay_ms);
    default:
        ASSERT_RC(ctx_loop_task_awaited(task, NULL), 0);
        note(r, (char)(r->addr[0] + 32));      /* 'a' / 'b': woke */
        render_goodbye(r->reply, sizeof r->reply);
        *result = r->reply;
        return 0;
    }
}

static void test_asyncio_isolation_example(void **state) {
    (void)state;
    client_addr_var = new_var("client_addr");
    ctx_loop_t *loop = new_loop(NULL);
    char journal[8] = "";
    request_t a = {"A-10.0.0.1:5000", 20, 0, "", journal};
    request_t b = {"B-10.0.0.2:6000", 10, 0, "", journal};
    ctx_loop_task_t *ta, *tb;
    ASSERT_RC(ctx_loop_task_new(loop, handle_request, &a, NULL, &ta), 0);
    ASSERT_RC(ctx_loop_task_new(loop, handle_request, &b, NULL, &tb), 0);
    run_loop(loop);
    /* Both set before either woke, and B (the shorter sleep) woke first:
     * the two tasks really interleaved on this one thread. */
    assert_string_equal(journal, "ABba");
    assert_string_equal(a.reply, "Good bye, client @ A-10.0.0.1:5000\r\n");
    assert_string_equal(b.reply, "Good bye, client @ B-10.0.0.2:6000\r\n");
    void *res = NULL;
    ASSERT_RC(ctx_loop_task_result(ta, &res), 0);
    assert_ptr_equal(res, a.reply);
    /* Nothing reached the loop thread's own context. */
    char here[64];
    render_goodbye(here, sizeof here);
    assert_string_equal(here, "Good bye, nobody\r\n");
    /* Each task's context keeps what the task set. */
    void *v;
    ASSERT_RC(ctx_context_get(ctx_loop_task_context(ta), client_addr_var, &v), 0);
    assert_ptr_equal(v, a.addr);
    ctx_loop_task_release(ta);
    ctx_loop_task_release(tb);
    close_loop(loop);
    ctx_var_release(client_addr_var);
}

/* ---- a thousand tasks, random sleeps ---- */

typedef struct many {
    ctx_var_t *id_var;
    ctx_var_t *step_var;
    ctx_loop_t *loop;
    ctx_test_rng_t *rng;
    int *wrong;
    int *callbacks_ok;
    long id;
    int state;
} many_t;

static void check_from_callback(void *arg) {
    many_t *m = arg;
    /* Scheduled from step 1: sees the task's values of that moment. */
    if (get_int(m->id_var) == m->id && get_int(m->step_var) == 1)
        (*m->callbacks_ok)++;
    set_int(m->step_var, 1000); /* must not reach the task */
}

static int many_step(ctx_loop_task_t *task, void *arg, void **result) {
    many_t *m = arg;
    ASSERT_RC(ctx_loop_task_awaited(task, NULL), 0);
    if (ctx_loop_task_current() != task)
        (*m->wrong)++;
    switch (m->state++) {
    case 0:
        if (get_int(m->id_var) != -1)
            (*m->wrong)++; /* a copy of the creator's: nothing set */
        set_int(m->id_var, m->id);
        set_int(m->step_var, 0);
        return ctx_loop_task_sleep(task, ctx_test_rng_below(m->rng, 20));
    case 1:
        if (get_int(m->id_var) != m->id || get_int(m->step_var) != 0)
            (*m->wrong)++;
        set_int(m->step_var, 1);
        ASSERT_RC(ctx_loop_call_soon(m->loop, check_from_callback, m, NULL, NULL), 0);
        if (ctx_test_rng_below(m->rng, 2))
            return ctx_loop_task_yield(task);
        return ctx_loop_task_sleep(task, ctx_test_rng_below(m->rng, 10));
    default:
        if (get_int(m->id_var) != m->id || get_int(m->step_var) != 1)
            (*m->wrong)++;
        *result = IV(m->id * 3);
        return 0;
    }
}

static void test_thousand_tasks_random_sleeps(void **state) {
    (void)state;
    uint64_t seed = ctx_test_seed(0x10005eedull);
    print_message("seed %llu (CTX_TEST_SEED to repeat)\n", (unsigned long long)seed);
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, seed);
    enum { N = 1000 };
    ctx_var_t *id_var = new_var("id");
    ctx_var_t *step_var = new_var("step");
    ctx_loop_t *loop = new_loop(NULL);
    int wrong = 0, callbacks_ok = 0;
    static many_t m[N];
    static ctx_loop_task_t *t[N];
    for (long i = 0; i < N; i++) {
        m[i] = (many_t){id_var, step_var, loop, &rng, &wrong, &callbacks_ok, i, 0};
        ASSERT_RC(ctx_loop_task_new(loop, many_step, &m[i], NULL, &t[i]), 0);
    }
    run_loop(loop);
    assert_int_equal(wrong, 0);
    assert_int_equal(callbacks_ok, N);
    for (long i = 0; i < N; i++) {
        void *res;
        ASSERT_RC(ctx_loop_task_result(t[i], &res), 0);
        assert_int_equal((long)(intptr_t)res, i * 3);
        assert_int_equal(ctx_loop_task_done(t[i]), 1);
        assert_int_equal(ctx_get_int(ctx_loop_task_context(t[i]), id_var), i);
        ctx_loop_task_release(t[i]);
    }
    assert_int_equal(get_int(id_var), -1);
    assert_int_equal(get_int(step_var), -1);
    close_loop(loop);
    ctx_var_release(id_var);
    ctx_var_release(step_var);
}

/* ---- a task's context: a copy at creation ---- */

typedef struct probe {
    ctx_var_t *var;
    long seen[4];
    int state;
} probe_t;

static int probe_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    probe_t *p = arg;
    p->seen[p->state] = get_int(p->var);
    switch (p->state++) {
    case 0:
        set_int(p->var, 50);
        return ctx_loop_task_yield(task);
    case 1:
        set_int(p->var, 51);
        return ctx_loop_task_sleep(task, 1);
    default:
        return 0;
    }
}

static void test_task_context_is_a_copy_taken_at_creation(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    set_int(x, 1);
    probe_t p = {x, {0}, 0};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, probe_step, &p, NULL, &t), 0);
    set_int(x, 2); /* after creation: invisible to the task */
    run_loop(loop);
    assert_int_equal(p.seen[0], 1);
    assert_int_equal(p.seen[1], 50); /* its own set, seen by its next step */
    assert_int_equal(p.seen[2], 51);
    assert_int_equal(get_int(x), 2);  /* never leaked out */
    ctx_loop_task_release(t);

    /* With an explicit context the task changes that context itself. */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, x, IV(7)), 0);
    probe_t q = {x, {0}, 0};
    ctx_loop_task_options_t opts = {sizeof(ctx_loop_task_options_t), ctx, NULL, NULL};
    ASSERT_RC(ctx_loop_task_new(loop, probe_step, &q, &opts, &t), 0);
    assert_ptr_equal(ctx_loop_task_context(t), ctx);
    run_loop(loop);
    assert_int_equal(q.seen[0], 7);
    assert_int_equal(ctx_get_int(ctx, x), 51);
    ctx_loop_task_release(t);

    /* Entered elsewhere when its step is due: the task fails. */
    reports_t reports;
    ASSERT_RC(ctx_loop_set_error_handler(loop, record_report, &reports), 0);
    memset(&reports, 0, sizeof reports);
    probe_t r = {x, {0}, 0};
    ASSERT_RC(ctx_loop_task_new(loop, probe_step, &r, &opts, &t), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    run_loop(loop);
    ASSERT_RC(ctx_context_exit(ctx), 0);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_EENTERED);
    assert_int_equal(ctx_loop_future_state(ctx_loop_task_future(t)), CTX_LOOP_FUTURE_FAILED);
    assert_int_equal(r.state, 0);
    assert_int_equal(reports.count, 1);
    ctx_loop_task_release(t);
    ctx_context_release(ctx);
    close_loop(loop);
    ctx_var_release(x);
}

/* ---- awaiting ---- */

typedef struct child {
    ctx_var_t *var;
    long seen;
    int state;
} child_t;

static int child_step(ctx_loop_task_t *task, void *arg, void **result) {
    child_t *c = arg;
    if (c->state++ == 0) {
        c->seen = get_int(c->var);
        set_int(c->var, 999); /* the child's own */
        return ctx_loop_task_sleep(task, 2);
    }
    *result = IV(42);
    return 0;
}

typedef struct parent {
    ctx_loop_t *loop;
    ctx_var_t *var;
    child_t child;
    ctx_loop_future_t *plain;
    int state;
    long got_child, got_plain, got_failed, got_done;
    long after;
} parent_t;

static void complete_plain(void *arg) {
    ASSERT_RC(ctx_loop_future_set_result(arg, IV(77)), 0);
}

static int parent_step(ctx_loop_task_t *task, void *arg, void **result) {
    parent_t *p = arg;
    void *res = NULL;
    int rc = ctx_loop_task_awaited(task, &res);
    switch (p->state++) {
    case 0: {
        set_int(p->var, 5);
        ctx_loop_task_t *child;
        ASSERT_RC(ctx_loop_task_new(p->loop, child_step, &p->child, NULL, &child), 0);
        rc = ctx_loop_task_await(task, ctx_loop_task_future(child));
        ctx_loop_task_release(child); /* the task holds what it awaits */
        return rc;
    }
    case 1:
        ASSERT_RC(rc, 0);
        p->got_child = (long)(intptr_t)res;
        p->after = get_int(p->var);
        ASSERT_RC(ctx_loop_future_new(p->loop, NULL, &p->plain), 0);
        ASSERT_RC(ctx_loop_call_later(p->loop, 1, complete_plain, p->plain, NULL, NULL), 0);
        return ctx_loop_task_await(task, p->plain);
    case 2: {
        ASSERT_RC(rc, 0);
        p->got_plain = (long)(intptr_t)res;
        ctx_loop_future_release(p->plain);
        ctx_loop_future_t *failed;
        ASSERT_RC(ctx_loop_future_new(p->loop, NULL, &failed), 0);
        ASSERT_RC(ctx_loop_future_set_error(failed, CTX_ETIMEDOUT), 0);
        rc = ctx_loop_task_await(task, failed); /* already done: next iteration */
        ctx_loop_future_release(failed);
        return rc;
    }
    case 3:
        p->got_failed = rc;
        return ctx_loop_task_yield(task);
    default:
        p->got_done = rc;
        *result = IV(1);
        return 0;
    }
}

static void test_await_tasks_and_futures(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    parent_t p = {loop, x, {x, 0, 0}, NULL, 0, 0, 0, 0, 99, 0};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, parent_step, &p, NULL, &t), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, ctx_loop_task_future(t)), 0);
    assert_int_equal(p.child.seen, 5);  /* the child copied the parent's context */
    assert_int_equal(p.got_child, 42);
    assert_int_equal(p.after, 5);       /* the child's set stayed the child's */
    assert_int_equal(p.got_plain, 77);
    ASSERT_RC(p.got_failed, CTX_ETIMEDOUT);
    ASSERT_RC(p.got_done, 0);
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0);
    ctx_loop_task_release(t);
    close_loop(loop);
    ctx_var_release(x);
}

/* ---- yield ---- */

typedef struct yielder {
    char name;
    char *journal;
    int left;
} yielder_t;

static int yield_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    yielder_t *y = arg;
    size_t n = strlen(y->journal);
    y->journal[n] = y->name;
    y->journal[n + 1] = '\0';
    if (--y->left == 0)
        return 0;
    return ctx_loop_task_yield(task);
}

static void test_yield_interleaves(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    char journal[16] = "";
    yielder_t a = {'a', journal, 3}, b = {'b', journal, 3};
    ASSERT_RC(ctx_loop_task_new(loop, yield_step, &a, NULL, NULL), 0);
    ASSERT_RC(ctx_loop_task_new(loop, yield_step, &b, NULL, NULL), 0);
    run_loop(loop);
    assert_string_equal(journal, "ababab");
    close_loop(loop);
}

/* ---- cancellation ---- */

static void cancel_soon(void *arg) { ASSERT_RC(ctx_loop_task_cancel(arg), 1); }

/* Sleeps "forever"; its first step schedules the cancel of `cancel` (itself
 * when NULL) for the next iteration, so the cancel always finds the sleep
 * armed, whatever the clock does. */
typedef struct sleeper {
    ctx_loop_t *loop;
    ctx_loop_task_t *cancel;
    int state;
    int steps;
    int woke_with;
    int suppress;       /* go on after a cancel */
    int released;
} sleeper_t;

static int sleeper_step(ctx_loop_task_t *task, void *arg, void **result) {
    sleeper_t *s = arg;
    s->steps++;
    if (s->state++ == 0) {
        ASSERT_RC(ctx_loop_call_soon(s->loop, cancel_soon, s->cancel ? s->cancel : task, NULL,
                                     NULL),
                  0);
        return ctx_loop_task_sleep(task, 100000000);
    }
    s->woke_with = ctx_loop_task_awaited(task, NULL);
    if (s->woke_with == CTX_ECANCELLED && !s->suppress)
        return CTX_ECANCELLED;
    *result = IV(8);
    return 0;
}

static void sleeper_release(void *arg) { ((sleeper_t *)arg)->released++; }

static void test_cancel_a_sleeping_task(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    sleeper_t s = {0};
    s.loop = loop;
    ctx_loop_task_options_t opts = {sizeof(ctx_loop_task_options_t), NULL, sleeper_release, NULL};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, sleeper_step, &s, &opts, &t), 0);
    run_loop(loop); /* returns: the long sleep is gone */
    ASSERT_RC(s.woke_with, CTX_ECANCELLED);
    assert_int_equal(s.steps, 2);
    assert_int_equal(s.released, 1);
    assert_int_equal(ctx_loop_future_state(ctx_loop_task_future(t)), CTX_LOOP_FUTURE_CANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    assert_int_equal(ctx_loop_task_cancelling(t), 1);
    ASSERT_RC(ctx_loop_task_cancel(t), 0); /* done */
    ctx_loop_task_release(t);

    /* A task may decline (asyncio: catching CancelledError). */
    sleeper_t s2 = {0};
    s2.loop = loop;
    s2.suppress = 1;
    ASSERT_RC(ctx_loop_task_new(loop, sleeper_step, &s2, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(s2.woke_with, CTX_ECANCELLED);
    void *res;
    ASSERT_RC(ctx_loop_task_result(t, &res), 0);
    assert_ptr_equal(res, IV(8));
    ctx_loop_task_release(t);
    close_loop(loop);
}

static void test_cancel_before_the_first_step(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    sleeper_t s = {0};
    ctx_loop_task_options_t opts = {sizeof(ctx_loop_task_options_t), NULL, sleeper_release, NULL};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, sleeper_step, &s, &opts, &t), 0);
    ASSERT_RC(ctx_loop_future_cancel(ctx_loop_task_future(t)), 1); /* = ctx_loop_task_cancel */
    assert_int_equal(ctx_loop_task_done(t), 0); /* ends on the loop */
    run_loop(loop);
    assert_int_equal(s.steps, 0);
    assert_int_equal(s.released, 1);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    ctx_loop_task_release(t);
    close_loop(loop);
}

typedef struct awaiter {
    ctx_loop_t *loop;
    sleeper_t inner;
    ctx_loop_task_t *inner_task;
    ctx_loop_future_t *plain;
    int state;
    int woke_with;
} awaiter_t;

static int await_inner_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    awaiter_t *a = arg;
    if (a->state++ == 0) {
        a->inner.loop = a->loop;
        a->inner.cancel = task; /* the inner task's first step cancels us */
        ASSERT_RC(ctx_loop_task_new(a->loop, sleeper_step, &a->inner, NULL, &a->inner_task), 0);
        return ctx_loop_task_await(task, ctx_loop_task_future(a->inner_task));
    }
    a->woke_with = ctx_loop_task_awaited(task, NULL);
    return a->woke_with;
}

static void test_cancel_propagates_to_the_awaited_task(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    awaiter_t a = {0};
    a.loop = loop;
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, await_inner_step, &a, NULL, &t), 0);
    run_loop(loop);
    /* The inner task was cancelled (it woke with CTX_ECANCELLED and ended
     * so), and the outer one saw the inner one's outcome. */
    ASSERT_RC(a.inner.woke_with, CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(a.inner_task, NULL), CTX_ECANCELLED);
    ASSERT_RC(a.woke_with, CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    assert_int_equal(ctx_loop_task_cancelling(a.inner_task), 1);
    ctx_loop_task_release(a.inner_task);
    ctx_loop_task_release(t);
    close_loop(loop);
}

static int await_plain_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    awaiter_t *a = arg;
    if (a->state++ == 0) {
        if (a->loop) /* cancel once the wait is armed */
            ASSERT_RC(ctx_loop_call_soon(a->loop, cancel_soon, task, NULL, NULL), 0);
        return ctx_loop_task_await(task, a->plain);
    }
    a->woke_with = ctx_loop_task_awaited(task, NULL);
    return 0;
}

static void test_cancel_a_task_awaiting_a_future(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    awaiter_t a = {0};
    a.loop = loop;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &a.plain), 0);
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, await_plain_step, &a, NULL, &t), 0);
    ASSERT_RC(ctx_loop_run_until_done(loop, ctx_loop_task_future(t)), 0);
    ASSERT_RC(a.woke_with, CTX_ECANCELLED);
    assert_int_equal(ctx_loop_future_state(a.plain), CTX_LOOP_FUTURE_CANCELLED);
    ASSERT_RC(ctx_loop_future_set_result(a.plain, NULL), CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), 0); /* the step went on and completed */
    ctx_loop_future_release(a.plain);
    ctx_loop_task_release(t);

    /* The awaited future already done (its wake-up on the way): the task
     * still hears of the cancel. */
    awaiter_t b = {0};
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &b.plain), 0);
    ASSERT_RC(ctx_loop_task_new(loop, await_plain_step, &b, NULL, &t), 0);
    assert_true(ctx_loop_run(loop, UV_RUN_NOWAIT) >= 0); /* first step: awaits */
    ASSERT_RC(ctx_loop_future_set_result(b.plain, IV(3)), 0);
    ASSERT_RC(ctx_loop_task_cancel(t), 1);
    run_loop(loop);
    ASSERT_RC(b.woke_with, CTX_ECANCELLED);
    ctx_loop_future_release(b.plain);
    ctx_loop_task_release(t);
    close_loop(loop);
}

/* A task cancelling itself hears of it in its next step. */
static int self_cancel_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    awaiter_t *a = arg;
    if (a->state++ == 0) {
        ASSERT_RC(ctx_loop_task_cancel(task), 1);
        return ctx_loop_task_yield(task);
    }
    a->woke_with = ctx_loop_task_awaited(task, NULL);
    return a->woke_with;
}

static void test_self_cancel(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    awaiter_t a = {0};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, self_cancel_step, &a, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(a.woke_with, CTX_ECANCELLED);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ECANCELLED);
    ctx_loop_task_release(t);
    close_loop(loop);
}

/* ---- the step protocol's errors ---- */

typedef struct misuse {
    ctx_loop_t *loop;
    ctx_loop_t *other_loop;
    int mode;
    int rc[8];
} misuse_t;

static int misuse_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    misuse_t *m = arg;
    switch (m->mode) {
    case 0: /* WAIT without arming */
        return CTX_LOOP_TASK_WAIT;
    case 1: { /* every wrong way to arm, then a right one */
        ctx_loop_future_t *foreign;
        ASSERT_RC(ctx_loop_future_new(m->other_loop, NULL, &foreign), 0);
        m->rc[0] = ctx_loop_task_await(task, foreign);
        m->rc[1] = ctx_loop_task_await(task, ctx_loop_task_future(task));
        m->rc[2] = ctx_loop_task_await(task, NULL);
        m->rc[3] = ctx_loop_task_await(NULL, foreign);
        m->rc[4] = ctx_loop_task_sleep(task, 1);
        m->rc[5] = ctx_loop_task_yield(task); /* second wait */
        m->rc[6] = ctx_loop_task_sleep(task, 1);
        ctx_loop_future_release(foreign);
        m->mode = 3;
        return m->rc[4];
    }
    case 2:
        return 7; /* unknown status */
    case 3:
        return CTX_ETIMEDOUT; /* a failure code of the step's own */
    default:
        return 0;
    }
}

static void test_step_protocol_errors(void **state) {
    (void)state;
    reports_t reports;
    ctx_loop_t *loop = new_loop(&reports);
    ctx_loop_t *other = new_loop(NULL);
    misuse_t m = {loop, other, 0, {0}};
    ctx_loop_task_t *t;
    ASSERT_RC(ctx_loop_task_new(loop, misuse_step, &m, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_EINVAL);
    assert_int_equal(reports.count, 1);
    ctx_loop_task_release(t);

    m.mode = 1;
    ASSERT_RC(ctx_loop_task_new(loop, misuse_step, &m, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(m.rc[0], CTX_EINVAL);
    ASSERT_RC(m.rc[1], CTX_EINVAL);
    ASSERT_RC(m.rc[2], CTX_EINVAL);
    ASSERT_RC(m.rc[3], CTX_EINVAL);
    ASSERT_RC(m.rc[4], CTX_LOOP_TASK_WAIT);
    ASSERT_RC(m.rc[5], CTX_EINVAL);
    ASSERT_RC(m.rc[6], CTX_EINVAL);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_ETIMEDOUT);
    assert_int_equal(ctx_loop_future_state(ctx_loop_task_future(t)), CTX_LOOP_FUTURE_FAILED);
    /* Outside a step. */
    ASSERT_RC(ctx_loop_task_sleep(t, 1), CTX_EINVAL);
    ASSERT_RC(ctx_loop_task_yield(t), CTX_EINVAL);
    ASSERT_RC(ctx_loop_task_awaited(t, NULL), CTX_EINVAL);
    assert_null(ctx_loop_task_current());
    /* A task's future is completed only by the task. */
    ASSERT_RC(ctx_loop_future_set_result(ctx_loop_task_future(t), NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_future_set_error(ctx_loop_task_future(t), CTX_EINVAL), CTX_EINVAL);
    ctx_loop_task_release(t);

    m.mode = 2;
    ASSERT_RC(ctx_loop_task_new(loop, misuse_step, &m, NULL, &t), 0);
    run_loop(loop);
    ASSERT_RC(ctx_loop_task_result(t, NULL), CTX_EINVAL);
    assert_int_equal(reports.count, 2);
    ctx_loop_task_release(t);

    ASSERT_RC(ctx_loop_task_new(NULL, misuse_step, &m, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_task_new(loop, NULL, &m, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_task_cancel(NULL), CTX_EINVAL);
    ASSERT_RC(ctx_loop_task_result(NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_loop_task_done(NULL), 0);
    assert_int_equal(ctx_loop_task_cancelling(NULL), 0);
    assert_null(ctx_loop_task_future(NULL));
    assert_null(ctx_loop_task_context(NULL));
    ctx_loop_task_release(NULL);
    close_loop(other);
    close_loop(loop);
}

/* ---- results and done-callbacks on a task ---- */

static int results_released;
static void release_result(void *result) {
    free(result);
    results_released++;
}

static int malloc_result_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)task;
    (void)arg;
    *result = malloc(16);
    return 0;
}

typedef struct done_seen {
    ctx_var_t *var;
    long value;
    int calls;
    void *result;
} done_seen_t;

static void on_task_done(ctx_loop_future_t *f, void *user) {
    done_seen_t *d = user;
    d->calls++;
    d->value = get_int(d->var);
    ASSERT_RC(ctx_loop_future_result(f, &d->result), 0);
}

static void test_task_result_and_done_callback(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_loop_t *loop = new_loop(NULL);
    ctx_loop_task_options_t opts = {sizeof(ctx_loop_task_options_t), NULL, NULL, release_result};
    ctx_loop_task_t *t;
    results_released = 0;
    ASSERT_RC(ctx_loop_task_new(loop, malloc_result_step, NULL, &opts, &t), 0);
    set_int(x, 12);
    done_seen_t d = {x, 0, 0, NULL};
    ASSERT_RC(ctx_loop_future_add_done_callback(ctx_loop_task_future(t), on_task_done, &d, NULL), 0);
    set_int(x, 13);
    run_loop(loop);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.value, 12); /* the adder's context at add time */
    void *res;
    ASSERT_RC(ctx_loop_task_result(t, &res), 0);
    assert_ptr_equal(res, d.result);
    assert_int_equal(results_released, 0);
    assert_ptr_equal(ctx_loop_task_retain(t), t);
    ctx_loop_task_release(t);
    ctx_loop_task_release(t);
    assert_int_equal(results_released, 1);
    /* Fire and forget: the loop's reference carries the task. */
    ASSERT_RC(ctx_loop_task_new(loop, malloc_result_step, NULL, &opts, NULL), 0);
    run_loop(loop);
    assert_int_equal(results_released, 2);
    close_loop(loop);
    ctx_var_release(x);
}

/* ---- the failing allocator ---- */

typedef struct sleepy {
    int state;
    int sleep_rc;
} sleepy_t;

static int sleepy_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    sleepy_t *s = arg;
    if (s->state++ == 0) {
        ctx_test_alloc_fail_nth(1); /* the timer heap's first array */
        s->sleep_rc = ctx_loop_task_sleep(task, 1);
        ctx_test_alloc_fail_nth(0);
        if (s->sleep_rc == CTX_ENOMEM)
            s->sleep_rc = ctx_loop_task_sleep(task, 1); /* and again, for real */
        return s->sleep_rc;
    }
    return 0;
}

static void test_allocation_failure(void **state) {
    (void)state;
    ctx_var_t *x = new_var("x");
    ctx_test_alloc_install();
    ctx_loop_t *loop = new_loop(NULL);
    set_int(x, 4);
    int created = 0;
    for (long n = 1;; n++) {
        long live = ctx_test_alloc_live_blocks();
        ctx_loop_task_t *t = NULL;
        sleepy_t s = {0};
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_task_new(loop, sleepy_step, &s, NULL, &t);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            created++;
            run_loop(loop);
            ASSERT_RC(s.sleep_rc, CTX_LOOP_TASK_WAIT);
            ASSERT_RC(ctx_loop_task_result(t, NULL), 0);
            ctx_loop_task_release(t);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_null(t);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
    }
    assert_int_equal(created, 1);
    /* add_done_callback. */
    ctx_loop_future_t *f;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    for (long n = 1;; n++) {
        long live = ctx_test_alloc_live_blocks();
        done_seen_t d = {x, 0, 0, NULL};
        ctx_test_alloc_fail_nth(n);
        int r = ctx_loop_future_add_done_callback(f, on_task_done, &d, NULL);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(r, 0);
            ASSERT_RC(ctx_loop_future_set_result(f, NULL), 0);
            run_loop(loop);
            assert_int_equal(d.calls, 1);
            assert_int_equal(d.value, 4);
            break;
        }
        ASSERT_RC(r, CTX_ENOMEM);
        assert_int_equal(ctx_test_alloc_live_blocks(), live);
    }
    ctx_loop_future_release(f);
    close_loop(loop);
    ctx_thread_release();
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
    ctx_var_release(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_asyncio_isolation_example, release_thread),
        cmocka_unit_test_teardown(test_thousand_tasks_random_sleeps, release_thread),
        cmocka_unit_test_teardown(test_task_context_is_a_copy_taken_at_creation, release_thread),
        cmocka_unit_test_teardown(test_await_tasks_and_futures, release_thread),
        cmocka_unit_test_teardown(test_yield_interleaves, release_thread),
        cmocka_unit_test_teardown(test_cancel_a_sleeping_task, release_thread),
        cmocka_unit_test_teardown(test_cancel_before_the_first_step, release_thread),
        cmocka_unit_test_teardown(test_cancel_propagates_to_the_awaited_task, release_thread),
        cmocka_unit_test_teardown(test_cancel_a_task_awaiting_a_future, release_thread),
        cmocka_unit_test_teardown(test_self_cancel, release_thread),
        cmocka_unit_test_teardown(test_step_protocol_errors, release_thread),
        cmocka_unit_test_teardown(test_task_result_and_done_callback, release_thread),
        cmocka_unit_test_teardown(test_allocation_failure, release_thread),
    };
    return cmocka_run_group_tests_name("loop: tasks", tests, NULL, NULL);
}
