/* SPDX-License-Identifier: MIT */
/*
 * ctxpy.h — what the Python binding's source files share (internal to
 * src/python; the extension module is `_ctxvar`).
 *
 *   module.c       module init; the deferred-release queue; the test
 *                  allocator; error mapping; the module's functions.
 *   snapshot.c     the binding's half of "one context for Python and C":
 *                  value records, snapshots (immutable core contexts kept in
 *                  a hidden contextvars.ContextVar), finding the current one,
 *                  publishing a new one, and the context provider that lets
 *                  C code (ctx_var_get & co. in the shared libctxvar) see them.
 *   contextvars.c  ContextVar, Token, Context, their iterators, copy_context.
 *   pyhamt.c       Hamt: a private compiled copy of the core's map
 *                  (src/core/hamt.c, hidden in this module) with Python keys,
 *                  what CPython's tests reach as `_testcapi.hamt()`.
 *   hamt_alloc.c   the allocator that private copy calls (ctx__malloc).
 *
 * Everything else of the core is the shared library libctxvar, reached only
 * through its public headers: the same core any C extension in the process
 * links.  All binding code runs with the GIL held, except the functions the
 * core may call on any thread: the values' release operation (record_release)
 * and the provider's scope_release, which only queue work for ctxpy_drain,
 * and the provider's `switched`, which touches one atomic counter.
 */
#ifndef CTX_PYTHON_CTXPY_H
#define CTX_PYTHON_CTXPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>

#include <ctxvar.h>
#include <ctxvar/host.h>

/* ---- the deferred-release queue (module.c) ---- */

/* A node of the queue, embedded in whatever is queued. `finish` runs later
 * with the GIL held: it drops the references and frees the record. */
typedef struct ctxpy_deferred {
    struct ctxpy_deferred *next;
    void (*finish)(struct ctxpy_deferred *node);
} ctxpy_deferred_t;

/* Queues `node`; any thread, GIL or not, never allocates. */
void ctxpy_defer(ctxpy_deferred_t *node);
/* 1 if records are waiting in the queue. */
int ctxpy_pending(void);
/* Runs every queued finish (GIL held; never inside a core call). Cheap when
 * the queue is empty (one load). Preserves a pending exception. */
extern _Atomic(ctxpy_deferred_t *) ctxpy_deferred_head;
void ctxpy_drain_queue(void);
static inline void ctxpy_drain(void) {
    if (atomic_load_explicit(&ctxpy_deferred_head, memory_order_relaxed))
        ctxpy_drain_queue();
}

#if defined(__GNUC__) || defined(__clang__)
#define CTXPY_LIKELY(x) __builtin_expect(!!(x), 1)
#define CTXPY_NOINLINE __attribute__((noinline))
#else
#define CTXPY_LIKELY(x) (x)
#define CTXPY_NOINLINE
#endif

/* The calling thread's state; the GIL is held, so never NULL. */
#if PY_VERSION_HEX >= 0x030D0000
#define CTXPY_TSTATE() PyThreadState_GetUnchecked()
#else
#define CTXPY_TSTATE() _PyThreadState_UncheckedGet()
#endif

/* ---- free lists (GIL held) ----
 *
 * The binding's short-lived objects (a Context per copy_context(), a Token
 * and a snapshot per set) are recycled, as CPython recycles its Contexts:
 * an object is put back untracked with its fields cleared, and comes out
 * with a new first reference (PyObject_Init). */
#define CTXPY_FREELIST_SIZE 64
typedef struct {
    PyObject *items[CTXPY_FREELIST_SIZE];
    int n;
} ctxpy_freelist_t;

static inline PyObject *ctxpy_freelist_new(ctxpy_freelist_t *fl, PyTypeObject *type) {
    if (fl->n) {
        PyObject *op = fl->items[--fl->n];
#if defined(Py_REF_DEBUG) || defined(Py_TRACE_REFS)
        return PyObject_Init(op, type);
#else
        /* What PyObject_Init does for a static type in a release build,
         * without the call (the type is already set). */
        Py_SET_REFCNT(op, 1);
        return op;
#endif
    }
    return (PyObject *)_PyObject_GC_New(type);
}

/* `op` is untracked, with no references left in it. */
static inline void ctxpy_freelist_free(ctxpy_freelist_t *fl, PyObject *op) {
    if (fl->n < CTXPY_FREELIST_SIZE)
        fl->items[fl->n++] = op;
    else
        PyObject_GC_Del(op);
}

/* ---- errors and accounting (module.c) ---- */

/* Sets a Python exception for a core error code (MemoryError for
 * CTX_ENOMEM, RuntimeError otherwise) and returns NULL. */
PyObject *ctxpy_error(int code);

/* Live value records (snapshot.c) and hamt items (pyhamt.c), for leak
 * checks. */
long ctxpy_records_alive(void);
long ctxpy_items_alive(void);

/* The test allocator's failure countdown, shared with hamt_alloc.c: > 0
 * means the n-th allocation from now fails.  Returns 1 if this allocation
 * must fail. */
int ctxpy_alloc_should_fail(void);
/* Counts a block in or out of the live-block counter. */
void ctxpy_alloc_count(long delta);

/* ---- value records (snapshot.c) ----
 *
 * What a ContextVar made in Python stores in a core context: one record per
 * set.  `value` comes first so that C code can read a Python value with
 * *(PyObject **)value.  The record holds references of its own only while
 * `core_owned` (the context it is in reached C: see snapshot.c); otherwise
 * the snapshots containing it hold them. */
typedef struct ctxpy_record {
    PyObject *value;
    PyObject *var; /* the ContextVar */
    ctxpy_deferred_t node;
    int core_owned;
} ctxpy_record_t;

/* The value operations of every variable made in Python (release =
 * record_release); a variable is "ours" iff its ops' release is it. */
extern const ctx_value_ops_t ctxpy_record_ops;
static inline int ctxpy_is_record_var(const ctx_var_t *var) {
    const ctx_value_ops_t *ops = ctx_var_ops(var);
    return ops && ops->release == ctxpy_record_ops.release;
}

/* A new record (no references taken yet), or NULL with MemoryError. */
ctxpy_record_t *ctxpy_record_new(PyObject *var, PyObject *value);
/* Frees a record no context took. */
void ctxpy_record_discard(ctxpy_record_t *record);
/* Makes the record hold references of its own (once). */
void ctxpy_record_own(ctxpy_record_t *record);

/* ---- snapshots (snapshot.c) ---- */

typedef struct {
    PyObject_VAR_HEAD        /* ob_size: room for 2 * n pointers */
    Py_ssize_t n;            /* (ContextVar, value) pairs, sorted by the variable's address */
    ctx_context_t *ctx;      /* the core context, made when C needs it; then never changed */
    ctx_context_t *mirror;   /* what C copies of it: ctx with core-owned records */
    int escaped;             /* ctx's own records are core-owned (made in C's context) */
    uint64_t serial;         /* unique: tells a snapshot from a later one at its address */
    PyObject *pairs[1];      /* var, value, var, value, ...: one reference each */
} ctxpy_snapshot_t;

extern PyTypeObject ctxpy_Snapshot_Type;
/* The hidden contextvars.ContextVar whose value is the current snapshot. */
extern PyObject *ctxpy_hidden;
/* The snapshot of a context where ctxvar never set anything. */
extern ctxpy_snapshot_t *ctxpy_empty;
/* The generation: a cache keyed on (thread id, context version,
 * generation) is valid while all three are unchanged.  It is the sum of two
 * counters that only grow: one bumped by every publish (GIL held: a plain
 * increment), one by every context switch ctxvar makes on a Python thread
 * (any thread, GIL or not: atomic). */
extern uint64_t ctxpy_publishes;
extern atomic_uint_fast64_t ctxpy_switches;

static inline uint64_t ctxpy_gen(void) {
    return ctxpy_publishes + atomic_load_explicit(&ctxpy_switches, memory_order_relaxed);
}

/* The value of the Python-made variable `var` in `snap` (borrowed), or NULL. */
PyObject *ctxpy_snapshot_get(ctxpy_snapshot_t *snap, PyObject *var);
/* Number of variables with a value. */
Py_ssize_t ctxpy_snapshot_len(ctxpy_snapshot_t *snap);
/* `snap`'s core context, made now if it has none (borrowed), or NULL with
 * an exception. */
ctx_context_t *ctxpy_snapshot_core(ctxpy_snapshot_t *snap);
/* A snapshot of the core context `ctx`, owning its reference on success (new
 * reference), or NULL with an exception (ctx then stays the caller's). */
ctxpy_snapshot_t *ctxpy_snapshot_new(ctx_context_t *ctx);
/* 1 if a context entered through ctxvar is current on this thread (then the
 * core's API is the way in), else 0; cached on (thread id, generation),
 * since every such switch on a Python thread bumps the generation. */
extern uint64_t ctxpy_free_tsid, ctxpy_free_gen;
int ctxpy_core_entered_slow(PyThreadState *ts);
static inline int ctxpy_core_entered(PyThreadState *ts) {
    if (ts->id == ctxpy_free_tsid && ctxpy_gen() == ctxpy_free_gen)
        return 0;
    return ctxpy_core_entered_slow(ts);
}
/* The current snapshot (borrowed: the current contextvars.Context holds it),
 * or NULL if a context entered through ctxvar is current.  Never fails.
 * Cached on (thread id, context version, generation): a hit is inline. */
typedef struct {
    uint64_t tsid, ver, gen;
    ctxpy_snapshot_t *snap;
} ctxpy_current_cache_t;
extern ctxpy_current_cache_t ctxpy_cur;
ctxpy_snapshot_t *ctxpy_current_slow(PyThreadState *ts);
static inline ctxpy_snapshot_t *ctxpy_current(PyThreadState *ts) {
    if (ts->id == ctxpy_cur.tsid && ts->context_ver == ctxpy_cur.ver &&
        ctxpy_gen() == ctxpy_cur.gen)
        return ctxpy_cur.snap;
    return ctxpy_current_slow(ts);
}
/* `from` with the Python-made variable `var` set to `value` (NULL: removed).
 * New reference, or NULL with an exception. */
ctxpy_snapshot_t *ctxpy_snapshot_with(ctxpy_snapshot_t *from, PyObject *var, PyObject *value);
/* `from` with the C variable `var` set to `share` (one share of a C value,
 * which the new snapshot owns on success) or removed.  New reference, or
 * NULL with an exception (the share stays the caller's). */
ctxpy_snapshot_t *ctxpy_snapshot_with_c(ctxpy_snapshot_t *from, ctx_var_t *var, void *share,
                                        int remove);
/* What undoes a publish (ctxpy_unpublish): two strong references or NULLs.
 * Direct stores (CTXPY_DIRECT): the current Context's map before the publish
 * and the map it made (kept for its identity); otherwise the hidden
 * variable's contextvars token in `before`. */
typedef struct {
    PyObject *before;
    PyObject *after;
} ctxpy_undo_t;
/* Makes `snap` the current snapshot (the current Context holds it); fills
 * `undo` if not NULL.  0, or -1 with an exception (nothing changed). */
int ctxpy_publish(ctxpy_snapshot_t *snap, ctxpy_undo_t *undo);
/* Undoes the publish `undo` recorded, in the Context it was made in, which
 * must be current with the published snapshot still current: `prev` (the
 * snapshot current before it) is current again, and `undo` is cleared.  0,
 * or -1 with an exception (nothing changed). */
int ctxpy_unpublish(ctxpy_undo_t *undo, ctxpy_snapshot_t *prev);
/* Drops undo's references. */
static inline void ctxpy_undo_clear(ctxpy_undo_t *undo) {
    Py_CLEAR(undo->before);
    Py_CLEAR(undo->after);
}

/* ---- CPython's Context and ContextVar objects ----
 *
 * Their layout (Include/internal/pycore_context.h), the same in 3.11, 3.12
 * and 3.13 without free threading, so that the binding stores its snapshot
 * in the current Context's map itself (snapshot.c: one map insert and no
 * contextvars token per set).  layout.c checks these against CPython's own
 * definitions at compile time; other versions, and builds defining
 * CTXPY_PUBLIC_API_ONLY, use the public API (PyContextVar_Set/Reset). */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED) && \
    !defined(CTXPY_PUBLIC_API_ONLY)
#define CTXPY_DIRECT 1
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars; /* the map (a hamt): replaced, never changed */
    PyObject *ctx_weakreflist;
    int ctx_entered;
} ctxpy_pycontext_t;

typedef struct {
    PyObject_HEAD
    PyObject *var_name;
    PyObject *var_default;
    PyObject *var_cached; /* borrowed; valid for (tsid, tsver) */
    uint64_t var_cached_tsid;
    uint64_t var_cached_tsver;
    Py_hash_t var_hash;
} ctxpy_pycontextvar_t;
#else
#define CTXPY_DIRECT 0
#endif
/* The core context to hand to C for `snap` (C will copy it and keep the
 * copy): its mirror, made on first use.  Borrowed, or NULL with an
 * exception. */
ctx_context_t *ctxpy_snapshot_escape(ctxpy_snapshot_t *snap);
/* Sets up the hidden variable, the empty snapshot, the provider. 0 or -1. */
int ctxpy_snapshot_ready(PyObject *module);

/* ---- variables (contextvars.c) ---- */

extern PyTypeObject ctxpy_ContextVar_Type;
extern PyTypeObject ctxpy_Token_Type;
extern PyTypeObject ctxpy_Context_Type;
extern PyTypeObject ctxpy_ContextIter_Type;
extern PyTypeObject ctxpy_TokenMissing_Type;
extern PyTypeObject ctxpy_Hamt_Type;
extern PyTypeObject ctxpy_HamtIter_Type;

/* The Python object for a value `value` of core variable `var` as found
 * in a context (a record's object, or a C value converted to str); new
 * reference or NULL with an exception. */
PyObject *ctxpy_value_object(ctx_var_t *var, void *value);
/* The ContextVar object for a core variable (ours: the record's var; a C
 * variable: its wrapper, made on first use); new reference or NULL. */
PyObject *ctxpy_var_object(ctx_var_t *var, void *value);
/* The core variable of a ContextVar object. */
ctx_var_t *ctxpy_var_core(PyObject *var);

int ctxpy_contextvars_ready(PyObject *module);
int ctxpy_hamt_ready(PyObject *module);

PyObject *ctxpy_copy_context(PyObject *module, PyObject *unused);
PyObject *ctxpy_set_in_native_thread(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *ctxpy_hamt_new_empty(PyObject *module, PyObject *unused);

#endif /* CTX_PYTHON_CTXPY_H */
