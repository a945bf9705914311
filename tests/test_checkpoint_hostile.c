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
#define _DEFAULT_SOURCE /* flock */
#include "bp_test.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
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

/* ============================================ item 7: stale temporaries */

static bool exists(const char *name)
{
    char p[512];
    struct stat sb;
    return lstat(in_dir(p, sizeof p, name), &sb) == 0;
}

static void touch(const char *name)
{
    char p[512];
    FILE *f = fopen(in_dir(p, sizeof p, name), "wb");
    assert_non_null(f);
    fputs("not a checkpoint", f);
    fclose(f);
}

static int crash_fsync(int fd)
{
    (void)fd;
    kill(getpid(), SIGKILL);
    return -1;
}

/* A save killed (SIGKILL) after writing its temporary file, before the rename. */
static void crash_during_save(const char *path, const bp_dict *d)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        bp__ckpt_io_hooks.fsync = crash_fsync;
        bp_checkpoint_write(path, d);
        _exit(0);
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
}

static int g_notify = -1, g_wait = -1;

/* The first write of a save tells the parent and waits for its go-ahead. */
static ssize_t paused_write(int fd, const void *b, size_t n)
{
    if (g_notify >= 0) {
        char c = 1;
        assert_int_equal(write(g_notify, &c, 1), 1);
        assert_int_equal(read(g_wait, &c, 1), 1);
        g_notify = -1;
    }
    return write(fd, b, n);
}

/* A save in progress in another process keeps its temporary through a save of
 * the same target here, and then completes. */
static void test_live_save_survives_a_sweep(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    char p[512];
    in_dir(p, sizeof p, "live.npz");
    int to_parent[2], to_child[2];
    assert_int_equal(pipe(to_parent), 0);
    assert_int_equal(pipe(to_child), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20); /* should the parent fail before its go-ahead */
        g_notify = to_parent[1];
        g_wait = to_child[0];
        bp__ckpt_io_hooks.write = paused_write;
        _exit(bp_checkpoint_write(p, d) == BP_OK ? 0 : 1);
    }
    char c;
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    BP_OK_OR_FAIL(bp_checkpoint_write(p, d));
    int temps = 0;
    DIR *dir = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(dir))) temps += strncmp(e->d_name, "live.npz.tmp.", 13) == 0;
    closedir(dir);
    assert_int_equal(temps, 1);
    assert_int_equal(write(to_child[1], &c, 1), 1);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    for (int i = 0; i < 2; i++) {
        close(to_parent[i]);
        close(to_child[i]);
    }
    bp_dict_free(d);
}

/* The next save of a target removes the temporaries of its crashed saves, and
 * keeps: a save in progress (its temporary locked), files of other names or
 * other targets, a directory or a link with a temporary's name (and what the
 * link points to). */
static void test_stale_temporaries_removed(void **state)
{
    (void)state;
    bp_dict *d = small_state();
    char p[512], q[512];
    in_dir(p, sizeof p, "m.safetensors");
    DIR *dir;
    struct dirent *e;
    /* each crashed save also sweeps the one before: one temporary at a time */
    for (int i = 0; i < 3; i++) {
        crash_during_save(p, d);
        int crashed = 0;
        dir = opendir(g_dir);
        while ((e = readdir(dir))) crashed += strncmp(e->d_name, "m.safetensors.tmp.", 18) == 0;
        closedir(dir);
        assert_int_equal(crashed, 1);
    }
    touch("m.safetensors.tmp.999999.0"); /* a crash before the first write */
    touch("m.safetensors.tmp.1.0");
    static const char *const keep[] = {
        "m.safetensors.tmp.keep", "m.safetensors.tmp.12",    "m.safetensors.tmp.1.2.3", "m.safetensors.tmp.1.x",
        "m.safetensors.tmp..1",   "m.safetensors.tmp.1.",    "other.safetensors.tmp.5.0", "xm.safetensors.tmp.5.0",
        "m.safetensors.bak.5.0",  "m.safetensors.tmp.5.0~",  "victim",
    };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) touch(keep[i]);
    assert_int_equal(mkdir(in_dir(q, sizeof q, "m.safetensors.tmp.6.0"), 0700), 0);
    assert_int_equal(symlink("victim", in_dir(q, sizeof q, "m.safetensors.tmp.8.0")), 0);
    /* a save in progress elsewhere: its temporary is locked */
    touch("m.safetensors.tmp.9.0");
    int live = open(in_dir(q, sizeof q, "m.safetensors.tmp.9.0"), O_RDONLY);
    assert_true(live >= 0);
    assert_int_equal(flock(live, LOCK_EX), 0);

    BP_OK_OR_FAIL(bp_checkpoint_write(p, d));
    int left = 0;
    dir = opendir(g_dir);
    while ((e = readdir(dir))) left += e->d_name[0] != '.';
    closedir(dir);
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (!exists(keep[i])) fail_msg("the save removed \"%s\"", keep[i]);
    assert_true(exists("m.safetensors.tmp.6.0") && exists("m.safetensors.tmp.8.0") && exists("m.safetensors.tmp.9.0"));
    assert_false(exists("m.safetensors.tmp.999999.0") || exists("m.safetensors.tmp.1.0"));
    /* what is left: the target, the kept names, the directory, the link, the live one */
    assert_int_equal(left, 1 + (int)(sizeof keep / sizeof keep[0]) + 3);
    bp_dict *got;
    BP_OK_OR_FAIL(bp_checkpoint_read(p, &got));
    expect_same(got, d, true);
    bp_dict_free(got);
    /* once its save is over (the lock gone), the next save removes it */
    close(live);
    BP_OK_OR_FAIL(bp_checkpoint_write(p, d));
    assert_false(exists("m.safetensors.tmp.9.0"));
    /* a relative target name sweeps the current directory */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    crash_during_save("r.json", d);
    BP_OK_OR_FAIL(bp_checkpoint_write("r.json", d));
    dir = opendir(".");
    while ((e = readdir(dir)))
        if (strncmp(e->d_name, "r.json.tmp.", 11) == 0) fail_msg("left %s", e->d_name);
    closedir(dir);
    assert_int_equal(chdir(cwd), 0);
    bp_dict_free(d);
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
        cmocka_unit_test_setup(test_stale_temporaries_removed, reset_each),
        cmocka_unit_test_setup(test_live_save_survives_a_sweep, reset_each),
        cmocka_unit_test_setup(test_json_every_digit_mutant_rejected, reset_each),
        cmocka_unit_test_setup(test_safetensors_crc_cannot_be_edited_off, reset_each),
        cmocka_unit_test_setup(test_json_version_reported_as_seen, reset_each),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
