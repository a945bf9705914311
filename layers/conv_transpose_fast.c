/* layers/conv_transpose_fast.c — ConvTranspose on Conv's kernels. With the
 * adjoint convolution `adj` of conv_transpose_internal.h,
 *   y  = adj.dx(x) + b      direct dx kernel when every stride is 1, else GEMM + col2im
 *   dx = adj.forward(dy)    direct kernels for any stride, else im2col + GEMM
 *   dw = flip(adj.dw)       adj's dw with z = dy (its input) and dout = x
 * and the U-Net up-sampling (kernel == stride, every output one tap) has a
 * forward of its own: a 1x1x1 convolution (Conv's direct kernel) into T*Cout
 * channels, chunk by chunk in cache, shuffled into y.
 * The kernel is re-laid out for adj (T*Cg*Cout reals) on each call. */
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#include <bpc/error.h>
#include <bpc/tensor.h>
#include "conv_transpose_internal.h"

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

/* kernel == stride: output o = i*s + r (per dim) gets the one tap k-1-r,
 *   y[b, i*s + r, g*Cog + c] = b[co] + sum_ci x[b, i, g*Cg + ci] * w[T-1-rr, ci, g*Cog + c]
 * (rr the phase (r0, r1, r2) in row-major order, T = taps). That is a 1x1x1
 * convolution from x to z (positions of x, T*Cout channels ordered
 * (g, rr, c)), Conv's direct forward kernel with the bias fused, followed
 * by a pixel shuffle of z into y. The 1x1 conv runs on chunks of (b, i0)
 * planes whose z (about 1 MiB) stays in cache, so z never goes to memory:
 * traffic is x once and y once. Within a group, the (r2, c) run of z is
 * one contiguous s2*Cog run of y when there is one group (s2*Cout), Cog
 * reals otherwise. z (its direct view, chunk by chunk) does not depend on
 * the thread count, and each y value is one copy. */
static bp_status shuffle_forward(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                                 const bp_real *bias)
{
    const int64_t T = g->taps, Cz = T * g->Cout, plane = g->in[1] * g->in[2], planes = g->B * g->in[0];
    /* the 1x1 convolution x -> z over every (b, i0) plane as one long dim 0 */
    bp__conv_geom gz = {.B = 1, .in = {planes, g->in[1], g->in[2]}, .out = {planes, g->in[1], g->in[2]},
                        .Cin = g->Cin, .Cout = Cz, .Cg = g->Cg, .Cog = T * g->Cog, .G = g->G,
                        .k = {1, 1, 1}, .s = {1, 1, 1}, .d = {1, 1, 1}, .K = g->Cg, .Pin = planes * plane,
                        .Pout = planes * plane};
    /* chunks of planes whose z is near 512 KiB (a core's L2 holds it) */
    int64_t chunk = (int64_t)(512 * 1024) / (int64_t)sizeof(bp_real) / (plane * Cz);
    if (chunk < 1) chunk = 1;
    if (chunk > planes) chunk = planes;
    const int64_t nchunks = (planes + chunk - 1) / chunk;
    bp_real *wz = malloc(sizeof(bp_real) * (size_t)(g->Cg * Cz)), *bz = malloc(sizeof(bp_real) * (size_t)Cz);
    if (!wz || !bz) {
        free(wz), free(bz);
        return bp_fail(BP_ENOMEM, "ConvTranspose: out of memory for the up-sampling kernel");
    }
    for (int64_t grp = 0; grp < g->G; grp++)
        for (int64_t rr = 0; rr < T; rr++)
            for (int64_t c = 0; c < g->Cog; c++) {
                int64_t zc = (grp * T + rr) * g->Cog + c, co = grp * g->Cog + c;
                bz[zc] = bias ? bias[co] : 0;
                for (int64_t ci = 0; ci < g->Cg; ci++) wz[ci * Cz + zc] = w[((T - 1 - rr) * g->Cg + ci) * g->Cout + co];
            }
    const bool direct = bp__conv_direct_ok_fwd(&gz);
    bp__conv_direct D = bp__conv_direct_forward_view(&gz);
    bp_real *wp = direct ? bp__conv_pack_weights(&D, wz, g->Cg, Cz, false) : NULL;
    bp_status st = direct && !wp ? BP_ENOMEM : BP_OK;
    D.wp = wp;
    const int64_t s0 = g->s[0], s1 = g->s[1], s2 = g->s[2], I0 = g->in[0], I1 = g->in[1], I2 = g->in[2];
    const int64_t run = g->G == 1 ? s2 * g->Cout : g->Cog, nrun = g->G == 1 ? 1 : g->G * s2;
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1); /* the GEMM route, as conv_gemm.c */
    /* One parallel region; each chunk's 1x1 conv runs on the thread that
     * shuffles it (the kernels' own parallel regions are nested here, so
     * they run on that one thread unless nesting is switched on). */
#pragma omp parallel if (!st)
    {
        bp_real *z = bp_alloc_aligned(sizeof(bp_real) * (size_t)(chunk * plane * Cz));
        if (!z) {
#pragma omp critical(bp_convt_err)
            st = BP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t ck = 0; ck < nchunks; ck++) {
            if (!z) continue;
            int64_t p0 = ck * chunk, np = planes - p0 < chunk ? planes - p0 : chunk;
            const bp_real *xc = x + p0 * plane * g->Cin;
            bp_status cst;
            if (direct) {
                bp__conv_direct Dc = D;
                Dc.in[0] = Dc.out[0] = np;
                cst = bp__conv_direct_run(&Dc, z, xc, bz);
            } else {
                bp__conv_geom gc = gz;
                gc.in[0] = gc.out[0] = np;
                gc.Pin = gc.Pout = np * plane;
                gc.P = bp__conv_tile_rows(gc.K, gc.Pout);
                cst = bp__conv_forward_gemm(&gc, z, xc, wz, bz);
            }
            if (cst) {
#pragma omp critical(bp_convt_err)
                st = BP_ENOMEM;
                continue;
            }
            for (int64_t row = 0; row < np * I1; row++) {
                int64_t i1 = row % I1, P = p0 + row / I1, i0 = P % I0, b = P / I0;
                const bp_real *zr = z + row * I2 * Cz;
                for (int64_t r0 = 0; r0 < s0; r0++)
                    for (int64_t r1 = 0; r1 < s1; r1++) {
                        bp_real *yr =
                            y + ((b * g->out[0] + i0 * s0 + r0) * g->out[1] + i1 * s1 + r1) * g->out[2] * g->Cout;
                        for (int64_t i2 = 0; i2 < I2; i2++)
                            for (int64_t q = 0; q < nrun; q++) {
                                /* one group: the whole (r2, c) run; else group q / s2, phase r2 = q % s2 */
                                int64_t grp = g->G == 1 ? 0 : q / s2, r2 = g->G == 1 ? 0 : q % s2;
                                int64_t rr = (r0 * s1 + r1) * s2 + r2;
                                memcpy(yr + (i2 * s2 + r2) * g->Cout + grp * g->Cog,
                                       zr + i2 * Cz + (grp * T + rr) * g->Cog, sizeof(bp_real) * (size_t)run);
                            }
                    }
            }
        }
        bp_free_aligned(z);
    }
    if (st) st = bp_fail(st, "ConvTranspose: out of memory for the up-sampling buffers");
    bp_free_aligned(wp);
    free(wz);
    free(bz);
    return st;
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
