/* examples/segment3d — train a 3-D U-Net to label every voxel, and label scans with it.
 *
 * `segment3d train` trains on built-in synthetic scans (or a Decathlon-layout
 * folder of NIfTI files) with Dice + cross-entropy and Adam, validates by
 * sliding windows over whole volumes every epoch, keeps the latest and the
 * best checkpoint, resumes bit for bit and saves on Ctrl-C; `segment3d
 * predict` labels a NIfTI scan. `segment3d --help` lists the options. */
#include <omp.h>
#include "options.h"
#include "segment3d.h"

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (o.threads > 0) omp_set_num_threads(o.threads);
    return o.predict ? predict_main(&o) : train_main(&o);
}
