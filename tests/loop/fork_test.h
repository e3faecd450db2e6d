/* SPDX-License-Identifier: MIT */
/*
 * fork_test.h — running checks in a child of fork() from a cmocka test
 * (tests/loop and tests/bus).
 *
 * cmocka's assertions longjmp to the test runner, which in a child would go
 * on running the rest of the suite there; so the child checks with
 * CHILD_CHECK (prints what failed and counts it) and ends with
 * child_exit(), and the parent asserts with run_child() that the child
 * ended, in time, with every check passed.  A child that hangs is killed
 * after CHILD_TIMEOUT_S seconds and fails the test (the point of most fork
 * tests is that nothing hangs).
 */
#ifndef CTX_FORK_TEST_H
#define CTX_FORK_TEST_H

#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILD_TIMEOUT_S 60

static int child_failures;

#define CHILD_CHECK(cond)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            child_failures++;                                                      \
            fprintf(stderr, "%s:%d: in the child: check failed: %s\n", __FILE__,   \
                    __LINE__, #cond);                                              \
        }                                                                          \
    } while (0)

#define CHILD_CHECK_RC(expr, want)                                                 \
    do {                                                                           \
        int got_ = (expr);                                                         \
        if (got_ != (want)) {                                                      \
            child_failures++;                                                      \
            fprintf(stderr, "%s:%d: in the child: %s returned %s, expected %s\n",  \
                    __FILE__, __LINE__, #expr, ctx_error_name(got_),               \
                    ctx_error_name(want));                                         \
        }                                                                          \
    } while (0)

/* Ends the child: status 0 if every CHILD_CHECK held.
 *
 * Under valgrind the child execs /bin/true or /bin/false instead of
 * exiting: what the parent's objects and threads held at the fork stays
 * allocated in the child by design (a worker's thread state, a loop whose
 * uv loop the child must not poll, a bus whose locks it must not take), so
 * valgrind's leak check of the child would report it; exec ends the child
 * without that check.  (Memory errors in the child are still printed by
 * valgrind, and make the AddressSanitizer build's child fail.) */
static inline void child_exit(void) {
    fflush(stderr);
#if defined(CTX_TEST_UNDER_VALGRIND)
    execl(child_failures ? "/bin/false" : "/bin/true", child_failures ? "false" : "true",
          (char *)NULL);
#endif
    _exit(child_failures ? 1 : 0);
}

/* Parent: waits for the child (killing it after CHILD_TIMEOUT_S) and
 * returns its exit status, or -1 if it was killed or crashed. */
static inline int wait_child(pid_t pid) {
    struct timespec nap = {0, 2000000}; /* 2 ms */
    long waited_ms = 0;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0)
            return -1;
        if (waited_ms > CHILD_TIMEOUT_S * 1000L) {
            fprintf(stderr, "the child hung: killed\n");
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        nanosleep(&nap, NULL);
        waited_ms += 2;
    }
}

#endif /* CTX_FORK_TEST_H */
