/* SPDX-License-Identifier: MIT */
/*
 * test_structs.c — the growth rule (docs/api-rules.md) on the loop's option
 * structs: ctx_loop_call_options_t, ctx_loop_future_options_t and
 * ctx_loop_task_options_t.
 *
 * For each: the 1.0 layout's size is pinned; a caller's struct that is
 * larger than the library's (a program built against a later header) is
 * accepted when the bytes the library does not know are zero and refused
 * with CTX_EINVAL (nothing scheduled, no callback, no arg_release) when
 * they are not; a size below the 1.0 layout (or 0: a struct not made with
 * CTX_STRUCT_INIT) is CTX_EINVAL.
 */
#include "loop_test.h"

/* A later header's struct: the 1.0 struct and one more member. */
typedef struct {
    ctx_loop_call_options_t v1;
    uint64_t later;
} call_options_next_t;

typedef struct {
    ctx_loop_future_options_t v1;
    uint64_t later;
} future_options_next_t;

typedef struct {
    ctx_loop_task_options_t v1;
    uint64_t later;
} task_options_next_t;

static int ran, released;
static void count_run(void *arg) {
    (void)arg;
    ran++;
}
static void count_release(void *arg) {
    (void)arg;
    released++;
}
static void count_done(ctx_loop_future_t *f, void *user) {
    (void)f;
    (void)user;
    ran++;
}
static int finish_step(ctx_loop_task_t *task, void *arg, void **result) {
    (void)task;
    (void)arg;
    *result = IV(7);
    ran++;
    return 0;
}

static void test_1_0_layouts(void **state) {
    (void)state;
    /* size, then the 1.0 members: pinned, since 1.x only appends. */
    assert_int_equal(offsetof(ctx_loop_call_options_t, size), 0);
    assert_int_equal(sizeof(ctx_loop_call_options_t), sizeof(size_t) + 2 * sizeof(void *));
    assert_int_equal(offsetof(ctx_loop_future_options_t, size), 0);
    assert_int_equal(sizeof(ctx_loop_future_options_t), sizeof(size_t) + sizeof(void *));
    assert_int_equal(offsetof(ctx_loop_task_options_t, size), 0);
    assert_int_equal(sizeof(ctx_loop_task_options_t), sizeof(size_t) + 3 * sizeof(void *));
}

/* Every call that takes call options, with `o`: returns the first error
 * (all must agree), after running the loop. */
static int schedule_all(ctx_loop_t *loop, const ctx_loop_call_options_t *o) {
    int rc[5];
    rc[0] = ctx_loop_call_soon(loop, count_run, NULL, o, NULL);
    rc[1] = ctx_loop_call_later(loop, 0, count_run, NULL, o, NULL);
    rc[2] = ctx_loop_call_at(loop, 0, count_run, NULL, o, NULL);
    rc[3] = ctx_loop_call_soon_threadsafe(loop, count_run, NULL, o, NULL);
    ctx_loop_future_t *f = NULL;
    ASSERT_RC(ctx_loop_future_new(loop, NULL, &f), 0);
    ASSERT_RC(ctx_loop_future_set_result(f, NULL), 0);
    rc[4] = ctx_loop_future_add_done_callback(f, count_done, NULL, o);
    ctx_loop_future_release(f);
    run_loop(loop);
    for (int i = 1; i < 5; i++)
        assert_int_equal(rc[i], rc[0]);
    return rc[0];
}

static void test_call_options_grow(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    call_options_next_t next;
    memset(&next, 0, sizeof next);
    next.v1.size = sizeof next;
    next.v1.arg_release = count_release;

    ran = released = 0;
    ASSERT_RC(schedule_all(loop, &next.v1), 0); /* unknown tail zero: accepted */
    assert_int_equal(ran, 5);
    assert_int_equal(released, 5);

    ran = released = 0;
    next.later = 1; /* a member this library does not know, set: refused */
    ASSERT_RC(schedule_all(loop, &next.v1), CTX_EINVAL);
    assert_int_equal(ran, 0);
    assert_int_equal(released, 0);

    ctx_loop_call_options_t o = CTX_STRUCT_INIT(ctx_loop_call_options_t);
    o.arg_release = count_release;
    o.size = sizeof o - 1; /* below the 1.0 layout */
    ASSERT_RC(schedule_all(loop, &o), CTX_EINVAL);
    o.size = 0; /* not made with CTX_STRUCT_INIT */
    ASSERT_RC(schedule_all(loop, &o), CTX_EINVAL);
    assert_int_equal(ran, 0);
    assert_int_equal(released, 0);

    o.size = sizeof o; /* the library's own size */
    ASSERT_RC(schedule_all(loop, &o), 0);
    assert_int_equal(ran, 5);
    assert_int_equal(released, 5);
    close_loop(loop);
}

static int results_released;
static void release_result(void *result) {
    (void)result;
    results_released++;
}

static void test_future_options_grow(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    future_options_next_t next;
    memset(&next, 0, sizeof next);
    next.v1.size = sizeof next;
    next.v1.result_release = release_result;
    ctx_loop_future_t *f = NULL;
    results_released = 0;
    ASSERT_RC(ctx_loop_future_new(loop, &next.v1, &f), 0);
    ASSERT_RC(ctx_loop_future_set_result(f, IV(1)), 0);
    ctx_loop_future_release(f);
    assert_int_equal(results_released, 1); /* the options were read */

    next.later = 42;
    f = NULL;
    ASSERT_RC(ctx_loop_future_new(loop, &next.v1, &f), CTX_EINVAL);
    assert_null(f);
    ctx_loop_future_options_t o = CTX_STRUCT_INIT(ctx_loop_future_options_t);
    o.size = sizeof(size_t);
    ASSERT_RC(ctx_loop_future_new(loop, &o, &f), CTX_EINVAL);
    assert_null(f);
    close_loop(loop);
}

static void test_task_options_grow(void **state) {
    (void)state;
    ctx_loop_t *loop = new_loop(NULL);
    task_options_next_t next;
    memset(&next, 0, sizeof next);
    next.v1.size = sizeof next;
    next.v1.arg_release = count_release;
    next.v1.result_release = release_result;
    ctx_loop_task_t *t = NULL;
    ran = released = results_released = 0;
    ASSERT_RC(ctx_loop_task_new(loop, finish_step, NULL, &next.v1, &t), 0);
    run_loop(loop);
    assert_int_equal(ran, 1);
    assert_int_equal(released, 1);
    ctx_loop_task_release(t);
    assert_int_equal(results_released, 1);

    next.later = 1;
    t = NULL;
    ASSERT_RC(ctx_loop_task_new(loop, finish_step, NULL, &next.v1, &t), CTX_EINVAL);
    assert_null(t);
    ctx_loop_task_options_t o = CTX_STRUCT_INIT(ctx_loop_task_options_t);
    o.arg_release = count_release;
    o.size = offsetof(ctx_loop_task_options_t, result_release); /* a 1.0 member missing */
    ASSERT_RC(ctx_loop_task_new(loop, finish_step, NULL, &o, &t), CTX_EINVAL);
    run_loop(loop);
    assert_int_equal(ran, 1);
    assert_int_equal(released, 1);
    close_loop(loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_1_0_layouts, release_thread),
        cmocka_unit_test_teardown(test_call_options_grow, release_thread),
        cmocka_unit_test_teardown(test_future_options_grow, release_thread),
        cmocka_unit_test_teardown(test_task_options_grow, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
