/* layers/conv_bf16.c — Conv with bfloat16 products and float32 sums
 * (AVX512-BF16's vdpbf16ps): the forward, dx and dw kernels behind
 * BP_PRECISION_BF16.
 *
 * Math (conv_internal.h; group indices left out), bf() rounding once to bf16
 * (nearest even), each product exact in float32, the sums float32 in the
 * kernel's order:
 *   y[b, o, co]   = bias[co] + sum_{t, ci} bf(x[b, i(o, t), ci]) * bf(w[t, ci, co])
 *   dx[b, i, ci]  = sum_{t, co; o : i(o, t) = i} bf(dy[b, o, co]) * bf(w[t, ci, co])
 *   dw[t, ci, co] = sum_{b, o : i(o, t) inside} bf(x[b, i(o, t), ci]) * bf(dy[b, o, co])
 * with i(o, t) = o*s - lo + t*d; the bias is added last in float32, and db is
 * not here (conv.c sums dy in float32). Relative to the exact sum, each term
 * errs by at most (1 + 2^-8)^2 - 1 < 2^-7 + 2^-16 (two roundings to 8
 * significand bits), and the float32 sums add the usual gamma_n:
 * tests/test_conv_bf16.c and tests/test_conv_bf16_bwd.c hold the kernels to
 * that bound.
 *
 * One vdpbf16ps lane adds the products of a pair (two adjacent bf16 of the
 * reduction) to a float32 sum, 16 lanes at a time, one operand broadcast.
 * The three kernels differ in what the pair and the lanes are:
 *   forward  pairs of input channels, lanes 16 output channels, register
 *            blocks of R = 16 output positions along the row;
 *   dx       pairs of output channels, lanes 16 input channels, blocks of 16
 *            dx positions of one stride phase along the row (below);
 *   dw       pairs of adjacent output positions along the row, lanes 16
 *            output channels, blocks of 16 input channels.
 * In each, per (tap, pair) one 16-lane register is loaded and R pairs are
 * broadcast into R accumulators.
 *
 * Forward and dx read channel pairs from padded rows: before the kernel, the
 * input (x, or dy for dx) is written as (rows, W2, G, red2) uint32 pairs,
 * red2 = ceil(reduction channels per group / 2), position i of a row at
 * i + pad, zeros in the padding and the odd channel, so that no tap along
 * the row needs a test; taps whose row (dims 0, 1) falls outside are
 * skipped. The weights are packed (G, nblk, taps, red2, 16, 2) bf16: one
 * 64-byte register per (tap, pair), zeros past either channel count.
 *
 * dx for any stride: dx position i gets tap a from output o = (i + lo - a*d)/s
 * where that divides exactly. Along the row, the positions i = ph + s*r of
 * one phase ph (0 <= ph < s) all take the same taps a2, from consecutive
 * outputs o2 = (ph + lo - a2*d)/s + r: so each phase is a stride-1
 * correlation with the taps that divide, and a block of R such positions is
 * R consecutive dy positions, as in the forward. No product is wasted on the
 * zeros a strided forward would leave between them.
 *
 * Memory traffic: each kernel reads its two float32 operands once and writes
 * them once as bf16 (plus padding); in the kernel, packed weights (or dy
 * pairs for dw) are read once per R positions (channels for dw) from cache,
 * broadcast pairs once per (position, tap, 16-lane block), the result written
 * once (dw: per-thread float32 sums, added in thread order at the end).
 * Forward and dx rows are the parallel work items (one OpenMP static loop);
 * dw's are chunks of rows, each thread summing into its own copy of dw.
 *
 * Speed depends on the CPU's vdpbf16ps rate. On the Intel Xeon this was
 * written on (family 6 model 207, AMX not exposed) a zmm vdpbf16ps (64
 * flops) issues at a quarter of the zmm FMA's rate (32 flops): half the
 * FMA's flops (16 independent chains, one busy core: 55 against 115
 * GFLOP/s). So the forward, dx and dw here, at about 80% of that, are
 * 1.4-1.8x slower than the float32 direct kernels (bench/conv_bf16), except
 * where float32 has no direct kernel: dx with stride 2 ran 3.4x faster than
 * float32's GEMM + col2im. They pay where vdpbf16ps issues at the FMA rate
 * (the Zen 4 figures).
 *
 * Outside the float flavour or without BPC_HAVE_BF16 this file only says no
 * (the bp__conv_bf16_ok* false, the kernels BP_EUNSUPPORTED). */
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <bpc/error.h>
#include <bpc/precision.h>
#include <bpc/tensor.h>
#include "conv_internal.h"
#include "simd.h"

#if defined(BPC_HAVE_BF16) && !defined(BP_REAL_DOUBLE)

#define RBLK 16 /* positions (forward, dx) or input channels (dw) per register block */

/* A 16-lane block at least half used; depthwise and tiny groups stay float32. */
bool bp__conv_bf16_ok(const bp__conv_geom *g) { return g->Cog >= 8; }
bool bp__conv_bf16_ok_dx(const bp__conv_geom *g) { return g->Cg >= 8; }
bool bp__conv_bf16_ok_dw(const bp__conv_geom *g) { return g->Cog >= 8; }

/* The forward or dx as a direct convolution over packed rows of pairs. */
typedef struct bf16_conv {
    const bp__conv_geom *g;
    int64_t red2;    /* reduction pairs per group: ceil(Cg / 2) forward, ceil(Cog / 2) dx */
    int64_t pstride; /* pairs per packed position: G * red2 */
    int64_t W2, pad; /* packed row length; where position 0 of a row sits in it */
    int64_t nblk, taps;
    const uint32_t *src, *wp; /* packed x (forward) or dy (dx); packed weights */
} bf16_conv;

/* ---------------------------------------------------------------- packing */

/* rows (len, G * Cgrp) of floats as bf16 channel pairs: dst (rows, W, G,
 * ceil(Cgrp / 2)) pairs, position i of a row at i + pad, zeros around it and
 * in an odd group's last half; positions falling outside [0, W) are never
 * read and are dropped. */
static BF16_TARGET void pack_pairs(uint32_t *dst, const float *src, int64_t rows, int64_t len, int64_t G,
                                   int64_t Cgrp, int64_t pad, int64_t W)
{
    const int64_t C = G * Cgrp, grp2 = (Cgrp + 1) / 2, pstride = G * grp2;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        uint32_t *d = dst + row * W * pstride;
        const float *s = src + row * len * C;
        memset(d, 0, sizeof(uint32_t) * (size_t)(W * pstride));
        for (int64_t i = 0; i < len; i++) {
            int64_t p = i + pad;
            if (p < 0 || p >= W) continue;
            uint16_t *h = (uint16_t *)(d + p * pstride);
            if (Cgrp % 2 == 0) {
                vbf_convert(h, s + i * C, C);
            } else {
                for (int64_t grp = 0; grp < G; grp++) vbf_convert(h + grp * grp2 * 2, s + i * C + grp * Cgrp, Cgrp);
            }
        }
    }
}

/* w (taps, Cg, Cout) as wp (G, nblk, taps, red2, 16, 2) bf16: pair j holds
 * reduction indices 2j, 2j + 1, lane l of block blk the index blk*16 + l,
 * zeros past either count. Forward: reduce over ci, lanes co; dx (the
 * transpose): reduce over co, lanes ci. */
static void pack_w(uint32_t *wp, const float *w, const bp__conv_geom *g, int64_t nblk, bool dx)
{
    const int64_t taps = g->k[0] * g->k[1] * g->k[2], nred = dx ? g->Cog : g->Cg, nlane = dx ? g->Cg : g->Cog;
    const int64_t red2 = (nred + 1) / 2;
    for (int64_t grp = 0; grp < g->G; grp++)
        for (int64_t blk = 0; blk < nblk; blk++)
            for (int64_t t = 0; t < taps; t++)
                for (int64_t j = 0; j < red2; j++)
                    for (int64_t l = 0; l < BF16_LANES; l++) {
                        uint32_t pair = 0;
                        for (int half = 0; half < 2; half++) {
                            int64_t red = 2 * j + half, lane = blk * BF16_LANES + l;
                            if (red >= nred || lane >= nlane) continue;
                            int64_t ci = dx ? lane : red, co = dx ? red : lane;
                            pair |= (uint32_t)bf16_round(w[(t * g->Cg + ci) * g->Cout + grp * g->Cog + co]) << (16 * half);
                        }
                        *wp++ = pair;
                    }
}

/* The packed operands of C (x or dy through pack_pairs, w through pack_w),
 * allocated with bp_alloc_aligned; false when out of memory (nothing kept). */
static bool pack_direct(bf16_conv *C, const float *src, int64_t rows, int64_t len, int64_t Cgrp, const float *w,
                        bool dx, size_t *nsrc, size_t *nwp)
{
    const bp__conv_geom *g = C->g;
    *nsrc = (size_t)(rows * C->W2 * C->pstride);
    *nwp = (size_t)(g->G * C->nblk * C->taps * C->red2 * BF16_LANES);
    uint32_t *s = bp_alloc_aligned(sizeof(uint32_t) * *nsrc), *wp = bp_alloc_aligned(sizeof(uint32_t) * *nwp);
    if (!s || !wp) {
        bp_free_aligned(s);
        bp_free_aligned(wp);
        return false;
    }
    pack_pairs(s, src, rows, len, g->G, Cgrp, C->pad, C->W2);
    pack_w(wp, w, g, C->nblk, dx);
    C->src = s;
    C->wp = wp;
    return true;
}

static void free_direct(bf16_conv *C)
{
    bp_free_aligned((void *)C->src);
    bp_free_aligned((void *)C->wp);
}

/* ---------------------------------------------------------------- forward */

/* acc[r] for R positions from o2 of row (b, o0, o1), group grp, block blk,
 * then stored (with bias) into y. */
static inline BF16_TARGET __attribute__((always_inline)) void conv_block(const bf16_conv *C, float *y,
                                                                          const float *bias, int64_t b, int64_t o0,
                                                                          int64_t o1, int64_t o2, int64_t grp,
                                                                          int64_t blk, const int R)
{
    const bp__conv_geom *g = C->g;
    vbf_acc acc[RBLK];
    for (int r = 0; r < R; r++) acc[r] = vbf_zero();
    const int64_t ps = g->s[2] * C->pstride, red2 = C->red2;
    for (int64_t a0 = 0; a0 < g->k[0]; a0++) {
        int64_t i0 = o0 * g->s[0] - g->lo[0] + a0 * g->d[0];
        if (i0 < 0 || i0 >= g->in[0]) continue;
        for (int64_t a1 = 0; a1 < g->k[1]; a1++) {
            int64_t i1 = o1 * g->s[1] - g->lo[1] + a1 * g->d[1];
            if (i1 < 0 || i1 >= g->in[1]) continue;
            /* packed position of o2's tap 0: o2*s2 - lo2 + pad, pad = lo2 */
            const uint32_t *xr = C->src + ((b * g->in[0] + i0) * g->in[1] + i1) * C->W2 * C->pstride +
                                 o2 * ps + grp * red2;
            const uint32_t *wt = C->wp + ((grp * C->nblk + blk) * C->taps + (a0 * g->k[1] + a1) * g->k[2]) *
                                             red2 * BF16_LANES;
            for (int64_t a2 = 0; a2 < g->k[2]; a2++) {
                const uint32_t *xa = xr + a2 * g->d[2] * C->pstride;
                const uint32_t *wa = wt + a2 * red2 * BF16_LANES;
                for (int64_t j = 0; j < red2; j++) {
                    vbf_pairs wv = vbf_load(wa + j * BF16_LANES);
                    for (int r = 0; r < R; r++) acc[r] = vbf_dot(acc[r], xa[r * ps + j], wv);
                }
            }
        }
    }
    const int64_t co = grp * g->Cog + blk * BF16_LANES;
    const int n = (int)(g->Cog - blk * BF16_LANES < BF16_LANES ? g->Cog - blk * BF16_LANES : BF16_LANES);
    float *yo = y + ((b * g->out[0] + o0) * g->out[1] + o1) * g->out[2] * g->Cout + co;
    for (int r = 0; r < R; r++) vbf_store(yo + (o2 + r) * g->Cout, acc[r], bias ? bias + co : NULL, n);
}

static BF16_TARGET void conv_rows(const bf16_conv *C, float *y, const float *bias)
{
    const bp__conv_geom *g = C->g;
    const int64_t rows = g->B * g->out[0] * g->out[1], O2 = g->out[2];
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        int64_t o1 = row % g->out[1], o0 = row / g->out[1] % g->out[0], b = row / g->out[1] / g->out[0];
        for (int64_t grp = 0; grp < g->G; grp++)
            for (int64_t blk = 0; blk < C->nblk; blk++) {
                int64_t o2 = 0;
                for (; o2 + RBLK <= O2; o2 += RBLK) conv_block(C, y, bias, b, o0, o1, o2, grp, blk, RBLK);
                if (o2 + 8 <= O2) conv_block(C, y, bias, b, o0, o1, o2, grp, blk, 8), o2 += 8;
                if (o2 + 4 <= O2) conv_block(C, y, bias, b, o0, o1, o2, grp, blk, 4), o2 += 4;
                for (; o2 < O2; o2++) conv_block(C, y, bias, b, o0, o1, o2, grp, blk, 1);
            }
    }
}

bp_status bp__conv_forward_bf16(const bp__conv_geom *g, float *y, const float *x, const float *w, const float *bias)
{
    if (!bp_bf16_available())
        return bp_fail(BP_EUNSUPPORTED, "conv bf16 forward: this CPU or build cannot run AVX512-BF16");
    bf16_conv C = {.g = g, .red2 = (g->Cg + 1) / 2, .pad = g->lo[2]};
    C.pstride = g->G * C.red2;
    C.W2 = (g->out[2] - 1) * g->s[2] + (g->k[2] - 1) * g->d[2] + 1;
    C.nblk = (g->Cog + BF16_LANES - 1) / BF16_LANES;
    C.taps = g->k[0] * g->k[1] * g->k[2];
    size_t nsrc, nwp;
    if (!pack_direct(&C, x, g->B * g->in[0] * g->in[1], g->in[2], g->Cg, w, false, &nsrc, &nwp))
        return bp_fail(BP_ENOMEM, "conv bf16 forward: out of memory for %zu packed input and %zu weight pairs", nsrc,
                       nwp);
    conv_rows(&C, y, bias);
    free_direct(&C);
    return BP_OK;
}

/* --------------------------------------------------------------------- dx */

/* acc[r] for the R dx positions i2 = ph + (r0 + r)*s2 of row (b, i0, i1),
 * group grp, input-channel block blk, then stored into dx. Tap (a0, a1, a2)
 * reaches them from dy at o_e = (i_e + lo_e - a_e*d_e) / s_e where that
 * divides exactly; along the row, o2 = (ph + lo2 - a2*d2)/s2 + r0 + r. */
static inline BF16_TARGET __attribute__((always_inline)) void dx_block(const bf16_conv *C, float *dx, int64_t b,
                                                                        int64_t i0, int64_t i1, int64_t ph,
                                                                        int64_t r0, int64_t grp, int64_t blk,
                                                                        const int R)
{
    const bp__conv_geom *g = C->g;
    vbf_acc acc[RBLK];
    for (int r = 0; r < R; r++) acc[r] = vbf_zero();
    const int64_t ps = C->pstride, red2 = C->red2;
    for (int64_t a0 = 0; a0 < g->k[0]; a0++) {
        int64_t n0 = i0 + g->lo[0] - a0 * g->d[0], o0 = n0 / g->s[0];
        if (n0 % g->s[0] != 0 || o0 < 0 || o0 >= g->out[0]) continue;
        for (int64_t a1 = 0; a1 < g->k[1]; a1++) {
            int64_t n1 = i1 + g->lo[1] - a1 * g->d[1], o1 = n1 / g->s[1];
            if (n1 % g->s[1] != 0 || o1 < 0 || o1 >= g->out[1]) continue;
            const uint32_t *yr = C->src + ((b * g->out[0] + o0) * g->out[1] + o1) * C->W2 * ps + grp * red2;
            const uint32_t *wt = C->wp + ((grp * C->nblk + blk) * C->taps + (a0 * g->k[1] + a1) * g->k[2]) *
                                             red2 * BF16_LANES;
            for (int64_t a2 = 0; a2 < g->k[2]; a2++) {
                int64_t n2 = ph + g->lo[2] - a2 * g->d[2];
                if (n2 % g->s[2] != 0) continue;
                const uint32_t *ya = yr + (n2 / g->s[2] + r0 + C->pad) * ps;
                const uint32_t *wa = wt + a2 * red2 * BF16_LANES;
                for (int64_t j = 0; j < red2; j++) {
                    vbf_pairs wv = vbf_load(wa + j * BF16_LANES);
                    for (int r = 0; r < R; r++) acc[r] = vbf_dot(acc[r], ya[r * ps + j], wv);
                }
            }
        }
    }
    const int64_t ci = grp * g->Cg + blk * BF16_LANES;
    const int n = (int)(g->Cg - blk * BF16_LANES < BF16_LANES ? g->Cg - blk * BF16_LANES : BF16_LANES);
    float *xo = dx + ((b * g->in[0] + i0) * g->in[1] + i1) * g->in[2] * g->Cin + ci;
    for (int r = 0; r < R; r++) vbf_store(xo + (ph + (r0 + r) * g->s[2]) * g->Cin, acc[r], NULL, n);
}

static BF16_TARGET void dx_rows(const bf16_conv *C, float *dx)
{
    const bp__conv_geom *g = C->g;
    const int64_t rows = g->B * g->in[0] * g->in[1], I2 = g->in[2], s2 = g->s[2];
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        int64_t i1 = row % g->in[1], i0 = row / g->in[1] % g->in[0], b = row / g->in[1] / g->in[0];
        for (int64_t grp = 0; grp < g->G; grp++)
            for (int64_t blk = 0; blk < C->nblk; blk++)
                for (int64_t ph = 0; ph < s2 && ph < I2; ph++) {
                    const int64_t n = (I2 - ph + s2 - 1) / s2; /* positions of this phase */
                    int64_t r = 0;
                    for (; r + RBLK <= n; r += RBLK) dx_block(C, dx, b, i0, i1, ph, r, grp, blk, RBLK);
                    if (r + 8 <= n) dx_block(C, dx, b, i0, i1, ph, r, grp, blk, 8), r += 8;
                    if (r + 4 <= n) dx_block(C, dx, b, i0, i1, ph, r, grp, blk, 4), r += 4;
                    for (; r < n; r++) dx_block(C, dx, b, i0, i1, ph, r, grp, blk, 1);
                }
    }
}

bp_status bp__conv_dx_bf16(const bp__conv_geom *g, float *dx, const float *dy, const float *w)
{
    if (!bp_bf16_available())
        return bp_fail(BP_EUNSUPPORTED, "conv bf16 dx: this CPU or build cannot run AVX512-BF16");
    bf16_conv C = {.g = g, .red2 = (g->Cog + 1) / 2};
    C.pstride = g->G * C.red2;
    /* The dy row positions taps reach, o2 = (i2 + lo2 - a2*d2) / s2, run from
     * ceil((lo2 - (k2-1)*d2) / s2) (maybe negative: pad zeros before the row)
     * to floor((I2 - 1 + lo2) / s2) (maybe past O2 - 1: zeros after it). */
    const int64_t s2 = g->s[2], before = (g->k[2] - 1) * g->d[2] - g->lo[2];
    const int64_t last = (g->in[2] - 1 + g->lo[2]) / s2 + 1;
    C.pad = before > 0 ? (before + s2 - 1) / s2 : 0;
    C.W2 = C.pad + (last > g->out[2] ? last : g->out[2]);
    C.nblk = (g->Cg + BF16_LANES - 1) / BF16_LANES;
    C.taps = g->k[0] * g->k[1] * g->k[2];
    size_t nsrc, nwp;
    if (!pack_direct(&C, dy, g->B * g->out[0] * g->out[1], g->out[2], g->Cog, w, true, &nsrc, &nwp))
        return bp_fail(BP_ENOMEM, "conv bf16 dx: out of memory for %zu packed dy and %zu weight pairs", nsrc, nwp);
    dx_rows(&C, dx);
    free_direct(&C);
    return BP_OK;
}

/* --------------------------------------------------------------------- dw */

/* dw as sums over pairs of adjacent output positions along the row:
 *   xs  (B, I0, I1, W2, Cin): (bf(x[p - lo2]), bf(x[p - lo2 + s2])) at packed
 *       position p, zero outside the row: output pair m (o2 = 2m, 2m + 1)
 *       and tap a2 read p = 2m*s2 + a2*d2;
 *   dy rows of a work item, (rows, M2, G, nblk, 16): lane l of (m, grp, blk)
 *       is (bf(dy[2m, co]), bf(dy[2m + 1, co])), co = grp*Cog + blk*16 + l,
 *       zeros past Cog and past an odd row's end; packed by the thread that
 *       takes the item, just before it (each dy row serves one item, while
 *       an x row serves the items of k0*k1 taps: x is packed beforehand);
 *   part (G, taps, Cg, nblk, 16) float32 sums, one per thread. */
typedef struct bf16_dw {
    const bp__conv_geom *g;
    int64_t M2, W2, nblk, taps;
    int64_t o1_chunk; /* o1 rows per work item */
    const uint32_t *xs;
} bf16_dw;

static inline int64_t dw_part_len(const bf16_dw *C)
{
    return C->g->G * C->taps * C->g->Cg * C->nblk * BF16_LANES;
}

/* tmp: per thread, (W2 + s2) * Cin halves. */
static BF16_TARGET void pack_dw_x(const bf16_dw *C, uint32_t *xs, const float *x, uint16_t *tmp, int64_t tmp_len)
{
    const bp__conv_geom *g = C->g;
    const int64_t rows = g->B * g->in[0] * g->in[1], Cin = g->Cin, L = C->W2 + g->s[2], lo2 = g->lo[2];
    /* positions past L are read by no tap (the stride's remainder) */
    const int64_t n = g->in[2] < L - lo2 ? g->in[2] : L - lo2;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        uint16_t *h = tmp + omp_get_thread_num() * tmp_len;
        memset(h, 0, sizeof(uint16_t) * (size_t)(L * Cin));
        if (n > 0) vbf_convert(h + lo2 * Cin, x + row * g->in[2] * Cin, n * Cin);
        uint32_t *d = xs + row * C->W2 * Cin;
        const uint16_t *hi = h + g->s[2] * Cin;
        for (int64_t j = 0; j < C->W2 * Cin; j++) d[j] = (uint32_t)h[j] | (uint32_t)hi[j] << 16;
    }
}

/* The nrows dy rows from row into d (one work item's). */
static inline BF16_TARGET void pack_dw_dy(const bf16_dw *C, uint32_t *d, const float *dy, int64_t row, int64_t nrows)
{
    const bp__conv_geom *g = C->g;
    const int64_t Cout = g->Cout, O2 = g->out[2];
    for (const float *src = dy + row * O2 * Cout, *end = src + nrows * O2 * Cout; src < end; src += O2 * Cout)
        for (int64_t m = 0; m < C->M2; m++)
            for (int64_t grp = 0; grp < g->G; grp++)
                for (int64_t blk = 0; blk < C->nblk; blk++, d += BF16_LANES) {
                    const float *lo = src + 2 * m * Cout + grp * g->Cog + blk * BF16_LANES;
                    int64_t left = g->Cog - blk * BF16_LANES;
                    vbf_pair_rows(d, lo, 2 * m + 1 < O2 ? lo + Cout : NULL, (int)(left < BF16_LANES ? left : BF16_LANES),
                                  BF16_LANES);
                }
}

/* part[(grp, t, ci0 + r, blk)] += the sums over rows o1 in [o1a, o1b) of
 * sample b (their dy packed in dyi) and their output pairs m of x pair
 * (ci0 + r at tap (a0, a1, a2), a0 giving x's row i0) times the dy pairs of
 * 16 output channels. With few channels (R <= 4) one chain per channel would
 * wait on vdpbf16ps's latency: U chains per channel take the pairs m in
 * turn, added together at the end. */
static inline BF16_TARGET __attribute__((always_inline)) void dw_block(const bf16_dw *C, float *part,
                                                                        const uint32_t *dyi, int64_t b,
                                                                        int64_t o1a, int64_t o1b,
                                                                        int64_t i0, int64_t a1, int64_t a2,
                                                                        int64_t t, int64_t grp, int64_t blk,
                                                                        int64_t ci0, const int R, const int U)
{
    const bp__conv_geom *g = C->g;
    vbf_acc acc[RBLK];
    for (int r = 0; r < R * U; r++) acc[r] = vbf_zero();
    const int64_t xstep = 2 * g->s[2] * g->Cin, ystep = g->G * C->nblk * BF16_LANES;
    for (int64_t o1 = o1a; o1 < o1b; o1++) {
        int64_t i1 = o1 * g->s[1] - g->lo[1] + a1 * g->d[1];
        if (i1 < 0 || i1 >= g->in[1]) continue;
        const uint32_t *xr = C->xs + (((b * g->in[0] + i0) * g->in[1] + i1) * C->W2 + a2 * g->d[2]) * g->Cin +
                             grp * g->Cg + ci0;
        const uint32_t *yr = dyi + (o1 - o1a) * C->M2 * ystep + (grp * C->nblk + blk) * BF16_LANES;
        int64_t m = 0;
        for (; m + U <= C->M2; m += U)
            for (int u = 0; u < U; u++) {
                vbf_pairs dv = vbf_load(yr + (m + u) * ystep);
                for (int r = 0; r < R; r++) acc[u * R + r] = vbf_dot(acc[u * R + r], xr[(m + u) * xstep + r], dv);
            }
        for (; m < C->M2; m++) {
            vbf_pairs dv = vbf_load(yr + m * ystep);
            for (int r = 0; r < R; r++) acc[r] = vbf_dot(acc[r], xr[m * xstep + r], dv);
        }
    }
    for (int u = 1; u < U; u++)
        for (int r = 0; r < R; r++) acc[r] = acc[r] + acc[u * R + r];
    float *pp = part + ((grp * C->taps + t) * g->Cg + ci0) * C->nblk * BF16_LANES + blk * BF16_LANES;
    for (int r = 0; r < R; r++) {
        vbf_acc *p = (vbf_acc *)(pp + r * C->nblk * BF16_LANES);
        *p = *p + acc[r];
    }
}

static inline int64_t dw_item_len(const bf16_dw *C)
{
    return C->o1_chunk * C->M2 * C->g->G * C->nblk * BF16_LANES;
}

/* items: per thread, dw_item_len pairs. */
static BF16_TARGET void dw_items(const bf16_dw *C, float *parts, uint32_t *items_dy, int nthreads, const float *dy)
{
    const bp__conv_geom *g = C->g;
    const int64_t nch = (g->out[1] + C->o1_chunk - 1) / C->o1_chunk, items = g->B * g->out[0] * nch;
    const int64_t plen = dw_part_len(C);
#pragma omp parallel num_threads(nthreads)
    {
        float *part = parts + omp_get_thread_num() * plen;
        uint32_t *dyi = items_dy + omp_get_thread_num() * dw_item_len(C);
        memset(part, 0, sizeof(float) * (size_t)plen);
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            int64_t ch = it % nch, o0 = it / nch % g->out[0], b = it / nch / g->out[0];
            int64_t o1a = ch * C->o1_chunk, o1b = o1a + C->o1_chunk < g->out[1] ? o1a + C->o1_chunk : g->out[1];
            pack_dw_dy(C, dyi, dy, (b * g->out[0] + o0) * g->out[1] + o1a, o1b - o1a);
            for (int64_t a0 = 0; a0 < g->k[0]; a0++) {
                int64_t i0 = o0 * g->s[0] - g->lo[0] + a0 * g->d[0];
                if (i0 < 0 || i0 >= g->in[0]) continue;
                for (int64_t a1 = 0; a1 < g->k[1]; a1++)
                    for (int64_t a2 = 0; a2 < g->k[2]; a2++) {
                        int64_t t = (a0 * g->k[1] + a1) * g->k[2] + a2;
                        for (int64_t grp = 0; grp < g->G; grp++)
                            for (int64_t blk = 0; blk < C->nblk; blk++) {
                                int64_t c = 0;
                                for (; c + RBLK <= g->Cg; c += RBLK)
                                    dw_block(C, part, dyi, b, o1a, o1b, i0, a1, a2, t, grp, blk, c, RBLK, 1);
                                if (c + 8 <= g->Cg)
                                    dw_block(C, part, dyi, b, o1a, o1b, i0, a1, a2, t, grp, blk, c, 8, 1), c += 8;
                                if (c + 4 <= g->Cg)
                                    dw_block(C, part, dyi, b, o1a, o1b, i0, a1, a2, t, grp, blk, c, 4, 2), c += 4;
                                for (; c < g->Cg; c++)
                                    dw_block(C, part, dyi, b, o1a, o1b, i0, a1, a2, t, grp, blk, c, 1, 4);
                            }
                    }
            }
        }
    }
}

bp_status bp__conv_dw_bf16(const bp__conv_geom *g, float *dw, const float *dy, const float *x)
{
    if (!bp_bf16_available())
        return bp_fail(BP_EUNSUPPORTED, "conv bf16 dw: this CPU or build cannot run AVX512-BF16");
    bf16_dw C = {.g = g, .M2 = (g->out[2] + 1) / 2, .nblk = (g->Cog + BF16_LANES - 1) / BF16_LANES,
                 .taps = g->k[0] * g->k[1] * g->k[2]};
    C.W2 = 2 * (C.M2 - 1) * g->s[2] + (g->k[2] - 1) * g->d[2] + 1;
    /* Work items of o1 rows whose dy and x rows (one tap row) fill about
     * 16 KiB, so that a tap's passes over them stay in L1. */
    const int64_t row_bytes = 4 * (C.M2 * g->G * C.nblk * BF16_LANES + C.W2 * g->Cin);
    C.o1_chunk = 16384 / row_bytes;
    if (C.o1_chunk < 1) C.o1_chunk = 1;
    if (C.o1_chunk > g->out[1]) C.o1_chunk = g->out[1];
    const int nthreads = omp_get_max_threads();
    const int64_t tmp_len = (C.W2 + g->s[2]) * g->Cin, plen = dw_part_len(&C);
    const size_t nxs = (size_t)(g->B * g->in[0] * g->in[1] * C.W2 * g->Cin);
    const size_t ndy = (size_t)(dw_item_len(&C) * nthreads);
    uint32_t *xs = bp_alloc_aligned(sizeof(uint32_t) * nxs), *dyp = bp_alloc_aligned(sizeof(uint32_t) * ndy);
    uint16_t *tmp = bp_alloc_aligned(sizeof(uint16_t) * (size_t)(tmp_len * nthreads));
    float *parts = bp_alloc_aligned(sizeof(float) * (size_t)(plen * nthreads));
    bp_status st = BP_OK;
    if (!xs || !dyp || !tmp || !parts) {
        st = bp_fail(BP_ENOMEM, "conv bf16 dw: out of memory for %zu packed x and %zu dy pairs, %d x %lld sums", nxs,
                     ndy, nthreads, (long long)plen);
    } else {
        pack_dw_x(&C, xs, x, tmp, tmp_len);
        C.xs = xs;
        dw_items(&C, parts, dyp, nthreads, dy);
        /* dw[t, ci, grp*Cog + co] = the threads' sums, in thread order */
        for (int64_t grp = 0; grp < g->G; grp++)
            for (int64_t t = 0; t < C.taps; t++)
                for (int64_t ci = 0; ci < g->Cg; ci++) {
                    const float *p0 = parts + ((grp * C.taps + t) * g->Cg + ci) * C.nblk * BF16_LANES;
                    float *d = dw + (t * g->Cg + ci) * g->Cout + grp * g->Cog;
                    for (int64_t co = 0; co < g->Cog; co++) {
                        float s = p0[co];
                        for (int th = 1; th < nthreads; th++) s += p0[th * plen + co];
                        d[co] = s;
                    }
                }
    }
    bp_free_aligned(xs);
    bp_free_aligned(dyp);
    bp_free_aligned(tmp);
    bp_free_aligned(parts);
    return st;
}

#else

bool bp__conv_bf16_ok(const bp__conv_geom *g)
{
    (void)g;
    return false;
}
bool bp__conv_bf16_ok_dx(const bp__conv_geom *g)
{
    (void)g;
    return false;
}
bool bp__conv_bf16_ok_dw(const bp__conv_geom *g)
{
    (void)g;
    return false;
}

bp_status bp__conv_forward_bf16(const bp__conv_geom *g, float *y, const float *x, const float *w, const float *bias)
{
    (void)g, (void)y, (void)x, (void)w, (void)bias;
    return bp_fail(BP_EUNSUPPORTED, "conv bf16 forward: not in this build (float64 flavour or BPC_BF16 off)");
}

bp_status bp__conv_dx_bf16(const bp__conv_geom *g, float *dx, const float *dy, const float *w)
{
    (void)g, (void)dx, (void)dy, (void)w;
    return bp_fail(BP_EUNSUPPORTED, "conv bf16 dx: not in this build (float64 flavour or BPC_BF16 off)");
}

bp_status bp__conv_dw_bf16(const bp__conv_geom *g, float *dw, const float *dy, const float *x)
{
    (void)g, (void)dw, (void)dy, (void)x;
    return bp_fail(BP_EUNSUPPORTED, "conv bf16 dw: not in this build (float64 flavour or BPC_BF16 off)");
}

#endif
