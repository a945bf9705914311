/* layers/sync_stats.c — cross-replica (count, mean, M2) (sync_stats.h). */
#include <stdlib.h>
#include <string.h>
#include "sync_stats.h"

bp_status bp__sync_stats(bp_comm *c, const char *tag, int64_t C, int64_t *count, double *mean, double *m2)
{
    if (!c) return bp_fail(BP_EINVAL, "%s: cross-replica statistics: communicator is NULL", tag);
    if (C < 1 || *count < 0)
        return bp_fail(BP_EINVAL, "%s: cross-replica statistics: %lld channels, count %lld", tag, (long long)C,
                       (long long)*count);
    BP_TRY(bp_comm_agree(c, tag, C));
    const int size = bp_comm_size(c);
    if (size == 1) return BP_OK;
    /* one record per rank: count, then C means, then C M2s */
    const size_t rec = (size_t)(1 + 2 * C);
    double *mine = malloc(sizeof(double) * rec), *all = malloc(sizeof(double) * rec * (size_t)size);
    bp_status st = mine && all ? BP_OK : bp_fail(BP_ENOMEM, "%s: cross-replica statistics: out of memory", tag);
    if (!st) {
        mine[0] = (double)*count;
        memcpy(mine + 1, mean, sizeof(double) * (size_t)C);
        memcpy(mine + 1 + C, m2, sizeof(double) * (size_t)C);
        st = bp_comm_allgather(c, mine, sizeof(double) * rec, all);
    }
    if (!st) {
        double n = 0;
        for (int64_t k = 0; k < C; k++) mean[k] = m2[k] = 0;
        for (int r = 0; r < size; r++) {
            const double *R = all + (size_t)r * rec, nb = R[0];
            if (nb == 0) continue;
            const double na = n, nt = na + nb;
            for (int64_t k = 0; k < C; k++) {
                const double d = R[1 + k] - mean[k];
                mean[k] += d * (nb / nt);
                m2[k] += R[1 + C + k] + d * d * (na * nb / nt);
            }
            n = nt;
        }
        *count = (int64_t)n;
    }
    free(mine);
    free(all);
    return st;
}
