#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""qtcard egress shaping between network namespaces (AF_PACKET ports).

  h1 -- p1   sender: 1000-byte UDP frames at 2000 frames/s (16 Mbit/s)
  h2 -- p2   egress_rate 8 Mbit/s: what h2 receives is delayed to the rate
Checks: h2's steady receive rate is 8 Mbit/s within 10 %; the shaper delayed
frames (rather than only dropping them as a policer would) and dropped the
excess beyond its queue bound; a frame burst below the rate passes unshaped.

  interop_shaping.py QTCARD     (exit 77 without root)
Uses the protocols engineer's lab helpers (tests/card/lab/netlab.py, pkttool.py).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lab"))
import netlab  # noqa: E402

PKTTOOL = os.path.join(HERE, "lab", "pkttool.py")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg, flush=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    netlab.need_root_and_tools()
    lab = netlab.Lab("shape")
    try:
        card, h1, h2 = lab.ns("card"), lab.ns("h1"), lab.ns("h2")
        lab.veth(card, "c1", h1, "e0")
        lab.veth(card, "c2", h2, "e0")
        lab.qtcard_start(sys.argv[1], card)
        lab.api_ok("POST", "switches", {"name": "sw"})
        lab.api_ok("POST", "ports", {"name": "p1", "switch": "sw", "type": "afpacket",
                                     "ifname": "c1"})
        lab.api_ok("POST", "ports", {"name": "p2", "switch": "sw", "type": "afpacket",
                                     "ifname": "c2"})
        st, body = lab.api("PUT", "ports/p2/policy", {"egress_rate": {"rate_bps": -5}})
        check(st == 400, f"a negative rate is refused ({body})")
        lab.api_ok("PUT", "ports/p2/policy",
                   {"egress_rate": {"rate_bps": 8000000, "burst_bits": 160000,
                                    "max_delay_us": 50000}})
        mac1, mac2 = lab.mac(h1, "e0"), lab.mac(h2, "e0")

        def run(marker, pps, duration):
            rx = lab.popen(h2, [sys.executable, PKTTOOL, "recv", "e0", "--marker", marker,
                                "--duration", str(duration + 0.5)],
                           stdout=subprocess.PIPE, text=True)
            if rx.stdout.readline().strip() != "READY":
                raise RuntimeError("receiver did not start")
            netlab.run(["ip", "netns", "exec", h1, sys.executable, PKTTOOL, "send", "e0",
                        "--src", mac1, "--dst", mac2, "--sip", "10.0.0.1", "--dip", "10.0.0.2",
                        "--marker", marker, "--size", "1000", "--pps", str(pps),
                        "--duration", str(duration)])
            out, _ = rx.communicate(timeout=60)
            return json.loads(out.strip().splitlines()[-1])

        # Teach the switch where h2 is, so the test frames are unicast.
        netlab.run(["ip", "netns", "exec", h2, sys.executable, PKTTOOL, "send", "e0", "--src",
                    mac2, "--dst", mac1, "--sip", "10.0.0.2", "--dip", "10.0.0.1", "--marker",
                    "HELLO", "--count", "3"])
        slow = run("SLOW", 500, 2)  # 4 Mbit/s: under the rate
        print("under the rate:", slow, flush=True)
        check(slow["count"] >= 990, f"traffic under the rate passes ({slow['count']} of 1000)")
        r = run("FAST", 2000, 4)  # 16 Mbit/s offered
        p2 = lab.api_ok("GET", "ports/p2")
        print("over the rate:", r, p2.get("egress_shaper"), flush=True)
        check(abs(r["steady_bps"] - 8e6) <= 0.8e6,
              f"shaped to {r['steady_bps'] / 1e6:.2f} Mbit/s (8 Mbit/s +- 10 %)")
        check(p2["egress_shaper"]["delayed"] > 100, "frames were delayed, not only dropped")
        check(p2["egress_shaper"]["dropped"] > 0, "the excess beyond the queue bound is dropped")
    except Exception:
        print("---- qtcard log ----\n" + lab.qtcard_log())
        raise
    finally:
        lab.close()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
