#!/usr/bin/env bash
# tests/valgrind.sh BUILD_DIR — runs every test program BUILD_DIR/tests/test_*
# under valgrind's memcheck and fails if any of them reports a memory error, a
# definite or indirect leak, or fails its own tests.
#
# The build must not use -march=native on a machine with AVX-512: valgrind
# 3.19 cannot decode AVX-512 instructions and stops with SIGILL. .ci/run
# therefore checks a build configured with -DBPC_NATIVE=OFF.
#
# OMP_NUM_THREADS=1 keeps libgomp from starting its thread pool, whose
# per-thread stacks valgrind would otherwise list as "possibly lost";
# OPENBLAS_NUM_THREADS=1 does the same for OpenBLAS's pthread pool, and
# OPENBLAS_CORETYPE=Haswell pins OpenBLAS to AVX2 kernels, which valgrind can
# run. Only definite and indirect leaks count as errors: "possibly lost" and
# "still reachable" blocks are the runtime libraries' own process-lifetime
# allocations, not ours. valgrind's own findings exit with 99 so that they
# are told apart from a test that failed (cmocka exits with the number of
# failed tests).
set -euo pipefail

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: $0 BUILD_DIR   (runs BUILD_DIR/tests/test_* under valgrind)" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
testdir="$build/tests"
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind.sh: valgrind not found; install it with: apt-get install valgrind" >&2
    exit 2
fi

if grep -q '^BPC_NATIVE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null && grep -qw avx512f /proc/cpuinfo; then
    echo "valgrind.sh: $build was built with -march=native on an AVX-512 CPU, which valgrind cannot" >&2
    echo "run; configure a build with -DBPC_NATIVE=OFF for valgrind (as .ci/run does)" >&2
    exit 2
fi

progs=()
for p in "$testdir"/test_*; do
    [ -f "$p" ] && [ -x "$p" ] && progs+=("$p")
done
if [ ${#progs[@]} -eq 0 ]; then
    echo "valgrind.sh: no test programs found in $testdir (build the tests first)" >&2
    exit 2
fi

supp=()
if [ -f "$here/valgrind.supp" ]; then
    supp=(--suppressions="$here/valgrind.supp")
fi

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell CMOCKA_MESSAGE_OUTPUT=stdout

# One program under valgrind: its output goes to a log, its summary line to
# stdout when it finishes, its exit status to a file.
run_one() {
    local p=$1 name rc=0 start secs why
    name=$(basename "$p")
    start=$(date +%s)
    # Run from the tests folder, as ctest does.
    (cd "$testdir" && timeout "$limit" valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --error-exitcode=99 "${supp[@]}" "$p") >"$logdir/$name.log" 2>&1 || rc=$?
    secs=$(( $(date +%s) - start ))
    echo "$rc" >"$logdir/$name.rc"
    if [ "$rc" -eq 0 ]; then
        printf 'valgrind: %-32s ok      (%ds)\n' "$name" "$secs"
    else
        case "$rc" in
            99) why="memory errors or leaks" ;;
            124) why="still running after ${limit}s" ;;
            *) why="exit status $rc" ;;
        esac
        if grep -q "unhandled instruction bytes" "$logdir/$name.log"; then
            why="$why; valgrind cannot run this CPU's instructions: configure with -DBPC_NATIVE=OFF"
        fi
        printf 'valgrind: %-32s FAILED  (%ds, %s)\n' "$name" "$secs" "$why"
    fi
}

# valgrind runs a program on one core; VALGRIND_JOBS programs run at once,
# each for at most VALGRIND_TIMEOUT seconds.
jobs=${VALGRIND_JOBS:-2}
limit=${VALGRIND_TIMEOUT:-1200}
echo "valgrind: ${#progs[@]} programs from $testdir, $jobs at a time"
running=0
for p in "${progs[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$p" &
    running=$((running + 1))
done
wait

failed=()
for p in "${progs[@]}"; do
    name=$(basename "$p")
    if [ "$(cat "$logdir/$name.rc" 2>/dev/null || echo missing)" != 0 ]; then
        echo "----- $name: output under valgrind -----"
        cat "$logdir/$name.log" 2>/dev/null || true
        echo "----- end of $name -----"
        failed+=("$name")
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "valgrind: ${#failed[@]} of ${#progs[@]} programs failed: ${failed[*]}"
    exit 1
fi
echo "valgrind: all ${#progs[@]} programs clean (no memory errors, no definite or indirect leaks)"
