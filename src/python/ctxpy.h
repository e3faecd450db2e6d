/*
 * ctxpy.h — what the Python binding's source files share (internal to
 * src/python; the extension module is `_ctxvar`).
 *
 *   module.c       module init; the deferred-release queue; the per-thread
 *                  guard that releases a Python thread's ctxvar state when
 *                  its thread state is cleared; the counting allocator
 *                  installed in the core; error mapping.
 *   contextvars.c  ContextVar, Token, Context, their iterators, copy_context:
 *                  Python's `contextvars` on ctx_var_* / ctx_context_*.
 *   pyhamt.c       Hamt: the core's persistent map (ctx__hamt_*) with Python
 *                  hashing and equality, what CPython's tests reach as
 *                  `_testcapi.hamt()`.
 *
 * The core is compiled into the module (hidden symbols), so this copy of the
 * core is reached only through the module, always with the GIL held — except
 * for the per-thread state a thread releases at exit from a pthread key
 * destructor, which runs without it.  That is why no value is ever dropped
 * from inside the core: every release operation only *queues* the object
 * (ctxpy_defer), and ctxpy_drain, called at the end of each entry point with
 * the GIL held and no core call in progress, does the Py_DECREFs.  Running
 * arbitrary __del__ code therefore never re-enters the core in the middle of
 * one of its operations, and a thread without the GIL never touches a
 * reference count.
 */
#ifndef CTX_PYTHON_CTXPY_H
#define CTX_PYTHON_CTXPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <ctxvar.h>

#include "core/core.h"
#include "core/hamt.h"

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
 * the queue is empty. Preserves a pending exception. */
void ctxpy_drain(void);

/* ---- per-thread state (module.c) ---- */

/* Makes sure the calling Python thread releases its ctxvar per-thread state
 * (its base context) when its thread state is cleared, with the GIL held.
 * Call before anything that may create that state. 0, or -1 with an
 * exception set. */
int ctxpy_thread_guard(void);

/* ---- errors (module.c) ---- */

/* Sets a Python exception for a core error code (MemoryError for
 * CTX_ENOMEM, RuntimeError otherwise) and returns NULL. */
PyObject *ctxpy_error(int code);

/* ---- accounting for leak checks (module.c; GIL held) ---- */

void ctxpy_count_box(int delta);
void ctxpy_count_item(int delta);

/* ---- types and module-level functions ---- */

extern PyTypeObject ctxpy_ContextVar_Type;
extern PyTypeObject ctxpy_Token_Type;
extern PyTypeObject ctxpy_Context_Type;
extern PyTypeObject ctxpy_ContextIter_Type;
extern PyTypeObject ctxpy_TokenMissing_Type;
extern PyTypeObject ctxpy_Hamt_Type;
extern PyTypeObject ctxpy_HamtIter_Type;

/* Readies the types of contextvars.c / pyhamt.c; 0 or -1. */
int ctxpy_contextvars_ready(PyObject *module);
int ctxpy_hamt_ready(PyObject *module);

PyObject *ctxpy_copy_context(PyObject *module, PyObject *unused);
PyObject *ctxpy_set_in_native_thread(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *ctxpy_hamt_new_empty(PyObject *module, PyObject *unused);

#endif /* CTX_PYTHON_CTXPY_H */
