/* SPDX-License-Identifier: MIT */
/* A program outside the source tree: grpc (C++17).  The client side makes
 * a channel with its interceptor and gives a ClientContext the time left of
 * a context's scope; the server side makes its interceptor factory and runs
 * a handler in a call's context (a ServerContext made by hand: no
 * network). */
#include <chrono>
#include <cstdio>
#include <memory>

#include <ctxvar/grpc.hpp>

int main() {
    ctx_wire_t *wire;
    if (ctx_wire_new(&wire) != 0)
        return 1;
    std::unique_ptr<ctxvar::grpc::ClientPropagation> client;
    std::unique_ptr<ctxvar::grpc::ServerPropagation> server;
    std::shared_ptr<grpc::Channel> channel;
    if (ctxvar::grpc::ClientPropagation::Create(wire, nullptr, &client) != 0 ||
        ctxvar::grpc::ServerPropagation::Create(wire, nullptr, &server) != 0 ||
        client->NewChannel("127.0.0.1:1", grpc::InsecureChannelCredentials(),
                           grpc::ChannelArguments(), &channel) != 0) /* connects lazily */
        return 1;

    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = 5000000000; /* the request has 5 s */
    ctx_context_t *request;
    if (ctx_cancel_context_new(nullptr, &o, &request, nullptr) != 0)
        return 1;
    grpc::ClientContext cc;
    int applied = ctxvar::grpc::ApplyDeadline(&cc, request);
    auto left = cc.deadline() - std::chrono::system_clock::now();
    ctx_context_release(request);
    if (applied != 1 || left <= std::chrono::seconds(0) || left > std::chrono::seconds(5))
        return 1;

    std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> factory;
    grpc::ServerContext call; /* no metadata, no deadline */
    int scoped = -1;
    grpc::Status status = server->Handle(&call, [&] {
        ctx_cancel_scope_t *scope;
        scoped = ctx_cancel_scope_current(&scope); /* the call's scope */
        return grpc::Status::OK;
    });
    if (server->NewInterceptorFactory(&factory) != 0 || !status.ok() || scoped != 0)
        return 1;

    factory.reset();
    channel.reset();
    client.reset();
    server.reset();
    ctx_wire_release(wire);
    ctx_cancel_timer_release();
    ctx_thread_release();
    printf("grpc: a deadline %lld ms away, a handler in its call's scope\n",
           (long long)std::chrono::duration_cast<std::chrono::milliseconds>(left).count());
    return 0;
}
