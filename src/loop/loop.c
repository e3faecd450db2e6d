/*
 * loop.c — the loop object: asyncio's scheduler laid over a uv_loop_t.
 *
 * asyncio's _run_once does, each iteration: poll for I/O (not blocking if
 * callbacks are ready), move the timers that are due to the ready queue, run
 * the callbacks that were ready when the iteration began.  A ctx_loop_t does
 * the same with three libuv handles of its own on the caller's uv loop:
 *
 *   uv_run iteration:  timers ─► pending ─► idle ─► prepare ─► poll ─► check ─► closing
 *                        │                  │                   │
 *               one uv_timer_t:      one uv_idle_t:       one uv_async_t:
 *               due records of       runs the ready       moves the inbox
 *               the heap go to       queue as it was      (records from other
 *               the ready queue      on entry; active     threads) to the
 *                                    only while records   ready queue
 *                                    are ready, so poll
 *                                    does not block then
 *
 * The ready queue is taken whole at the start of each idle callback, so
 * callbacks scheduled by callbacks run on the next iteration and I/O gets
 * its turn in between (asyncio's fairness).  The timer is armed for the
 * earliest record of the heap only.
 *
 * Staying alive.  The idle handle is active only while records are ready,
 * the timer only while the heap holds records, so both keep uv_run going
 * exactly while something is scheduled.  The async handle is unref'd except
 * while `keepalive` is non-zero: pending tasks and wrapped pool futures
 * count there, since they will be woken from elsewhere (a future completed
 * by another thread, a pool worker) and uv_run must not return under them.
 *
 * Threads.  Everything but the inbox belongs to the loop thread.  Other
 * threads push records into the inbox under `inbox_lock` and call
 * uv_async_send while still holding it; ctx_loop_close sets `closing` under
 * the same lock before it closes the async handle, so no thread can send to
 * a closed handle, and a record is either taken by the loop or refused
 * (CTX_ECLOSED) — never lost.  "Am I the loop thread?" is answered by
 * comparing `owner` with a per-thread id (never reused); the loop thread
 * stores its id each time one of the module's uv callbacks runs (and in
 * ctx_loop_run), and until then nobody is the owner, so any-thread calls
 * take the inbox, which is always correct.  ctx_loop_run also moves the
 * inbox to the ready queue before it starts: what other threads handed
 * over before the loop ran must not wait for a wake-up that an unref'd
 * async handle would not keep uv_run alive for.
 *
 * Closing.  ctx_loop_close (loop thread, outside any callback) sets
 * `closing`, drops every record it holds (inbox, ready queue, heap), ends
 * the pending tasks, then uv_close's the three handles.  Each handle holds a
 * reference to the loop until its close callback, so the memory outlives
 * them; an owned uv loop is then run once (NOWAIT, to let those close
 * callbacks run) and uv_loop_close'd.  From `closing` on, scheduling fails
 * with CTX_ECLOSED and records handed over late are dropped on the thread
 * that hands them over.
 */
#define _POSIX_C_SOURCE 200809L
#include "loop/loop_internal.h"

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

static void on_idle(uv_idle_t *idle);

void ctx__loop_ready_push(ctx_loop_t *loop, ctx__loop_rec_t *rec) {
    ctx__loop_list_push(&loop->ready, rec);
    uv_idle_start(&loop->idle, on_idle); /* a no-op when already active */
}

static void on_idle(uv_idle_t *idle) {
    ctx_loop_t *loop = CTX__CONTAINER(idle, ctx_loop_t, idle);
    ctx_loop_t *prev = dispatch_begin(loop);
    /* The queue as it is now; what the callbacks schedule waits. */
    ctx__loop_rec_t *rec = loop->ready.head;
    loop->ready.head = loop->ready.tail = NULL;
    while (rec) {
        ctx__loop_rec_t *next = rec->next;
        rec->next = NULL;
        rec->ops->run(rec);
        rec = next;
    }
    if (!loop->ready.head)
        uv_idle_stop(&loop->idle);
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

/* Moves what other threads handed over to the ready queue. */
static void drain_inbox(ctx_loop_t *loop) {
    ctx__loop_list_t got;
    pthread_mutex_lock(&loop->inbox_lock);
    got = loop->inbox;
    loop->inbox.head = loop->inbox.tail = NULL;
    pthread_mutex_unlock(&loop->inbox_lock);
    if (got.head) {
        ctx__loop_list_splice(&loop->ready, &got);
        uv_idle_start(&loop->idle, on_idle);
    }
}

static void on_async(uv_async_t *async) {
    ctx_loop_t *loop = CTX__CONTAINER(async, ctx_loop_t, async);
    ctx_loop_t *prev = dispatch_begin(loop);
    drain_inbox(loop);
    dispatch_end(loop, prev);
}

/* Appends `list` to the inbox and wakes the loop; CTX_ECLOSED if closing
 * (list untouched). */
static int post_list(ctx_loop_t *loop, ctx__loop_list_t *list) {
    pthread_mutex_lock(&loop->inbox_lock);
    if (atomic_load_explicit(&loop->closing, memory_order_relaxed)) {
        pthread_mutex_unlock(&loop->inbox_lock);
        return CTX_ECLOSED;
    }
    ctx__loop_list_splice(&loop->inbox, list);
    uv_async_send(&loop->async); /* under the lock: the handle is open */
    pthread_mutex_unlock(&loop->inbox_lock);
    return 0;
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
        ctx__loop_list_splice(&loop->ready, list);
        uv_idle_start(&loop->idle, on_idle);
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

/* ---- lifecycle ---- */

static void loop_free(ctx_loop_t *loop) {
    pthread_mutex_destroy(&loop->inbox_lock);
    ctx__loop_heap_free(&loop->heap);
    ctx__loop_free(loop, sizeof *loop);
}

int ctx_loop_new(uv_loop_t *uv, ctx_loop_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_loop_t *loop = ctx__loop_calloc(sizeof *loop);
    if (!loop)
        return CTX_ENOMEM;
    if (pthread_mutex_init(&loop->inbox_lock, NULL) != 0) {
        ctx__loop_free(loop, sizeof *loop);
        return CTX_ESYSTEM;
    }
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
    uv_idle_init(uv, &loop->idle);
    uv_timer_init(uv, &loop->timer);
    loop->handles_open = 3;
    atomic_init(&loop->refs, 1u + 3u); /* the caller's + one per handle */
    atomic_init(&loop->owner, 0);
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
    if (ctx__loop_closing(loop))
        return CTX_ECLOSED;
    if (loop->running || loop->dispatching)
        return CTX_EBUSY;
    claim_thread(loop);
    loop->running = 1;
    loop->stop_requested = 0;
    drain_inbox(loop);
    ctx__loop_keepalive(loop, +1);
    while (!ctx_loop_future_done(future) && !loop->stop_requested && !ctx__loop_closing(loop))
        uv_run(loop->uv, UV_RUN_ONCE);
    ctx__loop_keepalive(loop, -1);
    loop->running = 0;
    return ctx_loop_future_done(future) ? 0 : CTX_ENOTDONE;
}

int ctx_loop_stop(ctx_loop_t *loop) {
    if (!loop)
        return CTX_EINVAL;
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
    if (loop->handles_closed)
        return finish_uv(loop);
    if (loop->running || loop->dispatching)
        return CTX_EBUSY;
    claim_thread(loop);

    ctx__loop_list_t inbox;
    pthread_mutex_lock(&loop->inbox_lock);
    atomic_store_explicit(&loop->closing, 1, memory_order_release);
    inbox = loop->inbox;
    loop->inbox.head = loop->inbox.tail = NULL;
    pthread_mutex_unlock(&loop->inbox_lock);

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
    loop->handles_closed = 1;
    uv_idle_stop(&loop->idle);
    uv_timer_stop(&loop->timer);
    loop->idle.data = loop->timer.data = loop->async.data = loop;
    uv_close((uv_handle_t *)&loop->idle, on_handle_closed);
    uv_close((uv_handle_t *)&loop->timer, on_handle_closed);
    uv_close((uv_handle_t *)&loop->async, on_handle_closed);
    return finish_uv(loop);
}
