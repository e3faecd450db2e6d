/* SPDX-License-Identifier: MIT */
/*
 * grpc_chain.cpp — two gRPC services and a client, every hop in its
 * caller's context: the deadline cuts off the slow branch.
 *
 *   client ──Search──▶ frontend (sync API) ──Lookup "fast"──▶ backend (callback API)
 *                                          └─Lookup "slow"──▶ backend
 *
 * The client starts a trace, sets the request id (it crosses as baggage)
 * and gives the request 2 s.  The frontend gives its fan-out a budget of
 * 300 ms — a child of the request's scope, so it could only be shorter —
 * and asks both shards at once (callback-API calls, started in its
 * context).  Each shard works on a thread started in the handler's context
 * (ctx_pool_thread_create), in steps of 10 ms, asking ctx_cancel_check()
 * before each: the fast shard needs 3 steps, the slow one 100.  The backend
 * knew the 300 ms from the start (ApplyDeadline sent it as the call's
 * deadline); when they run out, its scope ends and the slow shard stops
 * after the step it is in, while the frontend's interceptor cancels the
 * call.  The frontend answers with what it has and names the shard that
 * was cut off.  Every log line shows the request id and trace id the code
 * that writes it sees, and the time its context has left.
 *
 * The services run in this process, on two loopback ports, to keep the
 * example one program; in two processes they work the same
 * (tests/grpc/test_chain.cpp runs three).  Exits with 0 when everything
 * happened as told above (ctest runs it: example_grpc_chain).
 *
 * Build it like any gRPC program, plus ctxvar-grpc:
 *   c++ -std=c++17 grpc_chain.cpp search.pb.cc search.grpc.pb.cc \
 *       $(pkg-config --cflags --libs ctxvar-grpc protobuf)
 */
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpc/grpc.h>

#include "search.grpc.pb.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow" /* pool.h: ctx_pool_stats, struct and function */
#include <ctxvar.h>
#include <ctxvar/grpc.hpp>
#include <ctxvar/pool.h>
#pragma GCC diagnostic pop

namespace cg = ctxvar::grpc;
using ctxvar::example::Items;
using ctxvar::example::Query;
using ctxvar::example::Results;

namespace {

ctx_wire_t *wire;
ctx_var_t *request_id;
std::unique_ptr<cg::ServerPropagation> propagation; /* both servers' */
int64_t start_ns;

/* ---- a log line that says which request it is for ---- */

std::mutex log_mutex;

void Log(const char *who, const char *format, ...) {
    void *id = nullptr;
    ctx_var_get(request_id, &id);
    ctx_wire_traceparent_t tp;
    char trace[33] = "no trace";
    if (ctx_wire_trace_get(wire, nullptr, &tp, nullptr, nullptr) == 0)
        ctx_wire_traceparent_trace_id(&tp, trace, sizeof trace);
    trace[8] = '\0'; /* enough to tell traces apart */
    int64_t left;
    char budget[32] = "no deadline";
    if (ctx_cancel_remaining(&left) == 0)
        snprintf(budget, sizeof budget, "%4lld ms left", (long long)(left / 1000000));
    char text[256];
    va_list ap;
    va_start(ap, format);
    vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    std::lock_guard<std::mutex> lock(log_mutex);
    printf("%6.1f ms  %-8s [%s %s, %s]  %s\n", (ctx_wire_now_ns() - start_ns) / 1e6, who,
           id ? static_cast<const char *>(id) : "-", trace, budget, text);
    fflush(stdout);
}

/* ---- the backend: a shard's work on a thread of its own ---- */

struct Outcome {
    std::atomic<int> slow_error{1}; /* what stopped the slow shard (1: not yet) */
    std::atomic<int> slow_steps{0};
    std::atomic<int> fast_steps{0};
} outcome;

struct Job {
    ::grpc::ServerUnaryReactor *reactor;
    std::string shard;
    Items *out;
    int steps;
};

void *Work(void *arg) { /* in a copy of the handler's context */
    std::unique_ptr<Job> job(static_cast<Job *>(arg));
    int done = 0, err = 0;
    while (done < job->steps && (err = ctx_cancel_check()) == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10)); /* a step of real work */
        done++;
    }
    (job->shard == "slow" ? outcome.slow_steps : outcome.fast_steps) = done;
    if (job->shard == "slow")
        outcome.slow_error = err;
    if (err) {
        Log("backend", "shard %s: stopped after %d of %d steps: %s", job->shard.c_str(), done,
            job->steps, ctx_strerror(err));
        job->reactor->Finish(::grpc::Status(err == CTX_EDEADLINE
                                                ? ::grpc::StatusCode::DEADLINE_EXCEEDED
                                                : ::grpc::StatusCode::CANCELLED,
                                            "the shard stopped"));
        return nullptr;
    }
    for (int i = 0; i < 3; i++)
        job->out->add_items(job->shard + "-item-" + std::to_string(i));
    job->out->set_shard(job->shard);
    Log("backend", "shard %s: done, %d steps", job->shard.c_str(), done);
    job->reactor->Finish(::grpc::Status::OK);
    return nullptr;
}

std::mutex threads_mutex;
std::vector<ctx_pool_thread_t *> threads; /* joined at the end */

class Backend final : public ctxvar::example::Backend::CallbackService {
    ::grpc::ServerUnaryReactor *Lookup(::grpc::CallbackServerContext *sc, const Query *q,
                                       Items *out) override {
        return propagation->Handle(sc, [&] { /* in the call's context */
            auto *reactor = sc->DefaultReactor();
            auto *job = new Job{reactor, q->shard(), out, q->shard() == "slow" ? 100 : 3};
            Log("backend", "shard %s: %d steps of 10 ms to do", job->shard.c_str(), job->steps);
            ctx_pool_thread_t *thread;
            if (ctx_pool_thread_create(Work, job, CTX_POOL_THREAD_INHERIT, &thread) != 0) {
                delete job;
                reactor->Finish(::grpc::Status(::grpc::StatusCode::RESOURCE_EXHAUSTED, "no thread"));
            } else {
                std::lock_guard<std::mutex> lock(threads_mutex);
                threads.push_back(thread);
            }
            return reactor;
        });
    }
};

/* ---- the frontend: both shards at once, within a budget ---- */

class Frontend final : public ctxvar::example::Frontend::Service {
  public:
    explicit Frontend(std::shared_ptr<::grpc::Channel> backend)
        : backend_(ctxvar::example::Backend::NewStub(backend)) {}

    ::grpc::Status Search(::grpc::ServerContext *sc, const Query *q, Results *out) override {
        return propagation->Handle(sc, [&] { return Fanout(q, out); });
    }

  private:
    ::grpc::Status Fanout(const Query *q, Results *out) {
        ctx_cancel_options_t budget = CTX_STRUCT_INIT(ctx_cancel_options_t);
        budget.timeout_ns = 300 * 1000000LL;
        ctx_token_t *token;
        if (ctx_cancel_enter_child(&budget, nullptr, &token) != 0)
            return ::grpc::Status(::grpc::StatusCode::RESOURCE_EXHAUSTED, "no scope");
        Log("frontend", "search \"%s\": asking 2 shards, with 300 ms for them",
            q->text().c_str());
        const char *names[2] = {"fast", "slow"};
        struct Call {
            ::grpc::ClientContext cc;
            Query query;
            Items items;
            ::grpc::Status status;
        } calls[2];
        std::mutex mu;
        std::condition_variable cv;
        int pending = 2;
        for (int i = 0; i < 2; i++) { /* both started here: both in this context */
            cg::ApplyDeadline(&calls[i].cc);
            calls[i].query.set_text(q->text());
            calls[i].query.set_shard(names[i]);
            backend_->async()->Lookup(&calls[i].cc, &calls[i].query, &calls[i].items,
                                      [&, i](::grpc::Status s) {
                                          std::lock_guard<std::mutex> lock(mu);
                                          calls[i].status = s;
                                          pending--;
                                          cv.notify_all();
                                      });
        }
        {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return pending == 0; });
        }
        ctx_cancel_exit(token);
        for (auto &call : calls) {
            if (call.status.ok()) {
                *out->add_shards() = call.items;
                Log("frontend", "shard %s: %d items", call.query.shard().c_str(),
                    call.items.items_size());
            } else {
                out->add_cut_off(call.query.shard() + ": " + call.status.error_message());
                Log("frontend", "shard %s: cut off (%s)", call.query.shard().c_str(),
                    call.status.error_message().c_str());
            }
        }
        return ::grpc::Status::OK;
    }

    std::unique_ptr<ctxvar::example::Backend::Stub> backend_;
};

/* ---- setup ---- */

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

std::unique_ptr<::grpc::Server> Serve(::grpc::Service *service, int *port) {
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), port);
    builder.RegisterService(service);
    std::vector<std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface>> f(1);
    propagation->NewInterceptorFactory(&f[0]);
    builder.experimental().SetInterceptorCreators(std::move(f));
    return builder.BuildAndStart();
}

} // namespace

int main() {
    grpc_init(); /* paired with the blocking shutdown at the end (leak checkers) */
    start_ns = ctx_wire_now_ns();
    static ctx_value_ops_t ops = CTX_STRUCT_INIT(ctx_value_ops_t);
    ops.encode = StrEncode;
    ops.decode = StrDecode;
    ops.release = StrRelease;
    ctx_var_options_t vo = CTX_STRUCT_INIT(ctx_var_options_t);
    vo.ops = &ops;
    std::unique_ptr<cg::ClientPropagation> client;
    if (ctx_var_new("request_id", &vo, &request_id) != 0 || ctx_wire_new(&wire) != 0 ||
        ctx_wire_register(wire, request_id, "request-id") != 0 ||
        cg::ClientPropagation::Create(wire, nullptr, &client) != 0 ||
        cg::ServerPropagation::Create(wire, nullptr, &propagation) != 0)
        return 1;

    /* The backend, then the frontend with a channel to it. */
    Backend backend;
    int backend_port = 0, frontend_port = 0;
    auto backend_server = Serve(&backend, &backend_port);
    std::shared_ptr<::grpc::Channel> to_backend, to_frontend;
    if (!backend_server ||
        client->NewChannel("127.0.0.1:" + std::to_string(backend_port),
                           ::grpc::InsecureChannelCredentials(), ::grpc::ChannelArguments(),
                           &to_backend) != 0)
        return 1;
    Frontend frontend(to_backend);
    auto frontend_server = Serve(&frontend, &frontend_port);
    if (!frontend_server ||
        client->NewChannel("127.0.0.1:" + std::to_string(frontend_port),
                           ::grpc::InsecureChannelCredentials(), ::grpc::ChannelArguments(),
                           &to_frontend) != 0)
        return 1;
    auto stub = ctxvar::example::Frontend::NewStub(to_frontend);

    /* The client's request: its own context, a trace, an id, 2 s. */
    ctx_context_t *request;
    ctx_cancel_options_t two_seconds = CTX_STRUCT_INIT(ctx_cancel_options_t);
    two_seconds.timeout_ns = 2000 * 1000000LL;
    void *id;
    if (ctx_cancel_context_new(nullptr, &two_seconds, &request, nullptr) != 0 ||
        ctx_wire_trace_start(wire, request, CTX_WIRE_TRACE_FLAG_SAMPLED, nullptr) != 0 ||
        StrDecode("req-7", 5, &id, nullptr) != 0 || ctx_context_set(request, request_id, id) != 0)
        return 1;
    struct Call {
        ctxvar::example::Frontend::Stub *stub;
        Results results;
        ::grpc::Status status;
    } call{stub.get(), {}, {}};
    ctx_context_run(
        request,
        [](void *arg) -> void * {
            auto *c = static_cast<Call *>(arg);
            Log("client", "search \"ctxvar\"");
            ::grpc::ClientContext cc;
            cg::ApplyDeadline(&cc);
            Query q;
            q.set_text("ctxvar");
            c->status = c->stub->Search(&cc, q, &c->results);
            Log("client", "%s: %d shard(s) answered, %d cut off",
                c->status.ok() ? "answer" : c->status.error_message().c_str(),
                c->results.shards_size(), c->results.cut_off_size());
            return nullptr;
        },
        &call, nullptr);
    ctx_context_release(request);

    frontend_server->Shutdown();
    backend_server->Shutdown();
    for (ctx_pool_thread_t *t : threads)
        ctx_pool_thread_join(t, nullptr);
    bool ok = call.status.ok() && call.results.shards_size() == 1 &&
              call.results.shards(0).shard() == "fast" && call.results.cut_off_size() == 1 &&
              outcome.fast_steps == 3 && outcome.slow_steps < 100 &&
              (outcome.slow_error == CTX_EDEADLINE || outcome.slow_error == CTX_ECANCELLED);
    printf("%s\n", ok ? "the slow shard was cut off by the deadline; the fast one answered"
                      : "UNEXPECTED: see the log above");
    frontend_server.reset();
    backend_server.reset();
    stub.reset();
    to_frontend.reset();
    to_backend.reset();
    client.reset();
    propagation.reset();
    ctx_wire_release(wire);
    ctx_var_release(request_id);
    ctx_cancel_timer_release();
    ctx_thread_release();
    grpc_shutdown_blocking(); /* gRPC's threads joined, its memory freed */
    return ok ? 0 : 1;
}
