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

#endif
