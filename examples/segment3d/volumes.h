/* examples/segment3d/volumes.h — labelled volumes in memory: the built-in
 * synthetic scans, or a Decathlon-layout folder of NIfTI pairs. */
#ifndef SEGMENT3D_VOLUMES_H
#define SEGMENT3D_VOLUMES_H

#include <stdint.h>
#include <bpc/bpc.h>
#include <bpc/nifti.h>

/* The synthetic scans have these classes: background and three structures. */
#define SYNTH_CLASSES 4

typedef struct volume_set {
    int n;
    bp_tensor **img;        /* n images (X, Y, Z, C), as read (intensity.h normalises them) */
    bp_tensor **lab;        /* n label maps (X, Y, Z), int32 in [0, classes) */
    char **names;           /* n names (file names, or "synthetic_<i>") */
    bp_volume_info *info;   /* n geometries (unit spacing for synthetic scans) */
    int64_t channels;
    int classes;
} volume_set;

/* Volumes first .. first + n - 1 of the synthetic scans of side S: spheres
 * (class 1), boxes (2) and ellipsoids (3) at random places, each structure
 * with its own brightness, under a smooth multiplicative inhomogeneity and
 * Gaussian noise; volume i depends on seed and i alone. */
bp_status volumes_synthetic(volume_set *v, uint64_t seed, int first, int n, int S);

/* DIR/imagesTr/NAME.nii[.gz] with DIR/labelsTr/NAME.nii[.gz] (same name; names
 * starting with "." are skipped, as the Decathlon's "._" files), sorted by
 * name. Errors name the file: a missing label file, an unreadable one, a
 * label map of another size than its image, a label that is not a
 * non-negative integer below 256, images of different channel counts. */
bp_status volumes_from_dir(volume_set *v, const char *dir);

/* Moves a seeded choice of round(val_fraction * n) volumes (at least 1, at
 * most n - 1) of all into val and the rest into train; all is emptied. */
bp_status volumes_split(volume_set *all, double val_fraction, uint64_t seed, volume_set *train, volume_set *val);

void volumes_free(volume_set *v);

#endif
