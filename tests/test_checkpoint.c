/* tests/test_checkpoint.c — save_states / load_states and the three formats.
 *
 * Expected values come from three places: the reference state REF, built here
 * and in tests/gen_checkpoint.py from the same formulas (every dtype, 0-d,
 * empty, 8-d, signed zeros, infinities, denormals, extremes), compared bit
 * for bit; files written by NumPy (np.savez, np.savez_compressed, big-endian,
 * Fortran order, NPY 2.0) and by Python's json/struct/zlib, committed under
 * tests/data/ckpt_*; and byte layouts written out by hand below (the
 * safetensors header, the NPY preamble, the JSON text). */
#include "bp_test.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <bpc/checkpoint.h>
#include "../io/ckpt_internal.h"
#include "test_checkpoint_ref.h"

static const bp_ckpt_format all_formats[] = {BP_CKPT_SAFETENSORS, BP_CKPT_NPZ, BP_CKPT_JSON};
static const char *const ext_of[] = {"", ".safetensors", ".npz", ".json"};

/* ------------------------------------------------------------ temp folder */

static char g_dir[64];

static const char *in_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", g_dir, name);
    return buf;
}

static int n_files(void)
{
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void clear_dir(void)
{
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(in_dir(p, sizeof p, e->d_name));
    closedir(d);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/bpc_ckpt_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    clear_dir();
    rmdir(g_dir);
    return 0;
}

static int reset_each(void **state)
{
    (void)state;
    bp__ckpt_io_reset();
    bp_set_warning_handler(NULL, NULL);
    bp_clear_error();
    clear_dir();
    return 0;
}

/* A whole file in a malloc'ed buffer. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static const unsigned char *find_bytes(const unsigned char *hay, size_t n, const void *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return hay + i;
    return NULL;
}

static bp_dict *decode_ok(bp_ckpt_format fmt, const void *buf, size_t len)
{
    bp_dict *d = NULL;
    BP_OK_OR_FAIL(bp_checkpoint_decode(fmt, buf, len, &d));
    return d;
}

static bp_dict *read_data_file(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", BP_TEST_DATA_DIR, name);
    bp_dict *d = NULL;
    BP_OK_OR_FAIL(bp_checkpoint_read(path, &d));
    return d;
}

/* --------------------------------------------------------- a small model */

typedef struct plain {
    bp_node base;
} plain;
static const bp_node_class net_class = {.name = "Net", .size = sizeof(plain)};
static const bp_node_class lin_class = {.name = "Lin", .size = sizeof(plain)};

/* Lin(in, out): w TrainVar (in, out), b TrainVar (out,), steps int64 0-d. */
static bp_node *make_lin(const char *name, int64_t in, int64_t out)
{
    bp_node *n;
    BP_OK_OR_FAIL(bp_node_create(&n, &lin_class, name, NULL));
    bp_tensor *w, *b, *steps;
    BP_OK_OR_FAIL(bp_tensor_new(&w, BP_REAL_DTYPE, 2, (const int64_t[]){in, out}));
    BP_OK_OR_FAIL(bp_tensor_new(&b, BP_REAL_DTYPE, 1, &out));
    BP_OK_OR_FAIL(bp_tensor_new(&steps, BP_INT64, 0, NULL));
    BP_OK_OR_FAIL(bp_node_add_var(n, "w", BP_TRAINVAR, w, NULL));
    BP_OK_OR_FAIL(bp_node_add_var(n, "b", BP_TRAINVAR, b, NULL));
    BP_OK_OR_FAIL(bp_node_add_var(n, "steps", BP_VARIABLE, steps, NULL));
    bp_tensor_free(w);
    bp_tensor_free(b);
    bp_tensor_free(steps);
    return n;
}

/* Net "<name>" with children "<name>_<c>" for each character c of kids
 * (all Lin(3, 2); 'W' makes a Lin(4, 2) named like 'b'). */
static bp_node *make_net(const char *name, const char *kids)
{
    bp_node *n;
    BP_OK_OR_FAIL(bp_node_create(&n, &net_class, name, NULL));
    for (const char *k = kids; *k; k++) {
        char cname[64], attr[8];
        char c = *k == 'W' ? 'b' : *k;
        snprintf(cname, sizeof cname, "%s_%c", name, c);
        snprintf(attr, sizeof attr, "l%c", c);
        bp_node *l = make_lin(cname, *k == 'W' ? 4 : 3, 2);
        BP_OK_OR_FAIL(bp_node_add_child(n, attr, l));
        bp_node_free(l);
    }
    return n;
}

/* Every var of the tree gets values from seed: element j of the i-th var is
 * seed + 0.5 i + 0.125 j (exact in float). */
static void set_values(bp_node *n, double seed)
{
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &c));
    for (size_t i = 0; i < bp_collector_len(c); i++) {
        bp_tensor *t = bp_collector_var(c, i)->value;
        for (int64_t j = 0; j < t->numel; j++) bp_tensor_set(t, j, seed + 0.5 * (double)i + 0.125 * (double)j);
    }
    bp_collector_free(c);
}

static void expect_values(bp_node *n, double seed)
{
    bp_collector *c;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &c));
    for (size_t i = 0; i < bp_collector_len(c); i++) {
        const bp_tensor *t = bp_collector_var(c, i)->value;
        for (int64_t j = 0; j < t->numel; j++) {
            double want = seed + 0.5 * (double)i + 0.125 * (double)j;
            if (t->dtype == BP_INT64) want = (double)(int64_t)want;
            if (bp_tensor_get(t, j) != want)
                fail_msg("%s[%lld] = %g, want %g (seed %g)", bp_collector_key(c, i), (long long)j, bp_tensor_get(t, j),
                         want, seed);
        }
    }
    bp_collector_free(c);
}

/* Warnings captured in order. */
static char g_warn[4][512];
static int g_nwarn;
static void catch_warning(const char *msg, void *user)
{
    (void)user;
    if (g_nwarn < 4) snprintf(g_warn[g_nwarn], sizeof g_warn[0], "%s", msg);
    g_nwarn++;
}

/* ============================================================== formats */

static void test_format_by_extension(void **state)
{
    (void)state;
    bp_ckpt_format f;
    BP_OK_OR_FAIL(bp_checkpoint_format("a/b/model.safetensors", &f));
    assert_int_equal(f, BP_CKPT_SAFETENSORS);
    BP_OK_OR_FAIL(bp_checkpoint_format("m.npz", &f));
    assert_int_equal(f, BP_CKPT_NPZ);
    BP_OK_OR_FAIL(bp_checkpoint_format(".json", &f));
    assert_int_equal(f, BP_CKPT_JSON);
    assert_string_equal(bp_checkpoint_format_name(BP_CKPT_NPZ), "npz");
    assert_string_equal(bp_checkpoint_format_name((bp_ckpt_format)9), "?");
    const char *bad[] = {"m.h5", "m.pkl", "m.NPZ", "m.npz.bak", "model", "m.safetensor"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        BP_EXPECT_ERR(bp_checkpoint_format(bad[i], &f), BP_EINVAL, "['.safetensors', '.npz', '.json']");
    BP_EXPECT_ERR(bp_checkpoint_format("m.h5", &f), BP_EINVAL, "Unknown file format: \"m.h5\"");
    BP_EXPECT_ERR(bp_checkpoint_format(NULL, &f), BP_EINVAL, "filename is NULL");
    BP_EXPECT_ERR(bp_checkpoint_format("m.npz", NULL), BP_EINVAL, "out is NULL");

    /* Every entry point refuses the extension before touching the disk. */
    char p[512];
    bp_dict *d = small_state(), *got = (bp_dict *)1;
    BP_EXPECT_ERR(bp_checkpoint_write(in_dir(p, sizeof p, "m.h5"), d), BP_EINVAL, "Unknown file format");
    BP_EXPECT_ERR(bp_checkpoint_read(p, &got), BP_EINVAL, "Unknown file format");
    assert_null(got);
    bp_node *net = make_net("Ext", "a");
    BP_EXPECT_ERR(bp_save_states(net, p, NULL, NULL), BP_EINVAL, "Unknown file format");
    BP_EXPECT_ERR(bp_load_states(net, p, NULL, NULL, NULL, NULL), BP_EINVAL, "Unknown file format");
    assert_int_equal(n_files(), 0);
    bp_node_free(net);
    bp_dict_free(d);
}

static void test_roundtrip_every_format(void **state)
{
    (void)state;
    bp_dict *ref = ref_state();
    for (size_t f = 0; f < 3; f++) {
        bp_ckpt_format fmt = all_formats[f];
        void *buf;
        size_t len;
        BP_OK_OR_FAIL(bp_checkpoint_encode(fmt, ref, &buf, &len));
        bp_dict *got = decode_ok(fmt, buf, len);
        expect_same(got, ref, true);
        bp_dict_free(got);

        /* the same bytes through a file */
        char p[512], name[32];
        snprintf(name, sizeof name, "ref%s", ext_of[fmt]);
        BP_OK_OR_FAIL(bp_checkpoint_write(in_dir(p, sizeof p, name), ref));
        size_t flen;
        unsigned char *fb = slurp(p, &flen);
        assert_int_equal(flen, len);
        assert_memory_equal(fb, buf, len);
        free(fb);
        BP_OK_OR_FAIL(bp_checkpoint_read(p, &got));
        expect_same(got, ref, true);
        bp_dict_free(got);
        free(buf);

        /* an empty checkpoint is valid */
        bp_dict *empty;
        BP_OK_OR_FAIL(bp_dict_new(&empty));
        BP_OK_OR_FAIL(bp_checkpoint_encode(fmt, empty, &buf, &len));
        got = decode_ok(fmt, buf, len);
        assert_int_equal(bp_dict_len(got), 0);
        bp_dict_free(got);
        bp_dict_free(empty);
        free(buf);
    }
    assert_int_equal(n_files(), 3);
    bp_dict_free(ref);
}

/* NaN has no JSON number: it goes through the string "NaN". */
static void test_nan_roundtrip(void **state)
{
    (void)state;
    bp_dict *d;
    BP_OK_OR_FAIL(bp_dict_new(&d));
    put(d, "f", BP_FLOAT32, 1, (const int64_t[]){2}, (const float[]){NAN, 1.0f});
    put(d, "g", BP_FLOAT64, 1, (const int64_t[]){1}, (const double[]){NAN});
    for (size_t f = 0; f < 3; f++) {
        void *buf;
        size_t len;
        BP_OK_OR_FAIL(bp_checkpoint_encode(all_formats[f], d, &buf, &len));
        bp_dict *got = decode_ok(all_formats[f], buf, len);
        expect_same(got, d, true);
        bp_dict_free(got);
        free(buf);
    }
    bp_dict_free(d);
}

/* bpc's safetensors bytes equal those gen_checkpoint.py built by hand from the
 * reference layout, with the CRC from Python's zlib.crc32. */
static void test_safetensors_layout_matches_reference(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    void *buf;
    size_t len, flen;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_SAFETENSORS, d, &buf, &len));
    char p[512];
    snprintf(p, sizeof p, "%s/corpus/safetensors/seed_2", BP_FUZZ_DIR);
    unsigned char *want = slurp(p, &flen);
    assert_int_equal(len, flen);
    assert_memory_equal(buf, want, len);
    /* and by hand: the header, then 1.0f 2.0f and int64 3 */
    const char *hdr = "{\"__metadata__\":{\"format\":\"bpc\",\"version\":\"1\",\"data_crc32\":\"1fdc9849\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}";
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    const unsigned char *b = buf;
    assert_int_equal(b[0] | b[1] << 8, padded);
    for (int i = 2; i < 8; i++) assert_int_equal(b[i], 0);
    assert_memory_equal(b + 8, hdr, hl);
    for (size_t i = hl; i < padded; i++) assert_int_equal(b[8 + i], ' ');
    const unsigned char data[16] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 3, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(len, 8 + padded + 16);
    assert_memory_equal(b + 8 + padded, data, 16);
    free(want);
    free(buf);
    bp_dict_free(d);
}

/* Each member is an NPY 1.0 file laid out as np.save lays it out. */
static void test_npz_member_layout(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    void *buf;
    size_t len;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_NPZ, d, &buf, &len));
    char want[129];
    const char *dicts[2] = {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                            "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"};
    const unsigned char *at = buf;
    for (int m = 0; m < 2; m++) {
        memcpy(want, "\x93NUMPY\x01\x00\x76\x00", 10);
        size_t k = strlen(dicts[m]);
        memcpy(want + 10, dicts[m], k);
        memset(want + 10 + k, ' ', 127 - 10 - k);
        want[127] = '\n';
        /* 10 + 0x76 = 128: the data starts 64-byte aligned */
        at = find_bytes(at, len - (size_t)(at - (const unsigned char *)buf), want, 128);
        if (!at) fail_msg("member %d: NPY preamble \"%s\" not found", m, dicts[m]);
        at += 128;
    }
    static const unsigned char three[8] = {3, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(at, three, 8);
    assert_non_null(find_bytes(buf, len, "a.npy", 5));
    assert_non_null(find_bytes(buf, len, "n.npy", 5));
    free(buf);
    bp_dict_free(d);
}

static void test_json_text(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    put(d, "f", BP_FLOAT32, 1, (const int64_t[]){5}, (const float[]){0.1f, -0.0f, NAN, -INFINITY, 1e-45f});
    put(d, "x", BP_FLOAT64, 1, (const int64_t[]){2}, (const double[]){0.1, 1e300});
    put(d, "q\"k", BP_UINT8, 2, (const int64_t[]){1, 2}, (const uint8_t[]){0, 255});
    void *buf;
    size_t len;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_JSON, d, &buf, &len));
    const char *want = "{\"format\": \"bpc\", \"version\": 2, \"tensors\": {\n"
                       " \"a\": {\"dtype\": \"float32\", \"shape\": [2], \"data\": [1, 2]},\n"
                       " \"n\": {\"dtype\": \"int64\", \"shape\": [], \"data\": [3]},\n"
                       " \"f\": {\"dtype\": \"float32\", \"shape\": [5], \"data\": [0.100000001, -0.0, \"NaN\", "
                       "\"-Infinity\", 1.40129846e-45]},\n"
                       " \"x\": {\"dtype\": \"float64\", \"shape\": [2], \"data\": [0.10000000000000001, "
                       "1.0000000000000001e+300]},\n"
                       " \"q\\\"k\": {\"dtype\": \"uint8\", \"shape\": [1, 2], \"data\": [0, 255]}\n"
                       "}, \"data_crc32\": \"598fcb56\"}\n"; /* tests/gen_checkpoint.py's json_crc of this dict */
    assert_int_equal(len, strlen(want));
    assert_memory_equal(buf, want, len);
    bp_dict *got = decode_ok(BP_CKPT_JSON, buf, len);
    expect_same(got, d, true);
    bp_dict_free(got);
    free(buf);
    bp_dict_free(d);
}

/* ========================================================= other writers */

static void test_reads_numpy_files(void **state)
{
    (void)state;
    bp_dict *ref = ref_state();
    const char *files[] = {"ckpt_numpy_savez.npz", "ckpt_numpy_compressed.npz"};
    for (int i = 0; i < 2; i++) {
        bp_dict *got = read_data_file(files[i]);
        expect_same(got, ref, true); /* np.savez keeps the kwargs' order */
        bp_dict_free(got);
    }
    bp_dict_free(ref);
}

static void test_reads_numpy_layouts(void **state)
{
    (void)state;
    bp_dict *got = read_data_file("ckpt_numpy_layouts.npz");
    assert_int_equal(bp_dict_len(got), 5);
    bp_dict *want;
    BP_OK_OR_FAIL(bp_dict_new(&want));
    double a[24];
    float af[24];
    for (int i = 0; i < 24; i++) af[i] = (float)(a[i] = i * 0.5 - 3.0);
    const int64_t s3[3] = {2, 3, 4};
    put(want, "be_f8", BP_FLOAT64, 3, s3, a);
    put(want, "be_i4", BP_INT32, 1, (const int64_t[]){3}, (const int32_t[]){1, -2, 70000});
    put(want, "fortran", BP_FLOAT64, 3, s3, a);    /* back in C order */
    put(want, "fortran_be", BP_FLOAT32, 3, s3, af);
    put(want, "v2", BP_INT64, 2, (const int64_t[]){1, 3}, (const int64_t[]){7, 8, 9});
    expect_same(got, want, true);
    bp_dict_free(want);
    bp_dict_free(got);
}

static void test_reads_python_safetensors_and_json(void **state)
{
    (void)state;
    bp_dict *ref = ref_state();
    const char *files[] = {"ckpt_python.safetensors", "ckpt_python_bpc.safetensors", "ckpt_python.json",
                           "ckpt_python_v1.json"};
    for (int i = 0; i < 4; i++) {
        bp_dict *got = read_data_file(files[i]);
        expect_same(got, ref, i >= 2); /* the safetensors files list keys sorted */
        bp_dict_free(got);
    }
    bp_dict_free(ref);
}

/* ============================================================ corruption */

/* Every strict prefix of a file is rejected as BP_EFORMAT (a JSON document
 * without its final newline is still the whole document). */
static void test_every_truncation_rejected(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    for (size_t f = 0; f < 3; f++) {
        void *buf;
        size_t len;
        BP_OK_OR_FAIL(bp_checkpoint_encode(all_formats[f], d, &buf, &len));
        size_t upto = all_formats[f] == BP_CKPT_JSON ? len - 1 : len;
        for (size_t n = 0; n < upto; n++) {
            bp_dict *got = (bp_dict *)1;
            bp_status st = bp_checkpoint_decode(all_formats[f], buf, n, &got);
            if (st != BP_EFORMAT)
                fail_msg("%s truncated to %zu of %zu bytes: %s (%s)", bp_checkpoint_format_name(all_formats[f]), n,
                         len, bp_status_name(st), bp_last_error());
            assert_null(got);
        }
        free(buf);
    }
    /* and a truncated file on disk names the file */
    char p[512];
    BP_OK_OR_FAIL(bp_checkpoint_write(in_dir(p, sizeof p, "t.safetensors"), d));
    assert_int_equal(truncate(p, 100), 0);
    bp_dict *got;
    BP_EXPECT_ERR(bp_checkpoint_read(p, &got), BP_EFORMAT, "t.safetensors\": bad header length 184: only 92 bytes");
    BP_OK_OR_FAIL(bp_checkpoint_write(p, d));
    assert_int_equal(truncate(p, 200), 0);
    BP_EXPECT_ERR(bp_checkpoint_read(p, &got), BP_EFORMAT, "out of range (the data section has 8 bytes)");
    bp_dict_free(d);
}

/* Any flipped bit of the data is caught: by data_crc32 (safetensors) or the
 * member's CRC-32 (npz). */
static void test_every_data_bitflip_detected(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    void *buf;
    size_t len;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_SAFETENSORS, d, &buf, &len));
    unsigned char *b = buf;
    for (size_t i = len - 16; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1 << bit);
            bp_dict *got;
            BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, b, len, &got), BP_EFORMAT,
                          "checksum mismatch: data_crc32 is 1fdc9849 in the header");
            b[i] ^= (unsigned char)(1 << bit);
        }
    free(buf);

    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_NPZ, d, &buf, &len));
    b = buf;
    const unsigned char *npy = find_bytes(b, len, "\x93NUMPY", 6);
    assert_non_null(npy);
    size_t data = (size_t)(npy - b) + 128;
    for (size_t i = data; i < data + 8; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1 << bit);
            bp_dict *got;
            BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_NPZ, b, len, &got), BP_EFORMAT, "CRC error");
            b[i] ^= (unsigned char)(1 << bit);
        }
    free(buf);
    bp_dict_free(d);
}

/* Flipping any bit anywhere never crashes: the result is an error or a
 * well-formed dict (a flip inside a key name can give another valid key). */
static void test_any_bitflip_is_safe(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    for (size_t f = 0; f < 3; f++) {
        void *buf;
        size_t len;
        BP_OK_OR_FAIL(bp_checkpoint_encode(all_formats[f], d, &buf, &len));
        unsigned char *b = buf;
        for (size_t i = 0; i < len; i++)
            for (int bit = 0; bit < 8; bit++) {
                b[i] ^= (unsigned char)(1 << bit);
                bp_dict *got = NULL;
                bp_status st = bp_checkpoint_decode(all_formats[f], b, len, &got);
                if (st != BP_OK && st != BP_EFORMAT)
                    fail_msg("%s byte %zu bit %d: %s (%s)", bp_checkpoint_format_name(all_formats[f]), i, bit,
                             bp_status_name(st), bp_last_error());
                if (st == BP_OK) {
                    assert_non_null(got);
                    for (size_t k = 0; k < bp_dict_len(got); k++) assert_non_null(bp_dict_tensor(got, k));
                } else {
                    assert_null(got);
                    assert_non_null(strstr(bp_last_error(), "checkpoint_decode: "));
                }
                bp_dict_free(got);
                b[i] ^= (unsigned char)(1 << bit);
            }
        free(buf);
    }
    bp_dict_free(d);
}

/* A safetensors file: 8-byte length, header text (unpadded), data. */
static unsigned char *st_file(const char *hdr, const void *data, size_t dlen, size_t *len)
{
    size_t hl = strlen(hdr);
    unsigned char *b = malloc(8 + hl + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, hdr, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    *len = 8 + hl + dlen;
    return b;
}

static void expect_st_error(const char *hdr, size_t dlen, const char *needle)
{
    unsigned char data[64] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};
    size_t len;
    unsigned char *b = st_file(hdr, data, dlen, &len);
    bp_dict *got = (bp_dict *)1;
    bp_status st = bp_checkpoint_decode(BP_CKPT_SAFETENSORS, b, len, &got);
    if (st != BP_EFORMAT || !strstr(bp_last_error(), needle))
        fail_msg("header %s: %s \"%s\", expected BP_EFORMAT with \"%s\"", hdr, bp_status_name(st), bp_last_error(),
                 needle);
    assert_null(got);
    free(b);
}

static void test_safetensors_rejects(void **state)
{
    (void)state;
    bp_dict *got;
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, "\x02\0\0\0", 4, &got), BP_EFORMAT,
                  "truncated: 4 bytes, a safetensors file starts with an 8-byte header length");
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, "\x09\0\0\0\0\0\0\0{}", 10, &got), BP_EFORMAT,
                  "bad header length 9: only 2 bytes follow it");
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, "\0\0\0\0\0\0\0\x80{}", 10, &got), BP_EFORMAT,
                  "bad header length 9223372036854775808");
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, "\0\0\0\0\0\0\0\0{}", 10, &got), BP_EFORMAT,
                  "bad header length 0 (expected 2 to");
    BP_OK_OR_FAIL(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, "\x02\0\0\0\0\0\0\0{}", 10, &got));
    assert_int_equal(bp_dict_len(got), 0);
    bp_dict_free(got);

    const char *A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[512];
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],", 8, "invalid JSON header");
    expect_st_error("[1, 2]", 0, "the header must be a JSON object");
    expect_st_error("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
                    "\"a\" has the unknown dtype \"BF16\" (bpc reads F32, F64, I32, I64, U8)");
    expect_st_error("{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype must be a string");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                    "shape (3,) of F32 needs 3 bytes but data_offsets span 8");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,100]}}", 8,
                    "data_offsets [0, 100] out of range (the data section has 8 bytes)");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "out of range");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                    "data_offsets must be [begin, end]");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
                    "data_offsets must be [begin, end]");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                    "shape[0] must be an integer >= 0");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                    "shape must be an array of at most 8 integers");
    expect_st_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}",
                    8, "the shape's element count overflows");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "\"a\" lacks \"data_offsets\"");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
                    "\"a\" has the unknown field \"x\"");
    expect_st_error("{\"a\":[1]}", 8, "\"a\" must be a JSON object");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "\"b\" [4, 8) overlaps \"a\" (ends at 8)");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                    12, "bytes [4, 8) of the data section belong to no tensor");
    expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                    "bytes [4, 8) of the data section belong to no tensor");
    snprintf(h, sizeof h, "{%s,%s}", A, A);
    expect_st_error(h, 8, "invalid JSON header: duplicate object key");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"bpc\",\"version\":\"1\",\"data_crc32\":\"00000000\"},%s}", A);
    expect_st_error(h, 8, "checksum mismatch: data_crc32 is 00000000 in the header but the data gives 2e3fa576");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"bpc\",\"version\":\"2\",\"data_crc32\":\"2e3fa576\"},%s}", A);
    expect_st_error(h, 8, "bpc checkpoint version \"2\", this build reads version 1");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"bpc\",\"version\":\"1\"},%s}", A);
    expect_st_error(h, 8, "a bpc checkpoint without data_crc32");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"bpc\",\"version\":\"1\",\"data_crc32\":\"9F00BF20\"},%s}", A);
    expect_st_error(h, 8, "must be 8 lower-case hex digits");
    snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"bpc\",\"version\":1},%s}", A);
    expect_st_error(h, 8, "__metadata__ \"version\" must be a string");
    snprintf(h, sizeof h, "{\"__metadata__\":[],%s}", A);
    expect_st_error(h, 8, "__metadata__ must be a JSON object");
    expect_st_error("{\"a\\u0001\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                    "has the byte 0x01 at 1 (keys are printable ASCII)");
    expect_st_error("{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "key is empty");

    /* the right checksum, and another writer's metadata without one, load */
    snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"bpc\",\"version\":\"1\",\"data_crc32\":\"2e3fa576\"},%s}", A);
    const unsigned char data[8] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};
    for (int i = 0; i < 2; i++) {
        if (i) snprintf(h, sizeof h, "{\"__metadata__\":{\"format\":\"pt\"},%s}", A);
        size_t len;
        unsigned char *b = st_file(h, data, 8, &len);
        got = decode_ok(BP_CKPT_SAFETENSORS, b, len);
        assert_int_equal(bp_dict_len(got), 1);
        assert_true(bp_tensor_get(bp_dict_get_tensor(got, "a"), 1) == 2.0);
        bp_dict_free(got);
        free(b);
    }
}

static void test_npz_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *file, *needle;
    } cases[] = {
        {"not_npy", "member \"a.txt\" is not a .npy array"},
        {"magic", "member \"a.npy\" is not an NPY file (bad magic)"},
        {"version", "NPY version 4.0, bpc reads 1.0 to 3.0"},
        {"complex", "bad NPY header (unknown dtype"},
        {"bool", "bad NPY header (unknown dtype"},
        {"size", "shape (3,) of float32 needs 12 data bytes, the member has 8"},
        {"trailing", "shape (2,) of float32 needs 8 data bytes, the member has 12"},
        {"syntax", "bad NPY header (expected a quoted key)"},
        {"extra_key", "bad NPY header (unknown or repeated key"},
        {"negative", "bad NPY header (shape must be a tuple"},
        {"header_len", "header length 32767 past the member's 136 bytes"},
        {"duplicate", "duplicate keys: two members of the archive have the same name"},
        {"bzip2", "uses compression method 12 (bpc reads stored and deflate)"},
        {"crc", "member \"a.npy\": CRC error"},
        {"not_zip", "not a valid .npz (zip) archive"},
        {"key", "(keys are printable ASCII)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/ckpt_bad_%s.npz", BP_TEST_DATA_DIR, cases[i].file);
        bp_dict *got = (bp_dict *)1;
        bp_status st = bp_checkpoint_read(p, &got);
        if (st != BP_EFORMAT || !strstr(bp_last_error(), cases[i].needle) || !strstr(bp_last_error(), p))
            fail_msg("%s: %s \"%s\", expected BP_EFORMAT naming the file with \"%s\"", cases[i].file,
                     bp_status_name(st), bp_last_error(), cases[i].needle);
        assert_null(got);
        /* the same bytes from memory */
        size_t len;
        unsigned char *b = slurp(p, &len);
        BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_NPZ, b, len, &got), BP_EFORMAT, cases[i].needle);
        free(b);
    }
}

static void expect_json_error(const char *text, const char *needle)
{
    bp_dict *got = (bp_dict *)1;
    bp_status st = bp_checkpoint_decode(BP_CKPT_JSON, text, strlen(text), &got);
    if (st != BP_EFORMAT || !strstr(bp_last_error(), needle))
        fail_msg("%s: %s \"%s\", expected BP_EFORMAT with \"%s\"", text, bp_status_name(st), bp_last_error(), needle);
    assert_null(got);
}

static void test_json_rejects(void **state)
{
    (void)state;
#define HEAD "{\"format\": \"bpc\", \"version\": 1, \"tensors\": {"
    expect_json_error("", "invalid JSON");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"float32\", ", "invalid JSON");
    expect_json_error("[1]", "the file must hold a JSON object");
    expect_json_error("{\"format\": \"npz\", \"version\": 1, \"tensors\": {}}", "\"format\" must be \"bpc\", got \"npz\"");
    expect_json_error("{\"version\": 1, \"tensors\": {}}", "\"format\" must be \"bpc\", got (none)");
    expect_json_error("{\"format\": \"bpc\", \"version\": 3, \"tensors\": {}}",
                      "bpc checkpoint version 3, this build reads versions 1 and 2");
    /* version 2 has a checksum; version 1 may not */
    expect_json_error("{\"format\": \"bpc\", \"version\": 2, \"tensors\": {}}",
                      "a version 2 checkpoint without \"data_crc32\"");
    expect_json_error("{\"format\": \"bpc\", \"version\": 1, \"tensors\": {}, \"data_crc32\": \"00000000\"}",
                      "unknown field \"data_crc32\" (version 1 has format, version, tensors)");
    expect_json_error("{\"format\": \"bpc\", \"version\": 2, \"tensors\": {}, \"data_crc32\": \"0000000\"}",
                      "data_crc32 \"0000000\" (a string) must be a string of 8 lower-case hex digits");
    expect_json_error("{\"format\": \"bpc\", \"version\": 2, \"tensors\": {}, \"data_crc32\": 0}",
                      "data_crc32 0 must be a string of 8 lower-case hex digits");
    expect_json_error("{\"format\": \"bpc\", \"version\": 2, \"tensors\": {}, \"data_crc32\": \"00000001\"}",
                      "checksum mismatch: data_crc32 is 00000001 in the file but the tensors give 00000000");
    expect_json_error("{\"format\": \"bpc\", \"version\": 1, \"tensors\": []}", "\"tensors\" must be a JSON object");
    expect_json_error("{\"format\": \"bpc\", \"version\": 1, \"tensors\": {}, \"x\": 0}", "unknown field \"x\"");
    expect_json_error("{\"format\": \"bpc\", \"format\": \"bpc\", \"version\": 1, \"tensors\": {}}",
                      "duplicate object key");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int8\", \"shape\": [1], \"data\": [1]}}}",
                      "\"a\" has an unknown dtype \"int8\"");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int32\", \"shape\": [1], \"data\": [1]},"
                           " \"a\": {\"dtype\": \"int32\", \"shape\": [1], \"data\": [1]}}}",
                      "duplicate object key");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int32\", \"shape\": [2, 2], \"data\": [1, 2, 3]}}}",
                      "shape (2,2) has 4 elements but data lists 3");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int32\", \"shape\": [2], \"data\": 5}}}", "data is not an array");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int32\", \"shape\": [1], \"data\": [2147483648]}}}",
                      "data[0] must be an int32 integer");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int32\", \"shape\": [1], \"data\": [1.5]}}}",
                      "data[0] must be an int32 integer");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"uint8\", \"shape\": [2], \"data\": [0, 256]}}}",
                      "data[1] must be an integer in [0, 255]");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"int64\", \"shape\": [1], \"data\": [\"1\"]}}}",
                      "data[0] must be an integer");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"float32\", \"shape\": [1], \"data\": [\"nan\"]}}}",
                      "data[0] must be a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"float32\", \"shape\": [1], \"data\": [1e39]}}}",
                      "out of float32's range");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"float64\", \"shape\": [1], \"data\": [1e999]}}}", "invalid JSON");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"float32\", \"shape\": [-1], \"data\": []}}}",
                      "shape[0] must be an integer >= 0");
    expect_json_error(HEAD "\"a\": {\"dtype\": \"float32\", \"shape\": [1], \"data\": [1], \"grad\": 0}}}",
                      "\"a\" has the unknown field \"grad\"");
    expect_json_error(HEAD "\"a\": {\"shape\": [1], \"data\": [1]}}}", "\"a\" lacks \"dtype\"");
    expect_json_error(HEAD "\"__metadata__\": {\"dtype\": \"float32\", \"shape\": [1], \"data\": [1]}}}",
                      "\"__metadata__\" is reserved");
    /* the largest float32 prints as 3.40282347e+38, which must read back */
    const char *fmax = HEAD "\"a\": {\"dtype\": \"float32\", \"shape\": [1], \"data\": [3.40282347e+38]}}}";
    bp_dict *got = decode_ok(BP_CKPT_JSON, fmax, strlen(fmax));
    assert_true(((float *)bp_dict_get_tensor(got, "a")->data)[0] == 3.40282347e38f);
    bp_dict_free(got);
#undef HEAD
}

/* ======================================================= save/load states */

static void test_save_load_states_every_format(void **state)
{
    (void)state;
    for (size_t f = 0; f < 3; f++) {
        char p[512], name[32];
        snprintf(name, sizeof name, "model%s", ext_of[all_formats[f]]);
        in_dir(p, sizeof p, name);
        bp_node *net = make_net("Net", "ab");
        set_values(net, 1.0);
        bp_dict *meta;
        BP_OK_OR_FAIL(bp_dict_new(&meta));
        int64_t epoch = 7;
        put(meta, "epoch", BP_INT64, 0, NULL, &epoch);
        put(meta, "loss", BP_FLOAT64, 0, NULL, (const double[]){0.25});
        BP_OK_OR_FAIL(bp_save_states(net, p, NULL, meta));
        bp_dict_free(meta);
        assert_int_equal(n_files(), 1);

        /* the file holds BrainPy's flat absolute keys, then meta/ */
        bp_dict *raw;
        BP_OK_OR_FAIL(bp_checkpoint_read(p, &raw));
        const char *keys[] = {"Net_a.w", "Net_a.b", "Net_a.steps", "Net_b.w", "Net_b.b", "Net_b.steps",
                              "meta/epoch", "meta/loss"};
        assert_int_equal(bp_dict_len(raw), 8);
        for (int i = 0; i < 8; i++) assert_string_equal(bp_dict_key(raw, (size_t)i), keys[i]);
        bp_dict_free(raw);

        /* into a fresh model of the same structure */
        bp_node_free(net);
        net = make_net("Net", "ab");
        set_values(net, 5.0);
        bp_load_result r;
        bp_dict *got_meta;
        BP_OK_OR_FAIL(bp_load_states(net, p, NULL, NULL, &r, &got_meta));
        expect_values(net, 1.0);
        assert_int_equal(r.n_missing, 0);
        assert_int_equal(r.n_unexpected, 0);
        assert_int_equal(bp_dict_len(got_meta), 2);
        assert_true(bp_tensor_get(bp_dict_get_tensor(got_meta, "epoch"), 0) == 7.0);
        assert_int_equal(bp_dict_get_tensor(got_meta, "epoch")->dtype, BP_INT64);
        assert_true(bp_tensor_get(bp_dict_get_tensor(got_meta, "loss"), 0) == 0.25);
        bp_dict_free(got_meta);
        bp_load_result_clear(&r);

        /* metadata may be dropped; a subset of vars can be saved and loaded */
        set_values(net, 9.0);
        BP_OK_OR_FAIL(bp_load_states(net, p, NULL, NULL, NULL, NULL));
        expect_values(net, 1.0);
        bp_collector *tv;
        BP_OK_OR_FAIL(bp_node_train_vars(net, NULL, &tv));
        BP_OK_OR_FAIL(bp_save_states(net, p, tv, NULL));
        set_values(net, 3.0);
        BP_OK_OR_FAIL(bp_load_states(net, p, tv, NULL, NULL, NULL));
        bp_tensor *steps = bp_node_var(bp_node_child(net, "la"), "steps")->value;
        assert_true(bp_tensor_get(steps, 0) == 4.0); /* 3 + 0.5*2, not in the file: kept */
        assert_true(bp_tensor_get(bp_node_var(bp_node_child(net, "la"), "w")->value, 0) == 1.0);
        /* the whole tree against a train_vars-only file: the state vars are missing */
        BP_EXPECT_ERR(bp_load_states(net, p, NULL, NULL, NULL, NULL), BP_EFORMAT,
                      "0 unexpected keys [], 2 missing keys ['Net_a.steps', 'Net_b.steps']");
        bp_collector_free(tv);
        bp_node_free(net);
        clear_dir();
    }
}

static void test_load_another_model(void **state)
{
    (void)state;
    char p[512];
    in_dir(p, sizeof p, "ab.safetensors");
    bp_node *net = make_net("Net", "ab");
    set_values(net, 1.0);
    BP_OK_OR_FAIL(bp_save_states(net, p, NULL, NULL));
    bp_node_free(net);

    /* Net with children a and c: Net_b.* unexpected, Net_c.* missing */
    net = make_net("Net", "ac");
    set_values(net, 2.0);
    bp_load_result r = {0};
    bp_dict *meta = (bp_dict *)1;
    BP_EXPECT_ERR(bp_load_states(net, p, NULL, NULL, &r, &meta), BP_EFORMAT,
                  "load_states \"");
    assert_non_null(strstr(bp_last_error(), "ab.safetensors\": the checkpoint does not match the model (nothing was "
                                            "loaded): 3 unexpected keys ['Net_b.w', 'Net_b.b', 'Net_b.steps'], 3 "
                                            "missing keys ['Net_c.w', 'Net_c.b', 'Net_c.steps']"));
    assert_null(meta);
    assert_int_equal(r.n_missing + r.n_unexpected, 0);
    expect_values(net, 2.0);

    /* not strict: BrainPy's load_state_dict(v1, warn=True) */
    bp_set_warning_handler(catch_warning, NULL);
    g_nwarn = 0;
    bp_load_opts o = {.strict = false, .warn = true};
    BP_OK_OR_FAIL(bp_load_states(net, p, NULL, &o, &r, NULL));
    assert_int_equal(g_nwarn, 2);
    assert_string_equal(g_warn[0], "Unexpected keys in state_dict: ['Net_b.w', 'Net_b.b', 'Net_b.steps']");
    assert_string_equal(g_warn[1], "Missing keys in state_dict: ['Net_c.w', 'Net_c.b', 'Net_c.steps']");
    assert_int_equal(r.n_unexpected, 3);
    assert_string_equal(r.unexpected_keys[2], "Net_b.steps");
    assert_int_equal(r.n_missing, 3);
    assert_string_equal(r.missing_keys[0], "Net_c.w");
    bp_load_result_clear(&r);
    /* Net_a loaded (vars 0..2 at seed 1), Net_c kept (vars 3..5 at seed 2) */
    assert_true(bp_tensor_get(bp_node_var(bp_node_child(net, "la"), "b")->value, 1) == 1.0 + 0.5 + 0.125);
    assert_true(bp_tensor_get(bp_node_var(bp_node_child(net, "lc"), "w")->value, 0) == 2.0 + 0.5 * 3);
    o.warn = false;
    g_nwarn = 0;
    BP_OK_OR_FAIL(bp_load_states(net, p, NULL, &o, NULL, NULL));
    assert_int_equal(g_nwarn, 0);
    bp_node_free(net);

    /* same keys, one shape differs: BP_ESHAPE and nothing is loaded, strict or not */
    net = make_net("Net", "aW");
    set_values(net, 2.0);
    BP_EXPECT_ERR(bp_load_states(net, p, NULL, NULL, NULL, NULL), BP_ESHAPE,
                  "\"Net_b.w\" has shape (4,2) in the model but (3,2) in the checkpoint");
    BP_EXPECT_ERR(bp_load_states(net, p, NULL, &o, NULL, NULL), BP_ESHAPE, "Net_b.w");
    expect_values(net, 2.0);
    bp_node_free(net);

    /* a dtype differs: BP_EDTYPE, nothing loaded */
    net = make_net("Net", "ab");
    set_values(net, 2.0);
    bp_dict *flat;
    BP_OK_OR_FAIL(bp_checkpoint_read(p, &flat));
    bp_tensor *i32;
    BP_OK_OR_FAIL(bp_tensor_new(&i32, BP_INT32, 0, NULL));
    BP_OK_OR_FAIL(bp_dict_set_tensor(flat, "Net_b.steps", i32));
    bp_tensor_free(i32);
    BP_OK_OR_FAIL(bp_checkpoint_write(p, flat));
    bp_dict_free(flat);
    BP_EXPECT_ERR(bp_load_states(net, p, NULL, NULL, NULL, NULL), BP_EDTYPE,
                  "\"Net_b.steps\" has dtype int64 in the model but int32 in the checkpoint");
    expect_values(net, 2.0);

    /* a corrupt file: the model is unchanged */
    BP_OK_OR_FAIL(bp_save_states(net, p, NULL, NULL));
    size_t len;
    unsigned char *b = slurp(p, &len);
    b[len - 3] ^= 0x40;
    spit(p, b, len);
    free(b);
    set_values(net, 6.0);
    BP_EXPECT_ERR(bp_load_states(net, p, NULL, NULL, NULL, NULL), BP_EFORMAT, "checksum mismatch");
    expect_values(net, 6.0);
    bp_node_free(net);
}

static void test_file_errors(void **state)
{
    (void)state;
    char p[512];
    bp_dict *got = (bp_dict *)1;
    BP_EXPECT_ERR(bp_checkpoint_read(in_dir(p, sizeof p, "none.npz"), &got), BP_EIO, "Cannot find the file path: ");
    assert_null(got);
    assert_non_null(strstr(bp_last_error(), "none.npz"));
    assert_int_equal(mkdir(in_dir(p, sizeof p, "dir.json"), 0700), 0);
    BP_EXPECT_ERR(bp_checkpoint_read(p, &got), BP_EIO, "dir.json\": not a regular file");
    bp_dict *d = small_state();
    /* a directory where the file would go: refused before anything is written */
    BP_EXPECT_ERR(bp_checkpoint_write(p, d), BP_EIO, "dir.json\": not a regular file (it is a directory)");
    rmdir(p);
    BP_EXPECT_ERR(bp_checkpoint_write(in_dir(p, sizeof p, "no/such/dir/m.npz"), d), BP_EIO,
                  "cannot create the temporary file");
    assert_int_equal(n_files(), 0);
    bp_dict_free(d);
}

/* ============================================================ atomic saves */

/* Fault injection: the n-th call of one hook fails (or crashes the process). */
static int g_calls, g_fail_at, g_errno, g_short;
static bool g_crash;

static ssize_t hook_write(int fd, const void *b, size_t n)
{
    g_calls++;
    if (g_calls == g_fail_at) {
        if (g_crash) _exit(41);
        if (g_short && n > 1) return write(fd, b, n / 2); /* partial, then the next call fails */
        errno = g_errno;
        return -1;
    }
    if (g_short && g_fail_at && g_calls == g_fail_at + 1) {
        errno = g_errno;
        return -1;
    }
    return write(fd, b, n);
}

/* Short writes of at most 7 bytes each: legal, must be completed. */
static ssize_t hook_write_dribble(int fd, const void *b, size_t n)
{
    g_calls++;
    return write(fd, b, n < 7 ? n : 7);
}

static ssize_t hook_write_zero(int fd, const void *b, size_t n)
{
    (void)fd, (void)b, (void)n;
    return 0;
}

static int hook_fsync(int fd)
{
    g_calls++;
    if (g_calls == g_fail_at) {
        if (g_crash) _exit(41);
        errno = g_errno;
        return -1;
    }
    return fsync(fd);
}

static int hook_close(int fd)
{
    int rc = close(fd);
    if (++g_calls == g_fail_at) {
        errno = g_errno;
        return -1;
    }
    return rc;
}

static int hook_rename_fail(const char *a, const char *b)
{
    (void)a, (void)b;
    errno = g_errno;
    return -1;
}

static int hook_rename_crash_before(const char *a, const char *b)
{
    (void)a, (void)b;
    _exit(41);
}

static int hook_rename_crash_after(const char *a, const char *b)
{
    rename(a, b);
    _exit(41);
}

static int hook_open(const char *path, int flags, mode_t mode)
{
    (void)path, (void)flags, (void)mode;
    errno = g_errno;
    return -1;
}

/* A state whose save takes several write calls: 1.5 MB of tensors next to
 * small ones (large pieces bypass the 1 MiB buffer). */
static bp_dict *big_state(float v)
{
    bp_dict *d = small_state();
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_full(&t, BP_FLOAT32, 1, (const int64_t[]){300000}, v));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "big1", t));
    bp_tensor_free(t);
    put(d, "mid", BP_FLOAT32, 1, (const int64_t[]){2}, (const float[]){v, -v});
    BP_OK_OR_FAIL(bp_tensor_full(&t, BP_FLOAT32, 1, (const int64_t[]){100000}, -v));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "big2", t));
    bp_tensor_free(t);
    return d;
}

/* The file at p holds exactly `want` (bytes) and decodes. */
static void expect_file(const char *p, const unsigned char *want, size_t wlen)
{
    size_t len;
    unsigned char *b = slurp(p, &len);
    assert_int_equal(len, wlen);
    assert_memory_equal(b, want, len);
    free(b);
    bp_dict *d;
    BP_OK_OR_FAIL(bp_checkpoint_read(p, &d));
    bp_dict_free(d);
}

static void test_atomic_save_faults(void **state)
{
    (void)state;
    for (size_t f = 0; f < 3; f++) {
        bp_ckpt_format fmt = all_formats[f];
        char p[512], name[32];
        snprintf(name, sizeof name, "ck%s", ext_of[fmt]);
        in_dir(p, sizeof p, name);
        bp_dict *old = fmt == BP_CKPT_JSON ? small_state() : big_state(1.0f);
        bp_dict *neu = fmt == BP_CKPT_JSON ? ref_state() : big_state(2.0f);
        BP_OK_OR_FAIL(bp_checkpoint_write(p, old));
        size_t olen;
        unsigned char *ob = slurp(p, &olen);

        /* how many writes a save takes */
        bp__ckpt_io_hooks.write = hook_write;
        g_calls = 0;
        g_fail_at = 0;
        g_short = 0;
        BP_OK_OR_FAIL(bp_checkpoint_write(p, old));
        int nwrites = g_calls;
        if (fmt != BP_CKPT_JSON) assert_true(nwrites >= 2);
        expect_file(p, ob, olen);

        /* each write fails in turn: ENOSPC, EIO, and a short write then ENOSPC */
        for (int mode = 0; mode < 3; mode++)
            for (int k = 1; k <= nwrites; k++) {
                g_calls = 0;
                g_fail_at = k;
                g_errno = mode == 1 ? EIO : ENOSPC;
                g_short = mode == 2;
                bp_status st = bp_checkpoint_write(p, neu);
                if (st != BP_EIO || !strstr(bp_last_error(), "cannot write") || !strstr(bp_last_error(), p) ||
                    !strstr(bp_last_error(), strerror(g_errno)))
                    fail_msg("%s: write %d of %d (mode %d): %s \"%s\"", name, k, nwrites, mode, bp_status_name(st),
                             bp_last_error());
                expect_file(p, ob, olen);
                assert_int_equal(n_files(), 1); /* the temporary file is gone */
            }
        g_short = 0;

        /* a write that makes no progress */
        bp__ckpt_io_hooks.write = hook_write_zero;
        BP_EXPECT_ERR(bp_checkpoint_write(p, neu), BP_EIO, "cannot write");
        expect_file(p, ob, olen);

        /* fsync, close, rename, open fail */
        bp__ckpt_io_hooks.write = write;
        bp__ckpt_io_hooks.fsync = hook_fsync;
        g_calls = 0;
        g_fail_at = 1;
        g_errno = EIO;
        BP_EXPECT_ERR(bp_checkpoint_write(p, neu), BP_EIO, "cannot fsync");
        expect_file(p, ob, olen);
        bp__ckpt_io_hooks.fsync = fsync;
        bp__ckpt_io_hooks.close = hook_close;
        g_calls = 0;
        g_errno = EDQUOT;
        BP_EXPECT_ERR(bp_checkpoint_write(p, neu), BP_EIO, "cannot close");
        assert_non_null(strstr(bp_last_error(), strerror(EDQUOT)));
        expect_file(p, ob, olen);
        bp__ckpt_io_hooks.close = close;
        bp__ckpt_io_hooks.rename = hook_rename_fail;
        g_errno = EXDEV;
        BP_EXPECT_ERR(bp_checkpoint_write(p, neu), BP_EIO, "cannot rename");
        expect_file(p, ob, olen);
        bp__ckpt_io_hooks.rename = rename;
        bp__ckpt_io_hooks.open = hook_open;
        g_errno = EACCES;
        BP_EXPECT_ERR(bp_checkpoint_write(p, neu), BP_EIO, "cannot create the temporary file");
        expect_file(p, ob, olen);
        assert_int_equal(n_files(), 1);
        bp__ckpt_io_reset();

        /* the directory's fsync fails after the rename: the new file is whole */
        bp__ckpt_io_hooks.fsync = hook_fsync;
        g_calls = 0;
        g_fail_at = 2;
        g_errno = EIO;
        BP_EXPECT_ERR(bp_checkpoint_write(p, neu), BP_EIO, "written and renamed, but its directory cannot be fsync'ed");
        bp__ckpt_io_reset();
        bp_dict *got;
        BP_OK_OR_FAIL(bp_checkpoint_read(p, &got));
        expect_same(got, neu, true);
        bp_dict_free(got);

        /* short writes everywhere are completed: the same bytes as a clean save */
        void *want;
        size_t wlen;
        BP_OK_OR_FAIL(bp_checkpoint_encode(fmt, neu, &want, &wlen));
        bp__ckpt_io_hooks.write = hook_write_dribble;
        BP_OK_OR_FAIL(bp_checkpoint_write(p, neu));
        bp__ckpt_io_reset();
        expect_file(p, want, wlen);
        assert_int_equal(n_files(), 1);
        free(want);
        free(ob);
        bp_dict_free(old);
        bp_dict_free(neu);
        clear_dir();
    }
}

/* A crash (the process dies) at each step of a save: before the rename the
 * old file is intact; after it the new file is whole. */
static void test_crash_between_steps(void **state)
{
    (void)state;
    char p[512];
    in_dir(p, sizeof p, "crash.safetensors");
    bp_dict *old = big_state(1.0f), *neu = big_state(2.0f);
    void *ob, *nb;
    size_t olen, nlen;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_SAFETENSORS, old, &ob, &olen));
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_SAFETENSORS, neu, &nb, &nlen));
    enum { W1, W2, W3, FSYNC_FILE, RENAME_BEFORE, RENAME_AFTER, FSYNC_DIR, N_STEPS };
    for (int step = 0; step < N_STEPS; step++) {
        BP_OK_OR_FAIL(bp_checkpoint_write(p, old));
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            g_calls = 0;
            g_crash = true;
            if (step <= W3) {
                bp__ckpt_io_hooks.write = hook_write;
                g_fail_at = step - W1 + 1;
            } else if (step == FSYNC_FILE || step == FSYNC_DIR) {
                bp__ckpt_io_hooks.fsync = hook_fsync;
                g_fail_at = step == FSYNC_FILE ? 1 : 2;
            } else {
                bp__ckpt_io_hooks.rename = step == RENAME_BEFORE ? hook_rename_crash_before : hook_rename_crash_after;
            }
            bp_checkpoint_write(p, neu);
            _exit(0); /* not reached: every step above crashes */
        }
        int ws;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        assert_true(WIFEXITED(ws));
        assert_int_equal(WEXITSTATUS(ws), 41);
        if (step >= RENAME_AFTER)
            expect_file(p, nb, nlen);
        else
            expect_file(p, ob, olen);
        /* a crash before the rename leaves the temporary file; the next save removes it */
        assert_int_equal(n_files(), step >= RENAME_AFTER ? 1 : 2);
        BP_OK_OR_FAIL(bp_checkpoint_write(p, neu));
        expect_file(p, nb, nlen);
        assert_int_equal(n_files(), 1);
        clear_dir();
    }
    free(ob);
    free(nb);
    bp_dict_free(old);
    bp_dict_free(neu);
}

/* ================================================ training-checkpoint blocks */

static void test_training_checkpoint_blocks(void **state)
{
    (void)state;
    char p[512];
    in_dir(p, sizeof p, "train.npz");
    /* a "model" and an "optimizer" (any node with vars: slots, step) */
    bp_node *model = make_net("M", "ab"), *opt = make_net("Opt", "a");
    set_values(model, 1.0);
    set_values(opt, 10.0);
    bp_rng rng;
    bp_rng_seed(&rng, 1234);
    for (int i = 0; i < 5; i++) bp_rng_next(&rng);
    bp_collector *mv, *ov;
    BP_OK_OR_FAIL(bp_node_vars(model, NULL, &mv));
    BP_OK_OR_FAIL(bp_node_vars(opt, NULL, &ov));
    bp_dict *ck;
    BP_OK_OR_FAIL(bp_dict_new(&ck));
    BP_OK_OR_FAIL(bp_checkpoint_put_vars(ck, "model/", mv));
    BP_OK_OR_FAIL(bp_checkpoint_put_vars(ck, "optim/", ov));
    BP_OK_OR_FAIL(bp_checkpoint_put_rng(ck, "rng/state", &rng));
    int64_t epoch = 3;
    put(ck, "meta/epoch", BP_INT64, 0, NULL, &epoch);
    BP_OK_OR_FAIL(bp_checkpoint_write(p, ck));
    /* the dict references the live values (no copy) */
    assert_ptr_equal(bp_dict_get_tensor(ck, "model/M_a.w"), bp_node_var(bp_node_child(model, "la"), "w")->value);
    bp_dict_free(ck);
    uint64_t next[3];
    for (int i = 0; i < 3; i++) next[i] = bp_rng_next(&rng);

    set_values(model, 4.0);
    set_values(opt, 40.0);
    bp_rng_seed(&rng, 99);
    BP_OK_OR_FAIL(bp_checkpoint_read(p, &ck));
    assert_int_equal(bp_dict_len(ck), 6 + 3 + 1 + 1);
    bp_dict *meta;
    BP_OK_OR_FAIL(bp_checkpoint_take_prefix(ck, "meta/", &meta));
    assert_int_equal(bp_dict_len(meta), 1);
    assert_string_equal(bp_dict_key(meta, 0), "epoch");
    assert_true(bp_tensor_get(bp_dict_tensor(meta, 0), 0) == 3.0);
    assert_int_equal(bp_dict_len(ck), 10);
    bp_dict_free(meta);

    bp_ckpt_vars groups[2] = {{"model/", mv}, {"optim/", ov}};
    bp_load_result r;
    BP_OK_OR_FAIL(bp_checkpoint_load_vars(ck, groups, 2, NULL, &r));
    assert_int_equal(r.n_missing + r.n_unexpected, 0);
    expect_values(model, 1.0);
    expect_values(opt, 10.0);
    BP_OK_OR_FAIL(bp_checkpoint_get_rng(ck, "rng/state", &rng));
    for (int i = 0; i < 3; i++) assert_true(bp_rng_next(&rng) == next[i]);

    /* an optimizer entry the group lacks is unexpected; rng/ is nobody's */
    bp_tensor *t;
    BP_OK_OR_FAIL(bp_tensor_new(&t, BP_FLOAT32, 0, NULL));
    BP_OK_OR_FAIL(bp_dict_set_tensor(ck, "optim/Opt_z.m", t));
    bp_tensor_free(t);
    set_values(model, 4.0);
    BP_EXPECT_ERR(bp_checkpoint_load_vars(ck, groups, 2, NULL, &r), BP_EFORMAT,
                  "checkpoint_load_vars: the checkpoint does not match the model (nothing was loaded): 1 unexpected "
                  "keys ['optim/Opt_z.m'], 0 missing keys []");
    expect_values(model, 4.0);
    /* a model without its optimizer group: optim/ entries are not claimed */
    BP_OK_OR_FAIL(bp_checkpoint_load_vars(ck, groups, 1, NULL, &r));
    expect_values(model, 1.0);
    /* prefix "" claims every entry */
    bp_ckpt_vars all = {NULL, mv};
    BP_EXPECT_ERR(bp_checkpoint_load_vars(ck, &all, 1, NULL, NULL), BP_EFORMAT, "11 unexpected keys ['model/M_a.w'");
    bp_dict_free(ck);
    bp_collector_free(mv);
    bp_collector_free(ov);
    bp_node_free(model);
    bp_node_free(opt);
}

static void test_argument_errors(void **state)
{
    (void)state;
    char p[512];
    in_dir(p, sizeof p, "x.npz");
    bp_dict *d = small_state(), *nested, *got;
    void *buf;
    size_t len;
    BP_EXPECT_ERR(bp_checkpoint_write(NULL, d), BP_EINVAL, "filename is NULL");
    BP_EXPECT_ERR(bp_checkpoint_write(p, NULL), BP_EINVAL, "the dict is NULL");
    BP_EXPECT_ERR(bp_checkpoint_read(p, NULL), BP_EINVAL, "out is NULL");
    BP_EXPECT_ERR(bp_checkpoint_read(NULL, &got), BP_EINVAL, "filename is NULL");
    BP_EXPECT_ERR(bp_checkpoint_encode(BP_CKPT_NPZ, d, NULL, &len), BP_EINVAL, "buf is NULL");
    BP_EXPECT_ERR(bp_checkpoint_encode((bp_ckpt_format)0, d, &buf, &len), BP_EINVAL, "unknown format 0");
    BP_EXPECT_ERR(bp_checkpoint_decode((bp_ckpt_format)7, "x", 1, &got), BP_EINVAL, "unknown format 7");
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_NPZ, NULL, 3, &got), BP_EINVAL, "buf is NULL with len 3");
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_NPZ, "x", 1, NULL), BP_EINVAL, "out is NULL");

    BP_OK_OR_FAIL(bp_dict_new(&nested));
    BP_OK_OR_FAIL(bp_dict_set_dict(d, "sub", nested));
    BP_EXPECT_ERR(bp_checkpoint_write(p, d), BP_EINVAL, "entry \"sub\" is a nested dict");
    BP_EXPECT_ERR(bp_checkpoint_encode(BP_CKPT_JSON, d, &buf, &len), BP_EINVAL, "entry \"sub\" is a nested dict");
    BP_OK_OR_FAIL(bp_dict_remove(d, "sub"));
    char longkey[BP_CKPT_MAX_KEY + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    const char *bad[] = {"", "tab\there", "caf\xc3\xa9", "__metadata__", longkey};
    const char *why[] = {"key is empty", "has the byte 0x09 at 3", "has the byte 0xc3 at 3", "is reserved",
                         "has 257 characters (at most 256)"};
    for (int i = 0; i < 5; i++) {
        bp_tensor *t;
        BP_OK_OR_FAIL(bp_tensor_new(&t, BP_UINT8, 0, NULL));
        BP_OK_OR_FAIL(bp_dict_set_tensor(d, bad[i], t));
        bp_tensor_free(t);
        BP_EXPECT_ERR(bp_checkpoint_write(p, d), BP_EINVAL, why[i]);
        BP_OK_OR_FAIL(bp_dict_remove(d, bad[i]));
    }
    assert_int_equal(n_files(), 0);

    bp_node *net = make_net("Args", "a");
    BP_EXPECT_ERR(bp_save_states(NULL, p, NULL, NULL), BP_EINVAL, "save_states: node is NULL");
    BP_EXPECT_ERR(bp_save_states(net, NULL, NULL, NULL), BP_EINVAL, "save_states: filename is NULL");
    BP_EXPECT_ERR(bp_load_states(NULL, p, NULL, NULL, NULL, NULL), BP_EINVAL, "load_states: node is NULL");
    BP_OK_OR_FAIL(bp_dict_new(&nested));
    bp_dict *meta;
    BP_OK_OR_FAIL(bp_dict_new(&meta));
    BP_OK_OR_FAIL(bp_dict_set_dict(meta, "deep", nested));
    BP_EXPECT_ERR(bp_save_states(net, p, NULL, meta), BP_EINVAL, "metadata \"deep\" is a nested dict");
    bp_dict_free(meta);
    BP_OK_OR_FAIL(bp_dict_new(&meta));
    BP_OK_OR_FAIL(bp_dict_set_tensor(meta, "bad\nkey", bp_dict_tensor(d, 0)));
    BP_EXPECT_ERR(bp_save_states(net, p, NULL, meta), BP_EINVAL, "\"meta/bad\" has the byte 0x0a at 8");
    bp_dict_free(meta);
    assert_int_equal(n_files(), 0);

    bp_collector *nodes, *vars;
    BP_OK_OR_FAIL(bp_node_nodes(net, NULL, &nodes));
    BP_OK_OR_FAIL(bp_node_vars(net, NULL, &vars));
    BP_EXPECT_ERR(bp_checkpoint_put_vars(d, NULL, nodes), BP_EINVAL, "holds nodes, not variables");
    BP_EXPECT_ERR(bp_checkpoint_put_vars(NULL, NULL, vars), BP_EINVAL, "flat is NULL");
    BP_EXPECT_ERR(bp_checkpoint_put_vars(d, "x\x01", vars), BP_EINVAL, "has the byte 0x01");
    bp_ckpt_vars g = {NULL, nodes};
    BP_EXPECT_ERR(bp_checkpoint_load_vars(d, &g, 1, NULL, NULL), BP_EINVAL, "groups[0] holds nodes");
    g.vars = NULL;
    BP_EXPECT_ERR(bp_checkpoint_load_vars(d, &g, 1, NULL, NULL), BP_EINVAL, "groups[0].vars is NULL");
    BP_EXPECT_ERR(bp_checkpoint_load_vars(NULL, &g, 1, NULL, NULL), BP_EINVAL, "the dict is NULL");
    BP_EXPECT_ERR(bp_checkpoint_load_vars(d, NULL, 2, NULL, NULL), BP_EINVAL, "groups is NULL with n_groups 2");
    /* a nested dict where a var's tensor should be */
    g.vars = vars;
    BP_OK_OR_FAIL(bp_dict_new(&nested));
    BP_OK_OR_FAIL(bp_dict_set_dict(d, "Args_a.w", nested));
    BP_EXPECT_ERR(bp_checkpoint_load_vars(d, &g, 1, NULL, NULL), BP_EFORMAT, "\"Args_a.w\" must be a tensor");
    BP_EXPECT_ERR(bp_checkpoint_take_prefix(d, "Args", &got), BP_EINVAL, "entry \"Args_a.w\" is a nested dict");
    BP_EXPECT_ERR(bp_checkpoint_take_prefix(d, "", &got), BP_EINVAL, "prefix is NULL or empty");
    BP_EXPECT_ERR(bp_checkpoint_take_prefix(NULL, "a", &got), BP_EINVAL, "flat is NULL");
    BP_EXPECT_ERR(bp_checkpoint_take_prefix(d, "a", NULL), BP_EINVAL, "out is NULL");
    bp_collector_free(nodes);
    bp_collector_free(vars);
    bp_node_free(net);

    bp_rng rng;
    bp_rng_seed(&rng, 1);
    BP_EXPECT_ERR(bp_checkpoint_put_rng(d, NULL, &rng), BP_EINVAL, "key is NULL");
    BP_EXPECT_ERR(bp_checkpoint_put_rng(d, "", &rng), BP_EINVAL, "key is empty");
    BP_EXPECT_ERR(bp_checkpoint_get_rng(d, "rng", &rng), BP_ENOTFOUND, "no tensor \"rng\"");
    BP_EXPECT_ERR(bp_checkpoint_get_rng(d, "a", &rng), BP_EFORMAT,
                  "\"a\" must be an int64 tensor of shape (4,), got float32 (2,)");
    bp_tensor *z;
    BP_OK_OR_FAIL(bp_tensor_new(&z, BP_INT64, 1, (const int64_t[]){4}));
    BP_OK_OR_FAIL(bp_dict_set_tensor(d, "z", z));
    bp_tensor_free(z);
    BP_EXPECT_ERR(bp_checkpoint_get_rng(d, "z", &rng), BP_EFORMAT, "the all-zero state");
    BP_EXPECT_ERR(bp_checkpoint_get_rng(d, "z", NULL), BP_EINVAL, "rng is NULL");
    bp_dict_free(d);
}

/* The fuzz seed corpora and any crash regressions decode without crashing in
 * every format (each file is also fed to the other formats' readers). */
static void test_fuzz_corpus_regressions(void **state)
{
    (void)state;
    const char *dirs[] = {"corpus", "regress"};
    int files = 0;
    for (int k = 0; k < 2; k++)
        for (size_t f = 0; f < 3; f++) {
            char dp[512];
            snprintf(dp, sizeof dp, "%s/%s/%s", BP_FUZZ_DIR, dirs[k],
                     bp_checkpoint_format_name(all_formats[f]));
            DIR *d = opendir(dp);
            if (!d) continue;
            struct dirent *e;
            while ((e = readdir(d))) {
                if (e->d_name[0] == '.') continue;
                char fp[1024];
                snprintf(fp, sizeof fp, "%s/%s", dp, e->d_name);
                size_t len;
                unsigned char *b = slurp(fp, &len);
                files++;
                for (size_t g = 0; g < 3; g++) {
                    bp_dict *got = NULL;
                    bp_status st = bp_checkpoint_decode(all_formats[g], b, len, &got);
                    if (st != BP_OK && st != BP_EFORMAT)
                        fail_msg("%s as %s: %s (%s)", fp, bp_checkpoint_format_name(all_formats[g]),
                                 bp_status_name(st), bp_last_error());
                    /* seeds are valid files of their own format */
                    if (k == 0 && g == f && st != BP_OK) fail_msg("seed %s: %s", fp, bp_last_error());
                    bp_dict_free(got);
                }
                free(b);
            }
            closedir(d);
        }
    assert_true(files >= 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_format_by_extension, reset_each),
        cmocka_unit_test_setup(test_roundtrip_every_format, reset_each),
        cmocka_unit_test_setup(test_nan_roundtrip, reset_each),
        cmocka_unit_test_setup(test_safetensors_layout_matches_reference, reset_each),
        cmocka_unit_test_setup(test_npz_member_layout, reset_each),
        cmocka_unit_test_setup(test_json_text, reset_each),
        cmocka_unit_test_setup(test_reads_numpy_files, reset_each),
        cmocka_unit_test_setup(test_reads_numpy_layouts, reset_each),
        cmocka_unit_test_setup(test_reads_python_safetensors_and_json, reset_each),
        cmocka_unit_test_setup(test_every_truncation_rejected, reset_each),
        cmocka_unit_test_setup(test_every_data_bitflip_detected, reset_each),
        cmocka_unit_test_setup(test_any_bitflip_is_safe, reset_each),
        cmocka_unit_test_setup(test_safetensors_rejects, reset_each),
        cmocka_unit_test_setup(test_npz_rejects, reset_each),
        cmocka_unit_test_setup(test_json_rejects, reset_each),
        cmocka_unit_test_setup(test_save_load_states_every_format, reset_each),
        cmocka_unit_test_setup(test_load_another_model, reset_each),
        cmocka_unit_test_setup(test_file_errors, reset_each),
        cmocka_unit_test_setup(test_atomic_save_faults, reset_each),
        cmocka_unit_test_setup(test_crash_between_steps, reset_each),
        cmocka_unit_test_setup(test_training_checkpoint_blocks, reset_each),
        cmocka_unit_test_setup(test_argument_errors, reset_each),
        cmocka_unit_test_setup(test_fuzz_corpus_regressions, reset_each),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
