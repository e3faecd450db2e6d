#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench_python.py — the Python binding's figures: ctxvar against the
standard library's contextvars, measured in the same run.

    python3 bench/bench_python.py            a table
    python3 bench/bench_python.py --json     one JSON object (keys are a contract)
    python3 bench/bench_python.py --quick    fewer rounds and iterations

(scripts/bench.sh runs it after ctxvar_bench, with the Release build's
module on the path.)

Each operation is timed as a short tight loop (a millisecond or two, so that
a sample the scheduler interrupted is an outlier the median ignores),
alternately with contextvars and with ctxvar (the order flips every round),
for ROUNDS rounds (at least 11; 61 by default, 21 with --quick).  A figure is the median over the rounds of nanoseconds per
iteration, loop overhead included (it is the same for both); a ratio is
median(ctxvar) / median(contextvars), so 1.0 means "as fast as the standard
library" and less is faster.

Keys (nanoseconds unless the key ends in _ratio):
  py_get_ns, py_get_stdlib_ns, py_get_ratio
        var.get() of a variable set in the current context
  py_copy_context_ns, py_copy_context_stdlib_ns, py_copy_context_ratio
        copy_context() (and dropping it)
  py_set_reset_ns, py_set_reset_stdlib_ns, py_set_reset_ratio
        token = var.set(x); var.reset(token), with four other variables set
  py_run_ns, py_run_stdlib_ns, py_run_ratio
        ctx.run(noop) of a context that has been run before
  py_asyncio_switch_ns, py_asyncio_switch_stdlib_ns, py_asyncio_switch_ratio
        per task step: 50 tasks each doing var.set(var.get() + 1) then
        await asyncio.sleep(0), 10 times, on one event loop
"""

import argparse
import asyncio
import contextvars
import gc
import json
import os
import statistics
import sys
import time

try:
    import ctxvar
except ImportError:  # run from the source tree: the package is in python/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import ctxvar

IMPLEMENTATIONS = (("stdlib", contextvars), ("ctxvar", ctxvar))


def noop():
    pass


def make_get(cv, n):
    v = cv.ContextVar("v")
    ctx = cv.Context()

    def setup():
        v.set(1)

    ctx.run(setup)

    def loop():
        get = v.get
        t0 = time.perf_counter_ns()
        for _ in range(n):
            get()
        return time.perf_counter_ns() - t0

    return lambda: ctx.run(loop)


def make_copy_context(cv, n):
    v = cv.ContextVar("v")
    ctx = cv.Context()
    ctx.run(v.set, 1)

    def loop():
        copy = cv.copy_context
        t0 = time.perf_counter_ns()
        for _ in range(n):
            copy()
        return time.perf_counter_ns() - t0

    return lambda: ctx.run(loop)


def make_set_reset(cv, n):
    others = [cv.ContextVar(f"o{i}") for i in range(4)]
    v = cv.ContextVar("v")
    ctx = cv.Context()

    def setup():
        for i, o in enumerate(others):
            o.set(i)

    ctx.run(setup)

    def loop():
        set_, reset = v.set, v.reset
        t0 = time.perf_counter_ns()
        for i in range(n):
            reset(set_(i))
        return time.perf_counter_ns() - t0

    return lambda: ctx.run(loop)


def make_run(cv, n):
    v = cv.ContextVar("v")
    ctx = cv.Context()
    ctx.run(v.set, 1)

    def loop():
        run = ctx.run
        t0 = time.perf_counter_ns()
        for _ in range(n):
            run(noop)
        return time.perf_counter_ns() - t0

    return loop


def make_asyncio_switch(cv, n):
    tasks, steps = 50, 10
    v = cv.ContextVar("v", default=0)
    loop = asyncio.new_event_loop()

    async def task():
        for _ in range(steps):
            v.set(v.get() + 1)
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(task() for _ in range(tasks)))

    def once():
        t0 = time.perf_counter_ns()
        contextvars.Context().run(loop.run_until_complete, main())
        return time.perf_counter_ns() - t0

    # n is ignored: one run is tasks * steps task steps.
    return once, tasks * steps


FIGURES = (
    ("get", make_get, 40_000, "var.get()"),
    ("copy_context", make_copy_context, 20_000, "copy_context()"),
    ("set_reset", make_set_reset, 5_000, "var.reset(var.set(x)), 4 other variables set"),
    ("run", make_run, 20_000, "ctx.run(noop)"),
    ("asyncio_switch", make_asyncio_switch, None, "one task step: get, set, sleep(0); 50 tasks"),
)


def measure(rounds, scale):
    results = {}
    for name, make, n, what in FIGURES:
        loops = {}
        for label, cv in IMPLEMENTATIONS:
            made = make(cv, max(1, int((n or 1) * scale)))
            loops[label] = made if isinstance(made, tuple) else (made, max(1, int(n * scale)))
        samples = {label: [] for label, _ in IMPLEMENTATIONS}
        order = [label for label, _ in IMPLEMENTATIONS]
        for _ in range(2):  # warm up
            for label in order:
                loops[label][0]()
        for r in range(rounds):
            for label in (order if r % 2 == 0 else reversed(order)):
                fn, per = loops[label]
                gc.disable()
                try:
                    samples[label].append(fn() / per)
                finally:
                    gc.enable()
        ours = statistics.median(samples["ctxvar"])
        base = statistics.median(samples["stdlib"])
        results[name] = (ours, base, what)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and iterations")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (at least 11)")
    args = parser.parse_args()
    rounds = max(11, args.rounds or (21 if args.quick else 61))
    scale = 0.5 if args.quick else 1.0

    results = measure(rounds, scale)
    figures = []
    for name, (ours, base, what) in results.items():
        figures.append((f"py_{name}_ns", ours, f"ctxvar: {what}"))
        figures.append((f"py_{name}_stdlib_ns", base, f"contextvars: {what}"))
        figures.append((f"py_{name}_ratio", ours / base, f"ctxvar / contextvars, {what}"))
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v, _ in figures}, indent=2))
        return 0
    print(f"Python {sys.version.split()[0]}, {rounds} rounds, median ns per iteration")
    print(f"{'figure':<28} {'value':>10}  what")
    for key, value, what in figures:
        unit = "x" if key.endswith("_ratio") else "ns"
        print(f"{key:<28} {value:>8.2f} {unit:<2}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
