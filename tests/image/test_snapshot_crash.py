#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Crash points of qtimg's internal snapshot operations.

For `snapshot -c`, `-d` and `-a`, qtimg is run once under strace to count its
metadata writes (pwrite64), then once per write N with strace injecting
SIGKILL on entry to the Nth pwrite64, so that write and everything after it
never happen. After every crash point:
  * qemu-img check exits 0 or 3 (clean, or leaked clusters only), or reports
    nothing but OFLAG_COPIED errors (the window between a refcount change and
    the L2 copied flags that follow it, which QEMU's snapshot code has too),
    which `qemu-img check -r all` repairs to a clean image;
  * the image is in the old or the new state, never in between: the active
    data equals the data before the operation (or, after -a, possibly the
    snapshot's data), every snapshot that exists reads back as it did, and
    the snapshot list is the old or the new one.
Also kills a snapshot creation on an image with a backing file and
compressed clusters.

  test_snapshot_crash.py QTIMG      (exit 77 without qemu-img/qemu-io/strace)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

QTIMG = None
TMP = None


def run(*args, ok=(0,), timeout=120):
    p = subprocess.run(list(args), cwd=TMP, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    if ok is not None and p.returncode not in ok:
        raise AssertionError("%s -> rc %d\n%s" % (" ".join(args), p.returncode, p.stdout))
    return p


def qio(img, *cmds):
    args = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    run(*args, img)


def copy(src, dst):
    shutil.copyfile(os.path.join(TMP, src), os.path.join(TMP, dst))


def snaps(img):
    info = json.loads(run("qemu-img", "info", "--output", "json", img).stdout)
    return sorted(s["name"] for s in info.get("snapshots", []))


def to_raw(img, out, snap=None):
    args = ["qemu-img", "convert", "-f", "qcow2"]
    if snap:
        args += ["-l", "snapshot.name=" + snap]
    run(*args, "-O", "raw", img, out)


def same(a, b):
    return run("qemu-img", "compare", "-f", "raw", "-F", "raw", a, b, ok=(0, 1)).returncode == 0


def writes_of(*cmd):
    log = os.path.join(TMP, "strace.log")
    run("strace", "-f", "-qq", "-o", log, "-e", "trace=pwrite64", *cmd)
    with open(log) as f:
        return sum(1 for line in f if "pwrite64(" in line)


def crash_points(src, qtimg_args, expect):
    """Kill `qtimg snapshot <qtimg_args> img` at every metadata write; expect(img) judges."""
    copy(src, "pt.qcow2")
    n_writes = writes_of(QTIMG, "snapshot", *qtimg_args, "pt.qcow2")
    assert n_writes > 0, qtimg_args
    copied_windows = []
    for n in range(1, n_writes + 1):
        copy(src, "pt.qcow2")
        p = run("strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64", "-e",
                "inject=pwrite64:signal=SIGKILL:when=%d" % n, QTIMG, "snapshot", *qtimg_args,
                "pt.qcow2", ok=None)
        assert p.returncode != 0, "%s: not killed at write %d of %d" % (qtimg_args, n, n_writes)
        rc = run("qemu-img", "check", "pt.qcow2", ok=None)
        if rc.returncode == 2:
            # Refcounts and the copied flags of L2 entries cannot change in one write:
            # between the two, qemu-img check calls the flag wrong (QEMU's own snapshot
            # code has the same window). The snapshot table is written last, so no
            # snapshot sees the half-done state; `check -r all` sets the flags right.
            bad = [ln for ln in rc.stdout.splitlines()
                   if ln.startswith("ERROR") and "OFLAG_COPIED" not in ln]
            assert not bad, "%s, killed at write %d/%d: %s" % (qtimg_args, n, n_writes, bad)
            copied_windows.append(n)
            copy("pt.qcow2", "fix.qcow2")
            run("qemu-img", "check", "-r", "all", "fix.qcow2", ok=(0, 3))
            run("qemu-img", "check", "fix.qcow2")
        else:
            assert rc.returncode in (0, 3), "%s, killed at write %d/%d: qemu-img check %d\n%s" % (
                qtimg_args, n, n_writes, rc.returncode, rc.stdout)
        expect(n, "pt.qcow2")
    print("ok: %s: %d crash points (copied flags behind the refcounts at %s)" % (
        " ".join(qtimg_args), n_writes, copied_windows or "none"))
    return n_writes


def make_image(name, backing=False):
    if backing:
        run("qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "8M")
        qio("base.qcow2", "write -P 0x31 0 8M")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", name)
        qio(name, "write -P 0x32 1M 64k")
        return
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", name, "8M")
    qio(name, "write -P 0x41 0 1M", "write -P 0x42 3M 512k")
    run("qemu-img", "snapshot", "-c", "s1", name)
    qio(name, "write -P 0x43 512k 1M", "write -z 3M 64k", "write -P 0x44 6M 128k")


def main():
    global QTIMG, TMP
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    QTIMG = os.path.abspath(sys.argv[1])
    if not all(shutil.which(t) for t in ("qemu-img", "qemu-io", "strace")):
        print("SKIP: needs qemu-img, qemu-io and strace")
        return 77
    with tempfile.TemporaryDirectory(prefix="qtimg-snapcrash-") as tmp:
        TMP = tmp
        total = 0
        make_image("img.qcow2")
        to_raw("img.qcow2", "active.raw")
        to_raw("img.qcow2", "s1.raw", "s1")

        def after_create(n, img):
            assert snaps(img) in (["s1"], ["s1", "s2"]), (n, snaps(img))
            to_raw(img, "now.raw")
            assert same("active.raw", "now.raw"), "create, write %d: active data changed" % n
            to_raw(img, "now-s1.raw", "s1")
            assert same("s1.raw", "now-s1.raw"), "create, write %d: s1 changed" % n
            if "s2" in snaps(img):
                to_raw(img, "now-s2.raw", "s2")
                assert same("active.raw", "now-s2.raw"), "create, write %d: s2 wrong" % n

        total += crash_points("img.qcow2", ["-c", "s2"], after_create)

        def after_delete(n, img):
            assert snaps(img) in (["s1"], []), (n, snaps(img))
            to_raw(img, "now.raw")
            assert same("active.raw", "now.raw"), "delete, write %d: active data changed" % n
            if snaps(img):
                to_raw(img, "now-s1.raw", "s1")
                assert same("s1.raw", "now-s1.raw"), "delete, write %d: s1 changed" % n

        total += crash_points("img.qcow2", ["-d", "s1"], after_delete)

        def after_apply(n, img):
            assert snaps(img) == ["s1"], (n, snaps(img))
            to_raw(img, "now.raw")
            assert same("active.raw", "now.raw") or same("s1.raw", "now.raw"), \
                "apply, write %d: active data is neither the old nor the snapshot's" % n
            to_raw(img, "now-s1.raw", "s1")
            assert same("s1.raw", "now-s1.raw"), "apply, write %d: s1 changed" % n

        total += crash_points("img.qcow2", ["-a", "s1"], after_apply)

        # Backing file and compressed clusters underneath a new snapshot.
        make_image("bk.qcow2", backing=True)
        run("qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=65536",
            "bk.qcow2", "cz.qcow2")
        for src in ("bk.qcow2", "cz.qcow2"):
            to_raw(src, "active.raw")

            def after_create2(n, img, src=src):
                assert snaps(img) in ([], ["s9"]), (src, n, snaps(img))
                to_raw(img, "now.raw")
                assert same("active.raw", "now.raw"), "%s, write %d: data changed" % (src, n)
                if snaps(img):
                    to_raw(img, "now-s9.raw", "s9")
                    assert same("active.raw", "now-s9.raw"), "%s, write %d: s9 wrong" % (src, n)

            total += crash_points(src, ["-c", "s9"], after_create2)
        print("PASS: %d crash points" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
