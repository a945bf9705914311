/* examples/train3d/model.c — see model.h. */
#include <bpc/batchnorm.h>
#include <bpc/conv.h>
#include <bpc/dense.h>
#include <bpc/pool.h>
#include "model.h"

typedef struct net3d {
    bp_node base;
    bp_node *conv1, *bn1, *pool1, *conv2, *bn2, *pool2, *flat, *fc; /* borrowed: attributes hold them */
} net3d;

static bp_status net_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    net3d *m = (net3d *)n;
    struct {
        bp_node *layer;
        bool bn_relu;
    } steps[] = {{m->conv1, false}, {m->bn1, true},  {m->pool1, false}, {m->conv2, false},
                 {m->bn2, true},    {m->pool2, false}, {m->flat, false}, {m->fc, false}};
    bp_tensor *cur = bp_tensor_retain(x);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        bp_tensor *next;
        bp_status st = steps[i].bn_relu ? bp_batchnorm_relu_update(steps[i].layer, cur, &next)
                                        : bp_node_update(steps[i].layer, cur, &next);
        bp_tensor_free(cur);
        if (st) return st;
        cur = next;
    }
    *out = cur;
    return BP_OK;
}

static const bp_node_class net_class = {.name = "Net3d", .size = sizeof(net3d), .update = net_update};

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

bp_status net_new(bp_node **out, const int64_t dims[3], int64_t in_ch, int classes, uint64_t seed)
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
    int64_t flat = 32 * (dims[0] / 4) * (dims[1] / 4) * (dims[2] / 4);
    bp_status st = attach(n, "conv1", bp_conv3d_new(&l, in_ch, 16, &co), &l, &m->conv1);
    if (!st) st = attach(n, "bn1", bp_batchnorm3d_new(&l, 16, NULL), &l, &m->bn1);
    if (!st) st = attach(n, "pool1", bp_maxpool_new(&l, 3, &po), &l, &m->pool1);
    if (!st) st = attach(n, "conv2", bp_conv3d_new(&l, 16, 32, &co), &l, &m->conv2);
    if (!st) st = attach(n, "bn2", bp_batchnorm3d_new(&l, 32, NULL), &l, &m->bn2);
    if (!st) st = attach(n, "pool2", bp_maxpool_new(&l, 3, &po), &l, &m->pool2);
    if (!st) st = attach(n, "flat", bp_flatten_new(&l, 0, -1, &train, NULL), &l, &m->flat);
    if (!st) st = attach(n, "fc", bp_dense_new(&l, flat, classes, &dn), &l, &m->fc);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}
