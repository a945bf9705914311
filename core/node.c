/* core/node.c — nodes, variables, attributes and the name registry.
 *
 * The tree semantics (collectors, key formats, traversal order) follow
 * BrainPy 2.8.2; see bpc/node.h for the summary and collect.c for the walks. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "node_priv.h"

/* ---------------------------------------------------------------- variables */

bp_status bp_var_new(bp_var **out, bp_var_kind kind, bp_tensor *value)
{
    if (!out) return bp_fail(BP_EINVAL, "var_new: out is NULL");
    *out = NULL;
    if (!value) return bp_fail(BP_EINVAL, "var_new: value is NULL");
    if (kind != BP_VARIABLE && kind != BP_TRAINVAR)
        return bp_fail(BP_EINVAL, "var_new: kind must be BP_VARIABLE or BP_TRAINVAR, got %d", (int)kind);
    bp_var *v = calloc(1, sizeof *v);
    if (!v) return bp_fail(BP_ENOMEM, "var_new: out of memory");
    v->kind = kind;
    v->refcount = 1;
    if (kind == BP_TRAINVAR) {
        /* The gradient lives with the var; the value becomes an autograd leaf
         * whose backward accumulates straight into it. */
        bp_status st = bp_tensor_new(&v->grad, value->dtype, value->ndim, value->shape);
        if (st) {
            free(v);
            return st;
        }
        value->requires_grad = true;
        value->grad = v->grad;
    }
    v->value = bp_tensor_retain(value);
    *out = v;
    return BP_OK;
}

bp_var *bp_var_retain(bp_var *v)
{
    if (v) v->refcount++;
    return v;
}

void bp_var_free(bp_var *v)
{
    if (!v || --v->refcount > 0) return;
    if (v->value && v->value->grad == v->grad) v->value->grad = NULL;
    bp_tensor_free(v->value);
    bp_tensor_free(v->grad);
    free(v);
}

bp_status bp_var_assign(bp_var *v, const bp_tensor *x)
{
    char a[96], b[96];
    if (!v || !x) return bp_fail(BP_EINVAL, "var_assign: NULL %s", v ? "value" : "variable");
    if (!bp_tensor_same_shape(v->value, x))
        return bp_fail(BP_ESHAPE, "The shape of the original data is %s, while we got %s.",
                       bp_shape_str(a, sizeof a, v->value->ndim, v->value->shape),
                       bp_shape_str(b, sizeof b, x->ndim, x->shape));
    if (v->value->dtype != x->dtype)
        return bp_fail(BP_EDTYPE, "The dtype of the original data is %s, while we got %s.",
                       bp_dtype_name(v->value->dtype), bp_dtype_name(x->dtype));
    return bp_tensor_copy(v->value, x);
}

void bp_var_zero_grad(bp_var *v)
{
    if (v && v->grad) bp_tensor_zero(v->grad);
}

const char *bp_var_kind_name(bp_var_kind k) { return k == BP_TRAINVAR ? "TrainVar" : "Variable"; }

bool bp_var_is(const bp_var *v, unsigned mask)
{
    if (!v) return false;
    if (mask & BP_VARIABLE) return true; /* every var is a Variable */
    return (mask & BP_TRAINVAR) && v->kind == BP_TRAINVAR;
}

/* ------------------------------------------------------------ name registry */

typedef struct name_entry {
    char *name;
    const bp_node *node;
} name_entry;

typedef struct counter_entry {
    char *type;
    long next;
} counter_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static name_entry *names;
static size_t n_names, cap_names;
static counter_entry *counters;
static size_t n_counters;

bool bp_is_identifier(const char *s)
{
    if (!s || !*s) return false;
    if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return false;
    for (const char *p = s + 1; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* The live node holding name, or NULL. Caller holds the lock. */
static const bp_node *owner_of(const char *name)
{
    for (size_t i = 0; i < n_names; i++)
        if (strcmp(names[i].name, name) == 0) return names[i].node;
    return NULL;
}

static bp_status check_unique(const bp_node *self, const char *name)
{
    if (!bp_is_identifier(name))
        return bp_fail(BP_ENAME,
                       "\"%s\" isn't a valid identifier (letters, digits and '_', not starting with a "
                       "digit). Please choose another name.",
                       name ? name : "(null)");
    const bp_node *o = owner_of(name);
    if (o && o != self)
        return bp_fail(BP_ENAME,
                       "In bpc, each object should have a unique name. \"%s\" is already used by a "
                       "live %s. Free that node, choose another name, or call bp_clear_name_cache().",
                       name, o->cls->name);
    return BP_OK;
}

/* Makes "<type><n>" from the type's counter. Caller holds the lock. */
static bp_status next_auto_name(const char *type, char *buf, size_t cap)
{
    counter_entry *c = NULL;
    for (size_t i = 0; i < n_counters; i++)
        if (strcmp(counters[i].type, type) == 0) c = &counters[i];
    if (!c) {
        counter_entry *grown = realloc(counters, sizeof *counters * (n_counters + 1));
        if (!grown) return bp_fail(BP_ENOMEM, "unique_name: out of memory");
        counters = grown;
        c = &counters[n_counters];
        c->type = strdup(type);
        if (!c->type) return bp_fail(BP_ENOMEM, "unique_name: out of memory");
        c->next = 0;
        n_counters++;
    }
    int len = snprintf(buf, cap, "%s%ld", type, c->next);
    if (len < 0 || (size_t)len >= cap)
        return bp_fail(BP_EINVAL, "unique_name: \"%s%ld\" needs %d bytes, buffer has %zu", type, c->next,
                       len + 1, cap);
    c->next++;
    return BP_OK;
}

bp_status bp_unique_name(const bp_node *self, const char *name, const char *type, char *buf,
                         size_t cap)
{
    if (!buf || cap == 0) return bp_fail(BP_EINVAL, "unique_name: buf is NULL or empty");
    bp_status st = BP_OK;
    pthread_mutex_lock(&registry_lock);
    if (name) {
        st = check_unique(self, name);
        if (!st && strlen(name) >= cap)
            st = bp_fail(BP_EINVAL, "unique_name: \"%s\" needs %zu bytes, buffer has %zu", name,
                         strlen(name) + 1, cap);
        if (!st) snprintf(buf, cap, "%s", name);
    } else {
        if (!type && self) type = self->cls->name;
        if (!type || !bp_is_identifier(type))
            st = bp_fail(BP_ENAME, "unique_name: type \"%s\" must be an identifier",
                         type ? type : "(null)");
        else
            st = next_auto_name(type, buf, cap);
        if (!st) st = check_unique(self, buf);
    }
    pthread_mutex_unlock(&registry_lock);
    return st;
}

static void unregister_node(const bp_node *n)
{
    for (size_t i = 0; i < n_names; i++)
        if (names[i].node == n) {
            free(names[i].name);
            names[i] = names[--n_names];
            break;
        }
    if (n_names == 0) {
        free(names);
        names = NULL;
        cap_names = 0;
    }
}

/* Gives n the name (automatic when name is NULL), releasing its old one.
 * A rename updates n's registry entry in place, so the registry never goes
 * through an empty state (which would free its array) in the middle. */
static bp_status assign_name(bp_node *n, const char *name)
{
    char buf[256];
    bp_status st = BP_OK;
    pthread_mutex_lock(&registry_lock);
    if (name) {
        if (strlen(name) >= sizeof buf)
            st = bp_fail(BP_ENAME, "name \"%.40s...\" is longer than %zu characters", name, sizeof buf - 1);
        else
            st = check_unique(n, name);
        if (!st) snprintf(buf, sizeof buf, "%s", name);
    } else {
        st = next_auto_name(n->cls->name, buf, sizeof buf);
        if (!st) st = check_unique(n, buf);
    }
    char *copy = NULL, *reg = NULL;
    if (!st && (!(copy = strdup(buf)) || !(reg = strdup(buf)))) st = bp_fail(BP_ENOMEM, "name: out of memory");
    name_entry *mine = NULL;
    for (size_t i = 0; !st && i < n_names; i++)
        if (names[i].node == n) mine = &names[i];
    if (!st && !mine && n_names == cap_names) {
        size_t cap = cap_names ? cap_names * 2 : 32;
        name_entry *grown = realloc(names, sizeof *names * cap);
        if (!grown)
            st = bp_fail(BP_ENOMEM, "name: out of memory");
        else {
            names = grown;
            cap_names = cap;
        }
    }
    if (!st) {
        if (mine) {
            free(mine->name);
            mine->name = reg;
        } else {
            names[n_names++] = (name_entry){reg, n};
        }
        free(n->priv->name);
        n->priv->name = copy;
    } else {
        free(copy);
        free(reg);
    }
    pthread_mutex_unlock(&registry_lock);
    return st;
}

void bp_clear_name_cache(void)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_names; i++) free(names[i].name);
    free(names);
    names = NULL;
    n_names = cap_names = 0;
    for (size_t i = 0; i < n_counters; i++) free(counters[i].type);
    free(counters);
    counters = NULL;
    n_counters = 0;
    pthread_mutex_unlock(&registry_lock);
}

/* -------------------------------------------------------------------- nodes */

static bp_status check_mode(const bp_node_class *cls, const char *who, bp_mode mode)
{
    if ((int)mode.kind < BP_MODE || mode.kind > BP_TRAINING_MODE)
        return bp_fail(BP_EINVAL, "%s: mode kind must be a bp_mode_kind, got %d", who, (int)mode.kind);
    if (!cls->supported_modes || bp_mode_is_parent_of(mode, cls->supported_modes, cls->n_supported_modes))
        return BP_OK;
    char list[160] = "", got[64];
    size_t len = 0;
    for (size_t i = 0; i < cls->n_supported_modes && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                bp_mode_kind_name(cls->supported_modes[i]));
    return bp_fail(BP_EMODE,
                   "%s: The mode only supports computing modes which are parents of (%s), but we got %s.",
                   who, list, bp_mode_repr(mode, got, sizeof got));
}

bp_status bp_node_create(bp_node **out, const bp_node_class *cls, const char *name, const bp_mode *mode)
{
    if (!out) return bp_fail(BP_EINVAL, "node_create: out is NULL");
    *out = NULL;
    if (!cls || !cls->name) return bp_fail(BP_EINVAL, "node_create: class is NULL or unnamed");
    if (cls->size < sizeof(bp_node))
        return bp_fail(BP_EINVAL, "node_create: %s.size is %zu, smaller than bp_node (%zu)", cls->name,
                       cls->size, sizeof(bp_node));
    bp_mode m = mode ? *mode : cls->default_mode ? *cls->default_mode : bp_get_mode();
    BP_TRY(check_mode(cls, cls->name, m));
    bp_node *n = calloc(1, cls->size);
    if (!n) return bp_fail(BP_ENOMEM, "node_create: out of memory for %s", cls->name);
    n->priv = calloc(1, sizeof *n->priv);
    if (!n->priv) {
        free(n);
        return bp_fail(BP_ENOMEM, "node_create: out of memory for %s", cls->name);
    }
    n->cls = cls;
    n->mode = m;
    n->priv->refcount = 1;
    bp_status st = assign_name(n, name);
    if (st) {
        free(n->priv);
        free(n);
        return st;
    }
    *out = n;
    return BP_OK;
}

bp_node *bp_node_retain(bp_node *n)
{
    if (n) n->priv->refcount++;
    return n;
}

static void entries_free(bp_entry *e, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        for (size_t j = 0; j < e[i].n; j++) {
            if (e[i].is_node)
                bp_node_free(e[i].items[j]);
            else
                bp_var_free(e[i].items[j]);
        }
        free(e[i].items);
        free(e[i].key);
    }
    free(e);
}

void bp_node_free(bp_node *n)
{
    if (!n || --n->priv->refcount > 0) return;
    bp__delay_forget_owner(n);
    if (n->cls->destroy) n->cls->destroy(n);
    struct bp_node_priv *p = n->priv;
    entries_free(p->attrs, p->n_attrs);
    entries_free(p->implicit_vars, p->n_implicit_vars);
    entries_free(p->implicit_nodes, p->n_implicit_nodes);
    pthread_mutex_lock(&registry_lock);
    unregister_node(n);
    pthread_mutex_unlock(&registry_lock);
    free(p->name);
    free(p);
    free(n);
}

const char *bp_node_name(const bp_node *n) { return n ? n->priv->name : NULL; }
const char *bp_node_class_name(const bp_node *n) { return n ? n->cls->name : NULL; }

bp_status bp_node_set_name(bp_node *n, const char *name)
{
    if (!n) return bp_fail(BP_EINVAL, "node_set_name: node is NULL");
    return assign_name(n, name);
}

bp_status bp_node_set_mode(bp_node *n, bp_mode mode)
{
    if (!n) return bp_fail(BP_EINVAL, "node_set_mode: node is NULL");
    BP_TRY(check_mode(n->cls, n->priv->name, mode));
    n->mode = mode;
    return BP_OK;
}

const char *bp_node_repr(const bp_node *n, char *buf, size_t cap)
{
    char m[64];
    if (!n) {
        snprintf(buf, cap, "(null)");
        return buf;
    }
    snprintf(buf, cap, "%s(mode=%s)", n->priv->name, bp_mode_repr(n->mode, m, sizeof m));
    return buf;
}

/* --------------------------------------------------------------- attributes */

static bp_entry *find_entry(bp_entry *e, size_t count, const char *key)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(e[i].key, key) == 0) return &e[i];
    return NULL;
}

/* Appends an entry holding count items (each retained). */
static bp_status push_entry(bp_entry **arr, size_t *count, const char *key, bool is_node, bool is_list,
                            size_t n, void *const *items)
{
    bp_entry *grown = realloc(*arr, sizeof **arr * (*count + 1));
    if (!grown) return bp_fail(BP_ENOMEM, "attribute \"%s\": out of memory", key);
    *arr = grown;
    bp_entry *e = &grown[*count];
    memset(e, 0, sizeof *e);
    e->key = strdup(key);
    e->items = malloc(sizeof(void *) * (n ? n : 1));
    if (!e->key || !e->items) {
        free(e->key);
        free(e->items);
        return bp_fail(BP_ENOMEM, "attribute \"%s\": out of memory", key);
    }
    e->is_node = is_node;
    e->is_list = is_list;
    e->n = n;
    for (size_t i = 0; i < n; i++) {
        e->items[i] = items[i];
        if (is_node)
            bp_node_retain(items[i]);
        else
            bp_var_retain(items[i]);
    }
    (*count)++;
    return BP_OK;
}

static bp_status check_attr(const bp_node *n, const char *attr)
{
    if (!n) return bp_fail(BP_EINVAL, "node attribute: node is NULL");
    if (!bp_is_identifier(attr))
        return bp_fail(BP_ENAME, "%s: attribute name \"%s\" is not an identifier", n->priv->name,
                       attr ? attr : "(null)");
    if (find_entry(n->priv->attrs, n->priv->n_attrs, attr))
        return bp_fail(BP_ENAME, "%s: attribute \"%s\" is already declared", n->priv->name, attr);
    return BP_OK;
}

/* True if `target` is `from` or lies below it (attributes and implicit
 * nodes). Adding a node below one of its own descendants would make a
 * reference cycle that is never freed, so such an edge is refused. */
static bool reaches(const bp_node *from, const bp_node *target)
{
    if (from == target) return true;
    const struct bp_node_priv *p = from->priv;
    for (size_t i = 0; i < p->n_attrs + p->n_implicit_nodes; i++) {
        const bp_entry *e = i < p->n_attrs ? &p->attrs[i] : &p->implicit_nodes[i - p->n_attrs];
        if (!e->is_node) continue;
        for (size_t j = 0; j < e->n; j++)
            if (reaches(e->items[j], target)) return true;
    }
    return false;
}

/* The checks shared by every way of hanging `child` below n. */
static bp_status check_child(const bp_node *n, const char *what, const bp_node *child)
{
    if (child == n) return bp_fail(BP_EINVAL, "%s: a node cannot be its own %s", n->priv->name, what);
    if (reaches(child, n))
        return bp_fail(BP_EINVAL, "%s: %s %s is an ancestor of it (a cycle would never be freed)",
                       n->priv->name, what, child->priv->name);
    return BP_OK;
}

bp_status bp_node_add_var(bp_node *n, const char *attr, bp_var_kind kind, bp_tensor *value, bp_var **out)
{
    if (out) *out = NULL;
    BP_TRY(check_attr(n, attr));
    bp_var *v;
    BP_TRY(bp_var_new(&v, kind, value));
    bp_status st = push_entry(&n->priv->attrs, &n->priv->n_attrs, attr, false, false, 1, (void **)&v);
    bp_var_free(v); /* the node holds its own reference now (or none on failure) */
    if (!st && out) *out = v;
    return st;
}

bp_status bp_node_attach_var(bp_node *n, const char *attr, bp_var *v)
{
    BP_TRY(check_attr(n, attr));
    if (!v) return bp_fail(BP_EINVAL, "%s: attach_var \"%s\": var is NULL", n->priv->name, attr);
    return push_entry(&n->priv->attrs, &n->priv->n_attrs, attr, false, false, 1, (void **)&v);
}

bp_status bp_node_add_var_list(bp_node *n, const char *attr, size_t count, bp_var *const *vars)
{
    BP_TRY(check_attr(n, attr));
    for (size_t i = 0; i < count; i++)
        if (!vars || !vars[i])
            return bp_fail(BP_EINVAL, "%s: var list \"%s\": item %zu is NULL", n->priv->name, attr, i);
    return push_entry(&n->priv->attrs, &n->priv->n_attrs, attr, false, true, count, (void *const *)vars);
}

bp_status bp_node_add_child(bp_node *n, const char *attr, bp_node *child)
{
    BP_TRY(check_attr(n, attr));
    if (!child) return bp_fail(BP_EINVAL, "%s: child \"%s\" is NULL", n->priv->name, attr);
    BP_TRY(check_child(n, "child", child));
    return push_entry(&n->priv->attrs, &n->priv->n_attrs, attr, true, false, 1, (void **)&child);
}

bp_status bp_node_add_child_list(bp_node *n, const char *attr, size_t count, bp_node *const *children)
{
    BP_TRY(check_attr(n, attr));
    for (size_t i = 0; i < count; i++) {
        if (!children || !children[i])
            return bp_fail(BP_EINVAL, "%s: node list \"%s\": item %zu is NULL", n->priv->name, attr, i);
        BP_TRY(check_child(n, "child", children[i]));
    }
    return push_entry(&n->priv->attrs, &n->priv->n_attrs, attr, true, true, count,
                      (void *const *)children);
}

bp_var *bp_node_var(const bp_node *n, const char *attr)
{
    if (!n || !attr) return NULL;
    bp_entry *e = find_entry(n->priv->attrs, n->priv->n_attrs, attr);
    return e && !e->is_node && !e->is_list ? e->items[0] : NULL;
}

bp_node *bp_node_child(const bp_node *n, const char *attr)
{
    if (!n || !attr) return NULL;
    bp_entry *e = find_entry(n->priv->attrs, n->priv->n_attrs, attr);
    return e && e->is_node && !e->is_list ? e->items[0] : NULL;
}

/* The key of implicit item i: keys[i], else the fallback written into buf. */
static const char *implicit_key(const char *const *keys, size_t i, const char *fallback)
{
    return keys && keys[i] ? keys[i] : fallback;
}

static void auto_var_key(const bp_var *v, char *buf, size_t cap)
{
    snprintf(buf, cap, "var%llu", (unsigned long long)(uintptr_t)v); /* BrainPy's f'var{id(v)}' */
}

/* Checks that registering items[0..count) under their keys binds no key
 * twice to different objects, against what e already holds and within the
 * batch, so a registration is all or nothing. */
static bp_status check_implicit_batch(const bp_node *n, const char *what, bp_entry *e, size_t n_e,
                                      size_t count, const char *const *keys, void *const *items,
                                      bool is_node)
{
    for (size_t i = 0; i < count; i++) {
        char bi[64], bj[64];
        if (!is_node) auto_var_key(items[i], bi, sizeof bi);
        const char *ki = implicit_key(keys, i, is_node ? ((bp_node *)items[i])->priv->name : bi);
        bp_entry *old = find_entry(e, n_e, ki);
        if (old && old->items[0] != items[i])
            return bp_fail(BP_ECONFLICT, "%s: implicit %s key \"%s\" is already bound to another %s",
                           n->priv->name, what, ki, what);
        for (size_t j = 0; j < i; j++) {
            if (!is_node) auto_var_key(items[j], bj, sizeof bj);
            const char *kj = implicit_key(keys, j, is_node ? ((bp_node *)items[j])->priv->name : bj);
            if (strcmp(ki, kj) == 0 && items[i] != items[j])
                return bp_fail(BP_ECONFLICT, "%s: implicit %s key \"%s\" is given twice for different %ss",
                               n->priv->name, what, ki, what);
        }
    }
    return BP_OK;
}

bp_status bp_node_register_implicit_vars(bp_node *n, size_t count, const char *const *keys,
                                         bp_var *const *vars)
{
    if (!n) return bp_fail(BP_EINVAL, "register_implicit_vars: node is NULL");
    for (size_t i = 0; i < count; i++)
        if (!vars || !vars[i])
            return bp_fail(BP_EINVAL, "%s: register_implicit_vars: var %zu is NULL", n->priv->name, i);
    struct bp_node_priv *p = n->priv;
    BP_TRY(check_implicit_batch(n, "var", p->implicit_vars, p->n_implicit_vars, count, keys,
                                (void *const *)vars, false));
    for (size_t i = 0; i < count; i++) {
        char auto_key[64];
        auto_var_key(vars[i], auto_key, sizeof auto_key);
        const char *key = implicit_key(keys, i, auto_key);
        if (find_entry(p->implicit_vars, p->n_implicit_vars, key)) continue; /* the same var again */
        BP_TRY(push_entry(&p->implicit_vars, &p->n_implicit_vars, key, false, false, 1,
                          (void *const *)&vars[i]));
    }
    return BP_OK;
}

bp_status bp_node_register_implicit_nodes(bp_node *n, size_t count, const char *const *keys,
                                          bp_node *const *nodes)
{
    if (!n) return bp_fail(BP_EINVAL, "register_implicit_nodes: node is NULL");
    for (size_t i = 0; i < count; i++) {
        if (!nodes || !nodes[i])
            return bp_fail(BP_EINVAL, "%s: register_implicit_nodes: node %zu is NULL", n->priv->name, i);
        BP_TRY(check_child(n, "implicit node", nodes[i]));
    }
    struct bp_node_priv *p = n->priv;
    BP_TRY(check_implicit_batch(n, "node", p->implicit_nodes, p->n_implicit_nodes, count, keys,
                                (void *const *)nodes, true));
    for (size_t i = 0; i < count; i++) {
        const char *key = implicit_key(keys, i, nodes[i]->priv->name);
        if (find_entry(p->implicit_nodes, p->n_implicit_nodes, key)) continue; /* the same node again */
        BP_TRY(push_entry(&p->implicit_nodes, &p->n_implicit_nodes, key, true, false, 1,
                          (void *const *)&nodes[i]));
    }
    return BP_OK;
}

bp_status bp__node_unregister_implicit_node(bp_node *n, const char *key)
{
    struct bp_node_priv *p = n->priv;
    for (size_t i = 0; i < p->n_implicit_nodes; i++)
        if (strcmp(p->implicit_nodes[i].key, key) == 0) {
            bp_entry e = p->implicit_nodes[i];
            memmove(&p->implicit_nodes[i], &p->implicit_nodes[i + 1],
                    sizeof e * (p->n_implicit_nodes - i - 1));
            p->n_implicit_nodes--;
            bp_node_free(e.items[0]);
            free(e.items);
            free(e.key);
            return BP_OK;
        }
    return bp_fail(BP_ENOTFOUND, "%s: no implicit node \"%s\"", p->name, key);
}

/* ---------------------------------------------------------- update, reset */

bp_status bp_node_update(bp_node *n, bp_tensor *x, bp_tensor **out)
{
    if (!n) return bp_fail(BP_EINVAL, "update: node is NULL");
    if (!out) return bp_fail(BP_EINVAL, "%s: update: out is NULL", n->priv->name);
    *out = NULL;
    if (!n->cls->update)
        return bp_fail(BP_EUNSUPPORTED, "%s: class %s has no update()", n->priv->name, n->cls->name);
    return n->cls->update(n, x, out);
}

bp_status bp_node_call(bp_node *n, const bp_shared_args *shared, bp_tensor *x, bp_tensor **out)
{
    if (shared) BP_TRY(bp_share_save(shared));
    return bp_node_update(n, x, out);
}

bool bp_node_pass_shared(const bp_node *n) { return n && n->cls->reads_shared; }

bp_status bp_node_reset_state(bp_node *n)
{
    if (!n) return bp_fail(BP_EINVAL, "reset_state: node is NULL");
    return n->cls->reset_state ? n->cls->reset_state(n) : BP_OK;
}

bp_status bp_node_reset(bp_node *n)
{
    bp_collector *c;
    if (!n) return bp_fail(BP_EINVAL, "reset: node is NULL");
    BP_TRY(bp_node_nodes(n, NULL, &c));
    bp_status st = BP_OK;
    for (size_t i = 0; i < bp_collector_len(c) && !st; i++) st = bp_node_reset_state(bp_collector_node(c, i));
    bp_collector_free(c);
    return st;
}

void bp_node_clear_input(bp_node *n)
{
    bp_collector *c;
    if (!n || bp_node_nodes(n, NULL, &c)) return;
    for (size_t i = 0; i < bp_collector_len(c); i++) {
        bp_node *m = bp_collector_node(c, i);
        if (m->cls->clear_input) m->cls->clear_input(m);
    }
    bp_collector_free(c);
}

void bp_node_zero_grad(bp_node *n)
{
    bp_collector *c;
    if (!n || bp_node_vars(n, NULL, &c)) return;
    for (size_t i = 0; i < bp_collector_len(c); i++) bp_var_zero_grad(bp_collector_var(c, i));
    bp_collector_free(c);
}

/* ------------------------------------------------------------------ devices */

bp_status bp_node_to(bp_node *n, const char *device)
{
    if (!n) return bp_fail(BP_EINVAL, "to: node is NULL");
    if (!device) return bp_fail(BP_EINVAL, "%s: to: device is NULL", n->priv->name);
    if (strcmp(device, "cpu") == 0) return BP_OK; /* every tensor already lives in host memory */
    if (strcmp(device, "gpu") == 0 || strcmp(device, "cuda") == 0 || strcmp(device, "tpu") == 0)
        return bp_fail(BP_EUNSUPPORTED, "%s: to(\"%s\"): device not available in this build (cpu only)",
                       n->priv->name, device);
    return bp_fail(BP_EINVAL, "%s: to: unknown device \"%s\" (expected \"cpu\", \"gpu\", \"cuda\" or \"tpu\")",
                   n->priv->name, device);
}

bp_status bp_node_cpu(bp_node *n) { return bp_node_to(n, "cpu"); }
bp_status bp_node_cuda(bp_node *n) { return bp_node_to(n, "cuda"); }
bp_status bp_node_tpu(bp_node *n) { return bp_node_to(n, "tpu"); }
