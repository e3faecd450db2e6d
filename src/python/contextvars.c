/* SPDX-License-Identifier: MIT */
/*
 * contextvars.c — ContextVar, Token, Context and copy_context: CPython's
 * `contextvars` (Python/context.c: same behaviour, error types and
 * messages), with the values kept where asyncio switches them: inside
 * Python's own current Context, as a snapshot of a core context
 * (snapshot.c).
 *
 * Objects
 * -------
 *
 *   ContextVar ──▶ ctx_var_t of the shared core (one reference)
 *                  made here: values are records (ctxpy.h), default a Python attribute
 *                  wrapping a C variable (from_capsule): values are C values,
 *                  seen from Python as str through the variable's encode/decode
 *
 *   Context ──▶ snapshot (its variables; immutable, shared with copies)
 *           └─▶ contextvars.Context made at the first run() (lazily, so that
 *               copy_context() is one object and no Python context): run()
 *               enters it, with the hidden variable holding the snapshot.
 *               From then on that Context's map is where the values are:
 *               run() is the standard library's run, called last, and the
 *               snapshot is read back from the map when the map changed
 *               (context_snapshot)
 *
 *   Token ──▶ the ContextVar, the previous snapshot, the contextvars.Context
 *             it was made in, and what undoes its publish (ctxpy_undo_t: the
 *             Context's maps before and after the set, which restore the
 *             previous snapshot in one step when nothing was set since)
 *
 * The three operations, where the current snapshot S0 is found by
 * ctxpy_current (cached):
 *
 *   get    a per-variable cache keyed like ctxpy_current's: (thread id,
 *          context version, generation) → value.  A hit is three compares.
 *   set    S1 = S0 + (var → value) (ctxpy_snapshot_with: the pairs copied
 *          with one change, and the core context too if C made S0 have one),
 *          stored in the hidden variable (ctxpy_publish).
 *   reset  if the current snapshot is still S1: S0 comes back
 *          (ctxpy_unpublish: the Context's map from before the set, if the
 *          map is still the one the set made); otherwise a new snapshot with
 *          the old value.
 *
 * When C code has entered a context through ctxvar on this thread
 * (ctxpy_current returns NULL: a pool task or a C function that calls back
 * into Python), that context comes first, for Python as for C (host.h): the
 * operations then go through the core's own ctx_var_get/set/reset, and
 * Context.run runs a copy of its snapshot with ctx_context_run.
 *
 * Garbage collection: every reference here is a real one and visited once
 * (snapshot.c explains how the snapshots' shared maps are counted).
 *
 * Functions, in order: C values as str; the C-variable registry;
 * ContextVar; Token and Token.MISSING; Context (mapping, run, copy,
 * comparison); the iterator; copy_context; the native-thread test hook;
 * ctxpy_contextvars_ready.
 */
#include "ctxpy.h"

#include <errno.h>
#include <pthread.h>
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030D0000
#define CTXPY_HASH_POINTER(p) Py_HashPointer(p)
#else
#define CTXPY_HASH_POINTER(p) _Py_HashPointer(p)
#endif

#define CAPSULE_NAME "ctxvar.ctx_var_t"

typedef struct {
    PyObject_HEAD
    ctx_var_t *var;
    PyObject *name;
    PyObject *default_value; /* NULL: none */
    Py_hash_t hash;
    int c_values; /* a C variable: values are C values, str in Python */
    /* The last lookup: valid while (thread id, context version, generation)
     * are unchanged.  c_value is borrowed for our variables (the snapshot
     * holds it), a strong reference for C variables; NULL: no value. */
    uint64_t c_tsid, c_ver, c_gen;
    PyObject *c_value;
    PyObject *weakreflist;
} var_object;

typedef struct {
    PyObject_HEAD
    var_object *var;
    PyObject *context;        /* the contextvars.Context it was made in */
    ctxpy_undo_t undo;        /* undoes the set's publish (ctxpy_unpublish) */
    ctxpy_snapshot_t *prev;   /* the snapshot before the set (a reference) */
    ctxpy_snapshot_t *made;   /* the snapshot the set made: identity only */
    uint64_t made_serial;
    PyObject *old;            /* the previous value, once asked for */
    int old_known;            /* `old` is set (NULL there: Token.MISSING) */
    ctx_token_t *core;        /* a set inside a context C entered */
    int used;
} token_object;

typedef struct {
    PyObject_HEAD
    ctxpy_snapshot_t *snap; /* NULL only after the collector cleared it */
    PyObject *pycontext;    /* made by the first run() */
    PyObject *snap_vars;    /* pycontext's map when snap was read from it */
    PyObject *weakreflist;
    int entered;            /* run by context_run_core (C's context current) */
} context_object;

enum { ITER_KEYS, ITER_VALUES, ITER_ITEMS };

typedef struct {
    PyObject_HEAD
    ctxpy_snapshot_t *snap;
    ctx_iter_t it;      /* over the core context, if the snapshot had one */
    Py_ssize_t index;   /* else over its pairs */
    Py_ssize_t len;
    int kind;
    int core;
    int live;
} context_iter_object;

#define Var_Check(o) Py_IS_TYPE((o), &ctxpy_ContextVar_Type)
#define Token_Check(o) Py_IS_TYPE((o), &ctxpy_Token_Type)
#define Context_Check(o) Py_IS_TYPE((o), &ctxpy_Context_Type)

static PyObject *token_missing; /* the Token.MISSING singleton */
/* contextvars.Context.run's C function, from PyContext_Type's method table. */
typedef PyObject *(*context_run_fn)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);
static context_run_fn std_context_run;

/* ---------------------------------------------------------------------- */
/* C values seen from Python                                               */
/* ---------------------------------------------------------------------- */

static PyObject *c_value_to_str(const ctx_var_t *var, const void *value) {
    const ctx_value_ops_t *ops = ctx_var_ops(var);
    int (*text)(const void *, char *, size_t, void *) = ops->encode ? ops->encode : ops->format;
    if (!text)
        return PyLong_FromVoidPtr((void *)value);
    char small[256];
    int n = text(value, small, sizeof small, ops->user);
    if (n < 0)
        return ctxpy_error(n);
    if ((size_t)n < sizeof small)
        return PyUnicode_DecodeUTF8(small, n, "surrogateescape");
    char *big = PyMem_Malloc((size_t)n + 1);
    if (!big)
        return PyErr_NoMemory();
    int m = text(value, big, (size_t)n + 1, ops->user);
    PyObject *s = m < 0 ? ctxpy_error(m)
                        : PyUnicode_DecodeUTF8(big, m < n ? m : n, "surrogateescape");
    PyMem_Free(big);
    return s;
}

PyObject *ctxpy_value_object(ctx_var_t *var, void *value) {
    if (ctxpy_is_record_var(var))
        return Py_NewRef(((ctxpy_record_t *)value)->value);
    return c_value_to_str(var, value);
}

/* One share of a C value for `str`, by the variable's decode operation. */
static int c_value_from_str(var_object *self, PyObject *str, void **out) {
    const ctx_value_ops_t *ops = ctx_var_ops(self->var);
    if (!ops->decode) {
        PyErr_Format(PyExc_TypeError, "%R wraps a C variable without a decode operation",
                     self);
        return -1;
    }
    if (!PyUnicode_Check(str)) {
        PyErr_Format(PyExc_TypeError, "%R takes str values, got %R", self, str);
        return -1;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(str, &len);
    if (!text)
        return -1;
    int r = ops->decode(text, (size_t)len, out, ops->user);
    if (r) {
        if (r == CTX_EPARSE)
            PyErr_Format(PyExc_ValueError, "%R cannot hold %R", self, str);
        else
            ctxpy_error(r < 0 ? r : CTX_ECALLBACK);
        return -1;
    }
    return 0;
}

static void c_value_discard(ctx_var_t *var, void *value) {
    const ctx_value_ops_t *ops = ctx_var_ops(var);
    if (ops->release)
        ops->release(value, ops->user);
}

/* What the core stores for `value` set through `self` in a core context (a
 * context C entered, or any set of a C variable): a record or a C value
 * (*out), or -1 with an exception. */
static int share_new(var_object *self, PyObject *value, void **out) {
    if (self->c_values)
        return c_value_from_str(self, value, out);
    ctxpy_record_t *r = ctxpy_record_new((PyObject *)self, value);
    if (!r)
        return -1;
    *out = r;
    return 0;
}

static void share_discard(var_object *self, void *share) {
    if (self->c_values)
        c_value_discard(self->var, share);
    else
        ctxpy_record_discard(share);
}

/* ---------------------------------------------------------------------- */
/* C variables: one ContextVar object per core variable                    */
/* ---------------------------------------------------------------------- */

static PyObject *c_wrappers; /* {int(ctx_var_t *): weakref to its ContextVar} */

static PyObject *weakref_target(PyObject *ref) {
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0)
        PyErr_Clear();
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(ref);
    return obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

static PyObject *var_wrap_c(ctx_var_t *var);

PyObject *ctxpy_var_object(ctx_var_t *var, void *value) {
    if (ctxpy_is_record_var(var))
        return Py_NewRef(((ctxpy_record_t *)value)->var);
    return var_wrap_c(var);
}

ctx_var_t *ctxpy_var_core(PyObject *var) { return ((var_object *)var)->var; }

/* The value of `var` in `snap`: 0 and a new reference in *out (NULL if it
 * has none), or -1 with an exception. */
static int snapshot_lookup(ctxpy_snapshot_t *snap, var_object *var, PyObject **out) {
    *out = NULL;
    if (!var->c_values) {
        *out = Py_XNewRef(ctxpy_snapshot_get(snap, (PyObject *)var));
        return 0;
    }
    void *value; /* C variables' values are in the core context only */
    if (!snap->ctx || ctx_context_get(snap->ctx, var->var, &value) != 0)
        return 0;
    return (*out = ctxpy_value_object(var->var, value)) ? 0 : -1;
}

/* ---------------------------------------------------------------------- */
/* ContextVar                                                              */
/* ---------------------------------------------------------------------- */

static var_object *var_alloc(PyObject *name, PyObject *def) {
    Py_hash_t name_hash = PyObject_Hash(name);
    if (name_hash == -1)
        return NULL;
    var_object *self = PyObject_GC_New(var_object, &ctxpy_ContextVar_Type);
    if (!self)
        return NULL;
    self->var = NULL;
    self->name = Py_NewRef(name);
    self->default_value = Py_XNewRef(def);
    self->c_values = 0;
    self->c_tsid = self->c_ver = self->c_gen = 0;
    self->c_value = NULL;
    self->weakreflist = NULL;
    Py_hash_t hash = CTXPY_HASH_POINTER(self) ^ name_hash;
    self->hash = hash == -1 ? -2 : hash;
    return self;
}

static PyObject *var_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)type;
    static char *kwlist[] = {"", "default", NULL};
    PyObject *name;
    PyObject *def = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$O:ContextVar", kwlist, &name, &def))
        return NULL;
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "context variable name must be a str");
        return NULL;
    }
    const char *cname = PyUnicode_AsUTF8(name);
    if (!cname) { /* lone surrogates: the core's copy is for logs only */
        PyErr_Clear();
        cname = "<unencodable name>";
    }
    var_object *self = var_alloc(name, def);
    if (!self)
        return NULL;
    ctx_var_options_t options = CTX_STRUCT_INIT(ctx_var_options_t);
    options.ops = &ctxpy_record_ops;
    int r = ctx_var_new(cname, &options, &self->var);
    if (r) {
        Py_DECREF(self);
        return ctxpy_error(r);
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static void *read_default(void *arg) {
    void *value = NULL;
    return ctx_var_get((ctx_var_t *)arg, &value) == CTX_DEFAULT ? value : arg;
}

/* The ContextVar for C variable `var` (made once, kept in c_wrappers while
 * it lives); new reference or NULL. */
static PyObject *var_wrap_c(ctx_var_t *var) {
    PyObject *key = PyLong_FromVoidPtr(var);
    if (!key)
        return NULL;
    PyObject *ref = PyDict_GetItemWithError(c_wrappers, key);
    if (ref) {
        PyObject *existing = weakref_target(ref);
        if (existing) {
            Py_DECREF(key);
            return existing;
        }
    } else if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    const char *cname = ctx_var_name(var);
    PyObject *name = PyUnicode_DecodeUTF8(cname, (Py_ssize_t)strlen(cname), "surrogateescape");
    /* The variable's default, read in an empty context. */
    PyObject *def = NULL;
    ctx_context_t *empty = NULL;
    int r = name ? ctx_context_new(&empty) : 0;
    void *found = var;
    if (name && r == 0)
        r = ctx_context_run(empty, read_default, var, &found);
    ctx_context_release(empty);
    if (name && r) {
        Py_CLEAR(name);
        ctxpy_error(r);
    }
    if (name && found != var && !(def = c_value_to_str(var, found)))
        Py_CLEAR(name);
    var_object *self = name ? var_alloc(name, def) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(def);
    if (!self) {
        Py_DECREF(key);
        return NULL;
    }
    self->var = ctx_var_retain(var);
    self->c_values = 1;
    PyObject_GC_Track(self);
    ref = PyWeakref_NewRef((PyObject *)self, NULL);
    if (!ref || PyDict_SetItem(c_wrappers, key, ref) < 0) {
        Py_XDECREF(ref);
        Py_DECREF(key);
        Py_DECREF(self);
        return NULL;
    }
    Py_DECREF(ref);
    Py_DECREF(key);
    return (PyObject *)self;
}

static int var_tp_traverse(var_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->name);
    Py_VISIT(self->default_value);
    if (self->c_values)
        Py_VISIT(self->c_value);
    return 0;
}

static void var_forget(var_object *self) {
    self->c_tsid = 0;
    if (self->c_values)
        Py_CLEAR(self->c_value);
    else
        self->c_value = NULL;
}

static int var_tp_clear(var_object *self) {
    /* The name stays: the object may still be reached (records name it). */
    Py_CLEAR(self->default_value);
    var_forget(self);
    return 0;
}

static void var_tp_dealloc(var_object *self) {
    PyObject_GC_UnTrack(self);
    if (self->c_values && c_wrappers) { /* first: weakref callbacks may wrap again */
        PyObject *key = PyLong_FromVoidPtr(self->var);
        if (!key || PyDict_DelItem(c_wrappers, key) < 0)
            PyErr_Clear();
        Py_XDECREF(key);
    }
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    var_forget(self);
    ctx_var_release(self->var);
    Py_CLEAR(self->name);
    Py_CLEAR(self->default_value);
    PyObject_GC_Del(self);
    ctxpy_drain();
}

static Py_hash_t var_tp_hash(var_object *self) { return self->hash; }

static PyObject *var_tp_repr(var_object *self) {
    if (self->default_value)
        return PyUnicode_FromFormat("<ContextVar name=%R default=%R at %p>", self->name,
                                    self->default_value, self);
    return PyUnicode_FromFormat("<ContextVar name=%R at %p>", self->name, self);
}

/* Remembers the value `obj` (NULL: none) for the current key. */
static void var_remember(var_object *self, PyThreadState *ts, uint64_t gen, PyObject *obj) {
    if (self->c_values)
        Py_XSETREF(self->c_value, Py_XNewRef(obj));
    else
        self->c_value = obj;
    self->c_tsid = ts->id;
    self->c_ver = ts->context_ver;
    self->c_gen = gen;
}

/* The value in the current context: 0 and a new reference in *out (NULL if
 * none), or -1 with an exception. */
static int var_lookup(var_object *self, PyThreadState *ts, PyObject **out) {
    *out = NULL;
    uint64_t gen = ctxpy_gen();
    ctxpy_snapshot_t *snap = ctxpy_current(ts);
    if (snap) {
        if (snapshot_lookup(snap, self, out) < 0)
            return -1;
        var_remember(self, ts, gen, *out);
        return 0;
    }
    void *value; /* a context C entered */
    int r = ctx_var_get(self->var, &value);
    if (r == CTX_VALUE) {
        if (!(*out = ctxpy_value_object(self->var, value)))
            return -1;
    } else if (r != CTX_ENOTFOUND && r != CTX_DEFAULT) {
        ctxpy_error(r);
        return -1;
    }
    var_forget(self);
    return 0;
}

PyDoc_STRVAR(var_get_doc,
             "get($self, default=<unrepresentable>, /)\n--\n\n"
             "Return a value for the context variable for the current context.\n\n"
             "If there is no value for the variable in the current context, the method will:\n"
             " * return the value of the default argument of the method, if provided; or\n"
             " * return the default value for the context variable, if it was created\n"
             "   with one; or\n"
             " * raise a LookupError.");

static PyObject *var_get(var_object *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "get expected at most 1 argument, got %zd", nargs);
        return NULL;
    }
    PyThreadState *ts = CTXPY_TSTATE();
    PyObject *value;
    if (self->c_tsid == ts->id && self->c_ver == ts->context_ver && self->c_gen == ctxpy_gen()) {
        value = self->c_value;
        if (value)
            return Py_NewRef(value);
    } else {
        if (var_lookup(self, ts, &value) < 0)
            return NULL;
        if (value)
            return value;
    }
    if (nargs == 1)
        return Py_NewRef(args[0]);
    if (self->default_value)
        return Py_NewRef(self->default_value);
    PyErr_SetObject(PyExc_LookupError, (PyObject *)self);
    return NULL;
}

PyDoc_STRVAR(var_set_doc,
             "set($self, value, /)\n--\n\n"
             "Call to set a new value for the context variable in the current context.\n\n"
             "The required value argument is the new value for the context variable.\n\n"
             "Returns a Token object that can be used to restore the variable to its previous\n"
             "value via the `ContextVar.reset()` method.");

static ctxpy_freelist_t token_freelist, context_freelist;

static token_object *token_alloc(var_object *var) {
    token_object *tok = (token_object *)ctxpy_freelist_new(&token_freelist, &ctxpy_Token_Type);
    if (!tok)
        return NULL;
    tok->var = (var_object *)Py_NewRef((PyObject *)var);
    tok->context = tok->old = NULL;
    tok->undo.before = tok->undo.after = NULL;
    tok->prev = tok->made = NULL;
    tok->made_serial = 0;
    tok->old_known = 0;
    tok->core = NULL;
    tok->used = 0;
    return tok;
}

/* The value the variable had before the set (borrowed; NULL: none), or -1
 * with an exception. */
static int token_old(token_object *tok, PyObject **out) {
    if (!tok->old_known) {
        if (snapshot_lookup(tok->prev ? tok->prev : ctxpy_empty, tok->var, &tok->old) < 0)
            return -1;
        tok->old_known = 1;
    }
    *out = tok->old;
    return 0;
}

/* Set inside a context C entered: the core's own set. */
static PyObject *var_set_core(var_object *self, token_object *tok, void *share) {
    if (!self->c_values)
        ctxpy_record_own(share); /* C may keep that context anywhere */
    int r = ctx_var_set(self->var, share, &tok->core);
    if (r) {
        share_discard(self, share);
        Py_DECREF(tok);
        return ctxpy_error(r);
    }
    var_forget(self);
    PyObject_GC_Track(tok);
    ctxpy_drain();
    return (PyObject *)tok;
}

static PyObject *var_set(var_object *self, PyObject *value) {
    /* Everything that can fail comes before the publish, so a failure
     * changes nothing. */
    token_object *tok = token_alloc(self);
    if (!tok)
        return NULL;
    PyThreadState *ts = CTXPY_TSTATE();
    ctxpy_snapshot_t *cur = ctxpy_current(ts);
    void *share = NULL;
    if ((!cur || self->c_values) && share_new(self, value, &share) < 0) {
        Py_DECREF(tok);
        return NULL;
    }
    if (!cur)
        return var_set_core(self, tok, share);
    ctxpy_snapshot_t *next = self->c_values ? ctxpy_snapshot_with_c(cur, self->var, share, 0)
                                            : ctxpy_snapshot_with(cur, (PyObject *)self, value);
    if (!next)
        goto fail;
    /* `next` owns the share now. */
    Py_INCREF(cur); /* the publish may drop the Context's reference */
    int published = ctxpy_publish(next, &tok->undo);
    Py_DECREF(next); /* the current Context holds it, if published */
    if (published < 0) {
        Py_DECREF(cur);
        Py_DECREF(tok);
        ctxpy_drain();
        return NULL;
    }
    tok->prev = cur;
    tok->made = next;
    tok->made_serial = next->serial;
    tok->context = Py_NewRef(ts->context);
    var_remember(self, ts, ctxpy_gen(), value);
    PyObject_GC_Track(tok);
    ctxpy_drain();
    return (PyObject *)tok;

fail:
    if (share)
        share_discard(self, share);
    Py_DECREF(tok);
    return NULL;
}

PyDoc_STRVAR(var_reset_doc,
             "reset($self, token, /)\n--\n\n"
             "Reset the context variable.\n\n"
             "The variable is reset to the value it had before the `ContextVar.set()` that\n"
             "created the token was used.");

static PyObject *token_error(token_object *tok, int code) {
    switch (code) {
    case CTX_ETOKENUSED:
        PyErr_Format(PyExc_RuntimeError, "%R has already been used once", tok);
        return NULL;
    case CTX_ETOKENVAR:
        PyErr_Format(PyExc_ValueError, "%R was created by a different ContextVar", tok);
        return NULL;
    case CTX_ETOKENCTX:
        PyErr_Format(PyExc_ValueError, "%R was created in a different Context", tok);
        return NULL;
    default:
        return ctxpy_error(code);
    }
}

static int token_used(token_object *tok) {
    return tok->core ? ctx_token_used(tok->core) : tok->used;
}

static PyObject *var_reset(var_object *self, PyObject *arg) {
    if (!Token_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected an instance of Token, got %R", arg);
        return NULL;
    }
    token_object *tok = (token_object *)arg;
    /* CPython's order of checks. */
    if (token_used(tok))
        return token_error(tok, CTX_ETOKENUSED);
    if (tok->var != self)
        return token_error(tok, CTX_ETOKENVAR);
    if (tok->core) {
        int r = ctx_var_reset(self->var, tok->core);
        var_forget(self);
        ctxpy_drain();
        if (r)
            return token_error(tok, r);
        Py_RETURN_NONE;
    }
    PyThreadState *ts = CTXPY_TSTATE();
    ctxpy_snapshot_t *cur = ctxpy_current(ts);
    if (!cur || ts->context != tok->context)
        return token_error(tok, CTX_ETOKENCTX);
    if (cur == tok->made && cur->serial == tok->made_serial) {
        /* Nothing was set since: the snapshot before the set comes back. */
        if (ctxpy_unpublish(&tok->undo, tok->prev) < 0)
            return NULL;
    } else {
        void *share = NULL;
        PyObject *old;
        if (token_old(tok, &old) < 0 ||
            (old && self->c_values && share_new(self, old, &share) < 0))
            return NULL;
        ctxpy_snapshot_t *next =
            self->c_values ? ctxpy_snapshot_with_c(cur, self->var, share, old == NULL)
                           : ctxpy_snapshot_with(cur, (PyObject *)self, old);
        if (!next) {
            if (share)
                share_discard(self, share);
            return NULL;
        }
        int published = ctxpy_publish(next, NULL);
        Py_DECREF(next);
        if (published < 0) {
            ctxpy_drain();
            return NULL;
        }
    }
    tok->used = 1;
    var_forget(self);
    ctxpy_drain();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(var_capsule_doc,
             "capsule($self, /)\n--\n\n"
             "A capsule named \"ctxvar.ctx_var_t\" holding this variable's ctx_var_t *\n"
             "(valid while the capsule lives), for C code that shares the variable.\n"
             "C code may read its values with ctx_var_get: a value set from Python is\n"
             "a pointer whose first member is the object (PyObject *, borrowed).  Only\n"
             "Python sets it (its values are the binding's records); a variable both\n"
             "sides set is made in C and wrapped with ContextVar.from_capsule.");

static void capsule_destructor(PyObject *capsule) {
    Py_XDECREF((PyObject *)PyCapsule_GetContext(capsule));
}

static PyObject *var_capsule(var_object *self, PyObject *unused) {
    (void)unused;
    PyObject *capsule = PyCapsule_New(self->var, CAPSULE_NAME, capsule_destructor);
    if (!capsule)
        return NULL;
    if (PyCapsule_SetContext(capsule, Py_NewRef((PyObject *)self)) < 0) {
        Py_DECREF(self);
        Py_DECREF(capsule);
        return NULL;
    }
    return capsule;
}

PyDoc_STRVAR(var_from_capsule_doc,
             "from_capsule(capsule, /)\n--\n\n"
             "The ContextVar for the ctx_var_t * in a capsule named \"ctxvar.ctx_var_t\".\n\n"
             "For a variable made by ContextVar(), the same object.  For a variable\n"
             "made in C, one ContextVar per variable (made on first use): its values\n"
             "are str, converted with the variable's encode (or format) operation\n"
             "when read and its decode operation when set, and its default is the\n"
             "C variable's.  Python and C then see the same values, per thread and\n"
             "per asyncio task.");

static PyObject *var_from_capsule(PyObject *cls, PyObject *capsule) {
    (void)cls;
    ctx_var_t *var = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (!var)
        return NULL;
    if (ctxpy_is_record_var(var)) {
        PyObject *owner = PyCapsule_GetContext(capsule);
        if (!owner || !Var_Check(owner) || ((var_object *)owner)->var != var) {
            PyErr_SetString(PyExc_ValueError,
                            "this capsule's variable holds Python objects but was not "
                            "made by ContextVar.capsule()");
            return NULL;
        }
        return Py_NewRef(owner);
    }
    return var_wrap_c(var);
}

static PyMethodDef var_methods[] = {
    {"get", (PyCFunction)(void (*)(void))var_get, METH_FASTCALL, var_get_doc},
    {"set", (PyCFunction)var_set, METH_O, var_set_doc},
    {"reset", (PyCFunction)var_reset, METH_O, var_reset_doc},
    {"capsule", (PyCFunction)var_capsule, METH_NOARGS, var_capsule_doc},
    {"from_capsule", (PyCFunction)var_from_capsule, METH_O | METH_CLASS, var_from_capsule_doc},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, PyDoc_STR("See PEP 585")},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef var_members[] = {
    {"name", T_OBJECT, offsetof(var_object, name), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject ctxpy_ContextVar_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctxvar.ContextVar",
    .tp_basicsize = sizeof(var_object),
    .tp_dealloc = (destructor)var_tp_dealloc,
    .tp_repr = (reprfunc)var_tp_repr,
    .tp_hash = (hashfunc)var_tp_hash,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("ContextVar(name, *, default=<no default>)\n--\n\n"
                        "A context variable: its value is looked up in the current context."),
    .tp_traverse = (traverseproc)var_tp_traverse,
    .tp_clear = (inquiry)var_tp_clear,
    .tp_weaklistoffset = offsetof(var_object, weakreflist),
    .tp_methods = var_methods,
    .tp_members = var_members,
    .tp_new = var_tp_new,
};

/* ---------------------------------------------------------------------- */
/* Token                                                                   */
/* ---------------------------------------------------------------------- */

static PyObject *token_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)type;
    (void)args;
    (void)kwds;
    PyErr_SetString(PyExc_RuntimeError, "Tokens can only be created by ContextVars");
    return NULL;
}

static int token_tp_traverse(token_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->var);
    Py_VISIT(self->context);
    Py_VISIT(self->undo.before);
    Py_VISIT(self->undo.after);
    Py_VISIT(self->prev);
    Py_VISIT(self->old);
    return 0;
}

static int token_tp_clear(token_object *self) {
    Py_CLEAR(self->prev);
    Py_CLEAR(self->context);
    ctxpy_undo_clear(&self->undo);
    Py_CLEAR(self->old);
    return 0;
}

static void token_tp_dealloc(token_object *self) {
    PyObject_GC_UnTrack(self);
    token_tp_clear(self);
    if (self->core)
        ctx_token_release(self->core);
    Py_CLEAR(self->var);
    ctxpy_freelist_free(&token_freelist, (PyObject *)self);
    ctxpy_drain();
}

static PyObject *token_tp_repr(token_object *self) {
    return PyUnicode_FromFormat("<Token%s var=%R at %p>", token_used(self) ? " used" : "",
                                self->var, self);
}

static PyObject *token_get_var(token_object *self, void *unused) {
    (void)unused;
    return Py_NewRef((PyObject *)self->var);
}

static PyObject *token_get_old_value(token_object *self, void *unused) {
    (void)unused;
    if (self->core) {
        void *old;
        if (ctx_token_old_value(self->core, &old) != 0)
            return Py_NewRef(token_missing);
        return ctxpy_value_object(self->var->var, old);
    }
    PyObject *old;
    if (token_old(self, &old) < 0)
        return NULL;
    return Py_NewRef(old ? old : token_missing);
}

static PyObject *token_enter(token_object *self, PyObject *unused) {
    (void)unused;
    return Py_NewRef((PyObject *)self);
}

static PyObject *token_exit(token_object *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)args;
    (void)nargs;
    return var_reset(self->var, (PyObject *)self);
}

static PyGetSetDef token_getset[] = {
    {"var", (getter)token_get_var, NULL, NULL, NULL},
    {"old_value", (getter)token_get_old_value, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef token_methods[] = {
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, PyDoc_STR("See PEP 585")},
    {"__enter__", (PyCFunction)token_enter, METH_NOARGS, PyDoc_STR("Returns the token.")},
    {"__exit__", (PyCFunction)(void (*)(void))token_exit, METH_FASTCALL,
     PyDoc_STR("Resets the variable with this token.")},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ctxpy_Token_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctxvar.Token",
    .tp_basicsize = sizeof(token_object),
    .tp_dealloc = (destructor)token_tp_dealloc,
    .tp_repr = (reprfunc)token_tp_repr,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("What ContextVar.set returns; ContextVar.reset(token) undoes that set."),
    .tp_traverse = (traverseproc)token_tp_traverse,
    .tp_clear = (inquiry)token_tp_clear,
    .tp_methods = token_methods,
    .tp_getset = token_getset,
    .tp_new = token_tp_new,
};

static PyObject *token_missing_repr(PyObject *self) {
    (void)self;
    return PyUnicode_FromString("<Token.MISSING>");
}

PyTypeObject ctxpy_TokenMissing_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "Token.MISSING",
    .tp_basicsize = sizeof(PyObject),
    .tp_repr = token_missing_repr,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

/* ---------------------------------------------------------------------- */
/* Context                                                                 */
/* ---------------------------------------------------------------------- */

/* A new Context holding `snap` (a new reference is taken). */
static PyObject *context_new_from(ctxpy_snapshot_t *snap) {
    context_object *self =
        (context_object *)ctxpy_freelist_new(&context_freelist, &ctxpy_Context_Type);
    if (!self)
        return NULL;
    self->snap = (ctxpy_snapshot_t *)Py_NewRef((PyObject *)snap);
    self->pycontext = NULL;
    self->snap_vars = NULL;
    self->weakreflist = NULL;
    self->entered = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* The snapshot, brought up to date (borrowed).  Once a Context has been
 * run through its contextvars.Context, that Context's map is where its
 * values are: a run changes it and nothing here (context_run returns
 * straight from the standard library's run, see there), so the snapshot
 * is read back whenever the map is not the one it was last read from.
 * Keeping a reference to that map makes the pointer compare exact (the
 * map cannot be freed and another made at its address meanwhile). */
static ctxpy_snapshot_t *context_snapshot(context_object *self) {
    if (self->pycontext && self->snap) {
#if CTXPY_DIRECT
        PyObject *vars = ((ctxpy_pycontext_t *)self->pycontext)->ctx_vars;
        if (vars == self->snap_vars)
            return self->snap;
#else
        PyObject *vars = NULL; /* no map to compare: read it every time */
#endif
        PyThreadState *ts = CTXPY_TSTATE();
        ctxpy_snapshot_t *now = NULL;
        PyObject *owned = NULL;
        if (ts->context == self->pycontext && (now = ctxpy_current(ts))) {
            /* being run on this thread (NULL: C's context is current) */
        } else if ((owned = PyObject_GetItem(self->pycontext, ctxpy_hidden))) {
            now = (ctxpy_snapshot_t *)owned;
        } else {
            PyErr_Clear();
            now = ctxpy_empty;
        }
        if (now != self->snap)
            Py_SETREF(self->snap, (ctxpy_snapshot_t *)Py_NewRef((PyObject *)now));
        Py_XDECREF(owned);
        Py_XSETREF(self->snap_vars, Py_XNewRef(vars));
    }
    return self->snap ? self->snap : ctxpy_empty;
}

static int check_key(PyObject *key) {
    if (!Var_Check(key)) {
        PyErr_Format(PyExc_TypeError, "a ContextVar key was expected, got %R", key);
        return -1;
    }
    return 0;
}

static PyObject *context_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)type;
    if (PyTuple_Size(args) || (kwds != NULL && PyDict_Size(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Context() does not accept any arguments");
        return NULL;
    }
    return context_new_from(ctxpy_empty);
}

static int context_tp_traverse(context_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->snap);
    Py_VISIT(self->pycontext);
    Py_VISIT(self->snap_vars);
    return 0;
}

static int context_tp_clear(context_object *self) {
    Py_CLEAR(self->snap);
    Py_CLEAR(self->pycontext);
    Py_CLEAR(self->snap_vars);
    return 0;
}

static void context_tp_dealloc(context_object *self) {
    /* No trashcan: a chain of contexts nested as values passes through
     * snapshots, whose dealloc has one. */
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    context_tp_clear(self);
    ctxpy_freelist_free(&context_freelist, (PyObject *)self);
    ctxpy_drain();
}

static Py_ssize_t context_tp_len(context_object *self) {
    return ctxpy_snapshot_len(context_snapshot(self));
}

/* 1 and a new reference in *out, 0 if absent, -1 on error. */
static int context_lookup(context_object *self, PyObject *key, PyObject **out) {
    if (check_key(key) < 0)
        return -1;
    if (snapshot_lookup(context_snapshot(self), (var_object *)key, out) < 0)
        return -1;
    return *out != NULL;
}

static PyObject *context_tp_subscript(context_object *self, PyObject *key) {
    PyObject *value;
    int r = context_lookup(self, key, &value);
    if (r < 0)
        return NULL;
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return value;
}

static int context_tp_contains(context_object *self, PyObject *key) {
    PyObject *value;
    int r = context_lookup(self, key, &value);
    if (r == 1)
        Py_DECREF(value);
    return r;
}

static PyObject *context_iter_new(context_object *self, int kind) {
    ctxpy_snapshot_t *snap = context_snapshot(self);
    context_iter_object *it = PyObject_GC_New(context_iter_object, &ctxpy_ContextIter_Type);
    if (!it)
        return NULL;
    it->snap = (ctxpy_snapshot_t *)Py_NewRef((PyObject *)snap);
    it->len = ctxpy_snapshot_len(snap);
    it->kind = kind;
    it->index = 0;
    it->core = snap->ctx != NULL;
    it->live = 1;
    if (it->core)
        ctx_iter_init(&it->it, snap->ctx);
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *context_tp_iter(context_object *self) {
    return context_iter_new(self, ITER_KEYS);
}

static PyObject *context_tp_richcompare(PyObject *v, PyObject *w, int op) {
    if (!Context_Check(v) || !Context_Check(w) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    int equal = 1;
    ctxpy_snapshot_t *a = context_snapshot((context_object *)v);
    ctxpy_snapshot_t *b = context_snapshot((context_object *)w);
    if (a != b) {
        /* Hold both: __eq__ below may run anything. */
        Py_INCREF(a);
        Py_INCREF(b);
        if (!a->ctx && !b->ctx) {
            /* Variables made in Python only: compare the pairs. */
            if (a->n != b->n)
                equal = 0;
            for (Py_ssize_t i = 0; equal == 1 && i < a->n; i++) {
                PyObject *y = ctxpy_snapshot_get(b, a->pairs[2 * i]);
                if (!y) {
                    equal = 0;
                    break;
                }
                PyObject *x = Py_NewRef(a->pairs[2 * i + 1]);
                Py_INCREF(y);
                equal = PyObject_RichCompareBool(x, y, Py_EQ);
                Py_DECREF(x);
                Py_DECREF(y);
            }
        } else {
            ctx_context_t *actx = ctxpy_snapshot_core(a);
            ctx_context_t *bctx = actx ? ctxpy_snapshot_core(b) : NULL;
            if (!bctx)
                equal = -1;
            else if (ctx_context_length(actx) != ctx_context_length(bctx))
                equal = 0;
            else {
                ctx_iter_t it;
                ctx_var_t *var;
                void *a_value, *b_value;
                ctx_iter_init(&it, actx);
                while (equal == 1 && ctx_iter_next(&it, &var, &a_value)) {
                    if (ctx_context_get(bctx, var, &b_value) != 0) {
                        equal = 0;
                        break;
                    }
                    PyObject *x = ctxpy_value_object(var, a_value);
                    PyObject *y = x ? ctxpy_value_object(var, b_value) : NULL;
                    equal = y ? PyObject_RichCompareBool(x, y, Py_EQ) : -1;
                    Py_XDECREF(x);
                    Py_XDECREF(y);
                }
                ctx_iter_clear(&it);
            }
        }
        Py_DECREF(a);
        Py_DECREF(b);
        ctxpy_drain();
        if (equal < 0)
            return NULL;
    }
    if (op == Py_NE)
        equal = !equal;
    return Py_NewRef(equal ? Py_True : Py_False);
}

PyDoc_STRVAR(context_get_doc,
             "get($self, key, default=None, /)\n--\n\n"
             "Return the value for `key` if `key` has the value in the context object.\n\n"
             "If `key` does not exist, return `default`. If `default` is not given,\n"
             "return None.");

static PyObject *context_get(context_object *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        if (nargs < 1)
            PyErr_Format(PyExc_TypeError, "get expected at least 1 argument, got %zd", nargs);
        else
            PyErr_Format(PyExc_TypeError, "get expected at most 2 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *value;
    int r = context_lookup(self, args[0], &value);
    if (r < 0)
        return NULL;
    if (r == 0)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return value;
}

static PyObject *context_keys(context_object *self, PyObject *unused) {
    (void)unused;
    return context_iter_new(self, ITER_KEYS);
}

static PyObject *context_values(context_object *self, PyObject *unused) {
    (void)unused;
    return context_iter_new(self, ITER_VALUES);
}

static PyObject *context_items(context_object *self, PyObject *unused) {
    (void)unused;
    return context_iter_new(self, ITER_ITEMS);
}

static PyObject *context_copy(context_object *self, PyObject *unused) {
    (void)unused;
    context_object *copy = (context_object *)context_new_from(context_snapshot(self));
    if (copy && self->pycontext && !(copy->pycontext = PyContext_Copy(self->pycontext)))
        Py_CLEAR(copy);
    return (PyObject *)copy;
}

/* ctx_context_run's function for a run inside a context C entered. */
typedef struct {
    PyObject *fn;
    PyObject *const *args;
    size_t nargsf;
    PyObject *kwnames;
    PyObject *result;
} call_t;

static void *call_python(void *arg) {
    call_t *c = arg;
    c->result = PyObject_Vectorcall(c->fn, c->args, c->nargsf, c->kwnames);
    return NULL;
}

/* Stores `snap` as the value of the hidden variable in the
 * contextvars.Context behind `self` (entered for that moment).  0, or -1
 * with an exception. */
static int pycontext_store(context_object *self, ctxpy_snapshot_t *snap) {
    if (PyContext_Enter(self->pycontext) < 0)
        return -1;
    int r = ctxpy_current(CTXPY_TSTATE()) == snap ? 0 : ctxpy_publish(snap, NULL);
    if (PyContext_Exit(self->pycontext) < 0)
        r = -1;
    return r;
}

/* Context.run while a context entered through ctxvar is current (Python
 * code called back from C): that context comes first for Python as for C,
 * so the run enters a core copy of this Context's snapshot above it. */
static PyObject *context_run_core(context_object *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    ctx_context_t *ctx, *src = ctxpy_snapshot_escape(context_snapshot(self)); /* C may copy it */
    if (!src)
        return NULL;
    int r = ctx_context_copy(src, &ctx);
    if (r)
        return ctxpy_error(r);
    call_t call = {args[0], args + 1, nargsf - 1, kwnames, NULL};
    self->entered = 1;
    r = ctx_context_run(ctx, call_python, &call, NULL);
    self->entered = 0;
    if (r == 0) {
        ctxpy_snapshot_t *after = ctxpy_snapshot_new(ctx);
        if (after) {
            after->escaped = 1; /* every record in it is core-owned */
            Py_SETREF(self->snap, after);
            ctx = NULL;
            /* The contextvars.Context of earlier runs holds the values
             * (context_snapshot): it must see this run's sets. */
            if (self->pycontext && pycontext_store(self, after) < 0)
                Py_CLEAR(call.result);
        } else {
            Py_CLEAR(call.result);
        }
    }
    ctx_context_release(ctx); /* unless the new snapshot took it */
    ctxpy_drain();
    if (r) {
        Py_XDECREF(call.result);
        if (r == CTX_ENOTCURRENT)
            PyErr_SetString(PyExc_RuntimeError, "cannot exit context: thread state "
                                                "references a different context object");
        else
            ctxpy_error(r);
        return NULL;
    }
    return call.result;
}

/* 1 if the contextvars.Context behind `self` is being run (by any thread). */
static int pycontext_entered(context_object *self) {
#if CTXPY_DIRECT
    return self->pycontext && ((ctxpy_pycontext_t *)self->pycontext)->ctx_entered;
#else
    (void)self;
    return 0; /* context_run_slow marks self->entered around the run */
#endif
}

/* Context.run but for its fast path: errors, C's context current, the
 * first run. */
static CTXPY_NOINLINE PyObject *context_run_slow(context_object *self, PyObject *const *args,
                                                 Py_ssize_t nargs, PyObject *kwnames) {
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "run() missing 1 required positional argument");
        return NULL;
    }
    if (self->entered || pycontext_entered(self)) {
        PyErr_Format(PyExc_RuntimeError, "cannot enter context: %R is already entered", self);
        return NULL;
    }
    if (!self->snap) {
        PyErr_SetString(PyExc_RuntimeError, "this Context was cleared by the garbage collector");
        return NULL;
    }
    PyThreadState *ts = CTXPY_TSTATE();
    if (ctxpy_core_entered(ts))
        return context_run_core(self, args, (size_t)nargs, kwnames);

    /* The first run makes the contextvars.Context this one runs in: a copy
     * of the caller's (the standard library's variables look as there),
     * holding this Context's snapshot. */
    if (!self->pycontext) {
        if (!(self->pycontext = PyContext_CopyCurrent()))
            return NULL;
        if (pycontext_store(self, self->snap) < 0) {
            Py_CLEAR(self->pycontext);
            return NULL;
        }
    }
#if CTXPY_DIRECT
    return std_context_run(self->pycontext, args, nargs, kwnames);
#else
    self->entered = 1; /* the "already entered" check above */
    PyObject *result = std_context_run(self->pycontext, args, nargs, kwnames);
    self->entered = 0;
    return result;
#endif
}

/* The fast path is the standard library's Context.run on the
 * contextvars.Context the first run made, called last so that it returns
 * straight to the caller: nothing is left to do after it, because the run's
 * sets stay in that Context's map, where context_snapshot reads them. */
static PyObject *context_run(context_object *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
#if CTXPY_DIRECT
    ctxpy_pycontext_t *py = (ctxpy_pycontext_t *)self->pycontext;
    if (CTXPY_LIKELY(nargs >= 1 && py && !py->ctx_entered && !self->entered) &&
        CTXPY_LIKELY(!ctx_thread_has_entered()))
        return std_context_run((PyObject *)py, args, nargs, kwnames);
#endif
    return context_run_slow(self, args, nargs, kwnames);
}

static PyMethodDef context_methods[] = {
    {"get", (PyCFunction)(void (*)(void))context_get, METH_FASTCALL, context_get_doc},
    {"items", (PyCFunction)context_items, METH_NOARGS,
     PyDoc_STR("items($self, /)\n--\n\nReturn all variables and their values in the "
               "context object.\n\nThe result is returned as a list of 2-tuples "
               "(variable, value).")},
    {"keys", (PyCFunction)context_keys, METH_NOARGS,
     PyDoc_STR("keys($self, /)\n--\n\nReturn a list of all variables in the context object.")},
    {"values", (PyCFunction)context_values, METH_NOARGS,
     PyDoc_STR("values($self, /)\n--\n\nReturn a list of all variables' values in the "
               "context object.")},
    {"copy", (PyCFunction)context_copy, METH_NOARGS,
     PyDoc_STR("copy($self, /)\n--\n\nReturn a shallow copy of the context object.")},
    {"run", (PyCFunction)(void (*)(void))context_run, METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("run(callable, *args, **kwargs)\n\nCall callable(*args, **kwargs) in this "
               "context and return its result.\n\nStandard-library context variables "
               "inside the call are those of a contextvars.Context this Context keeps: a "
               "copy of the caller's, made by its first run (or copied from the Context "
               "that copy() was called on).")},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods context_as_sequence = {
    .sq_contains = (objobjproc)context_tp_contains,
};

static PyMappingMethods context_as_mapping = {
    .mp_length = (lenfunc)context_tp_len,
    .mp_subscript = (binaryfunc)context_tp_subscript,
};

PyTypeObject ctxpy_Context_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctxvar.Context",
    .tp_basicsize = sizeof(context_object),
    .tp_dealloc = (destructor)context_tp_dealloc,
    .tp_as_sequence = &context_as_sequence,
    .tp_as_mapping = &context_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Context()\n--\n\nA mapping of ContextVars to their values."),
    .tp_traverse = (traverseproc)context_tp_traverse,
    .tp_clear = (inquiry)context_tp_clear,
    .tp_richcompare = context_tp_richcompare,
    .tp_weaklistoffset = offsetof(context_object, weakreflist),
    .tp_iter = (getiterfunc)context_tp_iter,
    .tp_methods = context_methods,
    .tp_new = context_tp_new,
};

/* ---------------------------------------------------------------------- */
/* The context iterator: keys(), values(), items(), iter(ctx)              */
/* ---------------------------------------------------------------------- */

/* Like CPython's, it is its own iterator, over the snapshot current when it
 * was made, and its len() is the snapshot's size. */

static void context_iter_finish(context_iter_object *self) {
    if (self->live) {
        self->live = 0;
        if (self->core)
            ctx_iter_clear(&self->it);
        ctxpy_drain();
    }
}

static int context_iter_traverse(context_iter_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->snap);
    return 0;
}

static int context_iter_clear(context_iter_object *self) {
    context_iter_finish(self);
    Py_CLEAR(self->snap);
    return 0;
}

static void context_iter_dealloc(context_iter_object *self) {
    PyObject_GC_UnTrack(self);
    context_iter_clear(self);
    PyObject_GC_Del(self);
}

static PyObject *context_iter_next(context_iter_object *self) {
    ctx_var_t *var;
    void *value;
    PyObject *key, *obj, *pair;
    if (self->live && !self->core) {
        /* Its pairs (a snapshot the collector cleared has none). */
        ctxpy_snapshot_t *s = self->snap;
        if (!s || self->index >= s->n) {
            context_iter_finish(self);
            return NULL;
        }
        key = s->pairs[2 * self->index];
        obj = s->pairs[2 * self->index++ + 1];
        switch (self->kind) {
        case ITER_KEYS:
            return Py_NewRef(key);
        case ITER_VALUES:
            return Py_NewRef(obj);
        default:
            return PyTuple_Pack(2, key, obj);
        }
    }
    /* A snapshot the collector cleared has dropped its objects. */
    if (!self->live || !self->snap || !self->snap->ctx ||
        !ctx_iter_next(&self->it, &var, &value)) {
        context_iter_finish(self);
        return NULL;
    }
    switch (self->kind) {
    case ITER_KEYS:
        return ctxpy_var_object(var, value);
    case ITER_VALUES:
        return ctxpy_value_object(var, value);
    default:
        key = ctxpy_var_object(var, value);
        obj = key ? ctxpy_value_object(var, value) : NULL;
        pair = obj ? PyTuple_Pack(2, key, obj) : NULL;
        Py_XDECREF(key);
        Py_XDECREF(obj);
        return pair;
    }
}

static Py_ssize_t context_iter_len(context_iter_object *self) { return self->len; }

static PyMappingMethods context_iter_as_mapping = {
    .mp_length = (lenfunc)context_iter_len,
};

PyTypeObject ctxpy_ContextIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctxvar.ContextIterator",
    .tp_basicsize = sizeof(context_iter_object),
    .tp_dealloc = (destructor)context_iter_dealloc,
    .tp_as_mapping = &context_iter_as_mapping,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)context_iter_traverse,
    .tp_clear = (inquiry)context_iter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)context_iter_next,
};

/* ---------------------------------------------------------------------- */
/* copy_context                                                            */
/* ---------------------------------------------------------------------- */

PyObject *ctxpy_copy_context(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    ctxpy_snapshot_t *snap = ctxpy_current(CTXPY_TSTATE());
    if (snap)
        return context_new_from(snap);
    /* A context C entered is current: copy it. */
    ctx_context_t *copy;
    int r = ctx_context_copy_current(&copy);
    if (r)
        return ctxpy_error(r);
    snap = ctxpy_snapshot_new(copy);
    if (!snap) {
        ctx_context_release(copy);
        ctxpy_drain();
        return NULL;
    }
    snap->escaped = 1; /* its records came from a C context: core-owned */
    PyObject *ctx = context_new_from(snap);
    Py_DECREF(snap);
    return ctx;
}

/* ---------------------------------------------------------------------- */
/* A test hook for the thread-exit path                                    */
/* ---------------------------------------------------------------------- */

/* A native thread, which has no Python thread state and never holds the
 * GIL, sets a value in its own context and exits; the core's pthread key
 * destructor then releases that context, and the record's references land
 * in the deferred queue. */
typedef struct {
    ctx_var_t *var;
    ctxpy_record_t *record;
    int rc;
} native_job_t;

static void *native_set_main(void *arg) {
    native_job_t *job = arg;
    job->rc = ctx_var_set(job->var, job->record, NULL);
    return NULL;
}

PyObject *ctxpy_set_in_native_thread(PyObject *module, PyObject *const *args,
                                     Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !Var_Check(args[0]) || ((var_object *)args[0])->c_values) {
        PyErr_SetString(PyExc_TypeError, "_set_in_native_thread(var, value)");
        return NULL;
    }
    var_object *var = (var_object *)args[0];
    ctxpy_record_t *record = ctxpy_record_new((PyObject *)var, args[1]);
    if (!record)
        return NULL;
    ctxpy_record_own(record);
    native_job_t job = {var->var, record, 0};
    pthread_t thread;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = pthread_create(&thread, NULL, native_set_main, &job);
    if (err == 0)
        pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS
    if (err || job.rc) {
        ctxpy_record_discard(record);
        if (err) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return ctxpy_error(job.rc);
    }
    return PyBool_FromLong(ctxpy_pending());
}

int ctxpy_contextvars_ready(PyObject *module) {
    PyTypeObject *types[] = {&ctxpy_ContextVar_Type, &ctxpy_Token_Type, &ctxpy_Context_Type,
                             &ctxpy_ContextIter_Type, &ctxpy_TokenMissing_Type};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (PyType_Ready(types[i]) < 0)
            return -1;
    if (!token_missing) {
        token_missing = PyObject_New(PyObject, &ctxpy_TokenMissing_Type);
        if (!token_missing)
            return -1;
        if (PyDict_SetItemString(ctxpy_Token_Type.tp_dict, "MISSING", token_missing) < 0)
            return -1;
        PyType_Modified(&ctxpy_Token_Type);
    }
    if (!c_wrappers && !(c_wrappers = PyDict_New()))
        return -1;
    for (PyMethodDef *m = PyContext_Type.tp_methods; m && m->ml_name && !std_context_run; m++)
        if (!strcmp(m->ml_name, "run") && m->ml_flags == (METH_FASTCALL | METH_KEYWORDS))
            std_context_run = (context_run_fn)(void (*)(void))m->ml_meth;
    if (!std_context_run) {
        PyErr_SetString(PyExc_ImportError, "_ctxvar: contextvars.Context has no run method");
        return -1;
    }
    const char *names[] = {"ContextVar", "Token", "Context"};
    for (size_t i = 0; i < 3; i++)
        if (PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0)
            return -1;
    return 0;
}
