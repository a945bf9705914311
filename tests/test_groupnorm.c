/* tests/test_groupnorm.c — GroupNorm / InstanceNorm beyond the conformance
 * harness (which checks them against PyTorch, by gradcheck, bad rank,
 * state_dict and threads): constructor errors, variables, names, a
 * hand-worked group, a constant group with epsilon 0. */
#include "bp_test.h"
#include <bpc/bpc.h>

static void test_constructor_errors(void **state)
{
    (void)state;
    bp_node *n = NULL;
    BP_EXPECT_ERR(bp_groupnorm_new(&n, 3, 4, NULL), BP_EINVAL, "num_channels (4) must be >= 1 and divisible by num_groups (3)");
    BP_EXPECT_ERR(bp_groupnorm_new(&n, 0, 4, NULL), BP_EINVAL, "num_groups (0)");
    BP_EXPECT_ERR(bp_instancenorm_new(&n, 0, NULL), BP_EINVAL, "InstanceNorm: num_channels (0)");
    bp_groupnorm_opts o = bp_groupnorm_defaults();
    o.epsilon = -1;
    BP_EXPECT_ERR(bp_groupnorm_new(&n, 2, 4, &o), BP_EINVAL, "epsilon must be finite and >= 0, got -1");
    BP_EXPECT_ERR(bp_groupnorm_new(NULL, 2, 4, NULL), BP_EINVAL, "out is NULL");
    assert_null(n);
}

static void test_vars_and_names(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(1);
    bp_groupnorm_opts o = bp_groupnorm_defaults();
    o.mode = &train;
    bp_node *g = NULL, *i = NULL;
    BP_OK_OR_FAIL(bp_groupnorm_new(&g, 2, 4, &o));
    BP_OK_OR_FAIL(bp_instancenorm_new(&i, 3, &o));
    assert_true(strncmp(bp_node_name(g), "GroupNorm", 9) == 0);
    assert_true(strncmp(bp_node_name(i), "InstanceNorm", 12) == 0);
    bp_collector *v = NULL;
    BP_OK_OR_FAIL(bp_node_train_vars(g, NULL, &v));
    assert_int_equal(bp_collector_len(v), 2);
    char want[64];
    snprintf(want, sizeof want, "%s.bias", bp_node_name(g));
    assert_string_equal(bp_collector_key(v, 0), want);
    snprintf(want, sizeof want, "%s.scale", bp_node_name(g));
    assert_string_equal(bp_collector_key(v, 1), want);
    bp_collector_free(v);
    assert_int_equal(((bp_groupnorm *)i)->num_groups, 3);
    bp_node_free(g), bp_node_free(i);
}

/* One sample, 2 positions, 2 channels, one group: values 1, 2, 3, 6:
 * mean 3, biased var (4 + 1 + 0 + 9) / 4 = 3.5, y = (x - 3) / sqrt(3.5).
 * With epsilon 0 and a constant group, y = bias (not NaN). */
static void test_hand_worked(void **state)
{
    (void)state;
    bp_groupnorm_opts o = bp_groupnorm_defaults();
    o.epsilon = 0;
    bp_node *g = NULL;
    BP_OK_OR_FAIL(bp_groupnorm_new(&g, 1, 2, &o));
    bp_tensor *x = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, (int64_t[]){1, 2, 2}));
    bp_real *xv = x->data;
    xv[0] = 1, xv[1] = 2, xv[2] = 3, xv[3] = 6;
    BP_OK_OR_FAIL(bp_node_update(g, x, &y));
    const double s = sqrt(3.5);
    const double want[4] = {-2 / s, -1 / s, 0, 3 / s};
    for (int k = 0; k < 4; k++) BP_ASSERT_CLOSE(((bp_real *)y->data)[k], want[k], 1e-6, 1e-6);
    bp_tensor_free(y);
    for (int k = 0; k < 4; k++) xv[k] = 5;
    ((bp_real *)((bp_groupnorm *)g)->bias->value->data)[1] = (bp_real)0.25;
    BP_OK_OR_FAIL(bp_node_update(g, x, &y));
    assert_true(((bp_real *)y->data)[0] == 0 && ((bp_real *)y->data)[1] == (bp_real)0.25);
    bp_tensor_free(y);
    BP_EXPECT_ERR(bp_node_update(g, x, NULL), BP_EINVAL, "out is NULL");
    bp_tensor *x3 = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x3, BP_REAL_DTYPE, 3, (int64_t[]){1, 2, 3}));
    BP_EXPECT_ERR(bp_node_update(g, x3, &y), BP_ESHAPE, "expected input of shape (..., 2)");
    bp_tensor_free(x3), bp_tensor_free(x);
    bp_node_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constructor_errors),
        cmocka_unit_test(test_vars_and_names),
        cmocka_unit_test(test_hand_worked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
