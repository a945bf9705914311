/* tests/test_delay.c — LengthDelay ring buffers and the node-level delay API
 * (BrainPy <= 2.4.5 semantics). Every expected value is worked by hand from
 *   retrieve(d) = data[(idx + d) % n],  update(v): idx = (idx - 1) % n; data[idx] = v
 * so after k pushes of 1, 2, ..., k into a buffer whose row 0 started as the
 * target T and rows 1.. as init[0..]:
 *   retrieve(d) = k - d (d < k),  T (d == k),  init[d - k - 1] (d > k). */
#include "bp_test.h"
#include <pthread.h>
#include <bpc/delay.h>

/* ------------------------------------------------------------- helpers */

static bp_tensor *vec(int64_t n, const float *vals)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_from_data(&t, BP_FLOAT32, 1, &n, vals));
    return t;
}

static bp_tensor *vec2(float a, float b) { return vec(2, (const float[]){a, b}); }

static bp_tensor *scalar(double v)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_full(&t, BP_FLOAT32, 0, NULL, v));
    return t;
}

/* Asserts t is 1-D of length n holding exactly vals. */
static void expect_vec(const bp_tensor *t, int64_t n, const double *vals)
{
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], n);
    for (int64_t i = 0; i < n; i++) BP_ASSERT_CLOSE(bp_tensor_get(t, i), vals[i], 0, 0);
}

static void expect_retrieve(bp_node *d, int64_t step, double a, double b)
{
    bp_tensor *r;
    BP_OK_OR_FAIL(bp_length_delay_retrieve(d, step, &r));
    expect_vec(r, 2, (const double[]){a, b});
    bp_tensor_free(r);
}

static int32_t idx_of(bp_node *d) { return (int32_t)bp_tensor_get(bp_node_var(d, "idx")->value, 0); }

/* A plain node class standing in for a neuron group / network. */
typedef struct test_net {
    bp_node base;
} test_net;
static const bp_node_class test_net_class = {.name = "Net", .size = sizeof(test_net)};

static bp_node *new_net(void)
{
    bp_node *n;
    BP_OK_OR_FAIL(bp_node_create(&n, &test_net_class, NULL, NULL));
    return n;
}

/* A net with a float32 var "v" of the given values; *v gets it (borrowed). */
static bp_node *net_with_var(int64_t len, const float *vals, bp_var **v)
{
    bp_node *n = new_net();
    bp_tensor *t = vec(len, vals);
    BP_OK_OR_FAIL(bp_node_add_var(n, "v", BP_VARIABLE, t, v));
    bp_tensor_free(t);
    return n;
}

static void set_var(bp_var *v, int64_t len, const float *vals)
{
    for (int64_t i = 0; i < len; i++) bp_tensor_set(v->value, i, vals[i]);
}

static const bp_delay_steps STEP_NONE = {.kind = BP_DELAY_NONE};
static bp_delay_steps homo(int64_t s) { return (bp_delay_steps){.kind = BP_DELAY_HOMO, .step = s}; }
static bp_delay_steps heter(const int64_t *s, size_t count)
{
    return (bp_delay_steps){.kind = BP_DELAY_HETER, .steps = s, .count = count};
}

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache(); /* names start at Net0 / LengthDelay0 in every test */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    /* Every test frees its nodes, which must empty global_delay_data. */
    assert_int_equal(bp_global_delay_count(), 0);
    bp_clear_name_cache();
    return 0;
}

/* -------------------------------------------------------- LengthDelay */

/* Push 1,2,3,4,5 (as (v, 10v)) into a max_len = 3 delay whose target is
 * (9, 90); check the index, the raw rows and every retrieve after every push. */
static void test_rotate_sequence(void **state)
{
    (void)state;
    bp_tensor *target = vec2(9, 90);
    bp_node *d;
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 3, NULL, NULL));
    assert_string_equal(bp_node_name(d), "LengthDelay0");
    assert_string_equal(bp_node_class_name(d), "LengthDelay");
    assert_int_equal(bp_length_delay_num_steps(d), 4);
    bp_tensor *data = bp_node_var(d, "data")->value;
    bp_tensor *idx = bp_node_var(d, "idx")->value;
    assert_int_equal(data->ndim, 2);
    assert_int_equal(data->shape[0], 4);
    assert_int_equal(data->shape[1], 2);
    assert_int_equal(data->dtype, BP_FLOAT32);
    assert_int_equal(idx->ndim, 1);
    assert_int_equal(idx->shape[0], 1);
    assert_int_equal(idx->dtype, BP_INT32);
    assert_int_equal(idx_of(d), 0);
    /* Row 0 = target, rows 1..3 = zeros. */
    const double rows0[8] = {9, 90, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) BP_ASSERT_CLOSE(bp_tensor_get(data, i), rows0[i], 0, 0);
    expect_retrieve(d, 0, 9, 90);
    expect_retrieve(d, 1, 0, 0);
    expect_retrieve(d, 3, 0, 0);

    /* After push k: idx = (-k) mod 4, row idx = k; retrieve(d) as the header formula. */
    const int32_t want_idx[6] = {0, 3, 2, 1, 0, 3};
    for (int k = 1; k <= 5; k++) {
        bp_tensor *v = vec2((float)k, 10.0f * k);
        BP_OK_OR_FAIL(bp_length_delay_update(d, v));
        bp_tensor_free(v);
        assert_int_equal(idx_of(d), want_idx[k]);
        BP_ASSERT_CLOSE(bp_tensor_get(data, 2 * want_idx[k]), k, 0, 0);
        for (int s = 0; s <= 3; s++) {
            double e = s < k ? k - s : s == k ? 9 : 0;
            expect_retrieve(d, s, e, 10 * e);
        }
    }
    /* The raw buffer after 5 pushes: rows 0..3 hold 4, 3, 2, 5. */
    const double rows5[8] = {4, 40, 3, 30, 2, 20, 5, 50};
    for (int i = 0; i < 8; i++) BP_ASSERT_CLOSE(bp_tensor_get(data, i), rows5[i], 0, 0);

    /* update() through the node class pushes too, and returns no tensor. */
    bp_tensor *out = target, *six = vec2(6, 60);
    BP_OK_OR_FAIL(bp_node_update(d, six, &out));
    assert_null(out);
    expect_retrieve(d, 0, 6, 60);
    expect_retrieve(d, 3, 3, 30);
    assert_int_equal(idx_of(d), 2);
    bp_tensor_free(six);
    bp_tensor_free(target);
    bp_node_free(d);
}

/* max_len = 0: one row that every push overwrites. */
static void test_zero_length(void **state)
{
    (void)state;
    bp_tensor *target = vec2(1, 2), *v = vec2(3, 4);
    bp_node *d;
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 0, NULL, "dz"));
    assert_string_equal(bp_node_name(d), "dz");
    assert_int_equal(bp_length_delay_num_steps(d), 1);
    expect_retrieve(d, 0, 1, 2);
    BP_OK_OR_FAIL(bp_length_delay_update(d, v));
    assert_int_equal(idx_of(d), 0);
    expect_retrieve(d, 0, 3, 4);
    bp_tensor *r = v;
    BP_EXPECT_ERR(bp_length_delay_retrieve(d, 1, &r), BP_EINVAL, "must be in [0, 0], got 1");
    assert_null(r);
    bp_tensor_free(v);
    bp_tensor_free(target);
    bp_node_free(d);
}

/* The rows 1.. of every form of initial data, and the pushes reaching them. */
static void test_initial_data(void **state)
{
    (void)state;
    bp_tensor *target = vec2(9, 90);
    bp_node *d;

    /* A scalar fills every delayed element. */
    bp_tensor *s = scalar(7);
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 3, s, NULL));
    expect_retrieve(d, 0, 9, 90);
    for (int k = 1; k <= 3; k++) expect_retrieve(d, k, 7, 7);
    bp_tensor_free(s);
    bp_node_free(d);

    /* One value of the target's shape, repeated on every row. */
    bp_tensor *row = vec2(5, -5);
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 2, row, NULL));
    expect_retrieve(d, 1, 5, -5);
    expect_retrieve(d, 2, 5, -5);
    bp_tensor_free(row);
    bp_node_free(d);

    /* All max_len rows, in float64: converted to the target's float32. After
     * one push of (1, 10): retrieve = (1,10), T, init[0], init[1]. */
    int64_t shape[2] = {3, 2};
    const double init[6] = {-1, -10, -2, -20, -3, -30};
    bp_tensor *all;
    BP_OK_OR_FAIL(bp_tensor_from_data(&all, BP_FLOAT64, 2, shape, init));
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 3, all, NULL));
    assert_int_equal(bp_node_var(d, "data")->value->dtype, BP_FLOAT32);
    expect_retrieve(d, 1, -1, -10);
    expect_retrieve(d, 2, -2, -20);
    expect_retrieve(d, 3, -3, -30);
    bp_tensor *one = vec2(1, 10);
    BP_OK_OR_FAIL(bp_length_delay_update(d, one));
    expect_retrieve(d, 0, 1, 10);
    expect_retrieve(d, 1, 9, 90);
    expect_retrieve(d, 2, -1, -10);
    expect_retrieve(d, 3, -2, -20);
    bp_tensor_free(one);
    bp_tensor_free(all);
    bp_node_free(d);

    /* Wrong shapes: (2, 2) is neither (2,) nor (3, 2); (1,) is not a scalar. */
    int64_t bad_shape[2] = {2, 2};
    bp_tensor *bad, *bad1;
    BP_OK_OR_FAIL(bp_tensor_new(&bad, BP_FLOAT32, 2, bad_shape));
    BP_OK_OR_FAIL(bp_tensor_new(&bad1, BP_FLOAT32, 1, (const int64_t[]){1}));
    bp_node sentinel;
    d = &sentinel; /* must be reset to NULL on failure */
    BP_EXPECT_ERR(bp_length_delay_new(&d, target, 3, bad, NULL), BP_ESHAPE,
                  "of the target's shape (2,) or of shape (3,2), got (2,2)");
    assert_null(d);
    BP_EXPECT_ERR(bp_length_delay_new(&d, target, 3, bad1, NULL), BP_ESHAPE, "got (1,)");
    bp_tensor_free(bad);
    bp_tensor_free(bad1);
    bp_tensor_free(target);
}

/* Integer targets keep their dtype; data and retrieve are int32. */
static void test_int_target(void **state)
{
    (void)state;
    int64_t three = 3;
    bp_tensor *target, *v, *r;
    BP_OK_OR_FAIL(bp_tensor_from_data(&target, BP_INT32, 1, &three, (const int32_t[]){1, 2, 3}));
    bp_node *d;
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 2, NULL, NULL));
    assert_int_equal(bp_node_var(d, "data")->value->dtype, BP_INT32);
    /* A float value is converted on the way in (truncation, as an int cast). */
    BP_OK_OR_FAIL(bp_tensor_from_data(&v, BP_FLOAT32, 1, &three, (const float[]){4, 5, 6}));
    BP_OK_OR_FAIL(bp_length_delay_update(d, v));
    BP_OK_OR_FAIL(bp_length_delay_retrieve(d, 1, &r));
    assert_int_equal(r->dtype, BP_INT32);
    assert_int_equal(((int32_t *)r->data)[0], 1);
    assert_int_equal(((int32_t *)r->data)[2], 3);
    bp_tensor_free(r);
    BP_OK_OR_FAIL(bp_length_delay_retrieve(d, 0, &r));
    assert_int_equal(((int32_t *)r->data)[1], 5);
    bp_tensor_free(r);
    bp_tensor_free(v);
    bp_tensor_free(target);
    bp_node_free(d);
}

/* Per-element retrieval over the flattened target. */
static void test_retrieve_each(void **state)
{
    (void)state;
    bp_tensor *target = vec(3, (const float[]){0, 0, 0}), *out;
    bp_node *d;
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 2, NULL, NULL));
    for (int k = 1; k <= 3; k++) {
        bp_tensor *v = vec(3, (const float[]){(float)k, 10.0f * k, 100.0f * k});
        BP_OK_OR_FAIL(bp_length_delay_update(d, v));
        bp_tensor_free(v);
    }
    /* After pushes 1..3: step s gives push 3 - s. */
    const int64_t steps[3] = {0, 1, 2};
    BP_OK_OR_FAIL(bp_length_delay_retrieve_each(d, steps, NULL, 3, &out));
    expect_vec(out, 3, (const double[]){3, 20, 100});
    bp_tensor_free(out);
    const int64_t steps2[4] = {2, 0, 1, 1}, idx2[4] = {2, 2, 0, 1};
    BP_OK_OR_FAIL(bp_length_delay_retrieve_each(d, steps2, idx2, 4, &out));
    expect_vec(out, 4, (const double[]){100, 300, 2, 20});
    bp_tensor_free(out);
    BP_OK_OR_FAIL(bp_length_delay_retrieve_each(d, NULL, NULL, 0, &out));
    assert_int_equal(out->ndim, 1);
    assert_int_equal(out->shape[0], 0);
    bp_tensor_free(out);

    BP_EXPECT_ERR(bp_length_delay_retrieve_each(d, (const int64_t[]){0, 3}, NULL, 2, &out), BP_EINVAL,
                  "delay step 1 must be in [0, 2], got 3");
    BP_EXPECT_ERR(bp_length_delay_retrieve_each(d, (const int64_t[]){-1}, NULL, 1, &out), BP_EINVAL,
                  "got -1");
    BP_EXPECT_ERR(bp_length_delay_retrieve_each(d, steps, (const int64_t[]){0, 3}, 2, &out), BP_EINVAL,
                  "index 1 must be in [0, 3), got 3");
    BP_EXPECT_ERR(bp_length_delay_retrieve_each(d, steps, (const int64_t[]){-2}, 1, &out), BP_EINVAL,
                  "got -2");
    BP_EXPECT_ERR(bp_length_delay_retrieve_each(d, NULL, NULL, 2, &out), BP_EINVAL, "steps is NULL");
    BP_EXPECT_ERR(bp_length_delay_retrieve_each(d, steps, NULL, 3, NULL), BP_EINVAL, "out is NULL");
    bp_tensor_free(target);
    bp_node_free(d);
}

/* reset: same length in place; a new length or target shape replaces the
 * buffer (the var stays the same object); idx returns to 0. */
static void test_reset(void **state)
{
    (void)state;
    bp_tensor *target = vec2(9, 90), *seven = scalar(7);
    bp_node *d;
    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 3, seven, NULL));
    bp_var *data = bp_node_var(d, "data");
    bp_tensor *buf = data->value;
    for (int k = 1; k <= 2; k++) {
        bp_tensor *v = vec2((float)k, 10.0f * k);
        BP_OK_OR_FAIL(bp_length_delay_update(d, v));
        bp_tensor_free(v);
    }
    assert_int_equal(idx_of(d), 2);

    /* Same length (max_len < 0): row 0 = new target, the rest zeros (the
     * initial data is not remembered), written into the same tensor. */
    bp_tensor *t2 = vec2(4, 40);
    BP_OK_OR_FAIL(bp_length_delay_reset(d, t2, -1, NULL));
    assert_ptr_equal(data->value, buf);
    assert_int_equal(idx_of(d), 0);
    assert_int_equal(bp_length_delay_num_steps(d), 4);
    expect_retrieve(d, 0, 4, 40);
    for (int k = 1; k <= 3; k++) expect_retrieve(d, k, 0, 0);

    /* Longer, with a scalar initial value: the var's tensor is replaced. */
    bp_tensor *v = vec2(1, 10);
    BP_OK_OR_FAIL(bp_length_delay_update(d, v));
    BP_OK_OR_FAIL(bp_length_delay_reset(d, t2, 5, seven));
    assert_ptr_equal(bp_node_var(d, "data"), data);
    assert_int_equal(data->value->shape[0], 6);
    assert_int_equal(data->value->shape[1], 2);
    assert_null(data->grad);
    assert_int_equal(idx_of(d), 0);
    expect_retrieve(d, 0, 4, 40);
    expect_retrieve(d, 5, 7, 7);
    BP_OK_OR_FAIL(bp_length_delay_update(d, v));
    expect_retrieve(d, 0, 1, 10);
    expect_retrieve(d, 1, 4, 40);
    expect_retrieve(d, 2, 7, 7);

    /* A target of another shape re-lays the buffer out as (n, 3). */
    bp_tensor *t3 = vec(3, (const float[]){1, 2, 3}), *r;
    BP_OK_OR_FAIL(bp_length_delay_reset(d, t3, 1, NULL));
    assert_int_equal(data->value->ndim, 2);
    assert_int_equal(data->value->shape[0], 2);
    assert_int_equal(data->value->shape[1], 3);
    BP_OK_OR_FAIL(bp_length_delay_retrieve(d, 0, &r));
    expect_vec(r, 3, (const double[]){1, 2, 3});
    bp_tensor_free(r);
    BP_EXPECT_ERR(bp_length_delay_update(d, v), BP_ESHAPE, "target's shape (3,), got (2,)");

    BP_EXPECT_ERR(bp_length_delay_reset(d, NULL, 2, NULL), BP_EINVAL, "target is NULL");
    BP_EXPECT_ERR(bp_length_delay_reset(d, t3, 2, v), BP_ESHAPE, "got (2,)");
    BP_EXPECT_ERR(bp_length_delay_reset(NULL, t3, 2, NULL), BP_EINVAL, "delay is NULL");
    bp_tensor_free(t3);
    bp_tensor_free(v);
    bp_tensor_free(t2);
    bp_tensor_free(seven);
    bp_tensor_free(target);
    bp_node_free(d);
}

static void test_length_delay_errors(void **state)
{
    (void)state;
    bp_tensor *target = vec2(0, 0), *r = NULL, *three = vec(3, (const float[]){1, 2, 3});
    bp_node *d, *net = new_net();
    BP_EXPECT_ERR(bp_length_delay_new(NULL, target, 3, NULL, NULL), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_length_delay_new(&d, NULL, 3, NULL, NULL), BP_EINVAL, "target is NULL");
    BP_EXPECT_ERR(bp_length_delay_new(&d, target, -1, NULL, NULL), BP_EINVAL, "max_len must be >= 0, got -1");
    BP_EXPECT_ERR(bp_length_delay_new(&d, target, 3, NULL, "9bad"), BP_ENAME, "9bad");
    BP_EXPECT_ERR(bp_length_delay_new(&d, target, INT32_MAX, NULL, NULL), BP_EINVAL,
                  "max_len must be < 2147483647 (idx is int32), got 2147483647");
    int64_t shape8[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    bp_tensor *t8;
    BP_OK_OR_FAIL(bp_tensor_new(&t8, BP_FLOAT32, 8, shape8));
    BP_EXPECT_ERR(bp_length_delay_new(&d, t8, 3, NULL, NULL), BP_ESHAPE, "at most 7 dims");
    bp_tensor_free(t8);

    BP_OK_OR_FAIL(bp_length_delay_new(&d, target, 3, NULL, "d"));
    BP_EXPECT_ERR(bp_length_delay_retrieve(d, 4, &r), BP_EINVAL, "d: retrieve: delay step must be in [0, 3], got 4");
    BP_EXPECT_ERR(bp_length_delay_retrieve(d, -1, &r), BP_EINVAL, "must be in [0, 3], got -1");
    assert_null(r);
    BP_EXPECT_ERR(bp_length_delay_retrieve(d, 0, NULL), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_length_delay_update(d, three), BP_ESHAPE, "target's shape (2,), got (3,)");
    BP_EXPECT_ERR(bp_length_delay_update(d, NULL), BP_EINVAL, "value is NULL");
    assert_int_equal(idx_of(d), 0); /* failed updates move nothing */
    BP_EXPECT_ERR(bp_length_delay_retrieve(NULL, 0, &r), BP_EINVAL, "delay is NULL");
    BP_EXPECT_ERR(bp_length_delay_retrieve(net, 0, &r), BP_EINVAL, "expected a LengthDelay, got Net \"Net0\"");
    BP_EXPECT_ERR(bp_length_delay_update(net, target), BP_EINVAL, "expected a LengthDelay");
    BP_EXPECT_ERR(bp_length_delay_reset(net, target, 1, NULL), BP_EINVAL, "expected a LengthDelay");
    BP_EXPECT_ERR(bp_length_delay_retrieve_each(net, NULL, NULL, 0, &r), BP_EINVAL, "expected a LengthDelay");
    assert_int_equal(bp_length_delay_num_steps(net), 0);
    assert_int_equal(bp_length_delay_num_steps(NULL), 0);
    BP_EXPECT_ERR(bp_length_delay_reset(d, target, INT32_MAX, NULL), BP_EINVAL, "idx is int32");

    /* An idx loaded from elsewhere (negative, or past n) still reads the right row. */
    bp_tensor *v = vec2(1, 10);
    BP_OK_OR_FAIL(bp_length_delay_update(d, v)); /* idx 3, row 3 = (1, 10) */
    bp_tensor_set(bp_node_var(d, "idx")->value, 0, -1); /* -1 mod 4 = 3 */
    expect_retrieve(d, 0, 1, 10);
    bp_tensor_set(bp_node_var(d, "idx")->value, 0, 7); /* 7 mod 4 = 3 */
    expect_retrieve(d, 0, 1, 10);
    BP_OK_OR_FAIL(bp_length_delay_update(d, v));
    assert_int_equal(idx_of(d), 2);
    bp_tensor_free(v);

    bp_tensor_free(three);
    bp_tensor_free(target);
    bp_node_free(d);
    bp_node_free(net);
}

/* ------------------------------------------------------ node-level API */

/* register + vars()/nodes(): the LengthDelay is an implicit node of its owner. */
static void test_register_tree(void **state)
{
    (void)state;
    bp_var *v;
    bp_node *net = net_with_var(3, (const float[]){1, 2, 3}, &v);
    bp_delay_steps s = homo(2);
    BP_OK_OR_FAIL(bp_node_register_delay(net, "net.v", &s, v, NULL));
    assert_int_equal(bp_global_delay_count(), 1);
    bp_node *d;
    bp_var *target;
    BP_OK_OR_FAIL(bp_global_delay_data("net.v", &d, &target));
    assert_ptr_equal(target, v);
    assert_non_null(d);
    assert_ptr_equal(d->cls, &bp_length_delay_class);
    assert_string_equal(bp_node_name(d), "LengthDelay0");
    assert_int_equal(bp_length_delay_num_steps(d), 3);
    BP_EXPECT_ERR(bp_global_delay_data("nope", &d, &target), BP_ENOTFOUND, "\"nope\" is not defined");
    assert_null(d);
    assert_null(target);
    BP_OK_OR_FAIL(bp_global_delay_data("net.v", NULL, NULL));
    BP_OK_OR_FAIL(bp_global_delay_data("net.v", &d, NULL));

    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(net, NULL, &c));
    assert_int_equal(bp_collector_len(c), 3);
    assert_string_equal(bp_collector_key(c, 0), "Net0.v");
    assert_string_equal(bp_collector_key(c, 1), "LengthDelay0.data");
    assert_string_equal(bp_collector_key(c, 2), "LengthDelay0.idx");
    assert_ptr_equal(bp_collector_var(c, 1), bp_node_var(d, "data"));
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_nodes(net, NULL, &c));
    assert_int_equal(bp_collector_len(c), 2);
    assert_string_equal(bp_collector_key(c, 0), "Net0");
    assert_string_equal(bp_collector_key(c, 1), "LengthDelay0");
    assert_ptr_equal(bp_collector_node(c, 1), d);
    bp_collector_free(c);
    /* Relative keys use the identifier, the implicit node's key. */
    bp_collect_opts o = bp_collect_defaults();
    o.method = BP_RELATIVE;
    BP_OK_OR_FAIL(bp_node_vars(net, &o, &c));
    assert_true(bp_collector_find(c, "net.v.data") >= 0);
    assert_true(bp_collector_find(c, "net.v.idx") >= 0);
    bp_collector_free(c);

    /* Registering the same identifier again with a step no longer is a no-op
     * (no second delay, no reset). */
    bp_tensor *x = vec(3, (const float[]){5, 6, 7});
    BP_OK_OR_FAIL(bp_length_delay_update(d, x));
    s = homo(1);
    BP_OK_OR_FAIL(bp_node_register_delay(net, "net.v", &s, v, NULL));
    s = homo(2);
    BP_OK_OR_FAIL(bp_node_register_delay(net, "net.v", &s, v, NULL));
    assert_int_equal(bp_global_delay_count(), 1);
    assert_int_equal(idx_of(d), 2);
    BP_OK_OR_FAIL(bp_node_nodes(net, NULL, &c));
    assert_int_equal(bp_collector_len(c), 2);
    bp_collector_free(c);
    bp_tensor_free(x);
    bp_node_free(net);
}

/* get_delay_data over update_local_delays driven by a parent network. */
static void test_get_and_update(void **state)
{
    (void)state;
    bp_var *v;
    bp_node *group = net_with_var(2, (const float[]){9, 90}, &v);
    bp_node *parent = new_net();
    BP_OK_OR_FAIL(bp_node_add_child(parent, "group", group));
    bp_delay_steps s = homo(3);
    BP_OK_OR_FAIL(bp_node_register_delay(group, "g.v", &s, v, NULL));
    bp_node *d;
    BP_OK_OR_FAIL(bp_global_delay_data("g.v", &d, NULL));

    bp_tensor *out;
    /* NONE: a copy of the target's current value. */
    BP_OK_OR_FAIL(bp_node_get_delay_data(group, "g.v", &STEP_NONE, NULL, &out));
    assert_ptr_not_equal(out, v->value);
    expect_vec(out, 2, (const double[]){9, 90});
    bp_tensor_set(out, 0, -1);
    BP_ASSERT_CLOSE(bp_tensor_get(v->value, 0), 9, 0, 0);
    bp_tensor_free(out);
    BP_OK_OR_FAIL(bp_node_get_delay_data(group, "g.v", NULL, NULL, &out)); /* NULL steps = none */
    expect_vec(out, 2, (const double[]){9, 90});
    bp_tensor_free(out);

    /* Each step: the group's v becomes (k, 10k), the parent pushes it. Any
     * node may read (the table is global), so read through the parent. */
    for (int k = 1; k <= 5; k++) {
        set_var(v, 2, (const float[]){(float)k, 10.0f * k});
        BP_OK_OR_FAIL(bp_node_update_local_delays(parent, NULL));
        for (int st = 0; st <= 3; st++) {
            double e = st < k ? k - st : st == k ? 9 : 0;
            bp_delay_steps hs = homo(st);
            BP_OK_OR_FAIL(bp_node_get_delay_data(parent, "g.v", &hs, NULL, &out));
            expect_vec(out, 2, (const double[]){e, 10 * e});
            bp_tensor_free(out);
        }
    }
    assert_int_equal(idx_of(d), 3); /* (-5) mod 4 */

    /* The group's own update_local_delays looks only at its children (its
     * LengthDelay, which registered nothing): no push. */
    BP_OK_OR_FAIL(bp_node_update_local_delays(group, NULL));
    assert_int_equal(idx_of(d), 3);

    /* An explicit collector: the group itself (nodes(level=0)). */
    bp_collect_opts o = bp_collect_defaults();
    o.level = 0;
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(group, &o, &c));
    set_var(v, 2, (const float[]){6, 60});
    BP_OK_OR_FAIL(bp_node_update_local_delays(parent, c));
    assert_int_equal(idx_of(d), 2);
    bp_delay_steps h1 = homo(1);
    BP_OK_OR_FAIL(bp_node_get_delay_data(group, "g.v", &h1, NULL, &out));
    expect_vec(out, 2, (const double[]){5, 50});
    bp_tensor_free(out);

    /* reset_local_delays: row 0 = the target now, the rest zeros, idx 0, same length. */
    set_var(v, 2, (const float[]){8, 80});
    BP_OK_OR_FAIL(bp_node_reset_local_delays(parent, c));
    assert_int_equal(idx_of(d), 0);
    assert_int_equal(bp_length_delay_num_steps(d), 4);
    expect_retrieve(d, 0, 8, 80);
    expect_retrieve(d, 1, 0, 0);
    expect_retrieve(d, 3, 0, 0);
    BP_OK_OR_FAIL(bp_node_update_local_delays(parent, NULL));
    BP_OK_OR_FAIL(bp_length_delay_update(d, v->value));
    BP_OK_OR_FAIL(bp_node_reset_local_delays(parent, NULL));
    assert_int_equal(idx_of(d), 0);
    expect_retrieve(d, 1, 0, 0);
    bp_collector_free(c);

    /* A var collector is not a list of nodes. */
    BP_OK_OR_FAIL(bp_node_vars(group, NULL, &c));
    BP_EXPECT_ERR(bp_node_update_local_delays(parent, c), BP_EINVAL, "item 0 (\"Net0.v\") is not a node");
    BP_EXPECT_ERR(bp_node_reset_local_delays(parent, c), BP_EINVAL, "not a node");
    bp_collector_free(c);
    BP_EXPECT_ERR(bp_node_update_local_delays(NULL, NULL), BP_EINVAL, "node is NULL");
    BP_EXPECT_ERR(bp_node_reset_local_delays(NULL, NULL), BP_EINVAL, "node is NULL");

    bp_node_free(group); /* the parent still holds it */
    assert_int_equal(bp_global_delay_count(), 1);
    bp_node_free(parent);
}

/* A longer step for a known identifier regrows its delay: new length, the
 * buffer restarting from the target (and the new initial data). */
static void test_grow(void **state)
{
    (void)state;
    bp_var *v;
    bp_node *a = net_with_var(2, (const float[]){9, 90}, &v);
    bp_node *b = new_net();
    bp_delay_steps s = homo(2);
    BP_OK_OR_FAIL(bp_node_register_delay(a, "x", &s, v, NULL));
    bp_node *d;
    BP_OK_OR_FAIL(bp_global_delay_data("x", &d, NULL));
    bp_var *data = bp_node_var(d, "data");
    bp_tensor *one = vec2(1, 10), *init = scalar(-4);
    BP_OK_OR_FAIL(bp_length_delay_update(d, one));
    set_var(v, 2, (const float[]){3, 30});

    /* b asks for 4 steps: a's delay grows (b owns nothing). */
    s = homo(4);
    BP_OK_OR_FAIL(bp_node_register_delay(b, "x", &s, v, init));
    bp_node *d2;
    BP_OK_OR_FAIL(bp_global_delay_data("x", &d2, NULL));
    assert_ptr_equal(d2, d);
    assert_int_equal(bp_length_delay_num_steps(d), 5);
    assert_int_equal(data->value->shape[0], 5);
    assert_int_equal(idx_of(d), 0);
    expect_retrieve(d, 0, 3, 30);
    for (int k = 1; k <= 4; k++) expect_retrieve(d, k, -4, -4);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(b, NULL, &c));
    assert_int_equal(bp_collector_len(c), 1); /* b got no implicit node */
    bp_collector_free(c);
    bp_delay_steps h4 = homo(4);
    bp_tensor *out;
    BP_OK_OR_FAIL(bp_node_get_delay_data(b, "x", &h4, NULL, &out));
    expect_vec(out, 2, (const double[]){-4, -4});
    bp_tensor_free(out);

    /* Freeing b leaves a's entry; the owner decides. */
    bp_node_free(b);
    assert_int_equal(bp_global_delay_count(), 1);

    /* Regrowing needs the same target layout. */
    bp_var *w;
    bp_node *e = net_with_var(3, (const float[]){1, 2, 3}, &w);
    s = homo(9);
    BP_EXPECT_ERR(bp_node_register_delay(e, "x", &s, w, NULL), BP_ESHAPE,
                  "register_delay(\"x\"): the identifier delays a target of shape (2,), got (3,)");
    bp_node_free(e);
    bp_tensor *it;
    int64_t two = 2;
    BP_OK_OR_FAIL(bp_tensor_new(&it, BP_INT32, 1, &two));
    bp_node *f = new_net();
    BP_OK_OR_FAIL(bp_node_add_var(f, "i", BP_VARIABLE, it, &w));
    BP_EXPECT_ERR(bp_node_register_delay(f, "x", &s, w, NULL), BP_EDTYPE,
                  "delays a float32 target, got int32");
    assert_int_equal(bp_length_delay_num_steps(d), 5);
    bp_tensor_free(it);
    bp_node_free(f);

    bp_tensor_free(one);
    bp_tensor_free(init);
    bp_node_free(a);
}

/* Heterogeneous steps: one per element of a 1-D target. */
static void test_heter(void **state)
{
    (void)state;
    bp_var *v;
    bp_node *g = net_with_var(3, (const float[]){0, 0, 0}, &v);
    bp_node *parent = new_net();
    BP_OK_OR_FAIL(bp_node_add_child(parent, "g", g));
    const int64_t steps[3] = {2, 0, 1};
    bp_delay_steps s = heter(steps, 3);
    BP_OK_OR_FAIL(bp_node_register_delay(g, "h", &s, v, NULL));
    bp_node *d;
    BP_OK_OR_FAIL(bp_global_delay_data("h", &d, NULL));
    assert_int_equal(bp_length_delay_num_steps(d), 3); /* max step 2 */
    for (int k = 1; k <= 3; k++) {
        set_var(v, 3, (const float[]){(float)k, 10.0f * k, 100.0f * k});
        BP_OK_OR_FAIL(bp_node_update_local_delays(parent, NULL));
    }
    /* After pushes 1..3, element j delayed by steps[j]: (1, 30, 200). */
    bp_tensor *out;
    BP_OK_OR_FAIL(bp_node_get_delay_data(g, "h", &s, NULL, &out));
    expect_vec(out, 3, (const double[]){1, 30, 200});
    bp_tensor_free(out);
    /* With indices: (step 0 of element 2, step 2 of element 1). */
    const int64_t st2[2] = {0, 2}, ix2[2] = {2, 1};
    bp_delay_steps s2 = heter(st2, 2);
    BP_OK_OR_FAIL(bp_node_get_delay_data(g, "h", &s2, ix2, &out));
    expect_vec(out, 2, (const double[]){300, 10});
    bp_tensor_free(out);
    /* A homogeneous read of the same delay still works. */
    bp_delay_steps h1 = homo(1);
    BP_OK_OR_FAIL(bp_node_get_delay_data(g, "h", &h1, NULL, &out));
    expect_vec(out, 3, (const double[]){2, 20, 200});
    bp_tensor_free(out);

    /* Errors. */
    const int64_t too_big[3] = {0, 3, 0}, neg[3] = {0, -1, 0};
    bp_delay_steps sb = heter(too_big, 3), sn = heter(neg, 3), s4 = heter(steps, 2);
    BP_EXPECT_ERR(bp_node_get_delay_data(g, "h", &sb, NULL, &out), BP_EINVAL, "delay step 1 must be in [0, 2], got 3");
    BP_EXPECT_ERR(bp_node_get_delay_data(g, "h", &s2, (const int64_t[]){0, 3}, &out), BP_EINVAL,
                  "index 1 must be in [0, 3), got 3");
    BP_EXPECT_ERR(bp_node_register_delay(g, "h2", &sn, v, NULL), BP_EINVAL,
                  "register_delay(\"h2\"): delay step 1 must be >= 0, got -1");
    BP_EXPECT_ERR(bp_node_register_delay(g, "h2", &s4, v, NULL), BP_ESHAPE,
                  "Shape is mismatched: 2 heterogeneous steps for a target of shape (3,)");
    bp_delay_steps s0 = heter(NULL, 0);
    BP_EXPECT_ERR(bp_node_register_delay(g, "h2", &s0, v, NULL), BP_ESHAPE, "Shape is mismatched: 0");
    bp_delay_steps snull = heter(NULL, 3);
    BP_EXPECT_ERR(bp_node_register_delay(g, "h2", &snull, v, NULL), BP_EINVAL, "steps is NULL with count 3");
    assert_int_equal(bp_global_delay_count(), 1);

    /* A 2-D target: registering checks its first axis; reading per element needs 1-D. */
    int64_t shape[2] = {2, 2};
    bp_tensor *m;
    BP_OK_OR_FAIL(bp_tensor_new(&m, BP_FLOAT32, 2, shape));
    bp_var *mv;
    BP_OK_OR_FAIL(bp_node_add_var(g, "m", BP_VARIABLE, m, &mv));
    bp_tensor_free(m);
    const int64_t st22[2] = {1, 0};
    bp_delay_steps sm = heter(st22, 2);
    BP_OK_OR_FAIL(bp_node_register_delay(g, "m", &sm, mv, NULL));
    BP_EXPECT_ERR(bp_node_get_delay_data(g, "m", &sm, NULL, &out), BP_ESHAPE,
                  "heterogeneous steps need a 1-D target, got shape (2,2)");
    /* A 0-D target has no first axis. */
    bp_tensor *sc = scalar(1);
    bp_var *sv;
    BP_OK_OR_FAIL(bp_node_add_var(g, "s", BP_VARIABLE, sc, &sv));
    bp_tensor_free(sc);
    bp_delay_steps s1 = heter(steps, 1);
    BP_EXPECT_ERR(bp_node_register_delay(g, "s", &s1, sv, NULL), BP_ESHAPE, "target of shape ()");
    assert_int_equal(bp_global_delay_count(), 2);

    bp_node_free(g);
    bp_node_free(parent);
}

/* Step-less registrations, owners, and freeing. */
static void test_owners_and_free(void **state)
{
    (void)state;
    bp_var *v;
    bp_node *a = net_with_var(2, (const float[]){1, 2}, &v);
    bp_node *b = net_with_var(2, (const float[]){3, 4}, NULL);
    bp_var *bv = bp_node_var(b, "v");

    /* a records "n" with no step: (NULL, v). */
    BP_OK_OR_FAIL(bp_node_register_delay(a, "n", &STEP_NONE, v, NULL));
    BP_OK_OR_FAIL(bp_node_register_delay(a, "n", NULL, v, NULL));
    assert_int_equal(bp_global_delay_count(), 1);
    bp_node *d = a;
    bp_var *t;
    BP_OK_OR_FAIL(bp_global_delay_data("n", &d, &t));
    assert_null(d);
    assert_ptr_equal(t, v);
    bp_tensor *out;
    BP_OK_OR_FAIL(bp_node_get_delay_data(b, "n", NULL, NULL, &out));
    expect_vec(out, 2, (const double[]){1, 2});
    bp_tensor_free(out);
    bp_delay_steps h0 = homo(0), h1 = homo(1);
    BP_EXPECT_ERR(bp_node_get_delay_data(b, "n", &h0, NULL, &out), BP_EINVAL,
                  "get_delay_data(\"n\"): the identifier was registered without a delay step");
    BP_EXPECT_ERR(bp_node_get_delay_data(b, "n", &h1, (const int64_t[]){0}, &out), BP_EINVAL, "without a delay step");

    /* b registers "n" with a step: b creates and owns the delay, whose
     * target becomes b's var (as BrainPy). */
    BP_OK_OR_FAIL(bp_node_register_delay(b, "n", &h1, bv, NULL));
    BP_OK_OR_FAIL(bp_global_delay_data("n", &d, &t));
    assert_non_null(d);
    assert_ptr_equal(t, bv);
    BP_OK_OR_FAIL(bp_node_get_delay_data(a, "n", &h0, NULL, &out));
    expect_vec(out, 2, (const double[]){3, 4});
    bp_tensor_free(out);

    /* a also owns "y" (a delay) and "z" (step-less). */
    bp_delay_steps h2 = homo(2);
    BP_OK_OR_FAIL(bp_node_register_delay(a, "y", &h2, v, NULL));
    BP_OK_OR_FAIL(bp_node_register_delay(a, "z", NULL, v, NULL));
    assert_int_equal(bp_global_delay_count(), 3);
    bp_node *dy;
    BP_OK_OR_FAIL(bp_global_delay_data("y", &dy, NULL));
    bp_node_retain(dy); /* outlives its owner through this reference */

    /* Freeing a drops the entries a owns ("y", "z"), not b's "n". */
    bp_node_free(a);
    assert_int_equal(bp_global_delay_count(), 1);
    BP_EXPECT_ERR(bp_global_delay_data("y", NULL, NULL), BP_ENOTFOUND, "\"y\"");
    BP_EXPECT_ERR(bp_global_delay_data("z", NULL, NULL), BP_ENOTFOUND, "\"z\"");
    BP_OK_OR_FAIL(bp_global_delay_data("n", NULL, NULL));
    expect_retrieve(dy, 0, 1, 2);
    bp_node_free(dy);

    /* The implicit-node key is the identifier: a key already bound to another
     * node is a conflict, and nothing is registered. */
    bp_node *other = new_net();
    const char *key = "k";
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(b, 1, &key, &other));
    BP_EXPECT_ERR(bp_node_register_delay(b, "k", &h1, bv, NULL), BP_ECONFLICT, "\"k\"");
    assert_int_equal(bp_global_delay_count(), 1);
    bp_node_free(other);

    bp_node_free(b);
    assert_int_equal(bp_global_delay_count(), 0);
}

/* The remaining error paths of the node-level API. */
static void test_node_api_errors(void **state)
{
    (void)state;
    bp_var *v;
    bp_node *n = net_with_var(2, (const float[]){1, 2}, &v);
    bp_delay_steps h2 = homo(2), hneg = homo(-1), h3 = homo(3), bad = {.kind = 7};
    bp_tensor *out = NULL;

    BP_EXPECT_ERR(bp_node_register_delay(NULL, "a", &h2, v, NULL), BP_EINVAL, "node is NULL");
    BP_EXPECT_ERR(bp_node_register_delay(n, NULL, &h2, v, NULL), BP_EINVAL, "identifier is NULL or empty");
    BP_EXPECT_ERR(bp_node_register_delay(n, "", &h2, v, NULL), BP_EINVAL, "identifier is NULL or empty");
    BP_EXPECT_ERR(bp_node_register_delay(n, "a", &h2, NULL, NULL), BP_EINVAL,
                  "Net0: register_delay(\"a\"): delay_target is NULL");
    BP_EXPECT_ERR(bp_node_register_delay(n, "a", NULL, NULL, NULL), BP_EINVAL, "delay_target is NULL");
    BP_EXPECT_ERR(bp_node_register_delay(n, "a", &hneg, v, NULL), BP_EINVAL, "delay step must be >= 0, got -1");
    BP_EXPECT_ERR(bp_node_register_delay(n, "a", &bad, v, NULL), BP_EINVAL, "got 7");
    bp_tensor *wrong = vec(3, (const float[]){1, 2, 3});
    BP_EXPECT_ERR(bp_node_register_delay(n, "a", &h2, v, wrong), BP_ESHAPE, "initial delay data");
    bp_tensor_free(wrong);
    assert_int_equal(bp_global_delay_count(), 0);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(n, NULL, &c));
    assert_int_equal(bp_collector_len(c), 1); /* failed registrations leave no node behind */
    bp_collector_free(c);

    BP_OK_OR_FAIL(bp_node_register_delay(n, "a", &h2, v, NULL));
    BP_EXPECT_ERR(bp_node_get_delay_data(n, "missing", &h2, NULL, &out), BP_ENOTFOUND,
                  "get_delay_data: \"missing\" is not defined in delay variables");
    BP_EXPECT_ERR(bp_node_get_delay_data(n, "missing", NULL, NULL, &out), BP_ENOTFOUND, "\"missing\"");
    BP_EXPECT_ERR(bp_node_get_delay_data(n, "a", &h3, NULL, &out), BP_EINVAL, "must be in [0, 2], got 3");
    BP_EXPECT_ERR(bp_node_get_delay_data(n, "a", &hneg, NULL, &out), BP_EINVAL, "must be in [0, 2], got -1");
    BP_EXPECT_ERR(bp_node_get_delay_data(n, "a", &bad, NULL, &out), BP_EINVAL, "got 7");
    BP_EXPECT_ERR(bp_node_get_delay_data(NULL, "a", &h2, NULL, &out), BP_EINVAL, "node is NULL");
    BP_EXPECT_ERR(bp_node_get_delay_data(n, NULL, &h2, NULL, &out), BP_EINVAL, "identifier is NULL");
    BP_EXPECT_ERR(bp_node_get_delay_data(n, "a", &h2, NULL, NULL), BP_EINVAL, "out is NULL");
    assert_null(out);
    BP_EXPECT_ERR(bp_global_delay_data(NULL, NULL, NULL), BP_EINVAL, "identifier is NULL");
    bp_node_free(n);
}

/* Several threads registering, reading, pushing and freeing at once share
 * one table; each ends with its own entries gone and its values intact. */
enum { N_THREADS = 4, N_IDS = 40 };

static void *delay_worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    bp_var *v;
    bp_node *n = net_with_var(2, (const float[]){(float)t, 0}, &v);
    bp_node *parent = new_net();
    intptr_t bad = 0;
    if (bp_node_add_child(parent, "n", n)) bad++;
    char id[32];
    bp_delay_steps h1 = homo(1);
    for (int i = 0; i < N_IDS; i++) {
        snprintf(id, sizeof id, "t%d_%d", t, i);
        if (bp_node_register_delay(n, id, &h1, v, NULL)) bad++;
    }
    set_var(v, 2, (const float[]){(float)t, 1});
    if (bp_node_update_local_delays(parent, NULL)) bad++;
    for (int i = 0; i < N_IDS; i++) {
        bp_tensor *out;
        snprintf(id, sizeof id, "t%d_%d", t, i);
        if (bp_node_get_delay_data(n, id, &h1, NULL, &out)) {
            bad++;
            continue;
        }
        /* one push ago the value was the registration-time target (t, 0) */
        if (bp_tensor_get(out, 0) != t || bp_tensor_get(out, 1) != 0) bad++;
        bp_tensor_free(out);
    }
    bp_node_free(n);
    bp_node_free(parent);
    return (void *)bad;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, delay_worker, (void *)(intptr_t)t), 0);
    for (int t = 0; t < N_THREADS; t++) {
        void *bad;
        assert_int_equal(pthread_join(th[t], &bad), 0);
        assert_int_equal((intptr_t)bad, 0);
    }
    assert_int_equal(bp_global_delay_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotate_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initial_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retrieve_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_length_delay_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_and_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owners_and_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_api_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
