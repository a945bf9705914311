/* tests/test_mode.c — computing modes (brainpy.math.modes, BrainPy 2.8.2).
 *
 * The class tree is Mode <- {NonBatchingMode, BatchingMode <- TrainingMode}.
 * Every predicate is checked over the full 4x4 table of (mode, kind) pairs,
 * each expected value worked out by hand from BrainPy's definitions:
 *   is_parent_of(*T): some T is a subclass of type(self)
 *   is_child_of(*T):  isinstance(self, T)
 *   is_one_of(*T):    type(self) in T;  is_a(T): type(self) is T */
#include "bp_test.h"
#include <bpc/mode.h>

enum { M = BP_MODE, N = BP_NONBATCHING_MODE, B = BP_BATCHING_MODE, T = BP_TRAINING_MODE };

static bp_mode of_kind(int k)
{
    switch (k) {
    case N: return bp_nonbatching_mode();
    case B: return bp_batching_mode(1);
    case T: return bp_training_mode(1);
    default: return bp_mode_base();
    }
}

static void test_mode_constructors_set_kind_and_batch_size(void **state)
{
    (void)state;
    bp_mode m = bp_mode_base();
    assert_int_equal(m.kind, BP_MODE);
    assert_int_equal(m.batch_size, 0);
    m = bp_nonbatching_mode();
    assert_int_equal(m.kind, BP_NONBATCHING_MODE);
    assert_int_equal(m.batch_size, 0);
    m = bp_batching_mode(7);
    assert_int_equal(m.kind, BP_BATCHING_MODE);
    assert_int_equal(m.batch_size, 7);
    m = bp_training_mode(16);
    assert_int_equal(m.kind, BP_TRAINING_MODE);
    assert_int_equal(m.batch_size, 16);
}

static void test_mode_kind_is_subclass_table(void **state)
{
    (void)state;
    /* row: sub, column: sup */
    static const bool want[4][4] = {
        /*        M      N      B      T  */
        /* M */ {true, false, false, false},
        /* N */ {true, true, false, false},
        /* B */ {true, false, true, false},
        /* T */ {true, false, true, true},
    };
    for (int sub = 0; sub < 4; sub++)
        for (int sup = 0; sup < 4; sup++)
            if (bp_mode_kind_is_subclass((bp_mode_kind)sub, (bp_mode_kind)sup) != want[sub][sup])
                fail_msg("is_subclass(%s, %s) should be %d", bp_mode_kind_name((bp_mode_kind)sub),
                         bp_mode_kind_name((bp_mode_kind)sup), want[sub][sup]);
}

static void test_mode_is_parent_of_single_kind_table(void **state)
{
    (void)state;
    /* row: the mode, column: the one supported kind. True iff kind <= mode. */
    static const bool want[4][4] = {
        /*        M      N      B      T  */
        /* M */ {true, true, true, true},   /* the plain Mode passes every check */
        /* N */ {false, true, false, false},
        /* B */ {false, false, true, true},
        /* T */ {false, false, false, true},
    };
    for (int m = 0; m < 4; m++)
        for (int k = 0; k < 4; k++) {
            bp_mode_kind kind = (bp_mode_kind)k;
            if (bp_mode_is_parent_of(of_kind(m), &kind, 1) != want[m][k])
                fail_msg("%s.is_parent_of(%s) should be %d", bp_mode_kind_name((bp_mode_kind)m),
                         bp_mode_kind_name(kind), want[m][k]);
        }
}

static void test_mode_is_parent_of_several_kinds_and_empty(void **state)
{
    (void)state;
    /* A BatchNorm-like class supports (BatchingMode, TrainingMode). */
    const bp_mode_kind bt[] = {BP_BATCHING_MODE, BP_TRAINING_MODE};
    assert_false(bp_mode_is_parent_of(bp_nonbatching_mode(), bt, 2));
    assert_true(bp_mode_is_parent_of(bp_batching_mode(4), bt, 2));
    assert_true(bp_mode_is_parent_of(bp_training_mode(4), bt, 2));
    assert_true(bp_mode_is_parent_of(bp_mode_base(), bt, 2));
    /* TrainingMode is a parent of the second entry only; order does not matter. */
    const bp_mode_kind nt[] = {BP_NONBATCHING_MODE, BP_TRAINING_MODE};
    assert_true(bp_mode_is_parent_of(bp_training_mode(1), nt, 2));
    assert_true(bp_mode_is_parent_of(bp_batching_mode(1), nt, 2));
    const bp_mode_kind nn[] = {BP_NONBATCHING_MODE};
    assert_false(bp_mode_is_parent_of(bp_batching_mode(1), nn, 1));
    /* any() over no kinds is false */
    assert_false(bp_mode_is_parent_of(bp_mode_base(), bt, 0));
}

static void test_mode_is_child_of_is_isinstance(void **state)
{
    (void)state;
    static const bool want[4][4] = {
        /*        M      N      B      T  */
        /* M */ {true, false, false, false},
        /* N */ {true, true, false, false},
        /* B */ {true, false, true, false},
        /* T */ {true, false, true, true},
    };
    for (int m = 0; m < 4; m++)
        for (int k = 0; k < 4; k++) {
            bp_mode_kind kind = (bp_mode_kind)k;
            if (bp_mode_is_child_of(of_kind(m), &kind, 1) != want[m][k])
                fail_msg("%s.is_child_of(%s) should be %d", bp_mode_kind_name((bp_mode_kind)m),
                         bp_mode_kind_name(kind), want[m][k]);
        }
    const bp_mode_kind nb[] = {BP_NONBATCHING_MODE, BP_BATCHING_MODE};
    assert_true(bp_mode_is_child_of(bp_training_mode(2), nb, 2));
    assert_false(bp_mode_is_child_of(bp_mode_base(), nb, 2));
    assert_false(bp_mode_is_child_of(bp_training_mode(2), nb, 0));
}

static void test_mode_is_one_of_and_is_a_are_exact_class(void **state)
{
    (void)state;
    for (int m = 0; m < 4; m++)
        for (int k = 0; k < 4; k++) {
            bp_mode_kind kind = (bp_mode_kind)k;
            assert_int_equal(bp_mode_is_one_of(of_kind(m), &kind, 1), m == k);
            assert_int_equal(bp_mode_is_a(of_kind(m), kind), m == k);
        }
    const bp_mode_kind bn[] = {BP_BATCHING_MODE, BP_NONBATCHING_MODE};
    /* TrainingMode is a BatchingMode but not one of (Batching, NonBatching) */
    assert_false(bp_mode_is_one_of(bp_training_mode(1), bn, 2));
    assert_true(bp_mode_is_one_of(bp_nonbatching_mode(), bn, 2));
    assert_false(bp_mode_is_one_of(bp_nonbatching_mode(), bn, 0));
}

static void test_mode_batch_train_nonbatch_predicates(void **state)
{
    (void)state;
    /* kind order M, N, B, T */
    static const bool batch[4] = {false, false, true, true};
    static const bool train[4] = {false, false, false, true};
    static const bool nonbatch[4] = {false, true, false, false};
    for (int m = 0; m < 4; m++) {
        assert_int_equal(bp_mode_is_batch_mode(of_kind(m)), batch[m]);
        assert_int_equal(bp_mode_is_train_mode(of_kind(m)), train[m]);
        assert_int_equal(bp_mode_is_nonbatch_mode(of_kind(m)), nonbatch[m]);
    }
}

static void test_mode_eq_compares_class_only(void **state)
{
    (void)state;
    assert_true(bp_mode_eq(bp_batching_mode(1), bp_batching_mode(32)));
    assert_true(bp_mode_eq(bp_training_mode(2), bp_training_mode(3)));
    assert_true(bp_mode_eq(bp_mode_base(), bp_mode_base()));
    assert_false(bp_mode_eq(bp_training_mode(4), bp_batching_mode(4)));
    assert_false(bp_mode_eq(bp_batching_mode(4), bp_training_mode(4)));
    assert_false(bp_mode_eq(bp_nonbatching_mode(), bp_mode_base()));
}

static void test_mode_to_batch_mode_keeps_batch_size(void **state)
{
    (void)state;
    bp_mode m = bp_mode_to_batch_mode(bp_training_mode(8));
    assert_int_equal(m.kind, BP_BATCHING_MODE);
    assert_int_equal(m.batch_size, 8);
    m = bp_mode_to_batch_mode(bp_batching_mode(3));
    assert_int_equal(m.kind, BP_BATCHING_MODE);
    assert_int_equal(m.batch_size, 3);
    m = bp_mode_to_batch_mode(bp_nonbatching_mode());
    assert_int_equal(m.kind, BP_NONBATCHING_MODE);
    m = bp_mode_to_batch_mode(bp_mode_base());
    assert_int_equal(m.kind, BP_MODE);
}

static void test_mode_kind_names_and_reprs(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(bp_mode_kind_name(BP_MODE), "Mode");
    assert_string_equal(bp_mode_kind_name(BP_NONBATCHING_MODE), "NonBatchingMode");
    assert_string_equal(bp_mode_kind_name(BP_BATCHING_MODE), "BatchingMode");
    assert_string_equal(bp_mode_kind_name(BP_TRAINING_MODE), "TrainingMode");
    assert_string_equal(bp_mode_kind_name((bp_mode_kind)42), "?");

    assert_string_equal(bp_mode_repr(bp_batching_mode(1), buf, sizeof buf), "BatchingMode(batch_size=1)");
    assert_string_equal(bp_mode_repr(bp_training_mode(8), buf, sizeof buf), "TrainingMode(batch_size=8)");
    assert_string_equal(bp_mode_repr(bp_nonbatching_mode(), buf, sizeof buf), "NonBatchingMode");
    assert_string_equal(bp_mode_repr(bp_mode_base(), buf, sizeof buf), "Mode");
    /* the repr returns buf and truncates safely to cap */
    char small[6];
    assert_ptr_equal(bp_mode_repr(bp_batching_mode(1), small, sizeof small), small);
    assert_string_equal(small, "Batch");
}

static void test_mode_global_default_is_nonbatching_and_settable(void **state)
{
    (void)state;
    bp_mode m = bp_get_mode();
    assert_int_equal(m.kind, BP_NONBATCHING_MODE);
    bp_set_mode(bp_training_mode(5));
    m = bp_get_mode();
    assert_int_equal(m.kind, BP_TRAINING_MODE);
    assert_int_equal(m.batch_size, 5);
    bp_set_mode(bp_batching_mode(2));
    m = bp_get_mode();
    assert_int_equal(m.kind, BP_BATCHING_MODE);
    assert_int_equal(m.batch_size, 2);
    bp_set_mode(bp_nonbatching_mode());
    assert_int_equal(bp_get_mode().kind, BP_NONBATCHING_MODE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* runs first: it checks the untouched global default */
        cmocka_unit_test(test_mode_global_default_is_nonbatching_and_settable),
        cmocka_unit_test(test_mode_constructors_set_kind_and_batch_size),
        cmocka_unit_test(test_mode_kind_is_subclass_table),
        cmocka_unit_test(test_mode_is_parent_of_single_kind_table),
        cmocka_unit_test(test_mode_is_parent_of_several_kinds_and_empty),
        cmocka_unit_test(test_mode_is_child_of_is_isinstance),
        cmocka_unit_test(test_mode_is_one_of_and_is_a_are_exact_class),
        cmocka_unit_test(test_mode_batch_train_nonbatch_predicates),
        cmocka_unit_test(test_mode_eq_compares_class_only),
        cmocka_unit_test(test_mode_to_batch_mode_keeps_batch_size),
        cmocka_unit_test(test_mode_kind_names_and_reprs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
