/* SPDX-License-Identifier: MIT */
/*
 * scope.c — cancellation scopes: making them, cancelling a subtree, causes,
 * deadlines, and the reference graph that keeps it all leak-free.
 *
 * The reference graph
 * -------------------
 * A child holds a (counted) reference to its parent; a parent knows its
 * active children only through a weak, doubly linked list:
 *
 *       root ◀──── child A ◀──── grandchild
 *        │ children   ▲
 *        └──▶ A ⇄ B ──┘  (weak: no reference)
 *
 * So a parent never keeps children alive, and a child keeps its ancestors
 * alive (it needs them: its deadline and its cause may be theirs).  A child
 * leaves the list when it is cancelled or when its last reference goes
 * (scope_free), whichever comes first, so a long-lived root whose requests
 * come and go holds nothing for them.  The list and each child's pprev/next
 * are guarded by the PARENT's lock; everything else of a scope (state,
 * cause, its own children list, its callbacks) by its own lock.  No code
 * ever holds two scope locks, so there is no lock order to get wrong.
 *
 * A child whose count fell to zero may still sit in its parent's list for a
 * moment (it is on its way to take the parent's lock and unlink).  Whoever
 * walks the list takes a reference only with ctx__cancel_scope_try_retain
 * (never from zero); the dying child's memory is safe to look at because it
 * cannot be freed before it has taken that same lock.
 *
 * Cancelling
 * ----------
 * ctx__cancel_tree(scope, err, cause) is the one path for explicit cancels,
 * expired deadlines and born-cancelled children:
 *
 *   mark(scope)    under its lock: if active, set cause and state (release
 *                  store; readers load-acquire), else stop: someone else won.
 *                  Note whether it has children and callbacks: once it is
 *                  marked, no child or callback can join (both check the
 *                  state under this lock), so empty lists are skipped
 *                  without taking the lock again; and take the first
 *                  callback out already (the common single callback then
 *                  costs no second lock).
 *   unlink         from the parent's list; drop the timer entry if any.
 *   pass 1         walk the subtree without recursion: pop each child from
 *                  its parent's list (one pop per lock hold, so a lock is
 *                  held for a bounded time however many children there are),
 *                  take a reference, mark it with the root's error and
 *                  cause; the marked scopes are chained through work_next.
 *   pass 2         for each marked scope, in that order, run its callbacks
 *                  (callback.c: one at a time, outside every lock) and drop
 *                  the walk's reference.
 *
 * Marking everything first means that when any callback runs, every scope
 * of the subtree already reports cancelled.  A child that another thread
 * cancelled first is left to that thread (its mark fails here), subtree
 * included.
 *
 * Deadlines
 * ---------
 * `deadline` is the effective deadline: the earliest of the scope's own and
 * its parent's, fixed at creation.  Only a scope whose own deadline is
 * strictly earlier than its parent's goes into the timer heap (timer.c); the
 * others are cancelled with their ancestor that owns the deadline.
 */
#include <limits.h>

#include "cancel/cancel_internal.h"
#include "common/common.h"
#include "core/alloc.h"

/* ---- references ---- */

int ctx__cancel_scope_try_retain(ctx_cancel_scope_t *s) {
    size_t refs = atomic_load_explicit(&s->refs, memory_order_relaxed);
    while (refs)
        if (atomic_compare_exchange_weak_explicit(&s->refs, &refs, refs + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

ctx_cancel_scope_t *ctx_cancel_scope_retain(ctx_cancel_scope_t *scope) {
    if (scope)
        atomic_fetch_add_explicit(&scope->refs, 1, memory_order_relaxed);
    return scope;
}

/* Takes `s` out of its parent's children list if it is still there. */
static void unlink_from_parent(ctx_cancel_scope_t *s) {
    ctx_cancel_scope_t *p = s->parent;
    if (!p)
        return;
    ctx__cancel_lock(p);
    if (s->pprev) {
        *s->pprev = s->next;
        if (s->next)
            s->next->pprev = s->pprev;
        s->pprev = NULL;
        s->next = NULL;
    }
    ctx__cancel_unlock(p);
}

/* Frees a scope whose count reached zero.  A cancelled scope has already
 * left its parent's list and the timer heap (its canceller did both while
 * holding a reference), so only an active one needs the locks. */
static void scope_free(ctx_cancel_scope_t *s) {
    if (!atomic_load_explicit(&s->state, memory_order_acquire)) {
        unlink_from_parent(s);
        if (s->has_timer)
            ctx__cancel_timer_remove(s);
    }
    if (s->cause_from == s && s->cause_release)
        s->cause_release(s->cause_data);
    ctx__free(s, sizeof *s);
}

void ctx_cancel_scope_release(ctx_cancel_scope_t *scope) {
    /* A loop, not recursion: a long chain of scopes whose last references
     * go together is freed without growing the stack. */
    while (scope && atomic_fetch_sub_explicit(&scope->refs, 1, memory_order_acq_rel) == 1) {
        ctx_cancel_scope_t *parent = scope->parent;
        scope_free(scope);
        scope = parent;
    }
}

/* ---- cancelling ---- */

/* Sets the state of `s` if it is active: 1 if this call did.  `from` is the
 * ancestor whose cause `s` takes (NULL: its own, from `cause`). */
static int mark(ctx_cancel_scope_t *s, int err, const ctx_cancel_scope_t *from,
                const ctx_cancel_cause_t *cause) {
    ctx__cancel_lock(s);
    if (atomic_load_explicit(&s->state, memory_order_relaxed)) {
        ctx__cancel_unlock(s);
        return 0;
    }
    s->cause_from = from ? from : s;
    if (!from && cause) {
        s->cause_code = cause->code;
        s->cause_data = cause->data;
        s->cause_release = cause->release;
    }
    s->had_children = s->children != NULL;
    s->first_callback = ctx__cancel_pop_callback(s); /* saves a lock later */
    s->had_callbacks = s->callbacks != NULL;
    atomic_store_explicit(&s->state, err, memory_order_release);
    ctx__cancel_unlock(s);
    return 1;
}

/* Pops one child of `s` that is not dying and returns it with a reference
 * of the caller's, or NULL when the list is empty. */
static ctx_cancel_scope_t *pop_child(ctx_cancel_scope_t *s) {
    for (;;) {
        ctx__cancel_lock(s);
        ctx_cancel_scope_t *c = s->children;
        if (!c) {
            ctx__cancel_unlock(s);
            return NULL;
        }
        s->children = c->next;
        if (c->next)
            c->next->pprev = &s->children;
        c->pprev = NULL;
        c->next = NULL;
        int live = ctx__cancel_scope_try_retain(c);
        ctx__cancel_unlock(s);
        if (live)
            return c;
    }
}

/* Pass 1: marks every active scope below `root` and chains them after it
 * through work_next (each with a reference of the walk's). */
static void mark_subtree(ctx_cancel_scope_t *root, int err) {
    ctx_cancel_scope_t *stack = NULL, *tail = root, *s = root;
    root->work_next = NULL;
    while (s) {
        ctx_cancel_scope_t *c;
        while (s->had_children && (c = pop_child(s))) {
            if (mark(c, err, root, NULL)) {
                if (c->has_timer)
                    ctx__cancel_timer_remove(c);
                c->work_next = stack;
                stack = c;
            } else {
                ctx_cancel_scope_release(c); /* cancelled by another thread */
            }
        }
        s = stack;
        if (s) {
            stack = s->work_next;
            s->work_next = NULL;
            tail->work_next = s;
            tail = s;
        }
    }
}

int ctx__cancel_tree(ctx_cancel_scope_t *root, int err, const ctx_cancel_cause_t *cause) {
    if (!mark(root, err, NULL, cause))
        return 0;
    unlink_from_parent(root);
    if (root->has_timer)
        ctx__cancel_timer_remove(root);
    mark_subtree(root, err);
    /* Pass 2: the callbacks, outside every lock. */
    for (ctx_cancel_scope_t *s = root; s;) {
        ctx_cancel_scope_t *next = s->work_next;
        s->work_next = NULL;
        if (s->first_callback || s->had_callbacks)
            ctx__cancel_run_callbacks(s);
        if (s != root)
            ctx_cancel_scope_release(s);
        s = next;
    }
    return 1;
}

void ctx__cancel_expire_due(ctx_cancel_scope_t *s) {
    if (atomic_load_explicit(&s->state, memory_order_acquire) || s->deadline > ctx__monotonic_ns())
        return;
    ctx_cancel_scope_t *owner = s;
    while (owner->parent && owner->parent->deadline == owner->deadline)
        owner = owner->parent;
    ctx__cancel_tree(owner, CTX_EDEADLINE, NULL);
    /* If another thread (the timer) cancelled `owner` first, its walk may
     * not have reached `s` yet: `s`'s own deadline has passed, so it is
     * cancelled here (the first mark wins, as with any two cancels), and a
     * caller told CTX_EDEADLINE then finds it in the scope's error and
     * cause too. */
    if (s != owner && !atomic_load_explicit(&s->state, memory_order_acquire))
        ctx__cancel_tree(s, CTX_EDEADLINE, NULL);
}

int ctx__cancel_scope_poll(ctx_cancel_scope_t *s) {
    int err = atomic_load_explicit(&s->state, memory_order_acquire);
    if (err || s->deadline == CTX__NO_DEADLINE || s->deadline > ctx__monotonic_ns())
        return err;
    int unused = 0;
    if (ctx__tstate_get(&unused)) /* callbacks run in captured contexts */
        ctx__cancel_expire_due(s);
    err = atomic_load_explicit(&s->state, memory_order_acquire);
    return err ? err : CTX_EDEADLINE; /* past it, whoever cancels */
}

/* ---- making scopes ---- */

static int64_t add_saturating(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

/* The scope's own deadline from its options (CTX__NO_DEADLINE if none);
 * *now receives the time it was computed at (0 if not read). */
static int64_t own_deadline(const ctx_cancel_options_t *o, int64_t *now) {
    int64_t d = CTX__NO_DEADLINE;
    *now = 0;
    if (o->deadline_ns)
        d = o->deadline_ns;
    if (o->timeout_ns) {
        *now = ctx__monotonic_ns();
        int64_t t = o->timeout_ns < 0 ? *now : add_saturating(*now, o->timeout_ns);
        if (t < d)
            d = t;
    }
    return d;
}

static void scope_init(ctx_cancel_scope_t *s, ctx_cancel_scope_t *parent, int64_t deadline) {
    atomic_init(&s->refs, 1);
    atomic_init(&s->state, 0);
    atomic_init(&s->lock, 0);
    s->parent = ctx_cancel_scope_retain(parent);
    s->pprev = NULL;
    s->next = NULL;
    s->children = NULL;
    s->callbacks = NULL;
    s->deadline = deadline;
    s->has_timer = 0;
    s->heap_slot = CTX__NO_HEAP_SLOT;
    s->cause_from = NULL;
    s->cause_code = 0;
    s->cause_data = NULL;
    s->cause_release = NULL;
    s->work_next = NULL;
    s->had_children = 0;
    s->had_callbacks = 0;
    s->first_callback = NULL;
}

/* Links a new scope into its parent's list, unless the parent is cancelled
 * (then the scope is born cancelled like it) or the timer has cancelled the
 * scope already. */
static void attach(ctx_cancel_scope_t *s) {
    ctx_cancel_scope_t *p = s->parent;
    ctx__cancel_lock(p);
    int parent_err = atomic_load_explicit(&p->state, memory_order_acquire);
    if (!parent_err && !atomic_load_explicit(&s->state, memory_order_acquire)) {
        s->next = p->children;
        if (s->next)
            s->next->pprev = &s->next;
        p->children = s;
        s->pprev = &p->children;
    }
    const ctx_cancel_scope_t *from = p->cause_from;
    ctx__cancel_unlock(p);
    if (parent_err && mark(s, parent_err, from, NULL) && s->has_timer)
        ctx__cancel_timer_remove(s);
}

int ctx_cancel_scope_new(ctx_cancel_scope_t *parent, const ctx_cancel_options_t *options,
                         ctx_cancel_scope_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    if (options && ctx__struct_in(&o, sizeof o, options, sizeof(ctx_cancel_options_t)))
        return CTX_EINVAL;
    int64_t now;
    int64_t own = own_deadline(&o, &now);
    int64_t inherited = parent ? parent->deadline : CTX__NO_DEADLINE;
    ctx_cancel_scope_t *s = ctx__malloc(sizeof *s);
    if (!s)
        return CTX_ENOMEM;
    scope_init(s, parent, own < inherited ? own : inherited);
    int expired = 0;
    if (own < inherited) {
        expired = own <= (now ? now : ctx__monotonic_ns());
        if (!expired) {
            s->has_timer = 1;
            int r = ctx__cancel_timer_add(s);
            if (r) {
                ctx_cancel_scope_release(parent);
                ctx__free(s, sizeof *s);
                return r;
            }
        }
    }
    if (parent)
        attach(s);
    if (expired)
        mark(s, CTX_EDEADLINE, NULL, NULL);
    *out = s;
    return 0;
}

/* ---- the public calls ---- */

int ctx_cancel_scope_cancel(ctx_cancel_scope_t *scope, const ctx_cancel_cause_t *cause) {
    if (!scope)
        return CTX_EINVAL;
    ctx_cancel_cause_t c = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    if (cause && ctx__struct_in(&c, sizeof c, cause, sizeof(ctx_cancel_cause_t)))
        return CTX_EINVAL;
    /* Callbacks run in captured contexts, which needs this thread's state:
     * make it before anything changes. */
    int err = 0;
    if (!ctx__tstate_get(&err))
        return err;
    return ctx__cancel_tree(scope, CTX_ECANCELLED, cause ? &c : NULL) ? 0 : CTX_CANCEL_ALREADY;
}

int ctx_cancel_scope_error(const ctx_cancel_scope_t *scope) {
    if (!scope)
        return CTX_EINVAL;
    return atomic_load_explicit(&scope->state, memory_order_acquire);
}

int ctx_cancel_scope_cause(const ctx_cancel_scope_t *scope, ctx_cancel_cause_t *out) {
    if (!scope || !out)
        return CTX_EINVAL;
    size_t size;
    memcpy(&size, out, sizeof size);
    if (size < sizeof(size_t))
        return CTX_EINVAL;
    int err = atomic_load_explicit(&scope->state, memory_order_acquire);
    if (!err)
        return 0;
    const ctx_cancel_scope_t *from = scope->cause_from;
    ctx_cancel_cause_t c = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    c.code = from->cause_code;
    c.data = from->cause_data;
    ctx__struct_out(out, &c, sizeof c);
    return err;
}

int ctx_cancel_scope_deadline(const ctx_cancel_scope_t *scope, int64_t *deadline_ns) {
    if (!scope || !deadline_ns)
        return CTX_EINVAL;
    if (scope->deadline == CTX__NO_DEADLINE)
        return CTX_ENOTFOUND;
    *deadline_ns = scope->deadline;
    return 0;
}

int ctx_cancel_scope_remaining(const ctx_cancel_scope_t *scope, int64_t *ns) {
    if (!scope || !ns)
        return CTX_EINVAL;
    if (scope->deadline == CTX__NO_DEADLINE)
        return CTX_ENOTFOUND;
    int64_t left = scope->deadline - ctx__monotonic_ns();
    *ns = left > 0 ? left : 0;
    return 0;
}
