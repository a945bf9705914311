/* bpc/optimizer.h — BrainPy 2.8.2's optimizers (brainpy/optim/optimizer.py,
 * see docs/brainpy-semantics.md §3.1-3.2): SGD, Momentum,
 * MomentumNesterov, Adam, AdamW (with amsgrad), RMSProp, Adagrad.
 *
 * An optimizer is a node, so its state is in vars() and state_dict() and a
 * checkpoint saves it:
 *   - its learning rate is a scheduler child node under attr "lr" (a plain
 *     number becomes a Constant), so the scheduler's counters appear under the
 *     scheduler's own name: "Constant0.last_epoch";
 *   - Adam and AdamW have a "step" Variable, int64 of shape () starting at 0;
 *     BrainPy 2.8.2's step counter: it is incremented at the start of each update, so
 *     the first update uses t = 1;
 *   - the slot variables are implicit vars keyed "<trainkey><suffix>", zero at
 *     registration, same shape and dtype as the parameter; for each
 *     register_train_vars call all vars' first slot come first, then the
 *     second, as BrainPy's dict comprehensions register them:
 *       Momentum, MomentumNesterov   _v
 *       Adam                         _m, _v
 *       AdamW                        _m, _v (and _vmax with amsgrad)
 *       RMSProp, Adagrad             _cache (BrainPy's name for these two)
 *     e.g. vars() of an Adam over a BatchNorm3d: "Adam0.step",
 *     "Adam0.BatchNorm3d0.bias_m", "Adam0.BatchNorm3d0.scale_m",
 *     "Adam0.BatchNorm3d0.bias_v", ..., "Constant0.last_epoch".
 *   - the registered parameters themselves (BrainPy's vars_to_train) are NOT
 *     part of the optimizer's vars, as in BrainPy.
 *
 * Update rules (lr = the scheduler's value read before the update's
 * step_call, wd = weight_decay, g = the gradient; all per element):
 *   SGD          wd = 0: p -= lr*g;  else p = (1-wd)*p - lr*g   (decoupled, not scaled by lr)
 *   Momentum     v = momentum*v - lr*g;  p = (1-wd)*p + v
 *   MomentumNesterov  v = momentum*v - lr*g;  p = (1-wd)*p + (momentum*v - lr*g)   (2.8.2's look-ahead)
 *   Adam         t = ++step; lr_t = lr/(1-beta1^t) * sqrt(1-beta2^t);
 *                m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2;
 *                p = (1-wd)*p - lr_t*m/(sqrt(v)+eps)
 *   AdamW        t = ++step; lr_t = lr*sqrt(1-beta2^t)/(1-beta1^t);
 *                wd != 0: p *= (1 - lr*wd)  (the uncorrected lr);  m, v as Adam;
 *                amsgrad: vmax = max(vmax, v), denom = sqrt(vmax)+eps, else sqrt(v)+eps;
 *                p -= lr_t*m/denom
 *   RMSProp      c = rho*c + (1-rho)*g^2;  p = (1-wd)*p - lr*g/sqrt(c+epsilon)
 *   Adagrad      c += g^2;                 p = (1-wd)*p - lr*g/sqrt(c+epsilon)
 * Eps is added to the uncorrected sqrt(v) (so Adam's effective eps is
 * eps/sqrt(1-beta2^t), unlike PyTorch's). BrainPy's weight_decay=None is
 * weight_decay = 0 here: (1-0)*p is p exactly, so the results are identical.
 * Scalars (lr_t, 1-wd, ...) are formed in double, then the per-element
 * arithmetic runs in bp_real (float32 in libbpc).
 *
 * Ranges (BP_EINVAL outside them, message naming the value): lr finite
 * (required unless lr_scheduler is given); weight_decay in [0, 1] (BrainPy's
 * CommonOpt check); momentum >= 0; beta1, beta2 in [0, 1) with AdamW's
 * "Invalid beta parameter at index 0: ..." text (Adam checks the same, which
 * BrainPy leaves to a division by zero); eps / epsilon >= 0 ("Invalid epsilon
 * value: ..."); rho in [0, 1]. Every value must be finite.
 *
 * Gradients: bp_optim_update reads each registered var's own `grad` tensor
 * (filled by autograd's backward); bp_optim_update_with takes them from a
 * dict keyed as the registered vars, checked as BrainPy's check_grads. Neither
 * zeroes the gradients afterwards (call bp_node_zero_grad on the model).
 * Updates are all or nothing: every check runs before the first write.
 *
 * Ownership: every constructor returns a node with one reference held by the
 * caller (bp_node_free). The optimizer holds references to the registered
 * variables and to its scheduler. */
#ifndef BPC_OPTIMIZER_H
#define BPC_OPTIMIZER_H

#include <stdbool.h>
#include <bpc/node.h>
#include <bpc/state.h>
#include <bpc/scheduler.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* The node classes, e.g. for bp_collector_subset_class. */
extern const bp_node_class bp_sgd_class;
extern const bp_node_class bp_momentum_class;
extern const bp_node_class bp_momentum_nesterov_class;
extern const bp_node_class bp_adam_class;
extern const bp_node_class bp_adamw_class;
extern const bp_node_class bp_rmsprop_class;
extern const bp_node_class bp_adagrad_class;

/* Fields every optimizer's options start with. lr defaults to NaN, meaning
 * "not given": set either lr or lr_scheduler (BrainPy's lr is required). */
#define BP_OPTIM_COMMON_FIELDS                                                              \
    double lr;                       /* a number, wrapped in a new Constant scheduler */   \
    bp_node *lr_scheduler;           /* or a scheduler node; the optimizer takes a ref */  \
    const bp_collector *train_vars;  /* registered at construction (may be NULL) */        \
    double weight_decay;             /* [0, 1]; 0 is BrainPy's None */                     \
    const char *name                 /* NULL: automatic "<Class><n>" */

typedef struct bp_sgd_opts {
    BP_OPTIM_COMMON_FIELDS;
} bp_sgd_opts;

typedef struct bp_momentum_opts {
    BP_OPTIM_COMMON_FIELDS;
    double momentum;                 /* 0.9 */
} bp_momentum_opts;

typedef struct bp_adam_opts {
    BP_OPTIM_COMMON_FIELDS;
    double beta1;                    /* 0.9 */
    double beta2;                    /* 0.999 */
    double eps;                      /* 1e-8 */
} bp_adam_opts;

typedef struct bp_adamw_opts {
    BP_OPTIM_COMMON_FIELDS;          /* weight_decay defaults to 1e-2 here */
    double beta1;                    /* 0.9 */
    double beta2;                    /* 0.999 */
    double eps;                      /* 1e-8 */
    bool amsgrad;                    /* false */
} bp_adamw_opts;

typedef struct bp_rmsprop_opts {
    BP_OPTIM_COMMON_FIELDS;
    double epsilon;                  /* 1e-6 */
    double rho;                      /* 0.9 */
} bp_rmsprop_opts;

typedef struct bp_adagrad_opts {
    BP_OPTIM_COMMON_FIELDS;
    double epsilon;                  /* 1e-6 */
} bp_adagrad_opts;

/* BrainPy's defaults (lr NaN = not given, weight_decay 0 = None, AdamW 1e-2). */
bp_sgd_opts bp_sgd_defaults(void);
bp_momentum_opts bp_momentum_defaults(void);
bp_momentum_opts bp_momentum_nesterov_defaults(void);
bp_adam_opts bp_adam_defaults(void);
bp_adamw_opts bp_adamw_defaults(void);
bp_rmsprop_opts bp_rmsprop_defaults(void);
bp_adagrad_opts bp_adagrad_defaults(void);

/* Constructors: check the options, create the node (and a Constant for a
 * numeric lr), then register opts->train_vars. opts must not be NULL (lr is
 * required). */
bp_status bp_sgd_new(bp_node **out, const bp_sgd_opts *opts);
bp_status bp_momentum_new(bp_node **out, const bp_momentum_opts *opts);
bp_status bp_momentum_nesterov_new(bp_node **out, const bp_momentum_opts *opts);
bp_status bp_adam_new(bp_node **out, const bp_adam_opts *opts);
bp_status bp_adamw_new(bp_node **out, const bp_adamw_opts *opts);
bp_status bp_rmsprop_new(bp_node **out, const bp_rmsprop_opts *opts);
bp_status bp_adagrad_new(bp_node **out, const bp_adagrad_opts *opts);

/* True if n is an optimizer node of this module. */
bool bp_is_optimizer(const bp_node *n);

/* register_train_vars(train_vars): adds the collector's vars under its keys
 * (kept as given, e.g. from bp_node_train_vars then bp_collector_unique) and
 * creates their zero slot variables. NULL registers nothing. A key already
 * registered to the same var is skipped (its slots keep their state).
 * Errors, with nothing registered: BP_EINVAL for a collector of nodes
 * ('"train_vars" must be a dict of Variable.'); BP_EDTYPE for a var whose
 * value is not bp_real; BP_ECONFLICT for a key already bound to another var,
 * or one var under two keys (it would be updated twice per step). */
bp_status bp_optim_register_train_vars(bp_node *opt, const bp_collector *train_vars);

/* update(): one step using each registered var's `grad` tensor, then
 * lr.step_call(). BP_EINVAL if a registered var has no grad (a plain
 * Variable: use bp_optim_update_with). */
bp_status bp_optim_update(bp_node *opt);

/* update(grads): one step with the gradients in grads (flat, keyed as the
 * registered vars; borrowed). check_grads: BP_EINVAL when the counts differ
 * ('The length of "grads" must be equal to "self.vars_to_train", while we got
 * a != b!'); BP_ENOTFOUND for a registered key absent from grads (naming an
 * unregistered key grads has instead); BP_ESHAPE / BP_EDTYPE for a gradient
 * whose shape / dtype differs from its var's. */
bp_status bp_optim_update_with(bp_node *opt, const bp_dict *grads);

/* The learning rate the next update will use (the scheduler's lr()). */
bp_status bp_optim_lr(const bp_node *opt, double *out);

/* The scheduler node (attr "lr"); borrowed. NULL if opt is not an optimizer. */
bp_node *bp_optim_scheduler(const bp_node *opt);

/* The registered vars, in registration order: count, key i, var i (borrowed). */
size_t bp_optim_num_train_vars(const bp_node *opt);
const char *bp_optim_train_key(const bp_node *opt, size_t i);
bp_var *bp_optim_train_var(const bp_node *opt, size_t i);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
