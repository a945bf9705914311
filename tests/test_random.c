/* tests/test_random.c — bp_rng: exact streams, reproducibility, state
 * save/restore, and the distributions' statistics.
 *
 * The exact words were printed by the independent Python implementation in
 * tests/gen_random.py (/usr/bin/python3 tests/gen_random.py).
 * Two of them are also well-known published values: splitmix64 from seed
 * 1234567 starts 6457827717110365317, 3203168211198807973, ..., and
 * xoshiro256** from the state {1,2,3,4} starts 11520, 0, 1509978240. */
#include "bp_test.h"
#include "bp_stats.h"
#include <stdlib.h>
#include <bpc/random.h>

#define NS 100000

static double *samples(void)
{
    double *x = malloc(NS * sizeof *x);
    assert_non_null(x);
    return x;
}

static void test_seed_is_splitmix64(void **state)
{
    (void)state;
    bp_rng r;
    uint64_t s[4];
    bp_rng_seed(&r, 1234567);
    bp_rng_get_state(&r, s);
    assert_true(s[0] == 6457827717110365317ULL);
    assert_true(s[1] == 3203168211198807973ULL);
    assert_true(s[2] == 9817491932198370423ULL);
    assert_true(s[3] == 4593380528125082431ULL);

    const uint64_t want42[4] = {0xbdd732262feb6e95ULL, 0x28efe333b266f103ULL, 0x47526757130f9f52ULL,
                                0x581ce1ff0e4ae394ULL};
    bp_rng_seed(&r, 42);
    bp_rng_get_state(&r, s);
    for (int i = 0; i < 4; i++) assert_true(s[i] == want42[i]);

    /* Seed 0 is valid: splitmix64 never gives four zero words. */
    bp_rng_seed(&r, 0);
    bp_rng_get_state(&r, s);
    assert_true((s[0] | s[1] | s[2] | s[3]) != 0);
    assert_true(s[0] == 0xe220a8397b1dcdafULL);
}

/* A caller's generator is used as it is; NULL gets the fallback seeded with 0. */
static void test_or_default(void **state)
{
    (void)state;
    bp_rng mine, fallback, zero;
    bp_rng_seed(&mine, 77);
    bp_rng copy = mine;
    fallback.s[0] = fallback.s[1] = fallback.s[2] = fallback.s[3] = 5;
    assert_ptr_equal(bp_rng_or_default(&mine, &fallback), &mine);
    assert_memory_equal(&mine, &copy, sizeof mine);
    assert_int_equal(fallback.s[0], 5); /* untouched when not needed */
    bp_rng_seed(&zero, 0);
    assert_ptr_equal(bp_rng_or_default(NULL, &fallback), &fallback);
    assert_memory_equal(&fallback, &zero, sizeof zero);
}

static void test_next_is_xoshiro256starstar(void **state)
{
    (void)state;
    bp_rng r;
    const uint64_t st[4] = {1, 2, 3, 4};
    const uint64_t want[5] = {11520ULL, 0ULL, 1509978240ULL, 1215971899390074240ULL,
                              0x10e0b61ce1009d80ULL};
    BP_OK_OR_FAIL(bp_rng_set_state(&r, st));
    for (int i = 0; i < 5; i++) assert_true(bp_rng_next(&r) == want[i]);

    const uint64_t want42[5] = {0x15780b2e0c2ec716ULL, 0x6104d9866d113a7eULL, 0xae17533239e499a1ULL,
                                0xecb8ad4703b360a1ULL, 0xfde6dc7fe2ec5e64ULL};
    bp_rng_seed(&r, 42);
    for (int i = 0; i < 5; i++) assert_true(bp_rng_next(&r) == want42[i]);
}

static void test_uniform_and_normal_values(void **state)
{
    (void)state;
    bp_rng r;
    /* uniform = (next >> 11) * 2^-53 exactly; the normal goes through libm's
     * log and cos, so allow a few ulps. */
    const double u[3] = {0.7005764821796896, 0.2787512294737843, 0.8396274618764198};
    const double z[3] = {-0.2790239910251981, 1.8997685786889567, 2.136306014732201};
    bp_rng_seed(&r, 7);
    for (int i = 0; i < 3; i++) assert_true(bp_rng_uniform(&r) == u[i]);
    bp_rng_seed(&r, 7);
    for (int i = 0; i < 3; i++) BP_ASSERT_CLOSE(bp_rng_normal(&r), z[i], 0, 1e-14);

    /* The first normal is built from the first two uniforms (1 - u1, u2). */
    bp_rng_seed(&r, 7);
    double z0 = sqrt(-2 * log(1 - u[0])) * cos(6.283185307179586 * u[1]);
    BP_ASSERT_CLOSE(bp_rng_normal(&r), z0, 0, 1e-15);
}

/* Box-Muller without a cache: each normal consumes exactly two words, so the
 * state after one normal is the state after two next() calls. */
static void test_normal_has_no_hidden_state(void **state)
{
    (void)state;
    bp_rng a, b;
    uint64_t sa[4], sb[4];
    bp_rng_seed(&a, 99);
    bp_rng_seed(&b, 99);
    for (int k = 0; k < 3; k++) {
        (void)bp_rng_normal(&a);
        (void)bp_rng_next(&b);
        (void)bp_rng_next(&b);
        bp_rng_get_state(&a, sa);
        bp_rng_get_state(&b, sb);
        assert_memory_equal(sa, sb, sizeof sa);
    }
    /* Restoring the state twice gives the same normal twice (a cached second
     * value would make the second draw differ). */
    double first = bp_rng_normal(&a);
    BP_OK_OR_FAIL(bp_rng_set_state(&a, sa));
    assert_true(bp_rng_normal(&a) == first);
}

static void test_same_seed_same_stream(void **state)
{
    (void)state;
    bp_rng a, b, c;
    bp_rng_seed(&a, 2024);
    bp_rng_seed(&b, 2024);
    bp_rng_seed(&c, 2025);
    int differ = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t x = bp_rng_next(&a), y = bp_rng_next(&b), w = bp_rng_next(&c);
        assert_true(x == y);
        differ += x != w;
    }
    assert_int_equal(differ, 10000); /* a 64-bit collision has probability 1e-15 */

    /* Mixed calls stay in step too. */
    bp_rng_seed(&a, 5);
    bp_rng_seed(&b, 5);
    for (int i = 0; i < 1000; i++) {
        assert_true(bp_rng_uniform(&a) == bp_rng_uniform(&b));
        assert_true(bp_rng_normal(&a) == bp_rng_normal(&b));
        assert_true(bp_rng_truncated_normal(&a, -2, 2) == bp_rng_truncated_normal(&b, -2, 2));
        assert_true(bp_rng_below(&a, 1000) == bp_rng_below(&b, 1000));
    }

    /* Neighbouring seeds give unrelated streams: their first words differ in
     * about half of the 64 bits. */
    for (uint64_t s = 0; s < 8; s++) {
        bp_rng_seed(&a, s);
        bp_rng_seed(&b, s + 1);
        int bits = __builtin_popcountll(bp_rng_next(&a) ^ bp_rng_next(&b));
        assert_in_range(bits, 12, 52);
    }
}

static void test_state_save_restore(void **state)
{
    (void)state;
    bp_rng r, r2;
    uint64_t saved[4];
    bp_rng_seed(&r, 31337);
    for (int i = 0; i < 17; i++) (void)bp_rng_normal(&r);
    bp_rng_get_state(&r, saved);

    double want[400];
    for (int i = 0; i < 100; i++) {
        want[4 * i] = bp_rng_uniform(&r);
        want[4 * i + 1] = bp_rng_normal(&r);
        want[4 * i + 2] = bp_rng_truncated_normal(&r, 0.5, 3.0);
        want[4 * i + 3] = (double)bp_rng_below(&r, 77);
    }
    /* Restored into another generator, and back into the same one. */
    bp_rng *gens[2] = {&r2, &r};
    for (int g = 0; g < 2; g++) {
        BP_OK_OR_FAIL(bp_rng_set_state(gens[g], saved));
        for (int i = 0; i < 100; i++) {
            assert_true(bp_rng_uniform(gens[g]) == want[4 * i]);
            assert_true(bp_rng_normal(gens[g]) == want[4 * i + 1]);
            assert_true(bp_rng_truncated_normal(gens[g], 0.5, 3.0) == want[4 * i + 2]);
            assert_true((double)bp_rng_below(gens[g], 77) == want[4 * i + 3]);
        }
    }
}

static void test_set_state_errors(void **state)
{
    (void)state;
    bp_rng r;
    uint64_t before[4], after[4];
    const uint64_t zero[4] = {0, 0, 0, 0};
    bp_rng_seed(&r, 1);
    bp_rng_get_state(&r, before);
    BP_EXPECT_ERR(bp_rng_set_state(&r, zero), BP_EINVAL, "all zero");
    bp_rng_get_state(&r, after);
    assert_memory_equal(before, after, sizeof before); /* a rejected state changes nothing */
    BP_EXPECT_ERR(bp_rng_set_state(NULL, before), BP_EINVAL, "r is NULL");
    BP_EXPECT_ERR(bp_rng_set_state(&r, NULL), BP_EINVAL, "state is NULL");

    /* One nonzero word is enough. */
    const uint64_t one[4] = {0, 0, 0, 1};
    BP_OK_OR_FAIL(bp_rng_set_state(&r, one));
    bp_rng_get_state(&r, after);
    assert_memory_equal(one, after, sizeof one);
}

static void test_uniform_statistics(void **state)
{
    (void)state;
    bp_rng r;
    double *x = samples();
    int odd = 0;
    bp_rng_seed(&r, 11);
    for (int i = 0; i < NS; i++) {
        x[i] = bp_rng_uniform(&r);
        assert_true(x[i] >= 0.0 && x[i] < 1.0);
        double k = x[i] * 0x1.0p53;
        assert_true(k == floor(k)); /* x = k / 2^53 */
        odd += fmod(k, 2.0) == 1.0;
    }
    /* All 53 bits are random: k is odd half of the time. */
    if (fabs(odd - NS / 2.0) > 5 * sqrt(NS * 0.25)) fail_msg("k odd %d times of %d", odd, NS);
    bp_moments m = bp_sample_moments(x, NS);
    BP_ASSERT_MOMENTS(m, 0.5, 1.0 / 12.0);
    const double p[2] = {0, 1};
    BP_ASSERT_KS(x, NS, bp_cdf_uniform, p);
    free(x);
}

/* Each of the 64 output bits is set half of the time, within 5 standard errors. */
static void test_next_bit_balance(void **state)
{
    (void)state;
    bp_rng r;
    int ones[64] = {0};
    bp_rng_seed(&r, 12);
    for (int i = 0; i < NS; i++) {
        uint64_t v = bp_rng_next(&r);
        for (int b = 0; b < 64; b++) ones[b] += (int)((v >> b) & 1);
    }
    const double se = sqrt(NS * 0.25);
    for (int b = 0; b < 64; b++)
        if (fabs(ones[b] - NS * 0.5) > 5 * se) fail_msg("bit %d set %d times of %d", b, ones[b], NS);
}

static void test_normal_statistics(void **state)
{
    (void)state;
    bp_rng r;
    double *x = samples();
    bp_rng_seed(&r, 13);
    for (int i = 0; i < NS; i++) x[i] = bp_rng_normal(&r);
    bp_moments m = bp_sample_moments(x, NS);
    BP_ASSERT_MOMENTS(m, 0.0, 1.0);
    /* Box-Muller's largest output is sqrt(-2 ln 2^-53) = 8.57. */
    assert_true(m.max <= 8.58 && m.min >= -8.58);
    const double p[2] = {0, 1};
    BP_ASSERT_KS(x, NS, bp_cdf_normal, p);
    free(x);
}

/* Draws NS truncated normals on [a, b] and checks bounds, moments and the CDF. */
static void check_truncated(uint64_t seed, double a, double b)
{
    bp_rng r;
    double *x = samples();
    bp_rng_seed(&r, seed);
    for (int i = 0; i < NS; i++) {
        x[i] = bp_rng_truncated_normal(&r, a, b);
        if (!(x[i] >= a && x[i] <= b)) fail_msg("sample %.17g outside [%g, %g]", x[i], a, b);
    }
    double mean, var;
    bp_truncnorm_moments(a, b, &mean, &var);
    bp_moments m = bp_sample_moments(x, NS);
    BP_ASSERT_MOMENTS(m, mean, var);
    const double p[3] = {a, b, 1.0};
    BP_ASSERT_KS(x, NS, bp_cdf_truncnorm, p);
    free(x);
}

/* One interval per proposal: plain normals ([-2,2], [-1,inf)), uniform around
 * the mode ([-0.5,0.25], [0,0.1]), uniform in a tail ([1,1.5], [-0.9,-0.3]
 * mirrored), exponential tail ([3,inf), [0.5,10], [-inf,-2.5], [6,6.5]). */
static void test_truncated_normal_bounds_and_moments(void **state)
{
    (void)state;
    check_truncated(21, -2.0, 2.0);
    check_truncated(22, -1.0, INFINITY);
    check_truncated(23, -0.5, 0.25);
    check_truncated(24, 0.0, 0.1);
    check_truncated(25, 1.0, 1.5);
    check_truncated(26, -0.9, -0.3);
    check_truncated(27, 3.0, INFINITY);
    check_truncated(28, 0.5, 10.0);
    check_truncated(29, -INFINITY, -2.5);
    check_truncated(30, 6.0, 6.5);

    /* The [-2, 2] std is the constant the initializers divide by. */
    double mean, var;
    bp_truncnorm_moments(-2, 2, &mean, &var);
    BP_ASSERT_CLOSE(sqrt(var), 0.87962566103423978, 1e-15, 0);
}

static void test_truncated_normal_invalid(void **state)
{
    (void)state;
    bp_rng r;
    bp_rng_seed(&r, 3);
    assert_true(isnan(bp_rng_truncated_normal(&r, 1.0, 1.0)));
    assert_true(isnan(bp_rng_truncated_normal(&r, 2.0, -2.0)));
    assert_true(isnan(bp_rng_truncated_normal(&r, NAN, 1.0)));
    assert_true(isnan(bp_rng_truncated_normal(&r, -1.0, NAN)));
    /* The whole real line is a plain normal. */
    double z = bp_rng_truncated_normal(&r, -INFINITY, INFINITY);
    assert_true(isfinite(z));
}

static void test_below(void **state)
{
    (void)state;
    bp_rng r, q;
    bp_rng_seed(&r, 41);
    for (int i = 0; i < 1000; i++) assert_true(bp_rng_below(&r, 1) == 0);
    assert_true(bp_rng_below(&r, 0) == 0);

    /* A power of two needs no rejection: it is the low bits of next(). */
    bp_rng_seed(&r, 42);
    bp_rng_seed(&q, 42);
    for (int i = 0; i < 1000; i++) assert_true(bp_rng_below(&r, 1024) == (bp_rng_next(&q) & 1023));

    /* Ten values equally often, each count within 5 standard errors. */
    int count[10] = {0};
    bp_rng_seed(&r, 43);
    for (int i = 0; i < NS; i++) {
        uint64_t v = bp_rng_below(&r, 10);
        assert_true(v < 10);
        count[v]++;
    }
    const double se = sqrt(NS * 0.1 * 0.9);
    for (int k = 0; k < 10; k++)
        if (fabs(count[k] - NS * 0.1) > 5 * se) fail_msg("value %d drawn %d times of %d", k, count[k], NS);

    /* n = 3 * 2^62: a plain next() % n would land below 2^62 half of the time
     * (those residues have two preimages); unbiased, it is one third. */
    const uint64_t n = 3ULL << 62;
    int low = 0;
    bp_rng_seed(&r, 44);
    for (int i = 0; i < NS; i++) {
        uint64_t v = bp_rng_below(&r, n);
        assert_true(v < n);
        low += v < (1ULL << 62);
    }
    const double se3 = sqrt(NS * (1.0 / 3) * (2.0 / 3));
    if (fabs(low - NS / 3.0) > 5 * se3) fail_msg("%d of %d below 2^62, expected a third", low, NS);

    /* The largest n works. */
    bp_rng_seed(&r, 45);
    for (int i = 0; i < 100; i++) assert_true(bp_rng_below(&r, UINT64_MAX) < UINT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_is_splitmix64),
        cmocka_unit_test(test_next_is_xoshiro256starstar),
        cmocka_unit_test(test_or_default),
        cmocka_unit_test(test_uniform_and_normal_values),
        cmocka_unit_test(test_normal_has_no_hidden_state),
        cmocka_unit_test(test_same_seed_same_stream),
        cmocka_unit_test(test_state_save_restore),
        cmocka_unit_test(test_set_state_errors),
        cmocka_unit_test(test_uniform_statistics),
        cmocka_unit_test(test_next_bit_balance),
        cmocka_unit_test(test_normal_statistics),
        cmocka_unit_test(test_truncated_normal_bounds_and_moments),
        cmocka_unit_test(test_truncated_normal_invalid),
        cmocka_unit_test(test_below),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
