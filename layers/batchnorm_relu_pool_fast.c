/* layers/batchnorm_relu_pool_fast.c — BatchNorm + ReLU + MaxPool as one kernel
 * pair (batchnorm_internal.h: bp__bn_relu_maxpool_forward_train and
 * _backward_train), on the plans and statistics of batchnorm_fast.c. */
#include <stdbool.h>
#include <stdlib.h>
#include "batchnorm_internal.h"
#include "simd.h"

/* ------------------------------------------- BatchNorm + ReLU + MaxPool
 *
 * The conv-net block's tail in two passes over x instead of five: the
 * statistics pass, then one pass that normalises, rectifies and pools, so
 * relu(bn(x)) is never written nor read back; backward takes the two sums
 * from the pooled-size input values at the maxima that the forward kept,
 * reads x once to write dx, and never builds the full-size gradient of
 * relu(bn(x)). The values are the
 * ones bp__bn_relu_forward_train + max pooling compute: the same bn_affine
 * expression, ReLU as v < 0 ? 0 : v, ties to the first position, NaN kept. */

/* Checks a pooling geometry: sizes positive, windows disjoint, out sizes inside. */
static bp_status check_pool(const char *who, const bp__bn_pool3d *g)
{
    if (!g) return bp_fail(BP_EINVAL, "%s: pg is NULL", who);
    if (g->B < 1) return bp_fail(BP_ESHAPE, "%s: expected B >= 1, got %lld", who, (long long)g->B);
    for (int d = 0; d < 3; d++) {
        if (g->in[d] < 1 || g->k[d] < 1 || g->s[d] < g->k[d] || g->out[d] < 1 || (g->out[d] - 1) * g->s[d] >= g->in[d])
            return bp_fail(BP_EINVAL,
                           "%s: dim %d: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, "
                           "(out-1)*s < in), got in %lld, k %lld, s %lld, out %lld",
                           who, d, (long long)g->in[d], (long long)g->k[d], (long long)g->s[d], (long long)g->out[d]);
    }
    if (g->in[0] * g->in[1] * g->in[2] > INT32_MAX)
        return bp_fail(BP_ESHAPE, "%s: more than 2^31 positions per sample", who);
    return BP_OK;
}

/* Window [lo, hi) of output index o along dim d. */
static void pool_window(const bp__bn_pool3d *g, int d, int64_t o, int64_t *lo, int64_t *hi)
{
    *lo = o * g->s[d];
    *hi = min64(*lo + g->k[d], g->in[d]);
}

static inline bp_real relu_bn(bp_real x, bp_real m, bp_real a, bp_real b)
{
    bp_real v = bn_affine(x, m, a, b);
    return v < 0 ? (bp_real)0 : v;
}

/* One output row (b, o0, o1) of y = maxpool(relu(bn(x))), with the position
 * (arg) and the input value (xa) of each maximum: each input row of its
 * windows is read once, front to back; full runs of PVL channels keep the
 * running max, position and input in registers (as pool.c's max_row). */
static void pool_apply_row(const bp__bn_pool3d *g, int64_t C, const bp_real *m, const bp_real *a, const bp_real *b,
                           const bp_real *xb, int64_t o0, int64_t o1, bp_real *y, int32_t *arg, bp_real *xa)
{
    const int64_t c_full = C / PVL * PVL;
    int64_t lo0, hi0, lo1, hi1;
    pool_window(g, 0, o0, &lo0, &hi0);
    pool_window(g, 1, o1, &lo1, &hi1);
    for (int64_t i0 = lo0; i0 < hi0; i0++)
        for (int64_t i1 = lo1; i1 < hi1; i1++) {
            const int64_t row = (i0 * g->in[1] + i1) * g->in[2];
            const bool first = i0 == lo0 && i1 == lo1;
            for (int64_t o2 = 0; o2 < g->out[2]; o2++) {
                int64_t lo2, hi2;
                pool_window(g, 2, o2, &lo2, &hi2);
                bp_real *yo = y + o2 * C;
                int32_t *ao = arg + o2 * C;
                bp_real *xo = xa + o2 * C;
                for (int64_t c0 = 0; c0 < c_full; c0 += PVL) {
                    const pvr mv = *(const pvru *)(m + c0), av = *(const pvru *)(a + c0), bv = *(const pvru *)(b + c0);
                    pvr mx, xm;
                    pvi ix;
                    int64_t i2 = lo2;
                    if (first) { /* the window's first element starts it */
                        xm = *(const pvru *)(xb + (row + i2) * C + c0);
                        pvr v = (xm - mv) * av + bv;
                        mx = (pvr)((pvi)v & ~(v < 0));
                        ix = (pvi){0} + (pidx)(row + i2);
                        i2++;
                    } else {
                        mx = *(const pvru *)(yo + c0);
                        xm = *(const pvru *)(xo + c0);
                        load_idx(&ix, ao + c0);
                    }
                    for (; i2 < hi2; i2++) {
                        pvr xv = *(const pvru *)(xb + (row + i2) * C + c0), v = (xv - mv) * av + bv;
                        v = (pvr)((pvi)v & ~(v < 0));
                        pvi take = (mx == mx) & ~(v <= mx); /* as max_take, also carrying x */
                        mx = (pvr)(((pvi)v & take) | ((pvi)mx & ~take));
                        xm = (pvr)(((pvi)xv & take) | ((pvi)xm & ~take));
                        ix = ((pidx)(row + i2) & take) | (ix & ~take);
                    }
                    *(pvru *)(yo + c0) = mx;
                    *(pvru *)(xo + c0) = xm;
                    store_idx(ao + c0, &ix);
                }
                for (int64_t c = c_full; c < C; c++) {
                    int64_t i2 = lo2;
                    if (first) {
                        xo[c] = xb[(row + i2) * C + c];
                        yo[c] = relu_bn(xo[c], m[c], a[c], b[c]);
                        ao[c] = (int32_t)(row + i2);
                        i2++;
                    }
                    for (; i2 < hi2; i2++) {
                        bp_real xv = xb[(row + i2) * C + c], v = relu_bn(xv, m[c], a[c], b[c]), cur = yo[c];
                        bool take = (cur == cur) & !(v <= cur);
                        yo[c] = take ? v : cur;
                        xo[c] = take ? xv : xo[c];
                        ao[c] = take ? (int32_t)(row + i2) : ao[c];
                    }
                }
            }
        }
}

bp_status bp__bn_relu_maxpool_forward_train(bp_real *y, int32_t *arg, bp_real *xa, bp_real *mean, bp_real *invstd, bp_real *var,
                                           const bp_real *x, const bp_real *scale, const bp_real *bias,
                                           const bp__bn_pool3d *pg, int64_t C, double eps, void *work)
{
    const char *who = "bp__bn_relu_maxpool_forward_train";
    BN_NEED(who, y);
    BN_NEED(who, arg);
    BN_NEED(who, xa);
    BP_TRY(check_pool(who, pg));
    const int64_t M = pg->B * pg->in[0] * pg->in[1] * pg->in[2];
    bn_plan p;
    void *owned;
    bp_status st = bp__bn_train_begin(who, &p, &owned, mean, invstd, var, x, scale, bias, M, C, eps, work);
    if (!st) {
        const bp_real *pm = p.par, *pa = p.par + p.lp, *pb = p.par + 2 * p.lp;
        const int64_t rows = pg->B * pg->out[0] * pg->out[1], per_in = pg->in[0] * pg->in[1] * pg->in[2];
#pragma omp parallel for schedule(static) if (M * C >= BN_PAR_MIN)
        for (int64_t r = 0; r < rows; r++) {
            int64_t o1 = r % pg->out[1], t = r / pg->out[1], o0 = t % pg->out[0], b = t / pg->out[0];
            pool_apply_row(pg, C, pm, pa, pb, x + b * per_in * C, o0, o1, y + r * pg->out[2] * C,
                           arg + r * pg->out[2] * C, xa + r * pg->out[2] * C);
        }
    }
    free(owned);
    return st;
}

bp_status bp__bn_relu_maxpool_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                            const int32_t *arg, const bp_real *xa, const bp_real *x,
                                            const bp_real *mean,
                                            const bp_real *invstd, const bp_real *scale, const bp_real *bias,
                                            const bp__bn_pool3d *pg, int64_t C, void *work)
{
    const char *who = "bp__bn_relu_maxpool_backward_train";
    BN_NEED(who, dx);
    BN_NEED(who, dy);
    BN_NEED(who, arg);
    BN_NEED(who, xa);
    BN_NEED(who, x);
    BN_NEED(who, mean);
    BN_NEED(who, invstd);
    BP_TRY(check_pool(who, pg));
    const int64_t per_in = pg->in[0] * pg->in[1] * pg->in[2], per_out = pg->out[0] * pg->out[1] * pg->out[2];
    const int64_t M = pg->B * per_in, Q = pg->B * per_out;
    BP_TRY(bp__bn_check_common(who, M, C, 1, work));
    bn_plan p = bp__bn_plan_shape(M, C);
    void *owned;
    BP_TRY(bp__bn_plan_workspace(who, &p, work, &owned));
    bp__bn_affine_params(&p, mean, invstd, scale, bias);
    const bp_real *pm = p.par, *pa = p.par + p.lp, *pb = p.par + 2 * p.lp;
    /* Sums over the windows' maxima, dz = dy there where bn(x) > 0, from the
     * maxima's inputs xa that the forward kept (pooled size, read in order):
     * chunks of output positions fixed by the shape, summed in chunk order. */
#pragma omp parallel for schedule(static) if (M * C >= BN_PAR_MIN)
    for (int64_t ch = 0; ch < p.nchunks; ch++) {
        double *s1 = p.acc0 + ch * C, *s2 = p.acc1 + ch * C;
        for (int64_t c = 0; c < C; c++) s1[c] = s2[c] = 0.0;
        for (int64_t q = Q * ch / p.nchunks; q < Q * (ch + 1) / p.nchunks; q++) {
            const bp_real *xq = xa + q * C, *dyq = dy + q * C;
            for (int64_t c = 0; c < C; c++) {
                bool on = bn_affine(xq[c], pm[c], pa[c], pb[c]) > 0;
                s1[c] += on ? (double)dyq[c] : 0.0;
                s2[c] += on ? (double)dyq[c] * (double)(xq[c] - pm[c]) : 0.0;
            }
        }
    }
    for (int64_t ch = 1; ch < p.nchunks; ch++)
        for (int64_t c = 0; c < C; c++) {
            p.acc0[c] += p.acc0[ch * C + c];
            p.acc1[c] += p.acc1[ch * C + c];
        }
    bp_real *k1 = p.par + 3 * p.lp, *k2 = p.par + 4 * p.lp, *k3 = p.par + 5 * p.lp;
    for (int64_t c = 0; c < C; c++) { /* as backward_train */
        double is = (double)invstd[c], sc = scale ? (double)scale[c] : 1.0;
        double sdz = p.acc0[c], sdzxm = p.acc1[c], g = sc * is;
        k1[c] = (bp_real)g;
        k2[c] = (bp_real)(-g * is * is * sdzxm / (double)M);
        k3[c] = (bp_real)(-g * sdz / (double)M);
        if (dscale) dscale[c] = (bp_real)((double)dscale[c] + is * sdzxm);
        if (dbias) dbias[c] = (bp_real)((double)dbias[c] + sdz);
    }
    /* dx = dz*k1 + (x - mean)*k2 + k3 everywhere, dz nonzero only at maxima */
    const int64_t rows = pg->B * pg->in[0] * pg->in[1];
#pragma omp parallel for schedule(static) if (M * C >= BN_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i1 = r % pg->in[1], t = r / pg->in[1], i0 = t % pg->in[0], b = t / pg->in[0];
        int64_t o0 = i0 / pg->s[0], o1 = i1 / pg->s[1];
        bool covered = i0 % pg->s[0] < pg->k[0] && o0 < pg->out[0] && i1 % pg->s[1] < pg->k[1] && o1 < pg->out[1];
        const int64_t q0 = ((b * pg->out[0] + o0) * pg->out[1] + o1) * pg->out[2];
        const int64_t row = (i0 * pg->in[1] + i1) * pg->in[2];
        for (int64_t i2 = 0; i2 < pg->in[2]; i2++) {
            const bp_real *xr = x + (r * pg->in[2] + i2) * C;
            bp_real *dr = dx + (r * pg->in[2] + i2) * C;
            int64_t o2 = i2 / pg->s[2];
            bool in_win = covered && i2 % pg->s[2] < pg->k[2] && o2 < pg->out[2];
            const int32_t *aq = in_win ? arg + (q0 + o2) * C : NULL;
            const bp_real *dyq = in_win ? dy + (q0 + o2) * C : NULL;
            for (int64_t c = 0; c < C; c++) {
                bp_real xm = xr[c] - pm[c], dz = 0;
                if (in_win && aq[c] == row + i2 && bn_affine(xr[c], pm[c], pa[c], pb[c]) > 0) dz = dyq[c];
                dr[c] = dz * k1[c] + xm * k2[c] + k3[c];
            }
        }
    }
    free(owned);
    return BP_OK;
}
