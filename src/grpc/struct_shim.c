/* SPDX-License-Identifier: MIT */
/*
 * struct_shim.c — src/common/common.h's growth-rule helpers and clock,
 * callable from the grpc module's C++ sources (see struct_shim.h).
 */
#include "grpc/struct_shim.h"

#include "common/common.h"

int ctx__grpc_struct_in(void *dst, size_t dst_size, const void *src, size_t min_size) {
    return ctx__struct_in(dst, dst_size, src, min_size);
}

int ctx__grpc_struct_out(void *dst, const void *src, size_t src_size) {
    return ctx__struct_out(dst, src, src_size);
}

int64_t ctx__grpc_now_ns(void) { return ctx__monotonic_ns(); }
