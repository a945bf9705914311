/* bench/conv_bf16.c — Conv3d forward, float32 (the kernel update() picks)
 * against the bf16 kernel (layers/conv_bf16.c), on one shape:
 *   conv_bf16 [B N C_in C_out threads]   default 4 32 16 32 1
 * x (B, N, N, N, C_in), kernel 3, SAME, stride 1. Median of 7 runs after one
 * warm-up each; GFLOP/s count 2 * B * N^3 * 27 * C_in * C_out. The bf16
 * column is printed only where bp_bf16_available(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <bpc/bpc.h>
#include <bpc/conv.h>
#include <bpc/precision.h>
#include "conv_internal.h"
#include "bench_common.h"

#define RUNS 7

typedef bp_status (*fwd_fn)(const bp__conv_geom *, float *, const float *, const float *, const float *);

static bp_status fwd_float32(const bp__conv_geom *g, float *y, const float *x, const float *w, const float *b)
{
    if (bp__conv_direct_ok_fwd(g)) return bp__conv_forward_direct(g, y, x, w, b);
    return bp__conv_forward_gemm(g, y, x, w, b);
}

static double time_ms(fwd_fn f, const bp__conv_geom *g, float *y, const float *x, const float *w, const float *b)
{
    double t[RUNS];
    if (f(g, y, x, w, b) != BP_OK) return -1;
    for (int r = 0; r < RUNS; r++) {
        double t0 = bench_now_ms();
        f(g, y, x, w, b);
        t[r] = bench_now_ms() - t0;
    }
    return bench_median(t, RUNS);
}

static int usage(FILE *f)
{
    fprintf(f, "usage: conv_bf16 [B N C_in C_out threads]   (default 4 32 16 32 1)\n"
               "Times Conv3d forward (kernel 3, SAME) on x (B,N,N,N,C_in): bpc float32 against bpc bf16.\n"
               "PyTorch is not run here; bench/conv3d has the PyTorch columns for float32.\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) return usage(stdout);
    if (argc > 6) return usage(stderr);
    for (int i = 1; i < argc; i++)
        if (atoi(argv[i]) < 1 || atoi(argv[i]) > 4096) {
            fprintf(stderr, "conv_bf16: argument %d is \"%s\"; every argument must be an integer in 1..4096\n", i,
                    argv[i]);
            return usage(stderr);
        }
    int B = argc > 1 ? atoi(argv[1]) : 4, N = argc > 2 ? atoi(argv[2]) : 32;
    int cin = argc > 3 ? atoi(argv[3]) : 16, cout = argc > 4 ? atoi(argv[4]) : 32;
    int threads = argc > 5 ? atoi(argv[5]) : 1;
    omp_set_num_threads(threads);
    bp_node *node;
    bp_conv_opts o = bp_conv_defaults();
    for (int i = 0; i < 3; i++) o.kernel_size[i] = 3;
    if (bp_conv3d_new(&node, cin, cout, &o) != BP_OK) return fprintf(stderr, "%s\n", bp_last_error()), 1;
    int64_t xs[5] = {B, N, N, N, cin}, ys[5];
    int yd;
    bp__conv_geom g;
    if (bp__conv_geom_init(&g, bp_conv_cast(node), 5, xs, ys, &yd) != BP_OK) return 1;
    const int64_t nx = g.B * g.Pin * g.Cin, ny = g.B * g.Pout * g.Cout, nw = g.K * g.Cout;
    float *x = malloc(sizeof(float) * (size_t)nx), *w = malloc(sizeof(float) * (size_t)nw);
    float *b = malloc(sizeof(float) * (size_t)g.Cout), *y = malloc(sizeof(float) * (size_t)ny);
    if (!x || !w || !b || !y) return 1;
    unsigned s = 1;
    for (int64_t i = 0; i < nx; i++) x[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < nw; i++) w[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < g.Cout; i++) b[i] = 0.1f;
    const double gflop = 2.0 * (double)g.B * (double)g.Pout * (double)g.K * (double)g.Cout * 1e-9;
    printf("Conv3d %d->%d on (%d,%d,%d,%d,%d), kernel 3 SAME, %d thread(s), forward, median of %d\n", cin, cout, B,
           N, N, N, cin, threads, RUNS);
    double tf = time_ms(fwd_float32, &g, y, x, w, b);
    printf("  float32 (%s): %8.2f ms  %6.1f GFLOP/s\n", bp__conv_direct_ok_fwd(&g) ? "direct" : "gemm", tf,
           gflop / tf * 1e3);
    if (bp_bf16_available() && bp__conv_bf16_ok(&g)) {
        double tb = time_ms(bp__conv_forward_bf16, &g, y, x, w, b);
        printf("  bf16          : %8.2f ms  %6.1f GFLOP/s  (%.2fx float32)\n", tb, gflop / tb * 1e3, tf / tb);
    } else {
        printf("  bf16: not measured (no AVX512-BF16 here, or the shape is not one for the bf16 kernel)\n");
    }
    free(x), free(w), free(b), free(y);
    bp_node_free(node);
    return 0;
}
