/* tests/test_conv_direct.c — Conv's direct (register-blocked, channels-last)
 * kernels and its im2col + GEMM path against a float64 reference computed
 * here by the definition in bpc/conv.h, on shapes chosen to hit each path's
 * edges: channel counts that are not multiples of the vector width (partial
 * output blocks, partial input chunks), two output blocks, tiny volumes that
 * are all padding, output rows that split into uneven position blocks,
 * stride and dilation (non-unit kernels, strided dx on GEMM), groups,
 * asymmetric explicit padding, unbatched input, and Conv1d/Conv2d. Gradients
 * start from nonzero values, since the graph adds the op's own gradient
 * buffer into them (the op writes that buffer, it never reads it).
 *
 * Tolerance: each value is a sum of n products; float32 rounding of any
 * summation order stays far below 1e-5 of sum |product| for n up to a few
 * thousand, while a wrong index or a dropped tap moves a value by about one
 * whole product, i.e. > 1e-3 of that sum for every case here. */
#include "bp_test.h"
#include <stdlib.h>
#include <omp.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/conv.h>

typedef struct ccase {
    int nsp, B;          /* B 0: one unbatched sample */
    int in[3], cin, cout;
    int k[3], s[3], d[3], groups;
    int pad;             /* 0 SAME, 1 VALID, 2 explicit lo/hi */
    int lo[3], hi[3];
} ccase;

/* Reference: y, dx, dw, db in float64, with sum |term| for each value. */
typedef struct ref {
    double *y, *ya, *dx, *dxa, *dw, *dwa, *db, *dba;
} ref;

static double frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

static void check_close(const char *what, int ci, const bp_tensor *got, const double *want, const double *absum,
                        int64_t n)
{
    if (got->numel != n) fail_msg("case %d %s: %lld values, expected %lld", ci, what, (long long)got->numel, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        double a = bp_tensor_get(got, i);
        if (!(fabs(a - want[i]) <= 1e-6 + 1e-5 * absum[i]))
            fail_msg("case %d %s[%lld] = %.9g, expected %.9g (sum |terms| %.3g)", ci, what, (long long)i, a, want[i],
                     absum[i]);
    }
}

static void run(int ci, const ccase *c, int threads)
{
    omp_set_num_threads(threads);
    bp_mode train = bp_training_mode(c->B ? c->B : 1);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.groups = c->groups;
    o.padding = c->pad == 0 ? BP_PAD_SAME : c->pad == 1 ? BP_PAD_VALID : BP_PAD_EXPLICIT;
    for (int i = 0; i < c->nsp; i++) {
        o.kernel_size[i] = c->k[i];
        o.stride[i] = c->s[i];
        o.dilation[i] = c->d[i];
        o.pad_lo[i] = c->lo[i];
        o.pad_hi[i] = c->hi[i];
    }
    bp_node *n;
    BP_OK_OR_FAIL(c->nsp == 1   ? bp_conv1d_new(&n, c->cin, c->cout, &o)
                  : c->nsp == 2 ? bp_conv2d_new(&n, c->cin, c->cout, &o)
                                : bp_conv3d_new(&n, c->cin, c->cout, &o));
    bp_conv *cv = bp_conv_cast(n);
    /* 3-D view of the geometry, unused dims of size 1. */
    int64_t B = c->B ? c->B : 1, in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, lo[3] = {0, 0, 0}, k[3] = {1, 1, 1},
            s[3] = {1, 1, 1}, d[3] = {1, 1, 1};
    int64_t xshape[5], yshape[5];
    int nd = 0;
    if (c->B) xshape[nd] = yshape[nd] = c->B, nd++;
    for (int i = 0; i < c->nsp; i++) {
        in[i] = c->in[i], k[i] = c->k[i], s[i] = c->s[i] ? c->s[i] : 1, d[i] = c->d[i] ? c->d[i] : 1;
        BP_OK_OR_FAIL(bp_conv_out_size(cv, i, in[i], &out[i], &lo[i]));
        xshape[nd] = in[i];
        yshape[nd++] = out[i];
    }
    xshape[nd] = c->cin;
    yshape[nd++] = c->cout;
    int64_t Cg = c->cin / c->groups, Cog = c->cout / c->groups, taps = k[0] * k[1] * k[2];
    int64_t nx = B * in[0] * in[1] * in[2] * c->cin, ny = B * out[0] * out[1] * out[2] * c->cout,
            nw = taps * Cg * c->cout;

    unsigned seed = 12345u + (unsigned)ci;
    bp_tensor *x, *gx, *dy, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, nd, xshape));
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, nd, xshape));
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, nd, yshape));
    for (int64_t i = 0; i < nx; i++) bp_tensor_set(x, i, frand(&seed));
    for (int64_t i = 0; i < ny; i++) bp_tensor_set(dy, i, frand(&seed));
    for (int64_t i = 0; i < nw; i++) bp_tensor_set(cv->w->value, i, frand(&seed));
    for (int64_t i = 0; i < c->cout; i++) bp_tensor_set(cv->b->value, i, frand(&seed));
    /* Read the values back as the layer sees them (rounded to float32). */
    double *X = malloc(sizeof(double) * (size_t)nx), *DY = malloc(sizeof(double) * (size_t)ny),
           *W = malloc(sizeof(double) * (size_t)nw), *BI = malloc(sizeof(double) * (size_t)c->cout);
    for (int64_t i = 0; i < nx; i++) X[i] = bp_tensor_get(x, i);
    for (int64_t i = 0; i < ny; i++) DY[i] = bp_tensor_get(dy, i);
    for (int64_t i = 0; i < nw; i++) W[i] = bp_tensor_get(cv->w->value, i);
    for (int64_t i = 0; i < c->cout; i++) BI[i] = bp_tensor_get(cv->b->value, i);

    ref r;
    r.y = calloc((size_t)ny, sizeof(double)), r.ya = calloc((size_t)ny, sizeof(double));
    r.dx = calloc((size_t)nx, sizeof(double)), r.dxa = calloc((size_t)nx, sizeof(double));
    r.dw = calloc((size_t)nw, sizeof(double)), r.dwa = calloc((size_t)nw, sizeof(double));
    r.db = calloc((size_t)c->cout, sizeof(double)), r.dba = calloc((size_t)c->cout, sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t o0 = 0; o0 < out[0]; o0++)
            for (int64_t o1 = 0; o1 < out[1]; o1++)
                for (int64_t o2 = 0; o2 < out[2]; o2++) {
                    int64_t yo = (((b * out[0] + o0) * out[1] + o1) * out[2] + o2) * c->cout;
                    for (int64_t co = 0; co < c->cout; co++) {
                        r.y[yo + co] = BI[co], r.ya[yo + co] = fabs(BI[co]);
                        r.db[co] += DY[yo + co], r.dba[co] += fabs(DY[yo + co]);
                    }
                    for (int64_t a = 0; a < k[0]; a++)
                        for (int64_t bb = 0; bb < k[1]; bb++)
                            for (int64_t cc = 0; cc < k[2]; cc++) {
                                int64_t i0 = o0 * s[0] - lo[0] + a * d[0], i1 = o1 * s[1] - lo[1] + bb * d[1],
                                        i2 = o2 * s[2] - lo[2] + cc * d[2];
                                if (i0 < 0 || i0 >= in[0] || i1 < 0 || i1 >= in[1] || i2 < 0 || i2 >= in[2]) continue;
                                int64_t xo = (((b * in[0] + i0) * in[1] + i1) * in[2] + i2) * c->cin;
                                int64_t t = (a * k[1] + bb) * k[2] + cc;
                                for (int64_t co = 0; co < c->cout; co++) {
                                    int64_t g = co / Cog;
                                    for (int64_t q = 0; q < Cg; q++) {
                                        double xv = X[xo + g * Cg + q], wv = W[(t * Cg + q) * c->cout + co],
                                               dv = DY[yo + co];
                                        r.y[yo + co] += xv * wv, r.ya[yo + co] += fabs(xv * wv);
                                        r.dx[xo + g * Cg + q] += dv * wv, r.dxa[xo + g * Cg + q] += fabs(dv * wv);
                                        r.dw[(t * Cg + q) * c->cout + co] += xv * dv;
                                        r.dwa[(t * Cg + q) * c->cout + co] += fabs(xv * dv);
                                    }
                                }
                            }
                }

    /* Gradients accumulate: start them from nonzero values. */
    for (int64_t i = 0; i < nx; i++) {
        bp_tensor_set(gx, i, frand(&seed));
        r.dx[i] += bp_tensor_get(gx, i), r.dxa[i] += fabs(bp_tensor_get(gx, i));
    }
    for (int64_t i = 0; i < nw; i++) {
        bp_tensor_set(cv->w->grad, i, frand(&seed));
        r.dw[i] += bp_tensor_get(cv->w->grad, i), r.dwa[i] += fabs(bp_tensor_get(cv->w->grad, i));
    }
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    assert_true(bp_tensor_has_shape(y, nd, yshape));
    check_close("y", ci, y, r.y, r.ya, ny);
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    check_close("dx", ci, gx, r.dx, r.dxa, nx);
    check_close("dw", ci, cv->w->grad, r.dw, r.dwa, nw);
    check_close("db", ci, cv->b->grad, r.db, r.dba, c->cout);

    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_tensor_free(dy);
    bp_node_free(n);
    free(X), free(DY), free(W), free(BI);
    free(r.y), free(r.ya), free(r.dx), free(r.dxa), free(r.dw), free(r.dwa), free(r.db), free(r.dba);
}

static const ccase cases[] = {
    /* the benchmark's channels on an odd-sized volume: one full 2-vector block, rows of 7 */
    {3, 2, {3, 4, 7}, 16, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* 20 outputs (a partial 2-vector block), 5 inputs (a partial chunk), a 1x1x3 volume: mostly padding */
    {3, 2, {1, 1, 3}, 5, 20, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* 48 outputs (blocks of 32 and 16), 17 inputs (chunks 16 + 1), dilation 2, asymmetric padding */
    {3, 1, {4, 3, 9}, 17, 48, {2, 2, 3}, {1, 1, 1}, {1, 2, 2}, 1, 2, {1, 0, 2}, {0, 1, 1}},
    /* stride 2 (strided dx on GEMM + col2im), 2 groups of 4 -> 6 channels */
    {3, 2, {5, 4, 9}, 8, 12, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, 2, 0, {0}, {0}},
    /* 2 groups of 8 -> 8, dilation along dim 1 only, VALID */
    {3, 1, {3, 6, 5}, 16, 16, {2, 2, 2}, {1, 1, 1}, {1, 2, 1}, 2, 1, {0}, {0}},
    /* 3 outputs: forward and dw on GEMM; 4 inputs per group: dx on the direct kernel */
    {3, 2, {3, 3, 4}, 4, 3, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* Conv1d, 37 positions: uneven position blocks for one vector of outputs */
    {1, 3, {37}, 16, 16, {5}, {1}, {1}, 1, 0, {0}, {0}},
    /* Conv1d, 24 positions: two full 12-position blocks for two output vectors; dx on GEMM (3 inputs) */
    {1, 2, {24}, 3, 32, {3}, {1}, {1}, 1, 0, {0}, {0}},
    /* Conv2d, rows of 32: two full 16-position blocks for one output vector (forward and dx) */
    {2, 1, {2, 32}, 16, 16, {3, 3}, {1, 1}, {1, 1}, 1, 0, {0}, {0}},
    /* Conv2d, one input channel (a first layer), 40 positions per row, stride 3 along the row */
    {2, 2, {3, 40}, 1, 24, {3, 3}, {1, 3}, {1, 1}, 1, 0, {0}, {0}},
    /* one input channel (train3d's first layer): packed single-channel rows, dw with taps as accumulators,
     * rows of 33 positions (uneven blocks) */
    {3, 2, {5, 6, 33}, 1, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* one input channel, 40 outputs (a full and a partial output block), dilation 2, asymmetric padding */
    {3, 1, {4, 3, 11}, 1, 40, {2, 2, 3}, {1, 1, 1}, {1, 1, 2}, 1, 2, {1, 0, 2}, {0, 1, 1}},
    /* one input channel per group (2 groups of 1 -> 6), stride 2 along the row */
    {3, 1, {3, 4, 9}, 2, 12, {3, 3, 3}, {1, 1, 2}, {1, 1, 1}, 2, 0, {0}, {0}},
    /* one input channel, 45 taps: dw in several tap chunks for one and two output vectors */
    {3, 1, {4, 4, 9}, 1, 16, {3, 3, 5}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    {3, 1, {4, 4, 9}, 1, 32, {3, 3, 5}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}},
    /* unbatched Conv3d, the kernel as large as the VALID input: one output position */
    {3, 0, {3, 2, 3}, 6, 9, {3, 2, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {0}, {0}},
    /* explicit low padding larger than the dilated kernel span (dx's own padding goes negative) */
    {3, 1, {2, 2, 6}, 4, 4, {1, 1, 2}, {1, 1, 1}, {1, 1, 1}, 1, 2, {0, 0, 3}, {0, 0, 0}},
};

static void test_cases_one_thread(void **state)
{
    (void)state;
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) run(i, &cases[i], 1);
}

static void test_cases_two_threads(void **state)
{
    (void)state;
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) run(i, &cases[i], 2);
}

/* Forward and dx write each value from one thread in a fixed order, so they
 * do not depend on the thread count; dw is summed per thread, then in thread
 * order, so it repeats bit for bit at a given thread count. */
static void test_deterministic(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 3;
    bp_node *n;
    BP_OK_OR_FAIL(bp_conv3d_new(&n, 16, 32, &o));
    bp_conv *cv = bp_conv_cast(n);
    int64_t xs[5] = {2, 4, 5, 6, 16}, ys[5] = {2, 4, 5, 6, 32};
    bp_tensor *x, *dy, *gx, *y[3], *dx[3], *dw[3];
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs));
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, 5, ys));
    unsigned seed = 7;
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, frand(&seed));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, frand(&seed));
    int threads[3] = {1, 2, 2};
    for (int r = 0; r < 3; r++) {
        omp_set_num_threads(threads[r]);
        BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, 5, xs));
        BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
        bp_tensor_fill(cv->w->grad, 0);
        BP_OK_OR_FAIL(bp_node_update(n, x, &y[r]));
        BP_OK_OR_FAIL(bp_backward_with(y[r], dy));
        dx[r] = gx;
        BP_OK_OR_FAIL(bp_tensor_clone(&dw[r], cv->w->grad));
    }
    for (int r = 1; r < 3; r++) {
        assert_memory_equal(bp_tensor_creals(y[r]), bp_tensor_creals(y[0]), sizeof(bp_real) * (size_t)y[0]->numel);
        assert_memory_equal(bp_tensor_creals(dx[r]), bp_tensor_creals(dx[0]), sizeof(bp_real) * (size_t)x->numel);
    }
    assert_memory_equal(bp_tensor_creals(dw[2]), bp_tensor_creals(dw[1]), sizeof(bp_real) * (size_t)dw[1]->numel);
    for (int r = 0; r < 3; r++) {
        bp_tensor_free(y[r]);
        bp_tensor_free(dx[r]);
        bp_tensor_free(dw[r]);
    }
    bp_tensor_free(x);
    bp_tensor_free(dy);
    bp_node_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_one_thread),
        cmocka_unit_test(test_cases_two_threads),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
