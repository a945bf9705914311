/* autograd/ops_matmul.c — out = a @ b through OpenBLAS.
 *
 * Shapes: a (..., K) flattened to (M, K), b (K, N), out (..., N) as (M, N).
 *   forward   out = a b          gemm (M,K)x(K,N)
 *   backward  da += dout b^T     gemm (M,N)x(N,K), beta = 1
 *             db += a^T dout     gemm (K,M)x(M,N), beta = 1
 * gemm's beta = 1 accumulates straight into the gradient buffers, so backward
 * needs no scratch. Leading dimensions are clamped to 1 for empty matrices,
 * which BLAS requires even when nothing is read.
 *
 * Threads: bpc parallelises with OpenMP, so each GEMM here splits the rows of
 * its output over the OpenMP threads and runs OpenBLAS single-threaded in
 * each. OpenBLAS's own worker threads would otherwise oversubscribe the cores
 * inside a parallel region, and spin (sched_yield) for a while after every
 * call, taking a core from the next OpenMP region. The setting is left at one
 * thread rather than restored: raising it again wakes the workers, which then
 * spin until their timeout (README, "Threads"). */
#include <cblas.h>
#include <omp.h>
#include "ag_internal.h"

typedef struct mm_ctx {
    int64_t m, k, n;
} mm_ctx;

static int ld(int64_t x) { return x > 1 ? (int)x : 1; }

/* C (M,N) = alpha op(A) op(B) + beta C, row-major, rows of C split evenly over
 * the OpenMP threads when the product is big enough to pay for the split. */
static void gemm_rows(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const bp_real *A, int lda,
                      const bp_real *B, int ldb, bp_real beta, bp_real *C, int ldc)
{
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
    int nt = omp_get_max_threads();
    if ((double)M * N * K < 1 << 20 || M < 2 * nt) nt = 1;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        int m0 = (int)((int64_t)M * t / nt), m1 = (int)((int64_t)M * (t + 1) / nt);
        const bp_real *At = A + (ta == CblasNoTrans ? (int64_t)m0 * lda : m0);
        R_GEMM(CblasRowMajor, ta, tb, m1 - m0, N, K, 1, At, lda, B, ldb, beta, C + (int64_t)m0 * ldc, ldc);
    }
}

static bp_status matmul_backward(const bp_ag_backward_args *g)
{
    const mm_ctx *c = g->ctx;
    const bp_real *a = g->in[0]->data, *b = g->in[1]->data, *dy = g->dout->data;
    if (c->m == 0 || c->n == 0 || c->k == 0) return BP_OK;
    if (g->din[0])
        gemm_rows(CblasNoTrans, CblasTrans, (int)c->m, (int)c->k, (int)c->n, dy, ld(c->n), b, ld(c->n), 1,
                  g->din[0]->data, ld(c->k));
    if (g->din[1])
        gemm_rows(CblasTrans, CblasNoTrans, (int)c->k, (int)c->n, (int)c->m, a, ld(c->k), dy, ld(c->n), 1,
                  g->din[1]->data, ld(c->n));
    return BP_OK;
}
static const bp_ag_op matmul_op = {.name = "matmul", .backward = matmul_backward};

bp_status bp_matmul(bp_tensor **out, bp_tensor *a, bp_tensor *b)
{
    BP_TRY(bp__check_out("matmul", out));
    BP_TRY(bp__check_real("matmul", "a", a));
    BP_TRY(bp__check_real("matmul", "b", b));
    if (a->ndim < 1 || b->ndim != 2 || a->shape[a->ndim - 1] != b->shape[0])
        return bp__shape_error("matmul", "expected a (..., K) and b (K, N), got", a, b);
    mm_ctx c;
    c.k = b->shape[0];
    c.n = b->shape[1];
    c.m = c.k ? a->numel / c.k : 1;
    for (int i = 0; i + 1 < a->ndim && c.k == 0; i++) c.m *= a->shape[i];
    if (c.m > INT32_MAX || c.n > INT32_MAX || c.k > INT32_MAX)
        return bp__shape_error("matmul", "dimensions exceed the BLAS int range:", a, b);
    int64_t shape[BP_MAX_DIMS];
    for (int i = 0; i + 1 < a->ndim; i++) shape[i] = a->shape[i];
    shape[a->ndim - 1] = c.n;
    BP_TRY(bp_ag_empty(out, a->ndim, shape));
    if (c.k == 0)
        bp_tensor_zero(*out);
    else if (c.m > 0 && c.n > 0)
        gemm_rows(CblasNoTrans, CblasNoTrans, (int)c.m, (int)c.n, (int)c.k, a->data, ld(c.k), b->data, ld(c.n), 0,
                  (*out)->data, ld(c.n));
    return bp__done(out, bp_ag_record(*out, &matmul_op, 2, (bp_tensor *[]){a, b}, &c, sizeof c));
}
