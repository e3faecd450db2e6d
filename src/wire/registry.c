/*
 * registry.c — which variables cross the wire, and the two directions:
 * inject (context → headers) and extract (headers → new context).
 *
 * A registry (ctx_wire_t) is a reference-counted record:
 *
 *   ctx_wire_t ─┬─ refs, used (registration closed once set)
 *               ├─ trace_var     "ctx.trace":    trace_value_t (parent +
 *               │                                normalised tracestate)
 *               ├─ deadline_var  "ctx.deadline": deadline_value_t (absolute
 *               │                                CLOCK_MONOTONIC ns)
 *               └─ regs[0..count)  { var (retained), baggage key }
 *
 * Registration happens before use, on one thread; the first inject,
 * extract or trace/deadline call sets `used`, after which the table is
 * read-only and every call may run on any thread without a lock.  (A
 * register after that fails with CTX_EBUSY rather than racing.)
 *
 * Values of the built-in variables are immutable heap records, released by
 * the variables' `release` operation when no context holds them any more;
 * they also have a `format` operation, so a log line made with
 * ctx_context_format shows the trace and the deadline.
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
 * normalised and appended to one stack buffer, and checked for duplicate
 * keys at the end (several headers form one list); baggage values are
 * scanned as they come (ctx__baggage_scan keeps the byte offset and member
 * count across headers), and each member whose key is registered is decoded
 * by its variable's `decode` and set in the new context with
 * ctx_context_set — O(1) amortised per entry, so the whole extract is
 * O(number of entries).  The trace is set last, because whether the
 * tracestate may be used depends on the traceparent (§3.3 of Trace Context:
 * no valid traceparent, no tracestate), which may come after it.  Only an
 * allocation failure (or, with CTX_WIRE_STRICT, any drop) fails the call;
 * then the half-built context is released, which releases every value
 * already in it.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "wire/wire_internal.h"

typedef struct reg {
    ctx_var_t *var;
    char *key; /* NUL terminated */
    size_t key_len;
} reg_t;

struct ctx_wire {
    atomic_size_t refs;
    atomic_int used;
    ctx_var_t *trace_var;
    ctx_var_t *deadline_var;
    size_t count;
    reg_t regs[CTX_WIRE_MAX_VARS];
};

/* ---- built-in values ---- */

typedef struct trace_value {
    size_t size; /* bytes allocated */
    ctx_wire_traceparent_t parent;
    size_t state_len;
    char state[]; /* normalised, NUL terminated */
} trace_value_t;

typedef struct deadline_value {
    int64_t at_ns;
} deadline_value_t;

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

static void deadline_release(void *value, void *user) {
    (void)user;
    ctx__wire_free(value, sizeof(deadline_value_t));
}

static int deadline_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    int64_t left = ((const deadline_value_t *)value)->at_ns - ctx_wire_now_ns();
    if (left <= 0)
        return snprintf(buf, cap, "expired");
    return snprintf(buf, cap, "%.3fms left", (double)left / 1e6);
}

static const ctx_value_ops_t trace_ops = {.size = sizeof(ctx_value_ops_t),.release = trace_release, .format = trace_format};
static const ctx_value_ops_t deadline_ops = {.size = sizeof(ctx_value_ops_t),.release = deadline_release,
                                             .format = deadline_format};

static trace_value_t *trace_value_new(const ctx_wire_traceparent_t *parent, const char *state,
                                      size_t state_len) {
    size_t size = sizeof(trace_value_t) + state_len + 1;
    trace_value_t *t = ctx__wire_malloc(size);
    if (!t)
        return NULL;
    t->size = size;
    t->parent = *parent;
    t->state_len = state_len;
    if (state_len)
        memcpy(t->state, state, state_len);
    t->state[state_len] = '\0';
    return t;
}

static deadline_value_t *deadline_value_new(int64_t at_ns) {
    deadline_value_t *d = ctx__wire_malloc(sizeof *d);
    if (d)
        d->at_ns = at_ns;
    return d;
}

static int64_t add_saturating(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

/* ---- the registry ---- */

int ctx_wire_new(ctx_wire_t **out) {
    if (!out)
        return CTX_EINVAL;
    ctx_wire_t *w = ctx__wire_malloc(sizeof *w);
    if (!w)
        return CTX_ENOMEM;
    memset(w, 0, sizeof *w);
    atomic_init(&w->refs, 1);
    atomic_init(&w->used, 0);
    ctx_var_options_t topt = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &trace_ops};
    ctx_var_options_t dopt = {.size = sizeof(ctx_var_options_t), .default_value = NULL, .has_default = 0, .ops = &deadline_ops};
    int rc = ctx_var_new("ctx.trace", &topt, &w->trace_var);
    if (rc == 0) {
        rc = ctx_var_new("ctx.deadline", &dopt, &w->deadline_var);
        if (rc != 0)
            ctx_var_release(w->trace_var);
    }
    if (rc != 0) {
        ctx__wire_free(w, sizeof *w);
        return rc;
    }
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
    ctx_var_release(w->trace_var);
    ctx_var_release(w->deadline_var);
    ctx__wire_free(w, sizeof *w);
}

static void mark_used(ctx_wire_t *w) {
    if (!atomic_load_explicit(&w->used, memory_order_relaxed))
        atomic_store_explicit(&w->used, 1, memory_order_relaxed);
}

int ctx_wire_register(ctx_wire_t *w, ctx_var_t *var, const char *baggage_key) {
    if (!w || !var || !baggage_key)
        return CTX_EINVAL;
    size_t key_len = strlen(baggage_key);
    const ctx_value_ops_t *ops = ctx_var_ops(var);
    if (key_len > 256 || !ctx_wire_baggage_key_valid(baggage_key, key_len) || !ops->encode ||
        !ops->decode)
        return CTX_EINVAL;
    if (atomic_load_explicit(&w->used, memory_order_relaxed))
        return CTX_EBUSY;
    for (size_t i = 0; i < w->count; i++)
        if (w->regs[i].var == var ||
            (w->regs[i].key_len == key_len && memcmp(w->regs[i].key, baggage_key, key_len) == 0))
            return CTX_EINVAL;
    if (w->count == CTX_WIRE_MAX_VARS)
        return CTX_ELIMIT;
    char *key = ctx__wire_malloc(key_len + 1);
    if (!key)
        return CTX_ENOMEM;
    memcpy(key, baggage_key, key_len + 1);
    w->regs[w->count].var = ctx_var_retain(var);
    w->regs[w->count].key = key;
    w->regs[w->count].key_len = key_len;
    w->count++;
    return 0;
}

ctx_var_t *ctx_wire_trace_var(ctx_wire_t *w) { return w ? w->trace_var : NULL; }
ctx_var_t *ctx_wire_deadline_var(ctx_wire_t *w) { return w ? w->deadline_var : NULL; }

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

static int set_trace(ctx_wire_t *w, const ctx_wire_traceparent_t *parent, const char *state,
                     size_t state_len) {
    trace_value_t *t = trace_value_new(parent, state, state_len);
    if (!t)
        return CTX_ENOMEM;
    int rc = ctx_var_set(w->trace_var, t, NULL);
    if (rc != 0)
        trace_release(t, NULL);
    return rc;
}

int ctx_wire_trace_set(ctx_wire_t *w, const ctx_wire_traceparent_t *parent, const char *state,
                       size_t state_len) {
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
    return set_trace(w, parent, norm, norm_len);
}

int ctx_wire_trace_start(ctx_wire_t *w, uint8_t flags, ctx_wire_traceparent_t *out) {
    if (!w)
        return CTX_EINVAL;
    mark_used(w);
    ctx_wire_traceparent_t p;
    ctx_wire_traceparent_new(flags, &p);
    int rc = set_trace(w, &p, NULL, 0);
    if (rc == 0 && out)
        *out = p;
    return rc;
}

int ctx_wire_deadline_set(ctx_wire_t *w, int64_t timeout_ns) {
    if (!w)
        return CTX_EINVAL;
    mark_used(w);
    deadline_value_t *d = deadline_value_new(add_saturating(ctx_wire_now_ns(), timeout_ns));
    if (!d)
        return CTX_ENOMEM;
    int rc = ctx_var_set(w->deadline_var, d, NULL);
    if (rc != 0)
        deadline_release(d, NULL);
    return rc;
}

int ctx_wire_deadline_get(ctx_wire_t *w, ctx_context_t *ctx, int64_t *deadline_ns) {
    if (!w || !deadline_ns)
        return CTX_EINVAL;
    mark_used(w);
    void *v;
    int rc = lookup(ctx, w->deadline_var, &v);
    if (rc == 0)
        *deadline_ns = ((const deadline_value_t *)v)->at_ns;
    return rc;
}

int ctx_wire_deadline_remaining(ctx_wire_t *w, ctx_context_t *ctx, int64_t *remaining_ns) {
    int64_t at;
    if (!remaining_ns)
        return CTX_EINVAL;
    int rc = ctx_wire_deadline_get(w, ctx, &at);
    if (rc == 0)
        *remaining_ns = add_saturating(at, -ctx_wire_now_ns());
    return rc;
}

/* ---- inject ---- */

int ctx_wire_inject(ctx_wire_t *w, ctx_context_t *ctx, const ctx_wire_carrier_t *carrier,
                    unsigned flags) {
    if (!w || !carrier || !carrier->set)
        return CTX_EINVAL;
    mark_used(w);
    void *v;

    /* Every header text first. */
    char tp[CTX_WIRE_TRACEPARENT_LEN + 1];
    const trace_value_t *trace = NULL;
    if (lookup(ctx, w->trace_var, &v) == 0) {
        trace = v;
        ctx_wire_traceparent_t out = trace->parent;
        if (!(flags & CTX_WIRE_SAME_PARENT))
            ctx_wire_traceparent_child(&trace->parent, &out);
        if (ctx_wire_traceparent_format(&out, tp, sizeof tp) < 0)
            trace = NULL;
    }
    char timeout[CTX_WIRE_TIMEOUT_MAX_LEN + 1];
    int timeout_len = -1;
    if (lookup(ctx, w->deadline_var, &v) == 0) {
        int64_t left = add_saturating(((const deadline_value_t *)v)->at_ns, -ctx_wire_now_ns());
        timeout_len = ctx_wire_timeout_format(left, timeout, sizeof timeout);
    }
    char baggage[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    char text[CTX_WIRE_BAGGAGE_MAX_BYTES + 1];
    ctx_wire_baggage_writer_t bw;
    ctx_wire_baggage_writer_init(&bw, baggage, sizeof baggage);
    int left_out = 0;
    for (size_t i = 0; i < w->count; i++) {
        const reg_t *r = &w->regs[i];
        if (lookup(ctx, r->var, &v) != 0)
            continue;
        int n = ctx_var_ops(r->var)->encode(v, text, sizeof text, ctx_var_ops(r->var)->user);
        if (n < 0)
            return n;
        if ((size_t)n >= sizeof text ||
            ctx_wire_baggage_append(&bw, r->key, r->key_len, text, (size_t)n, NULL, 0) != 0) {
            left_out++; /* past the limits of W3C Baggage §3.3.3 */
        }
    }

    /* Then the carrier. */
    int rc = 0;
    if (trace) {
        rc = carrier->set(carrier->self, CTX_WIRE_TRACEPARENT, tp, CTX_WIRE_TRACEPARENT_LEN);
        if (rc == 0 && trace->state_len)
            rc = carrier->set(carrier->self, CTX_WIRE_TRACESTATE, trace->state, trace->state_len);
    }
    if (rc == 0 && timeout_len > 0)
        rc = carrier->set(carrier->self, CTX_WIRE_GRPC_TIMEOUT, timeout, (size_t)timeout_len);
    if (rc == 0 && bw.members > 0)
        rc = carrier->set(carrier->self, CTX_WIRE_BAGGAGE, baggage, bw.len);
    if (rc > 0) /* not a count of members left out */
        rc = CTX_ECALLBACK;
    return rc != 0 ? rc : left_out;
}

/* ---- extract ---- */

typedef struct extract {
    ctx_wire_t *w;
    ctx_context_t *ctx;
    unsigned flags;
    int error; /* a hard error (CTX_ENOMEM, or a decode's CTX_ENOMEM) */
    ctx_wire_report_t *rep;

    int tp_seen;
    ctx_wire_traceparent_t tp;

    int ts_seen;
    int ts_error;
    size_t ts_input; /* combined raw length, joining commas included */
    size_t ts_len;
    size_t ts_members;
    char ts[CTX_WIRE_TRACESTATE_MAX_LEN + 1];

    int to_seen;
    int64_t timeout_ns;

    ctx__baggage_scan_t scan;
} extract_t;

static int on_member(const ctx_wire_baggage_member_t *m, void *user) {
    extract_t *x = user;
    const reg_t *r = NULL;
    for (size_t i = 0; i < x->w->count; i++) {
        if (x->w->regs[i].key_len == m->key_len && memcmp(x->w->regs[i].key, m->key, m->key_len) == 0) {
            r = &x->w->regs[i];
            break;
        }
    }
    if (!r) {
        x->rep->baggage_unknown++;
        return 0;
    }
    if (ctx_context_contains(x->ctx, r->var) == 1) {
        x->rep->baggage_duplicate++;
        return 0;
    }
    void *value = NULL;
    int rc = ctx_var_ops(r->var)->decode(m->value, m->value_len, &value, ctx_var_ops(r->var)->user);
    if (rc == CTX_ENOMEM) {
        x->error = rc;
        return rc;
    }
    if (rc != 0) {
        x->rep->baggage_rejected++;
        return 0;
    }
    rc = ctx_context_set(x->ctx, r->var, value);
    if (rc != 0) {
        if (ctx_var_ops(r->var)->release)
            ctx_var_ops(r->var)->release(value, ctx_var_ops(r->var)->user);
        x->error = rc;
        return rc;
    }
    x->rep->baggage_used++;
    return 0;
}

static int on_header(const char *name, size_t name_len, const char *value, size_t value_len,
                     void *user) {
    extract_t *x = user;
    if (!value) {
        if (value_len)
            return 0; /* a broken carrier: nothing to read */
        value = "";
    }
    if (ctx_wire_name_equal(name, name_len, CTX_WIRE_TRACEPARENT, 11)) {
        if (x->tp_seen++ == 0)
            x->rep->traceparent = ctx_wire_traceparent_parse(value, value_len, &x->tp) == 0 ? 1 : CTX_EPARSE;
        else
            x->rep->traceparent = CTX_EPARSE; /* one traceparent only */
    } else if (ctx_wire_name_equal(name, name_len, CTX_WIRE_TRACESTATE, 10)) {
        x->ts_input += (x->ts_seen++ ? 1 : 0) + value_len;
        if (x->ts_error == 0 && x->ts_input > CTX_WIRE_TRACESTATE_MAX_INPUT)
            x->ts_error = CTX_ELIMIT;
        if (x->ts_error == 0) {
            int rc = ctx__trace_state_append(value, value_len, x->ts, sizeof x->ts, &x->ts_len,
                                             &x->ts_members);
            if (rc != 0)
                x->ts_error = rc == CTX_ETRUNCATED ? CTX_ELIMIT : rc;
        }
    } else if (ctx_wire_name_equal(name, name_len, CTX_WIRE_GRPC_TIMEOUT, 12)) {
        if (x->to_seen++ == 0)
            x->rep->deadline = ctx_wire_timeout_parse(value, value_len, &x->timeout_ns) == 0 ? 1 : CTX_EPARSE;
        else
            x->rep->deadline = CTX_EPARSE;
    } else if (ctx_wire_name_equal(name, name_len, CTX_WIRE_BAGGAGE, 7)) {
        x->rep->baggage = 1;
        int rc = ctx__baggage_scan(&x->scan, value, value_len, on_member, x);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* With CTX_WIRE_STRICT: the first reason to fail, or 0. */
static int strict_error(const ctx_wire_report_t *r) {
    if (r->traceparent < 0)
        return r->traceparent;
    if (r->tracestate < 0 && r->tracestate != CTX_ENOTFOUND)
        return r->tracestate;
    if (r->deadline < 0)
        return r->deadline;
    if (r->baggage_over_limit || r->baggage_truncated)
        return CTX_ELIMIT;
    if (r->baggage_malformed || r->baggage_duplicate || r->baggage_rejected)
        return CTX_EPARSE;
    return 0;
}

int ctx_wire_extract(ctx_wire_t *w, const ctx_wire_carrier_t *carrier, unsigned flags,
                     ctx_context_t **out, ctx_wire_report_t *report) {
    if (!w || !carrier || !carrier->iterate || !out)
        return CTX_EINVAL;
    mark_used(w);
    ctx_wire_report_t local;
    extract_t x;
    x.w = w;
    x.flags = flags;
    x.error = 0;
    x.rep = report ? report : &local;
    memset(x.rep, 0, sizeof *x.rep);
    x.tp_seen = x.ts_seen = x.ts_error = x.to_seen = 0;
    x.ts_input = x.ts_len = x.ts_members = 0;
    x.ts[0] = '\0';
    x.timeout_ns = 0;
    memset(&x.scan, 0, sizeof x.scan);
    int rc = ctx_context_new(&x.ctx);
    if (rc != 0)
        return rc;

    rc = carrier->iterate(carrier->self, on_header, &x);
    if (x.error != 0)
        rc = x.error;
    else if (rc > 0) /* on_header never returns one: the carrier's own */
        rc = CTX_ECALLBACK;

    ctx_wire_report_t *r = x.rep;
    r->baggage_malformed = x.scan.stats.malformed;
    r->baggage_over_limit = x.scan.stats.over_limit;
    r->baggage_truncated = x.scan.stats.truncated;
    if (x.ts_seen) {
        if (r->traceparent != 1)
            r->tracestate = CTX_ENOTFOUND; /* §3.3: not parsed without a traceparent */
        else if (x.ts_error == 0 && ctx__trace_state_check_unique(x.ts, x.ts_len) != 0)
            r->tracestate = CTX_EPARSE;
        else
            r->tracestate = x.ts_error ? x.ts_error : 1;
    }
    if (rc == 0 && (flags & CTX_WIRE_STRICT))
        rc = strict_error(r);
    if (rc == 0 && r->traceparent == 1) {
        trace_value_t *t = trace_value_new(&x.tp, x.ts, r->tracestate == 1 ? x.ts_len : 0);
        rc = t ? ctx_context_set(x.ctx, w->trace_var, t) : CTX_ENOMEM;
        if (rc != 0 && t)
            trace_release(t, NULL);
    }
    if (rc == 0 && r->deadline == 1) {
        deadline_value_t *d = deadline_value_new(add_saturating(ctx_wire_now_ns(), x.timeout_ns));
        rc = d ? ctx_context_set(x.ctx, w->deadline_var, d) : CTX_ENOMEM;
        if (rc != 0 && d)
            deadline_release(d, NULL);
    }
    if (rc != 0) {
        ctx_context_release(x.ctx);
        return rc;
    }
    *out = x.ctx;
    return 0;
}
