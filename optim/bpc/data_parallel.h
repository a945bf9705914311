/* bpc/data_parallel.h — data-parallel training over a communicator.
 *
 * Each rank holds a full copy of the model and trains on its own share of
 * every batch. Three calls keep the copies identical:
 *   1. bp_dp_broadcast_vars once at the start: every rank takes rank root's
 *      values of every var (parameters, BatchNorm running statistics,
 *      optimizer slots);
 *   2. bp_dp_allreduce_grads after backward on each step (on the last
 *      micro-step only when accumulating gradients): every rank's gradients
 *      become the mean over the whole global batch, weighted by each rank's
 *      sample count, so an uneven last batch (even 0 samples on a rank) is
 *      exact; then every rank runs the same optimizer step;
 *   3. bp_dp_check_replicas, when wanted, proves the copies are still bitwise
 *      identical.
 * Every rank must call them in the same order with the same vars (same keys,
 * shapes, dtypes): a mismatch is BP_ECOMM on every rank (bp_comm_agree).
 * With bp_comm_self() all three are no-ops, so one program runs anywhere. */
#ifndef BPC_DATA_PARALLEL_H
#define BPC_DATA_PARALLEL_H

#include <stdint.h>
#include <bpc/comm.h>
#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* Collective: copies rank root's value of every var in vars (any dtype, in
 * collector order) to every rank, in messages of at most 16 MiB. */
bp_status bp_dp_broadcast_vars(bp_comm *c, const bp_collector *vars, int root);

/* Collective: for every TrainVar in vars, grad <- sum_r w_r * grad_r with
 * w_r = n_local_r / N and N = sum_r n_local_r, i.e. the mean over the global
 * batch when each rank's grad is the mean over its n_local samples. The
 * gradients travel packed, in a few large messages; the sum has the same bits
 * on every rank. n_local >= 0; N must be > 0 (BP_EINVAL on every rank
 * otherwise). n_global (may be NULL) receives N. Vars without a grad are
 * skipped (on every rank alike). A rank with n_local 0 contributes zeros
 * whatever its grads hold (it need not run backward). */
bp_status bp_dp_allreduce_grads(bp_comm *c, const bp_collector *vars, int64_t n_local, int64_t *n_global);

/* Collective: grad <- the plain sum over ranks of every TrainVar's grad. For
 * when each rank back-propagated its own share of the global loss (its loss
 * already scaled by n_local / N): what cross-replica BatchNorm needs, since its
 * backward couples the ranks and must see every rank's share of one loss. */
bp_status bp_dp_sum_grads(bp_comm *c, const bp_collector *vars);

/* Collective: BP_OK when every rank's vars hold the same bytes as rank 0's;
 * otherwise BP_ECOMM on every rank naming the first rank and var that differ. */
bp_status bp_dp_check_replicas(bp_comm *c, const bp_collector *vars);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
