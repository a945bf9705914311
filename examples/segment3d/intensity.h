/* examples/segment3d/intensity.h — how scans are brought to one intensity
 * scale before the net sees them, the same way in training and in predict.
 *
 * A net learns what an intensity means. If each scan were z-scored on its own
 * mean and deviation, one tissue would land on different values in scans of
 * different field of view or content (a slab mostly of brain against one
 * mostly of air), and labels that follow intensity (CT's Hounsfield units,
 * k-means tissue classes) could not be learnt. So the default, "dataset",
 * takes one mean and one deviation per channel over every voxel of the
 * training volumes and saves them in the checkpoint, where predict finds them.
 * "volume" z-scores each volume on its own (for MRI from scanners whose raw
 * scale differs); "none" leaves the values as read. */
#ifndef SEGMENT3D_INTENSITY_H
#define SEGMENT3D_INTENSITY_H

#include <stdint.h>
#include <bpc/bpc.h>
#include "volumes.h"

typedef struct intensity_norm {
    char mode[16];       /* "dataset", "volume" or "none" */
    int64_t channels;
    double *mean, *sd;   /* dataset: per channel (channels each); else NULL */
} intensity_norm;

/* True when name is one of the modes. */
bool intensity_mode_known(const char *name);

/* The normalisation of mode, fitted to the raw volumes of train. */
bp_status intensity_fit(const char *mode, const volume_set *train, intensity_norm *n);

/* Normalises img (X, Y, Z, C) in place; BP_ESHAPE when C is not n's. */
bp_status intensity_apply(const intensity_norm *n, bp_tensor *img);

/* Writes n as "intensity/..." entries of the flat dict d; reads them back
 * (BP_EFORMAT naming file when they are missing or malformed). A checkpoint
 * from before these entries existed reads as "volume", as it was trained. */
bp_status intensity_to_meta(const intensity_norm *n, bp_dict *d);
bp_status intensity_from_meta(const bp_dict *d, const char *file, int64_t channels, intensity_norm *n);

/* One line, "dataset (mean 21.3, sd 38.7)" or "volume". */
void intensity_describe(const intensity_norm *n, char *buf, size_t cap);

void intensity_free(intensity_norm *n);

#endif
