/* examples/common/args.c — see args.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include "args.h"

bool int_arg(const char *v, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0' || x < -hi || x > hi) return false;
    *out = x;
    return true;
}

bool real_arg(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(x)) return false;
    *out = x;
    return true;
}

bool u64_arg(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    const char *p = v;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '-') return false;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end != '\0') return false;
    *out = x;
    return true;
}
