/* core/init.c — BrainPy's initializers (brainpy.initialize) over bp_tensor.
 *
 * An initializer is a plain value; bp_init_fill checks its hyperparameters
 * when it is used (the constructors cannot fail), then writes the tensor in
 * flat row-major order, one generator draw sequence per element, computing in
 * double and rounding once to the tensor's dtype. So the same seed fills a
 * float32 and a float64 tensor with the same numbers up to that rounding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/init.h>

/* The std of N(0,1) truncated to [-2, 2]; dividing by it makes the truncated
 * samples' variance the intended one (JAX's variance_scaling constant). */
#define BP_TRUNC2_STD 0.87962566103423978

bp_init bp_zero_init(void) { return (bp_init){.kind = BP_INIT_ZERO}; }
bp_init bp_one_init(double value) { return (bp_init){.kind = BP_INIT_ONE, .a = value}; }
bp_init bp_normal_init(double mean, double scale)
{
    return (bp_init){.kind = BP_INIT_NORMAL, .a = mean, .b = scale};
}
bp_init bp_uniform_init(double min_val, double max_val)
{
    return (bp_init){.kind = BP_INIT_UNIFORM, .a = min_val, .b = max_val};
}
bp_init bp_kaiming_normal_init(double scale) { return (bp_init){.kind = BP_INIT_KAIMING_NORMAL, .a = scale}; }
bp_init bp_kaiming_uniform_init(double scale) { return (bp_init){.kind = BP_INIT_KAIMING_UNIFORM, .a = scale}; }
bp_init bp_xavier_normal_init(double scale) { return (bp_init){.kind = BP_INIT_XAVIER_NORMAL, .a = scale}; }
bp_init bp_xavier_uniform_init(double scale) { return (bp_init){.kind = BP_INIT_XAVIER_UNIFORM, .a = scale}; }
bp_init bp_array_init(const bp_tensor *values) { return (bp_init){.kind = BP_INIT_ARRAY, .array = values}; }
bp_init bp_callback_init(bp_init_fn fn, void *user)
{
    return (bp_init){.kind = BP_INIT_CALLBACK, .fn = fn, .user = user};
}

void bp_compute_fans(int ndim, const int64_t *shape, double *fan_in, double *fan_out)
{
    /* BrainPy: in = shape[-2], out = shape[-1], receptive field = the product
     * of the other dims. It has no rule below 2-D; bpc takes n for (n,) and 1
     * for a scalar. The leading product is used instead of BrainPy's
     * numel / in / out so that a zero dim gives 0 rather than 0/0. */
    double in = 1.0, out = 1.0;
    if (ndim == 1 && shape) {
        in = out = (double)shape[0];
    } else if (ndim >= 2 && shape) {
        double rf = 1.0;
        for (int i = 0; i < ndim - 2; i++) rf *= (double)shape[i];
        in = (double)shape[ndim - 2] * rf;
        out = (double)shape[ndim - 1] * rf;
    }
    if (fan_in) *fan_in = in;
    if (fan_out) *fan_out = out;
}

/* ---- repr ---------------------------------------------------------------- */

/* Python's repr(float): the shortest decimal that reads back as x, written in
 * fixed notation when its exponent e is in [-4, 16) ("1.0", "0.0001") and in
 * scientific notation otherwise ("1e-05", "1.5e+16"). */
static void py_float_repr(char *out, size_t cap, double x)
{
    if (isnan(x)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(out, cap, x < 0 ? "-inf" : "inf");
        return;
    }
    char sci[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p - 1, x);
        if (strtod(sci, NULL) == x) break;
    }
    /* sci is "[-]d[.ddd]e[+-]XX": split it into sign, digits and exponent. */
    const char *s = sci;
    bool neg = *s == '-';
    if (neg) s++;
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++) /* digits only: the point may be a locale's comma */
        if (*s >= '0' && *s <= '9') digits[nd++] = *s;
    int e = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';

    char body[64];
    size_t len = 0;
    if (e >= -4 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++) body[len++] = i < nd ? digits[i] : '0';
            body[len++] = '.';
            if (nd > e + 1)
                for (int i = e + 1; i < nd; i++) body[len++] = digits[i];
            else
                body[len++] = '0';
        } else {
            body[len++] = '0';
            body[len++] = '.';
            for (int i = 0; i < -e - 1; i++) body[len++] = '0';
            for (int i = 0; i < nd; i++) body[len++] = digits[i];
        }
        body[len] = '\0';
    } else {
        body[len++] = digits[0];
        if (nd > 1) {
            body[len++] = '.';
            for (int i = 1; i < nd; i++) body[len++] = digits[i];
        }
        snprintf(body + len, sizeof body - len, "e%c%02d", e < 0 ? '-' : '+', abs(e));
    }
    snprintf(out, cap, "%s%s", neg ? "-" : "", body);
}

/* BrainPy's class name of each kind. */
static const char *kind_name(bp_init_kind k)
{
    switch (k) {
    case BP_INIT_ZERO: return "ZeroInit";
    case BP_INIT_ONE: return "OneInit";
    case BP_INIT_NORMAL: return "Normal";
    case BP_INIT_UNIFORM: return "Uniform";
    case BP_INIT_KAIMING_NORMAL: return "KaimingNormal";
    case BP_INIT_KAIMING_UNIFORM: return "KaimingUniform";
    case BP_INIT_XAVIER_NORMAL: return "XavierNormal";
    case BP_INIT_XAVIER_UNIFORM: return "XavierUniform";
    case BP_INIT_ARRAY: return "Array";
    case BP_INIT_CALLBACK: return "Callback";
    }
    return NULL;
}

const char *bp_init_repr(const bp_init *init, char *buf, size_t cap)
{
    if (!buf || cap == 0) return "";
    if (!init) {
        snprintf(buf, cap, "None");
        return buf;
    }
    const char *name = kind_name(init->kind);
    char a[40], b[40], shp[96];
    py_float_repr(a, sizeof a, init->a);
    py_float_repr(b, sizeof b, init->b);
    switch (init->kind) {
    case BP_INIT_ZERO:
    case BP_INIT_CALLBACK: snprintf(buf, cap, "%s", name); break;
    case BP_INIT_ONE: snprintf(buf, cap, "%s(value=%s)", name, a); break;
    case BP_INIT_NORMAL: snprintf(buf, cap, "%s(mean=%s, scale=%s)", name, a, b); break;
    case BP_INIT_UNIFORM: snprintf(buf, cap, "%s(min_val=%s, max_val=%s)", name, a, b); break;
    case BP_INIT_KAIMING_NORMAL:
    case BP_INIT_KAIMING_UNIFORM:
    case BP_INIT_XAVIER_NORMAL:
    case BP_INIT_XAVIER_UNIFORM: snprintf(buf, cap, "%s(scale=%s)", name, a); break;
    case BP_INIT_ARRAY:
        if (init->array)
            snprintf(buf, cap, "%s(shape=%s, dtype=%s)", name,
                     bp_shape_str(shp, sizeof shp, init->array->ndim, init->array->shape),
                     bp_dtype_name(init->array->dtype));
        else
            snprintf(buf, cap, "%s(None)", name);
        break;
    default: snprintf(buf, cap, "Initializer(kind=%d)", (int)init->kind); break;
    }
    return buf;
}

/* ---- fill ---------------------------------------------------------------- */

static bool is_real_dtype(bp_dtype dt) { return dt == BP_FLOAT32 || dt == BP_FLOAT64; }

/* Writes element i of a float32/float64 tensor. */
static inline void put_real(bp_tensor *t, int64_t i, double v)
{
    if (t->dtype == BP_FLOAT32)
        ((float *)t->data)[i] = (float)v;
    else
        ((double *)t->data)[i] = v;
}

/* The range of values a dtype holds; a OneInit value outside it is an error
 * rather than C's undefined float-to-integer conversion. */
static bool value_fits(bp_dtype dt, double v)
{
    switch (dt) {
    case BP_FLOAT32: return isnan(v) || fabs(v) <= 3.4028234663852886e38 || isinf(v);
    case BP_FLOAT64: return true;
    case BP_INT32: return v > -2147483649.0 && v < 2147483648.0;
    case BP_INT64: return v >= -9223372036854775808.0 && v < 9223372036854775808.0;
    case BP_UINT8: return v > -1.0 && v < 256.0;
    }
    return false;
}

/* mean + scale * N(0,1) per element. */
static void fill_normal(bp_tensor *t, bp_rng *rng, double mean, double scale)
{
    for (int64_t i = 0; i < t->numel; i++) put_real(t, i, mean + scale * bp_rng_normal(rng));
}

/* U[lo, hi) per element. lo + (hi - lo) * u can round up to hi, in double or
 * when narrowed to float32; such a value is moved to the dtype's next value
 * below hi (never below lo), keeping the interval half-open. */
static void fill_uniform(bp_tensor *t, bp_rng *rng, double lo, double hi)
{
    const double w = hi - lo;
    if (t->dtype == BP_FLOAT32) {
        /* Rounding is monotone, so v >= (float)lo always; only the top needs care. */
        float *p = t->data, hf = (float)hi, lf = (float)lo;
        float top = lf < hf ? nextafterf(hf, -INFINITY) : lf;
        for (int64_t i = 0; i < t->numel; i++) {
            float v = (float)(lo + w * bp_rng_uniform(rng));
            p[i] = v >= hf && lf < hf ? top : v;
        }
    } else {
        double *p = t->data;
        double top = lo < hi ? nextafter(hi, -INFINITY) : lo;
        for (int64_t i = 0; i < t->numel; i++) {
            double v = lo + w * bp_rng_uniform(rng);
            p[i] = v >= hi && lo < hi ? top : v;
        }
    }
}

/* Checks the things every random kind needs: finite hyperparameters, an rng
 * and a float tensor. */
static bp_status check_random(const char *who, bp_tensor *t, bp_rng *rng)
{
    if (!rng) return bp_fail(BP_EINVAL, "%s: rng is NULL; a random initializer needs a generator", who);
    if (!is_real_dtype(t->dtype))
        return bp_fail(BP_EDTYPE, "%s: tensor dtype must be float32 or float64, got %s", who,
                       bp_dtype_name(t->dtype));
    return BP_OK;
}

static bp_status check_finite(const char *who, const char *arg, double v)
{
    if (!isfinite(v)) return bp_fail(BP_EINVAL, "%s: %s must be finite, got %g", who, arg, v);
    return BP_OK;
}

/* Kaiming / Xavier: BrainPy's VarianceScaling with in_axis -2, out_axis -1. */
static bp_status fill_variance_scaling(const bp_init *init, bp_tensor *t, bp_rng *rng)
{
    const char *who = kind_name(init->kind);
    const double scale = init->a;
    BP_TRY(check_finite(who, "scale", scale));
    if (scale < 0) return bp_fail(BP_EINVAL, "%s: scale must be >= 0, got %g", who, scale);
    BP_TRY(check_random(who, t, rng));
    if (t->numel == 0) return BP_OK; /* a zero dim makes a fan 0; nothing to draw */

    double fan_in, fan_out;
    bp_compute_fans(t->ndim, t->shape, &fan_in, &fan_out);
    const bool kaiming = init->kind == BP_INIT_KAIMING_NORMAL || init->kind == BP_INIT_KAIMING_UNIFORM;
    const double denom = kaiming ? fan_in : 0.5 * (fan_in + fan_out);
    const double variance = scale / denom;

    if (init->kind == BP_INIT_KAIMING_NORMAL || init->kind == BP_INIT_XAVIER_NORMAL) {
        /* std * Z with Z ~ N(0,1) truncated to [-2, 2], std = sqrt(var) / 0.8796. */
        const double std = sqrt(variance) / BP_TRUNC2_STD;
        for (int64_t i = 0; i < t->numel; i++)
            put_real(t, i, std * bp_rng_truncated_normal(rng, -2.0, 2.0));
    } else {
        /* U(-l, l), l = sqrt(3 var): the uniform with variance var. */
        const double l = sqrt(3.0 * variance);
        fill_uniform(t, rng, -l, l);
    }
    return BP_OK;
}

static bp_status fill_array(const bp_init *init, bp_tensor *t)
{
    const bp_tensor *a = init->array;
    char as[96], ts[96];
    if (!a) return bp_fail(BP_EINVAL, "array initializer: array is NULL");
    if (!is_real_dtype(t->dtype))
        return bp_fail(BP_EDTYPE, "array initializer: tensor dtype must be float32 or float64, got %s",
                       bp_dtype_name(t->dtype));
    if (bp_dtype_size(a->dtype) == 0)
        return bp_fail(BP_EDTYPE, "array initializer: array has unknown dtype %d", (int)a->dtype);
    bp_shape_str(as, sizeof as, a->ndim, a->shape);
    bp_shape_str(ts, sizeof ts, t->ndim, t->shape);
    if (a->ndim > 1)
        return bp_fail(BP_ESHAPE, "array initializer: array shape must be (n,), () or (1,), got %s", as);
    if (a->numel == 1) {
        /* () or (1,): broadcast the one value. */
        const double v = bp_tensor_get(a, 0);
        for (int64_t i = 0; i < t->numel; i++) put_real(t, i, v);
        return BP_OK;
    }
    if (t->ndim != 1 || t->shape[0] != a->shape[0])
        return bp_fail(BP_ESHAPE,
                       "array initializer: an array of shape %s fills only a tensor of shape %s, "
                       "got a tensor of shape %s",
                       as, as, ts);
    for (int64_t i = 0; i < t->numel; i++) put_real(t, i, bp_tensor_get(a, i));
    return BP_OK;
}

static bp_status fill_callback(const bp_init *init, bp_tensor *t, bp_rng *rng)
{
    if (!init->fn) return bp_fail(BP_EINVAL, "callback initializer: fn is NULL");
    bp_status st = init->fn(t, rng, init->user);
    if (st == BP_OK) return BP_OK;
    /* Keep the callback's own message when it set one; name the status otherwise. */
    if (bp_last_status() == st) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", bp_last_error());
        return bp_fail(st, "callback initializer failed: %s", msg);
    }
    return bp_fail(st, "callback initializer failed with %s (it set no message)", bp_status_name(st));
}

bp_status bp_init_fill(const bp_init *init, bp_tensor *t, bp_rng *rng)
{
    if (!init) return bp_fail(BP_EINVAL, "bp_init_fill: init is NULL");
    if (!t) return bp_fail(BP_EINVAL, "bp_init_fill: tensor is NULL");
    switch (init->kind) {
    case BP_INIT_ZERO:
        bp_tensor_zero(t);
        return BP_OK;
    case BP_INIT_ONE:
        if (isnan(init->a)) return bp_fail(BP_EINVAL, "OneInit: value must not be NaN, got %g", init->a);
        if (!value_fits(t->dtype, init->a))
            return bp_fail(BP_EINVAL, "OneInit: value %g does not fit the tensor's dtype %s", init->a,
                           bp_dtype_name(t->dtype));
        bp_tensor_fill(t, init->a);
        return BP_OK;
    case BP_INIT_NORMAL:
        BP_TRY(check_finite("Normal", "mean", init->a));
        BP_TRY(check_finite("Normal", "scale", init->b));
        if (init->b < 0) return bp_fail(BP_EINVAL, "Normal: scale must be >= 0, got %g", init->b);
        BP_TRY(check_random("Normal", t, rng));
        fill_normal(t, rng, init->a, init->b);
        return BP_OK;
    case BP_INIT_UNIFORM:
        BP_TRY(check_finite("Uniform", "min_val", init->a));
        BP_TRY(check_finite("Uniform", "max_val", init->b));
        if (init->a > init->b)
            return bp_fail(BP_EINVAL, "Uniform: min_val must be <= max_val, got min_val %g > max_val %g",
                           init->a, init->b);
        BP_TRY(check_random("Uniform", t, rng));
        fill_uniform(t, rng, init->a, init->b);
        return BP_OK;
    case BP_INIT_KAIMING_NORMAL:
    case BP_INIT_KAIMING_UNIFORM:
    case BP_INIT_XAVIER_NORMAL:
    case BP_INIT_XAVIER_UNIFORM: return fill_variance_scaling(init, t, rng);
    case BP_INIT_ARRAY: return fill_array(init, t);
    case BP_INIT_CALLBACK: return fill_callback(init, t, rng);
    }
    return bp_fail(BP_EINVAL, "bp_init_fill: unknown initializer kind %d", (int)init->kind);
}

bp_status bp_tensor_init(bp_tensor **out, int ndim, const int64_t *shape, const bp_init *init,
                         bp_rng *rng)
{
    if (!out) return bp_fail(BP_EINVAL, "bp_tensor_init: out is NULL");
    *out = NULL;
    bp_tensor *t;
    BP_TRY(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    bp_status st = bp_init_fill(init, t, rng);
    if (st != BP_OK) {
        bp_tensor_free(t);
        return st;
    }
    *out = t;
    return BP_OK;
}
