/* layers/pool.c — max / average / adaptive average pooling (see bpc/pool.h):
 * construction, the input check and geometry, and update() as a recorded op
 * over the kernels of pool_fast.c (pool_ref.c holds the definition they are
 * tested against; shapes in pool_internal.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/pool.h>
#include <bpc/autograd.h>
#include "layer_input.h"
#include "pool_internal.h"

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

static bp_status pool_create(bp_node **out, bp_pool_kind kind, int nsp, const bp_mode *mode, const char *name, bp_pool **p)
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

static bp_status windowed_new(bp_node **out, bp_pool_kind kind, int nsp, const bp_pool_opts *o)
{
    const char *who = kind == BP_POOL_MAX ? "MaxPool" : "AvgPool";
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

bp_status bp_maxpool_new(bp_node **out, int nsp, const bp_pool_opts *o) { return windowed_new(out, BP_POOL_MAX, nsp, o); }
bp_status bp_avgpool_new(bp_node **out, int nsp, const bp_pool_opts *o) { return windowed_new(out, BP_POOL_AVG, nsp, o); }

bp_status bp_adaptive_avgpool_new(bp_node **out, int nsp, const int *target, const bp_mode *mode, const char *name)
{
    if (!target) return bp_fail(BP_EINVAL, "AdaptiveAvgPool: target_size is NULL");
    for (int d = 0; d < nsp && d < 3; d++)
        if (target[d] < 1)
            return bp_fail(BP_EINVAL, "AdaptiveAvgPool: target_size[%d] must be >= 1, got %d", d, target[d]);
    bp_pool *p;
    BP_TRY(pool_create(out, BP_POOL_ADAPTIVE_AVG, nsp, mode, name, &p));
    for (int d = 0; d < nsp; d++) p->target_size[d] = target[d];
    return BP_OK;
}

/* ------------------------------------------------------------------ update */

typedef struct pool_ctx {
    bp__pool_geom g;
    int32_t *arg; /* MaxPool: flat input position of each output's maximum */
} pool_ctx;

static void pool_ctx_release(void *p) { free(((pool_ctx *)p)->arg); }

/* The op overwrites its gradient (overwrites_grad): din[0] is a buffer of its
 * own, which both backward kernels write whole. */
static bp_status pool_op_backward(const bp_ag_backward_args *a)
{
    const pool_ctx *c = a->ctx;
    if (!a->din[0]) return BP_OK;
    if (c->g.kind == BP_POOL_MAX && bp__pool_windows_disjoint(&c->g))
        bp__pool_max_backward_disjoint(&c->g, bp_tensor_reals(a->din[0]), c->arg, bp_tensor_creals(a->dout));
    else
        bp__pool_backward_scatter(&c->g, bp_tensor_reals(a->din[0]), c->arg, bp_tensor_creals(a->dout));
    return BP_OK;
}

static const bp_ag_op pool_op = {
    .name = "Pool", .backward = pool_op_backward, .release = pool_ctx_release, .overwrites_grad = true};

static const char *const pool_layouts[3] = {"(B,L,C)", "(B,H,W,C)", "(B,H,W,D,C)"};

/* The geometry of pool p on x, and the output's shape. Sizes come from a
 * tensor (each < 2^63) and the options (ints), and every sum and product
 * below is checked or bounded: a sample may hold at most 2^31 - 1 input and
 * output positions (the max's arg is int32). */
static bp_status pool_geom(const bp_pool *p, const bp_tensor *x, bp__pool_geom *g, int64_t *yshape, int *yd)
{
    const char *who = bp_node_name(&p->base);
    const int nsp = p->n_spatial;
    const bool batched = x->ndim == nsp + 2;
    *g = (bp__pool_geom){.kind = p->kind, .B = batched ? x->shape[0] : 1, .C = x->shape[x->ndim - 1]};
    *yd = 0;
    if (batched) yshape[(*yd)++] = g->B;
    int64_t per_in = 1, per_out = 1;
    for (int d = 0; d < 3; d++) {
        g->in[d] = d < nsp ? x->shape[(batched ? 1 : 0) + d] : 1;
        g->k[d] = p->kernel_size[d];
        g->s[d] = p->stride[d];
        g->lo[d] = p->pad_lo[d];
        if (p->kind == BP_POOL_ADAPTIVE_AVG) {
            g->out[d] = d < nsp ? p->target_size[d] : 1;
            if (g->out[d] > g->in[d])
                return bp_fail(BP_ESHAPE, "%s: target size %lld is larger than the input's %lld along spatial dim %d",
                               who, (long long)g->out[d], (long long)g->in[d], d);
        } else {
            int64_t padded;
            if (__builtin_add_overflow(g->in[d], (int64_t)p->pad_lo[d] + p->pad_hi[d], &padded))
                return bp_fail(BP_ESHAPE, "%s: spatial dim %d of size %lld with padding (%d, %d) overflows int64", who,
                               d, (long long)g->in[d], p->pad_lo[d], p->pad_hi[d]);
            if (padded < g->k[d])
                return bp_fail(BP_ESHAPE, "%s: spatial dim %d of size %lld (padded %lld) is smaller than the kernel %lld",
                               who, d, (long long)g->in[d], (long long)padded, (long long)g->k[d]);
            g->out[d] = (padded - g->k[d]) / g->s[d] + 1;
        }
        if (d < nsp) yshape[(*yd)++] = g->out[d];
        if (__builtin_mul_overflow(per_in, g->in[d], &per_in)) per_in = INT64_MAX;
        if (__builtin_mul_overflow(per_out, g->out[d], &per_out)) per_out = INT64_MAX;
    }
    yshape[(*yd)++] = g->C;
    if (per_in > INT32_MAX || per_out > INT32_MAX)
        return bp_fail(BP_ESHAPE,
                       "%s: more than 2^31 positions per sample: input %lld x %lld x %lld, output %lld x %lld x %lld", who,
                       (long long)g->in[0], (long long)g->in[1], (long long)g->in[2], (long long)g->out[0],
                       (long long)g->out[1], (long long)g->out[2]);
    return BP_OK;
}

static bp_status pool_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_pool *p = (bp_pool *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    BP_TRY(bp__check_layer_input(who, x,
                                 &(bp_input_spec){.ndim = p->n_spatial + 2, .unbatched_ok = true,
                                                  .layout = pool_layouts[p->n_spatial - 1], .channels = -1}));
    bp__pool_geom g;
    int64_t yshape[5];
    int yd;
    BP_TRY(pool_geom(p, x, &g, yshape, &yd));
    bp_tensor *y;
    BP_TRY(bp_ag_empty(&y, yd, yshape));
    pool_ctx ctx = {g, NULL};
    if (p->kind == BP_POOL_MAX) {
        ctx.arg = malloc(sizeof(int32_t) * (size_t)(y->numel ? y->numel : 1));
        if (!ctx.arg) {
            bp_tensor_free(y);
            return bp_fail(BP_ENOMEM, "%s: out of memory", who);
        }
    }
    /* an empty batch or no channels: nothing to pool (and no loop over positions) */
    if (y->numel) bp__pool_forward(&g, bp_tensor_reals(y), ctx.arg, bp_tensor_creals(x));
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
