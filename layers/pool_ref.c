/* layers/pool_ref.c — pooling's reference kernels: the definition written
 * out box by box and channel by channel, with no row reuse, vectors or
 * threads, for tests to hold pool_fast.c against. Written from the
 * definition (pool_internal.h, bpc/pool.h), not from the fast paths.
 *
 * Shapes: x, dx (B, I0, I1, I2, C); y, dy, arg (B, O0, O1, O2, C).
 *   MaxPool      y[b, o, c] = max_{i in box(o)} x[b, i, c]   (first maximum; a NaN wins)
 *                dx[b, i, c] = sum_{o : argmax(o, c) = i} dy[b, o, c]
 *   AvgPool      y[b, o, c] = sum_{i in box(o)} x[b, i, c] / |box(o)|
 *                dx[b, i, c] = sum_{o : i in box(o)} dy[b, o, c] / |box(o)|
 * box(o) is the product of per-dim ranges: for a window, its taps
 * o*s - lo + a (a < k) that fall inside the input; for the adaptive pool, bin
 * o of I = n*q + r positions, which starts at o*q + min(o, r) and is q + 1 long
 * for o < r and q long after. Sums run in double, rounded once. */
#include <math.h>
#include <string.h>
#include "pool_internal.h"

/* The range [*b0, *b1) of input positions box(o) covers along dim e. */
static void range(const bp__pool_geom *g, int e, int64_t o, int64_t *b0, int64_t *b1)
{
    if (g->kind == BP_POOL_ADAPTIVE_AVG) {
        int64_t q = g->in[e] / g->out[e], r = g->in[e] % g->out[e];
        *b0 = o * q + (o < r ? o : r);
        *b1 = *b0 + q + (o < r);
        return;
    }
    /* the taps inside the input: the first and one past the last */
    int64_t first = o * g->s[e] - g->lo[e];
    *b0 = first;
    *b1 = first + g->k[e];
    if (*b0 < 0) *b0 = 0;
    if (*b1 > g->in[e]) *b1 = g->in[e];
}

/* The box of output q (flat within a sample), as per-dim ranges. */
static void box_of(const bp__pool_geom *g, int64_t q, int64_t b0[3], int64_t b1[3])
{
    int64_t o[3] = {q / g->out[2] / g->out[1], q / g->out[2] % g->out[1], q % g->out[2]};
    for (int e = 0; e < 3; e++) range(g, e, o[e], &b0[e], &b1[e]);
}

/* The flat position within the sample of box q's maximum of channel c, by
 * the definition: the first position, in row-major order, that holds a NaN
 * or, with no NaN in the box, the largest value. */
static int64_t argmax(const bp__pool_geom *g, const bp_real *xb, int64_t q, int64_t c)
{
    int64_t b0[3], b1[3], best = -1;
    box_of(g, q, b0, b1);
    for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
        for (int64_t i1 = b0[1]; i1 < b1[1]; i1++)
            for (int64_t i2 = b0[2]; i2 < b1[2]; i2++) {
                int64_t i = (i0 * g->in[1] + i1) * g->in[2] + i2;
                double v = (double)xb[i * g->C + c];
                if (best < 0) {
                    best = i;
                } else {
                    double m = (double)xb[best * g->C + c];
                    if (isnan(m)) return best;
                    if (isnan(v) || v > m) best = i;
                }
            }
    return best;
}

void bp__pool_forward_ref(const bp__pool_geom *g, bp_real *y, int32_t *arg, const bp_real *x)
{
    const int64_t per_in = g->in[0] * g->in[1] * g->in[2], per_out = g->out[0] * g->out[1] * g->out[2];
    for (int64_t b = 0; b < g->B; b++) {
        const bp_real *xb = x + b * per_in * g->C;
        for (int64_t q = 0; q < per_out; q++)
            for (int64_t c = 0; c < g->C; c++) {
                int64_t yi = (b * per_out + q) * g->C + c;
                if (g->kind == BP_POOL_MAX) {
                    int64_t at = argmax(g, xb, q, c);
                    y[yi] = xb[at * g->C + c];
                    if (arg) arg[yi] = (int32_t)at;
                    continue;
                }
                int64_t b0[3], b1[3];
                box_of(g, q, b0, b1);
                double sum = 0;
                int64_t count = 0;
                for (int64_t i0 = b0[0]; i0 < b1[0]; i0++)
                    for (int64_t i1 = b0[1]; i1 < b1[1]; i1++)
                        for (int64_t i2 = b0[2]; i2 < b1[2]; i2++, count++)
                            sum += (double)xb[((i0 * g->in[1] + i1) * g->in[2] + i2) * g->C + c];
                y[yi] = (bp_real)(sum / (double)count);
            }
    }
}

void bp__pool_backward_ref(const bp__pool_geom *g, bp_real *dx, const bp_real *dy, const bp_real *x)
{
    const int64_t per_in = g->in[0] * g->in[1] * g->in[2], per_out = g->out[0] * g->out[1] * g->out[2];
    /* every input position of a sample, each channel: its sum in double, then rounded */
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t i = 0; i < per_in; i++)
            for (int64_t c = 0; c < g->C; c++) {
                int64_t i2 = i % g->in[2], i1 = i / g->in[2] % g->in[1], i0 = i / g->in[2] / g->in[1];
                double sum = 0;
                for (int64_t q = 0; q < per_out; q++) {
                    double d = (double)dy[(b * per_out + q) * g->C + c];
                    if (g->kind == BP_POOL_MAX) {
                        if (argmax(g, x + b * per_in * g->C, q, c) == i) sum += d;
                        continue;
                    }
                    int64_t b0[3], b1[3];
                    box_of(g, q, b0, b1);
                    if (i0 < b0[0] || i0 >= b1[0] || i1 < b0[1] || i1 >= b1[1] || i2 < b0[2] || i2 >= b1[2]) continue;
                    int64_t count = (b1[0] - b0[0]) * (b1[1] - b0[1]) * (b1[2] - b0[2]);
                    sum += d / (double)count;
                }
                dx[(b * per_in + i) * g->C + c] = (bp_real)sum;
            }
}
