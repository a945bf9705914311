/* tests/mpi/dp_mpi.c — data-parallel training over MPI (bpc/data_parallel.h),
 * run by ctest under mpiexec with 3 and 4 ranks. Each rank trains a Dense
 * layer on its own, uneven share of one global batch (one rank has none);
 * after bp_dp_allreduce_grads every rank's gradient must equal the gradient
 * of the whole batch computed on one process, and after each SGD step the
 * replicas must be bitwise identical. Also: replicas that differ before the
 * broadcast are found, and ranks that pass other vars fail everywhere. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/bpc.h>
#include <bpc/comm_mpi.h>
#include "mpi_check.h"
#include <bpc/data_parallel.h>


#define NIN 4
#define NOUT 3

/* Rank r's sample count: uneven, and rank 1 has none. */
static int64_t count_of(int r) { return r == 1 ? 0 : 2 * r + 3; }

/* Global sample i's input and target (any rank can make any sample). */
static void sample(int64_t i, float *x, float *t)
{
    for (int j = 0; j < NIN; j++) x[j] = (float)sin(0.7 * (double)i + j);
    for (int j = 0; j < NOUT; j++) t[j] = (float)cos(0.3 * (double)i * (j + 1));
}

/* Gradients of scale * mse(model(x), t) over samples [lo, hi) into the vars' grads. */
static bp_status grads_scaled(bp_node *model, int64_t lo, int64_t hi, double scale);
static bp_status grads_over(bp_node *model, int64_t lo, int64_t hi) { return grads_scaled(model, lo, hi, 1); }

static bp_status grads_scaled(bp_node *model, int64_t lo, int64_t hi, double scale)
{
    bp_node_zero_grad(model);
    if (hi <= lo) return BP_OK;
    bp_tensor *x = NULL, *t = NULL, *y = NULL, *l = NULL, *ls = NULL;
    bp_status st = bp_tensor_new(&x, BP_FLOAT32, 2, (int64_t[]){hi - lo, NIN});
    if (!st) st = bp_tensor_new(&t, BP_FLOAT32, 2, (int64_t[]){hi - lo, NOUT});
    for (int64_t i = lo; !st && i < hi; i++)
        sample(i, (float *)x->data + (i - lo) * NIN, (float *)t->data + (i - lo) * NOUT);
    if (!st) st = bp_node_update(model, x, &y);
    if (!st) st = bp_mse(&l, y, t);
    if (!st) st = bp_mul_scalar(&ls, l, scale);
    if (!st) st = bp_backward(ls);
    bp_tensor_free(x), bp_tensor_free(t), bp_tensor_free(y), bp_tensor_free(l), bp_tensor_free(ls);
    return st;
}

int main(void)
{
    bp_comm *w = NULL;
    if (bp_comm_mpi_world(&w)) {
        fprintf(stderr, "%s\n", bp_last_error());
        return 1;
    }
    g_rank = bp_comm_rank(w);
    int size = bp_comm_size(w);
    if (size < 3) {
        fprintf(stderr, "dp_mpi: run it under mpiexec with 3 or more ranks (got %d)\n", size);
        return 2;
    }
    bp_share_save_fit(true);
    /* every rank starts from other weights (seeded by rank) */
    bp_rng rng;
    bp_rng_seed(&rng, 100 + (uint64_t)g_rank);
    bp_dense_opts o = bp_dense_defaults();
    o.rng = &rng;
    bp_mode train = bp_training_mode(1);
    o.mode = &train; /* parameters are TrainVars in training mode (BrainPy) */
    bp_node *model = NULL, *ref = NULL;
    bp_collector *vars = NULL, *rvars = NULL;
    CHECK(bp_dense_new(&model, NIN, NOUT, &o) == BP_OK, "dense");
    CHECK(bp_dense_new(&ref, NIN, NOUT, &o) == BP_OK, "dense ref");
    CHECK(bp_node_train_vars(model, NULL, &vars) == BP_OK && bp_node_train_vars(ref, NULL, &rvars) == BP_OK, "vars");

    bp_status st = bp_dp_check_replicas(w, vars);
    CHECK(st == BP_ECOMM && strstr(bp_last_error(), "differs from rank 0's"), "replicas differ at first -> %d", st);
    CHECK(bp_dp_broadcast_vars(w, vars, 0) == BP_OK, "broadcast");
    for (size_t i = 0; i < bp_collector_len(vars); i++) /* the reference starts from the same values */
        CHECK(bp_var_assign(bp_collector_var(rvars, i), bp_collector_var(vars, i)->value) == BP_OK, "copy");
    CHECK(bp_dp_check_replicas(w, vars) == BP_OK, "replicas equal after the broadcast");

    int64_t lo = 0, total = 0;
    for (int r = 0; r < size; r++) total += count_of(r);
    for (int r = 0; r < g_rank; r++) lo += count_of(r);
    for (int step = 0; step < 3; step++) {
        /* this rank's share, then the weighted sum */
        CHECK(grads_over(model, lo, lo + count_of(g_rank)) == BP_OK, "local grads");
        int64_t n = 0;
        CHECK(bp_dp_allreduce_grads(w, vars, count_of(g_rank), &n) == BP_OK && n == total, "allreduce_grads n=%lld",
              (long long)n);
        /* the reference: the whole batch on one process (the ref model holds
         * the same values: a copy of rank 0's, then the same steps) */
        CHECK(grads_over(ref, 0, total) == BP_OK, "reference grads");
        /* float32: each gradient is a sum of <= 40 products of O(1) terms,
         * formed in another order here than across ranks: |error| <= 40 * 2^-24
         * * (sum of |terms|) ~ 1e-5 at most */
        double worst = 0;
        for (size_t i = 0; i < bp_collector_len(vars); i++) {
            const bp_tensor *a = bp_collector_var(vars, i)->grad, *b = bp_collector_var(rvars, i)->grad;
            for (int64_t k = 0; k < a->numel; k++) {
                double d = fabs((double)((const float *)a->data)[k] - ((const float *)b->data)[k]);
                worst = d > worst ? d : worst;
            }
        }
        CHECK(worst <= 1e-5, "step %d: data-parallel grads differ from the whole-batch grads by %g", step, worst);
        /* the same SGD step on every rank, from the reduced gradients */
        for (size_t i = 0; i < bp_collector_len(vars); i++) {
            bp_var *v = bp_collector_var(vars, i), *rv = bp_collector_var(rvars, i);
            float *p = v->value->data, *rp = rv->value->data;
            const float *g = v->grad->data;
            for (int64_t k = 0; k < v->value->numel; k++) rp[k] = p[k] = p[k] - 0.1f * g[k];
        }
        CHECK(bp_dp_check_replicas(w, vars) == BP_OK, "step %d: replicas identical", step);
    }

    /* bp_dp_sum_grads: each rank back-propagates its share n_r / N of the
     * global mean loss; the plain sum is the whole batch's gradient */
    if (g_rank == 1) {
        CHECK(grads_scaled(model, lo, lo, 1) == BP_OK, "no samples"); /* zero grads */
    } else {
        CHECK(grads_scaled(model, lo, lo + count_of(g_rank), (double)count_of(g_rank) / (double)total) == BP_OK,
              "scaled local grads");
    }
    CHECK(bp_dp_sum_grads(w, vars) == BP_OK, "sum_grads");
    CHECK(grads_over(ref, 0, total) == BP_OK, "reference grads");
    double worst_sum = 0;
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        const bp_tensor *a = bp_collector_var(vars, i)->grad, *b = bp_collector_var(rvars, i)->grad;
        for (int64_t k = 0; k < a->numel; k++)
            worst_sum = fmax(worst_sum, fabs((double)((const float *)a->data)[k] - ((const float *)b->data)[k]));
    }
    CHECK(worst_sum <= 1e-5, "summed share gradients differ from the whole-batch gradient by %g", worst_sum);

    /* another model (other keys and shapes) on one rank: every rank fails, none hangs */
    bp_node *other = NULL;
    bp_collector *ovars = NULL;
    CHECK(bp_dense_new(&other, NIN, NOUT + 1, &o) == BP_OK && bp_node_train_vars(other, NULL, &ovars) == BP_OK,
          "other model");
    st = bp_dp_allreduce_grads(w, g_rank == size - 1 ? ovars : vars, 1, NULL);
    CHECK(st == BP_ECOMM, "another model on the last rank -> %d", st);
    st = bp_dp_allreduce_grads(w, vars, g_rank == 0 ? -1 : 1, NULL);
    CHECK(st == BP_EINVAL && strstr(bp_last_error(), "negative"), "a negative count on rank 0 -> %d", st);
    st = bp_dp_allreduce_grads(w, vars, 0, NULL);
    CHECK(st == BP_EINVAL && strstr(bp_last_error(), "no samples on any rank"), "no samples -> %d", st);

    int rc = mpi_verdict(w);
    bp_collector_free(vars), bp_collector_free(rvars), bp_collector_free(ovars);
    bp_node_free(model), bp_node_free(ref), bp_node_free(other);
    bp_comm_free(w);
    bp_comm_mpi_finalize();
    return rc;
}
