/* SPDX-License-Identifier: MIT */
/*
 * thread.c — threads that start in a known context.
 *
 * A new pthread has no ctxvar state: it starts in an empty context, which is
 * right for a long-lived service thread (it must not pin whatever its
 * creator happened to hold — the stale-worker bug).  When the new thread
 * does work on its creator's behalf it should instead start where the
 * creator is: CTX_POOL_THREAD_INHERIT copies the creator's current context (O(1))
 * at creation and runs fn inside that private copy, so the thread's sets
 * never reach the creator and the creator's later sets never reach it.
 *
 *     creator ── ctx_pool_thread_create ──► record { fn, arg, context?, result }
 *                                          │
 *     new thread: run fn (in context, if any) ─► release context ─►
 *                 ctx_thread_release() ─► (detached: free record)
 *     joiner:     pthread_join ─► read result ─► free record
 *
 * Invariants: the record is freed exactly once, by the joiner or (detached)
 * by the thread itself; after pthread_create the creator touches a detached
 * thread's record no more (it may already be gone).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "pool_internal.h"

#include "core/alloc.h"

#include <pthread.h>
#include <string.h>

struct ctx_pool_thread {
    pthread_t tid;
    ctx_run_fn fn;
    void *arg;
    ctx_context_t *context; /* CTX_POOL_THREAD_INHERIT: the private copy */
    void *result;
    int error;
    int detached;
    unsigned generation; /* the fork generation it was started in */
};

static void *thread_main(void *p) {
    ctx_pool_thread_t *t = p;
    if (t->context) {
        t->error = ctx_context_run(t->context, t->fn, t->arg, &t->result);
        ctx_context_release(t->context);
        t->context = NULL;
    } else {
        t->result = t->fn(t->arg);
    }
    (void)ctx_thread_release(); /* the thread's own context and caches */
    if (t->detached)
        ctx__free(t, sizeof *t);
    return NULL;
}

int ctx_pool_thread_create(ctx_run_fn fn, void *arg, unsigned flags,
                      ctx_pool_thread_t **out) {
    if (!fn || (flags & ~CTX_POOL_THREAD_INHERIT))
        return CTX_EINVAL;
    if (ctx__pool_fork_watch() != 0)
        return CTX_ESYSTEM;
    ctx_pool_thread_t *t = ctx__malloc(sizeof *t);
    if (!t)
        return CTX_ENOMEM;
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->arg = arg;
    t->detached = out == NULL;
    t->generation = ctx__pool_fork_generation();
    if (flags & CTX_POOL_THREAD_INHERIT) {
        int rc = ctx_context_copy_current(&t->context);
        if (rc != 0) {
            ctx__free(t, sizeof *t);
            return rc;
        }
    }
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        goto fail;
    if (t->detached &&
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) != 0) {
        pthread_attr_destroy(&attr);
        goto fail;
    }
    pthread_t tid;
    int prc = pthread_create(&tid, &attr, thread_main, t);
    pthread_attr_destroy(&attr);
    if (prc != 0)
        goto fail;
    /* A detached thread may have finished and freed `t` already. */
    if (out) {
        t->tid = tid;
        *out = t;
    }
    return 0;
fail:
    ctx_context_release(t->context);
    ctx__free(t, sizeof *t);
    return CTX_ESYSTEM;
}

int ctx_pool_thread_join(ctx_pool_thread_t *thread, void **result) {
    if (!thread)
        return CTX_EINVAL;
    if (thread->generation != ctx__pool_fork_generation()) {
        ctx__free(thread, sizeof *thread); /* the thread is the parent's */
        return CTX_EFORKED;
    }
    int rc = pthread_join(thread->tid, NULL) == 0 ? thread->error : CTX_ESYSTEM;
    if (result && rc != CTX_ESYSTEM)
        *result = thread->result;
    ctx__free(thread, sizeof *thread);
    return rc;
}
