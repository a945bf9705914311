/* bench/op_overhead.c — the fixed cost of recording and back-propagating an op.
 *
 * A chain of 1,000 tiny ops on 100-element float32 tensors (add a constant,
 * multiply by a constant, relu, repeating) is recorded from a leaf, reduced
 * with sum, and back-propagated; the time per op of the forward, the backward
 * and both is printed beside PyTorch's for the same chain, measured in the
 * same run by bench/op_overhead_torch.py with the same thread count.
 * Medians over --reps repetitions after a warm-up, and the best total (the
 * machine is shared, so the best run shows the cost without interference).
 * Run with --help. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>

enum { N = 100, CHAIN = 1000 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One forward of the chain and its backward; returns BP_OK or the error. */
static bp_status chain(bp_tensor *x, bp_tensor *c, double *t_fwd, double *t_bwd)
{
    double t0 = now();
    bp_tensor *h = bp_tensor_retain(x), *nx = NULL;
    for (int i = 0; i < CHAIN; i++) {
        bp_status st = i % 3 == 0 ? bp_add(&nx, h, c) : i % 3 == 1 ? bp_mul(&nx, h, c) : bp_relu(&nx, h);
        bp_tensor_free(h);
        if (st) return st;
        h = nx;
    }
    bp_tensor *loss = NULL;
    bp_status st = bp_sum(&loss, h, 0, NULL, false);
    bp_tensor_free(h);
    if (st) return st;
    double t1 = now();
    st = bp_backward(loss);
    double t2 = now();
    bp_tensor_free(loss);
    *t_fwd = t1 - t0;
    *t_bwd = t2 - t1;
    return st;
}

static void usage(const char *prog)
{
    printf("usage: %s [--reps N] [--threads N] [--no-torch]\n"
           "  Times a chain of %d ops (add, mul, relu on %d-element float32 tensors)\n"
           "  recorded and back-propagated by bpc, per op, beside PyTorch's for the same\n"
           "  chain (popen /usr/bin/python3 bench/op_overhead_torch.py, same threads).\n"
           "  --reps N      repetitions, the median is printed (default 200)\n"
           "  --threads N   OpenMP threads for bpc and torch.set_num_threads (default 1)\n"
           "  --no-torch    skip the PyTorch measurement\n",
           prog, CHAIN, N);
}

int main(int argc, char **argv)
{
    int reps = 200, threads = 1, torch = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(argv[0]);
            return 0;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--no-torch")) {
            torch = 0;
        } else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            usage(argv[0]);
            return 2;
        }
    }
    if (reps < 1 || threads < 1) {
        fprintf(stderr, "--reps and --threads must be >= 1\n");
        return 2;
    }
    omp_set_num_threads(threads);

    int64_t n = N;
    bp_tensor *x = NULL, *g = NULL, *c = NULL;
    if (bp_tensor_new(&x, BP_REAL_DTYPE, 1, &n) || bp_tensor_new(&g, BP_REAL_DTYPE, 1, &n) ||
        bp_tensor_new(&c, BP_REAL_DTYPE, 1, &n) || bp_ag_make_leaf(x, g)) {
        fprintf(stderr, "op_overhead: %s\n", bp_last_error());
        return 1;
    }
    for (int i = 0; i < N; i++) {
        bp_tensor_set(x, i, (i % 7) * 0.1 - 0.2);
        bp_tensor_set(c, i, 1.0 + (i % 5) * 0.0001);
    }
    double *tf = malloc(sizeof(double) * (size_t)reps), *tb = malloc(sizeof(double) * (size_t)reps);
    double *tt = malloc(sizeof(double) * (size_t)reps);
    for (int r = -10; r < reps; r++) { /* 10 warm-up runs fill the pool */
        double f = 0, b = 0;
        bp_status st = chain(x, c, &f, &b);
        if (st) {
            fprintf(stderr, "op_overhead: %s\n", bp_last_error());
            return 1;
        }
        if (r >= 0) {
            tf[r] = f;
            tb[r] = b;
            tt[r] = f + b;
        }
    }
    const double us = 1e6 / CHAIN;
    double bf = median(tf, reps) * us, bb = median(tb, reps) * us, bt = median(tt, reps) * us;
    double best = tt[0] * us; /* tt is sorted by median() */

    printf("op_overhead: chain of %d ops on %d-element float32 tensors, %d threads, median of %d\n", CHAIN, N,
           threads, reps);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("  (OPENBLAS_CORETYPE=%s; this bench calls no BLAS)\n", ct ? ct : "unset");
    printf("%-10s %14s %14s %14s %14s\n", "", "fwd us/op", "bwd us/op", "total us/op", "best total");
    printf("%-10s %14.3f %14.3f %14.3f %14.3f\n", "bpc", bf, bb, bt, best);

    int rc = 0;
    if (torch) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/op_overhead_torch.py --reps %d --threads %d --chain %d --n %d",
                 BP_BENCH_DIR, reps, threads, CHAIN, N);
        FILE *p = popen(cmd, "r");
        double pf = -1, pb = -1, pt = -1, pbest = -1;
        char line[256];
        while (p && fgets(line, sizeof line, p)) {
            double v;
            if (sscanf(line, "torch_fwd_us_per_op %lf", &v) == 1) pf = v;
            if (sscanf(line, "torch_bwd_us_per_op %lf", &v) == 1) pb = v;
            if (sscanf(line, "torch_total_us_per_op %lf", &v) == 1) pt = v;
            if (sscanf(line, "torch_best_total_us_per_op %lf", &v) == 1) pbest = v;
        }
        if (!p || pclose(p) != 0 || pt < 0) {
            printf("%-10s (PyTorch measurement failed: %s)\n", "pytorch", cmd);
            rc = 1;
        } else {
            printf("%-10s %14.3f %14.3f %14.3f %14.3f\n", "pytorch", pf, pb, pt, pbest);
            printf("%-10s %13.1fx %13.1fx %13.1fx %13.1fx   (goal: >= 10x)\n", "ratio", pf / bf, pb / bb, pt / bt,
                   pbest / best);
        }
    }
    free(tf);
    free(tb);
    free(tt);
    bp_tensor_free(x);
    bp_tensor_free(g);
    bp_tensor_free(c);
    bp_ag_pool_trim();
    return rc;
}
