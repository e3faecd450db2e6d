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
 * 48 id digits are decoded eight at a time in a 64-bit word (hex8_swar).
 *
 * Ids: a per-thread xoshiro256** generator, seeded from getrandom() (or
 * /dev/urandom, or at worst the clock and addresses) on first use in each
 * thread and again in a forked child (the pid is remembered), so two
 * processes never share a sequence.  §3.2.2.3 asks for randomness, not for
 * cryptographic strength; all-zero ids are drawn again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "wire/wire_internal.h"

/* ---- the generator ---- */

typedef struct rng {
    uint64_t s[4];
    pid_t pid; /* 0: not seeded */
} rng_t;

static _Thread_local rng_t thread_rng;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_t *r) {
    uint64_t result = rotl(r->s[1] * 5, 7) * 9;
    uint64_t t = r->s[1] << 17;
    r->s[2] ^= r->s[0];
    r->s[3] ^= r->s[1];
    r->s[1] ^= r->s[2];
    r->s[0] ^= r->s[3];
    r->s[2] ^= t;
    r->s[3] = rotl(r->s[3], 45);
    return result;
}

static int read_os_random(void *buf, size_t n) {
    size_t got = 0;
    for (int tries = 0; got < n && tries < 8; tries++) {
        ssize_t k = getrandom((char *)buf + got, n - got, 0);
        if (k > 0)
            got += (size_t)k;
        else if (k < 0 && errno != EINTR)
            break;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    for (int tries = 0; got < n && tries < 8; tries++) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k > 0)
            got += (size_t)k;
        else if (k < 0 && errno != EINTR)
            break;
    }
    close(fd);
    return got == n ? 0 : -1;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, pid_t pid) {
    uint64_t seed[4];
    if (read_os_random(seed, sizeof seed) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)(uintptr_t)r ^ ((uint64_t)pid << 32);
        for (int i = 0; i < 4; i++)
            seed[i] = splitmix(&x);
    }
    memcpy(r->s, seed, sizeof seed);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
    r->pid = pid;
}

void ctx__wire_random(uint8_t *out, size_t n) {
    rng_t *r = &thread_rng;
    pid_t pid = getpid();
    if (r->pid != pid)
        rng_seed(r, pid);
    while (n > 0) {
        uint64_t x = rng_next(r);
        size_t k = n < 8 ? n : 8;
        memcpy(out, &x, k);
        out += k;
        n -= k;
    }
}

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

/* Hex decoding, eight digits at a time (SWAR: "SIMD within a register").
 * Eight text bytes are loaded as one little-endian 64-bit word; every byte
 * is checked to be '0'..'9' or 'a'..'f' with carry-free byte-wise
 * compares (a byte below 0x80 plus a bias below 0x80 never carries into
 * its neighbour, and its top bit says "at least the threshold"), then each
 * byte becomes its nibble ((c & 15) + 9 for letters) and neighbouring
 * nibbles are folded into bytes.  A traceparent is 24 bytes of ids in 48
 * digits: six words instead of 48 table lookups and branches. */
#define ONES 0x0101010101010101ull
#define HIGH 0x8080808080808080ull

static int hex8_swar(const char *text, uint8_t out[4], uint32_t *any) {
    uint64_t x;
    memcpy(&x, text, 8);
    uint64_t ge0 = x + ONES * (0x80 - '0'), gt9 = x + ONES * (0x80 - '9' - 1);
    uint64_t gea = x + ONES * (0x80 - 'a'), gtf = x + ONES * (0x80 - 'f' - 1);
    uint64_t ok = ((ge0 & ~gt9) | (gea & ~gtf)) & ~x & HIGH;
    if (ok != HIGH)
        return -1;
    uint64_t nib = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    uint64_t t = ((nib << 4) | (nib >> 8)) & 0x00ff00ff00ff00ffull;
    t = (t | (t >> 8)) & 0x0000ffff0000ffffull;
    t = (t | (t >> 16)) & 0x00000000ffffffffull;
    uint32_t v = (uint32_t)t; /* little-endian: byte 0 is the first pair */
    memcpy(out, &v, 4);
    *any |= v;
    return 0;
}

/* Decodes 2*n lowercase hex digits; 0 or -1.  *any (if not NULL) becomes
 * non-zero iff a decoded byte is: the all-zero check of the ids without
 * reading back what was just stored (a wide load of narrow stores stalls
 * store forwarding). */
static int hex_decode_any(const char *text, uint8_t *out, size_t n, uint32_t *any) {
    uint32_t acc = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; n >= 4; n -= 4, text += 8, out += 4)
        if (hex8_swar(text, out, &acc) != 0)
            return -1;
#endif
    for (size_t i = 0; i < n; i++) {
        int hi = ctx__hexlc_value((unsigned char)text[2 * i]);
        int lo = ctx__hexlc_value((unsigned char)text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
        acc |= out[i];
    }
    if (any)
        *any = acc;
    return 0;
}

static int hex_decode(const char *text, uint8_t *out, size_t n) {
    return hex_decode_any(text, out, n, NULL);
}

int ctx_wire_traceparent_parse(const char *text, size_t len, ctx_wire_traceparent_t *out) {
    if (!out || (!text && len))
        return CTX_EINVAL;
    ctx__trim_ows(&text, &len);
    if (len < CTX_WIRE_TRACEPARENT_LEN)
        return CTX_EPARSE;
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        return CTX_EPARSE;
    ctx_wire_traceparent_t tp;
    if (hex_decode(text, &tp.version, 1) != 0 || tp.version == 0xff) /* §3.2.2.1 */
        return CTX_EPARSE;
    if (tp.version == 0) {
        if (len != CTX_WIRE_TRACEPARENT_LEN) /* version 00 has exactly four fields */
            return CTX_EPARSE;
    } else if (len > CTX_WIRE_TRACEPARENT_LEN && text[CTX_WIRE_TRACEPARENT_LEN] != '-') {
        return CTX_EPARSE; /* §3.2.4: the flags are followed by the end or a dash */
    }
    uint32_t trace_any, parent_any;
    if (hex_decode_any(text + 3, tp.trace_id, 16, &trace_any) != 0 ||
        hex_decode_any(text + 36, tp.parent_id, 8, &parent_any) != 0 ||
        hex_decode(text + 53, &tp.flags, 1) != 0)
        return CTX_EPARSE;
    if (!trace_any || !parent_any) /* §3.2.2.3-4: all-zero ids */
        return CTX_EPARSE;
    *out = tp;
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
