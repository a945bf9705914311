/* tests/test_ops_large.c — the OpenMP paths of the elementwise ops (tensors of
 * 100,000 elements, above the parallel threshold; ctest runs 2 threads):
 * forward and backward against the same formulas evaluated in double. The
 * broadcast operand's gradient sums 250 blocks, so tolerances are float32's
 * rounding over such sums. */
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include "bp_test.h"

enum { R = 250, C = 400, NE = R * C };

static bp_tensor *make(int ndim, const int64_t *shape, double (*f)(int64_t))
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, f(i));
    return t;
}

static double fa(int64_t i) { return 2.0 * sin(0.37 * (double)i + 0.1); }
static double fb(int64_t i) { return 0.5 + 0.25 * cos(0.11 * (double)i); } /* in [0.25, 0.75] */
static double fdy(int64_t i) { return cos(0.23 * (double)i); }

static int teardown(void **state)
{
    (void)state;
    bp_ag_release_graph();
    bp_ag_pool_trim();
    return 0;
}

typedef bp_status (*binop)(bp_tensor **, bp_tensor *, bp_tensor *);

static void test_binary_broadcast(void **state)
{
    (void)state;
    const binop ops[] = {bp_add, bp_sub, bp_mul, bp_div};
    for (int k = 0; k < 4; k++) {
        bp_tensor *a = make(2, (int64_t[]){R, C}, fa), *b = make(1, (int64_t[]){C}, fb);
        bp_tensor *ga = NULL, *gb = NULL, *out = NULL;
        BP_OK_OR_FAIL(bp_tensor_new(&ga, BP_REAL_DTYPE, 2, (int64_t[]){R, C}));
        BP_OK_OR_FAIL(bp_tensor_new(&gb, BP_REAL_DTYPE, 1, (int64_t[]){C}));
        BP_OK_OR_FAIL(bp_ag_make_leaf(a, ga));
        BP_OK_OR_FAIL(bp_ag_make_leaf(b, gb));
        BP_OK_OR_FAIL(ops[k](&out, a, b));
        bp_tensor *dy = make(2, (int64_t[]){R, C}, fdy);
        BP_OK_OR_FAIL(bp_backward_with(out, dy));
        double *want_gb = calloc(C, sizeof *want_gb);
        for (int64_t i = 0; i < NE; i++) {
            const double x = bp_tensor_get(a, i), y = bp_tensor_get(b, i % C), g = fdy(i);
            double o, da, db;
            switch (k) {
            case 0: o = x + y; da = g; db = g; break;
            case 1: o = x - y; da = g; db = -g; break;
            case 2: o = x * y; da = g * y; db = g * x; break;
            default: o = x / y; da = g / y; db = -g * x / (y * y); break;
            }
            BP_ASSERT_CLOSE(bp_tensor_get(out, i), o, 1e-6, 1e-6);
            BP_ASSERT_CLOSE(bp_tensor_get(ga, i), da, 1e-6, 1e-6);
            want_gb[i % C] += db;
        }
        for (int j = 0; j < C; j++) BP_ASSERT_CLOSE(bp_tensor_get(gb, j), want_gb[j], 1e-3, 1e-4);
        free(want_gb);
        bp_tensor_free(out);
        bp_tensor_free(dy);
        bp_tensor_free(a);
        bp_tensor_free(b);
        bp_tensor_free(ga);
        bp_tensor_free(gb);
    }
}

static bp_status u_relu(bp_tensor **o, bp_tensor *a) { return bp_relu(o, a); }
static bp_status u_leaky(bp_tensor **o, bp_tensor *a) { return bp_leaky_relu(o, a, 0.2); }
static bp_status u_sigmoid(bp_tensor **o, bp_tensor *a) { return bp_sigmoid(o, a); }
static bp_status u_tanh(bp_tensor **o, bp_tensor *a) { return bp_tanh(o, a); }
static bp_status u_gelu(bp_tensor **o, bp_tensor *a) { return bp_gelu(o, a); }
static bp_status u_adds(bp_tensor **o, bp_tensor *a) { return bp_add_scalar(o, a, 0.5); }
static bp_status u_muls(bp_tensor **o, bp_tensor *a) { return bp_mul_scalar(o, a, -3); }
static bp_status u_pow(bp_tensor **o, bp_tensor *a) { return bp_pow_scalar(o, a, 2); }

/* f(x) and f'(x) in double. */
static void ref(int k, double x, double *f, double *d)
{
    const double s = 1 / (1 + exp(-x)), t = tanh(x), cdf = 0.5 * (1 + erf(x / sqrt(2.0)));
    switch (k) {
    case 0: *f = x > 0 ? x : 0; *d = x > 0; break;
    case 1: *f = x > 0 ? x : 0.2 * x; *d = x > 0 ? 1 : 0.2; break;
    case 2: *f = s; *d = s * (1 - s); break;
    case 3: *f = t; *d = 1 - t * t; break;
    case 4: *f = x * cdf; *d = cdf + x * exp(-0.5 * x * x) / sqrt(2 * 3.14159265358979323846); break;
    case 5: *f = x + 0.5; *d = 1; break;
    case 6: *f = -3 * x; *d = -3; break;
    default: *f = x * x; *d = 2 * x; break;
    }
}

static void test_unary(void **state)
{
    (void)state;
    bp_status (*const ops[])(bp_tensor **, bp_tensor *) = {u_relu, u_leaky, u_sigmoid, u_tanh,
                                                           u_gelu, u_adds,  u_muls,    u_pow};
    for (int k = 0; k < 8; k++) {
        bp_tensor *a = make(1, (int64_t[]){NE}, fa), *ga = NULL, *out = NULL;
        BP_OK_OR_FAIL(bp_tensor_new(&ga, BP_REAL_DTYPE, 1, (int64_t[]){NE}));
        BP_OK_OR_FAIL(bp_ag_make_leaf(a, ga));
        BP_OK_OR_FAIL(ops[k](&out, a));
        bp_tensor *dy = make(1, (int64_t[]){NE}, fdy);
        BP_OK_OR_FAIL(bp_backward_with(out, dy));
        for (int64_t i = 0; i < NE; i++) {
            double f, d;
            ref(k, bp_tensor_get(a, i), &f, &d);
            BP_ASSERT_CLOSE(bp_tensor_get(out, i), f, 1e-6, 1e-5);
            BP_ASSERT_CLOSE(bp_tensor_get(ga, i), d * fdy(i), 1e-6, 1e-5);
        }
        bp_tensor_free(out);
        bp_tensor_free(dy);
        bp_tensor_free(a);
        bp_tensor_free(ga);
    }
}

/* softmax over rows of 400: forward against double, and the row sums of the
 * backward's output are 0 (d of a constant total). */
static void test_softmax_rows(void **state)
{
    (void)state;
    bp_tensor *a = make(2, (int64_t[]){R, C}, fa), *ga = NULL, *out = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&ga, BP_REAL_DTYPE, 2, (int64_t[]){R, C}));
    BP_OK_OR_FAIL(bp_ag_make_leaf(a, ga));
    BP_OK_OR_FAIL(bp_softmax(&out, a));
    bp_tensor *dy = make(2, (int64_t[]){R, C}, fdy);
    BP_OK_OR_FAIL(bp_backward_with(out, dy));
    for (int r = 0; r < R; r++) {
        double z = 0, m = -1e300, dot = 0, gsum = 0;
        for (int j = 0; j < C; j++) m = fmax(m, bp_tensor_get(a, r * C + j));
        for (int j = 0; j < C; j++) z += exp(bp_tensor_get(a, r * C + j) - m);
        for (int j = 0; j < C; j++) dot += fdy(r * C + j) * exp(bp_tensor_get(a, r * C + j) - m) / z;
        for (int j = 0; j < C; j++) {
            const double y = exp(bp_tensor_get(a, r * C + j) - m) / z;
            BP_ASSERT_CLOSE(bp_tensor_get(out, r * C + j), y, 1e-7, 1e-5);
            BP_ASSERT_CLOSE(bp_tensor_get(ga, r * C + j), y * (fdy(r * C + j) - dot), 1e-7, 1e-4);
            gsum += bp_tensor_get(ga, r * C + j);
        }
        BP_ASSERT_CLOSE(gsum, 0, 1e-5, 0);
    }
    bp_tensor_free(out);
    bp_tensor_free(dy);
    bp_tensor_free(a);
    bp_tensor_free(ga);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_binary_broadcast, teardown),
        cmocka_unit_test_teardown(test_unary, teardown),
        cmocka_unit_test_teardown(test_softmax_rows, teardown),
    };
    return cmocka_run_group_tests_name("large tensors (OpenMP paths)", tests, NULL, NULL);
}
