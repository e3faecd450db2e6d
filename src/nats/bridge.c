/* SPDX-License-Identifier: MIT */
/*
 * bridge.c — the NATS bridge: a carrier over message headers, publish,
 * request, respond, and subscriptions whose callbacks run in the context
 * decoded from each message.
 *
 *   ctx_nats_t (refcounted) ── nc (borrowed) ── wire (retained)
 *        ▲
 *        │ one reference per live subscription
 *   ctx_nats_sub_t ── natsSubscription ── delivery thread (libnats')
 *        │
 *        └─ on_message(msg):  extract(headers) → new context C
 *                             ctx_context_run(C, fn(bridge, msg, user))
 *                             release C, destroy msg
 *
 * Every message gets a context of its own, made from its headers alone:
 * the delivery thread's own context is never used, and nothing one message's
 * callback sets can be seen by the next (C dies with the call).  That is
 * what makes "every message runs in its own sender's context" hold across a
 * reconnection as well: the context travels inside the message, and libnats
 * re-subscribes by itself after reconnecting.
 *
 * The carrier.  libnats (3.x) keeps header keys as given and compares them
 * exactly; HTTP-style peers may send "Traceparent".  So `iterate` walks
 * every key (natsMsgHeader_Keys / _Values) and the wire layer compares
 * names ignoring case; `set` deletes every other spelling of the name before
 * natsMsgHeader_Set.  The key and value arrays libnats returns are freed
 * with free(), as its documentation says.
 *
 * Ending a subscription.  libnats may be running the callback on its thread
 * while another thread unsubscribes; its completion callback
 * (natsSubscription_SetOnCompleteCB) runs after the subscription is closed
 * and the last callback returned.  ctx_nats_unsubscribe waits for it, so
 * after it returns `fn` never runs and the record can be freed.  Calling it
 * from the subscription's own callback would wait for itself: CTX_EBUSY (a
 * thread-local pointer names the subscription whose callback is running).
 *
 * Unreadable headers.  libnats parses a message's header block lazily, on
 * the first header call, and refuses the whole block if one line is bad
 * (no "NATS/1.0" prefix, a line without ':', a name starting with a space,
 * a missing CRLF); the message itself is intact and libnats offers no way
 * to the raw block.  The carrier reports that as CTX_EPARSE, and on_message
 * runs the callback in an empty context instead of losing the message
 * (counted apart from the drops for lack of memory).
 *
 * fork().  A pthread_atfork child handler counts forks; a bridge remembers
 * the count it was made under, and every call on it compares (one relaxed
 * load).  In a child the count differs: calls return CTX_EFORKED without
 * touching libnats (whose threads did not survive the fork and whose locks
 * may be held forever), and release / unsubscribe free only this module's
 * memory.
 *
 * Requests (request.c) wait at most until the earlier of their timeout and
 * their scope's deadline, and wake up when the scope is cancelled; the
 * bridge ends their reply subscription with its last reference.
 *
 * Handlers run in the context extracted from the message, so a message that
 * carried a grpc-timeout runs its callback in a cancellation scope whose
 * deadline is the caller's time left: the callback and every copy of its
 * context (pool tasks, threads, loop tasks) see ctx_cancel_check() turn
 * CTX_EDEADLINE when the caller's time is up.  The context — and with it
 * the scope and its timer entry, unless copies still hold them — is
 * released right after the callback.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "nats/nats_internal.h"

/* ---- fork ---- */

static atomic_ulong fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int fork_init_rc;

static void on_fork_child(void) {
    atomic_fetch_add_explicit(&fork_generation, 1, memory_order_relaxed);
}

static void fork_install(void) {
    fork_init_rc = pthread_atfork(NULL, NULL, on_fork_child) == 0 ? 0 : CTX_ESYSTEM;
}

int ctx__nats_fork_init(void) {
    pthread_once(&fork_once, fork_install);
    return fork_init_rc;
}

unsigned long ctx__nats_fork_gen(void) {
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}

/* ---- errors ---- */

int ctx__nats_error(natsStatus s) {
    switch (s) {
    case NATS_OK:
        return 0;
    case NATS_NO_SERVER:
        return CTX_ECONNECTION;
    case NATS_TIMEOUT:
        return CTX_ETIMEDOUT;
    case NATS_NO_RESPONDERS:
    case NATS_NOT_FOUND:
        return CTX_ENOTFOUND;
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
        return CTX_ECLOSED;
    case NATS_NO_MEMORY:
        return CTX_ENOMEM;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
        return CTX_EINVAL;
    default:
        return CTX_ESYSTEM;
    }
}

int ctx__nats_subject_valid(const char *s, size_t n) {
    if (!s || n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '*' || c == '>')
            return 0;
        if (c == '.' && s[i + 1] == '.')
            return 0;
    }
    return 1;
}

/* ---- connection ---- */

int ctx_nats_connect(const char *url, natsConnection **out) {
    if (!url || !out)
        return CTX_EINVAL;
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, 1000000);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 50);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(opts, 10, 10);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(opts, 8 * 1024 * 1024);
    if (s == NATS_OK) /* replies and events leave at once, not on the next flush */
        s = natsOptions_SetSendAsap(opts, true);
    if (s != NATS_OK) {
        natsOptions_Destroy(opts);
        int rc = ctx__nats_error(s);
        return rc == CTX_ENOMEM || rc == CTX_EINVAL ? rc : CTX_ESYSTEM;
    }
    natsConnection *nc = NULL;
    s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        int rc = ctx__nats_error(s);
        return rc == CTX_ENOMEM || rc == CTX_EINVAL ? rc : CTX_ECONNECTION;
    }
    *out = nc;
    return 0;
}

/* ---- the bridge ---- */

int ctx_nats_new(natsConnection *nc, ctx_wire_t *wire, ctx_nats_t **out) {
    if (!nc || !wire || !out || natsConnection_HasHeaderSupport(nc) != NATS_OK)
        return CTX_EINVAL;
    if (ctx__nats_fork_init() != 0)
        return CTX_ESYSTEM;
    ctx_nats_t *b = ctx__nats_malloc(sizeof *b);
    if (!b)
        return CTX_ENOMEM;
    int rc = ctx_var_new("ctx.nats.forwarded", NULL, &b->forwarded);
    if (rc != 0) {
        ctx__nats_free(b, sizeof *b);
        return rc;
    }
    if ((rc = ctx__nats_requests_init(b)) != 0) {
        ctx_var_release(b->forwarded);
        ctx__nats_free(b, sizeof *b);
        return rc;
    }
    atomic_init(&b->refs, 1);
    b->fork_gen = ctx__nats_fork_gen();
    ctx_wire_traceparent_t id;
    ctx_wire_traceparent_new(0, &id);
    for (int i = 0; i < 8; i++)
        snprintf(b->origin + 2 * i, 3, "%02x", id.parent_id[i]);
    b->nc = nc;
    b->wire = ctx_wire_retain(wire);
    *out = b;
    return 0;
}

ctx_nats_t *ctx__nats_retain(ctx_nats_t *b) {
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void ctx_nats_release(ctx_nats_t *b) {
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (!ctx__nats_requests_release(b, ctx__nats_forked(b)))
        return; /* see request.c: kept for a libnats callback */
    ctx_wire_release(b->wire);
    ctx_var_release(b->forwarded);
    ctx__nats_free(b, sizeof *b);
}

natsConnection *ctx_nats_connection(const ctx_nats_t *b) { return b ? b->nc : NULL; }
ctx_wire_t *ctx_nats_wire(const ctx_nats_t *b) { return b ? b->wire : NULL; }

/* ---- the carrier ---- */

static int msg_iterate(void *self, ctx_wire_header_fn fn, void *user) {
    natsMsg *msg = self;
    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(msg, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return 0;
    if (s == NATS_PROTOCOL_ERROR) /* libnats cannot read the header block */
        return CTX_EPARSE;
    if (s != NATS_OK)
        return ctx__nats_error(s);
    int rc = 0;
    for (int i = 0; i < nkeys && rc == 0; i++) {
        const char **values = NULL;
        int nvalues = 0;
        s = natsMsgHeader_Values(msg, keys[i], &values, &nvalues);
        if (s == NATS_NOT_FOUND)
            continue;
        if (s != NATS_OK) {
            rc = ctx__nats_error(s);
            break;
        }
        size_t key_len = strlen(keys[i]);
        for (int j = 0; j < nvalues && rc == 0; j++)
            rc = fn(keys[i], key_len, values[j], values[j] ? strlen(values[j]) : 0, user);
        free((void *)values);
    }
    free((void *)keys);
    return rc;
}

/* Deletes one header spelled differently from `name` but equal to it
 * ignoring case; 1 if one was deleted, 0 if none is left, or an error. */
static int delete_other_spelling(natsMsg *msg, const char *name, size_t name_len) {
    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(msg, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return 0;
    if (s != NATS_OK)
        return ctx__nats_error(s);
    char *victim = NULL;
    size_t victim_size = 0;
    for (int i = 0; i < nkeys && !victim; i++) {
        size_t n = strlen(keys[i]);
        if (strcmp(keys[i], name) != 0 && ctx_wire_name_equal(keys[i], n, name, name_len)) {
            victim_size = n + 1;
            victim = ctx__nats_malloc(victim_size);
            if (victim)
                memcpy(victim, keys[i], victim_size);
        }
    }
    int found = victim != NULL;
    int nomem = !victim && victim_size;
    free((void *)keys);
    if (nomem)
        return CTX_ENOMEM;
    if (victim) {
        natsMsgHeader_Delete(msg, victim);
        ctx__nats_free(victim, victim_size);
    }
    return found;
}

/* natsMsgHeader_Set with a NUL-terminated copy of the value (on the stack
 * when it is short, as every header but a long baggage or tracestate is). */
static int set_exact(natsMsg *msg, const char *name, const char *value, size_t value_len) {
    char stack[512];
    char *copy = value_len < sizeof stack ? stack : ctx__nats_malloc(value_len + 1);
    if (!copy)
        return CTX_ENOMEM;
    memcpy(copy, value, value_len);
    copy[value_len] = '\0';
    natsStatus s = natsMsgHeader_Set(msg, name, copy);
    if (copy != stack)
        ctx__nats_free(copy, value_len + 1);
    return ctx__nats_error(s);
}

static int msg_set(void *self, const char *name, const char *value, size_t value_len) {
    natsMsg *msg = self;
    size_t name_len = strlen(name);
    for (int guard = 0; guard < 1024; guard++) { /* each pass deletes one key */
        int rc = delete_other_spelling(msg, name, name_len);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
    }
    return set_exact(msg, name, value, value_len);
}

/* The bridge's own new messages have no header to replace. */
static int fresh_set(void *self, const char *name, const char *value, size_t value_len) {
    return set_exact(self, name, value, value_len);
}

ctx_wire_carrier_t ctx_nats_carrier(natsMsg *msg) {
    ctx_wire_carrier_t c = {sizeof c, msg_iterate, NULL, msg_set, msg};
    return c;
}

int ctx_nats_inject(ctx_nats_t *b, ctx_context_t *ctx, natsMsg *msg,
                    ctx_wire_inject_report_t *report) {
    if (!b || !msg)
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    ctx_wire_carrier_t c = ctx_nats_carrier(msg);
    return ctx_wire_inject(b->wire, ctx, &c, 0, report);
}

int ctx__nats_inject_fresh(ctx_nats_t *b, natsMsg *msg, ctx_wire_inject_report_t *report) {
    ctx_wire_carrier_t c = {sizeof c, msg_iterate, NULL, fresh_set, msg};
    return ctx_wire_inject(b->wire, NULL, &c, 0, report);
}

int ctx_nats_extract(ctx_nats_t *b, natsMsg *msg, ctx_context_t **out,
                     ctx_wire_extract_report_t *report) {
    if (!b || !msg || !out)
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    ctx_wire_carrier_t c = ctx_nats_carrier(msg);
    return ctx_wire_extract(b->wire, &c, 0, out, report);
}

/* ---- publish, request, respond ---- */

int ctx__nats_new_msg(const char *subject, const char *reply, const void *data, int len,
                      natsMsg **out) {
    if (!subject || len < 0 || (!data && len > 0))
        return CTX_EINVAL;
    return ctx__nats_error(natsMsg_Create(out, subject, reply, (const char *)data, len));
}

int ctx_nats_publish_msg(ctx_nats_t *b, natsMsg *msg) {
    int rc = ctx_nats_inject(b, NULL, msg, NULL);
    if (rc < 0)
        return rc;
    return ctx__nats_error(natsConnection_PublishMsg(b->nc, msg));
}

int ctx_nats_publish(ctx_nats_t *b, const char *subject, const void *data, int len) {
    if (!b)
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    natsMsg *msg = NULL;
    int rc = ctx__nats_new_msg(subject, NULL, data, len, &msg);
    if (rc != 0)
        return rc;
    rc = ctx__nats_inject_fresh(b, msg, NULL);
    if (rc >= 0)
        rc = ctx__nats_error(natsConnection_PublishMsg(b->nc, msg));
    natsMsg_Destroy(msg);
    return rc;
}

int ctx_nats_respond(ctx_nats_t *b, natsMsg *request, const void *data, int len) {
    if (!b || !request)
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    const char *to = natsMsg_GetReply(request);
    if (!to || !*to)
        return CTX_EINVAL;
    return ctx_nats_publish(b, to, data, len);
}

/* ---- subscriptions ---- */

struct ctx_nats_sub {
    ctx_nats_t *bridge; /* retained */
    natsSubscription *sub;
    ctx_nats_msg_fn fn;
    void *user;
    void (*user_release)(void *user); /* internal users (bus receive) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int complete;
    atomic_uint_fast64_t delivered;
    atomic_uint_fast64_t dropped;
    atomic_uint_fast64_t malformed;
};

static _Thread_local ctx_nats_sub_t *running_sub;

typedef struct call {
    ctx_nats_sub_t *sub;
    natsMsg *msg;
} call_t;

static void *call_in_context(void *arg) {
    call_t *c = arg;
    c->sub->fn(c->sub->bridge, c->msg, c->sub->user);
    return NULL;
}

/* The context msg runs in: decoded from its headers, or empty when
 * libnats cannot read them (counted).  0, or CTX_ENOMEM. */
static int message_context(ctx_nats_sub_t *s, natsMsg *msg, ctx_context_t **ctx) {
    int rc = ctx_nats_extract(s->bridge, msg, ctx, NULL);
    if (rc == 0 || rc == CTX_ENOMEM)
        return rc;
    /* CTX_EPARSE (or any other carrier failure): the headers are unreadable
     * as a whole, which is no reason to lose the message. */
    atomic_fetch_add(&s->malformed, 1);
    return ctx_context_new(ctx);
}

static void on_message(natsConnection *nc, natsSubscription *nsub, natsMsg *msg, void *closure) {
    (void)nc;
    (void)nsub;
    ctx_nats_sub_t *s = closure;
    ctx_context_t *ctx = NULL;
    if (message_context(s, msg, &ctx) != 0) {
        atomic_fetch_add(&s->dropped, 1);
        natsMsg_Destroy(msg);
        return;
    }
    ctx_nats_sub_t *outer = running_sub;
    running_sub = s;
    call_t c = {s, msg};
    if (ctx_context_run(ctx, call_in_context, &c, NULL) == 0)
        atomic_fetch_add(&s->delivered, 1);
    else
        atomic_fetch_add(&s->dropped, 1);
    running_sub = outer;
    ctx_context_release(ctx);
    natsMsg_Destroy(msg);
}

static void on_complete(void *closure) {
    ctx_nats_sub_t *s = closure;
    pthread_mutex_lock(&s->lock);
    s->complete = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void sub_free(ctx_nats_sub_t *s) {
    if (s->user_release)
        s->user_release(s->user);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    ctx_nats_release(s->bridge);
    ctx__nats_free(s, sizeof *s);
}

int ctx__nats_subscribe_ex(ctx_nats_t *b, const char *subject, const char *queue,
                           ctx_nats_msg_fn fn, void *user, void (*user_release)(void *),
                           ctx_nats_sub_t **out) {
    if (!b || !subject || !fn || !out)
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    ctx_nats_sub_t *s = ctx__nats_malloc(sizeof *s);
    if (!s)
        return CTX_ENOMEM;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        ctx__nats_free(s, sizeof *s);
        return CTX_ESYSTEM;
    }
    if (pthread_cond_init(&s->cond, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        ctx__nats_free(s, sizeof *s);
        return CTX_ESYSTEM;
    }
    s->bridge = ctx__nats_retain(b);
    s->sub = NULL;
    s->fn = fn;
    s->user = user;
    s->user_release = NULL; /* set on success only: a failed call keeps nothing */
    s->complete = 0;
    atomic_init(&s->delivered, 0);
    atomic_init(&s->dropped, 0);
    atomic_init(&s->malformed, 0);
    natsStatus st = queue ? natsConnection_QueueSubscribe(&s->sub, b->nc, subject, queue, on_message, s)
                          : natsConnection_Subscribe(&s->sub, b->nc, subject, on_message, s);
    if (st != NATS_OK) {
        sub_free(s);
        return ctx__nats_error(st);
    }
    st = natsSubscription_SetOnCompleteCB(s->sub, on_complete, s);
    if (st != NATS_OK) {
        /* Only possible if the connection closed between the two calls: a
         * callback may still be running with `s`, and without a completion
         * callback there is no telling when it ends, so the record is kept
         * (a few dozen bytes, once, in a race with closing). */
        int rc = ctx__nats_error(st);
        natsSubscription_Unsubscribe(s->sub);
        return rc;
    }
    s->user_release = user_release;
    *out = s;
    return 0;
}

int ctx_nats_subscribe(ctx_nats_t *b, const char *subject, const char *queue, ctx_nats_msg_fn fn,
                       void *user, ctx_nats_sub_t **out) {
    return ctx__nats_subscribe_ex(b, subject, queue, fn, user, NULL, out);
}

int ctx_nats_unsubscribe(ctx_nats_sub_t *s) {
    if (!s)
        return CTX_EINVAL;
    if (running_sub == s)
        return CTX_EBUSY;
    if (ctx__nats_forked(s->bridge)) {
        /* A child of fork(): libnats' threads are gone and its locks may be
         * held forever, so it is not called; only this record is freed. */
        sub_free(s);
        return 0;
    }
    natsSubscription_Unsubscribe(s->sub); /* fails harmlessly when already closed */
    pthread_mutex_lock(&s->lock);
    while (!s->complete)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    natsSubscription_Destroy(s->sub);
    sub_free(s);
    return 0;
}

int ctx_nats_sub_stats(const ctx_nats_sub_t *s, ctx_nats_sub_stats_t *stats) {
    if (!s || !stats || stats->size < sizeof(size_t))
        return CTX_EINVAL;
    ctx_nats_sub_t *m = (ctx_nats_sub_t *)s; /* atomics are read through a mutable pointer */
    ctx_nats_sub_stats_t out = {
        .size = sizeof out,
        .delivered = atomic_load(&m->delivered),
        .dropped = atomic_load(&m->dropped),
        .malformed_headers = atomic_load(&m->malformed),
    };
    return ctx__struct_out(stats, &out, sizeof out);
}
