/* tests/test_conv_kernels.c — every fast Conv kernel against the reference
 * kernels of layers/conv_ref.c, each path forced on every shape (whatever
 * update() would pick): forward by the direct kernel and by im2col + GEMM,
 * dx by the direct kernel (stride 1) and by GEMM + col2im, dw and db by the
 * direct dw kernels and by GEMM, db by its own pass. Shapes: Conv1d/2d/3d,
 * strides, SAME / VALID / asymmetric explicit padding, dilation, groups, one
 * input channel, odd channel counts, one and two output-channel blocks,
 * batch 1 and unbatched. Every output starts as NaN: a kernel must write it
 * whole.
 *
 * BPC_TEST_BOTH_FLAVOURS (float32 and float64 builds of this file).
 *
 * Tolerance, derived: each value is a sum of n terms (n = taps*Cg + 1 for y,
 * taps*Cog for dx, B*positions for dw and db). The reference sums in double
 * and rounds once; a fast kernel sums in bp_real in its own order, with or
 * without fused multiply-adds, and recursive summation of n terms in any order
 * errs by at most gamma_n * sum|term| with gamma_n = n*u / (1 - n*u), u the
 * unit roundoff (2^-24 float, 2^-53 double). So
 *   |fast - ref| <= (n + 2) * u * sum|term|
 * (the +2: the product roundings and the reference's final rounding), with
 * sum|term| computed by the same reference kernels on |x|, |w|, |dy|. A
 * wrong index or a dropped tap moves a value by a whole term, far above that
 * bound for every case here (n*u < 1e-3 in float32). */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/conv.h>
#include "conv_internal.h"

#ifdef BP_REAL_DOUBLE
#define UNIT_ROUNDOFF 0x1p-53
#else
#define UNIT_ROUNDOFF 0x1p-24
#endif

typedef struct ccase {
    int nsp, B;          /* B 0: one unbatched sample */
    int in[3], cin, cout;
    int k[3], s[3], d[3], groups;
    int pad;             /* 0 SAME, 1 VALID, 2 explicit lo/hi */
    int lo[3], hi[3];
} ccase;

static const ccase cases[] = {
    /* 3-D, SAME, the benchmark's channels on an odd volume */
    {3, 2, {3, 4, 7}, 16, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* odd channels both sides, a volume that is mostly padding */
    {3, 2, {1, 1, 3}, 5, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* 48 outputs (blocks of 2 and 1 vectors), 17 inputs, dilation, asymmetric explicit padding */
    {3, 1, {4, 3, 9}, 17, 48, {2, 2, 3}, {1, 1, 1}, {1, 2, 2}, 1, 2, {1, 0, 2}, {0, 1, 1}},
    /* strides 2, 2 groups */
    {3, 2, {5, 4, 9}, 8, 12, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, 2, 0, {0}, {0}},
    /* strides and dilation together, SAME, 3 groups of odd widths */
    {3, 1, {6, 5, 11}, 9, 15, {3, 3, 3}, {2, 3, 2}, {2, 1, 2}, 3, 0, {0}, {0}},
    /* VALID, dilation along dim 1 */
    {3, 1, {3, 6, 5}, 16, 16, {2, 2, 2}, {1, 1, 1}, {1, 2, 1}, 2, 1, {0}, {0}},
    /* Cin = 1 (a first layer), one and two output vectors, stride along the row */
    {3, 2, {5, 6, 33}, 1, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    {3, 1, {4, 3, 11}, 1, 40, {2, 2, 3}, {1, 1, 1}, {1, 1, 2}, 1, 2, {1, 0, 2}, {0, 1, 1}},
    {3, 1, {3, 4, 9}, 2, 12, {3, 3, 3}, {1, 1, 2}, {1, 1, 1}, 2, 0, {0}, {0}},
    /* 45 taps with one input channel: dw in several tap chunks */
    {3, 1, {4, 4, 9}, 1, 32, {3, 3, 5}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* fewer output channels per group than the direct kernels' threshold (forced anyway) */
    {3, 2, {3, 3, 4}, 4, 3, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    {3, 1, {2, 3, 5}, 3, 1, {1, 2, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* depthwise: groups = Cin = Cout */
    {3, 1, {3, 4, 6}, 7, 7, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 7, 0, {0}, {0}},
    /* unbatched 3-D, the kernel as large as the VALID input: one output */
    {3, 0, {3, 2, 3}, 6, 9, {3, 2, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {0}, {0}},
    /* explicit low padding larger than the dilated kernel (dx's own padding goes negative) */
    {3, 1, {2, 2, 6}, 4, 4, {1, 1, 2}, {1, 1, 1}, {1, 1, 1}, 1, 2, {0, 0, 3}, {0, 0, 0}},
    /* stride larger than the kernel (taps skip inputs) */
    {3, 1, {5, 5, 8}, 3, 5, {2, 1, 2}, {3, 2, 3}, {1, 1, 1}, 1, 1, {0}, {0}},
    /* 2-D */
    {2, 1, {2, 32}, 16, 16, {3, 3}, {1, 1}, {1, 1}, 1, 0, {0}, {0}},
    {2, 2, {3, 40}, 1, 24, {3, 3}, {1, 3}, {1, 1}, 1, 0, {0}, {0}},
    {2, 0, {7, 6}, 5, 33, {3, 2}, {2, 2}, {2, 1}, 1, 0, {0}, {0}},
    {2, 1, {5, 9}, 6, 10, {2, 3}, {1, 1}, {3, 2}, 2, 2, {2, 1}, {0, 3}},
    /* 1-D */
    {1, 3, {37}, 16, 16, {5}, {1}, {1}, 1, 0, {0}, {0}},
    {1, 2, {24}, 3, 32, {3}, {1}, {1}, 1, 0, {0}, {0}},
    {1, 0, {19}, 7, 13, {4}, {3}, {2}, 1, 0, {0}, {0}},
    {1, 1, {10}, 1, 5, {3}, {1}, {4}, 1, 2, {5}, {2}},
};

static double frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

static bp_real *reals(int64_t n)
{
    bp_real *p = malloc(sizeof(bp_real) * (size_t)(n ? n : 1));
    assert_non_null(p);
    return p;
}

static bp_real *nans(int64_t n)
{
    bp_real *p = reals(n);
    for (int64_t i = 0; i < n; i++) p[i] = (bp_real)NAN;
    return p;
}

static bp_real *absolute(const bp_real *a, int64_t n)
{
    bp_real *p = reals(n);
    for (int64_t i = 0; i < n; i++) p[i] = a[i] < 0 ? -a[i] : a[i];
    return p;
}

/* got against want within (terms + 2) * u * absum, element by element. */
static void check(int ci, const char *path, const char *what, const bp_real *got, const bp_real *want,
                  const bp_real *absum, int64_t n, int64_t terms)
{
    for (int64_t i = 0; i < n; i++) {
        double tol = (double)(terms + 2) * UNIT_ROUNDOFF * (double)absum[i];
        if (!(fabs((double)got[i] - (double)want[i]) <= tol))
            fail_msg("case %d, %s %s[%lld] = %.17g, reference %.17g (tolerance %.3g)", ci, path, what, (long long)i,
                     (double)got[i], (double)want[i], tol);
    }
}

/* The conv node of case c, its weights and bias filled from seed. */
static bp_conv *make_conv(const ccase *c, bp_node **n)
{
    bp_conv_opts o = bp_conv_defaults();
    o.groups = c->groups;
    o.padding = c->pad == 0 ? BP_PAD_SAME : c->pad == 1 ? BP_PAD_VALID : BP_PAD_EXPLICIT;
    for (int i = 0; i < c->nsp; i++) {
        o.kernel_size[i] = c->k[i];
        o.stride[i] = c->s[i];
        o.dilation[i] = c->d[i];
        o.pad_lo[i] = c->lo[i];
        o.pad_hi[i] = c->hi[i];
    }
    BP_OK_OR_FAIL(c->nsp == 1   ? bp_conv1d_new(n, c->cin, c->cout, &o)
                  : c->nsp == 2 ? bp_conv2d_new(n, c->cin, c->cout, &o)
                                : bp_conv3d_new(n, c->cin, c->cout, &o));
    return bp_conv_cast(*n);
}

static void run_case(int ci, const ccase *c)
{
    bp_node *node;
    bp_conv *cv = make_conv(c, &node);
    int64_t xshape[5], yshape[5];
    int nd = 0, yd;
    if (c->B) xshape[nd++] = c->B;
    for (int i = 0; i < c->nsp; i++) xshape[nd++] = c->in[i];
    xshape[nd++] = c->cin;
    bp__conv_geom g;
    BP_OK_OR_FAIL(bp__conv_geom_init(&g, cv, nd, xshape, yshape, &yd));
    const int64_t nx = g.B * g.Pin * g.Cin, ny = g.B * g.Pout * g.Cout, nw = g.K * g.Cout, taps = g.K / g.Cg;
    unsigned seed = 777u + (unsigned)ci;
    bp_real *x = reals(nx), *w = reals(nw), *b = reals(g.Cout), *dy = reals(ny);
    for (int64_t i = 0; i < nx; i++) x[i] = (bp_real)frand(&seed);
    for (int64_t i = 0; i < nw; i++) w[i] = (bp_real)frand(&seed);
    for (int64_t i = 0; i < g.Cout; i++) b[i] = (bp_real)frand(&seed);
    for (int64_t i = 0; i < ny; i++) dy[i] = (bp_real)frand(&seed);

    /* the reference, and sum |term| of every value by the same kernels on |.| */
    bp_real *y = reals(ny), *dx = reals(nx), *dw = reals(nw), *db = reals(g.Cout);
    bp_real *ya = reals(ny), *dxa = reals(nx), *dwa = reals(nw), *dba = reals(g.Cout);
    bp_real *xa = absolute(x, nx), *wa = absolute(w, nw), *ba = absolute(b, g.Cout), *dya = absolute(dy, ny);
    bp__conv_forward_ref(&g, y, x, w, b);
    BP_OK_OR_FAIL(bp__conv_backward_ref(&g, dx, dw, db, dy, x, w));
    bp__conv_forward_ref(&g, ya, xa, wa, ba);
    BP_OK_OR_FAIL(bp__conv_backward_ref(&g, dxa, dwa, dba, dya, xa, wa));
    const int64_t ty = taps * g.Cg + 1, tdx = taps * g.Cog, tdw = g.B * g.Pout;

    bp_real *o = nans(ny);
    BP_OK_OR_FAIL(bp__conv_forward_direct(&g, o, x, w, b));
    check(ci, "direct", "y", o, y, ya, ny, ty);
    free(o);
    o = nans(ny);
    BP_OK_OR_FAIL(bp__conv_forward_gemm(&g, o, x, w, b));
    check(ci, "gemm", "y", o, y, ya, ny, ty);
    free(o);

    if (g.s[0] == 1 && g.s[1] == 1 && g.s[2] == 1) {
        o = nans(nx);
        BP_OK_OR_FAIL(bp__conv_dx_direct(&g, o, dy, w));
        check(ci, "direct", "dx", o, dx, dxa, nx, tdx);
        free(o);
    }
    o = nans(nx);
    BP_OK_OR_FAIL(bp__conv_backward_gemm(&g, o, NULL, dy, x, w));
    check(ci, "gemm", "dx", o, dx, dxa, nx, tdx);
    free(o);

    bp_real *ob = nans(g.Cout);
    o = nans(nw);
    BP_OK_OR_FAIL(bp__conv_dw_direct(&g, o, ob, dy, x));
    check(ci, "direct", "dw", o, dw, dwa, nw, tdw);
    check(ci, "direct", "db", ob, db, dba, g.Cout, tdw);
    free(o);
    o = nans(nw);
    BP_OK_OR_FAIL(bp__conv_backward_gemm(&g, NULL, o, dy, x, w));
    check(ci, "gemm", "dw", o, dw, dwa, nw, tdw);
    free(o);
    for (int64_t i = 0; i < g.Cout; i++) ob[i] = (bp_real)NAN;
    BP_OK_OR_FAIL(bp__conv_dbias(&g, ob, dy));
    check(ci, "dbias", "db", ob, db, dba, g.Cout, tdw);
    free(ob);

    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(ya), free(dxa), free(dwa), free(dba), free(xa), free(wa), free(ba), free(dya);
    bp_node_free(node);
}

static void test_fast_against_reference(void **state)
{
    (void)state;
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) run_case(i, &cases[i]);
}

/* The reference itself, on a case small enough to work by hand: Conv1d,
 * 1 -> 1 channels, kernel 2, dilation 2, stride 1, explicit padding (1, 0)
 * over x = (1, 2, 3, 4): positions o*1 - 1 + {0, 2} give
 *   y0 = w1*x1 = 2*w1, y1 = w0*x0 + w1*x2, y2 = w0*x1 + w1*x3,  (w0, w1) = (10, 100), b = 0.5
 * and with dy = (1, 1, 1): dx = (w0, w1 + w0, w1, w1), dw0 = x0 + x1, dw1 = x1 + x2 + x3, db = 3. */
static void test_reference_hand_worked(void **state)
{
    (void)state;
    const ccase c = {1, 1, {4}, 1, 1, {2}, {1}, {2}, 1, 2, {1}, {0}};
    bp_node *node;
    bp_conv *cv = make_conv(&c, &node);
    int64_t xs[3] = {1, 4, 1}, ys[3];
    int yd;
    bp__conv_geom g;
    BP_OK_OR_FAIL(bp__conv_geom_init(&g, cv, 3, xs, ys, &yd));
    assert_int_equal(ys[1], 3);
    bp_real x[4] = {1, 2, 3, 4}, w[2] = {10, 100}, b[1] = {0.5}, dy[3] = {1, 1, 1}, y[3], dx[4], dw[2], db[1];
    bp__conv_forward_ref(&g, y, x, w, b);
    assert_true(y[0] == 200.5 && y[1] == 310.5 && y[2] == 420.5);
    BP_OK_OR_FAIL(bp__conv_backward_ref(&g, dx, dw, db, dy, x, w));
    assert_true(dx[0] == 10 && dx[1] == 110 && dx[2] == 100 && dx[3] == 100);
    assert_true(dw[0] == 3 && dw[1] == 9 && db[0] == 3);
    bp_node_free(node);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_hand_worked),
        cmocka_unit_test(test_fast_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
