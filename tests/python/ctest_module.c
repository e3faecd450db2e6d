/* SPDX-License-Identifier: MIT */
/*
 * ctest_module.c — `_ctxvar_ctest`, a C extension built for the tests: it
 * links the same shared libctxvar as the Python binding (and libctxvar_loop
 * when the loop module is built) and uses only the public C API, as a C
 * library loaded into a Python program would.  test_c_extension.py checks
 * that it sees what Python set and that Python sees what it sets: per
 * thread, per asyncio task, in the propagating executor, and in pool and
 * loop work that the C side starts.
 *
 * Variables made here hold NUL-terminated strings (allocated with
 * ctx_malloc, released with ctx_free), with format/encode/decode/clone
 * operations: Python wraps them with ctxvar.ContextVar.from_capsule and sees
 * str values.  Variables made in Python are reached through their capsule;
 * their values read from C are pointers whose first member is the object.
 *
 * Functions (all take or return capsules named "ctxvar.ctx_var_t"):
 *   string_var(name, default=None)   a new C variable
 *   get(cap) / get_object(cap)       ctx_var_get: str (or None) / the object
 *   get_without_gil(cap)             ctx_var_get with the GIL released: the
 *                                    thread's own context, not Python's
 *   set(cap, text)                   ctx_var_set without a token
 *   set_and_call(cap, text, fn)      set with a token, fn(), reset: fn's result
 *   run_in_new_context(cap, text, fn) a new context with cap=text, ctx_context_run
 *                                    calling fn (with the GIL): fn's result
 *   copy_get(cap)                    ctx_context_copy_current, then read the copy
 *   format_current()                 ctx_context_format_current
 *   pool_get(cap, text=None)         a pool task (captured now) that sets cap
 *                                    to text if given, then reads it
 *   pool_call(fn)                    a pool task that takes the GIL and calls fn
 *   hold_copy() / held_get_object(cap) / drop_held()
 *                                    C keeps a copy of the current context
 *   loop_get(cap)                    a loop callback (captured now) reads cap
 *   shutdown()                       releases the pool (tests' teardown)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include <ctxvar.h>
#include <ctxvar/pool.h>
#if CTX_HAVE_LOOP
#include <ctxvar/loop.h>
#endif

#define CAPSULE "ctxvar.ctx_var_t"

/* ---- string values ---- */

static char *text_new(const char *text, size_t len) {
    char *s = ctx_malloc(len + 1);
    if (s) {
        memcpy(s, text, len);
        s[len] = '\0';
    }
    return s;
}

static void text_release(void *value, void *user) {
    (void)user;
    if (value)
        ctx_free(value, strlen(value) + 1);
}

static int text_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const char *s = value ? value : "";
    size_t len = strlen(s);
    if (cap) {
        size_t n = len < cap - 1 ? len : cap - 1;
        memcpy(buf, s, n);
        buf[n] = '\0';
    }
    return (int)len;
}

static int text_decode(const char *text, size_t len, void **out, void *user) {
    (void)user;
    char *s = text_new(text, len);
    if (!s)
        return CTX_ENOMEM;
    *out = s;
    return 0;
}

static int text_clone(const void *value, void **out, void *user) {
    return text_decode(value, strlen(value), out, user);
}

static const ctx_value_ops_t text_ops = {
    .size = sizeof(ctx_value_ops_t),
    .release = text_release,
    .format = text_format,
    .clone = text_clone,
    .encode = text_format,
    .decode = text_decode,
};

static void var_capsule_destructor(PyObject *capsule) {
    ctx_var_release(PyCapsule_GetPointer(capsule, CAPSULE));
}

static ctx_var_t *var_of(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, CAPSULE);
}

static PyObject *error(int rc) {
    PyErr_Format(PyExc_RuntimeError, "ctxvar: %s (CTX_%s)", ctx_strerror(rc), ctx_error_name(rc));
    return NULL;
}

/* ---- variables ---- */

static PyObject *string_var(PyObject *self, PyObject *args) {
    (void)self;
    const char *name, *def = NULL;
    if (!PyArg_ParseTuple(args, "s|z", &name, &def))
        return NULL;
    ctx_var_options_t options = CTX_STRUCT_INIT(ctx_var_options_t);
    options.ops = &text_ops;
    if (def) {
        options.has_default = 1;
        if (!(options.default_value = text_new(def, strlen(def))))
            return PyErr_NoMemory();
    }
    ctx_var_t *var;
    int rc = ctx_var_new(name, &options, &var);
    if (rc) {
        text_release(options.default_value, NULL);
        return error(rc);
    }
    PyObject *capsule = PyCapsule_New(var, CAPSULE, var_capsule_destructor);
    if (!capsule)
        ctx_var_release(var);
    return capsule;
}

static PyObject *get(PyObject *self, PyObject *capsule) {
    (void)self;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    void *value;
    int rc = ctx_var_get(var, &value);
    if (rc == CTX_ENOTFOUND)
        Py_RETURN_NONE;
    if (rc < 0)
        return error(rc);
    return PyUnicode_FromString(value ? value : "");
}

static PyObject *get_without_gil(PyObject *self, PyObject *capsule) {
    (void)self;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    void *value = NULL;
    char *copy = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ctx_var_get(var, &value);
    if (rc >= 0 && value)
        copy = text_new(value, strlen(value));
    Py_END_ALLOW_THREADS
    if (rc == CTX_ENOTFOUND)
        Py_RETURN_NONE;
    if (rc < 0)
        return error(rc);
    PyObject *s = copy ? PyUnicode_FromString(copy) : PyErr_NoMemory();
    text_release(copy, NULL);
    return s;
}

static PyObject *get_object(PyObject *self, PyObject *capsule) {
    (void)self;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    void *value;
    int rc = ctx_var_get(var, &value);
    if (rc == CTX_ENOTFOUND) {
        PyErr_SetString(PyExc_LookupError, "no value");
        return NULL;
    }
    if (rc < 0)
        return error(rc);
    return Py_NewRef(*(PyObject **)value); /* a value set from Python */
}

static PyObject *set(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule;
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Os#", &capsule, &text, &len))
        return NULL;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    char *value = text_new(text, (size_t)len);
    if (!value)
        return PyErr_NoMemory();
    int rc = ctx_var_set(var, value, NULL);
    if (rc) {
        text_release(value, NULL);
        return error(rc);
    }
    Py_RETURN_NONE;
}

static PyObject *set_and_call(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule, *fn;
    const char *text;
    if (!PyArg_ParseTuple(args, "OsO", &capsule, &text, &fn))
        return NULL;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    char *value = text_new(text, strlen(text));
    if (!value)
        return PyErr_NoMemory();
    ctx_token_t *token;
    int rc = ctx_var_set(var, value, &token);
    if (rc) {
        text_release(value, NULL);
        return error(rc);
    }
    PyObject *result = PyObject_CallNoArgs(fn);
    rc = ctx_var_reset(var, token);
    ctx_token_release(token);
    if (rc) {
        Py_XDECREF(result);
        return result ? error(rc) : NULL;
    }
    return result;
}

typedef struct {
    PyObject *fn;
    PyObject *result;
} call_t;

static void *call_fn(void *arg) {
    call_t *c = arg;
    c->result = PyObject_CallNoArgs(c->fn);
    return NULL;
}

static PyObject *run_in_new_context(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule;
    const char *text;
    call_t call = {NULL, NULL};
    if (!PyArg_ParseTuple(args, "OsO", &capsule, &text, &call.fn))
        return NULL;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    ctx_context_t *ctx;
    int rc = ctx_context_new(&ctx);
    if (rc)
        return error(rc);
    char *value = text_new(text, strlen(text));
    if (!value || (rc = ctx_context_set(ctx, var, value)) != 0) {
        text_release(value, NULL);
        ctx_context_release(ctx);
        return value ? error(rc) : PyErr_NoMemory();
    }
    rc = ctx_context_run(ctx, call_fn, &call, NULL);
    ctx_context_release(ctx);
    if (rc) {
        Py_XDECREF(call.result);
        return error(rc);
    }
    return call.result;
}

static PyObject *copy_get(PyObject *self, PyObject *capsule) {
    (void)self;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    ctx_context_t *copy;
    int rc = ctx_context_copy_current(&copy);
    if (rc)
        return error(rc);
    void *value;
    PyObject *result = ctx_context_get(copy, var, &value) == 0
                           ? PyUnicode_FromString(value ? value : "")
                           : Py_NewRef(Py_None);
    ctx_context_release(copy);
    return result;
}

static PyObject *format_current(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    char buf[512];
    size_t len;
    int rc = ctx_context_format_current(buf, sizeof buf, &len);
    if (rc)
        return error(rc);
    return PyUnicode_FromString(buf);
}

/* ---- pool work the C side starts ---- */

static ctx_pool_t *pool;

static int ensure_pool(void) {
    if (pool)
        return 0;
    ctx_pool_options_t options = CTX_STRUCT_INIT(ctx_pool_options_t);
    options.threads = 2;
    int rc = ctx_pool_new(&options, &pool);
    if (rc) {
        error(rc);
        return -1;
    }
    return 0;
}

typedef struct {
    ctx_var_t *var;
    char *set_to; /* NULL: only read */
} pool_job_t;

static int pool_get_task(void *arg, void **result) {
    pool_job_t *job = arg;
    if (job->set_to) {
        if (ctx_var_set(job->var, job->set_to, NULL) != 0)
            return CTX_ENOMEM;
        job->set_to = NULL; /* the context owns it now */
    }
    void *value;
    int rc = ctx_var_get(job->var, &value);
    if (rc == CTX_ENOTFOUND)
        return 0; /* *result stays NULL */
    if (rc < 0)
        return rc;
    char *copy = text_new(value ? value : "", value ? strlen(value) : 0);
    if (!copy)
        return CTX_ENOMEM;
    *result = copy;
    return 0;
}

/* Waits for `future` with the GIL released; 0 and *result, or -1. */
static int wait_future(ctx_pool_future_t *future, void **result) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ctx_pool_future_wait(future, -1);
    Py_END_ALLOW_THREADS
    if (rc == 0)
        rc = ctx_pool_future_result(future, result);
    ctx_pool_future_release(future);
    if (rc) {
        error(rc);
        return -1;
    }
    return 0;
}

static PyObject *pool_get(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule;
    const char *text = NULL;
    if (!PyArg_ParseTuple(args, "O|z", &capsule, &text))
        return NULL;
    pool_job_t job = {var_of(capsule), NULL};
    if (!job.var || ensure_pool() < 0)
        return NULL;
    if (text && !(job.set_to = text_new(text, strlen(text))))
        return PyErr_NoMemory();
    ctx_pool_future_t *future;
    int rc = ctx_pool_submit(pool, pool_get_task, &job, &future); /* captures now */
    if (rc) {
        text_release(job.set_to, NULL);
        return error(rc);
    }
    void *result = NULL;
    if (wait_future(future, &result) < 0)
        return NULL;
    text_release(job.set_to, NULL);
    if (!result)
        Py_RETURN_NONE;
    PyObject *s = PyUnicode_FromString(result);
    text_release(result, NULL);
    return s;
}

static int pool_call_task(void *arg, void **result) {
    PyGILState_STATE gil = PyGILState_Ensure();
    *result = PyObject_CallNoArgs((PyObject *)arg);
    if (!*result) {
        PyErr_Print();
        PyGILState_Release(gil);
        return CTX_ECALLBACK;
    }
    PyGILState_Release(gil);
    return 0;
}

static PyObject *pool_call(PyObject *self, PyObject *fn) {
    (void)self;
    if (ensure_pool() < 0)
        return NULL;
    ctx_pool_future_t *future;
    int rc = ctx_pool_submit(pool, pool_call_task, fn, &future);
    if (rc)
        return error(rc);
    void *result = NULL;
    if (wait_future(future, &result) < 0)
        return NULL;
    return result; /* the task's new reference */
}

/* ---- a copy that C keeps ---- */

static ctx_context_t *held;

static PyObject *hold_copy(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    ctx_context_release(held);
    held = NULL;
    int rc = ctx_context_copy_current(&held);
    if (rc)
        return error(rc);
    Py_RETURN_NONE;
}

static PyObject *held_get_object(PyObject *self, PyObject *capsule) {
    (void)self;
    ctx_var_t *var = var_of(capsule);
    if (!var)
        return NULL;
    void *value;
    if (!held || ctx_context_get(held, var, &value) != 0) {
        PyErr_SetString(PyExc_LookupError, "no value in the held copy");
        return NULL;
    }
    return Py_NewRef(*(PyObject **)value);
}

static PyObject *drop_held(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    ctx_context_release(held);
    held = NULL;
    Py_RETURN_NONE;
}

/* ---- loop work the C side starts ---- */

#if CTX_HAVE_LOOP
typedef struct {
    ctx_var_t *var;
    char *seen;
    int found;
} loop_job_t;

static void loop_read(void *arg) {
    loop_job_t *job = arg;
    void *value;
    if (ctx_var_get(job->var, &value) >= 0) {
        job->found = 1;
        job->seen = text_new(value ? value : "", value ? strlen(value) : 0);
    }
}
#endif

static PyObject *loop_get(PyObject *self, PyObject *capsule) {
    (void)self;
#if CTX_HAVE_LOOP
    loop_job_t job = {var_of(capsule), NULL, 0};
    if (!job.var)
        return NULL;
    ctx_loop_t *loop;
    int rc = ctx_loop_new(NULL, &loop);
    if (rc)
        return error(rc);
    rc = ctx_loop_call_soon(loop, loop_read, &job, NULL, NULL); /* captures now */
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = ctx_loop_run(loop, UV_RUN_DEFAULT);
        Py_END_ALLOW_THREADS
        rc = rc < 0 ? rc : 0;
    }
    ctx_loop_close(loop);
    ctx_loop_release(loop);
    if (rc) {
        text_release(job.seen, NULL);
        return error(rc);
    }
    if (!job.found)
        Py_RETURN_NONE;
    PyObject *s = job.seen ? PyUnicode_FromString(job.seen) : PyErr_NoMemory();
    text_release(job.seen, NULL);
    return s;
#else
    (void)capsule;
    PyErr_SetString(PyExc_NotImplementedError, "built without the loop module");
    return NULL;
#endif
}

static PyObject *shutdown_module(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (pool) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = ctx_pool_release(pool);
        Py_END_ALLOW_THREADS
        pool = NULL;
        if (rc)
            return error(rc);
    }
    ctx_context_release(held);
    held = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"string_var", string_var, METH_VARARGS, NULL},
    {"get", get, METH_O, NULL},
    {"get_object", get_object, METH_O, NULL},
    {"get_without_gil", get_without_gil, METH_O, NULL},
    {"set", set, METH_VARARGS, NULL},
    {"set_and_call", set_and_call, METH_VARARGS, NULL},
    {"run_in_new_context", run_in_new_context, METH_VARARGS, NULL},
    {"copy_get", copy_get, METH_O, NULL},
    {"format_current", format_current, METH_NOARGS, NULL},
    {"pool_get", pool_get, METH_VARARGS, NULL},
    {"pool_call", pool_call, METH_O, NULL},
    {"hold_copy", hold_copy, METH_NOARGS, NULL},
    {"held_get_object", held_get_object, METH_O, NULL},
    {"drop_held", drop_held, METH_NOARGS, NULL},
    {"loop_get", loop_get, METH_O, NULL},
    {"shutdown", shutdown_module, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_ctxvar_ctest",
    .m_doc = "A C extension sharing libctxvar with the Python binding (tests only).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__ctxvar_ctest(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m && PyModule_AddIntConstant(m, "HAVE_LOOP", CTX_HAVE_LOOP) < 0)
        Py_CLEAR(m);
    return m;
}
