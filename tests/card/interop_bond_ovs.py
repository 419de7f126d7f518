#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""qtcard LACP bond against Open vSwitch (userspace datapath) in namespaces.

  card ns:  qtcard; bond0 = AF_PACKET members a0, a1; afpacket port p2 on c2
  ovs ns:   ovs-vswitchd, br0 (datapath_type=netdev) with bond0 = o0, o1,
            lacp=active, lacp-time=fast; 10.88.0.2 on the bridge's internal port
  h ns:     10.88.0.1 on h0 (veth to c2)
Checks: LACP negotiates on both sides with both members enabled; ping h ->
OVS crosses the qtcard switch and the bond; when a0 loses carrier both sides
leave that member within 3 s and traffic flows on the other; when it comes
back both members are enabled again. Members, hash, LACP rate and mode then
change in place (PATCH), OVS following the mode change (lacp=off, then active).
(Pings are retried for up to 15 s after each change: OVS's SLB bond may hold
traffic back briefly after a member change; the member-state deadlines are what
the test times.)

  interop_bond_ovs.py QTCARD    (exit 77 without root or Open vSwitch)
"""

import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lab"))
import netlab  # noqa: E402


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg, flush=True)


def ovs_member_enabled(lab, member):
    out = lab.appctl("bond/show", "bond0", check=False)
    m = re.search(rf"member {member}: (enabled|disabled)", out)
    return bool(m) and m.group(1) == "enabled"


def card_bond(lab):
    return lab.api_ok("GET", "ports/bond0")["bond"]


def ping(lab, ns, ip, count=3):
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W",
                        "2", ip], capture_output=True, text=True)
    return r.returncode == 0


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    netlab.need_root_and_tools(netlab.OVS_VSWITCHD, netlab.OVSDB_SERVER, "ovs-vsctl")
    lab = netlab.Lab("bond")
    try:
        card, ovs, h = lab.ns("card"), lab.ns("ovs"), lab.ns("h")
        lab.veth(card, "a0", ovs, "o0")
        lab.veth(card, "a1", ovs, "o1")
        lab.veth(card, "c2", h, "h0")
        lab.sh(h, "ip addr add 10.88.0.1/24 dev h0")
        lab.ovs_start(ovs)
        # A fixed bridge MAC: otherwise OVS gives the internal port a member's MAC once the
        # bond joins, and the host's ARP entry for 10.88.0.2 goes stale.
        lab.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
                  "other_config:hwaddr=02:00:00:00:88:02")
        lab.vsctl("add-bond", "br0", "bond0", "o0", "o1", "lacp=active", "bond_mode=balance-slb",
                  "other_config:lacp-time=fast")
        # The members are also kernel interfaces in the OVS namespace: without arp_ignore the
        # kernel answers ARP for 10.88.0.2 on them too, with their own MACs.
        lab.sh(ovs, "sysctl -qw net.ipv4.conf.all.arp_ignore=1 && "
                    "sysctl -qw net.ipv4.conf.o0.arp_ignore=1 && "
                    "sysctl -qw net.ipv4.conf.o1.arp_ignore=1 && "
                    "ip addr add 10.88.0.2/24 dev br0 && ip link set br0 up")

        lab.qtcard_start(sys.argv[1], card)
        lab.api_ok("POST", "switches", {"name": "sw"})
        st, body = lab.api("POST", "ports", {"name": "bond0", "switch": "sw", "type": "bond",
                                             "members": ["a0", "nope0"]})
        check(st == 400 and "nope0" in body["error"], f"a missing member is refused ({body})")
        lab.api_ok("POST", "ports", {"name": "bond0", "switch": "sw", "type": "bond",
                                     "members": ["a0", "a1"], "mode": "lacp",
                                     "lacp": {"active": True, "fast": True}, "hash": "l3"})
        lab.api_ok("POST", "ports", {"name": "p2", "switch": "sw", "type": "afpacket",
                                     "ifname": "c2"})

        up = netlab.wait_for(lambda: card_bond(lab)["enabled_members"] == 2 and
                             ovs_member_enabled(lab, "o0") and ovs_member_enabled(lab, "o1") and
                             "negotiated" in lab.appctl("bond/show", "bond0", check=False), 20)
        if not up:
            print(lab.appctl("bond/show", "bond0", check=False))
            print(lab.appctl("lacp/show", "bond0", check=False))
            print(card_bond(lab))
        check(up, "LACP negotiated on both sides, both members enabled")
        lacp = lab.appctl("lacp/show", "bond0")
        card_port = lab.api_ok("GET", "ports/bond0")
        check(card_port["mac"].lower() in lacp.lower(),
              "OVS sees qtcard's bond system ID as its partner")
        # OVS may still hold back a freshly enabled SLB bond for a moment: wait for the path.
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "ping crosses the qtcard switch and the bond")

        t0 = time.monotonic()
        lab.sh(card, "ip link set a0 down")
        ours = netlab.wait_for(lambda: card_bond(lab)["enabled_members"] == 1, 3, step=0.05)
        theirs = netlab.wait_for(lambda: not ovs_member_enabled(lab, "o0"), 3, step=0.05)
        dt = time.monotonic() - t0
        check(ours and theirs, f"both sides left the failed member within {dt:.2f} s")
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "traffic fails over to the remaining member")

        lab.sh(card, "ip link set a0 up")
        back = netlab.wait_for(lambda: card_bond(lab)["enabled_members"] == 2 and
                               ovs_member_enabled(lab, "o0"), 10)
        check(back, "the member rejoins on both sides")
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "traffic flows with both members back")
        b = card_bond(lab)
        check(all(m["lacp_rx_pdus"] > 0 and m["lacp_tx_pdus"] > 0 for m in b["members"]),
              f"LACPDUs exchanged on every member ({b['members']})")

        # Members change in place (PATCH): the bond stays the same switch port.
        before = lab.api_ok("GET", "ports/bond0")
        for bad, why in (({"members": []}, "1.."), ({"members": ["a1", "a1"]}, "twice"),
                         ({"members": ["a1", "nope0"]}, "no such interface"),
                         ({"mode": "balance"}, "'mode' must be"),
                         ({"mode": "static", "lacp": {"fast": True}}, "need mode"),
                         ({"hash": "l5"}, "'hash' must be"), ({"lacp": {"rate": 1}}, "'lacp' takes"),
                         ({"lacp": {"fast": "no"}}, "'lacp' takes"),
                         ({"mtu": 1400}, "'mtu' does not change in place"),
                         ({"members": ["a0", "a1"], "hash": "l9"}, "'hash' must be")):
            st, body = lab.api("PATCH", "ports/bond0", bad)
            check(st == 400 and why in body.get("error", ""),
                  f"PATCH {bad} refused ({st} {body.get('error')})")
        check([m["ifname"] for m in card_bond(lab)["members"]] == ["a0", "a1"],
              "a refused PATCH changed nothing")
        st, body = lab.api("PATCH", "ports/p2", {"members": ["a0"]})
        check(st == 400 and "not a bond" in body.get("error", ""),
              f"PATCH members of a non-bond port refused ({st})")
        st, _ = lab.api("PATCH", "ports/bond0", {"members": ["a1"]})
        check(st == 204, "PATCH members [a1]: a0 leaves the bond in place")
        gone = netlab.wait_for(lambda: not ovs_member_enabled(lab, "o0"), 5, step=0.05)
        b = card_bond(lab)
        check(gone and [m["ifname"] for m in b["members"]] == ["a1"] and
              b["enabled_members"] == 1, f"OVS disabled o0 when its LACPDUs stopped ({b})")
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "traffic flows on a1 alone")
        saved = [p for p in lab.api_ok("GET", "config")["ports"] if p["name"] == "bond0"]
        check(saved and saved[0]["members"] == ["a1"],
              f"the saved configuration follows the change ({saved})")
        st, _ = lab.api("PATCH", "ports/bond0", {"members": ["a1", "a0"]})
        check(st == 204, "PATCH members [a1, a0]: a0 joins again")
        back = netlab.wait_for(lambda: card_bond(lab)["enabled_members"] == 2 and
                               ovs_member_enabled(lab, "o0"), 10)
        check(back, "LACP brings the re-added member up on both sides")
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "traffic flows with both members after the changes")
        conf = lab.api_ok("GET", "config")
        bond_conf = [p for p in conf["ports"] if p["name"] == "bond0"]
        # In slot order (a0 took the slot it had left), as a restart would open them.
        check(bond_conf and sorted(bond_conf[0]["members"]) == ["a0", "a1"] and
              bond_conf[0]["members"] == [m["ifname"] for m in card_bond(lab)["members"]],
              f"the saved configuration (state-file format) has the new members ({bond_conf})")

        # The LACP rate and the hash change in place: OVS sees qtcard's new timeout bit on
        # both members, neither side disables a member, and traffic keeps flowing.
        def ovs_partner_fast():
            out = lab.appctl("lacp/show", "bond0", check=False)
            states = re.findall(r"partner state:([^\n]*)", out)
            return [("timeout" in st) for st in states]

        check(ovs_partner_fast() == [True, True], "OVS sees qtcard asking for fast LACPDUs")
        st, _ = lab.api("PATCH", "ports/bond0", {"lacp": {"fast": False}, "hash": "l2"})
        check(st == 204, "PATCH lacp fast=false, hash l2")
        check(netlab.wait_for(lambda: ovs_partner_fast() == [False, False], 5, step=0.1),
              "OVS sees the slow rate on both members at once")
        b = card_bond(lab)
        check(b["hash"] == "l2" and b["lacp"] == {"active": True, "fast": False},
              f"GET shows the new settings ({b.get('hash')}, {b.get('lacp')})")
        for _ in range(4):
            check(ping(lab, h, "10.88.0.2", 2) and card_bond(lab)["enabled_members"] == 2 and
                  ovs_member_enabled(lab, "o0") and ovs_member_enabled(lab, "o1"),
                  "traffic flows and both members stay enabled on both sides")
        saved = [p for p in lab.api_ok("GET", "config")["ports"] if p["name"] == "bond0"][0]
        check(saved["hash"] == "l2" and saved["lacp"] == {"active": True, "fast": False},
              f"the saved configuration has the new settings ({saved})")
        st, _ = lab.api("PATCH", "ports/bond0", {"lacp": {"fast": True}, "hash": "l4"})
        check(st == 204 and
              netlab.wait_for(lambda: ovs_partner_fast() == [True, True], 5, step=0.1),
              "back to fast: OVS sees it on both members")
        check(ping(lab, h, "10.88.0.2", 2) and card_bond(lab)["enabled_members"] == 2,
              "traffic flows after the changes")

        # The mode changes in place, with OVS following: static (no LACPDUs) on both sides,
        # then LACP again, which negotiates from scratch.
        st, _ = lab.api("PATCH", "ports/bond0", {"mode": "static"})
        check(st == 204, "PATCH mode static")
        b = card_bond(lab)
        check(b["mode"] == "static" and "lacp" not in b and b["enabled_members"] == 2,
              f"a static bond: both members with link carry traffic at once ({b})")
        lab.vsctl("set", "port", "bond0", "lacp=off")
        check(netlab.wait_for(lambda: ovs_member_enabled(lab, "o0") and
                              ovs_member_enabled(lab, "o1"), 10, step=0.1),
              "OVS, without LACP too, enables both members")
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "traffic flows over the static bond")
        saved = [p for p in lab.api_ok("GET", "config")["ports"] if p["name"] == "bond0"][0]
        check(saved["mode"] == "static", f"the saved configuration is static ({saved})")
        tx0 = [m.get("lacp_tx_pdus") for m in card_bond(lab)["members"]]
        check(tx0 == [None, None], f"no LACP counters on a static bond ({tx0})")

        st, _ = lab.api("PATCH", "ports/bond0", {"mode": "lacp", "lacp": {"fast": True}})
        check(st == 204, "PATCH mode lacp")
        lab.vsctl("set", "port", "bond0", "lacp=active")
        up = netlab.wait_for(lambda: card_bond(lab)["enabled_members"] == 2 and
                             ovs_member_enabled(lab, "o0") and ovs_member_enabled(lab, "o1") and
                             "negotiated" in lab.appctl("bond/show", "bond0", check=False), 20)
        check(up, "LACP negotiates again on both sides, both members enabled")
        check(netlab.wait_for(lambda: ping(lab, h, "10.88.0.2", 1), 15, step=0.2),
              "traffic flows over the LACP bond again")
        b = card_bond(lab)
        check(b["mode"] == "lacp" and b["lacp"] == {"active": True, "fast": True},
              f"GET shows mode lacp, fast ({b.get('mode')}, {b.get('lacp')})")

        after = lab.api_ok("GET", "ports/bond0")
        check(after["mac"] == before["mac"] and
              after["stats"]["tx_packets"] > before["stats"]["tx_packets"] and
              after["stats"]["rx_packets"] > before["stats"]["rx_packets"],
              "the bond is the same port throughout (its MAC, i.e. LACP system ID, and its "
              "counters carried on)")
    except Exception:
        print("---- qtcard log ----\n" + lab.qtcard_log())
        try:
            for p in lab.api_ok("GET", "ports"):
                print(p["name"], p["stats"], p["drops"], p.get("bond"))
            print(lab.appctl("bond/show", "bond0", check=False))
            print(lab.appctl("fdb/show", "br0", check=False))
        except Exception as e:  # noqa: BLE001
            print("(no diagnostics:", e, ")")
        raise
    finally:
        lab.close()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
