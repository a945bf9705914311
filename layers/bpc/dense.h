/* bpc/dense.h — Dense (Linear), Flatten, Dropout, activation layers and the
 * Sequential container, as brainpy.dnn's.
 *
 *   Dense(num_in, num_out):  y = x @ W + b,  W (num_in, num_out) XavierNormal,
 *                            b (num_out,) ZeroInit (BrainPy's names W and b).
 *   Flatten(start, end):     merges per-sample dims start..end (the batch axis
 *                            is kept: dims count from the first per-sample axis).
 *   Dropout(prob):           BrainPy's convention: prob is the KEEP probability.
 *                            While fitting: y = x * mask / prob, mask ~ Bernoulli(prob);
 *                            otherwise the identity. Its generator's state is a
 *                            Variable (`rng_state`, 4 x int64), so checkpoints
 *                            resume the same masks.
 *   ReLU, LeakyReLU(slope), Sigmoid, Tanh, GELU, Softmax: element-wise layers
 *                            over the ops of bpc/ops.h.
 *   Sequential(children):    update runs the children in order; they are held
 *                            as the node list `children` (relative keys
 *                            "children-0", ...; absolute keys are the children's names). */
#ifndef BPC_DENSE_H
#define BPC_DENSE_H

#include <bpc/node.h>
#include <bpc/init.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

extern const bp_node_class bp_dense_class, bp_flatten_class, bp_dropout_class, bp_sequential_class;
extern const bp_node_class bp_relu_class, bp_leaky_relu_class, bp_sigmoid_class, bp_tanh_class,
    bp_gelu_class, bp_softmax_class;

typedef struct bp_dense_opts {
    bp_init W_initializer;   /* XavierNormal(scale=1) */
    bp_init b_initializer;   /* ZeroInit */
    bool bias;               /* true */
    const bp_mode *mode;     /* NULL: the global mode */
    const char *name;
    bp_rng *rng;             /* NULL: a generator seeded with 0 */
} bp_dense_opts;

bp_dense_opts bp_dense_defaults(void);

typedef struct bp_dense {
    bp_node base;
    int64_t num_in, num_out;
    bp_var *W, *b;           /* b NULL without bias */
} bp_dense;

/* Dense / Linear layer. BP_EINVAL for num_in or num_out < 1, or num_in * num_out
 * beyond 2^60. Input (..., num_in). */
bp_status bp_dense_new(bp_node **out, int64_t num_in, int64_t num_out, const bp_dense_opts *opts);
#define bp_linear_new bp_dense_new

/* Flatten per-sample dims start_dim..end_dim (negative counts from the end). */
bp_status bp_flatten_new(bp_node **out, int start_dim, int end_dim, const bp_mode *mode, const char *name);

/* Dropout keeping each element with probability prob in (0, 1]; seed for its generator. */
bp_status bp_dropout_new(bp_node **out, double prob, uint64_t seed, const bp_mode *mode, const char *name);

/* Activation layers. slope is used by LeakyReLU only. */
bp_status bp_activation_new(bp_node **out, const bp_node_class *cls, double slope, const bp_mode *mode,
                            const char *name);

/* A Sequential of count children (the container takes references; the
 * caller may free its own). count >= 1. */
bp_status bp_sequential_new(bp_node **out, size_t count, bp_node *const *children, const bp_mode *mode,
                            const char *name);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
