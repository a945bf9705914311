/* examples/segment3d/model.h — the U-Net segment3d trains, described by a few
 * numbers saved in every checkpoint (so predict can rebuild it), and whole
 * volumes labelled with it by sliding windows. */
#ifndef SEGMENT3D_MODEL_H
#define SEGMENT3D_MODEL_H

#include <stdint.h>
#include <bpc/bpc.h>

typedef struct net_arch {
    int64_t channels, classes, base, depth, patch;
    char norm[16];           /* "instance", "batch" or "group" */
} net_arch;

/* A new U-Net of arch named "unet" (its keys read "unet_enc1_conv2.w", ...),
 * initialised from seed. */
bp_status net_new(bp_node **out, const net_arch *a, uint64_t seed);

/* One line, "U-Net depth 3, base 8, instance norm, 1 -> 4 classes, 123456 parameters". */
void net_describe(bp_node *net, const net_arch *a, char *buf, size_t cap);

/* Writes arch as "arch/<field>" entries of the flat dict d. */
bp_status arch_to_meta(const net_arch *a, bp_dict *d);
/* Reads arch back from the entries of d (the metadata of a checkpoint);
 * BP_EFORMAT naming file when one is missing or out of range. */
bp_status arch_from_meta(const bp_dict *d, const char *file, net_arch *a);

/* Runs net over img (X, Y, Z, C) in windows of arch's patch with the given
 * overlap; *logits is a new (X, Y, Z, K) tensor. */
bp_status net_sliding_window(bp_node *net, const net_arch *a, const bp_tensor *img, double overlap, bp_tensor **logits);

/* The argmax class of every voxel of logits (X, Y, Z, K) into labels (X*Y*Z). */
void logits_argmax(const bp_tensor *logits, uint8_t *labels);

#endif
