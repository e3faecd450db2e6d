/* SPDX-License-Identifier: MIT */
/*
 * ctx_test.h — what every cmocka test file of ctxvar shares: cmocka with the
 * headers it needs before it, an assertion that names error codes, and
 * iteration counts scaled down under valgrind and TSan (the build defines
 * CTX_TEST_UNDER_VALGRIND / CTX_TEST_UNDER_TSAN in those configurations).
 */
#ifndef CTX_TEST_H
#define CTX_TEST_H

/* cmocka needs these before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctxvar.h>

/* `expr` must evaluate to `want`; the message names both codes. */
#define ASSERT_RC(expr, want)                                                  \
    do {                                                                       \
        int got_rc_ = (expr);                                                  \
        int want_rc_ = (want);                                                 \
        if (got_rc_ != want_rc_)                                               \
            fail_msg("%s:%d: %s returned %d (%s), expected %d (%s)", __FILE__, \
                     __LINE__, #expr, got_rc_, ctx_error_name(got_rc_),        \
                     want_rc_, ctx_error_name(want_rc_));                      \
    } while (0)

/* Iteration counts: `n` normally, smaller under valgrind and TSan. */
#if defined(CTX_TEST_UNDER_VALGRIND)
#define CTX_SCALED(n, valgrind, tsan) (valgrind)
#elif defined(CTX_TEST_UNDER_TSAN)
#define CTX_SCALED(n, valgrind, tsan) (tsan)
#else
#define CTX_SCALED(n, valgrind, tsan) (n)
#endif

#endif /* CTX_TEST_H */
