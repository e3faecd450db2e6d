/*
 * alloc.h — the one allocator every module allocates through (internal).
 *
 * ctx_set_allocator (ctxvar.h) installs the hooks; these are the calls.  Every
 * allocation in the library goes through ctx__malloc, so the tests' failing
 * allocator reaches all of them.  ctx__free takes the size that was asked for.
 */
#ifndef CTX_CORE_ALLOC_H
#define CTX_CORE_ALLOC_H

#include <stddef.h>

void *ctx__malloc(size_t size);
/* Like ctx__malloc, zero-filled. */
void *ctx__calloc(size_t size);
void ctx__free(void *ptr, size_t size);

#endif
