/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c — fork(): the child's current context keeps working
 * (src/core/tstate.c, "fork()").
 *
 * Each test forks; the child checks get/set/reset/run/copy and ends with its
 * status: 0, or the number of the first check that failed (so the parent's
 * message says which), written to a pipe, after which the child kills
 * itself: no exit-time leak check runs there (valgrind and LeakSanitizer
 * would report the memory of the parent's other threads, which do not exist
 * in the child, as lost).  An alarm kills a child that hangs.  The parent
 * asserts the status.  The interesting case is a context lock held by
 * another thread at the moment of the fork: that thread does not exist in
 * the child, and the child must not wait for it.
 */
#include "core_test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h" /* ctx__context_lock: a reader in the middle of a read */

/* Child side: the status is `code` if `cond` is false. */
#define CHILD_CHECK(code, cond)                                                \
    do {                                                                       \
        if (!(cond))                                                           \
            return (code);                                                     \
    } while (0)

/* Forks; the child runs `child`, whose status the parent asserts is 0. */
static void fork_and_check(int (*child)(void *), void *arg) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60); /* a hang fails the test instead of blocking the suite */
        unsigned char code = (unsigned char)child(arg);
        if (write(fds[1], &code, 1) != 1)
            _exit(2);
        kill(getpid(), SIGKILL);
    }
    close(fds[1]);
    unsigned char code = 0;
    ssize_t got = read(fds[0], &code, 1);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (got != 1)
        fail_msg("the child ended without a status (wait status 0x%x; a hang ends with "
                 "SIGALRM)",
                 status);
    if (code != 0)
        fail_msg("the child failed check %d", code);
}

typedef struct world {
    ctx_var_t *var;
    ctx_context_t *entered; /* current in the parent's (forking) thread */
    int a, b, c;
} world_t;

static void *set_inside(void *arg) {
    world_t *w = arg;
    ctx_var_set(w->var, &w->c, NULL);
    void *out = NULL;
    return ctx_var_get(w->var, &out) == CTX_VALUE ? out : NULL;
}

/* What the child checks: the values the forking thread saw, and every
 * operation on its current context. */
static int child_uses_current(void *arg) {
    world_t *w = arg;
    void *out = NULL;
    CHILD_CHECK(1, ctx_var_get(w->var, &out) == CTX_VALUE && out == &w->a);
    ctx_token_t *tok = NULL;
    CHILD_CHECK(2, ctx_var_set(w->var, &w->b, &tok) == 0);
    CHILD_CHECK(3, ctx_var_get(w->var, &out) == CTX_VALUE && out == &w->b);
    CHILD_CHECK(4, ctx_context_length(w->entered) == 1);
    ctx_context_t *copy = NULL;
    CHILD_CHECK(5, ctx_context_copy_current(&copy) == 0);
    CHILD_CHECK(6, ctx_context_get(copy, w->var, &out) == 0 && out == &w->b);
    CHILD_CHECK(7, ctx_var_reset(w->var, tok) == 0);
    ctx_token_release(tok);
    CHILD_CHECK(8, ctx_var_get(w->var, &out) == CTX_VALUE && out == &w->a);
    void *result = NULL;
    CHILD_CHECK(9, ctx_context_run(copy, set_inside, w, &result) == 0 && result == &w->c);
    CHILD_CHECK(10, ctx_var_get(w->var, &out) == CTX_VALUE && out == &w->a);
    ctx_capture_t cap;
    ctx_capture_current(&cap);
    CHILD_CHECK(11, ctx_capture_run(&cap, set_inside, w, &result) == 0 && result == &w->c);
    ctx_capture_clear(&cap);
    ctx_context_release(copy);
    CHILD_CHECK(12, ctx_context_exit(w->entered) == 0);
    CHILD_CHECK(13, ctx_thread_release() == 0);
    return 0;
}

static void world_init(world_t *w) {
    memset(w, 0, sizeof *w);
    w->var = make_var("v", NULL, 0, NULL);
    ASSERT_RC(ctx_context_new(&w->entered), 0);
    ASSERT_RC(ctx_context_enter(w->entered), 0);
    ASSERT_RC(ctx_var_set(w->var, &w->a, NULL), 0);
}

static void world_clear(world_t *w) {
    ASSERT_RC(ctx_context_exit(w->entered), 0);
    ctx_context_release(w->entered);
    ctx_var_release(w->var);
}

static void test_child_keeps_its_context(void **state) {
    (void)state;
    world_t w;
    world_init(&w);
    fork_and_check(child_uses_current, &w);
    /* The parent is untouched by whatever the child did. */
    EXPECT_GET(w.var, CTX_VALUE, &w.a);
    world_clear(&w);
}

/* ---- a lock held by another thread at the fork ---- */

typedef struct holder {
    ctx_context_t *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int locked, forked;
} holder_t;

static void *hold_lock(void *arg) {
    holder_t *h = arg;
    ctx__context_lock(h->ctx); /* as a reader of the context does */
    pthread_mutex_lock(&h->mu);
    h->locked = 1;
    pthread_cond_broadcast(&h->cv);
    while (!h->forked)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    ctx__context_unlock(h->ctx);
    return NULL;
}

static void test_lock_held_by_another_thread(void **state) {
    (void)state;
    world_t w;
    world_init(&w);
    holder_t h = {.ctx = w.entered};
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    pthread_t t;
    ASSERT_RC(pthread_create(&t, NULL, hold_lock, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (!h.locked)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);

    fork_and_check(child_uses_current, &w); /* the lock is held right now */

    pthread_mutex_lock(&h.mu);
    h.forked = 1;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(t, NULL);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    EXPECT_GET(w.var, CTX_VALUE, &w.a);
    world_clear(&w);
}

/* ---- a context entered in another thread at the fork ---- */

typedef struct other {
    ctx_context_t *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, forked;
} other_t;

static void *enter_and_wait(void *arg) {
    other_t *o = arg;
    ctx_context_enter(o->ctx);
    pthread_mutex_lock(&o->mu);
    o->entered = 1;
    pthread_cond_broadcast(&o->cv);
    while (!o->forked)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
    ctx_context_exit(o->ctx);
    ctx_thread_release();
    return NULL;
}

static ctx_var_t *other_var;
static int other_value;

static int child_sees_other_entered(void *arg) {
    ctx_context_t *ctx = arg;
    /* Its thread is gone: it stays entered for ever, and can be read. */
    CHILD_CHECK(1, ctx_context_is_entered(ctx) == 1);
    CHILD_CHECK(2, ctx_context_enter(ctx) == CTX_EENTERED);
    void *out = NULL;
    CHILD_CHECK(3, ctx_context_get(ctx, other_var, &out) == 0 && out == &other_value);
    ctx_context_t *copy = NULL;
    CHILD_CHECK(4, ctx_context_copy(ctx, &copy) == 0);
    CHILD_CHECK(5, ctx_context_enter(copy) == 0);
    CHILD_CHECK(6, ctx_var_get(other_var, &out) == CTX_VALUE && out == &other_value);
    CHILD_CHECK(7, ctx_context_exit(copy) == 0);
    ctx_context_release(copy);
    return 0;
}

static void test_context_entered_in_another_thread(void **state) {
    (void)state;
    other_var = make_var("other", NULL, 0, NULL);
    other_t o = {0};
    ASSERT_RC(ctx_context_new(&o.ctx), 0);
    ASSERT_RC(ctx_context_set(o.ctx, other_var, &other_value), 0);
    pthread_mutex_init(&o.mu, NULL);
    pthread_cond_init(&o.cv, NULL);
    pthread_t t;
    ASSERT_RC(pthread_create(&t, NULL, enter_and_wait, &o), 0);
    pthread_mutex_lock(&o.mu);
    while (!o.entered)
        pthread_cond_wait(&o.cv, &o.mu);
    pthread_mutex_unlock(&o.mu);

    fork_and_check(child_sees_other_entered, o.ctx);

    pthread_mutex_lock(&o.mu);
    o.forked = 1;
    pthread_cond_broadcast(&o.cv);
    pthread_mutex_unlock(&o.mu);
    pthread_join(t, NULL);
    pthread_cond_destroy(&o.cv);
    pthread_mutex_destroy(&o.mu);
    ctx_context_release(o.ctx);
    ctx_var_release(other_var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_child_keeps_its_context),
        TEST(test_lock_held_by_another_thread),
        TEST(test_context_entered_in_another_thread),
    };
    return RUN_TESTS(tests);
}
