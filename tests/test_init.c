/* tests/test_init.c — BrainPy initializers (bpc/init.h).
 *
 * Built twice (BPC_TEST_BOTH_FLAVOURS): as test_init against libbpc
 * (float32) and as test_init_f64 against libbpc64 (float64). Checks are of three kinds:
 * fans and reprs worked by hand; exact reproduction of each kind's formula
 * from a second generator with the same seed; and statistics of large fills
 * with tolerances derived from the sample size (see bp_stats.h). */
#include "bp_test.h"
#include "bp_stats.h"
#include <stdlib.h>
#include <bpc/init.h>

#define TRUNC2_STD 0.87962566103423978

/* The elements of t as doubles (caller frees). */
static double *as_doubles(const bp_tensor *t)
{
    double *x = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < t->numel; i++) x[i] = bp_tensor_get(t, i);
    return x;
}

/* ---- fans ---------------------------------------------------------------- */

static void expect_fans(int ndim, const int64_t *shape, double in, double out)
{
    double fi = -1, fo = -1;
    bp_compute_fans(ndim, shape, &fi, &fo);
    if (fi != in || fo != out) fail_msg("ndim %d: fans (%g, %g), expected (%g, %g)", ndim, fi, fo, in, out);
}

static void test_fans(void **state)
{
    (void)state;
    expect_fans(0, NULL, 1, 1);
    expect_fans(1, (int64_t[]){7}, 7, 7);
    expect_fans(2, (int64_t[]){3, 4}, 3, 4); /* dense (in, out) */
    expect_fans(3, (int64_t[]){2, 3, 4}, 6, 8);
    /* A 3-D conv kernel (kH, kW, kD, C_in, C_out): rf = 27. */
    expect_fans(5, (int64_t[]){3, 3, 3, 16, 32}, 27 * 16, 27 * 32);
    expect_fans(5, (int64_t[]){1, 1, 1, 8, 2}, 8, 2);
    expect_fans(4, (int64_t[]){5, 2, 3, 7}, 30, 70);
    expect_fans(3, (int64_t[]){7, 1, 1}, 7, 7);
    /* A zero dim gives a zero fan, not BrainPy's 0/0. */
    expect_fans(2, (int64_t[]){0, 4}, 0, 4);
    expect_fans(3, (int64_t[]){3, 0, 5}, 0, 15);
    expect_fans(3, (int64_t[]){0, 2, 5}, 0, 0);
    /* Either output may be NULL. */
    double fi = 0;
    bp_compute_fans(2, (int64_t[]){3, 4}, &fi, NULL);
    assert_true(fi == 3);
    double fo = 0;
    bp_compute_fans(2, (int64_t[]){3, 4}, NULL, &fo);
    assert_true(fo == 4);
}

/* ---- repr ---------------------------------------------------------------- */

static void expect_repr(bp_init in, const char *want)
{
    char buf[128];
    const char *got = bp_init_repr(&in, buf, sizeof buf);
    assert_ptr_equal(got, buf);
    assert_string_equal(got, want);
}

static void test_repr(void **state)
{
    (void)state;
    expect_repr(bp_zero_init(), "ZeroInit");
    expect_repr(bp_one_init(1.0), "OneInit(value=1.0)");
    expect_repr(bp_normal_init(0.0, 1.0), "Normal(mean=0.0, scale=1.0)");
    expect_repr(bp_uniform_init(-0.5, 0.5), "Uniform(min_val=-0.5, max_val=0.5)");
    expect_repr(bp_kaiming_normal_init(2.0), "KaimingNormal(scale=2.0)");
    expect_repr(bp_kaiming_uniform_init(2.0), "KaimingUniform(scale=2.0)");
    expect_repr(bp_xavier_normal_init(1.0), "XavierNormal(scale=1.0)");
    expect_repr(bp_xavier_uniform_init(1.0), "XavierUniform(scale=1.0)");
    expect_repr(bp_callback_init(NULL, NULL), "Callback");
    expect_repr(bp_array_init(NULL), "Array(None)");
    bp_tensor *a;
    BP_OK_OR_FAIL(bp_tensor_new(&a, BP_FLOAT32, 1, (int64_t[]){3}));
    expect_repr(bp_array_init(a), "Array(shape=(3,), dtype=float32)");
    bp_tensor_free(a);
    expect_repr((bp_init){.kind = (bp_init_kind)99}, "Initializer(kind=99)");

    /* Numbers print as Python's repr(float) does. */
    expect_repr(bp_one_init(0.1), "OneInit(value=0.1)");
    expect_repr(bp_one_init(1e-5), "OneInit(value=1e-05)");
    expect_repr(bp_one_init(0.0001), "OneInit(value=0.0001)");
    expect_repr(bp_one_init(2.5e-7), "OneInit(value=2.5e-07)");
    expect_repr(bp_one_init(123456.789), "OneInit(value=123456.789)");
    expect_repr(bp_one_init(1234567890123456.0), "OneInit(value=1234567890123456.0)");
    expect_repr(bp_one_init(1e16), "OneInit(value=1e+16)");
    expect_repr(bp_one_init(1.5e16), "OneInit(value=1.5e+16)");
    expect_repr(bp_one_init(1e100), "OneInit(value=1e+100)");
    expect_repr(bp_one_init(-3.0), "OneInit(value=-3.0)");
    expect_repr(bp_one_init(-0.0), "OneInit(value=-0.0)");
    expect_repr(bp_one_init(100.0), "OneInit(value=100.0)");
    expect_repr(bp_one_init(1.0 / 3.0), "OneInit(value=0.3333333333333333)");
    expect_repr(bp_one_init(5e-324), "OneInit(value=5e-324)");
    expect_repr(bp_one_init(1.7976931348623157e308), "OneInit(value=1.7976931348623157e+308)");
    expect_repr(bp_one_init(NAN), "OneInit(value=nan)");
    expect_repr(bp_one_init(-INFINITY), "OneInit(value=-inf)");
    expect_repr(bp_normal_init(0.5, 0.02), "Normal(mean=0.5, scale=0.02)");

    /* Truncated to the buffer, always terminated; NULL init is "None". */
    char small[5];
    bp_init z = bp_zero_init();
    assert_string_equal(bp_init_repr(&z, small, sizeof small), "Zero");
    char buf[16];
    assert_string_equal(bp_init_repr(NULL, buf, sizeof buf), "None");
    assert_string_equal(bp_init_repr(&z, NULL, 10), "");
    assert_string_equal(bp_init_repr(&z, buf, 0), "");
}

/* ---- deterministic kinds ------------------------------------------------- */

static void test_zero_one_every_dtype(void **state)
{
    (void)state;
    const bp_dtype dts[5] = {BP_FLOAT32, BP_FLOAT64, BP_INT32, BP_INT64, BP_UINT8};
    const int64_t shape[2] = {3, 5};
    for (int d = 0; d < 5; d++) {
        bp_tensor *t;
        BP_OK_OR_FAIL(bp_tensor_full(&t, dts[d], 2, shape, 9.0));
        bp_init one = bp_one_init(3.0), zero = bp_zero_init();
        BP_OK_OR_FAIL(bp_init_fill(&one, t, NULL)); /* no rng needed */
        for (int64_t i = 0; i < t->numel; i++) assert_true(bp_tensor_get(t, i) == 3.0);
        BP_OK_OR_FAIL(bp_init_fill(&zero, t, NULL));
        for (int64_t i = 0; i < t->numel; i++) assert_true(bp_tensor_get(t, i) == 0.0);
        bp_tensor_free(t);
    }

    /* Conversions: integers truncate toward zero; float32 rounds; inf is a value. */
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_INT32, 1, (int64_t[]){2}));
    bp_init v = bp_one_init(-2.7);
    BP_OK_OR_FAIL(bp_init_fill(&v, t, NULL));
    assert_true(bp_tensor_get(t, 1) == -2.0);
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_FLOAT32, 1, (int64_t[]){2}));
    v = bp_one_init(0.1);
    BP_OK_OR_FAIL(bp_init_fill(&v, t, NULL));
    assert_true(bp_tensor_get(t, 0) == (double)0.1f);
    v = bp_one_init(INFINITY);
    BP_OK_OR_FAIL(bp_init_fill(&v, t, NULL));
    assert_true(isinf(bp_tensor_get(t, 1)));
    bp_tensor_free(t);

    /* Scalars and empty tensors. */
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 0, NULL));
    v = bp_one_init(-1.5);
    BP_OK_OR_FAIL(bp_init_fill(&v, t, NULL));
    assert_true(bp_tensor_get(t, 0) == -1.5);
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 2, (int64_t[]){0, 3}));
    BP_OK_OR_FAIL(bp_init_fill(&v, t, NULL));
    bp_tensor_free(t);
}

static void test_one_init_errors(void **state)
{
    (void)state;
    bp_tensor *f, *u8, *i32, *i64;
    BP_OK_OR_FAIL(bp_tensor_new(&f, BP_REAL_DTYPE, 1, (int64_t[]){4}));
    BP_OK_OR_FAIL(bp_tensor_new(&u8, BP_UINT8, 1, (int64_t[]){4}));
    BP_OK_OR_FAIL(bp_tensor_new(&i32, BP_INT32, 1, (int64_t[]){4}));
    BP_OK_OR_FAIL(bp_tensor_new(&i64, BP_INT64, 1, (int64_t[]){4}));
    bp_init v = bp_one_init(NAN);
    BP_EXPECT_ERR(bp_init_fill(&v, f, NULL), BP_EINVAL, "OneInit: value must not be NaN, got nan");
    v = bp_one_init(-1);
    BP_EXPECT_ERR(bp_init_fill(&v, u8, NULL), BP_EINVAL, "OneInit: value -1 does not fit the tensor's dtype uint8");
    v = bp_one_init(256);
    BP_EXPECT_ERR(bp_init_fill(&v, u8, NULL), BP_EINVAL, "value 256 does not fit");
    v = bp_one_init(255.5); /* truncates to 255 */
    BP_OK_OR_FAIL(bp_init_fill(&v, u8, NULL));
    assert_true(bp_tensor_get(u8, 3) == 255);
    v = bp_one_init(3e9);
    BP_EXPECT_ERR(bp_init_fill(&v, i32, NULL), BP_EINVAL, "value 3e+09 does not fit the tensor's dtype int32");
    v = bp_one_init(INFINITY);
    BP_EXPECT_ERR(bp_init_fill(&v, i32, NULL), BP_EINVAL, "value inf does not fit");
    v = bp_one_init(9223372036854775808.0);
    BP_EXPECT_ERR(bp_init_fill(&v, i64, NULL), BP_EINVAL, "dtype int64");
    v = bp_one_init(-9223372036854775808.0);
    BP_OK_OR_FAIL(bp_init_fill(&v, i64, NULL));
    assert_true(((int64_t *)i64->data)[0] == INT64_MIN);
    bp_tensor *f32;
    BP_OK_OR_FAIL(bp_tensor_new(&f32, BP_FLOAT32, 1, (int64_t[]){4}));
    v = bp_one_init(1e39);
    BP_EXPECT_ERR(bp_init_fill(&v, f32, NULL), BP_EINVAL, "value 1e+39 does not fit the tensor's dtype float32");
    v = bp_one_init(-3.4e38); /* within float32's range */
    BP_OK_OR_FAIL(bp_init_fill(&v, f32, NULL));
    assert_true(bp_tensor_get(f32, 0) == (double)-3.4e38f);
    bp_tensor_free(f32);
    /* A rejected fill leaves the tensor as it was. */
    assert_true(bp_tensor_get(u8, 0) == 255);
    bp_tensor_free(f);
    bp_tensor_free(u8);
    bp_tensor_free(i32);
    bp_tensor_free(i64);
}

/* ---- exact formulas ------------------------------------------------------ */

/* Fills a real tensor of `shape` with init from seed, and checks every element
 * against want(i, twin) computed from a second generator with the same seed. */
typedef double (*want_fn)(bp_rng *twin, const double *p);

static void expect_formula(const bp_init *init, int ndim, const int64_t *shape, want_fn want,
                           const double *p)
{
    bp_rng r, twin;
    bp_rng_seed(&r, 1234);
    bp_rng_seed(&twin, 1234);
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_init(&t, ndim, shape, init, &r));
    assert_int_equal(t->dtype, BP_REAL_DTYPE);
    assert_true(bp_tensor_has_shape(t, ndim, shape));
    const bp_real *x = bp_tensor_creals(t);
    for (int64_t i = 0; i < t->numel; i++) {
        bp_real w = (bp_real)want(&twin, p);
        if (x[i] != w) fail_msg("element %lld: %.9g, expected %.9g", (long long)i, (double)x[i], (double)w);
    }
    /* Both generators consumed the same words. */
    uint64_t a[4], b[4];
    bp_rng_get_state(&r, a);
    bp_rng_get_state(&twin, b);
    assert_memory_equal(a, b, sizeof a);
    bp_tensor_free(t);
}

static double want_normal(bp_rng *g, const double *p) { return p[0] + p[1] * bp_rng_normal(g); }
static double want_uniform(bp_rng *g, const double *p) { return p[0] + (p[1] - p[0]) * bp_rng_uniform(g); }
static double want_trunc(bp_rng *g, const double *p) { return p[0] * bp_rng_truncated_normal(g, -2, 2); }

static void test_formulas(void **state)
{
    (void)state;
    const int64_t conv[5] = {3, 3, 3, 4, 2}; /* fan_in 108, fan_out 54, fan_avg 81 */
    const int64_t dense[2] = {10, 6};         /* fan_in 10, fan_out 6, fan_avg 8 */

    bp_init in = bp_normal_init(0.5, 2.0);
    expect_formula(&in, 2, dense, want_normal, (double[]){0.5, 2.0});
    in = bp_uniform_init(-1.0, 3.0);
    expect_formula(&in, 2, dense, want_uniform, (double[]){-1.0, 3.0});

    in = bp_kaiming_normal_init(2.0);
    expect_formula(&in, 5, conv, want_trunc, (double[]){sqrt(2.0 / 108) / TRUNC2_STD});
    in = bp_kaiming_normal_init(1.0);
    expect_formula(&in, 2, dense, want_trunc, (double[]){sqrt(1.0 / 10) / TRUNC2_STD});
    in = bp_xavier_normal_init(1.0);
    expect_formula(&in, 5, conv, want_trunc, (double[]){sqrt(1.0 / 81) / TRUNC2_STD});
    in = bp_xavier_normal_init(3.0);
    expect_formula(&in, 2, dense, want_trunc, (double[]){sqrt(3.0 / 8) / TRUNC2_STD});

    double l = sqrt(3 * (2.0 / 108)); /* as the library rounds it */
    in = bp_kaiming_uniform_init(2.0);
    expect_formula(&in, 5, conv, want_uniform, (double[]){-l, l});
    l = sqrt(3 * (1.0 / 8));
    in = bp_xavier_uniform_init(1.0);
    expect_formula(&in, 2, dense, want_uniform, (double[]){-l, l});

    /* 1-D: fan_in = fan_out = n; 0-D: 1. */
    l = sqrt(3 * (2.0 / 5));
    in = bp_kaiming_uniform_init(2.0);
    expect_formula(&in, 1, (int64_t[]){5}, want_uniform, (double[]){-l, l});
    l = sqrt(3 * (2.0 / 1));
    expect_formula(&in, 0, NULL, want_uniform, (double[]){-l, l});
    in = bp_xavier_normal_init(1.0);
    expect_formula(&in, 1, (int64_t[]){9}, want_trunc, (double[]){sqrt(1.0 / 9) / TRUNC2_STD});

    /* scale 0 gives zeros from any variance-scaling kind. */
    bp_tensor *t;
    bp_rng r;
    bp_rng_seed(&r, 1);
    in = bp_kaiming_normal_init(0.0);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 5, conv, &in, &r));
    for (int64_t i = 0; i < t->numel; i++) assert_true(bp_tensor_get(t, i) == 0.0);
    bp_tensor_free(t);
}

/* ---- statistics ---------------------------------------------------------- */

/* Fills shape with init and returns the elements' moments (x kept for KS). */
static bp_moments fill_moments(const bp_init *init, int ndim, const int64_t *shape, uint64_t seed,
                               double **xout, size_t *n)
{
    bp_rng r;
    bp_rng_seed(&r, seed);
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_init(&t, ndim, shape, init, &r));
    double *x = as_doubles(t);
    *n = (size_t)t->numel;
    bp_moments m = bp_sample_moments(x, *n);
    bp_tensor_free(t);
    *xout = x;
    return m;
}

static void test_normal_uniform_statistics(void **state)
{
    (void)state;
    const int64_t shape[2] = {100, 1000};
    double *x;
    size_t n;

    bp_init in = bp_normal_init(3.0, 0.5);
    bp_moments m = fill_moments(&in, 2, shape, 77, &x, &n);
    BP_ASSERT_MOMENTS(m, 3.0, 0.25);
    BP_ASSERT_KS(x, n, bp_cdf_normal, ((double[]){3.0, 0.5}));
    free(x);

    in = bp_uniform_init(-3.0, 5.0);
    m = fill_moments(&in, 2, shape, 78, &x, &n);
    BP_ASSERT_MOMENTS(m, 1.0, 64.0 / 12);
    /* U[-3, 5): inside, and reaching both ends: P(min - lo > 20 w / n) = e^-20. */
    assert_true(m.min >= -3.0 && m.max < 5.0);
    assert_true(m.min < -3.0 + 20 * 8.0 / (double)n && m.max > 5.0 - 20 * 8.0 / (double)n);
    BP_ASSERT_KS(x, n, bp_cdf_uniform, ((double[]){-3.0, 5.0}));
    free(x);
}

/* Variance scaling on a 3-D conv kernel (kH, kW, kD, C_in, C_out): the
 * empirical variance is the intended scale / fan, and samples stay within the
 * truncation at 2 std of the underlying normal. */
static void check_variance_scaling(bp_init in, const int64_t shape[5], double fan, uint64_t seed)
{
    double *x;
    size_t n;
    bp_moments m = fill_moments(&in, 5, shape, seed, &x, &n);
    const double var = in.a / fan;
    BP_ASSERT_MOMENTS(m, 0.0, var);
    bool normal = in.kind == BP_INIT_KAIMING_NORMAL || in.kind == BP_INIT_XAVIER_NORMAL;
    if (normal) {
        const double s = sqrt(var) / TRUNC2_STD, bound = 2 * s * (1 + 1e-6);
        assert_true(m.max <= bound && m.min >= -bound);
        BP_ASSERT_KS(x, n, bp_cdf_truncnorm, ((double[]){-2, 2, s}));
    } else {
        const double l = sqrt(3 * var) * (1 + 1e-6);
        assert_true(m.max < l && m.min >= -l);
        BP_ASSERT_KS(x, n, bp_cdf_uniform, ((double[]){-sqrt(3 * var), sqrt(3 * var)}));
    }
    free(x);
}

static void test_variance_scaling_statistics(void **state)
{
    (void)state;
    const int64_t small[5] = {3, 3, 3, 16, 32};  /* fan_in 432, fan_out 864, n = 13824 */
    const int64_t large[5] = {3, 3, 3, 64, 128}; /* fan_in 1728, fan_out 3456, n = 221184 */
    check_variance_scaling(bp_kaiming_normal_init(2.0), small, 432, 1);
    check_variance_scaling(bp_kaiming_normal_init(2.0), large, 1728, 2);
    check_variance_scaling(bp_kaiming_uniform_init(2.0), small, 432, 3);
    check_variance_scaling(bp_kaiming_uniform_init(2.0), large, 1728, 4);
    check_variance_scaling(bp_xavier_normal_init(1.0), small, (432 + 864) / 2.0, 5);
    check_variance_scaling(bp_xavier_normal_init(1.0), large, (1728 + 3456) / 2.0, 6);
    check_variance_scaling(bp_xavier_uniform_init(1.0), small, (432 + 864) / 2.0, 7);
    check_variance_scaling(bp_xavier_uniform_init(1.0), large, (1728 + 3456) / 2.0, 8);
    check_variance_scaling(bp_kaiming_normal_init(0.5), large, 1728, 9);

    /* The std of KaimingNormal's samples on the conv kernel is sqrt(2 / fan_in). */
    double *x;
    size_t n;
    bp_init kn = bp_kaiming_normal_init(2.0);
    bp_moments m = fill_moments(&kn, 5, large, 10, &x, &n);
    BP_ASSERT_CLOSE(sqrt(m.var), sqrt(2.0 / 1728), 5 * bp_se_var(&m) / (2 * sqrt(m.var)), 0);
    free(x);
}

/* ---- reproducibility and dtypes ------------------------------------------ */

static void test_reproducible_and_both_dtypes(void **state)
{
    (void)state;
    const int64_t shape[3] = {4, 5, 6};
    const bp_init inits[4] = {bp_normal_init(0, 1), bp_uniform_init(-2, 1), bp_kaiming_normal_init(2),
                              bp_xavier_uniform_init(1)};
    for (int k = 0; k < 4; k++) {
        bp_rng r;
        bp_tensor *a, *b, *c, *f32, *f64;
        BP_OK_OR_FAIL(bp_tensor_new(&a, BP_REAL_DTYPE, 3, shape));
        BP_OK_OR_FAIL(bp_tensor_new(&b, BP_REAL_DTYPE, 3, shape));
        BP_OK_OR_FAIL(bp_tensor_new(&c, BP_REAL_DTYPE, 3, shape));
        BP_OK_OR_FAIL(bp_tensor_new(&f32, BP_FLOAT32, 3, shape));
        BP_OK_OR_FAIL(bp_tensor_new(&f64, BP_FLOAT64, 3, shape));
        bp_rng_seed(&r, 8);
        BP_OK_OR_FAIL(bp_init_fill(&inits[k], a, &r));
        bp_rng_seed(&r, 8);
        BP_OK_OR_FAIL(bp_init_fill(&inits[k], b, &r));
        bp_rng_seed(&r, 9);
        BP_OK_OR_FAIL(bp_init_fill(&inits[k], c, &r));
        assert_memory_equal(a->data, b->data, bp_tensor_nbytes(a));
        int same = 0;
        for (int64_t i = 0; i < a->numel; i++) same += bp_tensor_get(a, i) == bp_tensor_get(c, i);
        assert_int_equal(same, 0);

        /* Either float dtype can be filled, whatever the flavour; the float32
         * values are the float64 ones rounded. */
        bp_rng_seed(&r, 8);
        BP_OK_OR_FAIL(bp_init_fill(&inits[k], f32, &r));
        bp_rng_seed(&r, 8);
        BP_OK_OR_FAIL(bp_init_fill(&inits[k], f64, &r));
        const float *p32 = f32->data;
        const double *p64 = f64->data;
        for (int64_t i = 0; i < a->numel; i++) {
            assert_true(p32[i] == (float)p64[i]);
            assert_true(bp_tensor_get(a, i) == (double)(bp_real)p64[i]);
        }
        bp_tensor_free(a);
        bp_tensor_free(b);
        bp_tensor_free(c);
        bp_tensor_free(f32);
        bp_tensor_free(f64);
    }
}

/* U[min, max) stays half-open when max is one ulp above min: lo + w * u rounds
 * to max for about half the draws, and those values must come back below. */
static void test_uniform_half_open_at_rounding(void **state)
{
    (void)state;
    bp_rng r;
    bp_tensor *t32, *t64;
    BP_OK_OR_FAIL(bp_tensor_new(&t32, BP_FLOAT32, 1, (int64_t[]){1000}));
    BP_OK_OR_FAIL(bp_tensor_new(&t64, BP_FLOAT64, 1, (int64_t[]){1000}));
    bp_init in = bp_uniform_init(1.0, (double)nextafterf(1.0f, 2.0f));
    bp_rng_seed(&r, 5);
    BP_OK_OR_FAIL(bp_init_fill(&in, t32, &r));
    for (int i = 0; i < 1000; i++) assert_true(((float *)t32->data)[i] == 1.0f);
    in = bp_uniform_init(1.0, nextafter(1.0, 2.0));
    bp_rng_seed(&r, 5);
    BP_OK_OR_FAIL(bp_init_fill(&in, t64, &r));
    for (int i = 0; i < 1000; i++) assert_true(((double *)t64->data)[i] == 1.0);

    /* min == max fills that value. */
    in = bp_uniform_init(0.25, 0.25);
    BP_OK_OR_FAIL(bp_init_fill(&in, t32, &r));
    BP_OK_OR_FAIL(bp_init_fill(&in, t64, &r));
    for (int i = 0; i < 1000; i++) assert_true(bp_tensor_get(t32, i) == 0.25 && bp_tensor_get(t64, i) == 0.25);
    bp_tensor_free(t32);
    bp_tensor_free(t64);
}

/* A tensor with a zero dim has nothing to draw: the fill succeeds and leaves
 * the generator where it was. */
static void test_empty_tensor_draws_nothing(void **state)
{
    (void)state;
    bp_rng r;
    uint64_t a[4], b[4];
    const bp_init inits[4] = {bp_normal_init(0, 1), bp_uniform_init(0, 1), bp_kaiming_normal_init(2),
                              bp_xavier_uniform_init(1)};
    for (int k = 0; k < 4; k++) {
        bp_tensor *t;
        bp_rng_seed(&r, 3);
        bp_rng_get_state(&r, a);
        BP_OK_OR_FAIL(bp_tensor_init(&t, 3, (int64_t[]){0, 4, 5}, &inits[k], &r));
        assert_int_equal(t->numel, 0);
        bp_rng_get_state(&r, b);
        assert_memory_equal(a, b, sizeof a);
        bp_tensor_free(t);
    }
}

/* ---- random-kind errors -------------------------------------------------- */

static void test_random_kind_errors(void **state)
{
    (void)state;
    bp_rng r;
    bp_rng_seed(&r, 1);
    bp_tensor *t, *ti;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 2, (int64_t[]){3, 4}));
    BP_OK_OR_FAIL(bp_tensor_new(&ti, BP_INT32, 2, (int64_t[]){3, 4}));
    bp_init in;

    in = bp_normal_init(0, -1);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Normal: scale must be >= 0, got -1");
    in = bp_normal_init(NAN, 1);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Normal: mean must be finite, got nan");
    in = bp_normal_init(0, INFINITY);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Normal: scale must be finite, got inf");
    in = bp_normal_init(0, 1);
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_EINVAL, "Normal: rng is NULL");
    BP_EXPECT_ERR(bp_init_fill(&in, ti, &r), BP_EDTYPE, "Normal: tensor dtype must be float32 or float64, got int32");

    in = bp_uniform_init(5, -3);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Uniform: min_val must be <= max_val, got min_val 5 > max_val -3");
    in = bp_uniform_init(NAN, 1);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Uniform: min_val must be finite, got nan");
    in = bp_uniform_init(0, NAN);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Uniform: max_val must be finite, got nan");
    in = bp_uniform_init(-INFINITY, 0);
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "Uniform: min_val must be finite, got -inf");
    in = bp_uniform_init(0, 1);
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_EINVAL, "Uniform: rng is NULL");
    BP_EXPECT_ERR(bp_init_fill(&in, ti, &r), BP_EDTYPE, "Uniform: tensor dtype must be float32 or float64, got int32");

    const bp_init_kind vs[4] = {BP_INIT_KAIMING_NORMAL, BP_INIT_KAIMING_UNIFORM, BP_INIT_XAVIER_NORMAL,
                                BP_INIT_XAVIER_UNIFORM};
    const char *names[4] = {"KaimingNormal", "KaimingUniform", "XavierNormal", "XavierUniform"};
    char wantbuf[128];
    const char *want = wantbuf; /* a pointer: BP_EXPECT_ERR tests it for NULL */
    for (int k = 0; k < 4; k++) {
        in = (bp_init){.kind = vs[k], .a = -0.5};
        snprintf(wantbuf, sizeof wantbuf, "%s: scale must be >= 0, got -0.5", names[k]);
        BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, want);
        in.a = NAN;
        snprintf(wantbuf, sizeof wantbuf, "%s: scale must be finite, got nan", names[k]);
        BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, want);
        in.a = 2.0;
        snprintf(wantbuf, sizeof wantbuf, "%s: rng is NULL", names[k]);
        BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_EINVAL, want);
        snprintf(wantbuf, sizeof wantbuf, "%s: tensor dtype must be float32 or float64, got int32", names[k]);
        BP_EXPECT_ERR(bp_init_fill(&in, ti, &r), BP_EDTYPE, want);
    }

    /* Errors are reported before anything is drawn or written. */
    for (int64_t i = 0; i < t->numel; i++) assert_true(bp_tensor_get(t, i) == 0.0);

    /* Generic argument errors. */
    in = bp_zero_init();
    BP_EXPECT_ERR(bp_init_fill(NULL, t, &r), BP_EINVAL, "bp_init_fill: init is NULL");
    BP_EXPECT_ERR(bp_init_fill(&in, NULL, &r), BP_EINVAL, "bp_init_fill: tensor is NULL");
    in = (bp_init){.kind = (bp_init_kind)42};
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "unknown initializer kind 42");
    bp_tensor_free(t);
    bp_tensor_free(ti);
}

static void test_tensor_init_errors(void **state)
{
    (void)state;
    bp_rng r;
    bp_rng_seed(&r, 1);
    bp_init in = bp_normal_init(0, 1);
    bp_tensor *t = (bp_tensor *)&r; /* anything non-NULL: it must be reset */
    BP_EXPECT_ERR(bp_tensor_init(NULL, 1, (int64_t[]){2}, &in, &r), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_tensor_init(&t, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, &in, &r), BP_ESHAPE,
                  "ndim must be in [0, 8], got 9");
    assert_null(t);
    t = (bp_tensor *)&r;
    BP_EXPECT_ERR(bp_tensor_init(&t, 2, (int64_t[]){2, -1}, &in, &r), BP_ESHAPE, "shape[1] must be >= 0, got -1");
    assert_null(t);
    t = (bp_tensor *)&r;
    BP_EXPECT_ERR(bp_tensor_init(&t, 1, (int64_t[]){2}, &in, NULL), BP_EINVAL, "rng is NULL");
    assert_null(t); /* and the tensor it made is freed (valgrind) */
    BP_EXPECT_ERR(bp_tensor_init(&t, 1, (int64_t[]){2}, NULL, &r), BP_EINVAL, "init is NULL");
    assert_null(t);
}

/* ---- array initializer --------------------------------------------------- */

static void test_array_init(void **state)
{
    (void)state;
    bp_tensor *a, *t;
    /* (n,) into (n,), from another dtype. */
    BP_OK_OR_FAIL(bp_tensor_from_data(&a, BP_FLOAT64, 1, (int64_t[]){4}, (double[]){0.5, -1, 2.25, 1e-3}));
    bp_init in = bp_array_init(a);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 1, (int64_t[]){4}, &in, NULL));
    const double want[4] = {0.5, -1, 2.25, 1e-3};
    for (int i = 0; i < 4; i++) assert_true(bp_tensor_get(t, i) == (double)(bp_real)want[i]);
    bp_tensor_free(t);
    /* into a float32 tensor in any flavour */
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_FLOAT32, 1, (int64_t[]){4}));
    BP_OK_OR_FAIL(bp_init_fill(&in, t, NULL));
    assert_true(bp_tensor_get(t, 3) == (double)1e-3f);
    bp_tensor_free(t);
    bp_tensor_free(a);

    /* An int32 array converts. */
    BP_OK_OR_FAIL(bp_tensor_from_data(&a, BP_INT32, 1, (int64_t[]){3}, (int32_t[]){7, -8, 9}));
    in = bp_array_init(a);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 1, (int64_t[]){3}, &in, NULL));
    assert_true(bp_tensor_get(t, 0) == 7 && bp_tensor_get(t, 1) == -8 && bp_tensor_get(t, 2) == 9);
    bp_tensor_free(t);
    bp_tensor_free(a);

    /* () and (1,) broadcast to any shape. */
    BP_OK_OR_FAIL(bp_tensor_full(&a, BP_FLOAT64, 0, NULL, 2.5));
    in = bp_array_init(a);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 3, (int64_t[]){2, 3, 4}, &in, NULL));
    for (int64_t i = 0; i < 24; i++) assert_true(bp_tensor_get(t, i) == 2.5);
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 0, NULL, &in, NULL));
    assert_true(bp_tensor_get(t, 0) == 2.5);
    bp_tensor_free(t);
    bp_tensor_free(a);
    BP_OK_OR_FAIL(bp_tensor_full(&a, BP_REAL_DTYPE, 1, (int64_t[]){1}, -4.0));
    in = bp_array_init(a);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 1, (int64_t[]){5}, &in, NULL));
    for (int64_t i = 0; i < 5; i++) assert_true(bp_tensor_get(t, i) == -4.0);
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 2, (int64_t[]){2, 3}, &in, NULL));
    for (int64_t i = 0; i < 6; i++) assert_true(bp_tensor_get(t, i) == -4.0);
    bp_tensor_free(t);
    bp_tensor_free(a);

    /* (0,) fills only (0,). */
    BP_OK_OR_FAIL(bp_tensor_new(&a, BP_REAL_DTYPE, 1, (int64_t[]){0}));
    in = bp_array_init(a);
    BP_OK_OR_FAIL(bp_tensor_init(&t, 1, (int64_t[]){0}, &in, NULL));
    bp_tensor_free(t);
    BP_EXPECT_ERR(bp_tensor_init(&t, 1, (int64_t[]){3}, &in, NULL), BP_ESHAPE,
                  "an array of shape (0,) fills only a tensor of shape (0,), got a tensor of shape (3,)");
    bp_tensor_free(a);
}

static void test_array_init_errors(void **state)
{
    (void)state;
    bp_tensor *a, *t, *m, *ti;
    BP_OK_OR_FAIL(bp_tensor_full(&a, BP_REAL_DTYPE, 1, (int64_t[]){3}, 1.0));
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, (int64_t[]){4}));
    bp_init in = bp_array_init(a);
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ESHAPE,
                  "array initializer: an array of shape (3,) fills only a tensor of shape (3,), got a tensor of shape (4,)");
    bp_tensor_free(t);
    /* (n,) does not broadcast into (1, n), (n, 1) or a scalar. */
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 2, (int64_t[]){1, 3}));
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ESHAPE, "got a tensor of shape (1,3)");
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 2, (int64_t[]){3, 1}));
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ESHAPE, "got a tensor of shape (3,1)");
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 0, NULL));
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ESHAPE, "got a tensor of shape ()");
    for (int64_t i = 0; i < t->numel; i++) assert_true(bp_tensor_get(t, i) == 0.0); /* untouched */
    bp_tensor_free(t);

    /* Arrays of 2 or more dims, even (1,1) or the tensor's own shape. */
    BP_OK_OR_FAIL(bp_tensor_full(&m, BP_REAL_DTYPE, 2, (int64_t[]){2, 3}, 1.0));
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 2, (int64_t[]){2, 3}));
    in = bp_array_init(m);
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ESHAPE,
                  "array initializer: array shape must be (n,), () or (1,), got (2,3)");
    bp_tensor_free(m);
    BP_OK_OR_FAIL(bp_tensor_full(&m, BP_REAL_DTYPE, 2, (int64_t[]){1, 1}, 1.0));
    in = bp_array_init(m);
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ESHAPE, "got (1,1)");
    bp_tensor_free(m);

    /* NULL array; an integer tensor to fill. */
    in = bp_array_init(NULL);
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_EINVAL, "array initializer: array is NULL");
    BP_OK_OR_FAIL(bp_tensor_new(&ti, BP_INT64, 1, (int64_t[]){3}));
    in = bp_array_init(a);
    BP_EXPECT_ERR(bp_init_fill(&in, ti, NULL), BP_EDTYPE,
                  "array initializer: tensor dtype must be float32 or float64, got int64");
    bp_tensor_free(ti);
    bp_tensor_free(t);
    bp_tensor_free(a);
}

/* ---- callback initializer ------------------------------------------------ */

typedef struct cb_ctx {
    int calls;
    bp_rng *seen_rng;
    bp_status fail_with;
    bool set_message;
} cb_ctx;

/* Writes 10 * i + uniform draw, or fails as the context says. */
static bp_status cb_fill(bp_tensor *out, bp_rng *rng, void *user)
{
    cb_ctx *c = user;
    c->calls++;
    c->seen_rng = rng;
    if (c->fail_with != BP_OK) {
        if (c->set_message) return bp_fail(c->fail_with, "my_loader: file weights.bin is truncated");
        return c->fail_with;
    }
    for (int64_t i = 0; i < out->numel; i++) bp_tensor_set(out, i, 10.0 * (double)i + bp_rng_uniform(rng));
    return BP_OK;
}

static void test_callback_init(void **state)
{
    (void)state;
    bp_rng r, twin;
    bp_rng_seed(&r, 6);
    bp_rng_seed(&twin, 6);
    cb_ctx c = {0, NULL, BP_OK, false};
    bp_init in = bp_callback_init(cb_fill, &c);
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_init(&t, 2, (int64_t[]){2, 3}, &in, &r));
    assert_int_equal(c.calls, 1);
    assert_ptr_equal(c.seen_rng, &r);
    for (int64_t i = 0; i < 6; i++)
        assert_true(bp_tensor_get(t, i) == (double)(bp_real)(10.0 * (double)i + bp_rng_uniform(&twin)));
    bp_tensor_free(t);

    /* A failure propagates its status, keeping the callback's message. */
    c.fail_with = BP_EIO;
    c.set_message = true;
    t = (bp_tensor *)&c;
    BP_EXPECT_ERR(bp_tensor_init(&t, 1, (int64_t[]){3}, &in, &r), BP_EIO,
                  "callback initializer failed: my_loader: file weights.bin is truncated");
    assert_null(t);
    /* A failure without a message is named by its status. */
    c.fail_with = BP_ENUMERIC;
    c.set_message = false;
    bp_clear_error();
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, (int64_t[]){3}));
    BP_EXPECT_ERR(bp_init_fill(&in, t, NULL), BP_ENUMERIC,
                  "callback initializer failed with BP_ENUMERIC (it set no message)");
    assert_null(c.seen_rng);
    bp_tensor_free(t);

    in = bp_callback_init(NULL, NULL);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, (int64_t[]){3}));
    BP_EXPECT_ERR(bp_init_fill(&in, t, &r), BP_EINVAL, "callback initializer: fn is NULL");
    bp_tensor_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fans),
        cmocka_unit_test(test_repr),
        cmocka_unit_test(test_zero_one_every_dtype),
        cmocka_unit_test(test_one_init_errors),
        cmocka_unit_test(test_formulas),
        cmocka_unit_test(test_normal_uniform_statistics),
        cmocka_unit_test(test_variance_scaling_statistics),
        cmocka_unit_test(test_reproducible_and_both_dtypes),
        cmocka_unit_test(test_uniform_half_open_at_rounding),
        cmocka_unit_test(test_empty_tensor_draws_nothing),
        cmocka_unit_test(test_random_kind_errors),
        cmocka_unit_test(test_tensor_init_errors),
        cmocka_unit_test(test_array_init),
        cmocka_unit_test(test_array_init_errors),
        cmocka_unit_test(test_callback_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
