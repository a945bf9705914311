#!/usr/bin/env bash
# tests/cli_bad_input.sh PROGRAM BINARY TABLE SCRATCH_DIR — bad input to a CLI program, one table row per case.
#
# TABLE (tests/cli_bad_input/<program>.tsv) has one case per line, tab-separated:
#   name  setup  exit  substring  arguments
# `setup` is "-" or the name of a setup_<setup> function below, run first in the case's own empty directory
# $S (it writes data folders, trains a checkpoint, ...); `exit` is the exit status the program must return
# (never 0, never a signal); `substring` must appear in its stderr (it names the option or the file); the
# arguments are split on blanks. In substring and arguments, $S is the case's directory and $TINY the
# options of a tiny synthetic train3d run (the one setup_checkpoint trains), $LONG a 4001-byte name in $S. Lines starting with # are comments.
# A case also fails on a sanitizer report. The first failing case stops the test; with CLI_BAD_INPUT_ALL=1
# every case runs and each failure is listed. A case may run CLI_BAD_INPUT_TIMEOUT seconds (default 60). A new program joins with its own table and setups.
set -euo pipefail

if [ $# -ne 4 ]; then
    echo "usage: $0 PROGRAM BINARY TABLE SCRATCH_DIR" >&2
    exit 2
fi
PROG=$1
BIN=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
TABLE=$3
[ -x "$BIN" ] || { echo "FAIL: $2 is not an executable" >&2; exit 1; }
[ -f "$TABLE" ] || { echo "FAIL: no table $TABLE" >&2; exit 1; }
mkdir -p "$4"
W=$(cd "$4" && pwd)/cli_bad_input_$PROG
rm -rf "$W"
mkdir -p "$W"
PY=/usr/bin/python3
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
ulimit -c 0
LIMIT=${CLI_BAD_INPUT_TIMEOUT:-60}
TINY="--size 8 --train-size 16 --val-size 4 --batch-size 4 --epochs 2 --seed 3 --threads 1 --quiet"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# ----------------------------------------------------------------- setups

# npy_folder DIR PYTHON: DIR/labels.csv and volumes from a python snippet that
# fills rows = [(file, label, array)], with numpy as np and rng a seeded generator.
npy_folder() {
    "$PY" - "$1" "$2" <<'PYEOF'
import os, sys
import numpy as np
d, body = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
rows = []
exec(body)
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "labels.csv"), "w") as f:
    f.write("file,label\n")
    for file, label, arr in rows:
        f.write(f"{file},{label}\n")
        np.save(os.path.join(d, file), arr)
PYEOF
}

GOOD='rows += [(f"v{i}.npy", i % 2, rng.standard_normal((8, 8, 8)).astype(np.float32)) for i in range(4)]'

setup_nan_voxel() { # voxel 73 = (1,1,1) of the fourth volume is NaN
    npy_folder "$S/data" "$GOOD
bad = rng.standard_normal((8, 8, 8)).astype(np.float32); bad[1, 1, 1] = np.nan
rows.insert(3, ('bad.npy', 1, bad))"
}
setup_inf_voxel() { # channel 1 of voxel (0,0,2) of a 2-channel volume is -Inf: flat index 5
    npy_folder "$S/data" "rows += [(f'v{i}.npy', i % 2, rng.standard_normal((8, 8, 8, 2)).astype(np.float32)) for i in range(4)]
bad = rng.standard_normal((8, 8, 8, 2)).astype(np.float32); bad[0, 0, 2, 1] = -np.inf
rows.append(('bad.npy', 0, bad))"
}
setup_label_gap() { # one label of 999999 among 0/1
    npy_folder "$S/data" "$GOOD
rows.append(('big.npy', 999999, rng.standard_normal((8, 8, 8)).astype(np.float32)))"
}
setup_checkpoint() { # a finished-epoch checkpoint of the tiny run (epoch 1 of 2) in $S
    # shellcheck disable=SC2086
    "$BIN" $TINY --epochs 1 --out "$S" >"$S/setup.out" 2>"$S/setup.err" ||
        fail "setup_checkpoint: the tiny run failed: $(cat "$S/setup.err")"
}
setup_finished() { # the whole tiny run (2 epochs) in $S
    # shellcheck disable=SC2086
    "$BIN" $TINY --out "$S" >"$S/setup.out" 2>"$S/setup.err" ||
        fail "setup_finished: the tiny run failed: $(cat "$S/setup.err")"
}
# set_entry NAME VALUE: rewrites the int64 scalar NAME of $S/checkpoint.safetensors with
# VALUE, CRC updated, so only the training checkpoint's own range checks can refuse it.
set_entry() {
    "$PY" - "$S/checkpoint.safetensors" "$1" "$2" <<'PYEOF'
import json, struct, sys, zlib
path, key, value = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
data = 8 + n
a, b = head[key]["data_offsets"]
assert head[key]["dtype"] == "I64" and b - a == 8
raw[data + a:data + b] = struct.pack("<q", value)
crc = 0
for k, v in sorted(((k, v) for k, v in head.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
    s, e = v["data_offsets"]
    crc = zlib.crc32(raw[data + s:data + e], crc)
head["__metadata__"]["data_crc32"] = "%08x" % crc
text = json.dumps(head, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + bytes(raw[data:]))
PYEOF
}
setup_epoch_negative() { setup_checkpoint && set_entry train/epoch -3; }
setup_step_too_far() { setup_checkpoint && set_entry train/step 4; }
setup_sums_off() { setup_checkpoint && set_entry meta/seen 5; }

# ------------------------------------------------------------------ cases

"$PY" -c 'import numpy' 2>/dev/null || fail "$PY cannot import numpy (needed by the setups)"
n=0 failed=0
while IFS= read -r line || [ -n "$line" ]; do
    [ -z "$line" ] || [ "${line:0:1}" = "#" ] && continue
    IFS=$'\t' read -r name setup want sub args <<<"$line"
    [ -n "$name" ] && [ -n "$setup" ] && [ -n "$want" ] && [ -n "$sub" ] ||
        fail "$TABLE: malformed row (want name, setup, exit, substring, arguments): $line"
    [ "$want" -ne 0 ] || fail "$TABLE: $name expects exit 0; this table is for failures"
    S=$W/$name
    mkdir -p "$S"
    [ "$setup" = "-" ] || "setup_$setup"
    LONG=$S/$(printf 'x%.0s' $(seq $((4001 - ${#S} - 1))))
    sub=${sub//'$TINY'/$TINY}
    sub=${sub//'$S'/$S}
    args=${args//'$TINY'/$TINY}
    args=${args//'$LONG'/$LONG}
    args=${args//'$S'/$S}
    read -r -a argv <<<"$args"
    rc=0
    timeout -s KILL "$LIMIT" "$BIN" "${argv[@]}" >"$S/stdout" 2>"$S/stderr" || rc=$?
    why=
    if [ "$rc" -eq 137 ]; then
        why="still running after $LIMIT s (a bad input must fail at once)"
    elif [ "$rc" -ge 128 ]; then
        why="$PROG died with status $rc (signal $((rc - 128)))"
    elif grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$S/stderr"; then
        why="sanitizer report"
    elif [ "$rc" -ne "$want" ]; then
        why="expected exit $want, got $rc"
    elif ! grep -qF -- "$sub" "$S/stderr"; then
        why="stderr lacks \"$sub\""
    fi
    if [ -n "$why" ]; then
        msg="$name: $why; stderr:
$(head -c 2000 "$S/stderr")"
        [ -n "${CLI_BAD_INPUT_ALL:-}" ] || fail "$msg"
        echo "FAIL: $msg" >&2
        failed=$((failed + 1))
    fi
    n=$((n + 1))
done <"$TABLE"
[ $n -gt 0 ] || fail "$TABLE has no cases"
[ $failed -eq 0 ] || fail "$failed of $n cases"
echo "PASS: cli_bad_input $PROG ($n cases)"
