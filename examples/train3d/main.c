/* examples/train3d — train a 3-D CNN from the command line.
 *
 * Default: the built-in synthetic shapes dataset (8 classes, 32^3 voxels),
 * Adam with a cosine learning-rate schedule, a checkpoint after every epoch,
 * --resume to continue exactly where a run stopped, Ctrl-C to save and exit.
 * Under mpirun (when bpc was built with MPI) each batch is split over the
 * processes, with cross-replica BatchNorm, and rank 0 prints and writes.
 * `train3d --help` lists the options. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <bpc/bpc.h>
#include <bpc/autograd.h>
#include <bpc/checkpoint.h>
#include <bpc/ops.h>
#include <bpc/optimizer.h>
#include <bpc/scheduler.h>
#include <bpc/train_checkpoint.h>
#include <bpc/data_parallel.h>
#ifdef TRAIN3D_MPI
#include <bpc/comm_mpi.h>
#endif
#include "data.h"
#include "model.h"
#include "options.h"
#include "progress.h"
#include "shapes3d.h"

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Everything a step needs, allocated once. */
typedef struct trainer {
    options o;
    dataset train, val;
    bp_node *net, *opt, *sched;
    bp_collector *model_vars, *opt_vars;
    bp_rng shuffle;          /* drives the per-epoch permutation */
    int64_t *perm;
    bp_tensor *x, *y;        /* one batch (this rank's share of it) */
    int64_t steps_per_epoch;
    bp_comm *comm;           /* the processes training together (bp_comm_self alone) */
    int rank, size;
    bool sync_bn;            /* BatchNorm statistics across the processes */
    bp_collector *train_vars;
} trainer;

/* This rank's rows [lo, lo + n) of a batch of b: near-equal shares in rank order. */
static void share_of(const trainer *t, int64_t b, int64_t *lo, int64_t *n)
{
    const int64_t q = b / t->size, r = b % t->size;
    *n = q + (t->rank < r);
    *lo = t->rank * q + (t->rank < r ? t->rank : r);
}

/* Argmax accuracy count and the batch loss of logits against labels. */
static int64_t count_correct(const bp_tensor *logits, const bp_tensor *labels)
{
    int64_t B = logits->shape[0], K = logits->shape[1], ok = 0;
    const bp_real *l = bp_tensor_creals(logits);
    for (int64_t b = 0; b < B; b++) {
        int64_t best = 0;
        for (int64_t k = 1; k < K; k++)
            if (l[b * K + k] > l[b * K + best]) best = k;
        ok += best == ((const int64_t *)labels->data)[b];
    }
    return ok;
}

static bp_status make_batch(trainer *t, const dataset *d, const int64_t *idx, int64_t b)
{
    if (!t->x || !t->y || t->x->shape[0] != b) {
        bp_tensor_free(t->x);
        bp_tensor_free(t->y);
        t->x = t->y = NULL;
        int64_t xs[5] = {b, d->dims[0], d->dims[1], d->dims[2], d->channels};
        BP_TRY(bp_tensor_new(&t->x, BP_REAL_DTYPE, 5, xs));
        BP_TRY(bp_tensor_new(&t->y, BP_INT64, 1, &b)); /* on failure y stays NULL: rebuilt next call */
    }
    data_batch(d, idx, b, (float *)t->x->data, (int64_t *)t->y->data);
    return BP_OK;
}

/* Runs the model on d without gradients (fit false); loss and accuracy. */
static bp_status evaluate(trainer *t, const dataset *d, double *loss, double *acc)
{
    bp_share_save_fit(false);
    bp_no_grad_begin();
    double sum = 0;
    int64_t correct = 0, B = t->o.batch;
    int64_t *idx = malloc(sizeof *idx * (size_t)B);
    bp_status st = idx ? BP_OK : bp_fail(BP_ENOMEM, "evaluate: out of memory");
    for (int64_t s = 0, k = 0; !st && s < d->n; s += B, k++) {
        if (k % t->size != t->rank) continue; /* this rank's batches */
        int64_t b = d->n - s < B ? d->n - s : B;
        for (int64_t i = 0; i < b; i++) idx[i] = s + i;
        bp_tensor *logits = NULL, *l = NULL;
        st = make_batch(t, d, idx, b);
        if (!st) st = bp_node_update(t->net, t->x, &logits);
        if (!st) st = bp_softmax_cross_entropy(&l, logits, t->y);
        if (!st) {
            sum += bp_tensor_get(l, 0) * (double)b;
            correct += count_correct(logits, t->y);
        }
        bp_tensor_free(l);
        bp_tensor_free(logits);
    }
    bp_no_grad_end();
    free(idx);
    double sums[2] = {sum, (double)correct};
    if (!st) st = bp_comm_allreduce_f64(t->comm, sums, 2);
    sum = sums[0], correct = (int64_t)sums[1];
    *loss = sum / (double)d->n;
    *acc = (double)correct / (double)d->n;
    return st;
}

/* One training step on batch idx[0..b): forward, backward, optimizer update. */
/* With several processes, rank r runs rows [lo, lo + n) of the batch; its
 * loss (the mean over its rows) and accuracy count come back as this rank's,
 * the caller sums them. Gradients: with cross-replica BatchNorm every rank
 * back-propagates its share n/b of the batch's mean loss and the gradients
 * are summed; otherwise the per-rank means are averaged weighted by n. */
static bp_status train_step(trainer *t, const int64_t *idx, int64_t b, double *loss, int64_t *correct)
{
    bp_share_save_fit(true);
    int64_t lo = 0, n = b;
    if (t->size > 1) share_of(t, b, &lo, &n);
    BP_TRY(make_batch(t, &t->train, idx + lo, n));
    bp_tensor *logits = NULL, *l = NULL, *share = NULL;
    bp_status st = bp_node_update(t->net, t->x, &logits);
    if (!st) st = bp_softmax_cross_entropy(&l, logits, t->y);
    if (!st && t->size > 1 && t->sync_bn) st = bp_mul_scalar(&share, l, (double)n / (double)b);
    if (!st) {
        *loss = bp_tensor_get(l, 0);
        *correct = count_correct(logits, t->y);
        bp_node_zero_grad(t->net);
        st = bp_backward(share ? share : l);
    } else {
        bp_ag_release_graph();
    }
    if (!st && t->size > 1)
        st = t->sync_bn ? bp_dp_sum_grads(t->comm, t->train_vars) : bp_dp_allreduce_grads(t->comm, t->train_vars, n, NULL);
    if (!st) st = bp_optim_update(t->opt);
    bp_tensor_free(share);
    bp_tensor_free(l);
    bp_tensor_free(logits);
    return st;
}

/* ------------------------------------------------------------ checkpoints */

typedef struct progress_state {
    int64_t epoch, step;          /* the next epoch to run, steps of it already done */
    double loss_sum;
    int64_t correct, seen;
    bp_rng epoch_shuffle;         /* the shuffle generator at the start of `epoch` */
} progress_state;

static void checkpoint_path(const options *o, char *path, size_t cap)
{
    snprintf(path, cap, "%s/checkpoint.safetensors", o->out);
}

/* Model, optimizer (with its scheduler's counters), the epoch's shuffle
 * stream and the position: what bp_train_checkpoint_* save and restore. */
static bp_train_state train_state(trainer *t, progress_state *p, bp_train_rng *rng)
{
    *rng = (bp_train_rng){"epoch_shuffle", &p->epoch_shuffle};
    return (bp_train_state){.model = t->net, .optimizer = t->opt, .scheduler = t->sched, .rngs = rng, .n_rngs = 1,
                            .epoch = p->epoch, .step = p->step};
}

static bp_status put_scalar(bp_dict *d, const char *key, bp_dtype dt, double v)
{
    bp_tensor *x;
    BP_TRY(bp_tensor_full(&x, dt, 0, NULL, v));
    bp_status st = bp_dict_set_tensor(d, key, x);
    bp_tensor_free(x);
    return st;
}

/* The options that must not change, and the epoch's running sums. */
static bp_status run_metadata(const trainer *t, const progress_state *p, bp_dict **out)
{
    BP_TRY(options_to_meta(&t->o, out));
    bp_status st = put_scalar(*out, "loss_sum", BP_FLOAT64, p->loss_sum);
    if (!st) st = put_scalar(*out, "correct", BP_INT64, (double)p->correct);
    if (!st) st = put_scalar(*out, "seen", BP_INT64, (double)p->seen);
    if (st) bp_dict_free(*out);
    return st;
}

static bp_status save_checkpoint(trainer *t, progress_state *p)
{
    if (t->rank != 0) return BP_OK; /* every rank holds the same state: rank 0 writes it */
    char path[4096];
    checkpoint_path(&t->o, path, sizeof path);
    bp_train_rng rng;
    bp_train_state s = train_state(t, p, &rng);
    bp_dict *meta;
    BP_TRY(run_metadata(t, p, &meta));
    bp_status st = bp_train_checkpoint_save(path, &s, meta);
    bp_dict_free(meta);
    return st;
}

/* The epoch's running sums from the metadata; they must fit the position. */
static bp_status read_sums(const bp_dict *meta, const trainer *t, progress_state *p, const char *path)
{
    const bp_tensor *ls = bp_dict_get_tensor(meta, "loss_sum"), *c = bp_dict_get_tensor(meta, "correct"),
                    *n = bp_dict_get_tensor(meta, "seen");
    if (!ls || !c || !n || ls->numel != 1 || c->numel != 1 || n->numel != 1)
        return bp_fail(BP_EFORMAT, "cannot resume from %s: the running sums (meta/loss_sum, correct, seen) are missing",
                       path);
    p->loss_sum = bp_tensor_get(ls, 0);
    p->correct = (int64_t)bp_tensor_get(c, 0);
    p->seen = (int64_t)bp_tensor_get(n, 0);
    if (!(isfinite(p->loss_sum) && p->loss_sum >= 0) || p->seen != p->step * t->o.batch || p->correct < 0 ||
        p->correct > p->seen)
        return bp_fail(BP_EFORMAT,
                       "cannot resume from %s: its running sums (loss_sum %g, correct %lld, seen %lld) do not fit "
                       "step %lld of batches of %d",
                       path, p->loss_sum, (long long)p->correct, (long long)p->seen, (long long)p->step, t->o.batch);
    return BP_OK;
}

/* Everything of the saved run, or nothing: the options must match (--epochs
 * may differ: a finished run can be extended), the position must lie in
 * this run. */
static bp_status load_checkpoint(trainer *t, progress_state *p)
{
    char path[4096];
    checkpoint_path(&t->o, path, sizeof path);
    bp_dict *expect, *meta = NULL;
    BP_TRY(options_to_meta(&t->o, &expect));
    progress_state q = {0};
    bp_train_rng rng;
    bp_train_state s = train_state(t, &q, &rng);
    bp_train_resume_opts ro = {.expect = expect, .epochs = t->o.epochs, .steps_per_epoch = t->steps_per_epoch};
    bp_status st = bp_train_checkpoint_resume(path, &s, &ro, &meta);
    bp_dict_free(expect);
    q.epoch = s.epoch;
    q.step = s.step;
    if (!st) st = read_sums(meta, t, &q, path);
    bp_dict_free(meta);
    if (!st) *p = q;
    return st;
}

/* ---------------------------------------------------------------- training */

static void shuffle(bp_rng *r, int64_t *perm, int64_t n)
{
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bp_rng_below(r, (uint64_t)i + 1), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}

static bp_status setup(trainer *t)
{
    options *o = &t->o;
    if (o->data) {
        dataset all;
        BP_TRY(data_from_dir(&all, o->data));
        if (all.dims[0] % 8 || all.dims[1] % 8 || all.dims[2] % 8) {
            bp_status st = bp_fail(BP_ESHAPE, "%s: volumes of (%lld,%lld,%lld): each side must be a multiple of 8",
                                   o->data, (long long)all.dims[0], (long long)all.dims[1], (long long)all.dims[2]);
            data_free(&all);
            return st;
        }
        BP_TRY(data_split(&all, o->val_split, o->seed, &t->train, &t->val));
    } else {
        /* Held-out samples come from indices no training sample uses. */
        BP_TRY(data_synthetic(&t->train, o->seed, 0, o->train_n, o->size));
        BP_TRY(data_synthetic(&t->val, o->seed, 1000000000LL, o->val_n, o->size));
    }
    t->sync_bn = t->size > 1 && !o->no_sync_bn;
    if (t->sync_bn) BP_TRY(bp_axis_bind("batch", t->comm));
    BP_TRY(net_new_axis(&t->net, NET_GLOBAL, t->train.dims, t->train.channels, t->train.classes, o->seed,
                        t->sync_bn ? "batch" : NULL));
    if (t->size > o->batch)
        return bp_fail(BP_EINVAL, "--batch-size %d is smaller than the %d processes: each needs a sample", o->batch,
                       t->size);
    t->steps_per_epoch = t->train.n / o->batch; /* the last partial batch is dropped */
    if (t->steps_per_epoch < 1)
        return bp_fail(BP_EINVAL, "%lld training samples are fewer than one batch of %d", (long long)t->train.n, o->batch);
    BP_TRY(bp_scheduler_cosine_annealing_lr_new(&t->sched, o->lr, o->epochs, o->lr * 0.01, -1));
    bp_collector *all, *tv;
    BP_TRY(bp_node_train_vars(t->net, NULL, &all));
    bp_status st = bp_collector_unique(all, &tv);
    bp_collector_free(all);
    if (st) return st;
    if (!strcmp(o->optimizer, "adam")) {
        bp_adam_opts ao = bp_adam_defaults();
        ao.lr_scheduler = t->sched;
        ao.train_vars = tv;
        st = bp_adam_new(&t->opt, &ao);
    } else {
        bp_momentum_opts mo = bp_momentum_defaults();
        mo.lr_scheduler = t->sched;
        mo.train_vars = tv;
        st = bp_momentum_new(&t->opt, &mo);
    }
    t->train_vars = tv;
    if (!st) st = bp_node_vars(t->net, NULL, &t->model_vars);
    /* every process starts from rank 0's weights and buffers */
    if (!st && t->size > 1) st = bp_dp_broadcast_vars(t->comm, t->model_vars, 0);
    if (!st) st = bp_node_vars(t->opt, NULL, &t->opt_vars);
    t->perm = malloc(sizeof *t->perm * (size_t)t->train.n);
    if (!st && !t->perm) st = bp_fail(BP_ENOMEM, "out of memory");
    bp_rng_seed(&t->shuffle, o->seed ^ 0xabcdef);
    return st;
}

static void teardown(trainer *t)
{
    bp_collector_free(t->model_vars);
    bp_collector_free(t->opt_vars);
    bp_collector_free(t->train_vars);
    bp_node_free(t->opt);
    bp_node_free(t->sched);
    bp_node_free(t->net);
    bp_tensor_free(t->x);
    bp_tensor_free(t->y);
    free(t->perm);
    data_free(&t->train);
    data_free(&t->val);
}

static FILE *open_metrics(const options *o, bool resume)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.csv", o->out);
    struct stat sb;
    bool exists = stat(path, &sb) == 0;
    FILE *f = fopen(path, resume && exists ? "a" : "w");
    if (f && !(resume && exists)) fprintf(f, "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n");
    return f;
}

static int run(trainer *t)
{
    options *o = &t->o;
    progress_state p = {0};
    if (o->resume) {
        if (load_checkpoint(t, &p)) {
            fprintf(stderr, "train3d: %s\n", bp_last_error());
            return 1;
        }
        printf("resumed from %s/checkpoint.safetensors at epoch %lld, step %lld\n", o->out, (long long)p.epoch + 1,
               (long long)p.step);
        t->shuffle = p.epoch_shuffle;
    }
    FILE *metrics = t->rank == 0 ? open_metrics(o, o->resume) : fopen("/dev/null", "w");
    if (!metrics) {
        fprintf(stderr, "train3d: cannot write %s/metrics.csv: %s\n", o->out, strerror(errno));
        return 1;
    }
    double chance = 1.0 / t->train.classes;
    int status = 0;
    for (int64_t epoch = p.epoch; epoch < o->epochs && !status; epoch++) {
        bool mid_epoch = o->resume && epoch == p.epoch && p.step > 0;
        if (!mid_epoch) {
            p = (progress_state){.epoch = epoch, .epoch_shuffle = t->shuffle};
        }
        shuffle(&t->shuffle, t->perm, t->train.n);
        double lr = 0, t0 = progress_now();
        bp_optim_lr(t->opt, &lr);
        char label[64];
        snprintf(label, sizeof label, "epoch %lld/%d", (long long)epoch + 1, o->epochs);
        progress bar;
        progress_start(&bar, label, t->steps_per_epoch * o->batch);
        bar.done = p.step * o->batch;
        for (int64_t s = p.step; s < t->steps_per_epoch; s++) {
            double loss;
            int64_t correct;
            if (train_step(t, t->perm + s * o->batch, o->batch, &loss, &correct)) {
                fprintf(stderr, "\ntrain3d: step %lld of epoch %lld: %s\n", (long long)s, (long long)epoch + 1,
                        bp_last_error());
                status = 1;
                break;
            }
            if (t->size > 1) {
                /* the batch's loss and count from every rank's share, and whether any was interrupted */
                int64_t lo, n;
                share_of(t, o->batch, &lo, &n);
                double sums[3] = {loss * (double)n, (double)correct, (double)interrupted};
                if (bp_comm_allreduce_f64(t->comm, sums, 3)) {
                    fprintf(stderr, "\ntrain3d: rank %d: %s\n", t->rank, bp_last_error());
                    status = 1;
                    break;
                }
                loss = sums[0] / o->batch, correct = (int64_t)sums[1];
                if (sums[2] > 0) interrupted = 1;
            }
            p.loss_sum += loss * o->batch;
            p.correct += correct;
            p.seen += o->batch;
            p.step = s + 1;
            if (!o->quiet) progress_step(&bar, o->batch, p.loss_sum / p.seen, (double)p.correct / p.seen);
            if (interrupted) {
                if (!o->quiet) progress_end(&bar);
                if (save_checkpoint(t, &p)) {
                    fprintf(stderr, "train3d: interrupted, and the checkpoint failed: %s\n", bp_last_error());
                    status = 1;
                } else if (t->rank == 0) {
                    printf("interrupted: saved %s/checkpoint.safetensors (epoch %lld, step %lld); "
                           "continue with --resume\n", o->out, (long long)epoch + 1, (long long)p.step);
                    status = 130;
                } else {
                    status = 130;
                }
                break;
            }
        }
        if (status) break;
        if (!o->quiet) progress_end(&bar);
        bp_scheduler_step_epoch(t->sched);
        double vloss, vacc;
        if (evaluate(t, &t->val, &vloss, &vacc)) {
            fprintf(stderr, "train3d: evaluation: %s\n", bp_last_error());
            status = 1;
            break;
        }
        double secs = progress_now() - t0, tloss = p.loss_sum / p.seen, tacc = (double)p.correct / p.seen;
        if (t->rank == 0) printf("epoch %lld/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f (chance %.3f) | lr %.2e | %.1fs\n",
               (long long)epoch + 1, o->epochs, tloss, tacc, vloss, vacc, chance, lr, secs);
        fflush(stdout);
        fprintf(metrics, "%lld,%.6f,%.6f,%.6f,%.6f,%.6e,%.3f\n", (long long)epoch + 1, tloss, tacc, vloss, vacc, lr, secs);
        fflush(metrics);
        p = (progress_state){.epoch = epoch + 1, .epoch_shuffle = t->shuffle};
        if (save_checkpoint(t, &p)) {
            fprintf(stderr, "train3d: checkpoint: %s\n", bp_last_error());
            status = 1;
        }
    }
    fclose(metrics);
    if (!status && t->rank == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors", o->out);
        if (bp_save_states(t->net, path, NULL, NULL)) {
            fprintf(stderr, "train3d: %s\n", bp_last_error());
            return 1;
        }
        printf("saved the trained model to %s (load it with bp_load_states)\n", path);
    }
    return status;
}

#ifdef TRAIN3D_MPI
static bool under_mpirun(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}
#endif

/* The processes training together: MPI's world when started by mpirun (and
 * bpc has MPI), else this process alone, without starting MPI at all. */
static bp_status open_comm(trainer *t)
{
#ifdef TRAIN3D_MPI
    if (under_mpirun()) BP_TRY(bp_comm_mpi_world(&t->comm));
    else BP_TRY(bp_comm_self(&t->comm));
#else
    BP_TRY(bp_comm_self(&t->comm));
#endif
    t->rank = bp_comm_rank(t->comm);
    t->size = bp_comm_size(t->comm);
    return BP_OK;
}

static void close_comm(trainer *t)
{
    bp_comm_free(t->comm);
#ifdef TRAIN3D_MPI
    bp_comm_mpi_finalize(); /* nothing when MPI was not started */
#endif
}

int main(int argc, char **argv)
{
    trainer t = {0};
    int rc = parse_args(argc, argv, &t.o);
    if (rc) return rc < 0 ? 0 : rc;
    if (open_comm(&t)) {
        fprintf(stderr, "train3d: %s\n", bp_last_error());
        return 1;
    }
    if (t.rank != 0) t.o.quiet = 1;
    if (t.o.threads > 0) omp_set_num_threads(t.o.threads);
    if (mkdir(t.o.out, 0755) && errno != EEXIST) {
        fprintf(stderr, "train3d: cannot create %s: %s\n", t.o.out, strerror(errno));
        close_comm(&t);
        return 1;
    }
    double t0 = progress_now();
    if (setup(&t)) {
        fprintf(stderr, "train3d: %s\n", bp_last_error());
        teardown(&t);
        close_comm(&t);
        return 1;
    }
    if (t.rank == 0) {
        printf("bpc %s train3d: %s, %lld train / %lld held-out samples of (%lld,%lld,%lld,%lld), %d classes "
               "(chance %.1f%%)\n",
               bp_version(), t.o.data ? t.o.data : "synthetic shapes", (long long)t.train.n, (long long)t.val.n,
               (long long)t.train.dims[0], (long long)t.train.dims[1], (long long)t.train.dims[2],
               (long long)t.train.channels, t.train.classes, 100.0 / t.train.classes);
        char model[256] = "?";
        net_describe(t.net, false, model, sizeof model);
        printf("model: %s; %s lr %g (cosine), batch %d, %d threads; data ready in %.1fs\n", model, t.o.optimizer,
               t.o.lr, t.o.batch, omp_get_max_threads(), progress_now() - t0);
        if (t.size > 1)
            printf("%d processes: each step splits the batch of %d over them; BatchNorm statistics %s\n", t.size,
                   t.o.batch, t.sync_bn ? "across all of them (cross-replica)" : "per process (--no-sync-bn)");
    }
    signal(SIGINT, on_sigint);
    rc = run(&t);
    teardown(&t);
    if (t.sync_bn) bp_axis_unbind("batch");
    close_comm(&t);
    return rc;
}
