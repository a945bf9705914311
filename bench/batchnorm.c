/* bench/batchnorm.c — bpc's BatchNorm kernels against oneDNN and PyTorch, timed in one run.
 *
 * Shapes are PyTorch's N x C x D x H x W: 8x32x32^3 (33.5 MB), 16x64x16^3 (16.8 MB)
 * and 4x16x64^3 (67 MB, larger than the 32 MiB L3). bpc stores them as (B,H,W,D,C)
 * and oneDNN as ndhwc: both are the same (M, C) matrix, M = N*D*H*W, C contiguous.
 * Operations: forward train (batch statistics + normalise), forward eval (running
 * statistics), backward train (dx, dscale, dbias through the batch statistics).
 *
 * Every time is the median (--min: the minimum) of --reps runs after --warmup runs,
 * on buffers allocated and written once before timing, so no timed run page-faults
 * (the first-touch trap). bpc and oneDNN take turns in --rounds rounds (see
 * time_pair). PyTorch runs in a child (/usr/bin/python3 bench/batchnorm_torch.py)
 * with the same thread count, for both NCDHW and channels_last_3d. Effective bandwidth
 * uses the byte model of the speed goals: 12, 8 and 20 bytes per element; the
 * "DRAM" column is the fraction of the DRAM limit it reaches, measured at the start
 * of this run at each thread count (bench_dram_gbs: a read-only sum or a triad
 * counted with its write-allocate reads, whichever is faster), printed only for
 * tensors at least twice the L3 (smaller ones are partly served from the L3,
 * which that limit does not bound).
 * "xDNNL", "xNCDHW" and "xCL3d" are speedups: the other's time over bpc's.
 * After each shape it compares bpc's outputs with oneDNN's, and both batch
 * variances with a float64 two-pass reference. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../layers/batchnorm_internal.h"
#include "bench_common.h"
#ifdef BPC_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

#ifndef BP_BENCH_DIR
#define BP_BENCH_DIR "bench"
#endif

enum { OP_FWD_TRAIN, OP_FWD_EVAL, OP_BWD, N_OPS };
static const char *const op_names[N_OPS] = {"forward train", "forward eval", "backward train"};
static const char *const op_keys[N_OPS] = {"fwd_train", "fwd_eval", "bwd"};
static const double op_bytes[N_OPS] = {12, 8, 20}; /* bytes per element in the byte model */

typedef struct shape {
    int n, c, d, h, w;
} shape;

static const shape default_shapes[] = {{8, 32, 32, 32, 32}, {16, 64, 16, 16, 16}, {4, 16, 64, 64, 64}};

#define MAX_SHAPES 8
typedef struct opts {
    int reps, warmup, torch, dnnl, use_min;
    int rounds; /* turns bpc and oneDNN take at each op (see time_pair) */
    int threads[8], nthreads;
    shape shapes[MAX_SHAPES]; /* the default three unless --shape is given */
    int nshapes;
} opts;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of t[0..n), or its minimum with --min. */
static int stat_min;
static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    if (stat_min) return t[0];
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float) + 64) != 0) {
        fprintf(stderr, "batchnorm bench: cannot allocate %zu floats\n", n);
        exit(1);
    }
    return p;
}

/* Deterministic pseudo-normal values (sum of uniforms), also touching every page. */
static void fill(float *p, size_t n, uint64_t seed, float offset)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        float acc = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            acc += (float)((s >> 40) & 0xffffff) / 16777216.0f;
        }
        p[i] = offset + (acc - 2.0f) * 1.7f;
    }
}

/* ------------------------------------------------------------------ bpc */

typedef struct bufs {
    int64_t M, C;
    float *x, *y, *dy, *dx, *mean, *invstd, *var, *rm, *rv, *scale, *bias, *ds, *db;
    void *work;
} bufs;

static int run_bpc(bufs *b, int op)
{
    bp_status st = BP_OK;
    switch (op) {
    case OP_FWD_TRAIN:
        st = bp__bn_forward_train(b->y, b->mean, b->invstd, b->var, b->x, b->scale, b->bias, b->M,
                                 b->C, 1e-5, b->work);
        break;
    case OP_FWD_EVAL:
        st = bp__bn_forward_eval(b->y, b->x, b->rm, b->rv, b->scale, b->bias, b->M, b->C, 1e-5,
                                b->work);
        break;
    default:
        st = bp__bn_backward_train(b->dx, b->ds, b->db, b->dy, b->x, b->mean, b->invstd, b->scale,
                                  b->M, b->C, b->work);
        break;
    }
    if (st) fprintf(stderr, "batchnorm bench: %s\n", bp_last_error());
    return st == BP_OK;
}

/* ------------------------------------------------------------------ oneDNN */

#ifdef BPC_HAVE_DNNL
typedef struct dnn {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t prim[N_OPS];
    dnnl_memory_t mems[16];
    int nmems;
    dnnl_exec_arg_t args[N_OPS][10];
    int nargs[N_OPS];
    float *y, *mean, *var, *dx, *ds, *db; /* oneDNN's own outputs, to compare with bpc's */
} dnn;

#define DN(call)                                                                           \
    do {                                                                                   \
        dnnl_status_t dn_st_ = (call);                                                     \
        if (dn_st_ != dnnl_success) {                                                      \
            fprintf(stderr, "oneDNN: %s failed (status %d)\n", #call, (int)dn_st_);        \
            return 0;                                                                      \
        }                                                                                  \
    } while (0)

static int dn_mem(dnn *d, dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *ptr)
{
    DN(dnnl_memory_create(m, md, d->eng, ptr));
    d->mems[d->nmems++] = *m;
    return 1;
}

static int dn_setup(dnn *d, const shape *s, bufs *b)
{
    memset(d, 0, sizeof *d);
    size_t n = (size_t)b->M * (size_t)b->C;
    d->y = alloc_floats(n);
    d->dx = alloc_floats(n);
    memset(d->y, 0, n * sizeof(float));
    memset(d->dx, 0, n * sizeof(float));
    d->mean = alloc_floats((size_t)b->C);
    d->var = alloc_floats((size_t)b->C);
    d->ds = alloc_floats((size_t)b->C);
    d->db = alloc_floats((size_t)b->C);
    DN(dnnl_engine_create(&d->eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t data_md, stat_md;
    dnnl_dims_t dims = {s->n, s->c, s->d, s->h, s->w}, cdims = {s->c};
    DN(dnnl_memory_desc_init_by_tag(&data_md, 5, dims, dnnl_f32, dnnl_ndhwc));
    DN(dnnl_memory_desc_init_by_tag(&stat_md, 1, cdims, dnnl_f32, dnnl_a));
    dnnl_memory_t src, dst, mean, var, rm, rv, scale, shift, ddst, dsrc, dscale, dshift;
    if (!dn_mem(d, &src, &data_md, b->x) || !dn_mem(d, &dst, &data_md, d->y) ||
        !dn_mem(d, &mean, &stat_md, d->mean) || !dn_mem(d, &var, &stat_md, d->var) ||
        !dn_mem(d, &rm, &stat_md, b->rm) || !dn_mem(d, &rv, &stat_md, b->rv) ||
        !dn_mem(d, &scale, &stat_md, b->scale) || !dn_mem(d, &shift, &stat_md, b->bias) ||
        !dn_mem(d, &ddst, &data_md, b->dy) || !dn_mem(d, &dsrc, &data_md, d->dx) ||
        !dn_mem(d, &dscale, &stat_md, d->ds) || !dn_mem(d, &dshift, &stat_md, d->db))
        return 0;
    const unsigned ss = dnnl_use_scale | dnnl_use_shift;
    dnnl_batch_normalization_desc_t desc;
    dnnl_primitive_desc_t fwd_pd, pd;

    DN(dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_training, &data_md, 1e-5f, ss));
    DN(dnnl_primitive_desc_create(&fwd_pd, &desc, NULL, d->eng, NULL));
    DN(dnnl_primitive_create(&d->prim[OP_FWD_TRAIN], fwd_pd));
    dnnl_exec_arg_t a0[] = {{DNNL_ARG_SRC, src},   {DNNL_ARG_DST, dst},     {DNNL_ARG_MEAN, mean},
                            {DNNL_ARG_VARIANCE, var}, {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
    memcpy(d->args[OP_FWD_TRAIN], a0, sizeof a0);
    d->nargs[OP_FWD_TRAIN] = 6;

    DN(dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_inference, &data_md, 1e-5f,
                                                  ss | dnnl_use_global_stats));
    DN(dnnl_primitive_desc_create(&pd, &desc, NULL, d->eng, NULL));
    DN(dnnl_primitive_create(&d->prim[OP_FWD_EVAL], pd));
    DN(dnnl_primitive_desc_destroy(pd));
    dnnl_exec_arg_t a1[] = {{DNNL_ARG_SRC, src},   {DNNL_ARG_DST, dst},     {DNNL_ARG_MEAN, rm},
                            {DNNL_ARG_VARIANCE, rv}, {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
    memcpy(d->args[OP_FWD_EVAL], a1, sizeof a1);
    d->nargs[OP_FWD_EVAL] = 6;

    DN(dnnl_batch_normalization_backward_desc_init(&desc, dnnl_backward, &data_md, &data_md, 1e-5f, ss));
    DN(dnnl_primitive_desc_create(&pd, &desc, NULL, d->eng, fwd_pd));
    DN(dnnl_primitive_create(&d->prim[OP_BWD], pd));
    DN(dnnl_primitive_desc_destroy(pd));
    DN(dnnl_primitive_desc_destroy(fwd_pd));
    dnnl_exec_arg_t a2[] = {{DNNL_ARG_SRC, src},          {DNNL_ARG_MEAN, mean},
                            {DNNL_ARG_VARIANCE, var},     {DNNL_ARG_DIFF_DST, ddst},
                            {DNNL_ARG_SCALE, scale},      {DNNL_ARG_SHIFT, shift},
                            {DNNL_ARG_DIFF_SRC, dsrc},    {DNNL_ARG_DIFF_SCALE, dscale},
                            {DNNL_ARG_DIFF_SHIFT, dshift}};
    memcpy(d->args[OP_BWD], a2, sizeof a2);
    d->nargs[OP_BWD] = 9;
    return 1;
}

static int dn_run(dnn *d, int op)
{
    DN(dnnl_primitive_execute(d->prim[op], d->stream, d->nargs[op], d->args[op]));
    DN(dnnl_stream_wait(d->stream));
    return 1;
}

static void dn_free(dnn *d)
{
    for (int i = 0; i < N_OPS; i++)
        if (d->prim[i]) dnnl_primitive_destroy(d->prim[i]);
    for (int i = 0; i < d->nmems; i++) dnnl_memory_destroy(d->mems[i]);
    if (d->stream) dnnl_stream_destroy(d->stream);
    if (d->eng) dnnl_engine_destroy(d->eng);
    free(d->y); free(d->dx); free(d->mean); free(d->var); free(d->ds); free(d->db);
}

/* max |a - b| / max |b|: the error relative to the output's scale. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    return s > 0 ? m / s : m;
}
#endif

/* ------------------------------------------------------------------ timing */

/* Times bpc's op and, when d is given, oneDNN's: o->rounds rounds, each of which
 * runs --warmup untimed and then a share of the --reps timed runs of bpc, then the
 * same for oneDNN. Each library is timed in its own steady state (what a run of the same
 * op leaves in cache: a streaming-store kernel leaves its input in L3 for the next
 * one to find), and the rounds spread both over the same stretch of machine load.
 * Medians (or minima) over all timed runs into *ours and *theirs. */
#ifdef BPC_HAVE_DNNL
static void time_pair(bufs *b, dnn *d, int op, const opts *o, double *ours, double *theirs)
#else
static void time_pair(bufs *b, void *d, int op, const opts *o, double *ours, double *theirs)
#endif
{
    double tb[256], td[256];
    int nb = 0, nd = 0;
    const int per = (o->reps + o->rounds - 1) / o->rounds;
    *ours = *theirs = NAN;
    for (int round = 0; round < o->rounds; round++) {
        for (int i = 0; i < o->warmup; i++) run_bpc(b, op);
        for (int i = 0; i < per && nb < o->reps; i++) {
            double t0 = now_ms();
            if (!run_bpc(b, op)) return;
            tb[nb++] = now_ms() - t0;
        }
#ifdef BPC_HAVE_DNNL
        if (d && op == OP_BWD && !dn_run(d, OP_FWD_TRAIN)) d = NULL; /* its own saved statistics */
        for (int i = 0; d && i < o->warmup; i++) dn_run(d, op);
        for (int i = 0; d && i < per && nd < o->reps; i++) {
            double t0 = now_ms();
            if (!dn_run(d, op)) d = NULL;
            td[nd++] = now_ms() - t0;
        }
#endif
    }
    *ours = median(tb, nb);
    if (d && nd > 0) *theirs = median(td, nd);
}

/* ------------------------------------------------------------------ PyTorch */

/* Runs bench/batchnorm_torch.py; fills ms[layout][op] (NAN where missing). */
static void run_torch(const shape *s, int threads, const opts *o, double ms[2][N_OPS])
{
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < N_OPS; k++) ms[l][k] = NAN;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s/batchnorm_torch.py --shape %d %d %d %d %d --threads %d "
             "--reps %d --warmup %d%s 2>&1",
             BP_BENCH_DIR, s->n, s->c, s->d, s->h, s->w, threads, o->reps, o->warmup,
             o->use_min ? " --min" : "");
    FILE *p = popen(cmd, "r");
    if (!p) {
        fprintf(stderr, "batchnorm bench: cannot run %s\n", cmd);
        return;
    }
    char line[512], layout[64], op[64];
    double v;
    while (fgets(line, sizeof line, p)) {
        if (sscanf(line, "RESULT %63s %63s %lf", layout, op, &v) == 3) {
            int l = strcmp(layout, "ncdhw") == 0 ? 0 : strcmp(layout, "channels_last_3d") == 0 ? 1 : -1;
            for (int k = 0; k < N_OPS; k++)
                if (l >= 0 && strcmp(op, op_keys[k]) == 0) ms[l][k] = v;
        } else if (strncmp(line, "INFO", 4) == 0) {
            printf("  torch: %s", line + 5);
        } else {
            printf("  torch says: %s", line);
        }
    }
    int rc = pclose(p);
    if (rc != 0) printf("  torch: the child exited with status %d\n", rc);
}

/* ------------------------------------------------------------------ main */

static void usage(const char *argv0)
{
    printf("usage: %s [--reps N] [--warmup N] [--rounds N] [--threads LIST] [--shape N,C,D,H,W]... [--quick] [--min]\n"
           "          [--no-torch] [--no-onednn]\n"
           "Times bpc's BatchNorm kernels (forward train, forward eval, backward train) on\n"
           "8x32x32^3, 16x64x16^3 and 4x16x64^3 (N x C x D x H x W) beside oneDNN's ndhwc batch\n"
           "normalization and PyTorch 1.13 (NCDHW and channels_last_3d), all in this run.\n"
           "  --reps N       timed repetitions per measurement, median reported (default 15, max 255)\n"
           "  --warmup N     untimed runs before each round of timed ones (default 2)\n"
           "  --rounds N     turns bpc and oneDNN take at each op, reps split between them\n"
           "                 (default 5; more rounds share a fluctuating load more evenly)\n"
           "  --threads LIST comma-separated OpenMP thread counts (default 1,2)\n"
           "  --shape S      time this N,C,D,H,W shape instead of the three above (repeat\n"
           "                 for several, at most 8)\n"
           "  --quick        5 reps, 1 warm-up: a smoke run, numbers are noisier\n"
           "  --min          report the fastest rep instead of the median (for a machine\n"
           "                 shared with other work, where the median measures the load)\n"
           "  --no-torch     skip PyTorch (it needs /usr/bin/python3 with torch)\n"
           "  --no-onednn    skip oneDNN\n",
           argv0);
}

static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){15, 2, 1, 1, 0, 5, {1, 2}, 2, {{0}}, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(argv[0]);
            exit(0);
        } else if (!strcmp(a, "--quick")) {
            o->reps = 5;
            o->warmup = 1;
        } else if (!strcmp(a, "--min")) {
            o->use_min = stat_min = 1;
        } else if (!strcmp(a, "--no-torch")) {
            o->torch = 0;
        } else if (!strcmp(a, "--no-onednn")) {
            o->dnnl = 0;
        } else if (!strcmp(a, "--reps") && i + 1 < argc) {
            o->reps = atoi(argv[++i]);
        } else if (!strcmp(a, "--rounds") && i + 1 < argc) {
            o->rounds = atoi(argv[++i]);
        } else if (!strcmp(a, "--warmup") && i + 1 < argc) {
            o->warmup = atoi(argv[++i]);
        } else if (!strcmp(a, "--shape") && i + 1 < argc) {
            shape *sh = &o->shapes[o->nshapes];
            char end;
            if (o->nshapes == MAX_SHAPES ||
                sscanf(argv[++i], "%d,%d,%d,%d,%d%c", &sh->n, &sh->c, &sh->d, &sh->h, &sh->w, &end) != 5 ||
                sh->n < 1 || sh->c < 1 || sh->d < 1 || sh->h < 1 || sh->w < 1 ||
                (double)sh->n * sh->d * sh->h * sh->w < 2 ||
                (double)sh->n * sh->c * sh->d * sh->h * sh->w * 4 > 4e9) {
                fprintf(stderr, "--shape wants N,C,D,H,W: positive, more than one value per channel, "
                                "at most 1e9 elements and 8 shapes; got %s\n", argv[i]);
                return 0;
            }
            o->nshapes++;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            o->nthreads = 0;
            for (char *tok = strtok(argv[++i], ","); tok && o->nthreads < 8; tok = strtok(NULL, ","))
                o->threads[o->nthreads++] = atoi(tok);
        } else {
            fprintf(stderr, "unknown or incomplete option %s\n", a);
            usage(argv[0]);
            return 0;
        }
    }
    if (o->reps < 1 || o->reps > 255 || o->warmup < 0 || o->nthreads < 1 || o->rounds < 1 ||
        o->rounds > o->reps) {
        fprintf(stderr, "need 1 <= reps <= 255, 1 <= rounds <= reps, warmup >= 0 and at least one "
                        "thread count\n");
        return 0;
    }
    if (o->nshapes == 0) {
        memcpy(o->shapes, default_shapes, sizeof default_shapes);
        o->nshapes = (int)(sizeof default_shapes / sizeof default_shapes[0]);
    }
    for (int i = 0; i < o->nthreads; i++)
        if (o->threads[i] < 1) {
            fprintf(stderr, "thread counts must be >= 1\n");
            return 0;
        }
    return 1;
}

static void print_ratio(double other, double ours)
{
    if (isnan(other) || isnan(ours))
        printf(" %8s %6s", "-", "-");
    else
        printf(" %8.2f %5.2fx", other, other / ours);
}

int main(int argc, char **argv)
{
    opts o;
    if (!parse_args(argc, argv, &o)) return 2;
    printf("bpc BatchNorm kernels, float32, %d reps (%s), %d warm-up runs per round\n", o.reps,
           o.use_min ? "minimum" : "median", o.warmup);
    double triad[8];
    printf("limit, %s, measured now:", BENCH_DRAM_LIMIT_NAME);
    for (int ti = 0; ti < o.nthreads; ti++) {
        triad[ti] = bench_dram_gbs(o.threads[ti]);
        printf(" %.1f GB/s (%d thread%s)", triad[ti], o.threads[ti], o.threads[ti] > 1 ? "s" : "");
    }
    printf("\n(the DRAM column: tensors of at least twice the %.0f MiB L3 only)\n", BENCH_L3_BYTES / (1 << 20));
#ifdef BPC_HAVE_DNNL
    const dnnl_version_t *v = dnnl_version();
    if (o.dnnl) printf("oneDNN %d.%d.%d (ndhwc, forward train / inference with global stats, backward)\n", v->major, v->minor, v->patch);
    else printf("oneDNN: skipped (--no-onednn)\n");
#else
    printf("oneDNN: not measured (bench built without libdnnl-dev: apt-get install libdnnl-dev)\n");
    o.dnnl = 0;
#endif
    if (!o.torch) printf("PyTorch: skipped (--no-torch)\n");

    for (int si = 0; si < o.nshapes; si++) {
        const shape *s = &o.shapes[si];
        bufs b;
        b.C = s->c;
        b.M = (int64_t)s->n * s->d * s->h * s->w;
        size_t n = (size_t)b.M * (size_t)b.C;
        b.x = alloc_floats(n); b.y = alloc_floats(n); b.dy = alloc_floats(n); b.dx = alloc_floats(n);
        fill(b.x, n, 1, 0.5f);
        fill(b.dy, n, 2, 0.0f);
        memset(b.y, 0, n * sizeof(float));
        memset(b.dx, 0, n * sizeof(float));
        float **cs[] = {&b.mean, &b.invstd, &b.var, &b.rm, &b.rv, &b.scale, &b.bias, &b.ds, &b.db};
        for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
            *cs[k] = alloc_floats((size_t)b.C);
            for (int64_t c = 0; c < b.C; c++) (*cs[k])[c] = 0;
        }
        for (int64_t c = 0; c < b.C; c++) {
            b.scale[c] = 1.0f + 0.01f * (float)c;
            b.bias[c] = 0.1f * (float)(c % 7);
            b.rm[c] = 0.5f;
            b.rv[c] = 1.0f;
        }
        size_t wbytes = bp__bn_workspace_size(b.M, b.C);
        b.work = malloc(wbytes);
        memset(b.work, 0, wbytes);
        printf("\nshape %dx%dx%dx%dx%d (N,C,D,H,W; bpc (B,H,W,D,C) = M %lld x C %lld), %.1f MB, workspace %zu B\n",
               s->n, s->c, s->d, s->h, s->w, (long long)b.M, (long long)b.C,
               (double)n * 4 / 1e6, wbytes);
#ifdef BPC_HAVE_DNNL
        dnn d;
        int dn_ok = 0;
#endif
        for (int ti = 0; ti < o.nthreads; ti++) {
            int t = o.threads[ti];
            omp_set_num_threads(t);
#ifdef BPC_HAVE_DNNL
            /* oneDNN fixes its thread partition when a primitive is created: create
             * them under the thread count they will run with */
            if (dn_ok) dn_free(&d);
            dn_ok = o.dnnl && dn_setup(&d, s, &b);
            if (o.dnnl && !dn_ok) printf("  oneDNN: setup failed, not measured\n");
#endif
            double bw = triad[ti];
            double ours[N_OPS], dn[N_OPS], tc[2][N_OPS];
            for (int k = 0; k < N_OPS; k++)
#ifdef BPC_HAVE_DNNL
                time_pair(&b, dn_ok ? &d : NULL, k, &o, &ours[k], &dn[k]);
#else
                time_pair(&b, NULL, k, &o, &ours[k], &dn[k]);
#endif
            if (o.torch) run_torch(s, t, &o, tc);
            else
                for (int l = 0; l < 2; l++)
                    for (int k = 0; k < N_OPS; k++) tc[l][k] = NAN;
            printf("  %d thread%s  %-15s %8s %7s %6s %8s %6s %8s %6s %8s %6s\n", t, t > 1 ? "s" : " ",
                   "", "bpc ms", "GB/s", "DRAM", "oneDNN", "xDNNL", "NCDHW", "xNCDHW", "CL3d", "xCL3d");
            for (int k = 0; k < N_OPS; k++) {
                double gbs = op_bytes[k] * (double)n / (ours[k] * 1e6);
                if ((double)n * sizeof(float) >= 2.0 * BENCH_L3_BYTES)
                    printf("  %-26s %8.3f %7.1f %5.0f%%", op_names[k], ours[k], gbs, 100 * gbs / bw);
                else
                    printf("  %-26s %8.3f %7.1f %6s", op_names[k], ours[k], gbs, "(L3)");
                print_ratio(dn[k], ours[k]);
                print_ratio(tc[0][k], ours[k]);
                print_ratio(tc[1][k], ours[k]);
                printf("\n");
            }
            fflush(stdout);
        }
#ifdef BPC_HAVE_DNNL
        if (dn_ok) { /* same inputs, so the outputs should agree to float rounding */
            run_bpc(&b, OP_FWD_TRAIN);
            dn_run(&d, OP_FWD_TRAIN);
            double ey = rel_diff(b.y, d.y, n), em = rel_diff(b.mean, d.mean, (size_t)b.C);
            memset(b.ds, 0, sizeof(float) * (size_t)b.C);
            memset(b.db, 0, sizeof(float) * (size_t)b.C);
            run_bpc(&b, OP_BWD);
            dn_run(&d, OP_BWD);
            double edx = rel_diff(b.dx, d.dx, n), eds = rel_diff(b.ds, d.ds, (size_t)b.C);
            double edb = rel_diff(b.db, d.db, (size_t)b.C);
            printf("  check vs oneDNN (max |diff| / max |oneDNN|): y %.1e, mean %.1e, dx %.1e, "
                   "dscale %.1e, dbias %.1e\n", ey, em, edx, eds, edb);
            /* whose batch variance is right: both against a float64 two-pass reference */
            double eb = 0, ed = 0;
            for (int64_t c = 0; c < b.C; c++) {
                double m = 0, v = 0;
                for (int64_t r = 0; r < b.M; r++) m += b.x[r * b.C + c];
                m /= (double)b.M;
                for (int64_t r = 0; r < b.M; r++) v += (b.x[r * b.C + c] - m) * (b.x[r * b.C + c] - m);
                v /= (double)b.M;
                eb = fmax(eb, fabs(b.var[c] - v) / v);
                ed = fmax(ed, fabs(d.var[c] - v) / v);
            }
            printf("  batch variance vs float64: max relative error bpc %.1e, oneDNN %.1e\n", eb, ed);
            dn_free(&d);
        }
#endif
        free(b.x); free(b.y); free(b.dy); free(b.dx); free(b.work);
        for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) free(*cs[k]);
    }
    return 0;
}
