/* tests/test_ops_errors.c — every op's error paths: mismatched shapes (the
 * message names both shapes), wrong dtypes, NULL arguments, bad parameters;
 * and the shape rules that succeed (broadcast, views, keepdim). */
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include "bp_test.h"

static bp_tensor *zeros(int ndim, const int64_t *shape)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    return t;
}

static int teardown(void **state)
{
    (void)state;
    bp_ag_release_graph();
    bp_ag_pool_trim();
    return 0;
}

typedef bp_status (*binop)(bp_tensor **, bp_tensor *, bp_tensor *);

static void test_binary_shapes(void **state)
{
    (void)state;
    const binop ops[] = {bp_add, bp_sub, bp_mul, bp_div};
    const char *names[] = {"add:", "sub:", "mul:", "div:"};
    bp_tensor *a = zeros(2, (int64_t[]){2, 3}), *b = zeros(1, (int64_t[]){2});
    bp_tensor *c = zeros(2, (int64_t[]){3, 3}), *ok = zeros(1, (int64_t[]){3});
    bp_tensor *i32;
    BP_OK_OR_FAIL(bp_tensor_new(&i32, BP_INT32, 2, (int64_t[]){2, 3}));
    for (int k = 0; k < 4; k++) {
        bp_tensor *o = (bp_tensor *)1;
        BP_EXPECT_ERR(ops[k](&o, a, b), BP_ESHAPE, "(2,3) and (2,)");
        assert_null(o);
        BP_EXPECT_ERR(ops[k](&o, a, b), BP_ESHAPE, names[k]);
        BP_EXPECT_ERR(ops[k](&o, b, a), BP_ESHAPE, "(2,) and (2,3)");
        BP_EXPECT_ERR(ops[k](&o, a, c), BP_ESHAPE, "(2,3) and (3,3)");
        BP_EXPECT_ERR(ops[k](&o, a, i32), BP_EDTYPE, "int32");
        BP_EXPECT_ERR(ops[k](&o, NULL, a), BP_EINVAL, "a is NULL");
        BP_EXPECT_ERR(ops[k](NULL, a, a), BP_EINVAL, "out is NULL");
        /* The trailing-suffix rule, both ways round. */
        BP_OK_OR_FAIL(ops[k](&o, a, ok));
        assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){2, 3}));
        bp_tensor_free(o);
        BP_OK_OR_FAIL(ops[k](&o, ok, a));
        assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){2, 3}));
        bp_tensor_free(o);
    }
    bp_tensor *o;
    BP_EXPECT_ERR(bp_add_scalar(&o, i32, 1), BP_EDTYPE, "add_scalar: a must be");
    BP_EXPECT_ERR(bp_mul_scalar(&o, NULL, 1), BP_EINVAL, "mul_scalar: a is NULL");
    BP_EXPECT_ERR(bp_pow_scalar(NULL, a, 2), BP_EINVAL, "pow_scalar: out is NULL");
    bp_tensor_free(a);
    bp_tensor_free(b);
    bp_tensor_free(c);
    bp_tensor_free(ok);
    bp_tensor_free(i32);
}

static void test_matmul_shapes(void **state)
{
    (void)state;
    bp_tensor *a = zeros(2, (int64_t[]){2, 3}), *b = zeros(2, (int64_t[]){4, 5}), *b3 = zeros(3, (int64_t[]){3, 5, 1});
    bp_tensor *s = zeros(0, NULL), *o;
    BP_EXPECT_ERR(bp_matmul(&o, a, b), BP_ESHAPE, "matmul: expected a (..., K) and b (K, N), got (2,3) and (4,5)");
    BP_EXPECT_ERR(bp_matmul(&o, a, b3), BP_ESHAPE, "(2,3) and (3,5,1)");
    BP_EXPECT_ERR(bp_matmul(&o, s, b), BP_ESHAPE, "() and (4,5)");
    BP_EXPECT_ERR(bp_matmul(&o, a, NULL), BP_EINVAL, "b is NULL");
    /* Empty K gives zeros, empty M an empty result. */
    bp_tensor *e = zeros(2, (int64_t[]){2, 0}), *f = zeros(2, (int64_t[]){0, 3});
    BP_OK_OR_FAIL(bp_matmul(&o, e, f));
    assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){2, 3}));
    for (int i = 0; i < 6; i++) BP_ASSERT_CLOSE(bp_tensor_get(o, i), 0, 0, 0);
    bp_tensor_free(o);
    bp_tensor *g = zeros(2, (int64_t[]){0, 2});
    BP_OK_OR_FAIL(bp_matmul(&o, g, a));
    assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){0, 3}));
    bp_tensor_free(o);
    bp_tensor_free(g);
    bp_tensor_free(e);
    bp_tensor_free(f);
    bp_tensor_free(a);
    bp_tensor_free(b);
    bp_tensor_free(b3);
    bp_tensor_free(s);
}

static void test_reduce_args(void **state)
{
    (void)state;
    bp_tensor *a = zeros(3, (int64_t[]){2, 3, 4}), *o;
    BP_EXPECT_ERR(bp_sum(&o, a, 1, (int[]){3}, false), BP_EINVAL, "sum: axis 3 out of range for shape (2,3,4)");
    BP_EXPECT_ERR(bp_mean(&o, a, 1, (int[]){-4}, false), BP_EINVAL, "mean: axis -4 out of range");
    BP_EXPECT_ERR(bp_sum(&o, a, 2, (int[]){1, -2}, false), BP_EINVAL, "given twice");
    BP_EXPECT_ERR(bp_sum(&o, a, 1, NULL, false), BP_EINVAL, "n_axes");
    BP_EXPECT_ERR(bp_sum(&o, a, -1, NULL, false), BP_EINVAL, "n_axes");
    BP_OK_OR_FAIL(bp_sum(&o, a, 0, NULL, true));
    assert_true(bp_tensor_has_shape(o, 3, (int64_t[]){1, 1, 1}));
    bp_tensor_free(o);
    /* mean over nothing is nan, as torch.mean */
    bp_tensor *e = zeros(2, (int64_t[]){0, 3});
    BP_OK_OR_FAIL(bp_mean(&o, e, 1, (int[]){0}, false));
    assert_true(bp_tensor_has_shape(o, 1, (int64_t[]){3}));
    assert_true(isnan(bp_tensor_get(o, 0)));
    bp_tensor_free(o);
    bp_tensor_free(e);
    bp_tensor_free(a);
}

static void test_shape_ops(void **state)
{
    (void)state;
    bp_tensor *a = zeros(3, (int64_t[]){2, 3, 4}), *o;
    for (int i = 0; i < 24; i++) bp_tensor_set(a, i, i);
    BP_EXPECT_ERR(bp_reshape(&o, a, 2, (int64_t[]){5, 5}), BP_ESHAPE, "reshape: cannot view (2,3,4) as (5,5)");
    BP_EXPECT_ERR(bp_reshape(&o, a, 2, (int64_t[]){-1, 5}), BP_ESHAPE, "(2,3,4) as (-1,5)");
    BP_EXPECT_ERR(bp_reshape(&o, a, 2, (int64_t[]){-1, -1}), BP_ESHAPE, "one -1 at most");
    BP_EXPECT_ERR(bp_reshape(&o, a, 9, (int64_t[]){1}), BP_EINVAL, "ndim");
    BP_OK_OR_FAIL(bp_reshape(&o, a, 2, (int64_t[]){-1, 6}));
    assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){4, 6}));
    assert_ptr_equal(o->data, a->data); /* a view */
    bp_tensor_free(o);
    BP_EXPECT_ERR(bp_flatten(&o, a, 2, 1), BP_EINVAL, "start_dim 2 and end_dim 1 do not fit shape (2,3,4)");
    BP_EXPECT_ERR(bp_flatten(&o, a, 0, 3), BP_EINVAL, "(2,3,4)");
    BP_OK_OR_FAIL(bp_flatten(&o, a, 1, -1));
    assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){2, 12}));
    BP_ASSERT_CLOSE(bp_tensor_get(o, 13), 13, 0, 0);
    bp_tensor_free(o);
    BP_OK_OR_FAIL(bp_flatten(&o, a, 0, 1));
    assert_true(bp_tensor_has_shape(o, 2, (int64_t[]){6, 4}));
    bp_tensor_free(o);
    bp_tensor *s = zeros(0, NULL);
    BP_OK_OR_FAIL(bp_flatten(&o, s, 0, -1));
    assert_true(bp_tensor_has_shape(o, 1, (int64_t[]){1}));
    bp_tensor_free(o);
    bp_tensor_free(s);
    bp_tensor_free(a);
}

static void test_activation_and_loss_args(void **state)
{
    (void)state;
    bp_tensor *s = zeros(0, NULL), *o;
    BP_EXPECT_ERR(bp_softmax(&o, s), BP_ESHAPE, "softmax: expected at least 1 dim");
    BP_EXPECT_ERR(bp_log_softmax(&o, s), BP_ESHAPE, "log_softmax: expected at least 1 dim");
    BP_EXPECT_ERR(bp_relu(&o, NULL), BP_EINVAL, "relu: a is NULL");
    BP_EXPECT_ERR(bp_gelu(NULL, s), BP_EINVAL, "gelu: out is NULL");

    bp_tensor *lg = zeros(2, (int64_t[]){4, 5}), *lb, *lb_bad, *lf = zeros(1, (int64_t[]){4});
    BP_OK_OR_FAIL(bp_tensor_new(&lb, BP_INT64, 1, (int64_t[]){4}));
    BP_OK_OR_FAIL(bp_tensor_new(&lb_bad, BP_INT32, 1, (int64_t[]){3}));
    BP_EXPECT_ERR(bp_softmax_cross_entropy(&o, lg, lb_bad), BP_ESHAPE, "(4,5) and (3,)");
    BP_EXPECT_ERR(bp_softmax_cross_entropy(&o, lg, lf), BP_EDTYPE, "labels must be int32 or int64");
    BP_EXPECT_ERR(bp_softmax_cross_entropy(&o, lg, NULL), BP_EINVAL, "labels is NULL");
    bp_tensor_set(lb, 2, 5);
    BP_EXPECT_ERR(bp_softmax_cross_entropy(&o, lg, lb), BP_EINVAL, "label 5 at row 2 is outside [0, 5)");
    bp_tensor_set(lb, 2, -1);
    BP_EXPECT_ERR(bp_softmax_cross_entropy(&o, lg, lb), BP_EINVAL, "label -1 at row 2");
    bp_tensor_set(lb, 2, 1);
    /* All-zero logits: loss log(5) whatever the labels. */
    BP_OK_OR_FAIL(bp_softmax_cross_entropy(&o, lg, lb));
    assert_int_equal(o->ndim, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(o, 0), log(5.0), 1e-6, 0);
    bp_tensor_free(o);
    bp_tensor *e = zeros(2, (int64_t[]){0, 5}), *el;
    BP_OK_OR_FAIL(bp_tensor_new(&el, BP_INT32, 1, (int64_t[]){0}));
    BP_EXPECT_ERR(bp_softmax_cross_entropy(&o, e, el), BP_ESHAPE, "at least one row");

    bp_tensor *p = zeros(2, (int64_t[]){2, 3}), *t = zeros(2, (int64_t[]){3, 2});
    BP_EXPECT_ERR(bp_mse(&o, p, t), BP_ESHAPE, "mse: pred and target shapes differ: (2,3) and (3,2)");
    BP_EXPECT_ERR(bp_mse(&o, p, NULL), BP_EINVAL, "target is NULL");
    bp_tensor_free(p);
    bp_tensor_free(t);
    bp_tensor_free(e);
    bp_tensor_free(el);
    bp_tensor_free(lg);
    bp_tensor_free(lb);
    bp_tensor_free(lb_bad);
    bp_tensor_free(lf);
    bp_tensor_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_binary_shapes, teardown),
        cmocka_unit_test_teardown(test_matmul_shapes, teardown),
        cmocka_unit_test_teardown(test_reduce_args, teardown),
        cmocka_unit_test_teardown(test_shape_ops, teardown),
        cmocka_unit_test_teardown(test_activation_and_loss_args, teardown),
    };
    return cmocka_run_group_tests_name("op errors and shape rules", tests, NULL, NULL);
}
