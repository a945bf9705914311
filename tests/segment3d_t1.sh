#!/usr/bin/env bash
# tests/segment3d_t1.sh SEGMENT3D SCRATCH_DIR — segment3d on a real scan: the T1 MRI and its 7-label
# k-means segmentation that Debian's insighttoolkit5-examples ships (128 x 128 x 62 voxels of 2 x 2 x 3 mm).
#
# The files' header is checked here (shape, spacing, label set 0..6). The volume is cut into four slabs of
# 15 axial slices: slabs 0, 1 and 3 become a Decathlon-layout folder (imagesTr/, labelsTr/) that segment3d
# trains on briefly (two of them train, one validates); slab 2 is never seen in training. `segment3d
# predict` labels slab 2, and there the mean Dice of the six foreground labels must be at least 3 times
# what predicting the majority label everywhere gives (measured: 0.497 against 0.129, 22 s on an idle
# machine; a table of intensity -> most frequent label, read off the whole volume, held-out slab included,
# reaches 0.61, so the labels are mostly but not only intensity bands). The run uses BatchNorm (instance and
# group norm rescale each patch and so hide the absolute intensity these labels follow) and no intensity
# jitter, with the default dataset-wide intensity normalisation. Skipped (77) where the files are missing.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 SEGMENT3D SCRATCH_DIR" >&2; exit 2; }
SEG=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"
W=$(cd "$2" && pwd)/segment3d_t1
rm -rf "$W"
mkdir -p "$W"
PY=/usr/bin/python3
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
D=/usr/share/doc/insighttoolkit5-examples/examples/Data
T1=$D/KmeansTest_T1UCharRaw.nii.gz
SEGM=$D/KmeansTest_T1KmeansPrelimSegmentation.nii.gz
if [ ! -f "$T1" ] || [ ! -f "$SEGM" ]; then
    echo "SKIP: $T1 or $SEGM is not installed (Debian package insighttoolkit5-examples)"
    exit 77
fi

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# The header check and the slabs, with numpy alone (no NIfTI library): NIfTI-1, little-endian, one volume.
"$PY" - "$T1" "$SEGM" "$W/data" <<'PYEOF' || fail "the real scan is not what this test expects"
import gzip, os, struct, sys
import numpy as np
t1, seg, out = sys.argv[1:4]
def read(path):
    raw = gzip.open(path).read()
    assert struct.unpack_from("<i", raw, 0)[0] == 348, path + ": not a little-endian NIfTI-1 file"
    dim = struct.unpack_from("<8h", raw, 40)
    code = struct.unpack_from("<h", raw, 70)[0]
    dt = {2: np.uint8, 4: np.int16}[code]
    off = int(struct.unpack_from("<f", raw, 108)[0])
    n = dim[1] * dim[2] * dim[3]
    arr = np.frombuffer(raw, dt, n, off).reshape(dim[1:4], order="F")
    return raw[:348], dim, struct.unpack_from("<3f", raw, 80), arr
h1, d1, s1, img = read(t1)
h2, d2, s2, lab = read(seg)
assert d1[:4] == d2[:4] == (3, 128, 128, 62), (d1, d2)
assert s1 == s2 == (2.0, 2.0, 3.0), (s1, s2)
assert sorted(np.unique(lab)) == list(range(7)), np.unique(lab)
def write(path, head, arr, code, bitpix):
    h = bytearray(head) + bytes(4)
    struct.pack_into("<8h", h, 40, 3, *arr.shape, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, code, bitpix)
    struct.pack_into("<3f", h, 108, 352, 0, 0)
    open(path, "wb").write(bytes(h) + np.ascontiguousarray(arr).tobytes(order="F"))
for sub in ("imagesTr", "labelsTr"): os.makedirs(os.path.join(out, sub))
for s in range(4):  # slabs of 15 axial slices: z in [0, 15), [15, 30), [30, 45), [45, 60)
    cut = (slice(None), slice(None), slice(15 * s, 15 * s + 15))
    where = "heldout" if s == 2 else "imagesTr"
    os.makedirs(os.path.join(out, where), exist_ok=True)
    write(os.path.join(out, where, f"slab{s}.nii"), h1, img[cut].astype(np.int16), 4, 16)
    write(os.path.join(out, "heldout" if s == 2 else "labelsTr", f"slab{s}_label.nii" if s == 2 else f"slab{s}.nii"),
          h2, lab[cut].astype(np.uint8), 2, 8)
PYEOF
echo "ok: $T1 and its segmentation: 128x128x62, spacing 2x2x3 mm, labels 0..6"

RC=0
"$SEG" --data "$W/data" --val-split 0.34 --patch 16 --depth 2 --base 8 --batch-size 4 --steps 50 --epochs 8 \
    --lr 0.01 --norm batch --jitter 0 --overlap 0 --seed 1 --no-pictures --quiet --out "$W/run" >"$W/train.out" 2>"$W/train.err" || RC=$?
[ $RC -eq 0 ] || fail "training on the slabs: exit $RC; stderr:
$(cat "$W/train.err")"
grep -q '2 train / 1 validation volumes (first 128x128x15, 1 channel(s)), 7 classes' "$W/train.out" ||
    fail "the slab folder was not read as 2 + 1 volumes of 7 classes:
$(cat "$W/train.out")"
RC=0
"$SEG" predict --overlap 0 --model "$W/run/best.safetensors" "$W/data/heldout/slab2.nii" "$W/pred.nii.gz" >"$W/predict.out" 2>"$W/predict.err" || RC=$?
[ $RC -eq 0 ] || fail "predict on the held-out slab: exit $RC; stderr:
$(cat "$W/predict.err")"

"$PY" - "$W/data/heldout/slab2_label.nii" "$W/pred.nii.gz" <<'PYEOF' || fail "the held-out Dice is too low (train.out: $(tail -3 "$W/train.out"))"
import gzip, struct, sys
import numpy as np
def read(path):
    raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    dim = struct.unpack_from("<8h", raw, 40)
    dt = {2: np.uint8, 4: np.int16}[struct.unpack_from("<h", raw, 70)[0]]
    off = int(struct.unpack_from("<f", raw, 108)[0])
    arr = np.frombuffer(raw, dt, dim[1] * dim[2] * dim[3], off).reshape(dim[1:4], order="F")
    return raw, dim, arr
rs, ds, lab = read(sys.argv[1])
rp, dp, pred = read(sys.argv[2])
assert dp[:4] == ds[:4], (dp, ds)
assert struct.unpack_from("<3f", rp, 80) == struct.unpack_from("<3f", rs, 80), "spacing differs"
g, p = lab.astype(int), pred.astype(int)  # slab 2: never trained on
def mean_dice(p):
    d = [2 * np.sum((p == c) & (g == c)) / (np.sum(p == c) + np.sum(g == c)) for c in range(1, 7) if np.any(g == c)]
    return float(np.mean(d)), d
major = np.bincount(g.ravel()).argmax()
base, _ = mean_dice(np.full_like(g, major))
got, per = mean_dice(p)
print(f"held-out slab: mean foreground Dice {got:.3f} (per label {' '.join('%.3f' % x for x in per)}); "
      f"predicting the majority label {major} everywhere: {base:.3f}")
assert got >= 3 * base, (got, base)
PYEOF
echo "PASS: segment3d_t1"
