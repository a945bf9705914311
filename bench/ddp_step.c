/* bench/ddp_step — data-parallel training step of train3d's model.
 * The same global batch (16 samples of 32^3) one SGD step at a time, on
 * 1 process x 2 threads and on 2 processes x 1 thread under mpiexec (the
 * batch split over them, cross-replica BatchNorm, gradients summed with
 * bp_dp_sum_grads), with the share of the 2-process step spent in the
 * gradient reduction; beside PyTorch DDP (gloo, 2 CPU processes, the same net
 * without SyncBatchNorm, which PyTorch lacks on CPU) measured in the same run
 * (bench/ddp_step_torch.py). Goals: 2 x 1 within 10% of 1 x 2, communication
 * at most 5% of the step, faster than PyTorch DDP. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/bpc.h>
#include "bench_common.h"
#ifdef BPC_BENCH_MPI
#include <bpc/comm_mpi.h>
#endif
#include "../examples/train3d/model.h"

static void check(bp_status st, const char *what)
{
    if (st) {
        fprintf(stderr, "ddp_step: %s: %s\n", what, bp_last_error());
        exit(1);
    }
}

/* One process of the measurement: prints (rank 0) "<median step ms> <median reduce ms>". */
static int measure(int reps, int batch, int size, bool mpi)
{
    bp_comm *comm = NULL;
#ifdef BPC_BENCH_MPI
    if (mpi) check(bp_comm_mpi_world(&comm), "mpi");
#endif
    if (!comm) check(bp_comm_self(&comm), "comm");
    const int rank = bp_comm_rank(comm), size_r = bp_comm_size(comm);
    const bool sync = size_r > 1;
    if (sync) check(bp_axis_bind("batch", comm), "bind");
    const int classes = 8;
    int64_t dims[3] = {size, size, size};
    bp_node *net = NULL, *opt = NULL;
    check(net_new_axis(&net, NET_GLOBAL, dims, 1, classes, 1, sync ? "batch" : NULL), "net");
    bp_collector *all = NULL, *tv = NULL;
    check(bp_node_train_vars(net, NULL, &all), "train_vars");
    check(bp_collector_unique(all, &tv), "unique");
    bp_collector_free(all);
    bp_momentum_opts mo = bp_momentum_defaults();
    mo.lr = 0.01;
    mo.train_vars = tv;
    check(bp_momentum_new(&opt, &mo), "optimizer");
    const int64_t q = batch / size_r, rem = batch % size_r, n = q + (rank < rem);
    bp_tensor *x = NULL, *y = NULL;
    check(bp_tensor_new(&x, BP_REAL_DTYPE, 5, (int64_t[]){n, size, size, size, 1}), "x");
    check(bp_tensor_new(&y, BP_INT64, 1, (int64_t[]){n}), "y");
    bp_rng r;
    bp_rng_seed(&r, 3 + (uint64_t)rank);
    for (int64_t i = 0; i < x->numel; i++) ((bp_real *)x->data)[i] = (bp_real)bp_rng_normal(&r);
    for (int64_t i = 0; i < n; i++) ((int64_t *)y->data)[i] = (int64_t)bp_rng_below(&r, classes);
    bp_share_save_fit(true);
    double *ts = malloc(sizeof(double) * (size_t)reps * 2), *tr = ts + reps;
    for (int rep = -2; rep < reps; rep++) {
        check(bp_comm_barrier(comm), "barrier");
        double t0 = bench_now_ms();
        bp_tensor *logits = NULL, *loss = NULL, *share = NULL;
        check(bp_node_update(net, x, &logits), "forward");
        check(bp_softmax_cross_entropy(&loss, logits, y), "loss");
        check(bp_mul_scalar(&share, loss, (double)n / (double)batch), "share");
        bp_node_zero_grad(net);
        check(bp_backward(share), "backward");
        double t1 = bench_now_ms();
        check(bp_dp_sum_grads(comm, tv), "reduce");
        double t2 = bench_now_ms();
        check(bp_optim_update(opt), "update");
        bp_tensor_free(share), bp_tensor_free(loss), bp_tensor_free(logits);
        if (rep >= 0) ts[rep] = bench_now_ms() - t0, tr[rep] = t2 - t1;
    }
    double step = bench_median(ts, reps), red = bench_median(tr, reps);
    if (rank == 0) printf("%f %f\n", step, red);
    fflush(stdout);
    free(ts);
    bp_collector_free(tv);
    bp_tensor_free(x), bp_tensor_free(y);
    bp_node_free(opt), bp_node_free(net);
    if (sync) bp_axis_unbind("batch");
    bp_comm_free(comm);
#ifdef BPC_BENCH_MPI
    bp_comm_mpi_finalize();
#endif
    return 0;
}

static int run2(const char *cmd, double *a, double *b)
{
    FILE *p = popen(cmd, "r");
    int ok = p && fscanf(p, "%lf %lf", a, b) == 2;
    if (p) pclose(p);
    return ok;
}

int main(int argc, char **argv)
{
    int reps = 10, batch = 16, size = 32, torch = 1, child = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: ddp_step [--reps N] [--batch N] [--size S] [--no-torch]\n"
                   "train3d's model, one SGD step of a global batch of N (16) samples of S^3 (32), at 1 process\n"
                   "x 2 threads and at 2 processes x 1 thread (mpiexec, cross-replica BatchNorm), the share of\n"
                   "the 2-process step in the gradient reduction, beside PyTorch DDP (gloo) in the same run.\n");
            return 0;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) torch = 0;
        else if (!strcmp(argv[i], "--child") && i + 1 < argc) child = atoi(argv[++i]);
        else {
            fprintf(stderr, "ddp_step: unknown option %s (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (reps < 1 || batch < 4 || size < 8 || size % 8) {
        fprintf(stderr, "ddp_step: need --reps >= 1, --batch >= 4, --size a multiple of 8\n");
        return 2;
    }
    if (child) return measure(reps, batch, size, child == 2);
#ifndef BPC_BENCH_MPI
    fprintf(stderr, "ddp_step: this bpc was built without MPI (apt-get install libopenmpi-dev openmpi-bin)\n");
    return 1;
#else
    char cmd[2048];
    double s1 = 0, r1 = 0, s2 = 0, r2 = 0, ts = 0, tr = 0;
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=2 '%s' --child 1 --reps %d --batch %d --size %d", argv[0], reps, batch, size);
    if (!run2(cmd, &s1, &r1)) return fprintf(stderr, "ddp_step: the 1-process run failed\n"), 1;
    snprintf(cmd, sizeof cmd,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 %s --oversubscribe --bind-to none "
             "-n 2 '%s' --child 2 --reps %d --batch %d --size %d </dev/null",
             BPC_BENCH_MPIEXEC, argv[0], reps, batch, size);
    if (!run2(cmd, &s2, &r2)) return fprintf(stderr, "ddp_step: the 2-process run failed\n"), 1;
    int have = torch && run2(
        (snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/ddp_step_torch.py %d %d %d 2>/dev/null", BP_BENCH_DIR, reps,
                  batch, size), cmd), &ts, &tr);
    printf("train3d model, global batch %d of %d^3, SGD momentum, cross-replica BatchNorm on 2 processes\n", batch, size);
    printf("%-22s %10s %12s\n", "run", "step ms", "reduce ms");
    printf("%-22s %10.1f %12s\n", "bpc 1 proc x 2 thr", s1, "-");
    printf("%-22s %10.1f %9.2f (%.1f%%)\n", "bpc 2 proc x 1 thr", s2, r2, 100 * r2 / s2);
    if (have) printf("%-22s %10.1f %12s\n", "PyTorch DDP 2 x 1", ts, "(overlapped)");
    else printf("PyTorch DDP: not measured (python3-torch missing or its run failed)\n");
    printf("1 x 2 step / 2 x 1 step: %.2f (goal >= 0.9); reduction %.1f%% of the 2 x 1 step (goal <= 5%%)\n", s1 / s2,
           100 * r2 / s2);
    if (have) printf("PyTorch DDP step / bpc 2 x 1 step: %.2f (> 1: bpc is faster)\n", ts / s2);
    return 0;
#endif
}
