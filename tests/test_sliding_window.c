/* tests/test_sliding_window.c — whole-scan inference in windows
 * (bpc/sliding_window.h): an identity net gives the volume back (any roi,
 * overlap, batch, volumes smaller than a window), a 1x1x1 convolution equals
 * the same convolution over the whole volume, a hand-worked 1-D case checks
 * the Gaussian weights and window placement, and no tape, fit restored,
 * errors. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/autograd.h>
#include <bpc/conv.h>
#include <bpc/ops.h>
#include <bpc/share.h>
#include <bpc/sliding_window.h>

/* A net that returns its input plus the number of calls so far (from 1 on);
 * with g_offset_calls false, just its input. */
static int g_calls;
static bool g_offset_calls;
static bool g_shrink;
static bp_status probe_update(bp_node *self, bp_tensor *x, bp_tensor **out)
{
    (void)self;
    g_calls++;
    if (g_shrink) return bp_tensor_new(out, BP_REAL_DTYPE, 5, (int64_t[]){x->shape[0], 1, 1, 1, 1});
    return bp_add_scalar(out, x, g_offset_calls ? g_calls : 0);
}
static const bp_node_class probe_class = {.name = "Probe", .size = sizeof(bp_node), .update = probe_update};

static bp_tensor *volume(int64_t X, int64_t Y, int64_t Z, int64_t C)
{
    bp_tensor *v = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&v, BP_REAL_DTYPE, 4, (int64_t[]){X, Y, Z, C}));
    for (int64_t i = 0; i < v->numel; i++) ((bp_real *)v->data)[i] = (bp_real)(sin(0.37 * (double)i) * 3 + 0.5);
    return v;
}

static void expect_same(const bp_tensor *a, const bp_tensor *b, double tol)
{
    assert_int_equal(a->numel, b->numel);
    for (int d = 0; d < 4; d++) assert_int_equal(a->shape[d], b->shape[d]);
    for (int64_t i = 0; i < a->numel; i++) {
        double x = ((const bp_real *)a->data)[i], y = ((const bp_real *)b->data)[i];
        if (!(fabs(x - y) <= tol * (1 + fabs(y)))) fail_msg("element %lld: %.9g vs %.9g", (long long)i, x, y);
    }
}

static void test_identity(void **state)
{
    (void)state;
    bp_node *net = NULL;
    BP_OK_OR_FAIL(bp_node_create(&net, &probe_class, NULL, NULL));
    g_offset_calls = g_shrink = false;
    struct { int64_t dims[4], roi[3]; double overlap; int64_t batch; bool gauss; } cases[] = {
        {{9, 7, 5, 2}, {4, 4, 4}, 0.5, 1, true},
        {{9, 7, 5, 2}, {4, 3, 2}, 0.25, 3, true},
        {{9, 7, 5, 2}, {4, 4, 4}, 0.0, 2, false},
        {{3, 2, 5, 1}, {4, 4, 4}, 0.5, 1, true},   /* smaller than a window on two axes */
        {{8, 8, 8, 1}, {8, 8, 8}, 0.5, 1, true},   /* one window */
        {{10, 1, 1, 3}, {3, 1, 1}, 0.75, 4, true},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bp_tensor *v = volume(cases[c].dims[0], cases[c].dims[1], cases[c].dims[2], cases[c].dims[3]), *y = NULL;
        bp_window_opts o = bp_window_defaults();
        memcpy(o.roi, cases[c].roi, sizeof o.roi);
        o.overlap = cases[c].overlap, o.batch = cases[c].batch, o.gaussian = cases[c].gauss;
        g_calls = 0;
        BP_OK_OR_FAIL(bp_sliding_window(net, v, &o, &y));
        int64_t n = bp_sliding_window_count(v->shape, &o);
        assert_int_equal(g_calls, (n + o.batch - 1) / o.batch);
        /* weighted averages of one value: float rounding only */
        expect_same(y, v, 1e-6);
        bp_tensor_free(v), bp_tensor_free(y);
    }
    bp_node_free(net);
}

/* Window starts per axis: size 9, roi 4, overlap 0.5 -> step 2: 0, 2, 4, 5 (the last flush with the end) */
static void test_count(void **state)
{
    (void)state;
    bp_window_opts o = bp_window_defaults();
    o.roi[0] = o.roi[1] = o.roi[2] = 4;
    assert_int_equal(bp_sliding_window_count((int64_t[]){9, 4, 3}, &o), 4 * 1 * 1);
    o.overlap = 0;
    assert_int_equal(bp_sliding_window_count((int64_t[]){9, 8, 12}, &o), 3 * 2 * 3);
    o.roi[0] = 0;
    assert_int_equal(bp_sliding_window_count((int64_t[]){9, 8, 12}, &o), 0);
}

/* Volume (6,1,1,1) of zeros, roi (4,1,1), overlap 0.5: windows at 0 and 2,
 * the net adds 1 then 2. Gaussian along x: sigma = 0.5, centre 1.5,
 * g(p) = exp(-2 (p - 1.5)^2): g(0) = g(3) = e^-4.5, g(1) = g(2) = e^-0.5.
 * Voxels 0, 1: 1; voxel 2: (g(2) + 2 g(0)) / (g(2) + g(0)); voxel 3:
 * (g(3) + 2 g(1)) / (g(3) + g(1)); voxels 4, 5: 2. */
static void test_gaussian_hand_worked(void **state)
{
    (void)state;
    bp_node *net = NULL;
    BP_OK_OR_FAIL(bp_node_create(&net, &probe_class, NULL, NULL));
    g_offset_calls = true, g_shrink = false, g_calls = 0;
    bp_tensor *v = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&v, BP_REAL_DTYPE, 4, (int64_t[]){6, 1, 1, 1}));
    bp_window_opts o = bp_window_defaults();
    o.roi[0] = 4, o.roi[1] = o.roi[2] = 1;
    BP_OK_OR_FAIL(bp_sliding_window(net, v, &o, &y));
    const double a = exp(-4.5), b = exp(-0.5);
    const double want[6] = {1, 1, (b + 2 * a) / (a + b), (a + 2 * b) / (a + b), 2, 2};
    for (int i = 0; i < 6; i++) BP_ASSERT_CLOSE(((bp_real *)y->data)[i], want[i], 1e-6, 1e-6);
    bp_tensor_free(y);
    /* without weighting: plain means (1 + 2) / 2 where both cover */
    o.gaussian = false;
    g_calls = 0;
    BP_OK_OR_FAIL(bp_sliding_window(net, v, &o, &y));
    const double flat[6] = {1, 1, 1.5, 1.5, 2, 2};
    for (int i = 0; i < 6; i++) BP_ASSERT_CLOSE(((bp_real *)y->data)[i], flat[i], 1e-6, 0);
    bp_tensor_free(y), bp_tensor_free(v);
    bp_node_free(net);
}

/* A 1x1x1 convolution is per voxel: windows change nothing. */
static void test_conv_equals_whole_volume(void **state)
{
    (void)state;
    bp_conv_opts co = bp_conv_defaults();
    co.kernel_size[0] = co.kernel_size[1] = co.kernel_size[2] = 1;
    bp_mode m = bp_batching_mode(1);
    co.mode = &m;
    bp_node *conv = NULL;
    BP_OK_OR_FAIL(bp_conv3d_new(&conv, 2, 3, &co));
    bp_tensor *v = volume(11, 6, 7, 2), *v5 = NULL, *whole = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_reshape(&v5, v, 5, (int64_t[]){1, 11, 6, 7, 2}));
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(conv, v5, &whole));
    bp_no_grad_end();
    bp_window_opts o = bp_window_defaults();
    o.roi[0] = 4, o.roi[1] = 4, o.roi[2] = 3;
    o.batch = 2;
    BP_OK_OR_FAIL(bp_sliding_window(conv, v, &o, &y));
    bp_tensor *w4 = NULL;
    BP_OK_OR_FAIL(bp_tensor_reshape(&w4, whole, 4, (int64_t[]){11, 6, 7, 3}));
    expect_same(y, w4, 1e-5);
    bp_tensor_free(w4), bp_tensor_free(whole), bp_tensor_free(v5), bp_tensor_free(v), bp_tensor_free(y);
    bp_node_free(conv);
}

static void test_no_tape_fit_errors(void **state)
{
    (void)state;
    bp_node *net = NULL;
    BP_OK_OR_FAIL(bp_node_create(&net, &probe_class, NULL, NULL));
    g_offset_calls = false, g_shrink = false;
    bp_tensor *v = volume(5, 5, 5, 1), *y = NULL;
    bp_window_opts o = bp_window_defaults();
    o.roi[0] = o.roi[1] = o.roi[2] = 3;
    bp_share_save_fit(true);
    size_t before = bp_ag_graph_size();
    BP_OK_OR_FAIL(bp_sliding_window(net, v, &o, &y));
    assert_int_equal(bp_ag_graph_size(), before);
    assert_true(bp_share_fit());
    bp_share_save_fit(false);
    bp_tensor_free(y);
    g_shrink = true;
    BP_EXPECT_ERR(bp_sliding_window(net, v, &o, &y), BP_ESHAPE, "it must keep the window's size");
    g_shrink = false;
    assert_null(y);
    o.overlap = 1;
    BP_EXPECT_ERR(bp_sliding_window(net, v, &o, &y), BP_EINVAL, "overlap = 1");
    o.overlap = 0.5, o.roi[1] = 0;
    BP_EXPECT_ERR(bp_sliding_window(net, v, &o, &y), BP_EINVAL, "roi[1] = 0");
    o.roi[1] = 3, o.batch = 0;
    BP_EXPECT_ERR(bp_sliding_window(net, v, &o, &y), BP_EINVAL, "batch = 0");
    o.batch = 1;
    bp_tensor *v3 = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&v3, BP_REAL_DTYPE, 3, (int64_t[]){5, 5, 5}));
    BP_EXPECT_ERR(bp_sliding_window(net, v3, &o, &y), BP_ESHAPE, "(X, Y, Z, C)");
    BP_EXPECT_ERR(bp_sliding_window(NULL, v, &o, &y), BP_EINVAL, "model, vol or opts is NULL");
    bp_tensor_free(v3), bp_tensor_free(v);
    bp_node_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_gaussian_hand_worked),
        cmocka_unit_test(test_conv_equals_whole_volume),
        cmocka_unit_test(test_no_tape_fit_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
