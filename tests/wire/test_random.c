/* SPDX-License-Identifier: MIT */
/*
 * test_random.c — the id generator (src/wire/random.c) after fork: a child
 * starts with a copy of its parent's generator state, so without fork
 * detection it would draw exactly the ids its parent draws next.  Each test
 * seeds the thread's generator, forks, and compares the child's next ids
 * (sent back through a pipe) with the parent's next ids — also when a
 * thread made in the child draws before the forking thread.  Run against the
 * wipe page (the default build) and, built again from the same source with
 * CTX_WIRE_RANDOM_PID_CHECK (tests/wire/CMakeLists.txt), against the getpid
 * check that stands in where the page cannot be had.
 */
#define _GNU_SOURCE
#include "wire_test.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#define IDS 4

/* _Fork (glibc 2.34) runs no pthread_atfork handler; only the wipe page can
 * tell its child.  Not under TSan, whose runtime is told of fork() but not
 * of _Fork, and whose background thread may hold its locks then. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34)) && \
    !defined(CTX_WIRE_RANDOM_PID_CHECK) && !defined(CTX_TEST_UNDER_TSAN)
#define TEST_UNDER_FORK_WITHOUT_HANDLERS 1
#endif

/* IDS new span ids, drawn by the calling thread's generator. */
static void draw(uint8_t out[IDS][8]) {
    ctx_wire_traceparent_t parent, child;
    ASSERT_RC(ctx_wire_traceparent_new(0, &parent), 0);
    for (int i = 0; i < IDS; i++) {
        ASSERT_RC(ctx_wire_traceparent_child(&parent, &child), 0);
        memcpy(out[i], child.parent_id, 8);
    }
}

typedef pid_t (*fork_fn)(void);

static void *draw_thread(void *arg);

/* In a child: a thread made there draws first, then the forking thread,
 * whose generator still holds its parent's state, draws. */
static void draw_after_a_new_thread(uint8_t out[IDS][8]) {
    uint8_t theirs[IDS][8];
    pthread_t t;
    if (pthread_create(&t, NULL, draw_thread, theirs) != 0 || pthread_join(t, NULL) != 0)
        _exit(4);
    draw(out);
}

/* Forks with `fn`; the child draws IDS ids and writes them to a pipe; the
 * parent draws as many and asserts that no id of one is an id of the
 * other.  Then the child of a child: a second fork from a child that has
 * already seeded again. */
static void check_fork(fork_fn fn, int depth, int thread_first) {
    uint8_t before[IDS][8];
    draw(before); /* seeded in this process */
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fn();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        uint8_t mine[IDS][8];
        if (thread_first)
            draw_after_a_new_thread(mine);
        else
            draw(mine);
        int ok = write(p[1], mine, sizeof mine) == (ssize_t)sizeof mine;
        close(p[1]);
        if (ok && depth > 1) { /* the grandchild against this child */
            int q[2];
            if (pipe(q) != 0)
                _exit(2);
            pid_t g = fn();
            if (g == 0) {
                uint8_t theirs[IDS][8];
                draw(theirs);
                _exit(write(q[1], theirs, sizeof theirs) == (ssize_t)sizeof theirs ? 0 : 2);
            }
            uint8_t next[IDS][8], theirs[IDS][8];
            draw(next);
            int status = 0;
            ok = g > 0 && read(q[0], theirs, sizeof theirs) == (ssize_t)sizeof theirs &&
                 waitpid(g, &status, 0) == g && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                 memcmp(next, theirs, sizeof next) != 0;
        }
        _exit(ok ? 0 : 3);
    }
    close(p[1]);
    uint8_t mine[IDS][8], theirs[IDS][8];
    draw(mine);
    assert_int_equal(read(p[0], theirs, sizeof theirs), (ssize_t)sizeof theirs);
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    for (int i = 0; i < IDS; i++)
        for (int j = 0; j < IDS; j++)
            assert_memory_not_equal(mine[i], theirs[j], 8);
}

static void test_fork_draws_new_ids(void **state) {
    (void)state;
    check_fork(fork, 2, 0);
}

static void test_fork_thread_of_the_child_draws_first(void **state) {
    (void)state;
    check_fork(fork, 1, 1);
}

#if defined(TEST_UNDER_FORK_WITHOUT_HANDLERS)
static pid_t plain_fork(void) { return _Fork(); }

static void test_fork_without_handlers_draws_new_ids(void **state) {
    (void)state;
    check_fork(plain_fork, 1, 0);
}
#endif

/* A thread's ids are not another thread's ids (each seeds its own). */
static void *draw_thread(void *arg) {
    draw(arg);
    ctx_thread_release();
    return NULL;
}

static void test_threads_draw_their_own_ids(void **state) {
    (void)state;
    uint8_t a[IDS][8], b[IDS][8];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, draw_thread, b), 0);
    draw(a);
    assert_int_equal(pthread_join(t, NULL), 0);
    for (int i = 0; i < IDS; i++)
        for (int j = 0; j < IDS; j++)
            assert_memory_not_equal(a[i], b[j], 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_draws_new_ids),
        cmocka_unit_test(test_fork_thread_of_the_child_draws_first),
#if defined(TEST_UNDER_FORK_WITHOUT_HANDLERS)
        cmocka_unit_test(test_fork_without_handlers_draws_new_ids),
#endif
        cmocka_unit_test(test_threads_draw_their_own_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
