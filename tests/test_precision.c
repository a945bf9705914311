/* tests/test_precision.c — the precision policy (bpc/precision.h): default,
 * parse, the fallback when bf16 cannot run (the float64 flavour always, and
 * any flavour with BPC_NO_BF16=1), and bad values.
 * BPC_TEST_BOTH_FLAVOURS */
#include "bp_test.h"
#include <stdlib.h>
#include <string.h>
#include <bpc/precision.h>

static void test_precision_default_is_float32(void **state)
{
    (void)state;
    assert_int_equal(bp_precision_requested(), BP_PRECISION_FLOAT32);
    assert_int_equal(bp_precision_active(), BP_PRECISION_FLOAT32);
}

static void test_precision_parse_names(void **state)
{
    (void)state;
    bp_precision p = BP_PRECISION_BF16;
    assert_int_equal(bp_precision_parse("float32", &p), BP_OK);
    assert_int_equal(p, BP_PRECISION_FLOAT32);
    assert_int_equal(bp_precision_parse("BF16", &p), BP_OK);
    assert_int_equal(p, BP_PRECISION_BF16);
    assert_int_equal(bp_precision_parse("bfloat16", &p), BP_OK);
    assert_int_equal(p, BP_PRECISION_BF16);
    assert_int_equal(bp_precision_parse("fp16", &p), BP_EINVAL);
    assert_non_null(strstr(bp_last_error(), "\"fp16\""));
    assert_int_equal(p, BP_PRECISION_BF16); /* untouched */
    assert_int_equal(bp_precision_parse(NULL, &p), BP_EINVAL);
    assert_string_equal(bp_precision_name(BP_PRECISION_BF16), "bf16");
}

static void test_precision_rejects_values_outside_the_enum(void **state)
{
    (void)state;
    assert_int_equal(bp_set_precision((bp_precision)7), BP_EINVAL);
    assert_non_null(strstr(bp_last_error(), "got 7"));
    assert_int_equal(bp_precision_requested(), BP_PRECISION_FLOAT32);
}

static void test_precision_bf16_active_only_where_available(void **state)
{
    (void)state;
    assert_int_equal(bp_set_precision(BP_PRECISION_BF16), BP_OK);
    assert_int_equal(bp_precision_requested(), BP_PRECISION_BF16);
    assert_int_equal(bp_precision_active(), bp_bf16_available() ? BP_PRECISION_BF16 : BP_PRECISION_FLOAT32);
#ifdef BP_REAL_DOUBLE
    assert_false(bp_bf16_available()); /* gradient checks stay float64 */
#endif
    assert_int_equal(bp_set_precision(BP_PRECISION_FLOAT32), BP_OK);
    assert_int_equal(bp_precision_active(), BP_PRECISION_FLOAT32);
}

static void test_precision_env_switch_forces_the_fallback(void **state)
{
    (void)state;
    setenv("BPC_NO_BF16", "1", 1);
    assert_false(bp_bf16_available());
    assert_int_equal(bp_set_precision(BP_PRECISION_BF16), BP_OK);
    assert_int_equal(bp_precision_active(), BP_PRECISION_FLOAT32);
    unsetenv("BPC_NO_BF16");
    assert_int_equal(bp_set_precision(BP_PRECISION_FLOAT32), BP_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precision_default_is_float32), /* first: the untouched default */
        cmocka_unit_test(test_precision_parse_names),
        cmocka_unit_test(test_precision_rejects_values_outside_the_enum),
        cmocka_unit_test(test_precision_bf16_active_only_where_available),
        cmocka_unit_test(test_precision_env_switch_forces_the_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
