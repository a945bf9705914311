/* tests/mpi/comm_mpi.c — communicators over MPI, run by ctest under
 * `mpiexec -n 4` (and -n 3): every rank checks the collectives against values
 * it computes itself, and the checks that must fail on every rank (bad or
 * differing axis_index_groups, ranks at different collectives) do so without
 * a hang. Prints "N passed, M failed" on rank 0; exits non-zero on any failure
 * on any rank. Not a cmocka suite: cmocka's output from several ranks would
 * interleave. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/comm_mpi.h>
#include "mpi_check.h"


/* A value that depends on rank and index, and sums badly in float. */
static float fval(int r, size_t i) { return (float)((double)(i % 97) * 0.1 + 1.0 / (r + 3) + (i % 2 ? 1e4 : 0)); }

static void check_allreduce(bp_comm *c, size_t n)
{
    int size = bp_comm_size(c), rank = bp_comm_rank(c);
    float *f = malloc(sizeof *f * n), *ref = malloc(sizeof *ref * n), *all = malloc(sizeof *all * n * (size_t)size);
    double *d = malloc(sizeof *d * n);
    for (size_t i = 0; i < n; i++) {
        f[i] = fval(rank, i);
        d[i] = (double)f[i] * 1.000001;
        ref[i] = 0;
        for (int r = 0; r < size; r++) ref[i] += fval(r, i); /* rank order, in float: the promised bits */
    }
    CHECK(bp_comm_allreduce_f32(c, f, n) == BP_OK, "allreduce_f32 n=%zu", n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&f[i], &ref[i], sizeof f[i]) != 0;
    CHECK(bad == 0, "allreduce_f32 n=%zu: %zu values differ from the rank-order sum", n, bad);
    /* the same bits on every rank */
    CHECK(bp_comm_allgather(c, f, sizeof *f * n, all) == BP_OK, "allgather n=%zu", n);
    for (int r = 0; r < size; r++)
        CHECK(memcmp(all + (size_t)r * n, f, sizeof *f * n) == 0, "rank %d's allreduce result differs", r);
    CHECK(bp_comm_allreduce_f64(c, d, n) == BP_OK, "allreduce_f64 n=%zu", n);
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < size; r++) s += (double)fval(r, i) * 1.000001;
        bad += d[i] != s;
    }
    CHECK(bad == 0, "allreduce_f64 n=%zu: %zu values differ", n, bad);
    free(f), free(ref), free(all), free(d);
}

int main(void)
{
    bp_comm *w = NULL;
    if (bp_comm_mpi_world(&w) != BP_OK) {
        fprintf(stderr, "comm_mpi_world: %s\n", bp_last_error());
        return 1;
    }
    g_rank = bp_comm_rank(w);
    int size = bp_comm_size(w);
    if (size < 3 || size > 64) {
        fprintf(stderr, "comm_mpi: run it under mpiexec with 3 to 64 ranks (got %d)\n", size);
        bp_comm_free(w);
        bp_comm_mpi_finalize();
        return 2;
    }
    CHECK(strcmp(bp_comm_kind(w), "mpi") == 0, "kind");

    /* sums: fewer values than ranks, a few, many (several shards) */
    size_t ns[] = {1, 3, 1000, 100003};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) check_allreduce(w, ns[k]);

    /* allgather and broadcast */
    int mine = 100 + g_rank, *all = malloc(sizeof *all * (size_t)size);
    CHECK(bp_comm_allgather(w, &mine, sizeof mine, all) == BP_OK, "allgather");
    for (int r = 0; r < size; r++) CHECK(all[r] == 100 + r, "allgather[%d] = %d", r, all[r]);
    int b = g_rank == size - 1 ? 7 : -1;
    CHECK(bp_comm_broadcast(w, &b, sizeof b, size - 1) == BP_OK && b == 7, "broadcast from the last rank: %d", b);
    CHECK(bp_comm_barrier(w) == BP_OK, "barrier");
    CHECK(bp_comm_agree(w, "same", 5) == BP_OK, "agree");

    /* ranks at different collectives: every rank fails, none hangs */
    bp_status st = bp_comm_agree(w, g_rank == 1 ? "grads" : "BatchNorm3d0.stats", 8);
    CHECK(st == BP_ECOMM && strstr(bp_last_error(), "\"grads\""), "agree mismatch -> %d", st);
    st = bp_comm_agree(w, "n", g_rank == 0 ? 4 : 5);
    CHECK(st == BP_ECOMM && strstr(bp_last_error(), "with 5 values"), "agree count mismatch -> %d", st);

    /* axis_index_groups: consecutive pairs (and a lone last rank when size is odd),
     * listed in reverse inside each group so new ranks are reversed too */
    int *groups = malloc(sizeof *groups * (size_t)size), *sizes = malloc(sizeof *sizes * (size_t)size), ng = 0, k = 0;
    for (int r = 0; r < size; r += 2) {
        int gs = r + 1 < size ? 2 : 1;
        for (int j = gs - 1; j >= 0; j--) groups[k++] = r + j;
        sizes[ng++] = gs;
    }
    bp_comm *g = NULL;
    CHECK(bp_comm_split_groups(w, groups, sizes, ng, &g) == BP_OK, "split_groups");
    if (g) {
        int gs = (g_rank / 2) * 2 + 1 < size ? 2 : 1;
        CHECK(bp_comm_size(g) == gs, "group size %d, expected %d", bp_comm_size(g), gs);
        CHECK(bp_comm_rank(g) == gs - 1 - g_rank % 2, "group rank %d", bp_comm_rank(g));
        /* a sum within the group only */
        double v = g_rank, expect = 0;
        for (int r = (g_rank / 2) * 2; r < (g_rank / 2) * 2 + gs; r++) expect += r;
        CHECK(bp_comm_allreduce_f64(g, &v, 1) == BP_OK && v == expect, "group sum %g, expected %g", v, expect);
        bp_comm_free(g);
    }
    /* every rank twice: an error on every rank */
    int dup[64];
    for (int r = 0; r < size; r++) dup[r] = r == 1 ? 0 : r;
    g = NULL;
    st = bp_comm_split_groups(w, dup, (int[]){size}, 1, &g);
    CHECK(st == BP_EINVAL && !g, "duplicate rank -> %d", st);
    /* only rank 0 passes a bad set: the others fail too */
    for (int r = 0; r < size; r++) dup[r] = g_rank == 0 && r == 1 ? 0 : r;
    st = bp_comm_split_groups(w, dup, (int[]){size}, 1, &g);
    CHECK(st == BP_EINVAL, "rank 0's bad set -> %d on rank %d", st, g_rank);
    /* valid sets that differ between ranks */
    for (int r = 0; r < size; r++) dup[r] = r;
    int one_group[1] = {size}, singles[64];
    for (int r = 0; r < size; r++) singles[r] = 1;
    st = g_rank == size - 1 ? bp_comm_split_groups(w, dup, singles, size, &g)
                            : bp_comm_split_groups(w, dup, one_group, 1, &g);
    CHECK(st == BP_ECOMM, "differing groups -> %d on rank %d", st, g_rank);
    free(groups), free(sizes), free(all);

    /* the verdict: any failure on any rank fails every rank */
    int rc = mpi_verdict(w);
    bp_comm_free(w);
    bp_comm_mpi_finalize();
    return rc;
}
