/* layers/batchnorm_fast.c — the tuned BatchNorm kernels (batchnorm_internal.h).
 *
 * Data is (M, C) row-major, C contiguous. Every kernel is one or two streaming
 * passes over the rows; the work is cut the same way in all of them:
 *
 *   lanes   The inner loops run over L = u*C consecutive elements (u whole rows
 *           when C <= BN_LANES, so even C = 1 or 16 gives a long vectorisable
 *           loop with u independent accumulators per channel); when C is larger,
 *           over tiles of BN_LANES channels of one row. Per-channel parameters
 *           are replicated u times so lane j uses parameter j.
 *   blocks  Fixed row ranges of about BN_BLOCK_ELEMS elements (a multiple of u
 *           rows). A reduction sums each block in lanes (of double for the
 *           statistics, of bp_real for the gradient sums), folds the lanes in
 *           double, and merges blocks in order in double.
 *   chunks  At most BN_MAX_CHUNKS contiguous runs of blocks; a chunk is the unit
 *           of OpenMP work and owns a slot of per-channel partials in the
 *           workspace. Chunks merge in chunk order.
 * Block and chunk boundaries depend only on (M, C), never on the thread count,
 * so 1 and 2 threads give bitwise identical results.
 *
 * Statistics: each block accumulates shifted sums S1 = sum(x - k), S2 =
 * sum((x - k)^2), in double lanes (x widened exactly, S2 by a fused
 * multiply-add where the ISA has one, dfma/VDFMA in simd.h), with k the mean of
 * the chunk so far (the block's first row for a chunk's first block). Then
 * mean_b = k + S1/n and M2_b = S2 - S1^2/n, and blocks merge with Chan's
 * formula. The subtraction loses at most a factor S2/M2_b = 1 + n(k -
 * mean_b)^2/M2_b <= 1 + n of precision when k is one of the block's values
 * ((k - mean_b)^2 <= M2_b), n <= 8192 rows; when k is the mean of the chunk's
 * earlier rows, n(k - mean_b)^2 is of the size of what the merge adds to M2
 * anyway. In double that keeps the error below 1e-12 of the channel's M2, so
 * the float statistics are correct to their last rounding whatever the data (an
 * outlier as the shift, x = 1e4 + N(0,1)). Summing in bp_real lanes instead lost
 * up to n*u = 5e-4 in float when the first row was an outlier; and bp_real lanes
 * with a better shift (each chunk's first block shifted by its own mean from a
 * pre-pass over that block) are not enough either: x - k and the lane sums
 * still round in float, about 2u of the spread in the mean of a few rows and
 * 3u in the variance of 1e4 + N(0,1), above what the tests allow (the reference
 * kernel's double sums). A constant channel has x - k == 0 exactly, so its mean
 * is exact and it normalises to exactly 0.
 *
 * Cost: per register of floats the double lanes take two widenings (two
 * operations each on AVX-512), two subtractions, two additions and two fused
 * multiply-adds, against a subtraction, a multiplication and two additions for
 * the float lanes bpc had before, about 2.5 times the arithmetic. That is
 * hidden behind memory for inputs larger than the caches (bench/batchnorm's
 * shapes) and visible for inputs that fit in L2: a 1 MB training forward takes
 * ~1.5 times as long as with those float lanes (the fused multiply-add, in
 * place of a product and a sum, took back ~5%).
 *
 * Memory traffic per element (4-byte floats): training forward 12 B (read x
 * for the statistics, read x and write y), eval forward 8 B, training backward
 * 20 B (read x and dy for the two sums, read both again and write dx), eval
 * backward 12 B (one pass). The second pass walks the chunks in reverse (rows
 * forward inside each, for the prefetchers), so the rows the first pass touched
 * last, still in cache, are read first. Outputs of 16 MiB and more are written
 * with streaming stores (see BN_STREAM_MIN_BYTES). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "batchnorm_internal.h"
#include "simd.h"

/* The SIMD here is layers/simd.h's: vr vectors of VL reals, whose arithmetic
 * rounds as the plain C loops do (the build never contracts into FMAs), so
 * register strips, streaming stores and plain loops all give the same bits.
 * Two things the plain loops cannot say: non-temporal (streaming) stores for
 * outputs too large to stay in cache (vstream), which skip the
 * read-for-ownership of the output lines and leave the input in L3 for the
 * second pass; and reductions whose accumulators stay in registers. */

/* Outputs of at least this many bytes are streamed: half the 32 MiB L3 this
 * library is tuned on (sysconf reports the host's, not the VM's, share). From
 * there on input and output no longer both fit, and keeping the input cached for
 * the second pass is worth more than leaving the output for the next layer. */
#define BN_STREAM_MIN_BYTES ((size_t)16 << 20)

#define BN_BLOCK_ELEMS 8192 /* target elements per block */
#define BN_MAX_CHUNKS 64    /* units of parallel work and of per-channel partials */
/* Reductions keep their accumulators in registers (strips of BN_SL lanes, each
 * strip a pass over the block) only for inputs up to this size: the strips read
 * the block with a stride, which costs nothing from cache but defeats the
 * prefetchers when the rows stream from DRAM or L3. Same bits either way. */
#define BN_STRIP_MAX_BYTES ((size_t)8 << 20)


static bn_plan plan_shape(int64_t M, int64_t C)
{
    bn_plan p;
    memset(&p, 0, sizeof p);
    p.M = M;
    p.C = C;
    p.u = C <= BN_LANES ? BN_LANES / C : 1;
    p.lp = p.u * C;
    p.tw = min64(C, BN_LANES);
    int64_t groups = BN_BLOCK_ELEMS / p.lp;
    p.rows = p.u * (groups > 0 ? groups : 1);
    p.nblocks = (M + p.rows - 1) / p.rows;
    p.nchunks = min64(p.nblocks, BN_MAX_CHUNKS);
    p.strips = (size_t)(M * C) * sizeof(bp_real) <= BN_STRIP_MAX_BYTES;
    return p;
}

/* Bytes of workspace for a plan; SIZE_MAX when it does not fit a size_t. */
static size_t plan_bytes(const bn_plan *p)
{
    double acc = 2.0 * (double)p->nchunks * (double)p->C * sizeof(double);
    double par = 6.0 * (double)p->lp * sizeof(bp_real);
    if (acc + par > (double)(SIZE_MAX / 2)) return SIZE_MAX;
    return (size_t)(2 * p->nchunks * p->C) * sizeof(double) + (size_t)(6 * p->lp) * sizeof(bp_real);
}

size_t bp__bn_workspace_size(int64_t M, int64_t C)
{
    if (M < 1 || C < 1 || M > INT64_MAX / C) return 0;
    bn_plan p = plan_shape(M, C);
    return plan_bytes(&p);
}

static void plan_bind(bn_plan *p, void *work)
{
    p->acc0 = (double *)work;
    p->acc1 = p->acc0 + p->nchunks * p->C;
    p->par = (bp_real *)(p->acc1 + p->nchunks * p->C);
}

static void chunk_blocks(const bn_plan *p, int64_t ch, int64_t *b0, int64_t *b1)
{
    *b0 = ch * p->nblocks / p->nchunks;
    *b1 = (ch + 1) * p->nblocks / p->nchunks;
}

/* The chunks [lo, hi) of the calling thread of a parallel region: contiguous
 * and even, so the passes over one tensor give each thread the same rows. */
static void thread_chunks(const bn_plan *p, int64_t *lo, int64_t *hi)
{
    int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
    *lo = p->nchunks * t / T;
    *hi = p->nchunks * (t + 1) / T;
}

static void block_rows(const bn_plan *p, int64_t b, int64_t *r0, int64_t *r1)
{
    *r0 = b * p->rows;
    *r1 = min64(*r0 + p->rows, p->M);
}

/* ---------------------------------------------------------------- checks */

static bp_status check_common(const char *who, int64_t M, int64_t C, int64_t min_m, void *work)
{
    if (C < 1) return bp_fail(BP_ESHAPE, "%s: expected C >= 1 channels, got %lld", who, (long long)C);
    if (min_m == 2 && M < 2)
        return bp_fail(BP_EINVAL,
                       "%s: expected more than 1 value per channel when training, got %lld "
                       "(M = %lld rows of C = %lld channels)",
                       who, (long long)M, (long long)M, (long long)C);
    if (M < min_m)
        return bp_fail(BP_ESHAPE, "%s: expected M >= %lld rows, got %lld", who, (long long)min_m,
                       (long long)M);
    if (M > 0 && M > (INT64_MAX / 8) / C)
        return bp_fail(BP_ESHAPE, "%s: M*C overflows, got M = %lld, C = %lld", who, (long long)M,
                       (long long)C);
    if (((uintptr_t)work & 7u) != 0)
        return bp_fail(BP_EINVAL, "%s: work must be 8-byte aligned, got %p", who, work);
    return BP_OK;
}

static bp_status check_eps(const char *who, double eps)
{
    if (!(eps >= 0.0) || !isfinite(eps))
        return bp_fail(BP_EINVAL, "%s: expected a finite eps >= 0, got %g", who, eps);
    return BP_OK;
}


/* Binds the caller's workspace, or allocates one into *owned. */
static bp_status plan_workspace(const char *who, bn_plan *p, void *work, void **owned)
{
    *owned = NULL;
    if (!work) {
        size_t bytes = plan_bytes(p);
        work = bytes == SIZE_MAX ? NULL : malloc(bytes ? bytes : 1);
        if (!work)
            return bp_fail(BP_ENOMEM, "%s: cannot allocate %zu bytes of workspace", who, bytes);
        *owned = work;
    }
    plan_bind(p, work);
    return BP_OK;
}

/* invstd = 1/sqrt(var + eps), 0 when var + eps == 0 (a constant channel with eps 0). */
static double inv_std(double var, double eps)
{
    double d = var + eps;
    return d > 0.0 ? 1.0 / sqrt(d) : 0.0;
}

/* ---------------------------------------------------------------- statistics */

/* s1 += x - k, s2 += (x - k)^2 over L lanes, in double. */
static void lane_stats(const bp_real *restrict xr, const double *restrict k,
                       double *restrict s1, double *restrict s2, int64_t L)
{
    for (int64_t j = 0; j < L; j++) {
        double d = (double)xr[j] - k[j];
        s1[j] += d;
        s2[j] = dfma(s2[j], d, d);
    }
}

/* lane_stats for BN_SL = 4 registers of double lanes over ng lane groups st
 * apart, with the accumulators in registers: the plain loop keeps them in
 * memory and pays two stores per vector. Same operations in the same order
 * (VDFMA rounds as dfma does), so the same bits. */
#define BN_SL (4 * VD)
static void lane_stats_regs(const bp_real *xr, int64_t st, int64_t ng, const double *k,
                            double *s1, double *s2)
{
    vd kv[4], a[4], q[4];
    for (int v = 0; v < 4; v++) {
        memcpy(&kv[v], k + v * VD, sizeof kv[v]);
        memcpy(&a[v], s1 + v * VD, sizeof a[v]);
        memcpy(&q[v], s2 + v * VD, sizeof q[v]);
    }
    for (int64_t g = 0; g < ng; g++, xr += st)
        for (int v = 0; v < 4; v++) {
            vd d = widen(xr + v * VD) - kv[v];
            a[v] += d;
            VDFMA(q[v], d, d);
        }
    for (int v = 0; v < 4; v++) {
        memcpy(s1 + v * VD, &a[v], sizeof a[v]);
        memcpy(s2 + v * VD, &q[v], sizeof q[v]);
    }
}

/* Chan's merge of (nb, mb, qb) into the running (na, *m, *q); q is a sum of squared deviations. */
static void chan_merge(double *m, double *q, int64_t na, double mb, double qb, int64_t nb)
{
    if (na == 0) {
        *m = mb;
        *q = qb;
        return;
    }
    double nt = (double)(na + nb);
    double delta = mb - *m;
    *m += delta * ((double)nb / nt);
    *q += qb + delta * delta * ((double)na * (double)nb / nt);
}

/* One chunk of the statistics: per-channel mean into acc0 and M2 into acc1. */
static void stats_chunk(const bn_plan *p, const bp_real *x, int64_t ch)
{
    const int64_t C = p->C, u = p->u, tw = p->tw;
    double *cm = p->acc0 + ch * C, *cq = p->acc1 + ch * C;
    double k[BN_LANES], s1[BN_LANES], s2[BN_LANES], t1[BN_LANES], t2[BN_LANES];
    int64_t b0, b1, n = 0;
    chunk_blocks(p, ch, &b0, &b1);
    for (int64_t b = b0; b < b1; b++) {
        int64_t r0, r1;
        block_rows(p, b, &r0, &r1);
        const int64_t nb = r1 - r0;
        /* Chan's merge factors, the same for every channel of the block */
        const double inv_nb = 1.0 / (double)nb, f = (double)nb / (double)(n + nb);
        const double g = (double)n * (double)nb / (double)(n + nb);
        for (int64_t c0 = 0; c0 < C; c0 += tw) {
            const int64_t w = min64(tw, C - c0), L = u * w;
            const bp_real *shift = x + r0 * C + c0; /* a chunk's first block: its first row */
            for (int64_t c = 0; n && c < w; c++) t1[c] = cm[c0 + c];
            for (int64_t q = 0; q < u; q++)
                for (int64_t c = 0; c < w; c++) k[q * w + c] = n ? t1[c] : (double)shift[c];
            memset(s1, 0, sizeof(double) * (size_t)L);
            memset(s2, 0, sizeof(double) * (size_t)L);
            int64_t r = r0;
            if (p->strips && L % BN_SL == 0) { /* lanes in registers, strip by strip */
                const int64_t ng = (r1 - r0) / u;
                for (int64_t j = 0; j < L; j += BN_SL)
                    lane_stats_regs(x + r0 * C + c0 + j, u * C, ng, k + j, s1 + j, s2 + j);
                r += ng * u;
            }
            for (; r + u <= r1; r += u) lane_stats(x + r * C + c0, k, s1, s2, L);
            if (r < r1) lane_stats(x + r * C + c0, k, s1, s2, (r1 - r) * w); /* u > 1: w == C */
            /* fold the u lanes of each channel in double, then mean_b and M2_b */
            for (int64_t c = 0; c < w; c++) t1[c] = t2[c] = 0.0;
            for (int64_t q = 0; q < u; q++)
                for (int64_t c = 0; c < w; c++) {
                    t1[c] += s1[q * w + c];
                    t2[c] += s2[q * w + c];
                }
            double *m = cm + c0, *q2 = cq + c0;
            for (int64_t c = 0; c < w; c++) {
                double mb = k[c] + t1[c] * inv_nb;
                double qb = t2[c] - t1[c] * t1[c] * inv_nb;
                qb = qb > 0.0 ? qb : 0.0;
                if (n == 0) {
                    m[c] = mb;
                    q2[c] = qb;
                } else {
                    double delta = mb - m[c];
                    m[c] += delta * f;
                    q2[c] += qb + delta * delta * g;
                }
            }
        }
        n += nb;
    }
}

/* Batch mean and M2 (sum of squared deviations) of every channel, in double,
 * left in acc0[0..C) and acc1[0..C). M >= 1. */
static void batch_moments(const bn_plan *p, const bp_real *x)
{
    const int64_t C = p->C;
#pragma omp parallel if (p->M * C >= BN_PAR_MIN)
    {
        int64_t lo, hi;
        thread_chunks(p, &lo, &hi);
        for (int64_t ch = lo; ch < hi; ch++) stats_chunk(p, x, ch);
    }
    int64_t b0, b1, r0, r1, e0, e1;
    chunk_blocks(p, 0, &b0, &b1);
    block_rows(p, b1 - 1, &r0, &r1);
    int64_t n = r1;
    for (int64_t ch = 1; ch < p->nchunks; ch++) {
        chunk_blocks(p, ch, &b0, &b1);
        block_rows(p, b0, &r0, &r1);
        block_rows(p, b1 - 1, &e0, &e1);
        int64_t nb = e1 - r0;
        for (int64_t c = 0; c < C; c++)
            chan_merge(&p->acc0[c], &p->acc1[c], n, p->acc0[ch * C + c], p->acc1[ch * C + c], nb);
        n += nb;
    }
}

/* batch_moments, then acc1 holds the biased variance M2 / M. */
static void batch_stats(const bn_plan *p, const bp_real *x)
{
    batch_moments(p, x);
    for (int64_t c = 0; c < p->C; c++) p->acc1[c] /= (double)p->M;
}

/* ---------------------------------------------------------------- elementwise */


/* y = (x - m)*a + b over L lanes, optionally clamped at 0. */
static void lane_apply(bp_real *y, const bp_real *x, const bp_real *restrict m,
                       const bp_real *restrict a, const bp_real *restrict b, int64_t L, int relu)
{
    if (relu) {
        for (int64_t j = 0; j < L; j++) {
            bp_real v = bn_affine(x[j], m[j], a[j], b[j]);
            y[j] = v < 0 ? (bp_real)0 : v;
        }
    } else {
        for (int64_t j = 0; j < L; j++) y[j] = bn_affine(x[j], m[j], a[j], b[j]);
    }
}

/* Whether the kernels stream an (M, C) output at out: it must be large, and every
 * lane group must start on a vector boundary (lp a multiple of the vector width). */
static int use_stream(const bn_plan *p, const void *out)
{
    return VSTREAM && out && (uintptr_t)out % (VL * sizeof(bp_real)) == 0 && p->lp % VL == 0 &&
           (size_t)(p->M * p->C) * sizeof(bp_real) >= BN_STREAM_MIN_BYTES;
}

/* lane_apply with streaming stores; y is vector-aligned. */
static void lane_apply_nt(bp_real *y, const bp_real *x, const bp_real *restrict m,
                          const bp_real *restrict a, const bp_real *restrict b, int64_t L,
                          int relu)
{
    int64_t j = 0;
    for (; j + VL <= L; j += VL) {
        vr v = (*(const vru *)(x + j) - *(const vru *)(m + j)) * *(const vru *)(a + j) + *(const vru *)(b + j);
        if (relu) v = (vr)((vri)v & ~(v < 0)); /* v < 0 ? 0 : v, NaN kept */
        vstream(y + j, &v);
    }
    lane_apply(y + j, x + j, m + j, a + j, b + j, L - j, relu);
}

/* Rows [r0, r1) of a second pass: the chunk's rows, or all rows when M is small. */
static void chunk_rows(const bn_plan *p, int64_t ch, int64_t *r0, int64_t *r1)
{
    int64_t b0, b1, e0;
    chunk_blocks(p, ch, &b0, &b1);
    block_rows(p, b0, r0, &e0);
    block_rows(p, b1 - 1, &e0, r1);
}

/* y = [relu]((x - m)*a + b) for all rows, with m, a, b replicated (lp each).
 * Each thread takes the chunks it had in the statistics pass (thread_chunks);
 * after that pass (reverse = 1) it goes through them in reverse order, so the
 * rows it read last, still in its own L2 and in L3, are read first; inside a
 * chunk the rows go forward, which the hardware prefetchers follow. */
static void apply_all(const bn_plan *p, bp_real *y, const bp_real *x, const bp_real *m,
                      const bp_real *a, const bp_real *b, int relu, int reverse)
{
    const int64_t C = p->C, u = p->u;
    const int stream = use_stream(p, y);
#pragma omp parallel if (p->M * C >= BN_PAR_MIN)
    {
        int64_t lo, hi;
        thread_chunks(p, &lo, &hi);
        for (int64_t i = lo; i < hi; i++) {
            int64_t r0, r1;
            chunk_rows(p, reverse ? lo + hi - 1 - i : i, &r0, &r1);
            for (int64_t r = r0; r < r1; r += u) {
                if (stream)
                    lane_apply_nt(y + r * C, x + r * C, m, a, b, min64(u, r1 - r) * C, relu);
                else
                    lane_apply(y + r * C, x + r * C, m, a, b, min64(u, r1 - r) * C, relu);
            }
            if (stream) vstream_fence(); /* order the streamed lines before anyone reads y */
        }
    }
}

/* Fills the replicated (mean, alpha = invstd*scale, bias) arrays at par[0..3*lp).
 * The relu backward recomputes bn(x) from the same three arrays, so its mask
 * matches the forward bit for bit. */
static void affine_params(const bn_plan *p, const bp_real *mean, const bp_real *invstd,
                          const bp_real *scale, const bp_real *bias)
{
    bp_real *pm = p->par, *pa = p->par + p->lp, *pb = p->par + 2 * p->lp;
    for (int64_t q = 0; q < p->u; q++)
        for (int64_t c = 0; c < p->C; c++) {
            int64_t j = q * p->C + c;
            pm[j] = mean[c];
            pa[j] = scale ? invstd[c] * scale[c] : invstd[c];
            pb[j] = bias ? bias[c] : (bp_real)0;
        }
}

/* ---------------------------------------------------------------- forward */

/* The batch statistics of x into mean, invstd and (if not NULL) the biased
 * var, after the checks every training forward makes; p is planned and bound. */
static bp_status train_stats(const char *who, bn_plan *p, bp_real *mean, bp_real *invstd, bp_real *var,
                             const bp_real *x, double eps)
{
    batch_stats(p, x);
    for (int64_t c = 0; c < p->C; c++) {
        bp_real m = (bp_real)p->acc0[c], v = (bp_real)p->acc1[c];
        bp_real is = (bp_real)inv_std(p->acc1[c], eps);
        if (!isfinite(m) || !isfinite(v) || !isfinite(is))
            return bp_fail(BP_ENUMERIC,
                           "%s: channel %lld has a non-finite batch statistic (mean %g, "
                           "var %g, invstd %g); the input holds NaN/Inf or overflows",
                           who, (long long)c, p->acc0[c], p->acc1[c], (double)is);
    }
    for (int64_t c = 0; c < p->C; c++) {
        mean[c] = (bp_real)p->acc0[c];
        invstd[c] = (bp_real)inv_std(p->acc1[c], eps);
        if (var) var[c] = (bp_real)p->acc1[c];
    }
    return BP_OK;
}

/* The part every training forward shares: checks, plan, workspace (*owned to
 * free, also after a failure), statistics, and the (mean, alpha, bias)
 * arrays in p->par. */
static bp_status train_begin(const char *who, bn_plan *p, void **owned, bp_real *mean, bp_real *invstd,
                             bp_real *var, const bp_real *x, const bp_real *scale, const bp_real *bias, int64_t M,
                             int64_t C, double eps, void *work)
{
    *owned = NULL;
    BN_NEED(who, mean);
    BN_NEED(who, invstd);
    BN_NEED(who, x);
    BP_TRY(check_common(who, M, C, 2, work));
    BP_TRY(check_eps(who, eps));
    *p = plan_shape(M, C);
    BP_TRY(plan_workspace(who, p, work, owned));
    BP_TRY(train_stats(who, p, mean, invstd, var, x, eps));
    affine_params(p, mean, invstd, scale, bias);
    return BP_OK;
}

static bp_status forward_train(const char *who, bp_real *y, bp_real *mean, bp_real *invstd,
                               bp_real *var, const bp_real *x, const bp_real *scale,
                               const bp_real *bias, int64_t M, int64_t C, double eps, void *work,
                               int relu)
{
    BN_NEED(who, y);
    bn_plan p;
    void *owned;
    bp_status st = train_begin(who, &p, &owned, mean, invstd, var, x, scale, bias, M, C, eps, work);
    if (!st) apply_all(&p, y, x, p.par, p.par + p.lp, p.par + 2 * p.lp, relu, 1);
    free(owned);
    return st;
}

bp_status bp__bn_forward_train(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var,
                              const bp_real *x, const bp_real *scale, const bp_real *bias,
                              int64_t M, int64_t C, double eps, void *work)
{
    return forward_train("bp__bn_forward_train", y, mean, invstd, var, x, scale, bias, M, C, eps,
                         work, 0);
}

bp_status bp__bn_relu_forward_train(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var,
                                   const bp_real *x, const bp_real *scale, const bp_real *bias,
                                   int64_t M, int64_t C, double eps, void *work)
{
    return forward_train("bp__bn_relu_forward_train", y, mean, invstd, var, x, scale, bias, M, C,
                         eps, work, 1);
}

/* momentum*running + (1 - momentum)*stat, in double, rounded once. */
static bp_real retain(double momentum, bp_real running, double stat)
{
    return (bp_real)(momentum * running + (1.0 - momentum) * stat);
}

bp_status bp__bn_update_running(bp_real *running_mean, bp_real *running_var, const bp_real *mean,
                               const bp_real *var, int64_t M, int64_t C, double momentum)
{
    const char *who = "bp__bn_update_running";
    BN_NEED(who, running_mean);
    BN_NEED(who, running_var);
    BN_NEED(who, mean);
    BN_NEED(who, var);
    BP_TRY(check_common(who, M, C, 2, NULL));
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return bp_fail(BP_EINVAL, "%s: expected momentum in [0, 1], got %g", who, momentum);
    const double bessel = (double)M / (double)(M - 1);
    /* All channels are checked before any is stored: a biased variance near the
     * float maximum can overflow once multiplied by M/(M-1), and a running
     * statistic that turned Inf would poison every later eval forward. */
    for (int64_t c = 0; c < C; c++) {
        bp_real rm = retain(momentum, running_mean[c], (double)mean[c]);
        bp_real rv = retain(momentum, running_var[c], (double)var[c] * bessel);
        if (!isfinite(rm) || !isfinite(rv))
            return bp_fail(BP_ENUMERIC,
                           "%s: channel %lld's running statistics would become non-finite (mean %g, "
                           "var %g from batch mean %g, biased var %g, M = %lld); nothing was updated",
                           who, (long long)c, (double)rm, (double)rv, (double)mean[c], (double)var[c],
                           (long long)M);
    }
    for (int64_t c = 0; c < C; c++) {
        running_mean[c] = retain(momentum, running_mean[c], (double)mean[c]);
        running_var[c] = retain(momentum, running_var[c], (double)var[c] * bessel);
    }
    return BP_OK;
}

/* Checks the running statistics and fills par[0..lp) with invstd (not replicated, C values)
 * computed from them; BP_ENUMERIC names a bad channel. */
static bp_status eval_invstd(const char *who, const bp_real *rm, const bp_real *rv, double eps,
                             int64_t C, bp_real *is)
{
    for (int64_t c = 0; c < C; c++) {
        if (!isfinite(rm[c]) || !isfinite(rv[c]) || !(rv[c] >= 0))
            return bp_fail(BP_ENUMERIC,
                           "%s: channel %lld has running_mean %g, running_var %g; expected finite "
                           "values and running_var >= 0",
                           who, (long long)c, (double)rm[c], (double)rv[c]);
        is[c] = (bp_real)inv_std((double)rv[c], eps);
        if (!isfinite(is[c]))
            return bp_fail(BP_ENUMERIC, "%s: channel %lld has 1/sqrt(running_var + eps) = %g",
                           who, (long long)c, (double)is[c]);
    }
    return BP_OK;
}

static bp_status forward_eval(const char *who, bp_real *y, const bp_real *x, const bp_real *running_mean,
                              const bp_real *running_var, const bp_real *scale, const bp_real *bias,
                              int64_t M, int64_t C, double eps, void *work, int relu)
{
    BN_NEED(who, y);
    BN_NEED(who, x);
    BN_NEED(who, running_mean);
    BN_NEED(who, running_var);
    BP_TRY(check_common(who, M, C, 0, work));
    BP_TRY(check_eps(who, eps));
    if (M == 0) return BP_OK;
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    bp_real *is = p.par + 3 * p.lp; /* C values, before the replicated arrays use it */
    bp_status st = eval_invstd(who, running_mean, running_var, eps, C, is);
    if (st == BP_OK) {
        affine_params(&p, running_mean, is, scale, bias);
        apply_all(&p, y, x, p.par, p.par + p.lp, p.par + 2 * p.lp, relu, 0);
    }
    free(owned);
    return st;
}

bp_status bp__bn_forward_eval(bp_real *y, const bp_real *x, const bp_real *running_mean,
                             const bp_real *running_var, const bp_real *scale, const bp_real *bias,
                             int64_t M, int64_t C, double eps, void *work)
{
    return forward_eval("bp__bn_forward_eval", y, x, running_mean, running_var, scale, bias, M, C,
                        eps, work, 0);
}

bp_status bp__bn_relu_forward_eval(bp_real *y, const bp_real *x, const bp_real *running_mean,
                                  const bp_real *running_var, const bp_real *scale,
                                  const bp_real *bias, int64_t M, int64_t C, double eps,
                                  void *work)
{
    return forward_eval("bp__bn_relu_forward_eval", y, x, running_mean, running_var, scale, bias,
                        M, C, eps, work, 1);
}

/* ---------------------------------------------------------------- backward */

/* Over L lanes: dz = dy (relu: where bn(x) > 0, else 0); s1 += dz, s2 += dz*(x - m);
 * and dx = dz*a when dx is not NULL (the eval backward, where a = invstd*scale). */
static void lane_sums(bp_real *dx, const bp_real *dy, const bp_real *x,
                      const bp_real *restrict m, const bp_real *restrict a,
                      const bp_real *restrict b, bp_real *restrict s1, bp_real *restrict s2,
                      int64_t L, int relu)
{
    if (relu && dx) {
        for (int64_t j = 0; j < L; j++) {
            bp_real xm = x[j] - m[j];
            bp_real dz = bn_affine(x[j], m[j], a[j], b[j]) > 0 ? dy[j] : (bp_real)0;
            dx[j] = dz * a[j];
            s1[j] += dz;
            s2[j] += dz * xm;
        }
    } else if (relu) {
        for (int64_t j = 0; j < L; j++) {
            bp_real xm = x[j] - m[j];
            bp_real dz = bn_affine(x[j], m[j], a[j], b[j]) > 0 ? dy[j] : (bp_real)0;
            s1[j] += dz;
            s2[j] += dz * xm;
        }
    } else if (dx) {
        for (int64_t j = 0; j < L; j++) {
            bp_real dz = dy[j], xm = x[j] - m[j];
            dx[j] = dz * a[j];
            s1[j] += dz;
            s2[j] += dz * xm;
        }
    } else {
        for (int64_t j = 0; j < L; j++) {
            bp_real dz = dy[j];
            s1[j] += dz;
            s2[j] += dz * (x[j] - m[j]);
        }
    }
}

/* lane_sums without dx over BN_SLG = 4 vectors of lanes of ng lane groups st apart, with the
 * accumulators in registers (as lane_stats_regs); the same operations in the
 * same order as lane_sums. */
#define BN_SLG (4 * VL)
static void lane_sums_regs(const bp_real *dy, const bp_real *x, int64_t st, int64_t ng,
                           const bp_real *m, const bp_real *a, const bp_real *b, bp_real *s1,
                           bp_real *s2, int relu)
{
    vr mv[4], s[4], q[4];
    for (int v = 0; v < 4; v++) {
        mv[v] = *(const vru *)(m + v * VL);
        s[v] = *(const vru *)(s1 + v * VL);
        q[v] = *(const vru *)(s2 + v * VL);
    }
    for (int64_t g = 0; g < ng; g++, dy += st, x += st)
        for (int v = 0; v < 4; v++) {
            vr xm = *(const vru *)(x + v * VL) - mv[v], d = *(const vru *)(dy + v * VL);
            if (relu) { /* dz = dy where bn(x) = (x - m)*a + b > 0 */
                vr z = xm * *(const vru *)(a + v * VL) + *(const vru *)(b + v * VL);
                d = (vr)((vri)d & (z > 0));
            }
            s[v] += d;
            q[v] += d * xm;
        }
    for (int v = 0; v < 4; v++) {
        *(vru *)(s1 + v * VL) = s[v];
        *(vru *)(s2 + v * VL) = q[v];
    }
}

/* One chunk of the gradient sums: acc0 = sum(dz), acc1 = sum(dz*(x - mean)) per channel,
 * with the replicated (mean, alpha, bias) at par[0..3*lp). Writes dx when given. */
static void sums_chunk(const bn_plan *p, int64_t ch, bp_real *dx, const bp_real *dy,
                       const bp_real *x, int relu)
{
    const int64_t C = p->C, u = p->u, tw = p->tw, lp = p->lp;
    const bp_real *pm = p->par, *pa = p->par + lp, *pb = p->par + 2 * lp;
    double *c1 = p->acc0 + ch * C, *c2 = p->acc1 + ch * C;
    bp_real s1[BN_LANES], s2[BN_LANES];
    int64_t b0, b1;
    chunk_blocks(p, ch, &b0, &b1);
    for (int64_t c = 0; c < C; c++) c1[c] = c2[c] = 0.0;
    for (int64_t b = b0; b < b1; b++) {
        int64_t r0, r1;
        block_rows(p, b, &r0, &r1);
        for (int64_t c0 = 0; c0 < C; c0 += tw) {
            const int64_t w = min64(tw, C - c0);
            memset(s1, 0, sizeof(bp_real) * (size_t)(u * w));
            memset(s2, 0, sizeof(bp_real) * (size_t)(u * w));
            int64_t r = r0;
            if (p->strips && !dx && (u * w) % BN_SLG == 0) { /* lanes in registers */
                const int64_t ng = (r1 - r0) / u, off = r0 * C + c0;
                for (int64_t j = 0; j < u * w; j += BN_SLG)
                    lane_sums_regs(dy + off + j, x + off + j, u * C, ng, pm + c0 + j, pa + c0 + j,
                                   pb + c0 + j, s1 + j, s2 + j, relu);
                r += ng * u;
            }
            for (; r < r1; r += u) {
                int64_t off = r * C + c0;
                lane_sums(dx ? dx + off : NULL, dy + off, x + off, pm + c0, pa + c0, pb + c0, s1,
                          s2, min64(u, r1 - r) * w, relu);
            }
            for (int64_t c = 0; c < w; c++) {
                double t1 = 0.0, t2 = 0.0;
                for (int64_t q = 0; q < u; q++) {
                    t1 += (double)s1[q * w + c];
                    t2 += (double)s2[q * w + c];
                }
                c1[c0 + c] += t1;
                c2[c0 + c] += t2;
            }
        }
    }
}

/* Runs sums_chunk over every chunk and leaves the totals in acc0[0..C), acc1[0..C). */
static void grad_sums(const bn_plan *p, bp_real *dx, const bp_real *dy, const bp_real *x, int relu)
{
    const int64_t C = p->C;
#pragma omp parallel if (p->M * C >= BN_PAR_MIN)
    {
        int64_t lo, hi;
        thread_chunks(p, &lo, &hi);
        for (int64_t ch = lo; ch < hi; ch++) sums_chunk(p, ch, dx, dy, x, relu);
    }
    for (int64_t ch = 1; ch < p->nchunks; ch++)
        for (int64_t c = 0; c < C; c++) {
            p->acc0[c] += p->acc0[ch * C + c];
            p->acc1[c] += p->acc1[ch * C + c];
        }
}

/* dx = dz*k1 + (x - m)*k2 + k3 over L lanes, dz as in lane_sums. */
static void lane_dx(bp_real *dx, const bp_real *dy, const bp_real *x, const bp_real *restrict m,
                    const bp_real *restrict a, const bp_real *restrict b,
                    const bp_real *restrict k1, const bp_real *restrict k2,
                    const bp_real *restrict k3, int64_t L, int relu)
{
    if (relu) {
        for (int64_t j = 0; j < L; j++) {
            bp_real xm = x[j] - m[j];
            bp_real dz = bn_affine(x[j], m[j], a[j], b[j]) > 0 ? dy[j] : (bp_real)0;
            dx[j] = dz * k1[j] + xm * k2[j] + k3[j];
        }
    } else {
        for (int64_t j = 0; j < L; j++) dx[j] = dy[j] * k1[j] + (x[j] - m[j]) * k2[j] + k3[j];
    }
}

/* lane_dx with streaming stores; dx is vector-aligned. */
static void lane_dx_nt(bp_real *dx, const bp_real *dy, const bp_real *x,
                       const bp_real *restrict m, const bp_real *restrict a,
                       const bp_real *restrict b, const bp_real *restrict k1,
                       const bp_real *restrict k2, const bp_real *restrict k3, int64_t L,
                       int relu)
{
    int64_t j = 0;
    for (; j + VL <= L; j += VL) {
        vr xm = *(const vru *)(x + j) - *(const vru *)(m + j), dz = *(const vru *)(dy + j);
        if (relu) {
            vr z = xm * *(const vru *)(a + j) + *(const vru *)(b + j);
            dz = (vr)((vri)dz & (z > 0));
        }
        vr v = dz * *(const vru *)(k1 + j) + xm * *(const vru *)(k2 + j) + *(const vru *)(k3 + j);
        vstream(dx + j, &v);
    }
    lane_dx(dx + j, dy + j, x + j, m + j, a + j, b + j, k1 + j, k2 + j, k3 + j, L - j, relu);
}

/* The dx coefficients k1 = g, k2 = -g*invstd^2*sdzxm/n, k3 = -g*sdz/n with
 * g = invstd*scale, replicated u times at par[3*lp .. 6*lp), so that
 * dz*k1 + (x - mean)*k2 + k3 = g*(dz - sdz/n - xhat*invstd*sdzxm/n). n is the
 * count the sums ran over (M, or the group's rows for cross-replica sums). */
static void dx_coefs(const bn_plan *p, const bp_real *invstd, const bp_real *scale, const double *sdz,
                     const double *sdzxm, int64_t n)
{
    const int64_t C = p->C, lp = p->lp;
    bp_real *k1 = p->par + 3 * lp, *k2 = p->par + 4 * lp, *k3 = p->par + 5 * lp;
    for (int64_t c = 0; c < C; c++) {
        double is = (double)invstd[c], sc = scale ? (double)scale[c] : 1.0;
        double g = sc * is;
        k1[c] = (bp_real)g;
        k2[c] = (bp_real)(-g * is * is * sdzxm[c] / (double)n);
        k3[c] = (bp_real)(-g * sdz[c] / (double)n);
    }
    for (int64_t q = 1; q < p->u; q++) {
        memcpy(k1 + q * C, k1, sizeof(bp_real) * (size_t)C);
        memcpy(k2 + q * C, k2, sizeof(bp_real) * (size_t)C);
        memcpy(k3 + q * C, k3, sizeof(bp_real) * (size_t)C);
    }
}

/* dx = dz*k1 + (x - mean)*k2 + k3 for all rows, with (mean, alpha, bias) and
 * the coefficients of dx_coefs at p->par. Each thread takes its chunks of the
 * sums pass, last (cached) first. */
static void dx_pass(const bn_plan *p, bp_real *dx, const bp_real *dy, const bp_real *x, int relu)
{
    const int64_t C = p->C, lp = p->lp, u = p->u;
    const bp_real *pm = p->par, *pa = p->par + lp, *pb = p->par + 2 * lp;
    const bp_real *k1 = p->par + 3 * lp, *k2 = p->par + 4 * lp, *k3 = p->par + 5 * lp;
    const int stream = use_stream(p, dx);
#pragma omp parallel if (p->M * C >= BN_PAR_MIN)
    {
        int64_t lo, hi;
        thread_chunks(p, &lo, &hi);
        for (int64_t ch = hi - 1; ch >= lo; ch--) {
            int64_t r0, r1;
            chunk_rows(p, ch, &r0, &r1);
            for (int64_t r = r0; r < r1; r += u) {
                if (stream)
                    lane_dx_nt(dx + r * C, dy + r * C, x + r * C, pm, pa, pb, k1, k2, k3, min64(u, r1 - r) * C,
                               relu);
                else
                    lane_dx(dx + r * C, dy + r * C, x + r * C, pm, pa, pb, k1, k2, k3, min64(u, r1 - r) * C,
                            relu);
            }
            if (stream) vstream_fence();
        }
    }
}

static bp_status backward_train(const char *who, bp_real *dx, bp_real *dscale, bp_real *dbias,
                                const bp_real *dy, const bp_real *x, const bp_real *mean,
                                const bp_real *invstd, const bp_real *scale, const bp_real *bias,
                                int64_t M, int64_t C, void *work, int relu)
{
    BN_NEED(who, dx);
    BN_NEED(who, dy);
    BN_NEED(who, x);
    BN_NEED(who, mean);
    BN_NEED(who, invstd);
    BP_TRY(check_common(who, M, C, 1, work));
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    affine_params(&p, mean, invstd, scale, bias);
    grad_sums(&p, NULL, dy, x, relu);
    /* dx = invstd*scale * (dz - sum(dz)/M - (x - mean)*invstd^2 * sum(dz*(x - mean))/M) */
    dx_coefs(&p, invstd, scale, p.acc0, p.acc1, M);
    for (int64_t c = 0; c < C; c++) {
        if (dscale) dscale[c] = (bp_real)((double)dscale[c] + (double)invstd[c] * p.acc1[c]);
        if (dbias) dbias[c] = (bp_real)((double)dbias[c] + p.acc0[c]);
    }
    dx_pass(&p, dx, dy, x, relu);
    free(owned);
    return BP_OK;
}

bp_status bp__bn_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                               const bp_real *x, const bp_real *mean, const bp_real *invstd,
                               const bp_real *scale, int64_t M, int64_t C, void *work)
{
    return backward_train("bp__bn_backward_train", dx, dscale, dbias, dy, x, mean, invstd, scale,
                          NULL, M, C, work, 0);
}

bp_status bp__bn_relu_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias,
                                    const bp_real *dy, const bp_real *x, const bp_real *mean,
                                    const bp_real *invstd, const bp_real *scale,
                                    const bp_real *bias, int64_t M, int64_t C, void *work)
{
    return backward_train("bp__bn_relu_backward_train", dx, dscale, dbias, dy, x, mean, invstd,
                          scale, bias, M, C, work, 1);
}

static bp_status backward_eval(const char *who, bp_real *dx, bp_real *dscale, bp_real *dbias,
                               const bp_real *dy, const bp_real *x, const bp_real *running_mean,
                               const bp_real *running_var, const bp_real *scale, const bp_real *bias,
                               int64_t M, int64_t C, double eps, void *work, int relu)
{
    BN_NEED(who, dy);
    BN_NEED(who, running_mean);
    BN_NEED(who, running_var);
    if (relu || dscale) BN_NEED(who, x);
    BP_TRY(check_common(who, M, C, 0, work));
    BP_TRY(check_eps(who, eps));
    if (M == 0 || (!dx && !dscale && !dbias)) return BP_OK;
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    bp_real *is = p.par + 5 * p.lp; /* C values, apart from the replicated arrays */
    bp_status st = eval_invstd(who, running_mean, running_var, eps, C, is);
    if (st == BP_OK) {
        affine_params(&p, running_mean, is, scale, bias);
        /* Without x (no relu, no dscale) the (x - mean) sums are unused: read dy in its place. */
        grad_sums(&p, dx, dy, x ? x : dy, relu);
        for (int64_t c = 0; c < C; c++) {
            if (dscale) dscale[c] = (bp_real)((double)dscale[c] + (double)is[c] * p.acc1[c]);
            if (dbias) dbias[c] = (bp_real)((double)dbias[c] + p.acc0[c]);
        }
    }
    free(owned);
    return st;
}

bp_status bp__bn_backward_eval(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                              const bp_real *x, const bp_real *running_mean,
                              const bp_real *running_var, const bp_real *scale, int64_t M,
                              int64_t C, double eps, void *work)
{
    return backward_eval("bp__bn_backward_eval", dx, dscale, dbias, dy, x, running_mean,
                         running_var, scale, NULL, M, C, eps, work, 0);
}

bp_status bp__bn_relu_backward_eval(bp_real *dx, bp_real *dscale, bp_real *dbias,
                                   const bp_real *dy, const bp_real *x,
                                   const bp_real *running_mean, const bp_real *running_var,
                                   const bp_real *scale, const bp_real *bias, int64_t M,
                                   int64_t C, double eps, void *work)
{
    return backward_eval("bp__bn_relu_backward_eval", dx, dscale, dbias, dy, x, running_mean,
                         running_var, scale, bias, M, C, eps, work, 1);
}

/* -------------------------------------- for batchnorm_relu_pool_fast.c */

bn_plan bp__bn_plan_shape(int64_t M, int64_t C) { return plan_shape(M, C); }

bp_status bp__bn_check_common(const char *who, int64_t M, int64_t C, int64_t min_m, void *work)
{
    return check_common(who, M, C, min_m, work);
}

bp_status bp__bn_plan_workspace(const char *who, bn_plan *p, void *work, void **owned)
{
    return plan_workspace(who, p, work, owned);
}

bp_status bp__bn_train_begin(const char *who, bn_plan *p, void **owned, bp_real *mean, bp_real *invstd, bp_real *var,
                             const bp_real *x, const bp_real *scale, const bp_real *bias, int64_t M, int64_t C,
                             double eps, void *work)
{
    return train_begin(who, p, owned, mean, invstd, var, x, scale, bias, M, C, eps, work);
}

void bp__bn_affine_params(const bn_plan *p, const bp_real *mean, const bp_real *invstd, const bp_real *scale,
                          const bp_real *bias)
{
    affine_params(p, mean, invstd, scale, bias);
}

/* -------------------------------------- for cross-replica BatchNorm (batchnorm_sync.c) */

bp_status bp__bn_local_moments(double *mean, double *m2, const bp_real *x, int64_t M, int64_t C, void *work)
{
    const char *who = "bp__bn_local_moments";
    BN_NEED(who, mean);
    BN_NEED(who, m2);
    BP_TRY(check_common(who, M, C, 0, work));
    if (M == 0) {
        for (int64_t c = 0; c < C; c++) mean[c] = m2[c] = 0.0;
        return BP_OK;
    }
    BN_NEED(who, x);
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    batch_moments(&p, x);
    memcpy(mean, p.acc0, sizeof(double) * (size_t)C);
    memcpy(m2, p.acc1, sizeof(double) * (size_t)C);
    free(owned);
    return BP_OK;
}

bp_status bp__bn_normalize(bp_real *y, const bp_real *x, const bp_real *mean, const bp_real *invstd,
                           const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, bool relu, void *work)
{
    const char *who = "bp__bn_normalize";
    BP_TRY(check_common(who, M, C, 0, work));
    if (M == 0) return BP_OK;
    BN_NEED(who, y);
    BN_NEED(who, x);
    BN_NEED(who, mean);
    BN_NEED(who, invstd);
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    affine_params(&p, mean, invstd, scale, bias);
    apply_all(&p, y, x, p.par, p.par + p.lp, p.par + 2 * p.lp, relu, 1);
    free(owned);
    return BP_OK;
}

bp_status bp__bn_local_grad_sums(double *sdz, double *sdzxm, const bp_real *dy, const bp_real *x, const bp_real *mean,
                                 const bp_real *invstd, const bp_real *scale, const bp_real *bias, int64_t M,
                                 int64_t C, bool relu, void *work)
{
    const char *who = "bp__bn_local_grad_sums";
    BN_NEED(who, sdz);
    BN_NEED(who, sdzxm);
    BP_TRY(check_common(who, M, C, 0, work));
    if (M == 0) {
        for (int64_t c = 0; c < C; c++) sdz[c] = sdzxm[c] = 0.0;
        return BP_OK;
    }
    BN_NEED(who, dy);
    BN_NEED(who, x);
    BN_NEED(who, mean);
    BN_NEED(who, invstd);
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    affine_params(&p, mean, invstd, scale, bias);
    grad_sums(&p, NULL, dy, x, relu);
    memcpy(sdz, p.acc0, sizeof(double) * (size_t)C);
    memcpy(sdzxm, p.acc1, sizeof(double) * (size_t)C);
    free(owned);
    return BP_OK;
}

bp_status bp__bn_grad_dx(bp_real *dx, const bp_real *dy, const bp_real *x, const bp_real *mean, const bp_real *invstd,
                         const bp_real *scale, const bp_real *bias, const double *sdz, const double *sdzxm, int64_t N,
                         int64_t M, int64_t C, bool relu, void *work)
{
    const char *who = "bp__bn_grad_dx";
    BP_TRY(check_common(who, M, C, 0, work));
    if (M == 0) return BP_OK;
    if (N < M) return bp_fail(BP_EINVAL, "%s: expected N >= M = %lld, got %lld", who, (long long)M, (long long)N);
    BN_NEED(who, dx);
    BN_NEED(who, dy);
    BN_NEED(who, x);
    BN_NEED(who, mean);
    BN_NEED(who, invstd);
    BN_NEED(who, sdz);
    BN_NEED(who, sdzxm);
    bn_plan p = plan_shape(M, C);
    void *owned;
    BP_TRY(plan_workspace(who, &p, work, &owned));
    affine_params(&p, mean, invstd, scale, bias);
    dx_coefs(&p, invstd, scale, sdz, sdzxm, N);
    dx_pass(&p, dx, dy, x, relu);
    free(owned);
    return BP_OK;
}
