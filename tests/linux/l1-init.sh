#!/bin/sh
# /init of the Linux lab's L1 host (busybox), booted by QEMU-TCG with an
# emulated AMD SVM CPU. It loads KVM, then runs the L2 VMMs named in the
# plan one after the other, relays each L2 console with a "[L2 N] " prefix,
# checks on the L1 side what the L2 guest did (disk bytes, received file),
# prints one summary line per run and powers L1 off.
# Kernel command line parameters:
#   lab.plan=VMM:STEP[,VMM:STEP...]  VMM is qtvmm or qemu; STEP is boot,
#                                    boot-pvh (the ELF vmlinux, PVH entry), blk,
#                                    vhost-blk (blk through a vhost-user-blk
#                                    backend, qemu-storage-daemon), net,
#                                    card-net (net through qtcard: the VM's
#                                    NIC is a qtcard vhost-user port switched
#                                    to tap0), card-restart (card-net, and
#                                    qtcard is killed during the download and
#                                    started again), panic-init, missing-kernel,
#                                    hang or version (only runs VMM --version)
#   lab.cpus=N lab.mem=MiB           L2 size (default 2 and 256)
#   lab.timeout=SECONDS              limit for each L2 run (default 240)
#   lab.hangtimeout=SECONDS          limit for the hang step once L2's init
#                                    has started (default 5)
#   lab.quiet=1                      boot L2 with "quiet"
# Output, per run N:
#   LAB-L1 begin run=N vmm=V step=S
#   [L2 N] ...console...
#   LAB-L1 relay exit=... init_ms=... total_ms=...   (from lab-relay)
#   LAB-RESULT <name> PASS|FAIL <detail>             (L1-side checks)
#   LAB-L1 end run=N
# and finally "LAB-L1 done".
export PATH=/bin:/sbin:/usr/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /srv && mount -t tmpfs -o size=1g tmpfs /tmp
echo "LAB-L1 up uptime=$(cut -d' ' -f1 /proc/uptime)"
# Only panics go straight to the console from now on, so that kernel
# messages never split the lines this script and lab-relay print; warnings
# and errors are printed, whole lines, after each run (LAB-L1 dmesg|).
dmesg -n 1
dmesg -c >/dev/null

arg() { # name default -> value of lab.<name>= on the kernel command line
    for w in $(cat /proc/cmdline); do
        case "$w" in "lab.$1="*) echo "${w#lab.$1=}"; return 0 ;; esac
    done
    echo "$2"
}

# Module parameters from the kernel command line (MODULE.PARAM=VALUE, '-' or '_' in
# the name), as modprobe would pass them: insmod does not read the command line. The
# candidates are picked once (usually none: L1 is emulated, every process costs).
modparams=""
for w in $(cat /proc/cmdline); do
    case "$w" in lab.*) ;; *.*=*) modparams="$modparams $(echo "${w%%.*}" | tr - _).${w#*.}" ;; esac
done
while read -r m; do
    [ -n "$m" ] || continue
    params=""
    if [ -n "$modparams" ]; then
        base=$(basename "$m" | tr - _)
        for w in $modparams; do
            [ "${w%%.*}" = "$base" ] && params="$params ${w#*.}"
        done
    fi
    # shellcheck disable=SC2086
    out=$(insmod "/lib/modules/$m.ko" $params 2>&1) || echo "LAB-L1 insmod $m failed: $out"
    [ -n "$params" ] && echo "LAB-L1 insmod $base$params"
done </lib/modules/order
[ -c /dev/kvm ] || echo "LAB-L1 warning: no /dev/kvm after loading kvm-amd"

plan=$(arg plan qemu:boot)
cpus=$(arg cpus 2)
mem=$(arg mem 256)
limit=$(arg timeout 240)
hang_limit=$(arg hangtimeout 5)
quiet=$(arg quiet 0)
mac=52:54:00:12:34:56
l1_ip=10.0.2.1
l2_ip=10.0.2.15/24
port=5000

setup_net() {
    [ -e /sys/class/net/tap0 ] && return 0
    ip tuntap add dev tap0 mode tap 2>/dev/null || tunctl -t tap0 >/dev/null || return 1
    ip addr add $l1_ip/24 dev tap0 && ip link set tap0 up || return 1
    ip link set lo up
    if [ ! -f /srv/blob ]; then
        dd if=/dev/urandom of=/srv/blob bs=1M count=8 2>/dev/null
        httpd -p 8080 -h /srv
    fi
}

# card-net: qtcard in L1 with a switch joining the VM's vhost-user port (vm1,
# server socket /tmp/card/vm1.sock) and tap0; its configuration is a state file.
# card-net gives tap0 offload (TSO frames pass whole both ways); card-restart does not
# (qtcard segments the guest's TSO frames for the tap).
start_card() {
    offload=false
    [ "$step" = card-net ] && offload=true
    mkdir -p /tmp/card
    rm -f /tmp/card/*
    cat >/tmp/card/state.json <<CARDEOF
{"switches": [{"name": "br0"}],
 "ports": [{"name": "vm1", "switch": "br0", "mac": "$mac"},
           {"name": "t0", "switch": "br0", "type": "tap", "ifname": "tap0",
            "offload": $offload}]}
CARDEOF
    run_card
    i=0
    while [ ! -S /tmp/card/vm1.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S /tmp/card/vm1.sock ] ||
        echo "LAB-RESULT card-host FAIL qtcard did not create its port socket: $(tail -3 /tmp/card/log)"
}

run_card() { # qtcard from its state file; its pid in /tmp/card/pid
    qtcard -a /tmp/card/api.sock -d /tmp/card -s /tmp/card/state.json -c 1 -i 50 \
        -l info >>/tmp/card/log 2>&1 &
    echo $! >/tmp/card/pid
}

# card-restart: in the background, once the guest's download is under way (1000 frames
# sent by L1 into tap0 since the run began, i.e. towards the guest), kill qtcard (SIGKILL:
# a crash) and start it again from its state file. The VMM reconnects; the guest's TCP
# connections carry on. The counter is read with the shell's own `read` (no process per
# look: L1 is emulated, and a busy L1 starves the guest's vCPUs).
crash_card_later() {
    (
        stats=/sys/class/net/tap0/statistics/tx_packets
        read -r base <$stats
        i=0 n=0
        while [ $i -lt 3000 ]; do
            read -r n <$stats
            n=$((n - base))
            [ "$n" -ge 1000 ] && break
            sleep 0.2
            i=$((i + 1))
        done
        kill -KILL "$(cat /tmp/card/pid)"
        echo "--- killed ($n frames sent towards the guest), starting again ---" >>/tmp/card/log
        sleep 0.5
        run_card
        echo "$n" >/tmp/card/killed
    ) &
    echo $! >/tmp/card/crasher
}

# After the run: the guest's TCP upload left the VM as TSO frames; with tap offload
# (card-net) they went to tap0 whole and L1's TSO frames of the download reached the
# guest whole, without (card-restart) qtcard segmented them for tap0. qtcard is still up
# and stops cleanly.
check_card() {
    why=""
    [ -f /tmp/card/crasher ] && kill "$(cat /tmp/card/crasher)" 2>/dev/null
    card_pid=$(cat /tmp/card/pid)
    if [ "$step" = card-restart ] && [ ! -f /tmp/card/killed ]; then
        why="qtcard was never killed (the download did not reach 1000 frames?)"
    elif [ "$step" = card-restart ] && [ "$(grep -c "port 'vm1': frontend connected" /tmp/card/log)" -lt 2 ]; then
        why="the VMM did not reconnect to the restarted qtcard"
    elif ! kill -0 "$card_pid" 2>/dev/null; then
        why="qtcard exited during the run"
    else
        # GSO counters: "received" on the port a GSO frame came in on (vm1), the rest on
        # the port it went out of (t0).
        j=$(qtctl -s /tmp/card/api.sock card get ports/vm1 2>&1 | tr -d ' \n')
        t=$(qtctl -s /tmp/card/api.sock card get ports/t0 2>&1 | tr -d ' \n')
        echo "LAB-L1 card| vm1 $j"
        echo "LAB-L1 card| t0 $t"
        gso_rx=$(echo "$j" | sed -n 's/.*"gso":{"received":\([0-9]*\),.*/\1/p')
        vm_whole=$(echo "$j" | sed -n 's/.*"gso":{"received":[0-9]*,"delivered_whole":\([0-9]*\),.*/\1/p')
        # shellcheck disable=SC2046
        set -- $(echo "$t" | sed -n 's/.*"gso":{"received":\([0-9]*\),"delivered_whole":\([0-9]*\),"segmented":\([0-9]*\),"segments":\([0-9]*\)}.*/\1 \2 \3 \4/p')
        gso_rx=${gso_rx:-0} vm_whole=${vm_whole:-0}
        t_rx=${1:-0} t_whole=${2:-0} gso_seg=${3:-0} segs=${4:-0}
        drops=$(echo "$j" | sed -n 's/.*"drops":{\([^}]*\)}.*/\1/p')
        t_drops=$(echo "$t" | sed -n 's/.*"drops":{\([^}]*\)}.*/\1/p')
        feat=$(grep -o "port 'vm1': driver features [^)]*)" /tmp/card/log | tail -n 1)
        if [ -z "$feat" ]; then
            why="no driver features logged for vm1"
        elif [ "$step" = card-net ] && { [ "$gso_rx" -eq 0 ] || [ "$t_whole" -eq 0 ] || [ "$gso_seg" -ne 0 ]; }; then
            why="the guest's TSO frames did not go to the offload tap whole (from the guest $gso_rx, to tap0 whole $t_whole, segmented $gso_seg; $feat)"
        elif [ "$step" = card-net ] && { [ "$t_rx" -eq 0 ] || [ "$vm_whole" -eq 0 ]; }; then
            why="L1's TSO frames did not reach the guest whole (from tap0 $t_rx, to the guest whole $vm_whole; $feat)"
        elif [ "$step" != card-net ] && { [ "$gso_rx" -eq 0 ] || [ "$gso_seg" -eq 0 ] || [ "$segs" -le "$gso_seg" ]; }; then
            why="no TSO frame from the guest was segmented (gso $gso_rx/$gso_seg/$segs; $feat)"
        elif echo "$drops" | grep -qE '"(malformed|gso)":[1-9]'; then
            why="frames from the guest refused ($drops)"
        elif echo "$t_drops" | grep -qE '"(malformed|gso)":[1-9]'; then
            why="frames from tap0 refused ($t_drops)"
        fi
    fi
    kill -TERM "$card_pid" 2>/dev/null
    # (a restarted qtcard is not this shell's child: wait for it to go)
    i=0
    while kill -0 "$card_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if [ "$step" = card-restart ]; then # not this shell's child: the log tells
        rc=1
        tail -n 1 /tmp/card/log | grep -q "stopped" && rc=0
    else
        wait "$card_pid"
        rc=$?
    fi
    [ -z "$why" ] && [ "$rc" != 0 ] && why="qtcard did not stop cleanly on SIGTERM (status $rc)"
    sed 's/^/LAB-L1 card-log| /' /tmp/card/log | tail -n 30
    if [ -z "$why" ]; then
        if [ "$step" = card-net ]; then
            echo "LAB-RESULT card-host PASS TSO frames from the guest $gso_rx, to tap0 whole $t_whole; from tap0 $t_rx, to the guest whole $vm_whole; ${feat#*: }"
        else
            echo "LAB-RESULT card-host PASS TSO frames from the guest $gso_rx, segmented $gso_seg into $segs; ${feat#*: }"
        fi
    else
        echo "LAB-RESULT card-host FAIL $why"
    fi
}

run_one() { # index vmm step
    n=$1 vmm=$2 step=$3
    kernel=/lab/l2/vmlinuz
    initrd=/lab/l2/initrd
    gstep=$step
    extra=""
    after=""
    case "$step" in
    panic-init) gstep=boot extra="rdinit=/lab-no-such-init" ;;
    missing-kernel) gstep=boot kernel=/lab/l2/no-such-vmlinuz ;;
    hang) after="-a $hang_limit" ;;
    vhost-blk) gstep=blk ;;
    card-net | card-restart) gstep=net ;;
    boot-pvh) gstep=boot kernel=/lab/l2/vmlinux ;;
    esac
    cl="console=ttyS0 reboot=t panic=-1 lab.step=$gstep lab.cpus=$cpus lab.mem=$mem $extra"
    [ "$quiet" = 1 ] && cl="$cl quiet"
    qt_dev="" qemu_dev="" qsd_pid="" qemu_machine=microvm
    if [ "$gstep" = blk ]; then
        rm -f /tmp/disk.img
        mkfs.ext4 -q -F /tmp/disk.img 64M >/dev/null || echo "LAB-RESULT blk-host FAIL mkfs.ext4 failed"
        qt_dev="--disk path=/tmp/disk.img"
        qemu_dev="-drive id=d0,file=/tmp/disk.img,format=raw,if=none -device virtio-blk-device,drive=d0"
    fi
    if [ "$step" = vhost-blk ]; then
        # the same disk served by a vhost-user-blk backend in L1
        sock=/tmp/vblk.sock
        rm -f $sock
        qemu-storage-daemon \
            --blockdev driver=file,node-name=file0,filename=/tmp/disk.img \
            --blockdev driver=raw,node-name=disk0,file=file0 \
            --export type=vhost-user-blk,id=exp0,node-name=disk0,writable=on,addr.type=unix,addr.path=$sock \
            >/tmp/qsd.log 2>&1 &
        qsd_pid=$!
        i=0
        while [ ! -S $sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        [ -S $sock ] || echo "LAB-RESULT vhost-host FAIL qemu-storage-daemon did not create $sock: $(tail -3 /tmp/qsd.log)"
        qt_dev="--disk vhost_socket=$sock"
        qemu_dev="-object memory-backend-memfd,id=ram,size=${mem}M,share=on -machine memory-backend=ram -chardev socket,id=vblk,path=$sock -device vhost-user-blk-pci,chardev=vblk,num-queues=1"
        qemu_machine=microvm,pcie=on
    fi
    if [ "$gstep" = net ]; then
        setup_net || echo "LAB-RESULT net-host FAIL cannot create tap0"
        sha=$(sha256sum /srv/blob | cut -d' ' -f1)
        cl="$cl lab.ip=$l2_ip lab.peer=$l1_ip lab.sha=$sha lab.port=$port"
        rm -f /tmp/up.recv /tmp/up.part
        nc -l -p $port -e /lab/recv.sh </dev/null >/dev/null 2>&1 &
        nc_pid=$!
        qt_dev="--net tap=tap0,mac=$mac"
        qemu_dev="-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=n0,mac=$mac"
    fi
    if [ "$step" = card-net ] || [ "$step" = card-restart ]; then
        start_card
        [ "$step" = card-restart ] && crash_card_later
        qt_dev="--net vhost_socket=/tmp/card/vm1.sock,mac=$mac"
        qemu_dev="-object memory-backend-memfd,id=ram,size=${mem}M,share=on -machine memory-backend=ram -chardev socket,id=c0,path=/tmp/card/vm1.sock,reconnect=1 -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0,mac=$mac,romfile="
        qemu_machine=microvm,pcie=on
    fi
    echo "LAB-L1 begin run=$n vmm=$vmm step=$step"
    if [ "$step" = version ]; then
        # the VMM's own start-up cost in L1 (exec, dynamic linking, exit)
        bin=/usr/bin/qtvmm
        [ "$vmm" = qemu ] && bin=/usr/bin/qemu-system-x86_64
        lab-relay -t 60 -p "[L2 $n] " -- $bin --version
        echo "LAB-L1 end run=$n"
        return
    fi
    case "$vmm" in
    qtvmm)
        # shellcheck disable=SC2086
        lab-relay -t "$limit" $after -p "[L2 $n] " -m "LAB-INIT start" -o /tmp/run$n.log -- \
            /usr/bin/qtvmm --cpus boot=$cpus --memory size=${mem}M \
            --kernel $kernel --initramfs $initrd --cmdline "$cl" $qt_dev --serial tty
        ;;
    qemu)
        # shellcheck disable=SC2086
        lab-relay -t "$limit" $after -p "[L2 $n] " -m "LAB-INIT start" -o /tmp/run$n.log -- \
            qemu-system-x86_64 -M $qemu_machine -enable-kvm -cpu host -smp $cpus -m ${mem}M \
            -nodefaults -no-user-config -display none -serial stdio -no-reboot \
            -kernel $kernel -initrd $initrd -append "$cl" $qemu_dev
        ;;
    *)
        echo "LAB-L1 relay exit=127 signal=0 timeout=0 panic=0 init_ms=-1 total_ms=0 stuck=0"
        echo "LAB-RESULT vmm FAIL unknown L2 VMM '$vmm'"
        ;;
    esac
    if [ -n "$qsd_pid" ]; then
        if kill $qsd_pid 2>/dev/null; then
            wait $qsd_pid 2>/dev/null
        else
            echo "LAB-RESULT vhost-host FAIL qemu-storage-daemon exited during the run"
        fi
        sed 's/^/LAB-L1 qsd| /' /tmp/qsd.log | tail -n 20
    fi
    if [ "$gstep" = blk ]; then
        want=$(sed -n 's/.*LAB-RESULT blk PASS sha256=\([0-9a-f]*\).*/\1/p' /tmp/run$n.log)
        mkdir -p /mnt/disk
        if [ -z "$want" ]; then
            echo "LAB-RESULT blk-host FAIL the guest reported no checksum"
        elif mount -t ext4 -o loop,ro /tmp/disk.img /mnt/disk; then
            got=$(sha256sum /mnt/disk/data.bin | cut -d' ' -f1)
            umount /mnt/disk
            if [ "$got" = "$want" ]; then
                echo "LAB-RESULT blk-host PASS sha256=$got"
            else
                echo "LAB-RESULT blk-host FAIL image has sha256=$got, guest wrote $want"
            fi
        else
            echo "LAB-RESULT blk-host FAIL cannot mount the image in L1"
        fi
        rm -f /tmp/disk.img
    fi
    if [ "$gstep" = net ]; then
        want=$(sed -n 's/.*LAB-RESULT net-put SENT sha256=\([0-9a-f]*\).*/\1/p' /tmp/run$n.log)
        i=0
        while [ ! -f /tmp/up.recv ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill $nc_pid 2>/dev/null
        if [ -z "$want" ]; then
            echo "LAB-RESULT net-put-host FAIL the guest reported no upload"
        elif [ ! -f /tmp/up.recv ]; then
            echo "LAB-RESULT net-put-host FAIL nothing received on port $port"
        else
            got=$(sha256sum /tmp/up.recv | cut -d' ' -f1)
            if [ "$got" = "$want" ]; then
                echo "LAB-RESULT net-put-host PASS sha256=$got"
            else
                echo "LAB-RESULT net-put-host FAIL received sha256=$got, guest sent $want"
            fi
        fi
    fi
    case "$step" in card-net | card-restart) check_card ;; esac
    dmesg -c -r | grep -E '^<[0-4]>' | sed 's/^/LAB-L1 dmesg| /'
    echo "LAB-L1 end run=$n"
}

n=0
for item in $(echo "$plan" | tr ',' ' '); do
    run_one $n "${item%%:*}" "${item#*:}"
    n=$((n + 1))
done
echo "LAB-L1 done"
poweroff -f
