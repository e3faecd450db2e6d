/* SPDX-License-Identifier: MIT */
/*
 * clock.c — the timestamps behind queue waits, cheap enough to take twice
 * per task.
 *
 * Every task is stamped when it is submitted and when a worker starts it
 * (ctx_pool_future_queue_wait, the pool's longest queue wait).  With
 * clock_gettime(CLOCK_MONOTONIC) at 25–40 ns a call on common virtual
 * machines, those two stamps were a third of the cost of an empty task.  So
 * the stamps are *ticks*: on x86-64 processors that report an invariant
 * time-stamp counter (CPUID 0x80000007, EDX bit 8: constant rate, runs in
 * every power state) the raw counter (`rdtsc`, about half the cost), and
 * nanoseconds of CLOCK_MONOTONIC everywhere else.  Ticks are turned into
 * nanoseconds only when someone asks for a queue wait, with a ratio measured
 * once against a base pair sampled when the first pool was created:
 *
 *     base:  (tsc0, ns0)  ── taken once (ctx__pool_clock_init) ──┐
 *     first conversion: (tsc1, ns1), at least 1 ms later         │
 *     ns per tick = (ns1 - ns0) / (tsc1 - tsc0)  ◄───────────────┘  frozen
 *
 * The counter's rate is constant, so over a millisecond the ratio is good to
 * a few parts in 100 000, and freezing it makes conversions consistent (the
 * same ticks always give the same nanoseconds: a pool's longest wait is never
 * shorter than one of its futures' waits).  A first conversion asked for
 * within 1 ms of the base waits out the rest of that millisecond (only ever
 * right after the first pool was made).  A stamp is only ever compared with
 * another one of the same kind, and a difference that comes out negative
 * (counters of two processors a few ticks apart) counts as 0.
 *
 * Invariants: ctx__pool_clock_init runs (pthread_once) before any stamp is
 * taken — ctx_pool_new calls it, and every stamp is taken by a thread that
 * got the pool after ctx_pool_new returned; the choice of kind never
 * changes afterwards.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "pool_internal.h"

#include "common/common.h"

#include <pthread.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <x86intrin.h>
#define CTX__HAVE_TSC 1
#else
#define CTX__HAVE_TSC 0
#endif

/* The ratio is measured over at least this long. */
#define CTX__CALIBRATION_NS 1000000u

static pthread_once_t clock_once = PTHREAD_ONCE_INIT;
static pthread_once_t ratio_once = PTHREAD_ONCE_INIT;
static int use_tsc;
static uint64_t base_ticks;
static uint64_t base_ns;
static double ns_per_tick;

uint64_t ctx__pool_now_ns(void) {
    return (uint64_t)ctx__monotonic_ns();
}

static void clock_init(void) {
#if CTX__HAVE_TSC
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000007u &&
        __get_cpuid(0x80000007u, &a, &b, &c, &d) && (d & (1u << 8)))
        use_tsc = 1;
    if (use_tsc) {
        base_ticks = __rdtsc();
        base_ns = ctx__pool_now_ns();
    }
#endif
}

/* ---- how long a pause is ----
 * Workers poll for work a few microseconds before they park (queue.c), by
 * counting pause instructions; a pause takes 4 ns on some processors and
 * 40 on others, so the count is measured once per process: the fastest of
 * 8 runs of 256 pauses timed with the monotonic clock (the fastest, so that
 * a run the scheduler interrupted does not count; 10 to 100 microseconds in
 * all). */
static unsigned pauses_per_us = 32;

static void measure_pause(void) {
    uint64_t best = UINT64_MAX;
    for (int run = 0; run < 8; run++) {
        uint64_t t0 = ctx__pool_now_ns();
        for (int i = 0; i < 256; i++)
            ctx__cpu_relax();
        uint64_t ns = ctx__pool_now_ns() - t0;
        if (ns < best)
            best = ns;
    }
    unsigned per_us = best ? (unsigned)(256u * 1000u / best) : 1000u;
    pauses_per_us = per_us < 1 ? 1 : per_us > 1000 ? 1000 : per_us;
}

static void clock_init_all(void) {
    clock_init();
    measure_pause();
}

void ctx__pool_clock_init(void) { pthread_once(&clock_once, clock_init_all); }

unsigned ctx__pool_pauses_for_us(unsigned us) { return pauses_per_us * us; }

uint64_t ctx__pool_ticks(void) {
#if CTX__HAVE_TSC
    if (use_tsc)
        return __rdtsc();
#endif
    return ctx__pool_now_ns();
}

#if CTX__HAVE_TSC
static void measure_ratio(void) {
    uint64_t t1, n1;
    do {
        t1 = __rdtsc();
        n1 = ctx__pool_now_ns();
    } while (n1 - base_ns < CTX__CALIBRATION_NS || t1 <= base_ticks);
    ns_per_tick = (double)(n1 - base_ns) / (double)(t1 - base_ticks);
}
#endif

uint64_t ctx__pool_ticks_to_ns(uint64_t ticks) {
#if CTX__HAVE_TSC
    if (use_tsc) {
        pthread_once(&ratio_once, measure_ratio);
        return (uint64_t)((double)ticks * ns_per_tick);
    }
#endif
    return ticks;
}

uint64_t ctx__pool_ticks_between(uint64_t from, uint64_t to) {
    return to > from ? ctx__pool_ticks_to_ns(to - from) : 0;
}
