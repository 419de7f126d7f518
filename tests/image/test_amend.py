#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Interop test of 'qtimg amend' against the real qemu-img / qemu-io.

usage: test_amend.py QTIMG [case ...]
Images are written by qemu-img/qemu-io, amended by qtimg (and the other way
round); qemu-img check must be clean, 'qemu-img info' must show the new
settings and 'qemu-img compare' must find the contents unchanged. Refusals
must leave the file byte-identical. The kill case SIGKILLs qtimg amend at
random moments and requires qemu-img check to exit 0 or 3 (leaks only).
Exits 77 without qemu-img.
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

QTIMG = None
TMP = None
FAILED = []
WIDTHS = [1, 2, 4, 8, 16, 32, 64]


def run(*args, ok=(0,), timeout=120):
    p = subprocess.run(list(args), cwd=TMP, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    if ok is not None and p.returncode not in ok:
        raise AssertionError("%s -> rc %d\n%s" % (" ".join(args), p.returncode, p.stdout))
    return p


def q(*args, **kw):
    return run(QTIMG, *args, **kw).stdout


def qio(img, *cmds):
    args = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    run(*args, img)


def qemu_check(img, ok=(0,)):
    p = run("qemu-img", "check", img, ok=ok)
    if p.returncode == 0:
        assert "No errors were found" in p.stdout, p.stdout
    return p


def info(img):
    return json.loads(run("qemu-img", "info", "--output", "json", img).stdout)


def spec(img):
    return info(img)["format-specific"]["data"]


def compare(a, b):
    run("qemu-img", "compare", a, b)


def sha(path):
    h = hashlib.sha256()
    with open(os.path.join(TMP, path), "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def copy(src, dst):
    shutil.copyfile(os.path.join(TMP, src), os.path.join(TMP, dst))


def snapshot_raw(img, snap, out):
    run("qemu-img", "convert", "-f", "qcow2", "-l", "snapshot.name=" + snap, "-O", "raw", img, out)


def make_base():
    """A qcow2 backing file with data; shared by the images below."""
    if not os.path.exists(os.path.join(TMP, "base.qcow2")):
        run("qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "32M")
        qio("base.qcow2", "write -P 0x11 0 6M", "write -P 0x12 20M 3M")


def make_image(name, snapshot=True, compat="1.1", zero=True, backing=True, refcount_bits=16):
    """qemu-written image: data over a backing file, zero clusters, a compressed
    cluster and (optionally) an internal snapshot taken before more writes."""
    opts = "compat=%s,refcount_bits=%d" % (compat, refcount_bits)
    if backing:
        make_base()
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "-b", "base.qcow2", "-F",
            "qcow2", name, "32M")
    else:
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, name, "32M")
    cmds = ["write -P 0x22 1M 4M", "write -c -P 0x23 12M 64k"]
    if zero and compat == "1.1":
        # preallocated zero clusters (over data) and, with a backing file,
        # zero clusters hiding backing data
        cmds += ["write -z 2M 256k", "write -z 21M 128k"]
    qio(name, *cmds)
    if snapshot:
        run("qemu-img", "snapshot", "-c", "snap1", name)
        qio(name, "write -P 0x33 3M 1M", "write -P 0x34 30M 512k")


# ---- cases ----

def case_widths():
    """qtimg amend to every width from a qemu-written image, then back to 16."""
    for w in WIDTHS:
        name = "w%d.qcow2" % w
        make_image(name, snapshot=(w > 1))
        copy(name, "orig.qcow2")
        if w > 1:
            snapshot_raw("orig.qcow2", "snap1", "orig-snap.raw")
        q("amend", "-f", "qcow2", "-o", "refcount_bits=%d" % w, name)
        qemu_check(name)
        d = spec(name)
        assert d["refcount-bits"] == w, d
        assert d["compat"] == "1.1", d
        compare("orig.qcow2", name)
        if w > 1:
            snapshot_raw(name, "snap1", "snap.raw")
            compare("orig-snap.raw", "snap.raw")
        # both tools allocate with the new refcounts: write, check, then back to 16 bits
        q("io", "-c", "write -P 0x44 8M 1M", name)
        qio(name, "write -P 0x45 24M 1M")
        qio("orig.qcow2", "write -P 0x44 8M 1M", "write -P 0x45 24M 1M")
        qemu_check(name)
        compare("orig.qcow2", name)
        q("amend", "-o", "refcount_bits=16", name)
        qemu_check(name)
        assert spec(name)["refcount-bits"] == 16
        compare("orig.qcow2", name)


def case_reverse():
    """qemu-img amend to each width; qtimg reads, checks and amends it back."""
    for w in WIDTHS:
        name = "r%d.qcow2" % w
        make_image(name, snapshot=(w > 1))
        copy(name, "orig.qcow2")
        run("qemu-img", "amend", "-f", "qcow2", "-o", "refcount_bits=%d" % w, name)
        out = q("check", name)
        assert "No errors were found" in out, out
        run(QTIMG, "compare", "orig.qcow2", name)
        out = json.loads(q("info", "--output", "json", name))
        assert out["format-specific"]["data"]["refcount-bits"] == w, out
        back = 64 if w != 64 else 2
        q("amend", "-o", "refcount_bits=%d" % back, name)
        qemu_check(name)
        assert spec(name)["refcount-bits"] == back
        compare("orig.qcow2", name)


def case_compat():
    """v2 -> v3 -> v2 with snapshots, backing file and compressed data."""
    make_image("c.qcow2", compat="0.10")
    copy("c.qcow2", "orig.qcow2")
    snapshot_raw("orig.qcow2", "snap1", "orig-snap.raw")
    q("amend", "-o", "compat=1.1", "c.qcow2")
    qemu_check("c.qcow2")
    d = spec("c.qcow2")
    assert d["compat"] == "1.1" and d["refcount-bits"] == 16 and not d["lazy-refcounts"], d
    compare("orig.qcow2", "c.qcow2")
    # version 3 changes on top (data, zero clusters over data and over the
    # backing file), then back to version 2
    for img in ("c.qcow2", "orig.qcow2"):
        qio(img, "write -P 0x55 5M 64k", "write -z 1M 128k", "write -z 20M 192k")
    q("amend", "-o", "compat=0.10", "c.qcow2")
    qemu_check("c.qcow2")
    assert spec("c.qcow2")["compat"] == "0.10"
    compare("orig.qcow2", "c.qcow2")
    snapshot_raw("c.qcow2", "snap1", "snap.raw")
    compare("orig-snap.raw", "snap.raw")

    # downgrade clears zero flags that version 2 reads the same without
    # (no backing file); lazy refcounts are dropped
    make_image("z.qcow2", backing=False)
    q("amend", "-o", "lazy_refcounts=on", "z.qcow2")
    copy("z.qcow2", "orig.qcow2")
    q("amend", "-o", "compat=0.10", "z.qcow2")
    qemu_check("z.qcow2")
    d = spec("z.qcow2")
    assert d["compat"] == "0.10", d
    compare("orig.qcow2", "z.qcow2")
    # downgrade with every kind of zero cluster, shared with a snapshot
    make_image("d.qcow2")
    copy("d.qcow2", "orig.qcow2")
    snapshot_raw("orig.qcow2", "snap1", "orig-snap.raw")
    q("amend", "-o", "compat=0.10", "d.qcow2")
    qemu_check("d.qcow2")
    assert spec("d.qcow2")["compat"] == "0.10"
    compare("orig.qcow2", "d.qcow2")
    snapshot_raw("d.qcow2", "snap1", "snap.raw")
    compare("orig-snap.raw", "snap.raw")
    # qemu-img downgrades, qtimg upgrades (no snapshot: qemu-img 7.2's own
    # downgrade of zero clusters shared with a snapshot leaves OFLAG_COPIED
    # errors that qemu-img check reports)
    make_image("q.qcow2", backing=False, snapshot=False)
    copy("q.qcow2", "orig.qcow2")
    run("qemu-img", "amend", "-o", "compat=0.10", "q.qcow2")
    q("amend", "-o", "compat=1.1", "q.qcow2")
    qemu_check("q.qcow2")
    assert spec("q.qcow2")["compat"] == "1.1"
    compare("orig.qcow2", "q.qcow2")


def expect_refusal(name, opts, words):
    before = sha(name)
    p = run(QTIMG, "amend", "-o", opts, name, ok=None)
    assert p.returncode != 0, "amend -o %s %s succeeded:\n%s" % (opts, name, p.stdout)
    for w in words:
        assert w in p.stdout, "amend -o %s: '%s' not in:\n%s" % (opts, w, p.stdout)
    assert sha(name) == before, "amend -o %s changed %s although refused" % (opts, name)


def case_refusals():
    make_image("s.qcow2")  # snapshot: refcount 2 on shared clusters
    expect_refusal("s.qcow2", "refcount_bits=1", ["refcount_bits=1", "clusters have a higher"])
    # a refusal of one option stops the others (nothing written)
    expect_refusal("s.qcow2", "size=64M,compat=1.1,refcount_bits=1", ["clusters have a higher"])
    expect_refusal("s.qcow2", "refcount_bits=3", ["power of two"])
    expect_refusal("s.qcow2", "cluster_size=4096", ["cluster_size"])
    expect_refusal("s.qcow2", "compat=0.10,lazy_refcounts=on", ["lazy_refcounts=on"])
    expect_refusal("s.qcow2", "size=1M", ["snapshots"])
    qemu_check("s.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k",
        "x.qcow2", "16M")
    qio("x.qcow2", "write -P 0x66 0 1M")
    expect_refusal("x.qcow2", "compat=0.10", ["extended L2"])
    make_image("b.qcow2", backing=False, zero=False, snapshot=False)
    q("amend", "-o", "refcount_bits=64", "b.qcow2")
    expect_refusal("b.qcow2", "compat=0.10", ["refcount_bits=16"])
    expect_refusal("b.qcow2", "size=8M", ["cannot shrink", "data"])
    expect_refusal("b.qcow2", "refcount_bits=16,compat=0.10,size=8M", ["cannot shrink"])
    # with refcount_bits=16 the downgrade goes through
    copy("b.qcow2", "orig.qcow2")
    q("amend", "-o", "refcount_bits=16,compat=0.10", "b.qcow2")
    qemu_check("b.qcow2")
    d = spec("b.qcow2")
    assert d["compat"] == "0.10" and d["refcount-bits"] == 16, d
    compare("orig.qcow2", "b.qcow2")


def case_size():
    make_image("g.qcow2", snapshot=False)
    copy("g.qcow2", "ref.qcow2")
    q("amend", "-o", "size=100M", "g.qcow2")
    run("qemu-img", "amend", "-o", "size=100M", "ref.qcow2")
    qemu_check("g.qcow2")
    assert info("g.qcow2")["virtual-size"] == 100 << 20
    compare("ref.qcow2", "g.qcow2")
    # shrink: the tail has nothing allocated
    q("amend", "-o", "size=48M", "g.qcow2")
    run("qemu-img", "resize", "--shrink", "ref.qcow2", "48M")
    qemu_check("g.qcow2")
    assert info("g.qcow2")["virtual-size"] == 48 << 20
    compare("ref.qcow2", "g.qcow2")


def case_multi():
    """Several options in one command, and -o help."""
    make_image("m.qcow2", compat="0.10", snapshot=False)
    copy("m.qcow2", "orig.qcow2")
    q("amend", "-o", "compat=1.1,refcount_bits=4,lazy_refcounts=on,size=64M", "m.qcow2")
    qemu_check("m.qcow2")
    i = info("m.qcow2")
    d = i["format-specific"]["data"]
    assert d["compat"] == "1.1" and d["refcount-bits"] == 4 and d["lazy-refcounts"], d
    assert i["virtual-size"] == 64 << 20, i
    compare("orig.qcow2", "m.qcow2")  # the grown tail reads as zero
    q("amend", "-o", "lazy_refcounts=off,refcount_bits=16,compat=0.10,size=32M", "m.qcow2")
    qemu_check("m.qcow2")
    i = info("m.qcow2")
    d = i["format-specific"]["data"]
    assert d["compat"] == "0.10" and d["refcount-bits"] == 16, d
    assert i["virtual-size"] == 32 << 20, i
    compare("orig.qcow2", "m.qcow2")
    # the rebuilt refcounts serve the same process at once: the downgrade
    # after the width change allocates zeroed clusters (zero clusters over
    # a backing file) and drops references, counted at the new width
    make_image("n.qcow2")
    qio("n.qcow2", "write -z 1M 128k")
    q("amend", "-o", "refcount_bits=4", "n.qcow2")
    copy("n.qcow2", "orig.qcow2")
    snapshot_raw("orig.qcow2", "snap1", "orig-snap.raw")
    q("amend", "-o", "refcount_bits=16,compat=0.10", "n.qcow2")
    qemu_check("n.qcow2")
    d = spec("n.qcow2")
    assert d["compat"] == "0.10" and d["refcount-bits"] == 16, d
    compare("orig.qcow2", "n.qcow2")
    snapshot_raw("n.qcow2", "snap1", "snap.raw")
    compare("orig-snap.raw", "snap.raw")
    out = q("amend", "-o", "help", "m.qcow2")
    for w in ("compat=", "refcount_bits=", "lazy_refcounts=", "size="):
        assert w in out, out


def make_kill_image():
    """384 MiB virtual, sparse, ~100k clusters of 1 KiB in use, a snapshot and
    zero clusters. (512-byte clusters would hit a qtimg resize limit: an L1
    table of a refcount block's span or more cannot be allocated.)"""
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=1024", "k.qcow2", "384M")
    rnd = random.Random(7)
    cmds = []
    for i in range(400):
        off = rnd.randrange(0, (384 << 20) - (1 << 20)) & ~511
        cmds.append("write -P %d %d %d" % (i % 250 + 1, off, rnd.choice([4096, 65536, 524288])))
    for i in range(0, len(cmds), 200):
        qio("k.qcow2", *cmds[i:i + 200])
    run("qemu-img", "snapshot", "-c", "ks", "k.qcow2")
    qio("k.qcow2", "write -P 0x77 1M 2M", "write -z 100M 8M", "write -z 200M 1M")


def case_kill():
    """SIGKILL qtimg amend at random moments: the image stays usable and equal."""
    make_kill_image()
    copy("k.qcow2", "korig.qcow2")
    ops = ["refcount_bits=2", "refcount_bits=64", "refcount_bits=8",
           "compat=0.10", "refcount_bits=32,size=512M"]
    # how long each takes uninterrupted, to spread the kills over it
    dur = {}
    for op in ops:
        copy("korig.qcow2", "kt.qcow2")
        t0 = time.monotonic()
        q("amend", "-o", op, "kt.qcow2", timeout=300)
        dur[op] = time.monotonic() - t0
        qemu_check("kt.qcow2")
    rnd = random.Random(int(os.environ.get("AMEND_KILL_SEED", "1")))
    outcomes = {"old": 0, "new": 0, "leaks": 0}
    for it in range(int(os.environ.get("AMEND_KILL_ITERS", "20"))):
        op = ops[it % len(ops)]
        copy("korig.qcow2", "kt.qcow2")
        delay = rnd.uniform(0, dur[op] * 1.3)  # some land after the end
        p = subprocess.Popen([QTIMG, "amend", "-o", op, "kt.qcow2"], cwd=TMP,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        c = qemu_check("kt.qcow2", ok=(0, 3))
        if c.returncode == 3:
            outcomes["leaks"] += 1
        d = spec("kt.qcow2")
        want_bits = int(op.split("refcount_bits=")[1].split(",")[0]) if "refcount" in op else 16
        want_compat = "0.10" if "compat" in op else "1.1"
        done = d["refcount-bits"] == want_bits and d["compat"] == want_compat
        assert done or (d["refcount-bits"] == 16 and d["compat"] == "1.1"), (op, d)
        outcomes["new" if done else "old"] += 1
        assert info("kt.qcow2")["virtual-size"] in (384 << 20, 512 << 20)
        compare("korig.qcow2", "kt.qcow2")  # a grown tail reads as zero
        snapshot_raw("kt.qcow2", "ks", "ks.raw")
        if it == 0:
            snapshot_raw("korig.qcow2", "ks", "korig-ks.raw")
        compare("korig-ks.raw", "ks.raw")
        # qtimg agrees (exit 3: leaks only; it labels a refcount above a
        # nonzero reference count "ERROR" in the log but counts it as a leak)
        out = q("check", "kt.qcow2", ok=(0, 3))
        assert "Data may be corrupted" not in out, out
    print("kill: uninterrupted durations %s; outcomes %s" %
          ({k: round(v, 3) for k, v in dur.items()}, outcomes))


def case_crashpoints():
    """Kill qtimg amend at each of its metadata writes in turn (strace injects
    SIGKILL on entry to the Nth pwrite64, so that write and all after it never
    happen): every crash point must leave an image qemu-img check calls clean
    or leaky, with the contents unchanged (the snapshot's too)."""
    if not shutil.which("strace"):
        print("skip crashpoints: strace not installed (scripts/deps/amend.txt)")
        return
    make_image("p3.qcow2")  # backing file, snapshot, every kind of zero cluster
    qio("p3.qcow2", "write -z 1M 128k")  # zeroes a cluster still shared with the snapshot
    make_image("p2.qcow2", compat="0.10")
    ops = [("p3.qcow2", "refcount_bits=2", ("refcount-bits", 2)),
           ("p3.qcow2", "refcount_bits=64", ("refcount-bits", 64)),
           ("p3.qcow2", "compat=0.10", ("compat", "0.10")),
           ("p3.qcow2", "size=100M", None),
           ("p2.qcow2", "compat=1.1,refcount_bits=4,lazy_refcounts=on,size=64M", None)]
    points = 0
    for src, op, field in ops:
        copy(src, "orig.qcow2")
        snapshot_raw("orig.qcow2", "snap1", "orig-snap.raw")
        old = spec("orig.qcow2")
        copy(src, "pt.qcow2")
        log = os.path.join(TMP, "strace.log")
        run("strace", "-f", "-qq", "-o", log, "-e", "trace=pwrite64", QTIMG, "amend", "-o", op,
            "pt.qcow2")
        with open(log) as f:
            writes = sum(1 for line in f if "pwrite64(" in line)
        assert writes > 0, op
        for n in range(1, writes + 1):
            copy(src, "pt.qcow2")
            p = run("strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64", "-e",
                    "inject=pwrite64:signal=SIGKILL:when=%d" % n, QTIMG, "amend", "-o", op,
                    "pt.qcow2", ok=None)
            assert p.returncode != 0, "%s: not killed at write %d of %d" % (op, n, writes)
            qemu_check("pt.qcow2", ok=(0, 3))
            compare("orig.qcow2", "pt.qcow2")
            snapshot_raw("pt.qcow2", "snap1", "snap.raw")
            compare("orig-snap.raw", "snap.raw")
            if field:
                got = spec("pt.qcow2")[field[0]]
                assert got in (old[field[0]], field[1]), (op, n, got)
            points += 1
    print("crashpoints: %d crash points, all consistent" % points)


CASES = {"widths": case_widths, "reverse": case_reverse, "compat": case_compat,
         "refusals": case_refusals, "size": case_size, "multi": case_multi, "kill": case_kill,
         "crashpoints": case_crashpoints}


def main():
    global QTIMG, TMP
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    QTIMG = os.path.abspath(sys.argv[1])
    if not shutil.which("qemu-img") or not shutil.which("qemu-io"):
        print("SKIP: qemu-img/qemu-io not installed")
        return 77
    names = sys.argv[2:] or list(CASES)
    for n in names:
        TMP = tempfile.mkdtemp(prefix="qtimg-amend-")
        t0 = time.monotonic()
        try:
            CASES[n]()
            print("ok   %s (%.1f s)" % (n, time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001 - report and go on with the next case
            FAILED.append(n)
            print("FAIL %s: %s" % (n, e))
        finally:
            shutil.rmtree(TMP, ignore_errors=True)
        sys.stdout.flush()
    if FAILED:
        print("failed: %s" % " ".join(FAILED))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
