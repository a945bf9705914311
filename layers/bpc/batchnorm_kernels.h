/* bpc/batchnorm_kernels.h — the compute kernels under BatchNorm1d/2d/3d.
 *
 * Shape glossary (channels-last, as bpc stores images (B,H,W,D,C)):
 *   x, y, dy, dx   (M, C) row-major: M = product of the reduced axes
 *                  (B*H*W*D for BatchNorm3d), C = channels, contiguous.
 *   mean, invstd,  (C,)  per-channel batch statistics saved by the training
 *   var                  forward for the backward (var is the BIASED one).
 *   scale, bias    (C,)  the affine parameters; NULL means 1 and 0.
 *   running_mean,  (C,)  the running statistics (BrainPy's momentum convention,
 *   running_var          running_var holds the unbiased variance).
 *
 * Math (eps inside the square root, as in BrainPy and PyTorch):
 *   train:  mean = sum_m x / M,  var = sum_m (x - mean)^2 / M,  invstd = 1/sqrt(var + eps)
 *           y = (x - mean) * invstd * scale + bias
 *   eval:   the same with running_mean and running_var in place of mean and var.
 *   invstd is 0 when var + eps == 0 (only possible with eps == 0 and a constant
 *   channel), so such a channel outputs bias instead of NaN.
 *
 * Every kernel here is deterministic: the rows are cut into blocks whose size
 * depends only on (M, C), partial sums are merged in block order, so any
 * OpenMP thread count gives bitwise identical results.
 *
 * Aliasing: in the BatchNorm and BatchNorm+ReLU kernels y may equal x, and dx
 * may equal dy or x (in-place); the fused pooling kernels' outputs have other
 * sizes and must not overlap any input. The (C,) arrays must not overlap the
 * (M, C) ones. Gradients of the (C,) parameters
 * ACCUMULATE (+=) into dscale and dbias (the caller zeroes them); dx is
 * OVERWRITTEN. dscale and dbias may be NULL (not wanted, e.g. affine=False).
 *
 * Workspace: every kernel takes `work`, scratch of bp_bn_workspace_size(M, C)
 * bytes, 8-byte aligned, that it may overwrite; it keeps nothing there between
 * calls. Passing NULL makes the kernel allocate (and free) its own, at the
 * cost of a malloc per call; a layer should keep one buffer per shape. */
#ifndef BPC_BATCHNORM_KERNELS_H
#define BPC_BATCHNORM_KERNELS_H

#include <stdint.h>
#include <stddef.h>
#include <bpc/config.h>
#include <bpc/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of scratch the kernels below need for an (M, C) input (0 when M or C < 1
 * or M*C overflows): 1 KiB per channel (per-chunk partials in double) plus 6
 * parameter arrays of max(C, ~256) values. */
size_t bp_bn_workspace_size(int64_t M, int64_t C);

/* Training forward: per-channel batch mean, biased var and invstd of x (M >= 2),
 * then y = (x - mean)*invstd*scale + bias. Statistics are computed stably
 * (shifted per-block sums merged with Chan's formula in double). Reads x twice,
 * writes y once. BP_EINVAL for M < 2 ("expected more than 1 value per channel
 * when training"), BP_ENUMERIC naming the channel for NaN/Inf statistics, in
 * which case y, mean, invstd and var are left untouched. var may be NULL. */
bp_status bp_bn_forward_train(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var,
                              const bp_real *x, const bp_real *scale, const bp_real *bias,
                              int64_t M, int64_t C, double eps, void *work);

/* running = momentum*running + (1-momentum)*stat per channel (BrainPy's retention
 * convention: PyTorch's momentum is 1 minus this one); running_var receives the
 * unbiased variance var*M/(M-1) from the biased batch var. M >= 2, momentum in [0, 1].
 * BP_ENUMERIC naming the channel when a new value would not be finite (a huge
 * variance times M/(M-1)); then nothing is stored. */
bp_status bp_bn_update_running(bp_real *running_mean, bp_real *running_var, const bp_real *mean,
                               const bp_real *var, int64_t M, int64_t C, double momentum);

/* Evaluation forward: y = (x - running_mean)/sqrt(running_var + eps)*scale + bias.
 * Reads x once, writes y once. BP_ENUMERIC naming the channel for a NaN/Inf
 * running statistic or a negative running_var. M may be 0. */
bp_status bp_bn_forward_eval(bp_real *y, const bp_real *x, const bp_real *running_mean,
                             const bp_real *running_var, const bp_real *scale, const bp_real *bias,
                             int64_t M, int64_t C, double eps, void *work);

/* Training backward through the batch statistics, given the mean and invstd the
 * training forward saved:
 *   xhat = (x - mean)*invstd
 *   dx = (dy - sum(dy)/M - xhat*sum(dy*xhat)/M) * invstd*scale     (written)
 *   dscale += sum(dy*xhat),  dbias += sum(dy)                       (accumulated)
 * Reads x and dy twice, writes dx once. M >= 1. */
bp_status bp_bn_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                               const bp_real *x, const bp_real *mean, const bp_real *invstd,
                               const bp_real *scale, int64_t M, int64_t C, void *work);

/* Evaluation backward (running statistics are constants, e.g. frozen BN):
 *   dx = dy*scale/sqrt(running_var + eps)                           (written)
 *   dscale += sum(dy*(x - running_mean))/sqrt(running_var + eps), dbias += sum(dy)
 * One pass: reads dy (and x when dscale is wanted), writes dx. dx may be NULL
 * (only the parameter gradients), x may be NULL when dscale is NULL. */
bp_status bp_bn_backward_eval(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                              const bp_real *x, const bp_real *running_mean,
                              const bp_real *running_var, const bp_real *scale, int64_t M,
                              int64_t C, double eps, void *work);

/* Fused BatchNorm + ReLU for conv nets: y = max(bn(x), 0) with bn as in
 * bp_bn_forward_train; same traffic, statistics and errors. */
bp_status bp_bn_relu_forward_train(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var,
                                   const bp_real *x, const bp_real *scale, const bp_real *bias,
                                   int64_t M, int64_t C, double eps, void *work);

/* Backward of bp_bn_relu_forward_train: dz = dy where bn(x) > 0 (recomputed
 * from x, mean, invstd, scale, bias: the output y is not needed), then
 * bp_bn_backward_train with dz in place of dy. Same traffic as that one. */
bp_status bp_bn_relu_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias,
                                    const bp_real *dy, const bp_real *x, const bp_real *mean,
                                    const bp_real *invstd, const bp_real *scale,
                                    const bp_real *bias, int64_t M, int64_t C, void *work);

/* Fused eval forward: y = max(bn_eval(x), 0) with bn_eval as in bp_bn_forward_eval. */
bp_status bp_bn_relu_forward_eval(bp_real *y, const bp_real *x, const bp_real *running_mean,
                                  const bp_real *running_var, const bp_real *scale,
                                  const bp_real *bias, int64_t M, int64_t C, double eps,
                                  void *work);

/* Backward of bp_bn_relu_forward_eval: dz = dy where bn_eval(x) > 0, then
 * bp_bn_backward_eval with dz. x is always needed (for the mask). */
bp_status bp_bn_relu_backward_eval(bp_real *dx, bp_real *dscale, bp_real *dbias,
                                   const bp_real *dy, const bp_real *x,
                                   const bp_real *running_mean, const bp_real *running_var,
                                   const bp_real *scale, const bp_real *bias, int64_t M,
                                   int64_t C, double eps, void *work);

/* The windows of the 3-D max pooling that follows BatchNorm+ReLU, for the
 * fused kernels below: x (B, in0, in1, in2, C) -> y (B, out0, out1, out2, C);
 * window o covers [o*s, min(o*s + k, in)) along each dim. The windows must be
 * disjoint (k <= s: every input in at most one) and start inside the input
 * ((out-1)*s < in); M = B*in0*in1*in2. */
typedef struct bp_bn_pool3d {
    int64_t B, in[3], out[3], k[3], s[3];
} bp_bn_pool3d;

/* y = maxpool(relu(bn(x))) with batch statistics: the values of
 * bp_bn_relu_forward_train followed by max pooling, bit for bit (ties go to
 * the window's first position, NaN propagates), without writing relu(bn(x)).
 * arg receives, per output value, the flat position (i0*in1 + i1)*in2 + i2 of
 * its maximum within the sample, and xa the input value there (for backward).
 * mean, invstd, var (var may be NULL) as bp_bn_forward_train. Reads x twice;
 * writes y, arg and xa (pooled size). Errors as bp_bn_forward_train, and
 * BP_EINVAL / BP_ESHAPE for a bad geometry. */
bp_status bp_bn_relu_maxpool_forward_train(bp_real *y, int32_t *arg, bp_real *xa, bp_real *mean, bp_real *invstd,
                                           bp_real *var, const bp_real *x, const bp_real *scale,
                                           const bp_real *bias, const bp_bn_pool3d *pg, int64_t C,
                                           double eps, void *work);

/* Backward of bp_bn_relu_maxpool_forward_train from dy (pooled shape), with
 * its arg and xa: dz is dy at each window's maximum where bn(x) > 0, 0
 * elsewhere; then as bp_bn_backward_train: dx (x's shape) written, dscale and
 * dbias accumulated. Reads the pooled arrays for the two sums, then x once to
 * write dx. */
bp_status bp_bn_relu_maxpool_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias,
                                            const bp_real *dy, const int32_t *arg, const bp_real *xa,
                                            const bp_real *x,
                                            const bp_real *mean, const bp_real *invstd,
                                            const bp_real *scale, const bp_real *bias,
                                            const bp_bn_pool3d *pg, int64_t C, void *work);

#ifdef __cplusplus
}
#endif
#endif
