/* core/comm.c — communicators (bpc/comm.h): the generic layer over an
 * implementation, the single-process one, collective agreement checks,
 * group splitting and the axis-name table. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/comm.h>

struct bp_comm {
    const bp_comm_class *cls;
    void *impl;
    int rank, size;
    uint64_t seq; /* collectives checked by bp_comm_agree so far */
};

/* ---- the single-process implementation ---- */

static bp_status self_allreduce(void *impl, void *buf, size_t n, size_t dsize)
{
    (void)impl, (void)buf, (void)n, (void)dsize;
    return BP_OK; /* the sum over one rank */
}

static bp_status self_allgather(void *impl, const void *send, size_t nbytes, void *recv)
{
    (void)impl;
    if (nbytes) memmove(recv, send, nbytes);
    return BP_OK;
}

static bp_status self_broadcast(void *impl, void *buf, size_t nbytes, int root)
{
    (void)impl, (void)buf, (void)nbytes, (void)root;
    return BP_OK;
}

static bp_status self_barrier(void *impl)
{
    (void)impl;
    return BP_OK;
}

static bp_status self_split(void *impl, int color, int key, void **out_impl, int *out_rank, int *out_size)
{
    (void)impl, (void)color, (void)key;
    *out_impl = NULL;
    *out_rank = 0;
    *out_size = 1;
    return BP_OK;
}

static void self_release(void *impl) { (void)impl; }

static const bp_comm_class self_class = {
    .name = "self",
    .allreduce_sum = self_allreduce,
    .allgather = self_allgather,
    .broadcast = self_broadcast,
    .barrier = self_barrier,
    .split = self_split,
    .release = self_release,
};

/* ---- the generic layer ---- */

bp_status bp_comm_create(bp_comm **out, const bp_comm_class *cls, void *impl, int rank, int size)
{
    bp_status st = BP_OK;
    if (!out) st = bp_fail(BP_EINVAL, "comm_create: out is NULL");
    else *out = NULL;
    if (!st && (!cls || !cls->allreduce_sum || !cls->allgather || !cls->broadcast || !cls->barrier || !cls->split ||
                !cls->release))
        st = bp_fail(BP_EINVAL, "comm_create: the class is NULL or lacks a function");
    if (!st && (size < 1 || rank < 0 || rank >= size))
        st = bp_fail(BP_EINVAL, "comm_create: rank %d of size %d (need 0 <= rank < size, size >= 1)", rank, size);
    bp_comm *c = st ? NULL : calloc(1, sizeof *c);
    if (!st && !c) st = bp_fail(BP_ENOMEM, "comm_create: out of memory");
    if (st) {
        if (cls && cls->release) cls->release(impl);
        return st;
    }
    c->cls = cls;
    c->impl = impl;
    c->rank = rank;
    c->size = size;
    *out = c;
    return BP_OK;
}

bp_status bp_comm_self(bp_comm **out) { return bp_comm_create(out, &self_class, NULL, 0, 1); }

static void axis_forget_comm(const bp_comm *c);

void bp_comm_free(bp_comm *c)
{
    if (!c) return;
    axis_forget_comm(c);
    c->cls->release(c->impl);
    free(c);
}

int bp_comm_rank(const bp_comm *c) { return c ? c->rank : 0; }
int bp_comm_size(const bp_comm *c) { return c ? c->size : 1; }
const char *bp_comm_kind(const bp_comm *c) { return c ? c->cls->name : "none"; }

static bp_status need_comm(const char *who, const bp_comm *c)
{
    return c ? BP_OK : bp_fail(BP_EINVAL, "%s: communicator is NULL", who);
}

static bp_status allreduce(const char *who, bp_comm *c, void *buf, size_t n, size_t dsize)
{
    BP_TRY(need_comm(who, c));
    if (n && !buf) return bp_fail(BP_EINVAL, "%s: buf is NULL for %zu values", who, n);
    return n ? c->cls->allreduce_sum(c->impl, buf, n, dsize) : BP_OK;
}

bp_status bp_comm_allreduce_f32(bp_comm *c, float *buf, size_t n)
{
    return allreduce("comm_allreduce_f32", c, buf, n, sizeof(float));
}

bp_status bp_comm_allreduce_f64(bp_comm *c, double *buf, size_t n)
{
    return allreduce("comm_allreduce_f64", c, buf, n, sizeof(double));
}

bp_status bp_comm_allgather(bp_comm *c, const void *send, size_t nbytes, void *recv)
{
    BP_TRY(need_comm("comm_allgather", c));
    if (nbytes && (!send || !recv)) return bp_fail(BP_EINVAL, "comm_allgather: send or recv is NULL");
    return nbytes ? c->cls->allgather(c->impl, send, nbytes, recv) : BP_OK;
}

bp_status bp_comm_broadcast(bp_comm *c, void *buf, size_t nbytes, int root)
{
    BP_TRY(need_comm("comm_broadcast", c));
    if (root < 0 || root >= c->size)
        return bp_fail(BP_EINVAL, "comm_broadcast: root %d is not a rank of this communicator (size %d)", root,
                       c->size);
    if (nbytes && !buf) return bp_fail(BP_EINVAL, "comm_broadcast: buf is NULL");
    return nbytes ? c->cls->broadcast(c->impl, buf, nbytes, root) : BP_OK;
}

bp_status bp_comm_barrier(bp_comm *c)
{
    BP_TRY(need_comm("comm_barrier", c));
    return c->cls->barrier(c->impl);
}

/* What each rank says it is about to exchange. Fixed size, so one
 * all-gather carries every rank's; the tag travels as a hash plus a prefix
 * for the message. */
typedef struct agree_rec {
    uint64_t seq;
    int64_t n;
    uint64_t tag_hash;
    char tag[40];
} agree_rec;

/* FNV-1a: a stable 64-bit hash of a string or bytes. */
static uint64_t fnv1a(const void *p, size_t len, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
#define FNV_INIT 14695981039346656037ull

bp_status bp_comm_agree(bp_comm *c, const char *tag, int64_t n)
{
    BP_TRY(need_comm("comm_agree", c));
    if (!tag) return bp_fail(BP_EINVAL, "comm_agree: tag is NULL");
    agree_rec mine;
    memset(&mine, 0, sizeof mine);
    mine.seq = c->seq++;
    mine.n = n;
    mine.tag_hash = fnv1a(tag, strlen(tag), FNV_INIT);
    snprintf(mine.tag, sizeof mine.tag, "%s", tag);
    if (c->size == 1) return BP_OK;
    agree_rec *all = malloc(sizeof *all * (size_t)c->size);
    if (!all) return bp_fail(BP_ENOMEM, "comm_agree: out of memory for %d records", c->size);
    bp_status st = c->cls->allgather(c->impl, &mine, sizeof mine, all);
    for (int r = 1; !st && r < c->size; r++) {
        const agree_rec *a = &all[0], *b = &all[r];
        if (a->seq != b->seq || a->n != b->n || a->tag_hash != b->tag_hash)
            st = bp_fail(BP_ECOMM,
                         "comm_agree: ranks disagree on a collective: rank 0 is at call %llu \"%s\" with %lld "
                         "values, rank %d at call %llu \"%s\" with %lld values (every rank must make the same "
                         "calls in the same order)",
                         (unsigned long long)a->seq, a->tag, (long long)a->n, r, (unsigned long long)b->seq, b->tag,
                         (long long)b->n);
    }
    free(all);
    return st;
}

/* Checks one rank's view of the groups: every rank of a size-rank
 * communicator exactly once. Writes this rank's group and position. */
static bp_status groups_valid(const int *groups, const int *sizes, int n_groups, int size, int rank, int *my_group,
                              int *my_pos)
{
    if (n_groups < 1) return bp_fail(BP_EINVAL, "comm_split_groups: n_groups is %d (need >= 1)", n_groups);
    if (!groups || !sizes) return bp_fail(BP_EINVAL, "comm_split_groups: groups or sizes is NULL");
    unsigned char *seen = calloc((size_t)size, 1);
    if (!seen) return bp_fail(BP_ENOMEM, "comm_split_groups: out of memory");
    bp_status st = BP_OK;
    int64_t k = 0;
    *my_group = *my_pos = -1;
    for (int g = 0; g < n_groups && !st; g++) {
        if (sizes[g] < 1) {
            st = bp_fail(BP_EINVAL, "comm_split_groups: group %d has %d ranks (need >= 1)", g, sizes[g]);
            break;
        }
        for (int j = 0; j < sizes[g] && !st; j++, k++) {
            if (k >= size) {
                st = bp_fail(BP_EINVAL, "comm_split_groups: the groups list more than the %d ranks there are", size);
                break;
            }
            int r = groups[k];
            if (r < 0 || r >= size)
                st = bp_fail(BP_EINVAL, "comm_split_groups: group %d lists rank %d, not in [0, %d)", g, r, size);
            else if (seen[r]++)
                st = bp_fail(BP_EINVAL, "comm_split_groups: rank %d appears twice (again in group %d)", r, g);
            else if (r == rank)
                *my_group = g, *my_pos = j;
        }
    }
    for (int r = 0; !st && r < size; r++)
        if (!seen[r]) st = bp_fail(BP_EINVAL, "comm_split_groups: rank %d is in no group (each rank exactly once)", r);
    free(seen);
    return st;
}

bp_status bp_comm_split_groups(bp_comm *c, const int *groups, const int *sizes, int n_groups, bp_comm **out)
{
    BP_TRY(need_comm("comm_split_groups", c));
    if (!out) return bp_fail(BP_EINVAL, "comm_split_groups: out is NULL");
    *out = NULL;
    int g = -1, pos = -1;
    bp_status local = groups_valid(groups, sizes, n_groups, c->size, c->rank, &g, &pos);
    char why[256];
    snprintf(why, sizeof why, "%s", local ? bp_last_error() : "");
    /* Every rank learns every rank's verdict and groups (as a hash) before
     * anyone splits, so a bad or differing set fails everywhere at once. */
    struct { int32_t ok; int32_t pad; uint64_t hash; } mine = {local == BP_OK, 0, FNV_INIT}, *all;
    if (!local) {
        int64_t total = 0;
        for (int i = 0; i < n_groups; i++) total += sizes[i];
        mine.hash = fnv1a(&n_groups, sizeof n_groups, FNV_INIT);
        mine.hash = fnv1a(sizes, sizeof *sizes * (size_t)n_groups, mine.hash);
        mine.hash = fnv1a(groups, sizeof *groups * (size_t)total, mine.hash);
    }
    all = malloc(sizeof *all * (size_t)c->size);
    if (!all) return bp_fail(BP_ENOMEM, "comm_split_groups: out of memory");
    bp_status st = c->cls->allgather(c->impl, &mine, sizeof mine, all);
    for (int r = 0; !st && r < c->size; r++) {
        if (!all[r].ok)
            st = r == c->rank ? bp_fail(local, "%s", why)
                              : bp_fail(BP_EINVAL, "comm_split_groups: rank %d passed an invalid set of groups", r);
        else if (all[r].hash != all[0].hash)
            st = bp_fail(BP_ECOMM, "comm_split_groups: rank %d passed other groups than rank 0 (every rank must "
                         "pass the same axis_index_groups)", r);
    }
    free(all);
    if (st) return st;
    void *impl = NULL;
    int rank = 0, size = 1;
    BP_TRY(c->cls->split(c->impl, g, pos, &impl, &rank, &size));
    return bp_comm_create(out, c->cls, impl, rank, size);
}

/* ---- axis names ---- */

#define AXIS_MAX 16
#define AXIS_NAME_MAX 64
static struct {
    char name[AXIS_NAME_MAX];
    bp_comm *comm;
} axes[AXIS_MAX];

static int axis_find(const char *name)
{
    for (int i = 0; i < AXIS_MAX; i++)
        if (axes[i].comm && strcmp(axes[i].name, name) == 0) return i;
    return -1;
}

bp_status bp_axis_bind(const char *axis_name, bp_comm *c)
{
    if (!axis_name || !axis_name[0] || strlen(axis_name) >= AXIS_NAME_MAX)
        return bp_fail(BP_EINVAL, "axis_bind: axis_name must be 1..%d characters", AXIS_NAME_MAX - 1);
    BP_TRY(need_comm("axis_bind", c));
    int i = axis_find(axis_name);
    for (int j = 0; i < 0 && j < AXIS_MAX; j++)
        if (!axes[j].comm) i = j;
    if (i < 0) return bp_fail(BP_EINVAL, "axis_bind: all %d axis names are bound; unbind one first", AXIS_MAX);
    snprintf(axes[i].name, sizeof axes[i].name, "%s", axis_name);
    axes[i].comm = c;
    return BP_OK;
}

bp_status bp_axis_unbind(const char *axis_name)
{
    int i = axis_name ? axis_find(axis_name) : -1;
    if (i < 0) return bp_fail(BP_ENOTFOUND, "axis_unbind: axis \"%s\" is not bound", axis_name ? axis_name : "(null)");
    axes[i].comm = NULL;
    axes[i].name[0] = '\0';
    return BP_OK;
}

bp_comm *bp_axis_comm(const char *axis_name)
{
    int i = axis_name ? axis_find(axis_name) : -1;
    return i < 0 ? NULL : axes[i].comm;
}

static void axis_forget_comm(const bp_comm *c)
{
    for (int i = 0; i < AXIS_MAX; i++)
        if (axes[i].comm == c) axes[i].comm = NULL, axes[i].name[0] = '\0';
}
