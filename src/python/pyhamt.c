/* SPDX-License-Identifier: MIT */
/*
 * pyhamt.c — Hamt: the core's persistent map (ctx__hamt_*) as an immutable
 * Python mapping with Python keys, what CPython's tests reach as
 * `_testcapi.hamt()` (CPython's own is Python/hamt.c).  The map code is a
 * private copy of src/core/hamt.c compiled into this module with hidden
 * visibility (hamt_alloc.c gives it an allocator); nothing here touches the
 * shared core library.
 *
 *   Hamt object ──▶ ctx__hamt_t (root reference, count)
 *     │                  │  nodes shared with every map derived from it
 *     │                  ▼
 *     │             item: { ctx__hamt_item_t hdr (refs, hash, key), value }
 *     │                     key and value borrowed
 *     └──── one reference to every key and value in its map ────┘
 *
 * `set` and `delete` return a new Hamt (ctx__hamt_assoc / ctx__hamt_without),
 * or the same object when nothing changes: setting a key to the value it
 * already has (the identical object), or deleting a key that is absent.  A
 * key equal to one already present keeps the existing key object (as dict and
 * CPython's hamt do); only the value is replaced.
 *
 * Hashing: PyObject_Hash folded to 32 bits exactly as CPython's hamt.c does,
 * `(int32_t)(h & 0xffffffff) ^ (int32_t)(h >> 32)`, with -1 mapped to -2, so
 * keys with chosen hashes build the same collisions.  Equality: identity,
 * then PyObject_RichCompareBool; an exception from __hash__ or __eq__ stops
 * the operation (the core then returns CTX_EKEY and changes nothing) and
 * propagates.
 *
 * References and the garbage collector: map nodes are shared between Hamt
 * objects in a way the collector cannot see, so items hold no references at
 * all; each Hamt object holds its own reference to every key and value of
 * its map, in an array (`refs`: made from its parent's with one change, then
 * one increment each: O(n), a tight loop) that its tp_traverse visits.  Every reference is then seen once, and a cycle through values
 * shared by any number of Hamts is collected by one gc.collect().  Items
 * stay valid while any Hamt holding them lives, since that Hamt holds their
 * objects; they are freed by the map code, always with the GIL held.  Deep
 * chains of maps nested as values are freed through the trashcan.
 *
 * Iterators (keys(), values(), items(), iter(h)) hold the Hamt they walk and
 * are their own iterators; len() of one is the map's size (as CPython's).
 */
#include "ctxpy.h"

#include "core/alloc.h"
#include "core/hamt.h"

typedef struct {
    ctx__hamt_item_t hdr; /* hdr.key: the key object (borrowed) */
    PyObject *value;      /* borrowed */
} item_t;

static long live_items; /* GIL */

long ctxpy_items_alive(void) { return live_items; }

typedef struct {
    PyObject_HEAD
    ctx__hamt_t map;
    PyObject **refs; /* key, value, key, value, ...: one reference each */
    PyObject *weakreflist;
} hamt_object;

enum { ITER_KEYS, ITER_VALUES, ITER_ITEMS };

typedef struct {
    PyObject_HEAD
    hamt_object *owner; /* NULL once cleared by the collector */
    const ctx__hamt_node_t *root; /* owner's root when the walk began */
    ctx__hamt_iter_t walk;
    int kind;
    int done; /* the walk reported its end: never resumed */
} hamt_iter_object;

#define Hamt_Check(o) Py_IS_TYPE((o), &ctxpy_Hamt_Type)

static item_t *item_of(const ctx__hamt_item_t *hdr) {
    return (item_t *)((char *)hdr - offsetof(item_t, hdr));
}

/* ---------------------------------------------------------------------- */
/* Items and the map operations                                            */
/* ---------------------------------------------------------------------- */

static void item_free(ctx__hamt_item_t *hdr, void *user) {
    (void)user;
    live_items--;
    ctx__free(item_of(hdr), sizeof(item_t));
}

static int key_eq(const void *a, const void *b, void *user) {
    (void)user;
    int r = PyObject_RichCompareBool((PyObject *)a, (PyObject *)b, Py_EQ);
    return r < 0 ? CTX_EKEY : r;
}

static const ctx__hamt_ops_t python_ops = {key_eq, item_free, NULL};

/* The item with one reference (the caller's); key and value borrowed. */
static item_t *item_new(uint32_t hash, PyObject *key, PyObject *value) {
    item_t *item = ctx__malloc(sizeof *item);
    if (!item) {
        PyErr_NoMemory();
        return NULL;
    }
    live_items++;
    atomic_init(&item->hdr.refs, 1);
    item->hdr.hash = hash;
    item->hdr.key = key;
    item->value = value;
    return item;
}

static int hash_key(PyObject *key, uint32_t *out) {
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1)
        return -1;
#if SIZEOF_PY_HASH_T <= 4
    uint32_t folded = (uint32_t)hash;
#else
    uint64_t bits = (uint64_t)hash;
    uint32_t folded = (uint32_t)(bits & 0xffffffffu) ^ (uint32_t)(bits >> 32);
#endif
    *out = folded == 0xffffffffu ? 0xfffffffeu : folded; /* CPython: -1 -> -2 */
    return 0;
}

/* NULL with the exception for a failed map operation. */
static PyObject *map_error(int code) {
    if (PyErr_Occurred())
        return NULL; /* __eq__ raised */
    return ctxpy_error(code);
}

/* 1 and *item (borrowed), 0, or -1 with an exception. */
static int map_find(hamt_object *self, PyObject *key, uint32_t *hash, item_t **item) {
    if (hash_key(key, hash) < 0)
        return -1;
    ctx__hamt_item_t *found;
    int r = ctx__hamt_find(&self->map, *hash, key, &python_ops, &found);
    if (r < 0) {
        map_error(r);
        return -1;
    }
    if (r == 1)
        *item = item_of(found);
    return r;
}

/* ---------------------------------------------------------------------- */
/* Hamt                                                                    */
/* ---------------------------------------------------------------------- */

enum { DERIVE_ADD, DERIVE_REPLACE, DERIVE_REMOVE };

/* A new Hamt owning `map` (released on failure), which is `from`'s map with
 * `key` (the stored key object) added with `value`, its value replaced by
 * `value`, or removed; NULL `from`: the empty map. */
static PyObject *hamt_derive(hamt_object *from, ctx__hamt_t map, PyObject *key,
                             PyObject *value, int how) {
    size_t n = map.count * 2, had = from ? from->map.count * 2 : 0;
    PyObject **refs = NULL;
    hamt_object *self = NULL;
    if (n && !(refs = PyMem_Malloc(n * sizeof *refs))) {
        PyErr_NoMemory();
        goto fail;
    }
    if (!(self = PyObject_GC_New(hamt_object, &ctxpy_Hamt_Type)))
        goto fail;
    size_t at = 0; /* the pair of `key` in from->refs */
    if (how != DERIVE_ADD)
        while (at < had && from->refs[at] != key)
            at += 2;
    if (how == DERIVE_REMOVE) {
        if (at)
            memcpy(refs, from->refs, at * sizeof *refs);
        if (had > at + 2)
            memcpy(refs + at, from->refs + at + 2, (had - at - 2) * sizeof *refs);
    } else if (had) {
        memcpy(refs, from->refs, had * sizeof *refs);
    }
    if (how == DERIVE_REPLACE)
        refs[at + 1] = value;
    else if (how == DERIVE_ADD && key) {
        refs[had] = key;
        refs[had + 1] = value;
    }
    for (size_t i = 0; i < n; i++)
        Py_INCREF(refs[i]);
    self->map = map;
    self->refs = refs;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;

fail:
    PyMem_Free(refs);
    ctx__hamt_release(map, &python_ops);
    return NULL;
}

PyObject *ctxpy_hamt_new_empty(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return hamt_derive(NULL, CTX__HAMT_EMPTY, NULL, NULL, DERIVE_ADD);
}

static PyObject *hamt_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)type;
    if (PyTuple_Size(args) || (kwds != NULL && PyDict_Size(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Hamt() does not accept any arguments");
        return NULL;
    }
    return hamt_derive(NULL, CTX__HAMT_EMPTY, NULL, NULL, DERIVE_ADD);
}

static int hamt_tp_traverse(hamt_object *self, visitproc visit, void *arg) {
    for (size_t i = 0; i < self->map.count * 2; i++)
        Py_VISIT(self->refs[i]);
    return 0;
}

static int hamt_tp_clear(hamt_object *self) {
    ctx__hamt_t map = self->map;
    PyObject **refs = self->refs;
    self->map = CTX__HAMT_EMPTY;
    self->refs = NULL;
    ctx__hamt_release(map, &python_ops); /* items hold no references */
    for (size_t i = 0; i < map.count * 2; i++)
        Py_DECREF(refs[i]);
    PyMem_Free(refs);
    return 0;
}

static void hamt_tp_dealloc(hamt_object *self) {
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, hamt_tp_dealloc)
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    hamt_tp_clear(self);
    PyObject_GC_Del(self);
    Py_TRASHCAN_END
}

static Py_ssize_t hamt_tp_len(hamt_object *self) { return (Py_ssize_t)self->map.count; }

static PyObject *hamt_tp_subscript(hamt_object *self, PyObject *key) {
    uint32_t hash;
    item_t *item = NULL;
    int r = map_find(self, key, &hash, &item);
    if (r < 0)
        return NULL;
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(item->value);
}

static int hamt_tp_contains(hamt_object *self, PyObject *key) {
    uint32_t hash;
    item_t *item = NULL;
    return map_find(self, key, &hash, &item);
}

static PyObject *hamt_get(hamt_object *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        if (nargs < 1)
            PyErr_Format(PyExc_TypeError, "get expected at least 1 argument, got %zd", nargs);
        else
            PyErr_Format(PyExc_TypeError, "get expected at most 2 arguments, got %zd", nargs);
        return NULL;
    }
    uint32_t hash;
    item_t *item = NULL;
    int r = map_find(self, args[0], &hash, &item);
    if (r < 0)
        return NULL;
    if (r == 0)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return Py_NewRef(item->value);
}

static PyObject *hamt_set(hamt_object *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "set expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *key = args[0], *value = args[1];
    uint32_t hash;
    item_t *existing = NULL;
    int r = map_find(self, key, &hash, &existing);
    if (r < 0)
        return NULL;
    if (r == 1) {
        if (existing->value == value)
            return Py_NewRef((PyObject *)self);
        key = (PyObject *)existing->hdr.key; /* an equal key keeps the original */
    }
    item_t *item = item_new(hash, key, value);
    if (!item)
        return NULL;
    ctx__hamt_t out;
    int how = r == 1 ? DERIVE_REPLACE : DERIVE_ADD;
    r = ctx__hamt_assoc(&self->map, &item->hdr, &python_ops, &out);
    ctx__hamt_item_release(&item->hdr, &python_ops); /* the map holds its own */
    return r ? map_error(r) : hamt_derive(self, out, key, value, how);
}

static PyObject *hamt_delete(hamt_object *self, PyObject *key) {
    uint32_t hash;
    item_t *existing = NULL;
    int r = map_find(self, key, &hash, &existing);
    if (r <= 0)
        return r < 0 ? NULL : Py_NewRef((PyObject *)self);
    PyObject *stored = (PyObject *)existing->hdr.key;
    ctx__hamt_t out;
    r = ctx__hamt_without(&self->map, hash, stored, &python_ops, &out);
    return r ? map_error(r) : hamt_derive(self, out, stored, NULL, DERIVE_REMOVE);
}

static PyObject *hamt_tp_richcompare(PyObject *v, PyObject *w, int op) {
    if (!Hamt_Check(v) || !Hamt_Check(w) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    hamt_object *a = (hamt_object *)v, *b = (hamt_object *)w;
    int equal = 1;
    if (a != b && a->map.count != b->map.count) {
        equal = 0;
    } else if (a != b) {
        /* Both maps are immutable and held by the caller for the duration. */
        ctx__hamt_iter_t walk;
        ctx__hamt_iter_init(&walk, &a->map);
        ctx__hamt_item_t *hdr;
        while (equal == 1 && (hdr = ctx__hamt_iter_next(&walk))) {
            ctx__hamt_item_t *found;
            int r = ctx__hamt_find(&b->map, hdr->hash, hdr->key, &python_ops, &found);
            if (r < 0) {
                map_error(r);
                equal = -1;
            } else if (r == 0) {
                equal = 0;
            } else {
                PyObject *x = Py_NewRef(item_of(hdr)->value);
                PyObject *y = Py_NewRef(item_of(found)->value);
                equal = PyObject_RichCompareBool(x, y, Py_EQ);
                Py_DECREF(x);
                Py_DECREF(y);
            }
        }
        if (equal < 0)
            return NULL;
    }
    if (op == Py_NE)
        equal = !equal;
    return Py_NewRef(equal ? Py_True : Py_False);
}

static PyObject *hamt_iter_new(hamt_object *self, int kind) {
    hamt_iter_object *it = PyObject_GC_New(hamt_iter_object, &ctxpy_HamtIter_Type);
    if (!it)
        return NULL;
    it->owner = (hamt_object *)Py_NewRef((PyObject *)self);
    it->root = self->map.root;
    ctx__hamt_iter_init(&it->walk, &self->map);
    it->kind = kind;
    it->done = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *hamt_tp_iter(hamt_object *self) { return hamt_iter_new(self, ITER_KEYS); }

static PyObject *hamt_keys(hamt_object *self, PyObject *unused) {
    (void)unused;
    return hamt_iter_new(self, ITER_KEYS);
}

static PyObject *hamt_values(hamt_object *self, PyObject *unused) {
    (void)unused;
    return hamt_iter_new(self, ITER_VALUES);
}

static PyObject *hamt_items(hamt_object *self, PyObject *unused) {
    (void)unused;
    return hamt_iter_new(self, ITER_ITEMS);
}

static PyMethodDef hamt_methods[] = {
    {"set", (PyCFunction)(void (*)(void))hamt_set, METH_FASTCALL,
     PyDoc_STR("set($self, key, value, /)\n--\n\nA new map with key set to value.")},
    {"delete", (PyCFunction)hamt_delete, METH_O,
     PyDoc_STR("delete($self, key, /)\n--\n\nA new map without key (this one if it is "
               "absent).")},
    {"get", (PyCFunction)(void (*)(void))hamt_get, METH_FASTCALL,
     PyDoc_STR("get($self, key, default=None, /)\n--\n\nThe value of key, or default.")},
    {"keys", (PyCFunction)hamt_keys, METH_NOARGS, PyDoc_STR("An iterator over the keys.")},
    {"values", (PyCFunction)hamt_values, METH_NOARGS,
     PyDoc_STR("An iterator over the values.")},
    {"items", (PyCFunction)hamt_items, METH_NOARGS,
     PyDoc_STR("An iterator over (key, value) pairs.")},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods hamt_as_sequence = {
    .sq_contains = (objobjproc)hamt_tp_contains,
};

static PyMappingMethods hamt_as_mapping = {
    .mp_length = (lenfunc)hamt_tp_len,
    .mp_subscript = (binaryfunc)hamt_tp_subscript,
};

PyTypeObject ctxpy_Hamt_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctxvar.Hamt",
    .tp_basicsize = sizeof(hamt_object),
    .tp_dealloc = (destructor)hamt_tp_dealloc,
    .tp_as_sequence = &hamt_as_sequence,
    .tp_as_mapping = &hamt_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Hamt()\n--\n\nAn immutable mapping: set and delete return new maps "
                        "that share structure with this one."),
    .tp_traverse = (traverseproc)hamt_tp_traverse,
    .tp_clear = (inquiry)hamt_tp_clear,
    .tp_richcompare = hamt_tp_richcompare,
    .tp_weaklistoffset = offsetof(hamt_object, weakreflist),
    .tp_iter = (getiterfunc)hamt_tp_iter,
    .tp_methods = hamt_methods,
    .tp_new = hamt_tp_new,
};

/* ---------------------------------------------------------------------- */
/* The iterator                                                            */
/* ---------------------------------------------------------------------- */

static int hamt_iter_traverse(hamt_iter_object *self, visitproc visit, void *arg) {
    Py_VISIT(self->owner);
    return 0;
}

static int hamt_iter_clear(hamt_iter_object *self) {
    Py_CLEAR(self->owner);
    return 0;
}

static void hamt_iter_dealloc(hamt_iter_object *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->owner);
    PyObject_GC_Del(self);
}

static PyObject *hamt_iter_next(hamt_iter_object *self) {
    /* The owner's map is immutable, but the collector may have cleared it. */
    if (self->done || !self->owner || self->owner->map.root != self->root)
        return NULL;
    ctx__hamt_item_t *hdr = ctx__hamt_iter_next(&self->walk);
    if (!hdr) {
        self->done = 1;
        return NULL;
    }
    item_t *item = item_of(hdr);
    switch (self->kind) {
    case ITER_KEYS:
        return Py_NewRef((PyObject *)hdr->key);
    case ITER_VALUES:
        return Py_NewRef(item->value);
    default:
        return PyTuple_Pack(2, (PyObject *)hdr->key, item->value);
    }
}

static Py_ssize_t hamt_iter_len(hamt_iter_object *self) {
    return self->owner ? (Py_ssize_t)self->owner->map.count : 0;
}

static PyMappingMethods hamt_iter_as_mapping = {
    .mp_length = (lenfunc)hamt_iter_len,
};

PyTypeObject ctxpy_HamtIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctxvar.HamtIterator",
    .tp_basicsize = sizeof(hamt_iter_object),
    .tp_dealloc = (destructor)hamt_iter_dealloc,
    .tp_as_mapping = &hamt_iter_as_mapping,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)hamt_iter_traverse,
    .tp_clear = (inquiry)hamt_iter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)hamt_iter_next,
};

int ctxpy_hamt_ready(PyObject *module) {
    if (PyType_Ready(&ctxpy_Hamt_Type) < 0 || PyType_Ready(&ctxpy_HamtIter_Type) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "Hamt", (PyObject *)&ctxpy_Hamt_Type);
}
