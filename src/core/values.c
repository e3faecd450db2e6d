/* SPDX-License-Identifier: MIT */
/*
 * values.c — ready-made value operations: strings and 64-bit integers.
 *
 * What users otherwise write by hand for the two commonest kinds of value:
 * four or five operations (release, format, clone, encode, decode) and the
 * copying on set.  Both kinds own their values as blocks from ctx_malloc:
 *
 *   string  a NUL-terminated copy of the text, strlen + 1 bytes
 *           (release recomputes the size with strlen)
 *   int64   one int64_t, sizeof(int64_t) bytes
 *
 * so the values of a string variable are plain `char *` for every reader
 * (ctx_var_get, ctx_context_get, iteration), and those of an int64 variable
 * `int64_t *`.  format and encode write the same text (the string itself;
 * the integer in decimal), decode is their inverse, clone copies the block.
 *
 * The operations are reached through functions rather than exported data:
 * a program that refers to a shared library's data object gets a copy of it
 * sized at link time (a copy relocation), which a later, larger
 * ctx_value_ops_t would not fit.
 *
 * The typed helpers (ctx_var_set_string, ctx_var_get_int64, ...) check that
 * the variable was made with the matching operations (its release operation
 * is this file's), so a string is never read as an integer or freed by the
 * wrong hook.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/core.h"

/* ---- strings ---- */

static char *string_copy(const char *text, size_t len) {
    char *s = ctx__malloc(len + 1);
    if (s) {
        memcpy(s, text, len);
        s[len] = '\0';
    }
    return s;
}

static void string_release(void *value, void *user) {
    (void)user;
    if (value)
        ctx__free(value, strlen(value) + 1);
}

static int string_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const char *s = value ? value : "";
    size_t len = strlen(s);
    if (cap) {
        size_t n = len < cap - 1 ? len : cap - 1;
        memcpy(buf, s, n);
        buf[n] = '\0';
    }
    return len > INT32_MAX ? CTX_ELIMIT : (int)len;
}

static int string_clone(const void *value, void **out, void *user) {
    (void)user;
    const char *s = value ? value : "";
    char *copy = string_copy(s, strlen(s));
    if (!copy)
        return CTX_ENOMEM;
    *out = copy;
    return 0;
}

static int string_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    if (memchr(text, '\0', len))
        return CTX_EPARSE;
    char *copy = string_copy(text, len);
    if (!copy)
        return CTX_ENOMEM;
    *out = copy;
    return 0;
}

static const ctx_value_ops_t string_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = string_release,
    .format = string_format,
    .clone = string_clone,
    .encode = string_format,
    .decode = string_decode,
};

const ctx_value_ops_t *ctx_value_ops_string(void) { return &string_ops; }

/* ---- 64-bit integers ---- */

static int64_t *int64_new(int64_t v) {
    int64_t *p = ctx__malloc(sizeof *p);
    if (p)
        *p = v;
    return p;
}

static void int64_release(void *value, void *user) {
    (void)user;
    ctx__free(value, sizeof(int64_t));
}

static int int64_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    if (!value)
        return snprintf(buf, cap, "null");
    return snprintf(buf, cap, "%" PRId64, *(const int64_t *)value);
}

static int int64_clone(const void *value, void **out, void *user) {
    (void)user;
    int64_t *copy = int64_new(value ? *(const int64_t *)value : 0);
    if (!copy)
        return CTX_ENOMEM;
    *out = copy;
    return 0;
}

/* Decimal, an optional '-', no spaces: CTX_EPARSE, or CTX_ELIMIT if the
 * number does not fit in an int64_t. */
static int int64_parse(const char *text, size_t len, int64_t *out) {
    int negative = len && text[0] == '-';
    size_t i = (size_t)negative;
    if (i == len)
        return CTX_EPARSE;
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return CTX_EPARSE;
        unsigned d = (unsigned)(text[i] - '0');
        if (v > (limit - d) / 10)
            return CTX_ELIMIT;
        v = v * 10 + d;
    }
    if (!negative)
        *out = (int64_t)v;
    else
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    return 0;
}

static int int64_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    int64_t v;
    int r = int64_parse(text, len, &v);
    if (r)
        return r;
    int64_t *p = int64_new(v);
    if (!p)
        return CTX_ENOMEM;
    *out = p;
    return 0;
}

static const ctx_value_ops_t int64_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = int64_release,
    .format = int64_format,
    .clone = int64_clone,
    .encode = int64_format,
    .decode = int64_decode,
};

const ctx_value_ops_t *ctx_value_ops_int64(void) { return &int64_ops; }

/* ---- typed helpers ---- */

static int is_string_var(const ctx_var_t *var) {
    return var && var->ops.release == string_release;
}

static int is_int64_var(const ctx_var_t *var) { return var && var->ops.release == int64_release; }

/* A variable with `ops` and, if `def` is not NULL, that default (one share
 * the variable owns; released here if the variable cannot be made). */
static int var_new_owning(const char *name, const ctx_value_ops_t *ops, void *def, int has_def,
                          ctx_var_t **out) {
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.ops = ops;
    o.default_value = def;
    o.has_default = has_def;
    int r = ctx_var_new(name, &o, out);
    if (r && has_def)
        ops->release(def, NULL);
    return r;
}

int ctx_var_new_string(const char *name, const char *default_text, ctx_var_t **out) {
    if (!name || !out)
        return CTX_EINVAL;
    char *def = NULL;
    if (default_text && !(def = string_copy(default_text, strlen(default_text))))
        return CTX_ENOMEM;
    return var_new_owning(name, &string_ops, def, def != NULL, out);
}

int ctx_var_new_int64(const char *name, const int64_t *default_value, ctx_var_t **out) {
    if (!name || !out)
        return CTX_EINVAL;
    int64_t *def = NULL;
    if (default_value && !(def = int64_new(*default_value)))
        return CTX_ENOMEM;
    return var_new_owning(name, &int64_ops, def, def != NULL, out);
}

int ctx_var_set_string(ctx_var_t *var, const char *text, ctx_token_t **token) {
    if (!is_string_var(var) || !text)
        return CTX_EINVAL;
    char *copy = string_copy(text, strlen(text));
    if (!copy)
        return CTX_ENOMEM;
    int r = ctx_var_set(var, copy, token);
    if (r)
        string_release(copy, NULL);
    return r;
}

int ctx_var_set_int64(ctx_var_t *var, int64_t value, ctx_token_t **token) {
    if (!is_int64_var(var))
        return CTX_EINVAL;
    int64_t *p = int64_new(value);
    if (!p)
        return CTX_ENOMEM;
    int r = ctx_var_set(var, p, token);
    if (r)
        int64_release(p, NULL);
    return r;
}

int ctx_context_set_string(ctx_context_t *ctx, ctx_var_t *var, const char *text) {
    if (!ctx || !is_string_var(var) || !text)
        return CTX_EINVAL;
    char *copy = string_copy(text, strlen(text));
    if (!copy)
        return CTX_ENOMEM;
    int r = ctx_context_set(ctx, var, copy);
    if (r)
        string_release(copy, NULL);
    return r;
}

int ctx_context_set_int64(ctx_context_t *ctx, ctx_var_t *var, int64_t value) {
    if (!ctx || !is_int64_var(var))
        return CTX_EINVAL;
    int64_t *p = int64_new(value);
    if (!p)
        return CTX_ENOMEM;
    int r = ctx_context_set(ctx, var, p);
    if (r)
        int64_release(p, NULL);
    return r;
}

int ctx_var_get_string(const ctx_var_t *var, const char **out) {
    if (!is_string_var(var) || !out)
        return CTX_EINVAL;
    void *value;
    int r = ctx_var_get(var, &value);
    if (r >= 0)
        *out = value;
    return r;
}

int ctx_var_get_int64(const ctx_var_t *var, int64_t *out) {
    if (!is_int64_var(var) || !out)
        return CTX_EINVAL;
    void *value;
    int r = ctx_var_get(var, &value);
    if (r >= 0) {
        if (!value) /* set to NULL with a plain ctx_var_set */
            return CTX_EINVAL;
        *out = *(const int64_t *)value;
    }
    return r;
}
