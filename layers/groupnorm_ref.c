/* layers/groupnorm_ref.c — GroupNorm's reference kernels (groupnorm_internal.h):
 * plain loops, sums in double, two passes (mean, then squared deviations).
 * Memory: the forward reads x twice and writes y once; the backward reads x
 * and dy twice and writes dx once. */
#include <math.h>
#include "groupnorm_internal.h"

void bp__gn_forward_ref(bp_real *y, bp_real *mean, bp_real *rstd, const bp_real *x, const bp_real *scale,
                        const bp_real *bias, int64_t B, int64_t P, int64_t C, int64_t G, double eps)
{
    const int64_t Cg = C / G;
    const double n = (double)(P * Cg);
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < G; g++) {
            const bp_real *xb = x + b * P * C + g * Cg;
            double s = 0, q = 0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = 0; c < Cg; c++) s += xb[p * C + c];
            const double m = n > 0 ? s / n : 0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = 0; c < Cg; c++) q += ((double)xb[p * C + c] - m) * ((double)xb[p * C + c] - m);
            /* a constant group with epsilon 0: output the bias, as LayerNorm does, not NaN */
            const double var = n > 0 ? q / n : 0, r = var + eps > 0 ? 1 / sqrt(var + eps) : 0;
            mean[b * G + g] = (bp_real)m;
            rstd[b * G + g] = (bp_real)r;
            bp_real *yb = y + b * P * C + g * Cg;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = 0; c < Cg; c++) {
                    const int64_t ch = g * Cg + c;
                    const double v = ((double)xb[p * C + c] - m) * r;
                    yb[p * C + c] = (bp_real)(v * (scale ? (double)scale[ch] : 1) + (bias ? (double)bias[ch] : 0));
                }
        }
}

void bp__gn_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                         const bp_real *mean, const bp_real *rstd, const bp_real *scale, int64_t B, int64_t P,
                         int64_t C, int64_t G)
{
    const int64_t Cg = C / G;
    const double n = (double)(P * Cg);
    /* dscale[c] = sum_b,p dy xhat and dbias[c] = sum_b,p dy, one channel at a time in double */
    for (int64_t ch = 0; ch < C && (dscale || dbias); ch++) {
        const int64_t g = ch / Cg;
        double ss = 0, sb = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < P; p++) {
                const int64_t i = (b * P + p) * C + ch;
                ss += (double)dy[i] * (((double)x[i] - mean[b * G + g]) * rstd[b * G + g]);
                sb += dy[i];
            }
        if (dscale) dscale[ch] = (bp_real)ss;
        if (dbias) dbias[ch] = (bp_real)sb;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < G; g++) {
            const double m = mean[b * G + g], r = rstd[b * G + g];
            const int64_t o = b * P * C + g * Cg;
            double sg = 0, sgx = 0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = 0; c < Cg; c++) {
                    const int64_t i = o + p * C + c, ch = g * Cg + c;
                    const double xh = ((double)x[i] - m) * r, gr = (double)dy[i] * (scale ? (double)scale[ch] : 1);
                    sg += gr;
                    sgx += gr * xh;
                }
            if (!dx) continue;
            const double mg = sg / n, mgx = sgx / n;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = 0; c < Cg; c++) {
                    const int64_t i = o + p * C + c, ch = g * Cg + c;
                    const double xh = ((double)x[i] - m) * r, gr = (double)dy[i] * (scale ? (double)scale[ch] : 1);
                    dx[i] = (bp_real)(r * (gr - mg - xh * mgx));
                }
        }
}
