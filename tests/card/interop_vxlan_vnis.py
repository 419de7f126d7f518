#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Two overlay networks (a VNI each) over one underlay, against the Linux kernel vxlan device.

Namespaces (prefixed with this process id, removed at the end):
  card:  qtcard; the underlay end of a veth pair (AF_PACKET) shared by two tunnel ports:
         vx0 (VNI 100, switch br0, with tap t0) and vx1 (VNI 200, switch br1, with tap t1)
  peer:  the other veth end (192.168.77.2) and two kernel vxlan devices on it, vx100 with
         10.77.0.2 and vx200 with 10.78.0.2; next hops resolved by ARP both ways
  vm0:   t0, 10.77.0.1          vm1: t1, 10.78.0.1
Checks: each network pings across its own tunnel; no frame of one network reaches the
other (the kernel device of the other VNI receives nothing, and neither switch learns the
other network's MACs); frames of the sibling port's VNI are not counted as errors, a
VNI nobody serves is; only one of the two ports answers ARP for the shared VTEP address;
a second port for an already-served VNI is refused.

  interop_vxlan_vnis.py QTCARD   (exit 77 without root or vxlan support)
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cardlab  # noqa: E402
from interop_vxlan import (check, dump_log, mac_of, make_underlay, sh,  # noqa: E402
                           start_card_in, stop_card)

PID = os.getpid() % 100000
NS_CARD, NS_PEER, NS_VM = f"qc{PID}", f"qp{PID}", [f"qv{PID}a", f"qv{PID}b"]
UL_CARD, UL_PEER, TAPS = f"qcu{PID}", f"qpu{PID}", [f"qta{PID}", f"qtb{PID}"]
NETS = [(100, "10.77.0"), (200, "10.78.0")]


def cleanup():
    for ns in [NS_CARD, NS_PEER] + NS_VM:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def rx_packets(ns, dev):
    return json.loads(sh("ip", "-j", "-s", "link", "show", dev, ns=ns))[0]["stats64"]["rx"][
        "packets"]


def ping(ns, ip, count=3):
    r = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(count), "-W", "2", "-i",
                        "0.2", ip], capture_output=True, text=True)
    print(r.stdout.strip().splitlines()[-2] if r.stdout.strip() else r.stderr.strip())
    return r.returncode == 0


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    if os.geteuid() != 0 or not cardlab.have("ip"):
        print("SKIP: needs root and iproute2")
        return cardlab.SKIP
    cleanup()
    card = None
    with tempfile.TemporaryDirectory(prefix="qtcard-vnis-") as work:
        try:
            for ns in [NS_CARD, NS_PEER] + NS_VM:
                sh("ip", "netns", "add", ns)
                # No IPv6 chatter (router solicitations, MLD): only the test's frames move.
                sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
                sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
            make_underlay(NS_CARD, UL_CARD, NS_PEER, UL_PEER)
            for vni, net in NETS:
                r = subprocess.run(["ip", "netns", "exec", NS_PEER, "ip", "link", "add",
                                    f"vx{vni}", "type", "vxlan", "id", str(vni), "local",
                                    "192.168.77.2", "remote", "192.168.77.1", "dstport", "4789",
                                    "dev", UL_PEER], capture_output=True, text=True)
                if r.returncode:
                    print("SKIP: kernel vxlan device unavailable:", r.stderr.strip())
                    return cardlab.SKIP
                sh("ip", "addr", "add", f"{net}.2/24", "dev", f"vx{vni}", ns=NS_PEER)
                sh("ip", "link", "set", f"vx{vni}", "up", ns=NS_PEER)
            card_ul_mac = mac_of(NS_CARD, UL_CARD)

            card = start_card_in(NS_CARD, sys.argv[1], work)
            api = card.api_sock
            for i, (vni, net) in enumerate(NETS):
                cardlab.api_ok(api, "POST", "switches", {"name": f"br{i}"})
                cardlab.api_ok(api, "POST", "ports",
                               {"name": f"vx{i}", "switch": f"br{i}", "type": "vxlan",
                                "ifname": UL_CARD, "vni": vni, "local_ip": "192.168.77.1",
                                "remote_ips": ["192.168.77.2"]})
                cardlab.api_ok(api, "POST", "ports",
                               {"name": f"t{i}", "switch": f"br{i}", "type": "tap",
                                "ifname": TAPS[i]})
                sh("ip", "link", "set", TAPS[i], "netns", NS_VM[i], ns=NS_CARD)
                sh("ip", "addr", "add", f"{net}.1/24", "dev", TAPS[i], ns=NS_VM[i])
                sh("ip", "link", "set", TAPS[i], "up", ns=NS_VM[i])
                sh("ip", "link", "set", "lo", "up", ns=NS_VM[i])
            st, body = cardlab.api(api, "POST", "ports",
                                   {"name": "vx9", "switch": "br1", "type": "vxlan",
                                    "ifname": UL_CARD, "vni": 100, "local_ip": "192.168.77.1"})
            check(st == 409 and "already served" in body.get("error", ""),
                  f"a second port for VNI 100 on the same underlay is refused ({st} {body})")

            # One network at a time: the other network's kernel device receives nothing, and
            # the other tunnel port decapsulates nothing (it sees the frames on the underlay).
            for i, (vni, net) in enumerate(NETS):
                other = NETS[1 - i][0]
                before = rx_packets(NS_PEER, f"vx{other}")
                decap = cardlab.api_ok(api, "GET", f"ports/vx{1 - i}")["vxlan"]["decap_packets"]
                check(ping(NS_VM[i], f"{net}.2", 5), f"network {vni} pings across its tunnel")
                check(rx_packets(NS_PEER, f"vx{other}") == before,
                      f"nothing of network {vni} reached the kernel's VNI {other} device")
                check(cardlab.api_ok(api, "GET", f"ports/vx{1 - i}")["vxlan"]["decap_packets"] ==
                      decap, f"nothing of network {vni} was decapsulated by vx{1 - i}")

            peer_macs = [mac_of(NS_PEER, f"vx{vni}") for vni, _ in NETS]
            vm_macs = [mac_of(NS_VM[i], TAPS[i]) for i in range(2)]
            for i in range(2):
                fdb = {e["mac"] for e in cardlab.api_ok(api, "GET", f"switches/br{i}")["fdb"]}
                check(peer_macs[i] in fdb and vm_macs[i] in fdb,
                      f"br{i} learned its own network's MACs")
                check(peer_macs[1 - i] not in fdb and vm_macs[1 - i] not in fdb,
                      f"br{i} learned nothing of the other network")
            vx = [cardlab.api_ok(api, "GET", f"ports/vx{i}")["vxlan"] for i in range(2)]
            print("vx0:", json.dumps(vx[0]))
            print("vx1:", json.dumps(vx[1]))
            for i in range(2):
                check(vx[i]["decap_packets"] >= 5 and vx[i]["encap_packets"] >= 5,
                      f"vx{i} carried its network's traffic both ways")
                check(vx[i]["bad"].get("unknown-vni", 0) == 0,
                      f"vx{i} does not count the sibling network's frames as errors")

            # The kernel asks for the shared VTEP address: one of the two ports answers.
            sh("ip", "neigh", "flush", "dev", UL_PEER, ns=NS_PEER)
            check(ping(NS_VM[0], "10.77.0.2", 2), "network 100 pings after an ARP flush")
            vx = [cardlab.api_ok(api, "GET", f"ports/vx{i}")["vxlan"] for i in range(2)]
            check(vx[0]["arp_replies_sent"] >= 1 and vx[1]["arp_replies_sent"] == 0,
                  f"only vx0 answers ARP for 192.168.77.1 ({vx[0]['arp_replies_sent']}, "
                  f"{vx[1]['arp_replies_sent']})")
            neigh = json.loads(sh("ip", "-j", "neigh", "show", "192.168.77.1", "dev", UL_PEER,
                                  ns=NS_PEER))
            check(neigh and neigh[0].get("lladdr") == card_ul_mac,
                  f"the kernel resolved the card's VTEP ({neigh})")

            # A VNI nobody serves: counted by both ports (each sees the underlay frame).
            sh("python3", "-c",
               "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "[s.sendto(bytes([0x08,0,0,0,0,0x01,0x2c,0]) + bytes(60), ('192.168.77.1', 4789))"
               " for _ in range(3)]", ns=NS_PEER)
            time.sleep(0.5)
            vx = [cardlab.api_ok(api, "GET", f"ports/vx{i}")["vxlan"] for i in range(2)]
            check(all(v["bad"].get("unknown-vni", 0) == 3 for v in vx),
                  f"VNI 300, served by no port, is counted as such ({vx[0]['bad']}, "
                  f"{vx[1]['bad']})")
            check(card.proc.poll() is None, "qtcard still runs")
        except Exception:
            dump_log(card)
            raise
        finally:
            stop_card(card)
            cleanup()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
