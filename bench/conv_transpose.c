/* bench/conv_transpose — the U-Net up-sampling ConvTranspose3d(32->16,
 * kernel 2, stride 2) on (2, 32, 32, 32, 32) -> (2, 64, 64, 64, 16)
 * channels-last: forward and forward+backward time at 1 and 2 threads,
 * beside PyTorch's ConvTranspose3d (channels-first and channels_last_3d) run
 * in the same process tree with the same thread count. The layer moves
 * 4 * (|x| + |y|) bytes forward (37.7 MB at the default size) and does
 * 2 * |y| * C_in flops, so it is bound by memory, not by FMAs: GB/s of
 * x + y traffic is printed beside. Run it with OPENBLAS_CORETYPE unset (or
 * SkylakeX where OpenBLAS mistakes the CPU): PyTorch's transposed
 * convolution goes through BLAS. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/bpc.h>
#include "bench_common.h"
#include <bpc/autograd.h>

static void usage(void)
{
    printf("usage: conv_transpose [--reps N] [--batch N] [--size S] [--cin C] [--cout C] [--no-torch] [--help]\n"
           "Times bpc's ConvTranspose3d(cin->cout, kernel 2, stride 2) on (batch, S, S, S, cin) forward and\n"
           "forward+backward at 1 and 2 threads, beside PyTorch's ConvTranspose3d in the same run.\n"
           "Defaults: --reps 7 --batch 2 --size 32 --cin 32 --cout 16.\n");
}

static void check(bp_status st, const char *what)
{
    if (st) {
        fprintf(stderr, "conv_transpose: %s: %s\n", what, bp_last_error());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int reps = 7, batch = 2, size = 32, cin = 32, cout = 16, torch = 1;
    const int k = 2;
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
        } else if (!strcmp(argv[i], "--cin") && i + 1 < argc) {
            cin = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--cout") && i + 1 < argc) {
            cout = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--no-torch")) {
            torch = 0;
        } else {
            usage();
            return 2;
        }
    }
    if (reps < 1 || batch < 1 || size < 1 || cin < 1 || cout < 1) {
        usage();
        return 2;
    }
    bp_mode train = bp_training_mode(batch);
    bp_conv_transpose_opts o = bp_conv_transpose_defaults();
    o.mode = &train;
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = k;
    o.stride[0] = o.stride[1] = o.stride[2] = k;
    bp_node *ct;
    check(bp_conv_transpose3d_new(&ct, cin, cout, &o), "conv_transpose3d_new");
    int64_t S = size * k, xs[5] = {batch, size, size, size, cin}, ys[5] = {batch, S, S, S, cout};
    bp_tensor *x, *gx, *dy;
    check(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs), "x");
    check(bp_tensor_new(&gx, BP_REAL_DTYPE, 5, xs), "gx");
    check(bp_tensor_new(&dy, BP_REAL_DTYPE, 5, ys), "dy");
    bp_rng r;
    bp_rng_seed(&r, 1);
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, bp_rng_normal(&r));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, bp_rng_normal(&r));
    check(bp_ag_make_leaf(x, gx), "make_leaf");
    double mb = 4.0 * (double)(x->numel + dy->numel) / 1e6;
    printf("ConvTranspose3d(%d->%d, kernel %d, stride %d) on (%d,%d,%d,%d,%d) -> (%d,%lld,%lld,%lld,%d); "
           "x + y = %.1f MB\n\n", cin, cout, k, k, batch, size, size, size, cin, batch, (long long)S, (long long)S,
           (long long)S, cout, mb);
    printf("%-8s %-18s %9s %9s %14s %14s\n", "threads", "what", "bpc ms", "GB/s", "torch cf ms", "torch cl ms");
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        double *t = malloc(sizeof(double) * (size_t)reps), ms[2];
        for (int pass = 0; pass < 2; pass++) {
            for (int rep = -1; rep < reps; rep++) { /* rep -1: warm-up (pool, page faults) */
                double t0 = bench_now_ms();
                bp_tensor *y;
                if (pass == 0) bp_no_grad_begin();
                check(bp_node_update(ct, x, &y), "update");
                if (pass == 0)
                    bp_no_grad_end();
                else
                    check(bp_backward_with(y, dy), "backward");
                bp_tensor_free(y);
                if (rep >= 0) t[rep] = bench_now_ms() - t0;
            }
            ms[pass] = bench_median(t, reps);
        }
        free(t);
        double cf[2] = {0, 0}, cl[2] = {0, 0};
        if (torch) {
            char cmd[512];
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/conv_transpose_torch.py %d %d %d %d %d %d %d 2>/dev/null",
                     BP_BENCH_DIR, threads, reps, batch, cin, cout, size, k);
            FILE *p = popen(cmd, "r");
            char name[32];
            double a, b;
            while (p && fscanf(p, "%31s %lf %lf", name, &a, &b) == 3) {
                double *dst = !strcmp(name, "channels_first") ? cf : cl;
                dst[0] = a;
                dst[1] = b;
            }
            if (p) pclose(p);
        }
        const char *what[2] = {"forward", "forward+backward"};
        printf("%-8d %-18s %9.2f %9.1f %14.2f %14.2f\n", threads, what[0], ms[0], mb / ms[0], cf[0], cl[0]);
        printf("%-8d %-18s %9.2f %9s %14.2f %14.2f\n", threads, what[1], ms[1], "-", cf[1], cl[1]);
    }
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_tensor_free(dy);
    bp_node_free(ct);
    return 0;
}
