/* support.c — the counting, failing allocator and the RNG of support.h. */
#include "support.h"

#include <ctxvar.h>
#include <stdatomic.h>
#include <stdlib.h>

static atomic_long attempts;
static atomic_long fail_at; /* attempt number that fails; 0 = none */
static atomic_int fail_all;
static atomic_int fired;
static atomic_long live_blocks;
static atomic_long live_bytes;

static void *test_malloc(size_t size, void *user) {
    (void)user;
    long n = atomic_fetch_add(&attempts, 1) + 1;
    long target = atomic_load(&fail_at);
    if (atomic_load(&fail_all) || (target != 0 && n == target)) {
        atomic_store(&fired, 1);
        return NULL;
    }
    void *p = malloc(size);
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
    atomic_fetch_sub(&live_blocks, 1);
    atomic_fetch_sub(&live_bytes, (long)size);
    free(ptr);
}

void ctx_test_alloc_install(void) {
    atomic_store(&attempts, 0);
    atomic_store(&fail_at, 0);
    atomic_store(&fail_all, 0);
    atomic_store(&fired, 0);
    atomic_store(&live_blocks, 0);
    atomic_store(&live_bytes, 0);
    ctx_allocator_t a = {sizeof(ctx_allocator_t), test_malloc, test_free, NULL};
    ctx_set_allocator(&a);
}

void ctx_test_alloc_uninstall(void) { ctx_set_allocator(NULL); }

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
