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
#include <stdatomic.h>

/* Allocation goes through the core's exported allocator (ctx_malloc), so
 * ctx_set_allocator and the tests' failing allocator reach the shared
 * library as well as the static one. */
static inline void *ctx__nats_malloc(size_t size) { return ctx_malloc(size); }
static inline void ctx__nats_free(void *p, size_t size) { ctx_free(p, size); }

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

/* ctx_nats_subscribe, plus a function ctx_nats_unsubscribe calls with
 * `user` once no callback can run any more (not called on failure). */
int ctx__nats_subscribe_ex(ctx_nats_t *bridge, const char *subject, const char *queue,
                           ctx_nats_msg_fn fn, void *user, void (*user_release)(void *),
                           ctx_nats_sub_t **out);

#endif /* CTX_NATS_INTERNAL_H */
