/* tests/test_conv_bf16_bwd.c — the bf16 Conv backward (layers/conv_bf16.c:
 * dx and dw) against the reference backward kernel, on Conv1d/2d/3d with
 * groups, strides (also larger than the kernel, so some dx positions get no
 * tap), dilation, SAME / VALID / explicit padding, odd channel counts (an odd
 * reduction pair, partial 16-lane blocks) and rows that are not a multiple of
 * the 16-wide register block; and Conv's backward dispatch: bf16 where the
 * forward ran in bf16 and the shape suits the kernels, float32 elsewhere.
 * The kernel tests skip (with a message) where the CPU or build cannot run
 * AVX512-BF16.
 *
 * Bound, derived from bf16 rounding as for the forward (tests/test_conv_bf16.c):
 * both factors of each product are rounded once to bf16 (relative error
 * <= u_b = 2^-8 each), so a product errs by at most (1 + u_b)^2 - 1 =
 * 2^-7 + 2^-16 relative; the products are exact in float32, and float32
 * additions (u = 2^-24) add at most gamma_n = n*u / (1 - n*u) times the sum of
 * the rounded terms' magnitudes (<= (1 + 2^-6) S), n the most additions on
 * any term's path to the result; the reference sums in double and rounds once
 * (u). With S = sum |a| |b| over the reduction (the reference kernel on |dy|,
 * |w|, |x|):
 *   |v - v_ref| <= (2^-7 + 2^-16 + (n + 2) * u * (1 + 2^-6)) * S, where
 *   dx: n = taps * 2 * ceil(Cog / 2), the products of one dx element's sum
 *       (zero pairs included);
 *   dw: n = P + 3 + rows + threads, P = B * O0 * O1 * 2 * ceil(O2 / 2)
 *       products (a work item's accumulator chains), up to 3 additions
 *       joining an item's chains, at most one per row merging an item into
 *       its thread's sums, and the threads' merge.
 * (vdpbf16ps flushes denormal results; inputs in [-1, 1] give none.)
 * And the kernels really are bf16: the largest |v - v_ref| / S over a case
 * is above 2^-12, far beyond what float32 products would reach (~n * 2^-24). */
#include "bp_test.h"
#include <stdlib.h>
#include <omp.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
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
    /* the benchmark's channels on an odd volume: rows of 7 */
    {3, 2, {3, 4, 7}, 16, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* rows of 37 (16 + 16 + 4 + 1): every register block size of dx */
    {3, 1, {2, 3, 37}, 8, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* 5 inputs (dw blocks 4 + 1), 20 outputs (dw: a full and a partial block) */
    {3, 2, {2, 3, 9}, 5, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* dilation, asymmetric explicit padding, 48 outputs, 17 inputs (dx: 16 + 1 lanes) */
    {3, 1, {4, 3, 9}, 17, 48, {2, 2, 3}, {1, 1, 1}, {1, 2, 2}, 1, 2, {1, 0, 2}, {0, 1, 1}},
    /* strides 2, 2 groups of 4 -> 8 */
    {3, 2, {5, 4, 19}, 8, 16, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, 2, 0, {0}, {0}},
    /* 3 groups of odd widths (3 -> 9: an odd pair for dx), strides and dilation together */
    {3, 1, {6, 5, 21}, 9, 27, {3, 3, 3}, {2, 3, 2}, {2, 1, 2}, 3, 0, {0}, {0}},
    /* one input channel (a first layer), VALID */
    {3, 1, {4, 5, 20}, 1, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {0}, {0}},
    /* stride larger than the kernel (dx positions no tap reaches), padding past the kernel */
    {3, 1, {5, 5, 18}, 3, 10, {2, 1, 2}, {3, 2, 3}, {1, 1, 1}, 1, 2, {1, 0, 3}, {0, 0, 1}},
    /* stride 2 with dilation 2 along the row, 40 inputs (dx: 16 + 16 + 8 lanes), 13 outputs (odd pair) */
    {3, 1, {3, 4, 23}, 40, 13, {1, 2, 3}, {1, 2, 2}, {1, 1, 2}, 1, 0, {0}, {0}},
    /* depthwise-like 4 groups of 1 -> 2 (the dispatch keeps these float32; the kernels still hold) */
    {3, 2, {3, 3, 11}, 4, 8, {3, 3, 3}, {1, 1, 2}, {1, 1, 1}, 4, 0, {0}, {0}},
    /* 2-D */
    {2, 1, {3, 32}, 16, 16, {3, 3}, {1, 1}, {1, 1}, 1, 0, {0}, {0}},
    {2, 0, {7, 26}, 5, 33, {3, 2}, {2, 2}, {2, 1}, 1, 0, {0}, {0}},
    {2, 1, {5, 19}, 6, 20, {2, 3}, {1, 1}, {3, 2}, 2, 2, {2, 1}, {0, 3}},
    {2, 2, {9, 33}, 24, 32, {3, 3}, {3, 2}, {1, 1}, 1, 2, {1, 1}, {1, 1}},
    /* 1-D, one with a row shorter than its stride's phases would cover */
    {1, 3, {37}, 16, 16, {5}, {1}, {1}, 1, 0, {0}, {0}},
    {1, 0, {45}, 7, 13, {4}, {3}, {2}, 1, 0, {0}, {0}},
    {1, 2, {5}, 12, 16, {1}, {4}, {1}, 1, 1, {0}, {0}},
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

static bp_conv *make_conv(const ccase *c, bp_node **n, bool train)
{
    bp_mode mode = bp_training_mode(c->B ? c->B : 1);
    bp_conv_opts o = bp_conv_defaults();
    if (train) o.mode = &mode;
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

static int case_shapes(const ccase *c, int64_t *xshape)
{
    int nd = 0;
    if (c->B) xshape[nd++] = c->B;
    for (int i = 0; i < c->nsp; i++) xshape[nd++] = c->in[i];
    xshape[nd++] = c->cin;
    return nd;
}

/* Asserts |v - ref| <= rel * S everywhere; returns the largest |v - ref| / S
 * and raises *of_bound to the largest fraction of the bound used. */
static double check_bound(const char *what, int ci, const float *v, const float *ref, const float *S, int64_t n,
                          double rel, double *of_bound)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)v[i] - (double)ref[i]), tol = rel * (double)S[i];
        if (!(err <= tol))
            fail_msg("case %d: %s[%lld] = %.9g, reference %.9g, error %.3g over the bound %.3g (S = %.6g)", ci, what,
                     (long long)i, (double)v[i], (double)ref[i], err, tol, (double)S[i]);
        if (S[i] > 0 && err / (double)S[i] > worst) worst = err / (double)S[i];
    }
    if (worst / rel > *of_bound) *of_bound = worst / rel;
    return worst;
}

/* Case c's dx and dw by the bf16 kernels against the reference backward;
 * worst[0], worst[1]: their largest |v - ref| / S. */
static void run_case(int ci, const ccase *c, double worst[2], double of_bound[2])
{
    bp_node *node;
    bp_conv *cv = make_conv(c, &node, false);
    int64_t xshape[5], yshape[5];
    int nd = case_shapes(c, xshape), yd;
    bp__conv_geom g;
    BP_OK_OR_FAIL(bp__conv_geom_init(&g, cv, nd, xshape, yshape, &yd));
    const int64_t nx = g.B * g.Pin * g.Cin, ny = g.B * g.Pout * g.Cout, nw = g.K * g.Cout, taps = g.K / g.Cg;
    unsigned seed = 777u + (unsigned)ci;
    float *x = floats(nx, 0), *w = floats(nw, 0), *dy = floats(ny, 0);
    for (int64_t i = 0; i < nx; i++) x[i] = (float)frand(&seed);
    for (int64_t i = 0; i < nw; i++) w[i] = (float)frand(&seed);
    for (int64_t i = 0; i < ny; i++) dy[i] = (float)frand(&seed);
    float *xa = floats(nx, 0), *wa = floats(nw, 0), *dya = floats(ny, 0);
    for (int64_t i = 0; i < nx; i++) xa[i] = fabsf(x[i]);
    for (int64_t i = 0; i < nw; i++) wa[i] = fabsf(w[i]);
    for (int64_t i = 0; i < ny; i++) dya[i] = fabsf(dy[i]);

    float *dx_ref = floats(nx, 0), *dw_ref = floats(nw, 0), *Sx = floats(nx, 0), *Sw = floats(nw, 0);
    BP_OK_OR_FAIL(bp__conv_backward_ref(&g, dx_ref, dw_ref, NULL, dy, x, w));
    BP_OK_OR_FAIL(bp__conv_backward_ref(&g, Sx, Sw, NULL, dya, xa, wa));
    float *dx = floats(nx, NAN), *dw = floats(nw, NAN);
    BP_OK_OR_FAIL(bp__conv_dx_bf16(&g, dx, dy, w));
    BP_OK_OR_FAIL(bp__conv_dw_bf16(&g, dw, dy, x));
    /* the same bits again: per-thread sums added in thread order */
    float *dw2 = floats(nw, NAN);
    BP_OK_OR_FAIL(bp__conv_dw_bf16(&g, dw2, dy, x));
    for (int64_t i = 0; i < nw; i++)
        if (dw2[i] != dw[i]) fail_msg("case %d: dw[%lld] = %.9g, then %.9g", ci, (long long)i, (double)dw[i], (double)dw2[i]);
    free(dw2);

    const double u = 0x1p-24, prod = 0x1p-7 + 0x1p-16;
    const double n_dx = (double)(taps * 2 * ((g.Cog + 1) / 2));
    const double rows = (double)(g.B * g.out[0] * g.out[1]);
    const double n_dw = rows * 2 * (double)((g.out[2] + 1) / 2) + 3 + rows + omp_get_max_threads();
    worst[0] = check_bound("dx", ci, dx, dx_ref, Sx, nx, prod + (n_dx + 2) * u * (1 + 0x1p-6), &of_bound[0]);
    worst[1] = check_bound("dw", ci, dw, dw_ref, Sw, nw, prod + (n_dw + 2) * u * (1 + 0x1p-6), &of_bound[1]);
    free(x), free(w), free(dy), free(xa), free(wa), free(dya);
    free(dx_ref), free(dw_ref), free(Sx), free(Sw), free(dx), free(dw);
    bp_node_free(node);
}

static bool bf16_or_skip(void)
{
    if (bp_bf16_available()) return true;
    print_message("skipped: this CPU or build cannot run AVX512-BF16 (or BPC_NO_BF16 is set)\n");
    return false;
}

static void test_bf16_backward_against_reference(void **state)
{
    (void)state;
    if (!bf16_or_skip()) skip();
    double of_bound[2] = {0, 0}, worst_all[2] = {0, 0};
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) {
        double worst[2];
        run_case(i, &cases[i], worst, of_bound);
        for (int k = 0; k < 2; k++) {
            /* really bf16: float32 products would stay below about n * 2^-24 */
            if (!(worst[k] > 0x1p-12))
                fail_msg("case %d: largest |%s - ref| / S = %.3g: not bf16 rounding", i, k ? "dw" : "dx", worst[k]);
            if (worst[k] > worst_all[k]) worst_all[k] = worst[k];
        }
    }
    print_message("dx: largest |dx - ref| / S %.4g (2^%.2f), largest fraction of the bound used %.3f\n", worst_all[0],
                  log2(worst_all[0]), of_bound[0]);
    print_message("dw: largest |dw - ref| / S %.4g (2^%.2f), largest fraction of the bound used %.3f\n", worst_all[1],
                  log2(worst_all[1]), of_bound[1]);
}

/* dw's per-thread sums: within the bound at 1 and 3 threads too (other
 * merge orders), and the same bits at a given count. */
static void test_bf16_dw_thread_counts(void **state)
{
    (void)state;
    if (!bf16_or_skip()) skip();
    const int saved = omp_get_max_threads();
    for (int th = 1; th <= 3; th += 2) {
        omp_set_num_threads(th);
        double worst[2], of_bound[2] = {0, 0};
        run_case(0, &cases[0], worst, of_bound);
        run_case(13, &cases[13], worst, of_bound);
    }
    omp_set_num_threads(saved);
}

/* The float32 gradients of Conv node n on x for upstream dy, or, with bf16,
 * those of a forward run under BP_PRECISION_BF16 whose backward runs after
 * switching back to FLOAT32 (the backward follows the forward's precision).
 * Fills gx, gw, gb (fresh, the caller frees them). */
static void grads(bp_node *n, bp_tensor *x, const bp_tensor *dy, bool bf16, bp_tensor **gx, bp_tensor **gw,
                  bp_tensor **gb)
{
    bp_conv *cv = bp_conv_cast(n);
    BP_OK_OR_FAIL(bp_tensor_new(gx, BP_REAL_DTYPE, x->ndim, x->shape));
    bp_tensor_fill(*gx, 0);
    bp_tensor_fill(cv->w->grad, 0);
    bp_tensor_fill(cv->b->grad, 0);
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, *gx));
    BP_OK_OR_FAIL(bp_set_precision(bf16 ? BP_PRECISION_BF16 : BP_PRECISION_FLOAT32));
    bp_tensor *y;
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    BP_OK_OR_FAIL(bp_set_precision(BP_PRECISION_FLOAT32));
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, NULL));
    BP_OK_OR_FAIL(bp_tensor_clone(gw, cv->w->grad));
    BP_OK_OR_FAIL(bp_tensor_clone(gb, cv->b->grad));
    bp_tensor_free(y);
}

static int64_t same_bits(const float *a, const float *b, int64_t n)
{
    int64_t same = 0;
    for (int64_t i = 0; i < n; i++) same += a[i] == b[i];
    return same;
}

/* Conv's backward after a bf16 forward: dx by the bf16 kernel exactly when
 * Cg >= 8, dw exactly when Cog >= 8 (same bits as calling the kernels), db
 * always the float32 sum; every other gradient the float32 one, bit for bit.
 * Without AVX512-BF16 (or with BPC_NO_BF16=1) all three are float32. */
static void test_backward_dispatch(void **state)
{
    (void)state;
    const ccase cs[3] = {
        {3, 2, {3, 4, 9}, 8, 16, {3, 3, 3}, {2, 1, 1}, {1, 1, 2}, 1, 0, {0}, {0}}, /* dx and dw bf16 */
        {3, 1, {3, 4, 9}, 4, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}}, /* dw bf16, dx float32 */
        {3, 1, {3, 4, 9}, 8, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 8, 0, {0}, {0}},  /* depthwise: float32 */
    };
    for (int env = 0; env < 2; env++) {
        if (env) setenv("BPC_NO_BF16", "1", 1);
        for (int i = 0; i < 3; i++) {
            const ccase *c = &cs[i];
            bp_node *n;
            bp_conv *cv = make_conv(c, &n, true);
            int64_t xshape[5], yshape[5];
            int nd = case_shapes(c, xshape), yd;
            bp__conv_geom g;
            BP_OK_OR_FAIL(bp__conv_geom_init(&g, cv, nd, xshape, yshape, &yd));
            const int64_t nx = g.B * g.Pin * g.Cin, ny = g.B * g.Pout * g.Cout, nw = g.K * g.Cout;
            unsigned seed = 31u + (unsigned)i;
            bp_tensor *x, *dy;
            BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, nd, xshape));
            BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, yd, yshape));
            for (int64_t j = 0; j < nx; j++) bp_tensor_set(x, j, frand(&seed));
            for (int64_t j = 0; j < ny; j++) bp_tensor_set(dy, j, frand(&seed));
            bp_tensor *gx[2], *gw[2], *gb[2];
            grads(n, x, dy, false, &gx[0], &gw[0], &gb[0]);
            grads(n, x, dy, true, &gx[1], &gw[1], &gb[1]);
            const bool have = bp_bf16_available();
            const bool bdx = have && bp__conv_bf16_ok_dx(&g), bdw = have && bp__conv_bf16_ok_dw(&g);
            assert_true(!env || (!bdx && !bdw));
            const float *X = bp_tensor_creals(x), *DY = bp_tensor_creals(dy), *W = bp_tensor_creals(cv->w->value);
            float *want_dx = floats(nx, NAN), *want_dw = floats(nw, NAN), *want_db = floats(g.Cout, NAN);
            if (bdx) BP_OK_OR_FAIL(bp__conv_dx_bf16(&g, want_dx, DY, W));
            if (bdw) BP_OK_OR_FAIL(bp__conv_dw_bf16(&g, want_dw, DY, X));
            BP_OK_OR_FAIL(bp__conv_dbias(&g, want_db, DY));
            const float *f32_dx = bp_tensor_creals(gx[0]), *f32_dw = bp_tensor_creals(gw[0]);
            if (same_bits(bp_tensor_creals(gx[1]), bdx ? want_dx : f32_dx, nx) != nx)
                fail_msg("case %d (BPC_NO_BF16 %d): dx is not the %s one", i, env, bdx ? "bf16 kernel's" : "float32");
            if (same_bits(bp_tensor_creals(gw[1]), bdw ? want_dw : f32_dw, nw) != nw)
                fail_msg("case %d (BPC_NO_BF16 %d): dw is not the %s one", i, env, bdw ? "bf16 kernel's" : "float32");
            /* the bf16 gradients are not the float32 ones */
            if (bdx) assert_true(same_bits(want_dx, f32_dx, nx) < nx / 2);
            if (bdw) assert_true(same_bits(want_dw, f32_dw, nw) < nw / 2);
            assert_int_equal(same_bits(bp_tensor_creals(gb[1]), want_db, g.Cout), g.Cout);
            assert_int_equal(same_bits(bp_tensor_creals(gb[0]), want_db, g.Cout), g.Cout);
            if (env) {
                BP_EXPECT_ERR(bp__conv_dx_bf16(&g, want_dx, DY, W), BP_EUNSUPPORTED, "conv bf16");
                BP_EXPECT_ERR(bp__conv_dw_bf16(&g, want_dw, DY, X), BP_EUNSUPPORTED, "conv bf16");
            }
            for (int k = 0; k < 2; k++) bp_tensor_free(gx[k]), bp_tensor_free(gw[k]), bp_tensor_free(gb[k]);
            free(want_dx), free(want_dw), free(want_db);
            bp_tensor_free(x);
            bp_tensor_free(dy);
            bp_node_free(n);
        }
        if (env) unsetenv("BPC_NO_BF16");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_backward_against_reference),
        cmocka_unit_test(test_bf16_dw_thread_counts),
        cmocka_unit_test(test_backward_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
