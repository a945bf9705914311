/* core/random.c — xoshiro256** seeded through splitmix64, and the few
 * distributions the initializers need.
 *
 * Every draw is a pure function of the four state words: the normal has no
 * cached second value, so a checkpoint that saves the state (get_state) and
 * restores it (set_state) continues the stream exactly. All arithmetic on
 * the way from bits to doubles is done in double, so both flavours of the
 * library see the same numbers for the same seed. */
#include <math.h>
#include <bpc/random.h>

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* splitmix64: advances *x by the golden-ratio increment and scrambles it.
 * Its output is a bijection of the counter, so four consecutive outputs are
 * never all zero, which xoshiro needs. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bp_rng_seed(bp_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

bp_rng *bp_rng_or_default(bp_rng *rng, bp_rng *fallback)
{
    if (rng) return rng;
    bp_rng_seed(fallback, 0);
    return fallback;
}

uint64_t bp_rng_next(bp_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t out = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

double bp_rng_uniform(bp_rng *r)
{
    /* The top 53 bits are the best of xoshiro256**'s output; k * 2^-53 is exact. */
    return (double)(bp_rng_next(r) >> 11) * 0x1.0p-53;
}

double bp_rng_normal(bp_rng *r)
{
    /* Box-Muller, keeping only the cosine branch: z = sqrt(-2 ln u1) cos(2 pi u2).
     * u1 = 1 - U is in (0, 1], so the log is finite (|z| <= 8.57). */
    const double two_pi = 6.283185307179586476925286766559;
    double u1 = 1.0 - bp_rng_uniform(r);
    double u2 = bp_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

/* N(0,1) truncated to [lo, hi] with 0 <= lo < hi (hi may be +inf), by
 * rejection from a proposal chosen for the interval (C. P. Robert, "Simulation
 * of truncated normal variables", 1995), so that the expected number of tries
 * stays small even far in the tail:
 *   lo * (hi - lo) < 1: uniform on [lo, hi], accepted with exp((lo^2 - z^2) / 2);
 *   otherwise:          lo + Exp(alpha), alpha = (lo + sqrt(lo^2 + 4)) / 2,
 *                       accepted with exp(-(z - alpha)^2 / 2) when z <= hi. */
static double truncated_right(bp_rng *r, double lo, double hi)
{
    if (lo * (hi - lo) < 1.0) {
        for (;;) {
            double z = lo + (hi - lo) * bp_rng_uniform(r);
            if (z > hi) z = hi; /* rounding of lo + w * u */
            if (bp_rng_uniform(r) <= exp(0.5 * (lo - z) * (lo + z))) return z;
        }
    }
    const double alpha = 0.5 * (lo + sqrt(lo * lo + 4.0));
    for (;;) {
        double z = lo - log(1.0 - bp_rng_uniform(r)) / alpha;
        if (z > hi) continue;
        double d = z - alpha;
        if (bp_rng_uniform(r) <= exp(-0.5 * d * d)) return z;
    }
}

double bp_rng_truncated_normal(bp_rng *r, double lo, double hi)
{
    if (!(lo < hi)) return NAN; /* also catches NaN bounds */
    if (lo <= 0.0 && hi >= 0.0) {
        /* The interval holds the mode. A wide one keeps most plain normals
         * (at least half when hi - lo >= sqrt(2 pi)); a narrow one is better
         * served by a uniform proposal accepted with exp(-z^2 / 2), whose
         * acceptance rate is P(lo <= Z <= hi) * sqrt(2 pi) / (hi - lo). */
        if (hi - lo >= 2.5066282746310002) {
            for (;;) {
                double z = bp_rng_normal(r);
                if (z >= lo && z <= hi) return z;
            }
        }
        for (;;) {
            double z = lo + (hi - lo) * bp_rng_uniform(r);
            if (z > hi) z = hi;
            if (bp_rng_uniform(r) <= exp(-0.5 * z * z)) return z;
        }
    }
    if (lo > 0.0) return truncated_right(r, lo, hi);
    return -truncated_right(r, -hi, -lo); /* hi < 0: mirror the left tail */
}

uint64_t bp_rng_below(bp_rng *r, uint64_t n)
{
    if (n == 0) return 0;
    /* Reject the lowest (2^64 mod n) values so every residue is hit by
     * exactly floor(2^64 / n) accepted values: no modulo bias. */
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = bp_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

void bp_rng_get_state(const bp_rng *r, uint64_t state[4])
{
    for (int i = 0; i < 4; i++) state[i] = r->s[i];
}

bp_status bp_rng_set_state(bp_rng *r, const uint64_t state[4])
{
    if (!r) return bp_fail(BP_EINVAL, "bp_rng_set_state: r is NULL");
    if (!state) return bp_fail(BP_EINVAL, "bp_rng_set_state: state is NULL");
    if ((state[0] | state[1] | state[2] | state[3]) == 0)
        return bp_fail(BP_EINVAL,
                       "bp_rng_set_state: state must not be all zero (xoshiro256** would "
                       "output only zeros), got {0, 0, 0, 0}");
    for (int i = 0; i < 4; i++) r->s[i] = state[i];
    return BP_OK;
}
