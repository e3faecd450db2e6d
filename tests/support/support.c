/* SPDX-License-Identifier: MIT */
/* support.c — the counting, failing allocator and the RNG of support.h. */
#include "support.h"

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_long attempts;
static atomic_long fail_at; /* attempt number that fails; 0 = none */
static atomic_int fail_all;
static atomic_int fired;
static atomic_long live_blocks;
static atomic_long live_bytes;

/* Reuse mode: freed blocks wait here (newest last) to be handed back by the
 * next allocation of the same size. */
#define REUSE_SLOTS 16
static pthread_mutex_t reuse_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int reuse_on;
static struct {
    void *ptr;
    size_t size;
} reuse[REUSE_SLOTS];
static int reuse_count;

static void *reuse_take(size_t size) {
    void *p = NULL;
    pthread_mutex_lock(&reuse_lock);
    for (int i = reuse_count - 1; i >= 0; i--) {
        if (reuse[i].size == size) {
            p = reuse[i].ptr;
            reuse[i] = reuse[--reuse_count];
            break;
        }
    }
    pthread_mutex_unlock(&reuse_lock);
    return p;
}

/* 1 if `ptr` was kept for reuse, 0 if it should be freed. */
static int reuse_keep(void *ptr, size_t size) {
    int kept = 0;
    pthread_mutex_lock(&reuse_lock);
    if (reuse_count < REUSE_SLOTS) {
        reuse[reuse_count].ptr = ptr;
        reuse[reuse_count].size = size;
        reuse_count++;
        kept = 1;
    }
    pthread_mutex_unlock(&reuse_lock);
    return kept;
}

static void reuse_flush(void) {
    pthread_mutex_lock(&reuse_lock);
    for (int i = 0; i < reuse_count; i++)
        free(reuse[i].ptr);
    reuse_count = 0;
    pthread_mutex_unlock(&reuse_lock);
}

static void *test_malloc(size_t size, void *user) {
    (void)user;
    long n = atomic_fetch_add(&attempts, 1) + 1;
    long target = atomic_load(&fail_at);
    if (atomic_load(&fail_all) || (target != 0 && n == target)) {
        atomic_store(&fired, 1);
        return NULL;
    }
    void *p = atomic_load(&reuse_on) ? reuse_take(size) : NULL;
    if (!p)
        p = malloc(size);
    if (p) {
        atomic_fetch_add(&live_blocks, 1);
        atomic_fetch_add(&live_bytes, (long)size);
    }
    return p;
}

static void test_free(void *ptr, size_t size, void *user) {
    (void)user;
    if (!ptr)
        return;
    /* A size larger than the block's would, with the library's recycling
     * (kept by size), hand a later allocation a block too small. */
    if (malloc_usable_size(ptr) < size) {
        fprintf(stderr, "ctx_test allocator: block %p freed with size %zu, larger than it is\n", ptr,
                size);
        abort();
    }
    atomic_fetch_sub(&live_blocks, 1);
    atomic_fetch_sub(&live_bytes, (long)size);
    if (!atomic_load(&reuse_on) || !reuse_keep(ptr, size))
        free(ptr);
}

void ctx_test_alloc_reuse(int on) {
    atomic_store(&reuse_on, on);
    if (!on)
        reuse_flush();
}

void ctx_test_alloc_install(void) {
    (void)ctx_cancel_timer_release(); /* see support.h */
    atomic_store(&attempts, 0);
    atomic_store(&fail_at, 0);
    atomic_store(&fail_all, 0);
    atomic_store(&fired, 0);
    atomic_store(&live_blocks, 0);
    atomic_store(&live_bytes, 0);
    ctx_allocator_t a = {sizeof(ctx_allocator_t), test_malloc, test_free, NULL};
    ctx_set_allocator(&a);
}

void ctx_test_alloc_uninstall(void) {
    (void)ctx_cancel_timer_release();
    ctx_set_allocator(NULL);
    ctx_test_alloc_reuse(0);
}

void ctx_test_alloc_fail_nth(long n) {
    atomic_store(&fired, 0);
    atomic_store(&fail_at, n == 0 ? 0 : atomic_load(&attempts) + n);
}

void ctx_test_alloc_fail_all(int on) { atomic_store(&fail_all, on); }
long ctx_test_alloc_attempts(void) { return atomic_load(&attempts); }
int ctx_test_alloc_fired(void) { return atomic_load(&fired); }
long ctx_test_alloc_live_blocks(void) { return atomic_load(&live_blocks); }
long ctx_test_alloc_live_bytes(void) { return atomic_load(&live_bytes); }

void ctx_test_rng_seed(ctx_test_rng_t *rng, uint64_t seed) {
    rng->state = seed ? seed : 0x9E3779B97F4A7C15ull;
}

uint64_t ctx_test_rng_next(ctx_test_rng_t *rng) {
    uint64_t x = rng->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t ctx_test_rng_below(ctx_test_rng_t *rng, uint64_t n) {
    return ctx_test_rng_next(rng) % n;
}

uint64_t ctx_test_seed(uint64_t fallback) {
    const char *s = getenv("CTX_TEST_SEED");
    if (s && *s)
        return strtoull(s, NULL, 0);
    return fallback;
}
