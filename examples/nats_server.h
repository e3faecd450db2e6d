/* SPDX-License-Identifier: MIT */
/*
 * nats_server.h — a private nats-server on a free loopback port, for the
 * demo's NATS hop and the benchmark's round trip (examples/nats_server.c;
 * the tests have their own in tests/nats/nats_test.h, which also restarts it).
 */
#ifndef CTX_EXAMPLE_NATS_SERVER_H
#define CTX_EXAMPLE_NATS_SERVER_H

#include <stddef.h>
#include <sys/types.h>

/* The nats-server binary: $CTX_NATS_SERVER, the path found at configure time,
 * or the usual directories (Debian puts it in /usr/sbin).  NULL if none. */
const char *ctx_example_nats_server_path(void);

/* Starts `bin` on 127.0.0.1 at a free port, writes its URL into url (cap
 * bytes) and waits until it accepts a connection (up to 5 s).  Returns the
 * server's pid, or -1 (nothing left running). */
pid_t ctx_example_nats_server_start(const char *bin, char *url, size_t cap);

/* Stops a server started above and reaps it. */
void ctx_example_nats_server_stop(pid_t pid);

#endif
