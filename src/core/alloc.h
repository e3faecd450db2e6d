/* SPDX-License-Identifier: MIT */
/*
 * alloc.h — the one allocator every module allocates through (internal).
 *
 * ctx_set_allocator (ctxvar.h) installs the hooks; these are the calls.  Every
 * allocation in the library goes through ctx__malloc, so the tests' failing
 * allocator reaches all of them.  ctx__free takes the size that was asked for.
 */
#ifndef CTX_CORE_ALLOC_H
#define CTX_CORE_ALLOC_H

/* Private to the core library (libctxvar: src/core and src/pool).  Other
 * modules use the public API (ctxvar.h); see docs/api-rules.md. */
#ifndef CTX_BUILD_CORE
#error "src/core headers are private to libctxvar: include <ctxvar.h> instead"
#endif

#include <stddef.h>

void *ctx__malloc(size_t size);
/* Like ctx__malloc, zero-filled. */
void *ctx__calloc(size_t size);
void ctx__free(void *ptr, size_t size);

/* The core's small objects — value boxes, tokens, contexts, small map
 * nodes — go through these instead: the same as ctx__malloc / ctx__free,
 * except that with the default allocator each thread keeps the blocks of
 * 24 to 96 bytes it frees (up to 32 of each size) and hands them back to
 * its next allocation of that size (alloc.c explains).  `size` must be the
 * same at both ends.  The usual case — a block taken from or given to the
 * thread's list — is inline, with the size a constant at most calls; the
 * rest is in alloc.c. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CTX__ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CTX__ASAN 1
#endif
#if defined(CTX_DEBUG) || defined(CTX_NO_RECYCLE) || defined(CTX__ASAN)
#define CTX__RECYCLE 0 /* a reused block would hide a use after free */
#else
#define CTX__RECYCLE 1
#endif

#define CTX__RECYCLE_SIZES 10 /* 24, 32, ..., 96 bytes: map nodes of up to 10 slots */
#define CTX__RECYCLE_MAX 32

typedef struct ctx__recycle {
    void *head[CTX__RECYCLE_SIZES];
    unsigned count[CTX__RECYCLE_SIZES];
    int armed; /* the key's destructor will run at thread exit */
} ctx__recycle_t;

#ifdef CTX__SMALL_EXTERN
/* A copy of core code built elsewhere (the Python module's map: its
 * hamt_alloc.c) brings its own pair. */
void *ctx__malloc_small(size_t size);
void ctx__free_small(void *ptr, size_t size);
#else
extern _Thread_local ctx__recycle_t ctx__recycle;
/* 1 while the default allocator is installed (ctx_set_allocator). */
extern int ctx__recycle_on;

void ctx__free_small_slow(void *ptr, size_t size);

/* The list for blocks of `size`, or -1 if they are not kept. */
static inline int ctx__recycle_list(size_t size) {
    if (!CTX__RECYCLE || size < 24 || size > 96 || size % 8 != 0)
        return -1;
    return (int)(size / 8 - 3);
}

static inline void *ctx__malloc_small(size_t size) {
    int i = ctx__recycle_list(size);
    if (i >= 0 && ctx__recycle_on && ctx__recycle.head[i]) {
        void **block = ctx__recycle.head[i];
        ctx__recycle.head[i] = *block;
        ctx__recycle.count[i]--;
        return block;
    }
    return ctx__malloc(size);
}

static inline void ctx__free_small(void *ptr, size_t size) {
    int i = ctx__recycle_list(size);
    if (i >= 0 && ptr && ctx__recycle_on && ctx__recycle.armed &&
        ctx__recycle.count[i] < CTX__RECYCLE_MAX) {
        *(void **)ptr = ctx__recycle.head[i];
        ctx__recycle.head[i] = ptr;
        ctx__recycle.count[i]++;
        return;
    }
    ctx__free_small_slow(ptr, size);
}
#endif /* CTX__SMALL_EXTERN */

/* Frees the blocks the calling thread keeps (ctx_thread_release; a thread's
 * exit does it by itself). */
void ctx__recycle_flush(void);

#endif
