/* layers/pool_fast.c — the pooling kernels update() runs: max pooling a
 * row of outputs at a time over 64-byte channel vectors (simd.h), averages
 * box by box, and dx by a scatter or, for disjoint max windows, one pass
 * over the input (see pool_internal.h; pool_ref.c holds the definition).
 * Parallel over (sample, output row) forward, samples or input rows backward. */
#include <stdlib.h>
#include <string.h>
#include "pool_internal.h"
#include "simd.h"


/* The input box [b0, b1) of output index o along dim d (clipped to the input). */
static void box(const bp__pool_geom *g, int d, int64_t o, int64_t *b0, int64_t *b1)
{
    if (g->kind == BP_POOL_ADAPTIVE_AVG) {
        /* BrainPy's split: L = n*q + r; the first r bins take q + 1 elements,
         * the rest q, without overlap (PyTorch's bins overlap instead). */
        int64_t q = g->in[d] / g->out[d], r = g->in[d] % g->out[d];
        *b0 = o < r ? o * (q + 1) : r * (q + 1) + (o - r) * q;
        *b1 = *b0 + (o < r ? q + 1 : q);
        return;
    }
    int64_t start = o * g->s[d] - g->lo[d], end = start + g->k[d];
    *b0 = start < 0 ? 0 : start;
    *b1 = end > g->in[d] ? g->in[d] : end;
}

/* The divisor of an average: the number of real (non-padding) elements in
 * the window, as BrainPy's AvgPool with padding (its window_counts), and the
 * bin size for the adaptive pool. Without padding it is the window size. */
static double divisor(const int64_t *b0, const int64_t *b1)
{
    return (double)((b1[0] - b0[0]) * (b1[1] - b0[1]) * (b1[2] - b0[2]));
}

/* One input position of a max window, channels [0, n): y[c], arg[c] take
 * x[c], pos where x[c] is larger or NaN, and a NaN, once in, stays (XLA's max
 * propagates NaN). A select per element, no branch, so the loop vectorises. */
static inline __attribute__((always_inline)) void max_step(int64_t n, bp_real *restrict y, int32_t *restrict arg,
                                                           const bp_real *restrict x, int32_t pos)
{
    for (int64_t c = 0; c < n; c++) {
        bp_real yv = y[c], xv = x[c];
        bool take = (yv == yv) & !(xv <= yv);
        y[c] = take ? xv : yv;
        arg[c] = take ? pos : arg[c];
    }
}

/* Max pooling of one output row (windows [b0, b1) along dims 0 and 1): y and
 * arg of every window start from its first element (ties keep the first),
 * then each input row of the windows is read once, front to back, and folds
 * into the outputs it covers. Reading rows whole keeps the hardware
 * prefetchers streaming (window by window, each 2-position read would start
 * a new stream); full runs of PVL channels go through registers. */
static void max_row(const bp__pool_geom *g, const int64_t *b0, const int64_t *b1, const bp_real *xb, bp_real *y, int32_t *arg)
{
    const int64_t C = g->C, c_full = C / PVL * PVL;
    for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
        for (int64_t i1 = b0[1]; i1 < b1[1]; i1++) {
            const int64_t row = (i0 * g->in[1] + i1) * g->in[2];
            const bool first_row = i0 == b0[0] && i1 == b0[1];
            for (int64_t o2 = 0; o2 < g->out[2]; o2++) {
                int64_t lo2, hi2;
                box(g, 2, o2, &lo2, &hi2);
                bp_real *yo = y + o2 * C;
                int32_t *ao = arg + o2 * C;
                if (first_row) { /* the window's first element starts it */
                    memcpy(yo, xb + (row + lo2) * C, sizeof(bp_real) * (size_t)C);
                    for (int64_t c = 0; c < C; c++) ao[c] = (int32_t)(row + lo2);
                }
                for (int64_t c0 = 0; c0 < c_full; c0 += PVL) {
                    pvr m = *(const pvru *)(yo + c0);
                    pvi a;
                    load_idx(&a, ao + c0);
                    for (int64_t i2 = lo2 + first_row; i2 < hi2; i2++) {
                        pvr xv = *(const pvru *)(xb + (row + i2) * C + c0);
                        max_take(&m, &a, &xv, (pidx)(row + i2));
                    }
                    *(pvru *)(yo + c0) = m;
                    store_idx(ao + c0, &a);
                }
                for (int64_t i2 = lo2 + first_row; i2 < hi2 && c_full < C; i2++)
                    max_step(C - c_full, yo + c_full, ao + c_full, xb + (row + i2) * C + c_full, (int32_t)(row + i2));
            }
        }
}

/* Parallel over output rows (b, o0, o1): the box along dims 0 and 1 is
 * worked out once per row, and the C-vector loops run with no division in
 * them. */
void bp__pool_forward(const bp__pool_geom *g, bp_real *y, int32_t *arg, const bp_real *x)
{
    const int64_t C = g->C, rows = g->B * g->out[0] * g->out[1];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o1 = r % g->out[1], t = r / g->out[1], o0 = t % g->out[0], b = t / g->out[0];
        int64_t b0[3], b1[3];
        box(g, 0, o0, &b0[0], &b1[0]);
        box(g, 1, o1, &b0[1], &b1[1]);
        const bp_real *xb = x + b * g->in[0] * g->in[1] * g->in[2] * C;
        if (g->kind == BP_POOL_MAX) {
            max_row(g, b0, b1, xb, y + r * g->out[2] * C, arg + r * g->out[2] * C);
            continue;
        }
        for (int64_t o2 = 0; o2 < g->out[2]; o2++) {
            box(g, 2, o2, &b0[2], &b1[2]);
            bp_real *yr = y + (r * g->out[2] + o2) * C;
            for (int64_t c = 0; c < C; c++) yr[c] = 0;
            for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
                for (int64_t i1 = b0[1]; i1 < b1[1]; i1++)
                    for (int64_t i2 = b0[2]; i2 < b1[2]; i2++) {
                        const bp_real *xr = xb + ((i0 * g->in[1] + i1) * g->in[2] + i2) * C;
                        for (int64_t c = 0; c < C; c++) yr[c] += xr[c];
                    }
            bp_real inv = (bp_real)(1.0 / divisor(b0, b1));
            for (int64_t c = 0; c < C; c++) yr[c] *= inv;
        }
    }
}

/* dx = scatter of dy; parallel over samples (windows of one sample may
 * overlap). Each sample's part is zeroed just before its scatter, while it
 * is still in cache. */
void bp__pool_backward_scatter(const bp__pool_geom *g, bp_real *dx, const int32_t *arg, const bp_real *dy)
{
    const int64_t C = g->C, per_out = g->out[0] * g->out[1] * g->out[2], per_in = g->in[0] * g->in[1] * g->in[2];
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < g->B; b++) {
        bp_real *dxb = dx + b * per_in * C;
        memset(dxb, 0, sizeof(bp_real) * (size_t)(per_in * C));
        for (int64_t q = 0; q < per_out; q++) {
            int64_t r = b * per_out + q;
            const bp_real *dyr = dy + r * C;
            if (g->kind == BP_POOL_MAX) {
                const int32_t *ar = arg + r * C;
                for (int64_t c = 0; c < C; c++)
                    if (ar[c] >= 0) dxb[(int64_t)ar[c] * C + c] += dyr[c];
                continue;
            }
            int64_t o2 = q % g->out[2], t = q / g->out[2], o1 = t % g->out[1], o0 = t / g->out[1];
            int64_t b0[3], b1[3];
            box(g, 0, o0, &b0[0], &b1[0]);
            box(g, 1, o1, &b0[1], &b1[1]);
            box(g, 2, o2, &b0[2], &b1[2]);
            bp_real inv = (bp_real)(1.0 / divisor(b0, b1));
            for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
                for (int64_t i1 = b0[1]; i1 < b1[1]; i1++)
                    for (int64_t i2 = b0[2]; i2 < b1[2]; i2++) {
                        bp_real *dxr = dxb + ((i0 * g->in[1] + i1) * g->in[2] + i2) * C;
                        for (int64_t c = 0; c < C; c++) dxr[c] += dyr[c] * inv;
                    }
        }
    }
}

/* Max pooling's dx when the windows are disjoint (stride >= kernel, no low
 * padding): each input position lies in at most one window, so dx is one
 * pass over the input rows, dx[i] = dy[w(i)] where window w(i)'s maximum
 * is at i, and 0 elsewhere: no zeroing pass and no scatter. Parallel over
 * input rows; full runs of PVL channels compare positions a vector at a time. */
bool bp__pool_windows_disjoint(const bp__pool_geom *g)
{
    for (int d = 0; d < 3; d++)
        if (g->s[d] < g->k[d] || g->lo[d] != 0) return false;
    return true;
}

void bp__pool_max_backward_disjoint(const bp__pool_geom *g, bp_real *dx, const int32_t *arg, const bp_real *dy)
{
    const int64_t C = g->C, c_full = C / PVL * PVL, rows = g->B * g->in[0] * g->in[1];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i1 = r % g->in[1], t = r / g->in[1], i0 = t % g->in[0], b = t / g->in[0];
        int64_t o0 = i0 / g->s[0], o1 = i1 / g->s[1];
        bool covered = i0 % g->s[0] < g->k[0] && o0 < g->out[0] && i1 % g->s[1] < g->k[1] && o1 < g->out[1];
        bp_real *dxr = dx + r * g->in[2] * C;
        const int64_t q0 = ((b * g->out[0] + o0) * g->out[1] + o1) * g->out[2];
        const int64_t row = (i0 * g->in[1] + i1) * g->in[2];
        for (int64_t i2 = 0; i2 < g->in[2]; i2++) {
            bp_real *d = dxr + i2 * C;
            int64_t o2 = i2 / g->s[2];
            if (!covered || i2 % g->s[2] >= g->k[2] || o2 >= g->out[2]) {
                memset(d, 0, sizeof(bp_real) * (size_t)C);
                continue;
            }
            const bp_real *dyq = dy + (q0 + o2) * C;
            const int32_t *aq = arg + (q0 + o2) * C;
            const pidx pos = (pidx)(row + i2);
            for (int64_t c0 = 0; c0 < c_full; c0 += PVL) {
                pvi a;
                load_idx(&a, aq + c0);
                pvr v = (pvr)((pvi)*(const pvru *)(dyq + c0) & (a == pos));
                *(pvru *)(d + c0) = v;
            }
            for (int64_t c = c_full; c < C; c++) {
                d[c] = aq[c] == pos ? dyq[c] : 0;
            }
        }
    }
}
