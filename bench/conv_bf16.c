/* bench/conv_bf16.c — Conv3d forward and backward, float32 (the kernels
 * Conv's update() and backward pick) against bf16 (layers/conv_bf16.c), on one shape:
 *   conv_bf16 [B N C_in C_out [threads]]   default 4 32 16 32, at 1 and 2 threads
 * x (B, N, N, N, C_in), kernel 3, SAME, stride 1. Columns: the forward, dx,
 * dw (with db: the float32 direct dw kernel sums db as it goes; bf16's dw
 * adds the float32 db pass it runs with in Conv's backward) and their total.
 * Median of 7 rounds after a warm-up, float32 and bf16 taking turns pass by
 * pass (the machine's drift falls on both); GFLOP/s count 2 * B * N^3 * 27 *
 * C_in * C_out per pass (db not counted). The bf16 row is printed only where
 * bp_bf16_available(). */
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

/* One pass's operands: out = f(in...). */
typedef struct pass_args {
    const bp__conv_geom *g;
    float *y, *dx, *dw, *db;
    const float *x, *w, *b, *dy;
} pass_args;

typedef bp_status (*pass_fn)(const pass_args *);

static bp_status fwd_float32(const pass_args *a)
{
    if (bp__conv_direct_ok_fwd(a->g)) return bp__conv_forward_direct(a->g, a->y, a->x, a->w, a->b);
    return bp__conv_forward_gemm(a->g, a->y, a->x, a->w, a->b);
}

static bp_status dx_float32(const pass_args *a)
{
    if (bp__conv_direct_ok_dx(a->g)) return bp__conv_dx_direct(a->g, a->dx, a->dy, a->w);
    return bp__conv_backward_gemm(a->g, a->dx, NULL, a->dy, a->x, a->w);
}

static bp_status dw_float32(const pass_args *a)
{
    if (bp__conv_direct_ok_dw(a->g)) return bp__conv_dw_direct(a->g, a->dw, a->db, a->dy, a->x);
    bp_status st = bp__conv_backward_gemm(a->g, NULL, a->dw, a->dy, a->x, a->w);
    return st ? st : bp__conv_dbias(a->g, a->db, a->dy);
}

static bp_status fwd_bf16(const pass_args *a) { return bp__conv_forward_bf16(a->g, a->y, a->x, a->w, a->b); }
static bp_status dx_bf16(const pass_args *a) { return bp__conv_dx_bf16(a->g, a->dx, a->dy, a->w); }

static bp_status dw_bf16(const pass_args *a)
{
    bp_status st = bp__conv_dw_bf16(a->g, a->dw, a->dy, a->x);
    return st ? st : bp__conv_dbias(a->g, a->db, a->dy);
}

/* Times the three passes of f32 and of bf (NULL: f32 only), taking turns
 * pass by pass (f32 fwd, bf fwd, f32 dx, ...) for RUNS rounds after a
 * warm-up, so that drift in the machine's speed (other jobs) falls on both;
 * prints each one's medians, and the median over rounds of the ratio of the
 * two rounds' totals. */
static void rows(const char *n32, const char *nbf, const pass_fn f32[3], const pass_fn bf[3], const pass_args *a,
                 double gflop)
{
    double t[2][3][RUNS], tot[2][RUNS], ratio[RUNS];
    const pass_fn *fs[2] = {f32, bf};
    const int nk = bf ? 2 : 1;
    for (int r = -1; r < RUNS; r++) {
        for (int k = 0; k < nk; k++)
            if (r >= 0) tot[k][r] = 0;
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < nk; k++) {
                double t0 = bench_now_ms();
                if (fs[k][i](a) != BP_OK) fprintf(stderr, "conv_bf16: %s\n", bp_last_error());
                double dt = bench_now_ms() - t0;
                if (r >= 0) t[k][i][r] = dt, tot[k][r] += dt;
            }
        if (r >= 0 && bf) ratio[r] = tot[0][r] / tot[1][r];
    }
    for (int k = 0; k < nk; k++) {
        printf("  %-24s", k ? nbf : n32);
        for (int i = 0; i < 3; i++) {
            double m = bench_median(t[k][i], RUNS);
            printf(" %8.2f ms %5.1f GF/s", m, gflop / m * 1e3);
        }
        printf(" | %8.2f ms", bench_median(tot[k], RUNS));
        if (k) printf("  (float32 / bf16: %.2fx)", bench_median(ratio, RUNS));
        printf("\n");
    }
}

static int usage(FILE *f)
{
    fprintf(f, "usage: conv_bf16 [B N C_in C_out [threads]]   (default 4 32 16 32, at 1 and 2 threads)\n"
               "Times Conv3d (kernel 3, SAME) on x (B,N,N,N,C_in): forward, dx, dw (+db) and their total,\n"
               "bpc float32 against bpc bf16. PyTorch is not run here; bench/conv3d has the PyTorch columns for float32.\n");
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
    int th_lo = argc > 5 ? atoi(argv[5]) : 1, th_hi = argc > 5 ? th_lo : 2;
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
    float *dy = malloc(sizeof(float) * (size_t)ny), *dx = malloc(sizeof(float) * (size_t)nx);
    float *dw = malloc(sizeof(float) * (size_t)nw), *db = malloc(sizeof(float) * (size_t)g.Cout);
    if (!x || !w || !b || !y || !dy || !dx || !dw || !db) return 1;
    unsigned s = 1;
    for (int64_t i = 0; i < nx; i++) x[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < nw; i++) w[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < ny; i++) dy[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < g.Cout; i++) b[i] = 0.1f;
    const pass_args a = {.g = &g, .y = y, .dx = dx, .dw = dw, .db = db, .x = x, .w = w, .b = b, .dy = dy};
    const double gflop = 2.0 * (double)g.B * (double)g.Pout * (double)g.K * (double)g.Cout * 1e-9;
    /* the bf16 row runs what Conv does under BP_PRECISION_BF16: each pass in
     * bf16 where its kernel suits the shape, float32 otherwise (named) */
    const pass_fn f32[3] = {fwd_float32, dx_float32, dw_float32};
    const bool ok[3] = {bp__conv_bf16_ok(&g), bp__conv_bf16_ok_dx(&g), bp__conv_bf16_ok_dw(&g)};
    const pass_fn bf[3] = {ok[0] ? fwd_bf16 : fwd_float32, ok[1] ? dx_bf16 : dx_float32, ok[2] ? dw_bf16 : dw_float32};
    const bool bf16 = bp_bf16_available() && (ok[0] || ok[1] || ok[2]);
    char bfname[64];
    snprintf(bfname, sizeof bfname, "bf16%s%s%s", ok[0] ? "" : " fwd:f32", ok[1] ? "" : " dx:f32", ok[2] ? "" : " dw:f32");
    for (int th = th_lo; th <= th_hi; th++) {
        omp_set_num_threads(th);
        printf("Conv3d %d->%d on (%d,%d,%d,%d,%d), kernel 3 SAME, %d thread(s), median of %d\n", cin, cout, B, N, N, N,
               cin, th, RUNS);
        printf("  %-24s %-22s %-22s %-22s | %s\n", "", "forward", "dx", "dw (+db)", "total");
        char name[96];
        snprintf(name, sizeof name, "float32 (%s/%s)", bp__conv_direct_ok_fwd(&g) ? "direct" : "gemm",
                 bp__conv_direct_ok_dx(&g) ? "direct" : "gemm");
        rows(name, bfname, f32, bf16 ? bf : NULL, &a, gflop);
        if (!bf16) printf("  bf16: not measured (no AVX512-BF16 here, or the shape is not one for the bf16 kernels)\n");
    }
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db);
    bp_node_free(node);
    return 0;
}
