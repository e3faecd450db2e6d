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
 * 24 to 64 bytes it frees (up to 32 of each size) and hands them back to
 * its next allocation of that size (alloc.c explains).  `size` must be the
 * same at both ends. */
void *ctx__malloc_small(size_t size);
void ctx__free_small(void *ptr, size_t size);

/* Frees the blocks the calling thread keeps (ctx_thread_release; a thread's
 * exit does it by itself). */
void ctx__recycle_flush(void);

#endif
