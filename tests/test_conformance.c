/* tests/test_conformance.c — one conformance harness for every layer.
 * BPC_TEST_BOTH_FLAVOURS: built as test_conformance (float32) and
 * test_conformance_f64 (float64).
 *
 * One row per layer configuration (the table `rows` below): its constructor
 * with options, the fixture case, the input shape, the float32 tolerance and
 * what the layer promises. For every row the harness registers the cases
 *   <row>.fixture     forward output, input gradient, parameter gradients and
 *                     updated state against PyTorch's float64 numbers
 *                     (tests/gen_conformance.py writes tests/data/conformance_layers.txt)
 *   <row>.gradcheck   float64 only: the backward against central finite
 *                     differences (bp_gradcheck), over x and every TrainVar
 *   <row>.bad_rank    an input of the wrong rank is BP_ESHAPE naming the rank
 *   <row>.state_dict  state_dict() loaded into a freshly built layer of the same
 *                     config (other random init) gives the same outputs, bit for bit
 *   <row>.threads     where promised: 1 and 2 OpenMP threads give the same bits
 * and rows whose behaviour is random (Dropout while fitting) check a
 * property instead of a fixture (<row>.property).
 * Only the public API is used (constructors, bp_node_update, vars and
 * state_dict, bp_gradcheck), so the harness survives a layer's refactor.
 *
 * One case alone:  BP_TEST_FILTER='conv3d_same.*' ./test_conformance
 * (see tests/bp_test.h). Adding a layer: docs/adding-a-layer.md. */
#include "bp_test.h"
#include "fixture.h"
#include <stdlib.h>
#include <omp.h>
#include <bpc/bpc.h>

/* Tolerance against the float64 fixture in the float64 flavour: every layer
 * computes the same math in another order, so only rounding (~1e-15) differs. */
#define F64_ATOL 1e-10
#define F64_RTOL 1e-9

/* ------------------------------------------------------------ the table */

/* What a constructor gets: mode, name and random stream vary per check. */
typedef struct conf_make {
    const bp_mode *mode;
    const char *name; /* NULL: automatic */
    bp_rng *rng;
    uint64_t seed;    /* for layers that seed their own generator (Dropout) */
} conf_make;

typedef bp_status (*conf_ctor)(bp_node **out, const conf_make *m);
struct conf_row;
typedef void (*conf_property)(const struct conf_row *row);

enum {
    CONF_FIT = 1,           /* run with shared fit = true (else evaluation) */
    CONF_THREADS_OUT = 2,   /* y, dx and state: same bits with 1 and 2 threads */
    CONF_THREADS_PARAMS = 4, /* ... and the parameter gradients too */
    CONF_ERR_UNNAMED = 8     /* known gap: the rank error comes from an op and does not name the node */
};

typedef struct conf_row {
    const char *name;       /* test prefix and fixture case */
    conf_ctor make;
    int ndim;
    int64_t shape[6];       /* the input (the fixture's x must have it) */
    double atol, rtol;      /* float32 against the fixture */
    unsigned flags;
    int bad_ndim;           /* a rank the layer refuses; -1: every rank is fine */
    const char *bad_needle; /* expected in the message; NULL: "expected <ndim>D input (got <bad>D input" */
    int t_ndim;             /* the input of the threads check, big enough to be split; 0: shape */
    int64_t t_shape[6];
    conf_property property; /* instead of a fixture */
} conf_row;

static const int ONE3[3] = {1, 1, 1};

static bp_status mk_conv(bp_node **out, const conf_make *m, int nsp, int64_t cin, int64_t cout, const int *k,
                         const int *s, const int *d, int groups, bp_padding_kind pad, const int *lo, const int *hi,
                         bool bias)
{
    bp_conv_opts o = bp_conv_defaults();
    o.mode = m->mode;
    o.name = m->name;
    o.rng = m->rng;
    o.groups = groups;
    o.padding = pad;
    o.bias = bias;
    for (int i = 0; i < nsp; i++) {
        o.kernel_size[i] = k[i];
        o.stride[i] = s[i];
        o.dilation[i] = d[i];
        if (pad == BP_PAD_EXPLICIT) {
            o.pad_lo[i] = lo[i];
            o.pad_hi[i] = hi[i];
        }
    }
    return nsp == 1   ? bp_conv1d_new(out, cin, cout, &o)
           : nsp == 2 ? bp_conv2d_new(out, cin, cout, &o)
                      : bp_conv3d_new(out, cin, cout, &o);
}

static bp_status mk_convt(bp_node **out, const conf_make *m, int nsp, int64_t cin, int64_t cout, const int *k,
                          const int *s, const int *d, int groups, bp_padding_kind pad, const int *lo, const int *hi,
                          const int *op, bool bias)
{
    bp_conv_transpose_opts o = bp_conv_transpose_defaults();
    o.mode = m->mode;
    o.name = m->name;
    o.rng = m->rng;
    o.groups = groups;
    o.padding = pad;
    o.bias = bias;
    for (int i = 0; i < nsp; i++) {
        o.kernel_size[i] = k[i];
        o.stride[i] = s[i];
        o.dilation[i] = d[i];
        o.output_padding[i] = op[i];
        if (pad == BP_PAD_EXPLICIT) {
            o.pad_lo[i] = lo[i];
            o.pad_hi[i] = hi[i];
        }
    }
    return nsp == 1   ? bp_conv_transpose1d_new(out, cin, cout, &o)
           : nsp == 2 ? bp_conv_transpose2d_new(out, cin, cout, &o)
                      : bp_conv_transpose3d_new(out, cin, cout, &o);
}

static bp_status mk_bn(bp_node **out, const conf_make *m, int ndim, int64_t C, double momentum, double eps)
{
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.mode = m->mode;
    o.name = m->name;
    o.rng = m->rng;
    o.momentum = momentum;
    o.epsilon = eps;
    return ndim == 3 ? bp_batchnorm1d_new(out, C, &o)
           : ndim == 4 ? bp_batchnorm2d_new(out, C, &o)
                       : bp_batchnorm3d_new(out, C, &o);
}

static bp_status mk_pool(bp_node **out, const conf_make *m, bool max, int nsp, const int *k, const int *s,
                         const int *lo, const int *hi)
{
    bp_pool_opts o = {.mode = m->mode, .name = m->name};
    for (int i = 0; i < nsp; i++) {
        o.kernel_size[i] = k[i];
        o.stride[i] = s[i];
        o.pad_lo[i] = lo ? lo[i] : 0;
        o.pad_hi[i] = hi ? hi[i] : 0;
    }
    return max ? bp_maxpool_new(out, nsp, &o) : bp_avgpool_new(out, nsp, &o);
}

static bp_status mk_layernorm(bp_node **out, const conf_make *m, int n_norm, const int64_t *shape, double eps,
                              bool affine)
{
    bp_layernorm_opts o = bp_layernorm_defaults();
    o.mode = m->mode;
    o.name = m->name;
    o.rng = m->rng;
    o.epsilon = eps;
    o.elementwise_affine = affine;
    /* Random parameters, so that the state_dict round trip carries information
     * even for rows without a fixture assignment. */
    o.scale_initializer = bp_uniform_init(0.5, 1.5);
    o.bias_initializer = bp_normal_init(0.0, 0.3);
    return bp_layernorm_new(out, n_norm, shape, &o);
}

static bp_status mk_groupnorm(bp_node **out, const conf_make *m, int64_t groups, int64_t C, double eps, bool affine,
                              bool instance)
{
    bp_groupnorm_opts o = bp_groupnorm_defaults();
    o.mode = m->mode;
    o.name = m->name;
    o.rng = m->rng;
    o.epsilon = eps;
    o.affine = affine;
    o.scale_initializer = bp_uniform_init(0.5, 1.5);
    o.bias_initializer = bp_normal_init(0.0, 0.3);
    return instance ? bp_instancenorm_new(out, C, &o) : bp_groupnorm_new(out, groups, C, &o);
}

#define CTOR(fn) static bp_status fn(bp_node **out, const conf_make *m)

CTOR(bn1d) { return mk_bn(out, m, 3, 5, 0.9, 1e-5); }
CTOR(bn2d) { return mk_bn(out, m, 4, 3, 0.8, 1e-5); }
CTOR(bn3d) { return mk_bn(out, m, 5, 4, 0.7, 1e-3); }
CTOR(conv1d_same) { return mk_conv(out, m, 1, 3, 4, (int[]){3}, ONE3, ONE3, 1, BP_PAD_SAME, NULL, NULL, true); }
CTOR(conv1d_s2_d2_g2)
{
    return mk_conv(out, m, 1, 4, 6, (int[]){3}, (int[]){2}, (int[]){2}, 2, BP_PAD_VALID, NULL, NULL, true);
}
CTOR(conv2d_same_s2)
{
    return mk_conv(out, m, 2, 3, 5, (int[]){3, 3}, (int[]){2, 2}, ONE3, 1, BP_PAD_SAME, NULL, NULL, true);
}
CTOR(conv2d_pad_g2_nobias)
{
    return mk_conv(out, m, 2, 4, 4, (int[]){2, 3}, ONE3, (int[]){1, 2}, 2, BP_PAD_EXPLICIT, (int[]){1, 0},
                   (int[]){0, 2}, false);
}
CTOR(conv3d_same) { return mk_conv(out, m, 3, 3, 4, (int[]){3, 3, 3}, ONE3, ONE3, 1, BP_PAD_SAME, NULL, NULL, true); }
CTOR(conv3d_strided_g2)
{
    return mk_conv(out, m, 3, 4, 6, (int[]){3, 2, 3}, (int[]){2, 1, 2}, (int[]){1, 2, 1}, 2, BP_PAD_EXPLICIT,
                   (int[]){1, 0, 2}, (int[]){0, 2, 1}, true);
}
CTOR(conv3d_depthwise)
{
    return mk_conv(out, m, 3, 4, 4, (int[]){3, 3, 3}, ONE3, ONE3, 4, BP_PAD_VALID, NULL, NULL, true);
}
static const int ZERO3[3] = {0, 0, 0};
CTOR(convt1d_same_s2)
{
    return mk_convt(out, m, 1, 3, 4, (int[]){2}, (int[]){2}, ONE3, 1, BP_PAD_SAME, NULL, NULL, ZERO3, true);
}
CTOR(convt1d_valid_d2_g2_op1)
{
    return mk_convt(out, m, 1, 4, 6, (int[]){3}, (int[]){2}, (int[]){2}, 2, BP_PAD_VALID, NULL, NULL, (int[]){1},
                    true);
}
CTOR(convt2d_same_k3_s2)
{
    return mk_convt(out, m, 2, 3, 5, (int[]){3, 3}, (int[]){2, 2}, ONE3, 1, BP_PAD_SAME, NULL, NULL, ZERO3, true);
}
CTOR(convt2d_pad_g2_nobias)
{
    return mk_convt(out, m, 2, 4, 6, (int[]){3, 2}, (int[]){1, 2}, (int[]){2, 1}, 2, BP_PAD_EXPLICIT,
                    (int[]){1, 0}, (int[]){3, 1}, (int[]){1, 1}, false);
}
CTOR(convt3d_unet)
{
    return mk_convt(out, m, 3, 4, 3, (int[]){2, 2, 2}, (int[]){2, 2, 2}, ONE3, 1, BP_PAD_VALID, NULL, NULL, ZERO3,
                    true);
}
CTOR(convt3d_strided_g2)
{
    return mk_convt(out, m, 3, 4, 4, (int[]){3, 2, 3}, (int[]){2, 1, 3}, (int[]){1, 2, 1}, 2, BP_PAD_EXPLICIT,
                    (int[]){2, 0, 1}, (int[]){1, 2, 0}, (int[]){1, 1, 2}, true);
}
CTOR(convt3d_same_s1)
{
    return mk_convt(out, m, 3, 3, 4, (int[]){3, 3, 3}, ONE3, ONE3, 1, BP_PAD_SAME, NULL, NULL, ZERO3, true);
}
CTOR(maxpool1d) { return mk_pool(out, m, true, 1, (int[]){3}, (int[]){2}, NULL, NULL); }
CTOR(maxpool2d) { return mk_pool(out, m, true, 2, (int[]){2, 2}, (int[]){0, 0}, NULL, NULL); }
CTOR(maxpool3d) { return mk_pool(out, m, true, 3, (int[]){2, 2, 2}, (int[]){2, 2, 2}, NULL, NULL); }
CTOR(maxpool3d_overlap_pad)
{
    return mk_pool(out, m, true, 3, (int[]){3, 2, 2}, (int[]){2, 1, 2}, (int[]){1, 0, 1}, (int[]){1, 1, 0});
}
CTOR(avgpool1d) { return mk_pool(out, m, false, 1, (int[]){2}, (int[]){1}, NULL, NULL); }
CTOR(avgpool2d_pad) { return mk_pool(out, m, false, 2, (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1}, (int[]){1, 1}); }
CTOR(avgpool3d) { return mk_pool(out, m, false, 3, (int[]){2, 2, 3}, (int[]){2, 2, 1}, NULL, NULL); }
CTOR(adaptive_avgpool1d) { return bp_adaptive_avgpool_new(out, 1, (int[]){3}, m->mode, m->name); }
CTOR(adaptive_avgpool3d) { return bp_adaptive_avgpool_new(out, 3, (int[]){3, 2, 4}, m->mode, m->name); }
CTOR(dense)
{
    bp_dense_opts o = bp_dense_defaults();
    o.mode = m->mode;
    o.name = m->name;
    o.rng = m->rng;
    return bp_dense_new(out, 7, 5, &o);
}
CTOR(dropout) { return bp_dropout_new(out, 0.7, m->seed, m->mode, m->name); }
CTOR(relu) { return bp_activation_new(out, &bp_relu_class, 0, m->mode, m->name); }
CTOR(leaky_relu) { return bp_activation_new(out, &bp_leaky_relu_class, 0.1, m->mode, m->name); }
CTOR(sigmoid) { return bp_activation_new(out, &bp_sigmoid_class, 0, m->mode, m->name); }
CTOR(tanh_layer) { return bp_activation_new(out, &bp_tanh_class, 0, m->mode, m->name); }
CTOR(gelu) { return bp_activation_new(out, &bp_gelu_class, 0, m->mode, m->name); }
CTOR(softmax) { return bp_activation_new(out, &bp_softmax_class, 0, m->mode, m->name); }
CTOR(flatten) { return bp_flatten_new(out, 0, -1, m->mode, m->name); }
/* Sequential(Conv2d(3 -> 4, kernel 3, SAME), ReLU); the children are named
 * after the container, so that two builds under one name share their keys. */
CTOR(sequential_conv_relu)
{
    char cname[64], rname[64];
    conf_make cm = *m;
    if (m->name) {
        snprintf(cname, sizeof cname, "%s_conv", m->name);
        snprintf(rname, sizeof rname, "%s_relu", m->name);
    }
    cm.name = m->name ? cname : NULL;
    bp_node *kids[2] = {NULL, NULL};
    bp_status st = mk_conv(&kids[0], &cm, 2, 3, 4, (int[]){3, 3}, ONE3, ONE3, 1, BP_PAD_SAME, NULL, NULL, true);
    if (!st) st = bp_activation_new(&kids[1], &bp_relu_class, 0, m->mode, m->name ? rname : NULL);
    if (!st) st = bp_sequential_new(out, 2, kids, m->mode, m->name);
    bp_node_free(kids[0]);
    bp_node_free(kids[1]);
    return st;
}
CTOR(layernorm_c) { return mk_layernorm(out, m, 1, (int64_t[]){6}, 1e-5, true); }
CTOR(layernorm_wdc) { return mk_layernorm(out, m, 3, (int64_t[]){3, 4, 5}, 1e-5, true); }
CTOR(layernorm_sample) { return mk_layernorm(out, m, 4, (int64_t[]){2, 3, 4, 5}, 1e-5, true); }
CTOR(layernorm_noaffine) { return mk_layernorm(out, m, 1, (int64_t[]){7}, 1e-3, false); }
CTOR(groupnorm3d_g2) { return mk_groupnorm(out, m, 2, 4, 1e-5, true, false); }
CTOR(instancenorm3d) { return mk_groupnorm(out, m, 3, 3, 1e-5, true, true); }
CTOR(groupnorm1d_g1_noaffine) { return mk_groupnorm(out, m, 1, 6, 1e-3, false, false); }

static void dropout_fit_property(const conf_row *row);

#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), {__VA_ARGS__}
#define BOTH_T (CONF_THREADS_OUT | CONF_THREADS_PARAMS)

/* Tolerances (float32): the fixture inputs are float32 values and the
 * reference is exact to float64, so what is left is float32 rounding of sums
 * of at most a few hundred O(1) terms, < 1e-5 relative; a wrong index or
 * formula moves values by O(1e-2) or more. Normalisations divide by a
 * standard deviation of about 1, which keeps them within 5e-5. */
/* Rows leave the trailing fields they do not need (the threads shape, the
 * property) to their zero defaults. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const conf_row rows[] = {
    /* BatchNorm: bitwise at any thread count (bpc/batchnorm.h), including the
     * running statistics; parallel from 32768 elements. */
    {"bn1d_fit", bn1d, SHAPE(3, 4, 5), 5e-5, 1e-4, CONF_FIT | BOTH_T, 2, NULL, SHAPE(64, 128, 5)},
    {"bn1d_eval", bn1d, SHAPE(3, 4, 5), 5e-5, 1e-4, BOTH_T, 2, NULL, SHAPE(64, 128, 5)},
    {"bn2d_fit", bn2d, SHAPE(2, 3, 4, 3), 5e-5, 1e-4, CONF_FIT | BOTH_T, 3, NULL, SHAPE(4, 64, 64, 3)},
    {"bn2d_eval", bn2d, SHAPE(2, 3, 4, 3), 5e-5, 1e-4, BOTH_T, 3, NULL, SHAPE(4, 64, 64, 3)},
    {"bn3d_fit", bn3d, SHAPE(2, 3, 2, 3, 4), 5e-5, 1e-4, CONF_FIT | BOTH_T, 4, NULL, SHAPE(2, 16, 16, 16, 4)},
    {"bn3d_eval", bn3d, SHAPE(2, 3, 2, 3, 4), 5e-5, 1e-4, BOTH_T, 4, NULL, SHAPE(2, 16, 16, 16, 4)},
    /* Conv: y and dx do not depend on the thread count, dw is summed per
     * thread (bpc/conv.h). Unbatched input is accepted, so the bad rank is
     * two below the batched one. */
    {"conv1d_same", conv1d_same, SHAPE(2, 9, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 1, NULL, SHAPE(8, 64, 3)},
    {"conv1d_s2_d2_g2", conv1d_s2_d2_g2, SHAPE(2, 11, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 1, NULL, SHAPE(8, 65, 4)},
    {"conv2d_same_s2", conv2d_same_s2, SHAPE(2, 7, 6, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 2, NULL,
     SHAPE(4, 17, 16, 3)},
    {"conv2d_pad_g2_nobias", conv2d_pad_g2_nobias, SHAPE(1, 6, 5, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 2, NULL,
     SHAPE(4, 16, 15, 4)},
    {"conv3d_same", conv3d_same, SHAPE(2, 4, 3, 5, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 8, 8, 8, 3)},
    {"conv3d_strided_g2", conv3d_strided_g2, SHAPE(1, 7, 5, 6, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 9, 8, 8, 4)},
    {"conv3d_depthwise", conv3d_depthwise, SHAPE(1, 5, 4, 4, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 8, 8, 8, 4)},
    /* ConvTranspose: Conv's kernels on the adjoint convolution; y and dx do
     * not depend on the thread count, dw is summed per thread
     * (bpc/conv_transpose.h). Unbatched input is accepted. */
    {"convt1d_same_s2", convt1d_same_s2, SHAPE(2, 5, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 1, NULL, SHAPE(8, 64, 3)},
    {"convt1d_valid_d2_g2_op1", convt1d_valid_d2_g2_op1, SHAPE(2, 4, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 1, NULL,
     SHAPE(8, 65, 4)},
    {"convt2d_same_k3_s2", convt2d_same_k3_s2, SHAPE(2, 4, 3, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 2, NULL,
     SHAPE(4, 17, 16, 3)},
    {"convt2d_pad_g2_nobias", convt2d_pad_g2_nobias, SHAPE(1, 4, 3, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 2, NULL,
     SHAPE(4, 16, 15, 4)},
    {"convt3d_unet", convt3d_unet, SHAPE(2, 3, 2, 3, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 8, 8, 8, 4)},
    {"convt3d_strided_g2", convt3d_strided_g2, SHAPE(1, 3, 2, 3, 4), 2e-5, 1e-4, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 8, 7, 8, 4)},
    {"convt3d_same_s1", convt3d_same_s1, SHAPE(1, 3, 3, 2, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 8, 8, 8, 3)},
    /* Pooling: each output and each sample's dx is written by one thread. */
    {"maxpool1d", maxpool1d, SHAPE(2, 9, 3), 1e-6, 1e-6, CONF_THREADS_OUT, 1, NULL, SHAPE(8, 65, 3)},
    {"maxpool2d", maxpool2d, SHAPE(2, 6, 5, 3), 1e-6, 1e-6, CONF_THREADS_OUT, 2, NULL, SHAPE(4, 16, 15, 3)},
    {"maxpool3d", maxpool3d, SHAPE(2, 4, 4, 4, 3), 1e-6, 1e-6, CONF_THREADS_OUT, 3, NULL, SHAPE(2, 8, 8, 8, 3)},
    {"maxpool3d_overlap_pad", maxpool3d_overlap_pad, SHAPE(1, 5, 5, 4, 2), 1e-6, 1e-6, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 9, 9, 8, 2)},
    {"avgpool1d", avgpool1d, SHAPE(2, 8, 3), 1e-6, 1e-5, CONF_THREADS_OUT, 1, NULL, SHAPE(8, 64, 3)},
    {"avgpool2d_pad", avgpool2d_pad, SHAPE(2, 6, 6, 2), 1e-6, 1e-5, CONF_THREADS_OUT, 2, NULL, SHAPE(4, 16, 16, 2)},
    {"avgpool3d", avgpool3d, SHAPE(1, 6, 4, 5, 3), 1e-6, 1e-5, CONF_THREADS_OUT, 3, NULL, SHAPE(2, 8, 8, 9, 3)},
    {"adaptive_avgpool1d", adaptive_avgpool1d, SHAPE(2, 7, 3), 1e-6, 1e-5, CONF_THREADS_OUT, 1, NULL,
     SHAPE(8, 64, 3)},
    {"adaptive_avgpool3d", adaptive_avgpool3d, SHAPE(1, 7, 5, 6, 3), 1e-6, 1e-5, CONF_THREADS_OUT, 3, NULL,
     SHAPE(2, 9, 8, 8, 3)},
    /* Dense: any rank >= 1 ending in num_in; no thread promise (OpenBLAS
     * tiles by the row split). */
    {"dense", dense, SHAPE(4, 3, 7), 2e-5, 1e-4, 0, 0, "got ()"},
    {"dropout_eval", dropout, SHAPE(3, 4, 5), 0, 0, 0, -1, NULL},
    {"dropout_fit", dropout, SHAPE(64, 64), 0, 0, CONF_FIT, -1, NULL, 0, {0}, dropout_fit_property},
    /* Element-wise layers take any rank (Softmax: at least one axis). */
    {"relu", relu, SHAPE(3, 4, 5), 1e-6, 1e-6, CONF_THREADS_OUT, -1, NULL, SHAPE(8, 64, 64)},
    {"leaky_relu", leaky_relu, SHAPE(3, 4, 5), 1e-6, 1e-6, CONF_THREADS_OUT, -1, NULL, SHAPE(8, 64, 64)},
    {"sigmoid", sigmoid, SHAPE(3, 4, 5), 1e-6, 1e-5, CONF_THREADS_OUT, -1, NULL, SHAPE(8, 64, 64)},
    {"tanh", tanh_layer, SHAPE(3, 4, 5), 1e-6, 1e-5, CONF_THREADS_OUT, -1, NULL, SHAPE(8, 64, 64)},
    {"gelu", gelu, SHAPE(3, 4, 5), 1e-6, 1e-5, CONF_THREADS_OUT, -1, NULL, SHAPE(8, 64, 64)},
    {"softmax", softmax, SHAPE(3, 4, 5), 1e-6, 1e-5, CONF_THREADS_OUT | CONF_ERR_UNNAMED, 0, "got a 0-d tensor",
     SHAPE(8, 64, 64)},
    {"flatten", flatten, SHAPE(2, 3, 4, 5), 0, 0, 0, 1, "of a sample with 0 dims"},
    {"sequential_conv_relu", sequential_conv_relu, SHAPE(2, 5, 6, 3), 2e-5, 1e-4, CONF_THREADS_OUT, 2, NULL,
     SHAPE(4, 16, 16, 3)},
    /* LayerNorm: rows in parallel, column sums in a fixed order (layernorm_ref.c). */
    {"layernorm_c", layernorm_c, SHAPE(2, 3, 4, 6), 5e-5, 1e-4, BOTH_T, 0, "expected at least 1D input (got 0D input)",
     SHAPE(256, 32, 6)},
    {"layernorm_wdc", layernorm_wdc, SHAPE(2, 3, 4, 5), 5e-5, 1e-4, BOTH_T, 2,
     "expected at least 3D input (got 2D input)", SHAPE(600, 3, 4, 5)},
    /* A whole (B,H,W,D,C) sample: N = 120, two column blocks of the parameter sums. */
    {"layernorm_sample", layernorm_sample, SHAPE(2, 2, 3, 4, 5), 5e-5, 1e-4, BOTH_T, 3,
     "expected at least 4D input (got 3D input)", SHAPE(300, 2, 3, 4, 5)},
    {"layernorm_noaffine", layernorm_noaffine, SHAPE(3, 2, 7), 5e-5, 1e-4, CONF_THREADS_OUT, 0,
     "expected at least 1D input (got 0D input)", SHAPE(64, 128, 7)},
    /* GroupNorm / InstanceNorm: plain loops on one thread (groupnorm_ref.c),
     * so bitwise at any thread count; (B, ..., C) of any rank >= 2. */
    {"groupnorm3d_g2", groupnorm3d_g2, SHAPE(2, 3, 2, 3, 4), 5e-5, 1e-4, BOTH_T, 1,
     "expected at least 2D input (B, ..., C) (got 1D input)", SHAPE(2, 16, 16, 16, 4)},
    {"instancenorm3d", instancenorm3d, SHAPE(1, 4, 3, 2, 3), 5e-5, 1e-4, BOTH_T, 1,
     "expected at least 2D input (B, ..., C) (got 1D input)", SHAPE(2, 16, 16, 16, 3)},
    {"groupnorm1d_g1_noaffine", groupnorm1d_g1_noaffine, SHAPE(3, 5, 6), 5e-5, 1e-4, CONF_THREADS_OUT, 1,
     "expected at least 2D input (B, ..., C) (got 1D input)", SHAPE(8, 128, 6)},
};
#pragma GCC diagnostic pop
#define N_ROWS (sizeof rows / sizeof rows[0])

/* ---------------------------------------------------------- helpers */

static fx_file *fx;
static int threads_at_start; /* OMP_NUM_THREADS's, restored before each case */

static bool fx_has(const char *row, const char *what)
{
    char key[192];
    snprintf(key, sizeof key, "%s.%s", row, what);
    for (size_t i = 0; fx && i < fx->n; i++)
        if (strcmp(fx->t[i].name, key) == 0) return true;
    return false;
}

static const fx_tensor *fx_need(const char *row, const char *what)
{
    char key[192];
    snprintf(key, sizeof key, "%s.%s", row, what);
    const fx_tensor *f = fx_get(fx, key);
    if (!f) fail_msg("fixture lacks %s (rerun tests/gen_conformance.py)", key);
    return f;
}

static bp_tensor *tensor_of(const fx_tensor *f)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, f->ndim, f->shape));
    for (int64_t i = 0; i < f->numel; i++) bp_tensor_set(t, i, f->data[i]);
    return t;
}

/* got against the fixture tensor <row>.<what>, same numel (the var layouts
 * are bpc's, so shapes match up to the var's own shape). */
static void expect_close(const conf_row *row, const char *what, const bp_tensor *got)
{
    const fx_tensor *f = fx_need(row->name, what);
#ifdef BP_REAL_DOUBLE
    const double atol = F64_ATOL, rtol = F64_RTOL;
#else
    const double atol = row->atol, rtol = row->rtol;
#endif
    if (got->numel != f->numel) fail_msg("%s.%s: %lld values, PyTorch %lld", row->name, what,
                                         (long long)got->numel, (long long)f->numel);
    for (int64_t i = 0; i < f->numel; i++) {
        double a = bp_tensor_get(got, i), b = f->data[i];
        if (!(fabs(a - b) <= atol + rtol * fabs(b)))
            fail_msg("%s.%s[%lld] = %.9g, PyTorch %.9g (atol %g rtol %g)", row->name, what, (long long)i, a, b, atol,
                     rtol);
    }
}

static bp_tensor *random_tensor(int ndim, const int64_t *shape, uint64_t seed)
{
    bp_tensor *t;
    bp_rng r;
    bp_rng_seed(&r, seed);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, bp_rng_normal(&r));
    return t;
}

/* The row's input: the fixture's x (checked against the table's shape), or
 * a seeded random tensor for rows without a fixture. */
static bp_tensor *row_input(const conf_row *row)
{
    if (row->property) return random_tensor(row->ndim, row->shape, 11);
    const fx_tensor *f = fx_need(row->name, "x");
    if (f->ndim != row->ndim || memcmp(f->shape, row->shape, sizeof(int64_t) * (size_t)row->ndim) != 0)
        fail_msg("%s: the fixture's x has another shape than the table's", row->name);
    return tensor_of(f);
}

static bp_node *build(const conf_row *row, const char *name, uint64_t seed)
{
    bp_mode train = bp_training_mode((int)row->shape[0]);
    bp_rng rng;
    bp_rng_seed(&rng, seed);
    conf_make m = {.mode = &train, .name = name, .rng = &rng, .seed = seed};
    bp_node *n = NULL;
    BP_OK_OR_FAIL(row->make(&n, &m));
    return n;
}

static bp_collector *rel_vars(bp_node *n)
{
    bp_collect_opts o = bp_collect_defaults();
    o.method = BP_RELATIVE;
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(n, &o, &c));
    return c;
}

/* Assigns every var that the fixture gives a value (<row>.var.<key>);
 * every TrainVar must have one, or its gradient would not be comparable. */
static void assign_fixture_vars(const conf_row *row, bp_node *n)
{
    bp_collector *vars = rel_vars(n);
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        char what[160];
        snprintf(what, sizeof what, "var.%s", bp_collector_key(vars, i));
        bp_var *v = bp_collector_var(vars, i);
        if (!fx_has(row->name, what)) {
            if (bp_var_is(v, BP_TRAINVAR)) fail_msg("%s: the fixture gives no value for TrainVar %s", row->name, what + 4);
            continue;
        }
        bp_tensor *t = tensor_of(fx_need(row->name, what)), *r;
        if (t->numel != v->value->numel) fail_msg("%s.%s: size differs from the var's", row->name, what);
        BP_OK_OR_FAIL(bp_tensor_reshape(&r, t, v->value->ndim, v->value->shape));
        BP_OK_OR_FAIL(bp_var_assign(v, r));
        bp_tensor_free(r);
        bp_tensor_free(t);
    }
    bp_collector_free(vars);
}

static bool same_bits(const bp_tensor *a, const bp_tensor *b)
{
    return bp_tensor_same_shape(a, b) && a->dtype == b->dtype &&
           memcmp(a->data, b->data, bp_tensor_nbytes(a)) == 0;
}

static int setup(void **state)
{
    (void)state;
    threads_at_start = omp_get_max_threads();
    fx = fx_load("conformance_layers.txt");
    return fx ? 0 : -1;
}

/* Before each case: whatever a failed case left behind (cmocka leaves a
 * failing case in the middle) must not leak into the next one: an open
 * no-grad scope, a recorded graph, a thread count, the shared fit. */

static int reset_case(void **state)
{
    (void)state;
    while (!bp_grad_enabled()) bp_no_grad_end();
    bp_ag_release_graph();
    omp_set_num_threads(threads_at_start);
    bp_share_clear();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fx_free(fx);
    bp_share_clear();
    return 0;
}

/* ---------------------------------------------------------- the checks */

/* Forward, input gradient, TrainVar gradients and updated vars against PyTorch. */
static void check_fixture(void **state)
{
    const conf_row *row = *state;
    bp_node *n = build(row, NULL, 1);
    assign_fixture_vars(row, n);
    bp_share_save_fit(row->flags & CONF_FIT);
    bp_tensor *x = row_input(row), *dy = tensor_of(fx_need(row->name, "dy")), *gx, *y;
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, x->ndim, x->shape));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    expect_close(row, "y", y);
    const fx_tensor *fy = fx_need(row->name, "y");
    if (!bp_tensor_has_shape(y, fy->ndim, fy->shape)) fail_msg("%s: output shape differs from PyTorch's", row->name);
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    expect_close(row, "dx", gx);
    bp_collector *vars = rel_vars(n);
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        char what[160];
        bp_var *v = bp_collector_var(vars, i);
        if (bp_var_is(v, BP_TRAINVAR)) {
            snprintf(what, sizeof what, "grad.%s", bp_collector_key(vars, i));
            expect_close(row, what, v->grad);
        }
        snprintf(what, sizeof what, "after.%s", bp_collector_key(vars, i));
        if (fx_has(row->name, what)) {
            expect_close(row, what, v->value);
        }
    }
    /* A fixture that names vars the layer lacks would silently test less. */
    for (size_t i = 0; i < fx->n; i++) {
        size_t len = strlen(row->name);
        const char *k = fx->t[i].name;
        if (strncmp(k, row->name, len) != 0 || k[len] != '.' || strncmp(k + len + 1, "grad.", 5) != 0) continue;
        if (bp_collector_find(vars, k + len + 6) < 0) fail_msg("%s: the layer has no var %s", row->name, k + len + 6);
    }
    bp_collector_free(vars);
    bp_tensor_free(y);
    bp_tensor_free(dy);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_node_free(n);
}

#ifdef BP_REAL_DOUBLE
/* The layer's update as a function of x and its TrainVars' values; the
 * other vars (running statistics, Dropout's generator) are put back before
 * each call, so every call computes the same function. */
typedef struct gc_ctx {
    bp_node *n;
    size_t n_state;
    bp_var *state[8];
    bp_tensor *saved[8];
} gc_ctx;

static bp_status gc_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    gc_ctx *c = user;
    for (size_t i = 0; i < c->n_state; i++) BP_TRY(bp_var_assign(c->state[i], c->saved[i]));
    return bp_node_update(c->n, in[0], out);
}

static void check_gradcheck(void **state)
{
    const conf_row *row = *state;
    bp_node *n = build(row, NULL, 1);
    if (!row->property) assign_fixture_vars(row, n);
    bp_share_save_fit(row->flags & CONF_FIT);
    bp_collector *vars = rel_vars(n);
    gc_ctx c = {.n = n};
    bp_tensor *x = row_input(row), *in[8] = {x};
    int n_in = 1;
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        bp_var *v = bp_collector_var(vars, i);
        if (bp_var_is(v, BP_TRAINVAR)) {
            assert_true(n_in < 8);
            in[n_in++] = v->value;
        } else {
            assert_true(c.n_state < 8);
            c.state[c.n_state] = v;
            BP_OK_OR_FAIL(bp_tensor_clone(&c.saved[c.n_state++], v->value));
        }
    }
    bp_gradcheck_report rep;
    bp_status st = bp_gradcheck(gc_fn, &c, n_in, in, NULL, &rep);
    if (st) fail_msg("%s: %s", row->name, bp_last_error());
    assert_true(rep.passed);
    assert_true(rep.n_checked >= x->numel);
    for (size_t i = 0; i < c.n_state; i++) bp_tensor_free(c.saved[i]);
    bp_collector_free(vars);
    bp_tensor_free(x);
    bp_node_free(n);
}
#endif

/* An input of the wrong rank: BP_ESHAPE, a message naming the ranks, no output. */
static void check_bad_rank(void **state)
{
    const conf_row *row = *state;
    bp_node *n = build(row, NULL, 1);
    bp_share_save_fit(row->flags & CONF_FIT);
    /* The row's trailing dims (so the channels still fit), 2s in front if longer. */
    int64_t shape[8];
    for (int i = 0; i < row->bad_ndim; i++) {
        int from = row->ndim - row->bad_ndim + i;
        shape[i] = from >= 0 ? row->shape[from] : 2;
    }
    bp_tensor *x;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, row->bad_ndim, shape));
    char needle[96];
    if (row->bad_needle)
        snprintf(needle, sizeof needle, "%s", row->bad_needle);
    else
        snprintf(needle, sizeof needle, "expected %dD input (got %dD input", row->ndim, row->bad_ndim);
    bp_tensor *y = (bp_tensor *)&needle; /* must be reset to NULL */
    BP_EXPECT_ERR(bp_node_update(n, x, &y), BP_ESHAPE, needle);
    assert_null(y);
    /* The message names the layer that refused the input: the node itself or,
     * in a container, the child that checked it. */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", bp_last_error());
    bp_collector *nodes;
    BP_OK_OR_FAIL(bp_node_nodes(n, NULL, &nodes));
    bool named = false;
    for (size_t i = 0; i < bp_collector_len(nodes); i++)
        named = named || strstr(msg, bp_node_name(bp_collector_node(nodes, i))) != NULL;
    bp_collector_free(nodes);
    if (!(row->flags & CONF_ERR_UNNAMED) && !named)
        fail_msg("%s: the message \"%s\" names no node of %s", row->name, msg, bp_node_name(n));
    bp_tensor_free(x);
    bp_node_free(n);
}

/* Outputs in evaluation and, for fitting rows, while fitting. */
static void outputs(const conf_row *row, bp_node *n, bp_tensor *x, bp_tensor **y_eval, bp_tensor **y_fit)
{
    bp_share_save_fit(false);
    BP_OK_OR_FAIL(bp_node_update(n, x, y_eval));
    *y_fit = NULL;
    if (row->flags & CONF_FIT) {
        bp_share_save_fit(true);
        BP_OK_OR_FAIL(bp_node_update(n, x, y_fit));
    }
}

/* Every tensor of a (nested) state dict equal, bit for bit, to the other's;
 * counts the tensors. */
static size_t dicts_equal(const bp_dict *a, const bp_dict *b, bool *equal)
{
    size_t count = 0;
    if (bp_dict_len(a) != bp_dict_len(b)) *equal = false;
    for (size_t i = 0; i < bp_dict_len(a); i++) {
        const char *k = bp_dict_key(a, i);
        if (bp_dict_sub(a, i)) {
            bp_dict *sb = bp_dict_get_dict(b, k);
            if (!sb) {
                *equal = false;
                continue;
            }
            count += dicts_equal(bp_dict_sub(a, i), sb, equal);
        } else {
            bp_tensor *tb = bp_dict_get_tensor(b, k);
            if (!tb || !same_bits(bp_dict_tensor(a, i), tb)) *equal = false;
            count++;
        }
    }
    return count;
}

/* state_dict of a used layer, loaded into a fresh one of the same config
 * (same name, another random init): same state, same outputs. */
static void check_state_dict(void **state)
{
    const conf_row *row = *state;
    bp_no_grad_begin();
    bp_node *a = build(row, row->name, 1);
    if (!row->property) assign_fixture_vars(row, a);
    bp_tensor *x = row_input(row), *warm = NULL;
    if (row->flags & CONF_FIT) { /* moves the state: running statistics, the generator */
        bp_share_save_fit(true);
        BP_OK_OR_FAIL(bp_node_update(a, x, &warm));
        bp_tensor_free(warm);
    }
    bp_dict *sd, *sd_b;
    BP_OK_OR_FAIL(bp_node_state_dict(a, &sd));
    bp_tensor *ya_eval, *ya_fit;
    outputs(row, a, x, &ya_eval, &ya_fit);
    bp_node_free(a);

    bp_node *b = build(row, row->name, 2);
    BP_OK_OR_FAIL(bp_node_state_dict(b, &sd_b));
    bool equal = true;
    size_t n_tensors = dicts_equal(sd, sd_b, &equal);
    if (n_tensors > 0 && equal) fail_msg("%s: a fresh layer already has the saved state; the check proves nothing",
                                         row->name);
    bp_dict_free(sd_b);
    bp_load_result res = {0};
    BP_OK_OR_FAIL(bp_node_load_state_dict(b, sd, false, BP_COMPAT_V2, &res));
    assert_int_equal(res.n_missing, 0);
    assert_int_equal(res.n_unexpected, 0);
    bp_load_result_clear(&res);
    BP_OK_OR_FAIL(bp_node_state_dict(b, &sd_b));
    equal = true;
    assert_int_equal(dicts_equal(sd, sd_b, &equal), n_tensors);
    assert_true(equal);
    bp_tensor *yb_eval, *yb_fit;
    outputs(row, b, x, &yb_eval, &yb_fit);
    assert_true(same_bits(ya_eval, yb_eval));
    if (ya_fit) assert_true(same_bits(ya_fit, yb_fit));
    bp_tensor_free(ya_eval);
    bp_tensor_free(yb_eval);
    bp_tensor_free(ya_fit);
    bp_tensor_free(yb_fit);
    bp_dict_free(sd);
    bp_dict_free(sd_b);
    bp_tensor_free(x);
    bp_node_free(b);
    bp_no_grad_end();
}

/* One forward and backward with `threads` OpenMP threads; returns copies of
 * y, dx, then each var's value and (TrainVars) gradient, in *got. */
static size_t run_threads(const conf_row *row, int threads, bp_tensor **got)
{
    omp_set_num_threads(threads);
    bp_node *n = build(row, NULL, 3);
    bp_share_save_fit(row->flags & CONF_FIT);
    bp_tensor *x = row->t_ndim ? random_tensor(row->t_ndim, row->t_shape, 5) : random_tensor(row->ndim, row->shape, 5);
    bp_tensor *gx, *y, *dy;
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, x->ndim, x->shape));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    dy = random_tensor(y->ndim, y->shape, 6);
    size_t k = 0;
    BP_OK_OR_FAIL(bp_tensor_clone(&got[k++], y));
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    BP_OK_OR_FAIL(bp_tensor_clone(&got[k++], gx));
    bp_collector *vars = rel_vars(n);
    for (size_t i = 0; i < bp_collector_len(vars) && k + 2 <= 16; i++) {
        bp_var *v = bp_collector_var(vars, i);
        BP_OK_OR_FAIL(bp_tensor_clone(&got[k++], v->value));
        if (v->grad && (row->flags & CONF_THREADS_PARAMS)) BP_OK_OR_FAIL(bp_tensor_clone(&got[k++], v->grad));
    }
    bp_collector_free(vars);
    bp_tensor_free(dy);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_node_free(n);
    return k;
}

static void check_threads(void **state)
{
    const conf_row *row = *state;
    int threads0 = omp_get_max_threads();
    bp_tensor *one[16], *two[16];
    size_t n1 = run_threads(row, 1, one), n2 = run_threads(row, 2, two);
    omp_set_num_threads(threads0);
    assert_int_equal(n1, n2);
    for (size_t i = 0; i < n1; i++) {
        if (!same_bits(one[i], two[i])) fail_msg("%s: result %zu differs between 1 and 2 threads", row->name, i);
        bp_tensor_free(one[i]);
        bp_tensor_free(two[i]);
    }
}

/* Dropout while fitting (prob = 0.7 is the KEEP probability): every output is
 * 0 or x / 0.7, the kept fraction is 0.7 within 5 standard deviations, the
 * gradient is dy * mask / 0.7, and the next call draws another mask. */
static void dropout_fit_property(const conf_row *row)
{
    bp_node *n = build(row, NULL, 1);
    bp_share_save_fit(true);
    bp_tensor *x = row_input(row), *gx, *y, *y2, *dy = random_tensor(row->ndim, row->shape, 12);
    BP_OK_OR_FAIL(bp_tensor_new(&gx, BP_REAL_DTYPE, x->ndim, x->shape));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, gx));
    BP_OK_OR_FAIL(bp_node_update(n, x, &y));
    BP_OK_OR_FAIL(bp_backward_with(y, dy));
    const double keep = 0.7;
    int64_t kept = 0;
    for (int64_t i = 0; i < x->numel; i++) {
        double xi = bp_tensor_get(x, i), yi = bp_tensor_get(y, i), gi = bp_tensor_get(gx, i);
        bool k = yi != 0;
        kept += k;
        BP_ASSERT_CLOSE(yi, k ? xi / keep : 0.0, 1e-6, 1e-6);
        BP_ASSERT_CLOSE(gi, k ? bp_tensor_get(dy, i) / keep : 0.0, 1e-6, 1e-6);
    }
    double frac = (double)kept / (double)x->numel, sd = sqrt(keep * (1 - keep) / (double)x->numel);
    if (fabs(frac - keep) > 5 * sd) fail_msg("%s: kept %.4f of the values, expected %.2f +- %.4f", row->name, frac, keep, 5 * sd);
    bp_no_grad_begin();
    BP_OK_OR_FAIL(bp_node_update(n, x, &y2));
    bp_no_grad_end();
    int64_t differ = 0;
    for (int64_t i = 0; i < x->numel; i++) differ += (bp_tensor_get(y, i) != 0) != (bp_tensor_get(y2, i) != 0);
    assert_true(differ > 0);
    bp_tensor_free(y2);
    bp_tensor_free(y);
    bp_tensor_free(dy);
    bp_tensor_free(x);
    bp_tensor_free(gx);
    bp_node_free(n);
}

static void check_property(void **state)
{
    const conf_row *row = *state;
    row->property(row);
}

/* ---------------------------------------------------------- registration */

#define MAX_CASES (N_ROWS * 5)
static struct CMUnitTest cases[MAX_CASES];
static char names[MAX_CASES][96];

static size_t add_case(size_t k, const conf_row *row, const char *check, CMUnitTestFunction fn)
{
    snprintf(names[k], sizeof names[k], "%s.%s", row->name, check);
    cases[k] = (struct CMUnitTest){.name = names[k], .test_func = fn, .setup_func = reset_case,
                                   .initial_state = (void *)row};
    return k + 1;
}

int main(void)
{
    size_t k = 0;
    for (size_t r = 0; r < N_ROWS; r++) {
        const conf_row *row = &rows[r];
        k = row->property ? add_case(k, row, "property", check_property) : add_case(k, row, "fixture", check_fixture);
#ifdef BP_REAL_DOUBLE
        k = add_case(k, row, "gradcheck", check_gradcheck);
#endif
        if (row->bad_ndim >= 0) k = add_case(k, row, "bad_rank", check_bad_rank);
        k = add_case(k, row, "state_dict", check_state_dict);
        if (row->flags & CONF_THREADS_OUT) k = add_case(k, row, "threads", check_threads);
    }
    return bp_run_test_array("conformance_" BP_REAL_NAME, cases, k, setup, teardown);
}
