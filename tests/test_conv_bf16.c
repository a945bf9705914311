/* tests/test_conv_bf16.c — the bf16 Conv forward (layers/conv_bf16.c)
 * against the reference kernel, on Conv1d/2d/3d with groups, strides,
 * dilation, SAME / VALID / explicit padding, odd channel counts, output
 * channels that do not fill a 16-lane block, and rows whose length is not a
 * multiple of the 16-position register block. Skipped (with a message) where
 * the CPU or build cannot run AVX512-BF16.
 *
 * Bound, derived from bf16 rounding: x and w are each rounded once to bf16
 * (8 significand bits, round to nearest even: relative error <= u_b = 2^-8),
 * so a product errs by at most (1 + u_b)^2 - 1 = 2^-7 + 2^-16 relative; the
 * products are exact in float32 and n of them (n = taps * Cg2 * 2 + 1 with the
 * bias) are summed in float32, which errs by at most gamma_n = n*u / (1 - n*u),
 * u = 2^-24, times the sum of the rounded terms' magnitudes (<= (1 + 2^-6) S);
 * the reference sums in double and rounds once more (u). With
 * S = sum_t |x_t w_t| + |b| (the reference kernel on |x|, |w|, |b|):
 *   |y - y_ref| <= (2^-7 + 2^-16 + (n + 2) * u * (1 + 2^-6)) * S.
 * (vdpbf16ps flushes denormal results; with inputs in [-1, 1] none occur.)
 * Also: Conv's update() takes the bf16 kernel exactly when BP_PRECISION_BF16
 * is active.
 * And the kernel really is bf16: the largest |y - y_ref| / S over a case is
 * above 2^-12, far beyond what a float32 kernel would reach (~n * 2^-24). */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/conv.h>
#include <bpc/precision.h>
#include "conv_internal.h"

typedef struct ccase {
    int nsp, B;          /* B 0: one unbatched sample */
    int in[3], cin, cout;
    int k[3], s[3], d[3], groups;
    int pad;             /* 0 SAME, 1 VALID, 2 explicit lo/hi */
    int lo[3], hi[3];
} ccase;

static const ccase cases[] = {
    /* the benchmark's channels on an odd volume: rows of 7 (blocks of 4, 1) */
    {3, 2, {3, 4, 7}, 16, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* rows of 37 (16 + 16 + 4 + 1): every register block size */
    {3, 1, {2, 3, 37}, 8, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* odd input channels, 20 outputs (a full and a partial block) */
    {3, 2, {2, 3, 9}, 5, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* dilation, asymmetric explicit padding, 48 outputs, 17 inputs */
    {3, 1, {4, 3, 9}, 17, 48, {2, 2, 3}, {1, 1, 1}, {1, 2, 2}, 1, 2, {1, 0, 2}, {0, 1, 1}},
    /* strides 2, 2 groups of 4 -> 8 */
    {3, 2, {5, 4, 19}, 8, 16, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, 2, 0, {0}, {0}},
    /* 3 groups of odd widths (3 -> 9), strides and dilation together */
    {3, 1, {6, 5, 21}, 9, 27, {3, 3, 3}, {2, 3, 2}, {2, 1, 2}, 3, 0, {0}, {0}},
    /* one input channel (a first layer), VALID */
    {3, 1, {4, 5, 20}, 1, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {0}, {0}},
    /* stride larger than the kernel, explicit padding past the kernel */
    {3, 1, {5, 5, 18}, 3, 10, {2, 1, 2}, {3, 2, 3}, {1, 1, 1}, 1, 2, {1, 0, 3}, {0, 0, 1}},
    /* 2-D */
    {2, 1, {3, 32}, 16, 16, {3, 3}, {1, 1}, {1, 1}, 1, 0, {0}, {0}},
    {2, 0, {7, 26}, 5, 33, {3, 2}, {2, 2}, {2, 1}, 1, 0, {0}, {0}},
    {2, 1, {5, 19}, 6, 20, {2, 3}, {1, 1}, {3, 2}, 2, 2, {2, 1}, {0, 3}},
    /* 1-D */
    {1, 3, {37}, 16, 16, {5}, {1}, {1}, 1, 0, {0}, {0}},
    {1, 0, {45}, 7, 13, {4}, {3}, {2}, 1, 0, {0}, {0}},
};

static double frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

static float *floats(int64_t n, float fill)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) p[i] = fill;
    return p;
}

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

/* Runs case c; returns its largest |y - y_ref| / S, after asserting the bound. */
static double run_case(int ci, const ccase *c, double *worst_of_bound)
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
    unsigned seed = 4242u + (unsigned)ci;
    float *x = floats(nx, 0), *w = floats(nw, 0), *b = floats(g.Cout, 0);
    for (int64_t i = 0; i < nx; i++) x[i] = (float)frand(&seed);
    for (int64_t i = 0; i < nw; i++) w[i] = (float)frand(&seed);
    for (int64_t i = 0; i < g.Cout; i++) b[i] = (float)frand(&seed);
    float *xa = floats(nx, 0), *wa = floats(nw, 0), *ba = floats(g.Cout, 0);
    for (int64_t i = 0; i < nx; i++) xa[i] = fabsf(x[i]);
    for (int64_t i = 0; i < nw; i++) wa[i] = fabsf(w[i]);
    for (int64_t i = 0; i < g.Cout; i++) ba[i] = fabsf(b[i]);

    float *ref = floats(ny, 0), *S = floats(ny, 0), *y = floats(ny, NAN);
    bp__conv_forward_ref(&g, ref, x, w, b);
    bp__conv_forward_ref(&g, S, xa, wa, ba);
    BP_OK_OR_FAIL(bp__conv_forward_bf16(&g, y, x, w, b));

    const double u = 0x1p-24, n = (double)(taps * ((g.Cg + 1) / 2) * 2 + 1);
    const double rel = 0x1p-7 + 0x1p-16 + (n + 2) * u * (1 + 0x1p-6);
    double worst = 0;
    for (int64_t i = 0; i < ny; i++) {
        double err = fabs((double)y[i] - (double)ref[i]), tol = rel * (double)S[i];
        if (!(err <= tol))
            fail_msg("case %d: y[%lld] = %.9g, reference %.9g, error %.3g over the bound %.3g (S = %.6g)", ci,
                     (long long)i, (double)y[i], (double)ref[i], err, tol, (double)S[i]);
        if (S[i] > 0 && err / (double)S[i] > worst) worst = err / (double)S[i];
    }
    if (worst / rel > *worst_of_bound) *worst_of_bound = worst / rel;
    free(x), free(w), free(b), free(xa), free(wa), free(ba), free(ref), free(S), free(y);
    bp_node_free(node);
    return worst;
}

static void test_bf16_forward_against_reference(void **state)
{
    (void)state;
    if (!bp_bf16_available()) {
        print_message("skipped: this CPU or build cannot run AVX512-BF16 (or BPC_NO_BF16 is set)\n");
        skip();
    }
    double worst_of_bound = 0, worst_all = 0;
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) {
        double worst = run_case(i, &cases[i], &worst_of_bound);
        /* really bf16: float32 products would stay below about n * 2^-24 */
        if (!(worst > 0x1p-12)) fail_msg("case %d: largest |y - ref| / S = %.3g: not bf16 rounding", i, worst);
        if (worst > worst_all) worst_all = worst;
    }
    print_message("largest |y - ref| / S %.4g (2^%.2f); largest fraction of the bound used %.3f\n", worst_all,
                  log2(worst_all), worst_of_bound);
}

/* bp__conv_bf16_ok: a 16-lane block at least half used (Cog >= 8). */
static void test_bf16_ok(void **state)
{
    (void)state;
    const ccase wide = {3, 1, {3, 3, 3}, 4, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}};
    const ccase depthwise = {3, 1, {3, 3, 3}, 8, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 8, 0, {0}, {0}};
    const ccase *cs[2] = {&wide, &depthwise};
    for (int i = 0; i < 2; i++) {
        bp_node *node;
        bp_conv *cv = make_conv(cs[i], &node);
        int64_t xs[5] = {1, 3, 3, 3, cs[i]->cin}, ys[5];
        int yd;
        bp__conv_geom g;
        BP_OK_OR_FAIL(bp__conv_geom_init(&g, cv, 5, xs, ys, &yd));
#if defined(BPC_HAVE_BF16)
        assert_true(bp__conv_bf16_ok(&g) == (i == 0));
#else
        assert_false(bp__conv_bf16_ok(&g));
#endif
        bp_node_free(node);
    }
}

/* Conv's update() runs the bf16 kernel exactly when BP_PRECISION_BF16 is
 * active (same bits as calling it), and float32 again after switching back. */
static void test_update_dispatches_on_precision(void **state)
{
    (void)state;
    if (!bp_bf16_available()) {
        print_message("skipped: this CPU or build cannot run AVX512-BF16 (or BPC_NO_BF16 is set)\n");
        skip();
    }
    const ccase c = {3, 1, {3, 4, 9}, 8, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}};
    bp_node *node;
    bp_conv *cv = make_conv(&c, &node);
    int64_t xs[5] = {1, 3, 4, 9, 8}, ys[5];
    int yd;
    bp__conv_geom g;
    BP_OK_OR_FAIL(bp__conv_geom_init(&g, cv, 5, xs, ys, &yd));
    const int64_t nx = g.B * g.Pin * g.Cin, ny = g.B * g.Pout * g.Cout;
    bp_tensor *x;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs));
    unsigned seed = 99u;
    for (int64_t i = 0; i < nx; i++) bp_tensor_set(x, i, frand(&seed));
    float *want = floats(ny, NAN);
    BP_OK_OR_FAIL(bp__conv_forward_bf16(&g, want, bp_tensor_creals(x), bp_tensor_creals(cv->w->value),
                                        cv->b ? bp_tensor_creals(cv->b->value) : NULL));
    bp_tensor *y;
    BP_OK_OR_FAIL(bp_set_precision(BP_PRECISION_BF16));
    BP_OK_OR_FAIL(bp_node_update(node, x, &y));
    int64_t same = 0;
    for (int64_t i = 0; i < ny; i++) same += bp_tensor_creals(y)[i] == want[i];
    assert_int_equal(same, ny);
    bp_tensor_free(y);
    BP_OK_OR_FAIL(bp_set_precision(BP_PRECISION_FLOAT32));
    BP_OK_OR_FAIL(bp_node_update(node, x, &y));
    same = 0;
    for (int64_t i = 0; i < ny; i++) same += bp_tensor_creals(y)[i] == want[i];
    assert_true(same < ny / 2); /* float32 sums of unrounded products: mostly other bits */
    bp_tensor_free(y);
    bp_tensor_free(x);
    free(want);
    bp_node_free(node);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_ok),
        cmocka_unit_test(test_bf16_forward_against_reference),
        cmocka_unit_test(test_update_dispatches_on_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
