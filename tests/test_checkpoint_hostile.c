/* tests/test_checkpoint_hostile.c — checkpoints against hostile files and
 * crashed saves (issue 16, items 4 to 7 and 9).
 *
 * - Files that are not regular files (a FIFO, a directory, a device) are a
 *   clear BP_EIO for every format, on reads and on writes, and never block.
 * - Stale temporaries of crashed saves are removed by the next save of the same
 *   target, and nothing else is.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_not_regular_files, reset_each),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
