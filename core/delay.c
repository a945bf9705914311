/* core/delay.c — LengthDelay ring buffers and the node-level delay API,
 * with BrainPy <= 2.4.5 semantics (docs/brainpy-semantics.md §2.13).
 *
 * Shapes: a target of shape S (any dtype) gives data of shape (n, *S) with
 * n = max_len + 1 rows, and idx of shape (1,) (int32). Row r holds the value
 * written (r - idx) mod n updates ago, so
 *   retrieve(d) = data[(idx + d) mod n]        one row read (|S| elements)
 *   update(v):    idx = (idx - 1) mod n; data[idx] = v   one row written
 * Every modulo is the non-negative one, so an idx loaded from a checkpoint
 * (or a negative intermediate) still lands on a row.
 *
 * global_delay_data is one process-wide table, identifier -> (LengthDelay or
 * NULL, target var, owner node), guarded by table_lock. The table holds a
 * reference to each delay and target; the owner (the node that created the
 * delay, or that made a step-less registration) is a plain pointer, cleared
 * by bp__delay_forget_owner when the owner is freed. Nothing that can free a
 * node runs while table_lock is held: bp_node_free calls back into
 * bp__delay_forget_owner, which takes the lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/delay.h>
#include "node_priv.h"

typedef struct bp_length_delay {
    bp_node base;
    bp_var *data;   /* borrowed: declared as the node's attribute "data" */
    bp_var *idx;    /* borrowed: declared as the node's attribute "idx" */
} bp_length_delay;

/* update(x) pushes x, as LengthDelay.update(value); it returns no tensor. */
static bp_status length_delay_update_hook(bp_node *self, bp_tensor *x, bp_tensor **out)
{
    *out = NULL;
    return bp_length_delay_update(self, x);
}

const bp_node_class bp_length_delay_class = {
    .name = "LengthDelay",
    .size = sizeof(bp_length_delay),
    .update = length_delay_update_hook,
};

/* ------------------------------------------------------------ helpers */

static bp_length_delay *as_delay(bp_node *n) { return (bp_length_delay *)n; }

static bp_status check_delay(const bp_node *n, const char *who)
{
    if (!n) return bp_fail(BP_EINVAL, "%s: delay is NULL", who);
    if (n->cls != &bp_length_delay_class)
        return bp_fail(BP_EINVAL, "%s: expected a LengthDelay, got %s \"%s\"", who, n->cls->name,
                       bp_node_name(n));
    return BP_OK;
}

/* x mod n in [0, n) for n > 0, whatever the sign of x. */
static int64_t pos_mod(int64_t x, int64_t n)
{
    int64_t r = x % n;
    return r < 0 ? r + n : r;
}

static int64_t num_rows(const bp_length_delay *d) { return d->data->value->shape[0]; }

/* Elements per row: the target's numel. */
static int64_t row_numel(const bp_length_delay *d)
{
    const bp_tensor *t = d->data->value;
    return t->shape[0] ? t->numel / t->shape[0] : 0;
}

static int64_t read_idx(const bp_length_delay *d)
{
    return pos_mod(((const int32_t *)d->idx->value->data)[0], num_rows(d));
}

/* Copies count elements of src (from element src_off) into dst (from element
 * dst_off), converting to dst's dtype when they differ. */
static void copy_elems(bp_tensor *dst, int64_t dst_off, const bp_tensor *src, int64_t src_off,
                       int64_t count)
{
    if (count <= 0) return;
    if (dst->dtype == src->dtype) {
        size_t es = bp_dtype_size(dst->dtype);
        memcpy((char *)dst->data + (size_t)dst_off * es, (const char *)src->data + (size_t)src_off * es,
               (size_t)count * es);
        return;
    }
    for (int64_t i = 0; i < count; i++) bp_tensor_set(dst, dst_off + i, bp_tensor_get(src, src_off + i));
}

/* The data buffer of a fresh or reset delay: (max_len + 1, *target.shape),
 * row 0 = target, rows 1.. = initial broadcast (a scalar, one row of
 * target.shape, or all max_len rows) or zeros. Validates before allocating. */
static bp_status build_data(const char *who, const bp_tensor *target, int64_t max_len,
                            const bp_tensor *initial, bp_tensor **out)
{
    char a[96], b[96];
    *out = NULL;
    if (target->ndim + 1 > BP_MAX_DIMS)
        return bp_fail(BP_ESHAPE, "%s: the target must have at most %d dims (the buffer adds one), got %d-D %s",
                       who, BP_MAX_DIMS - 1, target->ndim,
                       bp_shape_str(a, sizeof a, target->ndim, target->shape));
    int64_t shape[BP_MAX_DIMS];
    shape[0] = max_len + 1;
    for (int i = 0; i < target->ndim; i++) shape[i + 1] = target->shape[i];
    int64_t row = target->numel;
    int kind = 0; /* 0 none, 1 scalar, 2 one row for every step, 3 all max_len rows */
    if (initial) {
        int64_t rows[BP_MAX_DIMS];
        rows[0] = max_len;
        for (int i = 0; i < target->ndim; i++) rows[i + 1] = target->shape[i];
        if (initial->ndim == 0)
            kind = 1;
        else if (bp_tensor_has_shape(initial, target->ndim, target->shape))
            kind = 2;
        else if (bp_tensor_has_shape(initial, target->ndim + 1, rows))
            kind = 3;
        else {
            char c[96];
            return bp_fail(BP_ESHAPE,
                           "%s: initial delay data must be a scalar, of the target's shape %s or of shape %s, "
                           "got %s",
                           who, bp_shape_str(a, sizeof a, target->ndim, target->shape),
                           bp_shape_str(b, sizeof b, target->ndim + 1, rows),
                           bp_shape_str(c, sizeof c, initial->ndim, initial->shape));
        }
    }
    bp_tensor *data;
    BP_TRY(bp_tensor_new(&data, target->dtype, target->ndim + 1, shape));
    copy_elems(data, 0, target, 0, row);
    for (int64_t r = 1; r <= max_len; r++) {
        if (kind == 1)
            for (int64_t i = 0; i < row; i++) bp_tensor_set(data, r * row + i, bp_tensor_get(initial, 0));
        else if (kind == 2)
            copy_elems(data, r * row, initial, 0, row);
        else if (kind == 3)
            copy_elems(data, r * row, initial, (r - 1) * row, row);
    }
    *out = data;
    return BP_OK;
}

/* Writes idx = v into the delay's idx var. */
static void write_idx(bp_length_delay *d, int64_t v) { ((int32_t *)d->idx->value->data)[0] = (int32_t)v; }

bp_status bp_length_delay_new(bp_node **out, const bp_tensor *target, int64_t max_len,
                              const bp_tensor *initial, const char *name)
{
    const char *who = name ? name : "LengthDelay";
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!target) return bp_fail(BP_EINVAL, "%s: target is NULL", who);
    if (max_len < 0) return bp_fail(BP_EINVAL, "%s: max_len must be >= 0, got %lld", who, (long long)max_len);
    if (max_len >= INT32_MAX)
        return bp_fail(BP_EINVAL, "%s: max_len must be < %d (idx is int32), got %lld", who, (int)INT32_MAX,
                       (long long)max_len);
    bp_tensor *data = NULL, *idx = NULL;
    BP_TRY(build_data(who, target, max_len, initial, &data));
    int64_t one = 1;
    bp_node *n = NULL;
    bp_status st = bp_tensor_new(&idx, BP_INT32, 1, &one);
    if (!st) st = bp_node_create(&n, &bp_length_delay_class, name, NULL);
    bp_length_delay *d = (bp_length_delay *)n;
    if (!st) st = bp_node_add_var(n, "data", BP_VARIABLE, data, &d->data);
    if (!st) st = bp_node_add_var(n, "idx", BP_VARIABLE, idx, &d->idx);
    bp_tensor_free(data); /* the vars hold their own references */
    bp_tensor_free(idx);
    if (st) {
        bp_node_free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_status bp_length_delay_reset(bp_node *delay, const bp_tensor *target, int64_t max_len,
                                const bp_tensor *initial)
{
    BP_TRY(check_delay(delay, "LengthDelay.reset"));
    bp_length_delay *d = as_delay(delay);
    const char *who = bp_node_name(delay);
    if (!target) return bp_fail(BP_EINVAL, "%s: reset: target is NULL", who);
    if (max_len < 0) max_len = num_rows(d) - 1;
    if (max_len >= INT32_MAX)
        return bp_fail(BP_EINVAL, "%s: reset: max_len must be < %d (idx is int32), got %lld", who,
                       (int)INT32_MAX, (long long)max_len);
    bp_tensor *fresh;
    BP_TRY(build_data(who, target, max_len, initial, &fresh));
    bp_tensor *old = d->data->value;
    if (old->dtype == fresh->dtype && bp_tensor_same_shape(old, fresh)) {
        /* Same layout: write in place so views of the buffer stay valid. */
        memcpy(old->data, fresh->data, bp_tensor_nbytes(fresh));
        bp_tensor_free(fresh);
    } else {
        /* A new length or target shape changes the var's shape (BrainPy
         * assigns data._value); a plain Variable has no grad to resize. */
        d->data->value = fresh;
        bp_tensor_free(old);
    }
    write_idx(d, 0);
    return BP_OK;
}

int64_t bp_length_delay_num_steps(const bp_node *delay)
{
    if (!delay || delay->cls != &bp_length_delay_class) return 0;
    return num_rows((const bp_length_delay *)delay);
}

/* A new tensor of the target's shape and dtype (the data's trailing dims). */
static bp_status new_row(const bp_length_delay *d, bp_tensor **out)
{
    const bp_tensor *t = d->data->value;
    return bp_tensor_new(out, t->dtype, t->ndim - 1, t->shape + 1);
}

static bp_status check_step(const bp_length_delay *d, const char *who, int64_t step)
{
    int64_t max_len = num_rows(d) - 1;
    if (step < 0 || step > max_len)
        return bp_fail(BP_EINVAL, "%s: %s: delay step must be in [0, %lld], got %lld", bp_node_name(&d->base),
                       who, (long long)max_len, (long long)step);
    return BP_OK;
}

bp_status bp_length_delay_retrieve(bp_node *delay, int64_t step, bp_tensor **out)
{
    BP_TRY(check_delay(delay, "LengthDelay.retrieve"));
    bp_length_delay *d = as_delay(delay);
    if (!out) return bp_fail(BP_EINVAL, "%s: retrieve: out is NULL", bp_node_name(delay));
    *out = NULL;
    BP_TRY(check_step(d, "retrieve", step));
    int64_t n = num_rows(d), row = row_numel(d);
    BP_TRY(new_row(d, out));
    copy_elems(*out, 0, d->data->value, pos_mod(read_idx(d) + step, n) * row, row);
    return BP_OK;
}

bp_status bp_length_delay_retrieve_each(bp_node *delay, const int64_t *steps, const int64_t *indices,
                                        size_t count, bp_tensor **out)
{
    BP_TRY(check_delay(delay, "LengthDelay.retrieve_each"));
    bp_length_delay *d = as_delay(delay);
    const char *who = bp_node_name(delay);
    if (!out) return bp_fail(BP_EINVAL, "%s: retrieve_each: out is NULL", who);
    *out = NULL;
    if (count && !steps) return bp_fail(BP_EINVAL, "%s: retrieve_each: steps is NULL with count %zu", who, count);
    int64_t n = num_rows(d), row = row_numel(d);
    for (size_t j = 0; j < count; j++) {
        int64_t k = indices ? indices[j] : (int64_t)j;
        if (steps[j] < 0 || steps[j] > n - 1)
            return bp_fail(BP_EINVAL, "%s: retrieve_each: delay step %zu must be in [0, %lld], got %lld", who, j,
                           (long long)(n - 1), (long long)steps[j]);
        if (k < 0 || k >= row)
            return bp_fail(BP_EINVAL, "%s: retrieve_each: index %zu must be in [0, %lld), got %lld", who, j,
                           (long long)row, (long long)k);
    }
    int64_t len = (int64_t)count;
    BP_TRY(bp_tensor_new(out, d->data->value->dtype, 1, &len));
    int64_t base = read_idx(d);
    for (size_t j = 0; j < count; j++) {
        int64_t k = indices ? indices[j] : (int64_t)j;
        copy_elems(*out, (int64_t)j, d->data->value, pos_mod(base + steps[j], n) * row + k, 1);
    }
    return BP_OK;
}

bp_status bp_length_delay_update(bp_node *delay, const bp_tensor *value)
{
    BP_TRY(check_delay(delay, "LengthDelay.update"));
    bp_length_delay *d = as_delay(delay);
    const bp_tensor *t = d->data->value;
    if (!value) return bp_fail(BP_EINVAL, "%s: update: value is NULL", bp_node_name(delay));
    if (!bp_tensor_has_shape(value, t->ndim - 1, t->shape + 1)) {
        char a[96], b[96];
        return bp_fail(BP_ESHAPE, "%s: update: expected a value of the target's shape %s, got %s",
                       bp_node_name(delay), bp_shape_str(a, sizeof a, t->ndim - 1, t->shape + 1),
                       bp_shape_str(b, sizeof b, value->ndim, value->shape));
    }
    int64_t n = num_rows(d), row = row_numel(d);
    int64_t i = pos_mod(read_idx(d) - 1, n);
    write_idx(d, i);
    copy_elems(d->data->value, i * row, value, 0, row);
    return BP_OK;
}

/* ------------------------------------------------------- global_delay_data */

typedef struct delay_entry {
    char *id;
    bp_node *delay;   /* a reference, or NULL for a step-less registration */
    bp_var *target;   /* a reference */
    bp_node *owner;   /* not a reference: cleared when the owner is freed */
} delay_entry;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static delay_entry *table;
static size_t table_len, table_cap;

/* Caller holds table_lock. */
static delay_entry *table_find(const char *id)
{
    for (size_t i = 0; i < table_len; i++)
        if (strcmp(table[i].id, id) == 0) return &table[i];
    return NULL;
}

/* Frees the array once the last entry is gone, so an idle process holds no
 * memory here. Caller holds table_lock. */
static void table_trim(void)
{
    if (table_len) return;
    free(table);
    table = NULL;
    table_cap = 0;
}

/* Room for one more entry and a copy of id; nothing is added yet. Caller holds table_lock. */
static bp_status table_reserve(const char *who, const char *id, char **id_copy)
{
    *id_copy = NULL;
    if (table_len == table_cap) {
        size_t cap = table_cap ? table_cap * 2 : 8;
        delay_entry *grown = realloc(table, sizeof *table * cap);
        if (!grown) return bp_fail(BP_ENOMEM, "%s: register_delay(\"%s\"): out of memory", who, id);
        table = grown;
        table_cap = cap;
    }
    if (!(*id_copy = strdup(id))) return bp_fail(BP_ENOMEM, "%s: register_delay(\"%s\"): out of memory", who, id);
    return BP_OK;
}

/* Validates the steps of a registration and gives their maximum. */
static bp_status check_register_steps(const char *who, const char *id, const bp_delay_steps *steps,
                                      const bp_tensor *target, int64_t *max_step)
{
    char a[96];
    *max_step = 0;
    switch (steps->kind) {
    case BP_DELAY_NONE:
        return BP_OK;
    case BP_DELAY_HOMO:
        if (steps->step < 0)
            return bp_fail(BP_EINVAL, "%s: register_delay(\"%s\"): delay step must be >= 0, got %lld", who, id,
                           (long long)steps->step);
        *max_step = steps->step;
        return BP_OK;
    case BP_DELAY_HETER:
        if (target->ndim < 1 || target->shape[0] != (int64_t)steps->count)
            return bp_fail(BP_ESHAPE,
                           "%s: register_delay(\"%s\"): Shape is mismatched: %zu heterogeneous steps for a "
                           "target of shape %s (one step per element of its first axis)",
                           who, id, steps->count, bp_shape_str(a, sizeof a, target->ndim, target->shape));
        if (steps->count == 0)
            return bp_fail(BP_EINVAL, "%s: register_delay(\"%s\"): heterogeneous delay with no steps", who, id);
        if (!steps->steps)
            return bp_fail(BP_EINVAL, "%s: register_delay(\"%s\"): steps is NULL with count %zu", who, id,
                           steps->count);
        for (size_t j = 0; j < steps->count; j++) {
            if (steps->steps[j] < 0)
                return bp_fail(BP_EINVAL, "%s: register_delay(\"%s\"): delay step %zu must be >= 0, got %lld",
                               who, id, j, (long long)steps->steps[j]);
            if (steps->steps[j] > *max_step) *max_step = steps->steps[j];
        }
        return BP_OK;
    }
    return bp_fail(BP_EINVAL, "%s: register_delay(\"%s\"): steps kind must be BP_DELAY_NONE, HOMO or HETER, got %d",
                   who, id, (int)steps->kind);
}

/* An existing delay accepts only a target laid out like its rows. */
static bp_status check_same_target(const char *who, const char *id, const bp_length_delay *d,
                                   const bp_tensor *target)
{
    const bp_tensor *t = d->data->value;
    if (!bp_tensor_has_shape(target, t->ndim - 1, t->shape + 1)) {
        char a[96], b[96];
        return bp_fail(BP_ESHAPE, "%s: register_delay(\"%s\"): the identifier delays a target of shape %s, got %s",
                       who, id, bp_shape_str(a, sizeof a, t->ndim - 1, t->shape + 1),
                       bp_shape_str(b, sizeof b, target->ndim, target->shape));
    }
    if (target->dtype != t->dtype)
        return bp_fail(BP_EDTYPE, "%s: register_delay(\"%s\"): the identifier delays a %s target, got %s", who, id,
                       bp_dtype_name(t->dtype), bp_dtype_name(target->dtype));
    return BP_OK;
}

bp_status bp_node_register_delay(bp_node *n, const char *identifier, const bp_delay_steps *steps,
                                 bp_var *target, const bp_tensor *initial_delay_data)
{
    static const bp_delay_steps none = {.kind = BP_DELAY_NONE};
    if (!n) return bp_fail(BP_EINVAL, "register_delay: node is NULL");
    const char *who = bp_node_name(n);
    if (!identifier || !*identifier)
        return bp_fail(BP_EINVAL, "%s: register_delay: identifier is NULL or empty", who);
    if (!target || !target->value)
        return bp_fail(BP_EINVAL, "%s: register_delay(\"%s\"): delay_target is NULL", who, identifier);
    if (!steps) steps = &none;
    int64_t max_step;
    BP_TRY(check_register_steps(who, identifier, steps, target->value, &max_step));

    /* A new delay is built outside the lock (building may fail, and freeing a
     * node re-enters the table); the lookup is then redone under the lock. */
    bp_node *fresh = NULL;
    bp_var *dropped = NULL;
    bp_status st = BP_OK;
    for (;;) {
        pthread_mutex_lock(&table_lock);
        delay_entry *e = table_find(identifier);
        if (steps->kind == BP_DELAY_NONE) {
            /* A step-less registration only records the target (if new). */
            char *id;
            if (!e && !(st = table_reserve(who, identifier, &id)))
                table[table_len++] = (delay_entry){id, NULL, bp_var_retain(target), n};
            break;
        }
        if (e && e->delay) {
            /* Another registration of a delayed identifier grows it when it asks
             * for a longer delay (as BrainPy: the buffer restarts from the target). */
            bp_length_delay *d = as_delay(e->delay);
            st = check_same_target(who, identifier, d, target->value);
            if (!st && num_rows(d) - 1 < max_step)
                st = bp_length_delay_reset(e->delay, target->value, max_step, initial_delay_data);
            break;
        }
        if (!fresh) {
            pthread_mutex_unlock(&table_lock);
            BP_TRY(bp_length_delay_new(&fresh, target->value, max_step, initial_delay_data, NULL));
            continue;
        }
        /* Install: n owns the delay as an implicit node keyed by the identifier. */
        char *id = NULL;
        if (!e) st = table_reserve(who, identifier, &id);
        if (!st) st = bp_node_register_implicit_nodes(n, 1, &identifier, &fresh);
        if (st) {
            free(id);
            break;
        }
        if (e) {
            /* A step-less entry gains its delay; the new target replaces the old (as BrainPy). */
            dropped = e->target;
            e->delay = fresh;
            e->target = bp_var_retain(target);
            e->owner = n;
        } else {
            table[table_len++] = (delay_entry){id, fresh, bp_var_retain(target), n};
        }
        fresh = NULL; /* the table keeps the creation reference */
        break;
    }
    table_trim();
    pthread_mutex_unlock(&table_lock);
    bp_node_free(fresh); /* built for nothing (a concurrent registration won) or on failure */
    bp_var_free(dropped);
    return st;
}

bp_status bp_node_get_delay_data(bp_node *n, const char *identifier, const bp_delay_steps *steps,
                                 const int64_t *indices, bp_tensor **out)
{
    static const bp_delay_steps none = {.kind = BP_DELAY_NONE};
    if (!n) return bp_fail(BP_EINVAL, "get_delay_data: node is NULL");
    const char *who = bp_node_name(n);
    if (!out) return bp_fail(BP_EINVAL, "%s: get_delay_data: out is NULL", who);
    *out = NULL;
    if (!identifier) return bp_fail(BP_EINVAL, "%s: get_delay_data: identifier is NULL", who);
    if (!steps) steps = &none;
    if (steps->kind != BP_DELAY_NONE && steps->kind != BP_DELAY_HOMO && steps->kind != BP_DELAY_HETER)
        return bp_fail(BP_EINVAL,
                       "%s: get_delay_data(\"%s\"): steps kind must be BP_DELAY_NONE, HOMO or HETER, got %d", who,
                       identifier, (int)steps->kind);
    bp_status st = BP_OK;
    pthread_mutex_lock(&table_lock);
    delay_entry *e = table_find(identifier);
    if (!e)
        st = bp_fail(BP_ENOTFOUND, "%s: get_delay_data: \"%s\" is not defined in delay variables", who,
                     identifier);
    else if (steps->kind == BP_DELAY_NONE)
        st = bp_tensor_clone(out, e->target->value);
    else if (!e->delay)
        st = bp_fail(BP_EINVAL,
                     "%s: get_delay_data(\"%s\"): the identifier was registered without a delay step; only "
                     "BP_DELAY_NONE can read it",
                     who, identifier);
    else if (steps->kind == BP_DELAY_HOMO)
        st = bp_length_delay_retrieve(e->delay, steps->step, out);
    else {
        const bp_tensor *t = as_delay(e->delay)->data->value;
        if (t->ndim != 2) {
            char a[96];
            st = bp_fail(BP_ESHAPE,
                         "%s: get_delay_data(\"%s\"): heterogeneous steps need a 1-D target, got shape %s", who,
                         identifier, bp_shape_str(a, sizeof a, t->ndim - 1, t->shape + 1));
        } else {
            st = bp_length_delay_retrieve_each(e->delay, steps->steps, indices, steps->count, out);
        }
    }
    pthread_mutex_unlock(&table_lock);
    return st;
}

/* Pushes (push) or resets to (!push) each target's value, for the delays
 * created by the nodes of `nodes` (NULL: n's direct children, unique). */
static bp_status for_local_delays(bp_node *n, const bp_collector *nodes, bool push, const char *what)
{
    if (!n) return bp_fail(BP_EINVAL, "%s: node is NULL", what);
    bp_collector *all = NULL, *uniq = NULL;
    if (!nodes) {
        bp_collect_opts o = bp_collect_defaults();
        o.level = 1;
        o.include_self = false;
        BP_TRY(bp_node_nodes(n, &o, &all));
        bp_status st = bp_collector_unique(all, &uniq);
        bp_collector_free(all);
        BP_TRY(st);
        nodes = uniq;
    }
    size_t len = bp_collector_len(nodes);
    for (size_t i = 0; i < len; i++)
        if (!bp_collector_node(nodes, i)) {
            bp_collector_free(uniq);
            return bp_fail(BP_EINVAL, "%s: %s: nodes must be a node collector; item %zu (\"%s\") is not a node",
                           bp_node_name(n), what, i, bp_collector_key(nodes, i));
        }
    bp_status st = BP_OK;
    pthread_mutex_lock(&table_lock);
    for (size_t i = 0; i < len && !st; i++) {
        const bp_node *owner = bp_collector_node(nodes, i);
        for (size_t k = 0; k < table_len && !st; k++) {
            delay_entry *e = &table[k];
            if (e->owner != owner || !e->delay) continue;
            st = push ? bp_length_delay_update(e->delay, e->target->value)
                      : bp_length_delay_reset(e->delay, e->target->value, -1, NULL);
        }
    }
    pthread_mutex_unlock(&table_lock);
    bp_collector_free(uniq);
    return st;
}

bp_status bp_node_update_local_delays(bp_node *n, const bp_collector *nodes)
{
    return for_local_delays(n, nodes, true, "update_local_delays");
}

bp_status bp_node_reset_local_delays(bp_node *n, const bp_collector *nodes)
{
    return for_local_delays(n, nodes, false, "reset_local_delays");
}

size_t bp_global_delay_count(void)
{
    pthread_mutex_lock(&table_lock);
    size_t len = table_len;
    pthread_mutex_unlock(&table_lock);
    return len;
}

bp_status bp_global_delay_data(const char *identifier, bp_node **delay, bp_var **target)
{
    if (delay) *delay = NULL;
    if (target) *target = NULL;
    if (!identifier) return bp_fail(BP_EINVAL, "global_delay_data: identifier is NULL");
    bp_status st = BP_OK;
    pthread_mutex_lock(&table_lock);
    delay_entry *e = table_find(identifier);
    if (!e) {
        st = bp_fail(BP_ENOTFOUND, "global_delay_data: \"%s\" is not defined in delay variables", identifier);
    } else {
        if (delay) *delay = e->delay;
        if (target) *target = e->target;
    }
    pthread_mutex_unlock(&table_lock);
    return st;
}

void bp__delay_forget_owner(bp_node *n)
{
    /* One entry at a time, releasing it with the lock dropped: the release
     * may free a LengthDelay, whose own bp_node_free comes back here. */
    for (;;) {
        delay_entry gone = {0};
        bool found = false;
        pthread_mutex_lock(&table_lock);
        for (size_t i = 0; i < table_len; i++)
            if (table[i].owner == n) {
                gone = table[i];
                memmove(&table[i], &table[i + 1], sizeof *table * (table_len - i - 1));
                table_len--;
                found = true;
                break;
            }
        table_trim();
        pthread_mutex_unlock(&table_lock);
        if (!found) return;
        free(gone.id);
        bp_node_free(gone.delay);
        bp_var_free(gone.target);
    }
}
