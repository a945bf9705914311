/* io/fuzz/fuzz_common.h — the property every checkpoint loader is fuzzed for.
 *
 * For any input: bp_checkpoint_decode returns BP_OK or BP_EFORMAT (never
 * crashes, reads out of bounds, leaks or hits undefined behaviour: the
 * harnesses run under ASan and UBSan), leaves *out NULL on failure, and a
 * dict it accepts survives encode -> decode in the same format unchanged
 * (same keys in the same order, dtypes, shapes and bits). */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpc/checkpoint.h>

static void fuzz_die(const char *what)
{
    fprintf(stderr, "fuzz property violated: %s (last error: %s)\n", what, bp_last_error());
    abort();
}

static void fuzz_same(const bp_dict *a, const bp_dict *b)
{
    if (bp_dict_len(a) != bp_dict_len(b)) fuzz_die("round trip changed the number of entries");
    for (size_t i = 0; i < bp_dict_len(a); i++) {
        const bp_tensor *x = bp_dict_tensor(a, i), *y = bp_dict_tensor(b, i);
        if (strcmp(bp_dict_key(a, i), bp_dict_key(b, i)) != 0) fuzz_die("round trip changed a key or the order");
        if (!x || !y) fuzz_die("an entry is not a tensor");
        if (x->dtype != y->dtype || !bp_tensor_same_shape(x, y)) fuzz_die("round trip changed a dtype or shape");
        if (memcmp(x->data, y->data, bp_tensor_nbytes(x)) != 0) fuzz_die("round trip changed the data");
    }
}

static int fuzz_one(bp_ckpt_format fmt, const uint8_t *data, size_t size)
{
    bp_dict *d = (bp_dict *)1;
    bp_status st = bp_checkpoint_decode(fmt, data, size, &d);
    if (st != BP_OK) {
        if (st != BP_EFORMAT) fuzz_die("a decode failed with a status other than BP_EFORMAT");
        if (d) fuzz_die("a failed decode left *out set");
        return 0;
    }
    void *buf;
    size_t len;
    if (bp_checkpoint_encode(fmt, d, &buf, &len) != BP_OK) fuzz_die("a decoded dict cannot be encoded");
    bp_dict *again;
    if (bp_checkpoint_decode(fmt, buf, len, &again) != BP_OK) fuzz_die("bpc cannot read what it wrote");
    fuzz_same(d, again);
    bp_dict_free(again);
    bp_dict_free(d);
    free(buf);
    return 0;
}
#endif
