/* tests/test_ops_f64.c — every op against PyTorch and gradcheck, in float64 (see ops_ref.h). */
#include "ops_ref.h"
