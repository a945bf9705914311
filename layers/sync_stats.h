/* layers/sync_stats.h — per-channel statistics combined across the ranks of
 * a communicator (cross-replica normalisation); private to layers/.
 *
 * Each rank brings its own (count, mean, M2) per channel — M2 = sum of
 * squared deviations from its own mean — in double. One all-gather brings
 * every rank's to every rank, and each rank merges them in rank order with
 * Chan et al.'s pairwise formula
 *     n = na + nb,  d = mb - ma,  mean = ma + d * nb / n,
 *     M2 = M2a + M2b + d^2 * na * nb / n,
 * so the result is the statistics of the whole global batch (any counts,
 * 0 included; no E[x^2] - E[x]^2 cancellation) with the same bits on every
 * rank. Unlike BrainPy's pmean of per-replica means, this is exact for
 * unequal batches. */
#ifndef BPC_LAYERS_SYNC_STATS_H
#define BPC_LAYERS_SYNC_STATS_H

#include <stdint.h>
#include <bpc/comm.h>

/* In place: count, mean[0..C) and m2[0..C) become the global ones. tag names
 * what is exchanged (e.g. the layer's name) for bp_comm_agree, which every
 * rank passes first, so ranks at different layers fail instead of mixing
 * statistics. */
bp_status bp__sync_stats(bp_comm *c, const char *tag, int64_t C, int64_t *count, double *mean, double *m2);

#endif
