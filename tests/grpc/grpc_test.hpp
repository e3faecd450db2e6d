/* SPDX-License-Identifier: MIT */
/*
 * grpc_test.hpp — what the grpc module's tests share (C++17, cmocka).
 *
 *   Env        one per process: a wire registry with two registered string
 *              variables (request-id, hop) and one that never crosses
 *              (secret), and a pool for the handlers' tasks.
 *   Node       the Chain service's behaviour (chain.proto), for a sync
 *              server (SyncChain) and a callback one (CallbackChain): a
 *              hop reports the context it runs in (Seen), optionally calls
 *              the next hop, optionally starts a slow pool task that steps
 *              until its scope is cancelled, noting when each step began;
 *              GetReport returns what the slow task and the call's scope
 *              did.
 *   servers    StartServer (127.0.0.1, a port the kernel picks), NewStub.
 *   callers    InScope (a scope entered for a test's calls), GetReport.
 *   growth     CheckOptionsGrowth, CheckStatsGrowth: the growth rule.
 *
 * Time: every timestamp is CLOCK_MONOTONIC (ctx_wire_now_ns), which every
 * process of the host shares, so the chain test compares them across
 * processes.  No test asserts a speed: waits are bounded loops, generous
 * under valgrind and TSan (SLOW).
 */
#ifndef CTX_GRPC_TEST_HPP
#define CTX_GRPC_TEST_HPP

#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <grpcpp/grpcpp.h>

#include "chain.grpc.pb.h" /* before cmocka, whose macros (fail, skip) it would meet */

/* pool.h and cancel.h declare a struct and a function of the same name
 * (ctx_pool_stats, ctx_cancel_stats), which g++'s -Wshadow reports. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include <ctxvar.h>
#include <ctxvar/cancel.h>
#include <ctxvar/grpc.hpp>
#include <ctxvar/pool.h>
#include <ctxvar/wire.h>
#pragma GCC diagnostic pop

extern "C" {
#include "ctx_test.h"
#include "support.h"
}

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(CTX_TEST_UNDER_VALGRIND)
#define SLOW 20
#elif defined(CTX_TEST_UNDER_TSAN) || defined(CTX_TEST_UNDER_ASAN)
#define SLOW 4
#else
#define SLOW 1
#endif
#define SCALED(n, valgrind, tsan) CTX_SCALED(n, valgrind, tsan)

namespace gt {

namespace cg = ctxvar::grpc;
using ctxvar::test::Chain;
using ctxvar::test::HopReply;
using ctxvar::test::HopRequest;
using ctxvar::test::Report;
using ctxvar::test::ReportRequest;
using ctxvar::test::Seen;

inline int64_t NowNs() { return ctx_wire_now_ns(); }

inline void SleepMs(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

/* Polls pred() every millisecond for up to timeout_ms (times SLOW). */
template <class P> bool WaitUntil(P pred, int64_t timeout_ms) {
    int64_t end = NowNs() + timeout_ms * SLOW * 1000000;
    while (!pred()) {
        if (NowNs() > end)
            return false;
        SleepMs(1);
    }
    return true;
}

/* gRPC's deadline of a call (gpr_timespec, any clock) on CLOCK_MONOTONIC;
 * 0: none. */
inline int64_t MonotonicDeadline(gpr_timespec deadline) {
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
        return 0;
    gpr_timespec left = gpr_time_sub(deadline, gpr_now(deadline.clock_type));
    return NowNs() + left.tv_sec * 1000000000 + left.tv_nsec;
}

/* gRPC's library state, held by a test from its setup to the end of its
 * teardown: the last release is a blocking shutdown, so gRPC has freed what
 * it keeps and joined its threads before valgrind and LeakSanitizer look
 * (without it, gRPC's shutdown runs on a thread of its own, racing the
 * process's exit). */
struct GrpcLibrary {
    GrpcLibrary() { grpc_init(); }
    ~GrpcLibrary() { grpc_shutdown_blocking(); }
};

/* ---- string variables ---- */

inline int StrEncode(const void *value, char *buf, size_t cap, void *) {
    return snprintf(buf, cap, "%s", static_cast<const char *>(value));
}
inline int StrDecode(const char *text, size_t len, void **out, void *) {
    char *copy = static_cast<char *>(malloc(len + 1));
    if (!copy)
        return CTX_ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    *out = copy;
    return 0;
}
inline void StrRelease(void *value, void *) { free(value); }

inline ctx_var_t *NewStrVar(const char *name) {
    static ctx_value_ops_t ops = [] {
        ctx_value_ops_t o = CTX_STRUCT_INIT(ctx_value_ops_t);
        o.encode = StrEncode;
        o.decode = StrDecode;
        o.release = StrRelease;
        return o;
    }();
    ctx_var_options_t options = CTX_STRUCT_INIT(ctx_var_options_t);
    options.ops = &ops;
    ctx_var_t *var = nullptr;
    if (ctx_var_new(name, &options, &var) != 0)
        return nullptr;
    return var;
}

/* Sets `var` to a copy of `text` in the current context. */
inline int SetStr(ctx_var_t *var, const std::string &text) {
    void *copy;
    int rc = StrDecode(text.data(), text.size(), &copy, nullptr);
    if (rc == 0 && (rc = ctx_var_set(var, copy, nullptr)) != 0)
        free(copy);
    return rc;
}

/* The value of `var` in the current context, "" if none. */
inline std::string GetStr(ctx_var_t *var) {
    void *value;
    return ctx_var_get(var, &value) == CTX_VALUE ? static_cast<const char *>(value) : "";
}

/* ---- the process's environment ---- */

struct Env {
    ctx_wire_t *wire = nullptr;
    ctx_var_t *request_id = nullptr, *hop = nullptr, *secret = nullptr;
    ctx_pool_t *pool = nullptr;

    int Init() {
        request_id = NewStrVar("request_id");
        hop = NewStrVar("hop");
        secret = NewStrVar("secret");
        if (!request_id || !hop || !secret || ctx_wire_new(&wire) != 0 ||
            ctx_wire_register(wire, request_id, "request-id") != 0 ||
            ctx_wire_register(wire, hop, "hop") != 0 || ctx_pool_new(nullptr, &pool) != 0)
            return -1;
        return 0;
    }
    void Release() {
        if (pool)
            ctx_pool_release(pool);
        ctx_wire_release(wire);
        ctx_var_release(request_id);
        ctx_var_release(hop);
        ctx_var_release(secret);
        pool = nullptr;
        wire = nullptr;
        request_id = hop = secret = nullptr;
    }

    /* The trace of the current context: 32 hex digits (and the parent-id),
     * "" if none. */
    std::string TraceId(std::string *parent_id = nullptr) const {
        ctx_wire_traceparent_t tp;
        if (ctx_wire_trace_get(wire, nullptr, &tp, nullptr, nullptr) != 0)
            return "";
        char id[33], span[17];
        ctx_wire_traceparent_trace_id(&tp, id, sizeof id);
        ctx_wire_traceparent_span_id(&tp, span, sizeof span);
        if (parent_id)
            *parent_id = span;
        return id;
    }
};

/* Runs the calling test in a fresh context of its own (entered until the
 * object goes). */
struct FreshContext {
    ctx_context_t *ctx = nullptr;
    FreshContext() {
        if (ctx_context_new(&ctx) != 0 || ctx_context_enter(ctx) != 0)
            fail_msg("cannot make a fresh context");
    }
    ~FreshContext() {
        ctx_context_exit(ctx);
        ctx_context_release(ctx);
    }
};

/* What the current context says, and what `sc`'s call carried. */
inline void Observe(Env &env, const char *who, ::grpc::ServerContextBase *sc, Seen *s) {
    s->set_who(who);
    s->set_started_ns(NowNs());
    s->set_request_id(GetStr(env.request_id));
    s->set_hop(GetStr(env.hop));
    std::string parent;
    s->set_trace_id(env.TraceId(&parent));
    s->set_parent_id(parent);
    s->set_scope_error(ctx_cancel_check());
    ctx_cancel_scope_t *scope;
    if (ctx_cancel_scope_current(&scope) == 0) {
        s->set_has_scope(true);
        int64_t deadline;
        if (ctx_cancel_scope_deadline(scope, &deadline) == 0) {
            s->set_has_deadline(true);
            s->set_deadline_ns(deadline);
        }
    }
    if (sc) {
        std::string lines;
        for (const auto &kv : sc->client_metadata()) {
            std::string name(kv.first.data(), kv.first.size());
            if (name == "user-agent")
                continue;
            lines += name + ": " + std::string(kv.second.data(), kv.second.size()) + "\n";
        }
        s->set_metadata(lines);
        s->set_server_deadline_ns(MonotonicDeadline(sc->raw_deadline()));
    }
}

/* The same two values, read by a pool task started here. */
inline void ObserveInTask(Env &env, Seen *s) {
    struct Args {
        Env *env;
        std::string request_id, trace_id;
    } args{&env, "", ""};
    auto task = [](void *arg, void **) -> int {
        auto *a = static_cast<Args *>(arg);
        a->request_id = GetStr(a->env->request_id);
        a->trace_id = a->env->TraceId();
        return 0;
    };
    ctx_pool_future_t *future;
    if (ctx_pool_submit(env.pool, task, &args, &future) != 0)
        return;
    ctx_pool_future_wait(future, CTX_WAIT_FOREVER);
    ctx_pool_future_release(future);
    s->set_task_request_id(args.request_id);
    s->set_task_trace_id(args.trace_id);
}

/* ---- a request's record: its scope's end, its slow task ---- */

struct Record {
    std::mutex mu;
    std::condition_variable cv;
    bool started = false, done = false;
    std::vector<int64_t> steps;
    std::atomic<int64_t> cancelled_ns{0};
    int task_error = 0;
    ctx_cancel_scope_t *scope = nullptr; /* retained */
    ctx_cancel_callback_t cb;
    bool registered = false;

    static void OnCancel(void *arg) { static_cast<Record *>(arg)->cancelled_ns.store(NowNs()); }

    /* Notes the current scope and when it is cancelled (once). */
    void Watch() {
        std::lock_guard<std::mutex> lock(mu);
        started = true;
        cv.notify_all();
        if (scope || ctx_cancel_scope_current(&scope) != 0)
            return;
        ctx_cancel_scope_retain(scope);
        registered = ctx_cancel_callback_init_wakeup(&cb, scope, OnCancel, this) >= 0;
    }
    void Finish(int error) {
        std::lock_guard<std::mutex> lock(mu);
        task_error = error;
        done = true;
        cv.notify_all();
    }
    ~Record() {
        if (registered)
            ctx_cancel_callback_clear(&cb);
        ctx_cancel_scope_release(scope);
    }
};

/* ---- the Chain service's behaviour ---- */

class Node {
  public:
    /* `server` may be null (the handlers then run in gRPC's thread's
     * context); `next` is the stub of the next hop, or null. */
    Node(Env &env, const char *who, cg::ServerPropagation *server, std::unique_ptr<Chain::Stub> next)
        : env_(env), who_(who), server_(server), next_(std::move(next)) {}

    Env &env() { return env_; }
    cg::ServerPropagation *server() { return server_; }
    bool last() const { return !next_; } /* slow tasks run on the last hop */
    std::atomic<int> hops{0}; /* Hop handlers that ran */

    std::shared_ptr<Record> RecordFor(const std::string &request_id) {
        std::lock_guard<std::mutex> lock(mu_);
        auto &r = records_[request_id];
        if (!r)
            r = std::make_shared<Record>();
        cv_.notify_all();
        return r;
    }

    /* The handler of a hop, in the call's context. */
    ::grpc::Status Hop(::grpc::ServerContextBase *sc, const HopRequest *req, HopReply *resp,
                       std::shared_ptr<Record> *record) {
        hops++;
        Seen *s = resp->add_seen();
        Observe(env_, who_, sc, s);
        ObserveInTask(env_, s);
        std::shared_ptr<Record> rec;
        if (!s->request_id().empty()) {
            rec = RecordFor(s->request_id());
            rec->Watch();
        }
        if (record)
            *record = rec;
        if (req->throw_error())
            throw std::runtime_error("the handler failed on purpose");
        if (next_) {
            SetStr(env_.hop, who_); /* this hop's own baggage, for the next */
            ::grpc::ClientContext cc;
            if (req->b_timeout_ms())
                cc.set_deadline(std::chrono::system_clock::now() +
                                std::chrono::milliseconds(req->b_timeout_ms()));
            cg::ApplyDeadline(&cc);
            HopRequest forward = *req;
            forward.set_b_timeout_ms(0);
            HopReply reply;
            ::grpc::Status st = next_->Hop(&cc, forward, &reply);
            for (const auto &seen : reply.seen())
                *resp->add_seen() = seen;
            if (!st.ok()) {
                if (rec)
                    rec->Finish(ctx_cancel_check());
                return st;
            }
        }
        if (req->sleep_ms()) {
            int err = ctx_cancel_sleep(req->sleep_ms() * 1000000);
            if (rec)
                rec->Finish(err);
            if (err)
                return ::grpc::Status(err == CTX_EDEADLINE ? ::grpc::StatusCode::DEADLINE_EXCEEDED
                                                           : ::grpc::StatusCode::CANCELLED,
                                      "the handler's scope was cancelled");
        } else if (rec && !(req->slow() && last())) {
            rec->Finish(0);
        }
        return ::grpc::Status::OK;
    }

    /* The slow task: steps of 2 ms, each noting when it began and asking
     * ctx_cancel_check() first, until the scope is cancelled; then
     * done(status) (on the pool thread).  Runs in a copy of the current
     * context (the pool's propagation).  A task whose scope ends before a
     * worker reaches it never starts (the pool skips it): its arg_release
     * then finishes the record and the call, with the scope's error. */
    int StartSlow(std::shared_ptr<Record> rec, std::function<void(::grpc::Status)> done,
                  ctx_pool_future_t **future) {
        struct Task {
            std::shared_ptr<Record> rec;
            std::function<void(::grpc::Status)> done;
            bool ran;
            void End(int err) {
                rec->Finish(err);
                done(::grpc::Status(err == CTX_EDEADLINE ? ::grpc::StatusCode::DEADLINE_EXCEEDED
                                                         : ::grpc::StatusCode::CANCELLED,
                                    ran ? "the slow task was cancelled"
                                        : "the slow task was cancelled before it started"));
            }
        };
        auto *t = new Task{std::move(rec), std::move(done), false};
        auto run = [](void *arg, void **) -> int {
            Task *task = static_cast<Task *>(arg);
            task->ran = true;
            Record &r = *task->rec;
            {
                std::lock_guard<std::mutex> lock(r.mu);
                r.started = true;
                r.cv.notify_all();
            }
            int err = 0;
            for (int i = 0; i < 20000; i++) { /* 40 s at most: a broken test */
                int64_t began = NowNs();
                if ((err = ctx_cancel_check()) != 0)
                    break;
                {
                    std::lock_guard<std::mutex> lock(r.mu);
                    r.steps.push_back(began);
                }
                SleepMs(2);
            }
            task->End(err ? err : CTX_ETIMEDOUT);
            return 0;
        };
        auto release = [](void *arg) {
            std::unique_ptr<Task> task(static_cast<Task *>(arg));
            if (task->ran)
                return;
            ctx_cancel_scope_t *scope = task->rec->scope;
            int err = scope ? ctx_cancel_scope_error(scope) : 0;
            task->End(err ? err : CTX_ECANCELLED);
        };
        ctx_pool_submit_options_t o = CTX_STRUCT_INIT(ctx_pool_submit_options_t);
        o.arg_release = +release;
        int rc = ctx_pool_submit_ex(env_.pool, run, t, &o, future);
        if (rc != 0)
            delete t;
        return rc;
    }

    void GetReport(const ReportRequest *req, Report *out) {
        std::shared_ptr<Record> rec;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait_for(lock, std::chrono::seconds(30 * SLOW),
                         [&] { return records_.count(req->request_id()) != 0; });
            auto it = records_.find(req->request_id());
            if (it == records_.end())
                return;
            rec = it->second;
        }
        out->set_found(true);
        {
            std::unique_lock<std::mutex> lock(rec->mu);
            rec->cv.wait_for(lock, std::chrono::seconds(30 * SLOW), [&] {
                return req->wait_started() ? rec->started : rec->done;
            });
        }
        /* The scope ends when the call does, a moment after the task; its
         * callbacks (ours among them) run a moment after it reports it. */
        if (!req->wait_started() && rec->scope) {
            WaitUntil([&] { return ctx_cancel_scope_error(rec->scope) != 0; }, 30000);
            if (rec->registered)
                WaitUntil([&] { return rec->cancelled_ns.load() != 0; }, 30000);
        }
        std::lock_guard<std::mutex> lock(rec->mu);
        out->set_started(rec->started);
        out->set_done(rec->done);
        out->set_steps(static_cast<int>(rec->steps.size()));
        int64_t cancelled = rec->cancelled_ns.load();
        out->set_cancelled_ns(cancelled);
        int late = 0;
        for (int64_t t : rec->steps)
            late += cancelled && t >= cancelled;
        out->set_late_steps(late);
        if (!rec->steps.empty()) {
            out->set_first_step_ns(rec->steps.front());
            out->set_last_step_ns(rec->steps.back());
        }
        out->set_task_error(rec->task_error);
        if (rec->scope) {
            ctx_cancel_cause_t cause = CTX_STRUCT_INIT(ctx_cancel_cause_t);
            out->set_scope_error(ctx_cancel_scope_cause(rec->scope, &cause));
            out->set_cause_code(cause.code);
        }
    }

  private:
    Env &env_;
    const char *who_;
    cg::ServerPropagation *server_;
    std::unique_ptr<Chain::Stub> next_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::map<std::string, std::shared_ptr<Record>> records_;
};

/* The Chain service on the sync API. */
class SyncChain final : public Chain::Service {
  public:
    explicit SyncChain(Node *node) : node_(node) {}
    ::grpc::Status Hop(::grpc::ServerContext *sc, const HopRequest *req, HopReply *resp) override {
        auto body = [&]() -> ::grpc::Status {
            if (!req->slow() || !node_->last())
                return node_->Hop(sc, req, resp, nullptr);
            std::shared_ptr<Record> rec;
            node_->Hop(sc, req, resp, &rec);
            if (!rec)
                return ::grpc::Status(::grpc::StatusCode::INVALID_ARGUMENT, "slow needs a request id");
            ::grpc::Status status;
            ctx_pool_future_t *future;
            if (node_->StartSlow(rec, [&status](::grpc::Status s) { status = s; }, &future) != 0)
                return ::grpc::Status(::grpc::StatusCode::RESOURCE_EXHAUSTED, "submit");
            ctx_pool_future_wait(future, CTX_WAIT_FOREVER);
            ctx_pool_future_release(future);
            return status;
        };
        try {
            if (!node_->server())
                return body();
            return node_->server()->Handle(sc, body);
        } catch (const std::exception &e) {
            return ::grpc::Status(::grpc::StatusCode::INTERNAL, e.what());
        }
    }
    ::grpc::Status GetReport(::grpc::ServerContext *, const ReportRequest *req,
                             Report *resp) override {
        node_->GetReport(req, resp);
        return ::grpc::Status::OK;
    }

  private:
    Node *node_;
};

/* The Chain service on the callback API: a slow hop returns at once and
 * its task finishes the call. */
class CallbackChain final : public Chain::CallbackService {
  public:
    explicit CallbackChain(Node *node) : node_(node) {}
    ::grpc::ServerUnaryReactor *Hop(::grpc::CallbackServerContext *sc, const HopRequest *req,
                                    HopReply *resp) override {
        auto body = [&]() -> ::grpc::ServerUnaryReactor * {
            auto *reactor = sc->DefaultReactor();
            ::grpc::Status status;
            std::shared_ptr<Record> rec;
            bool slow = req->slow() && node_->last();
            try {
                status = node_->Hop(sc, req, resp, slow ? &rec : nullptr);
            } catch (const std::exception &e) {
                status = ::grpc::Status(::grpc::StatusCode::INTERNAL, e.what());
            }
            if (slow && status.ok() && rec) {
                ctx_pool_future_t *future;
                if (node_->StartSlow(rec, [reactor](::grpc::Status s) { reactor->Finish(s); },
                                     &future) == 0) {
                    ctx_pool_future_release(future);
                    return reactor; /* the task finishes the call */
                }
                status = ::grpc::Status(::grpc::StatusCode::RESOURCE_EXHAUSTED, "submit");
            }
            reactor->Finish(status);
            return reactor;
        };
        if (!node_->server())
            return body();
        return node_->server()->Handle(sc, body);
    }
    ::grpc::ServerUnaryReactor *GetReport(::grpc::CallbackServerContext *sc,
                                          const ReportRequest *req, Report *resp) override {
        /* Waits: on a thread of its own, not gRPC's callback threads. */
        auto *reactor = sc->DefaultReactor();
        std::lock_guard<std::mutex> lock(mu_);
        threads_.emplace_back([this, reactor, req, resp] {
            node_->GetReport(req, resp);
            reactor->Finish(::grpc::Status::OK);
        });
        return reactor;
    }
    ~CallbackChain() override {
        for (auto &t : threads_)
            t.join();
    }

  private:
    Node *node_;
    std::mutex mu_;
    std::vector<std::thread> threads_;
};

/* ---- servers and stubs ---- */

struct TestServer {
    std::unique_ptr<::grpc::Server> server;
    int port = 0;

    /* Starts a server on 127.0.0.1 (a port the kernel picks) with
     * `service` and, if `ctxsrv` is given, its interceptor. */
    int Start(::grpc::Service *service, cg::ServerPropagation *ctxsrv) {
        ::grpc::ServerBuilder builder;
        builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port);
        builder.RegisterService(service);
        if (ctxsrv) {
            std::vector<std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface>> f(1);
            if (ctxsrv->NewInterceptorFactory(&f[0]) != 0)
                return -1;
            builder.experimental().SetInterceptorCreators(std::move(f));
        }
        server = builder.BuildAndStart();
        return server && port > 0 ? 0 : -1;
    }
    void Stop() {
        if (server) {
            server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
            server->Wait();
            server.reset();
        }
    }
    ~TestServer() { Stop(); }
};

/* A stub to 127.0.0.1:port, through `client`'s interceptor (null: none). */
inline std::unique_ptr<Chain::Stub> NewStub(cg::ClientPropagation *client, int port) {
    std::string target = "127.0.0.1:" + std::to_string(port);
    std::shared_ptr<::grpc::Channel> channel;
    if (client) {
        if (client->NewChannel(target, ::grpc::InsecureChannelCredentials(),
                               ::grpc::ChannelArguments(), &channel) != 0)
            return nullptr;
    } else {
        channel = ::grpc::CreateChannel(target, ::grpc::InsecureChannelCredentials());
    }
    return Chain::NewStub(channel);
}

/* ---- the growth rule ---- */

/* P::Create(wire, options, out) under the growth rule: an older caller's
 * options (only `size`, smaller than the 1.0 layout) and a newer caller's
 * with a non-zero tail are refused and make nothing; a newer caller's with
 * a zero tail is accepted. */
template <class P, class O> void CheckOptionsGrowth(ctx_wire_t *wire) {
    std::unique_ptr<P> p;
    O small;
    small.size = sizeof(size_t);
    ASSERT_RC(P::Create(wire, &small, &p), CTX_EINVAL);
    assert_null(p.get());
    struct Bigger {
        O o;
        uint64_t more;
    } big;
    big.o.size = sizeof big;
    big.more = 3;
    ASSERT_RC(P::Create(wire, &big.o, &p), CTX_EINVAL);
    assert_null(p.get());
    big.more = 0;
    ASSERT_RC(P::Create(wire, &big.o, &p), 0);
    assert_non_null(p.get());
}

/* p->Stats(out) under the growth rule: an older caller's struct (`size`
 * and the first counter, `calls`) gets that counter and nothing past it;
 * a size too small for `size` itself, or no struct, is CTX_EINVAL.  No call
 * may run meanwhile (the counters are compared). */
template <class S, class P> void CheckStatsGrowth(const P *p) {
    struct Small {
        size_t size;
        uint64_t calls;
        uint64_t guard;
    } s;
    s.size = offsetof(Small, guard);
    s.calls = UINT64_MAX;
    s.guard = 0xfeedface;
    ASSERT_RC(p->Stats(reinterpret_cast<S *>(&s)), 0);
    S full;
    ASSERT_RC(p->Stats(&full), 0);
    assert_true(s.calls == full.calls);
    assert_int_equal(s.guard, 0xfeedface);
    s.size = 0;
    ASSERT_RC(p->Stats(reinterpret_cast<S *>(&s)), CTX_EINVAL);
    ASSERT_RC(p->Stats(nullptr), CTX_EINVAL);
}

/* Enters a child of the current scope (if any) with `timeout_ns` (0: no
 * deadline of its own) in the current context; leaves it when destroyed. */
struct InScope {
    ctx_cancel_scope_t *scope = nullptr;
    ctx_token_t *token = nullptr;
    explicit InScope(int64_t timeout_ns) {
        ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
        o.timeout_ns = timeout_ns;
        if (ctx_cancel_enter_child(&o, &scope, &token) != 0)
            fail_msg("cannot enter a scope");
    }
    int64_t Deadline() const {
        int64_t d = 0;
        ctx_cancel_scope_deadline(scope, &d);
        return d;
    }
    ~InScope() {
        ctx_cancel_exit(token);
        ctx_cancel_scope_release(scope);
    }
};

/* Asks `stub` for the report of `request_id` (`started`: as soon as its slow
 * task has started; else once it has ended); fails the test if there is none. */
inline Report GetReport(Chain::Stub *stub, const std::string &request_id, bool started) {
    ::grpc::ClientContext cc;
    ReportRequest req;
    req.set_request_id(request_id);
    req.set_wait_started(started);
    Report report;
    ::grpc::Status st = stub->GetReport(&cc, req, &report);
    if (!st.ok() || !report.found())
        fail_msg("no report for %s: %s", request_id.c_str(), st.error_message().c_str());
    return report;
}

/* The line "name: value" of a Seen's metadata, or "". */
inline std::string Header(const Seen &s, const std::string &name) {
    std::string key = name + ": ";
    size_t at = s.metadata().find(key);
    if (at == std::string::npos || (at && s.metadata()[at - 1] != '\n'))
        return "";
    size_t end = s.metadata().find('\n', at);
    return s.metadata().substr(at + key.size(), end - at - key.size());
}

} // namespace gt

#endif /* CTX_GRPC_TEST_HPP */
