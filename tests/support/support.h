/* SPDX-License-Identifier: MIT */
/*
 * support.h — what every ctxvar test shares: a counting allocator that can be
 * told to fail, and a seeded random generator.
 *
 * The allocator is installed with ctx_set_allocator and wraps malloc/free, so
 * installing or removing it while objects are alive is safe.
 */
#ifndef CTX_TEST_SUPPORT_H
#define CTX_TEST_SUPPORT_H

#include <stdint.h>

/* Installs the counting allocator (resets every counter, no failure armed).
 * ctx_set_allocator wants no other thread in the library, and the cancel
 * module's timer thread is one: a deadline it fired may still hold the
 * scope's last reference, which it frees when it gets the processor again
 * (through whichever hooks are installed then).  So both calls first stop
 * that thread (ctx_cancel_timer_release joins it once its firing is done);
 * with deadlines pending it stays, and the test that left them owns the
 * consequences. */
void ctx_test_alloc_install(void);
/* Restores the default allocator (after stopping the timer thread, as
 * above). */
void ctx_test_alloc_uninstall(void);
/* Makes the n-th allocation from now fail (1 = the next one); every later
 * allocation succeeds again.  0 disarms. */
void ctx_test_alloc_fail_nth(long n);
/* Makes every allocation from now fail (1) or none (0). */
void ctx_test_alloc_fail_all(int on);
/* Allocations attempted since install (failed ones included). */
long ctx_test_alloc_attempts(void);
/* 1 if an armed failure has fired since it was armed. */
int ctx_test_alloc_fired(void);
/* Reuse mode (1 on, 0 off; off frees what it kept): a freed block is kept
 * and handed back by the next allocation of the same size, so a test can
 * make the library put a new object at the address of one it just freed,
 * deterministically.  Uninstalling turns it off. */
void ctx_test_alloc_reuse(int on);
/* Blocks allocated through the hook and not yet freed, and their bytes. */
long ctx_test_alloc_live_blocks(void);
long ctx_test_alloc_live_bytes(void);

/* xorshift64* generator; a seed of 0 is replaced by a fixed constant. */
typedef struct ctx_test_rng {
    uint64_t state;
} ctx_test_rng_t;
void ctx_test_rng_seed(ctx_test_rng_t *rng, uint64_t seed);
uint64_t ctx_test_rng_next(ctx_test_rng_t *rng);
/* Uniform in [0, n). n > 0. */
uint64_t ctx_test_rng_below(ctx_test_rng_t *rng, uint64_t n);
/* The seed from the CTX_TEST_SEED environment variable, else `fallback`. */
uint64_t ctx_test_seed(uint64_t fallback);

#endif
