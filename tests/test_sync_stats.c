/* tests/test_sync_stats.c — cross-replica per-channel statistics
 * (layers/sync_stats.h) against two-pass statistics of the concatenated
 * data, through a communicator double: this process is rank 0 of 2, and the
 * all-gather answers for rank 1 with a record the test planted. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/comm.h>
#include "../layers/sync_stats.h"

static double g_peer[64];
static bp_status fk_allreduce(void *i, void *b, size_t n, size_t d) { (void)i, (void)b, (void)n, (void)d; return BP_OK; }
static bp_status fk_allgather(void *i, const void *send, size_t nbytes, void *recv)
{
    (void)i;
    memcpy(recv, send, nbytes);
    /* bp_comm_agree's record (64 bytes): the same as ours; the statistics of
     * 3 channels (7 doubles): the plant */
    memcpy((char *)recv + nbytes, nbytes == sizeof(double) * (1 + 2 * 3) ? (const void *)g_peer : send, nbytes);
    return BP_OK;
}
static bp_status fk_bcast(void *i, void *b, size_t n, int r) { (void)i, (void)b, (void)n, (void)r; return BP_OK; }
static bp_status fk_barrier(void *i) { (void)i; return BP_OK; }
static bp_status fk_split(void *i, int c, int k, void **o, int *r, int *s) { (void)i, (void)c, (void)k; *o = NULL, *r = 0, *s = 1; return BP_OK; }
static void fk_release(void *i) { (void)i; }
static const bp_comm_class fk = {"fake", fk_allreduce, fk_allgather, fk_bcast, fk_barrier, fk_split, fk_release};

/* Two-pass (count, mean, M2) of rows x[0..n) of C channels, in long double. */
static void two_pass(const double *x, int64_t n, int64_t C, double *mean, double *m2)
{
    for (int64_t k = 0; k < C; k++) {
        long double s = 0, q = 0;
        for (int64_t i = 0; i < n; i++) s += x[i * C + k];
        long double m = n ? s / n : 0;
        for (int64_t i = 0; i < n; i++) q += (x[i * C + k] - m) * (x[i * C + k] - m);
        mean[k] = (double)m;
        m2[k] = (double)q;
    }
}

/* rank 0 has rows [0, na), rank 1 rows [na, na + nb) of x. */
static void check_split(const double *x, int64_t na, int64_t nb)
{
    enum { C = 3 };
    bp_comm *c = NULL;
    BP_OK_OR_FAIL(bp_comm_create(&c, &fk, NULL, 0, 2));
    double mean[C], m2[C], pm[C], pq[C], em[C], eq[C];
    two_pass(x, na, C, mean, m2);
    two_pass(x + na * C, nb, C, pm, pq);
    g_peer[0] = (double)nb;
    memcpy(g_peer + 1, pm, sizeof pm);
    memcpy(g_peer + 1 + C, pq, sizeof pq);
    int64_t n = na;
    BP_OK_OR_FAIL(bp__sync_stats(c, "BatchNorm3d0", C, &n, mean, m2));
    assert_int_equal(n, na + nb);
    two_pass(x, na + nb, C, em, eq);
    /* Chan's merge of two exact parts: a few double roundings of terms no
     * larger than the result: 1e-14 relative (and absolute on the mean's scale) */
    for (int k = 0; k < C; k++) {
        BP_ASSERT_CLOSE(mean[k], em[k], 1e-14 * (1 + fabs(em[k])), 1e-14);
        BP_ASSERT_CLOSE(m2[k], eq[k], 1e-14 * (1 + fabs(em[k]) * fabs(em[k])), 1e-13);
    }
    bp_comm_free(c);
}

static void test_uneven_and_empty_shares(void **state)
{
    (void)state;
    double x[3 * 40];
    for (int i = 0; i < 40; i++)
        for (int k = 0; k < 3; k++) x[i * 3 + k] = sin(1.3 * i + k) * (k + 1) + (k == 2 ? 1e6 : 0);
    check_split(x, 3, 5);   /* uneven */
    check_split(x, 1, 39);  /* batch 1 on this rank */
    check_split(x, 0, 8);   /* nothing on this rank */
    check_split(x, 8, 0);   /* nothing on the other */
    check_split(x, 20, 20);
}

static void test_errors(void **state)
{
    (void)state;
    bp_comm *c = NULL;
    BP_OK_OR_FAIL(bp_comm_self(&c));
    double m = 1, q = 0;
    int64_t n = 4;
    BP_OK_OR_FAIL(bp__sync_stats(c, "L", 1, &n, &m, &q)); /* one rank: unchanged */
    assert_true(n == 4 && m == 1 && q == 0);
    n = -1;
    BP_EXPECT_ERR(bp__sync_stats(c, "L", 1, &n, &m, &q), BP_EINVAL, "count -1");
    BP_EXPECT_ERR(bp__sync_stats(NULL, "L", 1, &n, &m, &q), BP_EINVAL, "communicator is NULL");
    bp_comm_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uneven_and_empty_shares),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
