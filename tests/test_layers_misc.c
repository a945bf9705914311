/* tests/test_layers_misc.c — construction, names, vars, modes and every error
 * path of Conv, pooling, Dense, Flatten, Dropout, activations and Sequential;
 * small hand-worked forward values. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/conv.h>
#include <bpc/pool.h>
#include <bpc/dense.h>
#include <bpc/ops.h>

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_share_clear();
    bp_set_mode(bp_nonbatching_mode());
    return 0;
}

static void test_conv_vars_and_errors(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(1);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 3;
    bp_node *n = NULL;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 16, 32, &o));
    assert_string_equal(bp_node_name(n), "Conv3d0");
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &v));
    assert_int_equal(bp_collector_len(v), 2);
    assert_string_equal(bp_collector_key(v, 0), "Conv3d0.w");
    assert_string_equal(bp_collector_key(v, 1), "Conv3d0.b");
    bp_tensor *w = bp_collector_var(v, 0)->value, *b = bp_collector_var(v, 1)->value;
    int64_t ws[5] = {3, 3, 3, 16, 32}, bs[4] = {1, 1, 1, 32};
    assert_true(bp_tensor_has_shape(w, 5, ws));
    assert_true(bp_tensor_has_shape(b, 4, bs));
    assert_int_equal(bp_collector_var(v, 0)->kind, BP_TRAINVAR);
    /* XavierNormal: std sqrt(2 / (fan_in + fan_out)) with fans 27*16 and 27*32. */
    double sq = 0;
    for (int64_t i = 0; i < w->numel; i++) sq += bp_tensor_get(w, i) * bp_tensor_get(w, i);
    BP_ASSERT_CLOSE(sqrt(sq / (double)w->numel), sqrt(2.0 / (27 * 16 + 27 * 32)), 0, 0.05);
    bp_collector_free(v);

    int64_t s4[4] = {2, 4, 4, 8};
    bp_tensor *x, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 4, s4));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "input channels=8 needs to have the same size as in_channels=16.");
    bp_tensor_free(x);
    int64_t s3[3] = {4, 4, 16};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, s3));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "expected 5D input (got 3D input");
    bp_tensor_free(x);
    bp_node_free(n);

    BP_EXPECT_ERR(bp_conv3d_new(&n, 6, 4, &(bp_conv_opts){.kernel_size = {3, 3, 3}, .groups = 4}), BP_EINVAL,
                  "\"in_channels\" should be divisible by groups");
    BP_EXPECT_ERR(bp_conv3d_new(&n, 8, 6, &(bp_conv_opts){.kernel_size = {3, 3, 3}, .groups = 4}), BP_EINVAL,
                  "\"out_channels\" should be divisible by groups");
    BP_EXPECT_ERR(bp_conv3d_new(&n, 8, 8, &(bp_conv_opts){.kernel_size = {3, 0, 3}, .groups = 1}), BP_EINVAL,
                  "kernel_size[1] must be >= 1, got 0");
    BP_EXPECT_ERR(bp_conv3d_new(&n, 0, 8, NULL), BP_EINVAL, "must be >= 1");
    bp_conv_opts neg = bp_conv_defaults();
    neg.kernel_size[0] = neg.kernel_size[1] = neg.kernel_size[2] = 2;
    neg.padding = BP_PAD_EXPLICIT;
    neg.pad_lo[2] = -1;
    BP_EXPECT_ERR(bp_conv3d_new(&n, 1, 1, &neg), BP_EINVAL, "padding of dim 2 must be >= 0");
    /* VALID with an input smaller than the kernel. */
    bp_conv_opts valid = bp_conv_defaults();
    valid.kernel_size[0] = valid.kernel_size[1] = valid.kernel_size[2] = 3;
    valid.padding = BP_PAD_VALID;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 1, 1, &valid));
    int64_t small[5] = {1, 2, 5, 5, 1};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, small));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "smaller than the dilated kernel");
    bp_tensor_free(x);
    /* NonBatchingMode (the global default): w and b are plain Variables. */
    bp_collector *v2;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &v2));
    assert_int_equal(bp_collector_var(v2, 0)->kind, BP_VARIABLE);
    bp_collector_free(v2);
    bp_node_free(n);
}

/* A 1x1x1 conv is a per-position matrix product; SAME keeps the size. */
static void test_conv_hand_worked(void **state)
{
    (void)state;
    bp_conv_opts o = bp_conv_defaults();
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 1;
    bp_node *n;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 2, 1, &o));
    bp_conv *c = bp_conv_cast(n);
    bp_tensor_set(c->w->value, 0, 2.0);
    bp_tensor_set(c->w->value, 1, -1.0);
    bp_tensor_set(c->b->value, 0, 0.5);
    int64_t s[5] = {1, 2, 1, 1, 2};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s));
    double xv[4] = {1, 3, -2, 4};
    for (int i = 0; i < 4; i++) bp_tensor_set(x, i, xv[i]);
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    assert_int_equal(y->ndim, 5);
    assert_int_equal(y->shape[1], 2);
    assert_int_equal(y->shape[4], 1);
    assert_true(bp_tensor_get(y, 0) == 2 * 1 - 3 + 0.5);
    assert_true(bp_tensor_get(y, 1) == 2 * -2 - 4 + 0.5);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(n);
}

static void test_pool_hand_worked_and_errors(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_maxpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}}));
    assert_string_equal(bp_node_name(n), "MaxPool3d0");
    bp_pool *p = (bp_pool *)n;
    assert_int_equal(p->stride[0], 2); /* stride defaults to the kernel */
    int64_t s[5] = {1, 2, 2, 2, 1};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s));
    for (int i = 0; i < 8; i++) bp_tensor_set(x, i, (i * 5) % 8 - 3); /* a permutation of -3..4 */
    double mx = -1e9, sum = 0;
    for (int i = 0; i < 8; i++) {
        mx = fmax(mx, bp_tensor_get(x, i));
        sum += bp_tensor_get(x, i);
    }
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    assert_int_equal(y->numel, 1);
    assert_true(bp_tensor_get(y, 0) == mx);
    bp_tensor_free(y);
    bp_node_free(n);
    BP_OK_OR_FAIL(bp_avgpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}}));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    BP_ASSERT_CLOSE(bp_tensor_get(y, 0), sum / 8, 1e-7, 0);
    bp_tensor_free(y);
    bp_node_free(n);
    int target[3] = {1, 1, 1};
    BP_OK_OR_FAIL(bp_adaptive_avgpool_new(&n, 3, target, NULL, NULL));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y)); /* global average pooling */
    BP_ASSERT_CLOSE(bp_tensor_get(y, 0), sum / 8, 1e-7, 0);
    bp_tensor_free(y);
    bp_node_free(n);
    int big[3] = {3, 1, 1};
    BP_OK_OR_FAIL(bp_adaptive_avgpool_new(&n, 3, big, NULL, NULL));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "target size 3 is larger than the input's 2");
    bp_node_free(n);
    BP_OK_OR_FAIL(bp_maxpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {3, 3, 3}}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "smaller than the kernel");
    bp_tensor *x4;
    BP_OK_OR_FAIL(bp_tensor_new(&x4, BP_REAL_DTYPE, 2, s));
    BP_EXPECT_ERR(bp_node_update(n, x4, &y), BP_ESHAPE, "expected 5D input (got 2D input");
    bp_tensor_free(x4);
    bp_node_free(n);
    bp_tensor_free(x);
    /* A NaN anywhere in a window comes out (XLA's max), not only in first place. */
    BP_OK_OR_FAIL(bp_maxpool_new(&n, 1, &(bp_pool_opts){.kernel_size = {2}}));
    int64_t s1[3] = {1, 4, 1};
    BP_OK_OR_FAIL(bp_tensor_new(&x4, BP_REAL_DTYPE, 3, s1));
    double v1[4] = {1, NAN, NAN, 2};
    for (int i = 0; i < 4; i++) bp_tensor_set(x4, i, v1[i]);
    BP_OK_OR_FAIL(bp_node_update(n, x4, &y));
    assert_true(isnan(bp_tensor_get(y, 0)) && isnan(bp_tensor_get(y, 1)));
    bp_tensor_free(y);
    bp_tensor_free(x4);
    bp_node_free(n);
    BP_EXPECT_ERR(bp_maxpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {2, 0, 2}}), BP_EINVAL, "kernel_size[1] must be >= 1");
    BP_EXPECT_ERR(bp_maxpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}, .pad_lo = {2, 0, 0}}), BP_EINVAL,
                  "padding of dim 0 must be in [0, kernel_size)");
    BP_EXPECT_ERR(bp_maxpool_new(&n, 3, NULL), BP_EINVAL, "kernel_size is required");
    BP_EXPECT_ERR(bp_maxpool_new(&n, 4, &(bp_pool_opts){.kernel_size = {2, 2, 2}}), BP_EINVAL, "n_spatial must be 1, 2 or 3");
    BP_EXPECT_ERR(bp_adaptive_avgpool_new(&n, 3, (int[3]){1, 0, 1}, NULL, NULL), BP_EINVAL, "target_size[1] must be >= 1");
}

/* Max pooling against a brute-force float64 reference on 19 channels (a full
 * run of vector lanes plus a 3-channel tail), with ties (the first position of
 * a window wins the gradient) and NaNs in both parts (they come out and take
 * the gradient). Backward both into a leaf's gradient that already holds
 * values (accumulate) and into a fresh buffer (pool(1 * x): write). */
static void maxpool_case(const int k[3], const int st[3], const int lo[3], const int hi[3], bool fresh)
{
    enum { B = 2, I0 = 5, I1 = 4, I2 = 7, C = 19 };
    bp_mode train = bp_training_mode(B);
    bp_pool_opts po = {.kernel_size = {k[0], k[1], k[2]}, .stride = {st[0], st[1], st[2]},
                       .pad_lo = {lo[0], lo[1], lo[2]}, .pad_hi = {hi[0], hi[1], hi[2]}, .mode = &train};
    bp_node *n;
    BP_OK_OR_FAIL(bp_maxpool_new(&n, 3, &po));
    int64_t xs[5] = {B, I0, I1, I2, C};
    bp_tensor *x, *gx, *y, *in;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs));
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, 5, xs));
    unsigned seed = 11;
    for (int64_t i = 0; i < x->numel; i++) {
        seed = seed * 1664525u + 1013904223u;
        bp_tensor_set(x, i, (double)(seed >> 28)); /* 16 values: many ties */
        bp_tensor_set(gx, i, fresh ? 0 : 0.25 * (double)(i % 5));
    }
    const int64_t nan_at[3] = {(((0 * I0 + 2) * I1 + 1) * I2 + 3) * C + 5, (((1 * I0 + 4) * I1 + 3) * I2 + 6) * C + 17,
                               (((1 * I0 + 0) * I1 + 0) * I2 + 0) * C + 0};
    for (int i = 0; i < 3; i++) bp_tensor_set(x, nan_at[i], NAN);
    double *want_dx = calloc((size_t)x->numel, sizeof(double));
    for (int64_t i = 0; i < x->numel; i++) want_dx[i] = bp_tensor_get(gx, i);
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    if (fresh)
        BP_OK_OR_FAIL(bp_mul_scalar(&in, x, 1.0));
    else
        in = bp_tensor_retain(x);
    BP_OK_OR_FAIL(bp_node_update(n, in, &y));
    int64_t O[3];
    const int64_t I[3] = {I0, I1, I2};
    for (int d = 0; d < 3; d++) O[d] = (I[d] + lo[d] + hi[d] - k[d]) / st[d] + 1;
    int64_t ys[5] = {B, O[0], O[1], O[2], C};
    assert_true(bp_tensor_has_shape(y, 5, ys));
    bp_tensor *dy;
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, 5, ys));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, 1 + (double)(i % 7));
    int64_t q = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t o0 = 0; o0 < O[0]; o0++)
            for (int64_t o1 = 0; o1 < O[1]; o1++)
                for (int64_t o2 = 0; o2 < O[2]; o2++)
                    for (int64_t c = 0; c < C; c++, q++) {
                        double best = 0;
                        int64_t at = -1;
                        const int64_t o[3] = {o0, o1, o2};
                        int64_t i[3];
                        for (int64_t a0 = 0; a0 < k[0]; a0++)
                            for (int64_t a1 = 0; a1 < k[1]; a1++)
                                for (int64_t a2 = 0; a2 < k[2]; a2++) {
                                    const int64_t a[3] = {a0, a1, a2};
                                    bool inside = true;
                                    for (int d = 0; d < 3; d++) {
                                        i[d] = o[d] * st[d] - lo[d] + a[d];
                                        inside = inside && i[d] >= 0 && i[d] < I[d];
                                    }
                                    if (!inside) continue;
                                    int64_t idx = (((b * I0 + i[0]) * I1 + i[1]) * I2 + i[2]) * C + c;
                                    double v = bp_tensor_get(x, idx);
                                    if (at < 0 || (!isnan(best) && (isnan(v) || v > best))) best = v, at = idx;
                                }
                        double got = bp_tensor_get(y, q);
                        if (isnan(best) ? !isnan(got) : got != best)
                            fail_msg("y[%lld] = %g, expected %g", (long long)q, got, best);
                        want_dx[at] += bp_tensor_get(dy, q);
                    }
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    for (int64_t i = 0; i < x->numel; i++)
        if (bp_tensor_get(gx, i) != want_dx[i])
            fail_msg("%s: dx[%lld] = %g, expected %g", fresh ? "fresh" : "accumulated", (long long)i,
                     bp_tensor_get(gx, i), want_dx[i]);
    free(want_dx);
    bp_tensor_free(dy);
    bp_tensor_free(y);
    bp_tensor_free(in);
    bp_tensor_free(gx);
    bp_tensor_free(x);
    bp_node_free(n);
}

static void test_maxpool_brute_force(void **state)
{
    (void)state;
    /* overlapping windows with padding: dx by scatter */
    const int k1[3] = {3, 2, 3}, s1[3] = {2, 1, 2}, lo1[3] = {1, 0, 1}, hi1[3] = {1, 1, 1};
    /* disjoint windows (dx in one pass): 2x2x2, then gaps (stride 3 > kernel 2) and
     * positions no window covers (7 = 3*2 + 1), with high padding clipping the last window */
    const int k2[3] = {2, 2, 2}, s2[3] = {2, 2, 2}, k3[3] = {2, 1, 2}, s3[3] = {3, 2, 3}, z[3] = {0, 0, 0},
              hi3[3] = {0, 0, 1};
    for (int fresh = 0; fresh < 2; fresh++) {
        maxpool_case(k1, s1, lo1, hi1, fresh);
        maxpool_case(k2, s2, z, z, fresh);
        maxpool_case(k3, s3, z, hi3, fresh);
    }
}

/* Shape arithmetic that would overflow int64 is an error naming the argument
 * and its values, at construction or at update, never a wrapped size (run
 * under UBSan, the old code trapped on signed overflow here). */
static void test_shape_overflow(void **state)
{
    (void)state;
    bp_node *n = NULL;
    bp_tensor *x, *y = NULL;
    /* a dilated kernel beyond 2^31 - 1: (3 - 1) * 2147483647 + 1 */
    bp_conv_opts o = bp_conv_defaults();
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 3;
    o.dilation[1] = INT32_MAX;
    BP_EXPECT_ERR(bp_conv3d_new(&n, 4, 8, &o), BP_EINVAL,
                  "dilated kernel along dim 1, (kernel_size - 1) * dilation + 1 = (3 - 1) * 2147483647 + 1 = 4294967295");
    /* kernel weights: 2^20 * 2^20 * 2^20 taps */
    o = bp_conv_defaults();
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 1 << 20;
    BP_EXPECT_ERR(bp_conv3d_new(&n, 4, 8, &o), BP_EINVAL, "has more than 2^60 weights");
    BP_EXPECT_ERR(bp_dense_new(&n, (int64_t)1 << 40, (int64_t)1 << 40, NULL), BP_EINVAL,
                  "num_in * num_out = 1099511627776 * 1099511627776");
    /* explicit padding of 2^31 - 1 on every side: an output of 2^32 per dim */
    o = bp_conv_defaults();
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 1;
    o.padding = BP_PAD_EXPLICIT;
    for (int d = 0; d < 3; d++) o.pad_lo[d] = o.pad_hi[d] = INT32_MAX;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 1, 1, &o));
    int64_t one[5] = {1, 1, 1, 1, 1};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, one));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "has more than 2^60 elements");
    bp_tensor_free(x);
    bp_node_free(n);
    /* an empty batch whose spatial dims multiply past int64 */
    int64_t huge[5] = {0, (int64_t)1 << 40, (int64_t)1 << 40, (int64_t)1 << 40, 1};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, huge));
    o = bp_conv_defaults();
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 3;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 1, 1, &o));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "empty input");
    bp_node_free(n);
    BP_OK_OR_FAIL(bp_maxpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {1, 1, 1}}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE,
                  "more than 2^31 positions per sample: input 1099511627776 x 1099511627776 x 1099511627776");
    bp_node_free(n);
    bp_tensor_free(x);
    /* a pool's padded size past int64 */
    int64_t longest[5] = {0, INT64_MAX, 1, 1, 1};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, longest));
    BP_OK_OR_FAIL(bp_avgpool_new(&n, 3, &(bp_pool_opts){.kernel_size = {2, 1, 1}, .pad_hi = {1, 0, 0}}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE,
                  "spatial dim 0 of size 9223372036854775807 with padding (0, 1) overflows int64");
    bp_node_free(n);
    bp_tensor_free(x);
}

/* A dilation far beyond the input (but within the bound) is a legal SAME
 * convolution: only the centre tap of a 3x3x3 kernel lands inside, so
 * y = b + x . w[centre] and dx = dy . w[centre]^T, on every path the layer picks. */
static void test_conv_huge_dilation(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(1);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    for (int d = 0; d < 3; d++) o.kernel_size[d] = 3, o.dilation[d] = 1 << 29;
    bp_node *n;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 4, 8, &o));
    bp_conv *c = bp_conv_cast(n);
    int64_t xs[5] = {1, 3, 3, 3, 4}, ys[5] = {1, 3, 3, 3, 8};
    bp_tensor *x, *gx, *y, *dy;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs));
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, 5, xs));
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, 5, ys));
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, (double)(i % 7) - 3);
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, (double)(i % 5) - 2);
    for (int64_t i = 0; i < 8; i++) bp_tensor_set(c->b->value, i, 0.5 * (double)i);
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    assert_true(bp_tensor_has_shape(y, 5, ys));
    const int64_t centre = 13; /* tap (1, 1, 1) */
    for (int64_t p = 0; p < 27; p++)
        for (int64_t co = 0; co < 8; co++) {
            double want = bp_tensor_get(c->b->value, co);
            for (int64_t ci = 0; ci < 4; ci++)
                want += bp_tensor_get(x, p * 4 + ci) * bp_tensor_get(c->w->value, (centre * 4 + ci) * 8 + co);
            BP_ASSERT_CLOSE(bp_tensor_get(y, p * 8 + co), want, 1e-5, 1e-5);
        }
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    for (int64_t p = 0; p < 27; p++)
        for (int64_t ci = 0; ci < 4; ci++) {
            double want = 0;
            for (int64_t co = 0; co < 8; co++)
                want += bp_tensor_get(dy, p * 8 + co) * bp_tensor_get(c->w->value, (centre * 4 + ci) * 8 + co);
            BP_ASSERT_CLOSE(bp_tensor_get(gx, p * 4 + ci), want, 1e-5, 1e-5);
        }
    bp_tensor_free(y);
    bp_tensor_free(dy);
    bp_tensor_free(gx);
    bp_tensor_free(x);
    bp_node_free(n);
}

static void test_dense_flatten_dropout_activations(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_dense_opts o = bp_dense_defaults();
    o.mode = &train;
    bp_node *d;
    BP_OK_OR_FAIL(bp_dense_new(&d, 3, 2, &o));
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(d, NULL, &v));
    assert_string_equal(bp_collector_key(v, 0), "Dense0.W");
    assert_string_equal(bp_collector_key(v, 1), "Dense0.b");
    bp_collector_free(v);
    int64_t s[2] = {2, 4};
    bp_tensor *x, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 2, s));
    BP_EXPECT_ERR(bp_node_update(d, x, &y), BP_ESHAPE, "expected input of shape (..., 3), got (2,4)");
    bp_tensor_free(x);
    bp_node_free(d);
    bp_node *bad;
    BP_EXPECT_ERR(bp_dense_new(&bad, 0, 2, NULL), BP_EINVAL, "num_in and num_out must be >= 1");
    assert_null(bad);

    /* Flatten keeps the batch axis in batching modes. */
    bp_node *f;
    BP_OK_OR_FAIL(bp_flatten_new(&f, 0, -1, &train, NULL));
    int64_t s5[5] = {2, 3, 4, 5, 6};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s5));
    BP_OK_OR_FAIL(bp_node_update(f, x, &y));
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], 2);
    assert_int_equal(y->shape[1], 360);
    bp_tensor_free(y);
    bp_node_free(f);
    BP_OK_OR_FAIL(bp_flatten_new(&f, 3, 1, &train, NULL));
    BP_EXPECT_ERR(bp_node_update(f, x, &y), BP_ESHAPE, "cannot flatten dims 3..1");
    bp_node_free(f);

    /* Dropout: identity unless fitting; while fitting, kept values are x / prob. */
    bp_node *dr;
    BP_OK_OR_FAIL(bp_dropout_new(&dr, 0.5, 123, &train, NULL));
    bp_tensor_fill(x, 2.0);
    BP_OK_OR_FAIL(bp_node_update(dr, x, &y));
    assert_ptr_equal(y, x);
    bp_tensor_free(y);
    bp_share_save_fit(true);
    BP_OK_OR_FAIL(bp_node_update(dr, x, &y));
    int64_t kept = 0;
    for (int64_t i = 0; i < y->numel; i++) {
        double v2 = bp_tensor_get(y, i);
        assert_true(v2 == 0.0 || v2 == 4.0);
        kept += v2 == 4.0;
    }
    /* Binomial(720, 0.5): mean 360, sd 13.4; 5 sd either side. */
    assert_true(kept > 293 && kept < 427);
    bp_tensor_free(y);
    bp_collector *dv;
    BP_OK_OR_FAIL(bp_node_vars(dr, NULL, &dv));
    assert_string_equal(bp_collector_key(dv, 0), "Dropout0.rng_state");
    assert_int_equal(bp_collector_var(dv, 0)->value->dtype, BP_INT64);
    bp_collector_free(dv);
    bp_node_free(dr);
    BP_EXPECT_ERR(bp_dropout_new(&dr, 0.0, 1, NULL, NULL), BP_EINVAL, "keep probability) must be in (0, 1], got 0");
    bp_share_save_fit(false);

    bp_node *a;
    BP_OK_OR_FAIL(bp_activation_new(&a, &bp_leaky_relu_class, 0.1, NULL, NULL));
    assert_string_equal(bp_node_name(a), "LeakyReLU0");
    bp_tensor_fill(x, -2.0);
    BP_OK_OR_FAIL(bp_node_update(a, x, &y));
    BP_ASSERT_CLOSE(bp_tensor_get(y, 7), -0.2, 1e-7, 0);
    bp_tensor_free(y);
    bp_node_free(a);
    BP_EXPECT_ERR(bp_activation_new(&a, &bp_dense_class, 0, NULL, NULL), BP_EINVAL, "is not an activation layer");
    bp_tensor_free(x);
}

static void test_sequential_tree(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_conv_opts co = bp_conv_defaults();
    co.mode = &train;
    co.kernel_size[0] = co.kernel_size[1] = co.kernel_size[2] = 3;
    bp_node *kids[3];
    BP_OK_OR_FAIL(bp_conv3d_new(&kids[0], 1, 2, &co));
    BP_OK_OR_FAIL(bp_activation_new(&kids[1], &bp_relu_class, 0, &train, NULL));
    BP_OK_OR_FAIL(bp_flatten_new(&kids[2], 0, -1, &train, NULL));
    bp_node *seq;
    BP_OK_OR_FAIL(bp_sequential_new(&seq, 3, kids, &train, NULL));
    for (int i = 0; i < 3; i++) bp_node_free(kids[i]); /* the container holds them */
    bp_collector *nodes;
    BP_OK_OR_FAIL(bp_node_nodes(seq, NULL, &nodes));
    assert_int_equal(bp_collector_len(nodes), 4);
    assert_string_equal(bp_collector_key(nodes, 0), "Sequential0");
    assert_string_equal(bp_collector_key(nodes, 1), "Conv3d0");
    assert_string_equal(bp_collector_key(nodes, 3), "Flatten0");
    bp_collector_free(nodes);
    bp_collect_opts rel = bp_collect_defaults();
    rel.method = BP_RELATIVE;
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(seq, &rel, &v));
    assert_string_equal(bp_collector_key(v, 0), "children-0.w");
    bp_collector_free(v);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(seq, &sd));
    assert_non_null(bp_dict_get_tensor(bp_dict_get_dict(sd, "Conv3d0"), "Conv3d0.w"));
    bp_dict_free(sd);
    int64_t s[5] = {2, 4, 4, 4, 1};
    bp_tensor *x, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, s));
    bp_tensor_fill(x, 1.0);
    BP_OK_OR_FAIL(bp_node_update(seq, x, &y));
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[1], 4 * 4 * 4 * 2);
    for (int64_t i = 0; i < y->numel; i++) assert_true(bp_tensor_get(y, i) >= 0);
    bp_ag_release_graph();
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_node_free(seq);
    BP_EXPECT_ERR(bp_sequential_new(&seq, 0, kids, NULL, NULL), BP_EINVAL, "needs at least one child");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_conv_vars_and_errors, setup),
        cmocka_unit_test_setup(test_conv_hand_worked, setup),
        cmocka_unit_test_setup(test_pool_hand_worked_and_errors, setup),
        cmocka_unit_test_setup(test_maxpool_brute_force, setup),
        cmocka_unit_test_setup(test_shape_overflow, setup),
        cmocka_unit_test_setup(test_conv_huge_dilation, setup),
        cmocka_unit_test_setup(test_dense_flatten_dropout_activations, setup),
        cmocka_unit_test_setup(test_sequential_tree, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
