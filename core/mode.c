/* core/mode.c — computing modes and their class predicates (brainpy.math.modes). */
#include <stdio.h>
#include <bpc/mode.h>

bp_mode bp_mode_base(void) { return (bp_mode){BP_MODE, 0}; }
bp_mode bp_nonbatching_mode(void) { return (bp_mode){BP_NONBATCHING_MODE, 0}; }
bp_mode bp_batching_mode(int batch_size) { return (bp_mode){BP_BATCHING_MODE, batch_size}; }
bp_mode bp_training_mode(int batch_size) { return (bp_mode){BP_TRAINING_MODE, batch_size}; }

/* The parent of each class in the tree Mode <- {NonBatching, Batching <- Training}. */
static int parent_of(bp_mode_kind k)
{
    switch (k) {
    case BP_NONBATCHING_MODE: return BP_MODE;
    case BP_BATCHING_MODE: return BP_MODE;
    case BP_TRAINING_MODE: return BP_BATCHING_MODE;
    default: return -1;
    }
}

bool bp_mode_kind_is_subclass(bp_mode_kind sub, bp_mode_kind sup)
{
    for (int k = (int)sub; k >= 0; k = parent_of((bp_mode_kind)k))
        if (k == (int)sup) return true;
    return false;
}

bool bp_mode_is_parent_of(bp_mode m, const bp_mode_kind *kinds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (bp_mode_kind_is_subclass(kinds[i], m.kind)) return true;
    return false;
}

bool bp_mode_is_child_of(bp_mode m, const bp_mode_kind *kinds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (bp_mode_kind_is_subclass(m.kind, kinds[i])) return true;
    return false;
}

bool bp_mode_is_one_of(bp_mode m, const bp_mode_kind *kinds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (m.kind == kinds[i]) return true;
    return false;
}

bool bp_mode_is_a(bp_mode m, bp_mode_kind kind) { return m.kind == kind; }
bool bp_mode_is_batch_mode(bp_mode m) { return bp_mode_kind_is_subclass(m.kind, BP_BATCHING_MODE); }
bool bp_mode_is_train_mode(bp_mode m) { return bp_mode_kind_is_subclass(m.kind, BP_TRAINING_MODE); }
bool bp_mode_is_nonbatch_mode(bp_mode m) { return bp_mode_kind_is_subclass(m.kind, BP_NONBATCHING_MODE); }
bool bp_mode_eq(bp_mode a, bp_mode b) { return a.kind == b.kind; }

bp_mode bp_mode_to_batch_mode(bp_mode m)
{
    if (m.kind == BP_TRAINING_MODE) m.kind = BP_BATCHING_MODE;
    return m;
}

const char *bp_mode_kind_name(bp_mode_kind kind)
{
    switch (kind) {
    case BP_MODE: return "Mode";
    case BP_NONBATCHING_MODE: return "NonBatchingMode";
    case BP_BATCHING_MODE: return "BatchingMode";
    case BP_TRAINING_MODE: return "TrainingMode";
    }
    return "?";
}

const char *bp_mode_repr(bp_mode m, char *buf, size_t cap)
{
    if (m.kind == BP_BATCHING_MODE || m.kind == BP_TRAINING_MODE)
        snprintf(buf, cap, "%s(batch_size=%d)", bp_mode_kind_name(m.kind), m.batch_size);
    else
        snprintf(buf, cap, "%s", bp_mode_kind_name(m.kind));
    return buf;
}

static bp_mode global_mode = {BP_NONBATCHING_MODE, 0};

void bp_set_mode(bp_mode m) { global_mode = m; }
bp_mode bp_get_mode(void) { return global_mode; }
