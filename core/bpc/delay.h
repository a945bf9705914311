/* bpc/delay.h — delays, with BrainPy <= 2.4.5 semantics (real ring buffers).
 *
 * LengthDelay (ROTATE update): a node with two vars, `data` of shape
 * (max_len + 1, *target.shape) and `idx` (int32, shape (1,)). Row 0 starts as
 * the target's value, rows 1.. as the initial delay data (or zeros).
 *   retrieve(d):  data[(idx + d) % (max_len + 1)]
 *   update(v):    idx = (idx - 1) % (max_len + 1); data[idx] = v
 * so after k updates, retrieve(d) returns the value written d updates ago.
 * bp_node_update on a LengthDelay pushes x and sets *out to NULL (BrainPy's
 * LengthDelay.update returns None).
 *
 * The node-level API keeps one process-wide table, global_delay_data:
 * identifier -> (LengthDelay or none, target var), shared by all nodes and
 * guarded by a mutex. A node that registered an identifier owns its
 * LengthDelay as an implicit node keyed by the identifier (so it shows in
 * nodes() and vars()); freeing the node removes its identifiers from the
 * table. Unlike BrainPy, a step-less entry is also dropped with the node that
 * made it (BrainPy never removes those). */
#ifndef BPC_DELAY_H
#define BPC_DELAY_H

#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* The node class of LengthDelay (for bp_collector_subset_class and checks). */
extern const bp_node_class bp_length_delay_class;

/* A LengthDelay for target (any dtype, any shape) holding max_len >= 0 past
 * values. initial: NULL (zeros), a scalar tensor, or a tensor of shape
 * target.shape or (max_len, *target.shape), converted to target's dtype.
 * name NULL: automatic "LengthDelay<n>". *out is a new reference (bp_node_free). */
bp_status bp_length_delay_new(bp_node **out, const bp_tensor *target, int64_t max_len,
                              const bp_tensor *initial, const char *name);
/* Re-initialises from target (whose shape may differ): max_len < 0 keeps the
 * current length; rows 1.. become initial (as in _new) or zeros; idx = 0. A
 * new shape replaces the `data` var's value tensor (same var object). */
bp_status bp_length_delay_reset(bp_node *delay, const bp_tensor *target, int64_t max_len,
                                const bp_tensor *initial);
/* The number of rows, max_len + 1 (0 when delay is NULL or not a LengthDelay). */
int64_t bp_length_delay_num_steps(const bp_node *delay);
/* The value delayed by `step` (0 <= step <= max_len) as a new tensor of the target's shape. */
bp_status bp_length_delay_retrieve(bp_node *delay, int64_t step, bp_tensor **out);
/* Per element: out[j] = data[(idx + steps[j]) % n][indices[j]] over the
 * flattened target, for j < count (indices NULL means indices[j] = j); *out
 * is a new 1-D tensor of count elements in the target's dtype. */
bp_status bp_length_delay_retrieve_each(bp_node *delay, const int64_t *steps, const int64_t *indices,
                                        size_t count, bp_tensor **out);
/* Pushes a new value (shape of the target; another dtype is converted). */
bp_status bp_length_delay_update(bp_node *delay, const bp_tensor *value);

/* Delay steps as register_delay takes them: none, one int (homogeneous), or
 * one int per element of the target's first axis (heterogeneous). A NULL
 * bp_delay_steps pointer means none. */
typedef struct bp_delay_steps {
    enum { BP_DELAY_NONE = 0, BP_DELAY_HOMO, BP_DELAY_HETER } kind;
    int64_t step;             /* HOMO */
    const int64_t *steps;     /* HETER: borrowed, `count` entries */
    size_t count;
} bp_delay_steps;

/* register_delay(identifier, delay_step, delay_target, initial_delay_data):
 * creates the identifier's LengthDelay (owned by n), or grows it when a larger
 * step is asked for (reset to the longer length from `target`'s value and
 * initial_delay_data). A step-less registration records (none, target) for a
 * new identifier; a later registration with a step gives that entry its delay
 * (owned by the registering node) and its target. The table holds references
 * to the delay and the target var. Errors: BP_EINVAL (negative step, NULL
 * target or identifier), BP_ESHAPE (heterogeneous steps not matching the
 * target's first axis; initial data of a wrong shape; a target shaped unlike
 * the identifier's existing delay), BP_EDTYPE (its dtype differs),
 * BP_ECONFLICT (n already has another implicit node under the identifier). */
bp_status bp_node_register_delay(bp_node *n, const char *identifier, const bp_delay_steps *steps,
                                 bp_var *target, const bp_tensor *initial_delay_data);
/* get_delay_data(identifier, delay_step, *indices): with BP_DELAY_NONE the
 * target's current value (a copy); HOMO the value `step` updates ago; HETER
 * out[j] = element indices[j] delayed by steps[j], j < count (indices NULL =
 * 0..count-1; indices are used only with HETER). HETER reads elements, so it
 * needs a 1-D target (BP_ESHAPE otherwise: the target's first axis must be
 * its element axis). Any node may read any identifier. BP_ENOTFOUND for an
 * unknown identifier, BP_EINVAL for a step < 0 or larger than the registered
 * one, an index out of range, or a step on a step-less identifier. *out is a
 * new tensor the caller frees. */
bp_status bp_node_get_delay_data(bp_node *n, const char *identifier, const bp_delay_steps *steps,
                                 const int64_t *indices, bp_tensor **out);
/* update_local_delays(nodes): pushes each target's current value into the
 * delays created by the nodes of `nodes` (a node collector; NULL: n's direct
 * children, nodes(level=1, include_self=false).unique(), so n's own delays are
 * pushed by its parent). */
bp_status bp_node_update_local_delays(bp_node *n, const bp_collector *nodes);
/* reset_local_delays(nodes): resets those delays (same length) to the targets'
 * current values: row 0 = target, the rest zeros, idx = 0. */
bp_status bp_node_reset_local_delays(bp_node *n, const bp_collector *nodes);

/* global_delay_data lookups: the number of identifiers, and one entry
 * (delay may be NULL for a step-less registration). Borrowed pointers. */
size_t bp_global_delay_count(void);
bp_status bp_global_delay_data(const char *identifier, bp_node **delay, bp_var **target);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
