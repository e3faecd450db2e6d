/*
 * alloc.c — the pluggable allocator, the version calls and the error table.
 *
 * The allocator is a single global (a pair of hooks and their user pointer)
 * that tests reset through ctx_set_allocator(NULL).  It is read on every
 * allocation without a lock: switching it is documented as not thread-safe.
 */
#include "common/common.h"
#include "core/alloc.h"

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
        return 0;
    }
    ctx_allocator_t copy;
    if (ctx__struct_in(&copy, sizeof copy, a, sizeof(ctx_allocator_t)) || copy.malloc == NULL ||
        copy.free == NULL)
        return CTX_EINVAL;
    allocator = copy;
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

void *ctx_malloc(size_t size) { return ctx__malloc(size); }
void ctx_free(void *ptr, size_t size) { ctx__free(ptr, size); }

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
