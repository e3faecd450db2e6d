/* SPDX-License-Identifier: MIT */
/*
 * carrier.c — the carrier interface's helpers and the ready-made carrier,
 * an ordered list of header pairs.
 *
 * A carrier is three function pointers over a transport's headers (see
 * include/ctxvar/wire.h).  Names are compared ignoring ASCII case, as HTTP
 * requires (RFC 9110 §5.1) and as NATS users expect although libnats
 * itself compares exactly.
 *
 * ctx_wire_headers_t is the simplest possible transport: an array of pairs
 * in insertion order, each pair one allocation ("name\0value\0").  It is
 * what tests, fuzzers and the HTTP example use to hold headers.  It is
 * bounded (CTX_WIRE_HEADERS_MAX_PAIRS pairs, CTX_WIRE_HEADERS_MAX_BYTES
 * bytes) because it is filled from the network; the array doubles up to
 * the pair limit.  Every change allocates first, so a failed call leaves
 * the list as it was.
 *
 *   pairs ──▶ [ {block, name_len, value_len} | ... ]   count ≤ cap ≤ 256
 *               └─▶ "traceparent\0" "00-…-01\0"
 */
#include <string.h>

#include "wire/wire_internal.h"

/* ASCII lowercase of eight bytes at once: a byte in 'A'..'Z' gets bit
 * 0x20; every other byte (bytes >= 0x80 included) is left alone.  The
 * byte-wise compares cannot carry: each byte is below 0x80 when biased. */
static inline uint64_t lower8(uint64_t x) {
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7full, high = 0x8080808080808080ull;
    uint64_t h = x & low7;
    uint64_t ge_a = h + 0x3f3f3f3f3f3f3f3full; /* top bit: byte >= 'A' */
    uint64_t gt_z = h + 0x2525252525252525ull; /* top bit: byte > 'Z' */
    uint64_t upper = ge_a & ~gt_z & ~x & high;
    return x | (upper >> 2);
}

int ctx_wire_name_equal(const char *a, size_t a_len, const char *b, size_t b_len) {
    if (a_len != b_len || (!a && a_len) || (!b && b_len))
        return 0;
    size_t i = 0;
    for (; i + 8 <= a_len; i += 8) { /* header names: eight bytes at a time */
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (lower8(x) != lower8(y))
            return 0;
    }
    for (; i < a_len; i++)
        if (ctx__lower((unsigned char)a[i]) != ctx__lower((unsigned char)b[i]))
            return 0;
    return 1;
}

typedef struct find_first {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    int found;
} find_first_t;

/* Stops the walk at the first match, with a negative code as header
 * callbacks must (wire.h); `found` tells it from the carrier's own error. */
#define FIND_FIRST_STOP CTX_ENOTFOUND

static int find_first(const char *name, size_t name_len, const char *value, size_t value_len,
                      void *user) {
    find_first_t *f = user;
    if (!ctx_wire_name_equal(name, name_len, f->name, f->name_len))
        return 0;
    f->value = value;
    f->value_len = value_len;
    f->found = 1;
    return FIND_FIRST_STOP;
}

int ctx_wire_carrier_get(const ctx_wire_carrier_t *carrier_in, const char *name,
                         const char **value, size_t *value_len) {
    ctx_wire_carrier_t c;
    if (!name || !value || !value_len || ctx__wire_carrier_in(carrier_in, &c) != 0)
        return CTX_EINVAL;
    const ctx_wire_carrier_t *carrier = &c;
    if (carrier->get) {
        int rc = carrier->get(carrier->self, name, value, value_len);
        return rc > 0 ? CTX_ECALLBACK : rc;
    }
    if (!carrier->iterate)
        return CTX_EINVAL;
    find_first_t f = {name, strlen(name), NULL, 0, 0};
    int rc = carrier->iterate(carrier->self, find_first, &f);
    if (f.found && rc == FIND_FIRST_STOP) {
        *value = f.value;
        *value_len = f.value_len;
        return 0;
    }
    if (rc > 0) /* find_first never returns one: the carrier's own */
        return CTX_ECALLBACK;
    return rc < 0 ? rc : CTX_ENOTFOUND;
}

/* ---- the list ---- */

typedef struct pair {
    char *block; /* name "\0" value "\0" */
    size_t name_len;
    size_t value_len;
} pair_t;

struct ctx_wire_headers {
    pair_t *pairs;
    size_t count;
    size_t cap;
    size_t bytes; /* sum of name_len + value_len */
};

static size_t block_size(const pair_t *p) { return p->name_len + p->value_len + 2; }

int ctx_wire_headers_new(ctx_wire_headers_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_wire_headers_t *h = ctx__wire_malloc(sizeof *h);
    if (!h)
        return CTX_ENOMEM;
    memset(h, 0, sizeof *h);
    *out = h;
    return 0;
}

void ctx_wire_headers_clear(ctx_wire_headers_t *h) {
    if (!h)
        return;
    for (size_t i = 0; i < h->count; i++)
        ctx__wire_free(h->pairs[i].block, block_size(&h->pairs[i]));
    h->count = 0;
    h->bytes = 0;
}

void ctx_wire_headers_release(ctx_wire_headers_t *h) {
    if (!h)
        return;
    ctx_wire_headers_clear(h);
    ctx__wire_free(h->pairs, h->cap * sizeof *h->pairs);
    ctx__wire_free(h, sizeof *h);
}

static int value_valid(const char *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
            return 0;
    return 1;
}

static int name_valid(const char *name, size_t n) {
    if (!name || n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!ctx__is_tchar((unsigned char)name[i]))
            return 0;
    return 1;
}

/* Makes room for one more pair (count + 1 <= cap). */
static int reserve(ctx_wire_headers_t *h) {
    if (h->count < h->cap)
        return 0;
    size_t cap = h->cap ? h->cap * 2 : 8;
    if (cap > CTX_WIRE_HEADERS_MAX_PAIRS)
        cap = CTX_WIRE_HEADERS_MAX_PAIRS;
    if (cap <= h->count)
        return CTX_ELIMIT;
    pair_t *pairs = ctx__wire_malloc(cap * sizeof *pairs);
    if (!pairs)
        return CTX_ENOMEM;
    if (h->count)
        memcpy(pairs, h->pairs, h->count * sizeof *pairs);
    ctx__wire_free(h->pairs, h->cap * sizeof *h->pairs);
    h->pairs = pairs;
    h->cap = cap;
    return 0;
}

static int make_pair(const char *name, size_t name_len, const char *value, size_t value_len,
                     pair_t *out) {
    pair_t p = {NULL, name_len, value_len};
    p.block = ctx__wire_malloc(block_size(&p));
    if (!p.block)
        return CTX_ENOMEM;
    memcpy(p.block, name, name_len);
    p.block[name_len] = '\0';
    if (value_len)
        memcpy(p.block + name_len + 1, value, value_len);
    p.block[name_len + 1 + value_len] = '\0';
    *out = p;
    return 0;
}

int ctx_wire_headers_add_n(ctx_wire_headers_t *h, const char *name, size_t name_len,
                           const char *value, size_t value_len) {
    if (!h || !name_valid(name, name_len) || (!value && value_len) || !value_valid(value, value_len))
        return CTX_EINVAL;
    if (h->count >= CTX_WIRE_HEADERS_MAX_PAIRS ||
        h->bytes + name_len + value_len > CTX_WIRE_HEADERS_MAX_BYTES)
        return CTX_ELIMIT;
    int rc = reserve(h);
    if (rc != 0)
        return rc;
    pair_t p;
    rc = make_pair(name, name_len, value, value_len, &p);
    if (rc != 0)
        return rc;
    h->pairs[h->count++] = p;
    h->bytes += name_len + value_len;
    return 0;
}

int ctx_wire_headers_add(ctx_wire_headers_t *h, const char *name, const char *value) {
    if (!name || !value)
        return CTX_EINVAL;
    return ctx_wire_headers_add_n(h, name, strlen(name), value, strlen(value));
}

int ctx_wire_headers_set(ctx_wire_headers_t *h, const char *name, const char *value) {
    if (!name || !value)
        return CTX_EINVAL;
    return ctx_wire_headers_set_n(h, name, strlen(name), value, strlen(value));
}

int ctx_wire_headers_set_n(ctx_wire_headers_t *h, const char *name, size_t name_len,
                           const char *value, size_t value_len) {
    if (!h || !name_valid(name, name_len) || (!value && value_len) || !value_valid(value, value_len))
        return CTX_EINVAL;
    size_t keep_count = 0, keep_bytes = 0;
    for (size_t i = 0; i < h->count; i++) {
        if (!ctx_wire_name_equal(h->pairs[i].block, h->pairs[i].name_len, name, name_len)) {
            keep_count++;
            keep_bytes += h->pairs[i].name_len + h->pairs[i].value_len;
        }
    }
    if (keep_count >= CTX_WIRE_HEADERS_MAX_PAIRS ||
        keep_bytes + name_len + value_len > CTX_WIRE_HEADERS_MAX_BYTES)
        return CTX_ELIMIT;
    if (keep_count == h->count) {
        int rc = reserve(h);
        if (rc != 0)
            return rc;
    }
    pair_t p;
    int rc = make_pair(name, name_len, value, value_len, &p);
    if (rc != 0)
        return rc;
    size_t w = 0;
    for (size_t i = 0; i < h->count; i++) {
        if (ctx_wire_name_equal(h->pairs[i].block, h->pairs[i].name_len, name, name_len))
            ctx__wire_free(h->pairs[i].block, block_size(&h->pairs[i]));
        else
            h->pairs[w++] = h->pairs[i];
    }
    h->pairs[w++] = p;
    h->count = w;
    h->bytes = keep_bytes + name_len + value_len;
    return 0;
}

int ctx_wire_headers_get(const ctx_wire_headers_t *h, const char *name, const char **value,
                         size_t *value_len) {
    if (!h || !name || !value)
        return CTX_EINVAL;
    size_t name_len = strlen(name);
    for (size_t i = 0; i < h->count; i++) {
        const pair_t *p = &h->pairs[i];
        if (ctx_wire_name_equal(p->block, p->name_len, name, name_len)) {
            *value = p->block + p->name_len + 1;
            if (value_len)
                *value_len = p->value_len;
            return 0;
        }
    }
    return CTX_ENOTFOUND;
}

size_t ctx_wire_headers_count(const ctx_wire_headers_t *h) { return h ? h->count : 0; }

int ctx_wire_headers_at(const ctx_wire_headers_t *h, size_t i, const char **name,
                        const char **value) {
    if (!h || i >= h->count)
        return CTX_ENOTFOUND;
    if (name)
        *name = h->pairs[i].block;
    if (value)
        *value = h->pairs[i].block + h->pairs[i].name_len + 1;
    return 0;
}

static int list_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    ctx_wire_headers_t *h = self;
    for (size_t i = 0; i < h->count; i++) {
        const pair_t *p = &h->pairs[i];
        int rc = fn(p->block, p->name_len, p->block + p->name_len + 1, p->value_len, user);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int list_get(void *self, const char *name, const char **value, size_t *value_len) {
    return ctx_wire_headers_get(self, name, value, value_len);
}

static int list_set(void *self, const char *name, const char *value, size_t value_len) {
    return ctx_wire_headers_set_n(self, name, strlen(name), value, value_len);
}

ctx_wire_carrier_t ctx_wire_headers_carrier(ctx_wire_headers_t *h) {
    ctx_wire_carrier_t c = {sizeof c, list_iterate, list_get, list_set, h};
    return c;
}
