/* core/share.c — the global shared context (fit, i, t, dt). */
#include <math.h>
#include <bpc/share.h>

#define BP_DEFAULT_DT 0.1

static bp_shared_args shared = {.dt = BP_DEFAULT_DT, .has_dt = true};

bp_status bp_share_save(const bp_shared_args *a)
{
    if (!a) return bp_fail(BP_EINVAL, "share_save: args is NULL");
    if (a->has_dt && !(a->dt > 0) )
        return bp_fail(BP_EINVAL, "share_save: dt must be > 0, got %g", a->dt);
    if (a->has_t && !isfinite(a->t))
        return bp_fail(BP_EINVAL, "share_save: t must be finite, got %g", a->t);
    if (a->has_fit) { shared.fit = a->fit; shared.has_fit = true; }
    if (a->has_i) { shared.i = a->i; shared.has_i = true; }
    if (a->has_t) { shared.t = a->t; shared.has_t = true; }
    if (a->has_dt) { shared.dt = a->dt; shared.has_dt = true; }
    return BP_OK;
}

void bp_share_save_fit(bool fit)
{
    shared.fit = fit;
    shared.has_fit = true;
}

/* BrainPy 2.8.2: an unset fit loads as None, which is falsy: the eval path. */
bool bp_share_fit(void) { return shared.has_fit && shared.fit; }
bool bp_share_has_fit(void) { return shared.has_fit; }
int64_t bp_share_i(void) { return shared.i; }
double bp_share_t(void) { return shared.t; }
double bp_share_dt(void) { return shared.dt; }
bp_shared_args bp_share_get(void) { return shared; }

void bp_share_clear(void)
{
    shared = (bp_shared_args){.dt = BP_DEFAULT_DT, .has_dt = true};
}
