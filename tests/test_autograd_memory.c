/* tests/test_autograd_memory.c — 10,000 forward+backward steps of a small MLP
 * keep the resident set flat: after a warm-up of 100 steps, RSS (from
 * /proc/self/statm) may not grow by more than 256 KiB, and the autograd pool
 * not at all. The model really trains (the loss falls), so the steps do work.
 * Under AddressSanitizer or valgrind the RSS bound is skipped (their
 * quarantines hold freed memory by design); the pool bound and the loss still
 * hold there. */
#include <stdlib.h>
#include <stdbool.h>
#include <unistd.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include "bp_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define BP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BP_ASAN 1
#endif
#endif

/* valgrind preloads its vgpreload_*.so into the program. */
static bool under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload");
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

typedef struct mlp {
    bp_var *w1, *b1, *w2, *b2;
} mlp;

static bp_var *param(int ndim, const int64_t *shape, bp_rng *r, double scale)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, ndim, shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, scale * bp_rng_normal(r));
    bp_var *v = NULL;
    BP_OK_OR_FAIL(bp_var_new(&v, BP_TRAINVAR, t));
    bp_tensor_free(t);
    return v;
}

/* loss = cross_entropy(relu(x W1 + b1) W2 + b2, labels) */
static bp_status step(mlp *m, bp_tensor *x, bp_tensor *labels, double *loss_out)
{
    bp_tensor *h = NULL, *hb = NULL, *a = NULL, *o = NULL, *ob = NULL, *loss = NULL;
    bp_status st = bp_matmul(&h, x, m->w1->value);
    if (!st) st = bp_add(&hb, h, m->b1->value);
    if (!st) st = bp_relu(&a, hb);
    if (!st) st = bp_matmul(&o, a, m->w2->value);
    if (!st) st = bp_add(&ob, o, m->b2->value);
    if (!st) st = bp_softmax_cross_entropy(&loss, ob, labels);
    bp_tensor_free(h);
    bp_tensor_free(hb);
    bp_tensor_free(a);
    bp_tensor_free(o);
    bp_tensor_free(ob);
    if (!st) {
        *loss_out = bp_tensor_get(loss, 0);
        bp_var_zero_grad(m->w1);
        bp_var_zero_grad(m->b1);
        bp_var_zero_grad(m->w2);
        bp_var_zero_grad(m->b2);
        st = bp_backward(loss);
    }
    bp_tensor_free(loss);
    if (st) return st;
    /* Plain SGD, outside the graph. */
    bp_var *vs[] = {m->w1, m->b1, m->w2, m->b2};
    for (int k = 0; k < 4; k++) {
        bp_real *w = vs[k]->value->data;
        const bp_real *g = vs[k]->grad->data;
        for (int64_t i = 0; i < vs[k]->value->numel; i++) w[i] -= (bp_real)0.1 * g[i];
    }
    return BP_OK;
}

static void test_rss_flat(void **state)
{
    (void)state;
    enum { B = 16, IN = 8, HID = 32, OUT = 4, STEPS = 10000, WARM = 100 };
    bp_rng r;
    bp_rng_seed(&r, 5);
    mlp m = {param(2, (int64_t[]){IN, HID}, &r, 0.3), param(1, (int64_t[]){HID}, &r, 0.0),
             param(2, (int64_t[]){HID, OUT}, &r, 0.3), param(1, (int64_t[]){OUT}, &r, 0.0)};
    bp_tensor *x = NULL, *labels = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 2, (int64_t[]){B, IN}));
    BP_OK_OR_FAIL(bp_tensor_new(&labels, BP_INT32, 1, (int64_t[]){B}));
    /* A learnable rule: the label is the argmax of the first OUT features. */
    for (int i = 0; i < B; i++) {
        int best = 0;
        for (int j = 0; j < IN; j++) bp_tensor_set(x, i * IN + j, bp_rng_normal(&r));
        for (int j = 1; j < OUT; j++)
            if (bp_tensor_get(x, i * IN + j) > bp_tensor_get(x, i * IN + best)) best = j;
        bp_tensor_set(labels, i, best);
    }
    double first = 0, loss = 0;
    long rss_warm = 0;
    size_t pool_warm = 0;
    for (int s = 0; s < STEPS; s++) {
        BP_OK_OR_FAIL(step(&m, x, labels, &loss));
        if (s == 0) first = loss;
        if (s == WARM) {
            rss_warm = rss_bytes();
            pool_warm = bp_ag_pool_bytes();
        }
    }
    long rss_end = rss_bytes();
    assert_int_equal(bp_ag_graph_size(), 0);
    assert_true(pool_warm > 0);
    assert_int_equal(bp_ag_pool_bytes(), pool_warm);
    if (!(loss < 0.5 * first)) fail_msg("loss %g did not fall from %g", loss, first);
    assert_true(rss_warm > 0);
    print_message("RSS after %d steps %ld KiB, after %d steps %ld KiB (growth %ld KiB); pool %zu bytes\n", WARM,
                  rss_warm / 1024, STEPS, rss_end / 1024, (rss_end - rss_warm) / 1024, pool_warm);
#ifdef BP_ASAN
    (void)under_valgrind;
#else
    if (!under_valgrind() && rss_end - rss_warm > 256 * 1024) fail_msg("RSS grew by %ld KiB over %d steps", (rss_end - rss_warm) / 1024, STEPS - WARM);
#endif
    bp_var_free(m.w1);
    bp_var_free(m.b1);
    bp_var_free(m.w2);
    bp_var_free(m.b2);
    bp_tensor_free(x);
    bp_tensor_free(labels);
    bp_ag_pool_trim();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rss_flat),
    };
    return cmocka_run_group_tests_name("autograd memory", tests, NULL, NULL);
}
