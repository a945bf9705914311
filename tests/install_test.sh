#!/bin/sh
# tests/install_test.sh BUILD_DIR TESTS_SRC_DIR — the install_pkgconfig test.
# Installs the build tree into a temporary prefix, then builds and runs
# tests/install_consumer.c against the installed copy only:
#   1. through pkg-config, for both flavours (bpc, bpc64), shared libraries;
#   2. through pkg-config --static, for both flavours, static libraries
#      (proves Libs.private / Requires.private are complete);
#   3. through CMake's find_package(bpc), targets bpc::bpc_shared and
#      bpc::bpc64_static;
#   4. the README's first program (the ```c block starting "/* first.c"),
#      compiled with the README's own command line, run exactly as written
#      (the ```sh block after it), which must print what the README says.
# Only PKG_CONFIG_PATH points at the prefix: the .pc files find the prefix
# from their own location (${pcfiledir}), so an installed copy works wherever
# `cmake --install --prefix` put it, with no --define-variable.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR TESTS_SRC_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
cc=${CC:-cc}
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT

# A sanitizer build's libraries need the sanitizer runtimes in the program too.
san=""
if grep -q '^BPC_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  san="-fsanitize=address,undefined"
fi

cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(grep '^CMAKE_INSTALL_LIBDIR:' "$build/CMakeCache.txt" | cut -d= -f2)
libdir=${libdir:-lib}
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
pc() { pkg-config "$@"; }
# The directory pkg-config names, as a path with no symbolic links or "..".
real() { (cd "$1" 2>/dev/null && pwd -P) || echo "$1 (missing)"; }
prefix_real=$(real "$prefix")

for flavour in bpc bpc64; do
  test -f "$prefix/include/bpc/bpc.h" || { echo "install_test: $prefix/include/bpc/bpc.h not installed" >&2; exit 1; }
  for var in libdir:$libdir includedir:include; do
    got=$(pc --variable="${var%%:*}" $flavour)
    test "$(real "$got")" = "$prefix_real/${var#*:}" ||
      { echo "install_test: $flavour.pc ${var%%:*} is $got, expected $prefix/${var#*:}" >&2; exit 1; }
  done
  case " $(pc --cflags $flavour) " in
    *" -I$prefix"*) ;;
    *) echo "install_test: pkg-config --cflags $flavour is '$(pc --cflags $flavour)', not under $prefix" >&2; exit 1 ;;
  esac

  # 1. shared, through pkg-config
  # shellcheck disable=SC2046,SC2086
  $cc $san -o "$prefix/consumer_$flavour" "$src/install_consumer.c" $(pc --cflags --libs $flavour)
  LD_LIBRARY_PATH="$prefix/$libdir" "$prefix/consumer_$flavour"

  # 2. static, through pkg-config --static: -l<flavour> is replaced with the
  # archive so the linker cannot fall back to the shared library.
  libs=$(pc --static --libs $flavour | sed "s/-l$flavour\( \|\$\)/-l:lib$flavour.a\1/")
  # shellcheck disable=SC2046,SC2086
  $cc $san -o "$prefix/consumer_${flavour}_static" "$src/install_consumer.c" $(pc --cflags $flavour) $libs
  if ldd "$prefix/consumer_${flavour}_static" | grep -q "lib$flavour\.so"; then
    echo "install_test: consumer_${flavour}_static still links lib$flavour.so" >&2
    exit 1
  fi
  "$prefix/consumer_${flavour}_static"
done

# 3. find_package(bpc) from a CMake project that sees only the prefix.
mkdir "$prefix/cmake_consumer"
cat >"$prefix/cmake_consumer/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(bpc_consumer C)
find_package(bpc 0.1 REQUIRED)
add_executable(consumer_cmake_shared "$src/install_consumer.c")
target_link_libraries(consumer_cmake_shared PRIVATE bpc::bpc_shared)
add_executable(consumer_cmake_64_static "$src/install_consumer.c")
target_link_libraries(consumer_cmake_64_static PRIVATE bpc::bpc64_static)
EOF
cmake -S "$prefix/cmake_consumer" -B "$prefix/cmake_consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$san" >/dev/null
cmake --build "$prefix/cmake_consumer/build" >/dev/null
"$prefix/cmake_consumer/build/consumer_cmake_shared"
"$prefix/cmake_consumer/build/consumer_cmake_64_static"

# 4. The README's first program, built and run by the README's own command
# line (the ```sh block that follows it), exactly as written, in a folder
# holding only first.c. A sanitizer build's library needs the sanitizer
# runtimes in the program: there `cc` is a function adding them.
readme="$src/../README.md"
if [ -f "$readme" ]; then
  mkdir "$prefix/first"
  awk '/^```c$/ { inblock = 1; body = ""; next }
       inblock && /^```$/ { if (body ~ /^\/\* first\.c/) { printf "%s", body; exit } inblock = 0; next }
       inblock { body = body $0 "\n" }' "$readme" >"$prefix/first/first.c"
  test -s "$prefix/first/first.c" || { echo "install_test: no /* first.c block in $readme" >&2; exit 1; }
  line=$(awk '/^```c$/ { inblock = 1; body = ""; next }
              inblock && /^```$/ { inblock = 0; if (body ~ /^\/\* first\.c/) seen = 1; next }
              inblock { body = body $0 "\n"; next }
              seen && /^```sh$/ { getline; print; exit }' "$readme")
  case "$line" in
    *first.c*pkg-config*bpc*) ;;
    *) echo "install_test: no compile line for first.c after it in $readme (found '$line')" >&2; exit 1 ;;
  esac
  # The program is also warning-free, as the README's examples must be.
  # shellcheck disable=SC2046
  $cc $san -std=c11 -Wall -Wextra -Werror -fsyntax-only "$prefix/first/first.c" $(pc --cflags bpc)
  cc_prog=$cc
  if [ -n "$san" ]; then
    # shellcheck disable=SC2086
    cc() { command "$cc_prog" $san "$@"; }
  fi
  out=$(cd "$prefix/first" && LD_LIBRARY_PATH="$prefix/$libdir" && export LD_LIBRARY_PATH && eval "$line") ||
    { echo "install_test: the README's line failed: $line" >&2; exit 1; }
  case "$out" in
    "Box0.w
BP_ENAME: "*\"Box0\"*) ;;
    *) echo "install_test: README's first.c printed:" >&2; echo "$out" >&2; exit 1 ;;
  esac
  echo "install_test: README line ok: $line"
fi

echo "install_pkgconfig: ok"
