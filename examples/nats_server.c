/* SPDX-License-Identifier: MIT */
/* nats_server.c — see nats_server.h. */
#define _GNU_SOURCE
#include "nats_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

extern char **environ;

const char *ctx_example_nats_server_path(void) {
    static char found[1024];
    const char *env = getenv("CTX_NATS_SERVER");
    if (env && access(env, X_OK) == 0)
        return env;
#ifdef CTX_NATS_SERVER_PATH
    if (access(CTX_NATS_SERVER_PATH, X_OK) == 0)
        return CTX_NATS_SERVER_PATH;
#endif
    static const char *dirs[] = {"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(found, sizeof found, "%s/nats-server", dirs[i]);
        if (access(found, X_OK) == 0)
            return found;
    }
    return NULL;
}

pid_t ctx_example_nats_server_start(const char *bin, char *url, size_t cap) {
    /* A free port: bind to port 0, read what the kernel chose, let it go. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &n)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[] = {(char *)"nats-server", (char *)"-a", (char *)"127.0.0.1", (char *)"-p", port,
                    NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    snprintf(url, cap, "nats://127.0.0.1:%s", port);
    for (int i = 0; i < 200; i++) { /* up to 5 s */
        natsConnection *probe = NULL;
        if (natsConnection_ConnectTo(&probe, url) == NATS_OK) {
            natsConnection_Destroy(probe);
            return pid;
        }
        struct timespec ts = {0, 25000000};
        nanosleep(&ts, NULL);
    }
    ctx_example_nats_server_stop(pid);
    return -1;
}

void ctx_example_nats_server_stop(pid_t pid) {
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}
