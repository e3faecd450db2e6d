/* SPDX-License-Identifier: MIT */
/*
 * async.c — asynchronous delivery: the delivery record every asynchronous
 * publish makes, and the pool publish.  (The loop publish, the other
 * executor, is publish_loop.c; it uses the same record.)
 *
 * One publish, one record, one executor job:
 *
 *   publisher thread                       executor thread (worker / loop)
 *   ────────────────────────────────────   ─────────────────────────────────
 *   prepare: snapshot (global + scoped),
 *            count matches (0: stop here),
 *            record {bus+1, event+1, snap},
 *            pending+1, async_accepted+1
 *   submit the job (the executor captures
 *            a copy of the context: COPY) ─▶ run: deliver the snapshot in
 *     └ refused: abort (both counts -1,        the copy, in order; ran = 1
 *                release, return the error)  finish (executor's arg_release):
 *                                              release event and snapshot,
 *                                              pending-1, release the bus
 *
 * The snapshot is taken at publish, so the set of listeners an event reaches
 * is fixed then, as for a synchronous publish; the listeners themselves run
 * later in a private copy of the publisher's context (the pool is asked for
 * CTX_POOL_PROPAGATE_COPY whatever its own policy, so an opted-out pool still
 * carries the publisher's context for the bus).
 *
 * `finish` is the executor's arg_release, which both the pool and the loop
 * call exactly once: after the job ran, or instead of it when the job is
 * dropped (pool shutdown with CANCEL, loop closed).  A dropped job never ran
 * (`ran` is 0): it is counted in async_dropped, and its event is released
 * all the same, so every accepted event is released exactly once.  The
 * order in finish matters: the event and lists go first (they may run
 * data_release and user_release), then pending (so ctx_bus_wait_idle
 * returning means those releases happened), then the bus reference (which
 * may free the bus).
 *
 * A thread-local pointer names the bus whose delivery runs on this thread, so
 * ctx_bus_wait_idle called from a listener reports CTX_EBUSY instead of
 * waiting for itself.
 */
#include "bus/bus_internal.h"

static _Thread_local ctx_bus_t *delivering;

ctx_bus_t *ctx__bus_delivering(void) { return delivering; }

int ctx__bus_delivery_prepare(ctx_bus_t *bus, ctx_bus_event_t *event,
                              ctx__bus_delivery_t **out) {
    *out = NULL;
    if (!bus || !event)
        return CTX_EINVAL;
    ctx__bus_snapshot_t snap;
    int rc = ctx__bus_snapshot_take(bus, &snap);
    if (rc == CTX_ESHUTDOWN)
        atomic_fetch_add_explicit(&bus->rejected, 1, memory_order_relaxed);
    if (rc)
        return rc;
    size_t n = ctx__bus_snapshot_count(&snap, event);
    if (n == 0) {
        ctx__bus_snapshot_drop(&snap);
        return 0;
    }
    ctx__bus_delivery_t *d = ctx__bus_malloc(sizeof *d);
    if (!d) {
        ctx__bus_snapshot_drop(&snap);
        return CTX_ENOMEM;
    }
    d->bus = ctx__bus_retain(bus);
    d->event = ctx_bus_event_retain(event);
    d->snap = snap;
    d->ran = 0;
    /* Counted before the executor can run and free the record; an executor
     * that refuses it takes the count back (ctx__bus_delivery_abort). */
    atomic_fetch_add_explicit(&bus->async_accepted, 1, memory_order_relaxed);
    ctx__bus_pending_add(bus);
    *out = d;
    return n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
}

static void delivery_free(ctx__bus_delivery_t *d) {
    ctx_bus_t *bus = d->bus;
    ctx_bus_event_release(d->event);
    ctx__bus_snapshot_drop(&d->snap);
    ctx__bus_free(d, sizeof *d);
    ctx__bus_pending_done(bus);
    ctx__bus_release(bus);
}

void ctx__bus_delivery_abort(ctx__bus_delivery_t *d) {
    atomic_fetch_sub_explicit(&d->bus->async_accepted, 1, memory_order_relaxed);
    delivery_free(d);
}

void ctx__bus_delivery_run(ctx__bus_delivery_t *d) {
    ctx_bus_t *outer = delivering; /* a loop may run inside a delivery */
    delivering = d->bus;
    ctx__bus_deliver(d->bus, &d->snap, d->event);
    delivering = outer;
    d->ran = 1;
}

void ctx__bus_delivery_finish(ctx__bus_delivery_t *d) {
    if (!d->ran)
        atomic_fetch_add_explicit(&d->bus->async_dropped, 1, memory_order_relaxed);
    delivery_free(d);
}

/* ---- the pool ---- */

static int pool_job(void *arg, void **result) {
    (void)result;
    ctx__bus_delivery_run(arg);
    return 0;
}

static void pool_job_release(void *arg) { ctx__bus_delivery_finish(arg); }

int ctx_bus_publish_pool(ctx_bus_t *bus, ctx_bus_event_t *event, ctx_pool_t *pool) {
    if (!bus || !event || !pool)
        return CTX_EINVAL;
    ctx__bus_delivery_t *d;
    int n = ctx__bus_delivery_prepare(bus, event, &d);
    if (n <= 0)
        return n;
    ctx_pool_submit_options_t options = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    options.propagation = CTX_POOL_PROPAGATE_COPY;
    options.arg_release = pool_job_release;
    int rc = ctx_pool_submit_ex(pool, pool_job, d, &options, NULL);
    if (rc != 0) {
        ctx__bus_delivery_abort(d);
        return rc;
    }
    return n; /* d may be gone already: the job may have run */
}
