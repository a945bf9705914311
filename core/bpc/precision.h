/* bpc/precision.h — the compute precision of convolutions and Dense, set once
 * per process (like PyTorch's torch.autocast('cpu', dtype=torch.bfloat16)).
 *
 * BP_PRECISION_FLOAT32 (the default): every kernel computes in bp_real.
 * BP_PRECISION_BF16: Conv1d/2d/3d's forward (at least 8 output channels per
 * group), weight gradient dw (at least 8 output channels per group) and input
 * gradient dx (at least 8 input channels per group) round their operands to
 * bfloat16 (round to nearest even) and multiply them with float32
 * accumulation (AVX512-BF16's vdpbf16ps); smaller groups run float32. db,
 * ConvTranspose, Dense and everything else stay float32: master weights,
 * optimizer state, BatchNorm statistics, losses, pooling, softmax,
 * checkpoints (a bf16-trained model loads in a float32 run and back).
 *
 * Why process-wide and not per model: the setting chooses kernels, as the
 * thread count does, and a program trains one net at a time. A Conv's
 * backward runs in the precision its forward ran in, so changing the setting
 * between a forward and its backward changes nothing for that step.
 *
 * Fallback: bf16 runs only where the CPU has AVX512-BF16, the build kept the
 * kernels (CMake option BPC_BF16, on by default) and the flavour is float32.
 * Elsewhere asking for bf16 succeeds, prints one notice to stderr and runs
 * float32 (bp_precision_active() says which); the float64 flavour (libbpc64,
 * gradient checks) always runs float64. */
#ifndef BPC_PRECISION_H
#define BPC_PRECISION_H

#include <stdbool.h>
#include <bpc/error.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_precision {
    BP_PRECISION_FLOAT32 = 0, /* bp_real everywhere (float64 in libbpc64) */
    BP_PRECISION_BF16 = 1     /* bf16 products, float32 accumulation (Conv) */
} bp_precision;

/* Sets the precision asked for. BP_EINVAL for a value outside the enum.
 * Asking for BF16 where it cannot run prints one notice (once per process)
 * and leaves bp_precision_active() at FLOAT32. Not thread-safe with a
 * concurrent update(): set it before training. */
bp_status bp_set_precision(bp_precision p);

/* The precision last asked for (FLOAT32 until bp_set_precision). */
bp_precision bp_precision_requested(void);

/* The precision kernels use now: BF16 only if asked for and available. */
bp_precision bp_precision_active(void);

/* Whether this process can run the bf16 kernels: the CPU has AVX512-BF16
 * (and the OS saves its registers), the build has the kernels, and the
 * flavour is float32. The environment variable BPC_NO_BF16=1 makes it false
 * (to test the fallback on a CPU that has the instruction). */
bool bp_bf16_available(void);

/* "float32" / "bf16" (the float64 flavour says "float64" for FLOAT32). */
const char *bp_precision_name(bp_precision p);

/* Parses "float32", "fp32", "bf16" or "bfloat16" into *out. BP_EINVAL
 * (naming the string) otherwise; *out untouched then. */
bp_status bp_precision_parse(const char *s, bp_precision *out);

#ifdef __cplusplus
}
#endif
BP_API_END

#endif
