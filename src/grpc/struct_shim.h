/* SPDX-License-Identifier: MIT */
/*
 * struct_shim.h — the growth rule's helpers (src/common/common.h) for the
 * grpc module's C++ sources, which cannot include common.h (it uses C11
 * atomics): struct_shim.c wraps them.  Internal; hidden in the shared
 * library.
 */
#ifndef CTX_GRPC_STRUCT_SHIM_H
#define CTX_GRPC_STRUCT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ctx__struct_in: reads the caller's input struct `src` (its first member
 * is its size) into `dst` (dst_size bytes); 0 or CTX_EINVAL. */
int ctx__grpc_struct_in(void *dst, size_t dst_size, const void *src, size_t min_size);

/* ctx__struct_out: writes `src` into the caller's output struct `dst`, at
 * most dst->size bytes; 0 or CTX_EINVAL. */
int ctx__grpc_struct_out(void *dst, const void *src, size_t src_size);

/* CLOCK_MONOTONIC in nanoseconds (ctx__monotonic_ns). */
int64_t ctx__grpc_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif /* CTX_GRPC_STRUCT_SHIM_H */
