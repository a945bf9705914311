/* core/state.c — bp_dict, state_dict / load_state_dict, tree_flatten.
 *
 * Loads are all or nothing: every (var, tensor) pair is checked for shape and
 * dtype before the first value is written, so a bad checkpoint leaves the tree
 * exactly as it was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/state.h>
#include "node_priv.h"

/* --------------------------------------------------------------------- dict */

typedef struct dict_item {
    char *key;
    bp_tensor *t;
    bp_dict *sub;
} dict_item;

struct bp_dict {
    dict_item *items;
    size_t n, cap;
};

bp_status bp_dict_new(bp_dict **out)
{
    if (!out) return bp_fail(BP_EINVAL, "dict_new: out is NULL");
    *out = calloc(1, sizeof **out);
    return *out ? BP_OK : bp_fail(BP_ENOMEM, "dict_new: out of memory");
}

void bp_dict_free(bp_dict *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].key);
        bp_tensor_free(d->items[i].t);
        bp_dict_free(d->items[i].sub);
    }
    free(d->items);
    free(d);
}

size_t bp_dict_len(const bp_dict *d) { return d ? d->n : 0; }
const char *bp_dict_key(const bp_dict *d, size_t i) { return d && i < d->n ? d->items[i].key : NULL; }
bp_tensor *bp_dict_tensor(const bp_dict *d, size_t i) { return d && i < d->n ? d->items[i].t : NULL; }
bp_dict *bp_dict_sub(const bp_dict *d, size_t i) { return d && i < d->n ? d->items[i].sub : NULL; }

static long dict_find(const bp_dict *d, const char *key)
{
    if (!d || !key) return -1;
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->items[i].key, key) == 0) return (long)i;
    return -1;
}

bp_tensor *bp_dict_get_tensor(const bp_dict *d, const char *key)
{
    long i = dict_find(d, key);
    return i < 0 ? NULL : d->items[i].t;
}

bp_dict *bp_dict_get_dict(const bp_dict *d, const char *key)
{
    long i = dict_find(d, key);
    return i < 0 ? NULL : d->items[i].sub;
}

/* The slot for key: the existing one (its old value released by the caller
 * after the new one is in place) or a new empty one at the end. */
static bp_status dict_slot(bp_dict *d, const char *key, dict_item **slot)
{
    long i = dict_find(d, key);
    if (i >= 0) {
        *slot = &d->items[i];
        return BP_OK;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        dict_item *grown = realloc(d->items, sizeof *grown * cap);
        if (!grown) return bp_fail(BP_ENOMEM, "dict: out of memory");
        d->items = grown;
        d->cap = cap;
    }
    dict_item *it = &d->items[d->n];
    it->key = strdup(key);
    if (!it->key) return bp_fail(BP_ENOMEM, "dict: out of memory");
    it->t = NULL;
    it->sub = NULL;
    d->n++;
    *slot = it;
    return BP_OK;
}

bp_status bp_dict_set_tensor(bp_dict *d, const char *key, bp_tensor *t)
{
    if (!d || !key || !t) return bp_fail(BP_EINVAL, "dict_set_tensor: NULL %s", !d ? "dict" : !key ? "key" : "tensor");
    dict_item *slot;
    BP_TRY(dict_slot(d, key, &slot));
    /* Retain before releasing: t may be the value already stored here. */
    bp_tensor *old_t = slot->t;
    bp_dict *old_sub = slot->sub;
    slot->t = bp_tensor_retain(t);
    slot->sub = NULL;
    bp_tensor_free(old_t);
    bp_dict_free(old_sub);
    return BP_OK;
}

bp_status bp_dict_set_dict(bp_dict *d, const char *key, bp_dict *sub)
{
    if (!d || !key || !sub) {
        bp_dict_free(sub);
        return bp_fail(BP_EINVAL, "dict_set_dict: NULL %s", !d ? "dict" : !key ? "key" : "sub-dict");
    }
    if (sub == d) return bp_fail(BP_EINVAL, "dict_set_dict: a dict cannot contain itself");
    dict_item *slot;
    bp_status st = dict_slot(d, key, &slot);
    if (st) {
        bp_dict_free(sub);
        return st;
    }
    if (slot->sub == sub) return BP_OK; /* already stored here */
    bp_tensor *old_t = slot->t;
    bp_dict *old_sub = slot->sub;
    slot->sub = sub;
    slot->t = NULL;
    bp_tensor_free(old_t);
    bp_dict_free(old_sub);
    return BP_OK;
}

bp_status bp_dict_remove(bp_dict *d, const char *key)
{
    if (!d || !key) return bp_fail(BP_EINVAL, "dict_remove: NULL %s", !d ? "dict" : "key");
    long i = dict_find(d, key);
    if (i < 0) return bp_fail(BP_ENOTFOUND, "dict_remove: no key \"%s\"", key);
    free(d->items[i].key);
    bp_tensor_free(d->items[i].t);
    bp_dict_free(d->items[i].sub);
    memmove(&d->items[i], &d->items[i + 1], sizeof *d->items * (d->n - (size_t)i - 1));
    d->n--;
    return BP_OK;
}

/* --------------------------------------------------------------- key lists */

typedef struct str_list {
    char **s;
    size_t n;
} str_list;

static bp_status list_push(str_list *l, const char *s)
{
    char **grown = realloc(l->s, sizeof *grown * (l->n + 1));
    if (!grown) return bp_fail(BP_ENOMEM, "load: out of memory");
    l->s = grown;
    if (!(l->s[l->n] = strdup(s))) return bp_fail(BP_ENOMEM, "load: out of memory");
    l->n++;
    return BP_OK;
}

static void list_free(str_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    l->s = NULL;
    l->n = 0;
}

void bp_load_result_clear(bp_load_result *r)
{
    if (!r) return;
    str_list m = {r->missing_keys, r->n_missing}, u = {r->unexpected_keys, r->n_unexpected};
    list_free(&m);
    list_free(&u);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------ staged loads */

/* The pairs to write, gathered and checked before any is written. */
typedef struct load_plan {
    bp_var **vars;
    const bp_tensor **values;
    size_t n;
    str_list missing, unexpected;
} load_plan;

static void plan_free(load_plan *p)
{
    free(p->vars);
    free(p->values);
    list_free(&p->missing);
    list_free(&p->unexpected);
}

static bp_status plan_pair(load_plan *p, const char *key, bp_var *v, const bp_tensor *t)
{
    char a[96], b[96];
    if (!bp_tensor_same_shape(v->value, t))
        return bp_fail(BP_ESHAPE, "load: \"%s\" has shape %s in the model but %s in the state", key,
                       bp_shape_str(a, sizeof a, v->value->ndim, v->value->shape),
                       bp_shape_str(b, sizeof b, t->ndim, t->shape));
    if (v->value->dtype != t->dtype)
        return bp_fail(BP_EDTYPE, "load: \"%s\" has dtype %s in the model but %s in the state", key,
                       bp_dtype_name(v->value->dtype), bp_dtype_name(t->dtype));
    bp_var **vs = realloc(p->vars, sizeof *vs * (p->n + 1));
    if (!vs) return bp_fail(BP_ENOMEM, "load: out of memory");
    p->vars = vs;
    const bp_tensor **ts = realloc(p->values, sizeof *ts * (p->n + 1));
    if (!ts) return bp_fail(BP_ENOMEM, "load: out of memory");
    p->values = ts;
    p->vars[p->n] = v;
    p->values[p->n++] = t;
    return BP_OK;
}

/* Matches the vars `own` with the flat dict `given` into the plan. */
static bp_status plan_flat(load_plan *p, const bp_collector *own, const bp_dict *given)
{
    for (size_t i = 0; i < bp_collector_len(own); i++) {
        const char *key = bp_collector_key(own, i);
        long at = dict_find(given, key);
        if (at < 0)
            BP_TRY(list_push(&p->missing, key));
        else if (!given->items[at].t)
            return bp_fail(BP_EFORMAT, "load: \"%s\" must be a tensor, got a nested dict", key);
        else
            BP_TRY(plan_pair(p, key, bp_collector_var(own, i), given->items[at].t));
    }
    for (size_t i = 0; given && i < given->n; i++)
        if (bp_collector_find(own, given->items[i].key) < 0) BP_TRY(list_push(&p->unexpected, given->items[i].key));
    return BP_OK;
}

/* Writes the plan (cannot fail: every pair was checked) and hands the key lists over. */
static void plan_commit(load_plan *p, bp_load_result *result)
{
    for (size_t i = 0; i < p->n; i++) bp_tensor_copy(p->vars[i]->value, p->values[i]);
    if (result) {
        *result = (bp_load_result){p->missing.s, p->missing.n, p->unexpected.s, p->unexpected.n};
        p->missing = (str_list){0};
        p->unexpected = (str_list){0};
    }
}

static void warn_keys(const char *what, const str_list *l)
{
    if (!l->n) return;
    size_t len = 2;
    for (size_t i = 0; i < l->n; i++) len += strlen(l->s[i]) + 4;
    char *buf = malloc(len);
    if (!buf) return;
    size_t at = 0;
    buf[at++] = '[';
    for (size_t i = 0; i < l->n; i++) at += (size_t)sprintf(buf + at, "%s'%s'", i ? ", " : "", l->s[i]);
    buf[at++] = ']';
    buf[at] = '\0';
    bp_warn("%s keys in state_dict: %s", what, buf);
    free(buf);
}

/* ------------------------------------------------------------- save / load */

/* The node's own vars (level 0), unique, absolute keys. */
static bp_status own_vars(bp_node *n, bp_collector **out)
{
    bp_collect_opts o = bp_collect_defaults();
    o.level = 0;
    bp_collector *all;
    BP_TRY(bp_node_vars(n, &o, &all));
    bp_status st = bp_collector_unique(all, out);
    bp_collector_free(all);
    return st;
}

/* A flat dict of copies of the collector's values. */
static bp_status snapshot(const bp_collector *vars, bp_dict **out)
{
    BP_TRY(bp_dict_new(out));
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        bp_tensor *copy;
        bp_status st = bp_tensor_clone(&copy, bp_collector_var(vars, i)->value);
        if (!st) st = bp_dict_set_tensor(*out, bp_collector_key(vars, i), copy);
        bp_tensor_free(copy);
        if (st) {
            bp_dict_free(*out);
            *out = NULL;
            return st;
        }
    }
    return BP_OK;
}

bp_status bp_node_save_state(bp_node *n, bp_dict **out)
{
    if (!out) return bp_fail(BP_EINVAL, "save_state: out is NULL");
    *out = NULL;
    if (!n) return bp_fail(BP_EINVAL, "save_state: node is NULL");
    bp_collector *own;
    BP_TRY(own_vars(n, &own));
    bp_status st = snapshot(own, out);
    bp_collector_free(own);
    return st;
}

bp_status bp_node_load_state(bp_node *n, const bp_dict *state, bp_load_result *result)
{
    if (result) memset(result, 0, sizeof *result);
    if (!n) return bp_fail(BP_EINVAL, "load_state: node is NULL");
    if (!state) return bp_fail(BP_EINVAL, "%s: load_state: state is NULL", bp_node_name(n));
    bp_collector *own;
    BP_TRY(own_vars(n, &own));
    load_plan p = {0};
    bp_status st = plan_flat(&p, own, state);
    if (!st) plan_commit(&p, result);
    plan_free(&p);
    bp_collector_free(own);
    return st;
}

bp_status bp_node_state_dict(bp_node *n, bp_dict **out)
{
    if (!out) return bp_fail(BP_EINVAL, "state_dict: out is NULL");
    *out = NULL;
    if (!n) return bp_fail(BP_EINVAL, "state_dict: node is NULL");
    bp_collector *nodes;
    BP_TRY(bp_node_nodes(n, NULL, &nodes));
    bp_dict *d;
    bp_status st = bp_dict_new(&d);
    for (size_t i = 0; !st && i < bp_collector_len(nodes); i++) {
        bp_dict *sub;
        st = bp_node_save_state(bp_collector_node(nodes, i), &sub);
        if (!st) st = bp_dict_set_dict(d, bp_collector_key(nodes, i), sub);
    }
    bp_collector_free(nodes);
    if (st) {
        bp_dict_free(d);
        return st;
    }
    *out = d;
    return BP_OK;
}

/* v2: per node, its own vars against state[node name]; entries for nodes the
 * tree lacks are unexpected (BrainPy ignores them silently). */
static bp_status plan_nested(load_plan *p, bp_node *n, const bp_dict *state)
{
    bp_collector *nodes;
    BP_TRY(bp_node_nodes(n, NULL, &nodes));
    bp_status st = BP_OK;
    for (size_t i = 0; !st && i < bp_collector_len(nodes); i++) {
        const char *name = bp_collector_key(nodes, i);
        long at = dict_find(state, name);
        if (at >= 0 && !state->items[at].sub) {
            st = bp_fail(BP_EFORMAT, "load_state_dict: entry \"%s\" must be a dict of the node's vars (v2), "
                                     "got a tensor; pass BP_COMPAT_V1 for a flat state",
                         name);
            break;
        }
        bp_collector *own;
        st = own_vars(bp_collector_node(nodes, i), &own);
        if (!st) st = plan_flat(p, own, at >= 0 ? state->items[at].sub : NULL);
        bp_collector_free(own);
    }
    for (size_t i = 0; !st && i < state->n; i++) {
        if (bp_collector_find(nodes, state->items[i].key) >= 0) continue;
        const bp_dict *sub = state->items[i].sub;
        if (!sub)
            st = list_push(&p->unexpected, state->items[i].key);
        for (size_t j = 0; !st && sub && j < sub->n; j++) st = list_push(&p->unexpected, sub->items[j].key);
    }
    bp_collector_free(nodes);
    return st;
}

bp_status bp_node_load_state_dict(bp_node *n, const bp_dict *state, bool warn, bp_compat compatible,
                                  bp_load_result *result)
{
    if (result) memset(result, 0, sizeof *result);
    if (!n) return bp_fail(BP_EINVAL, "load_state_dict: node is NULL");
    if (!state) return bp_fail(BP_EINVAL, "%s: load_state_dict: state is NULL", bp_node_name(n));
    if (compatible != BP_COMPAT_V1 && compatible != BP_COMPAT_V2)
        return bp_fail(BP_EINVAL, "Unknown compatible version: %d (expected BP_COMPAT_V1 or BP_COMPAT_V2)",
                       (int)compatible);
    load_plan p = {0};
    bp_status st;
    if (compatible == BP_COMPAT_V2) {
        st = plan_nested(&p, n, state);
    } else {
        bp_collector *all, *own = NULL;
        st = bp_node_vars(n, NULL, &all);
        if (!st) {
            st = bp_collector_unique(all, &own);
            bp_collector_free(all);
        }
        if (!st) st = plan_flat(&p, own, state);
        bp_collector_free(own);
    }
    if (!st) {
        if (warn) {
            warn_keys("Unexpected", &p.unexpected);
            warn_keys("Missing", &p.missing);
        }
        plan_commit(&p, result);
    }
    plan_free(&p);
    return st;
}

/* ------------------------------------------------------- tree_flatten */

struct bp_tree_def {
    bp_node *node;
    size_t n;
    char **keys;
    bp_tensor **like; /* shape/dtype templates (empty copies are not needed: clones) */
};

void bp_tree_values_free(bp_tensor **values, size_t count)
{
    for (size_t i = 0; values && i < count; i++) bp_tensor_free(values[i]);
    free(values);
}

void bp_tree_def_free(bp_tree_def *def)
{
    if (!def) return;
    for (size_t i = 0; i < def->n; i++) free(def->keys[i]);
    free(def->keys);
    bp_tree_values_free(def->like, def->n);
    bp_node_free(def->node);
    free(def);
}

size_t bp_tree_def_len(const bp_tree_def *def) { return def ? def->n : 0; }
const char *bp_tree_def_key(const bp_tree_def *def, size_t i) { return def && i < def->n ? def->keys[i] : NULL; }

bp_status bp_node_tree_flatten(bp_node *n, bp_tensor ***values, size_t *count, bp_tree_def **def)
{
    if (!values || !count || !def) return bp_fail(BP_EINVAL, "tree_flatten: NULL output");
    *values = NULL;
    *count = 0;
    *def = NULL;
    if (!n) return bp_fail(BP_EINVAL, "tree_flatten: node is NULL");
    bp_collector *all, *vars;
    BP_TRY(bp_node_vars(n, NULL, &all));
    bp_status st = bp_collector_unique(all, &vars);
    bp_collector_free(all);
    if (st) return st;
    size_t k = bp_collector_len(vars);
    bp_tree_def *d = calloc(1, sizeof *d);
    bp_tensor **vals = calloc(k ? k : 1, sizeof *vals);
    if (d) {
        d->keys = calloc(k ? k : 1, sizeof *d->keys);
        d->like = calloc(k ? k : 1, sizeof *d->like);
    }
    if (!d || !vals || !d->keys || !d->like) st = bp_fail(BP_ENOMEM, "tree_flatten: out of memory");
    if (d) d->node = bp_node_retain(n);
    for (size_t i = 0; !st && i < k; i++) {
        d->n = i + 1;
        if (!(d->keys[i] = strdup(bp_collector_key(vars, i)))) st = bp_fail(BP_ENOMEM, "tree_flatten: out of memory");
        if (!st) st = bp_tensor_clone(&vals[i], bp_collector_var(vars, i)->value);
        if (!st) st = bp_tensor_new(&d->like[i], vals[i]->dtype, vals[i]->ndim, vals[i]->shape);
    }
    bp_collector_free(vars);
    if (st) {
        bp_tree_values_free(vals, k);
        bp_tree_def_free(d);
        return st;
    }
    *values = vals;
    *count = k;
    *def = d;
    return BP_OK;
}

bp_status bp_tree_unflatten(const bp_tree_def *def, bp_tensor *const *values, size_t count, bp_node **out)
{
    char a[96], b[96];
    if (!out) return bp_fail(BP_EINVAL, "tree_unflatten: out is NULL");
    *out = NULL;
    if (!def) return bp_fail(BP_EINVAL, "tree_unflatten: def is NULL");
    if (count != def->n)
        return bp_fail(BP_ESHAPE, "tree_unflatten: expected %zu values, got %zu", def->n, count);
    for (size_t i = 0; i < count; i++) {
        const bp_tensor *t = values ? values[i] : NULL;
        if (!t) return bp_fail(BP_EINVAL, "tree_unflatten: value %zu (\"%s\") is NULL", i, def->keys[i]);
        if (!bp_tensor_same_shape(t, def->like[i]))
            return bp_fail(BP_ESHAPE, "tree_unflatten: \"%s\" expects shape %s, got %s", def->keys[i],
                           bp_shape_str(a, sizeof a, def->like[i]->ndim, def->like[i]->shape),
                           bp_shape_str(b, sizeof b, t->ndim, t->shape));
        if (t->dtype != def->like[i]->dtype)
            return bp_fail(BP_EDTYPE, "tree_unflatten: \"%s\" expects dtype %s, got %s", def->keys[i],
                           bp_dtype_name(def->like[i]->dtype), bp_dtype_name(t->dtype));
    }
    /* The tree may have changed since flatten: look the keys up again. */
    bp_collector *vars;
    BP_TRY(bp_node_vars(def->node, NULL, &vars));
    bp_status st = BP_OK;
    for (size_t i = 0; !st && i < count; i++) {
        long at = bp_collector_find(vars, def->keys[i]);
        if (at < 0)
            st = bp_fail(BP_ENOTFOUND, "tree_unflatten: the tree no longer has \"%s\"", def->keys[i]);
        else if (!bp_tensor_same_shape(bp_collector_var(vars, (size_t)at)->value, values[i]))
            st = bp_fail(BP_ESHAPE, "tree_unflatten: \"%s\" changed shape in the tree since flatten",
                         def->keys[i]);
        else if (bp_collector_var(vars, (size_t)at)->value->dtype != values[i]->dtype)
            st = bp_fail(BP_EDTYPE, "tree_unflatten: \"%s\" changed dtype in the tree since flatten",
                         def->keys[i]);
    }
    for (size_t i = 0; !st && i < count; i++)
        bp_tensor_copy(bp_collector_var(vars, (size_t)bp_collector_find(vars, def->keys[i]))->value, values[i]);
    bp_collector_free(vars);
    if (st) return st;
    *out = bp_node_retain(def->node);
    return BP_OK;
}
