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
#      which must print what the README says.
# The .pc files name the configured prefix (/usr/local by default), so the
# temporary prefix is passed with --define-variable=prefix=..., as a packager
# relocating the files would.
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
pc() { pkg-config --define-variable=prefix="$prefix" "$@"; }

for flavour in bpc bpc64; do
  test -f "$prefix/include/bpc/bpc.h" || { echo "install_test: $prefix/include/bpc/bpc.h not installed" >&2; exit 1; }
  test "$(pc --variable=libdir $flavour)" = "$prefix/$libdir" ||
    { echo "install_test: $flavour.pc libdir is $(pc --variable=libdir $flavour), expected $prefix/$libdir" >&2; exit 1; }

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

# 4. The README's first program, built as the README says, prints what it says.
readme="$src/../README.md"
if [ -f "$readme" ]; then
  awk '/^```c$/ { inblock = 1; body = ""; next }
       inblock && /^```$/ { if (body ~ /^\/\* first\.c/) { printf "%s", body; exit } inblock = 0; next }
       inblock { body = body $0 "\n" }' "$readme" >"$prefix/first.c"
  test -s "$prefix/first.c" || { echo "install_test: no /* first.c block in $readme" >&2; exit 1; }
  # shellcheck disable=SC2046
  $cc $san -std=c11 -Wall -Wextra -Werror "$prefix/first.c" $(pc --cflags --libs bpc) -o "$prefix/first"
  out=$(LD_LIBRARY_PATH="$prefix/$libdir" "$prefix/first")
  case "$out" in
    "Box0.w
BP_ENAME: "*\"Box0\"*) ;;
    *) echo "install_test: README's first.c printed:" >&2; echo "$out" >&2; exit 1 ;;
  esac
fi

echo "install_pkgconfig: ok"
