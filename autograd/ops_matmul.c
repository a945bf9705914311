/* autograd/ops_matmul.c — out = a @ b through OpenBLAS.
 *
 * Shapes: a (..., K) flattened to (M, K), b (K, N), out (..., N) as (M, N).
 *   forward   out = a b          gemm (M,K)x(K,N)
 *   backward  da += dout b^T     gemm (M,N)x(N,K), beta = 1
 *             db += a^T dout     gemm (K,M)x(M,N), beta = 1
 * gemm's beta = 1 accumulates straight into the gradient buffers, so backward
 * needs no scratch. Leading dimensions are clamped to 1 for empty matrices,
 * which BLAS requires even when nothing is read. */
#include <cblas.h>
#include "ag_internal.h"

typedef struct mm_ctx {
    int64_t m, k, n;
} mm_ctx;

static int ld(int64_t x) { return x > 1 ? (int)x : 1; }

static bp_status matmul_backward(const bp_ag_backward_args *g)
{
    const mm_ctx *c = g->ctx;
    const bp_real *a = g->in[0]->data, *b = g->in[1]->data, *dy = g->dout->data;
    if (c->m == 0 || c->n == 0 || c->k == 0) return BP_OK;
    if (g->din[0])
        R_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->m, (int)c->k, (int)c->n, 1, dy, ld(c->n),
               b, ld(c->n), 1, g->din[0]->data, ld(c->k));
    if (g->din[1])
        R_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c->k, (int)c->n, (int)c->m, 1, a, ld(c->k),
               dy, ld(c->n), 1, g->din[1]->data, ld(c->n));
    return BP_OK;
}
static const bp_ag_op matmul_op = {"matmul", matmul_backward, NULL};

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
        R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c.m, (int)c.n, (int)c.k, 1, a->data, ld(c.k),
               b->data, ld(c.n), 0, (*out)->data, ld(c.n));
    return bp__done(out, bp_ag_record(*out, &matmul_op, 2, (bp_tensor *[]){a, b}, &c, sizeof c));
}
