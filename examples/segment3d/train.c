/* examples/segment3d/train.c — `segment3d train`: patches, Dice + CE, Adam,
 * validation by sliding windows, latest and best checkpoints, --resume. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <bpc/bpc.h>
#include <bpc/augment.h>
#include <bpc/autograd.h>
#include <bpc/checkpoint.h>
#include <bpc/ops.h>
#include <bpc/optimizer.h>
#include <bpc/scheduler.h>
#include <bpc/train_checkpoint.h>
#include "intensity.h"
#include "model.h"
#include "options.h"
#include "pictures.h"
#include "progress.h"
#include "segment3d.h"
#include "volumes.h"

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Everything a step needs, allocated once. */
typedef struct trainer {
    const options *o;
    volume_set train, val;
    intensity_norm intensity;    /* fitted to the training volumes, saved for predict */
    net_arch arch;
    bp_node *net, *opt, *sched;
    bp_tensor *x, *y;            /* one batch: (B, P, P, P, C) and int32 (B, P, P, P) */
    bp_augment_opts aug;
    double *hist_loss, *hist_dice; /* per finished epoch, for curves.png */
} trainer;

/* Where the run stands: what a checkpoint saves besides the net and optimizer. */
typedef struct progress_state {
    int64_t epoch, step;       /* the next epoch to run, steps of it already done */
    double loss_sum;           /* over the steps done */
    int64_t correct, seen;     /* voxels of the training patches labelled right, and seen */
    double best_dice;          /* the best mean validation Dice so far (-1: none) */
    int64_t best_epoch;
    bp_rng patches;            /* draws the patches and their augmentation */
} progress_state;

/* ------------------------------------------------------------------ steps */

static bp_status make_batch(trainer *t, bp_rng *r)
{
    int64_t P = t->o->patch, C = t->arch.channels, per = P * P * P;
    for (int b = 0; b < t->o->batch; b++) {
        int v = (int)bp_rng_below(r, (uint64_t)t->train.n);
        bp_tensor *ip = NULL, *lp = NULL;
        bp_status st = bp_sample_patch(t->train.img[v], t->train.lab[v], (const int64_t[]){P, P, P}, t->o->fg_prob, r,
                                       &ip, &lp);
        if (!st) st = bp_augment(ip, lp, &t->aug, r);
        if (!st) {
            memcpy(bp_tensor_reals(t->x) + b * per * C, bp_tensor_creals(ip), sizeof(bp_real) * (size_t)(per * C));
            memcpy((int32_t *)t->y->data + b * per, lp->data, sizeof(int32_t) * (size_t)per);
        }
        bp_tensor_free(ip);
        bp_tensor_free(lp);
        BP_TRY(st);
    }
    return BP_OK;
}

static int64_t count_correct(const bp_tensor *logits, const bp_tensor *labels)
{
    int64_t K = logits->shape[logits->ndim - 1], n = logits->numel / K, ok = 0;
    const bp_real *l = bp_tensor_creals(logits);
    const int32_t *y = labels->data;
    for (int64_t v = 0; v < n; v++) {
        int64_t best = 0;
        for (int64_t k = 1; k < K; k++)
            if (l[v * K + k] > l[v * K + best]) best = k;
        ok += best == y[v];
    }
    return ok;
}

/* Dice + cross-entropy, as MONAI's DiceCELoss with its defaults. */
static bp_status seg_loss(bp_tensor *logits, bp_tensor *labels, bp_tensor **loss)
{
    bp_seg_loss_opts so = bp_seg_loss_defaults();
    bp_tensor *ce = NULL, *dl = NULL;
    bp_status st = bp_seg_cross_entropy(&ce, logits, labels, &so);
    if (!st) st = bp_soft_dice_loss(&dl, logits, labels, &so);
    if (!st) st = bp_add(loss, ce, dl);
    bp_tensor_free(ce);
    bp_tensor_free(dl);
    return st;
}

static bp_status train_step(trainer *t, progress_state *p)
{
    bp_share_save_fit(true);
    BP_TRY(make_batch(t, &p->patches));
    bp_tensor *logits = NULL, *l = NULL;
    bp_status st = bp_node_update(t->net, t->x, &logits);
    if (!st) st = seg_loss(logits, t->y, &l);
    if (!st) {
        p->loss_sum += bp_tensor_get(l, 0);
        p->correct += count_correct(logits, t->y);
        p->seen += t->y->numel;
        bp_node_zero_grad(t->net);
        st = bp_backward(l);
    } else {
        bp_ag_release_graph();
    }
    if (!st) st = bp_optim_update(t->opt);
    bp_tensor_free(l);
    bp_tensor_free(logits);
    return st;
}

/* The Dice of every class (dice[1 .. K-1]) averaged over the validation
 * volumes where it is defined, labelled whole by sliding windows; pred0
 * receives the labels of the first volume (for its picture). */
static bp_status validate(trainer *t, double *dice, uint8_t *pred0)
{
    int K = t->val.classes;
    double *one = malloc(sizeof *one * (size_t)K);
    int *count = calloc((size_t)K, sizeof *count);
    bp_status st = one && count ? BP_OK : bp_fail(BP_ENOMEM, "validate: out of memory");
    for (int c = 0; c < K; c++) dice[c] = 0;
    for (int i = 0; !st && i < t->val.n; i++) {
        bp_tensor *logits = NULL;
        st = net_sliding_window(t->net, &t->arch, t->val.img[i], t->o->overlap, &logits);
        if (!st) st = bp_dice_score(logits, t->val.lab[i], NULL, one);
        if (!st && i == 0 && pred0) logits_argmax(logits, pred0);
        for (int c = 0; !st && c < K; c++)
            if (!isnan(one[c])) dice[c] += one[c], count[c]++;
        bp_tensor_free(logits);
    }
    for (int c = 0; count && c < K; c++) dice[c] = count[c] ? dice[c] / count[c] : NAN;
    free(one);
    free(count);
    return st;
}

/* The mean of dice[1 .. K-1] where defined (NaN when none is). */
static double mean_foreground(const double *dice, int K)
{
    double s = 0;
    int n = 0;
    for (int c = 1; c < K; c++)
        if (!isnan(dice[c])) s += dice[c], n++;
    return n ? s / n : NAN;
}

/* ------------------------------------------------------------ checkpoints */

static bp_train_state train_state(trainer *t, progress_state *p, bp_train_rng *rng)
{
    *rng = (bp_train_rng){"patches", &p->patches};
    return (bp_train_state){.model = t->net, .optimizer = t->opt, .scheduler = t->sched, .rngs = rng, .n_rngs = 1,
                            .epoch = p->epoch, .step = p->step};
}

static bp_status put_reals(bp_dict *d, const char *key, int64_t n, const double *v)
{
    bp_tensor *x;
    BP_TRY(bp_tensor_from_data(&x, BP_FLOAT64, n < 0 ? 0 : 1, &n, v));
    bp_status st = bp_dict_set_tensor(d, key, x);
    bp_tensor_free(x);
    return st;
}

static bp_status put_i64(bp_dict *d, const char *key, int64_t v)
{
    bp_tensor *x;
    BP_TRY(bp_tensor_from_data(&x, BP_INT64, 0, NULL, &v));
    bp_status st = bp_dict_set_tensor(d, key, x);
    bp_tensor_free(x);
    return st;
}

/* The options that must not change, the net's shape (for predict), the
 * running sums, the best Dice and the curves so far. */
static bp_status run_metadata(const trainer *t, const progress_state *p, bp_dict **out)
{
    BP_TRY(options_to_meta(t->o, out));
    bp_dict *d = *out;
    bp_status st = arch_to_meta(&t->arch, d);
    if (!st) st = intensity_to_meta(&t->intensity, d);
    if (!st) st = put_reals(d, "loss_sum", -1, &p->loss_sum);
    if (!st) st = put_i64(d, "correct", p->correct);
    if (!st) st = put_i64(d, "seen", p->seen);
    if (!st) st = put_reals(d, "best_dice", -1, &p->best_dice);
    if (!st) st = put_i64(d, "best_epoch", p->best_epoch);
    if (!st && p->epoch > 0) st = put_reals(d, "history/loss", p->epoch, t->hist_loss);
    if (!st && p->epoch > 0) st = put_reals(d, "history/dice", p->epoch, t->hist_dice);
    if (st) bp_dict_free(d);
    return st;
}

static bp_status save_checkpoint(trainer *t, progress_state *p, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", t->o->out, file);
    bp_train_rng rng;
    bp_train_state s = train_state(t, p, &rng);
    bp_dict *meta;
    BP_TRY(run_metadata(t, p, &meta));
    bp_status st = bp_train_checkpoint_save(path, &s, meta);
    bp_dict_free(meta);
    return st;
}

static bp_status scalar(const bp_dict *meta, const char *key, const char *path, double *v)
{
    const bp_tensor *x = bp_dict_get_tensor(meta, key);
    if (!x || x->numel != 1) return bp_fail(BP_EFORMAT, "cannot resume from %s: meta/%s is missing", path, key);
    *v = bp_tensor_get(x, 0);
    return BP_OK;
}

/* The running sums, the best Dice and the curves from the metadata; they must fit the position. */
static bp_status read_sums(const bp_dict *meta, trainer *t, progress_state *p, const char *path)
{
    double c = 0, n = 0, be = 0;
    BP_TRY(scalar(meta, "loss_sum", path, &p->loss_sum));
    BP_TRY(scalar(meta, "correct", path, &c));
    BP_TRY(scalar(meta, "seen", path, &n));
    BP_TRY(scalar(meta, "best_dice", path, &p->best_dice));
    BP_TRY(scalar(meta, "best_epoch", path, &be));
    p->correct = (int64_t)c;
    p->seen = (int64_t)n;
    p->best_epoch = (int64_t)be;
    int64_t per_step = (int64_t)t->o->batch * t->o->patch * t->o->patch * t->o->patch;
    if (!(isfinite(p->loss_sum) && p->loss_sum >= 0) || p->seen != p->step * per_step || p->correct < 0 ||
        p->correct > p->seen)
        return bp_fail(BP_EFORMAT,
                       "cannot resume from %s: its running sums (loss_sum %g, correct %lld, seen %lld) do not fit "
                       "step %lld of batches of %lld voxels",
                       path, p->loss_sum, (long long)p->correct, (long long)p->seen, (long long)p->step,
                       (long long)per_step);
    for (int k = 0; k < 2 && p->epoch > 0; k++) {
        const char *key = k ? "history/dice" : "history/loss";
        const bp_tensor *h = bp_dict_get_tensor(meta, key);
        if (!h || h->dtype != BP_FLOAT64 || h->numel != p->epoch)
            return bp_fail(BP_EFORMAT, "cannot resume from %s: meta/%s does not hold %lld epochs", path, key,
                           (long long)p->epoch);
        memcpy(k ? t->hist_dice : t->hist_loss, h->data, sizeof(double) * (size_t)p->epoch);
    }
    return BP_OK;
}

/* Everything of the saved run, or nothing (the options must match; --epochs may grow). */
static bp_status load_checkpoint(trainer *t, progress_state *p)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", t->o->out);
    bp_dict *expect, *meta = NULL;
    BP_TRY(options_to_meta(t->o, &expect));
    progress_state q = {0};
    bp_train_rng rng;
    bp_train_state s = train_state(t, &q, &rng);
    bp_train_resume_opts ro = {.expect = expect, .epochs = t->o->epochs, .steps_per_epoch = t->o->steps};
    bp_status st = bp_train_checkpoint_resume(path, &s, &ro, &meta);
    bp_dict_free(expect);
    q.epoch = s.epoch;
    q.step = s.step;
    if (!st) st = read_sums(meta, t, &q, path);
    bp_dict_free(meta);
    if (!st) *p = q;
    return st;
}

/* ---------------------------------------------------------------- set-up */

static bp_status setup(trainer *t)
{
    const options *o = t->o;
    if (o->data) {
        volume_set all;
        bp_status st = volumes_from_dir(&all, o->data);
        if (st) {
            volumes_free(&all);
            return st;
        }
        BP_TRY(volumes_split(&all, o->val_split, o->seed, &t->train, &t->val));
    } else {
        /* Validation volumes come from indices no training volume uses. */
        BP_TRY(volumes_synthetic(&t->train, o->seed, 0, o->train_vols, o->size));
        BP_TRY(volumes_synthetic(&t->val, o->seed, 1000000, o->val_vols, o->size));
    }
    BP_TRY(intensity_fit(o->intensity, &t->train, &t->intensity));
    for (int i = 0; i < t->train.n; i++) BP_TRY(intensity_apply(&t->intensity, t->train.img[i]));
    for (int i = 0; i < t->val.n; i++) BP_TRY(intensity_apply(&t->intensity, t->val.img[i]));
    t->arch = (net_arch){.channels = t->train.channels, .classes = t->train.classes, .base = o->base,
                         .depth = o->depth, .patch = o->patch};
    snprintf(t->arch.norm, sizeof t->arch.norm, "%s", o->norm);
    BP_TRY(net_new(&t->net, &t->arch, o->seed));
    BP_TRY(bp_scheduler_cosine_annealing_lr_new(&t->sched, o->lr, o->epochs, o->lr * 0.05, -1));
    bp_collector *all, *tv;
    BP_TRY(bp_node_train_vars(t->net, NULL, &all));
    bp_status st = bp_collector_unique(all, &tv);
    bp_collector_free(all);
    if (st) return st;
    bp_adam_opts ao = bp_adam_defaults();
    ao.lr_scheduler = t->sched;
    ao.train_vars = tv;
    st = bp_adam_new(&t->opt, &ao);
    bp_collector_free(tv);
    if (st) return st;
    int64_t P = o->patch, xs[5] = {o->batch, P, P, P, t->arch.channels};
    BP_TRY(bp_tensor_new(&t->x, BP_REAL_DTYPE, 5, xs));
    BP_TRY(bp_tensor_new(&t->y, BP_INT32, 4, xs));
    t->aug = bp_augment_defaults();
    t->aug.scale = t->aug.shift = o->jitter;
    t->hist_loss = calloc((size_t)o->epochs, sizeof *t->hist_loss);
    t->hist_dice = calloc((size_t)o->epochs, sizeof *t->hist_dice);
    if (!t->hist_loss || !t->hist_dice) return bp_fail(BP_ENOMEM, "out of memory");
    return BP_OK;
}

static void teardown(trainer *t)
{
    bp_node_free(t->opt);
    bp_node_free(t->sched);
    bp_node_free(t->net);
    bp_tensor_free(t->x);
    bp_tensor_free(t->y);
    free(t->hist_loss);
    free(t->hist_dice);
    volumes_free(&t->train);
    volumes_free(&t->val);
    intensity_free(&t->intensity);
}

/* ---------------------------------------------------------------- the run */

static FILE *open_metrics(const trainer *t, bool resume)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.csv", t->o->out);
    struct stat sb;
    bool exists = stat(path, &sb) == 0;
    FILE *f = fopen(path, resume && exists ? "a" : "w");
    if (f && !(resume && exists)) {
        fprintf(f, "epoch,train_loss,train_voxel_acc,val_mean_dice");
        for (int c = 1; c < t->val.classes; c++) fprintf(f, ",val_dice_%d", c);
        fprintf(f, ",lr,seconds\n");
    }
    return f;
}

/* The pictures of an epoch: slice_NNN.png and curves.png. A failure is said once and not fatal. */
static void draw(trainer *t, int64_t epoch, const uint8_t *pred0)
{
    static bool warned;
    if (!t->o->pictures || !pictures_available()) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/slice_%03lld.png", t->o->out, (long long)epoch + 1);
    bp_status st = picture_slice(path, t->val.img[0], t->val.lab[0], pred0);
    snprintf(path, sizeof path, "%s/curves.png", t->o->out);
    if (!st) st = picture_curves(path, (int)epoch + 1, t->hist_loss, t->hist_dice);
    if (st && !warned) {
        fprintf(stderr, "segment3d: no pictures: %s\n", bp_last_error());
        warned = true;
    }
}

/* One epoch's steps from p->step; 130 after Ctrl-C (checkpoint saved), 1 on an error. */
static int run_steps(trainer *t, progress_state *p)
{
    const options *o = t->o;
    char label[64];
    snprintf(label, sizeof label, "epoch %lld/%d", (long long)p->epoch + 1, o->epochs);
    progress bar;
    progress_start(&bar, label, (int64_t)o->steps * o->batch);
    bar.done = p->step * o->batch;
    for (int64_t s = p->step; s < o->steps; s++) {
        if (train_step(t, p)) {
            fprintf(stderr, "\nsegment3d: step %lld of epoch %lld: %s\n", (long long)s + 1, (long long)p->epoch + 1,
                    bp_last_error());
            return 1;
        }
        p->step = s + 1;
        if (!o->quiet) progress_step(&bar, o->batch, p->loss_sum / (double)p->step, (double)p->correct / p->seen);
        if (interrupted) {
            if (!o->quiet) progress_end(&bar);
            if (save_checkpoint(t, p, "checkpoint.safetensors")) {
                fprintf(stderr, "segment3d: interrupted, and the checkpoint failed: %s\n", bp_last_error());
                return 1;
            }
            printf("interrupted: saved %s/checkpoint.safetensors (epoch %lld, step %lld); continue with --resume\n",
                   o->out, (long long)p->epoch + 1, (long long)p->step);
            return 130;
        }
    }
    if (!o->quiet) progress_end(&bar);
    return 0;
}

static int run(trainer *t)
{
    const options *o = t->o;
    progress_state p = {.best_dice = -1, .best_epoch = -1};
    bp_rng_seed(&p.patches, o->seed ^ 0xabcdef);
    if (o->resume) {
        if (load_checkpoint(t, &p)) {
            fprintf(stderr, "segment3d: %s\n", bp_last_error());
            return 1;
        }
        printf("resumed from %s/checkpoint.safetensors at epoch %lld, step %lld\n", o->out, (long long)p.epoch + 1,
               (long long)p.step);
    }
    FILE *metrics = open_metrics(t, o->resume);
    if (!metrics) {
        fprintf(stderr, "segment3d: cannot write %s/metrics.csv: %s\n", o->out, strerror(errno));
        return 1;
    }
    int K = t->val.classes, status = 0;
    int64_t nvox = t->val.img[0]->numel / t->val.img[0]->shape[3];
    double *dice = malloc(sizeof *dice * (size_t)K);
    uint8_t *pred0 = malloc((size_t)nvox);
    if (!dice || !pred0) {
        fprintf(stderr, "segment3d: out of memory\n");
        status = 1;
    }
    while (p.epoch < o->epochs && !status) {
        double lr = 0, t0 = progress_now();
        bp_optim_lr(t->opt, &lr);
        status = run_steps(t, &p);
        if (status) break;
        bp_scheduler_step_epoch(t->sched);
        if (validate(t, dice, pred0)) {
            fprintf(stderr, "segment3d: validation: %s\n", bp_last_error());
            status = 1;
            break;
        }
        double mean = mean_foreground(dice, K), secs = progress_now() - t0, tloss = p.loss_sum / o->steps,
               tacc = (double)p.correct / p.seen;
        bool best = mean > p.best_dice;
        printf("epoch %lld/%d  train loss %.4f voxel acc %.3f | val Dice %.3f (", (long long)p.epoch + 1, o->epochs,
               tloss, tacc, mean);
        fprintf(metrics, "%lld,%.6f,%.6f,%.6f", (long long)p.epoch + 1, tloss, tacc, mean);
        for (int c = 1; c < K; c++) {
            printf("%s%d: %.3f", c > 1 ? " " : "", c, dice[c]);
            fprintf(metrics, ",%.6f", dice[c]);
        }
        printf(") | lr %.2e | %.1fs%s\n", lr, secs, best ? " | best" : "");
        fprintf(metrics, ",%.6e,%.3f\n", lr, secs);
        fflush(stdout);
        fflush(metrics);
        t->hist_loss[p.epoch] = tloss;
        t->hist_dice[p.epoch] = isnan(mean) ? 0 : mean;
        draw(t, p.epoch, pred0);
        if (best) p.best_dice = mean, p.best_epoch = p.epoch + 1;
        progress_state next = p;
        next.epoch = p.epoch + 1;
        next.step = 0;
        next.loss_sum = 0;
        next.correct = next.seen = 0;
        if ((best && save_checkpoint(t, &next, "best.safetensors")) ||
            save_checkpoint(t, &next, "checkpoint.safetensors")) {
            fprintf(stderr, "segment3d: checkpoint: %s\n", bp_last_error());
            status = 1;
            break;
        }
        p = next;
    }
    fclose(metrics);
    free(dice);
    free(pred0);
    if (!status)
        printf("best mean validation Dice %.4f (epoch %lld): %s/best.safetensors; latest: %s/checkpoint.safetensors\n",
               p.best_dice, (long long)p.best_epoch, o->out, o->out);
    return status;
}

int train_main(const options *o)
{
    trainer t = {.o = o};
    if (mkdir(o->out, 0755) && errno != EEXIST) {
        fprintf(stderr, "segment3d: cannot create %s: %s\n", o->out, strerror(errno));
        return 1;
    }
    double t0 = progress_now();
    if (setup(&t)) {
        fprintf(stderr, "segment3d: %s\n", bp_last_error());
        teardown(&t);
        return 1;
    }
    const bp_tensor *v0 = t.train.img[0];
    printf("bpc %s segment3d: %s, %d train / %d validation volumes (first %lldx%lldx%lld, %lld channel(s)), "
           "%d classes\n",
           bp_version(), o->data ? o->data : "synthetic scans", t.train.n, t.val.n, (long long)v0->shape[0],
           (long long)v0->shape[1], (long long)v0->shape[2], (long long)t.arch.channels, (int)t.arch.classes);
    char model[256], scale[96];
    net_describe(t.net, &t.arch, model, sizeof model);
    intensity_describe(&t.intensity, scale, sizeof scale);
    printf("intensity normalisation: %s\n", scale);
    printf("model: %s; Dice + CE, Adam lr %g (cosine), %d patches of %d^3 per step, %d steps per epoch, %d threads; "
           "data ready in %.1fs\n",
           model, o->lr, o->batch, o->patch, o->steps, omp_get_max_threads(), progress_now() - t0);
    if (o->pictures && !pictures_available()) printf("this build has no libpng: no pictures\n");
    signal(SIGINT, on_sigint);
    int rc = run(&t);
    teardown(&t);
    return rc;
}
