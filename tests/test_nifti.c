/* tests/test_nifti.c — NIfTI in and out (bpc/nifti.h).
 *
 * Reading: files written by nibabel (tests/gen_nifti.py) against the values,
 * spacing and affine nibabel reads back from them (tests/data/nifti/
 * expected.txt): int16 with scl_slope/scl_inter and an sform, 4-D uint8 with a
 * qform only, big-endian float64 with no form, NIfTI-2, a 2-D uint16 file; bad
 * files (truncated, not NIfTI, RGB, a directory, a FIFO, missing) by file name.
 * Writing: round trips (.nii and .nii.gz, labels as uint8, the geometry of
 * another file kept), values that do not fit, NaN rejection on read; and the
 * real T1 scan of Debian's insighttoolkit5-examples when it is installed. */
#include "bp_test.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpc/nifti.h>

#define DIR BP_TEST_DATA_DIR "/nifti"

typedef struct expect_case {
    char name[64], source[16];
    int64_t dims[4];
    double spacing[3], affine[16];
    double *values;
} expect_case;

/* Finds case `name` in expected.txt (the caller frees values). */
static void expected(const char *name, expect_case *e)
{
    FILE *f = fopen(DIR "/expected.txt", "r");
    assert_non_null(f);
    static char line[1 << 16];
    memset(e, 0, sizeof *e);
    while (fgets(line, sizeof line, f)) {
        char nm[64];
        if (sscanf(line, "%63s", nm) != 1 || strcmp(nm, name) != 0) continue;
        char *p = line + strlen(nm);
        strcpy(e->name, nm);
        for (int a = 0; a < 4; a++) e->dims[a] = strtoll(p, &p, 10);
        for (int a = 0; a < 3; a++) e->spacing[a] = strtod(p, &p);
        int used = 0;
        sscanf(p, "%15s%n", e->source, &used);
        p += used;
        for (int a = 0; a < 16; a++) e->affine[a] = strtod(p, &p);
        assert_non_null(fgets(line, sizeof line, f));
        int64_t n = e->dims[0] * e->dims[1] * e->dims[2] * e->dims[3];
        e->values = malloc(sizeof(double) * (size_t)n);
        p = line;
        for (int64_t i = 0; i < n; i++) e->values[i] = strtod(p, &p);
        fclose(f);
        return;
    }
    fclose(f);
    fail_msg("no case %s in expected.txt", name);
}

static void check_case(const char *name, int datatype)
{
    expect_case e;
    expected(name, &e);
    bp_affine_source source = strcmp(e.source, "sform") == 0   ? BP_AFFINE_SFORM
                              : strcmp(e.source, "qform") == 0 ? BP_AFFINE_QFORM
                                                               : BP_AFFINE_SPACING;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", DIR, name);
    bp_tensor *t = NULL;
    bp_volume_info info;
    BP_OK_OR_FAIL(bp_nifti_read(path, true, &t, &info));
    assert_int_equal(t->ndim, 4);
    for (int a = 0; a < 4; a++) {
        assert_int_equal(t->shape[a], e.dims[a]);
        assert_int_equal(info.dims[a], e.dims[a]);
    }
    for (int a = 0; a < 3; a++) BP_ASSERT_CLOSE(info.spacing[a], e.spacing[a], 1e-12, 1e-7);
    assert_int_equal(info.affine_source, source);
    assert_int_equal(info.datatype, datatype);
    for (int a = 0; a < 16; a++) BP_ASSERT_CLOSE(info.affine[a / 4][a % 4], e.affine[a], 1e-6, 1e-6);
    const float *v = t->data;
    for (int64_t i = 0; i < t->numel; i++) /* the values as float32: exact for these integers, rounded otherwise */
        if ((double)v[i] != (double)(float)e.values[i])
            fail_msg("%s: value %lld is %.9g, nibabel reads %.9g", name, (long long)i, (double)v[i], e.values[i]);
    bp_tensor_free(t);
    free(e.values);
}

static void test_read_fixtures(void **state)
{
    (void)state;
    if (!bp_nifti_available()) skip();
    check_case("int16_scaled.nii.gz", 4);
    check_case("uint8_4d.nii", 2);
    check_case("float64_bigendian.nii", 64);
    check_case("float32_nifti2.nii.gz", 16);
    check_case("uint16_2d.nii", 512);
    /* the forms these files carry, as written by the generator */
    expect_case e;
    expected("uint8_4d.nii", &e);
    assert_string_equal(e.source, "qform");
    free(e.values);
    expected("int16_scaled.nii.gz", &e);
    assert_string_equal(e.source, "sform");
    free(e.values);
}

static void test_read_errors(void **state)
{
    (void)state;
    if (!bp_nifti_available()) skip();
    bp_tensor *t = (bp_tensor *)1;
    BP_EXPECT_ERR(bp_nifti_read(DIR "/truncated.nii", false, &t, NULL), BP_EFORMAT, "truncated.nii: the voxel data is truncated");
    assert_null(t);
    BP_EXPECT_ERR(bp_nifti_read(DIR "/not_nifti.nii", false, &t, NULL), BP_EFORMAT, "not_nifti.nii: not a NIfTI");
    BP_EXPECT_ERR(bp_nifti_read(DIR "/rgb.nii", false, &t, NULL), BP_EUNSUPPORTED, "rgb.nii: datatype 128");
    BP_EXPECT_ERR(bp_nifti_read(DIR "/missing.nii", false, &t, NULL), BP_EIO, "missing.nii: cannot open");
    BP_EXPECT_ERR(bp_nifti_read(DIR, false, &t, NULL), BP_EIO, "not a regular file");
    char fifo[] = "/tmp/bpc_test_nifti_fifoXXXXXX";
    assert_non_null(mkdtemp(fifo));
    char fp[600];
    snprintf(fp, sizeof fp, "%s/x.nii", fifo);
    assert_int_equal(mkfifo(fp, 0600), 0);
    BP_EXPECT_ERR(bp_nifti_read(fp, false, &t, NULL), BP_EIO, "x.nii: not a regular file"); /* no hang */
    unlink(fp);
    rmdir(fifo);
    BP_EXPECT_ERR(bp_nifti_read(DIR "/x.nii", false, NULL, NULL), BP_EINVAL, "out is NULL");
}

/* a scratch folder for written files */
static char g_dir[64];
static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/bpc_test_niftiXXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}
static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd);
}

static void test_write_round_trip(void **state)
{
    (void)state;
    if (!bp_nifti_available()) skip();
    /* the geometry of a scan with an oblique sform */
    bp_tensor *scan = NULL, *back = NULL, *lab = NULL;
    bp_volume_info info, binfo;
    BP_OK_OR_FAIL(bp_nifti_read(DIR "/int16_scaled.nii.gz", true, &scan, &info));
    const char *names[] = {"out.nii", "out.nii.gz"};
    for (int n = 0; n < 2; n++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", g_dir, names[n]);
        BP_OK_OR_FAIL(bp_nifti_write(p, scan, 16, &info));
        BP_OK_OR_FAIL(bp_nifti_read(p, true, &back, &binfo));
        assert_int_equal(bp_tensor_nbytes(back), bp_tensor_nbytes(scan));
        assert_memory_equal(back->data, scan->data, bp_tensor_nbytes(scan)); /* float32: bit for bit */
        assert_int_equal(binfo.affine_source, BP_AFFINE_SFORM);
        assert_int_equal(binfo.sform_code, 2);
        for (int a = 0; a < 16; a++) BP_ASSERT_CLOSE(binfo.affine[a / 4][a % 4], info.affine[a / 4][a % 4], 1e-6, 1e-6);
        for (int a = 0; a < 3; a++) BP_ASSERT_CLOSE(binfo.spacing[a], info.spacing[a], 1e-6, 1e-6);
        bp_tensor_free(back);
        back = NULL;
    }
    /* a label map as uint8 (rounded), with the scan's geometry */
    BP_OK_OR_FAIL(bp_tensor_new(&lab, BP_FLOAT32, 3, (int64_t[]){5, 4, 3}));
    float *l = lab->data;
    for (int64_t i = 0; i < lab->numel; i++) l[i] = (float)(i % 4) + 0.2f;
    char p[256];
    snprintf(p, sizeof p, "%s/labels.nii.gz", g_dir);
    BP_OK_OR_FAIL(bp_nifti_write(p, lab, 2, &info));
    BP_OK_OR_FAIL(bp_nifti_read(p, true, &back, &binfo));
    assert_int_equal(binfo.datatype, 2);
    for (int64_t i = 0; i < lab->numel; i++) assert_true(((float *)back->data)[i] == (float)(i % 4));
    bp_tensor_free(back);
    /* a value that does not fit: an error naming the voxel; the earlier file stays */
    l[7] = 300;
    BP_EXPECT_ERR(bp_nifti_write(p, lab, 2, &info), BP_EINVAL, "voxel (0, 2, 1, 0) = 300 does not fit");
    BP_OK_OR_FAIL(bp_nifti_read(p, true, &back, NULL));
    assert_true(((float *)back->data)[7] == 3);
    bp_tensor_free(back);
    /* NaN: written as float32; nifticlib reads stored non-finite floats as 0 */
    l[7] = NAN;
    snprintf(p, sizeof p, "%s/nan.nii", g_dir);
    BP_OK_OR_FAIL(bp_nifti_write(p, lab, 16, NULL));
    BP_OK_OR_FAIL(bp_nifti_read(p, true, &back, &binfo));
    assert_true(((float *)back->data)[7] == 0);
    assert_int_equal(binfo.affine_source, BP_AFFINE_SPACING);
    bp_tensor_free(back);
    /* a float64 voxel beyond float32's range is refused when asked, and named */
    BP_EXPECT_ERR(bp_nifti_read(DIR "/float64_huge.nii", true, &back, NULL), BP_ENUMERIC,
                  "float64_huge.nii: voxel (1, 0, 1) of volume 0 is 1e+300");
    BP_OK_OR_FAIL(bp_nifti_read(DIR "/float64_huge.nii", false, &back, NULL));
    assert_true(isinf(((float *)back->data)[(1 * 2 + 0) * 2 + 1]));
    bp_tensor_free(back);
    /* argument errors */
    BP_EXPECT_ERR(bp_nifti_write("/tmp/x.png", lab, 2, NULL), BP_EINVAL, "must end in .nii or .nii.gz");
    BP_EXPECT_ERR(bp_nifti_write(p, lab, 64, NULL), BP_EINVAL, "datatype 64 is not written");
    BP_EXPECT_ERR(bp_nifti_write(p, scan, 16, &(bp_volume_info){.dims = {9, 9, 9, 1}}), BP_ESHAPE,
                  "the geometry is of 9 x 9 x 9");
    bp_tensor_free(lab);
    bp_tensor_free(scan);
}

/* Debian's insighttoolkit5-examples ships a T1 MRI and its label map: read in
 * place (numbers as nibabel 5.0 reads them); skipped when not installed. */
static void test_real_scan(void **state)
{
    (void)state;
    const char *t1 = "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz";
    const char *seg = "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1KmeansPrelimSegmentation.nii.gz";
    if (!bp_nifti_available() || access(t1, R_OK) != 0 || access(seg, R_OK) != 0) skip();
    bp_tensor *t = NULL, *s = NULL;
    bp_volume_info info;
    BP_OK_OR_FAIL(bp_nifti_read(t1, true, &t, &info));
    assert_int_equal(t->shape[0], 128);
    assert_int_equal(t->shape[1], 128);
    assert_int_equal(t->shape[2], 62);
    assert_int_equal(t->shape[3], 1);
    assert_int_equal(info.datatype, 4);
    BP_ASSERT_CLOSE(info.spacing[2], 3.0, 0, 0);
    assert_int_equal(info.affine_source, BP_AFFINE_SFORM);
    const double aff[16] = {-2, 0, 0, 0, 0, 0, 3, -254, 0, 2, 0, 0, 0, 0, 0, 1};
    for (int a = 0; a < 16; a++) BP_ASSERT_CLOSE(info.affine[a / 4][a % 4], aff[a], 1e-9, 0);
    const float *v = t->data;
    double sum = 0;
    for (int64_t i = 0; i < t->numel; i++) sum += v[i];
    BP_ASSERT_CLOSE(sum, 19533798.0, 0, 0);
    assert_true(v[(64 * 128 + 64) * 62 + 30] == 95);
    BP_OK_OR_FAIL(bp_nifti_read(seg, true, &s, NULL));
    sum = 0;
    for (int64_t i = 0; i < s->numel; i++) sum += ((const float *)s->data)[i];
    BP_ASSERT_CLOSE(sum, 1753763.0, 0, 0);
    bp_tensor_free(t);
    bp_tensor_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_fixtures),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test_setup_teardown(test_write_round_trip, setup_dir, teardown_dir),
        cmocka_unit_test(test_real_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
