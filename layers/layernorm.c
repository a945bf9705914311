/* layers/layernorm.c — the LayerNorm node (bpc/layernorm.h): constructor,
 * variables, input check, and the recorded op whose backward calls the
 * kernels of layernorm_ref.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <bpc/layernorm.h>
#include <bpc/autograd.h>
#include "layer_input.h"
#include "layernorm_internal.h"

/* ------------------------------------------------------------ the op */

/* What the backward needs: the forward's per-row statistics. The inputs
 * (x, and scale and bias when affine) are the op's recorded inputs. */
typedef struct ln_ctx {
    bp_tensor *mean, *rstd; /* (M,) owned */
    int64_t M, N;
    bool affine;
} ln_ctx;

static void ln_release(void *p)
{
    ln_ctx *c = p;
    bp_tensor_free(c->mean);
    bp_tensor_free(c->rstd);
}

/* Inputs: in[0] = x, and with affine in[1] = bias, in[2] = scale. Overwrites
 * every din it is given (overwrites_grad), so it writes whole buffers. */
static bp_status ln_backward(const bp_ag_backward_args *a)
{
    const ln_ctx *c = a->ctx;
    const bp_real *scale = c->affine ? bp_tensor_creals(a->in[2]) : NULL;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_real *dbias = c->affine && a->din[1] ? bp_tensor_reals(a->din[1]) : NULL;
    bp_real *dscale = c->affine && a->din[2] ? bp_tensor_reals(a->din[2]) : NULL;
    bp__layernorm_backward_ref(dx, dscale, dbias, bp_tensor_creals(a->dout), bp_tensor_creals(a->in[0]),
                               bp_tensor_creals(c->mean), bp_tensor_creals(c->rstd), scale, c->M, c->N);
    return BP_OK;
}

static const bp_ag_op ln_op = {
    .name = "LayerNorm", .backward = ln_backward, .release = ln_release, .overwrites_grad = true};

/* ------------------------------------------------------------ the node */

/* BrainPy checks x.shape[-len(normalized_shape):] == normalized_shape. */
static bp_status ln_check_input(const bp_layernorm *ln, const bp_tensor *x)
{
    const char *who = bp_node_name(&ln->base);
    char want[128], got[128];
    bp_shape_str(want, sizeof want, ln->n_norm, ln->normalized_shape);
    if (x && x->ndim < ln->n_norm)
        return bp_fail(BP_ESHAPE, "%s: expected at least %dD input (got %dD input): normalized_shape %s, got shape %s",
                       who, ln->n_norm, x->ndim, want, bp_shape_str(got, sizeof got, x->ndim, x->shape));
    BP_TRY(bp__check_layer_input(
        who, x, &(bp_input_spec){.ndim = 0, .channels = ln->normalized_shape[ln->n_norm - 1]}));
    const int lead = x->ndim - ln->n_norm;
    for (int i = 0; i < ln->n_norm; i++)
        if (x->shape[lead + i] != ln->normalized_shape[i])
            return bp_fail(BP_ESHAPE, "%s: expected input of shape (..., %s (normalized_shape), got %s", who,
                           want + 1, bp_shape_str(got, sizeof got, x->ndim, x->shape));
    return BP_OK;
}

static bp_status ln_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_layernorm *ln = (bp_layernorm *)n;
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", bp_node_name(n));
    *out = NULL;
    BP_TRY(ln_check_input(ln, x));
    ln_ctx c = {.N = ln->n_features, .affine = ln->elementwise_affine};
    c.M = x->numel / c.N;
    bp_status st = bp_ag_empty(&c.mean, 1, &c.M);
    if (!st) st = bp_ag_empty(&c.rstd, 1, &c.M);
    if (!st) st = bp_ag_empty(out, x->ndim, x->shape);
    if (st) {
        ln_release(&c);
        return st;
    }
    const bp_real *scale = c.affine ? bp_tensor_creals(ln->scale->value) : NULL;
    const bp_real *bias = c.affine ? bp_tensor_creals(ln->bias->value) : NULL;
    bp__layernorm_forward_ref(bp_tensor_reals(*out), bp_tensor_reals(c.mean), bp_tensor_reals(c.rstd),
                              bp_tensor_creals(x), scale, bias, c.M, c.N, ln->epsilon);
    bp_tensor *in[3] = {x, c.affine ? ln->bias->value : NULL, c.affine ? ln->scale->value : NULL};
    /* Nothing recorded (no input needs a gradient): the graph releases c now. */
    st = bp_ag_record(*out, &ln_op, c.affine ? 3 : 1, in, &c, sizeof c);
    if (st) {
        bp_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

const bp_node_class bp_layernorm_class = {
    .name = "LayerNorm", .size = sizeof(bp_layernorm), .update = ln_update};

bp_layernorm_opts bp_layernorm_defaults(void)
{
    return (bp_layernorm_opts){.epsilon = 1e-5, .elementwise_affine = true, .bias_initializer = bp_zero_init(),
                               .scale_initializer = bp_one_init(1.0)};
}

bp_layernorm *bp_layernorm_cast(bp_node *n) { return n && n->cls == &bp_layernorm_class ? (bp_layernorm *)n : NULL; }

/* Adds the (normalized_shape) parameter `attr` filled from init. */
static bp_status add_param(bp_layernorm *ln, const char *attr, const bp_init *init, bp_rng *rng, bp_var **out)
{
    bp_node *n = &ln->base;
    bp_tensor *t;
    bp_status st = bp_tensor_init(&t, ln->n_norm, ln->normalized_shape, init, rng);
    if (st) return bp_fail(st, "%s: %s_initializer: %s", bp_node_name(n), attr, bp_last_error());
    bp_var_kind kind = bp_mode_is_train_mode(n->mode) ? BP_TRAINVAR : BP_VARIABLE;
    st = bp_node_add_var(n, attr, kind, t, out);
    bp_tensor_free(t);
    return st;
}

bp_status bp_layernorm_new(bp_node **out, int n_norm, const int64_t *normalized_shape,
                           const bp_layernorm_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "LayerNorm: out is NULL");
    *out = NULL;
    bp_layernorm_opts o = opts ? *opts : bp_layernorm_defaults();
    if (!normalized_shape || n_norm < 1 || n_norm > BP_MAX_DIMS)
        return bp_fail(BP_EINVAL, "LayerNorm: normalized_shape must have 1 to %d sizes, got %d%s", BP_MAX_DIMS,
                       n_norm, normalized_shape ? "" : " (NULL)");
    int64_t N = 1;
    for (int i = 0; i < n_norm; i++) {
        if (normalized_shape[i] < 1)
            return bp_fail(BP_EINVAL, "LayerNorm: normalized_shape[%d] must be >= 1, got %lld", i,
                           (long long)normalized_shape[i]);
        if (N > INT64_MAX / normalized_shape[i])
            return bp_fail(BP_EINVAL, "LayerNorm: normalized_shape's product overflows");
        N *= normalized_shape[i];
    }
    if (!(o.epsilon >= 0) || !isfinite(o.epsilon))
        return bp_fail(BP_EINVAL, "LayerNorm: epsilon must be finite and >= 0, got %g", o.epsilon);
    bp_node *n;
    BP_TRY(bp_node_create(&n, &bp_layernorm_class, o.name, o.mode));
    bp_layernorm *ln = (bp_layernorm *)n;
    ln->n_norm = n_norm;
    memcpy(ln->normalized_shape, normalized_shape, sizeof *normalized_shape * (size_t)n_norm);
    ln->n_features = N;
    ln->epsilon = o.epsilon;
    ln->elementwise_affine = o.elementwise_affine;
    bp_status st = BP_OK;
    if (o.elementwise_affine) {
        bp_rng seeded, *rng = bp_rng_or_default(o.rng, &seeded);
        st = add_param(ln, "bias", &o.bias_initializer, rng, &ln->bias);
        if (!st) st = add_param(ln, "scale", &o.scale_initializer, rng, &ln->scale);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}
