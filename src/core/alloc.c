/* SPDX-License-Identifier: MIT */
/*
 * alloc.c — the pluggable allocator, the recycling of the core's small
 * blocks, the version calls and the error table.
 *
 * The allocator is a single global (a pair of hooks and their user pointer)
 * that tests reset through ctx_set_allocator(NULL).  It is read on every
 * allocation without a lock: switching it is documented as not thread-safe.
 *
 * Recycling
 * ---------
 * A set allocates a value box (and a token, if asked for one), a new
 * context a context and its first map node, a string value or a trace its
 * ctx_malloc block, and their releases free them:
 * malloc and free were a third of the instructions of a set+reset and half
 * of a context built and dropped.  So, as CPython keeps free lists of
 * contexts and tuples, each thread keeps the small blocks it frees and
 * reuses them:
 *
 *     ctx__recycle.head[0]  24-byte blocks ─▶ block ─▶ block ─▶ NULL
 *     ctx__recycle.head[1]  32-byte blocks ─▶ ...
 *     ...              (up to 96 bytes; CTX__RECYCLE_MAX of each size)
 *
 * A kept block's first word links it to the next.  Sizes are exact (a
 * block is only reused for the size it was asked for), so a block can never
 * be too small.  A block may be freed on another thread than the one that
 * allocated it; it then joins that thread's list.  The lists are
 * _Thread_local, like the release queue (boxes die on threads that never
 * made a thread state); the first block a thread keeps arms a pthread key
 * whose destructor frees them at thread exit, and a block kept after that
 * (by a later destructor: the thread state's) arms it again;
 * ctx_thread_release frees them too.
 *
 * Only with the default allocator: an installed allocator sees every
 * allocation and every free (the tests' failing allocator relies on it),
 * and the blocks kept meanwhile wait.  They all came from malloc (a block
 * an earlier allocator made is only kept after a switch back to malloc,
 * which the header requires to be able to free it), so they are freed with
 * free().  Not in builds that hunt memory errors (CTX_DEBUG,
 * AddressSanitizer, CTX_NO_RECYCLE for valgrind): a reused block hides a
 * use after free from them.
 */
#include "common/common.h"
#include "common/debug.h"
#include "core/alloc.h"

#include <pthread.h>
#include <ctxvar.h>
#include <stdlib.h>
#include <string.h>

static void *default_malloc(size_t size, void *user) {
    (void)user;
    return malloc(size);
}

static void default_free(void *ptr, size_t size, void *user) {
    (void)size;
    (void)user;
    free(ptr);
}

static ctx_allocator_t allocator = {sizeof(ctx_allocator_t), default_malloc, default_free, NULL};

int ctx_set_allocator(const ctx_allocator_t *a) {
    if (a == NULL) {
        allocator = (ctx_allocator_t){sizeof(ctx_allocator_t), default_malloc, default_free, NULL};
        ctx__recycle_on = 1;
        return 0;
    }
    ctx_allocator_t copy;
    if (ctx__struct_in(&copy, sizeof copy, a, sizeof(ctx_allocator_t)) || copy.malloc == NULL ||
        copy.free == NULL)
        return CTX_EINVAL;
    allocator = copy;
    ctx__recycle_on = 0;
    return 0;
}

void *ctx__malloc(size_t size) { return allocator.malloc(size, allocator.user); }

void *ctx__calloc(size_t size) {
    void *p = ctx__malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void ctx__free(void *ptr, size_t size) {
    if (ptr)
        allocator.free(ptr, size, allocator.user);
}

/* ---- recycling ---- */

_Thread_local ctx__recycle_t ctx__recycle;
int ctx__recycle_on = 1;

static pthread_key_t recycle_key;
static pthread_once_t recycle_once = PTHREAD_ONCE_INIT;
static int recycle_key_error;

static void recycle_destructor(void *unused) {
    (void)unused;
    ctx__recycle_flush();
}

static void recycle_key_init(void) {
    recycle_key_error = pthread_key_create(&recycle_key, recycle_destructor);
}

/* Arranges for the thread's kept blocks to be freed at its exit: 1, or 0
 * if that cannot be done. */
static int recycle_arm(void) {
    pthread_once(&recycle_once, recycle_key_init);
    if (recycle_key_error || pthread_setspecific(recycle_key, &ctx__recycle) != 0)
        return 0;
    ctx__recycle.armed = 1;
    return 1;
}

/* The inline give could not keep the block: it is not kept at all, the
 * list is full, or it is the first block the thread keeps since its last
 * flush (the key is armed first, or the block freed if it cannot be). */
void ctx__free_small_slow(void *ptr, size_t size) {
    int i = ptr && ctx__recycle_on ? ctx__recycle_list(size) : -1;
    if (i < 0 || ctx__recycle.count[i] == CTX__RECYCLE_MAX || (!ctx__recycle.armed && !recycle_arm())) {
        ctx__free(ptr, size);
        return;
    }
    *(void **)ptr = ctx__recycle.head[i];
    ctx__recycle.head[i] = ptr;
    ctx__recycle.count[i]++;
}

void ctx__recycle_flush(void) {
    for (int i = 0; i < CTX__RECYCLE_SIZES; i++) {
        while (ctx__recycle.head[i]) {
            void **block = ctx__recycle.head[i];
            ctx__recycle.head[i] = *block;
            free(block); /* from malloc: see "Recycling" above */
        }
        ctx__recycle.count[i] = 0;
    }
    ctx__recycle.armed = 0; /* a block kept after this arms the key again */
}

/* The exported pair recycles too: a module's or a user's small value (a
 * string, a trace) is as common as a box.  Sizes are exact, so a block
 * freed with a wrong size could come back too small: the header asks for
 * the size that was allocated, the tests' allocator aborts on a size larger
 * than the block, and CTX_DEBUG puts the size in front of every block and
 * checks it (16 bytes, so the block stays aligned as malloc's). */
#ifdef CTX_DEBUG
#define SIZE_MAGIC 0x63747873697a6521ull

void *ctx_malloc(size_t size) {
    if (size > SIZE_MAX - 16)
        return NULL;
    uint64_t *head = ctx__malloc(size + 16);
    if (!head)
        return NULL;
    head[0] = size;
    head[1] = SIZE_MAGIC;
    return head + 2;
}

void ctx_free(void *ptr, size_t size) {
    if (!ptr)
        return;
    uint64_t *head = (uint64_t *)ptr - 2;
    if (ctx__debug_load64(&head[1]) != SIZE_MAGIC)
        ctx__debug_abort("ctx_free", "block", ptr, "is not from ctx_malloc, or was freed already");
    if (head[0] != size)
        ctx__debug_abort("ctx_free", "block", ptr, "freed with a size other than its ctx_malloc size");
    head[1] = ~SIZE_MAGIC;
    ctx__free(head, size + 16);
}
#else
void *ctx_malloc(size_t size) { return ctx__malloc_small(size); }
void ctx_free(void *ptr, size_t size) { ctx__free_small(ptr, size); }
#endif

unsigned ctx_version(void) { return CTX_VERSION_HEX; }
const char *ctx_version_string(void) { return CTX_VERSION_STRING; }

const char *ctx_strerror(int err) {
    switch (err) {
    case CTX_OK:
        return "success";
#define CTX__MSG(name, value, message)                                        \
    case CTX_##name:                                                           \
        return message;
        CTX_ERRNO_MAP(CTX__MSG)
#undef CTX__MSG
    default:
        return "unknown error";
    }
}

const char *ctx_error_name(int err) {
    switch (err) {
    case CTX_OK:
        return "OK";
#define CTX__NAME(name, value, message)                                       \
    case CTX_##name:                                                           \
        return #name;
        CTX_ERRNO_MAP(CTX__NAME)
#undef CTX__NAME
    default:
        return "UNKNOWN";
    }
}
