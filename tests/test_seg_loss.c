/* tests/test_seg_loss.c — segmentation losses and the Dice score
 * (autograd/ops_seg_loss.c) against PyTorch (tests/data/seg_loss.txt, written
 * by tests/gen_seg_loss.py: torch's cross_entropy with weight/ignore_index,
 * MONAI's soft Dice formula in torch autograd), hand-worked cases, float64
 * gradient checks, and the errors.
 *
 * BPC_TEST_BOTH_FLAVOURS: in float32 the losses and gradients match to
 * 2e-6 relative (sums in double, one float32 rounding of logits and of each
 * gradient element); in float64 to 1e-12, and bp_gradcheck runs.
 * BPC_TEST_BOTH_FLAVOURS */
#include "bp_test.h"
#include "fixture.h"
#include <stdlib.h>
#include <bpc/autograd.h>
#include <bpc/ops.h>
#include <bpc/gradcheck.h>

#ifdef BP_REAL_DOUBLE
#define TOL 1e-12
#else
#define TOL 2e-6
#endif
#define IGNORE 255

static fx_file *g_fx;

/* The fixture as a tensor; with grad non-NULL, a leaf whose gradient goes to
 * a new zeroed *grad (the caller frees both). */
static bp_tensor *real_tensor(const fx_tensor *f, bp_tensor **grad)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_REAL_DTYPE, f->ndim, f->shape));
    for (int64_t i = 0; i < f->numel; i++) ((bp_real *)t->data)[i] = (bp_real)f->data[i];
    if (grad) {
        BP_OK_OR_FAIL(bp_tensor_new(grad, BP_REAL_DTYPE, f->ndim, f->shape));
        BP_OK_OR_FAIL(bp_ag_make_leaf(t, *grad));
    }
    return t;
}

static bp_tensor *label_tensor(const fx_tensor *f)
{
    bp_tensor *t = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_INT64, f->ndim, f->shape));
    for (int64_t i = 0; i < f->numel; i++) ((int64_t *)t->data)[i] = (int64_t)f->data[i];
    return t;
}

static const fx_tensor *fx(const char *prefix, const char *what)
{
    char name[128];
    snprintf(name, sizeof name, "%s_%s", prefix, what);
    const fx_tensor *t = fx_get(g_fx, name);
    if (!t) fail_msg("fixture %s missing", name);
    return t;
}

typedef enum { CE, DICE } loss_kind;

static bp_status run_loss(loss_kind k, bp_tensor **out, bp_tensor *x, bp_tensor *y, const bp_seg_loss_opts *o)
{
    return k == CE ? bp_seg_cross_entropy(out, x, y, o) : bp_soft_dice_loss(out, x, y, o);
}

static void check_against_torch(const char *prefix, loss_kind k, const bp_seg_loss_opts *o)
{
    bp_tensor *gx = NULL, *x = real_tensor(fx(prefix, "logits"), &gx), *y = label_tensor(fx(prefix, "labels")), *l = NULL;
    BP_OK_OR_FAIL(run_loss(k, &l, x, y, o));
    const double want = fx(prefix, "loss")->data[0];
    BP_ASSERT_CLOSE(((bp_real *)l->data)[0], want, TOL * fabs(want), TOL);
    BP_OK_OR_FAIL(bp_backward(l));
    const fx_tensor *g = fx(prefix, "grad");
    const bp_real *dx = gx->data;
    double scale = 0;
    for (int64_t i = 0; i < g->numel; i++) scale = fmax(scale, fabs(g->data[i]));
    for (int64_t i = 0; i < g->numel; i++)
        if (!(fabs((double)dx[i] - g->data[i]) <= TOL * scale))
            fail_msg("%s: d/dlogits[%lld] = %.12g, torch %.12g", prefix, (long long)i, (double)dx[i], g->data[i]);
    bp_tensor_free(l), bp_tensor_free(x), bp_tensor_free(y), bp_tensor_free(gx);
}

static void test_cross_entropy_torch(void **state)
{
    (void)state;
    bp_seg_loss_opts o = bp_seg_loss_defaults();
    check_against_torch("ce_plain", CE, &o);
    o.class_weight = fx_get(g_fx, "ce_weight")->data;
    o.has_ignore = true;
    o.ignore_label = IGNORE;
    check_against_torch("ce_w_ignore", CE, &o);
}

static void test_soft_dice_torch(void **state)
{
    (void)state;
    bp_seg_loss_opts o = bp_seg_loss_defaults();
    check_against_torch("dice_default", DICE, &o);
    o.include_background = false;
    o.batch = true;
    check_against_torch("dice_nobg_batch", DICE, &o);
    o = bp_seg_loss_defaults();
    o.smooth_nr = o.smooth_dr = 1;
    o.has_ignore = true;
    o.ignore_label = IGNORE;
    check_against_torch("dice_smooth_ignore", DICE, &o);
}

/* Hand-worked: two voxels, two classes, logits chosen so softmax is exactly
 * (0.5, 0.5) and labels 0, 1: per class I = 0.5, S = 2, dice = (1 + sn)/(2 + sd);
 * with sn = sd = 0 the loss is 1 - 1/2 = 0.5. CE with all voxels ignored is 0. */
static void test_hand_worked(void **state)
{
    (void)state;
    bp_tensor *x = NULL, *y = NULL, *l = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, (int64_t[]){1, 2, 2}));
    BP_OK_OR_FAIL(bp_tensor_new(&y, BP_INT32, 2, (int64_t[]){1, 2}));
    bp_real *xv = x->data;
    xv[0] = xv[1] = 3, xv[2] = xv[3] = -1;
    ((int32_t *)y->data)[0] = 0, ((int32_t *)y->data)[1] = 1;
    bp_seg_loss_opts o = bp_seg_loss_defaults();
    o.smooth_nr = 0, o.smooth_dr = 1e-300;
    BP_OK_OR_FAIL(bp_soft_dice_loss(&l, x, y, &o));
    BP_ASSERT_CLOSE(((bp_real *)l->data)[0], 0.5, 1e-7, 0);
    bp_tensor_free(l);
    o.has_ignore = true, o.ignore_label = 0;
    ((int32_t *)y->data)[1] = 0;
    BP_OK_OR_FAIL(bp_seg_cross_entropy(&l, x, y, &o));
    assert_true(((bp_real *)l->data)[0] == 0);
    bp_tensor_free(l);
    /* Dice score: predicted (0, 0) by ties to the lower class, labels (0, 1) -> 2/3 and 0 */
    ((int32_t *)y->data)[1] = 1;
    double d[2];
    BP_OK_OR_FAIL(bp_dice_score(x, y, NULL, d));
    BP_ASSERT_CLOSE(d[0], 2.0 / 3.0, 1e-15, 0);
    BP_ASSERT_CLOSE(d[1], 0, 0, 0);
    bp_tensor_free(x), bp_tensor_free(y);
}

static void test_dice_score_torch(void **state)
{
    (void)state;
    bp_tensor *x = real_tensor(fx("score", "logits"), NULL), *y = label_tensor(fx("score", "labels"));
    bp_seg_loss_opts o = bp_seg_loss_defaults();
    o.has_ignore = true, o.ignore_label = IGNORE;
    double d[3];
    BP_OK_OR_FAIL(bp_dice_score(x, y, &o, d));
    for (int c = 0; c < 3; c++) BP_ASSERT_CLOSE(d[c], fx("score", "dice")->data[c], 1e-15, 0);
    /* a class in neither prediction nor labels: NaN */
    bp_tensor *x1 = NULL, *y1 = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x1, BP_REAL_DTYPE, 2, (int64_t[]){1, 3}));
    BP_OK_OR_FAIL(bp_tensor_new(&y1, BP_INT64, 1, (int64_t[]){1}));
    ((bp_real *)x1->data)[0] = 1, ((bp_real *)x1->data)[1] = 0, ((bp_real *)x1->data)[2] = 0;
    ((int64_t *)y1->data)[0] = 0;
    BP_OK_OR_FAIL(bp_dice_score(x1, y1, NULL, d));
    assert_true(d[0] == 1 && isnan(d[1]) && isnan(d[2]));
    bp_tensor_free(x), bp_tensor_free(y), bp_tensor_free(x1), bp_tensor_free(y1);
}

static void test_errors(void **state)
{
    (void)state;
    bp_tensor *x = NULL, *y = NULL, *l = NULL, *yf = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x, BP_REAL_DTYPE, 3, (int64_t[]){2, 3, 4}));
    BP_OK_OR_FAIL(bp_tensor_new(&y, BP_INT32, 2, (int64_t[]){2, 3}));
    BP_OK_OR_FAIL(bp_tensor_new(&yf, BP_REAL_DTYPE, 2, (int64_t[]){2, 3}));
    ((int32_t *)y->data)[4] = 7;
    BP_EXPECT_ERR(bp_seg_cross_entropy(&l, x, y, NULL), BP_EINVAL, "label 7 at voxel 4 is outside [0, 4)");
    bp_seg_loss_opts o = bp_seg_loss_defaults();
    o.has_ignore = true, o.ignore_label = 6;
    BP_EXPECT_ERR(bp_soft_dice_loss(&l, x, y, &o), BP_EINVAL, "and is not the ignore label");
    ((int32_t *)y->data)[4] = 1;
    BP_EXPECT_ERR(bp_seg_cross_entropy(&l, x, yf, NULL), BP_EDTYPE, "labels must be int32 or int64");
    BP_EXPECT_ERR(bp_seg_cross_entropy(&l, x, x, NULL), BP_EDTYPE, "labels must be int32 or int64");
    BP_EXPECT_ERR(bp_seg_cross_entropy(&l, y, y, NULL), BP_EDTYPE, NULL);
    double wbad[4] = {1, -1, 1, 1};
    o = bp_seg_loss_defaults();
    o.class_weight = wbad;
    BP_EXPECT_ERR(bp_seg_cross_entropy(&l, x, y, &o), BP_EINVAL, "class_weight[1] = -1");
    o = bp_seg_loss_defaults();
    o.smooth_dr = 0;
    BP_EXPECT_ERR(bp_soft_dice_loss(&l, x, y, &o), BP_EINVAL, "smooth_dr = 0");
    bp_tensor *x1 = NULL, *y1 = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x1, BP_REAL_DTYPE, 1, (int64_t[]){4}));
    BP_OK_OR_FAIL(bp_tensor_new(&y1, BP_INT32, 0, NULL));
    BP_EXPECT_ERR(bp_soft_dice_loss(&l, x1, y1, NULL), BP_ESHAPE, "expected logits (B, ..., C)");
    bp_tensor *x2 = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&x2, BP_REAL_DTYPE, 3, (int64_t[]){2, 3, 1}));
    o = bp_seg_loss_defaults();
    o.include_background = false;
    ((int32_t *)y->data)[4] = 0;
    BP_EXPECT_ERR(bp_soft_dice_loss(&l, x2, y, &o), BP_EINVAL, "no class to count");
    BP_EXPECT_ERR(bp_soft_dice_loss(&l, x, y1, NULL), BP_ESHAPE, NULL);
    assert_null(l);
    bp_tensor_free(x), bp_tensor_free(y), bp_tensor_free(yf), bp_tensor_free(x1), bp_tensor_free(y1),
        bp_tensor_free(x2);
}

#ifdef BP_REAL_DOUBLE
typedef struct gc_user {
    loss_kind k;
    bp_seg_loss_opts o;
    bp_tensor *labels;
} gc_user;

static bp_status gc_fn(void *user, int n_in, bp_tensor *const *in, bp_tensor **out)
{
    (void)n_in;
    gc_user *u = user;
    return run_loss(u->k, out, in[0], u->labels, &u->o);
}

/* Every fixture case through central differences (the torch gradients are
 * checked above; this proves the backward against the forward itself). */
static void test_gradcheck(void **state)
{
    (void)state;
    const char *pre[] = {"ce_w_ignore", "ce_plain", "dice_default", "dice_nobg_batch", "dice_smooth_ignore"};
    for (int c = 0; c < 5; c++) {
        gc_user u = {.k = c < 2 ? CE : DICE, .o = bp_seg_loss_defaults()};
        if (c == 0) u.o.class_weight = fx_get(g_fx, "ce_weight")->data;
        if (c == 0 || c == 4) u.o.has_ignore = true, u.o.ignore_label = IGNORE;
        if (c == 3) u.o.include_background = false, u.o.batch = true;
        if (c == 4) u.o.smooth_nr = u.o.smooth_dr = 1;
        bp_tensor *gx = NULL, *x = real_tensor(fx(pre[c], "logits"), &gx);
        u.labels = label_tensor(fx(pre[c], "labels"));
        bp_gradcheck_report r;
        BP_OK_OR_FAIL(bp_gradcheck(gc_fn, &u, 1, &x, NULL, &r));
        assert_true(r.passed);
        bp_tensor_free(x), bp_tensor_free(u.labels), bp_tensor_free(gx);
    }
}
#endif

static int load(void **state)
{
    (void)state;
    g_fx = fx_load("seg_loss.txt");
    return g_fx ? 0 : -1;
}
static int unload(void **state)
{
    (void)state;
    fx_free(g_fx);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy_torch),
        cmocka_unit_test(test_soft_dice_torch),
        cmocka_unit_test(test_hand_worked),
        cmocka_unit_test(test_dice_score_torch),
        cmocka_unit_test(test_errors),
#ifdef BP_REAL_DOUBLE
        cmocka_unit_test(test_gradcheck),
#endif
    };
    return cmocka_run_group_tests(tests, load, unload);
}
