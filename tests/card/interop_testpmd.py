#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""qtcard against dpdk-testpmd (virtio_user) frontends.

  interop_testpmd.py QTCARD traffic    txonly -> switch -> rxonly, every packet accounted
  interop_testpmd.py QTCARD packed     the same with packed virtqueues (packed_vq=1)
  interop_testpmd.py QTCARD hostile    bad messages and a bad ring on a third port: that
                                       port is disconnected, the others keep forwarding
  interop_testpmd.py QTCARD multiqueue two queue pairs per port, two workers
  interop_testpmd.py QTCARD reconnect  card in client mode, testpmd server=1: SIGTERM the
                                       card, restart it from its state file, traffic resumes
  interop_testpmd.py QTCARD reconnect-packed   the same with packed virtqueues
Exit 77 when dpdk-testpmd or hugepages are not available.
"""

import mmap
import os
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cardlab  # noqa: E402


def wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg)


def setup_switch(card, ports, client_paths=None):
    cardlab.api_ok(card.api_sock, "POST", "switches", {"name": "br0"})
    for p in ports:
        body = {"name": p, "switch": "br0"}
        if client_paths:
            body.update({"mode": "client", "socket": client_paths[p]})
        cardlab.api_ok(card.api_sock, "POST", "ports", body)


def stats(card, name):
    return card.port(name)["stats"]


def run_traffic(card, tx, rx, seconds=3):
    rx.cmd("start")
    tx.cmd("start")
    time.sleep(seconds)
    tx.cmd("stop")
    time.sleep(1.0)
    rx.cmd("stop")


VIRTIO_F_RING_PACKED = 34


def check_rings(card, packed):
    for p in ("vm1", "vm2"):
        ring = "packed" if card.port(p)["features"] >> VIRTIO_F_RING_PACKED & 1 else "split"
        check(ring == ("packed" if packed else "split"), f"{p} negotiated {ring} rings")


def test_traffic(binary, work, packed=False):
    card = cardlab.Card(binary, work).start()
    tx = rx = None
    try:
        setup_switch(card, ["vm1", "vm2"])
        rx = cardlab.Testpmd("rx", f"{work}/vm2.sock", "rxonly", 0, workdir=work,
                             packed=packed).start()
        tx = cardlab.Testpmd("tx", f"{work}/vm1.sock", "txonly", 1, workdir=work,
                             packed=packed).start()
        wait_for(lambda: card.port("vm1")["connected"] and card.port("vm2")["connected"], 10,
                 "both frontends")
        check_rings(card, packed)
        run_traffic(card, tx, rx)
        ts, rs = tx.port_stats(), rx.port_stats()
        s1, s2 = stats(card, "vm1"), stats(card, "vm2")
        d1 = card.port("vm1")["drops"]
        print(f"testpmd tx {ts['tx']} rx {rs['rx']}; card vm1 {s1}; vm2 {s2}; drops {d1}")
        check(ts["tx"] > 10000, f"testpmd sent {ts['tx']} packets")
        check(s1["tx_packets"] == ts["tx"],
              f"card received every packet testpmd sent ({s1['tx_packets']} == {ts['tx']})")
        check(s2["rx_packets"] == rs["rx"],
              f"testpmd received every packet the card delivered ({rs['rx']} == "
              f"{s2['rx_packets']})")
        check(s1["tx_packets"] == s2["rx_packets"] + s2["rx_dropped"] + sum(d1.values()),
              "every packet is delivered or counted as dropped")
        check(rs["rx"] > 0, f"packets crossed the switch ({rs['rx']})")
        check(s2["rx_bytes"] == 64 * s2["rx_packets"],
              "frames keep their 64-byte length across the switch")
        check(rs["rx_bytes"] == 64 * rs["rx"], "testpmd counts 64-byte frames on receive")
        q = card.port("vm1")["queue_stats"][0]
        check(q["tx_packets"] == s1["tx_packets"], "per-queue counters add up")
    finally:
        for t in (tx, rx):
            if t:
                t.quit()
        rc = card.stop()
    check(rc == 0, "qtcard exits 0 on SIGTERM")


# ---- a hostile frontend written here, speaking raw vhost-user ----

def vu_send(s, req, payload=b"", fds=(), flags=1):
    msg = struct.pack("<III", req, flags, len(payload)) + payload
    if fds:
        socket.send_fds(s, [msg], list(fds))
    else:
        s.sendall(msg)


def vu_recv(s, size):
    data = b""
    while len(data) < 12 + size:
        chunk = s.recv(12 + size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def hostile_bad_message(path):
    """SET_VRING_NUM with a 3-byte payload: a protocol violation."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    vu_send(s, 3)  # SET_OWNER
    vu_send(s, 8, b"\x00\x00\x00")
    s.settimeout(3)
    try:
        closed = s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        closed = True
    s.close()
    return closed


def hostile_bad_ring(path):
    """A well-formed setup whose transmit ring names a buffer outside guest memory.
    Returns (the card closed the connection, the card signalled the ring's error eventfd)."""
    size = 2 << 20
    fd = os.memfd_create("hostile-guest")
    os.ftruncate(fd, size)
    mem = mmap.mmap(fd, size)
    uva, gpa = 0x7e0000000000, 0x40000000
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    vu_send(s, 3)
    vu_send(s, 1)
    vu_recv(s, 8)
    vu_send(s, 2, struct.pack("<Q", 1 << 32))  # VERSION_1 only: rings start enabled
    vu_send(s, 5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", gpa, size, uva, 0), [fd])
    kicks = []
    err = os.eventfd(0, os.EFD_NONBLOCK)
    for q in (0, 1):
        base = 0x1000 + q * 0x10000
        desc, avail, used = base, base + 0x1000, base + 0x2000
        vu_send(s, 8, struct.pack("<II", q, 256))
        vu_send(s, 10, struct.pack("<II", q, 0))
        vu_send(s, 9, struct.pack("<IIQQQQ", q, 0, uva + desc, uva + used, uva + avail, 0))
        call = os.eventfd(0)
        kick = os.eventfd(0)
        vu_send(s, 13, struct.pack("<Q", q), [call])
        vu_send(s, 12, struct.pack("<Q", q), [kick])
        vu_send(s, 14, struct.pack("<Q", q), [err])  # SET_VRING_ERR
        kicks.append(kick)
    time.sleep(0.5)
    # Transmit queue (1): descriptor 0 points 1 GiB past guest memory.
    base = 0x1000 + 0x10000
    mem[base:base + 16] = struct.pack("<QIHH", gpa + (1 << 30), 100, 0, 0)
    mem[base + 0x1000 + 4:base + 0x1000 + 6] = struct.pack("<H", 0)  # ring[0] = head 0
    mem[base + 0x1000 + 2:base + 0x1000 + 4] = struct.pack("<H", 1)  # avail idx = 1
    os.eventfd_write(kicks[1], 1)
    s.settimeout(5)
    try:
        closed = s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        closed = False
    s.close()
    mem.close()
    os.close(fd)
    try:
        signalled = os.eventfd_read(err) > 0
    except BlockingIOError:
        signalled = False
    os.close(err)
    return closed, signalled


def test_multiqueue(binary, work):
    card = cardlab.Card(binary, work, cores=2).start()
    tx = rx = None
    try:
        cardlab.api_ok(card.api_sock, "POST", "switches", {"name": "br0"})
        for p in ("vm1", "vm2"):
            cardlab.api_ok(card.api_sock, "POST", "ports", {"name": p, "switch": "br0",
                                                            "queues": 2})
        rx = cardlab.Testpmd("rx", f"{work}/vm2.sock", "rxonly", 0, queues=2,
                             workdir=work).start()
        tx = cardlab.Testpmd("tx", f"{work}/vm1.sock", "txonly", 1, queues=2,
                             workdir=work).start()
        wait_for(lambda: all(q["worker"] >= 0 for q in card.port("vm1")["queue_stats"]), 10,
                 "both transmit queues of vm1 running")
        run_traffic(card, tx, rx, seconds=2)
        ts, rs = tx.port_stats(), rx.port_stats()
        p1, p2 = card.port("vm1"), card.port("vm2")
        qs = p1["queue_stats"]
        print(f"testpmd tx {ts['tx']} rx {rs['rx']}; vm1 queues {qs}; vm2 {p2['stats']}")
        check(p1["features"] & (1 << 22), "VIRTIO_NET_F_MQ negotiated")
        check(len(qs) == 2 and all(q["tx_packets"] > 0 for q in qs),
              "testpmd transmitted on both queue pairs")
        check(qs[0]["worker"] != qs[1]["worker"], "the two queues run on different workers")
        check(p1["stats"]["tx_packets"] == ts["tx"], "every packet sent was received by the card")
        check(p2["stats"]["rx_packets"] == rs["rx"] and rs["rx"] > 0,
              "every packet delivered was received by testpmd")
    finally:
        for t in (tx, rx):
            if t:
                t.quit()
        card.stop()


def test_hostile(binary, work):
    card = cardlab.Card(binary, work).start()
    tx = rx = None
    try:
        setup_switch(card, ["vm1", "vm2", "evil"])
        rx = cardlab.Testpmd("rx", f"{work}/vm2.sock", "rxonly", 0, workdir=work).start()
        tx = cardlab.Testpmd("tx", f"{work}/vm1.sock", "txonly", 1, workdir=work).start()
        wait_for(lambda: card.port("vm1")["connected"] and card.port("vm2")["connected"], 10,
                 "both frontends")
        rx.cmd("start")
        tx.cmd("start")
        time.sleep(1)
        check(hostile_bad_message(f"{work}/evil.sock"),
              "a frontend sending a malformed message is disconnected")
        closed, signalled = hostile_bad_ring(f"{work}/evil.sock")
        check(closed, "a frontend with an out-of-bounds descriptor is disconnected")
        check(signalled, "after signalling its rings' error eventfd (SET_VRING_ERR)")
        before = stats(card, "vm2")["rx_packets"]
        time.sleep(1.5)
        after = stats(card, "vm2")["rx_packets"]
        check(after > before, f"traffic between the other ports continues ({before} -> {after})")
        tx.cmd("stop")
        rx.cmd("stop")
        log = card.log_text()
        check("SET_VRING_NUM payload is 3 bytes" in log, "the bad message is logged with reason")
        check("not in guest memory" in log and "disconnecting" in log,
              "the bad ring is logged with reason")
        check(not card.port("evil")["connected"], "the hostile port is disconnected")
        check(card.proc.poll() is None, "qtcard is still running")
    finally:
        for t in (tx, rx):
            if t:
                t.quit()
        card.stop()


def test_reconnect(binary, work, packed=False):
    paths = {"vm1": f"{work}/tpmd-tx.sock", "vm2": f"{work}/tpmd-rx.sock"}
    rx = cardlab.Testpmd("rx", paths["vm2"], "rxonly", 0, server=True, workdir=work,
                         packed=packed)
    tx = cardlab.Testpmd("tx", paths["vm1"], "txonly", 1, server=True, workdir=work,
                         packed=packed)
    card = None
    try:
        # testpmd in server mode waits for the backend before it gives a prompt.
        import threading
        t1 = threading.Thread(target=rx.start, kwargs={"timeout": 60})
        t2 = threading.Thread(target=tx.start, kwargs={"timeout": 60})
        t1.start()
        t2.start()
        wait_for(lambda: os.path.exists(paths["vm1"]) and os.path.exists(paths["vm2"]), 30,
                 "testpmd server sockets")
        card = cardlab.Card(binary, work).start()
        setup_switch(card, ["vm1", "vm2"], client_paths=paths)
        t1.join()
        t2.join()
        wait_for(lambda: card.port("vm1")["connected"] and card.port("vm2")["connected"], 10,
                 "card connected to both testpmd sockets")
        check_rings(card, packed)
        rx.cmd("start")
        tx.cmd("start")
        time.sleep(1.5)
        first = rx.port_stats()["rx"]
        check(first > 0, f"traffic flows before the restart ({first})")
        check(card.stop() == 0, "qtcard stops cleanly on SIGTERM")
        time.sleep(0.5)
        card = cardlab.Card(binary, work).start()  # same state file
        wait_for(lambda: card.port("vm1")["connected"] and card.port("vm2")["connected"], 15,
                 "restored ports reconnected to testpmd")
        check_rings(card, packed)
        time.sleep(2)
        second = rx.port_stats()["rx"]
        check(second > first, f"traffic resumed after the restart ({first} -> {second})")
        check(stats(card, "vm2")["rx_packets"] > 0, "the restarted card forwards")
        tx.cmd("stop")
        rx.cmd("stop")
    finally:
        for t in (tx, rx):
            if t.proc:
                t.quit()
        if card:
            card.stop()


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("traffic", "packed", "hostile", "reconnect",
                                                   "reconnect-packed", "multiqueue"):
        print(__doc__)
        return 2
    if not cardlab.have("dpdk-testpmd"):
        print("SKIP: dpdk-testpmd not installed (Debian package dpdk)")
        return cardlab.SKIP
    if os.geteuid() != 0 or not cardlab.hugepages_ready():
        print("SKIP: cannot set up hugepages (needs root)")
        return cardlab.SKIP
    with tempfile.TemporaryDirectory(prefix="qtcard-interop-") as work:
        try:
            {"traffic": test_traffic, "hostile": test_hostile,
             "reconnect": test_reconnect, "multiqueue": test_multiqueue,
             "packed": lambda b, w: test_traffic(b, w, packed=True),
             "reconnect-packed": lambda b, w: test_reconnect(b, w, packed=True)}[sys.argv[2]](sys.argv[1], work)
        except Exception:
            for f in sorted(os.listdir(work)):
                if f.endswith(".log"):
                    with open(os.path.join(work, f)) as fh:
                        print(f"---- {f} (tail) ----\n" + fh.read()[-4000:])
            raise
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
