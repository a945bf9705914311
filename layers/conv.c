/* layers/conv.c — Conv1d/2d/3d: construction, and update() as a recorded
 * autograd op over direct channels-last kernels, or tiled im2col + OpenBLAS
 * GEMM where those do not apply (see bpc/conv.h and "direct convolution").
 *
 * Shapes inside: every conv is run as 3-D with unused leading spatial dims of size 1.
 *   x   (B, I0, I1, I2, Cin)      y (B, O0, O1, O2, Cout)
 *   w   (k0, k1, k2, Cg, Cout) viewed as a (K, Cout) matrix, K = k0*k1*k2*Cg
 *   col (P, K): the im2col rows of P output positions of one sample, one group */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <omp.h>
#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <bpc/conv.h>
#include <bpc/autograd.h>
#include "real_math.h"
#include "simd.h"

static bp_status conv_update(bp_node *n, bp_tensor *x, bp_tensor **out);

#define CONV_CLASS(NAME)                                                                     \
    {                                                                                        \
        .name = NAME, .size = sizeof(bp_conv), .supported_modes = NULL, .n_supported_modes = 0, \
        .default_mode = NULL, .reads_shared = false, .update = conv_update                  \
    }

const bp_node_class bp_conv1d_class = CONV_CLASS("Conv1d");
const bp_node_class bp_conv2d_class = CONV_CLASS("Conv2d");
const bp_node_class bp_conv3d_class = CONV_CLASS("Conv3d");

bp_conv_opts bp_conv_defaults(void)
{
    return (bp_conv_opts){
        .padding = BP_PAD_SAME,
        .groups = 1,
        .bias = true,
        .w_initializer = bp_xavier_normal_init(1.0),
        .b_initializer = bp_zero_init(),
    };
}

bp_conv *bp_conv_cast(bp_node *n)
{
    if (n && (n->cls == &bp_conv1d_class || n->cls == &bp_conv2d_class || n->cls == &bp_conv3d_class))
        return (bp_conv *)n;
    return NULL;
}

bp_status bp_conv_out_size(const bp_conv *c, int d, int64_t in, int64_t *out, int64_t *pad_lo)
{
    int64_t k = c->kernel_size[d], s = c->stride[d], dil = c->dilation[d];
    int64_t span = (k - 1) * dil + 1, lo = 0, hi = 0;
    if (c->padding == BP_PAD_SAME) {
        int64_t o = (in + s - 1) / s;
        int64_t total = (o - 1) * s + span - in;
        if (total < 0) total = 0;
        lo = total / 2;
        hi = total - lo;
    } else if (c->padding == BP_PAD_EXPLICIT) {
        lo = c->pad_lo[d];
        hi = c->pad_hi[d];
    }
    int64_t padded = in + lo + hi;
    if (padded < span)
        return bp_fail(BP_ESHAPE,
                       "%s: spatial dim %d of size %lld (padded %lld) is smaller than the dilated kernel (%lld)",
                       bp_node_name(&c->base), d, (long long)in, (long long)padded, (long long)span);
    *out = (padded - span) / s + 1;
    *pad_lo = lo;
    return BP_OK;
}

static bp_status conv_new(bp_node **out, const bp_node_class *cls, int nsp, int64_t cin, int64_t cout,
                          const bp_conv_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", cls->name);
    *out = NULL;
    bp_conv_opts o = opts ? *opts : bp_conv_defaults();
    const char *who = o.name ? o.name : cls->name;
    if (cin < 1 || cout < 1)
        return bp_fail(BP_EINVAL, "%s: in_channels and out_channels must be >= 1, got %lld and %lld", who,
                       (long long)cin, (long long)cout);
    if (o.groups < 1) return bp_fail(BP_EINVAL, "%s: groups must be >= 1, got %d", who, o.groups);
    if (cin % o.groups)
        return bp_fail(BP_EINVAL, "%s: \"in_channels\" should be divisible by groups (%lld %% %d != 0)", who,
                       (long long)cin, o.groups);
    if (cout % o.groups)
        return bp_fail(BP_EINVAL, "%s: \"out_channels\" should be divisible by groups (%lld %% %d != 0)", who,
                       (long long)cout, o.groups);
    if (o.padding != BP_PAD_SAME && o.padding != BP_PAD_VALID && o.padding != BP_PAD_EXPLICIT)
        return bp_fail(BP_EINVAL, "%s: padding must be SAME, VALID or EXPLICIT, got %d", who, (int)o.padding);
    for (int d = 0; d < nsp; d++) {
        if (o.kernel_size[d] < 1)
            return bp_fail(BP_EINVAL, "%s: kernel_size[%d] must be >= 1, got %d", who, d, o.kernel_size[d]);
        if (o.stride[d] < 0 || o.dilation[d] < 0)
            return bp_fail(BP_EINVAL, "%s: stride[%d] and dilation[%d] must be >= 1 (0 means 1), got %d and %d",
                           who, d, d, o.stride[d], o.dilation[d]);
        if (o.padding == BP_PAD_EXPLICIT && (o.pad_lo[d] < 0 || o.pad_hi[d] < 0))
            return bp_fail(BP_EINVAL, "%s: padding of dim %d must be >= 0, got (%d, %d)", who, d, o.pad_lo[d],
                           o.pad_hi[d]);
    }
    bp_node *n;
    BP_TRY(bp_node_create(&n, cls, o.name, o.mode));
    bp_conv *c = (bp_conv *)n;
    c->n_spatial = nsp;
    c->in_channels = cin;
    c->out_channels = cout;
    c->padding = o.padding;
    c->groups = o.groups;
    for (int d = 0; d < 3; d++) {
        bool used = d < nsp;
        c->kernel_size[d] = used ? o.kernel_size[d] : 1;
        c->stride[d] = used && o.stride[d] ? o.stride[d] : 1;
        c->dilation[d] = used && o.dilation[d] ? o.dilation[d] : 1;
        c->pad_lo[d] = used && o.padding == BP_PAD_EXPLICIT ? o.pad_lo[d] : 0;
        c->pad_hi[d] = used && o.padding == BP_PAD_EXPLICIT ? o.pad_hi[d] : 0;
    }
    bp_rng seeded, *rng = bp_rng_or_default(o.rng, &seeded);
    int64_t wshape[5];
    for (int d = 0; d < nsp; d++) wshape[d] = o.kernel_size[d];
    wshape[nsp] = cin / o.groups;
    wshape[nsp + 1] = cout;
    bp_var_kind kind = bp_mode_is_train_mode(n->mode) ? BP_TRAINVAR : BP_VARIABLE;
    bp_tensor *t = NULL;
    bp_status st = bp_tensor_init(&t, nsp + 2, wshape, &o.w_initializer, rng);
    if (!st) st = bp_node_add_var(n, "w", kind, t, &c->w);
    bp_tensor_free(t);
    t = NULL;
    if (!st && o.bias) {
        int64_t bshape[4] = {1, 1, 1, 1};
        bshape[nsp] = cout;
        st = bp_tensor_init(&t, nsp + 1, bshape, &o.b_initializer, rng);
        if (!st) st = bp_node_add_var(n, "b", kind, t, &c->b);
        bp_tensor_free(t);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_status bp_conv1d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_opts *o)
{
    return conv_new(out, &bp_conv1d_class, 1, cin, cout, o);
}
bp_status bp_conv2d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_opts *o)
{
    return conv_new(out, &bp_conv2d_class, 2, cin, cout, o);
}
bp_status bp_conv3d_new(bp_node **out, int64_t cin, int64_t cout, const bp_conv_opts *o)
{
    return conv_new(out, &bp_conv3d_class, 3, cin, cout, o);
}

/* ------------------------------------------------------------------ kernels */

typedef struct geom {
    int64_t B, in[3], out[3], lo[3];
    int64_t Cin, Cout, Cg, Cog, G;  /* channels, per group in / out, groups */
    int64_t k[3], s[3], d[3];
    int64_t K;                      /* k0*k1*k2*Cg: one im2col row */
    int64_t Pout, Pin;              /* output / input positions per sample */
    int64_t P;                      /* tile rows */
} geom;

/* Tile rows: keep P*K reals near 512 KiB (in L2), between 64 and 1024 rows. */
static int64_t tile_rows(int64_t K, int64_t Pout)
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
static void im2col_tile(const geom *g, const bp_real *xb, int64_t grp, int64_t p0, int64_t np, bp_real *col)
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
static void col2im_tile(const geom *g, bp_real *dxb, int64_t grp, int64_t p0, int64_t np, const bp_real *dcol)
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

/* ---------------------------------------------------- direct convolution
 *
 * The im2col path moves every input value k0*k1*k2 times through memory
 * before the GEMM sees it; on channels-last data a direct kernel does not
 * need to. For a block of NB output positions along the last spatial dim and
 * up to 2 vectors of output channels, the accumulators live in registers for
 * the whole reduction over taps and input channels:
 *   acc[p][v] += x[pos(p) + tap, ci] (broadcast) * w[tap, ci, v-th vector]
 * which is NB*NV FMAs per NV weight loads and NB broadcasts. Output rows
 * (b, o0, o1) are independent, so they are the parallel work items.
 *
 * The same kernel computes dx for stride 1 (a correlation of dy with the
 * flipped, transposed kernel, accumulated into dx), and a second kernel
 * computes dw as outer products x[pos, ci] * dy[pos, co-vector] summed over
 * positions, with (ci, co) accumulators in registers.
 *
 * Taps outside the input along dims 0 and 1 are skipped; along dim 2 the
 * forward kernel reads zero-padded, channel-chunked copies of the input rows
 * (see direct_fwd), and the dw kernel clips each tap's position range. */

/* Register blocks: positions (forward) or input channels (dw) per call, for
 * one or two output-channel vectors; leaves registers for the weights. */
#define MAXB1 (NREGS == 32 ? 16 : 12)
#define MAXB2 (NREGS == 32 ? 12 : 6)
#define DIRECT_MIN_CH 4 /* below this many output channels per group, most lanes would idle */

/* A convolution as the direct kernels see it: y (B, out.., ldy) from
 * x (B, in.., ldx), G groups of Cr reduction and Co output channels, output
 * channels in blocks of up to 2 vectors. wp is the kernel packed per block:
 * [G][nblk][taps][Cr][nv*VL], each block starting taps*Cr*2*VL reals apart. */
typedef struct dconv {
    int64_t B, in[3], out[3], lo[3], k[3], s[3], d[3];
    int64_t ldx, Cr, ldy, Co, G, nblk, taps;
    const bp_real *wp;
} dconv;

static int64_t blk_width(const dconv *D, int64_t blk)
{
    int64_t w = D->Co - blk * 2 * VL;
    return w < 2 * VL ? w : 2 * VL;
}

/* Packs w (taps, Cg, Cout) for D. Forward (flip false): reduction over ci,
 * outputs co. For dx (flip true): taps reversed, reduction over co, outputs ci. */
static bp_real *pack_weights(const dconv *D, const bp_real *w, int64_t Cg, int64_t Cout, bool flip)
{
    const int64_t bstride = D->taps * D->Cr * 2 * VL;
    bp_real *wp = bp_alloc_aligned(sizeof(bp_real) * (size_t)(D->G * D->nblk * bstride));
    if (!wp) return NULL;
    for (int64_t g = 0; g < D->G; g++)
        for (int64_t blk = 0; blk < D->nblk; blk++) {
            int64_t bw = blk_width(D, blk), nvl = (bw + VL - 1) / VL * VL;
            bp_real *dst = wp + (g * D->nblk + blk) * bstride;
            for (int64_t t = 0; t < D->taps; t++)
                for (int64_t r = 0; r < D->Cr; r++, dst += nvl)
                    for (int64_t l = 0; l < nvl; l++) {
                        int64_t o = blk * 2 * VL + l;
                        bp_real v = 0;
                        if (l < bw)
                            v = flip ? w[((D->taps - 1 - t) * Cg + o) * Cout + g * D->Cr + r]
                                     : w[(t * Cg + r) * Cout + g * D->Co + o];
                        dst[l] = v;
                    }
        }
    return wp;
}

typedef struct fwd_args {
    const bp_real *const *rows;  /* per valid (a, b) tap: its packed row at the block's first position */
    const bp_real *const *wrows; /* per valid (a, b) tap: its packed weights */
    int nrows;
    int64_t k2, Cr, chunk;       /* taps along dim 2, reduction channels, reals per channel chunk of a row */
    int64_t xs, xt;              /* row steps per output position and per tap along dim 2 (not UNIT) */
    bp_real *y;
    int64_t ldy, ncols;          /* y position step; valid output channels of the block */
    const bp_real *bias;         /* NULL: none */
    bool accumulate;             /* y += instead of y = */
} fwd_args;

/* Register blocks are written out as named variables (a<p>0, a<p>1) rather
 * than an array: GCC keeps such arrays on the stack. Unused ones (p >= NB,
 * a compile-time constant in each instantiation) are dead code. */
#define REP16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)

#if defined(__AVX512F__) && !defined(BP_REAL_DOUBLE)
#define VBCAST(s) _mm512_set1_ps(s)
#elif defined(__AVX512F__)
#define VBCAST(s) _mm512_set1_pd(s)
#elif defined(__AVX__) && !defined(BP_REAL_DOUBLE)
#define VBCAST(s) _mm256_set1_ps(s)
#elif defined(__AVX__)
#define VBCAST(s) _mm256_set1_pd(s)
#else
static inline vr vbcast(bp_real s)
{
    vr v;
    for (int i = 0; i < VL; i++) v[i] = s;
    return v;
}
#define VBCAST(s) vbcast(s)
#endif

static inline __attribute__((always_inline)) void fwd_store(const fwd_args *A, int p, int NV, vr v0, vr v1)
{
    bp_real *yp = A->y + p * A->ldy;
    if (A->ncols == NV * VL) {
        if (A->bias) {
            v0 += *(const vru *)A->bias;
            if (NV > 1) v1 += *(const vru *)(A->bias + VL);
        }
        if (A->accumulate) {
            v0 += *(const vru *)yp;
            if (NV > 1) v1 += *(const vru *)(yp + VL);
        }
        *(vru *)yp = v0;
        if (NV > 1) *(vru *)(yp + VL) = v1;
        return;
    }
    bp_real tmp[2 * VL] __attribute__((aligned(VBYTES)));
    *(vr *)tmp = v0;
    *(vr *)(tmp + VL) = v1;
    for (int64_t j = 0; j < A->ncols; j++) {
        bp_real t = tmp[j];
        if (A->bias) t += A->bias[j];
        if (A->accumulate) t += yp[j];
        yp[j] = t;
    }
}

/* y[p, 0:ncols] (+)= bias + sum_{r, c, ci} x_r[p*s2 + c*d2, ci] * wrows[r][c, ci, :]
 * for p < NB, where the packed row x_r holds channel chunk q of position j at
 * rows[r] + q*chunk + j*ps (ps: VL, or 1 for a single reduction channel). With
 * PS = ps known at compile time (s2 = d2 = 1) a broadcast's address is a
 * constant offset from one pointer; PS = 0 reads the steps from A. Memory: the
 * weights of the valid taps (L2-resident), NB + k2 - 1 positions of each packed
 * row, one store per output. */
static inline __attribute__((always_inline)) void kfwd(const int NB, const int NV, const int PS, const fwd_args *A)
{
    const vr Z = {0};
#define FDECL(p) vr a##p##0 = Z, a##p##1 = Z;
    REP16(FDECL)
#undef FDECL
    const int64_t xs = PS ? PS : A->xs, xt = PS ? PS : A->xt, Cr = A->Cr, chunk = A->chunk;
    for (int r = 0; r < A->nrows; r++) {
        const vr *w = (const vr *)A->wrows[r];
        for (int64_t c = 0; c < A->k2; c++) {
            const bp_real *xq = A->rows[r] + c * xt;
            for (int64_t ci0 = 0; ci0 < Cr; ci0 += VL, xq += chunk) {
                const int64_t ncc = Cr - ci0 < VL ? Cr - ci0 : VL;
                for (int64_t cc = 0; cc < ncc; cc++, w += NV) {
                    vr w0 = w[0], w1 = NV > 1 ? w[1] : Z;
#define FSTEP(p)                                  \
    if (p < NB) {                                 \
        vr xb = VBCAST(xq[p * xs + cc]);          \
        VFMA(a##p##0, xb, w0);                    \
        if (NV > 1) VFMA(a##p##1, xb, w1);        \
    }
                    REP16(FSTEP)
#undef FSTEP
                }
            }
        }
    }
#define FSTORE(p) \
    if (p < NB) fwd_store(A, p, NV, a##p##0, a##p##1);
    REP16(FSTORE)
#undef FSTORE
}

/* One function per (NB, NV, step mode): inlined into a single switch, the
 * 96 kernels exceed what GCC's register allocator handles well (it spills the
 * accumulators). Step mode: 0 runtime steps, 1 PS = VL, 2 PS = 1. Table
 * index: ((NB-1)*2 + NV-1)*3 + mode. */
#define KFWD_FN(N)                                                                              \
    static void kfwd_##N##_1_0(const fwd_args *A) { kfwd(N, 1, 0, A); }                         \
    static void kfwd_##N##_1_1(const fwd_args *A) { kfwd(N, 1, VL, A); }                        \
    static void kfwd_##N##_1_2(const fwd_args *A) { kfwd(N, 1, 1, A); }                         \
    static void kfwd_##N##_2_0(const fwd_args *A) { kfwd(N <= MAXB2 ? N : 1, 2, 0, A); }        \
    static void kfwd_##N##_2_1(const fwd_args *A) { kfwd(N <= MAXB2 ? N : 1, 2, VL, A); }       \
    static void kfwd_##N##_2_2(const fwd_args *A) { kfwd(N <= MAXB2 ? N : 1, 2, 1, A); }
KFWD_FN(1) KFWD_FN(2) KFWD_FN(3) KFWD_FN(4) KFWD_FN(5) KFWD_FN(6) KFWD_FN(7) KFWD_FN(8)
KFWD_FN(9) KFWD_FN(10) KFWD_FN(11) KFWD_FN(12) KFWD_FN(13) KFWD_FN(14) KFWD_FN(15) KFWD_FN(16)
#define KFWD_ROW(N) kfwd_##N##_1_0, kfwd_##N##_1_1, kfwd_##N##_1_2, kfwd_##N##_2_0, kfwd_##N##_2_1, kfwd_##N##_2_2,
static void (*const kfwd_table[])(const fwd_args *) = {
    KFWD_ROW(1) KFWD_ROW(2) KFWD_ROW(3) KFWD_ROW(4) KFWD_ROW(5) KFWD_ROW(6) KFWD_ROW(7) KFWD_ROW(8)
    KFWD_ROW(9) KFWD_ROW(10) KFWD_ROW(11) KFWD_ROW(12) KFWD_ROW(13) KFWD_ROW(14) KFWD_ROW(15) KFWD_ROW(16)};

/* nb <= MAXB1, and nb <= MAXB2 when nv == 2. */
static void kfwd_any(int nb, int nv, int mode, const fwd_args *A)
{
    kfwd_table[((nb - 1) * 2 + nv - 1) * 3 + mode](A);
}

/* Copies input row xrow, channels of group g, into buf as Lp zero-padded
 * positions (position j is input position j - lo2) by nq chunks of VL
 * channels, chunk q at buf + q*Lp*VL; with a single channel (Cr = 1), as Lp
 * consecutive reals instead, 1/VL of the bytes (a first layer on one-channel
 * volumes). */
static void pack_row(const dconv *D, const bp_real *xrow, int64_t g, bp_real *buf, int64_t Lp, int64_t nq)
{
    /* positions [j0, j1) are inside the input, the rest is padding */
    int64_t j0 = D->lo[2] < 0 ? 0 : D->lo[2], j1 = D->lo[2] + D->in[2];
    if (j0 > Lp) j0 = Lp;
    if (j1 > Lp) j1 = Lp;
    if (j1 < j0) j1 = j0;
    if (D->Cr == 1) {
        const bp_real *src = xrow + g - D->lo[2] * D->ldx;
        memset(buf, 0, sizeof(bp_real) * (size_t)j0);
        if (D->ldx == 1)
            memcpy(buf + j0, src + j0, sizeof(bp_real) * (size_t)(j1 - j0));
        else
            for (int64_t j = j0; j < j1; j++) buf[j] = src[j * D->ldx];
        memset(buf + j1, 0, sizeof(bp_real) * (size_t)(Lp - j1));
        return;
    }
    for (int64_t j = 0; j < Lp; j++) {
        int64_t i2 = j - D->lo[2];
        bool in = j >= j0 && j < j1;
        const bp_real *src = in ? xrow + i2 * D->ldx + g * D->Cr : NULL;
        for (int64_t q = 0; q < nq; q++) {
            bp_real *dst = buf + (q * Lp + j) * VL;
            int64_t nc = D->Cr - q * VL < VL ? D->Cr - q * VL : VL;
            if (in && nc == VL) {
                *(vr *)dst = *(const vru *)(src + q * VL); /* one vector: no call to memcpy */
            } else {
                memset(dst, 0, sizeof(bp_real) * VL);
                if (in) memcpy(dst, src + q * VL, sizeof(bp_real) * (size_t)nc);
            }
        }
    }
}

/* y (+)= conv(x) (+ bias), as described by D. Parallel over output rows
 * (b, o0, o1); every output is written by one thread. The input rows a
 * row of outputs needs (k0*k1 of them, fewer where dims 0/1 fall in the
 * padding) are used from a zero-padded, channel-chunked copy of
 * Lp = (out2-1)*s2 + (k2-1)*d2 + 1 positions by ceil(Cr/VL) chunks of VL
 * reals, which removes both the padding tests and the per-position pointers
 * from the kernel. Each thread keeps S0*S1*G such copies, S_d = (k_d-1)*d_d + 1
 * (the span of the kernel), the copy of input row (i0, i1) of group g in slot
 * ((i0 mod S0)*S1 + i1 mod S1)*G + g: the rows one output row needs never
 * share a slot, and the next output row finds the k1 - s1 rows it shares with
 * this one still there, so each input row is copied about k0 times per pass.
 * Scratch per thread: S0*S1*G*Lp*ceil(Cr/VL)*VL reals. */
static bp_status direct_fwd(const dconv *D, bp_real *y, const bp_real *x, const bp_real *bias, bool accumulate)
{
    const int64_t items = D->B * D->out[0] * D->out[1], kab = D->k[0] * D->k[1];
    const int64_t S0 = (D->k[0] - 1) * D->d[0] + 1, S1 = (D->k[1] - 1) * D->d[1] + 1, nslot = S0 * S1 * D->G;
    const int64_t Lp = (D->out[2] - 1) * D->s[2] + (D->k[2] - 1) * D->d[2] + 1;
    const int64_t ps = D->Cr == 1 ? 1 : VL; /* packed step per position, see pack_row */
    const int64_t nq = (D->Cr + VL - 1) / VL, chunk = Lp * ps, rowsz = (nq * chunk + VL - 1) / VL * VL;
    const int64_t nbmax = D->Co > VL ? MAXB2 : MAXB1;
    const int64_t npb = (D->out[2] + nbmax - 1) / nbmax; /* position blocks per row, split evenly */
    const int mode = D->s[2] == 1 && D->d[2] == 1 ? (ps == 1 ? 2 : 1) : 0;
    bp_status st = BP_OK;
#pragma omp parallel
    {
        const bp_real **rows = malloc(sizeof(*rows) * (size_t)(2 * kab));
        const bp_real **wrows = rows ? rows + kab : NULL;
        int64_t *tab = malloc(sizeof(*tab) * (size_t)(3 * kab + nslot));
        int64_t *xkey = tab ? tab + kab : NULL, *xslot = tab ? tab + 2 * kab : NULL, *skey = tab ? tab + 3 * kab : NULL;
        bp_real *cache = bp_alloc_aligned(sizeof(bp_real) * (size_t)(nslot * rowsz));
        bool ok = rows && tab && cache;
        if (!ok) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        } else {
            for (int64_t k = 0; k < nslot; k++) skey[k] = -1;
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!ok) continue;
            int64_t o1 = it % D->out[1], t = it / D->out[1], o0 = t % D->out[0], b = t / D->out[0];
            int nr = 0;
            for (int64_t a = 0; a < D->k[0]; a++) {
                int64_t i0 = o0 * D->s[0] - D->lo[0] + a * D->d[0];
                if (i0 < 0 || i0 >= D->in[0]) continue;
                for (int64_t bb = 0; bb < D->k[1]; bb++) {
                    int64_t i1 = o1 * D->s[1] - D->lo[1] + bb * D->d[1];
                    if (i1 < 0 || i1 >= D->in[1]) continue;
                    xkey[nr] = (b * D->in[0] + i0) * D->in[1] + i1;
                    xslot[nr] = ((i0 % S0) * S1 + i1 % S1) * D->G;
                    tab[nr++] = a * D->k[1] + bb;
                }
            }
            bp_real *yrow = y + ((b * D->out[0] + o0) * D->out[1] + o1) * D->out[2] * D->ldy;
            for (int64_t g = 0; g < D->G; g++) {
                /* Each row's copy is in its slot, or is made there now. */
                for (int r = 0; r < nr; r++) {
                    int64_t slot = xslot[r] + g;
                    if (skey[slot] != xkey[r]) {
                        skey[slot] = xkey[r];
                        pack_row(D, x + xkey[r] * D->in[2] * D->ldx, g, cache + slot * rowsz, Lp, nq);
                    }
                    rows[r] = cache + slot * rowsz; /* advanced block by block below */
                }
                fwd_args A = {.wrows = wrows, .nrows = nr, .k2 = D->k[2], .Cr = D->Cr, .chunk = chunk,
                              .xs = D->s[2] * ps, .xt = D->d[2] * ps, .ldy = D->ldy, .accumulate = accumulate};
                for (int64_t pb = 0, p0 = 0; pb < npb; pb++) {
                    int64_t n = (D->out[2] - p0) / (npb - pb); /* even split of the rest */
                    A.rows = rows;
                    for (int64_t blk = 0; blk < D->nblk; blk++) {
                        int64_t bw = blk_width(D, blk), nv = (bw + VL - 1) / VL;
                        const bp_real *wb = D->wp + (g * D->nblk + blk) * D->taps * D->Cr * 2 * VL;
                        for (int r = 0; r < nr; r++) wrows[r] = wb + tab[r] * D->k[2] * D->Cr * nv * VL;
                        A.y = yrow + p0 * D->ldy + g * D->Co + blk * 2 * VL;
                        A.ncols = bw;
                        A.bias = bias ? bias + g * D->Co + blk * 2 * VL : NULL;
                        kfwd_any((int)n, (int)nv, mode, &A);
                    }
                    for (int r = 0; r < nr; r++) rows[r] += n * D->s[2] * ps;
                    p0 += n;
                }
            }
        }
        free(rows);
        free(tab);
        bp_free_aligned(cache);
    }
    return st;
}

/* Shared by the dw kernels: NV vectors of one dy row (lane by lane when the
 * block has fewer than NV*VL channels, so no read passes the row), and the
 * register accumulators acc[i] (+)= x_i * dy, declared, updated and stored
 * for i < N (the names a<i>0, a<i>1, as in kfwd). */
static inline __attribute__((always_inline)) void load_dy(const bp_real *dr, int NV, bool full, int64_t ncols, vr *d0,
                                                          vr *d1)
{
    if (full) {
        *d0 = *(const vru *)dr;
        if (NV > 1) *d1 = *(const vru *)(dr + VL);
        return;
    }
    bp_real tmp[2 * VL] __attribute__((aligned(VBYTES))) = {0};
    for (int64_t j = 0; j < ncols; j++) tmp[j] = dr[j];
    *d0 = *(const vr *)tmp;
    *d1 = *(const vr *)(tmp + VL);
}
#define DW_DECL(i, N) vr a##i##0 = i < N ? dst[i * NV] : Z, a##i##1 = i < N && NV > 1 ? dst[i * NV + 1] : Z;
#define DW_STEP(i, N, X)                      \
    if (i < N) {                              \
        vr xb = VBCAST(X);                    \
        VFMA(a##i##0, xb, d0);                \
        if (NV > 1) VFMA(a##i##1, xb, d1);    \
    }
#define DW_STORE(i, N)                        \
    if (i < N) {                              \
        dst[i * NV] = a##i##0;                \
        if (NV > 1) dst[i * NV + 1] = a##i##1; \
    }

/* The per-thread scratch of the dw kernels: the packed dw, then (bias_off
 * reals in) the bias gradient's G*Co sums. */
static int64_t bias_off(const dconv *D) { return D->G * D->nblk * D->taps * D->Cr * 2 * VL; }
static size_t part_bytes(const dconv *D) { return sizeof(bp_real) * (size_t)(bias_off(D) + D->G * D->Co); }

/* acc[j] += sum over n < npos of dy[n*ldy + j], j < width: the bias gradient
 * of an output row, read while the dw kernels have it in cache. */
static void sum_rows(bp_real *restrict acc, const bp_real *restrict dy, int64_t npos, int64_t ldy, int64_t width)
{
    for (int64_t n = 0; n < npos; n++)
        for (int64_t j = 0; j < width; j++) acc[j] += dy[n * ldy + j];
}

/* dw (taps*Cr rows of G*Co) and dbias (if not NULL) += the per-thread sums
 * parts[t], in thread order (so the result depends only on the thread
 * count); frees them. */
static void add_parts(const dconv *D, bp_real *dw, bp_real *dbias, bp_real **parts, int nparts, bool ok)
{
    const int64_t bstride = D->taps * D->Cr * 2 * VL;
    for (int t = 0; t < nparts; t++) {
        const bp_real *p = parts[t];
        if (p && ok && dbias)
            for (int64_t j = 0; j < D->G * D->Co; j++) dbias[j] += p[bias_off(D) + j];
        if (p && ok)
            for (int64_t g = 0; g < D->G; g++)
                for (int64_t blk = 0; blk < D->nblk; blk++) {
                    int64_t bw = blk_width(D, blk), nvl = (bw + VL - 1) / VL * VL;
                    const bp_real *src = p + (g * D->nblk + blk) * bstride;
                    for (int64_t tr = 0; tr < D->taps * D->Cr; tr++, src += nvl) {
                        bp_real *dst = dw + tr * D->ldy + g * D->Co + blk * 2 * VL;
                        for (int64_t l = 0; l < bw; l++) dst[l] += src[l];
                    }
                }
        bp_free_aligned(parts[t]);
    }
    free(parts);
}

typedef struct dw_args {
    const bp_real *const *xrows; /* per row: x at the first position of the tap's range, channel ci0 */
    const bp_real *const *drows; /* per row: dy at the first position, the block's first channel */
    int nrows;
    int64_t npos, xs, ds;        /* positions per row; x and dy steps per position */
    bp_real *acc;                /* packed dw at (tap, ci0): NCI rows of NV vectors */
} dw_args;

/* acc[ci, :] += sum_{r, n} xrows[r][n*xs + ci] * drows[r][n*ds + (0:NV*VL)] for
 * ci < NCI. FULL false: the block has fewer than NV*VL channels and dy is read
 * lane by lane so no read passes the row. Memory per position: NV vectors of
 * dy and NCI scalars of x, for NCI*NV FMAs. */
static inline __attribute__((always_inline)) void kdw(const int NCI, const int NV, const bool FULL, int64_t ncols,
                                                      const dw_args *A)
{
    vr *dst = (vr *)A->acc;
    const vr Z = {0};
#define DDECL(i) DW_DECL(i, NCI)
    REP16(DDECL)
#undef DDECL
    for (int r = 0; r < A->nrows; r++) {
        const bp_real *xr = A->xrows[r], *dr = A->drows[r];
        for (int64_t n = 0; n < A->npos; n++, xr += A->xs, dr += A->ds) {
            vr d0, d1 = Z;
            load_dy(dr, NV, FULL, ncols, &d0, &d1);
#define DSTEP(i) DW_STEP(i, NCI, xr[i])
            REP16(DSTEP)
#undef DSTEP
        }
    }
#define DSTORE(i) DW_STORE(i, NCI)
    REP16(DSTORE)
#undef DSTORE
}

/* One function per (NCI, NV, FULL), as for kfwd. */
#define KDW_FN(N)                                                                                              \
    static void kdw_##N##_1_0(int64_t nc, const dw_args *A) { kdw(N, 1, false, nc, A); }                       \
    static void kdw_##N##_1_1(int64_t nc, const dw_args *A) { kdw(N, 1, true, nc, A); }                        \
    static void kdw_##N##_2_0(int64_t nc, const dw_args *A) { kdw(N <= MAXB2 ? N : 1, 2, false, nc, A); }      \
    static void kdw_##N##_2_1(int64_t nc, const dw_args *A) { kdw(N <= MAXB2 ? N : 1, 2, true, nc, A); }
KDW_FN(1) KDW_FN(2) KDW_FN(3) KDW_FN(4) KDW_FN(5) KDW_FN(6) KDW_FN(7) KDW_FN(8)
KDW_FN(9) KDW_FN(10) KDW_FN(11) KDW_FN(12) KDW_FN(13) KDW_FN(14) KDW_FN(15) KDW_FN(16)
#define KDW_ROW(N) kdw_##N##_1_0, kdw_##N##_1_1, kdw_##N##_2_0, kdw_##N##_2_1,
static void (*const kdw_table[])(int64_t, const dw_args *) = {
    KDW_ROW(1) KDW_ROW(2) KDW_ROW(3) KDW_ROW(4) KDW_ROW(5) KDW_ROW(6) KDW_ROW(7) KDW_ROW(8)
    KDW_ROW(9) KDW_ROW(10) KDW_ROW(11) KDW_ROW(12) KDW_ROW(13) KDW_ROW(14) KDW_ROW(15) KDW_ROW(16)};

/* nci <= MAXB1, and nci <= MAXB2 when nv == 2. */
static void kdw_any(int nci, int nv, bool full, int64_t ncols, const dw_args *A)
{
    kdw_table[((nci - 1) * 2 + nv - 1) * 2 + full](ncols, A);
}

/* dw (taps, Cr, G*Co) += sum over positions of x (x) dy, for the forward
 * geometry D. Parallel over (b, o0, o1 chunk); each thread sums into its own
 * packed buffer (the size of wp), added into dw in thread order afterwards,
 * so the result depends only on the thread count. */
static bp_status direct_dw(const dconv *D, bp_real *dw, bp_real *dbias, const bp_real *dy, const bp_real *x)
{
    /* Work items: (b, o0, a chunk of o1 rows); o1 is chunked so that there
     * are a few items per thread even for one sample of a Conv2d/Conv1d. */
    int max_threads = omp_get_max_threads();
    int64_t planes = D->B * D->out[0], nch = (8 * (int64_t)max_threads + planes - 1) / planes;
    if (nch > D->out[1]) nch = D->out[1];
    const int64_t items = planes * nch, bstride = D->taps * D->Cr * 2 * VL;
    const size_t part = part_bytes(D);
    const int64_t ncb_max = D->Co > VL ? MAXB2 : MAXB1, ncb = (D->Cr + ncb_max - 1) / ncb_max;
    bp_real **parts = calloc((size_t)max_threads, sizeof *parts);
    if (!parts) return BP_ENOMEM;
    bp_status st = BP_OK;
#pragma omp parallel num_threads(max_threads)
    {
        const bp_real **xr = malloc(sizeof(*xr) * (size_t)(2 * D->out[1]));
        const bp_real **dr = xr ? xr + D->out[1] : NULL;
        bp_real *acc = bp_alloc_aligned(part);
        bool ok = xr && acc;
        if (!ok) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        } else {
            memset(acc, 0, part);
        }
        parts[omp_get_thread_num()] = acc;
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!ok) continue;
            int64_t ch = it % nch, o0 = (it / nch) % D->out[0], b = it / nch / D->out[0];
            int64_t o1a = ch * D->out[1] / nch, o1b = (ch + 1) * D->out[1] / nch;
            for (int64_t o1 = o1a; o1 < o1b && dbias; o1++)
                sum_rows(acc + bias_off(D), dy + ((b * D->out[0] + o0) * D->out[1] + o1) * D->out[2] * D->ldy,
                         D->out[2], D->ldy, D->ldy);
            for (int64_t a = 0; a < D->k[0]; a++) {
                int64_t i0 = o0 * D->s[0] - D->lo[0] + a * D->d[0];
                if (i0 < 0 || i0 >= D->in[0]) continue;
                for (int64_t bb = 0; bb < D->k[1]; bb++)
                    for (int64_t c = 0; c < D->k[2]; c++) {
                        /* positions o2 with 0 <= o2*s2 - lo2 + c*d2 < in2 */
                        int64_t off = c * D->d[2] - D->lo[2], s2 = D->s[2];
                        int64_t plo = off >= 0 ? 0 : (-off + s2 - 1) / s2;
                        int64_t phi = (D->in[2] - 1 - off) < 0 ? -1 : (D->in[2] - 1 - off) / s2;
                        if (phi > D->out[2] - 1) phi = D->out[2] - 1;
                        if (phi < plo) continue;
                        int64_t tap = (a * D->k[1] + bb) * D->k[2] + c;
                        for (int64_t g = 0; g < D->G; g++) {
                            int nr = 0;
                            for (int64_t o1 = o1a; o1 < o1b; o1++) {
                                int64_t i1 = o1 * D->s[1] - D->lo[1] + bb * D->d[1];
                                if (i1 < 0 || i1 >= D->in[1]) continue;
                                xr[nr] = x + (((b * D->in[0] + i0) * D->in[1] + i1) * D->in[2] + plo * s2 + off) * D->ldx +
                                         g * D->Cr;
                                dr[nr++] = dy + (((b * D->out[0] + o0) * D->out[1] + o1) * D->out[2] + plo) * D->ldy +
                                           g * D->Co;
                            }
                            if (!nr) continue;
                            for (int64_t blk = 0; blk < D->nblk; blk++) {
                                int64_t bw = blk_width(D, blk), nv = (bw + VL - 1) / VL;
                                bp_real *ab = acc + (g * D->nblk + blk) * bstride + tap * D->Cr * nv * VL;
                                for (int r = 0; r < nr; r++) dr[r] += blk * 2 * VL;
                                for (int64_t cb = 0, ci0 = 0; cb < ncb; cb++) {
                                    int64_t nci = (D->Cr - ci0) / (ncb - cb);
                                    dw_args A = {.xrows = xr, .drows = dr, .nrows = nr, .npos = phi - plo + 1,
                                                 .xs = s2 * D->ldx, .ds = D->ldy, .acc = ab + ci0 * nv * VL};
                                    for (int r = 0; r < nr; r++) xr[r] += ci0;
                                    kdw_any((int)nci, (int)nv, bw == nv * VL, bw, &A);
                                    for (int r = 0; r < nr; r++) xr[r] -= ci0;
                                    ci0 += nci;
                                }
                                for (int r = 0; r < nr; r++) dr[r] -= blk * 2 * VL;
                            }
                        }
                    }
            }
        }
        free(xr);
    }
    add_parts(D, dw, dbias, parts, max_threads, !st);
    return st;
}

/* ------------------------------------------- dw for one input channel
 *
 * With one input channel per group (a first layer on one-channel volumes)
 * the kernel above would keep a single (ci, co) accumulator chain per tap and
 * wait on FMA latency. Here the taps take the place of the input channels:
 * for one output row, every tap t = (a, b, c) reads the zero-padded input row
 * of (a, b) at position n*s2 + c*d2, so
 *   acc[t, :] += sum_n xrow_t[n*s2 + c_t*d2] * dy[n, :]
 * keeps NT tap accumulators (of NV vectors) in registers against one load of
 * dy per position. Taps whose row falls in the padding read a zero row. */
#define REP27(M) REP16(M) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24) M(25) M(26)
#define MAXT1 (NREGS == 32 ? 27 : 12) /* taps per call, one output vector */
#define MAXT2 (NREGS == 32 ? 13 : 6)  /* taps per call, two output vectors */

typedef struct dw1_args {
    const bp_real *const *xt;   /* per tap: its padded row at position c*d2 */
    const bp_real *dy;          /* the output row at the block's first channel */
    int64_t npos, s2, ldy, ncols;
    bp_real *acc;               /* NT consecutive taps of NV vectors */
} dw1_args;

static inline __attribute__((always_inline)) void kdw1(const int NT, const int NV, const dw1_args *A)
{
    vr *dst = (vr *)A->acc;
    const vr Z = {0};
#define TDECL(i) DW_DECL(i, NT)
    REP27(TDECL)
#undef TDECL
    const bool full = A->ncols == NV * VL;
    for (int64_t n = 0; n < A->npos; n++) {
        vr d0, d1 = Z;
        load_dy(A->dy + n * A->ldy, NV, full, A->ncols, &d0, &d1);
        const int64_t xo = n * A->s2;
#define TSTEP(i) DW_STEP(i, NT, A->xt[i][xo])
        REP27(TSTEP)
#undef TSTEP
    }
#define TSTORE(i) DW_STORE(i, NT)
    REP27(TSTORE)
#undef TSTORE
}

#define KDW1_FN(N)                                                                          \
    static void kdw1_##N##_1(const dw1_args *A) { kdw1(N <= MAXT1 ? N : 1, 1, A); }         \
    static void kdw1_##N##_2(const dw1_args *A) { kdw1(N <= MAXT2 ? N : 1, 2, A); }
#define KDW1_ROW(N) kdw1_##N##_1, kdw1_##N##_2,
#define KDW1_ALL(M) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) \
    M(15) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) M(24) M(25) M(26) M(27)
KDW1_ALL(KDW1_FN)
static void (*const kdw1_table[])(const dw1_args *) = {KDW1_ALL(KDW1_ROW)};

/* dw (taps, 1, G*Co) += sum over positions of x (x) dy for the forward
 * geometry D with Cr = 1. Parallel over output rows (b, o0, o1); per-thread
 * packed sums added in thread order, as in direct_dw. Scratch per thread:
 * k0*k1 + 1 padded rows of Lp reals. */
static bp_status direct_dw1(const dconv *D, bp_real *dw, bp_real *dbias, const bp_real *dy, const bp_real *x)
{
    int max_threads = omp_get_max_threads();
    const int64_t items = D->B * D->out[0] * D->out[1], kab = D->k[0] * D->k[1];
    const int64_t Lp = (D->out[2] - 1) * D->s[2] + (D->k[2] - 1) * D->d[2] + 1, Lps = (Lp + VL - 1) / VL * VL;
    const int64_t bstride = D->taps * 2 * VL;
    const size_t part = part_bytes(D);
    bp_real **parts = calloc((size_t)max_threads, sizeof *parts);
    if (!parts) return BP_ENOMEM;
    bp_status st = BP_OK;
#pragma omp parallel num_threads(max_threads)
    {
        const bp_real **xt = malloc(sizeof(*xt) * (size_t)D->taps);
        bp_real *rows = bp_alloc_aligned(sizeof(bp_real) * (size_t)((kab + 1) * Lps));
        bp_real *acc = bp_alloc_aligned(part);
        bool ok = xt && rows && acc;
        if (!ok) {
#pragma omp critical(bp_conv_err)
            st = BP_ENOMEM;
        } else {
            memset(acc, 0, part);
            memset(rows + kab * Lps, 0, sizeof(bp_real) * (size_t)Lps); /* the zero row */
        }
        parts[omp_get_thread_num()] = acc;
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (!ok) continue;
            int64_t o1 = it % D->out[1], t = it / D->out[1], o0 = t % D->out[0], b = t / D->out[0];
            const bp_real *dyrow = dy + ((b * D->out[0] + o0) * D->out[1] + o1) * D->out[2] * D->ldy;
            if (dbias) sum_rows(acc + bias_off(D), dyrow, D->out[2], D->ldy, D->ldy);
            for (int64_t g = 0; g < D->G; g++) {
                for (int64_t a = 0; a < D->k[0]; a++)
                    for (int64_t bb = 0; bb < D->k[1]; bb++) {
                        int64_t i0 = o0 * D->s[0] - D->lo[0] + a * D->d[0];
                        int64_t i1 = o1 * D->s[1] - D->lo[1] + bb * D->d[1];
                        const bp_real *row = rows + kab * Lps; /* padding: the zero row */
                        if (i0 >= 0 && i0 < D->in[0] && i1 >= 0 && i1 < D->in[1]) {
                            bp_real *buf = rows + (a * D->k[1] + bb) * Lps;
                            pack_row(D, x + ((b * D->in[0] + i0) * D->in[1] + i1) * D->in[2] * D->ldx, g, buf, Lp, 1);
                            row = buf;
                        }
                        for (int64_t c = 0; c < D->k[2]; c++) xt[(a * D->k[1] + bb) * D->k[2] + c] = row + c * D->d[2];
                    }
                for (int64_t blk = 0; blk < D->nblk; blk++) {
                    int64_t bw = blk_width(D, blk), nv = (bw + VL - 1) / VL;
                    int64_t maxt = nv == 1 ? MAXT1 : MAXT2, nch = (D->taps + maxt - 1) / maxt;
                    bp_real *ab = acc + (g * D->nblk + blk) * bstride;
                    for (int64_t ch = 0, t0 = 0; ch < nch; ch++) {
                        int64_t nt = (D->taps - t0) / (nch - ch); /* even split of the rest */
                        dw1_args A = {.xt = xt + t0, .dy = dyrow + g * D->Co + blk * 2 * VL, .npos = D->out[2],
                                      .s2 = D->s[2], .ldy = D->ldy, .ncols = bw, .acc = ab + t0 * nv * VL};
                        kdw1_table[(nt - 1) * 2 + nv - 1](&A);
                        t0 += nt;
                    }
                }
            }
        }
        free(xt);
        bp_free_aligned(rows);
    }
    add_parts(D, dw, dbias, parts, max_threads, !st);
    return st;
}

/* OpenBLAS's own threads inside our OpenMP regions would oversubscribe the
 * cores: bpc runs it single-threaded, and leaves it so (as ops_matmul.c). */
static void blas_single_thread(void)
{
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

/* y = conv(x, w) + bias by im2col + GEMM; parallel over (sample, tile) pairs. */
static bp_status conv_forward_gemm(const geom *g, bp_real *y, const bp_real *x, const bp_real *w, const bp_real *bias)
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
                im2col_tile(g, xb, grp, p0, np, col);
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

/* Accumulates dx (if non-NULL) and dw (K x Cout, if non-NULL) from dy by GEMM + col2im.
 * Parallel over samples, so each thread's col2im writes only its own samples;
 * each thread sums dw in its own buffer, added in thread order at the end. */
static bp_status conv_backward_gemm(const geom *g, bp_real *dx, bp_real *dw, const bp_real *dy, const bp_real *x,
                                    const bp_real *w)
{
    const int64_t ntiles = (g->Pout + g->P - 1) / g->P;
    const size_t tile_bytes = sizeof(bp_real) * (size_t)(g->P * g->K);
    const size_t dw_bytes = sizeof(bp_real) * (size_t)(g->K * g->Cout);
    bp_status st = BP_OK;
    if (!dx && !dw) return BP_OK;
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
                        im2col_tile(g, xb, grp, p0, np, col);
                        R_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g->K, (int)g->Cog, (int)np, 1, col,
                             (int)g->K, dyb + grp * g->Cog, (int)g->Cout, 1, dwt + grp * g->Cog, (int)g->Cout);
                    }
                    if (dx) {
                        /* dcol (np x K) = dY_g (np x Cog) . W_g^T (Cog x K) */
                        R_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)np, (int)g->K, (int)g->Cog, 1,
                             dyb + grp * g->Cog, (int)g->Cout, w + grp * g->Cog, (int)g->Cout, 0, dcol, (int)g->K);
                        col2im_tile(g, dx + b * g->Pin * g->Cin, grp, p0, np, dcol);
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


/* The direct kernels cover every stride, dilation, padding and group count;
 * they pay off once a group has enough output channels to fill some vector
 * lanes (dw also needs enough input channels, below). dx by the direct kernel needs stride 1 (it is then a plain
 * correlation of dy); strided dx stays on GEMM + col2im. */
static bool direct_ok_fwd(const geom *g) { return g->Cog >= DIRECT_MIN_CH; }
/* The dw kernel keeps (input channel, output vector) pairs in registers; with
 * fewer than 8 of them its FMA chains wait on each other (4-cycle latency,
 * 2 per cycle), and GEMM over im2col tiles does better. */
static bool direct_ok_dw(const geom *g)
{
    int64_t nv = g->Cog > VL ? 2 : 1;
    return direct_ok_fwd(g) && g->Cg * nv >= 8;
}
static bool direct_ok_dx(const geom *g)
{
    return g->Cg >= DIRECT_MIN_CH && g->s[0] == 1 && g->s[1] == 1 && g->s[2] == 1;
}

static dconv dconv_forward(const geom *g)
{
    dconv D = {.B = g->B, .ldx = g->Cin, .Cr = g->Cg, .ldy = g->Cout, .Co = g->Cog, .G = g->G,
               .nblk = (g->Cog + 2 * VL - 1) / (2 * VL), .taps = g->k[0] * g->k[1] * g->k[2]};
    for (int d = 0; d < 3; d++) {
        D.in[d] = g->in[d], D.out[d] = g->out[d], D.lo[d] = g->lo[d];
        D.k[d] = g->k[d], D.s[d] = g->s[d], D.d[d] = g->d[d];
    }
    return D;
}

/* dx[i] = sum_t dy[i + lo - t*d] . w[t]^T for stride 1, i.e. a stride-1
 * correlation of dy with the flipped kernel and low padding (k-1)*d - lo. */
static dconv dconv_dx(const geom *g)
{
    dconv D = {.B = g->B, .ldx = g->Cout, .Cr = g->Cog, .ldy = g->Cin, .Co = g->Cg, .G = g->G,
               .nblk = (g->Cg + 2 * VL - 1) / (2 * VL), .taps = g->k[0] * g->k[1] * g->k[2]};
    for (int d = 0; d < 3; d++) {
        D.in[d] = g->out[d], D.out[d] = g->in[d], D.lo[d] = (g->k[d] - 1) * g->d[d] - g->lo[d];
        D.k[d] = g->k[d], D.s[d] = 1, D.d[d] = g->d[d];
    }
    return D;
}

static bp_status conv_forward(const geom *g, bp_real *y, const bp_real *x, const bp_real *w, const bp_real *bias)
{
    if (!direct_ok_fwd(g)) return conv_forward_gemm(g, y, x, w, bias);
    dconv D = dconv_forward(g);
    bp_real *wp = pack_weights(&D, w, g->Cg, g->Cout, false);
    if (!wp) return bp_fail(BP_ENOMEM, "conv: out of memory for the packed kernel (%lld reals)", (long long)(g->K * g->Cout));
    D.wp = wp;
    bp_status st = direct_fwd(&D, y, x, bias, false);
    bp_free_aligned(wp);
    return st ? bp_fail(st, "conv: out of memory for the per-thread row buffers") : BP_OK;
}

/* dbias += sum of dy over samples and positions: one pass over dy, split
 * into contiguous row ranges per thread, partial sums added in thread order. */
static bp_status conv_dbias(const geom *g, bp_real *dbias, const bp_real *dy)
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
    for (int t = 0; t < max_threads; t++)
        for (int64_t co = 0; co < C; co++) dbias[co] += part[t * Cs + co];
    free(part);
    return BP_OK;
}

/* Accumulates dx, dw (K x Cout) and dbias (each if non-NULL) from dy, each
 * by the direct kernel where it applies and by GEMM otherwise. dx_fresh: dx
 * is uninitialised, and is written rather than accumulated into. */
static bp_status conv_backward(const geom *g, bp_real *dx, bool dx_fresh, bp_real *dw, bp_real *dbias,
                               const bp_real *dy, const bp_real *x, const bp_real *w)
{
    if (dw && (direct_ok_dw(g) || (g->Cg == 1 && direct_ok_fwd(g)))) {
        /* the direct dw kernels also sum dbias, from the dy rows they read */
        dconv D = dconv_forward(g);
        if (g->Cg == 1 ? direct_dw1(&D, dw, dbias, dy, x) : direct_dw(&D, dw, dbias, dy, x))
            return bp_fail(BP_ENOMEM, "conv backward: out of memory for the dw buffers");
        dw = dbias = NULL;
    }
    if (dbias) BP_TRY(conv_dbias(g, dbias, dy));
    if (dx && direct_ok_dx(g)) {
        dconv D = dconv_dx(g);
        bp_real *wp = pack_weights(&D, w, g->Cg, g->Cout, true);
        if (!wp) return bp_fail(BP_ENOMEM, "conv backward: out of memory for the packed kernel");
        D.wp = wp;
        bp_status st = direct_fwd(&D, dx, dy, NULL, !dx_fresh);
        bp_free_aligned(wp);
        if (st) return bp_fail(st, "conv backward: out of memory for the per-thread row buffers");
        dx = NULL;
    }
    if (dx && dx_fresh) memset(dx, 0, sizeof(bp_real) * (size_t)(g->B * g->Pin * g->Cin));
    return conv_backward_gemm(g, dx, dw, dy, x, w);
}

/* ------------------------------------------------------------------ update */

typedef struct conv_ctx {
    geom g;
} conv_ctx;

static bp_status conv_op_backward(const bp_ag_backward_args *a)
{
    const geom *g = &((const conv_ctx *)a->ctx)->g;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_real *dw = a->n_in > 1 && a->din[1] ? bp_tensor_reals(a->din[1]) : NULL;
    bp_real *db = a->n_in > 2 && a->din[2] ? bp_tensor_reals(a->din[2]) : NULL;
    /* dw and db are sums over the batch: they start at zero */
    for (int j = 1; j < a->n_in; j++)
        if (a->din[j]) bp_tensor_zero(a->din[j]);
    return conv_backward(g, dx, dx != NULL, dw, db, bp_tensor_creals(a->dout), bp_tensor_creals(a->in[0]),
                         bp_tensor_creals(a->in[1]));
}

static const bp_ag_op conv_op = {.name = "Conv", .backward = conv_op_backward, .overwrites_grad = true};

static bp_status conv_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_conv *c = (bp_conv *)n;
    const char *who = bp_node_name(n);
    char s[128];
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!x) return bp_fail(BP_EINVAL, "%s: input is NULL", who);
    int nsp = c->n_spatial;
    bool batched = x->ndim == nsp + 2;
    if (!batched && x->ndim != nsp + 1)
        return bp_fail(BP_ESHAPE, "%s: expected %dD input (got %dD input of shape %s)", who, nsp + 2, x->ndim,
                       bp_shape_str(s, sizeof s, x->ndim, x->shape));
    if (x->shape[x->ndim - 1] != c->in_channels)
        return bp_fail(BP_ESHAPE, "%s: input channels=%lld needs to have the same size as in_channels=%lld.", who,
                       (long long)x->shape[x->ndim - 1], (long long)c->in_channels);
    if (x->dtype != BP_REAL_DTYPE)
        return bp_fail(BP_EDTYPE, "%s: expected %s input, got %s", who, bp_dtype_name(BP_REAL_DTYPE),
                       bp_dtype_name(x->dtype));
    geom g = {.B = batched ? x->shape[0] : 1, .Cin = c->in_channels, .Cout = c->out_channels, .G = c->groups};
    g.Cg = g.Cin / g.G;
    g.Cog = g.Cout / g.G;
    int64_t yshape[5];
    int yd = 0;
    if (batched) yshape[yd++] = g.B;
    g.Pin = g.Pout = 1;
    /* Conv1d/2d occupy the last geometry dims (leading ones of size 1), so the
     * innermost spatial dim is always the kernels' contiguous row. */
    for (int e = 0; e < 3; e++) {
        int d = e - (3 - nsp);
        g.k[e] = g.s[e] = g.d[e] = g.in[e] = g.out[e] = 1;
        g.lo[e] = 0;
        if (d >= 0) {
            g.k[e] = c->kernel_size[d];
            g.s[e] = c->stride[d];
            g.d[e] = c->dilation[d];
            g.in[e] = x->shape[(batched ? 1 : 0) + d];
            BP_TRY(bp_conv_out_size(c, d, g.in[e], &g.out[e], &g.lo[e]));
            yshape[yd++] = g.out[e];
        }
        g.Pin *= g.in[e];
        g.Pout *= g.out[e];
    }
    yshape[yd++] = g.Cout;
    g.K = g.k[0] * g.k[1] * g.k[2] * g.Cg;
    g.P = tile_rows(g.K, g.Pout);
    if (g.B == 0 || g.Pout == 0 || g.Pin == 0)
        return bp_fail(BP_ESHAPE, "%s: empty input %s", who, bp_shape_str(s, sizeof s, x->ndim, x->shape));

    bp_tensor *y;
    BP_TRY(bp_ag_empty(&y, yd, yshape));
    bp_status st = conv_forward(&g, bp_tensor_reals(y), bp_tensor_creals(x), bp_tensor_creals(c->w->value),
                                c->b ? bp_tensor_creals(c->b->value) : NULL);
    bp_tensor *in[3] = {x, c->w->value, c->b ? c->b->value : NULL};
    int n_in = c->b ? 3 : 2;
    if (!st && bp_ag_wants(n_in, in)) {
        conv_ctx ctx = {g};
        st = bp_ag_record(y, &conv_op, n_in, in, &ctx, sizeof ctx);
    }
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}
