#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check_packaging.py ROOT WORKDIR — `pip wheel .` and `pip install .` work
offline, and what they install is one core shared with C.

1. `python -m pip wheel --no-deps --no-index ROOT` builds a wheel (pip's
   build isolation on: the in-tree backend needs nothing from an index);
2. a virtual environment gets that wheel (`pip install --no-index WHEEL`),
   then, after an uninstall, the source tree (`pip install --no-index ROOT`);
3. after each install, a check runs in the environment, outside the source
   tree: the package and the extension come from the environment's
   site-packages; asyncio isolates ctxvar's values; dir() and help() list
   ThreadPoolExecutor and bind; exactly one libctxvar is mapped, the
   package's own; and a C extension compiled against ctxvar.get_include()
   and linked with ctxvar.get_library_dir()'s libctxvar sees the values
   Python sets (per asyncio task) and Python sees the ones it sets.

Exit status 0 when everything holds; the last line says what was checked.
"""

import glob
import os
import shutil
import subprocess
import sys
import textwrap

CHECK = r'''
import asyncio, contextvars, os, pydoc, subprocess, sys, sysconfig
import ctxvar, _ctxvar

site = sysconfig.get_paths()["platlib"]
for mod in (ctxvar, _ctxvar):
    assert os.path.realpath(mod.__file__).startswith(os.path.realpath(site)), mod.__file__

v = ctxvar.ContextVar("v")
async def task(name):
    v.set(name); await asyncio.sleep(0); return v.get()
async def main():
    return await asyncio.gather(task("A"), task("B"))
assert asyncio.run(main()) == ["A", "B"]

assert {"ThreadPoolExecutor", "bind"} <= set(dir(ctxvar)), dir(ctxvar)
text = pydoc.render_doc(ctxvar, renderer=pydoc.plaintext)
assert "class ThreadPoolExecutor" in text and "bind(fn)" in text

maps = [line.split()[-1] for line in open("/proc/self/maps") if "libctxvar" in line]
assert len(set(maps)) == 1, set(maps)
assert os.path.dirname(maps[0]) == os.path.realpath(ctxvar.get_library_dir()), maps

# A C extension built against the installed package.
src = os.path.join(WORKDIR, "shared_core.c")
with open(src, "w") as f:
    f.write(r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <ctxvar.h>
static void text_release(void *v, void *u) { (void)u; if (v) ctx_free(v, strlen(v) + 1); }
static int text_format(const void *v, char *buf, size_t cap, void *u) {
    (void)u; size_t n = strlen(v);
    if (cap) { size_t k = n < cap - 1 ? n : cap - 1; memcpy(buf, v, k); buf[k] = 0; }
    return (int)n;
}
static int text_decode(const char *t, size_t n, void **out, void *u) {
    (void)u; char *s = ctx_malloc(n + 1); if (!s) return CTX_ENOMEM;
    memcpy(s, t, n); s[n] = 0; *out = s; return 0;
}
static const ctx_value_ops_t ops = {.size = sizeof ops, .release = text_release,
    .format = text_format, .encode = text_format, .decode = text_decode};
static ctx_var_t *var;
static PyObject *get(PyObject *m, PyObject *a) {
    void *v; int r = ctx_var_get(var, &v);
    if (r < 0) Py_RETURN_NONE;
    return PyUnicode_FromString(v);
}
static PyObject *set(PyObject *m, PyObject *a) {
    const char *t = PyUnicode_AsUTF8(a); if (!t) return NULL;
    void *v; if (text_decode(t, strlen(t), &v, NULL)) return PyErr_NoMemory();
    if (ctx_var_set(var, v, NULL)) { text_release(v, NULL); return PyErr_NoMemory(); }
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {{"get", get, METH_NOARGS, 0}, {"set", set, METH_O, 0}, {0}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "shared_core", 0, -1, methods};
PyMODINIT_FUNC PyInit_shared_core(void) {
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t); o.ops = &ops;
    if (ctx_var_new("request", &o, &var)) return PyErr_NoMemory();
    PyObject *m = PyModule_Create(&def);
    if (m) PyModule_AddObject(m, "var", PyCapsule_New(var, "ctxvar.ctx_var_t", NULL));
    return m;
}
""")
libdir = ctxvar.get_library_dir()
lib = [n for n in os.listdir(libdir) if n.startswith("libctxvar.so")][0]
out = os.path.join(WORKDIR, "shared_core" + sysconfig.get_config_var("EXT_SUFFIX"))
cc = os.environ.get("CC", "cc")
subprocess.run([cc, "-shared", "-fPIC", "-std=c11", "-I", sysconfig.get_paths()["include"],
                "-I", ctxvar.get_include(), src, "-o", out, "-L", libdir, "-l:" + lib,
                "-Wl,-rpath," + libdir], check=True)
sys.path.insert(0, WORKDIR)
import shared_core
request = ctxvar.ContextVar.from_capsule(shared_core.var)
async def handler(i):
    request.set(f"req-{i}")
    await asyncio.sleep(0)
    seen = shared_core.get()
    shared_core.set(f"c-{i}")
    await asyncio.sleep(0)
    return seen, request.get()
async def serve():
    return await asyncio.gather(*(handler(i) for i in range(5)))
assert asyncio.run(serve()) == [(f"req-{i}", f"c-{i}") for i in range(5)]
maps = {line.split()[-1] for line in open("/proc/self/maps") if "libctxvar" in line}
assert len(maps) == 1, maps
print("installed package OK:", ctxvar.__file__)
'''


def run(cmd, **kw):
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def main():
    root, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        env.pop(name, None)
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    wheels = os.path.join(work, "wheels")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "-w", wheels, root],
        env=env, cwd=work)
    (wheel,) = glob.glob(os.path.join(wheels, "ctxvar-*.whl"))

    venv = os.path.join(work, "env")
    run([sys.executable, "-m", "venv", venv], env=env, cwd=work)
    python = os.path.join(venv, "bin", "python")
    check = os.path.join(work, "check.py")
    with open(check, "w") as f:
        f.write(f"WORKDIR = {work!r}\n" + textwrap.dedent(CHECK))

    run([python, "-m", "pip", "install", "--no-index", wheel], env=env, cwd=work)
    run([python, check], env=env, cwd=work)
    run([python, "-m", "pip", "uninstall", "-y", "ctxvar"], env=env, cwd=work)
    run([python, "-m", "pip", "install", "--no-index", root], env=env, cwd=work)
    run([python, check], env=env, cwd=work)
    print("packaging: pip wheel . and pip install . (offline) install one core shared with C")
    return 0


if __name__ == "__main__":
    sys.exit(main())
