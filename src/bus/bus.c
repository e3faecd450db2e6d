/* SPDX-License-Identifier: MIT */
/*
 * bus.c — the bus itself: creation, shutdown, destruction, counters, waiting
 * for idle, and the error report of a failed listener.
 *
 *   ctx_bus_t
 *   ┌──────────────────────────────┐
 *   │ generation, shut             │    what every publish reads (one line,
 *   │ global ──────────────────────┼──▶ ctx__bus_list_t (immutable)
 *   │ scoped_var ──────────────────┼──▶ ctx_var_t: each context's value is
 *   │ unsubscribes                 │    its ctx__bus_list_t of scoped ones
 *   │ (a line of padding)          │
 *   │ refs                         │◀── creator, every listener record,
 *   │ write_lock (mutex)           │    every asynchronous delivery
 *   │ next_seq, on_error, counters │
 *   │ idle_lock/idle_cond, pending │    asynchronous deliveries in flight
 *   └──────────────────────────────┘
 *
 * One lock, for writers.  Writers (a global subscribe or unsubscribe,
 * shutdown) take write_lock, a mutex, and may allocate under it; they are
 * rare.  They replace `global` (a release store) and hand the old list to
 * reclamation (ctx__bus_retire, after the mutex is let go: it may run
 * user_release).  Publishers take no lock: they load `global` inside a read
 * section (reclaim.c), which keeps the list alive until they leave it.  So
 * a publish never waits for a writer, and no lock is held while a listener
 * runs (a listener may subscribe, unsubscribe or publish).
 *
 * Lifetime.  The bus is reference counted: the creator's reference goes
 * with ctx_bus_release; every listener record holds one (so a handle can
 * unsubscribe after destroy, and a scoped listener alive in some context
 * keeps the variable's owner alive); every asynchronous delivery holds one
 * until it finished.  Shutdown drops the global list, which is the only
 * reference from the bus to its records (it is retired like any replaced
 * list: a publish still running keeps it, and with it the bus, until it
 * returns), so after shutdown nothing forms a cycle and the last release
 * frees the bus.  `shut` only goes from 0 to 1, under write_lock, and is
 * stored before `global` becomes NULL: a publisher that loads NULL sees it
 * (publish.c).
 *
 * Pending deliveries are counted under idle_lock (an asynchronous publish
 * already costs a pool or loop record, a context copy and a delivery record,
 * so a mutex there is noise) and ctx_bus_wait_idle waits for zero.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bus/bus_internal.h"
#include "common/common.h"

/* ---- fork ---- */

atomic_uint ctx__bus_fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_child(void) {
    atomic_fetch_add_explicit(&ctx__bus_fork_generation, 1, memory_order_relaxed);
    ctx__bus_rcu_after_fork();
}

static void fork_install(void) {
    ctx__bus_rcu_init();
    pthread_atfork(NULL, NULL, fork_child);
}

void ctx__bus_fork_watch(void) { pthread_once(&fork_once, fork_install); }

int ctx_bus_new(const ctx_bus_options_t *options, ctx_bus_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_bus_options_t o = CTX_STRUCT_INIT(ctx_bus_options_t);
    if (options && ctx__struct_in(&o, sizeof o, options, CTX__BUS_OPTIONS_V1) != 0)
        return CTX_EINVAL;
    ctx__bus_fork_watch();
    ctx_bus_t *bus = ctx__bus_malloc(sizeof *bus);
    if (!bus)
        return CTX_ENOMEM;
    memset(bus, 0, sizeof *bus);
    bus->generation = atomic_load_explicit(&ctx__bus_fork_generation, memory_order_relaxed);
    ctx_var_options_t vo = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &ctx__bus_list_ops};
    int err = ctx_var_new("ctx_bus.listeners", &vo, &bus->scoped_var);
    if (err) {
        ctx__bus_free(bus, sizeof *bus);
        return err;
    }
    int cond_ok = ctx__cond_init_monotonic(&bus->idle_cond, &bus->idle_monotonic) == 0;
    int idle_ok = pthread_mutex_init(&bus->idle_lock, NULL) == 0;
    int write_ok = pthread_mutex_init(&bus->write_lock, NULL) == 0;
    if (!cond_ok || !idle_ok || !write_ok) {
        if (cond_ok)
            pthread_cond_destroy(&bus->idle_cond);
        if (idle_ok)
            pthread_mutex_destroy(&bus->idle_lock);
        if (write_ok)
            pthread_mutex_destroy(&bus->write_lock);
        ctx_var_release(bus->scoped_var);
        ctx__bus_free(bus, sizeof *bus);
        return CTX_ESYSTEM;
    }
    atomic_init(&bus->refs, 1);
    atomic_init(&bus->shut, 0);
    atomic_init(&bus->global, NULL);
    atomic_init(&bus->next_seq, 1);
    atomic_init(&bus->unsubscribes, 0);
    bus->on_error = o.on_error;
    bus->error_user = o.error_user;
    atomic_init(&bus->failures, 0);
    atomic_init(&bus->rejected, 0);
    atomic_init(&bus->async_accepted, 0);
    atomic_init(&bus->async_dropped, 0);
    bus->pending = 0;
    *out = bus;
    return 0;
}

void ctx__bus_release(ctx_bus_t *bus) {
    if (!bus || atomic_fetch_sub_explicit(&bus->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (ctx__bus_forked(bus))
        return; /* its locks may be held by threads the child does not have */
    /* No record refers to the bus any more, so no list does: `global` is
     * NULL (shutdown dropped it, and nothing could subscribe since). */
    pthread_cond_destroy(&bus->idle_cond);
    pthread_mutex_destroy(&bus->idle_lock);
    pthread_mutex_destroy(&bus->write_lock);
    ctx_var_release(bus->scoped_var);
    ctx__bus_free(bus, sizeof *bus);
}

int ctx_bus_shutdown(ctx_bus_t *bus) {
    if (!bus)
        return CTX_EINVAL;
    if (ctx__bus_forked(bus))
        return CTX_EFORKED;
    pthread_mutex_lock(&bus->write_lock);
    ctx__bus_list_t *old = NULL;
    if (!atomic_load_explicit(&bus->shut, memory_order_relaxed)) {
        /* `shut` first: a publisher that loads the NULL below sees it. */
        atomic_store_explicit(&bus->shut, 1, memory_order_release);
        old = atomic_load_explicit(&bus->global, memory_order_relaxed);
        atomic_store_explicit(&bus->global, NULL, memory_order_release);
    }
    pthread_mutex_unlock(&bus->write_lock);
    /* May run user_release callbacks, and may drop the records' references
     * to the bus: the caller's pointer must keep it alive (the creator's
     * reference, or a handle's record). */
    ctx__bus_retire(bus, old);
    return 0;
}

void ctx_bus_release(ctx_bus_t *bus) {
    if (!bus)
        return;
    if (ctx__bus_forked(bus)) {
        /* In the child: no lock, no user callback; the memory stays. */
        atomic_fetch_sub_explicit(&bus->refs, 1, memory_order_relaxed);
        return;
    }
    ctx_bus_shutdown(bus);
    ctx__bus_release(bus);
}

static size_t live_count(const ctx__bus_list_t *list) {
    size_t n = 0;
    for (size_t i = 0; list && i < list->count; i++)
        n += !ctx__bus_listener_removed(list->items[i]);
    return n;
}

int ctx_bus_stats(ctx_bus_t *bus, ctx_bus_stats_t *out) {
    if (!bus || !out || out->size < sizeof(size_t))
        return CTX_EINVAL;
    if (ctx__bus_forked(bus))
        return CTX_EFORKED;
    ctx_bus_stats_t st = CTX_STRUCT_INIT(ctx_bus_stats_t);
    uint64_t ticket = ctx__bus_read_enter(bus);
    st.global_listeners = live_count(atomic_load_explicit(&bus->global, memory_order_acquire));
    ctx__bus_read_exit(ticket);
    st.listener_failures = atomic_load_explicit(&bus->failures, memory_order_relaxed);
    st.rejected = atomic_load_explicit(&bus->rejected, memory_order_relaxed);
    st.async_dropped = atomic_load_explicit(&bus->async_dropped, memory_order_relaxed);
    pthread_mutex_lock(&bus->idle_lock);
    st.async_accepted = atomic_load_explicit(&bus->async_accepted, memory_order_relaxed);
    st.async_pending = bus->pending;
    pthread_mutex_unlock(&bus->idle_lock);
    return ctx__struct_out(out, &st, sizeof st);
}

void ctx__bus_report(ctx_bus_t *bus, ctx_bus_listener_t *listener, ctx_bus_event_t *event,
                     int code) {
    atomic_fetch_add_explicit(&bus->failures, 1, memory_order_relaxed);
    if (bus->on_error)
        bus->on_error(bus, listener, event, code, bus->error_user);
    else
        fprintf(stderr, "ctxvar bus: listener for \"%s\" failed on \"%s\": %s (%s)\n",
                listener->pattern, event->topic, ctx_error_name(code), ctx_strerror(code));
}

/* ---- pending asynchronous deliveries ---- */

void ctx__bus_pending_add(ctx_bus_t *bus) {
    pthread_mutex_lock(&bus->idle_lock);
    bus->pending++;
    pthread_mutex_unlock(&bus->idle_lock);
}

void ctx__bus_pending_done(ctx_bus_t *bus) {
    pthread_mutex_lock(&bus->idle_lock);
    if (--bus->pending == 0)
        pthread_cond_broadcast(&bus->idle_cond);
    pthread_mutex_unlock(&bus->idle_lock);
}

int ctx_bus_wait_idle(ctx_bus_t *bus, int64_t timeout_ns) {
    if (!bus)
        return CTX_EINVAL;
    if (ctx__bus_forked(bus))
        return CTX_EFORKED;
    if (ctx__bus_delivering() == bus)
        return CTX_EBUSY;
    struct timespec deadline;
    if (timeout_ns > 0)
        ctx__cond_deadline(bus->idle_monotonic, timeout_ns, &deadline);
    int rc = 0;
    pthread_mutex_lock(&bus->idle_lock);
    while (bus->pending > 0) {
        if (timeout_ns == 0) {
            rc = CTX_ETIMEDOUT;
            break;
        }
        if (timeout_ns < 0) {
            pthread_cond_wait(&bus->idle_cond, &bus->idle_lock);
        } else if (pthread_cond_timedwait(&bus->idle_cond, &bus->idle_lock, &deadline) != 0 &&
                   bus->pending > 0) {
            rc = CTX_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&bus->idle_lock);
    return rc;
}
