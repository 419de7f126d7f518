#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Raw-frame sender and counter for the qtcard lab tests (run inside a
network namespace with `ip netns exec`). Frames are UDP/IPv4 with a marker
in the payload so counters ignore unrelated traffic.

  pkttool.py send IF --src MAC --dst MAC --sip A --dip B [--vlan N] [--size BYTES]
                     [--pps N] [--count N | --duration S] [--marker M]
  pkttool.py recv IF [--marker M] [--duration S] [--settle S]

`send` prints {"sent": n, "elapsed": s}. `recv` prints READY once its socket
is bound, then at the end {"count": n, "bytes": b,
"vlans": {"10": n, "0": n}, "steady_pps": x, "steady_bps": y}, where the steady
rates are measured from `settle` seconds after the first frame to the last
(so an initial burst allowance does not count).
"""

import argparse
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
SO_RCVBUFFORCE = 33
TP_STATUS_VLAN_VALID = 1 << 4
UDP_PORT = 9999


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def build(a, seq):
    payload_len = max(a.size - 14 - (4 if a.vlan else 0) - 20 - 8, 12)
    payload = struct.pack("!4sQ", a.marker.encode()[:4].ljust(4, b"_"), seq)
    payload = payload.ljust(payload_len, b"\xab")
    udp = struct.pack("!HHHH", 40000, UDP_PORT, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xffff, 0x4000, 64, 17, 0,
                     socket.inet_aton(a.sip), socket.inet_aton(a.dip))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = mac_bytes(a.dst) + mac_bytes(a.src)
    if a.vlan:
        eth += struct.pack("!HH", 0x8100, a.vlan)
    return eth + struct.pack("!H", 0x0800) + ip + udp


def cmd_send(a):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.ifname, 0))
    t0 = time.monotonic()
    end = t0 + a.duration if a.duration else None
    sent = 0
    interval = 1.0 / a.pps if a.pps else 0.0
    while (a.count is None or sent < a.count) and (end is None or time.monotonic() < end):
        if interval:
            due = t0 + sent * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        try:
            s.send(build(a, sent))
        except OSError as e:
            if e.errno not in (105,):  # ENOBUFS: the queue is full, retry
                raise
            time.sleep(0.0005)
            continue
        sent += 1
    print(json.dumps({"sent": sent, "elapsed": round(time.monotonic() - t0, 4)}), flush=True)


def cmd_recv(a):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.ifname, 0))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    # a big receive buffer, so this (Python) counter losing the CPU for a
    # while does not drop frames and skew the measured rates
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.settimeout(0.2)
    print("READY", flush=True)  # bound: frames from now on are counted
    marker = a.marker.encode()[:4].ljust(4, b"_")
    end = time.monotonic() + a.duration
    times = []
    vlans = {}
    total = 0
    while time.monotonic() < end:
        try:
            data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(32))
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        vid = 0
        for level, typ, cdata in anc:
            # struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
            if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= 20:
                status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", cdata[:20])
                if status & TP_STATUS_VLAN_VALID:
                    vid = tci & 0xfff
        off = 12
        etype = struct.unpack("!H", data[off:off + 2])[0]
        if etype == 0x8100:  # tag left in the data
            vid = struct.unpack("!H", data[14:16])[0] & 0xfff
            off += 4
            etype = struct.unpack("!H", data[off:off + 2])[0]
        if etype != 0x0800 or len(data) < off + 2 + 28 + 4:
            continue
        ip = off + 2
        if data[ip + 9] != 17:
            continue
        udp = ip + (data[ip] & 0xf) * 4
        if struct.unpack("!H", data[udp + 2:udp + 4])[0] != UDP_PORT:
            continue
        if data[udp + 8:udp + 12] != marker:
            continue
        times.append((time.monotonic(), len(data)))
        vlans[str(vid)] = vlans.get(str(vid), 0) + 1
        total += 1
    res = {"count": total, "bytes": sum(n for _, n in times), "vlans": vlans}
    if len(times) > 2:
        t_start = times[0][0] + a.settle
        steady = [(t, n) for t, n in times if t >= t_start]
        if len(steady) > 2:
            span = steady[-1][0] - steady[0][0]
            res["steady_pps"] = (len(steady) - 1) / span
            res["steady_bps"] = sum(n for _, n in steady[1:]) * 8 / span
            res["steady_span"] = span
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("send")
    ps.add_argument("ifname")
    ps.add_argument("--src", required=True)
    ps.add_argument("--dst", required=True)
    ps.add_argument("--sip", required=True)
    ps.add_argument("--dip", required=True)
    ps.add_argument("--vlan", type=int, default=0)
    ps.add_argument("--size", type=int, default=100)
    ps.add_argument("--pps", type=float, default=0)
    ps.add_argument("--count", type=int)
    ps.add_argument("--duration", type=float)
    ps.add_argument("--marker", default="QTNL")
    pr = sub.add_parser("recv")
    pr.add_argument("ifname")
    pr.add_argument("--marker", default="QTNL")
    pr.add_argument("--duration", type=float, default=3)
    pr.add_argument("--settle", type=float, default=0.5)
    a = p.parse_args()
    if a.cmd == "send":
        if a.count is None and a.duration is None:
            a.count = 1
        cmd_send(a)
    else:
        cmd_recv(a)


if __name__ == "__main__":
    sys.exit(main())
