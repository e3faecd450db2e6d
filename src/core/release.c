/* SPDX-License-Identifier: MIT */
/*
 * release.c — the end of value boxes and variables, in constant stack.
 *
 * What it is for
 * --------------
 * The user's code runs when a value box dies (the variable's `release`
 * operation for its value) and when a variable dies (`release` for its
 * default).  That code may itself drop the last reference to a context, a
 * token, a capture or a variable, which kills more boxes, whose release
 * operations drop more contexts... A chain of contexts through values:
 *
 *     ctx_context_release(c1)
 *       └ box(v1) dies ─ release(v1) ─ ctx_context_release(c2)
 *                                        └ box(v2) dies ─ release(v2) ─ ...
 *
 * Done naively that is one level of recursion per link (release → unref →
 * map release → node release → item release → box free → release → ...), and
 * a chain of a few hundred thousand links overflows the stack.
 *
 * How
 * ---
 * A per-thread queue of dead objects.  The first death on a thread (no
 * release in progress there) is finished at once, and while it runs (its
 * user callback included) the thread is *draining*: any box or variable that
 * dies meanwhile is appended to the queue instead of being finished inside
 * the callback.  When the first one is done, the same call finishes the
 * queue, oldest first, until it is empty; deaths during those are appended
 * too.  So the stack depth is that of one death, whatever the length of the
 * chain, and everything is finished before the outermost ctxvar call that
 * started it returns, on the same thread.
 *
 * Order (the contract written in ctxvar.h): a value whose last holder is
 * dropped outside any release operation is released at once; values whose
 * last holder is dropped *inside* a release operation are released after
 * that operation returns, in the order they were dropped.
 *
 * The queue costs no memory: a dead box's own storage holds its entry
 * (ctx__dead_t has the box's size or less: the next link over the box's
 * reference count and hash, which are dead), and a variable carries an
 * entry of its own (`dead`), which is how the drain tells the two apart.
 * The queue and the flag are _Thread_local, not part of the thread state:
 * boxes die on threads that never made one, and while a thread state is
 * being torn down.
 */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/core.h"

_Static_assert(sizeof(ctx__dead_t) <= sizeof(ctx__box_t), "a dead box holds its queue entry");

/* Empty (head and tail NULL) whenever the thread is not draining. */
static _Thread_local struct {
    int draining;
    ctx__dead_t *head; /* the oldest entry */
    ctx__dead_t *tail; /* the newest */
} queue;

static void finish_var(ctx_var_t *var) {
#if defined(CTX_DEBUG)
    /* Here, not in ctx_var_release: boxes that died before it on this
     * thread, still queued, are finished by now. */
    size_t held = atomic_load_explicit(&var->debug_holders, memory_order_acquire);
    if (held) {
        char what[96];
        snprintf(what, sizeof what, "is static and still held by %zu value%s or token%s", held,
                 held == 1 ? "" : "s", held == 1 ? "" : "s");
        ctx__debug_abort("ctx_var_release", "variable", var, what);
    }
#endif
    if (var->has_default && var->ops.release)
        var->ops.release(var->default_value, var->ops.user);
    ctx__free(var, var->size);
}

/* `memory` is the dead box (or its queue entry, in the same place). */
static void finish_box(ctx_var_t *var, void *value, void *memory) {
    ctx__free_small(memory, sizeof(ctx__box_t));
    if (var->ops.release)
        var->ops.release(value, var->ops.user);
    ctx__var_unhold(var); /* the box's hold */
}

static void append(ctx__dead_t *d) {
    d->next = NULL;
    if (queue.tail)
        queue.tail->next = d;
    else
        queue.head = d;
    queue.tail = d;
}

/* Finishes what was queued while the first death of this drain ran, and
 * what those queue in turn, then ends the drain. */
static void drain(void) {
    while (queue.head) {
        ctx__dead_t *d = queue.head;
        queue.head = d->next;
        if (!queue.head)
            queue.tail = NULL;
        if (d == &d->var->dead) /* a variable's own entry */
            finish_var(d->var);
        else
            finish_box(d->var, d->value, d);
    }
    queue.draining = 0;
}

void ctx__release_box(ctx__box_t *box) {
    ctx_var_t *var = ctx__box_var(box);
    void *value = box->value;
    if (queue.draining) {
        /* The box is dead: its storage becomes its queue entry (memcpy, so
         * the reads above stay before the writes whatever the types). */
        ctx__dead_t entry = {NULL, var, value};
        memcpy(box, &entry, sizeof entry);
        append((ctx__dead_t *)(void *)box);
        return;
    }
    queue.draining = 1;
    finish_box(var, value, box);
    drain();
}

void ctx__release_var(ctx_var_t *var) {
    if (queue.draining) {
        var->dead.var = var;
        var->dead.value = NULL;
        append(&var->dead);
        return;
    }
    queue.draining = 1;
    finish_var(var);
    drain();
}
