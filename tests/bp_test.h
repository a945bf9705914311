/* tests/bp_test.h — small helpers shared by the cmocka suites. */
#ifndef BP_TEST_H
#define BP_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

/* Asserts a bpc call succeeded, printing bp_last_error() when it did not. */
#define BP_OK_OR_FAIL(expr)                                                        \
    do {                                                                           \
        int bp_t_st_ = (int)(expr);                                                \
        if (bp_t_st_ != 0) fail_msg("%s -> %d: %s", #expr, bp_t_st_, bp_last_error()); \
    } while (0)

/* Asserts a call failed with the given status and its message contains `needle`. */
#define BP_EXPECT_ERR(expr, status, needle)                                        \
    do {                                                                           \
        int bp_t_st_ = (int)(expr);                                                \
        if (bp_t_st_ != (int)(status))                                             \
            fail_msg("%s -> %d, expected %d (%s)", #expr, bp_t_st_, (int)(status), bp_last_error()); \
        const char *bp_t_needle_ = (needle); /* a pointer: arrays trip -Waddress */  \
        if (bp_t_needle_ && !strstr(bp_last_error(), bp_t_needle_))                \
            fail_msg("%s: message \"%s\" lacks \"%s\"", #expr, bp_last_error(), bp_t_needle_); \
    } while (0)

/* |a - b| <= atol + rtol * |b|, with the values printed on failure. */
#define BP_ASSERT_CLOSE(a, b, atol, rtol)                                          \
    do {                                                                           \
        double bp_a_ = (double)(a), bp_b_ = (double)(b);                           \
        if (!(fabs(bp_a_ - bp_b_) <= (atol) + (rtol) * fabs(bp_b_)))               \
            fail_msg("%s = %.9g, expected %.9g (atol %g rtol %g)", #a, bp_a_, bp_b_, \
                     (double)(atol), (double)(rtol));                              \
    } while (0)

/* Running one case alone: a suite that starts its tests through
 * bp_run_tests (a static array, as cmocka_run_group_tests) or bp_run_test_array
 * (an array built at run time, with its count) honours the environment
 * variable BP_TEST_FILTER, a cmocka pattern ('*' any run of characters, '?'
 * one) matched against the test names; unset or empty runs everything:
 *   BP_TEST_FILTER='bn3d_fit.*' ./build/tests/test_conformance
 *   BP_TEST_FILTER='*.gradcheck' ctest --test-dir build -R conformance_f64
 * (ctest passes the environment through). */
static inline void bp_apply_test_filter(void)
{
    const char *pattern = getenv("BP_TEST_FILTER");
    if (pattern && *pattern) cmocka_set_test_filter(pattern);
}

static inline int bp_run_test_array(const char *group, const struct CMUnitTest *tests, size_t count,
                                    CMFixtureFunction setup, CMFixtureFunction teardown)
{
    bp_apply_test_filter();
    return _cmocka_run_group_tests(group, tests, count, setup, teardown);
}

#define bp_run_tests(tests, setup, teardown) \
    bp_run_test_array(#tests, (tests), sizeof(tests) / sizeof((tests)[0]), (setup), (teardown))

#endif
