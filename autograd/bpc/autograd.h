/* bpc/autograd.h — the define-by-run graph: recording, backward, no-grad scopes.
 *
 * Ops (bpc/ops.h) run eagerly. While grad mode is on and one of an op's inputs
 * has `requires_grad`, the op also records a node on this thread's tape: the
 * output's `grad_node` points at the node and its `requires_grad` becomes true.
 * The tape is in creation order, which is a topological order, so backward
 * walks it from the end.
 *
 * Leaves are tensors with requires_grad true and grad_node NULL. Backward
 * accumulates (+=) into a leaf's `grad` tensor (borrowed: a TrainVar points its
 * value's grad at its own). Callers zero grads (bp_node_zero_grad in core).
 *
 * Lifetime of a graph. A node holds references to its inputs and its output,
 * so every intermediate tensor lives until the graph is released, whatever the
 * caller frees. Backward releases this thread's whole graph when its sweep
 * finishes, also when an op's backward fails (bad arguments, caught before the
 * sweep, leave the graph as it was); so does bp_ag_release_graph, for a
 * forward pass that will never be differentiated. A tensor whose graph was
 * released keeps requires_grad but is marked released. Ops may still use it
 * (e.g. metrics from the logits after backward), but backward from it, or a
 * backward whose gradient must flow into it, fails with BP_ESTATE, as PyTorch
 * refuses to go through a freed graph twice; bp_ag_detach makes a constant of
 * it. One graph per thread; to differentiate two losses together, add them
 * first or use bp_backward_many.
 *
 * Memory. Op outputs and gradient buffers come from a per-thread pool of
 * buffers grouped by element count (bp_ag_empty): a buffer returns to the pool
 * when its last tensor is freed, and the next step with the same shapes takes
 * it again, so a training loop stops allocating after its first step. Node
 * records and their contexts live in a per-thread arena reset on release.
 * Both are freed when the thread exits (buffers still in use stay valid);
 * bp_ag_pool_trim returns the free buffers earlier.
 *
 * Views: bp_reshape / bp_flatten record; a bare bp_tensor_reshape view of a
 * leaf or op output is a constant to autograd (requires_grad false).
 *
 * Custom ops (BatchNorm3d, Conv3d, ...): compute the output with your own
 * kernel, then call bp_ag_record with a bp_ag_op whose backward accumulates
 * into the input gradients. For y = x^3, saving 3x^2 for backward:
 *
 *   typedef struct { bp_tensor *d; } cube_ctx;              // what backward needs
 *   static void cube_release(void *c) { bp_tensor_free(((cube_ctx *)c)->d); }
 *   static bp_status cube_backward(const bp_ag_backward_args *a) {
 *       const bp_real *d = ((cube_ctx *)a->ctx)->d->data, *dy = a->dout->data;
 *       bp_real *dx = a->din[0]->data;                      // din[0] != NULL: only input
 *       for (int64_t i = 0; i < a->dout->numel; i++) dx[i] += dy[i] * d[i];
 *       return BP_OK;
 *   }
 *   static const bp_ag_op cube_op = {.name = "cube", .backward = cube_backward, .release = cube_release};
 *
 *   // in the forward, after filling *out and c.d:
 *   bp_status st = bp_ag_record(*out, &cube_op, 1, &x, &c, sizeof c);
 *   // on failure free *out; c.d is released by the graph in every case
 *
 * Check it with bp_gradcheck (bpc/gradcheck.h) in the float64 flavour. */
#ifndef BPC_AUTOGRAD_H
#define BPC_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <bpc/tensor.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* Most inputs one recorded op may have. */
#define BP_AG_MAX_INPUTS 8

/* ------------------------------------------------------------ grad mode */

/* Opens a no-grad scope on this thread: ops record nothing until the matching
 * bp_no_grad_end. Scopes nest. (Training mode `fit` false is not no-grad.) */
void bp_no_grad_begin(void);
/* Closes the innermost no-grad scope; an unmatched call is ignored. */
void bp_no_grad_end(void);
/* True when ops on this thread record (no no-grad scope is open). */
bool bp_grad_enabled(void);

/* ------------------------------------------------------------ leaves */

/* Makes t a leaf whose gradient accumulates into `grad` (borrowed; same shape
 * and dtype as t, of this flavour's real type). grad NULL makes t a constant
 * again (requires_grad false). BP_ESTATE if t is an op's output. */
bp_status bp_ag_make_leaf(bp_tensor *t, bp_tensor *grad);

/* t->requires_grad, NULL-safe: a leaf, a recorded op output, or an output whose graph was released. */
bool bp_ag_requires_grad(const bp_tensor *t);

/* --------------------------------------------------------------- backward */

/* Backward from a scalar (numel 1) loss: d loss/d loss = 1. Accumulates into
 * every leaf the loss depends on, then releases this thread's graph.
 * A leaf loss accumulates 1 into its own grad. Errors: BP_EINVAL (loss NULL
 * or never recorded), BP_ESHAPE (not one element), BP_ESTATE (graph released). */
bp_status bp_backward(bp_tensor *loss);
/* Backward from `out` with upstream gradient dy (same shape, real dtype; the
 * caller keeps dy). Same accumulation, release and errors as bp_backward. */
bp_status bp_backward_with(bp_tensor *out, const bp_tensor *dy);
/* Backward from n outputs at once, out[i] seeded with dy[i], in one sweep. */
bp_status bp_backward_many(int n, bp_tensor *const *out, const bp_tensor *const *dy);

/* Discards this thread's recorded graph without differentiating it (after a
 * forward pass with grad mode on that will not be back-propagated). */
void bp_ag_release_graph(void);
/* Number of op nodes recorded on this thread's tape and not yet released. */
size_t bp_ag_graph_size(void);
/* A view of t (shared data, new header) that autograd treats as a constant:
 * requires_grad false, no graph. The caller frees *out. */
bp_status bp_ag_detach(bp_tensor **out, bp_tensor *t);

/* ------------------------------------------------------------ custom ops */

/* What a backward function receives. din[i] is NULL when in[i] needs no
 * gradient; otherwise it has in[i]'s shape and the real dtype. dout, in and
 * out are read-only. Two kinds of op:
 *  - accumulating (overwrites_grad false): the backward adds (+=, never =)
 *    d loss/d in[i] into din[i]. Two din entries may be the same tensor (x*x),
 *    so read only in, out and dout.
 *  - overwriting (overwrites_grad true): each non-NULL din[i] is a buffer of
 *    its own, NOT initialised, and the backward writes (=) every element of
 *    it. The graph hands over the real gradient buffer when nothing is in it
 *    yet, and otherwise scratch that it adds into the real buffer itself
 *    after the backward returns: so an op has one path, and a first write
 *    costs no zeroing pass and no read-back. */
typedef struct bp_ag_backward_args {
    void *ctx;                  /* the op's context, as copied by bp_ag_record */
    const bp_tensor *out;       /* the forward output */
    const bp_tensor *dout;      /* d loss/d out, shape of out */
    int n_in;
    bp_tensor *const *in;       /* the inputs, as recorded */
    bp_tensor *const *din;      /* each input's gradient buffer (see above), or NULL */
} bp_ag_backward_args;

/* An op's identity: its name (for messages), its backward, and how to free
 * what its context owns. Define one static const instance per op. */
typedef struct bp_ag_op {
    const char *name;
    bp_status (*backward)(const bp_ag_backward_args *a);
    /* Frees what ctx points to (saved tensors, buffers); the ctx bytes
     * themselves belong to the graph. NULL when ctx owns nothing. */
    void (*release)(void *ctx);
    /* True if backward writes (=) each din instead of adding to it (see
     * bp_ag_backward_args). */
    bool overwrites_grad;
} bp_ag_op;

/* True if an op on these inputs would be recorded: grad mode on and some
 * in[i] (non-NULL) requires grad. Lets an op skip saving for backward. */
bool bp_ag_wants(int n_in, bp_tensor *const *in);

/* Records out = op(in[0], ..., in[n_in-1]) on this thread's tape, if
 * bp_ag_wants(n_in, in); otherwise does nothing. `out` must be a fresh tensor
 * the op just computed. ctx_size bytes at ctx (may be 0 / NULL) are copied into
 * the graph and handed to op->backward as a->ctx. The node keeps references to
 * out and every input until the graph is released.
 * Ownership: what the ctx bytes point to passes to the graph in every case:
 * op->release runs on the graph's copy when the graph is released, and on the
 * caller's ctx at once when nothing is recorded or recording fails.
 * Errors: BP_EINVAL (NULL argument, n_in outside [0, 8], out a leaf or one of
 * the inputs, a leaf input without a grad tensor of its shape), BP_ESTATE (out
 * already recorded, an input recorded on another thread), BP_ENOMEM. */
bp_status bp_ag_record(bp_tensor *out, const bp_ag_op *op, int n_in, bp_tensor *const *in,
                       void *ctx, size_t ctx_size);

/* --------------------------------------------------------------- buffers */

/* A new tensor of this flavour's real type from this thread's pool; its
 * contents are undefined. Free it with bp_tensor_free as any tensor (its
 * buffer then returns to the pool). Ops use it for outputs. */
bp_status bp_ag_empty(bp_tensor **out, int ndim, const int64_t *shape);
/* As bp_ag_empty, zero-filled. */
bp_status bp_ag_zeros(bp_tensor **out, int ndim, const int64_t *shape);
/* Frees the pooled buffers of this thread that no tensor uses. */
void bp_ag_pool_trim(void);
/* Bytes held by this thread's pool (in use or free). */
size_t bp_ag_pool_bytes(void);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
