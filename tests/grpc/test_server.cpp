/* SPDX-License-Identifier: MIT */
/*
 * test_server.cpp — the server side (ServerPropagation), in one process:
 * a sync server and a callback server with the interceptor, a callback
 * server without it, called over loopback by plain gRPC clients that write
 * the headers themselves (so only the server side is under test), and
 * Handle() called directly with ServerContexts made by hand.
 */
#include "grpc_test.hpp"

using namespace gt;

namespace {

const char kTrace[] = "0af7651916cd43dd8448eb211c80319c";
const char kSpan[] = "b7ad6b7169203331";

struct World {
    GrpcLibrary library; /* first made, last gone */
    Env env;
    std::unique_ptr<cg::ServerPropagation> ctxsrv;
    std::unique_ptr<Node> sync_node, cb_node, bare_node;
    std::unique_ptr<SyncChain> sync_service;
    std::unique_ptr<CallbackChain> cb_service, bare_service;
    TestServer sync_server, cb_server, bare_server;
    std::unique_ptr<Chain::Stub> sync_stub, cb_stub, bare_stub;
};
World *w;

int setup(void **) {
    w = new World;
    cg::ServerOptions o;
    o.poll_interval_ns = 2000000; /* 2 ms: the sync tests wait less */
    if (w->env.Init() != 0 || cg::ServerPropagation::Create(w->env.wire, &o, &w->ctxsrv) != 0)
        return -1;
    w->sync_node.reset(new Node(w->env, "sync", w->ctxsrv.get(), nullptr));
    w->cb_node.reset(new Node(w->env, "callback", w->ctxsrv.get(), nullptr));
    w->bare_node.reset(new Node(w->env, "bare", w->ctxsrv.get(), nullptr));
    w->sync_service.reset(new SyncChain(w->sync_node.get()));
    w->cb_service.reset(new CallbackChain(w->cb_node.get()));
    w->bare_service.reset(new CallbackChain(w->bare_node.get()));
    if (w->sync_server.Start(w->sync_service.get(), w->ctxsrv.get()) != 0 ||
        w->cb_server.Start(w->cb_service.get(), w->ctxsrv.get()) != 0 ||
        w->bare_server.Start(w->bare_service.get(), nullptr) != 0) /* no interceptor */
        return -1;
    w->sync_stub = NewStub(nullptr, w->sync_server.port);
    w->cb_stub = NewStub(nullptr, w->cb_server.port);
    w->bare_stub = NewStub(nullptr, w->bare_server.port);
    return 0;
}

int teardown(void **) {
    w->sync_server.Stop();
    w->cb_server.Stop();
    w->bare_server.Stop();
    w->sync_stub.reset();
    w->cb_stub.reset();
    w->bare_stub.reset();
    w->sync_service.reset();
    w->cb_service.reset();
    w->bare_service.reset();
    w->sync_node.reset();
    w->cb_node.reset();
    w->bare_node.reset();
    w->ctxsrv.reset();
    w->env.Release();
    delete w;
    ctx_cancel_timer_release();
    ctx_thread_release();
    return 0;
}

/* A client context carrying the trace and the request id, by hand. */
void AddHeaders(::grpc::ClientContext *cc, const std::string &request_id,
                const std::string &trace = kTrace) {
    cc->AddMetadata("traceparent", "00-" + trace + "-" + kSpan + "-01");
    cc->AddMetadata("baggage", "request-id=" + request_id + ",secret=nope");
}

cg::ServerStats Stats() {
    cg::ServerStats s;
    ASSERT_RC(w->ctxsrv->Stats(&s), 0);
    return s;
}

/* The handler's context is the call's: values, trace, a scope with the
 * call's deadline; a pool task it starts sees the same; after the call the
 * scope has ended as "finished". */
void check_context(Chain::Stub *stub, const std::string &request_id) {
    ::grpc::ClientContext cc;
    AddHeaders(&cc, request_id);
    int64_t before = NowNs();
    cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    HopRequest req;
    HopReply reply;
    ::grpc::Status st = stub->Hop(&cc, req, &reply);
    int64_t after = NowNs();
    assert_true(st.ok());
    assert_int_equal(reply.seen_size(), 1);
    const Seen &s = reply.seen(0);
    assert_string_equal(s.request_id().c_str(), request_id.c_str());
    assert_string_equal(s.trace_id().c_str(), kTrace);
    assert_string_equal(s.parent_id().c_str(), kSpan);
    assert_string_equal(s.task_request_id().c_str(), request_id.c_str());
    assert_string_equal(s.task_trace_id().c_str(), kTrace);
    assert_true(s.has_scope());
    assert_int_equal(s.scope_error(), 0);
    assert_true(s.has_deadline());
    /* The scope's deadline is gRPC's deadline of the call: 30 s after the
     * call began, give or take gRPC's rounding (a millisecond clock at each
     * end, 1% up when sent) and the time the call took. */
    for (int64_t d : {s.deadline_ns(), s.server_deadline_ns()})
        if (d < before + 30000000000LL - 2000000 || d > after + 30300000000LL)
            fail_msg("a deadline %lld ns after the call began, which took %lld ns",
                     (long long)(d - before), (long long)(after - before));
    Report r = GetReport(stub, request_id, false);
    assert_int_equal(r.scope_error(), CTX_ECANCELLED);
    assert_int_equal(r.cause_code(), cg::kCauseCallFinished);
}

void sync_handler_runs_in_call_context(void **) {
    uint64_t finished = Stats().calls_finished;
    check_context(w->sync_stub.get(), "sync-context");
    assert_true(Stats().calls_finished > finished);
}

void callback_handler_runs_in_call_context(void **) {
    uint64_t finished = Stats().calls_finished;
    check_context(w->cb_stub.get(), "callback-context");
    assert_true(Stats().calls_finished > finished);
}

/* A call without headers or deadline: a context with a scope and nothing
 * else. */
void call_without_context(void **) {
    ::grpc::ClientContext cc;
    HopRequest req;
    HopReply reply;
    assert_true(w->cb_stub->Hop(&cc, req, &reply).ok());
    const Seen &s = reply.seen(0);
    assert_string_equal(s.request_id().c_str(), "");
    assert_string_equal(s.trace_id().c_str(), "");
    assert_true(s.has_scope());
    assert_false(s.has_deadline());
}

/* The client cancels while the handler waits: the handler's scope is
 * cancelled (sync: by the watcher; callback: by the interceptor's hook),
 * with kCauseCallCancelled, and what waited on it wakes up. */
void client_cancel(Chain::Stub *stub, const std::string &request_id, bool slow) {
    ::grpc::ClientContext cc;
    AddHeaders(&cc, request_id);
    HopRequest req;
    req.set_slow(slow);
    req.set_sleep_ms(slow ? 0 : 60000);
    HopReply reply;
    ::grpc::Status st;
    std::thread caller([&] { st = stub->Hop(&cc, req, &reply); });
    Report started = GetReport(stub, request_id, true);
    assert_true(started.started());
    int64_t cancelled_at = NowNs();
    cc.TryCancel();
    caller.join();
    assert_int_equal(st.error_code(), ::grpc::StatusCode::CANCELLED);
    Report r = GetReport(stub, request_id, false);
    assert_true(r.done());
    assert_int_equal(r.task_error(), CTX_ECANCELLED);
    assert_int_equal(r.scope_error(), CTX_ECANCELLED);
    assert_int_equal(r.cause_code(), cg::kCauseCallCancelled);
    if (r.cancelled_ns() < cancelled_at)
        fail_msg("the scope was cancelled %lld us before the client cancelled (task error %d)",
                 (long long)(cancelled_at - r.cancelled_ns()) / 1000, r.task_error());
    assert_int_equal(r.late_steps(), 0);
}

/* The server counts a call (ServerStats) a moment after its scope ends,
 * and the reports wait for the scope only: the counts are awaited. */
void sync_client_cancel_wakes_handler(void **) {
    uint64_t polls = Stats().watcher_polls, cancelled = Stats().calls_cancelled;
    client_cancel(w->sync_stub.get(), "sync-cancel", false);
    assert_true(Stats().watcher_polls > polls); /* the watcher found it */
    assert_true(WaitUntil([&] { return Stats().calls_cancelled > cancelled; }, 30000));
}

/* The same after a pause longer than the watcher's linger (1 s): the
 * watcher has gone idle, and only the call's Add() wakes it (every other
 * call finds it ticking); it must still find the cancellation. */
void sync_client_cancel_after_idle_watcher(void **) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    uint64_t polls = Stats().watcher_polls, cancelled = Stats().calls_cancelled;
    client_cancel(w->sync_stub.get(), "sync-cancel-idle", false);
    assert_true(Stats().watcher_polls > polls);
    assert_true(WaitUntil([&] { return Stats().calls_cancelled > cancelled; }, 30000));
}

void callback_client_cancel_stops_task(void **) {
    uint64_t cancelled = Stats().calls_cancelled;
    client_cancel(w->cb_stub.get(), "callback-cancel", true);
    assert_true(WaitUntil([&] { return Stats().calls_cancelled > cancelled; }, 30000));
}

/* The call's deadline passes: the scope ends then, and what waited on it
 * wakes up.  It reports CTX_EDEADLINE — unless the cancellation the
 * client's own gRPC sends at its copy of the deadline arrives first,
 * earlier than the server's copy by more than the slack (transit and
 * rounding, under load): then kCauseCallCancelled, still at the deadline. */
void deadline(Chain::Stub *stub, const std::string &request_id, bool slow) {
    ::grpc::ClientContext cc;
    AddHeaders(&cc, request_id);
    int64_t timeout = 200 * 1000000LL * SLOW;
    int64_t client_deadline = NowNs() + timeout;
    cc.set_deadline(std::chrono::system_clock::now() + std::chrono::nanoseconds(timeout));
    HopRequest req;
    req.set_slow(slow);
    req.set_sleep_ms(slow ? 0 : 60000);
    HopReply reply;
    ::grpc::Status st = stub->Hop(&cc, req, &reply);
    assert_int_equal(st.error_code(), ::grpc::StatusCode::DEADLINE_EXCEEDED);
    Report r = GetReport(stub, request_id, false);
    assert_true(r.done());
    assert_int_equal(r.late_steps(), 0);
    assert_int_equal(r.task_error(), r.scope_error());
    if (r.scope_error() != CTX_EDEADLINE) {
        assert_int_equal(r.scope_error(), CTX_ECANCELLED);
        assert_int_equal(r.cause_code(), cg::kCauseCallCancelled);
        print_message("the client's cancellation came first, %+lld us after the client's "
                      "deadline\n", (long long)(r.cancelled_ns() - client_deadline) / 1000);
    }
    assert_true(r.cancelled_ns() >= client_deadline - 3000000); /* gRPC's rounding */
}

/* The server counted one more call ended by its deadline or a cancel than
 * `before` did (awaited: see sync_client_cancel_wakes_handler). */
bool ended_by_deadline_or_cancel_since(const cg::ServerStats &before) {
    return WaitUntil(
        [&] {
            cg::ServerStats now = Stats();
            return now.calls_deadline + now.calls_cancelled >
                   before.calls_deadline + before.calls_cancelled;
        },
        30000);
}

void sync_deadline(void **) {
    cg::ServerStats before = Stats();
    deadline(w->sync_stub.get(), "sync-deadline", false);
    assert_true(ended_by_deadline_or_cancel_since(before));
}

void callback_deadline(void **) {
    cg::ServerStats before = Stats();
    deadline(w->cb_stub.get(), "callback-deadline", true);
    assert_true(ended_by_deadline_or_cancel_since(before));
}

/* Without the interceptor, Handle decodes the call itself. */
void callback_without_interceptor(void **) {
    uint64_t n = Stats().calls_without_interceptor;
    ::grpc::ClientContext cc;
    AddHeaders(&cc, "bare-1");
    HopRequest req;
    HopReply reply;
    assert_true(w->bare_stub->Hop(&cc, req, &reply).ok());
    assert_string_equal(reply.seen(0).request_id().c_str(), "bare-1");
    assert_string_equal(reply.seen(0).task_trace_id().c_str(), kTrace);
    assert_true(Stats().calls_without_interceptor > n);
}

/* A handler that throws: INTERNAL to the client (SyncChain catches what
 * Handle rethrows), the server keeps serving. */
void handler_exception(void **) {
    for (Chain::Stub *stub : {w->sync_stub.get(), w->cb_stub.get()}) {
        ::grpc::ClientContext cc;
        AddHeaders(&cc, "throws");
        HopRequest req;
        req.set_throw_error(true);
        HopReply reply;
        ::grpc::Status st = stub->Hop(&cc, req, &reply);
        assert_int_equal(st.error_code(), ::grpc::StatusCode::INTERNAL);
        assert_true(st.error_message().find("on purpose") != std::string::npos);
    }
    check_context(w->sync_stub.get(), "after-throw");
}

/* Eight callers at once, each in its own context: every handler and every
 * pool task it starts sees its own caller's values. */
void concurrent_callers(void **) {
    const int callers = 8, calls = SCALED(25, 3, 6);
    std::atomic<int> wrong{0}, failed{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < callers; i++)
        threads.emplace_back([&, i] {
            for (int j = 0; j < calls; j++) {
                char id[64], trace[33];
                snprintf(id, sizeof id, "caller-%d-%d", i, j);
                snprintf(trace, sizeof trace, "%016x%016x", i + 1, j + 1);
                Chain::Stub *stub = (i + j) % 2 ? w->sync_stub.get() : w->cb_stub.get();
                ::grpc::ClientContext cc;
                AddHeaders(&cc, id, trace);
                HopRequest req;
                HopReply reply;
                if (!stub->Hop(&cc, req, &reply).ok() || reply.seen_size() != 1) {
                    failed++;
                    continue;
                }
                const Seen &s = reply.seen(0);
                if (s.request_id() != id || s.task_request_id() != id || s.trace_id() != trace ||
                    s.task_trace_id() != trace)
                    wrong++;
            }
        });
    for (auto &t : threads)
        t.join();
    assert_int_equal(failed.load(), 0);
    assert_int_equal(wrong.load(), 0);
}

/* ---- Handle() called directly ---- */

/* A sync handler run by hand: the context is entered only for the
 * handler, sets stay in it, the scope ends "finished" when it returns, an
 * exception comes out after the context is left. */
void handle_sync_by_hand(void **) {
    FreshContext fresh;
    ::grpc::ServerContext sc; /* no call: no metadata, no deadline */
    ctx_context_t *outer;
    ctx_context_copy_current(&outer);
    ctx_cancel_scope_t *scope = nullptr;
    int runs = 0;
    ::grpc::Status st = w->ctxsrv->Handle(&sc, [&] {
        runs++;
        ctx_cancel_scope_t *s;
        assert_int_equal(ctx_cancel_scope_current(&s), 0);
        scope = ctx_cancel_scope_retain(s);
        assert_int_equal(ctx_cancel_check(), 0);
        SetStr(w->env.request_id, "set-inside");
        return ::grpc::Status(::grpc::StatusCode::ABORTED, "mine");
    });
    assert_int_equal(runs, 1);
    assert_int_equal(st.error_code(), ::grpc::StatusCode::ABORTED);
    assert_string_equal(GetStr(w->env.request_id).c_str(), ""); /* stayed inside */
    ctx_cancel_scope_t *now;
    assert_int_equal(ctx_cancel_scope_current(&now), CTX_ENOTFOUND);
    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
    assert_int_equal(ctx_cancel_scope_cause(scope, &cause), CTX_ECANCELLED);
    assert_int_equal(cause.code, cg::kCauseCallFinished);
    assert_non_null(cause.data);
    ctx_cancel_scope_release(scope);

    bool caught = false;
    try {
        w->ctxsrv->Handle(&sc, []() -> ::grpc::Status { throw std::runtime_error("boom"); });
    } catch (const std::runtime_error &e) {
        caught = std::string(e.what()) == "boom";
    }
    assert_true(caught);
    ctx_context_t *after;
    ctx_context_copy_current(&after);
    assert_int_equal(ctx_context_length(after), ctx_context_length(outer));
    ctx_context_release(after);
    ctx_context_release(outer);
}

/* The callback overload: each run a fresh copy (no sets carried over);
 * void and non-void results. */
void handle_callback_by_hand(void **) {
    ::grpc::CallbackServerContext sc;
    uint64_t n = Stats().calls_without_interceptor;
    int value = w->ctxsrv->Handle(&sc, [&] {
        SetStr(w->env.hop, "first");
        return 42;
    });
    assert_int_equal(value, 42);
    std::string seen = "unset";
    w->ctxsrv->Handle(&sc, [&] { seen = GetStr(w->env.hop); });
    assert_string_equal(seen.c_str(), "");
    assert_true(Stats().calls_without_interceptor >= n + 2);
}

/* NewCallContext: the decoded context, not entered, with its scope. */
void new_call_context(void **) {
    ::grpc::ServerContext sc;
    ctx_context_t *ctx;
    ASSERT_RC(w->ctxsrv->NewCallContext(&sc, &ctx), 0);
    ctx_cancel_scope_t *scope;
    ASSERT_RC(ctx_cancel_scope_get(ctx, &scope), 0);
    assert_int_equal(ctx_cancel_scope_error(scope), 0);
    int64_t deadline;
    ASSERT_RC(ctx_cancel_scope_deadline(scope, &deadline), CTX_ENOTFOUND);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    ctx_cancel_scope_release(scope);
    ctx_context_release(ctx);
    ASSERT_RC(w->ctxsrv->NewCallContext(nullptr, &ctx), CTX_EINVAL);
    ASSERT_RC(w->ctxsrv->NewCallContext(&sc, nullptr), CTX_EINVAL);
}

/* ---- the growth rule, arguments ---- */

void options_and_stats(void **) {
    std::unique_ptr<cg::ServerPropagation> p;
    ASSERT_RC(cg::ServerPropagation::Create(nullptr, nullptr, &p), CTX_EINVAL);
    ASSERT_RC(cg::ServerPropagation::Create(w->env.wire, nullptr, nullptr), CTX_EINVAL);
    cg::ServerOptions bad;
    bad.poll_interval_ns = -1;
    ASSERT_RC(cg::ServerPropagation::Create(w->env.wire, &bad, &p), CTX_EINVAL);
    assert_null(p.get());

    CheckOptionsGrowth<cg::ServerPropagation, cg::ServerOptions>(w->env.wire);
    CheckStatsGrowth<cg::ServerStats>(w->ctxsrv.get());
    ASSERT_RC(w->ctxsrv->NewInterceptorFactory(nullptr), CTX_EINVAL);
}

/* ---- out of memory ---- */

/* Every allocation of Create, and of a call (the interceptor's decode on a
 * gRPC thread, Handle's), failed in turn: Create says CTX_ENOMEM and
 * leaks nothing; a call is always answered, its handler run once, in its
 * context or (counted) in an empty one. */
void allocation_failures(void **) {
    long base = 0;
    ctx_test_alloc_install();
    base = ctx_test_alloc_live_blocks();
    for (long n = 1;; n++) {
        std::unique_ptr<cg::ServerPropagation> p;
        ctx_test_alloc_fail_nth(n);
        int rc = cg::ServerPropagation::Create(w->env.wire, nullptr, &p);
        bool fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            break;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_null(p.get());
        assert_int_equal(ctx_test_alloc_live_blocks(), base);
    }
    int swept = 0;
    for (long n = 1; n < 200; n++) {
        bool any = false;
        for (Chain::Stub *stub : {w->sync_stub.get(), w->cb_stub.get()}) {
            uint64_t failures = Stats().decode_failures;
            std::string id = "oom-" + std::to_string(n);
            ::grpc::ClientContext cc;
            AddHeaders(&cc, id);
            HopRequest req;
            HopReply reply;
            ctx_test_alloc_fail_nth(n);
            ::grpc::Status st = stub->Hop(&cc, req, &reply);
            bool fired = ctx_test_alloc_fired();
            ctx_test_alloc_fail_nth(0);
            assert_true(st.ok());
            assert_int_equal(reply.seen_size(), 1);
            any = any || fired;
            /* The context made it, or the handler ran in an empty one
             * (counted); a failure later (a pool submit) loses only that. */
            if (reply.seen(0).request_id() != id) {
                assert_true(fired);
                assert_true(Stats().decode_failures > failures);
                assert_string_equal(reply.seen(0).trace_id().c_str(), "");
            }
        }
        if (!any)
            break;
        swept++;
    }
    assert_true(swept > 0);
    ctx_test_alloc_uninstall();
}

} // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sync_handler_runs_in_call_context),
        cmocka_unit_test(callback_handler_runs_in_call_context),
        cmocka_unit_test(call_without_context),
        cmocka_unit_test(sync_client_cancel_wakes_handler),
        cmocka_unit_test(sync_client_cancel_after_idle_watcher),
        cmocka_unit_test(callback_client_cancel_stops_task),
        cmocka_unit_test(sync_deadline),
        cmocka_unit_test(callback_deadline),
        cmocka_unit_test(callback_without_interceptor),
        cmocka_unit_test(handler_exception),
        cmocka_unit_test(concurrent_callers),
        cmocka_unit_test(handle_sync_by_hand),
        cmocka_unit_test(handle_callback_by_hand),
        cmocka_unit_test(new_call_context),
        cmocka_unit_test(options_and_stats),
        cmocka_unit_test(allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
