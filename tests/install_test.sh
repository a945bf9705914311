#!/bin/sh
# Installs the build tree into a temporary prefix, then builds and runs a tiny
# program against the installed copy through pkg-config, for both flavours.
set -eu
build=$1
src=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/$(uname -m)-linux-gnu/pkgconfig:${PKG_CONFIG_PATH:-}"
for flavour in bpc bpc64; do
  ${CC:-cc} -o "$prefix/consumer_$flavour" "$src/install_consumer.c" $(pkg-config --cflags --libs $flavour)
  libdir=$(pkg-config --variable=libdir $flavour)
  LD_LIBRARY_PATH="$libdir" "$prefix/consumer_$flavour"
done
echo "install_pkgconfig: ok"
