/* autograd/ops_loss.c — softmax cross-entropy with integer labels, and MSE.
 * Both reduce by the mean and return a 0-d scalar.
 *
 * Cross-entropy shapes: logits (R, C) as R = numel / C rows, labels R ints.
 *   forward   L = (1/R) sum_r [ lse(x_r) - x_r[label_r] ],  lse = log sum exp
 *   backward  dx_r += dL/R * (softmax(x_r) - onehot(label_r))
 * Backward recomputes the softmax from the logits (one more pass over x)
 * rather than saving an (R, C) buffer. Sums are in double. */
#include "ag_internal.h"

/* --------------------------------------------------------- cross-entropy */

static int64_t label_at(const bp_tensor *t, int64_t i)
{
    return t->dtype == BP_INT32 ? ((const int32_t *)t->data)[i] : ((const int64_t *)t->data)[i];
}

static bp_status ce_backward(const bp_ag_backward_args *g)
{
    const bp_tensor *lg = g->in[0], *lb = g->in[1];
    const int64_t c = lg->shape[lg->ndim - 1], r = lg->numel / c;
    const bp_real *x = lg->data;
    const bp_real s = ((const bp_real *)g->dout->data)[0] / (bp_real)r;
    bp_real *dx = g->din[0]->data;
    for (int64_t i = 0; i < r; i++) {
        const bp_real *xr = x + i * c;
        bp_real m;
        const bp_real lse = (bp_real)bp__row_lse(xr, c, &m), shift = m + lse;
        for (int64_t j = 0; j < c; j++) dx[i * c + j] += s * R_EXP(xr[j] - shift);
        dx[i * c + label_at(lb, i)] -= s;
    }
    return BP_OK;
}
static const bp_ag_op ce_op = {.name = "softmax_cross_entropy", .backward = ce_backward};

bp_status bp_softmax_cross_entropy(bp_tensor **out, bp_tensor *logits, bp_tensor *labels)
{
    const char *who = "softmax_cross_entropy";
    BP_TRY(bp__check_out(who, out));
    BP_TRY(bp__check_real(who, "logits", logits));
    if (!labels) return bp_fail(BP_EINVAL, "%s: labels is NULL", who);
    if (labels->dtype != BP_INT32 && labels->dtype != BP_INT64)
        return bp_fail(BP_EDTYPE, "%s: labels must be int32 or int64, got %s", who, bp_dtype_name(labels->dtype));
    bool fit = logits->ndim >= 1 && labels->ndim == logits->ndim - 1;
    for (int i = 0; fit && i < labels->ndim; i++) fit = labels->shape[i] == logits->shape[i];
    if (!fit) return bp__shape_error(who, "expected logits (..., C) and labels (...), got", logits, labels);
    const int64_t c = logits->shape[logits->ndim - 1], r = labels->numel;
    if (r == 0 || c == 0)
        return bp__shape_error(who, "need at least one row and one class, got", logits, labels);
    for (int64_t i = 0; i < r; i++) {
        int64_t l = label_at(labels, i);
        if (l < 0 || l >= c)
            return bp_fail(BP_EINVAL, "%s: label %lld at row %lld is outside [0, %lld)", who, (long long)l,
                           (long long)i, (long long)c);
    }
    const bp_real *x = logits->data;
    double total = 0;
    for (int64_t i = 0; i < r; i++) {
        const bp_real *xr = x + i * c;
        bp_real m;
        const double lse = bp__row_lse(xr, c, &m);
        total += (double)m + lse - (double)xr[label_at(labels, i)];
    }
    BP_TRY(bp_ag_empty(out, 0, NULL));
    ((bp_real *)(*out)->data)[0] = (bp_real)(total / (double)r);
    return bp__done(out, bp_ag_record(*out, &ce_op, 2, (bp_tensor *[]){logits, labels}, NULL, 0));
}

/* -------------------------------------------------------------------- mse */

/* L = (1/n) sum (p - t)^2;  dp += dL 2 (p - t)/n,  dt -= the same. */
static bp_status mse_backward(const bp_ag_backward_args *g)
{
    const int64_t n = g->in[0]->numel;
    const bp_real *p = g->in[0]->data, *t = g->in[1]->data;
    const bp_real s = 2 * ((const bp_real *)g->dout->data)[0] / (bp_real)n;
    bp_real *dp = g->din[0] ? g->din[0]->data : NULL, *dt = g->din[1] ? g->din[1]->data : NULL;
    for (int64_t i = 0; i < n; i++) {
        const bp_real d = s * (p[i] - t[i]);
        if (dp) dp[i] += d;
        if (dt) dt[i] -= d;
    }
    return BP_OK;
}
static const bp_ag_op mse_op = {.name = "mse", .backward = mse_backward};

bp_status bp_mse(bp_tensor **out, bp_tensor *pred, bp_tensor *target)
{
    BP_TRY(bp__check_out("mse", out));
    BP_TRY(bp__check_real("mse", "pred", pred));
    BP_TRY(bp__check_real("mse", "target", target));
    if (!bp_tensor_same_shape(pred, target)) return bp__shape_error("mse", "pred and target shapes differ:", pred, target);
    const bp_real *p = pred->data, *t = target->data;
    double total = 0;
    for (int64_t i = 0; i < pred->numel; i++) {
        const double d = (double)p[i] - (double)t[i];
        total += d * d;
    }
    BP_TRY(bp_ag_empty(out, 0, NULL));
    /* An empty input gives nan, as torch's mean over nothing. */
    ((bp_real *)(*out)->data)[0] = (bp_real)(total / (double)pred->numel);
    return bp__done(out, bp_ag_record(*out, &mse_op, 2, (bp_tensor *[]){pred, target}, NULL, 0));
}
