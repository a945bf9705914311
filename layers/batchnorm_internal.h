/* layers/batchnorm_internal.h — the kernels under BatchNorm1d/2d/3d; private to
 * layers/ (not installed). The node (batchnorm.c) and the fused block
 * (bn_relu_pool.c) call them; tests and bench/batchnorm.c include this header
 * and link the static library.
 *
 * Files: batchnorm_ref.c holds plain reference kernels (double accumulation,
 * two passes: the mean, then the variance), written for reading and for the
 * tests to compare against; batchnorm_fast.c the tuned kernels the layer runs;
 * batchnorm_relu_pool_fast.c the fused BatchNorm+ReLU+MaxPool pair on the plans
 * and statistics of batchnorm_fast.c (the section at the end of this header).
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
 * Every fast kernel is deterministic: the rows are cut into blocks whose size
 * depends only on (M, C), partial sums are merged in block order, so any
 * OpenMP thread count gives bitwise identical results.
 *
 * Aliasing: in the BatchNorm and BatchNorm+ReLU kernels y may equal x, and dx
 * may equal dy or x (in-place); the fused pooling kernels' outputs have other
 * sizes and must not overlap any input. The (C,) arrays must not overlap the
 * (M, C) ones. Gradients of the (C,) parameters ACCUMULATE (+=) into dscale
 * and dbias (the caller zeroes them); dx is OVERWRITTEN. dscale and dbias may
 * be NULL (not wanted, e.g. affine=False).
 *
 * Workspace: every fast kernel takes `work`, scratch of bp__bn_workspace_size(M, C)
 * bytes, 8-byte aligned, that it may overwrite; it keeps nothing there between
 * calls. Passing NULL makes the kernel allocate (and free) its own, at the
 * cost of a malloc per call; a layer should keep one buffer per shape. */
#ifndef BPC_LAYERS_BATCHNORM_INTERNAL_H
#define BPC_LAYERS_BATCHNORM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <bpc/config.h>
#include <bpc/error.h>
#include <bpc/batchnorm.h>

/* ---------------------------------------------------------------- fast kernels */

/* Bytes of scratch the kernels below need for an (M, C) input (0 when M or C < 1
 * or M*C overflows): 1 KiB per channel (per-chunk partials in double) plus 6
 * parameter arrays of max(C, ~256) values. */
size_t bp__bn_workspace_size(int64_t M, int64_t C);

/* Training forward: per-channel batch mean, biased var and invstd of x (M >= 2),
 * then y = (x - mean)*invstd*scale + bias. Statistics are computed stably
 * (shifted per-block sums in double, merged with Chan's formula). Reads x twice,
 * writes y once. BP_EINVAL for M < 2 ("expected more than 1 value per channel
 * when training"), BP_ENUMERIC naming the channel for NaN/Inf statistics, in
 * which case y, mean, invstd and var are left untouched. var may be NULL. */
bp_status bp__bn_forward_train(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var, const bp_real *x,
                               const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps,
                               void *work);

/* running = momentum*running + (1-momentum)*stat per channel (BrainPy's retention
 * convention: PyTorch's momentum is 1 minus this one); running_var receives the
 * unbiased variance var*M/(M-1) from the biased batch var. M >= 2, momentum in [0, 1].
 * BP_ENUMERIC naming the channel when a new value would not be finite (a huge
 * variance times M/(M-1)); then nothing is stored. */
bp_status bp__bn_update_running(bp_real *running_mean, bp_real *running_var, const bp_real *mean,
                                const bp_real *var, int64_t M, int64_t C, double momentum);

/* Evaluation forward: y = (x - running_mean)/sqrt(running_var + eps)*scale + bias.
 * Reads x once, writes y once. BP_ENUMERIC naming the channel for a NaN/Inf
 * running statistic or a negative running_var. M may be 0. */
bp_status bp__bn_forward_eval(bp_real *y, const bp_real *x, const bp_real *running_mean, const bp_real *running_var,
                              const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps,
                              void *work);

/* Training backward through the batch statistics, given the mean and invstd the
 * training forward saved:
 *   xhat = (x - mean)*invstd
 *   dx = (dy - sum(dy)/M - xhat*sum(dy*xhat)/M) * invstd*scale     (written)
 *   dscale += sum(dy*xhat),  dbias += sum(dy)                       (accumulated)
 * Reads x and dy twice, writes dx once. M >= 1. */
bp_status bp__bn_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                                const bp_real *mean, const bp_real *invstd, const bp_real *scale, int64_t M,
                                int64_t C, void *work);

/* Evaluation backward (running statistics are constants, e.g. frozen BN):
 *   dx = dy*scale/sqrt(running_var + eps)                           (written)
 *   dscale += sum(dy*(x - running_mean))/sqrt(running_var + eps), dbias += sum(dy)
 * One pass: reads dy (and x when dscale is wanted), writes dx. dx may be NULL
 * (only the parameter gradients), x may be NULL when dscale is NULL. */
bp_status bp__bn_backward_eval(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                               const bp_real *running_mean, const bp_real *running_var, const bp_real *scale,
                               int64_t M, int64_t C, double eps, void *work);

/* Fused BatchNorm + ReLU for conv nets: y = max(bn(x), 0) with bn as in
 * bp__bn_forward_train; same traffic, statistics and errors. */
bp_status bp__bn_relu_forward_train(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var, const bp_real *x,
                                    const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps,
                                    void *work);

/* Backward of bp__bn_relu_forward_train: dz = dy where bn(x) > 0 (recomputed
 * from x, mean, invstd, scale, bias: the output y is not needed), then
 * bp__bn_backward_train with dz in place of dy. Same traffic as that one. */
bp_status bp__bn_relu_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                     const bp_real *x, const bp_real *mean, const bp_real *invstd,
                                     const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, void *work);

/* Fused eval forward: y = max(bn_eval(x), 0) with bn_eval as in bp__bn_forward_eval. */
bp_status bp__bn_relu_forward_eval(bp_real *y, const bp_real *x, const bp_real *running_mean,
                                   const bp_real *running_var, const bp_real *scale, const bp_real *bias, int64_t M,
                                   int64_t C, double eps, void *work);

/* Backward of bp__bn_relu_forward_eval: dz = dy where bn_eval(x) > 0, then
 * bp__bn_backward_eval with dz. x is always needed (for the mask). */
bp_status bp__bn_relu_backward_eval(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                    const bp_real *x, const bp_real *running_mean, const bp_real *running_var,
                                    const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps,
                                    void *work);

/* The windows of the 3-D max pooling that follows BatchNorm+ReLU, for the
 * fused kernels below: x (B, in0, in1, in2, C) -> y (B, out0, out1, out2, C);
 * window o covers [o*s, min(o*s + k, in)) along each dim. The windows must be
 * disjoint (k <= s: every input in at most one) and start inside the input
 * ((out-1)*s < in); M = B*in0*in1*in2. */
typedef struct bp__bn_pool3d {
    int64_t B, in[3], out[3], k[3], s[3];
} bp__bn_pool3d;

/* y = maxpool(relu(bn(x))) with batch statistics: the values of
 * bp__bn_relu_forward_train followed by max pooling, bit for bit (ties go to
 * the window's first position, NaN propagates), without writing relu(bn(x)).
 * arg receives, per output value, the flat position (i0*in1 + i1)*in2 + i2 of
 * its maximum within the sample, and xa the input value there (for backward).
 * mean, invstd, var (var may be NULL) as bp__bn_forward_train. Reads x twice;
 * writes y, arg and xa (pooled size). Errors as bp__bn_forward_train, and
 * BP_EINVAL / BP_ESHAPE for a bad geometry. */
bp_status bp__bn_relu_maxpool_forward_train(bp_real *y, int32_t *arg, bp_real *xa, bp_real *mean, bp_real *invstd,
                                            bp_real *var, const bp_real *x, const bp_real *scale,
                                            const bp_real *bias, const bp__bn_pool3d *pg, int64_t C, double eps,
                                            void *work);

/* Backward of bp__bn_relu_maxpool_forward_train from dy (pooled shape), with
 * its arg and xa: dz is dy at each window's maximum where bn(x) > 0, 0
 * elsewhere; then as bp__bn_backward_train: dx (x's shape) written, dscale and
 * dbias accumulated. Reads the pooled arrays for the two sums, then x once to
 * write dx. */
bp_status bp__bn_relu_maxpool_backward_train(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                             const int32_t *arg, const bp_real *xa, const bp_real *x,
                                             const bp_real *mean, const bp_real *invstd, const bp_real *scale,
                                             const bp_real *bias, const bp__bn_pool3d *pg, int64_t C, void *work);

/* ---------------------------------------------------------------- cross-replica pieces
 *
 * The training forward and backward cut where cross-replica BatchNorm
 * (batchnorm_sync.c) exchanges its sums between ranks; same blocks, lanes,
 * threads and bits as the kernels above. M may be 0 (a rank without rows):
 * the sums are then 0 and nothing is written. */

/* This rank's per-channel mean and M2 = sum (x - mean)^2 of x, in double, by the
 * training forward's statistics (shifted block sums merged with Chan's formula),
 * for bp__sync_stats. Reads x once. */
bp_status bp__bn_local_moments(double *mean, double *m2, const bp_real *x, int64_t M, int64_t C, void *work);

/* y = [relu]((x - mean)*(invstd*scale) + bias) with given statistics: the
 * training forward's second pass. Reads x once, writes y once. */
bp_status bp__bn_normalize(bp_real *y, const bp_real *x, const bp_real *mean, const bp_real *invstd,
                           const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, bool relu, void *work);

/* The training backward's first pass: sdz = sum dz, sdzxm = sum dz*(x - mean) per
 * channel (double; lanes of bp_real), dz = dy, masked as bp__bn_relu_backward_train
 * when relu. Reads x and dy once. */
bp_status bp__bn_local_grad_sums(double *sdz, double *sdzxm, const bp_real *dy, const bp_real *x, const bp_real *mean,
                                 const bp_real *invstd, const bp_real *scale, const bp_real *bias, int64_t M,
                                 int64_t C, bool relu, void *work);

/* Its second pass with sums over N >= M rows (all ranks'):
 *   dx = invstd*scale*(dz - sdz/N - (x - mean)*invstd^2*sdzxm/N)   (written)
 * Reads x and dy once, writes dx once. */
bp_status bp__bn_grad_dx(bp_real *dx, const bp_real *dy, const bp_real *x, const bp_real *mean, const bp_real *invstd,
                         const bp_real *scale, const bp_real *bias, const double *sdz, const double *sdzxm, int64_t N,
                         int64_t M, int64_t C, bool relu, void *work);

/* ---------------------------------------------------------------- reference kernels
 *
 * The same math written plainly (batchnorm_ref.c): one channel at a time, sums
 * in double, the mean first and the variance from it in a second pass, each
 * output rounded once. No checks, no workspace, no threads: arguments are
 * valid and the shapes as the fast kernel's. relu: y = max(bn(x), 0), and the
 * backward's mask is "the forward's output > 0" with that output computed as
 * the fast kernels define it in bp_real, (x - mean)*(bp_real)(invstd*scale) + bias,
 * so that both sides agree on which elements sit on the kink. dscale and dbias
 * accumulate, as in the fast kernels. */

/* mean = sum x / M, var = sum (x - mean)^2 / M (var may be NULL), invstd = 1/sqrt(var + eps)
 * (0 when var + eps == 0), y = [relu]((x - mean)*invstd*scale + bias). M >= 1. */
void bp__bn_forward_ref(bp_real *y, bp_real *mean, bp_real *invstd, bp_real *var, const bp_real *x,
                        const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps, bool relu);

/* xhat = (x - mean)*invstd, dz = dy (relu: where the forward's y > 0),
 * dx = (dz - sum(dz)/M - xhat*sum(dz*xhat)/M)*invstd*scale, dscale += sum(dz*xhat),
 * dbias += sum(dz). bias is read only for the relu mask. */
void bp__bn_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                         const bp_real *mean, const bp_real *invstd, const bp_real *scale, const bp_real *bias,
                         int64_t M, int64_t C, bool relu);

/* y = [relu]((x - running_mean)/sqrt(running_var + eps)*scale + bias). */
void bp__bn_forward_eval_ref(bp_real *y, const bp_real *x, const bp_real *running_mean, const bp_real *running_var,
                             const bp_real *scale, const bp_real *bias, int64_t M, int64_t C, double eps, bool relu);

/* is = 1/sqrt(running_var + eps), dz = dy (relu: where the forward's y > 0),
 * dx = dz*is*scale (dx may be NULL), dscale += sum(dz*(x - running_mean))*is,
 * dbias += sum(dz); x may be NULL when neither relu nor dscale needs it. */
void bp__bn_backward_eval_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                              const bp_real *running_mean, const bp_real *running_var, const bp_real *scale,
                              const bp_real *bias, int64_t M, int64_t C, double eps, bool relu);

/* y = maxpool(relu(bn(x))) as bp__bn_forward_ref (relu) into a full-size
 * buffer, then the maximum of each window (the first one on ties, NaN kept),
 * with arg and xa as bp__bn_relu_maxpool_forward_train. BP_ENOMEM only. */
bp_status bp__bn_relu_maxpool_forward_ref(bp_real *y, int32_t *arg, bp_real *xa, bp_real *mean, bp_real *invstd,
                                          bp_real *var, const bp_real *x, const bp_real *scale, const bp_real *bias,
                                          const bp__bn_pool3d *pg, int64_t C, double eps);

/* Its backward: the pooled dy scattered to each window's first maximum of the
 * recomputed relu(bn(x)) (arg is not read), then bp__bn_backward_ref (relu).
 * BP_ENOMEM only. */
bp_status bp__bn_relu_maxpool_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                           const bp_real *x, const bp_real *mean, const bp_real *invstd,
                                           const bp_real *scale, const bp_real *bias, const bp__bn_pool3d *pg,
                                           int64_t C);

/* ---------------------------------------------------------------- shared by the fast files
 *
 * What batchnorm_fast.c shares with batchnorm_relu_pool_fast.c: the cut of an
 * (M, C) problem into blocks and chunks, its workspace, the checks and the
 * statistics every training forward makes, and the one expression of bn(x). */

#define BN_LANES 256     /* accumulator lanes of a reduction */
#define BN_PAR_MIN 32768 /* below this many elements, stay on the calling thread */

#define BN_NEED(who, ptr)                                                                                          \
    do {                                                                                                           \
        if (!(ptr)) return bp_fail(BP_EINVAL, "%s: %s is NULL", who, #ptr);                                       \
    } while (0)

/* How an (M, C) problem is cut, and where its scratch lives. */
typedef struct bn_plan {
    int64_t M, C;
    int64_t u;           /* rows per lane group (1 when C > BN_LANES) */
    int64_t lp;          /* u*C: length of the replicated parameter arrays */
    int64_t tw;          /* channel tile of a reduction: min(C, BN_LANES) */
    int64_t rows;        /* rows per block, a multiple of u */
    int64_t nblocks, nchunks;
    int strips;          /* reductions may use register strips (small inputs) */
    double *acc0, *acc1; /* nchunks*C partials each */
    bp_real *par;        /* 6 replicated parameter arrays of lp each */
} bn_plan;

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* bn(x) as every kernel computes it; the relu backward recomputes the forward's
 * value with this same expression, so its mask matches bit for bit. */
static inline bp_real bn_affine(bp_real x, bp_real m, bp_real a, bp_real b) { return (x - m) * a + b; }

/* The plan of an (M, C) problem (blocks and chunks fixed by the shape). */
bn_plan bp__bn_plan_shape(int64_t M, int64_t C);
/* M, C and work checked; min_m: the fewest rows allowed (2 when fitting). */
bp_status bp__bn_check_common(const char *who, int64_t M, int64_t C, int64_t min_m, void *work);
/* Binds p to work, or to a new allocation left in *owned (free it) when work is NULL. */
bp_status bp__bn_plan_workspace(const char *who, bn_plan *p, void *work, void **owned);
/* A training forward's start: checks, plan, workspace (*owned to free, also
 * after a failure), batch statistics into mean, invstd, var, and the
 * replicated (mean, invstd*scale, bias) arrays at p->par. */
bp_status bp__bn_train_begin(const char *who, bn_plan *p, void **owned, bp_real *mean, bp_real *invstd, bp_real *var,
                             const bp_real *x, const bp_real *scale, const bp_real *bias, int64_t M, int64_t C,
                             double eps, void *work);
/* The replicated (mean, invstd*scale, bias) arrays at p->par[0 .. 3*lp). */
void bp__bn_affine_params(const bn_plan *p, const bp_real *mean, const bp_real *invstd, const bp_real *scale,
                          const bp_real *bias);

/* ---------------------------------------------------------------- the node's op, for its siblings
 *
 * batchnorm.c's update as pieces, for the fused block (bn_relu_pool.c), which
 * records its own op with them, and for Sequential (dense.c). */

/* update(x) of a BatchNorm node n, fused with the ReLU that follows when relu:
 * max(BatchNorm(x), 0) in one pass, same statistics, running updates, errors
 * and gradients (bit for bit) as update then a ReLU. */
bp_status bp__batchnorm_update(bp_node *n, bp_tensor *x, bool relu, bp_tensor **out);
/* The fit step with cross-replica statistics (batchnorm_sync.c); frees the
 * layer's group communicator. */
bp_status bp__batchnorm_update_sync(bp_batchnorm *bn, bp_tensor *x, bool relu, bp_tensor **out);
void bp__batchnorm_sync_free(bp_batchnorm *bn);
/* The layer's input check (rank, channels, dtype, kept axes; axis_name when fit). */
bp_status bp__batchnorm_check(const bp_batchnorm *bn, const bp_tensor *x, bool fit);
/* The running statistics after a fit step on M rows with batch mean and biased
 * var (F values each), as one (2F,) tensor *next (running_mean, then
 * running_var); checked, nothing stored. */
bp_status bp__batchnorm_next_running(const bp_batchnorm *bn, const bp_tensor *mean, const bp_tensor *var, int64_t M,
                                     bp_tensor **next);
/* Stores what bp__batchnorm_next_running computed. */
void bp__batchnorm_store_running(bp_batchnorm *bn, const bp_tensor *next);
/* A (F,) copy of the (C,) parameter v repeated F/C times; NULL when v is NULL. */
bp_status bp__batchnorm_param(bp_tensor **out, const bp_var *v, int64_t F, int64_t C);

/* pool(relu(bn(x))) for a BatchNorm bn, a ReLU node relu and a MaxPool node
 * pool (NULL: no pooling): the fused BatchNorm+ReLU+MaxPool op when bn fits on
 * batch statistics, is a BatchNorm3d over the default axes and pool a
 * MaxPool3d with disjoint windows (stride >= kernel, no low padding);
 * otherwise the BatchNorm+ReLU op, then pool's update. Outputs, running
 * statistics and errors are those of the three children in turn (bit for
 * bit); gradients equal up to the order of summation (bn_relu_pool.c). */
bp_status bp__bn_relu_pool_run(bp_node *bn, bp_node *pool, bp_tensor *x, bp_tensor **out);

#endif
