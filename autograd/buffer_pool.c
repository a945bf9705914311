/* autograd/buffer_pool.c — per-thread pool of tensor buffers, grouped by element count.
 *
 * Why: a training loop asks for the same shapes every step. Keeping freed
 * buffers and handing them out again makes the second and later steps
 * allocation-free, keeps RSS flat, and avoids glibc's fresh mmap (and its page
 * faults) for every buffer over 32 MiB.
 *
 * How, with only core's reference counts: the pool owns one "base" tensor per
 * buffer (1-D, numel elements) and hands out views of it (bp_tensor_reshape),
 * each of which holds a reference to the base. A base whose refcount is 1 is
 * held by the pool alone and is free. Free bases are found two ways:
 *   - bp__pool_drop: the graph drops its references through it, and pushes a
 *     base to its bucket's free stack the moment it becomes free;
 *   - a sweep of the bucket, when its free stack is empty and enough buffers
 *     were requested since the last sweep (amortised O(1) per request), finds
 *     bases freed by callers directly with bp_tensor_free.
 * Pool-private marks on the base tensors (never seen by ops, which only get
 * views): grad_node == &g_pool, the address of the owning thread's pool, tags
 * a pooled base, so a tensor freed on another thread is never pushed onto the
 * wrong pool; requires_grad tells that the base is on its bucket's free stack.
 * A thread's pool lives until bp_ag_pool_trim (buffers still in use stay). */
#include <stdlib.h>
#include <string.h>
#include "ag_internal.h"

typedef struct bucket {
    int64_t numel;          /* key; -1 for an empty slot */
    bp_tensor **all;        /* every base of this size */
    size_t n_all, cap_all;
    bp_tensor **free_;      /* stack of bases known to be free */
    size_t n_free, cap_free;
    size_t takes;           /* requests since the last sweep */
} bucket;

typedef struct pool {
    bucket *b;
    size_t cap;             /* power of two (0 before first use) */
    size_t used;
    size_t bytes;
} pool;

static _Thread_local pool g_pool;

static size_t hash64(int64_t k) { return (size_t)(((uint64_t)k * 0x9e3779b97f4a7c15ULL) >> 17); }

static bool grow_table(pool *p)
{
    size_t ncap = p->cap ? p->cap * 2 : 16;
    bucket *nb = malloc(ncap * sizeof *nb);
    if (!nb) return false;
    for (size_t i = 0; i < ncap; i++) nb[i].numel = -1;
    for (size_t i = 0; i < p->cap; i++) {
        if (p->b[i].numel < 0) continue;
        size_t h = hash64(p->b[i].numel) & (ncap - 1);
        while (nb[h].numel >= 0) h = (h + 1) & (ncap - 1);
        nb[h] = p->b[i];
    }
    free(p->b);
    p->b = nb;
    p->cap = ncap;
    return true;
}

static bucket *find_bucket(pool *p, int64_t numel, bool create)
{
    if (p->cap) {
        size_t h = hash64(numel) & (p->cap - 1);
        while (p->b[h].numel >= 0) {
            if (p->b[h].numel == numel) return &p->b[h];
            h = (h + 1) & (p->cap - 1);
        }
    }
    if (!create) return NULL;
    if ((p->used + 1) * 2 > p->cap && !grow_table(p)) return NULL;
    size_t h = hash64(numel) & (p->cap - 1);
    while (p->b[h].numel >= 0) h = (h + 1) & (p->cap - 1);
    bucket *b = &p->b[h];
    memset(b, 0, sizeof *b);
    b->numel = numel;
    p->used++;
    return b;
}

static bool push(bp_tensor ***arr, size_t *n, size_t *cap, bp_tensor *t)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        bp_tensor **na = realloc(*arr, nc * sizeof *na);
        if (!na) return false;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = t;
    return true;
}

static void push_free(bucket *b, bp_tensor *base)
{
    /* If the stack cannot grow, the base stays listed in `all` and a later
     * sweep finds it. */
    if (push(&b->free_, &b->n_free, &b->cap_free, base)) base->requires_grad = true;
}

static void sweep(bucket *b)
{
    for (size_t i = 0; i < b->n_all; i++) {
        bp_tensor *t = b->all[i];
        if (t->refcount == 1 && !t->requires_grad) push_free(b, t);
    }
    b->takes = 0;
}

/* A free base of numel elements, or NULL (out of memory). */
static bp_tensor *take_base(int64_t numel)
{
    pool *p = &g_pool;
    bucket *b = find_bucket(p, numel, true);
    if (!b) return NULL;
    /* A sweep costs n_all; doing one only after n_all/4 requests keeps it
     * O(1) per request, and bounds what a missed free can cost to a quarter
     * more buffers than needed. */
    b->takes++;
    if (b->n_free == 0 && b->takes * 4 >= b->n_all && b->n_all > 0) sweep(b);
    while (b->n_free > 0) {
        bp_tensor *t = b->free_[--b->n_free];
        t->requires_grad = false;
        if (t->refcount == 1) return t;
    }
    bp_tensor *t = NULL;
    bp__ag_thread_register();
    if (bp_tensor_new(&t, BP_REAL_DTYPE, 1, &numel)) return NULL;
    if (!push(&b->all, &b->n_all, &b->cap_all, t)) {
        bp_tensor_free(t);
        return NULL;
    }
    t->grad_node = &g_pool;
    p->bytes += bp_tensor_nbytes(t);
    return t;
}

bp_status bp_ag_empty(bp_tensor **out, int ndim, const int64_t *shape)
{
    if (!out) return bp_fail(BP_EINVAL, "ag_empty: out is NULL");
    *out = NULL;
    if (ndim < 0 || ndim > BP_MAX_DIMS)
        return bp_fail(BP_ESHAPE, "ag_empty: ndim must be in [0, %d], got %d", BP_MAX_DIMS, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return bp_fail(BP_ESHAPE, "ag_empty: shape[%d] must be >= 0, got %lld", i,
                           (long long)shape[i]);
        if (shape[i] > 0 && numel > INT64_MAX / 8 / shape[i])
            return bp_fail(BP_ESHAPE, "ag_empty: shape too large at dim %d (%lld)", i,
                           (long long)shape[i]);
        numel *= shape[i];
    }
    bp_tensor *base = take_base(numel);
    if (!base) return bp_fail(BP_ENOMEM, "ag_empty: cannot allocate %lld elements", (long long)numel);
    return bp_tensor_reshape(out, base, ndim, shape);
}

bp_status bp_ag_zeros(bp_tensor **out, int ndim, const int64_t *shape)
{
    BP_TRY(bp_ag_empty(out, ndim, shape));
    bp_tensor_zero(*out);
    return BP_OK;
}

void bp__pool_drop(bp_tensor *t)
{
    if (!t) return;
    bp_tensor *base = t->base;
    bp_tensor_free(t);
    if (!base || base->grad_node != (void *)&g_pool) return;
    if (base->refcount != 1 || base->requires_grad) return;
    bucket *b = find_bucket(&g_pool, base->numel, false);
    if (b) push_free(b, base);
}

void bp_ag_pool_trim(void)
{
    pool *p = &g_pool;
    for (size_t i = 0; i < p->cap; i++) {
        bucket *b = &p->b[i];
        if (b->numel < 0) continue;
        size_t keep = 0;
        for (size_t j = 0; j < b->n_all; j++) {
            bp_tensor *t = b->all[j];
            if (t->refcount == 1) {
                p->bytes -= bp_tensor_nbytes(t);
                t->grad_node = NULL;
                bp_tensor_free(t);
            } else {
                b->all[keep++] = t;
            }
        }
        b->n_all = keep;
        b->n_free = 0;
        b->takes = 0;
        if (keep == 0) {
            free(b->all);
            free(b->free_);
            b->all = b->free_ = NULL;
            b->cap_all = b->cap_free = 0;
        }
    }
    /* Drop empty buckets by rebuilding the table. */
    size_t live = 0;
    for (size_t i = 0; i < p->cap; i++)
        if (p->b[i].numel >= 0 && p->b[i].n_all > 0) live++;
    if (live == 0) {
        free(p->b);
        p->b = NULL;
        p->cap = p->used = 0;
    }
}

size_t bp_ag_pool_bytes(void) { return g_pool.bytes; }

void bp__pool_thread_exit(void)
{
    pool *p = &g_pool;
    for (size_t i = 0; i < p->cap; i++) {
        bucket *b = &p->b[i];
        if (b->numel < 0) continue;
        for (size_t j = 0; j < b->n_all; j++) {
            /* Untagged, a base still viewed elsewhere becomes an ordinary
             * tensor that its last view frees. */
            b->all[j]->grad_node = NULL;
            b->all[j]->requires_grad = false;
            bp_tensor_free(b->all[j]);
        }
        free(b->all);
        free(b->free_);
    }
    free(p->b);
    *p = (pool){0};
}
