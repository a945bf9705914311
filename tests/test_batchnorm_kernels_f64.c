/* tests/test_batchnorm_kernels_f64.c — the BatchNorm kernels in the float64 flavour:
 * the whole float32 suite (tests/test_batchnorm_kernels.c, here with float64
 * tolerances), plus gradient checks of every backward kernel against central
 * finite differences of the matching forward kernel, all in double.
 *
 * Loss: L = sum(w * y) with a fixed random w, so dL/dy = w is the upstream gradient.
 * Central differences with step h have truncation error O(h^2 * |L'''|) and
 * rounding error O(eps_64 * sqrt(n) * |y| / h) from the n rounded outputs (L itself
 * is summed in long double). With h = 1e-5, |L'''| = O(10) and n <= 20000 both
 * are below 1e-8, so analytic and numeric derivatives agree to 1e-7 (atol and rtol). */
#define BNK_NO_MAIN
#include "test_batchnorm_kernels.c"

#define GC_H 1e-5
#define GC_TOL 1e-7

typedef enum { GC_TRAIN, GC_EVAL } gc_mode;

typedef struct gc_problem {
    int64_t M, C;
    int relu;
    gc_mode mode;
    double *x, *w, *scale, *bias, *rm, *rv;
    double eps;
} gc_problem;

/* L = sum(w * y) for the problem's forward kernel. */
static double gc_loss(const gc_problem *p)
{
    const int64_t M = p->M, C = p->C, n = M * C;
    double *y = malloc(sizeof(double) * (size_t)n), *mean = malloc(sizeof(double) * (size_t)C);
    double *invstd = malloc(sizeof(double) * (size_t)C);
    bp_status st;
    if (p->mode == GC_TRAIN)
        st = p->relu ? bp_bn_relu_forward_train(y, mean, invstd, NULL, p->x, p->scale, p->bias, M, C, p->eps, NULL)
                     : bp_bn_forward_train(y, mean, invstd, NULL, p->x, p->scale, p->bias, M, C, p->eps, NULL);
    else
        st = p->relu ? bp_bn_relu_forward_eval(y, p->x, p->rm, p->rv, p->scale, p->bias, M, C, p->eps, NULL)
                     : bp_bn_forward_eval(y, p->x, p->rm, p->rv, p->scale, p->bias, M, C, p->eps, NULL);
    BP_OK_OR_FAIL(st);
    long double L = 0;
    for (int64_t i = 0; i < n; i++) L += (long double)p->w[i] * y[i];
    free(y);
    free(mean);
    free(invstd);
    return (double)L;
}

/* (L(v + h) - L(v - h)) / 2h, restoring v. */
static double gc_numeric(const gc_problem *p, double *v)
{
    double keep = *v;
    *v = keep + GC_H;
    double lp = gc_loss(p);
    *v = keep - GC_H;
    double lm = gc_loss(p);
    *v = keep;
    return (lp - lm) / (2 * GC_H);
}

static void gc_expect(const char *what, int64_t i, double analytic, double numeric)
{
    if (!(fabs(analytic - numeric) <= GC_TOL + GC_TOL * fabs(numeric)))
        fail_msg("%s[%lld]: analytic %.12g, finite differences %.12g", what, (long long)i,
                 analytic, numeric);
}

/* Checks dx (every stride-th element), dscale and dbias of one problem. */
static void gradcheck(int64_t M, int64_t C, int relu, gc_mode mode, int64_t stride)
{
    gc_problem p = {M, C, relu, mode, NULL, NULL, NULL, NULL, NULL, NULL, 1e-3};
    const int64_t n = M * C;
    rng_seed((uint64_t)(M * 7 + C * 3 + relu + 10 * (int)mode));
    p.x = malloc(sizeof(double) * (size_t)n);
    p.w = malloc(sizeof(double) * (size_t)n);
    p.scale = malloc(sizeof(double) * (size_t)C);
    p.bias = malloc(sizeof(double) * (size_t)C);
    p.rm = malloc(sizeof(double) * (size_t)C);
    p.rv = malloc(sizeof(double) * (size_t)C);
    for (int64_t i = 0; i < n; i++) {
        p.x[i] = 2.0 * (double)(i % C) + (1.0 + 0.3 * (double)(i % C)) * rng_normal();
        p.w[i] = rng_normal();
    }
    for (int64_t c = 0; c < C; c++) {
        p.scale[c] = 0.5 + rng_uniform();
        p.bias[c] = 0.3 * rng_normal();
        p.rm[c] = 2.0 * (double)c + 0.5 * rng_normal();
        p.rv[c] = 0.5 + 2 * rng_uniform();
    }
    double *dx = malloc(sizeof(double) * (size_t)n), *mean = malloc(sizeof(double) * (size_t)C);
    double *invstd = malloc(sizeof(double) * (size_t)C), *y = malloc(sizeof(double) * (size_t)n);
    double *ds = calloc((size_t)C, sizeof(double)), *db = calloc((size_t)C, sizeof(double));
    for (int tries = 0;; tries++) {
        /* finite differences are only valid away from ReLU's kink; a step moves a
         * pre-activation by at most |xhat|*h <= 5e-5, so shift the bias until every one
         * of them is at least 1e-4 from 0 (the same rule for every run: deterministic) */
        if (mode == GC_TRAIN)
            BP_OK_OR_FAIL(bp_bn_forward_train(y, mean, invstd, NULL, p.x, p.scale, p.bias, M, C, p.eps, NULL));
        else
            BP_OK_OR_FAIL(bp_bn_forward_eval(y, p.x, p.rm, p.rv, p.scale, p.bias, M, C, p.eps, NULL));
        int64_t near = -1;
        for (int64_t i = 0; relu && i < n && near < 0; i++)
            if (fabs(y[i]) < 1e-4) near = i;
        if (near < 0) break;
        assert_true(tries < 100);
        p.bias[near % C] += 2e-3;
    }
    if (mode == GC_TRAIN) {
        BP_OK_OR_FAIL(relu ? bp_bn_relu_backward_train(dx, ds, db, p.w, p.x, mean, invstd, p.scale, p.bias, M, C, NULL)
                           : bp_bn_backward_train(dx, ds, db, p.w, p.x, mean, invstd, p.scale, M, C, NULL));
    } else {
        BP_OK_OR_FAIL(relu ? bp_bn_relu_backward_eval(dx, ds, db, p.w, p.x, p.rm, p.rv, p.scale, p.bias, M, C, p.eps, NULL)
                           : bp_bn_backward_eval(dx, ds, db, p.w, p.x, p.rm, p.rv, p.scale, M, C, p.eps, NULL));
    }
    if (relu) { /* the mask must matter */
        int64_t active = 0;
        for (int64_t i = 0; i < n; i++) active += y[i] > 0;
        assert_true(active > 0 && active < n);
    }
    for (int64_t i = 0; i < n; i += stride) gc_expect("dx", i, dx[i], gc_numeric(&p, &p.x[i]));
    for (int64_t c = 0; c < C; c++) {
        gc_expect("dscale", c, ds[c], gc_numeric(&p, &p.scale[c]));
        gc_expect("dbias", c, db[c], gc_numeric(&p, &p.bias[c]));
    }
    free(p.x); free(p.w); free(p.scale); free(p.bias); free(p.rm); free(p.rv);
    free(dx); free(mean); free(invstd); free(y); free(ds); free(db);
}

static void test_gradcheck_train(void **s)
{
    (void)s;
    gradcheck(6, 3, 0, GC_TRAIN, 1);
    gradcheck(2, 5, 0, GC_TRAIN, 1);   /* the smallest batch */
    gradcheck(57, 19, 0, GC_TRAIN, 1);
    gradcheck(9000, 2, 0, GC_TRAIN, 97); /* several blocks */
    gradcheck(7, 300, 0, GC_TRAIN, 5);  /* channel tiles */
}

static void test_gradcheck_train_relu(void **s)
{
    (void)s;
    gradcheck(6, 3, 1, GC_TRAIN, 1);
    gradcheck(57, 19, 1, GC_TRAIN, 1);
    gradcheck(2000, 2, 1, GC_TRAIN, 23);
}

static void test_gradcheck_eval(void **s)
{
    (void)s;
    gradcheck(6, 3, 0, GC_EVAL, 1);
    gradcheck(57, 19, 0, GC_EVAL, 1);
    gradcheck(7, 300, 0, GC_EVAL, 5);
    gradcheck(6, 3, 1, GC_EVAL, 1);
    gradcheck(57, 19, 1, GC_EVAL, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_train),
        cmocka_unit_test(test_gradcheck_train_relu),
        cmocka_unit_test(test_gradcheck_eval),
        BNK_TESTS
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
