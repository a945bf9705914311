/* layers/conv_transpose_ref.c — ConvTranspose's reference kernels: the
 * definition loop by loop, written from lax.conv_transpose's definition (a
 * convolution over the stride-dilated, padded input, kernel not flipped),
 * not from the adjoint-convolution route of the fast kernels.
 *
 * Shapes (conv_transpose_internal.h). Per dim e, output o_e and tap a_e read
 * the dilated input at o_e + a_e*d_e - lo_e, which is a real sample i_e when
 *   o_e + a_e*d_e - lo_e = i_e * s_e,  0 <= i_e < I_e       (else a zero)
 * and
 *   y[b, o, co]  = b[co] + sum_{t, ci < Cg : i(o,t) real} x[b, i(o,t), g*Cg + ci] * w[t, ci, co]
 *   dx[b, i, g*Cg + ci] = sum_{t, o : i(o,t) = i} sum_{co in g} dy[b, o, co] * w[t, ci, co]
 *   dw[t, ci, co] = sum_{b, o : i(o,t) real} x[b, i(o,t), g*Cg + ci] * dy[b, o, co]
 *   db[co] = sum_{b, o} dy[b, o, co]
 * Sums run in double, rounded once. Memory: each output reads every tap's
 * input row once; dw loops over all (b, o) per weight (tests only). */
#include <stdlib.h>
#include <bpc/error.h>
#include "conv_transpose_internal.h"

/* The input sample tap a of output o reads, false when it reads a zero. */
static bool tap_sample(const bp__convt_geom *g, const int64_t o[3], const int64_t a[3], int64_t i[3])
{
    for (int e = 0; e < 3; e++) {
        int64_t p = o[e] + a[e] * g->d[e] - g->lo[e];
        if (p < 0 || p % g->s[e]) return false;
        i[e] = p / g->s[e];
        if (i[e] >= g->in[e]) return false;
    }
    return true;
}

static void unflatten(const int64_t n[3], int64_t q, int64_t o[3])
{
    o[2] = q % n[2];
    o[1] = q / n[2] % n[1];
    o[0] = q / n[2] / n[1];
}

static void tap_index(const bp__convt_geom *g, int64_t t, int64_t a[3]) { unflatten(g->k, t, a); }

static int64_t npos(const int64_t n[3]) { return n[0] * n[1] * n[2]; }

static int64_t flat(const int64_t n[3], const int64_t i[3]) { return (i[0] * n[1] + i[1]) * n[2] + i[2]; }

void bp__convt_forward_ref(const bp__convt_geom *g, bp_real *y, const bp_real *x, const bp_real *w,
                           const bp_real *bias)
{
    const int64_t Po = npos(g->out), Pi = npos(g->in);
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t q = 0; q < Po; q++) {
            int64_t o[3], a[3], i[3];
            unflatten(g->out, q, o);
            for (int64_t co = 0; co < g->Cout; co++) {
                int64_t grp = co / g->Cog;
                double acc = bias ? bias[co] : 0.0;
                for (int64_t t = 0; t < g->taps; t++) {
                    tap_index(g, t, a);
                    if (!tap_sample(g, o, a, i)) continue;
                    const bp_real *xp = x + (b * Pi + flat(g->in, i)) * g->Cin + grp * g->Cg;
                    for (int64_t ci = 0; ci < g->Cg; ci++)
                        acc += (double)xp[ci] * (double)w[(t * g->Cg + ci) * g->Cout + co];
                }
                y[(b * Po + q) * g->Cout + co] = (bp_real)acc;
            }
        }
}

bp_status bp__convt_backward_ref(const bp__convt_geom *g, bp_real *dx, bp_real *dw, bp_real *db, const bp_real *dy,
                                 const bp_real *x, const bp_real *w)
{
    const int64_t Po = npos(g->out), Pi = npos(g->in);
    if (db)
        for (int64_t co = 0; co < g->Cout; co++) {
            double acc = 0;
            for (int64_t r = 0; r < g->B * Po; r++) acc += dy[r * g->Cout + co];
            db[co] = (bp_real)acc;
        }
    if (dx) {
        /* dx as a gather: every (o, t) pair that reads sample i */
        double *acc = calloc((size_t)(g->B * Pi * g->Cin), sizeof *acc);
        if (!acc) return bp_fail(BP_ENOMEM, "ConvTranspose reference: out of memory for the dx sums");
        for (int64_t b = 0; b < g->B; b++)
            for (int64_t q = 0; q < Po; q++) {
                int64_t o[3], a[3], i[3];
                unflatten(g->out, q, o);
                for (int64_t t = 0; t < g->taps; t++) {
                    tap_index(g, t, a);
                    if (!tap_sample(g, o, a, i)) continue;
                    double *dxp = acc + (b * Pi + flat(g->in, i)) * g->Cin;
                    for (int64_t co = 0; co < g->Cout; co++) {
                        int64_t grp = co / g->Cog;
                        double d = dy[(b * Po + q) * g->Cout + co];
                        for (int64_t ci = 0; ci < g->Cg; ci++)
                            dxp[grp * g->Cg + ci] += d * (double)w[(t * g->Cg + ci) * g->Cout + co];
                    }
                }
            }
        for (int64_t j = 0; j < g->B * Pi * g->Cin; j++) dx[j] = (bp_real)acc[j];
        free(acc);
    }
    if (dw)
        for (int64_t t = 0; t < g->taps; t++)
            for (int64_t ci = 0; ci < g->Cg; ci++)
                for (int64_t co = 0; co < g->Cout; co++) {
                    int64_t grp = co / g->Cog, a[3], o[3], i[3];
                    double acc = 0;
                    tap_index(g, t, a);
                    for (int64_t b = 0; b < g->B; b++)
                        for (int64_t q = 0; q < Po; q++) {
                            unflatten(g->out, q, o);
                            if (!tap_sample(g, o, a, i)) continue;
                            acc += (double)x[(b * Pi + flat(g->in, i)) * g->Cin + grp * g->Cg + ci] *
                                   (double)dy[(b * Po + q) * g->Cout + co];
                        }
                    dw[(t * g->Cg + ci) * g->Cout + co] = (bp_real)acc;
                }
    return BP_OK;
}
