/* SPDX-License-Identifier: MIT */
/*
 * demo_pool.c — context across threads: a few concurrent "requests", each
 * with its own request id and user in context variables, fan their work out
 * to one shared thread pool and hand a callback to a library that calls it
 * from its own thread.  Every log line is printed with the context it ran
 * in (ctx_context_format_current), and checked against the request that owns it;
 * the closing line says how many lines carried the wrong request.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/pool.h>

#include "demo.h"

#define REQUESTS 4
#define STEPS 3

static ctx_var_t *request_var;
static ctx_var_t *user_var;
static ctx_pool_t *pool;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int lines;
static int wrong_lines;

/* ---- values: static strings, formatted as themselves ---- */

static int format_text(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", (const char *)value);
}

static const ctx_value_ops_t text_ops = {.size = sizeof(ctx_value_ops_t),.format = format_text};

static const char *const request_ids[REQUESTS] = {"req-1", "req-2", "req-3", "req-4"};
static const char *const users[REQUESTS] = {"ada", "grace", "edsger", "barbara"};

/* Prints one log line prefixed with the current context, and counts it as
 * wrong unless the context's request is `expected`. */
static void log_line(const char *expected, const char *what) {
    char ctx_text[128];
    void *request = NULL;
    ctx_context_format_current(ctx_text, sizeof ctx_text, NULL);
    int right = ctx_var_get(request_var, &request) == CTX_VALUE && request == expected;
    pthread_mutex_lock(&log_lock);
    lines++;
    wrong_lines += !right;
    printf("  [%s] %s%s\n", ctx_text, what, right ? "" : "   <-- WRONG REQUEST");
    pthread_mutex_unlock(&log_lock);
}

/* ---- the work a request fans out ---- */

typedef struct step {
    const char *request; /* which request this step belongs to (for the check) */
    int number;
} step_t;

static int run_step(void *arg, void **result) {
    step_t *s = arg;
    char what[64];
    snprintf(what, sizeof what, "step %d of %d on a pool worker", s->number, STEPS);
    log_line(s->request, what);
    *result = NULL;
    return 0;
}

/* A "library" that calls a `void (*)(void *)` callback from a thread of its
 * own, the way many C APIs do. */
typedef struct library_call {
    void (*callback)(void *);
    void *user_data;
} library_call_t;

static void *library_thread(void *arg) {
    library_call_t *call = arg;
    call->callback(call->user_data);
    return NULL;
}

static void *on_library_event(void *arg, void *call_arg) {
    (void)call_arg;
    log_line(arg, "callback from a library thread (bound callable)");
    return NULL;
}

/* ---- one request ---- */

static void *handle_request(void *arg) {
    int i = (int)(intptr_t)arg;
    const char *id = request_ids[i];
    /* The request's thread starts in an empty context: set what it is. */
    if (ctx_var_set(request_var, (void *)id, NULL) != 0 ||
        ctx_var_set(user_var, (void *)users[i], NULL) != 0)
        return (void *)1;
    log_line(id, "request received");

    step_t steps[STEPS];
    ctx_pool_future_t *futures[STEPS];
    for (int s = 0; s < STEPS; s++) {
        steps[s] = (step_t){id, s + 1};
        if (ctx_pool_submit(pool, run_step, &steps[s], &futures[s]) != 0)
            return (void *)1;
    }

    /* Hand a callback to the library: bound now, called on its thread. */
    ctx_pool_bound_t *bound = NULL;
    if (ctx_pool_bound_new(on_library_event, (void *)id, NULL, &bound) != 0)
        return (void *)1;
    library_call_t call = {ctx_pool_bound_trampoline_void, bound};
    pthread_t library;
    pthread_create(&library, NULL, library_thread, &call);
    pthread_join(library, NULL);
    ctx_pool_bound_release(bound);

    for (int s = 0; s < STEPS; s++) {
        ctx_pool_future_wait(futures[s], CTX_WAIT_FOREVER);
        ctx_pool_future_release(futures[s]);
    }
    log_line(id, "request done");
    return NULL;
}

/* ---- what a task sees when propagation is switched off ---- */

static int peek_request(void *arg, void **result) {
    (void)arg;
    void *request = NULL;
    *result = ctx_var_get(request_var, &request) == CTX_VALUE ? request : NULL;
    return 0;
}

int ctx_demo_pool(void) {
    printf("\n== pool: context follows work across threads ==\n");
    ctx_var_options_t text = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &text_ops};
    if (ctx_var_new("request", &text, &request_var) != 0 ||
        ctx_var_new("user", &text, &user_var) != 0)
        return 1;
    ctx_pool_options_t options = {.size = sizeof(ctx_pool_options_t), .threads = 2};
    if (ctx_pool_new(&options, &pool) != 0)
        return 1;
    printf("  %d requests at once, each fanning %d steps out to one pool of 2 workers:\n",
           REQUESTS, STEPS);

    ctx_pool_thread_t *threads[REQUESTS];
    int failures = 0;
    for (int i = 0; i < REQUESTS; i++)
        if (ctx_pool_thread_create(handle_request, (void *)(intptr_t)i, 0, &threads[i]) != 0)
            return 1;
    for (int i = 0; i < REQUESTS; i++) {
        void *r = NULL;
        if (ctx_pool_thread_join(threads[i], &r) != 0 || r != NULL)
            failures++;
    }

    /* The opt-out, for contrast: the same pool, one submit without
     * propagation.  (Not a log line of any request, so not counted.) */
    ctx_var_set(request_var, (void *)request_ids[0], NULL);
    ctx_pool_submit_options_t off = {.size = sizeof(ctx_pool_submit_options_t), .propagation = CTX_POOL_PROPAGATE_NONE};
    ctx_pool_future_t *f = NULL;
    void *seen = (void *)"?";
    if (ctx_pool_submit_ex(pool, peek_request, NULL, &off, &f) == 0) {
        ctx_pool_future_wait(f, CTX_WAIT_FOREVER);
        ctx_pool_future_result(f, &seen);
        ctx_pool_future_release(f);
    }
    printf("  (with CTX_POOL_PROPAGATE_NONE a task sees request = %s: the opt-out)\n",
           seen ? (const char *)seen : "<unset>");
    failures += seen != NULL;

    ctx_pool_stats_t st = CTX_STRUCT_INIT(ctx_pool_stats_t);
    ctx_pool_stats(pool, &st);
    ctx_pool_release(pool);
    ctx_var_release(request_var);
    ctx_var_release(user_var);

    int expected = REQUESTS * (STEPS + 3);
    printf("  pool: %llu tasks completed, %llu failed, %llu cancelled\n",
           (unsigned long long)st.completed, (unsigned long long)st.failed,
           (unsigned long long)st.cancelled);
    printf("  %d log lines (expected %d), %d carried the wrong request\n", lines,
           expected, wrong_lines);
    return failures || wrong_lines != 0 || lines != expected;
}
