/* bpc/groupnorm.h — GroupNorm and InstanceNorm over channels-last data, as
 * brainpy.dnn.GroupNorm / InstanceNorm (and torch.nn.GroupNorm).
 *
 * Input (B, ..., C): any number of spatial axes, the batch first and the
 * channels last. The C channels are split into num_groups groups of C / G
 * consecutive channels; each (sample, group) is normalised over its spatial
 * positions and channels together, with its own mean and biased variance:
 *     y = (x - mean_bg) / sqrt(var_bg + epsilon) * scale[c] + bias[c]
 * in training and evaluation alike (no running statistics), so it works at
 * batch 1 and 2, where a 3-D segmentation net trains and BatchNorm is weak.
 * InstanceNorm is GroupNorm with one group per channel. Variables, in this
 * order: bias (zeros), scale (ones), both (C,), only when affine (TrainVar in
 * training mode, Variable otherwise). Statistics are two-pass, in double. */
#ifndef BPC_GROUPNORM_H
#define BPC_GROUPNORM_H

#include <stdbool.h>
#include <bpc/init.h>
#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

extern const bp_node_class bp_groupnorm_class, bp_instancenorm_class;

typedef struct bp_groupnorm_opts {
    double epsilon;           /* 1e-5, added inside the square root; >= 0 */
    bool affine;              /* true */
    bp_init bias_initializer; /* ZeroInit */
    bp_init scale_initializer; /* OneInit */
    const bp_mode *mode;      /* NULL: the global mode */
    const char *name;
    bp_rng *rng;              /* for the initializers; NULL: seeded with 0 */
} bp_groupnorm_opts;

bp_groupnorm_opts bp_groupnorm_defaults(void);

/* The layer; fields are readable attributes, vars borrowed. */
typedef struct bp_groupnorm {
    bp_node base;
    int64_t num_groups, num_channels;
    double epsilon;
    bp_var *bias, *scale; /* NULL without affine */
} bp_groupnorm;

/* GroupNorm(num_groups, num_channels). BP_EINVAL: num_groups < 1, channels < 1,
 * groups not dividing channels, epsilon < 0 or not finite; initializer errors. */
bp_status bp_groupnorm_new(bp_node **out, int64_t num_groups, int64_t num_channels, const bp_groupnorm_opts *opts);
/* InstanceNorm(num_channels): GroupNorm with num_groups = num_channels. */
bp_status bp_instancenorm_new(bp_node **out, int64_t num_channels, const bp_groupnorm_opts *opts);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
