/* autograd/ag_internal.h — helpers shared by autograd's source files; not installed. */
#ifndef BPC_AG_INTERNAL_H
#define BPC_AG_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>

#include "real_math.h"

/* Elementwise loops split across OpenMP threads from this many elements on;
 * below it a thread team costs more than the loop. */
#define BP__PAR_MIN 32768

/* Runs BODY (which sees i) for i in [0, n), split across threads for large n. */
#define BP__EACH(n, BODY)                                                           \
    do {                                                                        \
        const int64_t n_ = (n);                                                 \
        if (n_ >= BP__PAR_MIN) {                                                \
            _Pragma("omp parallel for schedule(static)")                         \
            for (int64_t i = 0; i < n_; i++) { BODY }                           \
        } else {                                                                \
            for (int64_t i = 0; i < n_; i++) { BODY }                           \
        }                                                                       \
    } while (0)

/* Starts a unary op: checks out and a, and takes *out of a's shape from the pool. */
bp_status bp__unary_out(const char *who, bp_tensor **out, bp_tensor *a);

/* For a row x[0..c) (c >= 1): sets *max to its maximum and returns
 * log sum_j exp(x_j - max), in double. Softmax, log_softmax and
 * cross-entropy all start from it. */
static inline double bp__row_lse(const bp_real *x, int64_t c, bp_real *max)
{
    bp_real m = x[0];
    for (int64_t j = 1; j < c; j++) m = x[j] > m ? x[j] : m;
    double s = 0;
    for (int64_t j = 0; j < c; j++) s += R_EXP(x[j] - m);
    *max = m;
    return log(s);
}

/* Fails with BP_EINVAL / BP_EDTYPE unless t is a non-NULL tensor of the real
 * dtype; `who` and `arg` name the op and argument in the message. */
bp_status bp__check_real(const char *who, const char *arg, const bp_tensor *t);

/* Fails with BP_ESHAPE naming both shapes: "<who>: <what> (2,3) and (4,)". */
bp_status bp__shape_error(const char *who, const char *what, const bp_tensor *a,
                          const bp_tensor *b);

/* Starts an op: checks `out` non-NULL and sets *out to NULL. */
bp_status bp__check_out(const char *who, bp_tensor **out);

/* Ends an op: on failure frees *out and sets it NULL; returns st. */
bp_status bp__done(bp_tensor **out, bp_status st);

/* Drops a reference the graph held on t; if that frees a pooled buffer, the
 * buffer goes straight back to its free stack (buffer_pool.c). */
void bp__pool_drop(bp_tensor *t);

/* Makes sure this thread's graph and pool are freed when it exits (graph.c). */
void bp__ag_thread_register(void);
/* Frees this thread's pool at thread exit; buffers still in use become
 * ordinary tensors (buffer_pool.c). */
void bp__pool_thread_exit(void);

#endif
