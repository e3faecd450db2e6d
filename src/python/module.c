/* SPDX-License-Identifier: MIT */
/*
 * module.c — the `_ctxvar` extension module: Python's `contextvars` on the
 * shared ctxvar core (libctxvar, the library C code links), plus a private
 * copy of the core's persistent map as a Python type.
 *
 * What lives here
 * ---------------
 * Module initialisation, and the plumbing the types rely on:
 *
 * 1. The deferred-release queue.  The core calls a variable's `release`
 *    operation when the last context, token or map node holding a value goes
 *    away.  For a value C code kept (a record that is "core-owned":
 *    snapshot.c) that can happen
 *
 *      - in the middle of a core call, where running the object's __del__
 *        could re-enter the core for the same context, or
 *      - on a thread that does not hold the GIL (a pool worker dropping the
 *        last copy, the core's thread-exit destructor),
 *
 *    so the release operation never touches a reference count: it pushes
 *    the record onto a lock-free stack (ctxpy_defer), and ctxpy_drain pops
 *    the whole stack and runs each record's `finish` (the Py_DECREFs) at the
 *    end of the binding's entry points, with the GIL held and no core call
 *    in progress:
 *
 *        core release op ──push──▶ [ head ] ─▶ rec ─▶ rec ─▶ NULL
 *        ctxpy_drain (GIL) ──exchange(head, NULL)──▶ finish(rec) ...
 *
 *    Pushing is a compare-and-swap loop; draining takes the whole list with
 *    one exchange, so there is no ABA problem.  A finish may deallocate
 *    objects that push more records; the outer drain loops until the stack
 *    is empty, and a nested drain returns at once.  Records pushed by a
 *    thread without the GIL wait for the next drain on any thread.  C
 *    tokens' scopes (snapshot.c) go the same way.
 *
 * 2. The test allocator.  The core is shared with every C user in the
 *    process, so the module installs no allocator of its own; the test
 *    functions (_stats, _fail_core_alloc) install one that wraps malloc and
 *    counts live blocks (safe to install at any time: it frees the blocks
 *    malloc made before it), and can fail the n-th allocation.  The private
 *    map copy (hamt_alloc.c) counts and fails through the same counters.
 *
 * Functions: ctxpy_defer/ctxpy_drain, the allocator hooks, ctxpy_error, the
 * module's own functions, and PyInit__ctxvar.
 */
#include "ctxpy.h"

#include <stdatomic.h>
#include <stdlib.h>

/* ---------------------------------------------------------------------- */
/* The deferred-release queue                                              */
/* ---------------------------------------------------------------------- */

_Atomic(ctxpy_deferred_t *) ctxpy_deferred_head;
static int draining; /* guarded by the GIL */

void ctxpy_defer(ctxpy_deferred_t *node) {
    ctxpy_deferred_t *head = atomic_load_explicit(&ctxpy_deferred_head, memory_order_relaxed);
    do {
        node->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&ctxpy_deferred_head, &head, node,
                                                    memory_order_release,
                                                    memory_order_relaxed));
}

int ctxpy_pending(void) {
    return atomic_load_explicit(&ctxpy_deferred_head, memory_order_acquire) != NULL;
}

void ctxpy_drain_queue(void) {
    if (draining)
        return;
    draining = 1;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    ctxpy_deferred_t *list;
    while ((list = atomic_exchange_explicit(&ctxpy_deferred_head, NULL, memory_order_acquire))) {
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
/* The test allocator                                                      */
/* ---------------------------------------------------------------------- */

/* Frees may run on threads without the GIL: atomic counters. */
static atomic_long live_blocks;
static atomic_long fail_countdown; /* > 0: the n-th allocation from now fails */
static int allocator_installed;

int ctxpy_alloc_should_fail(void) {
    return atomic_load_explicit(&fail_countdown, memory_order_relaxed) > 0 &&
           atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed) == 1;
}

void ctxpy_alloc_count(long delta) {
    atomic_fetch_add_explicit(&live_blocks, delta, memory_order_relaxed);
}

static void *count_malloc(size_t size, void *user) {
    (void)user;
    if (ctxpy_alloc_should_fail())
        return NULL;
    void *p = malloc(size ? size : 1);
    if (p)
        ctxpy_alloc_count(1);
    return p;
}

static void count_free(void *ptr, size_t size, void *user) {
    (void)size;
    (void)user;
    if (!ptr)
        return;
    ctxpy_alloc_count(-1);
    free(ptr);
}

static int install_test_allocator(void) {
    if (allocator_installed)
        return 0;
    ctx_allocator_t allocator = CTX_STRUCT_INIT(ctx_allocator_t);
    allocator.malloc = count_malloc;
    allocator.free = count_free;
    if (ctx_set_allocator(&allocator) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "_ctxvar: cannot install the test allocator");
        return -1;
    }
    allocator_installed = 1;
    return 0;
}

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
    if (install_test_allocator() < 0)
        return NULL;
    ctxpy_drain();
    return Py_BuildValue("{s:l,s:l,s:l,s:O}", "core_blocks",
                         atomic_load_explicit(&live_blocks, memory_order_relaxed), "boxes",
                         ctxpy_records_alive(), "items", ctxpy_items_alive(), "pending",
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
    if ((n == -1 && PyErr_Occurred()) || install_test_allocator() < 0)
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

static PyObject *module_c_copy_len(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    ctxpy_snapshot_t *snap = ctxpy_current(CTXPY_TSTATE());
    ctx_context_t *ctx = snap ? ctxpy_snapshot_escape(snap) : NULL, *copy;
    if (snap && !ctx)
        return NULL;
    int r = ctx ? ctx_context_copy(ctx, &copy) : ctx_context_copy_current(&copy);
    if (r)
        return ctxpy_error(r);
    size_t n = ctx_context_length(copy);
    ctx_context_release(copy);
    ctxpy_drain();
    return PyLong_FromSize_t(n);
}

static PyMethodDef module_methods[] = {
    {"copy_context", ctxpy_copy_context, METH_NOARGS,
     PyDoc_STR("copy_context() -> Context\n\nA copy of the current context (O(1)).")},
    {"hamt", ctxpy_hamt_new_empty, METH_NOARGS,
     PyDoc_STR("hamt() -> Hamt\n\nA new empty persistent map.")},
    {"_stats", module_stats, METH_NOARGS,
     PyDoc_STR("_stats() -> dict\n\nLive core blocks (counted from the first call, which "
               "installs the counting allocator), value records and map items (after "
               "draining pending releases). For leak checks.")},
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
    {"_c_copy_len", module_c_copy_len, METH_NOARGS,
     PyDoc_STR("_c_copy_len() -> int\n\nWhat a C copy of the current context does (its core "
               "context and mirror are made if needed), reporting failures; the copy's "
               "length. For tests.")},
    {"_thread_release", module_thread_release, METH_NOARGS,
     PyDoc_STR("_thread_release()\n\nReleases this thread's base context now (its values "
               "are lost). For leak checks.")},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
             "Python's contextvars (PEP 567) on the ctxvar C core.\n\n"
             "ContextVar, Context, Token and copy_context behave as the standard\n"
             "library's, under threads and asyncio alike: ctxvar's values live in\n"
             "Python's own current context, so every switch asyncio makes switches\n"
             "them too.  C code using the same libctxvar sees the same values\n"
             "(ContextVar.capsule / ContextVar.from_capsule share a variable).\n"
             "Hamt is a private copy of the core's persistent map with Python keys.");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_ctxvar",
    .m_doc = module_doc,
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__ctxvar(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    if (ctxpy_snapshot_ready(module) < 0 || ctxpy_contextvars_ready(module) < 0 ||
        ctxpy_hamt_ready(module) < 0)
        goto error;
    if (PyModule_AddStringConstant(module, "__version__", ctx_version_string()) < 0 ||
        PyModule_AddObjectRef(module, "_hidden", ctxpy_hidden) < 0)
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
