/* bench/train_step — one SGD training step of the small 3-D CNN of
 * the speed goals (Conv3d(1,16)-BN-ReLU-MaxPool-Conv3d(16,32)-BN-ReLU-
 * MaxPool-Dense, the model of examples/train3d), batch 16, 32^3 input,
 * cross-entropy: median step time and peak RSS at 1 and 2 threads, beside
 * PyTorch measured in the same run with the same thread count. Each thread
 * count runs in its own child process, so each peak RSS is its own. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <bpc/bpc.h>
#include "bench_common.h"
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include <bpc/optimizer.h>
#include "../examples/train3d/model.h"


static void check(bp_status st, const char *what)
{
    if (st) {
        fprintf(stderr, "train_step: %s: %s\n", what, bp_last_error());
        exit(1);
    }
}

/* The child: times reps steps at `threads`, prints "<ms> <peak MiB>". */
static int measure(int threads, int reps, int batch, int size)
{
    omp_set_num_threads(threads);
    const int classes = 10;
    int64_t dims[3] = {size, size, size};
    bp_node *net, *opt;
    check(net_new(&net, NET_FLAT, dims, 1, classes, 0), "net");
    bp_collector *all, *tv;
    check(bp_node_train_vars(net, NULL, &all), "train_vars");
    check(bp_collector_unique(all, &tv), "unique");
    bp_collector_free(all);
    bp_momentum_opts mo = bp_momentum_defaults();
    mo.lr = 0.01;
    mo.train_vars = tv;
    check(bp_momentum_new(&opt, &mo), "optimizer");
    bp_collector_free(tv);
    int64_t xs[5] = {batch, size, size, size, 1}, b = batch;
    bp_tensor *x, *y;
    check(bp_tensor_new(&x, BP_REAL_DTYPE, 5, xs), "x");
    check(bp_tensor_new(&y, BP_INT64, 1, &b), "y");
    bp_rng r;
    bp_rng_seed(&r, 3);
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(x, i, bp_rng_normal(&r));
    for (int64_t i = 0; i < b; i++) bp_tensor_set(y, i, (double)bp_rng_below(&r, classes));
    bp_share_save_fit(true);
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int rep = -2; rep < reps; rep++) {
        double t0 = bench_now_ms();
        bp_tensor *logits, *loss;
        check(bp_node_update(net, x, &logits), "forward");
        check(bp_softmax_cross_entropy(&loss, logits, y), "loss");
        bp_node_zero_grad(net);
        check(bp_backward(loss), "backward");
        check(bp_optim_update(opt), "update");
        bp_tensor_free(loss);
        bp_tensor_free(logits);
        if (rep >= 0) t[rep] = bench_now_ms() - t0;
    }
    double median = bench_median(t, reps);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%f %f\n", median, ru.ru_maxrss / 1024.0);
    free(t);
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_node_free(opt);
    bp_node_free(net);
    return 0;
}

static int run_child(const char *cmd, double *ms, double *mib)
{
    FILE *p = popen(cmd, "r");
    int ok = p && fscanf(p, "%lf %lf", ms, mib) == 2;
    if (p) pclose(p);
    return ok;
}

int main(int argc, char **argv)
{
    int reps = 10, batch = 16, size = 32, torch = 1, child = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: train_step [--reps N] [--batch N] [--size S] [--no-torch]\n"
                   "Median SGD step time and peak RSS of the small 3-D CNN at 1 and 2 threads, beside\n"
                   "PyTorch (same net, same thread count; as shipped and tuned) measured in the same run,\n"
                   "and the convolutions' floor at this machine's FMA peak. Defaults: 10 reps, batch 16,\n"
                   "32^3. Goal: faster than tuned PyTorch, at most half of its peak RSS (a Zen 5 saw\n"
                   "tuned PyTorch at 98.5 ms at 1 thread, 56 ms at 2).\n");
            return 0;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) torch = 0;
        else if (!strcmp(argv[i], "--child") && i + 1 < argc) child = atoi(argv[++i]);
        else {
            fprintf(stderr, "train_step: unknown option %s (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (reps < 1 || batch < 2 || size < 4 || size % 4) {
        fprintf(stderr, "train_step: --reps >= 1, --batch >= 2, --size a multiple of 4\n");
        return 2;
    }
    if (child) return measure(child, reps, batch, size);
    const char *core = getenv("OPENBLAS_CORETYPE");
    /* The convolutions' FLOPs: conv1 forward + dw (its input needs no
     * gradient), conv2 forward + dw + dx, each 2*B*Cin*Cout times the taps
     * that land inside the input: (3S-2)^3 over an S^3 volume with k=3 SAME
     * (the taps on the zero padding are not counted: a kernel may skip them). */
    double t1 = 3.0 * size - 2, t2 = 3.0 * (size / 2) - 2;
    double conv_gflop = 2.0 * batch * (t1 * t1 * t1 * 1 * 16 * 2 + t2 * t2 * t2 * 16 * 32 * 3) / 1e9;
    printf("train step: batch %d, %d^3, SGD momentum; OPENBLAS_CORETYPE=%s; convolutions %.2f GFLOP per step\n", batch,
           size, core ? core : "(unset)", conv_gflop);
    printf("PyTorch as shipped: this environment. Tuned: OPENBLAS_CORETYPE unset, OpenBLAS 1 thread, glibc malloc\n"
           "without mmap and trimming (no page faults after the first steps), as the speed goals were measured.\n");
    printf("%-8s %9s %8s %11s %9s %11s %9s %9s %9s %10s\n", "threads", "bpc ms", "bpc MiB", "shipped ms", "MiB",
           "tuned ms", "MiB", "vs tuned", "RSS/min", "conv floor");
    for (int threads = 1; threads <= 2; threads++) {
        char cmd[1024];
        double ms = 0, mib = 0, t_ms[2] = {0, 0}, t_mib[2] = {0, 0};
        snprintf(cmd, sizeof cmd, "'%s' --child %d --reps %d --batch %d --size %d", argv[0], threads, reps, batch, size);
        if (!run_child(cmd, &ms, &mib)) {
            fprintf(stderr, "train_step: the measuring child failed\n");
            return 1;
        }
        int have[2] = {0, 0};
        for (int tuned = 0; torch && tuned < 2; tuned++) {
            snprintf(cmd, sizeof cmd,
                     "%s /usr/bin/python3 %s/train_step_torch.py %d %d %d %d 10 2>/dev/null",
                     tuned ? "env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 "
                             "MALLOC_TRIM_THRESHOLD_=1099511627776"
                           : "",
                     BP_BENCH_DIR, threads, reps, batch, size);
            have[tuned] = run_child(cmd, &t_ms[tuned], &t_mib[tuned]);
        }
        /* the floor: the convolutions alone at this machine's FMA peak, measured now (a
         * limit no kernel passes; sgemm is not one, the direct kernels beat it) */
        double floor_ms = conv_gflop / bench_fma_peak_gflops(threads) * 1e3;
        char c[4][32] = {"n/a", "n/a", "n/a", "n/a"}, sp[32] = "n/a", rr[32] = "n/a";
        for (int k = 0; k < 2; k++)
            if (have[k]) {
                snprintf(c[2 * k], sizeof c[0], "%.1f", t_ms[k]);
                snprintf(c[2 * k + 1], sizeof c[0], "%.0f", t_mib[k]);
            }
        if (have[1]) snprintf(sp, sizeof sp, "%.2fx", t_ms[1] / ms);
        if (have[0] || have[1]) {
            double lo = have[0] && have[1] ? (t_mib[0] < t_mib[1] ? t_mib[0] : t_mib[1]) : have[0] ? t_mib[0] : t_mib[1];
            snprintf(rr, sizeof rr, "%.2fx", mib / lo);
        }
        printf("%-8d %9.1f %8.0f %11s %9s %11s %9s %9s %9s %7.1f ms (%.0f%%)\n", threads, ms, mib, c[0], c[1], c[2], c[3],
               sp, rr, floor_ms, 100 * floor_ms / ms);
    }
    printf("vs tuned > 1: bpc is faster than tuned PyTorch; RSS/min: bpc's peak RSS over the smaller of PyTorch's\n"
           "(goal <= 0.5); conv floor: the convolutions' FLOPs at the " BENCH_FMA_LIMIT_NAME ",\n"
           "at that thread count, measured in this run, and its share of bpc's step (the machine's limit for this net, elementwise passes aside)\n");
    return 0;
}
