#!/bin/sh
# tests/exported_symbols.sh LIB... — the exported_symbols test.
# The libraries are built with -fvisibility=hidden and export only what the
# public headers declare between BP_API_BEGIN and BP_API_END. For each shared
# library given, this fails when its dynamic symbol table defines
#   - a bp__ name (an internal: private headers, kernels, helpers), or
#   - a name that does not start with bp_ (a helper that escaped the prefix),
# and when a few functions of the public API are missing (one per folder).
# It lists every offending symbol. The linker's own marks (_init, _fini,
# _edata, _end, __bss_start) are not bpc's and are skipped; in an ASan build
# each exported global G comes with ASan's one-definition-rule mark
# __odr_asan.G, checked as G.
set -eu
if [ $# -lt 1 ]; then
  echo "usage: $0 LIB.so..." >&2
  exit 2
fi
NM=${NM:-nm}
status=0
for lib in "$@"; do
  syms=$("$NM" -D --defined-only "$lib" | awk '{ sub(/^__odr_asan\./, "", $NF); print $NF }' |
         grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start | sort -u)
  internal=$(printf '%s\n' "$syms" | grep '^bp__' || true)
  foreign=$(printf '%s\n' "$syms" | grep -v '^bp_' || true)
  if [ -n "$internal" ]; then
    echo "exported_symbols: $lib exports internal bp__ symbols:" >&2
    printf '  %s\n' $internal >&2
    status=1
  fi
  if [ -n "$foreign" ]; then
    echo "exported_symbols: $lib exports symbols outside the bp_ prefix:" >&2
    printf '  %s\n' $foreign >&2
    status=1
  fi
  # One public function from each folder: core, autograd, layers, optim, io.
  for want in bp_last_error bp_tensor_new bp_node_create bp_backward bp_gradcheck \
              bp_batchnorm3d_new bp_conv3d_new bp_optim_update bp_scheduler_lr_at bp_save_states; do
    if ! printf '%s\n' "$syms" | grep -q -x "$want"; then
      echo "exported_symbols: $lib does not export $want (public API)" >&2
      status=1
    fi
  done
  n=$(printf '%s\n' "$syms" | grep -c '^bp_' || true)
  echo "exported_symbols: $lib: $n bp_ symbols"
done
exit $status
