/* SPDX-License-Identifier: MIT */
/*
 * task.c — tasks (asyncio.Task): a step function driven on the loop inside
 * the task's own context, waiting between steps.
 *
 * asyncio's Task keeps `_context` (copy_context() at creation) and runs each
 * `__step` with `call_soon(self.__step, context=self._context)`, so every
 * step of the task runs in the same context object and two tasks on one
 * thread never see each other's sets.  Here a step is a C function the user
 * writes as a hand-made coroutine; the task enters its context around each
 * call (ctx_context_run on the task's own context: no copy per step) and
 * the step's return value says what happens next.
 *
 * Layout: one record per task (from the loop's spares when one is there:
 * loop_internal.h), plus its context.
 *
 *   ctx_loop_task_t ┌───────────────────────┐
 *              │ future (first member) │ the task *is* its future: refs,
 *              │                       │ outcome, done-callbacks
 *              │ waiter (a record)     │ the one record that wakes the task:
 *              │                       │ in the ready queue, the timer heap
 *              │                       │ or an awaited future's list
 *              │ context, step, arg    │
 *              │ awaiting (retained)   │ the future of the current wait
 *              └───────────────────────┘
 *
 * A task waits on one thing at a time, so one embedded record is enough and
 * arming a wait never allocates (a sleep may grow the timer heap).  `wait`
 * says where the waiter is (loop thread only; the record's own fields may be
 * touched by a thread completing a future, `wait` never is):
 *
 *   READY   in the ready queue (first step, yield, or woken)
 *   SLEEP   in the timer heap
 *   FUTURE  in `awaiting`'s callback list (or on its way to the ready queue)
 *   NONE    the step is running, or the task has ended
 *
 * References: the loop holds one while the task is pending (the list
 * `loop->tasks`, which also counts in the loop's keepalive), the waiter
 * holds one while it is anywhere, and the creator may hold one.
 *
 * Cancellation follows asyncio: ctx_loop_task_cancel cancels the awaited future
 * (so cancelling a task that awaits another task cancels that one too, and
 * the first goes on waiting until it ends), ends a sleep early, and
 * otherwise sets `must_cancel`, which makes the next step see
 * CTX_ECANCELLED from ctx_loop_task_awaited — or, for a task that never ran,
 * ends it without running its step at all.  The step decides whether to end
 * cancelled.
 *
 * Cancellation scopes (ctxvar/cancel.h).  A task keeps a reference to the
 * scope of its context (taken at creation, looked at again after every
 * step, since a step may enter another scope in it) and a wake-up callback
 * registered on that scope.  The check is level-triggered, as in trio:
 *
 *   - before each step the scope is polled (its error, or CTX_EDEADLINE once
 *     its deadline has passed by the clock); if it is cancelled the step
 *     gets that error from ctx_loop_task_awaited instead of the wait's
 *     outcome (asyncio's CancelledError at the await); a task that never
 *     ran ends CANCELLED with it, without a step;
 *   - a wait armed while the scope is cancelled ends at once;
 *   - when the scope is cancelled while the task waits, the callback (any
 *     thread, no lock held) schedules the task's `wake` record — through
 *     the inbox and uv_async_send from another thread, straight into the
 *     ready queue on the loop thread — at most once at a time
 *     (`wake_posted`); on the loop thread `wake` abandons the sleep (out of
 *     the timer heap) or the awaited future (the waiter taken out of its
 *     callback list; the future itself is not cancelled: it may be shared,
 *     and work started for this task in copies of its context stops by
 *     the same scope) and makes the task ready.
 * The callback is cleared when the task ends (on the loop thread; clearing
 * waits for a callback running on another thread, which only schedules).
 * A step that wants to wait for cleanup work once its scope is cancelled
 * enters another scope first (ctx_cancel_enter(NULL, ...) detaches).
 *
 * Closing: ctx_loop_close drops the ready queue and the heap first (the
 * waiters' drops release their references only: a drop may run on another
 * thread and never touches the task's loop-thread fields), then ends every
 * pending task here with `closing` set, which tells end_task that the
 * waiter is no longer in the heap.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

enum { WAIT_NONE = 0, WAIT_READY = 1, WAIT_SLEEP = 2, WAIT_FUTURE = 3 };

struct ctx_loop_task {
    ctx_loop_future_t future; /* first: a task is its future */
    ctx__loop_rec_t waiter;
    ctx_loop_task_step_fn step;
    void *arg;
    void (*arg_release)(void *arg);
    ctx_context_t *context;
    ctx_loop_task_t *prev; /* loop->tasks while pending */
    ctx_loop_task_t *next;
    ctx_loop_future_t *awaiting;
    int wait;
    int armed;   /* the running step armed a wait */
    int in_step;
    int started;
    int must_cancel;
    atomic_int cancel_requests;
    /* The outcome of the wait, for ctx_loop_task_awaited in the running step. */
    int awaited_code;
    void *awaited_result;
    /* Cancellation (see the top): the scope of the task's context
     * (retained, or NULL), the wake-up registered on it while `watching`,
     * and the record that wake-up schedules. */
    ctx_cancel_scope_t *scope;
    int watching;
    atomic_int wake_posted;
    ctx__loop_rec_t wake;
    ctx_cancel_callback_t cancel_cb;
    /* Task groups (group.c): the group this task is a child of (it holds
     * a reference to it until the task ends), and the group whose end this
     * task awaits (retained while `awaiting` is that group's future). */
    ctx_loop_task_group_t *group;
    ctx_loop_task_group_t *awaiting_group;
};

static _Thread_local ctx_loop_task_t *tls_task;

static ctx_loop_task_t *task_of(ctx_loop_future_t *f) { return (ctx_loop_task_t *)(void *)f; }

ctx_loop_task_t *ctx_loop_task_retain(ctx_loop_task_t *t) {
    if (t)
        ctx_loop_future_retain(&t->future);
    return t;
}

void ctx_loop_task_release(ctx_loop_task_t *t) {
    if (t)
        ctx_loop_future_release(&t->future);
}

size_t ctx__loop_task_size(void) { return sizeof(ctx_loop_task_t); }

/* ---- the task's scope ---- */

/* Stops watching the scope and lets it go.  Loop thread (or the last
 * release of a task that never ended: a forked child's). */
static void unwatch_scope(ctx_loop_task_t *t) {
    if (t->watching) {
        (void)ctx_cancel_callback_clear(&t->cancel_cb);
        t->watching = 0;
    }
    ctx_cancel_scope_release(t->scope);
    t->scope = NULL;
}

/* The scope's callback: any thread, any context, no lock held.  Schedules
 * `wake` unless it is scheduled already (then it will see this
 * cancellation: the scope is cancelled before its callbacks run). */
static void on_scope_cancelled(void *arg) {
    ctx_loop_task_t *t = arg;
    if (atomic_exchange_explicit(&t->wake_posted, 1, memory_order_acq_rel))
        return;
    ctx_loop_task_retain(t); /* the wake record's: the task is pending (the
                                callback is cleared before the loop lets go) */
    ctx__loop_list_t one = {NULL, NULL};
    ctx__loop_list_push(&one, &t->wake);
    ctx__loop_schedule_list(t->future.loop, &one); /* or dropped: closing */
}

/* Makes `scope` (borrowed; NULL: none) the scope the task watches. */
static void watch_scope(ctx_loop_task_t *t, ctx_cancel_scope_t *scope) {
    if (scope == t->scope)
        return;
    unwatch_scope(t);
    if (!scope)
        return;
    t->scope = ctx_cancel_scope_retain(scope);
    /* 0, or CTX_CANCEL_CALLBACK_RAN (cancelled already: it ran here). */
    (void)ctx_cancel_callback_init_wakeup(&t->cancel_cb, scope, on_scope_cancelled, t);
    t->watching = 1;
}

/* The error that stops the task: its scope's (0 if none or active). */
static int scope_error(const ctx_loop_task_t *t) {
    return t->scope ? ctx__loop_scope_poll(t->scope) : 0;
}

/* Abandons the wait of a task that is not in a step: out of the timer
 * heap or the awaited future's list, into the ready queue (the waiter's
 * reference goes along).  A waiter already on its way to the ready queue
 * is left alone. */
static void abandon_wait(ctx_loop_task_t *t) {
    ctx_loop_t *loop = t->future.loop;
    switch (t->wait) {
    case WAIT_SLEEP:
        ctx__loop_timer_remove(loop, &t->waiter);
        break;
    case WAIT_FUTURE:
        if (t->awaiting_group)
            return; /* a group's end: its children stop by the same scope
                       (a child of this one) and the wait ends with them */
        if (!ctx__loop_future_remove_rec(t->awaiting, &t->waiter))
            return; /* the future completed: the waiter comes anyway */
        break;
    default:
        return;
    }
    t->wait = WAIT_READY;
    ctx__loop_ready_push(loop, &t->waiter);
}

static void wake_run(ctx__loop_rec_t *rec) {
    ctx_loop_task_t *t = CTX__CONTAINER(rec, ctx_loop_task_t, wake);
    /* Reset before looking: a cancellation after this schedules again. */
    atomic_exchange_explicit(&t->wake_posted, 0, memory_order_acq_rel);
    if (!ctx_loop_future_done(&t->future) && !t->in_step && scope_error(t))
        abandon_wait(t);
    ctx_loop_task_release(t);
}

static void wake_drop(ctx__loop_rec_t *rec) {
    ctx_loop_task_release(CTX__CONTAINER(rec, ctx_loop_task_t, wake));
}

static const ctx__loop_rec_ops_t wake_ops = {wake_run, wake_drop, NULL};

void ctx__task_destroy(ctx_loop_future_t *f) {
    ctx_loop_task_t *t = task_of(f);
    unwatch_scope(t);
    ctx_loop_t *loop = ctx__loop_future_finalize(f);
    ctx_loop_future_release(t->awaiting);
    ctx_context_release(t->context);
    ctx__loop_spare_give(&loop->spare_tasks, t, ctx__loop_may_keep(loop));
    ctx_loop_release(loop);
}

static void unlink_task(ctx_loop_t *loop, ctx_loop_task_t *t) {
    if (t->prev)
        t->prev->next = t->next;
    else
        loop->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

static void drop_awaiting(ctx_loop_task_t *t) {
    ctx_loop_future_release(t->awaiting);
    t->awaiting = NULL;
    if (t->awaiting_group) {
        ctx__task_group_unref(t->awaiting_group);
        t->awaiting_group = NULL;
    }
}

/* Ends a pending task: the wait is abandoned, arg_release runs, then the
 * future completes (its callbacks are scheduled) and the loop lets go. */
static void end_task(ctx_loop_task_t *t, int state, int error, void *result, int cancel_awaited) {
    ctx_loop_t *loop = t->future.loop;
    int closing = ctx__loop_closing(loop);
    int release_waiter = 0;
    unwatch_scope(t);
    if (t->wait == WAIT_SLEEP && !closing) {
        ctx__loop_timer_remove(loop, &t->waiter);
        release_waiter = 1;
    }
    if (cancel_awaited && t->awaiting && t->wait == WAIT_FUTURE)
        ctx_loop_future_cancel(t->awaiting);
    t->wait = WAIT_NONE;
    unlink_task(loop, t);
    ctx__loop_keepalive(loop, -1);
    if (t->arg_release) {
        t->arg_release(t->arg);
        t->arg_release = NULL;
    }
    ctx__loop_future_complete(&t->future, state, error, result);
    drop_awaiting(t);
    if (t->group) { /* after the future: the group's awaiter sees it done */
        ctx_loop_task_group_t *g = t->group;
        t->group = NULL;
        ctx__task_group_child_ended(g, state, error);
    }
    if (release_waiter)
        ctx_loop_task_release(t);
    ctx_loop_task_release(t); /* the loop's */
}

static void end_with_code(ctx_loop_task_t *t, int rc, void *result) {
    if (rc == 0)
        end_task(t, CTX_LOOP_FUTURE_COMPLETED, 0, result, 0);
    else if (rc == CTX_ECANCELLED || rc == CTX_EDEADLINE)
        end_task(t, CTX_LOOP_FUTURE_CANCELLED, rc, NULL, 0);
    else
        end_task(t, CTX_LOOP_FUTURE_FAILED, rc, NULL, 0);
}

typedef struct step_call {
    ctx_loop_task_t *task;
    void *result;
    int rc;
    int scope_changed;
    ctx_cancel_scope_t *scope; /* the new one (retained), if changed */
} step_call_t;

static void *step_trampoline(void *p) {
    step_call_t *call = p;
    ctx_loop_task_t *t = call->task;
    call->rc = t->step(t, t->arg, &call->result);
    /* The scope the step leaves in the task's context (borrowed from it
     * while it is current: retained only when it changed). */
    ctx_cancel_scope_t *scope = NULL;
    if (ctx_cancel_scope_current(&scope) != 0)
        scope = NULL;
    if (scope != t->scope) {
        call->scope_changed = 1;
        call->scope = ctx_cancel_scope_retain(scope);
    }
    return NULL;
}

/* After a step: watch the scope the step left in the task's context. */
static void refresh_scope(ctx_loop_task_t *t, step_call_t *call, int run_rc) {
    if (run_rc == CTX_ENOTCURRENT) {
        /* The step left another context current: what the trampoline saw
         * was that one's scope.  Ask the task's context itself. */
        ctx_cancel_scope_release(call->scope);
        call->scope = NULL;
        call->scope_changed = ctx_cancel_scope_get(t->context, &call->scope) == 0 ||
                              t->scope != NULL;
    }
    if (call->scope_changed)
        watch_scope(t, call->scope);
    ctx_cancel_scope_release(call->scope);
}

/* Runs the next step (the waiter just left the ready queue). */
static void run_step(ctx_loop_task_t *t) {
    ctx_loop_t *loop = t->future.loop;
    int code = 0;
    void *res = NULL;
    if (t->awaiting)
        code = ctx_loop_future_result(t->awaiting, &res);
    int stop = scope_error(t);
    if (t->must_cancel || stop) {
        t->must_cancel = 0;
        code = stop ? stop : CTX_ECANCELLED;
        res = NULL;
        if (!t->started) {
            end_task(t, CTX_LOOP_FUTURE_CANCELLED, code, NULL, 0);
            return;
        }
    }
    t->started = 1;
    t->awaited_code = code;
    t->awaited_result = res;
    t->armed = 0;
    t->in_step = 1;
    ctx_loop_task_t *outer = tls_task;
    tls_task = t;
    step_call_t call = {t, NULL, 0, 0, NULL};
    int r = ctx_context_run(t->context, step_trampoline, &call, NULL);
    tls_task = outer;
    t->in_step = 0;
    t->awaited_result = NULL;
    if (ctx__loop_forked(loop)) {
        ctx_cancel_scope_release(call.scope);
        return; /* the step forked: in the child the task stays as it is */
    }
    refresh_scope(t, &call, r);
    if (r == CTX_ENOTCURRENT) {
        ctx__loop_report(loop, r, "a task step returned with a context of its own still entered");
        if (call.rc >= 0)
            call.rc = r;
    } else if (r) {
        ctx__loop_report(loop, r, "a task could not enter its context and failed");
        call.rc = r;
    }
    if (call.rc == CTX_LOOP_TASK_WAIT && t->armed) {
        if (scope_error(t))
            abandon_wait(t); /* waiting in a cancelled scope: not for long */
        return;
    }
    if (call.rc > 0) {
        ctx__loop_report(loop, CTX_EINVAL,
                         call.rc == CTX_LOOP_TASK_WAIT
                             ? "a task step returned CTX_LOOP_TASK_WAIT without arming a wait"
                             : "a task step returned an unknown status");
        call.rc = CTX_EINVAL;
    }
    end_with_code(t, call.rc, call.result);
}

static void waiter_run(ctx__loop_rec_t *rec) {
    ctx_loop_task_t *t = CTX__CONTAINER(rec, ctx_loop_task_t, waiter);
    if (!ctx_loop_future_done(&t->future)) {
        t->wait = WAIT_NONE;
        run_step(t);
    }
    ctx_loop_task_release(t); /* the waiter's */
}

static void waiter_drop(ctx__loop_rec_t *rec) {
    ctx_loop_task_release(CTX__CONTAINER(rec, ctx_loop_task_t, waiter));
}

static const ctx__loop_rec_ops_t waiter_ops = {waiter_run, waiter_drop, NULL};

int ctx_loop_task_new(ctx_loop_t *loop, ctx_loop_task_step_fn step, void *arg,
                 const ctx_loop_task_options_t *options, ctx_loop_task_t **out) {
    return ctx__task_new(loop, step, arg, options, NULL, out);
}

int ctx__task_new(ctx_loop_t *loop, ctx_loop_task_step_fn step, void *arg,
                  const ctx_loop_task_options_t *options, ctx_loop_task_group_t *group,
                  ctx_loop_task_t **out) {
    if (!loop || !step)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    ctx_loop_task_options_t o = CTX_STRUCT_INIT(ctx_loop_task_options_t);
    if (options && ctx__struct_in(&o, sizeof o, options, CTX__LOOP_TASK_OPTIONS_V1) != 0)
        return CTX_EINVAL;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    int spare;
    ctx_loop_task_t *t = ctx__loop_spare_take_from(&loop->spare_tasks, 1, &spare);
    if (!t)
        return CTX_ENOMEM;
    memset(t, 0, sizeof *t);
    if (o.context) {
        t->context = ctx_context_retain(o.context);
    } else {
        int r = ctx_context_copy_current(&t->context);
        if (r) {
            ctx__loop_spare_undo(&loop->spare_tasks, t, spare);
            return r;
        }
    }
    ctx__loop_future_init(&t->future, loop, CTX__LF_TASK, o.result_release);
    /* The loop's reference, the waiter's, and the caller's if wanted. */
    atomic_store_explicit(&t->future.refs, out ? 3u : 2u, memory_order_relaxed);
    t->waiter.ops = &waiter_ops;
    t->waiter.heap_index = SIZE_MAX;
    t->wake.ops = &wake_ops;
    t->wake.heap_index = SIZE_MAX;
    atomic_init(&t->wake_posted, 0);
    t->step = step;
    t->arg = arg;
    t->arg_release = o.arg_release;
    t->group = group; /* the caller's reference to it becomes the task's */
    atomic_init(&t->cancel_requests, 0);
    t->next = loop->tasks;
    if (t->next)
        t->next->prev = t;
    loop->tasks = t;
    ctx__loop_keepalive(loop, +1);
    t->wait = WAIT_READY;
    ctx__loop_ready_push(loop, &t->waiter);
    /* The scope of its context: the creator's current one (borrowed, the
     * same map), or the explicit context's. */
    ctx_cancel_scope_t *scope = NULL;
    if (!o.context) {
        if (ctx_cancel_scope_current(&scope) == 0)
            watch_scope(t, scope);
    } else if (ctx_cancel_scope_get(o.context, &scope) == 0) {
        watch_scope(t, scope);
        ctx_cancel_scope_release(scope);
    }
    if (out)
        *out = t;
    return 0;
}

ctx_loop_future_t *ctx_loop_task_future(ctx_loop_task_t *t) { return t ? &t->future : NULL; }
ctx_context_t *ctx_loop_task_context(const ctx_loop_task_t *t) { return t ? t->context : NULL; }
ctx_loop_task_t *ctx_loop_task_current(void) { return tls_task; }

int ctx__task_can_arm(const ctx_loop_task_t *t) {
    return t && tls_task == t && t->in_step && !t->armed;
}

int ctx_loop_task_await(ctx_loop_task_t *t, ctx_loop_future_t *f) {
    if (t && ctx__loop_forked(t->future.loop))
        return CTX_EFORKED;
    if (!ctx__task_can_arm(t) || !f || f->loop != t->future.loop || f == &t->future)
        return CTX_EINVAL;
    ctx_loop_future_retain(f);
    drop_awaiting(t);
    t->awaiting = f;
    t->armed = 1;
    t->wait = WAIT_FUTURE;
    ctx_loop_task_retain(t); /* the waiter's */
    ctx__loop_future_add_rec(f, &t->waiter);
    return CTX_LOOP_TASK_WAIT;
}

int ctx_loop_task_sleep(ctx_loop_task_t *t, uint64_t delay_ms) {
    if (t && ctx__loop_forked(t->future.loop))
        return CTX_EFORKED;
    if (!ctx__task_can_arm(t))
        return CTX_EINVAL;
    ctx_loop_t *loop = t->future.loop;
    uint64_t now = uv_now(loop->uv);
    uint64_t when = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
    int r = ctx__loop_timer_add(loop, &t->waiter, when);
    if (r)
        return r;
    drop_awaiting(t);
    t->armed = 1;
    t->wait = WAIT_SLEEP;
    ctx_loop_task_retain(t);
    return CTX_LOOP_TASK_WAIT;
}

int ctx__task_await_group(ctx_loop_task_t *t, ctx_loop_future_t *done,
                          ctx_loop_task_group_t *group) {
    int r = ctx_loop_task_await(t, done);
    if (r == CTX_LOOP_TASK_WAIT) {
        ctx__task_group_retain(group);
        t->awaiting_group = group;
    }
    return r;
}

int ctx_loop_task_yield(ctx_loop_task_t *t) {
    if (t && ctx__loop_forked(t->future.loop))
        return CTX_EFORKED;
    if (!ctx__task_can_arm(t))
        return CTX_EINVAL;
    drop_awaiting(t);
    t->armed = 1;
    t->wait = WAIT_READY;
    ctx_loop_task_retain(t);
    ctx__loop_ready_push(t->future.loop, &t->waiter);
    return CTX_LOOP_TASK_WAIT;
}

int ctx_loop_task_awaited(const ctx_loop_task_t *t, void **result) {
    if (!t || tls_task != t)
        return CTX_EINVAL;
    if (result)
        *result = t->awaited_result;
    return t->awaited_code;
}

int ctx_loop_task_cancel(ctx_loop_task_t *t) {
    if (!t)
        return CTX_EINVAL;
    if (ctx__loop_forked(t->future.loop))
        return CTX_EFORKED;
    if (ctx_loop_future_done(&t->future))
        return 0;
    atomic_fetch_add_explicit(&t->cancel_requests, 1, memory_order_relaxed);
    ctx_loop_t *loop = t->future.loop;
    if (t->in_step || ctx__loop_closing(loop)) {
        t->must_cancel = 1;
        return 1;
    }
    switch (t->wait) {
    case WAIT_SLEEP:
        ctx__loop_timer_remove(loop, &t->waiter);
        t->must_cancel = 1;
        t->wait = WAIT_READY;
        ctx__loop_ready_push(loop, &t->waiter);
        break;
    case WAIT_FUTURE:
        if (t->awaiting_group) {
            /* Awaiting a group: its children are cancelled and the task
             * wakes once they all ended (asyncio's TaskGroup). */
            t->must_cancel = 1;
            ctx__task_group_cancel_children(t->awaiting_group);
            break;
        }
        /* Cancelling the awaited future wakes the task with CTX_ECANCELLED
         * through its outcome; if it is already done, say so explicitly. */
        if (ctx_loop_future_cancel(t->awaiting) != 1)
            t->must_cancel = 1;
        break;
    default:
        t->must_cancel = 1;
        break;
    }
    return 1;
}

int ctx__task_cancel_future(ctx_loop_future_t *f) { return ctx_loop_task_cancel(task_of(f)); }

int ctx_loop_task_cancelling(const ctx_loop_task_t *t) {
    return t ? atomic_load_explicit(&t->cancel_requests, memory_order_relaxed) : 0;
}

int ctx_loop_task_result(const ctx_loop_task_t *t, void **result) {
    return t ? ctx_loop_future_result(&t->future, result) : CTX_EINVAL;
}

int ctx_loop_task_done(const ctx_loop_task_t *t) { return t ? ctx_loop_future_done(&t->future) : 0; }

void ctx__task_close_all(ctx_loop_t *loop) {
    ctx_loop_task_t *t;
    while ((t = loop->tasks) != NULL) {
        ctx_loop_task_retain(t);
        end_task(t, CTX_LOOP_FUTURE_CANCELLED, CTX_ECANCELLED, NULL, 1);
        ctx_loop_task_release(t);
    }
}
