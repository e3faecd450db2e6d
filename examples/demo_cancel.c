/* SPDX-License-Identifier: MIT */
/*
 * demo_cancel.c — cancellation and deadlines that travel with the context.
 *
 * One request, given 50 ms to live, fans its work out:
 *
 *   pool group   on a 3-worker pool: a quick lookup (5 ms), slow queries
 *                that would take a second (and the NATS request), and a
 *                report queued behind them
 *   loop         a task that waits 200 ms for a cache, a callback due at
 *                10 ms and one due at 100 ms (call_later)
 *   NATS         a request to a service that takes its time (when the demo
 *                is built with the nats module and nats-server is installed)
 *
 * Nothing is handed to any branch but its work: each one finds the
 * request's id and its cancellation scope in the context it runs in.  At
 * the deadline the scope is cancelled, and every branch stops: the slow
 * queries and the loop task wake with CTX_EDEADLINE, the queued report and
 * the 100 ms callback never start, the NATS request returns at the
 * deadline, not at its own 10 s timeout.  The log shows, per branch, what
 * ran, what was cancelled and why, with times from the request's start;
 * the demo checks that no piece of work started after the deadline.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/pool.h>
#if defined(CTX_HAVE_LOOP)
#include <ctxvar/loop.h>
#endif
#if defined(CTX_HAVE_NATS)
#include <ctxvar/nats.h>
#include <ctxvar/wire.h>

#include "nats_server.h"
#endif

#include "demo.h"

#define BUDGET_NS (50 * 1000000LL)

static ctx_var_t *request_var;
static int64_t start_ns, deadline_ns;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int checks_failed, late_starts;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the scopes' clock */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        int ok_ = (cond);                                                      \
        checks_failed += !ok_;                                                 \
        printf("  %s ", ok_ ? "ok  " : "FAIL");                                \
        printf(__VA_ARGS__);                                                   \
        printf("\n");                                                          \
    } while (0)

/* One log line: the time since the request started, the request the
 * current context belongs to, the branch and what happened. */
static void say(const char *branch, const char *what, int rc) {
    void *id = NULL;
    ctx_var_get(request_var, &id);
    pthread_mutex_lock(&log_lock); /* the time taken inside: lines in order */
    double ms = (double)(now_ns() - start_ns) / 1e6;
    printf("    %+7.1f ms  [%s] %-6s %s%s%s\n", ms, id ? (const char *)id : "no request", branch,
           what, rc ? ": " : "", rc ? ctx_error_name(rc) : "");
    pthread_mutex_unlock(&log_lock);
}

/* Every piece of work calls this when it starts. */
static void started(const char *branch, const char *what) {
    int64_t t = now_ns();
    if (t >= deadline_ns) {
        pthread_mutex_lock(&log_lock);
        late_starts++;
        pthread_mutex_unlock(&log_lock);
    }
    say(branch, what, 0);
}

/* ---- pool ---- */

typedef struct job {
    const char *name;
    int64_t work_ns; /* how long it would take */
    int nats;        /* the NATS request, when it can be made (else a query) */
} job_t;

#if defined(CTX_HAVE_NATS)
static int nats_request(void *arg, void **result);
static int with_nats;
#endif

static int run_job(void *arg, void **result) {
    (void)result;
    const job_t *job = arg;
    char what[128];
    snprintf(what, sizeof what, "%s started", job->name);
    started("pool", what);
    int rc = ctx_cancel_sleep(job->work_ns); /* the work, as long as it may */
    snprintf(what, sizeof what, rc ? "%s stopped" : "%s done", job->name);
    /* Why: a group stopped by a failing task carries its code as the cause. */
    ctx_cancel_scope_t *scope = NULL;
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    if (rc == CTX_ECANCELLED && ctx_cancel_scope_current(&scope) == 0 &&
        ctx_cancel_scope_cause(scope, &cause) == CTX_ECANCELLED && cause.code)
        snprintf(what, sizeof what, "%s stopped (its group stopped: a sibling ended with %s)",
                 job->name, ctx_error_name(cause.code));
    say("pool", what, rc);
    return rc;
}

/* Runs once per task, whether it ran or not: says so for one that never
 * started (the pool skipped it: its scope was cancelled). */
/* In submission order: the three workers take the first three; the lookup
 * ends at 5 ms and its worker takes query B; the report waits. */
#define JOBS 5
#define REPORT 4
static int job_ran[JOBS];
static const job_t jobs[JOBS] = {{"lookup", 5 * 1000000LL, 0},
                                 {"query A", 1000 * 1000000LL, 0},
                                 {"query C", 1000 * 1000000LL, 1},
                                 {"query B", 1000 * 1000000LL, 0},
                                 {"report", 1 * 1000000LL, 0}};

static int run_job_counted(void *arg, void **result) {
    const job_t *job = arg;
    job_ran[job - jobs] = 1;
#if defined(CTX_HAVE_NATS)
    if (job->nats && with_nats)
        return nats_request(arg, result);
#endif
    return run_job(arg, result);
}

static void job_release(void *arg) {
    const job_t *job = arg;
    if (!job_ran[job - jobs]) {
        char what[128];
        snprintf(what, sizeof what, "%s never started (its scope was cancelled; said by the "
                 "thread that dropped it)", job->name);
        say("pool", what, 0);
    }
}

/* ---- loop ---- */

#if defined(CTX_HAVE_LOOP)
static int loop_task_result = 1, late_callback_ran, early_callback_ran;

static int cache_wait(ctx_loop_task_t *task, void *arg, void **result) {
    (void)result;
    int *state = arg;
    if (*state == 0) {
        *state = 1;
        started("loop", "task waits 200 ms for the cache");
        return ctx_loop_task_sleep(task, 200);
    }
    int rc = ctx_loop_task_awaited(task, NULL);
    say("loop", rc ? "task woken before its wait was over" : "task: the cache answered", rc);
    loop_task_result = rc;
    return rc;
}

static void on_time(void *arg) {
    int *ran = arg;
    *ran = 1;
    started("loop", ran == &early_callback_ran ? "callback due at 10 ms ran"
                                                : "callback due at 100 ms ran");
}

static void callback_release(void *arg) {
    if (arg == &late_callback_ran && !late_callback_ran)
        say("loop", "callback due at 100 ms dropped unrun (its scope was cancelled)", 0);
}

static int loop_branch(void) {
    ctx_loop_t *loop = NULL;
    ctx_loop_task_t *task = NULL;
    int state = 0;
    if (ctx_loop_new(NULL, &loop) != 0)
        return -1;
    ctx_loop_call_options_t o = CTX_STRUCT_INIT(ctx_loop_call_options_t);
    o.arg_release = callback_release;
    int rc = ctx_loop_task_new(loop, cache_wait, &state, NULL, &task);
    if (rc == 0)
        rc = ctx_loop_call_later(loop, 10, on_time, &early_callback_ran, &o, NULL);
    if (rc == 0)
        rc = ctx_loop_call_later(loop, 100, on_time, &late_callback_ran, &o, NULL);
    if (rc == 0)
        rc = ctx_loop_run_until_done(loop, ctx_loop_task_future(task));
    if (rc == 0) /* what is left: the 100 ms callback comes due */
        ctx_loop_run(loop, UV_RUN_DEFAULT);
    ctx_loop_task_release(task);
    ctx_loop_close(loop);
    ctx_loop_release(loop);
    return rc;
}
#endif

/* ---- NATS ---- */

#if defined(CTX_HAVE_NATS)
static int nats_result = 1;
static ctx_nats_t *nats_client;

static void slow_service(ctx_nats_t *bridge, natsMsg *msg, void *arg) {
    (void)arg;
    started("nats", "service got the request (the caller's deadline with it)");
    int rc = ctx_cancel_sleep(-1); /* works until the caller's time is up */
    say("nats", "service stopped", rc);
    ctx_nats_respond(bridge, msg, "late", 4); /* nobody waits any more */
}

static int nats_request(void *arg, void **result) {
    (void)arg;
    (void)result;
    started("nats", "request sent (its own timeout: 10 s)");
    natsMsg *reply = NULL;
    nats_result = ctx_nats_request(nats_client, "demo.cancel.slow", "price", 5, 10000, &reply, NULL);
    say("nats", "request ended", nats_result);
    if (nats_result == 0)
        natsMsg_Destroy(reply);
    return nats_result;
}
#endif

/* ---- the request ---- */

typedef struct request_run {
    ctx_pool_t *pool;
    int group_result;
    int loop_result;
} request_run_t;

static void on_request_cancelled(void *arg) {
    (void)arg;
    say("scope", "the request's scope is cancelled", CTX_EDEADLINE);
}

static void *handle_request(void *arg) {
    request_run_t *run = arg;
    ctx_token_t *id_tok = NULL, *scope_tok = NULL;
    ctx_cancel_scope_t *scope = NULL;
    ctx_cancel_options_t budget = CTX_STRUCT_INIT(ctx_cancel_options_t);
    budget.timeout_ns = BUDGET_NS;
    start_ns = now_ns();
    if (ctx_var_set_string(request_var, "req-50ms", &id_tok) != 0 ||
        ctx_cancel_enter_child(&budget, &scope, &scope_tok) != 0)
        return (void *)1;
    ctx_cancel_scope_deadline(scope, &deadline_ns);
    ctx_cancel_callback_t cb;
    ctx_cancel_callback_init(&cb, scope, on_request_cancelled, NULL);
    say("scope", "request starts with 50 ms to live", 0);

    /* The pool: a group in the request's scope. */
    ctx_pool_group_t *group = NULL;
    run->group_result = ctx_pool_group_new(run->pool, NULL, &group);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.arg_release = job_release;
    for (int i = 0; i < JOBS && run->group_result == 0; i++)
        run->group_result = ctx_pool_group_submit(group, run_job_counted, (void *)&jobs[i], &so, NULL);

    /* The loop, on this thread, meanwhile. */
#if defined(CTX_HAVE_LOOP)
    run->loop_result = loop_branch();
#else
    run->loop_result = 0;
    say("loop", "skipped: built without the loop module (Debian: libuv1-dev)", 0);
#endif
    if (group) {
        int rc = ctx_pool_group_wait(group, CTX_WAIT_FOREVER);
        if (run->group_result == 0)
            run->group_result = rc;
        ctx_pool_group_release(group);
    }
    say("scope", "every branch has ended", 0);
    ctx_cancel_callback_clear(&cb);
    ctx_cancel_exit(scope_tok);
    ctx_cancel_scope_release(scope);
    ctx_var_reset(request_var, id_tok);
    ctx_token_release(id_tok);
    return NULL;
}

#if defined(CTX_HAVE_NATS)
/* Starts nats-server and the slow service; 1 if the NATS branch can run. */
static int nats_up(pid_t *server, natsConnection **client_nc, natsConnection **service_nc,
                   ctx_wire_t **wire, ctx_nats_t **service, ctx_nats_sub_t **sub) {
    const char *bin = ctx_example_nats_server_path();
    char url[64];
    if (!bin || (*server = ctx_example_nats_server_start(bin, url, sizeof url)) <= 0) {
        printf("    (NATS branch skipped: nats-server is not installed or did not start)\n");
        return 0;
    }
    return ctx_wire_new(wire) == 0 && ctx_wire_register(*wire, request_var, "request_id") == 0 &&
           ctx_nats_connect(url, client_nc) == 0 &&
           ctx_nats_connect(url, service_nc) == 0 &&
           ctx_nats_new(*client_nc, *wire, &nats_client) == 0 &&
           ctx_nats_new(*service_nc, *wire, service) == 0 &&
           ctx_nats_subscribe(*service, "demo.cancel.slow", NULL, slow_service, NULL, sub) == 0 &&
           natsConnection_Flush(*service_nc) == NATS_OK;
}
#endif

int ctx_demo_cancel(void) {
    printf("\n== cancel: a deadline that travels with the context ==\n");
    checks_failed = 0;
    late_starts = 0;
    memset(job_ran, 0, sizeof job_ran);
    ctx_pool_options_t po = CTX_STRUCT_INIT(ctx_pool_options_t);
    po.threads = 3;
    request_run_t run = {NULL, -1, -1};
    int nats_on = 0;
    if (ctx_var_new_string("request_id", NULL, &request_var) != 0 || ctx_pool_new(&po, &run.pool) != 0) {
        printf("  FAIL cannot set up\n");
        return 1;
    }
#if defined(CTX_HAVE_NATS)
    pid_t server = 0;
    natsConnection *client_nc = NULL, *service_nc = NULL;
    ctx_wire_t *wire = NULL;
    ctx_nats_t *service = NULL;
    ctx_nats_sub_t *sub = NULL;
    nats_on = with_nats = nats_up(&server, &client_nc, &service_nc, &wire, &service, &sub);
#endif
    printf("  One request, 50 ms to live, fanned out to a pool group, a loop%s:\n",
           nats_on ? " and a NATS service" : "");
    handle_request(&run);

    CHECK(run.group_result == CTX_EDEADLINE,
          "the pool group ended with the deadline (%s): the lookup finished, the queries stopped",
          ctx_error_name(run.group_result));
    CHECK(job_ran[0] && job_ran[1] && job_ran[2] && job_ran[3] && !job_ran[REPORT],
          "the report queued behind the slow queries never started");
#if defined(CTX_HAVE_LOOP)
    CHECK(run.loop_result == 0 && loop_task_result == CTX_EDEADLINE,
          "the loop task's 200 ms wait ended at the deadline (%s)", ctx_error_name(loop_task_result));
    CHECK(early_callback_ran && !late_callback_ran,
          "the callback due at 10 ms ran, the one due at 100 ms did not");
#endif
#if defined(CTX_HAVE_NATS)
    if (nats_on)
        CHECK(nats_result == CTX_EDEADLINE,
              "the NATS request ended at the deadline (%s), not at its 10 s timeout",
              ctx_error_name(nats_result));
    if (sub)
        ctx_nats_unsubscribe(sub); /* waits for the service to stop */
    ctx_nats_release(nats_client);
    nats_client = NULL;
    ctx_nats_release(service);
    if (client_nc)
        natsConnection_Destroy(client_nc);
    if (service_nc)
        natsConnection_Destroy(service_nc);
    ctx_wire_release(wire);
    if (server > 0) {
        ctx_example_nats_server_stop(server);
        nats_CloseAndWait(2000);
    }
#endif
    CHECK(late_starts == 0, "no piece of work started after the deadline");
    ctx_pool_release(run.pool);
    ctx_var_release(request_var);
    ctx_cancel_timer_release();
    return checks_failed;
}
