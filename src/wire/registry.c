/* SPDX-License-Identifier: MIT */
/*
 * registry.c — which variables cross the wire, and the two directions:
 * inject (context → headers) and extract (headers → new context).
 *
 * A registry (ctx_wire_t) is a reference-counted record:
 *
 *   ctx_wire_t ─┬─ refs, used (registration closed once set)
 *               ├─ trace_var     "ctx.trace":    trace_value_t (parent +
 *               │   (borrowed: the process's,     normalised tracestate)
 *               │    shared by every registry)
 *               ├─ regs[0..count)  { var (retained), baggage key }
 *               └─ index           baggage key ─▶ regs[i] (hashed)
 *
 * Registration happens before use, on one thread; the first inject,
 * extract or trace/deadline call sets `used`, after which the table is
 * read-only and every call may run on any thread without a lock.  (A
 * register after that fails with CTX_ESEALED rather than racing.)
 *
 * The trace's values are immutable heap records, released by the
 * variable's `release` operation when no context holds them any more; it
 * also has a `format` operation, so a log line made with ctx_context_format
 * shows the trace.
 *
 * The deadline is not a variable of the registry: it is the deadline of the
 * context's cancellation scope (ctxvar/cancel.h), so that the one deadline
 * a request has is both what crosses the wire and what stops its work.
 *
 *   extract   grpc-timeout t  ─▶  a new root scope (the remote caller's
 *                                 time: no local parent) with deadline
 *                                 now + t, set in the new context
 *                                 (ctx_cancel_context_set);
 *   inject    the scope of the context (NULL: the current one) ─▶ the time
 *             left until its deadline, rounded down, as grpc-timeout;
 *   ctx_wire_deadline_set   a child of the context's scope with that
 *             timeout (so a deadline only ever shrinks);
 *   ctx_wire_deadline_get / _remaining   read the scope's deadline.
 *
 * inject reads the context (ctx_context_get, or ctx_var_get for the current
 * context), builds every header text first in stack buffers — a child
 * traceparent, the normalised tracestate, the time left as grpc-timeout, a
 * baggage list from the registered variables' `encode` in registration
 * order — and only then calls the carrier's `set`, so an `encode` failure
 * writes nothing.
 *
 * extract walks the carrier once.  traceparent and grpc-timeout are parsed
 * on sight (a second occurrence invalidates them); tracestate values are
 * normalised and appended to one stack buffer and deduplicated at the end
 * (several headers form one list; the first member of a key wins);
 * baggage values are scanned as they come (ctx__baggage_scan keeps the
 * input offset, member count and re-encoded length across headers), and
 * each member whose key is registered (found through an index of the keys
 * built as they are registered: open addressing over twice as many slots
 * as registrations, so a lookup is a hash of four bytes of the key and
 * usually one compare; a bit per registration tells a repeated key) is
 * decoded by its variable's `decode` and kept in the extract's list of
 * values.  Header names are compared as sent in lowercase first (a compare
 * of constant length), then in any case.  The trace comes last, because whether the
 * tracestate may be used depends on the traceparent (§3.3 of Trace Context:
 * no valid traceparent, no tracestate), which may come after it.  Then
 * ctx_context_new_from makes the new context from the list in one pass (no
 * lock or claim per value, one root node): O(number of entries).  The
 * scope is set last, because a scope with a deadline takes a place in the
 * timer facility that a failed extract should not have touched.  Only an
 * allocation failure, the timer thread failing to start (or, with
 * CTX_WIRE_STRICT, any drop) fails the call; then every value already
 * decoded is released (with the half-built context, if there is one).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <ctxvar/cancel.h>

#include "wire/wire_internal.h"

typedef struct reg {
    ctx_var_t *var;
    const ctx_value_ops_t *ops; /* ctx_var_ops(var), looked up once */
    char *key; /* NUL terminated */
    size_t key_len;
} reg_t;

/* Slots of the baggage-key index: twice the most registrations, so that a
 * probe for an unknown key soon meets an empty slot. */
#define INDEX_SLOTS (2 * CTX_WIRE_MAX_VARS)

struct ctx_wire {
    atomic_size_t refs;
    atomic_int used;
    ctx_var_t *trace_var; /* borrowed: the process's (trace_var) */
    size_t count;
    reg_t regs[CTX_WIRE_MAX_VARS];
    /* The registrations by baggage key: open addressing, linear probing
     * from key_hash; a slot holds a registration's index + 1, 0 if empty. */
    uint8_t index[INDEX_SLOTS];
};

/* A cheap hash of a baggage key (a token of 1 to 256 bytes): its length,
 * its first, middle and last bytes.  Registered keys are few and short;
 * the index only has to spread them, the compare decides. */
static inline unsigned key_hash(const char *key, size_t len) {
    unsigned h = (unsigned)len * 0x9E3779B1u;
    h ^= (unsigned char)key[0] * 0x85EBCA77u;
    h ^= (unsigned char)key[len / 2] * 0xC2B2AE3Du;
    h ^= (unsigned char)key[len - 1] * 0x27D4EB2Fu;
    return (h ^ (h >> 15)) % INDEX_SLOTS;
}

/* ---- built-in values ---- */

typedef struct trace_value {
    size_t size; /* bytes allocated */
    ctx_wire_traceparent_t parent;
    size_t state_len;
    char state[]; /* normalised, NUL terminated */
} trace_value_t;

static void trace_release(void *value, void *user) {
    (void)user;
    trace_value_t *t = value;
    if (t)
        ctx__wire_free(t, t->size);
}

static int trace_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    const trace_value_t *t = value;
    char tp[CTX_WIRE_TRACEPARENT_LEN + 1];
    if (ctx_wire_traceparent_format(&t->parent, tp, sizeof tp) < 0)
        return CTX_EINVAL;
    if (t->state_len)
        return snprintf(buf, cap, "%s;%s", tp, t->state);
    return snprintf(buf, cap, "%s", tp);
}

static const ctx_value_ops_t trace_ops = {.size = sizeof(ctx_value_ops_t),.release = trace_release, .format = trace_format};

/* *dst = *src, in the pieces ctx_wire_traceparent_parse stores (a byte,
 * three 8-byte words, a byte): a struct copy reads 16 bytes at once, and a
 * load that spans several recent stores waits for them to reach the cache
 * instead of taking their data on the way (a failed store forward), which
 * was a tenth of an extract that had just parsed the header. */
static void copy_parent(ctx_wire_traceparent_t *dst, const ctx_wire_traceparent_t *src) {
    uint64_t w[3];
    dst->version = src->version;
    memcpy(w, src->trace_id, 8);
    memcpy(w + 1, src->trace_id + 8, 8);
    memcpy(w + 2, src->parent_id, 8);
    memcpy(dst->trace_id, w, 8);
    memcpy(dst->trace_id + 8, w + 1, 8);
    memcpy(dst->parent_id, w + 2, 8);
    dst->flags = src->flags;
}

static trace_value_t *trace_value_new(const ctx_wire_traceparent_t *parent, const char *state,
                                      size_t state_len) {
    /* A multiple of 8: ctx_malloc recycles small blocks of those sizes, so
     * a trace without tracestate costs no malloc after the first. */
    size_t size = (sizeof(trace_value_t) + state_len + 1 + 7) & ~(size_t)7;
    trace_value_t *t = ctx__wire_malloc(size);
    if (!t)
        return NULL;
    t->size = size;
    copy_parent(&t->parent, parent);
    t->state_len = state_len;
    if (state_len)
        memcpy(t->state, state, state_len);
    t->state[state_len] = '\0';
    return t;
}

/* ---- the registry ---- */

/* The process's trace variable (ctx__process_var: made by the first
 * registry, never released, static): the trace is the request's, whichever
 * registry extracted it. */
static _Atomic(ctx_var_t *) trace_var_slot;

int ctx_wire_new(ctx_wire_t **out) {
    if (!out)
        return CTX_EINVAL;
    int rc = 0;
    ctx_var_t *trace = ctx__process_var(&trace_var_slot, "ctx.trace", &trace_ops, &rc);
    if (!trace)
        return rc;
    ctx_wire_t *w = ctx__wire_malloc(sizeof *w);
    if (!w)
        return CTX_ENOMEM;
    memset(w, 0, sizeof *w);
    atomic_init(&w->refs, 1);
    atomic_init(&w->used, 0);
    w->trace_var = trace; /* borrowed: the process's */
    *out = w;
    return 0;
}

ctx_wire_t *ctx_wire_retain(ctx_wire_t *w) {
    if (w)
        atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
    return w;
}

void ctx_wire_release(ctx_wire_t *w) {
    if (!w || atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < w->count; i++) {
        ctx_var_release(w->regs[i].var);
        ctx__wire_free(w->regs[i].key, w->regs[i].key_len + 1);
    }
    ctx__wire_free(w, sizeof *w);
}

static void mark_used(ctx_wire_t *w) {
    if (!atomic_load_explicit(&w->used, memory_order_relaxed))
        atomic_store_explicit(&w->used, 1, memory_order_relaxed);
}

int ctx_wire_register(ctx_wire_t *w, ctx_var_t *var, const char *baggage_key) {
    if (!w || !var || !baggage_key)
        return CTX_EINVAL;
    const ctx_value_ops_t *ops = ctx_var_ops(var);
    if (!ops || !ops->encode || !ops->decode)
        return CTX_EINVAL;
    size_t key_len = strnlen(baggage_key, 257);
    if (key_len > 256 || !ctx_wire_baggage_key_valid(baggage_key, key_len))
        return CTX_EPARSE;
    if (atomic_load_explicit(&w->used, memory_order_relaxed))
        return CTX_ESEALED;
    for (size_t i = 0; i < w->count; i++)
        if (w->regs[i].var == var ||
            (w->regs[i].key_len == key_len && memcmp(w->regs[i].key, baggage_key, key_len) == 0))
            return CTX_EEXIST;
    if (w->count == CTX_WIRE_MAX_VARS)
        return CTX_ELIMIT;
    char *key = ctx__wire_malloc(key_len + 1);
    if (!key)
        return CTX_ENOMEM;
    memcpy(key, baggage_key, key_len + 1);
    unsigned slot = key_hash(key, key_len);
    while (w->index[slot] != 0)
        slot = (slot + 1) % INDEX_SLOTS;
    w->index[slot] = (uint8_t)(w->count + 1);
    w->regs[w->count].var = ctx_var_retain(var);
    w->regs[w->count].ops = ops;
    w->regs[w->count].key = key;
    w->regs[w->count].key_len = key_len;
    w->count++;
    return 0;
}

ctx_var_t *ctx_wire_trace_var(ctx_wire_t *w) { return w ? w->trace_var : NULL; }

/* The value of `var` in ctx (NULL: current): 0 or CTX_ENOTFOUND. */
static int lookup(ctx_context_t *ctx, ctx_var_t *var, void **value) {
    if (ctx)
        return ctx_context_get(ctx, var, value);
    int rc = ctx_var_get(var, value);
    return rc == CTX_VALUE ? 0 : (rc == CTX_DEFAULT ? CTX_ENOTFOUND : rc);
}

int ctx_wire_trace_get(ctx_wire_t *w, ctx_context_t *ctx, ctx_wire_traceparent_t *parent,
                       const char **state, size_t *state_len) {
    if (!w)
        return CTX_EINVAL;
    mark_used(w);
    void *v;
    int rc = lookup(ctx, w->trace_var, &v);
    if (rc != 0)
        return rc;
    const trace_value_t *t = v;
    if (parent)
        *parent = t->parent;
    if (state)
        *state = t->state;
    if (state_len)
        *state_len = t->state_len;
    return 0;
}

static int parent_valid(const ctx_wire_traceparent_t *p) {
    char tmp[CTX_WIRE_TRACEPARENT_LEN + 1];
    return ctx_wire_traceparent_format(p, tmp, sizeof tmp) == CTX_WIRE_TRACEPARENT_LEN;
}

/* Sets `var` to `value` in ctx (NULL: current); on failure `value` is
 * released. */
static int store(ctx_context_t *ctx, ctx_var_t *var, void *value) {
    int rc = ctx ? ctx_context_set(ctx, var, value) : ctx_var_set(var, value, NULL);
    if (rc != 0)
        ctx_var_ops(var)->release(value, NULL);
    return rc;
}

static int set_trace(ctx_wire_t *w, ctx_context_t *ctx, const ctx_wire_traceparent_t *parent,
                     const char *state, size_t state_len) {
    trace_value_t *t = trace_value_new(parent, state, state_len);
    if (!t)
        return CTX_ENOMEM;
    return store(ctx, w->trace_var, t);
}

int ctx_wire_trace_set(ctx_wire_t *w, ctx_context_t *ctx, const ctx_wire_traceparent_t *parent,
                       const char *state, size_t state_len) {
    if (!w || !parent || !parent_valid(parent) || (!state && state_len))
        return CTX_EINVAL;
    mark_used(w);
    char norm[CTX_WIRE_TRACESTATE_MAX_LEN + 1];
    size_t norm_len = 0;
    if (state_len) {
        int rc = ctx_wire_tracestate_normalize(state, state_len, norm, sizeof norm, &norm_len);
        if (rc != 0)
            return rc;
    }
    return set_trace(w, ctx, parent, norm, norm_len);
}

int ctx_wire_trace_start(ctx_wire_t *w, ctx_context_t *ctx, uint8_t flags,
                         ctx_wire_traceparent_t *out) {
    if (!w)
        return CTX_EINVAL;
    mark_used(w);
    ctx_wire_traceparent_t p;
    ctx_wire_traceparent_new(flags, &p);
    int rc = set_trace(w, ctx, &p, NULL, 0);
    if (rc == 0 && out)
        *out = p;
    return rc;
}

/* ---- the deadline: a view of the context's cancellation scope ---- */

/* The scope of ctx (NULL: the current context): 0 and *scope, borrowed for
 * the current context, else a reference in *owned as well (release it);
 * CTX_ENOTFOUND if it has none. */
static int scope_of(ctx_context_t *ctx, ctx_cancel_scope_t **scope, ctx_cancel_scope_t **owned) {
    *owned = NULL;
    if (!ctx)
        return ctx_cancel_scope_current(scope);
    int rc = ctx_cancel_scope_get(ctx, scope);
    if (rc == 0)
        *owned = *scope;
    return rc;
}

/* grpc-timeout's "no time left" (0, or what a hop sent as 0n) is a
 * deadline that has passed; the options read 0 as "none". */
static ctx_cancel_options_t timeout_options(int64_t timeout_ns) {
    ctx_cancel_options_t o = CTX_STRUCT_INIT(ctx_cancel_options_t);
    o.timeout_ns = timeout_ns > 0 ? timeout_ns : -1;
    return o;
}

int ctx_wire_deadline_set(ctx_wire_t *w, ctx_context_t *ctx, int64_t timeout_ns) {
    if (!w)
        return CTX_EINVAL;
    mark_used(w);
    ctx_cancel_options_t o = timeout_options(timeout_ns);
    if (!ctx) { /* a set in the current context that stays: no token kept */
        ctx_token_t *token;
        int rc = ctx_cancel_enter_child(&o, NULL, &token);
        if (rc == 0)
            ctx_token_release(token);
        return rc;
    }
    if (ctx_context_is_entered(ctx))
        return CTX_EENTERED;
    ctx_cancel_scope_t *parent = NULL, *child = NULL;
    int rc = ctx_cancel_scope_get(ctx, &parent);
    if (rc == 0 || rc == CTX_ENOTFOUND)
        rc = ctx_cancel_scope_new(parent, &o, &child);
    ctx_cancel_scope_release(parent);
    if (rc == 0)
        rc = ctx_cancel_context_set(ctx, child);
    ctx_cancel_scope_release(child); /* the context holds it now, or nobody */
    return rc;
}

int ctx_wire_deadline_get(ctx_wire_t *w, ctx_context_t *ctx, int64_t *deadline_ns) {
    if (!w || !deadline_ns)
        return CTX_EINVAL;
    mark_used(w);
    ctx_cancel_scope_t *scope, *owned;
    int rc = scope_of(ctx, &scope, &owned);
    if (rc == 0)
        rc = ctx_cancel_scope_deadline(scope, deadline_ns);
    ctx_cancel_scope_release(owned);
    return rc;
}

int ctx_wire_deadline_remaining(ctx_wire_t *w, ctx_context_t *ctx, int64_t *remaining_ns) {
    if (!w || !remaining_ns)
        return CTX_EINVAL;
    mark_used(w);
    ctx_cancel_scope_t *scope, *owned;
    int rc = scope_of(ctx, &scope, &owned);
    if (rc == 0)
        rc = ctx_cancel_scope_remaining(scope, remaining_ns);
    ctx_cancel_scope_release(owned);
    return rc;
}

/* ---- inject ---- */

/* The headers of an inject, built before the carrier is called. */
typedef struct outgoing {
    const trace_value_t *trace; /* NULL: no trace */
    char tp[CTX_WIRE_TRACEPARENT_LEN + 1];
    int timeout_len; /* < 0: no deadline */
    char timeout[CTX_WIRE_TIMEOUT_MAX_LEN + 1];
    ctx_wire_baggage_writer_t bw;
    char baggage[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
} outgoing_t;

/* The trace and deadline headers of ctx into o (and the report). */
static void build_trace_deadline(ctx_wire_t *w, ctx_context_t *ctx, unsigned flags, outgoing_t *o,
                                 ctx_wire_inject_report_t *rep) {
    void *v;
    o->trace = NULL;
    if (lookup(ctx, w->trace_var, &v) == 0) {
        const trace_value_t *t = v;
        ctx_wire_traceparent_t sent = t->parent;
        if (!(flags & CTX_WIRE_SAME_PARENT))
            ctx_wire_traceparent_child(&t->parent, &sent);
        sent.version = 0;
        sent.flags &= CTX_WIRE_TRACE_FLAGS_KNOWN; /* as formatted */
        if (ctx_wire_traceparent_format(&sent, o->tp, sizeof o->tp) > 0) {
            o->trace = t;
            rep->traceparent = 1;
            rep->parent = sent;
            rep->tracestate = t->state_len > 0;
        }
    }
    o->timeout_len = -1;
    ctx_cancel_scope_t *scope, *owned;
    int64_t left;
    int rc = scope_of(ctx, &scope, &owned);
    if (rc == 0)
        rc = ctx_cancel_scope_remaining(scope, &left);
    ctx_cancel_scope_release(owned);
    if (rc == 0) {
        o->timeout_len = ctx_wire_timeout_format(left, o->timeout, sizeof o->timeout);
        if (o->timeout_len > 0 &&
            ctx_wire_timeout_parse(o->timeout, (size_t)o->timeout_len, &rep->timeout_ns) == 0)
            rep->deadline = 1;
    }
}

/* The baggage header of ctx into o: one member per registered variable
 * with a value, in registration order.  0 or an encode error. */
static int build_baggage(ctx_wire_t *w, ctx_context_t *ctx, outgoing_t *o,
                         ctx_wire_inject_report_t *rep) {
    char text[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    ctx_wire_baggage_writer_init(&o->bw, o->baggage, sizeof o->baggage);
    for (size_t i = 0; i < w->count; i++) {
        const reg_t *r = &w->regs[i];
        void *v;
        if (lookup(ctx, r->var, &v) != 0)
            continue;
        const ctx_value_ops_t *ops = ctx_var_ops(r->var);
        int n = ops->encode(v, text, sizeof text, ops->user);
        if (n < 0)
            return n;
        if ((size_t)n >= sizeof text ||
            ctx_wire_baggage_append(&o->bw, r->key, r->key_len, text, (size_t)n, NULL, 0) != 0)
            rep->baggage_left_out++; /* past the limits of W3C Baggage §3.3.3 */
    }
    rep->baggage_members = o->bw.members;
    return 0;
}

static int send_headers(const ctx_wire_carrier_t *c, const outgoing_t *o) {
    int rc = 0;
    if (o->trace) {
        rc = c->set(c->self, CTX_WIRE_TRACEPARENT, o->tp, CTX_WIRE_TRACEPARENT_LEN);
        if (rc == 0 && o->trace->state_len)
            rc = c->set(c->self, CTX_WIRE_TRACESTATE, o->trace->state, o->trace->state_len);
    }
    if (rc == 0 && o->timeout_len > 0)
        rc = c->set(c->self, CTX_WIRE_GRPC_TIMEOUT, o->timeout, (size_t)o->timeout_len);
    if (rc == 0 && o->bw.members > 0)
        rc = c->set(c->self, CTX_WIRE_BAGGAGE, o->baggage, o->bw.len);
    return rc > 0 ? CTX_ECALLBACK : rc; /* a positive result is not a count */
}

int ctx_wire_inject(ctx_wire_t *w, ctx_context_t *ctx, const ctx_wire_carrier_t *carrier,
                    unsigned flags, ctx_wire_inject_report_t *report) {
    ctx_wire_carrier_t c;
    if (!w || ctx__wire_carrier_in(carrier, &c) != 0 || !c.set ||
        (report && report->size < sizeof(size_t)))
        return CTX_EINVAL;
    mark_used(w);
    ctx_wire_inject_report_t rep;
    memset(&rep, 0, sizeof rep);
    rep.size = sizeof rep;
    outgoing_t o;
    build_trace_deadline(w, ctx, flags, &o, &rep);
    int rc = build_baggage(w, ctx, &o, &rep); /* every header text first */
    if (rc != 0)
        return rc;
    rc = send_headers(&c, &o); /* then the carrier */
    if (report)
        ctx__struct_out(report, &rep, sizeof rep);
    return rc != 0 ? rc : (int)rep.baggage_left_out;
}

/* ---- extract ---- */

/* The small part of an extract's state (zeroed per call); the tracestate
 * buffer is kept apart so that it is never cleared. */
typedef struct extract_state {
    ctx_wire_t *w;
    int error; /* a hard error (CTX_ENOMEM, or a decode's CTX_ENOMEM) */
    uint64_t decoded; /* bit i: registered variable i has its value */
    ctx_wire_extract_report_t rep;

    int tp_seen;
    ctx_wire_traceparent_t tp;

    int ts_seen;
    int ts_error;
    size_t ts_input; /* combined raw length, joining commas included */
    size_t ts_len;
    size_t ts_members;

    int to_seen;
    int64_t timeout_ns;

    ctx__baggage_scan_t scan;

    /* The values decoded so far (the new context's, once made), and their
     * variables: registered ones, then the trace's. */
    size_t found;
    ctx_var_t *vars[CTX_WIRE_MAX_VARS + 1];
    void *values[CTX_WIRE_MAX_VARS + 1];
} extract_state_t;

typedef struct extract {
    extract_state_t s;
    char ts[CTX_WIRE_TRACESTATE_MAX_LEN + 1];
} extract_t;

/* Field by field, not one memset: gcc turns a memset of the whole state
 * into `rep stosq`, whose start-up cost was a third of a traceparent-only
 * extract.  `tp` needs none: it is read only once parsed. */
static void extract_init(extract_state_t *s, ctx_wire_t *w) {
    s->w = w;
    s->found = 0;
    s->error = 0;
    s->decoded = 0;
    memset(&s->rep, 0, sizeof s->rep);
    s->rep.size = sizeof s->rep;
    s->tp_seen = 0;
    s->ts_seen = 0;
    s->ts_error = 0;
    s->ts_input = 0;
    s->ts_len = 0;
    s->ts_members = 0;
    s->to_seen = 0;
    s->timeout_ns = 0;
    /* s->scan: zeroed at the first baggage header (rep.baggage says so) */
}

/* memcmp(a, b, n) == 0 for n >= 1, inline for the short keys baggage
 * usually has: two overlapping loads of 8 (or 4) bytes from each side, all
 * within the n bytes. */
static inline int key_equal(const char *a, const char *b, size_t n) {
    uint64_t x0, x1, y0, y1;
    if (n >= 8 && n <= 16) {
        memcpy(&x0, a, 8), memcpy(&x1, a + n - 8, 8);
        memcpy(&y0, b, 8), memcpy(&y1, b + n - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t u0, u1, v0, v1;
        memcpy(&u0, a, 4), memcpy(&u1, a + n - 4, 4);
        memcpy(&v0, b, 4), memcpy(&v1, b + n - 4, 4);
        return ((u0 ^ v0) | (u1 ^ v1)) == 0;
    }
    return memcmp(a, b, n) == 0;
}

/* The registration of baggage key `key` (key_len >= 1), or -1: a probe of
 * the index, usually one compare. */
static int find_reg(const ctx_wire_t *w, const char *key, size_t key_len) {
    for (unsigned slot = key_hash(key, key_len);; slot = (slot + 1) % INDEX_SLOTS) {
        unsigned at = w->index[slot];
        if (at == 0)
            return -1;
        const reg_t *r = &w->regs[at - 1];
        if (r->key_len == key_len && key_equal(r->key, key, key_len))
            return (int)(at - 1);
    }
}

static int on_member(const ctx_wire_baggage_member_t *m, void *user) {
    extract_state_t *x = user;
    int i = find_reg(x->w, m->key, m->key_len);
    if (i < 0) {
        x->rep.baggage_unknown++;
        return 0;
    }
    if (x->decoded & (UINT64_C(1) << i)) {
        x->rep.baggage_duplicate++;
        return 0;
    }
    const reg_t *r = &x->w->regs[i];
    const ctx_value_ops_t *ops = r->ops;
    void *value = NULL;
    int rc = ops->decode(m->value, m->value_len, &value, ops->user);
    if (rc == CTX_ENOMEM) {
        x->error = rc;
        return rc;
    }
    if (rc != 0) {
        x->rep.baggage_rejected++;
        return 0;
    }
    x->vars[x->found] = r->var;
    x->values[x->found++] = value;
    x->decoded |= UINT64_C(1) << i;
    x->rep.baggage_used++;
    return 0;
}

static void on_traceparent(extract_state_t *x, const char *value, size_t value_len) {
    if (x->tp_seen++ == 0)
        x->rep.traceparent = ctx_wire_traceparent_parse(value, value_len, &x->tp) == 0 ? 1 : CTX_EPARSE;
    else
        x->rep.traceparent = CTX_EPARSE; /* one traceparent only */
}

static void on_tracestate(extract_t *x, const char *value, size_t value_len) {
    extract_state_t *s = &x->s;
    s->ts_input += (s->ts_seen++ ? 1 : 0) + value_len;
    if (s->ts_error == 0 && s->ts_input > CTX_WIRE_TRACESTATE_MAX_INPUT)
        s->ts_error = CTX_ELIMIT;
    if (s->ts_error == 0) {
        int rc = ctx__trace_state_append(value, value_len, x->ts, sizeof x->ts, &s->ts_len,
                                         &s->ts_members);
        if (rc != 0)
            s->ts_error = rc == CTX_ETRUNCATED ? CTX_ELIMIT : rc;
    }
}

static void on_timeout(extract_state_t *x, const char *value, size_t value_len) {
    if (x->to_seen++ == 0)
        x->rep.deadline = ctx_wire_timeout_parse(value, value_len, &x->timeout_ns) == 0 ? 1 : CTX_EPARSE;
    else
        x->rep.deadline = CTX_EPARSE;
}

/* Header name `name` (`len` bytes) is `lower`, a lowercase literal of that
 * length, in any case.  Names usually arrive in lowercase (HTTP/2 and gRPC
 * require it): a compare of constant length, which the compiler makes a
 * few word compares, settles those; other spellings take the
 * case-insensitive compare. */
static inline int name_is(const char *name, const char *lower, size_t len) {
    return memcmp(name, lower, len) == 0 || ctx_wire_name_equal(name, len, lower, len);
}

static int on_header(const char *name, size_t name_len, const char *value, size_t value_len,
                     void *user) {
    extract_t *x = user;
    if (!value) {
        if (value_len)
            return 0; /* a broken carrier: nothing to read */
        value = "";
    }
    switch (name_len) { /* the four names differ in length */
    case sizeof CTX_WIRE_TRACEPARENT - 1:
        if (name_is(name, CTX_WIRE_TRACEPARENT, sizeof CTX_WIRE_TRACEPARENT - 1))
            on_traceparent(&x->s, value, value_len);
        break;
    case sizeof CTX_WIRE_TRACESTATE - 1:
        if (name_is(name, CTX_WIRE_TRACESTATE, sizeof CTX_WIRE_TRACESTATE - 1))
            on_tracestate(x, value, value_len);
        break;
    case sizeof CTX_WIRE_GRPC_TIMEOUT - 1:
        if (name_is(name, CTX_WIRE_GRPC_TIMEOUT, sizeof CTX_WIRE_GRPC_TIMEOUT - 1))
            on_timeout(&x->s, value, value_len);
        break;
    case sizeof CTX_WIRE_BAGGAGE - 1:
        if (name_is(name, CTX_WIRE_BAGGAGE, sizeof CTX_WIRE_BAGGAGE - 1)) {
            if (!x->s.rep.baggage) {
                memset(&x->s.scan, 0, sizeof x->s.scan);
                x->s.rep.baggage = 1;
            }
            return ctx__baggage_scan(&x->s.scan, value, value_len, on_member, &x->s);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* With CTX_WIRE_STRICT: the first reason to fail, or 0. */
static int strict_error(const ctx_wire_extract_report_t *r) {
    if (r->traceparent < 0)
        return r->traceparent;
    if (r->tracestate < 0 && r->tracestate != CTX_ENOTFOUND)
        return r->tracestate;
    if (r->tracestate_duplicate)
        return CTX_EPARSE;
    if (r->deadline < 0)
        return r->deadline;
    if (r->baggage_over_limit || r->baggage_truncated)
        return CTX_ELIMIT;
    if (r->baggage_malformed || r->baggage_duplicate || r->baggage_rejected)
        return CTX_EPARSE;
    return 0;
}

/* The report's tracestate verdict, once every header was seen; dedupes
 * the list in place. */
static void finish_tracestate(extract_t *x) {
    extract_state_t *s = &x->s;
    ctx_wire_extract_report_t *r = &s->rep;
    if (!s->ts_seen)
        return;
    if (r->traceparent != 1) {
        r->tracestate = CTX_ENOTFOUND; /* §3.3: not parsed without a traceparent */
    } else if (s->ts_error) {
        r->tracestate = s->ts_error;
    } else {
        r->tracestate_duplicate = (size_t)ctx__trace_state_dedupe(x->ts, &s->ts_len);
        r->tracestate = 1;
    }
}

/* Adds `value` of `var` to the values found. */
static void keep(extract_state_t *s, ctx_var_t *var, void *value) {
    s->vars[s->found] = var;
    s->values[s->found++] = value;
}

/* Releases every value found (the call failed before they had a context). */
static void release_found(extract_state_t *s) {
    for (size_t i = 0; i < s->found; i++) {
        const ctx_value_ops_t *ops = ctx_var_ops(s->vars[i]);
        if (ops->release)
            ops->release(s->values[i], ops->user);
    }
}

/* Gives the new context a root scope (the remote caller's time: nothing
 * local can cancel it) with the deadline grpc-timeout gave. */
static int set_deadline(ctx_context_t *ctx, int64_t timeout_ns) {
    ctx_cancel_options_t o = timeout_options(timeout_ns);
    ctx_cancel_scope_t *scope;
    int rc = ctx_cancel_scope_new(NULL, &o, &scope);
    if (rc != 0)
        return rc;
    rc = ctx_cancel_context_set(ctx, scope);
    ctx_cancel_scope_release(scope); /* the context holds it now, or nobody */
    return rc;
}

/* Adds the trace found to the values: 0 or CTX_ENOMEM. */
static int keep_trace(extract_t *x) {
    extract_state_t *s = &x->s;
    if (s->rep.traceparent != 1)
        return 0;
    size_t len = s->rep.tracestate == 1 ? s->ts_len : 0;
    trace_value_t *t = trace_value_new(&s->tp, x->ts, len);
    if (!t)
        return CTX_ENOMEM;
    keep(s, s->w->trace_var, t);
    return 0;
}

/* The new context: the values found, in one pass (ctx_context_new_from),
 * then the deadline's scope.  On failure every value found is released,
 * and *out is untouched. */
static int make_context(extract_t *x, ctx_context_t **out) {
    extract_state_t *s = &x->s;
    ctx_context_t *ctx = NULL;
    int rc = keep_trace(x);
    if (rc == 0)
        rc = ctx_context_new_from(s->vars, s->values, s->found, &ctx);
    if (rc != 0) {
        release_found(s);
        return rc;
    }
    if (s->rep.deadline == 1 && (rc = set_deadline(ctx, s->timeout_ns)) != 0) {
        ctx_context_release(ctx); /* and the values with it */
        return rc;
    }
    *out = ctx;
    return 0;
}

int ctx_wire_extract(ctx_wire_t *w, const ctx_wire_carrier_t *carrier, unsigned flags,
                     ctx_context_t **out, ctx_wire_extract_report_t *report) {
    ctx_wire_carrier_t c;
    if (!w || !out || ctx__wire_carrier_in(carrier, &c) != 0 || !c.iterate ||
        (report && report->size < sizeof(size_t)))
        return CTX_EINVAL;
    mark_used(w);
    extract_t x;
    extract_init(&x.s, w);
    x.ts[0] = '\0';

    int rc = c.iterate(c.self, on_header, &x);
    if (x.s.error != 0)
        rc = x.s.error;
    else if (rc > 0) /* on_header never returns one: the carrier's own */
        rc = CTX_ECALLBACK;

    ctx_wire_extract_report_t *r = &x.s.rep;
    if (r->baggage) {
        r->baggage_malformed = x.s.scan.stats.malformed;
        r->baggage_over_limit = x.s.scan.stats.over_limit;
        r->baggage_truncated = x.s.scan.stats.truncated;
    }
    finish_tracestate(&x);
    int strict = rc == 0 && (flags & CTX_WIRE_STRICT) ? strict_error(r) : 0;
    if (rc == 0 && !strict)
        rc = make_context(&x, out);
    else
        release_found(&x.s);
    if (report && (rc == 0 || strict))
        ctx__struct_out(report, r, sizeof *r);
    return rc == 0 ? strict : rc;
}
