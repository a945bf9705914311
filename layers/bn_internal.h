/* layers/bn_internal.h — private to layers/: what batchnorm_kernels.c shares
 * with batchnorm_pool_kernels.c (the fused BatchNorm+ReLU+MaxPool): the cut of
 * an (M, C) problem into blocks and chunks, its workspace, the checks and the
 * statistics every training forward makes, and the one expression of bn(x). */
#ifndef BPC_LAYERS_BN_INTERNAL_H
#define BPC_LAYERS_BN_INTERNAL_H

#include <stdint.h>
#include <bpc/config.h>
#include <bpc/error.h>

#define BN_LANES 256     /* accumulator lanes of a reduction (bp_real each) */
#define BN_PAR_MIN 32768 /* below this many elements, stay on the calling thread */

#define BN_NEED(who, ptr)                                                                  \
    do {                                                                                   \
        if (!(ptr)) return bp_fail(BP_EINVAL, "%s: %s is NULL", who, #ptr);               \
    } while (0)

/* How an (M, C) problem is cut, and where its scratch lives. */
typedef struct bn_plan {
    int64_t M, C;
    int64_t u;       /* rows per lane group (1 when C > BN_LANES) */
    int64_t lp;      /* u*C: length of the replicated parameter arrays */
    int64_t tw;      /* channel tile of a reduction: min(C, BN_LANES) */
    int64_t rows;    /* rows per block, a multiple of u */
    int64_t nblocks, nchunks;
    int strips;          /* reductions may use register strips (small inputs) */
    double *acc0, *acc1; /* nchunks*C partials each */
    bp_real *par;        /* 6 replicated parameter arrays of lp each */
} bn_plan;

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* bn(x) as every kernel computes it; the relu backward recomputes the forward's
 * value with this same expression, so its mask matches bit for bit. */
static inline bp_real bn_affine(bp_real x, bp_real m, bp_real a, bp_real b)
{
    return (x - m) * a + b;
}

/* The plan of an (M, C) problem (blocks and chunks fixed by the shape). */
bn_plan bp__bn_plan_shape(int64_t M, int64_t C);
/* M, C and work checked; min_m: the fewest rows allowed (2 when fitting). */
bp_status bp__bn_check_common(const char *who, int64_t M, int64_t C, int64_t min_m, void *work);
/* Binds p to work, or to a fresh allocation left in *owned (free it) when work is NULL. */
bp_status bp__bn_plan_workspace(const char *who, bn_plan *p, void *work, void **owned);
/* A training forward's start: checks, plan, workspace (*owned to free, also
 * after a failure), batch statistics into mean, invstd, var, and the
 * replicated (mean, invstd*scale, bias) arrays at p->par. */
bp_status bp__bn_train_begin(const char *who, bn_plan *p, void **owned, bp_real *mean, bp_real *invstd, bp_real *var,
                             const bp_real *x, const bp_real *scale, const bp_real *bias, int64_t M, int64_t C,
                             double eps, void *work);
/* The replicated (mean, invstd*scale, bias) arrays at p->par[0 .. 3*lp). */
void bp__bn_affine_params(const bn_plan *p, const bp_real *mean, const bp_real *invstd, const bp_real *scale,
                          const bp_real *bias);

#endif
