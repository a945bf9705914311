/* core/real_math.h — the real type's math functions and BLAS routines, named
 * once for both flavours (bp_real is float in libbpc, double in libbpc64).
 * Private to the library's sources: not installed. Include it instead of
 * writing expf/exp or cblas_sgemm/cblas_dgemm by hand. */
#ifndef BPC_REAL_MATH_H
#define BPC_REAL_MATH_H

#include <math.h>
#include <bpc/config.h>

#ifdef BP_REAL_DOUBLE
#define R_EXP exp
#define R_LOG log
#define R_TANH tanh
#define R_ERF erf
#define R_POW pow
#define R_SQRT sqrt
#define R_FABS fabs
#define R_GEMM cblas_dgemm
#else
#define R_EXP expf
#define R_LOG logf
#define R_TANH tanhf
#define R_ERF erff
#define R_POW powf
#define R_SQRT sqrtf
#define R_FABS fabsf
#define R_GEMM cblas_sgemm
#endif

#endif
