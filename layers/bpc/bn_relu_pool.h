/* bpc/bn_relu_pool.h — the BatchNorm -> ReLU -> MaxPool block of conv nets, as
 * one node that runs its three children fused where it can.
 *
 *   y = pool(relu(bn(x)))        (pool may be absent: y = relu(bn(x)))
 *
 * When bn fits on batch statistics (shared fit true), is a BatchNorm3d over
 * the default axes and pool a MaxPool3d with disjoint windows (stride >=
 * kernel, no low padding), the three run as one op in two passes over x,
 * without writing or reading back the full-size activation. Otherwise
 * BatchNorm and ReLU still run as one pass, then the pool's update. Either
 * way the output, the running statistics and the errors are those of the
 * children run one after the other (bit for bit); gradients equal up to the
 * order of summation.
 *
 * Sequential (bpc/dense.h) recognises a BatchNorm, ReLU, MaxPool run (or a
 * BatchNorm, ReLU pair) among its children and takes the same path, so a
 * Sequential model gets the fusion without this node; neither changes the
 * state_dict keys, which are those of the children. */
#ifndef BPC_BN_RELU_POOL_H
#define BPC_BN_RELU_POOL_H

#include <bpc/node.h>

#ifdef __cplusplus
extern "C" {
#endif
BP_API_BEGIN

/* The node class ("BnReluPool": automatic names "BnReluPool0", ...). */
extern const bp_node_class bp_bn_relu_pool_class;

/* Creates the block over existing nodes: bn a BatchNorm1d/2d/3d, relu a ReLU
 * (bp_relu_class), pool a MaxPool1d/2d/3d or NULL. The block takes a reference
 * to each (attributes "bn", "relu", "pool") and has no variables of its own:
 * its state_dict holds bn's variables under bn's name, as the children's
 * would. mode NULL: bn's mode. Errors: BP_EINVAL (out, bn or relu NULL, or a
 * child of another class), BP_ENAME, BP_ENOMEM. */
bp_status bp_bn_relu_pool_new(bp_node **out, bp_node *bn, bp_node *relu, bp_node *pool, const bp_mode *mode,
                              const char *name);

BP_API_END
#ifdef __cplusplus
}
#endif
#endif
