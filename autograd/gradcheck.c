/* autograd/gradcheck.c — analytic gradients against central differences.
 * See bpc/gradcheck.h for the method. Cost: one backward plus 2 forward
 * calls per checked element, so keep the inputs small. */
#include <math.h>
#include <stdlib.h>
#include <bpc/gradcheck.h>
#include "ag_internal.h"

bp_gradcheck_opts bp_gradcheck_defaults(void)
{
#ifdef BP_REAL_DOUBLE
    bp_gradcheck_opts o = {1e-6, 1e-5, 1e-4, 0};
#else
    bp_gradcheck_opts o = {1e-3, 1e-2, 1e-2, 0};
#endif
    return o;
}

/* Weight k of the projection L = sum_k w_k y_k: +-[0.5, 1.5), from a hash of k. */
static double weight(int64_t k)
{
    uint64_t z = (uint64_t)k * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    double u = (double)(z >> 11) * 0x1.0p-53;
    return (z & 1 ? -1.0 : 1.0) * (0.5 + u);
}

/* L = sum w_k y_k of one no-grad evaluation; checks y keeps the shape of ref. */
static bp_status project(bp_gradcheck_fn f, void *user, int n_in, bp_tensor *const *in, const bp_tensor *ref,
                         double *L)
{
    bp_tensor *y = NULL;
    bp_no_grad_begin();
    bp_status st = f(user, n_in, in, &y);
    bp_no_grad_end();
    if (st) {
        bp_tensor_free(y);
        return st;
    }
    if (!y || !bp_tensor_same_shape(y, ref) || y->dtype != BP_REAL_DTYPE) {
        bp_tensor_free(y);
        return bp_fail(BP_EINVAL, "gradcheck: f returned a different output shape or dtype on a perturbed input");
    }
    const bp_real *v = y->data;
    double s = 0;
    for (int64_t k = 0; k < y->numel; k++) s += weight(k) * (double)v[k];
    *L = s;
    bp_tensor_free(y);
    return BP_OK;
}

bp_status bp_gradcheck(bp_gradcheck_fn f, void *user, int n_in, bp_tensor *const *in,
                       const bp_gradcheck_opts *opts, bp_gradcheck_report *report)
{
    if (!f) return bp_fail(BP_EINVAL, "gradcheck: f is NULL");
    if (n_in < 1 || n_in > BP_AG_MAX_INPUTS || !in)
        return bp_fail(BP_EINVAL, "gradcheck: n_in must be in [1, %d] with inputs, got %d", BP_AG_MAX_INPUTS, n_in);
    const bp_gradcheck_opts o = opts ? *opts : bp_gradcheck_defaults();
    if (!(o.eps > 0)) return bp_fail(BP_EINVAL, "gradcheck: eps must be > 0, got %g", o.eps);
    if (!bp_grad_enabled()) return bp_fail(BP_ESTATE, "gradcheck: called inside a no-grad scope");
    bool check[BP_AG_MAX_INPUTS] = {false};
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) return bp_fail(BP_EINVAL, "gradcheck: input %d is NULL", i);
        if (in[i]->dtype != BP_REAL_DTYPE || (o.skip_mask >> i & 1u)) continue;
        if (in[i]->grad_node) return bp_fail(BP_EINVAL, "gradcheck: input %d is an op output; pass leaves", i);
        check[i] = true;
    }

    bp_gradcheck_report r = {0};
    r.fail_input = -1;
    r.fail_index = -1;
    bool saved_rg[BP_AG_MAX_INPUTS];
    bp_tensor *saved_grad[BP_AG_MAX_INPUTS], *grads[BP_AG_MAX_INPUTS] = {NULL};
    bp_tensor *y = NULL, *w = NULL;
    bp_status st = BP_OK;
    for (int i = 0; i < n_in; i++) {
        saved_rg[i] = in[i]->requires_grad;
        saved_grad[i] = in[i]->grad;
    }
    for (int i = 0; i < n_in && !st; i++) {
        if (check[i]) {
            st = bp_tensor_new(&grads[i], BP_REAL_DTYPE, in[i]->ndim, in[i]->shape);
            if (!st) {
                in[i]->requires_grad = true;
                in[i]->grad = grads[i];
            }
        } else if (in[i]->dtype == BP_REAL_DTYPE) {
            in[i]->requires_grad = false;
        }
    }

    /* Analytic: one backward with dy = w. */
    if (!st) {
        st = f(user, n_in, in, &y);
        if (st) bp_ag_release_graph(); /* whatever f recorded before failing */
    }
    if (!st && (!y || y->dtype != BP_REAL_DTYPE)) st = bp_fail(BP_EINVAL, "gradcheck: f returned no real tensor");
    if (!st) st = bp_tensor_new(&w, BP_REAL_DTYPE, y->ndim, y->shape);
    if (!st) {
        for (int64_t k = 0; k < w->numel; k++) ((bp_real *)w->data)[k] = (bp_real)weight(k);
        if (y->requires_grad)
            st = bp_backward_with(y, w);
        else
            bp_ag_release_graph(); /* y does not depend on any checked input */
    }

    /* Numeric, element by element. */
    double worst_excess = 0;
    for (int i = 0; i < n_in && !st; i++) {
        if (!check[i]) continue;
        bp_real *x = in[i]->data;
        const bp_real *ga = grads[i]->data;
        for (int64_t j = 0; j < in[i]->numel && !st; j++) {
            const bp_real orig = x[j];
            const bp_real hi = (bp_real)(orig + o.eps), lo = (bp_real)(orig - o.eps);
            double Lp = 0, Lm = 0;
            x[j] = hi;
            st = project(f, user, n_in, in, y, &Lp);
            x[j] = lo;
            if (!st) st = project(f, user, n_in, in, y, &Lm);
            x[j] = orig;
            if (st) break;
            /* The realised step, exact even when x +- eps rounds in float32. */
            const double num = (Lp - Lm) / ((double)hi - (double)lo), ana = ga[j];
            const double err = fabs(ana - num), big = fmax(fabs(ana), fabs(num));
            const double rel = big > 0 ? err / big : 0;
            r.n_checked++;
            if (err > r.max_abs_err || r.n_checked == 1) {
                r.max_abs_err = err;
                r.abs_input = i;
                r.abs_index = j;
            }
            if (rel > r.max_rel_err || r.n_checked == 1) {
                r.max_rel_err = rel;
                r.rel_input = i;
                r.rel_index = j;
            }
            const double excess = err - (o.atol + o.rtol * fabs(num));
            if (!(excess <= 0) && (r.fail_input < 0 || !(excess <= worst_excess))) {
                worst_excess = excess;
                r.fail_input = i;
                r.fail_index = j;
                r.fail_analytic = ana;
                r.fail_numeric = num;
            }
        }
    }

    for (int i = 0; i < n_in; i++) {
        in[i]->requires_grad = saved_rg[i];
        in[i]->grad = saved_grad[i];
        bp_tensor_free(grads[i]);
    }
    bp_tensor_free(y);
    bp_tensor_free(w);
    r.passed = !st && r.fail_input < 0;
    if (report) *report = r;
    if (st) return st;
    if (r.fail_input >= 0)
        return bp_fail(BP_ENUMERIC,
                       "gradcheck: input %d element %lld: analytic %.10g, numeric %.10g (max abs err %.3g, "
                       "max rel err %.3g)",
                       r.fail_input, (long long)r.fail_index, r.fail_analytic, r.fail_numeric, r.max_abs_err,
                       r.max_rel_err);
    return BP_OK;
}
