/* SPDX-License-Identifier: MIT */
/*
 * test_client.cpp — the client side (ClientPropagation, ApplyDeadline), in
 * one process, against two servers on 127.0.0.1: a "raw" sync server with
 * no ctxvar at all, whose handler reports the metadata and deadline gRPC
 * delivered (what the client really sent), and a sync server with
 * ServerPropagation, whose handlers wait on their scope (what a
 * cancellation did on the other side).
 */
#include "grpc_test.hpp"

using namespace gt;

namespace {

struct World {
    GrpcLibrary library; /* first made, last gone */
    Env env;
    std::unique_ptr<cg::ClientPropagation> client;
    std::unique_ptr<cg::ServerPropagation> ctxsrv;
    std::unique_ptr<Node> raw_node, ctx_node;
    std::unique_ptr<SyncChain> raw_service, ctx_service;
    TestServer raw_server, ctx_server;
    std::unique_ptr<Chain::Stub> raw, ctx, ctx_plain; /* ctx_plain: no interceptor */
};
World *w;

int setup(void **) {
    w = new World;
    if (w->env.Init() != 0 || cg::ClientPropagation::Create(w->env.wire, nullptr, &w->client) != 0)
        return -1;
    cg::ServerOptions o;
    o.poll_interval_ns = 2000000;
    if (cg::ServerPropagation::Create(w->env.wire, &o, &w->ctxsrv) != 0)
        return -1;
    w->raw_node.reset(new Node(w->env, "raw", nullptr, nullptr));
    w->ctx_node.reset(new Node(w->env, "ctx", w->ctxsrv.get(), nullptr));
    w->raw_service.reset(new SyncChain(w->raw_node.get()));
    w->ctx_service.reset(new SyncChain(w->ctx_node.get()));
    if (w->raw_server.Start(w->raw_service.get(), nullptr) != 0 ||
        w->ctx_server.Start(w->ctx_service.get(), w->ctxsrv.get()) != 0)
        return -1;
    w->raw = NewStub(w->client.get(), w->raw_server.port);
    w->ctx = NewStub(w->client.get(), w->ctx_server.port);
    w->ctx_plain = NewStub(nullptr, w->ctx_server.port);
    return w->raw && w->ctx && w->ctx_plain ? 0 : -1;
}

int teardown(void **) {
    w->raw_server.Stop();
    w->ctx_server.Stop();
    w->raw.reset();
    w->ctx.reset();
    w->ctx_plain.reset();
    w->raw_service.reset();
    w->ctx_service.reset();
    w->raw_node.reset();
    w->ctx_node.reset();
    w->client.reset();
    w->ctxsrv.reset();
    w->env.Release();
    delete w;
    ctx_cancel_timer_release();
    ctx_thread_release();
    return 0;
}

cg::ClientStats Stats() {
    cg::ClientStats s;
    ASSERT_RC(w->client->Stats(&s), 0);
    return s;
}

/* One raw hop; what the server saw. */
Seen RawHop(::grpc::ClientContext *cc, ::grpc::Status *status = nullptr) {
    HopRequest req;
    HopReply reply;
    ::grpc::Status st = w->raw->Hop(cc, req, &reply);
    if (status)
        *status = st;
    else if (!st.ok())
        fail_msg("raw hop: %s", st.error_message().c_str());
    return reply.seen_size() ? reply.seen(0) : Seen();
}

Report GetReport(const std::string &request_id, bool started) {
    ::grpc::ClientContext cc;
    ReportRequest req;
    req.set_request_id(request_id);
    req.set_wait_started(started);
    Report report;
    ::grpc::Status st = w->ctx_plain->GetReport(&cc, req, &report);
    if (!st.ok() || !report.found())
        fail_msg("no report for %s", request_id.c_str());
    return report;
}

/* The call carries the calling context: a child traceparent (same trace,
 * a new span id), the tracestate, registered variables as baggage, nothing
 * unregistered, no grpc-timeout header of ours. */
void injects_calling_context(void **) {
    FreshContext fresh;
    ctx_wire_traceparent_t tp;
    ASSERT_RC(ctx_wire_trace_start(w->env.wire, nullptr, CTX_WIRE_TRACE_FLAG_SAMPLED, &tp), 0);
    ASSERT_RC(ctx_wire_trace_set(w->env.wire, nullptr, &tp, "vendor=abc", 10), 0);
    std::string span;
    std::string trace = w->env.TraceId(&span);
    SetStr(w->env.request_id, "req-42");
    SetStr(w->env.secret, "do-not-send");
    uint64_t calls = Stats().calls;
    ::grpc::ClientContext cc;
    Seen s = RawHop(&cc);
    std::string sent = Header(s, "traceparent");
    assert_int_equal(sent.size(), CTX_WIRE_TRACEPARENT_LEN);
    assert_true(sent.compare(3, 32, trace) == 0);          /* the same trace */
    assert_true(sent.compare(36, 16, span) != 0);          /* a new span */
    assert_string_equal(sent.substr(53).c_str(), "03");     /* sampled, random */
    assert_string_equal(Header(s, "tracestate").c_str(), "vendor=abc");
    assert_string_equal(Header(s, "baggage").c_str(), "request-id=req-42");
    assert_true(s.metadata().find("do-not-send") == std::string::npos);
    assert_true(s.metadata().find("grpc-timeout") == std::string::npos);
    assert_int_equal(s.server_deadline_ns(), 0); /* no scope: no deadline */
    assert_int_equal(Stats().calls, calls + 1);

    /* A second call: another span, same trace. */
    ::grpc::ClientContext cc2;
    std::string again = Header(RawHop(&cc2), "traceparent");
    assert_true(again.compare(3, 32, trace) == 0);
    assert_true(again.compare(36, 16, sent.substr(36, 16)) != 0);
}

/* An empty context sends nothing. */
void empty_context_sends_nothing(void **) {
    FreshContext fresh;
    ::grpc::ClientContext cc;
    Seen s = RawHop(&cc);
    assert_string_equal(Header(s, "traceparent").c_str(), "");
    assert_string_equal(Header(s, "baggage").c_str(), "");
}

/* CTX_WIRE_SAME_PARENT: the context's traceparent as it is. */
void same_parent_option(void **) {
    FreshContext fresh;
    cg::ClientOptions o;
    o.inject_flags = CTX_WIRE_SAME_PARENT;
    std::unique_ptr<cg::ClientPropagation> same;
    ASSERT_RC(cg::ClientPropagation::Create(w->env.wire, &o, &same), 0);
    auto stub = NewStub(same.get(), w->raw_server.port);
    ctx_wire_trace_start(w->env.wire, nullptr, 0, nullptr);
    std::string span, trace = w->env.TraceId(&span);
    ::grpc::ClientContext cc;
    HopRequest req;
    HopReply reply;
    assert_true(stub->Hop(&cc, req, &reply).ok());
    std::string sent = Header(reply.seen(0), "traceparent");
    assert_true(sent.compare(3, 32, trace) == 0);
    assert_true(sent.compare(36, 16, span) == 0);
}

/* ApplyDeadline: the scope's time left becomes the call's deadline. */
void apply_deadline(void **) {
    FreshContext fresh;
    ASSERT_RC(cg::ApplyDeadline(nullptr), CTX_EINVAL);
    {
        ::grpc::ClientContext cc; /* no scope: nothing */
        ASSERT_RC(cg::ApplyDeadline(&cc), 0);
        assert_int_equal(RawHop(&cc).server_deadline_ns(), 0);
    }
    {
        InScope no_deadline(0); /* a scope without deadline: nothing */
        ::grpc::ClientContext cc;
        ASSERT_RC(cg::ApplyDeadline(&cc), 0);
    }
    {
        /* Under a second, gRPC sends the timeout in whole milliseconds
         * (above, rounded up to 3 significant digits: 10 ms units up to
         * 10 s, ...), and measures it at each end. */
        InScope s(900 * 1000000LL);
        ::grpc::ClientContext cc;
        int64_t before = NowNs();
        ASSERT_RC(cg::ApplyDeadline(&cc), 1);
        int64_t got = RawHop(&cc).server_deadline_ns();
        int64_t elapsed = NowNs() - before;
        if (got < s.Deadline() - 2000000 || got > s.Deadline() + elapsed + 2000000)
            fail_msg("server deadline %lld, scope's %lld, call took %lld ns", (long long)got,
                     (long long)s.Deadline(), (long long)elapsed);
    }
    {
        InScope s(20 * 1000000000LL); /* the ClientContext's is earlier: kept */
        ::grpc::ClientContext cc;
        cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        ASSERT_RC(cg::ApplyDeadline(&cc), 0);
        int64_t got = RawHop(&cc).server_deadline_ns();
        assert_true(got < s.Deadline() - 10 * 1000000000LL);
    }
    {
        ctx_context_t *other; /* an explicit context */
        ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
        o.timeout_ns = 30 * 1000000000LL;
        ASSERT_RC(ctx_cancel_context_new(nullptr, &o, &other, nullptr), 0);
        ::grpc::ClientContext cc;
        ASSERT_RC(cg::ApplyDeadline(&cc, other), 1);
        assert_true(RawHop(&cc).server_deadline_ns() > NowNs() + 20 * 1000000000LL);
        ctx_context_release(other);
    }
    {
        InScope s(-1); /* passed already: gRPC fails the call, nothing sent */
        int hops = w->raw_node->hops.load();
        ::grpc::ClientContext cc;
        ASSERT_RC(cg::ApplyDeadline(&cc), 1);
        ::grpc::Status st;
        RawHop(&cc, &st);
        assert_int_equal(st.error_code(), ::grpc::StatusCode::DEADLINE_EXCEEDED);
        assert_int_equal(w->raw_node->hops.load(), hops);
    }
}

/* The calling scope is cancelled during the call: the call is cancelled
 * (its status says the context did it), and so is the server's scope. */
void scope_cancel_cancels_call(void **) {
    FreshContext fresh;
    ctx_cancel_scope_t *scope;
    ASSERT_RC(ctx_cancel_scope_new(nullptr, nullptr, &scope), 0);
    uint64_t cancelled = Stats().calls_cancelled;
    ::grpc::Status st;
    std::thread caller([&] {
        ctx_context_t *ctx;
        ctx_context_new(&ctx);
        ctx_context_enter(ctx);
        ctx_token_t *tok;
        ctx_cancel_enter(scope, &tok);
        SetStr(w->env.request_id, "client-cancel");
        ::grpc::ClientContext cc;
        HopRequest req;
        req.set_sleep_ms(60000);
        HopReply reply;
        st = w->ctx->Hop(&cc, req, &reply);
        ctx_cancel_exit(tok);
        ctx_context_exit(ctx);
        ctx_context_release(ctx);
        ctx_thread_release();
    });
    assert_true(GetReport("client-cancel", true).started());
    ctx_cancel_scope_cancel(scope, nullptr);
    caller.join();
    assert_int_equal(st.error_code(), ::grpc::StatusCode::CANCELLED);
    assert_true(st.error_message().find("ctxvar") != std::string::npos);
    Report r = GetReport("client-cancel", false);
    assert_int_equal(r.task_error(), CTX_ECANCELLED);
    assert_int_equal(r.cause_code(), cg::kCauseCallCancelled);
    assert_int_equal(Stats().calls_cancelled, cancelled + 1);
    ctx_cancel_scope_release(scope);
}

/* A scope deadline without ApplyDeadline: the interceptor still ends the
 * call at the deadline, and the status says DEADLINE_EXCEEDED; the server,
 * which had no deadline, sees a cancellation. */
void scope_deadline_without_apply(void **) {
    FreshContext fresh;
    SetStr(w->env.request_id, "deadline-no-apply");
    ::grpc::Status st;
    {
        InScope s(150 * 1000000LL * SLOW);
        ::grpc::ClientContext cc; /* no ApplyDeadline */
        HopRequest req;
        req.set_sleep_ms(60000);
        HopReply reply;
        st = w->ctx->Hop(&cc, req, &reply);
    }
    assert_int_equal(st.error_code(), ::grpc::StatusCode::DEADLINE_EXCEEDED);
    assert_true(st.error_message().find("ctxvar") != std::string::npos);
    Report r = GetReport("deadline-no-apply", false);
    assert_int_equal(r.task_error(), CTX_ECANCELLED);
    assert_int_equal(r.cause_code(), cg::kCauseCallCancelled);
}

/* A scope cancelled before the call: nothing is sent. */
void cancelled_scope_sends_nothing(void **) {
    FreshContext fresh;
    InScope s(0);
    ctx_cancel_scope_cancel(s.scope, nullptr);
    int hops = w->raw_node->hops.load();
    ::grpc::ClientContext cc;
    ::grpc::Status st;
    RawHop(&cc, &st);
    assert_int_equal(st.error_code(), ::grpc::StatusCode::CANCELLED);
    assert_true(st.error_message().find("ctxvar") != std::string::npos);
    assert_int_equal(w->raw_node->hops.load(), hops);
}

/* The callback client API: the context of the thread that makes the call. */
void callback_api_call(void **) {
    FreshContext fresh;
    ctx_wire_trace_start(w->env.wire, nullptr, 0, nullptr);
    std::string trace = w->env.TraceId();
    SetStr(w->env.request_id, "async-1");
    ::grpc::ClientContext cc;
    HopRequest req;
    HopReply reply;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    ::grpc::Status st;
    w->raw->async()->Hop(&cc, &req, &reply, [&](::grpc::Status s) {
        std::lock_guard<std::mutex> lock(mu);
        st = s;
        done = true;
        cv.notify_all();
    });
    SetStr(w->env.request_id, "changed-after"); /* too late to matter */
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    assert_true(st.ok());
    assert_string_equal(Header(reply.seen(0), "baggage").c_str(), "request-id=async-1");
    assert_true(Header(reply.seen(0), "traceparent").compare(3, 32, trace) == 0);
}

/* ---- the growth rule, arguments ---- */

void options_and_stats(void **) {
    std::unique_ptr<cg::ClientPropagation> p;
    ASSERT_RC(cg::ClientPropagation::Create(nullptr, nullptr, &p), CTX_EINVAL);
    ASSERT_RC(cg::ClientPropagation::Create(w->env.wire, nullptr, nullptr), CTX_EINVAL);
    cg::ClientOptions bad;
    bad.inject_flags = CTX_WIRE_STRICT; /* an extract flag */
    ASSERT_RC(cg::ClientPropagation::Create(w->env.wire, &bad, &p), CTX_EINVAL);
    CheckOptionsGrowth<cg::ClientPropagation, cg::ClientOptions>(w->env.wire);
    CheckStatsGrowth<cg::ClientStats>(w->client.get());
    ASSERT_RC(w->client->NewInterceptorFactory(nullptr), CTX_EINVAL);
    std::shared_ptr<::grpc::Channel> channel;
    ASSERT_RC(w->client->NewChannel("127.0.0.1:1", nullptr, ::grpc::ChannelArguments(), &channel),
              CTX_EINVAL);
    ASSERT_RC(w->client->NewChannel("127.0.0.1:1", ::grpc::InsecureChannelCredentials(),
                                    ::grpc::ChannelArguments(), nullptr),
              CTX_EINVAL);
}

/* ---- out of memory ---- */

/* Every allocation of Create, NewInterceptorFactory and of a call failed in
 * turn: CTX_ENOMEM and nothing leaked, or a call that goes out without the
 * context (counted), never a failed call. */
void allocation_failures(void **) {
    FreshContext fresh;
    ctx_wire_trace_start(w->env.wire, nullptr, 0, nullptr);
    ctx_test_alloc_install();
    long base = ctx_test_alloc_live_blocks();
    for (long n = 1;; n++) {
        std::unique_ptr<cg::ClientPropagation> p;
        std::unique_ptr<::grpc::experimental::ClientInterceptorFactoryInterface> f;
        ctx_test_alloc_fail_nth(n);
        int rc = cg::ClientPropagation::Create(w->env.wire, nullptr, &p);
        if (rc == 0)
            rc = p->NewInterceptorFactory(&f);
        bool fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            break;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        f.reset();
        p.reset();
        assert_int_equal(ctx_test_alloc_live_blocks(), base);
    }
    int swept = 0;
    for (long n = 1; n < 100; n++) {
        uint64_t failures = Stats().inject_failures;
        ::grpc::ClientContext cc;
        ctx_test_alloc_fail_nth(n);
        ::grpc::Status st;
        Seen s = RawHop(&cc, &st);
        bool fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        assert_true(st.ok());
        if (!fired)
            break;
        swept++;
        if (Header(s, "traceparent").empty())
            assert_true(Stats().inject_failures > failures);
    }
    assert_true(swept > 0);
    ctx_test_alloc_uninstall();
}

} // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(injects_calling_context),
        cmocka_unit_test(empty_context_sends_nothing),
        cmocka_unit_test(same_parent_option),
        cmocka_unit_test(apply_deadline),
        cmocka_unit_test(scope_cancel_cancels_call),
        cmocka_unit_test(scope_deadline_without_apply),
        cmocka_unit_test(cancelled_scope_sends_nothing),
        cmocka_unit_test(callback_api_call),
        cmocka_unit_test(options_and_stats),
        cmocka_unit_test(allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
