#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run CPython's own test_context against ctxvar's binding.

The test module is the copy that ships with the running Python
(``test.test_context`` from its standard library; it is never copied into
this repository).  Before it is imported:

  * ``sys.modules['contextvars']`` is replaced by ``_ctxvar`` (ContextVar,
    Context, Token, copy_context on the ctxvar core);
  * ``hamt`` is set to ``_ctxvar.hamt`` (the core's HAMT with Python hashing
    and equality) on ``_testcapi`` (where 3.11 and 3.12 take it from) and on
    ``_testinternalcapi`` (3.13), on the real modules when the interpreter
    has them, else on stand-ins;
  * the ``cpu`` resource is enabled, so ``test_hamt_stress`` runs.

The run fails (exit status 1) if any case fails, errors, is skipped, or if the
module did not pick up the replacements.  The last line is
``test_context: N passed, N failed, N skipped``.

``--stdlib`` runs the same loop against the standard library's own
implementation, for a baseline of the interpreter's numbers.

Leak check (``--repeat N --check-leaks``): the suite runs N times; after each
run the garbage collector runs and the binding's counters are read
(``_ctxvar._stats()``: live core blocks, value boxes and map items), as well
as ``sys.getallocatedblocks()`` and, with ``--tracemalloc``, the traced
memory.  From the second run on, the binding's counters must not change at
all, and the interpreter's allocated blocks must not grow by more than
``--alloc-slack`` blocks per run on average (the interpreter's own caches
make that number noisy; a real leak of one object per test case exceeds it).
"""

import argparse
import gc
import importlib.util
import os
import sys
import sysconfig
import tracemalloc
import types
import unittest


def install_binding():
    """Make `contextvars` and `hamt` the binding's; return it."""
    import _ctxvar

    sys.modules["contextvars"] = _ctxvar
    for name in ("_testcapi", "_testinternalcapi"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            sys.modules[name] = module
        module.hamt = _ctxvar.hamt
    return _ctxvar


def import_test_module(binding):
    spec = importlib.util.find_spec("test.test_context")
    if spec is None or spec.origin is None:
        sys.exit("run_cpython_test_context: this Python has no test.test_context")
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    origin = os.path.realpath(spec.origin)
    if not origin.startswith(stdlib + os.sep):
        sys.exit(f"run_cpython_test_context: {origin} is not the standard library's copy")

    from test import support

    # requires_resource('cpu') is evaluated when the module is imported.
    support.use_resources = ["cpu"]
    import test.test_context as module

    problems = []
    if module.contextvars is not binding:
        problems.append(f"contextvars is {module.contextvars!r}")
    if module.hamt is not binding.hamt:
        problems.append(f"hamt is {module.hamt!r}")
    if problems:
        sys.exit("run_cpython_test_context: the binding was not picked up: " + "; ".join(problems))
    return module


def run_once(module, verbosity):
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    # Counted before the run: a suite drops its tests as it runs them.
    classes = {type(test).__name__ for test in iter_tests(suite)}
    total = suite.countTestCases()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=verbosity)
    result = runner.run(suite)
    return result, total, classes


def iter_tests(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from iter_tests(test)
        else:
            yield test


def settle(binding):
    for _ in range(3):
        gc.collect()
    binding._drain()
    return binding._stats()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="run the suite N times")
    parser.add_argument("--check-leaks", action="store_true",
                        help="fail if the binding's live objects grow between runs")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report tracemalloc's traced memory per run")
    parser.add_argument("--alloc-slack", type=int, default=16,
                        help="allowed average growth of sys.getallocatedblocks() per run")
    parser.add_argument("-q", "--quiet", action="store_true", help="one line per run")
    parser.add_argument("--stdlib", action="store_true",
                        help="baseline: run against the standard library's contextvars and "
                             "_testcapi.hamt instead (interpreter numbers only)")
    args = parser.parse_args()

    if args.stdlib:
        import contextvars as binding
        try:
            from _testinternalcapi import hamt
        except ImportError:
            from _testcapi import hamt
        binding.hamt, binding._drain, binding._stats = hamt, (lambda: None), dict
    else:
        binding = install_binding()
    module = import_test_module(binding)
    print(f"CPython {sys.version.split()[0]}: {module.__file__}")
    print(f"contextvars -> {binding.__file__}")

    if args.tracemalloc:
        tracemalloc.start()

    failed = False
    base = last = None  # samples of run 2 and of the latest run (constant memory)
    changed = {}
    keys = ("core_blocks", "boxes", "items")
    for run in range(1, args.repeat + 1):
        result, total, classes = run_once(module, 1 if args.quiet else 2)
        bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
        skipped = len(result.skipped) + len(result.expectedFailures)
        passed = result.testsRun - bad - skipped
        if bad or skipped or result.testsRun != total:
            failed = True
        if not {"ContextTest", "HamtTest"} <= classes:
            print(f"MISSING: expected ContextTest and HamtTest cases, found {sorted(classes)}")
            failed = True
        for test, reason in result.skipped:
            print(f"SKIPPED (counts as a failure): {test.id()}: {reason}")
        del result
        stats = settle(binding)
        blocks = sys.getallocatedblocks()
        traced = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        last = (stats, blocks, traced)
        if run == 2:
            base = last
        elif run > 2:
            for key in keys:
                if stats.get(key) != base[0].get(key):
                    changed.setdefault(key, [base[0].get(key)]).append(stats.get(key))
        if args.repeat > 1:
            print(f"run {run}/{args.repeat}: {passed} passed, {bad} failed, {skipped} skipped; "
                  + ", ".join(f"{k}={v}" for k, v in stats.items())
                  + f", allocated_blocks={blocks}"
                  + (f", traced_bytes={traced}" if args.tracemalloc else ""))
        if failed:
            break

    if args.check_leaks and not failed and args.repeat >= 3:
        # Run 1 warms caches up; every later run is compared with run 2.
        for key, values in changed.items():
            print(f"LEAK: {key} changes between runs: {values}")
            failed = True
        growth = (last[1] - base[1]) / (args.repeat - 2)
        print(f"interpreter blocks: {base[1]} -> {last[1]} ({growth:+.1f} per run)")
        if growth > args.alloc_slack:
            print(f"LEAK: sys.getallocatedblocks() grows by {growth:.1f} blocks per run")
            failed = True
        if args.tracemalloc:
            tgrowth = (last[2] - base[2]) / (args.repeat - 2)
            print(f"traced memory: {base[2]} -> {last[2]} bytes ({tgrowth:+.1f} per run)")
        if not failed:
            print("no leak: the binding's live blocks, boxes and items are the same after every run")
    elif args.check_leaks and not failed:
        print("--check-leaks needs --repeat 3 or more")
        failed = True

    print(f"test_context: {passed} passed, {bad} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
