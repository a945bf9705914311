/* autograd/ops_seg_loss.c — the losses and the metric of voxel-wise
 * segmentation: weighted cross-entropy with an ignore label, soft Dice, and
 * the per-class Dice score (bpc/ops.h).
 *
 * Shapes: logits (..., C) as R = numel / C rows of C class scores (one row per
 * voxel), labels the R leading elements. Softmax rows come from
 * bp__row_lse (max-shifted, summed in double); backward recomputes them from
 * the logits rather than saving an (R, C) buffer.
 *
 * Cross-entropy, w_v = weight[y_v] (0 for ignored voxels), W = sum_v w_v:
 *   L = (1/W) sum_v w_v (lse(x_v) - x_v[y_v])
 *   dx_v += dL (w_v / W) (softmax(x_v) - onehot(y_v))
 * Soft Dice, per group g (a sample, or the batch) and class c, over the
 * group's voxels v not ignored, p = softmax(x), q = onehot(y):
 *   I = sum p q,  S = sum (p + q),  D = (2 I + sn) / (S + sd)
 *   L = (1/(G K)) sum_{g, c counted} (1 - D)               K = classes counted
 *   a_vc = dL/dp_vc = -(1/(G K)) (2 q_vc (S + sd) - (2 I + sn)) / (S + sd)^2
 *   dx_vj += p_vj (a_vj - sum_k p_vk a_vk)                  (through softmax)
 * All sums are in double. */
#include <stdlib.h>
#include "ag_internal.h"

bp_seg_loss_opts bp_seg_loss_defaults(void)
{
    return (bp_seg_loss_opts){.smooth_nr = 1e-5, .smooth_dr = 1e-5, .include_background = true};
}

static int64_t label_at(const bp_tensor *t, int64_t i)
{
    return t->dtype == BP_INT32 ? ((const int32_t *)t->data)[i] : ((const int64_t *)t->data)[i];
}

static bool ignored(const bp_seg_loss_opts *o, int64_t y) { return o->has_ignore && y == o->ignore_label; }

/* Checks logits (..., C) against labels (...) and every label; min_ndim is
 * the smallest rank of logits (2 when a batch axis is needed). */
static bp_status check_seg(const char *who, const bp_tensor *logits, const bp_tensor *labels,
                           const bp_seg_loss_opts *o, int min_ndim)
{
    BP_TRY(bp__check_real(who, "logits", logits));
    if (!labels) return bp_fail(BP_EINVAL, "%s: labels is NULL", who);
    if (labels->dtype != BP_INT32 && labels->dtype != BP_INT64)
        return bp_fail(BP_EDTYPE, "%s: labels must be int32 or int64, got %s", who, bp_dtype_name(labels->dtype));
    bool fit = logits->ndim >= min_ndim && labels->ndim == logits->ndim - 1;
    for (int i = 0; fit && i < labels->ndim; i++) fit = labels->shape[i] == logits->shape[i];
    if (!fit)
        return bp__shape_error(who, min_ndim > 1 ? "expected logits (B, ..., C) and labels (B, ...), got"
                                                  : "expected logits (..., C) and labels (...), got",
                               logits, labels);
    const int64_t C = logits->shape[logits->ndim - 1];
    if (labels->numel == 0 || C == 0) return bp__shape_error(who, "need at least one voxel and one class, got", logits, labels);
    for (int64_t i = 0; i < labels->numel; i++) {
        int64_t y = label_at(labels, i);
        if (!ignored(o, y) && (y < 0 || y >= C))
            return bp_fail(BP_EINVAL, "%s: label %lld at voxel %lld is outside [0, %lld)%s", who, (long long)y,
                           (long long)i, (long long)C, o->has_ignore ? " and is not the ignore label" : "");
    }
    return BP_OK;
}

/* p[0..C) = softmax of row x (in double). */
static void softmax_row(const bp_real *x, int64_t C, double *p)
{
    bp_real m;
    const double lse = bp__row_lse(x, C, &m);
    for (int64_t j = 0; j < C; j++) p[j] = exp((double)x[j] - (double)m - lse);
}

/* ------------------------------------------------------------ cross-entropy */

typedef struct ce_ctx {
    double *weight; /* C class weights (owned) */
    double wsum;
    bool has_ignore;
    int64_t ignore_label;
} ce_ctx;

static void ce_release(void *ctx) { free(((ce_ctx *)ctx)->weight); }

static bp_status ce_backward(const bp_ag_backward_args *g)
{
    const ce_ctx *c = g->ctx;
    if (!g->din[0] || c->wsum <= 0) return BP_OK;
    const bp_tensor *lg = g->in[0], *lb = g->in[1];
    const int64_t C = lg->shape[lg->ndim - 1], R = lg->numel / C;
    const bp_real *x = lg->data;
    const double s = (double)((const bp_real *)g->dout->data)[0] / c->wsum;
    bp_real *dx = g->din[0]->data;
    for (int64_t r = 0; r < R; r++) {
        const int64_t y = label_at(lb, r);
        if (c->has_ignore && y == c->ignore_label) continue;
        const double w = s * c->weight[y];
        bp_real m;
        const double shift = bp__row_lse(x + r * C, C, &m) + (double)m;
        for (int64_t j = 0; j < C; j++) dx[r * C + j] += (bp_real)(w * exp((double)x[r * C + j] - shift));
        dx[r * C + y] -= (bp_real)w;
    }
    return BP_OK;
}
static const bp_ag_op ce_op = {.name = "seg_cross_entropy", .backward = ce_backward, .release = ce_release};

bp_status bp_seg_cross_entropy(bp_tensor **out, bp_tensor *logits, bp_tensor *labels, const bp_seg_loss_opts *opts)
{
    const char *who = "seg_cross_entropy";
    const bp_seg_loss_opts o = opts ? *opts : bp_seg_loss_defaults();
    BP_TRY(bp__check_out(who, out));
    BP_TRY(check_seg(who, logits, labels, &o, 1));
    const int64_t C = logits->shape[logits->ndim - 1], R = labels->numel;
    ce_ctx c = {.weight = malloc(sizeof(double) * (size_t)C), .has_ignore = o.has_ignore, .ignore_label = o.ignore_label};
    if (!c.weight) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    for (int64_t k = 0; k < C; k++) {
        c.weight[k] = o.class_weight ? o.class_weight[k] : 1;
        if (!(c.weight[k] >= 0 && isfinite(c.weight[k]))) {
            double bad = c.weight[k];
            free(c.weight);
            return bp_fail(BP_EINVAL, "%s: class_weight[%lld] = %g (weights must be finite and >= 0)", who,
                           (long long)k, bad);
        }
    }
    const bp_real *x = logits->data;
    double total = 0;
    for (int64_t r = 0; r < R; r++) {
        const int64_t y = label_at(labels, r);
        if (ignored(&o, y) || c.weight[y] == 0) continue;
        bp_real m;
        const double lse = bp__row_lse(x + r * C, C, &m);
        total += c.weight[y] * ((double)m + lse - (double)x[r * C + y]);
        c.wsum += c.weight[y];
    }
    bp_status st = bp_ag_empty(out, 0, NULL);
    if (st) {
        free(c.weight);
        return st;
    }
    ((bp_real *)(*out)->data)[0] = (bp_real)(c.wsum > 0 ? total / c.wsum : 0);
    return bp__done(out, bp_ag_record(*out, &ce_op, 2, (bp_tensor *[]){logits, labels}, &c, sizeof c));
}

/* ---------------------------------------------------------------- soft Dice */

typedef struct dice_ctx {
    double *I, *S;      /* (G, C) sums of the forward (owned, one block) */
    int64_t G, rows_per_group, first_class;
    double sn, sd, scale; /* scale = 1 / (G K) */
    bool has_ignore;
    int64_t ignore_label;
} dice_ctx;

static void dice_release(void *ctx) { free(((dice_ctx *)ctx)->I); }

static bp_status dice_backward(const bp_ag_backward_args *g)
{
    const dice_ctx *c = g->ctx;
    if (!g->din[0]) return BP_OK;
    const bp_tensor *lg = g->in[0], *lb = g->in[1];
    const int64_t C = lg->shape[lg->ndim - 1], R = lg->numel / C;
    const bp_real *x = lg->data;
    const double dL = (double)((const bp_real *)g->dout->data)[0] * c->scale;
    bp_real *dx = g->din[0]->data;
    double *p = malloc(sizeof(double) * 2 * (size_t)C);
    if (!p) return bp_fail(BP_ENOMEM, "soft_dice_loss backward: out of memory");
    double *a = p + C;
    for (int64_t r = 0; r < R; r++) {
        const int64_t y = label_at(lb, r), grp = r / c->rows_per_group;
        if (c->has_ignore && y == c->ignore_label) continue;
        softmax_row(x + r * C, C, p);
        double pa = 0;
        for (int64_t j = 0; j < C; j++) {
            a[j] = 0;
            if (j >= c->first_class) {
                const double I = c->I[grp * C + j], S = c->S[grp * C + j] + c->sd;
                a[j] = -dL * (2.0 * (j == y) * S - (2 * I + c->sn)) / (S * S);
            }
            pa += p[j] * a[j];
        }
        for (int64_t j = 0; j < C; j++) dx[r * C + j] += (bp_real)(p[j] * (a[j] - pa));
    }
    free(p);
    return BP_OK;
}
static const bp_ag_op dice_op = {.name = "soft_dice_loss", .backward = dice_backward, .release = dice_release};

bp_status bp_soft_dice_loss(bp_tensor **out, bp_tensor *logits, bp_tensor *labels, const bp_seg_loss_opts *opts)
{
    const char *who = "soft_dice_loss";
    const bp_seg_loss_opts o = opts ? *opts : bp_seg_loss_defaults();
    BP_TRY(bp__check_out(who, out));
    BP_TRY(check_seg(who, logits, labels, &o, 2));
    if (!(o.smooth_nr >= 0 && o.smooth_dr > 0 && isfinite(o.smooth_nr) && isfinite(o.smooth_dr)))
        return bp_fail(BP_EINVAL, "%s: smooth_nr = %g and smooth_dr = %g (need smooth_nr >= 0, smooth_dr > 0, finite)",
                       who, o.smooth_nr, o.smooth_dr);
    const int64_t C = logits->shape[logits->ndim - 1], R = labels->numel, B = logits->shape[0];
    const int64_t first = o.include_background ? 0 : 1;
    if (C - first < 1)
        return bp_fail(BP_EINVAL, "%s: no class to count (C = %lld without the background)", who, (long long)C);
    dice_ctx c = {.G = o.batch ? 1 : B, .first_class = first, .sn = o.smooth_nr, .sd = o.smooth_dr,
                  .has_ignore = o.has_ignore, .ignore_label = o.ignore_label};
    c.rows_per_group = R / c.G;
    c.scale = 1.0 / ((double)c.G * (double)(C - first));
    c.I = calloc((size_t)(2 * c.G * C + C), sizeof(double));
    if (!c.I) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    c.S = c.I + c.G * C;
    double *p = c.S + c.G * C;
    const bp_real *x = logits->data;
    for (int64_t r = 0; r < R; r++) {
        const int64_t y = label_at(labels, r), grp = r / c.rows_per_group;
        if (ignored(&o, y)) continue;
        softmax_row(x + r * C, C, p);
        for (int64_t j = 0; j < C; j++) {
            c.I[grp * C + j] += j == y ? p[j] : 0;
            c.S[grp * C + j] += p[j] + (j == y);
        }
    }
    double total = 0;
    for (int64_t grp = 0; grp < c.G; grp++)
        for (int64_t j = first; j < C; j++)
            total += 1 - (2 * c.I[grp * C + j] + c.sn) / (c.S[grp * C + j] + c.sd);
    bp_status st = bp_ag_empty(out, 0, NULL);
    if (st) {
        free(c.I);
        return st;
    }
    ((bp_real *)(*out)->data)[0] = (bp_real)(total * c.scale);
    return bp__done(out, bp_ag_record(*out, &dice_op, 2, (bp_tensor *[]){logits, labels}, &c, sizeof c));
}

/* ------------------------------------------------------------- Dice score */

bp_status bp_dice_score(const bp_tensor *logits, const bp_tensor *labels, const bp_seg_loss_opts *opts, double *dice)
{
    const char *who = "dice_score";
    const bp_seg_loss_opts o = opts ? *opts : bp_seg_loss_defaults();
    BP_TRY(check_seg(who, logits, labels, &o, 1));
    if (!dice) return bp_fail(BP_EINVAL, "%s: dice is NULL", who);
    const int64_t C = logits->shape[logits->ndim - 1], R = labels->numel;
    int64_t *cnt = calloc((size_t)(3 * C), sizeof(int64_t)); /* both, predicted, labelled */
    if (!cnt) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    const bp_real *x = logits->data;
    for (int64_t r = 0; r < R; r++) {
        const int64_t y = label_at(labels, r);
        if (ignored(&o, y)) continue;
        int64_t k = 0;
        for (int64_t j = 1; j < C; j++) k = x[r * C + j] > x[r * C + k] ? j : k;
        cnt[C + k]++;
        cnt[2 * C + y]++;
        cnt[y] += k == y;
    }
    for (int64_t j = 0; j < C; j++) {
        const int64_t den = cnt[C + j] + cnt[2 * C + j];
        dice[j] = den ? 2.0 * (double)cnt[j] / (double)den : NAN;
    }
    free(cnt);
    return BP_OK;
}
