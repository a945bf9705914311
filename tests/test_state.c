/* tests/test_state.c — state_dict / load_state_dict / save_state / load_state,
 * tree_flatten / tree_unflatten and the bp_dict API (BrainPy 2.8.2 §2.6, §2.9).
 *
 * The tree used throughout:
 *   Net0 { w TrainVar [1, 2];  a -> Layer0 { weight TrainVar [0.5, 1.5, 2.5], running Variable [0, 0, 0] };
 *          b -> Plain0 {} }
 * so state_dict() is
 *   { "Net0":   {"Net0.w": [1, 2]},
 *     "Layer0": {"Layer0.weight": [0.5, 1.5, 2.5], "Layer0.running": [0, 0, 0]},
 *     "Plain0": {} }                              (a node without vars maps to {}) */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/state.h>

static const bp_node_class net_class = {.name = "Net", .size = sizeof(bp_node)};
static const bp_node_class layer_class = {.name = "Layer", .size = sizeof(bp_node)};
static const bp_node_class plain_class = {.name = "Plain", .size = sizeof(bp_node)};

/* ------------------------------------------------------------------ helpers */

static bp_tensor *vec_(bp_dtype dt, size_t n, const double *v)
{
    int64_t shape[1] = {(int64_t)n};
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, dt, 1, shape));
    for (size_t i = 0; i < n; i++) bp_tensor_set(t, (int64_t)i, v[i]);
    return t;
}
#define VEC(...) vec_(BP_FLOAT32, sizeof((double[]){__VA_ARGS__}) / sizeof(double), (double[]){__VA_ARGS__})
#define VEC64(...) vec_(BP_FLOAT64, sizeof((double[]){__VA_ARGS__}) / sizeof(double), (double[]){__VA_ARGS__})

static void expect_values_(const bp_tensor *t, const double *want, size_t n, const char *what)
{
    if (!t) fail_msg("%s: tensor is NULL", what);
    if (t->numel != (int64_t)n) fail_msg("%s: %lld elements, expected %zu", what, (long long)t->numel, n);
    for (size_t i = 0; i < n; i++)
        if (bp_tensor_get(t, (int64_t)i) != want[i])
            fail_msg("%s[%zu] = %g, expected %g", what, i, bp_tensor_get(t, (int64_t)i), want[i]);
}
#define EXPECT_VALUES(t, ...)                                                                   \
    expect_values_((t), (double[]){__VA_ARGS__}, sizeof((double[]){__VA_ARGS__}) / sizeof(double), #t)

static void expect_list_(char *const *got, size_t n_got, const char *const *want, size_t n, const char *what)
{
    bool ok = n_got == n;
    for (size_t i = 0; ok && i < n; i++) ok = strcmp(got[i], want[i]) == 0;
    if (ok) return;
    char g[2048] = "";
    size_t at = 0;
    for (size_t i = 0; i < n_got && at < sizeof g; i++)
        at += (size_t)snprintf(g + at, sizeof g - at, "%s'%s'", i ? ", " : "", got[i]);
    fail_msg("%s: got [%s], expected %zu entries, first '%s'", what, g, n, n ? want[0] : "");
}
#define EXPECT_LIST(got, n_got, ...)                                                              \
    do {                                                                                        \
        const char *const want_[] = {__VA_ARGS__};                                              \
        expect_list_((got), (n_got), want_, sizeof want_ / sizeof want_[0], #got);               \
    } while (0)

static void expect_dict_keys_(const bp_dict *d, const char *const *want, size_t n, const char *what)
{
    bool ok = bp_dict_len(d) == n;
    for (size_t i = 0; ok && i < n; i++) ok = strcmp(bp_dict_key(d, i), want[i]) == 0;
    if (ok) return;
    char g[2048] = "";
    size_t at = 0;
    for (size_t i = 0; i < bp_dict_len(d) && at < sizeof g; i++)
        at += (size_t)snprintf(g + at, sizeof g - at, "%s'%s'", i ? ", " : "", bp_dict_key(d, i));
    fail_msg("%s: keys [%s], expected %zu keys, first '%s'", what, g, n, n ? want[0] : "");
}
#define EXPECT_DICT_KEYS(d, ...)                                                                  \
    do {                                                                                        \
        const char *const want_[] = {__VA_ARGS__};                                              \
        expect_dict_keys_((d), want_, sizeof want_ / sizeof want_[0], #d);                       \
    } while (0)

/* Warnings captured through bp_set_warning_handler. */
static char warnings[8][512];
static int n_warnings;

static void capture_warning(const char *msg, void *user)
{
    (void)user;
    if (n_warnings < 8) snprintf(warnings[n_warnings++], sizeof warnings[0], "%s", msg);
}

typedef struct tree {
    bp_node *root, *a, *b;
    bp_var *w, *weight, *running;
} tree;

static bp_var *add_var(bp_node *n, const char *attr, bp_var_kind kind, bp_tensor *t)
{
    bp_var *v = NULL;
    BP_OK_OR_FAIL(bp_node_add_var(n, attr, kind, t, &v));
    bp_tensor_free(t);
    return v;
}

static void tree_build(tree *t)
{
    BP_OK_OR_FAIL(bp_node_create(&t->root, &net_class, NULL, NULL));
    BP_OK_OR_FAIL(bp_node_create(&t->a, &layer_class, NULL, NULL));
    BP_OK_OR_FAIL(bp_node_create(&t->b, &plain_class, NULL, NULL));
    t->w = add_var(t->root, "w", BP_TRAINVAR, VEC(1, 2));
    t->weight = add_var(t->a, "weight", BP_TRAINVAR, VEC(0.5, 1.5, 2.5));
    t->running = add_var(t->a, "running", BP_VARIABLE, VEC(0, 0, 0));
    BP_OK_OR_FAIL(bp_node_add_child(t->root, "a", t->a));
    BP_OK_OR_FAIL(bp_node_add_child(t->root, "b", t->b));
    bp_node_free(t->a); /* the root holds them */
    bp_node_free(t->b);
}

/* The tree's values as built. */
static void expect_tree_as_built(const tree *t)
{
    EXPECT_VALUES(t->w->value, 1, 2);
    EXPECT_VALUES(t->weight->value, 0.5, 1.5, 2.5);
    EXPECT_VALUES(t->running->value, 0, 0, 0);
}

/* Overwrites every value so a load has something to restore. */
static void scribble(tree *t)
{
    bp_tensor_fill(t->w->value, -1);
    bp_tensor_fill(t->weight->value, -2);
    bp_tensor_fill(t->running->value, -3);
}

static void expect_scribbled(const tree *t)
{
    EXPECT_VALUES(t->w->value, -1, -1);
    EXPECT_VALUES(t->weight->value, -2, -2, -2);
    EXPECT_VALUES(t->running->value, -3, -3, -3);
}

static int setup(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_clear_error();
    n_warnings = 0;
    bp_set_warning_handler(capture_warning, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bp_set_warning_handler(NULL, NULL);
    return 0;
}

/* ================================================================ bp_dict */

static void test_dict_set_get_order_and_kinds(void **state)
{
    (void)state;
    bp_dict *d, *sub;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    assert_int_equal(bp_dict_len(d), 0);
    bp_tensor *x = VEC(1), *y = VEC(2, 3);
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "x", x));
    assert_int_equal(x->refcount, 2); /* the dict holds a reference */
    BP_OK_OR_FAIL(bp_dict_new(&sub));
    BP_OK_OR_FAIL(bp_dict_set_tensor(sub, "y", y));
    BP_OK_OR_FAIL(bp_dict_set_dict(d, "sub", sub));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "z", y));
    EXPECT_DICT_KEYS(d, "x", "sub", "z");
    assert_ptr_equal(bp_dict_tensor(d, 0), x);
    assert_null(bp_dict_sub(d, 0));
    assert_ptr_equal(bp_dict_sub(d, 1), sub);
    assert_null(bp_dict_tensor(d, 1));
    assert_null(bp_dict_tensor(d, 3));
    assert_null(bp_dict_key(d, 3));
    assert_ptr_equal(bp_dict_get_tensor(d, "z"), y);
    assert_ptr_equal(bp_dict_get_dict(d, "sub"), sub);
    assert_null(bp_dict_get_tensor(d, "sub")); /* other kind */
    assert_null(bp_dict_get_dict(d, "x"));
    assert_null(bp_dict_get_tensor(d, "nope"));
    assert_null(bp_dict_get_tensor(d, NULL));
    assert_ptr_equal(bp_dict_get_tensor(bp_dict_get_dict(d, "sub"), "y"), y);
    assert_int_equal(bp_dict_len(NULL), 0);
    assert_null(bp_dict_key(NULL, 0));
    bp_dict_free(d);
    assert_int_equal(x->refcount, 1);
    assert_int_equal(y->refcount, 1);
    bp_tensor_free(x);
    bp_tensor_free(y);
    bp_dict_free(NULL);
}

static void test_dict_replace_in_place_and_remove(void **state)
{
    (void)state;
    bp_dict *d, *sub;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    bp_tensor *a = VEC(1), *b = VEC(2), *c = VEC(3), *a2 = VEC(10);
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "a", a));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "b", b));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "c", c));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "a", a2)); /* replaces, keeps the position */
    EXPECT_DICT_KEYS(d, "a", "b", "c");
    assert_ptr_equal(bp_dict_get_tensor(d, "a"), a2);
    assert_int_equal(a->refcount, 1); /* the old value was released */
    BP_OK_OR_FAIL(bp_dict_new(&sub));
    BP_OK_OR_FAIL(bp_dict_set_dict(d, "b", sub)); /* a tensor replaced by a dict */
    EXPECT_DICT_KEYS(d, "a", "b", "c");
    assert_null(bp_dict_get_tensor(d, "b"));
    assert_ptr_equal(bp_dict_get_dict(d, "b"), sub);
    assert_int_equal(b->refcount, 1);
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "b", b)); /* and back: the dict is freed */
    assert_ptr_equal(bp_dict_get_tensor(d, "b"), b);
    assert_null(bp_dict_get_dict(d, "b"));

    BP_OK_OR_FAIL(bp_dict_remove(d, "b"));
    EXPECT_DICT_KEYS(d, "a", "c");
    assert_ptr_equal(bp_dict_tensor(d, 1), c);
    assert_int_equal(b->refcount, 1);
    BP_EXPECT_ERR(bp_dict_remove(d, "b"), BP_ENOTFOUND, "dict_remove: no key \"b\"");
    BP_EXPECT_ERR(bp_dict_remove(d, NULL), BP_EINVAL, "dict_remove: NULL key");
    BP_OK_OR_FAIL(bp_dict_remove(d, "c"));
    BP_OK_OR_FAIL(bp_dict_remove(d, "a"));
    assert_int_equal(bp_dict_len(d), 0);
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "again", a)); /* usable after emptying */
    EXPECT_DICT_KEYS(d, "again");
    bp_dict_free(d);
    bp_tensor_free(a);
    bp_tensor_free(b);
    bp_tensor_free(c);
    bp_tensor_free(a2);
}

static void test_dict_argument_errors(void **state)
{
    (void)state;
    bp_dict *d, *sub;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    bp_tensor *t = VEC(1);
    BP_EXPECT_ERR(bp_dict_new(NULL), BP_EINVAL, "dict_new: out is NULL");
    BP_EXPECT_ERR(bp_dict_set_tensor(NULL, "k", t), BP_EINVAL, "dict_set_tensor: NULL dict");
    BP_EXPECT_ERR(bp_dict_set_tensor(d, NULL, t), BP_EINVAL, "dict_set_tensor: NULL key");
    BP_EXPECT_ERR(bp_dict_set_tensor(d, "k", NULL), BP_EINVAL, "dict_set_tensor: NULL tensor");
    BP_EXPECT_ERR(bp_dict_set_dict(d, "k", NULL), BP_EINVAL, "dict_set_dict: NULL sub-dict");
    BP_EXPECT_ERR(bp_dict_set_dict(d, "k", d), BP_EINVAL, "a dict cannot contain itself");
    BP_OK_OR_FAIL(bp_dict_new(&sub));
    /* the dict takes ownership of sub even on failure (no leak under valgrind) */
    BP_EXPECT_ERR(bp_dict_set_dict(d, NULL, sub), BP_EINVAL, "dict_set_dict: NULL key");
    assert_int_equal(bp_dict_len(d), 0);
    BP_EXPECT_ERR(bp_dict_remove(NULL, "k"), BP_EINVAL, "dict_remove: NULL dict");
    bp_tensor_free(t);
    bp_dict_free(d);
}

/* ============================================================ state_dict */

static void test_state_dict_nested_per_node_with_empty_dicts(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    EXPECT_DICT_KEYS(sd, "Net0", "Layer0", "Plain0");
    for (size_t i = 0; i < 3; i++) assert_null(bp_dict_tensor(sd, i)); /* every entry is a dict */
    bp_dict *net = bp_dict_get_dict(sd, "Net0"), *layer = bp_dict_get_dict(sd, "Layer0");
    EXPECT_DICT_KEYS(net, "Net0.w");
    EXPECT_DICT_KEYS(layer, "Layer0.weight", "Layer0.running");
    assert_non_null(bp_dict_get_dict(sd, "Plain0"));
    assert_int_equal(bp_dict_len(bp_dict_get_dict(sd, "Plain0")), 0);
    EXPECT_VALUES(bp_dict_get_tensor(net, "Net0.w"), 1, 2);
    EXPECT_VALUES(bp_dict_get_tensor(layer, "Layer0.weight"), 0.5, 1.5, 2.5);
    EXPECT_VALUES(bp_dict_get_tensor(layer, "Layer0.running"), 0, 0, 0);

    /* a snapshot: copies, not the vars' tensors */
    assert_ptr_not_equal(bp_dict_get_tensor(net, "Net0.w"), t.w->value);
    scribble(&t);
    EXPECT_VALUES(bp_dict_get_tensor(net, "Net0.w"), 1, 2);
    EXPECT_VALUES(bp_dict_get_tensor(layer, "Layer0.running"), 0, 0, 0);
    bp_dict_free(sd);

    /* from an inner node */
    BP_OK_OR_FAIL(bp_node_state_dict(t.a, &sd));
    EXPECT_DICT_KEYS(sd, "Layer0");
    EXPECT_VALUES(bp_dict_get_tensor(bp_dict_get_dict(sd, "Layer0"), "Layer0.weight"), -2, -2, -2);
    bp_dict_free(sd);
    sd = (bp_dict *)0x1;
    BP_EXPECT_ERR(bp_node_state_dict(NULL, &sd), BP_EINVAL, "state_dict: node is NULL");
    assert_null(sd);
    BP_EXPECT_ERR(bp_node_state_dict(t.root, NULL), BP_EINVAL, "state_dict: out is NULL");
    bp_node_free(t.root);
}

static void test_state_save_state_is_own_vars_only(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *s;
    BP_OK_OR_FAIL(bp_node_save_state(t.root, &s));
    EXPECT_DICT_KEYS(s, "Net0.w"); /* level 0: not the children's */
    EXPECT_VALUES(bp_dict_get_tensor(s, "Net0.w"), 1, 2);
    bp_dict_free(s);
    BP_OK_OR_FAIL(bp_node_save_state(t.a, &s));
    EXPECT_DICT_KEYS(s, "Layer0.weight", "Layer0.running");
    bp_tensor_fill(t.weight->value, 9);
    EXPECT_VALUES(bp_dict_get_tensor(s, "Layer0.weight"), 0.5, 1.5, 2.5);
    bp_dict_free(s);
    BP_OK_OR_FAIL(bp_node_save_state(t.b, &s));
    assert_int_equal(bp_dict_len(s), 0);
    bp_dict_free(s);
    BP_EXPECT_ERR(bp_node_save_state(t.root, NULL), BP_EINVAL, "save_state: out is NULL");
    BP_EXPECT_ERR(bp_node_save_state(NULL, &s), BP_EINVAL, "save_state: node is NULL");
    bp_node_free(t.root);
}

static void test_state_save_state_lists_a_shared_var_once(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_node_create(&n, &plain_class, NULL, NULL));
    bp_var *v = add_var(n, "w", BP_VARIABLE, VEC(4));
    BP_OK_OR_FAIL(bp_node_attach_var(n, "alias", v));
    bp_dict *s;
    BP_OK_OR_FAIL(bp_node_save_state(n, &s));
    EXPECT_DICT_KEYS(s, "Plain0.w"); /* unique(): the first key wins */
    bp_dict_free(s);
    bp_node_free(n);
}

static void test_state_load_state_flat_intersection(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *s;
    BP_OK_OR_FAIL(bp_dict_new(&s));
    bp_tensor *weight = VEC(7, 8, 9), *extra = VEC(1);
    BP_OK_OR_FAIL(bp_dict_set_tensor(s, "Layer0.weight", weight));
    BP_OK_OR_FAIL(bp_dict_set_tensor(s, "Layer0.extra", extra));
    bp_load_result r;
    BP_OK_OR_FAIL(bp_node_load_state(t.a, s, &r));
    EXPECT_VALUES(t.weight->value, 7, 8, 9);
    EXPECT_VALUES(t.running->value, 0, 0, 0);
    assert_ptr_not_equal(t.weight->value, weight); /* copied into the var's own tensor */
    EXPECT_LIST(r.missing_keys, r.n_missing, "Layer0.running");
    EXPECT_LIST(r.unexpected_keys, r.n_unexpected, "Layer0.extra");
    bp_load_result_clear(&r);
    assert_int_equal(r.n_missing, 0);
    assert_null(r.missing_keys);
    bp_load_result_clear(NULL);
    assert_int_equal(n_warnings, 0); /* load_state never warns */
    BP_OK_OR_FAIL(bp_node_load_state(t.a, s, NULL));
    r.n_missing = 99;
    BP_EXPECT_ERR(bp_node_load_state(t.a, NULL, &r), BP_EINVAL, "Layer0: load_state: state is NULL");
    assert_int_equal(r.n_missing, 0);
    BP_EXPECT_ERR(bp_node_load_state(NULL, s, &r), BP_EINVAL, "load_state: node is NULL");
    bp_tensor_free(weight);
    bp_tensor_free(extra);
    bp_dict_free(s);
    bp_node_free(t.root);
}

/* ================================================== load_state_dict (v2) */

static void test_state_load_state_dict_v2_round_trip(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    scribble(&t);
    bp_load_result r;
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, true, BP_COMPAT_V2, &r));
    expect_tree_as_built(&t);
    assert_int_equal(r.n_missing, 0);
    assert_int_equal(r.n_unexpected, 0);
    assert_int_equal(n_warnings, 0); /* nothing to warn about */
    bp_load_result_clear(&r);
    /* result may be NULL */
    scribble(&t);
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, false, BP_COMPAT_V2, NULL));
    expect_tree_as_built(&t);
    bp_dict_free(sd);
    bp_node_free(t.root);
}

static void test_state_load_state_dict_v2_missing_and_unexpected_clean_keys(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    bp_dict *layer = bp_dict_get_dict(sd, "Layer0");
    BP_OK_OR_FAIL(bp_dict_remove(layer, "Layer0.running"));
    bp_tensor *extra = VEC(5);
    BP_OK_OR_FAIL(bp_dict_set_tensor(layer, "Layer0.extra", extra));
    BP_OK_OR_FAIL(bp_dict_set_tensor(bp_dict_get_dict(sd, "Plain0"), "Plain0.gone", extra));
    scribble(&t);
    bp_load_result r;
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, false, BP_COMPAT_V2, &r));
    /* clean keys: "Layer0.running", not BrainPy's "Layer0.Layer0.running" */
    EXPECT_LIST(r.missing_keys, r.n_missing, "Layer0.running");
    EXPECT_LIST(r.unexpected_keys, r.n_unexpected, "Layer0.extra", "Plain0.gone");
    EXPECT_VALUES(t.w->value, 1, 2);
    EXPECT_VALUES(t.weight->value, 0.5, 1.5, 2.5);
    EXPECT_VALUES(t.running->value, -3, -3, -3); /* missing: left as it was */
    assert_int_equal(n_warnings, 0);             /* warn = false */
    bp_load_result_clear(&r);
    bp_tensor_free(extra);
    bp_dict_free(sd);
    bp_node_free(t.root);
}

static void test_state_load_state_dict_v2_absent_and_unknown_nodes(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    BP_OK_OR_FAIL(bp_dict_remove(sd, "Layer0")); /* a whole node absent */
    bp_dict *ghost;
    BP_OK_OR_FAIL(bp_dict_new(&ghost));
    bp_tensor *x = VEC(1);
    BP_OK_OR_FAIL(bp_dict_set_tensor(ghost, "Ghost0.x", x));
    BP_OK_OR_FAIL(bp_dict_set_dict(sd, "Ghost0", ghost));
    BP_OK_OR_FAIL(bp_dict_set_tensor(sd, "stray", x));
    scribble(&t);
    bp_load_result r;
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, false, BP_COMPAT_V2, &r));
    EXPECT_LIST(r.missing_keys, r.n_missing, "Layer0.weight", "Layer0.running");
    /* BrainPy ignores entries of unknown nodes; bpc reports their keys */
    EXPECT_LIST(r.unexpected_keys, r.n_unexpected, "Ghost0.x", "stray");
    EXPECT_VALUES(t.w->value, 1, 2);
    EXPECT_VALUES(t.weight->value, -2, -2, -2);
    bp_load_result_clear(&r);
    bp_tensor_free(x);
    bp_dict_free(sd);
    bp_node_free(t.root);
}

static void test_state_load_state_dict_warns_unexpected_then_missing(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    bp_dict *layer = bp_dict_get_dict(sd, "Layer0");
    BP_OK_OR_FAIL(bp_dict_remove(layer, "Layer0.running"));
    BP_OK_OR_FAIL(bp_dict_remove(bp_dict_get_dict(sd, "Net0"), "Net0.w"));
    bp_tensor *x = VEC(5);
    BP_OK_OR_FAIL(bp_dict_set_tensor(layer, "Layer0.extra", x));
    bp_load_result r;
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, true, BP_COMPAT_V2, &r));
    assert_int_equal(n_warnings, 2);
    assert_string_equal(warnings[0], "Unexpected keys in state_dict: ['Layer0.extra']");
    assert_string_equal(warnings[1], "Missing keys in state_dict: ['Net0.w', 'Layer0.running']");
    bp_load_result_clear(&r);
    /* only missing keys: one warning */
    n_warnings = 0;
    BP_OK_OR_FAIL(bp_dict_remove(layer, "Layer0.extra"));
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, true, BP_COMPAT_V2, NULL));
    assert_int_equal(n_warnings, 1);
    assert_string_equal(warnings[0], "Missing keys in state_dict: ['Net0.w', 'Layer0.running']");
    bp_tensor_free(x);
    bp_dict_free(sd);
    bp_node_free(t.root);
}

/* A state whose one bad entry comes after good ones in load order. */
static void check_load_is_all_or_nothing(bp_tensor *bad_running, bp_status want, const char *msg)
{
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    bp_dict *net = bp_dict_get_dict(sd, "Net0"), *layer = bp_dict_get_dict(sd, "Layer0");
    bp_tensor *w = VEC(100, 200), *weight = VEC(7, 8, 9);
    BP_OK_OR_FAIL(bp_dict_set_tensor(net, "Net0.w", w));
    BP_OK_OR_FAIL(bp_dict_set_tensor(layer, "Layer0.weight", weight));
    BP_OK_OR_FAIL(bp_dict_set_tensor(layer, "Layer0.running", bad_running));
    bp_load_result r = {.n_missing = 5};
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, sd, true, BP_COMPAT_V2, &r), want, msg);
    expect_tree_as_built(&t); /* Net0.w and Layer0.weight were valid but not written */
    assert_int_equal(r.n_missing, 0);
    assert_null(r.missing_keys);
    assert_int_equal(n_warnings, 0);

    /* the same through v1 (flat) and load_state */
    bp_dict *flat;
    BP_OK_OR_FAIL(bp_dict_new(&flat));
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Net0.w", w));
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Layer0.weight", weight));
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Layer0.running", bad_running));
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, flat, false, BP_COMPAT_V1, &r), want, msg);
    expect_tree_as_built(&t);
    BP_EXPECT_ERR(bp_node_load_state(t.a, flat, &r), want, msg);
    expect_tree_as_built(&t);
    bp_dict_free(flat);
    bp_tensor_free(w);
    bp_tensor_free(weight);
    bp_dict_free(sd);
    bp_node_free(t.root);
}

static void test_state_load_shape_mismatch_is_eshape_and_tree_unchanged(void **state)
{
    (void)state;
    bp_tensor *bad = VEC(1, 2, 3, 4);
    check_load_is_all_or_nothing(bad, BP_ESHAPE,
                                 "load: \"Layer0.running\" has shape (3,) in the model but (4,) in the state");
    bp_tensor_free(bad);
}

static void test_state_load_dtype_mismatch_is_edtype_and_tree_unchanged(void **state)
{
    (void)state;
    bp_tensor *bad = VEC64(1, 2, 3);
    check_load_is_all_or_nothing(bad, BP_EDTYPE,
                                 "load: \"Layer0.running\" has dtype float32 in the model but float64 in the state");
    bp_tensor_free(bad);
}

static void test_state_load_state_dict_format_errors(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    scribble(&t);
    bp_tensor *x = VEC(1, 2);
    /* v2: a node's entry must be a dict */
    BP_OK_OR_FAIL(bp_dict_set_tensor(sd, "Layer0", x));
    bp_load_result r;
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, sd, false, BP_COMPAT_V2, &r), BP_EFORMAT,
                  "entry \"Layer0\" must be a dict of the node's vars (v2), got a tensor");
    expect_scribbled(&t);
    /* a var's entry must be a tensor */
    bp_dict *nested;
    BP_OK_OR_FAIL(bp_dict_new(&nested));
    BP_OK_OR_FAIL(bp_dict_set_dict(bp_dict_get_dict(sd, "Net0"), "Net0.w", nested));
    BP_OK_OR_FAIL(bp_dict_remove(sd, "Layer0"));
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, sd, false, BP_COMPAT_V2, &r), BP_EFORMAT,
                  "load: \"Net0.w\" must be a tensor, got a nested dict");
    expect_scribbled(&t);
    /* unknown compatible value, NULLs */
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, sd, false, (bp_compat)3, &r), BP_EINVAL,
                  "Unknown compatible version: 3");
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, sd, false, (bp_compat)0, &r), BP_EINVAL,
                  "Unknown compatible version: 0");
    BP_EXPECT_ERR(bp_node_load_state_dict(t.root, NULL, false, BP_COMPAT_V2, &r), BP_EINVAL,
                  "Net0: load_state_dict: state is NULL");
    BP_EXPECT_ERR(bp_node_load_state_dict(NULL, sd, false, BP_COMPAT_V2, &r), BP_EINVAL,
                  "load_state_dict: node is NULL");
    assert_int_equal(r.n_missing, 0);
    assert_int_equal(r.n_unexpected, 0);
    expect_scribbled(&t);
    bp_tensor_free(x);
    bp_dict_free(sd);
    bp_node_free(t.root);
}

/* ================================================== load_state_dict (v1) */

static void test_state_load_state_dict_v1_flat_absolute_keys(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_dict *flat;
    BP_OK_OR_FAIL(bp_dict_new(&flat));
    bp_tensor *w = VEC(3, 4), *running = VEC(0.25, 0.5, 0.75), *junk = VEC(0);
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Net0.w", w));
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Layer0.running", running));
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Layer0.junk", junk));
    bp_load_result r;
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, flat, true, BP_COMPAT_V1, &r));
    EXPECT_VALUES(t.w->value, 3, 4);
    EXPECT_VALUES(t.weight->value, 0.5, 1.5, 2.5);
    EXPECT_VALUES(t.running->value, 0.25, 0.5, 0.75);
    EXPECT_LIST(r.missing_keys, r.n_missing, "Layer0.weight");
    EXPECT_LIST(r.unexpected_keys, r.n_unexpected, "Layer0.junk");
    assert_int_equal(n_warnings, 2);
    assert_string_equal(warnings[0], "Unexpected keys in state_dict: ['Layer0.junk']");
    assert_string_equal(warnings[1], "Missing keys in state_dict: ['Layer0.weight']");
    bp_load_result_clear(&r);

    /* a nested (v2) state given as v1: its node entries are unexpected, every var missing */
    bp_dict *sd;
    BP_OK_OR_FAIL(bp_node_state_dict(t.root, &sd));
    BP_OK_OR_FAIL(bp_node_load_state_dict(t.root, sd, false, BP_COMPAT_V1, &r));
    EXPECT_LIST(r.missing_keys, r.n_missing, "Net0.w", "Layer0.weight", "Layer0.running");
    EXPECT_LIST(r.unexpected_keys, r.n_unexpected, "Net0", "Layer0", "Plain0");
    bp_load_result_clear(&r);
    bp_dict_free(sd);
    bp_tensor_free(w);
    bp_tensor_free(running);
    bp_tensor_free(junk);
    bp_dict_free(flat);
    bp_node_free(t.root);
}

/* ======================================================= tree_flatten */

static void test_state_tree_flatten_unflatten_round_trip(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    BP_OK_OR_FAIL(bp_node_attach_var(t.b, "tied", t.w)); /* an alias: flattened once */
    bp_tensor **vals;
    size_t n;
    bp_tree_def *def;
    BP_OK_OR_FAIL(bp_node_tree_flatten(t.root, &vals, &n, &def));
    assert_int_equal(n, 3);
    assert_int_equal(bp_tree_def_len(def), 3);
    assert_string_equal(bp_tree_def_key(def, 0), "Net0.w");
    assert_string_equal(bp_tree_def_key(def, 1), "Layer0.weight");
    assert_string_equal(bp_tree_def_key(def, 2), "Layer0.running");
    assert_null(bp_tree_def_key(def, 3));
    assert_int_equal(bp_tree_def_len(NULL), 0);
    EXPECT_VALUES(vals[0], 1, 2);
    EXPECT_VALUES(vals[1], 0.5, 1.5, 2.5);
    EXPECT_VALUES(vals[2], 0, 0, 0);
    assert_ptr_not_equal(vals[0], t.w->value); /* copies */
    scribble(&t);
    EXPECT_VALUES(vals[0], 1, 2);

    bp_node *out;
    BP_OK_OR_FAIL(bp_tree_unflatten(def, vals, n, &out));
    assert_ptr_equal(out, t.root);
    expect_tree_as_built(&t);
    bp_node_free(out); /* a new reference */

    /* the description keeps the tree alive after the caller's reference goes */
    bp_var *w = t.w;
    bp_node_free(t.root);
    bp_tensor_fill(vals[0], 42);
    BP_OK_OR_FAIL(bp_tree_unflatten(def, vals, n, &out));
    EXPECT_VALUES(w->value, 42, 42);
    bp_node_free(out);
    bp_tree_values_free(vals, n);
    bp_tree_def_free(def);
    bp_tree_def_free(NULL);
    bp_tree_values_free(NULL, 0);
}

static void test_state_tree_unflatten_errors_leave_tree_unchanged(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_tensor **vals;
    size_t n;
    bp_tree_def *def;
    BP_OK_OR_FAIL(bp_node_tree_flatten(t.root, &vals, &n, &def));
    for (size_t i = 0; i < n; i++) bp_tensor_fill(vals[i], 9);
    bp_node *out = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, 2, &out), BP_ESHAPE, "tree_unflatten: expected 3 values, got 2");
    assert_null(out);
    expect_tree_as_built(&t);

    bp_tensor *keep = vals[2];
    vals[2] = NULL;
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, &out), BP_EINVAL, "value 2 (\"Layer0.running\") is NULL");
    BP_EXPECT_ERR(bp_tree_unflatten(def, NULL, n, &out), BP_EINVAL, "value 0 (\"Net0.w\") is NULL");
    vals[2] = VEC(1, 2, 3, 4);
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, &out), BP_ESHAPE,
                  "\"Layer0.running\" expects shape (3,), got (4,)");
    expect_tree_as_built(&t);
    bp_tensor_free(vals[2]);
    vals[2] = VEC64(1, 2, 3);
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, &out), BP_EDTYPE,
                  "\"Layer0.running\" expects dtype float32, got float64");
    expect_tree_as_built(&t);
    bp_tensor_free(vals[2]);
    vals[2] = keep;
    BP_EXPECT_ERR(bp_tree_unflatten(NULL, vals, n, &out), BP_EINVAL, "def is NULL");
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, NULL), BP_EINVAL, "out is NULL");

    /* the tree changed since flatten: Layer0 renamed, its keys are gone */
    BP_OK_OR_FAIL(bp_node_set_name(t.a, "renamed"));
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, &out), BP_ENOTFOUND,
                  "tree_unflatten: the tree no longer has \"Layer0.weight\"");
    expect_tree_as_built(&t); /* Net0.w was found but not written */
    BP_OK_OR_FAIL(bp_node_set_name(t.a, "Layer0"));

    /* a var whose tensor was swapped for another shape / dtype after flatten */
    bp_tensor *orig = t.running->value, *other = VEC(1, 2, 3, 4, 5);
    t.running->value = other;
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, &out), BP_ESHAPE,
                  "\"Layer0.running\" changed shape in the tree since flatten");
    bp_tensor_free(other);
    other = VEC64(0, 0, 0);
    t.running->value = other;
    BP_EXPECT_ERR(bp_tree_unflatten(def, vals, n, &out), BP_EDTYPE,
                  "\"Layer0.running\" changed dtype in the tree since flatten");
    EXPECT_VALUES(other, 0, 0, 0);
    t.running->value = orig;
    bp_tensor_free(other);
    expect_tree_as_built(&t);

    bp_tensor **v2 = (bp_tensor **)0x1;
    size_t n2 = 7;
    bp_tree_def *d2 = (bp_tree_def *)0x1;
    BP_EXPECT_ERR(bp_node_tree_flatten(NULL, &v2, &n2, &d2), BP_EINVAL, "tree_flatten: node is NULL");
    assert_null(v2);
    assert_int_equal(n2, 0);
    assert_null(d2);
    BP_EXPECT_ERR(bp_node_tree_flatten(t.root, NULL, &n2, &d2), BP_EINVAL, "tree_flatten: NULL output");
    bp_tree_values_free(vals, n);
    bp_tree_def_free(def);
    bp_node_free(t.root);
}

static void test_state_tree_flatten_of_a_tree_without_vars(void **state)
{
    (void)state;
    bp_node *n;
    BP_OK_OR_FAIL(bp_node_create(&n, &plain_class, NULL, NULL));
    bp_tensor **vals;
    size_t count = 9;
    bp_tree_def *def;
    BP_OK_OR_FAIL(bp_node_tree_flatten(n, &vals, &count, &def));
    assert_int_equal(count, 0);
    assert_int_equal(bp_tree_def_len(def), 0);
    bp_node *out;
    BP_OK_OR_FAIL(bp_tree_unflatten(def, vals, 0, &out));
    assert_ptr_equal(out, n);
    bp_node_free(out);
    bp_tree_values_free(vals, count);
    bp_tree_def_free(def);
    bp_node_free(n);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_dict_set_get_order_and_kinds),
        T(test_dict_replace_in_place_and_remove),
        T(test_dict_argument_errors),
        T(test_state_dict_nested_per_node_with_empty_dicts),
        T(test_state_save_state_is_own_vars_only),
        T(test_state_save_state_lists_a_shared_var_once),
        T(test_state_load_state_flat_intersection),
        T(test_state_load_state_dict_v2_round_trip),
        T(test_state_load_state_dict_v2_missing_and_unexpected_clean_keys),
        T(test_state_load_state_dict_v2_absent_and_unknown_nodes),
        T(test_state_load_state_dict_warns_unexpected_then_missing),
        T(test_state_load_shape_mismatch_is_eshape_and_tree_unchanged),
        T(test_state_load_dtype_mismatch_is_edtype_and_tree_unchanged),
        T(test_state_load_state_dict_format_errors),
        T(test_state_load_state_dict_v1_flat_absolute_keys),
        T(test_state_tree_flatten_unflatten_round_trip),
        T(test_state_tree_unflatten_errors_leave_tree_unchanged),
        T(test_state_tree_flatten_of_a_tree_without_vars),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
