/* tests/test_groupnorm_kernels.c — GroupNorm's tuned kernels (layers/groupnorm_fast.c)
 * against its reference kernels (layers/groupnorm_ref.c) on shapes that span one and many
 * chunks, groups of one channel (InstanceNorm) to all channels, odd channel counts, data
 * with a large offset and an outlier row; bitwise the same at 1, 2 and 3 threads; the
 * affine-free and dx-free paths. The reference (one group at a time, plain loops) is the
 * independent formula; PyTorch's numbers reach both through the conformance harness.
 *
 * BPC_TEST_BOTH_FLAVOURS (test_groupnorm_kernels and test_groupnorm_kernels_f64).
 *
 * Tolerance. Both kernels sum in double and round each output once, so they differ only
 * by the summation order of the statistics: about n 2^-53 relative for n terms (n <= 3e5
 * here: < 4e-11), far below float32's half ulp. In float32 an output may still round the
 * other way, so each element is held to 1 ulp of the largest output of its tensor
 * (2^-23 of it); in float64 to 1e-9 of it (the order difference, with room). A wrong row
 * range, group, chunk merge or formula term moves the outputs by far more (a planted
 * skipped row in every second chunk failed by 400 times the tolerance). */
#include "bp_test.h"
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/random.h>
#include "../layers/groupnorm_internal.h"

#define IS_F32 (sizeof(bp_real) == 4)
#define REL_TOL (IS_F32 ? 1.1920928955078125e-07 : 1e-9)

static bp_real *reals(int64_t n)
{
    bp_real *p = malloc(sizeof(bp_real) * (size_t)(n ? n : 1));
    assert_non_null(p);
    return p;
}

/* Asserts |got - want| <= REL_TOL max|want| elementwise, naming the first bad index. */
static void expect_near(const char *what, const bp_real *got, const bp_real *want, int64_t n)
{
    double big = 0;
    for (int64_t i = 0; i < n; i++) big = fmax(big, fabs((double)want[i]));
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - (double)want[i]) <= REL_TOL * big))
            fail_msg("%s[%lld] = %.9g, reference %.9g (tolerance %.3g)", what, (long long)i, (double)got[i],
                     (double)want[i], REL_TOL * big);
}

typedef struct gn_case {
    int64_t B, P, C, G;
    double offset, spread; /* x = offset (1 + c mod 3) + spread N(0,1) */
    bool affine, outlier;  /* outlier: the first row of each sample is 1000 */
} gn_case;

/* x, dy, scale, bias of case k (seeded by k). */
static void fill(const gn_case *k, uint64_t seed, bp_real *x, bp_real *dy, bp_real *scale, bp_real *bias)
{
    bp_rng r;
    bp_rng_seed(&r, seed);
    const int64_t n = k->B * k->P * k->C;
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = i % k->C, p = i / k->C % (k->P ? k->P : 1);
        x[i] = (bp_real)(k->outlier && p == 0 ? 1000 : k->offset * (double)(1 + c % 3) + k->spread * bp_rng_normal(&r));
        dy[i] = (bp_real)(0.5 * bp_rng_normal(&r) + 0.1);
    }
    for (int64_t c = 0; c < k->C; c++) {
        scale[c] = (bp_real)(1 + 0.25 * bp_rng_normal(&r));
        bias[c] = (bp_real)(0.5 * bp_rng_normal(&r));
    }
}

static void run_case(const gn_case *k, uint64_t seed)
{
    const int64_t n = k->B * k->P * k->C, BG = k->B * k->G, C = k->C;
    bp_real *x = reals(n), *dy = reals(n), *scale = reals(C), *bias = reals(C);
    fill(k, seed, x, dy, scale, bias);
    const bp_real *s = k->affine ? scale : NULL, *b = k->affine ? bias : NULL;
    bp_real *y0 = reals(n), *y1 = reals(n), *m0 = reals(BG), *m1 = reals(BG), *r0 = reals(BG), *r1 = reals(BG);
    bp__gn_forward_ref(y0, m0, r0, x, s, b, k->B, k->P, C, k->G, 1e-5);
    BP_OK_OR_FAIL(bp__gn_forward(y1, m1, r1, x, s, b, k->B, k->P, C, k->G, 1e-5));
    expect_near("y", y1, y0, n);
    expect_near("mean", m1, m0, BG);
    expect_near("rstd", r1, r0, BG);
    bp_real *dx0 = reals(n), *dx1 = reals(n), *ds0 = reals(C), *ds1 = reals(C), *db0 = reals(C), *db1 = reals(C);
    bp__gn_backward_ref(dx0, ds0, db0, dy, x, m0, r0, s, k->B, k->P, C, k->G);
    BP_OK_OR_FAIL(bp__gn_backward(dx1, ds1, db1, dy, x, m0, r0, s, k->B, k->P, C, k->G));
    expect_near("dx", dx1, dx0, n);
    expect_near("dscale", ds1, ds0, C);
    expect_near("dbias", db1, db0, C);
    /* no dx wanted: the parameter gradients alone, the same */
    memset(ds1, 0, sizeof *ds1 * (size_t)C);
    BP_OK_OR_FAIL(bp__gn_backward(NULL, ds1, NULL, dy, x, m0, r0, s, k->B, k->P, C, k->G));
    expect_near("dscale without dx", ds1, ds0, C);
    free(x), free(dy), free(scale), free(bias), free(y0), free(y1), free(m0), free(m1), free(r0), free(r1);
    free(dx0), free(dx1), free(ds0), free(ds1), free(db0), free(db1);
}

static void test_fast_vs_ref(void **state)
{
    (void)state;
    static const gn_case cases[] = {
        {1, 1, 1, 1, 0, 1, true, false},         {2, 7, 3, 1, 0.5, 1, true, false},
        {2, 7, 3, 3, 0.5, 1, false, false},      {3, 100, 16, 4, 3, 1, true, false},
        {2, 5000, 16, 16, 3, 1, true, false},    /* InstanceNorm, several chunks of 4096 rows */
        {2, 9000, 32, 8, 3, 2, true, false},     {1, 20000, 5, 5, 3, 1, true, false},
        {2, 4096, 16, 2, 3, 1, true, false},     /* exactly one chunk of 4096 rows */
        {2, 4097, 16, 2, 3, 1, true, false},     /* one row into the next chunk */
        {1, 3000, 48, 12, 1e4, 1, true, false},  /* a large offset: 1e4 + N(0,1) */
        {2, 3000, 8, 2, 0, 1, true, true},       /* the first row an outlier of 1000 */
        {1, 600, 2048, 64, 0.1, 1, true, false}, /* wide rows: chunks of 64 rows */
        {2, 0, 4, 2, 0, 1, true, false},         /* no positions */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i], 100 + i);
}

/* The same bits at 1, 2 and 3 threads (chunks depend on the shape alone). */
static void test_threads_same_bits(void **state)
{
    (void)state;
    const gn_case k = {2, 30000, 16, 4, 2, 1, true, false};
    const int64_t n = k.B * k.P * k.C, BG = k.B * k.G;
    bp_real *x = reals(n), *dy = reals(n), *scale = reals(16), *bias = reals(16);
    fill(&k, 7, x, dy, scale, bias);
    bp_real *y[3], *dx[3], *ds[3], *m = reals(BG), *r = reals(BG);
    const int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        y[t] = reals(n), dx[t] = reals(n), ds[t] = reals(16);
        omp_set_num_threads(t + 1);
        BP_OK_OR_FAIL(bp__gn_forward(y[t], m, r, x, scale, bias, k.B, k.P, k.C, k.G, 1e-5));
        BP_OK_OR_FAIL(bp__gn_backward(dx[t], ds[t], NULL, dy, x, m, r, scale, k.B, k.P, k.C, k.G));
    }
    omp_set_num_threads(saved);
    for (int t = 1; t < 3; t++) {
        assert_memory_equal(y[t], y[0], sizeof(bp_real) * (size_t)n);
        assert_memory_equal(dx[t], dx[0], sizeof(bp_real) * (size_t)n);
        assert_memory_equal(ds[t], ds[0], sizeof(bp_real) * 16);
    }
    for (int t = 0; t < 3; t++) free(y[t]), free(dx[t]), free(ds[t]);
    free(x), free(dy), free(scale), free(bias), free(m), free(r);
}

/* A hand-worked group (one sample, 2 positions, 2 channels, one group): x = 1, 2, 3, 6,
 * mean 3, biased variance 3.5; with dy = 1, 0, 0, 0 and no affine:
 * xhat = (x - 3) / sqrt(3.5 + eps), dx = rstd (dy - mean(dy) - xhat mean(dy xhat))
 * = rstd ((1, 0, 0, 0) - 1/4 - xhat (-2 rstd) / 4); dscale = (xhat_0, 0), dbias = (1, 0). */
static void test_hand_worked(void **state)
{
    (void)state;
    const bp_real x[4] = {1, 2, 3, 6}, dy[4] = {1, 0, 0, 0};
    bp_real y[4], m, r, dx[4], ds[2], db[2];
    BP_OK_OR_FAIL(bp__gn_forward(y, &m, &r, x, NULL, NULL, 1, 2, 2, 1, 0));
    const double rs = 1 / sqrt(3.5), tol = IS_F32 ? 1e-6 : 1e-14;
    assert_true(fabs((double)m - 3) <= tol && fabs((double)r - rs) <= tol);
    for (int i = 0; i < 4; i++) assert_true(fabs((double)y[i] - ((double)x[i] - 3) * rs) <= tol);
    const bp_real sc[2] = {1, 1};
    BP_OK_OR_FAIL(bp__gn_backward(dx, ds, db, dy, x, &m, &r, sc, 1, 2, 2, 1));
    const double xh0 = -2 * rs, mgx = xh0 / 4;
    for (int i = 0; i < 4; i++) {
        const double xh = ((double)x[i] - 3) * rs, want = rs * ((i == 0) - 0.25 - xh * mgx);
        assert_true(fabs((double)dx[i] - want) <= tol);
    }
    assert_true(fabs((double)ds[0] - xh0) <= tol && fabs((double)ds[1]) <= tol);
    assert_true(fabs((double)db[0] - 1) <= tol && fabs((double)db[1]) <= tol);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_threads_same_bits),
        cmocka_unit_test(test_hand_worked),
    };
    return bp_run_tests(tests, NULL, NULL);
}
