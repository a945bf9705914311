/* examples/train3d/options.c — see options.h. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "args.h"
#include "data.h"
#include "model.h"
#include "options.h"

static void usage(FILE *f)
{
    /* The model line is read off a small instance of the real model. */
    char model[256] = "the model of examples/train3d/model.h";
    bp_node *net = NULL;
    if (!net_new(&net, NET_GLOBAL, (const int64_t[]){8, 8, 8}, 1, 2, 1)) net_describe(net, true, model, sizeof model);
    bp_node_free(net);
    fprintf(f,
            "usage: train3d [options]\n"
            "Trains %s\non 3-D volumes of C channels and K classes.\n\n"
            "  --epochs N        epochs to train, >= 1 (default 25)\n"
            "  --batch-size N    samples per step, >= 2 (default 16)\n"
            "  --lr X            learning rate, > 0 (default 0.003 for adam, 0.02 for sgd)\n"
            "  --optimizer NAME  adam (default) or sgd (SGD with momentum 0.9)\n"
            "  --threads N       OpenMP threads, 1 to %d (default: all cores)\n"
            "  --seed N          seed of the weights, the data and the shuffles, in [0, 2^64) (default 1)\n"
            "  --out DIR         checkpoints, metrics.csv and model.safetensors go here (default train3d-out;\n"
            "                    DIR and --data DIR: at most %d bytes)\n"
            "  --data DIR        train on DIR/labels.csv + .npy volumes instead of the synthetic shapes\n"
            "                    (finite float32 or uint8 volumes; labels 0..K-1)\n"
            "  --val-split X     with --data: the validation fraction, in (0, 1) (default 0.2)\n"
            "  --train-size N    synthetic training samples, >= 2 (default 2048)\n"
            "  --val-size N      synthetic held-out samples, >= 1 (default 512)\n"
            "  --size S          synthetic volume side, a multiple of 8, >= 8 (default 32)\n"
            "  --resume          continue from DIR/checkpoint.safetensors (same --seed, --batch-size, --lr,\n"
            "                    --optimizer and data options as the run that wrote it; --epochs may grow)\n"
            "  --quiet           per-epoch lines only\n"
            "  --no-sync-bn      under mpirun: BatchNorm takes each rank's own statistics instead of the\n"
            "                    whole global batch's (cross-replica, the default)\n"
            "  --help            this text\n\n"
            "Ctrl-C saves a checkpoint after the current step and exits; --resume continues from it with\n"
            "the same results as an uninterrupted run (same thread count).\n\n"
            "Under MPI (built with OpenMPI): mpirun -n R train3d ... splits every batch over R processes\n"
            "(one shared shuffle; rank r takes its share), sums the gradients across them, and rank 0\n"
            "alone prints and writes files; --resume works with any R (the same R repeats bit for bit).\n",
            model, TRAIN3D_MAX_THREADS, TRAIN3D_MAX_DIR);
}

/* One rule of one option: prints "--flag must be RULE, got VALUE" when broken. */
static bool rule(bool ok, const char *flag, const char *what, const char *got)
{
    if (!ok) fprintf(stderr, "train3d: %s must be %s, got %s\n", flag, what, got);
    return ok;
}

static bool int_rule(bool ok, const char *flag, const char *what, long long got)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", got);
    return rule(ok, flag, what, v);
}

/* The machine's memory in bytes (SIZE_MAX when unknown). */
static size_t physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0 || (size_t)pages > SIZE_MAX / (size_t)page) return SIZE_MAX;
    return (size_t)pages * (size_t)page;
}

/* The synthetic volumes plus one batch's first activation (16 channels) must
 * fit in memory: a lower bound of what the run needs, computed without
 * overflow (--size 32768 --train-size 131072 is 2^64 bytes, which wrapped to 0). */
static bool memory_rule(const options *o)
{
    int64_t per = 0, first = 0;
    size_t data = 0, act = 0, mem = physical_memory();
    bool fits = !__builtin_mul_overflow((int64_t)o->size * o->size, (int64_t)o->size, &per) &&
                data_bytes(o->train_n + o->val_n, per, &data) && !__builtin_mul_overflow(per, (int64_t)16, &first) &&
                data_bytes(o->batch, first, &act) && data <= mem && act <= mem - data;
    if (!fits)
        fprintf(stderr,
                "train3d: --train-size %lld + --val-size %lld volumes of --size %d (%d^3 floats each) and a batch of "
                "--batch-size %d need more than this machine's %.1f GiB of memory\n",
                (long long)o->train_n, (long long)o->val_n, o->size, o->size, o->batch, (double)mem / (1u << 30));
    return fits;
}

/* Each rule on its own, so the message names the option and the value that broke it. */
static bool check_values(const options *o, bool lr_given)
{
    char lr[64], threads[32], opt[80];
    snprintf(lr, sizeof lr, "%g", o->lr);
    snprintf(opt, sizeof opt, "\"%.64s\"", o->optimizer);
    snprintf(threads, sizeof threads, "in [1, %d]", TRAIN3D_MAX_THREADS);
    char dir[32], out_len[48], data_len[48];
    snprintf(dir, sizeof dir, "at most %d bytes long", TRAIN3D_MAX_DIR);
    snprintf(out_len, sizeof out_len, "a name of %zu bytes", strlen(o->out));
    snprintf(data_len, sizeof data_len, "a name of %zu bytes", o->data ? strlen(o->data) : 0);
    bool ok = rule(strlen(o->out) <= TRAIN3D_MAX_DIR, "--out", dir, out_len) &&
              rule(!o->data || strlen(o->data) <= TRAIN3D_MAX_DIR, "--data", dir, data_len) &&
              int_rule(o->epochs >= 1, "--epochs", ">= 1", o->epochs) &&
              int_rule(o->batch >= 2, "--batch-size", ">= 2 (BatchNorm needs two samples)", o->batch) &&
              rule(!lr_given || o->lr > 0, "--lr", "> 0", lr) &&
              int_rule(o->threads == -1 || (o->threads >= 1 && o->threads <= TRAIN3D_MAX_THREADS), "--threads",
                       threads, o->threads) &&
              rule(!strcmp(o->optimizer, "adam") || !strcmp(o->optimizer, "sgd"), "--optimizer", "adam or sgd", opt);
    if (ok && o->data) {
        char vs[64];
        snprintf(vs, sizeof vs, "%g", o->val_split);
        return rule(o->val_split > 0 && o->val_split < 1, "--val-split", "in (0, 1)", vs);
    }
    return ok && int_rule(o->train_n >= 2, "--train-size", ">= 2", o->train_n) &&
           int_rule(o->val_n >= 1, "--val-size", ">= 1", o->val_n) &&
           int_rule(o->size >= 8 && o->size % 8 == 0, "--size", "a multiple of 8, >= 8", o->size) && memory_rule(o);
}

int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.epochs = 25, .batch = 16, .threads = -1, .lr = 0, .val_split = 0.2, .optimizer = "adam",
                   .out = "train3d-out", .seed = 1, .train_n = 2048, .val_n = 512, .size = 32};
    bool lr_given = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n = 0;
        bool ok = true;
        const char *want = "an integer";
#define TAKE(flag) (!strcmp(a, flag) && v && (++i, 1))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        } else if (TAKE("--epochs")) ok = int_arg(v, INT_MAX, &n), o->epochs = (int)n;
        else if (TAKE("--batch-size")) ok = int_arg(v, INT_MAX, &n), o->batch = (int)n;
        else if (TAKE("--lr")) ok = real_arg(v, &o->lr), want = "a number", lr_given = true;
        else if (TAKE("--optimizer")) o->optimizer = v;
        else if (TAKE("--threads")) ok = int_arg(v, INT_MAX, &n), o->threads = (int)n;
        else if (TAKE("--seed")) ok = u64_arg(v, &o->seed), want = "an integer in [0, 2^64)";
        else if (TAKE("--out")) o->out = v;
        else if (TAKE("--data")) o->data = v;
        else if (TAKE("--val-split")) ok = real_arg(v, &o->val_split), want = "a number";
        else if (TAKE("--train-size")) ok = int_arg(v, INT64_MAX, &n), o->train_n = n;
        else if (TAKE("--val-size")) ok = int_arg(v, INT64_MAX, &n), o->val_n = n;
        else if (TAKE("--size")) ok = int_arg(v, INT_MAX, &n), o->size = (int)n;
        else if (!strcmp(a, "--resume")) o->resume = 1;
        else if (!strcmp(a, "--quiet")) o->quiet = 1;
        else if (!strcmp(a, "--no-sync-bn")) o->no_sync_bn = 1;
        else {
            fprintf(stderr, "train3d: unknown or incomplete option \"%s\"\n\n", a);
            usage(stderr);
            return 2;
        }
#undef TAKE
        if (!ok) {
            fprintf(stderr, "train3d: %s expects %s, got \"%s\"\n", a, want, v);
            return 2;
        }
    }
    if (!check_values(o, lr_given)) return 2;
    if (!lr_given) o->lr = strcmp(o->optimizer, "adam") ? 0.02 : 0.003;
    return 0;
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
    BP_TRY(put_text(d, "--optimizer", o->optimizer)); /* before --lr, whose default it sets */
    BP_TRY(put(d, "--lr", BP_FLOAT64, -1, &o->lr));
    if (o->data) {
        BP_TRY(put_text(d, "--data", o->data));
        return put(d, "--val-split", BP_FLOAT64, -1, &o->val_split);
    }
    BP_TRY(put_i64(d, "--size", o->size));
    BP_TRY(put_i64(d, "--train-size", o->train_n));
    return put_i64(d, "--val-size", o->val_n);
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
