/* tests/test_optim.c — the optimizers: 20-step trajectories on a fixed
 * quadratic and on a tiny linear net against float64 references
 * (tests/data/optim_quadratic.txt, optim_tinynet.txt, written by
 * tests/gen_optim.py from BrainPy 2.8.2's formulas), final slot values, the
 * lr each update used, vars() / state_dict keys, a checkpoint round trip, and
 * every error path. Built in both flavours (BPC_TEST_BOTH_FLAVOURS): as
 * test_optim_f64 it runs the same trajectories in float64 with a tight
 * tolerance of 1e-12 of each tensor's scale (see TRAJ_TOL for why).
 *
 * The gradients are computed here by hand (the quadratic: a*p + b; the net:
 * y = x W + b, loss mean((y - t)^2), dW = x^T dy, db = sum_rows dy with
 * dy = 2 (y - t) / 10), in double from the current parameter values. */
#include "bp_test.h"
#include "fixture.h"
#include <stdlib.h>
#include <bpc/optimizer.h>
#include <bpc/state.h>

#define STEPS 20

/* Tolerance on every trajectory value, relative to the largest magnitude in
 * that tensor's reference trajectory (so an entry passing near zero is judged
 * at the scale it lives at); slots likewise, at the largest magnitude the
 * slot reached during the run.
 * float64: the C code does the reference's operations in the same order;
 *   only libm's pow/sqrt against NumPy's (<= 1 ulp) and the summation order
 *   of the net's 3- and 5-term dot products may differ, ~1e-16 per step.
 *   Measured: 0 on the quadratic, 6e-16 on the net; 1e-12 leaves room for
 *   another libm while still catching any change of formula.
 * float32: each element takes ~8 roundings per step (unit roundoff
 *   u = 6e-8); lr, the hyperparameters and the gradients are rounded too.
 *   Independent roundings add up like a random walk, sqrt(20 steps * 8) ~ 13 u,
 *   and re-enter through the gradient with a gain of at most ~4 here
 *   (a*lr <= 0.4 for the quadratic; Adam's steps are bounded by
 *   lr_t*(1-beta1)/sqrt(1-beta2)), so ~3e-6 of the scale. Measured: 6e-7. */
#ifdef BP_REAL_DOUBLE
#define TRAJ_TOL 1e-12
#else
#define TRAJ_TOL 5e-6
#endif

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_clear_error();
    return 0;
}

/* ------------------------------------------------------------ test models */

static const bp_node_class quad_class = {.name = "Quad", .size = sizeof(bp_node)};
static const bp_node_class tiny_class = {.name = "TinyLinear", .size = sizeof(bp_node)};

static bp_tensor *tensor_from_fx(const fx_tensor *f)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, f->ndim, f->shape));
    for (int64_t i = 0; i < t->numel; i++) bp_tensor_set(t, i, f->data[i]);
    return t;
}

/* A node holding TrainVars named names[0..n) initialised from fixture "init_<name>". */
static bp_node *model_new(const bp_node_class *cls, const fx_file *f, const char *const *names, int n)
{
    bp_node *m;
    BP_OK_OR_FAIL(bp_node_create(&m, cls, NULL, NULL));
    for (int i = 0; i < n; i++) {
        char fx[64];
        snprintf(fx, sizeof fx, "init_%s", names[i]);
        const fx_tensor *init = fx_get(f, fx);
        assert_non_null(init);
        bp_tensor *t = tensor_from_fx(init);
        BP_OK_OR_FAIL(bp_node_add_var(m, names[i], BP_TRAINVAR, t, NULL));
        bp_tensor_free(t);
    }
    return m;
}

static const char *const quad_names[] = {"p1", "p2"};
static const char *const net_names[] = {"W", "b"};

/* Gradients of the quadratic: g = a*p + b, per parameter. */
static void quad_grads(const fx_file *coef, bp_node *m, bp_tensor **g)
{
    for (int k = 0; k < 2; k++) {
        char an[16], bn[16];
        snprintf(an, sizeof an, "a_%s", quad_names[k]);
        snprintf(bn, sizeof bn, "b_%s", quad_names[k]);
        const fx_tensor *a = fx_get(coef, an), *b = fx_get(coef, bn);
        const bp_tensor *p = bp_node_var(m, quad_names[k])->value;
        for (int64_t i = 0; i < p->numel; i++) bp_tensor_set(g[k], i, a->data[i] * bp_tensor_get(p, i) + b->data[i]);
    }
}

/* Gradients of mean((x W + b - t)^2) over the 5x2 outputs. */
static void net_grads(const fx_file *coef, bp_node *m, bp_tensor **g)
{
    const fx_tensor *x = fx_get(coef, "net_x"), *t = fx_get(coef, "net_t");
    const bp_tensor *W = bp_node_var(m, "W")->value, *b = bp_node_var(m, "b")->value;
    double dy[5][2];
    for (int r = 0; r < 5; r++)
        for (int o = 0; o < 2; o++) {
            double y = 0;
            for (int i = 0; i < 3; i++) y += x->data[r * 3 + i] * bp_tensor_get(W, i * 2 + o);
            y += bp_tensor_get(b, o);
            dy[r][o] = 2.0 * (y - t->data[r * 2 + o]) / 10.0;
        }
    for (int i = 0; i < 3; i++)
        for (int o = 0; o < 2; o++) {
            double s = 0;
            for (int r = 0; r < 5; r++) s += x->data[r * 3 + i] * dy[r][o];
            bp_tensor_set(g[0], i * 2 + o, s);
        }
    for (int o = 0; o < 2; o++) {
        double s = 0;
        for (int r = 0; r < 5; r++) s += dy[r][o];
        bp_tensor_set(g[1], o, s);
    }
}

/* ------------------------------------------------------- the configurations */

/* As gen_optim.py's CONFIGS. NaN = the optimizer's default. */
typedef struct cfg {
    const char *name;
    const char *kind;
    double lr;
    int sched;         /* 0: lr is a number; 1: ExponentialDecayLR(0.2, 4, 0.5); 2: StepLR(0.1, 2, 0.5) */
    double wd;
    double momentum, beta1, beta2, eps, rho;
    bool amsgrad;
    int epoch_every;   /* step_epoch after every that many updates (0: never) */
} cfg;

#define D NAN
static const cfg CONFIGS[] = {
    {"sgd", "sgd", 0.1, 0, D, D, D, D, D, D, false, 0},
    {"sgd_wd", "sgd", 0.1, 0, 0.05, D, D, D, D, D, false, 0},
    {"momentum", "momentum", 0.05, 0, D, D, D, D, D, D, false, 0},
    {"momentum_wd", "momentum", 0.05, 0, 0.02, 0.8, D, D, D, D, false, 0},
    {"nesterov", "nesterov", 0.05, 0, D, D, D, D, D, D, false, 0},
    {"nesterov_wd", "nesterov", 0.05, 0, 0.02, 0.7, D, D, D, D, false, 0},
    {"adam", "adam", 0.1, 0, D, D, D, D, D, D, false, 0},
    {"adam_wd", "adam", 0.1, 0, 0.01, D, 0.8, 0.99, 1e-6, D, false, 0},
    {"adamw", "adamw", 0.1, 0, D, D, D, D, D, D, false, 0},
    {"adamw_ams", "adamw", 0.1, 0, 0.05, D, D, 0.9, D, D, true, 0},
    {"adamw_nowd", "adamw", 0.1, 0, 0.0, D, 0.5, D, D, D, false, 0},
    {"rmsprop", "rmsprop", 0.01, 0, D, D, D, D, D, D, false, 0},
    {"rmsprop_wd", "rmsprop", 0.01, 0, 0.01, D, D, D, 1e-4, 0.5, false, 0},
    {"adagrad", "adagrad", 0.3, 0, D, D, D, D, D, D, false, 0},
    {"adagrad_wd", "adagrad", 0.3, 0, 0.02, D, D, D, 1e-3, D, false, 0},
    {"sgd_expdecay", "sgd", D, 1, D, D, D, D, D, D, false, 0},
    {"adam_steplr", "adam", D, 2, D, D, D, D, D, D, false, 5},
};
#undef D
#define N_CONFIGS (sizeof CONFIGS / sizeof CONFIGS[0])

#define SET_IF(field, v) \
    if (!isnan(v)) o.field = (v)

#define SET_COMMON()                            \
    o.lr = c->lr;                               \
    o.lr_scheduler = sched;                     \
    o.train_vars = tv;                          \
    SET_IF(weight_decay, c->wd)

/* Builds the optimizer of c over tv. */
static bp_node *make_opt(const cfg *c, const bp_collector *tv)
{
    bp_node *sched = NULL, *opt = NULL;
    if (c->sched == 1) BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&sched, 0.2, 4, 0.5, -1, -1));
    if (c->sched == 2) BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&sched, 0.1, 2, 0.5, -1));
    if (!strcmp(c->kind, "sgd")) {
        bp_sgd_opts o = bp_sgd_defaults();
        SET_COMMON();
        BP_OK_OR_FAIL(bp_sgd_new(&opt, &o));
    } else if (!strcmp(c->kind, "momentum") || !strcmp(c->kind, "nesterov")) {
        bool nest = !strcmp(c->kind, "nesterov");
        bp_momentum_opts o = nest ? bp_momentum_nesterov_defaults() : bp_momentum_defaults();
        SET_COMMON();
        SET_IF(momentum, c->momentum);
        BP_OK_OR_FAIL(nest ? bp_momentum_nesterov_new(&opt, &o) : bp_momentum_new(&opt, &o));
    } else if (!strcmp(c->kind, "adam")) {
        bp_adam_opts o = bp_adam_defaults();
        SET_COMMON();
        SET_IF(beta1, c->beta1);
        SET_IF(beta2, c->beta2);
        SET_IF(eps, c->eps);
        BP_OK_OR_FAIL(bp_adam_new(&opt, &o));
    } else if (!strcmp(c->kind, "adamw")) {
        bp_adamw_opts o = bp_adamw_defaults();
        SET_COMMON();
        SET_IF(beta1, c->beta1);
        SET_IF(beta2, c->beta2);
        SET_IF(eps, c->eps);
        o.amsgrad = c->amsgrad;
        BP_OK_OR_FAIL(bp_adamw_new(&opt, &o));
    } else if (!strcmp(c->kind, "rmsprop")) {
        bp_rmsprop_opts o = bp_rmsprop_defaults();
        SET_COMMON();
        SET_IF(epsilon, c->eps);
        SET_IF(rho, c->rho);
        BP_OK_OR_FAIL(bp_rmsprop_new(&opt, &o));
    } else {
        bp_adagrad_opts o = bp_adagrad_defaults();
        SET_COMMON();
        SET_IF(epsilon, c->eps);
        BP_OK_OR_FAIL(bp_adagrad_new(&opt, &o));
    }
    bp_node_free(sched); /* the optimizer holds its own reference */
    return opt;
}

/* max |ref| over a fixture tensor's entries (at least 1e-30). */
static double ref_scale(const double *ref, int64_t n)
{
    double s = 1e-30;
    for (int64_t i = 0; i < n; i++)
        if (fabs(ref[i]) > s) s = fabs(ref[i]);
    return s;
}

static void expect_close(const char *what, const char *cfgname, int step, const bp_tensor *got, const double *ref,
                         double scale)
{
    for (int64_t i = 0; i < got->numel; i++) {
        double g = bp_tensor_get(got, i);
        if (!(fabs(g - ref[i]) <= TRAJ_TOL * scale))
            fail_msg("%s %s step %d [%lld]: %.17g, expected %.17g (|diff|/scale %.3g > %g)", cfgname, what, step,
                     (long long)i, g, ref[i], fabs(g - ref[i]) / scale, TRAJ_TOL);
    }
}

typedef void (*grad_fn)(const fx_file *coef, bp_node *m, bp_tensor **g);

/* Runs every configuration on one problem; grads come from the vars
 * (bp_optim_update) or from a dict (bp_optim_update_with). */
static void run_problem(const char *fixture, const bp_node_class *cls, const char *const *names, grad_fn grads,
                        bool use_dict)
{
    fx_file *f = fx_load(fixture), *coef = fx_load("optim_quadratic_coef.txt");
    assert_non_null(f);
    assert_non_null(coef);
    for (size_t ci = 0; ci < N_CONFIGS; ci++) {
        const cfg *c = &CONFIGS[ci];
        bp_node *m = model_new(cls, f, names, 2);
        bp_collector *tv, *tvu;
        BP_OK_OR_FAIL(bp_node_train_vars(m, NULL, &tv));
        BP_OK_OR_FAIL(bp_collector_unique(tv, &tvu));
        bp_collector_free(tv);
        bp_node *opt = make_opt(c, tvu);
        assert_int_equal(bp_optim_num_train_vars(opt), 2);

        const fx_tensor *traj[2], *lrs;
        char nm[96];
        for (int k = 0; k < 2; k++) {
            snprintf(nm, sizeof nm, "%s_%s", c->name, names[k]);
            traj[k] = fx_get(f, nm);
            assert_non_null(traj[k]);
        }
        snprintf(nm, sizeof nm, "%s_lr", c->name);
        lrs = fx_get(f, nm);
        assert_non_null(lrs);

        bp_tensor *g[2];
        for (int k = 0; k < 2; k++) {
            const bp_tensor *p = bp_node_var(m, names[k])->value;
            if (use_dict)
                BP_OK_OR_FAIL(bp_tensor_new(&g[k], BP_REAL_DTYPE, p->ndim, p->shape));
            else
                g[k] = bp_tensor_retain(bp_node_var(m, names[k])->grad);
        }
        for (int s = 0; s < STEPS; s++) {
            double lr;
            BP_OK_OR_FAIL(bp_optim_lr(opt, &lr));
            BP_ASSERT_CLOSE(lr, lrs->data[s], 0, 1e-14);
            grads(coef, m, g);
            if (use_dict) {
                bp_dict *d;
                BP_OK_OR_FAIL(bp_dict_new(&d));
                for (int k = 0; k < 2; k++) BP_OK_OR_FAIL(bp_dict_set_tensor(d, bp_collector_key(tvu, k), g[k]));
                BP_OK_OR_FAIL(bp_optim_update_with(opt, d));
                bp_dict_free(d);
            } else {
                BP_OK_OR_FAIL(bp_optim_update(opt));
            }
            if (c->epoch_every && (s + 1) % c->epoch_every == 0)
                BP_OK_OR_FAIL(bp_scheduler_step_epoch(bp_optim_scheduler(opt)));
            for (int k = 0; k < 2; k++) {
                const bp_tensor *p = bp_node_var(m, names[k])->value;
                expect_close(names[k], c->name, s + 1, p, traj[k]->data + (s + 1) * p->numel,
                             ref_scale(traj[k]->data, traj[k]->numel));
            }
        }
        for (int k = 0; k < 2; k++) bp_tensor_free(g[k]);

        /* Final slots, found through the optimizer's vars() under "<opt>.<trainkey><suffix>". */
        bp_collector *ov;
        BP_OK_OR_FAIL(bp_node_vars(opt, NULL, &ov));
        size_t n_slots = 0, n_ref = 0;
        char prefix[96];
        snprintf(prefix, sizeof prefix, "%s.%s.", bp_node_name(opt), bp_node_name(m));
        for (size_t i = 0; i < bp_collector_len(ov); i++) {
            const char *key = bp_collector_key(ov, i);
            if (strncmp(key, prefix, strlen(prefix)) != 0) continue;
            snprintf(nm, sizeof nm, "%s_slot_%s", c->name, key + strlen(prefix));
            const fx_tensor *ref = fx_get(f, nm);
            if (!ref) fail_msg("%s: vars() has %s, which the reference lacks", c->name, key);
            /* A slot's errors live at the largest magnitude it had during the run, not at its
             * final value, which may be a small difference of large terms (m near convergence). */
            snprintf(nm, sizeof nm, "%s_slotscale_%s", c->name, key + strlen(prefix));
            const fx_tensor *scale = fx_get(f, nm);
            assert_non_null(scale);
            expect_close(key, c->name, STEPS, bp_collector_var(ov, i)->value, ref->data, scale->data[0]);
            n_slots++;
        }
        snprintf(nm, sizeof nm, "%s_slot_", c->name);
        for (size_t i = 0; i < f->n; i++) n_ref += strncmp(f->t[i].name, nm, strlen(nm)) == 0;
        assert_int_equal(n_slots, n_ref);
        bp_var *step = bp_node_var(opt, "step");
        if (!strncmp(c->kind, "adam", 4)) {
            assert_non_null(step);
            assert_int_equal(((const int64_t *)step->value->data)[0], STEPS);
        } else {
            assert_null(step);
        }
        bp_collector_free(ov);
        bp_collector_free(tvu);
        bp_node_free(opt);
        bp_node_free(m);
    }
    fx_free(f);
    fx_free(coef);
}

static void test_quadratic_trajectories(void **state)
{
    (void)state;
    run_problem("optim_quadratic.txt", &quad_class, quad_names, quad_grads, false);
}

static void test_tinynet_trajectories(void **state)
{
    (void)state;
    run_problem("optim_tinynet.txt", &tiny_class, net_names, net_grads, true);
}

/* ------------------------------------------------------------ vars and keys */

static bp_node *quad_new(void)
{
    fx_file *f = fx_load("optim_quadratic.txt");
    assert_non_null(f);
    bp_node *m = model_new(&quad_class, f, quad_names, 2);
    fx_free(f);
    return m;
}

static bp_collector *train_vars_of(bp_node *m)
{
    bp_collector *tv, *u;
    BP_OK_OR_FAIL(bp_node_train_vars(m, NULL, &tv));
    BP_OK_OR_FAIL(bp_collector_unique(tv, &u));
    bp_collector_free(tv);
    return u;
}

static void expect_keys(bp_node *n, const char *const *want, size_t count)
{
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &v));
    if (bp_collector_len(v) != count) {
        for (size_t i = 0; i < bp_collector_len(v); i++) print_message("  %s\n", bp_collector_key(v, i));
        fail_msg("%s: %zu vars, expected %zu", bp_node_name(n), bp_collector_len(v), count);
    }
    for (size_t i = 0; i < count; i++) assert_string_equal(bp_collector_key(v, i), want[i]);
    bp_collector_free(v);
}

static void test_vars_and_state_dict(void **state)
{
    (void)state;
    bp_node *m = quad_new();
    assert_string_equal(bp_node_name(m), "Quad0");
    bp_collector *tv = train_vars_of(m);

    bp_adam_opts ao = bp_adam_defaults();
    ao.lr = 0.1;
    ao.train_vars = tv;
    bp_node *adam;
    BP_OK_OR_FAIL(bp_adam_new(&adam, &ao));
    const char *adam_keys[] = {"Adam0.step",        "Adam0.Quad0.p1_m", "Adam0.Quad0.p2_m",
                               "Adam0.Quad0.p1_v",  "Adam0.Quad0.p2_v", "Constant0.last_epoch"};
    expect_keys(adam, adam_keys, 6);
    bp_var *step = bp_node_var(adam, "step");
    assert_int_equal(step->value->dtype, BP_INT64);
    assert_int_equal(step->value->ndim, 0);
    assert_int_equal(((const int64_t *)step->value->data)[0], 0);
    /* The registered vars keep their keys and are not the optimizer's vars. */
    assert_int_equal(bp_optim_num_train_vars(adam), 2);
    assert_string_equal(bp_optim_train_key(adam, 0), "Quad0.p1");
    assert_string_equal(bp_optim_train_key(adam, 1), "Quad0.p2");
    assert_ptr_equal(bp_optim_train_var(adam, 1), bp_node_var(m, "p2"));
    assert_null(bp_optim_train_key(adam, 2));
    assert_null(bp_optim_train_var(adam, 2));
    assert_string_equal(bp_node_name(bp_optim_scheduler(adam)), "Constant0");
    /* Slots are zero Variables shaped as their parameter. */
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(adam, NULL, &v));
    bp_var *p1m = bp_collector_var(v, 1);
    assert_int_equal(p1m->kind, BP_VARIABLE);
    assert_true(bp_tensor_same_shape(p1m->value, bp_node_var(m, "p1")->value));
    for (int64_t i = 0; i < p1m->value->numel; i++) assert_true(bp_tensor_get(p1m->value, i) == 0.0);
    bp_collector_free(v);

    /* state_dict: one entry per node, the scheduler under its own name. */
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(adam, &sd));
    assert_int_equal(bp_dict_len(sd), 2);
    assert_string_equal(bp_dict_key(sd, 0), "Adam0");
    assert_string_equal(bp_dict_key(sd, 1), "Constant0");
    bp_dict *own = bp_dict_sub(sd, 0);
    assert_int_equal(bp_dict_len(own), 5);
    for (size_t i = 0; i < 5; i++) assert_string_equal(bp_dict_key(own, i), adam_keys[i]);
    assert_non_null(bp_dict_get_tensor(bp_dict_sub(sd, 1), "Constant0.last_epoch"));
    bp_dict_free(sd);

    /* AdamW with amsgrad and a call-based scheduler. */
    bp_node *sched;
    BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&sched, 0.1, 10, 0.9, -1, -1));
    bp_adamw_opts wo = bp_adamw_defaults();
    wo.lr_scheduler = sched;
    wo.amsgrad = true;
    wo.train_vars = tv;
    wo.name = "opt";
    bp_node *adamw;
    BP_OK_OR_FAIL(bp_adamw_new(&adamw, &wo));
    bp_node_free(sched);
    const char *adamw_keys[] = {"opt.step",           "opt.Quad0.p1_m",    "opt.Quad0.p2_m",
                                "opt.Quad0.p1_v",     "opt.Quad0.p2_v",    "opt.Quad0.p1_vmax",
                                "opt.Quad0.p2_vmax",  "ExponentialDecayLR0.last_epoch",
                                "ExponentialDecayLR0.last_call"};
    expect_keys(adamw, adamw_keys, 9);

    /* One slot each; SGD none, leaving only its Constant's counter. */
    bp_momentum_opts mo = bp_momentum_nesterov_defaults();
    mo.lr = 0.1;
    mo.train_vars = tv;
    bp_node *nest;
    BP_OK_OR_FAIL(bp_momentum_nesterov_new(&nest, &mo));
    const char *nest_keys[] = {"MomentumNesterov0.Quad0.p1_v", "MomentumNesterov0.Quad0.p2_v", "Constant1.last_epoch"};
    expect_keys(nest, nest_keys, 3);
    bp_rmsprop_opts ro = bp_rmsprop_defaults();
    ro.lr = 0.1;
    ro.train_vars = tv;
    bp_node *rms;
    BP_OK_OR_FAIL(bp_rmsprop_new(&rms, &ro));
    const char *rms_keys[] = {"RMSProp0.Quad0.p1_cache", "RMSProp0.Quad0.p2_cache", "Constant2.last_epoch"};
    expect_keys(rms, rms_keys, 3);
    bp_sgd_opts so = bp_sgd_defaults();
    so.lr = 0.1;
    so.train_vars = tv;
    bp_node *sgd;
    BP_OK_OR_FAIL(bp_sgd_new(&sgd, &so));
    const char *sgd_keys[] = {"Constant3.last_epoch"};
    expect_keys(sgd, sgd_keys, 1);
    bp_collector *nodes;
    BP_OK_OR_FAIL(bp_node_nodes(sgd, NULL, &nodes));
    assert_int_equal(bp_collector_len(nodes), 2);
    assert_string_equal(bp_collector_key(nodes, 0), "SGD0");
    assert_string_equal(bp_collector_key(nodes, 1), "Constant3");
    bp_collector_free(nodes);

    /* Registration in two calls: each call's slots together, in call order. */
    bp_node *m2 = quad_new();
    bp_collector *tv2 = train_vars_of(m2);
    bp_collect_opts rel = bp_collect_defaults();
    rel.method = BP_RELATIVE;
    bp_collector *r;
    BP_OK_OR_FAIL(bp_node_train_vars(m, &rel, &r)); /* keys "p1", "p2" */
    bp_adam_opts a2 = bp_adam_defaults();
    a2.lr = 0.1;
    a2.train_vars = r;
    bp_node *adam2;
    BP_OK_OR_FAIL(bp_adam_new(&adam2, &a2));
    BP_OK_OR_FAIL(bp_optim_register_train_vars(adam2, tv2));
    const char *two_keys[] = {"Adam1.step",          "Adam1.p1_m",          "Adam1.p2_m",
                              "Adam1.p1_v",          "Adam1.p2_v",          "Adam1.Quad1.p1_m",
                              "Adam1.Quad1.p2_m",    "Adam1.Quad1.p1_v",    "Adam1.Quad1.p2_v",
                              "Constant4.last_epoch"};
    expect_keys(adam2, two_keys, 10);
    assert_int_equal(bp_optim_num_train_vars(adam2), 4);
    assert_string_equal(bp_optim_train_key(adam2, 2), "Quad1.p1");
    bp_node_free(adam2);
    bp_collector_free(r);
    bp_collector_free(tv2);
    bp_node_free(m2);

    bp_node_free(sgd);
    bp_node_free(rms);
    bp_node_free(nest);
    bp_node_free(adamw);
    bp_node_free(adam);
    bp_collector_free(tv);
    bp_node_free(m);
}

/* Same var under two keys in one optimizer is refused (see test_register_errors);
 * a key registered twice to its own var is a no-op that keeps the slot state. */
static void test_register_twice_keeps_state(void **state)
{
    (void)state;
    bp_node *m = quad_new();
    bp_collector *tv = train_vars_of(m);
    bp_momentum_opts o = bp_momentum_defaults();
    o.lr = 0.5;
    o.train_vars = tv;
    bp_node *opt;
    BP_OK_OR_FAIL(bp_momentum_new(&opt, &o));
    bp_var_zero_grad(bp_node_var(m, "p2"));
    bp_tensor_fill(bp_node_var(m, "p1")->grad, 1.0);
    BP_OK_OR_FAIL(bp_optim_update(opt)); /* v = -0.5 for p1 */
    BP_OK_OR_FAIL(bp_optim_register_train_vars(opt, tv));
    BP_OK_OR_FAIL(bp_optim_register_train_vars(opt, NULL));
    assert_int_equal(bp_optim_num_train_vars(opt), 2);
    const char *keys[] = {"Momentum0.Quad0.p1_v", "Momentum0.Quad0.p2_v", "Constant0.last_epoch"};
    expect_keys(opt, keys, 3);
    bp_collector *v;
    BP_OK_OR_FAIL(bp_node_vars(opt, NULL, &v));
    assert_true(bp_tensor_get(bp_collector_var(v, 0)->value, 3) == -0.5);
    assert_true(bp_tensor_get(bp_collector_var(v, 1)->value, 3) == 0.0);
    bp_collector_free(v);
    /* p1 moved by v (hand-worked: 3 - 0.5 at index 3), p2 did not. */
    assert_true(bp_tensor_get(bp_node_var(m, "p1")->value, 3) == 2.5);
    assert_true(bp_tensor_get(bp_node_var(m, "p2")->value, 0) == 0.75);
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);
}

/* Hand-worked single steps of the rules BrainPy 2.8.2 changed: Adam's step
 * counter (t = 1 on the first update whatever the scheduler's epoch) and
 * Nesterov's look-ahead. */
static void test_hand_worked_steps(void **state)
{
    (void)state;
    bp_node *m = quad_new();
    bp_collector *tv = train_vars_of(m);
    bp_var *p2 = bp_node_var(m, "p2");
    bp_var_zero_grad(bp_node_var(m, "p1"));

    /* Nesterov, momentum 0.5, lr 0.25, g = 2 on p2 (0.75): v = -0.5, p += 0.5*v - 0.5 = -0.75 -> 0. */
    bp_momentum_opts no = bp_momentum_nesterov_defaults();
    no.lr = 0.25;
    no.momentum = 0.5;
    no.train_vars = tv;
    bp_node *nest;
    BP_OK_OR_FAIL(bp_momentum_nesterov_new(&nest, &no));
    bp_tensor_fill(p2->grad, 2.0);
    BP_OK_OR_FAIL(bp_optim_update(nest));
    assert_true(bp_tensor_get(p2->value, 0) == 0.0);
    /* Second step, same g: v = 0.5*-0.5 - 0.5 = -0.75; p += 0.5*-0.75 - 0.5 = -0.875. */
    BP_OK_OR_FAIL(bp_optim_update(nest));
    assert_true(bp_tensor_get(p2->value, 0) == -0.875);
    bp_node_free(nest);

    /* Adam, first step: m = 0.1 g, v = 0.001 g^2, lr_t = lr/0.1*sqrt(0.001),
     * so p -= lr * g/(|g| + eps/sqrt(0.001)) ~ lr * sign(g) for |g| >> eps. The
     * scheduler's epoch (last_epoch = 7 here) plays no part (HEAD, not LEGACY). */
    bp_node *sched;
    BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&sched, 0.125, 100, 0.5, 7));
    bp_adam_opts ao = bp_adam_defaults();
    ao.lr_scheduler = sched;
    ao.train_vars = tv;
    bp_node *adam;
    BP_OK_OR_FAIL(bp_adam_new(&adam, &ao));
    bp_node_free(sched);
    bp_tensor_fill(p2->grad, 4.0);
    double before = bp_tensor_get(p2->value, 1);
    BP_OK_OR_FAIL(bp_optim_update(adam));
    double want = before - 0.125 * 4.0 / (4.0 + 1e-8 / sqrt(0.001));
    BP_ASSERT_CLOSE(bp_tensor_get(p2->value, 1), want, 0, sizeof(bp_real) == 4 ? 1e-6 : 1e-15);
    assert_int_equal(((const int64_t *)bp_node_var(adam, "step")->value->data)[0], 1);
    bp_node_free(adam);

    bp_collector_free(tv);
    bp_node_free(m);
}

/* Hand-worked steps of each rule's fine points, from the written BrainPy 2.8.2
 * semantics (not from the code): weight decay as (1 - wd) * p, not scaled by
 * lr (SGD, Momentum, Adam, RMSProp, Adagrad); AdamW's p *= 1 - lr*wd with the
 * un-corrected lr; eps added to the un-corrected sqrt(v) (so a large eps
 * shows: PyTorch's sqrt(v_hat) + eps would give another value); Adam's bias
 * correction at t = 2; AMSGrad's running max; RMSProp's and Adagrad's eps
 * inside the square root; Adagrad's cache summing g^2 over steps. Each case
 * starts from p2[0] = 0.75 with a fresh optimizer over the quadratic's vars
 * (p1's gradient zero). */
#ifdef BP_REAL_DOUBLE
#define HAND_TOL 1e-15
#else
#define HAND_TOL 1e-6
#endif

/* Fills p2's gradient with g (p1's with 0) and runs one update. */
static void step_p2(bp_node *m, bp_node *opt, double g)
{
    bp_tensor_fill(bp_node_var(m, "p1")->grad, 0.0);
    bp_tensor_fill(bp_node_var(m, "p2")->grad, g);
    BP_OK_OR_FAIL(bp_optim_update(opt));
}

static void expect_p2(bp_node *m, double want, const char *what)
{
    double got = bp_tensor_get(bp_node_var(m, "p2")->value, 0);
    if (!(fabs(got - want) <= HAND_TOL * fmax(1.0, fabs(want))))
        fail_msg("%s: p2[0] = %.17g, expected %.17g", what, got, want);
}

static void test_hand_worked_rules(void **state)
{
    (void)state;
    bp_node *m, *opt;
    bp_collector *tv;

    /* SGD, lr 0.25, wd 0.5, g 2: (1 - 0.5) * 0.75 - 0.25 * 2 = -0.125 (lr*wd would give 0.40625). */
    m = quad_new();
    tv = train_vars_of(m);
    bp_sgd_opts so = bp_sgd_defaults();
    so.lr = 0.25;
    so.weight_decay = 0.5;
    so.train_vars = tv;
    BP_OK_OR_FAIL(bp_sgd_new(&opt, &so));
    step_p2(m, opt, 2.0);
    expect_p2(m, -0.125, "SGD wd");
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);

    /* Momentum 0.5, lr 0.25, wd 0.5, g 2 twice: v1 = -0.5, p1 = 0.375 - 0.5 = -0.125;
     * v2 = -0.25 - 0.5 = -0.75, p2 = -0.0625 - 0.75 = -0.8125. */
    m = quad_new();
    tv = train_vars_of(m);
    bp_momentum_opts mo = bp_momentum_defaults();
    mo.lr = 0.25;
    mo.momentum = 0.5;
    mo.weight_decay = 0.5;
    mo.train_vars = tv;
    BP_OK_OR_FAIL(bp_momentum_new(&opt, &mo));
    step_p2(m, opt, 2.0);
    expect_p2(m, -0.125, "Momentum wd step 1");
    step_p2(m, opt, 2.0);
    expect_p2(m, -0.8125, "Momentum wd step 2");
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);

    /* Adam, lr 0.125, eps 1, wd 0.5, g 4 then 2.
     * t = 1: m = 0.4, v = 0.016, lr_t = 0.125 / 0.1 * sqrt(0.001);
     *        p = 0.5 * 0.75 - lr_t * 0.4 / (sqrt(0.016) + 1).
     * t = 2: m = 0.36 + 0.2 = 0.56, v = 0.015984 + 0.004 = 0.019984,
     *        lr_t = 0.125 / 0.19 * sqrt(0.001999); p = 0.5 * p - lr_t * 0.56 / (sqrt(0.019984) + 1). */
    m = quad_new();
    tv = train_vars_of(m);
    bp_adam_opts ao = bp_adam_defaults();
    ao.lr = 0.125;
    ao.eps = 1.0;
    ao.weight_decay = 0.5;
    ao.train_vars = tv;
    BP_OK_OR_FAIL(bp_adam_new(&opt, &ao));
    step_p2(m, opt, 4.0);
    double p = 0.5 * 0.75 - 0.125 / 0.1 * sqrt(0.001) * 0.4 / (sqrt(0.016) + 1.0);
    expect_p2(m, p, "Adam t=1");
    step_p2(m, opt, 2.0);
    p = 0.5 * p - 0.125 / 0.19 * sqrt(0.001999) * 0.56 / (sqrt(0.019984) + 1.0);
    expect_p2(m, p, "Adam t=2");
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);

    /* AdamW with AMSGrad, lr 0.125, beta2 0.5, wd 0.5, eps 1, g 4 then 0.
     * t = 1: m = 0.4, v = 8, bc1 = 0.1, bc2 = 0.5;
     *        p = 0.75 * (1 - 0.0625) - 0.125 * sqrt(0.5) / 0.1 * 0.4 / (sqrt(8) + 1).
     * t = 2: m = 0.36, v = 4 < vmax = 8, so the denominator keeps sqrt(8) + 1; bc1 = 0.19, bc2 = 0.75;
     *        p = p * (1 - 0.0625) - 0.125 * sqrt(0.75) / 0.19 * 0.36 / (sqrt(8) + 1). */
    m = quad_new();
    tv = train_vars_of(m);
    bp_adamw_opts wo = bp_adamw_defaults();
    wo.lr = 0.125;
    wo.beta2 = 0.5;
    wo.eps = 1.0;
    wo.weight_decay = 0.5;
    wo.amsgrad = true;
    wo.train_vars = tv;
    BP_OK_OR_FAIL(bp_adamw_new(&opt, &wo));
    step_p2(m, opt, 4.0);
    p = 0.75 * (1 - 0.0625) - 0.125 * sqrt(0.5) / 0.1 * 0.4 / (sqrt(8.0) + 1.0);
    expect_p2(m, p, "AdamW amsgrad t=1");
    step_p2(m, opt, 0.0);
    p = p * (1 - 0.0625) - 0.125 * sqrt(0.75) / 0.19 * 0.36 / (sqrt(8.0) + 1.0);
    expect_p2(m, p, "AdamW amsgrad t=2");
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);

    /* RMSProp, lr 0.1, rho 0.5, epsilon 1, wd 0.5, g 2: c = 2, p = 0.375 - 0.2 / sqrt(3). */
    m = quad_new();
    tv = train_vars_of(m);
    bp_rmsprop_opts ro = bp_rmsprop_defaults();
    ro.lr = 0.1;
    ro.rho = 0.5;
    ro.epsilon = 1.0;
    ro.weight_decay = 0.5;
    ro.train_vars = tv;
    BP_OK_OR_FAIL(bp_rmsprop_new(&opt, &ro));
    step_p2(m, opt, 2.0);
    expect_p2(m, 0.375 - 0.2 / sqrt(3.0), "RMSProp");
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);

    /* Adagrad, lr 0.3, epsilon 1, g 2 twice: c = 4 then 8;
     * p = 0.75 - 0.6 / sqrt(5) - 0.6 / sqrt(9) = 0.55 - 0.6 / sqrt(5). */
    m = quad_new();
    tv = train_vars_of(m);
    bp_adagrad_opts go = bp_adagrad_defaults();
    go.lr = 0.3;
    go.epsilon = 1.0;
    go.train_vars = tv;
    BP_OK_OR_FAIL(bp_adagrad_new(&opt, &go));
    step_p2(m, opt, 2.0);
    step_p2(m, opt, 2.0);
    expect_p2(m, 0.55 - 0.6 / sqrt(5.0), "Adagrad");
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);
}

/* A tensor large enough for the kernels' OpenMP split (>= 32768 elements)
 * gives, element by element, the same bits as a small one updated by the
 * calling thread alone: element i of "big" mirrors element i % 7 of "small". */
static void test_parallel_split_matches_serial(void **state)
{
    (void)state;
    const int64_t nbig = 40000, nsmall = 7;
    bp_node *m;
    BP_OK_OR_FAIL(bp_node_create(&m, &quad_class, NULL, NULL));
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, &nbig));
    for (int64_t i = 0; i < nbig; i++) bp_tensor_set(t, i, 0.3 * (double)(i % nsmall) - 0.8);
    BP_OK_OR_FAIL(bp_node_add_var(m, "big", BP_TRAINVAR, t, NULL));
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, 1, &nsmall));
    for (int64_t i = 0; i < nsmall; i++) bp_tensor_set(t, i, 0.3 * (double)i - 0.8);
    BP_OK_OR_FAIL(bp_node_add_var(m, "small", BP_TRAINVAR, t, NULL));
    bp_tensor_free(t);
    bp_collector *tv = train_vars_of(m);
    bp_var *big = bp_node_var(m, "big"), *small = bp_node_var(m, "small");

    for (int kind = 0; kind < 3; kind++) {
        bp_node *opt;
        if (kind == 0) {
            bp_adamw_opts o = bp_adamw_defaults();
            o.lr = 0.05;
            o.amsgrad = true;
            o.train_vars = tv;
            BP_OK_OR_FAIL(bp_adamw_new(&opt, &o));
        } else if (kind == 1) {
            bp_momentum_opts o = bp_momentum_nesterov_defaults();
            o.lr = 0.05;
            o.weight_decay = 0.01;
            o.train_vars = tv;
            BP_OK_OR_FAIL(bp_momentum_nesterov_new(&opt, &o));
        } else {
            bp_rmsprop_opts o = bp_rmsprop_defaults();
            o.lr = 0.05;
            o.train_vars = tv;
            BP_OK_OR_FAIL(bp_rmsprop_new(&opt, &o));
        }
        for (int s = 0; s < 4; s++) {
            for (int64_t i = 0; i < nsmall; i++)
                bp_tensor_set(small->grad, i, 2.0 * bp_tensor_get(small->value, i) + 0.1 * (double)i);
            for (int64_t i = 0; i < nbig; i++)
                bp_tensor_set(big->grad, i, 2.0 * bp_tensor_get(big->value, i) + 0.1 * (double)(i % nsmall));
            BP_OK_OR_FAIL(bp_optim_update(opt));
        }
        const bp_real *b = bp_tensor_creals(big->value), *sm = bp_tensor_creals(small->value);
        for (int64_t i = 0; i < nbig; i++)
            if (b[i] != sm[i % nsmall]) fail_msg("kind %d: big[%lld] = %.9g, small = %.9g", kind, (long long)i,
                                                 (double)b[i], (double)sm[i % nsmall]);
        assert_true(sm[3] != (bp_real)(0.3 * 3 - 0.8)); /* it moved */
        bp_node_free(opt);
    }
    bp_collector_free(tv);
    bp_node_free(m);
}

/* -------------------------------------------------------------- checkpoint */

static void snapshot_params(bp_node *m, bp_tensor **out)
{
    for (int k = 0; k < 2; k++) BP_OK_OR_FAIL(bp_tensor_clone(&out[k], bp_node_var(m, quad_names[k])->value));
}

static void run_steps(const fx_file *coef, bp_node *m, bp_node *opt, int n)
{
    for (int s = 0; s < n; s++) {
        bp_tensor *g[2] = {bp_node_var(m, "p1")->grad, bp_node_var(m, "p2")->grad};
        quad_grads(coef, m, g);
        BP_OK_OR_FAIL(bp_optim_update(opt));
    }
}

/* Saving the optimizer's state_dict (and the parameters), running on, then
 * loading both back replays the same steps bit for bit: the slots, the step
 * counter and the scheduler's counter all travel in the state. */
static void test_checkpoint_round_trip(void **state)
{
    (void)state;
    fx_file *coef = fx_load("optim_quadratic_coef.txt");
    bp_node *m = quad_new();
    bp_collector *tv = train_vars_of(m);
    bp_node *sched;
    BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&sched, 0.05, 3, 0.7, -1, -1));
    bp_adamw_opts o = bp_adamw_defaults();
    o.lr_scheduler = sched;
    o.amsgrad = true;
    o.train_vars = tv;
    bp_node *opt;
    BP_OK_OR_FAIL(bp_adamw_new(&opt, &o));
    bp_node_free(sched);

    run_steps(coef, m, opt, 5);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(opt, &sd));
    bp_tensor *saved[2], *first[2], *second[2];
    snapshot_params(m, saved);
    run_steps(coef, m, opt, 5);
    snapshot_params(m, first);

    bp_load_result r = {0};
    BP_OK_OR_FAIL(bp_node_load_state_dict(opt, sd, false, BP_COMPAT_V2, &r));
    assert_int_equal(r.n_missing, 0);
    assert_int_equal(r.n_unexpected, 0);
    bp_load_result_clear(&r);
    for (int k = 0; k < 2; k++) BP_OK_OR_FAIL(bp_var_assign(bp_node_var(m, quad_names[k]), saved[k]));
    assert_int_equal(((const int64_t *)bp_node_var(opt, "step")->value->data)[0], 5);
    assert_int_equal(((const int64_t *)bp_node_var(sched, "last_call")->value->data)[0], 4);
    run_steps(coef, m, opt, 5);
    snapshot_params(m, second);
    for (int k = 0; k < 2; k++) {
        assert_memory_equal(first[k]->data, second[k]->data, bp_tensor_nbytes(first[k]));
        /* and the run did move the parameters */
        assert_memory_not_equal(first[k]->data, saved[k]->data, bp_tensor_nbytes(first[k]));
        bp_tensor_free(saved[k]);
        bp_tensor_free(first[k]);
        bp_tensor_free(second[k]);
    }
    bp_dict_free(sd);
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);
    fx_free(coef);
}

/* An optimizer with nothing registered still counts its steps and calls. */
static void test_update_without_vars(void **state)
{
    (void)state;
    bp_node *sched, *opt;
    BP_OK_OR_FAIL(bp_scheduler_inverse_time_decay_lr_new(&sched, 1.0, 1, 1.0, false, -1, -1));
    bp_adam_opts o = bp_adam_defaults();
    o.lr_scheduler = sched;
    BP_OK_OR_FAIL(bp_adam_new(&opt, &o));
    BP_OK_OR_FAIL(bp_optim_update(opt));
    bp_dict *d;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    BP_OK_OR_FAIL(bp_optim_update_with(opt, d));
    bp_dict_free(d);
    assert_int_equal(((const int64_t *)bp_node_var(opt, "step")->value->data)[0], 2);
    double lr;
    BP_OK_OR_FAIL(bp_optim_lr(opt, &lr)); /* i = 2: 1 / (1 + 2) */
    BP_ASSERT_CLOSE(lr, 1.0 / 3.0, 1e-16, 0);
    assert_ptr_equal(bp_optim_scheduler(opt), sched);
    bp_node_free(sched);
    bp_node_free(opt);
}

/* ------------------------------------------------------------------ errors */

static void test_constructor_errors(void **state)
{
    (void)state;
    bp_node *opt = (bp_node *)0x1;
    bp_sgd_opts s = bp_sgd_defaults();
    BP_EXPECT_ERR(bp_sgd_new(NULL, &s), BP_EINVAL, "SGD: out is NULL");
    BP_EXPECT_ERR(bp_sgd_new(&opt, NULL), BP_EINVAL, "SGD: opts is NULL");
    assert_null(opt);
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_EINVAL, "SGD: lr is required: set opts.lr to a finite number or "
                                                   "opts.lr_scheduler to a scheduler, got lr = nan");
    s.lr = INFINITY;
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_EINVAL, "got lr = inf");
    s.lr = 0.1;
    s.weight_decay = -0.1;
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_EINVAL, "SGD: weight_decay must be a float in [0, 1], got -0.1");
    s.weight_decay = 1.5;
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_EINVAL, "weight_decay must be a float in [0, 1], got 1.5");
    s.weight_decay = NAN;
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_EINVAL, "weight_decay must be a float in [0, 1], got nan");
    s.weight_decay = 0;
    s.name = "1bad";
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_ENAME, "1bad");
    s.name = NULL;

    /* lr and a scheduler together; a scheduler that is not one. */
    bp_node *sched, *other;
    BP_OK_OR_FAIL(bp_scheduler_constant_new(&sched, 0.2));
    s.lr_scheduler = sched;
    BP_EXPECT_ERR(bp_sgd_new(&opt, &s), BP_EINVAL, "SGD: give lr (0.1) or lr_scheduler (Constant0), not both");
    s.lr = NAN;
    BP_OK_OR_FAIL(bp_sgd_new(&opt, &s));
    s.lr_scheduler = opt;
    BP_EXPECT_ERR(bp_sgd_new(&other, &s), BP_EINVAL, "SGD: lr_scheduler SGD0 (a SGD) is not a learning-rate scheduler");
    bp_node_free(opt);
    bp_node_free(sched);

    bp_momentum_opts mo = bp_momentum_defaults();
    mo.lr = 0.1;
    mo.momentum = -0.5;
    BP_EXPECT_ERR(bp_momentum_new(&opt, &mo), BP_EINVAL, "Momentum: momentum must be a finite value >= 0, got -0.5");
    mo.momentum = NAN;
    BP_EXPECT_ERR(bp_momentum_nesterov_new(&opt, &mo), BP_EINVAL, "MomentumNesterov: momentum must be a finite");
    BP_EXPECT_ERR(bp_momentum_new(&opt, NULL), BP_EINVAL, "Momentum: opts is NULL");
    BP_EXPECT_ERR(bp_momentum_nesterov_new(NULL, &mo), BP_EINVAL, "MomentumNesterov: out is NULL");

    bp_adam_opts ao = bp_adam_defaults();
    ao.lr = 0.1;
    ao.beta1 = 1.0;
    BP_EXPECT_ERR(bp_adam_new(&opt, &ao), BP_EINVAL, "Adam: Invalid beta parameter at index 0: 1");
    ao.beta1 = 0.9;
    ao.beta2 = -0.1;
    BP_EXPECT_ERR(bp_adam_new(&opt, &ao), BP_EINVAL, "Adam: Invalid beta parameter at index 1: -0.1");
    ao.beta2 = 0.999;
    ao.eps = -1e-8;
    BP_EXPECT_ERR(bp_adam_new(&opt, &ao), BP_EINVAL, "Adam: Invalid epsilon value: -1e-08");
    ao.eps = 1e-8;
    ao.weight_decay = 2;
    BP_EXPECT_ERR(bp_adam_new(&opt, &ao), BP_EINVAL, "Adam: weight_decay must be a float in [0, 1], got 2");
    BP_EXPECT_ERR(bp_adam_new(&opt, NULL), BP_EINVAL, "Adam: opts is NULL");

    bp_adamw_opts wo = bp_adamw_defaults();
    wo.lr = 0.1;
    wo.name = "w";
    wo.beta1 = -0.5;
    BP_EXPECT_ERR(bp_adamw_new(&opt, &wo), BP_EINVAL, "w: Invalid beta parameter at index 0: -0.5");
    wo.beta1 = 0.9;
    wo.beta2 = 1.0;
    BP_EXPECT_ERR(bp_adamw_new(&opt, &wo), BP_EINVAL, "w: Invalid beta parameter at index 1: 1");
    wo.beta2 = 0.999;
    wo.eps = NAN;
    BP_EXPECT_ERR(bp_adamw_new(&opt, &wo), BP_EINVAL, "w: Invalid epsilon value: nan");
    wo.eps = 1e-8;
    wo.weight_decay = -1e-2;
    BP_EXPECT_ERR(bp_adamw_new(&opt, &wo), BP_EINVAL, "w: weight_decay must be a float in [0, 1], got -0.01");
    BP_EXPECT_ERR(bp_adamw_new(NULL, &wo), BP_EINVAL, "AdamW: out is NULL");

    bp_rmsprop_opts ro = bp_rmsprop_defaults();
    ro.lr = 0.1;
    ro.rho = 1.5;
    BP_EXPECT_ERR(bp_rmsprop_new(&opt, &ro), BP_EINVAL, "RMSProp: rho must be in [0, 1], got 1.5");
    ro.rho = 0.9;
    ro.epsilon = -1;
    BP_EXPECT_ERR(bp_rmsprop_new(&opt, &ro), BP_EINVAL, "RMSProp: Invalid epsilon value: -1");
    BP_EXPECT_ERR(bp_rmsprop_new(&opt, NULL), BP_EINVAL, "RMSProp: opts is NULL");

    bp_adagrad_opts go = bp_adagrad_defaults();
    go.lr = 0.1;
    go.epsilon = INFINITY;
    BP_EXPECT_ERR(bp_adagrad_new(&opt, &go), BP_EINVAL, "Adagrad: Invalid epsilon value: inf");
    BP_EXPECT_ERR(bp_adagrad_new(&opt, NULL), BP_EINVAL, "Adagrad: opts is NULL");
    assert_null(opt);

    /* Defaults are BrainPy's. */
    assert_true(isnan(bp_sgd_defaults().lr) && bp_sgd_defaults().weight_decay == 0);
    assert_true(bp_momentum_defaults().momentum == 0.9 && bp_momentum_nesterov_defaults().momentum == 0.9);
    bp_adam_opts ad = bp_adam_defaults();
    assert_true(ad.beta1 == 0.9 && ad.beta2 == 0.999 && ad.eps == 1e-8 && ad.weight_decay == 0);
    bp_adamw_opts awd = bp_adamw_defaults();
    assert_true(awd.beta1 == 0.9 && awd.beta2 == 0.999 && awd.eps == 1e-8 && awd.weight_decay == 1e-2 &&
                !awd.amsgrad);
    assert_true(bp_rmsprop_defaults().epsilon == 1e-6 && bp_rmsprop_defaults().rho == 0.9);
    assert_true(bp_adagrad_defaults().epsilon == 1e-6);
}

static void test_register_errors(void **state)
{
    (void)state;
    bp_node *m = quad_new();
    bp_collector *tv = train_vars_of(m);
    bp_sgd_opts so = bp_sgd_defaults();
    so.lr = 0.1;
    bp_node *opt;
    BP_OK_OR_FAIL(bp_sgd_new(&opt, &so));

    BP_EXPECT_ERR(bp_optim_register_train_vars(NULL, tv), BP_EINVAL, "optim_register_train_vars: optimizer is NULL");
    BP_EXPECT_ERR(bp_optim_register_train_vars(m, tv), BP_EINVAL,
                  "optim_register_train_vars: Quad0 (a Quad) is not an optimizer");
    bp_collector *nodes;
    BP_OK_OR_FAIL(bp_node_nodes(m, NULL, &nodes));
    BP_EXPECT_ERR(bp_optim_register_train_vars(opt, nodes), BP_EINVAL,
                  "SGD0: \"train_vars\" must be a dict of Variable.");
    bp_collector_free(nodes);

    /* A var of the other real type. */
    bp_node *odd;
    BP_OK_OR_FAIL(bp_node_create(&odd, &quad_class, "odd", NULL));
    bp_tensor *t;
    int64_t shape[1] = {3};
    BP_OK_OR_FAIL(bp_tensor_new(&t, sizeof(bp_real) == 4 ? BP_FLOAT64 : BP_FLOAT32, 1, shape));
    BP_OK_OR_FAIL(bp_node_add_var(odd, "w", BP_TRAINVAR, t, NULL));
    bp_tensor_free(t);
    bp_collector *oddv;
    BP_OK_OR_FAIL(bp_node_train_vars(odd, NULL, &oddv));
    BP_EXPECT_ERR(bp_optim_register_train_vars(opt, oddv), BP_EDTYPE,
                  sizeof(bp_real) == 4 ? "SGD0: train var \"odd.w\" is float64, the optimizer updates float32 values"
                                       : "SGD0: train var \"odd.w\" is float32, the optimizer updates float64 values");
    bp_collector_free(oddv);
    bp_node_free(odd);

    /* One var under two keys, in one collector: refused, nothing registered. */
    bp_node *alias;
    BP_OK_OR_FAIL(bp_node_create(&alias, &quad_class, "alias", NULL));
    BP_OK_OR_FAIL(bp_node_attach_var(alias, "a", bp_node_var(m, "p1")));
    BP_OK_OR_FAIL(bp_node_attach_var(alias, "b", bp_node_var(m, "p1")));
    bp_collector *av;
    BP_OK_OR_FAIL(bp_node_vars(alias, NULL, &av));
    assert_int_equal(bp_collector_len(av), 2);
    BP_EXPECT_ERR(bp_optim_register_train_vars(opt, av), BP_ECONFLICT,
                  "SGD0: train_vars holds one variable under \"alias.a\" and \"alias.b\"");
    assert_int_equal(bp_optim_num_train_vars(opt), 0);

    /* ... or across calls. */
    BP_OK_OR_FAIL(bp_optim_register_train_vars(opt, tv));
    BP_EXPECT_ERR(bp_optim_register_train_vars(opt, av), BP_ECONFLICT,
                  "SGD0: the variable under \"alias.a\" is already registered as \"Quad0.p1\"");
    assert_int_equal(bp_optim_num_train_vars(opt), 2);
    /* The constructor reports it too, and builds nothing. */
    bp_node *none = (bp_node *)0x1;
    bp_adam_opts bad = bp_adam_defaults();
    bad.lr = 0.1;
    bad.train_vars = av;
    BP_EXPECT_ERR(bp_adam_new(&none, &bad), BP_ECONFLICT, "Adam0: train_vars holds one variable under");
    assert_null(none);
    bp_collector_free(av);
    bp_node_free(alias);

    /* A registered key bound to another var. */
    bp_collect_opts rel = bp_collect_defaults();
    rel.method = BP_RELATIVE;
    bp_node *m2 = quad_new();
    bp_collector *r1, *r2;
    BP_OK_OR_FAIL(bp_node_train_vars(m, &rel, &r1));
    BP_OK_OR_FAIL(bp_node_train_vars(m2, &rel, &r2));
    bp_momentum_opts mo = bp_momentum_defaults();
    mo.lr = 0.1;
    mo.train_vars = r1;
    bp_node *mom;
    BP_OK_OR_FAIL(bp_momentum_new(&mom, &mo));
    BP_EXPECT_ERR(bp_optim_register_train_vars(mom, r2), BP_ECONFLICT,
                  "Momentum0: train var key \"p1\" is already registered to another variable");
    assert_int_equal(bp_optim_num_train_vars(mom), 2);
    /* Constant2: the failed Adam above made and freed Constant1 (counters never go back). */
    const char *keys[] = {"Momentum0.p1_v", "Momentum0.p2_v", "Constant2.last_epoch"};
    expect_keys(mom, keys, 3);
    bp_node_free(mom);
    bp_collector_free(r1);
    bp_collector_free(r2);
    bp_node_free(m2);

    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);
}

static void expect_untouched(bp_node *m, bp_node *opt, const bp_tensor *p1_before)
{
    assert_memory_equal(bp_node_var(m, "p1")->value->data, p1_before->data, bp_tensor_nbytes(p1_before));
    assert_int_equal(((const int64_t *)bp_node_var(opt, "step")->value->data)[0], 0);
    assert_int_equal(((const int64_t *)bp_node_var(bp_optim_scheduler(opt), "last_call")->value->data)[0], -1);
}

static void test_update_errors(void **state)
{
    (void)state;
    bp_node *m = quad_new();
    bp_collector *tv = train_vars_of(m);
    bp_node *sched;
    BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&sched, 0.1, 2, 0.5, -1, -1));
    bp_adam_opts ao = bp_adam_defaults();
    ao.lr_scheduler = sched;
    ao.train_vars = tv;
    bp_node *opt;
    BP_OK_OR_FAIL(bp_adam_new(&opt, &ao));
    bp_node_free(sched);
    bp_tensor *before;
    BP_OK_OR_FAIL(bp_tensor_clone(&before, bp_node_var(m, "p1")->value));

    BP_EXPECT_ERR(bp_optim_update(NULL), BP_EINVAL, "optim_update: optimizer is NULL");
    BP_EXPECT_ERR(bp_optim_update(m), BP_EINVAL, "optim_update: Quad0 (a Quad) is not an optimizer");
    BP_EXPECT_ERR(bp_optim_update_with(opt, NULL), BP_EINVAL, "Adam0: grads is NULL");
    BP_EXPECT_ERR(bp_optim_update_with(m, NULL), BP_EINVAL, "optim_update_with: Quad0 (a Quad) is not an optimizer");
    double lr;
    BP_EXPECT_ERR(bp_optim_lr(m, &lr), BP_EINVAL, "optim_lr: Quad0 (a Quad) is not an optimizer");
    BP_EXPECT_ERR(bp_optim_lr(opt, NULL), BP_EINVAL, "optim_lr: out is NULL");
    assert_null(bp_optim_scheduler(m));
    assert_int_equal(bp_optim_num_train_vars(m), 0);
    assert_null(bp_optim_train_key(NULL, 0));

    const bp_tensor *p1 = bp_node_var(m, "p1")->value, *p2 = bp_node_var(m, "p2")->value;
    bp_tensor *g1, *g2, *g2_bad, *g2_dt, *g3;
    BP_OK_OR_FAIL(bp_tensor_new(&g1, BP_REAL_DTYPE, p1->ndim, p1->shape));
    BP_OK_OR_FAIL(bp_tensor_new(&g2, BP_REAL_DTYPE, p2->ndim, p2->shape));
    BP_OK_OR_FAIL(bp_tensor_full(&g3, BP_REAL_DTYPE, p2->ndim, p2->shape, 1.0));
    bp_tensor_fill(g1, 1.0);
    int64_t wrong[2] = {2, 2};
    BP_OK_OR_FAIL(bp_tensor_new(&g2_bad, BP_REAL_DTYPE, 2, wrong));
    BP_OK_OR_FAIL(bp_tensor_new(&g2_dt, BP_INT32, p2->ndim, p2->shape));

    /* Count mismatch: BrainPy's check_grads text. */
    bp_dict *d;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "Quad0.p1", g1));
    BP_EXPECT_ERR(bp_optim_update_with(opt, d), BP_EINVAL,
                  "Adam0: The length of \"grads\" must be equal to \"self.vars_to_train\", while we got 1 != 2!");
    expect_untouched(m, opt, before);
    /* Same count, an unregistered key in place of a registered one. */
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "Quad0.p3", g3));
    BP_EXPECT_ERR(bp_optim_update_with(opt, d), BP_ENOTFOUND,
                  "Adam0: grads has no entry for the train var \"Quad0.p2\" (it has \"Quad0.p3\", which is not a "
                  "registered train var)");
    expect_untouched(m, opt, before);
    BP_OK_OR_FAIL(bp_dict_remove(d, "Quad0.p3"));
    /* A sub-dict where a tensor belongs. */
    bp_dict *sub;
    BP_OK_OR_FAIL(bp_dict_new(&sub));
    BP_OK_OR_FAIL(bp_dict_set_dict(d, "Quad0.p2", sub));
    BP_EXPECT_ERR(bp_optim_update_with(opt, d), BP_EINVAL, "Adam0: grads[\"Quad0.p2\"] is a dict, expected a tensor");
    /* Wrong shape, wrong dtype: checked for every grad before any write (p1's grad is fine and first). */
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "Quad0.p2", g2_bad));
    BP_EXPECT_ERR(bp_optim_update_with(opt, d), BP_ESHAPE,
                  "Adam0: the gradient of \"Quad0.p2\" has shape (2,2), the variable has (4,)");
    expect_untouched(m, opt, before);
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "Quad0.p2", g2_dt));
    BP_EXPECT_ERR(bp_optim_update_with(opt, d), BP_EDTYPE,
                  sizeof(bp_real) == 4 ? "Adam0: the gradient of \"Quad0.p2\" is int32, the variable is float32"
                                       : "Adam0: the gradient of \"Quad0.p2\" is int32, the variable is float64");
    expect_untouched(m, opt, before);
    /* The variable's own value as its gradient (the kernels write one while reading the other). */
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "Quad0.p2", bp_node_var(m, "p2")->value));
    BP_EXPECT_ERR(bp_optim_update_with(opt, d), BP_EINVAL,
                  "Adam0: the gradient of \"Quad0.p2\" is the variable's own value");
    expect_untouched(m, opt, before);
    /* And with good grads it runs. */
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "Quad0.p2", g2));
    BP_OK_OR_FAIL(bp_optim_update_with(opt, d));
    assert_int_equal(((const int64_t *)bp_node_var(opt, "step")->value->data)[0], 1);
    bp_dict_free(d);

    /* A registered plain Variable has no grad for bp_optim_update. */
    bp_node *holder;
    BP_OK_OR_FAIL(bp_node_create(&holder, &quad_class, "holder", NULL));
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_clone(&t, p2));
    BP_OK_OR_FAIL(bp_node_add_var(holder, "state", BP_VARIABLE, t, NULL));
    bp_tensor_free(t);
    bp_collector *hv;
    BP_OK_OR_FAIL(bp_node_vars(holder, NULL, &hv));
    BP_OK_OR_FAIL(bp_optim_register_train_vars(opt, hv));
    BP_EXPECT_ERR(bp_optim_update(opt), BP_EINVAL,
                  "Adam0: train var \"holder.state\" is a Variable, which carries no grad; pass its gradient with "
                  "bp_optim_update_with");
    assert_int_equal(((const int64_t *)bp_node_var(opt, "step")->value->data)[0], 1);
    bp_collector_free(hv);
    bp_node_free(holder);

    bp_tensor_free(g1);
    bp_tensor_free(g2);
    bp_tensor_free(g3);
    bp_tensor_free(g2_bad);
    bp_tensor_free(g2_dt);
    bp_tensor_free(before);
    bp_node_free(opt);
    bp_collector_free(tv);
    bp_node_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_quadratic_trajectories, setup),
        cmocka_unit_test_setup(test_tinynet_trajectories, setup),
        cmocka_unit_test_setup(test_vars_and_state_dict, setup),
        cmocka_unit_test_setup(test_register_twice_keeps_state, setup),
        cmocka_unit_test_setup(test_hand_worked_steps, setup),
        cmocka_unit_test_setup(test_hand_worked_rules, setup),
        cmocka_unit_test_setup(test_parallel_split_matches_serial, setup),
        cmocka_unit_test_setup(test_checkpoint_round_trip, setup),
        cmocka_unit_test_setup(test_update_without_vars, setup),
        cmocka_unit_test_setup(test_constructor_errors, setup),
        cmocka_unit_test_setup(test_register_errors, setup),
        cmocka_unit_test_setup(test_update_errors, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
