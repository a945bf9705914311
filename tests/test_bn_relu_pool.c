/* tests/test_bn_relu_pool.c — bp_batchnorm_relu_maxpool_update against the
 * two steps it fuses (bp_batchnorm_relu_update, then the MaxPool node):
 * output and running statistics bit for bit, dx, dscale and dbias to float32
 * rounding of differently ordered sums; gradients both accumulated into a
 * leaf's gradient and written into a fresh buffer; the cases it hands back
 * to the two steps (eval, overlapping or padded windows, an average pool);
 * its errors. The float64 gradient check is in test_layers_f64.c. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>
#include <bpc/ops.h>
#include <bpc/pool.h>

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_share_clear();
    return 0;
}

typedef struct side {
    bp_node *bn;
    bp_tensor *x, *gx, *y;
} side;

/* seed 0: x from {-1, 0, 1, 2}, so that windows hold ties above zero (the
 * first position must take the gradient); otherwise normal values. */
static void make_side(side *s, int64_t C, const int64_t *xs, uint64_t seed)
{
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&s->bn, C, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(s->bn);
    for (int64_t c = 0; c < C; c++) {
        bp_tensor_set(bn->scale->value, c, 0.5 + 0.1 * (double)(c % 7) - (c % 5 == 3 ? 1.2 : 0)); /* some negative */
        bp_tensor_set(bn->bias->value, c, 0.2 * (double)(c % 3) - 0.2);
    }
    BP_OK_OR_FAIL(bp_tensor_new(&s->x, BP_REAL_DTYPE, 5, xs));
    BP_OK_OR_FAIL(bp_tensor_new(&s->gx, BP_REAL_DTYPE, 5, xs));
    bp_rng r;
    bp_rng_seed(&r, seed);
    for (int64_t i = 0; i < s->x->numel; i++) {
        bp_tensor_set(s->x, i, seed ? bp_rng_normal(&r) * 2 + 0.5 : (double)((i * 7919) % 4) - 1);
        bp_tensor_set(s->gx, i, 0.01 * (double)(i % 3));
    }
    BP_OK_OR_FAIL(bp_ag_make_leaf(s->x, s->gx));
}

static void free_side(side *s)
{
    bp_tensor_free(s->y);
    bp_tensor_free(s->x);
    bp_tensor_free(s->gx);
    bp_node_free(s->bn);
}

static void expect_same(const char *what, const bp_tensor *a, const bp_tensor *b)
{
    assert_int_equal(a->numel, b->numel);
    for (int64_t i = 0; i < a->numel; i++)
        if (memcmp((const bp_real *)a->data + i, (const bp_real *)b->data + i, sizeof(bp_real)))
            fail_msg("%s[%lld]: %.9g vs %.9g", what, (long long)i, bp_tensor_get(a, i), bp_tensor_get(b, i));
}

/* |a - b| <= tol * max|b| over the tensor: sums of many terms in another order. */
static void expect_close(const char *what, const bp_tensor *a, const bp_tensor *b, double tol)
{
    assert_int_equal(a->numel, b->numel);
    double scale = 0;
    for (int64_t i = 0; i < b->numel; i++) scale = fmax(scale, fabs(bp_tensor_get(b, i)));
    for (int64_t i = 0; i < a->numel; i++)
        if (!(fabs(bp_tensor_get(a, i) - bp_tensor_get(b, i)) <= tol * scale))
            fail_msg("%s[%lld]: %.9g vs %.9g (max |value| %.3g)", what, (long long)i, bp_tensor_get(a, i),
                     bp_tensor_get(b, i), scale);
}

/* One comparison: fused on side f, two steps on side u, same pool node.
 * fresh: the BN input is 1*x (a fresh gradient buffer) instead of the leaf. */
static void compare(bp_node *pool, int64_t C, const int64_t *xs, bool fit, bool fresh, uint64_t seed)
{
    side f, u;
    make_side(&f, C, xs, seed);
    make_side(&u, C, xs, seed);
    bp_share_save_fit(fit);
    bp_tensor *fin = fresh ? NULL : bp_tensor_retain(f.x), *uin = fresh ? NULL : bp_tensor_retain(u.x), *h;
    if (fresh) {
        BP_OK_OR_FAIL(bp_mul_scalar(&fin, f.x, 1.0));
        BP_OK_OR_FAIL(bp_mul_scalar(&uin, u.x, 1.0));
    }
    BP_OK_OR_FAIL(bp_batchnorm_relu_maxpool_update(f.bn, pool, fin, &f.y));
    BP_OK_OR_FAIL(bp_batchnorm_relu_update(u.bn, uin, &h));
    BP_OK_OR_FAIL(bp_node_update(pool, h, &u.y));
    bp_tensor_free(h);
    expect_same("y", f.y, u.y);
    bp_batchnorm *bf = bp_batchnorm_cast(f.bn), *bu = bp_batchnorm_cast(u.bn);
    expect_same("running_mean", bf->running_mean->value, bu->running_mean->value);
    expect_same("running_var", bf->running_var->value, bu->running_var->value);
    bp_tensor *dy;
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, f.y->ndim, f.y->shape));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, 0.1 * (double)(i % 11) - 0.4);
    BP_OK_OR_FAIL(bp_backward_many(2, (bp_tensor *[]){f.y, u.y}, (const bp_tensor *[]){dy, dy}));
    expect_close("dx", f.gx, u.gx, 2e-5);
    expect_close("dscale", bf->scale->grad, bu->scale->grad, 2e-5);
    expect_close("dbias", bf->bias->grad, bu->bias->grad, 2e-5);
    bp_tensor_free(dy);
    bp_tensor_free(fin);
    bp_tensor_free(uin);
    free_side(&f);
    free_side(&u);
}

static bp_node *maxpool(int k0, int k1, int k2, int s0, int s1, int s2, int hi2)
{
    bp_node *p;
    BP_OK_OR_FAIL(bp_maxpool_new(&p, 3, &(bp_pool_opts){.kernel_size = {k0, k1, k2}, .stride = {s0, s1, s2},
                                                         .pad_hi = {0, 0, hi2}}));
    return p;
}

static void test_fused_matches_two_steps(void **state)
{
    (void)state;
    /* 19 channels: a full vector run and a 3-channel tail; odd sides leave inputs no window covers */
    const int64_t xa[5] = {2, 5, 6, 7, 19}, xb[5] = {3, 4, 4, 4, 1}, xc[5] = {2, 4, 6, 8, 32};
    bp_node *p2 = maxpool(2, 2, 2, 2, 2, 2, 0), *pgap = maxpool(2, 1, 2, 3, 2, 3, 1);
    for (int fresh = 0; fresh < 2; fresh++) {
        compare(p2, 19, xa, true, fresh, 17);
        compare(p2, 19, xa, true, fresh, 0); /* ties */
        compare(pgap, 19, xa, true, fresh, 17); /* gaps between windows, a clipped last window */
        compare(p2, 1, xb, true, fresh, 17);
        compare(p2, 32, xc, true, fresh, 17);
    }
    bp_node_free(p2);
    bp_node_free(pgap);
}

/* Eval mode, overlapping or low-padded windows and an average pool take the
 * two-step path: the same numbers as calling the two steps. */
static void test_falls_back_to_two_steps(void **state)
{
    (void)state;
    const int64_t xa[5] = {2, 5, 6, 7, 19};
    bp_node *p2 = maxpool(2, 2, 2, 2, 2, 2, 0), *overlap = maxpool(3, 2, 3, 2, 1, 2, 0), *lowpad, *avg;
    BP_OK_OR_FAIL(bp_maxpool_new(&lowpad, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}, .pad_lo = {1, 0, 0}}));
    BP_OK_OR_FAIL(bp_avgpool_new(&avg, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}}));
    compare(p2, 19, xa, false, false, 17);
    compare(overlap, 19, xa, true, false, 17);
    compare(lowpad, 19, xa, true, true, 17);
    compare(avg, 19, xa, true, false, 17);
    bp_node_free(p2);
    bp_node_free(overlap);
    bp_node_free(lowpad);
    bp_node_free(avg);
}

static void test_errors(void **state)
{
    (void)state;
    bp_node *bn, *pool = maxpool(2, 2, 2, 2, 2, 2, 0);
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&bn, 4, NULL));
    bp_share_save_fit(true);
    int64_t s4[4] = {2, 4, 4, 4}, s5[5] = {2, 4, 4, 4, 3}, one[5] = {1, 1, 1, 1, 4};
    bp_tensor *x4, *x5, *x1, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x4, BP_REAL_DTYPE, 4, s4));
    BP_OK_OR_FAIL(bp_tensor_new(&x5, BP_REAL_DTYPE, 5, s5));
    BP_OK_OR_FAIL(bp_tensor_new(&x1, BP_REAL_DTYPE, 5, one));
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(pool, pool, x5, &y), BP_EINVAL, "is not a BatchNorm layer");
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(bn, NULL, x5, &y), BP_EINVAL, "pool is NULL");
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(bn, pool, x4, &y), BP_ESHAPE, "expected 5D input");
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(bn, pool, x5, &y), BP_ESHAPE, "expected 4 channels");
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(bn, pool, NULL, &y), BP_EINVAL, "input is NULL");
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(bn, pool, x1, NULL), BP_EINVAL, "out is NULL");
    /* one value per channel while fitting: BatchNorm's own error, from the fused path's checks */
    BP_EXPECT_ERR(bp_batchnorm_relu_maxpool_update(bn, pool, x1, &y), BP_EINVAL, "more than 1 value per channel");
    assert_null(y);
    bp_tensor_free(x4);
    bp_tensor_free(x5);
    bp_tensor_free(x1);
    bp_node_free(bn);
    bp_node_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fused_matches_two_steps, setup),
        cmocka_unit_test_setup(test_falls_back_to_two_steps, setup),
        cmocka_unit_test_setup(test_errors, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
