/* SPDX-License-Identifier: MIT */
/*
 * test_callback.c — callbacks on cancellation (Go's AfterFunc tests,
 * .NET's Register/Dispose) and the waits built on them.
 *
 * Each test asserts something a wrong implementation breaks: a callback
 * runs exactly once, in the context it was registered in, on the thread
 * that cancels; clear reports STOPPED only for a callback that never ran
 * and never will, waits for one running elsewhere, and lets one that clears
 * itself free its storage; callbacks run outside every lock (they may call
 * back into the same scope, and another thread is not held up by a slow
 * one); and when any callback runs, the whole subtree reports cancelled.
 */
#include "cancel_test.h"

static ctx_var_t *tag; /* what context a callback runs in */

static int setup(void **state) {
    (void)state;
    ASSERT_RC(ctx_var_new("tag", NULL, &tag), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ctx_var_release(tag);
    cancel_teardown();
    return 0;
}

typedef struct record {
    atomic_int runs;
    void *tag_seen;
    pthread_t thread;
    ctx_cancel_scope_t *scope;
    int err_seen;
} record_t;

static void record_run(void *arg) {
    record_t *r = arg;
    void *v = NULL;
    ctx_var_get_or(tag, NULL, &v);
    r->tag_seen = v;
    r->thread = pthread_self();
    r->err_seen = r->scope ? ctx_cancel_scope_error(r->scope) : 0;
    atomic_fetch_add(&r->runs, 1);
}

static void record_reset(void *arg) { atomic_store(&((record_t *)arg)->runs, 0); }

typedef struct canceller {
    ctx_cancel_scope_t *scope;
    pthread_t thread;
    int rc;
} canceller_t;

static void *cancel_main(void *arg) {
    canceller_t *c = arg;
    ctx_token_t *t;
    ctx_var_set(tag, (void *)999, &t); /* the canceller's own context */
    c->thread = pthread_self();
    c->rc = ctx_cancel_scope_cancel(c->scope, NULL);
    ctx_var_reset(tag, t);
    ctx_token_release(t);
    ctx_thread_release();
    return NULL;
}

static int cancel_on_thread(ctx_cancel_scope_t *s, pthread_t *who) {
    canceller_t c = {s, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_main, &c), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (who)
        *who = c.thread;
    return c.rc;
}

/* Go: TestAfterFuncCalledAfterCancel — once, in the registering context,
 * on the cancelling thread; a second cancel does not run it again. */
static void test_runs_once_in_registering_context(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    record_t r = {.scope = s};
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(tag, (void *)42, &t), 0);
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, record_run, &r), 0);
    ASSERT_RC(ctx_var_reset(tag, t), 0); /* later sets do not reach the capture */
    ctx_token_release(t);
    ASSERT_RC(ctx_var_set(tag, (void *)7, NULL), 0);
    assert_int_equal(atomic_load(&r.runs), 0);
    pthread_t who;
    ASSERT_RC(cancel_on_thread(s, &who), 0);
    assert_int_equal(atomic_load(&r.runs), 1);
    assert_ptr_equal(r.tag_seen, (void *)42);
    assert_true(pthread_equal(r.thread, who));
    assert_int_equal(r.err_seen, CTX_ECANCELLED); /* runs after the state is set */
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), CTX_CANCEL_ALREADY);
    assert_int_equal(atomic_load(&r.runs), 1);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN); /* emptied */
    ctx_cancel_scope_release(s);
    ASSERT_RC(ctx_thread_release(), 0);
}

/* Go: TestAfterFuncNotCalledAfterStop — stop reports it stopped it. */
static void test_stop_before_cancel(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    record_t r = {0};
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, record_run, &r), 0);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_STOPPED);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    assert_int_equal(atomic_load(&r.runs), 0);
    /* The storage can be used again. */
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, record_run, &r), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    assert_int_equal(atomic_load(&r.runs), 1);
    ctx_cancel_scope_release(s);
}

/* Go: TestAfterFuncCalledImmediately — on an already cancelled scope it
 * runs at once, on this thread, in the current context. */
static void test_registering_on_cancelled_runs_at_once(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(tag, (void *)3, &t), 0);
    record_t r = {.scope = s};
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, record_run, &r), CTX_CANCEL_CALLBACK_RAN);
    assert_int_equal(atomic_load(&r.runs), 1);
    assert_ptr_equal(r.tag_seen, (void *)3);
    assert_true(pthread_equal(r.thread, pthread_self()));
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(ctx_var_reset(tag, t), 0);
    ctx_token_release(t);
    ctx_cancel_scope_release(s);
}

/* A callback that clears its own registration and frees its storage: the
 * library must not touch the storage afterwards (ASan, valgrind). */
typedef struct self_owned {
    ctx_cancel_callback_t cb;
    atomic_int *status;
} self_owned_t;

static void clear_and_free(void *arg) {
    self_owned_t *o = arg;
    atomic_store(o->status, ctx_cancel_callback_clear(&o->cb));
    free(o);
}

static void test_callback_clears_and_frees_itself(void **state) {
    (void)state;
    atomic_int st1 = -1, st2 = -1;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    self_owned_t *o = malloc(sizeof *o);
    assert_non_null(o);
    o->status = &st1;
    ASSERT_RC(ctx_cancel_callback_init(&o->cb, s, clear_and_free, o), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    assert_int_equal(atomic_load(&st1), CTX_CANCEL_CALLBACK_RUNNING);
    /* The same when it runs at once. */
    o = malloc(sizeof *o);
    assert_non_null(o);
    o->status = &st2;
    ASSERT_RC(ctx_cancel_callback_init(&o->cb, s, clear_and_free, o), CTX_CANCEL_CALLBACK_RAN);
    assert_int_equal(atomic_load(&st2), CTX_CANCEL_CALLBACK_RUNNING);
    ctx_cancel_scope_release(s); /* the registration's reference went too */
}

/* No lock is held while a callback runs: it may use the same scope in
 * every way, and stop a sibling registration that has not run yet. */
typedef struct reentrant {
    ctx_cancel_scope_t *scope;
    ctx_cancel_callback_t *sibling;
    int sibling_status;
    int cancel_rc;
    int child_err;
    int nested_rc;
    record_t nested;
    atomic_int runs;
} reentrant_t;

static void reenter(void *arg) {
    reentrant_t *r = arg;
    atomic_fetch_add(&r->runs, 1);
    r->cancel_rc = ctx_cancel_scope_cancel(r->scope, NULL);
    ctx_cancel_scope_t *child = NULL;
    if (ctx_cancel_scope_new(r->scope, NULL, &child) == 0) {
        r->child_err = ctx_cancel_scope_error(child);
        ctx_cancel_scope_release(child);
    }
    ctx_cancel_callback_t nested;
    r->nested_rc = ctx_cancel_callback_init(&nested, r->scope, record_run, &r->nested);
    ctx_cancel_callback_clear(&nested);
    r->sibling_status = ctx_cancel_callback_clear(r->sibling);
}

static void test_callbacks_may_call_back(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    record_t first = {0};
    ctx_cancel_callback_t a, b;
    reentrant_t r = {.scope = s, .sibling = &a};
    /* Registered second, so it runs first (latest first). */
    ASSERT_RC(ctx_cancel_callback_init(&a, s, record_run, &first), 0);
    ASSERT_RC(ctx_cancel_callback_init(&b, s, reenter, &r), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    assert_int_equal(atomic_load(&r.runs), 1);
    assert_int_equal(r.cancel_rc, CTX_CANCEL_ALREADY);
    assert_int_equal(r.child_err, CTX_ECANCELLED);
    assert_int_equal(r.nested_rc, CTX_CANCEL_CALLBACK_RAN);
    assert_int_equal(atomic_load(&r.nested.runs), 1);
    assert_int_equal(r.sibling_status, CTX_CANCEL_CALLBACK_STOPPED);
    assert_int_equal(atomic_load(&first.runs), 0); /* stopped: never ran */
    ASSERT_RC(ctx_cancel_callback_clear(&b), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(s);
}

static int order[3];
static atomic_int order_n;

static void note_order(void *arg) { order[atomic_fetch_add(&order_n, 1)] = (int)(intptr_t)arg; }

static void test_latest_registration_runs_first(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    atomic_store(&order_n, 0);
    ctx_cancel_callback_t cbs[3];
    for (int i = 0; i < 3; i++)
        ASSERT_RC(ctx_cancel_callback_init(&cbs[i], s, note_order, (void *)(intptr_t)(i + 1)), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(s, NULL), 0);
    assert_int_equal(atomic_load(&order_n), 3);
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    for (int i = 0; i < 3; i++)
        ASSERT_RC(ctx_cancel_callback_clear(&cbs[i]), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(s);
}

/* ---- clear racing with a running callback ---- */

typedef struct slow {
    atomic_int started;
    atomic_int clear_called;
    atomic_int finished;
    atomic_int release; /* the test lets it finish */
} slow_t;

static void slow_run(void *arg) {
    slow_t *s = arg;
    atomic_store(&s->started, 1);
    while (!atomic_load(&s->clear_called) && !atomic_load(&s->release))
        sleep_ns(MS / 10);
    sleep_ns(20 * MS); /* a clear that did not wait would return meanwhile */
    while (!atomic_load(&s->release))
        sleep_ns(MS / 10);
    atomic_store(&s->finished, 1);
}

typedef struct clearer {
    ctx_cancel_callback_t *cb;
    slow_t *slow;
    int status;
    int finished_at_return;
} clearer_t;

static void *clear_main(void *arg) {
    clearer_t *c = arg;
    await_flag(&c->slow->started);
    atomic_store(&c->slow->clear_called, 1);
    c->status = ctx_cancel_callback_clear(c->cb);
    c->finished_at_return = atomic_load(&c->slow->finished);
    return NULL;
}

static void *cancel_plain(void *arg) {
    ctx_cancel_scope_cancel(arg, NULL);
    ctx_thread_release();
    return NULL;
}

/* .NET's Dispose: a clear while the callback runs on another thread
 * returns only after the callback returned, and says it ran. */
static void test_clear_waits_for_a_running_callback(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    slow_t slow = {0};
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, slow_run, &slow), 0);
    pthread_t canceller, clearer;
    clearer_t c = {&cb, &slow, -1, -1};
    assert_int_equal(pthread_create(&canceller, NULL, cancel_plain, s), 0);
    assert_int_equal(pthread_create(&clearer, NULL, clear_main, &c), 0);
    await_flag(&slow.clear_called);
    sleep_ns(5 * MS);
    atomic_store(&slow.release, 1);
    assert_int_equal(pthread_join(clearer, NULL), 0);
    assert_int_equal(pthread_join(canceller, NULL), 0);
    assert_int_equal(c.status, CTX_CANCEL_CALLBACK_RAN);
    assert_int_equal(c.finished_at_return, 1);
    ctx_cancel_scope_release(s);
}

/* The api rule: a slow callback blocks no other thread's use of the scope
 * (no lock is held while it runs). */
typedef struct bystander {
    ctx_cancel_scope_t *scope;
    slow_t *slow;
    atomic_int done;
    int errors;
} bystander_t;

static void bystander_note(void *arg) { (void)arg; }

static void *bystander_main(void *arg) {
    bystander_t *b = arg;
    await_flag(&b->slow->started);
    ctx_cancel_scope_t *child = NULL, *other = NULL;
    ctx_cancel_callback_t cb;
    b->errors += ctx_cancel_scope_error(b->scope) != CTX_ECANCELLED;
    b->errors += ctx_cancel_scope_cancel(b->scope, NULL) != CTX_CANCEL_ALREADY;
    b->errors += ctx_cancel_scope_new(b->scope, NULL, &child) != 0;
    b->errors += ctx_cancel_scope_error(child) != CTX_ECANCELLED;
    b->errors += ctx_cancel_callback_init(&cb, b->scope, bystander_note, NULL) !=
                 CTX_CANCEL_CALLBACK_RAN;
    b->errors += ctx_cancel_callback_clear(&cb) != CTX_CANCEL_CALLBACK_RAN;
    b->errors += ctx_cancel_scope_new(NULL, NULL, &other) != 0;
    b->errors += ctx_cancel_scope_cancel(other, NULL) != 0;
    ctx_cancel_scope_release(other);
    ctx_cancel_scope_release(child);
    atomic_store(&b->done, 1);
    ctx_thread_release();
    return NULL;
}

static void test_slow_callback_blocks_nobody(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    slow_t slow = {0};
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init(&cb, s, slow_run, &slow), 0);
    bystander_t b = {.scope = s, .slow = &slow};
    pthread_t canceller, other;
    assert_int_equal(pthread_create(&canceller, NULL, cancel_plain, s), 0);
    assert_int_equal(pthread_create(&other, NULL, bystander_main, &b), 0);
    await_flag(&b.done); /* while slow_run is still blocked */
    assert_int_equal(atomic_load(&slow.finished), 0);
    assert_int_equal(b.errors, 0);
    atomic_store(&slow.release, 1);
    assert_int_equal(pthread_join(other, NULL), 0);
    assert_int_equal(pthread_join(canceller, NULL), 0);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(s);
}

/* A wake-up runs in the canceller's context, not the registering one. */
static void test_wakeup_runs_in_cancellers_context(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    record_t r = {0};
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(tag, (void *)42, &t), 0);
    ctx_cancel_callback_t cb;
    ASSERT_RC(ctx_cancel_callback_init_wakeup(&cb, s, record_run, &r), 0);
    ASSERT_RC(ctx_var_reset(tag, t), 0);
    ctx_token_release(t);
    pthread_t who;
    ASSERT_RC(cancel_on_thread(s, &who), 0);
    assert_int_equal(atomic_load(&r.runs), 1);
    assert_ptr_equal(r.tag_seen, (void *)999);
    assert_true(pthread_equal(r.thread, who));
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(s);
}

/* ---- a subtree ---- */

typedef struct fan {
    ctx_cancel_scope_t **kids;
    int n;
    atomic_int runs;
    atomic_int not_cancelled_seen;
} fan_t;

static void fan_run(void *arg) {
    fan_t *f = arg;
    for (int i = 0; i < f->n; i++)
        if (ctx_cancel_scope_error(f->kids[i]) == 0)
            atomic_fetch_add(&f->not_cancelled_seen, 1);
    atomic_fetch_add(&f->runs, 1);
}

/* 1000 children with a callback each, plus grandchildren and a callback on
 * the root: cancelling the root runs every callback exactly once, and each
 * sees the whole subtree cancelled already. */
static void test_fanout_marks_everything_first(void **state) {
    (void)state;
    const int n = CTX_SCALED(1000, 200, 300);
    fan_t f = {.n = 2 * n};
    f.kids = calloc((size_t)(2 * n), sizeof *f.kids);
    ctx_cancel_callback_t *cbs = calloc((size_t)(2 * n + 1), sizeof *cbs);
    assert_non_null(f.kids);
    assert_non_null(cbs);
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    for (int i = 0; i < n; i++) {
        f.kids[i] = new_scope(root, NULL);
        f.kids[n + i] = new_scope(f.kids[i], NULL);
        ASSERT_RC(ctx_cancel_callback_init(&cbs[i], f.kids[i], fan_run, &f), 0);
    }
    ASSERT_RC(ctx_cancel_callback_init(&cbs[n], root, fan_run, &f), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(root, NULL), 0);
    assert_int_equal(atomic_load(&f.runs), n + 1);
    assert_int_equal(atomic_load(&f.not_cancelled_seen), 0);
    for (int i = 0; i <= n; i++)
        ASSERT_RC(ctx_cancel_callback_clear(&cbs[i]), CTX_CANCEL_CALLBACK_RAN);
    for (int i = 0; i < 2 * n; i++)
        ctx_cancel_scope_release(f.kids[i]);
    ctx_cancel_scope_release(root);
    free(cbs);
    free(f.kids);
}

/* A deadline's callbacks run on the timer thread, in the registering
 * context. */
static void test_deadline_callback_on_timer_thread(void **state) {
    (void)state;
    record_t r = {0};
    ctx_token_t *t;
    ASSERT_RC(ctx_var_set(tag, (void *)77, &t), 0);
    ctx_cancel_callback_t cb;
    ctx_cancel_scope_t *s = scope_with_callback(10 * MS, &cb, record_run, &r, 0, record_reset);
    ASSERT_RC(ctx_var_reset(tag, t), 0);
    ctx_token_release(t);
    ctx_cancel_scope_release(s); /* the registration keeps it alive */
    await_flag(&r.runs);
    assert_int_equal(atomic_load(&r.runs), 1);
    assert_ptr_equal(r.tag_seen, (void *)77);
    assert_false(pthread_equal(r.thread, pthread_self()));
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
}

/* ---- waits ---- */

typedef struct delayed {
    ctx_cancel_scope_t *scope;
    atomic_int *waiting;
} delayed_t;

static void *cancel_when_waiting(void *arg) {
    delayed_t *d = arg;
    await_flag(d->waiting);
    sleep_ns(5 * MS);
    ctx_cancel_scope_cancel(d->scope, NULL);
    ctx_thread_release();
    return NULL;
}

static void test_scope_wait(void **state) {
    (void)state;
    ctx_cancel_scope_t *s = new_scope(NULL, NULL);
    ASSERT_RC(ctx_cancel_scope_wait(s, 0), CTX_ETIMEDOUT);
    ASSERT_RC(ctx_cancel_scope_wait(s, 2 * MS), CTX_ETIMEDOUT);
    ASSERT_RC(ctx_cancel_scope_error(s), 0);
    atomic_int waiting = 1;
    delayed_t d = {s, &waiting};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &d), 0);
    ASSERT_RC(ctx_cancel_scope_wait(s, -1), CTX_ECANCELLED);
    assert_int_equal(pthread_join(th, NULL), 0);
    ASSERT_RC(ctx_cancel_scope_wait(s, 0), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_scope_wait(s, -1), CTX_ECANCELLED);
    ctx_cancel_scope_release(s);
    /* The scope's deadline ends a longer wait, and an inherited one too. */
    ctx_cancel_options_t o = timeout_opts(10 * MS);
    s = new_scope(NULL, &o);
    ctx_cancel_scope_t *child = new_scope(s, NULL);
    ASSERT_RC(ctx_cancel_scope_wait(child, 3600 * 1000 * MS), CTX_EDEADLINE);
    ASSERT_RC(ctx_cancel_scope_error(s), CTX_EDEADLINE);
    ctx_cancel_scope_release(child);
    ctx_cancel_scope_release(s);
}

static void test_sleep(void **state) {
    (void)state;
    ASSERT_RC(ctx_cancel_sleep(MS), 0); /* no scope: a plain sleep */
    ASSERT_RC(ctx_cancel_sleep(-1), CTX_EINVAL);
    ctx_cancel_scope_t *s;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, &s, &tok), 0);
    ASSERT_RC(ctx_cancel_sleep(MS), 0);
    ASSERT_RC(ctx_cancel_sleep(0), 0);
    atomic_int waiting = 1;
    delayed_t d = {s, &waiting};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_when_waiting, &d), 0);
    ASSERT_RC(ctx_cancel_sleep(-1), CTX_ECANCELLED);
    assert_int_equal(pthread_join(th, NULL), 0);
    ASSERT_RC(ctx_cancel_sleep(3600 * 1000 * MS), CTX_ECANCELLED);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_cancel_scope_release(s);
    ctx_cancel_options_t o = timeout_opts(5 * MS);
    ASSERT_RC(ctx_cancel_enter_child(&o, NULL, &tok), 0);
    ASSERT_RC(ctx_cancel_sleep(-1), CTX_EDEADLINE);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_once_in_registering_context),
        cmocka_unit_test(test_stop_before_cancel),
        cmocka_unit_test(test_registering_on_cancelled_runs_at_once),
        cmocka_unit_test(test_callback_clears_and_frees_itself),
        cmocka_unit_test(test_callbacks_may_call_back),
        cmocka_unit_test(test_latest_registration_runs_first),
        cmocka_unit_test(test_clear_waits_for_a_running_callback),
        cmocka_unit_test(test_slow_callback_blocks_nobody),
        cmocka_unit_test(test_wakeup_runs_in_cancellers_context),
        cmocka_unit_test(test_fanout_marks_everything_first),
        cmocka_unit_test(test_deadline_callback_on_timer_thread),
        cmocka_unit_test(test_scope_wait),
        cmocka_unit_test(test_sleep),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
