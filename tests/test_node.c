/* tests/test_node.c — the node/variable tree (BrainPy 2.8.2 §2.1–2.5, 2.10–2.12).
 *
 * The test defines its own node classes:
 *   Plain  — no hooks at all (no update: update() is BP_EUNSUPPORTED);
 *   Layer  — supports (BatchingMode, TrainingMode), class default
 *            BatchingMode(batch_size=4), reads the shared context, counts its
 *            resets / clear_inputs / updates;
 *   Net    — any mode, counts like Layer;
 *   Broken — its reset_state fails;
 *   Strict — supports BatchingMode only, no class default (takes the global mode).
 *
 * Every expected key list below is worked out by hand from BrainPy's
 * _find_nodes / vars code: self, direct children in declaration order,
 * implicit nodes last, then recursion; (parent, child) edges followed once. */
#include "bp_test.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <bpc/node.h>

/* ------------------------------------------------------------ test classes */

typedef struct counted {
    bp_node base;
    int resets, clears, updates;
    bool saw_fit;
} counted;

static char reset_log[16][64];
static int n_reset_log;
static int n_destroyed;

static bp_status counted_reset(bp_node *self)
{
    counted *c = (counted *)self;
    c->resets++;
    if (n_reset_log < 16) snprintf(reset_log[n_reset_log++], sizeof reset_log[0], "%s", bp_node_name(self));
    return BP_OK;
}

static void counted_clear(bp_node *self) { ((counted *)self)->clears++; }
static void counted_destroy(bp_node *self) { (void)self; n_destroyed++; }

/* out = 2 * x; records whether the shared context said fit. */
static bp_status layer_update(bp_node *self, bp_tensor *x, bp_tensor **out)
{
    counted *c = (counted *)self;
    c->updates++;
    c->saw_fit = bp_share_fit();
    BP_TRY(bp_tensor_clone(out, x));
    for (int64_t i = 0; i < x->numel; i++) bp_tensor_set(*out, i, 2.0 * bp_tensor_get(x, i));
    return BP_OK;
}

static bp_status broken_reset(bp_node *self)
{
    return bp_fail(BP_ESTATE, "%s: reset_state refused", bp_node_name(self));
}

static const bp_mode_kind layer_modes[] = {BP_BATCHING_MODE, BP_TRAINING_MODE};
static const bp_mode layer_default = {BP_BATCHING_MODE, 4};
static const bp_mode_kind strict_modes[] = {BP_BATCHING_MODE};

static const bp_node_class plain_class = {.name = "Plain", .size = sizeof(bp_node)};
static const bp_node_class layer_class = {
    .name = "Layer",
    .size = sizeof(counted),
    .supported_modes = layer_modes,
    .n_supported_modes = 2,
    .default_mode = &layer_default,
    .reads_shared = true,
    .update = layer_update,
    .reset_state = counted_reset,
    .clear_input = counted_clear,
    .destroy = counted_destroy,
};
static const bp_node_class net_class = {
    .name = "Net",
    .size = sizeof(counted),
    .reset_state = counted_reset,
    .clear_input = counted_clear,
    .destroy = counted_destroy,
};
static const bp_node_class broken_class = {.name = "Broken", .size = sizeof(bp_node), .reset_state = broken_reset};
static const bp_node_class strict_class = {
    .name = "Strict", .size = sizeof(bp_node), .supported_modes = strict_modes, .n_supported_modes = 1};

/* ------------------------------------------------------------------ helpers */

static bp_tensor *vec_(size_t n, const double *v)
{
    int64_t shape[1] = {(int64_t)n};
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_FLOAT32, 1, shape));
    for (size_t i = 0; i < n; i++) bp_tensor_set(t, (int64_t)i, v[i]);
    return t;
}
#define VEC(...) vec_(sizeof((double[]){__VA_ARGS__}) / sizeof(double), (double[]){__VA_ARGS__})

/* Declares attr on n holding a new var with value t; drops the caller's t. */
static bp_var *add_var(bp_node *n, const char *attr, bp_var_kind kind, bp_tensor *t)
{
    bp_var *v = NULL;
    BP_OK_OR_FAIL(bp_node_add_var(n, attr, kind, t, &v));
    bp_tensor_free(t);
    return v;
}

static bp_node *make(const bp_node_class *cls, const char *name)
{
    bp_node *n = NULL;
    BP_OK_OR_FAIL(bp_node_create(&n, cls, name, NULL));
    return n;
}

static void expect_keys_(const bp_collector *c, const char *const *want, size_t n, const char *what)
{
    size_t len = bp_collector_len(c);
    bool ok = len == n;
    for (size_t i = 0; ok && i < n; i++) ok = strcmp(bp_collector_key(c, i), want[i]) == 0;
    if (ok) return;
    char got[4096] = "", exp[4096] = "";
    size_t at = 0;
    for (size_t i = 0; i < len && at < sizeof got; i++)
        at += (size_t)snprintf(got + at, sizeof got - at, "%s'%s'", i ? ", " : "", bp_collector_key(c, i));
    at = 0;
    for (size_t i = 0; i < n && at < sizeof exp; i++)
        at += (size_t)snprintf(exp + at, sizeof exp - at, "%s'%s'", i ? ", " : "", want[i]);
    fail_msg("%s:\n  got      [%s]\n  expected [%s]", what, got, exp);
}
#define EXPECT_KEYS(c, ...)                                                      \
    do {                                                                         \
        const char *const want_[] = {__VA_ARGS__};                               \
        expect_keys_((c), want_, sizeof want_ / sizeof want_[0], #c);            \
    } while (0)

static bp_collect_opts opts(bp_path_method m, int level, bool include_self, unsigned exclude)
{
    bp_collect_opts o = bp_collect_defaults();
    o.method = m;
    o.level = level;
    o.include_self = include_self;
    o.exclude_kinds = exclude;
    return o;
}

static int fresh_names(void **state)
{
    (void)state;
    bp_clear_name_cache();
    bp_set_mode(bp_nonbatching_mode());
    bp_share_clear();
    bp_clear_error();
    n_reset_log = 0;
    n_destroyed = 0;
    return 0;
}

/* ------------------------------------------------------------- the tree
 *
 *   Net0 (root)
 *     w       TrainVar [1, 2]
 *     a       -> Layer0 { weight TrainVar [0.5,0.5,0.5], running Variable [0,0,0], shared -> Layer1 }
 *     count   Variable [0]
 *     blocks  NodeList [Plain0 { p TrainVar [3], shared -> Layer1 }, Plain1 {}]
 *     hist    VarList  [Variable [10], Variable [11]]
 *     implicit vars:  var<address of iv> -> Variable [20],  ema -> Variable [21]
 *     implicit nodes: Plain2 (keyed by its name) { q Variable [5, 6] },  extra -> Plain3 {}
 *   Layer1 { v Variable [7] } is shared by Layer0 and Plain0. */
typedef struct tree {
    bp_node *root, *a, *s, *b0, *b1, *imp, *ext;
    bp_var *w, *count, *weight, *running, *v, *p, *q, *hist[2], *iv, *ema;
    char iv_key[64];
} tree;

static void tree_build(tree *t)
{
    memset(t, 0, sizeof *t);
    t->root = make(&net_class, NULL);
    t->a = make(&layer_class, NULL);
    t->s = make(&layer_class, NULL);
    t->b0 = make(&plain_class, NULL);
    t->b1 = make(&plain_class, NULL);
    t->imp = make(&plain_class, NULL);
    t->ext = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(t->root), "Net0");
    assert_string_equal(bp_node_name(t->a), "Layer0");
    assert_string_equal(bp_node_name(t->s), "Layer1");
    assert_string_equal(bp_node_name(t->ext), "Plain3");

    t->v = add_var(t->s, "v", BP_VARIABLE, VEC(7));
    t->weight = add_var(t->a, "weight", BP_TRAINVAR, VEC(0.5, 0.5, 0.5));
    t->running = add_var(t->a, "running", BP_VARIABLE, VEC(0, 0, 0));
    BP_OK_OR_FAIL(bp_node_add_child(t->a, "shared", t->s));
    t->p = add_var(t->b0, "p", BP_TRAINVAR, VEC(3));
    BP_OK_OR_FAIL(bp_node_add_child(t->b0, "shared", t->s));
    t->q = add_var(t->imp, "q", BP_VARIABLE, VEC(5, 6));

    t->w = add_var(t->root, "w", BP_TRAINVAR, VEC(1, 2));
    BP_OK_OR_FAIL(bp_node_add_child(t->root, "a", t->a));
    t->count = add_var(t->root, "count", BP_VARIABLE, VEC(0));
    bp_node *blocks[2] = {t->b0, t->b1};
    BP_OK_OR_FAIL(bp_node_add_child_list(t->root, "blocks", 2, blocks));
    for (int i = 0; i < 2; i++) {
        bp_tensor *h = VEC(10 + i);
        BP_OK_OR_FAIL(bp_var_new(&t->hist[i], BP_VARIABLE, h));
        bp_tensor_free(h);
    }
    BP_OK_OR_FAIL(bp_node_add_var_list(t->root, "hist", 2, t->hist));
    bp_tensor *x = VEC(20);
    BP_OK_OR_FAIL(bp_var_new(&t->iv, BP_VARIABLE, x));
    bp_tensor_free(x);
    x = VEC(21);
    BP_OK_OR_FAIL(bp_var_new(&t->ema, BP_VARIABLE, x));
    bp_tensor_free(x);
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(t->root, 1, NULL, &t->iv));
    const char *ema_key[] = {"ema"};
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(t->root, 1, ema_key, &t->ema));
    snprintf(t->iv_key, sizeof t->iv_key, "var%llu", (unsigned long long)(uintptr_t)t->iv);
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(t->root, 1, NULL, &t->imp));
    const char *ext_key[] = {"extra"};
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(t->root, 1, ext_key, &t->ext));
}

/* Drops the test's own references; the root then frees the whole tree. */
static void tree_free(tree *t)
{
    bp_var_free(t->hist[0]);
    bp_var_free(t->hist[1]);
    bp_var_free(t->iv);
    bp_var_free(t->ema);
    bp_node_free(t->a);
    bp_node_free(t->s);
    bp_node_free(t->b0);
    bp_node_free(t->b1);
    bp_node_free(t->imp);
    bp_node_free(t->ext);
    bp_node_free(t->root);
}

/* ================================================================== names */

static void test_node_auto_names_count_per_class(void **state)
{
    (void)state;
    bp_node *p0 = make(&plain_class, NULL), *l0 = make(&layer_class, NULL);
    bp_node *p1 = make(&plain_class, NULL), *l1 = make(&layer_class, NULL);
    assert_string_equal(bp_node_name(p0), "Plain0");
    assert_string_equal(bp_node_name(l0), "Layer0");
    assert_string_equal(bp_node_name(p1), "Plain1");
    assert_string_equal(bp_node_name(l1), "Layer1");
    assert_string_equal(bp_node_class_name(l1), "Layer");
    assert_string_equal(bp_node_class_name(p0), "Plain");
    assert_null(bp_node_name(NULL));
    assert_null(bp_node_class_name(NULL));
    bp_node_free(p0);
    bp_node_free(p1);
    bp_node_free(l0);
    bp_node_free(l1);
    assert_int_equal(n_destroyed, 2); /* Layer's destroy hook ran once per layer */
}

static void test_node_user_name_is_kept_and_uses_no_counter(void **state)
{
    (void)state;
    bp_node *enc = make(&plain_class, "encoder");
    assert_string_equal(bp_node_name(enc), "encoder");
    bp_node *p = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(p), "Plain0");
    bp_node *u = make(&plain_class, "_private_2");
    assert_string_equal(bp_node_name(u), "_private_2");
    bp_node_free(enc);
    bp_node_free(p);
    bp_node_free(u);
}

static void test_node_invalid_identifier_names_are_ename(void **state)
{
    (void)state;
    const char *bad[] = {"1abc", "a-b", "", "has space", "dot.ted", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bp_node *n = (bp_node *)0x1;
        char want[64];
        snprintf(want, sizeof want, "\"%s\" isn't a valid identifier", bad[i]);
        const char *needle = want; /* a pointer: bp_test.h tests needle for NULL */
        BP_EXPECT_ERR(bp_node_create(&n, &plain_class, bad[i], NULL), BP_ENAME, needle);
        assert_null(n);
    }
    assert_false(bp_is_identifier(NULL));
    assert_true(bp_is_identifier("_"));
    assert_true(bp_is_identifier("Z9_z"));
    /* the failed creations consumed no counter */
    bp_node *p = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(p), "Plain0");
    bp_node_free(p);
}

static void test_node_name_longer_than_255_is_ename(void **state)
{
    (void)state;
    char name[300];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    bp_node *n;
    BP_EXPECT_ERR(bp_node_create(&n, &plain_class, name, NULL), BP_ENAME, "longer than 255 characters");
    name[255] = '\0'; /* 255 characters fit */
    BP_OK_OR_FAIL(bp_node_create(&n, &plain_class, name, NULL));
    assert_int_equal(strlen(bp_node_name(n)), 255);
    bp_node_free(n);
}

static void test_node_name_clash_with_live_node_is_ename(void **state)
{
    (void)state;
    bp_node *net = make(&layer_class, "net");
    bp_node *other = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_node_create(&other, &plain_class, "net", NULL), BP_ENAME,
                  "each object should have a unique name. \"net\" is already used by a live Layer");
    assert_null(other);
    assert_string_equal(bp_node_name(net), "net"); /* the live node keeps it */
    bp_node_free(net);
}

static void test_node_freed_node_frees_its_name_but_not_its_counter(void **state)
{
    (void)state;
    bp_node *net = make(&plain_class, "net");
    bp_node_free(net);
    net = make(&plain_class, "net"); /* free again, as BrainPy 2.8.2's weak references */
    assert_string_equal(bp_node_name(net), "net");
    bp_node_free(net);

    bp_node *p0 = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(p0), "Plain0");
    bp_node_free(p0);
    bp_node *p1 = make(&plain_class, NULL); /* counters never decrease */
    assert_string_equal(bp_node_name(p1), "Plain1");
    /* but the freed automatic name can be taken by hand */
    bp_node *again = make(&plain_class, "Plain0");
    bp_node_free(again);
    bp_node_free(p1);
}

static void test_node_auto_name_colliding_with_user_name_errors_without_skipping(void **state)
{
    (void)state;
    bp_node *taken = make(&plain_class, "Plain0");
    bp_node *n = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_node_create(&n, &plain_class, NULL, NULL), BP_ENAME, "\"Plain0\" is already used");
    assert_null(n);
    /* the counter advanced past the failed name, as get_unique_name does */
    n = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(n), "Plain1");
    bp_node_free(n);
    bp_node_free(taken);
}

static void test_node_clear_name_cache_resets_counters_and_reservations(void **state)
{
    (void)state;
    bp_node *p0 = make(&plain_class, NULL), *p1 = make(&plain_class, NULL);
    bp_node *keep = make(&plain_class, "keep");
    bp_node_free(p0);
    bp_node_free(p1);
    bp_clear_name_cache();
    bp_node *n = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(n), "Plain0");
    /* live nodes keep their names but no longer reserve them */
    bp_node *keep2 = make(&plain_class, "keep");
    assert_string_equal(bp_node_name(keep), "keep");
    assert_string_equal(bp_node_name(keep2), "keep");
    bp_node_free(keep);
    /* keep2's reservation survived freeing the other "keep" */
    bp_node *keep3 = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_node_create(&keep3, &plain_class, "keep", NULL), BP_ENAME, "\"keep\" is already used");
    bp_node_free(keep2);
    bp_node_free(n);
}

static void test_node_set_name_renames_validates_and_frees_old_name(void **state)
{
    (void)state;
    /* a rename of the only live node (the registry holds one entry) */
    bp_node *a = make(&plain_class, NULL);
    BP_OK_OR_FAIL(bp_node_set_name(a, "alpha"));
    assert_string_equal(bp_node_name(a), "alpha");
    bp_node *b = make(&plain_class, "Plain0"); /* the old name is free */
    BP_EXPECT_ERR(bp_node_set_name(b, "alpha"), BP_ENAME, "\"alpha\" is already used by a live Plain");
    assert_string_equal(bp_node_name(b), "Plain0");
    BP_EXPECT_ERR(bp_node_set_name(b, "9lives"), BP_ENAME, "isn't a valid identifier");
    assert_string_equal(bp_node_name(b), "Plain0");
    BP_OK_OR_FAIL(bp_node_set_name(a, "alpha")); /* its own name again */
    assert_string_equal(bp_node_name(a), "alpha");
    BP_OK_OR_FAIL(bp_node_set_name(b, NULL));   /* a fresh automatic name */
    assert_string_equal(bp_node_name(b), "Plain1");
    bp_node *c = make(&plain_class, "Plain0");  /* b released "Plain0" */
    char buf[64];
    assert_string_equal(bp_node_repr(a, buf, sizeof buf), "alpha(mode=NonBatchingMode)");
    BP_EXPECT_ERR(bp_node_set_name(NULL, "x"), BP_EINVAL, "node is NULL");
    bp_node_free(a);
    bp_node_free(b);
    bp_node_free(c);
    /* everything released: all three names are free */
    a = make(&plain_class, "alpha");
    b = make(&plain_class, "Plain1");
    bp_node_free(a);
    bp_node_free(b);
}

static void test_node_unique_name_validates_or_counts(void **state)
{
    (void)state;
    char buf[32];
    BP_OK_OR_FAIL(bp_unique_name(NULL, NULL, "delay", buf, sizeof buf));
    assert_string_equal(buf, "delay0");
    BP_OK_OR_FAIL(bp_unique_name(NULL, NULL, "delay", buf, sizeof buf));
    assert_string_equal(buf, "delay1");
    BP_OK_OR_FAIL(bp_unique_name(NULL, "abc", NULL, buf, sizeof buf));
    assert_string_equal(buf, "abc");

    bp_node *n = make(&plain_class, "held");
    BP_EXPECT_ERR(bp_unique_name(NULL, "held", NULL, buf, sizeof buf), BP_ENAME, "\"held\" is already used");
    BP_OK_OR_FAIL(bp_unique_name(n, "held", NULL, buf, sizeof buf)); /* its own name */
    assert_string_equal(buf, "held");
    /* type NULL with self: the class name's counter (no Plain made yet) */
    BP_OK_OR_FAIL(bp_unique_name(n, NULL, NULL, buf, sizeof buf));
    assert_string_equal(buf, "Plain0");
    bp_node *p = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(p), "Plain1");

    BP_EXPECT_ERR(bp_unique_name(NULL, NULL, "1x", buf, sizeof buf), BP_ENAME, "type \"1x\" must be an identifier");
    BP_EXPECT_ERR(bp_unique_name(NULL, NULL, NULL, buf, sizeof buf), BP_ENAME, "type \"(null)\"");
    BP_EXPECT_ERR(bp_unique_name(NULL, "no way", NULL, buf, sizeof buf), BP_ENAME, "isn't a valid identifier");
    /* a buffer too small: an error, and the counter is not used up */
    char tiny[4];
    BP_EXPECT_ERR(bp_unique_name(NULL, NULL, "delay", tiny, sizeof tiny), BP_EINVAL,
                  "\"delay2\" needs 7 bytes, buffer has 4");
    BP_EXPECT_ERR(bp_unique_name(NULL, "abcdef", NULL, tiny, sizeof tiny), BP_EINVAL, "needs 7 bytes");
    BP_EXPECT_ERR(bp_unique_name(NULL, NULL, "delay", NULL, 8), BP_EINVAL, "buf is NULL");
    BP_OK_OR_FAIL(bp_unique_name(NULL, NULL, "delay", buf, sizeof buf));
    assert_string_equal(buf, "delay2");
    bp_node_free(p);
    bp_node_free(n);
}

/* Two threads naming nodes at once: the registry hands out every automatic
 * name exactly once. */
#define PER_THREAD 200
static void *make_many(void *arg)
{
    bp_node **out = arg;
    for (int i = 0; i < PER_THREAD; i++)
        if (bp_node_create(&out[i], &plain_class, NULL, NULL)) out[i] = NULL;
    return NULL;
}

static void test_node_auto_names_are_unique_across_threads(void **state)
{
    (void)state;
    static bp_node *made[2][PER_THREAD];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) assert_int_equal(pthread_create(&th[t], NULL, make_many, made[t]), 0);
    for (int t = 0; t < 2; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    bool seen[2 * PER_THREAD] = {false};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            assert_non_null(made[t][i]);
            const char *name = bp_node_name(made[t][i]);
            assert_memory_equal(name, "Plain", 5);
            char *end;
            long k = strtol(name + 5, &end, 10);
            assert_true(*end == '\0' && k >= 0 && k < 2 * PER_THREAD);
            if (seen[k]) fail_msg("%s handed out twice", name);
            seen[k] = true;
        }
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < PER_THREAD; i++) bp_node_free(made[t][i]);
    bp_node *n = make(&plain_class, NULL);
    assert_string_equal(bp_node_name(n), "Plain400");
    bp_node_free(n);
}

/* ================================================================== modes */

static void test_node_unsupported_nonbatching_mode_is_emode(void **state)
{
    (void)state;
    bp_node *n = (bp_node *)0x1;
    bp_mode m = bp_nonbatching_mode();
    BP_EXPECT_ERR(bp_node_create(&n, &layer_class, NULL, &m), BP_EMODE,
                  "Layer: The mode only supports computing modes which are parents of "
                  "(BatchingMode, TrainingMode), but we got NonBatchingMode.");
    assert_null(n);
    /* the mode is checked before naming: no counter consumed */
    n = make(&layer_class, NULL);
    assert_string_equal(bp_node_name(n), "Layer0");
    bp_node_free(n);
}

static void test_node_plain_mode_and_supported_modes_pass(void **state)
{
    (void)state;
    bp_node *n;
    bp_mode m = bp_mode_base();
    BP_OK_OR_FAIL(bp_node_create(&n, &layer_class, NULL, &m));
    assert_int_equal(n->mode.kind, BP_MODE);
    bp_node_free(n);
    m = bp_training_mode(3);
    BP_OK_OR_FAIL(bp_node_create(&n, &layer_class, NULL, &m));
    assert_int_equal(n->mode.kind, BP_TRAINING_MODE);
    assert_int_equal(n->mode.batch_size, 3);
    char buf[64];
    assert_string_equal(bp_node_repr(n, buf, sizeof buf), "Layer1(mode=TrainingMode(batch_size=3))");
    bp_node_free(n);
    /* a class without supported modes takes anything */
    m = bp_nonbatching_mode();
    BP_OK_OR_FAIL(bp_node_create(&n, &plain_class, NULL, &m));
    assert_int_equal(n->mode.kind, BP_NONBATCHING_MODE);
    bp_node_free(n);
}

static void test_node_default_mode_from_class_else_global(void **state)
{
    (void)state;
    bp_set_mode(bp_training_mode(2));
    bp_node *layer = make(&layer_class, NULL); /* class default wins over the global mode */
    assert_int_equal(layer->mode.kind, BP_BATCHING_MODE);
    assert_int_equal(layer->mode.batch_size, 4);
    bp_node *plain = make(&plain_class, NULL); /* no class default: the global mode */
    assert_int_equal(plain->mode.kind, BP_TRAINING_MODE);
    assert_int_equal(plain->mode.batch_size, 2);
    char buf[64];
    assert_string_equal(bp_node_repr(layer, buf, sizeof buf), "Layer0(mode=BatchingMode(batch_size=4))");
    assert_string_equal(bp_node_repr(plain, buf, sizeof buf), "Plain0(mode=TrainingMode(batch_size=2))");
    assert_string_equal(bp_node_repr(NULL, buf, sizeof buf), "(null)");
    bp_node_free(layer);
    bp_node_free(plain);

    /* Strict supports BatchingMode only and has no class default */
    bp_set_mode(bp_nonbatching_mode());
    bp_node *s = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_node_create(&s, &strict_class, NULL, NULL), BP_EMODE,
                  "parents of (BatchingMode), but we got NonBatchingMode.");
    assert_null(s);
    bp_set_mode(bp_training_mode(6)); /* TrainingMode is not a parent of BatchingMode */
    BP_EXPECT_ERR(bp_node_create(&s, &strict_class, NULL, NULL), BP_EMODE,
                  "but we got TrainingMode(batch_size=6).");
    bp_set_mode(bp_batching_mode(3));
    s = make(&strict_class, NULL);
    assert_int_equal(s->mode.kind, BP_BATCHING_MODE);
    assert_int_equal(s->mode.batch_size, 3);
    bp_node_free(s);
    bp_set_mode(bp_nonbatching_mode());
}

static void test_node_set_mode_checks_supported_modes(void **state)
{
    (void)state;
    bp_node *n = make(&layer_class, NULL);
    BP_EXPECT_ERR(bp_node_set_mode(n, bp_nonbatching_mode()), BP_EMODE,
                  "Layer0: The mode only supports computing modes which are parents of");
    assert_int_equal(n->mode.kind, BP_BATCHING_MODE); /* unchanged */
    assert_int_equal(n->mode.batch_size, 4);
    BP_OK_OR_FAIL(bp_node_set_mode(n, bp_training_mode(8)));
    assert_int_equal(n->mode.kind, BP_TRAINING_MODE);
    assert_int_equal(n->mode.batch_size, 8);
    BP_EXPECT_ERR(bp_node_set_mode(n, (bp_mode){(bp_mode_kind)42, 1}), BP_EINVAL,
                  "mode kind must be a bp_mode_kind, got 42");
    assert_int_equal(n->mode.kind, BP_TRAINING_MODE);
    BP_EXPECT_ERR(bp_node_set_mode(NULL, bp_training_mode(8)), BP_EINVAL, "node is NULL");
    bp_node *m = (bp_node *)0x1;
    bp_mode bad = {(bp_mode_kind)-3, 0};
    BP_EXPECT_ERR(bp_node_create(&m, &plain_class, NULL, &bad), BP_EINVAL, "got -3");
    assert_null(m);
    bp_node_free(n);
}

static void test_node_create_rejects_bad_arguments(void **state)
{
    (void)state;
    bp_node *n = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_node_create(NULL, &plain_class, NULL, NULL), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_node_create(&n, NULL, NULL, NULL), BP_EINVAL, "class is NULL or unnamed");
    assert_null(n);
    static const bp_node_class unnamed = {.size = sizeof(bp_node)};
    BP_EXPECT_ERR(bp_node_create(&n, &unnamed, NULL, NULL), BP_EINVAL, "class is NULL or unnamed");
    static const bp_node_class tiny = {.name = "Tiny", .size = 4};
    BP_EXPECT_ERR(bp_node_create(&n, &tiny, NULL, NULL), BP_EINVAL, "Tiny.size is 4, smaller than bp_node");
    static const bp_node_class badname = {.name = "Bad Name", .size = sizeof(bp_node)};
    BP_EXPECT_ERR(bp_node_create(&n, &badname, NULL, NULL), BP_ENAME, "\"Bad Name0\" isn't a valid identifier");
}

/* =========================================================== attributes */

static void test_node_attribute_declaration_errors(void **state)
{
    (void)state;
    bp_node *n = make(&plain_class, NULL), *k = make(&plain_class, NULL);
    bp_var *w = add_var(n, "w", BP_TRAINVAR, VEC(1));
    bp_tensor *t = VEC(2);
    bp_var *got = (bp_var *)0x1;
    BP_EXPECT_ERR(bp_node_add_var(n, "w", BP_VARIABLE, t, &got), BP_ENAME, "Plain0: attribute \"w\" is already declared");
    assert_null(got);
    BP_EXPECT_ERR(bp_node_add_var(n, "2w", BP_VARIABLE, t, NULL), BP_ENAME, "attribute name \"2w\" is not an identifier");
    BP_EXPECT_ERR(bp_node_add_var(n, NULL, BP_VARIABLE, t, NULL), BP_ENAME, "\"(null)\" is not an identifier");
    BP_EXPECT_ERR(bp_node_add_var(n, "z", (bp_var_kind)3, t, NULL), BP_EINVAL, "kind must be BP_VARIABLE or BP_TRAINVAR, got 3");
    BP_EXPECT_ERR(bp_node_add_var(n, "z", BP_VARIABLE, NULL, NULL), BP_EINVAL, "value is NULL");
    BP_EXPECT_ERR(bp_node_add_var(NULL, "z", BP_VARIABLE, t, NULL), BP_EINVAL, "node is NULL");
    BP_EXPECT_ERR(bp_node_add_child(n, "w", k), BP_ENAME, "already declared");
    BP_EXPECT_ERR(bp_node_add_child(n, "self", n), BP_EINVAL, "a node cannot be its own child");
    BP_EXPECT_ERR(bp_node_add_child(n, "kid", NULL), BP_EINVAL, "child \"kid\" is NULL");
    bp_node *list[2] = {k, NULL};
    BP_EXPECT_ERR(bp_node_add_child_list(n, "kids", 2, list), BP_EINVAL, "node list \"kids\": item 1 is NULL");
    list[1] = n;
    BP_EXPECT_ERR(bp_node_add_child_list(n, "kids", 2, list), BP_EINVAL, "a node cannot be its own child");
    bp_var *vl[2] = {w, NULL};
    BP_EXPECT_ERR(bp_node_add_var_list(n, "ws", 2, vl), BP_EINVAL, "var list \"ws\": item 1 is NULL");
    BP_EXPECT_ERR(bp_node_attach_var(n, "alias", NULL), BP_EINVAL, "attach_var \"alias\": var is NULL");
    BP_EXPECT_ERR(bp_node_attach_var(n, "w", w), BP_ENAME, "already declared");
    /* none of the failures declared anything */
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &c));
    EXPECT_KEYS(c, "Plain0.w");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_nodes(n, NULL, &c));
    EXPECT_KEYS(c, "Plain0");
    bp_collector_free(c);

    /* lookups: by kind of attribute */
    BP_OK_OR_FAIL(bp_node_add_child(n, "kid", k));
    BP_OK_OR_FAIL(bp_node_add_var_list(n, "ws", 1, vl));
    assert_ptr_equal(bp_node_var(n, "w"), w);
    assert_null(bp_node_var(n, "kid"));
    assert_null(bp_node_var(n, "ws")); /* a list is not a single var */
    assert_null(bp_node_var(n, "nope"));
    assert_null(bp_node_var(NULL, "w"));
    assert_null(bp_node_var(n, NULL));
    assert_ptr_equal(bp_node_child(n, "kid"), k);
    assert_null(bp_node_child(n, "w"));
    assert_null(bp_node_child(n, "nope"));
    bp_tensor_free(t);
    bp_node_free(k);
    bp_node_free(n);
}

static void test_node_register_implicit_vars_keys_and_errors(void **state)
{
    (void)state;
    bp_node *n = make(&plain_class, NULL);
    bp_tensor *t = VEC(1);
    bp_var *a, *b;
    BP_OK_OR_FAIL(bp_var_new(&a, BP_VARIABLE, t));
    BP_OK_OR_FAIL(bp_var_new(&b, BP_TRAINVAR, t));
    bp_tensor_free(t);
    const char *keys[] = {"k", NULL};
    bp_var *both[2] = {a, b};
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(n, 2, keys, both));
    char bkey[64];
    snprintf(bkey, sizeof bkey, "Plain0.var%llu", (unsigned long long)(uintptr_t)b);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &c));
    EXPECT_KEYS(c, "Plain0.k", bkey);
    assert_ptr_equal(bp_collector_var(c, 0), a);
    assert_ptr_equal(bp_collector_var(c, 1), b);
    bp_collector_free(c);
    /* the same var under the same key again is a no-op */
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(n, 1, keys, &a));
    /* another var under a bound key conflicts */
    BP_EXPECT_ERR(bp_node_register_implicit_vars(n, 1, keys, &b), BP_ECONFLICT,
                  "Plain0: implicit var key \"k\" is already bound to another var");
    bp_var *nul[1] = {NULL};
    BP_EXPECT_ERR(bp_node_register_implicit_vars(n, 1, NULL, nul), BP_EINVAL, "var 0 is NULL");
    BP_EXPECT_ERR(bp_node_register_implicit_vars(NULL, 1, NULL, &a), BP_EINVAL, "node is NULL");
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &c));
    assert_int_equal(bp_collector_len(c), 2);
    bp_collector_free(c);
    bp_var_free(a);
    bp_var_free(b);
    bp_node_free(n);
}

static void test_node_register_implicit_nodes_keys_and_errors(void **state)
{
    (void)state;
    bp_node *n = make(&plain_class, NULL), *x = make(&plain_class, NULL), *y = make(&plain_class, NULL);
    const char *keys[] = {NULL, "why"};
    bp_node *both[2] = {x, y};
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(n, 2, keys, both));
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(n, &o, &c));
    EXPECT_KEYS(c, "", "Plain1", "why");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(n, 1, &keys[1], &y)); /* same again: no-op */
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(n, 1, &keys[1], &x), BP_ECONFLICT,
                  "Plain0: implicit node key \"why\" is already bound to another node");
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(n, 1, NULL, &n), BP_EINVAL, "cannot be its own implicit node");
    bp_node *nul[1] = {NULL};
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(n, 1, NULL, nul), BP_EINVAL, "node 0 is NULL");
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(NULL, 1, NULL, &x), BP_EINVAL, "node is NULL");
    BP_OK_OR_FAIL(bp_node_nodes(n, &o, &c));
    EXPECT_KEYS(c, "", "Plain1", "why");
    bp_collector_free(c);
    bp_node_free(x);
    bp_node_free(y);
    bp_node_free(n);
}

static void test_node_implicit_registration_is_all_or_nothing(void **state)
{
    (void)state;
    bp_node *n = make(&plain_class, NULL), *x = make(&plain_class, NULL), *y = make(&plain_class, NULL);
    bp_tensor *t = VEC(1);
    bp_var *a, *b, *c;
    BP_OK_OR_FAIL(bp_var_new(&a, BP_VARIABLE, t));
    BP_OK_OR_FAIL(bp_var_new(&b, BP_VARIABLE, t));
    BP_OK_OR_FAIL(bp_var_new(&c, BP_VARIABLE, t));
    bp_tensor_free(t);
    const char *k1[] = {"k"};
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(n, 1, k1, &a));
    /* the second item conflicts with what n holds: the first is not registered either */
    const char *k2[] = {"fresh", "k"};
    bp_var *bc[2] = {b, c};
    BP_EXPECT_ERR(bp_node_register_implicit_vars(n, 2, k2, bc), BP_ECONFLICT, "implicit var key \"k\" is already bound");
    /* two different vars under one key within one call */
    const char *k3[] = {"dup", "dup"};
    BP_EXPECT_ERR(bp_node_register_implicit_vars(n, 2, k3, bc), BP_ECONFLICT,
                  "Plain0: implicit var key \"dup\" is given twice for different vars");
    bp_var *bb[2] = {b, b}; /* the same var twice is fine */
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(n, 2, k3, bb));
    bp_collector *col;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &col));
    EXPECT_KEYS(col, "Plain0.k", "Plain0.dup");
    bp_collector_free(col);

    const char *kn[] = {"p", "p"};
    bp_node *xy[2] = {x, y};
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(n, 2, kn, xy), BP_ECONFLICT,
                  "implicit node key \"p\" is given twice for different nodes");
    const char *kn2[] = {"q", NULL};
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(n, 1, kn2, &x));
    bp_node *yx[2] = {y, x};
    const char *kn3[] = {"r", "q"};
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(n, 2, kn3, yx)); /* x under "q" again: no-op */
    const char *kn4[] = {"s", "q"};
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(n, 2, kn4, (bp_node *[]){x, y}), BP_ECONFLICT,
                  "implicit node key \"q\" is already bound to another node");
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    BP_OK_OR_FAIL(bp_node_nodes(n, &o, &col));
    EXPECT_KEYS(col, "", "q", "r"); /* "s" was not registered */
    bp_collector_free(col);
    bp_var_free(a);
    bp_var_free(b);
    bp_var_free(c);
    bp_node_free(x);
    bp_node_free(y);
    bp_node_free(n);
}

static void test_node_edges_that_would_make_a_cycle_are_refused(void **state)
{
    (void)state;
    bp_node *top = make(&plain_class, NULL), *mid = make(&plain_class, NULL), *leaf = make(&plain_class, NULL);
    BP_OK_OR_FAIL(bp_node_add_child(top, "mid", mid));
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(mid, 1, NULL, &leaf));
    /* leaf -> top would close top -> mid -> leaf -> top */
    BP_EXPECT_ERR(bp_node_add_child(leaf, "up", top), BP_EINVAL,
                  "Plain2: child Plain0 is an ancestor of it (a cycle would never be freed)");
    BP_EXPECT_ERR(bp_node_add_child_list(leaf, "ups", 1, &mid), BP_EINVAL, "child Plain1 is an ancestor of it");
    BP_EXPECT_ERR(bp_node_register_implicit_nodes(leaf, 1, NULL, &top), BP_EINVAL,
                  "implicit node Plain0 is an ancestor of it");
    /* a second path to the same descendant is not a cycle */
    BP_OK_OR_FAIL(bp_node_add_child(top, "leaf", leaf));
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(top, NULL, &c));
    EXPECT_KEYS(c, "Plain0", "Plain1", "Plain2");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_nodes(leaf, NULL, &c));
    EXPECT_KEYS(c, "Plain2"); /* nothing was attached to leaf */
    bp_collector_free(c);
    bp_node_free(leaf);
    bp_node_free(mid);
    bp_node_free(top); /* everything freed: valgrind sees no leak */
}

/* ================================================================= nodes() */

static void test_node_nodes_absolute_order(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(t.root, NULL, &c));
    /* self; direct children a, blocks-0, blocks-1, then implicit Plain2, extra;
     * then recursion: Layer0 adds Layer1; Plain0's edge to Layer1 adds nothing new */
    EXPECT_KEYS(c, "Net0", "Layer0", "Plain0", "Plain1", "Plain2", "Plain3", "Layer1");
    assert_ptr_equal(bp_collector_node(c, 0), t.root);
    assert_ptr_equal(bp_collector_node(c, 1), t.a);
    assert_ptr_equal(bp_collector_node(c, 4), t.imp);
    assert_ptr_equal(bp_collector_node(c, 5), t.ext);
    assert_ptr_equal(bp_collector_node(c, 6), t.s);
    assert_null(bp_collector_var(c, 0)); /* a node collector has no vars */
    assert_null(bp_collector_node(c, 7));
    assert_null(bp_collector_key(c, 7));
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_nodes_relative_keys(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    /* the shared Layer1 appears under both paths: the edges (Layer0, Layer1)
     * and (Plain0, Layer1) are different */
    EXPECT_KEYS(c, "", "a", "blocks-0", "blocks-1", "Plain2", "extra", "a.shared", "blocks-0.shared");
    assert_ptr_equal(bp_collector_node(c, 6), t.s);
    assert_ptr_equal(bp_collector_node(c, 7), t.s);
    assert_ptr_equal(bp_collector_node(c, 2), t.b0);
    bp_collector *u;
    BP_OK_OR_FAIL(bp_collector_unique(c, &u));
    EXPECT_KEYS(u, "", "a", "blocks-0", "blocks-1", "Plain2", "extra", "a.shared");
    bp_collector_free(u);
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_nodes_levels_and_include_self(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_collector *c;
    bp_collect_opts o = opts(BP_ABSOLUTE, 0, true, 0);
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0");
    bp_collector_free(c);
    o.level = 1;
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0", "Layer0", "Plain0", "Plain1", "Plain2", "Plain3");
    bp_collector_free(c);
    o.level = 2;
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0", "Layer0", "Plain0", "Plain1", "Plain2", "Plain3", "Layer1");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, -1, false, 0); /* drops the root only */
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    EXPECT_KEYS(c, "Layer0", "Plain0", "Plain1", "Plain2", "Plain3", "Layer1");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, 0, false, 0);
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    assert_int_equal(bp_collector_len(c), 0);
    bp_collector_free(c);
    o = opts(BP_RELATIVE, 1, true, 0);
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    EXPECT_KEYS(c, "", "a", "blocks-0", "blocks-1", "Plain2", "extra");
    bp_collector_free(c);
    o = opts(BP_RELATIVE, -1, false, 0);
    BP_OK_OR_FAIL(bp_node_nodes(t.root, &o, &c));
    EXPECT_KEYS(c, "a", "blocks-0", "blocks-1", "Plain2", "extra", "a.shared", "blocks-0.shared");
    bp_collector_free(c);
    /* from an inner node */
    o = opts(BP_ABSOLUTE, -1, true, 0);
    BP_OK_OR_FAIL(bp_node_nodes(t.b0, &o, &c));
    EXPECT_KEYS(c, "Plain0", "Layer1");
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_nodes_rejects_bad_options(void **state)
{
    (void)state;
    bp_node *n = make(&plain_class, NULL);
    bp_collector *c = (bp_collector *)0x1;
    bp_collect_opts o = opts((bp_path_method)7, -1, true, 0);
    BP_EXPECT_ERR(bp_node_nodes(n, &o, &c), BP_EINVAL, "nodes: No support for the method of \"7\"");
    assert_null(c);
    BP_EXPECT_ERR(bp_node_vars(n, &o, &c), BP_EINVAL, "vars: No support for the method of \"7\"");
    o = opts(BP_ABSOLUTE, -2, true, 0);
    BP_EXPECT_ERR(bp_node_nodes(n, &o, &c), BP_EINVAL, "level must be >= -1, got -2");
    BP_EXPECT_ERR(bp_node_nodes(NULL, NULL, &c), BP_EINVAL, "nodes: node is NULL");
    BP_EXPECT_ERR(bp_node_nodes(n, NULL, NULL), BP_EINVAL, "nodes: out is NULL");
    BP_EXPECT_ERR(bp_node_vars(n, NULL, NULL), BP_EINVAL, "vars: out is NULL");
    BP_EXPECT_ERR(bp_node_train_vars(NULL, NULL, &c), BP_EINVAL, "vars: node is NULL");
    assert_null(c);
    bp_collect_opts d = bp_collect_defaults();
    assert_int_equal(d.method, BP_ABSOLUTE);
    assert_int_equal(d.level, -1);
    assert_true(d.include_self);
    assert_int_equal(d.exclude_kinds, 0);
    bp_node_free(n);
}

static void test_node_same_child_under_two_attrs_is_followed_once(void **state)
{
    (void)state;
    bp_node *root = make(&plain_class, NULL), *k = make(&plain_class, NULL);
    add_var(k, "v", BP_VARIABLE, VEC(1));
    BP_OK_OR_FAIL(bp_node_add_child(root, "first", k));
    BP_OK_OR_FAIL(bp_node_add_child(root, "second", k));
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(root, 1, NULL, &k));
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_nodes(root, &o, &c));
    EXPECT_KEYS(c, "", "first"); /* the edge (root, k) is followed once */
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_vars(root, &o, &c));
    EXPECT_KEYS(c, "first.v");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_nodes(root, NULL, &c));
    EXPECT_KEYS(c, "Plain0", "Plain1");
    bp_collector_free(c);
    bp_node_free(k);
    bp_node_free(root);
}

/* ================================================================== vars() */

static void test_node_vars_absolute_keys_and_order(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    char iv[80];
    snprintf(iv, sizeof iv, "Net0.%s", t.iv_key);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(t.root, NULL, &c));
    EXPECT_KEYS(c, "Net0.w", "Net0.count", "Net0.hist-0", "Net0.hist-1", iv, "Net0.ema", "Layer0.weight",
                "Layer0.running", "Plain0.p", "Plain2.q", "Layer1.v");
    bp_var *want[] = {t.w, t.count, t.hist[0], t.hist[1], t.iv, t.ema, t.weight, t.running, t.p, t.q, t.v};
    for (size_t i = 0; i < 11; i++) assert_ptr_equal(bp_collector_var(c, i), want[i]);
    assert_null(bp_collector_node(c, 0)); /* a var collector has no nodes */
    assert_int_equal(bp_collector_find(c, "Layer0.running"), 7);
    assert_int_equal(bp_collector_find(c, "Layer0.nope"), -1);
    assert_int_equal(bp_collector_find(c, NULL), -1);
    assert_int_equal(bp_collector_find(NULL, "Net0.w"), -1);
    assert_int_equal(bp_collector_len(NULL), 0);
    /* the values are the declared ones */
    BP_ASSERT_CLOSE(bp_tensor_get(bp_collector_var(c, 1)->value, 0), 0.0, 0, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(bp_collector_var(c, 3)->value, 0), 11.0, 0, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(bp_collector_var(c, 9)->value, 1), 6.0, 0, 0);
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_vars_relative_keys(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    /* root vars plain (bpc: also the var list and implicit vars, see node.h) */
    EXPECT_KEYS(c, "w", "count", "hist-0", "hist-1", t.iv_key, "ema", "a.weight", "a.running", "blocks-0.p",
                "Plain2.q", "a.shared.v", "blocks-0.shared.v");
    assert_ptr_equal(bp_collector_var(c, 10), t.v);
    assert_ptr_equal(bp_collector_var(c, 11), t.v);
    bp_collector *u;
    BP_OK_OR_FAIL(bp_collector_unique(c, &u));
    EXPECT_KEYS(u, "w", "count", "hist-0", "hist-1", t.iv_key, "ema", "a.weight", "a.running", "blocks-0.p",
                "Plain2.q", "a.shared.v");
    bp_collector_free(u);
    bp_collector_free(c);
    /* relative from an inner node: "<child attr>.<var>" */
    BP_OK_OR_FAIL(bp_node_vars(t.a, &o, &c));
    EXPECT_KEYS(c, "weight", "running", "shared.v");
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_node_list_items_relative_var_keys(void **state)
{
    (void)state;
    bp_node *root = make(&plain_class, NULL), *x = make(&plain_class, NULL), *y = make(&plain_class, NULL);
    add_var(x, "attr", BP_TRAINVAR, VEC(1));
    add_var(y, "attr", BP_VARIABLE, VEC(2));
    bp_node *items[2] = {x, y};
    BP_OK_OR_FAIL(bp_node_add_child_list(root, "list", 2, items));
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(root, &o, &c));
    EXPECT_KEYS(c, "list-0.attr", "list-1.attr");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_node_vars(root, NULL, &c));
    EXPECT_KEYS(c, "Plain1.attr", "Plain2.attr");
    bp_collector_free(c);
    bp_node_free(x);
    bp_node_free(y);
    bp_node_free(root);
}

static void test_node_vars_level_include_self_and_exclude_kinds(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    char iv[80];
    snprintf(iv, sizeof iv, "Net0.%s", t.iv_key);
    bp_collector *c;
    bp_collect_opts o = opts(BP_ABSOLUTE, 0, true, 0);
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0.w", "Net0.count", "Net0.hist-0", "Net0.hist-1", iv, "Net0.ema");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, 1, true, 0);
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0.w", "Net0.count", "Net0.hist-0", "Net0.hist-1", iv, "Net0.ema", "Layer0.weight",
                "Layer0.running", "Plain0.p", "Plain2.q");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, -1, false, 0);
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "Layer0.weight", "Layer0.running", "Plain0.p", "Plain2.q", "Layer1.v");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, -1, true, BP_TRAINVAR);
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0.count", "Net0.hist-0", "Net0.hist-1", iv, "Net0.ema", "Layer0.running", "Plain2.q",
                "Layer1.v");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, -1, true, BP_VARIABLE); /* every var is a Variable */
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    assert_int_equal(bp_collector_len(c), 0);
    bp_collector_free(c);
    o = opts(BP_RELATIVE, -1, false, BP_TRAINVAR);
    BP_OK_OR_FAIL(bp_node_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "a.running", "Plain2.q", "a.shared.v", "blocks-0.shared.v");
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_train_vars_absolute_and_relative(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_train_vars(t.root, NULL, &c));
    EXPECT_KEYS(c, "Net0.w", "Layer0.weight", "Plain0.p");
    assert_ptr_equal(bp_collector_var(c, 1), t.weight);
    bp_collector_free(c);
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    BP_OK_OR_FAIL(bp_node_train_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "w", "a.weight", "blocks-0.p");
    bp_collector_free(c);
    o = opts(BP_ABSOLUTE, 0, true, 0);
    BP_OK_OR_FAIL(bp_node_train_vars(t.root, &o, &c));
    EXPECT_KEYS(c, "Net0.w");
    bp_collector_free(c);
    tree_free(&t);
}

static void test_node_collector_subset_not_subset_unique_class(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    char iv[80];
    snprintf(iv, sizeof iv, "Net0.%s", t.iv_key);
    bp_collector *all, *c;
    BP_OK_OR_FAIL(bp_node_vars(t.root, NULL, &all));
    BP_OK_OR_FAIL(bp_collector_subset(all, BP_TRAINVAR, &c));
    EXPECT_KEYS(c, "Net0.w", "Layer0.weight", "Plain0.p");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_collector_not_subset(all, BP_TRAINVAR, &c));
    EXPECT_KEYS(c, "Net0.count", "Net0.hist-0", "Net0.hist-1", iv, "Net0.ema", "Layer0.running", "Plain2.q",
                "Layer1.v");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_collector_subset(all, BP_VARIABLE, &c));
    assert_int_equal(bp_collector_len(c), 11);
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_collector_not_subset(all, BP_VARIABLE | BP_TRAINVAR, &c));
    assert_int_equal(bp_collector_len(c), 0);
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_collector_unique(all, &c)); /* absolute keys: nothing aliased */
    assert_int_equal(bp_collector_len(c), 11);
    bp_collector_free(c);

    bp_collector *nodes;
    BP_OK_OR_FAIL(bp_node_nodes(t.root, NULL, &nodes));
    BP_OK_OR_FAIL(bp_collector_subset_class(nodes, &layer_class, &c));
    EXPECT_KEYS(c, "Layer0", "Layer1");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_collector_subset_class(nodes, &plain_class, &c));
    EXPECT_KEYS(c, "Plain0", "Plain1", "Plain2", "Plain3");
    bp_collector_free(c);
    BP_OK_OR_FAIL(bp_collector_subset_class(nodes, &broken_class, &c));
    assert_int_equal(bp_collector_len(c), 0);
    bp_collector_free(c);

    /* the wrong kind of collector, NULLs */
    c = (bp_collector *)0x1;
    BP_EXPECT_ERR(bp_collector_subset(nodes, BP_TRAINVAR, &c), BP_EINVAL,
                  "collector_subset: the collector holds nodes, expected variables");
    assert_null(c);
    BP_EXPECT_ERR(bp_collector_not_subset(nodes, BP_TRAINVAR, &c), BP_EINVAL, "holds nodes");
    BP_EXPECT_ERR(bp_collector_subset_class(all, &layer_class, &c), BP_EINVAL,
                  "collector_subset_class: the collector holds variables, expected nodes");
    BP_EXPECT_ERR(bp_collector_subset_class(nodes, NULL, &c), BP_EINVAL, "class is NULL");
    BP_EXPECT_ERR(bp_collector_unique(NULL, &c), BP_EINVAL, "collector is NULL");
    BP_EXPECT_ERR(bp_collector_unique(all, NULL), BP_EINVAL, "out is NULL");
    bp_collector_free(nodes);
    bp_collector_free(all);
    bp_collector_free(NULL);
    tree_free(&t);
}

static void test_node_collector_conflict_two_objects_under_one_key(void **state)
{
    (void)state;
    bp_node *root = make(&plain_class, NULL), *x = make(&plain_class, NULL), *y = make(&plain_class, NULL);
    bp_var *w = add_var(root, "w", BP_VARIABLE, VEC(1));
    bp_tensor *t = VEC(2);
    bp_var *other;
    BP_OK_OR_FAIL(bp_var_new(&other, BP_VARIABLE, t));
    bp_tensor_free(t);
    const char *wk[] = {"w"};
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(root, 1, wk, &other));
    bp_collector *c = (bp_collector *)0x1;
    BP_EXPECT_ERR(bp_node_vars(root, NULL, &c), BP_ECONFLICT,
                  "Name \"Plain0.w\" conflicts: the same name is bound to two different variables.");
    assert_null(c);
    /* the same var under the attribute and the implicit key is not a conflict */
    const char *ak[] = {"alias"};
    BP_OK_OR_FAIL(bp_node_register_implicit_vars(x, 1, ak, &w));
    BP_OK_OR_FAIL(bp_node_attach_var(x, "alias", w));
    BP_OK_OR_FAIL(bp_node_vars(x, NULL, &c));
    EXPECT_KEYS(c, "Plain1.alias");
    bp_collector_free(c);

    /* relative nodes: an attribute child and an implicit node under one key */
    BP_OK_OR_FAIL(bp_node_add_child(y, "sub", x));
    bp_node *z = make(&plain_class, NULL);
    const char *sk[] = {"sub"};
    BP_OK_OR_FAIL(bp_node_register_implicit_nodes(y, 1, sk, &z));
    bp_collect_opts o = opts(BP_RELATIVE, -1, true, 0);
    BP_EXPECT_ERR(bp_node_nodes(y, &o, &c), BP_ECONFLICT, "Name \"sub\" conflicts: the same name is bound to two different nodes.");
    BP_OK_OR_FAIL(bp_node_nodes(y, NULL, &c)); /* absolute keys are the distinct names */
    EXPECT_KEYS(c, "Plain2", "Plain1", "Plain3");
    bp_collector_free(c);

    /* absolute nodes: two live nodes with one name (possible after clearing the cache) */
    bp_node *top = make(&plain_class, "top"), *d1 = make(&plain_class, "dup");
    bp_clear_name_cache();
    bp_node *d2 = make(&plain_class, "dup");
    BP_OK_OR_FAIL(bp_node_add_child(top, "d1", d1));
    BP_OK_OR_FAIL(bp_node_add_child(top, "d2", d2));
    BP_EXPECT_ERR(bp_node_nodes(top, NULL, &c), BP_ECONFLICT, "Name \"dup\" conflicts");
    BP_EXPECT_ERR(bp_node_reset(top), BP_ECONFLICT, "Name \"dup\" conflicts");
    o = opts(BP_RELATIVE, -1, true, 0);
    BP_OK_OR_FAIL(bp_node_nodes(top, &o, &c));
    EXPECT_KEYS(c, "", "d1", "d2");
    bp_collector_free(c);

    bp_var_free(other);
    bp_node_free(top);
    bp_node_free(d1);
    bp_node_free(d2);
    bp_node_free(z);
    bp_node_free(x);
    bp_node_free(y);
    bp_node_free(root);
}

/* ======================================================= update and reset */

static void test_node_update_dispatch(void **state)
{
    (void)state;
    bp_node *p = make(&plain_class, NULL), *l = make(&layer_class, NULL);
    bp_tensor *x = VEC(1, -2, 3), *y = (bp_tensor *)0x1;
    BP_EXPECT_ERR(bp_node_update(p, x, &y), BP_EUNSUPPORTED, "Plain0: class Plain has no update()");
    assert_null(y);
    BP_OK_OR_FAIL(bp_node_update(l, x, &y));
    assert_int_equal(y->numel, 3);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 0), 2.0, 0, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 1), -4.0, 0, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 2), 6.0, 0, 0);
    assert_int_equal(((counted *)l)->updates, 1);
    bp_tensor_free(y);
    BP_EXPECT_ERR(bp_node_update(l, x, NULL), BP_EINVAL, "Layer0: update: out is NULL");
    BP_EXPECT_ERR(bp_node_update(NULL, x, &y), BP_EINVAL, "update: node is NULL");
    assert_int_equal(((counted *)l)->updates, 1);
    bp_tensor_free(x);
    bp_node_free(p);
    bp_node_free(l);
}

static void test_node_call_saves_shared_args_before_update(void **state)
{
    (void)state;
    bp_node *l = make(&layer_class, NULL);
    counted *c = (counted *)l;
    bp_tensor *x = VEC(1), *y;
    bp_shared_args fit = {.has_fit = true, .fit = true, .has_i = true, .i = 3};
    BP_OK_OR_FAIL(bp_node_call(l, &fit, x, &y));
    assert_true(c->saw_fit);
    assert_int_equal(bp_share_i(), 3);
    BP_ASSERT_CLOSE(bp_tensor_get(y, 0), 2.0, 0, 0);
    bp_tensor_free(y);
    /* NULL shared: the context is left as it is */
    BP_OK_OR_FAIL(bp_node_call(l, NULL, x, &y));
    assert_true(c->saw_fit);
    bp_tensor_free(y);
    bp_shared_args eval = {.has_fit = true, .fit = false};
    BP_OK_OR_FAIL(bp_node_call(l, &eval, x, &y));
    assert_false(c->saw_fit);
    bp_tensor_free(y);
    assert_int_equal(c->updates, 3);
    /* bad shared args: nothing saved, update not run */
    bp_shared_args bad = {.has_fit = true, .fit = true, .has_dt = true, .dt = -1};
    y = (bp_tensor *)0x1;
    BP_EXPECT_ERR(bp_node_call(l, &bad, x, &y), BP_EINVAL, "dt must be > 0");
    assert_int_equal(c->updates, 3);
    assert_false(bp_share_fit());
    bp_node *p = make(&plain_class, NULL);
    BP_EXPECT_ERR(bp_node_call(p, &fit, x, &y), BP_EUNSUPPORTED, "has no update()");
    assert_true(bp_share_fit()); /* saved before dispatch, as __call__ */
    bp_tensor_free(x);
    bp_node_free(p);
    bp_node_free(l);
}

static void test_node_pass_shared_follows_class(void **state)
{
    (void)state;
    bp_node *p = make(&plain_class, NULL), *l = make(&layer_class, NULL);
    assert_true(bp_node_pass_shared(l));
    assert_false(bp_node_pass_shared(p));
    assert_false(bp_node_pass_shared(NULL));
    bp_node_free(p);
    bp_node_free(l);
}

static void test_node_reset_visits_every_unique_node_in_order(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    BP_OK_OR_FAIL(bp_node_reset(t.root));
    /* nodes() order; the shared Layer1 once; Plain nodes have no hook */
    assert_int_equal(n_reset_log, 3);
    assert_string_equal(reset_log[0], "Net0");
    assert_string_equal(reset_log[1], "Layer0");
    assert_string_equal(reset_log[2], "Layer1");
    assert_int_equal(((counted *)t.s)->resets, 1);
    /* reset_state: the node's own hook only */
    n_reset_log = 0;
    BP_OK_OR_FAIL(bp_node_reset_state(t.root));
    assert_int_equal(n_reset_log, 1);
    assert_string_equal(reset_log[0], "Net0");
    assert_int_equal(((counted *)t.a)->resets, 1);
    BP_OK_OR_FAIL(bp_node_reset_state(t.b0)); /* no hook: nothing to do */
    BP_EXPECT_ERR(bp_node_reset_state(NULL), BP_EINVAL, "reset_state: node is NULL");
    BP_EXPECT_ERR(bp_node_reset(NULL), BP_EINVAL, "reset: node is NULL");
    tree_free(&t);
}

static void test_node_reset_stops_at_first_failing_hook(void **state)
{
    (void)state;
    bp_node *root = make(&net_class, NULL), *b = make(&broken_class, NULL), *l = make(&layer_class, NULL);
    BP_OK_OR_FAIL(bp_node_add_child(root, "b", b));
    BP_OK_OR_FAIL(bp_node_add_child(root, "l", l));
    BP_EXPECT_ERR(bp_node_reset(root), BP_ESTATE, "Broken0: reset_state refused");
    assert_int_equal(((counted *)root)->resets, 1);
    assert_int_equal(((counted *)l)->resets, 0);
    bp_node_free(b);
    bp_node_free(l);
    bp_node_free(root);
}

static void test_node_clear_input_and_zero_grad_over_tree(void **state)
{
    (void)state;
    tree t;
    tree_build(&t);
    bp_node_clear_input(t.root);
    assert_int_equal(((counted *)t.root)->clears, 1);
    assert_int_equal(((counted *)t.a)->clears, 1);
    assert_int_equal(((counted *)t.s)->clears, 1); /* shared, once */
    bp_node_clear_input(t.a); /* a subtree only */
    assert_int_equal(((counted *)t.root)->clears, 1);
    assert_int_equal(((counted *)t.a)->clears, 2);
    assert_int_equal(((counted *)t.s)->clears, 2);
    bp_node_clear_input(NULL); /* ignored */

    bp_var *tv[] = {t.w, t.weight, t.p};
    for (int i = 0; i < 3; i++) bp_tensor_fill(tv[i]->grad, 5.0);
    assert_null(t.count->grad);
    bp_node_zero_grad(t.root);
    for (int i = 0; i < 3; i++)
        for (int64_t j = 0; j < tv[i]->grad->numel; j++) BP_ASSERT_CLOSE(bp_tensor_get(tv[i]->grad, j), 0.0, 0, 0);
    /* the values are untouched */
    BP_ASSERT_CLOSE(bp_tensor_get(t.w->value, 1), 2.0, 0, 0);
    BP_ASSERT_CLOSE(bp_tensor_get(t.weight->value, 2), 0.5, 0, 0);
    bp_tensor_fill(t.p->grad, 1.0);
    bp_node_zero_grad(t.a); /* only Layer0's subtree */
    BP_ASSERT_CLOSE(bp_tensor_get(t.p->grad, 0), 1.0, 0, 0);
    bp_node_zero_grad(NULL);
    tree_free(&t);
}

/* ================================================================ devices */

static void test_node_to_device(void **state)
{
    (void)state;
    bp_node *n = make(&plain_class, NULL);
    BP_OK_OR_FAIL(bp_node_to(n, "cpu"));
    BP_OK_OR_FAIL(bp_node_cpu(n));
    BP_EXPECT_ERR(bp_node_cuda(n), BP_EUNSUPPORTED, "Plain0: to(\"cuda\"): device not available in this build");
    BP_EXPECT_ERR(bp_node_tpu(n), BP_EUNSUPPORTED, "to(\"tpu\"): device not available in this build");
    BP_EXPECT_ERR(bp_node_to(n, "gpu"), BP_EUNSUPPORTED, "not available in this build");
    BP_EXPECT_ERR(bp_node_to(n, "fpga"), BP_EINVAL, "to: unknown device \"fpga\"");
    BP_EXPECT_ERR(bp_node_to(n, "CPU"), BP_EINVAL, "unknown device \"CPU\"");
    BP_EXPECT_ERR(bp_node_to(n, NULL), BP_EINVAL, "device is NULL");
    BP_EXPECT_ERR(bp_node_to(NULL, "cpu"), BP_EINVAL, "to: node is NULL");
    bp_node_free(n);
}

/* ============================================================== variables */

static void test_node_trainvar_carries_grad_wired_to_value(void **state)
{
    (void)state;
    int64_t shape[2] = {2, 3};
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_full(&t, BP_FLOAT32, 2, shape, 1.5));
    bp_var *v;
    BP_OK_OR_FAIL(bp_var_new(&v, BP_TRAINVAR, t));
    assert_int_equal(v->kind, BP_TRAINVAR);
    assert_ptr_equal(v->value, t); /* the var holds the tensor itself */
    assert_int_equal(t->refcount, 2);
    assert_non_null(v->grad);
    assert_true(bp_tensor_has_shape(v->grad, 2, shape));
    assert_int_equal(v->grad->dtype, BP_FLOAT32);
    for (int64_t i = 0; i < 6; i++) BP_ASSERT_CLOSE(bp_tensor_get(v->grad, i), 0.0, 0, 0);
    assert_true(v->value->requires_grad);
    assert_ptr_equal(v->value->grad, v->grad);
    assert_true(bp_var_is(v, BP_TRAINVAR));
    assert_true(bp_var_is(v, BP_VARIABLE));
    assert_false(bp_var_is(v, 0));
    assert_string_equal(bp_var_kind_name(v->kind), "TrainVar");
    bp_tensor_fill(v->grad, 3.0);
    bp_var_zero_grad(v);
    BP_ASSERT_CLOSE(bp_tensor_get(v->grad, 5), 0.0, 0, 0);
    assert_ptr_equal(bp_var_retain(v), v);
    assert_int_equal(v->refcount, 2);
    bp_var_free(v);
    assert_ptr_equal(t->grad, v->grad); /* still alive */
    bp_var_free(v);
    /* the var is gone but the caller's tensor lives: its grad link is cut */
    assert_null(t->grad);
    assert_int_equal(t->refcount, 1);
    bp_tensor_free(t);

    bp_tensor *u = VEC(1, 2);
    BP_OK_OR_FAIL(bp_var_new(&v, BP_VARIABLE, u));
    assert_null(v->grad);
    assert_false(v->value->requires_grad);
    assert_false(bp_var_is(v, BP_TRAINVAR));
    assert_true(bp_var_is(v, BP_VARIABLE | BP_TRAINVAR));
    assert_false(bp_var_is(NULL, BP_VARIABLE));
    assert_string_equal(bp_var_kind_name(v->kind), "Variable");
    bp_var_zero_grad(v); /* no-op */
    bp_var_zero_grad(NULL);
    bp_var_free(v);
    bp_var_free(NULL);
    assert_null(bp_var_retain(NULL));
    bp_var *bad = (bp_var *)0x1;
    BP_EXPECT_ERR(bp_var_new(&bad, (bp_var_kind)0, u), BP_EINVAL, "got 0");
    assert_null(bad);
    BP_EXPECT_ERR(bp_var_new(&bad, BP_VARIABLE, NULL), BP_EINVAL, "value is NULL");
    BP_EXPECT_ERR(bp_var_new(NULL, BP_VARIABLE, u), BP_EINVAL, "out is NULL");
    bp_tensor_free(u);
}

static void test_node_var_assign_checks_shape_and_dtype(void **state)
{
    (void)state;
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2};
    const float vals[6] = {1, 2, 3, 4, 5, 6};
    bp_tensor *t, *same, *wrong_shape, *wrong_dtype;
    BP_OK_OR_FAIL(bp_tensor_full(&t, BP_FLOAT32, 2, s23, 0.25));
    BP_OK_OR_FAIL(bp_tensor_from_data(&same, BP_FLOAT32, 2, s23, vals));
    BP_OK_OR_FAIL(bp_tensor_full(&wrong_shape, BP_FLOAT32, 2, s32, 9));
    BP_OK_OR_FAIL(bp_tensor_full(&wrong_dtype, BP_FLOAT64, 2, s23, 9));
    bp_var *v;
    BP_OK_OR_FAIL(bp_var_new(&v, BP_VARIABLE, t));
    BP_EXPECT_ERR(bp_var_assign(v, wrong_shape), BP_ESHAPE,
                  "The shape of the original data is (2,3), while we got (3,2).");
    BP_EXPECT_ERR(bp_var_assign(v, wrong_dtype), BP_EDTYPE,
                  "The dtype of the original data is float32, while we got float64.");
    for (int64_t i = 0; i < 6; i++) BP_ASSERT_CLOSE(bp_tensor_get(v->value, i), 0.25, 0, 0);
    BP_OK_OR_FAIL(bp_var_assign(v, same));
    assert_ptr_equal(v->value, t); /* the identity is kept, the elements copied */
    for (int64_t i = 0; i < 6; i++) BP_ASSERT_CLOSE(bp_tensor_get(v->value, i), vals[i], 0, 0);
    bp_tensor_fill(same, -1);
    BP_ASSERT_CLOSE(bp_tensor_get(v->value, 0), 1.0, 0, 0);
    BP_EXPECT_ERR(bp_var_assign(v, NULL), BP_EINVAL, "var_assign: NULL value");
    BP_EXPECT_ERR(bp_var_assign(NULL, same), BP_EINVAL, "var_assign: NULL variable");
    bp_var_free(v);
    bp_tensor_free(t);
    bp_tensor_free(same);
    bp_tensor_free(wrong_shape);
    bp_tensor_free(wrong_dtype);
}

/* ======================================================== reference counts */

static void test_node_parent_keeps_child_alive(void **state)
{
    (void)state;
    bp_node *parent = make(&net_class, NULL), *kid = make(&layer_class, "kid");
    BP_OK_OR_FAIL(bp_node_add_child(parent, "k", kid));
    assert_ptr_equal(bp_node_retain(kid), kid);
    bp_node_free(kid);
    bp_node_free(kid); /* the caller's reference is gone */
    assert_int_equal(n_destroyed, 0);
    bp_node *k = bp_node_child(parent, "k");
    assert_non_null(k);
    assert_string_equal(bp_node_name(k), "kid");
    bp_node *again = (bp_node *)0x1;
    BP_EXPECT_ERR(bp_node_create(&again, &plain_class, "kid", NULL), BP_ENAME, "\"kid\" is already used");
    bp_node_free(parent); /* frees the child with it */
    assert_int_equal(n_destroyed, 2);
    again = make(&plain_class, "kid");
    bp_node_free(again);
    bp_node_free(NULL);
    assert_null(bp_node_retain(NULL));
}

static void test_node_collector_keeps_items_alive(void **state)
{
    (void)state;
    bp_node *root = make(&net_class, NULL), *kid = make(&layer_class, NULL);
    bp_var *v = add_var(kid, "v", BP_VARIABLE, VEC(4));
    BP_OK_OR_FAIL(bp_node_add_child(root, "kid", kid));
    bp_node_free(kid);
    bp_collector *nodes, *vars;
    BP_OK_OR_FAIL(bp_node_nodes(root, NULL, &nodes));
    BP_OK_OR_FAIL(bp_node_vars(root, NULL, &vars));
    bp_node_free(root);
    assert_int_equal(n_destroyed, 0);
    assert_string_equal(bp_node_name(bp_collector_node(nodes, 1)), "Layer0");
    bp_collector_free(nodes);
    assert_int_equal(n_destroyed, 2);
    assert_ptr_equal(bp_collector_var(vars, 0), v);
    BP_ASSERT_CLOSE(bp_tensor_get(bp_collector_var(vars, 0)->value, 0), 4.0, 0, 0);
    bp_collector_free(vars);
}

static void test_node_attached_var_is_shared_between_nodes(void **state)
{
    (void)state;
    bp_node *a = make(&plain_class, NULL), *b = make(&plain_class, NULL);
    bp_var *v = add_var(a, "w", BP_TRAINVAR, VEC(1, 2));
    BP_OK_OR_FAIL(bp_node_attach_var(b, "tied", v));
    assert_ptr_equal(bp_node_var(b, "tied"), v);
    bp_node_free(a);
    /* b still holds it */
    BP_ASSERT_CLOSE(bp_tensor_get(bp_node_var(b, "tied")->value, 1), 2.0, 0, 0);
    assert_int_equal(v->refcount, 1);
    bp_node_free(b);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, fresh_names)
    const struct CMUnitTest tests[] = {
        T(test_node_auto_names_count_per_class),
        T(test_node_user_name_is_kept_and_uses_no_counter),
        T(test_node_invalid_identifier_names_are_ename),
        T(test_node_name_longer_than_255_is_ename),
        T(test_node_name_clash_with_live_node_is_ename),
        T(test_node_freed_node_frees_its_name_but_not_its_counter),
        T(test_node_auto_name_colliding_with_user_name_errors_without_skipping),
        T(test_node_clear_name_cache_resets_counters_and_reservations),
        T(test_node_set_name_renames_validates_and_frees_old_name),
        T(test_node_unique_name_validates_or_counts),
        T(test_node_auto_names_are_unique_across_threads),
        T(test_node_unsupported_nonbatching_mode_is_emode),
        T(test_node_plain_mode_and_supported_modes_pass),
        T(test_node_default_mode_from_class_else_global),
        T(test_node_set_mode_checks_supported_modes),
        T(test_node_create_rejects_bad_arguments),
        T(test_node_attribute_declaration_errors),
        T(test_node_register_implicit_vars_keys_and_errors),
        T(test_node_register_implicit_nodes_keys_and_errors),
        T(test_node_implicit_registration_is_all_or_nothing),
        T(test_node_edges_that_would_make_a_cycle_are_refused),
        T(test_node_nodes_absolute_order),
        T(test_node_nodes_relative_keys),
        T(test_node_nodes_levels_and_include_self),
        T(test_node_nodes_rejects_bad_options),
        T(test_node_same_child_under_two_attrs_is_followed_once),
        T(test_node_vars_absolute_keys_and_order),
        T(test_node_vars_relative_keys),
        T(test_node_node_list_items_relative_var_keys),
        T(test_node_vars_level_include_self_and_exclude_kinds),
        T(test_node_train_vars_absolute_and_relative),
        T(test_node_collector_subset_not_subset_unique_class),
        T(test_node_collector_conflict_two_objects_under_one_key),
        T(test_node_update_dispatch),
        T(test_node_call_saves_shared_args_before_update),
        T(test_node_pass_shared_follows_class),
        T(test_node_reset_visits_every_unique_node_in_order),
        T(test_node_reset_stops_at_first_failing_hook),
        T(test_node_clear_input_and_zero_grad_over_tree),
        T(test_node_to_device),
        T(test_node_trainvar_carries_grad_wired_to_value),
        T(test_node_var_assign_checks_shape_and_dtype),
        T(test_node_parent_keeps_child_alive),
        T(test_node_collector_keeps_items_alive),
        T(test_node_attached_var_is_shared_between_nodes),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
