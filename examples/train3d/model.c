/* examples/train3d/model.c — see model.h. */
#include <bpc/batchnorm.h>
#include <bpc/bn_relu_pool.h>
#include <bpc/conv.h>
#include <bpc/dense.h>
#include <bpc/pool.h>
#include "model.h"

typedef struct net3d {
    bp_node base;
    /* borrowed: the attributes hold them; conv3..pool3 only in NET_GLOBAL */
    bp_node *conv1, *bn1, *pool1, *conv2, *bn2, *pool2, *conv3, *bn3, *pool3, *gap, *flat, *fc;
    /* owned, outside the node tree (so the state_dict keys stay bn1..., pool1...):
     * bn_i -> ReLU -> pool_i as fused blocks over the attributes above */
    bp_node *block1, *block2, *block3;
} net3d;

static bp_status net_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    net3d *m = (net3d *)n;
    /* Each BatchNorm runs fused with the ReLU and the max pool after it (one
     * op: the BnReluPool blocks, bpc/bn_relu_pool.h). */
    bp_node *steps[] = {m->conv1, m->block1, m->conv2, m->block2, m->conv3, m->block3, m->gap, m->flat, m->fc};
    bp_tensor *cur = bp_tensor_retain(x);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (!steps[i]) continue;
        bp_tensor *next;
        bp_status st = bp_node_update(steps[i], cur, &next);
        bp_tensor_free(cur);
        if (st) return st;
        cur = next;
    }
    *out = cur;
    return BP_OK;
}

static void net_destroy(bp_node *n)
{
    net3d *m = (net3d *)n;
    bp_node_free(m->block1);
    bp_node_free(m->block2);
    bp_node_free(m->block3);
}

static const bp_node_class net_class = {
    .name = "Net3d", .size = sizeof(net3d), .update = net_update, .destroy = net_destroy};

/* The fused block bn -> ReLU -> pool, held by the net outside its tree. */
static bp_status make_block(bp_node **block, bp_node *bn, bp_node *pool, const bp_mode *mode)
{
    bp_node *relu;
    BP_TRY(bp_activation_new(&relu, &bp_relu_class, 0.0, mode, NULL));
    bp_status st = bp_bn_relu_pool_new(block, bn, relu, pool, mode, NULL);
    bp_node_free(relu); /* the block holds it */
    return st;
}

/* Adds a freshly made layer as attribute attr (the net keeps the only reference). */
static bp_status attach(bp_node *net, const char *attr, bp_status made, bp_node *const *made_layer, bp_node **slot)
{
    if (made) return made;
    bp_node *layer = *made_layer; /* read after the constructor ran (argument order is unspecified) */
    bp_status st = bp_node_add_child(net, attr, layer);
    bp_node_free(layer);
    if (!st) *slot = layer;
    return st;
}

bp_status net_new(bp_node **out, net_kind kind, const int64_t dims[3], int64_t in_ch, int classes, uint64_t seed)
{
    return net_new_axis(out, kind, dims, in_ch, classes, seed, NULL);
}

bp_status net_new_axis(bp_node **out, net_kind kind, const int64_t dims[3], int64_t in_ch, int classes, uint64_t seed,
                       const char *bn_axis)
{
    bp_mode train = bp_training_mode(1);
    bp_node *n, *l = NULL;
    BP_TRY(bp_node_create(&n, &net_class, NULL, &train));
    net3d *m = (net3d *)n;
    bp_rng rng;
    bp_rng_seed(&rng, seed);
    bp_conv_opts co = bp_conv_defaults();
    co.mode = &train;
    co.rng = &rng;
    co.kernel_size[0] = co.kernel_size[1] = co.kernel_size[2] = 3;
    bp_pool_opts po = {.kernel_size = {2, 2, 2}, .mode = &train};
    bp_dense_opts dn = bp_dense_defaults();
    dn.mode = &train;
    dn.rng = &rng;
    /* BatchNorm keeps 90% of its running statistics per step (BrainPy's default
     * keeps 99%): with a few hundred steps per run and fast-moving weights, the
     * slower average lags the weights and evaluation suffers. */
    bp_batchnorm_opts bo = bp_batchnorm_defaults();
    bo.momentum = 0.9;
    bo.axis_name = bn_axis;
    int64_t flat = kind == NET_GLOBAL ? 64 : 32 * (dims[0] / 4) * (dims[1] / 4) * (dims[2] / 4);
    int one[3] = {1, 1, 1};
    bp_status st = attach(n, "conv1", bp_conv3d_new(&l, in_ch, 16, &co), &l, &m->conv1);
    if (!st) st = attach(n, "bn1", bp_batchnorm3d_new(&l, 16, &bo), &l, &m->bn1);
    if (!st) st = attach(n, "pool1", bp_maxpool_new(&l, 3, &po), &l, &m->pool1);
    if (!st) st = attach(n, "conv2", bp_conv3d_new(&l, 16, 32, &co), &l, &m->conv2);
    if (!st) st = attach(n, "bn2", bp_batchnorm3d_new(&l, 32, &bo), &l, &m->bn2);
    if (!st) st = attach(n, "pool2", bp_maxpool_new(&l, 3, &po), &l, &m->pool2);
    if (!st && kind == NET_GLOBAL) {
        st = attach(n, "conv3", bp_conv3d_new(&l, 32, 64, &co), &l, &m->conv3);
        if (!st) st = attach(n, "bn3", bp_batchnorm3d_new(&l, 64, &bo), &l, &m->bn3);
        /* max over 2^3, then the global average over what is left */
        if (!st) st = attach(n, "pool3", bp_maxpool_new(&l, 3, &po), &l, &m->pool3);
        if (!st) st = attach(n, "gap", bp_adaptive_avgpool_new(&l, 3, one, &train, NULL), &l, &m->gap);
    }
    if (!st) st = attach(n, "flat", bp_flatten_new(&l, 0, -1, &train, NULL), &l, &m->flat);
    if (!st) st = attach(n, "fc", bp_dense_new(&l, flat, classes, &dn), &l, &m->fc);
    if (!st) st = make_block(&m->block1, m->bn1, m->pool1, &train);
    if (!st) st = make_block(&m->block2, m->bn2, m->pool2, &train);
    if (!st && kind == NET_GLOBAL) st = make_block(&m->block3, m->bn3, m->pool3, &train);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}
