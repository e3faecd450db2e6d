/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/nats.h — context across processes over NATS (the nats module).
 *
 * A bridge between a libnats connection (the C client of the NATS messaging
 * system, <nats/nats.h>) and a wire registry (ctxvar/wire.h):
 *
 *   publish / request   carry the calling thread's current context in the
 *                       message headers (traceparent, tracestate,
 *                       grpc-timeout, baggage: whatever the registry lets
 *                       cross);
 *   subscribe           runs each message's callback — on the thread libnats
 *                       delivers it on — inside a new context decoded from
 *                       that message's headers, never in the delivery
 *                       thread's own context and never in the previous
 *                       message's;
 *   respond             replies from inside such a callback carry the
 *                       responder's context back; ctx_nats_request can
 *                       decode it for the requester;
 *   bus forwarding      events published on a local bus (ctxvar/bus.h) under
 *                       chosen topics are sent over NATS, and a receiving
 *                       process publishes them on its own bus inside the
 *                       publisher's context.
 *
 * Deadlines and cancellation (ctxvar/cancel.h).  A request made in a
 * context with a cancellation scope waits at most until the earlier of its
 * own timeout and the scope's deadline, wakes up as soon as the scope is
 * cancelled (from any thread, or by its deadline), and says which ended
 * it: CTX_ETIMEDOUT (its own timeout), CTX_EDEADLINE (the scope's
 * deadline), CTX_ECANCELLED (the scope was cancelled).  Nothing is sent
 * once the scope is cancelled or its deadline has passed.  The message
 * carries the time left (grpc-timeout, re-encoded at every hop, so it
 * shrinks along a chain of requests), and the receiver's callback runs in a
 * scope whose deadline is that time left (ctx_wire_extract): the callback,
 * and everything it starts with a copy of its context (pool tasks,
 * threads, loop tasks, further requests), sees ctx_cancel_check() turn
 * CTX_EDEADLINE when the caller's time is up.
 *
 * The connection stays the caller's: create it (ctx_nats_connect is a
 * convenience with reconnection turned on), keep it alive while the bridge
 * and its subscriptions are used, destroy it after them.  libnats
 * reconnects on its own; subscriptions survive a reconnection, and every
 * message delivered after it still runs in its own sender's context.
 *
 * NATS headers need nats-server 2.2 or later (Debian's nats-server is).
 * Header names are written in lowercase and read ignoring case.
 *
 * Malformed headers.  A message is never dropped because of its headers.
 * Headers that libnats reads but the wire layer refuses (a bad
 * traceparent, a malformed baggage member, ...) are dropped one by one as
 * ctx_wire_extract documents, and the message is delivered in what could
 * be decoded.  A header block libnats itself cannot read (no "NATS/1.0"
 * status line, a line without a colon, an empty name, missing CRLFs, ...)
 * hides every header: such a message is delivered in an empty context and
 * counted in ctx_nats_sub_stats_t.malformed_headers.  Only a message whose
 * context cannot be made for lack of memory is dropped (counted in
 * `dropped`).
 *
 * fork().  A bridge is tied to the process that made it: libnats'
 * connection threads do not exist in a child.  In a child of fork(), every
 * call on a bridge made before the fork (and on its subscriptions) returns
 * CTX_EFORKED without touching libnats, except the two that end things:
 * ctx_nats_release and ctx_nats_unsubscribe free the bridge's own memory
 * and return at once (the libnats objects are left alone: libnats cannot be
 * used in the child).  libnats itself is not fork-safe: a child that needs
 * NATS should exec a program that connects anew.
 *
 * Errors are the negative CTX_E* codes of ctxvar.h.  libnats statuses map
 * to them as follows: NATS_TIMEOUT → CTX_ETIMEDOUT, NATS_NO_RESPONDERS →
 * CTX_ENOTFOUND (nobody subscribes to the subject), NATS_CONNECTION_CLOSED
 * and NATS_CONNECTION_DISCONNECTED → CTX_ECLOSED, NATS_NO_SERVER →
 * CTX_ECONNECTION, NATS_NO_MEMORY → CTX_ENOMEM, NATS_INVALID_ARG /
 * NATS_INVALID_SUBJECT → CTX_EINVAL, NATS_PROTOCOL_ERROR while reading a
 * message's headers → CTX_EPARSE, anything else → CTX_ESYSTEM (libnats
 * keeps the details for the calling thread: nats_GetLastError).
 *
 * Threads: every call may be made from any thread, including from inside a
 * subscription callback (except ctx_nats_unsubscribe of that same
 * subscription, see there).  No call of this module holds a lock of its own
 * while it runs user code (message callbacks, value operations, codecs).
 */
#ifndef CTXVAR_NATS_H
#define CTXVAR_NATS_H

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "../ctxvar.h"
#include "wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ctxvar_nats is a library of its own (over ctxvar_wire, ctxvar_bus and
 * libnats). */
typedef struct ctx_nats ctx_nats_t;
typedef struct ctx_nats_sub ctx_nats_sub_t;
/* The bus of ctxvar/bus.h (the same declarations; this header does not
 * include bus.h). */
typedef struct ctx_bus ctx_bus_t;
typedef struct ctx_bus_listener ctx_bus_listener_t;

/* ---------------------------------------------------------------------- */
/* Connection and bridge                                                   */
/* ---------------------------------------------------------------------- */

/* Connects to `url` (e.g. "nats://127.0.0.1:4222") with reconnection on
 * (up to a million attempts, every 50 ms, buffering up to 8 MiB of
 * messages published while disconnected) and publishes sent at once
 * (natsOptions_SetSendAsap: a reply or an event does not wait for libnats'
 * flusher, about a millisecond; for high-rate streams make a connection of
 * your own).  *out is the caller's (natsConnection_Destroy).  Any
 * thread.  Errors: CTX_EINVAL (NULL, a URL libnats refuses), CTX_ENOMEM,
 * CTX_ECONNECTION (could not connect: nothing listens there, or the
 * server refused or closed the connection), CTX_ESYSTEM (another libnats
 * failure). */
CTX_EXPORT int ctx_nats_connect(const char *url, natsConnection **out);

/* A bridge over `nc` (borrowed: it must outlive the bridge and every
 * subscription made through it) and `wire` (retained).  *out holds the
 * caller's reference (ctx_nats_release).  Any thread.
 * Errors: CTX_EINVAL (NULL; a server without header support), CTX_ENOMEM,
 * CTX_ESYSTEM (the fork handler could not be installed). */
CTX_EXPORT int ctx_nats_new(natsConnection *nc, ctx_wire_t *wire, ctx_nats_t **out);

/* Drops the caller's reference (NULL ignored).  Subscriptions keep the
 * bridge alive until they are unsubscribed.  The last reference ends the
 * bridge's reply subscription if requests with a cancellation scope made
 * one (see ctx_nats_request): it unsubscribes it and waits until libnats
 * no longer delivers to it, so the connection must not be destroyed yet
 * (open or closed is fine).  In a child of fork() it never touches
 * libnats.  Any thread. */
CTX_EXPORT void ctx_nats_release(ctx_nats_t *bridge);

/* The connection and the registry (borrowed: valid while the bridge
 * lives; NULL for a NULL bridge).  Any thread. */
CTX_EXPORT natsConnection *ctx_nats_connection(const ctx_nats_t *bridge);
CTX_EXPORT ctx_wire_t *ctx_nats_wire(const ctx_nats_t *bridge);

/* ---------------------------------------------------------------------- */
/* Headers                                                                 */
/* ---------------------------------------------------------------------- */

/* A wire carrier over the headers of `msg` (valid while msg lives; used by
 * one thread at a time, as libnats requires of message headers).  It has
 * iterate and set, no get (ctx_wire_carrier_get searches with iterate).
 * Thread: any, one at a time per message. */
CTX_EXPORT ctx_wire_carrier_t ctx_nats_carrier(natsMsg *msg);

/* Writes `ctx` (NULL: the current context) into the headers of `msg`
 * (ctx_wire_inject: a child traceparent, the deadline's time left, the
 * registered baggage), replacing any header of those names, whatever its
 * case.  `report` (may be NULL) receives what was written, e.g. the span id
 * sent, for logs.  Returns what ctx_wire_inject returns (CTX_EINVAL also
 * for a NULL bridge or message; CTX_EFORKED in a child of fork()).
 * Thread: any, one at a time per message. */
CTX_EXPORT int ctx_nats_inject(ctx_nats_t *bridge, ctx_context_t *ctx, natsMsg *msg,
                               ctx_wire_inject_report_t *report);

/* Decodes the headers of `msg` into a new context (ctx_wire_extract, not
 * strict).  Returns 0 and *out (the caller's), or its errors: CTX_EINVAL
 * also for a NULL bridge, message or out; CTX_EPARSE if libnats cannot
 * read the message's header block at all; CTX_EFORKED in a child of
 * fork().  Thread: any, one at a time per message. */
CTX_EXPORT int ctx_nats_extract(ctx_nats_t *bridge, natsMsg *msg, ctx_context_t **out,
                                ctx_wire_extract_report_t *report);

/* ---------------------------------------------------------------------- */
/* Publish, request, respond                                               */
/* ---------------------------------------------------------------------- */

/* Publishes `len` bytes of `data` on `subject`, with the current context in
 * the headers.  Returns 0, or an inject error, or a libnats status mapped
 * as above (CTX_EINVAL also for len < 0 or data NULL with len > 0), or
 * CTX_EFORKED (in a child of fork()).  Any thread. */
CTX_EXPORT int ctx_nats_publish(ctx_nats_t *bridge, const char *subject, const void *data,
                                     int len);

/* Adds the current context to the headers of `msg` (ctx_nats_inject with
 * ctx NULL) and publishes it; `msg` stays the caller's.  Errors as
 * ctx_nats_publish.  Thread: any, one at a time per message. */
CTX_EXPORT int ctx_nats_publish_msg(ctx_nats_t *bridge, natsMsg *msg);

/* Sends a request with the current context and waits for the reply.  The
 * wait ends at the first of: the reply; `timeout_ms` milliseconds; the
 * deadline of the current context's cancellation scope; the cancellation
 * of that scope, from any thread (a wake-up registered on the scope ends
 * the wait at once).  Nothing is sent if the scope is cancelled, or its
 * deadline has passed, when the request would leave.  What came first is
 * decided when it happens, not when the waiting thread gets to run: a
 * reply that arrived before the cancellation or the end of the wait is
 * returned, one that arrived after them is dropped (with a scope; libnats'
 * own request decides as libnats does).
 * Without a scope this is libnats' own request.  With one it is the
 * bridge's: one reply subscription per bridge ("_INBOX.<nuid>.*", libnats'
 * default inbox prefix whatever the connection's custom one; made by the
 * first such request, ended by ctx_nats_release); on a connection without
 * natsOptions_SetSendAsap the request leaves with libnats' flusher, about
 * a millisecond later (ctx_nats_connect sets it).
 * On success *reply is the caller's (natsMsg_Destroy) and, if `reply_ctx`
 * is not NULL, *reply_ctx is a new context decoded from the reply's
 * headers (the responder's context; the caller's to release).
 * Errors: CTX_ETIMEDOUT (no reply within timeout_ms), CTX_EDEADLINE (the
 * scope's deadline came first — also when it had passed before the send:
 * then nothing was sent), CTX_ECANCELLED (the scope was cancelled, before
 * the send — nothing was sent — or during the wait), CTX_ENOTFOUND (no
 * responders), CTX_EINVAL, CTX_ENOMEM, CTX_ECLOSED (the connection is
 * closed, also while the request waits), CTX_EPARSE (the reply's header
 * block is unreadable and reply_ctx was asked for), CTX_EFORKED,
 * CTX_ESYSTEM.  On error nothing is returned.  Any thread, a subscription
 * callback included (with natsOptions_UseGlobalMessageDelivery the reply
 * of a request with a scope is delivered by that pool: a callback waiting
 * on a pool thread needs another one free). */
CTX_EXPORT int ctx_nats_request(ctx_nats_t *bridge, const char *subject, const void *data,
                                     int len, int64_t timeout_ms, natsMsg **reply,
                                     ctx_context_t **reply_ctx);

/* Replies to `request` (its reply subject) with `len` bytes of `data` and
 * the current context in the headers — inside a subscription callback, the
 * context decoded from the request plus whatever the callback set.
 * Errors: CTX_EINVAL (no reply subject), and those of ctx_nats_publish.
 * Any thread. */
CTX_EXPORT int ctx_nats_respond(ctx_nats_t *bridge, natsMsg *request, const void *data,
                                     int len);

/* ---------------------------------------------------------------------- */
/* Subscriptions                                                           */
/* ---------------------------------------------------------------------- */

/* A message callback: runs on a libnats delivery thread, inside a new
 * context decoded from msg's headers (entered for the call, released after
 * it; sets made by the callback die with it, except what it sends on).  If
 * the message carried a grpc-timeout, that context has a cancellation
 * scope with the caller's remaining deadline (ctxvar/cancel.h): the
 * callback and every copy of its context see ctx_cancel_check() turn
 * CTX_EDEADLINE when the caller's time is up.  `msg` is borrowed for the
 * call (the bridge destroys it afterwards). */
typedef void (*ctx_nats_msg_fn)(ctx_nats_t *bridge, natsMsg *msg, void *user);

/* Subscribes fn to `subject` (NATS wildcards allowed), in queue group
 * `queue` if it is not NULL.  Every message is delivered, whatever its
 * headers (see "Malformed headers" above), except one whose context cannot
 * be made for lack of memory: that one is dropped and counted.  fn runs
 * with no lock of this library held: it may call any function of this
 * module, on this subscription too (but ctx_nats_unsubscribe of it).
 * *out is the caller's (ctx_nats_unsubscribe).  Any thread.
 * Errors (fn never runs): CTX_EINVAL, CTX_ENOMEM, CTX_EFORKED, and the
 * mapped libnats status. */
CTX_EXPORT int ctx_nats_subscribe(ctx_nats_t *bridge, const char *subject,
                                       const char *queue, ctx_nats_msg_fn fn, void *user,
                                       ctx_nats_sub_t **out);

/* Removes interest, waits until no callback of the subscription runs any
 * more (libnats' completion callback), and frees it; fn is never called
 * after this returns.  Works on a closed connection too.  Must not be
 * called from the subscription's own callback (CTX_EBUSY: nothing done).
 * In a child of fork() it frees the bridge's record only and returns 0
 * (see "fork()" above).  Returns 0, CTX_EBUSY, CTX_EINVAL.  Thread: any
 * but the one running this subscription's callback; once per
 * subscription. */
CTX_EXPORT int ctx_nats_unsubscribe(ctx_nats_sub_t *sub);

/* What a subscription has done so far: an output struct (set `size`, e.g.
 * with CTX_STRUCT_INIT; the library writes no more than that). */
typedef struct ctx_nats_sub_stats {
    size_t size; /* sizeof the struct as the caller knows it (CTX_STRUCT_INIT) */
    uint64_t delivered;         /* messages whose callback ran */
    uint64_t dropped;           /* not delivered: no memory to make or
                                   enter their context */
    uint64_t malformed_headers; /* delivered in an empty context: libnats
                                   could not read their header block */
} ctx_nats_sub_stats_t;

/* Fills *stats.  Returns 0, or CTX_EINVAL (NULL, stats->size smaller than
 * a size_t).  Any thread (until ctx_nats_unsubscribe), a callback of the
 * subscription included; also in a child of fork() (the counts as they
 * were). */
CTX_EXPORT int ctx_nats_sub_stats(const ctx_nats_sub_t *sub, ctx_nats_sub_stats_t *stats);

/* ---------------------------------------------------------------------- */
/* Bus forwarding                                                          */
/* ---------------------------------------------------------------------- */

/* How bus events cross: their data as bytes and back.  `user` is passed to
 * both.  An input struct that can grow: set `size`
 * (CTX_STRUCT_INIT(ctx_nats_bus_codec_t), or .size = sizeof).  The
 * operations run on the publishing thread (encode) or the libnats delivery
 * thread (decode, release), never under a lock of this library.  Any
 * thread. */
typedef struct ctx_nats_bus_codec {
    size_t size; /* sizeof the struct as the caller knows it (CTX_STRUCT_INIT) */
    /* Writes the event data as bytes, snprintf-style: at most `cap` bytes,
     * returns the length the full form needs, or a negative code. */
    int (*encode)(const char *topic, const void *data, char *buf, size_t cap, void *user);
    /* Makes event data from `len` bytes: 0 and *data (one share, released
     * with `release`), or a negative code (the message is dropped). */
    int (*decode)(const char *topic, const char *bytes, size_t len, void **data, void *user);
    /* Releases data made by decode (NULL: nothing to release). */
    void (*release)(void *data);
    void *user; /* passed to encode and decode */
} ctx_nats_bus_codec_t;

/* Sends the events published on `bus` whose topic matches `pattern` (bus
 * syntax: "a.b", "a.*", "*") over NATS, on subject "<prefix>.<topic>", each
 * in its publisher's context (the listener runs in it: see ctxvar/bus.h).
 * Events that arrived from NATS (ctx_nats_bus_receive) are not sent again,
 * so two processes may forward to each other without a loop.  `codec` and
 * `prefix` are copied.  *out (if not NULL) receives the listener's handle
 * (ctx_bus_listener_release; ctx_bus_unsubscribe stops the forwarding).
 * A topic that is not a valid NATS subject token sequence, an encode
 * failure or a failed publish is a listener failure (the bus's error
 * handler sees the code).  Errors: CTX_EINVAL (NULL, prefix not a NATS
 * subject without wildcards, a codec whose size is wrong), CTX_EPARSE (a
 * malformed bus pattern), CTX_ENOMEM, CTX_ESHUTDOWN (bus shut down),
 * CTX_EFORKED (the bridge or the bus was made before fork()).  Any
 * thread. */
CTX_EXPORT int ctx_nats_bus_forward(ctx_nats_t *bridge, ctx_bus_t *bus, const char *pattern,
                                         const char *prefix, const ctx_nats_bus_codec_t *codec,
                                         ctx_bus_listener_t **out);

/* Receives the events forwarded under `prefix` (NATS subject
 * "<prefix>.>") and publishes each on `bus` synchronously, on the libnats
 * delivery thread, inside the context decoded from the message — the
 * publisher's context — so the bus's listeners run in it.  *out is the
 * caller's (ctx_nats_unsubscribe).  Errors: as ctx_nats_subscribe, and
 * CTX_EINVAL for a codec whose size is wrong.  Any thread. */
CTX_EXPORT int ctx_nats_bus_receive(ctx_nats_t *bridge, ctx_bus_t *bus, const char *prefix,
                                         const ctx_nats_bus_codec_t *codec,
                                         ctx_nats_sub_t **out);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_NATS_H */
