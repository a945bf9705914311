/* tests/test_batchnorm_kernels.c — the BatchNorm kernels (bpc/batchnorm_kernels.h)
 * against PyTorch's numbers (tests/data/batchnorm_*.txt, from tests/gen_batchnorm.py),
 * hand-worked cases, a float64 reference on shapes that span many blocks and
 * chunks, the fused BN+ReLU against the two ops in sequence, thread-count
 * determinism and every error path.
 *
 * BPC_TEST_BOTH_FLAVOURS: built as test_batchnorm_kernels (float32) and
 * test_batchnorm_kernels_f64 (float64); the float64 build adds gradient checks
 * of every backward kernel against finite differences of its forward (at the
 * end, under BP_REAL_DOUBLE). Every fast kernel is also held to the plain
 * reference kernels of layers/batchnorm_ref.c on many shapes (test_fast_vs_ref).
 *
 * Tolerances. The fixtures hold exact (float64) answers for inputs that are
 * exactly representable in float32, so the only error is the kernels' own
 * rounding. In float32 (unit roundoff u = 6e-8): inputs are |x| <= ~15, the
 * normalised values and gradients are O(1) to O(5), and every output is a short
 * chain of roundings (x - mean exact to 1 ulp of |x|, invstd to 2 ulp, two or
 * three products and a sum) on top of the statistics, whose per-channel sums of
 * at most a few hundred terms are accumulated in double. That bounds the absolute
 * error by about 20 ulp of 15, 2e-5, and the relative error of O(1) values by
 * about 1e-5; running statistics go through three momentum steps of the same.
 * In float64 the same chain gives about 1e-12. */
#include "bp_test.h"
#include "fixture.h"
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include "../layers/batchnorm_internal.h"

#define IS_F32 (sizeof(bp_real) == 4)
#define ATOL (IS_F32 ? 2e-5 : 1e-12)
#define RTOL (IS_F32 ? 1e-5 : 1e-12)

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s; }
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; }
static double rng_normal(void)
{
    double u1 = rng_uniform(), u2 = rng_uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static bp_real *reals(size_t n)
{
    bp_real *p = malloc(sizeof(bp_real) * (n ? n : 1));
    assert_non_null(p);
    return p;
}

/* n values offset[c] + spread[c]*N(0,1) per channel, rounded to bp_real. */
static bp_real *random_mc(int64_t M, int64_t C, double offset, double spread)
{
    bp_real *x = reals((size_t)(M * C));
    for (int64_t i = 0; i < M * C; i++) {
        int64_t c = i % C;
        x[i] = (bp_real)(offset * (double)(c % 3) + spread * (1.0 + 0.1 * (double)c) * rng_normal());
    }
    return x;
}

static bp_real *copy_fx(const fx_tensor *t)
{
    assert_non_null(t);
    bp_real *p = reals((size_t)t->numel);
    for (int64_t i = 0; i < t->numel; i++) p[i] = (bp_real)t->data[i];
    return p;
}

/* Asserts |got - want| <= atol + rtol*|want| elementwise, naming the first bad index. */
static void expect_close(const char *what, const bp_real *got, const double *want, int64_t n,
                         double atol, double rtol)
{
    for (int64_t i = 0; i < n; i++) {
        double g = (double)got[i], w = want[i];
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("%s[%lld] = %.9g, expected %.9g (atol %g rtol %g)", what, (long long)i, g, w,
                     atol, rtol);
    }
}

static void expect_close_fx(const char *what, const bp_real *got, const fx_file *f,
                            const char *name, double atol, double rtol)
{
    const fx_tensor *t = fx_get(f, name);
    assert_non_null(t);
    expect_close(what, got, t->data, t->numel, atol, rtol);
}

static void expect_same_bits(const char *what, const bp_real *a, const bp_real *b, int64_t n)
{
    if (memcmp(a, b, sizeof(bp_real) * (size_t)n) != 0) {
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], sizeof(bp_real)) != 0)
                fail_msg("%s[%lld]: %.9g vs %.9g differ", what, (long long)i, (double)a[i],
                         (double)b[i]);
    }
}

/* ------------------------------------------------------------------ PyTorch fixtures */

static void run_fixture(const char *file)
{
    fx_file *f = fx_load(file);
    assert_non_null(f);
    const fx_tensor *x0 = fx_get(f, "x0");
    assert_non_null(x0);
    const int64_t M = x0->shape[0], C = x0->shape[1], n = M * C;
    const double momentum = fx_get(f, "momentum")->data[0], eps = fx_get(f, "eps")->data[0];
    bp_real *x[3], *dy = copy_fx(fx_get(f, "dy"));
    bp_real *scale = copy_fx(fx_get(f, "scale")), *bias = copy_fx(fx_get(f, "bias"));
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "x%d", i);
        x[i] = copy_fx(fx_get(f, name));
    }
    bp_real *y = reals((size_t)n), *dx = reals((size_t)n);
    bp_real *mean = reals((size_t)C), *invstd = reals((size_t)C), *var = reals((size_t)C);
    bp_real *rm = reals((size_t)C), *rv = reals((size_t)C);
    bp_real *ds = reals((size_t)C), *db = reals((size_t)C);
    for (int64_t c = 0; c < C; c++) {
        rm[c] = 0;
        rv[c] = 1;
    }
    size_t wbytes = bp__bn_workspace_size(M, C);
    void *work = malloc(wbytes);
    assert_non_null(work);

    /* three training steps; the last one's outputs and gradients */
    for (int i = 0; i < 3; i++) {
        BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x[i], scale, bias, M, C, eps, work));
        BP_OK_OR_FAIL(bp__bn_update_running(rm, rv, mean, var, M, C, momentum));
    }
    expect_close_fx("mean", mean, f, "mean", ATOL, RTOL);
    expect_close_fx("invstd", invstd, f, "invstd", ATOL, RTOL);
    expect_close_fx("y", y, f, "y", ATOL, RTOL);
    expect_close_fx("running_mean", rm, f, "running_mean", ATOL, RTOL);
    expect_close_fx("running_var", rv, f, "running_var", ATOL, RTOL);
    memset(ds, 0, sizeof(bp_real) * (size_t)C);
    memset(db, 0, sizeof(bp_real) * (size_t)C);
    BP_OK_OR_FAIL(bp__bn_backward_train(dx, ds, db, dy, x[2], mean, invstd, scale, M, C, work));
    expect_close_fx("dx", dx, f, "dx", ATOL, RTOL);
    expect_close_fx("dscale", ds, f, "dscale", ATOL, RTOL);
    expect_close_fx("dbias", db, f, "dbias", ATOL, RTOL);

    /* eval mode with PyTorch's running statistics, so this part does not depend on ours */
    bp_real *trm = copy_fx(fx_get(f, "running_mean")), *trv = copy_fx(fx_get(f, "running_var"));
    BP_OK_OR_FAIL(bp__bn_forward_eval(y, x[2], trm, trv, scale, bias, M, C, eps, work));
    expect_close_fx("y_eval", y, f, "y_eval", ATOL, RTOL);
    memset(ds, 0, sizeof(bp_real) * (size_t)C);
    memset(db, 0, sizeof(bp_real) * (size_t)C);
    BP_OK_OR_FAIL(bp__bn_backward_eval(dx, ds, db, dy, x[2], trm, trv, scale, M, C, eps, work));
    expect_close_fx("dx_eval", dx, f, "dx_eval", ATOL, RTOL);
    expect_close_fx("dscale_eval", ds, f, "dscale_eval", ATOL, RTOL);
    expect_close_fx("dbias_eval", db, f, "dbias_eval", ATOL, RTOL);

    for (int i = 0; i < 3; i++) free(x[i]);
    free(dy); free(scale); free(bias); free(y); free(dx); free(mean); free(invstd); free(var);
    free(rm); free(rv); free(ds); free(db); free(trm); free(trv); free(work);
    fx_free(f);
}

static void test_torch_bn1d_c5(void **s) { (void)s; run_fixture("batchnorm_bn1d_c5.txt"); }
static void test_torch_bn1d_2d_c3(void **s) { (void)s; run_fixture("batchnorm_bn1d_2d_c3.txt"); }
static void test_torch_bn1d_c1(void **s) { (void)s; run_fixture("batchnorm_bn1d_c1.txt"); }
static void test_torch_bn2d_c19(void **s) { (void)s; run_fixture("batchnorm_bn2d_c19.txt"); }
static void test_torch_bn2d_c16(void **s) { (void)s; run_fixture("batchnorm_bn2d_c16.txt"); }
static void test_torch_bn3d_c5(void **s) { (void)s; run_fixture("batchnorm_bn3d_c5.txt"); }
static void test_torch_bn3d_c1(void **s) { (void)s; run_fixture("batchnorm_bn3d_c1.txt"); }
static void test_torch_bn3d_c19_n1(void **s) { (void)s; run_fixture("batchnorm_bn3d_c19_n1.txt"); }

/* ------------------------------------------------------------------ hand-worked */

/* Channel 0 = 1,3,1,3: mean 2, var 1; channel 1 = 0,4,4,0: mean 2, var 4. With
 * eps = 0, invstd = (1, 0.5) and xhat = (-1,1,-1,1), (-1,1,1,-1); scale (2,3),
 * bias (0.5,-1). Backward with dy = (1,0,0,0), (1,2,3,4):
 *   channel 0: sum dy = 1, sum dy*xhat = -1, dx = 2*(dy - 1/4 + xhat/4) = 1,0,-1,0
 *   channel 1: sum dy = 10, sum dy*xhat = 0, dx = 1.5*(dy - 2.5) = -2.25,-0.75,0.75,2.25
 * Running stats, momentum 0.9 from (0, 1): mean 0.1*2 = 0.2; var 0.9 + 0.1*var*4/3. */
static void test_hand_worked_train(void **s)
{
    (void)s;
    const bp_real x[8] = {1, 0, 3, 4, 1, 4, 3, 0};
    const bp_real scale[2] = {2, 3}, bias[2] = {0.5, -1};
    const bp_real dy[8] = {1, 1, 0, 2, 0, 3, 0, 4};
    bp_real y[8], mean[2], invstd[2], var[2], dx[8], ds[2] = {0, 0}, db[2] = {0, 0};
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, bias, 4, 2, 0.0, NULL));
    const double ywant[8] = {-1.5, -4, 2.5, 2, -1.5, 2, 2.5, -4};
    expect_close("y", y, ywant, 8, 0, 0);
    const double mwant[2] = {2, 2}, iwant[2] = {1, 0.5}, vwant[2] = {1, 4};
    expect_close("mean", mean, mwant, 2, 0, 0);
    expect_close("invstd", invstd, iwant, 2, 0, 0);
    expect_close("var", var, vwant, 2, 0, 0);
    BP_OK_OR_FAIL(bp__bn_backward_train(dx, ds, db, dy, x, mean, invstd, scale, 4, 2, NULL));
    const double dxwant[8] = {1, -2.25, 0, -0.75, -1, 0.75, 0, 2.25};
    expect_close("dx", dx, dxwant, 8, 1e-6, 0);
    const double dswant[2] = {-1, 0}, dbwant[2] = {1, 10};
    expect_close("dscale", ds, dswant, 2, 1e-6, 0);
    expect_close("dbias", db, dbwant, 2, 0, 0);
    /* a second backward accumulates into dscale/dbias and overwrites dx */
    BP_OK_OR_FAIL(bp__bn_backward_train(dx, ds, db, dy, x, mean, invstd, scale, 4, 2, NULL));
    expect_close("dx again", dx, dxwant, 8, 1e-6, 0);
    const double ds2[2] = {-2, 0}, db2[2] = {2, 20};
    expect_close("dscale twice", ds, ds2, 2, 1e-6, 0);
    expect_close("dbias twice", db, db2, 2, 0, 0);
    /* NULL dscale/dbias: only dx */
    BP_OK_OR_FAIL(bp__bn_backward_train(dx, NULL, NULL, dy, x, mean, invstd, scale, 4, 2, NULL));
    expect_close("dx no params", dx, dxwant, 8, 1e-6, 0);

    bp_real rm[2] = {0, 0}, rv[2] = {1, 1};
    BP_OK_OR_FAIL(bp__bn_update_running(rm, rv, mean, var, 4, 2, 0.9));
    const double rmwant[2] = {0.2, 0.2}, rvwant[2] = {0.9 + 0.1 * 4.0 / 3.0, 0.9 + 0.1 * 16.0 / 3.0};
    expect_close("running_mean", rm, rmwant, 2, 0, 1e-7);
    expect_close("running_var", rv, rvwant, 2, 0, 1e-7);
    /* momentum 1 keeps the old values, 0 takes the batch's (unbiased) ones */
    BP_OK_OR_FAIL(bp__bn_update_running(rm, rv, mean, var, 4, 2, 1.0));
    expect_close("running_mean m=1", rm, rmwant, 2, 0, 1e-7);
    BP_OK_OR_FAIL(bp__bn_update_running(rm, rv, mean, var, 4, 2, 0.0));
    const double rvub[2] = {4.0 / 3.0, 16.0 / 3.0};
    expect_close("running_mean m=0", rm, mwant, 2, 0, 0);
    expect_close("running_var m=0", rv, rvub, 2, 0, 1e-7);

    /* no affine: scale 1, bias 0 */
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, NULL, x, NULL, NULL, 4, 2, 0.0, NULL));
    const double yplain[8] = {-1, -1, 1, 1, -1, 1, 1, -1};
    expect_close("y plain", y, yplain, 8, 0, 0);
}

/* running_mean (1, 2), running_var (3, 0), eps 1: invstd (0.5, 1). Row (3, 4) with
 * scale (2, 3), bias (0.5, -1): (3-1)*0.5*2 + 0.5 = 2.5, (4-2)*1*3 - 1 = 5.
 * Backward, dy = (1, 2) on row (3, 4) and (-1, 1) on row (1, 0):
 *   dx = dy*invstd*scale = (1, 6), (-1, 3); dbias = (0, 3);
 *   dscale = sum dy*(x - rm)*invstd = (1*2 + -1*0)*0.5, (2*2 + 1*-2)*1 = (1, 2). */
static void test_hand_worked_eval(void **s)
{
    (void)s;
    const bp_real x[4] = {3, 4, 1, 0}, rm[2] = {1, 2}, rv[2] = {3, 0};
    const bp_real scale[2] = {2, 3}, bias[2] = {0.5, -1}, dy[4] = {1, 2, -1, 1};
    bp_real y[4], dx[4], ds[2] = {0, 0}, db[2] = {0, 0};
    BP_OK_OR_FAIL(bp__bn_forward_eval(y, x, rm, rv, scale, bias, 2, 2, 1.0, NULL));
    const double ywant[4] = {2.5, 5, 0.5, -7};
    expect_close("y", y, ywant, 4, 0, 0);
    BP_OK_OR_FAIL(bp__bn_backward_eval(dx, ds, db, dy, x, rm, rv, scale, 2, 2, 1.0, NULL));
    const double dxwant[4] = {1, 6, -1, 3}, dswant[2] = {1, 2}, dbwant[2] = {0, 3};
    expect_close("dx", dx, dxwant, 4, 0, 0);
    expect_close("dscale", ds, dswant, 2, 0, 0);
    expect_close("dbias", db, dbwant, 2, 0, 0);
    /* only dbias: neither dx nor x is needed */
    bp_real db2[2] = {10, 10};
    BP_OK_OR_FAIL(bp__bn_backward_eval(NULL, NULL, db2, dy, NULL, rm, rv, scale, 2, 2, 1.0, NULL));
    const double db2want[2] = {10, 13};
    expect_close("dbias only", db2, db2want, 2, 0, 0);
    /* only dx, no scale */
    BP_OK_OR_FAIL(bp__bn_backward_eval(dx, NULL, NULL, dy, NULL, rm, rv, NULL, 2, 2, 1.0, NULL));
    const double dxplain[4] = {0.5, 2, -0.5, 1};
    expect_close("dx no scale", dx, dxplain, 4, 0, 0);
    /* M = 0 is a no-op */
    BP_OK_OR_FAIL(bp__bn_forward_eval(y, x, rm, rv, scale, bias, 0, 2, 1.0, NULL));
    BP_OK_OR_FAIL(bp__bn_backward_eval(dx, ds, db, dy, x, rm, rv, scale, 0, 2, 1.0, NULL));
    expect_close("dscale after M=0", ds, dswant, 2, 0, 0);
}

/* ------------------------------------------------------------------ numerics */

/* x = 1e4 + N(0,1): the variance must come out within 1e-3 relative of the float64
 * two-pass answer (E[x^2] - E[x]^2 in float32 gets it wrong by orders of magnitude). */
static void test_stable_variance(void **s)
{
    (void)s;
    const int64_t M = 200003, C = 3; /* many blocks and chunks, and a ragged last block */
    rng_seed(7);
    bp_real *x = reals((size_t)(M * C)), *y = reals((size_t)(M * C));
    for (int64_t i = 0; i < M * C; i++) x[i] = (bp_real)(1e4 + rng_normal());
    bp_real mean[3], invstd[3], var[3];
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, M, C, 1e-5, NULL));
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t r = 0; r < M; r++) m += (double)x[r * C + c];
        m /= (double)M;
        for (int64_t r = 0; r < M; r++) v += ((double)x[r * C + c] - m) * ((double)x[r * C + c] - m);
        v /= (double)M;
        BP_ASSERT_CLOSE(var[c], v, 0, 1e-3);
        /* float: the final rounding, half an ulp (5e-8); double: ~100 Chan merges of one ulp each */
        BP_ASSERT_CLOSE(mean[c], m, 0, IS_F32 ? 1e-7 : 1e-13);
        /* normalised output has mean 0 and variance v/(v + eps) */
        double ym = 0, yv = 0;
        for (int64_t r = 0; r < M; r++) ym += (double)y[r * C + c];
        ym /= (double)M;
        for (int64_t r = 0; r < M; r++) yv += ((double)y[r * C + c] - ym) * ((double)y[r * C + c] - ym);
        BP_ASSERT_CLOSE(yv / (double)M, v / (v + 1e-5), 0, 1e-3);
        BP_ASSERT_CLOSE(ym, 0, IS_F32 ? 1e-3 : 1e-9, 0);
    }
    free(x);
    free(y);
}

/* A constant channel (0.1, not a binary fraction) normalises to exactly 0: y == bias. */
static void test_constant_channel(void **s)
{
    (void)s;
    const int64_t M = 30001, C = 4;
    rng_seed(11);
    bp_real *x = random_mc(M, C, 2.0, 1.0), *y = reals((size_t)(M * C));
    for (int64_t r = 0; r < M; r++) x[r * C + 2] = (bp_real)0.1;
    const bp_real scale[4] = {1, 2, 3, 4}, bias[4] = {0.5, 0.25, -0.75, 1};
    bp_real mean[4], invstd[4], var[4];
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
    assert_true(mean[2] == (bp_real)0.1);
    assert_true(var[2] == 0);
    for (int64_t r = 0; r < M; r++)
        if (y[r * C + 2] != bias[2]) fail_msg("row %lld: y = %.9g, not bias", (long long)r, (double)y[r * C + 2]);
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, NULL, M, C, 1e-5, NULL));
    for (int64_t r = 0; r < M; r++)
        if (y[r * C + 2] != 0) fail_msg("row %lld: y = %.9g, not 0", (long long)r, (double)y[r * C + 2]);
    /* eps = 0 and a constant channel: invstd is 0 (not Inf), so the output is bias, not NaN */
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, bias, M, C, 0.0, NULL));
    assert_true(invstd[2] == 0);
    assert_true(y[2] == bias[2]);
    free(x);
    free(y);
}

/* Hard data for the statistics, against a double two-pass reference, each at
 * least as accurate as PyTorch 1.13's float32 CPU batch norm on the same data
 * (torch.native_batch_norm in training mode on these 8192 values, generated
 * by this file's generator in Python; its most accurate layout, (1, 1, 8192),
 * gave the numbers below, its (8192, 1) layout 6.2e-6 / 2.8e-4 for the outlier
 * and 9.9e-6 / 2.8e-3 for the offset):
 *   outlier: N(0,1) with the first row 1000 (the first row is the shift of the
 *            shifted sums): var relative error 8.9e-8, max |y error| 5.2e-6;
 *            with the sums in float lanes bpc had 6.1e-6 and 2.7e-4 here;
 *   offset:  1e4 + N(0,1): var 2.0e-7, y 7.9e-4 (the mean's own rounding:
 *            half an ulp of 1e4 is 4.9e-4);
 *   constant 0.1: PyTorch's y is off by 2.9e-7; bpc's is exactly 0.
 * C = 1, M = 8192: one block whose shift is the first row. */
typedef enum { HARD_OUTLIER, HARD_OFFSET, HARD_CONSTANT } hard_kind;

static void check_hard_statistics(hard_kind kind, double torch_var_rel, double torch_y_abs)
{
    const int64_t M = 8192;
    rng_seed(16);
    bp_real *x = reals((size_t)M), *y = reals((size_t)M), mean, invstd, var;
    for (int64_t r = 0; r < M; r++)
        x[r] = kind == HARD_CONSTANT ? (bp_real)0.1 : (bp_real)((kind == HARD_OFFSET ? 1e4 : 0.0) + rng_normal());
    if (kind == HARD_OUTLIER) x[0] = 1000;
    double m = 0, v = 0, yerr = 0;
    for (int64_t r = 0; r < M; r++) m += (double)x[r];
    m /= (double)M;
    for (int64_t r = 0; r < M; r++) v += ((double)x[r] - m) * ((double)x[r] - m);
    v /= (double)M;
    BP_OK_OR_FAIL(bp__bn_forward_train(y, &mean, &invstd, &var, x, NULL, NULL, M, 1, 1e-5, NULL));
    for (int64_t r = 0; r < M; r++) yerr = fmax(yerr, fabs((double)y[r] - ((double)x[r] - m) / sqrt(v + 1e-5)));
    print_message("case %d: var relative error %.3g (PyTorch %.3g), max |y error| %.3g (PyTorch %.3g)\n", (int)kind,
                  v > 0 ? fabs((double)var - v) / v : fabs((double)var), torch_var_rel, yerr, torch_y_abs);
    if (kind == HARD_CONSTANT) { /* exact (the double reference itself is not: its sum rounds) */
        assert_true(var == 0 && mean == (bp_real)0.1);
        for (int64_t r = 0; r < M; r++) assert_true(y[r] == 0);
    } else {
        assert_true(fabs((double)var - v) <= torch_var_rel * v);
        assert_true(yerr <= torch_y_abs);
    }
    free(x);
    free(y);
}

static void test_hard_statistics(void **s)
{
    (void)s;
    check_hard_statistics(HARD_OUTLIER, 8.9e-8, 5.2e-6);
    check_hard_statistics(HARD_OFFSET, 2.0e-7, 7.9e-4);
    check_hard_statistics(HARD_CONSTANT, 0, 0);
}

/* Float64 reference of every kernel on an (M, C) problem. */
typedef struct ref_out {
    double *y, *dx, *mean, *var, *invstd, *ds, *db, *ye, *dxe, *dse, *dbe;
    double *abs_ds, *abs_db, *abs_dse; /* sums of |term|, for the error bound of each sum */
} ref_out;

static void ref_free(ref_out *r)
{
    free(r->y); free(r->dx); free(r->mean); free(r->var); free(r->invstd); free(r->ds);
    free(r->db); free(r->ye); free(r->dxe); free(r->dse); free(r->dbe);
    free(r->abs_ds); free(r->abs_db); free(r->abs_dse);
}

/* Float64 reference of every kernel. The training backward is evaluated at the mean
 * and invstd the kernel's forward saved (kmean, kinvstd), as the kernel is: rounding
 * the mean to bp_real moves x - mean by up to half an ulp of |mean|, which a channel
 * with a small spread (M = 2) amplifies by invstd^2, and that is the forward's
 * rounding, not the backward's. */
static ref_out reference(const bp_real *x, const bp_real *dy, const bp_real *scale,
                         const bp_real *bias, const bp_real *rm, const bp_real *rv,
                         const bp_real *kmean, const bp_real *kinvstd, int64_t M, int64_t C,
                         double eps)
{
    ref_out o;
    size_t n = (size_t)(M * C), c8 = sizeof(double) * (size_t)C;
    o.y = malloc(n * 8); o.dx = malloc(n * 8); o.ye = malloc(n * 8); o.dxe = malloc(n * 8);
    o.mean = calloc(1, c8); o.var = calloc(1, c8); o.invstd = calloc(1, c8); o.ds = calloc(1, c8);
    o.db = calloc(1, c8); o.dse = calloc(1, c8); o.dbe = calloc(1, c8);
    o.abs_ds = calloc(1, c8); o.abs_db = calloc(1, c8); o.abs_dse = calloc(1, c8);
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0, sdy = 0, sdyx = 0;
        for (int64_t r = 0; r < M; r++) m += x[r * C + c];
        m /= (double)M;
        for (int64_t r = 0; r < M; r++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
        v /= (double)M;
        double is = 1.0 / sqrt(v + eps), g = scale[c];
        for (int64_t r = 0; r < M; r++) o.y[r * C + c] = (x[r * C + c] - m) * is * g + bias[c];
        o.mean[c] = m; o.var[c] = v; o.invstd[c] = is;
        m = kmean[c];
        is = kinvstd[c];
        for (int64_t r = 0; r < M; r++) {
            double xh = (x[r * C + c] - m) * is;
            sdy += dy[r * C + c];
            sdyx += dy[r * C + c] * xh;
            o.abs_db[c] += fabs(dy[r * C + c]);
            o.abs_ds[c] += fabs(dy[r * C + c] * xh);
        }
        for (int64_t r = 0; r < M; r++) {
            double xh = (x[r * C + c] - m) * is;
            o.dx[r * C + c] = (dy[r * C + c] - sdy / (double)M - xh * sdyx / (double)M) * is * g;
        }
        o.ds[c] = sdyx;
        o.db[c] = sdy;
        double ie = 1.0 / sqrt((double)rv[c] + eps);
        for (int64_t r = 0; r < M; r++) {
            double xh = (x[r * C + c] - rm[c]) * ie;
            o.ye[r * C + c] = xh * g + bias[c];
            o.dxe[r * C + c] = dy[r * C + c] * ie * g;
            o.dse[c] += dy[r * C + c] * xh;
            o.abs_dse[c] += fabs(dy[r * C + c] * xh);
            o.dbe[c] += dy[r * C + c];
        }
    }
    return o;
}

/* |got - want| <= ATOL + rel*abssum: the error bound of a sum of terms whose |terms| add to abssum. */
static void expect_sum_close(const char *what, const bp_real *got, const double *want,
                             const double *abssum, int64_t C, double rel)
{
    for (int64_t c = 0; c < C; c++)
        if (!(fabs((double)got[c] - want[c]) <= ATOL + rel * abssum[c]))
            fail_msg("%s[%lld] = %.9g, expected %.9g (sum of |terms| %g)", what, (long long)c,
                     (double)got[c], want[c], abssum[c]);
}

/* Shapes that go through many blocks and chunks, ragged ends, the u-rows lanes
 * (C = 1, 5, 19, 64) and the channel tiles (C = 300, 600), against float64. */
static void check_against_reference(int64_t M, int64_t C)
{
    print_message("reference check M = %lld, C = %lld\n", (long long)M, (long long)C);
    rng_seed((uint64_t)(M * 131 + C));
    size_t n = (size_t)(M * C);
    bp_real *x = random_mc(M, C, 3.0, 2.0), *dy = random_mc(M, C, 0.0, 1.0);
    bp_real *scale = random_mc(1, C, 0.0, 1.0), *bias = random_mc(1, C, 0.0, 1.0);
    bp_real *rm = random_mc(1, C, 1.0, 1.0), *rv = reals((size_t)C);
    for (int64_t c = 0; c < C; c++) rv[c] = (bp_real)(0.5 + rng_uniform() * 4);
    bp_real *y = reals(n), *dx = reals(n), *mean = reals((size_t)C), *invstd = reals((size_t)C);
    bp_real *var = reals((size_t)C), *ds = calloc((size_t)C, sizeof(bp_real));
    bp_real *db = calloc((size_t)C, sizeof(bp_real));
    const double eps = 1e-3;
    /* dscale and dbias are sums of M terms that cancel; the kernels add fewer than 64
     * terms per lane in bp_real (a block of 8192 elements over at least 128 lanes)
     * and everything after that in double, so their error is below 64 units of
     * roundoff of sum|term| (4e-6 of it in float32), whatever the result. */
    const double srel = IS_F32 ? 4e-6 : 1e-14;
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, bias, M, C, eps, NULL));
    ref_out o = reference(x, dy, scale, bias, rm, rv, mean, invstd, M, C, eps);
    expect_close("mean", mean, o.mean, C, ATOL, RTOL);
    expect_close("var", var, o.var, C, ATOL, RTOL);
    expect_close("invstd", invstd, o.invstd, C, ATOL, RTOL);
    expect_close("y", y, o.y, (int64_t)n, ATOL, RTOL);
    BP_OK_OR_FAIL(bp__bn_backward_train(dx, ds, db, dy, x, mean, invstd, scale, M, C, NULL));
    expect_close("dx", dx, o.dx, (int64_t)n, ATOL, RTOL);
    expect_sum_close("dscale", ds, o.ds, o.abs_ds, C, srel);
    expect_sum_close("dbias", db, o.db, o.abs_db, C, srel);
    BP_OK_OR_FAIL(bp__bn_forward_eval(y, x, rm, rv, scale, bias, M, C, eps, NULL));
    expect_close("y_eval", y, o.ye, (int64_t)n, ATOL, RTOL);
    memset(ds, 0, sizeof(bp_real) * (size_t)C);
    memset(db, 0, sizeof(bp_real) * (size_t)C);
    BP_OK_OR_FAIL(bp__bn_backward_eval(dx, ds, db, dy, x, rm, rv, scale, M, C, eps, NULL));
    expect_close("dx_eval", dx, o.dxe, (int64_t)n, ATOL, RTOL);
    expect_sum_close("dscale_eval", ds, o.dse, o.abs_dse, C, srel);
    expect_sum_close("dbias_eval", db, o.dbe, o.abs_db, C, srel);
    ref_free(&o);
    free(x); free(dy); free(scale); free(bias); free(rm); free(rv); free(y); free(dx);
    free(mean); free(invstd); free(var); free(ds); free(db);
}

static void test_reference_shapes(void **s)
{
    (void)s;
    check_against_reference(100001, 1);
    check_against_reference(40007, 5);
    check_against_reference(20011, 19);
    check_against_reference(4099, 64);
    check_against_reference(257, 300);
    check_against_reference(33, 600);
    check_against_reference(2, 7);
    check_against_reference(3, 1);
}

/* ------------------------------------------------------------------ fast against reference
 *
 * Every fast kernel (batchnorm_fast.c, batchnorm_relu_pool_fast.c) against the
 * plain reference kernel of the same math (batchnorm_ref.c: double sums, two
 * passes, each output rounded once), on shapes from M = 2 to over 100k rows
 * and C = 1 to 300 channels: odd sizes, ragged blocks and chunks, the u-rows
 * lanes (C <= 256) and the channel tiles (C > 256), parallel sizes (M*C >=
 * 32768), ReLU on and off, train and eval, forward and backward.
 *
 * Tolerances, with u the unit roundoff of bp_real (6e-8 float, 1.1e-16 double):
 *  - mean, var, invstd: see the comment at their check (sums in double lanes).
 *  - y = (x - mean)*a + b, a = invstd*scale: the fast kernel rounds x - mean,
 *    the product and the sum (3u), a (2u: invstd and the product) and the
 *    statistics; the reference rounds y once. Against the magnitude of the
 *    terms, T = (|x| + |mean|)*|a| + |b|, that is below 8u*T; we allow 16u*T,
 *    plus what the statistics' errors (bounded at their check) move y by.
 *  - the parameter sums (dscale, dbias, and the two sums inside dx): each lane
 *    adds at most 64 terms in bp_real (a block of 8192 elements over at least
 *    128 lanes), the rest in double, so each is within 64u of the sum of
 *    |terms| (the reference's error is below u of it).
 *  - dx = dz*k1 + (x - mean)*k2 + k3, k1 = invstd*scale, k2 = -k1*invstd*S2/M,
 *    k3 = -k1*S1/M (S1 = sum dz, S2 = sum dz*(x - mean)): four roundings of
 *    the terms (8u of |k1|*(|dz| + |xhat|*A2 + A1), A1 = sum|dz|/M,
 *    A2 = sum|dz*xhat|/M) plus the sums' 64u: below 72u*|k1|*(|dz| + |xhat|*A2 + A1).
 *  - eval: dx = dz*a, three roundings (4u*|dz*a|); y as above.
 * The ReLU masks are exact on both sides (the same bp_real expression). */

#define UNIT_ROUNDOFF (IS_F32 ? 5.96e-8 : 1.11e-16)

typedef struct vs_case {
    int64_t M, C;
    bool relu;
} vs_case;

static void expect_within(const char *what, int64_t M, int64_t C, int64_t i, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("M %lld C %lld: %s[%lld] = %.10g, reference %.10g (tolerance %.3g)", (long long)M, (long long)C,
                 what, (long long)i, got, want, tol);
}

/* Per channel: A1 = sum|dz|/M and A2 = sum|dz*xhat|/M, with the mask of relu. */
static void abs_means(double *A1, double *A2, const bp_real *dy, const bp_real *x, const bp_real *mean,
                      const bp_real *is, const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, bool relu)
{
    for (int64_t c = 0; c < C; c++) {
        A1[c] = A2[c] = 0;
        bp_real a = is[c] * scale[c];
        for (int64_t r = 0; r < M; r++) {
            int64_t i = r * C + c;
            double dz = relu && !(bn_affine(x[i], mean[c], a, bias[c]) > 0) ? 0 : (double)dy[i];
            A1[c] += fabs(dz) / (double)M;
            A2[c] += fabs(dz * ((double)x[i] - (double)mean[c]) * (double)is[c]) / (double)M;
        }
    }
}

static void check_fast_vs_ref(vs_case k)
{
    const int64_t M = k.M, C = k.C;
    const size_t n = (size_t)(M * C);
    const double u = UNIT_ROUNDOFF, eps = 1e-5;
    rng_seed((uint64_t)(M * 1009 + C * 7 + k.relu));
    bp_real *x = random_mc(M, C, 3.0, 2.0), *dy = random_mc(M, C, 0.0, 1.0);
    bp_real *scale = random_mc(1, C, 0.5, 1.0), *bias = random_mc(1, C, 0.0, 0.5);
    bp_real *rm = random_mc(1, C, 1.0, 1.0), *rv = reals((size_t)C);
    for (int64_t c = 0; c < C; c++) rv[c] = (bp_real)(0.5 + rng_uniform() * 4);
    bp_real *yf = reals(n), *yr = reals(n), *dxf = reals(n), *dxr = reals(n);
    bp_real *mf = reals((size_t)C), *mr = reals((size_t)C), *isf = reals((size_t)C), *isr = reals((size_t)C);
    bp_real *vf = reals((size_t)C), *vr_ = reals((size_t)C);
    bp_real *dsf = calloc((size_t)C, sizeof(bp_real)), *dsr = calloc((size_t)C, sizeof(bp_real));
    bp_real *dbf = calloc((size_t)C, sizeof(bp_real)), *dbr = calloc((size_t)C, sizeof(bp_real));
    double *A1 = malloc(sizeof(double) * (size_t)C), *A2 = malloc(sizeof(double) * (size_t)C);
    double *mean_err = malloc(sizeof(double) * (size_t)C), *is_rel = malloc(sizeof(double) * (size_t)C);

    /* training forward */
    BP_OK_OR_FAIL(k.relu ? bp__bn_relu_forward_train(yf, mf, isf, vf, x, scale, bias, M, C, eps, NULL)
                         : bp__bn_forward_train(yf, mf, isf, vf, x, scale, bias, M, C, eps, NULL));
    bp__bn_forward_ref(yr, mr, isr, vr_, x, scale, bias, M, C, eps, k.relu);
    for (int64_t c = 0; c < C; c++) {
        /* The statistics are shifted sums in double lanes (at most 64 terms per
         * lane, then merged in double): within 64 units of double roundoff of
         * the sum of squared deviations from the shift, which is at most
         * var + D^2 per row (D: the largest |x - mean|, a bound on the shift's
         * distance), plus the final rounding to bp_real (half a unit). */
        double D = 0;
        for (int64_t r = 0; r < M; r++) D = fmax(D, fabs((double)x[r * C + c] - (double)mr[c]));
        /* (Each side rounds once: 2u between them.) */
        const double vv = (double)vr_[c], dbl = 64 * 1.11e-16 * (vv + D * D);
        mean_err[c] = 64 * 1.11e-16 * D;
        is_rel[c] = dbl / vv;
        expect_within("mean", M, C, c, mf[c], mr[c], 2 * u * fabs((double)mr[c]) + mean_err[c]);
        expect_within("var", M, C, c, vf[c], vr_[c], 2 * u * vv + dbl);
        expect_within("invstd", M, C, c, isf[c], isr[c], (2 * u + is_rel[c]) * (double)isr[c]);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t c = (int64_t)i % C;
        double a = fabs((double)isr[c] * (double)scale[c]);
        double T = (fabs((double)x[i]) + fabs((double)mr[c])) * a + fabs((double)bias[c]);
        /* plus what the statistics' own errors move y by */
        double stat = fabs((double)x[i] - (double)mr[c]) * a * is_rel[c] + a * mean_err[c];
        expect_within("y", M, C, (int64_t)i, yf[i], yr[i], 16 * u * T + stat);
    }
    /* training backward, both from the fast forward's statistics */
    BP_OK_OR_FAIL(k.relu ? bp__bn_relu_backward_train(dxf, dsf, dbf, dy, x, mf, isf, scale, bias, M, C, NULL)
                         : bp__bn_backward_train(dxf, dsf, dbf, dy, x, mf, isf, scale, M, C, NULL));
    bp__bn_backward_ref(dxr, dsr, dbr, dy, x, mf, isf, scale, bias, M, C, k.relu);
    abs_means(A1, A2, dy, x, mf, isf, scale, bias, M, C, k.relu);
    for (int64_t c = 0; c < C; c++) {
        expect_within("dscale", M, C, c, dsf[c], dsr[c], 65 * u * A2[c] * (double)M);
        expect_within("dbias", M, C, c, dbf[c], dbr[c], 65 * u * A1[c] * (double)M);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t c = (int64_t)i % C;
        double k1 = fabs((double)isf[c] * (double)scale[c]);
        double xhat = fabs(((double)x[i] - (double)mf[c]) * (double)isf[c]);
        expect_within("dx", M, C, (int64_t)i, dxf[i], dxr[i], 72 * u * k1 * (fabs((double)dy[i]) + xhat * A2[c] + A1[c]));
    }
    /* eval forward and backward on running statistics */
    BP_OK_OR_FAIL(k.relu ? bp__bn_relu_forward_eval(yf, x, rm, rv, scale, bias, M, C, eps, NULL)
                         : bp__bn_forward_eval(yf, x, rm, rv, scale, bias, M, C, eps, NULL));
    bp__bn_forward_eval_ref(yr, x, rm, rv, scale, bias, M, C, eps, k.relu);
    memset(dsf, 0, sizeof(bp_real) * (size_t)C); memset(dsr, 0, sizeof(bp_real) * (size_t)C);
    memset(dbf, 0, sizeof(bp_real) * (size_t)C); memset(dbr, 0, sizeof(bp_real) * (size_t)C);
    BP_OK_OR_FAIL(k.relu ? bp__bn_relu_backward_eval(dxf, dsf, dbf, dy, x, rm, rv, scale, bias, M, C, eps, NULL)
                         : bp__bn_backward_eval(dxf, dsf, dbf, dy, x, rm, rv, scale, M, C, eps, NULL));
    bp__bn_backward_eval_ref(dxr, dsr, dbr, dy, x, rm, rv, scale, bias, M, C, eps, k.relu);
    for (int64_t c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)rv[c] + eps), a = fabs(is * (double)scale[c]), s1 = 0, s2 = 0;
        for (int64_t r = 0; r < M; r++) {
            int64_t i = r * C + c;
            double T = (fabs((double)x[i]) + fabs((double)rm[c])) * a + fabs((double)bias[c]);
            expect_within("y_eval", M, C, i, yf[i], yr[i], 16 * u * T);
            expect_within("dx_eval", M, C, i, dxf[i], dxr[i], 4 * u * fabs((double)dy[i]) * a + 1e-300);
            s1 += fabs((double)dy[i]);
            s2 += fabs((double)dy[i] * ((double)x[i] - (double)rm[c]) * is);
        }
        expect_within("dscale_eval", M, C, c, dsf[c], dsr[c], 65 * u * s2);
        expect_within("dbias_eval", M, C, c, dbf[c], dbr[c], 65 * u * s1);
    }
    free(x); free(dy); free(scale); free(bias); free(rm); free(rv); free(yf); free(yr); free(dxf); free(dxr);
    free(mf); free(mr); free(isf); free(isr); free(vf); free(vr_); free(dsf); free(dsr); free(dbf); free(dbr);
    free(A1); free(A2); free(mean_err); free(is_rel);
}

/* The fused BatchNorm+ReLU+MaxPool pair against its reference (the reference
 * forward then a plain pool; the pooled dy scattered to each window's first
 * maximum, then the reference backward), tolerances as above. */
static void check_pool_vs_ref(const bp__bn_pool3d *g, int64_t C)
{
    const int64_t M = g->B * g->in[0] * g->in[1] * g->in[2], Q = g->B * g->out[0] * g->out[1] * g->out[2] * C;
    const double u = UNIT_ROUNDOFF, eps = 1e-5;
    rng_seed((uint64_t)(M * 31 + C));
    bp_real *x = random_mc(M, C, 1.0, 2.0), *dy = random_mc(Q / C, C, 0.0, 1.0);
    bp_real *scale = random_mc(1, C, 0.5, 1.0), *bias = random_mc(1, C, 0.0, 0.5);
    bp_real *yf = reals((size_t)Q), *yr = reals((size_t)Q), *xaf = reals((size_t)Q), *xar = reals((size_t)Q);
    int32_t *argf = malloc(sizeof(int32_t) * (size_t)Q), *argr = malloc(sizeof(int32_t) * (size_t)Q);
    bp_real *dxf = reals((size_t)(M * C)), *dxr = reals((size_t)(M * C));
    bp_real *mf = reals((size_t)C), *mr = reals((size_t)C), *isf = reals((size_t)C), *isr = reals((size_t)C);
    bp_real *dsf = calloc((size_t)C, sizeof(bp_real)), *dsr = calloc((size_t)C, sizeof(bp_real));
    bp_real *dbf = calloc((size_t)C, sizeof(bp_real)), *dbr = calloc((size_t)C, sizeof(bp_real));
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_forward_train(yf, argf, xaf, mf, isf, NULL, x, scale, bias, g, C, eps, NULL));
    bp_real *vr_ = reals((size_t)C);
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_forward_ref(yr, argr, xar, mr, isr, vr_, x, scale, bias, g, C, eps));
    double *Dc = calloc((size_t)C, sizeof(double)); /* the statistics' errors as in check_fast_vs_ref */
    for (int64_t i = 0; i < M * C; i++) Dc[i % C] = fmax(Dc[i % C], fabs((double)x[i] - (double)mr[i % C]));
    for (int64_t q = 0; q < Q; q++) {
        int64_t c = q % C;
        double D = Dc[c];
        double a = fabs((double)isr[c] * (double)scale[c]), vv = (double)vr_[c];
        double is_rel = 64 * 1.11e-16 * (vv + D * D) / vv, mean_err = 64 * 1.11e-16 * D;
        double T = (fabs((double)xar[q]) + fabs((double)mr[c])) * a + fabs((double)bias[c]);
        double stat = fabs((double)xar[q] - (double)mr[c]) * a * is_rel + a * mean_err;
        expect_within("pooled y", M, C, q, yf[q], yr[q], 16 * u * T + stat);
    }
    free(vr_);
    free(Dc);
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_backward_train(dxf, dsf, dbf, dy, argf, xaf, x, mf, isf, scale, bias, g, C, NULL));
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_backward_ref(dxr, dsr, dbr, dy, x, mf, isf, scale, bias, g, C));
    double *A1 = calloc((size_t)C, sizeof(double)), *A2 = calloc((size_t)C, sizeof(double));
    for (int64_t q = 0; q < Q; q++) { /* the pooled terms are the only nonzero dz */
        int64_t c = q % C;
        A1[c] += fabs((double)dy[q]) / (double)M;
        A2[c] += fabs((double)dy[q] * ((double)xaf[q] - (double)mf[c]) * (double)isf[c]) / (double)M;
    }
    for (int64_t c = 0; c < C; c++) {
        /* the fused backward sums the pooled terms in double: within u of |terms| */
        expect_within("pooled dscale", M, C, c, dsf[c], dsr[c], 65 * u * A2[c] * (double)M);
        expect_within("pooled dbias", M, C, c, dbf[c], dbr[c], 65 * u * A1[c] * (double)M);
    }
    double dymax = 0;
    for (int64_t q = 0; q < Q; q++) dymax = fmax(dymax, fabs((double)dy[q]));
    for (int64_t i = 0; i < M * C; i++) {
        int64_t c = i % C;
        double k1 = fabs((double)isf[c] * (double)scale[c]);
        double xhat = fabs(((double)x[i] - (double)mf[c]) * (double)isf[c]);
        /* dz is dy at a maximum, else 0: |dz| <= the largest pooled |dy| */
        expect_within("pooled dx", M, C, i, dxf[i], dxr[i], 72 * u * k1 * (dymax + xhat * A2[c] + A1[c]));
    }
    free(x); free(dy); free(scale); free(bias); free(yf); free(yr); free(xaf); free(xar); free(argf); free(argr);
    free(dxf); free(dxr); free(mf); free(mr); free(isf); free(isr); free(dsf); free(dsr); free(dbf); free(dbr);
    free(A1); free(A2);
}

static void test_fast_vs_ref(void **s)
{
    (void)s;
    static const int64_t shapes[][2] = {
        {2, 1},     {2, 7},     {3, 1},      {2, 300},  {5, 3},     {17, 255},  {33, 256},   {31, 257},
        {129, 300}, {1000, 1},  {8191, 3},   {4099, 64}, {20011, 19}, {70001, 2}, {40007, 5}, {100003, 1},
        {257, 128}, {1031, 200},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int relu = 0; relu < 2; relu++) check_fast_vs_ref((vs_case){shapes[i][0], shapes[i][1], relu});
    const bp__bn_pool3d tiled = {.B = 2, .in = {8, 8, 8}, .out = {4, 4, 4}, .k = {2, 2, 2}, .s = {2, 2, 2}};
    const bp__bn_pool3d odd = {.B = 3, .in = {9, 7, 11}, .out = {4, 3, 5}, .k = {2, 2, 2}, .s = {2, 2, 2}};
    const bp__bn_pool3d gaps = {.B = 2, .in = {12, 13, 22}, .out = {4, 7, 8}, .k = {2, 1, 2}, .s = {3, 2, 3}};
    check_pool_vs_ref(&tiled, 1);
    check_pool_vs_ref(&tiled, 19);
    check_pool_vs_ref(&odd, 16);
    check_pool_vs_ref(&gaps, 5);
    check_pool_vs_ref(&odd, 33);
}

/* ------------------------------------------------------------------ fused BN+ReLU */

/* The fused kernels against BN then ReLU (y > 0 ? y : 0) and ReLU's backward
 * (dy where y > 0) then BN's backward: bit for bit, since they compute the same
 * expressions in the same order. */
static void check_relu_fusion(int64_t M, int64_t C)
{
    rng_seed((uint64_t)(M + 17 * C));
    size_t n = (size_t)(M * C);
    bp_real *x = random_mc(M, C, 1.0, 2.0), *dy = random_mc(M, C, 0.0, 1.0);
    bp_real *scale = random_mc(1, C, 0.5, 1.0), *bias = random_mc(1, C, 0.0, 0.5);
    bp_real *rm = random_mc(1, C, 1.0, 1.0), *rv = reals((size_t)C);
    for (int64_t c = 0; c < C; c++) rv[c] = (bp_real)(0.5 + rng_uniform() * 4);
    bp_real *y1 = reals(n), *y2 = reals(n), *dz = reals(n), *dx1 = reals(n), *dx2 = reals(n);
    bp_real *m1 = reals((size_t)C), *m2 = reals((size_t)C), *i1 = reals((size_t)C), *i2 = reals((size_t)C);
    bp_real *v1 = reals((size_t)C), *v2 = reals((size_t)C);
    bp_real *ds1 = calloc((size_t)C, sizeof(bp_real)), *ds2 = calloc((size_t)C, sizeof(bp_real));
    bp_real *db1 = calloc((size_t)C, sizeof(bp_real)), *db2 = calloc((size_t)C, sizeof(bp_real));
    const double eps = 1e-5;

    BP_OK_OR_FAIL(bp__bn_relu_forward_train(y1, m1, i1, v1, x, scale, bias, M, C, eps, NULL));
    BP_OK_OR_FAIL(bp__bn_forward_train(y2, m2, i2, v2, x, scale, bias, M, C, eps, NULL));
    int64_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        dz[i] = y2[i] > 0 ? dy[i] : 0;
        y2[i] = y2[i] > 0 ? y2[i] : 0;
        zeros += y2[i] == 0;
    }
    assert_true(zeros > 0 && zeros < (int64_t)n); /* the mask matters */
    expect_same_bits("relu y", y1, y2, (int64_t)n);
    expect_same_bits("relu mean", m1, m2, C);
    expect_same_bits("relu invstd", i1, i2, C);
    expect_same_bits("relu var", v1, v2, C);
    BP_OK_OR_FAIL(bp__bn_relu_backward_train(dx1, ds1, db1, dy, x, m1, i1, scale, bias, M, C, NULL));
    BP_OK_OR_FAIL(bp__bn_backward_train(dx2, ds2, db2, dz, x, m2, i2, scale, M, C, NULL));
    expect_same_bits("relu dx", dx1, dx2, (int64_t)n);
    expect_same_bits("relu dscale", ds1, ds2, C);
    expect_same_bits("relu dbias", db1, db2, C);

    BP_OK_OR_FAIL(bp__bn_relu_forward_eval(y1, x, rm, rv, scale, bias, M, C, eps, NULL));
    BP_OK_OR_FAIL(bp__bn_forward_eval(y2, x, rm, rv, scale, bias, M, C, eps, NULL));
    for (size_t i = 0; i < n; i++) {
        dz[i] = y2[i] > 0 ? dy[i] : 0;
        y2[i] = y2[i] > 0 ? y2[i] : 0;
    }
    expect_same_bits("relu eval y", y1, y2, (int64_t)n);
    memset(ds1, 0, sizeof(bp_real) * (size_t)C); memset(ds2, 0, sizeof(bp_real) * (size_t)C);
    memset(db1, 0, sizeof(bp_real) * (size_t)C); memset(db2, 0, sizeof(bp_real) * (size_t)C);
    BP_OK_OR_FAIL(bp__bn_relu_backward_eval(dx1, ds1, db1, dy, x, rm, rv, scale, bias, M, C, eps, NULL));
    BP_OK_OR_FAIL(bp__bn_backward_eval(dx2, ds2, db2, dz, x, rm, rv, scale, M, C, eps, NULL));
    expect_same_bits("relu eval dx", dx1, dx2, (int64_t)n);
    expect_same_bits("relu eval dscale", ds1, ds2, C);
    expect_same_bits("relu eval dbias", db1, db2, C);

    free(x); free(dy); free(scale); free(bias); free(rm); free(rv); free(y1); free(y2); free(dz);
    free(dx1); free(dx2); free(m1); free(m2); free(i1); free(i2); free(v1); free(v2);
    free(ds1); free(ds2); free(db1); free(db2);
}

static void test_relu_fusion(void **s)
{
    (void)s;
    check_relu_fusion(5, 3);
    check_relu_fusion(20011, 19);
    check_relu_fusion(4096, 16);
    check_relu_fusion(131, 300);
}

/* ------------------------------------------------------------------ determinism, in-place, workspace */

/* Runs every kernel at 1 and at 2 OpenMP threads: the results must be identical bits. */
static void check_threads(int64_t M, int64_t C)
{
    rng_seed((uint64_t)(3 * M + C));
    size_t n = (size_t)(M * C);
    bp_real *x = random_mc(M, C, 5.0, 3.0), *dy = random_mc(M, C, 0.0, 1.0);
    bp_real *scale = random_mc(1, C, 0.5, 1.0), *bias = random_mc(1, C, 0.0, 0.5);
    bp_real *out[2][8];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        assert_int_equal(omp_get_max_threads(), t + 1);
        bp_real *y = reals(n), *dx = reals(n), *dxr = reals(n), *mean = reals((size_t)C);
        bp_real *invstd = reals((size_t)C), *var = reals((size_t)C);
        bp_real *ds = calloc((size_t)C, sizeof(bp_real)), *db = calloc((size_t)C, sizeof(bp_real));
        BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
        BP_OK_OR_FAIL(bp__bn_backward_train(dx, ds, db, dy, x, mean, invstd, scale, M, C, NULL));
        BP_OK_OR_FAIL(bp__bn_relu_backward_train(dxr, ds, db, dy, x, mean, invstd, scale, bias, M, C, NULL));
        BP_OK_OR_FAIL(bp__bn_backward_eval(dxr, ds, db, dy, x, mean, var, scale, M, C, 1e-5, NULL));
        bp_real *o[8] = {y, dx, dxr, mean, invstd, var, ds, db};
        memcpy(out[t], o, sizeof o);
    }
    omp_set_num_threads(2);
    const char *names[8] = {"y", "dx", "dx relu/eval", "mean", "invstd", "var", "dscale", "dbias"};
    const int64_t sizes[8] = {(int64_t)n, (int64_t)n, (int64_t)n, C, C, C, C, C};
    for (int i = 0; i < 8; i++) {
        expect_same_bits(names[i], out[0][i], out[1][i], sizes[i]);
        free(out[0][i]);
        free(out[1][i]);
    }
    free(x); free(dy); free(scale); free(bias);
}

static void test_threads_bitwise(void **s)
{
    (void)s;
    check_threads(30011, 19); /* 70 blocks in 64 chunks */
    check_threads(16384, 16);
    check_threads(3001, 300);
}

/* y may be x, dx may be dy; an explicit workspace gives the same bits as an internal one. */
static void test_inplace_and_workspace(void **s)
{
    (void)s;
    const int64_t M = 5003, C = 7;
    size_t n = (size_t)(M * C);
    rng_seed(5);
    bp_real *x = random_mc(M, C, 2.0, 1.0), *dy = random_mc(M, C, 0.0, 1.0);
    bp_real *y = reals(n), *yi = reals(n), *dx = reals(n), *dyi = reals(n);
    bp_real mean[7], invstd[7], var[7], mean2[7], invstd2[7], var2[7];
    size_t wb = bp__bn_workspace_size(M, C);
    assert_true(wb > 0);
    assert_int_equal(bp__bn_workspace_size(0, C), 0);
    assert_int_equal(bp__bn_workspace_size(M, 0), 0);
    void *work = malloc(wb);
    memset(work, 0xff, wb); /* garbage (NaN patterns) must not leak into results */
    BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, M, C, 1e-5, NULL));
    memcpy(yi, x, sizeof(bp_real) * n);
    BP_OK_OR_FAIL(bp__bn_forward_train(yi, mean2, invstd2, var2, yi, NULL, NULL, M, C, 1e-5, work));
    expect_same_bits("in-place y", y, yi, (int64_t)n);
    expect_same_bits("workspace mean", mean, mean2, C);
    expect_same_bits("workspace var", var, var2, C);
    BP_OK_OR_FAIL(bp__bn_backward_train(dx, NULL, NULL, dy, x, mean, invstd, NULL, M, C, NULL));
    memcpy(dyi, dy, sizeof(bp_real) * n);
    BP_OK_OR_FAIL(bp__bn_backward_train(dyi, NULL, NULL, dyi, x, mean, invstd, NULL, M, C, work));
    expect_same_bits("in-place dx", dx, dyi, (int64_t)n);
    memcpy(yi, x, sizeof(bp_real) * n);
    BP_OK_OR_FAIL(bp__bn_forward_eval(y, x, mean, var, NULL, NULL, M, C, 1e-5, NULL));
    BP_OK_OR_FAIL(bp__bn_forward_eval(yi, yi, mean, var, NULL, NULL, M, C, 1e-5, work));
    expect_same_bits("in-place eval y", y, yi, (int64_t)n);
    free(x); free(dy); free(y); free(yi); free(dx); free(dyi); free(work);
}

/* Outputs of 16 MiB and more are written with streaming stores when they are
 * vector-aligned; the same call on a misaligned output takes the plain path.
 * Both must give the same bits (same roundings, no FMA contraction). */
static void test_streaming_stores_match(void **s)
{
    (void)s;
#if !defined(__AVX__)
    skip(); /* built without AVX: the kernels have no streaming path (e.g. the valgrind build) */
#endif
    const int64_t M = (int64_t)(IS_F32 ? 400000 : 200000), C = 16;
    const size_t n = (size_t)(M * C);
    rng_seed(99);
    bp_real *x = random_mc(M, C, 1.0, 2.0), *dy = random_mc(M, C, 0.0, 1.0);
    bp_real *scale = random_mc(1, C, 0.5, 1.0), *bias = random_mc(1, C, 0.0, 0.5);
    bp_real *a = NULL, *b = NULL;
    assert_int_equal(posix_memalign((void **)&a, 64, sizeof(bp_real) * n), 0);
    assert_int_equal(posix_memalign((void **)&b, 64, sizeof(bp_real) * (n + 1)), 0);
    bp_real *bm = b + 1; /* not vector-aligned: no streaming */
    bp_real mean[16], invstd[16], var[16], ds[16], db[16];
    for (int relu = 0; relu < 2; relu++) {
        if (relu) {
            BP_OK_OR_FAIL(bp__bn_relu_forward_train(a, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
            BP_OK_OR_FAIL(bp__bn_relu_forward_train(bm, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
        } else {
            BP_OK_OR_FAIL(bp__bn_forward_train(a, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
            BP_OK_OR_FAIL(bp__bn_forward_train(bm, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
        }
        expect_same_bits("streamed y", a, bm, (int64_t)n);
        if (relu) {
            BP_OK_OR_FAIL(bp__bn_relu_backward_train(a, ds, db, dy, x, mean, invstd, scale, bias, M, C, NULL));
            BP_OK_OR_FAIL(bp__bn_relu_backward_train(bm, ds, db, dy, x, mean, invstd, scale, bias, M, C, NULL));
        } else {
            BP_OK_OR_FAIL(bp__bn_backward_train(a, ds, db, dy, x, mean, invstd, scale, M, C, NULL));
            BP_OK_OR_FAIL(bp__bn_backward_train(bm, ds, db, dy, x, mean, invstd, scale, M, C, NULL));
        }
        expect_same_bits("streamed dx", a, bm, (int64_t)n);
        BP_OK_OR_FAIL(relu ? bp__bn_relu_forward_eval(a, x, mean, var, scale, bias, M, C, 1e-5, NULL)
                           : bp__bn_forward_eval(a, x, mean, var, scale, bias, M, C, 1e-5, NULL));
        BP_OK_OR_FAIL(relu ? bp__bn_relu_forward_eval(bm, x, mean, var, scale, bias, M, C, 1e-5, NULL)
                           : bp__bn_forward_eval(bm, x, mean, var, scale, bias, M, C, 1e-5, NULL));
        expect_same_bits("streamed eval y", a, bm, (int64_t)n);
    }
    /* and the streamed result is right: spot-check y against float64 */
    BP_OK_OR_FAIL(bp__bn_forward_train(a, mean, invstd, var, x, scale, bias, M, C, 1e-5, NULL));
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t r = 0; r < M; r++) m += (double)x[r * C + c];
        m /= (double)M;
        for (int64_t r = 0; r < M; r++) v += ((double)x[r * C + c] - m) * ((double)x[r * C + c] - m);
        v /= (double)M;
        for (int64_t r = 0; r < M; r += 997) {
            double want = ((double)x[r * C + c] - m) / sqrt(v + 1e-5) * (double)scale[c] + (double)bias[c];
            BP_ASSERT_CLOSE(a[r * C + c], want, ATOL, RTOL);
        }
    }
    free(x); free(dy); free(scale); free(bias); free(a); free(b);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void **s)
{
    (void)s;
    bp_real x[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, y[12], dx[12], dy[12] = {0};
    bp_real mean[3] = {0, 0, 0}, invstd[3] = {1, 1, 1}, var[3] = {1, 1, 1}, ds[3], db[3];
    bp_real rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
    const double eps = 1e-5;

    /* one value per channel while training, like PyTorch */
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, 1, 3, eps, NULL),
                  BP_EINVAL, "expected more than 1 value per channel when training, got 1");
    BP_EXPECT_ERR(bp__bn_relu_forward_train(y, mean, invstd, var, x, NULL, NULL, 0, 3, eps, NULL),
                  BP_EINVAL, "bp__bn_relu_forward_train: expected more than 1 value per channel when training, got 0");
    BP_EXPECT_ERR(bp__bn_update_running(rm, rv, mean, var, 1, 3, 0.9), BP_EINVAL,
                  "bp__bn_update_running: expected more than 1 value per channel");
    /* shapes */
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, 4, 0, eps, NULL),
                  BP_ESHAPE, "expected C >= 1 channels, got 0");
    BP_EXPECT_ERR(bp__bn_forward_eval(y, x, rm, rv, NULL, NULL, -1, 3, eps, NULL), BP_ESHAPE,
                  "bp__bn_forward_eval: expected M >= 0 rows, got -1");
    BP_EXPECT_ERR(bp__bn_backward_train(dx, ds, db, dy, x, mean, invstd, NULL, 0, 3, NULL),
                  BP_ESHAPE, "bp__bn_backward_train: expected M >= 1 rows, got 0");
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, dy, x, rm, rv, NULL, 4, -2, eps, NULL),
                  BP_ESHAPE, "bp__bn_backward_eval: expected C >= 1 channels, got -2");
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, INT64_MAX / 4, 4, eps, NULL),
                  BP_ESHAPE, "M*C overflows");
    /* NULL arguments, each named */
    BP_EXPECT_ERR(bp__bn_forward_train(NULL, mean, invstd, var, x, NULL, NULL, 4, 3, eps, NULL),
                  BP_EINVAL, "bp__bn_forward_train: y is NULL");
    BP_EXPECT_ERR(bp__bn_forward_train(y, NULL, invstd, var, x, NULL, NULL, 4, 3, eps, NULL),
                  BP_EINVAL, "mean is NULL");
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, NULL, var, x, NULL, NULL, 4, 3, eps, NULL),
                  BP_EINVAL, "invstd is NULL");
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, NULL, NULL, NULL, 4, 3, eps, NULL),
                  BP_EINVAL, "x is NULL");
    BP_EXPECT_ERR(bp__bn_update_running(NULL, rv, mean, var, 4, 3, 0.9), BP_EINVAL, "running_mean is NULL");
    BP_EXPECT_ERR(bp__bn_update_running(rm, NULL, mean, var, 4, 3, 0.9), BP_EINVAL, "running_var is NULL");
    BP_EXPECT_ERR(bp__bn_update_running(rm, rv, NULL, var, 4, 3, 0.9), BP_EINVAL, "mean is NULL");
    BP_EXPECT_ERR(bp__bn_update_running(rm, rv, mean, NULL, 4, 3, 0.9), BP_EINVAL, "var is NULL");
    {
        /* A finite biased variance near the maximum overflows once multiplied by
         * M/(M-1) = 2: an error naming the channel, and no channel is updated
         * (channel 0 would have been fine). */
        const bp_real big = IS_F32 ? (bp_real)3e38 : (bp_real)1.5e308;
        bp_real bm[3] = {1, 2, 3}, bv[3] = {4, 5, big}, orm[3] = {7, 8, 9}, orv[3] = {10, 11, 12};
        BP_EXPECT_ERR(bp__bn_update_running(orm, orv, bm, bv, 2, 3, 0.0), BP_ENUMERIC,
                      "bp__bn_update_running: channel 2's running statistics would become non-finite");
        for (int c = 0; c < 3; c++) {
            assert_true(orm[c] == (bp_real)(7 + c));
            assert_true(orv[c] == (bp_real)(10 + c));
        }
        /* in float32 the update runs in double, so with momentum 0.5 the same
         * variance halves back into range before rounding: accepted */
        if (IS_F32) {
            BP_OK_OR_FAIL(bp__bn_update_running(orm, orv, bm, bv, 2, 3, 0.5));
            assert_true(isfinite(orv[2]) && orv[2] > big / 2);
            assert_true(orv[0] == (bp_real)(0.5 * 10 + 0.5 * 4 * 2));
        }
    }
    BP_EXPECT_ERR(bp__bn_forward_eval(NULL, x, rm, rv, NULL, NULL, 4, 3, eps, NULL), BP_EINVAL, "y is NULL");
    BP_EXPECT_ERR(bp__bn_forward_eval(y, NULL, rm, rv, NULL, NULL, 4, 3, eps, NULL), BP_EINVAL, "x is NULL");
    BP_EXPECT_ERR(bp__bn_relu_forward_eval(y, x, NULL, rv, NULL, NULL, 4, 3, eps, NULL), BP_EINVAL,
                  "bp__bn_relu_forward_eval: running_mean is NULL");
    BP_EXPECT_ERR(bp__bn_forward_eval(y, x, rm, NULL, NULL, NULL, 4, 3, eps, NULL), BP_EINVAL, "running_var is NULL");
    BP_EXPECT_ERR(bp__bn_backward_train(NULL, ds, db, dy, x, mean, invstd, NULL, 4, 3, NULL), BP_EINVAL, "dx is NULL");
    BP_EXPECT_ERR(bp__bn_backward_train(dx, ds, db, NULL, x, mean, invstd, NULL, 4, 3, NULL), BP_EINVAL, "dy is NULL");
    BP_EXPECT_ERR(bp__bn_backward_train(dx, ds, db, dy, NULL, mean, invstd, NULL, 4, 3, NULL), BP_EINVAL, "x is NULL");
    BP_EXPECT_ERR(bp__bn_relu_backward_train(dx, ds, db, dy, x, NULL, invstd, NULL, NULL, 4, 3, NULL),
                  BP_EINVAL, "bp__bn_relu_backward_train: mean is NULL");
    BP_EXPECT_ERR(bp__bn_backward_train(dx, ds, db, dy, x, mean, NULL, NULL, 4, 3, NULL), BP_EINVAL, "invstd is NULL");
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, NULL, x, rm, rv, NULL, 4, 3, eps, NULL), BP_EINVAL, "dy is NULL");
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, dy, NULL, rm, rv, NULL, 4, 3, eps, NULL), BP_EINVAL,
                  "bp__bn_backward_eval: x is NULL"); /* needed for dscale */
    BP_EXPECT_ERR(bp__bn_relu_backward_eval(dx, NULL, NULL, dy, NULL, rm, rv, NULL, NULL, 4, 3, eps, NULL),
                  BP_EINVAL, "bp__bn_relu_backward_eval: x is NULL"); /* needed for the mask */
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, dy, x, NULL, rv, NULL, 4, 3, eps, NULL), BP_EINVAL, "running_mean is NULL");
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, dy, x, rm, NULL, NULL, 4, 3, eps, NULL), BP_EINVAL, "running_var is NULL");
    /* eps, momentum */
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, 4, 3, -1e-5, NULL),
                  BP_EINVAL, "expected a finite eps >= 0, got -1e-05");
    BP_EXPECT_ERR(bp__bn_forward_eval(y, x, rm, rv, NULL, NULL, 4, 3, NAN, NULL), BP_EINVAL,
                  "expected a finite eps >= 0, got nan");
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, dy, x, rm, rv, NULL, 4, 3, INFINITY, NULL),
                  BP_EINVAL, "expected a finite eps >= 0, got inf");
    BP_EXPECT_ERR(bp__bn_update_running(rm, rv, mean, var, 4, 3, 1.5), BP_EINVAL,
                  "expected momentum in [0, 1], got 1.5");
    BP_EXPECT_ERR(bp__bn_update_running(rm, rv, mean, var, 4, 3, NAN), BP_EINVAL,
                  "expected momentum in [0, 1], got nan");
    /* a misaligned workspace */
    double wbuf[64];
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, 4, 3, eps, (char *)wbuf + 4),
                  BP_EINVAL, "work must be 8-byte aligned");

    /* NaN / Inf statistics: reported with the channel, outputs untouched */
    bp_real ycopy[12], mcopy[3];
    for (int i = 0; i < 12; i++) y[i] = ycopy[i] = (bp_real)-7;
    for (int i = 0; i < 3; i++) mean[i] = mcopy[i] = (bp_real)-3;
    x[3 * 2 + 1] = NAN;
    BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, 4, 3, eps, NULL),
                  BP_ENUMERIC, "channel 1 has a non-finite batch statistic");
    expect_same_bits("y untouched", y, ycopy, 12);
    expect_same_bits("mean untouched", mean, mcopy, 3);
    x[3 * 2 + 1] = 8;
    x[3 * 1 + 2] = INFINITY;
    BP_EXPECT_ERR(bp__bn_relu_forward_train(y, mean, invstd, var, x, NULL, NULL, 4, 3, eps, NULL),
                  BP_ENUMERIC, "channel 2 has a non-finite batch statistic");
    x[3 * 1 + 2] = 6;
    if (IS_F32) { /* finite inputs whose variance overflows float */
        x[0] = (bp_real)3e38;
        x[3] = (bp_real)-3e38;
        BP_EXPECT_ERR(bp__bn_forward_train(y, mean, invstd, var, x, NULL, NULL, 4, 3, eps, NULL),
                      BP_ENUMERIC, "channel 0 has a non-finite batch statistic");
        x[0] = 1;
        x[3] = 4;
    }
    for (int i = 0; i < 3; i++) mean[i] = 0;
    /* bad running statistics in eval */
    rm[1] = NAN;
    BP_EXPECT_ERR(bp__bn_forward_eval(y, x, rm, rv, NULL, NULL, 4, 3, eps, NULL), BP_ENUMERIC,
                  "bp__bn_forward_eval: channel 1 has running_mean nan");
    expect_same_bits("eval y untouched", y, ycopy, 12);
    rm[1] = 0;
    rv[2] = -0.5;
    BP_EXPECT_ERR(bp__bn_backward_eval(dx, ds, db, dy, x, rm, rv, NULL, 4, 3, eps, NULL),
                  BP_ENUMERIC, "channel 2 has running_mean 0, running_var -0.5");
    rv[2] = INFINITY;
    BP_EXPECT_ERR(bp__bn_relu_forward_eval(y, x, rm, rv, NULL, NULL, 4, 3, eps, NULL), BP_ENUMERIC,
                  "channel 2 has running_mean 0, running_var inf");
    rv[2] = 0;
    if (IS_F32) /* 1/sqrt(1e-300) = 1e150 overflows float */
        BP_EXPECT_ERR(bp__bn_forward_eval(y, x, rm, rv, NULL, NULL, 4, 3, 1e-300, NULL), BP_ENUMERIC,
                      "channel 2 has 1/sqrt(running_var + eps) = inf");
#ifndef __SANITIZE_ADDRESS__
    /* a workspace too large to allocate (the kernel fails before touching x) */
    BP_EXPECT_ERR(bp__bn_forward_eval(y, x, rm, rv, NULL, NULL, 2, (int64_t)1 << 58, eps, NULL),
                  BP_ENOMEM, "bp__bn_forward_eval: cannot allocate");
#endif
}

#ifdef BP_REAL_DOUBLE
/* ------------------------------------------------------------------ float64 gradient checks
 *
 * Gradient checks of every backward kernel against central finite differences
 * of the matching forward kernel, all in double.
 *
 * Loss: L = sum(w * y) with a fixed random w, so dL/dy = w is the upstream gradient.
 * Central differences with step h have truncation error O(h^2 * |L'''|) and
 * rounding error O(eps_64 * sqrt(n) * |y| / h) from the n rounded outputs (L itself
 * is summed in long double). With h = 1e-5, |L'''| = O(10) and n <= 20000 both
 * are below 1e-8, so analytic and numeric derivatives agree to 1e-7 (atol and rtol). */
#define GC_H 1e-5
#define GC_TOL 1e-7

typedef enum { GC_TRAIN, GC_EVAL } gc_mode;

typedef struct gc_problem {
    int64_t M, C;
    int relu;
    gc_mode mode;
    double *x, *w, *scale, *bias, *rm, *rv;
    double eps;
} gc_problem;

/* L = sum(w * y) for the problem's forward kernel. */
static double gc_loss(const gc_problem *p)
{
    const int64_t M = p->M, C = p->C, n = M * C;
    double *y = malloc(sizeof(double) * (size_t)n), *mean = malloc(sizeof(double) * (size_t)C);
    double *invstd = malloc(sizeof(double) * (size_t)C);
    bp_status st;
    if (p->mode == GC_TRAIN)
        st = p->relu ? bp__bn_relu_forward_train(y, mean, invstd, NULL, p->x, p->scale, p->bias, M, C, p->eps, NULL)
                     : bp__bn_forward_train(y, mean, invstd, NULL, p->x, p->scale, p->bias, M, C, p->eps, NULL);
    else
        st = p->relu ? bp__bn_relu_forward_eval(y, p->x, p->rm, p->rv, p->scale, p->bias, M, C, p->eps, NULL)
                     : bp__bn_forward_eval(y, p->x, p->rm, p->rv, p->scale, p->bias, M, C, p->eps, NULL);
    BP_OK_OR_FAIL(st);
    long double L = 0;
    for (int64_t i = 0; i < n; i++) L += (long double)p->w[i] * y[i];
    free(y);
    free(mean);
    free(invstd);
    return (double)L;
}

/* (L(v + h) - L(v - h)) / 2h, restoring v. */
static double gc_numeric(const gc_problem *p, double *v)
{
    double keep = *v;
    *v = keep + GC_H;
    double lp = gc_loss(p);
    *v = keep - GC_H;
    double lm = gc_loss(p);
    *v = keep;
    return (lp - lm) / (2 * GC_H);
}

static void gc_expect(const char *what, int64_t i, double analytic, double numeric)
{
    if (!(fabs(analytic - numeric) <= GC_TOL + GC_TOL * fabs(numeric)))
        fail_msg("%s[%lld]: analytic %.12g, finite differences %.12g", what, (long long)i,
                 analytic, numeric);
}

/* Checks dx (every stride-th element), dscale and dbias of one problem. */
static void gradcheck(int64_t M, int64_t C, int relu, gc_mode mode, int64_t stride)
{
    gc_problem p = {M, C, relu, mode, NULL, NULL, NULL, NULL, NULL, NULL, 1e-3};
    const int64_t n = M * C;
    rng_seed((uint64_t)(M * 7 + C * 3 + relu + 10 * (int)mode));
    p.x = malloc(sizeof(double) * (size_t)n);
    p.w = malloc(sizeof(double) * (size_t)n);
    p.scale = malloc(sizeof(double) * (size_t)C);
    p.bias = malloc(sizeof(double) * (size_t)C);
    p.rm = malloc(sizeof(double) * (size_t)C);
    p.rv = malloc(sizeof(double) * (size_t)C);
    for (int64_t i = 0; i < n; i++) {
        p.x[i] = 2.0 * (double)(i % C) + (1.0 + 0.3 * (double)(i % C)) * rng_normal();
        p.w[i] = rng_normal();
    }
    for (int64_t c = 0; c < C; c++) {
        p.scale[c] = 0.5 + rng_uniform();
        p.bias[c] = 0.3 * rng_normal();
        p.rm[c] = 2.0 * (double)c + 0.5 * rng_normal();
        p.rv[c] = 0.5 + 2 * rng_uniform();
    }
    double *dx = malloc(sizeof(double) * (size_t)n), *mean = malloc(sizeof(double) * (size_t)C);
    double *invstd = malloc(sizeof(double) * (size_t)C), *y = malloc(sizeof(double) * (size_t)n);
    double *ds = calloc((size_t)C, sizeof(double)), *db = calloc((size_t)C, sizeof(double));
    for (int tries = 0;; tries++) {
        /* finite differences are only valid away from ReLU's kink; a step moves a
         * pre-activation by at most |xhat|*h <= 5e-5, so shift the bias until every one
         * of them is at least 1e-4 from 0 (the same rule for every run: deterministic) */
        if (mode == GC_TRAIN)
            BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, NULL, p.x, p.scale, p.bias, M, C, p.eps, NULL));
        else
            BP_OK_OR_FAIL(bp__bn_forward_eval(y, p.x, p.rm, p.rv, p.scale, p.bias, M, C, p.eps, NULL));
        int64_t near = -1;
        for (int64_t i = 0; relu && i < n && near < 0; i++)
            if (fabs(y[i]) < 1e-4) near = i;
        if (near < 0) break;
        assert_true(tries < 100);
        p.bias[near % C] += 2e-3;
    }
    if (mode == GC_TRAIN) {
        BP_OK_OR_FAIL(relu ? bp__bn_relu_backward_train(dx, ds, db, p.w, p.x, mean, invstd, p.scale, p.bias, M, C, NULL)
                           : bp__bn_backward_train(dx, ds, db, p.w, p.x, mean, invstd, p.scale, M, C, NULL));
    } else {
        BP_OK_OR_FAIL(relu ? bp__bn_relu_backward_eval(dx, ds, db, p.w, p.x, p.rm, p.rv, p.scale, p.bias, M, C, p.eps, NULL)
                           : bp__bn_backward_eval(dx, ds, db, p.w, p.x, p.rm, p.rv, p.scale, M, C, p.eps, NULL));
    }
    if (relu) { /* the mask must matter */
        int64_t active = 0;
        for (int64_t i = 0; i < n; i++) active += y[i] > 0;
        assert_true(active > 0 && active < n);
    }
    for (int64_t i = 0; i < n; i += stride) gc_expect("dx", i, dx[i], gc_numeric(&p, &p.x[i]));
    for (int64_t c = 0; c < C; c++) {
        gc_expect("dscale", c, ds[c], gc_numeric(&p, &p.scale[c]));
        gc_expect("dbias", c, db[c], gc_numeric(&p, &p.bias[c]));
    }
    free(p.x); free(p.w); free(p.scale); free(p.bias); free(p.rm); free(p.rv);
    free(dx); free(mean); free(invstd); free(y); free(ds); free(db);
}

static void test_gradcheck_train(void **s)
{
    (void)s;
    gradcheck(6, 3, 0, GC_TRAIN, 1);
    gradcheck(2, 5, 0, GC_TRAIN, 1);   /* the smallest batch */
    gradcheck(57, 19, 0, GC_TRAIN, 1);
    gradcheck(9000, 2, 0, GC_TRAIN, 97); /* several blocks */
    gradcheck(7, 300, 0, GC_TRAIN, 5);  /* channel tiles */
}

static void test_gradcheck_train_relu(void **s)
{
    (void)s;
    gradcheck(6, 3, 1, GC_TRAIN, 1);
    gradcheck(57, 19, 1, GC_TRAIN, 1);
    gradcheck(2000, 2, 1, GC_TRAIN, 23);
}

static void test_gradcheck_eval(void **s)
{
    (void)s;
    gradcheck(6, 3, 0, GC_EVAL, 1);
    gradcheck(57, 19, 0, GC_EVAL, 1);
    gradcheck(7, 300, 0, GC_EVAL, 5);
    gradcheck(6, 3, 1, GC_EVAL, 1);
    gradcheck(57, 19, 1, GC_EVAL, 1);
}

#define GC_TESTS \
    cmocka_unit_test(test_gradcheck_train), \
    cmocka_unit_test(test_gradcheck_train_relu), \
    cmocka_unit_test(test_gradcheck_eval),
#else
#define GC_TESTS
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        GC_TESTS
        cmocka_unit_test(test_torch_bn1d_c5),
        cmocka_unit_test(test_torch_bn1d_2d_c3),
        cmocka_unit_test(test_torch_bn1d_c1),
        cmocka_unit_test(test_torch_bn2d_c19),
        cmocka_unit_test(test_torch_bn2d_c16),
        cmocka_unit_test(test_torch_bn3d_c5),
        cmocka_unit_test(test_torch_bn3d_c1),
        cmocka_unit_test(test_torch_bn3d_c19_n1),
        cmocka_unit_test(test_hand_worked_train),
        cmocka_unit_test(test_hand_worked_eval),
        cmocka_unit_test(test_stable_variance),
        cmocka_unit_test(test_constant_channel),
        cmocka_unit_test(test_hard_statistics),
        cmocka_unit_test(test_reference_shapes),
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_relu_fusion),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_inplace_and_workspace),
        cmocka_unit_test(test_streaming_stores_match),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
