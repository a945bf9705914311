/* bpc/init.h — parameter initializers, as BrainPy's brainpy.initialize.
 *
 * An initializer is a small value (no allocation) that fills a tensor given
 * its shape. Fan-in / fan-out follow BrainPy's _compute_fans: for a shape
 * (..., in, out) the receptive field is the product of the leading dims,
 * fan_in = in * rf, fan_out = out * rf (a 1-D shape (n,) has fan_in = fan_out = n).
 *
 *   ZeroInit                  0
 *   OneInit(value)            value
 *   Normal(mean, scale)       mean + scale * N(0,1)
 *   Uniform(min, max)         U[min, max)
 *   KaimingUniform(scale=2)   U(-l, l), l = sqrt(3 * scale / fan_in)
 *   KaimingNormal(scale=2)    truncated N in [-2,2] * sqrt(scale / fan_in) / 0.8796
 *   XavierUniform(scale=1)    U(-l, l), l = sqrt(3 * scale / ((fan_in + fan_out) / 2))
 *   XavierNormal(scale=1)     truncated N in [-2,2] * sqrt(scale / fan_avg) / 0.8796
 *
 * (0.87962566103423978 is the std of a unit normal truncated to [-2, 2], so the
 * truncated samples have the intended variance, as in JAX's variance_scaling.)
 * Also: an array initializer (copies a tensor of shape (n,), () or (1,),
 * broadcasting the last two) and a user callback. */
#ifndef BPC_INIT_H
#define BPC_INIT_H

#include <bpc/tensor.h>
#include <bpc/random.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_init_kind {
    BP_INIT_ZERO = 0,
    BP_INIT_ONE,
    BP_INIT_NORMAL,
    BP_INIT_UNIFORM,
    BP_INIT_KAIMING_NORMAL,
    BP_INIT_KAIMING_UNIFORM,
    BP_INIT_XAVIER_NORMAL,
    BP_INIT_XAVIER_UNIFORM,
    BP_INIT_ARRAY,
    BP_INIT_CALLBACK
} bp_init_kind;

/* A user initializer: fills `out` (already shaped); may fail with a status. */
typedef bp_status (*bp_init_fn)(bp_tensor *out, bp_rng *rng, void *user);

typedef struct bp_init {
    bp_init_kind kind;
    double a, b;               /* value; mean, scale; min, max; scale for variance scaling */
    const bp_tensor *array;    /* BP_INIT_ARRAY: borrowed, must outlive the fill */
    bp_init_fn fn;             /* BP_INIT_CALLBACK */
    void *user;
} bp_init;

bp_init bp_zero_init(void);
bp_init bp_one_init(double value);
bp_init bp_normal_init(double mean, double scale);
bp_init bp_uniform_init(double min_val, double max_val);
bp_init bp_kaiming_normal_init(double scale);  /* BrainPy default scale 2.0 */
bp_init bp_kaiming_uniform_init(double scale); /* BrainPy default scale 2.0 */
bp_init bp_xavier_normal_init(double scale);   /* BrainPy default scale 1.0 */
bp_init bp_xavier_uniform_init(double scale);  /* BrainPy default scale 1.0 */
bp_init bp_array_init(const bp_tensor *values);
bp_init bp_callback_init(bp_init_fn fn, void *user);

/* BrainPy's name of the initializer, e.g. "ZeroInit", "OneInit(value=1.0)". */
const char *bp_init_repr(const bp_init *init, char *buf, size_t cap);

/* Fills t according to init. rng may be NULL for deterministic kinds.
 * Errors: BP_EINVAL (bad hyperparameters, e.g. scale < 0, min > max, a NaN,
 * a OneInit value that does not fit an integer dtype, or a random kind with
 * rng NULL), BP_ESHAPE (array of the wrong shape), BP_EDTYPE (random kinds
 * and arrays fill float32/float64 tensors only). */
bp_status bp_init_fill(const bp_init *init, bp_tensor *t, bp_rng *rng);

/* Creates a tensor of this flavour's real type and fills it. */
bp_status bp_tensor_init(bp_tensor **out, int ndim, const int64_t *shape, const bp_init *init,
                         bp_rng *rng);

/* The fans BrainPy computes for a shape (in_axis -2, out_axis -1). */
void bp_compute_fans(int ndim, const int64_t *shape, double *fan_in, double *fan_out);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
