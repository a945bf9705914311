/* tests/test_augment.c — patch sampling and augmentation (bpc/augment.h):
 * foreground oversampling, padding, reproducibility, image and label moved
 * together, flips and turns worked by hand, intensity ranges, errors. */
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/augment.h>

/* An image (X, Y, Z, 2): channel 0 = label value, channel 1 = a position code. */
static void make_pair(int64_t X, int64_t Y, int64_t Z, bp_tensor **img, bp_tensor **lab, int64_t fg_voxel)
{
    BP_OK_OR_FAIL(bp_tensor_new(img, BP_FLOAT32, 4, (int64_t[]){X, Y, Z, 2}));
    BP_OK_OR_FAIL(bp_tensor_new(lab, BP_FLOAT32, 3, (int64_t[]){X, Y, Z}));
    float *x = (*img)->data, *l = (*lab)->data;
    for (int64_t v = 0; v < X * Y * Z; v++) {
        l[v] = v == fg_voxel ? 3 : 0;
        x[2 * v] = l[v];
        x[2 * v + 1] = (float)v;
    }
}

static void test_sample_foreground(void **state)
{
    (void)state;
    bp_tensor *img, *lab, *pi = NULL, *pl = NULL;
    const int64_t fg = (5 * 9 + 2) * 7 + 6; /* voxel (5, 2, 6) of a 9 x 9 x 7 volume */
    make_pair(9, 9, 7, &img, &lab, fg);
    bp_rng r;
    bp_rng_seed(&r, 1);
    const int64_t roi[3] = {4, 4, 4};
    for (int t = 0; t < 50; t++) {
        BP_OK_OR_FAIL(bp_sample_patch(img, lab, roi, 1.0, &r, &pi, &pl));
        int64_t hits = 0;
        for (int64_t p = 0; p < pl->numel; p++) {
            hits += ((int32_t *)pl->data)[p] == 3;
            /* image and label come from the same voxel */
            assert_true(((float *)pi->data)[2 * p] == (float)((int32_t *)pl->data)[p]);
        }
        assert_int_equal(hits, 1); /* fg_prob 1: the foreground voxel is in every patch */
        bp_tensor_free(pi), bp_tensor_free(pl);
    }
    /* fg_prob 0: uniform starts; the voxel is in a patch when each start s_d is
     * within [f_d - 3, f_d] of 6 possible starts (x, y) and 4 (z): P = (4/6)(3/6)(4/4)
     * for (5, 2, 6): x starts 2..5 of 0..5 (4), y 0..2 (3), z 3 of 0..3 (1 of 4). */
    int hits = 0, n = 4000;
    for (int t = 0; t < n; t++) {
        BP_OK_OR_FAIL(bp_sample_patch(img, lab, roi, 0.0, &r, &pi, &pl));
        for (int64_t p = 0; p < pl->numel; p++) hits += ((int32_t *)pl->data)[p] == 3;
        bp_tensor_free(pi), bp_tensor_free(pl);
    }
    const double pexp = (4.0 / 6) * (3.0 / 6) * (1.0 / 4); /* = 1/12 */
    const double sd = sqrt(pexp * (1 - pexp) / n);
    BP_ASSERT_CLOSE((double)hits / n, pexp, 5 * sd, 0);
    bp_tensor_free(img), bp_tensor_free(lab);
}

static void test_sample_padding_and_seed(void **state)
{
    (void)state;
    bp_tensor *img, *lab, *a = NULL, *al = NULL, *b = NULL, *bl = NULL;
    make_pair(3, 2, 5, &img, &lab, 4);
    bp_rng r1, r2;
    bp_rng_seed(&r1, 9), bp_rng_seed(&r2, 9);
    const int64_t roi[3] = {4, 4, 4};
    BP_OK_OR_FAIL(bp_sample_patch(img, lab, roi, 0.5, &r1, &a, &al));
    BP_OK_OR_FAIL(bp_sample_patch(img, lab, roi, 0.5, &r2, &b, &bl));
    assert_memory_equal(a->data, b->data, bp_tensor_nbytes(a)); /* same seed, same patch */
    assert_memory_equal(al->data, bl->data, bp_tensor_nbytes(al));
    /* x and y do not fit: zeros past the volume */
    const float *x = a->data;
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 4; j++)
            for (int64_t k = 0; k < 4; k++)
                if (i >= 3 || j >= 2) assert_true(x[((i * 4 + j) * 4 + k) * 2 + 1] == 0);
    /* inside, the position codes are those of one contiguous z run of the volume */
    const float first = x[1];
    for (int64_t k = 1; k < 4; k++) assert_true(x[k * 2 + 1] == first + (float)k);
    bp_tensor_free(a), bp_tensor_free(al), bp_tensor_free(b), bp_tensor_free(bl), bp_tensor_free(img),
        bp_tensor_free(lab);
}

/* 2 x 2 x 1 x 1 image [[a, b], [c, d]] (first index x): a quarter turn gives
 * out[i][j] = in[j][1 - i] = [[b, d], [a, c]]; a flip of x gives [[c, d], [a, b]]. */
static void test_flip_turn_hand_worked(void **state)
{
    (void)state;
    bp_tensor *img = NULL, *lab = NULL;
    BP_OK_OR_FAIL(bp_tensor_new(&img, BP_FLOAT32, 4, (int64_t[]){2, 2, 1, 1}));
    BP_OK_OR_FAIL(bp_tensor_new(&lab, BP_INT32, 3, (int64_t[]){2, 2, 1}));
    bp_augment_opts o = bp_augment_defaults();
    o.scale = o.shift = 0;
    o.flip_prob[0] = o.flip_prob[1] = o.flip_prob[2] = 0;
    o.rot90_prob = 1;
    bp_rng r;
    for (uint64_t seed = 0; seed < 40; seed++) {
        float *x = img->data;
        int32_t *l = lab->data;
        for (int i = 0; i < 4; i++) x[i] = (float)(10 + i), l[i] = 10 + i; /* a b c d */
        bp_rng_seed(&r, seed);
        bp_rng probe = r;
        bp_rng_uniform(&probe), bp_rng_uniform(&probe), bp_rng_uniform(&probe), bp_rng_uniform(&probe);
        const uint64_t quarters = 1 + bp_rng_below(&probe, 3); /* the draw order bpc documents */
        BP_OK_OR_FAIL(bp_augment(img, lab, &o, &r));
        const float turns[4][4] = {{10, 11, 12, 13}, {11, 13, 10, 12}, {13, 12, 11, 10}, {12, 10, 13, 11}};
        for (int i = 0; i < 4; i++) {
            assert_true(x[i] == turns[quarters][i]);
            assert_int_equal(l[i], (int)turns[quarters][i]);
        }
    }
    o.rot90_prob = 0;
    o.flip_prob[0] = 1;
    float *x = img->data;
    for (int i = 0; i < 4; i++) x[i] = (float)(10 + i);
    BP_OK_OR_FAIL(bp_augment(img, NULL, &o, &r));
    const float flipped[4] = {12, 13, 10, 11};
    for (int i = 0; i < 4; i++) assert_true(x[i] == flipped[i]);
    bp_tensor_free(img), bp_tensor_free(lab);
}

/* Every flip and turn moves image and label alike (channel 0 mirrors the
 * label); intensity changes the image as x * s + t with s, t in range. */
static void test_augment_together(void **state)
{
    (void)state;
    bp_tensor *img, *lab, *pi = NULL, *pl = NULL;
    make_pair(8, 8, 6, &img, &lab, 100);
    bp_rng r;
    bp_rng_seed(&r, 4);
    const int64_t roi[3] = {6, 6, 5};
    bp_augment_opts o = bp_augment_defaults();
    o.scale = o.shift = 0;
    for (int t = 0; t < 30; t++) {
        BP_OK_OR_FAIL(bp_sample_patch(img, lab, roi, 0.5, &r, &pi, &pl));
        /* label values everywhere, so the check sees every voxel */
        for (int64_t p = 0; p < pl->numel; p++) {
            ((int32_t *)pl->data)[p] = (int32_t)p;
            ((float *)pi->data)[2 * p] = (float)p;
        }
        BP_OK_OR_FAIL(bp_augment(pi, pl, &o, &r));
        for (int64_t p = 0; p < pl->numel; p++) assert_true(((float *)pi->data)[2 * p] == (float)((int32_t *)pl->data)[p]);
        bp_tensor_free(pi), bp_tensor_free(pl);
    }
    o = bp_augment_defaults();
    o.flip_prob[0] = o.flip_prob[1] = o.flip_prob[2] = o.rot90_prob = 0;
    o.scale = 0.2, o.shift = 0.5;
    BP_OK_OR_FAIL(bp_sample_patch(img, lab, roi, 0, &r, &pi, &pl));
    bp_tensor *copy = NULL;
    BP_OK_OR_FAIL(bp_tensor_clone(&copy, pi));
    BP_OK_OR_FAIL(bp_augment(pi, pl, &o, &r));
    /* two voxels with different values fix s and t */
    const float *a = copy->data, *b = pi->data;
    int64_t i0 = 1, i1 = 3; /* position codes of two voxels (channel 1) differ */
    const double s = (b[i1] - b[i0]) / (a[i1] - a[i0]), t = b[i0] - a[i0] * s;
    assert_true(s >= 0.8 - 1e-5 && s <= 1.2 + 1e-5 && fabs(t) <= 0.5 + 1e-4);
    for (int64_t i = 0; i < pi->numel; i++) BP_ASSERT_CLOSE(b[i], a[i] * s + t, 1e-3, 1e-5);
    bp_tensor_free(copy), bp_tensor_free(pi), bp_tensor_free(pl), bp_tensor_free(img), bp_tensor_free(lab);
}

static void test_errors(void **state)
{
    (void)state;
    bp_tensor *img, *lab, *pi = NULL, *pl = NULL, *bad = NULL;
    make_pair(4, 4, 4, &img, &lab, 0);
    bp_rng r;
    bp_rng_seed(&r, 0);
    BP_EXPECT_ERR(bp_sample_patch(img, lab, (int64_t[]){0, 2, 2}, 0.3, &r, &pi, &pl), BP_EINVAL, "roi[0] = 0");
    BP_EXPECT_ERR(bp_sample_patch(img, lab, (int64_t[]){2, 2, 2}, 1.5, &r, &pi, &pl), BP_EINVAL, "fg_prob = 1.5");
    BP_OK_OR_FAIL(bp_tensor_new(&bad, BP_FLOAT32, 3, (int64_t[]){4, 4, 3}));
    BP_EXPECT_ERR(bp_sample_patch(img, bad, (int64_t[]){2, 2, 2}, 0.3, &r, &pi, &pl), BP_ESHAPE, "label map");
    BP_EXPECT_ERR(bp_sample_patch(bad, lab, (int64_t[]){2, 2, 2}, 0.3, &r, &pi, &pl), BP_ESHAPE, "image (X, Y, Z, C)");
    assert_null(pi);
    bp_augment_opts o = bp_augment_defaults();
    o.flip_prob[2] = -0.1;
    BP_EXPECT_ERR(bp_augment(img, lab, &o, &r), BP_EINVAL, "flip_prob[2] = -0.1");
    o = bp_augment_defaults();
    o.scale = 1;
    BP_EXPECT_ERR(bp_augment(img, lab, &o, &r), BP_EINVAL, "one is out of range");
    bp_tensor_free(bad), bp_tensor_free(img), bp_tensor_free(lab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_foreground),
        cmocka_unit_test(test_sample_padding_and_seed),
        cmocka_unit_test(test_flip_turn_hand_worked),
        cmocka_unit_test(test_augment_together),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
