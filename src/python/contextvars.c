/*
 * contextvars.c — ContextVar, Token, Context and copy_context: CPython's
 * `contextvars` (Python/context.c of CPython 3.11: same behaviour, error types
 * and messages) on the ctxvar core.
 *
 * Objects
 * -------
 *
 *   ContextVar ──▶ ctx_var_t (one reference; name as UTF-8; no core default:
 *                  the default stays a Python attribute, since get(default)
 *                  outranks it)
 *
 *   Context ──▶ ctx_context_t ──▶ map ──▶ core box (var, value) ──▶ value box
 *                                                                  ├ ContextVar (strong)
 *                                                                  └ value      (strong)
 *
 *   Token ──▶ ctx_token_t (retains the previous core box) ; ContextVar (strong)
 *
 * A stored value is a *value box* (ctxpy_box_t): the ContextVar object and
 * the value, each held by a strong reference.  One box is one share in the
 * core's terms: made by ContextVar.set, released by the core (the variable's
 * release operation) when no context, copy or token refers to it.  Because
 * the box holds the ContextVar object, iterating a context yields live
 * ContextVar objects even when the program dropped its own reference, and a
 * core variable never outlives its Python object: the C variable is retained
 * only by the ContextVar and by core boxes, and each core box holds a value
 * box that holds the ContextVar.  The release operation only queues the box
 * (module.c); the references are dropped by ctxpy_drain.
 *
 * The current context is the core's per-OS-thread current context; the
 * thread guard (module.c) gives it the lifetime of the Python thread state.
 * Context.run is ctx_context_enter / call / ctx_context_exit; the core refuses
 * to enter a context entered anywhere (CTX_EENTERED), which is CPython's
 * RuntimeError.
 *
 * Garbage collection
 * ------------------
 * Contexts copy in O(1) by sharing map nodes, so one value box may be
 * reachable from several Context objects while its references are counted
 * once.  A traversal that visited shared boxes from each context would make
 * the collector count more references than exist and free live objects.  So
 * a Context visits only the boxes it owns alone: those whose map path (root,
 * nodes, core box) has a reference count of one (ctx__hamt_is_private).
 * Shared boxes are treated as referenced from outside — the safe direction —
 * and become visible to the collector as soon as the sharing ends (the usual
 * case: a value set inside a context, which copies its path first).  A
 * context that is entered is not traversed at all: it is alive (its thread
 * holds it) and its map may change.  A Token likewise visits the previous box
 * only while it alone holds it.  Everything that changes a map runs with the
 * GIL held, so what a traversal sees cannot change between the collector's
 * passes.
 *
 * Functions, in order: value boxes; ContextVar; Token and Token.MISSING;
 * Context (mapping, run, copy, comparison, GC); the context iterator;
 * copy_context; ctxpy_contextvars_ready.
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

typedef struct {
    PyObject_HEAD
    ctx_var_t *var;
    PyObject *name;
    PyObject *default_value; /* NULL: none */
    Py_hash_t hash;
} var_object;

typedef struct {
    PyObject_HEAD
    ctx_token_t *token; /* NULL only while being built */
    var_object *var;
} token_object;

typedef struct {
    PyObject_HEAD
    ctx_context_t *ctx; /* NULL after the garbage collector cleared it */
    PyObject *weakreflist;
} context_object;

enum { ITER_KEYS, ITER_VALUES, ITER_ITEMS };

typedef struct {
    PyObject_HEAD
    ctx_iter_t it;
    Py_ssize_t len;
    int kind;
    int live;
} context_iter_object;

#define Var_Check(o) Py_IS_TYPE((o), &ctxpy_ContextVar_Type)
#define Token_Check(o) Py_IS_TYPE((o), &ctxpy_Token_Type)
#define Context_Check(o) Py_IS_TYPE((o), &ctxpy_Context_Type)

static PyObject *token_missing; /* the Token.MISSING singleton */

/* ---------------------------------------------------------------------- */
/* Value boxes                                                             */
/* ---------------------------------------------------------------------- */

typedef struct {
    ctxpy_deferred_t node;
    PyObject *var;   /* the ContextVar */
    PyObject *value;
} ctxpy_box_t;

static void box_finish(ctxpy_deferred_t *node) {
    ctxpy_box_t *box = (ctxpy_box_t *)node;
    PyObject *var = box->var, *value = box->value;
    PyMem_Free(box);
    ctxpy_count_box(-1);
    Py_DECREF(value);
    Py_DECREF(var);
}

/* The variables' release operation: any thread, maybe inside a core call. */
static void box_release(void *value, void *user) {
    (void)user;
    ctxpy_defer(&((ctxpy_box_t *)value)->node);
}

static const ctx_value_ops_t box_ops = {.size = sizeof(ctx_value_ops_t),.release = box_release};

static ctxpy_box_t *box_new(var_object *var, PyObject *value) {
    ctxpy_box_t *box = PyMem_Malloc(sizeof *box);
    if (!box) {
        PyErr_NoMemory();
        return NULL;
    }
    ctxpy_count_box(1);
    box->node.next = NULL;
    box->node.finish = box_finish;
    box->var = Py_NewRef((PyObject *)var);
    box->value = Py_NewRef(value);
    return box;
}

/* Visits a box held by a single owner. */
static int box_visit(const ctxpy_box_t *box, visitproc visit, void *arg) {
    Py_VISIT(box->value);
    Py_VISIT(box->var);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* ContextVar                                                              */
/* ---------------------------------------------------------------------- */

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
    Py_hash_t name_hash = PyObject_Hash(name);
    if (name_hash == -1)
        return NULL;
    const char *cname = PyUnicode_AsUTF8(name);
    if (!cname) { /* lone surrogates: the core's copy is for logs only */
        PyErr_Clear();
        cname = "<unencodable name>";
    }

    var_object *self = PyObject_GC_New(var_object, &ctxpy_ContextVar_Type);
    if (!self)
        return NULL;
    self->var = NULL;
    self->name = Py_NewRef(name);
    self->default_value = Py_XNewRef(def);
    ctx_var_options_t options = {.size = sizeof(ctx_var_options_t), .ops = &box_ops};
    int r = ctx_var_new(cname, &options, &self->var);
    if (r) {
        Py_DECREF(self);
        return ctxpy_error(r);
    }
    Py_hash_t hash = CTXPY_HASH_POINTER(self) ^ name_hash;
    self->hash = hash == -1 ? -2 : hash;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int var_tp_traverse(var_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->name);
    Py_VISIT(self->default_value);
    return 0;
}

static int var_tp_clear(var_object *self) {
    /* The name stays: the object may still be reached (boxes hold it). */
    Py_CLEAR(self->default_value);
    return 0;
}

static void var_tp_dealloc(var_object *self) {
    PyObject_GC_UnTrack(self);
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
    void *value;
    int r = ctx_var_get(self->var, &value);
    if (r == CTX_VALUE)
        return Py_NewRef(((ctxpy_box_t *)value)->value);
    if (r != CTX_ENOTFOUND && r != CTX_DEFAULT)
        return ctxpy_error(r);
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

static PyObject *var_set(var_object *self, PyObject *value) {
    if (ctxpy_thread_guard() < 0)
        return NULL;
    /* Everything is allocated before the core call, so a failure changes
     * nothing. */
    token_object *tok = PyObject_GC_New(token_object, &ctxpy_Token_Type);
    if (!tok)
        return NULL;
    tok->token = NULL;
    tok->var = (var_object *)Py_NewRef((PyObject *)self);
    ctxpy_box_t *box = box_new(self, value);
    if (!box) {
        Py_DECREF(tok);
        return NULL;
    }
    int r = ctx_var_set(self->var, box, &tok->token);
    if (r) {
        box_finish(&box->node);
        Py_DECREF(tok);
        return ctxpy_error(r);
    }
    PyObject_GC_Track(tok);
    ctxpy_drain();
    return (PyObject *)tok;
}

PyDoc_STRVAR(var_reset_doc,
             "reset($self, token, /)\n--\n\n"
             "Reset the context variable.\n\n"
             "The variable is reset to the value it had before the `ContextVar.set()` that\n"
             "created the token was used.");

static PyObject *var_reset(var_object *self, PyObject *arg) {
    if (!Token_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected an instance of Token, got %R", arg);
        return NULL;
    }
    token_object *tok = (token_object *)arg;
    /* CPython's order of checks. */
    if (ctx_token_used(tok->token)) {
        PyErr_Format(PyExc_RuntimeError, "%R has already been used once", tok);
        return NULL;
    }
    if (tok->var != self) {
        PyErr_Format(PyExc_ValueError, "%R was created by a different ContextVar", tok);
        return NULL;
    }
    int r = ctx_var_reset(self->var, tok->token);
    ctxpy_drain();
    switch (r) {
    case 0:
        Py_RETURN_NONE;
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
        return ctxpy_error(r);
    }
}

static PyMethodDef var_methods[] = {
    {"get", (PyCFunction)(void (*)(void))var_get, METH_FASTCALL, var_get_doc},
    {"set", (PyCFunction)(void (*)(void))var_set, METH_O, var_set_doc},
    {"reset", (PyCFunction)(void (*)(void))var_reset, METH_O, var_reset_doc},
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
    /* The previous value, while this token is the only holder of its box. */
    if (self->token && self->token->old &&
        atomic_load_explicit(&self->token->old->item.refs, memory_order_acquire) == 1) {
        int r = box_visit(self->token->old->value, visit, arg);
        if (r)
            return r;
    }
    return 0;
}

static void token_tp_dealloc(token_object *self) {
    PyObject_GC_UnTrack(self);
    ctx_token_release(self->token);
    Py_CLEAR(self->var);
    PyObject_GC_Del(self);
    ctxpy_drain();
}

static PyObject *token_tp_repr(token_object *self) {
    return PyUnicode_FromFormat("<Token%s var=%R at %p>",
                                ctx_token_used(self->token) ? " used" : "", self->var, self);
}

static PyObject *token_get_var(token_object *self, void *unused) {
    (void)unused;
    return Py_NewRef((PyObject *)self->var);
}

static PyObject *token_get_old_value(token_object *self, void *unused) {
    (void)unused;
    void *old;
    if (ctx_token_old_value(self->token, &old) != 0)
        return Py_NewRef(token_missing);
    return Py_NewRef(((ctxpy_box_t *)old)->value);
}

static PyGetSetDef token_getset[] = {
    {"var", (getter)token_get_var, NULL, NULL, NULL},
    {"old_value", (getter)token_get_old_value, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef token_methods[] = {
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, PyDoc_STR("See PEP 585")},
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

/* A new Context object owning `ctx` (released on failure). */
static PyObject *context_wrap(ctx_context_t *ctx) {
    context_object *self = PyObject_GC_New(context_object, &ctxpy_Context_Type);
    if (!self) {
        ctx_context_release(ctx);
        ctxpy_drain();
        return NULL;
    }
    self->ctx = ctx;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* The core context, or NULL with RuntimeError if the collector cleared it. */
static ctx_context_t *context_get_ctx(context_object *self) {
    if (!self->ctx)
        PyErr_SetString(PyExc_RuntimeError,
                        "this Context was cleared by the garbage collector");
    return self->ctx;
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
    ctx_context_t *ctx;
    int r = ctx_context_new(&ctx);
    if (r)
        return ctxpy_error(r);
    return context_wrap(ctx);
}

static int context_tp_traverse(context_object *self, visitproc visit, void *arg) {
    ctx_context_t *ctx = self->ctx;
    if (!ctx || ctx_context_is_entered(ctx))
        return 0;
    int r = 0;
    ctx__context_lock(ctx);
    ctx__hamt_iter_t walk;
    ctx__hamt_iter_init(&walk, &ctx->map);
    ctx__hamt_item_t *item;
    while (r == 0 && (item = ctx__hamt_iter_next(&walk))) {
        if (ctx__hamt_is_private(&ctx->map, item->hash, item->key, &ctx__box_ops) == 1)
            r = box_visit(((ctx__box_t *)item)->value, visit, arg);
    }
    ctx__context_unlock(ctx);
    return r;
}

static int context_tp_clear(context_object *self) {
    ctx_context_t *ctx = self->ctx;
    self->ctx = NULL;
    ctx_context_release(ctx);
    ctxpy_drain();
    return 0;
}

static void context_tp_dealloc(context_object *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    ctx_context_t *ctx = self->ctx;
    self->ctx = NULL;
    ctx_context_release(ctx);
    PyObject_GC_Del(self);
    ctxpy_drain();
}

static Py_ssize_t context_tp_len(context_object *self) {
    ctx_context_t *ctx = context_get_ctx(self);
    return ctx ? (Py_ssize_t)ctx_context_length(ctx) : -1;
}

/* 1 and a new reference in *out, 0 if absent, -1 on error. */
static int context_lookup(context_object *self, PyObject *key, PyObject **out) {
    if (check_key(key) < 0)
        return -1;
    ctx_context_t *ctx = context_get_ctx(self);
    if (!ctx)
        return -1;
    void *value;
    int r = ctx_context_get(ctx, ((var_object *)key)->var, &value);
    if (r == CTX_ENOTFOUND)
        return 0;
    if (r) {
        ctxpy_error(r);
        return -1;
    }
    *out = Py_NewRef(((ctxpy_box_t *)value)->value);
    return 1;
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
    ctx_context_t *ctx = context_get_ctx(self);
    if (!ctx)
        return NULL;
    context_iter_object *it = PyObject_New(context_iter_object, &ctxpy_ContextIter_Type);
    if (!it)
        return NULL;
    it->len = (Py_ssize_t)ctx_context_length(ctx);
    it->kind = kind;
    ctx_iter_init(&it->it, ctx);
    it->live = 1;
    return (PyObject *)it;
}

static PyObject *context_tp_iter(context_object *self) {
    return context_iter_new(self, ITER_KEYS);
}

static PyObject *context_tp_richcompare(PyObject *v, PyObject *w, int op) {
    if (!Context_Check(v) || !Context_Check(w) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    int equal = 1;
    if (v != w) {
        ctx_context_t *a = context_get_ctx((context_object *)v);
        ctx_context_t *b = a ? context_get_ctx((context_object *)w) : NULL;
        if (!b)
            return NULL;
        if (ctx_context_length(a) != ctx_context_length(b)) {
            equal = 0;
        } else {
            /* A snapshot of `a`; values of `b` held while compared, since
             * __eq__ may change `b`. */
            ctx_iter_t it;
            ctx_var_t *var;
            void *a_value;
            ctx_iter_init(&it, a);
            while (equal == 1 && ctx_iter_next(&it, &var, &a_value)) {
                void *b_value;
                if (ctx_context_get(b, var, &b_value) != 0) {
                    equal = 0;
                    break;
                }
                PyObject *x = Py_NewRef(((ctxpy_box_t *)a_value)->value);
                PyObject *y = Py_NewRef(((ctxpy_box_t *)b_value)->value);
                equal = PyObject_RichCompareBool(x, y, Py_EQ);
                Py_DECREF(x);
                Py_DECREF(y);
            }
            ctx_iter_clear(&it);
            ctxpy_drain();
            if (equal < 0)
                return NULL;
        }
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
    ctx_context_t *ctx = context_get_ctx(self);
    if (!ctx)
        return NULL;
    ctx_context_t *copy;
    int r = ctx_context_copy(ctx, &copy);
    if (r)
        return ctxpy_error(r);
    return context_wrap(copy);
}

static PyObject *context_run(context_object *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "run() missing 1 required positional argument");
        return NULL;
    }
    ctx_context_t *ctx = context_get_ctx(self);
    if (!ctx || ctxpy_thread_guard() < 0)
        return NULL;
    int r = ctx_context_enter(ctx);
    if (r == CTX_EENTERED) {
        PyErr_Format(PyExc_RuntimeError, "cannot enter context: %R is already entered", self);
        return NULL;
    }
    if (r)
        return ctxpy_error(r);

    PyObject *result = PyObject_Vectorcall(args[0], args + 1, (size_t)nargs - 1, kwnames);

    r = ctx_context_exit(ctx);
    ctxpy_drain();
    if (r) {
        Py_XDECREF(result);
        if (r == CTX_ENOTENTERED)
            PyErr_Format(PyExc_RuntimeError, "cannot exit context: %R has not been entered",
                         self);
        else if (r == CTX_ENOTCURRENT)
            PyErr_SetString(PyExc_RuntimeError, "cannot exit context: thread state "
                                                "references a different context object");
        else
            ctxpy_error(r);
        return NULL;
    }
    return result;
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
               "context and return its result.")},
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

/* Like CPython's, it is its own iterator, over a snapshot taken when it was
 * made, and its len() is the snapshot's size. */

static void context_iter_finish(context_iter_object *self) {
    if (self->live) {
        self->live = 0;
        ctx_iter_clear(&self->it);
        ctxpy_drain();
    }
}

static void context_iter_dealloc(context_iter_object *self) {
    context_iter_finish(self);
    PyObject_Free(self);
}

static PyObject *context_iter_next(context_iter_object *self) {
    ctx_var_t *var;
    void *value;
    if (!self->live || !ctx_iter_next(&self->it, &var, &value)) {
        context_iter_finish(self);
        return NULL;
    }
    ctxpy_box_t *box = value;
    switch (self->kind) {
    case ITER_KEYS:
        return Py_NewRef(box->var);
    case ITER_VALUES:
        return Py_NewRef(box->value);
    default:
        return PyTuple_Pack(2, box->var, box->value);
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
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)context_iter_next,
};

/* ---------------------------------------------------------------------- */
/* copy_context and type setup                                             */
/* ---------------------------------------------------------------------- */

PyObject *ctxpy_copy_context(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    ctx_context_t *copy;
    int r = ctx_context_copy_current(&copy);
    if (r)
        return ctxpy_error(r);
    return context_wrap(copy);
}

/* A test hook for the thread-exit path: a native thread, which has no Python
 * thread state and never holds the GIL, sets a value in its own base context
 * and exits; the core's pthread key destructor then releases that context,
 * and the value box lands in the deferred queue. */
typedef struct {
    ctx_var_t *var;
    ctxpy_box_t *box;
    int rc;
} native_job_t;

static void *native_set_main(void *arg) {
    native_job_t *job = arg;
    job->rc = ctx_var_set(job->var, job->box, NULL);
    return NULL;
}

PyObject *ctxpy_set_in_native_thread(PyObject *module, PyObject *const *args,
                                     Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !Var_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_set_in_native_thread(var, value)");
        return NULL;
    }
    var_object *var = (var_object *)args[0];
    ctxpy_box_t *box = box_new(var, args[1]);
    if (!box)
        return NULL;
    native_job_t job = {var->var, box, 0};
    pthread_t thread;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = pthread_create(&thread, NULL, native_set_main, &job);
    if (err == 0)
        pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS
    if (err || job.rc) {
        box_finish(&box->node);
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
    const char *names[] = {"ContextVar", "Token", "Context"};
    for (size_t i = 0; i < 3; i++)
        if (PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0)
            return -1;
    return 0;
}
