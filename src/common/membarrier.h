/* SPDX-License-Identifier: MIT */
/*
 * common/membarrier.h — the heavy barrier of asymmetric fences, shared by
 * the core's context gates (core/gate.c) and the bus's reclamation
 * (bus/reclaim.c): the rare side calls it so that the frequent side needs
 * only a compiler barrier.
 *
 *   ctx__membarrier_register  registers the process for
 *                             MEMBARRIER_CMD_PRIVATE_EXPEDITED: 1, or 0 where
 *                             it cannot (another system, an old kernel, a
 *                             sandbox refusing the call)
 *   ctx__membarrier           every running thread of the process executes a
 *                             full barrier before it returns (a thread not
 *                             running gets one when it is switched): 0, or -1
 *                             if neither the expedited nor the global command
 *                             worked (not seen once registered)
 *
 * A fork() child is a new process and must register again.  Include it
 * from a file built with _GNU_SOURCE (syscall()).
 */
#ifndef CTX_COMMON_MEMBARRIER_H
#define CTX_COMMON_MEMBARRIER_H

#include <stdatomic.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#endif

static inline int ctx__membarrier_register(void) {
#if defined(__linux__) && defined(SYS_membarrier)
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
    return 0;
#endif
}

static inline int ctx__membarrier(void) {
    atomic_thread_fence(memory_order_seq_cst);
#if defined(__linux__) && defined(SYS_membarrier)
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ||
        syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0) {
        atomic_thread_fence(memory_order_seq_cst);
        return 0;
    }
#endif
    return -1;
}

#endif /* CTX_COMMON_MEMBARRIER_H */
