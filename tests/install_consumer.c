/* Built by install_test.sh against the installed headers and libraries only
 * (through pkg-config and through find_package(bpc)). It checks that the
 * program and the library agree on the flavour and the version, that a call
 * computes the right number, and that a failure comes back as a status with a
 * message. */
#include <stdio.h>
#include <string.h>
#include <bpc/bpc.h>

int main(void)
{
    if (bp_check_flavour() != 0) {
        fprintf(stderr, "flavour mismatch: library real is %zu bytes, program's %zu\n",
                bp_library_real_size(), sizeof(bp_real));
        return 1;
    }
    if (strcmp(bp_version(), BP_VERSION_STRING) != 0) {
        fprintf(stderr, "version mismatch: library %s, headers %s\n", bp_version(), BP_VERSION_STRING);
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
    if (sum != 9.0) {
        fprintf(stderr, "sum of a (2,3) tensor of 1.5 is %g, expected 9\n", sum);
        return 1;
    }

    /* An error path through the installed library: 9 dimensions is one too many. */
    int64_t big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    bp_tensor *u = NULL;
    bp_status st = bp_tensor_new(&u, BP_REAL_DTYPE, 9, big);
    if (st == BP_OK || u != NULL || bp_last_error()[0] == '\0') {
        fprintf(stderr, "bp_tensor_new with ndim 9 returned %s, message \"%s\"\n",
                bp_status_name(st), bp_last_error());
        bp_tensor_free(u);
        return 1;
    }
    printf("bpc %s (%s): sum = %g; ndim 9 -> %s: %s\n", bp_version(), BP_REAL_NAME, sum,
           bp_status_name(st), bp_last_error());
    return 0;
}
