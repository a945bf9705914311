/* io/nifti.c — NIfTI volumes through nifticlib (bpc/nifti.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpc/nifti.h>

#ifdef BPC_HAVE_NIFTI
#include <nifti2_io.h>

bool bp_nifti_available(void) { return true; }

/* Not a regular file (a FIFO would block the reader; a directory fails late). */
static bp_status regular_file(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return bp_fail(BP_EIO, "%s: cannot open (%s)", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return bp_fail(BP_EIO, "%s: not a regular file", path);
    return BP_OK;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

/* Voxel value number v of nim's data, as double. */
static double voxel(const nifti_image *nim, int64_t v)
{
    const void *d = nim->data;
    switch (nim->datatype) {
    case NIFTI_TYPE_UINT8: return ((const uint8_t *)d)[v];
    case NIFTI_TYPE_INT8: return ((const int8_t *)d)[v];
    case NIFTI_TYPE_INT16: return ((const int16_t *)d)[v];
    case NIFTI_TYPE_UINT16: return ((const uint16_t *)d)[v];
    case NIFTI_TYPE_INT32: return ((const int32_t *)d)[v];
    case NIFTI_TYPE_UINT32: return ((const uint32_t *)d)[v];
    case NIFTI_TYPE_INT64: return (double)((const int64_t *)d)[v];
    case NIFTI_TYPE_UINT64: return (double)((const uint64_t *)d)[v];
    case NIFTI_TYPE_FLOAT32: return ((const float *)d)[v];
    default: return ((const double *)d)[v]; /* FLOAT64: the only other type read_header lets through */
    }
}

static bool readable_type(int dt)
{
    switch (dt) {
    case NIFTI_TYPE_UINT8: case NIFTI_TYPE_INT8: case NIFTI_TYPE_INT16: case NIFTI_TYPE_UINT16:
    case NIFTI_TYPE_INT32: case NIFTI_TYPE_UINT32: case NIFTI_TYPE_INT64: case NIFTI_TYPE_UINT64:
    case NIFTI_TYPE_FLOAT32: case NIFTI_TYPE_FLOAT64: return true;
    default: return false;
    }
}

static void fill_info(const nifti_image *nim, bp_volume_info *info)
{
    memset(info, 0, sizeof *info);
    info->dims[0] = nim->nx;
    info->dims[1] = nim->ndim >= 2 ? nim->ny : 1;
    info->dims[2] = nim->ndim >= 3 ? nim->nz : 1;
    info->dims[3] = nim->ndim >= 4 ? nim->nt : 1;
    for (int a = 0; a < 3; a++) info->spacing[a] = nim->ndim > a && nim->pixdim[a + 1] > 0 ? nim->pixdim[a + 1] : 1;
    info->sform_code = nim->sform_code;
    info->qform_code = nim->qform_code;
    info->datatype = nim->datatype;
    info->scl_slope = nim->scl_slope;
    info->scl_inter = nim->scl_inter;
    const nifti_dmat44 *m = nim->sform_code > 0 ? &nim->sto_xyz : nim->qform_code > 0 ? &nim->qto_xyz : NULL;
    info->affine_source = nim->sform_code > 0 ? BP_AFFINE_SFORM : nim->qform_code > 0 ? BP_AFFINE_QFORM
                                                                                       : BP_AFFINE_SPACING;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            info->affine[r][c] = m ? m->m[r][c] : (r == c ? (r < 3 ? info->spacing[r] : 1) : 0);
}

bp_status bp_nifti_read(const char *path, bool reject_nonfinite, bp_tensor **out, bp_volume_info *info)
{
    if (!out) return bp_fail(BP_EINVAL, "nifti_read: out is NULL");
    *out = NULL;
    if (!path) return bp_fail(BP_EINVAL, "nifti_read: path is NULL");
    BP_TRY(regular_file(path));
    nifti_set_debug_level(0); /* our messages name the file; nifticlib's stderr lines would repeat them */
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) return bp_fail(BP_EFORMAT, "%s: not a NIfTI-1/-2 file (or its header is corrupt)", path);
    bp_status st = BP_OK;
    if (nim->ndim < 1 || nim->ndim > 4)
        st = bp_fail(BP_EUNSUPPORTED, "%s: %d dimensions (bpc reads 1 to 4: x, y, z and volumes)", path,
                     (int)nim->ndim);
    else if (!readable_type(nim->datatype))
        st = bp_fail(BP_EUNSUPPORTED, "%s: datatype %d (%s) is not read (integers and floats are)", path,
                     nim->datatype, nifti_datatype_string(nim->datatype));
    else if (nim->nx < 1 || (nim->ndim >= 2 && nim->ny < 1) || (nim->ndim >= 3 && nim->nz < 1) ||
             (nim->ndim >= 4 && nim->nt < 1) || nim->nvox < 1 || nim->nvox > ((int64_t)1 << 40) / 8)
        st = bp_fail(BP_EFORMAT, "%s: %dD dims %lld x %lld x %lld x %lld (%lld voxels) are not a volume bpc reads",
                     path, (int)nim->ndim, (long long)nim->nx, (long long)nim->ny, (long long)nim->nz,
                     (long long)nim->nt, (long long)nim->nvox);
    if (!st && nifti_image_load(nim) != 0)
        st = bp_fail(BP_EFORMAT, "%s: the voxel data is truncated or unreadable (%lld voxels of %d bytes expected)",
                     path, (long long)nim->nvox, nim->nbyper);
    int64_t nx = nim->nx, ny = nim->ndim >= 2 ? nim->ny : 1, nz = nim->ndim >= 3 ? nim->nz : 1;
    int64_t C = nim->ndim >= 4 ? nim->nt : 1;
    if (!st && nx * ny * nz * C != nim->nvox)
        st = bp_fail(BP_EFORMAT, "%s: %lld voxels do not match dims %lld x %lld x %lld x %lld", path,
                     (long long)nim->nvox, (long long)nx, (long long)ny, (long long)nz, (long long)C);
    bp_tensor *t = NULL;
    if (!st) st = bp_tensor_new(&t, BP_FLOAT32, 4, (int64_t[]){nx, ny, nz, C});
    if (!st) {
        /* slope 0 means "no scaling" in NIfTI; slope 1 and intercept 0 change nothing */
        const bool scaled = nim->scl_slope != 0 && (nim->scl_slope != 1 || nim->scl_inter != 0);
        float *y = t->data;
        int64_t v = 0; /* the file's order: i fastest, then j, k, volume */
        for (int64_t c = 0; c < C && !st; c++)
            for (int64_t k = 0; k < nz && !st; k++)
                for (int64_t j = 0; j < ny && !st; j++)
                    for (int64_t i = 0; i < nx; i++, v++) {
                        double x = voxel(nim, v);
                        if (scaled) x = x * nim->scl_slope + nim->scl_inter;
                        if (reject_nonfinite && !isfinite((float)x)) {
                            st = bp_fail(BP_ENUMERIC, "%s: voxel (%lld, %lld, %lld) of volume %lld is %g", path,
                                         (long long)i, (long long)j, (long long)k, (long long)c, x);
                            break;
                        }
                        y[((i * ny + j) * nz + k) * C + c] = (float)x;
                    }
    }
    if (!st && info) fill_info(nim, info);
    nifti_image_free(nim);
    if (st) bp_tensor_free(t);
    else *out = t;
    return st;
}

static bool writable_type(int dt)
{
    return dt == NIFTI_TYPE_UINT8 || dt == NIFTI_TYPE_INT16 || dt == NIFTI_TYPE_INT32 || dt == NIFTI_TYPE_FLOAT32;
}

/* Stores x as voxel v of type dt; false when it does not fit. */
static bool put(void *d, int dt, int64_t v, float x)
{
    if (dt == NIFTI_TYPE_FLOAT32) {
        ((float *)d)[v] = x;
        return true;
    }
    double r = nearbyint((double)x);
    double lo = dt == NIFTI_TYPE_UINT8 ? 0 : dt == NIFTI_TYPE_INT16 ? -32768 : -2147483648.0;
    double hi = dt == NIFTI_TYPE_UINT8 ? 255 : dt == NIFTI_TYPE_INT16 ? 32767 : 2147483647.0;
    if (!(r >= lo && r <= hi)) return false;
    if (dt == NIFTI_TYPE_UINT8) ((uint8_t *)d)[v] = (uint8_t)r;
    else if (dt == NIFTI_TYPE_INT16) ((int16_t *)d)[v] = (int16_t)r;
    else ((int32_t *)d)[v] = (int32_t)r;
    return true;
}

bp_status bp_nifti_write(const char *path, const bp_tensor *vol, int datatype, const bp_volume_info *like)
{
    if (!path || !vol) return bp_fail(BP_EINVAL, "nifti_write: path or vol is NULL");
    if (!has_suffix(path, ".nii") && !has_suffix(path, ".nii.gz"))
        return bp_fail(BP_EINVAL, "nifti_write: %s: the name must end in .nii or .nii.gz", path);
    if (vol->dtype != BP_FLOAT32)
        return bp_fail(BP_EDTYPE, "nifti_write: %s: expected a float32 volume, got %s", path,
                       bp_dtype_name(vol->dtype));
    if (vol->ndim != 3 && vol->ndim != 4)
        return bp_fail(BP_ESHAPE, "nifti_write: %s: expected a (nx, ny, nz) or (nx, ny, nz, C) volume, got %dD",
                       path, vol->ndim);
    if (!writable_type(datatype))
        return bp_fail(BP_EINVAL, "nifti_write: %s: datatype %d is not written (2 uint8, 4 int16, 8 int32, 16 float32)",
                       path, datatype);
    const int64_t nx = vol->shape[0], ny = vol->shape[1], nz = vol->shape[2], C = vol->ndim == 4 ? vol->shape[3] : 1;
    if (vol->numel < 1) return bp_fail(BP_ESHAPE, "nifti_write: %s: the volume is empty", path);
    if (like && (like->dims[0] != nx || like->dims[1] != ny || like->dims[2] != nz))
        return bp_fail(BP_ESHAPE, "nifti_write: %s: volume %lld x %lld x %lld, but the geometry is of %lld x %lld x %lld",
                       path, (long long)nx, (long long)ny, (long long)nz, (long long)like->dims[0],
                       (long long)like->dims[1], (long long)like->dims[2]);
    nifti_set_debug_level(0);
    int64_t dims[8] = {C > 1 ? 4 : 3, nx, ny, nz, C, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, datatype, 1);
    if (!nim) return bp_fail(BP_ENOMEM, "nifti_write: %s: cannot make a %lld-voxel image", path, (long long)vol->numel);
    bp_status st = BP_OK;
    const float *x = vol->data;
    int64_t v = 0;
    for (int64_t c = 0; c < C && !st; c++)
        for (int64_t k = 0; k < nz && !st; k++)
            for (int64_t j = 0; j < ny && !st; j++)
                for (int64_t i = 0; i < nx; i++, v++)
                    if (!put(nim->data, datatype, v, x[((i * ny + j) * nz + k) * C + c])) {
                        st = bp_fail(BP_EINVAL, "nifti_write: %s: voxel (%lld, %lld, %lld, %lld) = %g does not fit "
                                     "datatype %s", path, (long long)i, (long long)j, (long long)k, (long long)c,
                                     (double)x[((i * ny + j) * nz + k) * C + c], nifti_datatype_string(datatype));
                        break;
                    }
    if (!st && like) {
        for (int a = 0; a < 3; a++) nim->pixdim[a + 1] = like->spacing[a];
        nim->dx = like->spacing[0], nim->dy = like->spacing[1], nim->dz = like->spacing[2];
        int code = like->affine_source == BP_AFFINE_SFORM ? like->sform_code
                 : like->affine_source == BP_AFFINE_QFORM ? like->qform_code : 0;
        if (code > 0) {
            nifti_dmat44 m;
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++) m.m[r][c] = like->affine[r][c];
            nim->sform_code = code;
            nim->sto_xyz = m;
            nim->sto_ijk = nifti_dmat44_inverse(m);
            /* the same geometry as a qform too, for readers that look only there */
            double dx, dy, dz;
            nifti_dmat44_to_quatern(m, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d, &nim->qoffset_x,
                                    &nim->qoffset_y, &nim->qoffset_z, &dx, &dy, &dz, &nim->qfac);
            nim->qform_code = code;
            nim->qto_xyz = nifti_quatern_to_dmat44(nim->quatern_b, nim->quatern_c, nim->quatern_d, nim->qoffset_x,
                                                   nim->qoffset_y, nim->qoffset_z, dx, dy, dz, nim->qfac);
            nim->qto_ijk = nifti_dmat44_inverse(nim->qto_xyz);
        }
        nim->xyz_units = NIFTI_UNITS_MM;
    }
    /* write beside the target under a name with the same suffix, then rename */
    char *tmp = NULL;
    if (!st) {
        size_t n = strlen(path) + 64;
        tmp = malloc(n);
        if (!tmp) st = bp_fail(BP_ENOMEM, "nifti_write: out of memory");
        else snprintf(tmp, n, "%s.bpc-tmp-%ld%s", path, (long)getpid(), has_suffix(path, ".gz") ? ".nii.gz" : ".nii");
    }
    if (!st && nifti_set_filenames(nim, tmp, 0, 1) != 0)
        st = bp_fail(BP_EIO, "nifti_write: %s: cannot set the file name", path);
    if (!st) {
        errno = 0;
        nifti_image_write(nim); /* reports nothing: check what it left */
        nifti_image *back = nifti_image_read(tmp, 0);
        struct stat sb;
        if (!back || stat(tmp, &sb) != 0 || sb.st_size <= 0)
            st = bp_fail(BP_EIO, "nifti_write: %s: writing failed (%s)", path, errno ? strerror(errno) : "no file");
        nifti_image_free(back);
        if (!st && rename(tmp, path) != 0)
            st = bp_fail(BP_EIO, "nifti_write: %s: cannot rename the written file into place (%s)", path,
                         strerror(errno));
        if (st) unlink(tmp);
    }
    free(tmp);
    nifti_image_free(nim);
    return st;
}

#else /* built without nifticlib */

bool bp_nifti_available(void) { return false; }

bp_status bp_nifti_read(const char *path, bool reject_nonfinite, bp_tensor **out, bp_volume_info *info)
{
    (void)reject_nonfinite, (void)info;
    if (out) *out = NULL;
    return bp_fail(BP_EUNSUPPORTED, "%s: this bpc was built without NIfTI support (install libnifti2-dev and "
                   "configure again)", path ? path : "nifti_read");
}

bp_status bp_nifti_write(const char *path, const bp_tensor *vol, int datatype, const bp_volume_info *like)
{
    (void)vol, (void)datatype, (void)like;
    return bp_fail(BP_EUNSUPPORTED, "%s: this bpc was built without NIfTI support (install libnifti2-dev and "
                   "configure again)", path ? path : "nifti_write");
}
#endif
