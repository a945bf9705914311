/* layers/layer_input.c — the shared input check of every layer (layer_input.h). */
#include <stdio.h>
#include <bpc/error.h>
#include "layer_input.h"

bp_status bp__check_layer_input(const char *who, const bp_tensor *x, const bp_input_spec *spec)
{
    char s[128];
    if (!x) return bp_fail(BP_EINVAL, "%s: input is NULL", who);
    bp_shape_str(s, sizeof s, x->ndim, x->shape);
    if (spec->ndim == 0) {
        if (x->ndim < 1 || (spec->channels >= 0 && x->shape[x->ndim - 1] != spec->channels))
            return bp_fail(BP_ESHAPE, "%s: expected input of shape (..., %lld), got %s", who,
                           (long long)spec->channels, s);
    } else {
        bool rank_ok = x->ndim == spec->ndim || (spec->unbatched_ok && x->ndim == spec->ndim - 1);
        if (!rank_ok)
            return bp_fail(BP_ESHAPE, "%s: expected %dD input (got %dD input): layout %s%s, got shape %s", who,
                           spec->ndim, x->ndim, spec->layout, spec->unbatched_ok ? " or without the batch axis" : "",
                           s);
        int64_t c = x->shape[x->ndim - 1];
        if (spec->channels >= 0 && c != spec->channels) {
            if (spec->channels_arg)
                return bp_fail(BP_ESHAPE, "%s: input channels=%lld needs to have the same size as %s=%lld. (input shape %s)",
                               who, (long long)c, spec->channels_arg, (long long)spec->channels, s);
            return bp_fail(BP_ESHAPE, "%s: expected %lld channels in the last axis of %s, got %lld (input shape %s)", who,
                           (long long)spec->channels, spec->layout, (long long)c, s);
        }
    }
    if (x->dtype != BP_REAL_DTYPE)
        return bp_fail(BP_EDTYPE, "%s: expected %s input, got %s", who, bp_dtype_name(BP_REAL_DTYPE),
                       bp_dtype_name(x->dtype));
    return BP_OK;
}
