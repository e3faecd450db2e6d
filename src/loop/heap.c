/* SPDX-License-Identifier: MIT */
/*
 * heap.c — the loop's timer heap: a binary min-heap of records ordered by
 * (when, seq).
 *
 * call_later / call_at / ctx_loop_task_sleep put a record here instead of
 * starting a uv_timer_t each: one uv timer (loop.c) stays armed for the
 * earliest record, so a timer costs one array slot, not a libuv handle that
 * would need uv_close and a close callback before its memory could go.
 * `seq` grows with every insertion, so records due at the same time leave
 * in the order they were scheduled (asyncio's guarantee).
 *
 *            items[0]                each record knows its index
 *           /        \               (rec->heap_index), so cancelling
 *      items[1]    items[2]          one is O(log n): move the last item
 *      /    \       /    \           into its slot and sift it up or down.
 *
 * The array grows by doubling through the module's allocator; a failed
 * growth leaves the heap as it was (the caller reports CTX_ENOMEM).  Only
 * the loop thread touches the heap.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

#include <string.h>

static int before(const ctx__loop_rec_t *a, const ctx__loop_rec_t *b) {
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void place(ctx__loop_heap_t *h, size_t i, ctx__loop_rec_t *rec) {
    h->items[i] = rec;
    rec->heap_index = i;
}

static void sift_up(ctx__loop_heap_t *h, size_t i) {
    ctx__loop_rec_t *rec = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(rec, h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, rec);
}

static void sift_down(ctx__loop_heap_t *h, size_t i) {
    ctx__loop_rec_t *rec = h->items[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && before(h->items[child + 1], h->items[child]))
            child++;
        if (!before(h->items[child], rec))
            break;
        place(h, i, h->items[child]);
        i = child;
    }
    place(h, i, rec);
}

int ctx__loop_heap_push(ctx__loop_heap_t *h, ctx__loop_rec_t *rec) {
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        ctx__loop_rec_t **items = ctx__loop_malloc(cap * sizeof *items);
        if (!items)
            return CTX_ENOMEM;
        if (h->len)
            memcpy(items, h->items, h->len * sizeof *items);
        ctx__loop_free(h->items, h->cap * sizeof *items);
        h->items = items;
        h->cap = cap;
    }
    h->items[h->len] = rec;
    rec->heap_index = h->len++;
    sift_up(h, rec->heap_index);
    return 0;
}

void ctx__loop_heap_remove(ctx__loop_heap_t *h, ctx__loop_rec_t *rec) {
    size_t i = rec->heap_index;
    ctx__loop_rec_t *last = h->items[--h->len];
    rec->heap_index = SIZE_MAX;
    if (i == h->len)
        return;
    place(h, i, last);
    if (i > 0 && before(last, h->items[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

void ctx__loop_heap_free(ctx__loop_heap_t *h) {
    ctx__loop_free(h->items, h->cap * sizeof *h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}
