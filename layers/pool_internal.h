/* layers/pool_internal.h — what the pooling files share: the geometry, the
 * reference kernels (pool_ref.c) and the fast ones (pool_fast.c). Private to
 * layers/ (not installed); tests reach it through the static library.
 *
 * Every pool is run as 3-D with unused spatial dims of size 1:
 *   x (B, I0, I1, I2, C)  ->  y (B, O0, O1, O2, C)
 * Output o reads the box of input positions [b0_e, b1_e) per dim e:
 *   windowed:  [o*s - lo, o*s - lo + k) clipped to [0, I_e) (padding is not read)
 *   adaptive:  bin o of I = n*q + r positions, the first r bins q + 1 long, the rest q
 * MaxPool: y = the box's maximum (a NaN, once met, wins), arg = the flat
 * position (i0*I1 + i1)*I2 + i2 within the sample of its first occurrence in
 * row-major box order. AvgPool / adaptive: y = the box's sum / its size. */
#ifndef BPC_LAYERS_POOL_INTERNAL_H
#define BPC_LAYERS_POOL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/pool.h>

typedef struct bp__pool_geom {
    bp_pool_kind kind;
    int64_t B, C, in[3], out[3];
    int64_t k[3], s[3], lo[3];
} bp__pool_geom;

/* ---- reference kernels (pool_ref.c): the definition, box by box ---- */

/* y (and for MaxPool arg, if non-NULL) from x. */
void bp__pool_forward_ref(const bp__pool_geom *g, bp_real *y, int32_t *arg, const bp_real *x);
/* dx = dL/dx from dy, written whole; MaxPool finds each box's maximum in x again. */
void bp__pool_backward_ref(const bp__pool_geom *g, bp_real *dx, const bp_real *dy, const bp_real *x);

/* ---- fast kernels (pool_fast.c) ---- */

/* y (and for MaxPool arg, required) from x: parallel over output rows. */
void bp__pool_forward(const bp__pool_geom *g, bp_real *y, int32_t *arg, const bp_real *x);
/* dx written whole from dy (and MaxPool's arg) by a scatter per sample: any geometry. */
void bp__pool_backward_scatter(const bp__pool_geom *g, bp_real *dx, const int32_t *arg, const bp_real *dy);
/* True when no input position lies in two windows (stride >= kernel, no low padding). */
bool bp__pool_windows_disjoint(const bp__pool_geom *g);
/* MaxPool's dx written whole in one pass over the input; needs disjoint windows. */
void bp__pool_max_backward_disjoint(const bp__pool_geom *g, bp_real *dx, const int32_t *arg, const bp_real *dy);

#endif
