/* tests/test_checkpoint_resume.c — a training checkpoint resumes bit for bit.
 *
 * A linear model y = x.w + b is trained on mini-batches drawn from a bp_rng
 * (so the RNG state matters) with an optimizer whose learning rate comes from
 * a scheduler (so the scheduler's counters matter) and which keeps slots and
 * a step counter (Adam) or a velocity (Momentum). Gradients are the exact
 * ones of the mean squared error, written out by hand:
 *   r_i = x_i.w + b - y_i,  dL/dw = (2/B) sum_i r_i x_i,  dL/db = (2/B) sum_i r_i.
 *
 * Run A trains 2N steps straight. Run B trains N steps, saves a training
 * checkpoint (model vars under "model/", optimizer + scheduler vars under
 * "optim/", the RNG under "rng/state", the step under "meta/step"), frees
 * everything, clears the name cache (as a new process would start), builds a
 * fresh model and optimizer, loads the checkpoint and trains N more steps.
 * Every variable of model and optimizer must then equal run A's bit for bit,
 * in each of the three formats. Leaving out the optimizer state or the RNG
 * state on resume must break that equality (the test can fail). */
#include "bp_test.h"
#include <stdlib.h>
#include <unistd.h>
#include <bpc/checkpoint.h>
#include <bpc/optimizer.h>
#include <bpc/scheduler.h>

enum { FEAT = 5, BATCH = 8, N_STEPS = 12, STEPS_PER_EPOCH = 4 };

typedef enum opt_kind { ADAM_DECAY, MOMENTUM_STEPLR } opt_kind;

typedef struct run {
    bp_node *model, *opt;
    bp_rng rng;
    int64_t step;
} run;

typedef struct plain {
    bp_node base;
} plain;
static const bp_node_class lin_class = {.name = "Lin", .size = sizeof(plain)};

static char g_dir[64];

/* A fresh process: empty name registry, model from a fixed init, optimizer. */
static void start(run *r, opt_kind kind)
{
    bp_clear_name_cache();
    BP_OK_OR_FAIL(bp_node_create(&r->model, &lin_class, NULL, NULL));
    bp_rng init;
    bp_rng_seed(&init, 7);
    bp_tensor *w, *b;
    BP_OK_OR_FAIL(bp_tensor_new(&w, BP_REAL_DTYPE, 1, (const int64_t[]){FEAT}));
    BP_OK_OR_FAIL(bp_tensor_new(&b, BP_REAL_DTYPE, 0, NULL));
    for (int j = 0; j < FEAT; j++) bp_tensor_set(w, j, 0.1 * bp_rng_normal(&init));
    BP_OK_OR_FAIL(bp_node_add_var(r->model, "w", BP_TRAINVAR, w, NULL));
    BP_OK_OR_FAIL(bp_node_add_var(r->model, "b", BP_TRAINVAR, b, NULL));
    bp_tensor_free(w);
    bp_tensor_free(b);

    bp_collector *tv;
    BP_OK_OR_FAIL(bp_node_train_vars(r->model, NULL, &tv));
    bp_node *sched;
    if (kind == ADAM_DECAY) {
        BP_OK_OR_FAIL(bp_scheduler_exponential_decay_lr_new(&sched, 0.05, 3, 0.9, -1, -1));
        bp_adam_opts o = bp_adam_defaults();
        o.lr_scheduler = sched;
        o.train_vars = tv;
        o.weight_decay = 0.01;
        BP_OK_OR_FAIL(bp_adam_new(&r->opt, &o));
    } else {
        BP_OK_OR_FAIL(bp_scheduler_step_lr_new(&sched, 0.02, 1, 0.5, -1));
        bp_momentum_opts o = bp_momentum_defaults();
        o.lr_scheduler = sched;
        o.train_vars = tv;
        BP_OK_OR_FAIL(bp_momentum_new(&r->opt, &o));
    }
    bp_node_free(sched);
    bp_collector_free(tv);
    bp_rng_seed(&r->rng, 2024);
    r->step = 0;
}

static void finish(run *r)
{
    bp_node_free(r->opt);
    bp_node_free(r->model);
    r->opt = r->model = NULL;
}

/* One optimizer step on a fresh batch: y = x.(1, -2, 3, -4, 5) + 0.5 + noise. */
static void train_step(run *r)
{
    static const double truth[FEAT] = {1, -2, 3, -4, 5};
    bp_tensor *w = bp_node_var(r->model, "w")->value, *b = bp_node_var(r->model, "b")->value;
    const bp_real *wv = bp_tensor_creals(w);
    bp_real bv = bp_tensor_creals(b)[0];
    bp_real gw[FEAT] = {0}, gb = 0;
    for (int i = 0; i < BATCH; i++) {
        bp_real x[FEAT], pred = bv, y = (bp_real)(0.5 + 0.1 * bp_rng_normal(&r->rng));
        for (int j = 0; j < FEAT; j++) {
            x[j] = (bp_real)bp_rng_normal(&r->rng);
            pred += x[j] * wv[j];
            y += (bp_real)(x[j] * truth[j]);
        }
        bp_real res = pred - y;
        for (int j = 0; j < FEAT; j++) gw[j] += (bp_real)2 * res * x[j] / (bp_real)BATCH;
        gb += (bp_real)2 * res / (bp_real)BATCH;
    }
    bp_dict *grads;
    bp_tensor *tw, *tb;
    BP_OK_OR_FAIL(bp_dict_new(&grads));
    BP_OK_OR_FAIL(bp_tensor_from_reals(&tw, 1, (const int64_t[]){FEAT}, gw));
    BP_OK_OR_FAIL(bp_tensor_from_reals(&tb, 0, NULL, &gb));
    char kw[64], kb[64];
    snprintf(kw, sizeof kw, "%s.w", bp_node_name(r->model));
    snprintf(kb, sizeof kb, "%s.b", bp_node_name(r->model));
    BP_OK_OR_FAIL(bp_dict_set_tensor(grads, kw, tw));
    BP_OK_OR_FAIL(bp_dict_set_tensor(grads, kb, tb));
    bp_tensor_free(tw);
    bp_tensor_free(tb);
    BP_OK_OR_FAIL(bp_optim_update_with(r->opt, grads));
    bp_dict_free(grads);
    r->step++;
    if (r->step % STEPS_PER_EPOCH == 0) BP_OK_OR_FAIL(bp_scheduler_step_epoch(bp_optim_scheduler(r->opt)));
}

/* Every var of model and optimizer, copied (keys prefixed as in the checkpoint). */
static bp_dict *snapshot(run *r)
{
    bp_collector *mv, *ov;
    BP_OK_OR_FAIL(bp_node_vars(r->model, NULL, &mv));
    BP_OK_OR_FAIL(bp_node_vars(r->opt, NULL, &ov));
    bp_dict *live, *copy;
    BP_OK_OR_FAIL(bp_dict_new(&live));
    BP_OK_OR_FAIL(bp_dict_new(&copy));
    BP_OK_OR_FAIL(bp_checkpoint_put_vars(live, "model/", mv));
    BP_OK_OR_FAIL(bp_checkpoint_put_vars(live, "optim/", ov));
    for (size_t i = 0; i < bp_dict_len(live); i++) {
        bp_tensor *t;
        BP_OK_OR_FAIL(bp_tensor_clone(&t, bp_dict_tensor(live, i)));
        BP_OK_OR_FAIL(bp_dict_set_tensor(copy, bp_dict_key(live, i), t));
        bp_tensor_free(t);
    }
    bp_dict_free(live);
    bp_collector_free(mv);
    bp_collector_free(ov);
    return copy;
}

/* Number of entries whose bits differ (keys and shapes must match). */
static int n_differ(const bp_dict *a, const bp_dict *b)
{
    assert_int_equal(bp_dict_len(a), bp_dict_len(b));
    int n = 0;
    for (size_t i = 0; i < bp_dict_len(a); i++) {
        assert_string_equal(bp_dict_key(a, i), bp_dict_key(b, i));
        const bp_tensor *x = bp_dict_tensor(a, i), *y = bp_dict_tensor(b, i);
        assert_true(x->dtype == y->dtype && bp_tensor_same_shape(x, y));
        n += memcmp(x->data, y->data, bp_tensor_nbytes(x)) != 0;
    }
    return n;
}

static void save_training(run *r, const char *path)
{
    bp_collector *mv, *ov;
    BP_OK_OR_FAIL(bp_node_vars(r->model, NULL, &mv));
    BP_OK_OR_FAIL(bp_node_vars(r->opt, NULL, &ov));
    bp_dict *ck;
    BP_OK_OR_FAIL(bp_dict_new(&ck));
    BP_OK_OR_FAIL(bp_checkpoint_put_vars(ck, "model/", mv));
    BP_OK_OR_FAIL(bp_checkpoint_put_vars(ck, "optim/", ov));
    BP_OK_OR_FAIL(bp_checkpoint_put_rng(ck, "rng/state", &r->rng));
    bp_tensor *step;
    BP_OK_OR_FAIL(bp_tensor_from_data(&step, BP_INT64, 0, NULL, &r->step));
    BP_OK_OR_FAIL(bp_dict_set_tensor(ck, "meta/step", step));
    bp_tensor_free(step);
    BP_OK_OR_FAIL(bp_checkpoint_write(path, ck));
    bp_dict_free(ck);
    bp_collector_free(mv);
    bp_collector_free(ov);
}

/* What to restore: everything, or leave one part out (to show it matters). */
enum { ALL, NO_OPTIM, NO_RNG };

static void load_training(run *r, const char *path, int what)
{
    bp_dict *ck, *meta;
    BP_OK_OR_FAIL(bp_checkpoint_read(path, &ck));
    BP_OK_OR_FAIL(bp_checkpoint_take_prefix(ck, "meta/", &meta));
    r->step = (int64_t)bp_tensor_get(bp_dict_get_tensor(meta, "step"), 0);
    bp_dict_free(meta);
    bp_collector *mv, *ov;
    BP_OK_OR_FAIL(bp_node_vars(r->model, NULL, &mv));
    BP_OK_OR_FAIL(bp_node_vars(r->opt, NULL, &ov));
    bp_ckpt_vars groups[2] = {{"model/", mv}, {"optim/", ov}};
    bp_load_result res;
    BP_OK_OR_FAIL(bp_checkpoint_load_vars(ck, groups, what == NO_OPTIM ? 1 : 2, NULL, &res));
    assert_int_equal(res.n_missing + res.n_unexpected, 0);
    if (what != NO_RNG) BP_OK_OR_FAIL(bp_checkpoint_get_rng(ck, "rng/state", &r->rng));
    bp_dict_free(ck);
    bp_collector_free(mv);
    bp_collector_free(ov);
}

static void resume_case(opt_kind kind)
{
    static const char *const exts[] = {".safetensors", ".npz", ".json"};
    run a = {0};
    start(&a, kind);
    for (int s = 0; s < 2 * N_STEPS; s++) train_step(&a);
    bp_dict *want = snapshot(&a);
    finish(&a);

    for (int f = 0; f < 3; f++)
        for (int what = ALL; what <= NO_RNG; what++) {
            char path[256];
            snprintf(path, sizeof path, "%s/train%s", g_dir, exts[f]);
            run b = {0};
            start(&b, kind);
            for (int s = 0; s < N_STEPS; s++) train_step(&b);
            save_training(&b, path);
            finish(&b);

            start(&b, kind); /* a new process: same names, fresh values */
            load_training(&b, path, what);
            assert_int_equal(b.step, N_STEPS);
            for (int s = 0; s < N_STEPS; s++) train_step(&b);
            bp_dict *got = snapshot(&b);
            int d = n_differ(got, want);
            if (what == ALL && d != 0)
                fail_msg("%s, kind %d: %d variables differ from the uninterrupted run", exts[f], (int)kind, d);
            if (what != ALL && d == 0)
                fail_msg("%s, kind %d: leaving out the %s state still matched: the test cannot fail", exts[f],
                         (int)kind, what == NO_OPTIM ? "optimizer" : "RNG");
            bp_dict_free(got);
            finish(&b);
            unlink(path);
        }
    /* the optimizer's counters are in the checkpointed state: 2N updates,
     * 2N/4 epochs from last_epoch = -1, 2N calls from last_call = -1 */
    if (kind == ADAM_DECAY) {
        assert_true(bp_tensor_get(bp_dict_get_tensor(want, "optim/Adam0.step"), 0) == 2 * N_STEPS);
        assert_true(bp_tensor_get(bp_dict_get_tensor(want, "optim/ExponentialDecayLR0.last_call"), 0) ==
                    2 * N_STEPS - 1);
        assert_non_null(bp_dict_get_tensor(want, "optim/Adam0.Lin0.w_m"));
        assert_non_null(bp_dict_get_tensor(want, "optim/Adam0.Lin0.b_v"));
    } else {
        assert_true(bp_tensor_get(bp_dict_get_tensor(want, "optim/StepLR0.last_epoch"), 0) ==
                    2 * N_STEPS / STEPS_PER_EPOCH - 1);
        assert_non_null(bp_dict_get_tensor(want, "optim/Momentum0.Lin0.w_v"));
    }
    /* the run trained: w moved towards (1, -2, 3, -4, 5) from ~0 */
    assert_true(bp_tensor_get(bp_dict_get_tensor(want, "model/Lin0.w"), 4) > 0.05);
    bp_dict_free(want);
}

static void test_resume_adam_exponential_decay(void **state)
{
    (void)state;
    resume_case(ADAM_DECAY);
}

static void test_resume_momentum_step_lr(void **state)
{
    (void)state;
    resume_case(MOMENTUM_STEPLR);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/bpc_resume_XXXXXX");
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
        cmocka_unit_test(test_resume_adam_exponential_decay),
        cmocka_unit_test(test_resume_momentum_step_lr),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
