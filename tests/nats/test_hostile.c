/* SPDX-License-Identifier: MIT */
/*
 * test_hostile.c — messages with hostile header blocks, sent RAW over the
 * NATS protocol (a TCP socket speaking CONNECT / HPUB to a real
 * nats-server on loopback, one connection per message so that a block the
 * server refuses cannot take the others with it), are all delivered
 * (nats.h's promise).
 *
 * Two subscriptions watch the same subject: a plain libnats one (what the
 * server really delivered) and a bridge one.  For every message the plain
 * subscription receives, the bridge's callback must run: in an empty
 * context when libnats cannot read the header block at all (counted in
 * ctx_nats_sub_stats_t.malformed_headers), in what could be decoded when
 * it can (a bad traceparent or baggage member is dropped alone).  Nothing
 * is dropped (`dropped` stays 0).  The hand-written cases are the ones
 * users reported (a line without a colon, an HTTP/1.1 status line, an empty
 * header name, only CRLFs, missing CRLFs) and their neighbours; then a
 * seeded stream of random blocks made of the characters header parsers
 * trip on.  Payloads never hold ':' or CR/LF: libnats' header parser looks
 * for a colon past the end of a broken block, into the payload.
 */
#include "nats_test.h"

#include "../support/support.h"

static struct {
    int ready;
    server_t server;
    vars_t v;
    natsConnection *nc;
    ctx_nats_t *b;
} G;

#define NEED_SERVER() NATS_NEED_SERVER(G.ready)
#define SUBJECT "ctx.hostile"
#define MAX_CASES 1024

static int group_setup(void **state) {
    (void)state;
    if (!nats_server_path())
        return 0; /* every test skips */
    if (server_start(&G.server, 0) != 0)
        return -1;
    if (vars_init(&G.v) != 0 || ctx_nats_connect(G.server.url, &G.nc) != 0 ||
        ctx_nats_new(G.nc, G.v.wire, &G.b) != 0)
        return -1;
    G.ready = 1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    ctx_nats_release(G.b);
    if (G.nc)
        natsConnection_Destroy(G.nc);
    if (G.server.pid)
        server_stop(&G.server);
    if (G.v.wire)
        vars_done(&G.v);
    return release_thread_and_timer();
}

/* ---- what the two subscriptions saw, by case number (the payload) ---- */

static struct {
    pthread_mutex_t lock;
    int plain[MAX_CASES];
    int bridged[MAX_CASES];
    char user[MAX_CASES][16];
    int traced[MAX_CASES];
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int case_of(natsMsg *msg) {
    char text[32];
    payload(msg, text, sizeof text);
    int i = -1;
    return sscanf(text, "case-%d", &i) == 1 && i >= 0 && i < MAX_CASES ? i : -1;
}

static void on_plain(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *user) {
    (void)nc, (void)sub, (void)user;
    int i = case_of(msg);
    pthread_mutex_lock(&R.lock);
    if (i >= 0)
        R.plain[i]++;
    pthread_mutex_unlock(&R.lock);
    natsMsg_Destroy(msg);
}

static void on_bridged(ctx_nats_t *b, natsMsg *msg, void *user) {
    (void)user;
    int i = case_of(msg);
    int traced = ctx_wire_trace_get(ctx_nats_wire(b), NULL, NULL, NULL, NULL) == 0;
    pthread_mutex_lock(&R.lock);
    if (i >= 0) {
        R.bridged[i]++;
        snprintf(R.user[i], sizeof R.user[i], "%s", get_str(NULL, G.v.user));
        R.traced[i] = traced;
    }
    pthread_mutex_unlock(&R.lock);
}

/* ---- a raw NATS client: one connection, one HPUB ---- */

static int read_line(int fd, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        ssize_t k = recv(fd, &c, 1, 0);
        if (k <= 0)
            return -1;
        buf[n++] = c;
        if (c == '\n')
            break;
    }
    buf[n] = '\0';
    return 0;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends one HPUB with header block `hdr` (hdr_len bytes, any bytes) and
 * payload "case-<i>", then PING, and waits for the server's answer (PONG,
 * or -ERR if it refused the message).  0 if the server answered PONG. */
static int raw_hpub(int port, int i, const char *hdr, size_t hdr_len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {10 * SLOW, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char line[4096];
    assert_int_equal(read_line(fd, line, sizeof line), 0);
    assert_memory_equal(line, "INFO ", 5);
    static const char hello[] =
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n";
    assert_int_equal(send_all(fd, hello, sizeof hello - 1), 0);
    char body[32];
    int body_len = snprintf(body, sizeof body, "case-%d", i);
    char cmd[128];
    int cmd_len = snprintf(cmd, sizeof cmd, "HPUB " SUBJECT " %zu %zu\r\n", hdr_len, hdr_len + (size_t)body_len);
    int ok = send_all(fd, cmd, (size_t)cmd_len) == 0 && send_all(fd, hdr, hdr_len) == 0 &&
             send_all(fd, body, (size_t)body_len) == 0 && send_all(fd, "\r\nPING\r\n", 8) == 0;
    int pong = 0;
    while (ok && read_line(fd, line, sizeof line) == 0) {
        if (strncmp(line, "PONG", 4) == 0) {
            pong = 1;
            break;
        }
        if (strncmp(line, "-ERR", 4) == 0)
            break;
    }
    close(fd);
    return pong ? 0 : -1;
}

/* ---- the cases ---- */

#define TP "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"

typedef struct hostile {
    const char *name;
    const char *block;
    size_t len;       /* 0: strlen(block) */
    const char *user; /* the value of `user` the callback must see ("-": none) */
    int unreadable;   /* 1: libnats cannot read the block (empty context) */
} hostile_t;

static const hostile_t cases[] = {
    /* the reported examples */
    {"line without a colon", "NATS/1.0\r\nbaggage user=bob\r\n\r\n", 0, "-", 1},
    {"HTTP/1.1 status line", "HTTP/1.1\r\nbaggage: user=bob\r\n\r\n", 0, "-", 1},
    {"empty header name", "NATS/1.0\r\n: value\r\nbaggage: user=bob\r\n\r\n", 0, "-", 1},
    {"only CRLFs", "\r\n\r\n", 0, "-", 1},
    {"only CRLFs, longer", "\r\n\r\n\r\n\r\n\r\n\r\n", 0, "-", 1},
    {"no CRLF at all", "NATS/1.0", 0, "-", 1},
    {"no final CRLFs", "NATS/1.0\r\nbaggage: user=bob", 0, "-", 1},
    {"no final blank line", "NATS/1.0\r\nbaggage: user=bob\r\n", 0, "bob", 0},
    /* neighbours */
    {"continuation on the first line", "NATS/1.0\r\n baggage: user=bob\r\n\r\n", 0, "-", 1},
    {"empty value", "NATS/1.0\r\nbaggage:\r\n\r\n", 0, "-", 1},
    {"bare LF", "NATS/1.0\r\nbaggage: user=bob\nx: y\r\n\r\n", 0, NULL, 0},
    {"NUL and high bytes in a name", "NATS/1.0\r\nx\0\x01\xff: v\r\nbaggage: user=bob\r\n\r\n",
     sizeof("NATS/1.0\r\nx\0\x01\xff: v\r\nbaggage: user=bob\r\n\r\n") - 1, "-", 1},
    {"blank line in the middle", "NATS/1.0\r\n\r\n\r\nbaggage: user=bob\r\n\r\n", 0, "-", 1},
    {"double colon", "NATS/1.0\r\nbaggage:: user=bob\r\n\r\n", 0, NULL, 0},
    {"lowercase status", "nats/1.0\r\nbaggage: user=bob\r\n\r\n", 0, "-", 1},
    {"status code", "NATS/1.0 503\r\n\r\n", 0, "-", 0},
    {"status and description", "NATS/1.0 408 Request Timeout\r\nbaggage: user=bob\r\n\r\n", 0, "bob", 0},
    /* readable blocks with values the wire layer refuses: dropped alone */
    {"bad traceparent", "NATS/1.0\r\ntraceparent: garbage\r\nbaggage: user=bob\r\n\r\n", 0, "bob", 0},
    {"two traceparents", "NATS/1.0\r\n" TP TP "baggage: user=bob\r\n\r\n", 0, "bob", 0},
    {"malformed baggage members", "NATS/1.0\r\nbaggage: ,,bad bad,=x,user=bob,%zz\r\n\r\n", 0, "bob", 0},
    {"bad grpc-timeout", "NATS/1.0\r\ngrpc-timeout: soon\r\nbaggage: user=bob\r\n\r\n", 0, "bob", 0},
    {"bad tracestate", "NATS/1.0\r\n" TP "tracestate: @@@\r\nbaggage: user=bob\r\n\r\n", 0, "bob", 0},
    {"two spellings", "NATS/1.0\r\nBAGGAGE: user=bob\r\nbaggage: user=eve\r\n\r\n", 0, NULL, 0},
    {"folded value", "NATS/1.0\r\nbaggage: user=bob\r\n  ,tenant=acme\r\n\r\n", 0, "bob", 0},
    {"a good one", "NATS/1.0\r\n" TP "baggage: user=bob\r\n\r\n", 0, "bob", 0},
};

#define NCASES (int)(sizeof cases / sizeof cases[0])

static int wait_for(int first, int count) {
    for (int t = 0; t < 1000 * SLOW; t++) {
        int done = 1;
        pthread_mutex_lock(&R.lock);
        for (int i = first; i < first + count && done; i++)
            done = R.plain[i] == 1 && R.bridged[i] == 1;
        pthread_mutex_unlock(&R.lock);
        if (done)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

static void subscribe_both(ctx_nats_sub_t **bridged, natsSubscription **plain) {
    ASSERT_RC(ctx_nats_subscribe(G.b, SUBJECT, NULL, on_bridged, NULL, bridged), 0);
    assert_int_equal(natsConnection_Subscribe(plain, G.nc, SUBJECT, on_plain, NULL), NATS_OK);
    assert_int_equal(natsConnection_Flush(G.nc), NATS_OK);
}

static void unsubscribe_both(ctx_nats_sub_t *bridged, natsSubscription *plain) {
    ASSERT_RC(ctx_nats_unsubscribe(bridged), 0);
    natsSubscription_Unsubscribe(plain);
    natsSubscription_Destroy(plain);
}

static void test_named_cases(void **state) {
    (void)state;
    NEED_SERVER();
    ctx_nats_sub_t *sub;
    natsSubscription *plain;
    subscribe_both(&sub, &plain);
    int sent = 0, unreadable = 0, wrong = 0;
    for (int i = 0; i < NCASES; i++) { /* one at a time: the count says which */
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].block);
        uint64_t before = sub_malformed(sub);
        if (raw_hpub(G.server.port, i, cases[i].block, len) != 0)
            fail_msg("case '%s': the server refused the message", cases[i].name);
        sent++;
        unreadable += cases[i].unreadable;
        if (!wait_for(i, 1))
            fail_msg("case '%s': plain %d, bridged %d: a message the server delivered did not "
                     "reach the bridge's callback", cases[i].name, R.plain[i], R.bridged[i]);
        int got = (int)(sub_malformed(sub) - before);
        if (got != cases[i].unreadable) {
            print_message("case '%s': unreadable %d, want %d\n", cases[i].name, got, cases[i].unreadable);
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
    ctx_nats_sub_stats_t st = sub_stats(sub);
    assert_int_equal(st.delivered, (uint64_t)sent);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(st.malformed_headers, (uint64_t)unreadable);
    pthread_mutex_lock(&R.lock);
    for (int i = 0; i < NCASES; i++) {
        if (cases[i].user && strcmp(R.user[i], cases[i].user) != 0)
            fail_msg("case '%s': user is '%s', want '%s'", cases[i].name, R.user[i], cases[i].user);
        if (cases[i].unreadable && R.traced[i])
            fail_msg("case '%s': an unreadable block gave a trace", cases[i].name);
    }
    assert_string_equal(R.user[NCASES - 1], "bob");
    assert_true(R.traced[NCASES - 1]); /* the good one decodes fully */
    pthread_mutex_unlock(&R.lock);
    unsubscribe_both(sub, plain);
}

/* Random blocks over an alphabet of what header parsers trip on. */
static void test_random_blocks(void **state) {
    (void)state;
    NEED_SERVER();
    static const char alphabet[] = "NATS/1.0\r\n\r\n::  \tbaggage=user,bob;traceparent-00\x01\x7f\xff";
    ctx_test_rng_t rng;
    uint64_t seed = ctx_test_seed(0x5eed11);
    ctx_test_rng_seed(&rng, seed);
    print_message("seed %llu (CTX_TEST_SEED=%llu reruns it)\n", (unsigned long long)seed,
                  (unsigned long long)seed);
    ctx_nats_sub_t *sub;
    natsSubscription *plain;
    subscribe_both(&sub, &plain);
    int first = NCASES, n = SCALED(200, 40, 60), accepted = 0;
    for (int k = 0; k < n; k++) {
        char block[256];
        size_t len = 1 + (size_t)ctx_test_rng_below(&rng, sizeof block - 1);
        size_t start = 0;
        if (ctx_test_rng_below(&rng, 2)) { /* half of them start right */
            memcpy(block, "NATS/1.0\r\n", 10);
            start = len < 10 ? len : 10;
        }
        for (size_t j = start; j < len; j++)
            block[j] = alphabet[ctx_test_rng_below(&rng, sizeof alphabet - 1)];
        if (raw_hpub(G.server.port, first + k, block, len) == 0)
            accepted++;
    }
    /* every message the server took reaches both subscriptions */
    for (int t = 0; t < 1000 * SLOW && sub_delivered(sub) < (uint64_t)accepted; t++)
        sleep_ms(10);
    sleep_ms(50); /* a stray extra delivery would show now */
    pthread_mutex_lock(&R.lock);
    int plain_total = 0, bridged_total = 0;
    for (int k = 0; k < n; k++) {
        plain_total += R.plain[first + k];
        bridged_total += R.bridged[first + k];
        if (R.plain[first + k] != R.bridged[first + k])
            fail_msg("random block %d: plain %d, bridged %d", k, R.plain[first + k], R.bridged[first + k]);
    }
    pthread_mutex_unlock(&R.lock);
    assert_int_equal(plain_total, accepted);
    assert_int_equal(bridged_total, accepted);
    assert_true(accepted > n / 2);
    ctx_nats_sub_stats_t st = sub_stats(sub);
    assert_int_equal(st.delivered, (uint64_t)accepted);
    assert_int_equal(st.dropped, 0);
    assert_true(st.malformed_headers > 0); /* the alphabet makes broken blocks */
    unsubscribe_both(sub, plain);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_cases),
        cmocka_unit_test(test_random_blocks),
    };
    int failed = cmocka_run_group_tests_name("nats_hostile", tests, group_setup, group_teardown);
    nats_CloseAndWait(5000);
    return failed;
}
