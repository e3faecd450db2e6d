/* SPDX-License-Identifier: MIT */
/*
 * layout.c — checks, at compile time, that ctxpy.h's copies of CPython's
 * Context and ContextVar structures match the interpreter's own
 * (Include/internal/pycore_context.h, which needs Py_BUILD_CORE: only this
 * file sees it).  A mismatch is a build error, never a wrong store.
 */
#define Py_BUILD_CORE 1
#include "ctxpy.h"

#if CTXPY_DIRECT
#include <internal/pycore_context.h>

#include <stddef.h>

#define SAME(ours, theirs, field)                                                         \
    _Static_assert(offsetof(ours, field) == offsetof(theirs, field) &&                    \
                       sizeof(((ours *)0)->field) == sizeof(((theirs *)0)->field),        \
                   #theirs "." #field " moved")
SAME(ctxpy_pycontext_t, PyContext, ctx_prev);
SAME(ctxpy_pycontext_t, PyContext, ctx_vars);
SAME(ctxpy_pycontext_t, PyContext, ctx_entered);
SAME(ctxpy_pycontextvar_t, PyContextVar, var_cached);
SAME(ctxpy_pycontextvar_t, PyContextVar, var_cached_tsid);
SAME(ctxpy_pycontextvar_t, PyContextVar, var_cached_tsver);
SAME(ctxpy_pycontextvar_t, PyContextVar, var_hash);
_Static_assert(sizeof(ctxpy_pycontext_t) == sizeof(PyContext), "PyContext grew");
_Static_assert(sizeof(ctxpy_pycontextvar_t) == sizeof(PyContextVar), "PyContextVar grew");
#endif

typedef int ctxpy_layout_checked; /* not an empty translation unit */
