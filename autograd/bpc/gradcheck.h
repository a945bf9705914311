/* bpc/gradcheck.h — check an op's (or a layer's) backward against central
 * finite differences.
 *
 * Meant for libbpc64 (float64): with eps = 1e-6 the truncation and rounding
 * errors of a central difference are ~1e-10, so a wrong backward stands out.
 * It compiles and runs in float32 too, with coarse defaults (eps 1e-3, atol
 * and rtol 1e-2), good only for catching gross errors.
 *
 * How: let y = f(x_0, ..., x_{n-1}) and L = sum_k w_k y_k with fixed
 * pseudo-random weights w_k in +-[0.5, 1.5] (so every output element counts
 * and none cancels). The analytic gradient is one backward from y with
 * dy = w; the numeric one is (L(x + eps e_j) - L(x - eps e_j)) / (2 eps) for
 * every element j of every checked input. Element j passes when
 * |analytic - numeric| <= atol + rtol |numeric|.
 *
 * Example, for a layer's update: make f call bp_node_update(layer, in[0], out)
 * and pass the TrainVars' values as further inputs — they are leaves, and
 * gradcheck swaps their grad tensors for its own during the check. */
#ifndef BPC_GRADCHECK_H
#define BPC_GRADCHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/tensor.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* The function under test: computes *out (a new reference) from the inputs
 * with bpc ops. It is called many times and must be deterministic (reseed any
 * rng inside it). `user` is passed through. */
typedef bp_status (*bp_gradcheck_fn)(void *user, int n_in, bp_tensor *const *in, bp_tensor **out);

typedef struct bp_gradcheck_opts {
    double eps;          /* finite-difference step */
    double atol, rtol;   /* per-element pass test */
    unsigned skip_mask;  /* bit i set: do not check input i (e.g. a constant target) */
} bp_gradcheck_opts;

/* Where the check stands: worst absolute and relative errors over all checked
 * elements, and where they occurred (input number, flat element index). */
typedef struct bp_gradcheck_report {
    double max_abs_err;       /* max |analytic - numeric| */
    int abs_input;
    int64_t abs_index;
    double max_rel_err;       /* max |analytic - numeric| / max(|analytic|, |numeric|) (0 where both are 0) */
    int rel_input;
    int64_t rel_index;
    int fail_input;           /* the element most over atol + rtol|numeric|, or -1 when all pass */
    int64_t fail_index;
    double fail_analytic, fail_numeric;
    int64_t n_checked;        /* elements compared */
    bool passed;
} bp_gradcheck_report;

/* The defaults for this flavour: float64 eps 1e-6, atol 1e-5, rtol 1e-4;
 * float32 eps 1e-3, atol 1e-2, rtol 1e-2; no input skipped. */
bp_gradcheck_opts bp_gradcheck_defaults(void);

/* Checks f at the given inputs (n_in in [1, 8]; real-dtype leaves, i.e. not
 * op outputs; other dtypes, such as int labels, are passed through unchecked).
 * opts NULL: defaults. report may be NULL. Inputs are restored exactly
 * (values, requires_grad, grad pointers) before returning.
 * Returns BP_OK when every element passes, BP_ENUMERIC when some does not
 * (the message names the worst input, element, analytic and numeric values),
 * or the error f or backward returned. */
bp_status bp_gradcheck(bp_gradcheck_fn f, void *user, int n_in, bp_tensor *const *in,
                       const bp_gradcheck_opts *opts, bp_gradcheck_report *report);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
