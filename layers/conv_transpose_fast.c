/* layers/conv_transpose_fast.c — ConvTranspose on Conv's kernels. With the
 * adjoint convolution `adj` of conv_transpose_internal.h,
 *   y  = adj.dx(x) + b      direct dx kernel when every stride is 1, else GEMM + col2im
 *   dx = adj.forward(dy)    direct kernels for any stride, else im2col + GEMM
 *   dw = flip(adj.dw)       adj's dw with z = dy (its input) and dout = x
 * and the U-Net up-sampling (kernel == stride, every output one tap) has a
 * forward of its own: per input row and output phase one GEMM written into y.
 * The kernel is re-laid out for adj (T*Cg*Cout reals) on each call. */
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#include <bpc/error.h>
#include <bpc/tensor.h>
#include "conv_transpose_internal.h"
#include "real_math.h"

/* w (T, Cg, Cout) <-> w' (T, Cog, Cin): w'[t, co_l, g*Cg + ci] = w[T-1-t, ci, g*Cog + co_l].
 * to_adj false writes w from w'. */
static void flip_kernel(const bp__convt_geom *g, bp_real *w, bp_real *wa, bool to_adj)
{
    for (int64_t t = 0; t < g->taps; t++)
        for (int64_t grp = 0; grp < g->G; grp++)
            for (int64_t ci = 0; ci < g->Cg; ci++)
                for (int64_t co = 0; co < g->Cog; co++) {
                    bp_real *pw = w + ((g->taps - 1 - t) * g->Cg + ci) * g->Cout + grp * g->Cog + co;
                    bp_real *pa = wa + (t * g->Cog + co) * g->Cin + grp * g->Cg + ci;
                    if (to_adj)
                        *pa = *pw;
                    else
                        *pw = *pa;
                }
}

bool bp__convt_is_shuffle(const bp__convt_geom *g)
{
    for (int e = 0; e < 3; e++)
        if (g->k[e] != g->s[e] || (g->k[e] > 1 && g->d[e] != 1) || g->lo[e] != g->k[e] - 1 ||
            g->out[e] != g->in[e] * g->s[e])
            return false;
    return true;
}

static void blas_single_thread(void)
{
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

/* kernel == stride: output o = i*s + r gets only tap T-1-r... per dim, i.e.
 *   y[b, i*s + r, co] = b[co] + sum_ci x[b, i, ci] * w[k-1-r, ci, co].
 * For a fixed input row (b, i0, i1) and phase (r0, r1), the outputs
 * (i2*s2 + r2, co) over i2 and (r2, co) are one contiguous y row read as an
 * I2 x (s2*Cout) matrix: X_row (I2 x Cg) . W_{r0 r1} (Cg x s2*Cog) per group.
 * wr holds those matrices: [r0][r1][g][ci][r2][co_l]. Parallel over input
 * rows; each writes its s0*s1 output rows whole. Traffic: x once, y once. */
static bp_status shuffle_forward(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                                 const bp_real *bias)
{
    const int64_t s0 = g->s[0], s1 = g->s[1], s2 = g->s[2], Cg = g->Cg, Cog = g->Cog, G = g->G;
    const int64_t N = s2 * Cog, mat = Cg * N;
    bp_real *wr = malloc(sizeof(bp_real) * (size_t)(s0 * s1 * G * mat));
    if (!wr) return bp_fail(BP_ENOMEM, "ConvTranspose: out of memory for the re-laid kernel");
    for (int64_t r0 = 0; r0 < s0; r0++)
        for (int64_t r1 = 0; r1 < s1; r1++)
            for (int64_t grp = 0; grp < G; grp++)
                for (int64_t ci = 0; ci < Cg; ci++)
                    for (int64_t r2 = 0; r2 < s2; r2++) {
                        int64_t t = ((s0 - 1 - r0) * s1 + (s1 - 1 - r1)) * s2 + (s2 - 1 - r2);
                        memcpy(wr + ((r0 * s1 + r1) * G + grp) * mat + ci * N + r2 * Cog,
                               w + (t * Cg + ci) * g->Cout + grp * Cog, sizeof(bp_real) * (size_t)Cog);
                    }
    const int64_t rows = g->B * g->in[0] * g->in[1], I2 = g->in[2], ylen = g->out[2] * g->Cout;
    blas_single_thread();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i1 = r % g->in[1], i0 = r / g->in[1] % g->in[0], b = r / g->in[1] / g->in[0];
        const bp_real *xr = x + r * I2 * g->Cin;
        for (int64_t r0 = 0; r0 < s0; r0++)
            for (int64_t r1 = 0; r1 < s1; r1++) {
                bp_real *yr = y + ((b * g->out[0] + i0 * s0 + r0) * g->out[1] + i1 * s1 + r1) * ylen;
                for (int64_t grp = 0; grp < G; grp++) {
                    const bp_real *wm = wr + ((r0 * s1 + r1) * G + grp) * mat;
                    if (G == 1) {
                        R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)I2, (int)N, (int)Cg, 1, xr,
                               (int)g->Cin, wm, (int)N, 0, yr, (int)N);
                        continue;
                    }
                    for (int64_t r2 = 0; r2 < s2; r2++)
                        R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)I2, (int)Cog, (int)Cg, 1,
                               xr + grp * Cg, (int)g->Cin, wm + r2 * Cog, (int)N, 0,
                               yr + r2 * g->Cout + grp * Cog, (int)(s2 * g->Cout));
                }
                if (bias)
                    for (int64_t j = 0; j < ylen; j++) yr[j] += bias[j % g->Cout];
            }
    }
    free(wr);
    return BP_OK;
}

static void add_bias(const bp__convt_geom *g, bp_real *y, const bp_real *bias)
{
    const int64_t rows = g->B * g->out[0] * g->out[1], len = g->out[2] * g->Cout;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        bp_real *yr = y + r * len;
        for (int64_t p = 0; p < g->out[2]; p++)
            for (int64_t co = 0; co < g->Cout; co++) yr[p * g->Cout + co] += bias[co];
    }
}

bp_status bp__convt_forward(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                            const bp_real *bias)
{
    if (bp__convt_is_shuffle(g)) return shuffle_forward(g, y, x, w, bias);
    bp_real *wa = malloc(sizeof(bp_real) * (size_t)(g->taps * g->Cg * g->Cout));
    if (!wa) return bp_fail(BP_ENOMEM, "ConvTranspose: out of memory for the adjoint kernel");
    flip_kernel(g, (bp_real *)w, wa, true);
    bp_status st = bp__conv_direct_ok_dx(&g->adj) ? bp__conv_dx_direct(&g->adj, y, x, wa)
                                                  : bp__conv_backward_gemm(&g->adj, y, NULL, x, x, wa);
    free(wa);
    if (!st && bias) add_bias(g, y, bias);
    return st;
}

bp_status bp__convt_backward(const bp__convt_geom *g, bp_real *dx, bp_real *dw, bp_real *db, const bp_real *dy,
                             const bp_real *x, const bp_real *w)
{
    const bp__conv_geom *a = &g->adj;
    const int64_t nw = g->taps * g->Cg * g->Cout;
    bp_status st = BP_OK;
    if (db) {
        /* the bias gradient sums dy, adj's input: a geometry whose output is the output grid */
        bp__conv_geom gb = *a;
        gb.Cout = g->Cout;
        gb.Pout = a->Pin;
        BP_TRY(bp__conv_dbias(&gb, db, dy));
    }
    if (!dx && !dw) return BP_OK;
    bp_real *wa = malloc(sizeof(bp_real) * (size_t)(dw ? 2 * nw : nw));
    if (!wa) return bp_fail(BP_ENOMEM, "ConvTranspose backward: out of memory for the adjoint kernel");
    if (dx) {
        flip_kernel(g, (bp_real *)w, wa, true);
        st = bp__conv_direct_ok_fwd(a) ? bp__conv_forward_direct(a, dx, dy, wa, NULL)
                                       : bp__conv_forward_gemm(a, dx, dy, wa, NULL);
    }
    if (!st && dw) {
        bp_real *dwa = wa + nw;
        st = bp__conv_direct_ok_dw(a) ? bp__conv_dw_direct(a, dwa, NULL, x, dy)
                                      : bp__conv_backward_gemm(a, NULL, dwa, x, dy, NULL);
        if (!st) flip_kernel(g, dw, dwa, false);
    }
    free(wa);
    return st;
}
