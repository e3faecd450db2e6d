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
 * valid member, so the list is cut at commas (memchr) and every piece judged
 * alone: a malformed piece is dropped by itself and the rest are kept.
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
 * Speed.  Character classes come from one 256-entry table.  A value
 * without '%' is plain ASCII (every baggage-octet is), so it needs neither
 * decoding nor UTF-8 checks: it is copied and its re-encoded length is its
 * length.  Only values with escapes take the decoding path.
 */
#include <string.h>

#include "common/common.h"
#include "wire/wire_internal.h"

/* Character classes: one table lookup each.
 *   baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
 *   tchar         = RFC 9110 §5.6.2
 *   OWS           = SP / HTAB */
enum { C_OCTET = 1, C_TCHAR = 2, C_OWS = 4 };

#define O C_OCTET
#define OT (C_OCTET | C_TCHAR)
static const unsigned char cls[256] = {
    ['\t'] = C_OWS, [' '] = C_OWS,
    ['!'] = OT, ['#'] = OT, ['$'] = OT, ['%'] = OT, ['&'] = OT, ['\''] = OT,
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

static inline size_t skip_token(const char *p, size_t i, size_t n) {
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    return i;
}

static inline size_t skip_octets(const char *p, size_t i, size_t n) {
    while (i < n && is_octet((unsigned char)p[i]))
        i++;
    return i;
}

/* A short copy (values are typically a few bytes).  Out of line on
 * purpose: inlined, gcc knows the bound of `n` and expands the copy into
 * `rep movsq`, whose start-up cost is most of a short copy; here it is a
 * call to the C library's memcpy, which handles short sizes in a few
 * instructions. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noipa))
#elif defined(__GNUC__)
__attribute__((noinline))
#endif
static void copy_short(char *dst, const char *src, size_t n) {
    memcpy(dst, src, n);
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
        unsigned char seq[4];
        size_t need, got = 1;
        int lo = 0x80, hi = 0xbf;
        seq[0] = (unsigned char)c;
        if (c < 0x80)
            need = 1;
        else if (c >= 0xc2 && c <= 0xdf)
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

/* Parses one trimmed, non-empty member; 0 and *m (value decoded into
 * scratch, CTX_WIRE_BAGGAGE_MAX_BYTES + 1 bytes, and NUL terminated) and
 * *sent (its length re-encoded), or -1 if malformed, or 1 if well formed
 * but too long to ever fit in a list of CTX_WIRE_BAGGAGE_MAX_BYTES. */
static int parse_member(const char *p, size_t n, char *scratch, ctx_wire_baggage_member_t *m,
                        size_t *sent) {
    size_t k = skip_token(p, 0, n);
    if (k == 0)
        return -1;
    size_t i = k;
    if (i < n && p[i] != '=')
        i = skip_ows(p, i, n);
    if (i >= n || p[i] != '=')
        return -1;
    size_t v = i + 1;
    if (v < n && is_ows((unsigned char)p[v]))
        v = skip_ows(p, v, n);
    size_t ve = v;
    int escaped = 0;
    while (ve < n && is_octet((unsigned char)p[ve]))
        escaped |= p[ve++] == '%';
    i = ve < n ? skip_ows(p, ve, n) : ve;
    const char *props = NULL;
    size_t props_len = 0;
    if (i < n) {
        if (p[i] != ';')
            return -1;
        props = p + i + 1;
        props_len = n - i - 1;
        trim_ows(&props, &props_len);
        if (props_len == 0 || !properties_valid(props, props_len))
            return -1;
    }
    size_t value_len = ve - v;
    if (escaped && !octets_valid(p + v, value_len))
        return -1;
    if (k + 1 + (props_len ? 1 + props_len : 0) > CTX_WIRE_BAGGAGE_MAX_BYTES)
        return 1;
    if (!escaped) { /* plain ASCII: nothing to decode, re-encoded as is */
        if (value_len > CTX_WIRE_BAGGAGE_MAX_BYTES)
            return 1;
        copy_short(scratch, p + v, value_len);
        *sent = k + 1 + value_len;
    } else {
        value_len = decode_value(p + v, value_len, scratch, CTX_WIRE_BAGGAGE_MAX_BYTES);
        if (value_len == (size_t)-1)
            return 1; /* re-encoded it is at least as long */
        *sent = k + 1 + encoded_length(scratch, value_len);
    }
    scratch[value_len] = '\0';
    if (props_len)
        *sent += 1 + props_len;
    m->key = p;
    m->key_len = k;
    m->value = scratch;
    m->value_len = value_len;
    m->properties = props;
    m->properties_len = props_len;
    return 0;
}

/* Judges one piece of the list (between commas, untrimmed). */
static int scan_piece(ctx__baggage_scan_t *scan, const char *m, size_t mlen, char *scratch,
                      ctx_wire_baggage_fn fn, void *user) {
    trim_ows(&m, &mlen);
    ctx_wire_baggage_member_t member;
    size_t sent = 0;
    int parsed = mlen ? parse_member(m, mlen, scratch, &member, &sent) : -1;
    if (parsed < 0) {
        scan->stats.malformed++;
        return 0;
    }
    size_t need = (scan->kept ? 1 : 0) + sent; /* the joining ',' */
    if (parsed > 0 || scan->kept >= CTX_WIRE_BAGGAGE_MAX_MEMBERS ||
        scan->sent + need > CTX_WIRE_BAGGAGE_MAX_BYTES) {
        scan->stats.over_limit++;
        return 0;
    }
    scan->kept++;
    scan->sent += need;
    scan->stats.members++;
    if (!fn)
        return 0;
    int rc = fn(&member, user);
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
        const char *comma = n > pos ? memchr(text + pos, ',', n - pos) : NULL;
        size_t end = comma ? (size_t)(comma - text) : n;
        if (!comma && n < len && text[n] != ',') { /* the member runs past the bound */
            const char *m = text + pos;
            size_t mlen = n - pos;
            trim_ows(&m, &mlen);
            scan->stats.over_limit += mlen > 0;
            break;
        }
        int rc = scan_piece(scan, text + pos, end - pos, scratch, fn, user);
        if (rc != 0)
            return rc;
        if (!comma)
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
