/* layers/conv_transpose_fast.c — ConvTranspose on Conv's kernels. With the
 * adjoint convolution `adj` of conv_transpose_internal.h,
 *   y  = adj.dx(x) + b      direct dx kernel when every stride is 1, else GEMM + col2im
 *   dx = adj.forward(dy)    direct kernels for any stride, else im2col + GEMM
 *   dw = flip(adj.dw)       adj's dw with z = dy (its input) and dout = x
 * and the U-Net up-sampling (kernel == stride, every output one tap) has a
 * route of its own: a 1x1x1 convolution (Conv's direct kernels) into T*Cout
 * channels, chunk by chunk in cache, shuffled into y (and dy un-shuffled
 * for that convolution's dx and dw).
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
 * convolution `gz` from x to z (the positions of x, T*Cout channels ordered
 * (g, rr, c)) followed by a pixel shuffle of z into y; the backward
 * un-shuffles dy into dz and runs gz's dx (dx) and dw (dw, and db as the
 * sum of dz). All on Conv's direct kernels (GEMM where they do not apply),
 * on chunks of (b, i0) planes whose z (about 512 KiB) stays in a core's
 * cache, so z never goes to memory: the forward moves x and y once, the
 * backward dy, x and dx once. One parallel region; each chunk runs on one
 * thread (the kernels' own regions are nested there, so they run on that
 * thread unless nesting is switched on). y and dx do not depend on the
 * thread count; dw and db are summed per thread, then in thread order. */
typedef struct shuffle {
    const bp__convt_geom *g;
    bp__conv_geom gz;       /* the 1x1x1 conv over all planes as one long dim 0 */
    int64_t T, Cz, plane, planes, chunk, nchunks;
    bp_real *wz, *bz;       /* gz's kernel (Cg, Cz) and bias (Cz) */
} shuffle;

static bp_status shuffle_init(shuffle *S, const bp__convt_geom *g, const bp_real *w, const bp_real *bias)
{
    *S = (shuffle){.g = g, .T = g->taps, .Cz = g->taps * g->Cout, .plane = g->in[1] * g->in[2],
                   .planes = g->B * g->in[0]};
    S->gz = (bp__conv_geom){.B = 1, .in = {S->planes, g->in[1], g->in[2]}, .out = {S->planes, g->in[1], g->in[2]},
                            .Cin = g->Cin, .Cout = S->Cz, .Cg = g->Cg, .Cog = S->T * g->Cog, .G = g->G,
                            .k = {1, 1, 1}, .s = {1, 1, 1}, .d = {1, 1, 1}, .K = g->Cg,
                            .Pin = S->planes * S->plane, .Pout = S->planes * S->plane};
    S->chunk = (int64_t)(512 * 1024) / (int64_t)sizeof(bp_real) / (S->plane * S->Cz);
    if (S->chunk < 1) S->chunk = 1;
    if (S->chunk > S->planes) S->chunk = S->planes;
    S->nchunks = (S->planes + S->chunk - 1) / S->chunk;
    S->wz = malloc(sizeof(bp_real) * (size_t)(g->Cg * S->Cz));
    S->bz = malloc(sizeof(bp_real) * (size_t)S->Cz);
    if (!S->wz || !S->bz) {
        free(S->wz), free(S->bz);
        return bp_fail(BP_ENOMEM, "ConvTranspose: out of memory for the up-sampling kernel");
    }
    for (int64_t grp = 0; grp < g->G; grp++)
        for (int64_t rr = 0; rr < S->T; rr++)
            for (int64_t c = 0; c < g->Cog; c++) {
                int64_t zc = (grp * S->T + rr) * g->Cog + c, co = grp * g->Cog + c;
                S->bz[zc] = bias ? bias[co] : 0;
                for (int64_t ci = 0; ci < g->Cg; ci++)
                    S->wz[ci * S->Cz + zc] = w ? w[((S->T - 1 - rr) * g->Cg + ci) * g->Cout + co] : 0;
            }
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1); /* the GEMM route, as conv_gemm.c */
    return BP_OK;
}

static void shuffle_free(shuffle *S)
{
    free(S->wz);
    free(S->bz);
}

/* gz restricted to np planes from plane p0 */
static bp__conv_geom shuffle_chunk_geom(const shuffle *S, int64_t np)
{
    bp__conv_geom gc = S->gz;
    gc.in[0] = gc.out[0] = np;
    gc.Pin = gc.Pout = np * S->plane;
    gc.P = bp__conv_tile_rows(gc.K, gc.Pout);
    return gc;
}

/* z (the chunk's positions x Cz) -> y (to_y) or y -> z: within a group the
 * (r2, c) run is one contiguous run of y, s2*Cout reals with one group. */
static void shuffle_copy(const shuffle *S, bp_real *z, bp_real *y, int64_t p0, int64_t np, bool to_y)
{
    const bp__convt_geom *g = S->g;
    const int64_t s0 = g->s[0], s1 = g->s[1], s2 = g->s[2], I0 = g->in[0], I1 = g->in[1], I2 = g->in[2];
    const int64_t run = g->G == 1 ? s2 * g->Cout : g->Cog, nrun = g->G == 1 ? 1 : g->G * s2;
    const size_t bytes = sizeof(bp_real) * (size_t)run;
    for (int64_t row = 0; row < np * I1; row++) {
        int64_t i1 = row % I1, P = p0 + row / I1, i0 = P % I0, b = P / I0;
        bp_real *zr = z + row * I2 * S->Cz;
        for (int64_t r0 = 0; r0 < s0; r0++)
            for (int64_t r1 = 0; r1 < s1; r1++) {
                bp_real *yr = y + ((b * g->out[0] + i0 * s0 + r0) * g->out[1] + i1 * s1 + r1) * g->out[2] * g->Cout;
                for (int64_t i2 = 0; i2 < I2; i2++)
                    for (int64_t q = 0; q < nrun; q++) {
                        /* one group: the whole (r2, c) run; else group q / s2, phase r2 = q % s2 */
                        int64_t grp = g->G == 1 ? 0 : q / s2, r2 = g->G == 1 ? 0 : q % s2;
                        bp_real *yp = yr + (i2 * s2 + r2) * g->Cout + grp * g->Cog;
                        bp_real *zp = zr + i2 * S->Cz + (grp * S->T + (r0 * s1 + r1) * s2 + r2) * g->Cog;
                        if (to_y)
                            memcpy(yp, zp, bytes);
                        else
                            memcpy(zp, yp, bytes);
                    }
            }
    }
}

static bp_status shuffle_forward(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                                 const bp_real *bias)
{
    shuffle S;
    BP_TRY(shuffle_init(&S, g, w, bias));
    const bool direct = bp__conv_direct_ok_fwd(&S.gz);
    bp__conv_direct D = bp__conv_direct_forward_view(&S.gz);
    bp_real *wp = direct ? bp__conv_pack_weights(&D, S.wz, g->Cg, S.Cz, false) : NULL;
    bp_status st = direct && !wp ? BP_ENOMEM : BP_OK;
    D.wp = wp;
#pragma omp parallel if (!st)
    {
        bp_real *z = bp_alloc_aligned(sizeof(bp_real) * (size_t)(S.chunk * S.plane * S.Cz));
        if (!z) {
#pragma omp critical(bp_convt_err)
            st = BP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t ck = 0; ck < S.nchunks; ck++) {
            if (!z) continue;
            int64_t p0 = ck * S.chunk, np = S.planes - p0 < S.chunk ? S.planes - p0 : S.chunk;
            const bp_real *xc = x + p0 * S.plane * g->Cin;
            bp__conv_geom gc = shuffle_chunk_geom(&S, np);
            bp__conv_direct Dc = D;
            Dc.in[0] = Dc.out[0] = np;
            if (direct ? bp__conv_direct_run(&Dc, z, xc, S.bz) : bp__conv_forward_gemm(&gc, z, xc, S.wz, S.bz)) {
#pragma omp critical(bp_convt_err)
                st = BP_ENOMEM;
                continue;
            }
            shuffle_copy(&S, z, y, p0, np, true);
        }
        bp_free_aligned(z);
    }
    bp_free_aligned(wp);
    shuffle_free(&S);
    return st ? bp_fail(st, "ConvTranspose: out of memory for the up-sampling buffers") : BP_OK;
}

static bp_status shuffle_backward(const bp__convt_geom *g, bp_real *dx, bp_real *dw, bp_real *db,
                                  const bp_real *dy, const bp_real *x, const bp_real *w)
{
    shuffle S;
    BP_TRY(shuffle_init(&S, g, dx ? w : NULL, NULL));
    const int64_t nwz = g->Cg * S.Cz;
    const bool direct_dx = bp__conv_direct_ok_dx(&S.gz), direct_dw = bp__conv_direct_ok_dw(&S.gz);
    bp__conv_direct D = bp__conv_direct_dx_view(&S.gz);
    bp_real *wp = dx && direct_dx ? bp__conv_pack_weights(&D, S.wz, g->Cg, S.Cz, true) : NULL;
    bp_status st = dx && direct_dx && !wp ? BP_ENOMEM : BP_OK;
    D.wp = wp;
    const int nthreads = omp_get_max_threads();
    /* per thread: dw (Cg x Cz) and db (Cz) sums, then the chunk's dw */
    const int64_t part = 2 * nwz + S.Cz;
    bp_real *parts = (dw || db) && !st ? calloc((size_t)nthreads * (size_t)part, sizeof(bp_real)) : NULL;
    if ((dw || db) && !parts) st = BP_ENOMEM;
#pragma omp parallel num_threads(nthreads) if (!st)
    {
        bp_real *z = bp_alloc_aligned(sizeof(bp_real) * (size_t)(S.chunk * S.plane * S.Cz));
        bp_real *acc = parts ? parts + omp_get_thread_num() * part : NULL;
        if (!z) {
#pragma omp critical(bp_convt_err)
            st = BP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t ck = 0; ck < S.nchunks; ck++) {
            if (!z) continue;
            int64_t p0 = ck * S.chunk, np = S.planes - p0 < S.chunk ? S.planes - p0 : S.chunk, n = np * S.plane;
            bp__conv_geom gc = shuffle_chunk_geom(&S, np);
            shuffle_copy(&S, z, (bp_real *)dy, p0, np, false);
            bp_status cst = BP_OK;
            if (dx) {
                bp__conv_direct Dc = D;
                Dc.in[0] = Dc.out[0] = np;
                bp_real *dxc = dx + p0 * S.plane * g->Cin;
                cst = direct_dx ? bp__conv_direct_run(&Dc, dxc, z, NULL)
                                : bp__conv_backward_gemm(&gc, dxc, NULL, z, z, S.wz);
            }
            if (!cst && dw) {
                const bp_real *xc = x + p0 * S.plane * g->Cin;
                bp_real *dwc = acc + nwz + S.Cz;
                cst = direct_dw ? bp__conv_dw_direct(&gc, dwc, NULL, z, xc)
                                : bp__conv_backward_gemm(&gc, NULL, dwc, z, xc, NULL);
                for (int64_t i = 0; !cst && i < nwz; i++) acc[i] += dwc[i];
            }
            if (db)
                for (int64_t r = 0; r < n; r++)
                    for (int64_t c = 0; c < S.Cz; c++) acc[nwz + c] += z[r * S.Cz + c];
            if (cst) {
#pragma omp critical(bp_convt_err)
                st = BP_ENOMEM;
            }
        }
        bp_free_aligned(z);
    }
    if (!st && dw) {
        /* dw[T-1-rr, ci, g*Cog + c] = sum over threads of dwz[ci, (g, rr, c)] */
        for (int64_t grp = 0; grp < g->G; grp++)
            for (int64_t rr = 0; rr < S.T; rr++)
                for (int64_t c = 0; c < g->Cog; c++)
                    for (int64_t ci = 0; ci < g->Cg; ci++) {
                        int64_t zc = (grp * S.T + rr) * g->Cog + c;
                        bp_real v = 0;
                        for (int t = 0; t < nthreads; t++) v += parts[t * part + ci * S.Cz + zc];
                        dw[((S.T - 1 - rr) * g->Cg + ci) * g->Cout + grp * g->Cog + c] = v;
                    }
    }
    if (!st && db)
        for (int64_t co = 0; co < g->Cout; co++) {
            int64_t grp = co / g->Cog, c = co % g->Cog;
            bp_real v = 0;
            for (int t = 0; t < nthreads; t++)
                for (int64_t rr = 0; rr < S.T; rr++) v += parts[t * part + nwz + (grp * S.T + rr) * g->Cog + c];
            db[co] = v;
        }
    free(parts);
    bp_free_aligned(wp);
    shuffle_free(&S);
    return st ? bp_fail(st, "ConvTranspose backward: out of memory for the up-sampling buffers") : BP_OK;
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
    if (bp__convt_is_shuffle(g)) return shuffle_backward(g, dx, dw, db, dy, x, w);
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
