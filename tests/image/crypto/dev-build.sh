#!/bin/bash
# Developer build of the LUKS/VHD modules and their tests without meson
# (until src/image/meson.build and tests/image/meson.build list them).
#   tests/image/crypto/dev-build.sh [outdir] [extra CFLAGS...]
#   CC=clang tests/image/crypto/dev-build.sh build-e2-clang
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-$root/build-e2}
shift || true
mkdir -p "$out"
cc=${CC:-gcc}
flags=(-std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wvla -Wformat=2
       -fno-strict-aliasing -D_GNU_SOURCE -I"$root/src" -O2 -g "$@")
srcs=("$root/src/common/log.c" "$root/src/image/luks.c")
[ -f "$root/src/image/vhd.c" ] && srcs+=("$root/src/image/vhd.c")
"$cc" "${flags[@]}" -o "$out/test_luks" "$root/tests/image/test_luks.c" "${srcs[@]}" \
    -lcrypto -lcmocka -lpthread
if [ -f "$root/tests/image/test_vhd.c" ]; then
    "$cc" "${flags[@]}" -o "$out/test_vhd" "$root/tests/image/test_vhd.c" "${srcs[@]}" \
        -lcrypto -lcmocka -lpthread
fi
echo "built in $out"
