/* SPDX-License-Identifier: MIT */
/*
 * test_cancel.c — requests and handlers under cancellation scopes
 * (ctxvar/cancel.h), over a real nats-server on
 * loopback: a client connection and a service connection in one process
 * (every message goes through the server).
 *
 *   cancelled      a request whose scope another thread cancels while it
 *                  waits returns CTX_ECANCELLED, after the cancel and
 *                  before its own timeout;
 *   deadline       a request with a 50 ms scope deadline and a long
 *                  timeout returns CTX_EDEADLINE, not before the deadline
 *                  and before its own timeout; the other way round it is
 *                  CTX_ETIMEDOUT;
 *   not sent       a request in a cancelled scope, or past its deadline,
 *                  sends nothing (the responder counts) — also while the
 *                  timer thread is late (held in a slow callback), so the
 *                  scope has not been cancelled yet: the clock decides, and
 *                  a request that waits ends at the deadline by itself;
 *   nothing late   requests made in a loop under a deadline: every one that
 *                  reached the responder carried time left (it was injected
 *                  before the deadline), every call that got a reply began
 *                  before the deadline, and the loop ends with
 *                  CTX_EDEADLINE at or after it (clock readings, not
 *                  durations);
 *   handler        a handler runs in a scope with the caller's remaining
 *                  deadline (never more time than the caller had, by clock
 *                  readings: D_handler <= D_caller + (arrival - call)); it,
 *                  a thread started with its context and a pool task see
 *                  ctx_cancel_check() turn CTX_EDEADLINE, never before that
 *                  deadline; its late reply is dropped and the next request
 *                  is unaffected;
 *   many           requests with scopes from several threads at once each
 *                  get their own reply (the bridge's reply subscription);
 *   closed         closing the connection wakes a waiting request
 *                  (CTX_ECLOSED), and the bridge is then released at once.
 */
#include "nats_test.h"

#include <stdatomic.h>

#include <ctxvar/pool.h>

#define MS 1000000ll

static struct {
    int ready;
    server_t server;
    vars_t v;
    natsConnection *nc, *service_nc;
    ctx_nats_t *b, *service;
    ctx_nats_sub_t *hold, *stamp, *work;
    ctx_pool_t *pool;
} G;

#define NEED_SERVER() NATS_NEED_SERVER(G.ready)

/* ====================================================================== */
/* The service side                                                       */
/* ====================================================================== */

/* "ctx.cancel.hold": counts, never replies (a request waits on it). */
static atomic_int held;

static void on_hold(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)msg, (void)user;
    atomic_fetch_add(&held, 1);
}

/* "ctx.cancel.stamp": replies "<grpc-timeout ns or -1> <its remaining or
 * -1> <its arrival clock>"; payload "count" replies the number of stamped
 * requests and how many came without time left. */
static int stamped, stamped_without_time;

static void on_stamp(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    char text[16], out[128];
    payload(msg, text, sizeof text);
    if (strcmp(text, "count") == 0) {
        snprintf(out, sizeof out, "%d %d", stamped, stamped_without_time);
    } else {
        int64_t remaining = -1, sent = -1;
        ctx_cancel_remaining(&remaining);
        int64_t arrival = ctx_wire_now_ns();
        const char *t = NULL;
        if (natsMsgHeader_Get(msg, "grpc-timeout", &t) == NATS_OK)
            ctx_wire_timeout_parse(t, strlen(t), &sent);
        stamped++;
        if (sent <= 0)
            stamped_without_time++;
        snprintf(out, sizeof out, "%lld %lld %lld", (long long)sent, (long long)remaining,
                 (long long)arrival);
    }
    ctx_nats_respond(b, msg, out, (int)strlen(out));
}

/* "ctx.cancel.work": a handler that works until the caller's time is up. */
typedef struct seen {
    int64_t arrival;   /* clock after reading the remaining time */
    int64_t remaining; /* ctx_cancel_remaining at the start */
    int64_t deadline;  /* its scope's deadline */
    int check_first;   /* ctx_cancel_check at the start */
    int64_t check_first_at;
    int slept;         /* ctx_cancel_sleep(-1) */
    int64_t woke;      /* clock after it */
    int thread_slept;  /* the same in a thread started with its context */
    int64_t thread_woke;
    int task_ran;      /* the pool task ran (else it ended cancelled) */
    int task_slept;
    int64_t task_woke;
    int replied;       /* ctx_nats_respond's result, after all that */
} seen_t;

static seen_t work_seen;
static atomic_int work_done;

static void *sleep_in_copy(void *arg) {
    int64_t *woke = arg;
    int rc = ctx_cancel_sleep(-1);
    *woke = ctx_wire_now_ns();
    return (void *)(intptr_t)rc;
}

static int task_sleep(void *arg, void **result) {
    seen_t *s = arg;
    (void)result;
    s->task_ran = 1;
    s->task_slept = ctx_cancel_sleep(-1);
    s->task_woke = ctx_wire_now_ns();
    return 0;
}

static void *wait_future(void *arg) {
    return (void *)(intptr_t)ctx_pool_future_wait(arg, -1);
}

static void on_work(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    seen_t *s = &work_seen;
    s->remaining = -1;
    ctx_cancel_remaining(&s->remaining);
    s->arrival = ctx_wire_now_ns();
    s->deadline = -1;
    ctx_wire_deadline_get(ctx_nats_wire(b), NULL, &s->deadline);
    s->check_first = ctx_cancel_check();
    s->check_first_at = ctx_wire_now_ns();
    /* work started on its behalf: a thread with a copy of its context, and
     * a pool task (which copies the submitter's context) */
    ctx_pool_thread_t *t = NULL;
    int thread_ok = ctx_pool_thread_create(sleep_in_copy, &s->thread_woke,
                                           CTX_POOL_THREAD_INHERIT, &t) == 0;
    ctx_pool_future_t *f = NULL;
    int task_ok = ctx_pool_submit(G.pool, task_sleep, s, &f) == 0;
    s->slept = ctx_cancel_sleep(-1);
    s->woke = ctx_wire_now_ns();
    void *r = (void *)(intptr_t)1;
    if (thread_ok)
        ctx_pool_thread_join(t, &r);
    s->thread_slept = (int)(intptr_t)r;
    if (task_ok) {
        /* waited for outside the (cancelled) scope: Go's WithoutCancel */
        ctx_context_t *detached = NULL;
        if (ctx_cancel_context_detach(NULL, &detached) == 0) {
            ctx_context_run(detached, wait_future, f, NULL);
            ctx_context_release(detached);
        }
        ctx_pool_future_release(f);
    }
    s->replied = ctx_nats_respond(b, msg, "late", 4);
    atomic_store(&work_done, 1);
}

/* ====================================================================== */
/* Setup                                                                  */
/* ====================================================================== */

static int group_setup(void **state) {
    (void)state;
    if (!nats_server_path())
        return 0; /* every test skips */
    if (server_start(&G.server, 0) != 0)
        return -1;
    if (vars_init(&G.v) != 0 || ctx_nats_connect(G.server.url, &G.nc) != 0 ||
        ctx_nats_connect(G.server.url, &G.service_nc) != 0 ||
        ctx_nats_new(G.nc, G.v.wire, &G.b) != 0 ||
        ctx_nats_new(G.service_nc, G.v.wire, &G.service) != 0 ||
        ctx_pool_new(NULL, &G.pool) != 0)
        return -1;
    if (ctx_nats_subscribe(G.service, "ctx.cancel.hold", NULL, on_hold, NULL, &G.hold) != 0 ||
        ctx_nats_subscribe(G.service, "ctx.cancel.stamp", NULL, on_stamp, NULL, &G.stamp) != 0 ||
        ctx_nats_subscribe(G.service, "ctx.cancel.work", NULL, on_work, NULL, &G.work) != 0 ||
        natsConnection_Flush(G.service_nc) != NATS_OK)
        return -1;
    G.ready = 1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (G.hold)
        ctx_nats_unsubscribe(G.hold);
    if (G.stamp)
        ctx_nats_unsubscribe(G.stamp);
    if (G.work)
        ctx_nats_unsubscribe(G.work);
    if (G.pool)
        ctx_pool_release(G.pool);
    ctx_nats_release(G.b);
    ctx_nats_release(G.service);
    if (G.nc)
        natsConnection_Destroy(G.nc);
    if (G.service_nc)
        natsConnection_Destroy(G.service_nc);
    if (G.server.pid)
        server_stop(&G.server);
    if (G.v.wire)
        vars_done(&G.v);
    return release_thread_and_timer();
}

/* ====================================================================== */
/* The client side                                                        */
/* ====================================================================== */

/* A request made on its own thread, in a context with a scope of its own
 * (made by `make`), timed by clock readings. */
typedef struct call {
    const char *subject;
    int64_t timeout_ms;
    int64_t scope_timeout_ns; /* 0: no deadline */
    ctx_cancel_scope_t *scope; /* the request's scope, for the canceller */
    atomic_int scope_ready;
    int64_t start, end;        /* clock around ctx_nats_request */
    int64_t deadline;          /* the scope's, or -1 */
    int rc;
    natsMsg *reply;
} call_t;

static void *run_call(void *arg) {
    call_t *c = arg;
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = c->scope_timeout_ns;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(&o, &c->scope, &tok), 0);
    c->deadline = -1;
    ctx_cancel_scope_deadline(c->scope, &c->deadline);
    atomic_store(&c->scope_ready, 1);
    c->start = ctx_wire_now_ns();
    c->rc = ctx_nats_request(G.b, c->subject, "q", 1, c->timeout_ms, &c->reply, NULL);
    c->end = ctx_wire_now_ns();
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_thread_release();
    return NULL;
}

static void test_request_cancelled_from_another_thread(void **state) {
    (void)state;
    NEED_SERVER();
    call_t c = {.subject = "ctx.cancel.hold", .timeout_ms = REQUEST_MS};
    int before = atomic_load(&held);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_call, &c), 0);
    while (!atomic_load(&c.scope_ready)) /* c.scope is set */
        sleep_ms(1);
    /* wait until the request has reached the service: it is in flight */
    for (int i = 0; i < 1000 * SLOW && atomic_load(&held) == before; i++)
        sleep_ms(5);
    assert_int_equal(atomic_load(&held), before + 1);
    int64_t cancelled_at = ctx_wire_now_ns();
    ASSERT_RC(ctx_cancel_scope_cancel(c.scope, NULL), 0);
    pthread_join(t, NULL);
    ASSERT_RC(c.rc, CTX_ECANCELLED);
    assert_null(c.reply);
    assert_true(c.end >= cancelled_at);                     /* woken by the cancel */
    assert_true(c.end < c.start + c.timeout_ms * MS);       /* not by its timeout */
    ctx_cancel_scope_release(c.scope);
}

static void test_request_deadline_before_timeout(void **state) {
    (void)state;
    NEED_SERVER();
    /* the scope's 50 ms come before the call's own timeout */
    call_t c = {.subject = "ctx.cancel.hold", .timeout_ms = REQUEST_MS, .scope_timeout_ns = 50 * MS};
    run_call(&c);
    ASSERT_RC(c.rc, CTX_EDEADLINE);
    assert_null(c.reply);
    assert_true(c.end >= c.deadline);                 /* never before the deadline */
    assert_true(c.end < c.start + c.timeout_ms * MS); /* well before the timeout */
    ctx_cancel_scope_release(c.scope);
    /* the other way round: the call's own timeout */
    call_t d = {.subject = "ctx.cancel.hold", .timeout_ms = 50, .scope_timeout_ns = 3600000 * MS};
    run_call(&d);
    ASSERT_RC(d.rc, CTX_ETIMEDOUT);
    assert_true(d.end >= d.start + 50 * MS);
    assert_true(d.end < d.deadline);
    ctx_cancel_scope_release(d.scope);
    /* nobody subscribes: the server's "no responders" through the bridge's
     * reply subscription */
    call_t n = {.subject = "ctx.cancel.nobody", .timeout_ms = REQUEST_MS, .scope_timeout_ns = 60000 * MS};
    run_call(&n);
    ASSERT_RC(n.rc, CTX_ENOTFOUND);
    assert_null(n.reply);
    ctx_cancel_scope_release(n.scope);
    /* a scope without deadline: its own timeout too */
    call_t e = {.subject = "ctx.cancel.hold", .timeout_ms = 50};
    run_call(&e);
    ASSERT_RC(e.rc, CTX_ETIMEDOUT);
    assert_int_equal(e.deadline, -1);
    ctx_cancel_scope_release(e.scope);
    /* and no scope at all: libnats' own request (whose clock is its own) */
    natsMsg *reply = NULL;
    ASSERT_RC(ctx_nats_request(G.b, "ctx.cancel.hold", "q", 1, 50, &reply, NULL), CTX_ETIMEDOUT);
    assert_null(reply);
}

/* "count" to the stamp responder: how many stamped so far (the same
 * subscription, so every earlier request has been handled). */
static void stamp_count(int *count, int *without_time) {
    natsMsg *reply = NULL;
    ctx_context_t *plain;
    ASSERT_RC(ctx_context_new(&plain), 0); /* no scope: a plain request */
    ASSERT_RC(ctx_context_enter(plain), 0);
    ASSERT_RC(ctx_nats_request(G.b, "ctx.cancel.stamp", "count", 5, REQUEST_MS, &reply, NULL), 0);
    ASSERT_RC(ctx_context_exit(plain), 0);
    ctx_context_release(plain);
    char text[64];
    payload(reply, text, sizeof text);
    natsMsg_Destroy(reply);
    assert_int_equal(sscanf(text, "%d %d", count, without_time), 2);
}

static void *request_stamp(void *arg) {
    natsMsg *reply = NULL;
    int rc = ctx_nats_request(G.b, "ctx.cancel.stamp", "q", 1, REQUEST_MS, &reply, NULL);
    if (rc == 0)
        natsMsg_Destroy(reply);
    *(int *)arg = rc;
    return NULL;
}

static void test_nothing_sent_when_cancelled_or_late(void **state) {
    (void)state;
    NEED_SERVER();
    int n0, late0;
    stamp_count(&n0, &late0);
    /* a cancelled scope */
    ctx_context_t *ctx;
    ctx_cancel_scope_t *scope;
    ASSERT_RC(ctx_cancel_context_new(NULL, NULL, &ctx, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_cancel(scope, NULL), 0);
    int rc = 0;
    ASSERT_RC(ctx_context_run(ctx, request_stamp, &rc, NULL), 0);
    ASSERT_RC(rc, CTX_ECANCELLED);
    ctx_context_release(ctx);
    ctx_cancel_scope_release(scope);
    /* a deadline that has passed */
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = -1;
    ASSERT_RC(ctx_cancel_context_new(NULL, &o, &ctx, NULL), 0);
    ASSERT_RC(ctx_context_run(ctx, request_stamp, &rc, NULL), 0);
    ASSERT_RC(rc, CTX_EDEADLINE);
    ctx_context_release(ctx);
    /* ... also when set through the wire's call */
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_wire_deadline_set(G.v.wire, ctx, -1), 0);
    ASSERT_RC(ctx_context_run(ctx, request_stamp, &rc, NULL), 0);
    ASSERT_RC(rc, CTX_EDEADLINE);
    ctx_context_release(ctx);
    int n1, late1;
    stamp_count(&n1, &late1);
    assert_int_equal(n1, n0); /* none of the three reached the service */
    assert_int_equal(late1, late0);
}

/* ---- the timer thread is late: the clock still decides ---- */

static atomic_int hold_timer, timer_held;
static pthread_t test_thread;

/* A cancellation callback that keeps the timer thread busy until told. */
static void keep_timer_busy(void *arg) {
    (void)arg;
    if (pthread_equal(pthread_self(), test_thread))
        return; /* expired before it was registered: ran here, at once */
    atomic_store(&timer_held, 1);
    while (atomic_load(&hold_timer))
        sleep_ms(1);
}

static void *request_hold(void *arg) {
    natsMsg *reply = NULL;
    int64_t *end = arg;
    int rc = ctx_nats_request(G.b, "ctx.cancel.hold", "q", 1, REQUEST_MS, &reply, NULL);
    *end = ctx_wire_now_ns();
    return (void *)(intptr_t)rc;
}

static void test_late_timer_sends_nothing_after_the_deadline(void **state) {
    (void)state;
    NEED_SERVER();
    int n0, late0;
    stamp_count(&n0, &late0);
    /* hold the timer thread in a callback of a scope that expires first */
    test_thread = pthread_self();
    atomic_store(&hold_timer, 1);
    atomic_store(&timer_held, 0);
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 5 * MS;
    ctx_cancel_scope_t *busy;
    ASSERT_RC(ctx_cancel_scope_new(NULL, &o, &busy), 0);
    ctx_cancel_callback_t cb;
    int ran = ctx_cancel_callback_init_wakeup(&cb, busy, keep_timer_busy, NULL);
    if (ran == CTX_CANCEL_CALLBACK_RAN) { /* too slow a run to set it up */
        atomic_store(&hold_timer, 0);
        ctx_cancel_callback_clear(&cb);
        ctx_cancel_scope_release(busy);
        skip();
    }
    for (int i = 0; i < 2000 * SLOW && !atomic_load(&timer_held); i++)
        sleep_ms(1);
    assert_true(atomic_load(&timer_held));

    /* a deadline that has passed, but that nobody has acted on yet */
    ctx_context_t *ctx;
    ctx_cancel_scope_t *scope;
    o.timeout_ns = 1 * MS;
    ASSERT_RC(ctx_cancel_context_new(NULL, &o, &ctx, &scope), 0);
    int64_t deadline;
    ASSERT_RC(ctx_cancel_scope_deadline(scope, &deadline), 0);
    while (ctx_wire_now_ns() <= deadline)
        sleep_ms(1);
    ASSERT_RC(ctx_cancel_scope_error(scope), 0); /* the timer is late */
    int rc = 0;
    ASSERT_RC(ctx_context_run(ctx, request_stamp, &rc, NULL), 0);
    ASSERT_RC(rc, CTX_EDEADLINE);
    ctx_context_release(ctx);
    ctx_cancel_scope_release(scope);

    /* a request that waits ends at its deadline by itself */
    o.timeout_ns = 100 * MS;
    ASSERT_RC(ctx_cancel_context_new(NULL, &o, &ctx, &scope), 0);
    ASSERT_RC(ctx_cancel_scope_deadline(scope, &deadline), 0);
    int64_t end = 0;
    void *r = NULL;
    ASSERT_RC(ctx_context_run(ctx, request_hold, &end, &r), 0);
    ASSERT_RC((int)(intptr_t)r, CTX_EDEADLINE);
    assert_true(end >= deadline);
    ASSERT_RC(ctx_cancel_scope_error(scope), 0); /* still not cancelled */
    ctx_context_release(ctx);
    ctx_cancel_scope_release(scope);

    atomic_store(&hold_timer, 0);
    ASSERT_RC(ctx_cancel_callback_clear(&cb), CTX_CANCEL_CALLBACK_RAN); /* waits for it */
    ctx_cancel_scope_release(busy);
    int n1, late1;
    stamp_count(&n1, &late1);
    assert_int_equal(n1, n0); /* nothing reached the service */
    assert_int_equal(late1, late0);
}

/* Requests in a loop until the deadline stops them. */
typedef struct stamp_loop {
    int64_t deadline;
    int ok;            /* replies */
    int64_t last_ok_start;
    int64_t end;       /* clock after the failing call */
    int rc;            /* the failing call's result */
    int bad;           /* replies whose numbers break the rules */
} stamp_loop_t;

static void *loop_until_deadline(void *arg) {
    stamp_loop_t *l = arg;
    ASSERT_RC(ctx_wire_deadline_get(G.v.wire, NULL, &l->deadline), 0);
    for (;;) {
        int64_t start = ctx_wire_now_ns();
        natsMsg *reply = NULL;
        l->rc = ctx_nats_request(G.b, "ctx.cancel.stamp", "q", 1, REQUEST_MS, &reply, NULL);
        l->end = ctx_wire_now_ns();
        if (l->rc != 0)
            break;
        char text[128];
        payload(reply, text, sizeof text);
        natsMsg_Destroy(reply);
        long long sent = -1, remaining = -1, arrival = -1;
        if (sscanf(text, "%lld %lld %lld", &sent, &remaining, &arrival) != 3 || sent <= 0 ||
            start >= l->deadline || remaining > l->deadline - start)
            l->bad++;
        l->ok++;
        l->last_ok_start = start;
        sleep_ms(2);
    }
    return NULL;
}

static void test_nothing_sent_after_the_deadline(void **state) {
    (void)state;
    NEED_SERVER();
    int n0, late0;
    stamp_count(&n0, &late0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_wire_deadline_set(G.v.wire, ctx, 100 * MS * SLOW), 0);
    stamp_loop_t l = {0};
    ASSERT_RC(ctx_context_run(ctx, loop_until_deadline, &l, NULL), 0);
    ctx_context_release(ctx);
    print_message("%d requests answered before the deadline\n", l.ok);
    ASSERT_RC(l.rc, CTX_EDEADLINE);
    assert_true(l.end >= l.deadline); /* the loop ended by the deadline, not before */
    assert_true(l.ok > 0);
    assert_int_equal(l.bad, 0);       /* each began before it, with time left */
    int n1, late1;
    stamp_count(&n1, &late1);
    /* every request that reached the service was injected with time left;
     * the last call may have been sent before the deadline and answered
     * after it */
    assert_int_equal(late1, late0);
    assert_true(n1 - n0 == l.ok || n1 - n0 == l.ok + 1);
}

static void test_handler_runs_in_the_callers_deadline(void **state) {
    (void)state;
    NEED_SERVER();
    memset(&work_seen, 0, sizeof work_seen);
    atomic_store(&work_done, 0);
    call_t c = {.subject = "ctx.cancel.work", .timeout_ms = REQUEST_MS,
                .scope_timeout_ns = 300 * MS * SLOW};
    run_call(&c);
    /* the handler replies only after the caller's time is up */
    ASSERT_RC(c.rc, CTX_EDEADLINE);
    assert_true(c.end >= c.deadline);
    for (int i = 0; i < 2000 * SLOW && !atomic_load(&work_done); i++)
        sleep_ms(5);
    assert_true(atomic_load(&work_done));
    seen_t *s = &work_seen;
    /* the handler's time: never more than the caller had when it called */
    assert_true(s->remaining >= 0);
    assert_true(s->remaining <= c.deadline - c.start);
    assert_true(s->deadline <= c.deadline + (s->arrival - c.start));
    if (s->check_first != 0) { /* a slow run may arrive after it */
        ASSERT_RC(s->check_first, CTX_EDEADLINE);
        assert_true(s->check_first_at >= s->deadline);
    }
    /* it, a thread with its context and a pool task stop at its deadline */
    ASSERT_RC(s->slept, CTX_EDEADLINE);
    assert_true(s->woke >= s->deadline);
    ASSERT_RC(s->thread_slept, CTX_EDEADLINE);
    assert_true(s->thread_woke >= s->deadline);
    if (s->task_ran) { /* a pool may also refuse to start it once expired */
        ASSERT_RC(s->task_slept, CTX_EDEADLINE);
        assert_true(s->task_woke >= s->deadline);
    }
    ASSERT_RC(s->replied, 0); /* its late reply went out, and was dropped */
    ctx_cancel_scope_release(c.scope);
    /* the next request is not confused by it */
    int n, late;
    stamp_count(&n, &late);
}

/* ---- many at once ---- */

static void *many_requests(void *arg) {
    long id = (long)(intptr_t)arg;
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 60000 * MS;
    ctx_token_t *tok;
    if (ctx_cancel_enter_child(&o, NULL, &tok) != 0)
        return (void *)1;
    intptr_t bad = 0;
    for (int i = 0; i < SCALED(100, 10, 30); i++) {
        char q[32], text[128];
        snprintf(q, sizeof q, "m%ld-%d", id, i);
        natsMsg *reply = NULL;
        if (ctx_nats_request(G.b, "ctx.cancel.echo", q, (int)strlen(q), REQUEST_MS, &reply, NULL) != 0) {
            bad++;
            continue;
        }
        payload(reply, text, sizeof text);
        natsMsg_Destroy(reply);
        if (strcmp(text, q) != 0)
            bad++;
    }
    ctx_cancel_exit(tok);
    ctx_thread_release();
    return (void *)bad;
}

static void on_echo(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    ctx_nats_respond(b, msg, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
}

static void test_many_requests_at_once(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *echo, *echo2;
    /* two responders in a queue group: replies come back out of order */
    ASSERT_RC(ctx_nats_subscribe(G.service, "ctx.cancel.echo", "q", on_echo, NULL, &echo), 0);
    ASSERT_RC(ctx_nats_subscribe(G.service, "ctx.cancel.echo", "q", on_echo, NULL, &echo2), 0);
    assert_int_equal(natsConnection_Flush(G.service_nc), NATS_OK);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, many_requests, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++) {
        void *bad = (void *)1;
        pthread_join(t[i], &bad);
        assert_null(bad);
    }
    ASSERT_RC(ctx_nats_unsubscribe(echo), 0);
    ASSERT_RC(ctx_nats_unsubscribe(echo2), 0);
}

/* ---- the connection closes under a waiting request ---- */

typedef struct closing {
    ctx_nats_t *b;
    int rc;
} closing_t;

static void *request_on(void *arg) {
    closing_t *c = arg;
    ctx_token_t *tok;
    ASSERT_RC(ctx_cancel_enter_child(NULL, NULL, &tok), 0);
    natsMsg *reply = NULL;
    c->rc = ctx_nats_request(c->b, "ctx.cancel.hold", "q", 1, REQUEST_MS * 4, &reply, NULL);
    ASSERT_RC(ctx_cancel_exit(tok), 0);
    ctx_thread_release();
    return NULL;
}

static void test_connection_closed_wakes_the_request(void **state) {
    (void)state;
    NEED_SERVER();
    natsConnection *nc = NULL;
    ctx_nats_t *b = NULL;
    ASSERT_RC(ctx_nats_connect(G.server.url, &nc), 0);
    ASSERT_RC(ctx_nats_new(nc, G.v.wire, &b), 0);
    closing_t c = {b, 1};
    int before = atomic_load(&held);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, request_on, &c), 0);
    for (int i = 0; i < 1000 * SLOW && atomic_load(&held) == before; i++)
        sleep_ms(5);
    assert_int_equal(atomic_load(&held), before + 1);
    natsConnection_Close(nc);
    pthread_join(t, NULL);
    ASSERT_RC(c.rc, CTX_ECLOSED);
    /* a new request with a scope is refused at once */
    closing_t again = {b, 1};
    request_on(&again);
    ASSERT_RC(again.rc, CTX_ECLOSED);
    ctx_nats_release(b); /* the reply subscription ended with the connection */
    natsConnection_Destroy(nc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_cancelled_from_another_thread),
        cmocka_unit_test(test_request_deadline_before_timeout),
        cmocka_unit_test(test_nothing_sent_when_cancelled_or_late),
        cmocka_unit_test(test_late_timer_sends_nothing_after_the_deadline),
        cmocka_unit_test(test_nothing_sent_after_the_deadline),
        cmocka_unit_test(test_handler_runs_in_the_callers_deadline),
        cmocka_unit_test(test_many_requests_at_once),
        cmocka_unit_test(test_connection_closed_wakes_the_request),
    };
    int failed = cmocka_run_group_tests_name("nats_cancel", tests, group_setup, group_teardown);
    nats_CloseAndWait(5000);
    return failed;
}
