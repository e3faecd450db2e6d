"""A ThreadPoolExecutor that runs each task in a copy of the submitter's context.

The problem it fixes
--------------------
`concurrent.futures.ThreadPoolExecutor` runs a task in whatever context its
worker thread happens to have.  Two things go wrong, and Python projects work
around both by hand (``ctx = copy_context(); pool.submit(ctx.run, fn, ...)``):

1. the task does not see the submitter's context variables (a request id, a
   deadline, the current user: gone inside the pool);
2. what one task sets stays in the worker thread and is seen by the next task
   that the same worker runs — two consecutive queries from two different
   requests share, say, a cached connection or transaction.

Here `submit` (and therefore `map`) captures the submitter's context when the
task is submitted (O(1): a context copy shares its map) and runs the task in
it.  Each task gets its own copy, so its sets land in that copy and vanish
with it: never in the submitter, never in the next task.

Both context systems are propagated: ctxvar's (`ctxvar.ContextVar`) and the
standard library's (`contextvars.ContextVar`, which asyncio and most
libraries use).

The switch: ``ThreadPoolExecutor(propagate_context=False)`` (or setting the
`propagate_context` attribute later) gives the standard library's behaviour
back; `submit` then behaves exactly as the base class's.

`bind(fn)` is the same capture for any callback API: it captures the current
contexts now and returns a callable that runs `fn` in a fresh copy of them
each time it is called.
"""

import concurrent.futures

# The standard library's C implementation, by its own name: even when
# sys.modules["contextvars"] has been replaced, this is what asyncio uses.
import _contextvars

import _ctxvar

__all__ = ("ThreadPoolExecutor", "bind")


def _capture():
    return _contextvars.copy_context(), _ctxvar.copy_context()


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """`concurrent.futures.ThreadPoolExecutor` whose tasks run in a copy of the
    context of the thread that submitted them.

    Same constructor and methods as the base class, plus the keyword-only
    `propagate_context` (default True).  With it False, tasks run as in the
    base class: in their worker thread's own context.
    """

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None,
                 initargs=(), *, propagate_context=True):
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self.propagate_context = propagate_context

    def submit(self, fn, /, *args, **kwargs):
        if not self.propagate_context:
            return super().submit(fn, *args, **kwargs)
        std, ours = _capture()
        return super().submit(std.run, ours.run, fn, *args, **kwargs)

    submit.__doc__ = concurrent.futures.ThreadPoolExecutor.submit.__doc__


def bind(fn):
    """Capture the current contexts now; return a callable that calls `fn` in
    a fresh copy of them each time (so concurrent and repeated calls never
    see each other's sets)."""
    std, ours = _capture()

    def bound(*args, **kwargs):
        return std.copy().run(ours.copy().run, fn, *args, **kwargs)

    bound.__wrapped__ = fn
    bound.__name__ = getattr(fn, "__name__", "bound")
    bound.__qualname__ = getattr(fn, "__qualname__", bound.__name__)
    bound.__doc__ = getattr(fn, "__doc__", None)
    return bound
