/* SPDX-License-Identifier: MIT */
/*
 * snapshot.c — where ctxvar's values live under Python, so that asyncio's
 * context switches are ctxvar's too, and so that C code sees them.
 *
 * The idea
 * --------
 * Python 3.11–3.13 switch the current `contextvars.Context` for every asyncio
 * task step and callback without telling anyone (context watchers arrive in
 * 3.14).  So ctxvar does not keep a current context of its own for Python
 * threads: it keeps its whole map *inside* Python's current Context, as the
 * value of one hidden standard-library ContextVar (`ctxpy_hidden`).  Every
 * switch Python makes switches that value with it; every copy Python makes
 * (create_task, call_soon, to_thread, copy_context) copies it.
 *
 *     contextvars.Context (asyncio task A)       contextvars.Context (task B)
 *       hidden var ──▶ snapshot S1                 hidden var ──▶ snapshot S2
 *                        │ ctx_context_t (core)                     │
 *                        ▼                                          ▼
 *                      map: v ─▶ record{obj}  ◀── shared nodes ──  map: v ─▶ record{obj'}
 *
 * A *snapshot* is a Python object that nobody ever changes: Python
 * contexts share snapshots by reference.  It holds the variables made in
 * Python as an array of (ContextVar, value) pairs sorted by the variable's
 * address, each a reference of its own, and, once C code needs it, a core
 * context with the same values (`ctx`: every value a record, ctxpy.h) plus
 * any values of variables made in C.  A set derives a new snapshot (a copy
 * of the pairs with one change, and, if the old snapshot had a core context,
 * an O(1) core copy with the same change) and stores it in the hidden
 * variable (ctxpy_publish: one insert into the current Context's map, "Storing
 * the snapshot directly" below); the previous snapshot stays valid for every
 * context and token that still holds it.  A program that never hands its
 * values to C never builds a core context: its sets cost a small array copy.
 *
 * C sees the same thing
 * ---------------------
 * The core asks for the current context through the provider installed here
 * (ctxvar/host.h): `current` answers with the current snapshot's core
 * context when the calling thread holds the GIL, `publish` turns a context
 * the core built for a C-side set into a snapshot and stores it, the scope
 * functions bind C tokens to the Python Context they were made in, and
 * `switched` bumps the generation when C enters or leaves a context on a
 * Python thread (then the core's context comes first: host.h).  A thread
 * without the GIL gets NULL and uses its own core context.
 *
 * Finding the current snapshot fast
 * ---------------------------------
 * (thread id, the thread's context version, ctxpy_gen()) identifies it:
 * CPython bumps the version on every Context enter and exit, ctxvar bumps the
 * generation on every publish and every switch it makes on a Python thread.
 * One cache slot here, and one per ContextVar (contextvars.c), hold the
 * answer for that key; a hit costs three compares.
 *
 * Who holds references
 * ---------------------
 * The garbage collector must see every reference exactly once, although
 * core maps share nodes invisibly between snapshots and with C:
 *
 *   - every snapshot holds its own reference to each variable and value in
 *     its pairs (taken when it is made: O(n) in the number of variables set,
 *     which is small) and its tp_traverse visits exactly those.  The records
 *     in its core context hold none;
 *   - what C copies (the provider's CTX_PROVIDER_COPY: a pool submit, a loop
 *     call, ctx_context_copy_current) is not the snapshot's core context but
 *     its *mirror*: a copy of it, made on first use, in which each record is
 *     replaced by a "core-owned" one that holds references of its own.  C's
 *     copies share the mirror's records, never the snapshot's.  The core's
 *     release operation queues a core-owned record's references for
 *     ctxpy_drain, since it may run on any thread;
 *   - the snapshot visits the mirror's references too, but only those that
 *     nothing but the mirror keeps alive (ctx_context_visit): while C holds
 *     a copy they are references from outside, which the collector must see
 *     as such; once C dropped its copies they are the snapshot's again.
 *
 * So a cycle through a value held by any number of snapshots, contexts and
 * tokens is collected by one gc.collect(), a value that C holds is never
 * collected under it, and once C lets go the cycle is collectable again.
 * (Records set while C's own context is current are core-owned from the
 * start, and snapshots made from such a context (`escaped`) keep C's
 * references for as long as they live.)
 *
 * Out of memory while making a core context for C (the provider cannot
 * report an error), C sees its thread's own context for that call.
 *
 * Functions: records; pairs; the Snapshot type; core contexts and mirrors;
 * the current snapshot; derive and publish; the provider;
 * ctxpy_snapshot_ready.
 */
#include "ctxpy.h"

#if PY_VERSION_HEX >= 0x030D0000
#define CTXPY_TSTATE_UNCHECKED() PyThreadState_GetUnchecked()
#else
#define CTXPY_TSTATE_UNCHECKED() _PyThreadState_UncheckedGet()
#endif

PyObject *ctxpy_hidden;
ctxpy_snapshot_t *ctxpy_empty;
uint64_t ctxpy_publishes = 1;
atomic_uint_fast64_t ctxpy_switches;

/* ---------------------------------------------------------------------- */
/* Records                                                                 */
/* ---------------------------------------------------------------------- */

static atomic_long live_records;

static void record_finish(ctxpy_deferred_t *node) {
    ctxpy_record_t *r = (ctxpy_record_t *)((char *)node - offsetof(ctxpy_record_t, node));
    PyObject *value = r->value, *var = r->var;
    ctx_free(r, sizeof *r);
    atomic_fetch_sub_explicit(&live_records, 1, memory_order_relaxed);
    Py_DECREF(value);
    Py_DECREF(var);
}

/* The core's release operation: any thread, maybe inside a core call. */
static void record_release(void *value, void *user) {
    (void)user;
    ctxpy_record_t *r = value;
    if (r->core_owned) {
        ctxpy_defer(&r->node);
        return;
    }
    /* No references of its own: the snapshots that held it hold them. */
    ctx_free(r, sizeof *r);
    atomic_fetch_sub_explicit(&live_records, 1, memory_order_relaxed);
}

const ctx_value_ops_t ctxpy_record_ops = {.size = sizeof(ctx_value_ops_t),
                                          .release = record_release};

ctxpy_record_t *ctxpy_record_new(PyObject *var, PyObject *value) {
    ctxpy_record_t *r = ctx_malloc(sizeof *r);
    if (!r) {
        PyErr_NoMemory();
        return NULL;
    }
    atomic_fetch_add_explicit(&live_records, 1, memory_order_relaxed);
    r->value = value;
    r->var = var;
    r->node.next = NULL;
    r->node.finish = record_finish;
    r->core_owned = 0;
    return r;
}

void ctxpy_record_discard(ctxpy_record_t *r) {
    if (r->core_owned) {
        r->core_owned = 0;
        Py_DECREF(r->value);
        Py_DECREF(r->var);
    }
    ctx_free(r, sizeof *r);
    atomic_fetch_sub_explicit(&live_records, 1, memory_order_relaxed);
}

void ctxpy_record_own(ctxpy_record_t *r) {
    if (!r->core_owned) {
        r->core_owned = 1;
        Py_INCREF(r->value);
        Py_INCREF(r->var);
    }
}

long ctxpy_records_alive(void) {
    return atomic_load_explicit(&live_records, memory_order_relaxed);
}

/* ---------------------------------------------------------------------- */
/* The Snapshot type                                                       */
/* ---------------------------------------------------------------------- */

/* Calls fn(var, record, arg) for each record in `ctx` (the entries of
 * variables made in Python) until fn returns non-zero; returns that.
 * Snapshots' core contexts never change, so ctx_context_visit walks them
 * without a lock or a retained root. */
typedef int (*record_fn)(ctx_var_t *var, ctxpy_record_t *record, void *arg);

typedef struct {
    record_fn fn;
    void *arg;
} walk_t;

static int walk_one(ctx_var_t *var, void *value, int exclusive, void *arg) {
    (void)exclusive;
    walk_t *w = arg;
    return ctxpy_is_record_var(var) ? w->fn(var, value, w->arg) : 0;
}

static int walk_records(ctx_context_t *ctx, record_fn fn, void *arg) {
    walk_t w = {fn, arg};
    return ctx_context_visit(ctx, 0, walk_one, &w);
}

/* ---------------------------------------------------------------------- */
/* Pairs                                                                   */
/* ---------------------------------------------------------------------- */

#define PAIR_VAR(s, i) ((s)->pairs[2 * (i)])
#define PAIR_VALUE(s, i) ((s)->pairs[2 * (i) + 1])

/* Where `var` is in the pairs (*found 1) or would go (*found 0). */
static Py_ssize_t pair_find(const ctxpy_snapshot_t *s, PyObject *var, int *found) {
    uintptr_t key = (uintptr_t)var;
    Py_ssize_t lo = 0, hi = s->n;
    while (hi - lo > 8) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)PAIR_VAR(s, mid) < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* The first pair at or above key is in [lo, hi] (hi itself if it is
     * not below). */
    for (; lo < s->n; lo++) {
        uintptr_t at = (uintptr_t)PAIR_VAR(s, lo);
        if (at >= key) {
            *found = at == key;
            return lo;
        }
    }
    *found = 0;
    return lo;
}

PyObject *ctxpy_snapshot_get(ctxpy_snapshot_t *s, PyObject *var) {
    int found;
    Py_ssize_t i = pair_find(s, var, &found);
    return found ? PAIR_VALUE(s, i) : NULL;
}

/* ---------------------------------------------------------------------- */
/* The Snapshot type                                                       */
/* ---------------------------------------------------------------------- */

/* Free lists for snapshots of up to SMALL pairs, one per size. */
#define SMALL 8
static ctxpy_freelist_t snapshot_freelists[SMALL];

/* A snapshot with room for n pairs (n set, pairs not), untracked. */
static ctxpy_snapshot_t *snapshot_alloc(Py_ssize_t n) {
    static uint64_t serials;
    ctxpy_snapshot_t *s = NULL;
    if (n < SMALL && snapshot_freelists[n].n) {
        s = (ctxpy_snapshot_t *)snapshot_freelists[n].items[--snapshot_freelists[n].n];
#if defined(Py_REF_DEBUG) || defined(Py_TRACE_REFS)
        PyObject_InitVar((PyVarObject *)s, &ctxpy_Snapshot_Type, 2 * n);
#else
        Py_SET_REFCNT(s, 1);
#endif
    } else if (!(s = PyObject_GC_NewVar(ctxpy_snapshot_t, &ctxpy_Snapshot_Type, 2 * n))) {
        return NULL;
    }
    s->n = n;
    s->ctx = s->mirror = NULL;
    s->escaped = 0;
    s->serial = ++serials;
    return s;
}

static int snapshot_traverse(ctxpy_snapshot_t *self, visitproc visit, void *arg);

static int snapshot_clear(ctxpy_snapshot_t *self) {
    ctx_context_t *ctx = self->ctx, *mirror = self->mirror;
    Py_ssize_t n = self->n;
    self->ctx = self->mirror = NULL;
    self->n = 0;
    /* The records hold no references (a mirror's go through the queue). */
    if (mirror)
        ctx_context_release(mirror);
    if (ctx)
        ctx_context_release(ctx);
    for (Py_ssize_t i = 0; i < 2 * n; i++)
        Py_DECREF(self->pairs[i]);
    ctxpy_drain();
    return 0;
}

static void snapshot_dealloc(ctxpy_snapshot_t *self) {
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, snapshot_dealloc)
    snapshot_clear(self);
    Py_ssize_t cap = Py_SIZE(self) / 2;
    if (cap < SMALL)
        ctxpy_freelist_free(&snapshot_freelists[cap], (PyObject *)self);
    else
        PyObject_GC_Del(self);
    Py_TRASHCAN_END
}

typedef struct {
    visitproc visit;
    void *arg;
} visit_args_t;

/* The mirror's references that only the mirror keeps alive. */
static int visit_mirrored(ctx_var_t *var, void *value, int exclusive, void *arg) {
    if (!exclusive || !ctxpy_is_record_var(var))
        return 0;
    visit_args_t *va = arg;
    ctxpy_record_t *r = value;
    int err = va->visit(r->value, va->arg);
    return err ? err : va->visit(r->var, va->arg);
}

static int snapshot_traverse(ctxpy_snapshot_t *self, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < 2 * self->n; i++)
        Py_VISIT(self->pairs[i]);
    if (self->mirror) {
        visit_args_t va = {visit, arg};
        return ctx_context_visit(self->mirror, CTX_VISIT_EXCLUSIVE, visit_mirrored, &va);
    }
    return 0;
}

PyTypeObject ctxpy_Snapshot_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_ctxvar._Snapshot",
    .tp_basicsize = offsetof(ctxpy_snapshot_t, pairs),
    .tp_itemsize = sizeof(PyObject *),
    .tp_dealloc = (destructor)snapshot_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("ctxvar's variables in one contextvars.Context (immutable)."),
    .tp_traverse = (traverseproc)snapshot_traverse,
    .tp_clear = (inquiry)snapshot_clear,
};

Py_ssize_t ctxpy_snapshot_len(ctxpy_snapshot_t *s) {
    return s->ctx ? (Py_ssize_t)ctx_context_length(s->ctx) : s->n;
}

/* ---------------------------------------------------------------------- */
/* Core contexts and mirrors                                               */
/* ---------------------------------------------------------------------- */

ctx_context_t *ctxpy_snapshot_core(ctxpy_snapshot_t *s) {
    if (s->ctx)
        return s->ctx;
    ctx_context_t *ctx = NULL;
    int r = ctx_context_new(&ctx);
    for (Py_ssize_t i = 0; r == 0 && i < s->n; i++) {
        ctxpy_record_t *rec = ctxpy_record_new(PAIR_VAR(s, i), PAIR_VALUE(s, i));
        if (!rec) {
            PyErr_Clear();
            r = CTX_ENOMEM;
        } else if ((r = ctx_context_set(ctx, ctxpy_var_core(PAIR_VAR(s, i)), rec)) != 0) {
            ctxpy_record_discard(rec);
        }
    }
    if (r) {
        if (ctx)
            ctx_context_release(ctx);
        return (ctx_context_t *)ctxpy_error(r);
    }
    s->ctx = ctx;
    return ctx;
}

/* Counting and collecting the records of a core context. */
static int count_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    (void)var;
    (void)r;
    ++*(Py_ssize_t *)arg;
    return 0;
}

static int collect_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    (void)var;
    ctxpy_snapshot_t *s = arg;
    /* Insert sorted (a handful of entries; pair_find for the place). */
    int found;
    Py_ssize_t at = pair_find(s, r->var, &found);
    memmove(&s->pairs[2 * at + 2], &s->pairs[2 * at], (size_t)(2 * (s->n - at)) * sizeof(PyObject *));
    s->pairs[2 * at] = Py_NewRef(r->var);
    s->pairs[2 * at + 1] = Py_NewRef(r->value);
    s->n++;
    return 0;
}

ctxpy_snapshot_t *ctxpy_snapshot_new(ctx_context_t *ctx) {
    Py_ssize_t n = 0;
    walk_records(ctx, count_one, &n);
    ctxpy_snapshot_t *s = snapshot_alloc(n);
    if (!s)
        return NULL;
    s->n = 0;
    walk_records(ctx, collect_one, s);
    s->ctx = ctx;
    PyObject_GC_Track(s);
    return s;
}

static int own_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    (void)var;
    (void)arg;
    ctxpy_record_own(r);
    return 0;
}

typedef struct {
    ctx_context_t *mirror;
    int rc;
} mirror_build_t;

/* Puts a core-owned copy of record `r` in the mirror. */
static int mirror_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    mirror_build_t *m = arg;
    ctxpy_record_t *copy = ctxpy_record_new(r->var, r->value);
    if (!copy) {
        PyErr_Clear();
        return m->rc = CTX_ENOMEM;
    }
    ctxpy_record_own(copy);
    if ((m->rc = ctx_context_set(m->mirror, var, copy)) != 0)
        ctxpy_record_discard(copy);
    return m->rc;
}

ctx_context_t *ctxpy_snapshot_escape(ctxpy_snapshot_t *s) {
    if (s->escaped)
        return s->ctx;
    if (s->mirror)
        return s->mirror;
    ctx_context_t *core = ctxpy_snapshot_core(s);
    if (!core)
        return NULL;
    mirror_build_t m = {NULL, ctx_context_copy(core, &m.mirror)};
    if (m.rc == 0)
        walk_records(core, mirror_one, &m);
    if (m.rc == 0) {
        s->mirror = m.mirror;
        return m.mirror;
    }
    /* No memory for a mirror: hand out the snapshot's own core context,
     * whose records then keep C's references for as long as they live. */
    if (m.mirror)
        ctx_context_release(m.mirror);
    walk_records(core, own_one, NULL);
    s->escaped = 1;
    return core;
}

/* ---------------------------------------------------------------------- */
/* The current snapshot                                                    */
/* ---------------------------------------------------------------------- */

uint64_t ctxpy_free_tsid, ctxpy_free_gen;

int ctxpy_core_entered_slow(PyThreadState *ts) {
    uint64_t gen = ctxpy_gen();
    if (ctx_thread_has_entered())
        return 1;
    ctxpy_free_tsid = ts->id;
    ctxpy_free_gen = gen;
    return 0;
}

ctxpy_current_cache_t ctxpy_cur;
#define cur_snap ctxpy_cur.snap
#define cur_tsid ctxpy_cur.tsid
#define cur_ver ctxpy_cur.ver
#define cur_gen ctxpy_cur.gen

ctxpy_snapshot_t *ctxpy_current_slow(PyThreadState *ts) {
    uint64_t gen = ctxpy_gen();
    /* Entering through ctxvar bumps the generation: a hit above implies
     * none is entered. */
    if (ctxpy_core_entered(ts))
        return NULL;
    PyObject *value = NULL;
    if (PyContextVar_Get(ctxpy_hidden, NULL, &value) < 0) {
        PyErr_Clear();
        value = NULL;
    }
    ctxpy_snapshot_t *s = value ? (ctxpy_snapshot_t *)value : ctxpy_empty;
    Py_XDECREF(value); /* the current Context holds it */
    cur_tsid = ts->id;
    cur_ver = ts->context_ver;
    cur_gen = gen;
    cur_snap = s;
    return s;
}

/* ---------------------------------------------------------------------- */
/* Derive and publish                                                      */
/* ---------------------------------------------------------------------- */

/* A copy of `from` without `var` (the core has no "delete" on a context
 * that is not current: keep every other variable). */
static int copy_without(ctx_context_t *from, ctx_var_t *var, ctx_context_t **out) {
    size_t n = ctx_context_length(from), k = 0;
    ctx_var_t **keep = PyMem_Malloc((n ? n : 1) * sizeof *keep);
    if (!keep)
        return CTX_ENOMEM;
    ctx_iter_t it;
    ctx_var_t *v;
    ctx_iter_init(&it, from);
    while (k < n && ctx_iter_next(&it, &v, NULL))
        if (v != var)
            keep[k++] = v;
    int r = ctx_context_copy_only(from, keep, k, out);
    ctx_iter_clear(&it);
    PyMem_Free(keep);
    return r;
}

/* Copies n pointers, taking a reference to each (reading the source, not
 * the copy just written: no load waits on a wide store of memcpy's). */
static inline void copy_refs(PyObject **dst, PyObject *const *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = Py_NewRef(src[i]);
}

/* `from`'s pairs with `var` set to `value` (NULL: removed), references
 * taken; untracked, no core context. */
static ctxpy_snapshot_t *pairs_with(ctxpy_snapshot_t *from, PyObject *var, PyObject *value) {
    int found = 0;
    Py_ssize_t at = var ? pair_find(from, var, &found) : from->n;
    Py_ssize_t n = from->n + (value && !found) - (!value && found);
    ctxpy_snapshot_t *s = snapshot_alloc(n);
    if (!s)
        return NULL;
    PyObject **src = from->pairs, **dst = s->pairs;
    size_t before = (size_t)(2 * at), after = (size_t)(2 * (from->n - at));
    copy_refs(dst, src, before);
    if (value) {
        dst[before] = Py_NewRef(var);
        dst[before + 1] = Py_NewRef(value);
        if (found)
            copy_refs(dst + before + 2, src + before + 2, after - 2);
        else
            copy_refs(dst + before + 2, src + before, after);
    } else if (found) {
        copy_refs(dst + before, src + before + 2, after - 2);
    } else {
        copy_refs(dst + before, src + before, after);
    }
    return s;
}

ctxpy_snapshot_t *ctxpy_snapshot_with(ctxpy_snapshot_t *from, PyObject *var, PyObject *value) {
    ctxpy_snapshot_t *s = pairs_with(from, var, value);
    if (!s)
        return NULL;
    if (from->ctx) { /* C has looked at `from`: keep a core context */
        ctx_var_t *cvar = ctxpy_var_core(var);
        int r;
        if (value) {
            ctxpy_record_t *rec = ctxpy_record_new(var, value);
            if (!rec) {
                Py_DECREF(s);
                return NULL;
            }
            r = ctx_context_copy(from->ctx, &s->ctx);
            if (r == 0 && (r = ctx_context_set(s->ctx, cvar, rec)) != 0) {
                ctx_context_release(s->ctx);
                s->ctx = NULL;
            }
            if (r)
                ctxpy_record_discard(rec);
        } else {
            r = copy_without(from->ctx, cvar, &s->ctx);
        }
        if (r) {
            Py_DECREF(s);
            ctxpy_drain();
            return (ctxpy_snapshot_t *)ctxpy_error(r);
        }
    }
    PyObject_GC_Track(s);
    return s;
}

ctxpy_snapshot_t *ctxpy_snapshot_with_c(ctxpy_snapshot_t *from, ctx_var_t *var, void *share,
                                        int remove) {
    ctx_context_t *base = ctxpy_snapshot_core(from);
    if (!base)
        return NULL;
    ctxpy_snapshot_t *s = pairs_with(from, NULL, NULL); /* the same pairs */
    if (!s)
        return NULL;
    int r;
    if (remove) {
        r = copy_without(base, var, &s->ctx);
    } else {
        r = ctx_context_copy(base, &s->ctx);
        if (r == 0 && (r = ctx_context_set(s->ctx, var, share)) != 0) {
            ctx_context_release(s->ctx);
            s->ctx = NULL;
        }
    }
    if (r) {
        Py_DECREF(s);
        ctxpy_drain();
        return (ctxpy_snapshot_t *)ctxpy_error(r);
    }
    PyObject_GC_Track(s);
    return s;
}

/* The current snapshot is `snap` now, on this thread. */
static void now_current(PyThreadState *ts, ctxpy_snapshot_t *snap) {
    ctxpy_publishes++;
    cur_gen = ctxpy_gen();
    cur_tsid = ts->id;
    cur_ver = ts->context_ver;
    cur_snap = snap;
}

#if CTXPY_DIRECT
/* Storing the snapshot directly
 * -----------------------------
 * PyContextVar_Set makes a contextvars token on every call (an object the
 * collector tracks) and looks the old value up for it; a set of ctxvar has
 * no use for either.  So the hidden variable's entry goes into the current
 * Context's map through the map type's own `set` and `delete` (the methods
 * CPython's tests call on `_testcapi.hamt()`: one persistent-map insert with
 * path copying), and the new map replaces the Context's, as contextvar_set
 * does, with the hidden variable's per-thread cache updated likewise.
 *
 * The publish keeps the map it replaced and the one it made (`undo`): a
 * reset that finds the Context's map still the one it made, in the same
 * Context, nothing having been set there since, puts the previous map back
 * as it was: no map operation at all. */
static PyCFunction hamt_set_fn;    /* METH_VARARGS: (key, value) → new map */
static PyCFunction hamt_delete_fn; /* METH_O: key → new map; KeyError if absent */
static PyObject *hamt_set_args;    /* (hidden, None): the value is swapped in */

/* The current Context, made now if the thread has none; NULL with an
 * exception. */
static ctxpy_pycontext_t *current_pycontext(PyThreadState *ts) {
    if (!ts->context) { /* made on first use, as contextvars does */
        PyObject *copy = PyContext_CopyCurrent();
        if (!copy)
            return NULL;
        Py_DECREF(copy);
    }
    return (ctxpy_pycontext_t *)ts->context;
}

/* `vars` with the hidden variable holding `snap` (the empty snapshot: the
 * entry removed, as when ctxvar never set anything).  New reference, or
 * NULL with an exception. */
static PyObject *map_with(PyObject *vars, ctxpy_snapshot_t *snap) {
    if (snap == ctxpy_empty) {
        PyObject *map = hamt_delete_fn(vars, ctxpy_hidden);
        if (!map && PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
            map = Py_NewRef(vars);
        }
        return map;
    }
    /* The tuple is only ever this module's (refcount 1), and the method
     * keeps no reference to it. */
    PyObject *args = hamt_set_args;
    PyTuple_SET_ITEM(args, 1, (PyObject *)snap);
    PyObject *map = hamt_set_fn(vars, args);
    PyTuple_SET_ITEM(args, 1, Py_None);
    return map;
}

/* Installs `map` (its reference is the Context's now) as `ctx`'s; `snap`
 * is the hidden variable's value in it. */
static void install_map(PyThreadState *ts, ctxpy_pycontext_t *ctx, PyObject *map,
                        ctxpy_snapshot_t *snap) {
    PyObject *old = ctx->ctx_vars;
    ctx->ctx_vars = map;
    ctxpy_pycontextvar_t *hidden = (ctxpy_pycontextvar_t *)ctxpy_hidden;
    hidden->var_cached = snap == ctxpy_empty ? NULL : (PyObject *)snap;
    hidden->var_cached_tsid = ts->id;
    hidden->var_cached_tsver = ts->context_ver;
    now_current(ts, snap);
    Py_DECREF(old); /* last: may run arbitrary deallocators */
}

int ctxpy_publish(ctxpy_snapshot_t *snap, ctxpy_undo_t *undo) {
    PyThreadState *ts = CTXPY_TSTATE();
    ctxpy_pycontext_t *ctx = current_pycontext(ts);
    if (!ctx)
        return -1;
    PyObject *map = map_with(ctx->ctx_vars, snap);
    if (!map)
        return -1;
    if (undo) {
        undo->before = Py_NewRef(ctx->ctx_vars);
        undo->after = Py_NewRef(map);
    }
    install_map(ts, ctx, map, snap);
    return 0;
}

int ctxpy_unpublish(ctxpy_undo_t *undo, ctxpy_snapshot_t *prev) {
    PyThreadState *ts = CTXPY_TSTATE();
    ctxpy_pycontext_t *ctx = (ctxpy_pycontext_t *)ts->context;
    PyObject *map;
    if (ctx->ctx_vars == undo->after) { /* nothing set here since */
        map = undo->before;
        undo->before = NULL;
    } else if (!(map = map_with(ctx->ctx_vars, prev))) {
        return -1;
    }
    install_map(ts, ctx, map, prev);
    ctxpy_undo_clear(undo);
    return 0;
}

/* Finds the map type's set and delete methods. */
static int direct_ready(void) {
    PyObject *empty = PyContext_New();
    if (!empty)
        return -1;
    PyTypeObject *map_type = Py_TYPE(((ctxpy_pycontext_t *)empty)->ctx_vars);
    for (PyMethodDef *m = map_type->tp_methods; m && m->ml_name; m++) {
        if (strcmp(m->ml_name, "set") == 0 && m->ml_flags == METH_VARARGS)
            hamt_set_fn = m->ml_meth;
        else if (strcmp(m->ml_name, "delete") == 0 && m->ml_flags == METH_O)
            hamt_delete_fn = m->ml_meth;
    }
    Py_DECREF(empty);
    if (!hamt_set_fn || !hamt_delete_fn) {
        PyErr_SetString(PyExc_ImportError,
                        "_ctxvar: this interpreter's context map has no set/delete methods");
        return -1;
    }
    hamt_set_args = PyTuple_Pack(2, ctxpy_hidden, Py_None);
    return hamt_set_args ? 0 : -1;
}
#else
/* The public API: the hidden variable's own tokens. */
int ctxpy_publish(ctxpy_snapshot_t *snap, ctxpy_undo_t *undo) {
    PyObject *token = PyContextVar_Set(ctxpy_hidden, (PyObject *)snap);
    if (!token)
        return -1;
    now_current(CTXPY_TSTATE(), snap); /* the current Context holds it now */
    if (undo) {
        undo->before = token;
        undo->after = NULL;
    } else {
        Py_DECREF(token);
    }
    return 0;
}

int ctxpy_unpublish(ctxpy_undo_t *undo, ctxpy_snapshot_t *prev) {
    if (PyContextVar_Reset(ctxpy_hidden, undo->before) < 0)
        return -1;
    now_current(CTXPY_TSTATE(), prev);
    ctxpy_undo_clear(undo);
    return 0;
}

static int direct_ready(void) { return 0; }
#endif

/* ---------------------------------------------------------------------- */
/* The provider: C code's view of the current snapshot                     */
/* ---------------------------------------------------------------------- */

/* 1 if the calling thread holds the GIL (PyGILState_Check without its
 * "checks disabled" shortcut, which would answer 1 on any thread). */
static int holds_gil(void) {
    PyThreadState *mine = PyGILState_GetThisThreadState();
    return mine && mine == CTXPY_TSTATE_UNCHECKED();
}

static ctx_context_t *provider_current(ctx_provider_use_t use, void *user) {
    (void)user;
    if (!holds_gil())
        return NULL;
    ctxpy_snapshot_t *s = ctxpy_current(CTXPY_TSTATE());
    if (!s)
        return NULL;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    ctx_context_t *ctx = use == CTX_PROVIDER_COPY ? ctxpy_snapshot_escape(s)
                                                  : ctxpy_snapshot_core(s);
    PyErr_Clear(); /* out of memory: C sees its own context this time */
    PyErr_Restore(type, value, traceback);
    return ctx;
}

static int provider_publish(ctx_context_t *ctx, void *user) {
    (void)user;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int r = CTX_ENOMEM;
    ctxpy_snapshot_t *s = ctxpy_snapshot_new(ctx);
    if (s) {
        if (ctxpy_publish(s, NULL) == 0) {
            r = 0;
        } else {
            s->ctx = NULL; /* ctx stays the core's */
        }
        Py_DECREF(s);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, traceback);
    return r;
}

/* A C token's scope: the contextvars.Context it was made in. */
typedef struct {
    ctxpy_deferred_t node;
    PyObject *context;
} scope_t;

static void scope_finish(ctxpy_deferred_t *node) {
    scope_t *s = (scope_t *)node;
    PyObject *context = s->context;
    ctx_free(s, sizeof *s);
    Py_DECREF(context);
}

static void *provider_scope_retain(void *user) {
    (void)user;
    PyThreadState *ts = CTXPY_TSTATE();
    if (!ts->context) { /* made on first use: make it now */
        PyObject *copy = PyContext_CopyCurrent();
        if (!copy) {
            PyErr_Clear();
            return NULL;
        }
        Py_DECREF(copy);
    }
    scope_t *s = ctx_malloc(sizeof *s);
    if (!s)
        return NULL;
    s->node.next = NULL;
    s->node.finish = scope_finish;
    s->context = Py_NewRef(ts->context);
    return s;
}

static int provider_scope_is_current(void *scope, void *user) {
    (void)user;
    return ((scope_t *)scope)->context == CTXPY_TSTATE()->context;
}

static void provider_scope_release(void *scope, void *user) {
    (void)user;
    ctxpy_defer(&((scope_t *)scope)->node);
}

static void provider_switched(void *user) {
    (void)user;
    /* Only Python threads cache; pool workers pay one TSS lookup. */
    if (PyGILState_GetThisThreadState())
        atomic_fetch_add_explicit(&ctxpy_switches, 1, memory_order_relaxed);
}

static const ctx_context_provider_t provider = {
    .size = sizeof(ctx_context_provider_t),
    .current = provider_current,
    .publish = provider_publish,
    .scope_retain = provider_scope_retain,
    .scope_is_current = provider_scope_is_current,
    .scope_release = provider_scope_release,
    .switched = provider_switched,
};

static void uninstall_provider(void) { ctx_set_context_provider(NULL); }

int ctxpy_snapshot_ready(PyObject *module) {
    (void)module;
    if (PyType_Ready(&ctxpy_Snapshot_Type) < 0)
        return -1;
    if (ctxpy_hidden)
        return 0;
    ctxpy_hidden = PyContextVar_New("ctxvar", NULL);
    if (!ctxpy_hidden || direct_ready() < 0)
        return -1;
    ctxpy_empty = snapshot_alloc(0);
    if (!ctxpy_empty)
        return -1;
    PyObject_GC_Track(ctxpy_empty);
    int r = ctx_set_context_provider(&provider);
    if (r) {
        PyErr_Format(PyExc_ImportError,
                     "_ctxvar: cannot install the context provider: %s (another "
                     "interpreter or host already provides ctxvar's current context)",
                     ctx_strerror(r));
        return -1;
    }
    Py_AtExit(uninstall_provider);
    return 0;
}
