/* SPDX-License-Identifier: MIT */
/*
 * test_cxx.cpp — include/ctxvar.hpp, the C++17 wrappers, built with the C++
 * compiler that matches the configuration's C compiler (g++ in the plain and
 * valgrind configurations, clang++ under the sanitizers), and a second time
 * with -fno-exceptions (CTX_TEST_NO_EXCEPTIONS).
 *
 * Each wrapper does what its C pair does and undoes it when its scope ends,
 * however it ends: enter/exit, set/reset, capture/clear, run, and pool
 * submit of lambdas (a callable holding a move-only object is destroyed
 * exactly once, whether the task ran or the submit failed).  With
 * exceptions: an exception thrown inside run() or capture::run() comes out
 * after the context was left, a scope unwound by an exception is balanced,
 * and a task that throws fails with CTX_ECALLBACK.
 */
#include <ctxvar.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

extern "C" {
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
}

#if !defined(CTX_TEST_NO_EXCEPTIONS)
#define EXCEPTIONS 1
#else
#define EXCEPTIONS 0
#endif

#define ASSERT_RC(expr, want)                                                                  \
    do {                                                                                       \
        int got_ = (expr);                                                                     \
        if (got_ != (want))                                                                    \
            fail_msg("%s returned %s, expected %s", #expr, ctx_error_name(got_),               \
                     ctx_error_name(want));                                                    \
    } while (0)

static ctx_var_t *new_var(const char *name) {
    ctx_var_t *var = nullptr;
    ASSERT_RC(ctx_var_new(name, nullptr, &var), 0);
    return var;
}

static void *value_of(ctx_var_t *var) {
    void *out = nullptr;
    return ctx_var_get(var, &out) == CTX_VALUE ? out : nullptr;
}

static int a, b;

static int teardown(void **state) {
    (void)state;
    return ctx_thread_release() == 0 ? 0 : -1;
}

static void test_context_scope(void **state) {
    (void)state;
    ctx_var_t *var = new_var("v");
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &a), 0);
    {
        ctxvar::context_scope in(ctx);
        assert_true(static_cast<bool>(in));
        assert_ptr_equal(value_of(var), &a);
        {
            ctxvar::context_scope again(ctx); /* entered already: no exit later */
            ASSERT_RC(again.error(), CTX_EENTERED);
            assert_false(static_cast<bool>(again));
        }
        assert_int_equal(ctx_context_is_entered(ctx), 1);
        assert_ptr_equal(value_of(var), &a);
    }
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    assert_null(value_of(var));
    ctxvar::context_scope none(nullptr);
    ASSERT_RC(none.error(), CTX_EINVAL);
    ctx_context_release(ctx);
    ctx_var_release(var);
}

static void test_value_scope(void **state) {
    (void)state;
    ctx_var_t *var = new_var("v");
    ASSERT_RC(ctx_var_set(var, &a, nullptr), 0);
    {
        ctxvar::value_scope set(var, &b);
        assert_true(static_cast<bool>(set));
        assert_non_null(set.token());
        assert_ptr_equal(value_of(var), &b);
    }
    assert_ptr_equal(value_of(var), &a);
#if EXCEPTIONS
    bool caught = false;
    try {
        ctxvar::value_scope set(var, &b);
        throw std::runtime_error("out");
    } catch (const std::runtime_error &) {
        caught = true;
    }
    assert_true(caught);
    assert_ptr_equal(value_of(var), &a); /* unwinding reset it */
#endif
    ctxvar::value_scope bad(nullptr, &b);
    ASSERT_RC(bad.error(), CTX_EINVAL);
    assert_null(bad.token());
    ctx_var_release(var);
}

static void test_run(void **state) {
    (void)state;
    ctx_var_t *var = new_var("v");
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    void *seen = &b;
    ASSERT_RC(ctxvar::run(ctx, [&] {
                  seen = value_of(var);
                  ctx_var_set(var, &a, nullptr);
              }),
              0);
    assert_null(seen);
    void *in_ctx = nullptr;
    ASSERT_RC(ctx_context_get(ctx, var, &in_ctx), 0); /* the set landed in ctx */
    assert_ptr_equal(in_ctx, &a);
    assert_null(value_of(var));
    auto named = [&] { seen = value_of(var); }; /* an lvalue callable */
    ASSERT_RC(ctxvar::run(ctx, named), 0);
    assert_ptr_equal(seen, &a);
#if EXCEPTIONS
    bool caught = false;
    try {
        ctxvar::run(ctx, [&]() -> int { throw std::logic_error("inside"); });
    } catch (const std::logic_error &e) {
        caught = std::strcmp(e.what(), "inside") == 0;
    }
    assert_true(caught);
    assert_int_equal(ctx_context_is_entered(ctx), 0); /* left before the rethrow */
#endif
    ctx_context_release(ctx);
    ctx_var_release(var);
}

static std::atomic<int> released{0};

static void count_release(void *, void *) { released++; }

/* A variable whose values' releases are counted in `released` (reset). */
static ctx_var_t *counted_var() {
    static ctx_value_ops_t ops{};
    ops.size = sizeof ops;
    ops.release = count_release;
    ctx_var_options_t o = CTX_STRUCT_INIT(ctx_var_options_t);
    o.ops = &ops;
    ctx_var_t *var = nullptr;
    ASSERT_RC(ctx_var_new("v", &o, &var), 0);
    released = 0;
    return var;
}

static void test_capture(void **state) {
    (void)state;
    ctx_var_t *var = counted_var();
    ASSERT_RC(ctx_var_set(var, &a, nullptr), 0);
    {
        ctxvar::capture cap;
        assert_true(static_cast<bool>(cap));
        ASSERT_RC(ctx_var_set(var, &b, nullptr), 0); /* after: not in the capture */
        assert_int_equal(released.load(), 0);      /* the capture holds &a */
        void *seen = nullptr;
        ASSERT_RC(cap.run([&] { seen = value_of(var); }), 0);
        assert_ptr_equal(seen, &a);
#if EXCEPTIONS
        bool caught = false;
        try {
            cap.run([] { throw 42; });
        } catch (int n) {
            caught = n == 42;
        }
        assert_true(caught);
        ASSERT_RC(cap.run([&] { seen = value_of(var); }), 0); /* usable again */
#endif
        assert_non_null(cap.get());
    }
    assert_int_equal(released.load(), 1); /* cleared: &a had no other holder */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    {
        ctxvar::capture of(ctx);
        ASSERT_RC(of.error(), 0);
        void *seen = &a;
        ASSERT_RC(of.run([&] { seen = value_of(var); }), 0);
        assert_null(seen);
    }
    ctxvar::capture none(nullptr);
    ASSERT_RC(none.error(), CTX_EINVAL);
    ASSERT_RC(none.run([] {}), CTX_EINVAL);
    ctx_context_release(ctx);
    ctx_var_release(var);
}

/* ctxvar::snapshot: the values of the moment, run once (then empty);
 * what it held is released by the run, or by the destructor if it never
 * ran; an exception comes out of run() after the run's context is gone. */
static void test_snapshot(void **state) {
    (void)state;
    ctx_var_t *var = counted_var();
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_enter(ctx), 0);
    ASSERT_RC(ctx_var_set(var, &a, nullptr), 0);
    {
        ctxvar::snapshot snap;
        ASSERT_RC(ctx_var_set(var, &b, nullptr), 0); /* after: not in it */
        void *seen = nullptr;
        assert_int_equal(released.load(), 0); /* the snapshot holds &a */
        ASSERT_RC(snap.run([&] { seen = value_of(var); }), 0);
        assert_ptr_equal(seen, &a);
        assert_int_equal(released.load(), 1); /* dropped with the run */
        ASSERT_RC(snap.run([&] { seen = value_of(var); }), 0); /* empty now */
        assert_null(seen);
        assert_non_null(snap.get());
    }
    {
        ctxvar::snapshot kept; /* never run: the destructor clears it */
    }
#if EXCEPTIONS
    {
        ctxvar::snapshot snap;
        bool caught = false;
        try {
            snap.run([] { throw 42; });
        } catch (int n) {
            caught = n == 42;
        }
        assert_true(caught);
        assert_ptr_equal(value_of(var), &b); /* back in the caller's context */
    }
#endif
    ASSERT_RC(ctx_context_exit(ctx), 0);
    assert_int_equal(released.load(), 1); /* &b is still ctx's */
    ctx_context_release(ctx);
    assert_int_equal(released.load(), 2); /* &b, with ctx */
    ctx_var_release(var);
}

static std::atomic<int> destroyed{0};

/* A move-only callable that counts its destructions. */
struct tracked {
    std::unique_ptr<int> payload;
    ctx_var_t *var;
    void **seen;
    explicit tracked(ctx_var_t *v, void **s) : payload(new int(7)), var(v), seen(s) {}
    tracked(tracked &&other) noexcept = default;
    ~tracked() {
        if (payload)
            destroyed++;
    }
    void operator()() const { *seen = value_of(var); }
};

static void test_pool_submit(void **state) {
    (void)state;
    ctx_var_t *var = new_var("v");
    ctx_pool_t *pool = nullptr;
    ASSERT_RC(ctx_pool_new(nullptr, &pool), 0);
    ASSERT_RC(ctx_var_set(var, &a, nullptr), 0);

    /* Runs in a copy of the submitter's context; destroyed once. */
    destroyed = 0;
    void *seen = nullptr;
    ctx_pool_future_t *f = nullptr;
    ASSERT_RC(ctxvar::submit(pool, tracked(var, &seen), &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, -1), 0);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_COMPLETED);
    ctx_pool_future_release(f);
    assert_ptr_equal(seen, &a);
    assert_int_equal(destroyed.load(), 1);

    /* An int result is the task's code. */
    ASSERT_RC(ctxvar::submit(pool, [] { return CTX_ETIMEDOUT; }, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, -1), 0);
    assert_int_equal(ctx_pool_future_state(f), CTX_POOL_FUTURE_FAILED);
    void *result = nullptr;
    ASSERT_RC(ctx_pool_future_result(f, &result), CTX_ETIMEDOUT);
    ctx_pool_future_release(f);

#if EXCEPTIONS
    /* An exception cannot cross the pool: the task fails with ECALLBACK. */
    ASSERT_RC(ctxvar::submit(pool, [] { throw std::runtime_error("task"); }, &f), 0);
    ASSERT_RC(ctx_pool_future_wait(f, -1), 0);
    ASSERT_RC(ctx_pool_future_result(f, &result), CTX_ECALLBACK);
    ctx_pool_future_release(f);
#endif

    /* Options: an explicit context (fire and forget, waited for by the
     * shutdown below). */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set(ctx, var, &b), 0);
    ctx_pool_submit_options_t so = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
    so.propagation = CTX_POOL_PROPAGATE_CONTEXT;
    so.context = ctx;
    std::atomic<void *> in_task{nullptr};
    ASSERT_RC(ctxvar::submit(pool, [&] { in_task = value_of(var); }, &so, nullptr), 0);
    ctx_context_release(ctx);

    /* A failed submit destroys the callable, once. */
    ASSERT_RC(ctx_pool_shutdown(pool, CTX_POOL_SHUTDOWN_DRAIN), 0);
    assert_ptr_equal(in_task.load(), &b);
    destroyed = 0;
    ASSERT_RC(ctxvar::submit(pool, tracked(var, &seen)), CTX_ESHUTDOWN);
    assert_int_equal(destroyed.load(), 1);
    ASSERT_RC(ctx_pool_release(pool), 0);
    ctx_var_release(var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_context_scope, teardown),
        cmocka_unit_test_teardown(test_value_scope, teardown),
        cmocka_unit_test_teardown(test_run, teardown),
        cmocka_unit_test_teardown(test_capture, teardown),
        cmocka_unit_test_teardown(test_snapshot, teardown),
        cmocka_unit_test_teardown(test_pool_submit, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
