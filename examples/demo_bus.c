/* SPDX-License-Identifier: MIT */
/*
 * demo_bus.c — events with context: the agent-framework story, fixed.
 *
 * A few "requests" run at once, each on a server thread of its own.  Each
 * sets its request id, subscribes a *scoped* listener to "progress.*" (it
 * lives in the request's context, like the framework's listener in a
 * contextvar), and reports progress from everywhere its work goes: the
 * handler itself, a task on a shared thread pool, an asynchronous publish
 * through that pool, a callback a "framework" runs on a thread of its own
 * (bound with ctx_pool_bound_new), and — when built with the loop module — an
 * asynchronous publish delivered on a libuv loop.  Each listener prints what
 * it receives, with the context it runs in.
 *
 * Then the bug the framework's users patched by hand: a callback handed to
 * the framework *without* binding runs in the worker's empty context, and
 * its progress event reaches no request's listener (only the global audit
 * listener sees it).
 *
 * The part returns 0 only if every request's listener received exactly its
 * own request's events, each in its own request's context, and none of
 * another's.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/bus.h>
#include <ctxvar/pool.h>
#if defined(CTX_BUS_HAVE_LOOP)
#include <ctxvar/loop.h>
#define HAVE_LOOP 1
#else
#define HAVE_LOOP 0
#endif

#include "demo.h"

#define REQUESTS 3
#define POOL_STEPS 2
/* handler start + done, POOL_STEPS pool steps, async via the pool, the
 * bound callback, and on the loop when there is one */
#define EVENTS_PER_REQUEST (2 + POOL_STEPS + 1 + 1 + HAVE_LOOP)

static const char *const request_ids[REQUESTS] = {"req-1", "req-2", "req-3"};

static ctx_var_t *request_var;
static ctx_bus_t *bus;
static ctx_pool_t *pool;
#if HAVE_LOOP
static ctx_loop_t *loop;
#endif

/* ---- values: static strings, formatted as themselves ---- */

static int format_text(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    return snprintf(buf, cap, "%s", (const char *)value);
}

static const ctx_value_ops_t text_ops = {.size = sizeof(ctx_value_ops_t),.format = format_text};

static const char *current_request(void) {
    void *v = NULL;
    return ctx_var_get(request_var, &v) == CTX_VALUE ? v : "(none)";
}

/* ---- progress events: what the publishing code believed it served ---- */

typedef struct progress {
    const char *request; /* the request id in the publisher's context */
    const char *where;
    int step;
} progress_t;

static void publish_progress(const char *topic, const char *where, int step, int how) {
    progress_t *p = malloc(sizeof *p);
    ctx_bus_event_t *ev = NULL;
    if (!p)
        return;
    *p = (progress_t){current_request(), where, step};
    if (ctx_bus_event_new(topic, p, free, &ev) != 0) {
        free(p);
        return;
    }
    if (how == 0)
        ctx_bus_publish(bus, ev);
    else if (how == 1)
        ctx_bus_publish_pool(bus, ev, pool);
#if HAVE_LOOP
    else
        ctx_bus_publish_loop(bus, ev, loop);
#endif
    ctx_bus_event_release(ev); /* an async delivery keeps its own */
}

/* ---- each request's listener: collects lines, checks ownership ---- */

typedef struct request_log {
    const char *id;
    pthread_mutex_t lock;
    char lines[16][128];
    int count;
    int foreign; /* events of another request, or run in another context */
} request_log_t;

static request_log_t logs[REQUESTS];

static int request_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    request_log_t *log = user;
    const progress_t *p = ctx_bus_event_data(event);
    const char *running_in = current_request();
    int mine = strcmp(p->request, log->id) == 0 && strcmp(running_in, log->id) == 0;
    pthread_mutex_lock(&log->lock);
    if (!mine)
        log->foreign++;
    if (log->count < 16)
        snprintf(log->lines[log->count++], sizeof log->lines[0],
                 "%-18s step %d  from %-28s runs in request=%s%s", ctx_bus_event_topic(event),
                 p->step, p->where, running_in, mine ? "" : "  FOREIGN");
    pthread_mutex_unlock(&log->lock);
    return 0;
}

/* ---- the global audit ---- */

static pthread_mutex_t audit_lock = PTHREAD_MUTEX_INITIALIZER;
static int audit_events, audit_orphans;

static int audit_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)user;
    const progress_t *p = ctx_bus_event_data(event);
    pthread_mutex_lock(&audit_lock);
    audit_events++;
    audit_orphans += strcmp(p->request, "(none)") == 0;
    pthread_mutex_unlock(&audit_lock);
    return 0;
}

/* ---- the places a request's work goes ---- */

static int pool_step(void *arg, void **result) {
    (void)result;
    publish_progress("progress.query", "a pool task (worker)", (int)(intptr_t)arg, 0);
    return 0;
}

/* A callback library: runs fn(arg) on a thread of its own, which starts in
 * an empty context (as any thread does). */
static void run_on_framework_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) == 0)
        pthread_join(t, NULL);
}

static void *bound_callback(void *arg, void *call_arg) {
    (void)arg;
    (void)call_arg;
    publish_progress("progress.callback", "the framework thread, bound", 1, 0);
    return NULL;
}

static void *unbound_callback(void *arg) {
    (void)arg;
    publish_progress("progress.callback", "the framework thread, UNBOUND", 1, 0);
    ctx_thread_release();
    return NULL;
}

static void *request_main(void *arg) {
    request_log_t *log = arg;
    ctx_var_set(request_var, (void *)log->id, NULL);
    ctx_bus_subscribe_options_t scoped = {sizeof(ctx_bus_subscribe_options_t), CTX_BUS_SCOPED, NULL};
    ctx_bus_subscribe(bus, "progress.*", request_listener, log, &scoped, NULL);

    publish_progress("progress.start", "the handler", 0, 0);
    ctx_pool_future_t *steps[POOL_STEPS];
    for (int i = 0; i < POOL_STEPS; i++)
        if (ctx_pool_submit(pool, pool_step, (void *)(intptr_t)(i + 1), &steps[i]) != 0)
            steps[i] = NULL;
    publish_progress("progress.async", "the handler, via the pool", 1, 1);
#if HAVE_LOOP
    publish_progress("progress.ui", "the handler, via the loop", 1, 2);
#endif
    ctx_pool_bound_t *bound = NULL;
    if (ctx_pool_bound_new(bound_callback, NULL, NULL, &bound) == 0) {
        run_on_framework_thread(ctx_pool_bound_trampoline, bound);
        ctx_pool_bound_release(bound);
    }
    for (int i = 0; i < POOL_STEPS; i++) {
        ctx_pool_future_wait(steps[i], CTX_WAIT_FOREVER);
        ctx_pool_future_release(steps[i]);
    }
    publish_progress("progress.done", "the handler", 9, 0);
    ctx_thread_release(); /* the request ends; its listener goes with it */
    return NULL;
}

int ctx_demo_bus(void) {
    printf("\n== bus: events with context-scoped listeners ==\n");
    ctx_var_options_t vo = {.size = sizeof(ctx_var_options_t), .ops = &text_ops};
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 2;
    if (ctx_var_new("request", &vo, &request_var) || ctx_bus_new(NULL, &bus) ||
        ctx_pool_new(&po, &pool)) {
        printf("  FAIL: setup\n");
        return 1;
    }
#if HAVE_LOOP
    if (ctx_loop_new(NULL, &loop) != 0) {
        printf("  FAIL: ctx_loop_new\n");
        return 1;
    }
#endif
    ctx_bus_listener_t *audit = NULL;
    ctx_bus_subscribe(bus, "progress.*", audit_listener, NULL, NULL, &audit);
    printf("  %d requests at once, each on its own server thread, each with a scoped\n"
           "  listener on \"progress.*\".  Progress is published from the handler, from\n"
           "  pool tasks, asynchronously through the pool%s, and from a\n"
           "  callback the \"framework\" runs on a thread of its own (bound).\n",
           REQUESTS, HAVE_LOOP ? " and a loop" : "");

    pthread_t threads[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        memset(&logs[i], 0, sizeof logs[i]);
        logs[i].id = request_ids[i];
        pthread_mutex_init(&logs[i].lock, NULL);
    }
    for (int i = 0; i < REQUESTS; i++)
        pthread_create(&threads[i], NULL, request_main, &logs[i]);
    for (int i = 0; i < REQUESTS; i++)
        pthread_join(threads[i], NULL);
#if HAVE_LOOP
    ctx_loop_run(loop, UV_RUN_DEFAULT); /* delivers the loop's events here */
#endif
    ctx_bus_wait_idle(bus, CTX_WAIT_FOREVER);

    /* The bug, reproduced: a callback handed over without binding. */
    run_on_framework_thread(unbound_callback, NULL);

    int foreign = 0, wrong_counts = 0;
    for (int i = 0; i < REQUESTS; i++) {
        printf("  %s's listener received:\n", logs[i].id);
        for (int k = 0; k < logs[i].count; k++)
            printf("    %s\n", logs[i].lines[k]);
        foreign += logs[i].foreign;
        wrong_counts += logs[i].count != EVENTS_PER_REQUEST;
        pthread_mutex_destroy(&logs[i].lock);
    }
    int audit_expected = REQUESTS * EVENTS_PER_REQUEST + 1;
    int ok_own = foreign == 0 && wrong_counts == 0;
    int ok_orphan = audit_orphans == 1 && audit_events == audit_expected;
    printf("  %s every request's listener got its own %d events, each in its own context; "
           "%d foreign\n", ok_own ? "ok  " : "FAIL", EVENTS_PER_REQUEST, foreign);
    printf("  %s the unbound callback's event reached no request (the global audit saw it:\n"
           "       %d events in all, %d from an empty context)\n",
           ok_orphan ? "ok  " : "FAIL", audit_events, audit_orphans);

    ctx_bus_listener_release(audit);
    ctx_bus_release(bus);
    ctx_pool_release(pool);
#if HAVE_LOOP
    ctx_loop_close(loop);
    ctx_loop_release(loop);
#endif
    ctx_var_release(request_var);
    return ok_own && ok_orphan ? 0 : 1;
}
