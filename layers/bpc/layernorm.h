/* bpc/layernorm.h — LayerNorm, as brainpy.dnn.LayerNorm (channels-last).
 *
 * Normalises every sample over its trailing normalized_shape dims: an input
 * (..., *normalized_shape) is viewed as M rows of N = prod(normalized_shape)
 * values, and each row r gets
 *   mean_r = sum_j x[r,j] / N,   var_r = sum_j (x[r,j] - mean_r)^2 / N   (biased)
 *   y[r,j] = (x[r,j] - mean_r) / sqrt(var_r + epsilon) * scale[j] + bias[j]
 * The same computation while fitting and in evaluation (no running statistics).
 * A constant row with epsilon 0 outputs bias (1/sqrt(0) is taken as 0), not NaN.
 * For channels-last images, normalized_shape (C,) normalises each voxel over
 * its channels, and (H, W, D, C) each sample over everything.
 *
 * Variables, in BrainPy's order: bias (ZeroInit), scale (OneInit), both of
 * shape normalized_shape, only with elementwise_affine; TrainVars in
 * TrainingMode, plain Variables in other modes (BrainPy 2.8.2).
 * Matches PyTorch's torch.nn.LayerNorm (with BrainPy's names: epsilon, scale,
 * bias) and BrainPy 2.8.2, whose reduction runs over the trailing axes; older
 * BrainPy releases reduced over the leading axes instead. Departures: every
 * check is an error code, and the statistics are computed in two passes
 * with double accumulators (not E[x^2] - E[x]^2). */
#ifndef BPC_LAYERNORM_H
#define BPC_LAYERNORM_H

#include <bpc/node.h>
#include <bpc/init.h>

BP_API_BEGIN

#ifdef __cplusplus
extern "C" {
#endif

/* The node class; its name "LayerNorm" prefixes automatic names ("LayerNorm0"). */
extern const bp_node_class bp_layernorm_class;

/* Constructor options; get defaults from bp_layernorm_defaults(). */
typedef struct bp_layernorm_opts {
    double epsilon;             /* 1e-5; added inside the square root, >= 0 */
    bool elementwise_affine;    /* true: learnable bias and scale of normalized_shape */
    bp_init bias_initializer;   /* ZeroInit */
    bp_init scale_initializer;  /* OneInit(1.0); arrays are read only during construction */
    const bp_mode *mode;        /* NULL: the global mode (BrainPy) */
    const char *name;           /* NULL: automatic "LayerNorm<n>" */
    bp_rng *rng;                /* for random initializers; NULL: a generator seeded with 0 */
} bp_layernorm_opts;

/* The defaults, as commented in bp_layernorm_opts (BrainPy's). Never fails. */
bp_layernorm_opts bp_layernorm_defaults(void);

/* The layer. Fields are readable attributes; change them only through the
 * constructor. Vars are borrowed pointers into the node. */
typedef struct bp_layernorm {
    bp_node base;
    int n_norm;                              /* len(normalized_shape), 1..BP_MAX_DIMS */
    int64_t normalized_shape[BP_MAX_DIMS];
    int64_t n_features;                      /* N = prod(normalized_shape) */
    double epsilon;
    bool elementwise_affine;
    bp_var *bias, *scale;                    /* NULL without elementwise_affine */
} bp_layernorm;

/* Creates a LayerNorm over the trailing n_norm dims of shape normalized_shape
 * (copied; opts NULL = defaults). The caller owns the returned reference.
 * Errors: BP_EINVAL (out or normalized_shape NULL, n_norm outside
 * [1, BP_MAX_DIMS], a size < 1 or sizes whose product overflows, epsilon < 0
 * or not finite, bad initializer hyperparameters), BP_ESHAPE (an array
 * initializer of another shape), BP_EMODE, BP_ENAME, BP_ENOMEM. */
bp_status bp_layernorm_new(bp_node **out, int n_norm, const int64_t *normalized_shape,
                           const bp_layernorm_opts *opts);

/* The node as a bp_layernorm (borrowed), or NULL if it is not a LayerNorm. */
bp_layernorm *bp_layernorm_cast(bp_node *n);

#ifdef __cplusplus
}
#endif

BP_API_END

#endif
