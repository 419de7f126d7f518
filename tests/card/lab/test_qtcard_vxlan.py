#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Interop: a qtcard VXLAN tunnel port against the Linux kernel vxlan device
as the remote VTEP, with the malformed-input half that tests/card/
interop_vxlan.py (the card's own ping test) does not cover.

  h1 (10.0.40.1) -- p1 [qtcard switch sw] vx0: VNI 4242, underlay u0 (192.168.40.1)
        ==== u1 192.168.40.2 [kernel vxlan vx0, VNI 4242] 10.0.40.2   (namespace vt)

Checks: h1 and the kernel's VM address ping each other over the overlay; the
switch learns the kernel VM's MAC on the tunnel port and the kernel learns
h1's MAC behind our VTEP; malformed VXLAN packets sent to the card (I flag
clear, extra flags, reserved bits set, truncated inner frame, unknown VNI)
are counted by reason and none reaches h1; a well-formed one does.

qtcard API used (docs/qtcard.md): POST /ports {"type": "vxlan", "ifname",
"vni", "local_ip", "remote_ips", "nexthop_mac"}; GET /ports/vx0 -> "vxlan":
{"encap_packets", "decap_packets", "bad": {vxlan_bad_name(): n}, "remote_macs"}.
Exits 77 while qtcard_exe does not exist or does not know the vxlan port type.

usage: test_qtcard_vxlan.py PATH/TO/qtcard
"""

import json
import os
import struct
import subprocess
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlab  # noqa: E402
import pkttool  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VNI = 4242
CARD_VTEP, KERNEL_VTEP = "192.168.40.1", "192.168.40.2"


def send_udp_script(payload_hex):
    return (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(bytes.fromhex('{payload_hex}'), ('{CARD_VTEP}', 4789))")


def main():
    exe = sys.argv[1]
    if not os.path.exists(exe):
        netlab.skip(f"qtcard not built ({exe})")
    netlab.need_root_and_tools("ping", "bridge")
    lab = netlab.Lab("qtcard-vxlan")
    try:
        card = lab.ns("card")
        vt = lab.ns("vt")
        h1 = lab.ns("h1")
        lab.veth(card, "u0", vt, "u1")
        lab.veth(card, "p1", h1, "e0")
        u0mac, u1mac = lab.mac(card, "u0"), lab.mac(vt, "u1")
        lab.sh(vt, f"sysctl -qw net.ipv6.conf.all.disable_ipv6=1; "
                   f"ip addr add {KERNEL_VTEP}/24 dev u1 && "
                   f"ip neigh replace {CARD_VTEP} lladdr {u0mac} dev u1 nud permanent && "
                   f"ip link add vx0 type vxlan id {VNI} dstport 4789 local {KERNEL_VTEP} "
                   f"remote {CARD_VTEP} dev u1 && ip addr add 10.0.40.2/24 dev vx0 && "
                   f"ip link set vx0 up")
        lab.sh(h1, "ip addr add 10.0.40.1/24 dev e0")
        vx0mac, h1mac = lab.mac(vt, "vx0"), lab.mac(h1, "e0")

        lab.qtcard_start(exe, card)
        lab.api_ok("POST", "switches", {"name": "sw"})
        lab.api_ok("POST", "ports", {"name": "p1", "switch": "sw", "type": "afpacket",
                                     "ifname": "p1"})
        netlab.probe_port_type(lab, "vxlan")
        st, obj = lab.api("POST", "ports", {"name": "vx0", "switch": "sw", "type": "vxlan",
                                            "ifname": "u0", "vni": VNI, "local_ip": CARD_VTEP,
                                            "remote_ips": [KERNEL_VTEP], "nexthop_mac": u1mac})
        if st // 100 != 2:
            raise RuntimeError(f"POST ports (vxlan): HTTP {st}: {obj}")

        r = lab.sh(h1, "ping -c 5 -i 0.2 -W 2 10.0.40.2", check=False)
        netlab.log(r.stdout.strip())
        assert r.returncode == 0, "h1 cannot reach the kernel VTEP's VM over VXLAN"
        r = lab.sh(vt, "ping -c 3 -i 0.2 -W 2 10.0.40.1", check=False)
        assert r.returncode == 0, "the kernel VM cannot reach h1 over VXLAN"
        vx = lab.api_ok("GET", "ports/vx0")["vxlan"]
        netlab.log("vx0:", vx)
        assert vx["remote_macs"] >= 1 and vx["encap_packets"] >= 8, vx
        fdb = lab.api_ok("GET", "switches/sw")["fdb"]
        assert any(e["mac"] == vx0mac for e in fdb), f"kernel VM's MAC not learned: {fdb}"
        kfdb = lab.sh(vt, "bridge fdb show dev vx0").stdout
        assert f"{h1mac} dst {CARD_VTEP}" in kfdb, f"kernel did not learn h1 behind us: {kfdb}"

        # malformed VXLAN towards the card: none may reach h1, each counted
        inner = pkttool.build(types.SimpleNamespace(
            size=100, vlan=0, marker="VXBD", sip="10.0.40.2", dip="10.0.40.1",
            dst="ff:ff:ff:ff:ff:ff", src=vx0mac), 0)
        good_hdr = struct.pack("!B3s3sB", 0x08, b"\0\0\0", VNI.to_bytes(3, "big"), 0)
        cases = {
            "flags": struct.pack("!B3s3sB", 0x00, b"\0\0\0", VNI.to_bytes(3, "big"), 0) + inner,
            "flags2": struct.pack("!B3s3sB", 0x0c, b"\0\0\0", VNI.to_bytes(3, "big"), 0) + inner,
            "reserved": struct.pack("!B3s3sB", 0x08, b"\0\1\0", VNI.to_bytes(3, "big"), 0) +
            inner,
            "reserved2": struct.pack("!B3s3sB", 0x08, b"\0\0\0", VNI.to_bytes(3, "big"), 7) +
            inner,
            "inner-frame": good_hdr + inner[:10],
            "unknown-vni": struct.pack("!B3s3sB", 0x08, b"\0\0\0", (VNI + 1).to_bytes(3, "big"),
                                       0) + inner,
        }
        before = lab.api_ok("GET", "ports/vx0")["vxlan"]["bad"]
        procs = {"h1": lab.popen(h1, [sys.executable, os.path.join(HERE, "pkttool.py"), "recv",
                                      "e0", "--marker", "VXBD", "--duration", "2"],
                                 stdout=subprocess.PIPE, text=True)}
        assert procs["h1"].stdout.readline().strip() == "READY"
        for payload in cases.values():
            for _ in range(10):
                lab.sh(vt, f"python3 -c \"{send_udp_script(payload.hex())}\"")
        out, _ = procs["h1"].communicate(timeout=30)
        got = pkttool_result(out)
        after = lab.api_ok("GET", "ports/vx0")["vxlan"]["bad"]
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        netlab.log("malformed VXLAN: h1 got", got["count"], "counted:", diff)
        assert got["count"] == 0, "a malformed VXLAN packet was delivered"
        assert diff.get("flags", 0) == 20 and diff.get("reserved", 0) == 20, diff
        assert diff.get("inner-frame", 0) == 10 and diff.get("unknown-vni", 0) == 10, diff

        # and a well-formed one still goes through
        procs = lab.popen(h1, [sys.executable, os.path.join(HERE, "pkttool.py"), "recv", "e0",
                               "--marker", "VXBD", "--duration", "1.5"],
                          stdout=subprocess.PIPE, text=True)
        assert procs.stdout.readline().strip() == "READY"
        lab.sh(vt, f"python3 -c \"{send_udp_script((good_hdr + inner).hex())}\"")
        out, _ = procs.communicate(timeout=30)
        assert pkttool_result(out)["count"] == 1, "a well-formed VXLAN packet was not delivered"
        netlab.log("PASS")
        return 0
    except Exception:
        netlab.log("qtcard log tail:\n" + lab.qtcard_log())
        raise
    finally:
        lab.close()


def pkttool_result(out):
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
