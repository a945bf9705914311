/* tests/test_batchnorm.c — the BatchNorm1d/2d/3d layers: construction, vars,
 * modes, every error path, hand-worked forward/backward numbers, running
 * statistics, numerical stability. (Kernel-level PyTorch fixtures are in
 * test_batchnorm_kernels.c; float64 gradient checks in test_batchnorm_f64.c.) */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_share_clear();
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
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "expected 5D input (B,H,W,D,C) (got 4D input");
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
        BP_OK_OR_FAIL(bp_batchnorm_relu_update(b, x, &y2));
        bp_no_grad_end();
        for (int64_t i = 0; i < x->numel; i++) {
            double want = bp_tensor_get(y1, i) > 0 ? bp_tensor_get(y1, i) : 0;
            BP_ASSERT_CLOSE(bp_tensor_get(y2, i), want, 1e-6, 1e-6);
        }
        bp_tensor_free(y1);
        bp_tensor_free(y2);
    }
    BP_EXPECT_ERR(bp_batchnorm_relu_update(NULL, x, NULL), BP_EINVAL, "not a BatchNorm layer");
    bp_tensor_free(x);
    bp_node_free(a);
    bp_node_free(b);
}

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
