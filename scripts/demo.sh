#!/bin/bash
# make demo: boot a real Linux VM (Debian's cloud kernel, a busybox initramfs)
# with qtvmm and show it working. On a host with VT-x/AMD-V qtvmm runs it
# directly on /dev/kvm; on a development machine whose KVM is PVM (kvm_pvm),
# which cannot run stock Linux, it runs inside the nested Linux lab
# (QEMU-TCG L1 with emulated SVM, see docs/linux-lab.md).
#   QTVMM=path  use another qtvmm binary (default build/src/vmm/qtvmm)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
qtvmm=${QTVMM:-$root/build/src/vmm/qtvmm}
lab="$root/tests/linux/lab.py"

if [ ! -x "$qtvmm" ]; then
    echo "demo: no qtvmm binary at $qtvmm (run 'make' first)" >&2
    exit 1
fi

hw_kvm=0
if [ -e /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] &&
    { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    hw_kvm=1
fi

if [ $hw_kvm = 1 ]; then
    echo "demo: hardware KVM found: qtvmm boots Linux (2 vCPUs, 256 MiB) on /dev/kvm"
    python3 "$lab" direct --qtvmm "$qtvmm"
    rc=$?
else
    why="no /dev/kvm"
    [ -d /sys/module/kvm_pvm ] && why="this host's KVM is PVM (kvm_pvm), which cannot run stock Linux"
    echo "demo: $why;"
    echo "demo: booting Linux with qtvmm inside the nested lab instead:"
    echo "demo:   L1 = Debian Linux under QEMU-TCG with emulated AMD SVM (real KVM inside),"
    echo "demo:   L2 = Debian Linux (2 vCPUs, 256 MiB, virtio-blk on an ext4 image, virtio-net on a tap)"
    echo "demo:   run by qtvmm in L1. Takes about a minute on 2 cores."
    python3 "$lab" run --plan qtvmm:boot,qtvmm:blk,qtvmm:net --qtvmm "$qtvmm"
    rc=$?
fi
case $rc in
0) echo "demo: OK: qtvmm booted Linux, the guest checked its CPUs, memory, disk and network, and powered off" ;;
77) echo "demo: the lab cannot be set up on this machine (see above)" ;;
*) echo "demo: FAILED (see above; full console logs under tests/linux/work/logs/)" ;;
esac
exit $rc
