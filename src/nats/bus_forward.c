/* SPDX-License-Identifier: MIT */
/*
 * bus_forward.c — bus events across processes: a bus listener that sends
 * events over NATS in their publisher's context, and a NATS subscription
 * that publishes them on another process's bus in that same context.
 *
 *   process A                                      process B
 *   ctx_bus_publish(bus_a, "order.created")        ctx_nats_bus_receive
 *     └ forward listener (runs in the publisher's    └ on message: runs in the
 *       context, see ctxvar/bus.h)                     context decoded from the
 *         encode data (codec)                          headers = A's publisher's
 *         ctx_nats_publish("<prefix>.order.created")     decode data (codec)
 *           headers ← the publisher's context  ─────▶    mark "forwarded"
 *                                                         ctx_bus_publish(bus_b)
 *                                                           └ B's listeners run
 *                                                             in A's context
 *
 * Loops: an event B received and republishes carries the bridge's private
 * "forwarded" variable in its context (set in the message's own context,
 * which dies with the callback), and the forward listener skips events
 * published in such a context.  So A→B and B→A forwarding of the same topics
 * does not ping-pong.  And since NATS delivers a connection's messages to
 * its own subscriptions too, each forwarded message carries the sending
 * bridge's random id (header "ctx-bus-origin"): a bridge that forwards and
 * receives the same prefix skips its own events instead of publishing them
 * twice.
 *
 * Subjects: "<prefix>.<topic>".  Bus topics are dot-separated strings
 * without '*'; one that is not also a valid NATS subject (spaces, '>',
 * empty tokens) cannot be forwarded and is reported as a listener failure
 * (CTX_EINVAL), as are encode and publish failures: the bus's error handler
 * sees them.  Event data up to 4 KiB is encoded on the stack; larger data
 * up to the server's maximum payload is encoded into one allocation.
 */
#include <string.h>

#include <ctxvar/bus.h>

#include "common/common.h"
#include "nats/nats_internal.h"

#define MARK ((void *)&ctx__nats_forwarded_mark)
static const char ctx__nats_forwarded_mark = 1;

typedef struct route {
    ctx_nats_t *bridge; /* retained */
    ctx_bus_t *bus;     /* receive only; borrowed */
    ctx_nats_bus_codec_t codec;
    size_t prefix_len;
    size_t size;
    char prefix[]; /* NUL terminated */
} route_t;

/* A new route; 0, CTX_EINVAL (a codec whose size is wrong) or CTX_ENOMEM. */
static int route_new(ctx_nats_t *b, const char *prefix, const ctx_nats_bus_codec_t *codec,
                     route_t **out) {
    ctx_nats_bus_codec_t local = {.size = sizeof local};
    if (codec && ctx__struct_in(&local, sizeof local, codec, sizeof(ctx_nats_bus_codec_t)) != 0)
        return CTX_EINVAL;
    size_t n = strlen(prefix);
    size_t size = sizeof(route_t) + n + 1;
    route_t *r = ctx__nats_malloc(size);
    if (!r)
        return CTX_ENOMEM;
    r->bridge = ctx__nats_retain(b);
    r->bus = NULL;
    r->codec = local;
    r->prefix_len = n;
    r->size = size;
    memcpy(r->prefix, prefix, n + 1);
    *out = r;
    return 0;
}

static void route_free(void *user) {
    route_t *r = user;
    ctx_nats_release(r->bridge);
    ctx__nats_free(r, r->size);
}

/* ---- sending ---- */

static int forward_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    route_t *r = user;
    void *mark = NULL;
    if (ctx_var_get(r->bridge->forwarded, &mark) == CTX_VALUE)
        return 0; /* it came from NATS: do not send it back */
    const char *topic = ctx_bus_event_topic(event);
    size_t topic_len = strlen(topic);
    char subject_stack[256];
    size_t subject_size = r->prefix_len + 1 + topic_len + 1;
    char *subject = subject_size <= sizeof subject_stack ? subject_stack : ctx__nats_malloc(subject_size);
    if (!subject)
        return CTX_ENOMEM;
    memcpy(subject, r->prefix, r->prefix_len);
    subject[r->prefix_len] = '.';
    memcpy(subject + r->prefix_len + 1, topic, topic_len + 1);
    int rc = 0;
    if (!ctx__nats_subject_valid(subject, subject_size - 1))
        rc = CTX_EINVAL;

    char stack[4096];
    char *bytes = stack;
    size_t bytes_size = 0;
    int len = 0;
    if (rc == 0 && r->codec.encode) {
        len = r->codec.encode(topic, ctx_bus_event_data(event), stack, sizeof stack, r->codec.user);
        if (len < 0) {
            rc = len;
        } else if ((size_t)len >= sizeof stack) {
            int64_t max = natsConnection_GetMaxPayload(r->bridge->nc);
            if (max > 0 && len > max) {
                rc = CTX_ELIMIT;
            } else {
                bytes_size = (size_t)len + 1;
                bytes = ctx__nats_malloc(bytes_size);
                if (!bytes) {
                    rc = CTX_ENOMEM;
                } else {
                    int again = r->codec.encode(topic, ctx_bus_event_data(event), bytes, bytes_size,
                                                r->codec.user);
                    if (again != len)
                        rc = again < 0 ? again : CTX_ECALLBACK; /* unstable encoder */
                }
            }
        }
    }
    natsMsg *msg = NULL;
    if (rc == 0)
        rc = ctx__nats_error(natsMsg_Create(&msg, subject, NULL, bytes, len));
    if (rc == 0)
        rc = ctx__nats_error(natsMsgHeader_Set(msg, CTX__NATS_ORIGIN, r->bridge->origin));
    if (rc == 0)
        rc = ctx_nats_publish_msg(r->bridge, msg);
    natsMsg_Destroy(msg);
    if (bytes != stack)
        ctx__nats_free(bytes, bytes_size);
    if (subject != subject_stack)
        ctx__nats_free(subject, subject_size);
    return rc;
}

int ctx_nats_bus_forward(ctx_nats_t *b, ctx_bus_t *bus, const char *pattern, const char *prefix,
                         const ctx_nats_bus_codec_t *codec, ctx_bus_listener_t **out) {
    if (!b || !bus || !prefix || !ctx__nats_subject_valid(prefix, strlen(prefix)))
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    route_t *r = NULL;
    int rc = route_new(b, prefix, codec, &r);
    if (rc != 0)
        return rc;
    ctx_bus_subscribe_options_t opts = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    opts.user_release = route_free;
    rc = ctx_bus_subscribe(bus, pattern, forward_listener, r, &opts, out);
    if (rc != 0)
        route_free(r);
    return rc;
}

/* ---- receiving ---- */

static void on_forwarded(ctx_nats_t *b, natsMsg *msg, void *user) {
    route_t *r = user;
    const char *subject = natsMsg_GetSubject(msg);
    if (!subject || strncmp(subject, r->prefix, r->prefix_len) != 0 || subject[r->prefix_len] != '.')
        return;
    const char *topic = subject + r->prefix_len + 1;
    const char *origin = NULL;
    if (natsMsgHeader_Get(msg, CTX__NATS_ORIGIN, &origin) == NATS_OK && origin &&
        strcmp(origin, b->origin) == 0)
        return; /* this bridge forwarded it: its bus has had it already */
    void *data = NULL;
    if (r->codec.decode) {
        int len = natsMsg_GetDataLength(msg);
        const char *bytes = natsMsg_GetData(msg);
        if (r->codec.decode(topic, bytes ? bytes : "", len > 0 ? (size_t)len : 0, &data,
                            r->codec.user) != 0)
            return; /* the codec refused it: dropped */
    }
    ctx_bus_event_t *event = NULL;
    if (ctx_bus_event_new(topic, data, r->codec.release, &event) != 0) {
        if (r->codec.release)
            r->codec.release(data);
        return;
    }
    /* This callback's context is the message's own: mark it, publish in it. */
    if (ctx_var_set(b->forwarded, MARK, NULL) == 0)
        ctx_bus_publish(r->bus, event);
    ctx_bus_event_release(event);
}

int ctx_nats_bus_receive(ctx_nats_t *b, ctx_bus_t *bus, const char *prefix,
                         const ctx_nats_bus_codec_t *codec, ctx_nats_sub_t **out) {
    if (!b || !bus || !prefix || !out || !ctx__nats_subject_valid(prefix, strlen(prefix)))
        return CTX_EINVAL;
    if (ctx__nats_forked(b))
        return CTX_EFORKED;
    route_t *r = NULL;
    int rc = route_new(b, prefix, codec, &r);
    if (rc != 0)
        return rc;
    r->bus = bus;
    size_t n = r->prefix_len + 3;
    char *subject = ctx__nats_malloc(n);
    if (!subject) {
        route_free(r);
        return CTX_ENOMEM;
    }
    memcpy(subject, prefix, r->prefix_len);
    memcpy(subject + r->prefix_len, ".>", 3);
    rc = ctx__nats_subscribe_ex(b, subject, NULL, on_forwarded, r, route_free, out);
    ctx__nats_free(subject, n);
    if (rc != 0)
        route_free(r);
    return rc;
}
