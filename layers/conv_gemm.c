/* layers/conv_gemm.c — Conv by tiled im2col / col2im and OpenBLAS GEMM, the
 * path for shapes the direct kernels do not take (see conv_internal.h for the
 * shapes, bpc/conv.h for the workspace). Never an im2col of the whole batch:
 * each thread builds the P x K rows of one tile of output positions at a time. */
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#include <bpc/error.h>
#include <bpc/tensor.h>
#include "conv_internal.h"
#include "real_math.h"

/* Tile rows: keep P*K reals near 512 KiB (in L2), between 64 and 1024 rows. */
int64_t bp__conv_tile_rows(int64_t K, int64_t Pout)
{
    int64_t P = (int64_t)(512 * 1024 / sizeof(bp_real)) / (K > 0 ? K : 1);
    if (P < 64) P = 64;
    if (P > 1024) P = 1024;
    if (P > Pout) P = Pout;
    return P;
}

/* col[r, (a,b,c,ci)] = x[o(r)*s - lo + (a,b,c)*d, grp*Cg + ci], zero outside.
 * When the innermost taps of a row are contiguous in x (dilation 1, one group,
 * all taps inside), they are one copy of k2*Cin reals instead of k2 copies:
 * im2col moves as many bytes as the GEMM does flops / (2*Cout), so its cost
 * per call matters. */
void bp__conv_im2col_tile(const bp__conv_geom *g, const bp_real *xb, int64_t grp, int64_t p0, int64_t np, bp_real *col)
{
    const int64_t Cg = g->Cg, run = g->k[2] * Cg;
    const bool packed = g->d[2] == 1 && g->G == 1;
    for (int64_t r = 0; r < np; r++) {
        int64_t p = p0 + r, o2 = p % g->out[2], t = p / g->out[2], o1 = t % g->out[1], o0 = t / g->out[1];
        int64_t i2s = o2 * g->s[2] - g->lo[2];
        bool inner = packed && i2s >= 0 && i2s + g->k[2] <= g->in[2];
        bp_real *dst = col + r * g->K;
        for (int64_t a = 0; a < g->k[0]; a++) {
            int64_t i0 = o0 * g->s[0] - g->lo[0] + a * g->d[0];
            bool in0 = i0 >= 0 && i0 < g->in[0];
            for (int64_t b = 0; b < g->k[1]; b++, dst += run) {
                int64_t i1 = o1 * g->s[1] - g->lo[1] + b * g->d[1];
                if (!(in0 && i1 >= 0 && i1 < g->in[1])) {
                    memset(dst, 0, sizeof(bp_real) * (size_t)run);
                    continue;
                }
                const bp_real *xrow = xb + (i0 * g->in[1] + i1) * g->in[2] * g->Cin + grp * Cg;
                if (inner) {
                    memcpy(dst, xrow + i2s * g->Cin, sizeof(bp_real) * (size_t)run);
                    continue;
                }
                for (int64_t c = 0; c < g->k[2]; c++) {
                    int64_t i2 = i2s + c * g->d[2];
                    if (i2 >= 0 && i2 < g->in[2])
                        memcpy(dst + c * Cg, xrow + i2 * g->Cin, sizeof(bp_real) * (size_t)Cg);
                    else
                        memset(dst + c * Cg, 0, sizeof(bp_real) * (size_t)Cg);
                }
            }
        }
    }
}

/* The adjoint of im2col_tile: dxb[...] += dcol[r, ...]. */
void bp__conv_col2im_tile(const bp__conv_geom *g, bp_real *dxb, int64_t grp, int64_t p0, int64_t np, const bp_real *dcol)
{
    const int64_t Cg = g->Cg;
    for (int64_t r = 0; r < np; r++) {
        int64_t p = p0 + r, o2 = p % g->out[2], t = p / g->out[2], o1 = t % g->out[1], o0 = t / g->out[1];
        const bp_real *src = dcol + r * g->K;
        for (int64_t a = 0; a < g->k[0]; a++) {
            int64_t i0 = o0 * g->s[0] - g->lo[0] + a * g->d[0];
            bool in0 = i0 >= 0 && i0 < g->in[0];
            for (int64_t b = 0; b < g->k[1]; b++) {
                int64_t i1 = o1 * g->s[1] - g->lo[1] + b * g->d[1];
                bool in1 = in0 && i1 >= 0 && i1 < g->in[1];
                for (int64_t c = 0; c < g->k[2]; c++, src += Cg) {
                    int64_t i2 = o2 * g->s[2] - g->lo[2] + c * g->d[2];
                    if (!(in1 && i2 >= 0 && i2 < g->in[2])) continue;
                    bp_real *dst = dxb + ((i0 * g->in[1] + i1) * g->in[2] + i2) * g->Cin + grp * Cg;
                    for (int64_t ci = 0; ci < Cg; ci++) dst[ci] += src[ci];
                }
            }
        }
    }
}
/* OpenBLAS's own threads inside our OpenMP regions would oversubscribe the
 * cores: bpc runs it single-threaded, and leaves it so (as ops_matmul.c). */
static void blas_single_thread(void)
{
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

/* y = conv(x, w) + bias by im2col + GEMM; parallel over (sample, tile) pairs. */
bp_status bp__conv_forward_gemm(const bp__conv_geom *g, bp_real *y, const bp_real *x, const bp_real *w, const bp_real *bias)
{
    const int64_t ntiles = (g->Pout + g->P - 1) / g->P, items = g->B * ntiles;
    bp_status st = BP_OK;
    blas_single_thread();
#pragma omp parallel
    {
        bp_real *col = bp_alloc_aligned(sizeof(bp_real) * (size_t)(g->P * g->K));
        if (!col) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!col) continue;
            int64_t b = it / ntiles, p0 = (it % ntiles) * g->P, np = g->Pout - p0 < g->P ? g->Pout - p0 : g->P;
            const bp_real *xb = x + b * g->Pin * g->Cin;
            bp_real *yb = y + (b * g->Pout + p0) * g->Cout;
            for (int64_t grp = 0; grp < g->G; grp++) {
                bp__conv_im2col_tile(g, xb, grp, p0, np, col);
                R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)np, (int)g->Cog, (int)g->K, 1, col,
                     (int)g->K, w + grp * g->Cog, (int)g->Cout, 0, yb + grp * g->Cog, (int)g->Cout);
            }
            if (bias)
                for (int64_t r = 0; r < np; r++)
                    for (int64_t co = 0; co < g->Cout; co++) yb[r * g->Cout + co] += bias[co];
        }
        bp_free_aligned(col);
    }
    return st ? bp_fail(st, "conv: out of memory for the %lld x %lld im2col tile", (long long)g->P, (long long)g->K)
              : BP_OK;
}

/* dx (if non-NULL) and dw (K x Cout, if non-NULL) from dy by GEMM + col2im.
 * Parallel over samples, so each thread's col2im writes only its own samples;
 * each thread sums dw in its own buffer, added in thread order at the end. */
bp_status bp__conv_backward_gemm(const bp__conv_geom *g, bp_real *dx, bp_real *dw, const bp_real *dy, const bp_real *x,
                                    const bp_real *w)
{
    const int64_t ntiles = (g->Pout + g->P - 1) / g->P;
    const size_t tile_bytes = sizeof(bp_real) * (size_t)(g->P * g->K);
    const size_t dw_bytes = sizeof(bp_real) * (size_t)(g->K * g->Cout);
    bp_status st = BP_OK;
    if (!dx && !dw) return BP_OK;
    /* col2im adds each tap's share into dx, and dw is the sum of per-thread parts */
    if (dx) memset(dx, 0, sizeof(bp_real) * (size_t)(g->B * g->Pin * g->Cin));
    if (dw) memset(dw, 0, dw_bytes);
    /* One dw accumulator per thread, summed in thread order after the region. */
    int max_threads = omp_get_max_threads();
    bp_real **dw_parts = calloc((size_t)max_threads, sizeof *dw_parts);
    if (!dw_parts) return bp_fail(BP_ENOMEM, "conv backward: out of memory");
    blas_single_thread();
#pragma omp parallel num_threads(max_threads)
    {
        bp_real *col = bp_alloc_aligned(tile_bytes);
        bp_real *dcol = dx ? bp_alloc_aligned(tile_bytes) : NULL;
        bp_real *dwt = dw ? bp_alloc_aligned(dw_bytes) : NULL;
        bool ok = col && (!dx || dcol) && (!dw || dwt);
        if (!ok) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        }
        if (dwt) memset(dwt, 0, dw_bytes);
        dw_parts[omp_get_thread_num()] = dwt;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < g->B; b++) {
            if (!ok) continue;
            const bp_real *xb = x + b * g->Pin * g->Cin;
            for (int64_t t = 0; t < ntiles; t++) {
                int64_t p0 = t * g->P, np = g->Pout - p0 < g->P ? g->Pout - p0 : g->P;
                const bp_real *dyb = dy + (b * g->Pout + p0) * g->Cout;
                for (int64_t grp = 0; grp < g->G; grp++) {
                    if (dw) {
                        /* dW_g (K x Cog) += col^T (K x np) . dY_g (np x Cog) */
                        bp__conv_im2col_tile(g, xb, grp, p0, np, col);
                        R_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g->K, (int)g->Cog, (int)np, 1, col,
                             (int)g->K, dyb + grp * g->Cog, (int)g->Cout, 1, dwt + grp * g->Cog, (int)g->Cout);
                    }
                    if (dx) {
                        /* dcol (np x K) = dY_g (np x Cog) . W_g^T (Cog x K) */
                        R_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)np, (int)g->K, (int)g->Cog, 1,
                             dyb + grp * g->Cog, (int)g->Cout, w + grp * g->Cog, (int)g->Cout, 0, dcol, (int)g->K);
                        bp__conv_col2im_tile(g, dx + b * g->Pin * g->Cin, grp, p0, np, dcol);
                    }
                }
            }
        }
        bp_free_aligned(col);
        bp_free_aligned(dcol);
    }
    for (int t = 0; t < max_threads; t++) {
        if (dw_parts[t] && !st)
            for (int64_t i = 0; i < g->K * g->Cout; i++) dw[i] += dw_parts[t][i];
        bp_free_aligned(dw_parts[t]);
    }
    free(dw_parts);
    return st ? bp_fail(st, "conv backward: out of memory for its tiles") : BP_OK;
}
/* dbias = sum of dy over samples and positions: one pass over dy, split
 * into contiguous row ranges per thread, partial sums added in thread order. */
bp_status bp__conv_dbias(const bp__conv_geom *g, bp_real *dbias, const bp_real *dy)
{
    const int64_t rows = g->B * g->Pout, C = g->Cout, Cs = C + 64; /* Cs: no shared cache lines */
    int max_threads = omp_get_max_threads();
    bp_real *part = calloc((size_t)max_threads * (size_t)Cs, sizeof(bp_real));
    if (!part) return bp_fail(BP_ENOMEM, "conv backward: out of memory for the bias gradient");
#pragma omp parallel num_threads(max_threads)
    {
        bp_real *acc = part + omp_get_thread_num() * Cs;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t co = 0; co < C; co++) acc[co] += dy[r * C + co];
    }
    memset(dbias, 0, sizeof(bp_real) * (size_t)C);
    for (int t = 0; t < max_threads; t++)
        for (int64_t co = 0; co < C; co++) dbias[co] += part[t * Cs + co];
    free(part);
    return BP_OK;
}