/* tests/test_checkpoint_hostile.c — checkpoints against hostile files and
 * crashed saves (issue 16, items 4 to 7 and 9).
 *
 * - Files that are not regular files (a FIFO, a directory, a device) are a
 *   clear BP_EIO for every format, on reads and on writes, and never block.
 * - Stale temporaries of crashed saves are removed by the next save of the same
 *   target, and nothing else is.
 * - A JSON checkpoint with any one digit changed never loads a changed value.
 * - No single edit of a file's metadata switches its checksum off, and a
 *   version is reported as written.
 */
#include "bp_test.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <bpc/checkpoint.h>
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

static void clear_dir(void)
{
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            in_dir(p, sizeof p, e->d_name);
            if (unlink(p) != 0) rmdir(p);
        }
    closedir(d);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/bpc_hostile_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
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
    bp_clear_error();
    clear_dir();
    alarm(0);
    return 0;
}

/* =============================================== item 5: not regular files */

/* Each kind of non-regular file under each format's name: a read, a
 * load_states and a save all fail with BP_EIO naming the kind, without
 * blocking (alarm: a read that waits for a FIFO's writer kills the suite), and
 * the node is left as it was. */
static void test_not_regular_files(void **state)
{
    (void)state;
    alarm(20);
    bp_dict *d = small_state();
    for (size_t f = 0; f < 3; f++) {
        const struct {
            const char *stem, *kind;
        } kinds[] = {{"fifo", "a FIFO"}, {"dir", "a directory"}, {"null", "a character device"},
                     {"zero", "a character device"}};
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            char p[512], name[64];
            snprintf(name, sizeof name, "%s%s", kinds[k].stem, ext_of[all_formats[f]]);
            in_dir(p, sizeof p, name);
            if (k == 0) assert_int_equal(mkfifo(p, 0600), 0);
            if (k == 1) assert_int_equal(mkdir(p, 0700), 0);
            if (k == 2) assert_int_equal(symlink("/dev/null", p), 0);
            if (k == 3) assert_int_equal(symlink("/dev/zero", p), 0);
            char want[128];
            snprintf(want, sizeof want, "%s\": not a regular file (it is %s)", name, kinds[k].kind);
            bp_dict *got = (bp_dict *)1;
            BP_EXPECT_ERR(bp_checkpoint_read(p, &got), BP_EIO, want);
            assert_null(got);
            BP_EXPECT_ERR(bp_checkpoint_write(p, d), BP_EIO, want);
            struct stat sb;
            assert_int_equal(stat(p, &sb), 0); /* still there, still what it was */
            assert_true(k == 0 ? S_ISFIFO(sb.st_mode) : k == 1 ? S_ISDIR(sb.st_mode) : S_ISCHR(sb.st_mode));
        }
        clear_dir();
    }
    /* bp_npy_read as well */
    char p[512];
    assert_int_equal(mkfifo(in_dir(p, sizeof p, "a.npy"), 0600), 0);
    bp_tensor *t = (bp_tensor *)1;
    BP_EXPECT_ERR(bp_npy_read(p, &t), BP_EIO, "a.npy\": not a regular file (it is a FIFO)");
    assert_null(t);
    BP_EXPECT_ERR(bp_npy_read("/dev/zero", &t), BP_EIO, "not a regular file (it is a character device)");
    bp_dict_free(d);
    alarm(0);
}

/* ====================================== item 6: JSON digits are checked */

/* Same keys in the same order, dtypes, shapes and bits. */
static bool same_dict(const bp_dict *a, const bp_dict *b)
{
    if (bp_dict_len(a) != bp_dict_len(b)) return false;
    for (size_t i = 0; i < bp_dict_len(a); i++) {
        const bp_tensor *x = bp_dict_tensor(a, i), *y = bp_dict_tensor(b, i);
        if (strcmp(bp_dict_key(a, i), bp_dict_key(b, i)) || x->dtype != y->dtype || !bp_tensor_same_shape(x, y) ||
            memcmp(x->data, y->data, bp_tensor_nbytes(x)) != 0)
            return false;
    }
    return true;
}

/* Every digit of a JSON checkpoint of REF (values, shapes, keys, dtype names,
 * the version, the checksum), replaced in turn by each of the 9 others: a
 * mutant either fails with BP_EFORMAT or loads exactly REF (a float digit past
 * the ones that pick the float, e.g. 0.100000001 -> 0.100000002). None loads
 * a changed value. */
static void test_json_every_digit_mutant_rejected(void **state)
{
    (void)state;
    bp_dict *ref = ref_state();
    void *buf;
    size_t len;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_JSON, ref, &buf, &len));
    char *t = buf;
    long digits = 0, mutants = 0, rejected = 0, same = 0, changed = 0;
    for (size_t i = 0; i < len; i++) {
        char was = t[i];
        if (was < '0' || was > '9') continue;
        digits++;
        for (char c = '0'; c <= '9'; c++) {
            if (c == was) continue;
            t[i] = c;
            mutants++;
            bp_dict *got = NULL;
            bp_status st = bp_checkpoint_decode(BP_CKPT_JSON, t, len, &got);
            if (st == BP_OK && same_dict(got, ref))
                same++;
            else if (st == BP_OK) {
                if (changed++ < 5) print_message("loaded changed: byte %zu '%c' -> '%c'\n", i, was, c);
            } else {
                assert_int_equal(st, BP_EFORMAT);
                rejected++;
            }
            bp_dict_free(got);
        }
        t[i] = was;
    }
    print_message("%ld digits, %ld mutants: %ld rejected, %ld load unchanged, %ld load changed\n", digits, mutants,
                  rejected, same, changed);
    assert_true(digits > 1000);
    assert_int_equal(mutants, digits * 9);
    assert_int_equal(rejected + same, mutants);
    assert_int_equal(changed, 0);
    /* the checksum also catches what a digit flip cannot: a changed sign */
    char *minus = strstr(t, "-0.5");
    assert_non_null(minus);
    minus[0] = ' ';
    bp_dict *got;
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_JSON, t, len, &got), BP_EFORMAT, "checksum mismatch");
    free(buf);
    bp_dict_free(ref);
}

/* ====================================== item 9: checks that cannot be edited off */

/* A bpc safetensors file with one flipped data bit and, besides, any one byte
 * of its header changed to any other value (the "format" value or key, the
 * checksum's key, its digits, the padding...) never loads: data_crc32 is
 * checked whenever present, and "format": "bpc" requires it. */
static void test_safetensors_crc_cannot_be_edited_off(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    void *buf;
    size_t len;
    BP_OK_OR_FAIL(bp_checkpoint_encode(BP_CKPT_SAFETENSORS, d, &buf, &len));
    unsigned char *b = buf;
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    assert_true(8 + hlen < len);
    b[len - 1] ^= 0x01; /* the last data byte: the int64 3's top byte */
    long loaded = 0, tried = 0;
    for (size_t i = 8; i < 8 + hlen; i++) {
        unsigned char was = b[i];
        for (int v = 0; v < 256; v++) {
            if (v == was) continue;
            b[i] = (unsigned char)v;
            bp_dict *got = NULL;
            bp_status st = bp_checkpoint_decode(BP_CKPT_SAFETENSORS, b, len, &got);
            tried++;
            if (st == BP_OK) {
                if (loaded++ < 5) print_message("loaded with byte %zu = 0x%02x (was '%c')\n", i, v, was);
            } else
                assert_int_equal(st, BP_EFORMAT);
            bp_dict_free(got);
        }
        b[i] = was;
    }
    assert_int_equal(tried, (long)hlen * 255);
    assert_int_equal(loaded, 0);

    /* the named case: format "bpc" changed to "bpd" */
    unsigned char *f = (unsigned char *)strstr((char *)b + 8, "\"bpc\"");
    assert_non_null(f);
    f[3] = 'd';
    bp_dict *got;
    BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, b, len, &got), BP_EFORMAT, "checksum mismatch");
    b[len - 1] ^= 0x01; /* intact data under a foreign format name with bpc's checksum loads */
    got = NULL;
    BP_OK_OR_FAIL(bp_checkpoint_decode(BP_CKPT_SAFETENSORS, b, len, &got));
    expect_same(got, d, true);
    bp_dict_free(got);
    free(buf);
    bp_dict_free(d);
}

/* The JSON "version" is reported as it was written, not as -1. */
static void test_json_version_reported_as_seen(void **state)
{
    (void)state;
    const struct {
        const char *version, *seen;
    } cases[] = {
        {"\"version\": \"1\", ", "version \"1\" (a string), this build reads"},
        {"\"version\": 1.0, ", "version 1.0, this build reads"},
        {"\"version\": [1], ", "version [1] (an array), this build reads"},
        {"\"version\": null, ", "version null, this build reads"},
        {"", "version (none), this build reads"},
        {"\"version\": -1, ", "version -1, this build reads"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"format\": \"bpc\", %s\"tensors\": {}}", cases[i].version);
        bp_dict *got = (bp_dict *)1;
        BP_EXPECT_ERR(bp_checkpoint_decode(BP_CKPT_JSON, text, strlen(text), &got), BP_EFORMAT, cases[i].seen);
        assert_null(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_not_regular_files, reset_each),
        cmocka_unit_test_setup(test_json_every_digit_mutant_rejected, reset_each),
        cmocka_unit_test_setup(test_safetensors_crc_cannot_be_edited_off, reset_each),
        cmocka_unit_test_setup(test_json_version_reported_as_seen, reset_each),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
