/* SPDX-License-Identifier: MIT */
/*
 * traceparent.c — W3C Trace Context `traceparent`, and the id generator.
 *
 * The header (W3C Trace Context Level 1, §3.2):
 *
 *     00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
 *     ├┘ ├──────────── trace-id ───────┘ ├── parent-id ─┘ ├┘
 *   version (2 HEXDIGLC)                                  trace-flags
 *
 *   byte  0..1   version      ff is invalid (§3.2.2.1)
 *         2      '-'
 *         3..34  trace-id     32 lowercase hex, not all zero (§3.2.2.3)
 *         35     '-'
 *         36..51 parent-id    16 lowercase hex, not all zero (§3.2.2.4)
 *         52     '-'
 *         53..54 trace-flags  2 lowercase hex (§3.2.2.5)
 *
 * Version 00 is exactly those 55 bytes.  A higher version is parsed as far
 * as version 00 goes (§3.2.4, "Versioning of traceparent"): the header must
 * be at least 55 bytes, the first four fields are checked as above, and what
 * follows the flags must be either the end or a '-' (a later version's extra
 * fields, which are ignored).  Uppercase hex is outside HEXDIGLC and so
 * invalid; this is what the W3C test suite expects.
 *
 * Outgoing headers are always version 00, the version this code knows
 * (§3.2.4: a vendor sends its own version).  An outgoing call carries a
 * *child*: same trace-id and flags, a fresh parent-id (§3.2.2.4: parent-id is
 * "the ID of this request as known by the caller").
 *
 * Flags (Level 2, §3.2.2.5): bit 0 sampled, bit 1 random (the trace-id's
 * right-most 7 bytes are random: always true of ids made here, so a new
 * trace sets it).  Other bits are kept in the parsed struct as received but
 * written as zero ("Vendors MUST set those to zero").
 *
 * Parsing is on the hot path of every request (carrier → context), so the
 * 48 id digits are decoded sixteen at a time (hex16: SSE2, or eight at a
 * time in a 64-bit word), the four others with a 256-entry table (hex2),
 * errors are collected as bits and tested once, and the result is stored
 * into the caller's struct in three 8-byte words once everything is
 * checked.  CTX_WIRE_HEX (1 SSE2, 2 SWAR, 3 the table; chosen by the target
 * unless defined) selects the version: the tests build the parser all three
 * ways, so every version meets the same cases.
 *
 * Ids come from ctx__wire_random (random.c); §3.2.2.3 asks for
 * randomness, not for cryptographic strength; all-zero ids are drawn again.
 */
#define _GNU_SOURCE
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h> /* SSE2: every x86-64 */
#endif

#include "wire/wire_internal.h"

/* 1 if the n bytes (8 or 16 for the ids) are all zero. */
static int all_zero(const uint8_t *p, size_t n) {
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        acc |= x;
    }
    for (; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

static void random_id(uint8_t *out, size_t n) {
    do
        ctx__wire_random(out, n);
    while (all_zero(out, n));
}

/* ---- parse ---- */

/* The value of a lowercase hex digit (HEXDIGLC), or 0x80 for any other
 * byte: one lookup, and the error is a bit to OR together, not a branch. */
#define X 0x80
static const uint8_t hexlc[256] = {
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, 10, 11, 12, 13, 14, 15, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
};
#undef X

/* Two digits: their byte; *bad gets the bit 0x80 if either is not
 * HEXDIGLC. */
static inline uint8_t hex2(const char *text, unsigned *bad) {
    unsigned hi = hexlc[(unsigned char)text[0]], lo = hexlc[(unsigned char)text[1]];
    *bad |= (hi | lo) & 0x80;
    return (uint8_t)(hi << 4 | lo);
}

/* Sixteen digits → eight bytes, as one word with the first byte lowest.
 * Branch-free: a byte that is not HEXDIGLC leaves a mark in *bad, which
 * the caller tests once, after the three words of ids.
 *
 * With SSE2 (every x86-64) one 16-byte load is checked with four signed
 * byte compares (ASCII is positive; bytes >= 0x80 are negative and fail
 * both ranges), turned into nibbles, and neighbouring nibbles are folded
 * into bytes in 16-bit lanes and packed.  Elsewhere, on little-endian
 * machines, the same in a 64-bit register, eight digits at a time (SWAR):
 * carry-free byte-wise compares (a byte below 0x80 plus a bias below 0x80
 * never carries into its neighbour, and its top bit says "at least the
 * threshold"), nibbles ((c & 15) + 9 for letters), folded.  Otherwise the
 * table, two digits at a time. */
#if !defined(CTX_WIRE_HEX)
#if defined(__SSE2__)
#define CTX_WIRE_HEX 1 /* SSE2 */
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CTX_WIRE_HEX 2 /* SWAR */
#else
#define CTX_WIRE_HEX 3 /* the table */
#endif
#endif

#if CTX_WIRE_HEX == 1
static inline uint64_t hex16(const char *text, uint64_t *bad) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)text);
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
                                  _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('a' - 1)),
                                   _mm_cmplt_epi8(x, _mm_set1_epi8('f' + 1)));
    *bad |= (uint64_t)(_mm_movemask_epi8(_mm_or_si128(digit, letter)) ^ 0xffff);
    __m128i nib = _mm_or_si128(_mm_and_si128(digit, _mm_sub_epi8(x, _mm_set1_epi8('0'))),
                               _mm_and_si128(letter, _mm_sub_epi8(x, _mm_set1_epi8('a' - 10))));
    /* a lane is second << 8 | first: the byte is first << 4 | second */
    __m128i pairs = _mm_or_si128(_mm_slli_epi16(nib, 4), _mm_srli_epi16(nib, 8));
    pairs = _mm_and_si128(pairs, _mm_set1_epi16(0x00ff));
    return (uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(pairs, pairs));
}
#elif CTX_WIRE_HEX == 2
#define ONES 0x0101010101010101ull
#define HIGH 0x8080808080808080ull
static inline uint32_t hex8(const char *text, uint64_t *bad) {
    uint64_t x;
    memcpy(&x, text, 8);
    uint64_t ge0 = x + ONES * (0x80 - '0'), gt9 = x + ONES * (0x80 - '9' - 1);
    uint64_t gea = x + ONES * (0x80 - 'a'), gtf = x + ONES * (0x80 - 'f' - 1);
    uint64_t ok = ((ge0 & ~gt9) | (gea & ~gtf)) & ~x & HIGH;
    *bad |= ok ^ HIGH;
    uint64_t nib = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    uint64_t t = ((nib << 4) | (nib >> 8)) & 0x00ff00ff00ff00ffull;
    t = (t | (t >> 8)) & 0x0000ffff0000ffffull;
    t = (t | (t >> 16)) & 0x00000000ffffffffull;
    return (uint32_t)t; /* little-endian: byte 0 is the first pair */
}

static inline uint64_t hex16(const char *text, uint64_t *bad) {
    return (uint64_t)hex8(text, bad) | (uint64_t)hex8(text + 8, bad) << 32;
}
#else
static inline uint64_t hex16(const char *text, uint64_t *bad) {
    unsigned b = 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)hex2(text + 2 * i, &b) << (8 * i);
    *bad |= b;
    return v;
}
#endif

/* Stores such a word: its lowest byte first. */
static inline void store_bytes(uint8_t *dst, uint64_t w) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, &w, 8);
#else
    for (int i = 0; i < 8; i++)
        dst[i] = (uint8_t)(w >> (8 * i));
#endif
}

/* The ids are decoded into three words held in registers and stored into
 * *out once, after every check: a failing parse leaves *out untouched, and
 * nothing reads back the bytes it has just stored (a wide load of narrow
 * stores stalls store forwarding: the old code built the struct on the
 * stack byte by byte and then copied it). */
int ctx_wire_traceparent_parse(const char *text, size_t len, ctx_wire_traceparent_t *out) {
    if (!out || (!text && len))
        return CTX_EINVAL;
    ctx__trim_ows(&text, &len);
    if (len < CTX_WIRE_TRACEPARENT_LEN)
        return CTX_EPARSE;
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        return CTX_EPARSE;
    unsigned bad2 = 0;
    uint8_t version = hex2(text, &bad2), flags = hex2(text + 53, &bad2);
    if (bad2 || version == 0xff) /* §3.2.2.1 */
        return CTX_EPARSE;
    if (version == 0) {
        if (len != CTX_WIRE_TRACEPARENT_LEN) /* version 00 has exactly four fields */
            return CTX_EPARSE;
    } else if (len > CTX_WIRE_TRACEPARENT_LEN && text[CTX_WIRE_TRACEPARENT_LEN] != '-') {
        return CTX_EPARSE; /* §3.2.4: the flags are followed by the end or a dash */
    }
    uint64_t bad = 0;
    uint64_t t0 = hex16(text + 3, &bad), t1 = hex16(text + 19, &bad), p = hex16(text + 36, &bad);
    if (bad || (t0 | t1) == 0 || p == 0) /* §3.2.2.3-4: all-zero ids */
        return CTX_EPARSE;
    out->version = version;
    store_bytes(out->trace_id, t0);
    store_bytes(out->trace_id + 8, t1);
    store_bytes(out->parent_id, p);
    out->flags = flags;
    return 0;
}

/* ---- generate ---- */

static const char hexdigits[] = "0123456789abcdef";

static char *hex_encode(char *p, const uint8_t *in, size_t n) {
    for (size_t i = 0; i < n; i++) {
        *p++ = hexdigits[in[i] >> 4];
        *p++ = hexdigits[in[i] & 15];
    }
    return p;
}

int ctx_wire_traceparent_format(const ctx_wire_traceparent_t *tp, char *buf, size_t cap) {
    if (!tp || !buf || all_zero(tp->trace_id, 16) || all_zero(tp->parent_id, 8))
        return CTX_EINVAL;
    if (cap < CTX_WIRE_TRACEPARENT_LEN + 1)
        return CTX_ETRUNCATED;
    char *p = buf;
    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    p = hex_encode(p, tp->trace_id, 16);
    *p++ = '-';
    p = hex_encode(p, tp->parent_id, 8);
    *p++ = '-';
    uint8_t flags = tp->flags & CTX_WIRE_TRACE_FLAGS_KNOWN; /* reserved bits: zero */
    p = hex_encode(p, &flags, 1);
    *p = '\0';
    return CTX_WIRE_TRACEPARENT_LEN;
}

int ctx_wire_traceparent_new(uint8_t flags, ctx_wire_traceparent_t *out) {
    if (!out)
        return CTX_EINVAL;
    out->version = 0;
    random_id(out->trace_id, 16);
    random_id(out->parent_id, 8);
    out->flags = (uint8_t)(flags | CTX_WIRE_TRACE_FLAG_RANDOM); /* the whole trace-id is random */
    return 0;
}

int ctx_wire_traceparent_child(const ctx_wire_traceparent_t *parent, ctx_wire_traceparent_t *out) {
    if (!parent || !out || all_zero(parent->trace_id, 16))
        return CTX_EINVAL;
    ctx_wire_traceparent_t child = *parent;
    child.version = 0;
    child.flags &= CTX_WIRE_TRACE_FLAGS_KNOWN;
    do
        random_id(child.parent_id, 8);
    while (memcmp(child.parent_id, parent->parent_id, 8) == 0);
    *out = child;
    return 0;
}

int ctx_wire_traceparent_trace_id(const ctx_wire_traceparent_t *tp, char *buf, size_t cap) {
    if (!tp || !buf)
        return CTX_EINVAL;
    if (cap < 33)
        return CTX_ETRUNCATED;
    *hex_encode(buf, tp->trace_id, 16) = '\0';
    return 32;
}

int ctx_wire_traceparent_span_id(const ctx_wire_traceparent_t *tp, char *buf, size_t cap) {
    if (!tp || !buf)
        return CTX_EINVAL;
    if (cap < 17)
        return CTX_ETRUNCATED;
    *hex_encode(buf, tp->parent_id, 8) = '\0';
    return 16;
}
