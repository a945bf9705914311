/* bpc/scheduler.h — learning-rate schedulers, as BrainPy 2.8.2's brainpy.optim
 * schedulers (see docs/brainpy-semantics.md §3.3).
 *
 * A scheduler is a node (class name = BrainPy's, automatic names "StepLR0",
 * "Constant1", ...) whose state lives in int64 0-d Variables, so it shows in
 * vars() and state_dict() and a checkpoint restores it:
 *   last_epoch   every scheduler (starts at the constructor's last_epoch, BrainPy default -1)
 *   last_call    call-based schedulers only (starts at last_call, default -1)
 * step_epoch() adds 1 to last_epoch. step_call() adds 1 to last_call (a no-op
 * for epoch-based schedulers). An optimizer calls step_call() at the end of
 * each update; the training loop calls step_epoch() once per epoch.
 *
 * The value lr() is __call__(i) at i = last_epoch + 1 (epoch-based) or
 * i = last_call + 1 (call-based), so before any step i = 0:
 *   Constant                      lr
 *   StepLR                        lr * gamma^floor(i / step_size)
 *   MultiStepLR                   lr * gamma^p,  p = #{m in milestones : m < i}  (2.8.2: strict <)
 *   ExponentialLR                 lr * gamma^i
 *   CosineAnnealingLR             eta_min + (lr - eta_min) * (1 + cos(pi * i / T_max)) / 2
 *                                 (BrainPy's closed form, not PyTorch's recursion; it is
 *                                 periodic past T_max, as BrainPy's)
 *   ExponentialDecayLR   (call)   lr * decay_rate^(i / decay_steps)            (no staircase)
 *   InverseTimeDecayLR   (call)   lr / (1 + decay_rate * i / decay_steps), with
 *                                 floor(i / decay_steps) when staircase
 *   PolynomialDecayLR    (call)   j = min(i, decay_steps);
 *                                 (1 - j / decay_steps)^power * (lr - final_lr) + final_lr
 *   PiecewiseConstantLR  (call)   values[#{b in boundaries : i > b}]
 *   CosineAnnealingWarmRestarts (call)
 *                                 e = i / num_call_per_epoch, a true division (fractional
 *                                 epochs: the rate falls on every call); if e < T_0:
 *                                 T_cur = e, T_i = T_0; else with T_mult = 1: T_cur = e mod T_0,
 *                                 T_i = T_0; else the cycle n holding e (cycle k lasts
 *                                 T_0*T_mult^k epochs): T_cur = e - T_0*(T_mult^n - 1)/(T_mult - 1),
 *                                 T_i = T_0*T_mult^n;
 *                                 eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2.
 *                                 BrainPy finds n as floor(log(e/T_0*(T_mult-1)+1)/log(T_mult))
 *                                 in floating point, which can land one cycle short at an
 *                                 exact cycle start; bpc finds n with integer arithmetic.
 *
 * Values are computed in double whatever the flavour. Hyperparameters are
 * checked as BrainPy checks them (gamma in [0, 1], step_size >= 1, last_epoch
 * >= -1, ...) plus what BrainPy leaves unchecked but would divide by zero or
 * give NaN (decay_steps >= 1, num_call_per_epoch >= 1, finite lr): BP_EINVAL.
 *
 * Ownership: every constructor returns a node with one reference held by the
 * caller (bp_node_free). An optimizer given a scheduler takes its own reference. */
#ifndef BPC_SCHEDULER_H
#define BPC_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* The node classes, e.g. for bp_collector_subset_class. */
extern const bp_node_class bp_constant_class;
extern const bp_node_class bp_step_lr_class;
extern const bp_node_class bp_multi_step_lr_class;
extern const bp_node_class bp_exponential_lr_class;
extern const bp_node_class bp_cosine_annealing_lr_class;
extern const bp_node_class bp_exponential_decay_lr_class;
extern const bp_node_class bp_inverse_time_decay_lr_class;
extern const bp_node_class bp_polynomial_decay_lr_class;
extern const bp_node_class bp_piecewise_constant_lr_class;
extern const bp_node_class bp_cosine_annealing_warm_restarts_class;

/* Constant(lr): always lr. last_epoch starts at -1. */
bp_status bp_scheduler_constant_new(bp_node **out, double lr);

/* StepLR(lr, step_size, gamma=0.1, last_epoch=-1): step_size >= 1, gamma in [0, 1]. */
bp_status bp_scheduler_step_lr_new(bp_node **out, double lr, int64_t step_size, double gamma,
                                   int64_t last_epoch);

/* MultiStepLR(lr, milestones, gamma=0.1, last_epoch=-1): the milestones are
 * copied (any order; none is allowed), gamma in [0, 1]. */
bp_status bp_scheduler_multi_step_lr_new(bp_node **out, double lr, const int64_t *milestones,
                                         size_t n_milestones, double gamma, int64_t last_epoch);

/* ExponentialLR(lr, gamma, last_epoch=-1): gamma in [0, 1]. */
bp_status bp_scheduler_exponential_lr_new(bp_node **out, double lr, double gamma, int64_t last_epoch);

/* CosineAnnealingLR(lr, T_max, eta_min=0, last_epoch=-1): T_max >= 1, eta_min finite. */
bp_status bp_scheduler_cosine_annealing_lr_new(bp_node **out, double lr, int64_t T_max, double eta_min,
                                               int64_t last_epoch);

/* ExponentialDecayLR(lr, decay_steps, decay_rate, last_epoch=-1, last_call=-1):
 * decay_steps >= 1, decay_rate >= 0. */
bp_status bp_scheduler_exponential_decay_lr_new(bp_node **out, double lr, int64_t decay_steps,
                                                double decay_rate, int64_t last_epoch, int64_t last_call);

/* InverseTimeDecayLR(lr, decay_steps, decay_rate, staircase=False, last_epoch=-1,
 * last_call=-1): decay_steps >= 1, decay_rate >= 0. */
bp_status bp_scheduler_inverse_time_decay_lr_new(bp_node **out, double lr, int64_t decay_steps,
                                                 double decay_rate, bool staircase, int64_t last_epoch,
                                                 int64_t last_call);

/* PolynomialDecayLR(lr, decay_steps, final_lr, power=1.0, last_epoch=-1,
 * last_call=-1): decay_steps >= 1, final_lr finite, power >= 0. */
bp_status bp_scheduler_polynomial_decay_lr_new(bp_node **out, double lr, int64_t decay_steps,
                                               double final_lr, double power, int64_t last_epoch,
                                               int64_t last_call);

/* PiecewiseConstantLR(boundaries, values, last_epoch=-1, last_call=-1):
 * n_values == n_boundaries + 1 (BrainPy's MathError text otherwise); both
 * arrays are copied. Its lr (BrainPy: NaN) is unused; lr() reads values. */
bp_status bp_scheduler_piecewise_constant_lr_new(bp_node **out, const int64_t *boundaries,
                                                 size_t n_boundaries, const double *values, size_t n_values,
                                                 int64_t last_epoch, int64_t last_call);

/* CosineAnnealingWarmRestarts(lr, num_call_per_epoch, T_0, T_mult=1, eta_min=0,
 * last_epoch=-1, last_call=-1): num_call_per_epoch >= 1, T_0 >= 1, T_mult >= 1. */
bp_status bp_scheduler_cosine_annealing_warm_restarts_new(bp_node **out, double lr,
                                                          int64_t num_call_per_epoch, int64_t T_0,
                                                          int64_t T_mult, double eta_min, int64_t last_epoch,
                                                          int64_t last_call);

/* True if n is a scheduler node of this module. */
bool bp_is_scheduler(const bp_node *n);

/* The current learning rate, __call__() at i = last_epoch + 1 or last_call + 1. */
bp_status bp_scheduler_lr(const bp_node *s, double *out);

/* __call__(i): the learning rate at an explicit epoch / call index i. */
bp_status bp_scheduler_lr_at(const bp_node *s, int64_t i, double *out);

/* step_epoch(): last_epoch += 1. */
bp_status bp_scheduler_step_epoch(bp_node *s);

/* step_call(): last_call += 1 for call-based schedulers; nothing for the others. */
bp_status bp_scheduler_step_call(bp_node *s);

/* set_value(lr): replaces the base learning rate (finite). For PiecewiseConstantLR,
 * which reads its values, it changes nothing visible, as in BrainPy. */
bp_status bp_scheduler_set_value(bp_node *s, double lr);

/* True for the call-based schedulers (those with a last_call Variable). */
bool bp_scheduler_is_call_based(const bp_node *s);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
