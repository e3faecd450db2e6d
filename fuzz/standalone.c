/* SPDX-License-Identifier: MIT */
/*
 * standalone.c — a main() for the fuzz targets when libFuzzer is not
 * available (gcc-only machines): runs every file of the given corpus
 * directories, then -runs=N inputs made by mutating them with a seeded
 * generator (bytes flipped, inserted, deleted, spliced).  Not a fuzzer, but
 * the same invariants on the same seeds, so the ctest entry means something
 * everywhere.  Arguments it understands: directories, -runs=N, -seed=N;
 * others (libFuzzer's) are ignored.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define MAX_INPUTS 4096
#define MAX_SIZE 65536

static uint8_t *inputs[MAX_INPUTS];
static size_t sizes[MAX_INPUTS];
static size_t count;

static void load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f || count == MAX_INPUTS) {
        if (f)
            fclose(f);
        return;
    }
    uint8_t *buf = malloc(MAX_SIZE);
    size_t n = fread(buf, 1, MAX_SIZE, f);
    fclose(f);
    inputs[count] = buf;
    sizes[count] = n;
    count++;
}

static void load_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            load(path);
    }
    closedir(d);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv) {
    long runs = 10000;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0)
            runs = atol(argv[i] + 6);
        else if (strncmp(argv[i], "-seed=", 6) == 0)
            rng = (uint64_t)atoll(argv[i] + 6) | 1;
        else if (argv[i][0] != '-')
            load_dir(argv[i]);
    }
    for (size_t i = 0; i < count; i++)
        LLVMFuzzerTestOneInput(inputs[i], sizes[i]);
    static uint8_t buf[MAX_SIZE];
    for (long r = 0; r < runs; r++) {
        size_t n = 0;
        if (count) {
            size_t k = next() % count;
            n = sizes[k];
            memcpy(buf, inputs[k], n);
        }
        int edits = 1 + (int)(next() % 8);
        for (int e = 0; e < edits; e++) {
            size_t at = n ? next() % n : 0;
            switch (next() % 4) {
            case 0: /* flip */
                if (n)
                    buf[at] ^= (uint8_t)(1u << (next() % 8));
                break;
            case 1: /* insert a byte */
                if (n < MAX_SIZE) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (uint8_t)next();
                    n++;
                }
                break;
            case 2: /* delete */
                if (n) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            default: /* splice another input in */
                if (count) {
                    size_t k = next() % count, len = sizes[k] / 2;
                    if (n + len <= MAX_SIZE) {
                        memmove(buf + at + len, buf + at, n - at);
                        memcpy(buf + at, inputs[k], len);
                        n += len;
                    }
                }
            }
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("standalone fuzz driver: %zu corpus inputs, %ld mutated runs, no failure\n", count, runs);
    for (size_t i = 0; i < count; i++)
        free(inputs[i]);
    return 0;
}
