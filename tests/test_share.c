/* tests/test_share.c — the shared context (brainpy.share): fit, i, t, dt.
 *
 * BrainPy 2.8.2: share.load('fit') of an unset key gives None, which is falsy,
 * so an unset fit reads false. dt defaults to brainpy.math's 0.1. */
#include "bp_test.h"
#include <bpc/share.h>

static int clear_share(void **state)
{
    (void)state;
    bp_share_clear();
    bp_clear_error();
    return 0;
}

static void test_share_unset_fit_reads_false(void **state)
{
    (void)state;
    assert_false(bp_share_has_fit());
    assert_false(bp_share_fit());
    bp_shared_args a = bp_share_get();
    assert_false(a.has_fit);
    assert_false(a.fit);
}

static void test_share_defaults_after_clear(void **state)
{
    (void)state;
    bp_shared_args a = bp_share_get();
    assert_int_equal(bp_share_i(), 0);
    assert_true(bp_share_t() == 0.0);
    assert_true(bp_share_dt() == 0.1);
    assert_false(a.has_i);
    assert_false(a.has_t);
    assert_true(a.has_dt);
    assert_true(a.dt == 0.1);
}

static void test_share_save_fit_true_then_false(void **state)
{
    (void)state;
    bp_share_save_fit(true);
    assert_true(bp_share_has_fit());
    assert_true(bp_share_fit());
    bp_share_save_fit(false);
    assert_true(bp_share_has_fit());
    assert_false(bp_share_fit());
}

static void test_share_save_writes_only_flagged_fields(void **state)
{
    (void)state;
    bp_shared_args a = {.has_i = true, .i = 12, .has_t = true, .t = 1.25, .fit = true, .dt = 99.0};
    BP_OK_OR_FAIL(bp_share_save(&a));
    assert_int_equal(bp_share_i(), 12);
    assert_true(bp_share_t() == 1.25);
    /* fit and dt carried values but their flags were false: untouched */
    assert_false(bp_share_has_fit());
    assert_false(bp_share_fit());
    assert_true(bp_share_dt() == 0.1);

    bp_shared_args b = {.has_fit = true, .fit = true, .has_dt = true, .dt = 0.025};
    BP_OK_OR_FAIL(bp_share_save(&b));
    bp_shared_args g = bp_share_get();
    assert_true(g.has_fit && g.fit);
    assert_true(g.has_i && g.i == 12); /* kept from the first save */
    assert_true(g.has_t && g.t == 1.25);
    assert_true(g.has_dt && g.dt == 0.025);
    assert_true(bp_share_dt() == 0.025);
}

static void test_share_clear_forgets_every_key(void **state)
{
    (void)state;
    bp_shared_args a = {.has_fit = true, .fit = true, .has_i = true, .i = 5,
                        .has_t = true, .t = 0.5, .has_dt = true, .dt = 0.5};
    BP_OK_OR_FAIL(bp_share_save(&a));
    assert_true(bp_share_fit());
    bp_share_clear();
    assert_false(bp_share_has_fit());
    assert_false(bp_share_fit());
    assert_int_equal(bp_share_i(), 0);
    assert_true(bp_share_t() == 0.0);
    assert_true(bp_share_dt() == 0.1);
}

static void test_share_save_rejects_nonpositive_dt_and_saves_nothing(void **state)
{
    (void)state;
    bp_shared_args a = {.has_fit = true, .fit = true, .has_i = true, .i = 7, .has_dt = true, .dt = 0.0};
    BP_EXPECT_ERR(bp_share_save(&a), BP_EINVAL, "dt must be > 0, got 0");
    assert_false(bp_share_has_fit()); /* all or nothing: fit and i not written */
    assert_int_equal(bp_share_i(), 0);
    assert_true(bp_share_dt() == 0.1);

    a.dt = -0.5;
    BP_EXPECT_ERR(bp_share_save(&a), BP_EINVAL, "got -0.5");
    a.dt = NAN;
    BP_EXPECT_ERR(bp_share_save(&a), BP_EINVAL, "dt must be > 0");
    assert_true(bp_share_dt() == 0.1);
    assert_false(bp_share_has_fit());
}

static void test_share_save_rejects_nonfinite_t(void **state)
{
    (void)state;
    bp_shared_args a = {.has_i = true, .i = 3, .has_t = true, .t = INFINITY};
    BP_EXPECT_ERR(bp_share_save(&a), BP_EINVAL, "t must be finite, got inf");
    assert_int_equal(bp_share_i(), 0);
    a.t = NAN;
    BP_EXPECT_ERR(bp_share_save(&a), BP_EINVAL, "t must be finite");
    assert_true(bp_share_t() == 0.0);
}

static void test_share_save_null_args_is_einval(void **state)
{
    (void)state;
    BP_EXPECT_ERR(bp_share_save(NULL), BP_EINVAL, "args is NULL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* first, without a clear: the state a fresh process starts with */
        cmocka_unit_test(test_share_unset_fit_reads_false),
        cmocka_unit_test_setup(test_share_defaults_after_clear, clear_share),
        cmocka_unit_test_setup(test_share_save_fit_true_then_false, clear_share),
        cmocka_unit_test_setup(test_share_save_writes_only_flagged_fields, clear_share),
        cmocka_unit_test_setup(test_share_clear_forgets_every_key, clear_share),
        cmocka_unit_test_setup(test_share_save_rejects_nonpositive_dt_and_saves_nothing, clear_share),
        cmocka_unit_test_setup(test_share_save_rejects_nonfinite_t, clear_share),
        cmocka_unit_test_setup(test_share_save_null_args_is_einval, clear_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
