/* bpc/mode.h — computing modes, as brainpy.math.modes.
 *
 * The class tree is  Mode ─┬─ NonBatchingMode
 *                          └─ BatchingMode ── TrainingMode
 * A node's class lists the modes it supports; construction succeeds when the
 * node's mode "is a parent of" one of them, i.e. when a supported class is a
 * subclass of the mode's class (so the plain Mode passes every check). */
#ifndef BPC_MODE_H
#define BPC_MODE_H

#include <stdbool.h>
#include <stddef.h>
#include <bpc/config.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_mode_kind {
    BP_MODE = 0,            /* the base class Mode */
    BP_NONBATCHING_MODE,
    BP_BATCHING_MODE,
    BP_TRAINING_MODE
} bp_mode_kind;

typedef struct bp_mode {
    bp_mode_kind kind;
    int batch_size;         /* BatchingMode/TrainingMode; 0 for the others */
} bp_mode;

bp_mode bp_mode_base(void);
bp_mode bp_nonbatching_mode(void);
bp_mode bp_batching_mode(int batch_size);
bp_mode bp_training_mode(int batch_size);

/* True if kind `sub` is `sup` or derives from it. */
bool bp_mode_kind_is_subclass(bp_mode_kind sub, bp_mode_kind sup);
/* is_parent_of: some kind in `kinds` is a subclass of m's class. */
bool bp_mode_is_parent_of(bp_mode m, const bp_mode_kind *kinds, size_t n);
/* is_child_of: m's class is a subclass of some kind in `kinds` (isinstance). */
bool bp_mode_is_child_of(bp_mode m, const bp_mode_kind *kinds, size_t n);
/* is_one_of: m's class is exactly one of `kinds`. */
bool bp_mode_is_one_of(bp_mode m, const bp_mode_kind *kinds, size_t n);
/* is_a: m's class is exactly `kind`. */
bool bp_mode_is_a(bp_mode m, bp_mode_kind kind);
bool bp_mode_is_batch_mode(bp_mode m);     /* isinstance BatchingMode */
bool bp_mode_is_train_mode(bp_mode m);     /* isinstance TrainingMode */
bool bp_mode_is_nonbatch_mode(bp_mode m);  /* isinstance NonBatchingMode */
/* Modes compare by class only, as BrainPy's __eq__. */
bool bp_mode_eq(bp_mode a, bp_mode b);
/* TrainingMode -> BatchingMode with the same batch size; others unchanged. */
bp_mode bp_mode_to_batch_mode(bp_mode m);

/* Class name: "Mode", "NonBatchingMode", "BatchingMode", "TrainingMode". */
const char *bp_mode_kind_name(bp_mode_kind kind);
/* BrainPy's repr: "BatchingMode(batch_size=1)", "TrainingMode(batch_size=8)", "NonBatchingMode". */
const char *bp_mode_repr(bp_mode m, char *buf, size_t cap);

/* The global default mode (NonBatchingMode until set); nodes built with no
 * explicit mode and no class default take it. */
void bp_set_mode(bp_mode m);
bp_mode bp_get_mode(void);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
