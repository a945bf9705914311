/* tests/test_comm.c — communicators (bpc/comm.h) in one process: the
 * single-process communicator, argument errors, axis names, and the generic
 * layer's collective checks (bp_comm_agree, bp_comm_split_groups) through a
 * test double that plays rank 0 of 2 and answers for rank 1 from a script.
 * Real multi-process runs over MPI are in tests/mpi/comm_mpi.c. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/comm.h>

static void test_self(void **state)
{
    (void)state;
    bp_comm *c = NULL;
    BP_OK_OR_FAIL(bp_comm_self(&c));
    assert_int_equal(bp_comm_rank(c), 0);
    assert_int_equal(bp_comm_size(c), 1);
    assert_string_equal(bp_comm_kind(c), "self");
    float f[3] = {1.5f, -2, 3};
    double d[2] = {0.1, 1e300};
    BP_OK_OR_FAIL(bp_comm_allreduce_f32(c, f, 3));
    BP_OK_OR_FAIL(bp_comm_allreduce_f64(c, d, 2));
    assert_true(f[0] == 1.5f && f[1] == -2 && f[2] == 3 && d[0] == 0.1 && d[1] == 1e300);
    int send = 42, recv = 0;
    BP_OK_OR_FAIL(bp_comm_allgather(c, &send, sizeof send, &recv));
    assert_int_equal(recv, 42);
    BP_OK_OR_FAIL(bp_comm_broadcast(c, &send, sizeof send, 0));
    BP_OK_OR_FAIL(bp_comm_barrier(c));
    BP_OK_OR_FAIL(bp_comm_agree(c, "x", 3));
    bp_comm *g = NULL;
    BP_OK_OR_FAIL(bp_comm_split_groups(c, (int[]){0}, (int[]){1}, 1, &g));
    assert_int_equal(bp_comm_size(g), 1);
    bp_comm_free(g);
    bp_comm_free(c);
    bp_comm_free(NULL);
    assert_int_equal(bp_comm_rank(NULL), 0);
    assert_int_equal(bp_comm_size(NULL), 1);
}

static void test_errors(void **state)
{
    (void)state;
    bp_comm *c = NULL, *g = (bp_comm *)1;
    BP_OK_OR_FAIL(bp_comm_self(&c));
    BP_EXPECT_ERR(bp_comm_self(NULL), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_comm_allreduce_f32(NULL, NULL, 1), BP_EINVAL, "communicator is NULL");
    BP_EXPECT_ERR(bp_comm_allreduce_f64(c, NULL, 4), BP_EINVAL, "buf is NULL for 4 values");
    BP_EXPECT_ERR(bp_comm_broadcast(c, &g, 1, 1), BP_EINVAL, "root 1 is not a rank of this communicator (size 1)");
    BP_EXPECT_ERR(bp_comm_broadcast(c, &g, 1, -1), BP_EINVAL, "root -1");
    BP_EXPECT_ERR(bp_comm_allgather(c, NULL, 4, &g), BP_EINVAL, "send or recv is NULL");
    BP_EXPECT_ERR(bp_comm_agree(c, NULL, 1), BP_EINVAL, "tag is NULL");
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0, 0}, (int[]){2}, 1, &g), BP_EINVAL,
                  "more than the 1 ranks there are");
    assert_null(g);
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){1}, (int[]){1}, 1, &g), BP_EINVAL, "lists rank 1, not in [0, 1)");
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0}, (int[]){0}, 1, &g), BP_EINVAL, "group 0 has 0 ranks");
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0}, (int[]){1}, 0, &g), BP_EINVAL, "n_groups is 0");
    BP_EXPECT_ERR(bp_comm_split_groups(c, NULL, (int[]){1}, 1, &g), BP_EINVAL, "groups or sizes is NULL");
    BP_EXPECT_ERR(bp_comm_create(&g, NULL, NULL, 0, 1), BP_EINVAL, "class is NULL");
    bp_comm_free(c);
}

static void test_axis_names(void **state)
{
    (void)state;
    bp_comm *a = NULL, *b = NULL;
    BP_OK_OR_FAIL(bp_comm_self(&a));
    BP_OK_OR_FAIL(bp_comm_self(&b));
    assert_null(bp_axis_comm("batch"));
    BP_OK_OR_FAIL(bp_axis_bind("batch", a));
    assert_ptr_equal(bp_axis_comm("batch"), a);
    BP_OK_OR_FAIL(bp_axis_bind("batch", b)); /* rebinding replaces */
    assert_ptr_equal(bp_axis_comm("batch"), b);
    BP_OK_OR_FAIL(bp_axis_bind("model", a));
    BP_OK_OR_FAIL(bp_axis_unbind("model"));
    assert_null(bp_axis_comm("model"));
    BP_EXPECT_ERR(bp_axis_unbind("model"), BP_ENOTFOUND, "axis \"model\" is not bound");
    BP_EXPECT_ERR(bp_axis_bind("", a), BP_EINVAL, "1..63 characters");
    BP_EXPECT_ERR(bp_axis_bind("x", NULL), BP_EINVAL, "communicator is NULL");
    bp_comm_free(b); /* freeing a bound communicator unbinds it */
    assert_null(bp_axis_comm("batch"));
    char many[20][8];
    for (int i = 0; i < 16; i++) {
        snprintf(many[i], sizeof many[i], "ax%d", i);
        BP_OK_OR_FAIL(bp_axis_bind(many[i], a));
    }
    BP_EXPECT_ERR(bp_axis_bind("one_more", a), BP_EINVAL, "all 16 axis names are bound");
    bp_comm_free(a);
    assert_null(bp_axis_comm("ax3"));
}

/* ---- a scripted peer: this process is rank 0 of 2; rank 1's all-gather
 * contribution is whatever the test planted in g_peer (or, when g_peer_same,
 * a copy of ours). */
static unsigned char g_peer[256], g_last_sent[256];
static int g_peer_same;
static int g_splits;

static bp_status fake_allreduce(void *impl, void *buf, size_t n, size_t dsize)
{
    (void)impl, (void)buf, (void)n, (void)dsize;
    return BP_OK;
}
static bp_status fake_allgather(void *impl, const void *send, size_t nbytes, void *recv)
{
    (void)impl;
    assert_true(nbytes <= sizeof g_peer);
    memcpy(recv, send, nbytes);
    memcpy(g_last_sent, send, nbytes);
    memcpy((char *)recv + nbytes, g_peer_same ? send : (const void *)g_peer, nbytes);
    return BP_OK;
}
static bp_status fake_broadcast(void *impl, void *buf, size_t nbytes, int root)
{
    (void)impl, (void)buf, (void)nbytes, (void)root;
    return BP_OK;
}
static bp_status fake_barrier(void *impl)
{
    (void)impl;
    return BP_OK;
}
static bp_status fake_split(void *impl, int color, int key, void **out_impl, int *out_rank, int *out_size)
{
    (void)impl, (void)color;
    g_splits++;
    *out_impl = NULL;
    *out_rank = key;
    *out_size = 2; /* the one split the tests make is into one group of both ranks */
    return BP_OK;
}
static void fake_release(void *impl) { (void)impl; }
static const bp_comm_class fake_class = {"fake", fake_allreduce, fake_allgather, fake_broadcast,
                                         fake_barrier, fake_split, fake_release};

/* agree: the same tag and count pass; another tag, count or call number on
 * the peer fails with both sides in the message. The peer's record is ours
 * (captured from the previous call) with one field changed. */
typedef struct { uint64_t seq; int64_t n; uint64_t h; char tag[40]; } agree_record; /* as core/comm.c sends it */

static void test_agree_detects_disagreement(void **state)
{
    (void)state;
    bp_comm *c = NULL;
    BP_OK_OR_FAIL(bp_comm_create(&c, &fake_class, NULL, 0, 2));
    g_peer_same = 1;
    BP_OK_OR_FAIL(bp_comm_agree(c, "BatchNorm3d0.stats", 24)); /* call 0 */
    agree_record rec;
    memcpy(&rec, g_last_sent, sizeof rec);
    assert_int_equal(rec.seq, 0);
    assert_int_equal(rec.n, 24);
    assert_string_equal(rec.tag, "BatchNorm3d0.stats");
    g_peer_same = 0;
    /* the peer is one call behind (it skipped a layer) */
    memcpy(g_peer, &rec, sizeof rec);
    BP_EXPECT_ERR(bp_comm_agree(c, "BatchNorm3d0.stats", 24), BP_ECOMM,
                  "rank 0 is at call 1 \"BatchNorm3d0.stats\" with 24 values, rank 1 at call 0 \"BatchNorm3d0.stats\"");
    /* the peer exchanges something else at the same call */
    rec.seq = 2;
    rec.h ^= 1;
    snprintf(rec.tag, sizeof rec.tag, "grads");
    memcpy(g_peer, &rec, sizeof rec);
    BP_EXPECT_ERR(bp_comm_agree(c, "BatchNorm3d0.stats", 24), BP_ECOMM, "rank 1 at call 2 \"grads\" with 24 values");
    /* the peer has another count */
    memcpy(&rec, g_last_sent, sizeof rec);
    rec.seq = 3;
    rec.n = 25;
    memcpy(g_peer, &rec, sizeof rec);
    BP_EXPECT_ERR(bp_comm_agree(c, "BatchNorm3d0.stats", 24), BP_ECOMM, "with 25 values");
    /* and agreement again once they match */
    memcpy(&rec, g_last_sent, sizeof rec);
    rec.seq = 4;
    memcpy(g_peer, &rec, sizeof rec);
    BP_OK_OR_FAIL(bp_comm_agree(c, "BatchNorm3d0.stats", 24));
    bp_comm_free(c);
}

/* split_groups: a peer with other groups (same verdict, other hash) or an
 * invalid set makes this rank fail too, before anything is split. */
static void test_split_groups_collective_checks(void **state)
{
    (void)state;
    bp_comm *c = NULL, *g = NULL;
    BP_OK_OR_FAIL(bp_comm_create(&c, &fake_class, NULL, 0, 2));
    g_splits = 0;
    g_peer_same = 1;
    BP_OK_OR_FAIL(bp_comm_split_groups(c, (int[]){1, 0}, (int[]){2}, 1, &g));
    assert_int_equal(g_splits, 1);
    assert_int_equal(bp_comm_rank(g), 1); /* rank 0 is second in its group */
    bp_comm_free(g);
    g = NULL;
    /* the peer is valid but passed other groups */
    struct { int32_t ok, pad; uint64_t hash; } peer = {1, 0, 12345};
    g_peer_same = 0;
    memcpy(g_peer, &peer, sizeof peer);
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0, 1}, (int[]){1, 1}, 2, &g), BP_ECOMM,
                  "rank 1 passed other groups than rank 0");
    /* the peer found its set invalid */
    peer.ok = 0;
    memcpy(g_peer, &peer, sizeof peer);
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0, 1}, (int[]){1, 1}, 2, &g), BP_EINVAL,
                  "rank 1 passed an invalid set of groups");
    /* this rank's own set is invalid: its own reason, after the exchange */
    g_peer_same = 1;
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0, 0}, (int[]){1, 1}, 2, &g), BP_EINVAL, "rank 0 appears twice");
    BP_EXPECT_ERR(bp_comm_split_groups(c, (int[]){0}, (int[]){1}, 1, &g), BP_EINVAL, "rank 1 is in no group");
    assert_null(g);
    assert_int_equal(g_splits, 1);
    bp_comm_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_axis_names),
        cmocka_unit_test(test_agree_detects_disagreement),
        cmocka_unit_test(test_split_groups_collective_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
