/* SPDX-License-Identifier: MIT */
/*
 * demo.c — the ctxvar demo: runs each part in turn and says whether every
 * check it made held.  Exit status 0 only if all of them did.
 *
 * Each part runs inside a fresh empty context of its own (ctx_context_run),
 * so whatever one part sets is invisible to the next: the demo itself uses
 * the library the way it asks to be used.
 */
#include <stdint.h>
#include <stdio.h>

#include <ctxvar.h>

#include "demo.h"

typedef int (*part_fn)(void);

static void *run_part(void *arg) {
    part_fn part = *(part_fn *)arg;
    return (void *)(intptr_t)part();
}

static int in_fresh_context(part_fn part) {
    ctx_context_t *ctx;
    void *failed = (void *)1;
    if (ctx_context_new(&ctx) == 0) {
        if (ctx_context_run(ctx, run_part, &part, &failed) != 0)
            failed = (void *)1;
        ctx_context_release(ctx);
    }
    return failed != NULL;
}

int main(void) {
    printf("ctxvar %s — context variables for C\n", ctx_version_string());
    static const part_fn parts[] = {ctx_demo_core, ctx_demo_pool, ctx_demo_loop,
                                     ctx_demo_bus, ctx_demo_wire, ctx_demo_cancel};
    int failures = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        failures += in_fresh_context(parts[i]);
    ctx_thread_release();
    printf("\n%s\n", failures ? "DEMO FAILED" : "demo: every check held");
    return failures ? 1 : 0;
}
