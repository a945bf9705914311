/* tests/test_autograd.c — the graph engine: recording, backward, accumulation,
 * release, no-grad scopes, custom ops, leaves and TrainVars, the buffer pool.
 * Values are worked by hand and exact in float32. */
#include <pthread.h>
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include "bp_test.h"

static bp_tensor *vec(int64_t n, const bp_real *v)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_from_reals(&t, 1, &n, v));
    return t;
}

/* A leaf x with its own zero grad; *g receives the grad (caller frees both). */
static bp_tensor *leaf(int64_t n, const bp_real *v, bp_tensor **g)
{
    bp_tensor *x = vec(n, v);
    BP_OK_OR_FAIL(bp_tensor_new(g, BP_REAL_DTYPE, 1, &n));
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, *g));
    return x;
}

static void expect_reals(const bp_tensor *t, int64_t n, const bp_real *want)
{
    assert_int_equal(t->numel, n);
    for (int64_t i = 0; i < n; i++) BP_ASSERT_CLOSE(bp_tensor_get(t, i), want[i], 1e-6, 1e-6);
}

static int teardown(void **state)
{
    (void)state;
    bp_ag_release_graph();
    bp_ag_pool_trim();
    return 0;
}

/* y = sum(x*x + 3x): dy/dx = 2x + 3. */
static void test_record_and_backward(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(3, (bp_real[]){1, -2, 0.5}, &g);
    bp_tensor *sq, *tx, *s, *y;
    BP_OK_OR_FAIL(bp_mul(&sq, x, x));
    assert_true(sq->requires_grad);
    assert_non_null(sq->grad_node);
    BP_OK_OR_FAIL(bp_mul_scalar(&tx, x, 3));
    BP_OK_OR_FAIL(bp_add(&s, sq, tx));
    BP_OK_OR_FAIL(bp_sum(&y, s, 0, NULL, false));
    assert_int_equal(y->ndim, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 0), 1 + 4 + 0.25 + 3 * (1 - 2 + 0.5), 1e-6, 0);
    assert_int_equal(bp_ag_graph_size(), 4);
    /* The caller may drop intermediates at once: the graph holds them. */
    bp_tensor_free(sq);
    bp_tensor_free(tx);
    bp_tensor_free(s);
    BP_OK_OR_FAIL(bp_backward(y));
    assert_int_equal(bp_ag_graph_size(), 0);
    expect_reals(g, 3, (bp_real[]){5, -1, 4});
    /* The leaf stays a leaf; the output is marked released. */
    assert_null(x->grad_node);
    assert_true(y->requires_grad);
    BP_EXPECT_ERR(bp_backward(y), BP_ESTATE, "already released");
    /* Ops may read a released tensor (metrics after backward), but no
     * gradient may flow back into its freed graph... */
    bp_tensor *z, *zx, *d, *dz;
    BP_OK_OR_FAIL(bp_add(&z, y, y));
    BP_ASSERT_CLOSE(bp_tensor_get(z, 0), 2 * bp_tensor_get(y, 0), 1e-6, 0);
    BP_EXPECT_ERR(bp_backward(z), BP_ESTATE, "add input 0 comes from a graph already released");
    bp_tensor_free(z);
    /* ...unless it is detached: a constant beside a fresh leaf. */
    BP_OK_OR_FAIL(bp_ag_detach(&d, y));
    assert_false(d->requires_grad);
    assert_null(d->grad_node);
    assert_ptr_equal(d->data, y->data);
    BP_OK_OR_FAIL(bp_mul(&zx, x, d));
    BP_OK_OR_FAIL(bp_sum(&dz, zx, 0, NULL, false));
    bp_tensor_zero(g);
    BP_OK_OR_FAIL(bp_backward(dz));
    for (int i = 0; i < 3; i++) BP_ASSERT_CLOSE(bp_tensor_get(g, i), bp_tensor_get(y, 0), 1e-6, 0);
    BP_EXPECT_ERR(bp_ag_detach(NULL, y), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_ag_detach(&z, NULL), BP_EINVAL, "NULL");
    bp_tensor_free(zx);
    bp_tensor_free(dz);
    bp_tensor_free(d);
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* Two backward passes add up in the leaf's grad; the caller zeroes. */
static void test_accumulates(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){2, 3}, &g);
    for (int pass = 0; pass < 2; pass++) {
        bp_tensor *y, *l;
        BP_OK_OR_FAIL(bp_mul_scalar(&y, x, 4));
        BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
        bp_tensor_free(y);
        BP_OK_OR_FAIL(bp_backward(l));
        bp_tensor_free(l);
    }
    expect_reals(g, 2, (bp_real[]){8, 8});
    bp_tensor_zero(g);
    expect_reals(g, 2, (bp_real[]){0, 0});
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* A diamond: a = relu(x); l = sum(a*a + a) — two paths meet at a. */
static void test_diamond(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(3, (bp_real[]){-1, 2, 3}, &g);
    bp_tensor *a, *aa, *s, *l;
    BP_OK_OR_FAIL(bp_relu(&a, x));
    BP_OK_OR_FAIL(bp_mul(&aa, a, a));
    BP_OK_OR_FAIL(bp_add(&s, aa, a));
    BP_OK_OR_FAIL(bp_sum(&l, s, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    expect_reals(g, 3, (bp_real[]){0, 5, 7}); /* (2a + 1) where x > 0 */
    bp_tensor_free(a);
    bp_tensor_free(aa);
    bp_tensor_free(s);
    bp_tensor_free(l);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

static void test_no_grad(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){1, 2}, &g);
    bp_tensor *y;
    assert_true(bp_grad_enabled());
    bp_no_grad_begin();
    bp_no_grad_begin();
    assert_false(bp_grad_enabled());
    BP_OK_OR_FAIL(bp_mul(&y, x, x));
    bp_no_grad_end();
    assert_false(bp_grad_enabled()); /* still inside the outer scope */
    bp_no_grad_end();
    bp_no_grad_end();                /* unmatched: ignored */
    assert_true(bp_grad_enabled());
    assert_false(y->requires_grad);
    assert_null(y->grad_node);
    assert_int_equal(bp_ag_graph_size(), 0);
    expect_reals(y, 2, (bp_real[]){1, 4});
    BP_EXPECT_ERR(bp_backward_with(y, y), BP_EINVAL, "not recorded");
    bp_tensor_free(y);

    /* Constants alone record nothing either. */
    bp_tensor *c = vec(2, (bp_real[]){1, 1}), *z;
    BP_OK_OR_FAIL(bp_add(&z, c, c));
    assert_false(z->requires_grad);
    assert_int_equal(bp_ag_graph_size(), 0);
    bp_tensor_free(z);
    bp_tensor_free(c);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

static void test_backward_errors(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){1, 2}, &g);
    bp_tensor *y, *dy = vec(3, (bp_real[]){1, 1, 1});
    BP_OK_OR_FAIL(bp_mul_scalar(&y, x, 2));
    BP_EXPECT_ERR(bp_backward(y), BP_ESHAPE, "(2,)");
    BP_EXPECT_ERR(bp_backward_with(y, dy), BP_ESHAPE, "(2,) and (3,)");
    BP_EXPECT_ERR(bp_backward_with(y, NULL), BP_EINVAL, "dy is NULL");
    BP_EXPECT_ERR(bp_backward(NULL), BP_EINVAL, "NULL");
    BP_EXPECT_ERR(bp_backward_many(0, &y, (const bp_tensor *[]){dy}), BP_EINVAL, "at least one");
    /* Validation failures leave the graph in place; a right call still works. */
    assert_int_equal(bp_ag_graph_size(), 1);
    bp_tensor *ones = vec(2, (bp_real[]){1, -1});
    BP_OK_OR_FAIL(bp_backward_with(y, ones));
    expect_reals(g, 2, (bp_real[]){2, -2});
    bp_tensor *i32;
    BP_OK_OR_FAIL(bp_tensor_new(&i32, BP_INT32, 1, (int64_t[]){2}));
    BP_EXPECT_ERR(bp_ag_make_leaf(i32, g), BP_EDTYPE, "int32");
    BP_EXPECT_ERR(bp_ag_make_leaf(dy, g), BP_ESHAPE, "(3,) and (2,)");
    BP_EXPECT_ERR(bp_ag_make_leaf(y, g), BP_ESTATE, "op output");
    BP_EXPECT_ERR(bp_ag_make_leaf(NULL, g), BP_EINVAL, "NULL");
    bp_tensor_free(i32);
    bp_tensor_free(ones);
    bp_tensor_free(y);
    bp_tensor_free(dy);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* A leaf that requires grad must have somewhere to put it. */
static void test_leaf_without_grad(void **state)
{
    (void)state;
    bp_tensor *x = vec(2, (bp_real[]){1, 2}), *y;
    x->requires_grad = true; /* as a careless caller might */
    BP_EXPECT_ERR(bp_relu(&y, x), BP_EINVAL, "no float");
    assert_null(y);
    /* A leaf made constant again records nothing. */
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, NULL));
    BP_OK_OR_FAIL(bp_relu(&y, x));
    assert_false(y->requires_grad);
    bp_tensor_free(y);
    bp_tensor_free(x);
}

/* Backward from two outputs in one sweep, and from a leaf. */
static void test_backward_many_and_leaf_root(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){1, 2}, &g);
    bp_tensor *a, *b;
    BP_OK_OR_FAIL(bp_mul_scalar(&a, x, 2));
    BP_OK_OR_FAIL(bp_mul(&b, x, x));
    bp_tensor *da = vec(2, (bp_real[]){1, 10}), *db = vec(2, (bp_real[]){1, 1});
    BP_OK_OR_FAIL(bp_backward_many(2, (bp_tensor *[]){a, b}, (const bp_tensor *[]){da, db}));
    expect_reals(g, 2, (bp_real[]){2 + 2, 20 + 4});
    BP_EXPECT_ERR(bp_backward_many(1, &a, NULL), BP_EINVAL, "dy is NULL");
    bp_tensor_zero(g);
    BP_OK_OR_FAIL(bp_backward_with(x, da)); /* d x/d x = identity */
    expect_reals(g, 2, (bp_real[]){1, 10});
    bp_tensor_free(a);
    bp_tensor_free(b);
    bp_tensor_free(da);
    bp_tensor_free(db);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* ------------------------------------------------------- a custom op */

/* cube(x) = x^3 with a saved tensor 3x^2 in its context, the way a layer
 * (BatchNorm3d's mean/invstd) saves what its backward needs. */
static int g_releases, g_backwards;

typedef struct cube_ctx {
    bp_tensor *deriv;
    int tag;
} cube_ctx;

static void cube_release(void *ctx)
{
    g_releases++;
    bp_tensor_free(((cube_ctx *)ctx)->deriv);
}

static bp_status cube_backward(const bp_ag_backward_args *a)
{
    const cube_ctx *c = a->ctx;
    g_backwards++;
    if (c->tag != 42 || a->n_in != 1 || !a->din[0]) return bp_fail(BP_ESTATE, "cube: bad args");
    const bp_real *d = c->deriv->data, *dy = a->dout->data;
    bp_real *dx = a->din[0]->data;
    for (int64_t i = 0; i < a->dout->numel; i++) dx[i] += dy[i] * d[i];
    return BP_OK;
}
static const bp_ag_op cube_op = {.name = "cube", .backward = cube_backward, .release = cube_release};

static bp_status cube(bp_tensor **out, bp_tensor *x)
{
    BP_TRY(bp_ag_empty(out, x->ndim, x->shape));
    cube_ctx c = {NULL, 42};
    BP_TRY(bp_ag_empty(&c.deriv, x->ndim, x->shape));
    const bp_real *v = x->data;
    bp_real *y = (*out)->data, *d = c.deriv->data;
    for (int64_t i = 0; i < x->numel; i++) {
        y[i] = v[i] * v[i] * v[i];
        d[i] = 3 * v[i] * v[i];
    }
    bp_status st = bp_ag_record(*out, &cube_op, 1, &x, &c, sizeof c);
    if (st) {
        bp_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

static bp_status failing_backward(const bp_ag_backward_args *a)
{
    (void)a;
    return bp_fail(BP_ENUMERIC, "failing: as designed");
}
static const bp_ag_op failing_op = {.name = "failing", .backward = failing_backward};

/* An op that declares overwrites_grad: y = 2 * (in[0] + ... + in[n-1]).
 * Its backward writes (=) every din; it records which buffers it got. */
static bp_tensor *g_din[2];

static bp_status twice_backward(const bp_ag_backward_args *a)
{
    for (int j = 0; j < a->n_in; j++) {
        g_din[j] = a->din[j];
        if (!a->din[j]) continue;
        bp_real *d = a->din[j]->data;
        const bp_real *dy = a->dout->data;
        for (int64_t i = 0; i < a->dout->numel; i++) d[i] = 2 * dy[i];
    }
    return BP_OK;
}
static const bp_ag_op twice_op = {.name = "twice", .backward = twice_backward, .overwrites_grad = true};

static bp_status twice(bp_tensor **out, int n, bp_tensor **in)
{
    BP_TRY(bp_ag_empty(out, in[0]->ndim, in[0]->shape));
    bp_real *y = (*out)->data;
    for (int64_t i = 0; i < (*out)->numel; i++) {
        y[i] = 0;
        for (int j = 0; j < n; j++) y[i] += 2 * ((const bp_real *)in[j]->data)[i];
    }
    return bp_ag_record(*out, &twice_op, n, in, NULL, 0);
}

/* An overwriting op writes its din, and the graph turns that into the right
 * accumulation in every case: a leaf's grad that already holds a value (the
 * op gets scratch, never the leaf's grad), an intermediate read by this op
 * alone, one given as both inputs (two separate buffers), and one that a
 * later op (run first in backward) already added to. */
static void test_overwrites_grad(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){1, 2}, &g), *a, *b, *y, *l;
    /* leaf input whose grad holds 1: scratch, then added */
    bp_tensor_fill(g, 1);
    BP_OK_OR_FAIL(twice(&y, 1, &x));
    BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    assert_non_null(g_din[0]);
    assert_ptr_not_equal(g_din[0], g);
    expect_reals(g, 2, (bp_real[]){3, 3});
    bp_tensor_free(y), bp_tensor_free(l);
    /* an intermediate read by this op alone */
    bp_tensor_fill(g, 0);
    BP_OK_OR_FAIL(bp_mul_scalar(&a, x, 3));
    BP_OK_OR_FAIL(twice(&y, 1, &a));
    BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    expect_reals(g, 2, (bp_real[]){6, 6});
    bp_tensor_free(a), bp_tensor_free(y), bp_tensor_free(l);
    /* the same intermediate as both inputs: two buffers, both counted */
    bp_tensor_fill(g, 0);
    BP_OK_OR_FAIL(bp_mul_scalar(&a, x, 3));
    BP_OK_OR_FAIL(twice(&y, 2, (bp_tensor *[]){a, a}));
    BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    assert_ptr_not_equal(g_din[0], g_din[1]);
    expect_reals(g, 2, (bp_real[]){12, 12});
    bp_tensor_free(a), bp_tensor_free(y), bp_tensor_free(l);
    /* an intermediate that a later op (run first in backward) already added to */
    bp_tensor_fill(g, 0);
    BP_OK_OR_FAIL(bp_mul_scalar(&a, x, 3));
    BP_OK_OR_FAIL(twice(&y, 1, &a));
    BP_OK_OR_FAIL(bp_add(&b, y, a));
    BP_OK_OR_FAIL(bp_sum(&l, b, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    expect_reals(g, 2, (bp_real[]){9, 9});
    bp_tensor_free(a), bp_tensor_free(b), bp_tensor_free(y), bp_tensor_free(l);
    bp_tensor_free(x), bp_tensor_free(g);
}

static void test_custom_op(void **state)
{
    (void)state;
    g_releases = g_backwards = 0;
    bp_tensor *g, *x = leaf(2, (bp_real[]){2, -1}, &g), *y, *l;
    BP_OK_OR_FAIL(cube(&y, x));
    expect_reals(y, 2, (bp_real[]){8, -1});
    BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    expect_reals(g, 2, (bp_real[]){12, 3});
    assert_int_equal(g_backwards, 1);
    assert_int_equal(g_releases, 1);
    bp_tensor_free(y);
    bp_tensor_free(l);

    /* Not recorded (no-grad): the context is released at once. */
    bp_no_grad_begin();
    BP_OK_OR_FAIL(cube(&y, x));
    bp_no_grad_end();
    assert_int_equal(g_releases, 2);
    /* Recording an output twice fails, and still releases the context. */
    cube_ctx c = {NULL, 42};
    BP_OK_OR_FAIL(bp_ag_empty(&c.deriv, 1, (int64_t[]){2}));
    bp_tensor *o;
    BP_OK_OR_FAIL(bp_relu(&o, x));
    BP_EXPECT_ERR(bp_ag_record(o, &cube_op, 1, &x, &c, sizeof c), BP_ESTATE, "cube: ag_record: out is already");
    assert_int_equal(g_releases, 3);
    BP_EXPECT_ERR(bp_ag_record(y, &cube_op, 9, &x, NULL, 0), BP_EINVAL, "n_in must be in [0, 8]");
    BP_EXPECT_ERR(bp_ag_record(y, NULL, 1, &x, NULL, 0), BP_EINVAL, "op or its backward");
    BP_EXPECT_ERR(bp_ag_record(NULL, &cube_op, 1, &x, NULL, 0), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_ag_record(x, &cube_op, 1, &x, NULL, 0), BP_EINVAL, "out is a leaf");
    bp_tensor *fresh;
    BP_OK_OR_FAIL(bp_ag_empty(&fresh, 1, (int64_t[]){2}));
    BP_EXPECT_ERR(bp_ag_record(fresh, &cube_op, 2, (bp_tensor *[]){x, fresh}, NULL, 0), BP_EINVAL,
                  "out is also input 1");
    bp_tensor_free(fresh);
    BP_EXPECT_ERR(bp_ag_record(y, &cube_op, 1, &x, NULL, 8), BP_EINVAL, "ctx is NULL");
    bp_ag_release_graph();
    assert_true(o->requires_grad);
    BP_EXPECT_ERR(bp_backward_with(o, x), BP_ESTATE, "already released");
    bp_tensor_free(o);
    bp_tensor_free(y);

    /* A failing backward reports its error and still releases the graph. */
    bp_tensor *f;
    BP_OK_OR_FAIL(bp_ag_empty(&f, 1, (int64_t[]){2}));
    BP_OK_OR_FAIL(bp_ag_record(f, &failing_op, 1, &x, NULL, 0));
    assert_true(bp_ag_wants(1, &x));
    BP_EXPECT_ERR(bp_backward_with(f, x), BP_ENUMERIC, "as designed");
    assert_int_equal(bp_ag_graph_size(), 0);
    bp_tensor_free(f);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* TrainVars from core are leaves: ops on var->value fill var->grad. */
static void test_trainvar_leaf(void **state)
{
    (void)state;
    bp_tensor *w0 = vec(2, (bp_real[]){3, -4});
    bp_var *w;
    BP_OK_OR_FAIL(bp_var_new(&w, BP_TRAINVAR, w0));
    bp_tensor_free(w0);
    bp_tensor *x = vec(2, (bp_real[]){0.5, 2}), *y, *l;
    BP_OK_OR_FAIL(bp_mul(&y, w->value, x));
    BP_OK_OR_FAIL(bp_sum(&l, y, 0, NULL, false));
    BP_OK_OR_FAIL(bp_backward(l));
    expect_reals(w->grad, 2, (bp_real[]){0.5, 2});
    bp_var_zero_grad(w);
    expect_reals(w->grad, 2, (bp_real[]){0, 0});
    bp_tensor_free(y);
    bp_tensor_free(l);
    bp_tensor_free(x);
    bp_var_free(w);
}

/* The second step with the same shapes takes every buffer from the pool. */
static void test_pool_reuse(void **state)
{
    (void)state;
    bp_ag_pool_trim();
    assert_int_equal(bp_ag_pool_bytes(), 0);
    bp_tensor *g, *x = leaf(4, (bp_real[]){1, -2, 3, -4}, &g);
    size_t after_first = 0;
    for (int step = 0; step < 5; step++) {
        bp_tensor *a, *b, *l;
        BP_OK_OR_FAIL(bp_relu(&a, x));
        BP_OK_OR_FAIL(bp_mul(&b, a, x));
        BP_OK_OR_FAIL(bp_mean(&l, b, 0, NULL, false));
        bp_tensor_free(a);
        bp_tensor_free(b);
        BP_OK_OR_FAIL(bp_backward(l));
        bp_tensor_free(l);
        if (step == 0) after_first = bp_ag_pool_bytes();
        assert_int_equal(bp_ag_pool_bytes(), after_first);
    }
    assert_true(after_first > 0);
    bp_ag_pool_trim();
    assert_int_equal(bp_ag_pool_bytes(), 0);
    /* A tensor still held survives a trim. */
    bp_tensor *keep;
    BP_OK_OR_FAIL(bp_ag_zeros(&keep, 2, (int64_t[]){3, 5}));
    bp_ag_pool_trim();
    assert_int_equal(bp_ag_pool_bytes(), 15 * sizeof(bp_real));
    for (int i = 0; i < 15; i++) BP_ASSERT_CLOSE(bp_tensor_get(keep, i), 0, 0, 0);
    bp_tensor_free(keep);
    BP_EXPECT_ERR(bp_ag_empty(&keep, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}), BP_ESHAPE, "ndim");
    BP_EXPECT_ERR(bp_ag_empty(&keep, 1, (int64_t[]){-3}), BP_ESHAPE, "-3");
    BP_EXPECT_ERR(bp_ag_empty(NULL, 1, (int64_t[]){3}), BP_EINVAL, "out is NULL");
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* A forward pass that is never differentiated is discarded explicitly. */
static void test_release_without_backward(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){1, 2}, &g), *y;
    BP_OK_OR_FAIL(bp_tanh(&y, x));
    assert_int_equal(bp_ag_graph_size(), 1);
    bp_ag_release_graph();
    assert_int_equal(bp_ag_graph_size(), 0);
    BP_EXPECT_ERR(bp_backward_with(y, y), BP_ESTATE, "released");
    expect_reals(g, 2, (bp_real[]){0, 0});
    bp_tensor_free(y);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

/* ------------------------------------------------------- threads */

/* Each thread has its own graph: a tensor recorded on one thread cannot be
 * back-propagated or extended on another, and a thread that exits frees its
 * graph and pool (a buffer still in use elsewhere stays valid). */
typedef struct thread_arg {
    bp_tensor *x, *y, *kept;
    pthread_barrier_t *bar;
    bp_status st;
} thread_arg;

static void *worker(void *p)
{
    thread_arg *a = p;
    a->st = bp_relu(&a->y, a->x);                    /* recorded on this thread */
    if (!a->st) a->st = bp_ag_zeros(&a->kept, 1, (int64_t[]){7}); /* from this thread's pool */
    pthread_barrier_wait(a->bar);                   /* main tests y */
    pthread_barrier_wait(a->bar);
    return NULL;                                    /* exit: graph and pool freed */
}

static void test_threads(void **state)
{
    (void)state;
    bp_tensor *g, *x = leaf(2, (bp_real[]){1, -1}, &g), *z = NULL;
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    thread_arg a = {x, NULL, NULL, &bar, BP_OK};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, worker, &a), 0);
    pthread_barrier_wait(&bar);
    BP_OK_OR_FAIL(a.st);
    assert_int_equal(bp_ag_graph_size(), 0); /* not on this thread's tape */
    BP_EXPECT_ERR(bp_backward_with(a.y, x), BP_ESTATE, "another thread");
    BP_EXPECT_ERR(bp_mul(&z, a.y, x), BP_ESTATE, "input 0 was recorded on another thread");
    assert_null(z);
    pthread_barrier_wait(&bar);
    assert_int_equal(pthread_join(th, NULL), 0);
    pthread_barrier_destroy(&bar);
    /* The worker's graph is gone; its tensors stay readable. */
    BP_EXPECT_ERR(bp_backward_with(a.y, x), BP_ESTATE, "released");
    BP_ASSERT_CLOSE(bp_tensor_get(a.y, 0), 1, 0, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(a.y, 1), 0, 0, 0);
    bp_tensor_set(a.kept, 6, 2.5);
    BP_ASSERT_CLOSE(bp_tensor_get(a.kept, 6), 2.5, 0, 0);
    bp_tensor_free(a.kept);
    bp_tensor_free(a.y);
    bp_tensor_free(x);
    bp_tensor_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_record_and_backward, teardown),
        cmocka_unit_test_teardown(test_accumulates, teardown),
        cmocka_unit_test_teardown(test_diamond, teardown),
        cmocka_unit_test_teardown(test_no_grad, teardown),
        cmocka_unit_test_teardown(test_backward_errors, teardown),
        cmocka_unit_test_teardown(test_leaf_without_grad, teardown),
        cmocka_unit_test_teardown(test_backward_many_and_leaf_root, teardown),
        cmocka_unit_test_teardown(test_custom_op, teardown),
        cmocka_unit_test_teardown(test_overwrites_grad, teardown),
        cmocka_unit_test_teardown(test_trainvar_leaf, teardown),
        cmocka_unit_test_teardown(test_pool_reuse, teardown),
        cmocka_unit_test_teardown(test_release_without_backward, teardown),
        cmocka_unit_test_teardown(test_threads, teardown),
    };
    return cmocka_run_group_tests_name("autograd engine", tests, NULL, NULL);
}
