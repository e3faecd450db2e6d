/* SPDX-License-Identifier: MIT */
/*
 * wire_internal.h — what the wire module's files share (internal).
 *
 * Allocation: the static library allocates through the core's allocator
 * (ctx__malloc, so ctx_set_allocator and the tests' failing allocator reach
 * it); the shared library cannot (libctxvar.so keeps ctx__malloc hidden) and
 * uses malloc/free, as the loop module does.
 *
 * Character classes: the grammars of Trace Context, Baggage and RFC 9110 as
 * small inline predicates, so each parser reads like its ABNF.
 */
#ifndef CTX_WIRE_INTERNAL_H
#define CTX_WIRE_INTERNAL_H

#include <ctxvar.h>
#include <ctxvar/wire.h>

#include "common/common.h"
#include <stddef.h>
#include <stdint.h>

/* Allocation goes through the core's exported allocator (ctx_malloc), so
 * ctx_set_allocator and the tests' failing allocator reach the shared
 * library as well as the static one. */
static inline void *ctx__wire_malloc(size_t size) { return ctx_malloc(size); }
static inline void ctx__wire_free(void *p, size_t size) { ctx_free(p, size); }

/* ---- character classes ---- */

static inline int ctx__is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int ctx__is_lcalpha(unsigned char c) { return c >= 'a' && c <= 'z'; }
static inline int ctx__is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
/* HTTP's OWS: SP / HTAB. */
static inline int ctx__is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* RFC 9110 §5.6.2 tchar. */
static inline int ctx__is_tchar(unsigned char c) {
    if (ctx__is_alpha(c) || ctx__is_digit(c))
        return 1;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '.': case '^': case '_': case '`': case '|':
    case '~':
        return 1;
    default:
        return 0;
    }
}

/* Lowercase hex digit value, or -1 (HEXDIGLC of Trace Context). */
static inline int ctx__hexlc_value(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Hex digit value of either case, or -1 (percent-escapes, RFC 3986 §2.1). */
static inline int ctx__hex_value(unsigned char c) {
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return ctx__hexlc_value(c);
}

static inline unsigned char ctx__lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Trims OWS from both ends of [*p, *p + *n). */
static inline void ctx__trim_ows(const char **p, size_t *n) {
    while (*n > 0 && ctx__is_ows((unsigned char)(*p)[0])) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ctx__is_ows((unsigned char)(*p)[*n - 1]))
        (*n)--;
}

/* ---- shared between files ---- */

/* Reads a caller's carrier (the growth rule): 0 and *local, or CTX_EINVAL
 * (NULL, a size below this layout, an unknown non-zero tail). */
static inline int ctx__wire_carrier_in(const ctx_wire_carrier_t *carrier,
                                       ctx_wire_carrier_t *local) {
    if (!carrier)
        return CTX_EINVAL;
    if (carrier->size == sizeof *local) { /* the common case: no copy of a tail */
        *local = *carrier;
        return 0;
    }
    return ctx__struct_in(local, sizeof *local, carrier, sizeof(ctx_wire_carrier_t));
}

/* Fills `out` with `n` random bytes from the calling thread's generator
 * (seeded once per thread, and again after fork, from the OS). */
void ctx__wire_random(uint8_t *out, size_t n);

/* Baggage parsing over several header values (ctx_wire_extract feeds each
 * baggage header in turn; ctx_wire_baggage_parse feeds one).  `offset` is the
 * byte position of the next value in the combined input (values are joined
 * by one ','), `kept` the members delivered so far and `sent` the length of
 * the list they make re-encoded. */
typedef struct ctx__baggage_scan {
    size_t offset;
    size_t values; /* header values scanned so far */
    size_t kept;
    size_t sent;
    int stopped; /* the input bound was reached: later values are skipped */
    ctx_wire_baggage_stats_t stats;
} ctx__baggage_scan_t;

/* Scans one header value; calls fn for each member kept.  Returns 0, or
 * fn's non-zero result. */
int ctx__baggage_scan(ctx__baggage_scan_t *scan, const char *text, size_t len,
                      ctx_wire_baggage_fn fn, void *user);

/* Tracestate normalisation of one more header value appended to an
 * existing normal-form list in buf[0..*len) (repeated keys are kept: call
 * ctx__trace_state_dedupe at the end).  *members counts members.
 * Returns 0, CTX_EPARSE, CTX_ELIMIT, CTX_ETRUNCATED. */
int ctx__trace_state_append(const char *text, size_t len, char *buf, size_t cap,
                            size_t *out_len, size_t *members);
/* Removes, in place, every member of a valid normal-form list whose key an
 * earlier member has (list[*len] becomes the NUL); returns how many. */
int ctx__trace_state_dedupe(char *list, size_t *len);

#endif /* CTX_WIRE_INTERNAL_H */
