# SPDX-License-Identifier: Apache-2.0
"""Helpers for qtcard interop tests and benchmarks: hugepages, the qtcard
daemon and its API, dpdk-testpmd as a virtio_user frontend, OVS-DPDK."""

import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

SKIP = 77


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def api(sock, method, path, body=None):
    c = UnixHTTP(sock)
    data = json.dumps(body) if body is not None else None
    c.request(method, "/api/v1/" + path.lstrip("/"), body=data,
              headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    return r.status, (json.loads(text) if text else None)


def api_ok(sock, method, path, body=None):
    st, obj = api(sock, method, path, body)
    if st // 100 != 2:
        raise RuntimeError(f"{method} {path}: HTTP {st} {obj}")
    return obj


def remove_hugepage_files(prefix):
    """DPDK leaves its hugetlbfs files (<prefix>map_N) behind when it exits; they keep
    their pages until removed."""
    try:
        with open("/proc/mounts") as f:
            mounts = [ln.split()[1] for ln in f if " hugetlbfs " in ln]
    except OSError:
        return
    for m in mounts:
        for path in glob.glob(os.path.join(m, glob.escape(prefix) + "map_*")):
            try:
                os.unlink(path)
            except OSError:
                pass


def hugepages_ready(pages=768):
    """Make sure 2 MiB hugepages and a hugetlbfs mount exist. False if we cannot."""
    try:
        with open("/proc/meminfo") as f:
            mi = f.read()
        total = int(re.search(r"HugePages_Total:\s+(\d+)", mi).group(1))
        if total < pages:
            with open("/proc/sys/vm/nr_hugepages", "w") as f:
                f.write(str(pages))
        with open("/proc/mounts") as f:
            if " hugetlbfs " not in f.read():
                os.makedirs("/dev/hugepages", exist_ok=True)
                subprocess.run(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"],
                               check=True)
        with open("/proc/meminfo") as f:
            free = int(re.search(r"HugePages_Free:\s+(\d+)", f.read()).group(1))
        return free >= 256
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return False


def have(prog):
    return shutil.which(prog) is not None


class Card:
    def __init__(self, binary, workdir, cores=1, state=True, extra=()):
        self.binary = binary
        self.dir = workdir
        self.api_sock = os.path.join(workdir, "api.sock")
        self.state = os.path.join(workdir, "state.json") if state else None
        self.cores = cores
        self.extra = list(extra)
        self.proc = None
        self.log = os.path.join(workdir, "qtcard.log")

    def start(self):
        args = [self.binary, "--api-socket", self.api_sock, "--socket-dir", self.dir,
                "--cores", str(self.cores)] + self.extra
        if self.state:
            args += ["--state-file", self.state]
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError("qtcard exited at start; log:\n" + self.log_text())
            try:
                api(self.api_sock, "GET", "status")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("qtcard API did not come up")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def port(self, name):
        return api_ok(self.api_sock, "GET", "ports/" + name)


class Testpmd:
    """dpdk-testpmd in interactive mode, one virtio_user port."""

    def __init__(self, name, sock_path, mode, cpu, txpkts=64, server=False, queues=1,
                 workdir="/tmp", packed=False):
        self.name = name
        self.file_prefix = f"qtc{os.getpid()}{name}"
        vdev = f"net_virtio_user0,path={sock_path},queues={queues}"
        if server:
            vdev += ",server=1"
        if packed:
            vdev += ",packed_vq=1"
        # stdbuf: testpmd printf()s its answers through a buffered stdout when it is a pipe.
        self.args = ["stdbuf", "-o0", "dpdk-testpmd", f"--lcores=0@{cpu},1@{cpu}", "--no-pci",
                     f"--file-prefix={self.file_prefix}", "-m", "256",
                     "--single-file-segments", "--vdev", vdev, "--", "-i",
                     f"--forward-mode={mode}", "--total-num-mbufs=8192",
                     f"--txpkts={txpkts}", f"--rxq={queues}", f"--txq={queues}"]
        if not server:
            # In server mode virtio_user reconnects from its link-status interrupt.
            self.args.append("--no-lsc-interrupt")
        self.out = ""
        self.lock = threading.Lock()
        self.proc = None
        self.logpath = os.path.join(workdir, f"testpmd-{name}.log")

    def start(self, timeout=30):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        # stdout is read raw (the prompt has no newline); stdin stays text.
        threading.Thread(target=self._reader, daemon=True).start()
        self._wait_prompt(0, timeout)
        return self

    def _reader(self):
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            with self.lock:
                self.out += chunk.decode(errors="replace")
        with self.lock:
            self.out += "\n<EOF>\n"

    def _wait_prompt(self, since, timeout):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if "testpmd> " in self.out[since:]:
                    return self.out[since:]
                if "<EOF>" in self.out[since:]:
                    raise RuntimeError(f"testpmd {self.name} exited:\n{self.out[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"testpmd {self.name}: no prompt after {timeout}s:\n{self.out[-3000:]}")

    def cmd(self, c, timeout=15):
        with self.lock:
            since = len(self.out)
        self.proc.stdin.write(c + "\n")
        self.proc.stdin.flush()
        # The prompt is printed without a newline: poll for the next one.
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                seg = self.out[since:]
            if "testpmd> " in seg or "<EOF>" in seg:
                return seg
            time.sleep(0.05)
        return seg

    def port_stats(self):
        seg = self.cmd("show port stats 0")
        rx = re.search(r"RX-packets:\s+(\d+)", seg)
        tx = re.search(r"TX-packets:\s+(\d+)", seg)
        rxb = re.search(r"RX-bytes:\s+(\d+)", seg)
        return {"rx": int(rx.group(1)) if rx else -1, "tx": int(tx.group(1)) if tx else -1,
                "rx_bytes": int(rxb.group(1)) if rxb else -1}

    def quit(self):
        if not self.proc:
            return
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
        with open(self.logpath, "w") as f:
            f.write(self.out)
        self.proc = None
        remove_hugepage_files(self.file_prefix)
