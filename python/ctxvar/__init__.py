"""ctxvar for Python: the `contextvars` API (PEP 567) on the ctxvar C core.

    from ctxvar import ContextVar, Context, Token, copy_context

behave exactly as the standard library's `contextvars` (CPython's own
test_context passes against them), and

    from ctxvar import ThreadPoolExecutor

is `concurrent.futures.ThreadPoolExecutor` with each task run in a copy of
the submitter's context (see ctxvar.futures).  `Hamt` / `hamt()` expose the
core's persistent map with Python keys.

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


def __getattr__(name):
    # concurrent.futures is imported only by those who use the executor.
    if name in ("ThreadPoolExecutor", "bind"):
        from . import futures

        return getattr(futures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
