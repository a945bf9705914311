/* examples/train3d/model.h — the 3-D CNN of train3d:
 *   Conv3d(C,16,3)-BatchNorm3d-ReLU-MaxPool3d(2) - Conv3d(16,32,3)-BatchNorm3d-ReLU-MaxPool3d(2)
 *   - Flatten - Dense(32 * (S/4)^3, classes)
 * BatchNorm+ReLU run fused. A node ("Net3d"), so vars()/state_dict() list
 * every layer under its own name (Conv3d0.w, BatchNorm3d0.running_mean, ...). */
#ifndef TRAIN3D_MODEL_H
#define TRAIN3D_MODEL_H

#include <bpc/bpc.h>

/* dims: the input's H, W, D (each divisible by 4); in_ch: C. */
bp_status net_new(bp_node **out, const int64_t dims[3], int64_t in_ch, int classes, uint64_t seed);

#endif
