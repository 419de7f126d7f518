#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Interop: the card's VXLAN module (qt-vxlan-peer, no daemon) against the
Linux kernel vxlan device as the remote VTEP, in network namespaces.

Our side floods an ARP request to the VNI (head-end replication), learns the
kernel VM's MAC behind the kernel VTEP from decapsulated replies, pings it
with unicast encapsulation, and answers the kernel's pings. Every frame the
kernel sends must pass our strict decapsulation (no drop counted) and every
frame we send must be accepted by the kernel (replies come back, the kernel
learns our MAC behind our VTEP address).

usage: test_vxlan_kernel.py PATH/TO/qt-vxlan-peer
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlab  # noqa: E402

OUR_VTEP, KERNEL_VTEP = "192.168.40.1", "192.168.40.2"
OUR_VM_MAC, OUR_VM_IP, KERNEL_VM_IP = "02:00:00:40:00:01", "10.0.40.1", "10.0.40.2"
VNI = 4242


def main():
    peer_exe = sys.argv[1]
    netlab.need_root_and_tools()
    lab = netlab.Lab("vxlan-kernel")
    try:
        card = lab.ns("card")
        vt = lab.ns("vtep")
        lab.veth(card, "u0", vt, "u1")
        lab.sh(vt, f"sysctl -qw net.ipv6.conf.all.disable_ipv6=1; "
                   f"ip addr add {KERNEL_VTEP}/24 dev u1")
        u0mac, u1mac = lab.mac(card, "u0"), lab.mac(vt, "u1")
        # our VTEP address is not configured in the card namespace's kernel
        # (the tool owns it), so tell the kernel VTEP where it lives
        lab.sh(vt, f"ip neigh replace {OUR_VTEP} lladdr {u0mac} dev u1 nud permanent")
        lab.sh(vt, f"ip link add vx0 type vxlan id {VNI} dstport 4789 local {KERNEL_VTEP} "
                   f"remote {OUR_VTEP} dev u1 && ip addr add {KERNEL_VM_IP}/24 dev vx0 && "
                   f"ip link set vx0 up")
        vx0mac = lab.mac(vt, "vx0")

        proc = lab.popen(card, [peer_exe, "--if", "u0", "--local-ip", OUR_VTEP, "--remote",
                                KERNEL_VTEP, "--nexthop-mac", u1mac, "--vni", str(VNI),
                                "--inner-mac", OUR_VM_MAC, "--inner-ip", OUR_VM_IP, "--target",
                                KERNEL_VM_IP, "--count", "5", "--duration", "6"],
                         stdout=subprocess.PIPE, text=True)
        # the kernel side pings our VM while the tool runs (after its own pings)
        time.sleep(2.5)
        ping = lab.sh(vt, f"ping -c 3 -i 0.2 -W 2 {OUR_VM_IP}", check=False)
        out, _ = proc.communicate(timeout=30)
        res = json.loads(out.strip().splitlines()[-1])
        netlab.log("qt-vxlan-peer:", res)
        netlab.log(ping.stdout.strip().splitlines()[-2] if ping.stdout else ping.stderr)
        fdb = lab.sh(vt, "bridge fdb show dev vx0").stdout
        netlab.log("kernel fdb:", fdb.strip())

        assert res["target_mac"] == vx0mac, f"ARP over VXLAN resolved {res['target_mac']}"
        assert res["learned_vtep"] == KERNEL_VTEP, "remote MAC not learned behind its VTEP"
        assert res["echo_sent"] == 5 and res["echo_replies"] == 5, "pings over VXLAN lost"
        assert ping.returncode == 0 and res["echo_answered"] >= 3, "kernel's pings to us failed"
        assert res["decap"] >= 8, res
        bad = {k: v for k, v in res["bad"].items() if v}
        assert not bad, f"our decapsulation rejected kernel frames: {bad}"
        assert f"{OUR_VM_MAC} dst {OUR_VTEP}" in fdb, "kernel did not learn our VM behind our VTEP"
        netlab.log("PASS")
        return 0
    finally:
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
