/* layers/conv.c — Conv1d/2d/3d: construction, the input check and geometry,
 * and update() as a recorded autograd op whose forward and backward pick,
 * per shape, the direct channels-last kernels (conv_direct.c) or tiled
 * im2col + GEMM (conv_gemm.c), and under BP_PRECISION_BF16 the bf16 kernels
 * (conv_bf16.c); conv_ref.c holds the definition they are tested against.
 * Shapes: conv_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/conv.h>
#include <bpc/autograd.h>
#include <bpc/precision.h>
#include "conv_internal.h"
#include "layer_input.h"

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

/* a*b and a+b, false when they overflow int64 */
static bool mul_fits(int64_t a, int64_t b, int64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static bool add_fits(int64_t a, int64_t b, int64_t *r) { return !__builtin_add_overflow(a, b, r); }

bp_status bp_conv_out_size(const bp_conv *c, int d, int64_t in, int64_t *out, int64_t *pad_lo)
{
    const char *who = bp_node_name(&c->base);
    /* k, s, dil are ints (the span was bounded at construction), in a tensor's dim */
    int64_t k = c->kernel_size[d], s = c->stride[d], dil = c->dilation[d];
    int64_t span = (k - 1) * dil + 1, lo = 0, hi = 0, padded;
    if (in < 0) return bp_fail(BP_ESHAPE, "%s: spatial dim %d has negative size %lld", who, d, (long long)in);
    if (c->padding == BP_PAD_SAME) {
        /* o = ceil(in / s), so 0 <= in - (o - 1) * s <= s: no sum below can overflow */
        int64_t o = in / s + (in % s != 0);
        int64_t total = span - (in - (o - 1) * s);
        if (total < 0) total = 0;
        lo = total / 2;
        hi = total - lo;
    } else if (c->padding == BP_PAD_EXPLICIT) {
        lo = c->pad_lo[d];
        hi = c->pad_hi[d];
    }
    if (!add_fits(in, lo + hi, &padded))
        return bp_fail(BP_ESHAPE, "%s: spatial dim %d of size %lld with padding (%lld, %lld) overflows int64", who, d,
                       (long long)in, (long long)lo, (long long)hi);
    if (padded < span)
        return bp_fail(BP_ESHAPE,
                       "%s: spatial dim %d of size %lld (padded %lld) is smaller than the dilated kernel (%lld)",
                       who, d, (long long)in, (long long)padded, (long long)span);
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
        /* Bounding the dilated kernel keeps every position sum of the kernels
         * (o*s - lo + a*d, the padded row lengths) far inside int64. */
        int64_t dil = o.dilation[d] ? o.dilation[d] : 1, span = (int64_t)(o.kernel_size[d] - 1) * dil + 1;
        if (span > INT32_MAX)
            return bp_fail(BP_EINVAL,
                           "%s: the dilated kernel along dim %d, (kernel_size - 1) * dilation + 1 = (%d - 1) * %lld + 1 "
                           "= %lld, exceeds 2^31 - 1",
                           who, d, o.kernel_size[d], (long long)dil, (long long)span);
    }
    /* The kernel's weights, prod(kernel_size) * in_channels / groups * out_channels reals. */
    int64_t nw = cin / o.groups;
    for (int d = 0; d < nsp; d++)
        if (!mul_fits(nw, o.kernel_size[d], &nw)) nw = INT64_MAX;
    if (!mul_fits(nw, cout, &nw) || nw > INT64_MAX / 8)
        return bp_fail(BP_EINVAL, "%s: the kernel of %lld x %lld channels (groups %d) with kernel_size (%d, %d, %d) "
                       "has more than 2^60 weights", who, (long long)cin, (long long)cout, o.groups,
                       o.kernel_size[0], nsp > 1 ? o.kernel_size[1] : 1, nsp > 2 ? o.kernel_size[2] : 1);
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
    bp_rng seeded, *rng = bp_rng_or_default(o.rng, &seeded);
    bp_status st = bp__conv_add_params(n, nsp, o.kernel_size, cin, cout, o.groups, o.bias, &o.w_initializer,
                                       &o.b_initializer, rng, &c->w, &c->b);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_status bp__conv_add_params(bp_node *n, int nsp, const int *kernel_size, int64_t cin, int64_t cout, int groups,
                              bool bias, const bp_init *w_init, const bp_init *b_init, bp_rng *rng, bp_var **w,
                              bp_var **b)
{
    int64_t wshape[5];
    for (int d = 0; d < nsp; d++) wshape[d] = kernel_size[d];
    wshape[nsp] = cin / groups;
    wshape[nsp + 1] = cout;
    bp_var_kind kind = bp_mode_is_train_mode(n->mode) ? BP_TRAINVAR : BP_VARIABLE;
    bp_tensor *t = NULL;
    bp_status st = bp_tensor_init(&t, nsp + 2, wshape, w_init, rng);
    if (!st) st = bp_node_add_var(n, "w", kind, t, w);
    bp_tensor_free(t);
    t = NULL;
    if (!st && bias) {
        int64_t bshape[4] = {1, 1, 1, 1};
        bshape[nsp] = cout;
        st = bp_tensor_init(&t, nsp + 1, bshape, b_init, rng);
        if (!st) st = bp_node_add_var(n, "b", kind, t, b);
        bp_tensor_free(t);
    }
    return st;
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

/* ---------------------------------------------------------------- geometry */

bp_status bp__conv_geom_init(bp__conv_geom *g, const bp_conv *c, int ndim, const int64_t *shape, int64_t *yshape,
                             int *yd)
{
    const char *who = bp_node_name(&c->base);
    char s[128], s2[128];
    const int nsp = c->n_spatial;
    const bool batched = ndim == nsp + 2;
    *g = (bp__conv_geom){.B = batched ? shape[0] : 1, .Cin = c->in_channels, .Cout = c->out_channels, .G = c->groups};
    g->Cg = g->Cin / g->G;
    g->Cog = g->Cout / g->G;
    /* A zero-sized dim makes the tensor empty whatever the others hold, so
     * it is refused before any product of the dims is formed. */
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) return bp_fail(BP_ESHAPE, "%s: empty input %s", who, bp_shape_str(s, sizeof s, ndim, shape));
    *yd = 0;
    if (batched) yshape[(*yd)++] = g->B;
    g->Pin = g->Pout = 1;
    bool fits = true;
    /* Conv1d/2d occupy the last geometry dims (leading ones of size 1), so the
     * innermost spatial dim is always the kernels' contiguous row. */
    for (int e = 0; e < 3; e++) {
        int d = e - (3 - nsp);
        g->k[e] = g->s[e] = g->d[e] = g->in[e] = g->out[e] = 1;
        g->lo[e] = 0;
        if (d >= 0) {
            g->k[e] = c->kernel_size[d];
            g->s[e] = c->stride[d];
            g->d[e] = c->dilation[d];
            g->in[e] = shape[(batched ? 1 : 0) + d];
            BP_TRY(bp_conv_out_size(c, d, g->in[e], &g->out[e], &g->lo[e]));
            yshape[(*yd)++] = g->out[e];
        }
        fits = fits && mul_fits(g->Pin, g->in[e], &g->Pin) && mul_fits(g->Pout, g->out[e], &g->Pout);
    }
    yshape[(*yd)++] = g->Cout;
    int64_t ny = 0;
    fits = fits && mul_fits(g->B, g->Pout, &ny) && mul_fits(ny, g->Cout, &ny) && ny <= INT64_MAX / 8;
    if (!fits)
        return bp_fail(BP_ESHAPE, "%s: the output %s of input %s has more than 2^60 elements", who,
                       bp_shape_str(s, sizeof s, *yd, yshape), bp_shape_str(s2, sizeof s2, ndim, shape));
    g->K = g->k[0] * g->k[1] * g->k[2] * g->Cg; /* the weights' count over Cout: bounded at construction */
    g->P = bp__conv_tile_rows(g->K, g->Pout);
    return BP_OK;
}

/* ---------------------------------------------------------------- dispatch */

/* y = conv(x, w) + bias: bf16 products where bf16 (BP_PRECISION_BF16
 * active when update() ran) and the shape suits the bf16 kernel (the float
 * flavour only), else float32 by the direct kernel or im2col + GEMM. */
static bp_status conv_forward(const bp__conv_geom *g, bool bf16, bp_real *y, const bp_real *x, const bp_real *w,
                              const bp_real *bias)
{
#ifndef BP_REAL_DOUBLE
    if (bf16 && bp__conv_bf16_ok(g)) return bp__conv_forward_bf16(g, y, x, w, bias);
#else
    (void)bf16;
#endif
    if (bp__conv_direct_ok_fwd(g)) return bp__conv_forward_direct(g, y, x, w, bias);
    return bp__conv_forward_gemm(g, y, x, w, bias);
}

/* dx, dw (K x Cout) and db (each if non-NULL) from dy; every one is written.
 * With bf16 (the precision its forward ran in), dx and dw take bf16 products
 * with float32 sums where their shape suits the bf16 kernels (dx: >= 8 input
 * channels per group, dw: >= 8 output channels per group); db, and dx or dw
 * of other shapes, stay float32: each by the direct kernel where it applies
 * and by GEMM otherwise. */
static bp_status conv_backward(const bp__conv_geom *g, bool bf16, bp_real *dx, bp_real *dw, bp_real *db,
                               const bp_real *dy, const bp_real *x, const bp_real *w)
{
#ifndef BP_REAL_DOUBLE
    if (bf16 && dw && bp__conv_bf16_ok_dw(g)) {
        BP_TRY(bp__conv_dw_bf16(g, dw, dy, x));
        dw = NULL;
    }
    if (bf16 && dx && bp__conv_bf16_ok_dx(g)) {
        BP_TRY(bp__conv_dx_bf16(g, dx, dy, w));
        dx = NULL;
    }
#else
    (void)bf16;
#endif
    if (dw && bp__conv_direct_ok_dw(g)) {
        /* the direct dw kernels also sum db, from the dy rows they read */
        BP_TRY(bp__conv_dw_direct(g, dw, db, dy, x));
        dw = db = NULL;
    }
    if (db) BP_TRY(bp__conv_dbias(g, db, dy));
    if (dx && bp__conv_direct_ok_dx(g)) {
        BP_TRY(bp__conv_dx_direct(g, dx, dy, w));
        dx = NULL;
    }
    return bp__conv_backward_gemm(g, dx, dw, dy, x, w);
}

/* ------------------------------------------------------------------ update */

/* bf16: whether the forward ran with BP_PRECISION_BF16 active; the backward
 * follows it, so that changing the precision in between changes nothing. */
typedef struct conv_ctx {
    bp__conv_geom g;
    bool bf16;
} conv_ctx;

/* The op overwrites its gradients (overwrites_grad): each non-NULL din is a
 * buffer of its own, which conv_backward writes whole. */
static bp_status conv_op_backward(const bp_ag_backward_args *a)
{
    const conv_ctx *ctx = a->ctx;
    const bp__conv_geom *g = &ctx->g;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_real *dw = a->n_in > 1 && a->din[1] ? bp_tensor_reals(a->din[1]) : NULL;
    bp_real *db = a->n_in > 2 && a->din[2] ? bp_tensor_reals(a->din[2]) : NULL;
    return conv_backward(g, ctx->bf16, dx, dw, db, bp_tensor_creals(a->dout), bp_tensor_creals(a->in[0]),
                         bp_tensor_creals(a->in[1]));
}

static const bp_ag_op conv_op = {.name = "Conv", .backward = conv_op_backward, .overwrites_grad = true};

static const char *const conv_layouts[3] = {"(B,L,C)", "(B,H,W,C)", "(B,H,W,D,C)"};

static bp_status conv_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_conv *c = (bp_conv *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    BP_TRY(bp__check_layer_input(who, x,
                                 &(bp_input_spec){.ndim = c->n_spatial + 2, .unbatched_ok = true,
                                                  .layout = conv_layouts[c->n_spatial - 1],
                                                  .channels = c->in_channels, .channels_arg = "in_channels"}));
    bp__conv_geom g;
    int64_t yshape[5];
    int yd;
    BP_TRY(bp__conv_geom_init(&g, c, x->ndim, x->shape, yshape, &yd));
    bp_tensor *y;
    BP_TRY(bp_ag_empty(&y, yd, yshape));
    const bool bf16 = bp_precision_active() == BP_PRECISION_BF16;
    bp_status st = conv_forward(&g, bf16, bp_tensor_reals(y), bp_tensor_creals(x), bp_tensor_creals(c->w->value),
                                c->b ? bp_tensor_creals(c->b->value) : NULL);
    bp_tensor *in[3] = {x, c->w->value, c->b ? c->b->value : NULL};
    int n_in = c->b ? 3 : 2;
    if (!st && bp_ag_wants(n_in, in)) {
        conv_ctx ctx = {g, bf16};
        st = bp_ag_record(y, &conv_op, n_in, in, &ctx, sizeof ctx);
    }
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}
