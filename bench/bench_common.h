/* bench/bench_common.h — timing helpers shared by the benchmark programs, and
 * the machine limits they compare against (measured in the same run, at the
 * same thread count, so that no kernel can pass 100% of them). */
#ifndef BPC_BENCH_COMMON_H
#define BPC_BENCH_COMMON_H

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "simd.h" /* layers/: the kernels' own vector types and VFMA */

/* Monotonic wall-clock time in milliseconds. */
static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of n samples (sorts them in place). */
static inline double bench_median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return t[n / 2];
}

/* OpenBLAS sgemm 1024^3 at `threads` OpenBLAS threads, best of 3, in GFLOP/s.
 * A reference rate, not a limit: bpc's direct convolution kernels beat it.
 * Call it before bpc's first GEMM when threads > 1: bpc then sets OpenBLAS to
 * one thread for the process, and a later measurement at 2 threads is not
 * what it claims (bench/conv3d once printed 194% "of sgemm" that way). */
static inline double bench_sgemm_gflops(int threads)
{
    const int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0;
    }
    for (int i = 0; i < n * n; i++) a[i] = (float)(i % 97) * 1e-3f, b[i] = (float)(i % 89) * 1e-3f, c[i] = 0;
    int prev = openblas_get_num_threads();
    openblas_set_num_threads(threads);
    double best = 1e30;
    for (int k = 0; k < 4; k++) { /* the first run warms up */
        double t0 = bench_now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = bench_now_ms() - t0;
        if (k && t < best) best = t;
    }
    openblas_set_num_threads(prev);
    free(a), free(b), free(c);
    return 2.0 * n * n * n / best / 1e6;
}

/* The FLOP limit of `threads` cores, measured in this run: every OpenMP
 * thread (the runtime bpc's kernels use, at the same count) runs 12
 * independent chains of fused multiply-adds on native registers (layers/simd.h:
 * VL floats each; 12 chains cover 2 FMA ports of latency up to 6), with no
 * memory traffic. Best of 5 timed region walls, in GFLOP/s (2 per FMA lane).
 * No kernel can run float32 multiply-adds faster than this: it is the
 * denominator of every "of FMA peak" a bench prints. */
static inline double bench_fma_peak_gflops(int threads)
{
    const long iters = 4L << 20;
    double best = 1e30;
    float sink = 0;
    for (int k = 0; k < 6; k++) { /* the first run wakes the threads and the clocks */
        double t0 = bench_now_ms();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            vr a, b, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
            for (int j = 0; j < VL; j++) {
                a[j] = 1e-7f, b[j] = 0.5f;
                c0[j] = c1[j] = c2[j] = c3[j] = c4[j] = c5[j] = (float)j;
                c6[j] = c7[j] = c8[j] = c9[j] = c10[j] = c11[j] = (float)-j;
            }
            for (long i = 0; i < iters; i++) {
                VFMA(c0, a, b), VFMA(c1, a, b), VFMA(c2, a, b), VFMA(c3, a, b), VFMA(c4, a, b), VFMA(c5, a, b);
                VFMA(c6, a, b), VFMA(c7, a, b), VFMA(c8, a, b), VFMA(c9, a, b), VFMA(c10, a, b), VFMA(c11, a, b);
            }
            vr s = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
            for (int j = 0; j < VL; j++) sink += s[j];
        }
        double t = bench_now_ms() - t0;
        if (k && t < best) best = t;
    }
    if (sink == 42.0f) printf(" "); /* keeps the result alive */
    return 2.0 * VL * 12 * (double)iters * threads / best / 1e6;
}

/* The last-level cache the DRAM limit is meant to stay clear of (the
 * machine's L3 where the C library reports it, else 32 MiB). */
#ifdef _SC_LEVEL3_CACHE_SIZE
#define BENCH_L3_BYTES (sysconf(_SC_LEVEL3_CACHE_SIZE) > 0 ? (double)sysconf(_SC_LEVEL3_CACHE_SIZE) : 32.0 * (1 << 20))
#else
#define BENCH_L3_BYTES (32.0 * (1 << 20))
#endif

/* The DRAM limit of `threads` threads, measured in this run, in GB/s: the best
 * of two streams over three arrays of the L3's size each (at least 64 MiB, at
 * most 1 GiB), so that the last-level cache holds at most a third, best of 5:
 *   - a read-only sum of three arrays (12 bytes per element);
 *   - the triad a[i] = b[i] + s*c[i] with regular stores, counted as the 16
 *     bytes per element that DRAM moves (each stored line is first read, the
 *     write-allocate); counting 12 lets a kernel with streaming stores pass
 *     "100%" without being faster than memory.
 * The data is first touched by the thread that streams it. Kernels whose data
 * fits in the L3 are not bound by this: compare only tensors well above it. */
static inline double bench_dram_gbs(int threads)
{
    double bytes = BENCH_L3_BYTES;
    bytes = bytes < 64.0 * (1 << 20) ? 64.0 * (1 << 20) : bytes > 1024.0 * (1 << 20) ? 1024.0 * (1 << 20) : bytes;
    const long n = (long)(bytes / sizeof(float)) / 64 * 64;
    float *a = aligned_alloc(64, sizeof(float) * n), *b = aligned_alloc(64, sizeof(float) * n),
          *c = aligned_alloc(64, sizeof(float) * n);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2;
    double best_read = 1e30, best_triad = 1e30;
    float sink = 0;
    for (int k = 0; k < 5; k++) {
        double t0 = bench_now_ms();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            /* four independent vector sums per array pass: the adds never wait on each other */
            vr s[4] = {{0}, {0}, {0}, {0}};
            const long nv = n / VL;
#pragma omp for schedule(static)
            for (long i = 0; i < nv; i += 4)
                for (int r = 0; r < 4 && i + r < nv; r++)
                    s[r] += ((const vr *)a)[i + r] + ((const vr *)b)[i + r] + ((const vr *)c)[i + r];
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < VL; j++) sink += s[r][j];
        }
        double t = bench_now_ms() - t0;
        if (t < best_read) best_read = t;
        t0 = bench_now_ms();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + 1.5f * c[i];
        t = bench_now_ms() - t0;
        if (t < best_triad) best_triad = t;
    }
    if (sink == 42.0f) printf(" ");
    free(a), free(b), free(c);
    double read = 12.0 * n / best_read / 1e6, triad = 16.0 * n / best_triad / 1e6;
    return read > triad ? read : triad;
}

/* What bench_dram_gbs measures, for the line that prints it. */
#define BENCH_DRAM_LIMIT_NAME "DRAM: best of a read-only sum and a triad counted with its write-allocate reads"
#define BENCH_FMA_LIMIT_NAME "FMA peak: independent fused multiply-add chains on every thread, no memory traffic"

#endif
