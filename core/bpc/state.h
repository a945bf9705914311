/* bpc/state.h — state dicts, as BrainPy's state_dict / load_state_dict, and
 * tree_flatten / tree_unflatten.
 *
 * A bp_dict is an ordered map from a string key to either a tensor or a nested
 * bp_dict (the C form of a Python dict of arrays). state_dict() is nested:
 *   { "BatchNorm3d0": { "BatchNorm3d0.running_mean": ..., ... }, ... }
 * with one entry per node of the tree (nodes without vars map to {}).
 *
 * Ownership: a dict owns its sub-dicts and holds a reference to each tensor.
 * state_dict() and save_state() put copies of the values in it, so the dict is
 * a snapshot. */
#ifndef BPC_STATE_H
#define BPC_STATE_H

#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_dict bp_dict;

bp_status bp_dict_new(bp_dict **out);
void bp_dict_free(bp_dict *d);
size_t bp_dict_len(const bp_dict *d);
const char *bp_dict_key(const bp_dict *d, size_t i);
/* Entry i as a tensor / a sub-dict (NULL if it is the other kind). Borrowed. */
bp_tensor *bp_dict_tensor(const bp_dict *d, size_t i);
bp_dict *bp_dict_sub(const bp_dict *d, size_t i);
/* Lookups by key (NULL when absent or of the other kind). Borrowed. */
bp_tensor *bp_dict_get_tensor(const bp_dict *d, const char *key);
bp_dict *bp_dict_get_dict(const bp_dict *d, const char *key);
/* Sets key to t (the dict takes a reference), replacing an existing entry in place. */
bp_status bp_dict_set_tensor(bp_dict *d, const char *key, bp_tensor *t);
/* Sets key to sub; the dict takes ownership of sub (also on failure, except
 * when sub is d itself, BP_EINVAL). sub must not be owned by another dict. */
bp_status bp_dict_set_dict(bp_dict *d, const char *key, bp_dict *sub);
/* Removes key (releasing its value), keeping the order of the others.
 * BP_ENOTFOUND if absent, BP_EINVAL for a NULL dict or key. */
bp_status bp_dict_remove(bp_dict *d, const char *key);

/* The result of a load: clean keys (no doubled node prefix). */
typedef struct bp_load_result {
    char **missing_keys;      /* vars of the tree absent from the state */
    size_t n_missing;
    char **unexpected_keys;   /* keys of the state that match no var of the tree */
    size_t n_unexpected;
} bp_load_result;

/* Frees the lists in r (not r itself) and zeroes it. */
void bp_load_result_clear(bp_load_result *r);

/* save_state(): the node's own vars (level 0, unique) as a flat dict of copies,
 * keyed absolutely ("BatchNorm3d0.running_mean"). */
bp_status bp_node_save_state(bp_node *n, bp_dict **out);
/* load_state(flat): loads the intersection of keys; reports the rest in
 * result (may be NULL; zeroed on failure). All shapes and dtypes are checked
 * before anything is written: BP_ESHAPE / BP_EDTYPE leave the node unchanged;
 * BP_EFORMAT when a var's key maps to a nested dict. Never warns. */
bp_status bp_node_load_state(bp_node *n, const bp_dict *state, bp_load_result *result);

/* state_dict(): nested, one entry per node of nodes() (absolute). */
bp_status bp_node_state_dict(bp_node *n, bp_dict **out);

typedef enum bp_compat {
    BP_COMPAT_V2 = 2,   /* nested, as state_dict() writes (BrainPy default) */
    BP_COMPAT_V1 = 1    /* flat, keyed as vars().unique() */
} bp_compat;

/* load_state_dict(state, warn, compatible). Missing and unexpected keys are
 * returned in result (may be NULL) and, with warn, reported through bp_warn
 * (unexpected first, then missing, as BrainPy). Unlike BrainPy 2.8.2, entries
 * of the state for nodes that do not exist in the tree are reported as
 * unexpected rather than silently ignored.
 * All or nothing: a shape or dtype mismatch on any key is BP_ESHAPE /
 * BP_EDTYPE and the tree is left unchanged (nothing warned, result zeroed).
 * BP_EFORMAT for a v2 node entry that is a tensor, or a var entry that is a
 * dict. A compatible value other than v1 or v2 is BP_EINVAL. */
bp_status bp_node_load_state_dict(bp_node *n, const bp_dict *state, bool warn, bp_compat compatible,
                                  bp_load_result *result);

/* ------------------------------------------------------ tree_flatten / unflatten */

/* The static description of a flattened tree: the node it came from, the
 * keys, shapes and dtypes of its dynamic values. Holds a node reference. */
typedef struct bp_tree_def bp_tree_def;

/* tree_flatten(): every variable of the tree (vars().unique() order) as a flat
 * array of value copies (*values, *count; free with bp_tree_values_free) plus
 * the description *def (free with bp_tree_def_free). */
bp_status bp_node_tree_flatten(bp_node *n, bp_tensor ***values, size_t *count, bp_tree_def **def);
/* tree_unflatten(def, values): checks count, shapes and dtypes against def,
 * then writes the values into the tree def came from and returns that node
 * (a new reference) in *out. All or nothing. C cannot build an object
 * without its constructor, so the values go back into the described tree.
 * Errors: BP_ESHAPE (wrong count or shape), BP_EDTYPE, BP_EINVAL (NULL
 * value), BP_ENOTFOUND (a key that the tree no longer has, e.g. after a
 * rename), BP_ESHAPE / BP_EDTYPE (a var whose tensor changed since flatten). */
bp_status bp_tree_unflatten(const bp_tree_def *def, bp_tensor *const *values, size_t count,
                            bp_node **out);
size_t bp_tree_def_len(const bp_tree_def *def);
const char *bp_tree_def_key(const bp_tree_def *def, size_t i);
void bp_tree_def_free(bp_tree_def *def);
void bp_tree_values_free(bp_tensor **values, size_t count);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
