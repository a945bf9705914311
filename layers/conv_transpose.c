/* layers/conv_transpose.c — ConvTranspose1d/2d/3d: construction, the input
 * check and geometry, and update() as a recorded autograd op; the kernels
 * (conv_transpose_fast.c) are Conv's run on the adjoint convolution, and
 * conv_transpose_ref.c holds the definition they are tested against.
 * Semantics: bpc/conv_transpose.h; shapes: conv_transpose_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/conv_transpose.h>
#include <bpc/autograd.h>
#include "conv_internal.h"
#include "conv_transpose_internal.h"
#include "layer_input.h"

static bp_status convt_update(bp_node *n, bp_tensor *x, bp_tensor **out);

#define CONVT_CLASS(NAME)                                                                     \
    {                                                                                         \
        .name = NAME, .size = sizeof(bp_conv_transpose), .supported_modes = NULL,             \
        .n_supported_modes = 0, .default_mode = NULL, .reads_shared = false, .update = convt_update \
    }

const bp_node_class bp_conv_transpose1d_class = CONVT_CLASS("ConvTranspose1d");
const bp_node_class bp_conv_transpose2d_class = CONVT_CLASS("ConvTranspose2d");
const bp_node_class bp_conv_transpose3d_class = CONVT_CLASS("ConvTranspose3d");

bp_conv_transpose_opts bp_conv_transpose_defaults(void)
{
    return (bp_conv_transpose_opts){
        .padding = BP_PAD_SAME,
        .groups = 1,
        .bias = true,
        .w_initializer = bp_xavier_normal_init(1.0),
        .b_initializer = bp_zero_init(),
    };
}

bp_conv_transpose *bp_conv_transpose_cast(bp_node *n)
{
    if (n && (n->cls == &bp_conv_transpose1d_class || n->cls == &bp_conv_transpose2d_class ||
              n->cls == &bp_conv_transpose3d_class))
        return (bp_conv_transpose *)n;
    return NULL;
}

static bool mul_fits(int64_t a, int64_t b, int64_t *r) { return !__builtin_mul_overflow(a, b, r); }

bp_status bp_conv_transpose_out_size(const bp_conv_transpose *c, int d, int64_t in, int64_t *out, int64_t *pad_lo)
{
    const char *who = bp_node_name(&c->base);
    int64_t k = c->kernel_size[d], s = c->stride[d], dil = c->dilation[d];
    int64_t span = (k - 1) * dil + 1, lo, hi;
    if (in < 1) return bp_fail(BP_ESHAPE, "%s: spatial dim %d has size %lld", who, d, (long long)in);
    if (c->padding == BP_PAD_SAME) {
        /* lax.conv_transpose's SAME: out = in * stride */
        int64_t len = span + s - 2;
        lo = s > span - 1 ? span - 1 : (len + 1) / 2;
        hi = len - lo;
    } else if (c->padding == BP_PAD_VALID) {
        lo = span - 1;
        hi = span + s - 2 + (span > s ? span - s : 0) - lo;
    } else {
        lo = c->pad_lo[d];
        hi = c->pad_hi[d];
    }
    hi += c->output_padding[d];
    /* out = (in - 1) * s + lo + hi - span + 2; s, lo, hi, span are below 2^33 */
    int64_t o;
    if (!mul_fits(in - 1, s, &o) || o > INT64_MAX / 2)
        return bp_fail(BP_ESHAPE, "%s: spatial dim %d of size %lld with stride %lld overflows int64", who, d,
                       (long long)in, (long long)s);
    o += lo + hi - span + 2;
    if (o < 1)
        return bp_fail(BP_ESHAPE, "%s: spatial dim %d of size %lld gives an empty output (%lld)", who, d,
                       (long long)in, (long long)o);
    *out = o;
    *pad_lo = lo;
    return BP_OK;
}

static bp_status convt_new(bp_node **out, const bp_node_class *cls, int nsp, int64_t cin, int64_t cout,
                           const bp_conv_transpose_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", cls->name);
    *out = NULL;
    bp_conv_transpose_opts o = opts ? *opts : bp_conv_transpose_defaults();
    const char *who = o.name ? o.name : cls->name;
    if (cin < 1 || cout < 1)
        return bp_fail(BP_EINVAL, "%s: in_channels and out_channels must be >= 1, got %lld and %lld", who,
                       (long long)cin, (long long)cout);
    if (o.groups < 1) return bp_fail(BP_EINVAL, "%s: groups must be >= 1, got %d", who, o.groups);
    if (cin % o.groups || cout % o.groups)
        return bp_fail(BP_EINVAL, "%s: in_channels (%lld) and out_channels (%lld) must be divisible by groups (%d)",
                       who, (long long)cin, (long long)cout, o.groups);
    if (o.padding != BP_PAD_SAME && o.padding != BP_PAD_VALID && o.padding != BP_PAD_EXPLICIT)
        return bp_fail(BP_EINVAL, "%s: padding must be SAME, VALID or EXPLICIT, got %d", who, (int)o.padding);
    for (int d = 0; d < nsp; d++) {
        if (o.kernel_size[d] < 1)
            return bp_fail(BP_EINVAL, "%s: kernel_size[%d] must be >= 1, got %d", who, d, o.kernel_size[d]);
        if (o.stride[d] < 0 || o.dilation[d] < 0)
            return bp_fail(BP_EINVAL, "%s: stride[%d] and dilation[%d] must be >= 1 (0 means 1), got %d and %d",
                           who, d, d, o.stride[d], o.dilation[d]);
        int64_t s = o.stride[d] ? o.stride[d] : 1, dil = o.dilation[d] ? o.dilation[d] : 1;
        int64_t span = (int64_t)(o.kernel_size[d] - 1) * dil + 1;
        if (span > INT32_MAX)
            return bp_fail(BP_EINVAL, "%s: the dilated kernel along dim %d, (%d - 1) * %lld + 1 = %lld, exceeds 2^31 - 1",
                           who, d, o.kernel_size[d], (long long)dil, (long long)span);
        if (o.padding == BP_PAD_EXPLICIT && (o.pad_lo[d] < 0 || o.pad_lo[d] > span - 1 || o.pad_hi[d] < 0))
            return bp_fail(BP_EINVAL,
                           "%s: padding of dim %d must have 0 <= low <= %lld (the dilated kernel - 1) and high >= 0, "
                           "got (%d, %d)", who, d, (long long)(span - 1), o.pad_lo[d], o.pad_hi[d]);
        int64_t lim = s > dil ? s : dil;
        if (o.output_padding[d] < 0 || o.output_padding[d] >= lim)
            return bp_fail(BP_EINVAL, "%s: output_padding[%d] must be >= 0 and smaller than stride or dilation "
                           "(%lld), got %d", who, d, (long long)lim, o.output_padding[d]);
    }
    int64_t nw = cin / o.groups;
    for (int d = 0; d < nsp; d++)
        if (!mul_fits(nw, o.kernel_size[d], &nw)) nw = INT64_MAX;
    if (!mul_fits(nw, cout, &nw) || nw > INT64_MAX / 8)
        return bp_fail(BP_EINVAL, "%s: the kernel of %lld x %lld channels (groups %d) with kernel_size (%d, %d, %d) "
                       "has more than 2^60 weights", who, (long long)cin, (long long)cout, o.groups,
                       o.kernel_size[0], nsp > 1 ? o.kernel_size[1] : 1, nsp > 2 ? o.kernel_size[2] : 1);
    bp_node *n;
    BP_TRY(bp_node_create(&n, cls, o.name, o.mode));
    bp_conv_transpose *c = (bp_conv_transpose *)n;
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
        c->output_padding[d] = used ? o.output_padding[d] : 0;
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

bp_status bp_conv_transpose1d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_transpose_opts *o)
{
    return convt_new(out, &bp_conv_transpose1d_class, 1, cin, cout, o);
}
bp_status bp_conv_transpose2d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_transpose_opts *o)
{
    return convt_new(out, &bp_conv_transpose2d_class, 2, cin, cout, o);
}
bp_status bp_conv_transpose3d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_transpose_opts *o)
{
    return convt_new(out, &bp_conv_transpose3d_class, 3, cin, cout, o);
}

/* ---------------------------------------------------------------- geometry */

bp_status bp__convt_geom_init(bp__convt_geom *g, const bp_conv_transpose *c, int ndim, const int64_t *shape,
                              int64_t *yshape, int *yd)
{
    const char *who = bp_node_name(&c->base);
    char s[128], s2[128];
    const int nsp = c->n_spatial;
    const bool batched = ndim == nsp + 2;
    *g = (bp__convt_geom){.B = batched ? shape[0] : 1, .Cin = c->in_channels, .Cout = c->out_channels,
                          .G = c->groups, .taps = 1};
    g->Cg = g->Cin / g->G;
    g->Cog = g->Cout / g->G;
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) return bp_fail(BP_ESHAPE, "%s: empty input %s", who, bp_shape_str(s, sizeof s, ndim, shape));
    *yd = 0;
    if (batched) yshape[(*yd)++] = g->B;
    int64_t Pin = 1, Pout = 1;
    bool fits = true;
    for (int e = 0; e < 3; e++) {
        int d = e - (3 - nsp);
        g->k[e] = g->s[e] = g->d[e] = g->in[e] = g->out[e] = 1;
        g->lo[e] = 0;
        if (d >= 0) {
            g->k[e] = c->kernel_size[d];
            g->s[e] = c->stride[d];
            g->d[e] = c->dilation[d];
            g->in[e] = shape[(batched ? 1 : 0) + d];
            BP_TRY(bp_conv_transpose_out_size(c, d, g->in[e], &g->out[e], &g->lo[e]));
            yshape[(*yd)++] = g->out[e];
        }
        g->taps *= g->k[e];
        fits = fits && mul_fits(Pin, g->in[e], &Pin) && mul_fits(Pout, g->out[e], &Pout);
    }
    yshape[(*yd)++] = g->Cout;
    int64_t ny = 0;
    fits = fits && mul_fits(g->B, Pout, &ny) && mul_fits(ny, g->Cout, &ny) && ny <= INT64_MAX / 8;
    if (!fits)
        return bp_fail(BP_ESHAPE, "%s: the output %s of input %s has more than 2^60 elements", who,
                       bp_shape_str(s, sizeof s, *yd, yshape), bp_shape_str(s2, sizeof s2, ndim, shape));
    /* The adjoint convolution: from the output grid to the input grid. */
    bp__conv_geom *a = &g->adj;
    *a = (bp__conv_geom){.B = g->B, .Cin = g->Cout, .Cout = g->Cin, .Cg = g->Cog, .Cog = g->Cg, .G = g->G,
                         .Pin = Pout, .Pout = Pin};
    for (int e = 0; e < 3; e++) {
        a->in[e] = g->out[e];
        a->out[e] = g->in[e];
        a->k[e] = g->k[e];
        a->s[e] = g->s[e];
        a->d[e] = g->d[e];
        a->lo[e] = (g->k[e] - 1) * g->d[e] - g->lo[e]; /* >= 0: the constructor bounds lo by span - 1 */
    }
    a->K = g->taps * a->Cg;
    a->P = bp__conv_tile_rows(a->K, a->Pout);
    return BP_OK;
}

/* ------------------------------------------------------------------ update */

typedef struct convt_ctx {
    bp__convt_geom g;
} convt_ctx;

/* overwrites_grad: each non-NULL din is a buffer of its own, written whole. */
static bp_status convt_op_backward(const bp_ag_backward_args *a)
{
    const bp__convt_geom *g = &((const convt_ctx *)a->ctx)->g;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_real *dw = a->n_in > 1 && a->din[1] ? bp_tensor_reals(a->din[1]) : NULL;
    bp_real *db = a->n_in > 2 && a->din[2] ? bp_tensor_reals(a->din[2]) : NULL;
    return bp__convt_backward(g, dx, dw, db, bp_tensor_creals(a->dout), bp_tensor_creals(a->in[0]),
                              bp_tensor_creals(a->in[1]));
}

static const bp_ag_op convt_op = {.name = "ConvTranspose", .backward = convt_op_backward, .overwrites_grad = true};

static const char *const convt_layouts[3] = {"(B,L,C)", "(B,H,W,C)", "(B,H,W,D,C)"};

static bp_status convt_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_conv_transpose *c = (bp_conv_transpose *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    BP_TRY(bp__check_layer_input(who, x,
                                 &(bp_input_spec){.ndim = c->n_spatial + 2, .unbatched_ok = true,
                                                  .layout = convt_layouts[c->n_spatial - 1],
                                                  .channels = c->in_channels, .channels_arg = "in_channels"}));
    bp__convt_geom g;
    int64_t yshape[5];
    int yd;
    BP_TRY(bp__convt_geom_init(&g, c, x->ndim, x->shape, yshape, &yd));
    bp_tensor *y;
    BP_TRY(bp_ag_empty(&y, yd, yshape));
    bp_status st = bp__convt_forward(&g, bp_tensor_reals(y), bp_tensor_creals(x), bp_tensor_creals(c->w->value),
                                     c->b ? bp_tensor_creals(c->b->value) : NULL);
    bp_tensor *in[3] = {x, c->w->value, c->b ? c->b->value : NULL};
    int n_in = c->b ? 3 : 2;
    if (!st) {
        convt_ctx ctx = {g};
        st = bp_ag_record(y, &convt_op, n_in, in, &ctx, sizeof ctx);
    }
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}
