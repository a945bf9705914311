/* layers/dense.c — Dense, Flatten, Dropout, activations and Sequential, each a
 * thin node over the differentiable ops of bpc/ops.h (see bpc/dense.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/batchnorm.h>
#include <bpc/dense.h>
#include <bpc/pool.h>
#include "batchnorm_internal.h"
#include "layer_input.h"
#include <bpc/ops.h>

/* ---------------------------------------------------------------- Dense */

static bp_status dense_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_dense *d = (bp_dense *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    BP_TRY(bp__check_layer_input(who, x, &(bp_input_spec){.ndim = 0, .channels = d->num_in}));
    bp_tensor *xw;
    BP_TRY(bp_matmul(&xw, x, d->W->value));
    if (!d->b) {
        *out = xw;
        return BP_OK;
    }
    bp_status st = bp_add(out, xw, d->b->value);
    bp_tensor_free(xw);
    return st;
}

const bp_node_class bp_dense_class = {.name = "Dense", .size = sizeof(bp_dense), .update = dense_update};

bp_dense_opts bp_dense_defaults(void)
{
    return (bp_dense_opts){.W_initializer = bp_xavier_normal_init(1.0), .b_initializer = bp_zero_init(), .bias = true};
}

bp_status bp_dense_new(bp_node **out, int64_t num_in, int64_t num_out, const bp_dense_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "Dense: out is NULL");
    *out = NULL;
    bp_dense_opts o = opts ? *opts : bp_dense_defaults();
    if (num_in < 1 || num_out < 1)
        return bp_fail(BP_EINVAL, "Dense: num_in and num_out must be >= 1, got %lld and %lld", (long long)num_in,
                       (long long)num_out);
    int64_t nw;
    if (__builtin_mul_overflow(num_in, num_out, &nw) || nw > INT64_MAX / 8)
        return bp_fail(BP_EINVAL, "Dense: the weights W (num_in * num_out = %lld * %lld) would hold more than 2^60 values",
                       (long long)num_in, (long long)num_out);
    bp_node *n;
    BP_TRY(bp_node_create(&n, &bp_dense_class, o.name, o.mode));
    bp_dense *d = (bp_dense *)n;
    d->num_in = num_in;
    d->num_out = num_out;
    bp_rng seeded, *rng = bp_rng_or_default(o.rng, &seeded);
    bp_var_kind kind = bp_mode_is_train_mode(n->mode) ? BP_TRAINVAR : BP_VARIABLE;
    int64_t wshape[2] = {num_in, num_out};
    bp_tensor *t = NULL;
    bp_status st = bp_tensor_init(&t, 2, wshape, &o.W_initializer, rng);
    if (!st) st = bp_node_add_var(n, "W", kind, t, &d->W);
    bp_tensor_free(t);
    t = NULL;
    if (!st && o.bias) {
        st = bp_tensor_init(&t, 1, &num_out, &o.b_initializer, rng);
        if (!st) st = bp_node_add_var(n, "b", kind, t, &d->b);
        bp_tensor_free(t);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

/* -------------------------------------------------------------- Flatten */

typedef struct flatten_node {
    bp_node base;
    int start_dim, end_dim;
} flatten_node;

static bp_status flatten_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    flatten_node *f = (flatten_node *)n;
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", bp_node_name(n));
    *out = NULL;
    if (!x) return bp_fail(BP_EINVAL, "%s: input is NULL", bp_node_name(n));
    /* In batching modes the first axis is the batch: per-sample dims start after it. */
    int off = bp_mode_is_batch_mode(n->mode) ? 1 : 0, per = x->ndim - off;
    int s = f->start_dim < 0 ? f->start_dim + per : f->start_dim;
    int e = f->end_dim < 0 ? f->end_dim + per : f->end_dim;
    if (per < 1 || s < 0 || e >= per || s > e)
        return bp_fail(BP_ESHAPE, "%s: cannot flatten dims %d..%d of a sample with %d dims", bp_node_name(n),
                       f->start_dim, f->end_dim, per);
    return bp_flatten(out, x, s + off, e + off);
}

const bp_node_class bp_flatten_class = {.name = "Flatten", .size = sizeof(flatten_node), .update = flatten_update};

bp_status bp_flatten_new(bp_node **out, int start_dim, int end_dim, const bp_mode *mode, const char *name)
{
    BP_TRY(bp_node_create(out, &bp_flatten_class, name, mode));
    flatten_node *f = (flatten_node *)*out;
    f->start_dim = start_dim;
    f->end_dim = end_dim;
    return BP_OK;
}

/* -------------------------------------------------------------- Dropout */

typedef struct dropout_node {
    bp_node base;
    double prob;
    bp_var *rng_state; /* the generator's 4 words as int64, so it is checkpointed */
} dropout_node;

static bp_status dropout_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    dropout_node *d = (dropout_node *)n;
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", bp_node_name(n));
    *out = NULL;
    bp_rng r;
    memcpy(r.s, d->rng_state->value->data, sizeof r.s);
    bp_status st = bp_dropout(out, x, 1.0 - d->prob, bp_share_fit(), &r);
    if (st) return bp_fail(st, "%s: %s", bp_node_name(n), bp_last_error());
    memcpy(d->rng_state->value->data, r.s, sizeof r.s);
    return BP_OK;
}

const bp_node_class bp_dropout_class = {
    .name = "Dropout", .size = sizeof(dropout_node), .reads_shared = true, .update = dropout_update};

bp_status bp_dropout_new(bp_node **out, double prob, uint64_t seed, const bp_mode *mode, const char *name)
{
    if (!out) return bp_fail(BP_EINVAL, "Dropout: out is NULL");
    *out = NULL;
    if (!(prob > 0 && prob <= 1))
        return bp_fail(BP_EINVAL, "Dropout: prob (the keep probability) must be in (0, 1], got %g", prob);
    bp_node *n;
    BP_TRY(bp_node_create(&n, &bp_dropout_class, name, mode));
    dropout_node *d = (dropout_node *)n;
    d->prob = prob;
    bp_rng r;
    bp_rng_seed(&r, seed);
    int64_t four = 4;
    bp_tensor *t;
    bp_status st = bp_tensor_from_data(&t, BP_INT64, 1, &four, r.s);
    if (!st) {
        st = bp_node_add_var(n, "rng_state", BP_VARIABLE, t, &d->rng_state);
        bp_tensor_free(t);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

/* ---------------------------------------------------------- activations */

typedef struct act_node {
    bp_node base;
    double slope;
} act_node;

static bp_status act_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", bp_node_name(n));
    *out = NULL;
    const bp_node_class *c = n->cls;
    if (c == &bp_relu_class) return bp_relu(out, x);
    if (c == &bp_leaky_relu_class) return bp_leaky_relu(out, x, ((act_node *)n)->slope);
    if (c == &bp_sigmoid_class) return bp_sigmoid(out, x);
    if (c == &bp_tanh_class) return bp_tanh(out, x);
    if (c == &bp_gelu_class) return bp_gelu(out, x);
    return bp_softmax(out, x);
}

#define ACT_CLASS(NAME) {.name = NAME, .size = sizeof(act_node), .update = act_update}
const bp_node_class bp_relu_class = ACT_CLASS("ReLU");
const bp_node_class bp_leaky_relu_class = ACT_CLASS("LeakyReLU");
const bp_node_class bp_sigmoid_class = ACT_CLASS("Sigmoid");
const bp_node_class bp_tanh_class = ACT_CLASS("Tanh");
const bp_node_class bp_gelu_class = ACT_CLASS("GELU");
const bp_node_class bp_softmax_class = ACT_CLASS("Softmax");

bp_status bp_activation_new(bp_node **out, const bp_node_class *cls, double slope, const bp_mode *mode,
                            const char *name)
{
    if (!out) return bp_fail(BP_EINVAL, "activation: out is NULL");
    *out = NULL;
    if (cls != &bp_relu_class && cls != &bp_leaky_relu_class && cls != &bp_sigmoid_class && cls != &bp_tanh_class &&
        cls != &bp_gelu_class && cls != &bp_softmax_class)
        return bp_fail(BP_EINVAL, "activation: class %s is not an activation layer", cls && cls->name ? cls->name : "(null)");
    BP_TRY(bp_node_create(out, cls, name, mode));
    ((act_node *)*out)->slope = slope;
    return BP_OK;
}

/* ------------------------------------------------------------ Sequential */

typedef struct sequential_node {
    bp_node base;
    size_t count;
    bp_node **children; /* borrowed: the node list attribute holds the references */
} sequential_node;

/* How many of the n children at c form a BatchNorm -> ReLU (2) or BatchNorm ->
 * ReLU -> MaxPool (3) run, which go through the fused block's path
 * (bp__bn_relu_pool_run: same outputs, running statistics and errors as the
 * children one by one); 0 for anything else. */
static size_t bn_relu_run(bp_node *const *c, size_t n)
{
    if (n < 2 || !bp_batchnorm_cast(c[0]) || c[1]->cls != &bp_relu_class) return 0;
    bool pool = n > 2 && (c[2]->cls == &bp_maxpool1d_class || c[2]->cls == &bp_maxpool2d_class ||
                          c[2]->cls == &bp_maxpool3d_class);
    return pool ? 3 : 2;
}

static bp_status sequential_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    sequential_node *s = (sequential_node *)n;
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", bp_node_name(n));
    *out = NULL;
    bp_tensor *cur = bp_tensor_retain(x);
    for (size_t i = 0; i < s->count;) {
        bp_tensor *next;
        size_t used = bn_relu_run(s->children + i, s->count - i);
        bp_status st = used ? bp__bn_relu_pool_run(s->children[i], used == 3 ? s->children[i + 2] : NULL, cur, &next)
                            : bp_node_update(s->children[i], cur, &next);
        bp_tensor_free(cur);
        if (st) return st;
        cur = next;
        i += used ? used : 1;
    }
    *out = cur;
    return BP_OK;
}

static void sequential_destroy(bp_node *n) { free(((sequential_node *)n)->children); }

const bp_node_class bp_sequential_class = {
    .name = "Sequential", .size = sizeof(sequential_node), .update = sequential_update, .destroy = sequential_destroy};

bp_status bp_sequential_new(bp_node **out, size_t count, bp_node *const *children, const bp_mode *mode,
                            const char *name)
{
    if (!out) return bp_fail(BP_EINVAL, "Sequential: out is NULL");
    *out = NULL;
    if (count < 1 || !children) return bp_fail(BP_EINVAL, "Sequential: needs at least one child, got %zu", count);
    bp_node *n;
    BP_TRY(bp_node_create(&n, &bp_sequential_class, name, mode));
    sequential_node *s = (sequential_node *)n;
    s->children = malloc(sizeof *s->children * count);
    bp_status st = s->children ? bp_node_add_child_list(n, "children", count, children)
                               : bp_fail(BP_ENOMEM, "Sequential: out of memory");
    if (st) {
        bp_node_free(n);
        return st;
    }
    memcpy(s->children, children, sizeof *s->children * count);
    s->count = count;
    *out = n;
    return BP_OK;
}
