/* SPDX-License-Identifier: MIT */
/*
 * test_bind.c — bound callables (capture now, call later from any thread)
 * and the thread helper (empty or inherited context).
 */
#include "pool_test.h"

#include <semaphore.h>

static int marks[8];
static ctx_var_t *req_var;

/* Returns what req_var held on entry, then sets it to call_arg (if any). */
static void *read_then_set(void *arg, void *call_arg) {
    (void)arg;
    void *seen = pool_get(req_var, NULL);
    if (call_arg)
        ctx_var_set(req_var, call_arg, NULL);
    return seen;
}

/* ---------------------------------------------------------------------- */
/* Capture and call                                                        */
/* ---------------------------------------------------------------------- */

static void *call_bound_in_thread(void *arg) {
    void *r = NULL;
    OFF_MAIN_CHECK(ctx_pool_bound_call(arg, &marks[5], &r) == 0);
    return r;
}

static void test_bind_captures_now(void **state) {
    (void)state;
    req_var = pool_make_var("request", NULL, 0);
    ASSERT_RC(ctx_var_set(req_var, &marks[0], NULL), 0);
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(read_then_set, NULL, NULL, &b), 0);
    ASSERT_RC(ctx_var_set(req_var, &marks[1], NULL), 0);

    void *r = NULL;
    ASSERT_RC(ctx_pool_bound_call(b, &marks[2], &r), 0);
    assert_ptr_equal(r, &marks[0]); /* the value at bind time */
    ASSERT_RC(ctx_pool_bound_call(b, NULL, &r), 0);
    assert_ptr_equal(r, &marks[0]); /* the previous call's set is gone */
    assert_ptr_equal(pool_get(req_var, NULL), &marks[1]); /* caller untouched */

    /* From another thread, one that has no context of its own. */
    pthread_t t;
    pthread_create(&t, NULL, call_bound_in_thread, b);
    pthread_join(t, &r);
    assert_ptr_equal(r, &marks[0]);

    /* As a plain `void *(*)(void *)` callback. */
    pthread_create(&t, NULL, ctx_pool_bound_trampoline, b);
    pthread_join(t, &r);
    assert_ptr_equal(r, &marks[0]);

    assert_ptr_equal(ctx_pool_bound_retain(b), b);
    ctx_pool_bound_release(b);
    ctx_pool_bound_release(b);
    assert_int_equal(off_main_failures(), 0);
    ctx_var_release(req_var);
}

/* A C API whose callbacks are `void (*)(void *)`. */
typedef struct fake_api {
    void (*cb)(void *);
    void *user;
} fake_api_t;

static void *seen_by_void_cb;

static void *record_seen(void *arg, void *call_arg) {
    (void)arg;
    (void)call_arg;
    seen_by_void_cb = pool_get(req_var, NULL);
    return NULL;
}

static void *fake_api_thread(void *arg) {
    fake_api_t *api = arg;
    api->cb(api->user);
    return NULL;
}

static atomic_int arg_released;

static void count_arg_release(void *arg) {
    OFF_MAIN_CHECK(arg == &marks[6]);
    atomic_fetch_add(&arg_released, 1);
}

static void test_bind_void_callback_and_arg_release(void **state) {
    (void)state;
    req_var = pool_make_var("request", NULL, 0);
    atomic_store(&arg_released, 0);
    ctx_context_t *given = NULL;
    ASSERT_RC(ctx_context_new(&given), 0);
    ASSERT_RC(ctx_context_set(given, req_var, &marks[3]), 0);
    ctx_pool_bound_options_t o = {.size = sizeof(ctx_pool_bound_options_t), .context = given, .arg_release = count_arg_release};
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(record_seen, &marks[6], &o, &b), 0);
    ctx_context_release(given); /* the bound callable has its own copy */

    fake_api_t api = {ctx_pool_bound_trampoline_void, b};
    pthread_t t;
    pthread_create(&t, NULL, fake_api_thread, &api);
    pthread_join(t, NULL);
    assert_ptr_equal(seen_by_void_cb, &marks[3]);

    assert_int_equal(atomic_load(&arg_released), 0);
    ctx_pool_bound_release(b);
    assert_int_equal(atomic_load(&arg_released), 1);
    ctx_pool_bound_release(NULL);

    ASSERT_RC(ctx_pool_bound_new(NULL, NULL, NULL, &b), CTX_EINVAL);
    ASSERT_RC(ctx_pool_bound_new(record_seen, NULL, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_bound_new(record_seen, NULL, &(ctx_pool_bound_options_t){.size = sizeof(ctx_pool_bound_options_t), .flags = 0x80}, &b),
              CTX_EINVAL);
    ASSERT_RC(ctx_pool_bound_call(NULL, NULL, NULL), CTX_EINVAL);
    assert_null(ctx_pool_bound_trampoline(NULL));
    assert_int_equal(off_main_failures(), 0);
    ctx_var_release(req_var);
}

/* Many threads call one bound callable at once: each call has its own copy. */
typedef struct hammer {
    ctx_pool_bound_t *bound;
    int id;
} hammer_t;

static void *set_and_check(void *arg, void *call_arg) {
    (void)arg;
    OFF_MAIN_CHECK(pool_get(req_var, NULL) == &marks[0]);
    OFF_MAIN_CHECK(ctx_var_set(req_var, call_arg, NULL) == 0);
    sched_yield();
    OFF_MAIN_CHECK(pool_get(req_var, NULL) == call_arg);
    return call_arg;
}

static void *hammer_thread(void *arg) {
    hammer_t *h = arg;
    for (int i = 0; i < SCALED(2000); i++) {
        void *r = NULL;
        OFF_MAIN_CHECK(ctx_pool_bound_call(h->bound, &marks[1 + h->id], &r) == 0);
        OFF_MAIN_CHECK(r == &marks[1 + h->id]);
    }
    return NULL;
}

static void test_bind_concurrent_calls(void **state) {
    (void)state;
    req_var = pool_make_var("request", NULL, 0);
    ASSERT_RC(ctx_var_set(req_var, &marks[0], NULL), 0);
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(set_and_check, NULL, NULL, &b), 0);
    pthread_t t[4];
    hammer_t h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer_t){b, i};
        pthread_create(&t[i], NULL, hammer_thread, &h[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(off_main_failures(), 0);
    ctx_pool_bound_release(b);
    ctx_var_release(req_var);
}

/* Shared mode: sets persist from call to call; a second call while one runs
 * (another thread, or nested) gets CTX_EENTERED. */
static gate_t shared_gate;
static ctx_pool_bound_t *shared_bound;

static void *shared_fn(void *arg, void *call_arg) {
    (void)arg;
    void *seen = pool_get(req_var, NULL);
    if (call_arg == &marks[7]) {
        gate_pass(&shared_gate); /* hold the context entered */
    } else if (call_arg == &marks[4]) {
        /* nested call */
        return (void *)(intptr_t)ctx_pool_bound_call(shared_bound, NULL, NULL);
    } else if (call_arg) {
        ctx_var_set(req_var, call_arg, NULL);
    }
    return seen;
}

static void *shared_hold(void *arg) {
    (void)arg;
    OFF_MAIN_CHECK(ctx_pool_bound_call(shared_bound, &marks[7], NULL) == 0);
    return NULL;
}

static void test_bind_shared(void **state) {
    (void)state;
    req_var = pool_make_var("request", NULL, 0);
    ASSERT_RC(ctx_var_set(req_var, &marks[0], NULL), 0);
    ASSERT_RC(ctx_pool_bound_new(shared_fn, NULL, &(ctx_pool_bound_options_t){.size = sizeof(ctx_pool_bound_options_t), .flags = CTX_POOL_BOUND_SHARED},
                           &shared_bound),
              0);
    void *r = NULL;
    ASSERT_RC(ctx_pool_bound_call(shared_bound, &marks[1], &r), 0);
    assert_ptr_equal(r, &marks[0]);
    ASSERT_RC(ctx_pool_bound_call(shared_bound, NULL, &r), 0);
    assert_ptr_equal(r, &marks[1]); /* the first call's set persisted */
    assert_ptr_equal(pool_get(req_var, NULL), &marks[0]);

    ASSERT_RC(ctx_pool_bound_call(shared_bound, &marks[4], &r), 0);
    assert_int_equal((int)(intptr_t)r, CTX_EENTERED); /* nested */

    gate_init(&shared_gate);
    pthread_t t;
    pthread_create(&t, NULL, shared_hold, NULL);
    gate_await_arrivals(&shared_gate, 1);
    ASSERT_RC(ctx_pool_bound_call(shared_bound, NULL, &r), CTX_EENTERED); /* concurrent */
    gate_open(&shared_gate);
    pthread_join(t, NULL);
    ASSERT_RC(ctx_pool_bound_call(shared_bound, NULL, &r), 0); /* free again */
    assert_ptr_equal(r, &marks[1]);
    gate_destroy(&shared_gate);

    ctx_pool_bound_release(shared_bound);
    assert_int_equal(off_main_failures(), 0);
    ctx_var_release(req_var);
}

/* Out of memory: bind_new fails cleanly, and a call that cannot copy fails
 * without calling fn. */
static atomic_int calls;

static void *count_call(void *arg, void *call_arg) {
    (void)arg;
    (void)call_arg;
    atomic_fetch_add(&calls, 1);
    return NULL;
}

static void test_bind_out_of_memory(void **state) {
    (void)state;
    atomic_store(&calls, 0);
    atomic_store(&arg_released, 0);
    ctx_test_alloc_install();
    long base = ctx_test_alloc_live_blocks();
    ctx_pool_bound_options_t o = {.size = sizeof(ctx_pool_bound_options_t), .arg_release = count_arg_release};
    for (long n = 1;; n++) {
        ctx_pool_bound_t *b = NULL;
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_pool_bound_new(count_call, &marks[6], &o, &b);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            ctx_pool_bound_release(b);
            break;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_null(b);
        assert_int_equal(atomic_load(&arg_released), 0); /* still ours */
    }
    assert_int_equal(atomic_load(&arg_released), 1);
    ctx_pool_bound_t *b = NULL;
    ASSERT_RC(ctx_pool_bound_new(count_call, NULL, NULL, &b), 0);
    ctx_test_alloc_fail_all(1);
    ASSERT_RC(ctx_pool_bound_call(b, NULL, NULL), CTX_ENOMEM);
    ctx_test_alloc_fail_all(0);
    assert_int_equal(atomic_load(&calls), 0);
    ASSERT_RC(ctx_pool_bound_call(b, NULL, NULL), 0);
    assert_int_equal(atomic_load(&calls), 1);
    ctx_pool_bound_release(b);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), base);
    ctx_test_alloc_uninstall();
}

/* ---------------------------------------------------------------------- */
/* Threads                                                                 */
/* ---------------------------------------------------------------------- */

static gate_t thread_gate;

/* Reads req_var, sets it, waits at the gate, reads it again. */
static void *thread_body(void *arg) {
    (void)arg;
    void *first = pool_get(req_var, NULL);
    ctx_var_set(req_var, &marks[7], NULL);
    gate_pass(&thread_gate);
    OFF_MAIN_CHECK(pool_get(req_var, NULL) == &marks[7]);
    return first;
}

static void test_thread_empty_or_inherit(void **state) {
    (void)state;
    req_var = pool_make_var("request", NULL, 0);
    ASSERT_RC(ctx_var_set(req_var, &marks[0], NULL), 0);
    for (int inherit = 0; inherit < 2; inherit++) {
        gate_init(&thread_gate);
        ctx_pool_thread_t *t = NULL;
        ASSERT_RC(ctx_pool_thread_create(thread_body, NULL, inherit ? CTX_POOL_THREAD_INHERIT : 0, &t), 0);
        gate_await_arrivals(&thread_gate, 1);
        /* The creator changes its value while the thread runs: the thread's
         * copy (if any) was taken at creation and is unaffected; the
         * thread's own set never reaches the creator. */
        ASSERT_RC(ctx_var_set(req_var, &marks[1], NULL), 0);
        assert_ptr_equal(pool_get(req_var, NULL), &marks[1]);
        gate_open(&thread_gate);
        void *first = &marks[2];
        ASSERT_RC(ctx_pool_thread_join(t, &first), 0);
        if (inherit)
            assert_ptr_equal(first, &marks[0]);
        else
            assert_null(first);
        ASSERT_RC(ctx_var_set(req_var, &marks[0], NULL), 0);
        gate_destroy(&thread_gate);
    }
    ASSERT_RC(ctx_pool_thread_create(NULL, NULL, 0, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_thread_create(thread_body, NULL, 0x40, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_pool_thread_join(NULL, NULL), CTX_EINVAL);
    assert_int_equal(off_main_failures(), 0);
    ctx_var_release(req_var);
}

static sem_t detached_done;

static void *detached_body(void *arg) {
    *(void **)arg = pool_get(req_var, NULL);
    sem_post(&detached_done);
    return NULL;
}

static atomic_int oom_body_runs;

static void *oom_body(void *arg) {
    (void)arg;
    atomic_fetch_add(&oom_body_runs, 1);
    return &marks[4];
}

static void test_thread_detached_and_out_of_memory(void **state) {
    (void)state;
    req_var = pool_make_var("request", NULL, 0);
    ctx_test_alloc_install();
    long base = ctx_test_alloc_live_blocks();
    ASSERT_RC(ctx_var_set(req_var, &marks[3], NULL), 0);

    sem_init(&detached_done, 0, 0);
    void *seen = NULL;
    ASSERT_RC(ctx_pool_thread_create(detached_body, &seen, CTX_POOL_THREAD_INHERIT, NULL), 0);
    sem_wait(&detached_done);
    assert_ptr_equal(seen, &marks[3]);

    /* Fail each allocation in turn.  The armed failure may land in
     * ctx_pool_thread_create (then nothing started and fn never runs) or in the
     * new thread while it sets up its state (then fn never runs either and
     * join reports it). */
    atomic_store(&oom_body_runs, 0);
    int successes = 0;
    for (long n = 1;; n++) {
        ctx_pool_thread_t *t = NULL;
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_pool_thread_create(oom_body, NULL, CTX_POOL_THREAD_INHERIT, &t);
        if (rc != 0) {
            ctx_test_alloc_fail_nth(0);
            ASSERT_RC(rc, CTX_ENOMEM);
            assert_null(t);
            continue;
        }
        void *r = NULL;
        int jrc = ctx_pool_thread_join(t, &r);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (jrc == 0) {
            assert_ptr_equal(r, &marks[4]);
            successes++;
        } else {
            ASSERT_RC(jrc, CTX_ENOMEM);
            assert_null(r);
        }
        if (!fired)
            break;
    }
    assert_int_equal(atomic_load(&oom_body_runs), successes);

    /* The detached thread freed its record and state as it ended. */
    ASSERT_RC(ctx_thread_release(), 0);
    for (int i = 0; i < 100000 && ctx_test_alloc_live_blocks() != base; i++)
        short_nap(); /* bounded: a leak fails below instead of hanging */
    assert_int_equal(ctx_test_alloc_live_blocks(), base);
    ctx_test_alloc_uninstall();
    sem_destroy(&detached_done);
    ctx_var_release(req_var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bind_captures_now, pool_teardown),
        cmocka_unit_test_teardown(test_bind_void_callback_and_arg_release, pool_teardown),
        cmocka_unit_test_teardown(test_bind_concurrent_calls, pool_teardown),
        cmocka_unit_test_teardown(test_bind_shared, pool_teardown),
        cmocka_unit_test_teardown(test_bind_out_of_memory, pool_teardown),
        cmocka_unit_test_teardown(test_thread_empty_or_inherit, pool_teardown),
        cmocka_unit_test_teardown(test_thread_detached_and_out_of_memory, pool_teardown),
    };
    int failed = cmocka_run_group_tests_name("pool_bind_thread", tests, NULL, NULL);
    ctx_thread_release();
    return failed || off_main_failures();
}
