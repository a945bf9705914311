/* tests/test_checkpoint_hostile.c — checkpoints against hostile files and
 * crashed saves (issue 16, items 4 to 7 and 9).
 *
 * - A small npz whose member claims 256 MiB is refused from the member's
 *   header, before it is inflated (the peak memory is measured), by every
 *   model-aware load and by a capped read.
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

/* ========================================== item 4: memory bound of a load */

/* Peak resident memory since the last reset_peak(), in KiB (Linux: VmHWM,
 * reset through /proc/self/clear_refs). -1 where it cannot be measured. */
static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return;
    fputs("5", f);
    fclose(f);
}

static long peak_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

static long g_peak_before;
#define PEAK_START() (reset_peak(), g_peak_before = peak_kib())
/* The peak grew by less than 32 MiB (the file's member claims 256 MiB). */
#define PEAK_SMALL()                                                                                      \
    do {                                                                                                  \
        long grew_ = peak_kib() - g_peak_before;                                                          \
        print_message("line %d: the peak memory grew by %ld KiB\n", __LINE__, grew_);                    \
        if (g_peak_before >= 0 && grew_ > 32 * 1024) fail_msg("the peak memory grew by %ld KiB", grew_); \
    } while (0)

static const bp_node_class model_class = {.name = "Model", .size = sizeof(bp_node)};

/* A node named name with one float32 var "w" of shape (2,). */
static bp_node *make_model(const char *name)
{
    bp_node *n;
    BP_OK_OR_FAIL(bp_node_create(&n, &model_class, name, NULL));
    bp_tensor *w;
    BP_OK_OR_FAIL(bp_tensor_from_data(&w, BP_FLOAT32, 1, (const int64_t[]){2}, (const float[]){5, 6}));
    BP_OK_OR_FAIL(bp_node_add_var(n, "w", BP_TRAINVAR, w, NULL));
    bp_tensor_free(w);
    return n;
}

static void expect_w(bp_node *n, float a, float b)
{
    const float *w = bp_node_var(n, "w")->value->data;
    assert_true(w[0] == a && w[1] == b);
}

/* tests/data/ckpt_bomb.npz: 261 KB, one deflate member "M.w.npy" that claims
 * float32 (67108864,), 256 MiB. Every model-aware load, and a capped read,
 * refuses it from the member's header, before inflating the data: the peak
 * memory grows by far less than the claim. */
static void test_npz_bomb_refused_before_inflating(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/ckpt_bomb.npz", BP_TEST_DATA_DIR);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(sb.st_size < 300 * 1000);

    /* the model has M.w, of another shape */
    bp_node *m = make_model("M");
    PEAK_START();
    BP_EXPECT_ERR(bp_load_states(m, p, NULL, NULL, NULL, NULL), BP_ESHAPE,
                  "\"M.w\" has shape (2,) in the model but (67108864,) in the checkpoint");
    PEAK_SMALL();
    expect_w(m, 5, 6);
    bp_node_free(m);

    /* the model lacks M.w: unexpected, read for its CRC through a small buffer */
    bp_node *n = make_model("N");
    PEAK_START();
    BP_EXPECT_ERR(bp_load_states(n, p, NULL, NULL, NULL, NULL), BP_EFORMAT,
                  "1 unexpected keys ['M.w'], 1 missing keys ['N.w']");
    PEAK_SMALL();
    bp_load_opts lax = bp_load_defaults();
    lax.strict = false;
    lax.warn = false;
    bp_load_result r;
    PEAK_START();
    BP_OK_OR_FAIL(bp_load_states(n, p, NULL, &lax, &r, NULL));
    PEAK_SMALL();
    assert_int_equal(r.n_unexpected, 1);
    assert_string_equal(r.unexpected_keys[0], "M.w");
    assert_int_equal(r.n_missing, 1);
    bp_load_result_clear(&r);
    expect_w(n, 5, 6);

    /* outside every group's prefix: the caller's entry, bounded by max_other_bytes */
    bp_collector *vars;
    BP_OK_OR_FAIL(bp_node_vars(n, NULL, &vars));
    bp_ckpt_vars g = {"model/", vars};
    bp_dict *rest = (bp_dict *)1;
    PEAK_START();
    BP_EXPECT_ERR(bp_checkpoint_load_file(p, &g, 1, &lax, NULL, &rest), BP_EFORMAT,
                  "\"M.w\" (float32 (67108864,), 268435456 bytes) is no variable of the model, and such entries may "
                  "hold 67108864 bytes in all (bp_load_opts.max_other_bytes; 0 taken)");
    PEAK_SMALL();
    assert_null(rest);
    bp_collector_free(vars);
    bp_node_free(n);

    /* no model: an explicit cap */
    bp_dict *got = (bp_dict *)1;
    PEAK_START();
    BP_EXPECT_ERR(bp_checkpoint_read_capped(p, 1 << 20, &got), BP_EFORMAT,
                  "\"M.w\" (float32 (67108864,)) needs 268435456 bytes, past the limit of this read (1048576 bytes, 0 "
                  "taken)");
    PEAK_SMALL();
    assert_null(got);
    size_t len;
    unsigned char *b = slurp(p, &len);
    PEAK_START();
    BP_EXPECT_ERR(bp_checkpoint_decode_capped(BP_CKPT_NPZ, b, len, 1 << 20, &got), BP_EFORMAT, "past the limit");
    PEAK_SMALL();
    free(b);
}

/* The same bounds hold for every format: a model-aware load keeps only the
 * model's entries and what max_other_bytes allows, and a capped read counts
 * every kept byte. */
static void test_filtered_loads_every_format(void **state)
{
    (void)state;
    for (size_t f = 0; f < 3; f++) {
        char p[512], name[32];
        snprintf(name, sizeof name, "ck%s", ext_of[all_formats[f]]);
        in_dir(p, sizeof p, name);
        bp_dict *flat;
        BP_OK_OR_FAIL(bp_dict_new(&flat));
        put(flat, "model/M.w", BP_FLOAT32, 1, (const int64_t[]){2}, (const float[]){1, 2});
        put(flat, "model/extra", BP_FLOAT32, 1, (const int64_t[]){3}, (const float[]){7, 8, 9});
        float big[64] = {0};
        put(flat, "meta/big", BP_FLOAT32, 1, (const int64_t[]){64}, big);
        int64_t epoch = 4;
        put(flat, "meta/epoch", BP_INT64, 0, NULL, &epoch);
        BP_OK_OR_FAIL(bp_checkpoint_write(p, flat));
        bp_dict_free(flat);

        bp_node *m = make_model("M");
        bp_collector *vars;
        BP_OK_OR_FAIL(bp_node_vars(m, NULL, &vars));
        bp_ckpt_vars g = {"model/", vars};
        bp_load_opts o = bp_load_defaults();
        o.strict = false;
        o.warn = false;
        o.max_other_bytes = 64 * 4 + 8;
        bp_load_result r;
        bp_dict *rest;
        BP_OK_OR_FAIL(bp_checkpoint_load_file(p, &g, 1, &o, &r, &rest));
        expect_w(m, 1, 2);
        assert_int_equal(r.n_unexpected, 1);
        assert_string_equal(r.unexpected_keys[0], "model/extra");
        bp_load_result_clear(&r);
        assert_int_equal(bp_dict_len(rest), 2);
        assert_string_equal(bp_dict_key(rest, 0), "meta/big");
        assert_true(bp_tensor_get(bp_dict_get_tensor(rest, "meta/epoch"), 0) == 4.0);
        bp_dict_free(rest);
        /* one byte less for the caller's entries */
        o.max_other_bytes -= 1;
        BP_EXPECT_ERR(bp_checkpoint_load_file(p, &g, 1, &o, NULL, NULL), BP_EFORMAT,
                      "\"meta/epoch\" (int64 (), 8 bytes) is no variable of the model");
        o.strict = true;
        BP_EXPECT_ERR(bp_checkpoint_load_file(p, &g, 1, NULL, NULL, NULL), BP_EFORMAT,
                      "1 unexpected keys ['model/extra'], 0 missing keys []");
        bp_collector_free(vars);
        bp_node_free(m);

        /* capped reads: the whole dict needs 8 + 12 + 256 + 8 bytes */
        BP_OK_OR_FAIL(bp_checkpoint_read_capped(p, 284, &flat));
        assert_int_equal(bp_dict_len(flat), 4);
        bp_dict_free(flat);
        flat = (bp_dict *)1;
        BP_EXPECT_ERR(bp_checkpoint_read_capped(p, 283, &flat), BP_EFORMAT,
                      "\"meta/epoch\" (int64 ()) needs 8 bytes, past the limit of this read (283 bytes, 276 taken)");
        assert_null(flat);
        clear_dir();
    }
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
/* The first occurrence of the string s in the n bytes at p (not NUL-terminated), or NULL. */
static char *find_bytes(char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, s, k) == 0) return p + i;
    return NULL;
}

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
    char *minus = find_bytes(t, len, "-0.5"); /* the buffer is not NUL-terminated */
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
    unsigned char *f = (unsigned char *)find_bytes((char *)b + 8, hlen, "\"bpc\"");
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
        cmocka_unit_test_setup(test_npz_bomb_refused_before_inflating, reset_each),
        cmocka_unit_test_setup(test_filtered_loads_every_format, reset_each),
        cmocka_unit_test_setup(test_not_regular_files, reset_each),
        cmocka_unit_test_setup(test_stale_temporaries_removed, reset_each),
        cmocka_unit_test_setup(test_live_save_survives_a_sweep, reset_each),
        cmocka_unit_test_setup(test_json_every_digit_mutant_rejected, reset_each),
        cmocka_unit_test_setup(test_safetensors_crc_cannot_be_edited_off, reset_each),
        cmocka_unit_test_setup(test_json_version_reported_as_seen, reset_each),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
