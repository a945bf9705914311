/* core/collect.c — collectors and the nodes() / vars() walks of BrainPy 2.8.2.
 *
 * nodes(absolute) keys each node by its (globally unique) name; it visits self,
 * then its direct children in declaration order (implicit nodes last), then
 * recurses into those children. nodes(relative) keys by attribute path. A
 * (parent, child) edge is followed once, so shared subtrees are not walked
 * twice. vars() lists, for every collected node, its vars under
 * "<nodekey>.<attr>". Binding one key to two different objects is an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "node_priv.h"

struct bp_collector {
    bool holds_nodes;
    size_t n, cap;
    char **keys;
    void **items;
};

static bp_status collector_new(bp_collector **out, bool holds_nodes)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return bp_fail(BP_ENOMEM, "collector: out of memory");
    (*out)->holds_nodes = holds_nodes;
    return BP_OK;
}

long bp_collector_find(const bp_collector *c, const char *key)
{
    if (!c || !key) return -1;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->keys[i], key) == 0) return (long)i;
    return -1;
}

/* gather[key] = item: a new key appends; the same object again is a no-op;
 * another object under an existing key is BP_ECONFLICT. */
static bp_status collector_put(bp_collector *c, const char *key, void *item)
{
    long at = bp_collector_find(c, key);
    if (at >= 0) {
        if (c->items[at] == item) return BP_OK;
        return bp_fail(BP_ECONFLICT, "Name \"%s\" conflicts: the same name is bound to two different %s.",
                       key, c->holds_nodes ? "nodes" : "variables");
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **k = realloc(c->keys, sizeof *k * cap);
        if (!k) return bp_fail(BP_ENOMEM, "collector: out of memory");
        c->keys = k;
        void **it = realloc(c->items, sizeof *it * cap);
        if (!it) return bp_fail(BP_ENOMEM, "collector: out of memory");
        c->items = it;
        c->cap = cap;
    }
    c->keys[c->n] = strdup(key);
    if (!c->keys[c->n]) return bp_fail(BP_ENOMEM, "collector: out of memory");
    c->items[c->n] = c->holds_nodes ? (void *)bp_node_retain(item) : (void *)bp_var_retain(item);
    c->n++;
    return BP_OK;
}

size_t bp_collector_len(const bp_collector *c) { return c ? c->n : 0; }
const char *bp_collector_key(const bp_collector *c, size_t i) { return c && i < c->n ? c->keys[i] : NULL; }

bp_var *bp_collector_var(const bp_collector *c, size_t i)
{
    return c && !c->holds_nodes && i < c->n ? c->items[i] : NULL;
}

bp_node *bp_collector_node(const bp_collector *c, size_t i)
{
    return c && c->holds_nodes && i < c->n ? c->items[i] : NULL;
}

void bp_collector_free(bp_collector *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->keys[i]);
        if (c->holds_nodes)
            bp_node_free(c->items[i]);
        else
            bp_var_free(c->items[i]);
    }
    free(c->keys);
    free(c->items);
    free(c);
}

/* Copies the items of c for which keep() is true into a new collector. */
static bp_status collector_filter(const bp_collector *c, bp_collector **out,
                                  bool (*keep)(const bp_collector *, size_t, const void *), const void *arg)
{
    if (!out) return bp_fail(BP_EINVAL, "collector: out is NULL");
    *out = NULL;
    if (!c) return bp_fail(BP_EINVAL, "collector: collector is NULL");
    BP_TRY(collector_new(out, c->holds_nodes));
    for (size_t i = 0; i < c->n; i++) {
        if (!keep(c, i, arg)) continue;
        bp_status st = collector_put(*out, c->keys[i], c->items[i]);
        if (st) {
            bp_collector_free(*out);
            *out = NULL;
            return st;
        }
    }
    return BP_OK;
}

static bool keep_kinds(const bp_collector *c, size_t i, const void *arg)
{
    return !c->holds_nodes && bp_var_is(c->items[i], *(const unsigned *)arg);
}

static bool keep_not_kinds(const bp_collector *c, size_t i, const void *arg)
{
    return !c->holds_nodes && !bp_var_is(c->items[i], *(const unsigned *)arg);
}

static bool keep_class(const bp_collector *c, size_t i, const void *arg)
{
    return c->holds_nodes && ((const bp_node *)c->items[i])->cls == arg;
}

static bool keep_first(const bp_collector *c, size_t i, const void *arg)
{
    (void)arg;
    for (size_t j = 0; j < i; j++)
        if (c->items[j] == c->items[i]) return false;
    return true;
}

/* Filtering by var kind only makes sense for vars, by class only for nodes:
 * asking the other collector kind is a caller's mistake, not an empty result. */
static bp_status check_holds(const char *who, const bp_collector *c, bool want_nodes, bp_collector **out)
{
    if (out) *out = NULL;
    if (c && c->holds_nodes != want_nodes)
        return bp_fail(BP_EINVAL, "%s: the collector holds %s, expected %s", who,
                       c->holds_nodes ? "nodes" : "variables", want_nodes ? "nodes" : "variables");
    return BP_OK;
}

bp_status bp_collector_subset(const bp_collector *c, unsigned kinds, bp_collector **out)
{
    BP_TRY(check_holds("collector_subset", c, false, out));
    return collector_filter(c, out, keep_kinds, &kinds);
}

bp_status bp_collector_not_subset(const bp_collector *c, unsigned kinds, bp_collector **out)
{
    BP_TRY(check_holds("collector_not_subset", c, false, out));
    return collector_filter(c, out, keep_not_kinds, &kinds);
}

bp_status bp_collector_subset_class(const bp_collector *c, const bp_node_class *cls, bp_collector **out)
{
    BP_TRY(check_holds("collector_subset_class", c, true, out));
    if (!cls) return bp_fail(BP_EINVAL, "collector_subset_class: class is NULL");
    return collector_filter(c, out, keep_class, cls);
}

bp_status bp_collector_unique(const bp_collector *c, bp_collector **out)
{
    return collector_filter(c, out, keep_first, NULL);
}

/* ------------------------------------------------------------------ walks */

bp_collect_opts bp_collect_defaults(void)
{
    return (bp_collect_opts){.method = BP_ABSOLUTE, .level = -1, .include_self = true, .exclude_kinds = 0};
}

/* The set of (parent, child) edges already followed. */
typedef struct edge_set {
    const void **pairs; /* 2 per edge */
    size_t n, cap;
} edge_set;

/* True (and records it) if the edge is new. */
static bool edge_add(edge_set *s, const bp_node *parent, const bp_node *child, bp_status *st)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->pairs[2 * i] == parent && s->pairs[2 * i + 1] == child) return false;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        const void **p = realloc(s->pairs, sizeof *p * 2 * cap);
        if (!p) {
            *st = bp_fail(BP_ENOMEM, "nodes: out of memory");
            return false;
        }
        s->pairs = p;
        s->cap = cap;
    }
    s->pairs[2 * s->n] = parent;
    s->pairs[2 * s->n + 1] = child;
    s->n++;
    return true;
}

/* A direct child with its relative key. */
typedef struct child_ref {
    char *key;
    bp_node *node;
} child_ref;

/* Lists n's direct children in declaration order, implicit nodes last,
 * following only edges not seen before. */
static bp_status direct_children(bp_node *n, edge_set *edges, child_ref **out, size_t *count)
{
    struct bp_node_priv *p = n->priv;
    size_t cap = p->n_implicit_nodes;
    for (size_t i = 0; i < p->n_attrs; i++)
        if (p->attrs[i].is_node) cap += p->attrs[i].n;
    *out = calloc(cap ? cap : 1, sizeof **out);
    *count = 0;
    if (!*out) return bp_fail(BP_ENOMEM, "nodes: out of memory");
    bp_status st = BP_OK;
    for (size_t i = 0; i < p->n_attrs + p->n_implicit_nodes && !st; i++) {
        bp_entry *e = i < p->n_attrs ? &p->attrs[i] : &p->implicit_nodes[i - p->n_attrs];
        if (!e->is_node) continue;
        for (size_t j = 0; j < e->n && !st; j++) {
            if (!edge_add(edges, n, e->items[j], &st)) continue;
            char key[512];
            if (e->is_list)
                snprintf(key, sizeof key, "%s-%zu", e->key, j);
            else
                snprintf(key, sizeof key, "%s", e->key);
            (*out)[*count].key = strdup(key);
            if (!(*out)[*count].key) st = bp_fail(BP_ENOMEM, "nodes: out of memory");
            (*out)[(*count)++].node = e->items[j];
        }
    }
    return st;
}

static void children_free(child_ref *c, size_t count)
{
    for (size_t i = 0; i < count; i++) free(c[i].key);
    free(c);
}

static bp_status walk_absolute(bp_node *n, int level, bool include_self, int lid, edge_set *edges,
                               bp_collector *gather)
{
    if (include_self) BP_TRY(collector_put(gather, n->priv->name, n));
    if (level > -1 && lid >= level) return BP_OK;
    child_ref *kids;
    size_t count;
    bp_status st = direct_children(n, edges, &kids, &count);
    for (size_t i = 0; i < count && !st; i++) st = collector_put(gather, kids[i].node->priv->name, kids[i].node);
    for (size_t i = 0; i < count && !st; i++)
        st = walk_absolute(kids[i].node, level, include_self, lid + 1, edges, gather);
    children_free(kids, count);
    return st;
}

/* Relative keys: children under their attribute key, deeper ones "k1.k2". */
static bp_status walk_relative(bp_node *n, int level, bool include_self, int lid, edge_set *edges,
                               bp_collector *gather)
{
    if (include_self) BP_TRY(collector_put(gather, "", n));
    if (level > -1 && lid >= level) return BP_OK;
    child_ref *kids;
    size_t count;
    bp_status st = direct_children(n, edges, &kids, &count);
    for (size_t i = 0; i < count && !st; i++) st = collector_put(gather, kids[i].key, kids[i].node);
    for (size_t i = 0; i < count && !st; i++) {
        bp_collector *sub;
        st = collector_new(&sub, true);
        if (!st) st = walk_relative(kids[i].node, level, include_self, lid + 1, edges, sub);
        for (size_t j = 0; !st && j < sub->n; j++) {
            if (!sub->keys[j][0]) continue;
            char key[1024];
            snprintf(key, sizeof key, "%s.%s", kids[i].key, sub->keys[j]);
            st = collector_put(gather, key, sub->items[j]);
        }
        bp_collector_free(sub);
    }
    children_free(kids, count);
    return st;
}

static bp_status check_opts(const char *who, const bp_node *n, const bp_collect_opts *o)
{
    if (!n) return bp_fail(BP_EINVAL, "%s: node is NULL", who);
    if (o->method != BP_ABSOLUTE && o->method != BP_RELATIVE)
        return bp_fail(BP_EINVAL, "%s: No support for the method of \"%d\" (expected BP_ABSOLUTE or BP_RELATIVE).",
                       who, (int)o->method);
    if (o->level < -1) return bp_fail(BP_EINVAL, "%s: level must be >= -1, got %d", who, o->level);
    return BP_OK;
}

bp_status bp_node_nodes(bp_node *n, const bp_collect_opts *opts, bp_collector **out)
{
    bp_collect_opts o = opts ? *opts : bp_collect_defaults();
    if (!out) return bp_fail(BP_EINVAL, "nodes: out is NULL");
    *out = NULL;
    BP_TRY(check_opts("nodes", n, &o));
    bp_collector *c;
    BP_TRY(collector_new(&c, true));
    edge_set edges = {0};
    bp_status st = o.method == BP_ABSOLUTE ? walk_absolute(n, o.level, o.include_self, 0, &edges, c)
                                           : walk_relative(n, o.level, o.include_self, 0, &edges, c);
    free(edges.pairs);
    if (st) {
        bp_collector_free(c);
        return st;
    }
    *out = c;
    return BP_OK;
}

/* Puts one var under "<path>.<key>" (or "<key>" at the relative root). */
static bp_status put_var(bp_collector *c, const char *path, const char *key, bp_var *v, unsigned exclude)
{
    if (exclude && bp_var_is(v, exclude)) return BP_OK;
    char full[1024];
    if (path[0])
        snprintf(full, sizeof full, "%s.%s", path, key);
    else
        snprintf(full, sizeof full, "%s", key);
    return collector_put(c, full, v);
}

bp_status bp_node_vars(bp_node *n, const bp_collect_opts *opts, bp_collector **out)
{
    bp_collect_opts o = opts ? *opts : bp_collect_defaults();
    if (!out) return bp_fail(BP_EINVAL, "vars: out is NULL");
    *out = NULL;
    BP_TRY(check_opts("vars", n, &o));
    bp_collector *nodes, *c;
    BP_TRY(bp_node_nodes(n, &o, &nodes));
    bp_status st = collector_new(&c, false);
    for (size_t i = 0; !st && i < nodes->n; i++) {
        const char *path = nodes->keys[i];
        struct bp_node_priv *p = ((bp_node *)nodes->items[i])->priv;
        for (size_t a = 0; !st && a < p->n_attrs; a++) {
            bp_entry *e = &p->attrs[a];
            if (e->is_node) continue;
            for (size_t j = 0; !st && j < e->n; j++) {
                char key[512];
                if (e->is_list)
                    snprintf(key, sizeof key, "%s-%zu", e->key, j);
                else
                    snprintf(key, sizeof key, "%s", e->key);
                st = put_var(c, path, key, e->items[j], o.exclude_kinds);
            }
        }
        /* BrainPy prefixes implicit vars with "<path>." even at the relative
         * root (giving ".key"); bpc uses the same rule as attributes. */
        for (size_t a = 0; !st && a < p->n_implicit_vars; a++)
            st = put_var(c, path, p->implicit_vars[a].key, p->implicit_vars[a].items[0], o.exclude_kinds);
    }
    bp_collector_free(nodes);
    if (st) {
        bp_collector_free(c);
        return st;
    }
    *out = c;
    return BP_OK;
}

bp_status bp_node_train_vars(bp_node *n, const bp_collect_opts *opts, bp_collector **out)
{
    bp_collector *all;
    if (out) *out = NULL;
    BP_TRY(bp_node_vars(n, opts, &all));
    bp_status st = bp_collector_subset(all, BP_TRAINVAR, out);
    bp_collector_free(all);
    return st;
}
