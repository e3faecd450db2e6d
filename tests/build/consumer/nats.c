/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: the nats module.  The context (a
 * trace, and a cancellation scope's deadline) is written into a NATS
 * message's headers through the module's carrier (no server needed), with
 * libnats called directly as a user does. */
#include <stdio.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/nats.h>

int main(void) {
    ctx_wire_t *wire;
    natsMsg *msg;
    const char *value = NULL, *timeout = NULL;
    ctx_cancel_options_t options = CTX_STRUCT_INIT(ctx_cancel_options_t);
    ctx_token_t *token;
    options.timeout_ns = 5000000000LL;
    if (nats_Open(-1) != NATS_OK || ctx_wire_new(&wire) != 0 ||
        natsMsg_Create(&msg, "orders", NULL, "x", 1) != NATS_OK)
        return 1;
    ctx_wire_carrier_t carrier = ctx_nats_carrier(msg);
    if (ctx_wire_trace_start(wire, NULL, CTX_WIRE_TRACE_FLAG_SAMPLED, NULL) != 0 ||
        ctx_cancel_enter_child(&options, NULL, &token) != 0 ||
        ctx_wire_inject(wire, NULL, &carrier, 0, NULL) != 0 ||
        natsMsgHeader_Get(msg, "traceparent", &value) != NATS_OK || value == NULL ||
        strlen(value) != CTX_WIRE_TRACEPARENT_LEN ||
        natsMsgHeader_Get(msg, "grpc-timeout", &timeout) != NATS_OK || timeout == NULL ||
        ctx_cancel_exit(token) != 0)
        return 1;
    printf("nats ok: libnats %s, traceparent: %s, grpc-timeout: %s\n", nats_GetVersion(), value,
           timeout);
    natsMsg_Destroy(msg);
    ctx_wire_release(wire);
    ctx_thread_release();
    ctx_cancel_timer_release();
    nats_Close();
    return 0;
}
