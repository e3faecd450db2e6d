/* SPDX-License-Identifier: MIT */
/*
 * event.c — events: a topic, a data pointer, a reference count.
 *
 *   ┌───────────────────────────────────────────────┐
 *   │ refs │ data │ data_release │ hash │ len │ topic "request.progress\0"
 *   └───────────────────────────────────────────────┘   (one allocation)
 *
 * An event is immutable once made, except for its reference count, so any
 * number of threads may deliver it at once.  The topic's FNV-1a hash and
 * length are computed here once, so matching an exact pattern during a
 * delivery is two integer compares before the memcmp that confirms it.
 *
 * Who holds references: the creator (until it releases), each asynchronous
 * delivery (from its publish until its last listener returned or the
 * executor dropped it), and any listener that retained it.  A synchronous
 * publish borrows the caller's.  The last release calls data_release once.
 */
#include <string.h>

#include "bus/bus_internal.h"

/* A new event id: unique for the process's life, taken from a block this
 * thread reserved (one shared increment per 1024 events). */
static uint64_t next_event_id(void) {
    static atomic_uint_fast64_t blocks = 1;
    static _Thread_local uint64_t next, end;
    if (next == end) {
        next = atomic_fetch_add_explicit(&blocks, 1024, memory_order_relaxed);
        end = next + 1024;
    }
    return next++;
}

uint32_t ctx__bus_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

int ctx_bus_event_new(const char *topic, void *data, void (*data_release)(void *data),
                      ctx_bus_event_t **out) {
    if (!topic || !out)
        return CTX_EINVAL;
    if (!topic[0] || strchr(topic, '*'))
        return CTX_EPARSE;
    size_t len = strlen(topic);
    ctx_bus_event_t *ev = ctx__bus_malloc(sizeof *ev + len + 1);
    if (!ev)
        return CTX_ENOMEM;
    atomic_init(&ev->refs, 1);
    ev->id = next_event_id();
    ev->data = data;
    ev->data_release = data_release;
    ev->hash = ctx__bus_hash(topic, len);
    ev->len = len;
    memcpy(ev->topic, topic, len + 1);
    *out = ev;
    return 0;
}

ctx_bus_event_t *ctx_bus_event_retain(ctx_bus_event_t *event) {
    if (event)
        atomic_fetch_add_explicit(&event->refs, 1, memory_order_relaxed);
    return event;
}

void ctx_bus_event_release(ctx_bus_event_t *event) {
    if (!event || atomic_fetch_sub_explicit(&event->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (event->data_release)
        event->data_release(event->data);
    ctx__bus_free(event, sizeof *event + event->len + 1);
}

const char *ctx_bus_event_topic(const ctx_bus_event_t *event) {
    return event ? event->topic : NULL;
}

void *ctx_bus_event_data(const ctx_bus_event_t *event) { return event ? event->data : NULL; }
