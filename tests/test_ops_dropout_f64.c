/* tests/test_ops_dropout_f64.c — inverted dropout: the mask follows the seeded
 * rng exactly, kept elements are scaled by 1/(1-p), eval is the identity, and
 * the gradient (the same mask) passes gradcheck. PyTorch's RNG differs from
 * bp_rng, so the reference here is the rule itself, drawn with the same seed. */
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

static bp_tensor *ramp(int64_t n)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, &n));
    for (int64_t i = 0; i < n; i++) bp_tensor_set(t, i, 1.0 + 0.01 * (double)i);
    return t;
}

static void test_mask_follows_rng(void **state)
{
    (void)state;
    const int64_t n = 10000;
    const double p = 0.3;
    bp_tensor *x = ramp(n), *y;
    bp_rng r, ref;
    bp_rng_seed(&r, 7);
    bp_rng_seed(&ref, 7);
    BP_OK_OR_FAIL(bp_dropout(&y, x, p, true, &r));
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        bool keep = bp_rng_uniform(&ref) >= p;
        double want = keep ? bp_tensor_get(x, i) / (1 - p) : 0.0;
        BP_ASSERT_CLOSE(bp_tensor_get(y, i), want, 1e-12, 1e-12);
        kept += keep;
    }
    /* Binomial(10000, 0.7): sd 46, so 5 sd is 230. */
    assert_true(llabs(kept - 7000) < 230);
    /* The generator advanced by exactly n draws. */
    assert_true(bp_rng_next(&r) == bp_rng_next(&ref));
    bp_tensor_free(y);
    bp_tensor_free(x);
}

static void test_eval_and_edges(void **state)
{
    (void)state;
    bp_tensor *x = ramp(5), *y;
    bp_rng r;
    bp_rng_seed(&r, 1);
    BP_OK_OR_FAIL(bp_dropout(&y, x, 0.5, false, NULL)); /* eval: identity, no rng needed */
    assert_ptr_equal(y, x);
    bp_tensor_free(y);
    BP_OK_OR_FAIL(bp_dropout(&y, x, 0.0, true, NULL));
    assert_ptr_equal(y, x);
    bp_tensor_free(y);
    BP_OK_OR_FAIL(bp_dropout(&y, x, 1.0, true, &r));
    for (int i = 0; i < 5; i++) BP_ASSERT_CLOSE(bp_tensor_get(y, i), 0, 0, 0);
    bp_tensor_free(y);
    BP_EXPECT_ERR(bp_dropout(&y, x, 1.5, true, &r), BP_EINVAL, "p must be in [0, 1], got 1.5");
    BP_EXPECT_ERR(bp_dropout(&y, x, NAN, true, &r), BP_EINVAL, "p must be in [0, 1]");
    BP_EXPECT_ERR(bp_dropout(&y, x, 0.5, true, NULL), BP_EINVAL, "rng is NULL");
    BP_EXPECT_ERR(bp_dropout(&y, NULL, 0.5, true, &r), BP_EINVAL, "x is NULL");
    bp_tensor_free(x);
}

/* The gradient is the mask: dx = dy * mask. */
static void test_backward_is_mask(void **state)
{
    (void)state;
    bp_tensor *x = ramp(50), *g, *y, *l;
    BP_OK_OR_FAIL(bp_tensor_new(&g, BP_REAL_DTYPE, 1, (int64_t[]){50}));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, g));
    bp_rng r;
    bp_rng_seed(&r, 3);
    BP_OK_OR_FAIL(bp_dropout(&y, x, 0.5, true, &r));
    BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    for (int i = 0; i < 50; i++) {
        double yi = bp_tensor_get(y, i);
        BP_ASSERT_CLOSE(bp_tensor_get(g, i), yi != 0 ? 2.0 : 0.0, 1e-15, 0);
    }
    bp_tensor_free(l);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* gradcheck: reseed inside f so every evaluation draws the same mask. */
static bp_status dropout_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    (void)n_in;
    bp_rng r;
    bp_rng_seed(&r, 11);
    bp_tensor *d = NULL;
    BP_TRY(bp_dropout(&d, in[0], 0.4, true, &r));
    bp_status st = bp_mul(out, d, in[0]); /* a non-linear use of x beside the mask */
    bp_tensor_free(d);
    return st;
}

static void test_gradcheck(void **state)
{
    (void)state;
    bp_tensor *x = ramp(20);
    bp_gradcheck_report rep;
    BP_OK_OR_FAIL(bp_gradcheck(dropout_fn, NULL, 1, &x, NULL, &rep));
    assert_true(rep.passed);
    assert_int_equal(rep.n_checked, 20);
    assert_true(rep.max_abs_err < 1e-7);
    bp_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_mask_follows_rng, teardown),
        cmocka_unit_test_teardown(test_eval_and_edges, teardown),
        cmocka_unit_test_teardown(test_backward_is_mask, teardown),
        cmocka_unit_test_teardown(test_gradcheck, teardown),
    };
    return cmocka_run_group_tests_name("dropout (float64)", tests, NULL, NULL);
}
