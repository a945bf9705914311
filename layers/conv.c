/* layers/conv.c — Conv1d/2d/3d: construction, and update() as a recorded
 * autograd op over tiled im2col + OpenBLAS GEMM (see bpc/conv.h).
 *
 * Shapes inside: every conv is run as 3-D with unused spatial dims of size 1.
 *   x   (B, I0, I1, I2, Cin)      y (B, O0, O1, O2, Cout)
 *   w   (k0, k1, k2, Cg, Cout) viewed as a (K, Cout) matrix, K = k0*k1*k2*Cg
 *   col (P, K): the im2col rows of P output positions of one sample, one group */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#include <bpc/conv.h>
#include <bpc/autograd.h>

#ifdef BP_REAL_DOUBLE
#define GEMM cblas_dgemm
#else
#define GEMM cblas_sgemm
#endif

static bp_status conv_update(bp_node *n, bp_tensor *x, bp_tensor **out);

#define CONV_CLASS(NAME)                                                                     \
    {                                                                                        \
        .name = NAME, .size = sizeof(bp_conv), .supported_modes = NULL, .n_supported_modes = 0, \
        .default_mode = NULL, .reads_shared = false, .update = conv_update                  \
    }

const bp_node_class bp_conv1d_class = CONV_CLASS("Conv1d");
const bp_node_class bp_conv2d_class = CONV_CLASS("Conv2d");
const bp_node_class bp_conv3d_class = CONV_CLASS("Conv3d");

bp_conv_opts bp_conv_defaults(void)
{
    return (bp_conv_opts){
        .padding = BP_PAD_SAME,
        .groups = 1,
        .bias = true,
        .w_initializer = bp_xavier_normal_init(1.0),
        .b_initializer = bp_zero_init(),
    };
}

bp_conv *bp_conv_cast(bp_node *n)
{
    if (n && (n->cls == &bp_conv1d_class || n->cls == &bp_conv2d_class || n->cls == &bp_conv3d_class))
        return (bp_conv *)n;
    return NULL;
}

bp_status bp_conv_out_size(const bp_conv *c, int d, int64_t in, int64_t *out, int64_t *pad_lo)
{
    int64_t k = c->kernel_size[d], s = c->stride[d], dil = c->dilation[d];
    int64_t span = (k - 1) * dil + 1, lo = 0, hi = 0;
    if (c->padding == BP_PAD_SAME) {
        int64_t o = (in + s - 1) / s;
        int64_t total = (o - 1) * s + span - in;
        if (total < 0) total = 0;
        lo = total / 2;
        hi = total - lo;
    } else if (c->padding == BP_PAD_EXPLICIT) {
        lo = c->pad_lo[d];
        hi = c->pad_hi[d];
    }
    int64_t padded = in + lo + hi;
    if (padded < span)
        return bp_fail(BP_ESHAPE,
                       "%s: spatial dim %d of size %lld (padded %lld) is smaller than the dilated kernel (%lld)",
                       bp_node_name(&c->base), d, (long long)in, (long long)padded, (long long)span);
    *out = (padded - span) / s + 1;
    *pad_lo = lo;
    return BP_OK;
}

static bp_status conv_new(bp_node **out, const bp_node_class *cls, int nsp, int64_t cin, int64_t cout,
                          const bp_conv_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", cls->name);
    *out = NULL;
    bp_conv_opts o = opts ? *opts : bp_conv_defaults();
    const char *who = o.name ? o.name : cls->name;
    if (cin < 1 || cout < 1)
        return bp_fail(BP_EINVAL, "%s: in_channels and out_channels must be >= 1, got %lld and %lld", who,
                       (long long)cin, (long long)cout);
    if (o.groups < 1) return bp_fail(BP_EINVAL, "%s: groups must be >= 1, got %d", who, o.groups);
    if (cin % o.groups)
        return bp_fail(BP_EINVAL, "%s: \"in_channels\" should be divisible by groups (%lld %% %d != 0)", who,
                       (long long)cin, o.groups);
    if (cout % o.groups)
        return bp_fail(BP_EINVAL, "%s: \"out_channels\" should be divisible by groups (%lld %% %d != 0)", who,
                       (long long)cout, o.groups);
    if (o.padding != BP_PAD_SAME && o.padding != BP_PAD_VALID && o.padding != BP_PAD_EXPLICIT)
        return bp_fail(BP_EINVAL, "%s: padding must be SAME, VALID or EXPLICIT, got %d", who, (int)o.padding);
    for (int d = 0; d < nsp; d++) {
        if (o.kernel_size[d] < 1)
            return bp_fail(BP_EINVAL, "%s: kernel_size[%d] must be >= 1, got %d", who, d, o.kernel_size[d]);
        if (o.stride[d] < 0 || o.dilation[d] < 0)
            return bp_fail(BP_EINVAL, "%s: stride[%d] and dilation[%d] must be >= 1 (0 means 1), got %d and %d",
                           who, d, d, o.stride[d], o.dilation[d]);
        if (o.padding == BP_PAD_EXPLICIT && (o.pad_lo[d] < 0 || o.pad_hi[d] < 0))
            return bp_fail(BP_EINVAL, "%s: padding of dim %d must be >= 0, got (%d, %d)", who, d, o.pad_lo[d],
                           o.pad_hi[d]);
    }
    bp_node *n;
    BP_TRY(bp_node_create(&n, cls, o.name, o.mode));
    bp_conv *c = (bp_conv *)n;
    c->n_spatial = nsp;
    c->in_channels = cin;
    c->out_channels = cout;
    c->padding = o.padding;
    c->groups = o.groups;
    for (int d = 0; d < 3; d++) {
        bool used = d < nsp;
        c->kernel_size[d] = used ? o.kernel_size[d] : 1;
        c->stride[d] = used && o.stride[d] ? o.stride[d] : 1;
        c->dilation[d] = used && o.dilation[d] ? o.dilation[d] : 1;
        c->pad_lo[d] = used && o.padding == BP_PAD_EXPLICIT ? o.pad_lo[d] : 0;
        c->pad_hi[d] = used && o.padding == BP_PAD_EXPLICIT ? o.pad_hi[d] : 0;
    }
    bp_rng seeded, *rng = o.rng;
    if (!rng) {
        bp_rng_seed(&seeded, 0);
        rng = &seeded;
    }
    int64_t wshape[5];
    for (int d = 0; d < nsp; d++) wshape[d] = o.kernel_size[d];
    wshape[nsp] = cin / o.groups;
    wshape[nsp + 1] = cout;
    bp_var_kind kind = bp_mode_is_train_mode(n->mode) ? BP_TRAINVAR : BP_VARIABLE;
    bp_tensor *t = NULL;
    bp_status st = bp_tensor_init(&t, nsp + 2, wshape, &o.w_initializer, rng);
    if (!st) st = bp_node_add_var(n, "w", kind, t, &c->w);
    bp_tensor_free(t);
    t = NULL;
    if (!st && o.bias) {
        int64_t bshape[4] = {1, 1, 1, 1};
        bshape[nsp] = cout;
        st = bp_tensor_init(&t, nsp + 1, bshape, &o.b_initializer, rng);
        if (!st) st = bp_node_add_var(n, "b", kind, t, &c->b);
        bp_tensor_free(t);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_status bp_conv1d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_opts *o)
{
    return conv_new(out, &bp_conv1d_class, 1, cin, cout, o);
}
bp_status bp_conv2d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_opts *o)
{
    return conv_new(out, &bp_conv2d_class, 2, cin, cout, o);
}
bp_status bp_conv3d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_opts *o)
{
    return conv_new(out, &bp_conv3d_class, 3, cin, cout, o);
}

/* ------------------------------------------------------------------ kernels */

typedef struct geom {
    int64_t B, in[3], out[3], lo[3];
    int64_t Cin, Cout, Cg, Cog, G;  /* channels, per group in / out, groups */
    int64_t k[3], s[3], d[3];
    int64_t K;                      /* k0*k1*k2*Cg: one im2col row */
    int64_t Pout, Pin;              /* output / input positions per sample */
    int64_t P;                      /* tile rows */
} geom;

/* Tile rows: keep P*K reals near 512 KiB (in L2), between 64 and 1024 rows. */
static int64_t tile_rows(int64_t K, int64_t Pout)
{
    int64_t P = (int64_t)(512 * 1024 / sizeof(bp_real)) / (K > 0 ? K : 1);
    if (P < 64) P = 64;
    if (P > 1024) P = 1024;
    if (P > Pout) P = Pout;
    return P;
}

/* col[r, (a,b,c,ci)] = x[o(r)*s - lo + (a,b,c)*d, grp*Cg + ci], zero outside.
 * When the innermost taps of a row are contiguous in x (dilation 1, one group,
 * all taps inside), they are one copy of k2*Cin reals instead of k2 copies:
 * im2col moves as many bytes as the GEMM does flops / (2*Cout), so its cost
 * per call matters. */
static void im2col_tile(const geom *g, const bp_real *xb, int64_t grp, int64_t p0, int64_t np, bp_real *col)
{
    const int64_t Cg = g->Cg, run = g->k[2] * Cg;
    const bool packed = g->d[2] == 1 && g->G == 1;
    for (int64_t r = 0; r < np; r++) {
        int64_t p = p0 + r, o2 = p % g->out[2], t = p / g->out[2], o1 = t % g->out[1], o0 = t / g->out[1];
        int64_t i2s = o2 * g->s[2] - g->lo[2];
        bool inner = packed && i2s >= 0 && i2s + g->k[2] <= g->in[2];
        bp_real *dst = col + r * g->K;
        for (int64_t a = 0; a < g->k[0]; a++) {
            int64_t i0 = o0 * g->s[0] - g->lo[0] + a * g->d[0];
            bool in0 = i0 >= 0 && i0 < g->in[0];
            for (int64_t b = 0; b < g->k[1]; b++, dst += run) {
                int64_t i1 = o1 * g->s[1] - g->lo[1] + b * g->d[1];
                if (!(in0 && i1 >= 0 && i1 < g->in[1])) {
                    memset(dst, 0, sizeof(bp_real) * (size_t)run);
                    continue;
                }
                const bp_real *xrow = xb + (i0 * g->in[1] + i1) * g->in[2] * g->Cin + grp * Cg;
                if (inner) {
                    memcpy(dst, xrow + i2s * g->Cin, sizeof(bp_real) * (size_t)run);
                    continue;
                }
                for (int64_t c = 0; c < g->k[2]; c++) {
                    int64_t i2 = i2s + c * g->d[2];
                    if (i2 >= 0 && i2 < g->in[2])
                        memcpy(dst + c * Cg, xrow + i2 * g->Cin, sizeof(bp_real) * (size_t)Cg);
                    else
                        memset(dst + c * Cg, 0, sizeof(bp_real) * (size_t)Cg);
                }
            }
        }
    }
}

/* The adjoint of im2col_tile: dxb[...] += dcol[r, ...]. */
static void col2im_tile(const geom *g, bp_real *dxb, int64_t grp, int64_t p0, int64_t np, const bp_real *dcol)
{
    const int64_t Cg = g->Cg;
    for (int64_t r = 0; r < np; r++) {
        int64_t p = p0 + r, o2 = p % g->out[2], t = p / g->out[2], o1 = t % g->out[1], o0 = t / g->out[1];
        const bp_real *src = dcol + r * g->K;
        for (int64_t a = 0; a < g->k[0]; a++) {
            int64_t i0 = o0 * g->s[0] - g->lo[0] + a * g->d[0];
            bool in0 = i0 >= 0 && i0 < g->in[0];
            for (int64_t b = 0; b < g->k[1]; b++) {
                int64_t i1 = o1 * g->s[1] - g->lo[1] + b * g->d[1];
                bool in1 = in0 && i1 >= 0 && i1 < g->in[1];
                for (int64_t c = 0; c < g->k[2]; c++, src += Cg) {
                    int64_t i2 = o2 * g->s[2] - g->lo[2] + c * g->d[2];
                    if (!(in1 && i2 >= 0 && i2 < g->in[2])) continue;
                    bp_real *dst = dxb + ((i0 * g->in[1] + i1) * g->in[2] + i2) * g->Cin + grp * Cg;
                    for (int64_t ci = 0; ci < Cg; ci++) dst[ci] += src[ci];
                }
            }
        }
    }
}

/* OpenBLAS's own threads inside our OpenMP regions would oversubscribe the
 * cores: run it single-threaded while a region is active. */
static int blas_threads_off(void)
{
    int prev = openblas_get_num_threads();
    if (prev != 1) openblas_set_num_threads(1);
    return prev;
}

static void blas_threads_restore(int prev)
{
    if (prev != 1) openblas_set_num_threads(prev);
}

/* y = conv(x, w) + bias; parallel over (sample, tile) pairs. */
static bp_status conv_forward(const geom *g, bp_real *y, const bp_real *x, const bp_real *w, const bp_real *bias)
{
    const int64_t ntiles = (g->Pout + g->P - 1) / g->P, items = g->B * ntiles;
    bp_status st = BP_OK;
    int prev = blas_threads_off();
#pragma omp parallel
    {
        bp_real *col = bp_alloc_aligned(sizeof(bp_real) * (size_t)(g->P * g->K));
        if (!col) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!col) continue;
            int64_t b = it / ntiles, p0 = (it % ntiles) * g->P, np = g->Pout - p0 < g->P ? g->Pout - p0 : g->P;
            const bp_real *xb = x + b * g->Pin * g->Cin;
            bp_real *yb = y + (b * g->Pout + p0) * g->Cout;
            for (int64_t grp = 0; grp < g->G; grp++) {
                im2col_tile(g, xb, grp, p0, np, col);
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)np, (int)g->Cog, (int)g->K, 1, col,
                     (int)g->K, w + grp * g->Cog, (int)g->Cout, 0, yb + grp * g->Cog, (int)g->Cout);
            }
            if (bias)
                for (int64_t r = 0; r < np; r++)
                    for (int64_t co = 0; co < g->Cout; co++) yb[r * g->Cout + co] += bias[co];
        }
        bp_free_aligned(col);
    }
    blas_threads_restore(prev);
    return st ? bp_fail(st, "conv: out of memory for the %lld x %lld im2col tile", (long long)g->P, (long long)g->K)
              : BP_OK;
}

/* Accumulates dx (if non-NULL), dw (K x Cout, if non-NULL) and dbias from dy.
 * Parallel over samples, so each thread's col2im writes only its own samples;
 * each thread sums dw in its own buffer, added in thread order at the end. */
static bp_status conv_backward(const geom *g, bp_real *dx, bp_real *dw, bp_real *dbias, const bp_real *dy,
                               const bp_real *x, const bp_real *w)
{
    const int64_t ntiles = (g->Pout + g->P - 1) / g->P;
    const size_t tile_bytes = sizeof(bp_real) * (size_t)(g->P * g->K);
    const size_t dw_bytes = sizeof(bp_real) * (size_t)(g->K * g->Cout);
    bp_status st = BP_OK;
    if (dbias)
        for (int64_t r = 0; r < g->B * g->Pout; r++)
            for (int64_t co = 0; co < g->Cout; co++) dbias[co] += dy[r * g->Cout + co];
    if (!dx && !dw) return BP_OK;
    /* One dw accumulator per thread, summed in thread order after the region. */
    int max_threads = omp_get_max_threads();
    bp_real **dw_parts = calloc((size_t)max_threads, sizeof *dw_parts);
    if (!dw_parts) return bp_fail(BP_ENOMEM, "conv backward: out of memory");
    int prev = blas_threads_off();
#pragma omp parallel num_threads(max_threads)
    {
        bp_real *col = bp_alloc_aligned(tile_bytes);
        bp_real *dcol = dx ? bp_alloc_aligned(tile_bytes) : NULL;
        bp_real *dwt = dw ? bp_alloc_aligned(dw_bytes) : NULL;
        bool ok = col && (!dx || dcol) && (!dw || dwt);
        if (!ok) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        }
        if (dwt) memset(dwt, 0, dw_bytes);
        dw_parts[omp_get_thread_num()] = dwt;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < g->B; b++) {
            if (!ok) continue;
            const bp_real *xb = x + b * g->Pin * g->Cin;
            for (int64_t t = 0; t < ntiles; t++) {
                int64_t p0 = t * g->P, np = g->Pout - p0 < g->P ? g->Pout - p0 : g->P;
                const bp_real *dyb = dy + (b * g->Pout + p0) * g->Cout;
                for (int64_t grp = 0; grp < g->G; grp++) {
                    if (dw) {
                        /* dW_g (K x Cog) += col^T (K x np) . dY_g (np x Cog) */
                        im2col_tile(g, xb, grp, p0, np, col);
                        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g->K, (int)g->Cog, (int)np, 1, col,
                             (int)g->K, dyb + grp * g->Cog, (int)g->Cout, 1, dwt + grp * g->Cog, (int)g->Cout);
                    }
                    if (dx) {
                        /* dcol (np x K) = dY_g (np x Cog) . W_g^T (Cog x K) */
                        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)np, (int)g->K, (int)g->Cog, 1,
                             dyb + grp * g->Cog, (int)g->Cout, w + grp * g->Cog, (int)g->Cout, 0, dcol, (int)g->K);
                        col2im_tile(g, dx + b * g->Pin * g->Cin, grp, p0, np, dcol);
                    }
                }
            }
        }
        bp_free_aligned(col);
        bp_free_aligned(dcol);
    }
    blas_threads_restore(prev);
    for (int t = 0; t < max_threads; t++) {
        if (dw_parts[t] && !st)
            for (int64_t i = 0; i < g->K * g->Cout; i++) dw[i] += dw_parts[t][i];
        bp_free_aligned(dw_parts[t]);
    }
    free(dw_parts);
    return st ? bp_fail(st, "conv backward: out of memory for its tiles") : BP_OK;
}

/* ------------------------------------------------------------------ update */

typedef struct conv_ctx {
    geom g;
} conv_ctx;

static bp_status conv_op_backward(const bp_ag_backward_args *a)
{
    const geom *g = &((const conv_ctx *)a->ctx)->g;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_real *dw = a->n_in > 1 && a->din[1] ? bp_tensor_reals(a->din[1]) : NULL;
    bp_real *db = a->n_in > 2 && a->din[2] ? bp_tensor_reals(a->din[2]) : NULL;
    return conv_backward(g, dx, dw, db, bp_tensor_creals(a->dout), bp_tensor_creals(a->in[0]),
                         bp_tensor_creals(a->in[1]));
}

static const bp_ag_op conv_op = {"Conv", conv_op_backward, NULL};

static bp_status conv_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_conv *c = (bp_conv *)n;
    const char *who = bp_node_name(n);
    char s[128];
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!x) return bp_fail(BP_EINVAL, "%s: input is NULL", who);
    int nsp = c->n_spatial;
    bool batched = x->ndim == nsp + 2;
    if (!batched && x->ndim != nsp + 1)
        return bp_fail(BP_ESHAPE, "%s: expected %dD input (got %dD input of shape %s)", who, nsp + 2, x->ndim,
                       bp_shape_str(s, sizeof s, x->ndim, x->shape));
    if (x->shape[x->ndim - 1] != c->in_channels)
        return bp_fail(BP_ESHAPE, "%s: input channels=%lld needs to have the same size as in_channels=%lld.", who,
                       (long long)x->shape[x->ndim - 1], (long long)c->in_channels);
    if (x->dtype != BP_REAL_DTYPE)
        return bp_fail(BP_EDTYPE, "%s: expected %s input, got %s", who, bp_dtype_name(BP_REAL_DTYPE),
                       bp_dtype_name(x->dtype));
    geom g = {.B = batched ? x->shape[0] : 1, .Cin = c->in_channels, .Cout = c->out_channels, .G = c->groups};
    g.Cg = g.Cin / g.G;
    g.Cog = g.Cout / g.G;
    int64_t yshape[5];
    int yd = 0;
    if (batched) yshape[yd++] = g.B;
    g.Pin = g.Pout = 1;
    for (int d = 0; d < 3; d++) {
        g.k[d] = c->kernel_size[d];
        g.s[d] = c->stride[d];
        g.d[d] = c->dilation[d];
        g.in[d] = d < nsp ? x->shape[(batched ? 1 : 0) + d] : 1;
        BP_TRY(bp_conv_out_size(c, d, g.in[d], &g.out[d], &g.lo[d]));
        if (d < nsp) yshape[yd++] = g.out[d];
        g.Pin *= g.in[d];
        g.Pout *= g.out[d];
    }
    yshape[yd++] = g.Cout;
    g.K = g.k[0] * g.k[1] * g.k[2] * g.Cg;
    g.P = tile_rows(g.K, g.Pout);
    if (g.B == 0 || g.Pout == 0 || g.Pin == 0)
        return bp_fail(BP_ESHAPE, "%s: empty input %s", who, bp_shape_str(s, sizeof s, x->ndim, x->shape));

    bp_tensor *y;
    BP_TRY(bp_ag_empty(&y, yd, yshape));
    bp_status st = conv_forward(&g, bp_tensor_reals(y), bp_tensor_creals(x), bp_tensor_creals(c->w->value),
                                c->b ? bp_tensor_creals(c->b->value) : NULL);
    bp_tensor *in[3] = {x, c->w->value, c->b ? c->b->value : NULL};
    int n_in = c->b ? 3 : 2;
    if (!st && bp_ag_wants(n_in, in)) {
        conv_ctx ctx = {g};
        st = bp_ag_record(y, &conv_op, n_in, in, &ctx, sizeof ctx);
    }
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}
