/*
 * module.c — the `_ctxvar` extension module: Python's `contextvars` on the
 * ctxvar core, plus the core's persistent map as a Python type.
 *
 * What lives here
 * ---------------
 * Module initialisation, and the three pieces of plumbing every type in the
 * binding relies on:
 *
 * 1. The deferred-release queue.  A value stored in a context is a Python
 *    object; the core calls the variable's `release` operation when the last
 *    context, token or map node holding it goes away.  That can happen
 *
 *      - in the middle of a core call (a set replacing a value), where running
 *        the object's __del__ could re-enter the core for the same context, or
 *      - on a thread that does not hold the GIL (the core's pthread key
 *        destructor at thread exit),
 *
 *    so the release operation never touches a reference count: it pushes the
 *    record onto a lock-free stack (ctxpy_defer), and ctxpy_drain pops the
 *    whole stack and runs each record's `finish` (the Py_DECREFs) at the end
 *    of every entry point, with the GIL held and no core call in progress:
 *
 *        core release op ──push──▶ [ head ] ─▶ rec ─▶ rec ─▶ NULL
 *        ctxpy_drain (GIL) ──exchange(head, NULL)──▶ finish(rec) ...
 *
 *    Pushing is a compare-and-swap loop; draining takes the whole list with
 *    one exchange, so there is no ABA problem.  A finish may deallocate
 *    objects that push more records; the outer drain loops until the stack
 *    is empty, and a nested drain returns at once, so deep chains of objects
 *    are freed iteratively, not recursively.  Records pushed by a thread
 *    without the GIL wait for the next drain on any thread.
 *
 * 2. The thread guard.  The core gives each OS thread a base context, made on
 *    first use and released at thread exit by a pthread key destructor — after
 *    the Python thread state is gone and without the GIL.  CPython's own
 *    contexts live exactly as long as the thread state.  So the first time a
 *    Python thread state does something that may create the core's
 *    per-thread state, a small guard object is stored in the thread state's
 *    dict.  CPython clears that dict in PyThreadState_Clear, on the thread
 *    itself and with the GIL held, when the thread finishes (threading
 *    threads, PyGILState_Release of a foreign thread, and the main thread at
 *    finalisation); the guard's dealloc then calls ctx_thread_release and
 *    drains, so the thread's values are dropped there, like CPython's.  The
 *    key destructor remains the fallback (records then wait in the queue).
 *
 * 3. The counting allocator.  The module owns its copy of the core, so it
 *    installs an allocator that counts live blocks (for leak
 *    checks: `_ctxvar._stats()`), and can be told to fail the n-th
 *    allocation (`_ctxvar._fail_core_alloc(n)`) to test error paths.
 *
 * Functions: ctxpy_defer/ctxpy_drain, guard_* and ctxpy_thread_guard, the
 * count_* allocator hooks, ctxpy_error, the module's own functions, and
 * PyInit__ctxvar.
 */
#include "ctxpy.h"

#include <stdatomic.h>
#include <stdlib.h>

/* ---------------------------------------------------------------------- */
/* The deferred-release queue                                              */
/* ---------------------------------------------------------------------- */

static _Atomic(ctxpy_deferred_t *) deferred_head;
static int draining; /* guarded by the GIL */

void ctxpy_defer(ctxpy_deferred_t *node) {
    ctxpy_deferred_t *head = atomic_load_explicit(&deferred_head, memory_order_relaxed);
    do {
        node->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&deferred_head, &head, node,
                                                    memory_order_release,
                                                    memory_order_relaxed));
}

int ctxpy_pending(void) {
    return atomic_load_explicit(&deferred_head, memory_order_acquire) != NULL;
}

void ctxpy_drain(void) {
    if (draining || !atomic_load_explicit(&deferred_head, memory_order_relaxed))
        return;
    draining = 1;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    ctxpy_deferred_t *list;
    while ((list = atomic_exchange_explicit(&deferred_head, NULL, memory_order_acquire))) {
        while (list) {
            ctxpy_deferred_t *next = list->next;
            list->finish(list);
            list = next;
        }
    }
    PyErr_Restore(type, value, traceback);
    draining = 0;
}

/* ---------------------------------------------------------------------- */
/* The thread guard                                                        */
/* ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    unsigned long owner; /* PyThread_get_thread_ident() of its thread; 0: inert */
} guard_object;

/* The thread state this OS thread's guard was installed for. */
static _Thread_local PyThreadState *guarded_tstate;
static PyObject *guard_key;

static void guard_dealloc(PyObject *self) {
    guard_object *guard = (guard_object *)self;
    if (guard->owner != 0 && guard->owner == PyThread_get_thread_ident()) {
        guarded_tstate = NULL;
        /* CTX_EBUSY (a context entered from C and never exited) leaves the
         * state to the thread-exit destructor. */
        (void)ctx_thread_release();
    }
    PyObject_Free(self);
    ctxpy_drain();
}

static PyTypeObject guard_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_ctxvar._ThreadGuard",
    .tp_basicsize = sizeof(guard_object),
    .tp_dealloc = guard_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Releases this thread's ctxvar state when the thread state is cleared.",
};

int ctxpy_thread_guard(void) {
    PyThreadState *tstate = PyThreadState_Get();
    if (guarded_tstate == tstate)
        return 0;
    PyObject *dict = PyThreadState_GetDict(); /* borrowed */
    if (!dict)
        return 0; /* the key destructor will release the state */
    PyObject *existing = PyDict_GetItemWithError(dict, guard_key);
    if (!existing && PyErr_Occurred())
        return -1;
    if (!existing) {
        guard_object *guard = PyObject_New(guard_object, &guard_type);
        if (!guard)
            return -1;
        guard->owner = 0;
        int r = PyDict_SetItem(dict, guard_key, (PyObject *)guard);
        if (r == 0)
            guard->owner = PyThread_get_thread_ident();
        Py_DECREF(guard);
        if (r < 0)
            return -1;
    }
    guarded_tstate = tstate;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The counting allocator                                                  */
/* ---------------------------------------------------------------------- */

/* Live core blocks: frees may run on threads without the GIL, so atomic (one
 * relaxed read-modify-write per call).  Boxes and items are made and freed
 * only with the GIL held: plain counters. */
static atomic_long core_blocks;
static atomic_long fail_countdown; /* > 0: the n-th allocation from now fails */
static long live_boxes, live_items;

static void *count_malloc(size_t size, void *user) {
    (void)user;
    if (atomic_load_explicit(&fail_countdown, memory_order_relaxed) > 0 &&
        atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed) == 1)
        return NULL;
    void *p = malloc(size ? size : 1);
    if (p)
        atomic_fetch_add_explicit(&core_blocks, 1, memory_order_relaxed);
    return p;
}

static void count_free(void *ptr, size_t size, void *user) {
    (void)size;
    (void)user;
    if (!ptr)
        return;
    atomic_fetch_sub_explicit(&core_blocks, 1, memory_order_relaxed);
    free(ptr);
}

void ctxpy_count_box(int delta) { live_boxes += delta; }

void ctxpy_count_item(int delta) { live_items += delta; }

/* ---------------------------------------------------------------------- */
/* Errors                                                                  */
/* ---------------------------------------------------------------------- */

PyObject *ctxpy_error(int code) {
    if (code == CTX_ENOMEM)
        return PyErr_NoMemory();
    PyErr_Format(PyExc_RuntimeError, "ctxvar: %s (CTX_%s)", ctx_strerror(code),
                 ctx_error_name(code));
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Module functions                                                        */
/* ---------------------------------------------------------------------- */

static PyObject *module_stats(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    ctxpy_drain();
    return Py_BuildValue("{s:l,s:l,s:l,s:O}", "core_blocks",
                         atomic_load_explicit(&core_blocks, memory_order_relaxed), "boxes",
                         live_boxes, "items", live_items, "pending",
                         ctxpy_pending() ? Py_True : Py_False);
}

static PyObject *module_drain(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    ctxpy_drain();
    Py_RETURN_NONE;
}

static PyObject *module_fail_core_alloc(PyObject *module, PyObject *arg) {
    (void)module;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    atomic_store_explicit(&fail_countdown, n > 0 ? n : 0, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *module_thread_release(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    int r = ctx_thread_release();
    ctxpy_drain();
    if (r == CTX_EBUSY) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot release the thread's contexts: a context is entered");
        return NULL;
    }
    if (r)
        return ctxpy_error(r);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"copy_context", ctxpy_copy_context, METH_NOARGS,
     PyDoc_STR("copy_context() -> Context\n\nA copy of the current context (O(1)).")},
    {"hamt", ctxpy_hamt_new_empty, METH_NOARGS,
     PyDoc_STR("hamt() -> Hamt\n\nA new empty persistent map.")},
    {"_stats", module_stats, METH_NOARGS,
     PyDoc_STR("_stats() -> dict\n\nLive core blocks, value boxes and map items "
               "(after draining pending releases). For leak checks.")},
    {"_drain", module_drain, METH_NOARGS,
     PyDoc_STR("_drain()\n\nDrops the references released by other threads now.")},
    {"_fail_core_alloc", module_fail_core_alloc, METH_O,
     PyDoc_STR("_fail_core_alloc(n)\n\nMakes the n-th core allocation from now fail "
               "(1 = the next); 0 disarms. For tests.")},
    {"_set_in_native_thread", (PyCFunction)(void (*)(void))ctxpy_set_in_native_thread,
     METH_FASTCALL,
     PyDoc_STR("_set_in_native_thread(var, value) -> bool\n\nSets var to value on a new "
               "native thread (no Python thread state, no GIL) that then exits, so the "
               "core's thread-exit destructor releases the value; returns whether the "
               "release is waiting in the deferred queue (not drained yet). For tests.")},
    {"_thread_release", module_thread_release, METH_NOARGS,
     PyDoc_STR("_thread_release()\n\nReleases this thread's base context now (its values "
               "are lost). For leak checks.")},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
             "Python's contextvars (PEP 567) on the ctxvar C core.\n\n"
             "ContextVar, Context, Token and copy_context behave as the standard\n"
             "library's; Hamt is the core's persistent map with Python keys.");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_ctxvar",
    .m_doc = module_doc,
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__ctxvar(void) {
    static int allocator_installed;
    if (!allocator_installed) {
        /* Before any core object exists: this copy of the core is ours. */
        ctx_allocator_t allocator = {sizeof(ctx_allocator_t), count_malloc, count_free, NULL};
        if (ctx_set_allocator(&allocator) != 0) {
            PyErr_SetString(PyExc_ImportError, "_ctxvar: cannot install the allocator");
            return NULL;
        }
        allocator_installed = 1;
    }
    if (PyType_Ready(&guard_type) < 0)
        return NULL;
    if (!guard_key && !(guard_key = PyUnicode_InternFromString("_ctxvar.thread_guard")))
        return NULL;

    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    if (ctxpy_contextvars_ready(module) < 0 || ctxpy_hamt_ready(module) < 0)
        goto error;
    if (PyModule_AddStringConstant(module, "__version__", ctx_version_string()) < 0)
        goto error;
    PyObject *all = Py_BuildValue("(ssss)", "Context", "ContextVar", "Token", "copy_context");
    if (!all || PyModule_AddObject(module, "__all__", all) < 0) {
        Py_XDECREF(all);
        goto error;
    }
    return module;

error:
    Py_DECREF(module);
    return NULL;
}
