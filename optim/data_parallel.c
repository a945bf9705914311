/* optim/data_parallel.c — keeping model replicas identical across ranks
 * (bpc/data_parallel.h). Sees only vars and the communicator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/data_parallel.h>

#define DP_MESSAGE_BYTES ((size_t)16 << 20) /* a few large messages, bounded scratch */

/* FNV-1a over bytes, chained. */
static uint64_t hash_bytes(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
#define HASH_INIT 14695981039346656037ull

/* A tag naming what is exchanged: the call and a hash of every var's key,
 * dtype and shape (and whether it has a grad), so ranks with other models or
 * var lists disagree in bp_comm_agree instead of exchanging garbage. */
static void layout_tag(char *tag, size_t cap, const char *what, const bp_collector *vars, bool grads_only,
                       int64_t *count)
{
    uint64_t h = HASH_INIT;
    int64_t n = 0;
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        const bp_var *v = bp_collector_var(vars, i);
        if (!v || (grads_only && !v->grad)) continue;
        const char *k = bp_collector_key(vars, i);
        h = hash_bytes(k, strlen(k) + 1, h);
        h = hash_bytes(&v->value->dtype, sizeof v->value->dtype, h);
        h = hash_bytes(&v->value->ndim, sizeof v->value->ndim, h);
        h = hash_bytes(v->value->shape, sizeof *v->value->shape * (size_t)v->value->ndim, h);
        n += v->value->numel;
    }
    snprintf(tag, cap, "%s:%016llx", what, (unsigned long long)h);
    *count = n;
}

static bp_status need(const char *who, const bp_comm *c, const bp_collector *vars)
{
    if (!c) return bp_fail(BP_EINVAL, "%s: communicator is NULL", who);
    if (!vars) return bp_fail(BP_EINVAL, "%s: vars is NULL", who);
    for (size_t i = 0; i < bp_collector_len(vars); i++)
        if (!bp_collector_var(vars, i))
            return bp_fail(BP_EINVAL, "%s: entry \"%s\" is not a var", who, bp_collector_key(vars, i));
    return BP_OK;
}

bp_status bp_dp_broadcast_vars(bp_comm *c, const bp_collector *vars, int root)
{
    BP_TRY(need("dp_broadcast_vars", c, vars));
    char tag[64];
    int64_t n;
    layout_tag(tag, sizeof tag, "dp_broadcast_vars", vars, false, &n);
    BP_TRY(bp_comm_agree(c, tag, n));
    if (bp_comm_size(c) == 1) return BP_OK;
    /* tensors are contiguous: one message per var, split when large */
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        bp_tensor *t = bp_collector_var(vars, i)->value;
        size_t nb = bp_tensor_nbytes(t);
        for (size_t o = 0; o < nb; o += DP_MESSAGE_BYTES)
            BP_TRY(bp_comm_broadcast(c, (char *)t->data + o, nb - o < DP_MESSAGE_BYTES ? nb - o : DP_MESSAGE_BYTES,
                                     root));
    }
    return BP_OK;
}

static bp_status reduce_real(bp_comm *c, bp_real *buf, size_t n)
{
#ifdef BP_REAL_DOUBLE
    return bp_comm_allreduce_f64(c, buf, n);
#else
    return bp_comm_allreduce_f32(c, buf, n);
#endif
}

static bp_status reduce_grads(bp_comm *c, const bp_collector *vars, int64_t total, bp_real w, bool zero);

bp_status bp_dp_sum_grads(bp_comm *c, const bp_collector *vars)
{
    BP_TRY(need("dp_sum_grads", c, vars));
    char tag[64];
    int64_t total;
    layout_tag(tag, sizeof tag, "dp_sum_grads", vars, true, &total);
    BP_TRY(bp_comm_agree(c, tag, total));
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        const bp_var *v = bp_collector_var(vars, i);
        if (v->grad && v->grad->dtype != BP_REAL_DTYPE)
            return bp_fail(BP_EDTYPE, "dp_sum_grads: \"%s\" has a %s gradient (expected %s)",
                           bp_collector_key(vars, i), bp_dtype_name(v->grad->dtype), bp_dtype_name(BP_REAL_DTYPE));
    }
    return bp_comm_size(c) == 1 ? BP_OK : reduce_grads(c, vars, total, 1, false);
}

/* Packs scaled gradients into buf until it is full, reduces, unpacks. */
bp_status bp_dp_allreduce_grads(bp_comm *c, const bp_collector *vars, int64_t n_local, int64_t *n_global)
{
    BP_TRY(need("dp_allreduce_grads", c, vars));
    char tag[64];
    int64_t total;
    layout_tag(tag, sizeof tag, "dp_allreduce_grads", vars, true, &total);
    /* every rank checks the layout before anyone may fail alone on n_local */
    BP_TRY(bp_comm_agree(c, tag, total));
    double counts[2] = {n_local < 0 ? 1 : 0, n_local < 0 ? 0 : (double)n_local};
    BP_TRY(bp_comm_allreduce_f64(c, counts, 2));
    if (counts[0] > 0)
        return bp_fail(BP_EINVAL, "dp_allreduce_grads: n_local is %lld on this rank; %g rank(s) passed a negative "
                       "count", (long long)n_local, counts[0]);
    if (counts[1] <= 0)
        return bp_fail(BP_EINVAL, "dp_allreduce_grads: no samples on any rank (global count 0)");
    if (n_global) *n_global = (int64_t)counts[1];
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        const bp_var *v = bp_collector_var(vars, i);
        if (v->grad && v->grad->dtype != BP_REAL_DTYPE)
            return bp_fail(BP_EDTYPE, "dp_allreduce_grads: \"%s\" has a %s gradient (expected %s)",
                           bp_collector_key(vars, i), bp_dtype_name(v->grad->dtype), bp_dtype_name(BP_REAL_DTYPE));
    }
    if (bp_comm_size(c) == 1) return BP_OK; /* w = 1: the gradients are already the global mean */
    return reduce_grads(c, vars, total, (bp_real)((double)n_local / counts[1]), n_local == 0);
}

/* grad <- sum over ranks of w * grad (zeros from a rank with zero set), in
 * messages of at most DP_MESSAGE_BYTES. */
static bp_status reduce_grads(bp_comm *c, const bp_collector *vars, int64_t total, bp_real w, bool zero)
{
    const size_t cap = DP_MESSAGE_BYTES / sizeof(bp_real);
    size_t want = (size_t)total < cap ? (size_t)total : cap;
    bp_real *buf = malloc(sizeof *buf * (want ? want : 1));
    if (!buf) return bp_fail(BP_ENOMEM, "dp_allreduce_grads: out of memory for a %zu-value message", want);
    bp_status st = BP_OK;
    /* walk (var, offset) in collector order; a message holds whatever fits */
    size_t vi = 0, off = 0, n_vars = bp_collector_len(vars);
    while (!st) {
        size_t fill = 0, v0 = vi, o0 = off;
        while (vi < n_vars && fill < want) {
            const bp_var *v = bp_collector_var(vars, vi);
            if (!v->grad || (size_t)v->grad->numel == off) { vi++, off = 0; continue; }
            size_t k = (size_t)v->grad->numel - off;
            if (k > want - fill) k = want - fill;
            const bp_real *g = (const bp_real *)v->grad->data + off;
            /* a rank without samples sends zeros, whatever its (unused) grad holds */
            if (zero) memset(buf + fill, 0, sizeof *buf * k);
            else for (size_t j = 0; j < k; j++) buf[fill + j] = w * g[j];
            fill += k, off += k;
        }
        if (!fill) break;
        st = reduce_real(c, buf, fill);
        /* unpack the same walk */
        size_t used = 0;
        while (!st && used < fill) {
            const bp_var *v = bp_collector_var(vars, v0);
            if (!v->grad || (size_t)v->grad->numel == o0) { v0++, o0 = 0; continue; }
            size_t k = (size_t)v->grad->numel - o0;
            if (k > fill - used) k = fill - used;
            memcpy((bp_real *)v->grad->data + o0, buf + used, sizeof *buf * k);
            used += k, o0 += k;
        }
    }
    free(buf);
    return st;
}

bp_status bp_dp_check_replicas(bp_comm *c, const bp_collector *vars)
{
    BP_TRY(need("dp_check_replicas", c, vars));
    char tag[64];
    int64_t n;
    layout_tag(tag, sizeof tag, "dp_check_replicas", vars, false, &n);
    BP_TRY(bp_comm_agree(c, tag, n));
    int size = bp_comm_size(c);
    if (size == 1) return BP_OK;
    size_t nv = bp_collector_len(vars);
    /* one hash per var, so the message can name the first var that differs */
    uint64_t *mine = malloc(sizeof *mine * (nv ? nv : 1)), *all = malloc(sizeof *all * (nv ? nv : 1) * (size_t)size);
    bp_status st = mine && all ? BP_OK : bp_fail(BP_ENOMEM, "dp_check_replicas: out of memory");
    for (size_t i = 0; !st && i < nv; i++) {
        const bp_tensor *t = bp_collector_var(vars, i)->value;
        mine[i] = hash_bytes(t->data, bp_tensor_nbytes(t), HASH_INIT);
    }
    if (!st && nv) st = bp_comm_allgather(c, mine, sizeof *mine * nv, all);
    for (int r = 1; !st && r < size; r++)
        for (size_t i = 0; !st && i < nv; i++)
            if (all[(size_t)r * nv + i] != all[i])
                st = bp_fail(BP_ECOMM, "dp_check_replicas: rank %d's \"%s\" differs from rank 0's", r,
                             bp_collector_key(vars, i));
    free(mine);
    free(all);
    return st;
}
