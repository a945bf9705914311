/* examples/train3d/data.h — a labelled set of volumes in memory. */
#ifndef TRAIN3D_DATA_H
#define TRAIN3D_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <bpc/bpc.h>

typedef struct dataset {
    int64_t n;            /* samples */
    int64_t dims[3];      /* H, W, D */
    int64_t channels;     /* C */
    int classes;
    float *x;             /* n * H*W*D*C floats, channels-last */
    int64_t *labels;      /* n labels in [0, classes) */
    char **names;         /* file names (NULL for synthetic data) */
} dataset;

/* *bytes = n * per_sample floats; false when that does not fit a size_t (or
 * an input is negative). */
bool data_bytes(int64_t n, int64_t per_sample, size_t *bytes);

/* Samples [first, first + n) of the synthetic shapes dataset at S^3, one
 * channel. BP_EINVAL when n * S^3 floats overflow a size_t. */
bp_status data_synthetic(dataset *d, uint64_t seed, int64_t first, int64_t n, int S);

/* A folder of .npy volumes (float32 or uint8, (H,W,D) or (H,W,D,C)) listed in
 * DIR/labels.csv as "file,label" lines (an optional header "file,label").
 * Errors name the file: a missing file, a bad .npy header, a shape that differs
 * from the first volume's, a label that is not a non-negative integer, a
 * voxel that is NaN or infinite (BP_ENUMERIC, naming its index), labels whose
 * range leaves most classes without a sample. */
bp_status data_from_dir(dataset *d, const char *dir);

/* Splits d into train and validation parts (val_fraction of the samples,
 * chosen by a seeded shuffle); d is emptied. */
bp_status data_split(dataset *d, double val_fraction, uint64_t seed, dataset *train, dataset *val);

/* Copies samples idx[0..b) into x (b, H, W, D, C) and their labels into y. */
void data_batch(const dataset *d, const int64_t *idx, int64_t b, float *x, int64_t *y);

void data_free(dataset *d);

#endif
