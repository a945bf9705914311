/* autograd/ops_elementwise.c — add, sub, mul, div (broadcast over trailing
 * dims) and the scalar ops. Each op's forward is followed by its backward.
 *
 * Shapes: out has the longer shape, n elements; a has na and b has nb
 * elements, each either n or the size ns of the shorter, trailing shape, so
 * element i of out reads a[i % na] and b[i % nb]. The loops below walk out in
 * blocks of ns so the repeated operand is indexed without a division.
 * Memory traffic: forward reads a and b once and writes out (3 passes of n at
 * most); backward reads dout once per operand that needs a gradient. */
#include "ag_internal.h"

typedef struct bshape {
    int64_t n, na, nb, ns;
} bshape;

/* Checks that a and b broadcast, and allocates out with the longer shape. */
static bp_status broadcast(const char *who, bp_tensor **out, bp_tensor *a, bp_tensor *b, bshape *s)
{
    BP_TRY(bp__check_out(who, out));
    BP_TRY(bp__check_real(who, "a", a));
    BP_TRY(bp__check_real(who, "b", b));
    const bp_tensor *big = a->ndim >= b->ndim ? a : b, *small = big == a ? b : a;
    int off = big->ndim - small->ndim;
    for (int i = 0; i < small->ndim; i++)
        if (big->shape[off + i] != small->shape[i])
            return bp__shape_error(who, "shapes do not broadcast (one must equal the trailing dims of the other):", a, b);
    s->n = big->numel;
    s->na = a->numel;
    s->nb = b->numel;
    s->ns = small->numel;
    return bp_ag_empty(out, big->ndim, big->shape);
}

/* Runs BODY for each output index i with operand indices ia, ib; serial. */
#define BCAST_SERIAL(s, BODY)                                                   \
    for (int64_t r0_ = 0; r0_ < (s).n; r0_ += (s).ns)                            \
        for (int64_t j_ = 0; j_ < (s).ns; j_++) {                                \
            const int64_t i = r0_ + j_;                                         \
            const int64_t ia = (s).na == (s).n ? i : j_;                         \
            const int64_t ib = (s).nb == (s).n ? i : j_;                         \
            (void)ia; (void)ib;                                                 \
            BODY                                                                \
        }

/* As BCAST_SERIAL, split across threads for large n. BODY may write only
 * index i (or an operand of full size). */
#define BCAST_PAR(s, BODY)                                                      \
    do {                                                                        \
        if ((s).n >= BP__PAR_MIN) {                                             \
            _Pragma("omp parallel for schedule(static)")                         \
            for (int64_t i = 0; i < (s).n; i++) {                               \
                const int64_t ia = (s).na == (s).n ? i : i % (s).na;             \
                const int64_t ib = (s).nb == (s).n ? i : i % (s).nb;             \
                (void)ia; (void)ib;                                             \
                BODY                                                            \
            }                                                                   \
        } else {                                                                \
            BCAST_SERIAL(s, BODY)                                               \
        }                                                                       \
    } while (0)

/* Accumulates into a full-size operand in parallel, a repeated one serially
 * (its elements receive from many blocks). */
#define BCAST_INTO(s, n_target, BODY)                                           \
    do {                                                                        \
        if ((n_target) == (s).n) BCAST_PAR(s, BODY);                            \
        else { BCAST_SERIAL(s, BODY) }                                          \
    } while (0)

typedef struct bctx {
    bshape s;
} bctx;

/* --------------------------------------------------------------------- add */

static bp_status add_backward(const bp_ag_backward_args *g)
{
    const bshape s = ((const bctx *)g->ctx)->s;
    const bp_real *dy = g->dout->data;
    if (g->din[0]) { bp_real *da = g->din[0]->data; BCAST_INTO(s, s.na, da[ia] += dy[i];); }
    if (g->din[1]) { bp_real *db = g->din[1]->data; BCAST_INTO(s, s.nb, db[ib] += dy[i];); }
    return BP_OK;
}
static const bp_ag_op add_op = {.name = "add", .backward = add_backward};

bp_status bp_add(bp_tensor **out, bp_tensor *a, bp_tensor *b)
{
    bctx c;
    BP_TRY(broadcast("add", out, a, b, &c.s));
    const bp_real *x = a->data, *y = b->data;
    bp_real *z = (*out)->data;
    BCAST_PAR(c.s, z[i] = x[ia] + y[ib];);
    return bp__done(out, bp_ag_record(*out, &add_op, 2, (bp_tensor *[]){a, b}, &c, sizeof c));
}

/* --------------------------------------------------------------------- sub */

static bp_status sub_backward(const bp_ag_backward_args *g)
{
    const bshape s = ((const bctx *)g->ctx)->s;
    const bp_real *dy = g->dout->data;
    if (g->din[0]) { bp_real *da = g->din[0]->data; BCAST_INTO(s, s.na, da[ia] += dy[i];); }
    if (g->din[1]) { bp_real *db = g->din[1]->data; BCAST_INTO(s, s.nb, db[ib] -= dy[i];); }
    return BP_OK;
}
static const bp_ag_op sub_op = {.name = "sub", .backward = sub_backward};

bp_status bp_sub(bp_tensor **out, bp_tensor *a, bp_tensor *b)
{
    bctx c;
    BP_TRY(broadcast("sub", out, a, b, &c.s));
    const bp_real *x = a->data, *y = b->data;
    bp_real *z = (*out)->data;
    BCAST_PAR(c.s, z[i] = x[ia] - y[ib];);
    return bp__done(out, bp_ag_record(*out, &sub_op, 2, (bp_tensor *[]){a, b}, &c, sizeof c));
}

/* --------------------------------------------------------------------- mul */

/* d(a*b)/da = b, d(a*b)/db = a. */
static bp_status mul_backward(const bp_ag_backward_args *g)
{
    const bshape s = ((const bctx *)g->ctx)->s;
    const bp_real *dy = g->dout->data, *x = g->in[0]->data, *y = g->in[1]->data;
    if (g->din[0]) { bp_real *da = g->din[0]->data; BCAST_INTO(s, s.na, da[ia] += dy[i] * y[ib];); }
    if (g->din[1]) { bp_real *db = g->din[1]->data; BCAST_INTO(s, s.nb, db[ib] += dy[i] * x[ia];); }
    return BP_OK;
}
static const bp_ag_op mul_op = {.name = "mul", .backward = mul_backward};

bp_status bp_mul(bp_tensor **out, bp_tensor *a, bp_tensor *b)
{
    bctx c;
    BP_TRY(broadcast("mul", out, a, b, &c.s));
    const bp_real *x = a->data, *y = b->data;
    bp_real *z = (*out)->data;
    BCAST_PAR(c.s, z[i] = x[ia] * y[ib];);
    return bp__done(out, bp_ag_record(*out, &mul_op, 2, (bp_tensor *[]){a, b}, &c, sizeof c));
}

/* --------------------------------------------------------------------- div */

/* d(a/b)/da = 1/b, d(a/b)/db = -a/b^2. */
static bp_status div_backward(const bp_ag_backward_args *g)
{
    const bshape s = ((const bctx *)g->ctx)->s;
    const bp_real *dy = g->dout->data, *x = g->in[0]->data, *y = g->in[1]->data;
    if (g->din[0]) { bp_real *da = g->din[0]->data; BCAST_INTO(s, s.na, da[ia] += dy[i] / y[ib];); }
    if (g->din[1]) {
        bp_real *db = g->din[1]->data;
        BCAST_INTO(s, s.nb, db[ib] -= dy[i] * x[ia] / (y[ib] * y[ib]););
    }
    return BP_OK;
}
static const bp_ag_op div_op = {.name = "div", .backward = div_backward};

bp_status bp_div(bp_tensor **out, bp_tensor *a, bp_tensor *b)
{
    bctx c;
    BP_TRY(broadcast("div", out, a, b, &c.s));
    const bp_real *x = a->data, *y = b->data;
    bp_real *z = (*out)->data;
    BCAST_PAR(c.s, z[i] = x[ia] / y[ib];);
    return bp__done(out, bp_ag_record(*out, &div_op, 2, (bp_tensor *[]){a, b}, &c, sizeof c));
}

/* ------------------------------------------------------------- scalar ops */

typedef struct sctx {
    double s;
} sctx;

static bp_status add_scalar_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, da[i] += dy[i];);
    return BP_OK;
}
static const bp_ag_op add_scalar_op = {.name = "add_scalar", .backward = add_scalar_backward};

bp_status bp_add_scalar(bp_tensor **out, bp_tensor *a, double s)
{
    BP_TRY(bp__unary_out("add_scalar", out, a));
    const bp_real *x = a->data, v = (bp_real)s;
    bp_real *z = (*out)->data;
    BP__EACH(a->numel, z[i] = x[i] + v;);
    return bp__done(out, bp_ag_record(*out, &add_scalar_op, 1, &a, NULL, 0));
}

static bp_status mul_scalar_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, v = (bp_real)((const sctx *)g->ctx)->s;
    bp_real *da = g->din[0]->data;
    BP__EACH(g->dout->numel, da[i] += dy[i] * v;);
    return BP_OK;
}
static const bp_ag_op mul_scalar_op = {.name = "mul_scalar", .backward = mul_scalar_backward};

bp_status bp_mul_scalar(bp_tensor **out, bp_tensor *a, double s)
{
    BP_TRY(bp__unary_out("mul_scalar", out, a));
    const bp_real *x = a->data, v = (bp_real)s;
    bp_real *z = (*out)->data;
    BP__EACH(a->numel, z[i] = x[i] * v;);
    sctx c = {s};
    return bp__done(out, bp_ag_record(*out, &mul_scalar_op, 1, &a, &c, sizeof c));
}

/* d(a^p)/da = p a^(p-1). */
static bp_status pow_scalar_backward(const bp_ag_backward_args *g)
{
    const bp_real *dy = g->dout->data, *x = g->in[0]->data, p = (bp_real)((const sctx *)g->ctx)->s;
    bp_real *da = g->din[0]->data;
    if (p == 0) return BP_OK;
    BP__EACH(g->dout->numel, da[i] += dy[i] * p * R_POW(x[i], p - 1););
    return BP_OK;
}
static const bp_ag_op pow_scalar_op = {.name = "pow_scalar", .backward = pow_scalar_backward};

bp_status bp_pow_scalar(bp_tensor **out, bp_tensor *a, double p)
{
    BP_TRY(bp__unary_out("pow_scalar", out, a));
    const bp_real *x = a->data, v = (bp_real)p;
    bp_real *z = (*out)->data;
    BP__EACH(a->numel, z[i] = R_POW(x[i], v););
    sctx c = {p};
    return bp__done(out, bp_ag_record(*out, &pow_scalar_op, 1, &a, &c, sizeof c));
}
