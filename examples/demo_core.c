/* SPDX-License-Identifier: MIT */
/*
 * demo_core.c — the core, shown the way a new user meets it: a request id in
 * a context variable, Python's contextvars examples translated to C, the
 * shallow-copy trap and its way out, and what a log line looks like.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>

#include "demo.h"

static int checks_failed;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        printf("  %s ", (cond) ? "ok  " : "FAIL");                            \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
        if (!(cond))                                                           \
            checks_failed++;                                                   \
    } while (0)

/* ---- values: heap strings, released when no context holds them ---- */

static int released;

static void release_string(void *value, void *user) {
    (void)user;
    released++;
    free(value);
}

static int format_string(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", (const char *)value);
}

static const ctx_value_ops_t string_ops = {.size = sizeof(ctx_value_ops_t),.release = release_string, .format = format_string};

static char *str(const char *s) {
    char *p = malloc(strlen(s) + 1);
    if (!p)
        abort();
    return strcpy(p, s);
}

/* ---- a mutable value: a tiny counter map, with a clone operation ---- */

typedef struct tags {
    int hits;
} tags_t;

static int clones;

static void release_tags(void *value, void *user) {
    (void)user;
    free(value);
}

static int clone_tags(const void *value, void **out, void *user) {
    (void)user;
    tags_t *copy = malloc(sizeof *copy);
    if (!copy)
        return CTX_ENOMEM;
    *copy = *(const tags_t *)value;
    clones++;
    *out = copy;
    return 0;
}

static int format_tags(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "{hits:%d}", ((const tags_t *)value)->hits);
}

static const ctx_value_ops_t tags_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = release_tags, .format = format_tags, .clone = clone_tags};

static ctx_var_t *request_id, *user_name, *tags;

static const char *current_request(void) {
    void *v = NULL;
    int r = ctx_var_get(request_id, &v);
    return r == CTX_ENOTFOUND ? "(none)" : (const char *)v;
}

static void log_line(const char *what) {
    char fields[128];
    ctx_context_format_current(fields, sizeof fields, NULL);
    printf("    log: %-28s [%s]\n", what, fields);
}

/* ---- the parts ---- */

static void basics(void) {
    printf("\n1. get / set / reset (Python: var.get(), var.set(), var.reset(token))\n");
    void *v = NULL;
    CHECK(ctx_var_get(request_id, &v) == CTX_ENOTFOUND,
          "request_id has no default: get says CTX_ENOTFOUND (%s)", ctx_strerror(CTX_ENOTFOUND));
    CHECK(ctx_var_get(user_name, &v) == CTX_DEFAULT && strcmp(v, "anonymous") == 0,
          "user_name falls back to its default \"%s\"", (char *)v);
    ctx_token_t *t1, *t2;
    ctx_var_set(request_id, str("req-1"), &t1);
    ctx_var_set(request_id, str("req-2"), &t2);
    log_line("after two sets");
    CHECK(strcmp(current_request(), "req-2") == 0, "get sees the latest set: %s", current_request());
    ctx_var_reset(request_id, t2);
    CHECK(strcmp(current_request(), "req-1") == 0, "reset(t2) restores %s", current_request());
    int r = ctx_var_reset(request_id, t2);
    CHECK(r == CTX_ETOKENUSED, "reset(t2) again: %s", ctx_strerror(r));
    r = ctx_var_reset(user_name, t1);
    CHECK(r == CTX_ETOKENVAR, "reset of user_name with request_id's token: %s", ctx_strerror(r));
    ctx_var_reset(request_id, t1);
    CHECK(ctx_var_get(request_id, &v) == CTX_ENOTFOUND, "reset(t1) removes the value again");
    ctx_token_release(t1);
    ctx_token_release(t2);
}

static void *handler(void *arg) {
    ctx_var_set(request_id, str((const char *)arg), NULL);
    log_line("inside run");
    return (void *)current_request();
}

static void copy_and_run(void) {
    printf("\n2. copy_context() + ctx.run(fn): the copy takes the sets, the caller does not\n");
    ctx_var_set(request_id, str("outer"), NULL);
    ctx_context_t *ctx;
    ctx_context_copy_current(&ctx);
    void *seen = NULL;
    ctx_context_run(ctx, handler, "inner", &seen);
    CHECK(strcmp(seen, "inner") == 0, "inside run the handler saw %s", (char *)seen);
    CHECK(strcmp(current_request(), "outer") == 0, "outside, the caller still sees %s",
          current_request());
    void *in_copy = NULL;
    ctx_context_get(ctx, request_id, &in_copy);
    CHECK(strcmp(in_copy, "inner") == 0, "the copy keeps the handler's value: ctx[request_id] = %s",
          (char *)in_copy);
    int r = ctx_context_enter(ctx);
    int again = ctx_context_run(ctx, handler, "x", NULL);
    CHECK(again == CTX_EENTERED, "running a context that is already entered: %s", ctx_strerror(again));
    if (r == 0)
        ctx_context_exit(ctx);
    ctx_context_release(ctx);
}

static void *thread_body(void *arg) {
    (void)arg;
    void *v = NULL;
    int r = ctx_var_get(request_id, &v);
    ctx_var_set(request_id, str("set-in-thread"), NULL);
    return (void *)(intptr_t)r;
}

static void threads(void) {
    printf("\n3. a new thread starts in an empty context\n");
    pthread_t th;
    void *status;
    pthread_create(&th, NULL, thread_body, NULL);
    pthread_join(th, &status);
    CHECK((intptr_t)status == CTX_ENOTFOUND, "the thread did not see \"%s\" from main",
          current_request());
    CHECK(strcmp(current_request(), "outer") == 0, "and its own set did not reach main (%s)",
          current_request());
}

static void shallow_copy_trap(void) {
    printf("\n4. the shallow-copy trap, and the way out\n");
    tags_t *t = calloc(1, sizeof *t);
    ctx_var_set(tags, t, NULL);
    ctx_context_t *snapshot;
    ctx_context_copy_current(&snapshot);
    void *v;
    ctx_var_get(tags, &v);
    ((tags_t *)v)->hits++; /* plain get + mutate: shared with the snapshot! */
    void *in_snapshot;
    ctx_context_get(snapshot, tags, &in_snapshot);
    CHECK(((tags_t *)in_snapshot)->hits == 1,
          "mutating through get changed the snapshot too (hits=%d): values are shared, as in Python",
          ((tags_t *)in_snapshot)->hits);
    void *mine;
    ctx_var_get_for_write(tags, &mine);
    ((tags_t *)mine)->hits += 10;
    void *mine_again;
    ctx_var_get_for_write(tags, &mine_again);
    ((tags_t *)mine_again)->hits += 10;
    CHECK(((tags_t *)in_snapshot)->hits == 1 && ((tags_t *)mine)->hits == 21,
          "get_for_write cloned once (clones=%d): here hits=%d, snapshot still %d", clones,
          ((tags_t *)mine)->hits, ((tags_t *)in_snapshot)->hits);
    CHECK(mine == mine_again && clones == 1, "the second write reused the private clone");
    log_line("with a mutable value");
    ctx_context_release(snapshot);
}

static void release_when_last_holder_dies(void) {
    printf("\n5. a value is released exactly when the last context holding it goes\n");
    ctx_context_t *a, *b;
    ctx_context_new(&a);
    ctx_context_set(a, request_id, str("req-alice"));
    ctx_context_copy(a, &b);
    int before = released;
    ctx_context_release(a);
    CHECK(released == before, "one copy released: value still alive (released %d)", released - before);
    ctx_context_release(b);
    CHECK(released == before + 1, "last copy released: value released once (released %d)",
          released - before);
}

int ctx_demo_core(void) {
    printf("== core: context variables ==\n");
    ctx_var_options_t with_default = {.size = sizeof(ctx_var_options_t), .default_value = "anonymous", .has_default = 1};
    ctx_var_options_t strings = {.size = sizeof(ctx_var_options_t), .ops = &string_ops};
    ctx_var_options_t tag_options = {.size = sizeof(ctx_var_options_t), .ops = &tags_ops};
    if (ctx_var_new("request_id", &strings, &request_id) ||
        ctx_var_new("user", &with_default, &user_name) ||
        ctx_var_new("tags", &tag_options, &tags)) {
        printf("could not create variables\n");
        return 1;
    }
    basics();
    copy_and_run();
    threads();
    shallow_copy_trap();
    release_when_last_holder_dies();
    ctx_var_release(request_id);
    ctx_var_release(user_name);
    ctx_var_release(tags);
    return checks_failed;
}
