/* SPDX-License-Identifier: MIT */
/*
 * test_debug.c — CTX_DEBUG (src/common/debug.h) for the pool's futures and
 * bound callables: a double release, or a use after release, aborts at once
 * with a line naming the call and the object.
 *
 * Death tests, as in tests/core/test_debug.c: the object is made in this
 * process, a forked child misuses it with its stderr on a pipe, and the
 * parent asserts that the child died of SIGABRT printing exactly the
 * expected line (the object's address is the same on both sides of fork).
 * A future is misused once nothing but the test holds it (its pool released
 * first, so the queue's reference is gone).  Without CTX_DEBUG the tests are
 * skipped: misuse is then undefined behaviour, as pool.h says.
 */
#include "pool_test.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*misuse_fn)(void *obj);

#ifdef CTX_DEBUG
#define REQUIRE_DEBUG() ((void)0)
#else
#define REQUIRE_DEBUG() skip()
#endif

/* Runs misuse(obj) in a child; it must abort printing `want`. */
static void expect_abort(misuse_fn misuse, void *obj, const char *want) {
#ifndef CTX_DEBUG
    (void)misuse;
    (void)obj;
    (void)want;
#else
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        misuse(obj);
        _exit(0); /* not aborted: the parent reports it */
    }
    close(fds[1]);
    char out[2048];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof out - 1 && (n = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("the child did not abort (status 0x%x); its stderr: %s", status, out);
    if (!strstr(out, want))
        fail_msg("expected \"%s\" on stderr, got: %s", want, out);
#endif
}

static char want[256];

/* A future that has ended and that only the caller holds. */
static ctx_pool_future_t *lone_future(void) {
    ctx_pool_t *pool = NULL;
    ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
    o.threads = 1;
    ASSERT_RC(ctx_pool_new(&o, &pool), 0);
    ctx_pool_future_t *f = NULL;
    ASSERT_RC(ctx_pool_submit(pool, task_nop, NULL, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, CTX_WAIT_FOREVER), 0);
    ASSERT_RC(ctx_pool_release(pool), 0); /* the workers dropped the queue's reference */
    return f;
}

static void future_release_twice(void *f) {
    ctx_pool_future_release(f);
    ctx_pool_future_release(f);
}

static void future_wait_after_release(void *f) {
    ctx_pool_future_release(f);
    (void)ctx_pool_future_wait(f, 0);
}

static void future_callback(ctx_pool_future_t *f, void *user) {
    (void)f;
    (void)user;
}

static void future_callback_after_release(void *f) {
    ctx_pool_future_release(f);
    (void)ctx_pool_future_add_done_callback(f, future_callback, NULL);
}

static void test_future_double_release(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_pool_future_t *f = lone_future();
    snprintf(want, sizeof want, "ctxvar: ctx_pool_future_release: future %p already released",
             (void *)f);
    expect_abort(future_release_twice, f, want);
    ctx_pool_future_release(f);
}

static void test_future_use_after_release(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_pool_future_t *f = lone_future();
    snprintf(want, sizeof want, "ctxvar: ctx_pool_future_wait: future %p already released",
             (void *)f);
    expect_abort(future_wait_after_release, f, want);
    snprintf(want, sizeof want,
             "ctxvar: ctx_pool_future_add_done_callback: future %p already released", (void *)f);
    expect_abort(future_callback_after_release, f, want);
    ctx_pool_future_release(f);
}

static void *bound_fn(void *arg, void *call_arg) {
    (void)call_arg;
    return arg;
}

static void bound_release_twice(void *b) {
    ctx_pool_bound_release(b);
    ctx_pool_bound_release(b);
}

static void bound_call_after_release(void *b) {
    ctx_pool_bound_release(b);
    (void)ctx_pool_bound_call(b, NULL, NULL);
}

static void test_bound_misuse(void **state) {
    (void)state;
    REQUIRE_DEBUG();
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(bound_fn, NULL, NULL, &b), 0);
    snprintf(want, sizeof want,
             "ctxvar: ctx_pool_bound_release: bound callable %p already released", (void *)b);
    expect_abort(bound_release_twice, b, want);
    snprintf(want, sizeof want,
             "ctxvar: ctx_pool_bound_call: bound callable %p already released", (void *)b);
    expect_abort(bound_call_after_release, b, want);
    ctx_pool_bound_release(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_future_double_release, pool_teardown),
        cmocka_unit_test_teardown(test_future_use_after_release, pool_teardown),
        cmocka_unit_test_teardown(test_bound_misuse, pool_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
