/* SPDX-License-Identifier: MIT */
/*
 * recycle.c — task records are reused, not freed and allocated per task.
 *
 * What it is for
 * --------------
 * A record (the task and its future, with the task's context inside) is
 * allocated by the submitter and, for a fire-and-forget task, dies on a
 * worker.  With malloc and free that is a cross-thread free per task, which
 * empties the submitter's allocator cache and makes both sides meet at the
 * allocator's arena lock.  Instead records travel back to submitters by the
 * batch:
 *
 *     worker ── dead record ──► self->dead (private, up to 32)
 *                                   │ full: pushed under spare_lock
 *                                   ▼
 *              pool->spares: batch ─► batch ─► batch   (at most 64 batches)
 *                                   │ popped whole under spare_lock
 *                                   ▼
 *     submit ◄── one per submit ── tls_spares (the submitting thread's own)
 *
 * A steady stream of tasks therefore allocates nothing, and recycling costs
 * no per-task write to memory another thread writes: a worker takes the
 * spinlock once per 32 dead records, a submitter once per 32 submits (and
 * looks at `spare_count` without it first, so an empty stack costs one
 * load).  When the stack is full (submitters are not taking batches, e.g.
 * the tasks come with futures, whose records die on the thread that drops
 * the last reference, or a backlog larger than 2048 tasks drained) the
 * worker frees its batch.
 *
 * Records are pool-agnostic memory (no captured stack: those are freed).  A
 * thread's spares are freed when it exits (a pthread key destructor) or
 * calls ctx_pool_release; a worker's partial batch when it exits; the
 * pool's stack when the pool is freed.  At most CTX__POOL_SPARE_BATCHES ×
 * CTX__POOL_SPARE_BATCH (2048) records wait in a pool, about half a
 * megabyte, and at most one batch per submitting thread.
 *
 * On 16 or 64 processors: the spinlock is taken once per 32 tasks per side,
 * so even 64 threads take it a few million times a second at most, for a
 * handful of instructions each time.
 */
#include "pool_internal.h"

#include "common/common.h"
#include "core/alloc.h"

#include <pthread.h>

static _Thread_local ctx_pool_future_t *tls_spares; /* linked through `next` */
static _Thread_local bool tls_spare_armed;          /* the key's destructor will run */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static int spare_key_ok;

static void free_list(ctx_pool_future_t *f) {
    while (f) {
        ctx_pool_future_t *next = f->link;
        ctx__future_free_memory(f);
        f = next;
    }
}

void ctx__recycle_thread_free(void) {
    free_list(tls_spares);
    tls_spares = NULL;
}

static void spare_destructor(void *unused) {
    (void)unused;
    ctx__recycle_thread_free();
}

static void spare_key_init(void) {
    spare_key_ok = pthread_key_create(&spare_key, spare_destructor) == 0;
}

/* 1 if this thread may keep spares: its exit will free them. */
static bool spares_allowed(void) {
    if (!tls_spare_armed) {
        pthread_once(&spare_once, spare_key_init);
        if (!spare_key_ok || pthread_setspecific(spare_key, &tls_spares) != 0)
            return false;
        tls_spare_armed = true;
    }
    return true;
}

/* Takes a whole batch from the pool's stack into tls_spares. */
static void refill(ctx_pool_t *pool) {
    if (atomic_load_explicit(&pool->spare_count, memory_order_relaxed) == 0)
        return;
    ctx__spin_lock(&pool->spare_lock);
    ctx_pool_future_t *batch = pool->spares;
    if (batch) {
        pool->spares = batch->next_batch;
        atomic_store_explicit(&pool->spare_count,
                              atomic_load_explicit(&pool->spare_count, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    ctx__spin_unlock(&pool->spare_lock);
    tls_spares = batch;
}

ctx_pool_future_t *ctx__recycle_take(ctx_pool_t *pool) {
    if (!tls_spares && spares_allowed())
        refill(pool);
    ctx_pool_future_t *f = tls_spares;
    if (f)
        tls_spares = f->link;
    return f;
}

void ctx__recycle_give(ctx_pool_t *pool, ctx__worker_t *self, ctx_pool_future_t *dead) {
    dead->link = self->w.dead;
    self->w.dead = dead;
    if (++self->w.dead_count < CTX__POOL_SPARE_BATCH)
        return;
    ctx_pool_future_t *batch = self->w.dead;
    self->w.dead = NULL;
    self->w.dead_count = 0;
    bool kept = false;
    ctx__spin_lock(&pool->spare_lock);
    size_t n = atomic_load_explicit(&pool->spare_count, memory_order_relaxed);
    if (n < CTX__POOL_SPARE_BATCHES) {
        batch->next_batch = pool->spares;
        pool->spares = batch;
        atomic_store_explicit(&pool->spare_count, n + 1, memory_order_relaxed);
        kept = true;
    }
    ctx__spin_unlock(&pool->spare_lock);
    if (!kept)
        free_list(batch); /* the stack is full: nobody is taking them */
}

void ctx__recycle_worker_exit(ctx__worker_t *self) {
    free_list(self->w.dead);
    self->w.dead = NULL;
    self->w.dead_count = 0;
}

void ctx__recycle_pool_free(ctx_pool_t *pool) {
    ctx_pool_future_t *batch = pool->spares;
    while (batch) {
        ctx_pool_future_t *next = batch->next_batch;
        free_list(batch);
        batch = next;
    }
    pool->spares = NULL;
    atomic_store_explicit(&pool->spare_count, 0, memory_order_relaxed);
}
