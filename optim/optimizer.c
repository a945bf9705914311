/* optim/optimizer.c — the optimizers of bpc/optimizer.h.
 *
 * One struct serves every optimizer class; the class pointer (and the kind
 * copied from it) says which rule applies. The registered parameters are kept
 * in C arrays beside the node, not as its vars: BrainPy's vars_to_train is an
 * ArrayCollector that vars() does not traverse. Slots and the step counter
 * are vars (implicit vars and attr "step"), so state_dict sees them and a
 * load moves them.
 *
 * Kernels: one pass per parameter tensor, elementwise, so each rule costs
 * its slots' traffic: SGD reads p, g and writes p (3 words per element);
 * Momentum/Nesterov/RMSProp/Adagrad 5; Adam/AdamW 7 (9 with amsgrad). Large
 * tensors are split across OpenMP threads; elementwise work gives the same
 * bits whatever the thread count. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/optimizer.h>
#include "real_math.h"

/* Below this many elements a tensor is updated by the calling thread alone:
 * the fork/join costs more than the work. */
#define OPTIM_PAR_MIN 32768

typedef enum optim_kind {
    OPT_SGD,
    OPT_MOMENTUM,
    OPT_NESTEROV,
    OPT_ADAM,
    OPT_ADAMW,
    OPT_RMSPROP,
    OPT_ADAGRAD
} optim_kind;

#define MAX_SLOTS 3

typedef struct optim {
    bp_node base;
    optim_kind kind;
    double weight_decay, momentum, beta1, beta2, eps, rho;
    bool amsgrad;
    bp_node *lr;        /* borrowed: the node holds it as child "lr" */
    bp_var *step;       /* borrowed: attr "step" (Adam, AdamW), else NULL */
    int n_slots;
    const char *suffix[MAX_SLOTS];
    size_t n, cap;
    char **keys;        /* owned copies of the registered keys */
    bp_var **params;    /* one reference each */
    bp_var **slots;     /* slots[i * MAX_SLOTS + s], borrowed from the implicit vars */
} optim;

static void optim_destroy(bp_node *n)
{
    optim *o = (optim *)n;
    for (size_t i = 0; i < o->n; i++) {
        free(o->keys[i]);
        bp_var_free(o->params[i]);
    }
    free(o->keys);
    free(o->params);
    free(o->slots);
}

#define OPTIM_CLASS(NAME) {.name = NAME, .size = sizeof(optim), .destroy = optim_destroy}

const bp_node_class bp_sgd_class = OPTIM_CLASS("SGD");
const bp_node_class bp_momentum_class = OPTIM_CLASS("Momentum");
const bp_node_class bp_momentum_nesterov_class = OPTIM_CLASS("MomentumNesterov");
const bp_node_class bp_adam_class = OPTIM_CLASS("Adam");
const bp_node_class bp_adamw_class = OPTIM_CLASS("AdamW");
const bp_node_class bp_rmsprop_class = OPTIM_CLASS("RMSProp");
const bp_node_class bp_adagrad_class = OPTIM_CLASS("Adagrad");

/* Indexed by optim_kind. */
static const bp_node_class *const optim_classes[] = {
    &bp_sgd_class,  &bp_momentum_class, &bp_momentum_nesterov_class, &bp_adam_class,
    &bp_adamw_class, &bp_rmsprop_class, &bp_adagrad_class,
};
#define N_OPTIM_CLASSES (sizeof optim_classes / sizeof optim_classes[0])

bool bp_is_optimizer(const bp_node *n)
{
    if (!n) return false;
    for (size_t k = 0; k < N_OPTIM_CLASSES; k++)
        if (n->cls == optim_classes[k]) return true;
    return false;
}

static bp_status as_optim(const char *who, const bp_node *n, optim **out)
{
    if (!n) return bp_fail(BP_EINVAL, "%s: optimizer is NULL", who);
    if (!bp_is_optimizer(n))
        return bp_fail(BP_EINVAL, "%s: %s (a %s) is not an optimizer", who, bp_node_name(n), bp_node_class_name(n));
    *out = (optim *)n;
    return BP_OK;
}

/* ----------------------------------------------------------------- defaults */

#define COMMON_DEFAULTS .lr = NAN, .lr_scheduler = NULL, .train_vars = NULL, .weight_decay = 0.0, .name = NULL

bp_sgd_opts bp_sgd_defaults(void) { return (bp_sgd_opts){COMMON_DEFAULTS}; }

bp_momentum_opts bp_momentum_defaults(void) { return (bp_momentum_opts){COMMON_DEFAULTS, .momentum = 0.9}; }

bp_momentum_opts bp_momentum_nesterov_defaults(void)
{
    return (bp_momentum_opts){COMMON_DEFAULTS, .momentum = 0.9};
}

bp_adam_opts bp_adam_defaults(void)
{
    return (bp_adam_opts){COMMON_DEFAULTS, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

bp_adamw_opts bp_adamw_defaults(void)
{
    bp_adamw_opts o = {COMMON_DEFAULTS, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .amsgrad = false};
    o.weight_decay = 1e-2;
    return o;
}

bp_rmsprop_opts bp_rmsprop_defaults(void)
{
    return (bp_rmsprop_opts){COMMON_DEFAULTS, .epsilon = 1e-6, .rho = 0.9};
}

bp_adagrad_opts bp_adagrad_defaults(void) { return (bp_adagrad_opts){COMMON_DEFAULTS, .epsilon = 1e-6}; }

/* ------------------------------------------------------------ registration */

static long find_key(const optim *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0) return (long)i;
    return -1;
}

static long find_var(const optim *o, const bp_var *v)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->params[i] == v) return (long)i;
    return -1;
}

static bp_status grow(optim *o, size_t need)
{
    if (need <= o->cap) return BP_OK;
    size_t cap = o->cap ? o->cap : 8;
    while (cap < need) cap *= 2;
    char **k = realloc(o->keys, sizeof *k * cap);
    if (!k) return bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(&o->base));
    o->keys = k;
    bp_var **p = realloc(o->params, sizeof *p * cap);
    if (!p) return bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(&o->base));
    o->params = p;
    bp_var **s = realloc(o->slots, sizeof *s * cap * MAX_SLOTS);
    if (!s) return bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(&o->base));
    o->slots = s;
    o->cap = cap;
    return BP_OK;
}

/* The pending registration of one collector: indices of its new entries
 * and their slot vars (new[j * MAX_SLOTS + s], one reference each). */
typedef struct pending {
    size_t *idx;
    size_t n;
    bp_var **slot;
    char **slot_key;
} pending;

static void pending_free(pending *p, int n_slots)
{
    for (size_t j = 0; j < p->n; j++)
        for (int s = 0; s < n_slots; s++) {
            bp_var_free(p->slot[j * MAX_SLOTS + s]);
            free(p->slot_key[j * MAX_SLOTS + s]);
        }
    free(p->idx);
    free(p->slot);
    free(p->slot_key);
}

/* Checks every entry of c against the registered ones and itself; fills
 * p->idx with the entries to add. Nothing is changed. */
static bp_status plan_register(const optim *o, const bp_collector *c, pending *p)
{
    const char *who = bp_node_name(&o->base);
    size_t m = bp_collector_len(c);
    for (size_t i = 0; i < m; i++) {
        const char *key = bp_collector_key(c, i);
        bp_var *v = bp_collector_var(c, i);
        if (!v)
            return bp_fail(BP_EINVAL, "%s: \"train_vars\" must be a dict of Variable. (got a collector of nodes)",
                           who);
        if (v->value->dtype != BP_REAL_DTYPE)
            return bp_fail(BP_EDTYPE, "%s: train var \"%s\" is %s, the optimizer updates %s values", who, key,
                           bp_dtype_name(v->value->dtype), BP_REAL_NAME);
        long at = find_key(o, key);
        if (at >= 0) {
            if (o->params[at] == v) continue; /* already registered: keep its slots */
            return bp_fail(BP_ECONFLICT, "%s: train var key \"%s\" is already registered to another variable", who,
                           key);
        }
        at = find_var(o, v);
        if (at >= 0)
            return bp_fail(BP_ECONFLICT,
                           "%s: the variable under \"%s\" is already registered as \"%s\"; one variable under two "
                           "keys would be updated twice per step (use bp_collector_unique)",
                           who, key, o->keys[at]);
        for (size_t j = 0; j < p->n; j++)
            if (bp_collector_var(c, p->idx[j]) == v)
                return bp_fail(BP_ECONFLICT,
                               "%s: train_vars holds one variable under \"%s\" and \"%s\"; it would be updated "
                               "twice per step (use bp_collector_unique)",
                               who, bp_collector_key(c, p->idx[j]), key);
        p->idx[p->n++] = i;
    }
    return BP_OK;
}

/* Creates the zero slot vars of the planned entries. */
static bp_status make_slots(const optim *o, const bp_collector *c, pending *p)
{
    const char *who = bp_node_name(&o->base);
    for (size_t j = 0; j < p->n; j++) {
        const char *key = bp_collector_key(c, p->idx[j]);
        const bp_tensor *x = bp_collector_var(c, p->idx[j])->value;
        for (int s = 0; s < o->n_slots; s++) {
            size_t len = strlen(key) + strlen(o->suffix[s]) + 1;
            char *sk = malloc(len);
            if (!sk) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
            snprintf(sk, len, "%s%s", key, o->suffix[s]);
            p->slot_key[j * MAX_SLOTS + s] = sk;
            bp_tensor *t;
            BP_TRY(bp_tensor_new(&t, x->dtype, x->ndim, x->shape));
            bp_status st = bp_var_new(&p->slot[j * MAX_SLOTS + s], BP_VARIABLE, t);
            bp_tensor_free(t);
            if (st) return st;
        }
    }
    return BP_OK;
}

bp_status bp_optim_register_train_vars(bp_node *n, const bp_collector *c)
{
    optim *o = NULL;
    BP_TRY(as_optim("optim_register_train_vars", n, &o));
    size_t m = bp_collector_len(c);
    if (m == 0) return BP_OK; /* BrainPy: None -> {} */
    pending p = {0};
    p.idx = malloc(sizeof *p.idx * m);
    p.slot = calloc(m * MAX_SLOTS, sizeof *p.slot);
    p.slot_key = calloc(m * MAX_SLOTS, sizeof *p.slot_key);
    bp_status st = BP_OK;
    if (!p.idx || !p.slot || !p.slot_key) st = bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(n));
    if (!st) st = plan_register(o, c, &p);
    if (!st) st = make_slots(o, c, &p);
    if (!st) st = grow(o, o->n + p.n);
    /* Register slot s of every new var before slot s+1, as BrainPy's one
     * register_implicit_vars call per slot kind does. */
    for (int s = 0; !st && s < o->n_slots; s++)
        for (size_t j = 0; !st && j < p.n; j++)
            st = bp_node_register_implicit_vars(n, 1, (const char *const *)&p.slot_key[j * MAX_SLOTS + s],
                                                &p.slot[j * MAX_SLOTS + s]);
    if (!st) {
        for (size_t j = 0; j < p.n; j++) {
            char *key = strdup(bp_collector_key(c, p.idx[j]));
            if (!key) {
                st = bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(n));
                break;
            }
            size_t i = o->n++;
            o->keys[i] = key;
            o->params[i] = bp_var_retain(bp_collector_var(c, p.idx[j]));
            for (int s = 0; s < o->n_slots; s++) o->slots[i * MAX_SLOTS + s] = p.slot[j * MAX_SLOTS + s];
        }
    }
    pending_free(&p, o->n_slots); /* the node holds the slots now (or they die here) */
    return st;
}

/* ------------------------------------------------------------------ update */

/* Scalars of one step, formed in double and rounded once to bp_real. */
typedef struct step_coef {
    bp_real lr;       /* lr as read before step_call */
    bp_real keep;     /* 1 - weight_decay (1 when none) */
    bp_real mu;       /* momentum */
    bp_real b1, c1;   /* beta1, 1 - beta1 */
    bp_real b2, c2;   /* beta2, 1 - beta2 */
    bp_real lr_t;     /* bias-corrected lr (Adam, AdamW) */
    bp_real decay;    /* AdamW: 1 - lr*wd */
    bool decoupled;   /* AdamW: wd != 0 */
    bp_real eps;      /* eps / epsilon */
    bp_real rho, crho;
} step_coef;

/* Applies o's rule to one parameter p (n elements) with gradient g and slots
 * s0..s2 (as the kind needs). */
static void apply_rule(const optim *o, const step_coef *k, int64_t n, bp_real *restrict p, const bp_real *restrict g,
                       bp_real *restrict s0, bp_real *restrict s1, bp_real *restrict s2)
{
    const bp_real lr = k->lr, keep = k->keep, eps = k->eps;
    switch (o->kind) {
    case OPT_SGD:
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) p[i] = keep * p[i] - lr * g[i];
        break;
    case OPT_MOMENTUM: {
        const bp_real mu = k->mu;
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            s0[i] = mu * s0[i] - lr * g[i];
            p[i] = keep * p[i] + s0[i];
        }
        break;
    }
    case OPT_NESTEROV: {
        const bp_real mu = k->mu;
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            s0[i] = mu * s0[i] - lr * g[i];
            p[i] = keep * p[i] + (mu * s0[i] - lr * g[i]);
        }
        break;
    }
    case OPT_ADAM: {
        const bp_real b1 = k->b1, c1 = k->c1, b2 = k->b2, c2 = k->c2, lr_t = k->lr_t;
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            s0[i] = b1 * s0[i] + c1 * g[i];
            s1[i] = b2 * s1[i] + c2 * (g[i] * g[i]);
            p[i] = keep * p[i] - lr_t * s0[i] / (R_SQRT(s1[i]) + eps);
        }
        break;
    }
    case OPT_ADAMW: {
        const bp_real b1 = k->b1, c1 = k->c1, b2 = k->b2, c2 = k->c2, lr_t = k->lr_t, decay = k->decay;
        const bool decoupled = k->decoupled, ams = o->amsgrad;
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            bp_real x = decoupled ? p[i] * decay : p[i];
            s0[i] = b1 * s0[i] + c1 * g[i];
            s1[i] = b2 * s1[i] + c2 * (g[i] * g[i]);
            bp_real v = s1[i];
            if (ams) {
                if (s2[i] > v) v = s2[i];
                s2[i] = v;
            }
            p[i] = x - lr_t * s0[i] / (R_SQRT(v) + eps);
        }
        break;
    }
    case OPT_RMSPROP: {
        const bp_real rho = k->rho, crho = k->crho;
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            s0[i] = rho * s0[i] + crho * (g[i] * g[i]);
            p[i] = keep * p[i] - lr * g[i] / R_SQRT(s0[i] + eps);
        }
        break;
    }
    case OPT_ADAGRAD:
#pragma omp parallel for schedule(static) if (n >= OPTIM_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            s0[i] = s0[i] + g[i] * g[i];
            p[i] = keep * p[i] - lr * g[i] / R_SQRT(s0[i] + eps);
        }
        break;
    }
}

static bp_real *slot_data(const optim *o, size_t i, int s)
{
    return s < o->n_slots ? bp_tensor_reals(o->slots[i * MAX_SLOTS + s]->value) : NULL;
}

/* The step itself, once every gradient has been checked. */
static bp_status optim_step(optim *o, bp_tensor *const *grads)
{
    double lr;
    BP_TRY(bp_scheduler_lr(o->lr, &lr));
    step_coef k = {0};
    k.lr = (bp_real)lr;
    k.keep = (bp_real)(1.0 - o->weight_decay);
    k.mu = (bp_real)o->momentum;
    k.b1 = (bp_real)o->beta1;
    k.c1 = (bp_real)(1.0 - o->beta1);
    k.b2 = (bp_real)o->beta2;
    k.c2 = (bp_real)(1.0 - o->beta2);
    k.eps = (bp_real)o->eps;
    k.rho = (bp_real)o->rho;
    k.crho = (bp_real)(1.0 - o->rho);
    if (o->step) {
        /* BrainPy 2.8.2: the optimizer's own counter, t = 1 on the first update. */
        int64_t t = (int64_t)bp_tensor_get(o->step->value, 0) + 1;
        bp_tensor_set(o->step->value, 0, (double)t);
        double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
        if (o->kind == OPT_ADAM) {
            double lr_t = lr / bc1; /* BrainPy's Adam: lr /= bc1; lr *= sqrt(bc2) */
            k.lr_t = (bp_real)(lr_t * sqrt(bc2));
        } else {
            k.lr_t = (bp_real)(lr * sqrt(bc2) / bc1);
            k.decoupled = o->weight_decay != 0.0;
            k.decay = (bp_real)(1.0 - lr * o->weight_decay);
        }
    }
    for (size_t i = 0; i < o->n; i++) {
        bp_tensor *p = o->params[i]->value;
        apply_rule(o, &k, p->numel, bp_tensor_reals(p), bp_tensor_creals(grads[i]), slot_data(o, i, 0),
                   slot_data(o, i, 1), slot_data(o, i, 2));
    }
    return bp_scheduler_step_call(o->lr);
}

/* Checks one gradient against its var. */
static bp_status check_grad(const optim *o, size_t i, const bp_tensor *g)
{
    const bp_tensor *x = o->params[i]->value;
    char a[96], b[96];
    if (!bp_tensor_same_shape(g, x))
        return bp_fail(BP_ESHAPE, "%s: the gradient of \"%s\" has shape %s, the variable has %s",
                       bp_node_name(&o->base), o->keys[i], bp_shape_str(a, sizeof a, g->ndim, g->shape),
                       bp_shape_str(b, sizeof b, x->ndim, x->shape));
    if (g->dtype != x->dtype)
        return bp_fail(BP_EDTYPE, "%s: the gradient of \"%s\" is %s, the variable is %s", bp_node_name(&o->base),
                       o->keys[i], bp_dtype_name(g->dtype), bp_dtype_name(x->dtype));
    /* The kernels read g while writing p (restrict): the two must not share memory. */
    if (g->data == x->data && x->numel > 0)
        return bp_fail(BP_EINVAL, "%s: the gradient of \"%s\" is the variable's own value", bp_node_name(&o->base),
                       o->keys[i]);
    return BP_OK;
}

/* Runs a step over grads (o->n entries) after checking them all. */
static bp_status checked_step(optim *o, bp_tensor **grads)
{
    for (size_t i = 0; i < o->n; i++) BP_TRY(check_grad(o, i, grads[i]));
    return optim_step(o, grads);
}

bp_status bp_optim_update(bp_node *n)
{
    optim *o = NULL;
    BP_TRY(as_optim("optim_update", n, &o));
    bp_tensor **grads = malloc(sizeof *grads * (o->n ? o->n : 1));
    if (!grads) return bp_fail(BP_ENOMEM, "%s: out of memory", bp_node_name(n));
    bp_status st = BP_OK;
    for (size_t i = 0; i < o->n && !st; i++) {
        grads[i] = o->params[i]->grad;
        if (!grads[i])
            st = bp_fail(BP_EINVAL,
                         "%s: train var \"%s\" is a %s, which carries no grad; pass its gradient with "
                         "bp_optim_update_with",
                         bp_node_name(n), o->keys[i], bp_var_kind_name(o->params[i]->kind));
    }
    if (!st) st = checked_step(o, grads);
    free(grads);
    return st;
}

bp_status bp_optim_update_with(bp_node *n, const bp_dict *d)
{
    optim *o = NULL;
    BP_TRY(as_optim("optim_update_with", n, &o));
    const char *who = bp_node_name(n);
    if (!d) return bp_fail(BP_EINVAL, "%s: grads is NULL", who);
    if (bp_dict_len(d) != o->n)
        return bp_fail(BP_EINVAL,
                       "%s: The length of \"grads\" must be equal to \"self.vars_to_train\", while we got %zu != %zu!",
                       who, bp_dict_len(d), o->n);
    bp_tensor **grads = malloc(sizeof *grads * (o->n ? o->n : 1));
    if (!grads) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    bp_status st = BP_OK;
    for (size_t i = 0; i < o->n && !st; i++) {
        grads[i] = bp_dict_get_tensor(d, o->keys[i]);
        if (grads[i]) continue;
        if (bp_dict_get_dict(d, o->keys[i])) {
            st = bp_fail(BP_EINVAL, "%s: grads[\"%s\"] is a dict, expected a tensor", who, o->keys[i]);
            break;
        }
        /* Same count, a key missing: name the stranger grads holds instead. */
        const char *stranger = "";
        for (size_t j = 0; j < bp_dict_len(d) && !*stranger; j++)
            if (find_key(o, bp_dict_key(d, j)) < 0) stranger = bp_dict_key(d, j);
        st = bp_fail(BP_ENOTFOUND, "%s: grads has no entry for the train var \"%s\" (it has \"%s\", which is not a "
                     "registered train var)", who, o->keys[i], stranger);
    }
    if (!st) st = checked_step(o, grads);
    free(grads);
    return st;
}

/* --------------------------------------------------------------- accessors */

bp_status bp_optim_lr(const bp_node *n, double *out)
{
    optim *o = NULL;
    if (!out) return bp_fail(BP_EINVAL, "optim_lr: out is NULL");
    BP_TRY(as_optim("optim_lr", n, &o));
    return bp_scheduler_lr(o->lr, out);
}

bp_node *bp_optim_scheduler(const bp_node *n) { return bp_is_optimizer(n) ? ((const optim *)n)->lr : NULL; }

size_t bp_optim_num_train_vars(const bp_node *n) { return bp_is_optimizer(n) ? ((const optim *)n)->n : 0; }

const char *bp_optim_train_key(const bp_node *n, size_t i)
{
    return bp_is_optimizer(n) && i < ((const optim *)n)->n ? ((const optim *)n)->keys[i] : NULL;
}

bp_var *bp_optim_train_var(const bp_node *n, size_t i)
{
    return bp_is_optimizer(n) && i < ((const optim *)n)->n ? ((const optim *)n)->params[i] : NULL;
}

/* ------------------------------------------------------------ construction */

/* Every optimizer's options, flattened. */
typedef struct optim_cfg {
    optim_kind kind;
    double lr;
    bp_node *lr_scheduler;
    const bp_collector *train_vars;
    double weight_decay;
    const char *name;
    double momentum, beta1, beta2, eps, rho;
    bool amsgrad;
} optim_cfg;

#define CFG_COMMON(K, O)                                                                                    \
    .kind = (K), .lr = (O)->lr, .lr_scheduler = (O)->lr_scheduler, .train_vars = (O)->train_vars,           \
    .weight_decay = (O)->weight_decay, .name = (O)->name

static bp_status check_common(const char *who, const optim_cfg *c)
{
    if (c->lr_scheduler) {
        if (!isnan(c->lr))
            return bp_fail(BP_EINVAL, "%s: give lr (%g) or lr_scheduler (%s), not both", who, c->lr,
                           bp_node_name(c->lr_scheduler));
        if (!bp_is_scheduler(c->lr_scheduler))
            return bp_fail(BP_EINVAL, "%s: lr_scheduler %s (a %s) is not a learning-rate scheduler", who,
                           bp_node_name(c->lr_scheduler), bp_node_class_name(c->lr_scheduler));
    } else if (!isfinite(c->lr)) {
        return bp_fail(BP_EINVAL, "%s: lr is required: set opts.lr to a finite number or opts.lr_scheduler to a "
                       "scheduler, got lr = %g", who, c->lr);
    }
    if (!(c->weight_decay >= 0.0 && c->weight_decay <= 1.0))
        return bp_fail(BP_EINVAL, "%s: weight_decay must be a float in [0, 1], got %g", who, c->weight_decay);
    return BP_OK;
}

static bp_status check_betas_eps(const char *who, const optim_cfg *c)
{
    if (!(c->eps >= 0.0) || !isfinite(c->eps)) return bp_fail(BP_EINVAL, "%s: Invalid epsilon value: %g", who, c->eps);
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0))
        return bp_fail(BP_EINVAL, "%s: Invalid beta parameter at index 0: %g", who, c->beta1);
    if (!(c->beta2 >= 0.0 && c->beta2 < 1.0))
        return bp_fail(BP_EINVAL, "%s: Invalid beta parameter at index 1: %g", who, c->beta2);
    return BP_OK;
}

static bp_status check_kind(const char *who, const optim_cfg *c)
{
    switch (c->kind) {
    case OPT_MOMENTUM:
    case OPT_NESTEROV:
        if (!(c->momentum >= 0.0) || !isfinite(c->momentum))
            return bp_fail(BP_EINVAL, "%s: momentum must be a finite value >= 0, got %g", who, c->momentum);
        return BP_OK;
    case OPT_ADAM:
    case OPT_ADAMW:
        return check_betas_eps(who, c);
    case OPT_RMSPROP:
    case OPT_ADAGRAD:
        if (!(c->eps >= 0.0) || !isfinite(c->eps))
            return bp_fail(BP_EINVAL, "%s: Invalid epsilon value: %g", who, c->eps);
        if (c->kind == OPT_RMSPROP && !(c->rho >= 0.0 && c->rho <= 1.0))
            return bp_fail(BP_EINVAL, "%s: rho must be in [0, 1], got %g", who, c->rho);
        return BP_OK;
    case OPT_SGD:
        return BP_OK;
    }
    return BP_OK;
}

static bp_status optim_build(optim *o, const optim_cfg *c)
{
    bp_node *n = &o->base;
    if (c->lr_scheduler) {
        BP_TRY(bp_node_add_child(n, "lr", c->lr_scheduler));
        o->lr = c->lr_scheduler;
    } else {
        bp_node *s;
        BP_TRY(bp_scheduler_constant_new(&s, c->lr));
        bp_status st = bp_node_add_child(n, "lr", s);
        bp_node_free(s); /* the optimizer holds it now (or it dies here) */
        if (st) return st;
        o->lr = s;
    }
    if (c->kind == OPT_ADAM || c->kind == OPT_ADAMW) {
        bp_tensor *t;
        BP_TRY(bp_tensor_new(&t, BP_INT64, 0, NULL));
        bp_status st = bp_node_add_var(n, "step", BP_VARIABLE, t, &o->step);
        bp_tensor_free(t);
        if (st) return st;
    }
    return bp_optim_register_train_vars(n, c->train_vars);
}

static bp_status optim_new(bp_node **out, const optim_cfg *c)
{
    const char *who = c->name ? c->name : optim_classes[c->kind]->name;
    BP_TRY(check_common(who, c));
    BP_TRY(check_kind(who, c));
    bp_node *n;
    BP_TRY(bp_node_create(&n, optim_classes[c->kind], c->name, NULL));
    optim *o = (optim *)n;
    o->kind = c->kind;
    o->weight_decay = c->weight_decay;
    o->momentum = c->momentum;
    o->beta1 = c->beta1;
    o->beta2 = c->beta2;
    o->eps = c->eps;
    o->rho = c->rho;
    o->amsgrad = c->amsgrad;
    switch (c->kind) {
    case OPT_SGD:
        o->n_slots = 0;
        break;
    case OPT_MOMENTUM:
    case OPT_NESTEROV:
        o->n_slots = 1;
        o->suffix[0] = "_v";
        break;
    case OPT_ADAM:
    case OPT_ADAMW:
        o->n_slots = c->amsgrad ? 3 : 2;
        o->suffix[0] = "_m";
        o->suffix[1] = "_v";
        o->suffix[2] = "_vmax";
        break;
    case OPT_RMSPROP:
    case OPT_ADAGRAD:
        o->n_slots = 1;
        o->suffix[0] = "_cache";
        break;
    }
    bp_status st = optim_build(o, c);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

#define NEW_PROLOGUE(NAME)                                                                  \
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", NAME);                           \
    *out = NULL;                                                                            \
    if (!o) return bp_fail(BP_EINVAL, "%s: opts is NULL (lr is required; start from the "  \
                           "defaults function)", NAME)

bp_status bp_sgd_new(bp_node **out, const bp_sgd_opts *o)
{
    NEW_PROLOGUE("SGD");
    optim_cfg c = {CFG_COMMON(OPT_SGD, o)};
    return optim_new(out, &c);
}

bp_status bp_momentum_new(bp_node **out, const bp_momentum_opts *o)
{
    NEW_PROLOGUE("Momentum");
    optim_cfg c = {CFG_COMMON(OPT_MOMENTUM, o), .momentum = o->momentum};
    return optim_new(out, &c);
}

bp_status bp_momentum_nesterov_new(bp_node **out, const bp_momentum_opts *o)
{
    NEW_PROLOGUE("MomentumNesterov");
    optim_cfg c = {CFG_COMMON(OPT_NESTEROV, o), .momentum = o->momentum};
    return optim_new(out, &c);
}

bp_status bp_adam_new(bp_node **out, const bp_adam_opts *o)
{
    NEW_PROLOGUE("Adam");
    optim_cfg c = {CFG_COMMON(OPT_ADAM, o), .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps};
    return optim_new(out, &c);
}

bp_status bp_adamw_new(bp_node **out, const bp_adamw_opts *o)
{
    NEW_PROLOGUE("AdamW");
    optim_cfg c = {CFG_COMMON(OPT_ADAMW, o), .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
                   .amsgrad = o->amsgrad};
    return optim_new(out, &c);
}

bp_status bp_rmsprop_new(bp_node **out, const bp_rmsprop_opts *o)
{
    NEW_PROLOGUE("RMSProp");
    optim_cfg c = {CFG_COMMON(OPT_RMSPROP, o), .eps = o->epsilon, .rho = o->rho};
    return optim_new(out, &c);
}

bp_status bp_adagrad_new(bp_node **out, const bp_adagrad_opts *o)
{
    NEW_PROLOGUE("Adagrad");
    optim_cfg c = {CFG_COMMON(OPT_ADAGRAD, o), .eps = o->epsilon};
    return optim_new(out, &c);
}
