/* SPDX-License-Identifier: MIT */
/*
 * grpc_internal.hpp — what the grpc module's sources share (private).
 *
 *   CtxAllocated    a base giving a class operator new/delete through
 *                   ctx_malloc/ctx_free: `new T` returns nullptr when the
 *                   allocator fails (the operator is noexcept, so no
 *                   exception and no constructor call), which is how every
 *                   object of this module reports CTX_ENOMEM, and how the
 *                   tests' failing allocator reaches them.
 *   ClientState     what a ClientPropagation and its factories share.
 *   CallState       one server call: its decoded context (holding the
 *                   call's scope) and whether its scope has been ended.
 *   ServerState     what a ServerPropagation and its factories share: the
 *                   registry of callback-API calls (interceptor → Handle),
 *                   the sync watcher, the counters.
 *
 * Reference counts are atomic; every state is freed by its last Release().
 */
#ifndef CTX_GRPC_INTERNAL_HPP
#define CTX_GRPC_INTERNAL_HPP

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <pthread.h>

#include <ctxvar/grpc.hpp>

#include "grpc/struct_shim.h"

namespace ctxvar {
namespace grpc {
namespace detail {

/* Allocation through ctx_malloc; nullptr (not an exception) on failure. */
struct CtxAllocated {
    static void *operator new(std::size_t size) noexcept { return ctx_malloc(size); }
    static void operator delete(void *p, std::size_t size) noexcept { ctx_free(p, size); }
};

/* Relaxed counters: statistics only, never used to order anything. */
using Counter = std::atomic<uint64_t>;
inline void Bump(Counter &c) { c.fetch_add(1, std::memory_order_relaxed); }

/* ---- client ---- */

struct ClientState : CtxAllocated {
    std::atomic<long> refs{1};
    ctx_wire_t *wire = nullptr; /* retained */
    unsigned inject_flags = 0;
    Counter calls{0};
    Counter calls_cancelled{0};
    Counter inject_failures{0};

    ClientState *Retain() {
        refs.fetch_add(1, std::memory_order_relaxed);
        return this;
    }
    void Release();
};

/* ---- server ---- */

struct CallState : CtxAllocated {
    std::atomic<long> refs{1};
    ctx_context_t *ctx = nullptr;          /* the call's context; holds the scope */
    ctx_cancel_scope_t *scope = nullptr;   /* our own reference */
    std::atomic<bool> ended{false};        /* ServerState::End ran */
    const ::grpc::ServerContextBase *key = nullptr; /* registry (callback API) */
    CallState *next = nullptr;                      /* its shard's list */

    CallState *Retain() {
        refs.fetch_add(1, std::memory_order_relaxed);
        return this;
    }
    void Release();
};

/* A sync handler's call while its handler runs (on the handler's stack). */
struct WatchEntry {
    ::grpc::ServerContext *sc;
    CallState *call;
    WatchEntry *prev = nullptr, *next = nullptr;
    bool busy = false;      /* the watcher is asking IsCancelled() now */
    bool leaving = false;   /* the handler returned: waiting to unlink */
    bool cancelled = false; /* the watcher saw the call cancelled */
};

struct ServerState;

/* The thread that asks running sync handlers' calls IsCancelled(). */
class Watcher {
  public:
    explicit Watcher(ServerState *server) : server_(server) {}
    ~Watcher() { Stop(); }
    /* Links `e` (starting the thread if needed); false: no watcher (the
     * thread could not be started), `e` not linked. */
    bool Add(WatchEntry *e) noexcept;
    /* Unlinks `e`, waiting while the watcher asks about it; returns
     * whether the watcher saw the call cancelled. */
    bool Remove(WatchEntry *e) noexcept;
    void Stop() noexcept;

  private:
    static void *Main(void *self) noexcept;
    void Loop() noexcept;
    /* Asks every linked call once (mutex held on entry and exit). */
    void Pass(std::unique_lock<std::mutex> &lock) noexcept;
    ServerState *server_;
    std::mutex mu_;
    std::condition_variable work_cv_;  /* entries to watch, or stop */
    std::condition_variable leave_cv_; /* an entry is no longer busy */
    WatchEntry *head_ = nullptr;
    bool started_ = false;
    bool stopping_ = false;
    bool idle_ = false;  /* the thread waits for a call (Add wakes it) */
    bool added_ = false; /* a call was added since the thread last looked */
    pthread_t thread_;
};

struct ServerState : CtxAllocated {
    static constexpr size_t kShards = 16;
    struct Shard {
        std::mutex mu;
        CallState *head = nullptr;
    };

    std::atomic<long> refs{1};
    ctx_wire_t *wire = nullptr; /* retained */
    int64_t poll_ns = 0;
    Shard shards[kShards];
    Watcher watcher{this};
    Counter calls{0}, calls_cancelled{0}, calls_deadline{0}, calls_finished{0};
    Counter decode_failures{0}, calls_without_interceptor{0}, watcher_polls{0};

    ServerState *Retain() {
        refs.fetch_add(1, std::memory_order_relaxed);
        return this;
    }
    void Release();

    /* A new call state decoded from `sc` (metadata and deadline). */
    int Decode(::grpc::ServerContextBase *sc, CallState **out) noexcept;
    /* Ends the call's scope once: cancelled (kCauseCallCancelled, or its
     * deadline if that is due) or finished (kCauseCallFinished). */
    void End(CallState *call, bool cancelled) noexcept;
    /* The registry of callback-API calls, keyed by their ServerContext. */
    void Register(CallState *call, const ::grpc::ServerContextBase *key) noexcept;
    void Unregister(CallState *call) noexcept;
    CallState *Lookup(const ::grpc::ServerContextBase *key) noexcept; /* retained */

  private:
    Shard &ShardOf(const void *key) noexcept;
};

/* Runs run(arg) exactly once: in a fresh copy of `ctx` (a capture), or,
 * when that cannot be done (ctx null, the thread has no ctxvar state and
 * none can be made), directly.  Returns whether it ran in the copy. */
bool RunIn(ctx_context_t *ctx, void (*run)(void *), void *arg) noexcept;

} // namespace detail
} // namespace grpc
} // namespace ctxvar

#endif /* CTX_GRPC_INTERNAL_HPP */
