/* SPDX-License-Identifier: MIT */
/*
 * watcher.cpp — the thread that notices a sync handler's call being
 * cancelled while the handler runs.
 *
 * gRPC 1.51's synchronous server learns that a call was cancelled (client
 * cancel, disconnect, deadline) only when someone calls
 * ServerContext::IsCancelled(), which gRPC documents as thread-safe for the
 * sync API: it polls the call's own completion queue.  A ServerPropagation
 * therefore has one watcher thread, started by the first sync Handle(),
 * that asks every running sync call, every poll interval, and ends the
 * scope of those that were cancelled (ServerState::End: the scope's
 * cancellation callbacks run on this thread).
 *
 * The entries live on the handlers' stacks (no allocation), in a doubly
 * linked list under one mutex:
 *
 *   head ─▶ [entry: sc, call, busy, leaving, cancelled] ─▶ [entry] ─▶ ...
 *
 * The thread is woken only when it is idle.  While calls come and go it
 * ticks, once per poll interval, asking every call linked at that moment
 * (a call newer than the last tick is asked at the next one: still within
 * one interval of its start); an Add() does not wake it.  Once the list
 * has stayed empty for kLinger (1 s) it goes idle (an untimed wait), and the
 * next Add() wakes it — one wake-up per burst of calls, not one per call:
 * waking a thread costs a futex call and a switch, and asking a call that
 * lasts less than an interval is wasted work.  The first tick after an
 * idle wake-up is one interval later, for the same reason.
 *
 * IsCancelled() is asked with the mutex released — it may run gRPC's and
 * users' interceptors — while the entry is marked busy; a handler that
 * returns marks its entry leaving and waits until it is not busy before
 * unlinking it, so the watcher never touches a ServerContext after its
 * handler has returned (gRPC 1.51 must not be asked then: see server.cpp).
 * The list is walked with the mutex held between entries, and an entry is
 * unlinked only when not busy, so `next` is always valid.  Cancellations
 * found in a pass are ended after the pass, with the mutex released (each
 * with a reference of its own), as user callbacks may run.
 *
 * Cost: nothing while no sync handler has run for kLinger (the thread
 * waits on a condition variable); otherwise a wake-up per interval and
 * one IsCancelled() per running call per interval; per call, a lock and
 * an unlink each way.  Latency: at most about one interval (default 5 ms).
 */
#include <chrono>
#include <csignal>

#include "grpc/grpc_internal.hpp"

namespace ctxvar {
namespace grpc {
namespace detail {

namespace {
constexpr size_t kBatch = 16; /* cancellations ended per pass, at most */
/* How long the thread keeps ticking with no call to watch before it goes
 * idle (and must be woken by the next call). */
constexpr auto kLinger = std::chrono::seconds(1);
} // namespace

bool Watcher::Add(WatchEntry *e) noexcept {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_)
        return false;
    if (!started_) {
        /* Signals stay with the program's own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&thread_, nullptr, Main, this);
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        if (rc != 0)
            return false; /* asked again by the next handler */
        started_ = true;
    }
    e->prev = nullptr;
    e->next = head_;
    if (head_)
        head_->prev = e;
    head_ = e;
    added_ = true;
    if (idle_) {
        idle_ = false;
        work_cv_.notify_one();
    }
    return true;
}

bool Watcher::Remove(WatchEntry *e) noexcept {
    std::unique_lock<std::mutex> lock(mu_);
    e->leaving = true;
    leave_cv_.wait(lock, [e] { return !e->busy; });
    if (e->prev)
        e->prev->next = e->next;
    else
        head_ = e->next;
    if (e->next)
        e->next->prev = e->prev;
    return e->cancelled;
}

void Watcher::Stop() noexcept {
    bool join;
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
        join = started_;
        started_ = false;
        work_cv_.notify_all();
    }
    if (join)
        pthread_join(thread_, nullptr);
}

void *Watcher::Main(void *self) noexcept {
    static_cast<Watcher *>(self)->Loop();
    ctx_thread_release(); /* the state ending scopes may have made */
    return nullptr;
}

void Watcher::Loop() noexcept {
    const auto interval = std::chrono::nanoseconds(server_->poll_ns);
    auto stop = [this] { return stopping_; };
    std::unique_lock<std::mutex> lock(mu_);
    auto last_seen = std::chrono::steady_clock::now(); /* a call linked, or added */
    while (!stopping_) {
        if (head_ || added_) {
            added_ = false;
            last_seen = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - last_seen >= kLinger) {
            idle_ = true;
            work_cv_.wait(lock, [this] { return stopping_ || head_; });
            idle_ = false;
            work_cv_.wait_for(lock, interval, stop); /* the new call's first interval */
            continue;
        }
        if (head_)
            Pass(lock);
        work_cv_.wait_for(lock, interval, stop);
    }
}

void Watcher::Pass(std::unique_lock<std::mutex> &lock) noexcept {
    CallState *found[kBatch];
    size_t n = 0;
    for (WatchEntry *e = head_; e && n < kBatch; e = e->next) {
        if (e->cancelled || e->leaving)
            continue;
        e->busy = true;
        lock.unlock();
        bool cancelled = e->sc->IsCancelled();
        Bump(server_->watcher_polls);
        lock.lock();
        e->busy = false;
        if (cancelled) {
            e->cancelled = true;
            found[n++] = e->call->Retain();
        }
        if (e->leaving)
            leave_cv_.notify_all();
    }
    if (n) {
        lock.unlock();
        for (size_t i = 0; i < n; i++) {
            server_->End(found[i], true);
            found[i]->Release();
        }
        lock.lock();
    }
}

} // namespace detail
} // namespace grpc
} // namespace ctxvar
