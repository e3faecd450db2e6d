# SPDX-License-Identifier: MIT
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

ctxvar's variables live inside Python's own context (a hidden
`contextvars.ContextVar` holds them), so one copy of the standard library's
context carries both kinds: `ctxvar.ContextVar` and `contextvars.ContextVar`
(which asyncio and most libraries use).  C code called from a task sees the
same values through libctxvar.

What the `initializer` sets
---------------------------
The initializer runs once per worker thread, in that worker's own context,
before its first task.  Whatever context variables it sets are *also* visible
to every task that worker runs, underneath the submitter's values: a variable
the submitter's context has keeps the submitter's value, a variable it lacks
takes the initializer's (per-worker state such as a connection, with the
request's values on top).  Tasks still cannot change the worker's values for
later tasks: each task's sets stay in its own copy.

The switch: ``ThreadPoolExecutor(propagate_context=False)`` (or setting the
`propagate_context` attribute later) gives the standard library's behaviour
back; `submit` then behaves exactly as the base class's, and tasks run in the
worker's own context (where the initializer's values are, and where tasks'
sets accumulate).

`bind(fn)` is the same capture for any callback API: it captures the current
context now and returns a callable that runs `fn` in a fresh copy of it each
time it is called.
"""

import concurrent.futures
import threading

# The standard library's C implementation, by its own name: even when
# sys.modules["contextvars"] has been replaced, this is what asyncio uses.
import _contextvars

import _ctxvar

__all__ = ("ThreadPoolExecutor", "bind")


class _Worker(threading.local):
    """Per worker thread: what its initializer set (None before it ran)."""

    overlay = None


def _capture_overlay():
    """The variables the initializer set in this worker: standard-library
    ones as (var, value) pairs, ctxvar's as a ctxvar Context."""
    std = [(var, value) for var, value in _contextvars.copy_context().items()
           if var is not _ctxvar._hidden]  # ctxvar's own: below, one by one
    ours = _ctxvar.copy_context()
    return std, (ours if len(ours) else None)


def _run_with_overlay(overlay, fn, args, kwargs):
    """Inside the task's copy of the submitter's context: add what the
    worker's initializer set, for variables the submitter did not set."""
    std, ours = overlay
    current = _contextvars.copy_context()
    for var, value in std:
        if var not in current:
            var.set(value)
    if ours is not None:
        mine = _ctxvar.copy_context()
        for var, value in ours.items():
            if var not in mine:
                var.set(value)
    return fn(*args, **kwargs)


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """`concurrent.futures.ThreadPoolExecutor` whose tasks run in a copy of the
    context of the thread that submitted them.

    Same constructor and methods as the base class, plus the keyword-only
    `propagate_context` (default True).  With it False, tasks run as in the
    base class: in their worker thread's own context.

    Context variables (ctxvar's or the standard library's) that the
    `initializer` sets in a worker are visible to the tasks that worker runs,
    except where the submitter's context has a value of its own for the same
    variable (the submitter's wins).  A task's own sets never outlive it.
    """

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None,
                 initargs=(), *, propagate_context=True):
        self._worker_state = _Worker()
        if initializer is not None:
            user_initializer = initializer
            state = self._worker_state

            def initializer(*args):
                user_initializer(*args)
                state.overlay = _capture_overlay()

        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self.propagate_context = propagate_context

    def submit(self, fn, /, *args, **kwargs):
        if not self.propagate_context:
            return super().submit(fn, *args, **kwargs)
        context = _contextvars.copy_context()
        return super().submit(self._run, context, fn, args, kwargs)

    def _run(self, context, fn, args, kwargs):
        overlay = self._worker_state.overlay
        if overlay is None:
            return context.run(fn, *args, **kwargs)
        return context.run(_run_with_overlay, overlay, fn, args, kwargs)

    submit.__doc__ = concurrent.futures.ThreadPoolExecutor.submit.__doc__


def bind(fn):
    """Capture the current context now; return a callable that calls `fn` in
    a fresh copy of it each time (so concurrent and repeated calls never see
    each other's sets).  The context carries ctxvar's and the standard
    library's variables alike."""
    context = _contextvars.copy_context()

    def bound(*args, **kwargs):
        return context.copy().run(fn, *args, **kwargs)

    bound.__wrapped__ = fn
    bound.__name__ = getattr(fn, "__name__", "bound")
    bound.__qualname__ = getattr(fn, "__qualname__", bound.__name__)
    bound.__doc__ = getattr(fn, "__doc__", None)
    return bound
