/* SPDX-License-Identifier: MIT */
/*
 * nats_test.h — what the nats module's tests share: a nats-server of their
 * own on a free loopback port (started, restarted and stopped by the
 * tests), a second process (this same test binary started with
 * "--peer <url>"), the variables both processes register, and bounded
 * polling.
 *
 * nats-server is found through $CTX_NATS_SERVER, the path CMake found
 * (CTX_TEST_NATS_SERVER), then $PATH, /usr/sbin and /usr/local/sbin.  If
 * it is absent, every test says so and is skipped (the test command
 * installs Debian's nats-server, so in CI it is present).
 *
 * Only 127.0.0.1 is ever used.  Every wait is a bounded loop; the peer
 * process dies with its parent (PR_SET_PDEATHSIG) and after 10 minutes at
 * most (alarm), whatever happens.
 */
#ifndef CTX_NATS_TEST_H
#define CTX_NATS_TEST_H

#define _GNU_SOURCE

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ctxvar.h>
#include <ctxvar/bus.h>
#include <ctxvar/cancel.h>
#include <ctxvar/nats.h>
#include <ctxvar/wire.h>

extern char **environ;

#include "ctx_test.h"

#if defined(CTX_TEST_UNDER_VALGRIND)
#define SCALED(n, valgrind, tsan) (valgrind)
#define SLOW 8
#elif defined(CTX_TEST_UNDER_TSAN)
#define SCALED(n, valgrind, tsan) (tsan)
#define SLOW 3
#else
#define SCALED(n, valgrind, tsan) (n)
#define SLOW 1
#endif

/* Skips the calling test when no nats-server could be started (`ready` 0). */
#define NATS_NEED_SERVER(ready)                                                              \
    do {                                                                                     \
        if (!(ready)) {                                                                      \
            print_message("nats-server not found (install Debian's nats-server): skipped\n"); \
            skip();                                                                          \
        }                                                                                    \
    } while (0)

/* Request timeout: generous, since only a broken test ever waits it out. */
#define REQUEST_MS (5000 * SLOW)

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- nats-server ---- */

typedef struct server {
    pid_t pid;
    int port;
    char url[64];
} server_t;

static inline const char *nats_server_path(void) {
    static char found[1024];
    const char *env = getenv("CTX_NATS_SERVER");
    if (env && access(env, X_OK) == 0)
        return env;
#ifdef CTX_TEST_NATS_SERVER
    if (access(CTX_TEST_NATS_SERVER, X_OK) == 0)
        return CTX_TEST_NATS_SERVER;
#endif
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/usr/bin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/nats-server", d);
        if (access(found, X_OK) == 0)
            return found;
    }
    return NULL;
}

static inline int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static inline int port_open(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts nats-server on 127.0.0.1 (`port` 0: a free one, retried a few
 * times if taken).  0, or -1 if it would not start. */
static inline int server_start(server_t *s, int port) {
    const char *bin = nats_server_path();
    if (!bin)
        return -1;
    for (int attempt = 0; attempt < 5; attempt++) {
        int p = port ? port : free_port();
        char ps[16];
        snprintf(ps, sizeof ps, "%d", p);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        char *argv[] = {(char *)"nats-server", (char *)"-a", (char *)"127.0.0.1", (char *)"-p", ps, NULL};
        pid_t pid;
        int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0)
            return -1;
        for (int i = 0; i < 400; i++) { /* up to 10 s */
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = 0; /* exited: the port was taken */
                break;
            }
            if (port_open(p)) {
                s->pid = pid;
                s->port = p;
                snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", p);
                return 0;
            }
            sleep_ms(25);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        if (port)
            sleep_ms(200); /* a fixed port: let the old listener go */
    }
    return -1;
}

static inline void stop_pid(pid_t pid, int sig) {
    if (pid <= 0)
        return;
    kill(pid, sig);
    for (int i = 0; i < 400; i++) { /* up to 10 s, then for sure */
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        sleep_ms(25);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static inline void server_stop(server_t *s) {
    stop_pid(s->pid, SIGTERM);
    s->pid = 0;
}

/* ---- the peer process: this binary with "--peer <url>" ---- */

static inline pid_t spawn_peer(const char *url) {
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *argv[] = {exe, (char *)"--peer", (char *)url, NULL};
    pid_t pid;
    if (posix_spawn(&pid, exe, NULL, NULL, argv, environ) != 0)
        return -1;
    return pid;
}

/* ---- variables both processes register ---- */

typedef struct str_value {
    size_t len;
    char text[];
} str_value_t;

static inline void str_release(void *value, void *user) {
    (void)user;
    free(value);
}

static inline str_value_t *str_new(const char *text, size_t len) {
    str_value_t *s = malloc(sizeof *s + len + 1);
    if (!s)
        return NULL;
    s->len = len;
    memcpy(s->text, text, len);
    s->text[len] = '\0';
    return s;
}

static inline int str_encode(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const str_value_t *s = value;
    if (cap > 0) {
        size_t n = s->len < cap - 1 ? s->len : cap - 1;
        memcpy(buf, s->text, n);
        buf[n] = '\0';
    }
    return (int)s->len;
}

static inline int str_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    str_value_t *s = str_new(text, len);
    if (!s)
        return CTX_ENOMEM;
    *out = s;
    return 0;
}

static const ctx_value_ops_t str_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = str_release, .encode = str_encode, .decode = str_decode};

typedef struct vars {
    ctx_wire_t *wire;
    ctx_var_t *user, *tenant, *served, *seq;
} vars_t;

static inline int vars_init(vars_t *v) {
    static const char *names[] = {"user", "tenant", "served", "seq"};
    ctx_var_t **slots[] = {&v->user, &v->tenant, &v->served, &v->seq};
    if (ctx_wire_new(&v->wire) != 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        ctx_var_options_t o = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &str_ops};
        if (ctx_var_new(names[i], &o, slots[i]) != 0 || ctx_wire_register(v->wire, *slots[i], names[i]) != 0)
            return -1;
    }
    return 0;
}

static inline void vars_done(vars_t *v) {
    ctx_var_release(v->user);
    ctx_var_release(v->tenant);
    ctx_var_release(v->served);
    ctx_var_release(v->seq);
    ctx_wire_release(v->wire);
}

static inline int set_str(ctx_var_t *var, const char *text) {
    str_value_t *s = str_new(text, strlen(text));
    if (!s)
        return CTX_ENOMEM;
    int rc = ctx_var_set(var, s, NULL);
    if (rc != 0)
        free(s);
    return rc;
}

/* The string of `var` in ctx (NULL: current), or "-". */
static inline const char *get_str(ctx_context_t *ctx, ctx_var_t *var) {
    void *v = NULL;
    int rc = ctx ? ctx_context_get(ctx, var, &v) : ctx_var_get(var, &v);
    return rc == 0 && v ? ((const str_value_t *)v)->text : "-";
}

/* The trace-id of ctx (NULL: current) as hex, or "-". */
static inline void trace_hex(ctx_wire_t *w, ctx_context_t *ctx, char out[33]) {
    ctx_wire_traceparent_t tp;
    if (ctx_wire_trace_get(w, ctx, &tp, NULL, NULL) != 0 || ctx_wire_traceparent_trace_id(&tp, out, 33) != 32)
        strcpy(out, "-");
}

/* A copy of a message's payload as a C string (at most cap - 1 bytes). */
static inline void payload(natsMsg *m, char *buf, size_t cap) {
    int n = natsMsg_GetDataLength(m);
    if (n < 0)
        n = 0;
    if ((size_t)n >= cap)
        n = (int)cap - 1;
    memcpy(buf, natsMsg_GetData(m) ? natsMsg_GetData(m) : "", (size_t)n);
    buf[n] = '\0';
}

/* Bus event data: a heap string; the codec sends it as is. */
static inline int bus_encode(const char *topic, const void *data, char *buf, size_t cap, void *user) {
    (void)topic, (void)user;
    return snprintf(buf, cap, "%s", data ? (const char *)data : "");
}

static inline int bus_decode(const char *topic, const char *bytes, size_t len, void **data, void *user) {
    (void)topic, (void)user;
    char *s = malloc(len + 1);
    if (!s)
        return CTX_ENOMEM;
    memcpy(s, bytes, len);
    s[len] = '\0';
    *data = s;
    return 0;
}

static const ctx_nats_bus_codec_t bus_codec = {
    .size = sizeof(ctx_nats_bus_codec_t), .encode = bus_encode, .decode = bus_decode, .release = free};

/* ---- the end of a process's tests ---- */

/* Drops the calling thread's state and stops the cancel module's timer
 * thread (deadlines crossed in grpc-timeout headers start it), so valgrind
 * sees no thread at exit.  0, or -1 if a deadline was left pending (a
 * context leaked somewhere). */
static inline int release_thread_and_timer(void) {
    ctx_thread_release();
    return ctx_cancel_timer_release() == 0 ? 0 : -1;
}

/* ---- a subscription's counts (ctx_nats_sub_stats) ---- */

static inline ctx_nats_sub_stats_t sub_stats(const ctx_nats_sub_t *sub) {
    ctx_nats_sub_stats_t st = CTX_STRUCT_INIT(ctx_nats_sub_stats_t);
    if (ctx_nats_sub_stats(sub, &st) != 0)
        memset(&st, 0, sizeof st);
    return st;
}

static inline uint64_t sub_delivered(const ctx_nats_sub_t *sub) { return sub_stats(sub).delivered; }
static inline uint64_t sub_dropped(const ctx_nats_sub_t *sub) { return sub_stats(sub).dropped; }
static inline uint64_t sub_malformed(const ctx_nats_sub_t *sub) {
    return sub_stats(sub).malformed_headers;
}

#endif /* CTX_NATS_TEST_H */
