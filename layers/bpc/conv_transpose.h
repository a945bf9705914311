/* bpc/conv_transpose.h — ConvTranspose1d / 2d / 3d, as brainpy.dnn.ConvTranspose{1,2,3}d
 * (channels-last), extended with groups, dilation and output_padding.
 *
 * Input (B, *spatial, C_in) — or one unbatched sample (*spatial, C_in) — and
 * output (B, *out_spatial, C_out). Variables, named and shaped as bpc's Conv:
 *   w  kernel + (C_in / groups, C_out), e.g. (2, 2, 2, 32, 16); XavierNormal
 *   b  (1,)*n_spatial + (C_out,), e.g. (1, 1, 1, 16); ZeroInit (only with bias)
 * Both are TrainVars in TrainingMode and plain Variables otherwise.
 *
 * Semantics: BrainPy's, i.e. jax.lax.conv_transpose with transpose_kernel=False:
 * a convolution of the input dilated by the stride (stride - 1 zeros between
 * samples), padded by (pad_lo, pad_hi), with the kernel NOT flipped. Per
 * spatial dim, with span = (kernel_size - 1) * dilation + 1:
 *   y[b, o, co] = b[co] + sum_{k, ci, i : i*stride = o + k*dilation - pad_lo} x[b, i, g*Cg + ci] * w[k, ci, co]
 *   out = (in - 1) * stride + pad_lo + pad_hi - span + 2
 * with g = co / (C_out / groups), Cg = C_in / groups. Padding:
 *   "SAME"  (BrainPy's default): out = in * stride; pad_lo = span - 1 when
 *           stride > span - 1, else ceil((span + stride - 2) / 2); pad_hi = span + stride - 2 - pad_lo
 *   "VALID": out = in * stride + max(span - stride, 0); pad_lo = span - 1
 *   explicit (pad_lo, pad_hi) per dim, as lax.conv_transpose's explicit padding
 *           (padding of the dilated input, not PyTorch's cropping): 0 <= pad_lo <= span - 1, pad_hi >= 0.
 * output_padding (0 <= it < max(stride, dilation), as PyTorch) adds to pad_hi.
 * Groups (lax's feature_group_count) and dilation (lax's rhs_dilation) are
 * what BrainPy's ConvTranspose does not pass on; output_padding is PyTorch's.
 *
 * PyTorch's ConvTranspose with padding p and output_padding op is this layer
 * with pad_lo = span - 1 - p, pad_hi = span - 1 - p + op and the kernel
 * flipped along every spatial dim: w[k, ci, co] = W_torch[g*Cg + ci, co - g*C_out/groups, K - 1 - k]
 * (K the kernel size). A U-Net's (kernel 2, stride 2) up-sampling is "SAME" or "VALID" here.
 *
 * Computation: the output is the input gradient of a convolution (the
 * "adjoint" Conv with this layer's stride and dilation, from the output grid
 * to the input grid, kernel flipped and its channel axes swapped), so the
 * kernels are Conv's, each where Conv's rules (bpc/conv.h) let it apply:
 * the forward is that convolution's dx (the direct kernel when every stride
 * is 1, GEMM + col2im otherwise), dx is its forward (direct for any stride),
 * dw its dw with the roles of input and output gradient swapped. When kernel_size == stride with dilation 1 and the
 * output is in * stride (SAME or VALID; the U-Net up-sampling), every output
 * gets exactly one tap: the layer is then a 1x1x1 convolution into
 * prod(kernel) * C_out channels followed by a pixel shuffle (and its
 * backward an un-shuffle of dy followed by that convolution's dx and dw),
 * run on Conv's direct kernels chunk by chunk in cache, so each of x, y, dy
 * and dx crosses memory once (no col2im, no zeroing; GEMM only where the
 * direct kernels do not apply, e.g. fewer than 4 channels).
 * Workspace: as Conv (bpc/conv.h) for the adjoint convolution, plus a
 * re-laid copy of the kernel; for the up-sampling, per thread one chunk of
 * about 512 KiB (at least one input plane by prod(kernel) * C_out channels)
 * and, in the backward, two kernel-sized dw sums. y and dx do not
 * depend on the thread count; dw and db are summed per thread. */
#ifndef BPC_CONV_TRANSPOSE_H
#define BPC_CONV_TRANSPOSE_H

#include <bpc/node.h>
#include <bpc/init.h>
#include <bpc/conv.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

extern const bp_node_class bp_conv_transpose1d_class;
extern const bp_node_class bp_conv_transpose2d_class;
extern const bp_node_class bp_conv_transpose3d_class;

/* Constructor options; get defaults from bp_conv_transpose_defaults(). Per-dim
 * arrays use the first n_spatial entries; a 0 entry in stride / dilation means 1. */
typedef struct bp_conv_transpose_opts {
    int kernel_size[3];        /* required: every entry >= 1 for the used dims */
    int stride[3];             /* 1 */
    bp_padding_kind padding;   /* BP_PAD_SAME (BrainPy's default) */
    int pad_lo[3], pad_hi[3];  /* BP_PAD_EXPLICIT: lax's padding of the dilated input, see above */
    int output_padding[3];     /* 0 */
    int dilation[3];           /* 1 */
    int groups;                /* 1; must divide C_in and C_out */
    bool bias;                 /* true */
    bp_init w_initializer;     /* XavierNormal(scale=1) */
    bp_init b_initializer;     /* ZeroInit */
    const bp_mode *mode;       /* NULL: the global mode */
    const char *name;
    bp_rng *rng;               /* for the initializers; NULL: a generator seeded with 0 */
} bp_conv_transpose_opts;

/* The defaults listed in bp_conv_transpose_opts. */
bp_conv_transpose_opts bp_conv_transpose_defaults(void);

/* The layer; fields are readable attributes, vars are borrowed pointers. */
typedef struct bp_conv_transpose {
    bp_node base;
    int n_spatial;             /* 1, 2 or 3 */
    int64_t in_channels, out_channels;
    int kernel_size[3], stride[3], dilation[3], output_padding[3];
    bp_padding_kind padding;
    int pad_lo[3], pad_hi[3];  /* explicit padding (without output_padding) */
    int groups;
    bp_var *w, *b;             /* b NULL without bias */
} bp_conv_transpose;

/* Creates ConvTranspose1d / 2d / 3d. Errors (BP_EINVAL): out NULL, channels < 1,
 * a kernel size < 1, stride or dilation < 0, groups < 1 or not dividing C_in
 * and C_out, an explicit pad_lo outside [0, span - 1] or pad_hi < 0,
 * output_padding < 0 or >= max(stride, dilation), a dilated kernel beyond
 * 2^31 - 1, more than 2^60 weights; BP_EMODE, BP_ENAME as for any node.
 * update() fails with BP_ESHAPE on an empty input, an empty output or one of
 * more than 2^60 elements. The caller owns *out; free it with bp_node_free. */
bp_status bp_conv_transpose1d_new(bp_node **out, int64_t in_channels, int64_t out_channels,
                                  const bp_conv_transpose_opts *opts);
bp_status bp_conv_transpose2d_new(bp_node **out, int64_t in_channels, int64_t out_channels,
                                  const bp_conv_transpose_opts *opts);
bp_status bp_conv_transpose3d_new(bp_node **out, int64_t in_channels, int64_t out_channels,
                                  const bp_conv_transpose_opts *opts);

/* The node as a bp_conv_transpose (borrowed), or NULL if it is not a transposed convolution. */
bp_conv_transpose *bp_conv_transpose_cast(bp_node *n);

/* The output spatial size along spatial dim d (0-based) for input size in,
 * and the low padding of the dilated input; BP_ESHAPE when the output would
 * be empty or overflows int64. */
bp_status bp_conv_transpose_out_size(const bp_conv_transpose *c, int d, int64_t in, int64_t *out, int64_t *pad_lo);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
