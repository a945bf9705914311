/* mpi/comm_mpi.c — the MPI implementation of bp_comm_class (bpc/comm_mpi.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include <bpc/comm_mpi.h>

typedef struct mpi_impl {
    MPI_Comm comm; /* bpc's own duplicate */
    int rank, size;
} mpi_impl;

static int g_we_initialised;

/* BP_ECOMM with MPI's own words for rc. */
static bp_status mpi_fail(const char *who, int rc)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    return bp_fail(BP_ECOMM, "%s: %s", who, msg);
}
#define MPI_TRY(who, call)                          \
    do {                                            \
        int rc_ = (call);                           \
        if (rc_ != MPI_SUCCESS) return mpi_fail(who, rc_); \
    } while (0)

/* MPI counts are int: large broadcasts go in several calls. */
#define MPI_CHUNK ((size_t)1 << 30)

/* The fixed-order sum. Each rank owns shard r of the array (near-equal
 * contiguous parts); an all-to-all gives rank r everybody's shard r, it sums
 * them in rank order, and an all-gather returns every summed shard to every
 * rank. Traffic per rank: about 2n elements, as a ring all-reduce. */
#define SUM_IN_RANK_ORDER(T)                                                            \
    do {                                                                                \
        T *mine = (T *)parts;                                                           \
        for (int r = 0; r < m->size; r++) {                                             \
            const T *p = (const T *)recv + (size_t)r * sh;                              \
            if (r == 0) memcpy(mine, p, sizeof(T) * my_n);                              \
            else for (size_t i = 0; i < my_n; i++) mine[i] += p[i];                     \
        }                                                                               \
    } while (0)

static bp_status mpi_allreduce_chunk(mpi_impl *m, void *buf, size_t n, size_t dsize)
{
    const size_t sh = (n + (size_t)m->size - 1) / (size_t)m->size; /* shard length (the last may be shorter) */
    int *cnt = malloc(sizeof(int) * 4 * (size_t)m->size);
    char *recv = malloc(dsize * sh * (size_t)m->size), *parts = malloc(dsize * sh);
    bp_status st = BP_OK;
    if (!cnt || !recv || !parts) st = bp_fail(BP_ENOMEM, "comm_allreduce: out of memory for %zu values", n);
    int *scnt = cnt, *sdis = cnt + m->size, *rcnt = cnt + 2 * m->size, *rdis = cnt + 3 * m->size;
    size_t my_n = 0;
    for (int r = 0; !st && r < m->size; r++) {
        size_t lo = (size_t)r * sh < n ? (size_t)r * sh : n, hi = lo + sh < n ? lo + sh : n;
        scnt[r] = (int)((hi - lo) * dsize);
        sdis[r] = (int)(lo * dsize);
        if (r == m->rank) my_n = hi - lo;
    }
    for (int r = 0; !st && r < m->size; r++) {
        rcnt[r] = (int)(my_n * dsize);
        rdis[r] = (int)((size_t)r * sh * dsize);
    }
    int rc = st ? MPI_SUCCESS : MPI_Alltoallv(buf, scnt, sdis, MPI_BYTE, recv, rcnt, rdis, MPI_BYTE, m->comm);
    if (!st && rc != MPI_SUCCESS) st = mpi_fail("comm_allreduce", rc);
    if (!st) {
        if (dsize == sizeof(float)) SUM_IN_RANK_ORDER(float);
        else SUM_IN_RANK_ORDER(double);
        /* every rank gathers every summed shard straight into buf */
        rc = MPI_Allgatherv(parts, scnt[m->rank], MPI_BYTE, buf, scnt, sdis, MPI_BYTE,
                            m->comm);
        if (rc != MPI_SUCCESS) st = mpi_fail("comm_allreduce", rc);
    }
    free(cnt);
    free(recv);
    free(parts);
    return st;
}

static bp_status mpi_allreduce(void *impl, void *buf, size_t n, size_t dsize)
{
    mpi_impl *m = impl;
    /* displacements are int bytes: chunks of at most INT_MAX / 2 bytes */
    const size_t per = ((size_t)1 << 30) / dsize;
    for (size_t o = 0; o < n; o += per) {
        size_t k = n - o < per ? n - o : per;
        BP_TRY(mpi_allreduce_chunk(m, (char *)buf + o * dsize, k, dsize));
    }
    return BP_OK;
}

static bp_status mpi_allgather(void *impl, const void *send, size_t nbytes, void *recv)
{
    mpi_impl *m = impl;
    if (nbytes > (size_t)INT32_MAX / 2)
        return bp_fail(BP_EINVAL, "comm_allgather: %zu bytes per rank is above the %d this implementation sends",
                       nbytes, INT32_MAX / 2);
    MPI_TRY("comm_allgather", MPI_Allgather(send, (int)nbytes, MPI_BYTE, recv, (int)nbytes, MPI_BYTE, m->comm));
    return BP_OK;
}

static bp_status mpi_broadcast(void *impl, void *buf, size_t nbytes, int root)
{
    mpi_impl *m = impl;
    for (size_t o = 0; o < nbytes; o += MPI_CHUNK) {
        size_t k = nbytes - o < MPI_CHUNK ? nbytes - o : MPI_CHUNK;
        MPI_TRY("comm_broadcast", MPI_Bcast((char *)buf + o, (int)k, MPI_BYTE, root, m->comm));
    }
    return BP_OK;
}

static bp_status mpi_barrier(void *impl)
{
    MPI_TRY("comm_barrier", MPI_Barrier(((mpi_impl *)impl)->comm));
    return BP_OK;
}

static bp_status impl_new(mpi_impl **out, MPI_Comm own)
{
    mpi_impl *m = calloc(1, sizeof *m);
    if (!m) {
        MPI_Comm_free(&own);
        return bp_fail(BP_ENOMEM, "comm_mpi: out of memory");
    }
    m->comm = own;
    MPI_Comm_set_errhandler(own, MPI_ERRORS_RETURN);
    MPI_Comm_rank(own, &m->rank);
    MPI_Comm_size(own, &m->size);
    *out = m;
    return BP_OK;
}

static bp_status mpi_split(void *impl, int color, int key, void **out_impl, int *out_rank, int *out_size)
{
    mpi_impl *m = impl, *n = NULL;
    MPI_Comm sub;
    MPI_TRY("comm_split", MPI_Comm_split(m->comm, color, key, &sub));
    BP_TRY(impl_new(&n, sub));
    *out_impl = n;
    *out_rank = n->rank;
    *out_size = n->size;
    return BP_OK;
}

static void mpi_release(void *impl)
{
    mpi_impl *m = impl;
    if (!m) return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&m->comm);
    free(m);
}

static const bp_comm_class mpi_class = {
    .name = "mpi",
    .allreduce_sum = mpi_allreduce,
    .allgather = mpi_allgather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .split = mpi_split,
    .release = mpi_release,
};

bp_status bp_comm_mpi_wrap(bp_comm **out, MPI_Comm comm)
{
    if (!out) return bp_fail(BP_EINVAL, "comm_mpi_wrap: out is NULL");
    *out = NULL;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) return bp_fail(BP_ESTATE, "comm_mpi_wrap: MPI is not initialised (MPI_Init first, or bp_comm_mpi_world)");
    MPI_Comm own;
    MPI_TRY("comm_mpi_wrap", MPI_Comm_dup(comm, &own));
    mpi_impl *m = NULL;
    BP_TRY(impl_new(&m, own));
    return bp_comm_create(out, &mpi_class, m, m->rank, m->size);
}

bp_status bp_comm_mpi_world(bp_comm **out)
{
    if (!out) return bp_fail(BP_EINVAL, "comm_mpi_world: out is NULL");
    *out = NULL;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) return bp_fail(BP_ESTATE, "comm_mpi_world: MPI was already finalised");
    if (!init) {
        int provided = 0;
        MPI_TRY("comm_mpi_world", MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided));
        g_we_initialised = 1;
    }
    return bp_comm_mpi_wrap(out, MPI_COMM_WORLD);
}

bp_status bp_comm_mpi_finalize(void)
{
    if (!g_we_initialised) return BP_OK;
    g_we_initialised = 0;
    MPI_TRY("comm_mpi_finalize", MPI_Finalize());
    return BP_OK;
}
