/* SPDX-License-Identifier: MIT */
/*
 * common/common.h — what every ctxvar library shares internally (libuv's
 * uv-common.h): one copy of each small primitive instead of one per module.
 *
 * Everything here is `static inline`, so that each library (libctxvar and
 * every module's libctxvar_<m>) carries its own copy and no internal symbol
 * crosses a shared-library boundary.  Nothing here is public API.
 *
 *   ctx__cpu_relax          the pause instruction for spin-wait loops
 *   ctx__spin_lock/unlock   a test-and-test-and-set lock over an atomic_int,
 *                           held for a handful of instructions (never around
 *                           user code: see docs/api-rules.md)
 *   ctx__monotonic_ns       CLOCK_MONOTONIC in nanoseconds
 *   ctx__cond_init_monotonic / ctx__cond_deadline
 *                           condition variables waiting on CLOCK_MONOTONIC
 *                           (falling back to CLOCK_REALTIME where the clock
 *                           attribute is missing), and the absolute deadline
 *                           "now + ns" on the clock the variable uses
 *   CTX__LIST_REVERSE       reverse a singly linked list in place
 *   ctx__struct_in / ctx__struct_out
 *                           the growth rule for public structs (below)
 *   ctx__process_var        a process-wide static variable made on first
 *                           use (the cancel module's, the wire's trace)
 *
 * Growth rule for public structs
 * ------------------------------
 * Every public options, stats and report struct starts with `size_t size`,
 * which the caller sets to sizeof the struct as its header defines it
 * (CTX_STRUCT_INIT(type) does that and zeroes the rest).  The library reads
 * an input struct with ctx__struct_in: members the caller's (older) struct
 * lacks read as zero, which always means "the default"; a caller's (newer)
 * struct larger than the library's is accepted only if every byte the
 * library does not know is zero (the Linux kernel's copy_struct_from_user
 * rule); a size below the first published layout is CTX_EINVAL.  It writes
 * an output struct with ctx__struct_out: never more than the caller's size.
 */
#ifndef CTX_COMMON_H
#define CTX_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "ctxvar.h"

/* ---- spinning ---- */

static inline void ctx__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

/* A lock word: 0 free, 1 held.  Waiters yield the processor rather than
 * spin hard: on a machine with fewer cores than threads the holder may be
 * descheduled. */
static inline void ctx__spin_lock(atomic_int *lock) {
    while (atomic_exchange_explicit(lock, 1, memory_order_acquire)) {
        while (atomic_load_explicit(lock, memory_order_relaxed))
            sched_yield();
    }
}

static inline void ctx__spin_unlock(atomic_int *lock) {
    atomic_store_explicit(lock, 0, memory_order_release);
}

/* ---- clocks and timed waits ---- */

static inline int64_t ctx__monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Initialises `cond` to wait on CLOCK_MONOTONIC if the platform allows.
 * Returns pthread_cond_init's result; *monotonic tells which clock it uses
 * (pass it to ctx__cond_deadline). */
static inline int ctx__cond_init_monotonic(pthread_cond_t *cond, int *monotonic) {
    pthread_condattr_t attr;
    int have_attr = pthread_condattr_init(&attr) == 0;
    *monotonic = have_attr && pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0;
    int rc = pthread_cond_init(cond, *monotonic ? &attr : NULL);
    if (have_attr)
        pthread_condattr_destroy(&attr);
    return rc;
}

/* The absolute time `ns` (>= 0) nanoseconds from now on the clock of a
 * condition variable made by ctx__cond_init_monotonic. */
static inline void ctx__cond_deadline(int monotonic, int64_t ns, struct timespec *ts) {
    clock_gettime(monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME, ts);
    int64_t sec = ns / 1000000000;
    int64_t nsec = ts->tv_nsec + ns % 1000000000;
    if (nsec >= 1000000000) {
        nsec -= 1000000000;
        sec++;
    }
    ts->tv_sec += (time_t)sec;
    ts->tv_nsec = (long)nsec;
}

/* ---- lists ---- */

/* Reverses the singly linked list at `head` (an lvalue of type T *, linked
 * through the member `next`) in place. */
#define CTX__LIST_REVERSE(T, head, next)                                       \
    do {                                                                       \
        T *ctx__rev_done = NULL;                                               \
        while (head) {                                                         \
            T *ctx__rev_next = (head)->next;                                   \
            (head)->next = ctx__rev_done;                                      \
            ctx__rev_done = (head);                                            \
            (head) = ctx__rev_next;                                            \
        }                                                                      \
        (head) = ctx__rev_done;                                                \
    } while (0)

/* ---- growable public structs (see the growth rule above) ---- */

/* Copies the caller's struct `src` (whose first member is its size) into
 * the library's `dst` of `dst_size` bytes.  `min_size` is the size of the
 * first published layout.  Returns 0 or CTX_EINVAL (src NULL is not an
 * error: the caller decides what NULL means before calling). */
static inline int ctx__struct_in(void *dst, size_t dst_size, const void *src, size_t min_size) {
    size_t size;
    memcpy(&size, src, sizeof size);
    if (size < min_size)
        return CTX_EINVAL;
    if (size > dst_size) {
        const unsigned char *tail = (const unsigned char *)src + dst_size;
        for (size_t i = 0; i < size - dst_size; i++)
            if (tail[i])
                return CTX_EINVAL;
    }
    memset(dst, 0, dst_size);
    memcpy(dst, src, size < dst_size ? size : dst_size);
    memcpy(dst, &dst_size, sizeof dst_size);
    return 0;
}

/* Writes the library's `src` (`src_size` bytes, size member included) into
 * the caller's `dst`, at most as many bytes as dst->size says, keeping the
 * caller's size.  Returns 0 or CTX_EINVAL (dst->size smaller than a size_t). */
static inline int ctx__struct_out(void *dst, const void *src, size_t src_size) {
    size_t size;
    memcpy(&size, dst, sizeof size);
    if (size < sizeof(size_t))
        return CTX_EINVAL;
    size_t n = size < src_size ? size : src_size;
    if (n > sizeof(size_t))
        memcpy((unsigned char *)dst + sizeof(size_t), (const unsigned char *)src + sizeof(size_t),
               n - sizeof(size_t));
    return 0;
}

/* ---- process-wide variables ---- */

/* The variable in *slot, made on first use with `name` and `ops` and never
 * released: a module's one variable for the process (the cancel scope's,
 * the wire's trace).  It outlives every context, so it is CTX_VAR_STATIC
 * (its values hold no reference to it).  A thread that loses the race to
 * publish its own drops it (nothing holds it yet).  NULL with *err set
 * (ctx_var_new's code) if it could not be made. */
static inline ctx_var_t *ctx__process_var(_Atomic(ctx_var_t *) *slot, const char *name,
                                          const ctx_value_ops_t *ops, int *err) {
    ctx_var_t *var = atomic_load_explicit(slot, memory_order_acquire);
    if (var)
        return var;
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.ops = ops;
    o.flags = CTX_VAR_STATIC;
    int rc = ctx_var_new(name, &o, &var);
    if (rc != 0) {
        *err = rc;
        return NULL;
    }
    ctx_var_t *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(slot, &expected, var, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        ctx_var_release(var);
        return expected;
    }
    return var;
}

#endif /* CTX_COMMON_H */
