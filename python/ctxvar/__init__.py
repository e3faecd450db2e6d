# SPDX-License-Identifier: MIT
"""ctxvar for Python: the `contextvars` API (PEP 567) on the ctxvar C core.

    from ctxvar import ContextVar, Context, Token, copy_context

behave exactly as the standard library's `contextvars` (CPython's own
test_context and asyncio's context tests pass against them), including under
asyncio: ctxvar's values live inside Python's own current context, so every
task, callback, gather, TaskGroup, to_thread and asyncio.run sees them as it
sees `contextvars` values.  The extension links the same shared libctxvar as
C code does: a C library in the process reads and sets the same values
(`ContextVar.capsule()` / `ContextVar.from_capsule()` share one variable).

    from ctxvar import ThreadPoolExecutor, bind

`ThreadPoolExecutor` is `concurrent.futures.ThreadPoolExecutor` with each
task run in a copy of the submitter's context (see ctxvar.futures); `bind`
captures the current context for any callback API.  `Hamt` / `hamt()` expose
a copy of the core's persistent map with Python keys.

The extension module is `_ctxvar`; this package re-exports it.
"""

from _ctxvar import Context, ContextVar, Hamt, Token, __version__, copy_context, hamt

__all__ = (
    "Context",
    "ContextVar",
    "Token",
    "copy_context",
    "Hamt",
    "hamt",
    "ThreadPoolExecutor",
    "bind",
)

_LAZY = ("ThreadPoolExecutor", "bind")


def __getattr__(name):
    # concurrent.futures is imported only by those who use the executor.
    if name in _LAZY:
        from . import futures

        return getattr(futures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    # dir() and help() list the lazy names too (help() reads them through
    # __getattr__).
    return sorted(set(globals()) | set(_LAZY))


def get_include():
    """The directory of ctxvar's C headers (ctxvar.h, ctxvar/*.h) when they
    were installed with the package (pip install), else None: compile a C
    extension that shares the Python binding's core against these and link
    it with get_library_dir()'s libctxvar."""
    import os

    path = os.path.join(os.path.dirname(__file__), "include")
    return path if os.path.isdir(path) else None


def get_library_dir():
    """The directory of the libctxvar shared library the extension uses, when
    the package ships its own (pip install), else None (the extension then
    uses the system's: cmake --install)."""
    import os

    path = os.path.join(os.path.dirname(__file__), "_lib")
    return path if os.path.isdir(path) else None
