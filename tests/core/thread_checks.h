/* SPDX-License-Identifier: MIT */
/*
 * thread_checks.h — checks made in worker threads of a core test.
 *
 * cmocka's assertions are for the main thread only: a worker thread counts
 * its failed TCHECKs (keeping the first message), and the main thread
 * asserts the count is zero once the workers are joined.
 */
#ifndef CTX_CORE_THREAD_CHECKS_H
#define CTX_CORE_THREAD_CHECKS_H

#include "core_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

static atomic_long thread_failures;
static pthread_mutex_t failure_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_failure[256];

static inline void thread_fail(const char *file, int line, const char *what) {
    if (atomic_fetch_add(&thread_failures, 1) == 0) {
        pthread_mutex_lock(&failure_lock);
        snprintf(first_failure, sizeof first_failure, "%s:%d: %s", file, line, what);
        pthread_mutex_unlock(&failure_lock);
    }
}

#define TCHECK(cond)                                                                           \
    do {                                                                                       \
        if (!(cond))                                                                           \
            thread_fail(__FILE__, __LINE__, #cond);                                            \
    } while (0)

static inline void reset_failures(void) {
    atomic_store(&thread_failures, 0);
    first_failure[0] = '\0';
}

static inline void assert_no_thread_failures(void) {
    long n = atomic_load(&thread_failures);
    if (n) {
        pthread_mutex_lock(&failure_lock);
        fail_msg("%ld failed check(s) in threads; first: %s", n, first_failure);
        pthread_mutex_unlock(&failure_lock);
    }
}

#endif /* CTX_CORE_THREAD_CHECKS_H */
