/* io/augment.c — patch sampling and augmentation (bpc/augment.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/augment.h>

bp_augment_opts bp_augment_defaults(void)
{
    return (bp_augment_opts){.flip_prob = {0.5, 0.5, 0.5}, .rot90_prob = 0.5, .scale = 0.1, .shift = 0.1};
}

/* The label at flat voxel v, as an integer. */
static int64_t label_of(const bp_tensor *lab, int64_t v)
{
    return lab->dtype == BP_INT32 ? ((const int32_t *)lab->data)[v] : (int64_t)((const float *)lab->data)[v];
}

static bp_status check_pair(const char *who, const bp_tensor *img, const bp_tensor *lab, bool lab_optional)
{
    char a[96], b[96];
    if (!img || img->ndim != 4 || img->dtype != BP_FLOAT32)
        return bp_fail(BP_ESHAPE, "%s: expected a float32 image (X, Y, Z, C)%s", who,
                       img ? bp_shape_str(a, sizeof a, img->ndim, img->shape) : " (got NULL)");
    if (!lab) return lab_optional ? BP_OK : bp_fail(BP_EINVAL, "%s: lab is NULL", who);
    bool ok = (lab->ndim == 3 || (lab->ndim == 4 && lab->shape[3] == 1)) &&
              (lab->dtype == BP_INT32 || lab->dtype == BP_FLOAT32);
    for (int d = 0; ok && d < 3; d++) ok = lab->shape[d] == img->shape[d];
    if (!ok)
        return bp_fail(BP_ESHAPE, "%s: expected an int32 or float32 label map (X, Y, Z) of image %s, got %s %s", who,
                       bp_shape_str(a, sizeof a, img->ndim, img->shape), bp_dtype_name(lab->dtype),
                       bp_shape_str(b, sizeof b, lab->ndim, lab->shape));
    return BP_OK;
}

bp_status bp_sample_patch(const bp_tensor *img, const bp_tensor *lab, const int64_t roi[3], double fg_prob,
                          bp_rng *rng, bp_tensor **img_patch, bp_tensor **lab_patch)
{
    const char *who = "sample_patch";
    if (!img_patch || !lab_patch || !rng || !roi) return bp_fail(BP_EINVAL, "%s: an argument is NULL", who);
    *img_patch = *lab_patch = NULL;
    BP_TRY(check_pair(who, img, lab, false));
    for (int d = 0; d < 3; d++)
        if (roi[d] < 1 || roi[d] > (1 << 16))
            return bp_fail(BP_EINVAL, "%s: roi[%d] = %lld (need 1..%d)", who, d, (long long)roi[d], 1 << 16);
    if (!(fg_prob >= 0 && fg_prob <= 1)) return bp_fail(BP_EINVAL, "%s: fg_prob = %g (need 0..1)", who, fg_prob);
    const int64_t X = img->shape[0], Y = img->shape[1], Z = img->shape[2], C = img->shape[3], n = X * Y * Z;
    /* the centre: a foreground voxel (count them, then take the k-th) or any
     * position; two draws per patch whatever the data */
    const bool want_fg = bp_rng_uniform(rng) < fg_prob;
    const uint64_t pick = bp_rng_next(rng);
    int64_t centre[3];
    int64_t nfg = 0;
    if (want_fg)
        for (int64_t v = 0; v < n; v++) nfg += label_of(lab, v) > 0;
    if (want_fg && nfg > 0) {
        int64_t k = (int64_t)(pick % (uint64_t)nfg), v = 0;
        for (;; v++)
            if (label_of(lab, v) > 0 && k-- == 0) break;
        centre[0] = v / (Y * Z), centre[1] = (v / Z) % Y, centre[2] = v % Z;
    } else {
        uint64_t p = pick;
        const int64_t dims[3] = {X, Y, Z};
        for (int d = 0; d < 3; d++) {
            /* a start in [0, dims - roi] when the patch fits, else 0: as centre */
            int64_t span = dims[d] > roi[d] ? dims[d] - roi[d] + 1 : 1;
            centre[d] = (int64_t)(p % (uint64_t)span) + roi[d] / 2;
            p /= (uint64_t)span;
        }
    }
    int64_t o[3];
    const int64_t dims[3] = {X, Y, Z};
    for (int d = 0; d < 3; d++) {
        o[d] = centre[d] - roi[d] / 2;
        /* keep the patch inside the volume where it fits */
        if (dims[d] >= roi[d]) o[d] = o[d] < 0 ? 0 : o[d] + roi[d] > dims[d] ? dims[d] - roi[d] : o[d];
        else o[d] = 0;
    }
    BP_TRY(bp_tensor_new(img_patch, BP_FLOAT32, 4, (int64_t[]){roi[0], roi[1], roi[2], C}));
    bp_status st = bp_tensor_new(lab_patch, BP_INT32, 3, roi);
    if (st) {
        bp_tensor_free(*img_patch);
        *img_patch = NULL;
        return st;
    }
    const float *x = img->data;
    float *pi = (*img_patch)->data;
    int32_t *pl = (*lab_patch)->data;
    for (int64_t i = 0; i < roi[0] && o[0] + i < X; i++)
        for (int64_t j = 0; j < roi[1] && o[1] + j < Y; j++)
            for (int64_t k = 0; k < roi[2] && o[2] + k < Z; k++) {
                const int64_t p = (i * roi[1] + j) * roi[2] + k, v = ((o[0] + i) * Y + o[1] + j) * Z + o[2] + k;
                memcpy(pi + p * C, x + v * C, sizeof *pi * (size_t)C);
                pl[p] = (int32_t)label_of(lab, v);
            }
    return BP_OK;
}

/* Mirrors axis a of a (x, y, z, c) array of elements of size es. */
static void flip(void *data, const int64_t s[4], size_t es, int a)
{
    char *p = data, tmp[64];
    int64_t stride = s[3];
    for (int d = 3; d > a + 1; d--) stride *= s[d - 1];
    const int64_t outer = a == 0 ? 1 : a == 1 ? s[0] : s[0] * s[1];
    const size_t run = es * (size_t)stride; /* bytes of one index along a */
    for (int64_t o = 0; o < outer; o++) {
        char *base = p + (size_t)o * run * (size_t)s[a];
        for (int64_t i = 0, j = s[a] - 1; i < j; i++, j--)
            for (size_t b = 0; b < run; b += sizeof tmp) {
                size_t k = run - b < sizeof tmp ? run - b : sizeof tmp;
                memcpy(tmp, base + (size_t)i * run + b, k);
                memcpy(base + (size_t)i * run + b, base + (size_t)j * run + b, k);
                memcpy(base + (size_t)j * run + b, tmp, k);
            }
    }
}

/* Turns a square (n, n, z, c) array by 90 degrees in the x-y plane:
 * out[i][j] = in[j][n-1-i]. */
static bp_status rot90(void *data, int64_t n, int64_t zc, size_t es)
{
    const size_t cell = es * (size_t)zc, total = cell * (size_t)(n * n);
    char *tmp = malloc(total), *p = data;
    if (!tmp) return bp_fail(BP_ENOMEM, "augment: out of memory");
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) memcpy(tmp + (size_t)(i * n + j) * cell, p + (size_t)(j * n + (n - 1 - i)) * cell, cell);
    memcpy(p, tmp, total);
    free(tmp);
    return BP_OK;
}

bp_status bp_augment(bp_tensor *img, bp_tensor *lab, const bp_augment_opts *opts, bp_rng *rng)
{
    const char *who = "augment";
    if (!opts || !rng) return bp_fail(BP_EINVAL, "%s: opts or rng is NULL", who);
    BP_TRY(check_pair(who, img, lab, true));
    for (int d = 0; d < 3; d++)
        if (!(opts->flip_prob[d] >= 0 && opts->flip_prob[d] <= 1))
            return bp_fail(BP_EINVAL, "%s: flip_prob[%d] = %g (need 0..1)", who, d, opts->flip_prob[d]);
    if (!(opts->rot90_prob >= 0 && opts->rot90_prob <= 1) || !(opts->scale >= 0 && opts->scale < 1) ||
        !(opts->shift >= 0 && isfinite(opts->shift)) || !(opts->noise_std >= 0 && isfinite(opts->noise_std)))
        return bp_fail(BP_EINVAL, "%s: rot90_prob %g (0..1), scale %g (0 <= scale < 1), shift %g, noise_std %g "
                       "(>= 0, finite): one is out of range", who, opts->rot90_prob, opts->scale, opts->shift,
                       opts->noise_std);
    const int64_t *s = img->shape;
    const int64_t ls[4] = {s[0], s[1], s[2], 1};
    /* one draw per decision, always made */
    bool fl[3];
    for (int d = 0; d < 3; d++) fl[d] = bp_rng_uniform(rng) < opts->flip_prob[d];
    const bool turn = bp_rng_uniform(rng) < opts->rot90_prob;
    const uint64_t quarter = 1 + bp_rng_below(rng, 3);
    const double sc = 1 + opts->scale * (2 * bp_rng_uniform(rng) - 1);
    const double sh = opts->shift * (2 * bp_rng_uniform(rng) - 1);
    for (int d = 0; d < 3; d++)
        if (fl[d]) {
            flip(img->data, s, sizeof(float), d);
            if (lab) flip(lab->data, ls, 4, d);
        }
    if (turn && s[0] == s[1])
        for (uint64_t q = 0; q < quarter; q++) {
            BP_TRY(rot90(img->data, s[0], s[2] * s[3], sizeof(float)));
            if (lab) BP_TRY(rot90(lab->data, s[0], s[2], 4));
        }
    float *x = img->data;
    for (int64_t i = 0; i < img->numel; i++) {
        double v = (double)x[i] * sc + sh;
        if (opts->noise_std > 0) v += opts->noise_std * bp_rng_normal(rng);
        x[i] = (float)v;
    }
    return BP_OK;
}
