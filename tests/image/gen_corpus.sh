#!/bin/bash
# Regenerates the seed corpus of fuzz_qcow2 (tests/image/corpus/): small
# qcow2 images made by qemu-img/qemu-io covering the format's features,
# plus hand-damaged variants. Needs qemu-utils and python3.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/corpus
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mk() { # name, create options, size, qemu-io commands...
    local n=$1 o=$2 s=$3; shift 3
    qemu-img create -q -f qcow2 -o "$o" "$t/$n" "$s"
    for c in "$@"; do qemu-io -c "$c" "$t/$n" >/dev/null; done
}
mk plain.qcow2 cluster_size=512 64k 'write -P 1 0 4k' 'write -z 8k 4k'
mk v2.qcow2 cluster_size=512,compat=0.10 64k 'write -P 2 1k 3k'
mk rb1.qcow2 cluster_size=512,refcount_bits=1 128k 'write -P 3 0 20k'
mk rb64.qcow2 cluster_size=512,refcount_bits=64 64k 'write -P 4 5k 1k'
mk extl2.qcow2 cluster_size=16k,extended_l2=on 64k 'write -P 5 1k 2k' 'write -z 20k 2k'
mk lazy.qcow2 cluster_size=512,lazy_refcounts=on 64k 'write -P 6 0 1k'
mk snap.qcow2 cluster_size=512 32k 'write -P 7 0 2k'
qemu-img snapshot -c s1 "$t/snap.qcow2"
qemu-io -c 'write -P 8 1k 1k' "$t/snap.qcow2" >/dev/null
head -c 16384 /dev/urandom | base64 > "$t/text.raw"
truncate -s 32k "$t/text.raw"
qemu-img convert -c -O qcow2 -o cluster_size=4k "$t/text.raw" "$t/compressed.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 "$t/base.qcow2" 16k
qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 "$t/overlay.qcow2"
cp "$t"/{plain,v2,rb1,rb64,extl2,lazy,snap,compressed,overlay}.qcow2 "$out/"
# damaged variants of plain.qcow2 (fields at their qcow2.txt offsets)
python3 - "$t/plain.qcow2" "$out" <<'PY'
import struct, sys
src, out = sys.argv[1], sys.argv[2]
img = open(src, "rb").read()
def put(name, off, fmt, val, base=img):
    b = bytearray(base); struct.pack_into(fmt, b, off, val)
    open(f"{out}/bad-{name}.qcow2", "wb").write(b)
put("l1-size", 36, ">I", 0x7fffffff)
put("l1-offset", 40, ">Q", 0x1234567)
put("reftable-offset", 48, ">Q", 1 << 50)
put("reftable-clusters", 56, ">I", 0xffffff)
put("nb-snapshots", 60, ">I", 1000)
put("cluster-bits", 20, ">I", 31)
put("refcount-order", 96, ">I", 9)
put("header-length", 100, ">I", 4000)
put("incompat", 72, ">Q", 1 << 40)
put("backing-offset", 8, ">Q", 500)
put("size", 24, ">Q", 1 << 61)
l1 = struct.unpack_from(">Q", img, 40)[0]
put("l1-entry", l1, ">Q", (1 << 63) | 0x7fffff00)
l2 = struct.unpack_from(">Q", img, l1)[0] & 0x00fffffffffffe00
put("l2-entry", l2, ">Q", (1 << 63) | 0x1fffe00)
put("l2-compressed", l2, ">Q", (1 << 62) | (0xff << 54) | 0xffffff)
rt = struct.unpack_from(">Q", img, 48)[0]
put("refblock", rt, ">Q", 0x100001)
b = bytearray(img); struct.pack_into(">II", b, 112, 0xe2792aca, 0xfffff)
open(f"{out}/bad-ext-len.qcow2", "wb").write(b)
open(f"{out}/bad-truncated.qcow2", "wb").write(img[:90])
PY
echo "corpus: $(ls "$out" | wc -l) files in $out"
