/* autograd/ops_activation.c — relu, leaky_relu, sigmoid, tanh, gelu,
 * softmax and log_softmax over the last axis, and dropout.
 *
 * Elementwise ops read a once and write out once (forward), and read dout and
 * a or out once per backward. Those whose derivative is a function of the
 * output (sigmoid, tanh, softmax) differentiate from `out` and save nothing.
 * Softmax shapes: a is (R, C) with R = numel / C rows of C = last dim. */
#include <stdlib.h>
#include "ag_internal.h"

/* ------------------------------------------------------------------- relu */

static bp_status relu_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *x = g->in[0]->data;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, if (x[i] > 0) da[i] += dy[i];);
    return BP_OK;
}
static const bp_ag_op relu_op = {.name = "relu", .backward = relu_backward};

bp_status bp_relu(bp_tensor **out, bp_tensor *a)
{
    BP_TRY(bp__unary_out("relu", out, a));
    const bp_real *x = a->data;
    bp_real *y = (*out)->data;
    BP__EACH(a->numel, y[i] = x[i] > 0 ? x[i] : 0;);
    return bp__done(out, bp_ag_record(*out, &relu_op, 1, &a, NULL, 0));
}

/* ------------------------------------------------------------- leaky_relu */

typedef struct slope_ctx {
    double slope;
} slope_ctx;

static bp_status leaky_relu_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *x = g->in[0]->data;
    const bp_real s = (bp_real)((const slope_ctx *)g->ctx)->slope;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, da[i] += x[i] > 0 ? dy[i] : s * dy[i];);
    return BP_OK;
}
static const bp_ag_op leaky_relu_op = {.name = "leaky_relu", .backward = leaky_relu_backward};

bp_status bp_leaky_relu(bp_tensor **out, bp_tensor *a, double slope)
{
    BP_TRY(bp__unary_out("leaky_relu", out, a));
    const bp_real *x = a->data, s = (bp_real)slope;
    bp_real *y = (*out)->data;
    BP__EACH(a->numel, y[i] = x[i] > 0 ? x[i] : s * x[i];);
    slope_ctx c = {slope};
    return bp__done(out, bp_ag_record(*out, &leaky_relu_op, 1, &a, &c, sizeof c));
}

/* ---------------------------------------------------------------- sigmoid */

/* d sigmoid = y (1 - y). */
static bp_status sigmoid_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *y = g->out->data;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, da[i] += dy[i] * y[i] * (1 - y[i]););
    return BP_OK;
}
static const bp_ag_op sigmoid_op = {.name = "sigmoid", .backward = sigmoid_backward};

bp_status bp_sigmoid(bp_tensor **out, bp_tensor *a)
{
    BP_TRY(bp__unary_out("sigmoid", out, a));
    const bp_real *x = a->data;
    bp_real *y = (*out)->data;
    /* exp of a non-positive number only, so no overflow for large |x|. */
    BP__EACH(a->numel, {
        bp_real e = R_EXP(-(x[i] >= 0 ? x[i] : -x[i]));
        y[i] = x[i] >= 0 ? 1 / (1 + e) : e / (1 + e);
    });
    return bp__done(out, bp_ag_record(*out, &sigmoid_op, 1, &a, NULL, 0));
}

/* ------------------------------------------------------------------- tanh */

/* d tanh = 1 - y^2. */
static bp_status tanh_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *y = g->out->data;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, da[i] += dy[i] * (1 - y[i] * y[i]););
    return BP_OK;
}
static const bp_ag_op tanh_op = {.name = "tanh", .backward = tanh_backward};

bp_status bp_tanh(bp_tensor **out, bp_tensor *a)
{
    BP_TRY(bp__unary_out("tanh", out, a));
    const bp_real *x = a->data;
    bp_real *y = (*out)->data;
    BP__EACH(a->numel, y[i] = R_TANH(x[i]););
    return bp__done(out, bp_ag_record(*out, &tanh_op, 1, &a, NULL, 0));
}

/* ------------------------------------------------------------------- gelu */

/* Exact GELU: y = x Phi(x), Phi(x) = (1 + erf(x/sqrt2))/2;
 * dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi). */
#define GELU_RSQRT2 0.70710678118654752440
#define GELU_RSQRT2PI 0.39894228040143267794

static bp_status gelu_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *x = g->in[0]->data;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, {
        bp_real cdf = (bp_real)0.5 * (1 + R_ERF(x[i] * (bp_real)GELU_RSQRT2));
        bp_real pdf = (bp_real)GELU_RSQRT2PI * R_EXP((bp_real)-0.5 * x[i] * x[i]);
        da[i] += dy[i] * (cdf + x[i] * pdf);
    });
    return BP_OK;
}
static const bp_ag_op gelu_op = {.name = "gelu", .backward = gelu_backward};

bp_status bp_gelu(bp_tensor **out, bp_tensor *a)
{
    BP_TRY(bp__unary_out("gelu", out, a));
    const bp_real *x = a->data;
    bp_real *y = (*out)->data;
    BP__EACH(a->numel, y[i] = (bp_real)0.5 * x[i] * (1 + R_ERF(x[i] * (bp_real)GELU_RSQRT2)););
    return bp__done(out, bp_ag_record(*out, &gelu_op, 1, &a, NULL, 0));
}

/* ---------------------------------------------------------------- softmax */

static bp_status rows_out(const char *who, bp_tensor **out, bp_tensor *a, int64_t *rows, int64_t *cols)
{
    BP_TRY(bp__check_out(who, out));
    BP_TRY(bp__check_real(who, "a", a));
    if (a->ndim < 1) return bp_fail(BP_ESHAPE, "%s: expected at least 1 dim (softmax over the last), got a 0-d tensor", who);
    *cols = a->shape[a->ndim - 1];
    *rows = *cols ? a->numel / *cols : 0;
    return bp_ag_empty(out, a->ndim, a->shape);
}

/* dx = y (dy - sum_j dy_j y_j), per row. */
static bp_status softmax_backward(const bp_ag_backward_args *g)
{
    const int64_t c = g->out->shape[g->out->ndim - 1], r = c ? g->out->numel / c : 0;
    const bp_real *dy = g->dout->data, *y = g->out->data;
    bp_real *da = g->din[0]->data;
#pragma omp parallel for schedule(static) if (r * c >= BP__PAR_MIN)
    for (int64_t i = 0; i < r; i++) {
        const bp_real *yr = y + i * c, *gr = dy + i * c;
        double dot = 0;
        for (int64_t j = 0; j < c; j++) dot += (double)gr[j] * yr[j];
        for (int64_t j = 0; j < c; j++) da[i * c + j] += yr[j] * (gr[j] - (bp_real)dot);
    }
    return BP_OK;
}
static const bp_ag_op softmax_op = {.name = "softmax", .backward = softmax_backward};

bp_status bp_softmax(bp_tensor **out, bp_tensor *a)
{
    int64_t r, c;
    BP_TRY(rows_out("softmax", out, a, &r, &c));
    const bp_real *x = a->data;
    bp_real *y = (*out)->data;
#pragma omp parallel for schedule(static) if (r * c >= BP__PAR_MIN)
    for (int64_t i = 0; i < r; i++) {
        const bp_real *xr = x + i * c;
        bp_real *yr = y + i * c, m;
        const bp_real lse = (bp_real)bp__row_lse(xr, c, &m), shift = m + lse;
        for (int64_t j = 0; j < c; j++) yr[j] = R_EXP(xr[j] - shift);
    }
    return bp__done(out, bp_ag_record(*out, &softmax_op, 1, &a, NULL, 0));
}

/* ------------------------------------------------------------ log_softmax */

/* dx = dy - exp(y) sum_j dy_j, per row. */
static bp_status log_softmax_backward(const bp_ag_backward_args *g)
{
    const int64_t c = g->out->shape[g->out->ndim - 1], r = c ? g->out->numel / c : 0;
    const bp_real *dy = g->dout->data, *y = g->out->data;
    bp_real *da = g->din[0]->data;
#pragma omp parallel for schedule(static) if (r * c >= BP__PAR_MIN)
    for (int64_t i = 0; i < r; i++) {
        const bp_real *yr = y + i * c, *gr = dy + i * c;
        double s = 0;
        for (int64_t j = 0; j < c; j++) s += gr[j];
        for (int64_t j = 0; j < c; j++) da[i * c + j] += gr[j] - R_EXP(yr[j]) * (bp_real)s;
    }
    return BP_OK;
}
static const bp_ag_op log_softmax_op = {.name = "log_softmax", .backward = log_softmax_backward};

bp_status bp_log_softmax(bp_tensor **out, bp_tensor *a)
{
    int64_t r, c;
    BP_TRY(rows_out("log_softmax", out, a, &r, &c));
    const bp_real *x = a->data;
    bp_real *y = (*out)->data;
#pragma omp parallel for schedule(static) if (r * c >= BP__PAR_MIN)
    for (int64_t i = 0; i < r; i++) {
        const bp_real *xr = x + i * c;
        bp_real *yr = y + i * c, m;
        const bp_real lse = (bp_real)bp__row_lse(xr, c, &m);
        for (int64_t j = 0; j < c; j++) yr[j] = xr[j] - m - lse;
    }
    return bp__done(out, bp_ag_record(*out, &log_softmax_op, 1, &a, NULL, 0));
}

/* ---------------------------------------------------------------- dropout */

/* The mask holds 1/(1-p) where an element was kept and 0 where dropped, so
 * forward is out = x * mask and backward da += dout * mask. */
typedef struct dropout_ctx {
    bp_tensor *mask;
} dropout_ctx;

static void dropout_release(void *ctx) { bp__pool_drop(((dropout_ctx *)ctx)->mask); }

static bp_status dropout_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *m = ((const dropout_ctx *)g->ctx)->mask->data;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, da[i] += dy[i] * m[i];);
    return BP_OK;
}
static const bp_ag_op dropout_op = {.name = "dropout", .backward = dropout_backward, .release = dropout_release};

bp_status bp_dropout(bp_tensor **out, bp_tensor *x, double p, bool training, bp_rng *rng)
{
    BP_TRY(bp__check_out("dropout", out));
    BP_TRY(bp__check_real("dropout", "x", x));
    if (!(p >= 0 && p <= 1)) return bp_fail(BP_EINVAL, "dropout: p must be in [0, 1], got %g", p);
    if (!training || p == 0) {
        *out = bp_tensor_retain(x);
        return BP_OK;
    }
    if (!rng) return bp_fail(BP_EINVAL, "dropout: rng is NULL while training with p = %g", p);
    dropout_ctx c = {NULL};
    BP_TRY(bp_ag_empty(&c.mask, x->ndim, x->shape));
    BP_TRY(bp__done(&c.mask, bp_ag_empty(out, x->ndim, x->shape)));
    /* Draws stay serial and in element order so a seed fixes the mask. */
    bp_real *m = c.mask->data, *y = (*out)->data;
    const bp_real *v = x->data;
    const bp_real keep = p < 1 ? (bp_real)(1 / (1 - p)) : 0;
    for (int64_t i = 0; i < x->numel; i++) {
        m[i] = bp_rng_uniform(rng) >= p ? keep : 0;
        y[i] = v[i] * m[i];
    }
    return bp__done(out, bp_ag_record(*out, &dropout_op, 1, &x, &c, sizeof c));
}
