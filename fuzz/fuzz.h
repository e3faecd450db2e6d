/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h — what the fuzz targets share: a check that aborts (so libFuzzer
 * and the standalone driver both report it), and the entry point.
 *
 * Each fuzz_<decoder>.c defines LLVMFuzzerTestOneInput for one decoder of
 * outside input and checks invariants beyond "does not crash": what parses
 * formats back to something that parses to the same thing, decoded values
 * are never longer than their input, extract → inject → strict extract
 * never fails.
 */
#ifndef CTX_FUZZ_H
#define CTX_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <ctxvar.h>
#include <ctxvar/wire.h>

#define FUZZ_CHECK(cond)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                            \
        }                                                                       \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
