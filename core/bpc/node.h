/* bpc/node.h — the node/variable tree, as BrainPy's BrainPyObject / DynamicalSystem.
 *
 * A node is an instance of a node class (a vtable: name, size, supported modes,
 * update, reset_state, ...). It holds, in declaration order, named attributes
 * that are variables, child nodes, or lists of either; plus implicit vars and
 * implicit nodes registered under keys. Collectors walk this tree exactly as
 * BrainPy 2.8.2 does (see docs/brainpy-semantics.md §2):
 *
 *   nodes(absolute): key = node name; order = self, its direct children in
 *                    declaration order (implicit nodes last), then recursion.
 *   nodes(relative): self is "", children "attr", list items "attr-i",
 *                    deeper keys joined with '.'.
 *   vars():          for each collected node, its vars as "<nodekey>.<attr>"
 *                    (plain "<attr>" for the relative root), list items
 *                    "<nodekey>.<attr>-i", then implicit vars "<nodekey>.<key>".
 *                    Two deliberate departures at the relative root, where
 *                    BrainPy's keys are broken: var-list items are "<attr>-i"
 *                    (BrainPy collapses them all to "<attr>", a conflict for
 *                    two or more) and implicit vars are "<key>" (BrainPy: ".<key>").
 *
 * Names: automatic names are "<ClassName><n>" with one counter per class name;
 * a user name must be an identifier and unique among live nodes. A freed node
 * frees its name (BrainPy 2.8.2's weak references).
 *
 * Ownership: nodes and variables are reference counted. bp_node_create and
 * bp_var_new return one reference held by the caller. Adding a child or a
 * variable to a node makes the node hold its own reference, so the caller may
 * drop theirs. bp_node_free drops a reference; the last one frees the node, its
 * variables and its references to children. Collectors hold references to
 * what they list until bp_collector_free. Reference counts are not atomic:
 * use one tree from one thread at a time (the name registry itself is
 * locked). An edge that would make a node its own descendant is refused with
 * BP_EINVAL, since a reference cycle would never be freed. */
#ifndef BPC_NODE_H
#define BPC_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <bpc/tensor.h>
#include <bpc/mode.h>
#include <bpc/share.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_node bp_node;
typedef struct bp_var bp_var;
typedef struct bp_collector bp_collector;

/* ---------------------------------------------------------------- variables */

/* Variable kinds, usable as a bit mask in subset / exclude calls. A TrainVar is
 * also a Variable, so a mask with BP_VARIABLE matches every variable (isinstance). */
typedef enum bp_var_kind {
    BP_VARIABLE = 1,   /* state: running statistics, counters, delays */
    BP_TRAINVAR = 2    /* a trainable parameter: also carries a gradient tensor */
} bp_var_kind;

struct bp_var {
    bp_var_kind kind;
    bp_tensor *value;   /* owned */
    bp_tensor *grad;    /* TrainVar only: same shape and dtype as value, owned; else NULL */
    int refcount;
};

/* A new variable holding `value` (the var takes its own reference; the
 * caller keeps theirs). A TrainVar also gets a zero gradient of the same shape. */
bp_status bp_var_new(bp_var **out, bp_var_kind kind, bp_tensor *value);
bp_var *bp_var_retain(bp_var *v);
/* Drops a reference; frees on the last. NULL is ignored. */
void bp_var_free(bp_var *v);
/* Copies x into the variable. As BrainPy's Variable.value setter, the shape and
 * dtype must match exactly (BP_ESHAPE / BP_EDTYPE, value unchanged). */
bp_status bp_var_assign(bp_var *v, const bp_tensor *x);
/* Zeros the gradient (no-op for a plain Variable). */
void bp_var_zero_grad(bp_var *v);
/* "Variable" or "TrainVar". */
const char *bp_var_kind_name(bp_var_kind k);
/* True if v is an instance of one of the kinds in `mask` (see bp_var_kind). */
bool bp_var_is(const bp_var *v, unsigned mask);

/* ------------------------------------------------------------- node classes */

/* The vtable of a node class. Layer implementations define one static
 * instance each. Every hook may be NULL. */
typedef struct bp_node_class {
    const char *name;                      /* class name, prefix of automatic names */
    size_t size;                           /* sizeof the struct that embeds bp_node first */
    const bp_mode_kind *supported_modes;   /* NULL: any mode */
    size_t n_supported_modes;
    const bp_mode *default_mode;           /* mode when none is given; NULL: bp_get_mode() */
    bool reads_shared;                     /* update reads the shared context (pass_shared) */
    /* Computes the output of the node for x. The output is a new reference. */
    bp_status (*update)(bp_node *self, bp_tensor *x, bp_tensor **out);
    /* Resets the node's own dynamic state (not its children's). */
    bp_status (*reset_state)(bp_node *self);
    /* Clears inputs accumulated during a step. */
    void (*clear_input)(bp_node *self);
    /* Frees the subclass's own fields (not vars or children; the base does). */
    void (*destroy)(bp_node *self);
} bp_node_class;

struct bp_node_priv;

/* The base of every node; subclasses embed it as their first member. */
struct bp_node {
    const bp_node_class *cls;
    bp_mode mode;
    struct bp_node_priv *priv;   /* private to core */
};

/* Allocates cls->size zeroed bytes, names the node and checks its mode.
 * name NULL: automatic "<ClassName><n>". mode NULL: cls->default_mode, else the
 * global mode. Errors: BP_ENAME (not an identifier, or used by a live node),
 * BP_EMODE (a mode the class does not support, with BrainPy's message),
 * BP_EINVAL (cls NULL or size too small). */
bp_status bp_node_create(bp_node **out, const bp_node_class *cls, const char *name,
                         const bp_mode *mode);
bp_node *bp_node_retain(bp_node *n);
/* Drops a reference; the last one frees the node. NULL is ignored. */
void bp_node_free(bp_node *n);

const char *bp_node_name(const bp_node *n);
const char *bp_node_class_name(const bp_node *n);
/* Renames the node (the name setter: validated as at construction; name NULL
 * gives a fresh automatic name). The old name is released; on failure the
 * node keeps its old name. */
bp_status bp_node_set_name(bp_node *n, const char *name);
/* Changes the mode; checked against the class's supported modes (BP_EMODE,
 * mode unchanged) and for a valid kind (BP_EINVAL). */
bp_status bp_node_set_mode(bp_node *n, bp_mode mode);
/* BrainPy's repr: "BatchNorm3d0(mode=TrainingMode(batch_size=1))". */
const char *bp_node_repr(const bp_node *n, char *buf, size_t cap);

/* ---------------------------------------------------------------- attributes */

/* Declares a variable attribute (order of declaration = order in vars()).
 * The node takes its own reference to `value`. out (may be NULL) receives a
 * borrowed pointer to the new var. BP_ENAME for a duplicate or invalid attr. */
bp_status bp_node_add_var(bp_node *n, const char *attr, bp_var_kind kind, bp_tensor *value,
                          bp_var **out);
/* Declares an existing variable as an attribute (shared, not copied). */
bp_status bp_node_attach_var(bp_node *n, const char *attr, bp_var *v);
/* Declares a list of variables (VarList): keys "<attr>-<i>". */
bp_status bp_node_add_var_list(bp_node *n, const char *attr, size_t count, bp_var *const *vars);
/* Declares a child node attribute; the parent takes a reference. BP_EINVAL
 * when child is n or an ancestor of n (the reference cycle would never be
 * freed); a second path to the same descendant is fine. */
bp_status bp_node_add_child(bp_node *n, const char *attr, bp_node *child);
/* Declares a list of child nodes (NodeList): relative keys "<attr>-<i>".
 * Each item is checked as in bp_node_add_child. */
bp_status bp_node_add_child_list(bp_node *n, const char *attr, size_t count,
                                 bp_node *const *children);
/* The variable / child declared as `attr`, or NULL. Borrowed. */
bp_var *bp_node_var(const bp_node *n, const char *attr);
bp_node *bp_node_child(const bp_node *n, const char *attr);

/* register_implicit_vars: each var under keys[i], or "var<address>" when keys
 * is NULL or keys[i] is NULL (BrainPy's f'var{id(v)}'). The node takes a
 * reference to each. The same var under its key again is a no-op. All or
 * nothing: BP_ECONFLICT when a key is already bound to a different var or
 * given twice for different vars in this call, and then nothing is registered. */
bp_status bp_node_register_implicit_vars(bp_node *n, size_t count, const char *const *keys,
                                         bp_var *const *vars);
/* register_implicit_nodes: each node under keys[i], or its name when keys is
 * NULL or keys[i] is NULL. Implicit nodes come after the attribute children
 * in nodes(). Checked and all or nothing as above, plus BP_EINVAL for n
 * itself or an ancestor of n. */
bp_status bp_node_register_implicit_nodes(bp_node *n, size_t count, const char *const *keys,
                                          bp_node *const *nodes);

/* --------------------------------------------------------------- collectors */

typedef enum bp_path_method { BP_ABSOLUTE = 0, BP_RELATIVE = 1 } bp_path_method;

/* Options of nodes() / vars() / train_vars(). Get defaults from bp_collect_defaults():
 * absolute, level -1 (all levels), include_self true, exclude nothing. */
typedef struct bp_collect_opts {
    bp_path_method method;
    int level;               /* 0: self only, 1: plus direct children, -1: all */
    bool include_self;
    unsigned exclude_kinds;  /* vars(): drop vars of these kinds (bp_var_kind mask) */
} bp_collect_opts;

bp_collect_opts bp_collect_defaults(void);

/* Collects the tree's nodes / variables / trainable variables (opts NULL =
 * defaults). The collector is ordered; free it with bp_collector_free.
 * Errors: BP_ECONFLICT (two objects under one key), BP_ENOMEM. */
bp_status bp_node_nodes(bp_node *n, const bp_collect_opts *opts, bp_collector **out);
bp_status bp_node_vars(bp_node *n, const bp_collect_opts *opts, bp_collector **out);
bp_status bp_node_train_vars(bp_node *n, const bp_collect_opts *opts, bp_collector **out);

/* An ordered key -> var or key -> node map. */
size_t bp_collector_len(const bp_collector *c);
const char *bp_collector_key(const bp_collector *c, size_t i);
/* Item i as a var / node (NULL if the collector holds the other kind). Borrowed. */
bp_var *bp_collector_var(const bp_collector *c, size_t i);
bp_node *bp_collector_node(const bp_collector *c, size_t i);
/* Index of key, or -1 (also for a NULL collector or key). */
long bp_collector_find(const bp_collector *c, const char *key);
/* subset(kinds) / not_subset(kinds) for var collectors (isinstance semantics:
 * BP_VARIABLE matches every var). BP_EINVAL for a node collector. */
bp_status bp_collector_subset(const bp_collector *c, unsigned kinds, bp_collector **out);
bp_status bp_collector_not_subset(const bp_collector *c, unsigned kinds, bp_collector **out);
/* For node collectors: keep nodes whose class is exactly cls. BP_EINVAL for a
 * var collector or a NULL class. */
bp_status bp_collector_subset_class(const bp_collector *c, const bp_node_class *cls,
                                    bp_collector **out);
/* unique(): drops later keys bound to an object already listed (first key
 * wins). Works on both kinds of collector. */
bp_status bp_collector_unique(const bp_collector *c, bp_collector **out);
void bp_collector_free(bp_collector *c);

/* ------------------------------------------------------------------- names */

/* unique_name(name, type): with name, validates it (identifier, not used by a
 * live node other than `self`, which may be NULL) and copies it; without, makes
 * "<type><n>" from the per-type counter (type NULL: self's class name), which
 * must not be the name of another live node. Writes into buf (cap bytes).
 * Reserves nothing: only live nodes hold names. Errors: BP_ENAME (invalid or
 * taken), BP_EINVAL (buf NULL or too small; the counter is then not used up). */
bp_status bp_unique_name(const bp_node *self, const char *name, const char *type, char *buf,
                         size_t cap);
/* Clears the name registry and every counter (brainpy.math.clear_name_cache).
 * Live nodes keep their names but no longer reserve them, so a new node may
 * then take a live node's name; a tree holding both fails nodes(absolute)
 * with BP_ECONFLICT. */
void bp_clear_name_cache(void);
/* True if s is a valid identifier ([A-Za-z_][A-Za-z0-9_]*). ASCII only:
 * Python's str.isidentifier also accepts non-ASCII letters. */
bool bp_is_identifier(const char *s);

/* ---------------------------------------------------------- update and reset */

/* update(x): the class's update. BP_EUNSUPPORTED if the class has none. */
bp_status bp_node_update(bp_node *n, bp_tensor *x, bp_tensor **out);
/* __call__ with shared arguments: saves `shared` (may be NULL) into the shared
 * context, then runs update(x). The C form of `layer({'fit': True}, x)`. */
bp_status bp_node_call(bp_node *n, const bp_shared_args *shared, bp_tensor *x, bp_tensor **out);
/* pass_shared: whether the node's update reads the shared context. */
bool bp_node_pass_shared(const bp_node *n);
/* reset_state(): the node's own hook only. */
bp_status bp_node_reset_state(bp_node *n);
/* reset(): reset_state on every unique node of the tree, in nodes() order
 * (self first). Stops at the first hook that fails and returns its status. */
bp_status bp_node_reset(bp_node *n);
/* clear_input(): the hook on every unique node of the tree, in nodes() order. */
void bp_node_clear_input(bp_node *n);
/* Zeros the gradient of every TrainVar in the tree. */
void bp_node_zero_grad(bp_node *n);

/* ----------------------------------------------------------------- devices */

/* to(device): "cpu" succeeds (all data already lives there); "gpu"/"cuda"
 * and "tpu" fail with BP_EUNSUPPORTED ("not available in this build");
 * anything else is BP_EINVAL. */
bp_status bp_node_to(bp_node *n, const char *device);
bp_status bp_node_cpu(bp_node *n);
bp_status bp_node_cuda(bp_node *n);
bp_status bp_node_tpu(bp_node *n);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
