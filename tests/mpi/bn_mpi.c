/* tests/mpi/bn_mpi.c — cross-replica BatchNorm over MPI, float64, under
 * mpiexec with 2, 3 and 4 ranks. Every rank holds the whole global batch,
 * takes its share (uneven, empty and single-row shares included), runs a
 * BatchNorm3d bound to the "batch" axis, and compares with a plain BatchNorm3d
 * on the whole batch in this process: the output rows, the running
 * statistics, dx rows and the parameter gradients summed over ranks, to
 * 1e-12. On 4 ranks, groups [[0,1],[2,3]] equal each pair run alone. A bad
 * group set and ranks calling BatchNorm a different number of times fail on
 * every rank. Prints "N passed, M failed" on rank 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/bpc.h>
#include <bpc/comm_mpi.h>
#include "mpi_check.h"


#define H 3
#define W 2
#define D 2
#define C 4
#define ROW (H * W * D * C) /* values per sample */
#define TOL 1e-12

static double xval(int64_t s, int64_t k) { return sin(0.37 * (double)(s * ROW + k)) * (1 + 0.2 * (double)(k % C)) + (double)(k % C); }
static double dyval(int64_t s, int64_t k) { return cos(0.11 * (double)(s * ROW + k) + 1); }

static bp_node *make_bn(const char *axis, const int *groups, size_t n_groups, int group_size)
{
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    bp_mode train = bp_training_mode(1);
    o.mode = &train;
    o.momentum = 0.9;
    o.axis_name = axis;
    o.axis_index_groups = groups, o.n_axis_index_groups = n_groups, o.axis_index_group_size = group_size;
    bp_node *n = NULL;
    if (bp_batchnorm3d_new(&n, C, &o)) fprintf(stderr, "rank %d: bn: %s\n", g_rank, bp_last_error());
    /* non-trivial affine parameters, the same on every rank */
    bp_batchnorm *bn = (bp_batchnorm *)n;
    for (int c = 0; c < C; c++) {
        ((double *)bn->scale->value->data)[c] = 0.5 + 0.25 * c;
        ((double *)bn->bias->value->data)[c] = 0.1 * c - 0.2;
    }
    return n;
}

/* Samples [lo, hi) through bn: y, and (with backward) dx and the parameter grads. */
static void run(bp_node *bn, int64_t lo, int64_t hi, bp_tensor **y, bp_tensor **dx)
{
    int64_t n = hi - lo;
    bp_tensor *x = NULL, *dy = NULL;
    bp_tensor_new(&x, BP_FLOAT64, 5, (int64_t[]){n, H, W, D, C});
    bp_tensor_new(&dy, BP_FLOAT64, 5, (int64_t[]){n, H, W, D, C});
    bp_tensor_new(dx, BP_FLOAT64, 5, (int64_t[]){n, H, W, D, C});
    for (int64_t s = 0; s < n; s++)
        for (int64_t k = 0; k < ROW; k++) {
            ((double *)x->data)[s * ROW + k] = xval(lo + s, k);
            ((double *)dy->data)[s * ROW + k] = dyval(lo + s, k);
        }
    bp_ag_make_leaf(x, *dx);
    bp_node_zero_grad(bn);
    bp_status st = bp_node_update(bn, x, y);
    CHECK(st == BP_OK, "update over [%lld, %lld)", (long long)lo, (long long)hi);
    if (!st) CHECK(bp_backward_with(*y, dy) == BP_OK, "backward");
    bp_tensor_free(x), bp_tensor_free(dy);
}

static double maxdiff(const double *a, const double *b, int64_t n)
{
    double w = 0;
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs(a[i] - b[i]));
    return w;
}

/* One split of a global batch over the ranks of comm (bound to "batch"):
 * counts[r] samples on rank r, in rank order. */
static void check_split(bp_comm *comm, const int *counts, const char *what)
{
    const int size = bp_comm_size(comm), rank = bp_comm_rank(comm);
    int64_t lo = 0, total = 0;
    for (int r = 0; r < size; r++) total += counts[r];
    for (int r = 0; r < rank; r++) lo += counts[r];
    bp_axis_bind("batch", comm);
    bp_node *sync = make_bn("batch", NULL, 0, 0), *ref = make_bn(NULL, NULL, 0, 0);
    bp_tensor *y = NULL, *dx = NULL, *ry = NULL, *rdx = NULL;
    for (int step = 0; step < 2; step++) { /* twice: the running statistics move twice */
        run(sync, lo, lo + counts[rank], &y, &dx);
        run(ref, 0, total, &ry, &rdx);
        if (!y || !ry) break;
        const int64_t off = lo * ROW, n = (int64_t)counts[rank] * ROW;
        CHECK(maxdiff((double *)y->data, (double *)ry->data + off, n) <= TOL, "%s: y differs by %g", what,
              maxdiff((double *)y->data, (double *)ry->data + off, n));
        CHECK(maxdiff((double *)dx->data, (double *)rdx->data + off, n) <= TOL, "%s: dx differs by %g", what,
              maxdiff((double *)dx->data, (double *)rdx->data + off, n));
        bp_batchnorm *a = (bp_batchnorm *)sync, *b = (bp_batchnorm *)ref;
        CHECK(maxdiff(a->running_mean->value->data, b->running_mean->value->data, C) <= TOL &&
                  maxdiff(a->running_var->value->data, b->running_var->value->data, C) <= TOL,
              "%s: running statistics differ", what);
        double g[2 * C];
        memcpy(g, a->scale->grad->data, sizeof(double) * C);
        memcpy(g + C, a->bias->grad->data, sizeof(double) * C);
        bp_comm_allreduce_f64(comm, g, 2 * C);
        CHECK(maxdiff(g, b->scale->grad->data, C) <= TOL && maxdiff(g + C, b->bias->grad->data, C) <= TOL,
              "%s: parameter gradients summed over ranks differ", what);
        bp_tensor_free(y), bp_tensor_free(dx), bp_tensor_free(ry), bp_tensor_free(rdx);
        y = dx = ry = rdx = NULL;
    }
    bp_node_free(sync), bp_node_free(ref);
    bp_axis_unbind("batch");
}

int main(void)
{
    bp_comm *w = NULL;
    if (bp_comm_mpi_world(&w)) {
        fprintf(stderr, "%s\n", bp_last_error());
        return 1;
    }
    g_rank = bp_comm_rank(w);
    const int size = bp_comm_size(w);
    if (size < 2 || size > 4) {
        fprintf(stderr, "bn_mpi: run it under mpiexec with 2 to 4 ranks (got %d)\n", size);
        return 2;
    }
    bp_share_save_fit(true);
    static const int splits[5][5][4] = {
        [2] = {{4, 4}, {3, 5}, {0, 8}, {1, 7}, {1, 1}},
        [3] = {{3, 3, 2}, {0, 5, 3}, {1, 1, 6}, {1, 1, 1}, {0, 0, 2}},
        [4] = {{2, 2, 2, 2}, {1, 3, 0, 4}, {1, 1, 1, 1}, {0, 0, 0, 3}, {5, 0, 1, 2}},
    };
    char what[64];
    for (int k = 0; k < 5; k++) {
        snprintf(what, sizeof what, "split %d", k);
        check_split(w, splits[size][k], what);
    }
    /* a global count of 1: an error on every rank */
    {
        bp_axis_bind("batch", w);
        bp_node *bn = make_bn("batch", NULL, 0, 0);
        bp_tensor *x = NULL, *y = NULL;
        bp_tensor_new(&x, BP_FLOAT64, 5, (int64_t[]){g_rank == 0, 1, 1, 1, C}); /* one value per channel in all */
        bp_status st = bp_node_update(bn, x, &y);
        CHECK(st == BP_EINVAL && strstr(bp_last_error(), "more than 1 value per channel"), "global count 1 -> %d", st);
        /* ranks calling BatchNorm a different number of times */
        bp_tensor_free(x);
        bp_tensor_new(&x, BP_FLOAT64, 5, (int64_t[]){2, H, W, D, C});
        for (int64_t i = 0; i < x->numel; i++) ((double *)x->data)[i] = xval(0, i);
        st = bp_node_update(bn, x, &y);
        bp_tensor_free(y), y = NULL;
        if (g_rank == 0) {
            st = bp_node_update(bn, x, &y); /* one call more than the others */
            bp_tensor_free(y), y = NULL;
        } else {
            st = bp_comm_agree(w, "the next collective", 1);
        }
        CHECK(st == BP_ECOMM, "a different number of calls -> %d", st);
        bp_tensor_free(x);
        bp_node_free(bn);
        bp_axis_unbind("batch");
    }
    if (size == 4) {
        /* groups [[0,1],[2,3]]: each pair as a 2-rank run of its own */
        bp_comm *pair = NULL;
        CHECK(bp_comm_split_groups(w, (int[]){0, 1, 2, 3}, (int[]){2, 2}, 2, &pair) == BP_OK, "pairs");
        const int counts[2][2] = {{3, 5}, {0, 8}};
        /* the grouped layer on the world vs the plain reference on the pair's union */
        bp_axis_bind("batch", w);
        bp_node *g = make_bn("batch", (int[]){0, 1, 2, 3}, 4, 2), *ref = make_bn(NULL, NULL, 0, 0);
        const int pr = g_rank / 2, me = g_rank % 2;
        int64_t lo = me ? counts[pr][0] : 0, total = counts[pr][0] + counts[pr][1];
        bp_tensor *y = NULL, *dx = NULL, *ry = NULL, *rdx = NULL;
        run(g, lo, lo + counts[pr][me], &y, &dx);
        run(ref, 0, total, &ry, &rdx);
        if (y && ry)
            CHECK(maxdiff((double *)y->data, (double *)ry->data + lo * ROW, counts[pr][me] * ROW) <= TOL &&
                      maxdiff((double *)dx->data, (double *)rdx->data + lo * ROW, counts[pr][me] * ROW) <= TOL,
                  "groups: y or dx differ from the pair alone");
        bp_tensor_free(y), bp_tensor_free(dx), bp_tensor_free(ry), bp_tensor_free(rdx);
        bp_node_free(g), bp_node_free(ref);
        /* a bad group set (rank 0 twice): an error on every rank, no hang */
        bp_node *bad = make_bn("batch", (int[]){0, 0, 1, 2}, 4, 2);
        bp_tensor *x = NULL;
        bp_tensor_new(&x, BP_FLOAT64, 5, (int64_t[]){2, H, W, D, C});
        bp_status st = bp_node_update(bad, x, &y);
        CHECK(st == BP_EINVAL && strstr(bp_last_error(), "axis_index_groups"), "bad groups -> %d", st);
        bp_tensor_free(x);
        bp_node_free(bad);
        bp_axis_unbind("batch");
        bp_comm_free(pair);
    }
    /* eval: no communication (rank 0 alone may run it) */
    if (g_rank == 0) {
        bp_axis_bind("batch", w);
        bp_node *bn = make_bn("batch", NULL, 0, 0);
        bp_tensor *x = NULL, *y = NULL;
        bp_tensor_new(&x, BP_FLOAT64, 5, (int64_t[]){1, H, W, D, C});
        bp_share_save_fit(false);
        CHECK(bp_node_update(bn, x, &y) == BP_OK, "eval alone");
        bp_share_save_fit(true);
        bp_tensor_free(x), bp_tensor_free(y);
        bp_node_free(bn);
        bp_axis_unbind("batch");
    }
    int rc = mpi_verdict(w);
    bp_comm_free(w);
    bp_comm_mpi_finalize();
    return rc;
}
