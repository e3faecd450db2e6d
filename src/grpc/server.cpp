/* SPDX-License-Identifier: MIT */
/*
 * server.cpp — the server side: ServerPropagation, its interceptor, the
 * call registry and Handle().
 *
 * Every server call gets a CallState: a context decoded from the call's
 * metadata (ctx_wire_extract over ServerContext::client_metadata(); the
 * trace, tracestate and registered baggage) whose scope is a new child
 * (of the decoded scope, if any) with the call's deadline — gRPC's, as a
 * time left converted onto CLOCK_MONOTONIC.  Handlers run in copies of
 * that context (captures: O(1), no allocation, so reactions of one call
 * may run concurrently).  The scope ends exactly once (ServerState::End,
 * guarded by CallState::ended), with the cause documented in grpc.hpp.
 * Who ends it, and when, depends on gRPC's API:
 *
 *   callback API   The interceptor (made by gRPC for every call before the
 *                  handler, with the metadata and deadline already bound)
 *                  decodes the CallState and registers it under the call's
 *                  ServerContext; Handle() finds it there.  gRPC runs the
 *                  interceptor's POST_RECV_CLOSE hook on one of its
 *                  threads as soon as the call is cancelled or over; there
 *                  IsCancelled() is a plain read, and says which; the
 *                  state leaves the registry then (the newest registration
 *                  of an address is found first, should gRPC reuse one
 *                  before the old interceptor is gone).
 *
 *        ServerContext* ──hash──▶ shard[i] ──▶ CallState ──▶ CallState
 *                                 (mutex)       (refs: interceptor,
 *                                               each running Handle)
 *
 *   sync API       No interceptor (the factory declines these calls: they
 *                  cost nothing).  Handle() decodes the CallState itself
 *                  and runs the handler; meanwhile a WatchEntry on its
 *                  stack is linked into the watcher (watcher.cpp), which
 *                  asks IsCancelled() every poll interval.  gRPC's sync
 *                  server finalizes the call's close only when someone asks
 *                  (or after the handler), so asking is how a cancellation
 *                  is learnt before the handler returns.  When it returns,
 *                  Handle() unlinks the entry (waiting if the watcher is
 *                  asking about it right then) and ends the scope:
 *                  cancelled if the watcher saw the call cancelled,
 *                  finished otherwise.  It does not ask once more: on the
 *                  handler's thread, IsCancelled() polls the call's queue
 *                  with a deadline already past, which takes gRPC through
 *                  its poller (about 3x the round trip of a whole plain
 *                  call on loopback, measured with the bench's sync
 *                  figures) — so a cancellation that arrives after the
 *                  watcher's last look and before the handler returns is
 *                  reported as the call being over (kCauseCallFinished),
 *                  which it then is: either way the scope ends as the
 *                  handler returns.  IsCancelled() is never called after
 *                  the handler: gRPC 1.51 shuts the call's queue down
 *                  then, and asking a shut-down queue finalizes the close
 *                  a second time.
 *
 * Deadline or cancellation?  gRPC cancels a call whose deadline passed, and
 * may notice before the scope's own timer fires (two clocks, one rounded
 * to milliseconds).  A cancellation seen within kDeadlineSlackNs of the
 * scope's deadline waits for that deadline (ctx_cancel_scope_wait, which
 * expires the scope itself when due), so the scope reports CTX_EDEADLINE,
 * as the caller's does.
 *
 * Failure never fails a call: a handler whose context cannot be made runs
 * in an empty one, or, if even that fails, in the thread's own.
 */
#include <grpc/support/time.h>

#include "grpc/grpc_internal.hpp"

namespace ctxvar {
namespace grpc {
namespace detail {

namespace ex = ::grpc::experimental;

namespace {

/* A cancellation this close to the deadline is the deadline (see above). */
constexpr int64_t kDeadlineSlackNs = 2000000;
constexpr int64_t kDefaultPollNs = 5000000;

const char kCancelledText[] = "the call was cancelled before it finished";
const char kFinishedText[] = "the call is over";

/* The carrier's iterate(): every pair of the call's metadata but the
 * deadline, which gRPC gives us as a deadline. */
int IterateMetadata(void *self, ctx_wire_header_fn fn, void *user) {
    const auto *md = static_cast<const std::multimap<::grpc::string_ref, ::grpc::string_ref> *>(self);
    for (const auto &kv : *md) {
        if (ctx_wire_name_equal(kv.first.data(), kv.first.size(), CTX_WIRE_GRPC_TIMEOUT,
                                sizeof CTX_WIRE_GRPC_TIMEOUT - 1))
            continue;
        int rc = fn(kv.first.data(), kv.first.size(), kv.second.data(), kv.second.size(), user);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The call's deadline as cancel options: 0 none, -1 passed, else ns left. */
int64_t TimeLeft(gpr_timespec deadline) {
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
        return 0;
    gpr_timespec left = gpr_time_sub(deadline, gpr_now(deadline.clock_type));
    if (left.tv_sec < 0 || (left.tv_sec == 0 && left.tv_nsec <= 0))
        return -1;
    if (left.tv_sec >= INT64_MAX / 1000000000 - 1)
        return INT64_MAX;
    return left.tv_sec * 1000000000 + left.tv_nsec;
}

void *Trampoline(void *arg);

struct RunArgs {
    void (*run)(void *);
    void *arg;
    bool ran;
};

void *Trampoline(void *arg) {
    auto *a = static_cast<RunArgs *>(arg);
    a->ran = true;
    a->run(a->arg);
    return nullptr;
}

/* Runs run(arg) in a new empty context (a failed decode). */
void RunEmpty(void (*run)(void *), void *arg) {
    ctx_context_t *empty = nullptr;
    ctx_context_new(&empty); /* failure: run in the thread's own context */
    RunIn(empty, run, arg);
    ctx_context_release(empty);
}

/* Runs run(arg) in a copy of the call's context; if even that fails (the
 * thread's ctxvar state could not be made), it ran outside it: counted. */
void RunInCall(ServerState *server, CallState *call, void (*run)(void *), void *arg) {
    if (!RunIn(call->ctx, run, arg))
        Bump(server->decode_failures);
}

class ServerInterceptor final : public ex::Interceptor, public CtxAllocated {
  public:
    ServerInterceptor(ServerState *server, ::grpc::ServerContextBase *sc, CallState *call) noexcept
        : server_(server->Retain()), sc_(sc), call_(call) {
        server_->Register(call_, sc_);
    }
    ~ServerInterceptor() override {
        Unregister();
        call_->Release();
        server_->Release();
    }
    void Intercept(ex::InterceptorBatchMethods *methods) override {
        if (methods->QueryInterceptionHookPoint(ex::InterceptionHookPoints::POST_RECV_CLOSE)) {
            /* A callback-API call: IsCancelled() reads what the close said.
             * The call is over: Handle() no longer finds it (its
             * ServerContext's address may serve another call soon). */
            server_->End(call_, sc_->IsCancelled());
            Unregister();
        }
        methods->Proceed();
    }

  private:
    void Unregister() {
        if (registered_.exchange(false, std::memory_order_acq_rel))
            server_->Unregister(call_);
    }

    ServerState *server_;
    ::grpc::ServerContextBase *sc_;
    CallState *call_;
    std::atomic<bool> registered_{true};
};

class ServerFactory final : public ex::ServerInterceptorFactoryInterface, public CtxAllocated {
  public:
    explicit ServerFactory(ServerState *state) noexcept : state_(state->Retain()) {}
    ~ServerFactory() override { state_->Release(); }

    ex::Interceptor *CreateServerInterceptor(ex::ServerRpcInfo *info) override {
        auto *sc = dynamic_cast<::grpc::CallbackServerContext *>(info->server_context());
        if (!sc)
            return nullptr; /* sync (Handle decodes) or async (NewCallContext) */
        CallState *call;
        if (state_->Decode(sc, &call) != 0) {
            Bump(state_->decode_failures);
            return nullptr; /* Handle will try again, or run without */
        }
        auto *interceptor = new ServerInterceptor(state_, sc, call);
        if (!interceptor)
            call->Release();
        return interceptor;
    }

  private:
    ServerState *state_;
};

} // namespace

bool RunIn(ctx_context_t *ctx, void (*run)(void *), void *arg) noexcept {
    RunArgs a{run, arg, false};
    ctx_capture_t capture;
    if (ctx && ctx_capture_copy(&capture, ctx) == 0) {
        ctx_capture_run(&capture, Trampoline, &a, nullptr);
        ctx_capture_clear(&capture);
    }
    if (a.ran)
        return true;
    run(arg);
    return false;
}

/* ---- CallState ---- */

void CallState::Release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1)
        return;
    ctx_cancel_scope_release(scope);
    ctx_context_release(ctx);
    delete this;
}

/* ---- ServerState ---- */

void ServerState::Release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1)
        return;
    watcher.Stop();
    ctx_wire_release(wire);
    delete this;
}

int ServerState::Decode(::grpc::ServerContextBase *sc, CallState **out) noexcept {
    ctx_wire_carrier_t carrier = CTX_STRUCT_INIT(ctx_wire_carrier_t);
    carrier.iterate = IterateMetadata;
    carrier.self = const_cast<void *>(static_cast<const void *>(&sc->client_metadata()));
    ctx_context_t *ctx;
    int rc = ctx_wire_extract(wire, &carrier, 0, &ctx, nullptr);
    if (rc != 0)
        return rc;
    ctx_cancel_scope_t *parent = nullptr, *scope = nullptr;
    if (ctx_cancel_scope_get(ctx, &parent) != 0)
        parent = nullptr;
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = TimeLeft(sc->raw_deadline());
    rc = ctx_cancel_scope_new(parent, &o, &scope);
    ctx_cancel_scope_release(parent);
    CallState *call = nullptr;
    if (rc == 0)
        rc = ctx_cancel_context_set(ctx, scope);
    if (rc == 0 && !(call = new CallState))
        rc = CTX_ENOMEM;
    if (rc != 0) {
        ctx_cancel_scope_release(scope);
        ctx_context_release(ctx);
        return rc;
    }
    call->ctx = ctx;
    call->scope = scope;
    Bump(calls);
    *out = call;
    return 0;
}

void ServerState::End(CallState *call, bool cancelled) noexcept {
    if (call->ended.exchange(true, std::memory_order_acq_rel))
        return;
    int64_t left;
    if (cancelled && ctx_cancel_scope_remaining(call->scope, &left) == 0 && left <= kDeadlineSlackNs)
        ctx_cancel_scope_wait(call->scope, left); /* expires it if due */
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    cause.code = cancelled ? kCauseCallCancelled : kCauseCallFinished;
    cause.data = const_cast<char *>(cancelled ? kCancelledText : kFinishedText);
    ctx_cancel_scope_cancel(call->scope, &cause);
    ctx_cancel_cause_t got = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    int err = ctx_cancel_scope_cause(call->scope, &got);
    if (err == CTX_EDEADLINE)
        Bump(calls_deadline);
    else if (got.code == kCauseCallFinished)
        Bump(calls_finished);
    else
        Bump(calls_cancelled);
}

ServerState::Shard &ServerState::ShardOf(const void *key) noexcept {
    auto v = reinterpret_cast<uintptr_t>(key);
    v ^= v >> 9;
    return shards[(v >> 4) % kShards];
}

void ServerState::Register(CallState *call, const ::grpc::ServerContextBase *key) noexcept {
    Shard &s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    call->key = key;
    call->next = s.head;
    s.head = call;
}

void ServerState::Unregister(CallState *call) noexcept {
    Shard &s = ShardOf(call->key);
    std::lock_guard<std::mutex> lock(s.mu);
    for (CallState **p = &s.head; *p; p = &(*p)->next)
        if (*p == call) {
            *p = call->next;
            break;
        }
}

CallState *ServerState::Lookup(const ::grpc::ServerContextBase *key) noexcept {
    Shard &s = ShardOf(key);
    std::lock_guard<std::mutex> lock(s.mu);
    for (CallState *c = s.head; c; c = c->next)
        if (c->key == key)
            return c->Retain();
    return nullptr;
}

} // namespace detail

/* ---- ServerPropagation ---- */

void *ServerPropagation::operator new(std::size_t size) noexcept { return ctx_malloc(size); }
void ServerPropagation::operator delete(void *p, std::size_t size) noexcept { ctx_free(p, size); }

int ServerPropagation::Create(ctx_wire_t *wire, const ServerOptions *options,
                              std::unique_ptr<ServerPropagation> *out) noexcept {
    ServerOptions o;
    if (!wire || !out)
        return CTX_EINVAL;
    if (options && ctx__grpc_struct_in(&o, sizeof o, options, sizeof(ServerOptions)) != 0)
        return CTX_EINVAL;
    if (o.poll_interval_ns < 0)
        return CTX_EINVAL;
    auto *state = new detail::ServerState;
    if (!state)
        return CTX_ENOMEM;
    auto *handle = new ServerPropagation(state);
    if (!handle) {
        delete state;
        return CTX_ENOMEM;
    }
    state->wire = ctx_wire_retain(wire);
    state->poll_ns = o.poll_interval_ns ? o.poll_interval_ns : detail::kDefaultPollNs;
    out->reset(handle);
    return 0;
}

ServerPropagation::~ServerPropagation() { state_->Release(); }

int ServerPropagation::NewInterceptorFactory(
    std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface> *out) const noexcept {
    if (!out)
        return CTX_EINVAL;
    auto *factory = new detail::ServerFactory(state_);
    if (!factory)
        return CTX_ENOMEM;
    out->reset(factory);
    return 0;
}

void ServerPropagation::HandleSync(::grpc::ServerContext *sc, void (*run)(void *),
                                   void *arg) noexcept {
    detail::CallState *call;
    if (!sc || state_->Decode(sc, &call) != 0) {
        detail::Bump(state_->decode_failures);
        detail::RunEmpty(run, arg);
        return;
    }
    detail::WatchEntry entry{sc, call};
    bool watched = state_->watcher.Add(&entry);
    detail::RunInCall(state_, call, run, arg);
    bool cancelled = watched && state_->watcher.Remove(&entry); /* no last ask: see above */
    state_->End(call, cancelled);
    call->Release();
}

void ServerPropagation::HandleCallback(::grpc::CallbackServerContext *sc, void (*run)(void *),
                                       void *arg) noexcept {
    detail::CallState *call = sc ? state_->Lookup(sc) : nullptr;
    if (!call) {
        detail::Bump(state_->calls_without_interceptor);
        if (!sc || state_->Decode(sc, &call) != 0) {
            detail::Bump(state_->decode_failures);
            detail::RunEmpty(run, arg);
            return;
        }
    }
    detail::RunInCall(state_, call, run, arg);
    call->Release();
}

int ServerPropagation::NewCallContext(::grpc::ServerContextBase *sc,
                                      ctx_context_t **out) const noexcept {
    if (!sc || !out)
        return CTX_EINVAL;
    detail::CallState *call;
    int rc = state_->Decode(sc, &call);
    if (rc != 0)
        return rc;
    *out = ctx_context_retain(call->ctx);
    call->Release();
    return 0;
}

int ServerPropagation::Stats(ServerStats *out) const noexcept {
    if (!out || out->size < sizeof(size_t))
        return CTX_EINVAL;
    ServerStats s;
    auto load = [](const detail::Counter &c) { return c.load(std::memory_order_relaxed); };
    s.calls = load(state_->calls);
    s.calls_cancelled = load(state_->calls_cancelled);
    s.calls_deadline = load(state_->calls_deadline);
    s.calls_finished = load(state_->calls_finished);
    s.decode_failures = load(state_->decode_failures);
    s.calls_without_interceptor = load(state_->calls_without_interceptor);
    s.watcher_polls = load(state_->watcher_polls);
    return ctx__grpc_struct_out(out, &s, sizeof s);
}

} // namespace grpc
} // namespace ctxvar
