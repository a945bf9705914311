/* tests/test_checkpoint_ref.h — the reference state REF shared by the
 * checkpoint suites: built here and in tests/gen_checkpoint.py (ref_state())
 * from the same formulas, compared bit for bit. */
#ifndef TEST_CHECKPOINT_REF_H
#define TEST_CHECKPOINT_REF_H
#include "bp_test.h"
#include <stdlib.h>
#include <bpc/checkpoint.h>

#define PI_D 3.141592653589793

/* ------------------------------------------------------ reference state */

static inline void put(bp_dict *d, const char *key, bp_dtype dt, int ndim, const int64_t *shape, const void *data)
{
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_from_data(&t, dt, ndim, shape, data));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, key, t));
    bp_tensor_free(t);
}

/* REF of tests/gen_checkpoint.py, in its order. */
static inline bp_dict *ref_state(void)
{
    bp_dict *d;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    float w[6];
    for (int i = 0; i < 6; i++) w[i] = (float)i * 0.25f - 0.5f;
    put(d, "Net0.w", BP_FLOAT32, 2, (const int64_t[]){2, 3}, w);
    float special[8] = {0.0f, -0.0f, INFINITY, -INFINITY, 1e-45f, 3.40282347e38f, 1.17549435e-38f, 0.1f};
    put(d, "Net0.special", BP_FLOAT32, 1, (const int64_t[]){8}, special);
    int64_t count = 42;
    put(d, "Net0.count", BP_INT64, 0, NULL, &count);
    uint8_t mask[3] = {0, 1, 255};
    put(d, "Net0.mask", BP_UINT8, 1, (const int64_t[]){3}, mask);
    int32_t idx[2] = {INT32_MIN, INT32_MAX};
    put(d, "Net0.idx", BP_INT32, 2, (const int64_t[]){1, 2}, idx);
    double x64[4] = {PI_D, -1e-300, 1e300, 5e-324};
    put(d, "Net0.x64", BP_FLOAT64, 1, (const int64_t[]){4}, x64);
    put(d, "Net0.empty", BP_FLOAT32, 2, (const int64_t[]){0, 3}, NULL);
    float deep[256];
    for (int i = 0; i < 256; i++) deep[i] = (float)(i + 1) / 8.0f;
    put(d, "Net0.deep", BP_FLOAT32, 8, (const int64_t[]){2, 2, 2, 2, 2, 2, 2, 2}, deep);
    return d;
}

/* {"a": float32 [1, 2], "n": int64 3}: the seed file gen_checkpoint.py wrote. */
static inline bp_dict *small_state(void)
{
    bp_dict *d;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    put(d, "a", BP_FLOAT32, 1, (const int64_t[]){2}, (const float[]){1.0f, 2.0f});
    int64_t n = 3;
    put(d, "n", BP_INT64, 0, NULL, &n);
    return d;
}

/* Same keys, dtypes, shapes and bits; in the same order when `ordered`. */
static inline void expect_same(const bp_dict *got, const bp_dict *want, bool ordered)
{
    char a[96], b[96];
    assert_non_null(got);
    assert_int_equal(bp_dict_len(got), bp_dict_len(want));
    for (size_t i = 0; i < bp_dict_len(want); i++) {
        const char *key = bp_dict_key(want, i);
        if (ordered) assert_string_equal(bp_dict_key(got, i), key);
        const bp_tensor *g = bp_dict_get_tensor(got, key), *w = bp_dict_tensor(want, i);
        if (!g) fail_msg("key \"%s\" missing", key);
        if (g->dtype != w->dtype)
            fail_msg("\"%s\": dtype %s, want %s", key, bp_dtype_name(g->dtype), bp_dtype_name(w->dtype));
        if (!bp_tensor_same_shape(g, w))
            fail_msg("\"%s\": shape %s, want %s", key, bp_shape_str(a, sizeof a, g->ndim, g->shape),
                     bp_shape_str(b, sizeof b, w->ndim, w->shape));
        if (memcmp(g->data, w->data, bp_tensor_nbytes(w)) != 0) fail_msg("\"%s\": data differs", key);
    }
}

#endif
