/* examples/common/args.h — whole-string number parsing for the examples'
 * command lines (atoi and strtod alone take "3x" as 3 and "abc" as 0). */
#ifndef EXAMPLES_ARGS_H
#define EXAMPLES_ARGS_H

#include <stdbool.h>
#include <stdint.h>

/* The whole of v as a base-10 integer in [-hi, hi]. */
bool int_arg(const char *v, long long hi, long long *out);
/* The whole of v as a finite number. */
bool real_arg(const char *v, double *out);
/* The whole of v as an unsigned 64-bit integer ("-1" is refused, not wrapped). */
bool u64_arg(const char *v, uint64_t *out);

#endif
