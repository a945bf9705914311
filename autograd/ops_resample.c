/* autograd/ops_resample.c — joining along an axis and up-sampling, the two
 * moves of a U-Net's decoder besides convolutions (bpc/ops.h).
 *
 * Concat: the output seen as (outer, sum_i len_i * inner) rows; input i owns
 * columns [off_i, off_i + len_i * inner) of each row. Backward copies the same
 * slices of dout back (+=).
 *
 * Upsample over channels-last x (B, s_1..s_k, C). Along each spatial dim d an
 * output index o reads one (nearest) or two (linear) input indices with
 * weights, torch's rules:
 *   nearest  i = floor(o / scale)
 *   linear   src = max((o + 0.5) / scale - 0.5, 0), i0 = floor(src),
 *            i1 = min(i0 + 1, s - 1), w1 = src - i0, w0 = 1 - w1
 * (align_corners=False). The output is the tensor product of the per-dim
 * tables: y[o] = sum over the 2^k corners of prod_d w_d * x[i_d] (1 corner
 * for nearest). Backward scatters dy with the same weights (+=). */
#include <stdlib.h>
#include <string.h>
#include "ag_internal.h"

/* ------------------------------------------------------------------ concat */

typedef struct concat_ctx {
    int64_t outer, inner, total; /* total = sum of the axis lengths */
} concat_ctx;

static bp_status concat_backward(const bp_ag_backward_args *g)
{
    const concat_ctx *c = g->ctx;
    const bp_real *dy = g->dout->data;
    int64_t off = 0;
    for (int i = 0; i < g->n_in; i++) {
        const int64_t w = g->in[i]->numel / c->outer; /* this input's columns per row */
        if (g->din[i]) {
            bp_real *d = g->din[i]->data;
            for (int64_t r = 0; r < c->outer; r++)
                for (int64_t j = 0; j < w; j++) d[r * w + j] += dy[r * c->total * c->inner + off + j];
        }
        off += w;
    }
    return BP_OK;
}
static const bp_ag_op concat_op = {.name = "concat", .backward = concat_backward};

bp_status bp_concat(bp_tensor **out, int n, bp_tensor *const *in, int axis)
{
    const char *who = "concat";
    BP_TRY(bp__check_out(who, out));
    if (n < 1 || n > BP_AG_MAX_INPUTS || !in)
        return bp_fail(BP_EINVAL, "%s: n = %d tensors (need 1..%d and an array)", who, n, BP_AG_MAX_INPUTS);
    for (int i = 0; i < n; i++) BP_TRY(bp__check_real(who, "in[i]", in[i]));
    const int nd = in[0]->ndim;
    const int ax = axis < 0 ? axis + nd : axis;
    if (nd < 1 || ax < 0 || ax >= nd)
        return bp_fail(BP_EINVAL, "%s: axis %d does not fit a %dD tensor", who, axis, nd);
    int64_t shape[BP_MAX_DIMS], total = 0;
    memcpy(shape, in[0]->shape, sizeof(int64_t) * (size_t)nd);
    for (int i = 0; i < n; i++) {
        bool same = in[i]->ndim == nd;
        for (int d = 0; same && d < nd; d++) same = d == ax || in[i]->shape[d] == shape[d];
        if (!same) return bp__shape_error(who, "inputs differ outside the axis:", in[0], in[i]);
        total += in[i]->shape[ax];
    }
    shape[ax] = total;
    concat_ctx c = {.outer = 1, .inner = 1, .total = total};
    for (int d = 0; d < ax; d++) c.outer *= shape[d];
    for (int d = ax + 1; d < nd; d++) c.inner *= shape[d];
    BP_TRY(bp_ag_empty(out, nd, shape));
    bp_real *y = (*out)->data;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const int64_t w = in[i]->shape[ax] * c.inner;
        const bp_real *x = in[i]->data;
        for (int64_t r = 0; r < c.outer; r++) memcpy(y + r * total * c.inner + off, x + r * w, sizeof(bp_real) * (size_t)w);
        off += w;
    }
    return bp__done(out, bp_ag_record(*out, &concat_op, n, in, &c, sizeof c));
}

/* ---------------------------------------------------------------- upsample */

typedef struct up_ctx {
    int k;
    int64_t B, C, in[3], out[3];
    /* per dim d and output index o: input indices idx[d][2o], idx[d][2o+1] and
     * weights wt[d][2o], wt[d][2o+1] (one block, owned) */
    int64_t *idx[3];
    double *wt[3];
    void *block;
} up_ctx;

static void up_release(void *ctx) { free(((up_ctx *)ctx)->block); }

/* Visits every (output position, input position, weight) triple of one
 * sample; BODY sees yo, xi (flat spatial positions) and wgt. */
#define UP_EACH(c, BODY)                                                                         \
    for (int64_t o0 = 0; o0 < (c)->out[0]; o0++)                                                 \
        for (int64_t o1 = 0; o1 < (c)->out[1]; o1++)                                             \
            for (int64_t o2 = 0; o2 < (c)->out[2]; o2++) {                                       \
                const int64_t yo = (o0 * (c)->out[1] + o1) * (c)->out[2] + o2;                   \
                for (int a0 = 0; a0 < 2; a0++)                                                   \
                    for (int a1 = 0; a1 < 2; a1++)                                               \
                        for (int a2 = 0; a2 < 2; a2++) {                                         \
                            const double wgt = (c)->wt[0][2 * o0 + a0] * (c)->wt[1][2 * o1 + a1] * \
                                               (c)->wt[2][2 * o2 + a2];                          \
                            if (wgt == 0) continue;                                              \
                            const int64_t xi = ((c)->idx[0][2 * o0 + a0] * (c)->in[1] +          \
                                                (c)->idx[1][2 * o1 + a1]) * (c)->in[2] +         \
                                               (c)->idx[2][2 * o2 + a2];                         \
                            BODY                                                                 \
                        }                                                                        \
            }

static bp_status up_backward(const bp_ag_backward_args *g)
{
    const up_ctx *c = g->ctx;
    if (!g->din[0]) return BP_OK;
    const int64_t pin = c->in[0] * c->in[1] * c->in[2], pout = c->out[0] * c->out[1] * c->out[2];
    const bp_real *dy = g->dout->data;
    bp_real *dx = g->din[0]->data;
    for (int64_t b = 0; b < c->B; b++) {
        const bp_real *dyb = dy + b * pout * c->C;
        bp_real *dxb = dx + b * pin * c->C;
        UP_EACH(c, {
            for (int64_t ch = 0; ch < c->C; ch++) dxb[xi * c->C + ch] += (bp_real)(wgt * (double)dyb[yo * c->C + ch]);
        })
    }
    return BP_OK;
}
static const bp_ag_op up_op = {.name = "upsample", .backward = up_backward, .release = up_release};

bp_status bp_upsample(bp_tensor **out, bp_tensor *x, int k, const int *scale, bp_upsample_mode mode)
{
    const char *who = "upsample";
    BP_TRY(bp__check_out(who, out));
    BP_TRY(bp__check_real(who, "x", x));
    char s[96];
    if (k < 1 || k > 3 || !scale)
        return bp_fail(BP_EINVAL, "%s: %d spatial dims (need 1..3 and a scale array)", who, k);
    if (x->ndim != k + 2)
        return bp_fail(BP_ESHAPE, "%s: expected %dD input (B, %d spatial dims, C), got %s", who, k + 2, k,
                       bp_shape_str(s, sizeof s, x->ndim, x->shape));
    if (mode != BP_UPSAMPLE_NEAREST && mode != BP_UPSAMPLE_LINEAR)
        return bp_fail(BP_EINVAL, "%s: mode %d is neither nearest nor linear", who, (int)mode);
    up_ctx c = {.k = k, .B = x->shape[0], .C = x->shape[k + 1]};
    int64_t yshape[5] = {c.B}, total = 0;
    yshape[k + 1] = c.C;
    for (int d = 0; d < 3; d++) {
        const int sd = d - (3 - k); /* the k dims sit last: leading ones of size 1 */
        const int64_t sc = sd >= 0 ? scale[sd] : 1;
        c.in[d] = sd >= 0 ? x->shape[1 + sd] : 1;
        if (sc < 1 || sc > 1024)
            return bp_fail(BP_EINVAL, "%s: scale[%d] = %lld (need 1..1024)", who, sd, (long long)sc);
        if (c.in[d] > INT64_MAX / 2048)
            return bp_fail(BP_ESHAPE, "%s: spatial size %lld is too large", who, (long long)c.in[d]);
        c.out[d] = c.in[d] * sc;
        if (sd >= 0) yshape[1 + sd] = c.out[d];
        total += 2 * c.out[d];
    }
    c.block = malloc((sizeof(int64_t) + sizeof(double)) * (size_t)total);
    if (!c.block) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    int64_t *ip = c.block;
    double *wp = (double *)(ip + total);
    for (int d = 0; d < 3; d++) {
        c.idx[d] = ip, c.wt[d] = wp;
        const double sc = (double)(c.out[d] / c.in[d]);
        for (int64_t o = 0; o < c.out[d]; o++) {
            if (mode == BP_UPSAMPLE_NEAREST || c.in[d] == 1) {
                ip[2 * o] = ip[2 * o + 1] = mode == BP_UPSAMPLE_NEAREST ? (int64_t)((double)o / sc) : 0;
                wp[2 * o] = 1, wp[2 * o + 1] = 0;
            } else {
                double src = ((double)o + 0.5) / sc - 0.5;
                if (src < 0) src = 0;
                int64_t i0 = (int64_t)src;
                if (i0 > c.in[d] - 1) i0 = c.in[d] - 1;
                ip[2 * o] = i0;
                ip[2 * o + 1] = i0 + 1 < c.in[d] ? i0 + 1 : c.in[d] - 1;
                wp[2 * o + 1] = src - (double)i0;
                wp[2 * o] = 1 - wp[2 * o + 1];
            }
        }
        ip += 2 * c.out[d], wp += 2 * c.out[d];
    }
    bp_status st = bp_ag_zeros(out, k + 2, yshape);
    if (st) {
        free(c.block);
        return st;
    }
    const int64_t pin = c.in[0] * c.in[1] * c.in[2], pout = c.out[0] * c.out[1] * c.out[2];
    const bp_real *xv = x->data;
    bp_real *y = (*out)->data;
    for (int64_t b = 0; b < c.B; b++) {
        const bp_real *xb = xv + b * pin * c.C;
        bp_real *yb = y + b * pout * c.C;
        UP_EACH(&c, {
            for (int64_t ch = 0; ch < c.C; ch++) yb[yo * c.C + ch] += (bp_real)(wgt * (double)xb[xi * c.C + ch]);
        })
    }
    return bp__done(out, bp_ag_record(*out, &up_op, 1, &x, &c, sizeof c));
}
