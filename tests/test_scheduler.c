/* tests/test_scheduler.c — the learning-rate schedulers: each one's first 30
 * values against tests/data/optim_schedulers.txt (BrainPy 2.8.2's formulas in
 * NumPy float64, tests/gen_optim.py), their counter Variables in vars() and
 * state_dict, step_epoch / step_call, set_value, and every error path.
 *
 * Both sides compute in double with the same operation order; the only
 * differences are libm's pow/cos against NumPy's (each within 1 ulp), so the
 * values must agree to a few ulps: rtol 1e-14. */
#include "bp_test.h"
#include "fixture.h"
#include <bpc/scheduler.h>
#include <bpc/state.h>

#define SEQ_LEN 30

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_clear_error();
    return 0;
}

/* Compares the scheduler's 30 values (stepping as gen_optim.py does) with the
 * fixture row, and checks lr_at(i) on the same indices. Frees s. */
static void check_sequence(const fx_file *f, const char *name, bp_node *s, int64_t first_index)
{
    const fx_tensor *want = fx_get(f, name);
    assert_non_null(want);
    assert_int_equal(want->numel, SEQ_LEN);
    bool call_based = bp_scheduler_is_call_based(s);
    for (int k = 0; k < SEQ_LEN; k++) {
        double lr, at;
        BP_OK_OR_FAIL(bp_scheduler_lr(s, &lr));
        BP_OK_OR_FAIL(bp_scheduler_lr_at(s, first_index + k, &at));
        if (!(fabs(lr - want->data[k]) <= 1e-14 * fabs(want->data[k])))
            fail_msg("%s value %d: %.17g, expected %.17g", name, k, lr, want->data[k]);
        assert_true(at == lr);
        if (call_based)
            BP_OK_OR_FAIL(bp_scheduler_step_call(s));
        else
            BP_OK_OR_FAIL(bp_scheduler_step_epoch(s));
    }
    bp_node_free(s);
}

static void test_sequences(void **state)
{
    (void)state;
    fx_file *f = fx_load("optim_schedulers.txt");
    assert_non_null(f);
    bp_node *s;
    BP_OK_OR_FAIL(bp_scheduler_constant_new(&s, 0.3));
    check_sequence(f, "constant", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&s, 0.1, 3, 0.5, -1));
    check_sequence(f, "step_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&s, 0.1, 3, 0.5, 4));
    check_sequence(f, "step_lr_from4", s, 5);
    const int64_t milestones[] = {3, 7, 7, 12};
    BP_OK_OR_FAIL(bp_scheduler_multi_step_lr_new(&s, 0.1, milestones, 4, 0.3, -1));
    check_sequence(f, "multi_step_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_exponential_lr_new(&s, 0.1, 0.9, -1));
    check_sequence(f, "exponential_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_lr_new(&s, 0.1, 10, 0.001, -1));
    check_sequence(f, "cosine_annealing_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&s, 0.1, 5, 0.5, -1, -1));
    check_sequence(f, "exponential_decay_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_inverse_time_decay_lr_new(&s, 0.1, 4, 0.5, false, -1, -1));
    check_sequence(f, "inverse_time_decay_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_inverse_time_decay_lr_new(&s, 0.1, 4, 0.5, true, -1, -1));
    check_sequence(f, "inverse_time_decay_lr_stair", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_polynomial_decay_lr_new(&s, 0.1, 10, 0.01, 2.0, -1, -1));
    check_sequence(f, "polynomial_decay_lr", s, 0);
    const int64_t bounds[] = {5, 10, 20};
    const double values[] = {0.1, 0.05, 0.01, 0.001};
    BP_OK_OR_FAIL(bp_scheduler_piecewise_constant_lr_new(&s, bounds, 3, values, 4, -1, -1));
    check_sequence(f, "piecewise_constant_lr", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 2, 2, 2, 0.001, -1, -1));
    check_sequence(f, "warm_restarts_mult2", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 1, 5, 1, 0.0, -1, -1));
    check_sequence(f, "warm_restarts_mult1", s, 0);
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 3, 1, 3, 0.01, -1, 3));
    check_sequence(f, "warm_restarts_from3", s, 4);
    fx_free(f);
}

/* Hand-worked values at the edges the fixtures pass through. */
static void test_hand_worked(void **state)
{
    (void)state;
    bp_node *s;
    double v;
    /* HEAD MultiStepLR counts milestones strictly below i: at i == 3 no decay yet. */
    const int64_t ms[] = {3};
    BP_OK_OR_FAIL(bp_scheduler_multi_step_lr_new(&s, 1.0, ms, 1, 0.5, -1));
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 3, &v));
    assert_true(v == 1.0);
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 4, &v));
    assert_true(v == 0.5);
    bp_node_free(s);
    /* No milestones: a constant. */
    BP_OK_OR_FAIL(bp_scheduler_multi_step_lr_new(&s, 0.25, NULL, 0, 0.5, -1));
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 100, &v));
    assert_true(v == 0.25);
    bp_node_free(s);
    /* Cosine: half way is the mean of lr and eta_min; at T_max, eta_min. */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_lr_new(&s, 1.0, 4, 0.2, -1));
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 2, &v));
    BP_ASSERT_CLOSE(v, 0.6, 1e-15, 0);
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 4, &v));
    BP_ASSERT_CLOSE(v, 0.2, 1e-15, 0);
    bp_node_free(s);
    /* Polynomial decay holds final_lr past decay_steps. */
    BP_OK_OR_FAIL(bp_scheduler_polynomial_decay_lr_new(&s, 1.0, 4, 0.1, 1.0, -1, -1));
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 2, &v));
    BP_ASSERT_CLOSE(v, 0.55, 1e-15, 0);
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 40, &v));
    BP_ASSERT_CLOSE(v, 0.1, 1e-15, 0);
    bp_node_free(s);
    /* Warm restarts, T_0 = 1, T_mult = 2: cycles start at epochs 0, 1, 3, 7, 15, ..., where lr is
     * back at its maximum (a float log would give 7 -> cycle 2, not 3, for some T_0). */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 1.0, 1, 1, 2, 0.0, -1, -1));
    const int64_t starts[] = {0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023};
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        BP_OK_OR_FAIL(bp_scheduler_lr_at(s, starts[k], &v));
        assert_true(v == 1.0);
        if (k < 2) continue;
        BP_OK_OR_FAIL(bp_scheduler_lr_at(s, starts[k] - 1, &v)); /* last epoch of the cycle before */
        assert_true(v < 1.0);
    }
    /* Mid-cycle of cycle 3 (epochs 7..14, T_i = 8): T_cur = 4 gives (1 + cos(pi/2)) / 2. */
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 11, &v));
    BP_ASSERT_CLOSE(v, 0.5, 1e-15, 0);
    bp_node_free(s);
    /* Piecewise: i > boundary, so the value changes one call after the boundary. */
    const int64_t b[] = {2};
    const double vals[] = {1.0, 2.0};
    BP_OK_OR_FAIL(bp_scheduler_piecewise_constant_lr_new(&s, b, 1, vals, 2, -1, -1));
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 2, &v));
    assert_true(v == 1.0);
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, 3, &v));
    assert_true(v == 2.0);
    bp_node_free(s);
}

/* lr_at(i) of s against want, within 1e-15 (all values here are <= 1). */
static void expect_at(const bp_node *s, int64_t i, double want)
{
    double v;
    BP_OK_OR_FAIL(bp_scheduler_lr_at(s, i, &v));
    if (!(fabs(v - want) <= 1e-15)) fail_msg("%s at i = %lld: %.17g, expected %.17g", bp_node_name(s), (long long)i, v, want);
}

/* Step 0, the last value before and the first after each boundary, and far
 * past the end, for every schedule; each value worked by hand from the
 * written formulas (i = last_epoch + 1 or last_call + 1, so i = 0 first). */
static void test_hand_worked_edges(void **state)
{
    (void)state;
    bp_node *s;
    /* StepLR(1, 3, 0.5): floor(i / 3) decays. */
    BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&s, 1.0, 3, 0.5, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 2, 1.0);
    expect_at(s, 3, 0.5);
    expect_at(s, 6, 0.25);
    bp_node_free(s);
    /* MultiStepLR(1, [2, 5], 0.1): milestones strictly below i. */
    const int64_t ms[] = {2, 5};
    BP_OK_OR_FAIL(bp_scheduler_multi_step_lr_new(&s, 1.0, ms, 2, 0.1, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 2, 1.0);
    expect_at(s, 3, 0.1);
    expect_at(s, 5, 0.1);
    expect_at(s, 6, 0.1 * 0.1);
    bp_node_free(s);
    /* ExponentialLR(1, 0.5): 0.5^i. */
    BP_OK_OR_FAIL(bp_scheduler_exponential_lr_new(&s, 1.0, 0.5, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 3, 0.125);
    bp_node_free(s);
    /* CosineAnnealingLR(1, 4, 0): periodic past T_max (BrainPy's closed form). */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_lr_new(&s, 1.0, 4, 0.0, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 1, (1 + sqrt(2.0) / 2) / 2);
    expect_at(s, 5, (1 - sqrt(2.0) / 2) / 2);
    expect_at(s, 6, 0.5);
    expect_at(s, 8, 1.0);
    bp_node_free(s);
    /* ExponentialDecayLR(1, 4, 0.5): continuous, no staircase: 0.5^(i/4). */
    BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&s, 1.0, 4, 0.5, -1, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 2, sqrt(0.5));
    expect_at(s, 4, 0.5);
    expect_at(s, 6, 0.5 * sqrt(0.5));
    bp_node_free(s);
    /* InverseTimeDecayLR(1, 4, 0.5): 1 / (1 + 0.5 i / 4); staircase: floor(i / 4). */
    BP_OK_OR_FAIL(bp_scheduler_inverse_time_decay_lr_new(&s, 1.0, 4, 0.5, false, -1, -1));
    expect_at(s, 3, 1.0 / 1.375);
    expect_at(s, 4, 1.0 / 1.5);
    bp_node_free(s);
    BP_OK_OR_FAIL(bp_scheduler_inverse_time_decay_lr_new(&s, 1.0, 4, 0.5, true, -1, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 3, 1.0);
    expect_at(s, 4, 1.0 / 1.5);
    expect_at(s, 7, 1.0 / 1.5);
    expect_at(s, 8, 0.5);
    bp_node_free(s);
    /* PolynomialDecayLR(1, 4, 0.1, power 2): (1 - min(i,4)/4)^2 * 0.9 + 0.1. */
    BP_OK_OR_FAIL(bp_scheduler_polynomial_decay_lr_new(&s, 1.0, 4, 0.1, 2.0, -1, -1));
    expect_at(s, 0, 1.0);
    expect_at(s, 3, 0.0625 * 0.9 + 0.1);
    expect_at(s, 4, 0.1);
    expect_at(s, 1000, 0.1);
    bp_node_free(s);
    /* power 0: (1 - 1)^0 = 1 past the end, so the formula never decays (as BrainPy's). */
    BP_OK_OR_FAIL(bp_scheduler_polynomial_decay_lr_new(&s, 1.0, 4, 0.1, 0.0, -1, -1));
    expect_at(s, 2, 1.0);
    expect_at(s, 9, 1.0);
    bp_node_free(s);
    /* PiecewiseConstantLR([0, 3], [0.5, 0.25, 0.125]): values[#{b : i > b}]. */
    const int64_t b[] = {0, 3};
    const double vals[] = {0.5, 0.25, 0.125};
    BP_OK_OR_FAIL(bp_scheduler_piecewise_constant_lr_new(&s, b, 2, vals, 3, -1, -1));
    expect_at(s, 0, 0.5);
    expect_at(s, 1, 0.25);
    expect_at(s, 3, 0.25);
    expect_at(s, 4, 0.125);
    expect_at(s, 1000, 0.125);
    bp_node_free(s);
    /* Warm restarts, T_0 1, T_mult 10, 1 call per epoch: cycles start at epochs 0, 1, 11, 111.
     * At 111 the float log of the written formula gives n = 2 (T_i 100, T_cur 100: eta_min);
     * the exact cycle is n = 3, a restart: lr. */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 1.0, 1, 1, 10, 0.0, -1, -1));
    expect_at(s, 11, 1.0);
    expect_at(s, 61, 0.5);   /* T_cur 50 of 100 */
    expect_at(s, 111, 1.0);
    expect_at(s, 110, (1 + cos(3.141592653589793 * 99 / 100)) / 2);
    bp_node_free(s);
    /* A constructor's last_call moves the start: last_call 5, 3 calls per epoch -> i = 6, epoch 2. */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 3, 4, 1, 0.0, -1, 5));
    double v;
    BP_OK_OR_FAIL(bp_scheduler_lr(s, &v));
    BP_ASSERT_CLOSE(v, 0.05 * (1 + cos(3.141592653589793 * 2 / 4)), 1e-15, 0);
    bp_node_free(s);
}

/* CosineAnnealingWarmRestarts divides i by num_call_per_epoch exactly (fractional epochs: the
 * rate falls on every call, not once per epoch). Each value below is worked by hand from
 * eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2 with T_cur, T_i from the epoch i / n. */
static void test_warm_restarts_fractional_epochs(void **state)
{
    (void)state;
    bp_node *s;
    double v;
    /* lr 0.1, 3 calls per epoch, T_0 2, T_mult 2, eta_min 0.01: (lr - eta_min) / 2 = 0.045. */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 3, 2, 2, 0.01, -1, -1));
    const struct {
        int64_t i;
        double want;
    } mult2[] = {
        {0, 0.1},                                        /* epoch 0: T_cur 0 */
        {1, 0.01 + 0.045 * (1 + sqrt(3.0) / 2)},         /* epoch 1/3, T_i 2: cos(pi/6); 0.093971 */
        {2, 0.0775},                                     /* epoch 2/3: cos(pi/3) = 1/2 */
        {5, 0.01 + 0.045 * (1 - sqrt(3.0) / 2)},         /* epoch 5/3: cos(5pi/6) */
        {6, 0.1},                                        /* epoch 2: first restart, cycle 1 (T_i 4) */
        {9, 0.01 + 0.045 * (1 + sqrt(2.0) / 2)},         /* epoch 3: T_cur 1 of 4, cos(pi/4) */
        {17, 0.01 + 0.045 * (1 + cos(11 * 3.141592653589793 / 12))}, /* epoch 17/3: T_cur 11/3 of 4 */
        {18, 0.1},                                       /* epoch 6: second restart (T_i 8) */
        {30, 0.01 + 0.045 * 1.0},                        /* epoch 10: T_cur 4 of 8, cos(pi/2) = 0 */
    };
    for (size_t k = 0; k < sizeof mult2 / sizeof mult2[0]; k++) {
        BP_OK_OR_FAIL(bp_scheduler_lr_at(s, mult2[k].i, &v));
        if (!(fabs(v - mult2[k].want) <= 1e-15))
            fail_msg("T_mult 2, i = %lld: %.17g, expected %.17g", (long long)mult2[k].i, v, mult2[k].want);
    }
    /* lr() follows the calls: after one step_call it is the i = 1 value. */
    BP_OK_OR_FAIL(bp_scheduler_step_call(s));
    BP_OK_OR_FAIL(bp_scheduler_lr(s, &v));
    BP_ASSERT_CLOSE(v, 0.01 + 0.045 * (1 + sqrt(3.0) / 2), 1e-15, 0);
    bp_node_free(s);

    /* T_mult 1: lr 0.1, 2 calls per epoch, T_0 3, eta_min 0: T_cur = epoch mod 3. */
    BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 2, 3, 1, 0.0, -1, -1));
    const struct {
        int64_t i;
        double want;
    } mult1[] = {
        {1, 0.05 * (1 + sqrt(3.0) / 2)}, /* epoch 1/2: cos(pi/6) */
        {3, 0.05},                       /* epoch 3/2: cos(pi/2) */
        {5, 0.05 * (1 - sqrt(3.0) / 2)}, /* epoch 5/2: cos(5pi/6) */
        {6, 0.1},                        /* epoch 3: restart */
        {7, 0.05 * (1 + sqrt(3.0) / 2)}, /* epoch 7/2: T_cur 1/2 */
        {11, 0.05 * (1 - sqrt(3.0) / 2)},
        {12, 0.1},
    };
    for (size_t k = 0; k < sizeof mult1 / sizeof mult1[0]; k++) {
        BP_OK_OR_FAIL(bp_scheduler_lr_at(s, mult1[k].i, &v));
        if (!(fabs(v - mult1[k].want) <= 1e-15))
            fail_msg("T_mult 1, i = %lld: %.17g, expected %.17g", (long long)mult1[k].i, v, mult1[k].want);
    }
    bp_node_free(s);
}

static void expect_counter(bp_node *s, const char *attr, int64_t want)
{
    bp_var *v = bp_node_var(s, attr);
    assert_non_null(v);
    assert_int_equal(v->kind, BP_VARIABLE);
    assert_int_equal(v->value->dtype, BP_INT64);
    assert_int_equal(v->value->ndim, 0);
    assert_int_equal(((const int64_t *)v->value->data)[0], want);
}

static void test_counters_are_vars(void **state)
{
    (void)state;
    bp_node *e, *c;
    BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&e, 0.1, 2, 0.5, -1));
    BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&c, 0.1, 2, 0.5, 3, 1));
    assert_string_equal(bp_node_name(e), "StepLR0");
    assert_string_equal(bp_node_name(c), "ExponentialDecayLR0");
    assert_false(bp_scheduler_is_call_based(e));
    assert_true(bp_scheduler_is_call_based(c));

    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(e, NULL, &v));
    assert_int_equal(bp_collector_len(v), 1);
    assert_string_equal(bp_collector_key(v, 0), "StepLR0.last_epoch");
    bp_collector_free(v);
    BP_OK_OR_FAIL(bp_node_vars(c, NULL, &v));
    assert_int_equal(bp_collector_len(v), 2);
    assert_string_equal(bp_collector_key(v, 0), "ExponentialDecayLR0.last_epoch");
    assert_string_equal(bp_collector_key(v, 1), "ExponentialDecayLR0.last_call");
    bp_collector_free(v);
    expect_counter(c, "last_epoch", 3);
    expect_counter(c, "last_call", 1);

    /* step_call moves only last_call, step_epoch only last_epoch. */
    BP_OK_OR_FAIL(bp_scheduler_step_call(e)); /* epoch-based: nothing */
    expect_counter(e, "last_epoch", -1);
    assert_null(bp_node_var(e, "last_call"));
    BP_OK_OR_FAIL(bp_scheduler_step_epoch(e));
    expect_counter(e, "last_epoch", 0);
    BP_OK_OR_FAIL(bp_scheduler_step_epoch(c));
    expect_counter(c, "last_epoch", 4);
    expect_counter(c, "last_call", 1);
    double lr;
    BP_OK_OR_FAIL(bp_scheduler_lr(c, &lr)); /* i = last_call + 1 = 2: 0.1 * 0.5^(2/2) */
    BP_ASSERT_CLOSE(lr, 0.05, 1e-17, 0);
    BP_OK_OR_FAIL(bp_scheduler_step_call(c));
    expect_counter(c, "last_call", 2);

    /* A state_dict round trip carries the counters, and lr follows them. */
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(c, &sd));
    bp_dict *own = bp_dict_get_dict(sd, "ExponentialDecayLR0");
    assert_non_null(own);
    assert_non_null(bp_dict_get_tensor(own, "ExponentialDecayLR0.last_call"));
    BP_OK_OR_FAIL(bp_scheduler_step_call(c));
    BP_OK_OR_FAIL(bp_scheduler_step_call(c));
    BP_OK_OR_FAIL(bp_node_load_state_dict(c, sd, false, BP_COMPAT_V2, NULL));
    expect_counter(c, "last_call", 2);
    BP_OK_OR_FAIL(bp_scheduler_lr(c, &lr)); /* i = 3 */
    BP_ASSERT_CLOSE(lr, 0.1 * pow(0.5, 1.5), 1e-17, 0);
    bp_dict_free(sd);

    /* set_value replaces the base lr. */
    BP_OK_OR_FAIL(bp_scheduler_set_value(e, 0.4));
    BP_OK_OR_FAIL(bp_scheduler_lr(e, &lr)); /* i = 1, step 2: no decay yet */
    assert_true(lr == 0.4);
    BP_EXPECT_ERR(bp_scheduler_set_value(e, NAN), BP_EINVAL, "StepLR0: lr must be finite, got nan");
    bp_node_free(e);
    bp_node_free(c);
}

static const bp_node_class other_class = {.name = "Other", .size = sizeof(bp_node)};

static void test_errors(void **state)
{
    (void)state;
    bp_node *s = (bp_node *)0x1;
    const int64_t one[] = {1};
    const double two[] = {1.0, 2.0};
    BP_EXPECT_ERR(bp_scheduler_constant_new(NULL, 0.1), BP_EINVAL, "Constant: out is NULL");
    BP_EXPECT_ERR(bp_scheduler_constant_new(&s, NAN), BP_EINVAL, "Constant: lr must be finite, got nan");
    assert_null(s);
    BP_EXPECT_ERR(bp_scheduler_constant_new(&s, INFINITY), BP_EINVAL, "lr must be finite, got inf");
    BP_EXPECT_ERR(bp_scheduler_step_lr_new(&s, 0.1, 0, 0.1, -1), BP_EINVAL,
                  "StepLR: step_size must be an integer >= 1, got 0");
    BP_EXPECT_ERR(bp_scheduler_step_lr_new(&s, 0.1, 2, 1.5, -1), BP_EINVAL,
                  "StepLR: gamma must be a float in [0, 1], got 1.5");
    BP_EXPECT_ERR(bp_scheduler_step_lr_new(&s, 0.1, 2, -0.1, -1), BP_EINVAL, "gamma must be a float in [0, 1]");
    BP_EXPECT_ERR(bp_scheduler_step_lr_new(&s, 0.1, 2, NAN, -1), BP_EINVAL, "gamma must be a float in [0, 1]");
    BP_EXPECT_ERR(bp_scheduler_step_lr_new(&s, 0.1, 2, 0.1, -2), BP_EINVAL,
                  "StepLR: last_epoch must be an integer >= -1, got -2");
    BP_EXPECT_ERR(bp_scheduler_multi_step_lr_new(&s, 0.1, NULL, 2, 0.1, -1), BP_EINVAL,
                  "MultiStepLR: milestones is NULL with 2 entries");
    BP_EXPECT_ERR(bp_scheduler_multi_step_lr_new(&s, 0.1, one, 1, 2.0, -1), BP_EINVAL,
                  "MultiStepLR: gamma must be a float in [0, 1], got 2");
    BP_EXPECT_ERR(bp_scheduler_exponential_lr_new(&s, 0.1, 1.01, -1), BP_EINVAL,
                  "ExponentialLR: gamma must be a float in [0, 1], got 1.01");
    BP_EXPECT_ERR(bp_scheduler_cosine_annealing_lr_new(&s, 0.1, 0, 0.0, -1), BP_EINVAL,
                  "CosineAnnealingLR: T_max must be an integer >= 1, got 0");
    BP_EXPECT_ERR(bp_scheduler_cosine_annealing_lr_new(&s, 0.1, 5, NAN, -1), BP_EINVAL,
                  "CosineAnnealingLR: eta_min must be finite, got nan");
    BP_EXPECT_ERR(bp_scheduler_exponential_decay_lr_new(&s, 0.1, 0, 0.5, -1, -1), BP_EINVAL,
                  "ExponentialDecayLR: decay_steps must be an integer >= 1, got 0");
    BP_EXPECT_ERR(bp_scheduler_exponential_decay_lr_new(&s, 0.1, 2, -0.5, -1, -1), BP_EINVAL,
                  "ExponentialDecayLR: decay_rate must be a finite value >= 0, got -0.5");
    BP_EXPECT_ERR(bp_scheduler_exponential_decay_lr_new(&s, 0.1, 2, 0.5, -1, -3), BP_EINVAL,
                  "ExponentialDecayLR: last_call must be an integer >= -1, got -3");
    BP_EXPECT_ERR(bp_scheduler_inverse_time_decay_lr_new(&s, 0.1, -1, 0.5, false, -1, -1), BP_EINVAL,
                  "InverseTimeDecayLR: decay_steps must be an integer >= 1, got -1");
    BP_EXPECT_ERR(bp_scheduler_inverse_time_decay_lr_new(&s, 0.1, 1, INFINITY, false, -1, -1), BP_EINVAL,
                  "InverseTimeDecayLR: decay_rate must be a finite value >= 0, got inf");
    BP_EXPECT_ERR(bp_scheduler_polynomial_decay_lr_new(&s, 0.1, 0, 0.0, 1.0, -1, -1), BP_EINVAL,
                  "PolynomialDecayLR: decay_steps must be an integer >= 1, got 0");
    BP_EXPECT_ERR(bp_scheduler_polynomial_decay_lr_new(&s, 0.1, 5, NAN, 1.0, -1, -1), BP_EINVAL,
                  "PolynomialDecayLR: final_lr must be finite, got nan");
    BP_EXPECT_ERR(bp_scheduler_polynomial_decay_lr_new(&s, 0.1, 5, 0.0, -1.0, -1, -1), BP_EINVAL,
                  "PolynomialDecayLR: power must be a finite value >= 0, got -1");
    BP_EXPECT_ERR(bp_scheduler_piecewise_constant_lr_new(&s, one, 1, two, 1, -1, -1), BP_EINVAL,
                  "PiecewiseConstantLR: boundaries length must be one shorter than values length, got 1 "
                  "boundaries and 1 values");
    BP_EXPECT_ERR(bp_scheduler_piecewise_constant_lr_new(&s, NULL, 1, two, 2, -1, -1), BP_EINVAL,
                  "PiecewiseConstantLR: boundaries is NULL with 1 entries");
    BP_EXPECT_ERR(bp_scheduler_piecewise_constant_lr_new(&s, NULL, 0, NULL, 1, -1, -1), BP_EINVAL,
                  "PiecewiseConstantLR: values is NULL");
    const double bad[] = {1.0, NAN};
    BP_EXPECT_ERR(bp_scheduler_piecewise_constant_lr_new(&s, one, 1, bad, 2, -1, -1), BP_EINVAL,
                  "PiecewiseConstantLR: values[1] must be finite, got nan");
    BP_EXPECT_ERR(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 1, 0, 1, 0.0, -1, -1), BP_EINVAL,
                  "CosineAnnealingWarmRestarts: Expected positive integer T_0, but got 0");
    BP_EXPECT_ERR(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 1, 2, 0, 0.0, -1, -1), BP_EINVAL,
                  "CosineAnnealingWarmRestarts: Expected integer T_mult >= 1, but got 0");
    BP_EXPECT_ERR(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 0, 2, 1, 0.0, -1, -1), BP_EINVAL,
                  "CosineAnnealingWarmRestarts: num_call_per_epoch must be an integer >= 1, got 0");
    BP_EXPECT_ERR(bp_scheduler_cosine_annealing_warm_restarts_new(&s, 0.1, 1, 2, 1, INFINITY, -1, -1), BP_EINVAL,
                  "CosineAnnealingWarmRestarts: eta_min must be finite, got inf");
    assert_null(s);

    /* Scheduler calls on something else. */
    bp_node *other;
    double v;
    BP_OK_OR_FAIL(bp_node_create(&other, &other_class, NULL, NULL));
    assert_false(bp_is_scheduler(other));
    assert_false(bp_is_scheduler(NULL));
    assert_false(bp_scheduler_is_call_based(other));
    BP_EXPECT_ERR(bp_scheduler_lr(other, &v), BP_EINVAL,
                  "scheduler_lr: Other0 (a Other) is not a learning-rate scheduler");
    BP_EXPECT_ERR(bp_scheduler_lr(NULL, &v), BP_EINVAL, "scheduler_lr: scheduler is NULL");
    BP_EXPECT_ERR(bp_scheduler_lr_at(other, 0, &v), BP_EINVAL, "scheduler_lr_at: Other0");
    BP_EXPECT_ERR(bp_scheduler_step_epoch(other), BP_EINVAL, "scheduler_step_epoch: Other0");
    BP_EXPECT_ERR(bp_scheduler_step_call(NULL), BP_EINVAL, "scheduler_step_call: scheduler is NULL");
    BP_EXPECT_ERR(bp_scheduler_set_value(other, 1.0), BP_EINVAL, "scheduler_set_value: Other0");
    bp_node_free(other);
    BP_OK_OR_FAIL(bp_scheduler_constant_new(&s, 0.1));
    BP_EXPECT_ERR(bp_scheduler_lr(s, NULL), BP_EINVAL, "scheduler_lr: out is NULL");
    BP_EXPECT_ERR(bp_scheduler_lr_at(s, 0, NULL), BP_EINVAL, "scheduler_lr_at: out is NULL");
    bp_node_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_sequences, setup),
        cmocka_unit_test_setup(test_hand_worked, setup),
        cmocka_unit_test_setup(test_warm_restarts_fractional_epochs, setup),
        cmocka_unit_test_setup(test_hand_worked_edges, setup),
        cmocka_unit_test_setup(test_counters_are_vars, setup),
        cmocka_unit_test_setup(test_errors, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
