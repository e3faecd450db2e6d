/* SPDX-License-Identifier: MIT */
/*
 * baggage.c — W3C Baggage: parse (with percent-decoding and the limits),
 * and build (with percent-encoding).
 *
 * The header (W3C Baggage, §3.3) is a comma-separated list of members, each
 * a key, a value and optional properties:
 *
 *     userId=alice , serverNode=DF%2028;region=eu;internal , isProduction=false
 *     └key┘ └value┘  └─ key ──┘ └value─┘└─ properties ────┘
 *
 * The grammar is in include/ctxvar/wire.h.  Keys are RFC 9110 tokens and are
 * not decoded; values are runs of baggage-octets (printable ASCII except
 * SP, DQUOTE, ',', ';' and '\') in which "%XX" escapes stand for arbitrary
 * bytes (§3.3.1.3.1: "any code points outside of the baggage-octet range
 * MUST be percent-encoded", and "the percent code point (U+0025) MUST be
 * percent-encoded", so a '%' not followed by two hex digits is malformed).
 * Decoded bytes that are not UTF-8 are replaced by U+FFFD ("percent-encoded
 * octet sequences that do not match the UTF-8 encoding scheme MUST be
 * replaced with the replacement code point"); the replacement follows the
 * Unicode "maximal subpart" practice, one U+FFFD per broken sequence.
 * Since every decoded byte comes from one raw octet or a three-byte escape,
 * and every U+FFFD (3 bytes) replaces at least one escape, a decoded value
 * is never longer than its encoded form: one CTX_WIRE_BAGGAGE_MAX_BYTES scratch
 * buffer on the stack always suffices.
 *
 * How a list is read (ctx__baggage_scan).  A comma never occurs inside a
 * valid member, so every member is judged alone: read_member reads one in
 * a single pass (OWS, key, "=", value, OWS) that ends at the comma, and
 * only a malformed member, or properties, look for the next comma with
 * memchr.  A malformed member is dropped by itself and the rest are kept.
 *
 * The limits of §3.3.3 — a platform must propagate 64 members and 8192
 * bytes and may drop members past them — are about what is propagated, so
 * they are applied to the list as this library would send it on: each
 * member re-encoded (key=value with the value percent-encoded again, as
 * ctx_wire_baggage_append writes it, and its properties), joined by ',',
 * without whitespace.  A member that would take that list past 64 members
 * or 8192 bytes is dropped and the scan goes on (a later, shorter member
 * may still fit: inject fills its header the same way).  Whitespace and
 * malformed members in the input therefore cost nothing: `a=1`, 8190
 * spaces, `,b=2` keeps both.  What bounds the work on hostile input is a
 * separate, larger bound on the input itself, CTX_WIRE_BAGGAGE_MAX_INPUT
 * (64 KiB of the combined header): bytes past it are never looked at.
 * Several baggage headers form one list (RFC 9110 §5.3, joined with ','):
 * the scan state carries the input offset, the member count and the
 * re-encoded length from one header value to the next.
 *
 * Speed.  Character classes come from one 256-entry table ('%' has a
 * class bit of its own).  Keys and values are read four bytes per step
 * (skip_class: four lookups, one test, one branch), and the run's end is
 * then found among those four; the classes met are or-ed together, which
 * says whether the value holds an escape.  A value without '%' is plain
 * ASCII (every baggage-octet is), so it needs neither decoding nor UTF-8
 * checks: it is copied (up to 16 bytes inline, in two overlapping words)
 * and its re-encoded length is its length.  Only values with escapes take
 * the decoding path, where a byte below 0x80 is stored at once and only
 * the others go through the UTF-8 checks.  (Classifying 16 bytes at a time
 * with SSE2 was tried and was slower here: the end of each run then comes
 * out of a chain of vector operations that the next run's loads wait for,
 * where the byte loops' exits are predicted and their loads run ahead.)
 */
#include <string.h>

#include "common/common.h"
#include "wire/wire_internal.h"

/* Character classes: one table lookup each.
 *   baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
 *   tchar         = RFC 9110 §5.6.2
 *   OWS           = SP / HTAB */
enum { C_OCTET = 1, C_TCHAR = 2, C_OWS = 4, C_PERCENT = 8 };

#define O C_OCTET
#define OT (C_OCTET | C_TCHAR)
static const unsigned char cls[256] = {
    ['\t'] = C_OWS, [' '] = C_OWS,
    ['!'] = OT, ['#'] = OT, ['$'] = OT, ['%'] = OT | C_PERCENT, ['&'] = OT, ['\''] = OT,
    ['('] = O, [')'] = O, ['*'] = OT, ['+'] = OT, ['-'] = OT, ['.'] = OT, ['/'] = O,
    ['0'] = OT, ['1'] = OT, ['2'] = OT, ['3'] = OT, ['4'] = OT,
    ['5'] = OT, ['6'] = OT, ['7'] = OT, ['8'] = OT, ['9'] = OT,
    [':'] = O, ['<'] = O, ['='] = O, ['>'] = O, ['?'] = O, ['@'] = O,
    ['A'] = OT, ['B'] = OT, ['C'] = OT, ['D'] = OT, ['E'] = OT, ['F'] = OT, ['G'] = OT,
    ['H'] = OT, ['I'] = OT, ['J'] = OT, ['K'] = OT, ['L'] = OT, ['M'] = OT, ['N'] = OT,
    ['O'] = OT, ['P'] = OT, ['Q'] = OT, ['R'] = OT, ['S'] = OT, ['T'] = OT, ['U'] = OT,
    ['V'] = OT, ['W'] = OT, ['X'] = OT, ['Y'] = OT, ['Z'] = OT,
    ['['] = O, [']'] = O, ['^'] = OT, ['_'] = OT, ['`'] = OT,
    ['a'] = OT, ['b'] = OT, ['c'] = OT, ['d'] = OT, ['e'] = OT, ['f'] = OT, ['g'] = OT,
    ['h'] = OT, ['i'] = OT, ['j'] = OT, ['k'] = OT, ['l'] = OT, ['m'] = OT, ['n'] = OT,
    ['o'] = OT, ['p'] = OT, ['q'] = OT, ['r'] = OT, ['s'] = OT, ['t'] = OT, ['u'] = OT,
    ['v'] = OT, ['w'] = OT, ['x'] = OT, ['y'] = OT, ['z'] = OT,
    ['{'] = O, ['|'] = OT, ['}'] = O, ['~'] = OT,
};
#undef O
#undef OT

static inline int is_octet(unsigned char c) { return cls[c] & C_OCTET; }
static inline int is_tchar(unsigned char c) { return cls[c] & C_TCHAR; }
static inline int is_ows(unsigned char c) { return cls[c] & C_OWS; }

int ctx_wire_baggage_key_valid(const char *key, size_t len) {
    if (!key || len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)key[i]))
            return 0;
    return 1;
}

/* Every byte an octet and every '%' the start of a two-hex-digit escape. */
static int octets_valid(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!is_octet(c))
            return 0;
        if (c == '%') {
            if (i + 2 >= n)
                return 0;
            if (ctx__hex_value((unsigned char)p[i + 1]) < 0 ||
                ctx__hex_value((unsigned char)p[i + 2]) < 0)
                return 0;
            i += 2;
        }
    }
    return 1;
}

static inline size_t skip_ows(const char *p, size_t i, size_t n) {
    while (i < n && is_ows((unsigned char)p[i]))
        i++;
    return i;
}

/* The end of the run of bytes of class `mask` that starts at p[i] (n at
 * most), and in *seen every class met in it.  Four bytes per step while
 * four remain (one bound check and one branch for the four), then byte by
 * byte to the exact end. */
static inline size_t skip_class(const char *p, size_t i, size_t n, unsigned mask, unsigned *seen) {
    const unsigned char *u = (const unsigned char *)p;
    unsigned any = 0;
    while (i + 4 <= n) {
        unsigned a = cls[u[i]], b = cls[u[i + 1]], c = cls[u[i + 2]], d = cls[u[i + 3]];
        if (!(a & b & c & d & mask)) { /* the run ends in these four */
            if (a & mask) {
                any |= a, i++;
                if (b & mask) {
                    any |= b, i++;
                    if (c & mask)
                        any |= c, i++;
                }
            }
            *seen = any;
            return i;
        }
        any |= a | b | c | d;
        i += 4;
    }
    while (i < n && (cls[u[i]] & mask))
        any |= cls[u[i++]];
    *seen = any;
    return i;
}

static inline size_t skip_token(const char *p, size_t i, size_t n) {
    unsigned seen;
    return skip_class(p, i, n, C_TCHAR, &seen);
}

static inline size_t skip_octets(const char *p, size_t i, size_t n) {
    unsigned seen;
    return skip_class(p, i, n, C_OCTET, &seen);
}

/* A copy of more than 16 bytes.  Out of line on purpose: inlined, gcc
 * knows the bound of `n` and expands the copy into `rep movsq`; here it is
 * a call to the C library's memcpy. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noipa))
#elif defined(__GNUC__)
__attribute__((noinline))
#endif
static void copy_long(char *dst, const char *src, size_t n) {
    memcpy(dst, src, n);
}

/* A short copy (values are typically a few bytes): up to 16 bytes with
 * two overlapping loads and stores of 8 (or 4, or 2) bytes, all within the
 * n bytes; longer ones with the C library's memcpy.  Not memcpy with a
 * length gcc can bound: it expands that into `rep movsq`, whose start-up
 * cost is most of a short copy. */
static inline void copy_short(char *dst, const char *src, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8), memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8), memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, src, 4), memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4), memcpy(dst + n - 4, &b, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    } else {
        copy_long(dst, src, n);
    }
}

static inline void trim_ows(const char **p, size_t *n) {
    while (*n > 0 && is_ows((unsigned char)(*p)[0])) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((unsigned char)(*p)[*n - 1]))
        (*n)--;
}

/* property *( OWS ";" OWS property ), with OWS allowed at both ends:
 *   property = key OWS "=" OWS value / key OWS */
static int properties_valid(const char *p, size_t n) {
    size_t i = skip_ows(p, 0, n);
    for (;;) {
        size_t k = skip_token(p, i, n);
        if (k == i)
            return 0; /* a property starts with a key */
        i = skip_ows(p, k, n);
        if (i < n && p[i] == '=') {
            size_t v = skip_ows(p, i + 1, n);
            i = skip_octets(p, v, n);
            if (!octets_valid(p + v, i - v))
                return 0;
            i = skip_ows(p, i, n);
        }
        if (i == n)
            return 1;
        if (p[i] != ';')
            return 0;
        i = skip_ows(p, i + 1, n);
    }
}

/* ---- decoding ---- */

typedef struct reader {
    const char *p;
    size_t n, i;
} reader_t;

/* The next decoded byte, or -1 at the end.  The text was validated. */
static int read_byte(reader_t *r) {
    if (r->i >= r->n)
        return -1;
    unsigned char c = (unsigned char)r->p[r->i];
    if (c != '%') {
        r->i++;
        return c;
    }
    int v = ctx__hex_value((unsigned char)r->p[r->i + 1]) << 4 |
            ctx__hex_value((unsigned char)r->p[r->i + 2]);
    r->i += 3;
    return v;
}

/* Decodes validated value text into out, replacing ill-formed UTF-8 with
 * U+FFFD.  Returns the decoded length, or (size_t)-1 if it would exceed
 * cap (never when cap >= n: see the essay). */
static size_t decode_value(const char *p, size_t n, char *out, size_t cap) {
    static const unsigned char fffd[3] = {0xef, 0xbf, 0xbd};
    reader_t r = {p, n, 0};
    size_t w = 0;
    int c;
    while ((c = read_byte(&r)) >= 0) {
        if (c < 0x80) { /* ASCII, the usual case: stored as is */
            if (w == cap)
                return (size_t)-1;
            out[w++] = (char)c;
            continue;
        }
        unsigned char seq[4];
        size_t need, got = 1;
        int lo = 0x80, hi = 0xbf;
        seq[0] = (unsigned char)c;
        if (c >= 0xc2 && c <= 0xdf)
            need = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            need = 3;
            if (c == 0xe0)
                lo = 0xa0; /* no overlong forms */
            else if (c == 0xed)
                hi = 0x9f; /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 4;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f; /* nothing past U+10FFFF */
        } else
            need = 0; /* 80..C1, F5..FF never start a sequence */
        while (got < need) {
            size_t at = r.i;
            int b = read_byte(&r);
            if (b < lo || b > hi) { /* also b == -1 */
                r.i = at;           /* not part of this sequence: read again */
                break;
            }
            seq[got++] = (unsigned char)b;
            lo = 0x80;
            hi = 0xbf;
        }
        const unsigned char *src = seq;
        size_t len = got;
        if (need == 0 || got < need) {
            src = fffd;
            len = 3;
        }
        if (w + len > cap)
            return (size_t)-1; /* does not fit: the caller's bound */
        memcpy(out + w, src, len);
        w += len;
    }
    return w;
}

int ctx_wire_baggage_percent_decode(const char *in, size_t len, char *buf, size_t cap,
                               size_t *out_len) {
    if ((!in && len) || !buf || !out_len)
        return CTX_EINVAL;
    if (len > 0 && !octets_valid(in, len))
        return CTX_EPARSE;
    if (cap < len + 1)
        return CTX_ETRUNCATED;
    size_t n = len ? decode_value(in, len, buf, cap - 1) : 0;
    buf[n] = '\0';
    *out_len = n;
    return 0;
}

/* ---- parsing ---- */

static size_t encoded_length(const char *in, size_t len);

/* The outcome of reading one member. */
enum { MEMBER_OK = 0, MEMBER_MALFORMED = -1, MEMBER_TOO_LONG = 1, MEMBER_EMPTY = 2 };

/* The member's value into scratch (CTX_WIRE_BAGGAGE_MAX_BYTES + 1 bytes,
 * NUL terminated) and *sent, its key=value length re-encoded: MEMBER_OK,
 * MEMBER_MALFORMED (a bad escape) or MEMBER_TOO_LONG (it could never fit
 * in a list of CTX_WIRE_BAGGAGE_MAX_BYTES). */
static int take_value(const char *v, size_t value_len, int escaped, size_t key_len, char *scratch,
                      size_t *out_len, size_t *sent) {
    if (escaped && !octets_valid(v, value_len))
        return MEMBER_MALFORMED;
    if (!escaped) { /* plain ASCII: nothing to decode, re-encoded as is */
        if (value_len > CTX_WIRE_BAGGAGE_MAX_BYTES)
            return MEMBER_TOO_LONG;
        copy_short(scratch, v, value_len);
        *sent = key_len + 1 + value_len;
    } else {
        value_len = decode_value(v, value_len, scratch, CTX_WIRE_BAGGAGE_MAX_BYTES);
        if (value_len == (size_t)-1)
            return MEMBER_TOO_LONG; /* re-encoded it is at least as long */
        *sent = key_len + 1 + encoded_length(scratch, value_len);
    }
    scratch[value_len] = '\0';
    *out_len = value_len;
    return MEMBER_OK;
}

/* Reads the member that starts at t[i] (only t[0..n) is looked at) in one
 * pass: OWS, key, OWS "=" OWS, value, OWS, then either the end of the
 * member (',' or n) or ";" and properties up to the next ','.  *end gets
 * the position of the ',' that ends the member, or n.  Returns MEMBER_OK
 * with *m and *sent filled, or MEMBER_EMPTY, MEMBER_MALFORMED,
 * MEMBER_TOO_LONG. */
static int read_member(const char *t, size_t i, size_t n, char *scratch,
                       ctx_wire_baggage_member_t *m, size_t *sent, size_t *end) {
    i = skip_ows(t, i, n);
    if (i == n || t[i] == ',') {
        *end = i;
        return MEMBER_EMPTY;
    }
    size_t k0 = i;
    i = skip_token(t, i, n);
    size_t key_len = i - k0;
    i = skip_ows(t, i, n);
    if (key_len == 0 || i == n || t[i] != '=')
        goto malformed;
    size_t v0 = skip_ows(t, i + 1, n);
    unsigned seen;
    size_t v1 = skip_class(t, v0, n, C_OCTET, &seen);
    int escaped = (seen & C_PERCENT) != 0;
    i = skip_ows(t, v1, n);
    const char *props = NULL;
    size_t props_len = 0;
    if (i < n && t[i] == ';') {
        const char *comma = memchr(t + i, ',', n - i);
        size_t pe = comma ? (size_t)(comma - t) : n;
        props = t + i + 1;
        props_len = pe - i - 1;
        trim_ows(&props, &props_len);
        if (props_len == 0 || !properties_valid(props, props_len)) {
            *end = pe;
            return MEMBER_MALFORMED;
        }
        i = pe;
    }
    if (i < n && t[i] != ',')
        goto malformed;
    *end = i;
    if (key_len + 1 + (props_len ? 1 + props_len : 0) > CTX_WIRE_BAGGAGE_MAX_BYTES)
        return MEMBER_TOO_LONG;
    int rc = take_value(t + v0, v1 - v0, escaped, key_len, scratch, &m->value_len, sent);
    if (rc != MEMBER_OK)
        return rc;
    if (props_len)
        *sent += 1 + props_len;
    m->key = t + k0;
    m->key_len = key_len;
    m->value = scratch;
    m->properties = props;
    m->properties_len = props_len;
    return MEMBER_OK;
malformed: { /* the member ends at the next ',' */
    const char *comma = i < n ? memchr(t + i, ',', n - i) : NULL;
    *end = comma ? (size_t)(comma - t) : n;
    return MEMBER_MALFORMED;
}
}

/* Counts a member read, and hands it to fn if it fits the list as it
 * would be re-sent.  0, or fn's code. */
static int keep_member(ctx__baggage_scan_t *scan, int outcome, const ctx_wire_baggage_member_t *m,
                       size_t sent, ctx_wire_baggage_fn fn, void *user) {
    if (outcome == MEMBER_MALFORMED || outcome == MEMBER_EMPTY) {
        scan->stats.malformed++;
        return 0;
    }
    size_t need = (scan->kept ? 1 : 0) + sent; /* the joining ',' */
    if (outcome == MEMBER_TOO_LONG || scan->kept >= CTX_WIRE_BAGGAGE_MAX_MEMBERS ||
        scan->sent + need > CTX_WIRE_BAGGAGE_MAX_BYTES) {
        scan->stats.over_limit++;
        return 0;
    }
    scan->kept++;
    scan->sent += need;
    scan->stats.members++;
    if (!fn)
        return 0;
    int rc = fn(m, user);
    return rc <= 0 ? rc : CTX_ECALLBACK; /* 0 goes on; a negative code stops as is */
}

int ctx__baggage_scan(ctx__baggage_scan_t *scan, const char *text, size_t len,
                      ctx_wire_baggage_fn fn, void *user) {
    char scratch[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    if (scan->stopped)
        return 0;
    if (scan->values++ > 0)
        scan->offset++; /* the ',' that joins this value to the previous ones */
    size_t room = scan->offset < CTX_WIRE_BAGGAGE_MAX_INPUT ? CTX_WIRE_BAGGAGE_MAX_INPUT - scan->offset : 0;
    size_t n = len < room ? len : room; /* bytes examined */
    scan->offset += len;
    size_t pos = 0;
    for (;;) {
        ctx_wire_baggage_member_t member;
        size_t sent = 0, end = n;
        int outcome = read_member(text, pos, n, scratch, &member, &sent, &end);
        if (end == n && n < len && text[n] != ',') { /* the member runs past the bound */
            scan->stats.over_limit += outcome != MEMBER_EMPTY;
            break;
        }
        int rc = keep_member(scan, outcome, &member, sent, fn, user);
        if (rc != 0)
            return rc;
        if (end >= n)
            break;
        pos = end + 1;
    }
    if (n < len) {
        scan->stats.truncated = 1;
        scan->stopped = 1;
    }
    return 0;
}

int ctx_wire_baggage_parse(const char *text, size_t len, ctx_wire_baggage_fn fn, void *user,
                           ctx_wire_baggage_stats_t *stats) {
    if ((!text && len) || (stats && stats->size < sizeof(size_t)))
        return CTX_EINVAL;
    ctx__baggage_scan_t scan;
    memset(&scan, 0, sizeof scan);
    int rc = 0;
    if (len > 0)
        rc = ctx__baggage_scan(&scan, text, len, fn, user);
    if (stats) {
        scan.stats.size = sizeof scan.stats;
        ctx__struct_out(stats, &scan.stats, sizeof scan.stats);
    }
    return rc != 0 ? rc : (int)scan.stats.members;
}

/* ---- building ---- */

static const char HEX[] = "0123456789ABCDEF";

static size_t encoded_length(const char *in, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        n += (is_octet(c) && c != '%') ? 1 : 3;
    }
    return n;
}

static char *encode_into(char *p, const char *in, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_octet(c) && c != '%') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = HEX[c >> 4];
            *p++ = HEX[c & 15];
        }
    }
    return p;
}

int ctx_wire_baggage_percent_encode(const char *in, size_t len, char *buf, size_t cap,
                               size_t *out_len) {
    if ((!in && len) || !buf || !out_len)
        return CTX_EINVAL;
    size_t n = encoded_length(in, len);
    if (n + 1 > cap)
        return CTX_ETRUNCATED;
    *encode_into(buf, in, len) = '\0';
    *out_len = n;
    return 0;
}

void ctx_wire_baggage_writer_init(ctx_wire_baggage_writer_t *w, char *buf, size_t cap) {
    if (!w)
        return;
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
    w->members = 0;
    memset(w->reserved, 0, sizeof w->reserved);
    if (w->cap > 0)
        buf[0] = '\0';
}

int ctx_wire_baggage_append(ctx_wire_baggage_writer_t *w, const char *key, size_t key_len,
                       const char *value, size_t value_len, const char *properties,
                       size_t properties_len) {
    if (!w || !ctx_wire_baggage_key_valid(key, key_len) || (!value && value_len) ||
        (!properties && properties_len))
        return CTX_EINVAL;
    if (properties_len > 0 && !properties_valid(properties, properties_len))
        return CTX_EINVAL;
    size_t enc = encoded_length(value, value_len);
    size_t need = (w->members ? 1 : 0) + key_len + 1 + enc + (properties_len ? 1 + properties_len : 0);
    if (w->members + 1 > CTX_WIRE_BAGGAGE_MAX_MEMBERS || w->len + need > CTX_WIRE_BAGGAGE_MAX_BYTES)
        return CTX_ELIMIT;
    if (w->len + need + 1 > w->cap)
        return CTX_ETRUNCATED;
    char *p = w->buf + w->len;
    if (w->members)
        *p++ = ',';
    memcpy(p, key, key_len);
    p += key_len;
    *p++ = '=';
    p = encode_into(p, value, value_len);
    if (properties_len) {
        *p++ = ';';
        memcpy(p, properties, properties_len);
        p += properties_len;
    }
    *p = '\0';
    w->len += need;
    w->members++;
    return 0;
}
