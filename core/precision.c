/* core/precision.c — the process-wide compute precision (bpc/precision.h):
 * what was asked for, and whether this CPU, build and flavour can honour it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <bpc/precision.h>

static bp_precision requested = BP_PRECISION_FLOAT32;
static bp_precision active = BP_PRECISION_FLOAT32;
static bool notice_said = false;

bool bp_bf16_available(void)
{
#if defined(BP_REAL_DOUBLE) || !defined(BPC_HAVE_BF16)
    return false;
#else
    const char *off = getenv("BPC_NO_BF16");
    if (off && *off && strcmp(off, "0") != 0) return false;
    /* gcc's cpu model checks the CPUID bits and that XGETBV reports the
     * zmm / opmask state saved by the OS, so a kernel or VM that hides
     * AVX-512 (valgrind does) reads as unavailable. */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#endif
}

bp_status bp_set_precision(bp_precision p)
{
    if (p != BP_PRECISION_FLOAT32 && p != BP_PRECISION_BF16)
        return bp_fail(BP_EINVAL, "bp_set_precision: p must be BP_PRECISION_FLOAT32 (0) or BP_PRECISION_BF16 (1), got %d",
                       (int)p);
    requested = p;
    active = p == BP_PRECISION_BF16 && bp_bf16_available() ? BP_PRECISION_BF16 : BP_PRECISION_FLOAT32;
    if (p == BP_PRECISION_BF16 && active != p && !notice_said) {
        notice_said = true;
#if defined(BP_REAL_DOUBLE)
        const char *why = "the float64 flavour (libbpc64) computes in float64";
#elif !defined(BPC_HAVE_BF16)
        const char *why = "this build has no bf16 kernels (BPC_BF16=OFF)";
#else
        const char *why = "this CPU has no AVX512-BF16 (or BPC_NO_BF16 is set)";
#endif
        fprintf(stderr, "bpc: bf16 precision asked for, running float32: %s\n", why);
    }
    return BP_OK;
}

bp_precision bp_precision_requested(void) { return requested; }
bp_precision bp_precision_active(void) { return active; }

const char *bp_precision_name(bp_precision p)
{
    if (p == BP_PRECISION_BF16) return "bf16";
#ifdef BP_REAL_DOUBLE
    return p == BP_PRECISION_FLOAT32 ? "float64" : "unknown";
#else
    return p == BP_PRECISION_FLOAT32 ? "float32" : "unknown";
#endif
}

bp_status bp_precision_parse(const char *s, bp_precision *out)
{
    if (!out) return bp_fail(BP_EINVAL, "bp_precision_parse: out is NULL");
    if (!s) return bp_fail(BP_EINVAL, "bp_precision_parse: s is NULL");
    if (!strcasecmp(s, "float32") || !strcasecmp(s, "fp32") || !strcasecmp(s, "f32")) {
        *out = BP_PRECISION_FLOAT32;
        return BP_OK;
    }
    if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16")) {
        *out = BP_PRECISION_BF16;
        return BP_OK;
    }
    return bp_fail(BP_EINVAL, "precision \"%s\" is not one of float32, bf16", s);
}
