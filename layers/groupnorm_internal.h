/* layers/groupnorm_internal.h — GroupNorm's kernels (private to layers/).
 *
 * Shapes: x, y, dy, dx (B, P, C) with P positions per sample and C = G * Cg
 * channels; mean, rstd (B, G); scale, bias, dscale, dbias (C) (scale/bias NULL:
 * 1 and 0; dscale/dbias NULL: not wanted; dx NULL: only dscale and dbias).
 *
 * Two implementations of the same math: bp__gn_*_ref (groupnorm_ref.c: plain
 * loops, one group at a time) and bp__gn_* (groupnorm_fast.c: whole rows, in
 * parallel, deterministic at any thread count; the layer runs these). Both sum
 * in double and round once; outputs must not overlap inputs. */
#ifndef BPC_GROUPNORM_INTERNAL_H
#define BPC_GROUPNORM_INTERNAL_H

#include <stdint.h>
#include <bpc/config.h>
#include <bpc/error.h>

/* y = (x - mean_bg) * rstd_bg * scale + bias, mean/rstd over (P, Cg) of each
 * (b, g), biased variance, rstd = 1 / sqrt(var + eps). */
void bp__gn_forward_ref(bp_real *y, bp_real *mean, bp_real *rstd, const bp_real *x, const bp_real *scale,
                        const bp_real *bias, int64_t B, int64_t P, int64_t C, int64_t G, double eps);

/* With xhat = (x - mean) rstd and g = dy * scale, over each (b, g) of n = P Cg:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat))     (written, =)
 *   dscale[c] = sum dy xhat,  dbias[c] = sum dy      (written, =) */
void bp__gn_backward_ref(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                         const bp_real *mean, const bp_real *rstd, const bp_real *scale, int64_t B, int64_t P,
                         int64_t C, int64_t G);

/* The tuned kernels: the same contracts; BP_ENOMEM when their scratch (a few
 * doubles per 64 Ki values) cannot be allocated. */
bp_status bp__gn_forward(bp_real *y, bp_real *mean, bp_real *rstd, const bp_real *x, const bp_real *scale,
                         const bp_real *bias, int64_t B, int64_t P, int64_t C, int64_t G, double eps);
bp_status bp__gn_backward(bp_real *dx, bp_real *dscale, bp_real *dbias, const bp_real *dy, const bp_real *x,
                          const bp_real *mean, const bp_real *rstd, const bp_real *scale, int64_t B, int64_t P,
                          int64_t C, int64_t G);

#endif
