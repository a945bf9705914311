/* bpc/comm.h — communicators: the processes that train one model together.
 *
 * A communicator is a fixed, ordered set of processes (ranks 0..size-1) and
 * the collectives bpc needs across them: sums of float32 and float64 arrays,
 * an all-gather, a broadcast, a barrier, and a split into groups. Every
 * collective must be called by every rank of the communicator, in the same
 * order, with the same sizes; that is checked (bp_comm_agree), so ranks that
 * disagree get BP_ECOMM on every rank instead of garbage.
 *
 * Two implementations:
 *   - bp_comm_self(): one process, no communication (what everything uses when
 *     nothing else is said; libbpc alone trains exactly as on one machine);
 *   - MPI, in the separate library libbpc_mpi (<bpc/comm_mpi.h>), present when
 *     bpc was configured with MPI.
 * Others (another transport, a test double) plug in through bp_comm_class.
 *
 * Axis names. As under jax.pmap(axis_name='batch'), a program binds an axis
 * name to a communicator (bp_axis_bind); a layer built with that axis_name
 * (BatchNorm's axis_name) then reduces over it. Bindings are process-global. */
#ifndef BPC_COMM_H
#define BPC_COMM_H

#include <stddef.h>
#include <stdint.h>
#include <bpc/config.h>
#include <bpc/error.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_comm bp_comm;

/* What an implementation provides. impl is its own state. Every function
 * returns BP_OK or an error it has described with bp_fail (BP_ECOMM for a
 * failed collective). Sizes are bytes unless said otherwise. */
typedef struct bp_comm_class {
    const char *name; /* for messages: "self", "mpi" */
    /* buf[0..n) = the sum over ranks of every rank's buf[0..n); dtype_size is 4
     * (float) or 8 (double). Every rank must get the same bits. */
    bp_status (*allreduce_sum)(void *impl, void *buf, size_t n, size_t dtype_size);
    /* recv[r*nbytes .. (r+1)*nbytes) = rank r's send[0..nbytes). */
    bp_status (*allgather)(void *impl, const void *send, size_t nbytes, void *recv);
    /* Every rank's buf[0..nbytes) = rank root's. */
    bp_status (*broadcast)(void *impl, void *buf, size_t nbytes, int root);
    bp_status (*barrier)(void *impl);
    /* Collective: a new implementation state for the ranks that passed the
     * same color, ordered by key (ties by rank), as MPI_Comm_split. Writes
     * that communicator's rank and size. */
    bp_status (*split)(void *impl, int color, int key, void **out_impl, int *out_rank, int *out_size);
    /* Frees impl (not collective). */
    void (*release)(void *impl);
} bp_comm_class;

/* Wraps an implementation: *out takes ownership of impl (released by
 * bp_comm_free through cls->release, also when this call fails). cls must
 * outlive the communicator. rank in [0, size), size >= 1. */
bp_status bp_comm_create(bp_comm **out, const bp_comm_class *cls, void *impl, int rank, int size);

/* A new single-process communicator (rank 0 of 1). The caller frees it. */
bp_status bp_comm_self(bp_comm **out);

/* Frees c (NULL is fine); unbinds every axis name bound to it. Not collective. */
void bp_comm_free(bp_comm *c);

/* This process's rank and the number of ranks (0 and 1 for NULL). */
int bp_comm_rank(const bp_comm *c);
int bp_comm_size(const bp_comm *c);
/* The implementation's name ("self", "mpi"). */
const char *bp_comm_kind(const bp_comm *c);

/* Collective: every rank's buf[0..n) becomes the sum over ranks, with the
 * same bits on every rank. */
bp_status bp_comm_allreduce_f32(bp_comm *c, float *buf, size_t n);
bp_status bp_comm_allreduce_f64(bp_comm *c, double *buf, size_t n);

/* Collective: recv (size * nbytes bytes) gets every rank's send[0..nbytes) in
 * rank order. */
bp_status bp_comm_allgather(bp_comm *c, const void *send, size_t nbytes, void *recv);

/* Collective: buf[0..nbytes) on every rank becomes rank root's. */
bp_status bp_comm_broadcast(bp_comm *c, void *buf, size_t nbytes, int root);

/* Collective: returns when every rank has called it. */
bp_status bp_comm_barrier(bp_comm *c);

/* Collective: checks that every rank is at the same collective: the same tag
 * (what is exchanged, e.g. "BatchNorm3d0.stats") and the same count n, and
 * that the communicator's call sequence numbers agree. On any difference
 * every rank fails with BP_ECOMM naming the ranks, tags and counts it saw. */
bp_status bp_comm_agree(bp_comm *c, const char *tag, int64_t n);

/* Collective: splits c into groups, as JAX's axis_index_groups. groups lists
 * n_groups groups of ranks back to back (group g has sizes[g] ranks, in the
 * order that gives their new ranks). Every rank of c must appear exactly
 * once, and every rank must pass the same groups (checked collectively: a bad
 * or differing set fails on every rank with BP_EINVAL / BP_ECOMM, never a
 * hang). *out is this rank's group; the caller frees it. */
bp_status bp_comm_split_groups(bp_comm *c, const int *groups, const int *sizes, int n_groups, bp_comm **out);

/* ---- axis names ---- */

/* Binds axis_name (1..63 characters) to c until bp_axis_unbind or
 * bp_comm_free(c); rebinding a bound name replaces it. c is borrowed. */
bp_status bp_axis_bind(const char *axis_name, bp_comm *c);
/* Forgets axis_name (BP_ENOTFOUND if it was not bound). */
bp_status bp_axis_unbind(const char *axis_name);
/* The communicator bound to axis_name, or NULL. */
bp_comm *bp_axis_comm(const char *axis_name);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
