/* SPDX-License-Identifier: MIT */
/*
 * tracestate.c — W3C Trace Context `tracestate`: validate, normalise, look
 * up, update.
 *
 * The header is a list of vendor entries, most recently updated first
 * (W3C Trace Context Level 1, §3.3):
 *
 *     congo=t61rcWkgMzE , rojo=00f067aa0ba902b7,,fw529a3039@dt=x
 *     └── member ──┘ OWS,OWS └─── member ─────┘ empty └─ multi-tenant ─┘
 *
 * The grammar is in include/ctxvar/wire.h; in short (Level 2, §3.3.1):
 * keys are 1..256 characters of [a-z0-9_*\/@-] starting with [a-z0-9]
 * (Level 1's simple and multi-tenant keys are special cases), values are
 * 1..256 printable ASCII characters other than ',' and '=' that do not end
 * in a space.
 *
 * How a list is read.  The text is cut at every ',' (no valid member contains
 * one), each piece is trimmed of OWS (SP / HTAB), empty pieces are skipped
 * (§3.3.1.1: "empty and whitespace-only list members are allowed"), and each
 * remaining piece is split at its first '=' into key and value and both are
 * checked.  Positions of at most 32 members are kept on the stack, so one
 * pass validates and counts (a 33rd member is CTX_ELIMIT: "there can be a
 * maximum of 32 list-members in a list", §3.3.1.1).  A malformed member
 * rejects the whole list: Level 2 lets a vendor discard either the entry or
 * the header (§4.3), and the W3C test suite expects the header discarded
 * (`@foo=1,bar=2` loses bar; `foo=1` with a 257-character key in a second
 * header loses foo).  A repeated key is different: the suite expects
 * `foo=1,foo=1` to survive, and Level 2 allows passing duplicates on or
 * dropping them, so every member after the first of its key is dropped
 * (dedupe_spans, O(32²) compares at most) and the list kept.
 *
 * The normal form is what this library stores and sends: members joined by
 * ',' with no whitespace and no empty members (§3.3.1.1 asks vendors to
 * avoid sending empty members).  Its length is at most
 * CTX_WIRE_TRACESTATE_MAX_LEN.
 *
 * Update (§3.5): a vendor that changes its entry moves it to the front; if
 * the list would then exceed 32 members, the rightmost is removed.
 */
#include <string.h>

#include "wire/wire_internal.h"

typedef struct span {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} span_t;

/* keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"; a key starts with
 * lcalpha / DIGIT.  One table: bit 0 keychar, bit 1 may start a key. */
static const unsigned char key_class[256] = {
    ['_'] = 1, ['-'] = 1, ['*'] = 1, ['/'] = 1, ['@'] = 1,
    ['0'] = 3, ['1'] = 3, ['2'] = 3, ['3'] = 3, ['4'] = 3,
    ['5'] = 3, ['6'] = 3, ['7'] = 3, ['8'] = 3, ['9'] = 3,
    ['a'] = 3, ['b'] = 3, ['c'] = 3, ['d'] = 3, ['e'] = 3, ['f'] = 3, ['g'] = 3,
    ['h'] = 3, ['i'] = 3, ['j'] = 3, ['k'] = 3, ['l'] = 3, ['m'] = 3, ['n'] = 3,
    ['o'] = 3, ['p'] = 3, ['q'] = 3, ['r'] = 3, ['s'] = 3, ['t'] = 3, ['u'] = 3,
    ['v'] = 3, ['w'] = 3, ['x'] = 3, ['y'] = 3, ['z'] = 3,
};

int ctx_wire_tracestate_key_valid(const char *key, size_t len) {
    if (!key || len == 0 || len > CTX_WIRE_TRACESTATE_MAX_KEY ||
        !(key_class[(unsigned char)key[0]] & 2))
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!(key_class[(unsigned char)key[i]] & 1))
            return 0;
    return 1;
}

int ctx_wire_tracestate_value_valid(const char *value, size_t len) {
    if (!value || len == 0 || len > CTX_WIRE_TRACESTATE_MAX_VALUE)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return 0;
    }
    return value[len - 1] != ' '; /* the last character is an nblk-chr */
}

/* Reads the list into spans[] (at most 32).  Returns the count, CTX_EPARSE
 * or CTX_ELIMIT.  No duplicate check. */
static int split_list(const char *text, size_t len, span_t *spans) {
    if (len > CTX_WIRE_TRACESTATE_MAX_INPUT)
        return CTX_ELIMIT;
    if (len == 0)
        return 0;
    int n = 0;
    size_t pos = 0;
    while (pos <= len) {
        const char *comma = len > pos ? memchr(text + pos, ',', len - pos) : NULL;
        size_t end = comma ? (size_t)(comma - text) : len;
        const char *m = text + pos;
        size_t mlen = end - pos;
        ctx__trim_ows(&m, &mlen);
        if (mlen > 0) {
            if (n == CTX_WIRE_TRACESTATE_MAX_MEMBERS)
                return CTX_ELIMIT;
            const char *eq = memchr(m, '=', mlen);
            if (!eq)
                return CTX_EPARSE;
            span_t s = {m, (size_t)(eq - m), eq + 1, mlen - (size_t)(eq - m) - 1};
            if (!ctx_wire_tracestate_key_valid(s.key, s.key_len) ||
                !ctx_wire_tracestate_value_valid(s.value, s.value_len))
                return CTX_EPARSE;
            spans[n++] = s;
        }
        if (!comma)
            break;
        pos = end + 1;
    }
    return n;
}

static int same_key(const span_t *a, const span_t *b) {
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* Drops every span whose key an earlier span has; returns the new count. */
static int dedupe_spans(span_t *spans, int n) {
    int w = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < w && !seen; j++)
            seen = same_key(&spans[i], &spans[j]);
        if (!seen)
            spans[w++] = spans[i];
    }
    return w;
}

static int parse_spans(const char *text, size_t len, span_t *spans) {
    if (!text && len)
        return CTX_EINVAL;
    int n = split_list(text, len, spans);
    if (n < 0)
        return n;
    return dedupe_spans(spans, n);
}

int ctx_wire_tracestate_parse(const char *text, size_t len, ctx_wire_tracestate_fn fn, void *user) {
    span_t spans[CTX_WIRE_TRACESTATE_MAX_MEMBERS];
    int n = parse_spans(text, len, spans);
    if (n < 0 || !fn)
        return n;
    for (int i = 0; i < n; i++) {
        int rc = fn(spans[i].key, spans[i].key_len, spans[i].value, spans[i].value_len, user);
        if (rc != 0) /* 0 goes on; a negative code stops as is */
            return rc < 0 ? rc : CTX_ECALLBACK;
    }
    return n;
}

/* Appends ",key=value" (no comma when *len is 0); CTX_ETRUNCATED if it does
 * not fit with a NUL. */
static int put_member(char *buf, size_t cap, size_t *len, const char *key, size_t key_len,
                      const char *value, size_t value_len) {
    size_t need = (*len ? 1 : 0) + key_len + 1 + value_len;
    if (*len + need + 1 > cap)
        return CTX_ETRUNCATED;
    char *p = buf + *len;
    if (*len)
        *p++ = ',';
    memcpy(p, key, key_len);
    p += key_len;
    *p++ = '=';
    memcpy(p, value, value_len);
    p += value_len;
    *p = '\0';
    *len += need;
    return 0;
}

int ctx__trace_state_append(const char *text, size_t len, char *buf, size_t cap,
                            size_t *out_len, size_t *members) {
    span_t spans[CTX_WIRE_TRACESTATE_MAX_MEMBERS];
    int n = split_list(text, len, spans);
    if (n < 0)
        return n;
    if (*members + (size_t)n > CTX_WIRE_TRACESTATE_MAX_MEMBERS)
        return CTX_ELIMIT;
    for (int i = 0; i < n; i++) {
        int rc = put_member(buf, cap, out_len, spans[i].key, spans[i].key_len, spans[i].value,
                            spans[i].value_len);
        if (rc != 0)
            return rc;
    }
    *members += (size_t)n;
    return 0;
}

int ctx__trace_state_dedupe(char *list, size_t *len) {
    span_t spans[CTX_WIRE_TRACESTATE_MAX_MEMBERS];
    int n = split_list(list, *len, spans);
    if (n <= 1)
        return 0;
    int kept = dedupe_spans(spans, n);
    if (kept == n)
        return 0;
    /* Rewrite in place: every kept span lies at or after its new position. */
    size_t w = 0;
    for (int i = 0; i < kept; i++) {
        if (w)
            list[w++] = ',';
        memmove(list + w, spans[i].key, spans[i].key_len + 1 + spans[i].value_len);
        w += spans[i].key_len + 1 + spans[i].value_len;
    }
    list[w] = '\0';
    *len = w;
    return n - kept;
}

int ctx_wire_tracestate_normalize(const char *text, size_t len, char *buf, size_t cap,
                              size_t *out_len) {
    if (!buf || cap == 0)
        return CTX_EINVAL;
    span_t spans[CTX_WIRE_TRACESTATE_MAX_MEMBERS];
    int n = parse_spans(text, len, spans);
    buf[0] = '\0';
    if (n < 0)
        return n;
    size_t w = 0;
    for (int i = 0; i < n; i++) {
        int rc = put_member(buf, cap, &w, spans[i].key, spans[i].key_len, spans[i].value,
                            spans[i].value_len);
        if (rc != 0) {
            buf[0] = '\0';
            return rc;
        }
    }
    if (out_len)
        *out_len = w;
    return 0;
}

int ctx_wire_tracestate_get(const char *state, size_t len, const char *key, const char **value,
                        size_t *value_len) {
    if (!key || !value || !value_len)
        return CTX_EINVAL;
    span_t spans[CTX_WIRE_TRACESTATE_MAX_MEMBERS];
    int n = parse_spans(state, len, spans);
    if (n < 0)
        return n;
    size_t klen = strlen(key);
    for (int i = 0; i < n; i++) {
        if (spans[i].key_len == klen && memcmp(spans[i].key, key, klen) == 0) {
            *value = spans[i].value;
            *value_len = spans[i].value_len;
            return 0;
        }
    }
    return CTX_ENOTFOUND;
}

int ctx_wire_tracestate_put(const char *state, size_t len, const char *key, const char *value,
                        char *buf, size_t cap, size_t *out_len) {
    if (!key || !buf || cap == 0)
        return CTX_EINVAL;
    size_t klen = strlen(key), vlen = value ? strlen(value) : 0;
    if (!ctx_wire_tracestate_key_valid(key, klen) || (value && !ctx_wire_tracestate_value_valid(value, vlen)))
        return CTX_EINVAL;
    span_t spans[CTX_WIRE_TRACESTATE_MAX_MEMBERS];
    int n = parse_spans(state, len, spans);
    if (n < 0)
        return n;
    size_t w = 0;
    int count = 0, rc = 0;
    buf[0] = '\0';
    if (value) {
        rc = put_member(buf, cap, &w, key, klen, value, vlen);
        count++;
    }
    for (int i = 0; i < n && rc == 0 && count < CTX_WIRE_TRACESTATE_MAX_MEMBERS; i++) {
        if (spans[i].key_len == klen && memcmp(spans[i].key, key, klen) == 0)
            continue; /* the old entry of the updated key */
        rc = put_member(buf, cap, &w, spans[i].key, spans[i].key_len, spans[i].value,
                        spans[i].value_len);
        count++;
    }
    if (rc != 0) {
        buf[0] = '\0';
        return rc;
    }
    if (out_len)
        *out_len = w;
    return 0;
}
