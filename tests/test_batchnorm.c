/* tests/test_batchnorm.c — the BatchNorm1d/2d/3d layers: construction, vars,
 * modes, every error path, hand-worked forward/backward numbers, running
 * statistics, numerical stability, and the layer path (update + autograd) against
 * the PyTorch fixtures tests/data/batchnorm_*.txt. (The same fixtures drive the
 * raw kernels in test_batchnorm_kernels.c; float64 gradient checks of the layer
 * are in test_layers_f64.c.) */
#include "bp_test.h"
#include "fixture.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>
#include "../layers/batchnorm_internal.h"

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_share_clear();
    /* A test that failed mid-way leaves no graph or no-grad scope to the next. */
    bp_ag_release_graph();
    while (!bp_grad_enabled()) bp_no_grad_end();
    return 0;
}

static bp_tensor *tensor_of(int ndim, const int64_t *shape, const double *v)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, v[i]);
    return t;
}

static void test_defaults_and_vars(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 4, NULL));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    assert_non_null(bn);
    assert_string_equal(bp_node_name(n), "BatchNorm3d0");
    assert_int_equal(n->mode.kind, BP_TRAINING_MODE);
    assert_int_equal(n->mode.batch_size, 1);
    assert_int_equal(bn->n_axis, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(bn->axis[i], i);
    assert_true(bn->epsilon == 1e-5 && bn->momentum == 0.99 && bn->affine);
    assert_true(bp_node_pass_shared(n));

    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &v));
    const char *keys[] = {"BatchNorm3d0.running_mean", "BatchNorm3d0.running_var", "BatchNorm3d0.bias",
                          "BatchNorm3d0.scale"};
    const double init[] = {0, 1, 0, 1};
    assert_int_equal(bp_collector_len(v), 4);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(bp_collector_key(v, i), keys[i]);
        bp_var *var = bp_collector_var(v, i);
        assert_int_equal(var->kind, i < 2 ? BP_VARIABLE : BP_TRAINVAR);
        assert_int_equal(var->value->ndim, 1);
        assert_int_equal(var->value->shape[0], 4);
        for (int c = 0; c < 4; c++) assert_true(bp_tensor_get(var->value, c) == init[i]);
    }
    bp_collector_free(v);

    bp_collector *tv;
    BP_OK_OR_FAIL(bp_node_train_vars(n, NULL, &tv));
    assert_int_equal(bp_collector_len(tv), 2);
    assert_string_equal(bp_collector_key(tv, 0), "BatchNorm3d0.bias");
    bp_collector_free(tv);

    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(n, &sd));
    assert_int_equal(bp_dict_len(sd), 1);
    bp_dict *sub = bp_dict_get_dict(sd, "BatchNorm3d0");
    assert_non_null(sub);
    assert_non_null(bp_dict_get_tensor(sub, "BatchNorm3d0.running_var"));
    bp_dict_free(sd);

    /* reset() keeps the running statistics and parameters (BrainPy's Layer). */
    bp_tensor_set(bn->running_mean->value, 0, 3.0);
    BP_OK_OR_FAIL(bp_node_reset(n));
    assert_true(bp_tensor_get(bn->running_mean->value, 0) == 3.0);

    bp_node *n2;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n2, 4, NULL));
    assert_string_equal(bp_node_name(n2), "BatchNorm3d1");
    bp_node *n1d;
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n1d, 4, NULL));
    assert_string_equal(bp_node_name(n1d), "BatchNorm1d0");
    bp_batchnorm *b1 = bp_batchnorm_cast(n1d);
    assert_int_equal(b1->n_axis, 2);
    assert_int_equal(b1->ndim, 3);
    for (int i = 0; i < 2; i++) assert_int_equal(b1->axis[i], i);
    /* BatchNorm2d: (B, H, W, C), default axes (0, 1, 2), nothing kept but C. */
    bp_node *n2d;
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n2d, 6, NULL));
    assert_string_equal(bp_node_name(n2d), "BatchNorm2d0");
    bp_batchnorm *b2 = bp_batchnorm_cast(n2d);
    assert_non_null(b2);
    assert_int_equal(b2->ndim, 4);
    assert_int_equal(b2->n_axis, 3);
    for (int i = 0; i < 3; i++) assert_int_equal(b2->axis[i], i);
    assert_int_equal(b2->n_kept, 0);
    assert_int_equal(b2->n_features, 6);
    assert_int_equal(b2->num_features, 6);
    assert_int_equal(b2->running_mean->value->ndim, 1);
    assert_int_equal(b2->running_mean->value->shape[0], 6);
    bp_node_free(n2d);
    bp_node_free(n1d);
    bp_node_free(n2);
    bp_node_free(n);
}

static void test_modes_affine_initializers(void **state)
{
    (void)state;
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    bp_mode m = bp_batching_mode(8);
    o.mode = &m;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n, 3, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    assert_int_equal(bn->scale->kind, BP_VARIABLE); /* HEAD: not trainable in BatchingMode */
    assert_int_equal(bn->bias->kind, BP_VARIABLE);
    bp_node_free(n);

    m = bp_nonbatching_mode();
    BP_EXPECT_ERR(bp_batchnorm2d_new(&n, 3, &o), BP_EMODE,
                  "The mode only supports computing modes which are parents of (BatchingMode, TrainingMode), "
                  "but we got NonBatchingMode.");
    assert_null(n);
    m = bp_mode_base();
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n, 3, &o)); /* the plain Mode is a parent of both */
    bp_node_free(n);

    o = bp_batchnorm_defaults();
    o.affine = false;
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n, 3, &o));
    bn = bp_batchnorm_cast(n);
    assert_null(bn->scale);
    assert_null(bn->bias);
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &v));
    assert_int_equal(bp_collector_len(v), 2);
    bp_collector_free(v);
    bp_node_free(n);

    /* Array initializers of shape (C,), () and (1,); a callback-free scalar OneInit. */
    double vals[3] = {0.5, -1, 2};
    int64_t three = 3, one = 1;
    bp_tensor *arr = tensor_of(1, &three, vals), *scalar = tensor_of(0, NULL, vals),
              *single = tensor_of(1, &one, vals + 2);
    o = bp_batchnorm_defaults();
    o.scale_initializer = bp_array_init(arr);
    o.bias_initializer = bp_array_init(scalar);
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 3, &o));
    bn = bp_batchnorm_cast(n);
    for (int c = 0; c < 3; c++) {
        assert_true(bp_tensor_get(bn->scale->value, c) == (double)(float)vals[c]);
        assert_true(bp_tensor_get(bn->bias->value, c) == 0.5);
    }
    bp_node_free(n);
    o.bias_initializer = bp_array_init(single);
    o.scale_initializer = bp_one_init(3.0);
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 3, &o));
    bn = bp_batchnorm_cast(n);
    assert_true(bp_tensor_get(bn->bias->value, 2) == 2.0);
    assert_true(bp_tensor_get(bn->scale->value, 1) == 3.0);
    bp_node_free(n);
    int64_t two = 2;
    bp_tensor *wrong = tensor_of(1, &two, vals);
    o.bias_initializer = bp_array_init(wrong);
    BP_EXPECT_ERR(bp_batchnorm1d_new(&n, 3, &o), BP_ESHAPE, "should be (3,), () or (1,), got (2,)");
    bp_tensor_free(wrong);
    bp_tensor_free(arr);
    bp_tensor_free(scalar);
    bp_tensor_free(single);
}

static void test_constructor_errors(void **state)
{
    (void)state;
    bp_node *n = NULL;
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 0, NULL), BP_EINVAL, "num_features must be >= 1, got 0");
    o.epsilon = -1e-3;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "epsilon must be a finite value >= 0, got -0.001");
    o = bp_batchnorm_defaults();
    o.momentum = 1.5;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "momentum must be in [0, 1]");
    o = bp_batchnorm_defaults();
    o.n_axis = 2;
    o.axis[0] = 0;
    o.axis[1] = 5;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "axis 5 is out of range for 5-D input");
    o.axis[1] = 0;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "axis 0 is repeated");
    o.axis[1] = -1;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "is the channel (feature) axis");
    o.axis[1] = 2;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EUNSUPPORTED, "axis 1 is kept while a later one is reduced");
    o.n_axis = 3;
    o.axis[0] = 0;
    o.axis[1] = 1;
    o.axis[2] = 2;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "give its size in kept_dims[0]");
    o = bp_batchnorm_defaults();
    o.name = "not valid";
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_ENAME, "isn't a valid identifier");
    o.name = "bn";
    bp_node *a;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&a, 2, &o));
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_ENAME, "unique name");
    bp_node_free(a);
    o.scale_initializer = bp_normal_init(0, -1); /* a random initializer with a bad scale */
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "scale_initializer");
    assert_null(n);
}

/* Hand-worked: BatchNorm1d, C = 2, x (B=2, L=2, C=2); M = 4 rows per channel.
 * channel 0: 1, 2, 3, 4 -> mean 2.5, biased var 1.25, unbiased 5/3
 * channel 1: 10 x4      -> constant: normalises to exactly 0 (before bias) */
static const double hand_x[8] = {1, 10, 2, 10, 3, 10, 4, 10};

static void test_fit_forward_hand_worked(void **state)
{
    (void)state;
    bp_node *n;
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    double sc[2] = {2, 3}, bi[2] = {0.5, -1};
    int64_t two = 2, xs[3] = {2, 2, 2};
    bp_tensor *scale = tensor_of(1, &two, sc), *bias = tensor_of(1, &two, bi), *x = tensor_of(3, xs, hand_x);
    o.scale_initializer = bp_array_init(scale);
    o.bias_initializer = bp_array_init(bias);
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    bp_share_save_fit(true);
    bp_tensor *y;
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    bp_no_grad_end();
    double inv = 1.0 / sqrt(1.25 + 1e-5);
    for (int m = 0; m < 4; m++) {
        BP_ASSERT_CLOSE(bp_tensor_get(y, 2 * m), (hand_x[2 * m] - 2.5) * inv * 2 + 0.5, 1e-6, 1e-6);
        assert_true(bp_tensor_get(y, 2 * m + 1) == -1.0); /* exactly the bias */
    }
    BP_ASSERT_CLOSE(bp_tensor_get(bn->running_mean->value, 0), 0.01 * 2.5, 1e-7, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(bn->running_mean->value, 1), 0.01 * 10, 1e-7, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(bn->running_var->value, 0), 0.99 + 0.01 * 5.0 / 3.0, 1e-7, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(bn->running_var->value, 1), 0.99, 1e-7, 1e-6);
    bp_tensor_free(y);

    /* Eval: the running statistics normalise. */
    bp_share_save_fit(false);
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    bp_no_grad_end();
    double rm0 = 0.025, rv0 = 0.99 + 0.05 / 3.0, rm1 = 0.1, rv1 = 0.99;
    for (int m = 0; m < 4; m++) {
        BP_ASSERT_CLOSE(bp_tensor_get(y, 2 * m), (hand_x[2 * m] - rm0) / sqrt(rv0 + 1e-5) * 2 + 0.5, 1e-5, 1e-5);
        BP_ASSERT_CLOSE(bp_tensor_get(y, 2 * m + 1), (10 - rm1) / sqrt(rv1 + 1e-5) * 3 - 1, 1e-5, 1e-5);
    }
    /* Eval leaves the running statistics alone. */
    BP_ASSERT_CLOSE(bp_tensor_get(bn->running_mean->value, 0), 0.025, 1e-7, 1e-6);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(scale);
    bp_tensor_free(bias);
    bp_node_free(n);
}

/* Before any fit step and with fit unset (BrainPy 2.8.2: eval path), y = x / sqrt(1 + eps). */
static void test_eval_before_fit(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, NULL));
    int64_t xs[3] = {2, 2, 2};
    bp_tensor *x = tensor_of(3, xs, hand_x), *y;
    assert_false(bp_share_has_fit());
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    for (int i = 0; i < 8; i++) BP_ASSERT_CLOSE(bp_tensor_get(y, i), hand_x[i] / sqrt(1 + 1e-5), 1e-6, 1e-6);
    bp_ag_release_graph();
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(n);
}

/* dbias = sum(dy), dscale = sum(dy * xhat); with dy = 1 everywhere, dx = 0
 * (the mean removes any constant), dscale = sum(xhat) = 0. Use dy = x instead:
 * for channel 0, sum(dy*xhat) = sum(x*(x-2.5))/sqrt(1.25+eps) = 5/sqrt(1.25+eps). */
static void test_fit_backward_hand_worked(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, NULL));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    int64_t xs[3] = {2, 2, 2};
    bp_tensor *x = tensor_of(3, xs, hand_x), *dy = tensor_of(3, xs, hand_x), *y;
    bp_share_save_fit(true);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    BP_ASSERT_CLOSE(bp_tensor_get(bn->bias->grad, 0), 10.0, 1e-6, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(bn->bias->grad, 1), 40.0, 1e-6, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(bn->scale->grad, 0), 5.0 / sqrt(1.25 + 1e-5), 1e-5, 1e-5);
    assert_true(bp_tensor_get(bn->scale->grad, 1) == 0.0); /* xhat is exactly 0 */
    /* Gradients accumulate: a second step doubles them. */
    bp_tensor_free(y);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    BP_ASSERT_CLOSE(bp_tensor_get(bn->bias->grad, 0), 20.0, 1e-6, 1e-6);
    bp_node_zero_grad(n);
    assert_true(bp_tensor_get(bn->bias->grad, 0) == 0.0);
    bp_tensor_free(y);
    bp_tensor_free(dy);
    bp_tensor_free(x);
    bp_node_free(n);
}

/* Frozen BN (fit false) still back-propagates: dx = dy * scale / sqrt(running_var + eps). */
static void test_eval_backward_frozen(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, NULL));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    bp_tensor_set(bn->running_var->value, 0, 4.0);
    bp_tensor_set(bn->running_mean->value, 1, 1.0);
    bp_tensor_set(bn->scale->value, 1, 2.0);
    int64_t xs[3] = {2, 2, 2};
    bp_tensor *x = tensor_of(3, xs, hand_x), *gx;
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, 3, xs));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    bp_tensor *ones, *y;
    BP_OK_OR_FAIL(bp_tensor_full(&ones, BP_REAL_DTYPE, 3, xs, 1.0));
    bp_share_save_fit(false);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    BP_OK_OR_FAIL(bp_backward_with(y, ones));
    for (int m = 0; m < 4; m++) {
        BP_ASSERT_CLOSE(bp_tensor_get(gx, 2 * m), 1.0 / sqrt(4 + 1e-5), 1e-6, 1e-6);
        BP_ASSERT_CLOSE(bp_tensor_get(gx, 2 * m + 1), 2.0 / sqrt(1 + 1e-5), 1e-6, 1e-6);
    }
    /* dscale = sum(dy * (x - rm)) / sqrt(rv + eps): channel 0: 10/sqrt(4+eps); channel 1: 36/sqrt(1+eps). */
    BP_ASSERT_CLOSE(bp_tensor_get(bn->scale->grad, 0), 10 / sqrt(4 + 1e-5), 1e-5, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(bn->scale->grad, 1), 36 / sqrt(1 + 1e-5), 1e-5, 1e-6);
    /* The running statistics did not move. */
    assert_true(bp_tensor_get(bn->running_var->value, 0) == 4.0);
    bp_tensor_free(y);
    bp_tensor_free(ones);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_node_free(n);
}

static void test_update_errors(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 4, NULL));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    bp_tensor *x, *y = NULL;
    int64_t s4[4] = {2, 3, 3, 4};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 4, s4));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "BatchNorm3d0: expected 5D input (got 4D input)");
    assert_null(y);
    bp_tensor_free(x);
    int64_t s5[5] = {2, 3, 3, 3, 5};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s5));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "expected 4 channels in the last axis of (B,H,W,D,C), got 5");
    bp_tensor_free(x);
    BP_EXPECT_ERR(bp_node_update(n, NULL, &y), BP_EINVAL, "input is NULL");
    int64_t s1[5] = {1, 1, 1, 1, 4};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s1));
    bp_share_save_fit(true);
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_EINVAL, "more than 1 value per channel");
    bp_share_save_fit(false);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y)); /* eval with one value is fine */
    bp_ag_release_graph();
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor *xi;
    BP_OK_OR_FAIL(bp_tensor_new(&xi, BP_INT32, 5, s1));
    BP_EXPECT_ERR(bp_node_update(n, xi, &y), BP_EDTYPE, "expected float");
    bp_tensor_free(xi);

    /* A NaN is reported, and nothing is stored in the running statistics. */
    int64_t s2[5] = {2, 1, 1, 1, 4};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s2));
    bp_tensor_set(x, 2, NAN);
    bp_share_save_fit(true);
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ENUMERIC, "channel 2");
    for (int c = 0; c < 4; c++) {
        assert_true(bp_tensor_get(bn->running_mean->value, c) == 0.0);
        assert_true(bp_tensor_get(bn->running_var->value, c) == 1.0);
    }
    bp_tensor_free(x);
    bp_node_free(n);

    /* axis_name is stored; fitting with it is a clear error (no replicas here). */
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.axis_name = "batch";
    int groups[2] = {0, 1};
    o.axis_index_groups = groups;
    o.n_axis_index_groups = 2;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 4, &o));
    bn = bp_batchnorm_cast(n);
    assert_string_equal(bn->axis_name, "batch");
    assert_int_equal(bn->n_axis_index_groups, 2);
    assert_int_equal(bn->axis_index_groups[1], 1);
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s2));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_EUNSUPPORTED, "axis_name \"batch\"");
    bp_share_save_fit(false);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    bp_ag_release_graph();
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(n);
}

/* x = 1e4 + N(0,1): the one-pass E[x^2]-E[x]^2 loses every digit in float32;
 * the stored unbiased variance (momentum 0) must be within 1e-3 of float64's. */
static void test_stable_statistics(void **state)
{
    (void)state;
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.momentum = 0.0;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 3, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    int64_t s[5] = {4, 8, 8, 8, 3};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s));
    bp_rng r;
    bp_rng_seed(&r, 42);
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, 1e4 + bp_rng_normal(&r));
    double sum[3] = {0}, sq[3] = {0};
    int64_t M = x->numel / 3;
    for (int64_t i = 0; i < x->numel; i++) sum[i % 3] += bp_tensor_get(x, i);
    for (int64_t i = 0; i < x->numel; i++) {
        double d = bp_tensor_get(x, i) - sum[i % 3] / M;
        sq[i % 3] += d * d;
    }
    bp_share_save_fit(true);
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    bp_no_grad_end();
    for (int c = 0; c < 3; c++) {
        double want = sq[c] / (M - 1);
        BP_ASSERT_CLOSE(bp_tensor_get(bn->running_var->value, c), want, 0, 1e-3);
        BP_ASSERT_CLOSE(bp_tensor_get(bn->running_mean->value, c), sum[c] / M, 0, 1e-6);
    }
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(n);
}

/* A custom axis (0,1,2) on BatchNorm3d keeps D: statistics per (D, C). */
static void test_custom_axis(void **state)
{
    (void)state;
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.n_axis = 3;
    o.axis[0] = 0;
    o.axis[1] = -4;
    o.axis[2] = 2;
    o.kept_dims[0] = 2;
    o.momentum = 0.0;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 3, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    assert_int_equal(bn->running_mean->value->ndim, 2);
    assert_int_equal(bn->running_mean->value->shape[0], 2);
    assert_int_equal(bn->running_mean->value->shape[1], 3);
    int64_t s[5] = {2, 2, 2, 2, 3};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s));
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, (double)((i * 7) % 11) + (i % 6 >= 3 ? 100 : 0));
    bp_share_save_fit(true);
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    bp_no_grad_end();
    /* Each (d, c) position's mean over the 8 rows (b, h, w). */
    for (int f = 0; f < 6; f++) {
        double sum = 0;
        for (int m = 0; m < 8; m++) sum += bp_tensor_get(x, m * 6 + f);
        BP_ASSERT_CLOSE(bp_tensor_get(bn->running_mean->value, f), sum / 8, 1e-5, 1e-6);
        double ysum = 0;
        for (int m = 0; m < 8; m++) ysum += bp_tensor_get(y, m * 6 + f);
        BP_ASSERT_CLOSE(ysum, 0.0, 1e-4, 0);
    }
    bp_tensor_free(y);
    bp_tensor_free(x);
    int64_t bad[5] = {2, 2, 2, 3, 3};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, bad));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "built with kept_dims[0] = 2");
    bp_tensor_free(x);
    bp_node_free(n);
}

/* The fused BatchNorm+ReLU equals BatchNorm then max(., 0), in both modes. */
static void test_fused_relu(void **state)
{
    (void)state;
    bp_node *a, *b;
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.name = "bn_a";
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&a, 5, &o));
    o.name = "bn_b";
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&b, 5, &o));
    int64_t s[5] = {2, 3, 2, 2, 5};
    bp_tensor *x;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s));
    bp_rng r;
    bp_rng_seed(&r, 7);
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, bp_rng_normal(&r) * 3 + 1);
    for (int fit = 1; fit >= 0; fit--) {
        bp_share_save_fit(fit);
        bp_tensor *y1, *y2;
        bp_no_grad_begin();
        BP_OK_OR_FAIL(bp_node_update(a, x, &y1));
        BP_OK_OR_FAIL(bp__bn_relu_pool_run(b, NULL, x, &y2));
        bp_no_grad_end();
        for (int64_t i = 0; i < x->numel; i++) {
            double want = bp_tensor_get(y1, i) > 0 ? bp_tensor_get(y1, i) : 0;
            BP_ASSERT_CLOSE(bp_tensor_get(y2, i), want, 1e-6, 1e-6);
        }
        bp_tensor_free(y1);
        bp_tensor_free(y2);
    }
    BP_EXPECT_ERR(bp__bn_relu_pool_run(NULL, NULL, x, NULL), BP_EINVAL, "not a BatchNorm layer");
    bp_tensor_free(x);
    bp_node_free(a);
    bp_node_free(b);
}

/* ------------------------------------------------------------------ more constructor checks */

/* A user callback initializer: records how it was called, fills base + 0.25 * i. */
typedef struct cb_record {
    int calls;
    int ndim;
    int64_t shape0;
    bp_dtype dtype;
    bp_rng *rng;
    double base;
} cb_record;

static bp_status fill_cb(bp_tensor *out, bp_rng *rng, void *user)
{
    cb_record *r = user;
    r->calls++;
    r->ndim = out->ndim;
    r->shape0 = out->ndim > 0 ? out->shape[0] : -1;
    r->dtype = out->dtype;
    r->rng = rng;
    for (int64_t i = 0; i < out->numel; i++) bp_tensor_set(out, i, r->base + 0.25 * (double)i);
    return BP_OK;
}

static bp_status failing_cb(bp_tensor *out, bp_rng *rng, void *user)
{
    (void)out;
    (void)rng;
    ++*(int *)user;
    return bp_fail(BP_EINVAL, "no values for this tensor");
}

static void test_callback_initializers(void **state)
{
    (void)state;
    cb_record rs = {.base = 2.0}, rb = {.base = -1.0};
    bp_rng rng;
    bp_rng_seed(&rng, 5);
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.scale_initializer = bp_callback_init(fill_cb, &rs);
    o.bias_initializer = bp_callback_init(fill_cb, &rb);
    o.rng = &rng;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 3, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    /* Each callback ran once, on a (C,) tensor of the real dtype, with the user's generator. */
    assert_int_equal(rs.calls, 1);
    assert_int_equal(rb.calls, 1);
    assert_int_equal(rs.ndim, 1);
    assert_int_equal(rb.ndim, 1);
    assert_int_equal(rs.shape0, 3);
    assert_int_equal(rb.shape0, 3);
    assert_int_equal(rs.dtype, BP_REAL_DTYPE);
    assert_int_equal(rb.dtype, BP_REAL_DTYPE);
    assert_ptr_equal(rs.rng, &rng);
    assert_ptr_equal(rb.rng, &rng);
    for (int c = 0; c < 3; c++) {
        assert_true(bp_tensor_get(bn->scale->value, c) == 2.0 + 0.25 * c);
        assert_true(bp_tensor_get(bn->bias->value, c) == -1.0 + 0.25 * c);
    }
    /* The vars are the ones update() uses: in eval before any fit step,
     * y = x / sqrt(1 + eps) * scale + bias, so x = 0 gives the bias. */
    int64_t xs[5] = {2, 1, 1, 1, 3};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs));
    bp_tensor_set(x, 1, 4.0);
    bp_share_save_fit(false);
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    bp_no_grad_end();
    BP_ASSERT_CLOSE(bp_tensor_get(y, 0), -1.0, 1e-7, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 1), 4.0 / sqrt(1 + 1e-5) * 2.25 - 0.75, 1e-6, 1e-6);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 5), -0.5, 1e-7, 0);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(n);

    /* Without opts.rng the callback still gets a generator (seeded with 0). */
    rs.calls = 0;
    rs.rng = NULL;
    o.rng = NULL;
    o.bias_initializer = bp_zero_init();
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, &o));
    assert_int_equal(rs.calls, 1);
    assert_non_null(rs.rng);
    assert_int_equal(rs.shape0, 2);
    bn = bp_batchnorm_cast(n);
    assert_true(bp_tensor_get(bn->scale->value, 1) == 2.25);
    assert_true(bp_tensor_get(bn->bias->value, 1) == 0.0);
    bp_node_free(n);

    /* A failing callback fails the constructor, naming the parameter and keeping its message. */
    int fails = 0;
    n = NULL;
    o.scale_initializer = bp_callback_init(failing_cb, &fails);
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 3, &o), BP_EINVAL,
                  "scale_initializer: callback initializer failed: no values for this tensor");
    assert_int_equal(fails, 1);
    assert_null(n);
    o.scale_initializer = bp_one_init(1.0);
    o.bias_initializer = bp_callback_init(failing_cb, &fails);
    BP_EXPECT_ERR(bp_batchnorm2d_new(&n, 3, &o), BP_EINVAL, "bias_initializer: callback initializer failed");
    assert_int_equal(fails, 2);
    assert_null(n);
    o.bias_initializer = bp_callback_init(NULL, NULL);
    BP_EXPECT_ERR(bp_batchnorm2d_new(&n, 3, &o), BP_EINVAL, "bias_initializer: callback initializer: fn is NULL");
    assert_null(n);
}

/* Argument checks not covered by test_constructor_errors. */
static void test_constructor_errors_more(void **state)
{
    (void)state;
    bp_node *n = NULL;
    BP_EXPECT_ERR(bp_batchnorm3d_new(NULL, 2, NULL), BP_EINVAL, "BatchNorm3d: out is NULL");

    /* n_axis must be 1 .. ndim - 1 (0 is the default). */
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.n_axis = 5;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "BatchNorm3d: axis must list 1 to 4 axes, got 5");
    assert_null(n);
    o.n_axis = -1;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "axis must list 1 to 4 axes, got -1");
    o.n_axis = 3;
    BP_EXPECT_ERR(bp_batchnorm1d_new(&n, 2, &o), BP_EINVAL, "BatchNorm1d: axis must list 1 to 2 axes, got 3");
    o.n_axis = 4;
    BP_EXPECT_ERR(bp_batchnorm2d_new(&n, 2, &o), BP_EINVAL, "BatchNorm2d: axis must list 1 to 3 axes, got 4");
    assert_null(n);
    /* The largest n_axis is fine: (0, 1, 2, 3) is the default of BatchNorm3d. */
    o.n_axis = 4;
    for (int i = 0; i < 4; i++) o.axis[i] = i;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 2, &o));
    assert_int_equal(bp_batchnorm_cast(n)->n_kept, 0);
    bp_node_free(n);
    n = NULL;

    /* epsilon: NaN and infinities. */
    o = bp_batchnorm_defaults();
    o.epsilon = NAN;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "epsilon must be a finite value >= 0, got nan");
    o.epsilon = INFINITY;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "epsilon must be a finite value >= 0, got inf");
    o.epsilon = -INFINITY;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "epsilon must be a finite value >= 0, got -inf");
    assert_null(n);
    o.epsilon = 0.0; /* zero is allowed */
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 2, &o));
    assert_true(bp_batchnorm_cast(n)->epsilon == 0.0);
    bp_node_free(n);
    n = NULL;

    /* momentum: NaN, below 0, infinite; the ends 0 and 1 are allowed. */
    o = bp_batchnorm_defaults();
    o.momentum = NAN;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL,
                  "momentum must be in [0, 1] (BrainPy's retention factor), got nan");
    o.momentum = -0.25;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL,
                  "momentum must be in [0, 1] (BrainPy's retention factor), got -0.25");
    o.momentum = INFINITY;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "got inf");
    assert_null(n);
    for (int k = 0; k <= 1; k++) {
        o.momentum = k;
        BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 2, &o));
        assert_true(bp_batchnorm_cast(n)->momentum == (double)k);
        bp_node_free(n);
        n = NULL;
    }

    /* axis_index_groups NULL with a non-zero count. */
    o = bp_batchnorm_defaults();
    o.n_axis_index_groups = 3;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "BatchNorm3d: axis_index_groups is NULL with 3 entries");
    assert_null(n);

    /* kept_dims whose product (times C, in bytes) overflows int64. */
    o = bp_batchnorm_defaults();
    o.n_axis = 3; /* (0, 1, 2): keeps D */
    for (int i = 0; i < 3; i++) o.axis[i] = i;
    o.kept_dims[0] = INT64_MAX / 8 / 2 + 1;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL,
                  "kept_dims make too many statistics (overflow at kept_dims[0] = 576460752303423488)");
    assert_null(n);
    o.n_axis = 2; /* (0, 1): keeps W and D; 2 * 2^30 * 2^30 * 8 bytes > INT64_MAX */
    o.kept_dims[0] = (int64_t)1 << 30;
    o.kept_dims[1] = (int64_t)1 << 30;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, "overflow at kept_dims[1] = 1073741824");
    assert_null(n);
    o.kept_dims[0] = 3;
    o.kept_dims[1] = 0;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL,
                  "axis keeps input axis 3 besides the channel; give its size in kept_dims[1] (got 0)");
    assert_null(n);

    /* An array initializer without an array. */
    o = bp_batchnorm_defaults();
    o.bias_initializer = bp_array_init(NULL);
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 2, &o), BP_EINVAL, ": bias_initializer array is NULL");
    assert_null(n);
    o.bias_initializer = bp_zero_init();
    o.scale_initializer = bp_array_init(NULL);
    o.name = "bn_null_scale";
    BP_EXPECT_ERR(bp_batchnorm1d_new(&n, 2, &o), BP_EINVAL, "bn_null_scale: scale_initializer array is NULL");
    assert_null(n);
    /* The failed construction released its name. */
    o.scale_initializer = bp_one_init(1.0);
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, &o));
    assert_string_equal(bp_node_name(n), "bn_null_scale");
    bp_node_free(n);
}

/* state_dict() of a BatchNorm3d: one entry for the node, holding its four vars
 * in declaration order (running_mean, running_var, bias, scale), as copies. */
static void test_state_dict(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 3, NULL));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    const double rm[3] = {0.5, -1, 2}, rv[3] = {1.5, 2, 0.25}, bi[3] = {-0.5, 0, 0.5}, sc[3] = {3, 4, 5};
    const double *want[4] = {rm, rv, bi, sc};
    bp_var *vars[4] = {bn->running_mean, bn->running_var, bn->bias, bn->scale};
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 3; c++) bp_tensor_set(vars[k]->value, c, want[k][c]);

    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(n, &sd));
    assert_int_equal(bp_dict_len(sd), 1);
    assert_string_equal(bp_dict_key(sd, 0), "BatchNorm3d0");
    assert_null(bp_dict_tensor(sd, 0));
    bp_dict *sub = bp_dict_sub(sd, 0);
    assert_non_null(sub);
    const char *keys[4] = {"BatchNorm3d0.running_mean", "BatchNorm3d0.running_var", "BatchNorm3d0.bias",
                           "BatchNorm3d0.scale"};
    assert_int_equal(bp_dict_len(sub), 4);
    for (size_t k = 0; k < 4; k++) {
        assert_string_equal(bp_dict_key(sub, k), keys[k]);
        bp_tensor *t = bp_dict_tensor(sub, k);
        assert_non_null(t);
        assert_int_equal(t->dtype, BP_REAL_DTYPE);
        assert_int_equal(t->ndim, 1);
        assert_int_equal(t->shape[0], 3);
        assert_true(t != vars[k]->value);
        for (int c = 0; c < 3; c++) assert_true(bp_tensor_get(t, c) == want[k][c]);
    }
    /* A snapshot: later changes to the vars do not show in it. */
    bp_tensor_set(bn->running_mean->value, 0, 9.0);
    assert_true(bp_tensor_get(bp_dict_tensor(sub, 0), 0) == 0.5);
    bp_dict_free(sd);

    /* save_state(): the same four keys, flat, in the same order. */
    bp_dict *flat;
    BP_OK_OR_FAIL(bp_node_save_state(n, &flat));
    assert_int_equal(bp_dict_len(flat), 4);
    for (size_t k = 0; k < 4; k++) assert_string_equal(bp_dict_key(flat, k), keys[k]);
    assert_true(bp_tensor_get(bp_dict_tensor(flat, 0), 0) == 9.0);
    bp_dict_free(flat);

    /* Without affine only the running statistics. */
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.affine = false;
    bp_node *na;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&na, 3, &o));
    BP_OK_OR_FAIL(bp_node_state_dict(na, &sd));
    assert_int_equal(bp_dict_len(sd), 1);
    assert_string_equal(bp_dict_key(sd, 0), "BatchNorm3d1");
    sub = bp_dict_sub(sd, 0);
    assert_non_null(sub);
    assert_int_equal(bp_dict_len(sub), 2);
    assert_string_equal(bp_dict_key(sub, 0), "BatchNorm3d1.running_mean");
    assert_string_equal(bp_dict_key(sub, 1), "BatchNorm3d1.running_var");
    bp_dict_free(sd);
    bp_node_free(na);
    bp_node_free(n);
}

/* Wrong input rank for BatchNorm1d (3-D (B,L,C)) and BatchNorm2d (4-D (B,H,W,C)). */
static void test_wrong_ndim_1d_2d(void **state)
{
    (void)state;
    bp_node *n1, *n2;
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n1, 3, NULL));
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n2, 3, NULL));
    const int64_t shape[6] = {2, 2, 2, 2, 2, 3};
    bp_tensor *x, *y = NULL;
    bp_share_save_fit(true);
    /* (rank, layer, expected substring): BrainPy's text; BatchNorm1d's may say
     * "expected 3D input" or BrainPy's "expected 2D or 3D input". */
    struct {
        int ndim;
        bp_node *n;
        const char *needle;
    } cases[] = {
        {4, n1, "(got 4D input)"},
        {1, n1, "(got 1D input)"},
        {5, n2, "expected 4D input (got 5D input)"},
        {3, n2, "expected 4D input (got 3D input)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, cases[k].ndim, shape + 6 - cases[k].ndim));
        BP_EXPECT_ERR(bp_node_update(cases[k].n, x, &y), BP_ESHAPE, cases[k].needle);
        BP_EXPECT_ERR(bp_node_update(cases[k].n, x, &y), BP_ESHAPE, bp_node_name(cases[k].n));
        assert_null(y);
        bp_tensor_free(x);
    }
    /* Nothing moved; the right ranks work. */
    bp_batchnorm *b1 = bp_batchnorm_cast(n1), *b2 = bp_batchnorm_cast(n2);
    assert_true(bp_tensor_get(b1->running_var->value, 0) == 1.0);
    assert_true(bp_tensor_get(b2->running_var->value, 0) == 1.0);
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, shape + 3));
    BP_OK_OR_FAIL(bp_node_update(n1, x, &y));
    bp_tensor_free(y);
    bp_tensor_free(x);
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 4, shape + 2));
    BP_OK_OR_FAIL(bp_node_update(n2, x, &y));
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_no_grad_end();
    bp_node_free(n1);
    bp_node_free(n2);
}

/* ------------------------------------------------------------------ PyTorch fixtures, layer path
 *
 * The fixtures of tests/gen_batchnorm.py (see there) through the layers:
 * construction with the fixture's momentum (already BrainPy's retention
 * convention: 1 - PyTorch's momentum), epsilon, weight as scale and bias;
 * three fit steps x0, x1, x2 through update(), the last recorded and
 * back-propagated with dy; then eval on x2 with PyTorch's running statistics.
 * The layer runs the same kernels as test_batchnorm_kernels.c on the same
 * (M, C) data, so the same tolerances apply (see the note at the top of that
 * file): float32 ATOL 2e-5, RTOL 1e-5. */
#define IS_F32 (sizeof(bp_real) == 4)
#define FX_ATOL (IS_F32 ? 2e-5 : 1e-12)
#define FX_RTOL (IS_F32 ? 1e-5 : 1e-12)

/* A tensor of the given shape holding the fixture tensor `name` (same numel). */
static bp_tensor *fx_as(const fx_file *f, const char *name, int ndim, const int64_t *shape)
{
    const fx_tensor *t = fx_get(f, name);
    if (!t) fail_msg("fixture lacks %s", name);
    bp_tensor *out;
    BP_OK_OR_FAIL(bp_tensor_new(&out, BP_REAL_DTYPE, ndim, shape));
    if (out->numel != t->numel)
        fail_msg("%s: %lld values, the layer's shape wants %lld", name, (long long)t->numel, (long long)out->numel);
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(out, i, t->data[i]);
    return out;
}

/* Asserts got == the fixture's `name` elementwise within FX_ATOL + FX_RTOL * |want|. */
static void expect_fx(const char *what, const bp_tensor *got, const fx_file *f, const char *name)
{
    const fx_tensor *t = fx_get(f, name);
    if (!t) fail_msg("fixture lacks %s", name);
    assert_non_null(got);
    if (got->numel != t->numel)
        fail_msg("%s: %lld values, PyTorch has %lld", what, (long long)got->numel, (long long)t->numel);
    for (int64_t i = 0; i < t->numel; i++) {
        double g = bp_tensor_get(got, i), w = t->data[i];
        if (!(fabs(g - w) <= FX_ATOL + FX_RTOL * fabs(w)))
            fail_msg("%s[%lld] = %.9g, PyTorch %.9g (atol %g rtol %g)", what, (long long)i, g, w, FX_ATOL, FX_RTOL);
    }
}

/* Runs one fixture through a BatchNorm of input rank `ndim` (3: 1d, 4: 2d,
 * 5: 3d). natural: the input has PyTorch's shape made channels-last,
 * (N, C, *S) -> (N, *S, C), with size-1 axes inserted after N when PyTorch's
 * input has fewer axes (BatchNorm1d's 2-D (N, C) -> (N, 1, C)); otherwise it
 * is the fixture's (M, C) matrix viewed as (M, 1, ..., 1, C). */
static void run_layer_fixture(const char *file, int ndim, bool natural)
{
    fx_file *f = fx_load(file);
    assert_non_null(f);
    const fx_tensor *ts = fx_get(f, "torch_shape"), *x0 = fx_get(f, "x0");
    assert_non_null(ts);
    assert_non_null(x0);
    const int64_t M = x0->shape[0], C = x0->shape[1];
    assert_int_equal((int64_t)ts->data[1], C);
    int64_t shape[BP_MAX_DIMS];
    for (int d = 0; d < ndim; d++) shape[d] = 1;
    shape[ndim - 1] = C;
    if (natural) {
        int tnd = (int)ts->numel; /* PyTorch's rank */
        assert_true(tnd >= 2 && tnd <= ndim);
        shape[0] = (int64_t)ts->data[0];
        for (int d = 2; d < tnd; d++) shape[ndim - tnd + d - 1] = (int64_t)ts->data[d];
    } else {
        shape[0] = M;
    }
    const int64_t cshape[1] = {C};

    bp_tensor *scale = fx_as(f, "scale", 1, cshape), *bias = fx_as(f, "bias", 1, cshape);
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.momentum = fx_get(f, "momentum")->data[0];
    o.epsilon = fx_get(f, "eps")->data[0];
    o.scale_initializer = bp_array_init(scale);
    o.bias_initializer = bp_array_init(bias);
    bp_node *n;
    if (ndim == 3)
        BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, C, &o));
    else if (ndim == 4)
        BP_OK_OR_FAIL(bp_batchnorm2d_new(&n, C, &o));
    else
        BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, C, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    assert_int_equal(bn->ndim, ndim);
    assert_true(bn->momentum == o.momentum && bn->epsilon == o.epsilon);
    for (int64_t c = 0; c < C; c++) {
        assert_true(bp_tensor_get(bn->scale->value, c) == bp_tensor_get(scale, c));
        assert_true(bp_tensor_get(bn->bias->value, c) == bp_tensor_get(bias, c));
    }

    /* Fit steps 0 and 1 without a graph, as the generator's torch.no_grad(). */
    bp_share_save_fit(true);
    bp_tensor *x, *y;
    for (int step = 0; step < 2; step++) {
        char name[8];
        snprintf(name, sizeof name, "x%d", step);
        x = fx_as(f, name, ndim, shape);
        bp_no_grad_begin();
        BP_OK_OR_FAIL(bp_node_update(n, x, &y));
        bp_no_grad_end();
        assert_false(bp_ag_requires_grad(y));
        bp_tensor_free(y);
        bp_tensor_free(x);
    }
    assert_int_equal(bp_ag_graph_size(), 0);

    /* Step 2, recorded, as layer({'fit': True}, x) with x a leaf. */
    bp_share_clear();
    bp_tensor *gx, *dy = fx_as(f, "dy", ndim, shape);
    x = fx_as(f, "x2", ndim, shape);
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, ndim, shape));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    bp_shared_args fit = {.has_fit = true, .fit = true};
    BP_OK_OR_FAIL(bp_node_call(n, &fit, x, &y));
    assert_true(bp_tensor_has_shape(y, ndim, shape));
    assert_true(bp_ag_requires_grad(y));
    expect_fx("y", y, f, "y");
    expect_fx("running_mean", bn->running_mean->value, f, "running_mean");
    expect_fx("running_var", bn->running_var->value, f, "running_var");
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    expect_fx("dx", gx, f, "dx");
    expect_fx("dscale", bn->scale->grad, f, "dscale");
    expect_fx("dbias", bn->bias->grad, f, "dbias");
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(gx);

    /* Eval on x2 with PyTorch's running statistics (independent of ours). */
    bp_node_zero_grad(n);
    bp_tensor *trm = fx_as(f, "running_mean", 1, cshape), *trv = fx_as(f, "running_var", 1, cshape);
    BP_OK_OR_FAIL(bp_var_assign(bn->running_mean, trm));
    BP_OK_OR_FAIL(bp_var_assign(bn->running_var, trv));
    x = fx_as(f, "x2", ndim, shape);
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, ndim, shape));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    bp_share_save_fit(false);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    expect_fx("y_eval", y, f, "y_eval");
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    expect_fx("dx_eval", gx, f, "dx_eval");
    expect_fx("dscale_eval", bn->scale->grad, f, "dscale_eval");
    expect_fx("dbias_eval", bn->bias->grad, f, "dbias_eval");
    /* Eval left the running statistics exactly as assigned. */
    for (int64_t c = 0; c < C; c++) {
        assert_true(bp_tensor_get(bn->running_mean->value, c) == bp_tensor_get(trm, c));
        assert_true(bp_tensor_get(bn->running_var->value, c) == bp_tensor_get(trv, c));
    }
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_tensor_free(trm);
    bp_tensor_free(trv);
    bp_tensor_free(dy);
    bp_tensor_free(scale);
    bp_tensor_free(bias);
    bp_node_free(n);
    bp_share_clear();
    fx_free(f);
}

/* Each fixture through its own class on its natural shape, and as an (M, C)
 * matrix through BatchNorm3d (M, 1, 1, 1, C) and its own class (M, 1, .., C). */
static void layer_fixture(const char *file, int ndim)
{
    run_layer_fixture(file, ndim, true);
    run_layer_fixture(file, 5, false);
    if (ndim != 5) run_layer_fixture(file, ndim, false);
}

static void test_layer_torch_bn3d_c5(void **s) { (void)s; layer_fixture("batchnorm_bn3d_c5.txt", 5); }
static void test_layer_torch_bn3d_c19_n1(void **s) { (void)s; layer_fixture("batchnorm_bn3d_c19_n1.txt", 5); }
static void test_layer_torch_bn3d_c1(void **s) { (void)s; layer_fixture("batchnorm_bn3d_c1.txt", 5); }
static void test_layer_torch_bn2d_c19(void **s) { (void)s; layer_fixture("batchnorm_bn2d_c19.txt", 4); }
static void test_layer_torch_bn2d_c16(void **s) { (void)s; layer_fixture("batchnorm_bn2d_c16.txt", 4); }
static void test_layer_torch_bn1d_c5(void **s) { (void)s; layer_fixture("batchnorm_bn1d_c5.txt", 3); }
static void test_layer_torch_bn1d_c1(void **s) { (void)s; layer_fixture("batchnorm_bn1d_c1.txt", 3); }
static void test_layer_torch_bn1d_2d_c3(void **s) { (void)s; layer_fixture("batchnorm_bn1d_2d_c3.txt", 3); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults_and_vars, setup),
        cmocka_unit_test_setup(test_modes_affine_initializers, setup),
        cmocka_unit_test_setup(test_constructor_errors, setup),
        cmocka_unit_test_setup(test_fit_forward_hand_worked, setup),
        cmocka_unit_test_setup(test_eval_before_fit, setup),
        cmocka_unit_test_setup(test_fit_backward_hand_worked, setup),
        cmocka_unit_test_setup(test_eval_backward_frozen, setup),
        cmocka_unit_test_setup(test_update_errors, setup),
        cmocka_unit_test_setup(test_stable_statistics, setup),
        cmocka_unit_test_setup(test_custom_axis, setup),
        cmocka_unit_test_setup(test_fused_relu, setup),
        cmocka_unit_test_setup(test_callback_initializers, setup),
        cmocka_unit_test_setup(test_constructor_errors_more, setup),
        cmocka_unit_test_setup(test_state_dict, setup),
        cmocka_unit_test_setup(test_wrong_ndim_1d_2d, setup),
        cmocka_unit_test_setup(test_layer_torch_bn3d_c5, setup),
        cmocka_unit_test_setup(test_layer_torch_bn3d_c19_n1, setup),
        cmocka_unit_test_setup(test_layer_torch_bn3d_c1, setup),
        cmocka_unit_test_setup(test_layer_torch_bn2d_c19, setup),
        cmocka_unit_test_setup(test_layer_torch_bn2d_c16, setup),
        cmocka_unit_test_setup(test_layer_torch_bn1d_c5, setup),
        cmocka_unit_test_setup(test_layer_torch_bn1d_c1, setup),
        cmocka_unit_test_setup(test_layer_torch_bn1d_2d_c3, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
