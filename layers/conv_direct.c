/* layers/conv_direct.c — Conv's direct channels-last kernels: register-blocked
 * forward (also dx for stride 1) and dw, vectorised over output channels
 * (see conv_internal.h for the shapes, bpc/conv.h for when they are used). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <bpc/error.h>
#include <bpc/tensor.h>
#include "conv_internal.h"
#include "simd.h"

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
 * flipped, transposed kernel), and a second kernel
 * computes dw as outer products x[pos, ci] * dy[pos, co-vector] summed over
 * positions, with (ci, co) accumulators in registers.
 *
 * Taps outside the input along dims 0 and 1 are skipped; along dim 2 the
 * forward kernel reads zero-padded, channel-chunked copies of the input rows
 * (see bp__conv_direct_run), and the dw kernel clips each tap's position range. */

/* Register blocks: positions (forward) or input channels (dw) per call, for
 * one or two output-channel vectors; leaves registers for the weights. */
#define MAXB1 (NREGS == 32 ? 16 : 12)
#define MAXB2 (NREGS == 32 ? 12 : 6)

static int64_t blk_width(const bp__conv_direct *D, int64_t blk)
{
    int64_t w = D->Co - blk * 2 * VL;
    return w < 2 * VL ? w : 2 * VL;
}

/* Packs w (taps, Cg, Cout) for D. Forward (flip false): reduction over ci,
 * outputs co. For dx (flip true): taps reversed, reduction over co, outputs ci. */
bp_real *bp__conv_pack_weights(const bp__conv_direct *D, const bp_real *w, int64_t Cg, int64_t Cout, bool flip)
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
} fwd_args;

/* Register blocks are written out as named variables (a<p>0, a<p>1) rather
 * than an array: GCC keeps such arrays on the stack. Unused ones (p >= NB,
 * a compile-time constant in each instantiation) are dead code. */
#define REP16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)


static inline __attribute__((always_inline)) void fwd_store(const fwd_args *A, int p, int NV, vr v0, vr v1)
{
    bp_real *yp = A->y + p * A->ldy;
    if (A->ncols == NV * VL) {
        if (A->bias) {
            v0 += *(const vru *)A->bias;
            if (NV > 1) v1 += *(const vru *)(A->bias + VL);
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
        yp[j] = t;
    }
}

/* y[p, 0:ncols] = bias + sum_{r, c, ci} x_r[p*s2 + c*d2, ci] * wrows[r][c, ci, :]
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
static void pack_row(const bp__conv_direct *D, const bp_real *xrow, int64_t g, bp_real *buf, int64_t Lp, int64_t nq)
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

/* y = conv(x) (+ bias), as described by D. Parallel over output rows
 * (b, o0, o1); every output is written by one thread. The input rows a
 * row of outputs needs (k0*k1 of them, fewer where dims 0/1 fall in the
 * padding) are used from a zero-padded, channel-chunked copy of
 * Lp = (out2-1)*s2 + (k2-1)*d2 + 1 positions by ceil(Cr/VL) chunks of VL
 * reals, which removes both the padding tests and the per-position pointers
 * from the kernel. Each thread keeps S0*S1*G such copies, S_d = min((k_d-1)*d_d + 1,
 * in_d) (the span of the kernel, or the input when it is shorter), the copy of
 * input row (i0, i1) of group g in slot ((i0 mod S0)*S1 + i1 mod S1)*G + g: the
 * rows one output row needs lie within a span and inside the input, so they
 * never share a slot, and the next output row finds the k1 - s1 rows it shares
 * with this one still there, so each input row is copied about k0 times per
 * pass. (Bounding S_d by the input keeps a huge dilation from asking for
 * slots that no row could fill.)
 * Scratch per thread: S0*S1*G*Lp*ceil(Cr/VL)*VL reals. */
bp_status bp__conv_direct_run(const bp__conv_direct *D, bp_real *y, const bp_real *x, const bp_real *bias)
{
    const int64_t items = D->B * D->out[0] * D->out[1], kab = D->k[0] * D->k[1];
    const int64_t span0 = (D->k[0] - 1) * D->d[0] + 1, span1 = (D->k[1] - 1) * D->d[1] + 1;
    const int64_t S0 = span0 < D->in[0] ? span0 : D->in[0], S1 = span1 < D->in[1] ? span1 : D->in[1];
    const int64_t nslot = S0 * S1 * D->G;
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
                              .xs = D->s[2] * ps, .xt = D->d[2] * ps, .ldy = D->ldy};
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
static int64_t bias_off(const bp__conv_direct *D) { return D->G * D->nblk * D->taps * D->Cr * 2 * VL; }
static size_t part_bytes(const bp__conv_direct *D) { return sizeof(bp_real) * (size_t)(bias_off(D) + D->G * D->Co); }

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
static void add_parts(const bp__conv_direct *D, bp_real *dw, bp_real *dbias, bp_real **parts, int nparts, bool ok)
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
static bp_status direct_dw(const bp__conv_direct *D, bp_real *dw, bp_real *dbias, const bp_real *dy, const bp_real *x)
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
static bp_status direct_dw1(const bp__conv_direct *D, bp_real *dw, bp_real *dbias, const bp_real *dy, const bp_real *x)
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

/* ---------------------------------------------------------- entry points */

/* Below this many output channels per group, most lanes would idle. */
#define DIRECT_MIN_CH 4

/* The padded row the forward kernel copies each input row into,
 * (out2-1)*s2 + (k2-1)*d2 + 1 positions: the direct kernels apply when it is
 * not mostly padding (at most twice the row plus 256 positions); a dilation
 * far beyond the input would make every thread's copies mostly zeros, and
 * the GEMM path, which skips taps outside the input, does that better. */
static bool row_fits(int64_t in2, int64_t out2, int64_t k2, int64_t s2, int64_t d2)
{
    int64_t Lp = (out2 - 1) * s2 + (k2 - 1) * d2 + 1;
    return Lp <= 2 * in2 + 256;
}

/* The direct kernels cover every stride, dilation, padding and group count;
 * they pay off once a group has enough output channels to fill some vector
 * lanes (dw also needs enough input channels, below). dx by the direct
 * kernel needs stride 1 (it is then a plain correlation of dy); strided dx
 * stays on GEMM + col2im. */
bool bp__conv_direct_ok_fwd(const bp__conv_geom *g)
{
    return g->Cog >= DIRECT_MIN_CH && row_fits(g->in[2], g->out[2], g->k[2], g->s[2], g->d[2]);
}

/* The dw kernel keeps (input channel, output vector) pairs in registers; with
 * fewer than 8 of them its FMA chains wait on each other (4-cycle latency,
 * 2 per cycle), and GEMM over im2col tiles does better, except with one input
 * channel per group, where the taps-as-accumulators kernel takes over. */
bool bp__conv_direct_ok_dw(const bp__conv_geom *g)
{
    int64_t nv = g->Cog > VL ? 2 : 1;
    return bp__conv_direct_ok_fwd(g) && (g->Cg * nv >= 8 || g->Cg == 1);
}

bool bp__conv_direct_ok_dx(const bp__conv_geom *g)
{
    return g->Cg >= DIRECT_MIN_CH && g->s[0] == 1 && g->s[1] == 1 && g->s[2] == 1 &&
           row_fits(g->out[2], g->in[2], g->k[2], 1, g->d[2]);
}

bp__conv_direct bp__conv_direct_forward_view(const bp__conv_geom *g)
{
    bp__conv_direct D = {.B = g->B, .ldx = g->Cin, .Cr = g->Cg, .ldy = g->Cout, .Co = g->Cog, .G = g->G,
                         .nblk = (g->Cog + 2 * VL - 1) / (2 * VL), .taps = g->k[0] * g->k[1] * g->k[2]};
    for (int d = 0; d < 3; d++) {
        D.in[d] = g->in[d], D.out[d] = g->out[d], D.lo[d] = g->lo[d];
        D.k[d] = g->k[d], D.s[d] = g->s[d], D.d[d] = g->d[d];
    }
    return D;
}

bp__conv_direct bp__conv_direct_dx_view(const bp__conv_geom *g)
{
    bp__conv_direct D = {.B = g->B, .ldx = g->Cout, .Cr = g->Cog, .ldy = g->Cin, .Co = g->Cg, .G = g->G,
                         .nblk = (g->Cg + 2 * VL - 1) / (2 * VL), .taps = g->k[0] * g->k[1] * g->k[2]};
    for (int d = 0; d < 3; d++) {
        D.in[d] = g->out[d], D.out[d] = g->in[d], D.lo[d] = (g->k[d] - 1) * g->d[d] - g->lo[d];
        D.k[d] = g->k[d], D.s[d] = 1, D.d[d] = g->d[d];
    }
    return D;
}

bp_status bp__conv_forward_direct(const bp__conv_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                                  const bp_real *bias)
{
    bp__conv_direct D = bp__conv_direct_forward_view(g);
    bp_real *wp = bp__conv_pack_weights(&D, w, g->Cg, g->Cout, false);
    if (!wp)
        return bp_fail(BP_ENOMEM, "conv: out of memory for the packed kernel (%lld reals)", (long long)(g->K * g->Cout));
    D.wp = wp;
    bp_status st = bp__conv_direct_run(&D, y, x, bias);
    bp_free_aligned(wp);
    return st ? bp_fail(st, "conv: out of memory for the per-thread row buffers") : BP_OK;
}

bp_status bp__conv_dx_direct(const bp__conv_geom *g, bp_real *dx, const bp_real *dy, const bp_real *w)
{
    bp__conv_direct D = bp__conv_direct_dx_view(g);
    bp_real *wp = bp__conv_pack_weights(&D, w, g->Cg, g->Cout, true);
    if (!wp) return bp_fail(BP_ENOMEM, "conv backward: out of memory for the packed kernel");
    D.wp = wp;
    bp_status st = bp__conv_direct_run(&D, dx, dy, NULL);
    bp_free_aligned(wp);
    return st ? bp_fail(st, "conv backward: out of memory for the per-thread row buffers") : BP_OK;
}

bp_status bp__conv_dw_direct(const bp__conv_geom *g, bp_real *dw, bp_real *db, const bp_real *dy, const bp_real *x)
{
    /* the kernels add per-thread sums into dw and db */
    memset(dw, 0, sizeof(bp_real) * (size_t)(g->K * g->Cout));
    if (db) memset(db, 0, sizeof(bp_real) * (size_t)g->Cout);
    bp__conv_direct D = bp__conv_direct_forward_view(g);
    if (g->Cg == 1 ? direct_dw1(&D, dw, db, dy, x) : direct_dw(&D, dw, db, dy, x))
        return bp_fail(BP_ENOMEM, "conv backward: out of memory for the dw buffers");
    return BP_OK;
}
