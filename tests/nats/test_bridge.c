/* SPDX-License-Identifier: MIT */
/*
 * test_bridge.c — the NATS bridge between two processes over a real
 * nats-server on loopback: a request's context arrives in the other process
 * and its reply comes back with the responder's context; a deadline shrinks
 * across hops (A → B → A); bus events cross in their publisher's context
 * (and do not loop when both sides forward); every subscription callback
 * runs in its own message's context; the error paths (deadline passed, no
 * responders, unsubscribe from its own callback); and, last, the server
 * restarted in the middle of a stream: both sides reconnect and every
 * message delivered runs in its own sender's context.
 *
 * The second process is this binary run as "--peer <url>" (peer_main).
 */
#include "nats_test.h"

/* ====================================================================== */
/* The peer process                                                       */
/* ====================================================================== */

#define MAX_SEQ 8192

static struct peer {
    vars_t v;
    natsConnection *nc;
    ctx_nats_t *b;
    ctx_bus_t *bus;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int quit;
    /* the stream */
    int delivered, mismatched, dup, phase[3];
    unsigned char seen[MAX_SEQ];
    /* the bus */
    int bus_events;
    char bus_last[512];
} P = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void respond_str(natsMsg *msg, const char *text) {
    ctx_nats_respond(P.b, msg, text, (int)strlen(text));
}

static void on_ping(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)user;
    respond_str(msg, "pong");
}

static void on_echo(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    char trace[33], out[512];
    trace_hex(P.v.wire, NULL, trace);
    ctx_wire_traceparent_t tp;
    char parent[17] = "-";
    if (ctx_wire_trace_get(P.v.wire, NULL, &tp, NULL, NULL) == 0)
        for (int i = 0; i < 8; i++)
            snprintf(parent + 2 * i, 3, "%02x", tp.parent_id[i]);
    int64_t left = -1;
    ctx_wire_deadline_remaining(P.v.wire, NULL, &left);
    snprintf(out, sizeof out, "pid=%d user=%s tenant=%s trace=%s parent=%s left=%lld", (int)getpid(),
             get_str(NULL, P.v.user), get_str(NULL, P.v.tenant), trace, parent, (long long)left);
    /* the responder adds to the context it sends back */
    char served[32];
    snprintf(served, sizeof served, "peer-%d", (int)getpid());
    set_str(P.v.served, served);
    ctx_nats_respond(b, msg, out, (int)strlen(out));
}

/* hop 1 of A → B → A: payload = the subject of hop 2 */
static void on_hop1(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    char subject[128], out[256];
    payload(msg, subject, sizeof subject);
    int64_t r1 = -1;
    ctx_wire_deadline_remaining(P.v.wire, NULL, &r1);
    natsMsg *reply = NULL;
    int rc = ctx_nats_request(b, subject, "hop", 3, REQUEST_MS, &reply, NULL);
    char r2[128] = "r2=none";
    if (rc == 0) {
        payload(reply, r2, sizeof r2);
        natsMsg_Destroy(reply);
    }
    snprintf(out, sizeof out, "r1=%lld %s rc=%d", (long long)r1, r2, rc);
    respond_str(msg, out);
}

/* the stream: payload "<seq> <phase>", context seq = "<seq>", user = "u<seq>" */
static void on_stream(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)user;
    char text[64], want_user[32];
    payload(msg, text, sizeof text);
    int seq = -1, phase = -1;
    sscanf(text, "%d %d", &seq, &phase);
    snprintf(want_user, sizeof want_user, "u%d", seq);
    int ok = seq >= 0 && seq < MAX_SEQ && phase >= 0 && phase < 3 &&
             atoi(get_str(NULL, P.v.seq)) == seq && strcmp(get_str(NULL, P.v.seq), "-") != 0 &&
             strcmp(get_str(NULL, P.v.user), want_user) == 0 &&
             ctx_wire_trace_get(P.v.wire, NULL, NULL, NULL, NULL) == 0;
    /* a set here must never reach the next message */
    int leaked = strcmp(get_str(NULL, P.v.tenant), "-") != 0;
    set_str(P.v.tenant, "set-by-callback");
    pthread_mutex_lock(&P.lock);
    P.delivered++;
    if (!ok || leaked)
        P.mismatched++;
    if (seq >= 0 && seq < MAX_SEQ) {
        if (P.seen[seq]++)
            P.dup++;
        if (phase >= 0 && phase < 3)
            P.phase[phase]++;
    }
    pthread_mutex_unlock(&P.lock);
}

static void on_report(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)user;
    char out[256];
    pthread_mutex_lock(&P.lock);
    snprintf(out, sizeof out, "delivered=%d mismatched=%d dup=%d before=%d outage=%d after=%d", P.delivered,
             P.mismatched, P.dup, P.phase[0], P.phase[1], P.phase[2]);
    pthread_mutex_unlock(&P.lock);
    respond_str(msg, out);
}

static void on_bus_report(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)user;
    char out[600];
    pthread_mutex_lock(&P.lock);
    snprintf(out, sizeof out, "events=%d last=%s", P.bus_events, P.bus_last);
    pthread_mutex_unlock(&P.lock);
    respond_str(msg, out);
}

static void on_quit(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)user;
    respond_str(msg, "bye");
    pthread_mutex_lock(&P.lock);
    P.quit = 1;
    pthread_cond_broadcast(&P.cond);
    pthread_mutex_unlock(&P.lock);
}

/* the peer's own bus listener: records what it saw and in which context */
static int peer_bus_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self, (void)user;
    char trace[33];
    trace_hex(P.v.wire, NULL, trace);
    pthread_mutex_lock(&P.lock);
    P.bus_events++;
    snprintf(P.bus_last, sizeof P.bus_last, "%s|%s|%s|%s", ctx_bus_event_topic(event),
             (const char *)ctx_bus_event_data(event), get_str(NULL, P.v.user), trace);
    pthread_mutex_unlock(&P.lock);
    return 0;
}

static int peer_main(const char *url) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(600);
    if (vars_init(&P.v) != 0 || ctx_nats_connect(url, &P.nc) != 0 || ctx_nats_new(P.nc, P.v.wire, &P.b) != 0)
        return 2;
    static const struct {
        const char *subject;
        ctx_nats_msg_fn fn;
    } subs[] = {{"ctx.test.ping", on_ping},     {"ctx.test.echo", on_echo},
                {"ctx.test.hop1", on_hop1},     {"ctx.test.stream", on_stream},
                {"ctx.test.report", on_report}, {"ctx.test.busreport", on_bus_report},
                {"ctx.test.quit", on_quit}};
    enum { NSUBS = sizeof subs / sizeof subs[0] };
    ctx_nats_sub_t *handles[NSUBS];
    for (int i = 0; i < NSUBS; i++)
        if (ctx_nats_subscribe(P.b, subs[i].subject, NULL, subs[i].fn, NULL, &handles[i]) != 0)
            return 3;
    ctx_nats_sub_t *receive = NULL;
    ctx_bus_listener_t *forward = NULL, *local = NULL;
    if (ctx_bus_new(NULL, &P.bus) != 0 ||
        ctx_nats_bus_receive(P.b, P.bus, "ctx.test.bus", &bus_codec, &receive) != 0 ||
        ctx_nats_bus_forward(P.b, P.bus, "order.*", "ctx.test.bus", &bus_codec, &forward) != 0 ||
        ctx_bus_subscribe(P.bus, "order.*", peer_bus_listener, NULL, NULL, &local) != 0)
        return 4;
    natsConnection_Flush(P.nc);
    pthread_mutex_lock(&P.lock);
    while (!P.quit)
        pthread_cond_wait(&P.cond, &P.lock);
    pthread_mutex_unlock(&P.lock);
    natsConnection_Flush(P.nc); /* the "bye" */
    for (int i = 0; i < NSUBS; i++)
        ctx_nats_unsubscribe(handles[i]);
    ctx_nats_unsubscribe(receive);
    ctx_bus_unsubscribe(forward);
    ctx_bus_unsubscribe(local);
    ctx_bus_listener_release(forward);
    ctx_bus_listener_release(local);
    ctx_bus_release(P.bus);
    ctx_nats_release(P.b);
    natsConnection_Destroy(P.nc);
    vars_done(&P.v);
    int rc = release_thread_and_timer();
    nats_CloseAndWait(5000);
    return rc == 0 ? 0 : 5;
}

/* ====================================================================== */
/* The test process                                                       */
/* ====================================================================== */

static struct {
    int ready;
    server_t server;
    vars_t v;
    natsConnection *nc;
    ctx_nats_t *b;
    pid_t peer;
} G;

#define NEED_SERVER() NATS_NEED_SERVER(G.ready)

/* Request with a string payload; the reply's payload into buf. */
static int ask(const char *subject, const char *text, char *buf, size_t cap, ctx_context_t **reply_ctx) {
    natsMsg *reply = NULL;
    int rc = ctx_nats_request(G.b, subject, text, (int)strlen(text), REQUEST_MS, &reply, reply_ctx);
    if (rc == 0) {
        payload(reply, buf, cap);
        natsMsg_Destroy(reply);
    }
    return rc;
}

/* Asks until the peer answers (it may be starting or reconnecting). */
static int wait_for_peer(void) {
    for (int i = 0; i < 200 * SLOW; i++) {
        natsMsg *reply = NULL;
        if (ctx_nats_request(G.b, "ctx.test.ping", "", 0, 100, &reply, NULL) == 0) {
            natsMsg_Destroy(reply);
            return 0;
        }
        sleep_ms(50);
    }
    return -1;
}

static int group_setup(void **state) {
    (void)state;
    if (!nats_server_path())
        return 0; /* every test skips */
    if (server_start(&G.server, 0) != 0)
        return -1;
    if (vars_init(&G.v) != 0 || ctx_nats_connect(G.server.url, &G.nc) != 0 ||
        ctx_nats_new(G.nc, G.v.wire, &G.b) != 0)
        return -1;
    G.peer = spawn_peer(G.server.url);
    if (G.peer <= 0 || wait_for_peer() != 0)
        return -1;
    G.ready = 1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (G.peer > 0) {
        char buf[16];
        ask("ctx.test.quit", "", buf, sizeof buf, NULL);
        int exited = 0;
        for (int i = 0; i < 400 && !exited; i++) { /* up to 20 s */
            int status;
            if (waitpid(G.peer, &status, WNOHANG) == G.peer) {
                exited = 1;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                    fprintf(stderr, "peer ended with status %d\n", status);
            } else {
                sleep_ms(50);
            }
        }
        if (!exited)
            stop_pid(G.peer, SIGKILL);
    }
    ctx_nats_release(G.b);
    if (G.nc)
        natsConnection_Destroy(G.nc);
    if (G.server.pid)
        server_stop(&G.server);
    if (G.v.wire)
        vars_done(&G.v);
    return release_thread_and_timer();
}

/* ---- a request's context crosses, and comes back ---- */

static void *run_echo(void *arg) {
    (void)arg;
    set_str(G.v.user, "alice");
    set_str(G.v.tenant, "acme");
    ctx_wire_traceparent_t mine;
    ASSERT_RC(ctx_wire_trace_start(G.v.wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, &mine), 0);
    ASSERT_RC(ctx_wire_deadline_set(G.v.wire, NULL, 60000000000ll), 0);
    char out[512];
    ctx_context_t *back = NULL;
    ASSERT_RC(ask("ctx.test.echo", "hi", out, sizeof out, &back), 0);
    int pid = 0;
    char user[32], tenant[32], trace[40], parent[20];
    long long left = 0;
    assert_int_equal(sscanf(out, "pid=%d user=%31s tenant=%31s trace=%39s parent=%19s left=%lld", &pid, user,
                            tenant, trace, parent, &left),
                     6);
    assert_int_equal(pid, G.peer); /* the other process */
    assert_string_equal(user, "alice");
    assert_string_equal(tenant, "acme");
    char mine_hex[33];
    trace_hex(G.v.wire, NULL, mine_hex);
    assert_string_equal(trace, mine_hex);
    /* the peer saw a child parent-id, not ours */
    char mine_parent[17];
    for (int i = 0; i < 8; i++)
        snprintf(mine_parent + 2 * i, 3, "%02x", mine.parent_id[i]);
    assert_string_not_equal(parent, mine_parent);
    assert_true(left > 0 && left <= 60000000000ll);
    /* the reply carries the responder's context back */
    char served[32];
    snprintf(served, sizeof served, "peer-%d", (int)G.peer);
    assert_string_equal(get_str(back, G.v.served), served);
    assert_string_equal(get_str(back, G.v.user), "alice");
    char back_hex[33];
    trace_hex(G.v.wire, back, back_hex);
    assert_string_equal(back_hex, mine_hex);
    /* and the requester's own context is unchanged */
    assert_string_equal(get_str(NULL, G.v.served), "-");
    ctx_context_release(back);
    return NULL;
}

static void test_request_carries_context(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, run_echo, NULL, NULL), 0);
    ctx_context_release(ctx);
}

/* ---- a deadline shrinks across hops: A → B → A ---- */

static long long hop2_left = -2;

static void on_hop2(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    int64_t left = -1;
    ctx_wire_deadline_remaining(G.v.wire, NULL, &left);
    hop2_left = left;
    char out[64];
    snprintf(out, sizeof out, "r2=%lld", (long long)left);
    ctx_nats_respond(b, msg, out, (int)strlen(out));
}

static void *run_hops(void *arg) {
    (void)arg;
    ASSERT_RC(ctx_wire_deadline_set(G.v.wire, NULL, 30000000000ll), 0);
    int64_t r0;
    ASSERT_RC(ctx_wire_deadline_remaining(G.v.wire, NULL, &r0), 0);
    char out[256];
    ASSERT_RC(ask("ctx.test.hop1", "ctx.test.hop2", out, sizeof out, NULL), 0);
    long long r1 = 0, r2 = 0;
    int rc = -1;
    assert_int_equal(sscanf(out, "r1=%lld r2=%lld rc=%d", &r1, &r2, &rc), 3);
    assert_int_equal(rc, 0);
    assert_int_equal(r2, hop2_left);
    assert_true(r1 > 0 && r1 <= r0);  /* B saw less than A had */
    assert_true(r2 > 0 && r2 <= r1);  /* A (hop 2) saw less than B had */
    assert_true(r2 < r0);
    return NULL;
}

static void test_deadline_shrinks_across_hops(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *hop2;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.test.hop2", NULL, on_hop2, NULL, &hop2), 0);
    natsConnection_Flush(G.nc);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, run_hops, NULL, NULL), 0);
    ctx_context_release(ctx);
    ASSERT_RC(ctx_nats_unsubscribe(hop2), 0);
}

/* ---- error paths ---- */

static int self_unsubscribe_rc = 1;
static ctx_nats_sub_t *self_sub;

static void on_self(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)msg, (void)user;
    self_unsubscribe_rc = ctx_nats_unsubscribe(self_sub);
}

static void *run_expired(void *arg) {
    (void)arg;
    ASSERT_RC(ctx_wire_deadline_set(G.v.wire, NULL, -1), 0);
    natsMsg *reply = NULL;
    /* the deadline has passed: nothing is sent, and it says why */
    ASSERT_RC(ctx_nats_request(G.b, "ctx.test.echo", "x", 1, REQUEST_MS, &reply, NULL), CTX_EDEADLINE);
    assert_null(reply);
    return NULL;
}

static void test_error_paths(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_run(ctx, run_expired, NULL, NULL), 0);
    ctx_context_release(ctx);
    natsMsg *reply = NULL;
    ASSERT_RC(ctx_nats_request(G.b, "ctx.test.nobody", "x", 1, REQUEST_MS, &reply, NULL), CTX_ENOTFOUND);
    ASSERT_RC(ctx_nats_request(G.b, "ctx.test.echo", NULL, 1, REQUEST_MS, &reply, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_nats_publish(G.b, NULL, "x", 1), CTX_EINVAL);
    ctx_nats_t *b;
    ASSERT_RC(ctx_nats_new(NULL, G.v.wire, &b), CTX_EINVAL);
    ASSERT_RC(ctx_nats_new(G.nc, NULL, &b), CTX_EINVAL);
    natsMsg *m;
    assert_int_equal(natsMsg_Create(&m, "a.b", NULL, "x", 1), NATS_OK);
    ASSERT_RC(ctx_nats_respond(G.b, m, "x", 1), CTX_EINVAL); /* no reply subject */
    natsMsg_Destroy(m);
    /* unsubscribing from its own callback is refused */
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.test.self", NULL, on_self, NULL, &self_sub), 0);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.test.self", "x", 1), 0);
    for (int i = 0; i < 400 * SLOW && sub_delivered(self_sub) == 0; i++)
        sleep_ms(10);
    assert_int_equal(sub_delivered(self_sub), 1);
    ASSERT_RC(self_unsubscribe_rc, CTX_EBUSY);
    ASSERT_RC(ctx_nats_unsubscribe(self_sub), 0);
    ASSERT_RC(ctx_nats_unsubscribe(NULL), CTX_EINVAL);
}

/* ---- callbacks run in their own message's context (one process) ---- */

static int local_bad, local_seen;

static void on_local(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)b, (void)user;
    char text[32];
    payload(msg, text, sizeof text);
    if (strcmp(get_str(NULL, G.v.seq), text) != 0 || strcmp(get_str(NULL, G.v.tenant), "-") != 0)
        local_bad++;
    set_str(G.v.tenant, "leak?"); /* must not reach the next message */
    local_seen++;
}

static void *publish_numbered(void *arg) {
    char text[32];
    snprintf(text, sizeof text, "%d", *(int *)arg);
    set_str(G.v.seq, text);
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.test.local", text, (int)strlen(text)), 0);
    return NULL;
}

static void test_callbacks_run_in_message_context(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *sub;
    ASSERT_RC(ctx_nats_subscribe(G.b, "ctx.test.local", NULL, on_local, NULL, &sub), 0);
    natsConnection_Flush(G.nc);
    int n = SCALED(200, 20, 50);
    for (int i = 0; i < n; i++) {
        ctx_context_t *ctx;
        ASSERT_RC(ctx_context_new(&ctx), 0);
        ASSERT_RC(ctx_context_run(ctx, publish_numbered, &i, NULL), 0);
        ctx_context_release(ctx);
    }
    /* one unrelated message with no context at all */
    ASSERT_RC(ctx_nats_publish(G.b, "ctx.test.local", "-", 1), 0);
    for (int i = 0; i < 1000 * SLOW && sub_delivered(sub) < (uint64_t)n + 1; i++)
        sleep_ms(10);
    ASSERT_RC(ctx_nats_unsubscribe(sub), 0);
    assert_int_equal(local_seen, n + 1);
    assert_int_equal(local_bad, 0);
}

/* ---- bus events cross in their publisher's context ---- */

static int parent_bus_events;

static int parent_bus_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self, (void)event, (void)user;
    __atomic_fetch_add(&parent_bus_events, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void *publish_order(void *arg) {
    ctx_bus_t *bus = arg;
    set_str(G.v.user, "carol");
    ASSERT_RC(ctx_wire_trace_start(G.v.wire, NULL, 1, NULL), 0);
    char *data = strdup("o-1");
    ctx_bus_event_t *ev;
    ASSERT_RC(ctx_bus_event_new("order.created", data, free, &ev), 0);
    assert_true(ctx_bus_publish(bus, ev) >= 2); /* local listener + forwarder */
    ctx_bus_event_release(ev);
    char *trace = malloc(33);
    trace_hex(G.v.wire, NULL, trace);
    return trace;
}

static void test_bus_forwarding(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_bus_t *bus;
    ASSERT_RC(ctx_bus_new(NULL, &bus), 0);
    ctx_bus_listener_t *fwd = NULL, *local = NULL;
    ctx_nats_sub_t *recv = NULL;
    /* both processes forward and receive the same prefix: no loop */
    ASSERT_RC(ctx_nats_bus_forward(G.b, bus, "order.*", "ctx.test.bus", &bus_codec, &fwd), 0);
    ASSERT_RC(ctx_nats_bus_receive(G.b, bus, "ctx.test.bus", &bus_codec, &recv), 0);
    ASSERT_RC(ctx_bus_subscribe(bus, "order.*", parent_bus_listener, NULL, NULL, &local), 0);
    ASSERT_RC(ctx_nats_bus_forward(G.b, bus, "order.*", "bad prefix", &bus_codec, NULL), CTX_EINVAL);
    natsConnection_Flush(G.nc);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    void *trace = NULL;
    ASSERT_RC(ctx_context_run(ctx, publish_order, bus, &trace), 0);
    ctx_context_release(ctx);
    char out[600] = "";
    for (int i = 0; i < 400 * SLOW; i++) {
        ASSERT_RC(ask("ctx.test.busreport", "", out, sizeof out, NULL), 0);
        if (strncmp(out, "events=0", 8) != 0)
            break;
        sleep_ms(10);
    }
    char want[200];
    snprintf(want, sizeof want, "events=1 last=order.created|o-1|carol|%s", (char *)trace);
    assert_string_equal(out, want);
    /* a few more round trips: nothing comes back to this process */
    for (int i = 0; i < 3; i++)
        ASSERT_RC(ask("ctx.test.busreport", "", out, sizeof out, NULL), 0);
    assert_string_equal(out, want);
    assert_int_equal(__atomic_load_n(&parent_bus_events, __ATOMIC_SEQ_CST), 1);
    free(trace);
    ASSERT_RC(ctx_nats_unsubscribe(recv), 0);
    ctx_bus_unsubscribe(fwd);
    ctx_bus_unsubscribe(local);
    ctx_bus_listener_release(fwd);
    ctx_bus_listener_release(local);
    ctx_bus_release(bus);
}

/* ---- the server restarts in the middle of a stream ---- */

typedef struct numbered {
    int seq;
    int phase;
} numbered_t;

static void *publish_stream_message(void *arg) {
    numbered_t *n = arg;
    char text[32], user[32];
    snprintf(text, sizeof text, "%d", n->seq);
    snprintf(user, sizeof user, "u%d", n->seq);
    set_str(G.v.seq, text);
    set_str(G.v.user, user);
    ctx_wire_trace_start(G.v.wire, NULL, 0, NULL);
    snprintf(text, sizeof text, "%d %d", n->seq, n->phase);
    /* during the outage a publish may be buffered or refused: either is fine */
    int rc = ctx_nats_publish(G.b, "ctx.test.stream", text, (int)strlen(text));
    return (void *)(intptr_t)rc;
}

static void publish_range(int from, int to, int phase) {
    for (int i = from; i < to; i++) {
        ctx_context_t *ctx;
        ASSERT_RC(ctx_context_new(&ctx), 0);
        numbered_t n = {i, phase};
        void *rc = NULL;
        ASSERT_RC(ctx_context_run(ctx, publish_stream_message, &n, &rc), 0);
        if (phase != 1)
            ASSERT_RC((int)(intptr_t)rc, 0);
        ctx_context_release(ctx);
    }
}

typedef struct report {
    int delivered, mismatched, dup, before, outage, after;
} report_t;

static report_t report(void) {
    char out[256];
    report_t r = {-1, -1, -1, -1, -1, -1};
    ASSERT_RC(ask("ctx.test.report", "", out, sizeof out, NULL), 0);
    assert_int_equal(sscanf(out, "delivered=%d mismatched=%d dup=%d before=%d outage=%d after=%d", &r.delivered,
                            &r.mismatched, &r.dup, &r.before, &r.outage, &r.after),
                     6);
    return r;
}

static void test_stream_survives_server_restart(void **state) {
    (void)state;
    NEED_SERVER();
    const int before = SCALED(300, 40, 100), outage = SCALED(50, 10, 20), after = SCALED(300, 40, 100);
    publish_range(0, before, 0);
    natsConnection_Flush(G.nc);
    report_t r = {0};
    for (int i = 0; i < 500 * SLOW; i++) {
        r = report();
        if (r.before >= before)
            break;
        sleep_ms(10);
    }
    assert_int_equal(r.before, before);

    /* restart the server on the same port, publishing while it is down */
    int port = G.server.port;
    server_stop(&G.server);
    publish_range(before, before + outage, 1);
    assert_int_equal(server_start(&G.server, port), 0);

    /* both sides reconnect by themselves */
    int connected = 0;
    for (int i = 0; i < 400 * SLOW && !connected; i++) {
        connected = natsConnection_Status(G.nc) == NATS_CONN_STATUS_CONNECTED;
        if (!connected)
            sleep_ms(25);
    }
    assert_true(connected);
    assert_int_equal(wait_for_peer(), 0);

    publish_range(before + outage, before + outage + after, 2);
    natsConnection_Flush(G.nc);
    for (int i = 0; i < 500 * SLOW; i++) {
        r = report();
        if (r.after >= after)
            break;
        sleep_ms(10);
    }
    print_message("stream: %d before the restart, %d of %d published during the outage delivered, "
                  "%d after; %d mismatched\n", r.before, r.outage, outage, r.after, r.mismatched);
    assert_int_equal(r.after, after);        /* nothing lost once reconnected */
    assert_true(r.outage <= outage);         /* the outage's: buffered or lost */
    assert_int_equal(r.mismatched, 0);       /* every one in its own sender's context */
    assert_int_equal(r.dup, 0);
    assert_int_equal(r.delivered, r.before + r.outage + r.after);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--peer") == 0)
        return peer_main(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_carries_context),
        cmocka_unit_test(test_deadline_shrinks_across_hops),
        cmocka_unit_test(test_error_paths),
        cmocka_unit_test(test_callbacks_run_in_message_context),
        cmocka_unit_test(test_bus_forwarding),
        cmocka_unit_test(test_stream_survives_server_restart), /* last: restarts the server */
    };
    int failed = cmocka_run_group_tests_name("nats_bridge", tests, group_setup, group_teardown);
    nats_CloseAndWait(5000);
    return failed;
}
