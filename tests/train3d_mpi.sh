#!/usr/bin/env bash
# tests/train3d_mpi.sh TRAIN3D MPIEXEC SCRATCH — train3d under mpiexec.
# One epoch of a small synthetic run on 1 process and on 2 and 3 processes
# (cross-replica BatchNorm; and 2 with --no-sync-bn): the data-parallel runs
# must report the single-process training loss and accuracy (to the 4 printed
# decimals: float32 sums in another order), rank 0 alone writes the files,
# and --resume under MPI continues a checkpoint.
set -euo pipefail
t3=$1 mpiexec=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0
args=(--quiet --epochs 1 --train-size 96 --val-size 32 --size 16 --batch-size 12 --seed 5)
fail=0
line() { grep -o 'train loss [0-9.]* acc [0-9.]*' "$1"; }
"$t3" "${args[@]}" --out "$scratch/one" >"$scratch/one.log" 2>&1
want=$(line "$scratch/one.log")
for run in "2 sync" "3 sync" "2 nosync"; do
    set -- $run
    extra=()
    [ "$2" = nosync ] && extra=(--no-sync-bn)
    out="$scratch/np$1$2"
    timeout 120 "$mpiexec" --oversubscribe --bind-to none -n "$1" "$t3" "${args[@]}" "${extra[@]}" --out "$out" \
        </dev/null >"$out.log" 2>&1 || { echo "FAIL: $run exited non-zero:"; cat "$out.log"; fail=1; continue; }
    got=$(line "$out.log")
    if [ "$2" = sync ] && [ "$got" != "$want" ]; then
        echo "FAIL: $run: '$got', one process: '$want'"; fail=1
    fi
    [ "$(grep -c 'train loss' "$out.log")" = 1 ] || { echo "FAIL: $run: not exactly one epoch line (rank 0 alone prints)"; fail=1; }
    [ -f "$out/model.safetensors" ] && [ -f "$out/checkpoint.safetensors" ] || { echo "FAIL: $run: files missing"; fail=1; }
done
# --resume under MPI: a second epoch from the 2-process checkpoint (the later --epochs wins)
timeout 120 "$mpiexec" --oversubscribe --bind-to none -n 2 "$t3" "${args[@]}" --epochs 2 --resume \
    --out "$scratch/np2sync" </dev/null >"$scratch/resume.log" 2>&1 || { echo "FAIL: resume:"; cat "$scratch/resume.log"; fail=1; }
grep -q "epoch 2/2" "$scratch/resume.log" || { echo "FAIL: resume did not run epoch 2"; fail=1; }
if [ $fail = 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $fail
