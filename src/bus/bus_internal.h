/* SPDX-License-Identifier: MIT */
/*
 * bus_internal.h — what the bus module's files share (internal, `ctx__`).
 *
 *   event.c     events: topic (copied, hashed), data, reference count
 *   listener.c  listener records, patterns and matching, the immutable
 *               listener lists, subscribe / unsubscribe
 *   bus.c       the bus: creation, shutdown, destruction, stats, waiting
 *               for idle, error reports
 *   publish.c   taking a snapshot and delivering it (every publish goes
 *               through it), ctx_bus_publish
 *   reclaim.c   the read side of the global lists: read sections, retired
 *               lists, their reclamation (epoch-based, membarrier)
 *   async.c     the asynchronous delivery record and the pool publish
 *   publish_loop.c  the loop publish (built only with the loop module)
 *
 * The objects and who refers to whom:
 *
 *   ctx_bus_t ──▶ global: ctx__bus_list_t ──▶ listener ──▶ bus (retained)
 *       │                                        ▲
 *       └──▶ scoped_var (ctx_var_t)              │
 *                 value in each context: ctx__bus_list_t (scoped ones)
 *
 *   asynchronous delivery ──▶ bus, event, global snapshot, scoped snapshot
 *
 * Lists are immutable once published and reference counted; a change makes
 * a new list.  Every list holds a reference to each listener it names; each
 * listener holds a reference to its bus; the bus holds its global list
 * until shutdown (that cycle is broken by ctx_bus_shutdown, which
 * ctx_bus_release calls).  A global list the bus lets go is retired
 * (reclaim.c): its reference is dropped once no synchronous publish, which
 * reads the list without one, can still hold it.
 */
#ifndef CTX_BUS_INTERNAL_H
#define CTX_BUS_INTERNAL_H

#include <ctxvar/bus.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <ctxvar.h>

#include "common/common.h"

/* ---- public structs that grow (docs/api-rules.md) ----
 * The first published (1.0) size of a struct: through its last 1.0 member.
 * A member added later goes after it and leaves this size as it is. */
#define CTX__SIZE_THROUGH(type, member) (offsetof(type, member) + sizeof(((type *)0)->member))
#define CTX__BUS_OPTIONS_V1 CTX__SIZE_THROUGH(ctx_bus_options_t, error_user)
#define CTX__BUS_SUBSCRIBE_OPTIONS_V1 CTX__SIZE_THROUGH(ctx_bus_subscribe_options_t, user_release)

/* ---- allocation ----
 * Through the core's allocator (ctx_set_allocator, and the tests' failing
 * allocator): ctx_malloc is exported, so the shared library reaches it too. */
static inline void *ctx__bus_malloc(size_t size) { return ctx_malloc(size); }
static inline void ctx__bus_free(void *p, size_t size) { ctx_free(p, size); }

/* ---- events (event.c) ---- */

struct ctx_bus_event {
    atomic_size_t refs;
    uint64_t id;   /* unique for the process's life (delivery plans key on it) */
    void *data;
    void (*data_release)(void *data);
    uint32_t hash; /* ctx__bus_hash of the topic */
    size_t len;    /* strlen(topic) */
    char topic[];
};

/* FNV-1a over `len` bytes: the exact-topic fast check. */
uint32_t ctx__bus_hash(const char *s, size_t len);

/* ---- listeners and lists (listener.c) ---- */

enum {
    CTX__BUS_MATCH_ALL = 0,    /* "*" or NULL */
    CTX__BUS_MATCH_EXACT = 1,  /* "a.b" */
    CTX__BUS_MATCH_PREFIX = 2  /* "a.*": prefix "a." */
};

struct ctx_bus_listener {
    atomic_size_t refs;    /* the handle's, each list's, the subscriber's */
    atomic_int removed;    /* set once, by ctx_bus_unsubscribe */
    int kind;              /* CTX__BUS_MATCH_* */
    unsigned flags;        /* CTX_BUS_SCOPED */
    uint64_t seq;          /* subscription order, per bus */
    ctx_bus_t *bus;        /* retained */
    ctx_bus_listener_fn fn;
    void *user;
    void (*user_release)(void *user); /* set only once the subscribe succeeded */
    uint32_t hash;         /* EXACT: hash of the topic */
    size_t len;            /* EXACT: the topic's length; PREFIX: the prefix's
                              (through the dot) */
    size_t size;           /* bytes allocated */
    char pattern[];        /* as given ("*" for all) */
};

/* An immutable list of listeners, sorted by seq; each one retained. */
typedef struct ctx__bus_list {
    atomic_size_t refs;
    uint64_t id;     /* unique for the process's life (delivery plans key on it) */
    size_t count;
    size_t capacity; /* entries allocated (the size to free) */
    /* A global list replaced by a writer waits in reclaim.c's queue until no
     * publisher can be reading it (set by ctx__bus_retire). */
    uint64_t retired_epoch;
    const ctx_bus_t *retired_bus;
    struct ctx__bus_list *retired_next;
    ctx_bus_listener_t *items[];
} ctx__bus_list_t;

static inline ctx__bus_list_t *ctx__bus_list_retain(ctx__bus_list_t *list) {
    if (list)
        atomic_fetch_add_explicit(&list->refs, 1, memory_order_relaxed);
    return list;
}
/* Frees a list whose last reference went (its entries released). */
void ctx__bus_list_free(ctx__bus_list_t *list);
static inline void ctx__bus_list_release(ctx__bus_list_t *list) {
    if (list && atomic_fetch_sub_explicit(&list->refs, 1, memory_order_acq_rel) == 1)
        ctx__bus_list_free(list);
}

/* 1 if the first n bytes of a and b are equal.  Topics are short, and a
 * call to memcmp costs more than comparing them here a word at a time: 8
 * bytes per step, then at most one step each of 4, 2 and 1 bytes (memcpy
 * into an integer is a plain unaligned load; nothing is read past n). */
static inline int ctx__bus_bytes_equal(const char *a, const char *b, size_t n) {
    for (; n >= 8; n -= 8, a += 8, b += 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return 0;
    }
    if (n & 4) {
        uint32_t x, y;
        memcpy(&x, a, 4);
        memcpy(&y, b, 4);
        if (x != y)
            return 0;
        a += 4;
        b += 4;
    }
    if (n & 2) {
        uint16_t x, y;
        memcpy(&x, a, 2);
        memcpy(&y, b, 2);
        if (x != y)
            return 0;
        a += 2;
        b += 2;
    }
    return !(n & 1) || *a == *b;
}

/* 1 if the listener's pattern matches the event's topic. */
static inline int ctx__bus_match(const ctx_bus_listener_t *l, const ctx_bus_event_t *ev) {
    switch (l->kind) {
    case CTX__BUS_MATCH_EXACT:
        return l->hash == ev->hash && l->len == ev->len &&
               ctx__bus_bytes_equal(l->pattern, ev->topic, ev->len);
    case CTX__BUS_MATCH_PREFIX:
        return ev->len > l->len && ctx__bus_bytes_equal(l->pattern, ev->topic, l->len);
    default:
        return 1;
    }
}

static inline int ctx__bus_listener_removed(const ctx_bus_listener_t *l) {
    return atomic_load_explicit(&l->removed, memory_order_acquire);
}

/* The value operations of the bus's scoped variable (the value is a
 * ctx__bus_list_t, one reference per share). */
extern const ctx_value_ops_t ctx__bus_list_ops;

/* ---- the bus (bus.c) ---- */

struct ctx_bus {
    /* What every publish reads, and only writers write (one line). */
    unsigned generation; /* ctx__bus_fork_generation when made (fork below) */
    atomic_int shut;
    /* Written (release) under write_lock; read by publishers inside a read
     * section (ctx__bus_read_enter) without a lock or a reference: a list
     * replaced here is retired (ctx__bus_retire), not released. */
    _Atomic(ctx__bus_list_t *) global;
    ctx_var_t *scoped_var;
    /* Unsubscribes of the bus's listeners so far (each after it set the
     * listener's `removed`): delivery plans check it instead of every flag. */
    atomic_uint_fast64_t unsubscribes;
    /* Written by others (a line's worth of padding keeps them off the
     * publishers' line, without asking malloc for an alignment). */
    char pad_[64];
    atomic_size_t refs; /* creator's, each listener's, each async delivery's */
    /* Serialises subscribe/unsubscribe of global listeners and shutdown. */
    pthread_mutex_t write_lock;
    atomic_uint_fast64_t next_seq;
    ctx_bus_error_fn on_error;
    void *error_user;
    atomic_uint_fast64_t failures;
    atomic_uint_fast64_t rejected;
    atomic_uint_fast64_t async_accepted;
    atomic_uint_fast64_t async_dropped;
    /* Asynchronous deliveries not yet finished, and the wait for zero. */
    pthread_mutex_t idle_lock;
    pthread_cond_t idle_cond;
    int idle_monotonic; /* idle_cond uses CLOCK_MONOTONIC */
    uint64_t pending;
};

/* ---- fork() (bus.c) ----
 * The child of a fork() gets a copy of every bus, with locks that threads
 * which do not exist in the child may have held, and asynchronous
 * deliveries queued on executors whose threads are gone.  A pthread_atfork
 * child handler bumps the generation; a bus made in an earlier generation
 * is unusable there: its calls answer CTX_EFORKED, and releases in the
 * child free nothing (no lock is taken, no user callback runs). */
extern atomic_uint ctx__bus_fork_generation;
void ctx__bus_fork_watch(void);
static inline int ctx__bus_forked(const ctx_bus_t *bus) {
    return bus->generation != atomic_load_explicit(&ctx__bus_fork_generation, memory_order_relaxed);
}

static inline ctx_bus_t *ctx__bus_retain(ctx_bus_t *bus) {
    atomic_fetch_add_explicit(&bus->refs, 1, memory_order_relaxed);
    return bus;
}
void ctx__bus_release(ctx_bus_t *bus);

static inline int ctx__bus_is_shut(const ctx_bus_t *bus) {
    return atomic_load_explicit(&bus->shut, memory_order_acquire);
}

/* ---- the read side of global lists (reclaim.c: see its essay) ---- */

enum {
    CTX__BUS_READER_NEW = 0,    /* not registered yet */
    CTX__BUS_READER_FAST,       /* registered, writers use membarrier: the
                                   inline path below, compiler barriers only */
    CTX__BUS_READER_FENCED,     /* registered, no membarrier: full fences */
    CTX__BUS_READER_ANONYMOUS   /* could not register (or its thread is
                                   exiting): counts in `anonymous` */
};

/* A thread's reader record (static thread-local storage). */
typedef struct ctx__bus_reader {
    atomic_uint_fast64_t epoch;     /* 0: in no section; else the epoch at entry */
    _Atomic(const ctx_bus_t *) bus; /* the outermost section's bus, or CTX__BUS_ANY */
    unsigned depth;                 /* sections nested on this thread */
    int state;                      /* CTX__BUS_READER_* */
    struct ctx__bus_reader *next;   /* the registry (under reclaim.c's lock) */
} ctx__bus_reader_t;

/* Shared by all buses; written only by writers (retirements). */
typedef struct ctx__bus_rcu {
    atomic_uint_fast64_t epoch;       /* starts at 1 */
    atomic_size_t retired;            /* lists retired, not yet freed */
    atomic_uint_fast64_t retired_max; /* the newest retirement's epoch */
    atomic_size_t anonymous;          /* anonymous readers inside a section */
    int asymmetric;                   /* writers use membarrier */
} ctx__bus_rcu_t;

#define CTX__BUS_ANY ((const ctx_bus_t *)(uintptr_t)1)

extern ctx__bus_rcu_t ctx__bus_rcu;
extern _Thread_local ctx__bus_reader_t ctx__bus_reader;

/* Once per process, before the first bus exists (ctx_bus_new). */
void ctx__bus_rcu_init(void);
/* The outermost entry and exit of a reader not in the FAST state (a new
 * thread's first, fenced and anonymous readers). */
uint64_t ctx__bus_read_enter_slow(ctx__bus_reader_t *r, const ctx_bus_t *bus);
void ctx__bus_read_exit_slow(ctx__bus_reader_t *r);
/* A nested entry on another bus: the record now covers every bus. */
void ctx__bus_read_widen(ctx__bus_reader_t *r);
/* After an outermost exit that saw something retired: frees what a reader
 * that entered at `epoch` may have been the last to hold. */
void ctx__bus_read_exited(uint64_t epoch);
/* Frees the retired lists no reader holds any more. */
void ctx__bus_reclaim(void);
/* Hands a global list just replaced in bus->global (the bus's reference to
 * it) to reclamation: released once no publisher can be reading it — at
 * once, if none is.  No lock of the bus may be held (it may run user code). */
void ctx__bus_retire(ctx_bus_t *bus, ctx__bus_list_t *list);
/* The fork() child handler's part (bus.c calls it). */
void ctx__bus_rcu_after_fork(void);

/* Enters a read section on `bus`: until the matching exit, every global list
 * of the bus loaded (acquire) from bus->global stays allocated.  Nests.
 * Never fails, never allocates, takes no lock (but at a thread's first
 * entry, to register it).  Returns the ticket to give to the exit: 0 for a
 * nested section, else not 0 (the outermost). */
static inline uint64_t ctx__bus_read_enter(const ctx_bus_t *bus) {
    ctx__bus_reader_t *r = &ctx__bus_reader;
    if (r->depth++ != 0) {
        if (__builtin_expect(atomic_load_explicit(&r->bus, memory_order_relaxed) != bus, 0))
            ctx__bus_read_widen(r);
        return 0;
    }
    if (__builtin_expect(r->state != CTX__BUS_READER_FAST, 0))
        return ctx__bus_read_enter_slow(r, bus);
    uint64_t e = atomic_load_explicit(&ctx__bus_rcu.epoch, memory_order_acquire);
    atomic_store_explicit(&r->bus, bus, memory_order_release);
    atomic_store_explicit(&r->epoch, e, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst); /* membarrier does the rest */
    return e;
}

/* Leaves the read section entered with `ticket`; the outermost exit frees
 * what this thread was the last to hold (may run user code: call it with no
 * lock held). */
static inline void ctx__bus_read_exit(uint64_t ticket) {
    ctx__bus_reader_t *r = &ctx__bus_reader;
    r->depth--;
    if (ticket == 0)
        return;
    if (__builtin_expect(r->state != CTX__BUS_READER_FAST, 0)) {
        ctx__bus_read_exit_slow(r);
        return;
    }
    atomic_store_explicit(&r->epoch, 0, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(&ctx__bus_rcu.retired, memory_order_relaxed) != 0, 0))
        ctx__bus_read_exited(ticket);
}

/* Counts a failed listener call and tells the error handler. */
void ctx__bus_report(ctx_bus_t *bus, ctx_bus_listener_t *listener,
                     ctx_bus_event_t *event, int code);

/* The pending count of asynchronous deliveries: +1 when one is accepted,
 * -1 when it finished (wakes ctx_bus_wait_idle at zero). */
void ctx__bus_pending_add(ctx_bus_t *bus);
void ctx__bus_pending_done(ctx_bus_t *bus);

/* ---- snapshots and delivery (publish.c) ---- */

typedef struct ctx__bus_snapshot {
    ctx__bus_list_t *global; /* retained, or NULL */
    ctx__bus_list_t *scoped; /* retained, or NULL */
} ctx__bus_snapshot_t;

/* Takes the listeners a publish made now from the current context reaches.
 * Returns 0, CTX_ESHUTDOWN (*snap empty; the caller counts it as
 * rejected), or CTX_EFORKED (a bus made before fork(): *snap empty). */
int ctx__bus_snapshot_take(ctx_bus_t *bus, ctx__bus_snapshot_t *snap);
void ctx__bus_snapshot_drop(ctx__bus_snapshot_t *snap);

/* Synchronous deliveries borrow the current context's scoped list instead
 * of retaining it: only this thread can replace that list, and only with a
 * scoped subscribe.  A scoped subscribe made while a synchronous delivery
 * runs on this thread (ctx__bus_sync_depth() > 0) therefore keeps the list
 * it replaces alive until the outermost delivery on this thread returns:
 * it reserves a slot (CTX_ENOMEM possible, before anything changed), then
 * hands over a reference it took (never fails). */
unsigned ctx__bus_sync_depth(void);
int ctx__bus_defer_reserve(void);
void ctx__bus_defer_push(ctx__bus_list_t *list);

/* The number of listeners of the snapshot that match the event and are not
 * unsubscribed, now. */
size_t ctx__bus_snapshot_count(const ctx__bus_snapshot_t *snap, const ctx_bus_event_t *event);

/* Calls the snapshot's matching listeners in order on this thread, in the
 * current context; returns how many were called. */
size_t ctx__bus_deliver(ctx_bus_t *bus, const ctx__bus_snapshot_t *snap,
                        ctx_bus_event_t *event);

/* ---- asynchronous deliveries (async.c) ---- */

typedef struct ctx__bus_delivery {
    ctx_bus_t *bus;         /* retained */
    ctx_bus_event_t *event; /* retained */
    ctx__bus_snapshot_t snap;
    int ran;
} ctx__bus_delivery_t;

/* Validates, takes the snapshot and, if some listener matches, makes the
 * delivery record (pending +1).  Returns the number of matching listeners
 * with *out set (NULL when 0: nothing to queue), or CTX_EINVAL,
 * CTX_ESHUTDOWN, CTX_ENOMEM (*out NULL, nothing kept). */
int ctx__bus_delivery_prepare(ctx_bus_t *bus, ctx_bus_event_t *event,
                              ctx__bus_delivery_t **out);
/* The executor refused it: undo prepare (no callback of the user runs but
 * the releases of what the snapshot holds). */
void ctx__bus_delivery_abort(ctx__bus_delivery_t *d);
/* Runs the listeners (on the executor's thread, in the captured copy). */
void ctx__bus_delivery_run(ctx__bus_delivery_t *d);
/* The executor is done with it (ran or dropped): releases everything. */
void ctx__bus_delivery_finish(ctx__bus_delivery_t *d);

/* The bus whose asynchronous delivery runs on this thread, or NULL. */
ctx_bus_t *ctx__bus_delivering(void);

#endif /* CTX_BUS_INTERNAL_H */
