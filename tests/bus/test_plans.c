/* SPDX-License-Identifier: MIT */
/*
 * test_plans.c — the per-thread delivery plans of synchronous publishes
 * (publish.c): a plan is reused only for the very lists and topic it was
 * made from.
 *
 * Asserts that each of these reaches exactly the listeners it should, in
 * order, on a thread whose plan was made by the publish before it: two
 * topics of the same length and the same hash (a plan keyed on the hash
 * alone would deliver one's listeners for the other); a subscribe and an
 * unsubscribe between two publishes of one topic; a list freed and a new
 * one made (possibly at the same address); a scoped subscribe; a publish
 * nested in a listener of a planned delivery, which must neither change the
 * plan under it nor be mistaken for it; more matching listeners than a plan
 * holds; a topic longer than a plan keeps.
 */
#include "bus_test.h"

#include "bus/bus_internal.h"

static int log_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user);

typedef struct trail {
    int n;
    int tags[64];
} trail_t;

static trail_t trail;

static int log_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    if (trail.n < 64)
        trail.tags[trail.n++] = (int)(intptr_t)user;
    return 0;
}

/* Publishes `topic` and checks the listeners reached, in order. */
static void expect(ctx_bus_t *bus, const char *topic, const int *tags, int n) {
    trail.n = 0;
    int got = publish_int(bus, topic, 0);
    if (got != n || trail.n != n)
        fail_msg("\"%s\": %d listeners called (%d logged), expected %d", topic, got, trail.n, n);
    for (int i = 0; i < n; i++)
        if (trail.tags[i] != tags[i])
            fail_msg("\"%s\": listener %d was %d, expected %d", topic, i, trail.tags[i], tags[i]);
}

static ctx_bus_listener_t *on(ctx_bus_t *bus, const char *pattern, int tag, unsigned flags) {
    return subscribe(bus, pattern, log_listener, IV(tag), flags);
}

/* "t" and 7 letters drawn from a mix of i (a sequence of similar strings
 * would not collide soon enough). */
static void topic_of(uint32_t i, char t[9]) {
    uint64_t x = i * 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    t[0] = 't';
    for (int k = 1; k < 8; k++, x >>= 6)
        t[k] = (char)('0' + (x & 63)); /* '0'..'o': no '*' */
    t[8] = '\0';
}

/* Two different 8-byte topics with the same hash (a birthday search). */
static void colliding_topics(char a[9], char b[9]) {
    enum { BITS = 20 };
    uint32_t *seen_hash = calloc((size_t)1 << BITS, sizeof *seen_hash);
    uint32_t *seen_i = calloc((size_t)1 << BITS, sizeof *seen_i);
    assert_non_null(seen_hash);
    assert_non_null(seen_i);
    for (uint32_t i = 1;; i++) {
        char t[9];
        topic_of(i, t);
        uint32_t h = ctx__bus_hash(t, 8);
        uint32_t slot = h & ((1u << BITS) - 1);
        for (; seen_i[slot]; slot = (slot + 1) & ((1u << BITS) - 1)) {
            if (seen_hash[slot] == h) {
                topic_of(seen_i[slot], a);
                memcpy(b, t, 9);
                free(seen_hash);
                free(seen_i);
                return;
            }
        }
        seen_hash[slot] = h;
        seen_i[slot] = i;
        assert_true(i < (1u << BITS) - 1);
    }
}

static void test_same_hash_other_topic(void **state) {
    (void)state;
    char a[9], b[9];
    colliding_topics(a, b);
    assert_string_not_equal(a, b);
    assert_int_equal(ctx__bus_hash(a, 8), ctx__bus_hash(b, 8));
    ctx_bus_t *bus = new_bus(NULL);
    ctx_bus_listener_release(on(bus, a, 1, 0));
    ctx_bus_listener_release(on(bus, b, 2, 0));
    static const int only1[] = {1}, only2[] = {2};
    expect(bus, a, only1, 1);
    expect(bus, b, only2, 1); /* same length, same hash, other topic */
    expect(bus, a, only1, 1);
    ctx_bus_release(bus);
}

static void test_lists_change_between_publishes(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    ctx_bus_listener_t *g1 = on(bus, "job.*", 1, 0);
    static const int t1[] = {1}, t12[] = {1, 2}, t123[] = {1, 2, 3}, t23[] = {2, 3},
                     t234[] = {2, 3, 4};
    expect(bus, "job.run", t1, 1);
    expect(bus, "job.run", t1, 1); /* planned */
    ctx_bus_listener_t *g2 = on(bus, "job.run", 2, 0);
    expect(bus, "job.run", t12, 2); /* a new global list */
    ctx_bus_listener_t *s3 = on(bus, "*", 3, CTX_BUS_SCOPED);
    expect(bus, "job.run", t123, 3); /* a new scoped list */
    ASSERT_RC(ctx_bus_unsubscribe(g1), 0);
    expect(bus, "job.run", t23, 2);
    /* Lists freed and made again, perhaps at the same addresses. */
    for (int i = 0; i < 50; i++) {
        ctx_bus_listener_t *x = on(bus, "job.run", 4, 0);
        expect(bus, "job.run", t234, 3);
        ASSERT_RC(ctx_bus_unsubscribe(x), 0);
        ctx_bus_listener_release(x);
        expect(bus, "job.run", t23, 2);
    }
    ctx_bus_listener_release(g1);
    ctx_bus_listener_release(g2);
    ctx_bus_listener_release(s3);
    ctx_bus_release(bus);
}

/* A listener that publishes another topic from inside its delivery. */
static ctx_bus_t *nested_bus;

static int nesting_listener(ctx_bus_listener_t *self, ctx_bus_event_t *event, void *user) {
    (void)self;
    (void)event;
    (void)user;
    if (trail.n < 64)
        trail.tags[trail.n++] = 10;
    publish_int(nested_bus, "inner.x", 0);
    return 0;
}

static void test_nested_publish_keeps_the_plan(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    nested_bus = bus;
    ctx_bus_listener_release(subscribe(bus, "outer.x", nesting_listener, NULL, 0));
    ctx_bus_listener_release(on(bus, "inner.*", 20, 0));
    ctx_bus_listener_release(on(bus, "outer.x", 30, 0));
    static const int outer[] = {10, 20, 30}, inner[] = {20};
    for (int i = 0; i < 3; i++) {
        trail.n = 0;
        /* The outer delivery calls 2 listeners; the nested one logs 20 in
         * between. */
        ASSERT_RC(publish_int(bus, "outer.x", 0), 2);
        assert_int_equal(trail.n, 3);
        for (int k = 0; k < 3; k++)
            assert_int_equal(trail.tags[k], outer[k]);
        expect(bus, "inner.x", inner, 1);
    }
    ctx_bus_release(bus);
}

static void test_beyond_what_a_plan_holds(void **state) {
    (void)state;
    ctx_bus_t *bus = new_bus(NULL);
    int tags[24];
    for (int i = 0; i < 24; i++) {
        tags[i] = i + 1;
        ctx_bus_listener_release(on(bus, "many", i + 1, (i & 1) ? CTX_BUS_SCOPED : 0));
    }
    expect(bus, "many", tags, 24);
    expect(bus, "many", tags, 24);
    char longer[100];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    ctx_bus_listener_release(on(bus, longer, 99, 0));
    static const int l99[] = {99};
    expect(bus, longer, l99, 1);
    expect(bus, longer, l99, 1);
    longer[98] = 'b'; /* same length, other topic */
    expect(bus, longer, NULL, 0);
    ctx_bus_release(bus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_same_hash_other_topic, release_thread),
        cmocka_unit_test_teardown(test_lists_change_between_publishes, release_thread),
        cmocka_unit_test_teardown(test_nested_publish_keeps_the_plan, release_thread),
        cmocka_unit_test_teardown(test_beyond_what_a_plan_holds, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
