/* tests/test_pool_kernels.c — the fast pooling kernels (layers/pool_fast.c)
 * against the reference kernels of layers/pool_ref.c: max, average and
 * adaptive average pooling in 1-D, 2-D and 3-D, strides below, at and above
 * the kernel, low and high padding, channel counts below, at and above one
 * 64-byte vector (tails), batch 1 and several, with ties and NaNs in the max
 * windows; dx by the scatter for every case and by the one-pass kernel for
 * disjoint max windows. Every output starts as NaN: a kernel must write it whole.
 *
 * BPC_TEST_BOTH_FLAVOURS (float32 and float64 builds of this file).
 *
 * Tolerance, derived: MaxPool's y and arg are picks, compared exactly (NaN
 * to NaN). Its dx adds the dy of the m windows whose maximum is at a
 * position, and an average's y and dx add n terms each scaled by a rounded
 * 1/count; with u the unit roundoff (2^-24 float, 2^-53 double) and sum|term|
 * from the reference on |dy| (or |x|),
 *   |fast - ref| <= (n + 3) * u * sum|term|
 * (n - 1 additions, the rounded reciprocal, the product, the reference's own
 * final rounding). n is bounded by the window size for y and by
 * prod(ceil(k/s)) windows (or 1 adaptive bin) for dx. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include "pool_internal.h"

#ifdef BP_REAL_DOUBLE
#define UNIT_ROUNDOFF 0x1p-53
#else
#define UNIT_ROUNDOFF 0x1p-24
#endif

typedef struct pcase {
    bp_pool_kind kind;
    int nsp, B;              /* the geometry's B (>= 1: unbatched is B = 1 to the kernels) */
    int in[3], C;
    int k[3], s[3], lo[3];   /* windowed; adaptive: k holds the target size */
    bool with_nan;
} pcase;

static const pcase cases[] = {
    /* max, disjoint 2x2x2 windows, 19 channels (a vector plus a tail in float) */
    {BP_POOL_MAX, 3, 2, {5, 4, 7}, 19, {2, 2, 2}, {2, 2, 2}, {0}, true},
    /* max, overlapping windows with low padding */
    {BP_POOL_MAX, 3, 2, {5, 4, 7}, 19, {3, 2, 3}, {2, 1, 2}, {1, 0, 1}, true},
    /* max, stride above the kernel (uncovered positions), one channel */
    {BP_POOL_MAX, 3, 1, {7, 5, 7}, 1, {2, 1, 2}, {3, 2, 3}, {0}, false},
    /* max, 33 channels (two vectors + 1 in double), kernel 3 stride 1 */
    {BP_POOL_MAX, 3, 1, {4, 3, 5}, 33, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
    /* max 2-D and 1-D */
    {BP_POOL_MAX, 2, 3, {1, 6, 9}, 16, {1, 3, 2}, {1, 2, 2}, {0, 1, 0}, true},
    {BP_POOL_MAX, 1, 2, {1, 1, 11}, 5, {1, 1, 3}, {1, 1, 3}, {0, 0, 2}, false},
    /* average, with and without padding (the divisor counts only real elements) */
    {BP_POOL_AVG, 3, 2, {5, 4, 7}, 19, {2, 2, 2}, {2, 2, 2}, {0}, false},
    {BP_POOL_AVG, 3, 1, {5, 4, 7}, 3, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, false},
    {BP_POOL_AVG, 2, 2, {1, 7, 6}, 17, {1, 3, 3}, {1, 1, 2}, {0, 2, 1}, false},
    {BP_POOL_AVG, 1, 1, {1, 1, 9}, 8, {1, 1, 4}, {1, 1, 1}, {0, 0, 3}, false},
    /* adaptive average: dividing and not dividing sizes, global */
    {BP_POOL_ADAPTIVE_AVG, 3, 2, {5, 4, 7}, 19, {2, 3, 3}, {0}, {0}, false},
    {BP_POOL_ADAPTIVE_AVG, 3, 1, {4, 6, 8}, 2, {1, 1, 1}, {0}, {0}, false},
    {BP_POOL_ADAPTIVE_AVG, 2, 3, {1, 9, 5}, 33, {1, 4, 5}, {0}, {0}, false},
    {BP_POOL_ADAPTIVE_AVG, 1, 1, {1, 1, 13}, 7, {1, 1, 5}, {0}, {0}, false},
};

static double frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

static bp_real *reals(int64_t n, double fill)
{
    bp_real *p = malloc(sizeof(bp_real) * (size_t)(n ? n : 1));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) p[i] = (bp_real)fill;
    return p;
}

static bool same_pick(double a, double b) { return isnan(a) ? isnan(b) : a == b; }

static void check_close(int ci, const char *what, const bp_real *got, const bp_real *want, const bp_real *absum,
                        int64_t n, int64_t terms)
{
    for (int64_t i = 0; i < n; i++) {
        double tol = (double)(terms + 3) * UNIT_ROUNDOFF * (double)absum[i];
        if (!(fabs((double)got[i] - (double)want[i]) <= tol))
            fail_msg("case %d %s[%lld] = %.17g, reference %.17g (tolerance %.3g)", ci, what, (long long)i,
                     (double)got[i], (double)want[i], tol);
    }
}

static void run_case(int ci, const pcase *c)
{
    bp__pool_geom g = {.kind = c->kind, .B = c->B, .C = c->C};
    for (int d = 0; d < 3; d++) {
        g.in[d] = c->in[d];
        g.k[d] = c->kind == BP_POOL_ADAPTIVE_AVG ? 1 : c->k[d];
        g.s[d] = c->kind == BP_POOL_ADAPTIVE_AVG ? 1 : c->s[d];
        g.lo[d] = c->lo[d];
        /* high padding: as much as the window of the last output needs, < k (the pools' rule) */
        g.out[d] = c->kind == BP_POOL_ADAPTIVE_AVG ? c->k[d] : (g.in[d] + 2 * g.lo[d] - g.k[d]) / g.s[d] + 1;
    }
    const int64_t per_in = g.in[0] * g.in[1] * g.in[2], per_out = g.out[0] * g.out[1] * g.out[2];
    const int64_t nx = g.B * per_in * g.C, ny = g.B * per_out * g.C;
    unsigned seed = 99u + (unsigned)ci;
    bp_real *x = reals(nx, 0), *dy = reals(ny, 0);
    for (int64_t i = 0; i < nx; i++)
        x[i] = (bp_real)(c->kind == BP_POOL_MAX ? (double)((int)(8 * frand(&seed))) : frand(&seed)); /* ties */
    if (c->with_nan)
        for (int64_t i = 5; i < nx; i += 97) x[i] = (bp_real)NAN;
    for (int64_t i = 0; i < ny; i++) dy[i] = (bp_real)frand(&seed);

    bp_real *y = reals(ny, NAN), *yr = reals(ny, NAN), *dx = reals(nx, NAN), *dxr = reals(nx, NAN);
    int32_t *arg = malloc(sizeof(int32_t) * (size_t)ny), *argr = malloc(sizeof(int32_t) * (size_t)ny);
    assert_true(arg && argr);
    for (int64_t i = 0; i < ny; i++) arg[i] = argr[i] = -7;
    bp__pool_forward_ref(&g, yr, argr, x);
    bp__pool_forward(&g, y, arg, x);
    bp__pool_backward_ref(&g, dxr, dy, x);

    /* sum |term| for the averages: the reference on |x| and |dy| */
    bp_real *xa = reals(nx, 0), *dya = reals(ny, 0), *ya = reals(ny, 0), *dxa = reals(nx, 0);
    for (int64_t i = 0; i < nx; i++) xa[i] = x[i] < 0 ? -x[i] : x[i];
    for (int64_t i = 0; i < ny; i++) dya[i] = dy[i] < 0 ? -dy[i] : dy[i];
    bp__pool_backward_ref(&g, dxa, dya, x);
    int64_t nwin = 1, cover = 1;
    for (int d = 0; d < 3; d++) {
        nwin *= g.k[d];
        cover *= c->kind == BP_POOL_ADAPTIVE_AVG ? 1 : (g.k[d] + g.s[d] - 1) / g.s[d];
    }
    if (c->kind == BP_POOL_MAX) {
        for (int64_t i = 0; i < ny; i++)
            if (!same_pick((double)y[i], (double)yr[i]) || arg[i] != argr[i])
                fail_msg("case %d y[%lld] = %g at %d, reference %g at %d", ci, (long long)i, (double)y[i], arg[i],
                         (double)yr[i], argr[i]);
    } else {
        bp__pool_forward_ref(&g, ya, NULL, xa);
        if (c->kind == BP_POOL_ADAPTIVE_AVG) nwin = per_in / per_out + 1;
        check_close(ci, "y", y, yr, ya, ny, nwin);
    }
    bp__pool_backward_scatter(&g, dx, arg, dy);
    check_close(ci, "scatter dx", dx, dxr, dxa, nx, cover);
    if (c->kind == BP_POOL_MAX && bp__pool_windows_disjoint(&g)) {
        for (int64_t i = 0; i < nx; i++) dx[i] = (bp_real)NAN;
        bp__pool_max_backward_disjoint(&g, dx, arg, dy);
        check_close(ci, "one-pass dx", dx, dxr, dxa, nx, 1);
    }
    free(x), free(dy), free(y), free(yr), free(dx), free(dxr), free(arg), free(argr);
    free(xa), free(dya), free(ya), free(dxa);
}

static void test_fast_against_reference(void **state)
{
    (void)state;
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) run_case(i, &cases[i]);
}

/* The reference by hand: 1-D, one channel, x = (3, NaN, 1, 5, 5, 2, 4).
 * MaxPool k 2, s 2, no padding: windows (3,NaN) (1,5) (5,2), y = (NaN, 5, 5)
 * at (1, 3, 4). Then with x[1] = 0: AvgPool k 3, s 2, padding (1, 1): windows
 * [-1,2) [1,4) [3,6) [5,8) clipped to the input, y = 3/2, 6/3, 12/3, 6/2;
 * adaptive to 3 bins of 7 = 3*2 + 1: [0,3) [3,5) [5,7), y = 4/3, 10/2, 6/2. */
static void test_reference_hand_worked(void **state)
{
    (void)state;
    bp_real x[7] = {3, (bp_real)NAN, 1, 5, 5, 2, 4}, y[4];
    int32_t arg[3];
    bp__pool_geom g = {.kind = BP_POOL_MAX, .B = 1, .C = 1, .in = {1, 1, 7}, .out = {1, 1, 3},
                       .k = {1, 1, 2}, .s = {1, 1, 2}, .lo = {0, 0, 0}};
    bp__pool_forward_ref(&g, y, arg, x);
    assert_true(isnan(y[0]) && y[1] == 5 && y[2] == 5);
    assert_true(arg[0] == 1 && arg[1] == 3 && arg[2] == 4);
    x[1] = 0;
    g = (bp__pool_geom){.kind = BP_POOL_AVG, .B = 1, .C = 1, .in = {1, 1, 7}, .out = {1, 1, 4},
                        .k = {1, 1, 3}, .s = {1, 1, 2}, .lo = {0, 0, 1}};
    bp__pool_forward_ref(&g, y, NULL, x);
    BP_ASSERT_CLOSE(y[0], 1.5, 0, 1e-7);
    BP_ASSERT_CLOSE(y[1], 2.0, 0, 1e-7);
    BP_ASSERT_CLOSE(y[2], 4.0, 0, 1e-7);
    BP_ASSERT_CLOSE(y[3], 3.0, 0, 1e-7);
    g = (bp__pool_geom){.kind = BP_POOL_ADAPTIVE_AVG, .B = 1, .C = 1, .in = {1, 1, 7}, .out = {1, 1, 3},
                        .k = {1, 1, 1}, .s = {1, 1, 1}};
    bp__pool_forward_ref(&g, y, NULL, x);
    BP_ASSERT_CLOSE(y[0], 4.0 / 3, 0, 1e-7);
    BP_ASSERT_CLOSE(y[1], 5.0, 0, 1e-7);
    BP_ASSERT_CLOSE(y[2], 3.0, 0, 1e-7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_hand_worked),
        cmocka_unit_test(test_fast_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
