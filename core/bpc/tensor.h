/* bpc/tensor.h — dense, contiguous, 64-byte aligned tensors of up to 8 dims.
 *
 * Layout is row-major (the last dimension is contiguous); bpc's image data is
 * channels-last (B,H,W,D,C). A tensor owns its data unless it is a view
 * (bp_tensor_reshape), which keeps its base alive through a reference.
 *
 * Ownership: every constructor returns a tensor with one reference held by the
 * caller; bp_tensor_free drops it (and frees on the last). Functions that take
 * a `const bp_tensor *` never keep it. */
#ifndef BPC_TENSOR_H
#define BPC_TENSOR_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <bpc/config.h>
#include <bpc/error.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_dtype {
    BP_FLOAT32 = 0,
    BP_FLOAT64 = 1,
    BP_INT32 = 2,
    BP_INT64 = 3,
    BP_UINT8 = 4
} bp_dtype;

#ifdef BP_REAL_DOUBLE
#define BP_REAL_DTYPE BP_FLOAT64
#else
#define BP_REAL_DTYPE BP_FLOAT32
#endif

typedef struct bp_tensor bp_tensor;

/* The tensor. Fields are readable; change them only through the functions
 * below. `grad_node` belongs to autograd (NULL outside a recorded graph). */
struct bp_tensor {
    int ndim;                     /* 0 (a scalar) to BP_MAX_DIMS */
    int64_t shape[BP_MAX_DIMS];   /* unused entries are 1 */
    int64_t numel;                /* product of shape (1 for a scalar) */
    bp_dtype dtype;
    void *data;                   /* BP_ALIGN-aligned, numel elements */
    int refcount;
    bp_tensor *base;              /* for views: the tensor owning the data */
    void *grad_node;              /* autograd's record of the op that made it */
    bool requires_grad;           /* autograd: gradients flow to this tensor */
    bp_tensor *grad;              /* leaves with requires_grad: where backward accumulates
                                   * (borrowed; a TrainVar points it at its own grad) */
};

/* Bytes per element of a dtype (0 for an unknown value). */
size_t bp_dtype_size(bp_dtype dt);
/* Lower-case name: "float32", "float64", "int32", "int64", "uint8"; "?" otherwise. */
const char *bp_dtype_name(bp_dtype dt);

/* A new zero-filled tensor. ndim in [0, 8], every dim >= 0. */
bp_status bp_tensor_new(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape);
/* A new tensor holding a copy of `data` (numel elements of dtype dt). */
bp_status bp_tensor_from_data(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape,
                              const void *data);
/* A new tensor of this flavour's real type, copied from `data`. */
bp_status bp_tensor_from_reals(bp_tensor **out, int ndim, const int64_t *shape, const bp_real *data);
/* A new tensor with every element equal to `value` (converted to dt). */
bp_status bp_tensor_full(bp_tensor **out, bp_dtype dt, int ndim, const int64_t *shape, double value);
/* A deep copy (never a view). */
bp_status bp_tensor_clone(bp_tensor **out, const bp_tensor *src);
/* A view of `src` with a new shape of the same numel; it shares src's data. */
bp_status bp_tensor_reshape(bp_tensor **out, bp_tensor *src, int ndim, const int64_t *shape);

/* Adds a reference; returns t. */
bp_tensor *bp_tensor_retain(bp_tensor *t);
/* Drops a reference; frees the tensor on the last one. NULL is ignored. */
void bp_tensor_free(bp_tensor *t);

/* Copies src's elements into dst; shapes and dtypes must match exactly. */
bp_status bp_tensor_copy(bp_tensor *dst, const bp_tensor *src);
/* Sets every element to zero. */
void bp_tensor_zero(bp_tensor *t);
/* Sets every element to value (converted to t's dtype). */
void bp_tensor_fill(bp_tensor *t, double value);

/* Shape queries. bp_tensor_dim accepts negative axes (-1 is the last);
 * it returns -1 for an axis out of range. */
int bp_tensor_ndim(const bp_tensor *t);
int64_t bp_tensor_dim(const bp_tensor *t, int axis);
int64_t bp_tensor_numel(const bp_tensor *t);
size_t bp_tensor_nbytes(const bp_tensor *t);
bool bp_tensor_same_shape(const bp_tensor *a, const bp_tensor *b);
/* True if t's shape equals (ndim, shape). */
bool bp_tensor_has_shape(const bp_tensor *t, int ndim, const int64_t *shape);

/* Typed data access; NULL when the dtype differs. */
bp_real *bp_tensor_reals(bp_tensor *t);
const bp_real *bp_tensor_creals(const bp_tensor *t);

/* Element i (flat index) converted to double; 0 for an index out of range. */
double bp_tensor_get(const bp_tensor *t, int64_t i);
/* Sets element i (flat index) from a double; ignored out of range. Integer
 * dtypes truncate toward zero and saturate at their limits; NaN stores 0. */
void bp_tensor_set(bp_tensor *t, int64_t i, double v);

/* Writes "(2,3,4)" into buf (always NUL-terminated); returns buf. For messages. */
const char *bp_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

/* Aligned allocation used for all tensor data (and for kernels' scratch).
 * Zero bytes gives a valid non-NULL pointer. Free with bp_free_aligned. */
void *bp_alloc_aligned(size_t bytes);
void bp_free_aligned(void *p);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
