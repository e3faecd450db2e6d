# SPDX-License-Identifier: MIT
"""One core for Python and C: a C extension (_ctxvar_ctest, ctest_module.c)
linked with the same shared libctxvar as the binding calls ctx_var_get and
ctx_var_set on variables it shares with Python.

Each test checks both directions (C sees what Python set, Python sees what C
set) in one of the places work runs: a thread, an asyncio task, the
propagating executor, to_thread, pool tasks and loop callbacks that the C side
starts, and a context the C side enters itself.  The shared variable is a C
variable with string operations, which Python uses as a ContextVar of str
values (ContextVar.from_capsule), or a Python variable read from C through
its capsule.
"""

import asyncio
import contextvars
import gc
import threading
import unittest
import weakref

import _ctxvar
import _ctxvar_ctest as c
import ctxvar


class Obj:
    pass


def fresh(fn, *args):
    """fn in a fresh context of both kinds."""
    return contextvars.Context().run(fn, *args)


class CExtensionTest(unittest.TestCase):
    @classmethod
    def tearDownClass(cls):
        c.shutdown()

    def setUp(self):
        self.cap = c.string_var("request_id")
        self.var = ctxvar.ContextVar.from_capsule(self.cap)

    # ---- a C variable used from Python ----

    def test_c_variable_as_a_str_context_var(self):
        var, cap = self.var, self.cap
        self.assertIs(ctxvar.ContextVar.from_capsule(cap), var)
        self.assertEqual(var.name, "request_id")

        def body():
            self.assertIsNone(c.get(cap))
            with self.assertRaises(LookupError):
                var.get()
            self.assertEqual(var.get("fallback"), "fallback")
            token = var.set("from python")
            self.assertEqual(c.get(cap), "from python")
            c.set(cap, "from C")
            self.assertEqual(var.get(), "from C")
            self.assertEqual(contextvars.copy_context().run(var.get), "from C")
            self.assertEqual(ctxvar.copy_context()[var], "from C")
            self.assertIn(var, list(ctxvar.copy_context()))
            var.reset(token)
            self.assertIsNone(c.get(cap))
            self.assertIs(token.old_value, ctxvar.Token.MISSING)
            with self.assertRaises(TypeError):
                var.set(42)  # values are str

        fresh(body)

    def test_c_default(self):
        cap = c.string_var("with_default", "the default")
        var = ctxvar.ContextVar.from_capsule(cap)

        def body():
            self.assertEqual(var.get(), "the default")
            self.assertEqual(var.get("argument wins"), "argument wins")
            self.assertEqual(c.get(cap), "the default")
            var.set("set")
            self.assertEqual(c.get(cap), "set")

        fresh(body)

    def test_python_variable_read_from_c(self):
        pv = ctxvar.ContextVar("pv")
        cap = pv.capsule()
        self.assertIs(ctxvar.ContextVar.from_capsule(cap), pv)
        obj = Obj()

        def body():
            with self.assertRaises(LookupError):
                c.get_object(cap)
            pv.set(obj)
            self.assertIs(c.get_object(cap), obj)

        fresh(body)

    # ---- where work runs ----

    def test_per_thread(self):
        var, cap = self.var, self.cap
        errors = []
        barrier = threading.Barrier(4)

        def worker(i):
            try:
                for round_ in range(50):
                    var.set(f"py-{i}-{round_}")
                    if round_ == 25:
                        barrier.wait()
                    if c.get(cap) != f"py-{i}-{round_}":
                        errors.append(("C saw", i, round_, c.get(cap)))
                    c.set(cap, f"c-{i}-{round_}")
                    if var.get() != f"c-{i}-{round_}":
                        errors.append(("Python saw", i, round_, var.get()))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_per_asyncio_task(self):
        var, cap = self.var, self.cap

        async def task(i):
            var.set(f"py-{i}")
            await asyncio.sleep(0)
            c_saw = c.get(cap)
            c.set(cap, f"c-{i}")
            await asyncio.sleep(0)
            return c_saw, var.get()

        async def main():
            c.set(cap, "main")
            results = await asyncio.gather(*(task(i) for i in range(20)))
            return results, var.get(), c.get(cap)

        results, main_py, main_c = fresh(asyncio.run, main())
        self.assertEqual(results, [(f"py-{i}", f"c-{i}") for i in range(20)])
        self.assertEqual((main_py, main_c), ("main", "main"))

    def test_c_token_in_a_task(self):
        var, cap = self.var, self.cap

        async def main():
            var.set("before")
            inside = c.set_and_call(cap, "temporary", lambda: (var.get(), c.get(cap)))
            return inside, var.get()

        self.assertEqual(fresh(asyncio.run, main()), (("temporary", "temporary"), "before"))

    def test_context_entered_by_c_comes_first(self):
        var, cap = self.var, self.cap

        def inside():
            seen = (var.get(), c.get(cap))
            var.set("set by Python inside")
            ours = ctxvar.copy_context()[var]
            return seen, c.get(cap), ours

        def body():
            var.set("python")
            got = c.run_in_new_context(cap, "C's context", inside)
            return got, var.get(), c.get(cap)

        self.assertEqual(fresh(body), ((("C's context", "C's context"),
                                        "set by Python inside", "set by Python inside"),
                                       "python", "python"))

    def test_context_run_inside_and_outside_cs_context(self):
        # One ctxvar.Context run alternately with and without a context C
        # entered: each run starts from what the previous one left, and
        # the Context reads it back, whichever way the run went.
        var = ctxvar.ContextVar("alternating")
        std = contextvars.ContextVar("std")
        ctx = ctxvar.Context()

        def step(value):
            before = var.get(None)
            var.set(value)
            return before

        def body():
            seen = [ctx.run(step, "plain 1")]
            seen.append(c.run_in_new_context(self.cap, "C", lambda: ctx.run(step, "under C")))
            seen.append(ctx[var])
            seen.append(ctx.run(step, "plain 2"))
            seen.append(ctx.run(var.get))
            seen.append(c.run_in_new_context(self.cap, "C", lambda: ctx.run(var.get)))
            ctx.run(std.set, "kept")  # the standard library's values stay too
            c.run_in_new_context(self.cap, "C", lambda: ctx.run(step, "under C again"))
            seen.append((ctx.run(std.get), ctx[var], dict(ctx.items())[var]))
            return seen

        self.assertEqual(fresh(body), [None, "plain 1", "under C", "under C",
                                       "plain 2", "plain 2",
                                       ("kept", "under C again", "under C again")])

    def test_context_run_refuses_a_context_being_run(self):
        ctx = ctxvar.Context()
        ctx2 = ctxvar.Context()

        def nested():
            with self.assertRaisesRegex(RuntimeError, "is already entered"):
                ctx.run(lambda: None)
            with self.assertRaisesRegex(RuntimeError, "is already entered"):
                c.run_in_new_context(self.cap, "C", lambda: ctx.run(lambda: None))
            return "ok"

        self.assertEqual(ctx.run(nested), "ok")
        # ... and a Context being run under C's context, with its own
        # contextvars.Context made by an earlier run.
        def nested2():
            with self.assertRaisesRegex(RuntimeError, "is already entered"):
                ctx2.run(lambda: None)
            return "refused"

        ctx2.run(lambda: None)
        self.assertEqual(c.run_in_new_context(self.cap, "C", lambda: ctx2.run(nested2)), "refused")
        self.assertEqual(ctx2.run(nested2), "refused")

    def test_propagating_executor_and_to_thread(self):
        var, cap = self.var, self.cap

        def task():
            seen = c.get(cap)
            c.set(cap, "task")
            return seen, var.get()

        async def main():
            var.set("request")
            with ctxvar.ThreadPoolExecutor(max_workers=2) as pool:
                submitted = pool.submit(task).result()
                in_loop = await asyncio.get_running_loop().run_in_executor(pool, task)
            threaded = await asyncio.to_thread(task)
            return submitted, in_loop, threaded, c.get(cap)

        self.assertEqual(fresh(asyncio.run, main()),
                         (("request", "task"), ("request", "task"), ("request", "task"),
                          "request"))

    def test_pool_work_the_c_side_starts(self):
        var, cap = self.var, self.cap

        async def task(i):
            var.set(f"task-{i}")
            await asyncio.sleep(0)
            return c.pool_get(cap), c.pool_get(cap, f"set in pool {i}"), var.get()

        async def main():
            return await asyncio.gather(*(task(i) for i in range(5)))

        self.assertEqual(fresh(asyncio.run, main()),
                         [(f"task-{i}", f"set in pool {i}", f"task-{i}") for i in range(5)])

    def test_python_inside_pool_work_the_c_side_starts(self):
        var, cap = self.var, self.cap

        def body():
            var.set("captured")
            seen = c.pool_call(var.get)
            changed = c.pool_call(lambda: (var.set("in the task"), var.get(), c.get(cap)))
            return seen, changed[1:], var.get()

        self.assertEqual(fresh(body), ("captured", ("in the task", "in the task"), "captured"))

    @unittest.skipUnless(c.HAVE_LOOP, "built without the loop module")
    def test_loop_work_the_c_side_starts(self):
        var, cap = self.var, self.cap

        async def task(i):
            var.set(f"task-{i}")
            await asyncio.sleep(0)
            return c.loop_get(cap)

        async def main():
            return await asyncio.gather(*(task(i) for i in range(3)))

        self.assertEqual(fresh(asyncio.run, main()), [f"task-{i}" for i in range(3)])

    def test_without_the_gil_c_sees_its_threads_own_context(self):
        # Documented: Python's context is reachable only with the GIL held.
        var, cap = self.var, self.cap

        def body():
            var.set("python's")
            return c.get(cap), c.get_without_gil(cap)

        self.assertEqual(fresh(body), ("python's", None))

    def test_copies_and_format(self):
        var, cap = self.var, self.cap

        def body():
            var.set("copied")
            self.assertEqual(c.copy_get(cap), "copied")
            self.assertIn("request_id=copied", c.format_current())

        fresh(body)

    # ---- what C holds stays alive ----

    def test_values_c_holds_are_not_collected(self):
        pv = ctxvar.ContextVar("pv")
        cap = pv.capsule()
        obj = Obj()
        ref = weakref.ref(obj)
        ctx = ctxvar.Context()

        def inside():
            pv.set(obj)
            c.hold_copy()  # C keeps a copy of this context

        ctx.run(inside)
        obj.ctx = ctx  # a cycle through Python objects only...
        del obj, ctx
        gc.collect()
        held = c.held_get_object(cap)  # ...but C still holds the value
        self.assertIsInstance(held, Obj)
        self.assertIsInstance(held.ctx, ctxvar.Context)  # not cleared
        self.assertIs(held.ctx[pv], held)
        del held
        c.drop_held()
        _ctxvar._drain()
        gc.collect()
        self.assertIsNone(ref())


if __name__ == "__main__":
    unittest.main()
