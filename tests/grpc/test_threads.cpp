/* SPDX-License-Identifier: MIT */
/*
 * test_threads.cpp — the server side's own concurrency, without a network:
 * Handle() called from 8 threads at once with ServerContexts made by hand
 * (no call behind them: no metadata, no deadline, never cancelled), the
 * watcher polling them every 100 us while they run, ServerPropagations
 * made and dropped meanwhile.  No gRPC thread takes part, so this is the
 * grpc test that runs under TSan too (tests/grpc/CMakeLists.txt: why the
 * others do not).
 */
#include "grpc_test.hpp"

using namespace gt;

namespace {

GrpcLibrary *library;
Env env;

int setup(void **) {
    library = new GrpcLibrary;
    return env.Init();
}

int teardown(void **) {
    env.Release();
    delete library;
    ctx_cancel_timer_release();
    ctx_thread_release();
    return 0;
}

/* Eight threads run sync and callback handlers through one
 * ServerPropagation: each handler sees a scope of its own, its sets stay in
 * its call, the watcher polls the sync ones while they wait; every call is
 * counted, and every sync call's scope ends "finished". */
void handlers_from_eight_threads(void **) {
    cg::ServerOptions o;
    o.poll_interval_ns = 100000; /* 100 us: the watcher is always busy */
    std::unique_ptr<cg::ServerPropagation> p;
    ASSERT_RC(cg::ServerPropagation::Create(env.wire, &o, &p), 0);
    const int threads = 8, calls = SCALED(200, 20, 40);
    std::atomic<int> wrong{0};
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; i++)
        pool.emplace_back([&, i] {
            for (int j = 0; j < calls; j++) {
                std::string mine = std::to_string(i) + "-" + std::to_string(j);
                ctx_cancel_scope_t *scope = nullptr;
                if (j % 2 == 0) {
                    ::grpc::ServerContext sc;
                    ::grpc::Status st = p->Handle(&sc, [&] {
                        ctx_cancel_scope_t *s;
                        if (ctx_cancel_scope_current(&s) != 0 || GetStr(env.hop) != "")
                            wrong++;
                        scope = ctx_cancel_scope_retain(s);
                        SetStr(env.hop, mine);
                        ctx_cancel_sleep(200000); /* the watcher polls meanwhile */
                        if (GetStr(env.hop) != mine || ctx_cancel_check() != 0)
                            wrong++;
                        return ::grpc::Status::OK;
                    });
                    ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
                    if (!st.ok() || ctx_cancel_scope_cause(scope, &cause) != CTX_ECANCELLED ||
                        cause.code != cg::kCauseCallFinished)
                        wrong++;
                } else {
                    ::grpc::CallbackServerContext sc;
                    p->Handle(&sc, [&] {
                        if (ctx_cancel_scope_current(&scope) != 0 || GetStr(env.hop) != "")
                            wrong++;
                        ctx_cancel_scope_retain(scope);
                        SetStr(env.hop, mine);
                    });
                }
                ctx_cancel_scope_release(scope);
            }
            ctx_thread_release();
        });
    /* Meanwhile: ServerPropagations made, used once, dropped (their
     * watcher started and stopped). */
    for (int k = 0; k < SCALED(50, 5, 10); k++) {
        std::unique_ptr<cg::ServerPropagation> other;
        ASSERT_RC(cg::ServerPropagation::Create(env.wire, &o, &other), 0);
        ::grpc::ServerContext sc;
        other->Handle(&sc, [] { return ::grpc::Status::OK; });
    }
    for (auto &t : pool)
        t.join();
    assert_int_equal(wrong.load(), 0);
    cg::ServerStats stats;
    ASSERT_RC(p->Stats(&stats), 0);
    assert_int_equal(stats.calls, threads * calls);
    assert_int_equal(stats.calls_finished, threads * calls / 2); /* the sync ones */
    assert_int_equal(stats.calls_cancelled + stats.calls_deadline + stats.decode_failures, 0);
    assert_int_equal(stats.calls_without_interceptor, threads * calls / 2);
    assert_true(stats.watcher_polls > 0);
}

/* A scope ended from two threads at once (the watcher and the handler's
 * end, in a real server) ends once: the cause is one of the two, counted
 * once. */
void scope_cancelled_while_handler_runs(void **) {
    std::unique_ptr<cg::ServerPropagation> p;
    ASSERT_RC(cg::ServerPropagation::Create(env.wire, nullptr, &p), 0);
    const int n = SCALED(200, 20, 50);
    for (int i = 0; i < n; i++) {
        ::grpc::ServerContext sc;
        std::atomic<ctx_cancel_scope_t *> scope{nullptr};
        std::thread canceller;
        p->Handle(&sc, [&] {
            ctx_cancel_scope_t *s;
            ctx_cancel_scope_current(&s);
            ctx_cancel_scope_retain(s);
            scope = s;
            canceller = std::thread([&] {
                ctx_cancel_scope_cancel(scope.load(), nullptr);
                ctx_thread_release();
            });
            return ::grpc::Status::OK;
        });
        canceller.join();
        ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
        ASSERT_RC(ctx_cancel_scope_cause(scope.load(), &cause), CTX_ECANCELLED);
        assert_true(cause.code == 0 || cause.code == cg::kCauseCallFinished);
        ctx_cancel_scope_release(scope.load());
    }
    cg::ServerStats stats;
    ASSERT_RC(p->Stats(&stats), 0);
    assert_int_equal(stats.calls, n);
    assert_int_equal(stats.calls_finished + stats.calls_cancelled, n);
}

} // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handlers_from_eight_threads),
        cmocka_unit_test(scope_cancelled_while_handler_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
