/* SPDX-License-Identifier: MIT */
/*
 * client.cpp — the client side: ClientPropagation, its interceptor, and
 * ApplyDeadline.
 *
 * A gRPC 1.51 client call goes through these steps, and the interceptor
 * does one thing at each:
 *
 *   stub method (calling thread, calling context)
 *     └─ channel CreateCall: deadline read from the ClientContext ── ApplyDeadline
 *          └─ interceptors created ─────────────────────────────────  (1) capture
 *             (ClientContext::TryCancel now only marks the call)         register
 *          └─ call bound; a marked call is cancelled here
 *     └─ PRE_SEND_INITIAL_METADATA (the starting thread) ───────────  (2) inject
 *     ...                                       scope cancelled ─────  (3) TryCancel
 *     └─ POST_RECV_STATUS (a gRPC or the waiting thread) ───────────  (4) clear,
 *                                                                        rewrite
 *
 * (1) The interceptor is made on the calling thread, so the calling
 *     context is the current one: it is captured (ctx_capture_current:
 *     O(1), no allocation), and a wake-up callback is registered on its
 *     scope.  If the scope is already cancelled the callback runs at once;
 *     TryCancel then finds no call yet and marks the ClientContext, and
 *     gRPC cancels the call as soon as it is bound, before anything is
 *     sent.
 * (2) The capture is run to write the context into the initial metadata
 *     with ctx_wire_inject (the carrier's set() replaces the header in
 *     gRPC's multimap; grpc-timeout is skipped: gRPC sends the deadline),
 *     then dropped.  The capture, not the thread that happens to start the
 *     call, decides what is sent: an async call may be started elsewhere.
 * (3) The callback (on the cancelling thread: any thread, the timer thread
 *     for a deadline) notes the scope's error and calls TryCancel, which
 *     gRPC makes safe from any thread.
 * (4) When the status arrives the callback is cleared (waiting for it if
 *     it is running elsewhere), so it never runs after the call is over —
 *     the ClientContext may be destroyed right after.  If it cancelled the
 *     call, gRPC's CANCELLED becomes DEADLINE_EXCEEDED or CANCELLED with a
 *     message that says the context did it.  A call destroyed without a
 *     status (never started, never finished) is cleared by the destructor.
 *
 * Nothing here throws into gRPC: a failed allocation sends the call
 * without the context (stats.inject_failures).  The interceptor and the
 * factory are allocated with ctx_malloc (CtxAllocated).
 */
#include <grpc/support/time.h>

#include <map>
#include <string>

#include "grpc/grpc_internal.hpp"

namespace ctxvar {
namespace grpc {
namespace detail {

namespace ex = ::grpc::experimental;

void ClientState::Release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1)
        return;
    ctx_wire_release(wire);
    delete this;
}

namespace {

using Metadata = std::multimap<std::string, std::string>;

/* The carrier's set(): replaces `name` in gRPC's outgoing metadata. */
int SetHeader(void *self, const char *name, const char *value, size_t value_len) {
    if (ctx_wire_name_equal(name, std::char_traits<char>::length(name), CTX_WIRE_GRPC_TIMEOUT,
                            sizeof CTX_WIRE_GRPC_TIMEOUT - 1))
        return 0; /* gRPC sends the deadline itself */
    auto *md = static_cast<Metadata *>(self);
    try {
        std::string key(name);
        md->erase(key);
        md->emplace(std::move(key), std::string(value, value_len));
    } catch (...) {
        return CTX_ENOMEM;
    }
    return 0;
}

class ClientInterceptor final : public ex::Interceptor, public CtxAllocated {
  public:
    ClientInterceptor(ClientState *state, ::grpc::ClientContext *cc) noexcept
        : state_(state->Retain()), cc_(cc) {
        ctx_capture_current(&capture_);
        captured_ = true;
        ctx_cancel_scope_t *scope;
        if (ctx_cancel_scope_current(&scope) == 0) {
            scope_ = scope; /* the registration keeps it alive */
            registered_.store(ctx_cancel_callback_init_wakeup(&cb_, scope, OnCancel, this) >= 0,
                              std::memory_order_release);
        }
    }

    ~ClientInterceptor() override {
        Unregister();
        if (captured_)
            ctx_capture_clear(&capture_);
        state_->Release();
    }

    void Intercept(ex::InterceptorBatchMethods *methods) override {
        if (methods->QueryInterceptionHookPoint(ex::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA))
            Inject(methods->GetSendInitialMetadata());
        if (methods->QueryInterceptionHookPoint(ex::InterceptionHookPoints::POST_RECV_STATUS)) {
            Unregister();
            RewriteStatus(methods->GetRecvStatus());
        }
        methods->Proceed();
    }

  private:
    struct InjectArgs {
        ClientState *state;
        Metadata *md;
        int rc;
    };

    /* Runs in the captured context. */
    static void *InjectCurrent(void *arg) {
        auto *a = static_cast<InjectArgs *>(arg);
        ctx_wire_carrier_t carrier = CTX_STRUCT_INIT(ctx_wire_carrier_t);
        carrier.set = SetHeader;
        carrier.self = a->md;
        a->rc = ctx_wire_inject(a->state->wire, nullptr, &carrier, a->state->inject_flags, nullptr);
        return nullptr;
    }

    void Inject(Metadata *md) {
        if (!captured_)
            return;
        InjectArgs args{state_, md, CTX_EINVAL};
        if (md)
            ctx_capture_run(&capture_, InjectCurrent, &args, nullptr);
        if (args.rc < 0)
            Bump(state_->inject_failures);
        ctx_capture_clear(&capture_);
        captured_ = false;
    }

    static void OnCancel(void *arg) {
        auto *self = static_cast<ClientInterceptor *>(arg);
        self->fired_.store(ctx_cancel_scope_error(self->scope_), std::memory_order_release);
        Bump(self->state_->calls_cancelled);
        self->cc_->TryCancel();
    }

    void Unregister() {
        if (registered_.exchange(false, std::memory_order_acq_rel))
            ctx_cancel_callback_clear(&cb_);
    }

    void RewriteStatus(::grpc::Status *status) const {
        int why = fired_.load(std::memory_order_acquire);
        if (!why || !status || status->error_code() != ::grpc::StatusCode::CANCELLED)
            return;
        if (why == CTX_EDEADLINE)
            *status = ::grpc::Status(::grpc::StatusCode::DEADLINE_EXCEEDED,
                                     "ctxvar: the calling context's deadline passed");
        else
            *status = ::grpc::Status(::grpc::StatusCode::CANCELLED,
                                     "ctxvar: the calling context was cancelled");
    }

    ClientState *state_;
    ::grpc::ClientContext *cc_;
    ctx_capture_t capture_;
    bool captured_ = false;
    ctx_cancel_scope_t *scope_ = nullptr;
    ctx_cancel_callback_t cb_;
    std::atomic<bool> registered_{false};
    std::atomic<int> fired_{0}; /* the scope's error, once the callback ran */
};

class ClientFactory final : public ex::ClientInterceptorFactoryInterface, public CtxAllocated {
  public:
    explicit ClientFactory(ClientState *state) noexcept : state_(state->Retain()) {}
    ~ClientFactory() override { state_->Release(); }

    ex::Interceptor *CreateClientInterceptor(ex::ClientRpcInfo *info) override {
        auto *interceptor = new ClientInterceptor(state_, info->client_context());
        Bump(state_->calls);
        if (!interceptor)
            Bump(state_->inject_failures); /* this call goes without the context */
        return interceptor;
    }

  private:
    ClientState *state_;
};

} // namespace
} // namespace detail

/* ---- ClientPropagation ---- */

void *ClientPropagation::operator new(std::size_t size) noexcept { return ctx_malloc(size); }
void ClientPropagation::operator delete(void *p, std::size_t size) noexcept { ctx_free(p, size); }

int ClientPropagation::Create(ctx_wire_t *wire, const ClientOptions *options,
                              std::unique_ptr<ClientPropagation> *out) noexcept {
    ClientOptions o;
    if (!wire || !out)
        return CTX_EINVAL;
    if (options && ctx__grpc_struct_in(&o, sizeof o, options, sizeof(ClientOptions)) != 0)
        return CTX_EINVAL;
    if (o.inject_flags & ~static_cast<unsigned>(CTX_WIRE_SAME_PARENT))
        return CTX_EINVAL;
    auto *state = new detail::ClientState;
    if (!state)
        return CTX_ENOMEM;
    auto *handle = new ClientPropagation(state);
    if (!handle) {
        delete state;
        return CTX_ENOMEM;
    }
    state->wire = ctx_wire_retain(wire);
    state->inject_flags = o.inject_flags;
    out->reset(handle);
    return 0;
}

ClientPropagation::~ClientPropagation() { state_->Release(); }

int ClientPropagation::NewInterceptorFactory(
    std::unique_ptr<::grpc::experimental::ClientInterceptorFactoryInterface> *out) const noexcept {
    if (!out)
        return CTX_EINVAL;
    auto *factory = new detail::ClientFactory(state_);
    if (!factory)
        return CTX_ENOMEM;
    out->reset(factory);
    return 0;
}

int ClientPropagation::NewChannel(const std::string &target,
                                  const std::shared_ptr<::grpc::ChannelCredentials> &credentials,
                                  const ::grpc::ChannelArguments &args,
                                  std::shared_ptr<::grpc::Channel> *out) const noexcept {
    if (!out || !credentials)
        return CTX_EINVAL;
    std::unique_ptr<::grpc::experimental::ClientInterceptorFactoryInterface> factory;
    int rc = NewInterceptorFactory(&factory);
    if (rc != 0)
        return rc;
    try {
        std::vector<std::unique_ptr<::grpc::experimental::ClientInterceptorFactoryInterface>> f;
        f.push_back(std::move(factory));
        auto channel = ::grpc::experimental::CreateCustomChannelWithInterceptors(
            target, credentials, args, std::move(f));
        if (!channel)
            return CTX_ENOMEM;
        *out = std::move(channel);
    } catch (...) {
        return CTX_ENOMEM;
    }
    return 0;
}

int ClientPropagation::Stats(ClientStats *out) const noexcept {
    if (!out || out->size < sizeof(size_t))
        return CTX_EINVAL;
    ClientStats s;
    s.calls = state_->calls.load(std::memory_order_relaxed);
    s.calls_cancelled = state_->calls_cancelled.load(std::memory_order_relaxed);
    s.inject_failures = state_->inject_failures.load(std::memory_order_relaxed);
    return ctx__grpc_struct_out(out, &s, sizeof s);
}

/* ---- ApplyDeadline ---- */

int ApplyDeadline(::grpc::ClientContext *cc, ctx_context_t *ctx) noexcept {
    if (!cc)
        return CTX_EINVAL;
    int64_t left;
    if (ctx) {
        ctx_cancel_scope_t *scope;
        if (ctx_cancel_scope_get(ctx, &scope) != 0)
            return 0;
        int rc = ctx_cancel_scope_remaining(scope, &left);
        ctx_cancel_scope_release(scope);
        if (rc != 0)
            return 0;
    } else if (ctx_cancel_remaining(&left) != 0) {
        return 0;
    }
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_nanos(left, GPR_TIMESPAN));
    gpr_timespec current = gpr_convert_clock_type(cc->raw_deadline(), GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(current, deadline) <= 0)
        return 0;
    cc->set_deadline(deadline);
    return 1;
}

} // namespace grpc
} // namespace ctxvar
