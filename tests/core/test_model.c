/* SPDX-License-Identifier: MIT */
/*
 * test_model.c — a randomized model test of the core's public API.
 *
 * A reference model runs beside the library: every context is a plain array
 * (one slot per variable: has a value? which one?), copied whole on every
 * copy; tokens record their variable, their context and the old value; the
 * thread's context stack is an array.  Each step picks a random operation —
 * set (with and without token), reset with valid and stale tokens (used,
 * other variable, other context), token release, get, get_for_write (with
 * injected clone failures), copy_current, copy, copy_only, context_new,
 * ctx_context_set, context release, enter, exit (valid and invalid), run into
 * a context (whose function runs random steps of its own, nested), the
 * mapping view, iteration, the formatter, is_entered, and the thread's
 * release — applies it to both and compares every result, error code
 * included.  After every step every variable is read from the current
 * context and compared.
 *
 * Values are heap objects with a `released` flag: a release twice, a value
 * returned or still held after its release, and at the end any value not
 * released exactly once fail the test.  get_for_write must clone when the
 * model knows another live context or token holds the value, and must not
 * clone when no one else can.
 *
 * Seeded by CTX_TEST_SEED (default below); CTX_TEST_STEPS sets the number of
 * steps (default 120000 per run, 1/10 of that under valgrind or TSan).  A
 * failure prints the seed and the step.
 */
#include "core_test.h"

#define MAX_VARS 48
#define MAX_SLOTS 10
#define MAX_TOKENS 40
#define MAX_STACK 6
#define MAX_DEPTH 2

/* ---- model values ---- */

typedef struct mval {
    int payload;
    int released;      /* release calls */
    int returned;      /* handed to a call that failed: the test's again */
    int clone_of_default;
} mval_t;

typedef struct registry {
    mval_t **items;
    size_t n, cap;
} registry_t;

static registry_t registry;
static long double_releases;
static long clone_calls;

static mval_t *mval_new(int payload) {
    mval_t *v = calloc(1, sizeof *v);
    if (!v)
        abort();
    v->payload = payload;
    if (registry.n == registry.cap) {
        registry.cap = registry.cap ? registry.cap * 2 : 1024;
        registry.items = realloc(registry.items, registry.cap * sizeof(mval_t *));
        if (!registry.items)
            abort();
    }
    registry.items[registry.n++] = v;
    return v;
}

static void registry_free(void) {
    for (size_t i = 0; i < registry.n; i++)
        free(registry.items[i]);
    free(registry.items);
    memset(&registry, 0, sizeof registry);
}

static int clone_fail_code;

static void mval_release(void *value, void *user) {
    (void)user;
    if (!value)
        return;
    mval_t *v = value;
    if (v->released)
        double_releases++;
    v->released++;
}

static int mval_clone(const void *value, void **out, void *user) {
    (void)user;
    clone_calls++;
    if (clone_fail_code)
        return clone_fail_code;
    const mval_t *src = value;
    *out = mval_new(src ? src->payload : 0);
    return 0;
}

static int mval_format(const void *value, char *buf, size_t cap, void *user) {
    (void)user;
    if (!value)
        return snprintf(buf, cap, "-");
    return snprintf(buf, cap, "%d", ((const mval_t *)value)->payload);
}

static const ctx_value_ops_t ops_with_clone = {
    .size = sizeof(ctx_value_ops_t),
    .release = mval_release, .format = mval_format, .clone = mval_clone};
static const ctx_value_ops_t ops_without_clone = {.size = sizeof(ctx_value_ops_t),.release = mval_release,
                                                  .format = mval_format};

/* Variable kinds by index % 6. */
static int kind_has_default(int i) {
    int k = i % 6;
    return k == 1 || k == 3 || k == 4 || k == 5;
}
static int kind_default_is_null(int i) { return i % 6 == 5; }
static int kind_has_clone(int i) {
    int k = i % 6;
    return k == 1 || k == 2 || k == 4;
}
static int kind_nullable(int i) { return !kind_has_clone(i); }

/* ---- model contexts and tokens ---- */

typedef struct mctx {
    ctx_context_t *c; /* NULL for a thread base context */
    uint64_t serial;  /* identity, for the tokens */
    unsigned char has[MAX_VARS];
    mval_t *val[MAX_VARS];
    int handle;  /* the test holds a reference (in a slot) */
    int entered; /* on the stack */
    int base;    /* the thread's live base context */
    struct mctx *next;
} mctx_t;

typedef struct mtok {
    ctx_token_t *t;
    int var;
    uint64_t ctx_serial;
    int old_has;
    mval_t *old;
    int used;
} mtok_t;

typedef struct model {
    ctx_test_rng_t rng;
    uint64_t seed;
    long step;
    int nvars;
    ctx_var_t *vars[MAX_VARS];
    mval_t *defaults[MAX_VARS];
    mctx_t *all; /* every model context not yet collected */
    uint64_t next_serial;
    mctx_t *base;
    mctx_t *slots[MAX_SLOTS];
    mctx_t *stack[MAX_STACK];
    int sp;
    int floor; /* stack entries below this belong to enclosing runs */
    mtok_t toks[MAX_TOKENS];
    int ntok;
    long ops[32];
    long outcomes[32];
} model_t;

/* Outcomes counted to show what a run covered. */
enum {
    OUT_RESET_OK, OUT_RESET_USED, OUT_RESET_VAR, OUT_RESET_CTX,
    OUT_GFW_CLONED, OUT_GFW_PRIVATE, OUT_GFW_MAYBE, OUT_GFW_NOCLONE,
    OUT_GFW_DEFAULT, OUT_GFW_CLONE_FAILED,
    OUT_ENTER_EENTERED, OUT_EXIT_OK, OUT_EXIT_NOTCURRENT, OUT_EXIT_NOTENTERED,
    OUT_RUN_OK, OUT_RUN_EENTERED, OUT_RELEASE_OK, OUT_RELEASE_EBUSY,
    OUT_SET_EENTERED, OUT_COUNT
};
static const char *const outcome_names[OUT_COUNT] = {
    "reset_ok", "reset_used", "reset_var", "reset_ctx",
    "gfw_cloned", "gfw_private", "gfw_maybe", "gfw_noclone",
    "gfw_default", "gfw_clone_failed",
    "enter_eentered", "exit_ok", "exit_notcurrent", "exit_notentered",
    "run_ok", "run_eentered", "thread_release_ok", "thread_release_ebusy",
    "context_set_eentered"};

static void model_fail(model_t *m, const char *cond, int line,
                       const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr,
            "model failure at test_model.c:%d: %s — %s\n"
            "  seed=%llu step=%ld (rerun: CTX_TEST_SEED=%llu "
            "CTX_TEST_STEPS=%ld)\n",
            line, cond, msg, (unsigned long long)m->seed, m->step,
            (unsigned long long)m->seed, m->step + 1);
    /* Best effort: leave the thread usable for the next test. */
    for (int i = m->sp - 1; i >= 0; i--)
        ctx_context_exit(m->stack[i]->c);
    m->sp = 0;
    fail_msg("model check failed (seed %llu, step %ld): %s — %s",
             (unsigned long long)m->seed, m->step, cond, msg);
}

#define MCHECK(m, cond, ...)                                                   \
    do {                                                                       \
        if (!(cond))                                                           \
            model_fail((m), #cond, __LINE__, __VA_ARGS__);                     \
    } while (0)

#define MCHECK_RC(m, got, want, what)                                          \
    do {                                                                       \
        int g_ = (got), w_ = (want);                                           \
        if (g_ != w_)                                                          \
            model_fail((m), what, __LINE__, "got %d (%s), want %d (%s)", g_,   \
                       ctx_error_name(g_), w_, ctx_error_name(w_));            \
    } while (0)

static uint64_t below(model_t *m, uint64_t n) {
    return ctx_test_rng_below(&m->rng, n);
}

static mctx_t *mctx_new(model_t *m, const mctx_t *from) {
    mctx_t *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    if (from) {
        memcpy(c->has, from->has, sizeof c->has);
        memcpy(c->val, from->val, sizeof c->val);
    }
    c->serial = ++m->next_serial;
    c->next = m->all;
    m->all = c;
    return c;
}

static mctx_t *cur(model_t *m) {
    return m->sp > 0 ? m->stack[m->sp - 1] : m->base;
}

static int token_refers(model_t *m, const mctx_t *c) {
    for (int i = 0; i < m->ntok; i++)
        if (m->toks[i].ctx_serial == c->serial)
            return 1;
    return 0;
}

/* Frees model contexts nobody can reach (neither the test, the stack, the
 * thread nor a token). */
static void collect(model_t *m) {
    mctx_t **pp = &m->all;
    while (*pp) {
        mctx_t *c = *pp;
        if (!c->handle && !c->entered && !c->base && !token_refers(m, c)) {
            *pp = c->next;
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* Who else holds value `p` of variable `vi` (p != NULL): 2 someone alive for
 * sure (a context the test, the stack or the thread holds, or a token's old
 * value), 1 maybe (a context the test dropped that a token may keep alive),
 * 0 no one. */
static int holders(model_t *m, int vi, const mval_t *p, const mctx_t *self) {
    int maybe = 0;
    for (int i = 0; i < m->ntok; i++)
        if (m->toks[i].old_has && m->toks[i].old == p)
            return 2;
    for (mctx_t *c = m->all; c; c = c->next) {
        if (c == self || !c->has[vi] || c->val[vi] != p)
            continue;
        if (c->handle || c->entered || c->base)
            return 2;
        maybe = 1;
    }
    return maybe;
}

/* ---- checks ---- */

static void check_get(model_t *m, int vi) {
    mctx_t *c = cur(m);
    static char untouched;
    void *out = &untouched;
    int rc = ctx_var_get(m->vars[vi], &out);
    if (c->has[vi]) {
        MCHECK_RC(m, rc, CTX_VALUE, "get of a set variable");
        MCHECK(m, out == c->val[vi], "var %d: got %p want %p", vi, out,
               (void *)c->val[vi]);
    } else if (kind_has_default(vi)) {
        MCHECK_RC(m, rc, CTX_DEFAULT, "get of an unset variable with default");
        MCHECK(m, out == m->defaults[vi], "var %d: default %p want %p", vi,
               out, (void *)m->defaults[vi]);
    } else {
        MCHECK_RC(m, rc, CTX_ENOTFOUND, "get of an unset variable");
        MCHECK(m, out == &untouched, "var %d: *out changed on ENOTFOUND", vi);
    }
    if (rc >= 0 && out)
        MCHECK(m, ((mval_t *)out)->released == 0,
               "var %d: get returned a released value", vi);
}

static void check_view(model_t *m, mctx_t *c) {
    size_t n = 0;
    for (int i = 0; i < m->nvars; i++) {
        n += c->has[i];
        void *out = NULL;
        int rc = ctx_context_get(c->c, m->vars[i], &out);
        MCHECK_RC(m, rc, c->has[i] ? 0 : CTX_ENOTFOUND, "ctx_context_get");
        if (c->has[i])
            MCHECK(m, out == c->val[i], "view var %d: %p want %p", i, out,
                   (void *)c->val[i]);
        MCHECK_RC(m, ctx_context_contains(c->c, m->vars[i]), c->has[i],
                  "ctx_context_contains");
    }
    MCHECK(m, ctx_context_length(c->c) == n, "length %zu want %zu",
           ctx_context_length(c->c), n);
    MCHECK(m, ctx_context_is_entered(c->c) == c->entered,
           "is_entered %d want %d", ctx_context_is_entered(c->c), c->entered);
}

static int var_index(model_t *m, const ctx_var_t *v) {
    for (int i = 0; i < m->nvars; i++)
        if (m->vars[i] == v)
            return i;
    return -1;
}

static void check_iter(model_t *m, ctx_context_t *real, const mctx_t *c) {
    ctx_iter_t it;
    MCHECK_RC(m, ctx_iter_init(&it, real), 0, "ctx_iter_init");
    int seen[MAX_VARS] = {0};
    ctx_var_t *k;
    void *v;
    size_t n = 0;
    while (ctx_iter_next(&it, &k, &v)) {
        int i = var_index(m, k);
        MCHECK(m, i >= 0, "iteration yielded an unknown variable");
        MCHECK(m, c->has[i] && c->val[i] == v && !seen[i],
               "iteration: var %d value %p (model has=%d val=%p seen=%d)", i,
               v, c->has[i], (void *)c->val[i], seen[i]);
        seen[i] = 1;
        n++;
    }
    ctx_iter_clear(&it);
    size_t want = 0;
    for (int i = 0; i < m->nvars; i++)
        want += c->has[i];
    MCHECK(m, n == want, "iteration count %zu want %zu", n, want);
}

static void check_format(model_t *m, ctx_context_t *real) {
    char want[MAX_VARS * 24 + 1] = "";
    size_t wlen = 0;
    ctx_iter_t it;
    MCHECK_RC(m, ctx_iter_init(&it, real), 0, "ctx_iter_init");
    ctx_var_t *k;
    void *v;
    while (ctx_iter_next(&it, &k, &v)) {
        char item[24];
        mval_format(v, item, sizeof item, NULL);
        wlen += (size_t)snprintf(want + wlen, sizeof want - wlen, "%s%s=%s",
                                 wlen ? " " : "", ctx_var_name(k), item);
    }
    ctx_iter_clear(&it);
    char got[sizeof want];
    size_t len = 0;
    MCHECK_RC(m, ctx_context_format(real, got, sizeof got, &len), 0,
              "ctx_context_format");
    MCHECK(m, len == wlen && strcmp(got, want) == 0,
           "format \"%s\" (%zu) want \"%s\" (%zu)", got, len, want, wlen);
}

/* Values that a live holder keeps must not have been released. */
static void check_alive(model_t *m) {
    for (mctx_t *c = m->all; c; c = c->next) {
        if (!(c->handle || c->entered || c->base))
            continue;
        for (int i = 0; i < m->nvars; i++)
            if (c->has[i] && c->val[i])
                MCHECK(m, c->val[i]->released == 0,
                       "var %d: value held by context %llu was released", i,
                       (unsigned long long)c->serial);
    }
    for (int i = 0; i < m->ntok; i++)
        if (m->toks[i].old_has && m->toks[i].old)
            MCHECK(m, m->toks[i].old->released == 0,
                   "a token's old value was released");
    MCHECK(m, double_releases == 0, "a value was released twice");
}

/* ---- operations ---- */

static int rand_var(model_t *m) { return (int)below(m, (uint64_t)m->nvars); }

static mval_t *rand_value(model_t *m, int vi) {
    if (kind_nullable(vi) && below(m, 8) == 0)
        return NULL;
    return mval_new((int)below(m, 1000000));
}

static void token_drop(model_t *m, int k) {
    ctx_token_release(m->toks[k].t);
    m->toks[k] = m->toks[--m->ntok];
}

static void op_set(model_t *m) {
    mctx_t *c = cur(m);
    int vi = rand_var(m);
    mval_t *v = rand_value(m, vi);
    int with_token = (int)below(m, 2);
    if (with_token && m->ntok == MAX_TOKENS)
        token_drop(m, (int)below(m, (uint64_t)m->ntok));
    ctx_token_t *t = NULL;
    MCHECK_RC(m, ctx_var_set(m->vars[vi], v, with_token ? &t : NULL), 0,
              "ctx_var_set");
    if (with_token) {
        MCHECK(m, t != NULL, "no token");
        MCHECK(m, ctx_token_var(t) == m->vars[vi], "ctx_token_var");
        mtok_t *k = &m->toks[m->ntok++];
        k->t = t;
        k->var = vi;
        k->ctx_serial = c->serial;
        k->old_has = c->has[vi];
        k->old = c->val[vi];
        k->used = 0;
        void *old = &old;
        int rc = ctx_token_old_value(t, &old);
        MCHECK_RC(m, rc, k->old_has ? 0 : CTX_ENOTFOUND, "ctx_token_old_value");
        if (k->old_has)
            MCHECK(m, old == k->old, "token old value");
    }
    c->has[vi] = 1;
    c->val[vi] = v;
}

static void op_reset(model_t *m) {
    if (m->ntok == 0)
        return;
    mctx_t *c = cur(m);
    mtok_t *k = &m->toks[below(m, (uint64_t)m->ntok)];
    /* Mostly a token of the current context, so that resets succeed. */
    if (below(m, 3) != 0) {
        int start = (int)below(m, (uint64_t)m->ntok);
        for (int i = 0; i < m->ntok; i++) {
            mtok_t *t = &m->toks[(start + i) % m->ntok];
            if (t->ctx_serial == c->serial && !t->used) {
                k = t;
                break;
            }
        }
    }
    int vi = below(m, 6) == 0 ? rand_var(m) : k->var;
    int want = k->used ? CTX_ETOKENUSED
               : vi != k->var ? CTX_ETOKENVAR
               : k->ctx_serial != c->serial ? CTX_ETOKENCTX
                                            : 0;
    MCHECK_RC(m, ctx_var_reset(m->vars[vi], k->t), want, "ctx_var_reset");
    m->outcomes[want == 0 ? OUT_RESET_OK
                : want == CTX_ETOKENUSED ? OUT_RESET_USED
                : want == CTX_ETOKENVAR ? OUT_RESET_VAR
                                        : OUT_RESET_CTX]++;
    if (want == 0) {
        c->has[vi] = (unsigned char)k->old_has;
        c->val[vi] = k->old;
        k->used = 1;
    }
    MCHECK(m, ctx_token_used(k->t) == k->used, "ctx_token_used");
}

static void op_token_release(model_t *m) {
    if (m->ntok)
        token_drop(m, (int)below(m, (uint64_t)m->ntok));
}

static void op_get(model_t *m) { check_get(m, rand_var(m)); }

static void op_get_for_write(model_t *m) {
    mctx_t *c = cur(m);
    int vi = rand_var(m);
    int inject = below(m, 16) == 0;
    clone_fail_code = inject ? CTX_ECALLBACK : 0;
    long calls_before = clone_calls;
    static char untouched;
    void *out = &untouched;
    int rc = ctx_var_get_for_write(m->vars[vi], &out);
    clone_fail_code = 0;
    long calls = clone_calls - calls_before;
    int cloning = kind_has_clone(vi);

    if (!c->has[vi] && !kind_has_default(vi)) {
        MCHECK_RC(m, rc, CTX_ENOTFOUND, "get_for_write, no value no default");
        return;
    }
    if (!c->has[vi]) {
        /* A default is cloned, never handed out. */
        if (!cloning) {
            MCHECK_RC(m, rc, CTX_ENOCLONE, "get_for_write of a default");
            return;
        }
        MCHECK(m, calls == 1, "clone calls %ld", calls);
        m->outcomes[inject ? OUT_GFW_CLONE_FAILED : OUT_GFW_DEFAULT]++;
        if (inject) {
            MCHECK_RC(m, rc, CTX_ECALLBACK, "failing clone of a default");
            return;
        }
        MCHECK_RC(m, rc, 0, "get_for_write of a default");
        MCHECK(m, out != m->defaults[vi] && out != NULL, "default not cloned");
        MCHECK(m, ((mval_t *)out)->payload == m->defaults[vi]->payload,
               "clone payload");
        c->has[vi] = 1;
        c->val[vi] = out;
        ((mval_t *)out)->payload = (int)below(m, 1000000);
        return;
    }
    mval_t *p = c->val[vi];
    if (p == NULL) {
        /* Nullable variables have no clone: a NULL share is private or not,
         * the model cannot tell them apart. */
        MCHECK(m, (rc == 0 && out == NULL) || rc == CTX_ENOCLONE,
               "get_for_write of NULL: rc %d", rc);
        return;
    }
    int who = holders(m, vi, p, c);
    int cloned;
    if (rc == 0 && out == p)
        cloned = 0;
    else if (rc == 0 || (inject && rc == CTX_ECALLBACK))
        cloned = 1;
    else if (!cloning && rc == CTX_ENOCLONE)
        cloned = 1;
    else
        cloned = -1;
    MCHECK(m, cloned >= 0, "get_for_write: unexpected rc %d (%s)", rc,
           ctx_error_name(rc));
    m->outcomes[rc == CTX_ENOCLONE     ? OUT_GFW_NOCLONE
                : rc == CTX_ECALLBACK ? OUT_GFW_CLONE_FAILED
                : who == 1            ? OUT_GFW_MAYBE
                : cloned              ? OUT_GFW_CLONED
                                      : OUT_GFW_PRIVATE]++;
    if (who == 2)
        MCHECK(m, cloned == 1, "a shared value was handed out for writing");
    if (who == 0)
        MCHECK(m, cloned == 0, "a private value was cloned (rc %s)",
               ctx_error_name(rc));
    if (!cloned) {
        MCHECK(m, calls == 0, "clone called for a private value");
    } else if (cloning) {
        MCHECK(m, calls == 1, "clone calls %ld", calls);
        if (rc == 0) {
            MCHECK(m, out != NULL && ((mval_t *)out)->payload == p->payload,
                   "clone payload");
            c->has[vi] = 1;
            c->val[vi] = out;
        }
    }
    if (rc == 0)
        ((mval_t *)out)->payload = (int)below(m, 1000000);
}

static int free_slot(model_t *m) {
    for (int i = 0; i < MAX_SLOTS; i++)
        if (!m->slots[i])
            return i;
    int k = (int)below(m, MAX_SLOTS);
    ctx_context_release(m->slots[k]->c);
    m->slots[k]->handle = 0;
    m->slots[k] = NULL;
    return k;
}

static mctx_t *pick_slot(model_t *m) {
    int start = (int)below(m, MAX_SLOTS);
    for (int i = 0; i < MAX_SLOTS; i++) {
        mctx_t *c = m->slots[(start + i) % MAX_SLOTS];
        if (c)
            return c;
    }
    return NULL;
}

static void put_slot(model_t *m, ctx_context_t *real, mctx_t *c) {
    int k = free_slot(m);
    c->c = real;
    c->handle = 1;
    m->slots[k] = c;
}

static void op_copy_current(model_t *m) {
    ctx_context_t *real = NULL;
    MCHECK_RC(m, ctx_context_copy_current(&real), 0, "copy_current");
    put_slot(m, real, mctx_new(m, cur(m)));
}

static void op_copy(model_t *m) {
    mctx_t *src = pick_slot(m);
    if (!src)
        return;
    ctx_context_t *real = NULL;
    MCHECK_RC(m, ctx_context_copy(src->c, &real), 0, "ctx_context_copy");
    put_slot(m, real, mctx_new(m, src));
}

static void op_copy_only(model_t *m) {
    mctx_t *src = pick_slot(m);
    if (!src)
        return;
    ctx_var_t *list[8];
    size_t n = (size_t)below(m, 8);
    mctx_t *c = mctx_new(m, NULL);
    for (size_t i = 0; i < n; i++) {
        int vi = rand_var(m);
        list[i] = m->vars[vi];
        if (src->has[vi]) {
            c->has[vi] = 1;
            c->val[vi] = src->val[vi];
        }
    }
    ctx_context_t *real = NULL;
    MCHECK_RC(m, ctx_context_copy_only(src->c, list, n, &real), 0,
              "ctx_context_copy_only");
    put_slot(m, real, c);
}

static void op_context_new(model_t *m) {
    ctx_context_t *real = NULL;
    MCHECK_RC(m, ctx_context_new(&real), 0, "ctx_context_new");
    put_slot(m, real, mctx_new(m, NULL));
}

static void op_context_set(model_t *m) {
    mctx_t *c = pick_slot(m);
    if (!c)
        return;
    int vi = rand_var(m);
    mval_t *v = rand_value(m, vi);
    int want = c->entered ? CTX_EENTERED : 0;
    MCHECK_RC(m, ctx_context_set(c->c, m->vars[vi], v), want,
              "ctx_context_set");
    if (want)
        m->outcomes[OUT_SET_EENTERED]++;
    if (want == 0) {
        c->has[vi] = 1;
        c->val[vi] = v;
    } else if (v) {
        v->returned = 1;
    }
}

static void op_release_slot(model_t *m) {
    int k = (int)below(m, MAX_SLOTS);
    if (!m->slots[k])
        return;
    ctx_context_release(m->slots[k]->c);
    m->slots[k]->handle = 0;
    m->slots[k] = NULL;
}

static void op_enter(model_t *m) {
    mctx_t *c = pick_slot(m);
    if (!c || m->sp == MAX_STACK)
        return;
    int want = c->entered ? CTX_EENTERED : 0;
    MCHECK_RC(m, ctx_context_enter(c->c), want, "ctx_context_enter");
    if (want)
        m->outcomes[OUT_ENTER_EENTERED]++;
    if (want == 0) {
        c->entered = 1;
        m->stack[m->sp++] = c;
    }
}

static void op_exit(model_t *m) {
    mctx_t *c;
    if (m->sp > m->floor && below(m, 4) != 0)
        c = m->stack[m->sp - 1];
    else
        c = pick_slot(m);
    if (!c)
        return;
    int want;
    if (!c->entered)
        want = CTX_ENOTENTERED;
    else if (m->sp == 0 || m->stack[m->sp - 1] != c)
        want = CTX_ENOTCURRENT;
    else if (m->sp - 1 < m->floor)
        return; /* the context a run entered: run exits it */
    else
        want = 0;
    ctx_context_t *real = c->c;
    MCHECK_RC(m, ctx_context_exit(real), want, "ctx_context_exit");
    m->outcomes[want == 0 ? OUT_EXIT_OK
                : want == CTX_ENOTCURRENT ? OUT_EXIT_NOTCURRENT
                                          : OUT_EXIT_NOTENTERED]++;
    if (want == 0) {
        c->entered = 0;
        m->sp--;
    }
}

static void step(model_t *m, int depth);

typedef struct run_arg {
    model_t *m;
    int depth;
    int steps;
    int called;
} run_arg_t;

static void *run_body(void *arg) {
    run_arg_t *r = arg;
    model_t *m = r->m;
    r->called++;
    int saved_floor = m->floor;
    m->floor = m->sp;
    for (int i = 0; i < r->steps; i++)
        step(m, r->depth);
    /* Leave what this body entered. */
    while (m->sp > m->floor) {
        mctx_t *top = m->stack[m->sp - 1];
        MCHECK_RC(m, ctx_context_exit(top->c), 0, "exit before run returns");
        top->entered = 0;
        m->sp--;
    }
    m->floor = saved_floor;
    return r;
}

static void op_run(model_t *m, int depth) {
    if (depth >= MAX_DEPTH || m->sp == MAX_STACK)
        return;
    mctx_t *c = pick_slot(m);
    if (!c)
        return;
    run_arg_t r = {m, depth + 1, (int)below(m, 40), 0};
    void *result = NULL;
    if (c->entered) {
        MCHECK_RC(m, ctx_context_run(c->c, run_body, &r, &result), CTX_EENTERED,
                  "ctx_context_run of an entered context");
        MCHECK(m, r.called == 0, "run called fn although enter failed");
        m->outcomes[OUT_RUN_EENTERED]++;
        return;
    }
    /* The body may drop the slot's reference; the run holds the context. */
    ctx_context_t *real = c->c;
    c->entered = 1;
    m->stack[m->sp++] = c;
    MCHECK_RC(m, ctx_context_run(real, run_body, &r, &result), 0,
              "ctx_context_run");
    MCHECK(m, r.called == 1 && result == &r, "run result");
    m->outcomes[OUT_RUN_OK]++;
    MCHECK(m, m->sp > 0 && m->stack[m->sp - 1] == c, "model stack");
    c->entered = 0;
    m->sp--;
}

static void op_view(model_t *m) {
    mctx_t *c = pick_slot(m);
    if (c)
        check_view(m, c);
}

static void op_iter(model_t *m) {
    if (below(m, 2)) {
        mctx_t *c = pick_slot(m);
        if (c)
            check_iter(m, c->c, c);
        return;
    }
    ctx_context_t *real = NULL;
    MCHECK_RC(m, ctx_context_copy_current(&real), 0, "copy_current");
    check_iter(m, real, cur(m));
    ctx_context_release(real);
}

static void op_format(model_t *m) {
    mctx_t *c = pick_slot(m);
    if (c)
        check_format(m, c->c);
}

static void op_thread_release(model_t *m, int depth) {
    if (depth > 0 || below(m, 8) != 0)
        return;
    int want = m->sp > 0 ? CTX_EBUSY : 0;
    MCHECK_RC(m, ctx_thread_release(), want, "ctx_thread_release");
    m->outcomes[want ? OUT_RELEASE_EBUSY : OUT_RELEASE_OK]++;
    if (want == 0) {
        m->base->base = 0;
        m->base = mctx_new(m, NULL);
        m->base->base = 1;
    }
}

enum {
    OP_SET,
    OP_RESET,
    OP_TOKEN_RELEASE,
    OP_GET,
    OP_GET_FOR_WRITE,
    OP_COPY_CURRENT,
    OP_COPY,
    OP_COPY_ONLY,
    OP_CONTEXT_NEW,
    OP_CONTEXT_SET,
    OP_RELEASE_SLOT,
    OP_ENTER,
    OP_EXIT,
    OP_RUN,
    OP_VIEW,
    OP_ITER,
    OP_FORMAT,
    OP_THREAD_RELEASE,
    OP_COUNT
};

static const int weights[OP_COUNT] = {
    [OP_SET] = 20,        [OP_RESET] = 10,        [OP_TOKEN_RELEASE] = 4,
    [OP_GET] = 4,         [OP_GET_FOR_WRITE] = 8, [OP_COPY_CURRENT] = 4,
    [OP_COPY] = 4,        [OP_COPY_ONLY] = 2,     [OP_CONTEXT_NEW] = 2,
    [OP_CONTEXT_SET] = 6, [OP_RELEASE_SLOT] = 5,  [OP_ENTER] = 6,
    [OP_EXIT] = 9,        [OP_RUN] = 4,           [OP_VIEW] = 3,
    [OP_ITER] = 2,        [OP_FORMAT] = 1,        [OP_THREAD_RELEASE] = 2,
};

static void step(model_t *m, int depth) {
    int total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += weights[i];
    int r = (int)below(m, (uint64_t)total), op = 0;
    while (r >= weights[op])
        r -= weights[op++];
    m->ops[op]++;
    m->step++;
    switch (op) {
    case OP_SET: op_set(m); break;
    case OP_RESET: op_reset(m); break;
    case OP_TOKEN_RELEASE: op_token_release(m); break;
    case OP_GET: op_get(m); break;
    case OP_GET_FOR_WRITE: op_get_for_write(m); break;
    case OP_COPY_CURRENT: op_copy_current(m); break;
    case OP_COPY: op_copy(m); break;
    case OP_COPY_ONLY: op_copy_only(m); break;
    case OP_CONTEXT_NEW: op_context_new(m); break;
    case OP_CONTEXT_SET: op_context_set(m); break;
    case OP_RELEASE_SLOT: op_release_slot(m); break;
    case OP_ENTER: op_enter(m); break;
    case OP_EXIT: op_exit(m); break;
    case OP_RUN: op_run(m, depth); break;
    case OP_VIEW: op_view(m); break;
    case OP_ITER: op_iter(m); break;
    case OP_FORMAT: op_format(m); break;
    case OP_THREAD_RELEASE: op_thread_release(m, depth); break;
    }
    for (int i = 0; i < m->nvars; i++)
        check_get(m, i);
    if (m->step % 256 == 0) {
        collect(m);
        check_alive(m);
    }
}

static void run_model(int nvars, uint64_t default_seed, long default_steps) {
    static model_t m;
    memset(&m, 0, sizeof m);
    m.seed = ctx_test_seed(default_seed);
    ctx_test_rng_seed(&m.rng, m.seed);
    m.nvars = nvars;
    long steps = test_scale("CTX_TEST_STEPS", default_steps, 10);
    double_releases = 0;
    clone_calls = 0;
    clone_fail_code = 0;
    printf("model: %d variables, seed=%llu, %ld steps\n", nvars,
           (unsigned long long)m.seed, steps);

    if (ctx_thread_release() != 0)
        fail_msg("thread state busy at start");
    for (int i = 0; i < nvars; i++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", i);
        if (kind_has_default(i) && !kind_default_is_null(i))
            m.defaults[i] = mval_new(-1 - i);
        m.vars[i] = make_var(name, m.defaults[i], kind_has_default(i),
                             kind_has_clone(i) ? &ops_with_clone
                                               : &ops_without_clone);
    }
    m.base = mctx_new(&m, NULL);
    m.base->base = 1;

    while (m.step < steps)
        step(&m, 0);

    /* Tear down: leave, drop tokens and contexts, then the variables. */
    collect(&m);
    check_alive(&m);
    while (m.sp > 0) {
        mctx_t *top = m.stack[--m.sp];
        MCHECK_RC(&m, ctx_context_exit(top->c), 0, "final exit");
        top->entered = 0;
    }
    while (m.ntok)
        token_drop(&m, m.ntok - 1);
    for (int i = 0; i < MAX_SLOTS; i++)
        if (m.slots[i]) {
            ctx_context_release(m.slots[i]->c);
            m.slots[i]->handle = 0;
            m.slots[i] = NULL;
        }
    for (int i = 0; i < nvars; i++)
        ctx_var_release(m.vars[i]);
    MCHECK_RC(&m, ctx_thread_release(), 0, "final ctx_thread_release");
    m.base->base = 0;
    collect(&m);
    MCHECK(&m, m.all == NULL, "model contexts left");

    /* Every value the library took was released exactly once. */
    long values = 0;
    for (size_t i = 0; i < registry.n; i++) {
        mval_t *v = registry.items[i];
        if (v->returned)
            MCHECK(&m, v->released == 0, "a value of a failed call released");
        else
            MCHECK(&m, v->released == 1, "value %zu released %d times", i,
                   v->released);
        values++;
    }
    MCHECK(&m, double_releases == 0, "double release");
    printf("model: %ld values checked; outcomes:", values);
    for (int i = 0; i < OUT_COUNT; i++)
        printf(" %s=%ld", outcome_names[i], m.outcomes[i]);
    printf("\n");
    registry_free();
}

static void test_model_few_vars(void **state) {
    (void)state;
    run_model(6, 0x5eed0001, 120000);
}

static void test_model_many_vars(void **state) {
    (void)state;
    run_model(MAX_VARS, 0x5eed0002, 120000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_model_few_vars),
        TEST(test_model_many_vars),
    };
    return RUN_TESTS(tests);
}
