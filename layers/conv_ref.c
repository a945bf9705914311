/* layers/conv_ref.c — Conv's reference kernels: the definition written out
 * loop by loop, with no blocking, packing or threads, for tests to hold the
 * fast kernels (conv_direct.c, conv_gemm.c) against. Written from the
 * definition, not from the fast paths.
 *
 * Shapes (conv_internal.h): x (B, I0, I1, I2, Cin), y and dy (B, O0, O1, O2,
 * Cout), w (k0, k1, k2, Cg, Cout), b (Cout); G groups, Cg = Cin / G input and
 * Cog = Cout / G output channels per group. For output position o, tap
 * t = (a0, a1, a2) and dim e, the input position is
 *   i_e = o_e * s_e - lo_e + a_e * d_e        (a tap outside [0, I_e) reads 0)
 * and
 *   y[b, o, co]  = b[co] + sum_{t, ci < Cg} x[b, i(o, t), g*Cg + ci] * w[t, ci, co],  g = co / Cog
 *   dx[b, i, g*Cg + ci] = sum_{o, t : i(o, t) = i} sum_{co in group g} dy[b, o, co] * w[t, ci, co]
 *   dw[t, ci, co] = sum_{b, o : i(o, t) inside} x[b, i(o, t), g*Cg + ci] * dy[b, o, co]
 *   db[co]        = sum_{b, o} dy[b, o, co]
 * Sums run in double and are rounded once (so a reference value is the exact
 * result to about 1e-16 relative, whatever order the fast kernels add in). */
#include <stdlib.h>
#include <bpc/error.h>
#include "conv_internal.h"

/* The input position along every dim of output o and tap a, false when it is
 * outside the input (padding). */
static bool tap_input(const bp__conv_geom *g, const int64_t o[3], const int64_t a[3], int64_t i[3])
{
    for (int e = 0; e < 3; e++) {
        i[e] = o[e] * g->s[e] - g->lo[e] + a[e] * g->d[e];
        if (i[e] < 0 || i[e] >= g->in[e]) return false;
    }
    return true;
}

/* Output position q of sample b (row-major over O0, O1, O2) as indices. */
static void unflatten(const int64_t n[3], int64_t q, int64_t o[3])
{
    o[2] = q % n[2];
    o[1] = q / n[2] % n[1];
    o[0] = q / n[2] / n[1];
}

static int64_t flat_in(const bp__conv_geom *g, int64_t b, const int64_t i[3])
{
    return ((b * g->in[0] + i[0]) * g->in[1] + i[1]) * g->in[2] + i[2];
}

void bp__conv_forward_ref(const bp__conv_geom *g, bp_real *y, const bp_real *x, const bp_real *w, const bp_real *bias)
{
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t q = 0; q < g->Pout; q++) {
            int64_t o[3], i[3], a[3];
            unflatten(g->out, q, o);
            bp_real *yo = y + (b * g->Pout + q) * g->Cout;
            for (int64_t co = 0; co < g->Cout; co++) {
                int64_t grp = co / g->Cog;
                double acc = bias ? (double)bias[co] : 0.0;
                for (a[0] = 0; a[0] < g->k[0]; a[0]++)
                    for (a[1] = 0; a[1] < g->k[1]; a[1]++)
                        for (a[2] = 0; a[2] < g->k[2]; a[2]++) {
                            if (!tap_input(g, o, a, i)) continue;
                            const bp_real *xi = x + flat_in(g, b, i) * g->Cin + grp * g->Cg;
                            int64_t t = (a[0] * g->k[1] + a[1]) * g->k[2] + a[2];
                            for (int64_t ci = 0; ci < g->Cg; ci++)
                                acc += (double)xi[ci] * (double)w[(t * g->Cg + ci) * g->Cout + co];
                        }
                yo[co] = (bp_real)acc;
            }
        }
}

/* Backward as the forward's loops with the products scattered: each product
 * x * w of the forward sends dy * w to dx and x * dy to dw. dx and dw are
 * summed in double scratch and rounded at the end. */
bp_status bp__conv_backward_ref(const bp__conv_geom *g, bp_real *dx, bp_real *dw, bp_real *db, const bp_real *dy,
                                const bp_real *x, const bp_real *w)
{
    const int64_t nx = g->B * g->Pin * g->Cin, nw = g->K * g->Cout;
    double *sx = dx ? calloc((size_t)nx, sizeof(double)) : NULL;
    double *sw = dw ? calloc((size_t)nw, sizeof(double)) : NULL;
    double *sb = db ? calloc((size_t)g->Cout, sizeof(double)) : NULL;
    if ((dx && !sx) || (dw && !sw) || (db && !sb)) {
        free(sx);
        free(sw);
        free(sb);
        return bp_fail(BP_ENOMEM, "conv reference backward: out of memory for its double sums");
    }
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t q = 0; q < g->Pout; q++) {
            int64_t o[3], i[3], a[3];
            unflatten(g->out, q, o);
            const bp_real *dyo = dy + (b * g->Pout + q) * g->Cout;
            for (int64_t co = 0; co < g->Cout; co++) {
                int64_t grp = co / g->Cog;
                double d = (double)dyo[co];
                if (sb) sb[co] += d;
                for (a[0] = 0; a[0] < g->k[0]; a[0]++)
                    for (a[1] = 0; a[1] < g->k[1]; a[1]++)
                        for (a[2] = 0; a[2] < g->k[2]; a[2]++) {
                            if (!tap_input(g, o, a, i)) continue;
                            int64_t xo = flat_in(g, b, i) * g->Cin + grp * g->Cg;
                            int64_t t = (a[0] * g->k[1] + a[1]) * g->k[2] + a[2];
                            for (int64_t ci = 0; ci < g->Cg; ci++) {
                                int64_t wi = (t * g->Cg + ci) * g->Cout + co;
                                if (sx) sx[xo + ci] += d * (double)w[wi];
                                if (sw) sw[wi] += d * (double)x[xo + ci];
                            }
                        }
            }
        }
    for (int64_t j = 0; dx && j < nx; j++) dx[j] = (bp_real)sx[j];
    for (int64_t j = 0; dw && j < nw; j++) dw[j] = (bp_real)sw[j];
    for (int64_t j = 0; db && j < g->Cout; j++) db[j] = (bp_real)sb[j];
    free(sx);
    free(sw);
    free(sb);
    return BP_OK;
}
