#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""qtcard VXLAN tunnel port against the Linux kernel vxlan device.

Namespaces (prefixed with this process id, removed at the end):
  card:  qtcard; its underlay end of a veth pair (AF_PACKET) and a tap port
  peer:  the other veth end (192.168.77.2) and a kernel vxlan device, VNI 100,
         remote 192.168.77.1, with 10.77.0.2 on it
  vm:    the tap moved here, 10.77.0.1
Checks: ping 10.77.0.1 -> 10.77.0.2 crosses the card's switch and the VXLAN
tunnel both ways (ARP flooded by head-end replication, remote MAC learned);
a VXLAN packet with bad flags is counted and dropped.

Mode "static" (default): the card is given the peer's underlay MAC (nexthop_mac) and the
peer kernel a permanent neighbour entry for the card's VTEP. Mode "arp": neither; the card
resolves 192.168.77.2 by ARP and answers the kernel's ARP for its VTEP address 192.168.77.1.

  interop_vxlan.py QTCARD [static|arp]   (exit 77 without root or vxlan support)
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cardlab  # noqa: E402

PID = os.getpid() % 100000
NS_CARD, NS_PEER, NS_VM = f"qc{PID}", f"qp{PID}", f"qv{PID}"
UL_CARD, UL_PEER, TAP = f"qcu{PID}", f"qpu{PID}", f"qtt{PID}"


def sh(*cmd, ns=None, check=True):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(full)}: {r.stderr.strip()}")
    return r.stdout


def mac_of(ns, dev):
    return json.loads(sh("ip", "-j", "link", "show", dev, ns=ns))[0]["address"]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg)


def make_underlay(ns_card, ul_card, ns_peer, ul_peer):
    """A veth pair: ul_card (up, no address) in ns_card, ul_peer with 192.168.77.2/24."""
    sh("ip", "link", "add", ul_card, "type", "veth", "peer", "name", ul_peer)
    sh("ip", "link", "set", ul_card, "netns", ns_card)
    sh("ip", "link", "set", ul_peer, "netns", ns_peer)
    sh("ip", "link", "set", ul_card, "up", ns=ns_card)
    sh("ip", "link", "set", "lo", "up", ns=ns_peer)
    sh("ip", "link", "set", ul_peer, "up", ns=ns_peer)
    sh("ip", "addr", "add", "192.168.77.2/24", "dev", ul_peer, ns=ns_peer)


def start_card_in(ns, binary, work):
    """qtcard (one worker) inside namespace ns; returns the cardlab.Card once its API answers."""
    card = cardlab.Card(binary, work, state=False)
    logf = open(card.log, "a")
    card.proc = subprocess.Popen(["ip", "netns", "exec", ns, card.binary, "--api-socket",
                                  card.api_sock, "--socket-dir", work, "--cores", "1"],
                                 stdout=logf, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            cardlab.api(card.api_sock, "GET", "status")
            break
        except OSError:
            time.sleep(0.05)
    return card


def dump_log(card):
    if card:
        print("---- qtcard.log ----\n" + card.log_text()[-3000:])


def stop_card(card):
    if card and card.proc:
        card.proc.terminate()
        card.proc.wait(10)


def cleanup():
    for ns in (NS_CARD, NS_PEER, NS_VM):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["static"], ["arp"]):
        print(__doc__)
        return 2
    arp = sys.argv[2:] == ["arp"]
    if os.geteuid() != 0 or not cardlab.have("ip"):
        print("SKIP: needs root and iproute2")
        return cardlab.SKIP
    cleanup()
    card = None
    with tempfile.TemporaryDirectory(prefix="qtcard-vxlan-") as work:
        try:
            for ns in (NS_CARD, NS_PEER, NS_VM):
                sh("ip", "netns", "add", ns)
            make_underlay(NS_CARD, UL_CARD, NS_PEER, UL_PEER)
            r = subprocess.run(["ip", "netns", "exec", NS_PEER, "ip", "link", "add", "vx100",
                                "type", "vxlan", "id", "100", "local", "192.168.77.2", "remote",
                                "192.168.77.1", "dstport", "4789", "dev", UL_PEER],
                               capture_output=True, text=True)
            if r.returncode:
                print("SKIP: kernel vxlan device unavailable:", r.stderr.strip())
                return cardlab.SKIP
            sh("ip", "addr", "add", "10.77.0.2/24", "dev", "vx100", ns=NS_PEER)
            sh("ip", "link", "set", "vx100", "up", ns=NS_PEER)
            card_ul_mac, peer_ul_mac = mac_of(NS_CARD, UL_CARD), mac_of(NS_PEER, UL_PEER)
            if not arp:
                sh("ip", "neigh", "replace", "192.168.77.1", "lladdr", card_ul_mac, "dev",
                   UL_PEER, "nud", "permanent", ns=NS_PEER)

            # qtcard runs inside the card namespace, where its underlay and tap live.
            card = start_card_in(NS_CARD, sys.argv[1], work)
            api = card.api_sock
            cardlab.api_ok(api, "POST", "switches", {"name": "br0"})
            st, body = cardlab.api(api, "POST", "ports",
                                   {"name": "vx0", "switch": "br0", "type": "vxlan",
                                    "ifname": UL_CARD, "vni": 100})
            check(st == 400 and "local_ip" in body["error"],
                  f"a vxlan port without local_ip is refused ({st} {body})")
            vx_conf = {"name": "vx0", "switch": "br0", "type": "vxlan", "ifname": UL_CARD,
                       "vni": 100, "local_ip": "192.168.77.1", "remote_ips": ["192.168.77.2"]}
            if arp:
                for bad, why in (({"nexthop_mac": peer_ul_mac, "gateway_ip": "192.168.77.254"},
                                  "not both"),
                                 ({"gateway_ip": "224.0.0.1"}, "gateway_ip")):
                    st, body = cardlab.api(api, "POST", "ports", dict(vx_conf, **bad))
                    check(st == 400 and why in body["error"],
                          f"refused: {bad} ({st} {body.get('error')})")
            else:
                vx_conf["nexthop_mac"] = peer_ul_mac
            cardlab.api_ok(api, "POST", "ports", vx_conf)
            cardlab.api_ok(api, "POST", "ports",
                           {"name": "t0", "switch": "br0", "type": "tap", "ifname": TAP})
            sh("ip", "link", "set", TAP, "netns", NS_VM, ns=NS_CARD)
            sh("ip", "addr", "add", "10.77.0.1/24", "dev", TAP, ns=NS_VM)
            sh("ip", "link", "set", TAP, "up", ns=NS_VM)
            sh("ip", "link", "set", "lo", "up", ns=NS_VM)

            r = subprocess.run(["ip", "netns", "exec", NS_VM, "ping", "-c", "3", "-W", "2",
                                "10.77.0.2"], capture_output=True, text=True)
            print(r.stdout.strip())
            check(r.returncode == 0, "ping crosses the switch and the VXLAN tunnel both ways")
            vx = cardlab.api_ok(api, "GET", "ports/vx0")
            print("vx0:", json.dumps(vx.get("vxlan")), json.dumps(vx["stats"]))
            check(vx["vxlan"]["encap_packets"] >= 3, "frames were encapsulated")
            check(vx["vxlan"]["decap_packets"] >= 3, "frames were decapsulated")
            check(vx["vxlan"]["remote_macs"] >= 1, "the remote MAC was learned behind its VTEP")
            if arp:
                nb = vx["vxlan"]["neighbours"]
                check(len(nb) == 1 and nb[0]["ip"] == "192.168.77.2" and
                      nb[0]["mac"] == peer_ul_mac and vx["vxlan"]["arp_requests_sent"] >= 1,
                      f"the card resolved the peer VTEP by ARP ({nb})")
                # The kernel learned the card's VTEP from the card's own request; make it ask.
                sh("ip", "neigh", "flush", "dev", UL_PEER, ns=NS_PEER)
                r = subprocess.run(["ip", "netns", "exec", NS_VM, "ping", "-c", "2", "-W", "2",
                                    "10.77.0.2"], capture_output=True, text=True)
                check(r.returncode == 0, "ping again after the peer forgot the card's VTEP")
                vx = cardlab.api_ok(api, "GET", "ports/vx0")
                check(vx["vxlan"]["arp_replies_sent"] >= 1,
                      "the card answered the kernel's ARP for its VTEP address")
                neigh = json.loads(sh("ip", "-j", "neigh", "show", "192.168.77.1", "dev", UL_PEER,
                                      ns=NS_PEER))
                check(neigh and neigh[0].get("lladdr") == card_ul_mac,
                      f"the peer kernel's neighbour entry for the card's VTEP is ours ({neigh})")
            else:
                check("neighbours" not in vx["vxlan"], "a static next hop sends no ARP")
            peer_vx_mac = mac_of(NS_PEER, "vx100")
            sw = cardlab.api_ok(api, "GET", "switches/br0")
            check(any(e["mac"] == peer_vx_mac for e in sw["fdb"]),
                  "the switch learned the remote VM's MAC")
            # A VXLAN packet with a reserved flag set: counted and dropped.
            sh("python3", "-c",
               "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "s.sendto(bytes([0x0c,0,0,0,0,0,0x64,0]) + bytes(60), ('192.168.77.1', 4789))",
               ns=NS_PEER)
            time.sleep(0.5)
            vx = cardlab.api_ok(api, "GET", "ports/vx0")
            check(vx["vxlan"]["bad"].get("flags", 0) >= 1,
                  f"a VXLAN header with bad flags is counted ({vx['vxlan']['bad']})")
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
