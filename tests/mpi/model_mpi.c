/* tests/mpi/model_mpi.c — five SGD steps of train3d's model, data-parallel
 * with cross-replica BatchNorm, in float64, under mpiexec: after every step
 * every rank's parameters equal, to 1e-12, those of one process training on
 * the whole batch (splits 4+4, 3+5, 1+7 of a global batch of 8 on 2 ranks;
 * near-equal shares on more). Prints "N passed, M failed" on rank 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/bpc.h>
#include <bpc/comm_mpi.h>
#include "mpi_check.h"
#include "../../examples/train3d/model.h"


#define S 8
#define B 8
#define K 3

static void sample(int64_t i, double *x, int64_t *y)
{
    for (int64_t k = 0; k < S * S * S; k++) x[k] = sin(0.013 * (double)(i * 977 + k * 7)) + 0.1 * (double)(i % 3);
    *y = i % K;
}

typedef struct trainer {
    bp_node *net, *opt;
    bp_collector *tv;
} trainer;

static void make(trainer *t, const char *axis)
{
    CHECK(net_new_axis(&t->net, NET_GLOBAL, (int64_t[]){S, S, S}, 1, K, 7, axis) == BP_OK, "net");
    bp_collector *all = NULL;
    bp_node_train_vars(t->net, NULL, &all);
    bp_collector_unique(all, &t->tv);
    bp_collector_free(all);
    bp_momentum_opts mo = bp_momentum_defaults();
    mo.lr = 0.05, mo.train_vars = t->tv;
    CHECK(bp_momentum_new(&t->opt, &mo) == BP_OK, "optimizer");
}

static void drop(trainer *t)
{
    bp_collector_free(t->tv), bp_node_free(t->opt), bp_node_free(t->net);
}

/* One step on samples [step*B + lo, + n): loss share n/B, then sum (comm) or nothing. */
static void step(trainer *t, bp_comm *comm, int s, int64_t lo, int64_t n)
{
    bp_tensor *x = NULL, *y = NULL, *logits = NULL, *loss = NULL, *share = NULL;
    bp_tensor_new(&x, BP_FLOAT64, 5, (int64_t[]){n, S, S, S, 1});
    bp_tensor_new(&y, BP_INT64, 1, (int64_t[]){n});
    for (int64_t i = 0; i < n; i++) sample(s * B + lo + i, (double *)x->data + i * S * S * S, (int64_t *)y->data + i);
    bp_status st = bp_node_update(t->net, x, &logits);
    if (!st) st = bp_softmax_cross_entropy(&loss, logits, y);
    if (!st) st = bp_mul_scalar(&share, loss, (double)n / B);
    bp_node_zero_grad(t->net);
    if (!st) st = bp_backward(share);
    if (!st && comm) st = bp_dp_sum_grads(comm, t->tv);
    if (!st) st = bp_optim_update(t->opt);
    CHECK(st == BP_OK, "step %d", s);
    bp_tensor_free(x), bp_tensor_free(y), bp_tensor_free(logits), bp_tensor_free(loss), bp_tensor_free(share);
}

int main(void)
{
    bp_comm *w = NULL;
    if (bp_comm_mpi_world(&w)) return 1;
    g_rank = bp_comm_rank(w);
    const int size = bp_comm_size(w);
    if (size < 2 || size > B) {
        fprintf(stderr, "model_mpi: run it under mpiexec with 2 to %d ranks\n", B);
        return 2;
    }
    bp_share_save_fit(true);
    bp_axis_bind("batch", w);
    int splits[3][8] = {{0}};
    int n_splits = size == 2 ? 3 : 1;
    if (size == 2) {
        splits[0][0] = 4, splits[0][1] = 4, splits[1][0] = 3, splits[1][1] = 5, splits[2][0] = 1, splits[2][1] = 7;
    } else {
        for (int r = 0; r < size; r++) splits[0][r] = B / size + (r < B % size);
    }
    for (int k = 0; k < n_splits; k++) {
        trainer dp = {0}, one = {0};
        make(&dp, "batch");
        make(&one, NULL);
        int64_t lo = 0;
        for (int r = 0; r < g_rank; r++) lo += splits[k][r];
        for (int s = 0; s < 5; s++) {
            step(&dp, w, s, lo, splits[k][g_rank]);
            step(&one, NULL, s, 0, B);
            double worst = 0;
            for (size_t i = 0; i < bp_collector_len(dp.tv); i++) {
                const bp_tensor *a = bp_collector_var(dp.tv, i)->value, *b = bp_collector_var(one.tv, i)->value;
                for (int64_t e = 0; e < a->numel; e++)
                    worst = fmax(worst, fabs(((const double *)a->data)[e] - ((const double *)b->data)[e]));
            }
            CHECK(worst <= 1e-12, "split %d step %d: parameters differ from one process by %g", k, s + 1, worst);
        }
        CHECK(bp_dp_check_replicas(w, dp.tv) == BP_OK, "split %d: replicas differ", k);
        drop(&dp), drop(&one);
    }
    bp_axis_unbind("batch");
    int rc = mpi_verdict(w);
    bp_comm_free(w);
    bp_comm_mpi_finalize();
    return rc;
}
