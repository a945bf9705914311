/* examples/train3d/data.c — the synthetic set, .npy folders, splits, batches. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/checkpoint.h>
#include "data.h"
#include "shapes3d.h"

static int64_t sample_size(const dataset *d) { return d->dims[0] * d->dims[1] * d->dims[2] * d->channels; }

bool data_bytes(int64_t n, int64_t per_sample, size_t *bytes)
{
    int64_t elems;
    size_t b;
    if (n < 0 || per_sample < 0 || __builtin_mul_overflow(n, per_sample, &elems) ||
        __builtin_mul_overflow((size_t)elems, sizeof(float), &b))
        return false;
    *bytes = b;
    return true;
}

/* malloc of n samples of per floats; NULL also when the size does not fit a size_t. */
static float *alloc_samples(int64_t n, int64_t per)
{
    size_t bytes;
    return data_bytes(n, per, &bytes) ? malloc(bytes ? bytes : 1) : NULL;
}

void data_free(dataset *d)
{
    if (!d) return;
    free(d->x);
    free(d->labels);
    for (int64_t i = 0; d->names && i < d->n; i++) free(d->names[i]);
    free(d->names);
    memset(d, 0, sizeof *d);
}

bp_status data_synthetic(dataset *d, uint64_t seed, int64_t first, int64_t n, int S)
{
    memset(d, 0, sizeof *d);
    int64_t per;
    if (n < 1 || S < 1 || __builtin_mul_overflow((int64_t)S * S, (int64_t)S, &per) || !data_bytes(n, per, &(size_t){0}))
        return bp_fail(BP_EINVAL, "synthetic data: %lld volumes of %d^3 floats do not fit in memory", (long long)n, S);
    d->n = n;
    d->dims[0] = d->dims[1] = d->dims[2] = S;
    d->channels = 1;
    d->classes = SHAPES3D_CLASSES;
    d->x = alloc_samples(n, per);
    d->labels = malloc(sizeof(int64_t) * (size_t)n);
    if (!d->x || !d->labels) {
        data_free(d);
        return bp_fail(BP_ENOMEM, "synthetic data: out of memory for %lld volumes of %d^3", (long long)n, S);
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; i++)
        d->labels[i] = shapes3d_sample(seed, first + i, S, d->x + i * per);
    return BP_OK;
}

/* Reads one "file,label" line; returns 1 on a record, 0 at the end, -1 on a malformed line. */
static int csv_record(FILE *f, char *file, size_t cap, long long *label, int *lineno)
{
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        (*lineno)++;
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0) continue;
        char *comma = strrchr(line, ',');
        if (!comma) return -1;
        *comma = '\0';
        if (*lineno == 1 && strcmp(comma + 1, "label") == 0) continue; /* header */
        char *end;
        errno = 0;
        *label = strtoll(comma + 1, &end, 10);
        if (errno || end == comma + 1 || *end != '\0' || *label < 0 || *label >= 1000000) return -1;
        if (strlen(line) >= cap) return -1;
        memcpy(file, line, strlen(line) + 1);
        return 1;
    }
    return 0;
}

/* A NaN or an infinity trains to a NaN loss: refuse it where it comes from. */
static bp_status check_finite(const char *vpath, const float *x, const dataset *d)
{
    int64_t per = sample_size(d);
    for (int64_t i = 0; i < per; i++) {
        if (isfinite(x[i])) continue;
        int64_t c = i % d->channels, v = i / d->channels;
        int64_t k = v % d->dims[2], j = v / d->dims[2] % d->dims[1], h = v / d->dims[2] / d->dims[1];
        return bp_fail(BP_ENUMERIC, "%s: voxel %lld (index (%lld,%lld,%lld,%lld)) is %s; volumes must be finite", vpath,
                       (long long)i, (long long)h, (long long)j, (long long)k, (long long)c,
                       isnan(x[i]) ? "NaN" : x[i] > 0 ? "+Inf" : "-Inf");
    }
    return BP_OK;
}

/* The model gets one output per label value up to the largest: when most of
 * those classes have no sample, the labels are not 0..K-1 (a typo such as
 * 999999 among 0/1 would build a million-class model). */
static bp_status check_classes(const dataset *d, const char *path, const char *top_file, int top_line)
{
    unsigned char *seen = calloc((size_t)d->classes, 1);
    if (!seen) return bp_fail(BP_ENOMEM, "%s: out of memory", path);
    int64_t used = 0;
    for (int64_t i = 0; i < d->n; i++) {
        used += !seen[d->labels[i]];
        seen[d->labels[i]] = 1;
    }
    free(seen);
    int64_t empty = d->classes - used;
    if (2 * empty <= d->classes) return BP_OK;
    return bp_fail(BP_EFORMAT,
                   "%s: labels run to %d (%s, line %d), so the model would have %d classes, but %lld of them have no "
                   "sample; number the classes 0..K-1",
                   path, d->classes - 1, top_file, top_line, d->classes, (long long)empty);
}

bp_status data_from_dir(dataset *d, const char *dir)
{
    memset(d, 0, sizeof *d);
    char path[4096], file[2048];
    snprintf(path, sizeof path, "%s/labels.csv", dir);
    FILE *f = fopen(path, "r");
    if (!f) return bp_fail(BP_EIO, "%s: cannot open (%s); expected lines \"file.npy,label\"", path, strerror(errno));
    bp_status st = BP_OK;
    int64_t cap = 0, per = 0;
    long long label;
    int lineno = 0, r, top_line = 0;
    char top_file[256] = "";
    while (!st && (r = csv_record(f, file, sizeof file, &label, &lineno)) != 0) {
        if (r < 0) {
            st = bp_fail(BP_EFORMAT, "%s:%d: expected \"file.npy,label\" with an integer label in [0, 1000000)", path,
                         lineno);
            break;
        }
        char vpath[8192];
        snprintf(vpath, sizeof vpath, "%s/%s", dir, file);
        bp_tensor *t = NULL;
        st = bp_npy_read(vpath, &t); /* its messages name the file */
        if (st) break;
        char shp[96];
        if ((t->ndim != 3 && t->ndim != 4) || (t->dtype != BP_FLOAT32 && t->dtype != BP_UINT8)) {
            st = bp_fail(BP_EFORMAT, "%s: expected a float32 or uint8 volume of shape (H,W,D) or (H,W,D,C), got %s %s",
                         vpath, bp_dtype_name(t->dtype), bp_shape_str(shp, sizeof shp, t->ndim, t->shape));
        } else if (t->numel == 0) {
            /* A first volume of (0,0,0) would pass every later check and fail deep in Conv3d, unnamed. */
            st = bp_fail(BP_ESHAPE, "%s: volume of shape %s has no voxels", vpath,
                         bp_shape_str(shp, sizeof shp, t->ndim, t->shape));
        } else if (d->n == 0) {
            for (int i = 0; i < 3; i++) d->dims[i] = t->shape[i];
            d->channels = t->ndim == 4 ? t->shape[3] : 1;
            per = sample_size(d);
        } else if (t->numel != per || t->shape[0] != d->dims[0] || t->shape[1] != d->dims[1] ||
                   t->shape[2] != d->dims[2]) {
            st = bp_fail(BP_ESHAPE, "%s: shape %s differs from the first volume's (%lld,%lld,%lld,%lld)", vpath,
                         bp_shape_str(shp, sizeof shp, t->ndim, t->shape), (long long)d->dims[0],
                         (long long)d->dims[1], (long long)d->dims[2], (long long)d->channels);
        }
        if (!st && d->n == cap) {
            cap = cap ? cap * 2 : 64;
            size_t bytes = 0;
            float *x = data_bytes(cap, per, &bytes) ? realloc(d->x, bytes) : NULL;
            int64_t *l = x ? realloc(d->labels, sizeof(int64_t) * (size_t)cap) : NULL;
            char **nm = l ? realloc(d->names, sizeof(char *) * (size_t)cap) : NULL;
            if (x) d->x = x;
            if (l) d->labels = l;
            if (nm) d->names = nm;
            if (!nm) st = bp_fail(BP_ENOMEM, "%s: out of memory at %lld volumes", dir, (long long)d->n);
        }
        if (!st) {
            float *dst = d->x + d->n * per;
            for (int64_t i = 0; i < per; i++) dst[i] = (float)bp_tensor_get(t, i);
            st = check_finite(vpath, dst, d);
        }
        if (!st) {
            d->labels[d->n] = label;
            d->names[d->n] = strdup(file);
            if (!d->names[d->n]) {
                st = bp_fail(BP_ENOMEM, "%s: out of memory", dir);
                bp_tensor_free(t);
                break;
            }
            if (label + 1 > d->classes) {
                d->classes = (int)label + 1;
                snprintf(top_file, sizeof top_file, "%.200s", file); /* a name for the message */
                top_line = lineno;
            }
            d->n++;
        }
        bp_tensor_free(t);
    }
    fclose(f);
    if (!st && d->n < 2) st = bp_fail(BP_EFORMAT, "%s: lists %lld volumes; at least 2 are needed", path, (long long)d->n);
    if (!st && d->classes < 2) st = bp_fail(BP_EFORMAT, "%s: every label is 0; at least 2 classes are needed", path);
    if (!st) st = check_classes(d, path, top_file, top_line);
    if (st) data_free(d);
    return st;
}

bp_status data_split(dataset *d, double val_fraction, uint64_t seed, dataset *train, dataset *val)
{
    /* d is emptied on every path, failures included (the caller no longer owns it). */
    int64_t nv = 0, *perm = NULL;
    bp_status st = BP_OK;
    if (!(val_fraction > 0 && val_fraction < 1))
        st = bp_fail(BP_EINVAL, "--val-split must be in (0, 1), got %g", val_fraction);
    else if ((nv = (int64_t)(d->n * val_fraction + 0.5)) < 1 || nv >= d->n)
        st = bp_fail(BP_EINVAL, "--val-split %g of %lld samples leaves an empty part", val_fraction, (long long)d->n);
    else if (!(perm = malloc(sizeof *perm * (size_t)d->n)))
        st = bp_fail(BP_ENOMEM, "split: out of memory");
    if (st) {
        data_free(d);
        return st;
    }
    bp_rng r;
    bp_rng_seed(&r, seed ^ 0x5151);
    for (int64_t i = 0; i < d->n; i++) perm[i] = i;
    for (int64_t i = d->n - 1; i > 0; i--) {
        int64_t j = (int64_t)bp_rng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int64_t per = sample_size(d);
    dataset *parts[2] = {val, train};
    int64_t counts[2] = {nv, d->n - nv}, at = 0;
    for (int p = 0; p < 2; p++) {
        dataset *o = parts[p];
        *o = *d;
        o->n = counts[p];
        o->x = alloc_samples(o->n, per);
        o->labels = malloc(sizeof(int64_t) * (size_t)o->n);
        o->names = NULL;
        if (!o->x || !o->labels) {
            st = bp_fail(BP_ENOMEM, "split: out of memory");
            continue;
        }
        for (int64_t i = 0; i < o->n; i++, at++) {
            memcpy(o->x + i * per, d->x + perm[at] * per, sizeof(float) * (size_t)per);
            o->labels[i] = d->labels[perm[at]];
        }
    }
    free(perm);
    data_free(d);
    if (st) {
        data_free(train);
        data_free(val);
    }
    return st;
}

void data_batch(const dataset *d, const int64_t *idx, int64_t b, float *x, int64_t *y)
{
    int64_t per = sample_size(d);
    for (int64_t i = 0; i < b; i++) {
        memcpy(x + i * per, d->x + idx[i] * per, sizeof(float) * (size_t)per);
        y[i] = d->labels[idx[i]];
    }
}
