/* SPDX-License-Identifier: MIT */
/*
 * stack.c — the submitting call stack kept in a future, for debugging a
 * failed or slow task (ctx_pool_options_t.capture_stack).
 *
 * A task that fails on a worker shows a worker's stack in a debugger: the
 * code that *asked* for the work is long gone.  When capture is on, submit
 * stores the return addresses of its caller's stack (at most CTX__STACK_MAX)
 * in the record's trailing array, the record being allocated that much
 * larger; nothing is resolved to names until someone asks
 * (ctx_pool_future_format_stack), because resolving is slow and usually not
 * needed.
 *
 *     record: [ ...fields... | stack_depth | stack[0] stack[1] ... ]
 *                                             innermost ──► outermost
 *
 * Where the C library offers no backtrace() (glibc and the BSDs do), capture
 * stores nothing and the futures report CTX_ENOTFOUND.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__) || defined(__APPLE__) || defined(__FreeBSD__)
#include <execinfo.h>
#define CTX__HAVE_BACKTRACE 1
#else
#define CTX__HAVE_BACKTRACE 0
#endif

size_t ctx__stack_capture(void **frames, size_t max, size_t skip) {
#if CTX__HAVE_BACKTRACE
    void *all[CTX__STACK_MAX + 8];
    size_t want = max + skip + 1; /* +1: this function's own frame */
    if (want > sizeof all / sizeof all[0])
        want = sizeof all / sizeof all[0];
    int n = backtrace(all, (int)want);
    size_t drop = skip + 1;
    if (n <= 0 || (size_t)n <= drop)
        return 0;
    size_t count = (size_t)n - drop;
    if (count > max)
        count = max;
    memcpy(frames, all + drop, count * sizeof *frames);
    return count;
#else
    (void)frames;
    (void)max;
    (void)skip;
    return 0;
#endif
}

int ctx_pool_future_stack(const ctx_pool_future_t *future, void *const **frames,
                     size_t *count) {
    if (!future || !frames || !count)
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_stack");
    if (future->stack_depth == 0)
        return CTX_ENOTFOUND;
    *frames = future->stack;
    *count = future->stack_depth;
    return 0;
}

/* Appends text to buf as snprintf would, keeping the full length in *len. */
static void append(char *buf, size_t cap, size_t *len, const char *text) {
    size_t n = strlen(text);
    if (cap > 0 && *len < cap - 1) {
        size_t room = cap - 1 - *len;
        memcpy(buf + *len, text, n < room ? n : room);
        buf[*len + (n < room ? n : room)] = '\0';
    }
    *len += n;
}

int ctx_pool_future_format_stack(const ctx_pool_future_t *future, char *buf, size_t cap,
                            size_t *len) {
    if (!future || (!buf && cap > 0))
        return CTX_EINVAL;
    CTX__DEBUG_CHECK(future, CTX__KIND_FUTURE, "ctx_pool_future_format_stack");
    if (future->stack_depth == 0)
        return CTX_ENOTFOUND;
    if (cap > 0)
        buf[0] = '\0';
    size_t total = 0;
#if CTX__HAVE_BACKTRACE
    /* Allocated by the C library with malloc, freed with free. */
    char **names = backtrace_symbols(future->stack, (int)future->stack_depth);
#else
    char **names = NULL;
#endif
    for (size_t i = 0; i < future->stack_depth; i++) {
        char line[64];
        snprintf(line, sizeof line, "#%zu ", i);
        append(buf, cap, &total, line);
        if (names && names[i]) {
            append(buf, cap, &total, names[i]);
        } else {
            snprintf(line, sizeof line, "[%p]", future->stack[i]);
            append(buf, cap, &total, line);
        }
        append(buf, cap, &total, "\n");
    }
    free(names);
    if (len)
        *len = total;
    return cap > 0 && total < cap ? 0 : CTX_ETRUNCATED;
}
