/* layers/bn_relu_pool.c — the BatchNorm -> ReLU -> MaxPool block
 * (bpc/bn_relu_pool.h) and the fused op under it and under Sequential's
 * recognition of the same run (bp__bn_relu_pool_run, batchnorm_internal.h).
 *
 * The fused op reads the BatchNorm's variables and the pool's geometry; the
 * BatchNorm node knows nothing of pooling (its op is batchnorm.c's). The
 * op's context holds (C,) copies of the statistics and parameters and, per
 * pooled output, the position of its maximum and the input value there. */
#include <stdlib.h>
#include <string.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>
#include <bpc/bn_relu_pool.h>
#include <bpc/dense.h>
#include <bpc/pool.h>
#include "batchnorm_internal.h"

typedef struct brp_ctx {
    int64_t C;
    bp__bn_pool3d pg;
    bp_tensor *mean, *invstd;  /* (C,) batch statistics */
    bp_tensor *scale, *bias;   /* (C,) copies, or NULL (no affine) */
    int32_t *arg;              /* each output's maximum, as bp__bn_relu_maxpool_forward_train */
    bp_tensor *xa;             /* the input value at each maximum */
} brp_ctx;

static void brp_ctx_release(void *p)
{
    brp_ctx *c = p;
    bp_tensor_free(c->mean);
    bp_tensor_free(c->invstd);
    bp_tensor_free(c->scale);
    bp_tensor_free(c->bias);
    free(c->arg);
    bp_tensor_free(c->xa);
}

/* dx into its own gradient buffer (scratch when only the parameters want
 * one: the kernel always writes dx); dscale and dbias straight into theirs,
 * zeroed first since the kernel accumulates. */
static bp_status brp_backward(const bp_ag_backward_args *a)
{
    const brp_ctx *c = a->ctx;
    const bp_tensor *xt = a->in[0];
    bp_tensor *din_s = a->n_in > 1 ? a->din[1] : NULL, *din_b = a->n_in > 2 ? a->din[2] : NULL, *dx_t = NULL;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_status st = dx ? BP_OK : bp_ag_empty(&dx_t, xt->ndim, xt->shape);
    if (!st) {
        if (!dx) dx = bp_tensor_reals(dx_t);
        if (din_s) bp_tensor_zero(din_s);
        if (din_b) bp_tensor_zero(din_b);
        st = bp__bn_relu_maxpool_backward_train(
            dx, din_s ? bp_tensor_reals(din_s) : NULL, din_b ? bp_tensor_reals(din_b) : NULL,
            bp_tensor_creals(a->dout), c->arg, bp_tensor_creals(c->xa), bp_tensor_creals(xt),
            bp_tensor_creals(c->mean), bp_tensor_creals(c->invstd), c->scale ? bp_tensor_creals(c->scale) : NULL,
            c->bias ? bp_tensor_creals(c->bias) : NULL, &c->pg, c->C, NULL);
    }
    bp_tensor_free(dx_t);
    return st;
}

static const bp_ag_op brp_op = {.name = "BatchNorm+ReLU+MaxPool",
                                .backward = brp_backward,
                                .release = brp_ctx_release,
                                .overwrites_grad = true};

static bool is_maxpool(const bp_node *n)
{
    return n->cls == &bp_maxpool1d_class || n->cls == &bp_maxpool2d_class || n->cls == &bp_maxpool3d_class;
}

/* The fused pool's geometry, or false when bn, pool and x do not qualify
 * (see bp__bn_relu_pool_run). */
static bool fusable(const bp_batchnorm *bn, const bp_node *pool, const bp_tensor *x, bp__bn_pool3d *g)
{
    if (pool->cls != &bp_maxpool3d_class || bn->ndim != 5 || bn->n_kept != 0 || x->ndim != 5) return false;
    const bp_pool *p = (const bp_pool *)pool;
    g->B = x->shape[0];
    for (int d = 0; d < 3; d++) {
        g->in[d] = x->shape[1 + d];
        g->k[d] = p->kernel_size[d];
        g->s[d] = p->stride[d];
        int64_t padded = g->in[d] + p->pad_hi[d];
        if (p->pad_lo[d] != 0 || g->s[d] < g->k[d] || padded < g->k[d]) return false;
        g->out[d] = (padded - g->k[d]) / g->s[d] + 1; /* as the pool computes it */
    }
    return true;
}

/* The fused op on a checked input x of a fitting BatchNorm3d. */
static bp_status fused_forward(bp_batchnorm *bn, bp_tensor *x, const bp__bn_pool3d *g, bp_tensor **out)
{
    const char *who = bp_node_name(&bn->base);
    const int64_t C = bn->num_features, M = x->numel / C;
    const int64_t ys[5] = {g->B, g->out[0], g->out[1], g->out[2], C};
    brp_ctx c = {.C = C, .pg = *g};
    bp_tensor *y = NULL, *var = NULL, *next = NULL;
    bp_status st = bp_ag_empty(&y, 5, ys);
    if (!st && !(c.arg = malloc(sizeof(int32_t) * (size_t)y->numel)))
        st = bp_fail(BP_ENOMEM, "%s: out of memory for the pooling positions", who);
    if (!st) st = bp_ag_empty(&c.xa, 5, ys);
    if (!st) st = bp__batchnorm_param(&c.scale, bn->scale, C, C);
    if (!st) st = bp__batchnorm_param(&c.bias, bn->bias, C, C);
    if (!st) st = bp_ag_empty(&c.mean, 1, &C);
    if (!st) st = bp_ag_empty(&c.invstd, 1, &C);
    if (!st) st = bp_ag_empty(&var, 1, &C);
    if (!st) {
        st = bp__bn_relu_maxpool_forward_train(bp_tensor_reals(y), c.arg, bp_tensor_reals(c.xa),
                                               bp_tensor_reals(c.mean), bp_tensor_reals(c.invstd),
                                               bp_tensor_reals(var), bp_tensor_creals(x),
                                               c.scale ? bp_tensor_creals(c.scale) : NULL,
                                               c.bias ? bp_tensor_creals(c.bias) : NULL, g, C, bn->epsilon, NULL);
        if (st) st = bp_fail(st, "%s: %s", who, bp_last_error());
    }
    /* checked before anything is recorded, stored once nothing can fail (as batchnorm.c) */
    if (!st) st = bp__batchnorm_next_running(bn, c.mean, var, M, &next);
    if (!st) {
        bp_tensor *in[3] = {x, bn->scale ? bn->scale->value : NULL, bn->bias ? bn->bias->value : NULL};
        int n_in = bn->affine ? 3 : 1;
        if (bp_ag_wants(n_in, in)) {
            st = bp_ag_record(y, &brp_op, n_in, in, &c, sizeof c);
            c = (brp_ctx){0}; /* the graph owns (or already released) what c pointed to */
        }
    }
    if (!st) bp__batchnorm_store_running(bn, next);
    bp_tensor_free(next);
    bp_tensor_free(var);
    brp_ctx_release(&c);
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}

bp_status bp__bn_relu_pool_run(bp_node *n, bp_node *pool, bp_tensor *x, bp_tensor **out)
{
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    if (!bn) return bp_fail(BP_EINVAL, "BnReluPool: %s is not a BatchNorm layer", n ? bp_node_name(n) : "(null)");
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", bp_node_name(n));
    *out = NULL;
    bp__bn_pool3d g;
    /* cross-replica statistics take the two-step path (batchnorm_sync.c) */
    if (pool && x && bp_share_fit() && !bn->axis_name && !bp__batchnorm_check(bn, x, true) && fusable(bn, pool, x, &g))
        return fused_forward(bn, x, &g, out);
    bp_tensor *h;
    BP_TRY(bp__batchnorm_update(n, x, true, &h));
    if (!pool) {
        *out = h;
        return BP_OK;
    }
    bp_status st = bp_node_update(pool, h, out);
    bp_tensor_free(h);
    return st;
}

/* ------------------------------------------------------------ the block node */

typedef struct bn_relu_pool {
    bp_node base;
    bp_node *bn, *relu, *pool; /* borrowed: the attributes hold the references */
} bn_relu_pool;

static bp_status brp_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bn_relu_pool *b = (bn_relu_pool *)n;
    return bp__bn_relu_pool_run(b->bn, b->pool, x, out);
}

const bp_node_class bp_bn_relu_pool_class = {
    .name = "BnReluPool", .size = sizeof(bn_relu_pool), .reads_shared = true, .update = brp_update};

bp_status bp_bn_relu_pool_new(bp_node **out, bp_node *bn, bp_node *relu, bp_node *pool, const bp_mode *mode,
                              const char *name)
{
    const char *who = name ? name : "BnReluPool";
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!bp_batchnorm_cast(bn))
        return bp_fail(BP_EINVAL, "%s: bn must be a BatchNorm1d/2d/3d, got %s", who, bn ? bp_node_class_name(bn) : "NULL");
    if (!relu || relu->cls != &bp_relu_class)
        return bp_fail(BP_EINVAL, "%s: relu must be a ReLU, got %s", who, relu ? bp_node_class_name(relu) : "NULL");
    if (pool && !is_maxpool(pool))
        return bp_fail(BP_EINVAL, "%s: pool must be a MaxPool1d/2d/3d or NULL, got %s", who, bp_node_class_name(pool));
    bp_node *n;
    BP_TRY(bp_node_create(&n, &bp_bn_relu_pool_class, name, mode ? mode : &bn->mode));
    bn_relu_pool *b = (bn_relu_pool *)n;
    bp_status st = bp_node_add_child(n, "bn", bn);
    if (!st) st = bp_node_add_child(n, "relu", relu);
    if (!st && pool) st = bp_node_add_child(n, "pool", pool);
    if (st) {
        bp_node_free(n);
        return st;
    }
    b->bn = bn;
    b->relu = relu;
    b->pool = pool;
    *out = n;
    return BP_OK;
}
