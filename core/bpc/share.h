/* bpc/share.h — the shared context every update() reads, as brainpy.share.
 *
 * Four keys: fit (train or eval), i (step index), t (time) and dt (step).
 * BrainPy 2.8.2 semantics: an unset `fit` reads as false, so layers take their
 * evaluation path until bp_share_save_fit(true). `dt` defaults to 0.1 as
 * brainpy.math's default time step. The context is global (one per process),
 * like BrainPy's; set it before calling update() from several threads. */
#ifndef BPC_SHARE_H
#define BPC_SHARE_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/error.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* A set of shared values to save at once; only fields whose has_* is true
 * are written (the C form of `share.save(fit=True, i=3)` and of passing a dict
 * of shared arguments as update's first argument). */
typedef struct bp_shared_args {
    bool has_fit, has_i, has_t, has_dt;
    bool fit;
    int64_t i;
    double t, dt;
} bp_shared_args;

/* Saves the given keys. dt must be > 0 (BP_EINVAL otherwise; nothing saved). */
bp_status bp_share_save(const bp_shared_args *args);
void bp_share_save_fit(bool fit);
/* Reads fit (false when unset); bp_share_has_fit tells whether it was set. */
bool bp_share_fit(void);
bool bp_share_has_fit(void);
int64_t bp_share_i(void);
double bp_share_t(void);
double bp_share_dt(void);
/* All four at once. */
bp_shared_args bp_share_get(void);
/* Forgets every key (fit unset, i = 0, t = 0, dt = 0.1). */
void bp_share_clear(void);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
