/* layers/conv_bf16.c — Conv forward with bfloat16 products and float32 sums
 * (AVX512-BF16's vdpbf16ps), the kernel behind BP_PRECISION_BF16.
 *
 * Math: y[b, o, co] = bias[co] + sum_{t, ci} bf16(x[b, i(o, t), g*Cg + ci]) * bf16(w[t, ci, co])
 * (conv_internal.h), every x and w rounded once to bf16 (nearest even), each
 * product exact in float32, the sums float32 in the kernel's order, the bias
 * added last in float32. Relative to the exact sum, each term errs by at most
 * (1 + 2^-8)^2 - 1 < 2^-7 + 2^-16 (two roundings to 8 significand bits), and
 * the float32 sums add the usual gamma_n: tests/test_conv_bf16.c holds the
 * kernel to that bound.
 *
 * Layout: input channels go in pairs (one vdpbf16ps lane multiplies two);
 * an odd Cg is padded with a zero channel. Before the kernel runs,
 *   xb  (B, I0, I1, W2, G, Cg2) uint32 pairs, W2 = the padded row (lo2 zeros
 *       first, zeros past the input), so that no tap along the row needs a test;
 *   wp  (G, nblk, taps, Cg2, 16, 2) bf16, 16 output channels per block
 *       (zeros past Cog), one 64-byte register per (tap, pair).
 * Kernel: for each output row (b, o0, o1), group and block, R = 16 output
 * positions along the row are register-blocked: per (tap, pair) one weight
 * register is loaded and 16 x pairs are broadcast into 16 accumulators. Taps
 * whose row (dims 0, 1) falls in the padding are skipped. Memory traffic: x
 * is read once (float32) and written once at half its size (plus padding);
 * in the kernel, the packed weights are read once per 16 positions, x pairs
 * once per (position, tap, co block) from cache, y written once. Output rows
 * are the parallel work items (one OpenMP static loop).
 *
 * Speed depends on the CPU's vdpbf16ps rate. On the Intel Xeon this was
 * written on (family 6 model 207, AMX not exposed) a zmm vdpbf16ps retires
 * at a quarter of the zmm FMA rate (16 independent chains: ~80 against ~160
 * GFLOP/s per core), so this kernel, at ~72 GFLOP/s, is slower than the
 * float32 direct kernel there (bench/conv_bf16); it pays where vdpbf16ps
 * issues at the FMA rate (the Zen 4 figures).
 *
 * Outside the float flavour or without BPC_HAVE_BF16 this file only says no
 * (bp__conv_bf16_ok false, the forward BP_EUNSUPPORTED). */
#include <stdlib.h>
#include <string.h>
#include <bpc/error.h>
#include <bpc/precision.h>
#include <bpc/tensor.h>
#include "conv_internal.h"
#include "simd.h"

#if defined(BPC_HAVE_BF16) && !defined(BP_REAL_DOUBLE)

#define RBLK 16 /* output positions per register block */

bool bp__conv_bf16_ok(const bp__conv_geom *g)
{
    /* A 16-lane block at least half used; depthwise and tiny groups stay float32. */
    return g->Cog >= 8;
}

typedef struct bf16_conv {
    const bp__conv_geom *g;
    int64_t Cg2, W2, nblk, taps, pstride; /* pstride: pairs per padded position */
    const uint32_t *xb, *wp;
} bf16_conv;

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
    const int64_t ps = g->s[2] * C->pstride, Cg2 = C->Cg2;
    for (int64_t a0 = 0; a0 < g->k[0]; a0++) {
        int64_t i0 = o0 * g->s[0] - g->lo[0] + a0 * g->d[0];
        if (i0 < 0 || i0 >= g->in[0]) continue;
        for (int64_t a1 = 0; a1 < g->k[1]; a1++) {
            int64_t i1 = o1 * g->s[1] - g->lo[1] + a1 * g->d[1];
            if (i1 < 0 || i1 >= g->in[1]) continue;
            const uint32_t *xr = C->xb + ((b * g->in[0] + i0) * g->in[1] + i1) * C->W2 * C->pstride +
                                 o2 * ps + grp * Cg2;
            const uint32_t *wt = C->wp + ((grp * C->nblk + blk) * C->taps + (a0 * g->k[1] + a1) * g->k[2]) *
                                             Cg2 * BF16_LANES;
            for (int64_t a2 = 0; a2 < g->k[2]; a2++) {
                const uint32_t *xa = xr + a2 * g->d[2] * C->pstride;
                const uint32_t *wa = wt + a2 * Cg2 * BF16_LANES;
                for (int64_t j = 0; j < Cg2; j++) {
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

/* x as bf16 pairs in the padded layout (see the top): zeros in the padding
 * and the odd channel; the rows themselves converted by vbf_convert. */
static BF16_TARGET void pack_x(const bf16_conv *C, uint32_t *xb, const float *x)
{
    const bp__conv_geom *g = C->g;
    const int64_t rows = g->B * g->in[0] * g->in[1], I2 = g->in[2], lo2 = g->lo[2];
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        uint32_t *dst = xb + row * C->W2 * C->pstride;
        const float *src = x + row * I2 * g->Cin;
        memset(dst, 0, sizeof(uint32_t) * (size_t)(C->W2 * C->pstride));
        for (int64_t i2 = 0; i2 < I2; i2++) {
            int64_t p = i2 + lo2;
            if (p < 0 || p >= C->W2) continue; /* never read: left of the first or right of the last tap */
            uint16_t *d = (uint16_t *)(dst + p * C->pstride);
            if (g->Cg % 2 == 0) {
                vbf_convert(d, src + i2 * g->Cin, g->Cin);
            } else {
                for (int64_t grp = 0; grp < g->G; grp++)
                    vbf_convert(d + grp * C->Cg2 * 2, src + i2 * g->Cin + grp * g->Cg, g->Cg);
            }
        }
    }
}

/* w (taps, Cg, Cout) into wp (G, nblk, taps, Cg2, 16, 2) bf16, zero-padded. */
static void pack_w(const bf16_conv *C, uint32_t *wp, const float *w)
{
    const bp__conv_geom *g = C->g;
    uint16_t *h = (uint16_t *)wp;
    for (int64_t grp = 0; grp < g->G; grp++)
        for (int64_t blk = 0; blk < C->nblk; blk++)
            for (int64_t t = 0; t < C->taps; t++)
                for (int64_t j = 0; j < C->Cg2; j++)
                    for (int64_t l = 0; l < BF16_LANES; l++)
                        for (int64_t half = 0; half < 2; half++) {
                            int64_t ci = 2 * j + half, co = blk * BF16_LANES + l;
                            float v = ci < g->Cg && co < g->Cog ? w[(t * g->Cg + ci) * g->Cout + grp * g->Cog + co] : 0;
                            *h++ = bf16_round(v);
                        }
}

bp_status bp__conv_forward_bf16(const bp__conv_geom *g, float *y, const float *x, const float *w, const float *bias)
{
    if (!bp_bf16_available())
        return bp_fail(BP_EUNSUPPORTED, "conv bf16 forward: this CPU or build cannot run AVX512-BF16");
    bf16_conv C = {.g = g};
    C.Cg2 = (g->Cg + 1) / 2;
    C.pstride = g->G * C.Cg2;
    C.W2 = (g->out[2] - 1) * g->s[2] + (g->k[2] - 1) * g->d[2] + 1;
    C.nblk = (g->Cog + BF16_LANES - 1) / BF16_LANES;
    C.taps = g->k[0] * g->k[1] * g->k[2];
    const size_t nxb = (size_t)(g->B * g->in[0] * g->in[1] * C.W2 * C.pstride);
    const size_t nwp = (size_t)(g->G * C.nblk * C.taps * C.Cg2 * BF16_LANES);
    uint32_t *xb = bp_alloc_aligned(sizeof(uint32_t) * nxb), *wp = bp_alloc_aligned(sizeof(uint32_t) * nwp);
    if (!xb || !wp) {
        bp_free_aligned(xb);
        bp_free_aligned(wp);
        return bp_fail(BP_ENOMEM, "conv bf16 forward: out of memory for %zu packed input and %zu weight pairs", nxb,
                       nwp);
    }
    pack_x(&C, xb, x);
    pack_w(&C, wp, w);
    C.xb = xb;
    C.wp = wp;
    conv_rows(&C, y, bias);
    bp_free_aligned(xb);
    bp_free_aligned(wp);
    return BP_OK;
}

#else

bool bp__conv_bf16_ok(const bp__conv_geom *g)
{
    (void)g;
    return false;
}

bp_status bp__conv_forward_bf16(const bp__conv_geom *g, float *y, const float *x, const float *w, const float *bias)
{
    (void)g, (void)y, (void)x, (void)w, (void)bias;
    return bp_fail(BP_EUNSUPPORTED, "conv bf16 forward: not in this build (float64 flavour or BPC_BF16 off)");
}

#endif
