/* autograd/ops_shape.c — reshape and flatten, as views.
 *
 * The output shares the input's data (bp_tensor_reshape), so the forward
 * moves no data. Backward: da += dout, element by element (same numel, same
 * memory order). */
#include "ag_internal.h"

static bp_status view_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data;
    bp_real *da = g->din[0]->data;
    for (int64_t i = 0; i < g->dout->numel; i++) da[i] += dy[i];
    return BP_OK;
}
static const bp_ag_op reshape_op = {.name = "reshape", .backward = view_backward};

/* Makes the view and records it; shape is final (no -1). */
static bp_status view(const char *who, bp_tensor **out, bp_tensor *a, int ndim, const int64_t *shape)
{
    bp_status st = bp_tensor_reshape(out, a, ndim, shape);
    if (st) {
        char sa[96], sb[96];
        return bp_fail(st, "%s: cannot view %s as %s", who, bp_shape_str(sa, sizeof sa, a->ndim, a->shape),
                       bp_shape_str(sb, sizeof sb, ndim, shape));
    }
    return bp__done(out, bp_ag_record(*out, &reshape_op, 1, &a, NULL, 0));
}

bp_status bp_reshape(bp_tensor **out, bp_tensor *a, int ndim, const int64_t *shape)
{
    BP_TRY(bp__check_out("reshape", out));
    BP_TRY(bp__check_real("reshape", "a", a));
    char sa[96];
    if (ndim < 0 || ndim > BP_MAX_DIMS || (ndim > 0 && !shape))
        return bp_fail(BP_EINVAL, "reshape: ndim must be in [0, %d] with a shape, got %d for input %s", BP_MAX_DIMS,
                       ndim, bp_shape_str(sa, sizeof sa, a->ndim, a->shape));
    int64_t s[BP_MAX_DIMS];
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) {
            infer = i;
        } else if (s[i] < 0) {
            return bp_fail(BP_ESHAPE, "reshape: invalid size %lld at dim %d (one -1 at most) for input %s",
                           (long long)s[i], i, bp_shape_str(sa, sizeof sa, a->ndim, a->shape));
        } else {
            known *= s[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || a->numel % known != 0) {
            char sb[96];
            return bp_fail(BP_ESHAPE, "reshape: cannot view %s as %s", bp_shape_str(sa, sizeof sa, a->ndim, a->shape),
                           bp_shape_str(sb, sizeof sb, ndim, shape));
        }
        s[infer] = a->numel / known;
    }
    return view("reshape", out, a, ndim, s);
}

bp_status bp_flatten(bp_tensor **out, bp_tensor *a, int start_dim, int end_dim)
{
    BP_TRY(bp__check_out("flatten", out));
    BP_TRY(bp__check_real("flatten", "a", a));
    /* A 0-d tensor flattens to (1,), as torch.flatten. */
    int nd = a->ndim ? a->ndim : 1;
    int st = start_dim < 0 ? start_dim + nd : start_dim;
    int en = end_dim < 0 ? end_dim + nd : end_dim;
    char sa[96];
    if (st < 0 || st >= nd || en < 0 || en >= nd || st > en)
        return bp_fail(BP_EINVAL, "flatten: start_dim %d and end_dim %d do not fit shape %s (need start <= end)",
                       start_dim, end_dim, bp_shape_str(sa, sizeof sa, a->ndim, a->shape));
    int64_t s[BP_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < st; i++) s[k++] = a->shape[i];
    int64_t merged = 1;
    for (int i = st; i <= en; i++) merged *= a->ndim ? a->shape[i] : 1;
    s[k++] = merged;
    for (int i = en + 1; i < a->ndim; i++) s[k++] = a->shape[i];
    return view("flatten", out, a, k, s);
}
