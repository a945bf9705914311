/* bpc/batchnorm.h — BatchNorm1d / 2d / 3d, as brainpy.layers.BatchNorm{1,2,3}d.
 *
 * Data is channels-last: BatchNorm1d takes (B, L, C), BatchNorm2d (B, H, W, C),
 * BatchNorm3d (B, H, W, D, C). Statistics are taken over `axis` (default: every
 * axis but the last) and have the shape of the remaining axes: (C,) by default.
 * A custom axis must reduce a leading run of axes (e.g. (0,1,2) for 3d, giving
 * statistics per (D, C)); the sizes of kept axes are fixed at construction
 * (opts.kept_dims), since the running statistics are variables of fixed shape.
 * BrainPy 2.8.2 accepts such an axis but then fails to store (D, C) statistics
 * in its (C,) running buffers; scale and bias stay (C,) as in BrainPy.
 *
 *   fit (bp_share_fit() true):  y = (x - mean_B) / sqrt(var_B + eps) * scale + bias
 *       with the batch mean and BIASED batch variance, and then
 *       running_mean = momentum * running_mean + (1 - momentum) * mean_B
 *       running_var  = momentum * running_var  + (1 - momentum) * var_B * N / (N - 1)
 *   eval:                       y = (x - running_mean) / sqrt(running_var + eps) * scale + bias
 *
 * momentum is BrainPy's RETENTION factor (default 0.99): PyTorch's momentum is
 * 1 - ours. Variables, in this order: running_mean (zeros), running_var (ones),
 * bias, scale (TrainVar in TrainingMode, Variable in BatchingMode; only when
 * affine). Improvements over BrainPy 2.8.2: statistics are computed stably (not
 * E[x^2] - E[x]^2); a single value per channel while fitting is an error;
 * NaN/Inf statistics are an error, not stored; every check is an error code.
 *
 * The statistics are those of one call's batch. Gradient accumulation over
 * micro-batches (several small updates, one optimizer step) therefore
 * normalises with micro-batch statistics, which are noisier than the full
 * batch's and move the running statistics once per micro-batch: keep each
 * call's batch large enough per channel, or freeze BatchNorm (eval) to fine-tune.
 * There is no num_batches_tracked / cumulative-average mode (PyTorch's
 * momentum=None); momentum is always an exponential retention factor.
 *
 * Cross-replica statistics (axis_name). When axis_name is bound to a
 * communicator (bpc/comm.h, bp_axis_bind), a fit step takes the statistics of
 * the whole global batch across its ranks (or, with axis_index_groups, of the
 * rank's group: groups of axis_index_group_size ranks, split once, at the first
 * fit step). Each rank's (count, mean, M2) per feature is combined in double,
 * in rank order (Chan's formula), so ranks with different batch sizes (3 + 5,
 * even 0 + 8, or 1 per rank) get exactly the statistics of their union, and
 * every rank the same bits; the running variance is unbiased over the global
 * count. BrainPy instead averages per-replica E[x] and E[x^2] (pmean), which is
 * exact only for equal batches and cancels in float32. The backward all-reduces
 * the 2 F per-feature sums once; the parameter gradients stay each rank's own
 * (a data-parallel gradient reduction sums them). Evaluation communicates
 * nothing. A fit step with an unbound axis_name is BP_EUNSUPPORTED naming the
 * axis; ranks that call BatchNorm a different number of times get BP_ECOMM. */
#ifndef BPC_BATCHNORM_H
#define BPC_BATCHNORM_H

#include <bpc/node.h>
#include <bpc/init.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* The node classes (n->cls == &bp_batchnorm3d_class tells a BatchNorm3d); their
 * names "BatchNorm1d", "BatchNorm2d", "BatchNorm3d" prefix the automatic
 * instance names, e.g. "BatchNorm3d0". */
extern const bp_node_class bp_batchnorm1d_class;
extern const bp_node_class bp_batchnorm2d_class;
extern const bp_node_class bp_batchnorm3d_class;

/* Constructor options; get defaults from bp_batchnorm_defaults(). */
typedef struct bp_batchnorm_opts {
    int n_axis;                 /* 0: the default (all axes but the last) */
    int axis[BP_MAX_DIMS];      /* reduced axes; negative counts from the end */
    int64_t kept_dims[BP_MAX_DIMS]; /* sizes of the non-reduced axes other than the channel,
                                 * in order; needed only when axis keeps such axes (e.g.
                                 * BatchNorm3d axis (0,1,2) keeps D: statistics per (D, C)) */
    double epsilon;             /* 1e-5; added inside the square root */
    double momentum;            /* 0.99; BrainPy's retention convention, in [0, 1] */
    bool affine;                /* true: learnable bias and scale */
    bp_init bias_initializer;   /* ZeroInit; an array of shape () or (1,) fills every channel */
    bp_init scale_initializer;  /* OneInit(1.0); arrays and callback user data are read
                                 * only during construction (the copies kept in
                                 * bp_batchnorm still point at them, unread) */
    const char *axis_name;      /* NULL, or the axis to take statistics across (see below) */
    const int *axis_index_groups; /* ranks, the groups back to back (copied), n_axis_index_groups entries */
    size_t n_axis_index_groups;
    int axis_index_group_size;  /* ranks per group (JAX's groups are of equal size); 0: one group */
    const bp_mode *mode;        /* NULL: TrainingMode(batch_size=1) */
    const char *name;           /* NULL: automatic "BatchNorm3d<n>" */
    bp_rng *rng;                /* for random initializers; NULL: a generator seeded with 0 */
} bp_batchnorm_opts;

/* The defaults of every option, as commented in bp_batchnorm_opts (BrainPy's):
 * default axes, epsilon 1e-5, momentum 0.99, affine, ZeroInit bias, OneInit
 * scale, TrainingMode, automatic name. Never fails. */
bp_batchnorm_opts bp_batchnorm_defaults(void);

/* The layer. Fields are readable attributes (BrainPy's names); change them only
 * through the constructor. Vars are borrowed pointers into the node. */
typedef struct bp_batchnorm {
    bp_node base;
    int64_t num_features;
    int ndim;                   /* 3, 4 or 5: the input rank */
    int n_axis;
    int axis[BP_MAX_DIMS];      /* normalised to [0, ndim - 1), ascending */
    int n_kept;                 /* non-reduced axes other than the channel */
    int64_t kept_dims[BP_MAX_DIMS];
    int64_t n_features;         /* statistics per position: prod(kept_dims) * num_features */
    double epsilon, momentum;
    bool affine;
    bp_init bias_initializer, scale_initializer;
    char *axis_name;
    int *axis_index_groups;
    size_t n_axis_index_groups;
    int axis_index_group_size;
    struct bp_bn_sync *sync;    /* private: the group communicator, made at the first synced fit */
    bp_var *running_mean, *running_var;  /* shape: the non-reduced axes (C,) by default */
    bp_var *bias, *scale;                /* NULL unless affine */
} bp_batchnorm;

/* Creates BatchNorm1d/2d/3d (num_features = C >= 1; opts NULL = defaults).
 * Errors: BP_EINVAL (num_features < 1, epsilon < 0 or not finite, momentum
 * outside [0, 1], n_axis out of range, an axis out of range, repeated, or the
 * channel axis, a kept axis without its size in kept_dims or sizes that
 * overflow, axis_index_groups NULL with entries, an array initializer without
 * data), BP_EUNSUPPORTED (an axis set that is not a leading run of axes),
 * BP_ESHAPE (an array initializer not of shape (C,), () or (1,)), BP_EMODE
 * (NonBatchingMode), BP_ENAME (a bad or taken name), BP_ENOMEM. */
bp_status bp_batchnorm1d_new(bp_node **out, int64_t num_features, const bp_batchnorm_opts *opts);
bp_status bp_batchnorm2d_new(bp_node **out, int64_t num_features, const bp_batchnorm_opts *opts);
bp_status bp_batchnorm3d_new(bp_node **out, int64_t num_features, const bp_batchnorm_opts *opts);

/* The fused BatchNorm+ReLU(+MaxPool) of conv nets is a block node
 * (bpc/bn_relu_pool.h), which Sequential also uses for such a run of children. */

/* The node as a bp_batchnorm, or NULL if it is not a BatchNorm. */
bp_batchnorm *bp_batchnorm_cast(bp_node *n);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
