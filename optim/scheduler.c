/* optim/scheduler.c — the learning-rate schedulers of bpc/scheduler.h.
 *
 * One struct serves every scheduler class; the class pointer says which
 * formula applies. The counters live in int64 0-d Variables (attrs
 * "last_epoch", "last_call"), never in C fields, so that a state_dict load
 * moves the schedule exactly as it moves the optimizer's slots. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/scheduler.h>

/* M_PI is not ISO C; this is the double nearest pi, as numpy.pi. */
#define SCHED_PI 3.141592653589793

typedef enum sched_kind {
    SK_CONSTANT,
    SK_STEP,
    SK_MULTI_STEP,
    SK_EXPONENTIAL,
    SK_COSINE,
    SK_EXP_DECAY,
    SK_INV_TIME,
    SK_POLY,
    SK_PIECEWISE,
    SK_WARM_RESTARTS
} sched_kind;

typedef struct sched {
    bp_node base;
    sched_kind kind;
    double lr;
    bp_var *last_epoch; /* borrowed: the node holds it as attr "last_epoch" */
    bp_var *last_call;  /* borrowed, NULL for epoch-based schedulers */
    int64_t step_size, t_max, t_0, t_mult, per_epoch, decay_steps;
    double gamma, eta_min, decay_rate, final_lr, power;
    bool staircase;
    int64_t *marks; /* milestones or boundaries */
    size_t n_marks;
    double *values; /* PiecewiseConstantLR */
    size_t n_values;
} sched;

static void sched_destroy(bp_node *n)
{
    sched *s = (sched *)n;
    free(s->marks);
    free(s->values);
}

/* BrainPyObject has no mode of its own: any mode is accepted (NULL list). */
#define SCHED_CLASS(NAME) {.name = NAME, .size = sizeof(sched), .destroy = sched_destroy}

const bp_node_class bp_constant_class = SCHED_CLASS("Constant");
const bp_node_class bp_step_lr_class = SCHED_CLASS("StepLR");
const bp_node_class bp_multi_step_lr_class = SCHED_CLASS("MultiStepLR");
const bp_node_class bp_exponential_lr_class = SCHED_CLASS("ExponentialLR");
const bp_node_class bp_cosine_annealing_lr_class = SCHED_CLASS("CosineAnnealingLR");
const bp_node_class bp_exponential_decay_lr_class = SCHED_CLASS("ExponentialDecayLR");
const bp_node_class bp_inverse_time_decay_lr_class = SCHED_CLASS("InverseTimeDecayLR");
const bp_node_class bp_polynomial_decay_lr_class = SCHED_CLASS("PolynomialDecayLR");
const bp_node_class bp_piecewise_constant_lr_class = SCHED_CLASS("PiecewiseConstantLR");
const bp_node_class bp_cosine_annealing_warm_restarts_class = SCHED_CLASS("CosineAnnealingWarmRestarts");

/* Indexed by sched_kind. */
static const bp_node_class *const sched_classes[] = {
    &bp_constant_class,           &bp_step_lr_class,
    &bp_multi_step_lr_class,      &bp_exponential_lr_class,
    &bp_cosine_annealing_lr_class, &bp_exponential_decay_lr_class,
    &bp_inverse_time_decay_lr_class, &bp_polynomial_decay_lr_class,
    &bp_piecewise_constant_lr_class, &bp_cosine_annealing_warm_restarts_class,
};
#define N_SCHED_CLASSES (sizeof sched_classes / sizeof sched_classes[0])

bool bp_is_scheduler(const bp_node *n)
{
    if (!n) return false;
    for (size_t k = 0; k < N_SCHED_CLASSES; k++)
        if (n->cls == sched_classes[k]) return true;
    return false;
}

bool bp_scheduler_is_call_based(const bp_node *n)
{
    return bp_is_scheduler(n) && ((const sched *)n)->last_call != NULL;
}

static bp_status as_sched(const char *who, const bp_node *n, const sched **out)
{
    if (!n) return bp_fail(BP_EINVAL, "%s: scheduler is NULL", who);
    if (!bp_is_scheduler(n))
        return bp_fail(BP_EINVAL, "%s: %s (a %s) is not a learning-rate scheduler", who, bp_node_name(n),
                       bp_node_class_name(n));
    *out = (const sched *)n;
    return BP_OK;
}

/* A counter Variable's value; state loads keep its dtype and 0-d shape, so
 * the element read is the one the constructor made. */
static int64_t counter_get(const bp_var *v) { return (int64_t)bp_tensor_get(v->value, 0); }

static void counter_add(bp_var *v, int64_t d) { bp_tensor_set(v->value, 0, (double)(counter_get(v) + d)); }

/* ------------------------------------------------------------- the formulas */

/* Python's floor division of integers (rounds toward -inf). */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static double cosine(double lr, double eta_min, double cur, double period)
{
    /* Written in BrainPy's operation order: eta + (lr - eta) * (1 + cos(pi * i / T)) / 2. */
    return eta_min + (lr - eta_min) * (1.0 + cos(SCHED_PI * cur / period)) / 2.0;
}

/* CosineAnnealingWarmRestarts at call i -> (T_cur, T_i), in epochs. The
 * epoch is i / num_call_per_epoch, a true division: T_cur is fractional and
 * the rate falls on every call. Cycle k lasts T_0*T_mult^k epochs, so cycle
 * starts are whole epochs, i.e. multiples of num_call_per_epoch calls; the
 * cycle holding i is found in integer calls (BrainPy's
 * n = floor(log(epoch/T_0*(T_mult-1) + 1) / log(T_mult)) in floating point can
 * land one cycle short at an exact cycle start), and T_cur is rounded once,
 * from the whole calls since that start. */
static void warm_restart_cycle(const sched *s, int64_t i, double *t_cur, double *t_i)
{
    const int64_t per = s->per_epoch;
    int64_t start = 0;     /* the first call of the cycle holding i */
    int64_t len = s->t_0;  /* that cycle's length in epochs */
    double t_len = (double)len;
    if (s->t_mult == 1) {
        /* T_cur = epoch mod T_0 once epoch >= T_0; a cycle too long for int64 calls never ends. */
        if (i >= 0 && len <= INT64_MAX / per) start = i - i % (len * per);
    } else {
        /* At most 63 rounds: the length at least doubles. */
        while (i >= 0 && len <= INT64_MAX / per && i - start >= len * per) {
            start += len * per;
            if (len > INT64_MAX / s->t_mult) { /* the next cycle outlasts any int64 call index */
                t_len = (double)len * (double)s->t_mult;
                break;
            }
            len *= s->t_mult;
            t_len = (double)len;
        }
    }
    *t_cur = (double)(i - start) / (double)per;
    *t_i = t_len;
}

static double sched_value(const sched *s, int64_t i)
{
    switch (s->kind) {
    case SK_CONSTANT:
        return s->lr;
    case SK_STEP:
        return s->lr * pow(s->gamma, (double)floor_div(i, s->step_size));
    case SK_MULTI_STEP: {
        int64_t p = 0;
        for (size_t k = 0; k < s->n_marks; k++) p += s->marks[k] < i;
        return s->lr * pow(s->gamma, (double)p);
    }
    case SK_EXPONENTIAL:
        return s->lr * pow(s->gamma, (double)i);
    case SK_COSINE:
        return cosine(s->lr, s->eta_min, (double)i, (double)s->t_max);
    case SK_EXP_DECAY:
        return s->lr * pow(s->decay_rate, (double)i / (double)s->decay_steps);
    case SK_INV_TIME:
        if (s->staircase) return s->lr / (1.0 + s->decay_rate * (double)floor_div(i, s->decay_steps));
        return s->lr / (1.0 + s->decay_rate * (double)i / (double)s->decay_steps);
    case SK_POLY: {
        int64_t j = i < s->decay_steps ? i : s->decay_steps;
        double mult = pow(1.0 - (double)j / (double)s->decay_steps, s->power);
        return mult * (s->lr - s->final_lr) + s->final_lr;
    }
    case SK_PIECEWISE: {
        size_t p = 0;
        for (size_t k = 0; k < s->n_marks; k++) p += i > s->marks[k];
        return s->values[p];
    }
    case SK_WARM_RESTARTS: {
        double t_cur, t_i;
        warm_restart_cycle(s, i, &t_cur, &t_i);
        return cosine(s->lr, s->eta_min, t_cur, t_i);
    }
    }
    return NAN;
}

bp_status bp_scheduler_lr_at(const bp_node *n, int64_t i, double *out)
{
    const sched *s = NULL;
    if (!out) return bp_fail(BP_EINVAL, "scheduler_lr_at: out is NULL");
    BP_TRY(as_sched("scheduler_lr_at", n, &s));
    *out = sched_value(s, i);
    return BP_OK;
}

bp_status bp_scheduler_lr(const bp_node *n, double *out)
{
    const sched *s = NULL;
    if (!out) return bp_fail(BP_EINVAL, "scheduler_lr: out is NULL");
    BP_TRY(as_sched("scheduler_lr", n, &s));
    int64_t i = 1 + counter_get(s->last_call ? s->last_call : s->last_epoch);
    *out = sched_value(s, i);
    return BP_OK;
}

bp_status bp_scheduler_step_epoch(bp_node *n)
{
    const sched *s = NULL;
    BP_TRY(as_sched("scheduler_step_epoch", n, &s));
    counter_add(s->last_epoch, 1);
    return BP_OK;
}

bp_status bp_scheduler_step_call(bp_node *n)
{
    const sched *s = NULL;
    BP_TRY(as_sched("scheduler_step_call", n, &s));
    if (s->last_call) counter_add(s->last_call, 1);
    return BP_OK;
}

bp_status bp_scheduler_set_value(bp_node *n, double lr)
{
    const sched *s = NULL;
    BP_TRY(as_sched("scheduler_set_value", n, &s));
    if (!isfinite(lr)) return bp_fail(BP_EINVAL, "%s: lr must be finite, got %g", bp_node_name(n), lr);
    ((sched *)n)->lr = lr;
    return BP_OK;
}

/* ------------------------------------------------------------ construction */

static bp_status add_counter(sched *s, const char *attr, int64_t start, bp_var **out)
{
    bp_tensor *t;
    BP_TRY(bp_tensor_new(&t, BP_INT64, 0, NULL));
    bp_tensor_set(t, 0, (double)start);
    bp_status st = bp_node_add_var(&s->base, attr, BP_VARIABLE, t, out);
    bp_tensor_free(t);
    return st;
}

/* Checks shared by every scheduler, then the node with its counters. The
 * caller fills the kind's fields and frees *out if that fails. */
static bp_status sched_new(bp_node **out, sched_kind kind, double lr, bool lr_used, int64_t last_epoch,
                           bool call_based, int64_t last_call)
{
    const char *who = sched_classes[kind]->name;
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (lr_used && !isfinite(lr)) return bp_fail(BP_EINVAL, "%s: lr must be finite, got %g", who, lr);
    if (last_epoch < -1)
        return bp_fail(BP_EINVAL, "%s: last_epoch must be an integer >= -1, got %lld", who, (long long)last_epoch);
    if (call_based && last_call < -1)
        return bp_fail(BP_EINVAL, "%s: last_call must be an integer >= -1, got %lld", who, (long long)last_call);
    bp_node *n;
    BP_TRY(bp_node_create(&n, sched_classes[kind], NULL, NULL));
    sched *s = (sched *)n;
    s->kind = kind;
    s->lr = lr_used ? lr : NAN;
    bp_status st = add_counter(s, "last_epoch", last_epoch, &s->last_epoch);
    if (!st && call_based) st = add_counter(s, "last_call", last_call, &s->last_call);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

static bp_status check_gamma(const char *who, double gamma)
{
    if (!(gamma >= 0.0 && gamma <= 1.0))
        return bp_fail(BP_EINVAL, "%s: gamma must be a float in [0, 1], got %g", who, gamma);
    return BP_OK;
}

static bp_status check_steps(const char *who, const char *what, int64_t v)
{
    if (v < 1) return bp_fail(BP_EINVAL, "%s: %s must be an integer >= 1, got %lld", who, what, (long long)v);
    return BP_OK;
}

static bp_status check_finite(const char *who, const char *what, double v, double min)
{
    if (!isfinite(v) || v < min) {
        if (isinf(min)) return bp_fail(BP_EINVAL, "%s: %s must be finite, got %g", who, what, v);
        return bp_fail(BP_EINVAL, "%s: %s must be a finite value >= %g, got %g", who, what, min, v);
    }
    return BP_OK;
}

bp_status bp_scheduler_constant_new(bp_node **out, double lr)
{
    return sched_new(out, SK_CONSTANT, lr, true, -1, false, -1);
}

bp_status bp_scheduler_step_lr_new(bp_node **out, double lr, int64_t step_size, double gamma, int64_t last_epoch)
{
    if (out) *out = NULL;
    BP_TRY(check_steps("StepLR", "step_size", step_size));
    BP_TRY(check_gamma("StepLR", gamma));
    BP_TRY(sched_new(out, SK_STEP, lr, true, last_epoch, false, -1));
    sched *s = (sched *)*out;
    s->step_size = step_size;
    s->gamma = gamma;
    return BP_OK;
}

/* Copies n int64 values (n may be 0) into *dst. */
static bp_status copy_marks(const char *who, const char *what, const int64_t *src, size_t n, int64_t **dst)
{
    *dst = NULL;
    if (n == 0) return BP_OK;
    if (!src) return bp_fail(BP_EINVAL, "%s: %s is NULL with %zu entries", who, what, n);
    *dst = malloc(sizeof **dst * n);
    if (!*dst) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    memcpy(*dst, src, sizeof **dst * n);
    return BP_OK;
}

bp_status bp_scheduler_multi_step_lr_new(bp_node **out, double lr, const int64_t *milestones, size_t n_milestones,
                                         double gamma, int64_t last_epoch)
{
    if (out) *out = NULL;
    if (n_milestones && !milestones)
        return bp_fail(BP_EINVAL, "MultiStepLR: milestones is NULL with %zu entries", n_milestones);
    BP_TRY(check_gamma("MultiStepLR", gamma));
    BP_TRY(sched_new(out, SK_MULTI_STEP, lr, true, last_epoch, false, -1));
    sched *s = (sched *)*out;
    s->gamma = gamma;
    bp_status st = copy_marks("MultiStepLR", "milestones", milestones, n_milestones, &s->marks);
    if (st) {
        bp_node_free(*out);
        *out = NULL;
        return st;
    }
    s->n_marks = n_milestones;
    return BP_OK;
}

bp_status bp_scheduler_exponential_lr_new(bp_node **out, double lr, double gamma, int64_t last_epoch)
{
    if (out) *out = NULL;
    BP_TRY(check_gamma("ExponentialLR", gamma));
    BP_TRY(sched_new(out, SK_EXPONENTIAL, lr, true, last_epoch, false, -1));
    ((sched *)*out)->gamma = gamma;
    return BP_OK;
}

bp_status bp_scheduler_cosine_annealing_lr_new(bp_node **out, double lr, int64_t T_max, double eta_min,
                                               int64_t last_epoch)
{
    if (out) *out = NULL;
    BP_TRY(check_steps("CosineAnnealingLR", "T_max", T_max));
    BP_TRY(check_finite("CosineAnnealingLR", "eta_min", eta_min, -INFINITY));
    BP_TRY(sched_new(out, SK_COSINE, lr, true, last_epoch, false, -1));
    sched *s = (sched *)*out;
    s->t_max = T_max;
    s->eta_min = eta_min;
    return BP_OK;
}

bp_status bp_scheduler_exponential_decay_lr_new(bp_node **out, double lr, int64_t decay_steps, double decay_rate,
                                                int64_t last_epoch, int64_t last_call)
{
    if (out) *out = NULL;
    BP_TRY(check_steps("ExponentialDecayLR", "decay_steps", decay_steps));
    BP_TRY(check_finite("ExponentialDecayLR", "decay_rate", decay_rate, 0.0));
    BP_TRY(sched_new(out, SK_EXP_DECAY, lr, true, last_epoch, true, last_call));
    sched *s = (sched *)*out;
    s->decay_steps = decay_steps;
    s->decay_rate = decay_rate;
    return BP_OK;
}

bp_status bp_scheduler_inverse_time_decay_lr_new(bp_node **out, double lr, int64_t decay_steps, double decay_rate,
                                                 bool staircase, int64_t last_epoch, int64_t last_call)
{
    if (out) *out = NULL;
    BP_TRY(check_steps("InverseTimeDecayLR", "decay_steps", decay_steps));
    BP_TRY(check_finite("InverseTimeDecayLR", "decay_rate", decay_rate, 0.0));
    BP_TRY(sched_new(out, SK_INV_TIME, lr, true, last_epoch, true, last_call));
    sched *s = (sched *)*out;
    s->decay_steps = decay_steps;
    s->decay_rate = decay_rate;
    s->staircase = staircase;
    return BP_OK;
}

bp_status bp_scheduler_polynomial_decay_lr_new(bp_node **out, double lr, int64_t decay_steps, double final_lr,
                                               double power, int64_t last_epoch, int64_t last_call)
{
    if (out) *out = NULL;
    BP_TRY(check_steps("PolynomialDecayLR", "decay_steps", decay_steps));
    BP_TRY(check_finite("PolynomialDecayLR", "final_lr", final_lr, -INFINITY));
    BP_TRY(check_finite("PolynomialDecayLR", "power", power, 0.0));
    BP_TRY(sched_new(out, SK_POLY, lr, true, last_epoch, true, last_call));
    sched *s = (sched *)*out;
    s->decay_steps = decay_steps;
    s->final_lr = final_lr;
    s->power = power;
    return BP_OK;
}

bp_status bp_scheduler_piecewise_constant_lr_new(bp_node **out, const int64_t *boundaries, size_t n_boundaries,
                                                 const double *values, size_t n_values, int64_t last_epoch,
                                                 int64_t last_call)
{
    const char *who = "PiecewiseConstantLR";
    if (out) *out = NULL;
    if (n_values != n_boundaries + 1)
        return bp_fail(BP_EINVAL, "%s: boundaries length must be one shorter than values length, got %zu boundaries "
                       "and %zu values", who, n_boundaries, n_values);
    if (!values) return bp_fail(BP_EINVAL, "%s: values is NULL", who);
    if (n_boundaries && !boundaries)
        return bp_fail(BP_EINVAL, "%s: boundaries is NULL with %zu entries", who, n_boundaries);
    for (size_t k = 0; k < n_values; k++)
        if (!isfinite(values[k]))
            return bp_fail(BP_EINVAL, "%s: values[%zu] must be finite, got %g", who, k, values[k]);
    BP_TRY(sched_new(out, SK_PIECEWISE, NAN, false, last_epoch, true, last_call));
    sched *s = (sched *)*out;
    bp_status st = copy_marks(who, "boundaries", boundaries, n_boundaries, &s->marks);
    if (!st) {
        s->values = malloc(sizeof *s->values * n_values);
        if (!s->values) st = bp_fail(BP_ENOMEM, "%s: out of memory", who);
    }
    if (st) {
        bp_node_free(*out);
        *out = NULL;
        return st;
    }
    memcpy(s->values, values, sizeof *s->values * n_values);
    s->n_marks = n_boundaries;
    s->n_values = n_values;
    return BP_OK;
}

bp_status bp_scheduler_cosine_annealing_warm_restarts_new(bp_node **out, double lr, int64_t num_call_per_epoch,
                                                          int64_t T_0, int64_t T_mult, double eta_min,
                                                          int64_t last_epoch, int64_t last_call)
{
    const char *who = "CosineAnnealingWarmRestarts";
    if (out) *out = NULL;
    if (T_0 <= 0) return bp_fail(BP_EINVAL, "%s: Expected positive integer T_0, but got %lld", who, (long long)T_0);
    if (T_mult < 1)
        return bp_fail(BP_EINVAL, "%s: Expected integer T_mult >= 1, but got %lld", who, (long long)T_mult);
    BP_TRY(check_steps(who, "num_call_per_epoch", num_call_per_epoch));
    BP_TRY(check_finite(who, "eta_min", eta_min, -INFINITY));
    BP_TRY(sched_new(out, SK_WARM_RESTARTS, lr, true, last_epoch, true, last_call));
    sched *s = (sched *)*out;
    s->per_epoch = num_call_per_epoch;
    s->t_0 = T_0;
    s->t_mult = T_mult;
    s->eta_min = eta_min;
    return BP_OK;
}
