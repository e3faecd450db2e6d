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
 * A *snapshot* is a Python object around a core context that nobody ever
 * enters or changes: Python contexts share snapshots by reference, so a
 * snapshot must be immutable.  A set therefore derives a new snapshot (an
 * O(1) core copy plus the one change: ctx_context_copy + ctx_context_set)
 * and stores it in the hidden variable (PyContextVar_Set); the previous
 * snapshot stays valid for every context and token that still holds it.
 *
 * C sees the same thing
 * ---------------------
 * The core asks for the current context through the provider installed here
 * (ctxvar/host.h): `current` answers with the current snapshot's core
 * context when the calling thread holds the GIL, `publish` turns a context
 * the core built for a C-side set into a snapshot and stores it, the scope
 * functions bind C tokens to the Python Context they were made in, and
 * `switched` bumps ctxpy_generation when C enters or leaves a context on a
 * Python thread (then the core's context comes first: host.h).  A thread
 * without the GIL gets NULL and uses its own core context.
 *
 * Finding the current snapshot fast
 * ---------------------------------
 * (thread id, the thread's context version, ctxpy_generation) identifies it:
 * CPython bumps the version on every Context enter and exit, ctxvar bumps the
 * generation on every publish and every switch it makes on a Python thread.
 * One cache slot here, and one per ContextVar (contextvars.c), hold the
 * answer for that key; a hit costs three compares.
 *
 * Records, and who holds references
 * ---------------------------------
 * A value set from Python is stored in the core as a record (ctxpy.h) that
 * points at the object and at its ContextVar.  Which Python references exist
 * is chosen so that the garbage collector sees every one of them exactly
 * once, even though core maps share nodes invisibly between snapshots:
 *
 *   - every snapshot holds its *own* reference to the object and to the
 *     ContextVar of each record in its map (taken when it is made: O(n) in
 *     the number of variables set, which is small), and its tp_traverse
 *     visits exactly those (through the public iteration API);
 *   - what C copies (the provider's CTX_PROVIDER_COPY: a pool submit, a loop
 *     call, ctx_context_copy_current) is not the snapshot's map but its
 *     *mirror*: a copy of it, made on first use, in which each record is
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
 * Functions: records; the Snapshot type (hold/visit walks); the current
 * snapshot; derive and publish; the provider; ctxpy_snapshot_ready.
 */
#include "ctxpy.h"

#if PY_VERSION_HEX >= 0x030D0000
#define CTXPY_TSTATE_UNCHECKED() PyThreadState_GetUnchecked()
#else
#define CTXPY_TSTATE_UNCHECKED() _PyThreadState_UncheckedGet()
#endif

PyObject *ctxpy_hidden;
ctxpy_snapshot_t *ctxpy_empty;
atomic_uint_fast64_t ctxpy_generation = 1;

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
 * variables made in Python) until fn returns non-zero; returns that.  fn may
 * run Python code, which must not release `ctx`. */
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

/* Snapshots' contexts never change, so ctx_context_visit walks them without
 * a lock or a retained root. */
static int walk_records(ctx_context_t *ctx, record_fn fn, void *arg) {
    walk_t w = {fn, arg};
    return ctx_context_visit(ctx, walk_one, &w);
}

static int hold_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    (void)var;
    (void)arg;
    Py_INCREF(r->value);
    Py_INCREF(r->var);
    return 0;
}

static int drop_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    (void)var;
    (void)arg;
    Py_DECREF(r->value);
    Py_DECREF(r->var);
    return 0;
}

/* Takes (+1) or drops (-1) the snapshot's references to its records'
 * objects and variables. */
static void snapshot_hold(ctx_context_t *ctx, int delta) {
    walk_records(ctx, delta > 0 ? hold_one : drop_one, NULL);
}

static ctxpy_freelist_t snapshot_freelist;

static ctxpy_snapshot_t *snapshot_alloc(void) {
    ctxpy_snapshot_t *s =
        (ctxpy_snapshot_t *)ctxpy_freelist_new(&snapshot_freelist, &ctxpy_Snapshot_Type);
    static uint64_t serials;
    if (s) {
        s->ctx = NULL;
        s->mirror = NULL;
        s->escaped = 0;
        s->serial = ++serials;
    }
    return s;
}

/* Gives `s` (fresh from snapshot_alloc) the caller's reference to `ctx`;
 * cannot fail. */
static void snapshot_attach(ctxpy_snapshot_t *s, ctx_context_t *ctx) {
    s->ctx = ctx;
    snapshot_hold(ctx, +1);
    PyObject_GC_Track(s);
}

/* Undoes snapshot_attach: the context is the caller's again. */
static void snapshot_detach(ctxpy_snapshot_t *s) {
    ctx_context_t *ctx = s->ctx;
    PyObject_GC_UnTrack(s);
    s->ctx = NULL;
    snapshot_hold(ctx, -1);
}

ctxpy_snapshot_t *ctxpy_snapshot_new(ctx_context_t *ctx) {
    ctxpy_snapshot_t *s = snapshot_alloc();
    if (s)
        snapshot_attach(s, ctx);
    return s;
}

typedef struct {
    visitproc visit;
    void *arg;
} visit_args_t;

static int visit_one(ctx_var_t *var, ctxpy_record_t *r, void *arg) {
    (void)var;
    visit_args_t *va = arg;
    int err = va->visit(r->value, va->arg);
    return err ? err : va->visit(r->var, va->arg);
}

/* The mirror's references that only the mirror keeps alive. */
static int visit_mirrored(ctx_var_t *var, void *value, int exclusive, void *arg) {
    if (!exclusive || !ctxpy_is_record_var(var))
        return 0;
    return visit_one(var, value, arg);
}

static int snapshot_traverse(ctxpy_snapshot_t *self, visitproc visit, void *arg) {
    if (!self->ctx)
        return 0;
    visit_args_t va = {visit, arg};
    int err = walk_records(self->ctx, visit_one, &va);
    if (!err && self->mirror)
        err = ctx_context_visit(self->mirror, visit_mirrored, &va);
    return err;
}

static int snapshot_clear(ctxpy_snapshot_t *self) {
    ctx_context_t *ctx = self->ctx, *mirror = self->mirror;
    self->mirror = NULL;
    ctx_context_release(mirror); /* its records go when C's copies go */
    if (ctx) {
        self->ctx = NULL;
        snapshot_hold(ctx, -1);
        ctx_context_release(ctx);
        ctxpy_drain();
    }
    return 0;
}

static void snapshot_dealloc(ctxpy_snapshot_t *self) {
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, snapshot_dealloc)
    snapshot_clear(self);
    ctxpy_freelist_free(&snapshot_freelist, (PyObject *)self);
    Py_TRASHCAN_END
}

PyTypeObject ctxpy_Snapshot_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_ctxvar._Snapshot",
    .tp_basicsize = sizeof(ctxpy_snapshot_t),
    .tp_dealloc = (destructor)snapshot_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("ctxvar's variables in one contextvars.Context (immutable)."),
    .tp_traverse = (traverseproc)snapshot_traverse,
    .tp_clear = (inquiry)snapshot_clear,
};

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
    (void)var;
    mirror_build_t *m = arg;
    ctxpy_record_t *copy = ctx_malloc(sizeof *copy);
    if (!copy)
        return m->rc = CTX_ENOMEM;
    atomic_fetch_add_explicit(&live_records, 1, memory_order_relaxed);
    *copy = *r;
    copy->node.next = NULL;
    copy->core_owned = 0;
    ctxpy_record_own(copy);
    if ((m->rc = ctx_context_set(m->mirror, var, copy)) != 0)
        ctxpy_record_discard(copy);
    return m->rc;
}

ctx_context_t *ctxpy_snapshot_escape(ctxpy_snapshot_t *s) {
    if (!s->ctx)
        return ctxpy_empty->ctx;
    if (s->escaped)
        return s->ctx;
    if (s->mirror)
        return s->mirror;
    mirror_build_t m = {NULL, ctx_context_copy(s->ctx, &m.mirror)};
    if (m.rc == 0)
        walk_records(s->ctx, mirror_one, &m);
    if (m.rc == 0) {
        s->mirror = m.mirror;
        return m.mirror;
    }
    /* No memory for a mirror: hand out the snapshot's own map, whose records
     * then keep C's references for as long as they live. */
    ctx_context_release(m.mirror);
    walk_records(s->ctx, own_one, NULL);
    s->escaped = 1;
    return s->ctx;
}

/* ---------------------------------------------------------------------- */
/* The current snapshot                                                    */
/* ---------------------------------------------------------------------- */

static uint64_t free_tsid, free_gen; /* known: nothing entered through ctxvar */

int ctxpy_core_entered(PyThreadState *ts) {
    uint64_t gen = ctxpy_gen();
    if (ts->id == free_tsid && gen == free_gen)
        return 0;
    if (ctx_thread_has_entered())
        return 1;
    free_tsid = ts->id;
    free_gen = gen;
    return 0;
}

static ctxpy_snapshot_t *cur_snap;
static uint64_t cur_tsid, cur_ver, cur_gen;

ctxpy_snapshot_t *ctxpy_current(PyThreadState *ts) {
    uint64_t gen = ctxpy_gen();
    if (ts->id == cur_tsid && ts->context_ver == cur_ver && gen == cur_gen)
        return cur_snap;
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

static ctx_context_t *snap_ctx(ctxpy_snapshot_t *s) {
    return s->ctx ? s->ctx : ctxpy_empty->ctx;
}

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

ctxpy_snapshot_t *ctxpy_snapshot_derive(ctxpy_snapshot_t *from, ctx_var_t *var, void *value,
                                        int remove) {
    ctxpy_snapshot_t *s = snapshot_alloc(); /* first: nothing after can fail late */
    if (!s)
        return NULL;
    ctx_context_t *next = NULL;
    int r;
    if (remove) {
        r = copy_without(snap_ctx(from), var, &next);
    } else {
        r = ctx_context_copy(snap_ctx(from), &next);
        if (r == 0 && (r = ctx_context_set(next, var, value)) != 0) {
            ctx_context_release(next);
            next = NULL;
        }
    }
    if (r) {
        Py_DECREF(s);
        ctxpy_drain();
        return (ctxpy_snapshot_t *)ctxpy_error(r);
    }
    snapshot_attach(s, next);
    return s;
}

void ctxpy_restored(ctxpy_snapshot_t *snap) {
    PyThreadState *ts = PyThreadState_Get();
    cur_gen = atomic_fetch_add_explicit(&ctxpy_generation, 1, memory_order_relaxed) + 1;
    cur_tsid = ts->id;
    cur_ver = ts->context_ver;
    cur_snap = snap;
}

PyObject *ctxpy_publish(ctxpy_snapshot_t *snap) {
    PyObject *token = PyContextVar_Set(ctxpy_hidden, (PyObject *)snap);
    if (!token)
        return NULL;
    PyThreadState *ts = PyThreadState_Get();
    cur_gen = atomic_fetch_add_explicit(&ctxpy_generation, 1, memory_order_relaxed) + 1;
    cur_tsid = ts->id;
    cur_ver = ts->context_ver;
    cur_snap = snap; /* the current Context holds it now */
    return token;
}

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
    ctxpy_snapshot_t *s = ctxpy_current(PyThreadState_Get());
    if (!s)
        return NULL;
    if (use == CTX_PROVIDER_COPY)
        return ctxpy_snapshot_escape(s);
    return snap_ctx(s);
}

static int provider_publish(ctx_context_t *ctx, void *user) {
    (void)user;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int r = CTX_ENOMEM;
    ctxpy_snapshot_t *s = snapshot_alloc();
    if (s) {
        snapshot_attach(s, ctx);
        PyObject *token = ctxpy_publish(s);
        if (token) {
            Py_DECREF(token);
            r = 0;
        } else {
            snapshot_detach(s); /* ctx stays the core's */
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
    PyThreadState *ts = PyThreadState_Get();
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
    return ((scope_t *)scope)->context == PyThreadState_Get()->context;
}

static void provider_scope_release(void *scope, void *user) {
    (void)user;
    ctxpy_defer(&((scope_t *)scope)->node);
}

static void provider_switched(void *user) {
    (void)user;
    /* Only Python threads cache; pool workers pay one TSS lookup. */
    if (PyGILState_GetThisThreadState())
        atomic_fetch_add_explicit(&ctxpy_generation, 1, memory_order_relaxed);
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
    if (!ctxpy_hidden)
        return -1;
    ctx_context_t *empty;
    int r = ctx_context_new(&empty);
    if (r) {
        ctxpy_error(r);
        return -1;
    }
    ctxpy_empty = ctxpy_snapshot_new(empty);
    if (!ctxpy_empty) {
        ctx_context_release(empty);
        return -1;
    }
    r = ctx_set_context_provider(&provider);
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
