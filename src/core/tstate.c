/* SPDX-License-Identifier: MIT */
/*
 * tstate.c — the per-thread current context.
 *
 * Each thread that needs one gets a ctx__tstate_t (core.h): its base context
 * (empty, made on first need, marked entered so no other thread can enter
 * it), the current context, and the lookup cache.  The pointer lives in a
 * _Thread_local for speed; a pthread key with a destructor releases it at
 * thread exit, after leaving any context the thread forgot to exit.
 * ctx_thread_release does the same on request (the main thread's exit runs no
 * key destructors).
 *
 * Nothing is global but the key and its pthread_once; a released thread
 * state leaves no trace, so a test can start over.
 *
 * fork()
 * ------
 * The child is a copy of the forking thread only.  Its thread state, current
 * context and every context it entered are plain memory that only it
 * changes, so they keep working, with one exception: a context's lock may
 * have been held at the moment of the fork by another thread reading the
 * context (copying it, formatting it...), and that thread does not exist in
 * the child to let go.  The child handler (pthread_atfork, installed with
 * the key) therefore unlocks the forking thread's chain of entered contexts,
 * which no one else can be changing.  The core has no global lock to keep
 * consistent.  Contexts entered in other threads at the fork stay entered in
 * the child for ever (CTX_EENTERED), and a context that another thread was
 * *changing* at the fork is, as POSIX says of any memory another thread was
 * writing, not to be used in the child.
 */
#include <pthread.h>

#include "core/alloc.h"
#include "core/core.h"

_Thread_local ctx__tstate_t *ctx__tls;

static pthread_key_t tstate_key;
static pthread_once_t tstate_once = PTHREAD_ONCE_INIT;
static int tstate_key_error;

static void tstate_free(ctx__tstate_t *ts) {
    ctx__reserve_flush(ts);
    /* Leave whatever is still entered, innermost first. */
    while (ts->current != ts->base) {
        ctx_context_t *ctx = ts->current;
        ts->current = ctx->prev;
        ctx->prev = NULL;
        /* A context in caller-owned storage (a capture, a pool task's) was
         * entered without a reference and is never freed by the core. */
        ctx__context_unref(ctx, ctx->embedded ? CTX__ENTERED : CTX__ENTERED + CTX__REF);
    }
    ctx__tls = NULL;
    ctx__context_unref(ts->base, CTX__ENTERED + CTX__REF);
    ctx__free(ts, sizeof *ts);
}

static void tstate_destructor(void *p) { tstate_free(p); }

/* In the child of fork(): see "fork()" above. */
static void tstate_after_fork(void) {
    ctx__tstate_t *ts = ctx__tls;
    for (ctx_context_t *ctx = ts ? ts->current : NULL; ctx; ctx = ctx->prev)
        ctx__context_unlock(ctx);
}

static void tstate_key_init(void) {
    tstate_key_error = pthread_key_create(&tstate_key, tstate_destructor);
    if (!tstate_key_error)
        tstate_key_error = pthread_atfork(NULL, NULL, tstate_after_fork);
}

ctx__tstate_t *ctx__tstate_make(int *err) {
    ctx__tstate_t *ts;
    ctx__gate_decide(); /* before this thread can own a context (gate.c) */
    pthread_once(&tstate_once, tstate_key_init);
    if (tstate_key_error) {
        *err = CTX_ESYSTEM;
        return NULL;
    }
    ts = ctx__calloc(sizeof *ts);
    ctx_context_t *base = ctx__context_alloc();
    if (!ts || !base) {
        ctx__free(ts, sizeof *ts);
        ctx_context_release(base);
        *err = CTX_ENOMEM;
        return NULL;
    }
    ctx__context_claim(base, 0); /* entered: its one reference is the thread's */
    ts->base = ts->current = base;
    ts->epoch = 1;
    if (pthread_setspecific(tstate_key, ts) != 0) {
        ctx__context_unref(base, CTX__ENTERED + CTX__REF);
        ctx__free(ts, sizeof *ts);
        *err = CTX_ENOMEM;
        return NULL;
    }
    ctx__tls = ts;
    return ts;
}

#define ID_BLOCK 1024

static atomic_uint_fast64_t id_blocks = 1;
static _Thread_local uint64_t id_next, id_end;

uint64_t ctx__next_id(void) {
    if (id_next == id_end) {
        id_next = atomic_fetch_add_explicit(&id_blocks, ID_BLOCK, memory_order_relaxed);
        id_end = id_next + ID_BLOCK;
    }
    return id_next++;
}

int ctx_thread_release(void) {
    ctx__tstate_t *ts = ctx__tls;
    if (ts && ts->current != ts->base)
        return CTX_EBUSY;
    if (ts) {
        pthread_setspecific(tstate_key, NULL);
        tstate_free(ts);
    }
    ctx__recycle_flush(); /* last: the releases above may keep blocks */
    return 0;
}
