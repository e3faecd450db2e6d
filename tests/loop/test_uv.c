/* SPDX-License-Identifier: MIT */
/*
 * test_uv.c — libuv's own callbacks in the context captured when the handle
 * or request was armed: timers (one-shot, repeating, restarted from their
 * callback), uv_async (sent from a thread with another context),
 * uv_queue_work (the work on libuv's thread pool and the after-work
 * callback, run under TSan), and the generic CTX_LOOP_UV_CALLBACK trampoline on
 * a handle (uv_check_t) and a request (uv_fs_t); handle->data stays the
 * caller's throughout.
 */
#include "loop_test.h"

static ctx_var_t *x_var;

/* ---- timers ---- */

typedef struct timer_probe {
    ctx_loop_uv_timer_t timer;
    long seen[8];
    int fired;
    int stop_after;
    int restart_once;
} timer_probe_t;

static void on_timer(uv_timer_t *handle) {
    timer_probe_t *p = handle->data; /* data is still ours */
    assert_ptr_equal((ctx_loop_uv_timer_t *)handle, &p->timer);
    p->seen[p->fired++] = get_int(x_var);
    set_int(x_var, 500 + p->fired); /* the timer's own context */
    if (p->restart_once) {
        p->restart_once = 0;
        ASSERT_RC(ctx_loop_uv_timer_start(&p->timer, on_timer, 1, 0), 0); /* re-captures */
    } else if (p->fired == p->stop_after) {
        ASSERT_RC(ctx_loop_uv_timer_stop(&p->timer), 0);
    }
}

static void test_timer(void **state) {
    (void)state;
    x_var = new_var("x");
    uv_loop_t uv;
    assert_int_equal(uv_loop_init(&uv), 0);
    timer_probe_t p;
    memset(&p, 0, sizeof p);
    ASSERT_RC(ctx_loop_uv_timer_init(&uv, &p.timer), 0);
    p.timer.timer.data = &p;

    /* One-shot: sees the value at start, not the later one; its context is
     * dropped after the callback. */
    set_int(x_var, 1);
    ASSERT_RC(ctx_loop_uv_timer_start(&p.timer, on_timer, 1, 0), 0);
    set_int(x_var, 2);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(p.fired, 1);
    assert_int_equal(p.seen[0], 1);
    assert_null(p.timer.scope_.context_);
    assert_int_equal(get_int(x_var), 2);

    /* Repeating: each firing sees what the previous one set. */
    memset(p.seen, 0, sizeof p.seen);
    p.fired = 0;
    p.stop_after = 3;
    ASSERT_RC(ctx_loop_uv_timer_start(&p.timer, on_timer, 1, 1), 0);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(p.fired, 3);
    assert_int_equal(p.seen[0], 2);
    assert_int_equal(p.seen[1], 501);
    assert_int_equal(p.seen[2], 502);
    assert_null(p.timer.scope_.context_);

    /* Restarted from its callback: the new capture is taken there. */
    p.fired = 0;
    p.stop_after = 0;
    p.restart_once = 1;
    ASSERT_RC(ctx_loop_uv_timer_start(&p.timer, on_timer, 1, 0), 0);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(p.fired, 2);
    assert_int_equal(p.seen[0], 2);
    assert_int_equal(p.seen[1], 501);
    assert_int_equal(get_int(x_var), 2);

    /* Errors; a failed start leaves the timer as it was. */
    ASSERT_RC(ctx_loop_uv_timer_init(NULL, &p.timer), CTX_EINVAL);
    ASSERT_RC(ctx_loop_uv_timer_start(NULL, on_timer, 1, 0), CTX_EINVAL);
    ASSERT_RC(ctx_loop_uv_timer_start(&p.timer, NULL, 1, 0), CTX_EINVAL);
    ASSERT_RC(ctx_loop_uv_timer_stop(NULL), CTX_EINVAL);
    ctx_test_alloc_install();
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_loop_uv_timer_start(&p.timer, on_timer, 1, 0), CTX_ENOMEM);
    ctx_test_alloc_fail_all(0);
    ctx_test_alloc_uninstall();
    assert_int_equal(uv_is_active((uv_handle_t *)&p.timer.timer), 0);

    /* Closed while armed: no callback, context dropped. */
    ASSERT_RC(ctx_loop_uv_timer_start(&p.timer, on_timer, 100000, 0), 0);
    ctx_loop_uv_timer_close(&p.timer, NULL);
    ctx_loop_uv_timer_close(NULL, NULL);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&uv), 0);
    ctx_var_release(x_var);
}

/* ---- async ---- */

typedef struct async_probe {
    ctx_loop_uv_async_t async;
    long seen;
    int calls;
} async_probe_t;

static void on_async(uv_async_t *handle) {
    async_probe_t *p = handle->data;
    p->calls++;
    p->seen = get_int(x_var);
    ctx_loop_uv_async_close(&p->async, NULL);
}

static void *sender(void *arg) {
    async_probe_t *p = arg;
    set_int(x_var, 99); /* the sender's context is not lent */
    uv_async_send(&p->async.async);
    ctx_thread_release();
    return NULL;
}

static void test_async(void **state) {
    (void)state;
    x_var = new_var("x");
    uv_loop_t uv;
    assert_int_equal(uv_loop_init(&uv), 0);
    async_probe_t p;
    memset(&p, 0, sizeof p);
    set_int(x_var, 7);
    ASSERT_RC(ctx_loop_uv_async_init(&uv, &p.async, on_async), 0);
    p.async.async.data = &p;
    set_int(x_var, 8);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sender, &p), 0);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    pthread_join(t, NULL);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.seen, 7);
    assert_int_equal(get_int(x_var), 8);
    ASSERT_RC(ctx_loop_uv_async_init(NULL, &p.async, on_async), CTX_EINVAL);
    ASSERT_RC(ctx_loop_uv_async_init(&uv, &p.async, NULL), CTX_EINVAL);
    ctx_loop_uv_async_close(NULL, NULL);
    assert_int_equal(uv_loop_close(&uv), 0);
    ctx_var_release(x_var);
}

/* ---- queue_work ---- */

typedef struct work_probe {
    ctx_loop_uv_work_t work;
    ctx_var_t *y;
    atomic_int *wrong;
    int *done;
    long id;
} work_probe_t;

static void do_work(uv_work_t *req) {
    work_probe_t *w = req->data;
    if (get_int(x_var) != w->id)
        atomic_fetch_add(w->wrong, 1);
    set_int(w->y, w->id * 10);
}

static void after_work(uv_work_t *req, int status) {
    work_probe_t *w = req->data;
    if (status != 0 || get_int(x_var) != w->id || get_int(w->y) != w->id * 10)
        atomic_fetch_add(w->wrong, 1);
    (*w->done)++;
    free(w); /* the request may go in its own after-work callback */
}

static void test_queue_work(void **state) {
    (void)state;
    x_var = new_var("x");
    ctx_var_t *y = new_var("y");
    uv_loop_t uv;
    assert_int_equal(uv_loop_init(&uv), 0);
    atomic_int wrong = 0;
    int done = 0;
    int n = SCALED(200, 30, 60);
    for (int i = 0; i < n; i++) {
        work_probe_t *w = malloc(sizeof *w);
        *w = (work_probe_t){.y = y, .wrong = &wrong, .done = &done, .id = i};
        w->work.req.data = w;
        set_int(x_var, i);
        ASSERT_RC(ctx_loop_uv_queue_work(&uv, &w->work, do_work, after_work), 0);
    }
    set_int(x_var, -7);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(done, n);
    assert_int_equal(atomic_load(&wrong), 0);
    assert_int_equal(get_int(x_var), -7);
    assert_int_equal(get_int(y), -1);
    ctx_loop_uv_work_t w;
    ASSERT_RC(ctx_loop_uv_queue_work(NULL, &w, do_work, after_work), CTX_EINVAL);
    ASSERT_RC(ctx_loop_uv_queue_work(&uv, &w, NULL, after_work), CTX_EINVAL);
    assert_int_equal(uv_loop_close(&uv), 0);
    ctx_var_release(y);
    ctx_var_release(x_var);
}

/* ---- CTX_LOOP_UV_CALLBACK on any handle or request ---- */

typedef struct check_probe {
    uv_check_t check;
    ctx_loop_uv_scope_t scope;
    long seen;
    int calls;
} check_probe_t;

static void on_check(uv_check_t *handle) {
    check_probe_t *p = handle->data;
    p->calls++;
    p->seen = get_int(x_var);
    uv_check_stop(handle);
    uv_close((uv_handle_t *)handle, NULL);
    ctx_loop_uv_scope_release(&p->scope); /* safe: the trampoline holds it */
}

CTX_LOOP_UV_CALLBACK(on_check_in_context, on_check, &((check_probe_t *)handle->data)->scope,
                (uv_check_t * handle), (handle))

typedef struct fs_probe {
    uv_fs_t req;
    ctx_loop_uv_scope_t scope;
    long seen;
    ssize_t result;
} fs_probe_t;

static void on_stat(uv_fs_t *req) {
    fs_probe_t *p = req->data;
    p->seen = get_int(x_var);
    p->result = req->result;
}

CTX_LOOP_UV_CALLBACK(on_stat_in_context, on_stat, &((fs_probe_t *)req->data)->scope, (uv_fs_t * req),
                (req))

/* A keep-alive so the check handle gets an iteration. */
static void noop_timer(uv_timer_t *t) { uv_close((uv_handle_t *)t, NULL); }

static void test_generic_callback(void **state) {
    (void)state;
    x_var = new_var("x");
    uv_loop_t uv;
    assert_int_equal(uv_loop_init(&uv), 0);

    check_probe_t c;
    memset(&c, 0, sizeof c);
    uv_check_init(&uv, &c.check);
    c.check.data = &c;
    set_int(x_var, 31);
    ASSERT_RC(ctx_loop_uv_scope_capture(&c.scope), 0);
    uv_check_start(&c.check, on_check_in_context);

    fs_probe_t f;
    memset(&f, 0, sizeof f);
    f.req.data = &f;
    set_int(x_var, 32);
    ASSERT_RC(ctx_loop_uv_scope_capture(&f.scope), 0);
    assert_int_equal(uv_fs_stat(&uv, &f.req, "/", on_stat_in_context), 0);

    set_int(x_var, 33);
    uv_timer_t keep;
    uv_timer_init(&uv, &keep);
    uv_timer_start(&keep, noop_timer, 1, 0);
    assert_int_equal(uv_run(&uv, UV_RUN_DEFAULT), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.seen, 31);
    assert_null(c.scope.context_);
    assert_int_equal(f.seen, 32);
    assert_int_equal(f.result, 0);
    uv_fs_req_cleanup(&f.req);
    ctx_loop_uv_scope_release(&f.scope);
    assert_int_equal(get_int(x_var), 33);
    assert_int_equal(uv_loop_close(&uv), 0);

    /* The scope's edges. */
    ctx_loop_uv_scope_t empty = CTX_LOOP_UV_SCOPE_INIT;
    assert_null(ctx_loop_uv_scope_enter(&empty));
    assert_null(ctx_loop_uv_scope_enter(NULL));
    ctx_loop_uv_scope_exit(NULL);
    ctx_loop_uv_scope_release(&empty);
    ctx_loop_uv_scope_release(NULL);
    ASSERT_RC(ctx_loop_uv_scope_capture(NULL), CTX_EINVAL);
    /* Nested: the same scope entered twice — the inner callback runs in the
     * current context (the scope's own), and nothing breaks. */
    ASSERT_RC(ctx_loop_uv_scope_capture(&empty), 0);
    ctx_context_t *outer = ctx_loop_uv_scope_enter(&empty);
    assert_non_null(outer);
    assert_null(ctx_loop_uv_scope_enter(&empty));
    ctx_loop_uv_scope_exit(outer);
    ctx_loop_uv_scope_release(&empty);
    ctx_var_release(x_var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_timer, release_thread),
        cmocka_unit_test_teardown(test_async, release_thread),
        cmocka_unit_test_teardown(test_queue_work, release_thread),
        cmocka_unit_test_teardown(test_generic_callback, release_thread),
    };
    return cmocka_run_group_tests_name("loop: libuv callbacks", tests, NULL, NULL);
}
