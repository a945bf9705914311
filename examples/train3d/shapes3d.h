/* examples/shapes3d.h — the built-in synthetic volumetric dataset of train3d.
 *
 * Eight shape classes drawn into an S^3 volume (S = 32 by default) with a
 * random centre, size, orientation and noise level. Sample i of a dataset
 * with seed s depends only on (s, i), so any subset is reproducible and
 * generation can run in parallel. */
#ifndef SHAPES3D_H
#define SHAPES3D_H

#include <stdint.h>

#define SHAPES3D_CLASSES 8

/* Class names, indexed by label. */
extern const char *const shapes3d_names[SHAPES3D_CLASSES];

/* Fills vol (S*S*S floats, (H,W,D) order) with sample `index` of the dataset
 * `seed` and returns its label in [0, SHAPES3D_CLASSES). */
int shapes3d_sample(uint64_t seed, int64_t index, int S, float *vol);

#endif
