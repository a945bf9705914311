/* layers/conv_transpose_internal.h — ConvTranspose's private kernels (not
 * installed; tests reach them through the static library).
 *
 * Shapes: every transposed conv is run as 3-D, unused leading spatial dims of
 * size 1 (as Conv, conv_internal.h):
 *   x   (B, I0, I1, I2, Cin)      y (B, O0, O1, O2, Cout)
 *   w   (k0, k1, k2, Cg, Cout)    Cg = Cin / G, Cog = Cout / G
 *   y[b, o, co] = b[co] + sum_{t, ci, i : i*s = o + t*d - lo} x[b, i, g*Cg + ci] * w[t, ci, co],  g = co / Cog
 * per dim e (lo = the low padding of the stride-dilated input).
 *
 * The adjoint convolution `adj` (a bp__conv_geom) runs from the output grid to
 * the input grid: in = O, out = I, the same k, s, d, lo' = (k-1)*d - lo,
 * Cin' = Cout, Cout' = Cin, kernel w'[t, co, ci] = w[T-1-t, ci, co] (T taps,
 * the flip over all taps; channel axes swapped within a group). Then
 *   y = adj.dx(x) + b,   dx = adj.forward(dy),   dw = flip(adj.dw(z = dy, dout = x)).
 * Every kernel WRITES its outputs (=). */
#ifndef BPC_LAYERS_CONV_TRANSPOSE_INTERNAL_H
#define BPC_LAYERS_CONV_TRANSPOSE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/conv_transpose.h>
#include "conv_internal.h"

typedef struct bp__convt_geom {
    int64_t B, in[3], out[3], lo[3], k[3], s[3], d[3];
    int64_t Cin, Cout, Cg, Cog, G, taps;
    bp__conv_geom adj; /* the adjoint convolution, see above */
} bp__convt_geom;

/* The geometry of c on an input of shape (ndim, shape); yshape / *yd receive
 * the output's shape. BP_ESHAPE for an empty input or output, or sizes whose
 * products overflow. */
bp_status bp__convt_geom_init(bp__convt_geom *g, const bp_conv_transpose *c, int ndim, const int64_t *shape,
                              int64_t *yshape, int *yd);

/* ---- reference kernels (conv_transpose_ref.c) ---- */
/* y = convT(x, w) + bias (bias may be NULL). */
void bp__convt_forward_ref(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                           const bp_real *bias);
/* dx, dw, db (each if non-NULL) from dy; BP_ENOMEM when its double scratch cannot be had. */
bp_status bp__convt_backward_ref(const bp__convt_geom *g, bp_real *dx, bp_real *dw, bp_real *db, const bp_real *dy,
                                 const bp_real *x, const bp_real *w);

/* ---- fast kernels (conv_transpose_fast.c), Conv's kernels on adj ---- */
/* True when every output gets exactly one tap (k == s, d == 1, lo == k-1,
 * O == I*s in every dim): the layer is then a 1x1x1 convolution and a pixel shuffle. */
bool bp__convt_is_shuffle(const bp__convt_geom *g);
bp_status bp__convt_forward(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                            const bp_real *bias);
bp_status bp__convt_backward(const bp__convt_geom *g, bp_real *dx, bp_real *dw, bp_real *db, const bp_real *dy,
                             const bp_real *x, const bp_real *w);

#endif
