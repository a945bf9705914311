/* tests/test_layers_f64.c — float64 gradient checks of the layers' backward
 * (BatchNorm in fit and eval mode, a custom axis, the fused ReLU; Conv1d/2d/3d
 * with stride, dilation, groups and every padding) against central finite
 * differences, through bp_gradcheck. */
#include "bp_test.h"
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/gradcheck.h>
#include <bpc/batchnorm.h>
#include "../layers/batchnorm_internal.h"
#include <bpc/conv.h>
#include <bpc/pool.h>
#include <bpc/dense.h>
#include <bpc/ops.h>

typedef struct layer_case {
    bp_node *node;
    bool relu; /* BatchNorm: the fused BatchNorm+ReLU */
} layer_case;

/* f(x, params...) = the layer's update(x); the params are the TrainVars'
 * values, passed so gradcheck perturbs and checks them too. */
static bp_status run_layer(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    layer_case *lc = user;
    return lc->relu ? bp__bn_relu_pool_run(lc->node, NULL, in[0], out) : bp_node_update(lc->node, in[0], out);
}

static bp_tensor *random_tensor(int ndim, const int64_t *shape, uint64_t seed, double scale, double shift)
{
    bp_tensor *t;
    bp_rng r;
    bp_rng_seed(&r, seed);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, bp_rng_normal(&r) * scale + shift);
    return t;
}

/* Checks the layer at x, with every TrainVar of the node as an extra input. */
static void check_layer(bp_node *n, bool relu, bp_tensor *x)
{
    bp_collector *tv;
    BP_OK_OR_FAIL(bp_node_train_vars(n, NULL, &tv));
    bp_tensor *in[8] = {x};
    int n_in = 1;
    for (size_t i = 0; i < bp_collector_len(tv); i++) in[n_in++] = bp_collector_var(tv, i)->value;
    layer_case lc = {n, relu};
    bp_gradcheck_report rep;
    bp_status st = bp_gradcheck(run_layer, &lc, n_in, in, NULL, &rep);
    if (st) fail_msg("%s: %s", bp_node_name(n), bp_last_error());
    assert_true(rep.passed);
    assert_true(rep.n_checked >= x->numel);
    bp_collector_free(tv);
}

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_share_clear();
    return 0;
}

static void test_batchnorm_fit_and_eval(void **state)
{
    (void)state;
    int64_t s[5] = {2, 3, 2, 2, 5};
    for (int fit = 1; fit >= 0; fit--) {
        bp_node *n;
        BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 5, NULL));
        bp_batchnorm *bn = bp_batchnorm_cast(n);
        /* Non-trivial parameters and running statistics. */
        for (int c = 0; c < 5; c++) {
            bp_tensor_set(bn->scale->value, c, 0.5 + 0.3 * c);
            bp_tensor_set(bn->bias->value, c, 0.1 * c - 0.2);
            bp_tensor_set(bn->running_mean->value, c, 0.2 * c);
            bp_tensor_set(bn->running_var->value, c, 0.5 + c);
        }
        bp_share_save_fit(fit);
        bp_tensor *x = random_tensor(5, s, 11 + fit, 2.0, 1.0);
        check_layer(n, false, x);
        check_layer(n, true, x);
        bp_tensor_free(x);
        bp_node_free(n);
    }
}

static void test_batchnorm_1d_2d_custom_axis(void **state)
{
    (void)state;
    bp_share_save_fit(true);
    bp_node *n;
    int64_t s1[3] = {4, 3, 2};
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, NULL));
    bp_tensor *x = random_tensor(3, s1, 3, 1.5, -0.5);
    check_layer(n, false, x);
    bp_tensor_free(x);
    bp_node_free(n);

    int64_t s2[4] = {3, 2, 2, 1}; /* C = 1 */
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n, 1, NULL));
    x = random_tensor(4, s2, 4, 1.0, 3.0);
    check_layer(n, false, x);
    bp_tensor_free(x);
    bp_node_free(n);

    /* axis (0, 1, 2) on BatchNorm3d: statistics per (D, C). */
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.n_axis = 3;
    o.axis[0] = 0;
    o.axis[1] = 1;
    o.axis[2] = 2;
    o.kept_dims[0] = 2;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 3, &o));
    int64_t s3[5] = {2, 2, 2, 2, 3};
    x = random_tensor(5, s3, 5, 1.0, 0.0);
    check_layer(n, false, x);
    bp_share_save_fit(false);
    check_layer(n, false, x);
    bp_tensor_free(x);
    bp_node_free(n);

    /* affine = false: only x is checked. */
    o = bp_batchnorm_defaults();
    o.affine = false;
    BP_OK_OR_FAIL(bp_batchnorm1d_new(&n, 2, &o));
    bp_share_save_fit(true);
    x = random_tensor(3, s1, 6, 1.0, 0.0);
    check_layer(n, false, x);
    bp_tensor_free(x);
    bp_node_free(n);
}

static void conv_case(int nsp, int64_t cin, int64_t cout, const bp_conv_opts *o, int ndim, const int64_t *xs)
{
    bp_node *n;
    bp_status st = nsp == 1 ? bp_conv1d_new(&n, cin, cout, o)
                 : nsp == 2 ? bp_conv2d_new(&n, cin, cout, o)
                            : bp_conv3d_new(&n, cin, cout, o);
    BP_OK_OR_FAIL(st);
    bp_conv *c = bp_conv_cast(n);
    if (c->b)
        for (int64_t i = 0; i < c->b->value->numel; i++) bp_tensor_set(c->b->value, i, 0.1 * (double)i - 0.3);
    bp_tensor *x = random_tensor(ndim, xs, 21 + (uint64_t)ndim, 1.0, 0.0);
    check_layer(n, false, x);
    bp_tensor_free(x);
    bp_node_free(n);
}

static void test_conv3d(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.kernel_size[0] = o.kernel_size[1] = o.kernel_size[2] = 3;
    int64_t xs[5] = {2, 4, 3, 5, 2};
    conv_case(3, 2, 3, &o, 5, xs); /* SAME */
    o.padding = BP_PAD_VALID;
    conv_case(3, 2, 3, &o, 5, xs);
    o.padding = BP_PAD_EXPLICIT;
    o.pad_lo[0] = 1, o.pad_hi[0] = 0, o.pad_lo[1] = 0, o.pad_hi[1] = 2, o.pad_lo[2] = 2, o.pad_hi[2] = 1;
    o.stride[0] = 2, o.stride[2] = 2;
    conv_case(3, 2, 3, &o, 5, xs);
    o = bp_conv_defaults();
    o.mode = &train;
    o.kernel_size[0] = 2, o.kernel_size[1] = 3, o.kernel_size[2] = 2;
    o.dilation[1] = 2;
    o.groups = 2;
    o.bias = false;
    int64_t xg[5] = {1, 3, 5, 3, 4};
    conv_case(3, 4, 6, &o, 5, xg);
    int64_t xu[4] = {3, 5, 3, 4}; /* one unbatched sample */
    conv_case(3, 4, 6, &o, 4, xu);
    /* Groups with >= 4 channels per group take the direct kernels: more outputs
     * than inputs per group, then fewer (the flipped weights of dx differ). */
    bp_conv_opts gr = bp_conv_defaults();
    gr.mode = &train;
    gr.kernel_size[0] = gr.kernel_size[1] = gr.kernel_size[2] = 3;
    gr.groups = 2;
    int64_t x8[5] = {1, 3, 3, 4, 8}, x16[5] = {1, 3, 3, 4, 16};
    conv_case(3, 8, 16, &gr, 5, x8);
    conv_case(3, 16, 8, &gr, 5, x16);
}

static void test_conv1d_2d(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_conv_opts o = bp_conv_defaults();
    o.mode = &train;
    o.kernel_size[0] = 3;
    o.stride[0] = 2;
    int64_t x1[3] = {2, 7, 3};
    conv_case(1, 3, 2, &o, 3, x1);
    o.kernel_size[1] = 2;
    o.dilation[0] = 2;
    int64_t x2[4] = {2, 6, 4, 3};
    conv_case(2, 3, 4, &o, 4, x2);
}

/* Pools, Dense and a Sequential of them: gradients against finite differences.
 * (Max pooling is checked on inputs without ties, where it is differentiable.) */
static void test_pool_dense_sequential(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_pool_opts po = {.kernel_size = {2, 3, 2}, .stride = {2, 1, 2}, .pad_lo = {1, 0, 0}, .pad_hi = {0, 1, 1}};
    int64_t xs[5] = {2, 5, 4, 3, 2};
    bp_node *n;
    BP_OK_OR_FAIL(bp_maxpool_new(&n, 3, &po));
    bp_tensor *x = random_tensor(5, xs, 31, 1.0, 0.0);
    check_layer(n, false, x);
    bp_node_free(n);
    BP_OK_OR_FAIL(bp_avgpool_new(&n, 3, &po));
    check_layer(n, false, x);
    bp_node_free(n);
    int target[3] = {2, 3, 2};
    BP_OK_OR_FAIL(bp_adaptive_avgpool_new(&n, 3, target, NULL, NULL));
    check_layer(n, false, x);
    bp_node_free(n);

    bp_conv_opts co = bp_conv_defaults();
    co.mode = &train;
    co.kernel_size[0] = co.kernel_size[1] = co.kernel_size[2] = 2;
    bp_dense_opts dn = bp_dense_defaults();
    dn.mode = &train;
    bp_node *kids[5];
    BP_OK_OR_FAIL(bp_conv3d_new(&kids[0], 2, 3, &co));
    BP_OK_OR_FAIL(bp_activation_new(&kids[1], &bp_tanh_class, 0, &train, NULL));
    BP_OK_OR_FAIL(bp_avgpool_new(&kids[2], 3, &(bp_pool_opts){.kernel_size = {2, 2, 1}}));
    BP_OK_OR_FAIL(bp_flatten_new(&kids[3], 0, -1, &train, NULL));
    BP_OK_OR_FAIL(bp_dense_new(&kids[4], 2 * 2 * 3 * 3, 4, &dn));
    BP_OK_OR_FAIL(bp_sequential_new(&n, 5, kids, &train, NULL));
    for (int i = 0; i < 5; i++) bp_node_free(kids[i]);
    check_layer(n, false, x);
    bp_node_free(n);
    bp_tensor_free(x);
}

/* Conv -> BatchNorm+ReLU -> MaxPool on an intermediate a = 1.5 x that a
 * second op (0.5 a) also reads. Backward runs the ops in reverse order, so
 * with the second op recorded first, Conv is the first to reach a's gradient
 * buffer and receives it fresh (uninitialised, to be written); recorded after
 * Conv, it has already added to the buffer and Conv must accumulate. BN and
 * the pool always get fresh buffers here; order 2 also feeds Conv's output
 * to BN twice through bn(c) + c, so BN's buffer is shared. Gradcheck proves
 * every variant. */
typedef struct chain {
    bp_node *conv, *bn, *pool;
    int order;
} chain;

static bp_status run_chain(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    chain *c = user;
    bp_tensor *a = NULL, *u = NULL, *cv = NULL, *h = NULL, *h2 = NULL, *p = NULL, *s1 = NULL, *s2 = NULL;
    bp_status st = bp_mul_scalar(&a, in[0], 1.5);
    if (!st && c->order != 1) st = bp_mul_scalar(&u, a, 0.5);
    if (!st) st = bp_node_update(c->conv, a, &cv);
    if (!st && c->order == 1) st = bp_mul_scalar(&u, a, 0.5);
    if (!st) st = bp__bn_relu_pool_run(c->bn, NULL, cv, &h);
    if (!st && c->order == 2) {
        st = bp_add(&h2, h, cv);
        bp_tensor_free(h);
        h = h2;
    }
    if (!st) st = bp_node_update(c->pool, h, &p);
    if (!st) st = bp_sum(&s1, p, 0, NULL, false);
    if (!st) st = bp_sum(&s2, u, 0, NULL, false);
    if (!st) st = bp_add(out, s1, s2);
    bp_tensor *all[] = {a, u, cv, h, p, s1, s2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) bp_tensor_free(all[i]);
    return st;
}

static void test_shared_intermediates(void **state)
{
    (void)state;
    bp_mode train = bp_training_mode(2);
    bp_conv_opts co = bp_conv_defaults();
    co.mode = &train;
    co.kernel_size[0] = co.kernel_size[1] = co.kernel_size[2] = 3;
    bp_pool_opts po = {.kernel_size = {2, 2, 2}, .mode = &train};
    bp_share_save_fit(true);
    /* 2 input channels: Conv's dx on GEMM + col2im; 4: on the direct kernel */
    for (int cin = 2; cin <= 4; cin += 2)
        for (int order = 0; order < 3; order++) {
            int64_t xs[5] = {2, 4, 3, 4, cin};
            bp_tensor *x = random_tensor(5, xs, 41, 1.0, 0.0);
            chain c = {.order = order};
            BP_OK_OR_FAIL(bp_conv3d_new(&c.conv, cin, 4, &co));
            BP_OK_OR_FAIL(bp_batchnorm3d_new(&c.bn, 4, NULL));
            BP_OK_OR_FAIL(bp_maxpool_new(&c.pool, 3, &po));
            bp_conv *cv = bp_conv_cast(c.conv);
            bp_batchnorm *bn = bp_batchnorm_cast(c.bn);
            for (int i = 0; i < 4; i++) bp_tensor_set(bn->bias->value, i, 0.3 - 0.2 * i); /* some units off */
            bp_tensor *in[5] = {x, cv->w->value, cv->b->value, bn->bias->value, bn->scale->value};
            bp_gradcheck_report rep;
            bp_status st = bp_gradcheck(run_chain, &c, 5, in, NULL, &rep);
            if (st) fail_msg("cin %d order %d: %s", cin, order, bp_last_error());
            if (!rep.passed) fail_msg("cin %d order %d: gradcheck failed", cin, order);
            assert_true(rep.n_checked >= x->numel);
            bp_node_free(c.conv);
            bp_node_free(c.bn);
            bp_node_free(c.pool);
            bp_tensor_free(x);
        }
}

/* The fused BatchNorm3d+ReLU+MaxPool3d, fitting on batch statistics, with
 * disjoint windows (one gap, one uncovered input) and the parameters. */
typedef struct fused_case {
    bp_node *bn, *pool;
} fused_case;

static bp_status run_fused(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    fused_case *f = user;
    return bp__bn_relu_pool_run(f->bn, f->pool, in[0], out);
}

static void test_bn_relu_maxpool_fused(void **state)
{
    (void)state;
    fused_case f;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&f.bn, 3, NULL));
    BP_OK_OR_FAIL(bp_maxpool_new(&f.pool, 3, &(bp_pool_opts){.kernel_size = {2, 1, 2}, .stride = {2, 2, 3}}));
    bp_batchnorm *bn = bp_batchnorm_cast(f.bn);
    for (int c = 0; c < 3; c++) {
        bp_tensor_set(bn->scale->value, c, c == 1 ? -0.7 : 0.6 + 0.3 * c);
        bp_tensor_set(bn->bias->value, c, 0.2 - 0.15 * c);
    }
    bp_share_save_fit(true);
    int64_t xs[5] = {2, 5, 3, 6, 3};
    bp_tensor *x = random_tensor(5, xs, 53, 1.0, 0.0);
    bp_tensor *in[3] = {x, bn->scale->value, bn->bias->value};
    bp_gradcheck_report rep;
    bp_status st = bp_gradcheck(run_fused, &f, 3, in, NULL, &rep);
    if (st) fail_msg("%s", bp_last_error());
    assert_true(rep.passed);
    assert_true(rep.n_checked >= x->numel);
    bp_tensor_free(x);
    bp_node_free(f.bn);
    bp_node_free(f.pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_batchnorm_fit_and_eval, setup),
        cmocka_unit_test_setup(test_batchnorm_1d_2d_custom_axis, setup),
        cmocka_unit_test_setup(test_conv3d, setup),
        cmocka_unit_test_setup(test_conv1d_2d, setup),
        cmocka_unit_test_setup(test_pool_dense_sequential, setup),
        cmocka_unit_test_setup(test_shared_intermediates, setup),
        cmocka_unit_test_setup(test_bn_relu_maxpool_fused, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
