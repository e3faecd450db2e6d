/* SPDX-License-Identifier: MIT */
/*
 * test_alloc_fail.c — out-of-memory fault injection over every public
 * operation that may allocate, in the spirit of SQLite's *fault.test.
 *
 * For each operation and each starting state ("shape": how many variables
 * are set in the thread's context, whether that context's map is shared with
 * a copy, or whether the thread has no state at all), the N-th allocation is
 * made to fail for N = 1, 2, ... until the operation succeeds without the
 * failure firing.  Every failure must return CTX_ENOMEM and change nothing:
 * every variable reads the same in the current context and in the other
 * contexts, no value handed to the library or held by it is released, tokens
 * stay unused and usable.  After the success the result is checked, then
 * everything is torn down: every value was released exactly once and the
 * allocator's live block count is back where it started.
 */
#include "core_test.h"

#define NV 48

typedef struct world {
    ctx_var_t *vars[NV];
    val_t vals[NV];   /* vals[i]: var i's value in the thread's context */
    val_t defs[NV];   /* defaults (kind 0) */
    val_t others[NV]; /* values in `other` */
    ctx_token_t *toks[NV];
    ctx_context_t *copy;  /* a copy of the thread's context, or NULL */
    ctx_context_t *other; /* a context not entered anywhere */
    int nset;
    int shared;
    int fresh; /* the thread has no state when each attempt starts */
} world_t;

/* Variable kinds: 0 default + clone, 1 clone, 2 neither. */
static int has_default(int i) { return i % 3 == 0; }
static const ctx_value_ops_t *ops_of(int i) {
    return i % 3 == 2 ? ops_format() : ops_clone();
}

static long baseline_blocks;

static void world_build(world_t *w, int nset, int shared, int fresh) {
    memset(w, 0, sizeof *w);
    w->nset = nset;
    w->shared = shared;
    w->fresh = fresh;
    ASSERT_RC(ctx_thread_release(), 0);
    for (int i = 0; i < NV; i++) {
        char name[16];
        snprintf(name, sizeof name, "v%d", i);
        val_init(&w->vals[i], i);
        val_init(&w->defs[i], 1000 + i);
        val_init(&w->others[i], 2000 + i);
        w->vars[i] = make_var(name, &w->defs[i], has_default(i), ops_of(i));
    }
    for (int i = 0; i < nset; i++)
        ASSERT_RC(ctx_var_set(w->vars[i], &w->vals[i],
                              i % 2 ? &w->toks[i] : NULL),
                  0);
    if (shared)
        ASSERT_RC(ctx_context_copy_current(&w->copy), 0);
    ASSERT_RC(ctx_context_new(&w->other), 0);
    for (int i = 0; i < NV; i += 4)
        ASSERT_RC(ctx_context_set(w->other, w->vars[i], &w->others[i]), 0);
    if (fresh)
        ASSERT_RC(ctx_thread_release(), 0);
}

/* Releases everything; every value the world handed over was released
 * exactly once, and no block is left. */
static void world_teardown(world_t *w) {
    for (int i = NV - 1; i >= 0; i--)
        if (w->toks[i] && !ctx_token_used(w->toks[i]))
            ASSERT_RC(ctx_var_reset(w->vars[i], w->toks[i]), 0);
    for (int i = 0; i < NV; i++)
        ctx_token_release(w->toks[i]);
    ctx_context_release(w->copy);
    ctx_context_release(w->other);
    for (int i = 0; i < NV; i++)
        ctx_var_release(w->vars[i]);
    ASSERT_RC(ctx_thread_release(), 0);
    for (int i = 0; i < NV; i++) {
        assert_int_equal(val_released(&w->vals[i]), i < w->nset ? 1 : 0);
        assert_int_equal(val_released(&w->defs[i]), has_default(i) ? 1 : 0);
        assert_int_equal(val_released(&w->others[i]), i % 4 == 0 ? 1 : 0);
    }
    assert_int_equal(ctx_test_alloc_live_blocks(), baseline_blocks);
}

/* Everything observable about the world. */
typedef struct snap {
    int rc[NV], crc[NV], orc[NV];
    void *v[NV], *cv[NV], *ov[NV];
    size_t clen, olen;
    int used[NV];
    int released;
    int entered;
} snap_t;

static int world_released(world_t *w) {
    int n = 0;
    for (int i = 0; i < NV; i++)
        n += val_released(&w->vals[i]) + val_released(&w->defs[i]) +
             val_released(&w->others[i]);
    return n;
}

static void snap_take(world_t *w, snap_t *s) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < NV; i++) {
        s->rc[i] = ctx_var_get(w->vars[i], &s->v[i]);
        if (w->copy)
            s->crc[i] = ctx_context_get(w->copy, w->vars[i], &s->cv[i]);
        s->orc[i] = ctx_context_get(w->other, w->vars[i], &s->ov[i]);
        s->used[i] = w->toks[i] ? ctx_token_used(w->toks[i]) : -1;
    }
    s->clen = ctx_context_length(w->copy);
    s->olen = ctx_context_length(w->other);
    s->released = world_released(w);
    s->entered = ctx_context_is_entered(w->other);
}

static void snap_compare(const snap_t *a, const snap_t *b, const char *op,
                         long n) {
    for (int i = 0; i < NV; i++) {
        if (a->rc[i] != b->rc[i] || (a->rc[i] >= 0 && a->v[i] != b->v[i]))
            fail_msg("%s, allocation %ld failed: var %d changed in the "
                     "current context (%s %p -> %s %p)",
                     op, n, i, ctx_error_name(a->rc[i]), a->v[i],
                     ctx_error_name(b->rc[i]), b->v[i]);
        if (a->crc[i] != b->crc[i] || a->cv[i] != b->cv[i] ||
            a->orc[i] != b->orc[i] || a->ov[i] != b->ov[i])
            fail_msg("%s, allocation %ld failed: var %d changed in another "
                     "context", op, n, i);
        if (a->used[i] != b->used[i])
            fail_msg("%s, allocation %ld failed: token %d used", op, n, i);
    }
    if (a->clen != b->clen || a->olen != b->olen)
        fail_msg("%s, allocation %ld failed: a context's length changed", op,
                 n);
    if (a->released != b->released)
        fail_msg("%s, allocation %ld failed: a value was released", op, n);
    if (a->entered != b->entered)
        fail_msg("%s, allocation %ld failed: a context stayed entered", op, n);
}

/* One operation under test. */
typedef struct op {
    const char *name;
    int (*fn)(world_t *w, struct op *op);
    int var;               /* the variable it works on */
    val_t *value;          /* the value it hands over */
    ctx_token_t *token;    /* a token it made or uses */
    ctx_context_t *result; /* a context it made */
    void *out;
    val_t *many;           /* new_from: the values it hands over */
    int nmany;
    int calls;             /* run: calls of the function */
    int allocated;         /* the operation allocated at least once */
} op_t;

/* Fails the N-th allocation for every N until `op` succeeds without a
 * failure; checks each failure.  Returns the number of attempts. */
static long sweep(world_t *w, op_t *op, int want_success) {
    for (long n = 1; n < 10000; n++) {
        snap_t before, after;
        if (w->fresh)
            ASSERT_RC(ctx_thread_release(), 0);
        snap_take(w, &before);
        ctx_test_alloc_fail_nth(n);
        long attempts = ctx_test_alloc_attempts();
        int rc = op->fn(w, op);
        int fired = ctx_test_alloc_fired();
        if (ctx_test_alloc_attempts() > attempts)
            op->allocated = 1;
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            if (rc != want_success)
                fail_msg("%s: returned %s without an allocation failure",
                         op->name, ctx_error_name(rc));
            return n;
        }
        if (rc != CTX_ENOMEM)
            fail_msg("%s: allocation %ld failed, returned %d (%s), expected "
                     "ENOMEM",
                     op->name, n, rc, ctx_error_name(rc));
        snap_take(w, &after);
        snap_compare(&before, &after, op->name, n);
        if (op->value)
            assert_int_equal(val_released(op->value), 0);
        for (int k = 0; k < op->nmany; k++)
            assert_int_equal(val_released(&op->many[k]), 0);
    }
    fail_msg("%s: still failing after 10000 allocations", op->name);
    return -1;
}

/* ---- the operations ---- */

static int do_set(world_t *w, op_t *op) {
    return ctx_var_set(w->vars[op->var], op->value, NULL);
}
static int do_set_token(world_t *w, op_t *op) {
    return ctx_var_set(w->vars[op->var], op->value, &op->token);
}
static int do_reset(world_t *w, op_t *op) {
    return ctx_var_reset(w->vars[op->var], op->token);
}
static int do_get_for_write(world_t *w, op_t *op) {
    return ctx_var_get_for_write(w->vars[op->var], &op->out);
}
static int do_context_new(world_t *w, op_t *op) {
    (void)w;
    return ctx_context_new(&op->result);
}
static int do_copy_current(world_t *w, op_t *op) {
    (void)w;
    return ctx_context_copy_current(&op->result);
}
static int do_copy(world_t *w, op_t *op) {
    return ctx_context_copy(w->other, &op->result);
}
static int do_copy_only(world_t *w, op_t *op) {
    ctx_var_t *list[NV / 2];
    for (int i = 0; i < NV / 2; i++)
        list[i] = w->vars[2 * i];
    return ctx_context_copy_only(w->other, list, NV / 2, &op->result);
}
static int do_new_from(world_t *w, op_t *op) {
    ctx_var_t *list[NV / 2];
    void *values[NV / 2];
    for (int i = 0; i < op->nmany; i++) {
        list[i] = w->vars[2 * i + 1];
        values[i] = &op->many[i];
    }
    return ctx_context_new_from(list, values, (size_t)op->nmany, &op->result);
}
static int do_context_set(world_t *w, op_t *op) {
    return ctx_context_set(w->other, w->vars[op->var], op->value);
}
static int do_enter(world_t *w, op_t *op) {
    (void)op;
    return ctx_context_enter(w->other);
}
static void *count_call(void *arg) {
    ((op_t *)arg)->calls++;
    return arg;
}
static int do_run(world_t *w, op_t *op) {
    return ctx_context_run(w->other, count_call, op, &op->out);
}
static int do_format(world_t *w, op_t *op) {
    (void)op;
    char buf[64];
    size_t len;
    int rc = ctx_context_format(w->other, buf, sizeof buf, &len);
    if (rc == CTX_ETRUNCATED)
        rc = 0;
    if (rc == 0)
        rc = ctx_context_format_current(buf, sizeof buf, &len);
    return rc == CTX_ETRUNCATED ? 0 : rc;
}
static int do_view(world_t *w, op_t *op) {
    (void)op;
    ctx_iter_t it;
    int rc = ctx_iter_init(&it, w->other);
    while (rc == 0 && ctx_iter_next(&it, NULL, NULL))
        ;
    ctx_iter_clear(&it);
    void *out;
    for (int i = 0; i < NV; i++) {
        ctx_var_get(w->vars[i], &out);
        ctx_context_get(w->other, w->vars[i], &out);
    }
    return rc;
}

/* First variable at or after `from` of kind `kind`, unset in the thread. */
static int pick(world_t *w, int from, int kind) {
    for (int i = from < w->nset ? w->nset : from; i < NV; i++)
        if (i % 3 == kind)
            return i;
    fail_msg("no variable of kind %d", kind);
    return -1;
}

static void check_var(world_t *w, int var, int want_rc, void *want) {
    void *got = NULL;
    ASSERT_RC(ctx_var_get(w->vars[var], &got), want_rc);
    if (want_rc >= 0)
        assert_ptr_equal(got, want);
}

/* Runs every operation on one shape. */
static void sweep_shape(int nset, int shared, int fresh) {
    world_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    val_t x;
    long total = 0;

    /* set a variable that has no value (possibly on a fresh thread) */
    for (int with_token = 0; with_token < 2; with_token++) {
        world_build(w, nset, shared, fresh);
        val_init(&x, 77);
        op_t op = {.name = with_token ? "set new (token)" : "set new", .fn = with_token ? do_set_token : do_set};
        op.var = pick(w, 0, 1);
        op.value = &x;
        total += sweep(w, &op, 0);
        check_var(w, op.var, CTX_VALUE, &x);
        if (with_token) {
            assert_non_null(op.token);
            ASSERT_RC(ctx_var_reset(w->vars[op.var], op.token), 0);
            check_var(w, op.var, CTX_ENOTFOUND, NULL);
            ctx_token_release(op.token);
        }
        w->fresh = 0;
        world_teardown(w);
        assert_int_equal(val_released(&x), 1);
    }

    /* replace a value */
    for (int with_token = 0; nset > 0 && with_token < 2; with_token++) {
        world_build(w, nset, shared, fresh);
        val_init(&x, 78);
        op_t op = {.name = with_token ? "set existing (token)" : "set existing", .fn = with_token ? do_set_token : do_set};
        op.var = 0;
        op.value = &x;
        total += sweep(w, &op, 0);
        check_var(w, 0, CTX_VALUE, &x);
        /* The old value went at once if nothing else held it. */
        assert_int_equal(val_released(&w->vals[0]),
                         shared || with_token ? 0 : 1);
        if (with_token) {
            ASSERT_RC(ctx_var_reset(w->vars[0], op.token), 0);
            check_var(w, 0, CTX_VALUE, &w->vals[0]);
            ctx_token_release(op.token);
        } else {
            /* The teardown expects vals[0] released once. */
        }
        world_teardown(w);
        assert_int_equal(val_released(&x), 1);
    }

    /* reset: back to "no value", and back to an older value */
    if (nset > 1) {
        world_build(w, nset, shared, fresh);
        op_t op = {.name = "reset to missing", .fn = do_reset};
        op.var = 1;
        op.token = w->toks[1];
        total += sweep(w, &op, 0);
        check_var(w, 1, CTX_ENOTFOUND, NULL);
        assert_int_equal(ctx_token_used(w->toks[1]), 1);
        world_teardown(w);

        world_build(w, nset, shared, fresh);
        val_init(&x, 79);
        op_t over = {.name = "reset to older", .fn = do_reset};
        ASSERT_RC(ctx_var_set(w->vars[1], &x, &over.token), 0);
        over.var = 1;
        total += sweep(w, &over, 0);
        check_var(w, 1, CTX_VALUE, &w->vals[1]);
        assert_int_equal(val_released(&x), 1);
        ctx_token_release(over.token);
        world_teardown(w);
    }

    /* get_for_write of a value (clones if shared) and of a default */
    if (nset > 0) {
        world_build(w, nset, shared, fresh);
        op_t op = {.name = "get_for_write value", .fn = do_get_for_write};
        op.var = 0;
        long clones = atomic_load(&val_counters()->clones);
        total += sweep(w, &op, 0);
        if (shared) {
            assert_ptr_not_equal(op.out, &w->vals[0]);
            check_var(w, 0, CTX_VALUE, op.out);
            EXPECT_CTX_GET(w->copy, w->vars[0], 0, &w->vals[0]);
        } else {
            assert_ptr_equal(op.out, &w->vals[0]);
            assert_int_equal(op.allocated, 0);
            assert_int_equal(atomic_load(&val_counters()->clones), clones);
        }
        world_teardown(w);
    }
    {
        world_build(w, nset, shared, fresh);
        op_t op = {.name = "get_for_write default", .fn = do_get_for_write};
        op.var = pick(w, 0, 0);
        total += sweep(w, &op, 0);
        assert_ptr_not_equal(op.out, &w->defs[op.var]);
        check_var(w, op.var, CTX_VALUE, op.out);
        w->fresh = 0;
        world_teardown(w);
    }

    /* contexts */
    struct {
        const char *name;
        int (*fn)(world_t *, op_t *);
        int want_len; /* -1: the thread's */
    } makers[] = {
        {"context_new", do_context_new, 0},
        {"copy_current", do_copy_current, -1},
        {"copy", do_copy, NV / 4},
        {"copy_only", do_copy_only, NV / 4},
    };
    for (size_t k = 0; k < sizeof makers / sizeof makers[0]; k++) {
        world_build(w, nset, shared, fresh);
        op_t op = {.name = makers[k].name, .fn = makers[k].fn};
        total += sweep(w, &op, 0);
        assert_non_null(op.result);
        size_t want = makers[k].want_len >= 0 ? (size_t)makers[k].want_len
                      : fresh                 ? 0
                                              : (size_t)nset;
        assert_int_equal(ctx_context_length(op.result), want);
        ctx_context_release(op.result);
        w->fresh = 0;
        world_teardown(w);
    }

    /* new_from: a context built in one pass; on failure no value is
     * released, on success each is released once with the context.  24
     * variables of every other id meet in the root (id and id + 32: the
     * boxes are made first, then put one at a time); 8 do not (the root is
     * written directly, ctx__hamt_build_flat); 1 takes build_flat's own
     * path for a single value. */
    static const int nmanys[] = {NV / 2, 8, 1};
    for (size_t t = 0; t < sizeof nmanys / sizeof *nmanys; t++) {
        int nmany = nmanys[t];
        world_build(w, nset, shared, fresh);
        val_t many[NV / 2];
        for (int i = 0; i < nmany; i++)
            val_init(&many[i], 3000 + i);
        op_t op = {.name = "new_from", .fn = do_new_from, .many = many, .nmany = nmany};
        total += sweep(w, &op, 0);
        assert_int_equal(ctx_context_length(op.result), nmany);
        for (int i = 0; i < nmany; i++)
            EXPECT_CTX_GET(op.result, w->vars[2 * i + 1], 0, &many[i]);
        ctx_context_release(op.result);
        for (int i = 0; i < nmany; i++)
            assert_int_equal(val_released(&many[i]), 1);
        w->fresh = 0;
        world_teardown(w);
    }

    /* context_set: new key and replacing a key */
    for (int replace = 0; replace < 2; replace++) {
        world_build(w, nset, shared, fresh);
        val_init(&x, 80);
        op_t op = {.name = replace ? "context_set replace" : "context_set new", .fn = do_context_set};
        op.var = replace ? 4 : 1;
        op.value = &x;
        total += sweep(w, &op, 0);
        EXPECT_CTX_GET(w->other, w->vars[op.var], 0, &x);
        if (replace)
            assert_int_equal(val_released(&w->others[4]), 1);
        w->fresh = 0;
        world_teardown(w);
        assert_int_equal(val_released(&x), 1);
    }

    /* enter and run (on a fresh thread, they make the thread's context) */
    {
        world_build(w, nset, shared, fresh);
        op_t op = {.name = "enter", .fn = do_enter};
        total += sweep(w, &op, 0);
        assert_int_equal(ctx_context_is_entered(w->other), 1);
        ASSERT_RC(ctx_context_exit(w->other), 0);
        w->fresh = 0;
        world_teardown(w);

        world_build(w, nset, shared, fresh);
        op_t run = {.name = "run", .fn = do_run};
        total += sweep(w, &run, 0);
        assert_int_equal(run.calls, 1); /* never called on a failure */
        assert_ptr_equal(run.out, &run);
        w->fresh = 0;
        world_teardown(w);
    }

    /* The view never allocates: a single attempt that does not fire. */
    {
        world_build(w, nset, shared, fresh);
        op_t fmt = {.name = "format", .fn = do_format};
        assert_int_equal(sweep(w, &fmt, 0), 1);
        assert_int_equal(fmt.allocated, 0);
        op_t view = {.name = "view", .fn = do_view};
        assert_int_equal(sweep(w, &view, 0), 1);
        assert_int_equal(view.allocated, 0);
        w->fresh = 0;
        world_teardown(w);
    }

    printf("alloc sweep: %d set%s%s: %ld attempts\n", nset,
           shared ? ", shared" : "", fresh ? ", fresh thread" : "", total);
    assert_true(total > 0);
    free(w);
}

static void setup_allocator(void) {
    ASSERT_RC(ctx_thread_release(), 0);
    ctx_test_alloc_install();
    val_counters_reset();
    /* Warm up whatever the library makes once per process. */
    world_t *w = calloc(1, sizeof *w);
    world_build(w, 3, 1, 0);
    baseline_blocks = 0;
    world_teardown(w);
    free(w);
    baseline_blocks = ctx_test_alloc_live_blocks();
}

static void test_fresh_thread(void **state) {
    (void)state;
    setup_allocator();
    sweep_shape(0, 0, 1);
    ctx_test_alloc_uninstall();
}

static void test_empty_context(void **state) {
    (void)state;
    setup_allocator();
    sweep_shape(0, 0, 0);
    ctx_test_alloc_uninstall();
}

static void test_one_var(void **state) {
    (void)state;
    setup_allocator();
    sweep_shape(1, 0, 0);
    sweep_shape(1, 1, 0);
    ctx_test_alloc_uninstall();
}

static void test_few_vars(void **state) {
    (void)state;
    setup_allocator();
    sweep_shape(5, 0, 0);
    sweep_shape(5, 1, 0);
    ctx_test_alloc_uninstall();
}

static void test_many_vars(void **state) {
    (void)state;
    setup_allocator();
    sweep_shape(40, 0, 0);
    sweep_shape(40, 1, 0);
    ctx_test_alloc_uninstall();
}

/* ctx_var_new: on failure the default stays the caller's. */
static void test_var_new(void **state) {
    (void)state;
    setup_allocator();
    val_t def;
    val_init(&def, 5);
    ctx_var_options_t options = {.size = sizeof(ctx_var_options_t), .default_value = &def, .has_default = 1, .ops = ops_clone()};
    for (long n = 1;; n++) {
        assert_true(n < 1000);
        ctx_var_t *var = NULL;
        ctx_test_alloc_fail_nth(n);
        int rc = ctx_var_new("a rather long variable name", &options, &var);
        int fired = ctx_test_alloc_fired();
        ctx_test_alloc_fail_nth(0);
        if (!fired) {
            ASSERT_RC(rc, 0);
            assert_string_equal(ctx_var_name(var),
                                "a rather long variable name");
            void *out = NULL;
            ASSERT_RC(ctx_var_get(var, &out), CTX_DEFAULT);
            assert_ptr_equal(out, &def);
            ctx_var_release(var);
            break;
        }
        ASSERT_RC(rc, CTX_ENOMEM);
        assert_int_equal(val_released(&def), 0);
        assert_int_equal(ctx_test_alloc_live_blocks(), baseline_blocks);
    }
    assert_int_equal(val_released(&def), 1);
    assert_int_equal(ctx_test_alloc_live_blocks(), baseline_blocks);
    ctx_test_alloc_uninstall();
}

/* Every allocation failing: nothing works, nothing breaks, nothing leaks. */
static void test_all_failing(void **state) {
    (void)state;
    setup_allocator();
    static int x;
    ctx_var_t *var = make_var("v", NULL, 0, NULL);
    ctx_context_t *ctx = NULL;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ctx_test_alloc_fail_all(1);
    ctx_var_t *v2 = NULL;
    ctx_context_t *c2 = NULL;
    ctx_token_t *tok = NULL;
    void *out;
    ASSERT_RC(ctx_var_new("w", NULL, &v2), CTX_ENOMEM);
    ASSERT_RC(ctx_var_set(var, &x, &tok), CTX_ENOMEM);
    ASSERT_RC(ctx_var_set(var, &x, NULL), CTX_ENOMEM);
    ASSERT_RC(ctx_context_new(&c2), CTX_ENOMEM);
    ASSERT_RC(ctx_context_copy_current(&c2), CTX_ENOMEM);
    ASSERT_RC(ctx_context_copy(ctx, &c2), CTX_ENOMEM);
    ASSERT_RC(ctx_context_set(ctx, var, &x), CTX_ENOMEM);
    ASSERT_RC(ctx_context_enter(ctx), CTX_ENOMEM);
    ASSERT_RC(ctx_context_run(ctx, count_call, &(op_t){0}, NULL), CTX_ENOMEM);
    ASSERT_RC(ctx_var_get(var, &out), CTX_ENOTFOUND);
    assert_int_equal(ctx_context_is_entered(ctx), 0);
    assert_int_equal(ctx_context_length(ctx), 0);
    ctx_test_alloc_fail_all(0);
    ctx_context_release(ctx);
    ctx_var_release(var);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), baseline_blocks);
    ctx_test_alloc_uninstall();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_fresh_thread),
        TEST(test_empty_context),
        TEST(test_one_var),
        TEST(test_few_vars),
        TEST(test_many_vars),
        TEST(test_var_new),
        TEST(test_all_failing),
    };
    return RUN_TESTS(tests);
}
