/* layers/layernorm_internal.h — LayerNorm's kernels, private to the library
 * (not installed; tests reach them through the static library).
 *
 * Shape glossary: the input is viewed as M rows of N values (row-major),
 * N = prod(normalized_shape), M = numel / N.
 *   x, y, dy, dx   (M, N)
 *   mean, rstd     (M,)   per-row mean and 1/sqrt(var + eps), saved by the
 *                         forward for the backward
 *   scale, bias    (N,)   the affine parameters; NULL means 1 and 0
 *   dscale, dbias  (N,)
 * Only reference kernels exist (layernorm_ref.c): LayerNorm is memory-bound
 * and its plain loops already read each array the minimum number of times,
 * so a tuned layernorm_fast.c is optional and would be tested against these. */
#ifndef BPC_LAYERS_LAYERNORM_INTERNAL_H
#define BPC_LAYERS_LAYERNORM_INTERNAL_H

#include <stdint.h>
#include <bpc/config.h>

/* Below this many elements the kernels stay on the calling thread. */
#define BP__LN_PAR_MIN 32768

/* Forward: per row, mean and biased variance in two passes with double
 * accumulators, rstd = 1/sqrt(var + eps) (0 when var + eps == 0), y = (x -
 * mean)*rstd*scale + bias.
 * mean and rstd are written (never NULL). Rows run in parallel; each row's
 * arithmetic is the same at any thread count. y may equal x. */
void bp__layernorm_forward_ref(bp_real *y, bp_real *mean, bp_real *rstd, const bp_real *x,
                               const bp_real *scale, const bp_real *bias, int64_t M, int64_t N,
                               double eps);

/* Backward, given the forward's mean and rstd: with xhat = (x - mean)*rstd
 * and g = dy*scale,
 *   dx     = rstd * (g - mean_j(g) - xhat * mean_j(g*xhat))   (per row)
 *   dscale = sum_r dy*xhat,   dbias = sum_r dy                (per column)
 * Every non-NULL output is WRITTEN (=), as an op with overwrites_grad wants.
 * The column sums run over rows in order, in double, one column block per
 * thread, so they too are the same at any thread count. */
void bp__layernorm_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy,
                                const bp_real *x, const bp_real *mean, const bp_real *rstd,
                                const bp_real *scale, int64_t M, int64_t N);

#endif
