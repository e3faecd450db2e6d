/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: the loop.  A callback scheduled with
 * call_soon runs in the context it was scheduled from. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/loop.h>

static ctx_var_t *request_id;
static const char *seen;

static void callback(void *arg) {
    void *value = NULL;
    (void)arg;
    if (ctx_var_get(request_id, &value) == CTX_VALUE)
        seen = value;
}

int main(void) {
    ctx_loop_t *loop;
    if (ctx_var_new("request_id", NULL, &request_id) != 0 || ctx_loop_new(NULL, &loop) != 0)
        return 1;
    if (ctx_var_set(request_id, "req-3", NULL) != 0 ||
        ctx_loop_call_soon(loop, callback, NULL, NULL, NULL) != 0 ||
        ctx_var_set(request_id, "changed later", NULL) != 0)
        return 1;
    if (ctx_loop_run(loop, UV_RUN_DEFAULT) < 0 || seen == NULL || strcmp(seen, "req-3") != 0)
        return 1;
    if (ctx_loop_close(loop) != 0)
        return 1;
    ctx_loop_release(loop);
    ctx_var_release(request_id);
    ctx_thread_release();
    printf("loop ok: the callback saw %s (libuv %s)\n", seen, uv_version_string());
    return 0;
}
