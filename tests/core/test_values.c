/* SPDX-License-Identifier: MIT */
/*
 * test_values.c — the conveniences of ctxvar.h: ready-made string and int64
 * value operations with their typed helpers, and the scoped set
 * CTX_WITH_VALUE.
 *
 * Values: copies on set (the caller's buffer may change afterwards), the
 * library frees exactly what it allocated (the counting allocator ends at
 * zero blocks), format/encode/decode/clone do what the header says (decimal
 * edge cases included), typed helpers refuse a variable of the other kind,
 * and an allocation failure at any point changes nothing.
 *
 * Scoped set: the variable has the value inside the block and its previous
 * state after every exit the header lists (end, break, continue, and with
 * GCC/Clang return and goto), blocks nest, and a failed set skips the block
 * and reports the code.
 */
#include "core_test.h"

/* ---- strings ---- */

static void test_string_variable(void **state) {
    (void)state;
    ctx_test_alloc_install();
    ctx_var_t *user;
    ASSERT_RC(ctx_var_new_string("user", NULL, &user), 0);
    assert_ptr_equal(ctx_var_ops(user)->release, ctx_value_ops_string()->release);
    const char *got = "untouched";
    ASSERT_RC(ctx_var_get_string(user, &got), CTX_ENOTFOUND);
    assert_string_equal(got, "untouched");

    char buf[16] = "alice";
    ctx_token_t *tok;
    ASSERT_RC(ctx_var_set_string(user, buf, &tok), 0);
    strcpy(buf, "mallory"); /* the library holds its own copy */
    ASSERT_RC(ctx_var_get_string(user, &got), CTX_VALUE);
    assert_string_equal(got, "alice");
    void *raw;
    ASSERT_RC(ctx_var_get(user, &raw), CTX_VALUE);
    assert_string_equal((char *)raw, "alice"); /* plain char * for every reader */

    ASSERT_RC(ctx_var_set_string(user, "bob", NULL), 0);
    char text[64];
    ASSERT_RC(ctx_context_format_current(text, sizeof text, NULL), 0);
    assert_string_equal(text, "user=bob");
    ASSERT_RC(ctx_var_reset(user, tok), 0);
    ASSERT_RC(ctx_var_get_string(user, &got), CTX_ENOTFOUND);
    ctx_token_release(tok);

    /* A default is copied, owned by the variable. */
    ctx_var_t *lang;
    char def[8] = "en";
    ASSERT_RC(ctx_var_new_string("lang", def, &lang), 0);
    def[0] = 'x';
    ASSERT_RC(ctx_var_get_string(lang, &got), CTX_DEFAULT);
    assert_string_equal(got, "en");

    /* Building a context. */
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set_string(ctx, lang, "fr"), 0);
    ASSERT_RC(ctx_context_get(ctx, lang, &raw), 0);
    assert_string_equal((char *)raw, "fr");
    ctx_context_release(ctx);

    /* get_for_write clones: the copy is private and writable. */
    ASSERT_RC(ctx_var_set_string(user, "carol", NULL), 0);
    ctx_context_t *snap;
    ASSERT_RC(ctx_context_copy_current(&snap), 0);
    void *mine;
    ASSERT_RC(ctx_var_get_for_write(user, &mine), 0);
    ((char *)mine)[0] = 'K';
    ASSERT_RC(ctx_var_get_string(user, &got), CTX_VALUE);
    assert_string_equal(got, "Karol");
    ASSERT_RC(ctx_context_get(snap, user, &raw), 0);
    assert_string_equal((char *)raw, "carol");
    ctx_context_release(snap);

    ctx_var_release(user);
    ctx_var_release(lang);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

static void test_string_operations(void **state) {
    (void)state;
    const ctx_value_ops_t *ops = ctx_value_ops_string();
    assert_int_equal(ops->size, sizeof(ctx_value_ops_t));
    char buf[8];
    assert_int_equal(ops->format("hello world", buf, sizeof buf, NULL), 11);
    assert_string_equal(buf, "hello w"); /* snprintf-style truncation */
    assert_int_equal(ops->encode("a b", buf, sizeof buf, NULL), 3);
    assert_string_equal(buf, "a b");
    assert_int_equal(ops->format("x", NULL, 0, NULL), 1);
    void *out = NULL;
    ASSERT_RC(ops->decode("abcdef", 3, &out, NULL), 0);
    assert_string_equal((char *)out, "abc");
    ops->release(out, NULL);
    ASSERT_RC(ops->decode("a\0b", 3, &out, NULL), CTX_EPARSE);
    ASSERT_RC(ops->decode("", 0, &out, NULL), 0);
    assert_string_equal((char *)out, "");
    void *copy = NULL;
    ASSERT_RC(ops->clone(out, &copy, NULL), 0);
    assert_ptr_not_equal(copy, out);
    assert_string_equal((char *)copy, "");
    ops->release(out, NULL);
    ops->release(copy, NULL);
    ops->release(NULL, NULL); /* harmless */
}

/* ---- 64-bit integers ---- */

static void test_int64_variable(void **state) {
    (void)state;
    ctx_test_alloc_install();
    ctx_var_t *n;
    int64_t def = -5;
    ASSERT_RC(ctx_var_new_int64("n", &def, &n), 0);
    int64_t got = 0;
    ASSERT_RC(ctx_var_get_int64(n, &got), CTX_DEFAULT);
    assert_int_equal(got, -5);
    ctx_token_t *tok;
    ASSERT_RC(ctx_var_set_int64(n, INT64_MAX, &tok), 0);
    ASSERT_RC(ctx_var_get_int64(n, &got), CTX_VALUE);
    assert_true(got == INT64_MAX);
    void *raw;
    ASSERT_RC(ctx_var_get(n, &raw), CTX_VALUE);
    assert_true(*(int64_t *)raw == INT64_MAX); /* int64_t * for every reader */
    char text[64];
    ASSERT_RC(ctx_context_format_current(text, sizeof text, NULL), 0);
    assert_string_equal(text, "n=9223372036854775807");
    ASSERT_RC(ctx_var_reset(n, tok), 0);
    ctx_token_release(tok);
    ASSERT_RC(ctx_var_get_int64(n, &got), CTX_DEFAULT);

    ctx_var_t *plain;
    ASSERT_RC(ctx_var_new_int64("plain", NULL, &plain), 0);
    ASSERT_RC(ctx_var_get_int64(plain, &got), CTX_ENOTFOUND);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    ASSERT_RC(ctx_context_set_int64(ctx, plain, INT64_MIN), 0);
    ASSERT_RC(ctx_context_get(ctx, plain, &raw), 0);
    assert_true(*(int64_t *)raw == INT64_MIN);
    ctx_context_release(ctx);
    ASSERT_RC(ctx_var_set(plain, NULL, NULL), 0); /* a plain set of NULL */
    ASSERT_RC(ctx_var_get_int64(plain, &got), CTX_EINVAL);

    ctx_var_release(n);
    ctx_var_release(plain);
    ASSERT_RC(ctx_thread_release(), 0);
    assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    ctx_test_alloc_uninstall();
}

static void expect_decode(const char *text, int want_rc, int64_t want) {
    const ctx_value_ops_t *ops = ctx_value_ops_int64();
    void *out = NULL;
    int rc = ops->decode(text, strlen(text), &out, NULL);
    if (rc != want_rc)
        fail_msg("decode(\"%s\") returned %s, expected %s", text, ctx_error_name(rc),
                 ctx_error_name(want_rc));
    if (rc == 0) {
        if (*(int64_t *)out != want)
            fail_msg("decode(\"%s\") gave %lld", text, (long long)*(int64_t *)out);
        char buf[32];
        int len = ops->encode(out, buf, sizeof buf, NULL);
        assert_int_equal(len, (int)strlen(buf));
        void *again = NULL;
        ASSERT_RC(ops->decode(buf, (size_t)len, &again, NULL), 0); /* round trip */
        assert_true(*(int64_t *)again == want);
        ops->release(again, NULL);
        ops->release(out, NULL);
    }
}

static void test_int64_operations(void **state) {
    (void)state;
    expect_decode("0", 0, 0);
    expect_decode("-0", 0, 0);
    expect_decode("42", 0, 42);
    expect_decode("-42", 0, -42);
    expect_decode("000000000000000000000000012", 0, 12);
    expect_decode("9223372036854775807", 0, INT64_MAX);
    expect_decode("-9223372036854775808", 0, INT64_MIN);
    expect_decode("9223372036854775808", CTX_ELIMIT, 0);
    expect_decode("-9223372036854775809", CTX_ELIMIT, 0);
    expect_decode("99999999999999999999999", CTX_ELIMIT, 0);
    expect_decode("", CTX_EPARSE, 0);
    expect_decode("-", CTX_EPARSE, 0);
    expect_decode("+1", CTX_EPARSE, 0);
    expect_decode(" 1", CTX_EPARSE, 0);
    expect_decode("1 ", CTX_EPARSE, 0);
    expect_decode("12a", CTX_EPARSE, 0);
    expect_decode("--1", CTX_EPARSE, 0);
    const ctx_value_ops_t *ops = ctx_value_ops_int64();
    int64_t v = -1234;
    char buf[4];
    assert_int_equal(ops->format(&v, buf, sizeof buf, NULL), 5);
    assert_string_equal(buf, "-12");
    void *copy;
    ASSERT_RC(ops->clone(&v, &copy, NULL), 0);
    assert_true(*(int64_t *)copy == -1234);
    ops->release(copy, NULL);
}

static void test_typed_helpers_check_the_kind(void **state) {
    (void)state;
    ctx_var_t *s, *i, *other;
    ASSERT_RC(ctx_var_new_string("s", NULL, &s), 0);
    ASSERT_RC(ctx_var_new_int64("i", NULL, &i), 0);
    ASSERT_RC(ctx_var_new("other", NULL, &other), 0);
    ctx_context_t *ctx;
    ASSERT_RC(ctx_context_new(&ctx), 0);
    const char *text;
    int64_t n;
    ASSERT_RC(ctx_var_set_string(i, "x", NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_set_string(other, "x", NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_set_string(NULL, "x", NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_set_string(s, NULL, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_set_int64(s, 1, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_set_int64(other, 1, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_get_string(i, &text), CTX_EINVAL);
    ASSERT_RC(ctx_var_get_string(s, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_var_get_int64(s, &n), CTX_EINVAL);
    ASSERT_RC(ctx_var_get_int64(i, NULL), CTX_EINVAL);
    ASSERT_RC(ctx_context_set_string(ctx, i, "x"), CTX_EINVAL);
    ASSERT_RC(ctx_context_set_string(NULL, s, "x"), CTX_EINVAL);
    ASSERT_RC(ctx_context_set_int64(ctx, s, 1), CTX_EINVAL);
    ASSERT_RC(ctx_var_new_string(NULL, NULL, &s), CTX_EINVAL);
    ASSERT_RC(ctx_var_new_int64("x", NULL, NULL), CTX_EINVAL);
    assert_int_equal(ctx_context_length(ctx), 0);
    EXPECT_GET(s, CTX_ENOTFOUND, NULL);
    ctx_context_release(ctx);
    ctx_var_release(s);
    ctx_var_release(i);
    ctx_var_release(other);
}

/* Every allocation failing in turn: each call fails with CTX_ENOMEM and
 * changes nothing, or succeeds; nothing leaks either way. */
static void test_values_out_of_memory(void **state) {
    (void)state;
    ctx_test_alloc_install();
    for (long nth = 1; nth < 20; nth++) {
        ctx_var_t *s = NULL, *i = NULL;
        int64_t def = 7;
        ctx_test_alloc_fail_nth(nth);
        int rs = ctx_var_new_string("s", "dflt", &s);
        int ri = ctx_var_new_int64("i", &def, &i);
        int r1 = rs ? CTX_ENOMEM : ctx_var_set_string(s, "v", NULL);
        int r2 = ri ? CTX_ENOMEM : ctx_var_set_int64(i, 9, NULL);
        ctx_test_alloc_fail_nth(0);
        assert_true(rs == 0 || rs == CTX_ENOMEM);
        assert_true(ri == 0 || ri == CTX_ENOMEM);
        if (!rs) {
            const char *got;
            ASSERT_RC(ctx_var_get_string(s, &got), r1 == 0 ? CTX_VALUE : CTX_DEFAULT);
            assert_string_equal(got, r1 == 0 ? "v" : "dflt");
        }
        if (!ri) {
            int64_t got;
            ASSERT_RC(ctx_var_get_int64(i, &got), r2 == 0 ? CTX_VALUE : CTX_DEFAULT);
            assert_int_equal(got, r2 == 0 ? 9 : 7);
        }
        ctx_var_release(s);
        ctx_var_release(i);
        ASSERT_RC(ctx_thread_release(), 0);
        assert_int_equal(ctx_test_alloc_live_blocks(), 0);
    }
    ctx_test_alloc_uninstall();
}

/* ---- CTX_WITH_VALUE ---- */

static ctx_var_t *wv;
static int outer_value, inner_value;

static void *current(void) {
    void *out = NULL;
    return ctx_var_get(wv, &out) == CTX_VALUE ? out : NULL;
}

static void test_with_value_end_break_continue(void **state) {
    (void)state;
    wv = make_var("w", NULL, 0, NULL);
    int rc = -99;
    CTX_WITH_VALUE(wv, &outer_value, &rc) {
        assert_ptr_equal(current(), &outer_value);
    }
    ASSERT_RC(rc, 0);
    EXPECT_GET(wv, CTX_ENOTFOUND, NULL); /* unset again */

    ASSERT_RC(ctx_var_set(wv, &inner_value, NULL), 0);
    int ran = 0;
    CTX_WITH_VALUE(wv, &outer_value, NULL) {
        ran++;
        if (current() == &outer_value)
            break;
        fail_msg("not reached");
    }
    assert_int_equal(ran, 1);
    assert_ptr_equal(current(), &inner_value); /* the previous value is back */

    ran = 0;
    CTX_WITH_VALUE(wv, &outer_value, &rc) {
        ran++;
        continue; /* leaves the block (it is the loop) */
    }
    assert_int_equal(ran, 1);
    assert_ptr_equal(current(), &inner_value);

    /* Nested blocks restore in order; break acts on the inner block only. */
    CTX_WITH_VALUE(wv, &outer_value, &rc) {
        CTX_WITH_VALUE(wv, &inner_value, &rc) {
            assert_ptr_equal(current(), &inner_value);
            break;
        }
        assert_ptr_equal(current(), &outer_value);
    }
    assert_ptr_equal(current(), &inner_value);
    ctx_var_release(wv);
}

#if defined(__GNUC__)
static int return_from_inside(void) {
    CTX_WITH_VALUE(wv, &outer_value, NULL) {
        if (current() == &outer_value)
            return 1;
    }
    return 0;
}

static int goto_out_of_inside(void) {
    int seen = 0;
    CTX_WITH_VALUE(wv, &outer_value, NULL) {
        seen = current() == &outer_value;
        goto out;
    }
out:
    return seen;
}
#endif

static void test_with_value_return_and_goto(void **state) {
    (void)state;
#if defined(__GNUC__)
    wv = make_var("w", NULL, 0, NULL);
    ASSERT_RC(ctx_var_set(wv, &inner_value, NULL), 0);
    assert_int_equal(return_from_inside(), 1);
    assert_ptr_equal(current(), &inner_value);
    assert_int_equal(goto_out_of_inside(), 1);
    assert_ptr_equal(current(), &inner_value);
    ctx_var_release(wv);
#else
    skip(); /* not caught without the cleanup attribute: ctxvar.h */
#endif
}

/* The form other compilers get, exercised here directly. */
#define WITH_LOOP(var, value, rc)                                                      \
    CTX__WITH_LOOP(ctx__with_value((var), (value), (rc)), CTX__UNIQUE(with_loop_))

static void test_with_value_portable_form(void **state) {
    (void)state;
    wv = make_var("w", NULL, 0, NULL);
    int rc = -99, ran = 0;
    WITH_LOOP(wv, &outer_value, &rc) {
        ran++;
        assert_ptr_equal(current(), &outer_value);
    }
    ASSERT_RC(rc, 0);
    EXPECT_GET(wv, CTX_ENOTFOUND, NULL);
    ASSERT_RC(ctx_var_set(wv, &inner_value, NULL), 0);
    WITH_LOOP(wv, &outer_value, &rc) {
        ran++;
        break;
    }
    assert_ptr_equal(current(), &inner_value);
    WITH_LOOP(wv, &outer_value, &rc) {
        ran++;
        continue;
    }
    assert_ptr_equal(current(), &inner_value);
    WITH_LOOP(wv, &outer_value, &rc) {
        WITH_LOOP(wv, NULL, &rc) {
            ran++;
            assert_null(current());
            break;
        }
        assert_ptr_equal(current(), &outer_value);
    }
    assert_ptr_equal(current(), &inner_value);
    assert_int_equal(ran, 4); /* each block ran once */
    ctx_var_release(wv);
}

static void test_with_value_failed_set(void **state) {
    (void)state;
    val_counters_reset();
    val_t v;
    val_init(&v, 1);
    wv = make_var("w", NULL, 0, ops_release());
    ASSERT_RC(ctx_var_get(wv, &(void *){NULL}), CTX_ENOTFOUND); /* state made */
    ctx_test_alloc_install();
    ctx_test_alloc_fail_all(1);
    int rc = 0, ran = 0;
    CTX_WITH_VALUE(wv, &v, &rc) {
        ran = 1;
    }
    ctx_test_alloc_fail_all(0);
    ctx_test_alloc_uninstall();
    ASSERT_RC(rc, CTX_ENOMEM);
    assert_int_equal(ran, 0);
    assert_int_equal(val_released(&v), 0); /* still the caller's */
    EXPECT_GET(wv, CTX_ENOTFOUND, NULL);
    /* A release-owning value set in the block is released at its end. */
    CTX_WITH_VALUE(wv, &v, &rc) {
        assert_int_equal(val_released(&v), 0);
    }
    assert_int_equal(val_released(&v), 1);
    ctx_var_release(wv);
}

static void test_with_string_and_int64(void **state) {
    (void)state;
    ctx_var_t *user, *n;
    ASSERT_RC(ctx_var_new_string("user", "nobody", &user), 0);
    ASSERT_RC(ctx_var_new_int64("n", NULL, &n), 0);
    char buf[8] = "alice";
    int rc = -99;
    const char *got;
    int64_t v;
    CTX_WITH_STRING(user, buf, &rc) {
        buf[0] = 'X'; /* a copy was set */
        ASSERT_RC(ctx_var_get_string(user, &got), CTX_VALUE);
        assert_string_equal(got, "alice");
        CTX_WITH_INT64(n, -3, &rc) {
            ASSERT_RC(ctx_var_get_int64(n, &v), CTX_VALUE);
            assert_int_equal(v, -3);
        }
        ASSERT_RC(ctx_var_get_int64(n, &v), CTX_ENOTFOUND);
    }
    ASSERT_RC(rc, 0);
    ASSERT_RC(ctx_var_get_string(user, &got), CTX_DEFAULT);
    assert_string_equal(got, "nobody");
    int ran = 0;
    CTX_WITH_STRING(n, "wrong kind", &rc) { /* an int64 variable */
        ran = 1;
    }
    ASSERT_RC(rc, CTX_EINVAL);
    assert_int_equal(ran, 0);
    ctx_var_release(user);
    ctx_var_release(n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST(test_string_variable),
        TEST(test_string_operations),
        TEST(test_int64_variable),
        TEST(test_int64_operations),
        TEST(test_typed_helpers_check_the_kind),
        TEST(test_values_out_of_memory),
        TEST(test_with_value_end_break_continue),
        TEST(test_with_value_return_and_goto),
        TEST(test_with_value_portable_form),
        TEST(test_with_string_and_int64),
        TEST(test_with_value_failed_set),
    };
    return RUN_TESTS(tests);
}
