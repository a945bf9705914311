/* tests/test_resample.c — bp_upsample and bp_concat (autograd/ops_resample.c)
 * against PyTorch (tests/data/resample.txt from tests/gen_resample.py:
 * F.interpolate with align_corners=False, torch.cat; gradients of sum(w * y)),
 * a hand-worked trilinear case, float64 gradient checks and the errors.
 * BPC_TEST_BOTH_FLAVOURS: float32 to 1e-6 of the largest value (each output
 * is a sum of at most 8 weighted terms), float64 to 1e-13. */
#include "bp_test.h"
#include "fixture.h"
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include <bpc/gradcheck.h>

#ifdef BP_REAL_DOUBLE
#define TOL 1e-13
#else
#define TOL 1e-6
#endif

static fx_file *g_fx;

static const fx_tensor *fx(const char *prefix, const char *what)
{
    char name[128];
    snprintf(name, sizeof name, "%s_%s", prefix, what);
    const fx_tensor *t = fx_get(g_fx, name);
    if (!t) fail_msg("fixture %s missing", name);
    return t;
}

static bp_tensor *make(const fx_tensor *f, bp_tensor **grad)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, f->ndim, f->shape));
    for (int64_t i = 0; i < f->numel; i++) ((bp_real *)t->data)[i] = (bp_real)f->data[i];
    if (grad) {
        BP_OK_OR_FAIL(bp_tensor_new(grad, BP_REAL_DTYPE, f->ndim, f->shape));
        BP_OK_OR_FAIL(bp_ag_make_leaf(t, *grad));
    }
    return t;
}

static void expect_close(const char *what, const bp_tensor *t, const fx_tensor *f)
{
    assert_int_equal(t->numel, f->numel);
    for (int d = 0; d < f->ndim; d++) assert_int_equal(t->shape[d], f->shape[d]);
    double scale = 1e-300;
    for (int64_t i = 0; i < f->numel; i++) scale = fmax(scale, fabs(f->data[i]));
    for (int64_t i = 0; i < f->numel; i++)
        if (!(fabs((double)((const bp_real *)t->data)[i] - f->data[i]) <= TOL * scale))
            fail_msg("%s[%lld] = %.12g, torch %.12g", what, (long long)i, (double)((const bp_real *)t->data)[i],
                     f->data[i]);
}

static void check_upsample(const char *name, bp_upsample_mode mode)
{
    bp_tensor *gx = NULL, *x = make(fx(name, "x"), &gx), *w = make(fx(name, "w"), NULL), *y = NULL, *yw = NULL, *l = NULL;
    const fx_tensor *sc = fx(name, "scale");
    int scale[3];
    for (int d = 0; d < sc->numel; d++) scale[d] = (int)sc->data[d];
    BP_OK_OR_FAIL(bp_upsample(&y, x, (int)sc->numel, scale, mode));
    expect_close(name, y, fx(name, "y"));
    BP_OK_OR_FAIL(bp_mul(&yw, y, w));
    BP_OK_OR_FAIL(bp_sum(&l, yw, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    expect_close(name, gx, fx(name, "dx"));
    bp_tensor_free(x), bp_tensor_free(gx), bp_tensor_free(w), bp_tensor_free(y), bp_tensor_free(yw), bp_tensor_free(l);
}

static void test_upsample_torch(void **state)
{
    (void)state;
    check_upsample("up_nearest_3d", BP_UPSAMPLE_NEAREST);
    check_upsample("up_trilinear_3d", BP_UPSAMPLE_LINEAR);
    check_upsample("up_trilinear_aniso", BP_UPSAMPLE_LINEAR);
    check_upsample("up_bilinear_2d", BP_UPSAMPLE_LINEAR);
    check_upsample("up_linear_1d", BP_UPSAMPLE_LINEAR);
    check_upsample("up_nearest_1d", BP_UPSAMPLE_NEAREST);
}

/* Linear, scale 2, one row (1, 2, 1): x = (a, b) -> (a, a/4*... ) worked out:
 * src = (o + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamp 0, 0.25, 0.75,
 * 1.25 (i0 = 1, i1 clamped to 1): y = (a, 0.75a + 0.25b, 0.25a + 0.75b, b). */
static void test_hand_worked(void **state)
{
    (void)state;
    bp_tensor *x = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, (int64_t[]){1, 2, 1}));
    ((bp_real *)x->data)[0] = 4, ((bp_real *)x->data)[1] = 8;
    BP_OK_OR_FAIL(bp_upsample(&y, x, 1, (int[]){2}, BP_UPSAMPLE_LINEAR));
    const bp_real want[4] = {4, 5, 7, 8};
    for (int i = 0; i < 4; i++) assert_true(((bp_real *)y->data)[i] == want[i]);
    bp_tensor_free(y);
    BP_OK_OR_FAIL(bp_upsample(&y, x, 1, (int[]){2}, BP_UPSAMPLE_NEAREST));
    const bp_real near[4] = {4, 4, 8, 8};
    for (int i = 0; i < 4; i++) assert_true(((bp_real *)y->data)[i] == near[i]);
    bp_tensor_free(y), bp_tensor_free(x);
}

static void check_concat(const char *name, int n, int axis)
{
    bp_tensor *xs[3], *gs[3], *w = make(fx(name, "w"), NULL), *y = NULL, *yw = NULL, *l = NULL;
    char k[16];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "x%d", i);
        xs[i] = make(fx(name, k), &gs[i]);
    }
    BP_OK_OR_FAIL(bp_concat(&y, n, xs, axis));
    expect_close(name, y, fx(name, "y"));
    BP_OK_OR_FAIL(bp_mul(&yw, y, w));
    BP_OK_OR_FAIL(bp_sum(&l, yw, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "dx%d", i);
        expect_close(name, gs[i], fx(name, k));
        bp_tensor_free(xs[i]), bp_tensor_free(gs[i]);
    }
    bp_tensor_free(w), bp_tensor_free(y), bp_tensor_free(yw), bp_tensor_free(l);
}

static void test_concat_torch(void **state)
{
    (void)state;
    check_concat("cat_channels", 3, -1);
    check_concat("cat_axis1", 2, 1);
}

static void test_errors(void **state)
{
    (void)state;
    bp_tensor *a = NULL, *b = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&a, BP_REAL_DTYPE, 3, (int64_t[]){2, 3, 4}));
    BP_OK_OR_FAIL(bp_tensor_new(&b, BP_REAL_DTYPE, 3, (int64_t[]){2, 5, 4}));
    BP_EXPECT_ERR(bp_concat(&y, 2, (bp_tensor *[]){a, b}, -1), BP_ESHAPE, "inputs differ outside the axis");
    BP_OK_OR_FAIL(bp_concat(&y, 2, (bp_tensor *[]){a, b}, 1));
    assert_int_equal(y->shape[1], 8);
    bp_tensor_free(y);
    BP_EXPECT_ERR(bp_concat(&y, 2, (bp_tensor *[]){a, b}, 3), BP_EINVAL, "axis 3 does not fit a 3D tensor");
    BP_EXPECT_ERR(bp_concat(&y, 0, (bp_tensor *[]){a}, 0), BP_EINVAL, "n = 0 tensors");
    BP_EXPECT_ERR(bp_upsample(&y, a, 2, (int[]){2, 2}, BP_UPSAMPLE_NEAREST), BP_ESHAPE, "expected 4D input");
    BP_EXPECT_ERR(bp_upsample(&y, a, 1, (int[]){0}, BP_UPSAMPLE_NEAREST), BP_EINVAL, "scale[0] = 0");
    BP_EXPECT_ERR(bp_upsample(&y, a, 4, (int[]){2, 2, 2, 2}, BP_UPSAMPLE_NEAREST), BP_EINVAL, "4 spatial dims");
    BP_EXPECT_ERR(bp_upsample(&y, a, 1, (int[]){2}, (bp_upsample_mode)7), BP_EINVAL, "mode 7");
    assert_null(y);
    bp_tensor_free(a), bp_tensor_free(b);
}

#ifdef BP_REAL_DOUBLE
typedef struct gc_user { int k; int scale[3]; bp_upsample_mode mode; } gc_user;
static bp_status gc_up(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    const gc_user *u = user;
    return bp_upsample(out, in[0], u->k, u->scale, u->mode);
}
static bp_status gc_cat(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user;
    return bp_concat(out, n_in, in, -1);
}

static void test_gradcheck(void **state)
{
    (void)state;
    const char *names[] = {"up_trilinear_3d", "up_trilinear_aniso", "up_bilinear_2d", "up_nearest_3d"};
    for (int c = 0; c < 4; c++) {
        bp_tensor *g = NULL, *x = make(fx(names[c], "x"), &g);
        const fx_tensor *sc = fx(names[c], "scale");
        gc_user u = {.k = (int)sc->numel, .mode = c == 3 ? BP_UPSAMPLE_NEAREST : BP_UPSAMPLE_LINEAR};
        for (int d = 0; d < u.k; d++) u.scale[d] = (int)sc->data[d];
        BP_OK_OR_FAIL(bp_gradcheck(gc_up, &u, 1, &x, NULL, NULL));
        bp_tensor_free(x), bp_tensor_free(g);
    }
    bp_tensor *g0 = NULL, *g1 = NULL, *x0 = make(fx("cat_channels", "x0"), &g0), *x1 = make(fx("cat_channels", "x1"), &g1);
    BP_OK_OR_FAIL(bp_gradcheck(gc_cat, NULL, 2, (bp_tensor *[]){x0, x1}, NULL, NULL));
    bp_tensor_free(x0), bp_tensor_free(x1), bp_tensor_free(g0), bp_tensor_free(g1);
}
#endif

static int load(void **state)
{
    (void)state;
    g_fx = fx_load("resample.txt");
    return g_fx ? 0 : -1;
}
static int unload(void **state)
{
    (void)state;
    fx_free(g_fx);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upsample_torch),
        cmocka_unit_test(test_hand_worked),
        cmocka_unit_test(test_concat_torch),
        cmocka_unit_test(test_errors),
#ifdef BP_REAL_DOUBLE
        cmocka_unit_test(test_gradcheck),
#endif
    };
    return cmocka_run_group_tests(tests, load, unload);
}
