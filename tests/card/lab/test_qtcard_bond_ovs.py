#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Interop: a qtcard LACP bond of two AF_PACKET uplinks against Open vSwitch
(userspace datapath, lacp=active, lacp-time=fast) in another namespace.

  h1 -- p1 [qtcard switch sw] bond0 = a0 + a1 ==== o0 + o1 bond0 [OVS br0] v2 -- h2
  (10.0.50.1)                                                                  (10.0.50.2)

(h2 sits behind an OVS port in its own namespace: the OVS namespace has no IP
address, so its kernel never answers for traffic that OVS switches.)

Checks: the bond comes up on both sides, h1 pings OVS's bridge address
through it, and when the member carrying the traffic loses its carrier (or
its LACPDUs stop) traffic fails over within 3 s.

qtcard API used (the card's bond ports): POST /ports {"type": "bond",
"mode": "lacp", "hash": "l4", "lacp": {"active": true, "fast": true},
"members": [ifname...]}; GET /ports/bond0 -> "bond": {"enabled_members",
"members": [{"ifname", "link", "enabled", "distributing", "tx_packets"}]}.
Exits 77 while qtcard_exe does not exist or does not know the bond port type.

usage: test_qtcard_bond_ovs.py PATH/TO/qtcard
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlab  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def ovs_member_enabled(lab, member):
    m = re.search(rf"member {member}: (enabled|disabled)", lab.appctl("bond/show", "bond0"))
    return bool(m) and m.group(1) == "enabled"


def bond_state(lab):
    return lab.api_ok("GET", "ports/bond0")["bond"]


def member(lab, ifname):
    return next(m for m in bond_state(lab)["members"] if m["ifname"] == ifname)


def ping_gap(lab, ns, dst, action, settle=2.0, total=8.0):
    """Ping dst every 50 ms, run action() after `settle` s; return the longest
    stretch without replies (s) and the number of replies."""
    n = int(total / 0.05)
    p = lab.popen(ns, ["ping", "-D", "-n", "-i", "0.05", "-W", "1", "-c", str(n), dst],
                  stdout=subprocess.PIPE, text=True)
    time.sleep(settle)
    action()
    out, _ = p.communicate(timeout=total + 20)
    stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", out,
                                                     re.M)]
    if len(stamps) < 2:
        return total, len(stamps)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return max(gaps), len(stamps)


def run_ofctl(lab, *args):
    return netlab.run(["ovs-ofctl", f"--timeout=10"] + list(args[:1]) +
                      [f"unix:{lab.ovs_dir}/br0.mgmt"] + list(args[2:]), env=lab.ovs_env).stdout


def main():
    exe = sys.argv[1]
    if not os.path.exists(exe):
        netlab.skip(f"qtcard not built ({exe})")
    netlab.need_root_and_tools(netlab.OVS_VSWITCHD, netlab.OVSDB_SERVER, "ovs-vsctl", "ping",
                               "tc", "clang")
    lab = netlab.Lab("qtcard-bond")
    try:
        card = lab.ns("card")
        ovs = lab.ns("ovs")
        h1 = lab.ns("h1")
        h2 = lab.ns("h2")
        lab.veth(card, "a0", ovs, "o0")
        lab.veth(card, "a1", ovs, "o1")
        lab.veth(card, "p1", h1, "e0")
        lab.veth(ovs, "v2", h2, "e0")
        lab.sh(h1, "ip addr add 10.0.50.1/24 dev e0")
        lab.sh(h2, "ip addr add 10.0.50.2/24 dev e0")

        lab.ovs_start(ovs)
        lab.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        lab.vsctl("add-bond", "br0", "bond0", "o0", "o1", "lacp=active", "bond_mode=balance-tcp",
                  "other_config:lacp-time=fast")
        lab.vsctl("add-port", "br0", "v2")

        lab.qtcard_start(exe, card)
        lab.api_ok("POST", "switches", {"name": "sw"})
        lab.api_ok("POST", "ports", {"name": "p1", "switch": "sw", "type": "afpacket",
                                     "ifname": "p1"})
        netlab.probe_port_type(lab, "bond")
        st, obj = lab.api("POST", "ports", {"name": "bond0", "switch": "sw", "type": "bond",
                                            "mode": "lacp", "hash": "l4",
                                            "lacp": {"active": True, "fast": True},
                                            "members": ["a0", "a1"]})
        if st // 100 != 2:
            raise RuntimeError(f"POST ports (bond): HTTP {st}: {obj}")

        up = netlab.wait_for(lambda: bond_state(lab)["enabled_members"] == 2 and
                             ovs_member_enabled(lab, "o0") and ovs_member_enabled(lab, "o1"), 20)
        assert up, f"bond did not come up: qtcard {bond_state(lab)}\nOVS:\n" + \
            lab.appctl("bond/show", "bond0")
        lacp = lab.appctl("lacp/show", "bond0")
        assert "active negotiated" in lacp, lacp
        netlab.log("bond up:", bond_state(lab))

        r = lab.sh(h1, "ping -c 3 -i 0.2 -W 2 10.0.50.2", check=False)
        assert r.returncode == 0, f"no traffic through the bond: {r.stdout}"

        # Take down the member our side sends the ping on (the bond reports
        # per-member tx_packets; fall back to a0 if it does not).
        def busiest():
            ms = bond_state(lab)["members"]
            if all("tx_packets" in m for m in ms):
                return max(ms, key=lambda m: m["tx_packets"])["ifname"]
            return "a0"
        lab.sh(h1, "ping -c 20 -i 0.05 -W 1 10.0.50.2", check=False)
        victim = busiest()
        other = "a1" if victim == "a0" else "a0"

        def carrier_loss():
            lab.sh(card, f"ip link set {victim} down")
        gap, replies = ping_gap(lab, h1, "10.0.50.2", carrier_loss)
        netlab.log(f"carrier loss on {victim}: longest gap {gap:.2f} s, {replies} replies")
        assert gap <= 3.0, f"traffic did not fail over within 3 s (gap {gap:.2f} s)"
        assert not member(lab, victim)["distributing"]
        assert member(lab, other)["distributing"]
        lab.sh(card, f"ip link set {victim} up")
        assert netlab.wait_for(lambda: bond_state(lab)["enabled_members"] == 2, 10)

        # LACPDUs from OVS stop on the busiest member (link stays up): failover
        # by the LACP timeout
        lab.sh(h1, "ping -c 20 -i 0.05 -W 1 10.0.50.2", check=False)
        victim = busiest()
        ovs_if = "o" + victim[1:]
        bpf_obj = os.path.join(lab.dir, "drop_slow.o")
        netlab.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    os.path.join(HERE, "bpf_drop_slow.c"), "-o", bpf_obj])

        def pdus_stop():
            lab.sh(ovs, f"tc qdisc add dev {ovs_if} clsact && tc filter add dev {ovs_if} "
                        f"egress bpf da obj {bpf_obj} sec classifier")
        gap, replies = ping_gap(lab, h1, "10.0.50.2", pdus_stop, total=10.0)
        netlab.log(f"LACPDUs lost on {victim}: longest gap {gap:.2f} s, {replies} replies")
        assert gap <= 3.5, f"traffic did not fail over within the LACP timeout (gap {gap:.2f} s)"
        assert not member(lab, victim)["distributing"]
        netlab.log("PASS")
        return 0
    except Exception:
        netlab.log("qtcard log tail:\n" + lab.qtcard_log())
        for what in (lambda: lab.api_ok("GET", "ports"),
                     lambda: lab.appctl("bond/show", "bond0"),
                     lambda: run_ofctl(lab, "dump-ports", "br0"),
                     lambda: lab.appctl("fdb/show", "br0")):
            try:
                netlab.log(what())
            except Exception as e:  # diagnostics only
                netlab.log("diagnostics:", e)
        raise
    finally:
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
