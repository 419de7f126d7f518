#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Crash-safety test: kill a libqtimg writer (SIGKILL) at random moments.

usage: crash_test.py CRASH_WRITER [ITERATIONS] [SEED]

Each iteration creates a qcow2 image (random cluster size, refcount width,
extended L2, lazy refcounts, with or without a raw backing file; the writer
uses the synchronous API or the io_uring one), runs crash_writer twice on
it, killing it after a random delay each time. After every kill:
  - `qemu-img check` must report a clean image or leaked clusters only
    (exit 0 or 3), never corruption;
  - the content (read back by `qemu-img convert -O raw`) must hold, for every
    sector, a value allowed by the writer's journal: everything before the
    last completed flush exactly, and for sectors touched after it either
    the flushed value or one of the later writes.
Exits 77 when qemu-img is missing.
"""
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

SIZE = 8 << 20
SECTORS = SIZE // 512
BASE = "base"


def base_value(sector):
    return (0xFFFFFFFF << 32) | sector


def sector_value(data, s):
    blk = data[s * 512:(s + 1) * 512]
    if blk == b"\0" * 512:
        return 0
    v = struct.unpack_from("<Q", blk, 0)[0]
    if blk != struct.pack("<Q", v) * 64:
        return ("garbage", blk[:16].hex())
    return v


class Model:
    def __init__(self, backing):
        self.backing = backing
        self.cur = [None] * SECTORS  # None: {base}
        self.pending = []

    def base(self, s):
        return base_value(s) if self.backing else 0

    def allowed(self, s):
        return self.cur[s] if self.cur[s] is not None else {self.base(s)}

    def apply(self, op, definite):
        kind, seq, first, n = op
        for s in range(first, first + n):
            if kind == "W":
                v = {(seq << 32) | s}
            elif kind == "Z":
                v = {0}
            else:  # discard: partial clusters may keep their data
                v = self.allowed(s) | {self.base(s)}
            self.cur[s] = v if definite else (self.allowed(s) | v)

    def feed(self, journal_lines):
        for line in journal_lines:
            parts = line.split()
            if len(parts) != 4:
                continue  # a torn last line
            kind, seq, first, n = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
            if kind == "F":
                for op in self.pending:
                    self.apply(op, True)
                self.pending = []
            else:
                self.pending.append((kind, seq, first, n))

    def crash(self):
        for op in self.pending:
            self.apply(op, False)
        self.pending = []


def run(*args, ok=(0,)):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    if p.returncode not in ok:
        raise AssertionError("%s -> %d\n%s" % (" ".join(args), p.returncode, p.stdout))
    return p


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    writer = os.path.abspath(sys.argv[1])
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
    if not shutil.which("qemu-img"):
        print("qemu-img missing: skipping")
        return 77
    rnd = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="qtimg-crash-")
    print("seed %d, %d iterations" % (seed, iters))
    failures = 0
    try:
        for it in range(iters):
            img = os.path.join(tmp, "c.qcow2")
            jour = os.path.join(tmp, "journal")
            for f in (img, jour):
                if os.path.exists(f):
                    os.unlink(f)
            cs = rnd.choice([512, 4096, 65536, 65536])
            rb = rnd.choice([1, 2, 4, 8, 16, 16, 64])
            if os.environ.get("CRASH_GROW"):
                # 512-byte clusters, 64-bit refcounts: the refcount table
                # grows every 2 MiB of file, so kills land in its updates
                cs, rb = 512, 64
            ext = cs >= 16384 and rnd.random() < 0.4
            backing = rnd.random() < 0.4
            lazy = rnd.random() < 0.25
            use_aio = rnd.random() < 0.5
            opts = "cluster_size=%d,refcount_bits=%d,extended_l2=%s,lazy_refcounts=%s" % (
                cs, rb, "on" if ext else "off", "on" if lazy else "off")
            args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts]
            if backing:
                b = os.path.join(tmp, "base.raw")
                with open(b, "wb") as f:
                    for s in range(SECTORS):
                        f.write(struct.pack("<Q", base_value(s)) * 64)
                args += ["-b", b, "-F", "raw"]
            run(*args, img, str(SIZE))
            model = Model(backing)
            desc = "iter %d: %s backing=%s aio=%s" % (it, opts, backing, use_aio)
            ok = True
            for phase in range(2):
                mode = ["aio"] if use_aio else []
                p = subprocess.Popen([writer, img, jour, str(rnd.getrandbits(31))] + mode,
                                     stderr=subprocess.PIPE)
                time.sleep(rnd.uniform(0.05, 0.5))
                rc = p.poll()
                if rc is not None:
                    print("FAIL %s: writer exited early (%d): %s" % (desc, rc, p.stderr.read()))
                    ok = False
                    break
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                p.stderr.close()
                with open(jour) as f:
                    lines = f.read().splitlines()
                open(jour, "w").close()
                model.feed(lines)
                model.crash()
                nops = len(lines)
                chk = run("qemu-img", "check", img, ok=(0, 2, 3))
                if chk.returncode == 2:
                    print("FAIL %s phase %d: qemu-img check reports corruption:\n%s"
                          % (desc, phase, chk.stdout))
                    ok = False
                    break
                raw = os.path.join(tmp, "out.raw")
                run("qemu-img", "convert", "-O", "raw", img, raw)
                with open(raw, "rb") as f:
                    data = f.read()
                bad = []
                for s in range(SECTORS):
                    v = sector_value(data, s)
                    if v not in model.allowed(s):
                        bad.append((s, v, sorted(model.allowed(s))[:4]))
                if bad:
                    print("FAIL %s phase %d: %d sectors with unexpected content, first %r"
                          % (desc, phase, len(bad), bad[0]))
                    ok = False
                    break
                print("ok   %s phase %d: %d ops, check rc %d" % (desc, phase, nops, chk.returncode))
            if not ok:
                failures += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
