/* SPDX-License-Identifier: MIT */
/*
 * nats_internal.h — what the nats module's files share (internal).
 *
 * Allocation follows the other modules: the static library allocates
 * through the core's allocator, the shared one through malloc.
 */
#ifndef CTX_NATS_INTERNAL_H
#define CTX_NATS_INTERNAL_H

#include <ctxvar.h>
#include <ctxvar/nats.h>
#include <ctxvar/wire.h>
#include <pthread.h>
#include <stdatomic.h>

/* Allocation goes through the core's exported allocator (ctx_malloc), so
 * ctx_set_allocator and the tests' failing allocator reach the shared
 * library as well as the static one. */
static inline void *ctx__nats_malloc(size_t size) { return ctx_malloc(size); }
static inline void ctx__nats_free(void *p, size_t size) { ctx_free(p, size); }

/* A request waiting for its reply (request.c). */
typedef struct ctx__nats_pending ctx__nats_pending_t;

#define CTX__NATS_PENDING_BUCKETS 64

/* The states of a bridge's reply subscription (request.c). */
enum {
    CTX__NATS_MUX_NONE,   /* not made yet */
    CTX__NATS_MUX_OPEN,   /* replies arrive */
    CTX__NATS_MUX_CLOSED, /* it ended with the connection */
    CTX__NATS_MUX_BROKEN  /* libnats refused its completion callback */
};

struct ctx_nats {
    atomic_size_t refs;
    unsigned long fork_gen; /* ctx__nats_fork_gen() when it was made */
    natsConnection *nc; /* borrowed */
    ctx_wire_t *wire;   /* retained */
    /* Set (to a non-NULL marker) in the context in which
     * ctx_nats_bus_receive republishes an event, so that
     * ctx_nats_bus_forward does not send it back. */
    ctx_var_t *forwarded;
    /* A random id of this bridge, sent with forwarded bus events so that a
     * bridge that both forwards and receives a prefix skips its own. */
    char origin[17];
    /* Requests with a cancellation scope (request.c): the reply
     * subscription ("mux") and the requests waiting on it, under
     * req_lock; mux_init_lock makes the mux once. */
    pthread_mutex_t req_lock;
    pthread_mutex_t mux_init_lock;
    pthread_cond_t mux_cond; /* mux_complete became 1 */
    natsSubscription *mux;
    int mux_state;    /* CTX__NATS_MUX_* */
    int mux_complete; /* its completion callback has run */
    char mux_prefix[64]; /* "_INBOX.<nuid>." */
    size_t mux_prefix_len;
    uint64_t next_id;
    ctx__nats_pending_t *pending[CTX__NATS_PENDING_BUCKETS];
};

/* The header that carries it. */
#define CTX__NATS_ORIGIN "ctx-bus-origin"

/* A libnats status as a CTX_E* code (see ctxvar/nats.h). */
int ctx__nats_error(natsStatus s);

/* How many fork()s this process descends from (counted by a
 * pthread_atfork child handler, installed by ctx__nats_fork_init). */
unsigned long ctx__nats_fork_gen(void);
/* Installs the handler once; 0 or CTX_ESYSTEM. */
int ctx__nats_fork_init(void);
/* 1 if `bridge` was made before a fork() this process is a child of. */
static inline int ctx__nats_forked(const ctx_nats_t *bridge) {
    return bridge->fork_gen != ctx__nats_fork_gen();
}

/* One more reference to the bridge. */
ctx_nats_t *ctx__nats_retain(ctx_nats_t *bridge);

/* 1 if `s` (n bytes) is a valid NATS subject without wildcards: tokens of
 * printable non-space ASCII other than '*' and '>', separated by single
 * dots. */
int ctx__nats_subject_valid(const char *s, size_t n);

/* A message to `subject` (reply subject `reply`, may be NULL) with `len`
 * bytes of `data`: 0, CTX_EINVAL, or a libnats status mapped. */
int ctx__nats_new_msg(const char *subject, const char *reply, const void *data, int len,
                      natsMsg **out);
/* Injects the current context into a message made by ctx__nats_new_msg
 * (no header to replace); what ctx_wire_inject returns. */
int ctx__nats_inject_fresh(ctx_nats_t *bridge, natsMsg *msg, ctx_wire_inject_report_t *report);

/* request.c: the bridge's part of requests.  _init: 0 or CTX_ESYSTEM.
 * _release (last reference): ends the reply subscription (not in a child
 * of fork()) and returns 1, or 0 if the bridge's memory must be kept (a
 * callback of libnats may still use it). */
int ctx__nats_requests_init(ctx_nats_t *bridge);
int ctx__nats_requests_release(ctx_nats_t *bridge, int forked);

/* ctx_nats_subscribe, plus a function ctx_nats_unsubscribe calls with
 * `user` once no callback can run any more (not called on failure). */
int ctx__nats_subscribe_ex(ctx_nats_t *bridge, const char *subject, const char *queue,
                           ctx_nats_msg_fn fn, void *user, void (*user_release)(void *),
                           ctx_nats_sub_t **out);

#endif /* CTX_NATS_INTERNAL_H */
