/* SPDX-License-Identifier: MIT */
/*
 * timer.c — the one timer facility behind every deadline.
 *
 * A binary min-heap of scopes keyed by deadline, one mutex, one condition
 * variable on CLOCK_MONOTONIC, and one thread:
 *
 *     heap[0] = earliest            the thread sleeps until `armed` =
 *       ├── heap[1]                 heap[0]->deadline (or, when the heap is
 *       │     └── ...               empty, until it has been idle for
 *       └── heap[2]                 CTX__TIMER_LINGER_NS, then it exits)
 *
 * Each scope in the heap knows its slot (heap_slot, under the mutex), so a
 * scope cancelled or freed before its deadline leaves in O(log n): nothing
 * is left behind for the thread to skip later.  The heap holds no
 * reference: an entry is a weak pointer that the scope removes before it
 * is freed.  When a deadline passes the thread pops the entry and takes a
 * reference only if the scope is not already dying (try_retain, safe since
 * a dying scope must take this mutex to remove itself before its memory
 * goes), then, with the mutex released, cancels it with CTX_EDEADLINE —
 * which runs the cancellation callbacks on this thread.
 *
 * Waking the thread costs a futex call, so an insertion signals it only
 * when the new deadline is earlier than the time it is armed for.  A
 * steady stream of scopes with similar timeouts that are released before
 * they expire (the common case: requests that finish in time) therefore
 * costs a lock, a sift and an unlock each way, and wakes the thread at
 * most once per armed period.
 *
 * Lifetime: the thread is started by the first deadline (and again after it
 * exited); starting waits for it to make its ctxvar thread state (it runs
 * callbacks in captured contexts, which needs one), so an allocation
 * failure there is reported to the caller that added the deadline, never
 * discovered later.  It exits after a second with nothing to do, freeing
 * the heap, and ctx_cancel_timer_release stops it at once (for leak checks).
 * Joins happen under the mutex, only of a thread that has already left
 * every library call.  Signals are blocked in the thread.
 *
 * fork(): pthread_atfork handlers hold this file's mutex and the callback
 * wait mutex across the fork, so both are consistent in the child, where
 * the thread does not exist: the child's handler forgets it (state NONE)
 * and flags a restart, done by the next call that adds a deadline or waits.
 */
#include <signal.h>

#include "cancel/cancel_internal.h"
#include "common/common.h"
#include "core/alloc.h"

#define CTX__TIMER_LINGER_NS ((int64_t)1000000000)

enum { T_NONE, T_STARTING, T_RUNNING, T_FAILED, T_EXITING, T_EXITED };

static struct timer {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int monotonic;
    int init_error;
    ctx_cancel_scope_t **heap;
    size_t size, cap;
    int thread; /* T_* */
    pthread_t tid;
    int stopping;
    int start_error;
    int64_t armed;
    uint64_t fired, starts;
    atomic_int restart; /* set in a fork child with deadlines pending */
} T = {.mutex = PTHREAD_MUTEX_INITIALIZER, .armed = CTX__NO_DEADLINE};

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* ---- fork ---- */

static void fork_prepare(void) {
    pthread_mutex_lock(&T.mutex);
    pthread_mutex_lock(&ctx__cancel_wait_mutex);
}

static void fork_parent(void) {
    pthread_mutex_unlock(&ctx__cancel_wait_mutex);
    pthread_mutex_unlock(&T.mutex);
}

static void fork_child(void) {
    pthread_mutex_unlock(&ctx__cancel_wait_mutex);
    pthread_mutex_unlock(&T.mutex);
    /* Waiters of other threads do not exist here: fresh condition variables. */
    pthread_cond_init(&ctx__cancel_wait_cond, NULL);
    ctx__cond_init_monotonic(&T.cond, &T.monotonic);
    T.thread = T_NONE;
    T.stopping = 0;
    T.armed = CTX__NO_DEADLINE;
    atomic_store(&T.restart, T.size > 0);
}

static void init_once(void) {
    if (ctx__cond_init_monotonic(&T.cond, &T.monotonic) ||
        pthread_atfork(fork_prepare, fork_parent, fork_child))
        T.init_error = CTX_ESYSTEM;
}

static int init(void) {
    pthread_once(&once, init_once);
    return T.init_error;
}

/* ---- the heap (T.mutex held) ---- */

static void place(size_t i, ctx_cancel_scope_t *s) {
    T.heap[i] = s;
    s->heap_slot = i;
}

static void sift_up(size_t i) {
    ctx_cancel_scope_t *s = T.heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (T.heap[parent]->deadline <= s->deadline)
            break;
        place(i, T.heap[parent]);
        i = parent;
    }
    place(i, s);
}

static void sift_down(size_t i) {
    ctx_cancel_scope_t *s = T.heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= T.size)
            break;
        if (child + 1 < T.size && T.heap[child + 1]->deadline < T.heap[child]->deadline)
            child++;
        if (T.heap[child]->deadline >= s->deadline)
            break;
        place(i, T.heap[child]);
        i = child;
    }
    place(i, s);
}

static void remove_at(size_t i) {
    T.heap[i]->heap_slot = CTX__NO_HEAP_SLOT;
    ctx_cancel_scope_t *last = T.heap[--T.size];
    if (i == T.size)
        return;
    place(i, last);
    if (i > 0 && last->deadline < T.heap[(i - 1) / 2]->deadline)
        sift_up(i);
    else
        sift_down(i);
}

/* ---- the thread ---- */

/* Decides, with the mutex held, whether the idle thread should exit; if so
 * hands the empty heap's memory to *heap / *cap for freeing outside. */
static int should_exit(int64_t now, int64_t *idle_since, ctx_cancel_scope_t ***heap, size_t *cap) {
    if (T.stopping)
        return 1;
    if (T.size) {
        *idle_since = 0;
        T.armed = T.heap[0]->deadline;
        return 0;
    }
    if (!*idle_since)
        *idle_since = now;
    if (now - *idle_since < CTX__TIMER_LINGER_NS) {
        T.armed = *idle_since + CTX__TIMER_LINGER_NS;
        return 0;
    }
    *heap = T.heap;
    *cap = T.cap;
    T.heap = NULL;
    T.cap = 0;
    return 1;
}

/* Fires every due deadline, then sleeps; returns when it should exit (with
 * the mutex held). */
static void timer_loop(ctx_cancel_scope_t ***heap, size_t *cap) {
    int64_t idle_since = 0;
    for (;;) {
        int64_t now = ctx__monotonic_ns();
        if (!T.stopping && T.size && T.heap[0]->deadline <= now) {
            ctx_cancel_scope_t *s = T.heap[0];
            remove_at(0);
            T.fired++;
            int live = ctx__cancel_scope_try_retain(s);
            pthread_mutex_unlock(&T.mutex);
            if (live) {
                ctx__cancel_tree(s, CTX_EDEADLINE, NULL);
                ctx_cancel_scope_release(s);
            }
            pthread_mutex_lock(&T.mutex);
            continue;
        }
        if (should_exit(now, &idle_since, heap, cap))
            return;
        struct timespec ts;
        ctx__cond_deadline(T.monotonic, T.armed - now, &ts);
        pthread_cond_timedwait(&T.cond, &T.mutex, &ts);
    }
}

static void *timer_main(void *arg) {
    (void)arg;
    int err = 0;
    ctx__tstate_t *ts = ctx__tstate_get(&err);
    pthread_mutex_lock(&T.mutex);
    if (!ts) {
        T.start_error = err;
        T.thread = T_FAILED;
        pthread_cond_broadcast(&T.cond);
        pthread_mutex_unlock(&T.mutex);
        return NULL;
    }
    T.thread = T_RUNNING;
    pthread_cond_broadcast(&T.cond);
    ctx_cancel_scope_t **heap = NULL;
    size_t cap = 0;
    timer_loop(&heap, &cap);
    T.thread = T_EXITING;
    T.armed = CTX__NO_DEADLINE;
    pthread_mutex_unlock(&T.mutex);
    /* Outside the mutex: both may call the allocator's hooks, and the
     * thread's contexts may release values. */
    ctx__free(heap, cap * sizeof *heap);
    ctx_thread_release();
    pthread_mutex_lock(&T.mutex);
    T.thread = T_EXITED;
    pthread_cond_broadcast(&T.cond);
    pthread_mutex_unlock(&T.mutex);
    return NULL;
}

/* Starts the thread (T.mutex held, state NONE) and waits until it runs. */
static int start_locked(void) {
    T.thread = T_STARTING;
    T.start_error = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&T.tid, NULL, timer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        T.thread = T_NONE;
        pthread_cond_broadcast(&T.cond);
        return CTX_ESYSTEM;
    }
    while (T.thread == T_STARTING)
        pthread_cond_wait(&T.cond, &T.mutex);
    if (T.thread == T_RUNNING) {
        T.starts++;
        return 0;
    }
    pthread_join(T.tid, NULL); /* T_FAILED: it has left every library call */
    T.thread = T_NONE;
    pthread_cond_broadcast(&T.cond);
    return T.start_error;
}

/* Makes sure a thread runs (T.mutex held; may wait, releasing it). */
static int ensure_locked(void) {
    for (;;) {
        switch (T.thread) {
        case T_RUNNING:
            if (!T.stopping)
                return 0;
            if (pthread_equal(T.tid, pthread_self())) {
                /* A callback on the timer thread adds a deadline while a
                 * release waits for the thread to stop: the thread stays
                 * (the release sees the entry and gives up: CTX_EBUSY). */
                T.stopping = 0;
                pthread_cond_broadcast(&T.cond);
                return 0;
            }
            break;
        case T_EXITED:
            pthread_join(T.tid, NULL);
            T.thread = T_NONE;
            continue;
        case T_NONE:
            if (!T.stopping)
                return start_locked();
            break;
        default: /* starting, exiting */
            break;
        }
        pthread_cond_wait(&T.cond, &T.mutex);
    }
}

/* ---- what scopes call ---- */

/* Makes room for one more entry (T.mutex held; may release it to
 * allocate).  0 or CTX_ENOMEM. */
static int reserve_locked(void) {
    if (T.size < T.cap)
        return 0;
    size_t want = T.cap ? T.cap * 2 : 64;
    pthread_mutex_unlock(&T.mutex);
    ctx_cancel_scope_t **fresh = ctx__malloc(want * sizeof *fresh);
    pthread_mutex_lock(&T.mutex);
    if (!fresh)
        return CTX_ENOMEM;
    ctx_cancel_scope_t **old = fresh;
    size_t old_cap = want;
    if (T.cap < want) { /* else another thread grew it meanwhile */
        if (T.size)
            memcpy(fresh, T.heap, T.size * sizeof *fresh);
        old = T.heap;
        old_cap = T.cap;
        T.heap = fresh;
        T.cap = want;
    }
    pthread_mutex_unlock(&T.mutex);
    ctx__free(old, old_cap * sizeof *old);
    pthread_mutex_lock(&T.mutex);
    return 0;
}

int ctx__cancel_timer_add(ctx_cancel_scope_t *s) {
    int r = init();
    if (r)
        return r;
    pthread_mutex_lock(&T.mutex);
    /* Both steps may release the mutex, so repeat until both hold at once. */
    while ((r = ensure_locked()) == 0 && T.size == T.cap)
        if ((r = reserve_locked()) != 0)
            break;
    if (r == 0) {
        place(T.size++, s);
        sift_up(T.size - 1);
        if (s->deadline < T.armed) {
            T.armed = s->deadline;
            pthread_cond_broadcast(&T.cond);
        }
    }
    pthread_mutex_unlock(&T.mutex);
    return r;
}

void ctx__cancel_timer_remove(ctx_cancel_scope_t *s) {
    pthread_mutex_lock(&T.mutex);
    if (s->heap_slot != CTX__NO_HEAP_SLOT)
        remove_at(s->heap_slot);
    pthread_mutex_unlock(&T.mutex);
}

void ctx__cancel_timer_ensure(void) {
    if (!atomic_load_explicit(&T.restart, memory_order_relaxed))
        return;
    pthread_mutex_lock(&T.mutex);
    if (atomic_exchange(&T.restart, 0) && T.size)
        ensure_locked();
    pthread_mutex_unlock(&T.mutex);
}

/* ---- public ---- */

int ctx_cancel_stats(ctx_cancel_stats_t *out) {
    if (!out)
        return CTX_EINVAL;
    ctx_cancel_stats_t st = CTX_STRUCT_INIT(ctx_cancel_stats_t);
    if (init() == 0) {
        pthread_mutex_lock(&T.mutex);
        st.timers_pending = T.size;
        st.timers_fired = T.fired;
        st.thread_starts = T.starts;
        st.thread_running = T.thread == T_STARTING || T.thread == T_RUNNING || T.thread == T_EXITING;
        pthread_mutex_unlock(&T.mutex);
    }
    return ctx__struct_out(out, &st, sizeof st);
}

int ctx_cancel_timer_release(void) {
    if (init())
        return 0;
    pthread_mutex_lock(&T.mutex);
    if (T.size || (T.thread != T_NONE && pthread_equal(T.tid, pthread_self()))) {
        pthread_mutex_unlock(&T.mutex);
        return CTX_EBUSY;
    }
    for (;;) {
        if (T.thread == T_NONE)
            break;
        if (T.thread == T_EXITED) {
            pthread_join(T.tid, NULL);
            T.thread = T_NONE;
            continue;
        }
        if (T.size) { /* added while a start we waited for completed */
            T.stopping = 0;
            pthread_cond_broadcast(&T.cond);
            pthread_mutex_unlock(&T.mutex);
            return CTX_EBUSY;
        }
        if (T.thread == T_RUNNING) {
            T.stopping = 1; /* from now on additions wait for us */
            pthread_cond_broadcast(&T.cond);
        }
        pthread_cond_wait(&T.cond, &T.mutex);
    }
    T.stopping = 0;
    pthread_cond_broadcast(&T.cond);
    ctx_cancel_scope_t **heap = NULL;
    size_t cap = 0;
    if (!T.size) {
        heap = T.heap;
        cap = T.cap;
        T.heap = NULL;
        T.cap = 0;
    }
    pthread_mutex_unlock(&T.mutex);
    ctx__free(heap, cap * sizeof *heap);
    return 0;
}
