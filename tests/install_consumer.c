/* Built by install_test.sh against the installed headers and libraries. */
#include <stdio.h>
#include <bpc/bpc.h>

int main(void)
{
    if (bp_check_flavour() != 0) {
        fprintf(stderr, "flavour mismatch: library real is %zu bytes, program's %zu\n",
                bp_library_real_size(), sizeof(bp_real));
        return 1;
    }
    int64_t shape[2] = {2, 3};
    bp_tensor *t = NULL;
    if (bp_tensor_full(&t, BP_REAL_DTYPE, 2, shape, 1.5)) {
        fprintf(stderr, "%s\n", bp_last_error());
        return 1;
    }
    double sum = 0;
    for (int64_t i = 0; i < bp_tensor_numel(t); i++) sum += bp_tensor_get(t, i);
    bp_tensor_free(t);
    printf("bpc %s (%s): sum = %g\n", bp_version(), BP_REAL_NAME, sum);
    return sum == 9.0 ? 0 : 1;
}
