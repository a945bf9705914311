/* examples/tree_demo.c — a tour of bpc's BrainPy-style module tree.
 *
 * Defines a tiny layer class, Scale (y = x * w over the last axis, with a
 * TrainVar `w` and a Variable `count` of calls), puts two of them in a parent
 * node, and prints what BrainPy would: nodes(), vars() (absolute and
 * relative), train_vars(), the nested state_dict(), then load_state_dict()
 * with an edited state (missing and unexpected keys) and with a state of the
 * wrong shape (an error that leaves the tree unchanged).
 *
 * Usage: tree_demo [--help]
 * Every bpc call returns a bp_status; on failure the demo prints
 * bp_last_error() and exits with status 1. */
#include <stdio.h>
#include <string.h>
#include <bpc/bpc.h>

/* ------------------------------------------------------------ class Scale */

/* A node class embeds bp_node first, then keeps borrowed pointers to its vars
 * (the node owns them). */
typedef struct scale_node {
    bp_node base;
    bp_var *w;      /* TrainVar, shape (features,) */
    bp_var *count;  /* Variable, int32 shape (1,): how many times update ran */
} scale_node;

/* y[..., j] = x[..., j] * w[j]; count += 1. */
static bp_status scale_update(bp_node *self, bp_tensor *x, bp_tensor **out)
{
    scale_node *s = (scale_node *)self;
    const bp_tensor *w = s->w->value;
    int64_t f = bp_tensor_numel(w);
    if (x->dtype != BP_REAL_DTYPE)
        return bp_fail(BP_EDTYPE, "%s: expected %s input, got %s", bp_node_name(self),
                       bp_dtype_name(BP_REAL_DTYPE), bp_dtype_name(x->dtype));
    if (x->ndim < 1 || bp_tensor_dim(x, -1) != f) {
        char buf[96];
        return bp_fail(BP_ESHAPE, "%s: expected input with last dimension %lld, got shape %s",
                       bp_node_name(self), (long long)f, bp_shape_str(buf, sizeof buf, x->ndim, x->shape));
    }
    BP_TRY(bp_tensor_clone(out, x));
    bp_real *y = bp_tensor_reals(*out);
    const bp_real *wv = bp_tensor_creals(w);
    for (int64_t i = 0; i < bp_tensor_numel(x); i++) y[i] *= wv[i % f];
    bp_tensor_set(s->count->value, 0, bp_tensor_get(s->count->value, 0) + 1);
    return BP_OK;
}

/* reset_state: the call counter goes back to zero (w is a parameter, kept). */
static bp_status scale_reset_state(bp_node *self)
{
    bp_tensor_zero(((scale_node *)self)->count->value);
    return BP_OK;
}

static const bp_node_class scale_class = {
    .name = "Scale",
    .size = sizeof(scale_node),
    .update = scale_update,
    .reset_state = scale_reset_state,
};

/* Scale(features, init_value, name): w = init_value everywhere, count = 0. */
static bp_status scale_new(bp_node **out, int64_t features, double init_value, const char *name)
{
    bp_node *n = NULL;
    bp_tensor *w = NULL, *count = NULL;
    bp_status st;
    *out = NULL;
    int64_t one = 1;
    if ((st = bp_node_create(&n, &scale_class, name, NULL))) return st;
    scale_node *s = (scale_node *)n;
    if ((st = bp_tensor_full(&w, BP_REAL_DTYPE, 1, &features, init_value))) goto fail;
    if ((st = bp_tensor_new(&count, BP_INT32, 1, &one))) goto fail;
    /* Declaration order is vars() order: w, then count. */
    if ((st = bp_node_add_var(n, "w", BP_TRAINVAR, w, &s->w))) goto fail;
    if ((st = bp_node_add_var(n, "count", BP_VARIABLE, count, &s->count))) goto fail;
    bp_tensor_free(w);       /* the vars hold their own references */
    bp_tensor_free(count);
    *out = n;
    return BP_OK;
fail:
    bp_tensor_free(w);
    bp_tensor_free(count);
    bp_node_free(n);
    return st;
}

/* -------------------------------------------------------------- class Net */

/* A parent with two Scale children, `first` and `second`: y = second(first(x)). */
static bp_status net_update(bp_node *self, bp_tensor *x, bp_tensor **out)
{
    bp_tensor *h = NULL;
    BP_TRY(bp_node_update(bp_node_child(self, "first"), x, &h));
    bp_status st = bp_node_update(bp_node_child(self, "second"), h, out);
    bp_tensor_free(h);
    return st;
}

static const bp_node_class net_class = {
    .name = "Net",
    .size = sizeof(bp_node),
    .update = net_update,
};

static bp_status net_new(bp_node **out, int64_t features)
{
    bp_node *net = NULL, *a = NULL, *b = NULL;
    bp_status st;
    *out = NULL;
    if ((st = bp_node_create(&net, &net_class, NULL, NULL))) return st;
    if ((st = scale_new(&a, features, 2.0, NULL))) goto done;
    if ((st = scale_new(&b, features, 3.0, NULL))) goto done;
    if ((st = bp_node_add_child(net, "first", a))) goto done;
    if ((st = bp_node_add_child(net, "second", b))) goto done;
done:
    bp_node_free(a); /* the parent holds its own references */
    bp_node_free(b);
    if (st) bp_node_free(net);
    else *out = net;
    return st;
}

/* ---------------------------------------------------------------- printing */

/* "float32 (3,) [2, 2, 2]" */
static void print_tensor(const bp_tensor *t)
{
    char buf[96];
    printf("%s %s [", bp_dtype_name(t->dtype), bp_shape_str(buf, sizeof buf, t->ndim, t->shape));
    for (int64_t i = 0; i < t->numel; i++) printf(i ? ", %g" : "%g", bp_tensor_get(t, i));
    printf("]");
}

static void print_var_collector(const char *title, const bp_collector *c)
{
    printf("%s (%zu):\n", title, bp_collector_len(c));
    for (size_t i = 0; i < bp_collector_len(c); i++) {
        const bp_var *v = bp_collector_var(c, i);
        printf("  %-16s %-9s ", bp_collector_key(c, i), bp_var_kind_name(v->kind));
        print_tensor(v->value);
        printf("\n");
    }
}

static void print_node_collector(const char *title, const bp_collector *c)
{
    char buf[128];
    printf("%s (%zu):\n", title, bp_collector_len(c));
    for (size_t i = 0; i < bp_collector_len(c); i++)
        printf("  %-16s %s\n", *bp_collector_key(c, i) ? bp_collector_key(c, i) : "''",
               bp_node_repr(bp_collector_node(c, i), buf, sizeof buf));
}

static void print_dict(const bp_dict *d, int indent)
{
    for (size_t i = 0; i < bp_dict_len(d); i++) {
        const bp_tensor *t = bp_dict_tensor(d, i);
        printf("%*s%s: ", indent, "", bp_dict_key(d, i));
        if (t) {
            print_tensor(t);
            printf("\n");
        } else {
            const bp_dict *sub = bp_dict_sub(d, i);
            printf("{%s\n", bp_dict_len(sub) ? "" : "}");
            if (bp_dict_len(sub)) {
                print_dict(sub, indent + 2);
                printf("%*s}\n", indent, "");
            }
        }
    }
}

static void print_keys(const char *title, char **keys, size_t n)
{
    printf("  %s: [", title);
    for (size_t i = 0; i < n; i++) printf(i ? ", '%s'" : "'%s'", keys[i]);
    printf("]\n");
}

/* ------------------------------------------------------------------- main */

#define CHECK(expr)                                 \
    do {                                            \
        if ((st = (expr)) != BP_OK) goto fail;      \
    } while (0)

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--help]\n"
            "Builds a small bpc module tree (a Net holding two Scale layers) and prints\n"
            "its nodes(), vars(), train_vars() and state_dict(), then loads an edited\n"
            "state with load_state_dict() and shows the missing and unexpected keys.\n",
            prog);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout, argv[0]);
            return 0;
        }
        fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
        usage(stderr, argv[0]);
        return 2;
    }
    if (bp_check_flavour()) {
        fprintf(stderr, "tree_demo: built for %s but linked to a library with %zu-byte reals\n",
                BP_REAL_NAME, bp_library_real_size());
        return 1;
    }

    bp_status st = BP_OK;
    bp_node *net = NULL;
    bp_collector *c = NULL;
    bp_dict *state = NULL;
    bp_tensor *x = NULL, *y = NULL, *bad = NULL, *w_new = NULL;
    bp_load_result res = {0};
    char buf[128];
    const int64_t features = 3;

    printf("bpc %s (%s)\n\n", bp_version(), BP_REAL_NAME);
    CHECK(net_new(&net, features));
    printf("tree: %s\n\n", bp_node_repr(net, buf, sizeof buf));

    /* nodes(): absolute keys are node names, relative keys are attribute paths. */
    bp_collect_opts rel = bp_collect_defaults();
    rel.method = BP_RELATIVE;
    CHECK(bp_node_nodes(net, NULL, &c));
    print_node_collector("nodes() absolute", c);
    bp_collector_free(c), c = NULL;
    CHECK(bp_node_nodes(net, &rel, &c));
    print_node_collector("nodes(method='relative')", c);
    bp_collector_free(c), c = NULL;

    /* vars() and train_vars(). */
    CHECK(bp_node_vars(net, NULL, &c));
    print_var_collector("\nvars() absolute", c);
    bp_collector_free(c), c = NULL;
    CHECK(bp_node_vars(net, &rel, &c));
    print_var_collector("vars(method='relative')", c);
    bp_collector_free(c), c = NULL;
    CHECK(bp_node_train_vars(net, NULL, &c));
    print_var_collector("train_vars()", c);
    bp_collector_free(c), c = NULL;

    /* update(x): y = x * 2 * 3; each Scale counts its call. */
    const bp_real xv[6] = {1, 2, 3, 4, 5, 6};
    CHECK(bp_tensor_from_reals(&x, 2, (const int64_t[]){2, 3}, xv));
    CHECK(bp_node_update(net, x, &y));
    printf("\nupdate(x): x = ");
    print_tensor(x);
    printf("\n           y = ");
    print_tensor(y);
    printf("\n");

    /* An input of the wrong shape is an error with a message, not a crash. */
    CHECK(bp_tensor_new(&bad, BP_REAL_DTYPE, 2, (const int64_t[]){2, 4}));
    bp_tensor *ybad = NULL;
    bp_status est = bp_node_update(net, bad, &ybad);
    printf("update(x of shape (2,4)) -> %s: %s\n", bp_status_name(est), bp_last_error());
    bp_tensor_free(ybad);
    if (est == BP_OK) {
        fprintf(stderr, "tree_demo: a (2,4) input was accepted\n");
        st = BP_ESTATE;
        goto fail_quiet;
    }

    /* state_dict(): one entry per node, each holding that node's own vars. */
    CHECK(bp_node_state_dict(net, &state));
    printf("\nstate_dict():\n");
    print_dict(state, 2);

    /* Edit the snapshot: new weights for Scale0, drop Scale1.count, add a key
     * and a node that the tree does not have. */
    const char *n0 = bp_node_name(bp_node_child(net, "first"));
    const char *n1 = bp_node_name(bp_node_child(net, "second"));
    char key[160];
    const bp_real wv[3] = {10, 20, 30};
    CHECK(bp_tensor_from_reals(&w_new, 1, &features, wv));
    snprintf(key, sizeof key, "%s.w", n0);
    CHECK(bp_dict_set_tensor(bp_dict_get_dict(state, n0), key, w_new));
    snprintf(key, sizeof key, "%s.count", n1);
    CHECK(bp_dict_remove(bp_dict_get_dict(state, n1), key));
    snprintf(key, sizeof key, "%s.bias", n1);
    CHECK(bp_dict_set_tensor(bp_dict_get_dict(state, n1), key, w_new));
    bp_dict *ghost = NULL;
    CHECK(bp_dict_new(&ghost));
    CHECK(bp_dict_set_dict(state, "Ghost0", ghost)); /* state owns ghost now */
    CHECK(bp_dict_set_tensor(ghost, "Ghost0.w", w_new));

    printf("\nload_state_dict(edited state, warn=false, compatible='v2'):\n");
    CHECK(bp_node_load_state_dict(net, state, false, BP_COMPAT_V2, &res));
    print_keys("missing_keys", res.missing_keys, res.n_missing);
    print_keys("unexpected_keys", res.unexpected_keys, res.n_unexpected);
    bp_load_result_clear(&res);
    CHECK(bp_node_vars(net, NULL, &c));
    print_var_collector("vars() after loading", c);
    bp_collector_free(c), c = NULL;

    /* All or nothing: a w of the wrong shape is refused and nothing changes. */
    bp_tensor *w_bad = NULL;
    CHECK(bp_tensor_new(&w_bad, BP_REAL_DTYPE, 1, (const int64_t[]){4}));
    snprintf(key, sizeof key, "%s.w", n1);
    st = bp_dict_set_tensor(bp_dict_get_dict(state, n1), key, w_bad);
    bp_tensor_free(w_bad);
    CHECK(st);
    snprintf(key, sizeof key, "%s.w", n0);
    bp_tensor *w0 = bp_dict_get_tensor(bp_dict_get_dict(state, n0), key);
    if (!w0) {
        st = bp_fail(BP_ENOTFOUND, "tree_demo: state_dict lost the key %s", key);
        goto fail;
    }
    bp_tensor_fill(w0, -1.0);
    est = bp_node_load_state_dict(net, state, false, BP_COMPAT_V2, NULL);
    printf("\nload_state_dict(state with %s.w of shape (4,)) -> %s: %s\n", n1, bp_status_name(est),
           bp_last_error());
    double w00 = bp_tensor_get(((scale_node *)bp_node_child(net, "first"))->w->value, 0);
    printf("  %s.w[0] is still %g (the -1 in the same state was not written)\n", n0, w00);
    if (est == BP_OK || w00 != 10.0) {
        fprintf(stderr, "tree_demo: a bad state was loaded or changed the tree\n");
        st = BP_ESTATE;
        goto fail_quiet;
    }

    /* reset(): reset_state on every node; each Scale zeroes its counter. */
    CHECK(bp_node_reset(net));
    CHECK(bp_node_vars(net, NULL, &c));
    bp_collector *counts = NULL;
    CHECK(bp_collector_not_subset(c, BP_TRAINVAR, &counts));
    print_var_collector("\nvars().not_subset(TrainVar) after reset()", counts);
    bp_collector_free(counts);
    bp_collector_free(c), c = NULL;

    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_tensor_free(bad);
    bp_tensor_free(w_new);
    bp_dict_free(state);
    bp_node_free(net);
    return 0;

fail:
    fprintf(stderr, "tree_demo: %s: %s\n", bp_status_name(st), bp_last_error());
fail_quiet:
    bp_load_result_clear(&res);
    bp_collector_free(c);
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_tensor_free(bad);
    bp_tensor_free(w_new);
    bp_dict_free(state);
    bp_node_free(net);
    return 1;
}
