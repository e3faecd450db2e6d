/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: the pool.  A task sees the value its
 * submitter had set. */
#include <stdio.h>
#include <string.h>

#include <ctxvar.h>
#include <ctxvar/pool.h>

static ctx_var_t *request_id;

static int task(void *arg, void **result) {
    (void)arg;
    return ctx_var_get(request_id, result) == CTX_VALUE ? 0 : CTX_ENOTFOUND;
}

int main(void) {
    ctx_pool_t *pool;
    ctx_pool_future_t *future;
    void *result = NULL;
    if (ctx_var_new("request_id", NULL, &request_id) != 0 ||
        ctx_var_set(request_id, "req-2", NULL) != 0 || ctx_pool_new(NULL, &pool) != 0)
        return 1;
    if (ctx_pool_submit(pool, task, NULL, &future) != 0 ||
        ctx_pool_future_wait(future, CTX_WAIT_FOREVER) != 0 ||
        ctx_pool_future_result(future, &result) != 0 || result == NULL ||
        strcmp(result, "req-2") != 0)
        return 1;
    ctx_pool_future_release(future);
    ctx_pool_release(pool);
    ctx_var_release(request_id);
    ctx_thread_release();
    printf("pool ok: the task saw %s\n", (const char *)result);
    return 0;
}
