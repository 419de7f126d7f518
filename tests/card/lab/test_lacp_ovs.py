#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Interop: the card's LACP module (qt-lacp-peer, no daemon) against Open
vSwitch's userspace datapath in a network namespace, bonded over two veth
pairs with lacp=active and lacp-time=fast.

Checks: the bond negotiates on both sides with both members in use; when our
LACPDUs stop on one member, OVS disables it within 3 s and we see it out of
sync (and the same when OVS's LACPDUs stop); when a veth loses carrier both
sides drop that member (we at once, OVS within 3 s); everything comes back;
OVS never sent us a PDU we rejected. Then: our passive + slow side negotiates
with an active OVS, and passive against passive stays silent.

usage: test_lacp_ovs.py PATH/TO/qt-lacp-peer
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlab  # noqa: E402

SYS_MAC = "02:00:00:00:aa:01"


class PeerState:
    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.lines.append((time.monotonic(), obj))

    def last(self):
        with self.lock:
            return self.lines[-1][1] if self.lines else None

    def member(self, ifname):
        st = self.last()
        if not st:
            return None
        return next(m for m in st["members"] if m["if"] == ifname)


def ovs_member_enabled(lab, member):
    out = lab.appctl("bond/show", "bond0")
    m = re.search(rf"member {member}: (enabled|disabled)", out)
    return m and m.group(1) == "enabled"


def ovs_negotiated(lab):
    return "lacp_status: negotiated" in lab.appctl("bond/show", "bond0")


def main():
    peer_exe = sys.argv[1]
    netlab.need_root_and_tools(netlab.OVS_VSWITCHD, netlab.OVSDB_SERVER, "ovs-vsctl", "tc",
                               "clang")
    lab = netlab.Lab("lacp-ovs")
    try:
        card = lab.ns("card")
        ovs = lab.ns("ovs")
        lab.veth(card, "a0", ovs, "o0")
        lab.veth(card, "a1", ovs, "o1")
        lab.ovs_start(ovs)
        lab.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
        lab.vsctl("add-bond", "br0", "bond0", "o0", "o1", "lacp=active", "bond_mode=balance-tcp",
                  "other_config:lacp-time=fast")

        proc = lab.popen(card, [peer_exe, "--sys-mac", SYS_MAC, "--duration", "90", "a0", "a1"],
                         stdout=subprocess.PIPE, text=True)
        peer = PeerState(proc)

        # 1. negotiation on both sides
        up = netlab.wait_for(lambda: (peer.last() or {}).get("enabled") == 2 and
                             ovs_negotiated(lab) and ovs_member_enabled(lab, "o0") and
                             ovs_member_enabled(lab, "o1"), 20)
        if not up:
            raise AssertionError("bond did not come up: ours=%s\nOVS:\n%s\n%s" % (
                peer.last(), lab.appctl("bond/show", "bond0"), lab.appctl("lacp/show", "bond0")))
        lacp = lab.appctl("lacp/show", "bond0")
        netlab.log(lacp)
        assert "active negotiated" in lacp, lacp
        assert SYS_MAC in lacp, "OVS does not report our system ID as partner"
        ovs_sysid = re.search(r"sys_id: ([0-9a-f:]{17})", lacp).group(1)
        for m in ("a0", "a1"):
            st = peer.member(m)
            assert st["rx"] == "current" and st["mux"] == "collecting-distributing", st
            assert st["partner"] == ovs_sysid, (st, ovs_sysid)
        netlab.log("negotiated: ours", peer.last())

        # 2. our LACPDUs stop on a1 (link stays up): OVS expires it within 3 s
        t0 = time.monotonic()
        proc.send_signal(signal.SIGUSR1)
        gone = netlab.wait_for(lambda: not ovs_member_enabled(lab, "o1"), 6, step=0.05)
        dt_ovs = time.monotonic() - t0
        assert gone, "OVS kept o1 enabled after our LACPDUs stopped"
        assert ovs_member_enabled(lab, "o0"), "OVS dropped the healthy member"
        out_of_sync = netlab.wait_for(lambda: not peer.member("a1")["distributing"], 3, step=0.05)
        dt_ours = time.monotonic() - t0
        assert out_of_sync, f"we kept distributing on a1: {peer.member('a1')}"
        assert peer.member("a0")["distributing"]
        netlab.log(f"PDU loss on one member: OVS disabled it after {dt_ovs:.2f} s, "
                   f"we left it after {dt_ours:.2f} s")
        assert dt_ovs <= 3.5, f"OVS took {dt_ovs:.2f} s (fast LACP allows 3 s)"

        proc.send_signal(signal.SIGUSR2)
        back = netlab.wait_for(lambda: ovs_member_enabled(lab, "o1") and
                               peer.member("a1")["distributing"], 6)
        assert back, "member a1/o1 did not come back after LACPDUs resumed"

        # 2b. OVS's LACPDUs stop reaching us on a1 (a tc BPF program drops them
        # on o1's egress): we expire the member within 3 s and tell OVS, which
        # drops it too
        bpf_obj = os.path.join(lab.dir, "drop_slow.o")
        netlab.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf_drop_slow.c"),
                    "-o", bpf_obj])
        lab.sh(ovs, f"tc qdisc add dev o1 clsact && "
                    f"tc filter add dev o1 egress bpf da obj {bpf_obj} sec classifier")
        t0 = time.monotonic()
        ours = netlab.wait_for(lambda: not peer.member("a1")["distributing"], 6, step=0.05)
        dt_ours = time.monotonic() - t0
        theirs = netlab.wait_for(lambda: not ovs_member_enabled(lab, "o1"), 3, step=0.05)
        dt_ovs = time.monotonic() - t0
        assert ours and theirs, f"PDUs from OVS lost: ours={peer.member('a1')}"
        assert peer.member("a1")["rx"] in ("expired", "defaulted"), peer.member("a1")
        netlab.log(f"OVS PDUs lost on one member: we left it after {dt_ours:.2f} s, "
                   f"OVS disabled it after {dt_ovs:.2f} s")
        assert dt_ours <= 3.5, f"we took {dt_ours:.2f} s (fast LACP allows 3 s)"
        lab.sh(ovs, "tc qdisc del dev o1 clsact")
        back = netlab.wait_for(lambda: ovs_member_enabled(lab, "o1") and
                               peer.member("a1")["distributing"], 6)
        assert back, "member a1/o1 did not come back after OVS's LACPDUs resumed"

        # 3. carrier loss on the first veth
        t0 = time.monotonic()
        lab.sh(card, "ip link set a0 down")
        ours = netlab.wait_for(lambda: not peer.member("a0")["distributing"], 2, step=0.02)
        dt_ours = time.monotonic() - t0
        theirs = netlab.wait_for(lambda: not ovs_member_enabled(lab, "o0"), 5, step=0.05)
        dt_ovs = time.monotonic() - t0
        assert ours and theirs, f"link down not handled: ours={peer.member('a0')}"
        assert peer.member("a1")["distributing"] and ovs_member_enabled(lab, "o1")
        assert peer.last()["enabled"] == 1
        netlab.log(f"carrier loss: we dropped the member after {dt_ours:.2f} s, "
                   f"OVS after {dt_ovs:.2f} s")
        assert dt_ours <= 3.0 and dt_ovs <= 3.0

        lab.sh(card, "ip link set a0 up")
        back = netlab.wait_for(lambda: (peer.last() or {}).get("enabled") == 2 and
                               ovs_member_enabled(lab, "o0"), 8)
        assert back, f"a0 did not rejoin: {peer.last()}"

        for m in ("a0", "a1"):
            assert peer.member(m)["rx_bad"] == 0, f"rejected a PDU from OVS: {peer.member(m)}"
            assert peer.member(m)["rx_pdus"] > 0
        proc.terminate()
        proc.wait(timeout=10)

        # 4. active/passive and slow rate: we are passive and slow, OVS active
        # and slow -> negotiates; both passive -> nobody speaks, nothing comes up
        lab.vsctl("set", "port", "bond0", "other_config:lacp-time=slow")
        proc = lab.popen(card, [peer_exe, "--sys-mac", SYS_MAC, "--passive", "--slow",
                                "--duration", "30", "a0", "a1"],
                         stdout=subprocess.PIPE, text=True)
        peer = PeerState(proc)
        up = netlab.wait_for(lambda: (peer.last() or {}).get("enabled") == 2 and
                             ovs_member_enabled(lab, "o0") and ovs_member_enabled(lab, "o1"), 15)
        assert up, f"passive/slow side did not negotiate with active OVS: {peer.last()}"
        assert "lacp_time: slow" in lab.appctl("lacp/show", "bond0")
        netlab.log("passive + slow against active OVS: negotiated", peer.last())
        proc.terminate()
        proc.wait(timeout=10)

        lab.vsctl("set", "port", "bond0", "lacp=passive")
        proc = lab.popen(card, [peer_exe, "--sys-mac", SYS_MAC, "--passive", "--duration", "6",
                                "a0", "a1"], stdout=subprocess.PIPE, text=True)
        peer = PeerState(proc)
        proc.wait(timeout=20)
        peer.t.join(timeout=5)
        last = peer.last()
        assert last["enabled"] == 0, f"passive/passive came up: {last}"
        # neither side sends a single LACPDU (OVS may still list the members
        # as enabled from the previous partner until its 90 s slow timeout)
        assert all(m["tx"] == 0 and m["rx_pdus"] == 0 for m in last["members"]), last
        netlab.log("passive against passive OVS: both silent, not negotiated (as 802.1AX requires)")
        netlab.log("PASS")
        return 0
    finally:
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
