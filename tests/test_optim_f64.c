/* tests/test_optim_f64.c — tests/test_optim.c in the float64 flavour
 * (bp_real = double): the same trajectories and slots against the float64
 * references with a tolerance of 1e-12 of each tensor's scale (see
 * TRAJ_TOL there for why that is the right bound), plus every other test. */
#include "test_optim.c"
