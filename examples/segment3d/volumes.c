/* examples/segment3d/volumes.c — see volumes.h. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "volumes.h"

static bp_status grow(volume_set *v, int n)
{
    v->img = calloc((size_t)n, sizeof *v->img);
    v->lab = calloc((size_t)n, sizeof *v->lab);
    v->names = calloc((size_t)n, sizeof *v->names);
    v->info = calloc((size_t)n, sizeof *v->info);
    if (!v->img || !v->lab || !v->names || !v->info) return bp_fail(BP_ENOMEM, "out of memory for %d volumes", n);
    return BP_OK;
}

void volumes_free(volume_set *v)
{
    for (int i = 0; i < v->n; i++) {
        bp_tensor_free(v->img ? v->img[i] : NULL);
        bp_tensor_free(v->lab ? v->lab[i] : NULL);
        if (v->names) free(v->names[i]);
    }
    free(v->img);
    free(v->lab);
    free(v->names);
    free(v->info);
    *v = (volume_set){0};
}

static void unit_geometry(bp_volume_info *info, const int64_t dims[3])
{
    *info = (bp_volume_info){.dims = {dims[0], dims[1], dims[2], 1}, .spacing = {1, 1, 1}, .datatype = 16,
                             .scl_slope = 1};
    for (int i = 0; i < 4; i++) info->affine[i][i] = 1;
}

/* ------------------------------------------------------------- synthetic */

typedef struct shape {
    int cls;
    double c[3], r[3];     /* centre, half-extent per axis */
} shape;

/* Whether voxel p lies in s: a sphere or ellipsoid (classes 1, 3) or a box (2). */
static bool inside(const shape *s, const double p[3])
{
    double q = 0;
    for (int a = 0; a < 3; a++) {
        double d = (p[a] - s->c[a]) / s->r[a];
        if (s->cls == 2) {
            if (fabs(d) > 1) return false;
        } else {
            q += d * d;
        }
    }
    return q <= 1;
}

/* Each structure's brightness; the background is 0. Distinct, so a voxel's
 * class is visible through the noise, with the shape to settle its edges. */
static const double brightness[SYNTH_CLASSES] = {0, 1.0, 2.0, -1.2};

static bp_status synth_one(bp_tensor **img, bp_tensor **lab, uint64_t seed, int index, int S)
{
    bp_rng r;
    bp_rng_seed(&r, seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1)));
    shape sh[8];
    int ns = 0;
    for (int cls = 1; cls < SYNTH_CLASSES; cls++) {
        int count = 1 + (int)bp_rng_below(&r, 2);
        for (int k = 0; k < count; k++) {
            shape *s = &sh[ns++];
            s->cls = cls;
            double rad = S * (0.12 + 0.08 * bp_rng_uniform(&r));
            for (int a = 0; a < 3; a++) {
                double lo = cls == 1 ? 1 : 0.6, hi = cls == 1 ? 1 : 1.3; /* spheres round, the others not */
                s->r[a] = rad * (lo + (hi - lo) * bp_rng_uniform(&r));
                if (s->r[a] < 1.5) s->r[a] = 1.5;
                s->c[a] = s->r[a] + (S - 1 - 2 * s->r[a]) * bp_rng_uniform(&r);
            }
        }
    }
    /* A smooth multiplicative inhomogeneity, as an MRI's bias field: one slow
     * wave per axis, of random phase, up to +-30 %. */
    const double pi = 3.14159265358979323846;
    double phase[3], w = 2 * pi / (1.5 * S);
    for (int a = 0; a < 3; a++) phase[a] = 2 * pi * bp_rng_uniform(&r);
    double amp = 0.1 + 0.2 * bp_rng_uniform(&r);
    int64_t dims[4] = {S, S, S, 1};
    BP_TRY(bp_tensor_new(img, BP_REAL_DTYPE, 4, dims));
    bp_status st = bp_tensor_new(lab, BP_INT32, 3, dims);
    if (st) return st;
    bp_real *x = bp_tensor_reals(*img);
    int32_t *y = (*lab)->data;
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            for (int k = 0; k < S; k++) {
                double p[3] = {i, j, k};
                int cls = 0;
                for (int s = 0; s < ns; s++)
                    if (inside(&sh[s], p)) cls = sh[s].cls; /* later structures lie on top */
                double bias = 1 + amp * (sin(w * i + phase[0]) + sin(w * j + phase[1]) + sin(w * k + phase[2])) / 3;
                int64_t v = ((int64_t)i * S + j) * S + k;
                x[v] = (bp_real)((brightness[cls] + 0.3) * bias + 0.4 * bp_rng_normal(&r));
                y[v] = cls;
            }
    return BP_OK;
}

bp_status volumes_synthetic(volume_set *v, uint64_t seed, int first, int n, int S)
{
    *v = (volume_set){.channels = 1, .classes = SYNTH_CLASSES};
    BP_TRY(grow(v, n));
    for (int i = 0; i < n; i++) {
        v->n = i + 1;
        BP_TRY(synth_one(&v->img[i], &v->lab[i], seed, first + i, S));
        char name[32];
        snprintf(name, sizeof name, "synthetic_%d", first + i);
        v->names[i] = strdup(name);
        if (!v->names[i]) return bp_fail(BP_ENOMEM, "out of memory");
        unit_geometry(&v->info[i], (const int64_t[]){S, S, S});
    }
    return BP_OK;
}

/* ------------------------------------------------------------ NIfTI folder */

static bool nifti_name(const char *s)
{
    size_t n = strlen(s);
    if (s[0] == '.') return false;
    return (n > 4 && !strcmp(s + n - 4, ".nii")) || (n > 7 && !strcmp(s + n - 7, ".nii.gz"));
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The sorted NIfTI names in dir (a new array of new strings). */
static bp_status list_dir(const char *dir, char ***names, int *n)
{
    DIR *d = opendir(dir);
    if (!d) return bp_fail(BP_EIO, "%s: cannot open the folder (want DATA/imagesTr and DATA/labelsTr)", dir);
    int cap = 0;
    *n = 0;
    *names = NULL;
    bp_status st = BP_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        if (!nifti_name(e->d_name)) continue;
        if (strlen(e->d_name) > 95) {
            st = bp_fail(BP_EINVAL, "%s/%s: file names may be at most 95 bytes long", dir, e->d_name);
            break;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **g = realloc(*names, sizeof *g * (size_t)cap);
            if (!g) {
                st = bp_fail(BP_ENOMEM, "out of memory");
                break;
            }
            *names = g;
        }
        if (!((*names)[*n] = strdup(e->d_name))) st = bp_fail(BP_ENOMEM, "out of memory");
        else (*n)++;
    }
    closedir(d);
    if (!st && *n == 0) st = bp_fail(BP_EINVAL, "%s: no .nii or .nii.gz files", dir);
    if (!st) qsort(*names, (size_t)*n, sizeof **names, by_name);
    return st;
}

/* The label map read from a float (X, Y, Z[, 1]) tensor, as int32 (X, Y, Z). */
static bp_status to_labels(const bp_tensor *f, const int64_t dims[3], const char *path, bp_tensor **out, int *max)
{
    if (f->shape[0] != dims[0] || f->shape[1] != dims[1] || f->shape[2] != dims[2] || f->shape[3] != 1)
        return bp_fail(BP_ESHAPE, "%s: a label map of (%lld,%lld,%lld,%lld) for an image of (%lld,%lld,%lld)", path,
                       (long long)f->shape[0], (long long)f->shape[1], (long long)f->shape[2], (long long)f->shape[3],
                       (long long)dims[0], (long long)dims[1], (long long)dims[2]);
    BP_TRY(bp_tensor_new(out, BP_INT32, 3, dims));
    const bp_real *x = bp_tensor_creals(f);
    int32_t *y = (*out)->data;
    for (int64_t i = 0; i < f->numel; i++) {
        double v = x[i];
        if (!(v >= 0 && v < 256 && v == floor(v)))
            return bp_fail(BP_EINVAL, "%s: voxel %lld has the label %g; labels must be integers in [0, 256)", path,
                           (long long)i, v);
        y[i] = (int32_t)v;
        if (y[i] > *max) *max = y[i];
    }
    return BP_OK;
}

static bp_status read_pair(volume_set *v, int i, const char *dir, const char *name, int *max)
{
    char ip[4096], lp[4096];
    snprintf(ip, sizeof ip, "%s/imagesTr/%s", dir, name);
    snprintf(lp, sizeof lp, "%s/labelsTr/%s", dir, name);
    struct stat sb;
    if (stat(lp, &sb)) return bp_fail(BP_EIO, "%s: no label file for the image %s", lp, ip);
    BP_TRY(bp_nifti_read(ip, true, &v->img[i], &v->info[i]));
    if (!(v->names[i] = strdup(name))) return bp_fail(BP_ENOMEM, "out of memory");
    if (i == 0) v->channels = v->img[0]->shape[3];
    if (v->img[i]->shape[3] != v->channels)
        return bp_fail(BP_ESHAPE, "%s: %lld channels, but %s/imagesTr/%s has %lld", ip, (long long)v->img[i]->shape[3],
                       dir, v->names[0], (long long)v->channels);
    bp_tensor *f = NULL;
    BP_TRY(bp_nifti_read(lp, true, &f, NULL));
    bp_status st = to_labels(f, v->img[i]->shape, lp, &v->lab[i], max);
    bp_tensor_free(f);
    return st;
}

bp_status volumes_from_dir(volume_set *v, const char *dir)
{
    *v = (volume_set){0};
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/imagesTr", dir);
    char **names = NULL;
    int n = 0;
    BP_TRY(list_dir(sub, &names, &n));
    bp_status st = grow(v, n);
    int max = 0;
    for (int i = 0; !st && i < n; i++) {
        v->n = i + 1;
        st = read_pair(v, i, dir, names[i], &max);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!st && max < 1) st = bp_fail(BP_EINVAL, "%s/labelsTr: every label is 0; nothing to segment", dir);
    v->classes = max + 1;
    return st;
}

bp_status volumes_split(volume_set *all, double val_fraction, uint64_t seed, volume_set *train, volume_set *val)
{
    int n = all->n, nv = (int)lround(val_fraction * n);
    if (n < 2) return bp_fail(BP_EINVAL, "%d labelled volume(s): a split needs at least 2", n);
    if (nv < 1) nv = 1;
    if (nv > n - 1) nv = n - 1;
    int *perm = malloc(sizeof *perm * (size_t)n);
    if (!perm) return bp_fail(BP_ENOMEM, "out of memory");
    bp_rng r;
    bp_rng_seed(&r, seed ^ 0x5eed5eedULL);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)bp_rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    *train = (volume_set){.channels = all->channels, .classes = all->classes};
    *val = *train;
    bp_status st = grow(train, n - nv);
    if (!st) st = grow(val, nv);
    for (int i = 0; !st && i < n; i++) {
        volume_set *d = i < nv ? val : train;
        int k = perm[i], j = d->n++;
        d->img[j] = all->img[k];
        d->lab[j] = all->lab[k];
        d->names[j] = all->names[k];
        d->info[j] = all->info[k];
        all->img[k] = all->lab[k] = NULL;
        all->names[k] = NULL;
    }
    free(perm);
    volumes_free(all);
    return st;
}
