/* bpc/comm_mpi.h — communicators over MPI (libbpc_mpi / libbpc64_mpi).
 *
 * Link with libbpc_mpi (CMake: bpc::bpc_mpi_shared; libbpc64_mpi for the float64
 * flavour) and MPI, and start the program with mpiexec. bpc never talks on the program's own
 * communicator: it duplicates it, so its messages cannot mix with the
 * program's. Sums are computed in a fixed order (each rank sums one shard of
 * the array over ranks 0, 1, ... in turn, then every rank gathers the shards),
 * so every rank gets the same bits whatever algorithm MPI picks. */
#ifndef BPC_COMM_MPI_H
#define BPC_COMM_MPI_H

#include <mpi.h>
#include <bpc/comm.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* A communicator over all the processes mpiexec started (MPI_COMM_WORLD).
 * Initialises MPI (MPI_THREAD_FUNNELED) if the program has not; then
 * bp_comm_mpi_finalize ends it. A program started without mpiexec gets a
 * communicator of size 1. The caller frees *out (bp_comm_free). */
bp_status bp_comm_mpi_world(bp_comm **out);

/* A communicator over the processes of comm (duplicated; comm stays the
 * caller's). MPI must be initialised. The caller frees *out. */
bp_status bp_comm_mpi_wrap(bp_comm **out, MPI_Comm comm);

/* Finalises MPI if bp_comm_mpi_world initialised it (free every MPI
 * communicator first); otherwise does nothing. */
bp_status bp_comm_mpi_finalize(void);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
