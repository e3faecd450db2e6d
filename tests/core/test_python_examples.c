/* SPDX-License-Identifier: MIT */
/*
 * test_python_examples.c — the examples of Python's contextvars documentation
 * (docs.python.org/3/library/contextvars.html) and of PEP 567, translated to
 * C line by line.  Python's code is quoted in the comments; each assertion is
 * what the documentation says that line shows.
 */
#include "core_test.h"

#include <pthread.h>

/* Values are strings, as in the documentation. */
static char NEW_VALUE[] = "new value";
static char SPAM[] = "spam";
static char HAM[] = "ham";

/*
 *   var = ContextVar('var')
 *   token = var.set('new value')
 *   # code that uses 'var'; var.get() returns 'new value'.
 *   var.reset(token)
 *   # After the reset call the var has no value again, so
 *   # var.get() would raise a LookupError.
 */
static void test_doc_set_reset(void **state) {
    (void)state;
    ctx_var_t *var = make_var("var", NULL, 0, NULL);
    ctx_token_t *token;
    ASSERT_RC(ctx_var_set(var, NEW_VALUE, &token), 0);
    EXPECT_GET(var, CTX_VALUE, NEW_VALUE);
    ASSERT_RC(ctx_var_reset(var, token), 0);
    EXPECT_GET(var, CTX_ENOTFOUND, NULL); /* LookupError */
    ctx_token_release(token);
    ctx_var_release(var);
}

/*
 *   ContextVar.get([default]):
 *   "If there is no value for the variable in the current context, the
 *    method will: return the value of the default argument of the method,
 *    if provided; or return the default value for the context variable, if
 *    it was created with one; or raise a LookupError."
 *
 *   var = ContextVar('var', default=42)
 */
static void test_doc_get_default(void **state) {
    (void)state;
    static int forty_two = 42;
    ctx_var_t *var = make_var("var", &forty_two, 1, NULL);
    void *out = NULL;
    ASSERT_RC(ctx_var_get(var, &out), CTX_DEFAULT);
    assert_int_equal(*(int *)out, 42);
    /* The method's own default argument is the caller's fallback in C. */
    ctx_var_t *plain = make_var("plain", NULL, 0, NULL);
    static int fallback = 7;
    void *got = &fallback;
    int rc = ctx_var_get(plain, &got);
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_ptr_equal(got, &fallback); /* untouched: the fallback stands */
    ctx_var_release(var);
    ctx_var_release(plain);
}

/*
 *   Token.var / Token.old_value / Token.MISSING:
 *   "Token.old_value: ... set to Token.MISSING if the variable was not set
 *    before the call."
 */
static void test_doc_token_attributes(void **state) {
    (void)state;
    ctx_var_t *var = make_var("var", NULL, 0, NULL);
    ctx_token_t *t1, *t2;
    ASSERT_RC(ctx_var_set(var, SPAM, &t1), 0);
    ASSERT_RC(ctx_var_set(var, HAM, &t2), 0);
    assert_ptr_equal(ctx_token_var(t1), var);
    void *old = NULL;
    ASSERT_RC(ctx_token_old_value(t1, &old), CTX_ENOTFOUND); /* MISSING */
    ASSERT_RC(ctx_token_old_value(t2, &old), 0);
    assert_string_equal(old, "spam");
    ctx_token_release(t1);
    ctx_token_release(t2);
    ctx_var_release(var);
}

/*
 *   var = ContextVar('var')
 *   var.set('spam')
 *
 *   def main():
 *       # 'var' was set to 'spam' before
 *       # calling 'copy_context()' and 'ctx.run(main)', so:
 *       # var.get() == ctx[var] == 'spam'
 *       var.set('ham')
 *       # Now, after setting 'var' to 'ham':
 *       # var.get() == ctx[var] == 'ham'
 *
 *   ctx = copy_context()
 *   # Any changes to variables that 'main' makes will be contained in 'ctx'.
 *   ctx.run(main)
 *   # The 'main' function was run in the 'ctx' context,
 *   # so changes to 'var' are contained in it:
 *   # ctx[var] == 'ham'
 *   # However, outside of 'ctx', 'var' is still set to 'spam':
 *   # var.get() == 'spam'
 */
typedef struct doc_main {
    ctx_var_t *var;
    ctx_context_t *ctx;
    int ok_before;
    int ok_after;
} doc_main_t;

static void *doc_main(void *arg) {
    doc_main_t *m = arg;
    void *got = NULL, *item = NULL;
    m->ok_before = ctx_var_get(m->var, &got) == CTX_VALUE &&
                   ctx_context_get(m->ctx, m->var, &item) == 0 &&
                   got == SPAM && item == SPAM;
    if (ctx_var_set(m->var, HAM, NULL) != 0)
        return NULL;
    m->ok_after = ctx_var_get(m->var, &got) == CTX_VALUE &&
                  ctx_context_get(m->ctx, m->var, &item) == 0 &&
                  got == HAM && item == HAM;
    return m;
}

static void test_doc_copy_context_run(void **state) {
    (void)state;
    ctx_var_t *var = make_var("var", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, SPAM, NULL), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_copy_current(&ctx), 0);
    doc_main_t m = {var, ctx, 0, 0};
    void *result = NULL;
    ASSERT_RC(ctx_context_run(ctx, doc_main, &m, &result), 0);
    assert_ptr_equal(result, &m);
    assert_true(m.ok_before);
    assert_true(m.ok_after);
    EXPECT_CTX_GET(ctx, var, 0, HAM);
    EXPECT_GET(var, CTX_VALUE, SPAM);
    ctx_context_release(ctx);
    ctx_var_release(var);
}

/*
 * PEP 567:
 *   ctx = Context()          # an empty context
 *   def f(x): var.set(x)
 *   ctx.run(f, 'spam')
 *   ctx[var] == 'spam'; var.get() still has its default outside.
 *
 *   "Context.run() raises a RuntimeError when called on the same context
 *    object from more than one OS thread, or when called recursively."
 */
static void *set_var(void *arg) {
    void **io = arg;
    return (void *)(intptr_t)ctx_var_set(io[0], io[1], NULL);
}

static void *run_again(void *arg) {
    void **io = arg; /* ctx, var, value */
    void *inner[2] = {io[1], io[2]};
    return (void *)(intptr_t)ctx_context_run(io[0], set_var, inner, NULL);
}

static void test_pep_context_run(void **state) {
    (void)state;
    static int one = 1;
    ctx_var_t *var = make_var("var", &one, 1, NULL);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    void *io[2] = {var, SPAM};
    ASSERT_RC(ctx_context_run(ctx, set_var, io, NULL), 0);
    EXPECT_CTX_GET(ctx, var, 0, SPAM);
    EXPECT_GET(var, CTX_DEFAULT, &one);
    /* Recursive run: RuntimeError, i.e. CTX_EENTERED; nothing set. */
    void *rio[3] = {ctx, var, HAM};
    void *result = NULL;
    ASSERT_RC(ctx_context_run(ctx, run_again, rio, &result), 0);
    assert_int_equal((int)(intptr_t)result, CTX_EENTERED);
    EXPECT_CTX_GET(ctx, var, 0, SPAM);
    ctx_context_release(ctx);
    ctx_var_release(var);
}

/*
 * The Context mapping:
 *   ctx[var]            KeyError if no value     -> ctx_context_get
 *   var in ctx                                    -> ctx_context_contains
 *   len(ctx)                                      -> ctx_context_length
 *   iter(ctx), ctx.items(), ctx.keys(), values()  -> ctx_iter_*
 *   ctx.get(var, default)                         -> ctx_context_get + fallback
 *
 *   ctx = copy_context()
 *   print(list(ctx.items()))
 */
static void test_doc_mapping(void **state) {
    (void)state;
    static int def = 5;
    ctx_var_t *a = make_var("a", NULL, 0, NULL);
    ctx_var_t *b = make_var("b", &def, 1, NULL);
    ctx_var_t *c = make_var("c", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(a, SPAM, NULL), 0);
    ASSERT_RC(ctx_var_set(c, HAM, NULL), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_copy_current(&ctx), 0);

    EXPECT_CTX_GET(ctx, a, 0, SPAM);                 /* ctx[a] */
    EXPECT_CTX_GET(ctx, b, CTX_ENOTFOUND, NULL);     /* ctx[b]: KeyError */
    ASSERT_RC(ctx_context_contains(ctx, a), 1);      /* a in ctx */
    ASSERT_RC(ctx_context_contains(ctx, b), 0);      /* b not in ctx */
    assert_int_equal(ctx_context_length(ctx), 2);    /* len(ctx) */

    /* list(ctx.items()) == [(a, 'spam'), (c, 'ham')] in some order. */
    ctx_iter_t it;
    ASSERT_RC(ctx_iter_init(&it, ctx), 0);
    int seen_a = 0, seen_c = 0, n = 0;
    ctx_var_t *k;
    void *v;
    while (ctx_iter_next(&it, &k, &v)) {
        n++;
        if (k == a) {
            seen_a++;
            assert_ptr_equal(v, SPAM);
        } else if (k == c) {
            seen_c++;
            assert_ptr_equal(v, HAM);
        } else {
            fail_msg("iteration yielded a variable not in the context: %p",
                     (void *)k);
        }
    }
    ctx_iter_clear(&it);
    assert_int_equal(n, 2);
    assert_int_equal(seen_a, 1);
    assert_int_equal(seen_c, 1);

    /* ctx.get(b, 'fallback') == 'fallback' (the variable's default is not
     * consulted by the mapping). */
    void *got = NEW_VALUE;
    ASSERT_RC(ctx_context_get(ctx, b, &got), CTX_ENOTFOUND);
    assert_ptr_equal(got, NEW_VALUE);

    ctx_context_release(ctx);
    ctx_var_release(a);
    ctx_var_release(b);
    ctx_var_release(c);
}

/*
 *   "Context variables are natively supported in asyncio": each task runs
 *   in its own context, so interleaved tasks on one thread do not see each
 *   other's values.  The documentation's server example:
 *
 *   client_addr_var = ContextVar('client_addr')
 *   def render_goodbye():
 *       client_addr = client_addr_var.get()
 *       return f'Good bye, client @ {client_addr}\n'.encode()
 *   async def handle_request(reader, writer):
 *       addr = writer.transport.get_extra_info('socket').getpeername()
 *       client_addr_var.set(addr)
 *       ...
 *
 *   Emulated: two "tasks" each own a context (copied when created, as
 *   asyncio does); an event loop resumes them in turn with enter/exit.
 */
static void test_doc_asyncio_tasks(void **state) {
    (void)state;
    static char addr1[] = "127.0.0.1:1111";
    static char addr2[] = "127.0.0.1:2222";
    ctx_var_t *client_addr = make_var("client_addr", NULL, 0, NULL);
    ctx_context_t *task[2];
    char *addrs[2] = {addr1, addr2};
    ASSERT_RC(ctx_context_copy_current(&task[0]), 0);
    ASSERT_RC(ctx_context_copy_current(&task[1]), 0);
    for (int step = 0; step < 6; step++) {
        int t = step % 2;
        ASSERT_RC(ctx_context_enter(task[t]), 0);
        if (step < 2) {
            EXPECT_GET(client_addr, CTX_ENOTFOUND, NULL);
            ASSERT_RC(ctx_var_set(client_addr, addrs[t], NULL), 0);
        }
        /* render_goodbye */
        void *got = NULL;
        ASSERT_RC(ctx_var_get(client_addr, &got), CTX_VALUE);
        char line[64];
        snprintf(line, sizeof line, "Good bye, client @ %s\n", (char *)got);
        char want[64];
        snprintf(want, sizeof want, "Good bye, client @ %s\n", addrs[t]);
        assert_string_equal(line, want);
        ASSERT_RC(ctx_context_exit(task[t]), 0);
        /* The loop's own context never sees a task's value. */
        EXPECT_GET(client_addr, CTX_ENOTFOUND, NULL);
    }
    ctx_context_release(task[0]);
    ctx_context_release(task[1]);
    ctx_var_release(client_addr);
}

/*
 * Threads: "each thread has its own current context"; a value set in one
 * thread is not seen by another.  Two threads set the same variable to
 * their own value and both read their own back, then the main thread still
 * reads its own.
 */
typedef struct iso {
    ctx_var_t *var;
    char *mine;
    pthread_barrier_t *barrier;
    int saw_nothing_first;
    int saw_mine;
} iso_t;

static void *iso_thread(void *arg) {
    iso_t *t = arg;
    void *got = NULL;
    t->saw_nothing_first = ctx_var_get(t->var, &got) == CTX_ENOTFOUND;
    ctx_var_set(t->var, t->mine, NULL);
    pthread_barrier_wait(t->barrier); /* both have set */
    t->saw_mine = ctx_var_get(t->var, &got) == CTX_VALUE && got == t->mine;
    pthread_barrier_wait(t->barrier);
    return NULL;
}

static void test_doc_thread_isolation(void **state) {
    (void)state;
    ctx_var_t *var = make_var("var", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(var, NEW_VALUE, NULL), 0);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    iso_t t[2] = {{var, SPAM, &barrier, 0, 0}, {var, HAM, &barrier, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, iso_thread, &t[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < 2; i++) {
        assert_true(t[i].saw_nothing_first);
        assert_true(t[i].saw_mine);
    }
    EXPECT_GET(var, CTX_VALUE, NEW_VALUE);
    ctx_var_release(var);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_doc_set_reset),
        TEST(test_doc_get_default),
        TEST(test_doc_token_attributes),
        TEST(test_doc_copy_context_run),
        TEST(test_pep_context_run),
        TEST(test_doc_mapping),
        TEST(test_doc_asyncio_tasks),
        TEST(test_doc_thread_isolation),
    };
    return RUN_TESTS(tests);
}
