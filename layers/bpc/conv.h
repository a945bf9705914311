/* bpc/conv.h — Conv1d / Conv2d / Conv3d, as brainpy.dnn.Conv{1,2,3}d (channels-last).
 *
 * Input (B, *spatial, C_in) — or one unbatched sample (*spatial, C_in) — and
 * output (B, *out_spatial, C_out). Variables, as BrainPy names them:
 *   w  kernel + (C_in / groups, C_out), e.g. (3, 3, 3, 16, 32); XavierNormal
 *   b  (1,)*n_spatial + (C_out,), e.g. (1, 1, 1, 32); ZeroInit (only with bias)
 * Both are TrainVars in TrainingMode and plain Variables otherwise.
 *
 *   y[b, o, co] = b[co] + sum_{k, ci} x[b, o*stride - pad_lo + k*dilation, g*Cg + ci] * w[k, ci, co]
 * with g = co / (C_out / groups), Cg = C_in / groups; taps outside the input read 0.
 *
 * Padding: "SAME" (BrainPy's default: out = ceil(in / stride), the total padding
 * split low = total / 2, high = the rest), "VALID" (no padding), one int for
 * every side, or (low, high) pairs per spatial dim.
 *
 * Computation: two paths, chosen by shape (never by size):
 * - Direct kernels (channels-last, register-blocked, vectorised over output
 *   channels) whenever a group has at least 4 output channels: the forward
 *   pass for every stride, dilation, padding and group count, dw likewise
 *   when a group also has at least 8 input channels (4 with more than one
 *   vector of output channels), and dx when every stride is 1 and a group
 *   has at least 4 input channels; each also needs the zero-padded row it
 *   copies (the last spatial dim plus its padding) to be at most twice the
 *   row plus 256 positions, so a dilation far beyond the input goes to GEMM.
 *   Workspace: the kernel packed in blocks of two vectors of output channels,
 *   groups * K * ceil(C_out/groups / 2V) * 2V reals (V = the vector width in
 *   reals, 16 floats with AVX-512; for dx the same with C_in and C_out
 *   swapped), plus per thread 2*k0*k1 zero-padded copies of an input row,
 *   each Lp x ceil(C_in/groups / V)*V reals (Lp = the padded length of the
 *   last spatial dim), and for dw one packed accumulator of the kernel's
 *   packed size per thread.
 * - Otherwise OpenBLAS GEMM over tiles of output positions. For each tile of
 *   P output positions of one sample, the im2col rows of just that tile
 *   (P x K, K = prod(kernel) * C_in / groups) are built and multiplied by the
 *   kernel matrix. Workspace: each thread holds one P x K tile (P <= 1024,
 *   chosen so that the tile stays near 512 KiB), plus, for the weight
 *   gradient, one K x C_out accumulator per thread.
 * Never an im2col of the whole batch. Results are deterministic for a given
 * thread count (y and dx do not depend on it; dw is summed per thread, then
 * in thread order). */
#ifndef BPC_CONV_H
#define BPC_CONV_H

#include <bpc/node.h>
#include <bpc/init.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

extern const bp_node_class bp_conv1d_class;
extern const bp_node_class bp_conv2d_class;
extern const bp_node_class bp_conv3d_class;

typedef enum bp_padding_kind {
    BP_PAD_SAME = 0,   /* default, as BrainPy */
    BP_PAD_VALID,
    BP_PAD_EXPLICIT    /* pad_lo / pad_hi below */
} bp_padding_kind;

/* Constructor options; get defaults from bp_conv_defaults(). Per-dim arrays
 * use the first n_spatial entries; a 0 entry in stride / dilation means 1. */
typedef struct bp_conv_opts {
    int kernel_size[3];        /* required: every entry >= 1 for the used dims */
    int stride[3];             /* 1 */
    bp_padding_kind padding;   /* BP_PAD_SAME */
    int pad_lo[3], pad_hi[3];  /* BP_PAD_EXPLICIT: >= 0 each (an int padding: set both) */
    int dilation[3];           /* 1 (BrainPy's rhs_dilation) */
    int groups;                /* 1; must divide C_in and C_out */
    bool bias;                 /* true */
    bp_init w_initializer;     /* XavierNormal(scale=1) */
    bp_init b_initializer;     /* ZeroInit */
    const bp_mode *mode;       /* NULL: the global mode (BrainPy) */
    const char *name;
    bp_rng *rng;               /* for the initializers; NULL: a generator seeded with 0 */
} bp_conv_opts;

bp_conv_opts bp_conv_defaults(void);

/* The layer; fields are readable attributes, vars are borrowed pointers. */
typedef struct bp_conv {
    bp_node base;
    int n_spatial;             /* 1, 2 or 3 */
    int64_t in_channels, out_channels;
    int kernel_size[3], stride[3], dilation[3];
    bp_padding_kind padding;
    int pad_lo[3], pad_hi[3];  /* explicit padding; SAME is resolved per input size */
    int groups;
    bp_var *w, *b;             /* b NULL without bias */
} bp_conv;

/* Creates Conv1d / Conv2d / Conv3d. Errors (BP_EINVAL): channels < 1, a kernel
 * size < 1, stride or dilation < 0, negative explicit padding, groups < 1 or
 * not dividing C_in and C_out, a dilated kernel (kernel_size - 1) * dilation + 1
 * beyond 2^31 - 1, more than 2^60 weights; BP_EMODE, BP_ENAME as for any node.
 * update() fails with BP_ESHAPE on an empty input, an input smaller than the
 * dilated kernel, or an output of more than 2^60 elements. */
bp_status bp_conv1d_new(bp_node **out, int64_t in_channels, int64_t out_channels, const bp_conv_opts *opts);
bp_status bp_conv2d_new(bp_node **out, int64_t in_channels, int64_t out_channels, const bp_conv_opts *opts);
bp_status bp_conv3d_new(bp_node **out, int64_t in_channels, int64_t out_channels, const bp_conv_opts *opts);

/* The node as a bp_conv, or NULL if it is not a convolution. */
bp_conv *bp_conv_cast(bp_node *n);

/* The output spatial size for an input size along spatial dim d (0-based),
 * and the low padding used; BP_ESHAPE when the output would be empty. */
bp_status bp_conv_out_size(const bp_conv *c, int d, int64_t in, int64_t *out, int64_t *pad_lo);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
