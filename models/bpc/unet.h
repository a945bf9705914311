/* bpc/unet.h — a 3-D U-Net for voxel-wise segmentation.
 *
 * Input (B, X, Y, Z, in_channels), output (B, X, Y, Z, n_classes) logits (feed
 * them to bp_seg_cross_entropy / bp_soft_dice_loss). X, Y and Z must be
 * multiples of 2^depth. With f = base_channels:
 *
 *   enc0    Block(in_channels -> f)
 *   enc<l>  MaxPool3d(2), Block(f 2^(l-1) -> f 2^l)          l = 1 .. depth
 *   dec<l>  up-sample x2, concatenate the skip enc<l> (channels last:
 *           up-sampled first), Block(-> f 2^l)                l = depth-1 .. 0
 *           trilinear (default): keeps f 2^(l+1) channels, Block(3 f 2^l -> f 2^l);
 *           transposed: up<l> = ConvTranspose3d(f 2^(l+1) -> f 2^l, kernel 2,
 *           stride 2), Block(2 f 2^l -> f 2^l) (Ronneberger's and MONAI's)
 *   head    Conv3d 1x1x1 (f -> n_classes)
 *   Block   conv1 (3x3x3, SAME, bias) -> norm1 -> act, conv2 -> norm2 -> act
 *
 * norm is BatchNorm3d, InstanceNorm or GroupNorm(groups); act is LeakyReLU
 * (negative_slope, 0.01 as nnU-Net) or ReLU when the slope is 0. It is the
 * same net, with the same shapes and parameter count, as the PyTorch module
 * written out in tests/gen_unet.py (a MONAI-style BasicUNet, trilinear or
 * transposed-convolution up-sampling). Child nodes are named after their place, so vars() and
 * state_dict() read "UNet0_enc1_conv2.w", "UNet0_dec0_norm1.scale", ...;
 * relative paths read "enc1.conv2.w". */
#ifndef BPC_UNET_H
#define BPC_UNET_H

#include <stdint.h>
#include <bpc/init.h>
#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

extern const bp_node_class bp_unet_class, bp_unet_block_class;

typedef enum bp_unet_norm {
    BP_UNET_INSTANCE = 0, /* InstanceNorm (nnU-Net's choice at batch 2) */
    BP_UNET_BATCH,        /* BatchNorm3d */
    BP_UNET_GROUP         /* GroupNorm(groups) */
} bp_unet_norm;

typedef enum bp_unet_up {
    BP_UNET_TRILINEAR = 0, /* bp_upsample, no weights */
    BP_UNET_TRANSPOSED     /* ConvTranspose3d kernel 2 stride 2, halving the channels */
} bp_unet_up;

typedef struct bp_unet_opts {
    int depth;                /* down-samplings, 1..6; 3 */
    int64_t base_channels;    /* f, >= 1; 16 */
    bp_unet_norm norm;        /* BP_UNET_INSTANCE */
    int64_t groups;           /* GroupNorm: must divide base_channels; 8 */
    bp_unet_up up;            /* BP_UNET_TRILINEAR */
    double negative_slope;    /* LeakyReLU slope, 0 for ReLU; 0.01 */
    const bp_mode *mode;      /* NULL: the global mode (BatchNorm needs batching or training) */
    const char *name;         /* NULL: automatic, "UNet0" ... */
    bp_rng *rng;              /* for the initializers; NULL: seeded with 0 */
} bp_unet_opts;

bp_unet_opts bp_unet_defaults(void);

/* A new U-Net (the caller frees it with bp_node_free). BP_EINVAL: channels or
 * classes < 1, depth outside 1..6, base_channels < 1, groups not dividing it,
 * slope negative or not finite; errors of the layers' constructors. */
bp_status bp_unet_new(bp_node **out, int64_t in_channels, int64_t n_classes, const bp_unet_opts *opts);

/* The number of trainable parameters (elements of the TrainVars). */
int64_t bp_unet_param_count(bp_node *unet);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
