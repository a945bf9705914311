/* tests/test_conv_transpose.c — ConvTranspose beyond its conformance rows:
 * the fast kernels (Conv's kernels on the adjoint convolution, and the
 * kernel == stride up-sampling GEMM) against the reference kernels on many
 * shapes (strides 1-3, kernels 1-4, SAME / VALID / explicit padding,
 * output_padding, groups, dilation, one input channel, batch 1, unbatched,
 * channel counts that fill and that do not fill the vector lanes), thread
 * independence of y and dx, hand-worked cases of lax.conv_transpose's
 * definition, and the constructor's and update's errors.
 *
 * Tolerance: the reference run on |x|, |w|, |dy| gives each value's
 * sum |terms| (S); a float32 sum in any order stays below 1e-5 * S, a wrong
 * or missing tap moves a value by a whole term.
 * BPC_TEST_BOTH_FLAVOURS */
#include "bp_test.h"
#include <omp.h>
#include <bpc/bpc.h>
#include "conv_transpose_internal.h"

#ifdef BP_REAL_DOUBLE
#define RTOL 1e-12
#else
#define RTOL 1e-5
#endif

static int setup(void **state)
{
    (void)state;
    bp_share_clear();
    return 0;
}

typedef struct tcase {
    int nsp, B;          /* B 0: one unbatched sample */
    int in[3], cin, cout;
    int k[3], s[3], d[3], groups;
    int pad;             /* 0 SAME, 1 VALID, 2 explicit lo/hi */
    int lo[3], hi[3], op[3];
} tcase;

static bp_status make(bp_node **n, const tcase *c)
{
    bp_conv_transpose_opts o = bp_conv_transpose_defaults();
    o.groups = c->groups;
    o.padding = c->pad == 0 ? BP_PAD_SAME : c->pad == 1 ? BP_PAD_VALID : BP_PAD_EXPLICIT;
    for (int i = 0; i < c->nsp; i++) {
        o.kernel_size[i] = c->k[i];
        o.stride[i] = c->s[i];
        o.dilation[i] = c->d[i];
        o.pad_lo[i] = c->lo[i];
        o.pad_hi[i] = c->hi[i];
        o.output_padding[i] = c->op[i];
    }
    return c->nsp == 1   ? bp_conv_transpose1d_new(n, c->cin, c->cout, &o)
           : c->nsp == 2 ? bp_conv_transpose2d_new(n, c->cin, c->cout, &o)
                         : bp_conv_transpose3d_new(n, c->cin, c->cout, &o);
}

static double frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (double)(*s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
}

static bp_real *rand_arr(int64_t n, unsigned *seed)
{
    bp_real *a = malloc(sizeof(bp_real) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) a[i] = (bp_real)frand(seed);
    return a;
}

static bp_real *abs_arr(const bp_real *a, int64_t n)
{
    bp_real *b = malloc(sizeof(bp_real) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) b[i] = a[i] < 0 ? -a[i] : a[i];
    return b;
}

static void close_to(int ci, const char *what, const bp_real *got, const bp_real *want, const bp_real *absum,
                     int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - (double)want[i]) <= 1e-30 + RTOL * (double)absum[i]))
            fail_msg("case %d %s[%lld] = %.9g, expected %.9g (sum |terms| %.3g)", ci, what, (long long)i,
                     (double)got[i], (double)want[i], (double)absum[i]);
}

static void run_case(int ci, const tcase *c)
{
    bp_node *n;
    BP_OK_OR_FAIL(make(&n, c));
    bp_conv_transpose *ct = bp_conv_transpose_cast(n);
    assert_non_null(ct);
    int64_t shape[5];
    int nd = 0;
    if (c->B) shape[nd++] = c->B;
    for (int i = 0; i < c->nsp; i++) shape[nd++] = c->in[i];
    shape[nd++] = c->cin;
    bp__convt_geom g;
    int64_t yshape[5];
    int yd;
    BP_OK_OR_FAIL(bp__convt_geom_init(&g, ct, nd, shape, yshape, &yd));
    assert_int_equal(yd, nd);
    int64_t nx = g.B * g.in[0] * g.in[1] * g.in[2] * g.Cin, ny = g.B * g.out[0] * g.out[1] * g.out[2] * g.Cout;
    int64_t nw = g.taps * g.Cg * g.Cout;
    unsigned seed = 1000u + (unsigned)ci;
    bp_real *x = rand_arr(nx, &seed), *w = rand_arr(nw, &seed), *b = rand_arr(g.Cout, &seed),
            *dy = rand_arr(ny, &seed);
    bp_real *ax = abs_arr(x, nx), *aw = abs_arr(w, nw), *ab = abs_arr(b, g.Cout), *ady = abs_arr(dy, ny);
    bp_real *yr = malloc(sizeof(bp_real) * (size_t)ny), *ya = malloc(sizeof(bp_real) * (size_t)ny);
    bp_real *dxr = malloc(sizeof(bp_real) * (size_t)nx), *dxa = malloc(sizeof(bp_real) * (size_t)nx);
    bp_real *dwr = malloc(sizeof(bp_real) * (size_t)nw), *dwa = malloc(sizeof(bp_real) * (size_t)nw);
    bp_real *dbr = malloc(sizeof(bp_real) * (size_t)g.Cout), *dba = malloc(sizeof(bp_real) * (size_t)g.Cout);
    bp__convt_forward_ref(&g, yr, x, w, b);
    bp__convt_forward_ref(&g, ya, ax, aw, ab);
    BP_OK_OR_FAIL(bp__convt_backward_ref(&g, dxr, dwr, dbr, dy, x, w));
    BP_OK_OR_FAIL(bp__convt_backward_ref(&g, dxa, dwa, dba, ady, ax, aw));
    bp_real *y1 = NULL, *dx1 = NULL;
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        bp_real *y = malloc(sizeof(bp_real) * (size_t)ny), *dx = malloc(sizeof(bp_real) * (size_t)nx);
        bp_real *dw = malloc(sizeof(bp_real) * (size_t)nw), *db = malloc(sizeof(bp_real) * (size_t)g.Cout);
        /* garbage first: every kernel must write its whole output */
        for (int64_t i = 0; i < ny; i++) y[i] = (bp_real)1e30;
        for (int64_t i = 0; i < nx; i++) dx[i] = (bp_real)1e30;
        for (int64_t i = 0; i < nw; i++) dw[i] = (bp_real)1e30;
        for (int64_t i = 0; i < g.Cout; i++) db[i] = (bp_real)1e30;
        BP_OK_OR_FAIL(bp__convt_forward(&g, y, x, w, b));
        BP_OK_OR_FAIL(bp__convt_backward(&g, dx, dw, db, dy, x, w));
        close_to(ci, "y", y, yr, ya, ny);
        close_to(ci, "dx", dx, dxr, dxa, nx);
        close_to(ci, "dw", dw, dwr, dwa, nw);
        close_to(ci, "db", db, dbr, dba, g.Cout);
        if (threads == 1) {
            y1 = y;
            dx1 = dx;
        } else {
            /* y and dx do not depend on the thread count (bpc/conv_transpose.h) */
            if (memcmp(y, y1, sizeof(bp_real) * (size_t)ny)) fail_msg("case %d: y differs at 2 threads", ci);
            if (memcmp(dx, dx1, sizeof(bp_real) * (size_t)nx)) fail_msg("case %d: dx differs at 2 threads", ci);
            free(y);
            free(dx);
        }
        free(dw);
        free(db);
    }
    omp_set_num_threads(1);
    free(y1), free(dx1);
    free(x), free(w), free(b), free(dy), free(ax), free(aw), free(ab), free(ady);
    free(yr), free(ya), free(dxr), free(dxa), free(dwr), free(dwa), free(dbr), free(dba);
    bp_node_free(n);
}

/* Hand-picked shapes: each path and its edges. */
static const tcase CASES[] = {
    /* the U-Net up-sampling (kernel == stride): the GEMM-per-phase forward */
    {3, 2, {4, 3, 5}, 8, 4, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, 1, 0, {0}, {0}, {0}},
    {3, 1, {3, 4, 2}, 32, 16, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, 1, 1, {0}, {0}, {0}},
    {3, 2, {2, 3, 3}, 6, 4, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, 2, 0, {0}, {0}, {0}},   /* groups */
    {2, 1, {3, 4}, 3, 5, {3, 2}, {3, 2}, {1, 1}, 1, 1, {0}, {0}, {0}},              /* k = s = 3 x 2 */
    {3, 0, {3, 2, 4}, 5, 3, {2, 1, 2}, {2, 1, 2}, {1, 1, 1}, 1, 0, {0}, {0}, {0}},  /* unbatched */
    {1, 2, {7}, 1, 1, {2}, {2}, {1}, 1, 0, {0}, {0}, {0}},                          /* one channel */
    {3, 1, {2, 2, 2}, 4, 40, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, 1, 0, {0}, {0}, {0}}, /* two output vectors */
    /* stride 1: the direct dx kernel forward */
    {3, 2, {4, 3, 5}, 8, 6, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 0, {0}, {0}, {0}},
    {3, 1, {3, 4, 5}, 5, 17, {3, 2, 3}, {1, 1, 1}, {2, 1, 1}, 1, 1, {0}, {0}, {0}},
    {2, 2, {5, 4}, 8, 8, {3, 3}, {1, 1}, {1, 1}, 2, 2, {0, 2}, {1, 0}, {0}},
    {2, 1, {5, 6}, 20, 36, {2, 3}, {1, 1}, {1, 2}, 1, 0, {0}, {0}, {0}},
    /* strided, overlapping: GEMM + col2im forward, direct dx / dw */
    {3, 2, {3, 3, 4}, 8, 8, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, 1, 0, {0}, {0}, {0}},
    {3, 1, {3, 2, 3}, 16, 8, {4, 3, 3}, {2, 3, 2}, {1, 1, 1}, 1, 2, {1, 2, 0}, {2, 0, 1}, {1, 0, 1}},
    {1, 2, {6}, 4, 6, {4}, {3}, {2}, 2, 1, {0}, {0}, {1}},
    {2, 1, {4, 3}, 12, 9, {3, 2}, {2, 3}, {2, 1}, 3, 2, {3, 1}, {0, 4}, {1, 2}},
    {3, 0, {2, 3, 2}, 3, 4, {1, 2, 3}, {3, 2, 1}, {1, 1, 2}, 1, 0, {0}, {0}, {2, 1, 1}},
    {1, 1, {5}, 1, 3, {1}, {3}, {1}, 1, 1, {0}, {0}, {0}},                          /* kernel < stride: gaps */
    {2, 2, {3, 3}, 6, 6, {2, 2}, {3, 3}, {1, 1}, 6, 0, {0}, {0}, {0}},              /* depthwise, gaps */
};

static void test_fast_vs_ref_cases(void **state)
{
    (void)state;
    for (int i = 0; i < (int)(sizeof CASES / sizeof CASES[0]); i++) run_case(i, &CASES[i]);
}

/* Generated shapes: strides 1-3, kernels 1-4, dilation 1-2, every padding
 * kind, output_padding, groups 1-2, one input channel, batch 0-2. */
static void test_fast_vs_ref_sweep(void **state)
{
    (void)state;
    unsigned seed = 7;
    int done = 0;
    for (int it = 0; done < 120 && it < 2000; it++) {
        tcase c = {0};
        c.nsp = 1 + (int)((frand(&seed) + 1) * 1.5);
        if (c.nsp > 3) c.nsp = 3;
        c.B = (int)((frand(&seed) + 1) * 1.5);
        c.groups = frand(&seed) > 0.4 ? 2 : 1;
        int per = 1 + (int)((frand(&seed) + 1) * 4.5);
        c.cin = c.groups * (frand(&seed) > 0.8 ? 1 : per);
        c.cout = c.groups * (1 + (int)((frand(&seed) + 1) * 5));
        c.pad = (int)((frand(&seed) + 1) * 1.5);
        for (int i = 0; i < c.nsp; i++) {
            c.in[i] = 1 + (int)((frand(&seed) + 1) * 2.5);
            c.k[i] = 1 + (int)((frand(&seed) + 1) * 2);
            c.s[i] = 1 + (int)((frand(&seed) + 1) * 1.5);
            c.d[i] = frand(&seed) > 0.6 ? 2 : 1;
            int span = (c.k[i] - 1) * c.d[i] + 1, lim = c.s[i] > c.d[i] ? c.s[i] : c.d[i];
            c.lo[i] = (int)((frand(&seed) + 1) * 0.5 * span);
            if (c.lo[i] > span - 1) c.lo[i] = span - 1;
            c.hi[i] = (int)((frand(&seed) + 1) * 2);
            c.op[i] = frand(&seed) > 0.5 ? (int)((frand(&seed) + 1) * 0.5 * lim) % lim : 0;
        }
        bp_node *n;
        if (make(&n, &c)) continue;
        /* skip the shapes whose output is empty (explicit pads below the span) */
        int64_t shape[5], ys[5];
        int nd = 0, yd;
        if (c.B) shape[nd++] = c.B;
        for (int i = 0; i < c.nsp; i++) shape[nd++] = c.in[i];
        shape[nd++] = c.cin;
        bp__convt_geom g;
        bp_status st = bp__convt_geom_init(&g, bp_conv_transpose_cast(n), nd, shape, ys, &yd);
        bp_node_free(n);
        if (st) continue;
        run_case(100 + it, &c);
        done++;
    }
    assert_int_equal(done, 120);
}

/* The paths the shapes above must reach (so the sweep tests what it claims). */
static void test_paths(void **state)
{
    (void)state;
    bp__convt_geom g;
    int64_t ys[5];
    int yd;
    bp_node *n;
    BP_OK_OR_FAIL(make(&n, &CASES[1]));
    BP_OK_OR_FAIL(bp__convt_geom_init(&g, bp_conv_transpose_cast(n), 5, (int64_t[]){1, 3, 4, 2, 32}, ys, &yd));
    assert_true(bp__convt_is_shuffle(&g));
    assert_true(bp__conv_direct_ok_fwd(&g.adj)); /* dx */
    assert_true(bp__conv_direct_ok_dw(&g.adj));
    assert_int_equal(ys[1], 6);
    assert_int_equal(ys[4], 16);
    bp_node_free(n);
    BP_OK_OR_FAIL(make(&n, &CASES[7]));
    BP_OK_OR_FAIL(bp__convt_geom_init(&g, bp_conv_transpose_cast(n), 5, (int64_t[]){2, 4, 3, 5, 8}, ys, &yd));
    assert_false(bp__convt_is_shuffle(&g));
    assert_true(bp__conv_direct_ok_dx(&g.adj)); /* the forward */
    bp_node_free(n);
}

/* lax.conv_transpose by hand. 1-D, kernel 2, stride 2, SAME: pads (1, 1), so
 * y[2i] = x[i] w[1] and y[2i+1] = x[i] w[0] (the kernel is not flipped, as in
 * BrainPy). Kernel 3, stride 2, VALID: pads (2, 2), out = 2*2 + 1 = 5, the
 * dilated padded input [0 0 1 0 2 0 0] correlated with w = (1, 10, 100). */
static void test_hand_worked(void **state)
{
    (void)state;
    struct {
        int k, pad;
        bp_real w[3];
        double want[5];
        int64_t nout;
    } rows[] = {
        {2, 0, {3, 5, 0}, {5.5, 3.5, 10.5, 6.5, 0}, 4},
        {3, 1, {1, 10, 100}, {100.5, 10.5, 201.5, 20.5, 2.5}, 5},
    };
    for (int r = 0; r < 2; r++) {
        bp_conv_transpose_opts o = bp_conv_transpose_defaults();
        o.kernel_size[0] = rows[r].k;
        o.stride[0] = 2;
        o.padding = rows[r].pad ? BP_PAD_VALID : BP_PAD_SAME;
        bp_node *n;
        BP_OK_OR_FAIL(bp_conv_transpose1d_new(&n, 1, 1, &o));
        bp_conv_transpose *c = bp_conv_transpose_cast(n);
        for (int t = 0; t < rows[r].k; t++) bp_tensor_set(c->w->value, t, rows[r].w[t]);
        bp_tensor_set(c->b->value, 0, 0.5);
        bp_tensor *x, *y;
        BP_OK_OR_FAIL(bp_tensor_from_reals(&x, 3, (int64_t[]){1, 2, 1}, (bp_real[]){1, 2}));
        BP_OK_OR_FAIL(bp_node_update(n, x, &y));
        assert_int_equal(y->ndim, 3);
        assert_int_equal(y->shape[1], rows[r].nout);
        for (int64_t i = 0; i < rows[r].nout; i++) BP_ASSERT_CLOSE(bp_tensor_get(y, i), rows[r].want[i], 1e-6, 0);
        bp_tensor_free(y);
        bp_tensor_free(x);
        bp_node_free(n);
    }
}

static void test_vars(void **state)
{
    (void)state;
    bp_conv_transpose_opts o = bp_conv_transpose_defaults();
    o.kernel_size[0] = 2, o.kernel_size[1] = 3, o.kernel_size[2] = 4;
    o.groups = 2;
    bp_node *n;
    BP_OK_OR_FAIL(bp_conv_transpose3d_new(&n, 6, 8, &o));
    bp_conv_transpose *c = bp_conv_transpose_cast(n);
    assert_true(strncmp(bp_node_name(n), "ConvTranspose3d", 15) == 0);
    int64_t ws[5] = {2, 3, 4, 3, 8}, bs[4] = {1, 1, 1, 8};
    assert_int_equal(c->w->value->ndim, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(c->w->value->shape[i], ws[i]);
    for (int i = 0; i < 4; i++) assert_int_equal(c->b->value->shape[i], bs[i]);
    assert_null(bp_conv_cast(n));
    bp_node_free(n);
}

static void test_errors(void **state)
{
    (void)state;
    bp_node *n = (bp_node *)&n;
    bp_conv_transpose_opts o = bp_conv_transpose_defaults();
    BP_EXPECT_ERR(bp_conv_transpose3d_new(NULL, 1, 1, &o), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 1, 1, &o), BP_EINVAL, "kernel_size[0] must be >= 1, got 0");
    assert_null(n);
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 2;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 0, 1, &o), BP_EINVAL, "got 0 and 1");
    o.groups = 2;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 3, &o), BP_EINVAL, "divisible by groups (2)");
    o.groups = 0;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "groups must be >= 1, got 0");
    o.groups = 1;
    o.stride[1] = -1;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "stride[1]");
    o.stride[1] = 2;
    o.output_padding[1] = 2;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "output_padding[1] must be >= 0 and smaller than stride or dilation (2), got 2");
    o.output_padding[1] = 0;
    o.padding = BP_PAD_EXPLICIT;
    o.pad_lo[2] = 2;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "0 <= low <= 1");
    o.pad_lo[2] = 0;
    o.pad_hi[0] = -1;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "got (0, -1)");
    o.pad_hi[0] = 0;
    o.padding = (bp_padding_kind)7;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "got 7");
    o.padding = BP_PAD_SAME;
    o.dilation[0] = INT32_MAX;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "exceeds 2^31 - 1");
    o.dilation[0] = 1;
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 1 << 20;
    BP_EXPECT_ERR(bp_conv_transpose3d_new(&n, 4, 4, &o), BP_EINVAL, "more than 2^60 weights");
    assert_null(n);

    /* update(): rank, channels, an empty input, an empty output, overflow */
    o = bp_conv_transpose_defaults();
    o.kernel_size[0] = o.kernel_size[1] = 2;
    o.stride[0] = o.stride[1] = 2;
    BP_OK_OR_FAIL(bp_conv_transpose2d_new(&n, 3, 4, &o));
    bp_tensor *x, *y = (bp_tensor *)&y;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 2, (int64_t[]){3, 3}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "expected 4D input (got 2D input): layout (B,H,W,C)");
    assert_null(y);
    bp_tensor_free(x);
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 4, (int64_t[]){1, 2, 2, 5}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "in_channels=3");
    bp_tensor_free(x);
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 4, (int64_t[]){1, 0, 2, 3}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "empty input");
    bp_tensor_free(x);
    bp_node_free(n);
    o = bp_conv_transpose_defaults();
    o.kernel_size[0] = 3;
    o.padding = BP_PAD_EXPLICIT; /* lo 0, hi 0: out = in - 2, empty for in 1 or 2 */
    BP_OK_OR_FAIL(bp_conv_transpose1d_new(&n, 1, 1, &o));
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, (int64_t[]){1, 2, 1}));
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, "gives an empty output (0)");
    bp_tensor_free(x);
    bp_node_free(n);
}

/* Geometry overflow without allocating: bp_conv_transpose_out_size and the geometry on a shape alone. */
static void test_overflow(void **state)
{
    (void)state;
    bp_conv_transpose_opts o = bp_conv_transpose_defaults();
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 2;
    o.stride[0] = o.stride[1] = o.stride[2] = 1 << 20;
    bp_node *n;
    BP_OK_OR_FAIL(bp_conv_transpose3d_new(&n, 1, 1, &o));
    bp_conv_transpose *c = bp_conv_transpose_cast(n);
    int64_t out, lo;
    BP_EXPECT_ERR(bp_conv_transpose_out_size(c, 0, INT64_MAX / 4, &out, &lo), BP_ESHAPE, "overflows int64");
    BP_OK_OR_FAIL(bp_conv_transpose_out_size(c, 0, 3, &out, &lo));
    assert_int_equal(out, 3 << 20);
    assert_int_equal(lo, 1);
    bp__convt_geom g;
    int64_t ys[5];
    int yd;
    BP_EXPECT_ERR(bp__convt_geom_init(&g, c, 5, (int64_t[]){1, 1 << 20, 1 << 20, 1 << 20, 1}, ys, &yd), BP_ESHAPE,
                  "more than 2^60 elements");
    bp_node_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fast_vs_ref_cases, setup), cmocka_unit_test_setup(test_fast_vs_ref_sweep, setup),
        cmocka_unit_test_setup(test_paths, setup),             cmocka_unit_test_setup(test_hand_worked, setup),
        cmocka_unit_test_setup(test_vars, setup),              cmocka_unit_test_setup(test_errors, setup),
        cmocka_unit_test_setup(test_overflow, setup),
    };
    return bp_run_tests(tests, NULL, NULL);
}
