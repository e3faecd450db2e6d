# SPDX-License-Identifier: MIT
"""The Python binding beyond CPython's test_context: threads, the garbage
collector, failing allocations, deep structures, and leak accounting.

Every test checks at the end that the binding's live objects (core blocks,
value records, map items: `_ctxvar._stats()`) are back where they started.
"""

import contextvars
import gc
import os
import sys
import threading
import unittest
import weakref

import _ctxvar
from _ctxvar import Context, ContextVar, Hamt, Token, copy_context, hamt

UNDER_VALGRIND = bool(os.environ.get("CTX_TEST_UNDER_VALGRIND"))


class Obj:
    """A weak-referenceable value that can take part in cycles."""

    def __init__(self, name=""):
        self.name = name
        self.ref = None


def settle():
    """Collects garbage and releases the main thread's own context (made on
    first use), so that what remains is what the tests left behind."""
    for _ in range(3):
        gc.collect()
    _ctxvar._thread_release()
    _ctxvar._drain()
    return _ctxvar._stats()


class BindingTestCase(unittest.TestCase):
    def setUp(self):
        self.before = settle()

    def tearDown(self):
        after = settle()
        for key in ("core_blocks", "boxes", "items"):
            self.assertEqual(after[key], self.before[key], f"{key} leaked: {after} vs {self.before}")


class ThreadTest(BindingTestCase):
    def test_thread_values_released_at_thread_end(self):
        var = ContextVar("var")
        refs = []

        def worker():
            value = Obj("thread value")
            refs.append(weakref.ref(value))
            var.set(value)
            self.assertIs(var.get(), value)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        # Released by the thread itself when its thread state was cleared,
        # without a garbage collection.
        self.assertIsNone(refs[0]())

    def test_release_on_a_thread_without_the_gil(self):
        # A native thread (no Python thread state) sets a value and exits: the
        # core's thread-exit destructor releases it without the GIL, so the
        # references wait in the deferred queue until the next drain.
        var = ContextVar("var")
        value = Obj("native")
        ref = weakref.ref(value)
        self.assertTrue(_ctxvar._set_in_native_thread(var, value))
        del value
        self.assertIsNotNone(ref())
        _ctxvar._drain()
        self.assertIsNone(ref())

    def test_release_on_a_thread_without_the_gil_drained_by_any_call(self):
        var = ContextVar("var")
        values = [Obj(str(i)) for i in range(50)]
        refs = [weakref.ref(v) for v in values]
        for v in values:
            _ctxvar._set_in_native_thread(var, v)
        del values, v
        Context().run(var.set, 1)  # any entry point drains
        self.assertEqual([r() for r in refs], [None] * 50)

    def test_new_thread_starts_empty(self):
        var = ContextVar("var", default="default")
        seen = []

        def main():
            var.set("main")
            t = threading.Thread(target=lambda: seen.append(var.get()))
            t.start()
            t.join()

        Context().run(main)
        self.assertEqual(seen, ["default"])

    def test_per_thread_isolation(self):
        var = ContextVar("var")
        barrier = threading.Barrier(4)
        errors = []

        def worker(n):
            try:
                for i in range(200):
                    var.set((n, i))
                    if i == 100:
                        barrier.wait()
                    if var.get() != (n, i):
                        errors.append((n, i, var.get()))
            except Exception as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_context_entered_in_another_thread(self):
        ctx = Context()
        entered = threading.Event()
        leave = threading.Event()

        def holder():
            ctx.run(lambda: (entered.set(), leave.wait()))

        t = threading.Thread(target=holder)
        t.start()
        entered.wait()
        try:
            with self.assertRaisesRegex(RuntimeError, "is already entered"):
                ctx.run(lambda: None)
        finally:
            leave.set()
            t.join()
        self.assertIsNone(ctx.run(lambda: None))

    def test_copy_context_of_running_thread_is_independent(self):
        var = ContextVar("var")
        copies = []

        def worker():
            var.set(1)
            copies.append(copy_context())
            var.set(2)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        self.assertEqual(copies[0][var], 1)
        self.assertEqual(Context().run(copies[0].run, var.get), 1)


class GarbageCollectionTest(BindingTestCase):
    def test_value_released_with_its_context(self):
        var = ContextVar("var")
        ctx = Context()
        value = Obj()
        ref = weakref.ref(value)
        ctx.run(var.set, value)
        del value
        self.assertIsNotNone(ref())
        del ctx
        self.assertIsNone(ref())

    def test_cycle_through_a_context(self):
        var = ContextVar("var")
        ctx = Context()
        value = Obj()
        value.ref = ctx  # value -> ctx -> value
        ctx.run(var.set, value)
        refs = weakref.ref(value), weakref.ref(ctx)
        del value, ctx
        gc.collect()
        self.assertEqual([r() for r in refs], [None, None])

    def test_cycle_through_a_context_after_copies_die(self):
        var = ContextVar("var")
        ctx = Context()
        value = Obj()
        value.ref = ctx
        ctx.run(var.set, value)
        copy = ctx.copy()  # shares the box: neither visits it while both live
        gc.collect()
        self.assertIsNotNone(copy[var])
        del copy
        refs = weakref.ref(value), weakref.ref(ctx)
        del value, ctx
        gc.collect()
        self.assertEqual([r() for r in refs], [None, None])

    def test_cycle_through_the_variable(self):
        value = Obj()
        var = ContextVar("var", default=value)
        value.ref = var
        ref = weakref.ref(value)
        del value, var
        gc.collect()
        self.assertIsNone(ref())

    def test_cycle_through_a_token(self):
        var = ContextVar("var")
        ctx = Context()
        old = Obj("old")
        ref = weakref.ref(old)

        def fun():
            var.set(old)
            old.ref = var.set("new")  # old -> token -> (previous box) -> old

        ctx.run(fun)
        del ctx, fun
        del old
        gc.collect()
        self.assertIsNone(ref())

    def test_shared_values_survive_collection(self):
        # A value reachable from two contexts through a shared box must never
        # be collected while either is alive.
        var = ContextVar("var")
        a = Context()
        a.run(var.set, [1, 2, 3])
        b = a.copy()
        c = b.copy()
        del a
        for _ in range(3):
            gc.collect()
        self.assertEqual(b[var], [1, 2, 3])
        self.assertEqual(c[var], [1, 2, 3])

    def test_cycle_through_a_hamt(self):
        h = hamt()
        value = Obj()
        h = h.set("k", value)
        value.ref = h
        refs = weakref.ref(value), weakref.ref(h)
        del value, h
        gc.collect()
        self.assertEqual([r() for r in refs], [None, None])

    def test_entered_context_not_collected(self):
        var = ContextVar("var")

        def fun():
            value = Obj()
            var.set(value)
            gc.collect()
            return var.get() is value

        self.assertTrue(Context().run(fun))


class SharedCycleTest(BindingTestCase):
    """Cycles through values that several contexts, snapshots or maps share
    are collected by one gc.collect(), as with contextvars."""

    def count_alive(self, refs):
        return sum(1 for r in refs if r() is not None)

    def test_issue_scenario_contexts_and_copies(self):
        var = ContextVar("var")
        refs = []
        for _ in range(1000):
            c = Context()
            h = Obj()
            c.run(var.set, h)
            h.ctx, h.snapshot = c, c.copy()
            refs += [weakref.ref(c), weakref.ref(h.snapshot), weakref.ref(h)]
        del c, h
        gc.collect()
        self.assertEqual(self.count_alive(refs), 0)

    def test_value_shared_by_derived_contexts(self):
        # Sets after the first derive new maps that share its record.
        a, b, c = ContextVar("a"), ContextVar("b"), ContextVar("c")
        refs = []
        for i in range(100):
            h = Obj()
            ctx = Context()

            def fill():
                a.set(h)
                held = [copy_context()]
                b.set(i)
                held.append(copy_context())
                c.set(i)
                held.append(copy_context())
                return held

            h.held = ctx.run(fill) + [ctx]
            refs += [weakref.ref(x) for x in h.held] + [weakref.ref(h)]
        del h, ctx, fill
        gc.collect()
        self.assertEqual(self.count_alive(refs), 0)

    def test_value_shared_by_standard_library_copies(self):
        # Python's own copies share the snapshot that holds the value.
        var = ContextVar("var")
        refs = []
        for _ in range(100):
            h = Obj()

            def inside():
                var.set(h)
                return [contextvars.copy_context() for _ in range(3)]

            h.copies = contextvars.Context().run(inside)
            refs += [weakref.ref(x) for x in h.copies] + [weakref.ref(h)]
        del h, inside
        gc.collect()
        self.assertEqual(self.count_alive(refs), 0)

    def test_value_shared_by_tokens(self):
        var = ContextVar("var")
        refs = []
        for _ in range(100):
            h = Obj()
            ctx = Context()

            def inside():
                var.set(h)
                return var.set("next")  # its old value is h

            h.token = ctx.run(inside)
            h.ctx = ctx
            refs += [weakref.ref(h), weakref.ref(ctx)]
        del h, ctx, inside
        gc.collect()
        self.assertEqual(self.count_alive(refs), 0)

    def test_value_shared_by_hamts(self):
        refs = []
        for i in range(300):
            h = Obj()
            m1 = hamt().set("k", h).set(i, i)
            m2 = m1.set("other", 1)
            m3 = m2.delete(i)
            h.maps = [m1, m2, m3]
            refs += [weakref.ref(m) for m in h.maps] + [weakref.ref(h)]
        del h, m1, m2, m3
        gc.collect()
        self.assertEqual(self.count_alive(refs), 0)

    def test_shared_values_survive_a_collection_while_held(self):
        var = ContextVar("var")
        keep = []
        for _ in range(50):
            h = Obj()
            ctx = Context()
            ctx.run(var.set, h)
            h.ctx = ctx
            keep.append(ctx.copy())  # only the copy is held from outside
        del h, ctx
        gc.collect()
        for c in keep:
            self.assertIsInstance(c[var], Obj)
            self.assertIsInstance(c[var].ctx[var], Obj)


class ErrorTest(BindingTestCase):
    def test_hash_and_eq_errors_change_nothing(self):
        class Key:
            fail_hash = fail_eq = False

            def __init__(self, h):
                self.h = h

            def __hash__(self):
                if Key.fail_hash:
                    raise ArithmeticError("hash")
                return self.h

            def __eq__(self, other):
                if Key.fail_eq:
                    raise LookupError("eq")
                return self is other

        keys = [Key(i % 3) for i in range(9)]  # plenty of collisions
        h = hamt()
        for i, k in enumerate(keys):
            h = h.set(k, i)
        for flag, exc in (("fail_hash", ArithmeticError), ("fail_eq", LookupError)):
            setattr(Key, flag, True)
            try:
                probe = Key(1)
                for op in (lambda: h.set(probe, 0), lambda: h.delete(probe),
                           lambda: h.get(probe), lambda: h[probe], lambda: probe in h):
                    with self.assertRaises(exc):
                        op()
            finally:
                setattr(Key, flag, False)
        self.assertEqual(dict(h.items()), {k: i for i, k in enumerate(keys)})

    def test_equal_key_keeps_the_original_object(self):
        a, b = (1,), (1,)
        h = hamt().set(a, "x").set(b, "y")
        self.assertIs(next(iter(h)), a)
        self.assertEqual(h[b], "y")

    def test_failing_core_allocations(self):
        var = ContextVar("var")
        ctx = Context()
        ctx.run(var.set, "kept")

        def attempt():
            tok = var.set("new")
            var.reset(tok)
            _ctxvar._c_copy_len()  # C's view: a core context and a mirror
            tok = var.set("core")  # now a core context is kept up to date too
            var.reset(tok)
            c = copy_context().copy()
            c.run(var.set, "in copy")
            h = hamt().set(1, 1).set(2, 2).delete(1)
            return c[var], dict(h.items())

        failures = 0
        for n in range(1, 40):
            _ctxvar._fail_core_alloc(n)
            try:
                result = ctx.run(attempt)
            except MemoryError:
                failures += 1
                continue
            finally:
                _ctxvar._fail_core_alloc(0)
            self.assertEqual(result, ("in copy", {2: 2}))
            # Whatever failed changed nothing.
            self.assertEqual(ctx[var], "kept")
        self.assertGreater(failures, 5)
        self.assertEqual(ctx[var], "kept")
        self.assertEqual(ctx.run(attempt), ("in copy", {2: 2}))

    def test_failing_allocation_sweep(self):
        # Fail the 1st, 2nd, ... core allocation of a workload that covers
        # in-place and shared maps, resets, copies, collisions: every run
        # either completes with the right result or raises MemoryError, and
        # nothing leaks either way.
        class Key:
            def __init__(self, h, n):
                self.h, self.n = h, n

            def __hash__(self):
                return self.h

            def __eq__(self, other):
                return isinstance(other, Key) and (self.h, self.n) == (other.h, other.n)

        variables = [ContextVar(f"v{i}") for i in range(40)]

        def workload():
            out = []

            def inner():
                tokens = [v.set(i) for i, v in enumerate(variables)]
                if _ctxvar._c_copy_len() != len(variables):  # C's view, then core sets
                    raise AssertionError("C's copy")
                snap = copy_context()
                for v, t in zip(reversed(variables), reversed(tokens)):
                    v.reset(t)
                c2 = snap.copy()
                c2.run(lambda: [v.set("x") for v in variables[::3]])
                out.append((len(snap), len(c2), sum(1 for _ in c2.items())))

            Context().run(inner)
            h = hamt()
            for i in range(60):
                h = h.set(Key(i % 7, i), i)
            h2 = h
            for i in range(0, 60, 2):
                h2 = h2.delete(Key(i % 7, i))
            out.append((len(h), len(h2), h == h2))
            return out

        expected = workload()
        baseline = settle()
        failures = 0
        for n in range(1, 600, 7 if UNDER_VALGRIND else 1):
            _ctxvar._fail_core_alloc(n)
            try:
                self.assertEqual(workload(), expected)
            except MemoryError:
                failures += 1
            finally:
                _ctxvar._fail_core_alloc(0)
            after = settle()
            for key in ("core_blocks", "boxes", "items"):
                self.assertEqual(after[key], baseline[key], f"allocation {n}: {key}")
        self.assertGreater(failures, 40)

    def test_token_rules(self):
        a, b = ContextVar("a"), ContextVar("b")

        def fun():
            t = a.set(1)
            with self.assertRaisesRegex(ValueError, "created by a different ContextVar"):
                b.reset(t)
            with self.assertRaisesRegex(ValueError, "created in a different Context"):
                Context().run(a.reset, t)
            a.reset(t)
            with self.assertRaisesRegex(RuntimeError, "has already been used once"):
                a.reset(t)
            with self.assertRaisesRegex(TypeError, "expected an instance of Token"):
                a.reset(None)

        Context().run(fun)
        with self.assertRaisesRegex(RuntimeError, "only be created by ContextVars"):
            Token()

    def test_repr_and_types(self):
        self.assertEqual(repr(Token.MISSING), "<Token.MISSING>")
        self.assertEqual(type(ContextVar[int]).__name__, "GenericAlias")
        with self.assertRaises(TypeError):
            hash(Context())
        with self.assertRaises(TypeError):
            hash(hamt())
        self.assertIsInstance(hamt(), Hamt)
        self.assertEqual(Hamt(), hamt())


class StructureTest(BindingTestCase):
    def test_deep_nesting_is_freed_iteratively(self):
        depth = 2000 if UNDER_VALGRIND else 100000
        h = hamt()
        for _ in range(depth):
            h = hamt().set("inner", h)
        del h  # would overflow the C stack if freed recursively

        var = ContextVar("var")
        ctx = Context()
        for _ in range(depth):
            inner = ctx
            ctx = Context()
            ctx.run(var.set, inner)
        del ctx, inner

    def test_many_variables_and_copies(self):
        n = 300 if UNDER_VALGRIND else 3000
        variables = [ContextVar(f"v{i}") for i in range(n)]

        def fill():
            for i, v in enumerate(variables):
                v.set(i)
            return copy_context()

        snapshot = Context().run(fill)
        self.assertEqual(len(snapshot), n)
        self.assertEqual([snapshot[v] for v in variables], list(range(n)))
        self.assertEqual(set(snapshot.keys()), set(variables))
        self.assertEqual(sorted(snapshot.values()), list(range(n)))
        copy = snapshot.copy()
        self.assertEqual(copy, snapshot)
        copy.run(variables[0].set, "changed")
        self.assertNotEqual(copy, snapshot)
        self.assertEqual(snapshot[variables[0]], 0)

    def test_iteration_is_a_snapshot(self):
        var, other = ContextVar("var"), ContextVar("other")

        def fun():
            var.set(1)
            it = copy_context().items()
            keys = iter(copy_context())
            other.set(2)
            return list(it), list(keys), len(it)

        items, keys, length = Context().run(fun)
        self.assertEqual(items, [(var, 1)])
        self.assertEqual(keys, [var])
        self.assertEqual(length, 1)

    def test_exhausted_iterators_stay_exhausted(self):
        var = ContextVar("var")
        ctx = Context()
        ctx.run(var.set, 1)
        h = hamt().set("a", 1)
        for it in (iter(h), h.items(), iter(ctx), ctx.values()):
            self.assertEqual(len(list(it)), 1)
            self.assertEqual(list(it), [])
            self.assertEqual(list(it), [])
            self.assertEqual(len(it), 1)  # like CPython's: the map's size

    def test_values_live_in_pythons_context(self):
        # ctxvar's values are kept in the thread's contextvars.Context (a
        # hidden standard-library variable holds them), so a copy made by the
        # standard library carries them, and they go when reset.
        var = ContextVar("var")
        value = Obj()
        ref = weakref.ref(value)
        tok = var.set(value)
        self.assertIs(contextvars.copy_context().run(var.get), value)
        self.assertIn(_ctxvar._hidden, contextvars.copy_context())
        del value
        var.reset(tok)
        del tok
        self.assertIsNone(ref())
        with self.assertRaises(LookupError):
            var.get()


class DirectStoreTest(BindingTestCase):
    """A set stores the snapshot in the current contextvars.Context's map
    itself, and a reset with nothing set since puts the previous map back
    (snapshot.c): the standard library must see exactly what its own set and
    reset of the hidden variable would have left."""

    def test_reset_leaves_the_standard_library_as_it_was(self):
        hidden = _ctxvar._hidden
        std = contextvars.ContextVar("std")
        var = ContextVar("var")

        def body():
            std.set("s")
            self.assertIsNone(hidden.get(None))
            tok = var.set(1)
            snap = hidden.get()  # the hidden variable's cache follows the set
            self.assertIsNotNone(snap)
            self.assertIn(hidden, contextvars.copy_context())
            self.assertEqual(std.get(), "s")
            var.reset(tok)
            self.assertIsNone(hidden.get(None))  # and the reset
            self.assertNotIn(hidden, contextvars.copy_context())
            self.assertEqual(dict(contextvars.copy_context()), {std: "s"})
            self.assertEqual(tok.old_value, Token.MISSING)

        contextvars.Context().run(body)

    def test_reset_after_a_standard_library_set(self):
        # The Context's map is no longer the one the set made: the reset
        # stores the previous snapshot into the current map, keeping the
        # standard library's later set.
        hidden = _ctxvar._hidden
        std = contextvars.ContextVar("std")
        var = ContextVar("var")

        def body():
            outer = var.set("outer")
            tok = var.set("inner")
            std_tok = std.set("s")
            var.reset(tok)
            self.assertEqual(var.get(), "outer")
            self.assertEqual(std.get(), "s")
            std.reset(std_tok)
            with self.assertRaises(LookupError):
                std.get()
            self.assertEqual(var.get(), "outer")
            var.reset(outer)
            with self.assertRaises(LookupError):
                var.get()
            self.assertNotIn(hidden, contextvars.copy_context())  # removed, not emptied

            # A standard-library set and reset in between also replace the map.
            tok = var.set(1)
            std.reset(std.set(2))
            var.reset(tok)
            with self.assertRaises(LookupError):
                var.get()
            self.assertNotIn(hidden, contextvars.copy_context())

        contextvars.Context().run(body)

    def test_old_value_after_reset_and_collection(self):
        var = ContextVar("var")
        first = Obj("first")
        ref = weakref.ref(first)

        def body():
            var.set(first)
            tok = var.set(Obj("second"))
            var.reset(tok)
            var.set(Obj("third"))  # nothing but the token holds "first" now
            return tok

        tok = Context().run(body)
        del first
        gc.collect()
        self.assertIs(tok.old_value, ref())
        self.assertEqual(tok.old_value.name, "first")
        del tok
        gc.collect()
        self.assertIsNone(ref())

    def test_cycle_through_the_maps_a_token_keeps(self):
        # The token keeps the maps before and after its set: a cycle through
        # them is collected.
        var = ContextVar("var")
        holder = Obj()
        ref = weakref.ref(holder)

        def body():
            holder.ref = var.set(holder)

        contextvars.Context().run(body)
        del holder
        gc.collect()
        self.assertIsNone(ref())

    def test_first_set_on_a_new_thread(self):
        # The thread has no contextvars.Context yet: the set makes it.
        var = ContextVar("var")
        seen = []

        def worker():
            tok = var.set("w")
            seen.append(var.get())
            seen.append(contextvars.copy_context().run(var.get))
            var.reset(tok)
            seen.append(var.get("gone"))
            seen.append(_ctxvar._hidden in contextvars.copy_context())

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        self.assertEqual(seen, ["w", "w", "gone", False])

    def test_reset_in_another_context_changes_nothing(self):
        var = ContextVar("var")
        tok = var.set(1)
        try:
            with self.assertRaises(ValueError):
                contextvars.copy_context().run(var.reset, tok)
            self.assertEqual(var.get(), 1)
        finally:
            var.reset(tok)
        with self.assertRaises(LookupError):
            var.get()


if __name__ == "__main__":
    unittest.main()
