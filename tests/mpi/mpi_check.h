/* tests/mpi/mpi_check.h — the checks of the MPI test programs: CHECK counts
 * passes and failures on this rank (printing failures with the rank and the
 * last error), and mpi_verdict sums them over the ranks, prints
 * "<ranks> ranks: N passed, M failed" on rank 0 and returns the exit status
 * every rank returns (non-zero when any rank failed anything). Not cmocka:
 * cmocka's output from several ranks would interleave. */
#ifndef BPC_TESTS_MPI_CHECK_H
#define BPC_TESTS_MPI_CHECK_H

#include <stdio.h>
#include <bpc/comm.h>

static int g_pass, g_fail, g_rank;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (cond) {                                                         \
            g_pass++;                                                       \
        } else {                                                            \
            g_fail++;                                                       \
            fprintf(stderr, "rank %d: %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, " (last error: %s)\n", bp_last_error());        \
        }                                                                   \
    } while (0)

static inline int mpi_verdict(bp_comm *world)
{
    double n[2] = {g_pass, g_fail};
    if (bp_comm_allreduce_f64(world, n, 2)) return 1;
    if (g_rank == 0) printf("%d ranks: %.0f passed, %.0f failed\n", bp_comm_size(world), n[0], n[1]);
    return n[1] > 0;
}

#endif
