/* bench/conv3d — Conv3d(16->32, k=3, pad=1) on (8, 32, 32, 32, 16) channels-last:
 * forward and forward+backward time and GFLOP/s at 1 and 2 threads, beside
 * PyTorch (its default oneDNN path and its vol2col + BLAS path) measured in
 * the same run with the same thread count, and the fraction of the machine's
 * FMA peak measured in the same run at the same thread count
 * (bench_fma_peak_gflops), which no kernel can pass. FLOPs count the
 * multiply-adds that touch the input (taps on the zero padding excluded: a
 * kernel may skip them). OpenBLAS sgemm 1024^3 is printed beside, measured
 * before bpc's first GEMM sets OpenBLAS to one thread; it is a reference, not
 * a limit (the direct kernels beat it). Run it with OPENBLAS_CORETYPE unset
 * (or SkylakeX) for real numbers: OPENBLAS_CORETYPE=Haswell forces AVX2
 * kernels and halves sgemm. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpc/bpc.h>
#include "bench_common.h"
#include <bpc/autograd.h>
#include <bpc/conv.h>


static void usage(void)
{
    printf("usage: conv3d [--reps N] [--batch N] [--size S] [--no-torch] [--help]\n"
           "Times bpc's Conv3d(16->32, k=3, SAME) on (batch, S, S, S, 16) forward and forward+backward\n"
           "at 1 and 2 threads, beside PyTorch (oneDNN and vol2col paths) run in the same process tree.\n"
           "Defaults: --reps 5 --batch 8 --size 32.\n");
}

static void check(bp_status st, const char *what)
{
    if (st) {
        fprintf(stderr, "conv3d: %s: %s\n", what, bp_last_error());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int reps = 5, batch = 8, size = 32, torch = 1;
    const int cin = 16, cout = 32, k = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            return 0;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            size = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--no-torch")) {
            torch = 0;
        } else {
            usage();
            return 2;
        }
    }
    if (reps < 1 || batch < 1 || size < 1) {
        usage();
        return 2;
    }
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("Conv3d(%d->%d, k=%d, SAME) on (%d,%d,%d,%d,%d); OPENBLAS_CORETYPE=%s%s\n", cin, cout, k, batch, size,
           size, size, cin, core ? core : "(unset)",
           core && !strcmp(core, "Haswell") ? "  [AVX2 kernels: about half the real sgemm peak]" : "");
    /* Taps per axis that land inside the input (stride 1, SAME padding): the
     * padded ones multiply zeros, which a kernel need not do. */
    long taps = 0;
    for (int o = 0; o < size; o++)
        for (int t = 0; t < k; t++) taps += o - k / 2 + t >= 0 && o - k / 2 + t < size;
    double gflop_f = 2.0 * batch * (double)taps * taps * taps * cout * cin / 1e9;
    printf("%.2f GFLOP forward, %.2f GFLOP backward (multiply-adds on the padding not counted)\n", gflop_f,
           2 * gflop_f);
    /* The limits, measured before bpc's first GEMM (which sets OpenBLAS to one thread). */
    double fma_peak[3], sgemm[3];
    for (int threads = 1; threads <= 2; threads++) {
        fma_peak[threads] = bench_fma_peak_gflops(threads);
        sgemm[threads] = bench_sgemm_gflops(threads);
    }
    printf("limit, %s:\n  %.1f GFLOP/s at 1 thread, %.1f at 2\n", BENCH_FMA_LIMIT_NAME, fma_peak[1], fma_peak[2]);
    printf("reference, OpenBLAS sgemm 1024^3 at the same OpenBLAS thread count: %.1f GFLOP/s at 1 thread, %.1f at 2\n\n",
           sgemm[1], sgemm[2]);

    bp_mode train = bp_training_mode(batch);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = k;
    bp_node *conv;
    check(bp_conv3d_new(&conv, cin, cout, &o), "conv3d_new");
    int64_t xs[5] = {batch, size, size, size, cin}, ys[5] = {batch, size, size, size, cout};
    bp_tensor *x, *gx, *dy;
    check(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs), "x");
    check(bp_tensor_new(&gx, BP_REAL_DTYPE, 5, xs), "gx");
    check(bp_tensor_new(&dy, BP_REAL_DTYPE, 5, ys), "dy");
    bp_rng r;
    bp_rng_seed(&r, 1);
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, bp_rng_normal(&r));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, bp_rng_normal(&r));
    check(bp_ag_make_leaf(x, gx), "make_leaf");

    printf("%-8s %-22s %10s %10s %9s %10s %10s\n", "threads", "what", "ms", "GFLOP/s", "of FMA", "vs oneDNN",
           "vs vol2col");
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        double *t = malloc(sizeof(double) * (size_t)reps), fwd = 0, fb = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int rep = -1; rep < reps; rep++) { /* rep -1: warm-up (pool, page faults) */
                double t0 = bench_now_ms();
                bp_tensor *y;
                if (pass == 0) bp_no_grad_begin();
                check(bp_node_update(conv, x, &y), "update");
                if (pass == 0)
                    bp_no_grad_end();
                else
                    check(bp_backward_with(y, dy), "backward");
                bp_tensor_free(y);
                if (rep >= 0) t[rep] = bench_now_ms() - t0;
            }
            if (pass == 0)
                fwd = bench_median(t, reps);
            else
                fb = bench_median(t, reps);
        }
        free(t);
        double tf[2] = {0, 0}, tv[2] = {0, 0};
        if (torch) {
            char cmd[512];
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/conv3d_torch.py %d %d %d %d %d %d %d 2>/dev/null",
                     BP_BENCH_DIR, threads, reps, batch, cin, cout, size, k);
            FILE *p = popen(cmd, "r");
            char name[32];
            double a, b;
            while (p && fscanf(p, "%31s %lf %lf", name, &a, &b) == 3) {
                double *dst = !strcmp(name, "onednn") ? tf : tv;
                dst[0] = a;
                dst[1] = b;
            }
            if (p) pclose(p);
        }
        /* Measured again now, and the higher kept: on a shared machine one
         * measurement may fall in a busy moment, and a low limit would let a
         * kernel timed in a quiet one pass it. */
        double again = bench_fma_peak_gflops(threads);
        if (again > fma_peak[threads]) fma_peak[threads] = again;
        double peak = fma_peak[threads];
        const char *what[2] = {"forward", "forward+backward"};
        double ms[2] = {fwd, fb}, fl[2] = {gflop_f, 3 * gflop_f};
        for (int i = 0; i < 2; i++) {
            double gf = fl[i] / (ms[i] / 1e3);
            char r1[32] = "n/a", r2[32] = "n/a";
            if (tf[i] > 0) snprintf(r1, sizeof r1, "%.2fx", tf[i] / ms[i]);
            if (tv[i] > 0) snprintf(r2, sizeof r2, "%.2fx", tv[i] / ms[i]);
            printf("%-8d %-22s %10.1f %10.1f %8.0f%% %10s %10s\n", threads, what[i], ms[i], gf, 100 * gf / peak, r1, r2);
        }
        if (torch && tf[0] > 0)
            printf("%-8d %-22s fwd %.1f ms, fwd+bwd %.1f ms (oneDNN); fwd %.1f ms, fwd+bwd %.1f ms (vol2col)\n", threads,
                   "PyTorch", tf[0], tf[1], tv[0], tv[1]);
    }
    printf("\nratios > 1 mean bpc is faster; 'of FMA' is the fraction of the FMA peak at the same thread count\n"
           "(the higher of the measurement above and one right after the timing: %.1f / %.1f GFLOP/s at 1 / 2\n"
           "threads; no kernel can pass 100%%); sgemm is %.0f%% / %.0f%% of that peak at 1 / 2 threads\n",
           fma_peak[1], fma_peak[2], 100 * sgemm[1] / fma_peak[1], 100 * sgemm[2] / fma_peak[2]);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_tensor_free(dy);
    bp_node_free(conv);
    return 0;
}
