/* bpc/config.h — the real type of this flavour of the library.
 *
 * One source tree builds two flavours: libbpc (float, what users train with)
 * and libbpc64 (double, what gradient checks use). A program compiled against
 * libbpc64 defines BP_REAL_DOUBLE (pkg-config bpc64 does it); mixing the two
 * in one program is an error that bp_check_flavour() reports. */
#ifndef BPC_CONFIG_H
#define BPC_CONFIG_H

#include <stddef.h>

#ifdef BP_REAL_DOUBLE
typedef double bp_real;
#define BP_REAL_NAME "float64"
#else
typedef float bp_real;
#define BP_REAL_NAME "float32"
#endif

#define BP_VERSION_MAJOR 0
#define BP_VERSION_MINOR 1
#define BP_VERSION_PATCH 0
#define BP_VERSION_STRING "0.1.0"

/* The public API. The library is built with -fvisibility=hidden: only what a
 * public header declares between BP_API_BEGIN and BP_API_END (after its own
 * #includes) is exported from libbpc.so; internals (bp__ names, private
 * headers) stay inside it. BP_API marks a single declaration the same way. */
#if defined(__GNUC__) || defined(__clang__)
#define BP_API __attribute__((visibility("default")))
#define BP_API_BEGIN _Pragma("GCC visibility push(default)")
#define BP_API_END _Pragma("GCC visibility pop")
#else
#define BP_API
#define BP_API_BEGIN
#define BP_API_END
#endif

/* Maximum number of tensor dimensions. */
#define BP_MAX_DIMS 8

/* Alignment, in bytes, of every tensor's data. */
#define BP_ALIGN 64

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

/* sizeof(bp_real) inside the linked library: 4 for libbpc, 8 for libbpc64. */
size_t bp_library_real_size(void);

/* The library version string, e.g. "0.1.0". */
const char *bp_version(void);

#ifdef __cplusplus
}
#endif
BP_API_END

/* Returns BP_OK (0) when the program and the linked library agree on bp_real. */
#define bp_check_flavour() (bp_library_real_size() == sizeof(bp_real) ? 0 : 1)

#endif
