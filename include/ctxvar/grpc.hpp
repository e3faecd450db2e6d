/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/grpc.hpp — the context across gRPC calls (the grpc module, C++17,
 * over gRPC C++ 1.51 or later).
 *
 * In Go, the `context` a gRPC handler receives already carries the caller's
 * trace, its deadline, and is cancelled when the caller goes away; the
 * handler passes it on to its own calls.  This module gives a C or C++
 * program built on ctxvar the same, with gRPC C++:
 *
 *   client side   ClientPropagation — an interceptor factory for channels.
 *                 Every call made through such a channel carries the
 *                 calling thread's current context: traceparent (a child:
 *                 a new span id per call), tracestate and the registered
 *                 variables as baggage (the wire registry, ctxvar/wire.h,
 *                 says which cross).  The call is cancelled (TryCancel) as
 *                 soon as the calling context's cancellation scope is
 *                 (ctxvar/cancel.h): by an explicit cancel, by its parent,
 *                 or by its deadline.  ApplyDeadline() gives the call the
 *                 time left of that scope as its gRPC deadline.
 *   server side   ServerPropagation — an interceptor factory for servers and
 *                 Handle(), a thin wrapper around a method handler.  The
 *                 handler runs in a new context decoded from the call's
 *                 metadata, whose scope has the call's deadline and is
 *                 cancelled when the client cancels or disconnects, and
 *                 when the call is over.  Work the handler starts — pool
 *                 tasks, loop callbacks, further gRPC calls through a
 *                 ClientPropagation channel, NATS requests — carries that
 *                 context by the usual propagation, so it sees the caller's
 *                 trace and values and stops when the caller's time is up.
 *
 * Client, the whole of it:
 *
 *     std::unique_ptr<ctxvar::grpc::ClientPropagation> client;
 *     ctxvar::grpc::ClientPropagation::Create(wire, nullptr, &client);
 *     std::shared_ptr<::grpc::Channel> channel;
 *     client->NewChannel("127.0.0.1:50051", ::grpc::InsecureChannelCredentials(),
 *                        ::grpc::ChannelArguments(), &channel);
 *     auto stub = Greeter::NewStub(channel);
 *     // ... in a context with a trace, values and a scope:
 *     ::grpc::ClientContext cc;
 *     ctxvar::grpc::ApplyDeadline(&cc);      // the scope's time left
 *     stub->SayHello(&cc, request, &reply);  // cancelled with the scope
 *
 * Server:
 *
 *     std::unique_ptr<ctxvar::grpc::ServerPropagation> ctxsrv;
 *     ctxvar::grpc::ServerPropagation::Create(wire, nullptr, &ctxsrv);
 *     std::vector<std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface>> f(1);
 *     ctxsrv->NewInterceptorFactory(&f[0]);
 *     builder.experimental().SetInterceptorCreators(std::move(f));
 *
 *     // sync service
 *     ::grpc::Status SayHello(::grpc::ServerContext *sc, const Req *req, Resp *resp) override {
 *         return ctxsrv->Handle(sc, [&] { ...; return ::grpc::Status::OK; });
 *     }
 *     // callback service
 *     ::grpc::ServerUnaryReactor *SayHello(::grpc::CallbackServerContext *sc,
 *                                          const Req *req, Resp *resp) override {
 *         return ctxsrv->Handle(sc, [&] { ...; return reactor; });
 *     }
 *
 * What gRPC 1.51 allows, and what this module chose
 * ------------------------------------------------
 * - The deadline.  gRPC reads a call's deadline from its ClientContext when
 *   the call is created, before any interceptor exists: an interceptor
 *   cannot set it (set_deadline from an interceptor has no effect).  So the
 *   deadline is set by ApplyDeadline(), called on the ClientContext before
 *   the call.  Without it the call still ends when the scope's deadline
 *   passes — the interceptor cancels it, and rewrites the status to
 *   DEADLINE_EXCEEDED — but the server learns of it only as a cancellation,
 *   when it happens, instead of knowing its deadline from the start.
 * - The server.  A gRPC server interceptor cannot run the handler inside a
 *   context (it sees the call's batches, not the handler's stack), so the
 *   handler is wrapped: Handle().  The interceptor is what learns of a
 *   callback-API call's end: gRPC runs its POST_RECV_CLOSE hook as soon as
 *   the call is cancelled (client cancel, disconnect, deadline) or over,
 *   on one of its threads — the cancellation reaches the handler's scope
 *   within gRPC's own latency (a fraction of a millisecond on loopback).  For the
 *   synchronous API gRPC runs that hook only when someone asks
 *   ServerContext::IsCancelled() (or after the handler returned), so
 *   Handle() registers the call with a watcher thread of the
 *   ServerPropagation that asks every ServerOptions::poll_interval_ns
 *   (default 5 ms) while sync handlers run: a sync handler's scope is
 *   cancelled within about one interval of the client's cancellation.  The
 *   CQ-based asynchronous API has neither a handler to wrap nor a safe time
 *   to ask: NewCallContext() gives its users the decoded context and scope,
 *   to cancel when their AsyncNotifyWhenDone tag comes back.
 * - The metadata.  gRPC sends the deadline itself (as grpc-timeout) and
 *   keeps that header out of the metadata both ways: the wire layer's
 *   grpc-timeout is never written or read by this module.  Header names are
 *   lowercase, as gRPC requires.
 * - Deadlines across hops.  gRPC carries a deadline as a relative timeout,
 *   measured at each end on a millisecond clock, and rounds it up when it
 *   sends it (whole milliseconds under a second, then three significant
 *   digits: at most 1% more).  A callee's deadline is therefore the
 *   caller's plus the time the request took to arrive, plus that rounding
 *   (about 2 ms per hop for deadlines under a second).  The server side
 *   uses gRPC's deadline as it is.
 *
 * The server scope and its causes
 * -------------------------------
 * The handler's context has a scope (ctx_cancel_scope_current) made for the
 * call: a child of any scope the decoded context had, with the call's
 * deadline.  It ends exactly once, with (ctx_cancel_scope_cause):
 *   CTX_EDEADLINE                 the call's deadline passed (the scope's
 *                                 own timer, or gRPC noticed first and the
 *                                 deadline was due: the same outcome);
 *   CTX_ECANCELLED, cause code kCauseCallCancelled
 *                                 the call was cancelled before it finished:
 *                                 by the client, by its connection going
 *                                 away, or by the server's own TryCancel;
 *   CTX_ECANCELLED, cause code kCauseCallFinished
 *                                 the call is over (its status was sent;
 *                                 sync API: its handler returned — a
 *                                 cancellation the watcher had not yet
 *                                 seen then is reported so, see Handle):
 *                                 as in Go, work still running for a call
 *                                 that has been answered is told to stop.
 *                                 Work that must outlive the call runs in
 *                                 ctx_cancel_context_detach().
 * The cause's data is a static NUL-terminated English sentence.
 *
 * Ownership.  ClientPropagation and ServerPropagation are handles to a
 * reference-counted state: the interceptor factories they make (and the
 * channels and servers that own those) keep that state alive, so a handle
 * may be destroyed once its factories are made — except that
 * ServerPropagation::Handle() is called on the handle, which must then live
 * until the server has shut down.  The registry (ctx_wire_t) is retained.
 *
 * Threads.  Every function may be called from any thread.  Create() must
 * not race with ctx_wire_register() on the same registry (registration
 * ends at the registry's first use).  Interceptor hooks run on the
 * threads gRPC chooses; cancellation callbacks of a server scope run on
 * the thread that cancels it: a gRPC thread (callback API), the watcher
 * (sync API), the timer thread of ctxvar/cancel.h (deadline), or the
 * handler's thread (at its end).  No lock of this module is held while
 * user code runs (handlers, cancellation callbacks, value operations).
 *
 * Errors.  Functions return 0 (or a documented non-negative status) or a
 * negative CTX_E* code of ctxvar.h; a call that fails changes nothing.
 * Nothing here throws, except Handle(), which rethrows what the handler
 * threw (after leaving the call's context).  The interceptors never fail a
 * call: if memory runs out, a call goes out without the context, or a
 * handler runs in an empty context (counted in the stats: decode_failures,
 * inject_failures).  Allocations of this module go through ctx_malloc, so
 * ctx_set_allocator reaches them.
 *
 * Names.  This namespace is ctxvar::grpc; gRPC's own is ::grpc.  Code that
 * says `using namespace ctxvar;` makes a bare `grpc::` ambiguous: prefer
 * `namespace cg = ctxvar::grpc;`.
 */
#ifndef CTXVAR_GRPC_HPP
#define CTXVAR_GRPC_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>
#include <grpcpp/support/server_interceptor.h>

/* cancel.h declares a struct and a function both named ctx_cancel_stats,
 * which C allows and g++'s -Wshadow reports in C++. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#endif
#include "../ctxvar.h"
#include "cancel.h"
#include "wire.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace ctxvar {
namespace grpc {

namespace detail {
struct ClientState;
struct ServerState;
} // namespace detail

/* Cause codes of a server call's scope (ctx_cancel_cause_t.code). */
constexpr int kCauseCallCancelled = 1; /* cancelled before it finished */
constexpr int kCauseCallFinished = 2;  /* the call is over */

/* ---------------------------------------------------------------------- */
/* Client                                                                  */
/* ---------------------------------------------------------------------- */

/* How a ClientPropagation injects (an input struct that can grow: see
 * "Growable structs" in ctxvar.h; `ClientOptions o;` or
 * CTX_STRUCT_INIT(ClientOptions) sets `size`).  Zero members mean the
 * defaults. */
struct ClientOptions {
    size_t size = sizeof(ClientOptions); /* sizeof the struct as the caller knows it */
    /* Flags for ctx_wire_inject: CTX_WIRE_SAME_PARENT sends the context's
     * traceparent as it is instead of a child.  0: a child per call. */
    unsigned inject_flags = 0;
};

/* A ClientPropagation's counters (an output struct: written up to `size`
 * bytes). */
struct ClientStats {
    size_t size = sizeof(ClientStats); /* sizeof the struct as the caller knows it */
    uint64_t calls = 0;           /* calls that went through the interceptor */
    uint64_t calls_cancelled = 0; /* calls it cancelled because their scope was */
    uint64_t inject_failures = 0; /* calls sent without (all of) the context:
                                     out of memory, or an encode error */
};

/* The client side: makes interceptor factories (and channels) that carry
 * the calling context on every call.  A handle (see "Ownership" above);
 * not copyable. */
class CTX_EXPORT ClientPropagation {
  public:
    /* Makes a ClientPropagation over `wire` (retained: which variables
     * cross), with `options` (nullptr: the defaults).  *out receives it.
     * Errors: CTX_EINVAL (wire or out null; options breaking the growth
     * rule, or inject_flags other than CTX_WIRE_SAME_PARENT), CTX_ENOMEM.
     * Any thread (see "Threads" above about registration). */
    static int Create(ctx_wire_t *wire, const ClientOptions *options,
                      std::unique_ptr<ClientPropagation> *out) noexcept;

    /* Drops the handle's reference; factories made keep working. */
    ~ClientPropagation();
    ClientPropagation(const ClientPropagation &) = delete;
    ClientPropagation &operator=(const ClientPropagation &) = delete;

    /* A new client interceptor factory (for
     * ::grpc::experimental::CreateCustomChannelWithInterceptors, among the
     * caller's own).  Per call, on the thread that creates the call (the
     * stub method's caller), its interceptor:
     *   - copies the current context (O(1)) and, when the initial metadata
     *     is sent, writes it as traceparent, tracestate and baggage
     *     (ctx_wire_inject; grpc-timeout is left to gRPC);
     *   - registers a cancellation callback on the current context's scope
     *     (if it has one) that calls ClientContext::TryCancel(); a scope
     *     already cancelled cancels the call before it is sent.  The
     *     callback is removed when the call's status arrives (or when the
     *     call is destroyed unfinished);
     *   - if it cancelled the call and gRPC reports CANCELLED, rewrites the
     *     status to DEADLINE_EXCEEDED (the scope's deadline passed) or
     *     CANCELLED (it was cancelled), with a message saying so.
     * *out receives the factory (it holds a reference to this object's
     * state).  Errors: CTX_EINVAL, CTX_ENOMEM.  Any thread. */
    int NewInterceptorFactory(
        std::unique_ptr<::grpc::experimental::ClientInterceptorFactoryInterface> *out) const noexcept;

    /* A channel to `target` with `credentials` and `args`, whose only
     * interceptor is this object's (CreateCustomChannelWithInterceptors).
     * gRPC connects lazily: an unreachable target fails the calls, not
     * this.  Errors: CTX_EINVAL (out or credentials null), CTX_ENOMEM.  Any
     * thread. */
    int NewChannel(const std::string &target,
                   const std::shared_ptr<::grpc::ChannelCredentials> &credentials,
                   const ::grpc::ChannelArguments &args,
                   std::shared_ptr<::grpc::Channel> *out) const noexcept;

    /* Copies the counters into *out (written up to out->size bytes).
     * Errors: CTX_EINVAL (out null or out->size < sizeof(size_t)).  Any
     * thread. */
    int Stats(ClientStats *out) const noexcept;

    /* Allocation through ctx_malloc (ctx_set_allocator reaches it). */
    static void *operator new(std::size_t size) noexcept;
    static void operator delete(void *p, std::size_t size) noexcept;

  private:
    explicit ClientPropagation(detail::ClientState *state) noexcept : state_(state) {}
    detail::ClientState *state_;
};

/* Gives `cc` the time left of the scope of `ctx` (nullptr: the calling
 * thread's current context) as its deadline, unless `cc` already has an
 * earlier one: call it before the call is created (gRPC reads the deadline
 * then).  A deadline that has passed gives the call one that has passed
 * (gRPC fails it with DEADLINE_EXCEEDED without sending it).  Returns 1
 * (the deadline was set), 0 (nothing to do: no scope, a scope without
 * deadline, or an earlier deadline on `cc`), CTX_EINVAL (cc null).  The
 * thread that owns `cc`, before the call. */
CTX_EXPORT int ApplyDeadline(::grpc::ClientContext *cc, ctx_context_t *ctx = nullptr) noexcept;

/* ---------------------------------------------------------------------- */
/* Server                                                                  */
/* ---------------------------------------------------------------------- */

/* How a ServerPropagation works (an input struct that can grow). */
struct ServerOptions {
    size_t size = sizeof(ServerOptions); /* sizeof the struct as the caller knows it */
    /* How often the watcher asks a running sync handler's call whether it
     * was cancelled, in nanoseconds; 0: 5 ms.  Negative: CTX_EINVAL.  The
     * watcher ticks at this interval while sync handlers run (and for a
     * second after the last); a call is asked at the ticks it spans, so
     * its scope learns of a cancellation within about one interval. */
    int64_t poll_interval_ns = 0;
};

/* A ServerPropagation's counters (an output struct: written up to `size`
 * bytes).  A call is counted in one of cancelled / deadline / finished
 * when its scope ends. */
struct ServerStats {
    size_t size = sizeof(ServerStats); /* sizeof the struct as the caller knows it */
    uint64_t calls = 0;                     /* calls given a context */
    uint64_t calls_cancelled = 0;           /* ended by kCauseCallCancelled */
    uint64_t calls_deadline = 0;            /* ended by their deadline */
    uint64_t calls_finished = 0;            /* ended by kCauseCallFinished */
    uint64_t decode_failures = 0;           /* handlers run without their
                                               call's context (in an empty
                                               one, or the thread's own):
                                               out of memory */
    uint64_t calls_without_interceptor = 0; /* callback-API calls handled
                                               without this object's
                                               interceptor (see Handle) */
    uint64_t watcher_polls = 0;             /* IsCancelled() asked by the watcher */
};

/* The server side: an interceptor factory and the handler wrapper.  A
 * handle (see "Ownership" above); not copyable. */
class CTX_EXPORT ServerPropagation {
  public:
    /* Makes a ServerPropagation over `wire` (retained), with `options`
     * (nullptr: the defaults).  No thread is started until a sync handler
     * runs.  Errors: CTX_EINVAL (wire or out null; options breaking the
     * growth rule or negative), CTX_ENOMEM.  Any thread. */
    static int Create(ctx_wire_t *wire, const ServerOptions *options,
                      std::unique_ptr<ServerPropagation> *out) noexcept;

    /* Drops the handle's reference; the last one (factories hold one)
     * stops the watcher thread.  Not while a Handle() of this object runs. */
    ~ServerPropagation();
    ServerPropagation(const ServerPropagation &) = delete;
    ServerPropagation &operator=(const ServerPropagation &) = delete;

    /* A new server interceptor factory (for
     * ServerBuilder::experimental().SetInterceptorCreators).  Its
     * interceptor acts on callback-API calls only (it declines the others,
     * costing them nothing): when the call arrives it decodes the call's
     * context (metadata and deadline) for Handle() to find, and when gRPC
     * reports the call's end (POST_RECV_CLOSE) it ends the call's scope
     * with the right cause.  Needed for callback services; harmless for
     * sync ones.  Errors: CTX_EINVAL, CTX_ENOMEM.  Any thread. */
    int NewInterceptorFactory(
        std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface> *out) const noexcept;

    /* Sync API: runs handler() — the whole method handler, which returns a
     * ::grpc::Status — in a copy of a new context decoded from the call
     * (see the top of this file), and returns its status.  While it runs,
     * the watcher asks every poll interval whether the call was cancelled
     * and cancels the scope if so; when it returns, the scope ends
     * (cancelled if the watcher saw the call cancelled, else finished: a
     * cancellation in the last interval before the handler returns is
     * reported as kCauseCallFinished, as asking gRPC once more costs more
     * than a whole call).  Call it once per call, from the method
     * handler, on gRPC's thread.  If the context cannot be made (out of
     * memory) the handler runs all the same, in an empty context
     * (stats.decode_failures).  An exception thrown by handler() is
     * rethrown after the context is left. */
    template <class F> ::grpc::Status Handle(::grpc::ServerContext *sc, F &&handler) {
        ::grpc::Status status;
        Thunk<F, ::grpc::Status> thunk{handler, &status, nullptr};
        HandleSync(sc, &Thunk<F, ::grpc::Status>::Run, &thunk);
        if (thunk.error)
            std::rethrow_exception(thunk.error);
        return status;
    }

    /* Callback API: runs fn() in a copy of the call's context and returns
     * what it returns.  Use it for the method handler (which returns the
     * reactor) and, if a reactor's reactions (OnReadDone, OnWriteDone, ...)
     * need the context, for each of them too: every run gets a fresh copy
     * (O(1)), so sets made in one are not seen by the next, as with pool
     * tasks.  The context is the one this object's interceptor decoded when
     * the call arrived; without the interceptor it is decoded here, at
     * every run, and its scope is never cancelled but by its deadline
     * (stats.calls_without_interceptor).  Out of memory: fn runs in an
     * empty context.  Any thread, while the call lives. */
    template <class F>
    auto Handle(::grpc::CallbackServerContext *sc, F &&fn) -> decltype(fn()) {
        using R = decltype(fn());
        if constexpr (std::is_void<R>::value) {
            Thunk<F, void> thunk{fn, nullptr, nullptr};
            HandleCallback(sc, &Thunk<F, void>::Run, &thunk);
            if (thunk.error)
                std::rethrow_exception(thunk.error);
        } else {
            R result{};
            Thunk<F, R> thunk{fn, &result, nullptr};
            HandleCallback(sc, &Thunk<F, R>::Run, &thunk);
            if (thunk.error)
                std::rethrow_exception(thunk.error);
            return result;
        }
    }

    /* For the CQ-based asynchronous API (and for tests): *out = a new
     * context (not entered; the caller owns it) decoded from `sc`'s
     * metadata, whose scope is a new child (of the decoded scope, if any)
     * with the call's deadline.  Nothing cancels that scope but its
     * deadline: cancel it when the AsyncNotifyWhenDone tag comes back
     * (ctx_cancel_scope_get, ctx_cancel_scope_cancel with
     * kCauseCallCancelled or kCauseCallFinished).  Errors: CTX_EINVAL,
     * CTX_ENOMEM, CTX_ESYSTEM (the timer thread could not be started).  Any
     * thread, once gRPC has the call's metadata. */
    int NewCallContext(::grpc::ServerContextBase *sc, ctx_context_t **out) const noexcept;

    /* Copies the counters into *out (written up to out->size bytes).
     * Errors: CTX_EINVAL (out null or out->size < sizeof(size_t)).  Any
     * thread. */
    int Stats(ServerStats *out) const noexcept;

    /* Allocation through ctx_malloc (ctx_set_allocator reaches it). */
    static void *operator new(std::size_t size) noexcept;
    static void operator delete(void *p, std::size_t size) noexcept;

  private:
    /* Calls the handler, keeping what it returns or throws. */
    template <class F, class R> struct Thunk {
        F &fn;
        R *result;
        std::exception_ptr error;
        static void Run(void *arg) noexcept {
            auto *self = static_cast<Thunk *>(arg);
            try {
                *self->result = self->fn();
            } catch (...) {
                self->error = std::current_exception();
            }
        }
    };
    template <class F> struct Thunk<F, void> {
        F &fn;
        void *unused;
        std::exception_ptr error;
        static void Run(void *arg) noexcept {
            auto *self = static_cast<Thunk *>(arg);
            try {
                self->fn();
            } catch (...) {
                self->error = std::current_exception();
            }
        }
    };

    /* The non-template halves of Handle(): run(arg) exactly once. */
    void HandleSync(::grpc::ServerContext *sc, void (*run)(void *), void *arg) noexcept;
    void HandleCallback(::grpc::CallbackServerContext *sc, void (*run)(void *),
                        void *arg) noexcept;

    explicit ServerPropagation(detail::ServerState *state) noexcept : state_(state) {}
    detail::ServerState *state_;
};

} // namespace grpc
} // namespace ctxvar

#endif /* CTXVAR_GRPC_HPP */
