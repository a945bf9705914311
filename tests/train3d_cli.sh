#!/usr/bin/env bash
# tests/train3d_cli.sh TRAIN3D SCRATCH_DIR — end-to-end tests of examples/train3d.
#   1. Ctrl-C + --resume gives the bytes of an uninterrupted run: SIGINT lands
#      part-way through a run (exit 130, checkpoint written, no model yet), the
#      resumed run says where it resumed, and model.safetensors, the final
#      checkpoint and metrics.csv (all but the wall-time column) equal run A's.
#      Also --epochs 1, then --resume --epochs 3 (resume at an epoch boundary
#      with a longer schedule), and the resume errors (no checkpoint, other seed).
#   2. --data DIR: two well-formed folders (float32 (H,W,D) with a header line,
#      uint8 (H,W,D,C) without) train one epoch; each malformed folder exits
#      1 (no crash, no sanitizer report) with a message naming the bad file.
#   3. --help, unknown options, missing and invalid values (tests/cli_bad_input.sh
#      and its table tests/cli_bad_input/train3d.tsv hold the rest of the bad input).
# Needs /usr/bin/python3 with numpy (to write the .npy folders). Everything is
# written under SCRATCH_DIR/train3d_cli, which is emptied first.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 TRAIN3D_BINARY SCRATCH_DIR" >&2
    exit 2
fi
T3D=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -x "$T3D" ] || { echo "FAIL: $1 is not an executable" >&2; exit 1; }
mkdir -p "$2"
W=$(cd "$2" && pwd)/train3d_cli
rm -rf "$W"
mkdir -p "$W"
PY=/usr/bin/python3
# Same thread count for every run: results are bitwise reproducible per thread count.
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
ulimit -c 0

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
"$PY" -c 'import numpy' 2>/dev/null || fail "$PY cannot import numpy (needed to write the .npy test folders)"

# t3d NAME ARGS...: runs train3d, stdout to $W/NAME.out, stderr to $W/NAME.err;
# sets RC. A crash (signal) or a sanitizer report fails the test whatever RC is.
t3d() {
    local name=$1
    shift
    RC=0
    "$T3D" "$@" >"$W/$name.out" 2>"$W/$name.err" || RC=$?
    check_sane "$name"
}

# check_sane NAME [130]: 130 is allowed only where the run was sent SIGINT
# (train3d returns 130 after saving the checkpoint).
check_sane() {
    if [ "$RC" -ge 128 ] && [ "$RC" -ne "${2:-0}" ]; then
        fail "$1: train3d died with status $RC (signal $((RC - 128))); stderr:
$(cat "$W/$1.err")"
    fi
    if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$W/$1.err"; then
        fail "$1: sanitizer report:
$(cat "$W/$1.err")"
    fi
}

# expect_ok NAME ARGS...
expect_ok() {
    local name=$1
    t3d "$@"
    [ "$RC" -eq 0 ] || fail "$name: expected exit 0, got $RC; stderr:
$(cat "$W/$name.err")"
}

# expect_err NAME SUBSTRING... -- ARGS...: exit status in 1..127 and every
# SUBSTRING in stderr.
expect_err() {
    local name=$1
    shift
    local subs=()
    while [ "$1" != "--" ]; do
        subs+=("$1")
        shift
    done
    shift
    t3d "$name" "$@"
    if [ "$RC" -eq 0 ] || [ "$RC" -ge 128 ]; then
        fail "$name: expected a failure exit status (1..127), got $RC; stdout:
$(cat "$W/$name.out")"
    fi
    local s
    for s in "${subs[@]}"; do
        grep -qF -- "$s" "$W/$name.err" || fail "$name: stderr lacks \"$s\"; it says:
$(cat "$W/$name.err")"
    done
}

# same_run DIR_A DIR_B WHAT: the model, the final checkpoint and the
# deterministic columns of metrics.csv are equal (column 7 is wall seconds).
same_run() {
    local a=$1 b=$2 what=$3 f
    for f in model.safetensors checkpoint.safetensors; do
        [ -f "$b/$f" ] || fail "$what: $b/$f is missing"
        cmp -s "$a/$f" "$b/$f" || fail "$what: $b/$f differs from the uninterrupted run's $a/$f"
    done
    head -1 "$b/metrics.csv" | grep -qx 'epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds' ||
        fail "$what: $b/metrics.csv has an unexpected header: $(head -1 "$b/metrics.csv")"
    [ "$(wc -l <"$b/metrics.csv")" -eq $((EPOCHS + 1)) ] ||
        fail "$what: $b/metrics.csv should have a header and $EPOCHS rows:
$(cat "$b/metrics.csv")"
    cut -d, -f1-6 "$a/metrics.csv" >"$W/metrics_a.csv"
    cut -d, -f1-6 "$b/metrics.csv" >"$W/metrics_b.csv"
    diff "$W/metrics_a.csv" "$W/metrics_b.csv" >"$W/metrics.diff" ||
        fail "$what: metrics.csv differs from the uninterrupted run's (epoch,train_loss,train_acc,val_loss,val_acc,lr):
$(cat "$W/metrics.diff")"
}

# ---------------------------------------------------------------- 3. options
expect_ok help --help
grep -q '^usage: train3d' "$W/help.out" || fail "help: no usage line on stdout"
grep -q -- '--resume' "$W/help.out" || fail "help: --resume is not documented"
# the model line is read off the model: three blocks, 16, 32 and 64 channels
grep -qF 'Trains 3 x [Conv3d-BatchNorm3d-ReLU-MaxPool3d] (C->16->32->64), global average pool, Dense(64->K)' \
    "$W/help.out" || fail "help: the model line does not describe the model: $(sed -n 2p "$W/help.out")"
expect_err unknown 'unknown or incomplete option "--bogus"' 'usage: train3d' -- --bogus
expect_err missing_value 'unknown or incomplete option "--epochs"' -- --epochs
expect_err epochs0 '--epochs must be >= 1, got 0' -- --epochs 0 --out "$W/never"
expect_err size12 '--size must be a multiple of 8, >= 8, got 12' -- --size 12 --out "$W/never"
expect_err batch1 '--batch-size must be >= 2' -- --batch-size 1 --out "$W/never"
expect_err epochs_junk '--epochs expects an integer, got "3x"' -- --epochs 3x --out "$W/never"
expect_err lr_junk '--lr expects a number, got "abc"' -- --lr abc --out "$W/never"
expect_err seed_neg '--seed expects an integer in [0, 2^64), got "-1"' -- --seed -1 --out "$W/never"
expect_err optimizer '--optimizer must be adam or sgd, got "rmsprop"' -- --optimizer rmsprop --out "$W/never"
[ ! -e "$W/never" ] || fail "a rejected command line created its --out directory"
echo "ok: --help, unknown options and invalid values"

# ------------------------------------------------------ 1. interrupt + resume
EPOCHS=3
base=(--size 16 --val-size 32 --batch-size 16 --threads 2 --seed 5)

# interrupt DIR TRAIN_N: runs into DIR, SIGINT once the first progress line
# shows training started (the handler is installed by then); sets RC.
interrupt() {
    local dir=$1 n=$2 name
    name=$(basename "$dir")
    "$T3D" "${base[@]}" --train-size "$n" --epochs $EPOCHS --out "$dir" >"$W/$name.out" 2>"$W/$name.err" &
    local pid=$! waited=0
    until grep -qE '^epoch 1/[0-9]+ +[0-9]+%' "$W/$name.out"; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
        waited=$((waited + 1))
        [ $waited -lt 6000 ] || { kill "$pid"; fail "$name: no progress line in 60 s"; }
    done
    kill -INT "$pid" 2>/dev/null || true
    RC=0
    wait "$pid" || RC=$?
    check_sane "$name" 130
}

# If the run finished before the signal arrived, nothing was resumed: retry
# with 4x the steps rather than pass without a resume.
train_n=128
for attempt in 1 2 3; do
    rm -rf "$W/B"
    interrupt "$W/B" $train_n
    [ "$RC" -ne 130 ] || break
    [ "$RC" -eq 0 ] || fail "interrupted run: expected exit 130, got $RC; stderr:
$(cat "$W/B.err")"
    echo "note: the run with --train-size $train_n finished before SIGINT arrived; retrying with more steps"
    [ $attempt -lt 3 ] || fail "interrupted run: three runs finished before SIGINT arrived"
    train_n=$((train_n * 4))
done
opts=("${base[@]}" --train-size "$train_n")
[ -f "$W/B/checkpoint.safetensors" ] || fail "interrupted run: no $W/B/checkpoint.safetensors"
[ ! -e "$W/B/model.safetensors" ] || fail "interrupted run: wrote model.safetensors although it did not finish"
where=$(sed -n 's|^interrupted: saved .*/B/checkpoint.safetensors (epoch \([0-9]*\), step \([0-9]*\)); continue with --resume$|\1 \2|p' "$W/B.out")
[ -n "$where" ] || fail "interrupted run: no \"interrupted: saved ...\" line; stdout:
$(cat "$W/B.out")"
read -r int_epoch int_step <<<"$where"
expect_ok B_resume "${opts[@]}" --epochs $EPOCHS --out "$W/B" --resume --quiet
grep -qF "resumed from $W/B/checkpoint.safetensors at epoch $int_epoch, step $int_step" "$W/B_resume.out" ||
    fail "resumed run: no \"resumed from ... at epoch $int_epoch, step $int_step\" line; stdout:
$(cat "$W/B_resume.out")"
grep -q "^epoch $EPOCHS/$EPOCHS " "$W/B_resume.out" || fail "resumed run: did not reach epoch $EPOCHS"

expect_ok A "${opts[@]}" --epochs $EPOCHS --out "$W/A" --quiet
same_run "$W/A" "$W/B" "interrupt at epoch $int_epoch step $int_step + resume"
echo "ok: SIGINT at epoch $int_epoch step $int_step (--train-size $train_n), --resume: same bytes as an uninterrupted run"

# Resume at an epoch boundary with a longer schedule: --epochs 1, then --epochs 3.
expect_ok C1 "${opts[@]}" --epochs 1 --out "$W/C" --quiet
! grep -q '^resumed' "$W/C1.out" || fail "C1: a fresh run says it resumed"
expect_ok C3 "${opts[@]}" --epochs $EPOCHS --out "$W/C" --resume --quiet
grep -qF "resumed from $W/C/checkpoint.safetensors at epoch 2, step 0" "$W/C3.out" ||
    fail "C3: no \"resumed from ... at epoch 2, step 0\" line; stdout:
$(cat "$W/C3.out")"
same_run "$W/A" "$W/C" "--epochs 1 then --resume --epochs $EPOCHS"
echo "ok: --epochs 1, then --resume --epochs $EPOCHS: same bytes as an uninterrupted run"

mkdir -p "$W/empty"
expect_err resume_nothing "$W/empty/checkpoint.safetensors" -- "${opts[@]}" --epochs 1 --out "$W/empty" --resume
expect_err resume_seed "cannot resume from $W/A/checkpoint.safetensors" 'it was written with --seed "5"; this run has --seed "6"' -- \
    --size 16 --val-size 32 --batch-size 16 --threads 2 --seed 6 --train-size $train_n --epochs $EPOCHS \
    --out "$W/A" --resume
echo "ok: --resume without a checkpoint or with another seed"

# ------------------------------------------------------------- 2. --data DIR
D=$W/data
"$PY" - "$D" <<'EOF'
import os, sys
import numpy as np

root = sys.argv[1]
rng = np.random.default_rng(0)

def vol(shape, dt=np.float32):
    if dt == np.uint8:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dt)

def folder(name, rows, header=True, extra=None):
    """rows: (file, label text, array or None); None writes no file."""
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "labels.csv"), "w") as f:
        if header:
            f.write("file,label\n")
        for file, label, arr in rows:
            f.write(f"{file},{label}\n")
            if arr is not None:
                np.save(os.path.join(d, file), arr)
    for file, data in (extra or {}).items():
        with open(os.path.join(d, file), "wb") as f:
            f.write(data)
    return d

def good(n=3, shape=(8, 8, 8)):
    return [(f"v{i}.npy", str(i % 2), vol(shape)) for i in range(n)]

# Well-formed: float32 (H,W,D) with a header line; uint8 (H,W,D,C) without one.
folder("f32", [(f"s{i:02d}.npy", str(i % 3), vol((8, 8, 8))) for i in range(12)])
folder("u8", [(f"s{i:02d}.npy", str(i % 2), vol((8, 8, 8, 2), np.uint8)) for i in range(12)], header=False)

# Malformed: the bad entry is never the first, so naming it is not luck.
def npy_bytes(arr):
    import io
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()

ok = npy_bytes(vol((8, 8, 8)))
folder("corrupt_header", good(2) + [("bad.npy", "1", None)], extra={"bad.npy": ok.replace(b"'descr'", b"'dexcr'", 1)})
folder("bad_magic", good(2) + [("bad.npy", "1", None)], extra={"bad.npy": b"this is not an npy file at all\n"})
folder("truncated", good(2) + [("bad.npy", "1", None)], extra={"bad.npy": ok[:-100]})
folder("missing", good(2) + [("gone.npy", "1", None)])
folder("label_range", good(2) + [("v2.npy", "1000000", vol((8, 8, 8)))])
folder("label_negative", good(2) + [("v2.npy", "-1", vol((8, 8, 8)))])
folder("label_nan", good(2) + [("v2.npy", "abc", vol((8, 8, 8)))])
folder("label_fraction", good(2) + [("v2.npy", "1.5", vol((8, 8, 8)))])
folder("shape_differs", good(2) + [("bad.npy", "1", vol((8, 8, 16)))])
folder("channels_differ", good(2) + [("bad.npy", "1", vol((8, 8, 8, 2)))])
folder("float64", good(2) + [("bad.npy", "1", vol((8, 8, 8), np.float64))])
folder("empty_volume", [("bad.npy", "0", vol((0, 8, 8)))] + good(2))
folder("side_12", [(f"v{i}.npy", str(i % 2), vol((12, 12, 12))) for i in range(4)])
folder("one_class", [(f"v{i}.npy", "0", vol((8, 8, 8))) for i in range(4)])
folder("few_samples", good(4))
folder("empty_csv", [], header=False)
folder("header_only", [], header=True)
os.makedirs(os.path.join(root, "no_csv"))
EOF

dopts=(--epochs 1 --batch-size 2 --threads 2 --seed 3 --quiet)
expect_ok data_f32 --data "$D/f32" --val-split 0.25 "${dopts[@]}" --out "$W/out_f32"
grep -qF "train3d: $D/f32, 9 train / 3 held-out samples of (8,8,8,1), 3 classes" "$W/data_f32.out" ||
    fail "data_f32: unexpected dataset line: $(grep '^bpc' "$W/data_f32.out")"
expect_ok data_u8 --data "$D/u8" --val-split 0.25 "${dopts[@]}" --out "$W/out_u8"
grep -qF "train3d: $D/u8, 9 train / 3 held-out samples of (8,8,8,2), 2 classes" "$W/data_u8.out" ||
    fail "data_u8: unexpected dataset line: $(grep '^bpc' "$W/data_u8.out")"
for k in f32 u8; do
    [ -s "$W/out_$k/model.safetensors" ] || fail "data_$k: no model.safetensors"
    [ "$(wc -l <"$W/out_$k/metrics.csv")" -eq 2 ] || fail "data_$k: metrics.csv should have a header and 1 row"
    grep -q '^epoch 1/1 ' "$W/data_$k.out" || fail "data_$k: no epoch line"
done
echo "ok: --data with float32 (H,W,D) and uint8 (H,W,D,C) volumes trains"

bad() { # bad CASE SUBSTRING...: --data $D/CASE fails naming what is wrong
    local c=$1
    shift
    expect_err "data_$c" "$@" -- --data "$D/$c" "${dopts[@]}" --out "$W/out_bad"
}
bad corrupt_header "$D/corrupt_header/bad.npy" 'bad NPY header'
bad bad_magic "$D/bad_magic/bad.npy" 'not an NPY file (bad magic)'
bad truncated "$D/truncated/bad.npy" 'data bytes'
bad missing "$D/missing/gone.npy" 'cannot open' 'No such file'
range_msg='expected "file.npy,label" with an integer label in [0, 1000000)'
bad label_range "$D/label_range/labels.csv:4: $range_msg"
bad label_negative "$D/label_negative/labels.csv:4: $range_msg"
bad label_nan "$D/label_nan/labels.csv:4: $range_msg"
bad label_fraction "$D/label_fraction/labels.csv:4: $range_msg"
bad shape_differs "$D/shape_differs/bad.npy: shape (8,8,16) differs from the first volume's (8,8,8,1)"
bad channels_differ "$D/channels_differ/bad.npy: shape (8,8,8,2) differs from the first volume's (8,8,8,1)"
bad float64 "$D/float64/bad.npy: expected a float32 or uint8 volume" 'float64'
bad empty_volume "$D/empty_volume/bad.npy: volume of shape (0,8,8) has no voxels"
bad side_12 "$D/side_12: volumes of (12,12,12): each side must be a multiple of 8"
bad one_class "$D/one_class/labels.csv: every label is 0"
expect_err data_few_samples '3 training samples are fewer than one batch of 4' -- \
    --data "$D/few_samples" "${dopts[@]}" --batch-size 4 --out "$W/out_bad"
expect_err data_val_split '--val-split must be in (0, 1), got 1.5' -- \
    --data "$D/f32" --val-split 1.5 "${dopts[@]}" --out "$W/out_bad"
expect_err data_val_empty '--val-split 0.01 of 12 samples leaves an empty part' -- \
    --data "$D/f32" --val-split 0.01 "${dopts[@]}" --out "$W/out_bad"
bad empty_csv "$D/empty_csv/labels.csv: lists 0 volumes; at least 2 are needed"
bad header_only "$D/header_only/labels.csv: lists 0 volumes; at least 2 are needed"
bad no_csv "$D/no_csv/labels.csv: cannot open"
bad nonexistent "$D/nonexistent/labels.csv: cannot open"
[ ! -e "$W/out_bad/model.safetensors" ] || fail "a failed --data run wrote model.safetensors"
echo "ok: malformed --data folders fail with the offending file named"
echo "PASS: train3d_cli"
