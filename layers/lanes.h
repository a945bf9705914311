/* layers/lanes.h — private to layers/: 64-byte vectors over channels for the
 * max-pooling kernels (pool.c, and the fused BatchNorm+ReLU+MaxPool in
 * batchnorm_kernels.c), written with GCC vector extensions so that one
 * source serves AVX-512, AVX2 and generic builds. */
#ifndef BPC_LAYERS_LANES_H
#define BPC_LAYERS_LANES_H

#include <stdint.h>
#include <string.h>
#include <bpc/config.h>

/* Vectors of 64 bytes over channels, and a flat-position vector of as many
 * lanes with the element width of the comparison masks. */
#if defined(BP_REAL_DOUBLE)
typedef int64_t pidx;
#else
typedef int32_t pidx;
#endif
#define PVL ((int)(64 / sizeof(bp_real)))
typedef bp_real pvr __attribute__((vector_size(64)));
typedef bp_real pvru __attribute__((vector_size(64), aligned(sizeof(bp_real)), may_alias));
typedef pidx pvi __attribute__((vector_size(64)));

/* arg <-> position vectors: one plain copy when the lanes are int32 (float).
 * Vectors go by pointer: by value, 64-byte vectors change the calling
 * convention between builds with and without AVX-512 (GCC's -Wpsabi). */
static inline __attribute__((always_inline)) void load_idx(pvi *v, const int32_t *a)
{
    if (sizeof(pidx) == sizeof(int32_t))
        memcpy(v, a, sizeof *v);
    else
        for (int j = 0; j < PVL; j++) (*v)[j] = a[j];
}

static inline __attribute__((always_inline)) void store_idx(int32_t *a, const pvi *v)
{
    if (sizeof(pidx) == sizeof(int32_t))
        memcpy(a, v, sizeof *v);
    else
        for (int j = 0; j < PVL; j++) a[j] = (int32_t)(*v)[j];
}

/* One step of a max over positions, PVL channels: m, a take xv, pos where xv
 * is larger or NaN, and a NaN, once in, stays (XLA's max propagates NaN). */
static inline __attribute__((always_inline)) void max_take(pvr *m, pvi *a, const pvr *xv, pidx pos)
{
    pvi take = (*m == *m) & ~(*xv <= *m);
    *m = (pvr)(((pvi)*xv & take) | ((pvi)*m & ~take));
    *a = (pos & take) | (*a & ~take);
}

#endif
