/* layers/layernorm_ref.c — LayerNorm's plain reference kernels (see
 * layernorm_internal.h for the shapes).
 *
 * Math, per row r of N values (eps inside the square root):
 *   mean = sum_j x_j / N,  var = sum_j (x_j - mean)^2 / N,  rstd = 1/sqrt(var + eps)
 *   (rstd = 0 when var + eps == 0, a constant row with eps = 0)
 *   xhat_j = (x_j - mean) * rstd,  y_j = xhat_j * scale_j + bias_j
 * Backward: y depends on x_j directly and through mean and rstd. With
 * g_j = dy_j * scale_j,
 *   dxhat/dx contributes g_j * rstd,
 *   the mean contributes -rstd * sum_k g_k / N,
 *   rstd contributes -rstd * xhat_j * sum_k g_k xhat_k / N
 * (d rstd/d x_j = -rstd^3 (x_j - mean) / N), so
 *   dx_j = rstd * (g_j - mean_k(g_k) - xhat_j * mean_k(g_k xhat_k)).
 * Parameters: dscale_j = sum_r dy_rj xhat_rj, dbias_j = sum_r dy_rj.
 *
 * Memory traffic: the forward reads x three times per row (sum, squared
 * deviations, output; the row is in cache after the first) and writes y
 * once; the backward reads x and dy twice per row for dx, and once more,
 * column block by column block, for dscale and dbias. */
#include <math.h>
#include <stdlib.h>
#include "layernorm_internal.h"

void bp__layernorm_forward_ref(bp_real *y, bp_real *mean, bp_real *rstd, const bp_real *x,
                               const bp_real *scale, const bp_real *bias, int64_t M, int64_t N,
                               double eps)
{
#pragma omp parallel for schedule(static) if (M * N >= BP__LN_PAR_MIN)
    for (int64_t r = 0; r < M; r++) {
        const bp_real *xr = x + r * N;
        bp_real *yr = y + r * N;
        double s = 0;
        for (int64_t j = 0; j < N; j++) s += xr[j];
        const double mu = s / (double)N;
        double ss = 0;
        for (int64_t j = 0; j < N; j++) {
            double d = xr[j] - mu;
            ss += d * d;
        }
        /* A constant row with eps = 0 has no scale: rstd 0 makes it output
         * bias (as BatchNorm's kernels do) instead of 0 * inf = NaN. */
        const double v = ss / (double)N + eps, inv = v > 0 ? 1.0 / sqrt(v) : 0.0;
        mean[r] = (bp_real)mu;
        rstd[r] = (bp_real)inv;
        /* The output uses the saved (rounded) statistics, the values the
         * backward sees, so forward and backward agree on xhat exactly. */
        const bp_real m = mean[r], rs = rstd[r];
        for (int64_t j = 0; j < N; j++) {
            bp_real xh = (xr[j] - m) * rs;
            yr[j] = (scale ? xh * scale[j] : xh) + (bias ? bias[j] : 0);
        }
    }
}

/* Columns per block of the parameter sums: one block per loop iteration. */
#define LN_COL_BLOCK 64

void bp__layernorm_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                const bp_real *x, const bp_real *mean, const bp_real *rstd,
                                const bp_real *scale, int64_t M, int64_t N)
{
    if (dx) {
#pragma omp parallel for schedule(static) if (M * N >= BP__LN_PAR_MIN)
        for (int64_t r = 0; r < M; r++) {
            const bp_real *xr = x + r * N, *dyr = dy + r * N;
            const bp_real m = mean[r], rs = rstd[r];
            double sg = 0, sgx = 0; /* sum g, sum g*xhat */
            for (int64_t j = 0; j < N; j++) {
                double g = scale ? (double)dyr[j] * scale[j] : dyr[j];
                sg += g;
                sgx += g * (double)((xr[j] - m) * rs);
            }
            const double mg = sg / (double)N, mgx = sgx / (double)N;
            bp_real *dxr = dx + r * N;
            for (int64_t j = 0; j < N; j++) {
                double g = scale ? (double)dyr[j] * scale[j] : dyr[j];
                double xh = (double)((xr[j] - m) * rs);
                dxr[j] = (bp_real)((double)rs * (g - mg - xh * mgx));
            }
        }
    }
    if (!dscale && !dbias) return;
    const int64_t blocks = (N + LN_COL_BLOCK - 1) / LN_COL_BLOCK;
#pragma omp parallel for schedule(static) if (M * N >= BP__LN_PAR_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t j0 = b * LN_COL_BLOCK, j1 = j0 + LN_COL_BLOCK < N ? j0 + LN_COL_BLOCK : N;
        double acc_s[LN_COL_BLOCK] = {0}, acc_b[LN_COL_BLOCK] = {0};
        for (int64_t r = 0; r < M; r++) {
            const bp_real *xr = x + r * N, *dyr = dy + r * N;
            const bp_real m = mean[r], rs = rstd[r];
            for (int64_t j = j0; j < j1; j++) {
                acc_b[j - j0] += dyr[j];
                acc_s[j - j0] += (double)dyr[j] * (double)((xr[j] - m) * rs);
            }
        }
        for (int64_t j = j0; j < j1; j++) {
            if (dscale) dscale[j] = (bp_real)acc_s[j - j0];
            if (dbias) dbias[j] = (bp_real)acc_b[j - j0];
        }
    }
}
