/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: cancel.  A copy of the context sees the
 * cancellation of the scope it was copied with, a callback runs in the
 * context it was registered in, and a deadline expires. */
#include <stdio.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>

static int seen_in_callback;

static void on_cancel(void *arg) {
    (void)arg;
    seen_in_callback = ctx_cancel_check(); /* the registering context's scope */
}

static void *check(void *arg) {
    (void)arg;
    return (void *)(ctx_cancel_check() == CTX_ECANCELLED ? "cancelled" : "active");
}

int main(void) {
    ctx_cancel_scope_t *request;
    ctx_token_t *tok;
    ctx_context_t *copy;
    ctx_cancel_callback_t cb;
    void *seen = NULL;
    if (ctx_cancel_enter_child(NULL, &request, &tok) != 0 ||
        ctx_context_copy_current(&copy) != 0 ||
        ctx_cancel_callback_init(&cb, request, on_cancel, NULL) != 0 ||
        ctx_cancel_scope_cancel(request, NULL) != 0 ||
        ctx_context_run(copy, check, NULL, &seen) != 0 ||
        seen_in_callback != CTX_ECANCELLED ||
        ctx_cancel_callback_clear(&cb) != CTX_CANCEL_CALLBACK_RAN ||
        ctx_cancel_exit(tok) != 0)
        return 1;
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 1000000; /* 1 ms */
    ctx_cancel_scope_t *timed;
    if (ctx_cancel_scope_new(NULL, &o, &timed) != 0 ||
        ctx_cancel_scope_wait(timed, -1) != CTX_EDEADLINE)
        return 1;
    ctx_cancel_scope_release(timed);
    ctx_context_release(copy);
    ctx_cancel_scope_release(request);
    ctx_cancel_timer_release();
    ctx_thread_release();
    printf("cancel ok: the copy saw the scope %s\n", (const char *)seen);
    return 0;
}
