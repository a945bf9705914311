/* tests/test_batchnorm_sync.c — cross-replica BatchNorm in one process: bound
 * to the single-process communicator it equals plain BatchNorm (output, dx,
 * parameter gradients, running statistics), including batch 1 with spatial
 * positions; unbound it is BP_EUNSUPPORTED naming the axis; group sizes are
 * validated at construction. Multi-rank runs: tests/mpi/bn_mpi.c.
 * BPC_TEST_BOTH_FLAVOURS */
#include "bp_test.h"
#include <bpc/bpc.h>

#ifdef BP_REAL_DOUBLE
#define TOL 1e-12
#else
#define TOL 2e-6
#endif

static bp_node *make(const char *axis)
{
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    bp_mode train = bp_training_mode(1);
    o.mode = &train, o.axis_name = axis, o.momentum = 0.8;
    bp_node *n = NULL;
    BP_OK_OR_FAIL(bp_batchnorm3d_new(&n, 3, &o));
    bp_batchnorm *bn = (bp_batchnorm *)n;
    for (int c = 0; c < 3; c++) ((bp_real *)bn->scale->value->data)[c] = (bp_real)(0.5 + c);
    return n;
}

static void close_all(const bp_tensor *a, const bp_tensor *b, const char *what)
{
    for (int64_t i = 0; i < a->numel; i++) {
        double x = ((const bp_real *)a->data)[i], y = ((const bp_real *)b->data)[i];
        if (!(fabs(x - y) <= TOL * (1 + fabs(y)))) fail_msg("%s[%lld]: %.12g vs %.12g", what, (long long)i, x, y);
    }
}

static void run(bp_node *bn, int64_t B, bp_tensor **y, bp_tensor **gx)
{
    bp_tensor *x = NULL, *dy = NULL;
    const int64_t shape[5] = {B, 2, 3, 2, 3};
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, shape));
    BP_OK_OR_FAIL(bp_tensor_new(&dy, BP_REAL_DTYPE, 5, shape));
    BP_OK_OR_FAIL(bp_tensor_new(gx, BP_REAL_DTYPE, 5, shape));
    for (int64_t i = 0; i < x->numel; i++) {
        ((bp_real *)x->data)[i] = (bp_real)(sin(0.3 * (double)i) * 2 + (double)(i % 3));
        ((bp_real *)dy->data)[i] = (bp_real)cos(0.7 * (double)i);
    }
    BP_OK_OR_FAIL(bp_ag_make_leaf(x, *gx));
    bp_node_zero_grad(bn);
    BP_OK_OR_FAIL(bp_node_update(bn, x, y));
    BP_OK_OR_FAIL(bp_backward_with(*y, dy));
    bp_tensor_free(x), bp_tensor_free(dy);
}

static void test_self_equals_plain(void **state)
{
    (void)state;
    bp_comm *self = NULL;
    BP_OK_OR_FAIL(bp_comm_self(&self));
    BP_OK_OR_FAIL(bp_axis_bind("batch", self));
    bp_share_save_fit(true);
    for (int64_t B = 1; B <= 4; B += 3) {
        bp_node *s = make("batch"), *p = make(NULL);
        bp_tensor *ys, *gs, *yp, *gp;
        run(s, B, &ys, &gs);
        run(p, B, &yp, &gp);
        close_all(ys, yp, "y");
        close_all(gs, gp, "dx");
        bp_batchnorm *a = (bp_batchnorm *)s, *b = (bp_batchnorm *)p;
        close_all(a->scale->grad, b->scale->grad, "dscale");
        close_all(a->bias->grad, b->bias->grad, "dbias");
        close_all(a->running_mean->value, b->running_mean->value, "running_mean");
        close_all(a->running_var->value, b->running_var->value, "running_var");
        bp_tensor_free(ys), bp_tensor_free(gs), bp_tensor_free(yp), bp_tensor_free(gp);
        bp_node_free(s), bp_node_free(p);
    }
    bp_share_save_fit(false);
    bp_comm_free(self); /* unbinds "batch" */
    assert_null(bp_axis_comm("batch"));
}

static void test_unbound_and_groups(void **state)
{
    (void)state;
    bp_node *s = make("model"), *n = NULL;
    bp_tensor *x = NULL, *y = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 5, (int64_t[]){2, 1, 1, 1, 3}));
    bp_share_save_fit(true);
    BP_EXPECT_ERR(bp_node_update(s, x, &y), BP_EUNSUPPORTED, "axis_name \"model\" asks for statistics across replicas");
    bp_share_save_fit(false);
    BP_OK_OR_FAIL(bp_node_update(s, x, &y)); /* eval needs no communicator */
    bp_tensor_free(y), bp_tensor_free(x);
    bp_node_free(s);
    bp_batchnorm_opts o = bp_batchnorm_defaults();
    o.axis_name = "batch";
    o.axis_index_groups = (int[]){0, 1, 2};
    o.n_axis_index_groups = 3;
    o.axis_index_group_size = 2;
    BP_EXPECT_ERR(bp_batchnorm3d_new(&n, 3, &o), BP_EINVAL, "3 axis_index_groups entries do not make groups of 2 ranks");
    assert_null(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_equals_plain),
        cmocka_unit_test(test_unbound_and_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
