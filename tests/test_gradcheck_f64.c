/* tests/test_gradcheck_f64.c — the checker itself: it passes right gradients,
 * catches a wrong one and says where, honours skip_mask, passes int inputs
 * through, restores its inputs, and rejects bad calls. */
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include <bpc/gradcheck.h>
#include "bp_test.h"

static int teardown(void **state)
{
    (void)state;
    bp_ag_release_graph();
    bp_ag_pool_trim();
    return 0;
}

static bp_tensor *vals(int64_t n, double start, double step)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, &n));
    for (int64_t i = 0; i < n; i++) bp_tensor_set(t, i, start + step * (double)i);
    return t;
}

/* square(x) whose backward is wrong at element 2 only (2x + 0.5 there). */
static bp_status bad_backward(const bp_ag_backward_args *a)
{
    const bp_real *x = a->in[0]->data, *dy = a->dout->data;
    bp_real *dx = a->din[0]->data;
    for (int64_t i = 0; i < a->dout->numel; i++) dx[i] += dy[i] * (2 * x[i] + (i == 2 ? 0.5 : 0));
    return BP_OK;
}
static const bp_ag_op bad_op = {.name = "bad_square", .backward = bad_backward};

static bp_status bad_square(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    BP_TRY(bp_ag_empty(out, in[0]->ndim, in[0]->shape));
    for (int64_t i = 0; i < in[0]->numel; i++)
        ((bp_real *)(*out)->data)[i] = ((bp_real *)in[0]->data)[i] * ((bp_real *)in[0]->data)[i];
    return bp_ag_record(*out, &bad_op, 1, in, NULL, 0);
}

static void test_catches_wrong_gradient(void **state)
{
    (void)state;
    bp_tensor *x = vals(4, 0.5, 0.25);
    bp_gradcheck_report rep;
    BP_EXPECT_ERR(bp_gradcheck(bad_square, NULL, 1, &x, NULL, &rep), BP_ENUMERIC, "input 0 element 2");
    assert_false(rep.passed);
    assert_int_equal(rep.fail_input, 0);
    assert_int_equal(rep.fail_index, 2);
    assert_int_equal(rep.abs_index, 2);
    assert_int_equal(rep.rel_index, 2);
    assert_int_equal(rep.n_checked, 4);
    /* The error at element 2 is 0.5 times its projection weight, |w| in [0.5, 1.5). */
    assert_true(rep.max_abs_err >= 0.25 && rep.max_abs_err < 0.75);
    BP_ASSERT_CLOSE(rep.fail_analytic - rep.fail_numeric, rep.max_abs_err * (rep.fail_analytic > rep.fail_numeric ? 1 : -1), 1e-9, 0);
    /* x is untouched and still a constant. */
    assert_false(x->requires_grad);
    assert_null(x->grad);
    for (int i = 0; i < 4; i++) BP_ASSERT_CLOSE(bp_tensor_get(x, i), 0.5 + 0.25 * i, 0, 0);
    bp_tensor_free(x);
}

/* f(a, b, labels) = cross_entropy(a * b, labels) + 0: b skipped, labels passed through. */
static bp_status ce_of_product(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    bp_tensor *p = NULL;
    BP_TRY(bp_mul(&p, in[0], in[1]));
    bp_status st = bp_softmax_cross_entropy(out, p, in[2]);
    bp_tensor_free(p);
    return st;
}

static void test_skip_and_int_inputs(void **state)
{
    (void)state;
    bp_tensor *a = NULL, *b = vals(3, -1, 0.7), *lab = NULL, *ga = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&a, BP_REAL_DTYPE, 2, (int64_t[]){2, 3}));
    for (int i = 0; i < 6; i++) bp_tensor_set(a, i, sin(i + 1.0));
    BP_OK_OR_FAIL(bp_tensor_new(&ga, BP_REAL_DTYPE, 2, (int64_t[]){2, 3}));
    BP_OK_OR_FAIL(bp_ag_make_leaf(a, ga)); /* a leaf already: gradcheck borrows and restores */
    BP_OK_OR_FAIL(bp_tensor_new(&lab, BP_INT32, 1, (int64_t[]){2}));
    bp_tensor_set(lab, 0, 2);
    bp_tensor_set(lab, 1, 0);
    bp_gradcheck_opts o = bp_gradcheck_defaults();
    BP_ASSERT_CLOSE(o.eps, 1e-6, 0, 0);
    o.skip_mask = 1u << 1;
    bp_gradcheck_report rep;
    BP_OK_OR_FAIL(bp_gradcheck(ce_of_product, NULL, 3, (bp_tensor *[]){a, b, lab}, &o, &rep));
    assert_int_equal(rep.n_checked, 6); /* a only */
    assert_true(rep.passed);
    assert_int_equal(rep.fail_input, -1);
    assert_true(rep.max_rel_err < 1e-6);
    assert_true(a->requires_grad);
    assert_ptr_equal(a->grad, ga);
    for (int i = 0; i < 6; i++) BP_ASSERT_CLOSE(bp_tensor_get(ga, i), 0, 0, 0); /* its own grad untouched */
    /* Without the skip, b is checked too. */
    BP_OK_OR_FAIL(bp_gradcheck(ce_of_product, NULL, 3, (bp_tensor *[]){a, b, lab}, NULL, &rep));
    assert_int_equal(rep.n_checked, 9);
    bp_tensor_free(a);
    bp_tensor_free(b);
    bp_tensor_free(lab);
    bp_tensor_free(ga);
}

static bp_status relu_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    return bp_relu(out, in[0]);
}

static int g_calls;
static bp_status growing_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    int64_t n = in[0]->numel + (g_calls++ > 0);
    BP_TRY(bp_ag_zeros(out, 1, &n));
    return BP_OK;
}

static bp_status failing_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    (void)in;
    (void)out;
    return bp_fail(BP_EMODE, "failing_fn: as designed");
}

static void test_bad_calls(void **state)
{
    (void)state;
    bp_tensor *x = vals(3, 0.5, 1), *y = NULL, *g = vals(3, 0, 0);
    BP_EXPECT_ERR(bp_gradcheck(NULL, NULL, 1, &x, NULL, NULL), BP_EINVAL, "f is NULL");
    BP_EXPECT_ERR(bp_gradcheck(relu_fn, NULL, 0, &x, NULL, NULL), BP_EINVAL, "n_in must be in [1, 8]");
    BP_EXPECT_ERR(bp_gradcheck(relu_fn, NULL, 1, (bp_tensor *[]){NULL}, NULL, NULL), BP_EINVAL, "input 0 is NULL");
    bp_gradcheck_opts o = bp_gradcheck_defaults();
    o.eps = 0;
    BP_EXPECT_ERR(bp_gradcheck(relu_fn, NULL, 1, &x, &o, NULL), BP_EINVAL, "eps must be > 0");
    bp_no_grad_begin();
    BP_EXPECT_ERR(bp_gradcheck(relu_fn, NULL, 1, &x, NULL, NULL), BP_ESTATE, "no-grad scope");
    bp_no_grad_end();
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, g));
    BP_OK_OR_FAIL(bp_relu(&y, x));
    BP_EXPECT_ERR(bp_gradcheck(relu_fn, NULL, 1, &y, NULL, NULL), BP_EINVAL, "input 0 is an op output");
    bp_ag_release_graph();
    g_calls = 0;
    BP_EXPECT_ERR(bp_gradcheck(growing_fn, NULL, 1, &x, NULL, NULL), BP_EINVAL, "different output shape");
    BP_EXPECT_ERR(bp_gradcheck(failing_fn, NULL, 1, &x, NULL, NULL), BP_EMODE, "as designed");
    /* Inputs restored after every failure. */
    assert_true(x->requires_grad);
    assert_ptr_equal(x->grad, g);
    /* And the ordinary case: relu away from 0 passes. */
    BP_OK_OR_FAIL(bp_gradcheck(relu_fn, NULL, 1, &x, NULL, NULL));
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* A whole small network: CE(tanh(x W1 + b1) W2 + b2) + 0.1 mse(x W1, t),
 * every parameter and the input checked at once. */
static bp_status mlp(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    bp_tensor *x = in[0], *w1 = in[1], *b1 = in[2], *w2 = in[3], *b2 = in[4], *lab = in[5], *t = in[6];
    bp_tensor *h = NULL, *hb = NULL, *a = NULL, *o = NULL, *ob = NULL, *ce = NULL, *m = NULL, *ms = NULL;
    bp_status st = bp_matmul(&h, x, w1);
    if (!st) st = bp_add(&hb, h, b1);
    if (!st) st = bp_tanh(&a, hb);
    if (!st) st = bp_matmul(&o, a, w2);
    if (!st) st = bp_add(&ob, o, b2);
    if (!st) st = bp_softmax_cross_entropy(&ce, ob, lab);
    if (!st) st = bp_mse(&m, h, t);
    if (!st) st = bp_mul_scalar(&ms, m, 0.1);
    if (!st) st = bp_add(out, ce, ms);
    bp_tensor *all[] = {h, hb, a, o, ob, ce, m, ms};
    for (int i = 0; i < 8; i++) bp_tensor_free(all[i]);
    return st;
}

static bp_tensor *filled(int ndim, const int64_t *shape, double seed)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, sin(seed + 1.7 * (double)i));
    return t;
}

static void test_small_network(void **state)
{
    (void)state;
    bp_tensor *x = filled(2, (int64_t[]){3, 4}, 0.1), *w1 = filled(2, (int64_t[]){4, 5}, 0.2);
    bp_tensor *b1 = filled(1, (int64_t[]){5}, 0.3), *w2 = filled(2, (int64_t[]){5, 3}, 0.4);
    bp_tensor *b2 = filled(1, (int64_t[]){3}, 0.5), *t = filled(2, (int64_t[]){3, 5}, 0.6), *lab = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&lab, BP_INT64, 1, (int64_t[]){3}));
    bp_tensor_set(lab, 0, 2);
    bp_tensor_set(lab, 1, 0);
    bp_tensor_set(lab, 2, 1);
    bp_gradcheck_report rep;
    BP_OK_OR_FAIL(bp_gradcheck(mlp, NULL, 7, (bp_tensor *[]){x, w1, b1, w2, b2, lab, t}, NULL, &rep));
    assert_int_equal(rep.n_checked, 12 + 20 + 5 + 15 + 3 + 15);
    assert_true(rep.max_abs_err < 1e-8);
    bp_tensor *all[] = {x, w1, b1, w2, b2, t, lab};
    for (int i = 0; i < 7; i++) bp_tensor_free(all[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_catches_wrong_gradient, teardown),
        cmocka_unit_test_teardown(test_skip_and_int_inputs, teardown),
        cmocka_unit_test_teardown(test_bad_calls, teardown),
        cmocka_unit_test_teardown(test_small_network, teardown),
    };
    return cmocka_run_group_tests_name("gradcheck (float64)", tests, NULL, NULL);
}
