/* bpc/random.h — a small, fast, reproducible random generator.
 *
 * xoshiro256** seeded through splitmix64: the same seed gives the same stream
 * on every machine and in both flavours. The state is four 64-bit words, so a
 * checkpoint can save and restore it exactly (bp_rng_get_state/set_state). */
#ifndef BPC_RANDOM_H
#define BPC_RANDOM_H

#include <stdint.h>
#include <bpc/error.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_rng {
    uint64_t s[4];
} bp_rng;

/* Seeds the generator; any 64-bit value is a valid seed. */
void bp_rng_seed(bp_rng *r, uint64_t seed);
/* The generator an initializer should use: rng itself, or, when rng is NULL
 * (a layer built without one), *fallback seeded with 0, so that default
 * construction is reproducible. */
bp_rng *bp_rng_or_default(bp_rng *rng, bp_rng *fallback);
/* Next 64 random bits. */
uint64_t bp_rng_next(bp_rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double bp_rng_uniform(bp_rng *r);
/* Standard normal N(0,1) (Box-Muller on two uniforms; no hidden cache, so
 * the whole generator state is the four words). */
double bp_rng_normal(bp_rng *r);
/* Standard normal truncated to [lo, hi] by rejection; infinite bounds are
 * allowed; NaN when !(lo < hi) or a bound is NaN. */
double bp_rng_truncated_normal(bp_rng *r, double lo, double hi);
/* Uniform integer in [0, n), unbiased; 0 when n == 0. */
uint64_t bp_rng_below(bp_rng *r, uint64_t n);

/* Copies the state out / in (4 words). A state of all zeros is invalid and
 * bp_rng_set_state rejects it with BP_EINVAL. */
void bp_rng_get_state(const bp_rng *r, uint64_t state[4]);
bp_status bp_rng_set_state(bp_rng *r, const uint64_t state[4]);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
