/* io/train_checkpoint.c — training checkpoints (see bpc/train_checkpoint.h).
 *
 * Built from the checkpoint building blocks: the parts go into one flat dict
 * under their prefixes and bp_checkpoint_write saves it atomically. A resume
 * reads the file, checks every part against the run (version, expected
 * metadata, position, classes, streams, leftover entries, then the variables
 * with bp_checkpoint_load_vars, which itself checks everything before it
 * writes), and only then restores the streams and the position, which can no
 * longer fail. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/optimizer.h>
#include <bpc/scheduler.h>
#include <bpc/train_checkpoint.h>

#define RNG_NAME_MAX 64

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The lr scheduler stored with the optimizer, and one stored on its own (NULL
 * when s->scheduler is the optimizer's, or absent). */
static bp_node *owned_scheduler(const bp_train_state *s)
{
    return s->optimizer ? bp_optim_scheduler(s->optimizer) : NULL;
}
static bp_node *separate_scheduler(const bp_train_state *s)
{
    return s->scheduler && s->scheduler != owned_scheduler(s) ? s->scheduler : NULL;
}

static bp_status check_state(const char *who, const char *filename, const bp_train_state *s)
{
    if (!filename || !s || !s->model)
        return bp_fail(BP_EINVAL, "%s: %s is NULL", who, !filename ? "filename" : !s ? "state" : "state->model");
    if (s->optimizer && !bp_is_optimizer(s->optimizer))
        return bp_fail(BP_EINVAL, "%s: state->optimizer is a %s node, not an optimizer", who,
                       bp_node_class_name(s->optimizer));
    if (s->scheduler && !bp_is_scheduler(s->scheduler))
        return bp_fail(BP_EINVAL, "%s: state->scheduler is a %s node, not a scheduler", who,
                       bp_node_class_name(s->scheduler));
    if (s->n_rngs && !s->rngs) return bp_fail(BP_EINVAL, "%s: state->rngs is NULL with n_rngs %zu", who, s->n_rngs);
    for (size_t i = 0; i < s->n_rngs; i++) {
        const char *nm = s->rngs[i].name;
        size_t len = nm ? strlen(nm) : 0;
        bool printable = len > 0 && len <= RNG_NAME_MAX;
        for (size_t k = 0; printable && k < len; k++) printable = nm[k] >= 0x20 && nm[k] <= 0x7e && nm[k] != '/';
        if (!printable)
            return bp_fail(BP_EINVAL, "%s: state->rngs[%zu].name must be 1 to %d printable characters without '/'",
                           who, i, RNG_NAME_MAX);
        if (!s->rngs[i].rng) return bp_fail(BP_EINVAL, "%s: state->rngs[%zu] (\"%s\") has a NULL rng", who, i, nm);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s->rngs[j].name, nm))
                return bp_fail(BP_EINVAL, "%s: two streams are named \"%s\"", who, nm);
    }
    return BP_OK;
}

/* ------------------------------------------------------------------- save */

static bp_status put_i64(bp_dict *flat, const char *key, int64_t v)
{
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, BP_INT64, 0, NULL, &v));
    bp_status st = bp_dict_set_tensor(flat, key, t);
    bp_tensor_free(t);
    return st;
}

/* A class name as uint8 text; none (NULL node) writes nothing. */
static bp_status put_class(bp_dict *flat, const char *key, const bp_node *n)
{
    if (!n) return BP_OK;
    const char *name = bp_node_class_name(n);
    int64_t len = (int64_t)strlen(name);
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, BP_UINT8, 1, &len, name));
    bp_status st = bp_dict_set_tensor(flat, key, t);
    bp_tensor_free(t);
    return st;
}

/* vars().unique() of node under prefix. */
static bp_status put_node_vars(bp_dict *flat, const char *prefix, bp_node *n)
{
    if (!n) return BP_OK;
    bp_collector *all, *uniq;
    BP_TRY(bp_node_vars(n, NULL, &all));
    bp_status st = bp_collector_unique(all, &uniq);
    bp_collector_free(all);
    if (st) return st;
    st = bp_checkpoint_put_vars(flat, prefix, uniq);
    bp_collector_free(uniq);
    return st;
}

static bp_status put_all(bp_dict *flat, const bp_train_state *s, const bp_dict *metadata)
{
    BP_TRY(put_i64(flat, "train/version", BP_TRAIN_CKPT_VERSION));
    BP_TRY(put_i64(flat, "train/epoch", s->epoch));
    BP_TRY(put_i64(flat, "train/step", s->step));
    BP_TRY(put_class(flat, "train/model_class", s->model));
    BP_TRY(put_class(flat, "train/optimizer_class", s->optimizer));
    BP_TRY(put_class(flat, "train/lr_scheduler_class", owned_scheduler(s)));
    BP_TRY(put_class(flat, "train/scheduler_class", separate_scheduler(s)));
    BP_TRY(put_node_vars(flat, "model/", s->model));
    BP_TRY(put_node_vars(flat, "optim/", s->optimizer));
    BP_TRY(put_node_vars(flat, "sched/", separate_scheduler(s)));
    char key[RNG_NAME_MAX + 8];
    for (size_t i = 0; i < s->n_rngs; i++) {
        snprintf(key, sizeof key, "rng/%s", s->rngs[i].name);
        BP_TRY(bp_checkpoint_put_rng(flat, key, s->rngs[i].rng));
    }
    for (size_t i = 0; metadata && i < bp_dict_len(metadata); i++) {
        bp_tensor *t = bp_dict_tensor(metadata, i);
        const char *k = bp_dict_key(metadata, i);
        if (!t) return bp_fail(BP_EINVAL, "metadata entry \"%s\" is a nested dict; metadata must be flat", k);
        if (strlen(k) + sizeof "meta/" > BP_CKPT_MAX_KEY + 1)
            return bp_fail(BP_EINVAL, "metadata key \"%.40s...\" is longer than %d bytes with its \"meta/\" prefix", k,
                           BP_CKPT_MAX_KEY);
        char mk[BP_CKPT_MAX_KEY + 1];
        snprintf(mk, sizeof mk, "meta/%s", k);
        BP_TRY(bp_dict_set_tensor(flat, mk, t));
    }
    return BP_OK;
}

bp_status bp_train_checkpoint_save(const char *filename, const bp_train_state *s, const bp_dict *metadata)
{
    BP_TRY(check_state("train_checkpoint_save", filename, s));
    if (s->epoch < 0 || s->step < 0)
        return bp_fail(BP_EINVAL, "train_checkpoint_save: the position (epoch %lld, step %lld) must not be negative",
                       (long long)s->epoch, (long long)s->step);
    bp_dict *flat;
    BP_TRY(bp_dict_new(&flat));
    bp_status st = put_all(flat, s, metadata);
    if (st) st = bp_fail(st, "train_checkpoint_save: %s: %s", filename, bp_last_error());
    else st = bp_checkpoint_write(filename, flat); /* its messages name the file */
    bp_dict_free(flat);
    return st;
}

/* ----------------------------------------------------------------- resume */

/* A scalar int64 entry; BP_EFORMAT when absent or of another kind. */
static bp_status get_i64(const bp_dict *flat, const char *key, int64_t *out)
{
    const bp_tensor *t = bp_dict_get_tensor(flat, key);
    if (!t || t->dtype != BP_INT64 || t->numel != 1)
        return bp_fail(BP_EFORMAT, "\"%s\" is %s; is it a bpc training checkpoint?", key,
                       t ? "not an int64 scalar" : "missing");
    memcpy(out, t->data, sizeof *out);
    return BP_OK;
}

static bool is_text(const bp_tensor *t)
{
    if (t->dtype != BP_UINT8 || t->ndim != 1) return false;
    const unsigned char *c = t->data;
    for (int64_t i = 0; i < t->numel; i++)
        if (c[i] < 0x20 || c[i] > 0x7e) return false;
    return true;
}

/* Shortest %g that reads back as the same double (or float). */
static void print_real(char *buf, size_t cap, double v, bool single)
{
    for (int p = single ? 6 : 15; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        double back = strtod(buf, NULL);
        if (single ? (float)back == (float)v : back == v) return;
    }
}

/* A value as a message shows it: text quoted, a scalar as its number, else
 * its dtype and shape. */
static const char *describe(char *buf, size_t cap, const bp_tensor *t)
{
    char sh[96];
    if (is_text(t))
        snprintf(buf, cap, "\"%.*s\"", (int)(t->numel < 200 ? t->numel : 200), (const char *)t->data);
    else if (t->numel == 1 && (t->dtype == BP_FLOAT32 || t->dtype == BP_FLOAT64))
        print_real(buf, cap, bp_tensor_get(t, 0), t->dtype == BP_FLOAT32);
    else if (t->numel == 1)
        snprintf(buf, cap, "%lld", (long long)bp_tensor_get(t, 0));
    else
        snprintf(buf, cap, "%s %s", bp_dtype_name(t->dtype), bp_shape_str(sh, sizeof sh, t->ndim, t->shape));
    return buf;
}

static bool same_bits(const bp_tensor *a, const bp_tensor *b)
{
    return a->dtype == b->dtype && bp_tensor_same_shape(a, b) && !memcmp(a->data, b->data, bp_tensor_nbytes(a));
}

/* The class recorded under key against the run's node (NULL = none). */
static bp_status check_class(const bp_dict *flat, const char *key, const char *what, const bp_node *n)
{
    const bp_tensor *t = bp_dict_get_tensor(flat, key);
    if (t && !is_text(t)) return bp_fail(BP_EFORMAT, "\"%s\" is not text", key);
    const char *mine = n ? bp_node_class_name(n) : NULL;
    size_t len = t ? (size_t)t->numel : 0;
    if (!t && !mine) return BP_OK;
    if (t && mine && strlen(mine) == len && !memcmp(t->data, mine, len)) return BP_OK;
    char was[128] = "(none)";
    if (t) snprintf(was, sizeof was, "%.*s", (int)(len < 100 ? len : 100), (const char *)t->data);
    return bp_fail(BP_EFORMAT, "it was written with %s %s; this run has %s %s", what, was, what, mine ? mine : "(none)");
}

static bp_status check_version(const bp_dict *flat)
{
    int64_t version = 0;
    BP_TRY(get_i64(flat, "train/version", &version));
    if (version != BP_TRAIN_CKPT_VERSION)
        return bp_fail(BP_EFORMAT, "training checkpoint version %lld; this bpc reads version %d", (long long)version,
                       BP_TRAIN_CKPT_VERSION);
    return BP_OK;
}

static bp_status check_position(const bp_dict *flat, const bp_train_resume_opts *o, int64_t *epoch, int64_t *step)
{
    BP_TRY(get_i64(flat, "train/epoch", epoch));
    BP_TRY(get_i64(flat, "train/step", step));
    bool bad = *epoch < 0 || *step < 0;
    if (o && o->epochs > 0) bad = bad || *epoch > o->epochs || (*epoch == o->epochs && *step != 0);
    if (o && o->steps_per_epoch > 0) bad = bad || *step >= o->steps_per_epoch;
    if (!bad) return BP_OK;
    char ep[64] = "", sp[64] = "";
    if (o && o->epochs > 0) snprintf(ep, sizeof ep, " in [0, %lld]", (long long)o->epochs);
    if (o && o->steps_per_epoch > 0) snprintf(sp, sizeof sp, " in [0, %lld)", (long long)o->steps_per_epoch);
    return bp_fail(BP_EFORMAT, "its position (epoch %lld, step %lld) is out of range: the epoch must be%s%s, the step%s%s",
                   (long long)*epoch, (long long)*step, ep[0] ? "" : " >= 0", ep, sp[0] ? "" : " >= 0", sp);
}

static bp_status check_expected(const bp_dict *meta, const bp_dict *expect)
{
    for (size_t i = 0; expect && i < bp_dict_len(expect); i++) {
        const char *key = bp_dict_key(expect, i);
        const bp_tensor *want = bp_dict_tensor(expect, i), *got = bp_dict_get_tensor(meta, key);
        char a[256], b[256];
        if (!want) return bp_fail(BP_EINVAL, "expected metadata \"%s\" is a nested dict; it must be flat", key);
        if (!got)
            return bp_fail(BP_EINVAL, "it was written without %s; this run has %s %s", key, key,
                           describe(b, sizeof b, want));
        if (same_bits(got, want)) continue;
        describe(a, sizeof a, got);
        describe(b, sizeof b, want);
        if (!strcmp(a, b)) /* same shape and dtype: say so rather than print two equal strings */
            return bp_fail(BP_EINVAL, "it was written with another %s (%s, other values) than this run's", key, a);
        return bp_fail(BP_EINVAL, "it was written with %s %s; this run has %s %s", key, a, key, b);
    }
    return BP_OK;
}

/* Each stream of s from rng/<name> into tmp; none missing, none extra. */
static bp_status read_streams(const bp_dict *rng, const bp_train_state *s, bp_rng *tmp)
{
    for (size_t i = 0; i < s->n_rngs; i++) {
        const char *nm = s->rngs[i].name;
        if (!bp_dict_get_tensor(rng, nm)) return bp_fail(BP_EFORMAT, "it has no random stream \"rng/%s\"", nm);
        bp_status st = bp_checkpoint_get_rng(rng, nm, &tmp[i]);
        if (st) return bp_fail(BP_EFORMAT, "random stream \"rng/%s\": %s", nm, bp_last_error());
    }
    for (size_t j = 0; j < bp_dict_len(rng); j++) {
        size_t i = 0;
        while (i < s->n_rngs && strcmp(s->rngs[i].name, bp_dict_key(rng, j))) i++;
        if (i == s->n_rngs)
            return bp_fail(BP_EFORMAT, "it holds a random stream \"rng/%s\" that this run does not have",
                           bp_dict_key(rng, j));
    }
    return BP_OK;
}

static bp_status node_vars_unique(bp_node *n, bp_collector **out)
{
    *out = NULL;
    if (!n) return BP_OK;
    bp_collector *all;
    BP_TRY(bp_node_vars(n, NULL, &all));
    bp_status st = bp_collector_unique(all, out);
    bp_collector_free(all);
    return st;
}

/* The variables, all or nothing; flat holds only model/ optim/ sched/ entries by now. */
static bp_status load_variables(const bp_dict *flat, const bp_train_state *s)
{
    bp_node *nodes[3] = {s->model, s->optimizer, separate_scheduler(s)};
    static const char *const prefixes[3] = {"model/", "optim/", "sched/"};
    bp_collector *vars[3] = {NULL, NULL, NULL};
    bp_ckpt_vars groups[3];
    size_t ng = 0;
    bp_status st = BP_OK;
    for (int g = 0; g < 3 && !st; g++) {
        if (!nodes[g]) continue;
        st = node_vars_unique(nodes[g], &vars[g]);
        if (!st) groups[ng++] = (bp_ckpt_vars){prefixes[g], vars[g]};
    }
    for (size_t i = 0; !st && i < bp_dict_len(flat); i++) {
        const char *key = bp_dict_key(flat, i);
        size_t g = 0;
        while (g < ng && !starts_with(key, groups[g].prefix)) g++;
        if (g == ng) st = bp_fail(BP_EFORMAT, "it holds an entry \"%s\" that belongs to no part of this run", key);
    }
    bp_load_opts lo = {.strict = true, .warn = false};
    if (!st) st = bp_checkpoint_load_vars(flat, groups, ng, &lo, NULL);
    for (int g = 0; g < 3; g++) bp_collector_free(vars[g]);
    return st;
}

/* Every check, then the variables; the streams go to tmp, the metadata to *meta. */
static bp_status resume_checked(bp_dict *flat, const bp_train_state *s, const bp_train_resume_opts *o,
                                int64_t pos[2], bp_rng *tmp, bp_dict **meta)
{
    /* Once it is a training checkpoint, the caller's own terms first (an
     * option that differs explains a position out of range or another
     * optimizer better than they do). */
    BP_TRY(check_version(flat));
    BP_TRY(bp_checkpoint_take_prefix(flat, "meta/", meta));
    BP_TRY(check_expected(*meta, o ? o->expect : NULL));
    BP_TRY(check_position(flat, o, &pos[0], &pos[1]));
    BP_TRY(check_class(flat, "train/model_class", "model", s->model));
    BP_TRY(check_class(flat, "train/optimizer_class", "optimizer", s->optimizer));
    BP_TRY(check_class(flat, "train/lr_scheduler_class", "lr scheduler", owned_scheduler(s)));
    BP_TRY(check_class(flat, "train/scheduler_class", "scheduler", separate_scheduler(s)));
    bp_dict *rng, *train;
    BP_TRY(bp_checkpoint_take_prefix(flat, "rng/", &rng));
    bp_status st = read_streams(rng, s, tmp);
    bp_dict_free(rng);
    if (st) return st;
    BP_TRY(bp_checkpoint_take_prefix(flat, "train/", &train));
    bp_dict_free(train);
    return load_variables(flat, s);
}

/* What a file that fits this state can hold: the state's variables, plus
 * the bookkeeping and metadata bound of bp_load_opts. A file claiming more is
 * refused before its data is allocated or inflated. */
static bp_status state_bytes(const bp_train_state *s, uint64_t *out)
{
    bp_node *nodes[3] = {s->model, s->optimizer, separate_scheduler(s)};
    uint64_t total = BP_CKPT_MAX_OTHER_BYTES;
    for (int k = 0; k < 3; k++) {
        bp_collector *v = NULL;
        BP_TRY(node_vars_unique(nodes[k], &v));
        for (size_t i = 0; v && i < bp_collector_len(v); i++) total += bp_tensor_nbytes(bp_collector_var(v, i)->value);
        bp_collector_free(v);
    }
    *out = total;
    return BP_OK;
}

bp_status bp_train_checkpoint_resume(const char *filename, bp_train_state *s, const bp_train_resume_opts *opts,
                                     bp_dict **metadata)
{
    if (metadata) *metadata = NULL;
    BP_TRY(check_state("train_checkpoint_resume", filename, s));
    bp_rng *tmp = malloc(sizeof *tmp * (s->n_rngs ? s->n_rngs : 1));
    if (!tmp) return bp_fail(BP_ENOMEM, "train_checkpoint_resume: out of memory");
    bp_dict *flat = NULL, *meta = NULL;
    int64_t pos[2] = {0, 0};
    uint64_t cap = 0;
    bp_status st = state_bytes(s, &cap);
    if (!st) st = bp_checkpoint_read_capped(filename, cap, &flat);
    if (!st) st = resume_checked(flat, s, opts, pos, tmp, &meta);
    bp_dict_free(flat);
    if (st) {
        bp_dict_free(meta);
        free(tmp);
        return bp_fail(st, "cannot resume from %s: %s", filename, bp_last_error());
    }
    /* Everything fits and the variables are loaded: the rest cannot fail. */
    for (size_t i = 0; i < s->n_rngs; i++) *s->rngs[i].rng = tmp[i];
    free(tmp);
    s->epoch = pos[0];
    s->step = pos[1];
    if (metadata) *metadata = meta;
    else bp_dict_free(meta);
    return BP_OK;
}
