/* SPDX-License-Identifier: MIT */
/*
 * publish_loop.c — asynchronous delivery on a ctxvar loop (libuv).
 *
 * Built only when the loop module is (src/bus/CMakeLists.txt adds this file
 * when the ctxvar_loop_static target exists), so the bus core does not
 * depend on libuv.  The delivery record, its life and its counts are
 * async.c's; this file is the loop as an executor:
 *
 *   any thread                               loop thread
 *   ctx_bus_publish_loop                     (next loop iteration)
 *     prepare (snapshot, record)
 *     ctx_loop_call_soon_threadsafe ──inbox──▶ loop_job in a private copy of
 *       (captures the caller's context)          the publisher's context
 *                                              loop_job_release (arg_release)
 *
 * ctx_loop_call_soon_threadsafe keeps the order of the callbacks scheduled
 * from one thread, so the events one thread publishes on a loop are
 * delivered in publish order.  When the loop closes before the callback
 * runs, the loop calls arg_release without it: the delivery is dropped and
 * its event released (async.c's finish).  A refused call (CTX_ECLOSED,
 * CTX_ENOMEM) runs and releases nothing, so the record is aborted here.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctxvar/loop.h>

#include "bus/bus_internal.h"

static void loop_job(void *arg) { ctx__bus_delivery_run(arg); }

static void loop_job_release(void *arg) { ctx__bus_delivery_finish(arg); }

int ctx_bus_publish_loop(ctx_bus_t *bus, ctx_bus_event_t *event, ctx_loop_t *loop) {
    if (!bus || !event || !loop)
        return CTX_EINVAL;
    ctx__bus_delivery_t *d;
    int n = ctx__bus_delivery_prepare(bus, event, &d);
    if (n <= 0)
        return n;
    ctx_loop_call_options_t options = CTX_STRUCT_INIT(ctx_loop_call_options_t);
    options.arg_release = loop_job_release;
    int rc = ctx_loop_call_soon_threadsafe(loop, loop_job, d, &options, NULL);
    if (rc != 0) {
        ctx__bus_delivery_abort(d);
        return rc;
    }
    return n; /* d may be gone already: the loop thread may have run it */
}
