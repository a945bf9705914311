/* examples/train3d/model.h — the 3-D CNNs of train3d and bench/train_step:
 *   NET_FLAT (the net of performance-anchors.md, bench/train_step):
 *     Conv3d(C,16,3)-BN3d-ReLU-MaxPool3d(2) - Conv3d(16,32,3)-BN3d-ReLU-MaxPool3d(2)
 *     - Flatten - Dense(32 * (S/4)^3, classes)
 *   NET_GLOBAL (train3d's default): the same two blocks, a third
 *     Conv3d(32,64,3)-BN3d-ReLU-MaxPool3d(2), global average pooling and
 *     Dense(64, classes): far fewer weights, and position-invariant, which is
 *     what shapes at random positions need to generalise from a few thousand samples.
 * BatchNorm+ReLU run fused. A node ("Net3d"), so vars()/state_dict() list
 * every layer under its own name (Conv3d0.w, BatchNorm3d0.running_mean, ...). */
#ifndef TRAIN3D_MODEL_H
#define TRAIN3D_MODEL_H

#include <bpc/bpc.h>

typedef enum net_kind { NET_FLAT, NET_GLOBAL } net_kind;

/* dims: the input's H, W, D (each divisible by 4, by 8 for NET_GLOBAL); in_ch: C. */
bp_status net_new(bp_node **out, net_kind kind, const int64_t dims[3], int64_t in_ch, int classes, uint64_t seed);
/* As net_new, with every BatchNorm's statistics taken across the processes
 * bound to bn_axis (bpc/comm.h); NULL: per process. */
bp_status net_new_axis(bp_node **out, net_kind kind, const int64_t dims[3], int64_t in_ch, int classes, uint64_t seed,
                       const char *bn_axis);

/* One line saying what net is, read off its nodes: "3 x [Conv3d-BatchNorm3d-
 * ReLU-MaxPool3d] (1->16->32->64), global average pool, Dense(64->8)";
 * symbolic: "C" and "K" for the input channels and the classes. */
bp_status net_describe(bp_node *net, bool symbolic, char *buf, size_t cap);

#endif
