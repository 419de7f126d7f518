#!/bin/sh
# /init of the Linux lab's L2 guest (busybox). Runs the step named by
# lab.step= on the kernel command line, prints one or more
#   LAB-RESULT <name> PASS|FAIL <detail>
# lines on the console and powers the VM off.
# Kernel command line parameters:
#   lab.step=boot|blk|net|hang   the test step
#   lab.cpus=N lab.mem=MiB  what the VMM was asked for (boot)
#   lab.ip=A.B.C.D/N lab.peer=A.B.C.D lab.sha=HEX lab.port=N  (net)
export PATH=/bin
/bin/busybox mount -t proc proc /proc
echo "LAB-INIT start"
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /mnt && mount -t tmpfs tmpfs /tmp

result() { # name PASS|FAIL detail...
    echo "LAB-RESULT $*"
}

arg() { # name -> value of lab.<name>= on the kernel command line
    for w in $(cat /proc/cmdline); do
        case "$w" in "lab.$1="*) echo "${w#lab.$1=}"; return 0 ;; esac
    done
    return 1
}

load_modules() {
    while read -r m; do
        [ -n "$m" ] || continue
        out=$(insmod "/lib/modules/$m.ko" 2>&1) || {
            case "$out" in *"File exists"*) ;; *) echo "lab: insmod $m: $out" ;; esac
        }
    done </lib/modules/order
}

wait_for() { # path, tenths of a second
    i=0
    while [ ! -e "$1" ] && [ $i -lt "$2" ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

step_boot() {
    want_cpus=$(arg cpus) || want_cpus=0
    want_mem=$(arg mem) || want_mem=0
    cpus=$(grep -c '^processor' /proc/cpuinfo)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mib=$((mem_kb / 1024))
    # The kernel keeps some memory for itself (and the initramfs): accept
    # 70%..100% of what the VMM was given.
    lo=$((want_mem * 70 / 100))
    if [ "$cpus" -eq "$want_cpus" ]; then
        result boot-cpus PASS "cpus=$cpus"
    else
        result boot-cpus FAIL "cpus=$cpus expected=$want_cpus"
    fi
    if [ "$mem_mib" -ge "$lo" ] && [ "$mem_mib" -le "$want_mem" ]; then
        result boot-mem PASS "memtotal_mib=$mem_mib given_mib=$want_mem"
    else
        result boot-mem FAIL "memtotal_mib=$mem_mib given_mib=$want_mem range=$lo..$want_mem"
    fi
}

step_blk() {
    dev=/dev/vda
    wait_for $dev 50 || { result blk FAIL "no $dev (virtio-blk did not appear)"; return; }
    mount -t ext4 $dev /mnt || { result blk FAIL "mount ext4 $dev failed"; return; }
    dd if=/dev/urandom of=/tmp/data.bin bs=1M count=32 2>/dev/null
    want=$(sha256sum /tmp/data.bin | cut -d' ' -f1)
    cp /tmp/data.bin /mnt/data.bin && sync || { result blk FAIL "write to $dev failed"; return; }
    rm -f /tmp/data.bin
    umount /mnt || { result blk FAIL "umount failed"; return; }
    echo 3 >/proc/sys/vm/drop_caches
    mount -t ext4 -o ro $dev /mnt || { result blk FAIL "remount failed"; return; }
    got=$(sha256sum /mnt/data.bin | cut -d' ' -f1)
    umount /mnt
    if [ "$got" = "$want" ]; then
        result blk PASS "sha256=$got bytes=33554432"
    else
        result blk FAIL "read back sha256=$got written sha256=$want"
    fi
}

step_net() {
    ip=$(arg ip) peer=$(arg peer) sha=$(arg sha) port=$(arg port)
    ifc=""
    i=0
    while [ -z "$ifc" ] && [ $i -lt 50 ]; do
        for n in /sys/class/net/*; do
            [ "${n##*/}" = lo ] || ifc=${n##*/}
        done
        [ -n "$ifc" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$ifc" ] || { result net FAIL "no network interface (virtio-net did not appear)"; return; }
    ip link set lo up
    ip link set "$ifc" up && ip addr add "$ip" dev "$ifc" ||
        { result net FAIL "cannot configure $ifc"; return; }
    if ping -c 3 -W 5 "$peer" >/tmp/ping.txt 2>&1; then
        result net-ping PASS "$(grep -E 'packets transmitted' /tmp/ping.txt)"
    else
        result net-ping FAIL "$(tail -n 2 /tmp/ping.txt | tr '\n' ' ')"
    fi
    # (busybox 1.35 wget crashes on -T: bound it with timeout instead)
    if timeout 60 wget -q -O /tmp/blob "http://$peer:8080/blob"; then
        got=$(sha256sum /tmp/blob | cut -d' ' -f1)
        if [ "$got" = "$sha" ]; then
            result net-get PASS "sha256=$got bytes=$(stat -c %s /tmp/blob)"
        else
            result net-get FAIL "sha256=$got expected=$sha"
        fi
    else
        result net-get FAIL "wget http://$peer:8080/blob failed"
    fi
    dd if=/dev/urandom of=/tmp/up bs=1M count=4 2>/dev/null
    up=$(sha256sum /tmp/up | cut -d' ' -f1)
    if nc -w 10 "$peer" "$port" </tmp/up; then
        result net-put SENT "sha256=$up bytes=4194304"
    else
        result net-put FAIL "nc to $peer:$port failed"
    fi
}

load_modules
step=$(arg step) || step=none
case "$step" in
boot) step_boot ;;
blk) step_blk ;;
net) step_net ;;
hang) echo "lab: hanging on purpose"; while :; do sleep 3600; done ;;
*) result "$step" FAIL "unknown lab.step" ;;
esac
echo "LAB-INIT done"
sync
poweroff -f
