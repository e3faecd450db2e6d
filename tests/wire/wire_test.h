/* SPDX-License-Identifier: MIT */
/*
 * wire_test.h — what the wire module's tests share: cmocka, assertion
 * macros that print error names, string-valued variables with encode /
 * decode operations, a header list helper, and scaling under valgrind/TSan.
 */
#ifndef CTX_WIRE_TEST_H
#define CTX_WIRE_TEST_H

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/wire.h>

#include "../support/support.h"

#include "ctx_test.h"

#define SCALED(n, valgrind, tsan) CTX_SCALED(n, valgrind, tsan)

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- string values: a heap copy, length-prefixed (may hold NULs) ---- */

typedef struct str_value {
    size_t len;
    char text[];
} str_value_t;

static atomic_int str_released; /* values released (any thread) */

static inline void str_release(void *value, void *user) {
    (void)user;
    atomic_fetch_add(&str_released, 1);
    free(value);
}

static inline str_value_t *str_new(const char *text, size_t len) {
    str_value_t *s = malloc(sizeof *s + len + 1);
    if (!s)
        return NULL;
    s->len = len;
    memcpy(s->text, text, len);
    s->text[len] = '\0';
    return s;
}

static inline int str_encode(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const str_value_t *s = value;
    if (cap > 0) {
        size_t n = s->len < cap - 1 ? s->len : cap - 1;
        memcpy(buf, s->text, n);
        buf[n] = '\0';
    }
    return (int)s->len;
}

/* Refuses values starting with '!' (to test rejection). */
static inline int str_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    if (len > 0 && text[0] == '!')
        return CTX_EPARSE;
    str_value_t *s = str_new(text, len);
    if (!s)
        return CTX_ENOMEM;
    *out = s;
    return 0;
}

static inline int str_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", ((const str_value_t *)value)->text);
}

static const ctx_value_ops_t str_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = str_release, .format = str_format, .encode = str_encode, .decode = str_decode};

static inline ctx_var_t *str_var(const char *name) {
    ctx_var_t *v = NULL;
    ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &str_ops};
    ASSERT_RC(ctx_var_new(name, &o, &v), 0);
    return v;
}

static inline void set_str(ctx_var_t *var, const char *text) {
    ASSERT_RC(ctx_var_set(var, str_new(text, strlen(text)), NULL), 0);
}

/* The string of `var` in ctx (NULL: current), or NULL. */
static inline const char *get_str(ctx_context_t *ctx, ctx_var_t *var) {
    void *v = NULL;
    int rc = ctx ? ctx_context_get(ctx, var, &v) : ctx_var_get(var, &v);
    if (rc != 0 || !v)
        return NULL;
    return ((const str_value_t *)v)->text;
}

/* ---- header lists ---- */

static inline ctx_wire_headers_t *headers(void) {
    ctx_wire_headers_t *h = NULL;
    ASSERT_RC(ctx_wire_headers_new(&h), 0);
    return h;
}

static inline void add_header(ctx_wire_headers_t *h, const char *name, const char *value) {
    ASSERT_RC(ctx_wire_headers_add_n(h, name, strlen(name), value, strlen(value)), 0);
}

static inline const char *header(ctx_wire_headers_t *h, const char *name) {
    const char *v = NULL;
    size_t n;
    if (ctx_wire_headers_get(h, name, &v, &n) != 0)
        return NULL;
    return v;
}

/* Ends a test that may have made deadlines (extracted grpc-timeouts,
 * ctx_wire_deadline_set): none may be left in the timer facility, and its
 * thread is stopped (so valgrind sees no thread and no heap at exit). */
static inline void wire_timer_teardown(void) {
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    ASSERT_RC(ctx_cancel_stats(&st), 0);
    assert_int_equal(st.timers_pending, 0);
    ASSERT_RC(ctx_cancel_timer_release(), 0);
}

static inline int release_thread(void **state) {
    (void)state;
    return ctx_thread_release();
}

#endif /* CTX_WIRE_TEST_H */
