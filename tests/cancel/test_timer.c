/* SPDX-License-Identifier: MIT */
/*
 * test_timer.c — the one timer facility behind every deadline.
 *
 *   - 100k deadline scopes released (or cancelled) before they expire leave
 *     no heap entry and, once the facility is released, no memory;
 *   - removal from the middle of the heap keeps it a heap: of scopes with
 *     random deadlines, exactly those kept fire, in deadline order;
 *   - the thread exits when idle and starts again for the next deadline;
 *     ctx_cancel_timer_release refuses while deadlines are pending and from
 *     the timer thread itself;
 *   - after fork(), in the child, a deadline pending at the fork still
 *     fires and new ones work (not under TSan or valgrind, which do not
 *     support threads after a multi-threaded fork well).
 */
#include <sys/wait.h>
#include <unistd.h>

#include "cancel_test.h"

static int teardown(void **state) {
    (void)state;
    cancel_teardown();
    return 0;
}

static ctx_cancel_stats_t stats(void) {
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    return st;
}

/* Fisher-Yates with the seeded generator. */
static void shuffle(ctx_cancel_scope_t **a, int n, ctx_test_rng_t *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ctx_test_rng_below(rng, (uint64_t)i + 1);
        ctx_cancel_scope_t *t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static void test_100k_released_before_expiry_leave_nothing(void **state) {
    (void)state;
    const int n = 100000;
    uint64_t seed = ctx_test_seed(0x5eed);
    print_message("seed %llu (CTX_TEST_SEED)\n", (unsigned long long)seed);
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, seed);
    ASSERT_RC(ctx_cancel_timer_release(), 0);
    ctx_test_alloc_install();
    long base = ctx_test_alloc_live_blocks();
    ctx_cancel_scope_t *root = new_scope(NULL, NULL);
    ctx_cancel_scope_t **s = malloc(sizeof *s * (size_t)n);
    assert_non_null(s);
    int64_t now = now_ns();
    for (int i = 0; i < n; i++) { /* distinct deadlines, 1-2 hours away */
        ctx_cancel_options_t o =
            deadline_opts(now + 3600 * 1000 * MS + (int64_t)ctx_test_rng_below(&rng, 3600 * 1000 * MS));
        s[i] = new_scope(i % 2 ? root : NULL, &o);
    }
    assert_int_equal(stats().timers_pending, n);
    shuffle(s, n, &rng);
    for (int i = 0; i < n; i++) {
        if (i % 3 == 0) /* cancelled first: the entry goes at cancel */
            ASSERT_RC(ctx_cancel_scope_cancel(s[i], NULL), 0);
        ctx_cancel_scope_release(s[i]);
        if (i == n / 2)
            assert_int_equal(stats().timers_pending, n - n / 2 - 1);
    }
    assert_int_equal(stats().timers_pending, 0);
    /* One at a time too: create, release, as requests that finish in time. */
    for (int i = 0; i < n; i++) {
        ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
        ctx_cancel_scope_t *one = new_scope(root, &o);
        ctx_cancel_scope_release(one);
    }
    assert_int_equal(stats().timers_pending, 0);
    ctx_cancel_scope_release(root);
    ASSERT_RC(ctx_cancel_timer_release(), 0);
    ASSERT_RC(ctx_thread_release(), 0); /* cancel made this thread's state */
    assert_int_equal(ctx_test_alloc_live_blocks(), base);
    ctx_test_alloc_uninstall();
    free(s);
}

/* ---- firing order ---- */

typedef struct fired_log {
    pthread_mutex_t mutex;
    int order[512];
    int n;
} fired_log_t;

static fired_log_t fired = {PTHREAD_MUTEX_INITIALIZER, {0}, 0};

typedef struct entry {
    int id;
    int64_t deadline;
    ctx_cancel_callback_t cb;
} entry_t;

static void note_fired(void *arg) {
    entry_t *e = arg;
    pthread_mutex_lock(&fired.mutex);
    fired.order[fired.n++] = e->id;
    pthread_mutex_unlock(&fired.mutex);
}

static int fired_count(void) {
    pthread_mutex_lock(&fired.mutex);
    int n = fired.n;
    pthread_mutex_unlock(&fired.mutex);
    return n;
}

static void test_fire_in_deadline_order_after_removals(void **state) {
    (void)state;
    enum { N = 300 };
    uint64_t seed = ctx_test_seed(0xf1e);
    print_message("seed %llu (CTX_TEST_SEED)\n", (unsigned long long)seed);
    ctx_test_rng_t rng;
    ctx_test_rng_seed(&rng, seed);
    static entry_t e[N];
    ctx_cancel_scope_t *s[N];
    int keep[N], kept = 0;
    fired.n = 0;
    /* Far enough ahead that none expires before its callback is registered. */
    int64_t base = now_ns() + CTX_SCALED(50, 500, 300) * MS;
    for (int i = 0; i < N; i++) {
        e[i].id = i;
        e[i].deadline = base + (int64_t)ctx_test_rng_below(&rng, 100 * MS);
        ctx_cancel_options_t o = deadline_opts(e[i].deadline);
        s[i] = new_scope(NULL, &o);
        keep[i] = ctx_test_rng_below(&rng, 2) == 0;
        if (keep[i]) {
            ASSERT_RC(ctx_cancel_callback_init_wakeup(&e[i].cb, s[i], note_fired, &e[i]), 0);
            kept++;
        }
    }
    /* The others leave before their deadline: some cancelled, some freed. */
    for (int i = 0; i < N; i++)
        if (!keep[i]) {
            if (i % 2)
                ASSERT_RC(ctx_cancel_scope_cancel(s[i], NULL), 0);
            ctx_cancel_scope_release(s[i]);
            s[i] = NULL;
        }
    for (int i = 0; i < 30000 && fired_count() < kept; i++)
        sleep_ns(MS);
    assert_int_equal(fired_count(), kept);
    for (int k = 0; k < kept; k++) {
        int id = fired.order[k];
        assert_true(keep[id]);
        if (k)
            assert_true(e[fired.order[k - 1]].deadline <= e[id].deadline);
    }
    for (int i = 0; i < N; i++)
        if (s[i]) {
            ASSERT_RC(ctx_cancel_scope_error(s[i]), CTX_EDEADLINE);
            ASSERT_RC(ctx_cancel_callback_clear(&e[i].cb), CTX_CANCEL_CALLBACK_RAN);
            ctx_cancel_scope_release(s[i]);
        }
    assert_int_equal(stats().timers_pending, 0);
}

/* ---- the thread's lifetime ---- */

static void set_flag(void *arg) { atomic_store((atomic_int *)arg, 1); }

/* Waits until the timer thread (nobody else) fires `s`'s deadline. */
static void fired_by_timer(ctx_cancel_scope_t *s) {
    atomic_int flag = 0;
    ctx_cancel_callback_t cb;
    int rc = ctx_cancel_callback_init_wakeup(&cb, s, set_flag, &flag);
    assert_true(rc == 0 || rc == CTX_CANCEL_CALLBACK_RAN); /* RAN: fired already */
    await_flag(&flag);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(ctx_cancel_scope_error(s), CTX_EDEADLINE); /* nobody else cancels it */
}

static void test_idle_exit_and_restart(void **state) {
    (void)state;
    ASSERT_RC(ctx_cancel_timer_release(), 0);
    ctx_cancel_stats_t st0 = stats();
    assert_int_equal(st0.thread_running, 0);
    ctx_cancel_options_t o = timeout_opts(5 * MS);
    ctx_cancel_scope_t *s = new_scope(NULL, &o);
    assert_int_equal(stats().thread_running, 1);
    assert_int_equal(stats().thread_starts, st0.thread_starts + 1);
    fired_by_timer(s);
    ctx_cancel_scope_release(s);
    assert_int_equal(stats().timers_fired, st0.timers_fired + 1);
    /* Idle for its linger time (1 s), it exits by itself. */
    for (int i = 0; i < 30000 && stats().thread_running; i++)
        sleep_ns(MS);
    assert_int_equal(stats().thread_running, 0);
    s = new_scope(NULL, &o);
    assert_int_equal(stats().thread_starts, st0.thread_starts + 2);
    fired_by_timer(s);
    ctx_cancel_scope_release(s);
    assert_int_equal(stats().timers_fired, st0.timers_fired + 2);
}

static atomic_int release_rc = 1;
static atomic_int release_done;

static void release_from_timer(void *arg) {
    (void)arg;
    atomic_store(&release_rc, ctx_cancel_timer_release());
    atomic_store(&release_done, 1);
}

static void release_reset(void *arg) { /* it ran here, not on the timer thread */
    (void)arg;
    atomic_store(&release_done, 0);
    atomic_store(&release_rc, 1);
}

static void test_timer_release_refusals(void **state) {
    (void)state;
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    ctx_cancel_scope_t *s = new_scope(NULL, &o);
    ASSERT_RC(ctx_cancel_timer_release(), CTX_EBUSY);
    assert_int_equal(stats().thread_running, 1);
    assert_int_equal(stats().timers_pending, 1);
    ctx_cancel_scope_release(s);
    ASSERT_RC(ctx_cancel_timer_release(), 0);
    assert_int_equal(stats().thread_running, 0);
    ASSERT_RC(ctx_cancel_timer_release(), 0); /* twice is fine */
    /* From a callback on the timer thread: it would join itself. */
    ctx_cancel_callback_t cb;
    s = scope_with_callback(2 * MS, &cb, release_from_timer, NULL, 1, release_reset);
    await_flag(&release_done);
    ASSERT_RC(atomic_load(&release_rc), CTX_EBUSY);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(s);
}

/* A callback on the timer thread that adds a deadline while another thread
 * is in ctx_cancel_timer_release, waiting for that very thread to stop:
 * no deadlock; the thread stays, the release says CTX_EBUSY. */
typedef struct adder {
    atomic_int in_callback;
    ctx_cancel_scope_t *added;
    int rc;
} adder_t;

static void add_deadline_late(void *arg) {
    adder_t *a = arg;
    atomic_store(&a->in_callback, 1);
    sleep_ns(50 * MS); /* the release is (most likely) waiting by now */
    ctx_cancel_options_t o = timeout_opts(3600 * 1000 * MS);
    a->rc = ctx_cancel_scope_new(NULL, &o, &a->added);
}

static void adder_reset(void *arg) {
    adder_t *a = arg;
    atomic_store(&a->in_callback, 0);
    ctx_cancel_scope_release(a->added);
    a->added = NULL;
}

static void test_callback_adds_deadline_during_release(void **state) {
    (void)state;
    adder_t a = {0};
    ctx_cancel_callback_t cb;
    ctx_cancel_scope_t *s = scope_with_callback(5 * MS, &cb, add_deadline_late, &a, 1, adder_reset);
    await_flag(&a.in_callback);
    ASSERT_RC(ctx_cancel_timer_release(), CTX_EBUSY);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ASSERT_RC(a.rc, 0);
    assert_int_equal(stats().thread_running, 1);
    assert_int_equal(stats().timers_pending, 1);
    ctx_cancel_scope_release(a.added);
    ctx_cancel_scope_release(s);
}

/* A deadline inherited from the parent has no entry of its own and fires
 * with the parent's. */
static void test_inherited_deadline_fires_with_parent(void **state) {
    (void)state;
    ctx_cancel_options_t o = timeout_opts(10 * MS);
    ctx_cancel_scope_t *parent = new_scope(NULL, &o);
    o = timeout_opts(3600 * 1000 * MS);
    ctx_cancel_scope_t *child = new_scope(parent, &o);
    assert_int_equal(stats().timers_pending, 1);
    ASSERT_RC(ctx_cancel_scope_wait(child, -1), CTX_EDEADLINE);
    ASSERT_RC(ctx_cancel_scope_error(parent), CTX_EDEADLINE);
    ctx_cancel_scope_release(child);
    ctx_cancel_scope_release(parent);
}

/* ---- fork ---- */

static atomic_int child_fired;
static void note_child_fired(void *arg) {
    (void)arg;
    atomic_store(&child_fired, 1);
}
static void child_reset(void *arg) {
    (void)arg;
    atomic_store(&child_fired, 0);
}

/* In the child: returns 0 if every check passed, else the failing step. */
static int in_child(ctx_cancel_scope_t *pending, ctx_cancel_callback_t *cb) {
    if (ctx_cancel_scope_error(pending) != 0)
        return 1; /* the fork happened well before the deadline */
    ctx_cancel_options_t o = timeout_opts(5 * MS);
    ctx_cancel_scope_t *fresh = NULL;
    if (ctx_cancel_scope_new(NULL, &o, &fresh) != 0)
        return 2;
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    /* Restarted; `pending` is still in the heap (`fresh` may have fired). */
    if (ctx_cancel_stats(&st) != 0 || st.thread_running != 1 || st.timers_pending < 1)
        return 3;
    if (ctx_cancel_scope_wait(fresh, -1) != CTX_EDEADLINE)
        return 4;
    for (int i = 0; i < 30000 && !atomic_load(&child_fired); i++)
        sleep_ns(MS);
    if (!atomic_load(&child_fired) || ctx_cancel_scope_error(pending) != CTX_EDEADLINE)
        return 5; /* the timer thread, restarted, fired the old deadline */
    if (ctx_cancel_callback_clear(cb) != CTX_CANCEL_CALLBACK_RAN)
        return 6;
    ctx_cancel_scope_release(fresh);
    return ctx_cancel_timer_release() == 0 ? 0 : 7;
}

static void test_fork_restarts_the_timer(void **state) {
    (void)state;
#if defined(CTX_TEST_UNDER_TSAN) || defined(CTX_TEST_UNDER_VALGRIND)
    skip();
#endif
    ctx_cancel_callback_t cb;
    ctx_cancel_scope_t *pending =
        scope_with_callback(500 * MS, &cb, note_child_fired, NULL, 1, child_reset);
    assert_int_equal(stats().thread_running, 1);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(in_child(pending, &cb));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent's timer went on as if nothing happened. */
    ASSERT_RC(ctx_cancel_scope_wait(pending, -1), CTX_EDEADLINE);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN);
    ctx_cancel_scope_release(pending);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_100k_released_before_expiry_leave_nothing),
        cmocka_unit_test(test_fire_in_deadline_order_after_removals),
        cmocka_unit_test(test_idle_exit_and_restart),
        cmocka_unit_test(test_timer_release_refusals),
        cmocka_unit_test(test_callback_adds_deadline_during_release),
        cmocka_unit_test(test_inherited_deadline_fires_with_parent),
        cmocka_unit_test(test_fork_restarts_the_timer),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
