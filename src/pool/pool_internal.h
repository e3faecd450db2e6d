/* SPDX-License-Identifier: MIT */
/*
 * pool_internal.h — what the pool module's files share (internal, `ctx__`).
 *
 * The record below is at once the queued task and its future: submit makes
 * (or reuses) exactly one of them, the core's O(1) context copy lives in it
 * (core/embed.c), the queue links through it, the worker runs it, and the
 * user waits on it.  The files:
 *
 *   executor.c     the public pool API and the workers (run a task, end it)
 *   queue.c        the queue and the sleep/wake-up protocol
 *   recycle.c      record recycling (no malloc/free per task)
 *   propagation.c  the propagation policy: which context a task gets
 *   future.c       the state machine, waiting and done-callbacks
 *   group.c        groups (Go's errgroup): wait for all, the first failure
 *                  cancels the rest
 *   clock.c        the stamps behind queue waits
 *   stack.c        the optional captured call stack
 *   bind.c, thread.c  bound callables and context-inheriting threads
 *
 * States (f->state, atomic):
 *
 *     PENDING ──(worker pops it, pool lock)──► RUNNING ──► COMPLETED
 *        │                                        │    ──► FAILED
 *        │                                        └──────► CANCELLED (task
 *        │                                                 returned ECANCELLED)
 *        └──(cancel or shutdown-cancel, pool lock)──► CANCELLING ──► CANCELLED
 *
 * Every change out of PENDING happens under the pool lock, on a record
 * that is in the pool's FIFO (queue.c).  A cancelled record stays linked in
 * the FIFO until a worker pops and skips it (or shutdown takes it): the
 * queue's reference keeps its memory until then.  The change to a final
 * state is made by exactly one thread (the worker, or whoever won
 * CANCELLING) in ctx__future_finish, and nothing but reads happens
 * afterwards.
 */
#ifndef CTX_POOL_INTERNAL_H
#define CTX_POOL_INTERNAL_H

#include <ctxvar/pool.h>

#include "cancel/cancel_internal.h"
#include "common/debug.h"
#include "core/core.h"
#include "core/reserve.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
    CTX__F_PENDING = CTX_POOL_FUTURE_PENDING,
    CTX__F_RUNNING = CTX_POOL_FUTURE_RUNNING,
    CTX__F_COMPLETED = CTX_POOL_FUTURE_COMPLETED,
    CTX__F_FAILED = CTX_POOL_FUTURE_FAILED,
    CTX__F_CANCELLED = CTX_POOL_FUTURE_CANCELLED,
    CTX__F_CANCELLING = 5 /* taken out of the queue; being finished */
};

/* Frames kept when a submit captures its call stack. */
#define CTX__STACK_MAX 32

typedef struct ctx__done_cb {
    struct ctx__done_cb *next;
    ctx_pool_future_done_fn fn;
    void *user;
    ctx_context_t *context; /* private copy captured at add time */
} ctx__done_cb_t;

/* The record, laid out by who touches what (records are 64-byte aligned,
 * future.c).  A fire-and-forget task touches lines 0 and 1 only: the
 * submitter writes them, the worker reads and writes them, and nothing else
 * crosses between processors.  Line 2 onwards is for futures (waiters,
 * callbacks, stamps) and the captured stack. */
struct ctx_pool_future {
    /* ---- line 0: the task ---- */
    /* A private list's link: records taken by shutdown or skipped by a pop
     * (queue.c), spares (recycle.c).  (In the queue a record is a slot's
     * pointer, not a link.) */
    struct ctx_pool_future *link;
    /* The task: written at submit, read by the one thread that runs or
     * cancels it. */
    ctx_pool_task_fn fn;
    void *arg;
    void (*arg_release)(void *arg);
    /* The outcome: written before the final state is published. */
    void *result;
    atomic_int state;
    atomic_uint refs;
    int error;
    /* 1 if a future was handed out: the record then holds a pool reference
     * and may have waiters and callbacks; 0 for fire-and-forget. */
    uint8_t pinned;
    /* 1 if the submit stamped submit_ticks (every task with a future, one
     * fire-and-forget task in CTX__POOL_TIME_EVERY: clock.c). */
    uint8_t timed;
    /* 1 while context_storage holds the task's private context (from submit
     * until the task ran or was cancelled). */
    uint8_t has_context;
    uint8_t has_stack; /* stack_depth > 0: never recycled */
    /* The task's cancellation scope (src/cancel), checked when a worker
     * takes the task (a task whose scope is cancelled never runs): NULL
     * for a task whose context has none; for a fire-and-forget task the
     * scope its context holds (borrowed from it: valid until the context
     * is dropped); for a task with a future (`pinned`) the record's own
     * reference to the task's own scope, a child made at submit, which
     * ctx_pool_future_cancel cancels (released with the record). */
    ctx_cancel_scope_t *scope;

    /* ---- line 1: the task's context ---- */
    /* A context embedded in the record (core/embed.c), so that a task costs
     * no context allocation and no cross-thread free. */
    struct ctx_context context_storage;
    void (*result_release)(void *result);
    /* A record with a future (`pinned`) holds a pool reference until it is
     * freed, so a cancel through a future never touches a freed pool. */
    ctx_pool_t *pool;
    /* The group the task belongs to (retained until the task ended), or
     * NULL (group.c). */
    ctx_pool_group_t *group;

    /* ---- line 2: futures ---- */
    atomic_int cancel_requested; /* the flag a running task may poll */
    unsigned stack_depth;
    uint64_t submit_ticks; /* stamps: see clock.c */
    /* 0 until the task starts; written by the worker while others may read
     * it (ctx_pool_future_queue_wait on a running task), hence atomic. */
    _Atomic uint64_t start_ticks;
    atomic_int waiters;                  /* threads blocked in ctx_pool_future_wait */
    _Atomic(ctx__done_cb_t *) callbacks; /* LIFO; CTX__CB_DONE once ended */
    void *block;                         /* what the allocator returned (future.c) */
    struct ctx_pool_future *next_batch;  /* spare batches (recycle.c) */
    CTX__DEBUG_MEMBER                    /* CTX_DEBUG: live or released (future.c) */
    void *stack[];                       /* stack_depth captured return addresses */
};

/* CTX_DEBUG (common/debug.h): the record's word while a future or a task
 * holds it. */
#define CTX__KIND_FUTURE CTX__DEBUG_KIND(0x46555452u, "future", "already released")

/* The size of a public struct's 1.0 layout, up to its member `last`: a
 * caller's struct smaller than this is refused (the growth rule,
 * common/common.h). */
#define CTX__SIZE_1_0(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))

/* ---- future.c ---- */

/* In a fork() child: makes the locks and conditions futures wait on fresh
 * (threads of the parent may have held them). */
void ctx__future_after_fork(void);

/* A new record with one reference, state PENDING and room for
 * `stack_depth` frames, or NULL (out of memory). */
ctx_pool_future_t *ctx__future_alloc(unsigned stack_depth);

/* Makes `f` (memory of a record with no stack, from
 * ctx__future_release_keep) a fresh record, as ctx__future_alloc(0) would
 * return it, except that the future part (line 2) is left as it was:
 * ctx__future_init_pinned makes that fresh too, for a record that gets a
 * future or a stamp. */
void ctx__future_init(ctx_pool_future_t *f);
void ctx__future_init_pinned(ctx_pool_future_t *f);

/* Drops one reference.  If it was the last and the record has no captured
 * stack, the record's result is released and its memory returned for
 * reuse (to be recycled or freed with ctx__future_free_memory); otherwise
 * behaves as ctx_pool_future_release and returns NULL. */
ctx_pool_future_t *ctx__future_release_keep(ctx_pool_future_t *f);

/* Frees the memory of a record returned by ctx__future_release_keep. */
void ctx__future_free_memory(ctx_pool_future_t *f);

/* Releases the record's embedded context if it holds one (f->context
 * becomes NULL).  The context must not be entered. */
void ctx__future_drop_context(ctx_pool_future_t *f);

/* Frees a record that was never handed to a queue (a failed submit),
 * releasing its context if it has one; never calls user code. */
void ctx__future_discard(ctx_pool_future_t *f);

/* Ends the future: stores the outcome, calls arg_release, publishes the
 * final `state`, wakes waiters and runs the done-callbacks.  Called exactly
 * once per record, by the thread that ran or cancelled the task, while the
 * pool's reference is still held.  f->context must already be released. */
void ctx__future_finish(ctx_pool_future_t *f, int state, int error, void *result);

/* Blocks the calling thread, `lock` held on entry and on return, until
 * done(arg) holds, `timeout_ns` passed (negative: no limit), or the
 * calling thread's current cancellation scope is cancelled (also by its
 * deadline passing: then it is cancelled here).  `cond` goes with `lock`
 * and waits on CLOCK_MONOTONIC if `monotonic`.  A wake-up registered on
 * the scope broadcasts `cond` under `lock`; done(arg) must be made true
 * under `lock` followed by a broadcast of `cond`, or be watched through
 * `waiters` (incremented while this sleeps) as the futures' are.
 * Returns 0 (done), CTX_ETIMEDOUT, CTX_ECANCELLED / CTX_EDEADLINE (the
 * scope; done(arg) false). */
int ctx__pool_block(pthread_mutex_t *lock, pthread_cond_t *cond, int monotonic,
                    bool (*done)(void *arg), void *arg, atomic_int *waiters,
                    int64_t timeout_ns);

/* ---- the pool (executor.c, queue.c, recycle.c, propagation.c) ---- */

/* A propagation policy, resolved (never CTX_POOL_PROPAGATE_DEFAULT).  In a
 * pool it owns a reference to `context` and to each variable of
 * `allowlist`; per submit it borrows them. */
typedef struct ctx__policy {
    ctx_pool_propagation_t kind;
    ctx_context_t *context;      /* CTX_POOL_PROPAGATE_CONTEXT */
    ctx_var_t *const *allowlist; /* CTX_POOL_PROPAGATE_ALLOWLIST */
    size_t allowlist_len;
} ctx__policy_t;

/* A task as the queue carries it (queue.c): a light task, or a record.  A
 * light task is a fire-and-forget submit that needs nothing but its
 * function, its argument and its context's map (ctx_pool_submit without a
 * future, no stamp, no options that need a record): it costs 32 bytes of a
 * queue segment and no allocation.  Everything else is a record
 * (fn == ctx__slot_record, arg = the record). */
typedef struct ctx__slot {
    ctx_pool_task_fn fn;
    void *arg;
    ctx__hamt_t map; /* a light task's map (one reference) */
} ctx__slot_t;

/* The `fn` of a slot that carries a record (never called). */
int ctx__slot_record(void *arg, void **result);

/* A slot in a segment: `fn` is written last (release) and read first
 * (acquire): non-NULL means the slot is published. */
typedef struct ctx__qslot {
    _Atomic(ctx_pool_task_fn) fn;
    void *arg;
    ctx__hamt_t map;
} ctx__qslot_t;

/* Slots per queue segment: a segment is about 4 KB. */
#define CTX__SEGMENT_SLOTS 127

typedef struct ctx__segment {
    _Atomic(struct ctx__segment *) next;
    ctx__qslot_t slots[CTX__SEGMENT_SLOTS];
} ctx__segment_t;

/* References to maps a worker still has to drop, by map (propagation.c). */
typedef struct ctx__map_debt {
    ctx__hamt_t map;
    unsigned count;
} ctx__map_debt_t;

#define CTX__POOL_MAP_DEBTS 4

/* Records a worker has collected for recycling, handed to the pool by the
 * batch (recycle.c). */
#define CTX__POOL_SPARE_BATCH 32

/* One fire-and-forget task in this many is stamped for queue-wait stats
 * (clock.c); every task with a future is. */
#define CTX__POOL_TIME_EVERY 16

/* One per worker, padded to its own cache lines: everything in it is
 * written by that worker only, except `wake` and the idle links (queue.c,
 * under the idle lock). */
typedef union ctx__worker {
    struct {
        ctx_pool_t *pool;
        pthread_t thread;
        /* Outcome counters and the longest queue wait, bumped once per
         * task by this worker (ctx_pool_stats adds them up). */
        atomic_uint_fast64_t completed;
        atomic_uint_fast64_t failed;
        atomic_uint_fast64_t cancelled;
        atomic_uint_fast64_t max_wait_ticks;
        /* 1 from the pop of a task (under the pool lock) until its future
         * has ended and its callbacks have run: ctx_pool_stats' `running`. */
        atomic_int busy;
        /* Dead records on their way to the pool's spare batches. */
        ctx_pool_future_t *dead;
        unsigned dead_count;
        /* Map references of finished light tasks not dropped yet. */
        ctx__map_debt_t debts[CTX__POOL_MAP_DEBTS];
        /* Polling pays off lately (queue.c): found work in recent polls. */
        unsigned poll_credit;
        unsigned waits; /* times it went looking for work (a counter) */
        /* Parking (queue.c): posted once per wake-up. */
        sem_t wake;
        union ctx__worker *idle_next; /* under idle_lock */
        bool idle;                    /* under idle_lock: on the idle stack */
        int cpu;                      /* under idle_lock: where it parked (-1: unknown) */
    } w;
    char pad[384];
} ctx__worker_t;

/* How long a worker polls for work before it parks, in microseconds
 * (queue.c). */
#ifndef CTX__POOL_POLL_US
#define CTX__POOL_POLL_US 5
#endif

/* Spare-record batches a pool keeps at most (recycle.c). */
#define CTX__POOL_SPARE_BATCHES 64

struct ctx_pool {
    /* ---- fixed at creation ---- */
    size_t nthreads;
    ctx__worker_t *workers;
    size_t queue_capacity; /* 0: unbounded */
    ctx_pool_full_t when_full;
    ctx__policy_t policy;
    int capture_stack;
    unsigned max_spinners; /* workers allowed to poll for work at once */
    unsigned polls;        /* pauses a worker polls for before it parks */
    unsigned generation;   /* the fork generation it was made in (executor.c) */
    atomic_size_t refs;

    /* The groups below are written by different threads at different
     * times; CTX__PAD keeps each on cache lines of its own (the struct is
     * allocated with malloc, so padding rather than alignment). */
#define CTX__PAD(name) char name[64]
    CTX__PAD(pad0);

    /* ---- the producers' side, under `tail_lock` (queue.c) ---- */
    pthread_mutex_t tail_lock;
    ctx__segment_t *tail_segment;
    unsigned tail_slot;  /* next free slot in tail_segment */
    bool closed;         /* shutdown has begun: pushes refuse */
    /* Slots ever published (tasks submitted); written under tail_lock,
     * read without it by consumers. */
    atomic_uint_fast64_t published;
    atomic_size_t room_waiters; /* submitters waiting on `room` (bounded) */
    pthread_cond_t room;        /* with tail_lock */
    CTX__PAD(pad1);
    /* A segment ready for the next producer that needs one, or NULL. */
    _Atomic(ctx__segment_t *) spare_segment;
    CTX__PAD(pad2);

    /* ---- the consumers' side, under `lock` ---- */
    pthread_mutex_t lock;
    ctx__segment_t *head_segment;
    unsigned head_slot;
    bool backlog; /* more slots were published behind the last taken */
    /* Tasks that left PENDING in the queue (taken, or cancelled while
     * queued): queued = published - removed.  Written under the lock, read
     * without it by workers deciding whether to park. */
    atomic_uint_fast64_t removed;
    atomic_bool stopping; /* written under the lock */
    bool cancel_all;      /* a CANCEL shutdown: workers take nothing more */
    size_t live_workers; /* started and not yet exited */
    size_t warm_workers; /* finished their start-up */
    pthread_cond_t exited;
    CTX__PAD(pad3);

    /* ---- sleeping workers (queue.c) ---- */
    atomic_size_t idle_count; /* workers on the idle stack */
    atomic_uint spinners;                  /* workers polling for work */
    pthread_mutex_t idle_lock;
    ctx__worker_t *idle_top;
    CTX__PAD(pad4);

    /* ---- spare records (recycle.c): a stack of batches of dead records
     * (each linked through `next`, batches through their first record's
     * `next_batch`) under a spinlock taken once per batch ---- */
    atomic_int spare_lock;
    atomic_size_t spare_count; /* batches on the stack */
    ctx_pool_future_t *spares;
    CTX__PAD(pad5);

    /* ---- bumped by threads that are not workers: cancels and refused
     * submits ---- */
    atomic_uint_fast64_t cancelled;
    atomic_uint_fast64_t rejected;
#undef CTX__PAD
};


/* ---- queue.c ---- */

/* Initialises the pool's locks, conditions, the workers' semaphores and the
 * first segment: 0, CTX_ENOMEM or CTX_ESYSTEM (nothing left initialised). */
int ctx__queue_init(ctx_pool_t *pool);
/* Destroys what ctx__queue_init made (the queue is empty). */
void ctx__queue_destroy(ctx_pool_t *pool);
/* Queues a slot (a light task with its map reference, or a record with its
 * fields set, state PENDING, one reference for the queue) and wakes a
 * worker if none will see it otherwise.  `retain_map`: the slot's map is
 * borrowed, and the push takes the slot's reference itself once it knows
 * the task is queued.  0, or CTX_EFULL, CTX_ESHUTDOWN, CTX_ENOMEM (a new
 * segment could not be had) with nothing queued (and nothing retained). */
int ctx__queue_push(ctx_pool_t *pool, const ctx__slot_t *slot, bool retain_map);
/* For worker `self`: the next task, taken out of the queue (a record is
 * RUNNING; self->busy set), waiting for one as long as it takes; 0 when the
 * pool stops and nothing is left for this worker. */
bool ctx__queue_next(ctx_pool_t *pool, ctx__worker_t *self, ctx__slot_t *out);
/* Stops intake (later pushes fail with CTX_ESHUTDOWN), tells the workers to
 * stop once the queue is empty (or, with `cancel`, to take nothing more) and
 * wakes them all.  Returns true for the call that closed the queue, false
 * if it was closed already (the first call decided). */
bool ctx__queue_close(ctx_pool_t *pool, bool cancel);
/* After ctx__queue_close(pool, true): empties the queue, ending every task
 * in it as cancelled on the calling thread (a light task's map is dropped;
 * a record's arg_release and done-callbacks run), outside every lock. */
void ctx__queue_cancel_all(ctx_pool_t *pool);
/* Queued, running and submitted counts, read together under the pool lock. */
void ctx__queue_counts(ctx_pool_t *pool, size_t *queued, size_t *running, uint64_t *submitted);

/* Cancels `f` if it is still queued: 1 if it was (or another thread is
 * cancelling it), 0 if it had left the queue (look at the state again). */
int ctx__pool_cancel_pending(ctx_pool_future_t *f);

/* ---- recycle.c ---- */

/* A spare record for the calling thread (its own list, refilled from the
 * pool's batches), or NULL: the caller allocates. */
ctx_pool_future_t *ctx__recycle_take(ctx_pool_t *pool);
/* Worker `self` hands over a record that died on it (no captured stack). */
void ctx__recycle_give(ctx_pool_t *pool, ctx__worker_t *self, ctx_pool_future_t *dead);
/* Frees what worker `self` still holds (it is exiting). */
void ctx__recycle_worker_exit(ctx__worker_t *self);
/* Frees the pool's spare batches (the pool is being freed). */
void ctx__recycle_pool_free(ctx_pool_t *pool);
/* Frees the calling thread's spare records. */
void ctx__recycle_thread_free(void);

/* ---- propagation.c ---- */

/* 1 if `p` is a value of ctx_pool_propagation_t. */
bool ctx__policy_valid_kind(ctx_pool_propagation_t p);
/* Resolves the pool's policy from its options: validates, then retains the
 * context / copies and retains the allowlist.  0, CTX_EINVAL, CTX_ENOMEM
 * (nothing kept on error). */
int ctx__policy_init(ctx__policy_t *out, ctx_pool_propagation_t kind, ctx_context_t *context,
                     ctx_var_t *const *allowlist, size_t allowlist_len);
/* Releases what ctx__policy_init kept. */
void ctx__policy_release(ctx__policy_t *policy);
/* The policy of one submit: the pool's, or the submit options' (borrowed).
 * 0 or CTX_EINVAL. */
int ctx__policy_for_submit(const ctx__policy_t *pool_policy, ctx_pool_propagation_t kind,
                           ctx_context_t *context, ctx_var_t *const *allowlist,
                           size_t allowlist_len, ctx__policy_t *out);
/* Makes the task's private context in the record's embedded storage:
 * 0 (f->has_context set), or the error of the copy (nothing kept). */
int ctx__policy_make_context(const ctx__policy_t *policy, ctx_pool_future_t *f);
/* The map of the task's context for a light task (one reference), or the
 * error of the copy. */
int ctx__policy_capture_map(const ctx__policy_t *policy, ctx__hamt_t *out);
/* For COPY: the calling thread's current map, borrowed (no reference
 * taken; valid until the thread changes its context), and true; else
 * false. */
bool ctx__policy_borrow_map(const ctx__policy_t *policy, ctx__hamt_t *out);
/* Makes `storage` an embedded context holding `map` (the reference passes
 * to it: ctx__context_clear drops it). */
void ctx__policy_context_of_map(ctx_context_t *storage, ctx__hamt_t map);
/* Drops a light task's map reference (may run values' release: never
 * under a lock). */
void ctx__policy_drop_map(ctx__hamt_t map);
/* Drops a finished light task's map reference later, with others of the
 * same map (see propagation.c); ctx__policy_settle drops them all now.
 * Never under a lock. */
void ctx__policy_drop_map_later(ctx__map_debt_t *debts, ctx__hamt_t map);
void ctx__policy_settle(ctx__map_debt_t *debts);

/* ---- executor.c ---- */

/* Drops one reference to the pool's memory (a record's, or the owner's). */
void ctx__pool_release(ctx_pool_t *pool);

/* The record of the task running on the calling thread, or NULL. */
ctx_pool_future_t *ctx__pool_current_task(void);

/* The pool whose worker the calling thread is, or NULL. */
ctx_pool_t *ctx__pool_of_this_thread(void);

/* fork(): installs the pool's pthread_atfork handler (once): 0, or
 * CTX_ESYSTEM if it could not be installed.  Any thread. */
int ctx__pool_fork_watch(void);
/* How many times this process is a fork() child of a process that used
 * the pool module (0 in the original process). */
unsigned ctx__pool_fork_generation(void);
/* 1 if `pool` was made before the fork this process is a child of: its
 * workers do not exist here and its locks may be held forever. */
bool ctx__pool_forked(const ctx_pool_t *pool);

/* Ends a record taken out of the queue without running (cancelled): drops
 * its context, counts it, ends its future.  Does not drop the queue's
 * reference. */
void ctx__pool_finish_cancelled(ctx_pool_t *pool, ctx_pool_future_t *f);

/* One more reference to the pool's memory (a group's). */
void ctx__pool_retain(ctx_pool_t *pool);

/* What ctx_pool_submit_ex does, for a task of `group` (NULL: none): the
 * task's context gets the group's scope.  Same errors. */
int ctx__pool_submit(ctx_pool_t *pool, ctx_pool_task_fn fn, void *arg,
                     const ctx_pool_submit_options_t *options, ctx_pool_future_t **out,
                     ctx_pool_group_t *group);

/* ---- group.c ---- */

/* The group's scope (borrowed: the group holds it). */
ctx_cancel_scope_t *ctx__group_scope(const ctx_pool_group_t *group);
/* Makes `storage` the context of a COPY task of `group`: the calling
 * thread's current context with the group's scope put in (from the
 * group's template when the context's map is the one it was made from).
 * 0 or CTX_ENOMEM (nothing kept). */
int ctx__group_context(ctx_pool_group_t *group, ctx_context_t *storage);
/* A task of `group` (record `f`) is about to end with `state`/`error`: a
 * failure is recorded (the first one) and cancels the group's scope.
 * Before ctx__future_finish; no lock held. */
void ctx__group_task_ending(ctx_pool_group_t *group, const ctx_pool_future_t *f, int state,
                            int error);
/* A task of `group` has ended (after ctx__future_finish): one fewer
 * pending, waiters woken at zero, the task's reference dropped. */
void ctx__group_task_ended(ctx_pool_group_t *group);

/* ---- clock.c ---- */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t ctx__pool_now_ns(void);
/* Chooses the kind of stamps; called by ctx_pool_new before any stamp. */
void ctx__pool_clock_init(void);
/* A stamp for queue waits (see clock.c: not necessarily nanoseconds). */
uint64_t ctx__pool_ticks(void);
/* Nanoseconds from a difference of stamps. */
uint64_t ctx__pool_ticks_to_ns(uint64_t ticks);
/* Nanoseconds from stamp `from` to stamp `to` (0 if `to` is not later). */
uint64_t ctx__pool_ticks_between(uint64_t from, uint64_t to);
/* How many ctx__cpu_relax calls take about `us` microseconds here
 * (measured by ctx__pool_clock_init). */
unsigned ctx__pool_pauses_for_us(unsigned us);

/* ---- stack.c ---- */

/* Stores up to `max` return addresses of the calling thread's stack in
 * `frames`, leaving out the innermost `skip` (beyond this function's own
 * frame); returns how many were stored (0 where unsupported). */
size_t ctx__stack_capture(void **frames, size_t max, size_t skip);

#endif /* CTX_POOL_INTERNAL_H */
