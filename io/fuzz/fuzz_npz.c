/* io/fuzz/fuzz_npz.c — libFuzzer harness for the .npz loader (see fuzz_common.h
 * for the property checked and run.sh for how to build and run it). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_one(BP_CKPT_NPZ, data, size);
}
