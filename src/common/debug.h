/* SPDX-License-Identifier: MIT */
/*
 * common/debug.h — CTX_DEBUG: double release and use after release become
 * an immediate abort that names the object and the call.
 *
 * Without CTX_DEBUG (the default) everything here expands to nothing: no
 * member, no code.  With -DCTX_DEBUG=ON (CMake; on in the ASan
 * configuration of scripts/test.sh) every object that opts in carries a
 * 32-bit state word:
 *
 *     struct thing {
 *         ...
 *         CTX__DEBUG_MEMBER          <- uint32_t, last (see "Where" below)
 *     };
 *
 *     #define KIND_THING CTX__DEBUG_KIND(0x54484E47u, "thing", "already released")
 *
 *     thing_new:      CTX__DEBUG_BORN(t, KIND_THING);
 *     thing_use:      CTX__DEBUG_CHECK(t, KIND_THING, "ctx_thing_use");
 *     thing_release:  CTX__DEBUG_CHECK(t, KIND_THING, "ctx_thing_release");
 *                     ... last reference:  CTX__DEBUG_DIED(t, KIND_THING); free
 *
 * A live object's word is its kind's magic number, a dead one's the magic
 * inverted, anything else is garbage.  CTX__DEBUG_CHECK aborts with
 *
 *     ctxvar: ctx_thing_release: thing 0x5581... already released
 *     ctxvar: ctx_thing_use: thing 0x5581... is not valid (never made,
 *             corrupted, or released and its memory reused)
 *
 * Where: the check reads the word of an object that may have been freed.
 * That read is exempt from AddressSanitizer (the check is the report), and
 * ASan's quarantine keeps freed memory from reuse for a long while, so under
 * ASan a use after release is caught reliably.  Without ASan it is caught
 * until the allocator reuses the block; glibc's free lists write the first
 * 16 bytes of a freed block, which is why the word goes last in the struct.
 * Under valgrind the check's own read of a freed block is reported as an
 * invalid read (valgrind catches the bug first): build valgrind runs
 * without CTX_DEBUG.
 *
 * Kinds are macros (CTX__DEBUG_KIND), not variables, so that a build
 * without CTX_DEBUG has nothing unused.  Magic numbers are four ASCII
 * letters; pick a new one per kind.
 */
#ifndef CTX_COMMON_DEBUG_H
#define CTX_COMMON_DEBUG_H

#ifdef CTX_DEBUG

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ctx__debug_kind {
    uint32_t magic;   /* the word of a live object */
    const char *name; /* "context" */
    const char *dead; /* what a dead word means: "already released" */
} ctx__debug_kind_t;

#define CTX__DEBUG_KIND(magic, name, dead) ((ctx__debug_kind_t){(magic), (name), (dead)})
#define CTX__DEBUG_MEMBER uint32_t debug_word_;
#define CTX__DEBUG_BORN(obj, kind) ((obj)->debug_word_ = (kind).magic)
#define CTX__DEBUG_DIED(obj, kind) ((obj)->debug_word_ = ~(kind).magic)
#define CTX__DEBUG_CHECK(obj, kind, call) ctx__debug_check(&(obj)->debug_word_, (kind), (obj), (call))
/* 1 if the object is live (its word is the kind's magic), else 0. */
#define CTX__DEBUG_IS_LIVE(obj, kind) (ctx__debug_load(&(obj)->debug_word_) == (kind).magic)

__attribute__((noreturn, cold, unused)) static void
ctx__debug_abort(const char *call, const char *kind, const void *obj, const char *what) {
    fprintf(stderr, "ctxvar: %s: %s %p %s\n", call, kind, obj, what);
    fflush(stderr);
    abort();
}

/* The word, read even from freed memory without a sanitizer report. */
__attribute__((no_sanitize_address, noinline, unused)) static uint32_t
ctx__debug_load(const uint32_t *word) {
    return *(const volatile uint32_t *)word;
}

/* The same for a 64-bit word (ctx_free's size header, alloc.c). */
__attribute__((no_sanitize_address, noinline, unused)) static uint64_t
ctx__debug_load64(const uint64_t *word) {
    return *(const volatile uint64_t *)word;
}

static inline void ctx__debug_check(const uint32_t *word, ctx__debug_kind_t kind,
                                    const void *obj, const char *call) {
    uint32_t w = ctx__debug_load(word);
    if (w == kind.magic)
        return;
    ctx__debug_abort(call, kind.name, obj,
                     w == ~kind.magic ? kind.dead
                                      : "is not valid (never made, corrupted, or released "
                                        "and its memory reused)");
}

#else /* !CTX_DEBUG */

#define CTX__DEBUG_KIND(magic, name, dead) 0
#define CTX__DEBUG_MEMBER
#define CTX__DEBUG_BORN(obj, kind) ((void)0)
#define CTX__DEBUG_DIED(obj, kind) ((void)0)
#define CTX__DEBUG_CHECK(obj, kind, call) ((void)0)
#define CTX__DEBUG_IS_LIVE(obj, kind) 0

#endif /* CTX_DEBUG */

#endif /* CTX_COMMON_DEBUG_H */
