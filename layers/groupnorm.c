/* layers/groupnorm.c — the GroupNorm and InstanceNorm nodes
 * (bpc/groupnorm.h): constructor, variables, input check, and the recorded
 * op whose forward and backward call the kernels of groupnorm_fast.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <bpc/autograd.h>
#include <bpc/groupnorm.h>
#include "groupnorm_internal.h"
#include "layer_input.h"

/* ------------------------------------------------------------ the op */

typedef struct gn_ctx {
    bp_tensor *mean, *rstd; /* (B, G) owned */
    int64_t B, P, C, G;
    bool affine;
} gn_ctx;

static void gn_release(void *p)
{
    gn_ctx *c = p;
    bp_tensor_free(c->mean);
    bp_tensor_free(c->rstd);
}

/* Inputs: in[0] = x, and with affine in[1] = bias, in[2] = scale; writes
 * every din it gets (overwrites_grad). */
static bp_status gn_backward(const bp_ag_backward_args *a)
{
    const gn_ctx *c = a->ctx;
    const bp_real *scale = c->affine ? bp_tensor_creals(a->in[2]) : NULL;
    bp_real *dx = a->din[0] ? bp_tensor_reals(a->din[0]) : NULL;
    bp_real *dbias = c->affine && a->din[1] ? bp_tensor_reals(a->din[1]) : NULL;
    bp_real *dscale = c->affine && a->din[2] ? bp_tensor_reals(a->din[2]) : NULL;
    return bp__gn_backward(dx, dscale, dbias, bp_tensor_creals(a->dout), bp_tensor_creals(a->in[0]),
                           bp_tensor_creals(c->mean), bp_tensor_creals(c->rstd), scale, c->B, c->P, c->C, c->G);
}

static const bp_ag_op gn_op = {
    .name = "GroupNorm", .backward = gn_backward, .release = gn_release, .overwrites_grad = true};

/* ------------------------------------------------------------ the node */

static bp_status gn_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_groupnorm *gn = (bp_groupnorm *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (x && x->ndim < 2) {
        char s[96];
        return bp_fail(BP_ESHAPE, "%s: expected at least 2D input (B, ..., C) (got %dD input): got shape %s", who,
                       x->ndim, bp_shape_str(s, sizeof s, x->ndim, x->shape));
    }
    BP_TRY(bp__check_layer_input(who, x, &(bp_input_spec){.ndim = 0, .channels = gn->num_channels}));
    gn_ctx c = {.B = x->shape[0], .C = gn->num_channels, .G = gn->num_groups, .affine = gn->scale != NULL};
    c.P = c.B ? x->numel / (c.B * c.C) : 0;
    const int64_t stat[2] = {c.B, c.G};
    bp_status st = bp_ag_empty(&c.mean, 2, stat);
    if (!st) st = bp_ag_empty(&c.rstd, 2, stat);
    if (!st) st = bp_ag_empty(out, x->ndim, x->shape);
    if (st) {
        gn_release(&c);
        return st;
    }
    const bp_real *scale = c.affine ? bp_tensor_creals(gn->scale->value) : NULL;
    const bp_real *bias = c.affine ? bp_tensor_creals(gn->bias->value) : NULL;
    st = bp__gn_forward(bp_tensor_reals(*out), bp_tensor_reals(c.mean), bp_tensor_reals(c.rstd), bp_tensor_creals(x),
                        scale, bias, c.B, c.P, c.C, c.G, gn->epsilon);
    if (st) {
        gn_release(&c);
        bp_tensor_free(*out);
        *out = NULL;
        return st;
    }
    bp_tensor *in[3] = {x, c.affine ? gn->bias->value : NULL, c.affine ? gn->scale->value : NULL};
    st = bp_ag_record(*out, &gn_op, c.affine ? 3 : 1, in, &c, sizeof c);
    if (st) {
        bp_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

const bp_node_class bp_groupnorm_class = {.name = "GroupNorm", .size = sizeof(bp_groupnorm), .update = gn_update};
const bp_node_class bp_instancenorm_class = {
    .name = "InstanceNorm", .size = sizeof(bp_groupnorm), .update = gn_update};

bp_groupnorm_opts bp_groupnorm_defaults(void)
{
    return (bp_groupnorm_opts){.epsilon = 1e-5, .affine = true, .bias_initializer = bp_zero_init(),
                               .scale_initializer = bp_one_init(1.0)};
}

static bp_status add_param(bp_groupnorm *gn, const char *attr, const bp_init *init, bp_rng *rng, bp_var **out)
{
    bp_node *n = &gn->base;
    bp_tensor *t;
    bp_status st = bp_tensor_init(&t, 1, &gn->num_channels, init, rng);
    if (st) return bp_fail(st, "%s: %s_initializer: %s", bp_node_name(n), attr, bp_last_error());
    bp_var_kind kind = bp_mode_is_train_mode(n->mode) ? BP_TRAINVAR : BP_VARIABLE;
    st = bp_node_add_var(n, attr, kind, t, out);
    bp_tensor_free(t);
    return st;
}

static bp_status make(bp_node **out, const bp_node_class *cls, int64_t G, int64_t C, const bp_groupnorm_opts *opts)
{
    const char *who = cls->name;
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    bp_groupnorm_opts o = opts ? *opts : bp_groupnorm_defaults();
    if (C < 1 || G < 1 || C % G != 0)
        return bp_fail(BP_EINVAL, "%s: num_channels (%lld) must be >= 1 and divisible by num_groups (%lld)", who,
                       (long long)C, (long long)G);
    if (!(o.epsilon >= 0) || !isfinite(o.epsilon))
        return bp_fail(BP_EINVAL, "%s: epsilon must be finite and >= 0, got %g", who, o.epsilon);
    bp_node *n;
    BP_TRY(bp_node_create(&n, cls, o.name, o.mode));
    bp_groupnorm *gn = (bp_groupnorm *)n;
    gn->num_groups = G;
    gn->num_channels = C;
    gn->epsilon = o.epsilon;
    bp_status st = BP_OK;
    if (o.affine) {
        bp_rng seeded, *rng = bp_rng_or_default(o.rng, &seeded);
        st = add_param(gn, "bias", &o.bias_initializer, rng, &gn->bias);
        if (!st) st = add_param(gn, "scale", &o.scale_initializer, rng, &gn->scale);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_status bp_groupnorm_new(bp_node **out, int64_t num_groups, int64_t num_channels, const bp_groupnorm_opts *opts)
{
    return make(out, &bp_groupnorm_class, num_groups, num_channels, opts);
}

bp_status bp_instancenorm_new(bp_node **out, int64_t num_channels, const bp_groupnorm_opts *opts)
{
    return make(out, &bp_instancenorm_class, num_channels, num_channels, opts);
}
