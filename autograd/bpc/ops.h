/* bpc/ops.h — differentiable ops on tensors of this flavour's real type.
 *
 * Every op writes a new tensor (one reference, the caller frees it) to *out,
 * and records itself for backward when bp_ag_wants() holds (see
 * bpc/autograd.h). Outputs come from the autograd buffer pool. Inputs are
 * never modified; a recorded op keeps references to them until its graph is
 * released, so the caller may free its own references at any time.
 * Errors name the op and the shapes seen: BP_EINVAL (NULL argument, bad
 * parameter), BP_EDTYPE (not the real dtype), BP_ESHAPE (shapes that do not fit).
 *
 * Broadcasting (add, sub, mul, div) is over trailing dimensions only: the two
 * shapes are equal, or one is a suffix of the other, e.g. (8,16) with (16,),
 * (2,3,4) with (3,4), anything with a 0-d scalar. The output has the longer
 * shape; the smaller operand's gradient is summed over the repeated blocks. */
#ifndef BPC_OPS_H
#define BPC_OPS_H

#include <stdbool.h>
#include <bpc/tensor.h>
#include <bpc/random.h>
#include <bpc/autograd.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------- arithmetic */

/* out = a + b (broadcast over trailing dims). */
bp_status bp_add(bp_tensor **out, bp_tensor *a, bp_tensor *b);
/* out = a - b (broadcast over trailing dims). */
bp_status bp_sub(bp_tensor **out, bp_tensor *a, bp_tensor *b);
/* out = a * b elementwise (broadcast over trailing dims). */
bp_status bp_mul(bp_tensor **out, bp_tensor *a, bp_tensor *b);
/* out = a / b elementwise (broadcast over trailing dims); b = 0 gives inf/nan as IEEE. */
bp_status bp_div(bp_tensor **out, bp_tensor *a, bp_tensor *b);
/* out = a + s. */
bp_status bp_add_scalar(bp_tensor **out, bp_tensor *a, double s);
/* out = a * s. */
bp_status bp_mul_scalar(bp_tensor **out, bp_tensor *a, double s);
/* out = a ^ p elementwise (pow; d/da = p a^(p-1)). Negative a with a
 * non-integer p gives nan, as torch.pow. */
bp_status bp_pow_scalar(bp_tensor **out, bp_tensor *a, double p);

/* ---------------------------------------------------------------- matmul */

/* out = a @ b with a of shape (..., K) and b of shape (K, N): out is (..., N).
 * The leading dims of a are flattened into M rows, so one sgemm/dgemm
 * (OpenBLAS) of (M,K)x(K,N) does the work; backward is two more gemms that
 * accumulate into da and db with beta = 1. Called outside OpenMP regions, so
 * OpenBLAS may use its own threads. */
bp_status bp_matmul(bp_tensor **out, bp_tensor *a, bp_tensor *b);

/* ------------------------------------------------------------- reductions */

/* out = sum of a over the n_axes given axes (negative counts from the end;
 * n_axes 0 / axes NULL: all axes). keepdim keeps reduced axes as size 1;
 * otherwise they are removed (all axes -> a 0-d scalar). */
bp_status bp_sum(bp_tensor **out, bp_tensor *a, int n_axes, const int *axes, bool keepdim);
/* out = mean of a over the given axes (as bp_sum, divided by the count;
 * reducing over zero elements gives nan, as torch.mean). */
bp_status bp_mean(bp_tensor **out, bp_tensor *a, int n_axes, const int *axes, bool keepdim);

/* ---------------------------------------------------------------- shapes */

/* out = a viewed with a new shape of the same numel (one entry may be -1,
 * inferred). The output shares a's data (a view, no copy). */
bp_status bp_reshape(bp_tensor **out, bp_tensor *a, int ndim, const int64_t *shape);
/* out = a with dims start_dim..end_dim (inclusive; negative counts from the
 * end) merged into one, as torch.flatten. A view of a. */
bp_status bp_flatten(bp_tensor **out, bp_tensor *a, int start_dim, int end_dim);

/* out = the n tensors (1 <= n <= 8) joined along axis (negative counts from
 * the end; -1 is the channels of channels-last data, a U-Net's skip
 * connection). Every other dim must agree. Gradient flows to each input. */
bp_status bp_concat(bp_tensor **out, int n, bp_tensor *const *in, int axis);

/* Up-sampling of channels-last x (B, s_1, ..., s_k, C), k = 1..3 spatial dims,
 * by integer factors scale[0..k) >= 1: out (B, s_1*scale[0], ..., C). */
typedef enum bp_upsample_mode {
    BP_UPSAMPLE_NEAREST, /* out[o] = x[floor(o / scale)], as torch's mode='nearest' */
    BP_UPSAMPLE_LINEAR   /* linear / bilinear / trilinear with align_corners=False, as torch */
} bp_upsample_mode;
bp_status bp_upsample(bp_tensor **out, bp_tensor *x, int k, const int *scale, bp_upsample_mode mode);

/* ------------------------------------------------------------ activations */

/* out = max(a, 0); gradient 1 where a > 0, else 0 (0 at a = 0, as PyTorch). */
bp_status bp_relu(bp_tensor **out, bp_tensor *a);
/* out = a > 0 ? a : slope * a. */
bp_status bp_leaky_relu(bp_tensor **out, bp_tensor *a, double slope);
/* out = 1 / (1 + exp(-a)). */
bp_status bp_sigmoid(bp_tensor **out, bp_tensor *a);
/* out = tanh(a). */
bp_status bp_tanh(bp_tensor **out, bp_tensor *a);
/* out = a * Phi(a) = a/2 * (1 + erf(a / sqrt 2)): the exact (erf) GELU,
 * PyTorch's default (approximate='none'), not the tanh approximation. */
bp_status bp_gelu(bp_tensor **out, bp_tensor *a);
/* out = softmax over the last axis: exp(a - max) / sum exp(a - max). ndim >= 1. */
bp_status bp_softmax(bp_tensor **out, bp_tensor *a);
/* out = log_softmax over the last axis: a - max - log sum exp(a - max). ndim >= 1. */
bp_status bp_log_softmax(bp_tensor **out, bp_tensor *a);

/* Inverted dropout. When training and p > 0, each element is kept with
 * probability 1 - p (one bp_rng_uniform draw per element, in order, >= p
 * keeps) and scaled by 1/(1-p); p = 1 zeroes everything. When not training or
 * p = 0, *out is x itself with one more reference (identity, nothing recorded).
 * p must be in [0, 1]; rng may be NULL only when no mask is drawn. */
bp_status bp_dropout(bp_tensor **out, bp_tensor *x, double p, bool training, bp_rng *rng);

/* ------------------------------------------------------------------ losses */

/* Mean softmax cross-entropy: logits (..., C), labels of the leading shape
 * (...) in int32 or int64 with values in [0, C); out is a 0-d scalar
 * mean over rows of -log_softmax(logits)[label]. Gradient flows to logits. */
bp_status bp_softmax_cross_entropy(bp_tensor **out, bp_tensor *logits, bp_tensor *labels);
/* Mean squared error: out = mean((pred - target)^2), a 0-d scalar; shapes must
 * be equal. Gradient flows to both (to target only if it requires grad). */
bp_status bp_mse(bp_tensor **out, bp_tensor *pred, bp_tensor *target);

/* -------------------------------------------------- segmentation losses */

/* Options of the per-voxel losses below. Labels are int32 or int64. */
typedef struct bp_seg_loss_opts {
    const double *class_weight; /* C weights (cross-entropy only), or NULL: all 1; borrowed during the call */
    bool has_ignore;            /* voxels labelled ignore_label count nowhere */
    int64_t ignore_label;
    double smooth_nr, smooth_dr; /* Dice: (2 I + smooth_nr) / (S + smooth_dr); default 1e-5 each */
    bool include_background;     /* Dice: class 0 counts (default true) */
    bool batch;                  /* Dice: sums over the whole batch, not per sample (default false) */
} bp_seg_loss_opts;

/* The defaults: no weights, no ignore label, smooth 1e-5 / 1e-5, background
 * included, per-sample Dice. */
bp_seg_loss_opts bp_seg_loss_defaults(void);

/* Weighted softmax cross-entropy over voxels, as torch.nn.functional.
 * cross_entropy(weight, ignore_index) on channels-last data: logits (..., C),
 * labels (...); out (0-d) = sum_v w[y_v] * (lse(x_v) - x_v[y_v]) / sum_v w[y_v]
 * over voxels not ignored. With no such voxel (or a zero weight sum) out is 0
 * and the gradient 0, where PyTorch gives NaN. opts NULL: defaults. Gradient
 * flows to logits. */
bp_status bp_seg_cross_entropy(bp_tensor **out, bp_tensor *logits, bp_tensor *labels, const bp_seg_loss_opts *opts);

/* Soft Dice loss of softmax(logits) against one-hot labels, as MONAI's
 * DiceLoss(softmax=True, to_onehot_y=True): logits (B, ..., C), labels
 * (B, ...); for each sample b (or the whole batch when opts->batch) and class
 * c, I = sum_v p_vc g_vc and S = sum_v (p_vc + g_vc) over voxels not ignored,
 * and out (0-d) = mean over (b, c) of 1 - (2 I + smooth_nr) / (S + smooth_dr),
 * classes from 1 when include_background is false. Gradient flows to logits.
 * Dice + cross-entropy is bp_add of the two. */
bp_status bp_soft_dice_loss(bp_tensor **out, bp_tensor *logits, bp_tensor *labels, const bp_seg_loss_opts *opts);

/* The Dice score per class of a hard prediction (the argmax of logits
 * (..., C) over C, ties to the lower class) against labels (...):
 * dice[c] = 2 |P_c and G_c| / (|P_c| + |G_c|) over voxels not ignored
 * (opts may be NULL), NaN where class c is in neither. dice has C entries.
 * Not recorded (a metric). */
bp_status bp_dice_score(const bp_tensor *logits, const bp_tensor *labels, const bp_seg_loss_opts *opts, double *dice);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
