/* tests/test_train_checkpoint.c — bp_train_checkpoint_save / _resume.
 *
 * A run: a linear model y = x.w + b (w, b TrainVars, plus a plain int64
 * Variable that counts steps) trained on batches drawn from one stream, with
 * a second stream drawing a per-step gradient noise, Adam (slots, step) or
 * Momentum with a CosineAnnealingLR stepped every STEPS_PER_EPOCH steps, and
 * optionally a second scheduler the optimizer does not own (stepped every
 * step: its counter must travel too). Gradients are the exact ones of the
 * mean squared error, written by hand:
 *   r_i = x_i.w + b - y_i,  dL/dw = (2/B) sum_i r_i x_i,  dL/db = (2/B) sum_i r_i.
 *
 * Round trip: run A trains 2N steps; run B trains N, saves, a "new process"
 * (fresh nodes, cleared name cache) resumes and trains N more. Every variable,
 * both streams and the position must equal run A's bit for bit, in each
 * format. Mismatches and corrupt files: each is the stated error code, its
 * message names what differs, and nothing of the run changed. */
#include "bp_test.h"
#include <sys/resource.h>
#include <stdlib.h>
#include <unistd.h>
#include <bpc/checkpoint.h>
#include <bpc/optimizer.h>
#include <bpc/scheduler.h>
#include <bpc/train_checkpoint.h>

enum { FEAT = 5, BATCH = 8, N_STEPS = 10, STEPS_PER_EPOCH = 4 };

typedef enum opt_kind { ADAM, MOMENTUM, NO_OPTIMIZER } opt_kind;

/* What a run is built from; the mismatch tests change one field. */
typedef struct recipe {
    opt_kind opt;
    int feat;              /* length of w */
    bool extra_var;        /* the model gets one more Variable */
    bool other_class;      /* the model is of class "Lin2" */
    bool own_sched;        /* a second scheduler outside the optimizer */
    bool step_lr;          /* the optimizer's scheduler is StepLR, not CosineAnnealingLR */
    int n_rngs;            /* 2; fewer or more to test stream mismatches */
} recipe;

static const recipe base = {.opt = ADAM, .feat = FEAT, .own_sched = true, .n_rngs = 2};

typedef struct run {
    bp_node *model, *opt, *sched;      /* sched: the separate one, or NULL */
    bp_rng data, noise, spare;
    bp_train_rng rngs[3];
    bp_train_state st;
} run;

typedef struct plain {
    bp_node base;
} plain;
static const bp_node_class lin_class = {.name = "Lin", .size = sizeof(plain)};
static const bp_node_class lin2_class = {.name = "Lin2", .size = sizeof(plain)};

static char g_dir[64];

static void path_in_dir(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* A fresh process: empty name registry, fixed init, fresh optimizer. */
static void start(run *r, const recipe *rc)
{
    memset(r, 0, sizeof *r);
    bp_clear_name_cache();
    BP_OK_OR_FAIL(bp_node_create(&r->model, rc->other_class ? &lin2_class : &lin_class, NULL, NULL));
    bp_rng init;
    bp_rng_seed(&init, 7);
    bp_tensor *w, *b, *count;
    BP_OK_OR_FAIL(bp_tensor_new(&w, BP_REAL_DTYPE, 1, (const int64_t[]){rc->feat}));
    BP_OK_OR_FAIL(bp_tensor_new(&b, BP_REAL_DTYPE, 0, NULL));
    BP_OK_OR_FAIL(bp_tensor_new(&count, BP_INT64, 0, NULL));
    for (int j = 0; j < rc->feat; j++) bp_tensor_set(w, j, 0.1 * bp_rng_normal(&init));
    BP_OK_OR_FAIL(bp_node_add_var(r->model, "w", BP_TRAINVAR, w, NULL));
    BP_OK_OR_FAIL(bp_node_add_var(r->model, "b", BP_TRAINVAR, b, NULL));
    BP_OK_OR_FAIL(bp_node_add_var(r->model, "count", BP_VARIABLE, count, NULL));
    if (rc->extra_var) {
        bp_tensor *extra;
        BP_OK_OR_FAIL(bp_tensor_new(&extra, BP_INT64, 0, NULL));
        BP_OK_OR_FAIL(bp_node_add_var(r->model, "extra", BP_VARIABLE, extra, NULL));
        bp_tensor_free(extra);
    }
    bp_tensor_free(w);
    bp_tensor_free(b);
    bp_tensor_free(count);

    bp_collector *tv;
    BP_OK_OR_FAIL(bp_node_train_vars(r->model, NULL, &tv));
    bp_node *sched;
    if (rc->step_lr) BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&sched, 0.05, 1, 0.5, -1));
    else BP_OK_OR_FAIL(bp_scheduler_cosine_annealing_lr_new(&sched, 0.05, 4, 0.001, -1));
    if (rc->opt == ADAM) {
        bp_adam_opts o = bp_adam_defaults();
        o.lr_scheduler = sched;
        o.train_vars = tv;
        BP_OK_OR_FAIL(bp_adam_new(&r->opt, &o));
    } else if (rc->opt == MOMENTUM) {
        bp_momentum_opts o = bp_momentum_defaults();
        o.lr_scheduler = sched;
        o.train_vars = tv;
        BP_OK_OR_FAIL(bp_momentum_new(&r->opt, &o));
    }
    bp_node_free(sched);
    bp_collector_free(tv);
    if (rc->own_sched) BP_OK_OR_FAIL(bp_scheduler_exponential_lr_new(&r->sched, 1.0, 0.9, -1));
    bp_rng_seed(&r->data, 2024);
    bp_rng_seed(&r->noise, 99);
    bp_rng_seed(&r->spare, 5);
    static const char *const names[3] = {"data", "noise", "spare"};
    bp_rng *gens[3] = {&r->data, &r->noise, &r->spare};
    for (int i = 0; i < 3; i++) r->rngs[i] = (bp_train_rng){names[i], gens[i]};
    r->st = (bp_train_state){.model = r->model, .optimizer = r->opt, .scheduler = r->sched, .rngs = r->rngs,
                             .n_rngs = (size_t)rc->n_rngs};
}

static void finish(run *r)
{
    bp_node_free(r->opt);
    bp_node_free(r->sched);
    bp_node_free(r->model);
    r->opt = r->model = r->sched = NULL;
}

/* One optimizer step on a fresh batch: y = x.(1, -2, 3, -4, 5) + 0.5 + noise;
 * the gradient is scaled by the separate scheduler's value and gets a little
 * noise from the second stream, so both streams and both schedulers matter. */
static void train_step(run *r)
{
    static const double truth[FEAT] = {1, -2, 3, -4, 5};
    bp_var *wv = bp_node_var(r->model, "w"), *bv = bp_node_var(r->model, "b"), *cv = bp_node_var(r->model, "count");
    const bp_real *w = bp_tensor_creals(wv->value);
    bp_real b = bp_tensor_creals(bv->value)[0];
    double gw[FEAT] = {0}, gb = 0, scale = 1;
    if (r->sched) BP_OK_OR_FAIL(bp_scheduler_lr(r->sched, &scale));
    for (int i = 0; i < BATCH; i++) {
        double x[FEAT], pred = b, y = 0.5 + 0.1 * bp_rng_normal(&r->data);
        for (int j = 0; j < FEAT; j++) {
            x[j] = bp_rng_normal(&r->data);
            pred += x[j] * w[j];
            y += x[j] * truth[j];
        }
        for (int j = 0; j < FEAT; j++) gw[j] += 2 * (pred - y) * x[j] / BATCH;
        gb += 2 * (pred - y) / BATCH;
    }
    for (int j = 0; j < FEAT; j++) bp_tensor_set(wv->grad, j, scale * gw[j] + 0.01 * bp_rng_normal(&r->noise));
    bp_tensor_set(bv->grad, 0, scale * gb);
    BP_OK_OR_FAIL(bp_optim_update(r->opt));
    bp_tensor_set(cv->value, 0, bp_tensor_get(cv->value, 0) + 1);
    if (r->sched) BP_OK_OR_FAIL(bp_scheduler_step_epoch(r->sched));
    if (++r->st.step == STEPS_PER_EPOCH) {
        BP_OK_OR_FAIL(bp_scheduler_step_epoch(bp_optim_scheduler(r->opt)));
        r->st.step = 0;
        r->st.epoch++;
    }
}

/* Copies of every variable of the run (prefixed as in the file), the streams
 * under "rng/<name>" and the position under "pos". */
static bp_dict *snapshot(run *r)
{
    bp_dict *live, *copy;
    BP_OK_OR_FAIL(bp_dict_new(&live));
    BP_OK_OR_FAIL(bp_dict_new(&copy));
    bp_node *nodes[3] = {r->model, r->opt, r->sched};
    const char *prefixes[3] = {"model/", "optim/", "sched/"};
    for (int g = 0; g < 3; g++) {
        if (!nodes[g]) continue;
        bp_collector *v;
        BP_OK_OR_FAIL(bp_node_vars(nodes[g], NULL, &v));
        BP_OK_OR_FAIL(bp_checkpoint_put_vars(live, prefixes[g], v));
        bp_collector_free(v);
    }
    for (int i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof key, "rng/%s", r->rngs[i].name);
        BP_OK_OR_FAIL(bp_checkpoint_put_rng(live, key, r->rngs[i].rng));
    }
    bp_tensor *pos;
    int64_t p[2] = {r->st.epoch, r->st.step};
    BP_OK_OR_FAIL(bp_tensor_from_data(&pos, BP_INT64, 1, (const int64_t[]){2}, p));
    BP_OK_OR_FAIL(bp_dict_set_tensor(live, "pos", pos));
    bp_tensor_free(pos);
    for (size_t i = 0; i < bp_dict_len(live); i++) {
        bp_tensor *t;
        BP_OK_OR_FAIL(bp_tensor_clone(&t, bp_dict_tensor(live, i)));
        BP_OK_OR_FAIL(bp_dict_set_tensor(copy, bp_dict_key(live, i), t));
        bp_tensor_free(t);
    }
    bp_dict_free(live);
    return copy;
}

/* Keys whose bits differ, comma-separated into buf ("" when equal); keys,
 * dtypes and shapes must match. */
static const char *differ(const bp_dict *a, const bp_dict *b, char *buf, size_t cap)
{
    buf[0] = '\0';
    assert_int_equal(bp_dict_len(a), bp_dict_len(b));
    for (size_t i = 0; i < bp_dict_len(a); i++) {
        assert_string_equal(bp_dict_key(a, i), bp_dict_key(b, i));
        const bp_tensor *x = bp_dict_tensor(a, i), *y = bp_dict_tensor(b, i);
        assert_true(x->dtype == y->dtype && bp_tensor_same_shape(x, y));
        if (memcmp(x->data, y->data, bp_tensor_nbytes(x)))
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "", bp_dict_key(a, i));
    }
    return buf;
}

static bp_tensor *scalar_f64(double v)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_from_data(&t, BP_FLOAT64, 0, NULL, &v));
    return t;
}

static bp_tensor *text(const char *s)
{
    bp_tensor *t;
    int64_t n = (int64_t)strlen(s);
    BP_OK_OR_FAIL(bp_tensor_from_data(&t, BP_UINT8, 1, &n, s));
    return t;
}

/* The metadata a run saves: an option that must match and a running sum. */
static bp_dict *run_metadata(double lr, const char *data)
{
    bp_dict *m;
    BP_OK_OR_FAIL(bp_dict_new(&m));
    bp_tensor *t = scalar_f64(lr), *d = text(data), *sum = scalar_f64(12.5);
    BP_OK_OR_FAIL(bp_dict_set_tensor(m, "--lr", t));
    BP_OK_OR_FAIL(bp_dict_set_tensor(m, "--data", d));
    BP_OK_OR_FAIL(bp_dict_set_tensor(m, "loss_sum", sum));
    bp_tensor_free(t);
    bp_tensor_free(d);
    bp_tensor_free(sum);
    return m;
}

/* The "options" a resume expects: --lr and --data only. */
static bp_dict *expected_options(double lr, const char *data)
{
    bp_dict *m = run_metadata(lr, data);
    BP_OK_OR_FAIL(bp_dict_remove(m, "loss_sum"));
    return m;
}

/* Trains a base run for `steps` steps and saves it to path. */
static void save_after(const char *path, const recipe *rc, int steps)
{
    run r;
    start(&r, rc);
    for (int s = 0; s < steps; s++) train_step(&r);
    bp_dict *meta = run_metadata(0.003, "/data/set");
    BP_OK_OR_FAIL(bp_train_checkpoint_save(path, &r.st, meta));
    bp_dict_free(meta);
    finish(&r);
}

/* ------------------------------------------------------------ round trips */

static void round_trip(const recipe *rc)
{
    static const char *const exts[] = {".safetensors", ".npz", ".json"};
    run a;
    start(&a, rc);
    for (int s = 0; s < 2 * N_STEPS; s++) train_step(&a);
    bp_dict *want = snapshot(&a);
    finish(&a);
    for (int f = 0; f < 3; f++) {
        char path[256], name[32];
        snprintf(name, sizeof name, "train%s", exts[f]);
        path_in_dir(path, sizeof path, name);
        save_after(path, rc, N_STEPS);

        run b;
        start(&b, rc); /* a new process: same names, fresh values, seeds of step 0 */
        bp_dict *meta = NULL, *expect = expected_options(0.003, "/data/set");
        bp_train_resume_opts ro = {.expect = expect, .epochs = 2 * N_STEPS / STEPS_PER_EPOCH + 1,
                                   .steps_per_epoch = STEPS_PER_EPOCH};
        BP_OK_OR_FAIL(bp_train_checkpoint_resume(path, &b.st, &ro, &meta));
        assert_int_equal(b.st.epoch, N_STEPS / STEPS_PER_EPOCH);
        assert_int_equal(b.st.step, N_STEPS % STEPS_PER_EPOCH);
        assert_non_null(meta);
        assert_int_equal(bp_dict_len(meta), 3);
        assert_true(bp_tensor_get(bp_dict_get_tensor(meta, "--lr"), 0) == 0.003);
        assert_true(bp_tensor_get(bp_dict_get_tensor(meta, "loss_sum"), 0) == 12.5);
        const bp_tensor *d = bp_dict_get_tensor(meta, "--data");
        assert_true(d && d->numel == 9 && !memcmp(d->data, "/data/set", 9));
        bp_dict_free(meta);
        bp_dict_free(expect);
        for (int s = 0; s < N_STEPS; s++) train_step(&b);
        bp_dict *got = snapshot(&b);
        char diff[1024];
        if (*differ(got, want, diff, sizeof diff))
            fail_msg("%s: differs from the uninterrupted run in: %s", exts[f], diff);
        bp_dict_free(got);
        finish(&b);
        unlink(path);
    }
    /* the state really moved: 2N updates, 2N/4 epochs, w towards (1,-2,3,-4,5) */
    assert_true(bp_tensor_get(bp_dict_get_tensor(want, "model/Lin0.count"), 0) == 2 * N_STEPS);
    assert_true(bp_tensor_get(bp_dict_get_tensor(want, "model/Lin0.w"), 4) > 0.05);
    if (rc->opt == ADAM) assert_true(bp_tensor_get(bp_dict_get_tensor(want, "optim/Adam0.step"), 0) == 2 * N_STEPS);
    if (rc->own_sched)
        assert_true(bp_tensor_get(bp_dict_get_tensor(want, "sched/ExponentialLR0.last_epoch"), 0) == 2 * N_STEPS - 1);
    bp_dict_free(want);
}

static void test_round_trip_adam(void **state)
{
    (void)state;
    round_trip(&base);
}

static void test_round_trip_momentum_no_own_scheduler(void **state)
{
    (void)state;
    recipe rc = base;
    rc.opt = MOMENTUM;
    rc.own_sched = false;
    round_trip(&rc);
}

/* The optimizer's own scheduler given as state.scheduler too is stored once. */
static void test_owned_scheduler_stored_once(void **state)
{
    (void)state;
    recipe rc = base;
    rc.own_sched = false;
    run r;
    start(&r, &rc);
    r.st.scheduler = bp_optim_scheduler(r.opt);
    char path[256];
    path_in_dir(path, sizeof path, "once.safetensors");
    BP_OK_OR_FAIL(bp_train_checkpoint_save(path, &r.st, NULL));
    bp_dict *flat;
    BP_OK_OR_FAIL(bp_checkpoint_read(path, &flat));
    for (size_t i = 0; i < bp_dict_len(flat); i++) assert_false(strncmp(bp_dict_key(flat, i), "sched/", 6) == 0);
    assert_non_null(bp_dict_get_tensor(flat, "optim/CosineAnnealingLR0.last_epoch"));
    const bp_tensor *cls = bp_dict_get_tensor(flat, "train/lr_scheduler_class");
    assert_true(cls && cls->numel == 17 && !memcmp(cls->data, "CosineAnnealingLR", 17));
    assert_null(bp_dict_get_tensor(flat, "train/scheduler_class"));
    bp_dict_free(flat);
    /* and resumes with or without naming it */
    BP_OK_OR_FAIL(bp_train_checkpoint_resume(path, &r.st, NULL, NULL));
    r.st.scheduler = NULL;
    BP_OK_OR_FAIL(bp_train_checkpoint_resume(path, &r.st, NULL, NULL));
    finish(&r);
    unlink(path);
}

/* ------------------------------------------------------------- mismatches */

/* Resumes path into a run built from rc (after `pre` training steps, so its
 * state is not the fresh one), expecting status and needle, and checks that
 * nothing of the run changed. */
static void expect_refused(const char *path, const recipe *rc, const bp_train_resume_opts *ro, bp_status status,
                           const char *needle)
{
    run r;
    start(&r, rc);
    if (rc->opt != NO_OPTIMIZER)
        for (int s = 0; s < 3; s++) train_step(&r);
    bp_dict *before = snapshot(&r), *meta = (bp_dict *)1;
    BP_EXPECT_ERR(bp_train_checkpoint_resume(path, &r.st, ro, &meta), status, needle);
    assert_null(meta);
    BP_EXPECT_ERR(bp_train_checkpoint_resume(path, &r.st, ro, &meta), status, "cannot resume from ");
    assert_non_null(strstr(bp_last_error(), path));
    bp_dict *after = snapshot(&r);
    char diff[1024];
    if (*differ(after, before, diff, sizeof diff)) fail_msg("a refused resume (%s) changed: %s", needle, diff);
    bp_dict_free(before);
    bp_dict_free(after);
    finish(&r);
}

static void test_other_model(void **state)
{
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "model.safetensors");
    save_after(path, &base, 6);
    recipe rc = base;
    rc.feat = FEAT + 1;
    expect_refused(path, &rc, NULL, BP_ESHAPE, "Lin0.w");
    rc = base;
    rc.extra_var = true;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "Lin0.extra");
    rc = base;
    rc.other_class = true;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "it was written with model Lin; this run has model Lin2");
    unlink(path);
}

static void test_other_optimizer_or_scheduler(void **state)
{
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "opt.safetensors");
    save_after(path, &base, 6);
    recipe rc = base;
    rc.opt = MOMENTUM;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "it was written with optimizer Adam; this run has optimizer Momentum");
    rc.opt = NO_OPTIMIZER;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "optimizer Adam; this run has optimizer (none)");
    rc = base;
    rc.step_lr = true;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "lr scheduler CosineAnnealingLR; this run has lr scheduler StepLR");
    rc = base;
    rc.own_sched = false;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "scheduler ExponentialLR; this run has scheduler (none)");
    unlink(path);
}

static void test_other_streams(void **state)
{
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "rng.safetensors");
    save_after(path, &base, 6);
    recipe rc = base;
    rc.n_rngs = 3;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "it has no random stream \"rng/spare\"");
    rc.n_rngs = 1;
    expect_refused(path, &rc, NULL, BP_EFORMAT, "it holds a random stream \"rng/noise\" that this run does not have");
    unlink(path);
}

static void test_expected_metadata(void **state)
{
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "meta.safetensors");
    save_after(path, &base, 6);
    bp_dict *expect = expected_options(0.01, "/data/set");
    bp_train_resume_opts ro = {.expect = expect};
    expect_refused(path, &base, &ro, BP_EINVAL, "it was written with --lr 0.003; this run has --lr 0.01");
    bp_dict_free(expect);
    expect = expected_options(0.003, "/other");
    ro.expect = expect;
    expect_refused(path, &base, &ro, BP_EINVAL, "it was written with --data \"/data/set\"; this run has --data \"/other\"");
    bp_tensor *t = scalar_f64(4);
    BP_OK_OR_FAIL(bp_dict_set_tensor(expect, "--size", t));
    bp_tensor_free(t);
    BP_OK_OR_FAIL(bp_dict_remove(expect, "--data"));
    expect_refused(path, &base, &ro, BP_EINVAL, "it was written without --size; this run has --size 4");
    bp_dict_free(expect);
    unlink(path);
}

/* A file rewritten with one train/ entry changed (valid checksums). */
static void rewrite_with(const char *src, const char *dst, const char *key, bp_tensor *value)
{
    bp_dict *flat;
    BP_OK_OR_FAIL(bp_checkpoint_read(src, &flat));
    if (value) BP_OK_OR_FAIL(bp_dict_set_tensor(flat, key, value));
    else BP_OK_OR_FAIL(bp_dict_remove(flat, key));
    BP_OK_OR_FAIL(bp_checkpoint_write(dst, flat));
    bp_dict_free(flat);
    bp_tensor_free(value);
}

static bp_tensor *i64(int64_t v)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_from_data(&t, BP_INT64, 0, NULL, &v));
    return t;
}

static void test_position_and_version(void **state)
{
    (void)state;
    char good[256], bad[256];
    path_in_dir(good, sizeof good, "pos.safetensors");
    path_in_dir(bad, sizeof bad, "pos_bad.safetensors");
    save_after(good, &base, 6); /* epoch 1, step 2 */
    rewrite_with(good, bad, "train/epoch", i64(-3));
    expect_refused(bad, &base, NULL, BP_EFORMAT, "its position (epoch -3, step 2) is out of range: the epoch must be >= 0");
    rewrite_with(good, bad, "train/step", i64(-1));
    expect_refused(bad, &base, NULL, BP_EFORMAT, "its position (epoch 1, step -1) is out of range");
    bp_train_resume_opts ro = {.epochs = 1, .steps_per_epoch = STEPS_PER_EPOCH};
    expect_refused(good, &base, &ro, BP_EFORMAT,
                   "its position (epoch 1, step 2) is out of range: the epoch must be in [0, 1], the step in [0, 4)");
    ro = (bp_train_resume_opts){.epochs = 5, .steps_per_epoch = 2};
    expect_refused(good, &base, &ro, BP_EFORMAT, "the step in [0, 2)");
    rewrite_with(good, bad, "other/x", i64(1));
    expect_refused(bad, &base, NULL, BP_EFORMAT, "it holds an entry \"other/x\" that belongs to no part of this run");
    rewrite_with(good, bad, "train/version", i64(2));
    expect_refused(bad, &base, NULL, BP_EFORMAT, "training checkpoint version 2; this bpc reads version 1");
    rewrite_with(good, bad, "train/version", NULL);
    expect_refused(bad, &base, NULL, BP_EFORMAT, "\"train/version\" is missing; is it a bpc training checkpoint?");
    rewrite_with(good, bad, "train/step", scalar_f64(2));
    expect_refused(bad, &base, NULL, BP_EFORMAT, "\"train/step\" is not an int64 scalar");
    /* a plain save_states file is not a training checkpoint */
    run r;
    start(&r, &base);
    BP_OK_OR_FAIL(bp_save_states(r.model, bad, NULL, NULL));
    finish(&r);
    expect_refused(bad, &base, NULL, BP_EFORMAT, "\"train/version\" is missing");
    /* ... even when the caller expects metadata it lacks: the version is checked first */
    bp_dict *expect = expected_options(0.003, "/data/set");
    ro = (bp_train_resume_opts){.expect = expect};
    expect_refused(bad, &base, &ro, BP_EFORMAT, "\"train/version\" is missing");
    /* an option that differs is named before the position it puts out of range */
    ro = (bp_train_resume_opts){.expect = expect, .steps_per_epoch = 2};
    bp_dict_remove(expect, "--lr");
    bp_tensor *lr = scalar_f64(0.5);
    BP_OK_OR_FAIL(bp_dict_set_tensor(expect, "--lr", lr));
    bp_tensor_free(lr);
    expect_refused(good, &base, &ro, BP_EINVAL, "it was written with --lr 0.003; this run has --lr 0.5");
    bp_dict_free(expect);
    /* the finished position (epoch == epochs, step 0) resumes */
    save_after(good, &base, 8);
    ro = (bp_train_resume_opts){.epochs = 2, .steps_per_epoch = STEPS_PER_EPOCH};
    start(&r, &base);
    BP_OK_OR_FAIL(bp_train_checkpoint_resume(good, &r.st, &ro, NULL));
    assert_int_equal(r.st.epoch, 2);
    assert_int_equal(r.st.step, 0);
    finish(&r);
    unlink(good);
    unlink(bad);
}

/* ---------------------------------------------------------- corrupt files */

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void write_all(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static void test_corrupt_files(void **state)
{
    (void)state;
    static const char *const exts[] = {".safetensors", ".npz"};
    for (int f = 0; f < 2; f++) {
        char good[256], bad[256], name[32];
        snprintf(name, sizeof name, "c%s", exts[f]);
        path_in_dir(good, sizeof good, name);
        snprintf(name, sizeof name, "c_bad%s", exts[f]);
        path_in_dir(bad, sizeof bad, name);
        save_after(good, &base, 6);
        size_t len;
        unsigned char *buf = read_all(good, &len);
        buf[len - 40] ^= 0x10; /* a bit in the last variables' data (npz: the zip's directory) */
        write_all(bad, buf, len);
        expect_refused(bad, &base, NULL, BP_EFORMAT, bad);
        buf[len - 40] ^= 0x10;
        write_all(bad, buf, len / 2); /* truncated */
        expect_refused(bad, &base, NULL, BP_EFORMAT, bad);
        write_all(bad, buf, 0); /* empty */
        expect_refused(bad, &base, NULL, BP_EFORMAT, bad);
        free(buf);
        unlink(good);
        unlink(bad);
    }
    char none[256];
    path_in_dir(none, sizeof none, "absent.safetensors");
    expect_refused(none, &base, NULL, BP_EIO, none);
}

/* -------------------------------------------------------------- arguments */

/* A file that claims far more data than the state can hold (tests/data/
 * ckpt_bomb.npz: 261 KB, one member claiming 256 MiB) is refused before its
 * data is inflated: the peak memory grows by far less than the claim. */
static void test_memory_bounded_by_the_state(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/ckpt_bomb.npz", BP_TEST_DATA_DIR);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    expect_refused(path, &base, NULL, BP_EFORMAT, "past the limit of this read");
    getrusage(RUSAGE_SELF, &after);
    assert_true(after.ru_maxrss - before.ru_maxrss < 64 * 1024); /* KiB: under 64 MiB of the 256 claimed */
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char path[256];
    path_in_dir(path, sizeof path, "args.safetensors");
    run r;
    start(&r, &base);
    BP_EXPECT_ERR(bp_train_checkpoint_save(NULL, &r.st, NULL), BP_EINVAL, "filename is NULL");
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, NULL, NULL), BP_EINVAL, "state is NULL");
    bp_train_state s = r.st;
    s.model = NULL;
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &s, NULL), BP_EINVAL, "state->model is NULL");
    s = r.st;
    s.optimizer = r.model;
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &s, NULL), BP_EINVAL, "state->optimizer is a Lin node, not an optimizer");
    s = r.st;
    s.scheduler = r.opt;
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &s, NULL), BP_EINVAL, "state->scheduler is a Adam node, not a scheduler");
    s = r.st;
    s.epoch = -1;
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &s, NULL), BP_EINVAL, "(epoch -1, step 0) must not be negative");
    bp_train_rng twice[2] = {{"a", &r.data}, {"a", &r.noise}};
    s = r.st;
    s.rngs = twice;
    s.n_rngs = 2;
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &s, NULL), BP_EINVAL, "two streams are named \"a\"");
    bp_train_rng slash[1] = {{"a/b", &r.data}};
    s.rngs = slash;
    s.n_rngs = 1;
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &s, NULL), BP_EINVAL, "rngs[0].name must be 1 to 64 printable");
    bp_dict *nested, *sub;
    BP_OK_OR_FAIL(bp_dict_new(&nested));
    BP_OK_OR_FAIL(bp_dict_new(&sub));
    BP_OK_OR_FAIL(bp_dict_set_dict(nested, "inner", sub));
    BP_EXPECT_ERR(bp_train_checkpoint_save(path, &r.st, nested), BP_EINVAL, "metadata entry \"inner\" is a nested dict");
    bp_dict_free(nested);
    assert_int_equal(access(path, F_OK), -1); /* no refused save wrote a file */
    BP_EXPECT_ERR(bp_train_checkpoint_resume(path, NULL, NULL, NULL), BP_EINVAL, "state is NULL");
    finish(&r);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/bpc_train_ckpt_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_adam),
        cmocka_unit_test(test_round_trip_momentum_no_own_scheduler),
        cmocka_unit_test(test_owned_scheduler_stored_once),
        cmocka_unit_test(test_other_model),
        cmocka_unit_test(test_other_optimizer_or_scheduler),
        cmocka_unit_test(test_other_streams),
        cmocka_unit_test(test_expected_metadata),
        cmocka_unit_test(test_memory_bounded_by_the_state),
        cmocka_unit_test(test_position_and_version),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
