/* autograd/graph.c — the tape, recording, backward and release.
 *
 * Each thread has one tape: an array of node pointers in creation order, and
 * an arena holding the nodes and their op contexts. Creation order is a
 * topological order (an op's inputs exist before it runs), so backward walks
 * the tape from the seeded node down to 0, running each node that received a
 * gradient. A node's output gradient (`gout`) is taken from the pool on its
 * first contribution and returned right after the node's backward ran, so a
 * sweep holds only the gradients of the live frontier. */
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "ag_internal.h"

typedef struct bp_ag_tape bp_ag_tape;

typedef struct bp_ag_node {
    const bp_ag_op *op;
    bp_ag_tape *tape;       /* the tape (thread) that recorded it */
    size_t index;           /* position on the tape */
    bp_tensor *out;         /* referenced */
    bp_tensor *gout;        /* pooled d loss/d out, NULL until something flows in */
    int n_in;
    bp_tensor *in[BP_AG_MAX_INPUTS]; /* referenced */
    void *ctx;              /* ctx_size bytes in the arena, or NULL */
} bp_ag_node;

/* The arena: chunks of memory handed out by bumping a pointer, all kept for
 * reuse when the graph is released (so steady-state recording never mallocs). */
typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
} chunk;

struct bp_ag_tape {
    bp_ag_node **nodes;
    size_t n, cap;
    chunk *first, *cur;
};

static _Thread_local bp_ag_tape g_tape;
static _Thread_local int g_no_grad_depth;

/* grad_node of a tensor whose graph was released. */
static const char released_mark = 0;
#define RELEASED ((void *)&released_mark)

/* ------------------------------------------------------------ small helpers */

bp_status bp__check_real(const char *who, const char *arg, const bp_tensor *t)
{
    if (!t) return bp_fail(BP_EINVAL, "%s: %s is NULL", who, arg);
    if (t->dtype != BP_REAL_DTYPE)
        return bp_fail(BP_EDTYPE, "%s: %s must be %s, got %s", who, arg, BP_REAL_NAME,
                       bp_dtype_name(t->dtype));
    return BP_OK;
}

bp_status bp__shape_error(const char *who, const char *what, const bp_tensor *a, const bp_tensor *b)
{
    char sa[96], sb[96];
    return bp_fail(BP_ESHAPE, "%s: %s %s and %s", who, what, bp_shape_str(sa, sizeof sa, a->ndim, a->shape),
                   bp_shape_str(sb, sizeof sb, b->ndim, b->shape));
}

bp_status bp__check_out(const char *who, bp_tensor **out)
{
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    return BP_OK;
}

bp_status bp__done(bp_tensor **out, bp_status st)
{
    if (st && out) {
        bp_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

bp_status bp__unary_out(const char *who, bp_tensor **out, bp_tensor *a)
{
    BP_TRY(bp__check_out(who, out));
    BP_TRY(bp__check_real(who, "a", a));
    return bp_ag_empty(out, a->ndim, a->shape);
}

/* ------------------------------------------------------------ grad mode */

void bp_no_grad_begin(void) { g_no_grad_depth++; }
void bp_no_grad_end(void)
{
    if (g_no_grad_depth > 0) g_no_grad_depth--;
}
bool bp_grad_enabled(void) { return g_no_grad_depth == 0; }

bool bp_ag_requires_grad(const bp_tensor *t) { return t && t->requires_grad; }

bp_status bp_ag_make_leaf(bp_tensor *t, bp_tensor *grad)
{
    if (!t) return bp_fail(BP_EINVAL, "ag_make_leaf: tensor is NULL");
    if (t->grad_node)
        return bp_fail(BP_ESTATE, "ag_make_leaf: tensor is an op output (recorded or released), not a leaf");
    if (!grad) {
        t->requires_grad = false;
        t->grad = NULL;
        return BP_OK;
    }
    BP_TRY(bp__check_real("ag_make_leaf", "tensor", t));
    BP_TRY(bp__check_real("ag_make_leaf", "grad", grad));
    if (!bp_tensor_same_shape(t, grad)) return bp__shape_error("ag_make_leaf", "tensor and grad shapes", t, grad);
    t->requires_grad = true;
    t->grad = grad;
    return BP_OK;
}

/* ------------------------------------------------------------------ arena */

static void *arena_alloc(bp_ag_tape *tp, size_t size)
{
    size = (size + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t);
    while (tp->cur && tp->cur->used + size > tp->cur->cap) tp->cur = tp->cur->next;
    if (!tp->cur) {
        size_t cap = size > 65536 ? size : 65536;
        chunk *c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = NULL;
        /* Append, so the chunks skipped above stay in the list for the next graph. */
        chunk **link = &tp->first;
        while (*link) link = &(*link)->next;
        *link = c;
        tp->cur = c;
    }
    void *p = tp->cur->data + tp->cur->used;
    tp->cur->used += size;
    return p;
}

static void arena_reset(bp_ag_tape *tp)
{
    for (chunk *c = tp->first; c; c = c->next) c->used = 0;
    tp->cur = tp->first;
}

/* ------------------------------------------------------------ thread exit */

/* A thread that recorded or pooled anything gets a key whose destructor
 * releases its graph and frees its tape and pool when it exits (the main
 * thread's live until the process ends). */
static pthread_key_t g_exit_key;
static pthread_once_t g_exit_once = PTHREAD_ONCE_INIT;
static _Thread_local bool g_registered;

static void on_thread_exit(void *unused)
{
    (void)unused;
    bp_ag_release_graph();
    bp_ag_tape *tp = &g_tape;
    for (chunk *c = tp->first, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(tp->nodes);
    *tp = (bp_ag_tape){0};
    bp__pool_thread_exit();
}

static void make_exit_key(void) { pthread_key_create(&g_exit_key, on_thread_exit); }

void bp__ag_thread_register(void)
{
    if (g_registered) return;
    pthread_once(&g_exit_once, make_exit_key);
    pthread_setspecific(g_exit_key, &g_registered);
    g_registered = true;
}

/* ------------------------------------------------------------ recording */

bool bp_ag_wants(int n_in, bp_tensor *const *in)
{
    if (g_no_grad_depth > 0 || !in) return false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

static bp_status record_fail(const bp_ag_op *op, void *ctx, bp_status st)
{
    if (op && op->release && ctx) op->release(ctx);
    return st;
}

bp_status bp_ag_record(bp_tensor *out, const bp_ag_op *op, int n_in, bp_tensor *const *in,
                       void *ctx, size_t ctx_size)
{
    const char *name = op && op->name ? op->name : "ag_record";
    if (!op || !op->backward)
        return record_fail(op, ctx, bp_fail(BP_EINVAL, "ag_record: op or its backward is NULL"));
    if (!out) return record_fail(op, ctx, bp_fail(BP_EINVAL, "%s: ag_record: out is NULL", name));
    if (n_in < 0 || n_in > BP_AG_MAX_INPUTS || (n_in > 0 && !in))
        return record_fail(op, ctx, bp_fail(BP_EINVAL, "%s: ag_record: n_in must be in [0, %d] with inputs, got %d",
                                            name, BP_AG_MAX_INPUTS, n_in));
    if (ctx_size > 0 && !ctx)
        return record_fail(op, ctx, bp_fail(BP_EINVAL, "%s: ag_record: ctx is NULL with ctx_size %zu", name, ctx_size));
    if (!bp_ag_wants(n_in, in)) return record_fail(op, ctx, BP_OK);
    if (out->grad_node)
        return record_fail(op, ctx, bp_fail(BP_ESTATE, "%s: ag_record: out is already an op output", name));
    if (out->requires_grad)
        return record_fail(op, ctx, bp_fail(BP_EINVAL, "%s: ag_record: out is a leaf; pass a new tensor", name));
    for (int i = 0; i < n_in; i++) {
        bp_tensor *t = in[i];
        if (!t) return record_fail(op, ctx, bp_fail(BP_EINVAL, "%s: ag_record: input %d is NULL", name, i));
        if (t == out)
            return record_fail(op, ctx, bp_fail(BP_EINVAL, "%s: ag_record: out is also input %d", name, i));
        /* An input from a released graph is allowed (metrics after backward);
         * backward fails only if a gradient must flow into it. */
        if (!t->requires_grad || t->grad_node == RELEASED) continue;
        if (t->grad_node) {
            if (((bp_ag_node *)t->grad_node)->tape != &g_tape)
                return record_fail(op, ctx, bp_fail(BP_ESTATE, "%s: input %d was recorded on another thread", name, i));
            continue;
        }
        if (!t->grad || !bp_tensor_same_shape(t, t->grad) || t->grad->dtype != t->dtype ||
            t->dtype != BP_REAL_DTYPE)
            return record_fail(op, ctx, bp_fail(BP_EINVAL,
                "%s: input %d requires grad but has no %s grad tensor of its shape", name, i, BP_REAL_NAME));
    }

    bp_ag_tape *tp = &g_tape;
    bp__ag_thread_register();
    if (tp->n == tp->cap) {
        size_t nc = tp->cap ? tp->cap * 2 : 256;
        bp_ag_node **nn = realloc(tp->nodes, nc * sizeof *nn);
        if (!nn) return record_fail(op, ctx, bp_fail(BP_ENOMEM, "%s: cannot grow the tape", name));
        tp->nodes = nn;
        tp->cap = nc;
    }
    size_t head = (sizeof(bp_ag_node) + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t);
    bp_ag_node *nd = arena_alloc(tp, head + ctx_size);
    if (!nd) return record_fail(op, ctx, bp_fail(BP_ENOMEM, "%s: cannot allocate a graph node", name));
    nd->op = op;
    nd->tape = tp;
    nd->index = tp->n;
    nd->out = bp_tensor_retain(out);
    nd->gout = NULL;
    nd->n_in = n_in;
    for (int i = 0; i < n_in; i++) nd->in[i] = bp_tensor_retain(in[i]);
    nd->ctx = NULL;
    if (ctx_size) {
        nd->ctx = (unsigned char *)nd + head;
        memcpy(nd->ctx, ctx, ctx_size);
    }
    out->grad_node = nd;
    out->requires_grad = true;
    tp->nodes[tp->n++] = nd;
    return BP_OK;
}

/* ------------------------------------------------------------ release */

static void release_node(bp_ag_node *nd)
{
    if (nd->op->release && nd->ctx) nd->op->release(nd->ctx);
    bp__pool_drop(nd->gout);
    nd->gout = NULL;
    for (int i = 0; i < nd->n_in; i++) bp__pool_drop(nd->in[i]);
    nd->out->grad_node = RELEASED;
    bp__pool_drop(nd->out);
}

void bp_ag_release_graph(void)
{
    bp_ag_tape *tp = &g_tape;
    /* Newest first: a node's output is released before the inputs it used. */
    for (size_t i = tp->n; i-- > 0;) release_node(tp->nodes[i]);
    tp->n = 0;
    arena_reset(tp);
}

size_t bp_ag_graph_size(void) { return g_tape.n; }

bp_status bp_ag_detach(bp_tensor **out, bp_tensor *t)
{
    BP_TRY(bp__check_out("ag_detach", out));
    if (!t) return bp_fail(BP_EINVAL, "ag_detach: tensor is NULL");
    /* bp_tensor_reshape makes a fresh header: requires_grad false, no grad_node. */
    return bp_tensor_reshape(out, t, t->ndim, t->shape);
}

/* ------------------------------------------------------------ backward */

/* Adds src into dst elementwise (same numel). */
static void add_into(bp_tensor *dst, const bp_tensor *src)
{
    bp_real *d = dst->data;
    const bp_real *s = src->data;
    for (int64_t i = 0; i < dst->numel; i++) d[i] += s[i];
}

/* The buffer where gradient for tensor t accumulates, or NULL if none is
 * wanted. Allocates a recorded node's gout on first use: zeroed, or, when
 * the consuming op overwrites it (may_skip_zero), uninitialised and *fresh
 * set (only then: a leaf's grad or an existing gout is never fresh). */
static bp_status grad_slot(bp_tensor *t, bp_tensor **slot, const char *who, int idx, bool may_skip_zero, bool *fresh)
{
    *slot = NULL;
    *fresh = false;
    if (!t->requires_grad) return BP_OK;
    if (t->grad_node == RELEASED)
        return bp_fail(BP_ESTATE,
                       "backward: %s input %d comes from a graph already released by an earlier backward "
                       "(recompute it, or bp_ag_detach it to use it as a constant)", who, idx);
    if (!t->grad_node) {
        *slot = t->grad;
        return BP_OK;
    }
    bp_ag_node *nd = t->grad_node;
    if (!nd->gout) {
        if (may_skip_zero) {
            BP_TRY(bp_ag_empty(&nd->gout, t->ndim, t->shape));
            *fresh = true;
        } else {
            BP_TRY(bp_ag_zeros(&nd->gout, t->ndim, t->shape));
        }
    }
    *slot = nd->gout;
    return BP_OK;
}

/* True if input j of nd is also one of its earlier inputs (x*x): its gradient
 * buffer is then already another din entry. */
static bool input_seen_before(const bp_ag_node *nd, int j)
{
    for (int k = 0; k < j; k++)
        if (nd->in[k] == nd->in[j]) return true;
    return false;
}

/* The gradient buffers of one node's backward. For an op that overwrites its
 * gradients, din[j] is the real buffer only when nobody has written it yet
 * (a recorded input's gout, made for this call, read by no other din entry);
 * otherwise it is pooled scratch, added into real[j] by grads_finish. So every
 * overwriting backward has one path: write every element of each din. */
typedef struct node_grads {
    bp_tensor *din[BP_AG_MAX_INPUTS];
    bp_tensor *real[BP_AG_MAX_INPUTS];    /* where a scratch din[j] goes, else NULL */
} node_grads;

static bp_status grads_begin(const bp_ag_node *nd, node_grads *g)
{
    bool ow = nd->op->overwrites_grad;
    for (int j = 0; j < nd->n_in; j++) g->din[j] = g->real[j] = NULL;
    for (int j = 0; j < nd->n_in; j++) {
        bool fresh;
        bool first = !input_seen_before(nd, j);
        BP_TRY(grad_slot(nd->in[j], &g->din[j], nd->op->name, j, ow && first, &fresh));
        if (ow && g->din[j] && !fresh) {
            g->real[j] = g->din[j];
            g->din[j] = NULL;
            BP_TRY(bp_ag_empty(&g->din[j], g->real[j]->ndim, g->real[j]->shape));
        }
    }
    return BP_OK;
}

/* Adds each scratch gradient into its real buffer (when backward succeeded)
 * and returns the scratch to the pool. */
static void grads_finish(const bp_ag_node *nd, node_grads *g, bool ok)
{
    for (int j = 0; j < nd->n_in; j++) {
        if (!g->real[j]) continue;
        if (ok && g->din[j]) add_into(g->real[j], g->din[j]);
        bp__pool_drop(g->din[j]);
    }
}

static bp_status check_root(bp_tensor *out, const bp_tensor *dy, int k)
{
    if (!out) return bp_fail(BP_EINVAL, "backward: output %d is NULL", k);
    if (out->grad_node == RELEASED)
        return bp_fail(BP_ESTATE, "backward: output %d's graph was already released (backward runs once per graph)", k);
    if (!out->requires_grad)
        return bp_fail(BP_EINVAL, "backward: output %d was not recorded (grad mode off or no input requires grad)", k);
    if (out->grad_node && ((bp_ag_node *)out->grad_node)->tape != &g_tape)
        return bp_fail(BP_ESTATE, "backward: output %d was recorded on another thread", k);
    if (!out->grad_node && !out->grad)
        return bp_fail(BP_EINVAL, "backward: output %d is a leaf without a grad tensor", k);
    if (dy) {
        BP_TRY(bp__check_real("backward", "dy", dy));
        if (!bp_tensor_same_shape(out, dy)) return bp__shape_error("backward", "output and dy shapes differ:", out, dy);
    }
    return BP_OK;
}

/* Seeds and sweeps. dy[k] NULL means ones (the loss case). */
static bp_status run_backward(int n, bp_tensor *const *outs, const bp_tensor *const *dys)
{
    if (n < 1 || !outs) return bp_fail(BP_EINVAL, "backward: need at least one output, got %d", n);
    for (int k = 0; k < n; k++) BP_TRY(check_root(outs[k], dys ? dys[k] : NULL, k));

    bp_ag_tape *tp = &g_tape;
    bp_status st = BP_OK;
    size_t top = 0;
    bool any_node = false;
    for (int k = 0; k < n && !st; k++) {
        bp_tensor *slot = NULL;
        bool fresh;
        st = grad_slot(outs[k], &slot, "root", k, false, &fresh);
        if (st) break;
        const bp_tensor *dy = dys ? dys[k] : NULL;
        if (dy) {
            add_into(slot, dy);
        } else {
            bp_real *s = slot->data;
            for (int64_t i = 0; i < slot->numel; i++) s[i] += 1;
        }
        if (outs[k]->grad_node) {
            size_t idx = ((bp_ag_node *)outs[k]->grad_node)->index;
            if (!any_node || idx > top) top = idx;
            any_node = true;
        }
    }

    for (size_t i = top + 1; any_node && !st && i-- > 0;) {
        bp_ag_node *nd = tp->nodes[i];
        if (!nd->gout) continue; /* nothing flows through this node */
        node_grads g;
        st = grads_begin(nd, &g);
        if (!st) {
            bp_ag_backward_args a = {nd->ctx, nd->out, nd->gout, nd->n_in, nd->in, g.din};
            st = nd->op->backward(&a);
        }
        grads_finish(nd, &g, !st);
        bp__pool_drop(nd->gout);
        nd->gout = NULL;
    }
    bp_ag_release_graph();
    return st;
}

bp_status bp_backward(bp_tensor *loss)
{
    if (loss && loss->numel != 1) {
        char s[96];
        return bp_fail(BP_ESHAPE, "backward: loss must have one element, got shape %s (use bp_backward_with)",
                       bp_shape_str(s, sizeof s, loss->ndim, loss->shape));
    }
    if (loss) BP_TRY(bp__check_real("backward", "loss", loss));
    return run_backward(1, &loss, NULL);
}

bp_status bp_backward_with(bp_tensor *out, const bp_tensor *dy)
{
    if (!dy) return bp_fail(BP_EINVAL, "backward_with: dy is NULL");
    return run_backward(1, &out, &dy);
}

bp_status bp_backward_many(int n, bp_tensor *const *out, const bp_tensor *const *dy)
{
    if (!dy) return bp_fail(BP_EINVAL, "backward_many: dy is NULL");
    for (int k = 0; k < n; k++)
        if (!dy[k]) return bp_fail(BP_EINVAL, "backward_many: dy[%d] is NULL", k);
    return run_backward(n, out, dy);
}
