/* SPDX-License-Identifier: MIT */
/*
 * ctxvar.hpp — C++17 wrappers over the core and the pool (header-only).
 *
 * RAII for the pairs a C caller must keep balanced by hand, and callables
 * wherever the C API takes a function pointer and a `void *`:
 *
 *   ctxvar::context_scope in(ctx);          // ctx_context_enter ... exit
 *   ctxvar::value_scope   set(var, value);  // ctx_var_set ... reset + release
 *   ctxvar::capture       cap;              // ctx_capture_current ... clear
 *   cap.run([&] { ... });                   // ctx_capture_run of a lambda
 *   ctxvar::snapshot      snap;             // ctx_snapshot_current ... clear
 *   snap.run([&] { ... });                  // ctx_snapshot_run (once)
 *   ctxvar::run(ctx, [&] { ... });          // ctx_context_run of a lambda
 *   ctxvar::submit(pool, [=] { ... }, &f);  // ctx_pool_submit_ex of a lambda
 *
 * Errors are the C API's codes: a constructor that can fail keeps its code
 * (error(), and the object converts to true on success); functions return
 * it.  Nothing here throws of its own accord, and nothing needs exceptions:
 * the header compiles with -fno-exceptions.
 *
 * Exception safety.  Destructors undo what succeeded, so a scope left by an
 * exception is left balanced.  An exception must never unwind through the C
 * library's frames, so:
 *   - run() and capture::run() catch what the callable throws, let the C call
 *     leave the context as usual, and rethrow it to the caller afterwards;
 *   - a pool task runs on another thread, where there is nobody to rethrow
 *     to: an exception escaping the callable fails the task with
 *     CTX_ECALLBACK (catch inside the callable to keep it).
 *
 * Threads and ownership are those of the C calls each method names: see
 * ctxvar.h and ctxvar/pool.h.  The wrappers are neither copyable nor
 * movable: each stands for one enter, one set or one capture, which
 * belongs to the scope (and thread) that made it.
 */
#ifndef CTXVAR_HPP
#define CTXVAR_HPP

#include <ctxvar.h>
/* ctxvar/pool.h names a function and a struct tag alike (ctx_pool_stats),
 * which C allows and g++'s -Wshadow reports in C++. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#endif
#include <ctxvar/pool.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <exception>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CTXVAR_HPP_EXCEPTIONS 1
#else
#define CTXVAR_HPP_EXCEPTIONS 0
#endif

namespace ctxvar {

namespace detail {

/* T{} with `size` set when T has one (the growth rule), so the wrapper
 * keeps working when a struct gains its size member. */
template <class T, class = void> struct has_size : std::false_type {};
template <class T>
struct has_size<T, std::void_t<decltype(std::declval<T &>().size)>> : std::true_type {};

template <class T> T struct_init() {
    T value{};
    if constexpr (has_size<T>::value)
        value.size = sizeof(T);
    return value;
}

/* Runs a callable from C (ctx_run_fn) and keeps what it threw. */
template <class F> struct call {
    F &fn;
#if CTXVAR_HPP_EXCEPTIONS
    std::exception_ptr error{};
#endif

    static void *trampoline(void *arg) noexcept {
        auto *self = static_cast<call *>(arg);
#if CTXVAR_HPP_EXCEPTIONS
        try {
            self->fn();
        } catch (...) {
            self->error = std::current_exception();
        }
#else
        self->fn();
#endif
        return nullptr;
    }

    void rethrow() {
#if CTXVAR_HPP_EXCEPTIONS
        if (error)
            std::rethrow_exception(error);
#endif
    }
};

/* A pool task holding a callable on the heap. */
template <class Fn> struct task {
    using result = std::invoke_result_t<Fn &>;
    static_assert(std::is_void_v<result> || std::is_convertible_v<result, int>,
                  "a pool task returns void (completed) or an int (0, or a negative "
                  "CTX_E* code that fails the task)");

    static int invoke(Fn &fn) {
        if constexpr (std::is_void_v<result>) {
            fn();
            return 0;
        } else {
            return static_cast<int>(fn());
        }
    }

    static int run(void *arg, void **out) noexcept {
        (void)out; /* the future's result stays NULL */
#if CTXVAR_HPP_EXCEPTIONS
        try {
            return invoke(*static_cast<Fn *>(arg));
        } catch (...) {
            return CTX_ECALLBACK;
        }
#else
        return invoke(*static_cast<Fn *>(arg));
#endif
    }

    static void release(void *arg) noexcept { delete static_cast<Fn *>(arg); }
};

} // namespace detail

/* ctx_context_enter in the constructor, ctx_context_exit in the destructor
 * (only if the enter succeeded).  Same thread for both. */
class context_scope {
  public:
    explicit context_scope(ctx_context_t *ctx) noexcept : ctx_(ctx), rc_(ctx_context_enter(ctx)) {}
    ~context_scope() {
        if (rc_ == 0)
            ctx_context_exit(ctx_);
    }
    context_scope(const context_scope &) = delete;
    context_scope &operator=(const context_scope &) = delete;

    /* 0, or ctx_context_enter's error (CTX_EENTERED, CTX_EINVAL, ...). */
    int error() const noexcept { return rc_; }
    explicit operator bool() const noexcept { return rc_ == 0; }

  private:
    ctx_context_t *ctx_;
    int rc_;
};

/* ctx_var_set with a token in the constructor; ctx_var_reset and
 * ctx_token_release in the destructor (only if the set succeeded): Python's
 * `with var.set(value):`.  If the set fails, `value` stays the caller's. */
class value_scope {
  public:
    value_scope(ctx_var_t *var, void *value) noexcept
        : var_(var), rc_(ctx_var_set(var, value, &token_)) {}
    ~value_scope() {
        if (rc_ == 0) {
            ctx_var_reset(var_, token_);
            ctx_token_release(token_);
        }
    }
    value_scope(const value_scope &) = delete;
    value_scope &operator=(const value_scope &) = delete;

    /* 0, or ctx_var_set's error. */
    int error() const noexcept { return rc_; }
    explicit operator bool() const noexcept { return rc_ == 0; }
    /* The token (borrowed; NULL if the set failed). */
    ctx_token_t *token() const noexcept { return token_; }

  private:
    ctx_var_t *var_;
    ctx_token_t *token_ = nullptr;
    int rc_;
};

/* ctx_context_run of a callable taking no argument (its result, if any, is
 * discarded).  Returns ctx_context_run's code.  If `fn` throws, the context
 * is left as after a normal return and the exception is rethrown here. */
template <class F> int run(ctx_context_t *ctx, F &&fn) {
    detail::call<std::remove_reference_t<F>> c{fn};
    int rc = ctx_context_run(ctx, &detail::call<std::remove_reference_t<F>>::trampoline, &c,
                             nullptr);
    c.rethrow();
    return rc;
}

/* A ctx_capture_t: a copy of the current context (default constructor) or
 * of a given one, kept in the object, cleared by the destructor. */
class capture {
  public:
    capture() noexcept { ctx_capture_current(&capture_); }
    /* A copy of `ctx`; if `ctx` is NULL nothing is captured and error() is
     * CTX_EINVAL. */
    explicit capture(ctx_context_t *ctx) noexcept : rc_(ctx_capture_copy(&capture_, ctx)) {}
    ~capture() {
        if (rc_ == 0)
            ctx_capture_clear(&capture_);
    }
    capture(const capture &) = delete;
    capture &operator=(const capture &) = delete;

    int error() const noexcept { return rc_; }
    explicit operator bool() const noexcept { return rc_ == 0; }

    /* ctx_capture_run of a callable: its code (CTX_EINVAL if nothing was
     * captured); an exception from `fn` is rethrown after the capture is
     * left. */
    template <class F> int run(F &&fn) {
        if (rc_ != 0)
            return CTX_EINVAL;
        detail::call<std::remove_reference_t<F>> c{fn};
        int rc = ctx_capture_run(&capture_, &detail::call<std::remove_reference_t<F>>::trampoline,
                                 &c, nullptr);
        c.rethrow();
        return rc;
    }

    /* The C storage (for C functions that take a capture). */
    ctx_capture_t *get() noexcept { return &capture_; }

  private:
    ctx_capture_t capture_;
    int rc_ = 0;
};

/* A ctx_snapshot_t: the values of the current context, run once (run()
 * empties it; a second run runs in an empty context), or cleared by the
 * destructor. */
class snapshot {
  public:
    snapshot() noexcept { ctx_snapshot_current(&snapshot_); }
    ~snapshot() { ctx_snapshot_clear(&snapshot_); }
    snapshot(const snapshot &) = delete;
    snapshot &operator=(const snapshot &) = delete;

    /* ctx_snapshot_run of a callable: its code; an exception from `fn` is
     * rethrown after the run's context is gone. */
    template <class F> int run(F &&fn) {
        detail::call<std::remove_reference_t<F>> c{fn};
        int rc = ctx_snapshot_run(&snapshot_, &detail::call<std::remove_reference_t<F>>::trampoline,
                                  &c, nullptr);
        c.rethrow();
        return rc;
    }

    /* The C storage (for C functions that take a snapshot). */
    ctx_snapshot_t *get() noexcept { return &snapshot_; }

  private:
    ctx_snapshot_t snapshot_{};
};

/* ctx_pool_submit_ex of a callable: `fn` is moved (or copied) into a heap
 * block that the pool destroys when it is done with it (its arg_release,
 * which the wrapper sets in `options`), or that is destroyed here if the
 * submit fails.  `fn` takes no argument and returns void (the task
 * completes) or an int (0 completes it; a negative CTX_E* code fails it,
 * CTX_ECANCELLED cancels it).  An exception escaping `fn` fails the task
 * with CTX_ECALLBACK.  `options` may be NULL (the pool's policy); `future`
 * may be NULL (fire and forget).  Returns ctx_pool_submit_ex's code, or
 * CTX_ENOMEM if the callable could not be stored.  If copying or moving
 * `fn` throws, the exception propagates and nothing was submitted. */
template <class F>
int submit(ctx_pool_t *pool, F &&fn, const ctx_pool_submit_options_t *options,
           ctx_pool_future_t **future) {
    using Fn = std::decay_t<F>;
    Fn *held = new (std::nothrow) Fn(std::forward<F>(fn));
    if (!held)
        return CTX_ENOMEM;
    ctx_pool_submit_options_t o =
        options ? *options : detail::struct_init<ctx_pool_submit_options_t>();
    o.arg_release = &detail::task<Fn>::release;
    int rc = ctx_pool_submit_ex(pool, &detail::task<Fn>::run, held, &o, future);
    if (rc != 0)
        delete held;
    return rc;
}

template <class F> int submit(ctx_pool_t *pool, F &&fn, ctx_pool_future_t **future = nullptr) {
    return submit(pool, std::forward<F>(fn), nullptr, future);
}

} // namespace ctxvar

#endif /* CTXVAR_HPP */
