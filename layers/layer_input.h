/* layers/layer_input.h — the one check of a layer's input, shared by every
 * layer's update() so that wrong inputs read the same everywhere; private to
 * layers/ (not installed). */
#ifndef BPC_LAYERS_LAYER_INPUT_H
#define BPC_LAYERS_LAYER_INPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/tensor.h>

/* What a layer accepts. Channels are the last axis (channels-last). */
typedef struct bp_input_spec {
    int ndim;                 /* rank with the batch axis, e.g. 5 for (B,H,W,D,C); 0: any rank >= 1 */
    bool unbatched_ok;        /* ndim - 1 is accepted too (one sample without its batch axis) */
    const char *layout;       /* the batched layout for messages, e.g. "(B,H,W,D,C)"; NULL when ndim is 0 */
    int64_t channels;         /* required size of the last axis; -1: any */
    const char *channels_arg; /* the constructor argument that set channels, e.g. "in_channels"; NULL: none */
} bp_input_spec;

/* Checks x against spec: not NULL, the rank, the channel count, the real
 * dtype. Fails with BP_EINVAL, BP_ESHAPE or BP_EDTYPE and a message that
 * starts with `who` (the node's name) and shows the input's shape:
 *   "<who>: expected 5D input (got 4D input): layout (B,H,W,D,C), got shape (2,3,4,5)"
 *   "<who>: expected 4 channels in the last axis of (B,H,W,D,C), got 5 (input shape ...)"
 *   "<who>: input channels=8 needs to have the same size as in_channels=16. (input shape ...)"
 *   "<who>: expected input of shape (..., 3), got (2,4)"                  (ndim 0) */
bp_status bp__check_layer_input(const char *who, const bp_tensor *x, const bp_input_spec *spec);

#endif
