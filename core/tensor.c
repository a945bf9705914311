/* core/tensor.c — contiguous aligned tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/tensor.h>

size_t bp_dtype_size(bp_dtype dt)
{
    switch (dt) {
    case BP_FLOAT32: return 4;
    case BP_FLOAT64: return 8;
    case BP_INT32: return 4;
    case BP_INT64: return 8;
    case BP_UINT8: return 1;
    }
    return 0;
}

const char *bp_dtype_name(bp_dtype dt)
{
    switch (dt) {
    case BP_FLOAT32: return "float32";
    case BP_FLOAT64: return "float64";
    case BP_INT32: return "int32";
    case BP_INT64: return "int64";
    case BP_UINT8: return "uint8";
    }
    return "?";
}

void *bp_alloc_aligned(size_t bytes)
{
    /* Round up so aligned_alloc's size-multiple rule holds; never 0 bytes. */
    size_t n = (bytes + BP_ALIGN - 1) / BP_ALIGN * BP_ALIGN;
    if (n == 0) n = BP_ALIGN;
    if (n < bytes) return NULL; /* overflow */
    return aligned_alloc(BP_ALIGN, n);
}

void bp_free_aligned(void *p) { free(p); }

const char *bp_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t len = 0;
    if (cap == 0) return buf;
    buf[0] = '\0';
    len += (size_t)snprintf(buf + len, cap - len, "(");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, ndim == 1 ? ",)" : ")");
    return buf;
}

/* Validates a shape and computes its element count. */
static bp_status check_shape(int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > BP_MAX_DIMS)
        return bp_fail(BP_ESHAPE, "tensor: ndim must be in [0, %d], got %d", BP_MAX_DIMS, ndim);
    if (ndim > 0 && !shape) return bp_fail(BP_EINVAL, "tensor: shape is NULL with ndim %d", ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return bp_fail(BP_ESHAPE, "tensor: shape[%d] must be >= 0, got %lld", i,
                           (long long)shape[i]);
        if (shape[i] > 0 && n > INT64_MAX / 8 / shape[i])
            return bp_fail(BP_ESHAPE, "tensor: shape too large at dim %d (%lld)", i,
                           (long long)shape[i]);
        n *= shape[i];
    }
    *numel = n;
    return BP_OK;
}

/* Allocates the header only; data is set by the caller. */
static bp_status tensor_header(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape)
{
    if (!out) return bp_fail(BP_EINVAL, "tensor: out is NULL");
    *out = NULL;
    if (bp_dtype_size(dt) == 0) return bp_fail(BP_EDTYPE, "tensor: unknown dtype %d", (int)dt);
    int64_t numel = 0;
    BP_TRY(check_shape(ndim, shape, &numel));
    bp_tensor *t = calloc(1, sizeof *t);
    if (!t) return bp_fail(BP_ENOMEM, "tensor: out of memory");
    t->ndim = ndim;
    for (int i = 0; i < BP_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = numel;
    t->dtype = dt;
    t->refcount = 1;
    *out = t;
    return BP_OK;
}

bp_status bp_tensor_new(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape)
{
    BP_TRY(tensor_header(out, dt, ndim, shape));
    bp_tensor *t = *out;
    size_t bytes = (size_t)t->numel * bp_dtype_size(dt);
    t->data = bp_alloc_aligned(bytes);
    if (!t->data) {
        free(t);
        *out = NULL;
        return bp_fail(BP_ENOMEM, "tensor: cannot allocate %zu bytes", bytes);
    }
    memset(t->data, 0, bytes);
    return BP_OK;
}

bp_status bp_tensor_from_data(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape,
                              const void *data)
{
    BP_TRY(bp_tensor_new(out, dt, ndim, shape));
    if ((*out)->numel > 0) {
        if (!data) {
            bp_tensor_free(*out);
            *out = NULL;
            return bp_fail(BP_EINVAL, "tensor: data is NULL");
        }
        memcpy((*out)->data, data, bp_tensor_nbytes(*out));
    }
    return BP_OK;
}

bp_status bp_tensor_from_reals(bp_tensor **out, int ndim, const int64_t *shape, const bp_real *data)
{
    return bp_tensor_from_data(out, BP_REAL_DTYPE, ndim, shape, data);
}

bp_status bp_tensor_full(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape, double value)
{
    BP_TRY(bp_tensor_new(out, dt, ndim, shape));
    bp_tensor_fill(*out, value);
    return BP_OK;
}

bp_status bp_tensor_clone(bp_tensor **out, const bp_tensor *src)
{
    if (!src) return bp_fail(BP_EINVAL, "tensor_clone: src is NULL");
    return bp_tensor_from_data(out, src->dtype, src->ndim, src->shape, src->data);
}

bp_status bp_tensor_reshape(bp_tensor **out, bp_tensor *src, int ndim, const int64_t *shape)
{
    if (!src) return bp_fail(BP_EINVAL, "tensor_reshape: src is NULL");
    BP_TRY(tensor_header(out, src->dtype, ndim, shape));
    if ((*out)->numel != src->numel) {
        char a[96], b[96];
        bp_shape_str(a, sizeof a, src->ndim, src->shape);
        bp_shape_str(b, sizeof b, ndim, shape);
        free(*out);
        *out = NULL;
        return bp_fail(BP_ESHAPE, "tensor_reshape: cannot view %s (%lld elements) as %s", a,
                       (long long)src->numel, b);
    }
    bp_tensor *base = src->base ? src->base : src;
    (*out)->base = bp_tensor_retain(base);
    (*out)->data = src->data;
    return BP_OK;
}

bp_tensor *bp_tensor_retain(bp_tensor *t)
{
    if (t) t->refcount++;
    return t;
}

void bp_tensor_free(bp_tensor *t)
{
    if (!t || --t->refcount > 0) return;
    if (t->base)
        bp_tensor_free(t->base);
    else
        bp_free_aligned(t->data);
    free(t);
}

bp_status bp_tensor_copy(bp_tensor *dst, const bp_tensor *src)
{
    if (!dst || !src) return bp_fail(BP_EINVAL, "tensor_copy: NULL tensor");
    if (!bp_tensor_same_shape(dst, src)) {
        char a[96], b[96];
        bp_shape_str(a, sizeof a, dst->ndim, dst->shape);
        bp_shape_str(b, sizeof b, src->ndim, src->shape);
        return bp_fail(BP_ESHAPE, "tensor_copy: destination shape %s, source shape %s", a, b);
    }
    if (dst->dtype != src->dtype)
        return bp_fail(BP_EDTYPE, "tensor_copy: destination dtype %s, source dtype %s",
                       bp_dtype_name(dst->dtype), bp_dtype_name(src->dtype));
    if (dst->data != src->data) memcpy(dst->data, src->data, bp_tensor_nbytes(src));
    return BP_OK;
}

void bp_tensor_zero(bp_tensor *t)
{
    if (t && t->numel) memset(t->data, 0, bp_tensor_nbytes(t));
}

void bp_tensor_fill(bp_tensor *t, double value)
{
    if (!t) return;
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, value);
}

int bp_tensor_ndim(const bp_tensor *t) { return t ? t->ndim : 0; }

int64_t bp_tensor_dim(const bp_tensor *t, int axis)
{
    if (!t) return -1;
    if (axis < 0) axis += t->ndim;
    if (axis < 0 || axis >= t->ndim) return -1;
    return t->shape[axis];
}

int64_t bp_tensor_numel(const bp_tensor *t) { return t ? t->numel : 0; }

size_t bp_tensor_nbytes(const bp_tensor *t)
{
    return t ? (size_t)t->numel * bp_dtype_size(t->dtype) : 0;
}

bool bp_tensor_has_shape(const bp_tensor *t, int ndim, const int64_t *shape)
{
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

bool bp_tensor_same_shape(const bp_tensor *a, const bp_tensor *b)
{
    return a && b && bp_tensor_has_shape(a, b->ndim, b->shape);
}

bp_real *bp_tensor_reals(bp_tensor *t)
{
    return t && t->dtype == BP_REAL_DTYPE ? (bp_real *)t->data : NULL;
}

const bp_real *bp_tensor_creals(const bp_tensor *t)
{
    return t && t->dtype == BP_REAL_DTYPE ? (const bp_real *)t->data : NULL;
}

double bp_tensor_get(const bp_tensor *t, int64_t i)
{
    if (!t || i < 0 || i >= t->numel) return 0.0;
    switch (t->dtype) {
    case BP_FLOAT32: return ((const float *)t->data)[i];
    case BP_FLOAT64: return ((const double *)t->data)[i];
    case BP_INT32: return ((const int32_t *)t->data)[i];
    case BP_INT64: return (double)((const int64_t *)t->data)[i];
    case BP_UINT8: return ((const uint8_t *)t->data)[i];
    }
    return 0.0;
}

/* v truncated toward zero and clamped to [lo, hi]; NaN gives 0. C leaves a
 * float-to-integer cast of an out-of-range value undefined, so integer
 * stores saturate instead (hi2 is the first double past the range). */
static double int_range(double v, double lo, double hi2)
{
    if (isnan(v)) return 0.0;
    if (v <= lo) return lo;
    if (v >= hi2) return hi2; /* callers map this to the type's maximum */
    return v;
}

void bp_tensor_set(bp_tensor *t, int64_t i, double v)
{
    if (!t || i < 0 || i >= t->numel) return;
    switch (t->dtype) {
    case BP_FLOAT32: ((float *)t->data)[i] = (float)v; break;
    case BP_FLOAT64: ((double *)t->data)[i] = v; break;
    case BP_INT32: {
        double c = int_range(v, -2147483648.0, 2147483648.0);
        ((int32_t *)t->data)[i] = c >= 2147483648.0 ? INT32_MAX : (int32_t)c;
        break;
    }
    case BP_INT64: {
        double c = int_range(v, -9223372036854775808.0, 9223372036854775808.0);
        ((int64_t *)t->data)[i] = c >= 9223372036854775808.0 ? INT64_MAX : (int64_t)c;
        break;
    }
    case BP_UINT8: {
        double c = int_range(v, 0.0, 256.0);
        ((uint8_t *)t->data)[i] = c >= 256.0 ? UINT8_MAX : (uint8_t)c;
        break;
    }
    }
}
