/* SPDX-License-Identifier: MIT */
/*
 * listener.c — listener records, patterns, the immutable listener lists,
 * subscribe and unsubscribe.
 *
 * A listener record is what the handle points to:
 *
 *   ┌──────────────────────────────────────────────────────────────┐
 *   │ refs │ removed │ kind │ flags │ seq │ bus │ fn │ user │ ...  │
 *   │ hash, len (what matching compares) │ pattern "request.*\0"   │
 *   └──────────────────────────────────────────────────────────────┘
 *
 * A list is an immutable, reference-counted array of records sorted by
 * `seq` (the order of subscription on the bus), each record retained:
 *
 *   ctx__bus_list_t { refs, count, capacity, items: [l3, l7, l8] }
 *
 * Two kinds of list, one representation:
 *   - the bus's global list, replaced (never changed) under the bus's
 *     write_lock by each global subscribe or unsubscribe; a publisher reads
 *     it inside a read section without a reference, so the list replaced is
 *     retired (reclaim.c), not released: freed once no publisher can hold
 *     it;
 *   - the scoped lists: values of the bus's context variable.  A scoped
 *     subscribe reads the current context's list, builds a new one holding
 *     its live entries plus the new record (appended: its seq is the largest
 *     yet), and ctx_var_set's it.  Values are shared between copies of a
 *     context, hence immutable: the copies made before keep the old list
 *     (and do not see the new listener), the ones made after share the new
 *     one, and no other context has either.  The variable's release
 *     operation drops a list when its box dies.
 *
 * A scoped subscribe made from inside a synchronous delivery on the same
 * thread may replace the very list that delivery walks without a reference
 * of its own (publish.c explains why it need not take one); it then parks a
 * reference to the old list with ctx__bus_defer_push, released when the
 * outermost delivery on the thread returns.  The slot for it is reserved
 * before anything changes, so that path fails only with CTX_ENOMEM and
 * leaves everything as it was.
 *
 * Unsubscribe works by handle from anywhere, without finding the contexts
 * that hold a record: it sets `removed` (once; the first caller wins), which
 * every delivery checks before each call, then bumps the bus's
 * `unsubscribes` count (which a planned delivery checks instead: publish.c).  A global record is also dropped
 * from the global list at once (a new list without it; if that allocation
 * fails the flag suffices and the next change drops it).  A scoped record is
 * pruned lazily: by the next scoped subscribe in a context that holds it, or
 * when that context dies.
 *
 * Reference counts: the subscriber holds one during ctx_bus_subscribe and
 * hands it to *out (or drops it); each list holds one.  When the last goes,
 * user_release runs (only set once the subscribe succeeded, so a failed
 * subscribe never calls it), and the record's reference to its bus is
 * dropped.  Releases that may run user code (user_release, and through it
 * anything) happen after the bus's locks are let go.
 *
 * Patterns are parsed once, at subscribe: "*" or NULL (all), "a.b" (exact:
 * hash, length, bytes), "a.*" (prefix "a.", length through the dot).
 */
#include <stdio.h>
#include <string.h>

#include "bus/bus_internal.h"

/* ---- records ---- */

static void listener_free(ctx_bus_listener_t *l) {
    if (l->user_release)
        l->user_release(l->user);
    ctx_bus_t *bus = l->bus;
    ctx__bus_free(l, l->size);
    ctx__bus_release(bus);
}

ctx_bus_listener_t *ctx_bus_listener_retain(ctx_bus_listener_t *listener) {
    if (listener)
        atomic_fetch_add_explicit(&listener->refs, 1, memory_order_relaxed);
    return listener;
}

void ctx_bus_listener_release(ctx_bus_listener_t *listener) {
    if (listener && atomic_fetch_sub_explicit(&listener->refs, 1, memory_order_acq_rel) == 1 &&
        !ctx__bus_forked(listener->bus)) /* in a child of fork(): the memory stays */
        listener_free(listener);
}

const char *ctx_bus_listener_pattern(const ctx_bus_listener_t *listener) {
    return listener ? listener->pattern : NULL;
}

/* Parses `pattern` into kind/hash/len.  0 or CTX_EPARSE. */
static int parse_pattern(const char *pattern, int *kind, uint32_t *hash, size_t *len) {
    size_t n = strlen(pattern);
    const char *star = strchr(pattern, '*');
    *hash = 0;
    if (n == 1 && star) {
        *kind = CTX__BUS_MATCH_ALL;
        *len = 0;
        return 0;
    }
    if (!star) {
        if (n == 0)
            return CTX_EPARSE;
        *kind = CTX__BUS_MATCH_EXACT;
        *hash = ctx__bus_hash(pattern, n);
        *len = n;
        return 0;
    }
    /* "prefix.*": the star last, after a dot, after at least one byte. */
    if (star != pattern + n - 1 || n < 3 || pattern[n - 2] != '.')
        return CTX_EPARSE;
    *kind = CTX__BUS_MATCH_PREFIX;
    *len = n - 1;
    return 0;
}

static ctx_bus_listener_t *listener_new(ctx_bus_t *bus, const char *pattern,
                                        ctx_bus_listener_fn fn, void *user, unsigned flags,
                                        int *err) {
    if (!pattern)
        pattern = "*";
    int kind;
    uint32_t hash;
    size_t len;
    if ((*err = parse_pattern(pattern, &kind, &hash, &len)) != 0)
        return NULL;
    size_t n = strlen(pattern);
    size_t size = sizeof(ctx_bus_listener_t) + n + 1;
    ctx_bus_listener_t *l = ctx__bus_malloc(size);
    if (!l) {
        *err = CTX_ENOMEM;
        return NULL;
    }
    atomic_init(&l->refs, 1);
    atomic_init(&l->removed, 0);
    l->kind = kind;
    l->flags = flags;
    l->seq = 0;
    l->bus = ctx__bus_retain(bus);
    l->fn = fn;
    l->user = user;
    l->user_release = NULL;
    l->hash = hash;
    l->len = len;
    l->size = size;
    memcpy(l->pattern, pattern, n + 1);
    return l;
}

/* ---- lists ---- */

static size_t list_bytes(size_t capacity) {
    return sizeof(ctx__bus_list_t) + capacity * sizeof(ctx_bus_listener_t *);
}

void ctx__bus_list_free(ctx__bus_list_t *list) {
    for (size_t i = 0; i < list->count; i++)
        ctx_bus_listener_release(list->items[i]);
    ctx__bus_free(list, list_bytes(list->capacity));
}

/* A new list: the live entries of `old` (may be NULL), then `add` (may be
 * NULL), each retained.  NULL with *err = 0 when it would be empty, NULL with
 * *err = CTX_ENOMEM when it cannot be made.  Entries unsubscribed while this
 * runs may be copied or not: both are correct (the flag is what counts). */
static ctx__bus_list_t *list_rebuild(const ctx__bus_list_t *old, ctx_bus_listener_t *add,
                                     int *err) {
    size_t live = add ? 1 : 0;
    for (size_t i = 0; old && i < old->count; i++)
        live += !ctx__bus_listener_removed(old->items[i]);
    *err = 0;
    if (live == 0)
        return NULL;
    ctx__bus_list_t *list = ctx__bus_malloc(list_bytes(live));
    if (!list) {
        *err = CTX_ENOMEM;
        return NULL;
    }
    static atomic_uint_fast64_t next_list_id = 1;
    atomic_init(&list->refs, 1);
    list->id = atomic_fetch_add_explicit(&next_list_id, 1, memory_order_relaxed);
    list->capacity = live;
    size_t n = 0;
    for (size_t i = 0; old && i < old->count && n < live - (add ? 1 : 0); i++)
        if (!ctx__bus_listener_removed(old->items[i]))
            list->items[n++] = ctx_bus_listener_retain(old->items[i]);
    if (add)
        list->items[n++] = ctx_bus_listener_retain(add);
    list->count = n;
    return list;
}

/* The scoped variable's value operations. */
static void scoped_list_release(void *value, void *user) {
    (void)user;
    ctx__bus_list_release(value);
}

static int scoped_list_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const ctx__bus_list_t *list = value;
    size_t live = 0;
    for (size_t i = 0; list && i < list->count; i++)
        live += !ctx__bus_listener_removed(list->items[i]);
    int n = snprintf(buf, cap, "<%zu scoped listener%s>", live, live == 1 ? "" : "s");
    return n < 0 ? CTX_ESYSTEM : n;
}

const ctx_value_ops_t ctx__bus_list_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = scoped_list_release, .format = scoped_list_format};

/* ---- subscribe ---- */

static int subscribe_global(ctx_bus_t *bus, ctx_bus_listener_t *l) {
    pthread_mutex_lock(&bus->write_lock);
    if (ctx__bus_is_shut(bus)) {
        pthread_mutex_unlock(&bus->write_lock);
        return CTX_ESHUTDOWN;
    }
    /* The seq is taken under the write lock, so the global list stays sorted
     * whatever the order in which concurrent subscribers get here. */
    l->seq = atomic_fetch_add_explicit(&bus->next_seq, 1, memory_order_relaxed);
    int err;
    /* Stable: only write_lock holders change it. */
    ctx__bus_list_t *old = atomic_load_explicit(&bus->global, memory_order_relaxed);
    ctx__bus_list_t *list = list_rebuild(old, l, &err);
    if (!list) {
        pthread_mutex_unlock(&bus->write_lock);
        return err;
    }
    atomic_store_explicit(&bus->global, list, memory_order_release);
    pthread_mutex_unlock(&bus->write_lock);
    ctx__bus_retire(bus, old);
    return 0;
}

static int subscribe_scoped(ctx_bus_t *bus, ctx_bus_listener_t *l) {
    if (ctx__bus_is_shut(bus))
        return CTX_ESHUTDOWN;
    l->seq = atomic_fetch_add_explicit(&bus->next_seq, 1, memory_order_relaxed);
    void *value = NULL;
    ctx__bus_list_t *old = NULL;
    if (ctx_var_get(bus->scoped_var, &value) == CTX_VALUE)
        old = value; /* borrowed: this context holds it until the set below */
    int err;
    /* Inside a synchronous delivery on this thread, `old` may be the list
     * that delivery is walking (borrowed, see publish.c): keep it alive. */
    int defer = old && ctx__bus_sync_depth() > 0;
    if (defer && (err = ctx__bus_defer_reserve()) != 0)
        return err;
    ctx__bus_list_t *list = list_rebuild(old, l, &err);
    if (!list)
        return err;
    if (defer)
        ctx__bus_list_retain(old);
    if ((err = ctx_var_set(bus->scoped_var, list, NULL)) != 0) {
        if (defer)
            ctx__bus_list_release(old); /* the context still holds it */
        ctx__bus_list_release(list); /* the record keeps the subscriber's ref */
        return err;
    }
    if (defer)
        ctx__bus_defer_push(old);
    return 0;
}

int ctx_bus_subscribe(ctx_bus_t *bus, const char *pattern, ctx_bus_listener_fn fn, void *user,
                      const ctx_bus_subscribe_options_t *options, ctx_bus_listener_t **out) {
    ctx_bus_subscribe_options_t o = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    if (options && ctx__struct_in(&o, sizeof o, options, CTX__BUS_SUBSCRIBE_OPTIONS_V1) != 0)
        return CTX_EINVAL;
    unsigned flags = o.flags;
    if (!bus || !fn || (flags & ~CTX_BUS_SCOPED))
        return CTX_EINVAL;
    if (ctx__bus_forked(bus))
        return CTX_EFORKED;
    if (ctx__bus_is_shut(bus))
        return CTX_ESHUTDOWN;
    int err;
    ctx_bus_listener_t *l = listener_new(bus, pattern, fn, user, flags, &err);
    if (!l)
        return err;
    err = (flags & CTX_BUS_SCOPED) ? subscribe_scoped(bus, l) : subscribe_global(bus, l);
    if (err) {
        ctx_bus_listener_release(l); /* user_release is still NULL: not called */
        return err;
    }
    /* Success: from now on the record owns `user`.  Only the subscriber's
     * reference can make it die before this store, and it is still held. */
    l->user_release = o.user_release;
    if (out)
        *out = l;
    else
        ctx_bus_listener_release(l);
    return 0;
}

/* ---- unsubscribe ---- */

int ctx_bus_unsubscribe(ctx_bus_listener_t *listener) {
    if (!listener)
        return CTX_EINVAL;
    if (ctx__bus_forked(listener->bus))
        return CTX_EFORKED;
    if (atomic_exchange_explicit(&listener->removed, 1, memory_order_acq_rel))
        return CTX_ENOTFOUND;
    /* After the flag: a delivery that sees the count moved reads the flags
     * (publish.c, "Delivery plans"). */
    atomic_fetch_add_explicit(&listener->bus->unsubscribes, 1, memory_order_seq_cst);
    if (listener->flags & CTX_BUS_SCOPED)
        return 0; /* pruned lazily (see the essay) */
    ctx_bus_t *bus = listener->bus; /* alive: the caller's handle holds it */
    pthread_mutex_lock(&bus->write_lock);
    ctx__bus_list_t *old = atomic_load_explicit(&bus->global, memory_order_relaxed);
    if (!old) { /* shut down, or already dropped */
        pthread_mutex_unlock(&bus->write_lock);
        return 0;
    }
    int err;
    ctx__bus_list_t *list = list_rebuild(old, NULL, &err);
    if (err) { /* no memory: the flag keeps it from being called */
        pthread_mutex_unlock(&bus->write_lock);
        return 0;
    }
    atomic_store_explicit(&bus->global, list, memory_order_release);
    pthread_mutex_unlock(&bus->write_lock);
    ctx__bus_retire(bus, old);
    return 0;
}

/* ---- visibility ---- */

static int list_contains(const ctx__bus_list_t *list, const ctx_bus_listener_t *l) {
    for (size_t i = 0; list && i < list->count; i++)
        if (list->items[i] == l)
            return 1;
    return 0;
}

int ctx_bus_listener_visible(const ctx_bus_listener_t *listener) {
    if (!listener || ctx__bus_listener_removed(listener))
        return 0;
    ctx_bus_t *bus = listener->bus;
    ctx__bus_snapshot_t snap;
    if (ctx__bus_snapshot_take(bus, &snap) != 0)
        return 0;
    int seen = list_contains((listener->flags & CTX_BUS_SCOPED) ? snap.scoped : snap.global,
                             listener);
    ctx__bus_snapshot_drop(&snap);
    return seen;
}
