# SPDX-License-Identifier: MIT
"""ctxvar.ThreadPoolExecutor: each task runs in a copy of the submitter's context.

The scenario that motivates it: a server handles two requests one after the
other (two consecutive queries); each handler sets its request id and sends
a database query to a thread pool; the query opens a "session" lazily and
caches it in a context variable.  With the standard library's executor the
query sees no request id, and the second query finds the first request's
session in its worker thread.  With ctxvar's, each query sees its own request
and opens its own session.
"""

import concurrent.futures
import contextvars as std_contextvars
import inspect
import threading
import unittest

import ctxvar
from ctxvar import Context, ContextVar, ThreadPoolExecutor, bind


class Session:
    def __init__(self, owner):
        self.owner = owner


class Scenario:
    """One request-id variable and one session variable of a given kind."""

    def __init__(self, var_type, context_type):
        self.request_id = var_type("request_id")
        self.db_session = var_type("db_session")
        self.context_type = context_type

    def query(self, sql):
        try:
            session = self.db_session.get()
        except LookupError:
            session = Session(owner=self.request_id.get(None))
            self.db_session.set(session)
        return self.request_id.get(None), session, sql

    def handle_request(self, rid, pool):
        self.request_id.set(rid)
        return pool.submit(self.query, f"SELECT * FROM t WHERE request = '{rid}'").result()

    def two_consecutive_queries(self, pool):
        first = self.context_type().run(self.handle_request, "req-1", pool)
        second = self.context_type().run(self.handle_request, "req-2", pool)
        return first, second


SCENARIOS = {
    "ctxvar": (ContextVar, Context),
    "stdlib contextvars": (std_contextvars.ContextVar, std_contextvars.Context),
}


class TwoConsecutiveQueriesTest(unittest.TestCase):
    def test_each_query_sees_its_request(self):
        for name, kinds in SCENARIOS.items():
            with self.subTest(name):
                s = Scenario(*kinds)
                with ThreadPoolExecutor(max_workers=1) as pool:
                    (rid1, session1, _), (rid2, session2, _) = s.two_consecutive_queries(pool)
                self.assertEqual(rid1, "req-1")
                self.assertEqual(rid2, "req-2")
                self.assertEqual(session1.owner, "req-1")
                self.assertEqual(session2.owner, "req-2")
                self.assertIsNot(session1, session2)

    def test_the_bug_without_propagation(self):
        # The switch off gives the standard library's behaviour back: the
        # query sees no request, and the second one inherits the first's
        # session from the worker thread.
        for name, kinds in SCENARIOS.items():
            with self.subTest(name):
                s = Scenario(*kinds)
                with ThreadPoolExecutor(max_workers=1, propagate_context=False) as pool:
                    (rid1, session1, _), (rid2, session2, _) = s.two_consecutive_queries(pool)
                self.assertIsNone(rid1)
                self.assertIsNone(rid2)
                self.assertIs(session1, session2)

    def test_same_as_stdlib_executor_when_off(self):
        s = Scenario(ContextVar, Context)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            (rid1, session1, _), (rid2, session2, _) = s.two_consecutive_queries(pool)
        self.assertIsNone(rid1)
        self.assertIs(session1, session2)


class ExecutorTest(unittest.TestCase):
    def setUp(self):
        self.var = ContextVar("var", default="unset")
        self.std_var = std_contextvars.ContextVar("std_var", default="unset")

    def test_interface(self):
        self.assertTrue(issubclass(ThreadPoolExecutor, concurrent.futures.ThreadPoolExecutor))
        base = inspect.signature(concurrent.futures.ThreadPoolExecutor.__init__).parameters
        ours = inspect.signature(ThreadPoolExecutor.__init__).parameters
        self.assertEqual(list(base), list(ours)[: len(base)])
        self.assertIs(ctxvar.ThreadPoolExecutor, ThreadPoolExecutor)

    def test_task_sets_do_not_leak_back(self):
        def task():
            self.var.set("task")
            self.std_var.set("task")
            return self.var.get(), self.std_var.get()

        def submitter(pool):
            self.var.set("submitter")
            self.std_var.set("submitter")
            result = pool.submit(task).result()
            return result, self.var.get(), self.std_var.get()

        with ThreadPoolExecutor(max_workers=2) as pool:
            result, mine, std_mine = Context().run(std_contextvars.Context().run, submitter, pool)
        self.assertEqual(result, ("task", "task"))
        self.assertEqual((mine, std_mine), ("submitter", "submitter"))

    def test_each_task_gets_a_fresh_copy(self):
        def task(i):
            before = self.var.get()
            self.var.set(f"task-{i}")
            return before

        def submitter(pool):
            self.var.set("submitter")
            return [pool.submit(task, i).result() for i in range(5)]

        with ThreadPoolExecutor(max_workers=1) as pool:
            seen = Context().run(submitter, pool)
        self.assertEqual(seen, ["submitter"] * 5)

    def test_captured_at_submit_time(self):
        gate = threading.Event()

        def task():
            gate.wait()
            return self.var.get()

        def submitter(pool):
            self.var.set("at submit")
            future = pool.submit(task)
            self.var.set("later")
            gate.set()
            return future.result()

        with ThreadPoolExecutor(max_workers=1) as pool:
            self.assertEqual(Context().run(submitter, pool), "at submit")

    def test_map(self):
        def submitter(pool):
            self.var.set("mapped")
            return list(pool.map(lambda i: (i, self.var.get(), self.std_var.get()), range(6)))

        with ThreadPoolExecutor(max_workers=3) as pool:
            ctx = std_contextvars.copy_context()
            ctx.run(self.std_var.set, "std-mapped")
            results = ctx.run(Context().run, submitter, pool)
        self.assertEqual(results, [(i, "mapped", "std-mapped") for i in range(6)])

    def test_switch_at_runtime(self):
        with ThreadPoolExecutor(max_workers=1) as pool:
            def submitter():
                self.var.set("on")
                return pool.submit(self.var.get).result()

            self.assertEqual(Context().run(submitter), "on")
            pool.propagate_context = False
            self.assertEqual(Context().run(submitter), "unset")
            pool.propagate_context = True
            self.assertEqual(Context().run(submitter), "on")

    def test_exceptions_and_kwargs(self):
        def task(a, *, fn, b=0):
            if fn == "raise":
                raise KeyError(a)
            return a, fn, b

        with ThreadPoolExecutor(max_workers=1) as pool:
            self.assertEqual(pool.submit(task, 1, fn="x", b=2).result(), (1, "x", 2))
            with self.assertRaises(KeyError):
                pool.submit(task, 1, fn="raise").result()

    def test_nested_submit(self):
        def inner():
            return self.var.get()

        def outer(pool):
            self.var.set("outer task")
            return pool.submit(inner).result()

        with ThreadPoolExecutor(max_workers=2) as pool:
            self.assertEqual(Context().run(lambda: pool.submit(outer, pool).result()),
                             "outer task")

    def test_initializer_and_shutdown(self):
        seen = []
        with ThreadPoolExecutor(max_workers=1, initializer=seen.append, initargs=(1,)) as pool:
            pool.submit(int).result()
        self.assertEqual(seen, [1])
        with self.assertRaises(RuntimeError):
            pool.submit(int)

    def test_initializer_values_are_visible_to_tasks(self):
        # What the initializer sets in its worker (both kinds of variable) is
        # seen by that worker's tasks, under the submitter's own values.
        connection = ContextVar("connection", default="none")
        std_connection = std_contextvars.ContextVar("std_connection", default="none")

        def init():
            connection.set(f"conn-{threading.get_ident()}")
            std_connection.set("std-conn")
            self.var.set("from initializer")

        def task():
            seen = (connection.get().startswith("conn-"), std_connection.get(), self.var.get())
            connection.set("changed by a task")  # never reaches the next task
            return seen

        def submitter(pool, set_var):
            if set_var:
                self.var.set("from submitter")
            return [pool.submit(task).result() for _ in range(3)]

        with ThreadPoolExecutor(max_workers=1, initializer=init) as pool:
            plain = Context().run(submitter, pool, False)
            mine = Context().run(submitter, pool, True)
        self.assertEqual(plain, [(True, "std-conn", "from initializer")] * 3)
        self.assertEqual(mine, [(True, "std-conn", "from submitter")] * 3)

        # Without propagation tasks run in the worker's own context: the
        # initializer's values, and what earlier tasks set.
        with ThreadPoolExecutor(max_workers=1, initializer=init,
                                propagate_context=False) as pool:
            first = pool.submit(task).result()
            second = pool.submit(lambda: connection.get()).result()
        self.assertEqual(first, (True, "std-conn", "from initializer"))
        self.assertEqual(second, "changed by a task")

    def test_dir_and_help_list_the_executor(self):
        import pydoc

        self.assertTrue({"ThreadPoolExecutor", "bind"} <= set(dir(ctxvar)))
        text = pydoc.render_doc(ctxvar, renderer=pydoc.plaintext)
        self.assertIn("class ThreadPoolExecutor", text)
        self.assertIn("bind(fn)", text)

    def test_docstring_says_what_the_initializer_sets(self):
        self.assertIn("initializer", ThreadPoolExecutor.__doc__)
        self.assertIn("visible", ThreadPoolExecutor.__doc__)


class BindTest(unittest.TestCase):
    def test_bind(self):
        var = ContextVar("var", default="unset")
        std_var = std_contextvars.ContextVar("std_var", default="unset")

        def callback(x):
            before = (var.get(), std_var.get())
            var.set("callback")
            std_var.set("callback")
            return x, before

        def register():
            var.set("registered")
            std_var.set("registered")
            bound = bind(callback)
            var.set("changed after bind")
            return bound

        bound = Context().run(std_contextvars.Context().run, register)
        self.assertEqual(bound.__wrapped__, callback)
        for i in range(3):  # each call starts from the captured state
            self.assertEqual(bound(i), (i, ("registered", "registered")))
        results = []
        threads = [threading.Thread(target=lambda: results.append(bound(7))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [(7, ("registered", "registered"))] * 4)
        self.assertEqual((var.get(), std_var.get()), ("unset", "unset"))


if __name__ == "__main__":
    unittest.main()
