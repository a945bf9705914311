/* autograd/ops_reduce.c — sum and mean over a set of axes.
 *
 * Shapes: a has d dims; out keeps the non-reduced dims (reduced ones become 1
 * with keepdim, else vanish). For input dim k, ostride[k] is out's row-major
 * stride along k, or 0 when k is reduced, so input element (i0..i{d-1}) maps
 * to out offset sum_k i_k ostride[k].
 *   forward   out[o] = scale * sum_{i -> o} a[i]     (scale 1 or 1/count)
 *   backward  da[i] += scale * dout[o(i)]
 * Both walk a once in memory order (one read of a, one of dout per pass);
 * forward sums in double so float32 sums over many elements keep precision. */
#include <stdlib.h>
#include "ag_internal.h"

typedef struct red_ctx {
    int ndim;
    int64_t shape[BP_MAX_DIMS];
    int64_t ostride[BP_MAX_DIMS];
    double scale;
} red_ctx;

/* Calls visit(x_index, out_offset) for every input element, in memory order. */
#define REDUCE_WALK(c, numel, BODY)                                             \
    do {                                                                        \
        const int nd_ = (c)->ndim;                                              \
        const int64_t inner_ = nd_ ? (c)->shape[nd_ - 1] : 1;                   \
        const int64_t is_ = nd_ ? (c)->ostride[nd_ - 1] : 0;                    \
        int64_t idx_[BP_MAX_DIMS] = {0}, off_ = 0;                              \
        for (int64_t base_ = 0; inner_ > 0 && base_ < (numel); base_ += inner_) { \
            for (int64_t j_ = 0; j_ < inner_; j_++) {                           \
                const int64_t xi = base_ + j_, oi = off_ + j_ * is_;            \
                BODY                                                            \
            }                                                                   \
            for (int d_ = nd_ - 2; d_ >= 0; d_--) {                             \
                off_ += (c)->ostride[d_];                                       \
                if (++idx_[d_] < (c)->shape[d_]) break;                         \
                off_ -= (c)->ostride[d_] * (c)->shape[d_];                      \
                idx_[d_] = 0;                                                   \
            }                                                                   \
        }                                                                       \
    } while (0)

static bp_status reduce_backward(const bp_ag_backward_args *g)
{
    const red_ctx *c = g->ctx;
    const bp_real *dy = g->dout->data;
    bp_real *da = g->din[0]->data;
    const bp_real s = (bp_real)c->scale;
    REDUCE_WALK(c, g->in[0]->numel, da[xi] += s * dy[oi];);
    return BP_OK;
}
static const bp_ag_op sum_op = {.name = "sum", .backward = reduce_backward};
static const bp_ag_op mean_op = {.name = "mean", .backward = reduce_backward};

static bp_status reduce(const char *who, const bp_ag_op *op, bp_tensor **out, bp_tensor *a, int n_axes,
                        const int *axes, bool keepdim, bool mean)
{
    BP_TRY(bp__check_out(who, out));
    BP_TRY(bp__check_real(who, "a", a));
    if (n_axes < 0 || (n_axes > 0 && !axes))
        return bp_fail(BP_EINVAL, "%s: n_axes must be >= 0 with an axes array, got %d", who, n_axes);
    char s[96];
    bool red[BP_MAX_DIMS] = {false};
    for (int i = 0; i < n_axes; i++) {
        int ax = axes[i] < 0 ? axes[i] + a->ndim : axes[i];
        if (ax < 0 || ax >= a->ndim)
            return bp_fail(BP_EINVAL, "%s: axis %d out of range for shape %s", who, axes[i],
                           bp_shape_str(s, sizeof s, a->ndim, a->shape));
        if (red[ax])
            return bp_fail(BP_EINVAL, "%s: axis %d given twice for shape %s", who, axes[i],
                           bp_shape_str(s, sizeof s, a->ndim, a->shape));
        red[ax] = true;
    }
    if (n_axes == 0)
        for (int k = 0; k < a->ndim; k++) red[k] = true;

    red_ctx c;
    c.ndim = a->ndim;
    int64_t oshape[BP_MAX_DIMS];
    int ond = 0;
    int64_t count = 1, stride = 1;
    for (int k = a->ndim - 1; k >= 0; k--) {
        c.shape[k] = a->shape[k];
        c.ostride[k] = red[k] ? 0 : stride;
        if (red[k]) count *= a->shape[k];
        else stride *= a->shape[k];
    }
    for (int k = 0; k < a->ndim; k++) {
        if (!red[k]) oshape[ond++] = a->shape[k];
        else if (keepdim) oshape[ond++] = 1;
    }
    c.scale = mean ? (count ? 1.0 / (double)count : NAN) : 1.0;

    BP_TRY(bp_ag_empty(out, ond, oshape));
    bp_tensor *o = *out;
    double *acc = calloc((size_t)(o->numel ? o->numel : 1), sizeof *acc);
    if (!acc) return bp__done(out, bp_fail(BP_ENOMEM, "%s: out of memory", who));
    const bp_real *x = a->data;
    REDUCE_WALK(&c, a->numel, acc[oi] += x[xi];);
    bp_real *y = o->data;
    for (int64_t i = 0; i < o->numel; i++) y[i] = (bp_real)(acc[i] * c.scale);
    free(acc);
    return bp__done(out, bp_ag_record(o, op, 1, &a, &c, sizeof c));
}

bp_status bp_sum(bp_tensor **out, bp_tensor *a, int n_axes, const int *axes, bool keepdim)
{
    return reduce("sum", &sum_op, out, a, n_axes, axes, keepdim, false);
}

bp_status bp_mean(bp_tensor **out, bp_tensor *a, int n_axes, const int *axes, bool keepdim)
{
    return reduce("mean", &mean_op, out, a, n_axes, axes, keepdim, true);
}
