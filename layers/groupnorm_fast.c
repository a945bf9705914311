/* layers/groupnorm_fast.c — GroupNorm's (and InstanceNorm's) tuned kernels
 * (groupnorm_internal.h), the ones the layer runs; groupnorm_ref.c holds the
 * reference they are tested against (tests/test_groupnorm_kernels.c).
 *
 * Channels-last (B, P, C): a row of C channels is contiguous, so every pass
 * walks whole rows with one double accumulator per channel and gathers the
 * groups afterwards (the reference walks one group at a time with stride C,
 * G times over x). Each sample's P rows are cut into chunks of rows_per_chunk
 * rows, a number that depends on C alone; a (sample, chunk) pair is one work
 * item whose per-channel partial sums land in a slot of its own, and slots
 * merge in chunk order, so every thread count gives the same bits.
 *
 * Forward, over each (b, g) of n = P Cg values (two passes for the
 * statistics, so an outlier or a large offset costs no precision):
 *   pass 1  S1[c] = sum_p x            m = sum_{c in g} S1[c] / n
 *   pass 2  S2[c] = sum_p (x - m)^2    rstd = 1 / sqrt(sum_{c in g} S2[c] / n + eps)
 *   pass 3  y = (x - m) (rstd scale[c]) + bias[c], in double, rounded once
 *   memory: reads x three times, writes y once.
 * Backward, with the saved m and rstd, g = dy scale, xhat = (x - m) rstd:
 *   pass 1  Sd[c] = sum_p dy,  Sdx[c] = sum_p dy (x - m)
 *           dbias[c] = sum_b Sd[c],  dscale[c] = sum_b rstd Sdx[c]
 *           mg = sum_{c in g} scale[c] Sd[c] / n,  mgx = rstd sum_{c in g} scale[c] Sdx[c] / n
 *   pass 2  dx = rstd (g - mg - xhat mgx)
 *   memory: reads x and dy twice, writes dx once.
 * Sums are in double: a product of two floats is exact in double, so float32
 * results are the rounded double values up to the summation order. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "groupnorm_internal.h"

/* Below this many elements one thread does the work (a parallel region costs more). */
#define GN_PAR_MIN 32768

/* Rows per chunk: about 64 Ki values, so a chunk is worth a thread's start-up. */
static int64_t rows_per_chunk(int64_t C) { return C >= 1024 ? 64 : 65536 / C; }

static int64_t chunks_of(int64_t P, int64_t rows) { return P ? (P + rows - 1) / rows : 0; }

/* sum_{c in g} v[c] over the channels of each group into out[g], for G groups of Cg. */
static void group_sums(double *out, const double *v, const bp_real *weight, int64_t G, int64_t Cg)
{
    for (int64_t g = 0; g < G; g++) {
        double s = 0;
        for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) s += weight ? (double)weight[c] * v[c] : v[c];
        out[g] = s;
    }
}

/* tot[b][c] = the slots of sample b summed in chunk order. */
static void merge_chunks(double *tot, const double *slot, int64_t B, int64_t nch, int64_t C)
{
    for (int64_t b = 0; b < B; b++) {
        double *t = tot + b * C;
        memset(t, 0, sizeof *t * (size_t)C);
        for (int64_t k = 0; k < nch; k++) {
            const double *s = slot + (b * nch + k) * C;
            for (int64_t c = 0; c < C; c++) t[c] += s[c];
        }
    }
}

/* The per-channel group value of sample b: v_c = gv[b][c / Cg]. */
static void spread(double *v, const double *gv, int64_t C, int64_t Cg)
{
    for (int64_t c = 0; c < C; c++) v[c] = gv[c / Cg];
}

bp_status bp__gn_forward(bp_real *y, bp_real *mean, bp_real *rstd, const bp_real *x, const bp_real *scale,
                         const bp_real *bias, int64_t B, int64_t P, int64_t C, int64_t G, double eps)
{
    const int64_t Cg = C / G, rows = rows_per_chunk(C), nch = chunks_of(P, rows), items = B * nch;
    const double n = (double)P * (double)Cg;
    /* slot: items x C partial sums; tot, mc (per-channel mean), a (rstd scale), s (shift): B x C each */
    double *slot = malloc(sizeof(double) * (size_t)(items * C + 4 * B * C + B * G));
    if (!slot) return bp_fail(BP_ENOMEM, "GroupNorm: out of memory for %lld x %lld partial sums", (long long)items,
                              (long long)C);
    double *tot = slot + items * C, *mc = tot + B * C, *a = mc + B * C, *sh = a + B * C, *gs = sh + B * C;
    const int par = B * P * C >= GN_PAR_MIN;

#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int64_t b = it / nch, p0 = it % nch * rows, p1 = p0 + rows < P ? p0 + rows : P;
        double *restrict s = slot + it * C;
        memset(s, 0, sizeof *s * (size_t)C);
        for (int64_t p = p0; p < p1; p++) {
            const bp_real *restrict r = x + (b * P + p) * C;
            for (int64_t c = 0; c < C; c++) s[c] += r[c];
        }
    }
    merge_chunks(tot, slot, B, nch, C);
    for (int64_t b = 0; b < B; b++) {
        group_sums(gs + b * G, tot + b * C, NULL, G, Cg);
        for (int64_t g = 0; g < G; g++) gs[b * G + g] = n > 0 ? gs[b * G + g] / n : 0;
        spread(mc + b * C, gs + b * G, C, Cg);
        for (int64_t g = 0; g < G; g++) mean[b * G + g] = (bp_real)gs[b * G + g];
    }

#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int64_t b = it / nch, p0 = it % nch * rows, p1 = p0 + rows < P ? p0 + rows : P;
        double *restrict s = slot + it * C;
        const double *restrict m = mc + b * C;
        memset(s, 0, sizeof *s * (size_t)C);
        for (int64_t p = p0; p < p1; p++) {
            const bp_real *restrict r = x + (b * P + p) * C;
            for (int64_t c = 0; c < C; c++) {
                const double d = (double)r[c] - m[c];
                s[c] += d * d;
            }
        }
    }
    merge_chunks(tot, slot, B, nch, C);
    for (int64_t b = 0; b < B; b++) {
        group_sums(gs + b * G, tot + b * C, NULL, G, Cg);
        for (int64_t g = 0; g < G; g++) {
            const double v = n > 0 ? gs[b * G + g] / n : 0;
            /* a constant group with epsilon 0: output the bias, as LayerNorm does, not NaN */
            gs[b * G + g] = v + eps > 0 ? 1 / sqrt(v + eps) : 0;
            rstd[b * G + g] = (bp_real)gs[b * G + g];
        }
        for (int64_t c = 0; c < C; c++) {
            a[b * C + c] = gs[b * G + c / Cg] * (scale ? (double)scale[c] : 1);
            sh[b * C + c] = bias ? (double)bias[c] : 0;
        }
    }

#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int64_t b = it / nch, p0 = it % nch * rows, p1 = p0 + rows < P ? p0 + rows : P;
        const double *restrict m = mc + b * C, *restrict ab = a + b * C, *restrict sb = sh + b * C;
        for (int64_t p = p0; p < p1; p++) {
            const bp_real *restrict r = x + (b * P + p) * C;
            bp_real *restrict o = y + (b * P + p) * C;
            for (int64_t c = 0; c < C; c++) o[c] = (bp_real)(((double)r[c] - m[c]) * ab[c] + sb[c]);
        }
    }
    free(slot);
    return BP_OK;
}

bp_status bp__gn_backward(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                          const bp_real *mean, const bp_real *rstd, const bp_real *scale, int64_t B, int64_t P,
                          int64_t C, int64_t G)
{
    const int64_t Cg = C / G, rows = rows_per_chunk(C), nch = chunks_of(P, rows), items = B * nch;
    const double n = (double)P * (double)Cg;
    /* slot: items x 2C partial sums (Sd, Sdx); td, tdx, mc, rc, k1, k0: B x C each; gs: 2 B G */
    double *slot = malloc(sizeof(double) * (size_t)(2 * items * C + 6 * B * C + 2 * B * G));
    if (!slot) return bp_fail(BP_ENOMEM, "GroupNorm: out of memory for %lld x %lld partial sums", (long long)items,
                              (long long)C);
    double *sd = slot, *sdx = sd + items * C, *td = sdx + items * C, *tdx = td + B * C, *mc = tdx + B * C,
           *rc = mc + B * C, *k1 = rc + B * C, *k0 = k1 + B * C, *gs = k0 + B * C;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            mc[b * C + c] = mean[b * G + c / Cg];
            rc[b * C + c] = rstd[b * G + c / Cg];
        }
    const int par = B * P * C >= GN_PAR_MIN;

#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int64_t b = it / nch, p0 = it % nch * rows, p1 = p0 + rows < P ? p0 + rows : P;
        double *restrict s1 = sd + it * C, *restrict s2 = sdx + it * C;
        const double *restrict m = mc + b * C;
        memset(s1, 0, sizeof *s1 * (size_t)C);
        memset(s2, 0, sizeof *s2 * (size_t)C);
        for (int64_t p = p0; p < p1; p++) {
            const bp_real *restrict r = x + (b * P + p) * C, *restrict g = dy + (b * P + p) * C;
            for (int64_t c = 0; c < C; c++) {
                s1[c] += g[c];
                s2[c] += (double)g[c] * ((double)r[c] - m[c]);
            }
        }
    }
    merge_chunks(td, sd, B, nch, C);
    merge_chunks(tdx, sdx, B, nch, C);
    for (int64_t c = 0; c < C; c++) {
        double db = 0, ds = 0;
        for (int64_t b = 0; b < B; b++) db += td[b * C + c], ds += rc[b * C + c] * tdx[b * C + c];
        if (dbias) dbias[c] = (bp_real)db;
        if (dscale) dscale[c] = (bp_real)ds;
    }
    if (!dx) {
        free(slot);
        return BP_OK;
    }
    for (int64_t b = 0; b < B; b++) {
        double *mg = gs + 2 * b * G, *mgx = mg + G;
        group_sums(mg, td + b * C, scale, G, Cg);
        group_sums(mgx, tdx + b * C, scale, G, Cg);
        /* dx = rstd (scale dy - mg - (x - m) rstd mgx) = k1[c] dy + k0[c] (x - m) - rstd mg */
        for (int64_t c = 0; c < C; c++) {
            const int64_t g = c / Cg;
            const double r = rc[b * C + c], gmg = n > 0 ? mg[g] / n : 0, gmx = n > 0 ? r * mgx[g] / n : 0;
            k1[b * C + c] = r * (scale ? (double)scale[c] : 1);
            k0[b * C + c] = -r * r * gmx;
            td[b * C + c] = -r * gmg; /* td is free now: the constant term */
        }
    }

#pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int64_t b = it / nch, p0 = it % nch * rows, p1 = p0 + rows < P ? p0 + rows : P;
        const double *restrict m = mc + b * C, *restrict a1 = k1 + b * C, *restrict a0 = k0 + b * C,
                              *restrict cst = td + b * C;
        for (int64_t p = p0; p < p1; p++) {
            const bp_real *restrict r = x + (b * P + p) * C, *restrict g = dy + (b * P + p) * C;
            bp_real *restrict o = dx + (b * P + p) * C;
            for (int64_t c = 0; c < C; c++)
                o[c] = (bp_real)(a1[c] * g[c] + a0[c] * ((double)r[c] - m[c]) + cst[c]);
        }
    }
    free(slot);
    return BP_OK;
}
