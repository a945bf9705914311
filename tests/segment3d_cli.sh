#!/usr/bin/env bash
# tests/segment3d_cli.sh SEGMENT3D SCRATCH_DIR — examples/segment3d end to end, on tiny volumes:
#   1. --help lists every option; bad values are refused before anything is written.
#   2. A short synthetic run writes checkpoint.safetensors, best.safetensors, metrics.csv (a header with a
#      column per class, one row per epoch, Dice in [0, 1]) and PNG pictures that decode to the sizes they
#      should have.
#   3. Ctrl-C in the middle of an epoch + --resume gives the bytes of an uninterrupted run (checkpoints,
#      pictures, the deterministic columns of metrics.csv); so does --epochs 1 then --resume --epochs 2.
#   4. --data on a Decathlon-layout folder of NIfTI files (written here with numpy), then predict with its
#      best checkpoint: a uint8 label file of the input's size, spacing and affine; a missing label file is
#      an error naming it.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 SEGMENT3D SCRATCH_DIR" >&2; exit 2; }
SEG=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"
W=$(cd "$2" && pwd)/segment3d_cli
rm -rf "$W"
mkdir -p "$W"
PY=/usr/bin/python3
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# seg NAME ARGS...: runs segment3d, stdout/stderr to $W/NAME.out/.err; sets RC. A crash or a sanitizer
# report fails the test whatever RC is (130 is allowed for a run sent SIGINT: pass it as ALLOW=130).
seg() {
    local name=$1
    shift
    RC=0
    "$SEG" "$@" >"$W/$name.out" 2>"$W/$name.err" || RC=$?
    check_sane "$name"
}
check_sane() {
    if [ "$RC" -ge 128 ] && [ "$RC" -ne "${2:-0}" ]; then
        fail "$1: segment3d died with status $RC; stderr:
$(cat "$W/$1.err")"
    fi
    ! grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$W/$1.err" || fail "$1: sanitizer report:
$(cat "$W/$1.err")"
}
expect_ok() {
    local name=$1
    seg "$@"
    [ "$RC" -eq 0 ] || fail "$name: expected exit 0, got $RC; stderr:
$(cat "$W/$name.err")"
}
# expect_err NAME SUBSTRING -- ARGS...
expect_err() {
    local name=$1 sub=$2
    shift 3
    seg "$name" "$@"
    [ "$RC" -ne 0 ] && [ "$RC" -lt 128 ] || fail "$name: expected a failure exit status, got $RC"
    grep -qF -- "$sub" "$W/$name.err" || fail "$name: stderr lacks \"$sub\"; it says:
$(cat "$W/$name.err")"
}

# ------------------------------------------------------------------ 1. options
expect_ok help --help
grep -q '^usage: segment3d \[train\]' "$W/help.out" || fail "help: no usage line"
for flag in --epochs --steps --batch-size --lr --patch --base --depth --norm --intensity --fg-prob --overlap --threads --seed \
    --jitter --out --data --val-split --size --train-volumes --val-volumes --no-pictures --resume --quiet --help \
    --model; do
    grep -qE -- "(^| )$flag( |$)" "$W/help.out" || fail "help: $flag is not documented"
done
expect_err patch '--patch must be a multiple of 2^depth = 8 in [8, 256], got 12' -- --patch 12 --out "$W/never"
expect_err norm '--norm must be instance, batch or group, got "layer"' -- --norm layer --out "$W/never"
expect_err intensity '--intensity must be dataset, volume or none, got "global"' -- --intensity global --out "$W/never"
expect_err no_model 'predict needs --model FILE' -- predict in.nii out.nii
[ ! -e "$W/never" ] || fail "a rejected command line created its --out directory"
echo "ok: --help and bad values"

# ------------------------------------------------------------ 2. a short run
TINY=(--size 16 --patch 16 --depth 2 --base 4 --train-volumes 3 --val-volumes 2 --batch-size 1 --seed 5)
expect_ok short "${TINY[@]}" --steps 3 --epochs 2 --quiet --out "$W/short"
for f in checkpoint.safetensors best.safetensors metrics.csv curves.png slice_001.png slice_002.png; do
    [ -s "$W/short/$f" ] || fail "short run: no $W/short/$f"
done
grep -q '^epoch 2/2 .*val Dice [0-9.]* (1: .* 2: .* 3: ' "$W/short.out" || fail "short run: no per-class Dice line:
$(cat "$W/short.out")"
"$PY" - "$W/short" <<'PYEOF' || fail "short run: the files do not parse"
import csv, os, struct, sys, zlib
d = sys.argv[1]
rows = list(csv.reader(open(os.path.join(d, "metrics.csv"))))
assert rows[0] == ["epoch", "train_loss", "train_voxel_acc", "val_mean_dice", "val_dice_1", "val_dice_2",
                   "val_dice_3", "lr", "seconds"], rows[0]
assert [r[0] for r in rows[1:]] == ["1", "2"], rows
for r in rows[1:]:
    assert float(r[1]) > 0 and all(0 <= float(x) <= 1 for x in r[2:7]), r
def png(path):
    raw = open(path, "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, size = 8, b"", None
    while pos < len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", raw[pos + 8 + n:pos + 12 + n])[0], (path, kind)
        if kind == b"IHDR": size = struct.unpack(">II", body[:8]) + (body[8], body[9])
        if kind == b"IDAT": idat += body
        pos += 12 + n
    w, h, depth, colour = size
    assert depth == 8 and colour == 2, (path, size)
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w), path
    return w, h
# 16 voxels drawn 8x8 pixels each: three 128-pixel panels with 4-pixel gaps
assert png(os.path.join(d, "slice_002.png")) == (3 * 128 + 8, 128)
assert png(os.path.join(d, "curves.png")) == (480, 260)
PYEOF
echo "ok: a short run writes checkpoints, metrics.csv and PNG pictures that decode"

# ------------------------------------------------------- 3. interrupt + resume
# same_run A B WHAT: the checkpoints, the pictures and metrics.csv without its seconds column are equal.
same_run() {
    local f
    for f in checkpoint.safetensors best.safetensors slice_002.png curves.png; do
        cmp -s "$1/$f" "$2/$f" || fail "$3: $2/$f differs from the uninterrupted run's"
    done
    diff <(cut -d, -f1-8 "$1/metrics.csv") <(cut -d, -f1-8 "$2/metrics.csv") >"$W/metrics.diff" ||
        fail "$3: metrics.csv differs from the uninterrupted run's:
$(cat "$W/metrics.diff")"
}
steps=12
for attempt in 1 2 3; do
    rm -rf "$W/B"
    "$SEG" "${TINY[@]}" --steps $steps --epochs 2 --out "$W/B" >"$W/B.out" 2>"$W/B.err" &
    pid=$! waited=0
    until grep -qE '^epoch 1/2 +[0-9]+%' "$W/B.out"; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
        waited=$((waited + 1))
        [ $waited -lt 6000 ] || { kill "$pid"; fail "interrupt: no progress line in 60 s"; }
    done
    kill -INT "$pid" 2>/dev/null || true
    RC=0
    wait "$pid" || RC=$?
    check_sane B 130
    [ "$RC" -ne 130 ] || break
    [ "$RC" -eq 0 ] || fail "interrupted run: expected exit 130, got $RC; stderr:
$(cat "$W/B.err")"
    [ $attempt -lt 3 ] || fail "interrupted run: three runs finished before SIGINT arrived"
    steps=$((steps * 4))
done
where=$(sed -n 's|^interrupted: saved .*/B/checkpoint.safetensors (epoch \([0-9]*\), step \([0-9]*\)); continue with --resume$|\1 \2|p' "$W/B.out")
[ -n "$where" ] || fail "interrupted run: no \"interrupted: saved ...\" line:
$(cat "$W/B.out")"
expect_ok B_resume "${TINY[@]}" --steps $steps --epochs 2 --out "$W/B" --resume --quiet
grep -qF "resumed from $W/B/checkpoint.safetensors at epoch ${where% *}, step ${where#* }" "$W/B_resume.out" ||
    fail "resumed run: no \"resumed from ... at epoch ${where% *}, step ${where#* }\" line"
expect_ok A "${TINY[@]}" --steps $steps --epochs 2 --out "$W/A" --quiet
same_run "$W/A" "$W/B" "SIGINT at epoch ${where% *} step ${where#* } + --resume"
expect_ok C1 "${TINY[@]}" --steps $steps --epochs 1 --out "$W/C" --quiet
expect_ok C2 "${TINY[@]}" --steps $steps --epochs 2 --out "$W/C" --resume --quiet
same_run "$W/A" "$W/C" "--epochs 1, then --resume --epochs 2"
expect_err resume_seed 'it was written with --seed "5"; this run has --seed "6"' -- "${TINY[@]}" --steps $steps \
    --epochs 2 --out "$W/C" --resume --seed 6
echo "ok: SIGINT at epoch ${where% *} step ${where#* } + --resume, and --epochs 1 + --resume: same bytes as one run"

# ------------------------------------------------------- 4. --data and predict
# nifti_folder DIR: DIR/imagesTr and DIR/labelsTr with four 16^3 cases (a bright box labelled 1, a dark ball
# labelled 2), NIfTI-1 files written here, spacing (1.5, 1.5, 2) and an sform with a shift.
"$PY" - "$W/data" <<'PYEOF'
import gzip, os, struct, sys
import numpy as np
d = sys.argv[1]
def nifti(path, arr, code, bitpix):
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, *arr.shape, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, code, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1.5, 1.5, 2, 1, 1, 1, 1)
    struct.pack_into("<3f", h, 108, 352, 1, 0)
    struct.pack_into("<hh", h, 252, 0, 1)
    struct.pack_into("<12f", h, 280, 1.5, 0, 0, -10, 0, 1.5, 0, 20, 0, 0, 2, 5)
    h[344:348] = b"n+1\0"
    open(path, "wb").write(bytes(h) + arr.tobytes(order="F"))
rng = np.random.default_rng(0)
for sub in ("imagesTr", "labelsTr"): os.makedirs(os.path.join(d, sub))
i, j, k = np.meshgrid(np.arange(16), np.arange(16), np.arange(16), indexing="ij")
for case in range(4):
    lab = np.zeros((16, 16, 16), np.uint8)
    a, b = rng.integers(2, 7, 3), rng.integers(9, 12, 3)
    lab[a[0]:a[0] + 5, a[1]:a[1] + 5, a[2]:a[2] + 5] = 1
    lab[(i - b[0]) ** 2 + (j - b[1]) ** 2 + (k - b[2]) ** 2 <= 9] = 2
    img = (np.where(lab == 1, 2.0, np.where(lab == 2, -1.5, 0.0)) + 0.2 * rng.standard_normal(lab.shape)).astype(np.float32)
    nifti(os.path.join(d, "imagesTr", f"case_{case:03d}.nii"), img, 16, 32)
    nifti(os.path.join(d, "labelsTr", f"case_{case:03d}.nii"), lab, 2, 8)
open(os.path.join(d, "imagesTr", "._case_000.nii"), "wb").write(b"resource fork")  # skipped, as the Decathlon's
PYEOF
NIFTI=(--patch 16 --depth 2 --base 4 --batch-size 2 --seed 2 --quiet)
expect_ok data --data "$W/data" "${NIFTI[@]}" --steps 8 --epochs 2 --out "$W/D"
grep -q '3 train / 1 validation volumes (first 16x16x16, 1 channel(s)), 3 classes' "$W/data.out" ||
    fail "--data: the folder was not read as 3 + 1 cases of 3 classes:
$(cat "$W/data.out")"
# The checkpoint carries the training set's intensity statistics for predict: numpy's mean and sd over the
# three training cases (whichever three the seeded split chose) must be what it saved.
"$PY" - "$W/data/imagesTr" "$W/D/best.safetensors" <<'PYEOF' || fail "--data: meta/intensity is not the training set's"
import json, struct, sys
import numpy as np
d, ck = sys.argv[1:3]
raw = open(ck, "rb").read()
n = struct.unpack_from("<Q", raw, 0)[0]
head = json.loads(raw[8:8 + n])
def entry(key):
    e = head[key]
    a, b = e["data_offsets"]
    return raw[8 + n + a:8 + n + b], e["dtype"]
mode, _ = entry("meta/intensity/mode")
assert mode == b"dataset", mode
(mb, mt), (sb, st) = entry("meta/intensity/mean"), entry("meta/intensity/sd")
assert mt == st == "F64", (mt, st)
mean, sd = np.frombuffer(mb, "<f8")[0], np.frombuffer(sb, "<f8")[0]
imgs = [np.frombuffer(open(f"{d}/case_{c:03d}.nii", "rb").read()[352:], "<f4").astype(np.float64) for c in range(4)]
fits = [(np.concatenate([imgs[c] for c in range(4) if c != v]).mean(), np.concatenate([imgs[c] for c in range(4) if c != v]).std()) for v in range(4)]
assert any(abs(m - mean) <= 1e-9 * (1 + abs(m)) and abs(s - sd) <= 1e-9 * s for m, s in fits), (mean, sd, fits)
PYEOF
expect_ok predict predict --model "$W/D/best.safetensors" "$W/data/imagesTr/case_001.nii" "$W/pred.nii.gz"
"$PY" - "$W/data/imagesTr/case_001.nii" "$W/pred.nii.gz" <<'PYEOF' || fail "predict: the label file is wrong"
import gzip, struct, sys
import numpy as np
src = open(sys.argv[1], "rb").read()
out = gzip.open(sys.argv[2]).read()
dim = lambda h: struct.unpack_from("<8h", h, 40)
assert dim(out)[:4] == dim(src)[:4], (dim(out), dim(src))
assert struct.unpack_from("<h", out, 70)[0] == 2, "datatype should be uint8 (2)"
assert struct.unpack_from("<3f", out, 80) == struct.unpack_from("<3f", src, 80), "spacing differs"
assert struct.unpack_from("<12f", out, 280) == struct.unpack_from("<12f", src, 280), "sform differs"
off = int(struct.unpack_from("<f", out, 108)[0])
lab = np.frombuffer(out[off:off + 16 ** 3], np.uint8)
assert len(lab) == 16 ** 3 and lab.max() <= 2, lab.max()
PYEOF
mkdir -p "$W/broken"
cp -r "$W/data/imagesTr" "$W/broken/"
mkdir -p "$W/broken/labelsTr"
cp "$W/data/labelsTr/case_000.nii" "$W/data/labelsTr/case_001.nii" "$W/broken/labelsTr/"
expect_err no_label "$W/broken/labelsTr/case_002.nii: no label file for the image" -- --data "$W/broken" \
    "${NIFTI[@]}" --out "$W/E"
expect_err predict_missing "$W/nothing.nii" -- predict --model "$W/D/best.safetensors" "$W/nothing.nii" "$W/p2.nii"
echo "ok: --data on a NIfTI folder, predict keeps the input's geometry, missing files are named"
echo "PASS: segment3d_cli"
