/* tests/test_bn_relu_pool.c — the fused BatchNorm+ReLU+MaxPool path (bp__bn_relu_pool_run, under the
 * BnReluPool block and Sequential) against the
 * two steps it fuses (BatchNorm+ReLU, then the MaxPool node):
 * output and running statistics bit for bit, dx, dscale and dbias to float32
 * rounding of differently ordered sums; gradients both accumulated into a
 * leaf's gradient and written into a fresh buffer; the cases it hands back
 * to the two steps (eval, overlapping or padded windows, an average pool);
 * its errors. Then the kernels under it (bp__bn_relu_maxpool_forward_train and
 * _backward_train) called directly on shapes big enough for their OpenMP
 * path: bit for bit the same at 1 and 2 threads, against a plain forward and
 * a float64 backward written here, and each of their errors. The float64
 * gradient check is in test_layers_f64.c. */
#include "bp_test.h"
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>
#include <bpc/bn_relu_pool.h>
#include <bpc/dense.h>
#include <bpc/state.h>
#include "../layers/batchnorm_internal.h"
#include <bpc/ops.h>
#include <bpc/pool.h>

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_share_clear();
    return 0;
}

typedef struct side {
    bp_node *bn;
    bp_tensor *x, *gx, *y;
} side;

/* seed 0: x from {-1, 0, 1, 2}, so that windows hold ties above zero (the
 * first position must take the gradient); otherwise normal values. */
static void make_side(side *s, int64_t C, const int64_t *xs, uint64_t seed)
{
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&s->bn, C, &o));
    bp_batchnorm *bn = bp_batchnorm_cast(s->bn);
    for (int64_t c = 0; c < C; c++) {
        bp_tensor_set(bn->scale->value, c, 0.5 + 0.1 * (double)(c % 7) - (c % 5 == 3 ? 1.2 : 0)); /* some negative */
        bp_tensor_set(bn->bias->value, c, 0.2 * (double)(c % 3) - 0.2);
    }
    BP_OK_OR_FAIL(bp_tensor_new(&s->x, BP_REAL_DTYPE, 5, xs));
    BP_OK_OR_FAIL(bp_tensor_new(&s->gx, BP_REAL_DTYPE, 5, xs));
    bp_rng r;
    bp_rng_seed(&r, seed);
    for (int64_t i = 0; i < s->x->numel; i++) {
        bp_tensor_set(s->x, i, seed ? bp_rng_normal(&r) * 2 + 0.5 : (double)((i * 7919) % 4) - 1);
        bp_tensor_set(s->gx, i, 0.01 * (double)(i % 3));
    }
    BP_OK_OR_FAIL(bp_ag_make_leaf(s->x, s->gx));
}

static void free_side(side *s)
{
    bp_tensor_free(s->y);
    bp_tensor_free(s->x);
    bp_tensor_free(s->gx);
    bp_node_free(s->bn);
}

static void expect_same(const char *what, const bp_tensor *a, const bp_tensor *b)
{
    assert_int_equal(a->numel, b->numel);
    for (int64_t i = 0; i < a->numel; i++)
        if (memcmp((const bp_real *)a->data + i, (const bp_real *)b->data + i, sizeof(bp_real)))
            fail_msg("%s[%lld]: %.9g vs %.9g", what, (long long)i, bp_tensor_get(a, i), bp_tensor_get(b, i));
}

/* |a - b| <= tol * max|b| over the tensor: sums of many terms in another order. */
static void expect_close(const char *what, const bp_tensor *a, const bp_tensor *b, double tol)
{
    assert_int_equal(a->numel, b->numel);
    double scale = 0;
    for (int64_t i = 0; i < b->numel; i++) scale = fmax(scale, fabs(bp_tensor_get(b, i)));
    for (int64_t i = 0; i < a->numel; i++)
        if (!(fabs(bp_tensor_get(a, i) - bp_tensor_get(b, i)) <= tol * scale))
            fail_msg("%s[%lld]: %.9g vs %.9g (max |value| %.3g)", what, (long long)i, bp_tensor_get(a, i),
                     bp_tensor_get(b, i), scale);
}

/* One comparison: fused on side f, two steps on side u, same pool node.
 * fresh: the BN input is 1*x (a fresh gradient buffer) instead of the leaf. */
static void compare(bp_node *pool, int64_t C, const int64_t *xs, bool fit, bool fresh, uint64_t seed)
{
    side f, u;
    make_side(&f, C, xs, seed);
    make_side(&u, C, xs, seed);
    bp_share_save_fit(fit);
    bp_tensor *fin = fresh ? NULL : bp_tensor_retain(f.x), *uin = fresh ? NULL : bp_tensor_retain(u.x), *h;
    if (fresh) {
        BP_OK_OR_FAIL(bp_mul_scalar(&fin, f.x, 1.0));
        BP_OK_OR_FAIL(bp_mul_scalar(&uin, u.x, 1.0));
    }
    BP_OK_OR_FAIL(bp__bn_relu_pool_run(f.bn, pool, fin, &f.y));
    BP_OK_OR_FAIL(bp__bn_relu_pool_run(u.bn, NULL, uin, &h));
    BP_OK_OR_FAIL(bp_node_update(pool, h, &u.y));
    bp_tensor_free(h);
    expect_same("y", f.y, u.y);
    bp_batchnorm *bf = bp_batchnorm_cast(f.bn), *bu = bp_batchnorm_cast(u.bn);
    expect_same("running_mean", bf->running_mean->value, bu->running_mean->value);
    expect_same("running_var", bf->running_var->value, bu->running_var->value);
    bp_tensor *dy;
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, f.y->ndim, f.y->shape));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, 0.1 * (double)(i % 11) - 0.4);
    BP_OK_OR_FAIL(bp_backward_many(2, (bp_tensor *[]){f.y, u.y}, (const bp_tensor *[]){dy, dy}));
    expect_close("dx", f.gx, u.gx, 2e-5);
    expect_close("dscale", bf->scale->grad, bu->scale->grad, 2e-5);
    expect_close("dbias", bf->bias->grad, bu->bias->grad, 2e-5);
    bp_tensor_free(dy);
    bp_tensor_free(fin);
    bp_tensor_free(uin);
    free_side(&f);
    free_side(&u);
}

static bp_node *maxpool(int k0, int k1, int k2, int s0, int s1, int s2, int hi2)
{
    bp_node *p;
    BP_OK_OR_FAIL(bp_maxpool_new(&p, 3, &(bp_pool_opts){.kernel_size = {k0, k1, k2}, .stride = {s0, s1, s2},
                                                         .pad_hi = {0, 0, hi2}}));
    return p;
}

static void test_fused_matches_two_steps(void **state)
{
    (void)state;
    /* 19 channels: a full vector run and a 3-channel tail; odd sides leave inputs no window covers */
    const int64_t xa[5] = {2, 5, 6, 7, 19}, xb[5] = {3, 4, 4, 4, 1}, xc[5] = {2, 4, 6, 8, 32};
    bp_node *p2 = maxpool(2, 2, 2, 2, 2, 2, 0), *pgap = maxpool(2, 1, 2, 3, 2, 3, 1);
    for (int fresh = 0; fresh < 2; fresh++) {
        compare(p2, 19, xa, true, fresh, 17);
        compare(p2, 19, xa, true, fresh, 0); /* ties */
        compare(pgap, 19, xa, true, fresh, 17); /* gaps between windows, a clipped last window */
        compare(p2, 1, xb, true, fresh, 17);
        compare(p2, 32, xc, true, fresh, 17);
    }
    bp_node_free(p2);
    bp_node_free(pgap);
}

/* Eval mode, overlapping or low-padded windows and an average pool take the
 * two-step path: the same numbers as calling the two steps. */
static void test_falls_back_to_two_steps(void **state)
{
    (void)state;
    const int64_t xa[5] = {2, 5, 6, 7, 19};
    bp_node *p2 = maxpool(2, 2, 2, 2, 2, 2, 0), *overlap = maxpool(3, 2, 3, 2, 1, 2, 0), *lowpad, *avg;
    BP_OK_OR_FAIL(bp_maxpool_new(&lowpad, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}, .pad_lo = {1, 0, 0}}));
    BP_OK_OR_FAIL(bp_avgpool_new(&avg, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}}));
    compare(p2, 19, xa, false, false, 17);
    compare(overlap, 19, xa, true, false, 17);
    compare(lowpad, 19, xa, true, true, 17);
    compare(avg, 19, xa, true, false, 17);
    bp_node_free(p2);
    bp_node_free(overlap);
    bp_node_free(lowpad);
    bp_node_free(avg);
}

/* ------------------------------------------------ the block node and Sequential */

/* The state_dict's keys, flattened to "a.b.c" and joined by spaces. */
static void flat_keys(const bp_dict *d, const char *prefix, char *out, size_t cap)
{
    for (size_t i = 0; i < bp_dict_len(d); i++) {
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", bp_dict_key(d, i));
        bp_dict *sub = bp_dict_sub(d, i);
        if (sub)
            flat_keys(sub, key, out, cap);
        else {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? " " : "", key);
        }
    }
}

static void keys_of(bp_node *n, char *out, size_t cap)
{
    bp_dict *d;
    BP_OK_OR_FAIL(bp_node_state_dict(n, &d));
    out[0] = 0;
    flat_keys(d, "", out, cap);
    bp_dict_free(d);
}

enum { RUN_CHILDREN, RUN_SEQUENTIAL, RUN_BLOCK };

/* pool(relu(bn(x))) on side s, run as the three children one by one, as a
 * Sequential of them, or as the BnReluPool block over them. */
static void run_three(side *s, bp_node *pool, int how, char *keys, size_t cap)
{
    bp_node *relu, *outer = NULL;
    BP_OK_OR_FAIL(bp_activation_new(&relu, &bp_relu_class, 0.0, NULL, NULL));
    if (how == RUN_CHILDREN) {
        bp_tensor *h, *r;
        BP_OK_OR_FAIL(bp_node_update(s->bn, s->x, &h));
        BP_OK_OR_FAIL(bp_node_update(relu, h, &r));
        BP_OK_OR_FAIL(bp_node_update(pool, r, &s->y));
        bp_tensor_free(h);
        bp_tensor_free(r);
    } else {
        if (how == RUN_SEQUENTIAL)
            BP_OK_OR_FAIL(bp_sequential_new(&outer, 3, (bp_node *[]){s->bn, relu, pool}, NULL, NULL));
        else
            BP_OK_OR_FAIL(bp_bn_relu_pool_new(&outer, s->bn, relu, pool, NULL, NULL));
        BP_OK_OR_FAIL(bp_node_update(outer, s->x, &s->y));
        if (keys) keys_of(outer, keys, cap);
        bp_node_free(outer);
    }
    bp_node_free(relu);
}

/* Sequential and the block against the children run one by one: output and
 * running statistics bit for bit, gradients to float32 rounding of sums in
 * another order; in fit mode with disjoint windows (fused), and in the cases
 * that are not fused (eval, overlapping windows, an average pool in a
 * Sequential, a 2-D BatchNorm and pool). */
static void compare_three(bp_node *pool, bp_node *(*make_bn)(int64_t), int64_t C, const int64_t *xs, int nd,
                          bool fit, int how)
{
    side f, u;
    make_side(&f, C, xs, 17);
    make_side(&u, C, xs, 17);
    if (make_bn) { /* another BatchNorm: same parameters, other rank */
        bp_node_free(f.bn);
        bp_node_free(u.bn);
        f.bn = make_bn(C);
        u.bn = make_bn(C);
        for (bp_tensor **t = (bp_tensor *[]){f.x, f.gx, u.x, u.gx, NULL}; *t; t++) {
            (*t)->ndim = nd; /* (B, H, W*D, C): the same data seen as 4-D */
            (*t)->shape[2] *= (*t)->shape[3];
            (*t)->shape[3] = (*t)->shape[4];
            (*t)->shape[4] = 1;
        }
    }
    bp_share_save_fit(fit);
    run_three(&f, pool, how, NULL, 0);
    run_three(&u, pool, RUN_CHILDREN, NULL, 0);
    expect_same("y", f.y, u.y);
    bp_batchnorm *bf = bp_batchnorm_cast(f.bn), *bu = bp_batchnorm_cast(u.bn);
    expect_same("running_mean", bf->running_mean->value, bu->running_mean->value);
    expect_same("running_var", bf->running_var->value, bu->running_var->value);
    bp_tensor *dy;
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, f.y->ndim, f.y->shape));
    for (int64_t i = 0; i < dy->numel; i++) bp_tensor_set(dy, i, 0.1 * (double)(i % 11) - 0.4);
    BP_OK_OR_FAIL(bp_backward_many(2, (bp_tensor *[]){f.y, u.y}, (const bp_tensor *[]){dy, dy}));
    expect_close("dx", f.gx, u.gx, 2e-5);
    expect_close("dscale", bf->scale->grad, bu->scale->grad, 2e-5);
    expect_close("dbias", bf->bias->grad, bu->bias->grad, 2e-5);
    bp_tensor_free(dy);
    free_side(&f);
    free_side(&u);
}

static bp_node *bn2d(int64_t C)
{
    bp_node *n;
    BP_OK_OR_FAIL(bp_batchnorm2d_new(&n, C, NULL));
    bp_batchnorm *bn = bp_batchnorm_cast(n);
    for (int64_t c = 0; c < C; c++) { /* as make_side */
        bp_tensor_set(bn->scale->value, c, 0.5 + 0.1 * (double)(c % 7) - (c % 5 == 3 ? 1.2 : 0));
        bp_tensor_set(bn->bias->value, c, 0.2 * (double)(c % 3) - 0.2);
    }
    return n;
}

static void test_block_and_sequential(void **state)
{
    (void)state;
    const int64_t xa[5] = {2, 5, 6, 7, 19}, x4[5] = {2, 4, 6, 4, 5};
    bp_node *p2 = maxpool(2, 2, 2, 2, 2, 2, 0), *overlap = maxpool(3, 2, 3, 2, 1, 2, 0), *avg, *p2d;
    BP_OK_OR_FAIL(bp_avgpool_new(&avg, 3, &(bp_pool_opts){.kernel_size = {2, 2, 2}}));
    BP_OK_OR_FAIL(bp_maxpool_new(&p2d, 2, &(bp_pool_opts){.kernel_size = {2, 2}}));
    for (int how = RUN_SEQUENTIAL; how <= RUN_BLOCK; how++) {
        compare_three(p2, NULL, 19, xa, 5, true, how);      /* fused */
        compare_three(p2, NULL, 19, xa, 5, false, how);     /* eval: BatchNorm+ReLU, then the pool */
        compare_three(overlap, NULL, 19, xa, 5, true, how); /* overlapping windows: not fused */
        compare_three(p2d, bn2d, 5, x4, 4, true, how);      /* 2-D: BatchNorm+ReLU, then the pool */
    }
    compare_three(avg, NULL, 19, xa, 5, true, RUN_SEQUENTIAL); /* not a MaxPool: the children one by one */

    /* the keys are those of the children, fused or not, in a Sequential or the block */
    side s;
    char keys[1024];
    make_side(&s, 4, (const int64_t[5]){2, 2, 2, 2, 4}, 17);
    bp_share_save_fit(true);
    run_three(&s, p2, RUN_SEQUENTIAL, keys, sizeof keys);
    char want[1024] = "";
    {
        bp_node *relu, *seq;
        BP_OK_OR_FAIL(bp_activation_new(&relu, &bp_relu_class, 0.0, NULL, NULL));
        BP_OK_OR_FAIL(bp_sequential_new(&seq, 3, (bp_node *[]){s.bn, relu, p2}, NULL, NULL));
        keys_of(seq, want, sizeof want); /* the same tree, never updated */
        bp_node_free(seq);
        bp_node_free(relu);
    }
    print_message("Sequential keys: %s\n", keys);
    assert_string_equal(keys, want);
    assert_non_null(strstr(keys, "running_mean"));
    bp_tensor_free(s.y);
    s.y = NULL;
    run_three(&s, p2, RUN_BLOCK, keys, sizeof keys);
    assert_string_equal(keys, want); /* keys go by node name: the block adds none */
    free_side(&s);
    bp_node_free(p2);
    bp_node_free(overlap);
    bp_node_free(avg);
    bp_node_free(p2d);
}

/* ------------------------------------------------ the kernels, called directly */

#define PAR_MIN 32768 /* BN_PAR_MIN in layers/batchnorm_internal.h: from here on the kernels go parallel */

static void *buf(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

static int64_t pool_in(const bp__bn_pool3d *g) { return g->B * g->in[0] * g->in[1] * g->in[2]; }
static int64_t pool_out(const bp__bn_pool3d *g) { return g->B * g->out[0] * g->out[1] * g->out[2]; }

/* What one run of the two kernels wrote. */
typedef struct kout {
    bp_real *y, *xa, *mean, *invstd, *var, *dx, *ds, *db;
    int32_t *arg;
} kout;

static void free_kout(kout *o)
{
    free(o->y);
    free(o->xa);
    free(o->mean);
    free(o->invstd);
    free(o->var);
    free(o->dx);
    free(o->ds);
    free(o->db);
    free(o->arg);
}

/* Forward then backward at `threads` OpenMP threads. The outputs start as
 * 0xFF bytes (NaN, arg -1) so that one left unwritten shows; dscale and
 * dbias start at ds0 and db0 (they accumulate), or are not asked for. */
static void run_kernels(kout *o, const bp__bn_pool3d *g, int64_t C, const bp_real *x, const bp_real *dy,
                        const bp_real *scale, const bp_real *bias, const bp_real *ds0, const bp_real *db0,
                        bool want_var, int threads, void *work)
{
    omp_set_num_threads(threads);
    assert_int_equal(omp_get_max_threads(), threads);
    const size_t n = (size_t)(pool_in(g) * C), nq = (size_t)(pool_out(g) * C), rc = sizeof(bp_real) * (size_t)C;
    *o = (kout){.y = buf(sizeof(bp_real) * nq), .xa = buf(sizeof(bp_real) * nq), .arg = buf(sizeof(int32_t) * nq),
                .mean = buf(rc), .invstd = buf(rc), .var = want_var ? buf(rc) : NULL,
                .dx = buf(sizeof(bp_real) * n), .ds = ds0 ? buf(rc) : NULL, .db = db0 ? buf(rc) : NULL};
    memset(o->y, 0xFF, sizeof(bp_real) * nq);
    memset(o->xa, 0xFF, sizeof(bp_real) * nq);
    memset(o->arg, 0xFF, sizeof(int32_t) * nq);
    memset(o->dx, 0xFF, sizeof(bp_real) * n);
    if (ds0) memcpy(o->ds, ds0, rc);
    if (db0) memcpy(o->db, db0, rc);
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_forward_train(o->y, o->arg, o->xa, o->mean, o->invstd, o->var, x, scale, bias, g,
                                                   C, 1e-5, work));
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_backward_train(o->dx, o->ds, o->db, dy, o->arg, o->xa, x, o->mean, o->invstd,
                                                    scale, bias, g, C, work));
}

static void same_reals(const char *what, const bp_real *a, const bp_real *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(bp_real)))
            fail_msg("%s[%lld]: %.9g vs %.9g", what, (long long)i, (double)a[i], (double)b[i]);
}

static void same_ints(const char *what, const int32_t *a, const int32_t *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) fail_msg("%s[%lld]: %d vs %d", what, (long long)i, (int)a[i], (int)b[i]);
}

/* expect_close for raw arrays against a float64 reference. */
static void close_reals(const char *what, const bp_real *a, const double *b, int64_t n, double tol)
{
    double scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    assert_true(scale > 0);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol * scale))
            fail_msg("%s[%lld]: %.9g vs %.9g (max |value| %.3g)", what, (long long)i, (double)a[i], b[i], scale);
}

/* The forward as the header defines it, from the kernel's mean and invstd:
 * bn(x) = (x - mean)*(invstd*scale) + bias, the expression and rounding order
 * of bn_affine, then ReLU as v < 0 ? 0 : v, then the first maximum of each
 * window in (i0, i1, i2) order; arg is its flat position in the sample and xa
 * the input there. The library and this file are both ISO C11 (no GNU
 * extensions), where GCC does not contract a*b + c into an FMA, so these are
 * the kernel's float operations and y must match to the bit. *ties counts
 * the later values that equal their window's running maximum above 0. */
static void ref_forward(bp_real *y, int32_t *arg, bp_real *xa, int64_t *ties, const bp__bn_pool3d *g, int64_t C,
                        const bp_real *x, const bp_real *mean, const bp_real *invstd, const bp_real *scale,
                        const bp_real *bias)
{
    const int64_t per_in = g->in[0] * g->in[1] * g->in[2];
    *ties = 0;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t o0 = 0; o0 < g->out[0]; o0++)
            for (int64_t o1 = 0; o1 < g->out[1]; o1++)
                for (int64_t o2 = 0; o2 < g->out[2]; o2++)
                    for (int64_t c = 0; c < C; c++) {
                        const int64_t q = (((b * g->out[0] + o0) * g->out[1] + o1) * g->out[2] + o2) * C + c;
                        const bp_real a = scale ? invstd[c] * scale[c] : invstd[c], bb = bias ? bias[c] : 0;
                        bp_real best = 0;
                        int32_t at = -1;
                        for (int64_t i0 = o0 * g->s[0]; i0 < o0 * g->s[0] + g->k[0] && i0 < g->in[0]; i0++)
                            for (int64_t i1 = o1 * g->s[1]; i1 < o1 * g->s[1] + g->k[1] && i1 < g->in[1]; i1++)
                                for (int64_t i2 = o2 * g->s[2]; i2 < o2 * g->s[2] + g->k[2] && i2 < g->in[2];
                                     i2++) {
                                    const int32_t p = (int32_t)((i0 * g->in[1] + i1) * g->in[2] + i2);
                                    bp_real v = (x[(b * per_in + p) * C + c] - mean[c]) * a + bb;
                                    v = v < 0 ? (bp_real)0 : v;
                                    if (at < 0 || v > best) {
                                        best = v;
                                        at = p;
                                    } else if (v == best && v > 0) {
                                        (*ties)++;
                                    }
                                }
                        y[q] = best;
                        arg[q] = at;
                        xa[q] = x[(b * per_in + at) * C + c];
                    }
}

/* The backward in float64 from the definitions: dz = dy at each window's
 * maximum (arg) where the pooled value y > 0, 0 elsewhere; then BatchNorm's
 * backward through the batch statistics with the kernel's mean and invstd:
 *   xhat = (x - mean)*invstd, dx = (dz - sum(dz)/M - xhat*sum(dz*xhat)/M)*invstd*scale,
 *   dscale = ds0 + sum(dz*xhat), dbias = db0 + sum(dz). */
static void ref_backward(double *dx, double *ds, double *db, const bp__bn_pool3d *g, int64_t C, const bp_real *x,
                         const bp_real *dy, const int32_t *arg, const bp_real *y, const bp_real *mean,
                         const bp_real *invstd, const bp_real *scale, const bp_real *ds0, const bp_real *db0)
{
    const int64_t M = pool_in(g), per_in = M / g->B, per_out = pool_out(g) / g->B;
    double *dz = calloc((size_t)(M * C), sizeof(double));
    assert_non_null(dz);
    for (int64_t q = 0; q < pool_out(g); q++)
        for (int64_t c = 0; c < C; c++)
            if (y[q * C + c] > 0) dz[((q / per_out) * per_in + arg[q * C + c]) * C + c] += (double)dy[q * C + c];
    for (int64_t c = 0; c < C; c++) {
        const double m = (double)mean[c], is = (double)invstd[c], sc = scale ? (double)scale[c] : 1.0;
        double s1 = 0, s2 = 0;
        for (int64_t i = 0; i < M; i++) {
            s1 += dz[i * C + c];
            s2 += dz[i * C + c] * ((double)x[i * C + c] - m) * is;
        }
        for (int64_t i = 0; i < M; i++) {
            const double xhat = ((double)x[i * C + c] - m) * is;
            dx[i * C + c] = (dz[i * C + c] - s1 / (double)M - xhat * s2 / (double)M) * is * sc;
        }
        ds[c] = (ds0 ? (double)ds0[c] : 0) + s2;
        db[c] = (db0 ? (double)db0[c] : 0) + s1;
    }
    free(dz);
}

/* Both kernels on geometry g with C channels, at 1 thread (the kernels' own
 * workspace) and at 2 (the caller's, dirty): every output bit for bit the
 * same; y, arg and xa equal to ref_forward; mean within 2e-5 of the channel's
 * standard deviation and var, invstd within 2e-5 relative of float64
 * statistics (float32 partial sums inside blocks); dx, dscale, dbias within
 * 2e-5 of the largest value of ref_backward (as compare() above: float32
 * rounding of sums in another order).
 * affine: random scale (some negative) and bias, parameter gradients
 * accumulated onto nonzero values; else scale, bias, var, dscale, dbias NULL.
 * x per channel is a shuffle of M evenly spaced values, spread/M >= 7e-5
 * apart (over 100 float32 ulp of |x| <= 5), so no two inputs of a channel
 * normalise to the same value: the only ties are windows where ReLU zeroes
 * everything, which must go to the first position (ref_forward counts any
 * other and there must be none). */
static void check_kernels(const bp__bn_pool3d *g, int64_t C, bool affine, uint64_t seed)
{
    const int64_t M = pool_in(g), Q = pool_out(g), n = M * C, nq = Q * C;
    bp_rng r;
    bp_rng_seed(&r, seed);
    bp_real *x = buf(sizeof(bp_real) * (size_t)n), *dy = buf(sizeof(bp_real) * (size_t)nq);
    int64_t *perm = buf(sizeof(int64_t) * (size_t)M);
    for (int64_t c = 0; c < C; c++) {
        const double shift = 0.5 * (double)(c % 5) - 1.0 + 3.0 * (double)(c == 2), spread = 2.0 + (double)(c % 4);
        for (int64_t i = 0; i < M; i++) perm[i] = i;
        for (int64_t i = M - 1; i > 0; i--) {
            int64_t j = (int64_t)bp_rng_below(&r, (uint64_t)i + 1), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int64_t i = 0; i < M; i++)
            x[i * C + c] = (bp_real)(shift + spread * (((double)perm[i] + 0.5) / (double)M - 0.5));
    }
    free(perm);
    for (int64_t i = 0; i < nq; i++) dy[i] = (bp_real)bp_rng_normal(&r);
    bp_real *scale = NULL, *bias = NULL, *ds0 = NULL, *db0 = NULL;
    if (affine) {
        scale = buf(sizeof(bp_real) * (size_t)C);
        bias = buf(sizeof(bp_real) * (size_t)C);
        ds0 = buf(sizeof(bp_real) * (size_t)C);
        db0 = buf(sizeof(bp_real) * (size_t)C);
        for (int64_t c = 0; c < C; c++) {
            scale[c] = (bp_real)(0.5 + 0.1 * (double)(c % 7) - (c % 5 == 3 ? 1.2 : 0)); /* some negative */
            bias[c] = (bp_real)(0.2 * (double)(c % 3) - 0.2 - (c % 8 == 5 ? 1.5 : 0)); /* some mostly cut by ReLU */
            ds0[c] = (bp_real)(0.25 - 0.05 * (double)c);
            db0[c] = (bp_real)(0.1 * (double)c - 0.5);
        }
    }
    const size_t wbytes = bp__bn_workspace_size(M, C);
    assert_true(wbytes > 0);
    void *work = buf(wbytes);
    memset(work, 0xA5, wbytes);

    kout o[2];
    const int threads0 = omp_get_max_threads();
    run_kernels(&o[0], g, C, x, dy, scale, bias, ds0, db0, affine, 1, NULL);
    run_kernels(&o[1], g, C, x, dy, scale, bias, ds0, db0, affine, 2, work);
    omp_set_num_threads(threads0); /* as OMP_NUM_THREADS left it */
    same_reals("y 1 vs 2 threads", o[0].y, o[1].y, nq);
    same_ints("arg 1 vs 2 threads", o[0].arg, o[1].arg, nq);
    same_reals("xa 1 vs 2 threads", o[0].xa, o[1].xa, nq);
    same_reals("mean 1 vs 2 threads", o[0].mean, o[1].mean, C);
    same_reals("invstd 1 vs 2 threads", o[0].invstd, o[1].invstd, C);
    same_reals("dx 1 vs 2 threads", o[0].dx, o[1].dx, n);
    if (affine) {
        same_reals("var 1 vs 2 threads", o[0].var, o[1].var, C);
        same_reals("dscale 1 vs 2 threads", o[0].ds, o[1].ds, C);
        same_reals("dbias 1 vs 2 threads", o[0].db, o[1].db, C);
    }

    /* the forward */
    bp_real *yr = buf(sizeof(bp_real) * (size_t)nq), *xar = buf(sizeof(bp_real) * (size_t)nq);
    int32_t *argr = buf(sizeof(int32_t) * (size_t)nq);
    int64_t ties, on = 0;
    ref_forward(yr, argr, xar, &ties, g, C, x, o[0].mean, o[0].invstd, scale, bias);
    assert_int_equal(ties, 0);
    same_reals("y vs reference", o[0].y, yr, nq);
    same_ints("arg vs reference", o[0].arg, argr, nq);
    same_reals("xa vs reference", o[0].xa, xar, nq);
    for (int64_t i = 0; i < nq; i++) on += yr[i] > 0;
    assert_true(on > nq / 4 && on < nq); /* both sides of the ReLU are exercised */
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < M; i++) m += (double)x[i * C + c];
        m /= (double)M;
        for (int64_t i = 0; i < M; i++) v += ((double)x[i * C + c] - m) * ((double)x[i * C + c] - m);
        v /= (double)M;
        BP_ASSERT_CLOSE(o[0].mean[c], m, 2e-5 * sqrt(v), 0);
        BP_ASSERT_CLOSE(o[0].invstd[c], 1.0 / sqrt(v + 1e-5), 0, 2e-5);
        if (affine) BP_ASSERT_CLOSE(o[0].var[c], v, 0, 2e-5);
    }

    /* the backward */
    double *dxr = buf(sizeof(double) * (size_t)n), *dsr = buf(sizeof(double) * (size_t)C),
           *dbr = buf(sizeof(double) * (size_t)C);
    ref_backward(dxr, dsr, dbr, g, C, x, dy, argr, yr, o[0].mean, o[0].invstd, scale, ds0, db0);
    close_reals("dx vs float64", o[0].dx, dxr, n, 2e-5);
    if (affine) {
        close_reals("dscale vs float64", o[0].ds, dsr, C, 2e-5);
        close_reals("dbias vs float64", o[0].db, dbr, C, 2e-5);
    }

    free(dxr);
    free(dsr);
    free(dbr);
    free(yr);
    free(xar);
    free(argr);
    free_kout(&o[0]);
    free_kout(&o[1]);
    free(work);
    free(x);
    free(dy);
    free(scale);
    free(bias);
    free(ds0);
    free(db0);
}

static void test_kernels_direct(void **state)
{
    (void)state;
    /* 19 channels (a full vector run and a tail), 2x2x2 windows tiling the input */
    const bp__bn_pool3d tiled = {.B = 2, .in = {24, 24, 24}, .out = {12, 12, 12}, .k = {2, 2, 2}, .s = {2, 2, 2}};
    /* 32 channels (two full runs), odd sides: the last plane, row and column are in no window */
    const bp__bn_pool3d odd = {.B = 2, .in = {25, 24, 23}, .out = {12, 12, 11}, .k = {2, 2, 2}, .s = {2, 2, 2}};
    /* 5 channels (tail only), gaps between windows (k < s) and a last window
     * clipped by the input's end ([21, 23) of 22), no affine parameters */
    const bp__bn_pool3d gaps = {.B = 3, .in = {12, 13, 22}, .out = {4, 7, 8}, .k = {2, 1, 2}, .s = {3, 2, 3}};
    /* small (one thread either way): windows larger than the input along dims 0 and 2 */
    const bp__bn_pool3d big_win = {.B = 9, .in = {3, 4, 3}, .out = {1, 2, 1}, .k = {4, 2, 4}, .s = {4, 2, 4}};
    assert_true(pool_in(&tiled) * 19 >= 16 * PAR_MIN);
    assert_true(pool_in(&odd) * 32 >= 16 * PAR_MIN);
    assert_true(pool_in(&gaps) * 5 >= PAR_MIN);
    check_kernels(&tiled, 19, true, 11);
    check_kernels(&odd, 32, true, 12);
    check_kernels(&gaps, 5, false, 13);
    check_kernels(&big_win, 8, true, 14);
}

/* Every check of the two kernels, each message naming the function and the
 * offending argument or value; a non-finite statistic writes nothing; the
 * backward takes a single row (the forward's M >= 2 is about statistics). */
static void test_kernel_errors(void **state)
{
    (void)state;
    enum { C = 3, M = 16, Q = 2 };
    const char *F = "bp__bn_relu_maxpool_forward_train: ", *Bk = "bp__bn_relu_maxpool_backward_train: ";
    bp_real x[M * C], y[Q * C], xa[Q * C], dy[Q * C], dx[M * C], mean[C], invstd[C], var[C], sc[C], bi[C];
    int32_t arg[Q * C];
    for (int i = 0; i < M * C; i++) x[i] = (bp_real)((i * 5) % 7 - 3);
    for (int i = 0; i < Q * C; i++) dy[i] = (bp_real)(0.5 * (i % 3) - 0.4);
    for (int c = 0; c < C; c++) {
        sc[c] = (bp_real)(1 + c);
        bi[c] = (bp_real)(0.5 - c);
    }
    const bp__bn_pool3d ok = {.B = 2, .in = {2, 2, 2}, .out = {1, 1, 1}, .k = {2, 2, 2}, .s = {2, 2, 2}};
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_forward_train(y, arg, xa, mean, invstd, var, x, sc, bi, &ok, C, 1e-5, NULL));
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_backward_train(dx, NULL, NULL, dy, arg, xa, x, mean, invstd, sc, bi, &ok, C, NULL));

#define FWD(Y, A, XA, MEAN, IS, X, G, CC, EPS, W)                                                                     \
    bp__bn_relu_maxpool_forward_train(Y, A, XA, MEAN, IS, var, X, sc, bi, G, CC, EPS, W)
#define BWD(DX, DY, A, XA, X, MEAN, IS, G, CC, W)                                                                     \
    bp__bn_relu_maxpool_backward_train(DX, NULL, NULL, DY, A, XA, X, MEAN, IS, sc, bi, G, CC, W)
    BP_EXPECT_ERR(FWD(NULL, arg, xa, mean, invstd, x, &ok, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: y is NULL");
    BP_EXPECT_ERR(FWD(y, NULL, xa, mean, invstd, x, &ok, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: arg is NULL");
    BP_EXPECT_ERR(FWD(y, arg, NULL, mean, invstd, x, &ok, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: xa is NULL");
    BP_EXPECT_ERR(FWD(y, arg, xa, NULL, invstd, x, &ok, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: mean is NULL");
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, NULL, x, &ok, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: invstd is NULL");
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, NULL, &ok, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: x is NULL");
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, NULL, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: pg is NULL");
    BP_EXPECT_ERR(BWD(NULL, dy, arg, xa, x, mean, invstd, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: dx is NULL");
    BP_EXPECT_ERR(BWD(dx, NULL, arg, xa, x, mean, invstd, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: dy is NULL");
    BP_EXPECT_ERR(BWD(dx, dy, NULL, xa, x, mean, invstd, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: arg is NULL");
    BP_EXPECT_ERR(BWD(dx, dy, arg, NULL, x, mean, invstd, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: xa is NULL");
    BP_EXPECT_ERR(BWD(dx, dy, arg, xa, NULL, mean, invstd, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: x is NULL");
    BP_EXPECT_ERR(BWD(dx, dy, arg, xa, x, NULL, invstd, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: mean is NULL");
    BP_EXPECT_ERR(BWD(dx, dy, arg, xa, x, mean, NULL, &ok, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: invstd is NULL");
    BP_EXPECT_ERR(BWD(dx, dy, arg, xa, x, mean, invstd, NULL, C, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: pg is NULL");

    /* check_pool, through both kernels; one bad geometry per call */
    bp__bn_pool3d bad[8];
    const char *why[8];
    for (int i = 0; i < 8; i++) bad[i] = ok;
    bad[0].B = 0, why[0] = "expected B >= 1, got 0";
    bad[1].in[0] = 0, why[1] = "dim 0: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, "
                               "(out-1)*s < in), got in 0, k 2, s 2, out 1";
    bad[2].k[1] = 0, why[2] = "dim 1: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, "
                              "(out-1)*s < in), got in 2, k 0, s 2, out 1";
    bad[3].s[2] = 1, why[3] = "dim 2: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, "
                              "(out-1)*s < in), got in 2, k 2, s 1, out 1"; /* overlapping windows */
    bad[4].out[0] = 0, why[4] = "dim 0: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, "
                                "(out-1)*s < in), got in 2, k 2, s 2, out 0";
    bad[5].out[1] = 2, why[5] = "dim 1: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, "
                                "(out-1)*s < in), got in 2, k 2, s 2, out 2"; /* window 1 starts past the end */
    bad[6].in[2] = 4, bad[6].out[2] = 3, bad[6].k[2] = 1, bad[6].s[2] = 2;
    why[6] = "dim 2: expected disjoint windows inside the input (in >= 1, 1 <= k <= s, (out-1)*s < in), "
             "got in 4, k 1, s 2, out 3"; /* (out-1)*s == in */
    bad[7] = (bp__bn_pool3d){.B = 1, .in = {2048, 1024, 1025}, .out = {1, 1, 1}, .k = {1, 1, 1}, .s = {1, 1, 1}};
    why[7] = "more than 2^31 positions per sample"; /* never read: the check comes first */
    for (int i = 0; i < 8; i++) {
        bp_status st = i == 0 || i == 7 ? BP_ESHAPE : BP_EINVAL;
        char msg[256];
        snprintf(msg, sizeof msg, "%s%s", F, why[i]);
        BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, &bad[i], C, 1e-5, NULL), st, msg);
        snprintf(msg, sizeof msg, "%s%s", Bk, why[i]);
        BP_EXPECT_ERR(BWD(dx, dy, arg, xa, x, mean, invstd, &bad[i], C, NULL), st, msg);
    }

    /* channels, rows, eps and workspace */
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, &ok, 0, 1e-5, NULL), BP_ESHAPE,
                  "bp__bn_relu_maxpool_forward_train: expected C >= 1 channels, got 0");
    BP_EXPECT_ERR(BWD(dx, dy, arg, xa, x, mean, invstd, &ok, -1, NULL), BP_ESHAPE,
                  "bp__bn_relu_maxpool_backward_train: expected C >= 1 channels, got -1");
    const bp__bn_pool3d one = {.B = 1, .in = {1, 1, 1}, .out = {1, 1, 1}, .k = {1, 1, 1}, .s = {1, 1, 1}};
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, &one, C, 1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: expected more than 1 value per channel when training, got 1");
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, &ok, C, -1e-5, NULL), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: expected a finite eps >= 0, got -1e-05");
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, &ok, C, NAN, NULL), BP_EINVAL, "expected a finite eps >= 0");
    double work[64];
    void *odd_work = (char *)work + 4;
    BP_EXPECT_ERR(FWD(y, arg, xa, mean, invstd, x, &ok, C, 1e-5, odd_work), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: work must be 8-byte aligned");
    BP_EXPECT_ERR(BWD(dx, dy, arg, xa, x, mean, invstd, &ok, C, odd_work), BP_EINVAL,
                  "bp__bn_relu_maxpool_backward_train: work must be 8-byte aligned");

    /* a non-finite statistic: channel 1 holds an Inf; nothing is written */
    bp_real xs[M * C], ys[Q * C], xas[Q * C], ms[C], iss[C], vs[C];
    int32_t as[Q * C];
    memcpy(xs, x, sizeof xs);
    xs[5 * C + 1] = (bp_real)INFINITY;
    for (int i = 0; i < Q * C; i++) ys[i] = xas[i] = 7, as[i] = -7;
    for (int c = 0; c < C; c++) ms[c] = iss[c] = vs[c] = 7;
    BP_EXPECT_ERR(bp__bn_relu_maxpool_forward_train(ys, as, xas, ms, iss, vs, xs, sc, bi, &ok, C, 1e-5, NULL),
                  BP_ENUMERIC, "bp__bn_relu_maxpool_forward_train: channel 1 has a non-finite batch statistic");
    for (int i = 0; i < Q * C; i++) {
        assert_true(ys[i] == 7 && xas[i] == 7);
        assert_int_equal(as[i], -7);
    }
    for (int c = 0; c < C; c++) assert_true(ms[c] == 7 && iss[c] == 7 && vs[c] == 7);

    /* backward needs only M >= 1: one row, x at the mean and bias 0.5, so dz
     * = dy and the mean's share takes all of it back: dx = dy - dy = 0 */
    bp_real x1[C] = {3, 3, 3}, m1[C] = {3, 3, 3}, is1[C] = {1, 1, 1}, b1[C] = {0.5f, 0.5f, 0.5f};
    bp_real dy1[C] = {0.25f, -1.5f, 2}, dx1[C] = {9, 9, 9}, xa1[C] = {3, 3, 3}, ds1[C] = {0, 0, 0}, db1[C] = {1, 1, 1};
    int32_t a1[C] = {0, 0, 0};
    BP_OK_OR_FAIL(bp__bn_relu_maxpool_backward_train(dx1, ds1, db1, dy1, a1, xa1, x1, m1, is1, NULL, b1, &one, C, NULL));
    for (int c = 0; c < C; c++) {
        assert_true(dx1[c] == 0 && ds1[c] == 0);
        assert_true(db1[c] == 1 + dy1[c]);
    }
#undef FWD
#undef BWD
}

static void test_errors(void **state)
{
    (void)state;
    bp_node *bn, *pool = maxpool(2, 2, 2, 2, 2, 2, 0);
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&bn, 4, NULL));
    bp_share_save_fit(true);
    int64_t s4[4] = {2, 4, 4, 4}, s5[5] = {2, 4, 4, 4, 3}, one[5] = {1, 1, 1, 1, 4};
    bp_tensor *x4, *x5, *x1, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x4, BP_REAL_DTYPE, 4, s4));
    BP_OK_OR_FAIL(bp_tensor_new(&x5, BP_REAL_DTYPE, 5, s5));
    BP_OK_OR_FAIL(bp_tensor_new(&x1, BP_REAL_DTYPE, 5, one));
    BP_EXPECT_ERR(bp__bn_relu_pool_run(pool, pool, x5, &y), BP_EINVAL, "is not a BatchNorm layer");
    bp_node *blk = NULL;
    BP_EXPECT_ERR(bp_bn_relu_pool_new(&blk, bn, NULL, pool, NULL, NULL), BP_EINVAL, "relu must be a ReLU, got NULL");
    BP_EXPECT_ERR(bp_bn_relu_pool_new(&blk, pool, pool, pool, NULL, NULL), BP_EINVAL,
                  "bn must be a BatchNorm1d/2d/3d, got MaxPool3d");
    BP_EXPECT_ERR(bp__bn_relu_pool_run(bn, pool, x4, &y), BP_ESHAPE, "expected 5D input");
    BP_EXPECT_ERR(bp__bn_relu_pool_run(bn, pool, x5, &y), BP_ESHAPE, "expected 4 channels");
    BP_EXPECT_ERR(bp__bn_relu_pool_run(bn, pool, NULL, &y), BP_EINVAL, "input is NULL");
    BP_EXPECT_ERR(bp__bn_relu_pool_run(bn, pool, x1, NULL), BP_EINVAL, "out is NULL");
    /* one value per channel while fitting: BatchNorm's own error. The 2x2x2
     * window is larger than the 1x1x1 input, so the layer hands x1 to the two
     * steps and bp__bn_relu_forward_train raises it; with a 1x1x1 window the
     * fused kernel takes x1 and raises it itself. Neither moves the running
     * statistics. */
    BP_EXPECT_ERR(bp__bn_relu_pool_run(bn, pool, x1, &y), BP_EINVAL,
                  "bp__bn_relu_forward_train: expected more than 1 value per channel");
    assert_null(y);
    bp_node *pool1 = maxpool(1, 1, 1, 1, 1, 1, 0);
    BP_EXPECT_ERR(bp__bn_relu_pool_run(bn, pool1, x1, &y), BP_EINVAL,
                  "bp__bn_relu_maxpool_forward_train: expected more than 1 value per channel");
    assert_null(y);
    bp_batchnorm *b = bp_batchnorm_cast(bn);
    for (int64_t c = 0; c < 4; c++) {
        assert_true(bp_tensor_get(b->running_mean->value, c) == 0);
        assert_true(bp_tensor_get(b->running_var->value, c) == 1);
    }
    bp_node_free(pool1);
    bp_tensor_free(x4);
    bp_tensor_free(x5);
    bp_tensor_free(x1);
    bp_node_free(bn);
    bp_node_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fused_matches_two_steps, setup),
        cmocka_unit_test_setup(test_falls_back_to_two_steps, setup),
        cmocka_unit_test_setup(test_block_and_sequential, setup),
        cmocka_unit_test_setup(test_errors, setup),
        cmocka_unit_test_setup(test_kernels_direct, setup),
        cmocka_unit_test_setup(test_kernel_errors, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
