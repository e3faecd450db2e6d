/*
 * demo.c — the ctxvar demo: runs each part in turn and says whether every
 * check it made held.  Exit status 0 only if all of them did.
 */
#include <stdio.h>

#include <ctxvar.h>

#include "demo.h"

int main(void) {
    printf("ctxvar %s — context variables for C\n", ctx_version_string());
    int failures = 0;
    failures += ctx_demo_core() != 0;
    failures += ctx_demo_pool() != 0;
    ctx_thread_release();
    printf("\n%s\n", failures ? "DEMO FAILED" : "demo: every check held");
    return failures ? 1 : 0;
}
