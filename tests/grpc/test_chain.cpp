/* SPDX-License-Identifier: MIT */
/*
 * test_chain.cpp — three processes on loopback: A → B → C.
 *
 *   A   this test (cmocka): sets a request id, a trace and a deadline, and
 *       calls B through a ClientPropagation channel.
 *   B   this binary started as `--role b <C's port> <A's pid>`: a sync
 *       server (ServerPropagation + Handle) whose handler sets its own
 *       baggage (hop=b), asks for a 10 s deadline for its own call (its
 *       scope cuts it to A's), and calls C through a ClientPropagation
 *       channel.
 *   C   `--role c 0 <A's pid>`: a callback server whose handler reports its
 *       context; for a slow request it starts a pool task that steps every
 *       2 ms — noting when each step begins, after asking ctx_cancel_check()
 *       — until its scope is cancelled, and only then finishes the call.
 *
 * A reads B's and C's ports from their stdout, and ends them by closing
 * their stdin; each must exit with status 0 (under ASan that includes
 * LeakSanitizer's verdict).  B and C also die with A (PR_SET_PDEATHSIG) and
 * after 15 minutes (alarm).  Every time is CLOCK_MONOTONIC, which the three
 * processes share, so A compares C's deadline and C's step times with its
 * own clock.
 */
#include "grpc_test.hpp"

#include <climits>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

using namespace gt;

namespace {

/* ---- B and C ---- */

int RunRole(const std::string &role, int next_port, pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        return 3; /* A is gone already */
    alarm(900);
    GrpcLibrary library;
    Env env;
    if (env.Init() != 0)
        return 2;
    int rc = 0;
    {
        std::unique_ptr<cg::ServerPropagation> ctxsrv;
        std::unique_ptr<cg::ClientPropagation> client;
        std::unique_ptr<Chain::Stub> next;
        if (cg::ServerPropagation::Create(env.wire, nullptr, &ctxsrv) != 0)
            return 2;
        if (role == "b") {
            if (cg::ClientPropagation::Create(env.wire, nullptr, &client) != 0 ||
                !(next = NewStub(client.get(), next_port)))
                return 2;
        }
        Node node(env, role == "b" ? "b" : "c", ctxsrv.get(), std::move(next));
        std::unique_ptr<::grpc::Service> service;
        if (role == "b")
            service.reset(new SyncChain(&node));
        else
            service.reset(new CallbackChain(&node));
        TestServer server;
        if (server.Start(service.get(), ctxsrv.get()) != 0)
            return 2;
        printf("PORT %d\n", server.port);
        fflush(stdout);
        char buf[64];
        while (read(0, buf, sizeof buf) > 0) {
        }
        server.Stop();
        service.reset();
        cg::ServerStats stats;
        ctxsrv->Stats(&stats);
        if (stats.decode_failures)
            rc = 4;
    }
    env.Release();
    ctx_cancel_timer_release();
    ctx_thread_release();
    return rc;
}

/* ---- A: starting and ending B and C ---- */

struct Child {
    pid_t pid = 0;
    int in = -1, out = -1;
    int port = 0;
};

std::string self_path;

int Spawn(const char *role, int next_port, Child *c) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    std::string port = std::to_string(next_port), parent = std::to_string(getpid());
    char *argv[] = {const_cast<char *>(self_path.c_str()), const_cast<char *>("--role"),
                    const_cast<char *>(role), const_cast<char *>(port.c_str()),
                    const_cast<char *>(parent.c_str()), nullptr};
    int rc = posix_spawn(&c->pid, self_path.c_str(), &fa, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    c->in = in[1];
    c->out = out[0];
    if (rc != 0) {
        c->pid = 0;
        return -1;
    }
    /* "PORT <n>\n", within a minute (times SLOW). */
    std::string line;
    int64_t end = NowNs() + 60000000000LL * SLOW;
    while (line.find('\n') == std::string::npos && NowNs() < end) {
        struct pollfd p = {c->out, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        char buf[64];
        ssize_t n = read(c->out, buf, sizeof buf);
        if (n <= 0)
            break;
        line.append(buf, static_cast<size_t>(n));
    }
    if (sscanf(line.c_str(), "PORT %d", &c->port) != 1 || c->port <= 0)
        return -1;
    return 0;
}

/* Closes its stdin and waits for it: its exit status, or -1. */
int Stop(Child *c) {
    if (c->in >= 0)
        close(c->in);
    c->in = -1;
    int status = -1;
    int64_t end = NowNs() + 60000000000LL * SLOW;
    while (c->pid > 0) {
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid) {
            c->pid = 0;
            break;
        }
        if (NowNs() > end) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, nullptr, 0);
            c->pid = 0;
            status = -1;
            break;
        }
        SleepMs(10);
    }
    if (c->out >= 0)
        close(c->out);
    c->out = -1;
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct World {
    GrpcLibrary library; /* first made, last gone */
    Env env;
    Child b, c;
    std::unique_ptr<cg::ClientPropagation> client;
    std::unique_ptr<Chain::Stub> to_b;             /* with the interceptor */
    std::unique_ptr<Chain::Stub> report_b, report_c; /* plain */
};
World *w;

int setup(void **) {
    w = new World;
    if (Spawn("c", 0, &w->c) != 0 || Spawn("b", w->c.port, &w->b) != 0) {
        fprintf(stderr, "could not start B and C\n");
        return -1;
    }
    if (w->env.Init() != 0 || cg::ClientPropagation::Create(w->env.wire, nullptr, &w->client) != 0)
        return -1;
    w->to_b = NewStub(w->client.get(), w->b.port);
    w->report_b = NewStub(nullptr, w->b.port);
    w->report_c = NewStub(nullptr, w->c.port);
    /* Connect every hop once, so that no deadline below pays for it. */
    ::grpc::ClientContext cc;
    HopRequest req;
    HopReply reply;
    return w->to_b->Hop(&cc, req, &reply).ok() ? 0 : -1;
}

int teardown(void **) {
    w->to_b.reset();
    w->report_b.reset();
    w->report_c.reset();
    w->client.reset();
    int b = Stop(&w->b), c = Stop(&w->c);
    w->env.Release();
    delete w;
    ctx_cancel_timer_release();
    ctx_thread_release();
    if (b != 0 || c != 0) {
        fprintf(stderr, "B exited with %d, C with %d (expected 0, 0)\n", b, c);
        return -1;
    }
    return 0;
}

/* The deadline A gives a request: 100 ms (longer where everything is
 * slower, so that the request reaches C in time). */
const int64_t kDeadlineNs = 100 * 1000000LL * SLOW;

/* gRPC's rounding of a timeout, per hop: its millisecond clocks at both
 * ends, and up to 1% when it sends one over a second. */
int64_t Rounding(int64_t timeout_ns) { return 2000000 + timeout_ns / 100; }

/* C sees A's request id, trace and baggage (and B's), in its handler and in
 * the pool task it starts; each hop is a new span; B's and C's deadlines
 * are A's (B asked for 10 s: its scope cut that to A's), later only by the
 * time the request took to get there and gRPC's rounding. */
void context_crosses_three_hops(void **) {
    FreshContext fresh;
    SetStr(w->env.request_id, "ctx-1");
    SetStr(w->env.secret, "stays-in-a");
    ctx_wire_trace_start(w->env.wire, nullptr, CTX_WIRE_TRACE_FLAG_SAMPLED, nullptr);
    std::string a_span, trace = w->env.TraceId(&a_span);
    InScope scope(kDeadlineNs);
    int64_t a_deadline = scope.Deadline();
    ::grpc::ClientContext cc;
    assert_int_equal(cg::ApplyDeadline(&cc), 1);
    HopRequest req;
    req.set_b_timeout_ms(10000);
    HopReply reply;
    int64_t t_call = NowNs();
    ::grpc::Status st = w->to_b->Hop(&cc, req, &reply);
    if (!st.ok())
        fail_msg("A -> B -> C: %s", st.error_message().c_str());
    assert_int_equal(reply.seen_size(), 2);
    const Seen &b = reply.seen(0), &c = reply.seen(1);
    assert_string_equal(b.who().c_str(), "b");
    assert_string_equal(c.who().c_str(), "c");
    for (const Seen *s : {&b, &c}) {
        assert_string_equal(s->request_id().c_str(), "ctx-1");
        assert_string_equal(s->task_request_id().c_str(), "ctx-1");
        assert_string_equal(s->trace_id().c_str(), trace.c_str());
        assert_string_equal(s->task_trace_id().c_str(), trace.c_str());
        assert_int_equal(s->scope_error(), 0);
        assert_true(s->has_deadline());
        assert_true(s->metadata().find("stays-in-a") == std::string::npos);
    }
    assert_string_equal(b.hop().c_str(), "");  /* A set none */
    assert_string_equal(c.hop().c_str(), "b"); /* B's own baggage */
    assert_string_equal(Header(c, "baggage").c_str(), "request-id=ctx-1,hop=b");
    /* A new span per hop. */
    assert_true(b.parent_id() != a_span);
    assert_true(c.parent_id() != b.parent_id() && c.parent_id() != a_span);
    /* Deadlines: never more than A's, but for transit and rounding. */
    int64_t round = Rounding(kDeadlineNs);
    if (b.deadline_ns() > a_deadline + (b.started_ns() - t_call) + round ||
        c.deadline_ns() > a_deadline + (c.started_ns() - t_call) + 2 * round)
        fail_msg("A's deadline %lld; B's %lld (started %lld ns after the call), C's %lld (%lld)",
                 (long long)a_deadline, (long long)b.deadline_ns(),
                 (long long)(b.started_ns() - t_call), (long long)c.deadline_ns(),
                 (long long)(c.started_ns() - t_call));
    assert_true(c.deadline_ns() < a_deadline + 1000000000LL); /* not B's 10 s */
    print_message("deadlines after A's: B %+lld us, C %+lld us (C started %lld us after the call)\n",
                  (long long)(b.deadline_ns() - a_deadline) / 1000,
                  (long long)(c.deadline_ns() - a_deadline) / 1000,
                  (long long)(c.started_ns() - t_call) / 1000);
}

/* A's deadline passes while C's slow task runs: the task is cancelled,
 * because of that deadline and not before it, and no step begins after
 * the cancellation. */
void deadline_stops_slow_task_in_c(void **) {
    FreshContext fresh;
    SetStr(w->env.request_id, "deadline-1");
    ctx_wire_trace_start(w->env.wire, nullptr, 0, nullptr);
    ::grpc::Status st;
    int64_t a_deadline;
    {
        InScope scope(kDeadlineNs);
        a_deadline = scope.Deadline();
        ::grpc::ClientContext cc;
        cg::ApplyDeadline(&cc);
        HopRequest req;
        req.set_slow(true);
        req.set_b_timeout_ms(10000);
        HopReply reply;
        st = w->to_b->Hop(&cc, req, &reply);
    }
    assert_int_equal(st.error_code(), ::grpc::StatusCode::DEADLINE_EXCEEDED);
    Report c = GetReport(w->report_c.get(), "deadline-1", false);
    assert_true(c.started());
    assert_true(c.done());
    assert_int_equal(c.late_steps(), 0);
    assert_true(c.cancelled_ns() > 0);
    if (c.steps())
        assert_true(c.last_step_ns() < c.cancelled_ns());
    /* The deadline, seen first by C's own timer or as the cancellation that
     * came down the chain from A: either way at A's deadline, not before
     * (but for gRPC's rounding, at two hops). */
    assert_true(c.task_error() == CTX_EDEADLINE || c.task_error() == CTX_ECANCELLED);
    assert_true(c.scope_error() == CTX_EDEADLINE || c.scope_error() == CTX_ECANCELLED);
    assert_true(c.cancelled_ns() >= a_deadline - 2 * Rounding(kDeadlineNs));
    print_message("C's task: %d steps, stopped by %s, cancelled %+lld us after A's deadline\n",
                  c.steps(), ctx_error_name(c.task_error()),
                  (long long)(c.cancelled_ns() - a_deadline) / 1000);
    Report b = GetReport(w->report_b.get(), "deadline-1", false);
    assert_true(b.scope_error() == CTX_EDEADLINE || b.scope_error() == CTX_ECANCELLED);
}

/* A cancels while C's slow task runs: B's call to C is cancelled, C's
 * scope with it (cause: the call was cancelled), the task stops, no step
 * begins after that. */
void cancel_stops_slow_task_in_c(void **) {
    ctx_cancel_scope_t *scope;
    ASSERT_RC(ctx_cancel_scope_new(nullptr, nullptr, &scope), 0);
    ::grpc::Status st;
    std::thread a([&] {
        ctx_context_t *ctx;
        ctx_context_new(&ctx);
        ctx_context_enter(ctx);
        ctx_token_t *tok;
        ctx_cancel_enter(scope, &tok);
        SetStr(w->env.request_id, "cancel-1");
        ctx_wire_trace_start(w->env.wire, nullptr, 0, nullptr);
        ::grpc::ClientContext cc;
        cg::ApplyDeadline(&cc);
        HopRequest req;
        req.set_slow(true);
        HopReply reply;
        st = w->to_b->Hop(&cc, req, &reply);
        ctx_cancel_exit(tok);
        ctx_context_exit(ctx);
        ctx_context_release(ctx);
        ctx_thread_release();
    });
    assert_true(GetReport(w->report_c.get(), "cancel-1", true).started());
    int64_t t_cancel = NowNs();
    ctx_cancel_scope_cancel(scope, nullptr);
    a.join();
    ctx_cancel_scope_release(scope);
    assert_int_equal(st.error_code(), ::grpc::StatusCode::CANCELLED);
    Report c = GetReport(w->report_c.get(), "cancel-1", false);
    assert_true(c.done());
    assert_int_equal(c.task_error(), CTX_ECANCELLED);
    assert_int_equal(c.scope_error(), CTX_ECANCELLED);
    assert_int_equal(c.cause_code(), cg::kCauseCallCancelled);
    assert_true(c.cancelled_ns() >= t_cancel);
    assert_int_equal(c.late_steps(), 0);
    print_message("C's task: %d steps, cancelled %lld us after A cancelled\n", c.steps(),
                  (long long)(c.cancelled_ns() - t_cancel) / 1000);
    Report b = GetReport(w->report_b.get(), "cancel-1", false);
    assert_int_equal(b.scope_error(), CTX_ECANCELLED);
    assert_int_equal(b.cause_code(), cg::kCauseCallCancelled);
}

/* Eight callers at once, each with its own request id, trace and deadline:
 * every handler and task in B and C sees its own caller's. */
void eight_concurrent_callers(void **) {
    const int callers = 8, calls = SCALED(20, 3, 5);
    std::atomic<int> failed{0}, wrong{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < callers; i++)
        threads.emplace_back([&, i] {
            ctx_context_t *ctx;
            ctx_context_new(&ctx);
            ctx_context_enter(ctx);
            for (int j = 0; j < calls; j++) {
                std::string id = "caller-" + std::to_string(i) + "-" + std::to_string(j);
                SetStr(w->env.request_id, id);
                ctx_wire_trace_start(w->env.wire, nullptr, 0, nullptr);
                std::string trace = w->env.TraceId();
                ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
                o.timeout_ns = 10000000000LL * SLOW;
                ctx_token_t *tok;
                ctx_cancel_enter_child(&o, nullptr, &tok);
                ::grpc::ClientContext cc;
                cg::ApplyDeadline(&cc);
                HopRequest req;
                HopReply reply;
                ::grpc::Status st = w->to_b->Hop(&cc, req, &reply);
                ctx_cancel_exit(tok);
                if (!st.ok() || reply.seen_size() != 2) {
                    failed++;
                    continue;
                }
                for (const Seen &s : reply.seen())
                    if (s.request_id() != id || s.task_request_id() != id || s.trace_id() != trace ||
                        s.task_trace_id() != trace || !s.has_deadline())
                        wrong++;
            }
            ctx_context_exit(ctx);
            ctx_context_release(ctx);
            ctx_thread_release();
        });
    for (auto &t : threads)
        t.join();
    assert_int_equal(failed.load(), 0);
    assert_int_equal(wrong.load(), 0);
}

} // namespace

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--role") == 0)
        return RunRole(argv[2], atoi(argv[3]), static_cast<pid_t>(atol(argv[4])));
    char resolved[PATH_MAX];
    self_path = realpath(argv[0], resolved) ? resolved : "/proc/self/exe";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(context_crosses_three_hops),
        cmocka_unit_test(deadline_stops_slow_task_in_c),
        cmocka_unit_test(cancel_stops_slow_task_in_c),
        cmocka_unit_test(eight_concurrent_callers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
