/* examples/segment3d/intensity.c — see intensity.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "intensity.h"

static const char *const modes[] = {"dataset", "volume", "none"};

bool intensity_mode_known(const char *name)
{
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        if (!strcmp(name, modes[i])) return true;
    return false;
}

/* Mean and deviation of channel c over the volumes imgs[0 .. n-1], two passes in double. */
static void moments(bp_tensor *const *imgs, int n, int64_t c, double *mean, double *sd)
{
    double s = 0, ss = 0;
    int64_t count = 0;
    for (int i = 0; i < n; i++) {
        int64_t C = imgs[i]->shape[3], nv = imgs[i]->numel / C;
        const bp_real *x = bp_tensor_creals(imgs[i]);
        for (int64_t v = 0; v < nv; v++) s += x[v * C + c];
        count += nv;
    }
    *mean = count ? s / (double)count : 0;
    for (int i = 0; i < n; i++) {
        int64_t C = imgs[i]->shape[3], nv = imgs[i]->numel / C;
        const bp_real *x = bp_tensor_creals(imgs[i]);
        for (int64_t v = 0; v < nv; v++) ss += (x[v * C + c] - *mean) * (x[v * C + c] - *mean);
    }
    *sd = count ? sqrt(ss / (double)count) : 0;
}

/* x <- (x - mean) / sd for channel c of img (a constant channel is only shifted). */
static void scale_channel(bp_tensor *img, int64_t c, double mean, double sd)
{
    int64_t C = img->shape[3], nv = img->numel / C;
    bp_real *x = bp_tensor_reals(img);
    double inv = sd > 1e-8 ? 1 / sd : 1;
    for (int64_t v = 0; v < nv; v++) x[v * C + c] = (bp_real)((x[v * C + c] - mean) * inv);
}

static bp_status init(const char *mode, int64_t channels, intensity_norm *n)
{
    *n = (intensity_norm){.channels = channels};
    if (!intensity_mode_known(mode))
        return bp_fail(BP_EINVAL, "intensity normalisation \"%.32s\": want dataset, volume or none", mode);
    snprintf(n->mode, sizeof n->mode, "%s", mode);
    if (strcmp(mode, "dataset")) return BP_OK;
    n->mean = calloc((size_t)channels, sizeof *n->mean);
    n->sd = calloc((size_t)channels, sizeof *n->sd);
    return n->mean && n->sd ? BP_OK : bp_fail(BP_ENOMEM, "out of memory for %lld channels", (long long)channels);
}

bp_status intensity_fit(const char *mode, const volume_set *train, intensity_norm *n)
{
    BP_TRY(init(mode, train->channels, n));
    for (int64_t c = 0; n->mean && c < n->channels; c++) moments(train->img, train->n, c, &n->mean[c], &n->sd[c]);
    return BP_OK;
}

bp_status intensity_apply(const intensity_norm *n, bp_tensor *img)
{
    if (img->ndim != 4 || img->shape[3] != n->channels)
        return bp_fail(BP_ESHAPE, "intensity normalisation: an image of %lld channel(s), fitted to %lld",
                       (long long)(img->ndim == 4 ? img->shape[3] : -1), (long long)n->channels);
    for (int64_t c = 0; c < n->channels; c++) {
        double mean = 0, sd = 1;
        if (n->mean) mean = n->mean[c], sd = n->sd[c];
        else if (!strcmp(n->mode, "volume")) moments(&img, 1, c, &mean, &sd);
        else return BP_OK;
        scale_channel(img, c, mean, sd);
    }
    return BP_OK;
}

static bp_status put(bp_dict *d, const char *key, bp_dtype dt, int64_t len, const void *data)
{
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, dt, 1, &len, data));
    bp_status st = bp_dict_set_tensor(d, key, t);
    bp_tensor_free(t);
    return st;
}

bp_status intensity_to_meta(const intensity_norm *n, bp_dict *d)
{
    BP_TRY(put(d, "intensity/mode", BP_UINT8, (int64_t)strlen(n->mode), n->mode));
    if (!n->mean) return BP_OK;
    BP_TRY(put(d, "intensity/mean", BP_FLOAT64, n->channels, n->mean));
    return put(d, "intensity/sd", BP_FLOAT64, n->channels, n->sd);
}

/* The float64 vector key of d, channels long and finite (sd: also >= 0), into v. */
static bp_status get_vector(const bp_dict *d, const char *key, const char *file, int64_t channels, double *v)
{
    const bp_tensor *t = bp_dict_get_tensor(d, key);
    if (!t || t->dtype != BP_FLOAT64 || t->ndim != 1 || t->numel != channels)
        return bp_fail(BP_EFORMAT, "%s: meta/%s is missing or not %lld float64 values", file, key,
                       (long long)channels);
    const double *x = t->data;
    for (int64_t c = 0; c < channels; c++) {
        if (!isfinite(x[c]) || (strstr(key, "sd") && x[c] < 0))
            return bp_fail(BP_EFORMAT, "%s: meta/%s[%lld] is %g", file, key, (long long)c, x[c]);
        v[c] = x[c];
    }
    return BP_OK;
}

bp_status intensity_from_meta(const bp_dict *d, const char *file, int64_t channels, intensity_norm *n)
{
    const bp_tensor *t = bp_dict_get_tensor(d, "intensity/mode");
    char mode[16] = "volume";
    if (t && (t->dtype != BP_UINT8 || t->ndim != 1 || t->numel >= (int64_t)sizeof mode))
        return bp_fail(BP_EFORMAT, "%s: meta/intensity/mode is not a short text", file);
    if (t) memcpy(mode, t->data, (size_t)t->numel), mode[t->numel] = 0;
    if (!intensity_mode_known(mode))
        return bp_fail(BP_EFORMAT, "%s: meta/intensity/mode is \"%s\", not dataset, volume or none", file, mode);
    BP_TRY(init(mode, channels, n));
    if (!n->mean) return BP_OK;
    BP_TRY(get_vector(d, "intensity/mean", file, channels, n->mean));
    return get_vector(d, "intensity/sd", file, channels, n->sd);
}

void intensity_describe(const intensity_norm *n, char *buf, size_t cap)
{
    if (n->mean && n->channels == 1) snprintf(buf, cap, "%s (mean %.4g, sd %.4g)", n->mode, n->mean[0], n->sd[0]);
    else snprintf(buf, cap, "%s", n->mode);
}

void intensity_free(intensity_norm *n)
{
    free(n->mean);
    free(n->sd);
    *n = (intensity_norm){0};
}
