/* bpc/train_checkpoint.h — save a training run, and resume it bit for bit.
 *
 * A training checkpoint is one checkpoint file (bpc/checkpoint.h: atomic
 * save, any of the three formats by extension, validated on read) holding
 * everything a run needs to continue as if it had never stopped:
 *
 *   train/version            int64 (): BP_TRAIN_CKPT_VERSION
 *   train/epoch              int64 (): the epoch being run (0-based)
 *   train/step               int64 (): steps of that epoch already done
 *   train/model_class        uint8 (n,), text: the model's class name
 *   train/optimizer_class    the optimizer's (absent without one)
 *   train/lr_scheduler_class the optimizer's learning-rate scheduler's
 *   train/scheduler_class    a separate scheduler's (absent without one)
 *   model/<key>              the model's vars() (weights, BatchNorm statistics)
 *   optim/<key>              the optimizer's vars(): slots, step counter, and
 *                            the counters of its lr scheduler (a child node)
 *   sched/<key>              the vars() of a scheduler the optimizer does not own
 *   rng/<name>               each random stream, int64 (4,) (bp_checkpoint_put_rng)
 *   meta/<key>               the caller's metadata (options, running sums, ...)
 *
 * Resuming checks that the file fits the run before anything changes, in
 * this order: the layout version; the metadata entries the caller expects
 * to be equal (e.g. the options that must not change between the two runs:
 * they explain a difference in the caller's terms); the position; the
 * model, optimizer and schedulers' classes; each random stream (none missing,
 * none extra); every variable's key, shape and dtype (strictly: none missing,
 * none extra). On any error the model, optimizer, scheduler, generators and
 * position are all unchanged, and the message says "cannot resume from
 * <file>: " and then what did not fit, naming it and both values.
 *
 * Errors: BP_EINVAL (bad arguments; a metadata entry that differs from the
 * expected one), BP_EIO, BP_ENOMEM, and BP_EFORMAT (a corrupt file, one that is
 * not a training checkpoint, of another version, of another model, optimizer
 * or scheduler, with missing or extra variables or streams, or a position
 * out of range), BP_ESHAPE / BP_EDTYPE (a variable of another shape or dtype).
 *
 * Ownership: nothing passed in is kept. The metadata returned by a resume is
 * a new dict owned by the caller. */
#ifndef BPC_TRAIN_CHECKPOINT_H
#define BPC_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <bpc/checkpoint.h>

#ifdef __cplusplus
extern "C" {
#endif
BP_API_BEGIN

/* The layout version written as train/version (resume refuses any other). */
#define BP_TRAIN_CKPT_VERSION 1

/* One random stream of a run, saved as "rng/<name>" (name: 1 to 64
 * characters, printable ASCII without '/'). */
typedef struct bp_train_rng {
    const char *name;
    bp_rng *rng;           /* saved from; restored into */
} bp_train_rng;

/* What a training checkpoint saves and a resume restores. */
typedef struct bp_train_state {
    bp_node *model;        /* required: its vars() are saved and restored */
    bp_node *optimizer;    /* NULL or an optimizer node (bpc/optimizer.h) */
    bp_node *scheduler;    /* NULL, or a scheduler; when it is the optimizer's
                            * own lr scheduler it is stored once, with it */
    const bp_train_rng *rngs;
    size_t n_rngs;
    int64_t epoch;         /* the position: the epoch being run (>= 0) */
    int64_t step;          /* and the steps of it already done (>= 0) */
} bp_train_state;

/* How much a resume checks beyond the file's own consistency. */
typedef struct bp_train_resume_opts {
    /* NULL, or flat metadata the file must hold with the same dtype, shape
     * and bits under each key; a difference is BP_EINVAL naming the key and
     * both values ("... written with --lr 0.003; this run has --lr 0.01"). */
    const bp_dict *expect;
    int64_t epochs;          /* > 0: the epoch must be in [0, epochs], and the
                              * step 0 when the epoch is `epochs` (finished) */
    int64_t steps_per_epoch; /* > 0: the step must be in [0, steps_per_epoch) */
} bp_train_resume_opts;

/* Writes s (model, optimizer, scheduler, streams, position) and the tensors of
 * `metadata` (may be NULL; flat: a nested dict is BP_EINVAL) atomically to
 * filename, in the format of its extension. */
bp_status bp_train_checkpoint_save(const char *filename, const bp_train_state *s, const bp_dict *metadata);

/* Reads filename, checks that it fits s and opts (NULL: no expected metadata,
 * no range beyond epoch >= 0 and step >= 0), then restores the variables of
 * s's model, optimizer and scheduler, every stream of s->rngs and s->epoch,
 * s->step. metadata (may be NULL) receives a new dict of the "meta/" entries,
 * keyed without the prefix (free with bp_dict_free); it is NULL on failure,
 * and then nothing at all has changed. Memory: at most the state's variables
 * plus BP_CKPT_MAX_OTHER_BYTES of other entries, whatever the file claims (a
 * file claiming more is refused before its data is read). */
bp_status bp_train_checkpoint_resume(const char *filename, bp_train_state *s, const bp_train_resume_opts *opts,
                                     bp_dict **metadata);

BP_API_END
#ifdef __cplusplus
}
#endif
#endif
