/* tests/bp_stats.h — sample statistics for the random-number suites.
 *
 * Every tolerance is derived from the sample size: a mean is checked within
 * 5 standard errors, a variance within 5 standard errors of the sample
 * variance (estimated from the sample's fourth central moment), and a whole
 * distribution by a Kolmogorov-Smirnov test at level 0.001, whose asymptotic
 * critical value is sqrt(ln(2/0.001)/2) / sqrt(n) = 1.9495 / sqrt(n). With fixed
 * seeds the suites are deterministic; a correct generator passes them for
 * almost every seed, a biased one (wrong scale, wrong fan, missing truncation)
 * fails by many standard errors. */
#ifndef BP_STATS_H
#define BP_STATS_H

#include <math.h>
#include <stdlib.h>

typedef struct bp_moments {
    double n, mean, var, m4; /* var and m4 are central, divided by n */
    double min, max;
} bp_moments;

/* Two-pass moments of x[0..n). */
static inline bp_moments bp_sample_moments(const double *x, size_t n)
{
    bp_moments m = {(double)n, 0, 0, 0, INFINITY, -INFINITY};
    for (size_t i = 0; i < n; i++) {
        m.mean += x[i];
        if (x[i] < m.min) m.min = x[i];
        if (x[i] > m.max) m.max = x[i];
    }
    m.mean /= (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m.mean, d2 = d * d;
        m.var += d2;
        m.m4 += d2 * d2;
    }
    m.var /= (double)n;
    m.m4 /= (double)n;
    return m;
}

/* Standard error of the sample mean and of the sample variance. */
static inline double bp_se_mean(const bp_moments *m) { return sqrt(m->var / m->n); }
static inline double bp_se_var(const bp_moments *m) { return sqrt((m->m4 - m->var * m->var) / m->n); }

/* Mean within 5 standard errors of `mean`, variance within 5 of `var`. */
#define BP_ASSERT_MOMENTS(m, want_mean, want_var)                                               \
    do {                                                                                        \
        double bp_sm_ = bp_se_mean(&(m)), bp_sv_ = bp_se_var(&(m));                             \
        if (!(fabs((m).mean - (want_mean)) <= 5 * bp_sm_))                                      \
            fail_msg("sample mean %.6g, expected %.6g +- 5 * %.3g (n = %.0f)", (m).mean,         \
                     (double)(want_mean), bp_sm_, (m).n);                                       \
        if (!(fabs((m).var - (want_var)) <= 5 * bp_sv_))                                        \
            fail_msg("sample variance %.6g, expected %.6g +- 5 * %.3g (n = %.0f)", (m).var,      \
                     (double)(want_var), bp_sv_, (m).n);                                        \
    } while (0)

static inline int bp_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sqrt(n) * sup |F_n - F| for the sample x (sorted in place) and the CDF cdf(x, p). */
static inline double bp_ks_statistic(double *x, size_t n, double (*cdf)(double, const double *),
                                     const double *p)
{
    qsort(x, n, sizeof *x, bp_cmp_double);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double f = cdf(x[i], p);
        double lo = f - (double)i / (double)n, hi = (double)(i + 1) / (double)n - f;
        if (lo > d) d = lo;
        if (hi > d) d = hi;
    }
    return d * sqrt((double)n);
}

#define BP_KS_CRITICAL 1.9495 /* level 0.001 */

#define BP_ASSERT_KS(x, n, cdf, p)                                                              \
    do {                                                                                        \
        double bp_ks_ = bp_ks_statistic((x), (n), (cdf), (p));                                  \
        if (!(bp_ks_ < BP_KS_CRITICAL))                                                         \
            fail_msg("Kolmogorov-Smirnov sqrt(n) D = %.4f >= %.4f (n = %zu)", bp_ks_,          \
                     BP_KS_CRITICAL, (size_t)(n));                                              \
    } while (0)

/* N(0,1) density, and its lower and upper tail probabilities without cancellation. */
static inline double bp_phi(double x) { return isinf(x) ? 0.0 : exp(-0.5 * x * x) * 0.39894228040143267794; }
static inline double bp_Phi(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }
static inline double bp_Q(double x) { return 0.5 * erfc(x * 0.70710678118654752440); }

/* P(a <= Z <= b) for Z ~ N(0,1). */
static inline double bp_normal_mass(double a, double b)
{
    return a >= 0 ? bp_Q(a) - bp_Q(b) : bp_Phi(b) - bp_Phi(a);
}

/* Mean and variance of N(0,1) truncated to [a, b]:
 * mean = (phi(a) - phi(b)) / Z, var = 1 + (a phi(a) - b phi(b)) / Z - mean^2. */
static inline void bp_truncnorm_moments(double a, double b, double *mean, double *var)
{
    double z = bp_normal_mass(a, b);
    double aphi = isinf(a) ? 0.0 : a * bp_phi(a), bphi = isinf(b) ? 0.0 : b * bp_phi(b);
    *mean = (bp_phi(a) - bp_phi(b)) / z;
    *var = 1.0 + (aphi - bphi) / z - *mean * *mean;
}

/* CDFs with parameters p: normal (p = {mean, std}), uniform (p = {lo, hi}),
 * truncated standard normal scaled by s (p = {a, b, s}: s * Z, Z in [a, b]). */
static inline double bp_cdf_normal(double x, const double *p) { return bp_Phi((x - p[0]) / p[1]); }
static inline double bp_cdf_uniform(double x, const double *p)
{
    return x <= p[0] ? 0.0 : x >= p[1] ? 1.0 : (x - p[0]) / (p[1] - p[0]);
}
static inline double bp_cdf_truncnorm(double x, const double *p)
{
    double a = p[0], b = p[1], z = x / p[2];
    if (z <= a) return 0.0;
    if (z >= b) return 1.0;
    return bp_normal_mass(a, z) / bp_normal_mass(a, b);
}

#endif
