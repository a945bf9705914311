/* bpc/sliding_window.h — inference over whole scans in overlapping windows.
 *
 * A segmentation net trains on patches but must label a whole scan that does
 * not fit in memory at once (or is not a multiple of its strides). The scan is
 * covered by windows of the training patch size (roi) that overlap by a
 * fraction (0.5 by default: each voxel is seen by up to 2^3 windows); the net
 * runs on each window with no tape recorded and in evaluation mode (fit
 * false), and every voxel's output is the average of the windows that cover
 * it, each weighted by a Gaussian centred on its window (sigma = roi / 8 per
 * axis, as MONAI's default), which favours predictions made far from a
 * window's border, where the net saw the most context. Windows that stick out
 * of the scan see zeros there. Memory: the output and one weight per voxel,
 * plus what the net needs for `batch` windows; nothing grows with the number
 * of windows. */
#ifndef BPC_SLIDING_WINDOW_H
#define BPC_SLIDING_WINDOW_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/node.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_window_opts {
    int64_t roi[3];  /* window size along x, y, z: required, each >= 1 */
    double overlap;  /* fraction of a window shared with the next, in [0, 1); 0.5 */
    bool gaussian;   /* Gaussian weighting (true), or every window alike */
    int64_t batch;   /* windows per call of the net; 1 */
    /* Called after each batch of windows (may be NULL): done of total windows. */
    void (*progress)(int64_t done, int64_t total, void *user);
    void *progress_user;
} bp_window_opts;

/* overlap 0.5, Gaussian, batch 1, no progress callback; roi is 0 (set it). */
bp_window_opts bp_window_defaults(void);

/* Runs model over vol, a float tensor (X, Y, Z, C) (bp_nifti_read's layout),
 * as windows (batch, roi_x, roi_y, roi_z, C); the model must return
 * (batch, roi_x, roi_y, roi_z, K). *out is a new (X, Y, Z, K) tensor of the
 * weighted averages (the caller frees it). Errors: BP_EINVAL (options),
 * BP_ESHAPE (vol not 4-D, or the model changing the window's size), and any
 * error of the model, named with the window it happened in. The shared
 * context's fit is false during the call and restored after. */
bp_status bp_sliding_window(bp_node *model, const bp_tensor *vol, const bp_window_opts *opts, bp_tensor **out);

/* The number of windows bp_sliding_window runs over a volume of size dims. */
int64_t bp_sliding_window_count(const int64_t dims[3], const bp_window_opts *opts);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
