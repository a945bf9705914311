/* models/unet.c — the 3-D U-Net (bpc/unet.h): blocks of two convolutions,
 * max-pool down, trilinear up, skip concatenation, a 1x1x1 head. A model sees
 * its layers only through their public constructors and bp_node_update. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <bpc/batchnorm.h>
#include <bpc/conv.h>
#include <bpc/conv_transpose.h>
#include <bpc/dense.h>
#include <bpc/groupnorm.h>
#include <bpc/ops.h>
#include <bpc/pool.h>
#include <bpc/unet.h>

#define UNET_MAX_DEPTH 6

/* ------------------------------------------------------------ the block */

static const char *const block_parts[6] = {"conv1", "norm1", "act1", "conv2", "norm2", "act2"};

static bp_status block_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    bp_tensor *cur = x;
    bp_status st = BP_OK;
    for (int i = 0; i < 6 && !st; i++) {
        bp_tensor *next = NULL;
        st = bp_node_update(bp_node_child(n, block_parts[i]), cur, &next);
        if (cur != x) bp_tensor_free(cur);
        cur = next;
    }
    if (st) {
        if (cur != x) bp_tensor_free(cur);
        return st;
    }
    *out = cur;
    return BP_OK;
}

const bp_node_class bp_unet_block_class = {.name = "UNetBlock", .size = sizeof(bp_node), .update = block_update};

typedef struct unet_cfg {
    bp_unet_opts o;
    const char *prefix; /* the U-Net's name: children are "<prefix>_<place>_<part>" */
} unet_cfg;

static bp_status make_norm(bp_node **out, const unet_cfg *c, int64_t ch, const char *name)
{
    if (c->o.norm == BP_UNET_BATCH) {
        bp_batchnorm_opts b = bp_batchnorm_defaults();
        b.mode = c->o.mode;
        b.name = name;
        return bp_batchnorm3d_new(out, ch, &b);
    }
    bp_groupnorm_opts g = bp_groupnorm_defaults();
    g.mode = c->o.mode;
    g.name = name;
    return c->o.norm == BP_UNET_GROUP ? bp_groupnorm_new(out, c->o.groups, ch, &g) : bp_instancenorm_new(out, ch, &g);
}

static bp_status make_conv(bp_node **out, const unet_cfg *c, int64_t cin, int64_t cout, int k, const char *name)
{
    bp_conv_opts co = bp_conv_defaults();
    co.kernel_size[0] = co.kernel_size[1] = co.kernel_size[2] = k;
    co.mode = c->o.mode;
    co.name = name;
    co.rng = c->o.rng;
    return bp_conv3d_new(out, cin, cout, &co);
}

/* Adds child `attr` to parent and drops the caller's reference. */
static bp_status adopt(bp_node *parent, const char *attr, bp_node *child)
{
    bp_status st = bp_node_add_child(parent, attr, child);
    bp_node_free(child);
    return st;
}

static bp_status make_block(bp_node *unet, const unet_cfg *c, const char *place, int64_t cin, int64_t cout)
{
    char name[256];
    bp_node *b = NULL, *part = NULL;
    snprintf(name, sizeof name, "%s_%s", c->prefix, place);
    BP_TRY(bp_node_create(&b, &bp_unet_block_class, name, c->o.mode));
    bp_status st = BP_OK;
    for (int i = 0; i < 6 && !st; i++) {
        snprintf(name, sizeof name, "%s_%s_%s", c->prefix, place, block_parts[i]);
        if (i % 3 == 0) st = make_conv(&part, c, i == 0 ? cin : cout, cout, 3, name);
        else if (i % 3 == 1) st = make_norm(&part, c, cout, name);
        else st = c->o.negative_slope > 0 ? bp_activation_new(&part, &bp_leaky_relu_class, c->o.negative_slope, c->o.mode, name)
                                          : bp_activation_new(&part, &bp_relu_class, 0, c->o.mode, name);
        if (!st) st = adopt(b, block_parts[i], part);
    }
    if (!st) return adopt(unet, place, b);
    bp_node_free(b);
    return st;
}

/* ------------------------------------------------------------ the net */

typedef struct unet_node {
    bp_node base;
    int depth;
    bp_unet_up up;
} unet_node;

static bp_status unet_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    const unet_node *u = (const unet_node *)n;
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    char s[128], attr[16];
    if (!x) return bp_fail(BP_EINVAL, "%s: input is NULL", who);
    const int64_t m = (int64_t)1 << u->depth;
    if (x->ndim != 5 || x->shape[1] % m || x->shape[2] % m || x->shape[3] % m || x->shape[1] < m)
        return bp_fail(BP_ESHAPE, "%s: expected (B, X, Y, Z, C) input with X, Y, Z multiples of 2^depth = %lld, got %s",
                       who, (long long)m, bp_shape_str(s, sizeof s, x->ndim, x->shape));
    bp_tensor *skip[UNET_MAX_DEPTH + 1] = {0}, *cur = NULL;
    bp_status st = bp_node_update(bp_node_child(n, "enc0"), x, &skip[0]);
    for (int l = 1; l <= u->depth && !st; l++) {
        bp_tensor *p = NULL;
        st = bp_node_update(bp_node_child(n, "pool"), skip[l - 1], &p);
        snprintf(attr, sizeof attr, "enc%d", l);
        if (!st) st = bp_node_update(bp_node_child(n, attr), p, &skip[l]);
        bp_tensor_free(p);
    }
    if (!st) {
        cur = skip[u->depth];
        skip[u->depth] = NULL;
    }
    for (int l = u->depth - 1; l >= 0 && !st; l--) {
        bp_tensor *up = NULL, *cat = NULL, *next = NULL;
        if (u->up == BP_UNET_TRANSPOSED) {
            snprintf(attr, sizeof attr, "up%d", l);
            st = bp_node_update(bp_node_child(n, attr), cur, &up);
        } else {
            st = bp_upsample(&up, cur, 3, (int[]){2, 2, 2}, BP_UPSAMPLE_LINEAR);
        }
        if (!st) st = bp_concat(&cat, 2, (bp_tensor *[]){up, skip[l]}, -1);
        snprintf(attr, sizeof attr, "dec%d", l);
        if (!st) st = bp_node_update(bp_node_child(n, attr), cat, &next);
        bp_tensor_free(up), bp_tensor_free(cat), bp_tensor_free(cur);
        cur = next;
    }
    if (!st) st = bp_node_update(bp_node_child(n, "head"), cur, out);
    bp_tensor_free(cur);
    for (int l = 0; l <= u->depth; l++) bp_tensor_free(skip[l]);
    return st;
}

const bp_node_class bp_unet_class = {.name = "UNet", .size = sizeof(unet_node), .update = unet_update};

bp_unet_opts bp_unet_defaults(void)
{
    return (bp_unet_opts){.depth = 3, .base_channels = 16, .norm = BP_UNET_INSTANCE, .groups = 8,
                          .negative_slope = 0.01};
}

bp_status bp_unet_new(bp_node **out, int64_t in_channels, int64_t n_classes, const bp_unet_opts *opts)
{
    if (!out) return bp_fail(BP_EINVAL, "UNet: out is NULL");
    *out = NULL;
    unet_cfg c = {.o = opts ? *opts : bp_unet_defaults()};
    const bp_unet_opts *o = &c.o;
    if (in_channels < 1 || n_classes < 1)
        return bp_fail(BP_EINVAL, "UNet: in_channels and n_classes must be >= 1, got %lld and %lld",
                       (long long)in_channels, (long long)n_classes);
    if (o->depth < 1 || o->depth > UNET_MAX_DEPTH)
        return bp_fail(BP_EINVAL, "UNet: depth must be in 1..%d, got %d", UNET_MAX_DEPTH, o->depth);
    if (o->base_channels < 1 || o->base_channels > ((int64_t)1 << 20))
        return bp_fail(BP_EINVAL, "UNet: base_channels must be in 1..%d, got %lld", 1 << 20,
                       (long long)o->base_channels);
    if (o->norm != BP_UNET_INSTANCE && o->norm != BP_UNET_BATCH && o->norm != BP_UNET_GROUP)
        return bp_fail(BP_EINVAL, "UNet: norm %d is not instance, batch or group", (int)o->norm);
    if (o->up != BP_UNET_TRILINEAR && o->up != BP_UNET_TRANSPOSED)
        return bp_fail(BP_EINVAL, "UNet: up %d is neither trilinear nor transposed", (int)o->up);
    if (o->norm == BP_UNET_GROUP && (o->groups < 1 || o->base_channels % o->groups))
        return bp_fail(BP_EINVAL, "UNet: groups (%lld) must divide base_channels (%lld)", (long long)o->groups,
                       (long long)o->base_channels);
    if (!(o->negative_slope >= 0) || !isfinite(o->negative_slope))
        return bp_fail(BP_EINVAL, "UNet: negative_slope must be finite and >= 0, got %g", o->negative_slope);
    bp_node *n = NULL;
    BP_TRY(bp_node_create(&n, &bp_unet_class, o->name, o->mode));
    ((unet_node *)n)->depth = o->depth;
    ((unet_node *)n)->up = o->up;
    c.prefix = bp_node_name(n);
    bp_rng seeded;
    c.o.rng = bp_rng_or_default(o->rng, &seeded);
    const int64_t f = o->base_channels;
    char place[16], name[256];
    bp_status st = make_block(n, &c, "enc0", in_channels, f);
    for (int l = 1; l <= o->depth && !st; l++) {
        snprintf(place, sizeof place, "enc%d", l);
        st = make_block(n, &c, place, f << (l - 1), f << l);
    }
    for (int l = o->depth - 1; l >= 0 && !st; l--) {
        const bool tr = o->up == BP_UNET_TRANSPOSED;
        if (tr) {
            bp_conv_transpose_opts to = bp_conv_transpose_defaults();
            to.kernel_size[0] = to.kernel_size[1] = to.kernel_size[2] = 2;
            to.stride[0] = to.stride[1] = to.stride[2] = 2;
            to.mode = o->mode;
            to.rng = c.o.rng;
            snprintf(name, sizeof name, "%s_up%d", c.prefix, l);
            to.name = name;
            bp_node *up = NULL;
            st = bp_conv_transpose3d_new(&up, f << (l + 1), f << l, &to);
            snprintf(place, sizeof place, "up%d", l);
            if (!st) st = adopt(n, place, up);
        }
        snprintf(place, sizeof place, "dec%d", l);
        if (!st) st = make_block(n, &c, place, tr ? 2 * (f << l) : (f << (l + 1)) + (f << l), f << l);
    }
    bp_node *part = NULL;
    if (!st) {
        bp_pool_opts po = {.kernel_size = {2, 2, 2}, .mode = o->mode};
        snprintf(name, sizeof name, "%s_pool", c.prefix);
        po.name = name;
        st = bp_maxpool_new(&part, 3, &po);
        if (!st) st = adopt(n, "pool", part);
    }
    if (!st) {
        snprintf(name, sizeof name, "%s_head", c.prefix);
        st = make_conv(&part, &c, f, n_classes, 1, name);
        if (!st) st = adopt(n, "head", part);
    }
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

int64_t bp_unet_param_count(bp_node *unet)
{
    bp_collector *v = NULL;
    if (!unet || bp_node_train_vars(unet, NULL, &v)) return -1;
    int64_t total = 0;
    for (size_t i = 0; i < bp_collector_len(v); i++) total += bp_collector_var(v, i)->value->numel;
    bp_collector_free(v);
    return total;
}
