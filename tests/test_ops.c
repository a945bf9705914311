/* tests/test_ops.c — every op against PyTorch and gradcheck, in float32 (see ops_ref.h). */
#include "ops_ref.h"
