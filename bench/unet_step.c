/* bench/unet_step — the 3-D U-Net's training step and whole-volume inference.
 * One Adam step of bpc's U-Net (bpc/unet.h; instance norm, depth 3, base 16,
 * 2 classes) on a (2, 64^3, 1) patch with voxel-wise cross-entropy, and
 * sliding-window inference (bpc/sliding_window.h, roi 64^3, overlap 0.5)
 * over a 128^3 volume in voxels per second, beside the same net in PyTorch
 * (bench/unet_step_torch.py: the module of tests/gen_unet.py) at the same
 * thread count in the same run, with each side's peak RSS. Each thread count
 * and each side runs in its own process, so every peak RSS is its own. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <bpc/bpc.h>
#include "bench_common.h"

typedef struct cfg {
    int reps, batch, size, classes, depth, base, vol;
} cfg;

static void check(bp_status st, const char *what)
{
    if (st) {
        fprintf(stderr, "unet_step: %s: %s\n", what, bp_last_error());
        exit(1);
    }
}

/* The child: prints "<median step ms> <voxels/s> <peak MiB>". */
static int measure(int threads, const cfg *c)
{
    omp_set_num_threads(threads);
    bp_mode train = bp_training_mode(c->batch);
    bp_unet_opts uo = bp_unet_defaults();
    uo.depth = c->depth, uo.base_channels = c->base, uo.mode = &train;
    bp_node *net = NULL, *opt = NULL;
    check(bp_unet_new(&net, 1, c->classes, &uo), "unet");
    bp_collector *tv = NULL;
    check(bp_node_train_vars(net, NULL, &tv), "train_vars");
    bp_adam_opts ao = bp_adam_defaults();
    ao.lr = 1e-3;
    ao.train_vars = tv;
    check(bp_adam_new(&opt, &ao), "adam");
    bp_collector_free(tv);
    const int64_t S = c->size;
    bp_tensor *x = NULL, *y = NULL;
    check(bp_tensor_new(&x, BP_REAL_DTYPE, 5, (int64_t[]){c->batch, S, S, S, 1}), "x");
    check(bp_tensor_new(&y, BP_INT32, 4, (int64_t[]){c->batch, S, S, S}), "y");
    bp_rng r;
    bp_rng_seed(&r, 3);
    for (int64_t i = 0; i < x->numel; i++) ((bp_real *)x->data)[i] = (bp_real)bp_rng_normal(&r);
    for (int64_t i = 0; i < y->numel; i++) ((int32_t *)y->data)[i] = (int32_t)bp_rng_below(&r, (uint64_t)c->classes);
    bp_share_save_fit(true);
    double *t = malloc(sizeof(double) * (size_t)c->reps);
    for (int rep = -2; rep < c->reps; rep++) {
        double t0 = bench_now_ms();
        bp_tensor *logits = NULL, *loss = NULL;
        check(bp_node_update(net, x, &logits), "forward");
        check(bp_seg_cross_entropy(&loss, logits, y, NULL), "loss");
        bp_node_zero_grad(net);
        check(bp_backward(loss), "backward");
        check(bp_optim_update(opt), "update");
        bp_tensor_free(loss);
        bp_tensor_free(logits);
        if (rep >= 0) t[rep] = bench_now_ms() - t0;
    }
    double step = bench_median(t, c->reps);
    /* inference over a vol^3 scan */
    bp_tensor *v = NULL, *out = NULL;
    const int64_t V = c->vol;
    check(bp_tensor_new(&v, BP_REAL_DTYPE, 4, (int64_t[]){V, V, V, 1}), "volume");
    for (int64_t i = 0; i < v->numel; i++) ((bp_real *)v->data)[i] = (bp_real)bp_rng_normal(&r);
    bp_window_opts wo = bp_window_defaults();
    wo.roi[0] = wo.roi[1] = wo.roi[2] = S;
    double t0 = bench_now_ms();
    check(bp_sliding_window(net, v, &wo, &out), "sliding window");
    double vps = (double)(V * V * V) / ((bench_now_ms() - t0) / 1e3);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%f %f %f\n", step, vps, ru.ru_maxrss / 1024.0);
    free(t);
    bp_tensor_free(out), bp_tensor_free(v), bp_tensor_free(x), bp_tensor_free(y);
    bp_node_free(opt), bp_node_free(net);
    return 0;
}

static int run_child(const char *cmd, double *a, double *b, double *c)
{
    FILE *p = popen(cmd, "r");
    int ok = p && fscanf(p, "%lf %lf %lf", a, b, c) == 3;
    if (p) pclose(p);
    return ok;
}

int main(int argc, char **argv)
{
    cfg c = {.reps = 5, .batch = 2, .size = 64, .classes = 2, .depth = 3, .base = 16, .vol = 128};
    int torch = 1, child = 0, max_threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: unet_step [--reps N] [--size S] [--vol V] [--base F] [--depth D] [--threads T] [--no-torch]\n"
                   "The U-Net training step (batch 2, S^3 patch, 2 classes, Adam; default S 64, depth 3,\n"
                   "base 16) and sliding-window inference over a V^3 volume (default 128; windows S^3,\n"
                   "overlap 0.5), at 1..T threads (default 2), beside PyTorch with the same net and\n"
                   "threads in the same run; peak RSS of each. Goal: as far ahead of PyTorch as\n"
                   "bench/train_step is.\n");
            return 0;
        }
        int *dst = !strcmp(a, "--reps") ? &c.reps : !strcmp(a, "--size") ? &c.size : !strcmp(a, "--vol") ? &c.vol
                 : !strcmp(a, "--base") ? &c.base : !strcmp(a, "--depth") ? &c.depth : !strcmp(a, "--threads") ? &max_threads
                 : !strcmp(a, "--child") ? &child : NULL;
        if (dst && i + 1 < argc) *dst = atoi(argv[++i]);
        else if (!strcmp(a, "--no-torch")) torch = 0;
        else {
            fprintf(stderr, "unet_step: unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    if (c.reps < 1 || c.depth < 1 || c.depth > 6 || c.base < 1 || c.size < (1 << c.depth) || c.size % (1 << c.depth) ||
        c.vol < c.size || max_threads < 1) {
        fprintf(stderr, "unet_step: need --reps >= 1, --depth 1..6, --base >= 1, --size a multiple of 2^depth, "
                        "--vol >= --size, --threads >= 1\n");
        return 2;
    }
    if (child) return measure(child, &c);
    printf("U-Net step: batch %d, %d^3 patch, %d classes, depth %d, base %d, Adam; inference %d^3 in %d^3 windows\n",
           c.batch, c.size, c.classes, c.depth, c.base, c.vol, c.size);
    printf("%-8s %10s %12s %8s %11s %12s %8s %9s %9s\n", "threads", "bpc ms", "bpc vox/s", "MiB", "torch ms",
           "torch vox/s", "MiB", "step x", "infer x");
    for (int threads = 1; threads <= max_threads; threads++) {
        char cmd[1024];
        double ms = 0, vps = 0, mib = 0, tms = 0, tvps = 0, tmib = 0;
        snprintf(cmd, sizeof cmd, "'%s' --child %d --reps %d --size %d --vol %d --base %d --depth %d", argv[0], threads,
                 c.reps, c.size, c.vol, c.base, c.depth);
        if (!run_child(cmd, &ms, &vps, &mib)) {
            fprintf(stderr, "unet_step: the measuring child failed\n");
            return 1;
        }
        int have = 0;
        if (torch) {
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/unet_step_torch.py %d %d %d %d %d %d %d %d 2>/dev/null",
                     BP_BENCH_DIR, threads, c.reps, c.batch, c.size, c.classes, c.depth, c.base, c.vol);
            have = run_child(cmd, &tms, &tvps, &tmib);
        }
        char a1[32] = "n/a", a2[32] = "n/a", a3[32] = "n/a", r1[32] = "n/a", r2[32] = "n/a";
        if (have) {
            snprintf(a1, sizeof a1, "%.1f", tms), snprintf(a2, sizeof a2, "%.3g", tvps), snprintf(a3, sizeof a3, "%.0f", tmib);
            snprintf(r1, sizeof r1, "%.2fx", tms / ms), snprintf(r2, sizeof r2, "%.2fx", vps / tvps);
        }
        printf("%-8d %10.1f %12.3g %8.0f %11s %12s %8s %9s %9s\n", threads, ms, vps, mib, a1, a2, a3, r1, r2);
    }
    printf("step x > 1: bpc's step is faster than PyTorch's; infer x > 1: bpc infers more voxels per second.\n");
    return 0;
}
