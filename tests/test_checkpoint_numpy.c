/* tests/test_checkpoint_numpy.c — interoperability with NumPy, live.
 *
 * bpc writes REF (tests/test_checkpoint_ref.h) as .npz, .safetensors and
 * .json; Debian's /usr/bin/python3 with NumPy (python3-numpy, a CI
 * dependency) then checks, against REF rebuilt by tests/gen_checkpoint.py:
 *   - np.load reads the .npz and finds the same dtypes, shapes and bits, and
 *     every member is byte for byte what np.save writes for that array;
 *   - the .safetensors, parsed with struct/json/np.frombuffer, holds the same
 *     arrays, and its data_crc32 equals zlib.crc32 of the data section;
 *   - json.load of the .json gives the same values, and its data_crc32 is
 *     the one gen_checkpoint.py's json_crc computes;
 * and writes np.savez / np.savez_compressed files of REF that bpc reads back
 * bit for bit. Without python3 + numpy the test is skipped, not passed. */
#include "bp_test.h"
#include <stdlib.h>
#include <unistd.h>
#include "test_checkpoint_ref.h"

#define PYTHON "/usr/bin/python3"

static const char *script =
    "import io, json, os, struct, sys, zipfile, zlib\n"
    "import numpy as np\n"
    "d, tests = sys.argv[1], sys.argv[2]\n"
    "sys.path.insert(0, tests)\n"
    "from gen_checkpoint import ref_state\n"
    "ref = ref_state()\n"
    "def same(a, b, k):\n"
    "    assert a.dtype == b.dtype, (k, a.dtype, b.dtype)\n"
    "    assert a.shape == b.shape, (k, a.shape, b.shape)\n"
    "    assert a.tobytes() == b.tobytes(), (k, a, b)\n"
    "# 1. np.load of bpc's npz\n"
    "z = np.load(os.path.join(d, 'bpc.npz'))\n"
    "assert list(z.keys()) == list(ref), list(z.keys())\n"
    "for k in ref: same(z[k], ref[k], k)\n"
    "with zipfile.ZipFile(os.path.join(d, 'bpc.npz')) as zf:\n"
    "    for k in ref:\n"
    "        buf = io.BytesIO(); np.lib.format.write_array(buf, ref[k])\n"
    "        assert zf.read(k + '.npy') == buf.getvalue(), k\n"
    "        assert zf.getinfo(k + '.npy').compress_type == zipfile.ZIP_STORED\n"
    "# 2. bpc's safetensors\n"
    "raw = open(os.path.join(d, 'bpc.safetensors'), 'rb').read()\n"
    "(n,) = struct.unpack('<Q', raw[:8])\n"
    "assert (8 + n) % 8 == 0\n"
    "hdr = json.loads(raw[8:8 + n])\n"
    "data = raw[8 + n:]\n"
    "meta = hdr.pop('__metadata__')\n"
    "assert meta == {'format': 'bpc', 'version': '1', 'data_crc32': '%08x' % zlib.crc32(data)}, meta\n"
    "assert list(hdr) == list(ref), list(hdr)\n"
    "names = {'F32': '<f4', 'F64': '<f8', 'I32': '<i4', 'I64': '<i8', 'U8': '|u1'}\n"
    "for k, e in hdr.items():\n"
    "    b, end = e['data_offsets']\n"
    "    a = np.frombuffer(data[b:end], dtype=names[e['dtype']]).reshape(e['shape'])\n"
    "    same(a, ref[k], k)\n"
    "# 3. bpc's json\n"
    "doc = json.load(open(os.path.join(d, 'bpc.json')))\n"
    "assert doc['format'] == 'bpc' and doc['version'] == 2\n"
    "from gen_checkpoint import json_crc\n"
    "assert doc['data_crc32'] == json_crc(ref), (doc['data_crc32'], json_crc(ref))\n"
    "conv = {'NaN': float('nan'), 'Infinity': float('inf'), '-Infinity': float('-inf')}\n"
    "for k, e in doc['tensors'].items():\n"
    "    vals = [conv.get(v, v) if isinstance(v, str) else v for v in e['data']]\n"
    "    a = np.array(vals, dtype=e['dtype']).reshape(e['shape'])\n"
    "    same(a, ref[k], k)\n"
    "assert list(doc['tensors']) == list(ref)\n"
    "# 4. files for bpc to read\n"
    "np.savez(os.path.join(d, 'np.npz'), **ref)\n"
    "np.savez_compressed(os.path.join(d, 'npc.npz'), **ref)\n"
    "print('numpy ok')\n";

static char g_dir[64];

static int have_numpy(void)
{
    if (access(PYTHON, X_OK) != 0) return 0;
    return system(PYTHON " -c 'import numpy' >/dev/null 2>&1") == 0;
}

static void test_numpy_interop(void **state)
{
    (void)state;
    if (!have_numpy()) {
        print_message("skipped: %s with numpy not found (apt-get install python3-numpy)\n", PYTHON);
        skip();
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/bpc_ckpt_np_XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char p[512], cmd[2048];
    bp_dict *ref = ref_state();
    const char *names[] = {"bpc.npz", "bpc.safetensors", "bpc.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
        BP_OK_OR_FAIL(bp_checkpoint_write(p, ref));
    }
    snprintf(p, sizeof p, "%s/check.py", g_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(script, f);
    fclose(f);

    /* no __pycache__ in the source tree from importing gen_checkpoint */
    snprintf(cmd, sizeof cmd, "PYTHONDONTWRITEBYTECODE=1 %s %s %s %s/.. 2>&1", PYTHON, p, g_dir, BP_TEST_DATA_DIR);
    FILE *out = popen(cmd, "r");
    assert_non_null(out);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, out);
    text[n] = '\0';
    int rc = pclose(out);
    if (rc != 0 || !strstr(text, "numpy ok")) fail_msg("python check failed (status %d):\n%s", rc, text);

    const char *back[] = {"np.npz", "npc.npz"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, back[i]);
        bp_dict *got;
        BP_OK_OR_FAIL(bp_checkpoint_read(p, &got));
        expect_same(got, ref, true);
        bp_dict_free(got);
    }
    bp_dict_free(ref);
    const char *all[] = {"bpc.npz", "bpc.safetensors", "bpc.json", "check.py", "np.npz", "npc.npz"};
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, all[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numpy_interop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
