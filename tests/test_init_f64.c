/* tests/test_init_f64.c — the initializer suite against libbpc64 (bp_real = double). */
#include "test_init.c"
