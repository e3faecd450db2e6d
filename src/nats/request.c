/* SPDX-License-Identifier: MIT */
/*
 * request.c — ctx_nats_request: a request that waits at most until the
 * earlier of its own timeout and its scope's deadline, wakes up when its
 * scope is cancelled, and says which of the three ended it.
 *
 * Two paths, chosen by the current context:
 *
 *   no scope   nothing can end the wait but a reply or the timeout, so the
 *              request is libnats' own (natsConnection_RequestMsg): as fast
 *              as a plain libnats request, and no subscription of the
 *              bridge's is ever made for it.
 *   a scope    (ctxvar/cancel.h) libnats' request cannot be woken early,
 *              so the bridge makes its own, as libnats does inside: one
 *              reply subscription per bridge (the "mux", on
 *              "_INBOX.<nuid>.*", made by the first such request), each
 *              request published with reply subject "_INBOX.<nuid>.<id>",
 *              and the caller waiting on a condition variable of its own
 *              that three things signal: the reply (the mux's delivery
 *              thread finds the waiter by id), the scope's cancellation (a
 *              wake-up callback on the scope, ctx_cancel_callback_init_
 *              wakeup: no context captured, run by whoever cancels — the
 *              timer thread for a deadline) and the end of the mux
 *              subscription (its completion callback: the connection was
 *              closed).
 *
 *   ctx_nats_t ── req_lock ─┬─ mux: natsSubscription "_INBOX.<nuid>.*"
 *                           ├─ mux_state (NONE → OPEN → CLOSED; BROKEN)
 *                           └─ pending[64]: waiting requests, hashed by id
 *
 *   caller                         mux delivery thread      canceller
 *   ------                         -------------------      ---------
 *   link {id, cond} under req_lock
 *   wake-up on the scope ─────────────────────────────────▶ may run now
 *   inject; time left 0: not sent
 *   publish, reply-to ...<id>
 *   wait on cond until a reply,    on_reply: find id,       wake: woken = 1,
 *     woken, mux closed, or end      reply = msg, unlock,     signal
 *                                    then signal
 *   unlink; let a signal under way end; clear the wake-up (outside
 *   req_lock, which the wake-up takes)
 *
 * The end of the wait is min(now + timeout, the scope's deadline).  Reaching
 * it is CTX_EDEADLINE if the deadline came first (whether or not the timer
 * thread has cancelled the scope yet), else CTX_ETIMEDOUT; a cancellation
 * is the scope's error (CTX_ECANCELLED, or CTX_EDEADLINE from the timer).
 * Which came first is decided where it happens, under req_lock, not when
 * the waiter's thread gets to run: on_reply takes a reply only if the
 * waiter was not woken and the clock has not reached the end, so a reply
 * that arrives after the deadline is late however slowly the waiter wakes,
 * and one that arrived before a cancellation is returned.
 * Nothing is sent once the scope is cancelled or its deadline has passed:
 * the test is the time left that inject itself computed for the
 * grpc-timeout header (0 means the deadline was reached before the send),
 * so a request that reached a responder always carried time left.
 *
 * The mux lives as long as the bridge: the bridge's last release
 * unsubscribes it and waits for its completion callback (after which libnats
 * never calls on_reply again), except in a child of fork(), where libnats
 * is not touched.  If libnats refuses the completion callback (the
 * connection closed between the two calls), nothing would tell when
 * on_reply has returned for the last time, so the bridge's memory is kept
 * (BROKEN: a few hundred bytes, once, in a race with closing), as
 * bridge.c does for a subscription in the same race.
 *
 * Limits: the mux's inbox prefix is libnats' default ("_INBOX."), whatever
 * the connection's natsOptions_SetCustomInboxPrefix says; a request with a
 * scope on a connection without natsOptions_SetSendAsap leaves with
 * libnats' flusher (about a millisecond later; ctx_nats_connect sets it).
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <ctxvar/cancel.h>

#include "common/common.h"
#include "nats/nats_internal.h"

/* A waiting request (on the caller's stack). */
struct ctx__nats_pending {
    ctx__nats_pending_t *next;
    ctx__nats_pending_t **pprev;
    uint64_t id;
    ctx_nats_t *bridge;
    int64_t end;    /* the end of the wait: a reply after it is late */
    natsMsg *reply; /* set by on_reply */
    int woken;      /* set by the wake-up: the scope was cancelled */
    /* 1 from the moment on_reply hands over the reply (under req_lock) to
     * the end of its signal, which it sends after unlocking: the waiter
     * does not destroy `cond` before it is 0 again (see on_reply). */
    atomic_int signalling;
    int monotonic;  /* the clock of `cond` */
    pthread_cond_t cond;
};

/* ---- the bridge's part ---- */

int ctx__nats_requests_init(ctx_nats_t *b) {
    if (pthread_mutex_init(&b->req_lock, NULL) != 0)
        return CTX_ESYSTEM;
    if (pthread_mutex_init(&b->mux_init_lock, NULL) != 0) {
        pthread_mutex_destroy(&b->req_lock);
        return CTX_ESYSTEM;
    }
    if (pthread_cond_init(&b->mux_cond, NULL) != 0) {
        pthread_mutex_destroy(&b->mux_init_lock);
        pthread_mutex_destroy(&b->req_lock);
        return CTX_ESYSTEM;
    }
    b->mux = NULL;
    b->mux_state = CTX__NATS_MUX_NONE;
    b->mux_complete = 0;
    b->mux_prefix[0] = '\0';
    b->mux_prefix_len = 0;
    b->next_id = 0;
    memset(b->pending, 0, sizeof b->pending);
    return 0;
}

int ctx__nats_requests_release(ctx_nats_t *b, int forked) {
    if (forked)
        return 1; /* libnats and this bridge's locks are left alone */
    if (b->mux) {
        if (b->mux_state == CTX__NATS_MUX_BROKEN)
            return 0; /* on_reply may still run: keep the memory */
        natsSubscription_Unsubscribe(b->mux); /* fails harmlessly when closed */
        pthread_mutex_lock(&b->req_lock);
        while (!b->mux_complete)
            pthread_cond_wait(&b->mux_cond, &b->req_lock);
        pthread_mutex_unlock(&b->req_lock);
        natsSubscription_Destroy(b->mux);
    }
    pthread_cond_destroy(&b->mux_cond);
    pthread_mutex_destroy(&b->mux_init_lock);
    pthread_mutex_destroy(&b->req_lock);
    return 1;
}

/* ---- the mux's callbacks (libnats' delivery thread) ---- */

static ctx__nats_pending_t **bucket(ctx_nats_t *b, uint64_t id) {
    return &b->pending[id % CTX__NATS_PENDING_BUCKETS];
}

/* The waiter the reply subject names, under req_lock; NULL if none (late,
 * or not ours). */
static ctx__nats_pending_t *find_waiter(ctx_nats_t *b, const char *subject) {
    size_t n = subject ? strlen(subject) : 0;
    if (n <= b->mux_prefix_len || n > b->mux_prefix_len + 20 ||
        memcmp(subject, b->mux_prefix, b->mux_prefix_len) != 0)
        return NULL;
    uint64_t id = 0;
    for (size_t i = b->mux_prefix_len; i < n; i++) {
        unsigned d = (unsigned)(subject[i] - '0');
        if (d > 9 || id > (UINT64_MAX - d) / 10)
            return NULL;
        id = id * 10 + d;
    }
    for (ctx__nats_pending_t *p = *bucket(b, id); p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

/* The signal goes after the unlock: sent under req_lock, it would wake the
 * waiter only for it to block on the lock this thread still holds (glibc's
 * condition variables do not hand the mutex over), a second sleep and
 * wake-up per request.  The waiter may see the reply as soon as the lock
 * is released and return, so `signalling`, raised under the lock with the
 * reply, tells it to let the signal end before it destroys the condition
 * variable (wait_unlink). */
static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    (void)nc, (void)sub;
    ctx_nats_t *b = closure;
    pthread_mutex_lock(&b->req_lock);
    ctx__nats_pending_t *p = find_waiter(b, natsMsg_GetSubject(msg));
    /* taken only in time: not after a cancellation, not after the end of
     * the wait, however late the waiter's thread runs */
    if (p && !p->reply && !p->woken && ctx__monotonic_ns() < p->end) {
        p->reply = msg;
        msg = NULL;
        atomic_store_explicit(&p->signalling, 1, memory_order_relaxed);
    } else {
        p = NULL;
    }
    pthread_mutex_unlock(&b->req_lock);
    if (p) {
        pthread_cond_signal(&p->cond);
        atomic_store_explicit(&p->signalling, 0, memory_order_release); /* last touch of p */
    }
    if (msg) /* a reply nobody waits for any more */
        natsMsg_Destroy(msg);
}

static void on_mux_complete(void *closure) {
    ctx_nats_t *b = closure;
    pthread_mutex_lock(&b->req_lock);
    b->mux_complete = 1;
    if (b->mux_state != CTX__NATS_MUX_BROKEN)
        b->mux_state = CTX__NATS_MUX_CLOSED;
    for (size_t i = 0; i < CTX__NATS_PENDING_BUCKETS; i++)
        for (ctx__nats_pending_t *p = b->pending[i]; p; p = p->next)
            pthread_cond_signal(&p->cond);
    pthread_cond_broadcast(&b->mux_cond);
    pthread_mutex_unlock(&b->req_lock);
}

/* Makes the mux if the bridge has none yet: 0 (open), or CTX_ECLOSED (it
 * ended: the connection is closed), or a libnats status mapped. */
static int mux_open(ctx_nats_t *b) {
    pthread_mutex_lock(&b->mux_init_lock); /* one maker at a time */
    pthread_mutex_lock(&b->req_lock);
    int state = b->mux_state;
    pthread_mutex_unlock(&b->req_lock);
    int rc = state == CTX__NATS_MUX_OPEN ? 0 : CTX_ECLOSED;
    if (state == CTX__NATS_MUX_NONE) {
        natsInbox *inbox = NULL;
        natsSubscription *sub = NULL;
        natsStatus s = natsInbox_Create(&inbox);
        char subject[sizeof b->mux_prefix + 1];
        if (s == NATS_OK) {
            int n = snprintf(b->mux_prefix, sizeof b->mux_prefix, "%s.", inbox);
            if (n <= 0 || (size_t)n >= sizeof b->mux_prefix)
                s = NATS_INVALID_ARG;
            else
                b->mux_prefix_len = (size_t)n;
            snprintf(subject, sizeof subject, "%s*", b->mux_prefix);
            natsInbox_Destroy(inbox);
        }
        if (s == NATS_OK)
            s = natsConnection_Subscribe(&sub, b->nc, subject, on_reply, b);
        if (s == NATS_OK) {
            natsStatus cs = natsSubscription_SetOnCompleteCB(sub, on_mux_complete, b);
            pthread_mutex_lock(&b->req_lock);
            b->mux = sub;
            if (cs != NATS_OK)
                b->mux_state = CTX__NATS_MUX_BROKEN;
            else if (!b->mux_complete) /* closed already: it said CLOSED */
                b->mux_state = CTX__NATS_MUX_OPEN;
            rc = b->mux_state == CTX__NATS_MUX_OPEN ? 0 : CTX_ECLOSED;
            pthread_mutex_unlock(&b->req_lock);
            if (cs != NATS_OK)
                natsSubscription_Unsubscribe(sub);
        } else {
            rc = ctx__nats_error(s);
        }
    }
    pthread_mutex_unlock(&b->mux_init_lock);
    return rc;
}

/* ---- one request ---- */

/* The wake-up: runs on the cancelling thread, outside the cancel module's
 * locks, in no particular context. */
static void wake(void *arg) {
    ctx__nats_pending_t *p = arg;
    pthread_mutex_lock(&p->bridge->req_lock);
    p->woken = 1;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->bridge->req_lock);
}

/* Links p with a new id: 0, or CTX_ECLOSED if the mux has ended. */
static int link_waiter(ctx_nats_t *b, ctx__nats_pending_t *p) {
    pthread_mutex_lock(&b->req_lock);
    int open = b->mux_state == CTX__NATS_MUX_OPEN;
    if (open) {
        p->id = ++b->next_id;
        ctx__nats_pending_t **head = bucket(b, p->id);
        p->next = *head;
        if (p->next)
            p->next->pprev = &p->next;
        *head = p;
        p->pprev = head;
    }
    pthread_mutex_unlock(&b->req_lock);
    return open ? 0 : CTX_ECLOSED;
}

/* Waits (if the request was `published`), under req_lock, until a reply,
 * the wake-up, the mux's end or `end` (CLOCK_MONOTONIC ns); then unlinks
 * p.  Returns what ended it: 0 (reply in p->reply), 1 (woken), 2 (mux
 * closed), 3 (end reached, or nothing to wait for). */
static int wait_unlink(ctx_nats_t *b, ctx__nats_pending_t *p, int64_t end, int published) {
    pthread_mutex_lock(&b->req_lock);
    int why = 3;
    for (;;) {
        if (p->reply) {
            why = 0;
            break;
        }
        if (p->woken) {
            why = 1;
            break;
        }
        if (b->mux_state != CTX__NATS_MUX_OPEN) {
            why = 2;
            break;
        }
        int64_t now = ctx__monotonic_ns();
        if (!published || now >= end)
            break;
        struct timespec ts;
        ctx__cond_deadline(p->monotonic, end - now, &ts);
        pthread_cond_timedwait(&p->cond, &b->req_lock, &ts);
    }
    *p->pprev = p->next;
    if (p->next)
        p->next->pprev = p->pprev;
    pthread_mutex_unlock(&b->req_lock);
    /* A reply was handed over under the lock, with `signalling` raised;
     * its signal may still be on its way (on_reply). */
    while (atomic_load_explicit(&p->signalling, memory_order_acquire))
        sched_yield();
    return why;
}

/* Publishes the request with reply subject <prefix><id>: 0, 1 (not sent:
 * the deadline had passed when inject computed the time left, or the scope
 * was cancelled meanwhile), or a negative code. */
static int send_request(ctx_nats_t *b, ctx__nats_pending_t *p, const char *subject,
                        const void *data, int len) {
    char reply_to[sizeof b->mux_prefix + 21];
    snprintf(reply_to, sizeof reply_to, "%s%" PRIu64, b->mux_prefix, p->id);
    natsMsg *msg = NULL;
    int rc = ctx__nats_new_msg(subject, reply_to, data, len, &msg);
    if (rc != 0)
        return rc;
    ctx_wire_inject_report_t rep = CTX_STRUCT_INIT(ctx_wire_inject_report_t);
    rc = ctx__nats_inject_fresh(b, msg, &rep);
    if (rc >= 0) {
        pthread_mutex_lock(&b->req_lock);
        int woken = p->woken;
        pthread_mutex_unlock(&b->req_lock);
        if (woken || (rep.deadline && rep.timeout_ns == 0))
            rc = 1; /* nothing leaves once the time is up */
        else
            rc = ctx__nats_error(natsConnection_PublishMsg(b->nc, msg));
    }
    natsMsg_Destroy(msg);
    return rc;
}

/* The end of the wait (*end) and whether it is the scope's deadline. */
static int wait_end(ctx_cancel_scope_t *scope, int64_t timeout_ms, int64_t *end) {
    int64_t now = ctx__monotonic_ns(), deadline;
    *end = timeout_ms > (INT64_MAX - now) / 1000000 ? INT64_MAX : now + timeout_ms * 1000000;
    if (ctx_cancel_scope_deadline(scope, &deadline) == 0 && deadline <= *end) {
        *end = deadline;
        return 1;
    }
    return 0;
}

/* The request with a scope: 0 and *reply, or an error. */
static int request_in_scope(ctx_nats_t *b, ctx_cancel_scope_t *scope, const char *subject,
                            const void *data, int len, int64_t timeout_ms, natsMsg **reply) {
    int rc = ctx_cancel_scope_error(scope);
    if (rc != 0)
        return rc; /* cancelled already: nothing is sent */
    int64_t end;
    int end_is_deadline = wait_end(scope, timeout_ms, &end);
    if ((rc = mux_open(b)) != 0)
        return rc;
    ctx__nats_pending_t p = {.bridge = b, .end = end};
    atomic_init(&p.signalling, 0);
    if (ctx__cond_init_monotonic(&p.cond, &p.monotonic) != 0)
        return CTX_ESYSTEM;
    if ((rc = link_waiter(b, &p)) != 0) {
        pthread_cond_destroy(&p.cond);
        return rc;
    }
    ctx_cancel_callback_t cb;
    int ran = ctx_cancel_callback_init_wakeup(&cb, scope, wake, &p) == CTX_CANCEL_CALLBACK_RAN;
    int sent = ran ? 1 : send_request(b, &p, subject, data, len);
    int why = wait_unlink(b, &p, end, sent == 0);
    ctx_cancel_callback_clear(&cb); /* the wake-up has returned, or never runs */
    pthread_cond_destroy(&p.cond);
    if (why == 0 && sent == 0) {
        if (!natsMsg_IsNoResponders(p.reply)) {
            *reply = p.reply;
            return 0;
        }
        natsMsg_Destroy(p.reply);
        return CTX_ENOTFOUND;
    }
    if (p.reply)
        natsMsg_Destroy(p.reply);
    if (sent < 0)
        return sent;
    if ((rc = ctx_cancel_scope_error(scope)) != 0)
        return rc; /* woken, or cancelled while the wait ended otherwise */
    if (why == 2)
        return CTX_ECLOSED;
    return end_is_deadline || sent == 1 ? CTX_EDEADLINE : CTX_ETIMEDOUT;
}

/* The request without a scope: libnats' own. */
static int request_plain(ctx_nats_t *b, const char *subject, const void *data, int len,
                         int64_t timeout_ms, natsMsg **reply) {
    natsMsg *msg = NULL;
    int rc = ctx__nats_new_msg(subject, NULL, data, len, &msg);
    if (rc != 0)
        return rc;
    rc = ctx__nats_inject_fresh(b, msg, NULL);
    if (rc >= 0)
        rc = ctx__nats_error(natsConnection_RequestMsg(reply, b->nc, msg, timeout_ms));
    natsMsg_Destroy(msg);
    return rc < 0 ? rc : 0;
}

int ctx_nats_request(ctx_nats_t *b, const char *subject, const void *data, int len,
                     int64_t timeout_ms, natsMsg **reply, ctx_context_t **reply_ctx) {
    if (!b || !reply || timeout_ms < 0)
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    natsMsg *r = NULL;
    ctx_cancel_scope_t *scope;
    int rc;
    if (ctx_cancel_scope_current(&scope) == 0) {
        ctx_cancel_scope_retain(scope); /* for the call, whatever encode does */
        rc = request_in_scope(b, scope, subject, data, len, timeout_ms, &r);
        ctx_cancel_scope_release(scope);
    } else {
        rc = request_plain(b, subject, data, len, timeout_ms, &r);
    }
    if (rc != 0)
        return rc;
    if (reply_ctx && (rc = ctx_nats_extract(b, r, reply_ctx, NULL)) != 0) {
        natsMsg_Destroy(r);
        return rc;
    }
    *reply = r;
    return 0;
}
