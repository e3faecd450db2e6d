/* SPDX-License-Identifier: MIT */
/*
 * death.h — death tests for CTX_DEBUG builds (tests/core/test_debug.c,
 * tests/pool/test_debug.c): expect_abort runs a misuse in a forked child
 * with its stderr on a pipe and asserts that the child died of SIGABRT
 * printing the expected line.  Include after cmocka.h.  Without CTX_DEBUG
 * misuse is undefined behaviour, so each test starts with REQUIRE_DEBUG()
 * (skipped then).
 */
#ifndef CTX_TEST_DEATH_H
#define CTX_TEST_DEATH_H

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*misuse_fn)(void *obj);

/* First thing in each test: without CTX_DEBUG there is nothing to test. */
#ifdef CTX_DEBUG
#define REQUIRE_DEBUG() ((void)0)
#else
#define REQUIRE_DEBUG() skip()
#endif

/* Runs misuse(obj) in a child; it must abort printing `want` (a line). */
static inline void expect_abort(misuse_fn misuse, void *obj, const char *want) {
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

#endif
