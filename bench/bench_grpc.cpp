/* SPDX-License-Identifier: MIT */
/*
 * bench_grpc.cpp — the grpc module's figures (its JSON keys are a contract),
 * the C++ part of the C program ctxvar_bench: compiled when the grpc module
 * and protoc are there (src/grpc/CMakeLists.txt defines CTX_BENCH_GRPC), it
 * gives main.c the section ctx_bench_grpc (extern "C").
 *
 *   grpc_roundtrip_ns        a unary call (bench_grpc.proto: 64 bytes each
 *                            way) over 127.0.0.1 to a callback-API server in
 *                            this process, with the context on both sides:
 *                            the channel has ClientPropagation's
 *                            interceptor, the server ServerPropagation's,
 *                            and the handler runs in Handle().  The calling
 *                            context holds a trace, one baggage variable
 *                            and a scope with 60 s left, given to the call by
 *                            ApplyDeadline; the handler's context is decoded
 *                            from the call, with a scope of that deadline.
 *   grpc_roundtrip_plain_ns  the same call to a second server in this
 *                            process without either interceptor or Handle,
 *                            the same 60 s deadline set on the ClientContext:
 *                            plain gRPC.
 *   grpc_roundtrip_ratio     grpc_roundtrip_ns / grpc_roundtrip_plain_ns
 *                            (goal <= 1.05)
 *   grpc_roundtrip_noop_ns   the same call through a third server and
 *                            channel whose interceptors do nothing but
 *                            proceed (no Handle): what gRPC's interceptor
 *                            machinery costs by itself, of the above
 *   grpc_roundtrip_noop_ratio  grpc_roundtrip_noop_ns / grpc_roundtrip_plain_ns
 *   grpc_roundtrip_headers_ns  the plain call carrying, added by hand, the
 *                            headers the interceptor sends (a traceparent
 *                            with a new parent id per call, the baggage):
 *                            what gRPC charges for the metadata itself
 *   grpc_roundtrip_vs_headers_ratio  grpc_roundtrip_ns /
 *                            grpc_roundtrip_headers_ns: ctxvar's share and
 *                            gRPC's interceptor machinery together
 *   grpc_roundtrip_noop_headers_ns  the no-op side (interceptors that only
 *                            proceed) with the same headers added by hand:
 *                            what gRPC charges for carrying the context
 *                            this way, none of ctxvar's work
 *   grpc_roundtrip_noop_headers_ratio  that / grpc_roundtrip_plain_ns: the
 *                            floor under grpc_roundtrip_ratio
 *   grpc_roundtrip_vs_noop_headers_ratio  grpc_roundtrip_ns /
 *                            grpc_roundtrip_noop_headers_ns: ctxvar's own
 *                            share (capture, inject, extract, the scopes,
 *                            Handle)
 *   grpc_roundtrip_cpu_ns, grpc_roundtrip_cpu_plain_ns, grpc_roundtrip_cpu_ratio
 *                            the CPU time of the process per call (client,
 *                            server and every gRPC thread: its pollers
 *                            included, which spin while they wait, so the
 *                            figure is near the wall time), for the first
 *                            two, in the same rounds: a second view of the
 *                            cost, which other jobs on the machine disturb
 *                            less than the round trip's wall time.
 *   grpc_roundtrip_sync_ns   the first call (with the context on both sides)
 *                            to a sync-API server (Echo::Service) whose
 *                            handler runs in Handle() (the sync path: the
 *                            call decoded in the handler, watched for a
 *                            cancellation while it runs); no server
 *                            interceptor (the sync path needs none)
 *   grpc_roundtrip_sync_plain_ns  the plain call to a sync-API server
 *   grpc_roundtrip_sync_ratio  grpc_roundtrip_sync_ns / grpc_roundtrip_sync_plain_ns
 * The sides are servers and channels in one process: a side's
 * threads and sockets can make it a few percent faster or slower than
 * another by themselves (the no-op side has come out faster than the plain
 * one), which bounds what the ratios can resolve.
 *
 * Each round makes a batch of calls one after the other, on a connection
 * made before the rounds; the contenders run in interleaved rounds
 * and the figures are medians, the ratios ratios of the medians (bench.h).
 */
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <ctxvar/grpc.hpp>

#include "bench_grpc.grpc.pb.h"

extern "C" {
#include "bench.h"
}

namespace {

namespace cg = ctxvar::grpc;
using ctxvar::bench::Echo;
using ctxvar::bench::EchoReply;
using ctxvar::bench::EchoRequest;

constexpr int64_t kScopeNs = 60 * 1000000000LL;

class EchoService final : public Echo::CallbackService {
  public:
    explicit EchoService(cg::ServerPropagation *ctxsrv) : ctxsrv_(ctxsrv) {}
    ::grpc::ServerUnaryReactor *Call(::grpc::CallbackServerContext *sc, const EchoRequest *req,
                                     EchoReply *resp) override {
        auto body = [&] {
            resp->set_payload(req->payload());
            auto *reactor = sc->DefaultReactor();
            reactor->Finish(::grpc::Status::OK);
            return reactor;
        };
        return ctxsrv_ ? ctxsrv_->Handle(sc, body) : body();
    }

  private:
    cg::ServerPropagation *ctxsrv_;
};

/* The same service on the sync API. */
class SyncEchoService final : public Echo::Service {
  public:
    explicit SyncEchoService(cg::ServerPropagation *ctxsrv) : ctxsrv_(ctxsrv) {}
    ::grpc::Status Call(::grpc::ServerContext *sc, const EchoRequest *req,
                        EchoReply *resp) override {
        auto body = [&] {
            resp->set_payload(req->payload());
            return ::grpc::Status::OK;
        };
        return ctxsrv_ ? ctxsrv_->Handle(sc, body) : body();
    }

  private:
    cg::ServerPropagation *ctxsrv_;
};

/* Interceptors that only proceed: gRPC's machinery, none of ours. */
class Noop final : public ::grpc::experimental::Interceptor {
  public:
    void Intercept(::grpc::experimental::InterceptorBatchMethods *methods) override {
        methods->Proceed();
    }
};
class NoopClientFactory final : public ::grpc::experimental::ClientInterceptorFactoryInterface {
    ::grpc::experimental::Interceptor *
    CreateClientInterceptor(::grpc::experimental::ClientRpcInfo *) override {
        return new Noop;
    }
};
class NoopServerFactory final : public ::grpc::experimental::ServerInterceptorFactoryInterface {
    ::grpc::experimental::Interceptor *
    CreateServerInterceptor(::grpc::experimental::ServerRpcInfo *) override {
        return new Noop;
    }
};

struct Side {
    std::unique_ptr<::grpc::Service> service;
    std::unique_ptr<::grpc::Server> server;
    std::unique_ptr<Echo::Stub> stub;
};

struct Bench {
    long calls = 0;
    long failures = 0;
    ctx_bench_samples_t cpu_with{}, cpu_plain{}; /* CPU ns per call, per round */
    int rounds_with = 0, rounds_plain = 0;       /* the first is the warm-up */
    EchoRequest request;
    ctx_context_t *context = nullptr; /* the calling context of the "with" side */
    Side with, plain, noop, sync_with, sync_plain;
};

int StrEncode(const void *value, char *buf, size_t cap, void *) {
    return snprintf(buf, cap, "%s", static_cast<const char *>(value));
}
int StrDecode(const char *text, size_t len, void **out, void *) {
    char *copy = static_cast<char *>(malloc(len + 1));
    if (!copy)
        return CTX_ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    *out = copy;
    return 0;
}
void StrRelease(void *value, void *) { free(value); }

/* A server for `side` (the callback service, or with `sync` the sync one;
 * ctxsrv's interceptor for the callback one, or no-op interceptors) and a
 * channel to it. */
int Start(Side *side, cg::ServerPropagation *ctxsrv, bool noop, bool sync,
          std::shared_ptr<::grpc::Channel> (*channel)(const std::string &, void *), void *arg) {
    if (sync)
        side->service.reset(new SyncEchoService(ctxsrv));
    else
        side->service.reset(new EchoService(ctxsrv));
    ::grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(side->service.get());
    std::vector<std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface>> f(1);
    if (ctxsrv && !sync && ctxsrv->NewInterceptorFactory(&f[0]) != 0)
        return -1;
    if (noop)
        f[0].reset(new NoopServerFactory);
    if (f[0])
        builder.experimental().SetInterceptorCreators(std::move(f));
    side->server = builder.BuildAndStart();
    if (!side->server || port <= 0)
        return -1;
    auto ch = channel("127.0.0.1:" + std::to_string(port), arg);
    if (!ch)
        return -1;
    side->stub = Echo::NewStub(ch);
    return 0;
}

std::shared_ptr<::grpc::Channel> WithChannel(const std::string &target, void *client) {
    std::shared_ptr<::grpc::Channel> ch;
    if (static_cast<cg::ClientPropagation *>(client)->NewChannel(
            target, ::grpc::InsecureChannelCredentials(), ::grpc::ChannelArguments(), &ch) != 0)
        return nullptr;
    return ch;
}

std::shared_ptr<::grpc::Channel> PlainChannel(const std::string &target, void *) {
    return ::grpc::CreateChannel(target, ::grpc::InsecureChannelCredentials());
}

std::shared_ptr<::grpc::Channel> NoopChannel(const std::string &target, void *) {
    std::vector<std::unique_ptr<::grpc::experimental::ClientInterceptorFactoryInterface>> f;
    f.emplace_back(new NoopClientFactory);
    return ::grpc::experimental::CreateCustomChannelWithInterceptors(
        target, ::grpc::InsecureChannelCredentials(), ::grpc::ChannelArguments(), std::move(f));
}

/* A batch of calls with the context, on `side`. */
void CallsWithOn(Bench *b, Side *side) {
    for (long i = 0; i < b->calls; i++) {
        ::grpc::ClientContext cc;
        cg::ApplyDeadline(&cc);
        EchoReply reply;
        if (!side->stub->Call(&cc, b->request, &reply).ok())
            b->failures++;
    }
}

void *CallsWith(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    CallsWithOn(b, &b->with);
    return nullptr;
}

void *CallsSyncWith(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    CallsWithOn(b, &b->sync_with);
    return nullptr;
}

uint64_t CpuNs() {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

/* Notes a round's CPU time per call (not the warm-up's). */
void NoteCpu(Bench *b, ctx_bench_samples_t *s, int *rounds, uint64_t cpu0) {
    if ((*rounds)++ > 0)
        ctx_bench_sample(s, static_cast<double>(CpuNs() - cpu0) / static_cast<double>(b->calls));
}

double RoundWith(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    uint64_t cpu0 = CpuNs(), t0 = ctx_bench_now_ns();
    ctx_context_run(b->context, CallsWith, b, nullptr); /* in the calling context */
    double ns = static_cast<double>(ctx_bench_now_ns() - t0) / static_cast<double>(b->calls);
    NoteCpu(b, &b->cpu_with, &b->rounds_with, cpu0);
    return ns;
}

/* A batch of calls without the context, on `side`. */
void CallsWithout(Bench *b, Side *side) {
    for (long i = 0; i < b->calls; i++) {
        ::grpc::ClientContext cc;
        cc.set_deadline(std::chrono::system_clock::now() + std::chrono::nanoseconds(kScopeNs));
        EchoReply reply;
        if (!side->stub->Call(&cc, b->request, &reply).ok())
            b->failures++;
    }
}

double RoundPlain(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    uint64_t cpu0 = CpuNs(), t0 = ctx_bench_now_ns();
    CallsWithout(b, &b->plain);
    double ns = static_cast<double>(ctx_bench_now_ns() - t0) / static_cast<double>(b->calls);
    NoteCpu(b, &b->cpu_plain, &b->rounds_plain, cpu0);
    return ns;
}

/* CallsWithout on `side`, with the with-side's headers added by hand: the
 * same traceparent shape (a new parent id per call, as a new span would
 * have) and the same baggage. */
double CallsWithHeaders(Bench *b, Side *side) {
    static unsigned long long span = 1;
    uint64_t t0 = ctx_bench_now_ns();
    for (long i = 0; i < b->calls; i++) {
        ::grpc::ClientContext cc;
        cc.set_deadline(std::chrono::system_clock::now() + std::chrono::nanoseconds(kScopeNs));
        char tp[64];
        snprintf(tp, sizeof tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-%016llx-01", span++);
        cc.AddMetadata("traceparent", tp);
        cc.AddMetadata("baggage", "tenant=acme");
        EchoReply reply;
        if (!side->stub->Call(&cc, b->request, &reply).ok())
            b->failures++;
    }
    return static_cast<double>(ctx_bench_now_ns() - t0) / static_cast<double>(b->calls);
}

double RoundHeaders(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    return CallsWithHeaders(b, &b->plain);
}

double RoundNoopHeaders(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    return CallsWithHeaders(b, &b->noop);
}

double RoundSyncWith(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    uint64_t t0 = ctx_bench_now_ns();
    ctx_context_run(b->context, CallsSyncWith, b, nullptr);
    return static_cast<double>(ctx_bench_now_ns() - t0) / static_cast<double>(b->calls);
}

double RoundSyncPlain(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    uint64_t t0 = ctx_bench_now_ns();
    CallsWithout(b, &b->sync_plain);
    return static_cast<double>(ctx_bench_now_ns() - t0) / static_cast<double>(b->calls);
}

double RoundNoop(void *arg) {
    auto *b = static_cast<Bench *>(arg);
    uint64_t t0 = ctx_bench_now_ns();
    CallsWithout(b, &b->noop);
    return static_cast<double>(ctx_bench_now_ns() - t0) / static_cast<double>(b->calls);
}

/* The calling context: a trace, a tenant, a scope with kScopeNs left. */
int MakeContext(ctx_wire_t *wire, ctx_var_t *tenant, ctx_context_t **out) {
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = kScopeNs;
    ctx_context_t *ctx;
    if (ctx_cancel_context_new(nullptr, &o, &ctx, nullptr) != 0)
        return -1;
    void *value;
    if (ctx_wire_trace_start(wire, ctx, CTX_WIRE_TRACE_FLAG_SAMPLED, nullptr) != 0 ||
        StrDecode("acme", 4, &value, nullptr) != 0) {
        ctx_context_release(ctx);
        return -1;
    }
    if (ctx_context_set(ctx, tenant, value) != 0) {
        free(value);
        ctx_context_release(ctx);
        return -1;
    }
    *out = ctx;
    return 0;
}

void Run(ctx_bench_t *bench) {
    ctx_value_ops_t ops = CTX_STRUCT_INIT(ctx_value_ops_t);
    ops.encode = StrEncode;
    ops.decode = StrDecode;
    ops.release = StrRelease;
    ctx_var_options_t vo = CTX_STRUCT_INIT(ctx_var_options_t);
    vo.ops = &ops;
    ctx_var_t *tenant = nullptr;
    ctx_wire_t *wire = nullptr;
    std::unique_ptr<cg::ClientPropagation> client;
    std::unique_ptr<cg::ServerPropagation> ctxsrv;
    Bench b;
    b.calls = ctx_bench_quick(bench) ? 200 : 1000;
    b.request.set_payload(std::string(64, 'x'));
    if (ctx_var_new("tenant", &vo, &tenant) != 0 || ctx_wire_new(&wire) != 0 ||
        ctx_wire_register(wire, tenant, "tenant") != 0 ||
        cg::ClientPropagation::Create(wire, nullptr, &client) != 0 ||
        cg::ServerPropagation::Create(wire, nullptr, &ctxsrv) != 0 ||
        MakeContext(wire, tenant, &b.context) != 0 ||
        Start(&b.with, ctxsrv.get(), false, false, WithChannel, client.get()) != 0 ||
        Start(&b.plain, nullptr, false, false, PlainChannel, nullptr) != 0 ||
        Start(&b.noop, nullptr, true, false, NoopChannel, nullptr) != 0 ||
        Start(&b.sync_with, ctxsrv.get(), false, true, WithChannel, client.get()) != 0 ||
        Start(&b.sync_plain, nullptr, false, true, PlainChannel, nullptr) != 0) {
        fprintf(stderr, "ctxvar_bench: grpc: could not set up the servers; section skipped\n");
    } else {
        ctx_bench_contender_t c[7] = {{"grpc with context", RoundWith, &b, {}},
                                      {"grpc plain", RoundPlain, &b, {}},
                                      {"grpc no-op interceptors", RoundNoop, &b, {}},
                                      {"grpc plain with the headers", RoundHeaders, &b, {}},
                                      {"grpc sync with context", RoundSyncWith, &b, {}},
                                      {"grpc sync plain", RoundSyncPlain, &b, {}},
                                      {"grpc no-op interceptors with the headers",
                                       RoundNoopHeaders, &b, {}}};
        ctx_bench_interleave(bench, c, 7);
        if (b.failures)
            fprintf(stderr, "ctxvar_bench: grpc: %ld calls failed\n", b.failures);
        ctx_bench_put_samples(bench, "grpc_roundtrip_ns", &c[0].samples, CTX_BENCH_NO_GOAL,
                              "unary call, loopback, both interceptors + Handle");
        ctx_bench_put_samples(bench, "grpc_roundtrip_plain_ns", &c[1].samples, CTX_BENCH_NO_GOAL,
                              "the same call, plain gRPC");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_ratio", &c[0].samples, &c[1].samples,
                            CTX_BENCH_AT_MOST(1.05), "with context / plain");
        ctx_bench_put_samples(bench, "grpc_roundtrip_noop_ns", &c[2].samples, CTX_BENCH_NO_GOAL,
                              "the same call, interceptors that only proceed");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_noop_ratio", &c[2].samples, &c[1].samples,
                            CTX_BENCH_NO_GOAL, "gRPC's interceptor machinery alone / plain");
        ctx_bench_put_samples(bench, "grpc_roundtrip_headers_ns", &c[3].samples, CTX_BENCH_NO_GOAL,
                              "the plain call with the same headers added by hand");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_vs_headers_ratio", &c[0].samples, &c[3].samples,
                            CTX_BENCH_NO_GOAL, "with context / plain with the same headers");
        ctx_bench_put_samples(bench, "grpc_roundtrip_noop_headers_ns", &c[6].samples,
                              CTX_BENCH_NO_GOAL, "no-op interceptors, the same headers by hand");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_noop_headers_ratio", &c[6].samples,
                            &c[1].samples, CTX_BENCH_NO_GOAL,
                            "gRPC's cost of carrying the context this way / plain");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_vs_noop_headers_ratio", &c[0].samples,
                            &c[6].samples, CTX_BENCH_NO_GOAL,
                            "with context / no-op interceptors with the headers: ctxvar's share");
        ctx_bench_put_samples(bench, "grpc_roundtrip_sync_ns", &c[4].samples, CTX_BENCH_NO_GOAL,
                              "unary call to a sync server, client interceptor + Handle");
        ctx_bench_put_samples(bench, "grpc_roundtrip_sync_plain_ns", &c[5].samples,
                              CTX_BENCH_NO_GOAL, "the same call to a sync server, plain gRPC");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_sync_ratio", &c[4].samples, &c[5].samples,
                            CTX_BENCH_NO_GOAL, "sync: with context / plain");
        ctx_bench_put_samples(bench, "grpc_roundtrip_cpu_ns", &b.cpu_with, CTX_BENCH_NO_GOAL,
                              "CPU per call (all threads), with context");
        ctx_bench_put_samples(bench, "grpc_roundtrip_cpu_plain_ns", &b.cpu_plain,
                              CTX_BENCH_NO_GOAL, "CPU per call (all threads), plain");
        ctx_bench_put_ratio(bench, "grpc_roundtrip_cpu_ratio", &b.cpu_with, &b.cpu_plain,
                            CTX_BENCH_NO_GOAL, "CPU with context / plain");
    }
    for (Side *side : {&b.with, &b.plain, &b.noop, &b.sync_with, &b.sync_plain}) {
        if (side->server) {
            side->server->Shutdown();
            side->server->Wait();
        }
        side->server.reset();
        side->stub.reset();
    }
    ctx_context_release(b.context);
    ctxsrv.reset();
    client.reset();
    ctx_wire_release(wire);
    ctx_var_release(tenant);
}

} // namespace

extern "C" void ctx_bench_grpc(ctx_bench_t *b) { Run(b); }
