/* SPDX-License-Identifier: MIT */
/*
 * hamt_alloc.c — the allocator of the module's private copy of the core's
 * map (src/core/hamt.c, compiled into this module with hidden visibility
 * for the Hamt type: pyhamt.c).
 *
 * That copy calls ctx__malloc / ctx__calloc / ctx__free and, for its
 * nodes, ctx__malloc_small / ctx__free_small (core/alloc.h).
 * Inside libctxvar those are the core's own hidden functions; here they are
 * these, hidden in the module, so the copy never touches the shared core's
 * allocator.  They count blocks and fail on demand through the same
 * counters as the test allocator (module.c), so the binding's
 * failing-allocation tests reach the map too.  PyMem_Raw* needs no GIL.
 */
#include "ctxpy.h"

#include "core/alloc.h"

void *ctx__malloc(size_t size) {
    if (ctxpy_alloc_should_fail())
        return NULL;
    void *p = PyMem_RawMalloc(size ? size : 1);
    if (p)
        ctxpy_alloc_count(1);
    return p;
}

void *ctx__calloc(size_t size) {
    void *p = ctx__malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void ctx__free(void *ptr, size_t size) {
    (void)size;
    if (ptr) {
        ctxpy_alloc_count(-1);
        PyMem_RawFree(ptr);
    }
}

/* The core recycles small blocks per thread (src/core/alloc.c); this copy
 * does not: every node goes through the counters above. */
void *ctx__malloc_small(size_t size) { return ctx__malloc(size); }
void ctx__free_small(void *ptr, size_t size) { ctx__free(ptr, size); }
