#!/usr/bin/env bash
# io/fuzz/run.sh [SECONDS] [FORMAT...] — fuzzes bpc's checkpoint loaders.
#
# Builds one libFuzzer harness per loader (fuzz_safetensors, fuzz_npz,
# fuzz_json: io/fuzz/fuzz_<format>.c) with
#   clang -fsanitize=fuzzer,address,undefined
# against the sources of core/ and io/ (the checkpoint code is in io/), then runs
# each for SECONDS (default 5) from the committed seed corpus
# io/fuzz/corpus/<format>/ plus io/fuzz/regress/<format>/, with the
# token dictionary io/fuzz/<format>.dict. FORMAT is
# any of safetensors npz json (default: all three). Exit status: 0 when no
# harness found anything, 1 when one did, 77 when clang or libFuzzer is missing
# (ctest counts 77 as skipped). Needs: clang (Debian clang-14), libFuzzer
# (libclang-rt-14-dev, which clang-14 pulls in), libjansson-dev, libzip-dev.
#
# Work files go to $FUZZ_WORK (default: a fresh temporary folder, removed at
# the end unless something was found): the harness binaries, the corpus grown
# during the run (corpus-<format>/, the committed corpus is never modified),
# and crash-*/leak-*/timeout-* inputs.
#
# A long campaign, e.g. an hour per loader on 2 cores, keeping what it learns:
#   FUZZ_WORK=$HOME/bpc-fuzz FUZZ_JOBS=2 io/fuzz/run.sh 3600
# FUZZ_WORK is reused across runs, so the grown corpus carries over. To fold
# the new inputs into the committed seeds, minimise them first:
#   $HOME/bpc-fuzz/fuzz_npz -merge=1 io/fuzz/corpus/npz $HOME/bpc-fuzz/corpus-npz
# When a harness finds a crash, the input is in $FUZZ_WORK/<format>/crash-<sha1>;
# reproduce it with  $FUZZ_WORK/fuzz_<format> <file>,  fix the loader, and
# commit the input as io/fuzz/regress/<format>/<name>: test_checkpoint's
# test_fuzz_corpus_regressions replays every file there on each ctest run,
# without clang.
set -euo pipefail

secs=${1:-5}
if [ "$secs" = "-h" ] || [ "$secs" = "--help" ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
shift || true
formats=("$@")
[ ${#formats[@]} -eq 0 ] && formats=(safetensors npz json)

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${FUZZ_CC:-clang}
jobs=${FUZZ_JOBS:-1}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: $cc not found (apt-get install clang-14 libclang-rt-14-dev): skipped" >&2
    exit 77
fi
probe=$(mktemp -d)
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe/p.c"
if ! "$cc" -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
    rm -rf "$probe"
    echo "fuzz: $cc cannot link libFuzzer (apt-get install libclang-rt-14-dev): skipped" >&2
    exit 77
fi
rm -rf "$probe"

keep=1
if [ -z "${FUZZ_WORK:-}" ]; then
    FUZZ_WORK=$(mktemp -d)
    keep=0
fi
mkdir -p "$FUZZ_WORK"

# The checkpoint code is in io/ (checkpoint.c, ckpt_*.c), over core/; the harnesses link
# those and core's sources (io/'s other files need the folders between).
cflags=(-g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
        -fno-omit-frame-pointer -std=c11 -D_POSIX_C_SOURCE=200809L -I"$root/core" -I"$root/io"
        $(pkg-config --cflags jansson libzip zlib))
libs=($(pkg-config --libs jansson libzip zlib) -lm -lpthread)
objdir="$FUZZ_WORK/obj"
mkdir -p "$objdir"
objs=()
for src in "$root"/core/*.c "$root"/io/checkpoint.c "$root"/io/ckpt_*.c; do
    obj="$objdir/$(basename "$src" .c).o"
    "$cc" "${cflags[@]}" -c "$src" -o "$obj"
    objs+=("$obj")
done

# Several jobs: libFuzzer's fork-per-job mode (each job logs to fuzz-<n>.log).
par=()
[ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")

found=0
for fmt in "${formats[@]}"; do
    case $fmt in safetensors|npz|json) ;; *) echo "fuzz: unknown format $fmt" >&2; exit 2 ;; esac
    bin="$FUZZ_WORK/fuzz_$fmt"
    "$cc" "${cflags[@]}" -fsanitize=fuzzer "$here/fuzz_$fmt.c" "${objs[@]}" "${libs[@]}" -o "$bin"
    corpus="$FUZZ_WORK/corpus-$fmt"
    out="$FUZZ_WORK/$fmt"
    mkdir -p "$corpus" "$out"
    dict=()
    [ -f "$here/$fmt.dict" ] && dict=(-dict="$here/$fmt.dict")
    seeds=("$here/corpus/$fmt")
    [ -d "$here/regress/$fmt" ] && seeds+=("$here/regress/$fmt")
    echo "fuzz: $fmt for ${secs}s ($jobs job(s)), work in $FUZZ_WORK"
    rc=0
    # New inputs go to the first corpus folder only: the work copy.
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=20 \
        "${par[@]}" "${dict[@]}" -print_final_stats=1 "$corpus" "${seeds[@]}" \
        >"$out/log.txt" 2>&1) || rc=$?
    cat "$out"/fuzz-*.log >>"$out/log.txt" 2>/dev/null || true
    tail -n 12 "$out/log.txt" | grep -E 'stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY' || true
    if [ "$rc" -ne 0 ] || compgen -G "$out/crash-*" >/dev/null || compgen -G "$out/leak-*" >/dev/null \
        || compgen -G "$out/timeout-*" >/dev/null; then
        echo "fuzz: $fmt FOUND A PROBLEM (exit $rc); log and inputs in $out" >&2
        tail -n 40 "$out/log.txt" >&2
        found=1
    else
        echo "fuzz: $fmt clean"
    fi
done

if [ "$found" -eq 0 ] && [ "$keep" -eq 0 ]; then rm -rf "$FUZZ_WORK"; fi
exit "$found"
