/* SPDX-License-Identifier: MIT */
/*
 * loop_internal.h — what the loop module's files share (internal, `ctx__`).
 *
 * Everything the loop runs is a *record* (ctx__loop_rec_t): a link, an ops
 * table saying how to run it and how to drop it unrun, and the timer fields.
 * Four kinds of records exist, each embedded in the object it serves, so
 * scheduling never allocates anything but the object itself:
 *
 *     record               embedded in            run (loop thread)
 *     ───────────────────  ─────────────────────  ─────────────────────────
 *     call record          ctx_loop_handle_t      fn(arg) in its context
 *     done-callback        ctx_loop_handle_t      fn(future, user) likewise
 *     task waiter          ctx_loop_task_t             the task's next step
 *     keep-alive notice    a wrapped future       keepalive-- on the loop
 *
 * A record is in at most one of these places at a time:
 *
 *     future's callback list ──(future done)──┐
 *                                              ▼
 *     any thread ──(locked inbox, uv_async)──► ready queue ──► run
 *                                              ▲   (idle handle, once per
 *     timer heap ──(due; one uv_timer_t)───────┘    loop iteration)
 *
 * and leaves it through exactly one of `run` (on the loop thread) or `drop`
 * (a closing loop, or a future destroyed while the record waited in its
 * list; any thread).  Whoever takes a record out of a place owns the place's
 * reference and must run or drop it.
 *
 * Files: loop.c (the loop object, its uv handles, ready queue, inbox, close),
 * heap.c (the timer heap), call.c (call_soon/later/at and handles),
 * future.c (loop futures), task.c (tasks), offload.c (pool futures and
 * offloading), uvcb.c (libuv callback helpers).
 */
#ifndef CTX_LOOP_INTERNAL_H
#define CTX_LOOP_INTERNAL_H

#include <ctxvar/loop.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <string.h>

#include <ctxvar.h>
#include <ctxvar/cancel.h>

#include "common/common.h"

/* ---- public structs that grow (docs/api-rules.md) ----
 * The first published (1.0) size of a struct: through its last 1.0 member.
 * A member added later goes after it and leaves this size as it is. */
#define CTX__SIZE_THROUGH(type, member) (offsetof(type, member) + sizeof(((type *)0)->member))
#define CTX__LOOP_CALL_OPTIONS_V1 CTX__SIZE_THROUGH(ctx_loop_call_options_t, arg_release)
#define CTX__LOOP_FUTURE_OPTIONS_V1 CTX__SIZE_THROUGH(ctx_loop_future_options_t, result_release)
#define CTX__LOOP_TASK_OPTIONS_V1 CTX__SIZE_THROUGH(ctx_loop_task_options_t, result_release)

/* Reads the caller's call options (NULL: defaults) into *local and points
 * *use at what to go by: NULL for defaults, else local.  0 or CTX_EINVAL. */
static inline int ctx__loop_call_options_in(const ctx_loop_call_options_t *options,
                                            ctx_loop_call_options_t *local,
                                            const ctx_loop_call_options_t **use) {
    *use = NULL;
    if (!options)
        return 0;
    int r = ctx__struct_in(local, sizeof *local, options, CTX__LOOP_CALL_OPTIONS_V1);
    if (r == 0)
        *use = local;
    return r;
}

/* ---- cancellation scopes ----
 * What the loop asks of a scope before it runs something in it: its error
 * (CTX_ECANCELLED / CTX_EDEADLINE), or CTX_EDEADLINE once its deadline has
 * passed even if the timer thread has not cancelled it yet (the loop reads
 * the clock, so nothing starts after a deadline); 0 if it may run. */
static inline int ctx__loop_scope_poll(const ctx_cancel_scope_t *scope) {
    int err = ctx_cancel_scope_error(scope);
    int64_t left;
    if (err == 0 && ctx_cancel_scope_remaining(scope, &left) == 0 && left == 0)
        err = CTX_EDEADLINE;
    return err;
}

/* ---- allocation ----
 * Through the core's allocator (ctx_set_allocator, and the tests' failing
 * allocator): ctx_malloc is exported, so the shared library reaches it too. */
static inline void *ctx__loop_malloc(size_t size) { return ctx_malloc(size); }
static inline void *ctx__loop_calloc(size_t size) {
    void *p = ctx_malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}
static inline void ctx__loop_free(void *p, size_t size) { ctx_free(p, size); }

#define CTX__CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---------------------------------------------------------------------- */
/* Records                                                                 */
/* ---------------------------------------------------------------------- */

typedef struct ctx__loop_rec ctx__loop_rec_t;

typedef struct ctx__loop_rec_ops {
    /* Loop thread: the record left the ready queue; do its work and release
     * what the place held. */
    void (*run)(ctx__loop_rec_t *rec);
    /* Any thread: the record will never run (closing loop, dying future). */
    void (*drop)(ctx__loop_rec_t *rec);
    /* Optional: called by a completing future for each record of its
     * callback list, before the record is scheduled (to take a reference
     * to the future, which may die before the record runs). */
    void (*scheduled)(ctx__loop_rec_t *rec, ctx_loop_future_t *future);
} ctx__loop_rec_ops_t;

struct ctx__loop_rec {
    ctx__loop_rec_t *next;
    const ctx__loop_rec_ops_t *ops;
    /* Timer heap only (loop thread): due time, tie-break, position. */
    uint64_t when;
    uint64_t seq;
    size_t heap_index;
};

/* A FIFO of records. */
typedef struct ctx__loop_list {
    ctx__loop_rec_t *head;
    ctx__loop_rec_t *tail;
} ctx__loop_list_t;

static inline void ctx__loop_list_push(ctx__loop_list_t *l, ctx__loop_rec_t *rec) {
    rec->next = NULL;
    if (l->tail)
        l->tail->next = rec;
    else
        l->head = rec;
    l->tail = rec;
}

/* Appends `more` to `l` and empties `more`. */
static inline void ctx__loop_list_splice(ctx__loop_list_t *l, ctx__loop_list_t *more) {
    if (!more->head)
        return;
    if (l->tail)
        l->tail->next = more->head;
    else
        l->head = more->head;
    l->tail = more->tail;
    more->head = more->tail = NULL;
}

/* Drops every record of `l` (which is emptied). */
void ctx__loop_list_drop(ctx__loop_list_t *l);

/* ---------------------------------------------------------------------- */
/* Timer heap (heap.c): a binary min-heap on (when, seq)                   */
/* ---------------------------------------------------------------------- */

typedef struct ctx__loop_heap {
    ctx__loop_rec_t **items;
    size_t len;
    size_t cap;
} ctx__loop_heap_t;

/* Inserts `rec` (when and seq set).  0 or CTX_ENOMEM (heap unchanged). */
int ctx__loop_heap_push(ctx__loop_heap_t *h, ctx__loop_rec_t *rec);
/* The earliest record, or NULL. */
static inline ctx__loop_rec_t *ctx__loop_heap_top(const ctx__loop_heap_t *h) {
    return h->len ? h->items[0] : NULL;
}
/* Removes `rec`, which must be in the heap. */
void ctx__loop_heap_remove(ctx__loop_heap_t *h, ctx__loop_rec_t *rec);
/* Frees the array (the heap must be empty). */
void ctx__loop_heap_free(ctx__loop_heap_t *h);

/* ---------------------------------------------------------------------- */
/* The loop (loop.c)                                                       */
/* ---------------------------------------------------------------------- */

/* The inbox's mark once the loop closed: no record is taken any more. */
#define CTX__LOOP_INBOX_CLOSED ((ctx__loop_rec_t *)(uintptr_t)1)

/* ---- spares: records a loop keeps for reuse (loop thread only) ----
 * A record the loop is done with goes on a list of spares of its kind
 * instead of back to the allocator, and the next record of that kind made
 * on the loop thread comes from there: a program that schedules as much as
 * it runs stops calling the allocator for its records.  Only the loop
 * thread touches the lists (records made or ended on other threads, or
 * once the loop is closing, use the allocator); close frees them.  The
 * first word of a spare is its link.
 *
 * How many: a list keeps up to `limit` records, CTX__LOOP_SPARES_MIN at
 * first.  When the loop had to free a record for lack of room and later
 * allocates one for lack of a spare, the limit was too small for the
 * program's bursts: it doubles, up to CTX__LOOP_SPARES_MAX_BYTES of
 * records.  So bursts of a few thousand calls per iteration pay the
 * allocator for a few iterations, then no more (at 1024 for ever, they cost
 * half as much again per call); the memory stays with the loop until it
 * closes. */
#define CTX__LOOP_SPARES_MIN 1024
#define CTX__LOOP_SPARES_MAX_BYTES ((size_t)1 << 20)

typedef struct ctx__loop_spares {
    void *head;
    size_t count;
    size_t size;  /* bytes of one record (for the allocator) */
    size_t limit; /* spares kept at most */
    int freed;    /* a record was freed for lack of room since the limit grew */
} ctx__loop_spares_t;

/* The allocation after a freed record: the limit doubles (see spares). */
static inline void ctx__loop_spares_grow(ctx__loop_spares_t *s) {
    size_t max = CTX__LOOP_SPARES_MAX_BYTES / s->size;
    if (s->limit < max)
        s->limit = s->limit <= max / 2 ? 2 * s->limit : max;
    s->freed = 0;
}

/* A record of s->size bytes: a spare (on the loop thread) or the
 * allocator's (uninitialised either way), or NULL.  *spare (if not NULL)
 * says which, for ctx__loop_spare_undo. */
static inline void *ctx__loop_spare_take_from(ctx__loop_spares_t *s, int on_loop, int *spare) {
    void *p = on_loop ? s->head : NULL;
    if (spare)
        *spare = p != NULL;
    if (!p) {
        if (on_loop && s->freed)
            ctx__loop_spares_grow(s);
        return ctx_malloc(s->size);
    }
    memcpy(&s->head, p, sizeof(void *));
    s->count--;
    return p;
}

static inline void *ctx__loop_spare_take(ctx__loop_spares_t *s, int on_loop) {
    return ctx__loop_spare_take_from(s, on_loop, NULL);
}

/* Gives back a record: kept as a spare if `keep` (the loop thread, not
 * closing) and there is room, else freed. */
static inline void ctx__loop_spare_give(ctx__loop_spares_t *s, void *p, int keep) {
    if (keep && s->count < s->limit) {
        memcpy(p, &s->head, sizeof(void *));
        s->head = p;
        s->count++;
    } else {
        if (keep)
            s->freed = 1;
        ctx_free(p, s->size);
    }
}

/* Puts back a record taken by a call that then failed, where it came from:
 * a failing call leaves the spares and the allocator as they were. */
static inline void ctx__loop_spare_undo(ctx__loop_spares_t *s, void *p, int spare) {
    if (spare) {
        memcpy(p, &s->head, sizeof(void *));
        s->head = p;
        s->count++;
    } else {
        ctx_free(p, s->size);
    }
}

/* Frees every spare. */
static inline void ctx__loop_spares_clear(ctx__loop_spares_t *s) {
    while (s->head) {
        void *p = s->head;
        memcpy(&s->head, p, sizeof(void *));
        ctx_free(p, s->size);
    }
    s->count = 0;
}

struct ctx_loop {
    atomic_uint refs;
    uv_loop_t *uv;
    int owns_uv;
    int uv_closed;     /* the owned uv loop was uv_loop_close'd */
    uv_check_t check;  /* runs the ready queue, after poll; active while
                          records are ready */
    uv_idle_t idle;    /* active while records are ready: poll does not
                          block (its callback does nothing) */
    uv_timer_t timer;  /* armed for the earliest record of the heap */
    uv_async_t async;  /* wakes the loop for the inbox; ref'd iff keepalive */
    int handles_open;  /* of the four, not yet through their close callback */

    /* Loop thread only. */
    ctx__loop_list_t ready;
    ctx__loop_heap_t heap;
    uint64_t seq;          /* tie-break of equal due times */
    ctx_loop_task_t *tasks;     /* pending tasks (task.c) */
    size_t keepalive;      /* pending tasks + wrapped futures in flight */
    int async_refd;
    int running;           /* inside ctx_loop_run / run_until_done */
    int dispatching;       /* inside one of the module's uv callbacks */
    int stop_requested;
    int handles_closed;    /* uv_close was called on the four handles */
    ctx_loop_error_fn error_fn;
    void *error_user;
    ctx__loop_spares_t spare_handles;  /* call.c */
    ctx__loop_spares_t spare_calls;    /* call.c: fire-and-forget calls */
    ctx__loop_spares_t spare_tasks;    /* task.c */
    ctx__loop_spares_t spare_wraps;    /* offload.c */
    ctx__loop_spares_t spare_offloads; /* offload.c */

    /* Written on the loop thread; read anywhere to ask "am I the loop
     * thread?" (a per-thread id, never reused; 0 until the loop runs). */
    atomic_uint_fast64_t owner;

    /* The inbox: records handed over by other threads, a lock-free stack
     * (newest on top), CTX__LOOP_INBOX_CLOSED once closed; `senders` counts
     * the threads between their push and the end of their uv_async_send. */
    _Atomic(ctx__loop_rec_t *) inbox;
    atomic_int senders;
    /* The future ctx_loop_run_until_done waits for (set on the loop thread,
     * read by completing threads: they wake the loop for it). */
    _Atomic(ctx_loop_future_t *) awaited;
    /* Set once, by ctx_loop_close (on the loop thread). */
    atomic_int closing;
    /* ctx__loop_fork_generation when the loop was made (see fork below). */
    unsigned generation;
};

/* ---- fork() (loop.c) ----
 * The child of a fork() gets a copy of every loop, but none of the threads
 * that ran them or handed them work, and a uv loop whose kernel state (the
 * epoll instance, the async descriptor) it shares with the parent.  A
 * pthread_atfork child handler bumps the generation; a loop made in an
 * earlier generation is unusable: its calls answer CTX_EFORKED. */
extern atomic_uint ctx__loop_fork_generation;
/* Installs the handler (once per process). */
void ctx__loop_fork_watch(void);
/* 1 if `loop` was made before a fork() that made this process. */
static inline int ctx__loop_forked(const ctx_loop_t *loop) {
    return loop->generation !=
           atomic_load_explicit(&ctx__loop_fork_generation, memory_order_relaxed);
}

/* 1 if the calling thread is known to be the loop thread. */
int ctx__loop_on_thread(const ctx_loop_t *loop);

/* Loop thread: 1 if the loop is closing or closed. */
static inline int ctx__loop_closing(const ctx_loop_t *loop) {
    return atomic_load_explicit(&loop->closing, memory_order_relaxed);
}

/* Any thread: 1 if a record ended now may become a spare (see spares): the
 * caller is the loop thread and the loop is not closing. */
static inline int ctx__loop_may_keep(const ctx_loop_t *loop) {
    return ctx__loop_on_thread(loop) && !ctx__loop_closing(loop);
}

/* Loop thread: the ready queue was empty and gets a record: starts the
 * idle handle (poll must not block) and the check handle (which runs it). */
void ctx__loop_ready_started(ctx_loop_t *loop);

/* Loop thread: appends `rec` to the ready queue (the loop must not be
 * closing) and makes sure the check handle will run it.  Inline: every
 * call_soon comes through here. */
static inline void ctx__loop_ready_push(ctx_loop_t *loop, ctx__loop_rec_t *rec) {
    if (!loop->ready.head)
        ctx__loop_ready_started(loop);
    ctx__loop_list_push(&loop->ready, rec);
}

/* Loop thread: puts `rec` in the timer heap at `when` (rec->seq is set
 * here).  0 or CTX_ENOMEM. */
int ctx__loop_timer_add(ctx_loop_t *loop, ctx__loop_rec_t *rec, uint64_t when);
/* Loop thread: takes `rec` out of the timer heap. */
void ctx__loop_timer_remove(ctx_loop_t *loop, ctx__loop_rec_t *rec);

/* Any thread: schedules the records of `list` (emptied) to run soon, in
 * order: straight into the ready queue on the loop thread, through the
 * inbox elsewhere.  If the loop is closing, each record is dropped instead,
 * on the calling thread. */
void ctx__loop_schedule_list(ctx_loop_t *loop, ctx__loop_list_t *list);

/* Any thread: hands `rec` to the loop through the inbox.  0, or
 * CTX_ECLOSED (the record was not taken; the caller still owns it). */
int ctx__loop_post(ctx_loop_t *loop, ctx__loop_rec_t *rec);

/* Any thread: wakes the loop (uv_async_send) unless it closed. */
void ctx__loop_wake(ctx_loop_t *loop);

/* Loop thread: counts something that must keep uv_run going (a pending
 * task, a wrapped future in flight): +1 or -1. */
void ctx__loop_keepalive(ctx_loop_t *loop, int delta);

/* Loop thread: tells the error handler. */
void ctx__loop_report(ctx_loop_t *loop, int code, const char *what);

/* Maps a libuv error to a CTX_ code. */
int ctx__loop_uv_error(int uv_err);

/* ---------------------------------------------------------------------- */
/* Handles (call.c)                                                        */
/* ---------------------------------------------------------------------- */

enum { CTX__H_SCHEDULED = 0, CTX__H_RUNNING = 1, CTX__H_DONE = 2, CTX__H_CANCELLED = 3 };

struct ctx_loop_handle {
    ctx__loop_rec_t rec;
    ctx_loop_t *loop;      /* retained only if `holds_loop` */
    int holds_loop;        /* a reference was handed out: keep the loop alive */
    ctx_loop_callback_fn fn;
    ctx_loop_future_done_fn done_fn;
    void *arg;
    void (*arg_release)(void *arg);
    /* The context the callback runs in: the caller's explicit one (retained),
     * or, when `context` is NULL, a copy of the scheduler's current context
     * captured in `capture` (no allocation).  Released when run or dropped. */
    ctx_context_t *context;
    ctx_capture_t capture;
    /* A call record with a captured context: the scope current when it was
     * captured (retained; NULL: none), asked before the callback runs. */
    ctx_cancel_scope_t *scope;
    ctx_loop_future_t *future; /* done-callbacks: retained once scheduled */
    uint64_t when;
    atomic_uint refs;
    atomic_int state;
    int spare; /* the record came from the loop's spares */
};

/* Bytes of a fire-and-forget call record (call.c), for its spares. */
size_t ctx__loop_call_size(void);

/* A new handle with one reference (the place's), state SCHEDULED, context
 * captured as `options` say; for a call record (fn) or a done-callback
 * (done_fn).  `on_loop`: the caller is on the loop thread (the record may
 * come from the loop's spares).  NULL with *err = CTX_ENOMEM. */
ctx_loop_handle_t *ctx__loop_handle_new(ctx_loop_t *loop, int on_loop, ctx_loop_callback_fn fn,
                                        ctx_loop_future_done_fn done_fn, void *arg,
                                        const ctx_loop_call_options_t *options, int *err);
/* Frees a handle that was never scheduled (a failed call): no arg_release. */
void ctx__loop_handle_discard(ctx_loop_handle_t *h);
/* Sizes the loop's spare lists (ctx_loop_new). */
void ctx__loop_spares_init(ctx_loop_t *loop);
/* Loop thread, closing: frees every spare record. */
void ctx__loop_spares_free(ctx_loop_t *loop);

/* ---------------------------------------------------------------------- */
/* Futures (future.c)                                                      */
/* ---------------------------------------------------------------------- */

enum { CTX__LF_PLAIN = 0, CTX__LF_TASK = 1, CTX__LF_WRAP = 2 };

struct ctx_loop_future {
    atomic_uint refs;
    int kind;
    ctx_loop_t *loop; /* retained */
    atomic_int state; /* ctx_loop_future_state_t; final once not PENDING */
    int error;
    void *result;
    void (*result_release)(void *result);
    atomic_int lock;  /* guards the callback list and the change of state */
    ctx__loop_list_t callbacks;
};

/* Initialises an embedded future (one reference). */
void ctx__loop_future_init(ctx_loop_future_t *f, ctx_loop_t *loop, int kind,
                           void (*result_release)(void *));

/* Completes `f` (any kind) with a final state: 0, or CTX_ECANCELLED (it was
 * cancelled) / CTX_EINVAL (it was otherwise done), nothing changed. */
int ctx__loop_future_complete(ctx_loop_future_t *f, int state, int error, void *result);

/* Adds `rec` to the callbacks of `f`, or, if `f` is done, schedules it (its
 * `scheduled` hook is called either way at scheduling time). */
void ctx__loop_future_add_rec(ctx_loop_future_t *f, ctx__loop_rec_t *rec);

/* Takes `rec` back out of the callbacks of `f` if it is still there (the
 * future is pending): 1, and the caller owns the place's reference; else 0
 * (the future completed: the record is on its way to the ready queue). */
int ctx__loop_future_remove_rec(ctx_loop_future_t *f, ctx__loop_rec_t *rec);

/* Releases what a future holds, for every kind (called when the last
 * reference goes), but its reference to its loop: returns the loop, which
 * the caller releases once the future's memory is given back. */
ctx_loop_t *ctx__loop_future_finalize(ctx_loop_future_t *f);

/* ---------------------------------------------------------------------- */
/* Tasks (task.c) and offloading (offload.c)                               */
/* ---------------------------------------------------------------------- */

/* The sizes of the records the loop keeps spares of. */
size_t ctx__loop_task_size(void);
size_t ctx__loop_wrap_size(void);
size_t ctx__loop_offload_size(void);

/* Loop thread, closing: ends every pending task CANCELLED without a step. */
void ctx__task_close_all(ctx_loop_t *loop);
/* Frees a task (its future's last reference went). */
void ctx__task_destroy(ctx_loop_future_t *f);
/* 1 if the running step of `t` may arm a wait now (it is this thread's
 * running task and has armed none), else 0. */
int ctx__task_can_arm(const ctx_loop_task_t *t);
/* ctx_loop_task_cancel through the task's future. */
int ctx__task_cancel_future(ctx_loop_future_t *f);

/* ctx_loop_task_new for a child of `group` (NULL: none), which takes over
 * the caller's reference to the group (on success only). */
int ctx__task_new(ctx_loop_t *loop, ctx_loop_task_step_fn step, void *arg,
                  const ctx_loop_task_options_t *options, ctx_loop_task_group_t *group,
                  ctx_loop_task_t **out);
/* ctx_loop_task_await of the future `done` that ends `group`: such a wait
 * is not abandoned when the task's scope is cancelled, and
 * ctx_loop_task_cancel cancels the group's children instead of `done`. */
int ctx__task_await_group(ctx_loop_task_t *t, ctx_loop_future_t *done,
                          ctx_loop_task_group_t *group);

/* Task groups (group.c), loop thread: a child of `group` ended with
 * `state`/`error` (drops the child's reference); a reference more / less;
 * the parent was cancelled while awaiting the group. */
void ctx__task_group_child_ended(ctx_loop_task_group_t *group, int state, int error);
void ctx__task_group_retain(ctx_loop_task_group_t *group);
void ctx__task_group_unref(ctx_loop_task_group_t *group);
void ctx__task_group_cancel_children(ctx_loop_task_group_t *group);

/* Cancels the pool future a wrapped future follows (after the wrapped
 * future itself was cancelled). */
void ctx__wrap_cancelled(ctx_loop_future_t *f);
/* Frees a wrapped future. */
void ctx__wrap_destroy(ctx_loop_future_t *f);

#endif /* CTX_LOOP_INTERNAL_H */
