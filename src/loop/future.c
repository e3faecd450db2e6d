/* SPDX-License-Identifier: MIT */
/*
 * future.c — loop futures (asyncio.Future): a state, an outcome and a list
 * of records to schedule on the loop when the state becomes final.
 *
 *     PENDING ──set_result──► COMPLETED
 *        ├────set_error────► FAILED
 *        └────cancel───────► CANCELLED
 *
 * The change out of PENDING and the callback list share one small spinlock
 * (held for a few pointer moves, contended only by a completion racing an
 * add from another thread); the state itself is atomic so readers need no
 * lock.  The thread that wins the change stores the outcome, publishes the
 * state, takes the whole list, and schedules it with ctx__loop_schedule_list:
 * into the ready queue directly on the loop thread, through the inbox from
 * any other (a pool worker completing a future), or dropped if the loop is
 * closing.  Completion never allocates, so it cannot fail for lack of
 * memory; every record was allocated (or embedded) when it was added.
 *
 * The list holds records of three kinds: done-callback handles (call.c),
 * task waiters (task.c) and the keep-alive notice of a wrapped future
 * (offload.c).  Records in the list hold no reference to the future, which
 * would be a cycle keeping an abandoned pending future alive forever; each
 * takes one in its `scheduled` hook when the future completes, since it may
 * run after the completer dropped the future.  A future that dies pending
 * drops the records still in its list.
 *
 * Kinds: a PLAIN future is this struct alone; a task (task.c) and a wrapped
 * pool future (offload.c) embed one as their first member and are freed
 * through their own destroy function when its last reference goes.  A
 * task's future cannot be completed from outside (the task ends by
 * returning from its step) and cancelling it is ctx_loop_task_cancel.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

#include <sched.h>

static void future_lock(ctx_loop_future_t *f) {
    ctx__spin_lock(&f->lock);
}

static void future_unlock(ctx_loop_future_t *f) {
    ctx__spin_unlock(&f->lock);
}

void ctx__loop_future_init(ctx_loop_future_t *f, ctx_loop_t *loop, int kind,
                           void (*result_release)(void *)) {
    atomic_init(&f->refs, 1);
    f->kind = kind;
    f->loop = ctx_loop_retain(loop);
    atomic_init(&f->state, CTX_LOOP_FUTURE_PENDING);
    f->error = 0;
    f->result = NULL;
    f->result_release = result_release;
    atomic_init(&f->lock, 0);
    f->callbacks.head = f->callbacks.tail = NULL;
}

int ctx_loop_future_new(ctx_loop_t *loop, const ctx_loop_future_options_t *options,
                        ctx_loop_future_t **out) {
    if (!loop || !out)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    ctx_loop_future_options_t o = CTX_STRUCT_INIT(ctx_loop_future_options_t);
    if (options && ctx__struct_in(&o, sizeof o, options, CTX__LOOP_FUTURE_OPTIONS_V1) != 0)
        return CTX_EINVAL;
    if (atomic_load_explicit(&loop->closing, memory_order_acquire))
        return CTX_ECLOSED;
    ctx_loop_future_t *f = ctx__loop_malloc(sizeof *f);
    if (!f)
        return CTX_ENOMEM;
    ctx__loop_future_init(f, loop, CTX__LF_PLAIN, o.result_release);
    *out = f;
    return 0;
}

ctx_loop_future_t *ctx_loop_future_retain(ctx_loop_future_t *f) {
    if (f)
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

ctx_loop_t *ctx__loop_future_finalize(ctx_loop_future_t *f) {
    ctx__loop_list_drop(&f->callbacks);
    if (atomic_load_explicit(&f->state, memory_order_acquire) == CTX_LOOP_FUTURE_COMPLETED &&
        f->result_release)
        f->result_release(f->result);
    return f->loop;
}

/* Frees a plain future (its last reference went). */
static void plain_destroy(ctx_loop_future_t *f) {
    ctx_loop_t *loop = ctx__loop_future_finalize(f);
    ctx__loop_free(f, sizeof *f);
    ctx_loop_release(loop);
}

void ctx_loop_future_release(ctx_loop_future_t *f) {
    if (!f || atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    switch (f->kind) {
    case CTX__LF_TASK:
        ctx__task_destroy(f);
        break;
    case CTX__LF_WRAP:
        ctx__wrap_destroy(f);
        break;
    default:
        plain_destroy(f);
        break;
    }
}

ctx_loop_t *ctx_loop_future_loop(const ctx_loop_future_t *f) { return f ? f->loop : NULL; }

/* Calls each record's `scheduled` hook, then schedules the list. */
static void schedule_callbacks(ctx_loop_future_t *f, ctx__loop_list_t *list) {
    for (ctx__loop_rec_t *rec = list->head; rec; rec = rec->next)
        if (rec->ops->scheduled)
            rec->ops->scheduled(rec, f);
    ctx__loop_schedule_list(f->loop, list);
}

int ctx__loop_future_complete(ctx_loop_future_t *f, int state, int error, void *result) {
    future_lock(f);
    int now = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (now != CTX_LOOP_FUTURE_PENDING) {
        future_unlock(f);
        return now == CTX_LOOP_FUTURE_CANCELLED ? CTX_ECANCELLED : CTX_EINVAL;
    }
    f->error = error;
    f->result = result;
    atomic_store_explicit(&f->state, state, memory_order_release);
    ctx__loop_list_t list = f->callbacks;
    f->callbacks.head = f->callbacks.tail = NULL;
    future_unlock(f);
    if (list.head) {
        schedule_callbacks(f, &list); /* from another thread: wakes the loop */
        return 0;
    }
    /* Nothing to hand over, but ctx_loop_run_until_done may be waiting for
     * this very future on the loop thread: wake it.  (The fence pairs with
     * the one after run_until_done publishes `awaited`: either it sees the
     * new state, or this sees `awaited`.) */
    if (!ctx__loop_on_thread(f->loop)) {
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&f->loop->awaited, memory_order_relaxed) == f)
            ctx__loop_wake(f->loop);
    }
    return 0;
}

void ctx__loop_future_add_rec(ctx_loop_future_t *f, ctx__loop_rec_t *rec) {
    future_lock(f);
    if (atomic_load_explicit(&f->state, memory_order_relaxed) == CTX_LOOP_FUTURE_PENDING) {
        ctx__loop_list_push(&f->callbacks, rec);
        future_unlock(f);
        return;
    }
    future_unlock(f);
    ctx__loop_list_t one = {NULL, NULL};
    ctx__loop_list_push(&one, rec);
    schedule_callbacks(f, &one);
}

int ctx__loop_future_remove_rec(ctx_loop_future_t *f, ctx__loop_rec_t *rec) {
    int found = 0;
    future_lock(f);
    if (atomic_load_explicit(&f->state, memory_order_relaxed) == CTX_LOOP_FUTURE_PENDING) {
        ctx__loop_rec_t *prev = NULL;
        for (ctx__loop_rec_t *r = f->callbacks.head; r; prev = r, r = r->next) {
            if (r != rec)
                continue;
            if (prev)
                prev->next = r->next;
            else
                f->callbacks.head = r->next;
            if (f->callbacks.tail == r)
                f->callbacks.tail = prev;
            r->next = NULL;
            found = 1;
            break;
        }
    }
    future_unlock(f);
    return found;
}

int ctx_loop_future_set_result(ctx_loop_future_t *f, void *result) {
    if (!f || f->kind == CTX__LF_TASK)
        return CTX_EINVAL;
    if (ctx__loop_forked(f->loop))
        return CTX_EFORKED;
    return ctx__loop_future_complete(f, CTX_LOOP_FUTURE_COMPLETED, 0, result);
}

int ctx_loop_future_set_error(ctx_loop_future_t *f, int code) {
    if (!f || f->kind == CTX__LF_TASK || code >= 0)
        return CTX_EINVAL;
    if (ctx__loop_forked(f->loop))
        return CTX_EFORKED;
    if (code == CTX_ECANCELLED) {
        int r = ctx__loop_future_complete(f, CTX_LOOP_FUTURE_CANCELLED, CTX_ECANCELLED, NULL);
        if (r == 0 && f->kind == CTX__LF_WRAP)
            ctx__wrap_cancelled(f);
        return r;
    }
    return ctx__loop_future_complete(f, CTX_LOOP_FUTURE_FAILED, code, NULL);
}

int ctx_loop_future_cancel(ctx_loop_future_t *f) {
    if (!f)
        return CTX_EINVAL;
    if (ctx__loop_forked(f->loop))
        return CTX_EFORKED;
    if (f->kind == CTX__LF_TASK)
        return ctx__task_cancel_future(f);
    if (ctx__loop_future_complete(f, CTX_LOOP_FUTURE_CANCELLED, CTX_ECANCELLED, NULL) != 0)
        return 0;
    if (f->kind == CTX__LF_WRAP)
        ctx__wrap_cancelled(f);
    return 1;
}

ctx_loop_future_state_t ctx_loop_future_state(const ctx_loop_future_t *f) {
    return f ? (ctx_loop_future_state_t)atomic_load_explicit(&f->state, memory_order_acquire)
             : CTX_LOOP_FUTURE_PENDING;
}

int ctx_loop_future_done(const ctx_loop_future_t *f) {
    return ctx_loop_future_state(f) != CTX_LOOP_FUTURE_PENDING;
}

int ctx_loop_future_result(const ctx_loop_future_t *f, void **result) {
    if (!f)
        return CTX_EINVAL;
    switch (atomic_load_explicit(&f->state, memory_order_acquire)) {
    case CTX_LOOP_FUTURE_PENDING:
        return CTX_ENOTDONE;
    case CTX_LOOP_FUTURE_COMPLETED:
        if (result)
            *result = f->result;
        return 0;
    case CTX_LOOP_FUTURE_FAILED:
        return f->error;
    default: /* a task ended by its scope's deadline says so */
        return f->error == CTX_EDEADLINE ? CTX_EDEADLINE : CTX_ECANCELLED;
    }
}

int ctx_loop_future_add_done_callback(ctx_loop_future_t *f, ctx_loop_future_done_fn fn,
                                      void *user, const ctx_loop_call_options_t *options) {
    if (!f || !fn)
        return CTX_EINVAL;
    if (ctx__loop_forked(f->loop))
        return CTX_EFORKED;
    ctx_loop_call_options_t local;
    int err = ctx__loop_call_options_in(options, &local, &options);
    if (err)
        return err;
    ctx_loop_t *loop = f->loop;
    if (atomic_load_explicit(&loop->closing, memory_order_acquire))
        return CTX_ECLOSED;
    int on_loop = ctx__loop_on_thread(loop);
    ctx_loop_handle_t *h = ctx__loop_handle_new(loop, on_loop, NULL, fn, user, options, &err);
    if (!h)
        return err;
    future_lock(f);
    if (atomic_load_explicit(&f->state, memory_order_relaxed) == CTX_LOOP_FUTURE_PENDING) {
        ctx__loop_list_push(&f->callbacks, &h->rec);
        future_unlock(f);
        return 0;
    }
    future_unlock(f);
    /* Already done: schedule it now, or fail without calling anything. */
    h->future = ctx_loop_future_retain(f);
    if (on_loop) {
        if (ctx__loop_closing(loop)) {
            ctx__loop_handle_discard(h);
            return CTX_ECLOSED;
        }
        ctx__loop_ready_push(loop, &h->rec);
        return 0;
    }
    err = ctx__loop_post(loop, &h->rec);
    if (err)
        ctx__loop_handle_discard(h);
    return err;
}
