"""What the pcapng capture (with decision comments) costs per frame, against the classic pcap.

Run:  .venv/bin/python bench/pcapng_cost.py [--frames 20000] [--rounds 5] [--transfer 5000000]

Two parts, in process and sans-IO (no TUN, no namespaces), the formats' runs interleaved in each
round so a change of machine load weighs on each alike; the median of the rounds is shown:

1. **The writer alone.** A stack of [memory link, capture, a top layer that consumes each inbound
   frame and answers every one with a frame of its own], ``--frames`` inbound 1500-byte IPv4
   frames (so twice as many frames recorded), to a real file. Cases: no capture (the baseline),
   classic pcap, pcapng, and pcapng with one decision taken on every inbound frame (a LazyLog
   ``tcp.decision`` the writer's tap turns into that frame's comment); classic with the same
   decisions too (debug logging off: they cost the filtered-out call only). The table gives µs per
   recorded frame above the baseline.
2. **A whole stack.** Two stacks on a simulated wire (tcpstack.testing's StackPair, delayed ACKs
   and SACK on), a ``--transfer``-byte upload to the capturing stack, which writes classic pcap or
   pcapng (where every "ACK delayed"/"ACK now" decision becomes a comment); CPU seconds of the
   whole simulation (both stacks) and µs per frame the capture recorded.

This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from framework.context import Context  # noqa: E402
from framework.handler import BaseHandler  # noqa: E402
from framework.lazylog import LazyLog  # noqa: E402
from framework.packet import Packet  # noqa: E402
from layers.middleware.pcap import PcapWriter  # noqa: E402
from layers.middleware.pcapng import PcapngWriter  # noqa: E402
from tcpstack.testing.pair import StackPair  # noqa: E402
from tests.layers.middleware.helpers import ipv4_datagram, make_stack, outbound  # noqa: E402

CONN = "10.0.0.2:80>10.0.0.1:4000"


class Answer(BaseHandler):
    """Consumes each inbound frame and answers it; with *decide*, takes one decision on it first."""

    def __init__(self, decide: bool) -> None:
        self.name = "answer"
        self.log = LazyLog("tcpstack.decision", CONN, "delayed_ack") if decide else None
        self.body = struct.pack("!HH", 80, 4000) + bytes(1456)

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if self.log is not None:
            now = ctx.now
            self.log.debug("tcp.decision", decision="ACK delayed", rfc="RFC 1122 §4.2.3.2", deadline=now + 0.04, t=now)
        ctx.transmit(self, outbound(self.body, proto=6))
        return None


def writer_case(kind: str, frames: int, tmp: Path) -> float:
    """Seconds (process CPU time) for *frames* inbound frames and their answers."""
    frame = ipv4_datagram(struct.pack("!HH", 4000, 80) + bytes(1456), proto=6)
    decide = kind.endswith("+decisions")
    f = open(tmp / "w.cap", "wb")
    writer: PcapWriter | None = None
    if kind.startswith("classic"):
        writer = PcapWriter("pcap", f)
    elif kind.startswith("pcapng"):
        writer = PcapngWriter("pcap", f)
    middle: list[Any] = [] if writer is None else [writer]
    stack, _top = make_stack(*middle, Answer(decide))
    gc.collect()
    t0 = time.process_time()
    now = 0.0
    for i in range(frames):
        now += 1e-5
        stack.receive_frame(frame, now=now)
        if i % 16 == 15:
            stack.frames_to_write(now=now)
    stack.frames_to_write(now=now)
    if writer is not None:
        writer.close()
    f.close()
    return time.process_time() - t0


def stack_case(path: Path, size: int) -> tuple[float, int]:
    """CPU seconds of an upload of *size* bytes to a stack capturing to *path*, and its frames."""
    pair = StackPair(server_tcp={"pcap": str(path)}, features={"delayed_ack": {}, "sack": {}})
    c = pair.open()
    gc.collect()
    t0 = time.process_time()
    c.send(b"u" * size)
    pair.run(condition=lambda: len(c.server.received) >= size, until=600.0)
    elapsed = time.process_time() - t0
    writer = pair.server.layer("pcap")
    assert isinstance(writer, PcapWriter)
    n = writer.frames
    pair.server_host.stack_closed(pair.server)
    return elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--transfer", type=int, default=5_000_000)
    args = ap.parse_args()
    kinds = ["none", "classic", "classic+decisions", "pcapng", "pcapng+decisions"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for k in kinds:
                results[k].append(writer_case(k, args.frames, tmp))
        base = statistics.median(results["none"])
        recorded = 2 * args.frames
        print(f"1. the writer alone: {args.frames} inbound frames + {args.frames} answers, median of {args.rounds}")
        print(f"{'case':22} {'CPU s':>8} {'µs/frame over none':>20}")
        for k in kinds:
            m = statistics.median(results[k])
            extra = "" if k == "none" else f"{(m - base) / recorded * 1e6:20.2f}"
            print(f"{k:22} {m:8.3f} {extra}")
        whole: dict[str, list[tuple[float, int]]] = {"pcap": [], "pcapng": []}
        for _ in range(args.rounds):
            for fmt in whole:
                whole[fmt].append(stack_case(tmp / f"s.{fmt}", args.transfer))
        print(f"\n2. a whole stack: {args.transfer} bytes uploaded to the capturing stack, median of {args.rounds}")
        print(f"{'capture':10} {'CPU s':>8} {'frames':>8} {'µs/frame':>10}")
        for fmt, runs in whole.items():
            m = statistics.median(t for t, _ in runs)
            n = runs[0][1]
            print(f"{fmt:10} {m:8.3f} {n:8d} {m / n * 1e6:10.2f}")


if __name__ == "__main__":
    main()
