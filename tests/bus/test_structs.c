/* SPDX-License-Identifier: MIT */
/*
 * test_structs.c — the growth rule (docs/api-rules.md) on the bus's public
 * structs: ctx_bus_options_t and ctx_bus_subscribe_options_t (inputs),
 * ctx_bus_stats_t (output).
 *
 * The 1.0 layouts are pinned.  An input struct larger than the library's
 * is accepted when its unknown bytes are zero and refused with CTX_EINVAL
 * (nothing made, nothing subscribed, user_release never called) when not; a
 * size below the 1.0 layout is CTX_EINVAL.  The stats are written up to the
 * caller's size and not one byte further: an older, smaller struct is
 * filled as far as it goes (the struct is allocated to its exact size, so
 * AddressSanitizer and valgrind catch a write past it), a larger one has
 * its unknown tail left untouched, and a size smaller than the size member
 * itself is CTX_EINVAL.
 */
#include "bus_test.h"

typedef struct {
    ctx_bus_options_t v1;
    uint64_t later;
} bus_options_next_t;

typedef struct {
    ctx_bus_subscribe_options_t v1;
    uint64_t later;
} subscribe_options_next_t;

typedef struct {
    ctx_bus_stats_t v1;
    uint64_t later;
} stats_next_t;

/* An older header's stats: fewer members. */
typedef struct {
    size_t size;
    size_t global_listeners;
} stats_old_t;

static int user_released;
static void note_release(void *user) {
    (void)user;
    user_released++;
}

static int noop_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    return 0;
}

static void test_1_0_layouts(void **state) {
    (void)state;
    assert_int_equal(offsetof(ctx_bus_options_t, size), 0);
    assert_int_equal(sizeof(ctx_bus_options_t), sizeof(size_t) + 2 * sizeof(void *));
    assert_int_equal(offsetof(ctx_bus_subscribe_options_t, size), 0);
    assert_int_equal(offsetof(ctx_bus_subscribe_options_t, user_release), 2 * sizeof(size_t));
    assert_int_equal(offsetof(ctx_bus_stats_t, size), 0);
    assert_int_equal(offsetof(ctx_bus_stats_t, async_dropped), 2 * sizeof(size_t) + 4 * 8);
    assert_int_equal(sizeof(ctx_bus_stats_t), 2 * sizeof(size_t) + 5 * 8);
}

static void test_bus_options_grow(void **state) {
    (void)state;
    error_log_t errors;
    memset(&errors, 0, sizeof errors);
    bus_options_next_t next;
    memset(&next, 0, sizeof next);
    next.v1.size = sizeof next;
    next.v1.on_error = record_error;
    next.v1.error_user = &errors;
    ctx_bus_t *bus = NULL;
    ASSERT_RC(ctx_bus_new(&next.v1, &bus), 0);
    recorder_t r;
    recorder_init(&r, 1, NULL);
    r.fail_with = CTX_ECALLBACK;
    ctx_bus_listener_release(subscribe(bus, "a", record_listener, &r, 0));
    ASSERT_RC(publish_int(bus, "a", 1), 1);
    assert_int_equal(atomic_load(&errors.count), 1); /* on_error was read */
    ctx_bus_release(bus);
    recorder_destroy(&r);

    next.later = 1;
    bus = NULL;
    ASSERT_RC(ctx_bus_new(&next.v1, &bus), CTX_EINVAL);
    assert_null(bus);
    ctx_bus_options_t o = CTX_STRUCT_INIT(ctx_bus_options_t);
    o.size = sizeof o - 1;
    ASSERT_RC(ctx_bus_new(&o, &bus), CTX_EINVAL);
    o.size = 0;
    ASSERT_RC(ctx_bus_new(&o, &bus), CTX_EINVAL);
    assert_null(bus);
}

static void test_subscribe_options_grow(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    subscribe_options_next_t next;
    memset(&next, 0, sizeof next);
    next.v1.size = sizeof next;
    next.v1.flags = CTX_BUS_SCOPED;
    next.v1.user_release = note_release;
    user_released = 0;
    ctx_bus_listener_t *l = NULL;
    ASSERT_RC(ctx_bus_subscribe(bus, "a", noop_listener, NULL, &next.v1, &l), 0);
    assert_int_equal(ctx_bus_listener_visible(l), 1);
    ASSERT_RC(publish_int(bus, "a", 1), 1);
    ASSERT_RC(ctx_bus_unsubscribe(l), 0);
    ctx_bus_listener_release(l);
    ctx_bus_release(bus);
    ASSERT_RC(ctx_thread_release(), 0); /* the scoped list goes with the context */
    assert_int_equal(user_released, 1); /* user_release was read */

    bus = new_bus(NULL);
    next.later = 1;
    l = NULL;
    user_released = 0;
    ASSERT_RC(ctx_bus_subscribe(bus, "a", noop_listener, NULL, &next.v1, &l), CTX_EINVAL);
    assert_null(l);
    ctx_bus_subscribe_options_t o = CTX_STRUCT_INIT(ctx_bus_subscribe_options_t);
    o.user_release = note_release;
    o.size = offsetof(ctx_bus_subscribe_options_t, user_release);
    ASSERT_RC(ctx_bus_subscribe(bus, "a", noop_listener, NULL, &o, &l), CTX_EINVAL);
    ASSERT_RC(publish_int(bus, "a", 1), 0); /* nothing was subscribed */
    assert_int_equal(user_released, 0);
    ctx_bus_release(bus);
}

static void test_stats_written_up_to_the_callers_size(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    ctx_bus_listener_release(subscribe(bus, "a", noop_listener, NULL, 0));
    ctx_bus_listener_release(subscribe(bus, "b", noop_listener, NULL, 0));
    ctx_bus_shutdown(bus);
    ASSERT_RC(publish_int(bus, "a", 1), CTX_ESHUTDOWN); /* rejected = 1 */

    /* An older, smaller struct: size and global_listeners only (as a
     * program built against such a header declares it). */
    stats_old_t *old = malloc(sizeof *old);
    assert_non_null(old);
    memset(old, 0xAB, sizeof *old);
    old->size = sizeof *old;
    old->global_listeners = 99;
    ASSERT_RC(ctx_bus_stats(bus, (ctx_bus_stats_t *)(void *)old), 0);
    assert_int_equal(old->size, sizeof *old); /* the caller's size is kept */
    assert_int_equal(old->global_listeners, 0); /* shut down: none left */
    free(old);

    /* Only the size member: nothing else is written. */
    size_t *bare = malloc(sizeof *bare);
    assert_non_null(bare);
    *bare = sizeof *bare;
    ASSERT_RC(ctx_bus_stats(bus, (ctx_bus_stats_t *)(void *)bare), 0);
    assert_int_equal(*bare, sizeof *bare);
    free(bare);

    /* A newer, larger struct: the tail the library does not know is left. */
    stats_next_t next;
    memset(&next, 0, sizeof next);
    next.v1.size = sizeof next;
    next.later = 0x1234;
    ASSERT_RC(ctx_bus_stats(bus, &next.v1), 0);
    assert_int_equal(next.v1.size, sizeof next);
    assert_int_equal(next.v1.rejected, 1);
    assert_int_equal(next.later, 0x1234);

    ctx_bus_stats_t bad = CTX_STRUCT_INIT(ctx_bus_stats_t);
    bad.size = sizeof(size_t) - 1;
    ASSERT_RC(ctx_bus_stats(bus, &bad), CTX_EINVAL);
    ctx_bus_release(bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_1_0_layouts, release_thread),
        cmocka_unit_test_teardown(test_bus_options_grow, release_thread),
        cmocka_unit_test_teardown(test_subscribe_options_grow, release_thread),
        cmocka_unit_test_teardown(test_stats_written_up_to_the_callers_size, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
