/* examples/segment3d/model.c — see model.h. */
#include <stdio.h>
#include <string.h>
#include <bpc/sliding_window.h>
#include <bpc/unet.h>
#include "model.h"

bp_status net_new(bp_node **out, const net_arch *a, uint64_t seed)
{
    bp_rng rng;
    bp_rng_seed(&rng, seed);
    bp_unet_opts o = bp_unet_defaults();
    o.depth = (int)a->depth;
    o.base_channels = a->base;
    o.norm = !strcmp(a->norm, "batch") ? BP_UNET_BATCH : !strcmp(a->norm, "group") ? BP_UNET_GROUP : BP_UNET_INSTANCE;
    o.groups = 4;
    o.name = "unet";
    o.rng = &rng;
    bp_mode train = bp_training_mode(1); /* trainable vars; evaluation still runs with fit false */
    o.mode = &train;
    return bp_unet_new(out, a->channels, a->classes, &o);
}

void net_describe(bp_node *net, const net_arch *a, char *buf, size_t cap)
{
    snprintf(buf, cap, "U-Net depth %lld, base %lld, %s norm, %lld channel(s) -> %lld classes, %lld parameters",
             (long long)a->depth, (long long)a->base, a->norm, (long long)a->channels, (long long)a->classes,
             (long long)bp_unet_param_count(net));
}

static bp_status put_i64(bp_dict *d, const char *key, int64_t v)
{
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, BP_INT64, 0, NULL, &v));
    bp_status st = bp_dict_set_tensor(d, key, t);
    bp_tensor_free(t);
    return st;
}

bp_status arch_to_meta(const net_arch *a, bp_dict *d)
{
    BP_TRY(put_i64(d, "arch/channels", a->channels));
    BP_TRY(put_i64(d, "arch/classes", a->classes));
    BP_TRY(put_i64(d, "arch/base", a->base));
    BP_TRY(put_i64(d, "arch/depth", a->depth));
    BP_TRY(put_i64(d, "arch/patch", a->patch));
    int64_t n = (int64_t)strlen(a->norm);
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, BP_UINT8, 1, &n, a->norm));
    bp_status st = bp_dict_set_tensor(d, "arch/norm", t);
    bp_tensor_free(t);
    return st;
}

static bp_status get_i64(const bp_dict *d, const char *key, const char *file, int64_t lo, int64_t hi, int64_t *v)
{
    const bp_tensor *t = bp_dict_get_tensor(d, key);
    if (!t || t->numel != 1 || t->dtype != BP_INT64)
        return bp_fail(BP_EFORMAT, "%s: no meta/%s (not a checkpoint written by segment3d train)", file, key);
    *v = ((const int64_t *)t->data)[0];
    if (*v < lo || *v > hi)
        return bp_fail(BP_EFORMAT, "%s: meta/%s is %lld, outside [%lld, %lld]", file, key, (long long)*v,
                       (long long)lo, (long long)hi);
    return BP_OK;
}

bp_status arch_from_meta(const bp_dict *d, const char *file, net_arch *a)
{
    *a = (net_arch){0};
    BP_TRY(get_i64(d, "arch/channels", file, 1, 4096, &a->channels));
    BP_TRY(get_i64(d, "arch/classes", file, 2, 256, &a->classes));
    BP_TRY(get_i64(d, "arch/base", file, 1, 256, &a->base));
    BP_TRY(get_i64(d, "arch/depth", file, 1, 5, &a->depth));
    BP_TRY(get_i64(d, "arch/patch", file, 2, 256, &a->patch));
    const bp_tensor *t = bp_dict_get_tensor(d, "arch/norm");
    if (!t || t->dtype != BP_UINT8 || t->ndim != 1 || t->numel >= (int64_t)sizeof a->norm)
        return bp_fail(BP_EFORMAT, "%s: no meta/arch/norm (not a checkpoint written by segment3d train)", file);
    memcpy(a->norm, t->data, (size_t)t->numel);
    if (strcmp(a->norm, "instance") && strcmp(a->norm, "batch") && strcmp(a->norm, "group"))
        return bp_fail(BP_EFORMAT, "%s: meta/arch/norm is \"%s\", not instance, batch or group", file, a->norm);
    if (a->patch % (1 << a->depth))
        return bp_fail(BP_EFORMAT, "%s: meta/arch/patch %lld is not a multiple of 2^depth = %d", file,
                       (long long)a->patch, 1 << a->depth);
    return BP_OK;
}

bp_status net_sliding_window(bp_node *net, const net_arch *a, const bp_tensor *img, double overlap, bp_tensor **logits)
{
    bp_window_opts w = bp_window_defaults();
    w.roi[0] = w.roi[1] = w.roi[2] = a->patch;
    w.overlap = overlap;
    return bp_sliding_window(net, img, &w, logits);
}

void logits_argmax(const bp_tensor *logits, uint8_t *labels)
{
    int64_t K = logits->shape[3], n = logits->numel / K;
    const bp_real *l = bp_tensor_creals(logits);
    for (int64_t v = 0; v < n; v++) {
        int64_t best = 0;
        for (int64_t k = 1; k < K; k++)
            if (l[v * K + k] > l[v * K + best]) best = k;
        labels[v] = (uint8_t)best;
    }
}
