/* SPDX-License-Identifier: MIT */
/*
 * publish.c — snapshots and delivery: what every publish does, and the
 * synchronous ctx_bus_publish.
 *
 * A snapshot is the pair of lists a publish made now, from this thread's
 * current context, reaches:
 *
 *   global  bus->global, loaded inside a read section (reclaim.c) without a
 *           lock or a reference (NULL: none);
 *   scoped  the value of the bus's variable in the current context
 *           (ctx_var_get: a per-thread cache hit).
 *
 * Both lists must outlive every listener call of the delivery, and a
 * listener may replace either: a global subscribe or unsubscribe (on any
 * thread) replaces the global list, a scoped subscribe ctx_var_set's a new
 * list into this very context and drops the old one's share.  Lists are
 * immutable, so keeping the one read alive is all the protection a delivery
 * needs, and no lock is held while a listener runs.
 *   - The global list: a synchronous publish runs its whole delivery inside
 *     a read section of the bus (ctx__bus_read_enter/exit: a few stores to
 *     the thread's own reader record); a writer that replaced the list
 *     retires it, and it is freed only once no section that could have
 *     loaded it is still open — by the writer if none is, else by the last
 *     such publisher as it leaves.  No lock, no read-modify-write, no write
 *     to a line another thread reads.
 *   - The scoped list belongs to this thread's current context, which no
 *     other thread changes, and the only code that replaces the bus's
 *     variable there is a scoped subscribe — which, while a synchronous
 *     delivery runs on its thread (its read sections are open:
 *     ctx__bus_sync_depth() > 0), keeps the list it replaces alive (a
 *     reference parked in sync_state) until the outermost delivery returns.
 *   - Asynchronous deliveries cross threads and retain both
 *     (ctx__bus_snapshot_take: the global list is retained inside a short
 *     read section).
 *
 * `shut` is read only when there is no global list: shutdown sets it and
 * then stores NULL, so a publish that loaded a list began before shutdown
 * ended (it delivers, as a publish made just before would), and one that
 * loads the NULL sees `shut`.  A publish with neither list (a racy peek at
 * the global pointer, as a concurrent subscribe may or may not be seen)
 * enters no section at all.
 *
 * So a synchronous publish costs: the fork check, a cache hit for the
 * scoped list, the section's stores to the thread's record (and one load of
 * the shared `retired` hint at its end), the check of the thread's delivery
 * plan (below), and per listener one load of the bus's unsubscribe count and
 * the call (without a plan: also the merge step, the `removed` flag and the
 * match, integer compares and a word-wise compare of the topic, see
 * ctx__bus_bytes_equal).  It never allocates (but a thread's first publish
 * registers its reader record, under a mutex).  Several threads publishing
 * at once share no written line (reclaim.c: how that holds with 16–64
 * publishers, and what a writer then costs).
 *
 * Delivery merges the two lists, each sorted by seq, so listeners run in the
 * order they were subscribed, global and scoped interleaved:
 *
 *   global  [ g1        g4   g6 ]
 *   scoped  [     s2 s3           s9 ]     →   g1 s2 s3 g4 g6 s9
 *
 * Before each call it checks `removed` again (an earlier listener, or another
 * thread, may have unsubscribed it), then the topic.  A failing listener is
 * reported (ctx__bus_report) and the delivery goes on.
 *
 * Delivery plans.  The merge and the matches depend only on the two lists
 * and the topic, and a program publishes the same topics through the same
 * lists again and again; so each thread keeps the outcome of its last
 * outermost synchronous publish — the matching listeners not unsubscribed,
 * in order, each with its fn and user — keyed by the lists' ids (unique for
 * the process's life: a list freed and another made at the same address
 * cannot be mistaken for it), the bus's unsubscribe count when it was made,
 * and the topic: the id of the last event seen with it (event ids are never
 * reused either), else its bytes.  The plan holds no reference: it is used
 * only while the snapshot holds the very lists it was made from, which hold
 * the listeners.  Publishes nested in a listener read the plan if it is
 * theirs, but only the outermost one writes it (a nested write would change
 * it under the delivery walking it; the remembered event id is not read by
 * the walk, so a nested publish may update it).
 *
 * Unsubscribes and plans.  ctx_bus_unsubscribe sets the listener's `removed`
 * flag and then bumps its bus's `unsubscribes` count.  Before each call a
 * planned delivery compares the count with the plan's: equal, no listener
 * of the plan was unsubscribed by anything that happened before this load
 * (an unsubscribe that returned before it bumped the count first); moved,
 * it reads the listener's flag, as an unplanned delivery does.  The
 * outermost publish makes a new plan when the count moved, so the flags are
 * read once per unsubscribe, not once per call.
 */
#include <string.h>

#include "bus/bus_internal.h"

int ctx__bus_snapshot_take(ctx_bus_t *bus, ctx__bus_snapshot_t *snap) {
    snap->global = NULL;
    snap->scoped = NULL;
    if (ctx__bus_forked(bus))
        return CTX_EFORKED;
    if (ctx__bus_is_shut(bus))
        return CTX_ESHUTDOWN;
    /* The list cannot be freed between the load and the retain. */
    uint64_t ticket = ctx__bus_read_enter(bus);
    ctx__bus_list_t *global = atomic_load_explicit(&bus->global, memory_order_acquire);
    if (!global && ctx__bus_is_shut(bus)) { /* as in ctx_bus_publish */
        ctx__bus_read_exit(ticket);
        return CTX_ESHUTDOWN;
    }
    snap->global = ctx__bus_list_retain(global);
    ctx__bus_read_exit(ticket);
    void *value = NULL;
    if (ctx_var_get(bus->scoped_var, &value) == CTX_VALUE)
        snap->scoped = ctx__bus_list_retain(value);
    return 0;
}

void ctx__bus_snapshot_drop(ctx__bus_snapshot_t *snap) {
    ctx__bus_list_release(snap->global);
    ctx__bus_list_release(snap->scoped);
    snap->global = NULL;
    snap->scoped = NULL;
}

/* A merge cursor over the two lists of a snapshot, in seq order. */
typedef struct merge {
    ctx_bus_listener_t *const *g, *const *g_end;
    ctx_bus_listener_t *const *s, *const *s_end;
} merge_t;

static inline void merge_init(merge_t *m, const ctx__bus_snapshot_t *snap) {
    static ctx_bus_listener_t *const none[1] = {NULL};
    m->g = m->g_end = none;
    m->s = m->s_end = none;
    if (snap->global) {
        m->g = snap->global->items;
        m->g_end = m->g + snap->global->count;
    }
    if (snap->scoped) {
        m->s = snap->scoped->items;
        m->s_end = m->s + snap->scoped->count;
    }
}

/* The next listener in subscription order, or NULL at the end. */
static inline ctx_bus_listener_t *merge_next(merge_t *m) {
    if (m->g != m->g_end) {
        if (m->s != m->s_end && (*m->s)->seq < (*m->g)->seq)
            return *m->s++;
        return *m->g++;
    }
    return m->s != m->s_end ? *m->s++ : NULL;
}

size_t ctx__bus_snapshot_count(const ctx__bus_snapshot_t *snap, const ctx_bus_event_t *event) {
    merge_t m;
    merge_init(&m, snap);
    size_t n = 0;
    ctx_bus_listener_t *l;
    while ((l = merge_next(&m)) != NULL)
        n += !ctx__bus_listener_removed(l) && ctx__bus_match(l, event);
    return n;
}

size_t ctx__bus_deliver(ctx_bus_t *bus, const ctx__bus_snapshot_t *snap,
                        ctx_bus_event_t *event) {
    merge_t m;
    merge_init(&m, snap);
    size_t n = 0;
    ctx_bus_listener_t *l;
    while ((l = merge_next(&m)) != NULL) {
        if (ctx__bus_listener_removed(l) || !ctx__bus_match(l, event))
            continue;
        int rc = l->fn(l, event, l->user);
        n++;
        if (rc < 0)
            ctx__bus_report(bus, l, event, rc);
    }
    return n;
}

/* ---- delivery plans (see the essay) ---- */

#define PLAN_LISTENERS 16
#define PLAN_TOPIC 64

typedef struct plan {
    uint64_t global_id, scoped_id; /* 0: no list */
    uint64_t unsubscribes;         /* the bus's count when the plan was made */
    uint64_t event_id;             /* an event known to carry `topic` (0: none) */
    uint32_t hash;
    size_t len;                    /* 0: no plan */
    size_t count;
    char topic[PLAN_TOPIC];
    /* What a call needs, side by side (fn and user never change once
     * subscribed): the walk reads one array, and each record only for
     * `removed`. */
    struct plan_entry {
        ctx_bus_listener_t *listener;
        ctx_bus_listener_fn fn;
        void *user;
    } items[PLAN_LISTENERS];
} plan_t;

static _Thread_local plan_t plan;

static inline uint64_t list_id(const ctx__bus_list_t *list) { return list ? list->id : 0; }

/* The same lists, and the same event as last time (ids are never reused, so
 * the event's topic is known) or an event with the same topic (then
 * remembered: the walk does not read event_id, so a nested publish may set
 * it). */
static inline int plan_fits(const ctx_bus_t *bus, const ctx__bus_snapshot_t *snap,
                            const ctx_bus_event_t *event) {
    if (plan.global_id != list_id(snap->global) || plan.scoped_id != list_id(snap->scoped) ||
        plan.unsubscribes != atomic_load_explicit(&bus->unsubscribes, memory_order_acquire))
        return 0;
    if (plan.event_id == event->id)
        return plan.len != 0;
    if (plan.len != event->len || plan.hash != event->hash ||
        !ctx__bus_bytes_equal(plan.topic, event->topic, event->len))
        return 0;
    plan.event_id = event->id;
    return 1;
}

/* Makes the plan of this snapshot and topic (if it fits in one): the
 * listeners that match and are not unsubscribed, the bus's count of
 * unsubscribes read before their flags. */
static void plan_make(const ctx_bus_t *bus, const ctx__bus_snapshot_t *snap,
                      const ctx_bus_event_t *event) {
    plan.len = 0;
    if (event->len > PLAN_TOPIC)
        return;
    uint64_t unsubscribes = atomic_load_explicit(&bus->unsubscribes, memory_order_acquire);
    merge_t m;
    merge_init(&m, snap);
    size_t n = 0;
    ctx_bus_listener_t *l;
    while ((l = merge_next(&m)) != NULL) {
        if (!ctx__bus_match(l, event) || ctx__bus_listener_removed(l))
            continue;
        if (n == PLAN_LISTENERS)
            return;
        plan.items[n++] = (struct plan_entry){l, l->fn, l->user};
    }
    plan.count = n;
    plan.unsubscribes = unsubscribes;
    plan.global_id = list_id(snap->global);
    plan.scoped_id = list_id(snap->scoped);
    plan.hash = event->hash;
    memcpy(plan.topic, event->topic, event->len);
    plan.len = event->len;
    plan.event_id = event->id;
}

/* Calls the plan's listeners; returns how many were called.  The plan does
 * not change while it is walked (only the outermost publish writes it), so
 * its bounds stay in registers across the calls.  Before each call: if no
 * unsubscribe of the bus happened since the plan was made, no listener of it
 * is unsubscribed; otherwise the listener's flag says. */
static int deliver_planned(ctx_bus_t *bus, ctx_bus_event_t *event) {
    const struct plan_entry *it = plan.items, *end = it + plan.count;
    uint64_t unsubscribes = plan.unsubscribes;
    int skipped = 0;
    for (; it != end; it++) {
        if (__builtin_expect(
                atomic_load_explicit(&bus->unsubscribes, memory_order_acquire) != unsubscribes, 0) &&
            ctx__bus_listener_removed(it->listener)) {
            skipped++;
            continue;
        }
        int rc = it->fn(it->listener, event, it->user);
        if (__builtin_expect(rc < 0, 0))
            ctx__bus_report(bus, it->listener, event, rc);
    }
    return (int)(end - plan.items) - skipped;
}

/* ---- synchronous deliveries on this thread ---- */

/* The scoped lists replaced during this thread's synchronous deliveries
 * (each with a reference held for it).  How deep the thread is in them is
 * the depth of its read sections (ctx__bus_reader.depth): the other
 * sections (snapshots, stats) run no user code, so no scoped subscribe
 * happens inside them. */
typedef struct sync_state {
    size_t count, capacity;
    ctx__bus_list_t **deferred;
} sync_state_t;

static _Thread_local sync_state_t sync_state;

unsigned ctx__bus_sync_depth(void) { return ctx__bus_reader.depth; }

int ctx__bus_defer_reserve(void) {
    sync_state_t *st = &sync_state;
    if (st->count < st->capacity)
        return 0;
    size_t capacity = st->capacity ? 2 * st->capacity : 4;
    ctx__bus_list_t **grown = ctx__bus_malloc(capacity * sizeof *grown);
    if (!grown)
        return CTX_ENOMEM;
    if (st->count)
        memcpy(grown, st->deferred, st->count * sizeof *grown);
    ctx__bus_free(st->deferred, st->capacity * sizeof *grown);
    st->deferred = grown;
    st->capacity = capacity;
    return 0;
}

void ctx__bus_defer_push(ctx__bus_list_t *list) {
    sync_state.deferred[sync_state.count++] = list;
}

/* At the end of the outermost delivery: drops the deferred lists.  The
 * state is emptied first, since a release may run user code that
 * publishes and subscribes again. */
static void release_deferred(void) {
    sync_state_t st = sync_state;
    sync_state.count = 0;
    sync_state.capacity = 0;
    sync_state.deferred = NULL;
    for (size_t i = 0; i < st.count; i++)
        ctx__bus_list_release(st.deferred[i]);
    ctx__bus_free(st.deferred, st.capacity * sizeof *st.deferred);
}

int ctx_bus_publish(ctx_bus_t *bus, ctx_bus_event_t *event) {
    if (!bus || !event)
        return CTX_EINVAL;
    if (ctx__bus_forked(bus))
        return CTX_EFORKED;
    ctx__bus_snapshot_t snap;
    /* The scoped list is borrowed: see ctx__bus_sync_depth. */
    void *value = NULL;
    snap.scoped = ctx_var_get(bus->scoped_var, &value) == CTX_VALUE ? value : NULL;
    /* A shut-down bus has no global list (shutdown sets `shut`, then stores
     * NULL), so `shut` needs a look only when there is none; a list loaded
     * while shutdown runs is a publish made before it.  With no list at all
     * (a racy peek: a concurrent subscribe may or may not be seen) there is
     * nothing to deliver and no section to enter. */
    if (!snap.scoped && !atomic_load_explicit(&bus->global, memory_order_acquire)) {
        if (ctx__bus_is_shut(bus))
            goto rejected;
        return 0;
    }
    /* The global list is borrowed for the section: see reclaim.c. */
    uint64_t ticket = ctx__bus_read_enter(bus);
    snap.global = atomic_load_explicit(&bus->global, memory_order_acquire);
    if (!snap.global) {
        int shut = ctx__bus_is_shut(bus);
        if (shut || !snap.scoped) {
            ctx__bus_read_exit(ticket);
            if (shut)
                goto rejected;
            return 0;
        }
    }
    /* The snapshot's records hold the bus, so a listener that destroys it
     * leaves it alive until the section ends (its global list is retired,
     * not freed; a scoped list is held by the context); nothing touches the
     * bus after. */
    int planned = plan_fits(bus, &snap, event);
    if (!planned && ticket != 0) { /* the outermost delivery */
        plan_make(bus, &snap, event);
        planned = plan.len != 0; /* topics are never empty */
    }
    int n;
    if (planned) {
        n = deliver_planned(bus, event);
    } else {
        size_t all = ctx__bus_deliver(bus, &snap, event);
        n = all > (size_t)INT32_MAX ? INT32_MAX : (int)all;
    }
    ctx__bus_read_exit(ticket);
    if (__builtin_expect(sync_state.deferred != NULL, 0) && ticket != 0)
        release_deferred(); /* also frees a slot reserved by a failed subscribe */
    return n;
rejected:
    atomic_fetch_add_explicit(&bus->rejected, 1, memory_order_relaxed);
    return CTX_ESHUTDOWN;
}
