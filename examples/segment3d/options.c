/* examples/segment3d/options.c — see options.h. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "args.h"
#include "intensity.h"
#include "options.h"

static const options defaults = {.epochs = 8, .steps = 25, .batch = 2, .threads = -1, .size = 32,
                                 .train_vols = 16, .val_vols = 4, .patch = 32, .base = 8, .depth = 3,
                                 .lr = 0.01, .val_split = 0.2, .fg_prob = 0.33, .overlap = 0.5, .jitter = 0.1,
                                 .norm = "instance", .intensity = "dataset",
                                 .out = "segment3d-out", .seed = 1, .pictures = 1};

static void usage(FILE *f)
{
    const options *d = &defaults;
    fprintf(f,
            "usage: segment3d [train] [options]\n"
            "       segment3d predict --model FILE [--threads N] [--overlap X] IN.nii[.gz] OUT.nii[.gz]\n\n"
            "train: trains a 3-D U-Net (bpc/unet.h) to label every voxel, with Dice + cross-entropy, Adam and a\n"
            "cosine learning-rate schedule, on random patches (foreground oversampled, flipped, turned and\n"
            "intensity-jittered); after every epoch it labels each whole validation volume by sliding windows and\n"
            "prints the Dice of every foreground class.\n\n"
            "  --epochs N         epochs to train, >= 1 (default %d)\n"
            "  --steps N          training steps per epoch, >= 1 (default %d)\n"
            "  --batch-size N     patches per step, >= 1 (default %d)\n"
            "  --lr X             Adam's learning rate, > 0 (default %g)\n"
            "  --patch P          patch side, a multiple of 2^depth (default %d)\n"
            "  --base N           U-Net channels at full resolution, in [1, 256] (default %d)\n"
            "  --depth N          U-Net down-samplings, in [1, 5] (default %d)\n"
            "  --norm NAME        instance (default), batch or group (GroupNorm of 4 groups; --base a multiple of 4)\n"
            "  --intensity MODE   how scans are scaled before the net: dataset (default: one mean and sd per\n"
            "                     channel over all training voxels, saved in the checkpoint for predict), volume\n"
            "                     (each volume on its own mean and sd; MRI whose raw scale differs by scanner) or none\n"
            "  --fg-prob X        chance that a patch is centred on a foreground voxel, in [0, 1] (default %g)\n"
            "  --overlap X        sliding-window overlap, in [0, 1) (default %g)\n"
            "  --jitter X         intensity augmentation: x (1 + u) + v, u and v uniform in [-X, X], in [0, 1]\n"
            "                     (default %g; 0 where labels follow narrow intensity bands)\n"
            "  --threads N        OpenMP threads, 1 to %d (default: all cores)\n"
            "  --seed N           seed of the weights, the data and the patches, in [0, 2^64) (default %llu)\n"
            "  --out DIR          checkpoint.safetensors (latest), best.safetensors (best validation Dice),\n"
            "                     metrics.csv and pictures go here (default %s; DIR and --data DIR: at most %d bytes)\n"
            "  --data DIR         train on DIR/imagesTr/NAME.nii[.gz] with the labels DIR/labelsTr/NAME.nii[.gz]\n"
            "                     (the Medical Segmentation Decathlon layout) instead of synthetic volumes\n"
            "  --val-split X      with --data: the validation fraction, in (0, 1) (default %g)\n"
            "  --size S           synthetic volume side, in [8, 256] (default %d)\n"
            "  --train-volumes N  synthetic training volumes, >= 1 (default %d)\n"
            "  --val-volumes N    synthetic validation volumes, >= 1 (default %d)\n"
            "  --no-pictures      no PNG files (slice_NNN.png each epoch, curves.png)\n"
            "  --resume           continue from DIR/checkpoint.safetensors (same options as the run that wrote it;\n"
            "                     --epochs may grow)\n"
            "  --quiet            per-epoch lines only\n"
            "  --help             this text\n\n"
            "predict: labels IN with the net of a checkpoint FILE written by train (best.safetensors or\n"
            "checkpoint.safetensors) and writes the labels as uint8 with IN's geometry.\n\n"
            "Ctrl-C saves a checkpoint after the current step and exits; --resume continues from it with the same\n"
            "results as an uninterrupted run (same thread count). predict scales a scan as --intensity did in training.\n",
            d->epochs, d->steps, d->batch, d->lr, d->patch, d->base, d->depth, d->fg_prob, d->overlap, d->jitter,
            SEG_MAX_THREADS,
            (unsigned long long)d->seed, d->out, SEG_MAX_DIR, d->val_split, d->size, d->train_vols, d->val_vols);
}

/* One rule of one option: prints "--flag must be RULE, got VALUE" when broken. */
static bool rule(bool ok, const char *flag, const char *what, const char *got)
{
    if (!ok) fprintf(stderr, "segment3d: %s must be %s, got %s\n", flag, what, got);
    return ok;
}

static bool int_rule(bool ok, const char *flag, const char *what, long long got)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", got);
    return rule(ok, flag, what, v);
}

static bool real_rule(bool ok, const char *flag, const char *what, double got)
{
    char v[64];
    snprintf(v, sizeof v, "%g", got);
    return rule(ok, flag, what, v);
}

static bool common_rules(const options *o)
{
    char threads[32];
    snprintf(threads, sizeof threads, "in [1, %d]", SEG_MAX_THREADS);
    return int_rule(o->threads == -1 || (o->threads >= 1 && o->threads <= SEG_MAX_THREADS), "--threads", threads,
                    o->threads) &&
           real_rule(o->overlap >= 0 && o->overlap < 1, "--overlap", "in [0, 1)", o->overlap);
}

/* Each rule on its own, so the message names the option and the value that broke it. */
static bool check_train(const options *o)
{
    char dir[32], out_len[48], data_len[48], norm[80], intensity[80], patch[64];
    snprintf(dir, sizeof dir, "at most %d bytes long", SEG_MAX_DIR);
    snprintf(out_len, sizeof out_len, "a name of %zu bytes", strlen(o->out));
    snprintf(data_len, sizeof data_len, "a name of %zu bytes", o->data ? strlen(o->data) : 0);
    snprintf(norm, sizeof norm, "\"%.64s\"", o->norm);
    snprintf(intensity, sizeof intensity, "\"%.64s\"", o->intensity);
    bool ok = rule(strlen(o->out) <= SEG_MAX_DIR, "--out", dir, out_len) &&
              rule(!o->data || strlen(o->data) <= SEG_MAX_DIR, "--data", dir, data_len) &&
              int_rule(o->epochs >= 1, "--epochs", ">= 1", o->epochs) &&
              int_rule(o->steps >= 1, "--steps", ">= 1", o->steps) &&
              int_rule(o->batch >= 1 && o->batch <= 64, "--batch-size", "in [1, 64]", o->batch) &&
              real_rule(o->lr > 0, "--lr", "> 0", o->lr) &&
              int_rule(o->depth >= 1 && o->depth <= 5, "--depth", "in [1, 5]", o->depth) &&
              int_rule(o->base >= 1 && o->base <= 256, "--base", "in [1, 256]", o->base) &&
              rule(!strcmp(o->norm, "instance") || !strcmp(o->norm, "batch") || !strcmp(o->norm, "group"), "--norm",
                   "instance, batch or group", norm) &&
              rule(intensity_mode_known(o->intensity), "--intensity", "dataset, volume or none", intensity) &&
              int_rule(strcmp(o->norm, "group") || o->base % 4 == 0, "--base", "a multiple of 4 with --norm group",
                       o->base) &&
              int_rule(strcmp(o->norm, "batch") || o->batch >= 2, "--batch-size", ">= 2 with --norm batch", o->batch);
    if (!ok) return false;
    snprintf(patch, sizeof patch, "a multiple of 2^depth = %d in [%d, 256]", 1 << o->depth, 1 << o->depth);
    ok = int_rule(o->patch >= (1 << o->depth) && o->patch <= 256 && o->patch % (1 << o->depth) == 0, "--patch", patch,
                  o->patch) &&
         real_rule(o->fg_prob >= 0 && o->fg_prob <= 1, "--fg-prob", "in [0, 1]", o->fg_prob) &&
         real_rule(o->jitter >= 0 && o->jitter <= 1, "--jitter", "in [0, 1]", o->jitter) && common_rules(o);
    if (!ok) return false;
    if (o->data) return real_rule(o->val_split > 0 && o->val_split < 1, "--val-split", "in (0, 1)", o->val_split);
    return int_rule(o->size >= 8 && o->size <= 256, "--size", "in [8, 256]", o->size) &&
           int_rule(o->train_vols >= 1 && o->train_vols <= 100000, "--train-volumes", "in [1, 100000]",
                    o->train_vols) &&
           int_rule(o->val_vols >= 1 && o->val_vols <= 100000, "--val-volumes", "in [1, 100000]", o->val_vols);
}

static bool check_predict(const options *o)
{
    if (!o->model) {
        fprintf(stderr, "segment3d: predict needs --model FILE (a checkpoint written by segment3d train)\n");
        return false;
    }
    if (!o->input || !o->output) {
        fprintf(stderr,
                "segment3d: predict needs an input and an output file: predict --model M IN.nii.gz OUT.nii.gz\n");
        return false;
    }
    return common_rules(o);
}

int parse_args(int argc, char **argv, options *o)
{
    *o = defaults;
    int i = 1;
    if (i < argc && !strcmp(argv[i], "train")) i++;
    else if (i < argc && !strcmp(argv[i], "predict")) o->predict = true, i++;
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n = 0;
        bool ok = true;
        const char *want = "an integer";
#define TAKE(flag) (!strcmp(a, flag) && v && (++i, 1))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        } else if (TAKE("--threads")) ok = int_arg(v, INT_MAX, &n), o->threads = (int)n;
        else if (TAKE("--overlap")) ok = real_arg(v, &o->overlap), want = "a number";
        else if (o->predict && TAKE("--model")) o->model = v;
        else if (o->predict && a[0] != '-' && !o->input) o->input = a;
        else if (o->predict && a[0] != '-' && !o->output) o->output = a;
        else if (o->predict) {
            fprintf(stderr, "segment3d: predict: unknown, extra or incomplete argument \"%s\"\n\n", a);
            usage(stderr);
            return 2;
        } else if (TAKE("--epochs")) ok = int_arg(v, INT_MAX, &n), o->epochs = (int)n;
        else if (TAKE("--steps")) ok = int_arg(v, INT_MAX, &n), o->steps = (int)n;
        else if (TAKE("--batch-size")) ok = int_arg(v, INT_MAX, &n), o->batch = (int)n;
        else if (TAKE("--lr")) ok = real_arg(v, &o->lr), want = "a number";
        else if (TAKE("--patch")) ok = int_arg(v, INT_MAX, &n), o->patch = (int)n;
        else if (TAKE("--base")) ok = int_arg(v, INT_MAX, &n), o->base = (int)n;
        else if (TAKE("--depth")) ok = int_arg(v, INT_MAX, &n), o->depth = (int)n;
        else if (TAKE("--norm")) o->norm = v;
        else if (TAKE("--intensity")) o->intensity = v;
        else if (TAKE("--fg-prob")) ok = real_arg(v, &o->fg_prob), want = "a number";
        else if (TAKE("--jitter")) ok = real_arg(v, &o->jitter), want = "a number";
        else if (TAKE("--seed")) ok = u64_arg(v, &o->seed), want = "an integer in [0, 2^64)";
        else if (TAKE("--out")) o->out = v;
        else if (TAKE("--data")) o->data = v;
        else if (TAKE("--val-split")) ok = real_arg(v, &o->val_split), want = "a number";
        else if (TAKE("--size")) ok = int_arg(v, INT_MAX, &n), o->size = (int)n;
        else if (TAKE("--train-volumes")) ok = int_arg(v, INT_MAX, &n), o->train_vols = (int)n;
        else if (TAKE("--val-volumes")) ok = int_arg(v, INT_MAX, &n), o->val_vols = (int)n;
        else if (!strcmp(a, "--no-pictures")) o->pictures = 0;
        else if (!strcmp(a, "--resume")) o->resume = 1;
        else if (!strcmp(a, "--quiet")) o->quiet = 1;
        else {
            fprintf(stderr, "segment3d: unknown or incomplete option \"%s\"\n\n", a);
            usage(stderr);
            return 2;
        }
#undef TAKE
        if (!ok) {
            fprintf(stderr, "segment3d: %s expects %s, got \"%s\"\n", a, want, v);
            return 2;
        }
    }
    return (o->predict ? check_predict(o) : check_train(o)) ? 0 : 2;
}

static bp_status put(bp_dict *d, const char *key, bp_dtype dt, int64_t n, const void *data)
{
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, dt, n < 0 ? 0 : 1, &n, data));
    bp_status st = bp_dict_set_tensor(d, key, t);
    bp_tensor_free(t);
    return st;
}

static bp_status put_i64(bp_dict *d, const char *key, int64_t v) { return put(d, key, BP_INT64, -1, &v); }
static bp_status put_f64(bp_dict *d, const char *key, double v) { return put(d, key, BP_FLOAT64, -1, &v); }
static bp_status put_text(bp_dict *d, const char *key, const char *s)
{
    return put(d, key, BP_UINT8, (int64_t)strlen(s), s);
}

static bp_status fill_meta(const options *o, bp_dict *d)
{
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed); /* text: every 64-bit seed, printed exactly */
    BP_TRY(put_text(d, "--seed", seed));
    BP_TRY(put_i64(d, "--batch-size", o->batch));
    BP_TRY(put_i64(d, "--steps", o->steps));
    BP_TRY(put_f64(d, "--lr", o->lr));
    BP_TRY(put_i64(d, "--patch", o->patch));
    BP_TRY(put_i64(d, "--base", o->base));
    BP_TRY(put_i64(d, "--depth", o->depth));
    BP_TRY(put_text(d, "--norm", o->norm));
    BP_TRY(put_text(d, "--intensity", o->intensity));
    BP_TRY(put_f64(d, "--fg-prob", o->fg_prob));
    BP_TRY(put_f64(d, "--overlap", o->overlap));
    BP_TRY(put_f64(d, "--jitter", o->jitter));
    if (o->data) {
        BP_TRY(put_text(d, "--data", o->data));
        return put_f64(d, "--val-split", o->val_split);
    }
    BP_TRY(put_i64(d, "--size", o->size));
    BP_TRY(put_i64(d, "--train-volumes", o->train_vols));
    return put_i64(d, "--val-volumes", o->val_vols);
}

bp_status options_to_meta(const options *o, bp_dict **out)
{
    BP_TRY(bp_dict_new(out));
    bp_status st = fill_meta(o, *out);
    if (st) {
        bp_dict_free(*out);
        *out = NULL;
    }
    return st;
}
