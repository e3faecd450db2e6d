/* SPDX-License-Identifier: MIT */
/*
 * demo_loop.c — context through an event loop: a few "requests" handled as
 * tasks interleaving on one libuv loop thread, the way an asyncio server
 * handles connections.  Each request sets its id and user in context
 * variables once, then waits on a timer, schedules a callback with
 * call_later, arms a plain libuv timer, offloads a "database query" to a
 * thread pool and resumes on the loop with its result.  Every log line is
 * printed with the context it ran in and checked against the request that
 * owns it; the closing line says how many carried the wrong request.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>

#include "demo.h"

#if defined(CTX_HAVE_LOOP)

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ctxvar.h>
#include <ctxvar/loop.h>
#include <ctxvar/pool.h>

#define REQUESTS 5

static ctx_var_t *request_var;
static ctx_var_t *user_var;
static ctx_loop_t *loop;
static ctx_pool_t *pool;
static pthread_t loop_thread;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int lines;
static int wrong_lines;

static int format_text(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", (const char *)value);
}

static const ctx_value_ops_t text_ops = {.size = sizeof(ctx_value_ops_t),.format = format_text};

static const char *const request_ids[REQUESTS] = {"req-1", "req-2", "req-3", "req-4", "req-5"};
static const char *const users[REQUESTS] = {"ada", "grace", "edsger", "barbara", "donald"};

/* One log line, prefixed with the current context, checked against the
 * request that owns it. */
static void log_line(const char *expected, const char *what) {
    char ctx_text[128];
    void *request = NULL;
    ctx_context_format_current(ctx_text, sizeof ctx_text, NULL);
    int right = ctx_var_get(request_var, &request) == CTX_VALUE && request == expected;
    const char *where = pthread_equal(pthread_self(), loop_thread) ? "loop" : "pool";
    pthread_mutex_lock(&log_lock);
    lines++;
    wrong_lines += !right;
    printf("  %s [%s] %s%s\n", where, ctx_text, what, right ? "" : "   <-- WRONG REQUEST");
    pthread_mutex_unlock(&log_lock);
}

/* ---- one request: a task and what it starts ---- */

typedef struct request {
    int index;
    int state;
    ctx_loop_uv_timer_t timer;
    char rows[48];
} request_t;

static const char *id_of(const request_t *r) { return request_ids[r->index]; }

static void metrics_callback(void *arg) {
    log_line(id_of(arg), "call_later callback: metrics recorded");
}

static void uv_timer_fired(uv_timer_t *handle) {
    request_t *r = handle->data;
    log_line(id_of(r), "libuv timer callback (ctx_loop_uv_timer_start)");
    ctx_loop_uv_timer_close(&r->timer, NULL);
}

/* The "database query", on a pool worker, in a copy of the task's context. */
static int query(void *arg, void **result) {
    request_t *r = arg;
    struct timespec pause = {0, 1000000}; /* the database takes 1 ms */
    log_line(id_of(r), "querying the database on a pool worker");
    nanosleep(&pause, NULL);
    snprintf(r->rows, sizeof r->rows, "%d rows for %s", 3 + r->index, users[r->index]);
    *result = r->rows;
    return 0;
}

static int handle_request(ctx_loop_task_t *task, void *arg, void **result) {
    request_t *r = arg;
    char what[96];
    void *rows = NULL;
    switch (r->state++) {
    case 0:
        ctx_var_set(request_var, (void *)id_of(r), NULL);
        ctx_var_set(user_var, (void *)users[r->index], NULL);
        log_line(id_of(r), "accepted; reading the request (a 2 ms timer)");
        return ctx_loop_task_sleep(task, 2);
    case 1:
        log_line(id_of(r), "headers parsed; offloading the query");
        ctx_loop_call_later(loop, 1, metrics_callback, r, NULL, NULL);
        ctx_loop_uv_timer_init(ctx_loop_uv(loop), &r->timer);
        r->timer.timer.data = r;
        ctx_loop_uv_timer_start(&r->timer, uv_timer_fired, 2, 0);
        return ctx_loop_task_offload(task, pool, query, r, NULL);
    case 2:
        if (ctx_loop_task_awaited(task, &rows) != 0)
            return CTX_ECALLBACK;
        snprintf(what, sizeof what, "back on the loop with \"%s\"", (const char *)rows);
        log_line(id_of(r), what);
        return ctx_loop_task_yield(task);
    default:
        log_line(id_of(r), "reply sent");
        *result = r;
        return 0;
    }
}

int ctx_demo_loop(void) {
    printf("\n== loop: requests as tasks on one libuv loop ==\n");
    int failed = 0;
    ctx_var_options_t opts = {.size = sizeof(ctx_var_options_t), .ops = &text_ops};
    ctx_pool_options_t pool_opts = CTX_STRUCT_INIT(ctx_pool_options_t);
    pool_opts.threads = 2;
    if (ctx_var_new("request", &opts, &request_var) || ctx_var_new("user", &opts, &user_var) ||
        ctx_loop_new(NULL, &loop) || ctx_pool_new(&pool_opts, &pool)) {
        printf("  FAIL: setup\n");
        return 1;
    }
    loop_thread = pthread_self();
    printf("  %d requests, each a task with its own context, interleaving on this thread;\n"
           "  each offloads a query to a pool of 2 workers (\"pool\" lines run there):\n",
           REQUESTS);

    request_t requests[REQUESTS];
    ctx_loop_task_t *tasks[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        memset(&requests[i], 0, sizeof requests[i]);
        requests[i].index = i;
        if (ctx_loop_task_new(loop, handle_request, &requests[i], NULL, &tasks[i]) != 0) {
            printf("  FAIL: ctx_loop_task_new\n");
            return 1;
        }
    }
    ctx_loop_run(loop, UV_RUN_DEFAULT);

    int completed = 0;
    for (int i = 0; i < REQUESTS; i++) {
        completed += ctx_loop_task_result(tasks[i], NULL) == 0;
        ctx_loop_task_release(tasks[i]);
    }
    void *leak = NULL;
    int base_clean = ctx_var_get(request_var, &leak) == CTX_ENOTFOUND;
    int expected_lines = REQUESTS * 7;
    printf("  %s %d of %d requests completed\n", completed == REQUESTS ? "ok  " : "FAIL", completed,
           REQUESTS);
    printf("  %s the loop thread's own context never saw a request id\n",
           base_clean ? "ok  " : "FAIL");
    printf("  %s %d log lines (expected %d), %d carried the wrong request\n",
           wrong_lines == 0 && lines == expected_lines ? "ok  " : "FAIL", lines, expected_lines,
           wrong_lines);
    failed = completed != REQUESTS || !base_clean || wrong_lines != 0 || lines != expected_lines;

    ctx_loop_close(loop);
    ctx_loop_release(loop);
    ctx_pool_release(pool);
    ctx_var_release(request_var);
    ctx_var_release(user_var);
    return failed;
}

#else /* built without the loop module (no libuv) */

int ctx_demo_loop(void) {
    printf("\n== loop: skipped (built without libuv) ==\n");
    return 0;
}

#endif
