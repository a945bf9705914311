/* io/sliding_window.c — whole-scan inference in overlapping windows
 * (bpc/sliding_window.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/autograd.h>
#include <bpc/share.h>
#include <bpc/sliding_window.h>

bp_window_opts bp_window_defaults(void) { return (bp_window_opts){.overlap = 0.5, .gaussian = true, .batch = 1}; }

/* Window starts along one axis: every step, the last flush with the end;
 * one window at 0 when the axis is no longer than the window. */
static int64_t axis_count(int64_t size, int64_t roi, int64_t step)
{
    return size <= roi ? 1 : (size - roi + step - 1) / step + 1;
}
static int64_t axis_start(int64_t i, int64_t n, int64_t size, int64_t roi, int64_t step)
{
    return size <= roi ? 0 : i == n - 1 ? size - roi : i * step;
}
static int64_t step_of(int64_t roi, double overlap)
{
    int64_t s = (int64_t)floor((double)roi * (1 - overlap));
    return s < 1 ? 1 : s;
}

static bp_status check_opts(const bp_window_opts *o)
{
    for (int d = 0; d < 3; d++)
        if (o->roi[d] < 1 || o->roi[d] > (1 << 20))
            return bp_fail(BP_EINVAL, "sliding_window: roi[%d] = %lld (need 1..%d)", d, (long long)o->roi[d], 1 << 20);
    if (!(o->overlap >= 0 && o->overlap < 1))
        return bp_fail(BP_EINVAL, "sliding_window: overlap = %g (need 0 <= overlap < 1)", o->overlap);
    if (o->batch < 1 || o->batch > 4096)
        return bp_fail(BP_EINVAL, "sliding_window: batch = %lld (need 1..4096)", (long long)o->batch);
    return BP_OK;
}

int64_t bp_sliding_window_count(const int64_t dims[3], const bp_window_opts *opts)
{
    if (!dims || !opts || check_opts(opts)) return 0;
    int64_t n = 1;
    for (int d = 0; d < 3; d++) n *= axis_count(dims[d], opts->roi[d], step_of(opts->roi[d], opts->overlap));
    return n;
}

/* The importance of each window position: a separable Gaussian around the
 * window's centre with sigma = roi / 8, or 1. Floored at 1e-3 of its peak so
 * that voxels near a border that only one window covers still get a weight. */
static float *importance(const int64_t roi[3], bool gaussian)
{
    const int64_t n = roi[0] * roi[1] * roi[2];
    float *w = malloc(sizeof *w * (size_t)n);
    if (!w) return NULL;
    double *g[3];
    double *tab = malloc(sizeof(double) * (size_t)(roi[0] + roi[1] + roi[2]));
    if (!tab) {
        free(w);
        return NULL;
    }
    for (int d = 0, off = 0; d < 3; off += (int)roi[d], d++) {
        g[d] = tab + off;
        const double c = (double)(roi[d] - 1) / 2, sigma = 0.125 * (double)roi[d];
        for (int64_t p = 0; p < roi[d]; p++)
            g[d][p] = gaussian && roi[d] > 1 ? exp(-((double)p - c) * ((double)p - c) / (2 * sigma * sigma)) : 1;
    }
    for (int64_t i = 0; i < roi[0]; i++)
        for (int64_t j = 0; j < roi[1]; j++)
            for (int64_t k = 0; k < roi[2]; k++) {
                double v = g[0][i] * g[1][j] * g[2][k];
                w[(i * roi[1] + j) * roi[2] + k] = (float)(v < 1e-3 ? 1e-3 : v);
            }
    free(tab);
    return w;
}

bp_status bp_sliding_window(bp_node *model, const bp_tensor *vol, const bp_window_opts *opts, bp_tensor **out)
{
    const char *who = "sliding_window";
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!model || !vol || !opts) return bp_fail(BP_EINVAL, "%s: model, vol or opts is NULL", who);
    BP_TRY(check_opts(opts));
    char s[96];
    if (vol->ndim != 4 || vol->dtype != BP_REAL_DTYPE || vol->numel < 1)
        return bp_fail(BP_ESHAPE, "%s: expected a non-empty %s volume (X, Y, Z, C), got %dD %s %s", who,
                       bp_dtype_name(BP_REAL_DTYPE), vol->ndim, bp_dtype_name(vol->dtype),
                       bp_shape_str(s, sizeof s, vol->ndim, vol->shape));
    const int64_t *dims = vol->shape, C = vol->shape[3], *roi = opts->roi;
    int64_t steps[3], counts[3], total = 1;
    for (int d = 0; d < 3; d++) {
        steps[d] = step_of(roi[d], opts->overlap);
        counts[d] = axis_count(dims[d], roi[d], steps[d]);
        total *= counts[d];
    }
    const int64_t P = roi[0] * roi[1] * roi[2], B = opts->batch < total ? opts->batch : total;
    if (P > ((int64_t)1 << 34) / (C * B))
        return bp_fail(BP_EINVAL, "%s: windows of %lld voxels x %lld channels x batch %lld are too large", who,
                       (long long)P, (long long)C, (long long)B);
    float *imp = importance(roi, opts->gaussian);
    float *wsum = calloc((size_t)(dims[0] * dims[1] * dims[2]), sizeof *wsum);
    int64_t *origin = malloc(sizeof(int64_t) * 3 * (size_t)B);
    bp_tensor *in = NULL, *acc = NULL;
    bp_status st = imp && wsum && origin ? BP_OK : bp_fail(BP_ENOMEM, "%s: out of memory", who);
    if (!st) st = bp_tensor_new(&in, BP_REAL_DTYPE, 5, (int64_t[]){B, roi[0], roi[1], roi[2], C});
    const bool had_fit = bp_share_has_fit(), fit = bp_share_fit();
    bp_share_save_fit(false);
    bp_no_grad_begin();
    int64_t K = -1;
    const bp_real *x = vol->data;
    for (int64_t w0 = 0; !st && w0 < total; w0 += B) {
        const int64_t nb = total - w0 < B ? total - w0 : B;
        bp_tensor *batch_in = in, *y = NULL;
        /* the last batch may hold fewer windows: a view of its first nb */
        if (nb != B) st = bp_tensor_reshape(&batch_in, in, 5, (int64_t[]){nb, roi[0], roi[1], roi[2], C});
        /* gather the windows (zeros outside the volume) */
        bp_real *xin = in->data;
        for (int64_t b = 0; !st && b < nb; b++) {
            int64_t w = w0 + b, o[3];
            int64_t iz = w % counts[2], iy = (w / counts[2]) % counts[1], ix = w / (counts[1] * counts[2]);
            o[0] = axis_start(ix, counts[0], dims[0], roi[0], steps[0]);
            o[1] = axis_start(iy, counts[1], dims[1], roi[1], steps[1]);
            o[2] = axis_start(iz, counts[2], dims[2], roi[2], steps[2]);
            memcpy(origin + 3 * b, o, sizeof o);
            bp_real *dst = xin + b * P * C;
            for (int64_t i = 0; i < roi[0]; i++)
                for (int64_t j = 0; j < roi[1]; j++) {
                    bp_real *row = dst + ((i * roi[1] + j) * roi[2]) * C;
                    const int64_t gi = o[0] + i, gj = o[1] + j;
                    int64_t kin = gi < dims[0] && gj < dims[1] ? dims[2] - o[2] : 0;
                    if (kin > roi[2]) kin = roi[2];
                    if (kin > 0) memcpy(row, x + ((gi * dims[1] + gj) * dims[2] + o[2]) * C, sizeof *row * (size_t)(kin * C));
                    memset(row + kin * C, 0, sizeof *row * (size_t)((roi[2] - kin) * C));
                }
        }
        if (!st) {
            st = bp_node_update(model, batch_in, &y);
            if (st)
                st = bp_fail(st, "%s: window %lld of %lld (origin %lld, %lld, %lld): %s", who, (long long)w0,
                             (long long)total, (long long)origin[0], (long long)origin[1], (long long)origin[2],
                             bp_last_error());
        }
        if (!st && (y->ndim != 5 || y->shape[0] != nb || y->shape[1] != roi[0] || y->shape[2] != roi[1] ||
                    y->shape[3] != roi[2] || y->dtype != BP_REAL_DTYPE || (K >= 0 && y->shape[4] != K)))
            st = bp_fail(BP_ESHAPE, "%s: the model turned windows (%lld, %lld, %lld, %lld, %lld) into %s; it must "
                         "keep the window's size", who, (long long)nb, (long long)roi[0], (long long)roi[1],
                         (long long)roi[2], (long long)C, bp_shape_str(s, sizeof s, y->ndim, y->shape));
        if (!st && K < 0) {
            K = y->shape[4];
            st = bp_tensor_new(&acc, BP_REAL_DTYPE, 4, (int64_t[]){dims[0], dims[1], dims[2], K});
        }
        /* accumulate weight * output and the weights, inside the volume only */
        for (int64_t b = 0; !st && b < nb; b++) {
            const int64_t *o = origin + 3 * b;
            const bp_real *yb = (const bp_real *)y->data + b * P * K;
            bp_real *a = acc->data;
            for (int64_t i = 0; i < roi[0] && o[0] + i < dims[0]; i++)
                for (int64_t j = 0; j < roi[1] && o[1] + j < dims[1]; j++)
                    for (int64_t k = 0; k < roi[2] && o[2] + k < dims[2]; k++) {
                        const int64_t p = (i * roi[1] + j) * roi[2] + k;
                        const int64_t g = ((o[0] + i) * dims[1] + o[1] + j) * dims[2] + o[2] + k;
                        const float wt = imp[p];
                        wsum[g] += wt;
                        for (int64_t c = 0; c < K; c++) a[g * K + c] += wt * yb[p * K + c];
                    }
        }
        bp_tensor_free(y);
        if (batch_in != in) bp_tensor_free(batch_in);
        if (!st && opts->progress) opts->progress(w0 + nb, total, opts->progress_user);
    }
    bp_no_grad_end();
    bp_share_save_fit(had_fit && fit); /* an unset fit read as false: it stays false */
    if (!st) {
        bp_real *a = acc->data;
        const int64_t nv = dims[0] * dims[1] * dims[2];
        for (int64_t g = 0; g < nv; g++)
            for (int64_t c = 0; c < K; c++) a[g * K + c] /= wsum[g]; /* every voxel is covered: wsum > 0 */
        *out = acc;
        acc = NULL;
    }
    bp_tensor_free(acc);
    bp_tensor_free(in);
    free(imp);
    free(wsum);
    free(origin);
    return st;
}
