/* bench/bench_common.h — timing helpers shared by the benchmark programs. */
#ifndef BPC_BENCH_COMMON_H
#define BPC_BENCH_COMMON_H

#include <cblas.h>
#include <stdlib.h>
#include <time.h>

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

/* The machine's practical FLOP limit, measured in this run: OpenBLAS sgemm
 * on 1024^3 at `threads` threads, best of 3, in GFLOP/s. (The anchors' 245
 * GFLOP/s per core was a Zen 5; other machines differ by 2x and more.) */
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

/* The machine's DRAM bandwidth, measured in this run: a[i] = b[i] + s*c[i]
 * with regular stores over three 64 MiB arrays (twice the 32 MiB L3), at
 * `threads` OpenMP threads, best of 5, counted as 12 bytes per element, in
 * GB/s. (The anchors' Zen 5 gave 39.2 GB/s at 1 thread; a Zen 4 gives ~22.) */
static inline double bench_triad_gbs(int threads)
{
    const long n = 16L << 20;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2; /* first touch by the thread that streams it */
    double best = 1e30;
    for (int k = 0; k < 5; k++) {
        double t0 = bench_now_ms();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + 1.5f * c[i];
        double t = bench_now_ms() - t0;
        if (t < best) best = t;
    }
    free(a), free(b), free(c);
    return 12.0 * n / best / 1e6;
}

#endif
