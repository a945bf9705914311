/* tests/test_layers_torch.c — Conv, pooling and Dense forward and backward
 * against PyTorch's float64 values (tests/gen_layers.py writes the fixture).
 *
 * Tolerance: the layers run in float32 here; each output is a dot product of
 * at most a few hundred terms of magnitude ~1, so float32 rounding stays well
 * under 1e-5 relative; 2e-5 absolute + 1e-4 relative leaves margin without
 * hiding a wrong index (which moves values by O(1)). */
#include "bp_test.h"
#include "fixture.h"
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/conv.h>
#include <bpc/pool.h>
#include <bpc/dense.h>

#define ATOL 2e-5
#define RTOL 1e-4

static fx_file *fx;

static int load(void **state)
{
    (void)state;
    fx = fx_load("layers_torch.txt");
    return fx ? 0 : -1;
}

static int unload(void **state)
{
    (void)state;
    fx_free(fx);
    return 0;
}

static bp_tensor *from_fx(const char *case_name, const char *what)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", case_name, what);
    const fx_tensor *f = fx_get(fx, key);
    if (!f) fail_msg("fixture lacks %s", key);
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, f->ndim, f->shape));
    for (int64_t i = 0; i < f->numel; i++) bp_tensor_set(t, i, f->data[i]);
    return t;
}

static void expect_equal(const char *case_name, const char *what, const bp_tensor *got)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", case_name, what);
    const fx_tensor *f = fx_get(fx, key);
    if (!f) fail_msg("fixture lacks %s", key);
    if (!bp_tensor_has_shape(got, f->ndim, f->shape)) fail_msg("%s: shape differs from PyTorch's", key);
    for (int64_t i = 0; i < f->numel; i++) {
        double a = bp_tensor_get(got, i), b = f->data[i];
        if (!(fabs(a - b) <= ATOL + RTOL * fabs(b))) fail_msg("%s[%lld] = %.9g, PyTorch %.9g", key, (long long)i, a, b);
    }
}

/* Runs update(x) with x a leaf, back-propagates the fixture's dy, compares. */
static void run_case(bp_node *n, const char *name, bp_var *w, bp_var *b)
{
    bp_tensor *x = from_fx(name, "x"), *dy = from_fx(name, "dy"), *gx, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, x->ndim, x->shape));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    if (w) {
        bp_tensor *t = from_fx(name, "w");
        BP_OK_OR_FAIL(bp_var_assign(w, t));
        bp_tensor_free(t);
        t = from_fx(name, "b");
        bp_tensor *r;
        BP_OK_OR_FAIL(bp_tensor_reshape(&r, t, b->value->ndim, b->value->shape));
        BP_OK_OR_FAIL(bp_var_assign(b, r));
        bp_tensor_free(r);
        bp_tensor_free(t);
    }
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    expect_equal(name, "y", y);
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    expect_equal(name, "dx", gx);
    if (w) {
        expect_equal(name, "dw", w->grad);
        bp_tensor *db;
        BP_OK_OR_FAIL(bp_tensor_reshape(&db, b->grad, 1, &b->grad->numel));
        expect_equal(name, "db", db);
        bp_tensor_free(db);
    }
    bp_tensor_free(y);
    bp_tensor_free(dy);
    bp_tensor_free(x);
    bp_tensor_free(gx);
}

static void conv(int nsp, const char *name, int64_t cin, int64_t cout, const int *k, const int *s, const int *d,
                 int groups, const int *lo, const int *hi)
{
    bp_mode train = bp_training_mode(2);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.groups = groups;
    o.padding = lo ? BP_PAD_EXPLICIT : BP_PAD_SAME;
    for (int i = 0; i < nsp; i++) {
        o.kernel_size[i] = k[i];
        o.stride[i] = s[i];
        o.dilation[i] = d[i];
        if (lo) {
            o.pad_lo[i] = lo[i];
            o.pad_hi[i] = hi[i];
        }
    }
    bp_node *n;
    BP_OK_OR_FAIL(nsp == 3 ? bp_conv3d_new(&n, cin, cout, &o) : bp_conv2d_new(&n, cin, cout, &o));
    bp_conv *c = bp_conv_cast(n);
    run_case(n, name, c->w, c->b);
    bp_node_free(n);
}

static void test_conv(void **state)
{
    (void)state;
    int k3[3] = {3, 3, 3}, one[3] = {1, 1, 1};
    conv(3, "conv3d_same", 3, 4, k3, one, one, 1, NULL, NULL);
    int k[3] = {3, 2, 3}, s[3] = {2, 1, 2}, d[3] = {1, 2, 1}, lo[3] = {1, 0, 2}, hi[3] = {0, 2, 1};
    conv(3, "conv3d_strided", 4, 6, k, s, d, 2, lo, hi);
    int kv[3] = {3, 3, 2}, sv[3] = {1, 2, 1}, zero[3] = {0, 0, 0};
    conv(3, "conv3d_valid_c1", 1, 5, kv, sv, one, 1, zero, zero);
    int k2[2] = {3, 3}, s2[2] = {2, 2};
    conv(2, "conv2d_same_s2", 3, 5, k2, s2, one, 1, NULL, NULL);
}

static void pool(bool max, const char *name, const int *k, const int *s)
{
    bp_pool_opts o = {0};
    for (int i = 0; i < 3; i++) {
        o.kernel_size[i] = k[i];
        o.stride[i] = s[i];
    }
    bp_node *n;
    BP_OK_OR_FAIL(max ? bp_maxpool_new(&n, 3, &o) : bp_avgpool_new(&n, 3, &o));
    run_case(n, name, NULL, NULL);
    bp_node_free(n);
}

static void test_pool(void **state)
{
    (void)state;
    int k2[3] = {2, 2, 2}, zero[3] = {0, 0, 0};
    pool(true, "maxpool3d", k2, zero); /* stride 0: defaults to the kernel */
    int ko[3] = {3, 2, 2}, so[3] = {2, 1, 2};
    pool(true, "maxpool3d_overlap", ko, so);
    int ka[3] = {2, 2, 3}, sa[3] = {2, 2, 1};
    pool(false, "avgpool3d", ka, sa);
    bp_pool_opts pad = {.kernel_size = {3, 3, 3}, .stride = {2, 2, 2}, .pad_lo = {1, 1, 1}, .pad_hi = {1, 1, 1}};
    bp_node *padded;
    BP_OK_OR_FAIL(bp_avgpool_new(&padded, 3, &pad));
    run_case(padded, "avgpool3d_pad", NULL, NULL);
    bp_node_free(padded);
    int target[3] = {3, 2, 4};
    bp_node *n;
    BP_OK_OR_FAIL(bp_adaptive_avgpool_new(&n, 3, target, NULL, NULL));
    run_case(n, "adaptive3d", NULL, NULL);
    bp_node_free(n);
}

static void test_dense(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(4);
    bp_dense_opts o = bp_dense_defaults();
    o.mode = &train;
    bp_node *n;
    BP_OK_OR_FAIL(bp_dense_new(&n, 7, 5, &o));
    bp_dense *d = (bp_dense *)n;
    run_case(n, "dense", d->W, d->b);
    bp_node_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_dense),
    };
    return cmocka_run_group_tests(tests, load, unload);
}
