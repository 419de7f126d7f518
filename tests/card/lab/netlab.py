# SPDX-License-Identifier: Apache-2.0
"""Network-namespace lab for the qtcard protocol interop tests.

Everything a test creates carries a per-process prefix (namespaces
"qtnl<pid>-<name>", a private temp dir) and is removed by Lab.close(), which
tests call from a finally block. Processes are stopped by the pids we started,
never by name.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
OVS_VSWITCHD = "/usr/sbin/ovs-vswitchd"
OVSDB_SERVER = "/usr/sbin/ovsdb-server"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def log(*a):
    print(*a, flush=True)


def skip(why):
    log("SKIP:", why)
    sys.exit(SKIP)


def need_root_and_tools(*tools):
    if os.geteuid() != 0:
        skip("needs root for network namespaces")
    for t in ("ip",) + tools:
        if not shutil.which(t) and not os.path.exists(t):
            skip(f"'{t}' is not installed")


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.sock_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.sock_path)


class Lab:
    def __init__(self, tag):
        self.prefix = f"qtnl{os.getpid() % 100000}"
        self.tag = tag
        self.dir = tempfile.mkdtemp(prefix=f"qtcard-lab-{tag}-")
        self.namespaces = []
        self.procs = []      # Popen objects we started
        self.pidfiles = []   # daemons that detached, by pidfile
        self.api_sock = None

    # ---- namespaces and links ----
    def ns(self, name):
        full = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        self.sh(full, "ip link set lo up")
        return full

    def sh(self, ns, cmd, check=True):
        return run(["ip", "netns", "exec", ns, "sh", "-c", cmd], check=check)

    def veth(self, ns_a, name_a, ns_b, name_b):
        """veth pair name_a (in ns_a) <-> name_b (in ns_b), both up."""
        tmp_a = f"qv{os.getpid() % 100000}a{len(self.namespaces)}{name_a}"[:15]
        tmp_b = f"qv{os.getpid() % 100000}b{len(self.namespaces)}{name_b}"[:15]
        run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        run(["ip", "link", "set", tmp_a, "netns", ns_a, "name", name_a])
        run(["ip", "link", "set", tmp_b, "netns", ns_b, "name", name_b])
        for ns, n in ((ns_a, name_a), (ns_b, name_b)):
            # no IPv6 autoconfiguration chatter on test links
            self.sh(ns, f"sysctl -qw net.ipv6.conf.{n}.disable_ipv6=1; ip link set {n} up")

    def mac(self, ns, ifname):
        return self.sh(ns, f"cat /sys/class/net/{ifname}/address").stdout.strip()

    def popen(self, ns, argv, **kw):
        full = ["ip", "netns", "exec", ns] + list(argv) if ns else list(argv)
        p = subprocess.Popen(full, **kw)
        self.procs.append(p)
        return p

    # ---- Open vSwitch, private instance ----
    def ovs_start(self, ns, other_config=None):
        """ovsdb-server and ovs-vswitchd in ns; other_config (dict) is set in the database
        before ovs-vswitchd first reads it (some keys, userspace-tso-enable among them,
        are read once)."""
        d = os.path.join(self.dir, "ovs")
        os.makedirs(d, exist_ok=True)
        self.ovs_dir = d
        self.ovs_env = dict(os.environ, OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d,
                            OVS_SYSCONFDIR=d)
        db = os.path.join(d, "conf.db")
        run(["ovsdb-tool", "create", db, OVS_SCHEMA])
        sock = os.path.join(d, "db.sock")
        run(["ip", "netns", "exec", ns, OVSDB_SERVER, db, f"--remote=punix:{sock}",
             f"--pidfile={d}/ovsdb-server.pid", "--detach", f"--log-file={d}/ovsdb-server.log",
             f"--unixctl={d}/ovsdb-server.ctl"], env=self.ovs_env)
        self.pidfiles.append(f"{d}/ovsdb-server.pid")
        self.vsctl("--no-wait", "init")
        for k, v in (other_config or {}).items():
            self.vsctl("--no-wait", "set", "Open_vSwitch", ".", f"other_config:{k}={v}")
        run(["ip", "netns", "exec", ns, OVS_VSWITCHD, f"unix:{sock}",
             f"--pidfile={d}/ovs-vswitchd.pid", "--detach", f"--log-file={d}/ovs-vswitchd.log",
             f"--unixctl={d}/ovs-vswitchd.ctl"], env=self.ovs_env)
        self.pidfiles.append(f"{d}/ovs-vswitchd.pid")

    def vsctl(self, *args):
        return run(["ovs-vsctl", f"--db=unix:{self.ovs_dir}/db.sock", "--timeout=20"] +
                   list(args), env=self.ovs_env).stdout

    def appctl(self, *args, check=True):
        return run(["ovs-appctl", "-t", f"{self.ovs_dir}/ovs-vswitchd.ctl"] + list(args),
                   env=self.ovs_env, check=check).stdout

    # ---- qtcard ----
    def qtcard_start(self, exe, ns, cores=1):
        self.api_sock = os.path.join(self.dir, "api.sock")
        logf = open(os.path.join(self.dir, "qtcard.log"), "w")
        self.popen(ns, [exe, "--api-socket", self.api_sock, "--socket-dir", self.dir,
                        "--cores", str(cores), "--log-level", "info"],
                   stdout=logf, stderr=subprocess.STDOUT)
        for _ in range(100):
            if os.path.exists(self.api_sock):
                try:
                    self.api("GET", "status")
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("qtcard did not open its API socket; log:\n" + self.qtcard_log())

    def qtcard_log(self):
        try:
            with open(os.path.join(self.dir, "qtcard.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def api(self, method, path, body=None):
        c = UnixHTTP(self.api_sock)
        data = json.dumps(body) if body is not None else None
        c.request(method, "/api/v1/" + path.lstrip("/"), body=data,
                  headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        return r.status, (json.loads(text) if text else None)

    def api_ok(self, method, path, body=None):
        st, obj = self.api(method, path, body)
        if st // 100 != 2:
            raise RuntimeError(f"qtcard {method} {path}: HTTP {st}: {obj}")
        return obj

    # ---- teardown ----
    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pf in reversed(self.pidfiles):
            try:
                with open(pf) as f:
                    pid = int(f.read().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)
        if os.environ.get("QT_LAB_KEEP"):
            log("lab files kept in", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def probe_port_type(lab, ptype):
    """Exit 77 when the running qtcard does not know port type `ptype`: a
    port of that type with no other keys is refused for the type itself by
    a daemon without it, and for a missing key by one that has it."""
    st, obj = lab.api("POST", "ports", {"name": f"probe-{ptype}", "switch": "sw",
                                        "type": ptype})
    if st // 100 == 2:
        lab.api("DELETE", f"ports/probe-{ptype}")
    elif f"type '{ptype}'" in str(obj):
        skip(f"this qtcard has no {ptype} ports ({obj})")


def wait_for(pred, timeout, step=0.1):
    """Poll pred() until it is truthy or timeout seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    v = pred()
    while not v and time.monotonic() < end:
        time.sleep(step)
        v = pred()
    return v
