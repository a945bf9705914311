/* examples/segment3d/pictures.h — PNG pictures of a run, written with libpng
 * (when the build found it; pictures_available says whether it did). */
#ifndef SEGMENT3D_PICTURES_H
#define SEGMENT3D_PICTURES_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/bpc.h>

/* True when this build writes PNG files. */
bool pictures_available(void);

/* Three panels side by side of the axial slice z = Z/2 of img (X, Y, Z, C)
 * (channel 0, normalised: -2.5 .. 2.5 sd is black .. white): the image, the
 * image with the labels lab (int32 (X, Y, Z)) overlaid in colour, and with the
 * predicted labels pred (X*Y*Z). Class 1 red, 2 green, 3 blue, 4 yellow, ...
 * Each voxel is drawn as a square of pixels, so a panel is at least 128 wide. */
bp_status picture_slice(const char *path, const bp_tensor *img, const bp_tensor *lab, const uint8_t *pred);

/* A training-curve chart of n epochs: the mean validation Dice in blue on a
 * scale of 0 .. 1 (grey lines at 0.25, 0.5, 0.75, 1; a green one at 0.9) and
 * the training loss in red, scaled to its largest value. */
bp_status picture_curves(const char *path, int n, const double *loss, const double *dice);

#endif
