"""How long the TUN device's transmit queue must be: the kernel's drops into it, per length.

For each ``txqueuelen`` (default 500, 1000 and 10000: tun's default, the warning threshold of
``tcpstack up`` and what the stack gives the devices it creates), a fresh namespace
(tcpstack.netns.Netns) runs ``tcpstack up --serve discard:9``, the kernel sends SIZE bytes to it
over TCP (its bursts: a window of segments at a time), and the device's ``tx_dropped`` counter
says how many frames the kernel dropped because the queue was full before the stack read them.
Also printed: the time the transfer took (wall clock: noisy on a busy machine) and the
retransmissions the kernel made (``TcpRetransSegs``), which is what the drops cost.

Run as root: ``python bench/tun_queue.py [--size MB] [--flows N] [--lengths 500,1000,10000] [--offload]
[--loops uvloop,asyncio]``. With two loops it also compares the event loops (throughput and the
stack process's CPU milliseconds per MB, which a busy machine disturbs less than the wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcpstack.netns import STACK_ADDR, Netns

SENDER = """
import socket, sys, time, json, threading
n, flows = int(sys.argv[1]), int(sys.argv[3]); chunk = b"x" * (1 << 16)
def flow():
    s = socket.create_connection((sys.argv[2], 9))
    left = n // flows
    while left > 0:
        s.sendall(chunk[: min(left, len(chunk))]); left -= min(left, len(chunk))
    s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
t0 = time.monotonic()
threads = [threading.Thread(target=flow) for _ in range(flows)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"seconds": time.monotonic() - t0}))
"""


def retrans(ns: Netns) -> int:
    text = ns.exec(["cat", "/proc/net/snmp"]).stdout.splitlines()
    rows = [line.split() for line in text if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("RetransSegs")])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(length: int, size: int, flows: int, offload: bool, loop: str, tmp: Path) -> dict[str, Any]:
    ns = Netns(txqueuelen=length, prefix="tcpsq")
    os.environ["TCPSTACK_UVLOOP"] = "1" if loop == "uvloop" else "0"  # the stack inherits it
    try:
        args = ["--serve", "discard:9"] + (["--offload"] if offload else [])
        proc = ns.tcpstack(*args, tmp=tmp, label=f"q{length}")
        stat = f"/sys/class/net/{ns.device}/statistics/tx_dropped"
        dropped0, rexmit0, cpu0 = int(ns.exec(["cat", stat]).stdout), retrans(ns), cpu_seconds(proc.pid)
        out = ns.exec([sys.executable, "-c", SENDER, str(size), STACK_ADDR, str(flows)], timeout=600).stdout
        seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
        dropped, rexmit = int(ns.exec(["cat", stat]).stdout) - dropped0, retrans(ns) - rexmit0
        cpu_per_mb = (cpu_seconds(proc.pid) - cpu0) / (size / 1e6)
        return {
            "txqueuelen": length,
            "loop": loop,
            "dropped": dropped,
            "retransmits": rexmit,
            "seconds": round(seconds, 3),
            "cpu_ms_per_mb": round(cpu_per_mb * 1e3, 2),
        }
    finally:
        os.environ.pop("TCPSTACK_UVLOOP", None)
        ns.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=50, help="MB sent by the kernel per run (default 50)")
    ap.add_argument("--lengths", default="500,1000,10000")
    ap.add_argument("--repeat", type=int, default=1, help="runs per length, interleaved")
    ap.add_argument("--flows", type=int, default=1, help="parallel connections sharing the SIZE")
    ap.add_argument("--offload", action="store_true")
    ap.add_argument("--loops", default="uvloop", help="event loops to compare, e.g. uvloop,asyncio (TCPSTACK_UVLOOP)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeat):
            for length, loop in [(n, lp) for n in lengths for lp in args.loops.split(",")]:
                r = one(length, args.size * 1_000_000, args.flows, args.offload, loop, Path(d))
                r["mb_per_s"] = round(args.size / r["seconds"], 1)
                results.append(r)
                if not args.json:
                    print(
                        f"{args.flows} flow(s), {loop:<7} txqueuelen {length:>6}: {r['dropped']:>6} frames dropped, "
                        f"{r['retransmits']:>6} kernel retransmissions, {r['seconds']:.2f} s ({r['mb_per_s']} MB/s), "
                        f"stack CPU {r['cpu_ms_per_mb']} ms/MB",
                        flush=True,
                    )
                time.sleep(0.2)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
