/* SPDX-License-Identifier: MIT */
/*
 * loop.c — the loop object: asyncio's scheduler laid over a uv_loop_t.
 *
 * asyncio's _run_once does, each iteration: poll for I/O (not blocking if
 * callbacks are ready), move the timers that are due to the ready queue, run
 * the callbacks that were ready at that point.  A ctx_loop_t does the same
 * with four libuv handles of its own on the caller's uv loop:
 *
 *   uv_run iteration:  timers ─► pending ─► idle ─► prepare ─► poll ─► check ─► closing
 *                        │                  │                   │         │
 *               one uv_timer_t:      one uv_idle_t:       one uv_async_t: one uv_check_t:
 *               due records of       active while         moves the inbox runs the ready
 *               the heap go to       records are ready,   (records from   queue as it is
 *               the ready queue      so poll does not     other threads)  on entry
 *                                    block; does nothing  to the ready
 *                                                         queue
 *
 * The ready queue runs in the check phase, right after poll, so what I/O
 * callbacks, the inbox and due timers made ready runs in the same
 * iteration: a request read from a socket starts its task, and a result
 * handed back by a pool worker reaches its callback, without waiting for
 * one more turn of the loop (one more epoll_wait).  The queue is taken
 * whole when the check callback starts, so callbacks scheduled by
 * callbacks run on the next iteration and I/O gets its turn in between
 * (asyncio's fairness).  The timer is armed for the earliest record of the
 * heap only.
 *
 * Staying alive.  The check and idle handles are active only while records
 * are ready, the timer only while the heap holds records, so they keep
 * uv_run going exactly while something is scheduled.  The async handle is
 * unref'd except while `keepalive` is non-zero: pending tasks and wrapped
 * pool futures count there, since they will be woken from elsewhere (a
 * future completed by another thread, a pool worker) and uv_run must not
 * return under them.
 *
 * Threads and the inbox.  Everything but the inbox belongs to the loop
 * thread.  The inbox is a lock-free stack (a Treiber stack: push with one
 * compare-and-swap, take everything with one exchange, newest on top, so
 * the loop reverses what it takes to run it in the order it was handed
 * over).  A thread that hands over records pushes them and calls
 * uv_async_send only if the stack was empty: whoever made it non-empty has
 * a wake-up on its way, and the loop takes the whole stack when it comes,
 * so a burst of completions from pool workers costs one wake-up.  Nothing
 * is locked, so a worker handing over a result never waits for the loop
 * thread, nor the loop thread for a worker (a mutex here made them sleep on
 * each other under load).
 *
 * Closing against handing over.  ctx_loop_close swaps the stack for the
 * CTX__LOOP_INBOX_CLOSED mark: a push either came before (its records are
 * in what close took, and dropped) or sees the mark and is refused
 * (CTX_ECLOSED, the records stay the caller's) — never lost.  A pusher's
 * uv_async_send must not touch the async handle once it is closed, so
 * pushers count themselves in `senders` from before their push to after
 * their send, and close waits for `senders` to read 0 after swapping in
 * the mark (both sequentially consistent: a pusher either sees the mark or
 * is seen by close).  That wait is a few instructions and one write(2)
 * long.
 *
 * "Am I the loop thread?" is answered by comparing `owner` with a
 * per-thread id (never reused); the loop thread stores its id each time
 * one of the module's uv callbacks runs (and in ctx_loop_run), and until
 * then nobody is the owner, so any-thread calls take the inbox, which is
 * always correct.  ctx_loop_run also moves the inbox to the ready queue
 * before it starts: what other threads handed over before the loop ran
 * must not wait for a wake-up that an unref'd async handle would not keep
 * uv_run alive for.
 *
 * Closing.  ctx_loop_close (loop thread, outside any callback) sets
 * `closing`, takes the inbox, drops every record it holds (inbox, ready
 * queue, heap), ends the pending tasks, frees the spare records,
 * then uv_close's the four handles.  Each handle holds a reference to the
 * loop until its close callback, so the memory outlives them; an owned uv
 * loop is then run once (NOWAIT, to let those close callbacks run) and
 * uv_loop_close'd.  From `closing` on, scheduling fails with CTX_ECLOSED
 * and records handed over late are dropped on the thread that hands them
 * over.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

#include <sched.h>
#include <stdio.h>

static _Thread_local uint64_t thread_id; /* 0 until the thread needs one */
static _Thread_local ctx_loop_t *tls_current_loop;
static atomic_uint_fast64_t next_thread_id = 1;

/* A process-wide id for the calling thread, never reused (a dead thread's
 * TLS address may be, which is why an address will not do). */
static uint64_t my_thread_id(void) {
    if (!thread_id)
        thread_id = atomic_fetch_add_explicit(&next_thread_id, 1, memory_order_relaxed);
    return thread_id;
}

/* ---- fork ---- */

atomic_uint ctx__loop_fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_child(void) {
    atomic_fetch_add_explicit(&ctx__loop_fork_generation, 1, memory_order_relaxed);
}

static void fork_install(void) { pthread_atfork(NULL, NULL, fork_child); }

void ctx__loop_fork_watch(void) { pthread_once(&fork_once, fork_install); }

/* In a child of fork(): a callback of the parent's loop that was running
 * when the process forked returned into the module's dispatch.  Nothing
 * more runs; the module's handles stop keeping the uv loop busy or alive
 * (what was scheduled stays where it is, as everything of the loop does in
 * the child).  Returns 1 if so. */
static int forked_stop(ctx_loop_t *loop) {
    if (!ctx__loop_forked(loop))
        return 0;
    if (!loop->handles_closed) {
        uv_idle_stop(&loop->idle);
        uv_check_stop(&loop->check);
        uv_timer_stop(&loop->timer);
        if (loop->async_refd) {
            uv_unref((uv_handle_t *)&loop->async);
            loop->async_refd = 0;
        }
    }
    return 1;
}

/* ---- small helpers ---- */

int ctx__loop_uv_error(int uv_err) {
    switch (uv_err) {
    case 0:
        return 0;
    case UV_EINVAL:
        return CTX_EINVAL;
    case UV_ENOMEM:
        return CTX_ENOMEM;
    case UV_EBUSY:
        return CTX_EBUSY;
    case UV_ECANCELED:
        return CTX_ECANCELLED;
    case UV_ETIMEDOUT:
        return CTX_ETIMEDOUT;
    default:
        return CTX_ESYSTEM;
    }
}

int ctx__loop_on_thread(const ctx_loop_t *loop) {
    uint64_t owner = atomic_load_explicit(&loop->owner, memory_order_relaxed);
    return owner != 0 && owner == thread_id;
}

static void claim_thread(ctx_loop_t *loop) {
    atomic_store_explicit(&loop->owner, my_thread_id(), memory_order_relaxed);
}

static void default_error_handler(ctx_loop_t *loop, int code, const char *what, void *user) {
    (void)user;
    fprintf(stderr, "ctxvar loop %p: %s (%s: %s)\n", (void *)loop, what, ctx_error_name(code),
            ctx_strerror(code));
}

void ctx__loop_report(ctx_loop_t *loop, int code, const char *what) {
    loop->error_fn(loop, code, what, loop->error_user);
}

void ctx__loop_list_drop(ctx__loop_list_t *l) {
    ctx__loop_rec_t *rec = l->head;
    l->head = l->tail = NULL;
    while (rec) {
        ctx__loop_rec_t *next = rec->next;
        rec->next = NULL;
        rec->ops->drop(rec);
        rec = next;
    }
}

/* The module's uv callbacks run between these: they make the thread the
 * loop thread and the loop the current one. */
static ctx_loop_t *dispatch_begin(ctx_loop_t *loop) {
    ctx_loop_t *prev = tls_current_loop;
    tls_current_loop = loop;
    claim_thread(loop);
    loop->dispatching++;
    return prev;
}

static void dispatch_end(ctx_loop_t *loop, ctx_loop_t *prev) {
    loop->dispatching--;
    tls_current_loop = prev;
}

ctx_loop_t *ctx_loop_current(void) { return tls_current_loop; }

/* ---- ready queue ---- */

static void on_check(uv_check_t *check);

/* Poll must not block while records are ready; the idle handle says so. */
static void on_idle(uv_idle_t *idle) { (void)idle; }

void ctx__loop_ready_started(ctx_loop_t *loop) {
    uv_idle_start(&loop->idle, on_idle);
    uv_check_start(&loop->check, on_check);
}

/* Appends `list` (emptied) to the ready queue. */
static void ready_splice(ctx_loop_t *loop, ctx__loop_list_t *list) {
    if (!list->head)
        return;
    if (!loop->ready.head)
        ctx__loop_ready_started(loop);
    ctx__loop_list_splice(&loop->ready, list);
}

static void on_check(uv_check_t *check) {
    ctx_loop_t *loop = CTX__CONTAINER(check, ctx_loop_t, check);
    ctx_loop_t *prev = dispatch_begin(loop);
    /* The queue as it is now; what the callbacks schedule waits. */
    ctx__loop_rec_t *rec = loop->ready.head;
    loop->ready.head = loop->ready.tail = NULL;
    while (rec) {
        if (forked_stop(loop)) { /* left as they are (see fork) */
            loop->ready.head = loop->ready.tail = rec;
            while (loop->ready.tail->next)
                loop->ready.tail = loop->ready.tail->next;
            dispatch_end(loop, prev);
            return;
        }
        ctx__loop_rec_t *next = rec->next;
        rec->next = NULL;
        rec->ops->run(rec);
        rec = next;
    }
    if (!loop->ready.head) {
        uv_idle_stop(&loop->idle);
        uv_check_stop(&loop->check);
    }
    dispatch_end(loop, prev);
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *timer);

static void arm_timer(ctx_loop_t *loop) {
    ctx__loop_rec_t *top = ctx__loop_heap_top(&loop->heap);
    if (!top) {
        uv_timer_stop(&loop->timer);
        return;
    }
    uint64_t now = uv_now(loop->uv);
    uv_timer_start(&loop->timer, on_timer, top->when > now ? top->when - now : 0, 0);
}

static void on_timer(uv_timer_t *timer) {
    ctx_loop_t *loop = CTX__CONTAINER(timer, ctx_loop_t, timer);
    if (forked_stop(loop))
        return;
    ctx_loop_t *prev = dispatch_begin(loop);
    uint64_t now = uv_now(loop->uv);
    ctx__loop_rec_t *top;
    while ((top = ctx__loop_heap_top(&loop->heap)) && top->when <= now) {
        ctx__loop_heap_remove(&loop->heap, top);
        ctx__loop_ready_push(loop, top);
    }
    arm_timer(loop);
    dispatch_end(loop, prev);
}

int ctx__loop_timer_add(ctx_loop_t *loop, ctx__loop_rec_t *rec, uint64_t when) {
    rec->when = when;
    rec->seq = loop->seq++;
    int r = ctx__loop_heap_push(&loop->heap, rec);
    if (r)
        return r;
    if (ctx__loop_heap_top(&loop->heap) == rec)
        arm_timer(loop);
    return 0;
}

void ctx__loop_timer_remove(ctx_loop_t *loop, ctx__loop_rec_t *rec) {
    int was_top = ctx__loop_heap_top(&loop->heap) == rec;
    ctx__loop_heap_remove(&loop->heap, rec);
    if (was_top)
        arm_timer(loop);
}

/* ---- inbox ---- */

/* The stack `top` (newest first) as a list in the order it was pushed. */
static ctx__loop_list_t inbox_list(ctx__loop_rec_t *top) {
    ctx__loop_list_t list = {top, top};
    CTX__LIST_REVERSE(ctx__loop_rec_t, list.head, next);
    return list;
}

/* Moves what other threads handed over to the ready queue. */
static void drain_inbox(ctx_loop_t *loop) {
    ctx__loop_rec_t *top = atomic_load_explicit(&loop->inbox, memory_order_relaxed);
    if (!top || top == CTX__LOOP_INBOX_CLOSED)
        return;
    /* Only close (this thread) swaps in the mark: this takes a list. */
    top = atomic_exchange_explicit(&loop->inbox, NULL, memory_order_acquire);
    ctx__loop_list_t got = inbox_list(top);
    ready_splice(loop, &got);
}

static void on_async(uv_async_t *async) {
    ctx_loop_t *loop = CTX__CONTAINER(async, ctx_loop_t, async);
    if (forked_stop(loop))
        return;
    ctx_loop_t *prev = dispatch_begin(loop);
    drain_inbox(loop);
    dispatch_end(loop, prev);
}

/* Pushes `list` on the inbox and wakes the loop if the inbox was empty;
 * CTX_ECLOSED if the loop closed (list untouched). */
static int post_list(ctx_loop_t *loop, ctx__loop_list_t *list) {
    ctx__loop_rec_t *oldest = list->head, *newest = list->tail;
    CTX__LIST_REVERSE(ctx__loop_rec_t, list->head, next); /* newest first */
    atomic_fetch_add_explicit(&loop->senders, 1, memory_order_seq_cst);
    ctx__loop_rec_t *top = atomic_load_explicit(&loop->inbox, memory_order_seq_cst);
    do {
        if (top == CTX__LOOP_INBOX_CLOSED) {
            atomic_fetch_sub_explicit(&loop->senders, 1, memory_order_release);
            oldest->next = NULL;
            list->head = newest;
            CTX__LIST_REVERSE(ctx__loop_rec_t, list->head, next);
            list->tail = newest;
            return CTX_ECLOSED;
        }
        oldest->next = top;
    } while (!atomic_compare_exchange_weak_explicit(&loop->inbox, &top, newest,
                                                    memory_order_seq_cst, memory_order_seq_cst));
    if (!top) /* else whoever made it non-empty has a wake-up on its way */
        uv_async_send(&loop->async);
    atomic_fetch_sub_explicit(&loop->senders, 1, memory_order_release);
    list->head = list->tail = NULL;
    return 0;
}

void ctx__loop_wake(ctx_loop_t *loop) {
    atomic_fetch_add_explicit(&loop->senders, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&loop->inbox, memory_order_seq_cst) != CTX__LOOP_INBOX_CLOSED)
        uv_async_send(&loop->async);
    atomic_fetch_sub_explicit(&loop->senders, 1, memory_order_release);
}

int ctx__loop_post(ctx_loop_t *loop, ctx__loop_rec_t *rec) {
    ctx__loop_list_t one = {NULL, NULL};
    ctx__loop_list_push(&one, rec);
    return post_list(loop, &one);
}

void ctx__loop_schedule_list(ctx_loop_t *loop, ctx__loop_list_t *list) {
    if (!list->head)
        return;
    if (ctx__loop_on_thread(loop)) {
        if (ctx__loop_closing(loop)) {
            ctx__loop_list_drop(list);
            return;
        }
        ready_splice(loop, list);
        return;
    }
    if (post_list(loop, list) != 0)
        ctx__loop_list_drop(list);
}

void ctx__loop_keepalive(ctx_loop_t *loop, int delta) {
    if (delta < 0 && loop->keepalive == 0)
        return; /* reset by close */
    loop->keepalive = (size_t)((ptrdiff_t)loop->keepalive + delta);
    if (loop->keepalive && !loop->async_refd && !loop->handles_closed) {
        uv_ref((uv_handle_t *)&loop->async);
        loop->async_refd = 1;
    } else if (!loop->keepalive && loop->async_refd) {
        uv_unref((uv_handle_t *)&loop->async);
        loop->async_refd = 0;
    }
}

/* ---- spares ---- */

void ctx__loop_spares_init(ctx_loop_t *loop) {
    loop->spare_handles.size = sizeof(ctx_loop_handle_t);
    loop->spare_calls.size = ctx__loop_call_size();
    loop->spare_tasks.size = ctx__loop_task_size();
    loop->spare_wraps.size = ctx__loop_wrap_size();
    loop->spare_offloads.size = ctx__loop_offload_size();
    loop->spare_handles.limit = CTX__LOOP_SPARES_MIN;
    loop->spare_calls.limit = CTX__LOOP_SPARES_MIN;
    loop->spare_tasks.limit = CTX__LOOP_SPARES_MIN;
    loop->spare_wraps.limit = CTX__LOOP_SPARES_MIN;
    loop->spare_offloads.limit = CTX__LOOP_SPARES_MIN;
}

void ctx__loop_spares_free(ctx_loop_t *loop) {
    ctx__loop_spares_clear(&loop->spare_handles);
    ctx__loop_spares_clear(&loop->spare_calls);
    ctx__loop_spares_clear(&loop->spare_tasks);
    ctx__loop_spares_clear(&loop->spare_wraps);
    ctx__loop_spares_clear(&loop->spare_offloads);
}

/* ---- lifecycle ---- */

static void loop_free(ctx_loop_t *loop) {
    ctx__loop_heap_free(&loop->heap);
    ctx__loop_free(loop, sizeof *loop);
}

int ctx_loop_new(uv_loop_t *uv, ctx_loop_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx__loop_fork_watch();
    ctx_loop_t *loop = ctx__loop_calloc(sizeof *loop);
    if (!loop)
        return CTX_ENOMEM;
    loop->generation = atomic_load_explicit(&ctx__loop_fork_generation, memory_order_relaxed);
    ctx__loop_spares_init(loop);
    if (!uv) {
        uv = ctx__loop_malloc(sizeof *uv);
        if (!uv) {
            loop_free(loop);
            return CTX_ENOMEM;
        }
        int r = uv_loop_init(uv);
        if (r) {
            ctx__loop_free(uv, sizeof *uv);
            loop_free(loop);
            return ctx__loop_uv_error(r) == CTX_ENOMEM ? CTX_ENOMEM : CTX_ESYSTEM;
        }
        loop->owns_uv = 1;
    }
    loop->uv = uv;
    /* The async handle first: the only one whose init can fail, and a
     * failed init leaves nothing to close. */
    int r = uv_async_init(uv, &loop->async, on_async);
    if (r) {
        if (loop->owns_uv) {
            uv_loop_close(uv);
            ctx__loop_free(uv, sizeof *uv);
        }
        loop_free(loop);
        return ctx__loop_uv_error(r) == CTX_ENOMEM ? CTX_ENOMEM : CTX_ESYSTEM;
    }
    uv_unref((uv_handle_t *)&loop->async);
    uv_check_init(uv, &loop->check);
    uv_idle_init(uv, &loop->idle);
    uv_timer_init(uv, &loop->timer);
    loop->handles_open = 4;
    atomic_init(&loop->refs, 1u + 4u); /* the caller's + one per handle */
    atomic_init(&loop->owner, 0);
    atomic_init(&loop->inbox, NULL);
    atomic_init(&loop->senders, 0);
    atomic_init(&loop->awaited, NULL);
    atomic_init(&loop->closing, 0);
    loop->error_fn = default_error_handler;
    *out = loop;
    return 0;
}

uv_loop_t *ctx_loop_uv(const ctx_loop_t *loop) {
    if (!loop || (loop->owns_uv && loop->uv_closed))
        return NULL;
    return loop->uv;
}

int ctx_loop_run(ctx_loop_t *loop, uv_run_mode mode) {
    if (!loop || (mode != UV_RUN_DEFAULT && mode != UV_RUN_ONCE && mode != UV_RUN_NOWAIT))
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    if (loop->running || loop->dispatching)
        return CTX_EBUSY;
    claim_thread(loop);
    loop->running = 1;
    loop->stop_requested = 0;
    drain_inbox(loop); /* handed over before the run: the async handle may
                          not keep uv_run going for it */
    int r = uv_run(loop->uv, mode);
    loop->running = 0;
    return r;
}

int ctx_loop_run_until_done(ctx_loop_t *loop, ctx_loop_future_t *future) {
    if (!loop || !future || future->loop != loop)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    if (loop->running || loop->dispatching)
        return CTX_EBUSY;
    claim_thread(loop);
    loop->running = 1;
    loop->stop_requested = 0;
    drain_inbox(loop);
    ctx__loop_keepalive(loop, +1);
    /* A thread that completes the future wakes the loop even when nothing
     * else of the loop waits for it (no done-callback to hand over). */
    atomic_store_explicit(&loop->awaited, future, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst); /* see ctx__loop_future_complete */
    while (!ctx_loop_future_done(future) && !loop->stop_requested && !ctx__loop_closing(loop))
        uv_run(loop->uv, UV_RUN_ONCE);
    atomic_store_explicit(&loop->awaited, NULL, memory_order_relaxed);
    ctx__loop_keepalive(loop, -1);
    loop->running = 0;
    return ctx_loop_future_done(future) ? 0 : CTX_ENOTDONE;
}

int ctx_loop_stop(ctx_loop_t *loop) {
    if (!loop)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    loop->stop_requested = 1;
    if (!(loop->owns_uv && loop->uv_closed))
        uv_stop(loop->uv);
    return 0;
}

uint64_t ctx_loop_time(const ctx_loop_t *loop) {
    if (!loop || (loop->owns_uv && loop->uv_closed))
        return 0;
    return uv_now(loop->uv);
}

int ctx_loop_is_closed(const ctx_loop_t *loop) {
    return loop ? atomic_load_explicit(&loop->closing, memory_order_acquire) : 1;
}

ctx_loop_t *ctx_loop_retain(ctx_loop_t *loop) {
    if (loop)
        atomic_fetch_add_explicit(&loop->refs, 1, memory_order_relaxed);
    return loop;
}

void ctx_loop_release(ctx_loop_t *loop) {
    if (loop && atomic_fetch_sub_explicit(&loop->refs, 1, memory_order_acq_rel) == 1)
        loop_free(loop);
}

int ctx_loop_set_error_handler(ctx_loop_t *loop, ctx_loop_error_fn fn, void *user) {
    if (!loop)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    loop->error_fn = fn ? fn : default_error_handler;
    loop->error_user = fn ? user : NULL;
    return 0;
}

static void on_handle_closed(uv_handle_t *handle) {
    ctx_loop_t *loop = handle->data;
    loop->handles_open--;
    ctx_loop_release(loop);
}

/* Closes an owned uv loop once the module's handles are gone. */
static int finish_uv(ctx_loop_t *loop) {
    if (!loop->owns_uv || loop->uv_closed)
        return 0;
    /* One iteration without waiting runs the close callbacks (ours, and
     * those of handles the caller closed after an earlier CTX_EBUSY). */
    do
        uv_run(loop->uv, UV_RUN_NOWAIT);
    while (loop->handles_open > 0);
    if (uv_loop_close(loop->uv) != 0)
        return CTX_EBUSY; /* the caller's own handles are still there */
    ctx__loop_free(loop->uv, sizeof *loop->uv);
    loop->uv_closed = 1;
    return 0;
}

int ctx_loop_close(ctx_loop_t *loop) {
    if (!loop)
        return CTX_EINVAL;
    if (ctx__loop_forked(loop))
        return CTX_EFORKED;
    if (loop->handles_closed)
        return finish_uv(loop);
    if (loop->running || loop->dispatching)
        return CTX_EBUSY;
    claim_thread(loop);

    atomic_store_explicit(&loop->closing, 1, memory_order_seq_cst);
    ctx__loop_rec_t *top =
        atomic_exchange_explicit(&loop->inbox, CTX__LOOP_INBOX_CLOSED, memory_order_seq_cst);
    /* Pushers that got in before the mark finish their uv_async_send before
     * the async handle is closed below. */
    while (atomic_load_explicit(&loop->senders, memory_order_acquire) != 0)
        sched_yield();
    ctx__loop_list_t inbox = inbox_list(top);

    /* Drop what is scheduled.  Dropping runs user code (arg_release); it
     * can schedule nothing any more. */
    ctx__loop_list_drop(&inbox);
    ctx__loop_list_drop(&loop->ready);
    while (loop->heap.len) {
        ctx__loop_rec_t *rec = loop->heap.items[loop->heap.len - 1];
        ctx__loop_heap_remove(&loop->heap, rec);
        rec->ops->drop(rec);
    }
    ctx__loop_heap_free(&loop->heap);
    /* Tasks: ending them completes their futures, whose callbacks are
     * dropped in turn (the loop is closing). */
    ctx__task_close_all(loop);
    /* Anything that reached the ready queue meanwhile (nothing should). */
    ctx__loop_list_drop(&loop->ready);

    loop->keepalive = 0;
    if (loop->async_refd) {
        uv_unref((uv_handle_t *)&loop->async);
        loop->async_refd = 0;
    }
    ctx__loop_spares_free(loop);
    loop->handles_closed = 1;
    uv_check_stop(&loop->check);
    uv_idle_stop(&loop->idle);
    uv_timer_stop(&loop->timer);
    loop->check.data = loop->idle.data = loop->timer.data = loop->async.data = loop;
    uv_close((uv_handle_t *)&loop->check, on_handle_closed);
    uv_close((uv_handle_t *)&loop->idle, on_handle_closed);
    uv_close((uv_handle_t *)&loop->timer, on_handle_closed);
    uv_close((uv_handle_t *)&loop->async, on_handle_closed);
    return finish_uv(loop);
}
