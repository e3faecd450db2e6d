/* SPDX-License-Identifier: MIT */
/*
 * timeout.c — deadlines on the wire: gRPC's `grpc-timeout`.
 *
 * A deadline is an absolute time, but clocks of two machines disagree, so
 * what crosses the wire is the time *remaining*, in gRPC's syntax
 * (grpc/doc/PROTOCOL-HTTP2.md, "Requests"):
 *
 *     Timeout      → "grpc-timeout" TimeoutValue TimeoutUnit
 *     TimeoutValue → {positive integer as ASCII string of at most 8 digits}
 *     TimeoutUnit  → Hour → "H" / Minute → "M" / Second → "S" /
 *                    Millisecond → "m" / Microsecond → "u" / Nanosecond → "n"
 *
 * The receiver turns it back into a local deadline (now + timeout on its own
 * monotonic clock); each hop re-encodes what is left when it sends, so the
 * deadline shrinks by the time spent at every hop and in transit after the
 * first send is not counted (the known limit of relative timeouts).
 *
 * Encoding picks the finest unit whose value fits in 8 digits and rounds
 * down, so the receiver never believes it has more time than the sender
 * had.  An expired deadline is sent as "0n" (grpc-go does the same), and 0
 * is accepted on input for that reason although the grammar says
 * "positive".  Parsing saturates: 99999999H is about 3.6e20 ns, past
 * INT64_MAX.
 */
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "wire/wire_internal.h"

static const struct unit {
    char code;
    int64_t ns;
} units[] = {
    {'n', 1},
    {'u', 1000},
    {'m', 1000000},
    {'S', 1000000000},
    {'M', 60ll * 1000000000},
    {'H', 3600ll * 1000000000},
};

#define MAX_VALUE 99999999ll /* 8 digits */

int ctx_wire_timeout_parse(const char *text, size_t len, int64_t *timeout_ns) {
    if ((!text && len) || !timeout_ns)
        return CTX_EINVAL;
    ctx__trim_ows(&text, &len);
    if (len < 2 || len > CTX_WIRE_TIMEOUT_MAX_LEN)
        return CTX_EPARSE;
    int64_t value = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (!ctx__is_digit((unsigned char)text[i]))
            return CTX_EPARSE;
        value = value * 10 + (text[i] - '0');
    }
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (units[u].code == text[len - 1]) {
            if (value > INT64_MAX / units[u].ns)
                *timeout_ns = INT64_MAX;
            else
                *timeout_ns = value * units[u].ns;
            return 0;
        }
    }
    return CTX_EPARSE;
}

int ctx_wire_timeout_format(int64_t timeout_ns, char *buf, size_t cap) {
    if (!buf)
        return CTX_EINVAL;
    int64_t value = 0;
    char code = 'n';
    if (timeout_ns > 0) {
        size_t u = 0;
        while (u + 1 < sizeof units / sizeof units[0] && timeout_ns / units[u].ns > MAX_VALUE)
            u++;
        value = timeout_ns / units[u].ns; /* rounds down */
        if (value > MAX_VALUE)
            value = MAX_VALUE; /* only for more than 99999999 hours */
        code = units[u].code;
    }
    char tmp[CTX_WIRE_TIMEOUT_MAX_LEN + 1];
    int n = 0;
    char digits[8];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (nd > 0)
        tmp[n++] = digits[--nd];
    tmp[n++] = code;
    if ((size_t)n + 1 > cap)
        return CTX_ETRUNCATED;
    memcpy(buf, tmp, (size_t)n);
    buf[n] = '\0';
    return n;
}

int64_t ctx_wire_now_ns(void) {
    return ctx__monotonic_ns();
}
