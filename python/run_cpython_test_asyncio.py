#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run CPython's own asyncio context tests against ctxvar's binding.

The tests are the copies that ship with the running Python (the
``test.test_asyncio`` package of its standard library; nothing is copied into
this repository): in ``test_tasks`` (tasks, including the C and Python Task
and Future implementations and their subclasses), ``test_taskgroups``,
``test_runners`` (asyncio.run / Runner), ``test_threads`` (to_thread),
``test_futures2`` (3.12+: the event loop's exception handler runs in the
task's or handle's context) and ``test_eager_task_factory`` (3.12+).

asyncio itself is imported first, with the real ``contextvars``: asyncio's
tasks and handles keep copying and entering Python's own contexts, exactly
as in any program.  Then ``sys.modules['contextvars']`` is replaced by
``_ctxvar`` while the test modules are imported, so every ContextVar, Context
and copy_context *in the tests* is ctxvar's: the tests check that ctxvar's
values follow asyncio's context switches, and that ctxvar's Context objects
work where asyncio takes a context (``create_task(..., context=ctx)``,
``Task.get_context()``).

The selected tests are every test method of those modules whose source
mentions ``contextvars`` or ``ContextVar``.  The run fails (exit status 1) if
any of them fails, errors or is skipped, if a module did not pick up the
replacement, or if fewer tests than expected were found.  The last line is
``test_asyncio contexts: N passed, N failed, N skipped``.

``--stdlib`` runs the same selection against the standard library, for a
baseline.
"""

import argparse
import importlib
import inspect
import os
import sys
import sysconfig
import unittest

MODULES = ["test_tasks", "test_taskgroups", "test_runners", "test_threads",
           "test_futures2", "test_eager_task_factory"]


def import_tests(binding):
    import asyncio  # noqa: F401  (with the real contextvars)
    import asyncio.taskgroups  # noqa: F401
    import asyncio.runners  # noqa: F401
    import asyncio.threads  # noqa: F401
    import contextvars as real

    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    modules = []
    sys.modules["contextvars"] = binding
    try:
        import test.test_asyncio.utils  # noqa: F401
        for name in MODULES:
            full = f"test.test_asyncio.{name}"
            try:
                module = importlib.import_module(full)
            except ModuleNotFoundError as e:
                if e.name == full:  # not in this Python version
                    continue
                raise
            origin = os.path.realpath(module.__file__)
            if not origin.startswith(stdlib + os.sep):
                sys.exit(f"run_cpython_test_asyncio: {origin} is not the standard library's copy")
            modules.append(module)
    finally:
        sys.modules["contextvars"] = real
    for module in modules:
        if hasattr(module, "contextvars"):
            used, want = module.contextvars, binding
        elif hasattr(module, "ContextVar"):
            used, want = module.ContextVar, binding.ContextVar
        else:
            continue  # this version's copy has no context tests
        if used is not want:
            sys.exit(f"run_cpython_test_asyncio: {module.__name__} did not pick up the binding "
                     f"({used!r})")
    return modules


def iter_tests(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from iter_tests(test)
        else:
            yield test


def about_contexts(test):
    method = getattr(type(test), test._testMethodName, None)
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):
        return False
    return "contextvars" in source or "ContextVar" in source


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdlib", action="store_true",
                        help="baseline: run against the standard library's contextvars")
    parser.add_argument("-q", "--quiet", action="store_true", help="dots instead of names")
    args = parser.parse_args()

    if args.stdlib:
        import contextvars as binding
    else:
        import _ctxvar as binding
    modules = import_tests(binding)
    print(f"CPython {sys.version.split()[0]}: test.test_asyncio "
          f"({', '.join(m.__name__.rsplit('.', 1)[1] for m in modules)})")
    print(f"contextvars -> {binding.__file__ if hasattr(binding, '__file__') else binding}")

    suite = unittest.TestSuite()
    per_module = {}
    loader = unittest.defaultTestLoader
    for module in modules:
        for test in iter_tests(loader.loadTestsFromModule(module)):
            if about_contexts(test):
                suite.addTest(test)
                per_module[module.__name__] = per_module.get(module.__name__, 0) + 1
    total = suite.countTestCases()
    for name, n in sorted(per_module.items()):
        print(f"  {name}: {n} tests")

    failed = False
    # At least the task (C and Python implementations), task-group, runner
    # and to_thread tests must be there.
    for name, least in (("test_tasks", 16), ("test_taskgroups", 1), ("test_runners", 1),
                        ("test_threads", 1)):
        if per_module.get(f"test.test_asyncio.{name}", 0) < least:
            print(f"MISSING: fewer than {least} context tests in {name}")
            failed = True

    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=1 if args.quiet else 2).run(suite)
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped) + len(result.expectedFailures)
    for test, reason in result.skipped:
        print(f"SKIPPED (counts as a failure): {test.id()}: {reason}")
    if bad or skipped or result.testsRun != total:
        failed = True
    passed = result.testsRun - bad - skipped
    print(f"test_asyncio contexts: {passed} passed, {bad} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
