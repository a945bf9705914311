/* tests/ops_ref.h — every autograd op against PyTorch's numbers (tests/gen_ops.py)
 * and, in float64, against central finite differences (bp_gradcheck).
 *
 * Included by test_ops_f64.c (float64: tight tolerances, gradcheck at 1e-6)
 * and test_ops.c (float32, the flavour users train with: tolerances of float
 * rounding, gradcheck at its coarse float32 defaults). Each case: load the
 * inputs, run the op on leaves, compare the output, back-propagate the
 * fixture's dy, compare every input gradient, then gradcheck the op. */
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include <bpc/gradcheck.h>
#include "bp_test.h"
#include "fixture.h"

#ifdef BP_REAL_DOUBLE
#define TOL 1e-12
#else
#define TOL 2e-6
#endif

typedef bp_status (*op_fn)(bp_tensor **out, bp_tensor *const *in);

/* Adapters from the table's uniform signature to each op. */
static bp_status f_add(bp_tensor **o, bp_tensor *const *in) { return bp_add(o, in[0], in[1]); }
static bp_status f_sub(bp_tensor **o, bp_tensor *const *in) { return bp_sub(o, in[0], in[1]); }
static bp_status f_mul(bp_tensor **o, bp_tensor *const *in) { return bp_mul(o, in[0], in[1]); }
static bp_status f_div(bp_tensor **o, bp_tensor *const *in) { return bp_div(o, in[0], in[1]); }
static bp_status f_add_s(bp_tensor **o, bp_tensor *const *in) { return bp_add_scalar(o, in[0], 1.75); }
static bp_status f_mul_s(bp_tensor **o, bp_tensor *const *in) { return bp_mul_scalar(o, in[0], -2.5); }
static bp_status f_pow_frac(bp_tensor **o, bp_tensor *const *in) { return bp_pow_scalar(o, in[0], 2.5); }
static bp_status f_pow_int(bp_tensor **o, bp_tensor *const *in) { return bp_pow_scalar(o, in[0], 3.0); }
static bp_status f_matmul(bp_tensor **o, bp_tensor *const *in) { return bp_matmul(o, in[0], in[1]); }
static bp_status f_sum_all(bp_tensor **o, bp_tensor *const *in) { return bp_sum(o, in[0], 0, NULL, false); }
static bp_status f_sum_ax1(bp_tensor **o, bp_tensor *const *in) { return bp_sum(o, in[0], 1, (int[]){1}, false); }
static bp_status f_sum_ax02(bp_tensor **o, bp_tensor *const *in) { return bp_sum(o, in[0], 2, (int[]){0, 2}, true); }
static bp_status f_sum_axm1(bp_tensor **o, bp_tensor *const *in) { return bp_sum(o, in[0], 1, (int[]){-1}, false); }
static bp_status f_mean_all(bp_tensor **o, bp_tensor *const *in) { return bp_mean(o, in[0], 0, NULL, false); }
static bp_status f_mean_ax1(bp_tensor **o, bp_tensor *const *in) { return bp_mean(o, in[0], 1, (int[]){1}, false); }
static bp_status f_mean_ax02(bp_tensor **o, bp_tensor *const *in) { return bp_mean(o, in[0], 2, (int[]){2, 0}, true); }
static bp_status f_mean_axm1(bp_tensor **o, bp_tensor *const *in) { return bp_mean(o, in[0], 1, (int[]){-1}, false); }
static bp_status f_reshape(bp_tensor **o, bp_tensor *const *in) { return bp_reshape(o, in[0], 2, (int64_t[]){4, -1}); }
static bp_status f_flatten(bp_tensor **o, bp_tensor *const *in) { return bp_flatten(o, in[0], 1, -1); }
static bp_status f_flatten01(bp_tensor **o, bp_tensor *const *in) { return bp_flatten(o, in[0], 0, 1); }
static bp_status f_relu(bp_tensor **o, bp_tensor *const *in) { return bp_relu(o, in[0]); }
static bp_status f_leaky(bp_tensor **o, bp_tensor *const *in) { return bp_leaky_relu(o, in[0], 0.1); }
static bp_status f_sigmoid(bp_tensor **o, bp_tensor *const *in) { return bp_sigmoid(o, in[0]); }
static bp_status f_tanh(bp_tensor **o, bp_tensor *const *in) { return bp_tanh(o, in[0]); }
static bp_status f_gelu(bp_tensor **o, bp_tensor *const *in) { return bp_gelu(o, in[0]); }
static bp_status f_softmax(bp_tensor **o, bp_tensor *const *in) { return bp_softmax(o, in[0]); }
static bp_status f_log_softmax(bp_tensor **o, bp_tensor *const *in) { return bp_log_softmax(o, in[0]); }
static bp_status f_ce(bp_tensor **o, bp_tensor *const *in) { return bp_softmax_cross_entropy(o, in[0], in[1]); }
static bp_status f_mse(bp_tensor **o, bp_tensor *const *in) { return bp_mse(o, in[0], in[1]); }

typedef struct op_case {
    const char *file, *name;
    op_fn fn;
    int n_in;
    int label_input; /* input loaded as int64 labels, or -1 */
} op_case;

static const op_case cases[] = {
    {"ops_elementwise.txt", "add_same", f_add, 2, -1},
    {"ops_elementwise.txt", "add_suffix", f_add, 2, -1},
    {"ops_elementwise.txt", "add_prefix", f_add, 2, -1},
    {"ops_elementwise.txt", "add_0d", f_add, 2, -1},
    {"ops_elementwise.txt", "add_scalar", f_add_s, 1, -1},
    {"ops_elementwise.txt", "sub_same", f_sub, 2, -1},
    {"ops_elementwise.txt", "sub_suffix", f_sub, 2, -1},
    {"ops_elementwise.txt", "sub_prefix", f_sub, 2, -1},
    {"ops_elementwise.txt", "sub_0d", f_sub, 2, -1},
    {"ops_elementwise.txt", "mul_same", f_mul, 2, -1},
    {"ops_elementwise.txt", "mul_suffix", f_mul, 2, -1},
    {"ops_elementwise.txt", "mul_prefix", f_mul, 2, -1},
    {"ops_elementwise.txt", "mul_0d", f_mul, 2, -1},
    {"ops_elementwise.txt", "mul_scalar", f_mul_s, 1, -1},
    {"ops_elementwise.txt", "div_same", f_div, 2, -1},
    {"ops_elementwise.txt", "div_suffix", f_div, 2, -1},
    {"ops_elementwise.txt", "div_prefix", f_div, 2, -1},
    {"ops_elementwise.txt", "pow_frac", f_pow_frac, 1, -1},
    {"ops_elementwise.txt", "pow_int", f_pow_int, 1, -1},
    {"ops_matmul.txt", "matmul_2d", f_matmul, 2, -1},
    {"ops_matmul.txt", "matmul_3d", f_matmul, 2, -1},
    {"ops_matmul.txt", "matmul_1d", f_matmul, 2, -1},
    {"ops_reduce.txt", "sum_all", f_sum_all, 1, -1},
    {"ops_reduce.txt", "sum_ax1", f_sum_ax1, 1, -1},
    {"ops_reduce.txt", "sum_ax02_keep", f_sum_ax02, 1, -1},
    {"ops_reduce.txt", "sum_axm1", f_sum_axm1, 1, -1},
    {"ops_reduce.txt", "mean_all", f_mean_all, 1, -1},
    {"ops_reduce.txt", "mean_ax1", f_mean_ax1, 1, -1},
    {"ops_reduce.txt", "mean_ax02_keep", f_mean_ax02, 1, -1},
    {"ops_reduce.txt", "mean_axm1", f_mean_axm1, 1, -1},
    {"ops_shape.txt", "reshape", f_reshape, 1, -1},
    {"ops_shape.txt", "flatten", f_flatten, 1, -1},
    {"ops_shape.txt", "flatten_01", f_flatten01, 1, -1},
    {"ops_activation.txt", "relu", f_relu, 1, -1},
    {"ops_activation.txt", "leaky_relu", f_leaky, 1, -1},
    {"ops_activation.txt", "sigmoid", f_sigmoid, 1, -1},
    {"ops_activation.txt", "tanh", f_tanh, 1, -1},
    {"ops_activation.txt", "gelu", f_gelu, 1, -1},
    {"ops_activation.txt", "softmax_2d", f_softmax, 1, -1},
    {"ops_activation.txt", "softmax_3d", f_softmax, 1, -1},
    {"ops_activation.txt", "log_softmax_2d", f_log_softmax, 1, -1},
    {"ops_activation.txt", "log_softmax_3d", f_log_softmax, 1, -1},
    {"ops_loss.txt", "ce_2d", f_ce, 2, 1},
    {"ops_loss.txt", "ce_3d", f_ce, 2, 1},
    {"ops_loss.txt", "mse", f_mse, 2, -1},
};

static const fx_tensor *need(const fx_file *f, const char *c, const char *what)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", c, what);
    const fx_tensor *t = fx_get(f, key);
    if (!t) fail_msg("fixture tensor %s missing", key);
    return t;
}

static bp_tensor *real_tensor(const fx_tensor *fx)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, fx->ndim, fx->shape));
    for (int64_t i = 0; i < fx->numel; i++) bp_tensor_set(t, i, fx->data[i]);
    return t;
}

static void assert_matches(const bp_tensor *t, const fx_tensor *fx, const char *what, const char *c)
{
    if (!bp_tensor_has_shape(t, fx->ndim, fx->shape)) fail_msg("%s %s: shape differs from PyTorch's", c, what);
    for (int64_t i = 0; i < fx->numel; i++) {
        double got = bp_tensor_get(t, i), want = fx->data[i];
        if (!(fabs(got - want) <= TOL + TOL * fabs(want)))
            fail_msg("%s %s[%lld] = %.17g, PyTorch %.17g", c, what, (long long)i, got, want);
    }
}

/* bp_gradcheck's function: the case's op on the gradcheck inputs. */
static bp_status gc_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    return ((const op_case *)user)->fn(out, in);
}

static void run_case(void **state)
{
    const op_case *c = *state;
    fx_file *f = fx_load(c->file);
    assert_non_null(f);
    bp_tensor *in[2] = {NULL, NULL}, *grads[2] = {NULL, NULL};
    for (int i = 0; i < c->n_in; i++) {
        const fx_tensor *fx = need(f, c->name, i ? "in1" : "in0");
        if (i == c->label_input) {
            BP_OK_OR_FAIL(bp_tensor_new(&in[i], BP_INT64, fx->ndim, fx->shape));
            for (int64_t k = 0; k < fx->numel; k++) bp_tensor_set(in[i], k, fx->data[k]);
        } else {
            in[i] = real_tensor(fx);
            BP_OK_OR_FAIL(bp_tensor_new(&grads[i], BP_REAL_DTYPE, fx->ndim, fx->shape));
            BP_OK_OR_FAIL(bp_ag_make_leaf(in[i], grads[i]));
        }
    }

    bp_tensor *out = NULL;
    BP_OK_OR_FAIL(c->fn(&out, in));
    assert_matches(out, need(f, c->name, "out"), "forward", c->name);
    assert_true(out->requires_grad);
    bp_tensor *dy = real_tensor(need(f, c->name, "dy"));
    BP_OK_OR_FAIL(bp_backward_with(out, dy));
    assert_int_equal(bp_ag_graph_size(), 0);
    for (int i = 0; i < c->n_in; i++)
        if (grads[i]) assert_matches(grads[i], need(f, c->name, i ? "g1" : "g0"), i ? "grad of input 1" : "grad of input 0", c->name);
    bp_tensor_free(out);
    bp_tensor_free(dy);

    bp_gradcheck_report rep;
    bp_status st = bp_gradcheck(gc_fn, (void *)c, c->n_in, in, NULL, &rep);
    if (st) fail_msg("%s: %s", c->name, bp_last_error());
    assert_true(rep.passed);
    assert_true(rep.n_checked > 0);
#ifdef BP_REAL_DOUBLE
    /* Far inside the default tolerance: a wrong backward is off by O(1). */
    if (rep.max_abs_err > 1e-7) fail_msg("%s: gradcheck max abs err %g", c->name, rep.max_abs_err);
#endif
    /* gradcheck restores the leaves it borrowed. */
    for (int i = 0; i < c->n_in; i++)
        if (grads[i]) assert_ptr_equal(in[i]->grad, grads[i]);

    for (int i = 0; i < c->n_in; i++) {
        bp_tensor_free(in[i]);
        bp_tensor_free(grads[i]);
    }
    fx_free(f);
}

static int teardown(void **state)
{
    (void)state;
    bp_ag_pool_trim();
    return 0;
}

int main(void)
{
    enum { N = sizeof cases / sizeof cases[0] };
    struct CMUnitTest tests[N];
    for (int i = 0; i < N; i++) {
        tests[i] = (struct CMUnitTest){cases[i].name, run_case, NULL, teardown, (void *)&cases[i]};
    }
    return cmocka_run_group_tests_name(BP_REAL_NAME " ops vs PyTorch and gradcheck", tests, NULL, NULL);
}
