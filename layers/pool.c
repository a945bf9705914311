/* layers/pool.c — max / average / adaptive average pooling (see bpc/pool.h).
 *
 * Every pool is run as 3-D with unused spatial dims of size 1:
 *   x (B, I0, I1, I2, C)  ->  y (B, O0, O1, O2, C)
 * Each output position reads a box of input positions, [lo_d, hi_d) per dim,
 * vectorised over C (contiguous). Parallel over (sample, output row). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/pool.h>
#include <bpc/autograd.h>
#include "simd.h"

enum { POOL_MAX = 0, POOL_AVG = 1, POOL_ADAPTIVE = 2 };

static bp_status pool_update(bp_node *n, bp_tensor *x, bp_tensor **out);

#define POOL_CLASS(NAME) {.name = NAME, .size = sizeof(bp_pool), .update = pool_update}
const bp_node_class bp_maxpool1d_class = POOL_CLASS("MaxPool1d");
const bp_node_class bp_maxpool2d_class = POOL_CLASS("MaxPool2d");
const bp_node_class bp_maxpool3d_class = POOL_CLASS("MaxPool3d");
const bp_node_class bp_avgpool1d_class = POOL_CLASS("AvgPool1d");
const bp_node_class bp_avgpool2d_class = POOL_CLASS("AvgPool2d");
const bp_node_class bp_avgpool3d_class = POOL_CLASS("AvgPool3d");
const bp_node_class bp_adaptive_avgpool1d_class = POOL_CLASS("AdaptiveAvgPool1d");
const bp_node_class bp_adaptive_avgpool2d_class = POOL_CLASS("AdaptiveAvgPool2d");
const bp_node_class bp_adaptive_avgpool3d_class = POOL_CLASS("AdaptiveAvgPool3d");

static const bp_node_class *const classes[3][3] = {
    {&bp_maxpool1d_class, &bp_maxpool2d_class, &bp_maxpool3d_class},
    {&bp_avgpool1d_class, &bp_avgpool2d_class, &bp_avgpool3d_class},
    {&bp_adaptive_avgpool1d_class, &bp_adaptive_avgpool2d_class, &bp_adaptive_avgpool3d_class}};

static bp_status pool_create(bp_node **out, int kind, int nsp, const bp_mode *mode, const char *name, bp_pool **p)
{
    if (!out) return bp_fail(BP_EINVAL, "pool: out is NULL");
    *out = NULL;
    if (nsp < 1 || nsp > 3) return bp_fail(BP_EINVAL, "pool: n_spatial must be 1, 2 or 3, got %d", nsp);
    BP_TRY(bp_node_create(out, classes[kind][nsp - 1], name, mode));
    *p = (bp_pool *)*out;
    (*p)->n_spatial = nsp;
    (*p)->kind = kind;
    for (int d = 0; d < 3; d++) {
        (*p)->kernel_size[d] = (*p)->stride[d] = (*p)->target_size[d] = 1;
    }
    return BP_OK;
}

static bp_status windowed_new(bp_node **out, int kind, int nsp, const bp_pool_opts *o)
{
    const char *who = kind == POOL_MAX ? "MaxPool" : "AvgPool";
    if (!o) return bp_fail(BP_EINVAL, "%s: opts is NULL (kernel_size is required)", who);
    for (int d = 0; d < nsp && d < 3; d++) {
        if (o->kernel_size[d] < 1)
            return bp_fail(BP_EINVAL, "%s: kernel_size[%d] must be >= 1, got %d", who, d, o->kernel_size[d]);
        if (o->stride[d] < 0) return bp_fail(BP_EINVAL, "%s: stride[%d] must be >= 1 (0: the kernel size), got %d", who, d, o->stride[d]);
        if (o->pad_lo[d] < 0 || o->pad_hi[d] < 0 || o->pad_lo[d] >= o->kernel_size[d] || o->pad_hi[d] >= o->kernel_size[d])
            return bp_fail(BP_EINVAL, "%s: padding of dim %d must be in [0, kernel_size), got (%d, %d)", who, d,
                           o->pad_lo[d], o->pad_hi[d]);
    }
    bp_pool *p;
    BP_TRY(pool_create(out, kind, nsp, o->mode, o->name, &p));
    for (int d = 0; d < nsp; d++) {
        p->kernel_size[d] = o->kernel_size[d];
        p->stride[d] = o->stride[d] ? o->stride[d] : o->kernel_size[d];
        p->pad_lo[d] = o->pad_lo[d];
        p->pad_hi[d] = o->pad_hi[d];
    }
    return BP_OK;
}

bp_status bp_maxpool_new(bp_node **out, int nsp, const bp_pool_opts *o) { return windowed_new(out, POOL_MAX, nsp, o); }
bp_status bp_avgpool_new(bp_node **out, int nsp, const bp_pool_opts *o) { return windowed_new(out, POOL_AVG, nsp, o); }

bp_status bp_adaptive_avgpool_new(bp_node **out, int nsp, const int *target, const bp_mode *mode, const char *name)
{
    if (!target) return bp_fail(BP_EINVAL, "AdaptiveAvgPool: target_size is NULL");
    for (int d = 0; d < nsp && d < 3; d++)
        if (target[d] < 1)
            return bp_fail(BP_EINVAL, "AdaptiveAvgPool: target_size[%d] must be >= 1, got %d", d, target[d]);
    bp_pool *p;
    BP_TRY(pool_create(out, POOL_ADAPTIVE, nsp, mode, name, &p));
    for (int d = 0; d < nsp; d++) p->target_size[d] = target[d];
    return BP_OK;
}

/* ------------------------------------------------------------------ kernels */

typedef struct pgeom {
    int kind;
    int64_t B, C, in[3], out[3];
    int64_t k[3], s[3], lo[3];
} pgeom;

/* The input box [b0, b1) of output index o along dim d (clipped to the input). */
static void box(const pgeom *g, int d, int64_t o, int64_t *b0, int64_t *b1)
{
    if (g->kind == POOL_ADAPTIVE) {
        /* BrainPy's split: L = n*q + r; the first r bins take q + 1 elements,
         * the rest q, without overlap (PyTorch's bins overlap instead). */
        int64_t q = g->in[d] / g->out[d], r = g->in[d] % g->out[d];
        *b0 = o < r ? o * (q + 1) : r * (q + 1) + (o - r) * q;
        *b1 = *b0 + (o < r ? q + 1 : q);
        return;
    }
    int64_t start = o * g->s[d] - g->lo[d], end = start + g->k[d];
    *b0 = start < 0 ? 0 : start;
    *b1 = end > g->in[d] ? g->in[d] : end;
}

/* The divisor of an average: the number of real (non-padding) elements in
 * the window, as BrainPy's AvgPool with padding (its window_counts), and the
 * bin size for the adaptive pool. Without padding it is the window size. */
static double divisor(const pgeom *g, const int64_t *b0, const int64_t *b1)
{
    (void)g;
    return (double)((b1[0] - b0[0]) * (b1[1] - b0[1]) * (b1[2] - b0[2]));
}

/* One input position of a max window, channels [0, n): y[c], arg[c] take
 * x[c], pos where x[c] is larger or NaN, and a NaN, once in, stays (XLA's max
 * propagates NaN). A select per element, no branch, so the loop vectorises. */
static inline __attribute__((always_inline)) void max_step(int64_t n, bp_real *restrict y, int32_t *restrict arg,
                                                           const bp_real *restrict x, int32_t pos)
{
    for (int64_t c = 0; c < n; c++) {
        bp_real yv = y[c], xv = x[c];
        bool take = (yv == yv) & !(xv <= yv);
        y[c] = take ? xv : yv;
        arg[c] = take ? pos : arg[c];
    }
}

/* Max pooling of one output row (windows [b0, b1) along dims 0 and 1): y and
 * arg of every window start from its first element (ties keep the first),
 * then each input row of the windows is read once, front to back, and folds
 * into the outputs it covers. Reading rows whole keeps the hardware
 * prefetchers streaming (window by window, each 2-position read would start
 * a new stream); full runs of PVL channels go through registers. */
static void max_row(const pgeom *g, const int64_t *b0, const int64_t *b1, const bp_real *xb, bp_real *y, int32_t *arg)
{
    const int64_t C = g->C, c_full = C / PVL * PVL;
    for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
        for (int64_t i1 = b0[1]; i1 < b1[1]; i1++) {
            const int64_t row = (i0 * g->in[1] + i1) * g->in[2];
            const bool first_row = i0 == b0[0] && i1 == b0[1];
            for (int64_t o2 = 0; o2 < g->out[2]; o2++) {
                int64_t lo2, hi2;
                box(g, 2, o2, &lo2, &hi2);
                bp_real *yo = y + o2 * C;
                int32_t *ao = arg + o2 * C;
                if (first_row) { /* the window's first element starts it */
                    memcpy(yo, xb + (row + lo2) * C, sizeof(bp_real) * (size_t)C);
                    for (int64_t c = 0; c < C; c++) ao[c] = (int32_t)(row + lo2);
                }
                for (int64_t c0 = 0; c0 < c_full; c0 += PVL) {
                    pvr m = *(const pvru *)(yo + c0);
                    pvi a;
                    load_idx(&a, ao + c0);
                    for (int64_t i2 = lo2 + first_row; i2 < hi2; i2++) {
                        pvr xv = *(const pvru *)(xb + (row + i2) * C + c0);
                        max_take(&m, &a, &xv, (pidx)(row + i2));
                    }
                    *(pvru *)(yo + c0) = m;
                    store_idx(ao + c0, &a);
                }
                for (int64_t i2 = lo2 + first_row; i2 < hi2 && c_full < C; i2++)
                    max_step(C - c_full, yo + c_full, ao + c_full, xb + (row + i2) * C + c_full, (int32_t)(row + i2));
            }
        }
}

/* Parallel over output rows (b, o0, o1): the box along dims 0 and 1 is
 * worked out once per row, and the C-vector loops run with no division in
 * them. */
static void pool_forward(const pgeom *g, bp_real *y, int32_t *arg, const bp_real *x)
{
    const int64_t C = g->C, rows = g->B * g->out[0] * g->out[1];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o1 = r % g->out[1], t = r / g->out[1], o0 = t % g->out[0], b = t / g->out[0];
        int64_t b0[3], b1[3];
        box(g, 0, o0, &b0[0], &b1[0]);
        box(g, 1, o1, &b0[1], &b1[1]);
        const bp_real *xb = x + b * g->in[0] * g->in[1] * g->in[2] * C;
        if (g->kind == POOL_MAX) {
            max_row(g, b0, b1, xb, y + r * g->out[2] * C, arg + r * g->out[2] * C);
            continue;
        }
        for (int64_t o2 = 0; o2 < g->out[2]; o2++) {
            box(g, 2, o2, &b0[2], &b1[2]);
            bp_real *yr = y + (r * g->out[2] + o2) * C;
            for (int64_t c = 0; c < C; c++) yr[c] = 0;
            for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
                for (int64_t i1 = b0[1]; i1 < b1[1]; i1++)
                    for (int64_t i2 = b0[2]; i2 < b1[2]; i2++) {
                        const bp_real *xr = xb + ((i0 * g->in[1] + i1) * g->in[2] + i2) * C;
                        for (int64_t c = 0; c < C; c++) yr[c] += xr[c];
                    }
            bp_real inv = (bp_real)(1.0 / divisor(g, b0, b1));
            for (int64_t c = 0; c < C; c++) yr[c] *= inv;
        }
    }
}

/* dx += scatter of dy; parallel over samples (windows of one sample may
 * overlap). fresh: dx is uninitialised; each sample's part is zeroed just
 * before its scatter, while it is still in cache. */
static void pool_backward(const pgeom *g, bp_real *dx, bool fresh, const int32_t *arg, const bp_real *dy)
{
    const int64_t C = g->C, per_out = g->out[0] * g->out[1] * g->out[2], per_in = g->in[0] * g->in[1] * g->in[2];
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < g->B; b++) {
        bp_real *dxb = dx + b * per_in * C;
        if (fresh) memset(dxb, 0, sizeof(bp_real) * (size_t)(per_in * C));
        for (int64_t q = 0; q < per_out; q++) {
            int64_t r = b * per_out + q;
            const bp_real *dyr = dy + r * C;
            if (g->kind == POOL_MAX) {
                const int32_t *ar = arg + r * C;
                for (int64_t c = 0; c < C; c++)
                    if (ar[c] >= 0) dxb[(int64_t)ar[c] * C + c] += dyr[c];
                continue;
            }
            int64_t o2 = q % g->out[2], t = q / g->out[2], o1 = t % g->out[1], o0 = t / g->out[1];
            int64_t b0[3], b1[3];
            box(g, 0, o0, &b0[0], &b1[0]);
            box(g, 1, o1, &b0[1], &b1[1]);
            box(g, 2, o2, &b0[2], &b1[2]);
            bp_real inv = (bp_real)(1.0 / divisor(g, b0, b1));
            for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
                for (int64_t i1 = b0[1]; i1 < b1[1]; i1++)
                    for (int64_t i2 = b0[2]; i2 < b1[2]; i2++) {
                        bp_real *dxr = dxb + ((i0 * g->in[1] + i1) * g->in[2] + i2) * C;
                        for (int64_t c = 0; c < C; c++) dxr[c] += dyr[c] * inv;
                    }
        }
    }
}

/* Max pooling's dx when the windows are disjoint (stride >= kernel, no low
 * padding): each input position lies in at most one window, so dx is one
 * pass over the input rows, dx[i] (+)= dy[w(i)] where window w(i)'s maximum
 * is at i, and 0 elsewhere: no zeroing pass and no scatter. Parallel over
 * input rows; full runs of PVL channels compare positions a vector at a time. */
static bool windows_disjoint(const pgeom *g)
{
    for (int d = 0; d < 3; d++)
        if (g->s[d] < g->k[d] || g->lo[d] != 0) return false;
    return true;
}

static void max_backward_disjoint(const pgeom *g, bp_real *dx, bool fresh, const int32_t *arg, const bp_real *dy)
{
    const int64_t C = g->C, c_full = C / PVL * PVL, rows = g->B * g->in[0] * g->in[1];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i1 = r % g->in[1], t = r / g->in[1], i0 = t % g->in[0], b = t / g->in[0];
        int64_t o0 = i0 / g->s[0], o1 = i1 / g->s[1];
        bool covered = i0 % g->s[0] < g->k[0] && o0 < g->out[0] && i1 % g->s[1] < g->k[1] && o1 < g->out[1];
        bp_real *dxr = dx + r * g->in[2] * C;
        const int64_t q0 = ((b * g->out[0] + o0) * g->out[1] + o1) * g->out[2];
        const int64_t row = (i0 * g->in[1] + i1) * g->in[2];
        for (int64_t i2 = 0; i2 < g->in[2]; i2++) {
            bp_real *d = dxr + i2 * C;
            int64_t o2 = i2 / g->s[2];
            if (!covered || i2 % g->s[2] >= g->k[2] || o2 >= g->out[2]) {
                if (fresh) memset(d, 0, sizeof(bp_real) * (size_t)C);
                continue;
            }
            const bp_real *dyq = dy + (q0 + o2) * C;
            const int32_t *aq = arg + (q0 + o2) * C;
            const pidx pos = (pidx)(row + i2);
            for (int64_t c0 = 0; c0 < c_full; c0 += PVL) {
                pvi a;
                load_idx(&a, aq + c0);
                pvr v = (pvr)((pvi)*(const pvru *)(dyq + c0) & (a == pos));
                if (!fresh) v += *(const pvru *)(d + c0);
                *(pvru *)(d + c0) = v;
            }
            for (int64_t c = c_full; c < C; c++) {
                bp_real v = aq[c] == pos ? dyq[c] : 0;
                d[c] = fresh ? v : d[c] + v;
            }
        }
    }
}

typedef struct pool_ctx {
    pgeom g;
    int32_t *arg; /* MaxPool: flat input position of each output's maximum */
} pool_ctx;

static void pool_ctx_release(void *p) { free(((pool_ctx *)p)->arg); }

static bp_status pool_op_backward(const bp_ag_backward_args *a)
{
    const pool_ctx *c = a->ctx;
    if (!a->din[0]) return BP_OK;
    if (c->g.kind == POOL_MAX && windows_disjoint(&c->g))
        max_backward_disjoint(&c->g, bp_tensor_reals(a->din[0]), true, c->arg, bp_tensor_creals(a->dout));
    else
        pool_backward(&c->g, bp_tensor_reals(a->din[0]), true, c->arg, bp_tensor_creals(a->dout));
    return BP_OK;
}

static const bp_ag_op pool_op = {
    .name = "Pool", .backward = pool_op_backward, .release = pool_ctx_release, .overwrites_grad = true};

static bp_status pool_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_pool *p = (bp_pool *)n;
    const char *who = bp_node_name(n);
    char s[128];
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!x) return bp_fail(BP_EINVAL, "%s: input is NULL", who);
    int nsp = p->n_spatial;
    bool batched = x->ndim == nsp + 2;
    if (!batched && x->ndim != nsp + 1)
        return bp_fail(BP_ESHAPE, "%s: expected %dD input (got %dD input of shape %s)", who, nsp + 2, x->ndim,
                       bp_shape_str(s, sizeof s, x->ndim, x->shape));
    if (x->dtype != BP_REAL_DTYPE)
        return bp_fail(BP_EDTYPE, "%s: expected %s input, got %s", who, bp_dtype_name(BP_REAL_DTYPE),
                       bp_dtype_name(x->dtype));
    pgeom g = {.kind = p->kind, .B = batched ? x->shape[0] : 1, .C = x->shape[x->ndim - 1]};
    int64_t yshape[5];
    int yd = 0;
    if (batched) yshape[yd++] = g.B;
    for (int d = 0; d < 3; d++) {
        g.in[d] = d < nsp ? x->shape[(batched ? 1 : 0) + d] : 1;
        g.k[d] = p->kernel_size[d];
        g.s[d] = p->stride[d];
        g.lo[d] = p->pad_lo[d];
        if (p->kind == POOL_ADAPTIVE) {
            g.out[d] = d < nsp ? p->target_size[d] : 1;
            if (g.out[d] > g.in[d])
                return bp_fail(BP_ESHAPE, "%s: target size %lld is larger than the input's %lld along spatial dim %d",
                               who, (long long)g.out[d], (long long)g.in[d], d);
        } else {
            int64_t padded = g.in[d] + p->pad_lo[d] + p->pad_hi[d];
            if (padded < g.k[d])
                return bp_fail(BP_ESHAPE, "%s: spatial dim %d of size %lld (padded %lld) is smaller than the kernel %lld",
                               who, d, (long long)g.in[d], (long long)padded, (long long)g.k[d]);
            g.out[d] = (padded - g.k[d]) / g.s[d] + 1;
        }
        if (d < nsp) yshape[yd++] = g.out[d];
    }
    yshape[yd++] = g.C;
    if (g.in[0] * g.in[1] * g.in[2] > INT32_MAX)
        return bp_fail(BP_ESHAPE, "%s: more than 2^31 positions per sample", who);
    bp_tensor *y;
    BP_TRY(bp_ag_empty(&y, yd, yshape));
    pool_ctx ctx = {g, NULL};
    if (p->kind == POOL_MAX) {
        ctx.arg = malloc(sizeof(int32_t) * (size_t)(y->numel ? y->numel : 1));
        if (!ctx.arg) {
            bp_tensor_free(y);
            return bp_fail(BP_ENOMEM, "%s: out of memory", who);
        }
    }
    pool_forward(&g, bp_tensor_reals(y), ctx.arg, bp_tensor_creals(x));
    bp_status st = BP_OK;
    if (bp_ag_wants(1, &x))
        st = bp_ag_record(y, &pool_op, 1, &x, &ctx, sizeof ctx); /* the graph owns ctx.arg now */
    else
        pool_ctx_release(&ctx);
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}
