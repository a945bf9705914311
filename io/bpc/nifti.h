/* bpc/nifti.h — NIfTI volumes in and out (.nii, .nii.gz; NIfTI-1 and -2).
 *
 * Read through Debian's nifticlib when bpc was built with it (libnifti2-dev);
 * without it every call fails with BP_EUNSUPPORTED saying so (bp_nifti_available).
 *
 * Layout. A volume of nx x ny x nz voxels (and nt volumes in a 4-D file) becomes
 * a float tensor of shape (nx, ny, nz, C) with C = nt (1 for a 3-D file):
 * element [i][j][k][c] is voxel (i, j, k) of volume c, so indices are the voxel
 * coordinates the affine maps to millimetres; channels last, as bpc's layers
 * want (add the batch axis with bp_reshape). 2-D files read as nz = 1.
 *
 * Values. Every integer and float datatype is read (uint8 ... uint64, float32,
 * float64) and scaled as the file says: value * scl_slope + scl_inter when
 * scl_slope is neither 0 nor 1 or scl_inter is not 0. RGB and complex data are
 * BP_EUNSUPPORTED. Big-endian files are swapped by nifticlib. nifticlib reads
 * stored NaN and Inf floats as 0; a value that becomes non-finite in float32
 * (a float64 beyond its range, or after scaling) is refused when asked.
 *
 * Geometry. bp_volume_info keeps the voxel spacing and the voxel-to-world
 * affine (the sform when its code is set, else the qform, else the spacing
 * alone), and writing with an info puts that geometry back (both sform and
 * qform), so a prediction written with the input scan's info overlays the scan
 * in any viewer. */
#ifndef BPC_NIFTI_H
#define BPC_NIFTI_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/tensor.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_affine_source {
    BP_AFFINE_SPACING = 0, /* neither form set: diag(spacing) */
    BP_AFFINE_QFORM = 1,
    BP_AFFINE_SFORM = 2
} bp_affine_source;

/* What a NIfTI file says besides its voxels. */
typedef struct bp_volume_info {
    int64_t dims[4];          /* nx, ny, nz, nt (1 where absent) */
    double spacing[3];        /* voxel size along i, j, k (pixdim 1..3), usually mm */
    double affine[4][4];      /* world = affine * (i, j, k, 1) */
    bp_affine_source affine_source;
    int sform_code, qform_code; /* the file's codes (0 when unset) */
    int datatype;             /* the file's NIfTI datatype code (2 = uint8, 4 = int16, 16 = float32, ...) */
    double scl_slope, scl_inter;
} bp_volume_info;

/* True when this build reads and writes NIfTI (nifticlib was found). */
bool bp_nifti_available(void);

/* Reads path into *out, a new float tensor (nx, ny, nz, C) (the caller frees
 * it), and fills *info when info is not NULL. Errors name the file:
 * BP_EIO (missing, unreadable, not a regular file), BP_EFORMAT (not NIfTI,
 * truncated, dims that do not fit), BP_EUNSUPPORTED (datatype, more than 4
 * dims, no nifticlib in this build), BP_ENUMERIC (a NaN or Inf voxel when
 * reject_nonfinite is true, naming the voxel). */
bp_status bp_nifti_read(const char *path, bool reject_nonfinite, bp_tensor **out, bp_volume_info *info);

/* Writes vol, a float tensor (nx, ny, nz) or (nx, ny, nz, C), to path (.nii
 * or .nii.gz, by the name) as datatype (NIfTI code: 2 uint8, 4 int16,
 * 8 int32, 16 float32). Integer types round to nearest and must fit
 * (BP_EINVAL naming the first voxel that does not). like (may
 * be NULL: unit spacing, identity affine) gives spacing and affine. The file
 * is written beside path and renamed into place, so a failed write leaves an
 * existing file as it was. */
bp_status bp_nifti_write(const char *path, const bp_tensor *vol, int datatype, const bp_volume_info *like);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
