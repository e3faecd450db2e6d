/* SPDX-License-Identifier: MIT */
/*
 * random.c — the id generator behind new trace and span ids.
 *
 * Every outgoing call carries a fresh parent id (traceparent.c), so this is
 * on the path of every inject: it must cost a few nanoseconds, and two
 * processes must never draw the same sequence — not even a parent and the
 * child it forked, which starts with a copy of the parent's memory, and so
 * of the generator's state.
 *
 * The generator is xoshiro256** (Blackman and Vigna), one per thread in
 * thread-local storage, seeded on first use from getrandom() (or
 * /dev/urandom, or at worst the clock and addresses).  Fork detection
 * decides when to seed again:
 *
 *   wipe page   one page mapped at the first seeding with
 *               madvise(MADV_WIPEONFORK) (Linux 4.14), holding the
 *               process's generation: a random value, never 0, set by the
 *               first seeding of each process.  The kernel hands a child of
 *               any fork — fork(), _Fork(), a raw clone without CLONE_VM —
 *               that page zeroed.  Each generator remembers the generation
 *               it was seeded under, and a draw compares it with the page's
 *               (a relaxed load of a line nobody writes): another value
 *               means the generator was seeded in an ancestor, so it seeds
 *               again, and whichever thread of the child seeds first sets
 *               the child's generation (a compare-and-swap from 0).  A
 *               plain "seeded here" flag would not do: a thread made in the
 *               child could set it before the forking thread, which holds
 *               its parent's state, draws again.  (BoringSSL detects forks
 *               with such a page too.)
 *   pid         where the page cannot be had (an older kernel, mmap
 *               failing), the thread remembers the pid it seeded under and
 *               compares it with getpid() on every draw: correct, but a
 *               system call per id (about 1 µs on a virtual machine, where
 *               it was measured as the largest part of a gRPC client
 *               interceptor's own cost).
 *
 * The page is mapped once (pthread_once) and never unmapped: 4 KiB for the
 * process's life, outside the allocator (a page of its own is what the
 * kernel wipes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "wire/wire_internal.h"

typedef struct rng {
    uint64_t s[4];
    int seeded;
    uint64_t gen; /* the page's generation when seeded */
    pid_t pid;    /* the pid check: the process it was seeded in */
} rng_t;

static _Thread_local rng_t thread_rng;

/* The process's generation, on the wipe page; NULL: no page, the pid check
 * is used. */
static atomic_uint_fast64_t *wipe_gen;
static pthread_once_t wipe_once = PTHREAD_ONCE_INIT;

static void wipe_map(void) {
#if defined(MADV_WIPEONFORK) && !defined(CTX_WIRE_RANDOM_PID_CHECK) /* the tests build both */
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    if (madvise(p, (size_t)page, MADV_WIPEONFORK) != 0) {
        munmap(p, (size_t)page);
        return;
    }
    wipe_gen = p; /* 0: no generator seeded in this process yet */
#endif
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_t *r) {
    uint64_t result = rotl(r->s[1] * 5, 7) * 9;
    uint64_t t = r->s[1] << 17;
    r->s[2] ^= r->s[0];
    r->s[3] ^= r->s[1];
    r->s[1] ^= r->s[2];
    r->s[0] ^= r->s[3];
    r->s[2] ^= t;
    r->s[3] = rotl(r->s[3], 45);
    return result;
}

static int read_os_random(void *buf, size_t n) {
    size_t got = 0;
    for (int tries = 0; got < n && tries < 8; tries++) {
        ssize_t k = getrandom((char *)buf + got, n - got, 0);
        if (k > 0)
            got += (size_t)k;
        else if (k < 0 && errno != EINTR)
            break;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    for (int tries = 0; got < n && tries < 8; tries++) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k > 0)
            got += (size_t)k;
        else if (k < 0 && errno != EINTR)
            break;
    }
    close(fd);
    return got == n ? 0 : -1;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r) {
    pthread_once(&wipe_once, wipe_map);
    pid_t pid = getpid();
    uint64_t seed[4];
    if (read_os_random(seed, sizeof seed) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)(uintptr_t)r ^ ((uint64_t)pid << 32);
        for (int i = 0; i < 4; i++)
            seed[i] = splitmix(&x);
    }
    memcpy(r->s, seed, sizeof seed);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
    r->pid = pid;
    r->seeded = 1;
    if (wipe_gen) {
        /* The first seeding of this process names its generation: a value
         * from the fresh seed (never 0), which an ancestor's generation
         * matches with a chance of 2^-63. */
        uint64_t mine = (seed[0] ^ (seed[3] << 1)) | 1, none = 0;
        atomic_compare_exchange_strong_explicit(wipe_gen, &none, mine, memory_order_relaxed,
                                                memory_order_relaxed);
        r->gen = atomic_load_explicit(wipe_gen, memory_order_relaxed);
    }
}

/* 1 if `r` was seeded in this process (see the essay). */
static inline int rng_valid(const rng_t *r) {
    if (!r->seeded)
        return 0;
    if (wipe_gen) /* set before the first seeding, never changed */
        return atomic_load_explicit(wipe_gen, memory_order_relaxed) == r->gen;
    return r->pid == getpid();
}

void ctx__wire_random(uint8_t *out, size_t n) {
    rng_t *r = &thread_rng;
    if (__builtin_expect(!rng_valid(r), 0))
        rng_seed(r);
    while (n > 0) {
        uint64_t x = rng_next(r);
        size_t k = n < 8 ? n : 8;
        memcpy(out, &x, k);
        out += k;
        n -= k;
    }
}
