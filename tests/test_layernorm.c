/* tests/test_layernorm.c — LayerNorm beyond its conformance rows (those, in
 * test_conformance.c, compare with PyTorch and finite differences): the
 * constructor's and update's errors, the variables BrainPy declares, a
 * hand-worked row, a constant row, and the reference kernels directly.
 * BPC_TEST_BOTH_FLAVOURS */
#include "bp_test.h"
#include <bpc/bpc.h>
#include "layernorm_internal.h"

#ifdef BP_REAL_DOUBLE
#define TOL 1e-12
#else
#define TOL 1e-6
#endif

static int setup(void **state)
{
    (void)state;
    bp_share_clear();
    return 0;
}

static void test_constructor_errors(void **state)
{
    (void)state;
    bp_node *n = (bp_node *)&n;
    int64_t ok[2] = {3, 4}, zero[2] = {3, 0};
    BP_EXPECT_ERR(bp_layernorm_new(NULL, 1, ok, NULL), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_layernorm_new(&n, 1, NULL, NULL), BP_EINVAL, "normalized_shape");
    assert_null(n);
    BP_EXPECT_ERR(bp_layernorm_new(&n, 0, ok, NULL), BP_EINVAL, "got 0");
    BP_EXPECT_ERR(bp_layernorm_new(&n, BP_MAX_DIMS + 1, ok, NULL), BP_EINVAL, "1 to 8 sizes");
    BP_EXPECT_ERR(bp_layernorm_new(&n, 2, zero, NULL), BP_EINVAL, "normalized_shape[1] must be >= 1, got 0");
    int64_t huge[2] = {INT64_MAX / 2, 3};
    BP_EXPECT_ERR(bp_layernorm_new(&n, 2, huge, NULL), BP_EINVAL, "overflows");
    bp_layernorm_opts o = bp_layernorm_defaults();
    o.epsilon = -1e-5;
    BP_EXPECT_ERR(bp_layernorm_new(&n, 2, ok, &o), BP_EINVAL, "epsilon must be finite and >= 0, got -1e-05");
    o.epsilon = NAN;
    BP_EXPECT_ERR(bp_layernorm_new(&n, 2, ok, &o), BP_EINVAL, "epsilon");
    o = bp_layernorm_defaults();
    o.name = "not an identifier";
    BP_EXPECT_ERR(bp_layernorm_new(&n, 2, ok, &o), BP_ENAME, NULL);
    /* An array initializer of another shape than normalized_shape. */
    int64_t five = 5;
    bp_tensor *a;
    BP_OK_OR_FAIL(bp_tensor_new(&a, BP_REAL_DTYPE, 1, &five));
    o = bp_layernorm_defaults();
    o.scale_initializer = bp_array_init(a);
    BP_EXPECT_ERR(bp_layernorm_new(&n, 2, ok, &o), BP_ESHAPE, "scale_initializer");
    assert_null(n);
    bp_tensor_free(a);
}

/* BrainPy's variables: bias then scale, of normalized_shape, ZeroInit and
 * OneInit; TrainVars in TrainingMode, plain Variables otherwise; none
 * without elementwise_affine. */
static void test_vars(void **state)
{
    (void)state;
    int64_t shape[2] = {3, 4};
    bp_mode train = bp_training_mode(2), batching = bp_batching_mode(2);
    bp_layernorm_opts o = bp_layernorm_defaults();
    o.mode = &train;
    bp_node *n;
    BP_OK_OR_FAIL(bp_layernorm_new(&n, 2, shape, &o));
    assert_string_equal(bp_node_class_name(n), "LayerNorm");
    bp_layernorm *ln = bp_layernorm_cast(n);
    assert_non_null(ln);
    assert_int_equal(ln->n_features, 12);
    bp_collect_opts rel = bp_collect_defaults();
    rel.method = BP_RELATIVE;
    bp_collector *vars;
    BP_OK_OR_FAIL(bp_node_vars(n, &rel, &vars));
    assert_int_equal(bp_collector_len(vars), 2);
    assert_string_equal(bp_collector_key(vars, 0), "bias");
    assert_string_equal(bp_collector_key(vars, 1), "scale");
    for (size_t i = 0; i < 2; i++) {
        bp_var *v = bp_collector_var(vars, i);
        assert_true(bp_var_is(v, BP_TRAINVAR));
        assert_true(bp_tensor_has_shape(v->value, 2, shape));
        for (int64_t j = 0; j < 12; j++) assert_true(bp_tensor_get(v->value, j) == (i == 0 ? 0.0 : 1.0));
    }
    bp_collector_free(vars);
    bp_node_free(n);

    o.mode = &batching;
    BP_OK_OR_FAIL(bp_layernorm_new(&n, 2, shape, &o));
    ln = bp_layernorm_cast(n);
    assert_false(bp_var_is(ln->scale, BP_TRAINVAR));
    assert_false(bp_var_is(ln->bias, BP_TRAINVAR));
    bp_node_free(n);

    o.elementwise_affine = false;
    BP_OK_OR_FAIL(bp_layernorm_new(&n, 2, shape, &o));
    ln = bp_layernorm_cast(n);
    assert_null(ln->scale);
    assert_null(ln->bias);
    BP_OK_OR_FAIL(bp_node_vars(n, &rel, &vars));
    assert_int_equal(bp_collector_len(vars), 0);
    bp_collector_free(vars);
    assert_null(bp_layernorm_cast(NULL));
    bp_node_free(n);
    bp_node *relu;
    BP_OK_OR_FAIL(bp_activation_new(&relu, &bp_relu_class, 0, NULL, NULL));
    assert_null(bp_layernorm_cast(relu));
    bp_node_free(relu);
}

static void test_input_errors(void **state)
{
    (void)state;
    int64_t norm[2] = {3, 4};
    bp_node *n;
    BP_OK_OR_FAIL(bp_layernorm_new(&n, 2, norm, NULL));
    const char *name = bp_node_name(n);
    bp_tensor *y = (bp_tensor *)&y, *x;
    BP_EXPECT_ERR(bp_node_update(n, NULL, &y), BP_EINVAL, "input is NULL");
    assert_null(y);
    int64_t s1[3] = {2, 5, 4}; /* last dim fits, the one before does not */
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, s1));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "expected input of shape (..., 3,4) (normalized_shape), got (2,5,4)");
    assert_non_null(strstr(bp_last_error(), name));
    bp_tensor_free(x);
    int64_t s2[2] = {3, 5};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 2, s2));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "(..., 4)");
    bp_tensor_free(x);
    int64_t s3[1] = {4};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 1, s3));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "expected at least 2D input (got 1D input)");
    bp_tensor_free(x);
    int64_t s4[2] = {3, 4};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_INT32, 2, s4));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_EDTYPE, "int32");
    bp_tensor_free(x);
    BP_EXPECT_ERR(bp_node_update(n, NULL, NULL), BP_EINVAL, "out is NULL");
    bp_node_free(n);
}

/* x = (1, 2, 3, 4): mean 2.5, biased var 1.25, so with eps 0
 * y = (x - 2.5) / sqrt(1.25) * scale + bias, worked out by hand. */
static void test_hand_worked(void **state)
{
    (void)state;
    int64_t four = 4;
    bp_layernorm_opts o = bp_layernorm_defaults();
    o.epsilon = 0;
    bp_node *n;
    BP_OK_OR_FAIL(bp_layernorm_new(&n, 1, &four, &o));
    bp_layernorm *ln = bp_layernorm_cast(n);
    const bp_real sc[4] = {1, 2, 0.5, -1}, bi[4] = {0, 1, -1, 0.25};
    for (int j = 0; j < 4; j++) {
        bp_tensor_set(ln->scale->value, j, sc[j]);
        bp_tensor_set(ln->bias->value, j, bi[j]);
    }
    const bp_real xs[4] = {1, 2, 3, 4};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_from_reals(&x, 1, &four, xs));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    const double inv = 1 / sqrt(1.25);
    for (int j = 0; j < 4; j++) BP_ASSERT_CLOSE(bp_tensor_get(y, j), (xs[j] - 2.5) * inv * sc[j] + bi[j], TOL, TOL);
    bp_tensor_free(y);
    /* A constant row with eps 0 outputs bias, not NaN. */
    bp_tensor_fill(x, 7.0);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    for (int j = 0; j < 4; j++) assert_true(bp_tensor_get(y, j) == bi[j]);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(n);
}

/* The kernels on their own: backward writes (=) over whatever the buffers
 * held, and with scale 1 and eps 0 a row's dx sums to 0 and is orthogonal to xhat
 * (the two directions the normalisation removes). */
static void test_kernels(void **state)
{
    (void)state;
    enum { M = 3, N = 5 };
    bp_real x[M * N], y[M * N], dy[M * N], dx[M * N], mean[M], rstd[M], ds[N], db[N];
    bp_rng r;
    bp_rng_seed(&r, 9);
    for (int i = 0; i < M * N; i++) {
        x[i] = (bp_real)(bp_rng_normal(&r) * 2 + 1);
        dy[i] = (bp_real)bp_rng_normal(&r);
        dx[i] = (bp_real)1e30; /* garbage the backward must overwrite */
    }
    for (int j = 0; j < N; j++) ds[j] = db[j] = (bp_real)1e30;
    bp__layernorm_forward_ref(y, mean, rstd, x, NULL, NULL, M, N, 0.0);
    bp__layernorm_backward_ref(dx, ds, db, dy, x, mean, rstd, NULL, M, N);
    for (int m = 0; m < M; m++) {
        double s = 0, sx = 0, ym = 0;
        for (int j = 0; j < N; j++) {
            s += dx[m * N + j];
            sx += dx[m * N + j] * y[m * N + j];
            ym += y[m * N + j];
        }
        BP_ASSERT_CLOSE(s, 0, 1e-5, 0);
        BP_ASSERT_CLOSE(sx, 0, 1e-5, 0);
        BP_ASSERT_CLOSE(ym, 0, 1e-5, 0);
    }
    for (int j = 0; j < N; j++) {
        double es = 0, eb = 0;
        for (int m = 0; m < M; m++) {
            es += (double)dy[m * N + j] * y[m * N + j];
            eb += dy[m * N + j];
        }
        BP_ASSERT_CLOSE(ds[j], es, TOL, TOL);
        BP_ASSERT_CLOSE(db[j], eb, TOL, TOL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constructor_errors),
        cmocka_unit_test(test_vars),
        cmocka_unit_test(test_input_errors),
        cmocka_unit_test(test_hand_worked),
        cmocka_unit_test(test_kernels),
    };
    return bp_run_tests(tests, setup, NULL);
}
