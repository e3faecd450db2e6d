/* SPDX-License-Identifier: MIT */
/*
 * test_server.c — the example server (examples/server) end to end, for
 * correctness: each build serves on a thread of this process while the load
 * generator drives it over loopback for a moment, then it is stopped.
 *
 * Asserts, for the ctxvar build: every connection was accepted and
 * answered, every answer was the right one for its request (the client
 * checks sequence number and value), each request read its context at every
 * stage (reads >= 4 per request) and no read saw another request's or
 * connection's values (mismatches == 0).  The raw build is held to the same
 * answers, so the two programs are the same server.  No timing is asserted.
 */
#include "loop_test.h"

#include <server.h>

static void *serve(void *arg) {
    ex_server_run(arg);
    return NULL;
}

static void drive(ex_server_kind_t kind, int connections, unsigned ms, ex_server_stats_t *stats,
                  ex_load_result_t *load) {
    ex_server_config_t config = {kind, -1, 0, 2, 0, -1};
    ex_server_t *server = NULL;
    ASSERT_RC(ex_server_new(&config, &server), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, serve, server), 0);
    ex_load_config_t lc = {ex_server_port(server), connections, ms / 4, ms};
    ASSERT_RC(ex_load_run(&lc, load), 0);
    ex_server_stop(server);
    assert_int_equal(pthread_join(thread, NULL), 0);
    ex_server_stats(server, stats);
    ex_server_free(server);
}

static void test_ctxvar_server_keeps_each_request_in_its_context(void **state) {
    (void)state;
    int connections = SCALED(64, 16, 16);
    ex_server_stats_t st;
    ex_load_result_t load;
    drive(EX_SERVER_CTXVAR, connections, SCALED(400, 1500, 800), &st, &load);
    assert_int_equal(load.connected, connections);
    assert_int_equal(load.errors, 0);
    assert_true(load.responses > 0);
    assert_int_equal(st.connections, (uint64_t)connections);
    assert_true(st.requests >= load.responses);
    assert_true(st.reads >= 4 * st.requests);
    assert_int_equal(st.mismatches, 0);
}

static void test_raw_server_gives_the_same_answers(void **state) {
    (void)state;
    int connections = SCALED(64, 16, 16);
    ex_server_set_uv_threads(2);
    ex_server_stats_t st;
    ex_load_result_t load;
    drive(EX_SERVER_RAW, connections, SCALED(400, 1500, 800), &st, &load);
    assert_int_equal(load.connected, connections);
    assert_int_equal(load.errors, 0);
    assert_true(load.responses > 0);
    assert_int_equal(st.connections, (uint64_t)connections);
    assert_true(st.requests >= load.responses);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ctxvar_server_keeps_each_request_in_its_context,
                                  release_thread),
        cmocka_unit_test_teardown(test_raw_server_gives_the_same_answers, release_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
