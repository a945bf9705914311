/* bpc/augment.h — training patches from labelled volumes: sampling with
 * foreground oversampling, and augmentation applied to image and label
 * together. All randomness comes from the bp_rng passed in, so the same seed
 * gives the same patches (and a checkpointed generator resumes them).
 *
 * Layouts: an image is a float tensor (X, Y, Z, C) (bp_nifti_read's), a label
 * map (X, Y, Z) or (X, Y, Z, 1) of non-negative integer values, as floats (as
 * read from a NIfTI file) or int32. Patches come out as an image (x, y, z, C)
 * and an int32 label map (x, y, z), ready for a batch axis and the losses. */
#ifndef BPC_AUGMENT_H
#define BPC_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/random.h>
#include <bpc/tensor.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* Cuts one patch of size roi from img and lab. With probability fg_prob its
 * centre is a voxel chosen uniformly among those whose label is > 0 (as
 * nnU-Net oversamples foreground in a third of its patches, fg_prob 0.33);
 * otherwise, or when there is no foreground, uniformly among all positions.
 * Parts of the patch outside the volume are 0 (image) and 0 (label). The
 * caller frees *img_patch and *lab_patch. */
bp_status bp_sample_patch(const bp_tensor *img, const bp_tensor *lab, const int64_t roi[3], double fg_prob,
                          bp_rng *rng, bp_tensor **img_patch, bp_tensor **lab_patch);

typedef struct bp_augment_opts {
    double flip_prob[3];    /* probability of mirroring each axis; 0.5 each */
    double rot90_prob;      /* probability of a random 90/180/270-degree turn in the x-y plane
                             * (square x-y patches only; others are left unturned); 0.5 */
    double scale;           /* intensity x (1 + u), u uniform in [-scale, scale]; 0.1 */
    double shift;           /* intensity + u, u uniform in [-shift, shift] (in image units); 0.1 */
    double noise_std;       /* Gaussian noise of this std added to every voxel; 0 */
} bp_augment_opts;

/* The defaults above. */
bp_augment_opts bp_augment_defaults(void);

/* Augments a patch in place: the same flips and turn on img (x, y, z, C) and
 * lab (x, y, z) (int32 or float, or NULL for an image alone); intensity scale,
 * shift and noise on img only. Draws from rng in a fixed order, every draw
 * made whether or not it applies, so the stream does not depend on the data. */
bp_status bp_augment(bp_tensor *img, bp_tensor *lab, const bp_augment_opts *opts, bp_rng *rng);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
