/* tests/test_unet.c — the 3-D U-Net (bpc/unet.h) against the same net in
 * PyTorch (tests/data/unet.txt from tests/gen_unet.py): parameter count, the
 * output and every gradient, with instance norm, with batch norm in
 * training mode, and with transposed-convolution up-sampling; the names of its vars; its errors; and a float64 gradcheck
 * of a small net on a few input elements.
 * BPC_TEST_BOTH_FLAVOURS: float32 to 2e-4 of each tensor's largest value (a
 * depth-2 net: ~15 layers of float32 sums of up to 3^3 x 6 terms, normalised
 * four times), float64 to 1e-9. */
#include "bp_test.h"
#include "fixture.h"
#include <stdlib.h>
#include <bpc/bpc.h>

#ifdef BP_REAL_DOUBLE
#define TOL 1e-9
#else
#define TOL 2e-4
#endif

static fx_file *g_fx;

static const fx_tensor *fx(const char *tag, const char *what)
{
    char name[160];
    snprintf(name, sizeof name, "%s.%s", tag, what);
    const fx_tensor *t = fx_get(g_fx, name);
    if (!t) fail_msg("fixture %s missing", name);
    return t;
}

/* Within TOL of the larger of the tensor's largest value and floor (a bias
 * right before a normalisation has a zero gradient in exact arithmetic: its
 * rounding noise is measured against the net's gradient scale). */
static void expect_close(const char *what, const bp_tensor *t, const fx_tensor *f, double floor)
{
    assert_int_equal(t->numel, f->numel);
    double scale = floor, worst = 0;
    for (int64_t i = 0; i < f->numel; i++) scale = fmax(scale, fabs(f->data[i]));
    for (int64_t i = 0; i < f->numel; i++) worst = fmax(worst, fabs((double)((const bp_real *)t->data)[i] - f->data[i]));
    if (!(worst <= TOL * scale)) fail_msg("%s: off by %.3g of a largest value %.3g", what, worst, scale);
}

static bp_node *make_unet(bp_unet_norm norm, bp_unet_up up, const bp_mode *mode)
{
    bp_unet_opts o = bp_unet_defaults();
    o.depth = 2, o.base_channels = 2, o.norm = norm, o.up = up, o.mode = mode;
    bp_node *u = NULL;
    BP_OK_OR_FAIL(bp_unet_new(&u, 1, 3, &o));
    return u;
}

static void check_against_torch(const char *tag, bp_unet_norm norm, bp_unet_up up)
{
    bp_mode train = bp_training_mode(2);
    bp_node *u = make_unet(norm, up, &train);
    assert_int_equal(bp_unet_param_count(u), (int64_t)fx(tag, "count")->data[0]);
    /* load PyTorch's parameters by relative path */
    bp_collect_opts co = bp_collect_defaults();
    co.method = BP_RELATIVE;
    bp_collector *v = NULL;
    BP_OK_OR_FAIL(bp_node_train_vars(u, &co, &v));
    char key[160];
    for (size_t i = 0; i < bp_collector_len(v); i++) {
        snprintf(key, sizeof key, "var.%s", bp_collector_key(v, i));
        const fx_tensor *f = fx(tag, key);
        bp_tensor *val = bp_collector_var(v, i)->value;
        assert_int_equal(val->numel, f->numel);
        for (int64_t k = 0; k < f->numel; k++) ((bp_real *)val->data)[k] = (bp_real)f->data[k];
    }
    const fx_tensor *fxx = fx(tag, "x");
    bp_tensor *x = NULL, *gx = NULL, *dy = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, fxx->ndim, fxx->shape));
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, fxx->ndim, fxx->shape));
    for (int64_t k = 0; k < fxx->numel; k++) ((bp_real *)x->data)[k] = (bp_real)fxx->data[k];
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    bp_share_save_fit(true);
    BP_OK_OR_FAIL(bp_node_update(u, x, &y));
    expect_close("y", y, fx(tag, "y"), 0);
    const fx_tensor *fdy = fx(tag, "dy");
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, fdy->ndim, fdy->shape));
    for (int64_t k = 0; k < fdy->numel; k++) ((bp_real *)dy->data)[k] = (bp_real)fdy->data[k];
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    expect_close("dx", gx, fx(tag, "dx"), 0);
    double gscale = 0;
    for (size_t i = 0; i < bp_collector_len(v); i++) {
        snprintf(key, sizeof key, "grad.%s", bp_collector_key(v, i));
        const fx_tensor *f = fx(tag, key);
        for (int64_t k = 0; k < f->numel; k++) gscale = fmax(gscale, fabs(f->data[k]));
    }
    for (size_t i = 0; i < bp_collector_len(v); i++) {
        snprintf(key, sizeof key, "grad.%s", bp_collector_key(v, i));
        expect_close(key, bp_collector_var(v, i)->grad, fx(tag, key), gscale);
    }
    bp_share_save_fit(false);
    bp_collector_free(v);
    bp_tensor_free(x), bp_tensor_free(gx), bp_tensor_free(dy), bp_tensor_free(y);
    bp_node_free(u);
}

static void test_instance_norm_torch(void **state) { (void)state; check_against_torch("instance", BP_UNET_INSTANCE, BP_UNET_TRILINEAR); }
static void test_batch_norm_torch(void **state) { (void)state; check_against_torch("batch", BP_UNET_BATCH, BP_UNET_TRILINEAR); }
static void test_transposed_torch(void **state) { (void)state; check_against_torch("transposed", BP_UNET_INSTANCE, BP_UNET_TRANSPOSED); }

static void test_names_and_errors(void **state)
{
    (void)state;
    bp_unet_opts o = bp_unet_defaults();
    o.depth = 1, o.base_channels = 4, o.norm = BP_UNET_GROUP, o.groups = 2, o.name = "Seg";
    bp_node *u = NULL;
    BP_OK_OR_FAIL(bp_unet_new(&u, 2, 5, &o));
    bp_collector *v = NULL;
    BP_OK_OR_FAIL(bp_node_vars(u, NULL, &v));
    assert_true(bp_collector_find(v, "Seg_enc1_conv2.w") >= 0);
    assert_true(bp_collector_find(v, "Seg_dec0_norm1.scale") >= 0);
    assert_true(bp_collector_find(v, "Seg_head.b") >= 0);
    bp_collector_free(v);
    /* f = 4, depth 1: enc0 2->4, enc1 4->8, dec0 12->4, head 4->5, GroupNorm affine (C,) x2 per norm */
    const int64_t conv = (27 * 2 * 4 + 4) + (27 * 4 * 4 + 4) + (27 * 4 * 8 + 8) + (27 * 8 * 8 + 8) +
                         (27 * 12 * 4 + 4) + (27 * 4 * 4 + 4) + (4 * 5 + 5);
    const int64_t norms = 2 * (4 + 4 + 8 + 8 + 4 + 4);
    bp_mode train = bp_training_mode(1);
    o.mode = &train, o.name = NULL;
    bp_node *t = NULL;
    BP_OK_OR_FAIL(bp_unet_new(&t, 2, 5, &o));
    assert_int_equal(bp_unet_param_count(t), conv + norms);
    bp_tensor *x = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, (int64_t[]){1, 5, 4, 4, 2}));
    BP_EXPECT_ERR(bp_node_update(t, x, &y), BP_ESHAPE, "multiples of 2^depth = 2, got (1,5,4,4,2)");
    bp_tensor_free(x);
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 4, (int64_t[]){1, 4, 4, 2}));
    BP_EXPECT_ERR(bp_node_update(t, x, &y), BP_ESHAPE, "expected (B, X, Y, Z, C) input");
    bp_tensor_free(x);
    bp_node_free(t), bp_node_free(u);
    o = bp_unet_defaults();
    BP_EXPECT_ERR(bp_unet_new(&u, 0, 2, &o), BP_EINVAL, "in_channels and n_classes must be >= 1");
    o.depth = 7;
    BP_EXPECT_ERR(bp_unet_new(&u, 1, 2, &o), BP_EINVAL, "depth must be in 1..6, got 7");
    o = bp_unet_defaults();
    o.norm = BP_UNET_GROUP, o.groups = 3;
    BP_EXPECT_ERR(bp_unet_new(&u, 1, 2, &o), BP_EINVAL, "groups (3) must divide base_channels (16)");
    o = bp_unet_defaults();
    o.negative_slope = -1;
    BP_EXPECT_ERR(bp_unet_new(&u, 1, 2, &o), BP_EINVAL, "negative_slope");
    assert_null(u);
}

#ifdef BP_REAL_DOUBLE
static bp_node *g_net;
static bp_status gc_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)user, (void)n_in;
    return bp_node_update(g_net, in[0], out);
}

/* The whole net's dx against central differences (instance norm, fit). */
static void test_gradcheck(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(1);
    bp_unet_opts o = bp_unet_defaults();
    o.depth = 1, o.base_channels = 2, o.mode = &train;
    BP_OK_OR_FAIL(bp_unet_new(&g_net, 1, 2, &o));
    bp_tensor *x = NULL, *gx = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, (int64_t[]){1, 4, 2, 2, 1}));
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, 5, (int64_t[]){1, 4, 2, 2, 1}));
    for (int64_t k = 0; k < x->numel; k++) ((bp_real *)x->data)[k] = sin(1.7 * (double)k) + 0.1 * (double)k;
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    bp_share_save_fit(true);
    BP_OK_OR_FAIL(bp_gradcheck(gc_fn, NULL, 1, &x, NULL, NULL));
    bp_share_save_fit(false);
    bp_tensor_free(x), bp_tensor_free(gx);
    bp_node_free(g_net);
}
#endif

static int load(void **state)
{
    (void)state;
    g_fx = fx_load("unet.txt");
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
        cmocka_unit_test(test_instance_norm_torch),
        cmocka_unit_test(test_batch_norm_torch),
        cmocka_unit_test(test_transposed_torch),
        cmocka_unit_test(test_names_and_errors),
#ifdef BP_REAL_DOUBLE
        cmocka_unit_test(test_gradcheck),
#endif
    };
    return cmocka_run_group_tests(tests, load, unload);
}
