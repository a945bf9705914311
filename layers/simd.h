/* layers/simd.h — the one SIMD vocabulary of bpc's kernels; private to
 * layers/ (not installed).
 *
 * Written with GCC vector extensions, so that one source serves AVX-512, AVX2
 * and generic builds (the valgrind build has no AVX-512), and arithmetic on a
 * vector rounds exactly as the same arithmetic on its lanes one by one (the
 * build never contracts a*b+c: -ffp-contract=off), which is what lets a fast
 * kernel promise the same bits as its plain loop. Two families of types:
 *
 *   vr / vru   one register of the build's ISA (VBYTES bytes, VL reals):
 *              the convolution kernels, which block on registers (NREGS);
 *   pvr / pvru 64 bytes whatever the ISA (PVL reals), with pvi positions:
 *              kernels over channel rows (pooling, the fused BatchNorm).
 *
 * The "u" types are unaligned, aliasing views for loads and stores into user
 * tensors: `*(const vru *)p` is an unaligned load. Intrinsics appear only in
 * this header, for what vector extensions cannot say (a fused multiply-add,
 * a streaming store and its fence). */
#ifndef BPC_LAYERS_SIMD_H
#define BPC_LAYERS_SIMD_H

#include <stdint.h>
#include <string.h>
#include <bpc/config.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

/* ---- one native register ---- */
#if defined(__AVX512F__)
#define VBYTES 64
#define NREGS 32
#elif defined(__AVX__)
#define VBYTES 32
#define NREGS 16
#else
#define VBYTES 16
#define NREGS 16
#endif
#define VL ((int)(VBYTES / sizeof(bp_real)))
typedef bp_real vr __attribute__((vector_size(VBYTES)));
typedef bp_real vru __attribute__((vector_size(VBYTES), aligned(sizeof(bp_real)), may_alias));

/* acc + a * b as one fused multiply-add where the ISA has one (one rounding:
 * a kernel that uses it promises its own bits, not those of a*b+c). */
#if defined(__AVX512F__) && !defined(BP_REAL_DOUBLE)
#define VFMA(acc, a, b) ((acc) = _mm512_fmadd_ps((a), (b), (acc)))
#elif defined(__AVX512F__)
#define VFMA(acc, a, b) ((acc) = _mm512_fmadd_pd((a), (b), (acc)))
#elif defined(__FMA__) && defined(__AVX__) && !defined(BP_REAL_DOUBLE)
#define VFMA(acc, a, b) ((acc) = _mm256_fmadd_ps((a), (b), (acc)))
#elif defined(__FMA__) && defined(__AVX__)
#define VFMA(acc, a, b) ((acc) = _mm256_fmadd_pd((a), (b), (acc)))
#else
#define VFMA(acc, a, b) ((acc) = (acc) + (a) * (b))
#endif

/* Lanes of the comparison masks of vr (a < b gives a vri of 0 / -1). */
#if defined(BP_REAL_DOUBLE)
typedef int64_t vri __attribute__((vector_size(VBYTES)));
#else
typedef int32_t vri __attribute__((vector_size(VBYTES)));
#endif

/* *p = *v with a non-temporal (streaming) store where the ISA has one, which
 * writes the line without reading it first and keeps it out of the caches;
 * p must be VBYTES-aligned. VSTREAM says whether it streams (a plain store
 * otherwise). After a run of them, vstream_fence() orders the streamed lines
 * before anything another thread does after the parallel region. */
#if defined(__AVX512F__) || defined(__AVX__)
#define VSTREAM 1
#else
#define VSTREAM 0
#endif
static inline __attribute__((always_inline)) void vstream(bp_real *p, const vr *v)
{
#if defined(__AVX512F__) && defined(BP_REAL_DOUBLE)
    _mm512_stream_pd(p, (__m512d)*v);
#elif defined(__AVX512F__)
    _mm512_stream_ps(p, (__m512)*v);
#elif defined(__AVX__) && defined(BP_REAL_DOUBLE)
    _mm256_stream_pd(p, (__m256d)*v);
#elif defined(__AVX__)
    _mm256_stream_ps(p, (__m256)*v);
#else
    *(vru *)p = *v;
#endif
}

static inline __attribute__((always_inline)) void vstream_fence(void)
{
#if VSTREAM
    _mm_sfence();
#endif
}

/* One register of doubles (VD lanes), and VD reals that widen into one: the
 * reductions that accumulate bp_real data in double (float: half a register
 * of floats per register of doubles; double: the same register). */
#define VD ((int)(VBYTES / sizeof(double)))
typedef double vd __attribute__((vector_size(VBYTES)));
typedef bp_real vdru __attribute__((vector_size(VBYTES / sizeof(double) * sizeof(bp_real)), aligned(sizeof(bp_real)),
                                    may_alias));

/* acc + a*b on vd registers (VDFMA) and on one double (dfma), as one fused
 * multiply-add where the ISA has one and as a product and a sum where it does
 * not: the two always round alike, so a register loop and its plain tail loop
 * give the same bits in every build. */
#if defined(__AVX512F__)
#define VDFMA(acc, a, b) ((acc) = (vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(acc)))
#define DFMA_FUSED 1
#elif defined(__FMA__) && defined(__AVX__)
#define VDFMA(acc, a, b) ((acc) = (vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(acc)))
#define DFMA_FUSED 1
#else
#define VDFMA(acc, a, b) ((acc) = (acc) + (a) * (b))
#define DFMA_FUSED 0
#endif
static inline __attribute__((always_inline)) double dfma(double acc, double a, double b)
{
#if DFMA_FUSED
    return __builtin_fma(a, b, acc);
#else
    return acc + a * b;
#endif
}

/* The VD reals at p, unaligned, as doubles (exact). */
static inline __attribute__((always_inline)) vd widen(const bp_real *p)
{
    return __builtin_convertvector(*(const vdru *)p, vd);
}

/* Every lane = s (a broadcast; one instruction where the ISA has it). */
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

/* ---- 64-byte channel vectors ---- */

/* Vectors of 64 bytes over channels, and a flat-position vector of as many
 * lanes with the element width of the comparison masks. */
#if defined(BP_REAL_DOUBLE)
typedef int64_t pidx;
#else
typedef int32_t pidx;
#endif
#define PVL ((int)(64 / sizeof(bp_real)))
typedef bp_real pvr __attribute__((vector_size(64)));
typedef bp_real pvru __attribute__((vector_size(64), aligned(sizeof(bp_real)), may_alias));
typedef pidx pvi __attribute__((vector_size(64)));

/* arg <-> position vectors: one plain copy when the lanes are int32 (float).
 * Vectors go by pointer: by value, 64-byte vectors change the calling
 * convention between builds with and without AVX-512 (GCC's -Wpsabi). */
static inline __attribute__((always_inline)) void load_idx(pvi *v, const int32_t *a)
{
    if (sizeof(pidx) == sizeof(int32_t))
        memcpy(v, a, sizeof *v);
    else
        for (int j = 0; j < PVL; j++) (*v)[j] = a[j];
}

static inline __attribute__((always_inline)) void store_idx(int32_t *a, const pvi *v)
{
    if (sizeof(pidx) == sizeof(int32_t))
        memcpy(a, v, sizeof *v);
    else
        for (int j = 0; j < PVL; j++) a[j] = (int32_t)(*v)[j];
}

/* One step of a max over positions, PVL channels: m, a take xv, pos where xv
 * is larger or NaN, and a NaN, once in, stays (XLA's max propagates NaN). */
static inline __attribute__((always_inline)) void max_take(pvr *m, pvi *a, const pvr *xv, pidx pos)
{
    pvi take = (*m == *m) & ~(*xv <= *m);
    *m = (pvr)(((pvi)*xv & take) | ((pvi)*m & ~take));
    *a = (pos & take) | (*a & ~take);
}

/* ---- bfloat16 products with float32 sums (AVX512-BF16) ----
 * Only where the compiler can build them (BPC_HAVE_BF16) and in the float
 * flavour. Every function here carries BF16_TARGET, whatever -march says: a
 * kernel that uses them is a BF16_TARGET function too (so they inline) and
 * runs only after bp_bf16_available() said the CPU has the instructions.
 * A bf16 is a float's top 16 bits (8 significand bits: unit roundoff 2^-8);
 * two adjacent bf16 (a "pair", one uint32_t, the lower-addressed in the low
 * half) are what one lane of vdpbf16ps multiplies. */
#if defined(BPC_HAVE_BF16) && !defined(BP_REAL_DOUBLE)
#include <immintrin.h>
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define BF16_LANES 16 /* float32 sums per register, bf16 pairs per register */
typedef __m512 vbf_acc;  /* 16 float32 sums */
typedef __m512bh vbf_pairs; /* 16 bf16 pairs */

/* f rounded to bf16, to nearest even (NaN stays a quiet NaN): the bits. */
static inline uint16_t bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline BF16_TARGET __attribute__((always_inline)) vbf_acc vbf_zero(void)
{
    return _mm512_setzero_ps();
}

/* acc[l] + p.lo * w[l].lo + p.hi * w[l].hi for the 16 lanes l: one pair p of
 * x (broadcast) against 16 pairs of weights, products exact, sums in float32. */
static inline BF16_TARGET __attribute__((always_inline)) vbf_acc vbf_dot(vbf_acc acc, uint32_t p, vbf_pairs w)
{
    return _mm512_dpbf16_ps(acc, (vbf_pairs)_mm512_set1_epi32((int)p), w);
}

/* The 16 pairs at p (64-byte aligned). */
static inline BF16_TARGET __attribute__((always_inline)) vbf_pairs vbf_load(const uint32_t *p)
{
    return (vbf_pairs)_mm512_load_si512((const void *)p);
}

/* dst[0..n) = src[0..n) rounded to bf16 (to nearest even), 32 at a time. */
static inline BF16_TARGET void vbf_convert(uint16_t *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)h);
    }
    for (; i < n; i++) dst[i] = bf16_round(src[i]);
}

/* y[0..n) = acc (+ bias[0..n) when bias is non-NULL), n <= 16 (masked). */
static inline BF16_TARGET __attribute__((always_inline)) void vbf_store(float *y, vbf_acc acc, const float *bias,
                                                                          int n)
{
    __mmask16 m = (__mmask16)((1u << n) - 1u);
    if (bias) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, bias));
    _mm512_mask_storeu_ps(y, m, acc);
}

/* Pairs of two float rows: d[l] = bf16(lo[l]) | bf16(hi[l]) << 16 (to
 * nearest even) for the n <= 16 lanes read, zeros past them and for a NULL
 * row; the nw <= 16 lanes d[0..nw) written. The dw kernel's pairs of
 * adjacent positions, one 16-channel vector of each. */
static inline BF16_TARGET __attribute__((always_inline)) void vbf_pair_rows(uint32_t *d, const float *lo,
                                                                             const float *hi, int n, int nw)
{
    const __mmask16 m = (__mmask16)((1u << n) - 1u), mw = (__mmask16)((1u << nw) - 1u);
    __m512 l = lo ? _mm512_maskz_loadu_ps(m, lo) : _mm512_setzero_ps();
    __m512 h = hi ? _mm512_maskz_loadu_ps(m, hi) : _mm512_setzero_ps();
    __m512i both = (__m512i)_mm512_cvtne2ps_pbh(h, l); /* halves 0..15: lo's, 16..31: hi's */
    const __m512i zip = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    _mm512_mask_storeu_epi32((void *)d, mw, _mm512_permutexvar_epi16(zip, both));
}
#endif

#endif
