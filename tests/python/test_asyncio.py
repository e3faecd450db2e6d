# SPDX-License-Identifier: MIT
"""ctxvar under asyncio, side by side with the standard library.

Every scenario is written once against a `contextvars`-like module and run
twice: with the standard library's `contextvars` and with `ctxvar`.  Each test
checks that both give the same result *and* that the result is the one
written in the test (so the test fails if ctxvar differs from the standard
library, and also if both went wrong the same way).  The scenarios are the
places asyncio gives each piece of work its own context: tasks, gather,
call_soon/call_later snapshots, done-callbacks, TaskGroup, to_thread,
run_in_executor, asyncio.run and Runner, explicit contexts, eager tasks.
"""

import asyncio
import contextvars
import sys
import threading
import unittest

import ctxvar

IMPLEMENTATIONS = {"contextvars": contextvars, "ctxvar": ctxvar}


def run(coro_fn, *args):
    """asyncio.run in a fresh context of both kinds, so nothing a scenario
    sets at top level reaches the next one."""
    return contextvars.Context().run(asyncio.run, coro_fn(*args))


def outcome(fn, *args):
    """fn's result, or the name of the exception it raised."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - compared by name
        return type(e).__name__


# ---- scenarios: each takes the module (cv) and returns plain data ----

def gather_isolation(cv):
    v = cv.ContextVar("v")

    async def task(name):
        v.set(name)
        await asyncio.sleep(0)
        return v.get()

    async def main():
        return await asyncio.gather(task("A"), task("B"), task("C"))

    return run(main)


def task_does_not_leak_into_parent(cv):
    v = cv.ContextVar("v", default="unset")

    async def child():
        v.set("child")
        await asyncio.sleep(0)
        return v.get()

    async def main():
        v.set("parent")
        got = await asyncio.create_task(child())
        return got, v.get()

    return run(main)


def create_task_takes_a_snapshot(cv):
    v = cv.ContextVar("v")

    async def child():
        return v.get()

    async def main():
        v.set(1)
        t = asyncio.create_task(child())
        v.set(2)  # after the task was created: not seen by it
        return await t, v.get()

    return run(main)


def interleaved_tasks(cv):
    v = cv.ContextVar("v")
    w = cv.ContextVar("w", default=0)

    async def task(i):
        seen = []
        for step in range(5):
            v.set((i, step))
            w.set(w.get() + 1)
            await asyncio.sleep(0)
            seen.append(v.get() == (i, step) and w.get() == step + 1)
        return all(seen)

    async def main():
        return await asyncio.gather(*(task(i) for i in range(40)))

    return all(run(main))


def call_soon_and_call_later_snapshot(cv):
    v = cv.ContextVar("v", default="unset")
    seen = []

    def callback(tag):
        seen.append((tag, v.get()))
        v.set("callback's own")

    async def main():
        loop = asyncio.get_running_loop()
        v.set("scheduled")
        loop.call_soon(callback, "soon")
        loop.call_later(0.001, callback, "later")
        explicit = cv.copy_context()
        v.set("changed after scheduling")
        loop.call_soon(callback, "explicit", context=explicit)
        await asyncio.sleep(0.01)
        return v.get(), explicit.get(v)

    mine = run(main)
    return mine, sorted(seen)


def done_callback_context(cv):
    v = cv.ContextVar("v", default="unset")
    seen = []

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        v.set("when added")
        fut.add_done_callback(lambda f: seen.append(v.get()))
        v.set("later")
        loop.call_soon(fut.set_result, None)
        await fut
        await asyncio.sleep(0)
        return v.get()

    return run(main), seen


def explicit_context_for_tasks(cv):
    # CPython's test_context_4: two tasks share one explicit context.
    v = cv.ContextVar("v")

    async def coro(value):
        await asyncio.sleep(0)
        v.set(value)

    async def main():
        ctx = cv.copy_context()
        got = [ctx.get(v)]
        await asyncio.create_task(coro(1), context=ctx)
        got.append(ctx.get(v))
        t = asyncio.get_running_loop().create_task(coro(2), context=ctx)
        await t
        got.append(ctx.get(v))
        # Task.get_context() is 3.12+.
        got.append(t.get_context() is ctx if hasattr(t, "get_context") else True)
        got.append(v.get(None))
        return got

    return run(main)


def empty_context_for_a_task(cv):
    v = cv.ContextVar("v", default="default")

    async def coro():
        before = v.get()
        v.set("inside")
        return before

    async def main():
        v.set("outer")
        ctx = cv.Context()
        got = await asyncio.create_task(coro(), context=ctx)
        return got, ctx[v], v.get(), len(ctx)

    return run(main)


def task_group(cv):
    if sys.version_info < (3, 11):
        return "skipped"
    v = cv.ContextVar("v", default="unset")

    async def child(name):
        before = v.get()
        v.set(name)
        await asyncio.sleep(0)
        return before, v.get()

    async def main():
        v.set("parent")
        async with asyncio.TaskGroup() as g:
            t1 = g.create_task(child("one"))
            t2 = g.create_task(child("two"))
            ctx = cv.copy_context()
            t3 = g.create_task(child("three"), context=ctx)
        return t1.result(), t2.result(), t3.result(), ctx[v], v.get()

    return run(main)


def to_thread(cv):
    v = cv.ContextVar("v", default="unset")

    def in_thread():
        before = v.get()
        v.set("thread")
        return before, threading.current_thread() is not threading.main_thread()

    async def main():
        v.set("caller")
        got = await asyncio.to_thread(in_thread)
        return got, v.get()

    return run(main)


def run_in_executor(cv):
    # The default executor does not carry contexts (as in the standard
    # library); ctxvar's ThreadPoolExecutor does, for both kinds of variables.
    v = cv.ContextVar("v", default="unset")

    async def main():
        loop = asyncio.get_running_loop()
        v.set("caller")
        plain = await loop.run_in_executor(None, v.get)
        with ctxvar.ThreadPoolExecutor(max_workers=2) as pool:
            carried = await loop.run_in_executor(pool, v.get)
        return plain, carried

    return run(main)


def asyncio_run_does_not_leak(cv):
    v = cv.ContextVar("v", default="unset")

    async def main():
        v.set("inside asyncio.run")
        await asyncio.sleep(0)
        return v.get()

    def outside():
        v.set("outside")
        inside = asyncio.run(main())
        return inside, v.get()

    return contextvars.Context().run(outside)


def runner_keeps_its_context(cv):
    v = cv.ContextVar("v", default=-1)

    async def f(value):
        old = v.get()
        await asyncio.sleep(0)
        v.set(value)
        return old

    async def snapshot():
        return cv.copy_context()

    def body():
        with asyncio.Runner() as runner:
            a = runner.run(f(1))
            b = runner.run(f(2))
            last = runner.run(snapshot()).get(v)
        return a, b, last, v.get()

    return contextvars.Context().run(body)


def wait_for_shield_and_as_completed(cv):
    v = cv.ContextVar("v", default="unset")

    async def leaf(tag):
        await asyncio.sleep(0)
        before = v.get()
        v.set(tag)
        return before

    async def main():
        v.set("main")
        a = await asyncio.wait_for(leaf("wait_for"), timeout=5)
        b = await asyncio.shield(leaf("shield"))
        c = [await f for f in asyncio.as_completed([leaf("x"), leaf("y")])]
        return a, b, sorted(c), v.get()

    return run(main)


def nested_tasks(cv):
    v = cv.ContextVar("v", default=0)

    async def level(n):
        v.set(v.get() + 1)
        if n == 0:
            return v.get()
        inner = await asyncio.create_task(level(n - 1))
        return inner, v.get()

    async def main():
        return await level(4)

    return run(main)


def token_reset_across_tasks(cv):
    v = cv.ContextVar("v")

    async def main():
        token = v.set("main")

        async def other():
            return outcome(v.reset, token)

        wrong = await asyncio.create_task(other())
        v.reset(token)
        return wrong, v.get("gone")

    return run(main)


def eager_tasks(cv):
    if sys.version_info < (3, 12):
        return "skipped"
    v = cv.ContextVar("v", default=0)
    steps = []

    async def coro():
        steps.append(("first step", v.get()))
        v.set(2)
        await asyncio.sleep(0)
        steps.append(("second step", v.get()))

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        v.set(1)
        t = asyncio.create_task(coro())
        steps.append(("after create", v.get()))
        await t
        return v.get()

    return run(main), steps


def exception_handler_context(cv):
    if sys.version_info < (3, 12):
        return "skipped"
    name = cv.ContextVar("name", default="foo")
    seen = []

    def handler(loop, context):
        seen.append(name.get())

    def callback():
        name.set("bar")
        1 / 0

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(handler)
        loop.call_soon(callback)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run(main)
    return seen


def both_kinds_together(cv):
    ours = cv.ContextVar("ours", default="-")
    std = contextvars.ContextVar("std", default="-")

    async def task(i):
        ours.set(f"o{i}")
        std.set(f"s{i}")
        await asyncio.sleep(0)
        return ours.get(), std.get()

    async def main():
        return await asyncio.gather(*(task(i) for i in range(3)))

    return run(main)


def threads(cv):
    v = cv.ContextVar("v", default="empty")
    results = {}
    barrier = threading.Barrier(3)

    def worker(i):
        before = v.get()
        v.set(i)
        barrier.wait()
        results[i] = (before, v.get())

    def body():
        v.set("main")
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return v.get()

    main_value = contextvars.Context().run(body)
    return main_value, sorted(results.items())


SCENARIOS = {
    gather_isolation: ["A", "B", "C"],
    task_does_not_leak_into_parent: ("child", "parent"),
    create_task_takes_a_snapshot: (1, 2),
    interleaved_tasks: True,
    call_soon_and_call_later_snapshot: (
        ("changed after scheduling", "callback's own"),
        [("explicit", "scheduled"), ("later", "scheduled"), ("soon", "scheduled")]),
    done_callback_context: ("later", ["when added"]),
    explicit_context_for_tasks: [None, 1, 2, True, None],
    empty_context_for_a_task: ("default", "inside", "outer", 1),
    task_group: (("parent", "one"), ("parent", "two"), ("parent", "three"), "three", "parent"),
    to_thread: (("caller", True), "caller"),
    run_in_executor: ("unset", "caller"),
    asyncio_run_does_not_leak: ("inside asyncio.run", "outside"),
    runner_keeps_its_context: (-1, 1, 2, -1),
    # Since 3.12 wait_for awaits the coroutine in the caller's task itself.
    wait_for_shield_and_as_completed: ("main", "main", ["main", "main"], "main")
    if sys.version_info < (3, 12) else
    ("main", "wait_for", ["wait_for", "wait_for"], "wait_for"),
    nested_tasks: ((((5, 4), 3), 2), 1),
    token_reset_across_tasks: ("ValueError", "gone"),
    eager_tasks: (1, [("first step", 1), ("after create", 1), ("second step", 2)])
    if sys.version_info >= (3, 12) else "skipped",
    exception_handler_context: ["bar"] if sys.version_info >= (3, 12) else "skipped",
    both_kinds_together: [("o0", "s0"), ("o1", "s1"), ("o2", "s2")],
    threads: ("main", [(0, ("empty", 0)), (1, ("empty", 1)), (2, ("empty", 2))]),
}


class SideBySideTest(unittest.TestCase):
    pass


def _make_test(scenario, expected):
    def test(self):
        results = {name: scenario(module) for name, module in IMPLEMENTATIONS.items()}
        self.assertEqual(results["ctxvar"], results["contextvars"],
                         "ctxvar differs from the standard library")
        self.assertEqual(results["ctxvar"], expected)

    test.__doc__ = scenario.__name__.replace("_", " ")
    return test


for _scenario, _expected in SCENARIOS.items():
    setattr(SideBySideTest, f"test_{_scenario.__name__}", _make_test(_scenario, _expected))


class GatherExampleTest(unittest.TestCase):
    def test_gather_example(self):
        v = ctxvar.ContextVar("v")

        async def task(name):
            v.set(name)
            await asyncio.sleep(0)
            return v.get()

        async def main():
            return await asyncio.gather(task("A"), task("B"))

        self.assertEqual(contextvars.Context().run(asyncio.run, main()), ["A", "B"])


if __name__ == "__main__":
    unittest.main()
