/* layers/conv_internal.h — what Conv's files share (and a transposed
 * convolution will reuse): the geometry, the reference kernels, the direct
 * channels-last kernels with their weight packing, and the tiled im2col /
 * col2im + GEMM path. Private to layers/ (not installed); tests reach it
 * through the static library.
 *
 * Shapes: every conv is run as 3-D, with unused leading spatial dims of size 1
 * (Conv1d/2d occupy the last geometry dims, so the innermost spatial dim is
 * always the kernels' contiguous row):
 *   x   (B, I0, I1, I2, Cin)      y (B, O0, O1, O2, Cout)
 *   w   (k0, k1, k2, Cg, Cout) viewed as a (K, Cout) matrix, K = k0*k1*k2*Cg
 *   b   (Cout)
 *   y[b, o, co] = b[co] + sum_{t, ci} x[b, o*s - lo + t*d, g*Cg + ci] * w[t, ci, co],  g = co / Cog
 * with taps outside the input reading 0.
 *
 * Every kernel below WRITES its outputs (=): y, dx, dw and db need no
 * initialisation. Each returns BP_OK or BP_ENOMEM (with a message). */
#ifndef BPC_LAYERS_CONV_INTERNAL_H
#define BPC_LAYERS_CONV_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/conv.h>

/* One convolution's shapes, resolved for one input. */
typedef struct bp__conv_geom {
    int64_t B, in[3], out[3], lo[3];
    int64_t Cin, Cout, Cg, Cog, G;  /* channels, per group in / out, groups */
    int64_t k[3], s[3], d[3];
    int64_t K;                      /* k0*k1*k2*Cg: one im2col row */
    int64_t Pout, Pin;              /* output / input positions per sample */
    int64_t P;                      /* GEMM tile rows */
} bp__conv_geom;

/* Adds the parameters every convolution node has (Conv and ConvTranspose):
 * "w" (k_0..k_{nsp-1}, cin / groups, cout) from w_init and, with bias, "b"
 * (1, .., 1, cout) from b_init; TrainVars in training mode, Variables
 * otherwise. *w and *b receive the borrowed vars (*b untouched without bias). */
bp_status bp__conv_add_params(bp_node *n, int nsp, const int *kernel_size, int64_t cin, int64_t cout, int groups,
                              bool bias, const bp_init *w_init, const bp_init *b_init, bp_rng *rng, bp_var **w,
                              bp_var **b);

/* The geometry of conv c on an input of shape (ndim, shape), batched
 * (B, spatial.., Cin) or not; yshape / *yd receive the output's shape. Checks
 * the rank, channels and dtype are the caller's (bp__check_layer_input); this
 * checks sizes: BP_ESHAPE for an empty input, an input smaller than the
 * dilated kernel, or sizes whose products overflow int64. */
bp_status bp__conv_geom_init(bp__conv_geom *g, const bp_conv *c, int ndim, const int64_t *shape, int64_t *yshape,
                             int *yd);

/* ---- reference kernels (conv_ref.c): the definition, loop by loop ---- */

/* y = conv(x, w) + bias (bias may be NULL). */
void bp__conv_forward_ref(const bp__conv_geom *g, bp_real *y, const bp_real *x, const bp_real *w, const bp_real *bias);
/* dx = dL/dx, dw = dL/dw (K x Cout), db = dL/db from dy; each only if non-NULL.
 * BP_ENOMEM when its double scratch cannot be had. */
bp_status bp__conv_backward_ref(const bp__conv_geom *g, bp_real *dx, bp_real *dw, bp_real *db, const bp_real *dy,
                                const bp_real *x, const bp_real *w);

/* ---- direct channels-last kernels (conv_direct.c) ---- */

/* A convolution as the direct kernels see it: y (B, out.., ldy) from
 * x (B, in.., ldx), G groups of Cr reduction and Co output channels, output
 * channels in blocks of up to 2 vectors. wp is the kernel packed per block:
 * [G][nblk][taps][Cr][nv*VL], each block starting taps*Cr*2*VL reals apart. */
typedef struct bp__conv_direct {
    int64_t B, in[3], out[3], lo[3], k[3], s[3], d[3];
    int64_t ldx, Cr, ldy, Co, G, nblk, taps;
    const bp_real *wp;
} bp__conv_direct;

/* The forward pass of g as a direct convolution (reduction over input channels). */
bp__conv_direct bp__conv_direct_forward_view(const bp__conv_geom *g);
/* dx of g for stride 1 as a direct convolution: dx[i] = sum_t dy[i + lo - t*d] . w[t]^T,
 * a stride-1 correlation of dy with the flipped kernel, low padding (k-1)*d - lo. */
bp__conv_direct bp__conv_direct_dx_view(const bp__conv_geom *g);
/* w (taps, Cg, Cout) packed for D (bp_alloc_aligned; the caller frees it with
 * bp_free_aligned); flip: the dx view (taps reversed, co and ci swapped). NULL: out of memory. */
bp_real *bp__conv_pack_weights(const bp__conv_direct *D, const bp_real *w, int64_t Cg, int64_t Cout, bool flip);
/* y = conv_D(x) (+ bias) with D.wp packed: the one direct kernel of forward and dx. */
bp_status bp__conv_direct_run(const bp__conv_direct *D, bp_real *y, const bp_real *x, const bp_real *bias);

/* Where the direct kernels apply (see bpc/conv.h); the kernels themselves
 * are correct for any g except dx, which needs stride 1. */
bool bp__conv_direct_ok_fwd(const bp__conv_geom *g);
bool bp__conv_direct_ok_dw(const bp__conv_geom *g);
bool bp__conv_direct_ok_dx(const bp__conv_geom *g);

/* y = conv(x, w) + bias by the direct kernel (packs w itself). */
bp_status bp__conv_forward_direct(const bp__conv_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                                  const bp_real *bias);
/* dx by the direct kernel; g's strides must all be 1. */
bp_status bp__conv_dx_direct(const bp__conv_geom *g, bp_real *dx, const bp_real *dy, const bp_real *w);
/* dw (K x Cout) and db (if non-NULL) by the direct dw kernels (one input
 * channel per group: taps as accumulators). */
bp_status bp__conv_dw_direct(const bp__conv_geom *g, bp_real *dw, bp_real *db, const bp_real *dy, const bp_real *x);

/* ---- tiled im2col / col2im + GEMM (conv_gemm.c) ---- */

/* GEMM tile rows for K-long im2col rows: P*K reals near 512 KiB, 64..1024 rows, <= Pout. */
int64_t bp__conv_tile_rows(int64_t K, int64_t Pout);
/* col[r, (a,b,c,ci)] = x[o(r)*s - lo + (a,b,c)*d, grp*Cg + ci] for the np output
 * positions from p0 of one sample xb, zero outside the input. */
void bp__conv_im2col_tile(const bp__conv_geom *g, const bp_real *xb, int64_t grp, int64_t p0, int64_t np, bp_real *col);
/* The adjoint of im2col: dxb[...] += dcol[r, ...] (accumulates: the caller zeroes dxb). */
void bp__conv_col2im_tile(const bp__conv_geom *g, bp_real *dxb, int64_t grp, int64_t p0, int64_t np,
                          const bp_real *dcol);
/* y = conv(x, w) + bias by im2col + GEMM. */
bp_status bp__conv_forward_gemm(const bp__conv_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                                const bp_real *bias);
/* dx and dw (K x Cout), each if non-NULL, by GEMM + col2im. */
bp_status bp__conv_backward_gemm(const bp__conv_geom *g, bp_real *dx, bp_real *dw, const bp_real *dy, const bp_real *x,
                                 const bp_real *w);
/* db = the sum of dy over samples and positions. */
bp_status bp__conv_dbias(const bp__conv_geom *g, bp_real *db, const bp_real *dy);

/* ---- bf16 products, float32 sums (conv_bf16.c; BP_PRECISION_BF16) ---- */

/* Whether the bf16 kernels are worth running on g: the forward and dw with
 * at least 8 output channels per group, dx with at least 8 input channels
 * per group (a 16-lane block at least half used); always false in the
 * float64 flavour or without BPC_HAVE_BF16. The kernels themselves are
 * correct for any g (any stride, padding, dilation and groups). */
bool bp__conv_bf16_ok(const bp__conv_geom *g);
bool bp__conv_bf16_ok_dx(const bp__conv_geom *g);
bool bp__conv_bf16_ok_dw(const bp__conv_geom *g);
/* y = conv(x, w) + bias with x and w rounded to bf16 and float32 sums (see
 * conv_bf16.c for the bound). BP_EUNSUPPORTED where !bp_bf16_available(),
 * BP_ENOMEM for its packed copies. */
bp_status bp__conv_forward_bf16(const bp__conv_geom *g, float *y, const float *x, const float *w, const float *bias);
/* dx = dL/dx from dy and w, both rounded to bf16, float32 sums; same errors. */
bp_status bp__conv_dx_bf16(const bp__conv_geom *g, float *dx, const float *dy, const float *w);
/* dw = dL/dw (K x Cout) from dy and x, both rounded to bf16, float32 sums
 * (per-thread sums added in thread order); same errors. db is not here. */
bp_status bp__conv_dw_bf16(const bp__conv_geom *g, float *dw, const float *dy, const float *x);

#endif
