/* SPDX-License-Identifier: MIT */
/* A program outside the source tree, as a user writes it: the core.  The
 * header's version must be the library's, and a value set inside a copy of
 * the context must stay in that copy. */
#include <stdio.h>
#include <string.h>

#include <ctxvar.h>

static ctx_var_t *request_id;

static void *handle(void *arg) {
    void *seen = NULL;
    if (ctx_var_set(request_id, arg, NULL) != 0 || ctx_var_get(request_id, &seen) != CTX_VALUE)
        return NULL;
    return seen;
}

int main(void) {
    ctx_context_t *ctx;
    void *seen = NULL, *outside = NULL;
    if (ctx_version() != CTX_VERSION_HEX || strcmp(ctx_version_string(), CTX_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", CTX_VERSION_STRING, ctx_version_string());
        return 1;
    }
    if (ctx_var_new("request_id", NULL, &request_id) != 0 || ctx_context_copy_current(&ctx) != 0)
        return 1;
    if (ctx_context_run(ctx, handle, "req-1", &seen) != 0 || seen == NULL ||
        strcmp(seen, "req-1") != 0)
        return 1;
    if (ctx_var_get(request_id, &outside) != CTX_ENOTFOUND) /* the set stayed in ctx */
        return 1;
    ctx_context_release(ctx);
    ctx_var_release(request_id);
    ctx_thread_release();
    printf("core %s ok\n", ctx_version_string());
    return 0;
}
