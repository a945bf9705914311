/* bpc/pool.h — pooling layers over the spatial axes of channels-last data,
 * as brainpy.dnn's MaxPool3d / AvgPool3d / AdaptiveAvgPool3d (and the 1-D and
 * 2-D forms from the same code).
 *
 * Input (B, *spatial, C) or one unbatched sample (*spatial, C).
 *   MaxPool:  y = max over the window (padding reads -inf); the gradient goes
 *             to the first maximum of each window.
 *   MaxPool propagates NaN (as XLA's max does).
 *   AvgPool:  y = sum over the window / the number of real elements in it
 *             (padding is not counted, as BrainPy's window_counts; without
 *             padding that is prod(kernel_size)).
 *   AdaptiveAvgPool: output size fixed; an axis of L = n*q + r elements is
 *             cut into n bins without overlap, the first r of q + 1 elements
 *             and the rest of q (BrainPy's split; PyTorch's bins overlap, so the
 *             two differ when n does not divide L). Target 1 everywhere is
 *             global average pooling.
 * Stride defaults to the kernel size; padding defaults to VALID (none). */
#ifndef BPC_POOL_H
#define BPC_POOL_H

#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

extern const bp_node_class bp_maxpool1d_class, bp_maxpool2d_class, bp_maxpool3d_class;
extern const bp_node_class bp_avgpool1d_class, bp_avgpool2d_class, bp_avgpool3d_class;
extern const bp_node_class bp_adaptive_avgpool1d_class, bp_adaptive_avgpool2d_class,
    bp_adaptive_avgpool3d_class;

/* Which pool a bp_pool is. */
typedef enum bp_pool_kind {
    BP_POOL_MAX = 0,          /* MaxPool */
    BP_POOL_AVG = 1,          /* AvgPool */
    BP_POOL_ADAPTIVE_AVG = 2  /* AdaptiveAvgPool */
} bp_pool_kind;

/* Options of the windowed pools; first n_spatial entries used; 0 stride = kernel. */
typedef struct bp_pool_opts {
    int kernel_size[3];          /* required, >= 1 */
    int stride[3];               /* 0: the kernel size */
    int pad_lo[3], pad_hi[3];    /* (low, high) per spatial dim; zeros = VALID */
    const bp_mode *mode;
    const char *name;
} bp_pool_opts;

/* A windowed pool. Errors: BP_EINVAL (kernel < 1, stride < 0, padding < 0 or
 * not smaller than the kernel). update() fails with BP_ESHAPE when an input
 * is smaller than the kernel or a sample has more than 2^31 - 1 input or
 * output positions. */
bp_status bp_maxpool_new(bp_node **out, int n_spatial, const bp_pool_opts *opts);
bp_status bp_avgpool_new(bp_node **out, int n_spatial, const bp_pool_opts *opts);
/* An adaptive average pool to target_size[0..n_spatial-1] (each >= 1). */
bp_status bp_adaptive_avgpool_new(bp_node **out, int n_spatial, const int *target_size, const bp_mode *mode,
                                  const char *name);

/* The pooling parameters, readable. */
typedef struct bp_pool {
    bp_node base;
    int n_spatial;
    bp_pool_kind kind;
    int kernel_size[3], stride[3], pad_lo[3], pad_hi[3];
    int target_size[3];          /* adaptive only */
} bp_pool;

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
