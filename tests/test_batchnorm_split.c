/* tests/test_batchnorm_split.c — the cross-replica pieces of the BatchNorm
 * kernels (layers/batchnorm_internal.h: bp__bn_local_moments, bp__bn_normalize,
 * bp__bn_local_grad_sums, bp__bn_grad_dx), which cross-replica BatchNorm
 * (layers/batchnorm_sync.c) calls around its exchanges between ranks.
 *
 * Held to: the whole training kernels bit for bit (the pieces with N = M are
 * the same passes); a formula written here in double for dx with sums over
 * N > M rows; the halves of a batch merged with Chan's formula against the
 * whole batch; M = 0 (a rank without rows) writes nothing and sums to 0.
 *
 * BPC_TEST_BOTH_FLAVOURS: built as test_batchnorm_split and _f64. */
#include "bp_test.h"
#include <stdint.h>
#include <stdlib.h>
#include "../layers/batchnorm_internal.h"

#define IS_F32 (sizeof(bp_real) == 4)

static uint64_t rng_state;
static double rng_uniform(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

/* (M, C) values offset*(c % 3) + spread*(uniform - 1/2)*(1 + c/10), rounded to bp_real. */
static bp_real *random_mc(int64_t M, int64_t C, double offset, double spread)
{
    bp_real *x = malloc(sizeof(bp_real) * (size_t)(M * C > 0 ? M * C : 1));
    assert_non_null(x);
    for (int64_t i = 0; i < M * C; i++) {
        const int64_t c = i % C;
        x[i] = (bp_real)(offset * (double)(c % 3) + spread * (rng_uniform() - 0.5) * (1.0 + 0.1 * (double)c));
    }
    return x;
}

static bp_real *zeros(int64_t n)
{
    bp_real *p = calloc((size_t)(n > 0 ? n : 1), sizeof(bp_real));
    assert_non_null(p);
    return p;
}

static void expect_same_bits(const char *what, const bp_real *a, const bp_real *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(bp_real)) != 0)
            fail_msg("%s[%lld]: %.9g vs %.9g differ", what, (long long)i, (double)a[i], (double)b[i]);
}

/* forward_train = local_moments + normalize, backward_train = local_grad_sums
 * + grad_dx with N = M, bit for bit (with relu: the relu kernels). */
static void check_pieces_match(int64_t M, int64_t C, bool relu)
{
    rng_state = (uint64_t)(7 * M + C + relu);
    const int64_t n = M * C;
    bp_real *x = random_mc(M, C, 4.0, 6.0), *dy = random_mc(M, C, 0.0, 2.0);
    bp_real *scale = random_mc(1, C, 1.0, 1.0), *bias = random_mc(1, C, 0.0, 1.0);
    bp_real *y = zeros(n), *y2 = zeros(n), *dx = zeros(n), *dx2 = zeros(n);
    bp_real *mean = zeros(C), *invstd = zeros(C), *var = zeros(C), *ds = zeros(C), *db = zeros(C);
    bp_real *mean2 = zeros(C), *var2 = zeros(C), *ds2 = zeros(C), *db2 = zeros(C);
    double *dm = malloc(sizeof(double) * (size_t)(4 * C)), *dq = dm + C, *s1 = dm + 2 * C, *s2 = dm + 3 * C;
    assert_non_null(dm);
    const double eps = 1e-5;
    if (relu) {
        BP_OK_OR_FAIL(bp__bn_relu_forward_train(y, mean, invstd, var, x, scale, bias, M, C, eps, NULL));
        BP_OK_OR_FAIL(bp__bn_relu_backward_train(dx, ds, db, dy, x, mean, invstd, scale, bias, M, C, NULL));
    } else {
        BP_OK_OR_FAIL(bp__bn_forward_train(y, mean, invstd, var, x, scale, bias, M, C, eps, NULL));
        BP_OK_OR_FAIL(bp__bn_backward_train(dx, ds, db, dy, x, mean, invstd, scale, M, C, NULL));
    }
    BP_OK_OR_FAIL(bp__bn_local_moments(dm, dq, x, M, C, NULL));
    for (int64_t c = 0; c < C; c++) mean2[c] = (bp_real)dm[c], var2[c] = (bp_real)(dq[c] / (double)M);
    expect_same_bits("mean", mean, mean2, C);
    expect_same_bits("var", var, var2, C);
    BP_OK_OR_FAIL(bp__bn_normalize(y2, x, mean, invstd, scale, bias, M, C, relu, NULL));
    expect_same_bits("y", y, y2, n);
    BP_OK_OR_FAIL(bp__bn_local_grad_sums(s1, s2, dy, x, mean, invstd, scale, bias, M, C, relu, NULL));
    for (int64_t c = 0; c < C; c++) ds2[c] = (bp_real)((double)invstd[c] * s2[c]), db2[c] = (bp_real)s1[c];
    expect_same_bits("dscale", ds, ds2, C);
    expect_same_bits("dbias", db, db2, C);
    BP_OK_OR_FAIL(bp__bn_grad_dx(dx2, dy, x, mean, invstd, scale, bias, s1, s2, M, M, C, relu, NULL));
    expect_same_bits("dx", dx, dx2, n);
    free(x), free(dy), free(scale), free(bias), free(y), free(y2), free(dx), free(dx2);
    free(mean), free(invstd), free(var), free(ds), free(db), free(mean2), free(var2), free(ds2), free(db2), free(dm);
}

static void test_pieces_match_whole(void **s)
{
    (void)s;
    for (int relu = 0; relu < 2; relu++) {
        check_pieces_match(5, 3, relu);
        check_pieces_match(30011, 19, relu); /* 70 blocks in 64 chunks */
        check_pieces_match(16384, 16, relu);
        check_pieces_match(301, 300, relu); /* channel tiles */
    }
}

/* dx from sums over N rows, against the formula in double:
 * dx = invstd*scale*(dz - sdz/N - (x - mean)*invstd^2*sdzxm/N), dz masked by bn(x) > 0. */
static void test_dx_of_group_sums(void **s)
{
    (void)s;
    const int64_t M = 700, C = 5, N = 2100;
    rng_state = 11;
    bp_real *x = random_mc(M, C, 2.0, 4.0), *dy = random_mc(M, C, 0.0, 2.0), *dx = zeros(M * C);
    bp_real *mean = random_mc(1, C, 2.0, 1.0), *invstd = random_mc(1, C, 1.0, 0.5);
    bp_real *scale = random_mc(1, C, 1.0, 1.0), *bias = random_mc(1, C, 0.0, 1.0);
    const double sdz[5] = {3.5, -20.25, 0.0, 100.0, -1.0}, sdzxm[5] = {-7.0, 12.5, 300.0, 0.0, 2.0};
    for (int relu = 0; relu < 2; relu++) {
        BP_OK_OR_FAIL(bp__bn_grad_dx(dx, dy, x, mean, invstd, scale, bias, sdz, sdzxm, N, M, C, relu, NULL));
        for (int64_t i = 0; i < M * C; i++) {
            const int64_t c = i % C;
            const double is = invstd[c], g = is * scale[c], xm = (double)x[i] - mean[c];
            const double z = (double)(bp_real)(x[i] - mean[c]) * (double)(bp_real)(invstd[c] * scale[c]) + bias[c];
            const double dz = relu && !(z > 0) ? 0.0 : (double)dy[i];
            const double want = g * (dz - sdz[c] / (double)N - xm * is * is * sdzxm[c] / (double)N);
            const double tol = IS_F32 ? 2e-5 * (1 + fabs(want)) : 1e-12 * (1 + fabs(want));
            /* elements on the kink may differ between the bp_real mask and this double one */
            if (relu && fabs(z) < 1e-5) continue;
            if (!(fabs((double)dx[i] - want) <= tol))
                fail_msg("relu %d dx[%lld] = %.9g, expected %.9g", relu, (long long)i, (double)dx[i], want);
        }
    }
    free(x), free(dy), free(dx), free(mean), free(invstd), free(scale), free(bias);
}

/* The two halves' (mean, M2) merged with Chan's formula equal the whole batch's. */
static void test_halves_merge(void **s)
{
    (void)s;
    const int64_t M = 20000, M1 = 7001, C = 7;
    rng_state = 5;
    bp_real *x = random_mc(M, C, 1e3, 10.0);
    double m[3][7], q[3][7];
    BP_OK_OR_FAIL(bp__bn_local_moments(m[0], q[0], x, M, C, NULL));
    BP_OK_OR_FAIL(bp__bn_local_moments(m[1], q[1], x, M1, C, NULL));
    BP_OK_OR_FAIL(bp__bn_local_moments(m[2], q[2], x + M1 * C, M - M1, C, NULL));
    for (int64_t c = 0; c < C; c++) {
        const double d = m[2][c] - m[1][c], na = (double)M1, nb = (double)(M - M1);
        const double mean = m[1][c] + d * nb / (double)M, m2 = q[1][c] + q[2][c] + d * d * na * nb / (double)M;
        if (!(fabs(mean - m[0][c]) <= 1e-12 * fabs(m[0][c])) || !(fabs(m2 - q[0][c]) <= 1e-11 * q[0][c]))
            fail_msg("channel %lld: merged (%.17g, %.17g), whole (%.17g, %.17g)", (long long)c, mean, m2, m[0][c],
                     q[0][c]);
    }
    free(x);
}

/* M = 0: the sums are 0 and no output is touched; M = 1: mean = x, M2 = 0. */
static void test_empty_and_single_row(void **s)
{
    (void)s;
    const int64_t C = 3;
    const bp_real one[3] = {1.5, -2, 7}, inv[3] = {1, 1, 1};
    bp_real out[3] = {42, 42, 42};
    double m[3] = {9, 9, 9}, q[3] = {9, 9, 9};
    BP_OK_OR_FAIL(bp__bn_local_moments(m, q, NULL, 0, C, NULL));
    for (int c = 0; c < 3; c++) assert_true(m[c] == 0 && q[c] == 0);
    BP_OK_OR_FAIL(bp__bn_local_grad_sums(m, q, NULL, NULL, NULL, NULL, NULL, NULL, 0, C, true, NULL));
    for (int c = 0; c < 3; c++) assert_true(m[c] == 0 && q[c] == 0);
    BP_OK_OR_FAIL(bp__bn_normalize(out, NULL, one, inv, NULL, NULL, 0, C, false, NULL));
    BP_OK_OR_FAIL(bp__bn_grad_dx(out, NULL, NULL, one, inv, NULL, NULL, m, q, 4, 0, C, false, NULL));
    for (int c = 0; c < 3; c++) assert_true(out[c] == 42);
    BP_OK_OR_FAIL(bp__bn_local_moments(m, q, one, 1, C, NULL));
    for (int c = 0; c < 3; c++) assert_true(m[c] == (double)one[c] && q[c] == 0);
    /* N < M is a caller's error, named */
    assert_int_equal(bp__bn_grad_dx(out, one, one, one, inv, NULL, NULL, m, q, 0, 1, C, false, NULL), BP_EINVAL);
    assert_non_null(strstr(bp_last_error(), "expected N >= M"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces_match_whole),
        cmocka_unit_test(test_dx_of_group_sums),
        cmocka_unit_test(test_halves_merge),
        cmocka_unit_test(test_empty_and_single_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
