/* layers/batchnorm_sync.c — BatchNorm's fit step with cross-replica
 * statistics (axis_name bound to a communicator; see bpc/batchnorm.h).
 *
 * Shapes: x, y (M, F) with M this rank's rows (0 allowed) and F features;
 * N = the rows of every rank of the group together.
 *   forward   per feature: local (M, mean, M2) by the training forward's
 *             statistics kernel (bp__bn_local_moments), merged across ranks
 *             (bp__sync_stats); var = M2 / N (biased);
 *             y = (x - mean) invstd scale + bias  [, max(., 0) with relu]
 *             by its second pass (bp__bn_normalize).
 *   backward  g = dy (masked by bn(x) > 0 with relu), xhat = (x - mean) invstd;
 *             local S1 = sum g, S2' = sum g (x - mean) (bp__bn_local_grad_sums);
 *             one all-reduce of (S1, S2') over the group; dx = invstd scale
 *             (g - S1_all / N - xhat invstd S2'_all / N) (bp__bn_grad_dx);
 *             dscale = invstd S2', dbias = S1 of this rank (a data-parallel
 *             gradient reduction sums the ranks').
 * The tuned kernels of batchnorm_fast.c do the passes over rows, so the cost is
 * that of the single-process step plus the two exchanges of 2F doubles; every
 * rank computes the same statistics bits (bp__sync_stats merges in rank order,
 * the all-reduce gives every rank the same sums). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>
#include <bpc/comm.h>
#include "batchnorm_internal.h"
#include "sync_stats.h"

struct bp_bn_sync {
    bp_comm *parent; /* the communicator the groups were split from (borrowed) */
    bp_comm *group;  /* this rank's group (owned), or NULL: the parent itself */
};

void bp__batchnorm_sync_free(bp_batchnorm *bn)
{
    if (!bn->sync) return;
    bp_comm_free(bn->sync->group);
    free(bn->sync);
    bn->sync = NULL;
}

/* The communicator this layer reduces over: the axis's, or its group of it
 * (split collectively once, again if the axis is bound to another one). */
static bp_status group_comm(bp_batchnorm *bn, bp_comm **out)
{
    bp_comm *axis = bp_axis_comm(bn->axis_name);
    if (!bn->n_axis_index_groups) {
        *out = axis;
        return BP_OK;
    }
    if (bn->sync && bn->sync->parent == axis) {
        *out = bn->sync->group;
        return BP_OK;
    }
    bp__batchnorm_sync_free(bn);
    const size_t per = bn->axis_index_group_size > 0 ? (size_t)bn->axis_index_group_size : bn->n_axis_index_groups;
    const int n_groups = (int)(bn->n_axis_index_groups / per);
    int *sizes = malloc(sizeof(int) * (size_t)n_groups);
    bn->sync = calloc(1, sizeof *bn->sync);
    bp_status st = sizes && bn->sync ? BP_OK : bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(&bn->base));
    for (int g = 0; !st && g < n_groups; g++) sizes[g] = (int)per;
    if (!st) {
        st = bp_comm_split_groups(axis, bn->axis_index_groups, sizes, n_groups, &bn->sync->group);
        if (st) st = bp_fail(st, "%s: axis_index_groups: %s", bp_node_name(&bn->base), bp_last_error());
    }
    free(sizes);
    if (st) {
        bp__batchnorm_sync_free(bn);
        return st;
    }
    bn->sync->parent = axis;
    *out = bn->sync->group;
    return BP_OK;
}

typedef struct sync_ctx {
    int64_t M, F, C, N;
    bool relu;
    bp_comm *comm;       /* borrowed: bound to the axis for the layer's life */
    char tag[80];        /* what the backward exchanges */
    bp_tensor *mean, *invstd, *scale_f, *bias_f; /* (F) each; scale/bias NULL without affine */
} sync_ctx;

static void sync_release(void *p)
{
    sync_ctx *c = p;
    bp_tensor_free(c->mean), bp_tensor_free(c->invstd), bp_tensor_free(c->scale_f), bp_tensor_free(c->bias_f);
}

static bp_status sync_backward(const bp_ag_backward_args *a)
{
    const sync_ctx *c = a->ctx;
    const int64_t M = c->M, F = c->F;
    const bp_real *x = bp_tensor_creals(a->in[0]), *dy = bp_tensor_creals(a->dout);
    const bp_real *mean = bp_tensor_creals(c->mean), *inv = bp_tensor_creals(c->invstd);
    const bp_real *sc = c->scale_f ? bp_tensor_creals(c->scale_f) : NULL;
    const bp_real *bi = c->bias_f ? bp_tensor_creals(c->bias_f) : NULL;
    double *s = malloc(sizeof(double) * (size_t)(4 * F)); /* local S1, S2', then the group's */
    if (!s) return bp_fail(BP_ENOMEM, "SyncBatchNorm backward: out of memory");
    double *all = s + 2 * F;
    bp_status st = bp__bn_local_grad_sums(s, s + F, dy, x, mean, inv, sc, bi, M, F, c->relu, NULL);
    if (!st) {
        memcpy(all, s, sizeof(double) * (size_t)(2 * F));
        st = bp_comm_agree(c->comm, c->tag, 2 * F);
    }
    if (!st) st = bp_comm_allreduce_f64(c->comm, all, (size_t)(2 * F));
    if (!st && a->din[0])
        st = bp__bn_grad_dx(bp_tensor_reals(a->din[0]), dy, x, mean, inv, sc, bi, all, all + F, c->N, M, F, c->relu,
                            NULL);
    /* parameter gradients: this rank's sums, folded from F features to C channels */
    for (int k = 1; !st && k < a->n_in; k++) {
        if (!a->din[k]) continue;
        bp_real *d = bp_tensor_reals(a->din[k]);
        for (int64_t ch = 0; ch < c->C; ch++) d[ch] = 0;
        for (int64_t f = 0; f < F; f++) /* in[1] scale, in[2] bias */
            d[f % c->C] += (bp_real)(k == 1 ? (double)inv[f] * s[F + f] : s[f]);
    }
    free(s);
    return st;
}

static const bp_ag_op sync_op = {
    .name = "SyncBatchNorm", .backward = sync_backward, .release = sync_release, .overwrites_grad = true};

bp_status bp__batchnorm_update_sync(bp_batchnorm *bn, bp_tensor *x, bool relu, bp_tensor **out)
{
    const char *who = bp_node_name(&bn->base);
    bp_comm *comm = NULL;
    BP_TRY(group_comm(bn, &comm));
    const int64_t F = bn->n_features, C = bn->num_features, M = x->numel / F;
    sync_ctx c = {.M = M, .F = F, .C = C, .relu = relu, .comm = comm};
    snprintf(c.tag, sizeof c.tag, "%s.backward", who);
    double *st_m = calloc((size_t)(2 * F), sizeof(double)), *st_q = st_m ? st_m + F : NULL;
    bp_tensor *y = NULL, *var = NULL, *next = NULL;
    bp_status st = st_m ? BP_OK : bp_fail(BP_ENOMEM, "%s: out of memory", who);
    const bp_real *xd = bp_tensor_creals(x);
    if (!st) st = bp__bn_local_moments(st_m, st_q, xd, M, F, NULL); /* this rank's statistics */
    int64_t N = M;
    char tag[80];
    snprintf(tag, sizeof tag, "%s.stats", who);
    if (!st) st = bp__sync_stats(comm, tag, F, &N, st_m, st_q);
    if (!st && N < 2)
        st = bp_fail(BP_EINVAL, "%s: expected more than 1 value per channel when training, got %lld across the %d "
                     "ranks of axis \"%s\"", who, (long long)N, bp_comm_size(comm), bn->axis_name);
    c.N = N;
    if (!st) st = bp_ag_empty(&y, x->ndim, x->shape);
    if (!st) st = bp__batchnorm_param(&c.scale_f, bn->scale, F, C);
    if (!st) st = bp__batchnorm_param(&c.bias_f, bn->bias, F, C);
    if (!st) st = bp_ag_empty(&c.mean, 1, &F);
    if (!st) st = bp_ag_empty(&c.invstd, 1, &F);
    if (!st) st = bp_ag_empty(&var, 1, &F);
    if (!st) {
        bp_real *mean = bp_tensor_reals(c.mean), *inv = bp_tensor_reals(c.invstd), *v = bp_tensor_reals(var);
        for (int64_t f = 0; f < F && !st; f++) {
            const double vb = st_q[f] / (double)N;
            mean[f] = (bp_real)st_m[f];
            v[f] = (bp_real)vb;
            inv[f] = (bp_real)(1 / sqrt(vb + bn->epsilon));
            if (!isfinite(vb) || !isfinite(st_m[f]) || !isfinite((double)inv[f]))
                st = bp_fail(BP_ENUMERIC, "%s: the statistics of feature %lld are not finite (mean %g, var %g)", who,
                             (long long)f, st_m[f], vb);
        }
        if (!st)
            st = bp__bn_normalize(bp_tensor_reals(y), xd, mean, inv, c.scale_f ? bp_tensor_creals(c.scale_f) : NULL,
                                  c.bias_f ? bp_tensor_creals(c.bias_f) : NULL, M, F, relu, NULL);
    }
    /* running statistics: unbiased over the global count, stored once nothing can fail */
    if (!st) st = bp__batchnorm_next_running(bn, c.mean, var, N, &next);
    if (!st) {
        bp_tensor *in[3] = {x, bn->scale ? bn->scale->value : NULL, bn->bias ? bn->bias->value : NULL};
        int n_in = bn->affine ? 3 : 1;
        if (bp_ag_wants(n_in, in)) {
            st = bp_ag_record(y, &sync_op, n_in, in, &c, sizeof c);
            c = (sync_ctx){0};
        }
    }
    if (!st) bp__batchnorm_store_running(bn, next);
    bp_tensor_free(next), bp_tensor_free(var);
    sync_release(&c);
    free(st_m);
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}
