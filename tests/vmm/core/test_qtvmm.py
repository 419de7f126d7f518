#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""kvm suite: boot tests/vmm/core/pvh_guest.elf on qtvmm and check how the VM
ends (exit status per guest action), SMP start-up, refusal of bad images and
bad usage, SIGTERM, the control API and the serial backends.

  test_qtvmm.py --qtvmm build/src/vmm/qtvmm --guest build/tests/vmm/core/pvh_guest.elf
Exit status: 0 pass, 1 fail, 77 skip (no usable /dev/kvm).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def run(qtvmm, args, timeout=20, stdin=subprocess.DEVNULL):
    p = subprocess.run([qtvmm] + args, stdin=stdin, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def api(sock_path, method, path, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    data = body.encode() if body else b""
    req = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           f"Content-Length: {len(data)}\r\n"
           + ("Content-Type: application/json\r\n" if data else "") + "\r\n").encode() + data
    s.sendall(req)
    resp = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    s.close()
    head, _, payload = resp.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, None


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def can_connect(path):
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qtvmm", required=True)
    ap.add_argument("--guest", required=True)
    args = ap.parse_args()
    q, g = args.qtvmm, args.guest
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("no usable /dev/kvm: skipping")
        return 77
    base = ["--kernel", g, "--memory", "size=64M", "--serial", "tty"]
    tmp = tempfile.mkdtemp(prefix="qtvmm-core-")

    # How the guest ends -> exit status.
    for mode, want in (("p", 0), ("e", 66), ("r", 3), ("t", 4)):
        rc, out, err = run(q, base + ["--cmdline", f"{mode} mode-test"])
        check(rc == want, f"mode {mode}: exit status {rc}, want {want}")
        check(out.startswith("Q") and "ready" in out and f"{mode} mode-test" in out,
              f"mode {mode}: serial output {out!r}")
    rc, out, err = run(q, base + ["--cmdline", "t"])
    check("triple fault" in err and "rip=" in err, "triple fault is logged with the registers")

    # SMP: APs wait for SIPI while the BSP runs and powers off.
    rc, out, err = run(q, base + ["--cpus", "boot=4", "--cmdline", "p"])
    check(rc == 0 and "ready" in out, f"4 vCPUs boot and power off (status {rc})")
    rc, out, err = run(q, ["--kernel", g, "--memory", "size=5G", "--serial", "tty", "--cmdline", "p"])
    check(rc == 0, f"5 GiB guest (2 GiB of it above 4 GiB) boots (status {rc}) {err[-200:]}")

    # Hugepage-backed RAM (only where the host has 2 MiB pages free).
    free_huge = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                free_huge = int(line.split()[1])
    if free_huge >= 32:
        rc, out, err = run(q, ["--kernel", g, "--memory", "size=64M,hugepages=on", "--serial",
                               "tty", "--cmdline", "p huge"])
        check(rc == 0 and "p huge" in out, f"hugepages=on boots (status {rc}) {err[-160:]}")
    else:
        print("skip hugepages=on: fewer than 32 free 2 MiB pages")

    # Bad images are refused before any vCPU runs (no 'Q' on the serial line).
    junk = os.path.join(tmp, "junk.bin")
    with open(junk, "wb") as f:
        f.write(os.urandom(4096))
    rc, out, err = run(q, ["--kernel", junk, "--serial", "tty"])
    check(rc == 2 and "neither a bzImage" in err and out == "", f"random file refused ({rc}) {err.strip()[-120:]}")
    data = open(g, "rb").read()
    cut = os.path.join(tmp, "cut.elf")
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 3])
    rc, out, err = run(q, ["--kernel", cut, "--serial", "tty"])
    check(rc == 2 and out == "" and "kernel" in err, f"truncated ELF refused ({rc}) {err.strip()[-160:]}")
    rc, out, err = run(q, ["--kernel", os.path.join(tmp, "missing.elf")])
    check(rc == 2 and "missing.elf" in err, f"missing kernel refused ({rc})")
    big = os.path.join(tmp, "big.img")
    with open(big, "wb") as f:
        f.truncate(80 << 20)
    with open(big, "r+b") as f:
        f.write(b"x")
    rc, out, err = run(q, base + ["--initramfs", big])
    check(rc == 2 and "initramfs" in err and out == "", f"initramfs larger than RAM refused ({rc})")

    # Bad usage.
    rc, out, err = run(q, ["--kernel", g, "--disk", "path=/x,bogus=1"])
    check(rc == 2 and "unknown key 'bogus'" in err, f"unknown --disk key: status {rc}")
    rc, out, err = run(q, ["--cpus", "boot=2"])
    check(rc == 2 and "--kernel" in err, "missing --kernel")
    rc, out, err = run(q, ["--help"])
    check(rc == 0 and "--api-socket" in out, "--help")

    # Initramfs handed over as a PVH module: the guest still boots.
    small = os.path.join(tmp, "initrd.img")
    with open(small, "wb") as f:
        f.write(b"\x07" * 100000)
    rc, out, err = run(q, base + ["--initramfs", small, "--cmdline", "p"])
    check(rc == 0, f"boot with an initramfs ({rc})")

    # SIGTERM stops a running VM cleanly.
    p = subprocess.Popen([q] + base + ["--cmdline", "h"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    check(p.returncode == 0, f"SIGTERM: exit status {p.returncode}")

    # SIGTERM while paused: parked vCPUs are released and joined.
    sock = os.path.join(tmp, "api-term.sock")
    p = subprocess.Popen([q] + base + ["--cpus", "boot=2", "--cmdline", "h", "--api-socket", sock],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        check(wait_for(lambda: can_connect(sock)), "API socket (pause + SIGTERM) accepts")
        st, body = api(sock, "PUT", "/api/v1/vm/pause")
        check(st == 200 and body["state"] == "paused", "paused before SIGTERM")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        check(p.returncode == 0, f"SIGTERM while paused: exit status {p.returncode}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

    # Control API against a halted guest.
    sock = os.path.join(tmp, "api.sock")
    p = subprocess.Popen([q] + base + ["--cpus", "boot=2", "--cmdline", "h", "--api-socket", sock],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        check(wait_for(lambda: can_connect(sock)), "API socket accepts connections")
        st, body = api(sock, "GET", "/api/v1/vm")
        check(st == 200 and body["state"] == "running" and body["vcpus"] == 2
              and body["memory"] == 64 << 20, f"GET /api/v1/vm: {st} {body and body.get('state')}")
        check(any(d.get("name") == "serial0" for d in body["devices"]), "serial counters listed")
        st, body = api(sock, "PUT", "/api/v1/vm/pause")
        check(st == 200 and body["state"] == "paused", f"pause: {st} {body}")
        st, body = api(sock, "GET", "/api/v1/vm")
        check(body["state"] == "paused", "state reads paused")
        st, body = api(sock, "PUT", "/api/v1/vm/resume")
        check(st == 200 and body["state"] == "running", f"resume: {st} {body}")
        st, body = api(sock, "PUT", "/api/v1/vm/power-button")
        check(st == 200, f"power-button: {st}")
        st, body = api(sock, "GET", "/api/v1/vm")
        pm = [d for d in body["devices"] if d.get("name") == "acpi-pm"]
        check(pm and pm[0]["pm1_sts"] & 0x100 and pm[0]["power_button_presses"] == 1,
              f"PWRBTN_STS set: {pm}")
        st, body = api(sock, "GET", "/nope")
        check(st == 404 and "error" in body, "404 with a JSON error")
        st, body = api(sock, "POST", "/api/v1/vm/pause")
        check(st == 405, "405 for a wrong method")
        st, body = api(sock, "PUT", "/api/v1/vm/pause", "{bad json")
        check(st == 400, "400 for a bad body")
        st, body = api(sock, "PUT", "/api/v1/vm/shutdown")
        check(st == 200, "shutdown accepted")
        p.wait(timeout=10)
        check(p.returncode == 0, f"API shutdown: exit status {p.returncode}")
        check(not os.path.exists(sock), "API socket removed at exit")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

    # The API lives in qtvmm-api.so (loaded only for --api-socket): a VM
    # without the API never maps libmicrohttpd; a missing module is an error
    # naming it, exit status 1, and the socket is not left behind.
    p = subprocess.Popen([q] + base + ["--cmdline", "h"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        maps = []

        def ram_mapped():  # the guest RAM memfd is mapped once main() runs
            with open(f"/proc/{p.pid}/maps") as f:
                maps[:] = [f.read()]
            return "qtvmm-ram" in maps[0]
        wait_for(ram_mapped)
        maps = maps[0] if maps else ""
        check("qtvmm" in maps and "libmicrohttpd" not in maps and "libgnutls" not in maps,
              "without --api-socket qtvmm maps neither libmicrohttpd nor GnuTLS")
    finally:
        p.kill()
        p.wait()
    sock = os.path.join(tmp, "api-nomod.sock")
    missing = os.path.join(tmp, "no-such-module.so")
    p = subprocess.run([q] + base + ["--cmdline", "h", "--api-socket", sock],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20,
                       env=dict(os.environ, QTVMM_API_MODULE=missing))
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 1 and missing in err and not os.path.exists(sock),
          f"missing API module: status {p.returncode}, message names it: {err.strip()[-160:]!r}")

    # Serial on a unix socket: the guest echoes what it receives until '.'.
    ssock = os.path.join(tmp, "serial.sock")
    p = subprocess.Popen([q, "--kernel", g, "--memory", "size=64M", "--serial", f"socket={ssock}",
                          "--cmdline", "c"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        check(wait_for(lambda: os.path.exists(ssock)), "serial socket appears")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(ssock)
        time.sleep(0.2)
        c.sendall(b"hello-serial.")
        got = b""
        end = time.monotonic() + 10
        while b"hello-serial." not in got and time.monotonic() < end:
            chunk = c.recv(4096)
            if not chunk:
                break
            got += chunk
        c.close()
        check(b"hello-serial." in got, f"serial input echoed: {got[-40:]!r}")
        p.wait(timeout=10)
        check(p.returncode == 0, f"serial echo guest powered off ({p.returncode})")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

    # Serial to a file.
    log = os.path.join(tmp, "serial.log")
    rc, out, err = run(q, ["--kernel", g, "--memory", "size=64M", "--serial", f"file={log}",
                           "--cmdline", "p file"])
    check(rc == 0 and "p file" in open(log).read(), "serial file backend")

    print(f"{len(FAILS)} failure(s)")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
