/* layers/batchnorm_ref.c — the BatchNorm kernels written plainly, as the
 * reference the tests hold the fast kernels (batchnorm_fast.c) to; see
 * batchnorm_internal.h for the shapes and the math.
 *
 * One channel at a time, every sum in double over the rows in order, the mean
 * first and then the variance from the deviations (two passes, no shifted or
 * merged partials), each output rounded to bp_real once. Nothing here shares
 * code with the fast kernels but bn_affine, the bp_real expression that
 * defines where the ReLU's kink is. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "batchnorm_internal.h"

static double inv_std_ref(double var, double eps)
{
    double d = var + eps;
    return d > 0.0 ? 1.0 / sqrt(d) : 0.0;
}

static double relu_if(double v, bool relu) { return relu && v < 0.0 ? 0.0 : v; }

/* The forward's bp_real output bn(x) > 0, for the relu backward's mask. */
static bool forward_positive(bp_real x, bp_real mean, bp_real invstd, const bp_real *scale, const bp_real *bias,
                             int64_t c)
{
    bp_real a = scale ? invstd * scale[c] : invstd, b = bias ? bias[c] : (bp_real)0;
    return bn_affine(x, mean, a, b) > 0;
}

void bp__bn_forward_ref(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var, const bp_real *x,
                        const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps, bool relu)
{
    for (int64_t c = 0; c < C; c++) {
        double m = 0.0, v = 0.0;
        for (int64_t r = 0; r < M; r++) m += (double)x[r * C + c];
        m /= (double)M;
        for (int64_t r = 0; r < M; r++) {
            double d = (double)x[r * C + c] - m;
            v += d * d;
        }
        v /= (double)M;
        double is = inv_std_ref(v, eps), g = scale ? (double)scale[c] : 1.0, b = bias ? (double)bias[c] : 0.0;
        for (int64_t r = 0; r < M; r++)
            y[r * C + c] = (bp_real)relu_if(((double)x[r * C + c] - m) * is * g + b, relu);
        mean[c] = (bp_real)m;
        invstd[c] = (bp_real)is;
        if (var) var[c] = (bp_real)v;
    }
}

void bp__bn_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                         const bp_real *mean, const bp_real *invstd, const bp_real *scale, const bp_real *bias,
                         int64_t M, int64_t C, bool relu)
{
    for (int64_t c = 0; c < C; c++) {
        const double m = (double)mean[c], is = (double)invstd[c], g = scale ? (double)scale[c] : 1.0;
        double sdz = 0.0, sdzx = 0.0;
        for (int64_t r = 0; r < M; r++) {
            const int64_t i = r * C + c;
            double dz = relu && !forward_positive(x[i], mean[c], invstd[c], scale, bias, c) ? 0.0 : (double)dy[i];
            sdz += dz;
            sdzx += dz * ((double)x[i] - m) * is;
        }
        for (int64_t r = 0; r < M; r++) {
            const int64_t i = r * C + c;
            double dz = relu && !forward_positive(x[i], mean[c], invstd[c], scale, bias, c) ? 0.0 : (double)dy[i];
            double xhat = ((double)x[i] - m) * is;
            dx[i] = (bp_real)((dz - sdz / (double)M - xhat * sdzx / (double)M) * is * g);
        }
        if (dscale) dscale[c] = (bp_real)((double)dscale[c] + sdzx);
        if (dbias) dbias[c] = (bp_real)((double)dbias[c] + sdz);
    }
}

void bp__bn_forward_eval_ref(bp_real *y, const bp_real *x, const bp_real *running_mean, const bp_real *running_var,
                             const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps, bool relu)
{
    for (int64_t c = 0; c < C; c++) {
        const double m = (double)running_mean[c], is = inv_std_ref((double)running_var[c], eps);
        const double g = scale ? (double)scale[c] : 1.0, b = bias ? (double)bias[c] : 0.0;
        for (int64_t r = 0; r < M; r++)
            y[r * C + c] = (bp_real)relu_if(((double)x[r * C + c] - m) * is * g + b, relu);
    }
}

void bp__bn_backward_eval_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                              const bp_real *running_mean, const bp_real *running_var, const bp_real *scale,
                              const bp_real *bias, int64_t M, int64_t C, double eps, bool relu)
{
    for (int64_t c = 0; c < C; c++) {
        const double m = (double)running_mean[c], is = inv_std_ref((double)running_var[c], eps);
        const double g = scale ? (double)scale[c] : 1.0;
        const bp_real is_r = (bp_real)is; /* the invstd the forward normalised with */
        double sdz = 0.0, sdzx = 0.0;
        for (int64_t r = 0; r < M; r++) {
            const int64_t i = r * C + c;
            double dz = relu && !forward_positive(x[i], running_mean[c], is_r, scale, bias, c) ? 0.0 : (double)dy[i];
            if (dx) dx[i] = (bp_real)(dz * is * g);
            sdz += dz;
            if (dscale) sdzx += dz * ((double)x[i] - m);
        }
        if (dscale) dscale[c] = (bp_real)((double)dscale[c] + sdzx * is);
        if (dbias) dbias[c] = (bp_real)((double)dbias[c] + sdz);
    }
}

/* ---------------------------------------------------------------- fused with max pooling */

/* Runs f(o, i) for every output position o of the pooled tensor and every input
 * position i of its window, in window order (dim 0 slowest): the plain loops of
 * a 3-D max pool over (B, in0, in1, in2) positions of C channels. */
typedef void (*window_fn)(void *ctx, int64_t o, int64_t i, int64_t pos_in_sample);

static void for_each_window(const bp__bn_pool3d *g, void *ctx, window_fn f)
{
    const int64_t per_in = g->in[0] * g->in[1] * g->in[2];
    int64_t o = 0;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t o0 = 0; o0 < g->out[0]; o0++)
            for (int64_t o1 = 0; o1 < g->out[1]; o1++)
                for (int64_t o2 = 0; o2 < g->out[2]; o2++, o++)
                    for (int64_t i0 = o0 * g->s[0]; i0 < o0 * g->s[0] + g->k[0] && i0 < g->in[0]; i0++)
                        for (int64_t i1 = o1 * g->s[1]; i1 < o1 * g->s[1] + g->k[1] && i1 < g->in[1]; i1++)
                            for (int64_t i2 = o2 * g->s[2]; i2 < o2 * g->s[2] + g->k[2] && i2 < g->in[2]; i2++) {
                                int64_t pos = (i0 * g->in[1] + i1) * g->in[2] + i2;
                                f(ctx, o, b * per_in + pos, pos);
                            }
}

/* The running first maximum of every window, channel by channel; NaN, once
 * taken, stays (the max of XLA and of pool.c). */
typedef struct argmax_ctx {
    const bp_real *z; /* relu(bn(x)), full size */
    int64_t C;
    bp_real *best;
    int64_t *at;      /* the input row of each maximum */
    int32_t *arg;     /* its position in the sample, or NULL */
    int64_t last_o;
} argmax_ctx;

static void take_max(void *p, int64_t o, int64_t i, int64_t pos)
{
    argmax_ctx *a = p;
    const bool first = o != a->last_o;
    a->last_o = o;
    for (int64_t c = 0; c < a->C; c++) {
        bp_real v = a->z[i * a->C + c], *cur = &a->best[o * a->C + c];
        if (first || (*cur == *cur && !(v <= *cur))) {
            *cur = v;
            a->at[o * a->C + c] = i;
            if (a->arg) a->arg[o * a->C + c] = (int32_t)pos;
        }
    }
}

static int64_t pooled_numel(const bp__bn_pool3d *g, int64_t C) { return g->B * g->out[0] * g->out[1] * g->out[2] * C; }
static int64_t input_rows(const bp__bn_pool3d *g) { return g->B * g->in[0] * g->in[1] * g->in[2]; }

bp_status bp__bn_relu_maxpool_forward_ref(bp_real *y, int32_t *arg, bp_real *xa, bp_real *mean, bp_real *invstd,
                                          bp_real *var, const bp_real *x, const bp_real *scale, const bp_real *bias,
                                          const bp__bn_pool3d *pg, int64_t C, double eps)
{
    const int64_t M = input_rows(pg), Q = pooled_numel(pg, C);
    bp_real *z = malloc(sizeof(bp_real) * (size_t)(M * C));
    int64_t *at = malloc(sizeof(int64_t) * (size_t)Q);
    if (!z || !at) {
        free(z);
        free(at);
        return bp_fail(BP_ENOMEM, "bp__bn_relu_maxpool_forward_ref: out of memory");
    }
    bp__bn_forward_ref(z, mean, invstd, var, x, scale, bias, M, C, eps, true);
    argmax_ctx a = {z, C, y, at, arg, -1};
    for_each_window(pg, &a, take_max);
    for (int64_t q = 0; q < Q; q++) xa[q] = x[at[q] * C + q % C];
    free(z);
    free(at);
    return BP_OK;
}

bp_status bp__bn_relu_maxpool_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                           const bp_real *x, const bp_real *mean, const bp_real *invstd,
                                           const bp_real *scale, const bp_real *bias, const bp__bn_pool3d *pg,
                                           int64_t C)
{
    const int64_t M = input_rows(pg), Q = pooled_numel(pg, C);
    bp_real *z = malloc(sizeof(bp_real) * (size_t)(M * C)), *best = malloc(sizeof(bp_real) * (size_t)Q);
    bp_real *dz = calloc((size_t)(M * C), sizeof(bp_real));
    int64_t *at = malloc(sizeof(int64_t) * (size_t)Q);
    bp_status st = BP_OK;
    if (!z || !best || !dz || !at) {
        st = bp_fail(BP_ENOMEM, "bp__bn_relu_maxpool_backward_ref: out of memory");
    } else {
        /* relu(bn(x)) as the forward computed it, in bp_real */
        for (int64_t i = 0; i < M * C; i++) {
            int64_t c = i % C;
            bp_real a = scale ? invstd[c] * scale[c] : invstd[c], b = bias ? bias[c] : (bp_real)0;
            bp_real v = bn_affine(x[i], mean[c], a, b);
            z[i] = v < 0 ? (bp_real)0 : v;
        }
        argmax_ctx a = {z, C, best, at, NULL, -1};
        for_each_window(pg, &a, take_max);
        for (int64_t q = 0; q < Q; q++) dz[at[q] * C + q % C] = dy[q]; /* windows are disjoint */
        bp__bn_backward_ref(dx, dscale, dbias, dz, x, mean, invstd, scale, bias, M, C, true);
    }
    free(z);
    free(best);
    free(dz);
    free(at);
    return st;
}
