/* layers/batchnorm.c — the BatchNorm1d/2d/3d nodes: construction, variables,
 * the input check, and update() as a recorded autograd op over the kernels of
 * batchnorm_internal.h (batchnorm_fast.c), with its backward dispatch. Shapes:
 * x is (M, F) once the reduced leading axes are flattened (M = their product)
 * and the kept axes too (F = prod(kept) * C). The fused BatchNorm+ReLU+MaxPool
 * block (bn_relu_pool.c) records its own op on the helpers at the end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/autograd.h>
#include <bpc/batchnorm.h>
#include <bpc/comm.h>
#include "batchnorm_internal.h"
#include "layer_input.h"

static void bn_destroy(bp_node *n);
static bp_status bn_update(bp_node *n, bp_tensor *x, bp_tensor **out);

static const bp_mode_kind bn_modes[] = {BP_BATCHING_MODE, BP_TRAINING_MODE};
static const bp_mode bn_default_mode = {BP_TRAINING_MODE, 1};

#define BN_CLASS(NAME)                                                                    \
    {                                                                                     \
        .name = NAME, .size = sizeof(bp_batchnorm), .supported_modes = bn_modes,          \
        .n_supported_modes = 2, .default_mode = &bn_default_mode, .reads_shared = true,   \
        .update = bn_update, .reset_state = NULL, .clear_input = NULL, .destroy = bn_destroy \
    }

/* BrainPy's Layer.reset_state does nothing: running statistics and parameters
 * survive reset(), hence reset_state NULL above. */
const bp_node_class bp_batchnorm1d_class = BN_CLASS("BatchNorm1d");
const bp_node_class bp_batchnorm2d_class = BN_CLASS("BatchNorm2d");
const bp_node_class bp_batchnorm3d_class = BN_CLASS("BatchNorm3d");

bp_batchnorm_opts bp_batchnorm_defaults(void)
{
    return (bp_batchnorm_opts){
        .epsilon = 1e-5,
        .momentum = 0.99,
        .affine = true,
        .bias_initializer = bp_zero_init(),
        .scale_initializer = bp_one_init(1.0),
    };
}

bp_batchnorm *bp_batchnorm_cast(bp_node *n)
{
    if (n && (n->cls == &bp_batchnorm1d_class || n->cls == &bp_batchnorm2d_class ||
              n->cls == &bp_batchnorm3d_class))
        return (bp_batchnorm *)n;
    return NULL;
}

static void bn_destroy(bp_node *n)
{
    bp_batchnorm *bn = (bp_batchnorm *)n;
    free(bn->axis_name);
    free(bn->axis_index_groups);
    bp__batchnorm_sync_free(bn);
}

/* Normalises and checks opts' axes for an input of rank ndim: each in range,
 * none repeated, not the channel axis, and forming a leading run 0..k-1. */
static bp_status resolve_axes(const char *who, int ndim, const bp_batchnorm_opts *o, int *axis, int *n_axis)
{
    if (o->n_axis == 0) {
        *n_axis = ndim - 1;
        for (int i = 0; i < ndim - 1; i++) axis[i] = i;
        return BP_OK;
    }
    if (o->n_axis < 0 || o->n_axis >= ndim)
        return bp_fail(BP_EINVAL, "%s: axis must list 1 to %d axes, got %d", who, ndim - 1, o->n_axis);
    bool seen[BP_MAX_DIMS] = {false};
    for (int i = 0; i < o->n_axis; i++) {
        int a = o->axis[i];
        if (a < -ndim || a >= ndim)
            return bp_fail(BP_EINVAL, "%s: axis %d is out of range for %d-D input", who, a, ndim);
        if (a < 0) a += ndim;
        if (a == ndim - 1)
            return bp_fail(BP_EINVAL, "%s: axis %d is the channel (feature) axis, which must be excluded", who,
                           o->axis[i]);
        if (seen[a]) return bp_fail(BP_EINVAL, "%s: axis %d is repeated", who, o->axis[i]);
        seen[a] = true;
    }
    *n_axis = o->n_axis;
    for (int i = 0; i < o->n_axis; i++)
        if (!seen[i])
            return bp_fail(BP_EUNSUPPORTED,
                           "%s: axis must reduce a leading run of axes (0, 1, ...), but axis %d is kept while "
                           "a later one is reduced",
                           who, i);
    for (int i = 0; i < o->n_axis; i++) axis[i] = i;
    return BP_OK;
}

/* Fills a (C,) parameter from an initializer; arrays may be (C,), () or (1,). */
static bp_status init_param(const char *who, const char *what, const bp_init *init, int64_t C, bp_rng *rng,
                            bp_tensor **out)
{
    char s[96];
    if (init->kind == BP_INIT_ARRAY) {
        const bp_tensor *a = init->array;
        if (!a) return bp_fail(BP_EINVAL, "%s: %s array is NULL", who, what);
        bool ok = (a->ndim == 1 && (a->shape[0] == C || a->shape[0] == 1)) || a->ndim == 0;
        if (!ok)
            return bp_fail(BP_ESHAPE, "%s: The shape of the parameters should be (%lld,), () or (1,), got %s for %s",
                           who, (long long)C, bp_shape_str(s, sizeof s, a->ndim, a->shape), what);
        BP_TRY(bp_tensor_new(out, BP_REAL_DTYPE, 1, &C));
        for (int64_t c = 0; c < C; c++) bp_tensor_set(*out, c, bp_tensor_get(a, a->numel == 1 ? 0 : c));
        return BP_OK;
    }
    bp_status st = bp_tensor_init(out, 1, &C, init, rng);
    if (st) return bp_fail(st, "%s: %s: %s", who, what, bp_last_error());
    return BP_OK;
}

static bp_status bn_build(bp_batchnorm *bn, const bp_batchnorm_opts *o, bp_rng *rng)
{
    const char *who = bp_node_name(&bn->base);
    int64_t C = bn->num_features;
    int64_t stat_shape[BP_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < bn->n_kept; i++) stat_shape[k++] = bn->kept_dims[i];
    stat_shape[k++] = C;

    bp_tensor *t;
    BP_TRY(bp_tensor_new(&t, BP_REAL_DTYPE, k, stat_shape));
    bp_status st = bp_node_add_var(&bn->base, "running_mean", BP_VARIABLE, t, &bn->running_mean);
    bp_tensor_free(t);
    if (st) return st;
    BP_TRY(bp_tensor_full(&t, BP_REAL_DTYPE, k, stat_shape, 1.0));
    st = bp_node_add_var(&bn->base, "running_var", BP_VARIABLE, t, &bn->running_var);
    bp_tensor_free(t);
    if (st || !bn->affine) return st;

    /* As BrainPy: the affine parameters are trainable only in TrainingMode. */
    bp_var_kind kind = bp_mode_is_train_mode(bn->base.mode) ? BP_TRAINVAR : BP_VARIABLE;
    BP_TRY(init_param(who, "bias_initializer", &o->bias_initializer, C, rng, &t));
    st = bp_node_add_var(&bn->base, "bias", kind, t, &bn->bias);
    bp_tensor_free(t);
    if (st) return st;
    BP_TRY(init_param(who, "scale_initializer", &o->scale_initializer, C, rng, &t));
    st = bp_node_add_var(&bn->base, "scale", kind, t, &bn->scale);
    bp_tensor_free(t);
    return st;
}

static bp_status bn_new(bp_node **out, const bp_node_class *cls, int ndim, int64_t num_features,
                        const bp_batchnorm_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", cls->name);
    *out = NULL;
    bp_batchnorm_opts o = opts ? *opts : bp_batchnorm_defaults();
    const char *who = o.name ? o.name : cls->name;
    if (num_features < 1)
        return bp_fail(BP_EINVAL, "%s: num_features must be >= 1, got %lld", who, (long long)num_features);
    if (!(o.epsilon >= 0) || !isfinite(o.epsilon))
        return bp_fail(BP_EINVAL, "%s: epsilon must be a finite value >= 0, got %g", who, o.epsilon);
    if (!(o.momentum >= 0 && o.momentum <= 1))
        return bp_fail(BP_EINVAL, "%s: momentum must be in [0, 1] (BrainPy's retention factor), got %g", who,
                       o.momentum);
    if (o.n_axis_index_groups && !o.axis_index_groups)
        return bp_fail(BP_EINVAL, "%s: axis_index_groups is NULL with %zu entries", who, o.n_axis_index_groups);
    if (o.axis_index_group_size < 0 ||
        (o.axis_index_group_size > 0 && o.n_axis_index_groups % (size_t)o.axis_index_group_size != 0))
        return bp_fail(BP_EINVAL, "%s: %zu axis_index_groups entries do not make groups of %d ranks", who,
                       o.n_axis_index_groups, o.axis_index_group_size);
    int axis[BP_MAX_DIMS], n_axis = 0;
    BP_TRY(resolve_axes(who, ndim, &o, axis, &n_axis));
    int n_kept = ndim - 1 - n_axis;
    int64_t n_features = num_features;
    for (int i = 0; i < n_kept; i++) {
        if (o.kept_dims[i] < 1)
            return bp_fail(BP_EINVAL,
                           "%s: axis keeps input axis %d besides the channel; give its size in kept_dims[%d] "
                           "(got %lld)",
                           who, n_axis + i, i, (long long)o.kept_dims[i]);
        if (o.kept_dims[i] > INT64_MAX / 8 / n_features)
            return bp_fail(BP_EINVAL, "%s: kept_dims make too many statistics (overflow at kept_dims[%d] = %lld)", who,
                           i, (long long)o.kept_dims[i]);
        n_features *= o.kept_dims[i];
    }

    bp_node *n;
    BP_TRY(bp_node_create(&n, cls, o.name, o.mode));
    bp_batchnorm *bn = (bp_batchnorm *)n;
    bn->num_features = num_features;
    bn->ndim = ndim;
    bn->n_axis = n_axis;
    memcpy(bn->axis, axis, sizeof axis);
    bn->n_kept = n_kept;
    for (int i = 0; i < n_kept; i++) bn->kept_dims[i] = o.kept_dims[i];
    bn->n_features = n_features;
    bn->epsilon = o.epsilon;
    bn->momentum = o.momentum;
    bn->affine = o.affine;
    bn->bias_initializer = o.bias_initializer;
    bn->scale_initializer = o.scale_initializer;
    bp_status st = BP_OK;
    if (o.axis_name && !(bn->axis_name = strdup(o.axis_name))) st = bp_fail(BP_ENOMEM, "%s: out of memory", who);
    if (!st && o.n_axis_index_groups) {
        bn->axis_index_groups = malloc(sizeof(int) * o.n_axis_index_groups);
        if (!bn->axis_index_groups)
            st = bp_fail(BP_ENOMEM, "%s: out of memory", who);
        else {
            memcpy(bn->axis_index_groups, o.axis_index_groups, sizeof(int) * o.n_axis_index_groups);
            bn->n_axis_index_groups = o.n_axis_index_groups;
            bn->axis_index_group_size = o.axis_index_group_size;
        }
    }
    bp_rng seeded, *rng = bp_rng_or_default(o.rng, &seeded);
    if (!st) st = bn_build(bn, &o, rng);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_status bp_batchnorm1d_new(bp_node **out, int64_t num_features, const bp_batchnorm_opts *opts)
{
    return bn_new(out, &bp_batchnorm1d_class, 3, num_features, opts);
}

bp_status bp_batchnorm2d_new(bp_node **out, int64_t num_features, const bp_batchnorm_opts *opts)
{
    return bn_new(out, &bp_batchnorm2d_class, 4, num_features, opts);
}

bp_status bp_batchnorm3d_new(bp_node **out, int64_t num_features, const bp_batchnorm_opts *opts)
{
    return bn_new(out, &bp_batchnorm3d_class, 5, num_features, opts);
}

/* ------------------------------------------------------------------ update */

/* What backward needs, saved by the forward. Tensors are owned references. */
typedef struct bn_ctx {
    int64_t M, F, C;     /* rows, statistics per row, channels (F = G * C) */
    double eps;
    bool fit, relu;      /* batch statistics; fused with the ReLU that follows */
    bp_tensor *mean;     /* fit: batch mean (F); eval: running_mean copy */
    bp_tensor *stat;     /* fit: invstd (F); eval: running_var copy */
    bp_tensor *scale_f;  /* scale tiled to F, or NULL (no affine) */
    bp_tensor *bias_f;   /* bias tiled to F (read by the ReLU mask), or NULL */
} bn_ctx;

static void bn_ctx_release(void *p)
{
    bn_ctx *c = p;
    bp_tensor_free(c->mean);
    bp_tensor_free(c->stat);
    bp_tensor_free(c->scale_f);
    bp_tensor_free(c->bias_f);
}

/* The (C,) gradient din[i] from its (F,) per-position sums: din = sum over the
 * F/C kept positions (the graph's buffer is not initialised: written here). */
static void fold(bp_tensor *din, const bp_real *src, int64_t F, int64_t C)
{
    bp_real *dst = bp_tensor_reals(din);
    for (int64_t c = 0; c < C; c++) dst[c] = 0;
    for (int64_t f = 0; f < F; f++) dst[f % C] += src[f];
}

/* One path: dx into its gradient buffer (the graph gives an overwriting op a
 * buffer of its own), the (F,) parameter sums into zeroed scratch (the kernels
 * accumulate), folded to (C,). The training kernels always write dx: scratch
 * when only the parameter gradients are wanted (a frozen input). */
static bp_status bn_backward(const bp_ag_backward_args *a)
{
    const bn_ctx *c = a->ctx;
    const bp_tensor *xt = a->in[0];
    bp_tensor *din_s = a->n_in > 1 ? a->din[1] : NULL, *din_b = a->n_in > 2 ? a->din[2] : NULL;
    bp_tensor *dx_t = NULL, *sums = NULL;
    const int64_t two_f = 2 * c->F;
    bp_status st = din_s || din_b ? bp_ag_zeros(&sums, 1, &two_f) : BP_OK;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    if (!st && !dx && c->fit) {
        st = bp_ag_empty(&dx_t, xt->ndim, xt->shape);
        if (!st) dx = bp_tensor_reals(dx_t);
    }
    if (!st) {
        bp_real *ds = din_s ? bp_tensor_reals(sums) : NULL, *db = din_b ? bp_tensor_reals(sums) + c->F : NULL;
        const bp_real *dy = bp_tensor_creals(a->dout), *x = bp_tensor_creals(xt);
        const bp_real *sc = c->scale_f ? bp_tensor_creals(c->scale_f) : NULL;
        const bp_real *bi = c->bias_f ? bp_tensor_creals(c->bias_f) : NULL;
        const bp_real *m = bp_tensor_creals(c->mean), *s = bp_tensor_creals(c->stat);
        if (c->fit && c->relu)
            st = bp__bn_relu_backward_train(dx, ds, db, dy, x, m, s, sc, bi, c->M, c->F, NULL);
        else if (c->fit)
            st = bp__bn_backward_train(dx, ds, db, dy, x, m, s, sc, c->M, c->F, NULL);
        else if (c->relu)
            st = bp__bn_relu_backward_eval(dx, ds, db, dy, x, m, s, sc, bi, c->M, c->F, c->eps, NULL);
        else
            st = bp__bn_backward_eval(dx, ds, db, dy, x, m, s, sc, c->M, c->F, c->eps, NULL);
        if (!st && din_s) fold(din_s, ds, c->F, c->C);
        if (!st && din_b) fold(din_b, db, c->F, c->C);
    }
    bp_tensor_free(dx_t);
    bp_tensor_free(sums);
    return st;
}

static const bp_ag_op bn_op = {
    .name = "BatchNorm", .backward = bn_backward, .release = bn_ctx_release, .overwrites_grad = true};
static const bp_ag_op bn_relu_op = {
    .name = "BatchNorm+ReLU", .backward = bn_backward, .release = bn_ctx_release, .overwrites_grad = true};

bp_status bp__batchnorm_check(const bp_batchnorm *bn, const bp_tensor *x, bool fit)
{
    const char *who = bp_node_name(&bn->base);
    static const char *const layouts[] = {"", "", "", "(B,L,C)", "(B,H,W,C)", "(B,H,W,D,C)"};
    bp_input_spec spec = {.ndim = bn->ndim, .layout = layouts[bn->ndim], .channels = bn->num_features};
    BP_TRY(bp__check_layer_input(who, x, &spec));
    for (int i = 0; i < bn->n_kept; i++)
        if (x->shape[bn->n_axis + i] != bn->kept_dims[i])
            return bp_fail(BP_ESHAPE, "%s: input axis %d has size %lld, but the layer was built with kept_dims[%d] = %lld",
                           who, bn->n_axis + i, (long long)x->shape[bn->n_axis + i], i,
                           (long long)bn->kept_dims[i]);
    if (fit && bn->axis_name && !bp_axis_comm(bn->axis_name))
        return bp_fail(BP_EUNSUPPORTED,
                       "%s: axis_name \"%s\" asks for statistics across replicas, but no communicator is bound "
                       "to it (bp_axis_bind)",
                       who, bn->axis_name);
    return BP_OK;
}

bp_status bp__batchnorm_next_running(const bp_batchnorm *bn, const bp_tensor *mean, const bp_tensor *var, int64_t M,
                                     bp_tensor **next)
{
    const int64_t F = bn->n_features, two_f = 2 * F;
    *next = NULL;
    BP_TRY(bp_ag_empty(next, 1, &two_f));
    bp_real *nm = bp_tensor_reals(*next);
    memcpy(nm, bp_tensor_creals(bn->running_mean->value), sizeof(bp_real) * (size_t)F);
    memcpy(nm + F, bp_tensor_creals(bn->running_var->value), sizeof(bp_real) * (size_t)F);
    bp_status st = bp__bn_update_running(nm, nm + F, bp_tensor_creals(mean), bp_tensor_creals(var), M, F, bn->momentum);
    if (st) {
        st = bp_fail(st, "%s: %s", bp_node_name(&bn->base), bp_last_error());
        bp_tensor_free(*next);
        *next = NULL;
    }
    return st;
}

void bp__batchnorm_store_running(bp_batchnorm *bn, const bp_tensor *next)
{
    const int64_t F = bn->n_features;
    const bp_real *nm = bp_tensor_creals(next);
    memcpy(bp_tensor_reals(bn->running_mean->value), nm, sizeof(bp_real) * (size_t)F);
    memcpy(bp_tensor_reals(bn->running_var->value), nm + F, sizeof(bp_real) * (size_t)F);
}

bp_status bp__batchnorm_param(bp_tensor **out, const bp_var *v, int64_t F, int64_t C)
{
    *out = NULL;
    if (!v) return BP_OK;
    BP_TRY(bp_ag_empty(out, 1, &F));
    const bp_real *src = bp_tensor_creals(v->value);
    bp_real *dst = bp_tensor_reals(*out);
    for (int64_t f = 0; f < F; f++) dst[f] = src[f % C];
    return BP_OK;
}

bp_status bp__batchnorm_update(bp_node *n, bp_tensor *x, bool relu, bp_tensor **out)
{
    bp_batchnorm *bn = (bp_batchnorm *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    const bool fit = bp_share_fit();
    BP_TRY(bp__batchnorm_check(bn, x, fit));
    if (fit && bn->axis_name) return bp__batchnorm_update_sync(bn, x, relu, out);
    const int64_t F = bn->n_features, C = bn->num_features, M = x->numel / F;
    bn_ctx c = {.M = M, .F = F, .C = C, .eps = bn->epsilon, .fit = fit, .relu = relu};
    bp_tensor *y = NULL, *var = NULL, *next = NULL;
    bp_status st = bp_ag_empty(&y, x->ndim, x->shape);
    if (!st) st = bp__batchnorm_param(&c.scale_f, bn->scale, F, C);
    if (!st) st = bp__batchnorm_param(&c.bias_f, bn->bias, F, C);
    if (!st) st = bp_ag_empty(&c.mean, 1, &F);
    if (!st) st = bp_ag_empty(&c.stat, 1, &F);
    if (!st && fit) st = bp_ag_empty(&var, 1, &F);
    if (!st) {
        bp_real *yd = bp_tensor_reals(y), *m = bp_tensor_reals(c.mean), *s = bp_tensor_reals(c.stat);
        const bp_real *xd = bp_tensor_creals(x);
        const bp_real *sc = c.scale_f ? bp_tensor_creals(c.scale_f) : NULL;
        const bp_real *bi = c.bias_f ? bp_tensor_creals(c.bias_f) : NULL;
        if (fit) {
            bp_real *v = bp_tensor_reals(var);
            st = relu ? bp__bn_relu_forward_train(yd, m, s, v, xd, sc, bi, M, F, bn->epsilon, NULL)
                      : bp__bn_forward_train(yd, m, s, v, xd, sc, bi, M, F, bn->epsilon, NULL);
        } else {
            /* Backward must see the statistics this forward used, even if a later
             * fit step moves the running buffers: keep copies. */
            memcpy(m, bp_tensor_creals(bn->running_mean->value), sizeof(bp_real) * (size_t)F);
            memcpy(s, bp_tensor_creals(bn->running_var->value), sizeof(bp_real) * (size_t)F);
            st = relu ? bp__bn_relu_forward_eval(yd, xd, m, s, sc, bi, M, F, bn->epsilon, NULL)
                      : bp__bn_forward_eval(yd, xd, m, s, sc, bi, M, F, bn->epsilon, NULL);
        }
        if (st) st = bp_fail(st, "%s: %s", who, bp_last_error());
    }
    /* The running statistics' next values, computed (and checked: a huge
     * variance can overflow) before anything is recorded, stored once nothing
     * can fail any more, so a failed update leaves the layer as it was. */
    if (!st && fit) st = bp__batchnorm_next_running(bn, c.mean, var, M, &next);
    if (!st) {
        bp_tensor *in[3] = {x, bn->scale ? bn->scale->value : NULL, bn->bias ? bn->bias->value : NULL};
        int n_in = bn->affine ? 3 : 1;
        if (bp_ag_wants(n_in, in)) {
            st = bp_ag_record(y, relu ? &bn_relu_op : &bn_op, n_in, in, &c, sizeof c);
            c = (bn_ctx){0}; /* the graph owns (or already released) what c pointed to */
        }
    }
    if (!st && fit) bp__batchnorm_store_running(bn, next);
    bp_tensor_free(next);
    bp_tensor_free(var);
    bn_ctx_release(&c);
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    *out = y;
    return BP_OK;
}

static bp_status bn_update(bp_node *n, bp_tensor *x, bp_tensor **out) { return bp__batchnorm_update(n, x, false, out); }
